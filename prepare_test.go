package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExecuteRunDirs: each run gets its own folder under agent.venvs_dir;
// cleaning it never touches agent.venvs_dir or another run's folder; a
// folder a crashed run left is removed by the task's next run, one that
// --debug kept is not.
func TestExecuteRunDirs(t *testing.T) {
	venvs := filepath.Join(t.TempDir(), "venvs-builds")
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "x\x00y", "a.b"} {
		if rd, err := newRunDir(venvs, bad); err == nil || !strings.Contains(err.Error(), "not a plain token") {
			t.Errorf("newRunDir(%q) = %v, %v; want a refusal", bad, rd, err)
		}
	}
	keep := writeFile(t, filepath.Join(venvs, "keep"), "")
	other := writeFile(t, filepath.Join(venvs, "othertask.1", runLockName), "") // another task's, unlocked

	a, err := newRunDir(venvs, "t1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := newRunDir(venvs, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if a.path == b.path || filepath.Dir(a.path) != venvs || !strings.HasPrefix(filepath.Base(a.path), "t1.") {
		t.Fatalf("run folders %s and %s", a.path, b.path)
	}
	// A crashed run's folder: its lock file stays, unlocked.
	crashed := filepath.Join(venvs, "t1.crashed")
	writeFile(t, filepath.Join(crashed, runLockName), "")
	// --debug keeps a folder: it has no lock file and stays.
	d, err := newRunDir(venvs, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) {
		t.Errorf("the crashed run's folder is still there (%v)", err)
	}
	if err := d.release(true); err != nil {
		t.Fatal(err)
	}
	if err := a.release(false); err != nil {
		t.Fatal(err)
	}
	c, err := newRunDir(venvs, "t1") // sweeps again: the live and kept folders stay
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{b.path, d.path, keep, other, c.path} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s is gone: %v", p, err)
		}
	}
	if _, err := os.Stat(a.path); !os.IsNotExist(err) {
		t.Errorf("a released run folder stayed (%v)", err)
	}
	b.release(false)
	c.release(false)
	if _, err := os.Stat(venvs); err != nil {
		t.Errorf("agent.venvs_dir is gone: %v", err)
	}
}
