package main

// Tests of reference keys and variables that fleets set (issue 16): each
// fails without the code that honours it.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// files {} modes in Python's octal spellings, "0o777" included.
func TestConfigFilesModeSpellings(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "clearml.conf"), `
files {
  a: { path: "~/a.sh", contents: "x", mode: "0o755" }
  b: { path: "~/b.txt", contents: "x", mode: "0O640" }
  c: { path: "~/c.txt", contents: "x", mode: 600 }
  d: { path: "~/d.txt", contents: "x", mode: " 0604 " }
}
`)
	cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	applyConfigFiles(cfg, &log)
	for name, want := range map[string]os.FileMode{"a.sh": 0o755, "b.txt": 0o640, "c.txt": 0o600, "d.txt": 0o604} {
		st, err := os.Stat(filepath.Join(home, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v\n%s", name, st.Mode().Perm(), err, want, log.String())
		}
	}
	if strings.Contains(log.String(), "failed setting mode") {
		t.Errorf("a mode was refused:\n%s", log.String())
	}
}

// CLEARML_CPU_ONLY (and its twins) is agent.cpu_only, as in the reference.
func TestConfigCPUOnlyVariables(t *testing.T) {
	for _, name := range []string{"CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY"} {
		cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": t.TempDir(), name: "1"}))
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.boolean("agent.cpu_only", false) {
			t.Errorf("%s=1 does not set agent.cpu_only", name)
		}
	}
	cfg, _ := loadConfig("", mapEnv(map[string]string{"HOME": t.TempDir()}))
	if cfg.boolean("agent.cpu_only", false) {
		t.Error("agent.cpu_only is on by default")
	}
}

// agent.force_git_root_python_path puts the repository's root on
// PYTHONPATH instead of the script's folder; TRAINS_AGENT_EXTRA_PYTHON_PATH
// is the twin of CLEARML_AGENT_EXTRA_PYTHON_PATH.
func TestExecutePythonPathKeys(t *testing.T) {
	s := startServer(t)
	extra := t.TempDir()
	writeFile(t, filepath.Join(extra, "extramod.py"), "X = 1\n")
	repo, _ := makeTaskRepo(t, map[string]string{
		"rootmod.py": "R = 1\n",
		"sub/train.py": `import os, importlib.util as u
print("PYTHONPATH=" + os.environ.get("PYTHONPATH", ""))
print("rootmod:", u.find_spec("rootmod") is not None, "extramod:", u.find_spec("extramod") is not None)
`,
	})
	run := func(conf string, vars map[string]string) string {
		t.Helper()
		id := s.AddTask(fakeserver.TaskSpec{Name: "pythonpath", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", WorkingDir: "sub", Binary: "python3"}})
		s.Enqueue(id, fakeserver.DefaultQueueName)
		env := executeEnv(t, s)
		for k, v := range vars {
			env[k] = v
		}
		writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), conf)
		if r := runAgent(t, env, "execute", "--id", id); r.code != 0 {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		return s.TaskLogText(id)
	}
	log := run("", map[string]string{"TRAINS_AGENT_EXTRA_PYTHON_PATH": extra})
	if !strings.Contains(log, "rootmod: False extramod: True") {
		t.Errorf("default (script folder, TRAINS_AGENT_EXTRA_PYTHON_PATH): %s", log)
	}
	log = run("agent.force_git_root_python_path: true", nil)
	if !strings.Contains(log, "rootmod: True extramod: False") {
		t.Errorf("force_git_root_python_path: %s", log)
	}
	for _, l := range strings.Split(log, "\n") {
		if p, ok := strings.CutPrefix(l, "PYTHONPATH="); ok && strings.HasSuffix(p, "/sub") {
			t.Errorf("force_git_root_python_path still adds the script folder: %s", p)
		}
	}
}

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
	c := testClient(t, s.URL(), nil, clientOptions{})
	if err := c.call(context.Background(), "tasks.stop", "2.5", map[string]any{"task": id}, nil); err != nil {
		t.Fatal(err)
	}
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

// The Task.init() patch goes after the __future__ imports, once.
func TestExecuteTaskInitPatch(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"print(1)\n", "from clearml import Task\n(__name__ != \"__main__\") or Task.init()\nprint(1)\n"},
		{"\"\"\"doc\n\"\"\"\n# c\nfrom __future__ import annotations\nfrom __future__ import (division,\n  print_function)\nimport os\n",
			"\"\"\"doc\n\"\"\"\n# c\nfrom __future__ import annotations\nfrom __future__ import (division,\n  print_function)\nfrom clearml import Task\n(__name__ != \"__main__\") or Task.init()\nimport os\n"},
		{"from __future__ import annotations", "from __future__ import annotations\nfrom clearml import Task\n(__name__ != \"__main__\") or Task.init()\n"},
	} {
		p := writeFile(t, filepath.Join(t.TempDir(), "x.py"), tc.in)
		var log strings.Builder
		patchTaskInit(p, &log)
		patchTaskInit(p, &log) // a second time changes nothing
		if got, _ := os.ReadFile(p); string(got) != tc.want {
			t.Errorf("patched %q:\n%s\nwant:\n%s", tc.in, got, tc.want)
		}
		if !strings.Contains(log.String(), "already patched") {
			t.Errorf("the second patch was not refused:\n%s", log.String())
		}
	}
}

// CLEARML_AGENT_FORCE_TASK_INIT ("Add Task.init" in the web UI): the
// script calls Task.init() first, and clearml is installed for it.
func TestExecuteForceTaskInit(t *testing.T) {
	s := startServer(t)
	house := t.TempDir()
	pyTestWheel(t, house, pyWheel{Name: "clearml", Version: "9.9.9", Files: map[string]string{
		"clearml/__init__.py": "class Task:\n    @staticmethod\n    def init(*a, **k):\n        print('STANDIN TASK INIT', flush=True)\n"}})
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "\"\"\"A script.\"\"\"\nfrom __future__ import annotations\nprint('script body')\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "force init", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3",
		Requirements: map[string]any{"pip": "# nothing\n"}}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["CLEARML_AGENT_FORCE_TASK_INIT"] = "1"
	writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), "agent.package_manager { no_index: true, find_links: [\""+house+"\"], pip_version: [] }\n")
	r := runAgent(t, env, "execute", "--id", id)
	log := s.TaskLogText(id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, log, r.stderr)
	}
	i, j := strings.Index(log, "STANDIN TASK INIT"), strings.Index(log, "script body")
	if i < 0 || j < i {
		t.Errorf("Task.init() did not run before the script:\n%s", log)
	}
	for _, want := range []string{"Force clearml Task.init patch adding clearml package to requirements", "Force clearml Task.init patch adding to entry point script"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}

// api.http.retries.total caps the retries (0: none), backoff_factor and
// backoff_max set the wait; api.http.wait_on_maintenance_forever keeps
// retrying a 503 beyond that cap.
func TestConfigHTTPRetries(t *testing.T) {
	client := func(t *testing.T, s *fakeserver.Server, extra map[string]string) *apiClient {
		env := map[string]string{"HOME": t.TempDir(), "CLEARML_API_HOST": s.URL(),
			"CLEARML_API_ACCESS_KEY": fakeserver.TestsAccessKey, "CLEARML_API_SECRET_KEY": fakeserver.TestsSecretKey,
			"CLEARML_AGENT__API__HTTP__RETRIES__BACKOFF_FACTOR": "0.01", "CLEARML_AGENT__API__HTTP__RETRIES__BACKOFF_MAX": "0.02"}
		for k, v := range extra {
			env[k] = v
		}
		cfg, err := loadConfig("", mapEnv(env))
		if err != nil {
			t.Fatal(err)
		}
		c, err := newAPIClient(cfg, clientOptions{interactive: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.retryBase != 10*time.Millisecond || c.retryMax != 20*time.Millisecond {
			t.Errorf("backoff %v..%v, want 10ms..20ms from backoff_factor/backoff_max", c.retryBase, c.retryMax)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		extra  map[string]string
		inject func(s *fakeserver.Server)
		calls  int
		ok     bool
	}{
		{"total 2 on 502", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "2"}, func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 10, 502) }, 3, false},
		{"total 0", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "0"}, func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 10, 502) }, 1, false},
		{"total 1, maintenance not forever", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "1", "CLEARML_AGENT__API__HTTP__WAIT_ON_MAINTENANCE_FOREVER": "false"},
			func(s *fakeserver.Server) { s.FailNext("workers.get_all", 5, 503, 0, "maintenance") }, 2, false},
		{"total 1, maintenance forever (default)", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "1"},
			func(s *fakeserver.Server) { s.FailNext("workers.get_all", 5, 503, 0, "maintenance") }, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t)
			tc.inject(s)
			c := client(t, s, tc.extra)
			err := c.call(context.Background(), "workers.get_all", "", map[string]any{}, nil)
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want success %v", err, tc.ok)
			}
			if n := len(s.RequestsTo("workers.get_all")); n != tc.calls {
				t.Errorf("%d requests, want %d", n, tc.calls)
			}
		})
	}
}

// Tasks run with the configuration the daemon started with; with
// agent.reload_config an edited file reaches the next task.
func TestDaemonReloadConfig(t *testing.T) {
	repo, _ := makeTaskRepo(t, map[string]string{"mark.py": "import os\nprint('MARK=' + os.environ.get('MARK', ''))\n"})
	for _, reload := range []bool{false, true} {
		s := startServer(t)
		env := executeEnv(t, s)
		conf := filepath.Join(env["HOME"], "clearml.conf")
		writeFile(t, conf, "agent.reload_config: "+strconv.FormatBool(reload)+"\nenvironment { MARK: before }\n")
		p := startDaemon(t, env, "--queue", "default")
		first := enqueueScript(t, s, repo, "mark.py", "default")
		waitStatus(t, s, p, first, "completed", 90*time.Second)
		writeFile(t, conf, "agent.reload_config: "+strconv.FormatBool(reload)+"\nenvironment { MARK: after-edit }\n")
		second := enqueueScript(t, s, repo, "mark.py", "default")
		waitStatus(t, s, p, second, "completed", 90*time.Second)
		p.stop(t)
		want := "MARK=before\n"
		if reload {
			want = "MARK=after-edit\n"
		}
		if log := s.TaskLogText(second); !strings.Contains(log, want) {
			t.Errorf("reload_config %v: the task after the edit lacks %q:\n%s", reload, want, log)
		}
		if !strings.Contains(s.TaskLogText(first), "MARK=before\n") {
			t.Errorf("reload_config %v: the first task did not get the configuration", reload)
		}
		if got := strings.Contains(p.out.String(), "Config file change detected"); got != reload {
			t.Errorf("reload_config %v: change logged %v:\n%s", reload, got, p.out.String())
		}
	}
}

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

// CLEARML_AGENT_EXEC_USER runs the task as that user, with that user's
// home and caches (needs root: useradd makes the user).
func TestExecuteExecUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a task as another user needs root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd is not installed")
	}
	name := fmt.Sprintf("clmtask%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-r", name).Run() })
	home := "/home/" + name
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"who.py": `import os, pwd, re, sys
conf = open(os.environ["CLEARML_CONFIG_FILE"]).read()  # HOCON; the one value this needs
cache = re.search(r'default_base_dir"?\s*[:=]\s*"?([^"\n]+)"?', conf).group(1)
os.makedirs(cache, exist_ok=True)
open(os.path.join(cache, "probe"), "w").write("x")
open("written-in-cwd", "w").write("x")
print("WHO", pwd.getpwuid(os.getuid()).pw_name, os.getgid() == pwd.getpwuid(os.getuid()).pw_gid, os.environ["HOME"], cache, sys.executable.startswith(os.environ["HOME"]))
`})
	id := addScriptTask(s, repo, "who.py")
	env := executeEnv(t, s)
	delete(env, "CLEARML_AGENT__AGENT__VENVS_CACHE__PATH") // the user's own cache, under their home
	env["PATH"] = "/usr/local/bin:/usr/bin:/bin"           // an interpreter every user can run
	env["CLEARML_AGENT_EXEC_USER"] = name
	r := runAgent(t, env, "execute", "--id", id)
	log := s.TaskLogText(id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, log, r.stderr)
	}
	want := "WHO " + name + " True " + home + " " + home + "/.clearml/cache True"
	if !strings.Contains(log, want) {
		t.Errorf("the task log lacks %q:\n%s", want, log)
	}
	st, err := os.Stat(filepath.Join(home, ".clearml", "cache", "probe"))
	if err != nil || st.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Errorf("the SDK cache file is not the user's: %v", err)
	}
	if task := taskStatus(t, s, id); task.Status != "completed" {
		t.Errorf("status %s (%s)", task.Status, task.StatusReason)
	}
	// An unknown user: a clear setup failure.
	id = addScriptTask(s, repo, "who.py")
	env["CLEARML_AGENT_EXEC_USER"] = "no-such-user-here"
	if r := runAgent(t, env, "execute", "--id", id); r.code == 0 || !strings.Contains(taskStatus(t, s, id).StatusReason, "no user \"no-such-user-here\"") {
		t.Errorf("unknown user: exit %d, reason %q", r.code, taskStatus(t, s, id).StatusReason)
	}
}
