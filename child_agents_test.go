package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD counts the running services
// containers: at the --services-mode limit the daemon takes no task.
func TestDaemonChildAgentsCountCommand(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not installed (daemon --docker needs the command)")
	}
	s := startServer(t)
	dir := t.TempDir()
	id := s.AddTask(fakeserver.TaskSpec{Name: "waits", Script: &fakeserver.Script{EntryPoint: "x.py"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := serverEnv(s)
	env["MARKDIR"] = dir
	env["CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD"] = `sh -c 'echo {parent_worker_label} > "$MARKDIR/label"; echo one; echo two'`
	p := startDaemon(t, env, "--queue", "default", "--docker", "--services-mode", "2", "--create-queue")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), "Reached max number of services 2") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	p.stop(t)
	if st := taskStatus(t, s, id).Status; st != "queued" {
		t.Errorf("the daemon took a task at its services limit: status %s\n%s", st, p.out.String())
	}
	label, _ := os.ReadFile(filepath.Join(dir, "label"))
	if !strings.HasPrefix(string(label), "clearml-parent-worker-id=") || strings.Contains(string(label), "{") {
		t.Errorf("{parent_worker_label} became %q", label)
	}
	if n := countChildAgents(context.Background(), "printf 'a\\n\\nb\\n'", "w", t.Logf); n != 2 {
		t.Errorf("count %d, want 2", n)
	}
	if n := countChildAgents(context.Background(), "false", "w", t.Logf); n != 0 {
		t.Errorf("a failing command counts %d, want 0", n)
	}
}
