package main

// Debian's poetry (python3-poetry) against the loopback index: the commands
// the reference's poetry mode runs (poetry_api.py), offline.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pyNeedPoetry returns poetry's path, or skips (fails when CI=true).
func pyNeedPoetry(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs poetry")
	}
	p, err := exec.LookPath("poetry")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("poetry is needed on CI (apt-get install python3-poetry)")
		}
		t.Skip("poetry is not installed (apt-get install python3-poetry)")
	}
	return p
}

// pyTestPoetryEnv keeps poetry's cache, configuration and keyring out of
// the user's home and away from the network.
func pyTestPoetryEnv(home string) []string {
	return append(pyTestCleanEnv(),
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"POETRY_CACHE_DIR="+filepath.Join(home, "cache", "pypoetry"),
		"PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring",
		"POETRY_NO_INTERACTION=1",
		"PIP_CONFIG_FILE="+os.DevNull,
	)
}

// pyTestPoetryProject writes a Poetry project whose only source is index.
func pyTestPoetryProject(t testing.TB, dir, index string, deps map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("[tool.poetry]\nname = \"demo-app\"\nversion = \"0.1.0\"\ndescription = \"\"\nauthors = [\"Test <t@example.com>\"]\npackages = [{include = \"demo_app\"}]\n\n")
	b.WriteString("[tool.poetry.dependencies]\npython = \"^3.8\"\n")
	for n, v := range deps {
		b.WriteString(n + " = \"" + v + "\"\n")
	}
	// Poetry 1.3 spells "use only this source" default = true; 1.5+ also
	// accepts priority = "default" (and later "primary").
	b.WriteString("\n[[tool.poetry.source]]\nname = \"loopback\"\nurl = \"" + index + "\"\ndefault = true\n")
	b.WriteString("\n[build-system]\nrequires = [\"poetry-core\"]\nbuild-backend = \"poetry.core.masonry.api\"\n")
	venvWrite(t, filepath.Join(dir, "pyproject.toml"), b.String(), 0o644)
	venvWrite(t, filepath.Join(dir, "demo_app", "__init__.py"), "", 0o644)
	venvWrite(t, filepath.Join(dir, "main.py"), "import sys, venvdemo\nprint('POETRY', venvdemo.VERSION, sys.prefix)\n", 0o644)
}

func TestPoetryLoopbackIndex(t *testing.T) {
	poetry := pyNeedPoetry(t)
	root := t.TempDir()
	x := newPyTestIndex(t)
	x.Add("/simple/", pyTestWheel(t, filepath.Join(root, "w"), pyWheel{Name: "venvdemo", Version: "1.0", Requires: []string{"venvdep"}}),
		pyTestWheel(t, filepath.Join(root, "w"), pyWheel{Name: "venvdemo", Version: "2.0"}),
		pyTestWheel(t, filepath.Join(root, "w"), pyWheel{Name: "venvdep", Version: "3.1"}))
	proj := filepath.Join(root, "proj")
	pyTestPoetryProject(t, proj, x.URL("/simple/"), map[string]string{"venvdemo": "1.0"})
	env := pyTestPoetryEnv(filepath.Join(root, "home"))
	poetryRun := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(poetry, args...)
		cmd.Dir, cmd.Env = proj, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("poetry %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The reference's sequence (poetry_api.py): configure the venv into the
	// project, install, then freeze with `poetry show`, run with `poetry run`.
	poetryRun("config", "--local", "virtualenvs.in-project", "true")
	poetryRun("install", "-n")
	if _, err := os.Stat(filepath.Join(proj, "poetry.lock")); err != nil {
		t.Errorf("poetry install wrote no poetry.lock: %v", err)
	}
	out := poetryRun("run", "python", "main.py")
	if !strings.Contains(out, "POETRY 1.0 "+filepath.Join(proj, ".venv")) {
		t.Errorf("poetry run: %s", out)
	}
	show := poetryRun("show")
	frozen := poetryShowToFreeze(show)
	if strings.Join(frozen, "|") != "venvdemo==1.0|venvdep==3.1" {
		t.Errorf("poetry show:\n%s\nas frozen: %q", show, frozen)
	}
	for _, r := range x.Requests() {
		if !strings.HasPrefix(r, "/simple/") && !strings.HasPrefix(r, "/files/simple/") {
			t.Errorf("poetry asked for %s", r)
		}
	}
	// From the lock, a fresh venv gets the same versions (poetry still reads
	// the project pages: a lock of a plain index holds file names, not URLs).
	os.RemoveAll(filepath.Join(proj, ".venv"))
	poetryRun("install", "-n", "--no-root")
	if out := poetryRun("run", "python", "main.py"); !strings.Contains(out, "POETRY 1.0 ") {
		t.Errorf("poetry run after a locked install: %s", out)
	}
}
