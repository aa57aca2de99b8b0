package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// findPython resolves a --python request as uv does for the cases the
// agent uses: a path, an executable name, or a version ("3.11").
func findPython(req string) (string, error) {
	if req == "" {
		req = os.Getenv("UV_PYTHON")
	}
	if req == "" {
		req = "python3"
	}
	if strings.ContainsRune(req, '/') {
		if _, err := os.Stat(req); err != nil {
			return "", fail("No interpreter found at path `%s`", req)
		}
		return req, nil
	}
	names := []string{req}
	if req[0] >= '0' && req[0] <= '9' {
		names = []string{"python" + req}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", notImitated("downloading Python %s", req)
}

// venvDir is the environment of a python inside a venv, else "".
func venvDir(python string) string {
	d := filepath.Dir(filepath.Dir(python))
	if _, err := os.Stat(filepath.Join(d, "pyvenv.cfg")); err == nil {
		return d
	}
	return ""
}

// basePython is the interpreter a venv was made from: its pip does the
// installing, through pip's --python.
func basePython(venv string) (string, error) {
	data, err := os.ReadFile(filepath.Join(venv, "pyvenv.cfg"))
	if err != nil {
		return "", fail("No virtual environment found at `%s`", venv)
	}
	home := ""
	for _, l := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch strings.TrimSpace(k) {
		case "executable", "base-executable":
			return strings.TrimSpace(v), nil
		case "home":
			home = strings.TrimSpace(v)
		}
	}
	for _, n := range []string{"python3", "python"} {
		if p := filepath.Join(home, n); home != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", fail("Failed to inspect Python interpreter from virtual environment at `%s`", venv)
}

func cmdVenv(p *parsed) error {
	dir := ".venv"
	if len(p.pos) > 0 {
		dir = p.pos[0]
	}
	py, err := findPython(p.last("python"))
	if err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		_, statErr := os.Stat(filepath.Join(dir, "pyvenv.cfg"))
		isVenv := statErr == nil
		switch {
		case p.has("allow-existing"):
		case p.has("clear") || p.has("force") || os.Getenv("UV_VENV_CLEAR") == "1":
			os.RemoveAll(dir)
		case isVenv:
			return fail("A virtual environment already exists at: %s", dir)
		default:
			return fail("A directory already exists at: %s", dir)
		}
	}
	argv := []string{py, "-m", "venv"}
	if !p.has("seed") {
		argv = append(argv, "--without-pip")
	}
	if p.has("system-site-packages") {
		argv = append(argv, "--system-site-packages")
	}
	if p.has("prompt") {
		argv = append(argv, "--prompt", p.last("prompt"))
	}
	argv = append(argv, dir)
	fmt.Fprintf(os.Stderr, "Using CPython at: %s\nCreating virtual environment at: %s\n", py, dir)
	return runQuiet(argv...)
}

func runQuiet(argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return &exitError{1, fmt.Sprintf("error: %s failed: %v", strings.Join(argv, " "), err)}
	}
	return nil
}

// target is the environment a pip command works on: --python, --system,
// $VIRTUAL_ENV, else a .venv in this or a parent directory.
func target(p *parsed) (python, venv string, err error) {
	if r := p.last("python"); r != "" {
		py, err := findPython(r)
		if err != nil {
			return "", "", err
		}
		if d := venvDir(py); d != "" {
			return filepath.Join(d, "bin", "python"), d, nil
		}
		if info, err := os.Stat(r); err == nil && info.IsDir() {
			return filepath.Join(r, "bin", "python"), r, nil
		}
		return py, "", nil
	}
	if p.has("system") {
		py, err := findPython("python3")
		return py, "", err
	}
	if v := os.Getenv("VIRTUAL_ENV"); v != "" {
		return filepath.Join(v, "bin", "python"), v, nil
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".venv", "pyvenv.cfg")); err == nil {
			return filepath.Join(d, ".venv", "bin", "python"), filepath.Join(d, ".venv"), nil
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return "", "", fail("No virtual environment found; run `uv venv` to create an environment, or pass `--system` to install into a non-virtual environment")
}

// pipFor runs the base interpreter's pip on the target interpreter.
func pipFor(python, venv string, args ...string) error {
	host := python
	if venv != "" {
		b, err := basePython(venv)
		if err != nil {
			return err
		}
		host = b
	}
	argv := append([]string{host, "-m", "pip", "--python", python, "--disable-pip-version-check", "--no-input"}, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return &exitError{1, fmt.Sprintf("error: pip (standing in for uv) failed: %v", err)}
	}
	return nil
}

// pipTranslation maps uv's install flags to pip's; "" means accepted and
// without effect here (output, cache, and resolver settings pip lacks).
var pipTranslation = map[string]string{
	"requirement": "-r", "constraint": "-c", "editable": "-e", "index-url": "--index-url",
	"default-index": "--index-url", "extra-index-url": "--extra-index-url", "index": "--extra-index-url",
	"find-links": "--find-links", "no-index": "--no-index", "upgrade": "--upgrade", "force-reinstall": "--force-reinstall",
	"no-deps": "--no-deps", "pre": "--pre", "no-build-isolation": "--no-build-isolation", "dry-run": "--dry-run",
	"target": "--target", "prefix": "--prefix", "only-binary": "--only-binary", "no-binary": "--no-binary",
	"config-setting": "--config-settings", "break-system-packages": "--break-system-packages", "require-hashes": "--require-hashes",
	"index-strategy": "", "link-mode": "", "compile-bytecode": "", "keyring-provider": "", "quiet": "", "verbose": "",
	"no-cache": "", "cache-dir": "", "python": "", "system": "", "offline": "", "no-progress": "", "color": "",
	"native-tls": "", "disable-pip-version-check": "", "no-config": "", "config-file": "", "allow-insecure-host": "",
	"exclude-editable": "--exclude-editable", "format": "--format", "yes": "", "strict": "", "no-python-downloads": "",
	"managed-python": "", "no-managed-python": "", "exclude-newer": "", "refresh": "", "no-sources": "",
	"project": "", "directory": "",
}

// indexArgs turns uv's index flags and variables into pip's.
func indexArgs(p *parsed) ([]string, error) {
	var out []string
	names := make([]string, 0, len(p.flags))
	for n := range p.flags {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pipFlag, ok := pipTranslation[n]
		if !ok {
			return nil, notImitated("--%s", n)
		}
		if pipFlag == "" {
			continue
		}
		for _, v := range p.flags[n] {
			if n == "index" {
				if _, u, ok := strings.Cut(v, "="); ok {
					v = u
				}
			}
			out = append(out, pipFlag)
			if v != "" {
				out = append(out, v)
			}
		}
	}
	for env, flag := range map[string]string{"UV_INDEX_URL": "--index-url", "UV_DEFAULT_INDEX": "--index-url", "UV_EXTRA_INDEX_URL": "--extra-index-url", "UV_FIND_LINKS": "--find-links"} {
		for _, v := range strings.Fields(os.Getenv(env)) {
			out = append(out, flag, v)
		}
	}
	if b := os.Getenv("UV_NO_INDEX"); b == "1" || b == "true" {
		out = append(out, "--no-index")
	}
	return out, nil
}

func cmdPip(p *parsed) error {
	if v := p.last("prerelease"); v != "" {
		if v == "allow" {
			p.flags["pre"] = []string{""}
		}
		delete(p.flags, "prerelease")
	}
	python, venv, err := target(p)
	if err != nil {
		return err
	}
	sub := strings.TrimPrefix(p.cmd, "pip ")
	args, err := indexArgs(p)
	if err != nil {
		return err
	}
	switch sub {
	case "install":
		return pipFor(python, venv, append(append([]string{"install"}, args...), p.pos...)...)
	case "uninstall":
		return pipFor(python, venv, append(append([]string{"uninstall", "-y"}, args...), p.pos...)...)
	case "freeze":
		// uv's freeze lists pip and setuptools too, as pip's --all does.
		return pipFor(python, venv, append([]string{"freeze", "--all"}, args...)...)
	}
	return pipFor(python, venv, append([]string{"list"}, args...)...)
}

func cmdRun(p *parsed) error {
	if len(p.rest) == 0 {
		return notImitated("uv run without a command")
	}
	var venv string
	if r := p.last("python"); r != "" {
		py, err := findPython(r)
		if err != nil {
			return err
		}
		venv = venvDir(py)
	}
	if !p.has("no-project") && !p.has("no-sync") {
		if _, err := findProject(p); err == nil {
			v, err := sync(p)
			if err != nil {
				return err
			}
			if venv == "" {
				venv = v
			}
		}
	}
	if venv == "" {
		if d, err := findProject(p); err == nil {
			venv = projectVenv(d)
		}
	}
	path := os.Getenv("PATH")
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "PATH" && k != "PYTHONHOME" && (k != "VIRTUAL_ENV" || venv == "") {
			env = append(env, kv)
		}
	}
	if venv != "" {
		path = filepath.Join(venv, "bin") + string(os.PathListSeparator) + path
		env = append(env, "VIRTUAL_ENV="+venv)
	}
	env = append(env, "PATH="+path)
	os.Setenv("PATH", path)
	exe := p.rest[0]
	if !strings.ContainsRune(exe, '/') {
		found, err := exec.LookPath(exe)
		if err != nil {
			return fail("Failed to spawn: `%s`\n  Caused by: No such file or directory (os error 2)", exe)
		}
		exe = found
	}
	return syscall.Exec(exe, p.rest, env)
}

func commandOutput(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return "", &exitError{1, fmt.Sprintf("error: %s: %v", strings.Join(argv, " "), err)}
	}
	return string(out), nil
}
