package main

// End-to-end tests of issue 12's hardening: duplicate runs of one task,
// server strings used as paths, oversized replies, crashed daemons and
// duplicate worker ids.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// TestExecuteRejectsUnsafeTaskIDs: a task id from the server that is not a
// plain token never names a folder: execute and build refuse it before
// touching the disk, and agent.venvs_dir survives.
func TestExecuteRejectsUnsafeTaskIDs(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	env := executeEnv(t, s)
	venvs := filepath.Join(env["HOME"], ".clearml", "venvs-builds")
	keep := writeFile(t, filepath.Join(venvs, "other-task", "keep"), "another task's files")
	for i, bad := range []string{".", "..", "../escape", "a/b", "sp ace", "nul\x00byte"} {
		name := "unsafe-" + string(rune('a'+i))
		s.AddTask(fakeserver.TaskSpec{ID: bad, Name: name, Status: "queued",
			Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"}})
		for _, cmd := range []string{"execute", "build"} {
			r := runAgent(t, env, cmd, "--id", name)
			if r.code != 1 {
				t.Errorf("%s of task id %q: exit %d\n%s", cmd, bad, r.code, r.stdout)
			}
			oneErrorLine(t, r, "is not a plain token")
			if _, err := os.Stat(keep); err != nil {
				t.Fatalf("%s of task id %q removed files in agent.venvs_dir: %v", cmd, bad, err)
			}
		}
		if task, ok := s.Task(bad); !ok || task.Status != "queued" {
			t.Errorf("task id %q: status %s, want queued (untouched)", bad, task.Status)
		}
	}
	if ents, _ := os.ReadDir(venvs); len(ents) != 1 {
		t.Errorf("agent.venvs_dir holds %d entries, want only other-task", len(ents))
	}
}

// TestDaemonRejectsUnsafeTaskID: a queue entry whose task id is not a plain
// token is failed with the reason, and no child runs it.
func TestDaemonRejectsUnsafeTaskID(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	bad := s.AddTask(fakeserver.TaskSpec{ID: "..", Name: "unsafe", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"}})
	if err := s.Enqueue(bad, fakeserver.DefaultQueueName); err != nil {
		t.Fatal(err)
	}
	good := enqueueScript(t, s, repo, "train.py", fakeserver.DefaultQueueName)
	p := startDaemon(t, executeEnv(t, s), "--queue", fakeserver.DefaultQueueName)
	task := waitStatus(t, s, p, bad, "failed", time.Minute)
	if !strings.Contains(task.StatusReason, "not a plain token") {
		t.Errorf("reason %q", task.StatusReason)
	}
	waitStatus(t, s, p, good, "completed", time.Minute)
	p.stop(t)
	if strings.Contains(p.out.String(), "Running task '..'") {
		t.Errorf("the daemon ran the task:\n%s", p.out.String())
	}
}
