package main

import (
	"errors"
	"os"
	"os/exec"
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

// TestDaemonClaimBusyRemote: a worker id the server saw report recently is
// another agent's (another TMPDIR, container or host): a fixed id is
// refused, a slot id moves to the next slot; unless this host's last
// daemon with that id died without unregistering (its marker is left).
func TestDaemonClaimBusyRemote(t *testing.T) {
	r := testRegistry(t)
	r.busyRemote = map[string]bool{"fixed:1": true, "host:0": true}
	fixed := newWorkerIdentity("fixed:1", "host", "", false)
	_, err := r.claimFor(os.Getpid(), fixed.idFor, nil)
	var dup *errDuplicateWorker
	if !errors.As(err, &dup) || !dup.remote || !strings.Contains(err.Error(), "Worker id [fixed:1] is in use") {
		t.Fatalf("a fixed id busy on the server: %v", err)
	}
	slot := mustClaim(t, r, os.Getpid(), newWorkerIdentity("", "host", "", false))
	if slot.WorkerID != "host:1" {
		t.Errorf("slot id %s, want host:1 (host:0 is busy on the server)", slot.WorkerID)
	}
	// A daemon of this host claimed fixed:1 and died: its lock is gone,
	// its pid file and marker stay. The registration the server saw is
	// its own, and the id is free to take over.
	crashed, err := (&instanceRegistry{dir: r.dir}).claimFor(os.Getpid(), fixed.idFor, nil)
	if err != nil {
		t.Fatal(err)
	}
	crashed.file.Close()
	again, err := r.claimFor(os.Getpid(), fixed.idFor, nil)
	if err != nil {
		t.Fatalf("a restart after a crash: %v", err)
	}
	// A clean exit removes the marker: the id is then another agent's again.
	again.release()
	if _, err := r.claimFor(os.Getpid(), fixed.idFor, nil); !errors.As(err, &dup) {
		t.Errorf("after a clean exit, a fixed id busy on the server: %v", err)
	}
}

// TestDaemonOrphanRules: which workers' tasks a daemon may fail at start,
// and which tasks a process on this host still runs.
func TestDaemonOrphanRules(t *testing.T) {
	owns := ownsWorker("box:gpu0", "box", nil)
	dyn := ownsWorker("box:dgpu0-3", "box", []string{"0", "1", "2", "3", "4:1"})
	for _, tt := range []struct {
		owns   func(string) bool
		worker string
		want   bool
	}{
		{owns, "box:gpu0", true},
		{owns, "box:gpu0:service:abc", true},
		{owns, "box:gpu01", false},
		{owns, "box:gpu1", false},
		{owns, "other:gpu0", false},
		{dyn, "box:gpu0,1", true},
		{dyn, "box:gpu4.1", true},
		{dyn, "box:gpu5", false},
		{dyn, "box:gpu3,5", false},
		{dyn, "box:dgpu0-3", true},
	} {
		if got := tt.owns(tt.worker); got != tt.want {
			t.Errorf("owns(%q) = %v, want %v", tt.worker, got, tt.want)
		}
	}

	cmds := []*exec.Cmd{
		exec.Command("sh", "-c", "sleep 30; : clearml-agent execute --id task-one --disable-monitoring"),
		exec.Command("sh", "-c", "sleep 30; : execute --id=task-two", "x"),
		exec.Command("sh", "-c", "sleep 30; : build --id task-three", "x"),
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	runs := localTaskRuns()
	if !runs["task-one"] || !runs["task-two"] || runs["task-three"] {
		t.Errorf("local task runs %v: want task-one and task-two, not the build", runs)
	}
}
