package main

// End-to-end tests of the daemon's stop protocol (stop.go): SIGTERM stops
// at once and cleanly, SIGQUIT drains, a dead daemon fails its task, and
// no worker outlives its agent on the server.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// stopBudget is how long a daemon may take from SIGTERM to exit with a
// task running (issue 11: docker stop kills after 10 s).
const stopBudget = 8 * time.Second

// stubbornTask ignores SIGINT and SIGTERM (only SIGKILL ends it) and says
// when it runs: the worst case for a stop.
const stubbornTask = `import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.environ["PIDFILE"] + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
i = 0
while True:
    print("tick", i, flush=True)
    i += 1
    time.sleep(0.1)
`

// sigtermAndWait signals the daemon and returns how long it took to exit.
func sigtermAndWait(t *testing.T, p *daemonProc, sig syscall.Signal, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("daemon did not exit within %v of %v:\n%s", limit, sig, p.out.String())
	}
	took := time.Since(start)
	if p.err != nil {
		t.Errorf("daemon exit: %v, want 0\n%s", p.err, p.out.String())
	}
	return took
}

// checkNoGhost: after the agent stopped, none of its workers is listed,
// each was unregistered, and nothing reached the server for a worker
// after its unregister (a status report would register it again).
func checkNoGhost(t *testing.T, s *fakeserver.Server, workers ...string) {
	t.Helper()
	for _, w := range s.Workers() {
		for _, id := range workers {
			if w.ID == id || strings.HasPrefix(w.ID, id+":") {
				t.Errorf("worker %s is still registered after the stop (%d reports)", w.ID, w.Reports)
			}
		}
	}
	for _, id := range workers {
		last := 0
		for _, r := range s.RequestsTo("workers.unregister") {
			if r.Data["worker"] == id {
				last = r.Seq
			}
		}
		if last == 0 {
			t.Errorf("worker %s was never unregistered", id)
			continue
		}
		for _, r := range s.Requests() {
			if r.Seq > last && strings.HasPrefix(r.Endpoint, "workers.") && r.Data["worker"] == id {
				t.Errorf("request #%d %s for worker %s after its unregister (#%d)", r.Seq, r.Endpoint, id, last)
			}
		}
	}
}

// daemonWorkerID is the worker id the daemon registered.
func daemonWorkerID(t *testing.T, s *fakeserver.Server) string {
	t.Helper()
	regs := s.WaitForRequests("workers.register", 1, 30*time.Second)
	if len(regs) == 0 {
		t.Fatal("the daemon never registered")
	}
	id, _ := regs[0].Data["worker"].(string)
	return id
}

// TestDaemonStopAtOnce (issue 11 §1, §2): SIGTERM with a task running
// that ignores SIGINT and SIGTERM: the task is killed, its console
// delivered, its status "stopped" with the shutdown reason, one
// unregister, no report after it, exit 0, all within stopBudget.
func TestDaemonStopAtOnce(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"stubborn.py": stubbornTask})
	id := enqueueScript(t, s, repo, "stubborn.py", "default")
	env := executeEnv(t, s)
	pidFile := filepath.Join(t.TempDir(), "pid")
	env["PIDFILE"] = pidFile
	p := startDaemon(t, env, "--queue", "default")
	worker := daemonWorkerID(t, s)
	waitForFile(t, pidFile, 2*time.Minute)
	taskPID := readPID(t, pidFile)
	s.WaitForRequests("workers.status_report", 2, 10*time.Second) // the loop reports
	took := sigtermAndWait(t, p, syscall.SIGTERM, 30*time.Second)
	t.Logf("SIGTERM -> daemon exit %.2f s (task ignoring SIGINT and SIGTERM)", took.Seconds())
	if took > stopBudget {
		t.Errorf("the daemon took %v to stop, more than %v", took, stopBudget)
	}
	task := taskStatus(t, s, id)
	if task.Status != "stopped" || task.StatusReason != shutdownReason {
		t.Errorf("status = %s (%s), want stopped (%s)", task.Status, task.StatusReason, shutdownReason)
	}
	log := s.TaskLogText(id)
	if !strings.Contains(log, "tick 3\n") || !strings.HasSuffix(strings.TrimSpace(log), "Process terminated: the agent was shut down") {
		t.Errorf("the task's console was not delivered to its end:\n%s", log)
	}
	if pidAlive(taskPID) {
		t.Errorf("the task's process %d outlived the daemon", taskPID)
	}
	n := 0
	for _, r := range s.RequestsTo("workers.unregister") {
		if r.Data["worker"] == worker {
			n++
		}
	}
	if n != 1 {
		t.Errorf("workers.unregister sent %d times for %s", n, worker)
	}
	checkNoGhost(t, s, worker)
}

// TestDaemonStopServicesModeUnregisters (issue 11 §1): in services mode
// each task runs as its own worker <id>:service:<task>; a stop leaves
// none of them, nor the daemon's, registered.
func TestDaemonStopServicesModeUnregisters(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"})
	ids := []string{enqueueScript(t, s, repo, "loop.py", "default"), enqueueScript(t, s, repo, "loop.py", "default")}
	p := startDaemon(t, executeEnv(t, s), "--queue", "default", "--services-mode")
	worker := daemonWorkerID(t, s)
	for _, id := range ids {
		waitStatus(t, s, p, id, "in_progress", 2*time.Minute)
		for i := 0; i < 1200 && !strings.Contains(s.TaskLogText(id), "looping"); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Each child reports its own worker before the stop.
	for _, id := range ids {
		deadline := time.Now().Add(30 * time.Second)
		for _, ok := s.WorkerByID(worker + ":service:" + id); !ok && time.Now().Before(deadline); _, ok = s.WorkerByID(worker + ":service:" + id) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	took := sigtermAndWait(t, p, syscall.SIGTERM, 30*time.Second)
	t.Logf("SIGTERM -> daemon exit %.2f s (services mode, 2 tasks)", took.Seconds())
	if took > stopBudget {
		t.Errorf("the daemon took %v to stop", took)
	}
	workers := []string{worker}
	for _, id := range ids {
		if task := taskStatus(t, s, id); task.Status != "stopped" || task.StatusReason != shutdownReason {
			t.Errorf("task %s: %s (%s)", id, task.Status, task.StatusReason)
		}
		workers = append(workers, worker+":service:"+id)
	}
	checkNoGhost(t, s, workers...)
}

// TestDaemonDrainOnSIGQUIT (issue 11 §2): SIGQUIT lets the running task
// finish and exits; with agent.shutdown_grace_sec the drain is bounded;
// SIGTERM during a drain stops at once; `daemon --stop --drain` drains.
func TestDaemonDrainOnSIGQUIT(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{
		"short.py": "import time\ntime.sleep(3)\nprint('finished', flush=True)\n",
		"long.py":  "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n",
	})
	env := executeEnv(t, s)
	short := enqueueScript(t, s, repo, "short.py", "default")
	p := startDaemon(t, env, "--queue", "default")
	waitStatus(t, s, p, short, "in_progress", 2*time.Minute)
	next := enqueueScript(t, s, repo, "short.py", "default")
	sigtermAndWait(t, p, sigDrain, 2*time.Minute)
	if task, _ := s.Task(short); task.Status != "completed" {
		t.Errorf("drained task is %s (%s):\n%s", task.Status, task.StatusReason, p.out.String())
	}
	if task, _ := s.Task(next); task.Status != "queued" {
		t.Errorf("a drain took a new task: %s", task.Status)
	}

	// Bounded by agent.shutdown_grace_sec, then stopped as a shutdown.
	env["CLEARML_AGENT__AGENT__SHUTDOWN_GRACE_SEC"] = "1"
	long := enqueueScript(t, s, repo, "long.py", "default")
	p = startDaemon(t, env, "--queue", "default")
	waitStatus(t, s, p, long, "in_progress", 2*time.Minute)
	took := sigtermAndWait(t, p, sigDrain, 30*time.Second)
	if task, _ := s.Task(long); task.Status != "stopped" || task.StatusReason != shutdownReason || took > time.Second+stopBudget {
		t.Errorf("task over the grace period is %s (%s) after %v:\n%s", task.Status, task.StatusReason, took, p.out.String())
	}

	// SIGTERM during a drain: at once. Then --stop --drain of a daemon
	// that runs nothing: it exits.
	delete(env, "CLEARML_AGENT__AGENT__SHUTDOWN_GRACE_SEC")
	long = enqueueScript(t, s, repo, "long.py", "default")
	p = startDaemon(t, env, "--queue", "default")
	waitStatus(t, s, p, long, "in_progress", 2*time.Minute)
	p.cmd.Process.Signal(sigDrain)
	time.Sleep(500 * time.Millisecond)
	took = sigtermAndWait(t, p, syscall.SIGTERM, 30*time.Second)
	if task, _ := s.Task(long); task.Status != "stopped" || took > stopBudget {
		t.Errorf("SIGTERM during a drain: %s (%s) after %v", task.Status, task.StatusReason, took)
	}
	runtime := t.TempDir()
	env["CLEARML_AGENT_RUNTIME_DIR"] = runtime
	p = startDaemon(t, env, "--queue", "default")
	s.WaitForRequests("workers.register", 4, 30*time.Second)
	r := runAgent(t, env, "daemon", "--stop", "--drain")
	if r.code != 0 || !strings.Contains(r.stdout, "Draining clearml-agent worker_id=") {
		t.Errorf("--stop --drain: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("the daemon did not exit after --stop --drain:\n%s", p.out.String())
	}
	if r := runAgent(t, env, "daemon", "--drain"); r.code != 2 {
		t.Errorf("--drain without --stop: exit %d, want 2", r.code)
	}
}

// TestDaemonDiedFailsTask (issue 12 §1): kill -9 of the daemon ends its
// task, which is failed with a reason that says the daemon died, not
// stopped as a user's abort.
func TestDaemonDiedFailsTask(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"stubborn.py": stubbornTask})
	id := enqueueScript(t, s, repo, "stubborn.py", "default")
	env := executeEnv(t, s)
	pidFile := filepath.Join(t.TempDir(), "pid")
	env["PIDFILE"] = pidFile
	p := startDaemon(t, env, "--queue", "default")
	waitForFile(t, pidFile, 2*time.Minute)
	taskPID := readPID(t, pidFile)
	p.cmd.Process.Kill()
	<-p.done
	task := waitStatus(t, s, p, id, "failed", 30*time.Second)
	if task.StatusReason != daemonDiedReason {
		t.Errorf("reason %q, want %q", task.StatusReason, daemonDiedReason)
	}
	if !strings.Contains(s.TaskLogText(id), "the clearml-agent daemon died: stopping the task") {
		t.Errorf("the console does not say why:\n%s", s.TaskLogText(id))
	}
	waitGone(t, taskPID)
}

// TestDaemonDockerStopAtOnce (issue 11 §2, 12 §1) in docker mode: SIGTERM
// reaches the agent in the container (docker kill --signal USR1), which
// stops the task with the shutdown reason, within stopBudget; kill -9 of
// the daemon reaches it through the docker client's signal proxy: failed,
// the daemon died. No container is left.
func TestDaemonDockerStopAtOnce(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"})
	for _, kill := range []bool{false, true} {
		id := addDockerTask(s, repo, "loop.py", "")
		p := startDaemon(t, dockerEnv(t, s), "--queue", "default", "--docker", "--cpu-only")
		waitStatus(t, s, p, id, "in_progress", 3*time.Minute)
		for i := 0; i < 2400 && !strings.Contains(s.TaskLogText(id), "looping"); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		want, reason := "stopped", shutdownReason
		if kill {
			p.cmd.Process.Kill()
			<-p.done
			want, reason = "failed", daemonDiedReason
			waitStatus(t, s, p, id, want, 30*time.Second)
		} else {
			took := sigtermAndWait(t, p, syscall.SIGTERM, 30*time.Second)
			t.Logf("SIGTERM -> daemon exit %.2f s (docker mode)", took.Seconds())
			if took > stopBudget {
				t.Errorf("the daemon took %v to stop", took)
			}
		}
		if task := taskStatus(t, s, id); task.Status != want || task.StatusReason != reason {
			t.Errorf("kill=%v: status = %s (%s), want %s (%s)\n%s", kill, task.Status, task.StatusReason, want, reason, p.out.String())
		}
		deadline := time.Now().Add(30 * time.Second)
		for dockerLeftovers(t, id) != "" && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if left := dockerLeftovers(t, id); left != "" {
			t.Errorf("kill=%v: containers left behind: %s", kill, left)
			exec.Command("docker", "rm", "-f", left).Run()
		}
	}
}

// TestDockerExecuteShutdown (issue 11 §2): a standalone `execute --docker`
// under `docker stop` or Kubernetes gets SIGTERM: the agent in the
// container stops the task, "agent shutdown", not a user's abort.
func TestDockerExecuteShutdown(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"})
	id := addDockerTask(s, repo, "loop.py", "")
	cmd := exec.Command(agentBin, "execute", "--id", id, "--docker", "--cpu-only")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range dockerEnv(t, s) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3600 && !strings.Contains(s.TaskLogText(id), "looping"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	t.Logf("SIGTERM -> execute --docker exit %.2f s", time.Since(start).Seconds())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 254 {
		t.Errorf("exit: %v, want 254", err)
	}
	if time.Since(start) > stopBudget {
		t.Errorf("execute --docker took %v to stop", time.Since(start))
	}
	if task := taskStatus(t, s, id); task.Status != "stopped" || task.StatusReason != shutdownReason {
		t.Errorf("status = %s (%s)\n%s", task.Status, task.StatusReason, s.TaskLogText(id))
	}
	if left := dockerLeftovers(t, id); left != "" {
		t.Errorf("containers left behind: %s", left)
		exec.Command("docker", "rm", "-f", left).Run()
	}
}
