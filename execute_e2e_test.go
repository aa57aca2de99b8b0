package main

// End-to-end tests of `execute`: the built binary, real git repos, real
// Python venvs and real child processes, against the stand-in server.

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// makeTaskRepo commits files into a new repo and returns a bare copy to
// clone from, and the commit id.
func makeTaskRepo(t testing.TB, files map[string]string) (bare, sha string) {
	t.Helper()
	work := t.TempDir()
	runGit(t, nil, work, "init", "-q")
	for name, content := range files {
		p := filepath.Join(work, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runGit(t, nil, work, "add", "-A")
	runGit(t, nil, work, "commit", "-q", "-m", "task code")
	sha = runGit(t, nil, work, "rev-parse", "HEAD")
	bare = filepath.Join(t.TempDir(), "repo.git")
	runGit(t, nil, work, "clone", "-q", "--bare", work, bare)
	return bare, sha
}

var (
	sharedVenvCacheOnce sync.Once
	sharedVenvCache     string
)

// executeEnv is the agent's environment for a task against s. The venv
// cache is shared by the tests, so only the first builds a venv.
func executeEnv(t testing.TB, s *fakeserver.Server) map[string]string {
	sharedVenvCacheOnce.Do(func() {
		dir, err := os.MkdirTemp("", "clearml-venv-cache")
		if err != nil {
			t.Fatal(err)
		}
		sharedVenvCache = dir
	})
	env := serverEnv(s)
	home := t.TempDir()
	env["HOME"] = home
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = sharedVenvCache
	env["GIT_CONFIG_GLOBAL"] = "/dev/null"
	return env
}

const trainOK = `import sys
for i in range(5):
    print("out %d" % i)
    print("err %d" % i, file=sys.stderr)
    sys.stdout.flush(); sys.stderr.flush()
`

func addScriptTask(s *fakeserver.Server, repo, entry string) string {
	id := s.AddTask(fakeserver.TaskSpec{Name: "e2e", Script: &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: "python3"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	return id
}

func taskStatus(t *testing.T, s *fakeserver.Server, id string) fakeserver.Task {
	t.Helper()
	task, ok := s.Task(id)
	if !ok {
		t.Fatalf("task %s is gone", id)
	}
	return task
}

func TestExecuteSuccess(t *testing.T) {
	s := startServer(t)
	repo, sha := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	r := runAgent(t, env, "execute", "--id", id)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	task := taskStatus(t, s, id)
	if task.Status != "completed" {
		t.Errorf("status = %s (%s)", task.Status, task.StatusReason)
	}
	if !strings.Contains(r.stdout, filepath.Join(env["HOME"], ".clearml", "venvs-builds", id)) {
		t.Errorf("the task folder is not where expected; stdout:\n%s", r.stdout)
	}
	if left, _ := filepath.Glob(filepath.Join(env["HOME"], ".clearml", "venvs-builds", id+"*")); len(left) != 0 {
		t.Errorf("the task folder was left behind (%q): it would fill a worker's disk", left)
	}
	log := s.TaskLogText(id)
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, "out "+strconv.Itoa(i), "err "+strconv.Itoa(i))
	}
	if !strings.Contains(log, strings.Join(want, "\n")) {
		t.Errorf("the task's lines are not on the server in order:\n%s", log)
	}
	for _, note := range []string{"Executing task id [" + id + "]", "Starting Task Execution:", "Process completed successfully"} {
		if !strings.Contains(log, note) {
			t.Errorf("log lacks %q", note)
		}
	}
	if n := len(s.RequestsTo("tasks.ping")); n == 0 {
		t.Error("the task was never pinged")
	}
	if task.Script == nil || task.Script.VersionNum != sha {
		t.Errorf("version_num not written back: %+v", task.Script)
	}
	if fakeserver.TestsSecretKey != "" && strings.Contains(log+r.stdout, fakeserver.TestsSecretKey) {
		t.Error("the API secret reached the log")
	}
}

func TestExecuteFailureExitCode(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"fail.py": "import sys\nprint('bye')\nsys.exit(3)\n"})
	id := addScriptTask(s, repo, "fail.py")
	// A daemon's worker on this host: a standalone execute must leave it be.
	host, _ := os.Hostname()
	c := testClient(t, s.URL(), nil, clientOptions{})
	for _, w := range []string{host + ":0", host + ":cpu:0"} {
		if err := c.call(context.Background(), "workers.register", "", map[string]any{"worker": w}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := runAgent(t, executeEnv(t, s), "execute", "--id", id)
	for _, w := range []string{host + ":0", host + ":cpu:0"} {
		if _, ok := s.WorkerByID(w); !ok {
			t.Errorf("execute unregistered the daemon's worker %s", w)
		}
	}
	if r.code != 3 {
		t.Errorf("exit %d, want 3", r.code)
	}
	task := taskStatus(t, s, id)
	if task.Status != "failed" || task.StatusReason != "worker execution exit code 3" {
		t.Errorf("status = %s (%s)", task.Status, task.StatusReason)
	}

	// --full-monitoring (Kubernetes glue): 0 once the task is failed, as the
	// reference, unless CLEARML_AGENT_PROPAGATE_EXITCODE asks for the code.
	for _, propagate := range []bool{false, true} {
		id := addScriptTask(s, repo, "fail.py")
		env := executeEnv(t, s)
		want := 0
		if propagate {
			env["CLEARML_AGENT_PROPAGATE_EXITCODE"] = "1"
			want = 3
		}
		r := runAgent(t, env, "execute", "--id", id, "--full-monitoring")
		if r.code != want || taskStatus(t, s, id).Status != "failed" {
			t.Errorf("--full-monitoring, propagate %v: exit %d (want %d), status %s\n%s", propagate, r.code, want, taskStatus(t, s, id).Status, r.stderr)
		}
	}
}

// TestExecuteReportsMachine: a standalone execute is its own worker and
// reports the machine (and the GPUs it was given) as the reference does;
// agent.task_ping_interval_sec 0 turns the task ping off.
func TestExecuteReportsMachine(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"wait.py": "import time\ntime.sleep(4.5)\n"})
	id := addScriptTask(s, repo, "wait.py")
	env := executeEnv(t, s)
	fake, _ := filepath.Abs("testdata/gpu/fake/bin")
	env["PATH"] = fake + string(os.PathListSeparator) + os.Getenv("PATH")
	env["FAKE_SMI_STATE"] = filepath.Join(t.TempDir(), "state")
	env["CLEARML_AGENT__AGENT__TASK_PING_INTERVAL_SEC"] = "0"
	r := runAgent(t, env, "execute", "--id", id, "--gpus", "0")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	found := false
	for _, rq := range s.RequestsTo("workers.status_report") {
		ms, _ := rq.Data["machine_stats"].(map[string]any)
		gpu, _ := ms["gpu_memory_used"].([]any)
		if ms["memory_used"] != nil && ms["cpu_usage"] != nil && len(gpu) == 1 && rq.Data["task"] == id {
			found = true
		}
	}
	if !found {
		t.Errorf("no status report with machine and GPU stats: %d reports", len(s.RequestsTo("workers.status_report")))
	}
	if n := len(s.RequestsTo("tasks.ping")); n != 0 {
		t.Errorf("%d pings with task_ping_interval_sec 0", n)
	}
}

// TestExecuteForcedCodeDir: the reference's overrides for code already in
// place (an image): CLEARML_AGENT_FORCE_CODE_DIR is used as is (no clone),
// CLEARML_AGENT_FORCE_EXEC_SCRIPT="wd:entry" replaces the entry point; the
// requirements.txt files from that root down to the entry's folder count.
func TestExecuteForcedCodeDir(t *testing.T) {
	s := startServer(t)
	code := t.TempDir()
	writeFile(t, filepath.Join(code, "app", "serve.py"), "print('served from the image code')\n")
	// "pip" is already installed: satisfied offline.
	writeFile(t, filepath.Join(code, "requirements.txt"), "# root\npip\n")
	writeFile(t, filepath.Join(code, "app", "requirements.txt"), "# app\npip\n")
	id := s.AddTask(fakeserver.TaskSpec{Name: "forced", Script: &fakeserver.Script{Repository: "https://git.invalid/none.git", EntryPoint: "train.py", Binary: "python3"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["CLEARML_AGENT_FORCE_CODE_DIR"] = code
	env["CLEARML_AGENT_FORCE_EXEC_SCRIPT"] = "app:serve.py"
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = `""`
	env["CLEARML_AGENT__AGENT__PACKAGE_MANAGER__NO_INDEX"] = "true"
	r := runAgent(t, env, "execute", "--id", id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	if !strings.Contains(log, "served from the image code") || strings.Contains(log, "git clone") || strings.Contains(log, "Cloning") {
		t.Errorf("the forced code did not run as is:\n%s", log)
	}
	root, app := filepath.Join(code, "requirements.txt"), filepath.Join(code, "app", "requirements.txt")
	if i, j := strings.Index(log, "Trying pip install: "+root), strings.Index(log, "Trying pip install: "+app); i < 0 || j < i {
		t.Errorf("want %s then %s installed:\n%s", root, app, log)
	}
}

// TestExecuteSecondaryRank: in a multi-node run every rank runs execute;
// only rank 0 claims the task and writes its status and packages.
func TestExecuteSecondaryRank(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('rank', os.environ['RANK'])\n"})
	id := addScriptTask(s, repo, "train.py")
	if err := s.SetTaskStatus(id, "in_progress", "rank 0 has it"); err != nil {
		t.Fatal(err)
	}
	s.ResetRequests()
	env := executeEnv(t, s)
	env["RANK"] = "1"
	r := runAgent(t, env, "execute", "--id", id)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, ep := range []string{"tasks.dequeue", "tasks.started", "tasks.completed", "tasks.failed", "tasks.stopped", "tasks.set_requirements", "tasks.edit"} {
		if n := len(s.RequestsTo(ep)); n != 0 {
			t.Errorf("rank 1 sent %s (%d times)", ep, n)
		}
	}
	if st := taskStatus(t, s, id).Status; st != "in_progress" {
		t.Errorf("status = %s, want in_progress (rank 0's to set)", st)
	}
	if log := s.TaskLogText(id); !strings.Contains(log, "rank 1") {
		t.Errorf("rank 1's output is not on the server:\n%s", log)
	}
}

// waitForFile waits for a task to create path (its "I am running" mark).
func waitForFile(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within %v: the task did not start", path, timeout)
}

// TestExecuteMarkedCompletedKeepsRunning: the SDK may mark its own task
// completed before the process ends; that is no abort (the reference's
// stop statuses leave "completed" out).
func TestExecuteMarkedCompletedKeepsRunning(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": `import os, time
open(os.path.join(os.environ["MARKDIR"], "started"), "w").close()
while not os.path.exists(os.path.join(os.environ["MARKDIR"], "go")):
    time.sleep(0.05)
time.sleep(5)
print("finished after being marked completed", flush=True)
`})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	env["MARKDIR"] = dir
	done := runAgentAsync(t, env, "execute", "--id", id)
	waitForFile(t, filepath.Join(dir, "started"), time.Minute)
	if err := s.SetTaskStatus(id, "completed", "marked by the task"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
	r := <-done
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s", r.code, r.stdout)
	}
	if log := s.TaskLogText(id); !strings.Contains(log, "finished after being marked completed") {
		t.Errorf("the task was stopped when it was marked completed:\n%s", log)
	}
}

func TestExecuteAbortLeavesNoProcess(t *testing.T) {
	s := startServer(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": `import os, subprocess, time
p = subprocess.Popen(["sleep", "600"])
with open(os.environ["PIDFILE"] + ".tmp", "w") as f:
    f.write("%d %d\n" % (os.getpid(), p.pid))
os.rename(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
print("running", flush=True)
while True:
    time.sleep(0.1)
`})
	id := addScriptTask(s, repo, "loop.py")
	env := executeEnv(t, s)
	env["PIDFILE"] = pidFile
	done := runAgentAsync(t, env, "execute", "--id", id)

	var pids []int
	for i := 0; i < 600 && pids == nil; i++ {
		if data, err := os.ReadFile(pidFile); err == nil {
			for _, f := range strings.Fields(string(data)) {
				n, _ := strconv.Atoi(f)
				pids = append(pids, n)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(pids) != 2 {
		t.Fatalf("the task did not start (pids %v)", pids)
	}
	stopTask(t, s, id)
	var r runResult
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("execute did not end after tasks.stop")
	}
	task := taskStatus(t, s, id)
	if task.Status != "stopped" {
		t.Errorf("status = %s (%s); stdout:\n%s", task.Status, task.StatusReason, r.stdout)
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Errorf("process %d of the task is still alive", pid)
		}
	}
}

// TestExecuteAbortCallbackGrace: a task whose SDK registered an abort
// callback (runtime._abort_callback_timeout) keeps running after tasks.stop
// until the callback reports completion, then is stopped.
func TestExecuteAbortCallbackGrace(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": `import os, time
open(os.path.join(os.environ["MARKDIR"], "started"), "w").close()
while True:
    open(os.path.join(os.environ["MARKDIR"], "beat"), "w").write(str(time.time()))
    time.sleep(0.1)
`})
	id := s.AddTask(fakeserver.TaskSpec{Name: "callback", Script: &fakeserver.Script{Repository: repo, EntryPoint: "loop.py", Binary: "python3"},
		Runtime: map[string]any{"_abort_callback_timeout": 60, "_abort_poll_freq": 1}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["MARKDIR"] = dir
	done := runAgentAsync(t, env, "execute", "--id", id)
	waitForFile(t, filepath.Join(dir, "started"), time.Minute)
	stopTask(t, s, id)
	select {
	case r := <-done:
		t.Fatalf("the task was stopped before its abort callback completed\n%s", r.stdout)
	case <-time.After(6 * time.Second):
	}
	if !strings.Contains(s.TaskLogText(id), "### Task abort callback timeout set, waiting for max 61 sec ###") {
		t.Errorf("the wait is not announced:\n%s", s.TaskLogText(id))
	}
	stoppedAt := time.Now()
	if err := s.UpdateTask(id, func(doc map[string]any) {
		doc["runtime"].(map[string]any)["_abort_callback_completed"] = true
	}); err != nil {
		t.Fatal(err)
	}
	var r runResult
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("execute did not end after the callback completed")
	}
	t.Logf("stopped %v after the callback completed", time.Since(stoppedAt))
	if st := taskStatus(t, s, id); st.Status != "stopped" {
		t.Errorf("status = %s (%s)\n%s", st.Status, st.StatusReason, r.stdout)
	}
	if !strings.Contains(s.TaskLogText(id), "### Task abort callback completed in ") {
		t.Errorf("completion not logged:\n%s", s.TaskLogText(id))
	}
}

func TestExecuteSetupFailures(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	badRepo := addScriptTask(s, filepath.Join(t.TempDir(), "missing.git"), "train.py")
	badDiff := s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3",
		Diff: "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-no such line\n+other\n import sys\n"}})
	for _, tt := range []struct {
		id, reason string
	}{
		{badRepo, "cloning"},
		{badDiff, "diff"},
	} {
		r := runAgent(t, executeEnv(t, s), "execute", "--id", tt.id)
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		task := taskStatus(t, s, tt.id)
		if task.Status != "failed" || !strings.Contains(task.StatusReason, tt.reason) {
			t.Errorf("status = %s (%s), want failed naming %q", task.Status, task.StatusReason, tt.reason)
		}
		oneErrorLine(t, r, tt.reason)
	}
}

func TestExecuteCloneAndRequireQueue(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	orig := s.AddTask(fakeserver.TaskSpec{Name: "original", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"}})

	r := runAgent(t, executeEnv(t, s), "execute", "--id", orig, "--require-queue")
	if r.code != 1 || taskStatus(t, s, orig).Status != "created" {
		t.Errorf("--require-queue on a created task: exit %d, status %s", r.code, taskStatus(t, s, orig).Status)
	}
	oneErrorLine(t, r, "not queued")

	r = runAgent(t, executeEnv(t, s), "execute", "--id", orig, "--clone")
	if r.code != 0 {
		t.Fatalf("--clone: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if st := taskStatus(t, s, orig).Status; st != "created" {
		t.Errorf("the original task changed to %s", st)
	}
	var clone string
	for _, task := range s.Tasks() {
		if task.Name == "Clone of original" {
			clone = task.ID
		}
	}
	if clone == "" || taskStatus(t, s, clone).Status != "completed" {
		t.Errorf("clone %q did not complete", clone)
	}

	// A task name works as --id, as in the reference.
	named := s.AddTask(fakeserver.TaskSpec{Name: "by-name-task", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"}})
	if r := runAgent(t, executeEnv(t, s), "execute", "--id", "by-name-task"); r.code != 0 || taskStatus(t, s, named).Status != "completed" {
		t.Errorf("--id by name: exit %d stderr %q", r.code, r.stderr)
	}
}

// A server outage mid-task costs no console line.
func TestExecuteSurvivesOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s outage")
	}
	s := startServer(t)
	marker := filepath.Join(t.TempDir(), "started")
	repo, _ := makeTaskRepo(t, map[string]string{"slow.py": `import os, time
open(os.environ["MARKER"], "w").close()
for i in range(220):
    print("line %04d" % i, flush=True)
    time.sleep(0.1)
`})
	id := addScriptTask(s, repo, "slow.py")
	env := executeEnv(t, s)
	env["MARKER"] = marker
	done := runAgentAsync(t, env, "execute", "--id", id)
	waitForFile(t, marker, 30*time.Second)
	time.Sleep(time.Second)
	if err := s.Refuse(true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(15 * time.Second)
	if err := s.Refuse(false); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	var want []string
	for i := 0; i < 220; i++ {
		want = append(want, "line "+strconv.Itoa(10000 + i)[1:])
	}
	if !strings.Contains(log, strings.Join(want, "\n")) {
		t.Errorf("lines lost or out of order across the outage:\n%s", log)
	}
	if st := taskStatus(t, s, id).Status; st != "completed" {
		t.Errorf("status = %s", st)
	}
}

// The task process sees the environment the ClearML SDK expects.
func TestExecuteTaskEnvironment(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"sub/env.py": `import os, stat, sys
for k in ["CLEARML_TASK_ID", "TRAINS_TASK_ID", "CLEARML_LOG_TASK_TO_BACKEND", "CLEARML_LOG_LEVEL", "CLEARML_WORKER_ID",
          "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CLEARML_API_HOST", "FROM_CONF_ENV",
          "FROM_TASK_ENV", "NOT_ENV_SECTION"]:
    print("%s=%s" % (k, os.environ.get(k)))
conf = os.environ["CLEARML_CONFIG_FILE"]
print("conf_mode=%o" % stat.S_IMODE(os.stat(conf).st_mode))
print("conf_has_secret=%s" % ("secret_key" in open(conf).read()))
print("trains_conf_same=%s" % (os.environ.get("TRAINS_CONFIG_FILE") == conf))
print("optimize=%d" % sys.flags.optimize)
print("cwd_in_path=%s" % (os.getcwd() in os.environ["PYTHONPATH"].split(":")))
print("files_section=%s" % open(os.path.expanduser("~/made-by-agent.txt")).read())
`})
	id := s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{Repository: repo, EntryPoint: "env.py", WorkingDir: "sub", Binary: "python3"},
		Hyperparams: map[string]map[string]string{"Environment": {"FROM_TASK_ENV": "from-hyperparams"}, "Args": {"NOT_ENV_SECTION": "x"}}})
	env := executeEnv(t, s)
	writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), "agent.enable_task_env: true\nenvironment { FROM_CONF_ENV: hello-env }\nfiles { f: { path: \"~/made-by-agent.txt\", contents: \"from files section\" } }\n")
	r := runAgent(t, env, "execute", "--id", id, "--gpus", "0,1", "-OO", "--log-level", "warning")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	if host, _ := os.Hostname(); !regexp.MustCompile(`CLEARML_WORKER_ID=` + regexp.QuoteMeta(host) + `:\d+\n`).MatchString(log) {
		t.Errorf("worker id not passed to the task:\n%s", log)
	}
	for _, want := range []string{
		"CLEARML_TASK_ID=" + id, "TRAINS_TASK_ID=" + id, "CLEARML_LOG_TASK_TO_BACKEND=0", "CLEARML_LOG_LEVEL=WARNING",
		"CUDA_VISIBLE_DEVICES=0,1", "NVIDIA_VISIBLE_DEVICES=0,1", "CUDA_DEVICE_ORDER=PCI_BUS_ID",
		"CLEARML_API_HOST=" + s.URL(), "FROM_CONF_ENV=hello-env", "FROM_TASK_ENV=from-hyperparams", "NOT_ENV_SECTION=None",
		"conf_mode=600", "conf_has_secret=True", "trains_conf_same=True", "optimize=2", "cwd_in_path=True",
		"files_section=from files section",
	} {
		if !strings.Contains(log, want+"\n") {
			t.Errorf("task output lacks %q:\n%s", want, log)
		}
	}
}

// A second task with the same Python and requirements reuses the venv,
// and --standalone-mode runs from the caches without fetching anything.
func TestExecuteVenvCacheAndStandalone(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK})
	env := executeEnv(t, s)
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = t.TempDir() // private: the first run must build
	first := addScriptTask(s, repo, "train.py")
	if r := runAgent(t, env, "execute", "--id", first); r.code != 0 || !strings.Contains(r.stdout, "Added the virtual environment to the cache") {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stdout)
	}
	second := addScriptTask(s, repo, "train.py")
	r := runAgent(t, env, "execute", "--id", second)
	if r.code != 0 || !strings.Contains(r.stdout, "Using cached virtual environment") || strings.Contains(r.stdout, "Creating virtual environment") {
		t.Errorf("second run did not reuse the venv: exit %d\n%s", r.code, r.stdout)
	}
	// The repository is gone: standalone mode must not need it.
	os.RemoveAll(repo)
	third := addScriptTask(s, repo, "train.py")
	r = runAgent(t, env, "execute", "--id", third, "--standalone-mode")
	if r.code != 0 || taskStatus(t, s, third).Status != "completed" {
		t.Errorf("standalone run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "without fetching") {
		t.Errorf("standalone run fetched:\n%s", r.stdout)
	}
}

// A signal to execute stops the task, sets the status that says why (the
// stop protocol, stop.go) and leaves nothing: SIGINT is a user's abort,
// SIGTERM (docker stop, Kubernetes) and SIGUSR1 (the daemon) the agent's
// shutdown, during the run and during the setup. A parent-death signal
// while the parent is alive is ignored.
func TestExecuteAgentSignal(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": `import os, time
with open(os.environ["PIDFILE"] + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
while True:
    time.sleep(0.1)
`})
	setupScript := filepath.Join(t.TempDir(), "build.sh")
	writeFile(t, setupScript, "#!/bin/sh\necho $$ > \"$PIDFILE\"\nexec sleep 60\n")
	os.Chmod(setupScript, 0o755)
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		inSetup bool
		reason  string
	}{
		{"SIGINT", syscall.SIGINT, false, "user abort"},
		{"SIGTERM", syscall.SIGTERM, false, shutdownReason},
		{"SIGUSR1", sigShutdown, false, shutdownReason},
		{"SIGTERM during setup", syscall.SIGTERM, true, shutdownReason},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := addScriptTask(s, repo, "loop.py")
			env := executeEnv(t, s)
			pidFile := filepath.Join(t.TempDir(), "pid")
			env["PIDFILE"] = pidFile
			if tc.inSetup {
				env["CLEARML_AGENT_CUSTOM_BUILD_SCRIPT"] = setupScript
			}
			cmd := exec.Command(agentBin, "execute", "--id", id)
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitForFile(t, pidFile, time.Minute) // the first run builds the venv
			pid := readPID(t, pidFile)
			if !tc.inSetup {
				// A parent-death signal while our parent lives is spurious.
				cmd.Process.Signal(sigParentDied)
				time.Sleep(500 * time.Millisecond)
				if !pidAlive(pid) || taskStatus(t, s, id).Status != "in_progress" {
					t.Fatalf("a spurious parent-death signal stopped the task")
				}
			}
			start := time.Now()
			cmd.Process.Signal(tc.sig)
			err := cmd.Wait()
			t.Logf("%s -> exit in %v", tc.name, time.Since(start).Round(time.Millisecond))
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 254 {
				t.Errorf("agent exit: %v, want 254", err)
			}
			if task := taskStatus(t, s, id); task.Status != "stopped" || task.StatusReason != tc.reason {
				t.Errorf("status = %s (%s), want stopped (%s)", task.Status, task.StatusReason, tc.reason)
			}
			waitGone(t, pid)
		})
	}
}

// tinyBuildBackend is an in-tree PEP 517 backend that needs nothing from an
// index (setuptools and wheel cannot be fetched offline): it zips privpkg.
const tinyBuildBackend = `import base64, hashlib, os, zipfile
N, V = "privpkg", "0.1"
META = "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (N, V)
WHEEL = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(d, config_settings=None):
    di = os.path.join(d, "%s-%s.dist-info" % (N, V))
    os.makedirs(di)
    open(os.path.join(di, "METADATA"), "w").write(META)
    open(os.path.join(di, "WHEEL"), "w").write(WHEEL)
    return os.path.basename(di)
def build_wheel(d, config_settings=None, metadata_directory=None):
    name = "%s-%s-py3-none-any.whl" % (N, V)
    info = "%s-%s.dist-info/" % (N, V)
    files = {"privpkg/__init__.py": open("privpkg/__init__.py", "rb").read(),
             info + "METADATA": META.encode(), info + "WHEEL": WHEEL.encode()}
    record = []
    with zipfile.ZipFile(os.path.join(d, name), "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
            h = base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (n, h, len(b)))
        record.append(info + "RECORD,,")
        z.writestr(info + "RECORD", "\n".join(record) + "\n")
    return name
`

// The git password reaches git only through ask-pass: never a command
// line, a log, the server's events or a file on disk.
func TestExecuteGitPasswordNeverLeaks(t *testing.T) {
	execPath := runGit(t, nil, "", "--exec-path")
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	const user, pass = "alice", "Sup3r-Secret-Passw0rd"
	bare, _ := makeTaskRepo(t, map[string]string{"train.py": "import privpkg\nprint('private package', privpkg.VERSION)\n"})
	// A private package the task requires as git+https, on the same server.
	pkgBare, _ := makeTaskRepo(t, map[string]string{
		"pyproject.toml":      "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
		"backend.py":          tinyBuildBackend,
		"privpkg/__init__.py": "VERSION = '0.1'\n",
	})
	os.Rename(pkgBare, filepath.Join(filepath.Dir(bare), "privpkg.git"))
	cgiHandler := &cgi.Handler{Path: backend, Root: "/git",
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(bare), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	defer srv.Close()

	// A git shim on PATH records every command line git is run with.
	shim := t.TempDir()
	argvLog := filepath.Join(shim, "argv.log")
	realGit, _ := exec.LookPath("git")
	writeFile(t, filepath.Join(shim, "git"), "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '"+argvLog+"'\nexec '"+realGit+"' \"$@\"\n")
	os.Chmod(filepath.Join(shim, "git"), 0o755)

	s := startServer(t)
	id := s.AddTask(fakeserver.TaskSpec{Name: "private", Script: &fakeserver.Script{Repository: srv.URL + "/git/repo.git", EntryPoint: "train.py", Binary: "python3",
		Requirements: map[string]any{"pip": "privpkg @ git+" + srv.URL + "/git/privpkg.git\n"}}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["PATH"] = shim + ":" + os.Getenv("PATH")
	env["CLEARML_AGENT__AGENT__PACKAGE_MANAGER__NO_INDEX"] = "true" // offline
	r := runAgent(t, env, "execute", "--id", id, "--git-user", user, "--git-pass", pass)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(s.TaskLogText(id), "private package 0.1") {
		t.Errorf("the private git requirement was not installed:\n%s", s.TaskLogText(id))
	}
	if strings.Contains(r.stdout+r.stderr, pass) {
		t.Error("password in the agent's output")
	}
	if strings.Contains(s.TaskLogText(id), pass) {
		t.Error("password in the server's events")
	}
	for _, rq := range s.Requests() {
		if strings.Contains(string(rq.Body), pass) {
			t.Errorf("password sent to the server in %s", rq.Endpoint)
		}
	}
	argv, _ := os.ReadFile(argvLog)
	if len(argv) == 0 || strings.Contains(string(argv), pass) {
		t.Errorf("git command lines (should be there, without the password):\n%s", argv)
	}
	filepath.WalkDir(env["HOME"], func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), pass) {
				t.Errorf("password stored in %s", p)
			}
		}
		return nil
	})
}

// Branches, tags, submodules and an uncommitted diff, through execute.
func TestExecuteCheckoutVariants(t *testing.T) {
	// A submodule repo, and a main repo with a branch and a tag.
	subWork := t.TempDir()
	runGit(t, nil, subWork, "init", "-q")
	writeFile(t, filepath.Join(subWork, "helper.py"), "VALUE = 'from submodule'\n")
	runGit(t, nil, subWork, "add", "-A")
	runGit(t, nil, subWork, "commit", "-q", "-m", "sub")
	subBare := filepath.Join(t.TempDir(), "sub.git")
	runGit(t, nil, subWork, "clone", "-q", "--bare", subWork, subBare)

	work := t.TempDir()
	runGit(t, nil, work, "init", "-q")
	writeFile(t, filepath.Join(work, "main.py"), "import sys\nsys.path.insert(0, 'lib')\nimport helper\nprint('main', helper.VALUE)\n")
	writeFile(t, filepath.Join(work, "pkg", "__init__.py"), "")
	writeFile(t, filepath.Join(work, "pkg", "mod.py"), "import sys\nprint('module', sys.argv[1:])\n")
	writeFile(t, filepath.Join(work, "run.sh"), "echo \"shell says $1\"\n")
	runGit(t, nil, work, "submodule", "add", "-q", subBare, "lib")
	runGit(t, nil, work, "add", "-A")
	runGit(t, nil, work, "commit", "-q", "-m", "v1")
	runGit(t, nil, work, "tag", "v1")
	runGit(t, nil, work, "checkout", "-q", "-b", "feature")
	writeFile(t, filepath.Join(work, "main.py"), "import sys\nsys.path.insert(0, 'lib')\nimport helper\nprint('feature', helper.VALUE)\n")
	runGit(t, nil, work, "commit", "-q", "-am", "feature")
	runGit(t, nil, work, "checkout", "-q", "main")
	writeFile(t, filepath.Join(work, "main.py"), "print('main moved on')\n")
	runGit(t, nil, work, "commit", "-q", "-am", "later")
	bare := filepath.Join(t.TempDir(), "repo.git")
	runGit(t, nil, work, "clone", "-q", "--bare", work, bare)

	diff := `diff --git a/main.py b/main.py
--- a/main.py
+++ b/main.py
@@ -1,4 +1,4 @@
 import sys
 sys.path.insert(0, 'lib')
 import helper
-print('feature', helper.VALUE)
+print('patched', helper.VALUE)
`
	s := startServer(t)
	for _, tt := range []struct {
		name   string
		script fakeserver.Script
		want   string
	}{
		{"tag", fakeserver.Script{Tag: "v1", EntryPoint: "main.py"}, "main from submodule"},
		{"branch", fakeserver.Script{Branch: "feature", EntryPoint: "main.py"}, "feature from submodule"},
		{"branch and diff", fakeserver.Script{Branch: "feature", EntryPoint: "main.py", Diff: diff}, "patched from submodule"},
		{"default branch", fakeserver.Script{EntryPoint: "main.py"}, "main moved on"},
		{"module with args", fakeserver.Script{Tag: "v1", EntryPoint: "-m pkg.mod --lr 0.1"}, "module ['--lr', '0.1']"},
		{"shell script", fakeserver.Script{Tag: "v1", EntryPoint: "run.sh hello", Binary: "bash"}, "shell says hello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := tt.script
			sc.Repository = bare
			if sc.Binary == "" {
				sc.Binary = "python3"
			}
			id := s.AddTask(fakeserver.TaskSpec{Script: &sc})
			env := executeEnv(t, s)
			env["GIT_ALLOW_PROTOCOL"] = "file"
			r := runAgent(t, env, "execute", "--id", id)
			if r.code != 0 {
				t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if log := s.TaskLogText(id); !strings.Contains(log, tt.want+"\n") {
				t.Errorf("output lacks %q:\n%s", tt.want, log)
			}
		})
	}
}

// TestExecuteNotebook: a .ipynb entry point runs its code cells in order;
// magics and shell escapes, which need IPython, are skipped.
func TestExecuteNotebook(t *testing.T) {
	s := startServer(t)
	nb := `{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
 {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n"]},
 {"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [], "source": ["%matplotlib inline\n", "x = 20\n", "!pip install nothing\n"]},
 {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [], "source": "%%bash\necho never\n"},
 {"cell_type": "code", "metadata": {}, "execution_count": 3, "outputs": [], "source": ["print('notebook says', x + 22)"]}
]}`
	repo, _ := makeTaskRepo(t, map[string]string{"nbs/analysis.ipynb": nb})
	id := addScriptTask(s, repo, "nbs/analysis.ipynb")
	r := runAgent(t, executeEnv(t, s), "execute", "--id", id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	if !strings.Contains(log, "notebook says 42") || strings.Contains(log, "never\n") {
		t.Errorf("the notebook did not run as plain Python:\n%s", log)
	}
}

// TestExecuteCustomBuildScript: agent.custom_build_script runs after the
// checkout with the reference's variables; its output replaces the venv and
// the entry point; a failing script fails the task with its exit code.
func TestExecuteCustomBuildScript(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('standard flow')\n", "alt/run.py": "import sys\nprint('custom flow', sys.argv[0])\n"})
	script := filepath.Join(t.TempDir(), "build.sh")
	writeFile(t, script, `#!/bin/sh
test -s "$CLEARML_CUSTOM_BUILD_TASK_CONFIG_JSON" || exit 9
test "$CLEARML_TASK_SCRIPT_ENTRY" = train.py || exit 8
[ "$MODE" = fail ] && exit 7
[ "$MODE" = none ] && exit 0
cat > "$CLEARML_CUSTOM_BUILD_OUTPUT" <<JSON
{"binary": "$(command -v python3)", "entry_point": "$CLEARML_GIT_ROOT/alt/run.py", "working_dir": "$CLEARML_GIT_ROOT/alt"}
JSON
`)
	os.Chmod(script, 0o755)
	for _, tc := range []struct {
		mode, status, want string
		code               int
	}{
		{"output", "completed", "custom flow", 0},
		{"none", "completed", "standard flow", 0},
		{"fail", "failed", "custom build script", 7},
	} {
		id := addScriptTask(s, repo, "train.py")
		env := executeEnv(t, s)
		env["CLEARML_AGENT_CUSTOM_BUILD_SCRIPT"] = script
		env["MODE"] = tc.mode
		r := runAgent(t, env, "execute", "--id", id)
		task := taskStatus(t, s, id)
		if r.code != tc.code || task.Status != tc.status || !strings.Contains(s.TaskLogText(id)+task.StatusReason, tc.want) {
			t.Errorf("%s: exit %d (want %d), status %s (%s)\n%s", tc.mode, r.code, tc.code, task.Status, task.StatusReason, s.TaskLogText(id))
		}
		if tc.mode == "output" && strings.Contains(s.TaskLogText(id), "Creating virtual environment") {
			t.Errorf("a venv was built although the custom build gave the interpreter")
		}
	}
}
