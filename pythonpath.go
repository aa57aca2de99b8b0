package main

import (
	"path/filepath"
	"strings"
)

// codePaths are the task's folders on PYTHONPATH: the working dir and the
// entry point's folder, or with agent.force_git_root_python_path the
// repository's root instead, as the reference.
func (p *preparer) codePaths(workDir string, entryArgs []string) []string {
	if p.gitRoot != "" && p.cfg.boolean("agent.force_git_root_python_path", false) {
		return []string{p.gitRoot}
	}
	out := []string{workDir}
	if len(entryArgs) > 0 && !strings.HasPrefix(entryArgs[0], "-") {
		if d := filepath.Dir(filepath.Join(workDir, entryArgs[0])); d != workDir {
			out = append(out, d)
		}
	}
	return out
}
