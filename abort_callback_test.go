package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CLEARML_AGENT_ABORT_CALLBACK_CMD runs when the task is aborted, in the
// task's folder, and the task is stopped once it has completed.
func TestExecuteAbortCallbackCommand(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": `import os, time
open(os.path.join(os.environ["MARKDIR"], "started"), "w").close()
while True:
    open(os.path.join(os.environ["MARKDIR"], "beat"), "w").write(repr(time.time()))
    time.sleep(0.1)
`})
	id := addScriptTask(s, repo, "loop.py")
	env := executeEnv(t, s)
	env["MARKDIR"] = dir
	env["CLEARML_AGENT_ABORT_CALLBACK_CMD"] = `sh -c 'sleep 2; pwd > "$MARKDIR/cb.tmp"; python3 -c "import time; print(repr(time.time()))" >> "$MARKDIR/cb.tmp"; mv "$MARKDIR/cb.tmp" "$MARKDIR/cb"'`
	env["CLEARML_AGENT_ABORT_CALLBACK_TIMEOUT"] = "30"
	done := runAgentAsync(t, env, "execute", "--id", id)
	waitForFile(t, filepath.Join(dir, "started"), time.Minute)
	if rt := taskStatus(t, s, id).Runtime; rt["_abort_callback_timeout"] != "30" || rt["_abort_poll_freq"] != "10" {
		t.Errorf("the callback is not registered on the task: runtime %v", rt)
	}
	stopTask(t, s, id)
	var r runResult
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("execute did not end after the abort callback")
	}
	cb, err := os.ReadFile(filepath.Join(dir, "cb"))
	if err != nil {
		t.Fatalf("the callback did not run: %v\n%s", err, s.TaskLogText(id))
	}
	lines := strings.Fields(string(cb))
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "repo.git") {
		t.Errorf("callback output %q: want its working dir to be the task's repository", cb)
	}
	beat, _ := os.ReadFile(filepath.Join(dir, "beat"))
	if string(beat) < lines[len(lines)-1] {
		t.Errorf("the task was stopped before the callback ended: last beat %s, callback end %s", beat, lines[len(lines)-1])
	}
	task := taskStatus(t, s, id)
	if task.Status != "stopped" || task.Runtime["_abort_callback_completed"] != "1" {
		t.Errorf("status %s, runtime %v\n%s", task.Status, task.Runtime, r.stdout)
	}
	log := s.TaskLogText(id)
	for _, want := range []string{"INFO: registering bash callback, timeout 30s: sh -c", "INFO: running bash on_abort callback: sh -c", "### Task abort callback completed in "} {
		if !strings.Contains(log, want) {
			t.Errorf("the task log lacks %q:\n%s", want, log)
		}
	}
}
