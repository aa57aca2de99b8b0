package main

// End-to-end tests of `daemon`: the built binary serving queues of the
// stand-in server, running real tasks from real git repos.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// daemonProc is a running daemon.
type daemonProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

func startDaemon(t *testing.T, env map[string]string, args ...string) *daemonProc {
	t.Helper()
	return startAgentProc(t, env, append([]string{"daemon", "--foreground"}, args...)...)
}

// startAgentProc runs the binary in the background (a daemon, a glue) with
// only env (plus PATH) and its own runtime folder.
func startAgentProc(t *testing.T, env map[string]string, args ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if _, ok := env["CLEARML_AGENT_RUNTIME_DIR"]; !ok {
		cmd.Env = append(cmd.Env, "CLEARML_AGENT_RUNTIME_DIR="+t.TempDir())
	}
	p := &daemonProc{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and waits for the daemon to exit.
func (p *daemonProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("daemon did not exit after SIGTERM:\n%s", p.out.String())
	}
}

// waitStatus polls the stand-in server until the task reaches status.
func waitStatus(t *testing.T, s *fakeserver.Server, p *daemonProc, id, status string, timeout time.Duration) fakeserver.Task {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if task, ok := s.Task(id); ok && task.Status == status {
			return task
		}
		time.Sleep(50 * time.Millisecond)
	}
	task, _ := s.Task(id)
	t.Fatalf("task %s is %s (%s), not %s; daemon output:\n%s", id, task.Status, task.StatusReason, status, p.out.String())
	return task
}

func enqueueScript(t *testing.T, s *fakeserver.Server, repo, entry, queue string) string {
	t.Helper()
	id := s.AddTask(fakeserver.TaskSpec{Name: "daemon-" + entry, Script: &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: "python3"}})
	if err := s.Enqueue(id, queue); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestDaemonPriorityAndSequence(t *testing.T) {
	s := startServer(t)
	s.AddQueue("second")
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	low := enqueueScript(t, s, repo, "train.py", "second")
	high := enqueueScript(t, s, repo, "train.py", "default")
	env := executeEnv(t, s)
	p := startDaemon(t, env, "--queue", "default", "second")
	hi := waitStatus(t, s, p, high, "completed", 60*time.Second)
	lo := waitStatus(t, s, p, low, "completed", 60*time.Second)
	if !hi.Started.Before(lo.Started) {
		t.Errorf("the task of the first queue did not run first: %v vs %v", hi.Started, lo.Started)
	}
	if lo.Started.Before(hi.Completed) {
		t.Errorf("tasks overlapped in sequential mode")
	}
	p.stop(t)
	if n := len(s.RequestsTo("workers.unregister")); n != 1 {
		t.Errorf("unregister sent %d times, want exactly 1", n)
	}
	if !strings.Contains(s.TaskLogText(high), "pulled from "+s.DefaultQueueID()+" by worker ") {
		t.Errorf("no 'pulled from' line in the task log")
	}
	for _, id := range []string{high, low} {
		if !strings.Contains(s.TaskLogText(id), "out 4\n") {
			t.Errorf("task %s has no output on the server", id)
		}
	}
}

func TestDaemonOrderFairness(t *testing.T) {
	s := startServer(t)
	s.AddQueue("second")
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	a1 := enqueueScript(t, s, repo, "train.py", "default")
	a2 := enqueueScript(t, s, repo, "train.py", "default")
	b1 := enqueueScript(t, s, repo, "train.py", "second")
	p := startDaemon(t, executeEnv(t, s), "--queue", "default", "second", "--order-fairness")
	ta1 := waitStatus(t, s, p, a1, "completed", 60*time.Second)
	tb1 := waitStatus(t, s, p, b1, "completed", 60*time.Second)
	ta2 := waitStatus(t, s, p, a2, "completed", 60*time.Second)
	p.stop(t)
	if !(ta1.Started.Before(tb1.Started) && tb1.Started.Before(ta2.Started)) {
		t.Errorf("round-robin order broken: a1 %v, b1 %v, a2 %v", ta1.Started, tb1.Started, ta2.Started)
	}
}

func TestDaemonCreateQueue(t *testing.T) {
	s := startServer(t)
	env := executeEnv(t, s)
	r := runAgent(t, env, "daemon", "--foreground", "--queue", "brand-new")
	if r.code != 1 {
		t.Errorf("unknown queue: exit %d", r.code)
	}
	oneErrorLine(t, r, "--create-queue")
	// A typo of an existing queue gets a suggestion.
	r = runAgent(t, env, "daemon", "--foreground", "--queue", "defualt")
	oneErrorLine(t, r, `could not find queue with name/id "defualt" (did you mean "default"?)`)
	p := startDaemon(t, env, "--queue", "brand-new", "--create-queue")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := s.Queue("brand-new"); ok && len(s.RequestsTo("workers.register")) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, ok := s.Queue("brand-new"); !ok {
		t.Fatalf("queue not created:\n%s", p.out.String())
	}
	p.stop(t)
}

func TestDaemonServicesMode(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"svc.py": `import os, sys, time
name = sys.argv[0]
marker = os.path.join(os.environ["MARKDIR"], os.environ["CLEARML_TASK_ID"])
open(marker + ".start", "w").close()
deadline = time.time() + 20
while time.time() < deadline and len(os.listdir(os.environ["MARKDIR"])) < 2:
    time.sleep(0.05)
print("peers seen:", len(os.listdir(os.environ["MARKDIR"])), flush=True)
`})
	env := executeEnv(t, s)
	env["MARKDIR"] = dir
	a := enqueueScript(t, s, repo, "svc.py", "default")
	b := enqueueScript(t, s, repo, "svc.py", "default")
	p := startDaemon(t, env, "--services-mode", "2", "--queue", "default")
	waitStatus(t, s, p, a, "completed", 60*time.Second)
	waitStatus(t, s, p, b, "completed", 60*time.Second)
	p.stop(t)
	for _, id := range []string{a, b} {
		if !strings.Contains(s.TaskLogText(id), "peers seen: 2") {
			t.Errorf("task %s did not run alongside the other:\n%s", id, s.TaskLogText(id))
		}
	}
}

func TestDaemonAbortAndStats(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"})
	id := enqueueScript(t, s, repo, "loop.py", "default")
	env := executeEnv(t, s)
	p := startDaemon(t, env, "--queue", "default", "--child-report-tags", "team-a", "gpu-less")
	waitStatus(t, s, p, id, "in_progress", 60*time.Second)
	for i := 0; i < 200 && !strings.Contains(s.TaskLogText(id), "looping"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	stopTask(t, s, id)
	waitStatus(t, s, p, id, "stopped", 60*time.Second)

	// The worker is listed, and its reports carry stats, the task and tags.
	s.WaitForRequests("workers.status_report", 2, 10*time.Second)
	r := runAgent(t, serverEnv(s), "list")
	host, _ := os.Hostname()
	if !strings.Contains(r.stdout, "id: "+host+":") {
		t.Errorf("worker not in list:\n%s", r.stdout)
	}
	var sawStats, sawTask, sawTags bool
	for _, rq := range s.RequestsTo("workers.status_report") {
		if ms, ok := rq.Data["machine_stats"].(map[string]any); ok && ms["memory_used"] != nil {
			sawStats = true
		}
		if rq.Data["task"] == id {
			sawTask = true
		}
		if tags, ok := rq.Data["tags"].([]any); ok && len(tags) == 2 && tags[0] == "team-a" {
			sawTags = true
		}
	}
	if !sawStats || !sawTask || !sawTags {
		t.Errorf("status reports: stats %v, task %v, tags %v", sawStats, sawTask, sawTags)
	}
	p.stop(t)
}

// Outside its uptime the daemon keeps reporting but takes no task.
func TestDaemonUptimeWindow(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	id := enqueueScript(t, s, repo, "train.py", "default")
	// A window that is not now: the same hour range, yesterday only.
	yesterday := strings.ToUpper(time.Now().AddDate(0, 0, -1).Weekday().String()[:3])
	p := startDaemon(t, executeEnv(t, s), "--queue", "default", "--uptime", "0-24 "+yesterday)
	s.WaitForRequests("workers.status_report", 1, 20*time.Second)
	if n := len(s.RequestsTo("queues.get_next_task")); n != 0 {
		t.Errorf("polled %d times outside its uptime", n)
	}
	if task, _ := s.Task(id); task.Status != "queued" {
		t.Errorf("task taken outside uptime: %s", task.Status)
	}
	p.stop(t)

	today := strings.ToUpper(time.Now().Weekday().String()[:3])
	p = startDaemon(t, executeEnv(t, s), "--queue", "default", "--uptime", "0-24 "+today)
	waitStatus(t, s, p, id, "completed", 60*time.Second)
	p.stop(t)

	r := runAgent(t, executeEnv(t, s), "daemon", "--uptime", "1-2 MON", "--downtime", "3-4 TUE")
	if r.code != 2 {
		t.Errorf("both uptime and downtime: exit %d", r.code)
	}
}

// TestDaemonDockerNeedsDocker: without a docker command, --docker would fail
// every task it pulls; it is refused at start and the queue keeps its task.
func TestDaemonDockerNeedsDocker(t *testing.T) {
	s := startServer(t)
	id := s.AddTask(fakeserver.TaskSpec{Name: "waits", Script: &fakeserver.Script{Repository: "x", EntryPoint: "t.py"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["PATH"] = t.TempDir()
	r := runAgent(t, env, "daemon", "--queue", "default", "--docker", "--foreground")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	oneErrorLine(t, r, "the docker command is not on PATH")
	if st := taskStatus(t, s, id).Status; st != "queued" {
		t.Errorf("task status %s, want queued", st)
	}
	if n := len(s.RequestsTo("workers.register")); n != 0 {
		t.Errorf("registered a worker that cannot run tasks (%d)", n)
	}
}

// TestDaemonConfigUptimeAndDowntime: a clearml.conf with both (which the
// reference runs, ignoring both) starts a worker, with a warning.
func TestDaemonConfigUptimeAndDowntime(t *testing.T) {
	s := startServer(t)
	env := executeEnv(t, s)
	env["CLEARML_AGENT__AGENT__UPTIME"] = "1-2 MON"
	env["CLEARML_AGENT__AGENT__DOWNTIME"] = "3-4 TUE"
	r := runAgent(t, env, "daemon", "--queue", "default", "--status")
	if r.code != 0 || !strings.Contains(r.stderr, "WARNING: Both uptime and downtime were specified") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestDaemonDetachAndStop(t *testing.T) {
	s := startServer(t)
	env := executeEnv(t, s)
	env["CLEARML_AGENT_RUNTIME_DIR"] = t.TempDir()
	env["TMPDIR"] = t.TempDir()
	r := runAgent(t, env, "daemon", "--queue", "default", "--detached")
	if r.code != 0 || !strings.Contains(r.stdout, "writing stdout/stderr to ") {
		t.Fatalf("detach: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	s.WaitForRequests("workers.register", 1, 20*time.Second)
	r = runAgent(t, env, "daemon", "--stop")
	if r.code != 0 || !strings.Contains(r.stdout, "Terminating clearml-agent worker_id=") {
		t.Fatalf("stop: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if n := len(s.RequestsTo("workers.unregister")); n != 1 {
		t.Errorf("unregister sent %d times", n)
	}
	r = runAgent(t, env, "daemon", "--stop")
	if r.code != 1 {
		t.Errorf("second stop: exit %d, want 1 (nothing running)", r.code)
	}
}

// A 30 s outage while a task runs: the task goes on, no line is lost, and
// the daemon carries on polling afterwards.
func TestDaemonSurvivesOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{
		"slow.py":  "import time\nfor i in range(400):\n    print('line %04d' % i, flush=True)\n    time.sleep(0.1)\n",
		"after.py": "print('after the outage')\n",
	})
	id := enqueueScript(t, s, repo, "slow.py", "default")
	p := startDaemon(t, executeEnv(t, s), "--queue", "default")
	waitStatus(t, s, p, id, "in_progress", 60*time.Second)
	time.Sleep(2 * time.Second)
	s.Refuse(true)
	time.Sleep(30 * time.Second)
	s.Refuse(false)
	waitStatus(t, s, p, id, "completed", 90*time.Second)
	next := enqueueScript(t, s, repo, "after.py", "default")
	waitStatus(t, s, p, next, "completed", 60*time.Second)
	p.stop(t)
	log := s.TaskLogText(id)
	var want []string
	for i := 0; i < 400; i++ {
		want = append(want, fmt.Sprintf("line %04d", i))
	}
	if !strings.Contains(log, strings.Join(want, "\n")) {
		t.Errorf("lines lost across the outage")
	}
}

// The daemon runs a task in a container, and a drain stops it cleanly.
func TestDaemonDockerMode(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{
		"train.py": "import os\nprint('daemon container', os.path.exists('/.dockerenv'))\n",
		"loop.py":  "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n",
	})
	first := addDockerTask(s, repo, "train.py", "")
	p := startDaemon(t, dockerEnv(t, s), "--queue", "default", "--docker", "--cpu-only")
	waitStatus(t, s, p, first, "completed", 120*time.Second)
	if !strings.Contains(s.TaskLogText(first), "daemon container True") {
		t.Errorf("task did not run in a container:\n%s", s.TaskLogText(first))
	}
	second := addDockerTask(s, repo, "loop.py", "")
	waitStatus(t, s, p, second, "in_progress", 120*time.Second)
	for i := 0; i < 400 && !strings.Contains(s.TaskLogText(second), "looping"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	// Drain with a short grace: the container is stopped, the task marked.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("daemon did not exit:\n%s", p.out.String())
	}
	if task, _ := s.Task(second); task.Status != "stopped" {
		t.Errorf("status = %s (%s)\n%s", task.Status, task.StatusReason, p.out.String())
	}
	for _, id := range []string{first, second} {
		if left := dockerLeftovers(t, id); left != "" {
			t.Errorf("containers left behind for %s: %s", id, left)
		}
	}
}

// --use-owner-token: the task runs with its owner's token, and no agent key
// reaches it; a server that refuses impersonation fails the task clearly.
func TestDaemonOwnerToken(t *testing.T) {
	s := startServer(t)
	s.AddUser(fakeserver.User{ID: "agent-admin", Role: fakeserver.RoleAdmin})
	s.AddCredentials("agent-admin", "ADMINKEY0000000000000000000000", "admin-secret-value-123")
	s.AddUser(fakeserver.User{ID: "bob"})
	repo, _ := makeTaskRepo(t, map[string]string{"who.py": `import os
print("token set:", bool(os.environ.get("CLEARML_AUTH_TOKEN")))
print("agent secret visible:", "CLEARML_API_SECRET_KEY" in os.environ)
`})
	id := s.AddTask(fakeserver.TaskSpec{User: "bob", Script: &fakeserver.Script{Repository: repo, EntryPoint: "who.py", Binary: "python3"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["CLEARML_API_ACCESS_KEY"] = "ADMINKEY0000000000000000000000"
	env["CLEARML_API_SECRET_KEY"] = "admin-secret-value-123"
	p := startDaemon(t, env, "--queue", "default", "--use-owner-token")
	waitStatus(t, s, p, id, "completed", 60*time.Second)
	p.stop(t)
	log := s.TaskLogText(id)
	if !strings.Contains(log, "token set: True") || !strings.Contains(log, "agent secret visible: False") {
		t.Errorf("task environment:\n%s", log)
	}
	for _, r := range s.RequestsTo("tasks.completed") {
		c, err := parseTokenClaims(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil || c.Identity.User != "bob" {
			t.Errorf("tasks.completed sent as %q (%v), want the owner bob", c.Identity.User, err)
		}
	}

	// A plain user's key may not impersonate: refused at start (as the
	// reference), instead of failing every task it would pull.
	id2 := s.AddTask(fakeserver.TaskSpec{User: "bob", Script: &fakeserver.Script{Repository: repo, EntryPoint: "who.py", Binary: "python3"}})
	s.Enqueue(id2, fakeserver.DefaultQueueName)
	r := runAgent(t, executeEnv(t, s), "daemon", "--queue", "default", "--use-owner-token", "--foreground")
	if r.code != 1 {
		t.Errorf("a user key with --use-owner-token: exit %d\n%s", r.code, r.stderr)
	}
	oneErrorLine(t, r, "--use-owner-token: this key's role (user) may not act as a task's owner")
	if st := taskStatus(t, s, id2).Status; st != "queued" {
		t.Errorf("task %s, want it left queued", st)
	}
}

// --dynamic-gpus: tasks get the GPUs their queue asks for, side by side,
// never sharing one.
func TestDaemonDynamicGPUs(t *testing.T) {
	s := startServer(t)
	s.AddQueue("dual")
	s.AddQueue("single")
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"gpu.py": `import os, time, json
t0 = time.time()
time.sleep(1.5)
rec = {"task": os.environ["CLEARML_TASK_ID"], "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "worker": os.environ.get("CLEARML_WORKER_ID"), "start": t0, "end": time.time()}
open(os.path.join(os.environ["MARKDIR"], rec["task"]), "w").write(json.dumps(rec))
`})
	var ids []string
	for _, q := range []string{"dual", "dual", "single", "single"} {
		ids = append(ids, enqueueScript(t, s, repo, "gpu.py", q))
	}
	env := executeEnv(t, s)
	env["MARKDIR"] = dir
	// Another agent of this host runs a task on GPU 0: it is not ours to give.
	host, _ := os.Hostname()
	c := testClient(t, s.URL(), nil, clientOptions{})
	if err := c.call(t.Context(), "workers.register", "", map[string]any{"worker": host + ":gpu0"}, nil); err != nil {
		t.Fatal(err)
	}
	// And one more, started as --gpus 4-5 (outside the pool, so harmless).
	if err := c.call(t.Context(), "workers.register", "", map[string]any{"worker": host + ":gpu4-5"}, nil); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, env, "--dynamic-gpus", "--gpus", "0-3", "--queue", "dual=2", "single=1")
	for _, id := range ids {
		waitStatus(t, s, p, id, "completed", 90*time.Second)
	}
	p.stop(t)
	type rec struct {
		Task, Gpus, Worker string
		Start, End         float64
	}
	var recs []rec
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(dir, id))
		if err != nil {
			t.Fatal(err)
		}
		var r rec
		json.Unmarshal(data, &r)
		recs = append(recs, r)
	}
	for i, r := range recs {
		want := 2
		if i >= 2 {
			want = 1
		}
		if n := len(strings.Split(r.Gpus, ",")); n != want || !strings.Contains(r.Worker, ":gpu") {
			t.Errorf("task %d got GPUs %q as worker %q, want %d GPUs", i, r.Gpus, r.Worker, want)
		}
		if slices.Contains(strings.Split(r.Gpus, ","), "0") {
			t.Errorf("task %d got GPU 0, which another agent holds", i)
		}
		for j, o := range recs[:i] {
			overlap := r.Start < o.End && o.Start < r.End
			if !overlap {
				continue
			}
			for _, g := range strings.Split(r.Gpus, ",") {
				if slices.Contains(strings.Split(o.Gpus, ","), g) {
					t.Errorf("GPU %s given to tasks %d and %d at once", g, j, i)
				}
			}
		}
	}
	// The pool is published as the reference does; the OSS server's 404 is
	// no reason to stop.
	pub := s.RequestsTo("workers.set_runtime_properties")
	if len(pub) != 1 || pub[0].Method != "POST" || pub[0].Code != 404 {
		t.Fatalf("set_runtime_properties requests: %+v", pub)
	}
	var body struct {
		Worker string
		Props  []map[string]string `json:"runtime_properties"`
	}
	json.Unmarshal(pub[0].Body, &body)
	if !strings.HasSuffix(body.Worker, ":dgpu0-3") || len(body.Props) != 1 || body.Props[0]["key"] != "available_gpus" || body.Props[0]["value"] != "0_,1_,2_,3_" {
		t.Errorf("published %s", pub[0].Body)
	}
}

// TestDaemonDynamicGPUsNoStarvation: a 2-GPU task waiting in the first queue
// keeps a freed GPU for itself; a 1-GPU task of a lower queue waits (as the
// reference), else a stream of small tasks would starve the big one.
func TestDaemonDynamicGPUsNoStarvation(t *testing.T) {
	s := startServer(t)
	s.AddQueue("big")
	s.AddQueue("small")
	repo, _ := makeTaskRepo(t, map[string]string{"hold.py": "import time\ntime.sleep(3)\n"})
	env := executeEnv(t, s)
	p := startDaemon(t, env, "--dynamic-gpus", "--gpus", "0-1", "--queue", "big=2", "small=1")
	first := enqueueScript(t, s, repo, "hold.py", "small")
	waitStatus(t, s, p, first, "in_progress", 60*time.Second)
	big := enqueueScript(t, s, repo, "hold.py", "big")
	// Once the daemon has seen the big task waiting, a small one arrives.
	seen := false
	for deadline := time.Now().Add(30 * time.Second); !seen && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, rq := range s.RequestsTo("queues.get_by_id") {
			seen = seen || strings.Contains(string(rq.Response), big)
		}
	}
	if !seen {
		t.Fatal("the daemon never looked at the waiting 2-GPU task")
	}
	second := enqueueScript(t, s, repo, "hold.py", "small")
	b := waitStatus(t, s, p, big, "completed", 90*time.Second)
	sm := waitStatus(t, s, p, second, "completed", 90*time.Second)
	p.stop(t)
	if sm.Started.Before(b.Started) {
		t.Errorf("the small task took the free GPU before the waiting 2-GPU task: small started %v, big %v", sm.Started, b.Started)
	}
}

// Services mode in docker: one container per task, two at once.
func TestDaemonDockerServicesMode(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"svc.py": `import os, time
d = os.environ["MARKDIR"]
open(os.path.join(d, os.environ["CLEARML_TASK_ID"]), "w").close()
deadline = time.time() + 60
while time.time() < deadline and len(os.listdir(d)) < 2:
    time.sleep(0.05)
print("peers seen:", len(os.listdir(d)), "in docker:", os.path.exists("/.dockerenv"), flush=True)
`})
	var ids []string
	for i := 0; i < 2; i++ {
		id := s.AddTask(fakeserver.TaskSpec{Name: "docker service",
			Script: &fakeserver.Script{Repository: repo, EntryPoint: "svc.py", Binary: "python3"},
			Container: map[string]string{"image": dockerTestImage,
				"arguments": "--network host -e MARKDIR=" + dir + " -v " + dir + ":" + dir + " -v " + repo + ":" + repo + ":ro"}})
		s.Enqueue(id, fakeserver.DefaultQueueName)
		ids = append(ids, id)
	}
	p := startDaemon(t, dockerEnv(t, s), "--queue", "default", "--docker", "--services-mode", "2")
	for _, id := range ids {
		waitStatus(t, s, p, id, "completed", 180*time.Second)
	}
	p.stop(t)
	for _, id := range ids {
		if log := s.TaskLogText(id); !strings.Contains(log, "peers seen: 2 in docker: True") {
			t.Errorf("task %s did not run in a container alongside the other:\n%s", id, log)
		}
		if left := dockerLeftovers(t, id); left != "" {
			t.Errorf("containers left behind for %s: %s", id, left)
		}
	}
}
