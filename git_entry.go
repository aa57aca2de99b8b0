package main

// What to run from the code: a literal script (a script.diff that is not a
// patch) written as the entry point, and the entry point and working dir
// normalised as the reference's ExecutionInfo does, then resolved into a
// directory and interpreter arguments.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// gitIsLiteralScript is the reference's test: a diff that is not a git
// diff (nor "submodule ..." followed by one) is a whole script.
func gitIsLiteralScript(diff string) bool {
	d := strings.ToLower(strings.TrimLeft(diff, " \t\r\n"))
	if d == "" || strings.HasPrefix(d, "diff ") {
		return false
	}
	if strings.HasPrefix(d, "submodule ") {
		if lines := strings.Split(diff, "\n"); len(lines) > 1 &&
			strings.HasPrefix(strings.ToLower(strings.TrimLeft(lines[1], " \t")), "diff ") {
			return false
		}
	}
	return true
}

// gitWriteScript writes a literal-script diff as the entry point file
// (W:222-264). In a repository an existing file wins over the diff.
func gitWriteScript(dir string, src gitSource, inRepo bool) (gitSource, error) {
	entry, wd := gitNormalizeExec(src.entryPoint, src.workingDir, func(string) (string, bool) { return "", false })
	file := ""
	if f := strings.Fields(entry); len(f) > 0 && (f[0] == "-m" || f[0] == "-c") {
		file = "untitled.py"
		if f[0] == "-c" {
			file = "untitled.sh"
		}
		if d, name, ok := strings.Cut(wd, ":"); ok {
			wd, file = d, name
		}
	}
	loc := dir
	if inRepo {
		loc = filepath.Join(dir, wd)
		if !gitWithin(dir, loc) {
			return src, fmt.Errorf("code: working_dir %q escapes the repository", wd)
		}
	} else {
		wd = "."
		if entry == "" {
			entry = "untitled.py"
		} else if file == "" {
			entry = path.Base(entry)
		}
	}
	if file == "" {
		file = entry
	}
	target := filepath.Join(loc, file)
	if !gitWithin(dir, target) {
		return src, fmt.Errorf("code: script path %q escapes %s", file, dir)
	}
	src.entryPoint, src.workingDir = entry, wd
	if _, err := os.Stat(target); err == nil && inRepo {
		return src, nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return src, fmt.Errorf("code: %w", err)
	}
	if err := os.WriteFile(target, []byte(src.diff), 0o644); err != nil {
		return src, fmt.Errorf("code: writing the script: %w", err)
	}
	return src, nil
}

func gitWithin(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// gitNormalizeExec is ExecutionInfo's normalisation (§9.7): expand ~ and
// $VARS, clean the path, and split "entry:workdir" when workdir is empty.
func gitNormalizeExec(entry, workdir string, env envLookup) (string, string) {
	norm := func(p string) string {
		p = strings.TrimSpace(p)
		if p == "" {
			return ""
		}
		if p == "~" || strings.HasPrefix(p, "~/") {
			if h, ok := env("HOME"); ok && h != "" {
				p = h + p[1:]
			}
		}
		return filepath.Clean(gitExpandVars(p, env))
	}
	entry, workdir = norm(entry), norm(workdir)
	if workdir == "" {
		e, w, _ := strings.Cut(entry, ":")
		entry, workdir = e, w
	}
	return entry, workdir
}

var gitVarRef = lazyRegexp(`\$([A-Za-z0-9_]+|\{[^}]*\})`)

// gitExpandVars is os.path.expandvars: unknown variables stay as written.
func gitExpandVars(s string, env envLookup) string {
	if !strings.Contains(s, "$") {
		return s
	}
	return gitVarRef().ReplaceAllStringFunc(s, func(m string) string {
		name := strings.TrimSuffix(strings.TrimPrefix(m[1:], "{"), "}")
		if v, ok := env(name); ok {
			return v
		}
		return m
	})
}

// gitResolveEntry turns the task's entry point and working dir into the
// directory to run in and the interpreter arguments: "-m mod args",
// "-c code", a script, or a script followed by arguments (when no file
// carries the whole entry point's name). Paths may not leave checkoutDir.
func gitResolveEntry(checkoutDir string, src gitSource, env envLookup) (string, []string, error) {
	if env == nil {
		env = os.LookupEnv
	}
	entry, wd := gitNormalizeExec(src.entryPoint, src.workingDir, env)
	if wd == "" {
		wd = "."
	}
	root, err := filepath.Abs(checkoutDir)
	if err != nil {
		return "", nil, err
	}
	// As the reference (os.path.join): an absolute working_dir or entry
	// point wins over the checkout, which is how code already in an image
	// runs. The task's code runs anyway, so confining it adds nothing.
	workDir := wd
	if !filepath.IsAbs(wd) {
		workDir = filepath.Join(root, wd)
	}
	if entry == "" {
		return "", nil, errors.New("entry: the task has no entry point (set script.entry_point)")
	}
	fields := strings.Fields(entry)
	switch fields[0] {
	case "-m":
		args, err := shlexSplit(entry)
		if err != nil {
			return "", nil, fmt.Errorf("entry: %w", err)
		}
		return workDir, args, nil
	case "-c":
		return workDir, []string{"-c", strings.Join(fields[1:], " ")}, nil
	}
	args := []string{entry}
	path := entry
	if !filepath.IsAbs(path) {
		path = filepath.Join(workDir, entry)
	}
	if _, err := os.Stat(path); err != nil {
		// Newer agents: "train.py --lr 0.1" is a script plus arguments.
		if split, err := shlexSplit(entry); err == nil && len(split) > 0 {
			args = split
		}
	}
	return workDir, args, nil
}
