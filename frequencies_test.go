package main

import (
	"strings"
	"testing"
	"time"
)

// CLEARML_AGENT_QUEUE_POLL_FREQ_SEC (over --polling-interval, as the
// reference) and CLEARML_AGENT_STATUS_REPORT_FREQ_SEC set the daemon's
// cadence.
func TestDaemonFrequencyVariables(t *testing.T) {
	s := startServer(t)
	env := serverEnv(s)
	env["CLEARML_AGENT_QUEUE_POLL_FREQ_SEC"] = "0.2"
	env["CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"] = "0.5"
	p := startDaemon(t, env, "--queue", "default", "--polling-interval", "30")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), "Listening to queues") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	p.stop(t)
	// Defaults (30 s polling asked for, 30 s reports) would give 1 or 2 of each.
	if n := len(s.RequestsTo("queues.get_next_task")); n < 10 {
		t.Errorf("%d polls in 5 s with CLEARML_AGENT_QUEUE_POLL_FREQ_SEC=0.2", n)
	}
	if n := len(s.RequestsTo("workers.status_report")); n < 4 {
		t.Errorf("%d status reports in 5 s with CLEARML_AGENT_STATUS_REPORT_FREQ_SEC=0.5", n)
	}
}

// A standalone execute reports its machine at that pace too.
func TestExecuteStatusReportFrequency(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import time\ntime.sleep(7)\n"})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	env["CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"] = "0.5"
	if r := runAgent(t, env, "execute", "--id", id); r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The first periodic report comes after 3 s (as the reference), then every 0.5 s.
	if n := len(s.RequestsTo("workers.status_report")); n < 6 {
		t.Errorf("%d status reports during a 7 s task with CLEARML_AGENT_STATUS_REPORT_FREQ_SEC=0.5 (30 s: 2)", n)
	}
	// Abort polls keep their own pace.
	var last time.Time
	for _, rq := range s.RequestsTo("tasks.get_all") {
		if !strings.Contains(string(rq.Body), `"status_message"`) {
			continue
		}
		if !last.IsZero() && rq.Time.Sub(last) < 1500*time.Millisecond {
			t.Errorf("abort polls %v apart: they followed the report pace", rq.Time.Sub(last))
		}
		last = rq.Time
	}
}
