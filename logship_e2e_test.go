package main

// End-to-end: `execute` against a server whose events.add_batch refuses
// (issue 12, item 7).

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// twentyEightLines prints 28 lines, then touches $MARKER as it ends.
const twentyEightLines = `import os
for i in range(28):
    print("task line %02d" % i, flush=True)
open(os.environ["MARKER"], "w").close()
`

// startAgentCmd starts the binary as runAgent does, without waiting.
func startAgentCmd(t *testing.T, env map[string]string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, &out
}

// waitExit waits up to d for cmd; false if it is still running.
func waitExit(cmd *exec.Cmd, d time.Duration) (int, bool) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		return 0, true
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return 0, false
	}
}

// TestExecuteConsoleRefused413: every events.add_batch is answered 413
// with an HTML page. The task's final status comes seconds after it ends
// (it took 300 s), and the agent's log says how many lines were dropped.
func TestExecuteConsoleRefused413(t *testing.T) {
	s := startServer(t)
	marker := filepath.Join(t.TempDir(), "done")
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": twentyEightLines})
	id := addScriptTask(s, repo, "train.py")
	s.HTMLNext("events.add_batch", 0, http.StatusRequestEntityTooLarge)
	env := executeEnv(t, s)
	env["MARKER"] = marker
	cmd, out := startAgentCmd(t, env, "execute", "--id", id)
	waitForFile(t, marker, 120*time.Second)
	ended := time.Now()
	code, exited := waitExit(cmd, 30*time.Second)
	if !exited {
		t.Fatalf("execute still running 30 s after the task ended; task %s; output:\n%s", taskStatus(t, s, id).Status, out)
	}
	if took := time.Since(ended); took > 8*time.Second {
		t.Errorf("execute took %v after the task ended", took)
	}
	if code != 0 {
		t.Errorf("exit %d\n%s", code, out)
	}
	if st := taskStatus(t, s, id); st.Status != "completed" {
		t.Errorf("status %s (%s)", st.Status, st.StatusReason)
	}
	m := regexp.MustCompile(`console log of task \S+: (\d+) lines dropped: the server refused them: events.add_batch: HTTP 413`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the agent's output does not count the dropped lines:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n < 28 {
		t.Errorf("%d lines dropped; the task alone printed 28", n)
	}
	if !strings.Contains(out.String(), "task line 27\n") {
		t.Errorf("the local log lost task lines:\n%s", out)
	}
	if n := len(s.RequestsTo("events.add_batch")); n > 200 {
		t.Errorf("%d add_batch requests", n)
	}
}

// TestExecuteSignalDuringConsoleFlush: SIGTERM while execute waits to
// deliver the last console lines (events.add_batch hangs) ends the wait at
// once; the task still gets its final status.
func TestExecuteSignalDuringConsoleFlush(t *testing.T) {
	s := startServer(t)
	marker := filepath.Join(t.TempDir(), "done")
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": twentyEightLines})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	env["MARKER"] = marker
	cmd, out := startAgentCmd(t, env, "execute", "--id", id)
	// Hang add_batch only once the task runs: setup needs no console.
	s.AddFault(fakeserver.Fault{Endpoint: "events.add_batch", Hang: true})
	waitForFile(t, marker, 120*time.Second)
	time.Sleep(time.Second) // execute is in its final flush now
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if _, exited := waitExit(cmd, 20*time.Second); !exited {
		t.Fatalf("execute ignored SIGTERM during the console flush; output:\n%s", out)
	}
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("execute took %v to honour SIGTERM", took)
	}
	if st := taskStatus(t, s, id); st.Status == "in_progress" || st.Status == "queued" {
		t.Errorf("task left %s", st.Status)
	}
	if !strings.Contains(out.String(), "not delivered") {
		t.Errorf("the output does not say lines were not delivered:\n%s", out)
	}
}
