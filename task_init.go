package main

// CLEARML_AGENT_FORCE_TASK_INIT: the web UI's "Add Task.init" option for a
// script that never calls Task.init(). As the reference does, the agent
// adds `from clearml import Task` and a Task.init() call (for __main__
// only) to the entry point, after any __future__ imports, and clearml to
// the requirements.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func forceTaskInit(env envLookup) bool {
	on, _ := parseBoolText(firstEnv(env, "CLEARML_AGENT_FORCE_TASK_INIT"))
	return on
}

var (
	futureFromRe   = lazyRegexp(`^from\s*__future__\s*`)
	futureImportRe = lazyRegexp(`^import\s*__future__\s*`)
)

// taskInitPatch is what the reference inserts.
var taskInitPatch = []string{"from clearml import Task\n", "(__name__ != \"__main__\") or Task.init()\n"}

// locateFutureImport is the index of the last line of the __future__
// imports at the top of a Python file, -1 when there are none (the
// reference's _locate_future_import: comments and docstrings skipped).
func locateFutureImport(lines []string) int {
	type pair struct {
		i    int
		line string
	}
	var code []pair
	for i, l := range lines {
		if strings.Trim(l, "\r\n\t ") == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		c, _, _ := strings.Cut(l, "#")
		code = append(code, pair{i, strings.TrimRight(c, " \t\r\n")})
	}
	skip := map[int]bool{}
	open := -1
	for i, p := range code {
		for range strings.Count(p.line, `"""`) {
			if open >= 0 {
				for j := open; j <= i; j++ {
					skip[j] = true
				}
				open = -1
			} else {
				open = i
			}
		}
	}
	var kept []pair
	for i, p := range code {
		if !skip[i] {
			kept = append(kept, p)
		}
	}
	found := -1
	for a, p := range kept {
		if found >= a {
			continue
		}
		if !futureFromRe().MatchString(p.line) && !futureImportRe().MatchString(p.line) {
			break
		}
		found = a
		line := kept[found].line
		paren := strings.Contains(line, "(") && !strings.Contains(line, ")")
		for (strings.HasSuffix(line, `\`) || paren) && found+1 < len(kept) {
			found++
			line = kept[found].line
			if strings.Contains(line, ")") {
				break
			}
		}
	}
	if found < 0 {
		return -1
	}
	return kept[found].i
}

// patchTaskInit adds the Task.init() call to a .py entry point, once.
func patchTaskInit(path string, log io.Writer) {
	if !strings.EqualFold(filepath.Ext(path), ".py") {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(log, "Failed patching entry point file %s: %v\n", path, err)
		return
	}
	lines := strings.SplitAfter(string(data), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	at := locateFutureImport(lines) + 1
	if len(lines) >= at+2 && strings.HasPrefix(strings.TrimSpace(lines[at]), "from clearml ") && strings.Contains(lines[at+1], "Task.init") {
		fmt.Fprintf(log, "File %s already patched with Task.init()\n", path)
		return
	}
	if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
		lines[at-1] += "\n"
	}
	out := append(append(append([]string{}, lines[:at]...), taskInitPatch...), lines[at:]...)
	if err := os.WriteFile(path, []byte(strings.Join(out, "")), 0o644); err != nil {
		fmt.Fprintf(log, "Failed patching entry point file %s: %v\n", path, err)
		return
	}
	fmt.Fprintf(log, "Force clearml Task.init patch adding to entry point script: %s\n", path)
}

// forceTaskInitRequirements adds clearml to what the venv installs, unless
// it is there: to the task's requirements, or before the repository's
// requirements.txt lines (which it then installs from their text).
func forceTaskInitRequirements(spec *venvSpec, log io.Writer) {
	if spec.standalone {
		return
	}
	reqs := spec.requirements
	if !spec.taskHasRequirements {
		reqs = nil
		for _, f := range spec.repoRequirementsFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(data), "\n") {
				// "-r other.txt" is relative to its file.
				if r := reqParse(l); r.Kind == reqOption && (r.Option == "--requirement" || r.Option == "--constraint") && !filepath.IsAbs(r.Value) {
					l = r.Option + " " + filepath.Join(filepath.Dir(f), r.Value)
				}
				reqs = append(reqs, l)
			}
		}
	}
	for _, l := range reqs {
		if reqParse(l).Name == "clearml" {
			return
		}
	}
	fmt.Fprintln(log, "Force clearml Task.init patch adding clearml package to requirements")
	spec.requirements = append([]string{"clearml"}, reqs...)
	spec.taskHasRequirements, spec.repoRequirementsFiles = true, nil
}
