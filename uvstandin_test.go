package main

// The recording stand-in for uv (testdata/uvstandin): uv cannot be
// installed here, so tests put this on PATH as "uv". These tests keep it
// honest: what real uv rejects, it rejects.

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var pyTestUVBuild struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// pyTestUV builds the stand-in (once per process, into a folder named by
// the hash of its sources, so later runs reuse it) and returns the folder
// holding it as "uv" (put it first on PATH) and a fresh log file
// ($UV_STANDIN_LOG) for this test.
func pyTestUV(t testing.TB) (binDir, logPath string) {
	t.Helper()
	b := &pyTestUVBuild
	b.once.Do(func() {
		h := sha256.New()
		srcs, _ := filepath.Glob("testdata/uvstandin/*.go")
		for _, f := range srcs {
			data, err := os.ReadFile(f)
			if err != nil {
				b.err = err
				return
			}
			h.Write(data)
		}
		b.dir = filepath.Join(os.TempDir(), fmt.Sprintf("clearml-test-uv-%x", h.Sum(nil)[:8]))
		if _, err := os.Stat(filepath.Join(b.dir, "uv")); err == nil {
			return
		}
		tmp, err := os.MkdirTemp("", "clearml-test-uv-build-")
		if err != nil {
			b.err = err
			return
		}
		defer os.RemoveAll(tmp)
		if b.out, b.err = exec.Command("go", "build", "-o", filepath.Join(tmp, "uv"), "./testdata/uvstandin").CombinedOutput(); b.err != nil {
			return
		}
		if err := os.Rename(tmp, b.dir); err != nil && !os.IsExist(err) {
			if _, serr := os.Stat(filepath.Join(b.dir, "uv")); serr != nil {
				b.err = err // not a concurrent run that got there first
			}
		}
	})
	if b.err != nil {
		t.Fatalf("building the uv stand-in: %v\n%s", b.err, b.out)
	}
	return b.dir, filepath.Join(t.TempDir(), "uv-calls.jsonl")
}

// uvCall is one recorded call of the stand-in.
type uvCall struct {
	Argv []string          `json:"argv"`
	Dir  string            `json:"dir"`
	Env  map[string]string `json:"env"`
}

func pyTestUVCalls(t testing.TB, logPath string) []uvCall {
	t.Helper()
	f, err := os.Open(logPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls []uvCall
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c uvCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("uv log: %v: %s", err, sc.Text())
		}
		calls = append(calls, c)
	}
	return calls
}

// uvRun runs the stand-in in dir with extra environment.
func uvRun(t testing.TB, bin, logPath, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "uv"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(pyTestCleanEnv(), "UV_STANDIN_LOG="+logPath, "PIP_CONFIG_FILE="+os.DevNull, "PIP_NO_CACHE_DIR=1"), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("uv %v: %v", args, err)
	}
	return string(out), code
}

func TestUVStandInRejects(t *testing.T) {
	bin, log := pyTestUV(t)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{args: []string{"pip", "install", "--use-deprecated=legacy-resolver", "x"}, code: 2, want: "unexpected argument '--use-deprecated'"},
		{args: []string{"pip", "install", "--user", "x"}, code: 2, want: "`--user` is unsupported"},
		{args: []string{"pip", "install"}, code: 2, want: "required arguments were not provided"},
		{args: []string{"pip", "install", "--python"}, code: 2, want: "a value is required for '--python"},
		{args: []string{"pip", "install", "--index-strategy", "best", "x"}, code: 2, want: "invalid value 'best'"},
		{args: []string{"pip", "install", "x"}, env: []string{"UV_INDEX_STRATEGY=best"}, code: 2, want: "invalid value 'best'"},
		{args: []string{"pip", "frobnicate"}, code: 2, want: "unrecognized subcommand 'frobnicate'"},
		{args: []string{"pip"}, code: 2, want: "requires a subcommand"},
		{args: []string{"sync", "--locked", "--frozen"}, code: 2, want: "'--locked' cannot be used with '--frozen'"},
		{args: []string{"sync", "--locked", "-U"}, code: 2, want: "'--locked' cannot be used with '--upgrade'"},
		{args: []string{"sync", "--no-such-flag"}, code: 2, want: "unexpected argument '--no-such-flag'"},
		{args: []string{"sync", "-n=1"}, code: 2, want: "unexpected value"},
		{args: []string{"--python", "3.11", "venv"}, code: 2, want: "unexpected argument '--python'"},
		{args: []string{"venv", "--no-pip-please"}, code: 2, want: "unexpected argument"},
		{args: []string{"venv", "a", "b"}, code: 2, want: "unexpected argument 'b'"},
		{args: []string{"run", "--nope", "python"}, code: 2, want: "unexpected argument '--nope'"},
		{args: []string{"frobnicate"}, code: 2, want: "unrecognized subcommand 'frobnicate'"},
		{args: []string{}, code: 2, want: "requires a subcommand"},
		{args: []string{"sync"}, code: 2, want: "No `pyproject.toml` found"},
		{args: []string{"pip", "freeze"}, code: 2, want: "No virtual environment found"},
		// Real uv accepts these; the stand-in says it does not imitate them.
		{args: []string{"lock"}, code: 3, want: "not imitated"},
		{args: []string{"pip", "install", "--torch-backend", "auto", "--python", "/usr/bin/python3", "x"}, code: 3, want: "--torch-backend is valid uv but not imitated"},
		{args: []string{"--version"}, code: 0, want: "uv 0."},
		{args: []string{"-qq", "--no-cache", "--version"}, code: 0, want: "uv 0."},
	} {
		out, code := uvRun(t, bin, log, dir, c.env, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("uv %q: exit %d, want %d with %q:\n%s", c.args, code, c.code, c.want, out)
		}
	}
	if calls := pyTestUVCalls(t, log); len(calls) != 24 || calls[0].Argv[2] != "--use-deprecated=legacy-resolver" || calls[0].Dir != dir {
		t.Errorf("recorded %d calls, first %+v", len(calls), calls[0])
	}
}

func TestUVStandInVenvPip(t *testing.T) {
	py := pyNeedPython(t)
	bin, log := pyTestUV(t)
	root := t.TempDir()
	house := filepath.Join(root, "wheels")
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "1.0"})
	venv := filepath.Join(root, "venv")
	if out, code := uvRun(t, bin, log, root, nil, "venv", "--allow-existing", "--python", py, venv); code != 0 {
		t.Fatalf("uv venv: %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(venv, "bin", "pip")); err == nil {
		t.Error("uv venv seeds no pip without --seed")
	}
	if out, code := uvRun(t, bin, log, root, nil, "venv", venv); code != 2 || !strings.Contains(out, "A virtual environment already exists") {
		t.Errorf("uv venv over an existing one: %d\n%s", code, out)
	}
	out, code := uvRun(t, bin, log, root, []string{"UV_INDEX_STRATEGY=unsafe-best-match"},
		"pip", "install", "--python", filepath.Join(venv, "bin", "python"), "--no-index", "--find-links", house, "--link-mode", "copy", "venvdemo==1.0")
	if code != 0 {
		t.Fatalf("uv pip install: %d\n%s", code, out)
	}
	if got := pyTestImport(t, filepath.Join(venv, "bin", "python"), "venvdemo"); got != "1.0" {
		t.Errorf("venvdemo %s", got)
	}
	out, code = uvRun(t, bin, log, root, []string{"VIRTUAL_ENV=" + venv}, "pip", "freeze")
	if code != 0 || !strings.Contains(out, "venvdemo==1.0") {
		t.Errorf("uv pip freeze (VIRTUAL_ENV): %d\n%s", code, out)
	}
	calls := pyTestUVCalls(t, log)
	if len(calls) != 4 || calls[2].Env["UV_INDEX_STRATEGY"] != "unsafe-best-match" || calls[3].Env["VIRTUAL_ENV"] != venv {
		t.Errorf("calls: %+v", calls)
	}
}

func TestUVStandInProject(t *testing.T) {
	py := pyNeedPython(t)
	bin, log := pyTestUV(t)
	root := t.TempDir()
	house := filepath.Join(root, "wheels")
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "1.0"})
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "2.0"})
	pyTestWheel(t, house, pyWheel{Name: "extrapkg", Version: "0.5"})
	proj := filepath.Join(root, "proj")
	venvWrite(t, filepath.Join(proj, "pyproject.toml"), `[project]
name = "demo-app"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = [
    "venvdemo>=1",  # any
]

[project.optional-dependencies]
more = ["extrapkg"]
`, 0o644)
	venvWrite(t, filepath.Join(proj, "main.py"), "import os, sys, venvdemo\nprint('RUN', venvdemo.VERSION, os.environ.get('VIRTUAL_ENV'), sys.argv[1:])\n", 0o644)
	idx := []string{"--no-index", "--find-links", house}
	env := []string{"UV_PYTHON=" + py}

	// No lock: --locked fails with uv's words; a plain sync installs and locks.
	if out, code := uvRun(t, bin, log, proj, env, append([]string{"sync", "--locked"}, idx...)...); code != 2 || !strings.Contains(out, "Unable to find lockfile at `uv.lock`, but `--locked` was provided") {
		t.Fatalf("sync --locked without a lock: %d\n%s", code, out)
	}
	if out, code := uvRun(t, bin, log, proj, env, append([]string{"sync"}, idx...)...); code != 0 {
		t.Fatalf("sync: %d\n%s", code, out)
	}
	lock, err := os.ReadFile(filepath.Join(proj, "uv.lock"))
	if err != nil || !strings.Contains(string(lock), "name = \"venvdemo\"\nversion = \"2.0\"") {
		t.Fatalf("uv.lock: %v\n%s", err, lock)
	}
	// A lock pinning 1.0 is honoured; adding a dependency makes it stale.
	os.WriteFile(filepath.Join(proj, "uv.lock"), []byte(strings.Replace(string(lock), `version = "2.0"`, `version = "1.0"`, 1)), 0o644)
	out, code := uvRun(t, bin, log, proj, env, append([]string{"run", "--locked"}, append(idx, "python", "main.py", "--flag")...)...)
	if code != 0 || !strings.Contains(out, "RUN 1.0 "+filepath.Join(proj, ".venv")+" ['--flag']") {
		t.Fatalf("run --locked: %d\n%s", code, out)
	}
	if out, code := uvRun(t, bin, log, proj, env, append([]string{"sync", "--locked", "--extra", "more"}, idx...)...); code != 2 || !strings.Contains(out, "needs to be updated, but `--locked` was provided") {
		t.Errorf("sync --locked with a stale lock: %d\n%s", code, out)
	}
	if out, code := uvRun(t, bin, log, proj, env, append([]string{"sync", "--frozen", "--all-extras"}, idx...)...); code != 0 {
		t.Errorf("sync --frozen installs what it can: %d\n%s", code, out)
	}
	// The reference's run: uv run --python <project>/.venv/bin/python python ...
	out, code = uvRun(t, bin, log, root, nil, "run", "--project", proj, "--no-sync", "--python", filepath.Join(proj, ".venv", "bin", "python"), "python", "-c", "import extrapkg; print(extrapkg.VERSION)")
	if code != 0 || strings.TrimSpace(out) != "0.5" {
		t.Errorf("run --python: %d\n%s", code, out)
	}
	// A Poetry-only pyproject has no [project] table: uv refuses it.
	poetry := filepath.Join(root, "poetryproj")
	venvWrite(t, filepath.Join(poetry, "pyproject.toml"), "[tool.poetry]\nname = \"x\"\n", 0o644)
	if out, code := uvRun(t, bin, log, poetry, env, "sync"); code != 2 || !strings.Contains(out, "No `project` table found") {
		t.Errorf("sync of a poetry project: %d\n%s", code, out)
	}
	if n := len(pyTestUVCalls(t, log)); n != 7 {
		t.Errorf("%d calls recorded, want 7", n)
	}
}
