package main

import (
	"os/exec"
	"testing"
)

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
