package main

// End-to-end tests of `clearml-agent slurm` on the real one-node cluster
// (testdata/slurm/cluster.sh): the built binary as the glue, the stand-in
// server, real tasks from real git repos run by this binary's execute in
// the jobs.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// slurmGlueEnv is one test's server, cluster client and glue settings.
type slurmGlueEnv struct {
	s     *fakeserver.Server
	c     slurmClient
	env   map[string]string
	state string // --state-dir; the jobs run in its jobs/ folder
	dir   string // templates
}

func newSlurmGlueEnv(t *testing.T) *slurmGlueEnv {
	t.Helper()
	c := needSlurm(t)
	s := startServer(t)
	env := executeEnv(t, s)
	env["SLURM_CONF"] = filepath.Join(slurmCluster.home, "slurm.conf")
	env["CLEARML_AGENT_RUNTIME_DIR"] = t.TempDir()
	env["TMPDIR"] = t.TempDir() // also keeps Python agents' pid files of this host out of the slots
	e := &slurmGlueEnv{s: s, c: c, env: env, state: t.TempDir(), dir: t.TempDir()}
	t.Cleanup(func() { e.cancelJobs() })
	return e
}

// cancelJobs cancels what a failed test left running.
func (e *slurmGlueEnv) cancelJobs() {
	jobs, _ := e.c.Find(context.Background(), slurmJobPrefix)
	var ids []string
	for _, j := range jobs {
		if id, ok := slurmTaskID(j.Name); ok && !j.Final() {
			if _, mine := e.s.Task(id); mine {
				ids = append(ids, j.ID)
			}
		}
	}
	e.c.Cancel(context.Background(), ids...)
	// Their processes write into the test's folders: let them end first.
	for deadline := time.Now().Add(30 * time.Second); len(ids) > 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		jobs, err := e.c.Jobs(context.Background(), ids)
		if err != nil {
			return
		}
		ids = ids[:0]
		for id, j := range jobs {
			if !j.Final() {
				ids = append(ids, id)
			}
		}
	}
}

// slurmTestTemplate is a native template; extra goes among the #SBATCH
// lines; it marks the job's start and dumps its environment.
const slurmTestTemplate = `#!/bin/bash
#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}
#SBATCH --output=task-${CLEARML_TASK.id}-%%j.log
#SBATCH --ntasks=1
%s
date +%%s.%%N > started-${CLEARML_TASK.id}
env > env-${CLEARML_TASK.id}
${CLEARML_PRE_SETUP}
echo "template %s, queue ${CLEARML_QUEUE_NAME}, task ${CLEARML_TASK.name}"
%s
${CLEARML_POST_SETUP}
`

// template writes a template named name; run is the line that runs the
// agent ("" for ${CLEARML_AGENT_EXECUTE}).
func (e *slurmGlueEnv) template(t *testing.T, name, sbatch, run string) string {
	t.Helper()
	if run == "" {
		run = "${CLEARML_AGENT_EXECUTE}"
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(fmt.Sprintf(slurmTestTemplate, sbatch, name, run)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the glue in the foreground, polling every second.
func (e *slurmGlueEnv) start(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	return startAgentProc(t, e.env, append([]string{"slurm", "--foreground", "--state-dir", e.state, "--polling-interval", "1"}, args...)...)
}

// jobOf waits for the task's SLURM job (the newest) and returns it.
func (e *slurmGlueEnv) jobOf(t *testing.T, p *daemonProc, task string) slurmJob {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if jobs, err := e.c.Find(context.Background(), slurmJobName(task)); err == nil && len(jobs) > 0 {
			return jobs[len(jobs)-1]
		}
	}
	t.Fatalf("no SLURM job for task %s; glue output:\n%s", task, p.out.String())
	return slurmJob{}
}

func (p *daemonProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// jobOutput is what the job printed (for failure messages).
func (e *slurmGlueEnv) jobOutput(task, job string) string {
	b, _ := os.ReadFile(filepath.Join(e.state, "jobs", "task-"+task+"-"+job+".log"))
	return string(b)
}

func (e *slurmGlueEnv) waitStatus(t *testing.T, p *daemonProc, id, job, status string, within time.Duration) fakeserver.Task {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if task, ok := e.s.Task(id); ok && task.Status == status {
			return task
		}
		time.Sleep(100 * time.Millisecond)
	}
	task, _ := e.s.Task(id)
	t.Fatalf("task %s is %s (%s: %s), not %s\nglue:\n%s\njob %s output:\n%s", id, task.Status, task.StatusReason, task.StatusMessage,
		status, p.out.String(), job, e.jobOutput(id, job))
	return task
}

// logTimings logs the time from enqueue to the job's start (its own mark)
// and to the task's first console line (the event's time).
func (e *slurmGlueEnv) logTimings(t *testing.T, id string, enqueued time.Time) {
	var started float64
	if b, err := os.ReadFile(filepath.Join(e.state, "jobs", "started-"+id)); err == nil {
		fmt.Sscan(string(b), &started)
	}
	var agentLine int64
	var printed float64
	for _, ev := range e.s.TaskLog(id) {
		if agentLine == 0 && strings.HasSuffix(ev.Worker, ":"+id) {
			agentLine = ev.Timestamp // execute's first console line in the job
		}
		if m := regexp.MustCompile(`hello from rank 0 .* at ([0-9.]+)`).FindStringSubmatch(ev.Msg); m != nil {
			fmt.Sscan(m[1], &printed)
		}
	}
	at := float64(enqueued.UnixNano()) / 1e9
	t.Logf("task %s: enqueue to job start %.2fs, to execute's first console line %.2fs, to the task's own first line %.2fs",
		id, started-at, float64(agentLine)/1000-at, printed-at)
}

// slurmScriptRepo holds the tasks' scripts.
func slurmScriptRepo(t *testing.T) string {
	repo, _ := makeTaskRepo(t, map[string]string{
		"hello.py": "import os, time\nprint('hello from rank', os.environ.get('SLURM_PROCID'), 'of job', os.environ.get('SLURM_JOB_ID'), 'at', time.time(), flush=True)\n",
		"loop.py":  "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.2)\n",
	})
	return repo
}

func enqueueSlurmTask(t *testing.T, s *fakeserver.Server, p *daemonProc, repo, entry, queue, name string) string {
	t.Helper()
	id := s.AddTask(fakeserver.TaskSpec{Name: name, Script: &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: "python3"},
		Hyperparams: map[string]map[string]string{"Args": {"x": name}}})
	// The glue creates its queues (--create-queue) as it starts.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, ok := s.Queue(queue); ok || p.exited() {
			break
		}
	}
	if err := s.Enqueue(id, queue); err != nil {
		t.Fatalf("%v; glue output:\n%s", err, p.out.String())
	}
	return id
}

// A task runs to completed through the glue: queued in slurm_scheduler
// while its job is submitted, claimed by execute in the job, its console
// on the server. No secret reaches the job's environment or script. It
// logs the time from enqueue to the job's start and to the task's first
// console line.
func TestSlurmGlueRunsTask(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	// The default polling pace, for the timings; the metrics listener on.
	metrics := metricsListen(t)
	p := startAgentProc(t, e.env, "slurm", "--foreground", "--state-dir", e.state, "--queue", "slurmq", "--create-queue",
		"--template-files", e.template(t, "native.sh", "", ""), "--metrics-address", metrics)
	enqueued := time.Now()
	id := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "slurmq", "hello")
	job := e.jobOf(t, p, id)
	task := e.waitStatus(t, p, id, job.ID, "completed", 3*time.Minute)
	log := e.s.TaskLogText(id)
	for _, want := range []string{"SLURM job " + job.ID + " submitted by worker", "hello from rank 0 of job " + job.ID, "Process completed successfully"} {
		if !strings.Contains(log, want) {
			t.Errorf("console has no %q:\n%s", want, log)
		}
	}
	if q, _ := e.s.Queue(slurmPendingQueue); len(q.Entries) != 0 || !strings.Contains(strings.Join(q.SystemTags, ","), "slurm-glue") {
		t.Errorf("pending queue: %+v", q)
	}
	if j := waitSlurmJob(t, e.c, job.ID, time.Minute); j.State != "COMPLETED" || task.StatusReason != "worker execution done" {
		t.Errorf("job %s, task reason %q", j.Describe(), task.StatusReason)
	}
	// Timings: this first task (the glue had just started), then three more
	// in steady state, enqueued at a random point of the glue's poll cycle.
	e.logTimings(t, id, enqueued)
	for i := 0; i < 3; i++ {
		time.Sleep(time.Duration(700+i*600) * time.Millisecond)
		at := time.Now()
		next := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "slurmq", fmt.Sprint("hello ", i))
		e.waitStatus(t, p, next, "", "completed", 3*time.Minute)
		e.logTimings(t, next, at)
	}
	// The glue's own listener counted the four jobs it submitted and saw end.
	waitMetricSamples(t, metrics, p, 30*time.Second,
		`clearml_agent_tasks_started_total{queue="slurmq"} 4`,
		`clearml_agent_task_pickup_latency_seconds_count{queue="slurmq"} 4`,
		`clearml_agent_tasks_total{queue="slurmq",result="completed"} 4`,
		`clearml_agent_task_duration_seconds_count{queue="slurmq",result="completed"} 4`,
		`clearml_agent_ready 1`)
	if code, body := probeGet("http://" + metrics + "/healthz"); code != 200 || !strings.HasPrefix(body, "ok\n") {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := probeGet("http://" + metrics + "/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}

	// The glue's worker is listed; the job had no secret.
	if r := runAgent(t, serverEnv(e.s), "list"); !regexp.MustCompile(`id: \S+:slurm:\d+`).MatchString(r.stdout) {
		t.Errorf("no slurm worker in list:\n%s", r.stdout)
	}
	jobEnv, _ := os.ReadFile(filepath.Join(e.state, "jobs", "env-"+id))
	script, _ := e.c.run(context.Background(), "", "scontrol", "write", "batch_script", job.ID, "-")
	if len(jobEnv) == 0 || strings.Contains(string(jobEnv), fakeserver.TestsSecretKey) || strings.Contains(string(jobEnv), "CLEARML_API") ||
		!strings.Contains(script, "execute --require-queue --id "+id) || strings.Contains(script, fakeserver.TestsSecretKey) {
		t.Errorf("job environment:\n%s\nscript:\n%s", jobEnv, script)
	}
	confs, _ := filepath.Glob(filepath.Join(e.state, "*.conf"))
	if len(confs) != 1 {
		t.Fatalf("job config files: %v", confs)
	}
	if st, err := os.Stat(confs[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", confs[0], st.Mode(), err)
	}
	p.stop(t)
}

// Abort while the job is pending (held): the job is cancelled, the task
// stays stopped. Abort while it runs: execute in the job stops the task.
func TestSlurmGlueAbort(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	held := e.template(t, "held.sh", "#SBATCH --hold", "")
	free := e.template(t, "free.sh", "", "")
	p := e.start(t, "--queue", "heldq", "freeq", "--create-queue", "--template-files", held, free)
	pending := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "heldq", "pending")
	job := e.jobOf(t, p, pending)
	want := "SLURM job " + job.ID + ": PENDING (JobHeldUser)"
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if task, _ := e.s.Task(pending); task.StatusMessage == want {
			break
		}
	}
	if task, _ := e.s.Task(pending); task.Status != "queued" || task.StatusMessage != want || task.StatusReason != slurmPendingReason {
		t.Fatalf("pending task: %s (%s) %q, want queued %q\n%s", task.Status, task.StatusReason, task.StatusMessage, want, p.out.String())
	}
	stopTask(t, e.s, pending)
	if j := waitSlurmJob(t, e.c, job.ID, 30*time.Second); j.State != "CANCELLED" {
		t.Errorf("held job: %s", j.Describe())
	}
	time.Sleep(2 * time.Second) // a glue poll or two: nothing must change the status
	if task, _ := e.s.Task(pending); task.Status != "stopped" || !strings.Contains(e.s.TaskLogText(pending), "cancelled: the task was stopped while the job was pending") {
		t.Errorf("aborted pending task: %s (%s)\n%s", task.Status, task.StatusReason, e.s.TaskLogText(pending))
	}

	running := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "freeq", "running")
	job = e.jobOf(t, p, running)
	e.waitStatus(t, p, running, job.ID, "in_progress", 2*time.Minute)
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !strings.Contains(e.s.TaskLogText(running), "looping"); {
		time.Sleep(100 * time.Millisecond)
	}
	stopTask(t, e.s, running)
	task := e.waitStatus(t, p, running, job.ID, "stopped", time.Minute)
	waitSlurmJob(t, e.c, job.ID, time.Minute)
	time.Sleep(2 * time.Second)
	if after, _ := e.s.Task(running); after.Status != "stopped" || task.StatusReason != "task was stopped by tasks.stop" {
		t.Errorf("aborted running task: %s (%s)", after.Status, task.StatusReason)
	}
	p.stop(t)
}

// scancel by an admin and the time limit are SLURM's doing: the task
// fails with SLURM's reason (set by execute in the job, or by the glue).
func TestSlurmGlueSlurmEndsJob(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	p := e.start(t, "--queue", "plain", "short", "--create-queue", "--template-files",
		e.template(t, "plain.sh", "", ""), e.template(t, "short.sh", "#SBATCH --time=0:01", ""))

	killed := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "plain", "killed")
	timed := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "short", "timed")
	job := e.jobOf(t, p, killed)
	e.waitStatus(t, p, killed, job.ID, "in_progress", 2*time.Minute)
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !strings.Contains(e.s.TaskLogText(killed), "looping"); {
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.c.Cancel(context.Background(), job.ID); err != nil {
		t.Fatal(err)
	}
	task := e.waitStatus(t, p, killed, job.ID, "failed", time.Minute)
	if !strings.Contains(task.StatusReason, "SLURM job "+job.ID) || !strings.Contains(task.StatusReason, "CANCELLED") {
		t.Errorf("scancel: reason %q", task.StatusReason)
	}

	job = e.jobOf(t, p, timed)
	task = e.waitStatus(t, p, timed, job.ID, "failed", 3*time.Minute)
	if !strings.Contains(task.StatusReason, "SLURM job "+job.ID) || !strings.Contains(task.StatusReason, "TimeLimit") {
		t.Errorf("time limit: reason %q", task.StatusReason)
	}
	t.Logf("scancel: %q; time limit: %q", taskStatus(t, e.s, killed).StatusReason, task.StatusReason)
	p.stop(t)
}

// Two queues with two templates: each task's job comes from its queue's
// template.
func TestSlurmGlueTwoQueues(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	p := e.start(t, "--queue", "queue-a", "queue-b", "--create-queue", "--template-files",
		e.template(t, "ta.sh", "#SBATCH --comment=ignored", ""), e.template(t, "tb.sh", "", ""))
	a := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "queue-a", "task-a")
	b := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "queue-b", "task-b")
	for id, tmpl := range map[string]string{a: "ta.sh, queue queue-a", b: "tb.sh, queue queue-b"} {
		job := e.jobOf(t, p, id)
		e.waitStatus(t, p, id, job.ID, "completed", 3*time.Minute)
		if out := e.jobOutput(id, job.ID); !strings.Contains(out, "template "+tmpl) {
			t.Errorf("task %s ran from the wrong template:\n%s", id, out)
		}
	}
	p.stop(t)
}

// A two-rank job: both ranks run execute (srun), only rank 0 claims the
// task and sets its status; rank 1's output reaches the console prefixed
// (CLEARML_MULTI_NODE_SINGLE_TASK=1).
func TestSlurmGlueTwoRanks(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	p := e.start(t, "--queue", "multi", "--create-queue", "--template-files",
		e.template(t, "ranks.sh", "#SBATCH --ntasks=2\n#SBATCH --ntasks-per-node=2", "export CLEARML_MULTI_NODE_SINGLE_TASK=1\nsrun ${CLEARML_AGENT_EXECUTE}"))
	id := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "multi", "ranks")
	job := e.jobOf(t, p, id)
	e.waitStatus(t, p, id, job.ID, "completed", 3*time.Minute)
	if j := waitSlurmJob(t, e.c, job.ID, time.Minute); j.State != "COMPLETED" {
		t.Errorf("job %s: a rank failed\n%s", j.Describe(), e.jobOutput(id, job.ID))
	}
	log := e.s.TaskLogText(id)
	for _, want := range []string{"\nhello from rank 0 of job " + job.ID, "RANK 1: hello from rank 1 of job " + job.ID} {
		if !strings.Contains(log, want) {
			t.Errorf("console has no %q:\n%s", want, log)
		}
	}
	count := func(ep string) (n int) {
		for _, r := range e.s.RequestsTo(ep) {
			if r.Data["task"] == id {
				n++
			}
		}
		return n
	}
	if d, c := count("tasks.dequeue"), count("tasks.completed"); d != 1 || c != 1 {
		t.Errorf("tasks.dequeue %d, tasks.completed %d: only rank 0 may claim and end the task", d, c)
	}
	p.stop(t)
}

// Hostile task names and parameters stay data in the batch script.
func TestSlurmGlueHostileTask(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	canary := t.TempDir()
	hostile := strings.ReplaceAll("x'; touch CANARY/1; echo '$(touch CANARY/2)`touch CANARY/3`\n#SBATCH --chdir=/\ntouch CANARY/4 #", "CANARY", canary)
	tmpl := e.template(t, "hostile.sh", "#SBATCH --comment=${CLEARML_TASK.hyperparams.Args.x.value}",
		"P=${CLEARML_TASK.hyperparams.Args.x.value}\nprintf '%s\\n' \"$P\" ${CLEARML_TASK.name} > values-${CLEARML_TASK.id}\n${CLEARML_AGENT_EXECUTE}")
	p := e.start(t, "--queue", "hostile", "--create-queue", "--template-files", tmpl)
	id := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "hostile", hostile)
	job := e.jobOf(t, p, id)
	e.waitStatus(t, p, id, job.ID, "completed", 3*time.Minute)
	if entries, _ := os.ReadDir(canary); len(entries) > 0 {
		t.Errorf("a task value ran a command: %s exists", entries[0].Name())
	}
	got, _ := os.ReadFile(filepath.Join(e.state, "jobs", "values-"+id))
	if string(got) != hostile+"\n"+hostile+"\n" {
		t.Errorf("values arrived as %q", got)
	}
	if out := e.jobOutput(id, job.ID); !strings.Contains(out, "task "+hostile) {
		t.Errorf("job output (in the jobs folder: --chdir=/ not taken):\n%s", out)
	}
	p.stop(t)
}

// The glue restarted while its jobs run picks them up again: a job that
// ended while it was down fails its task with SLURM's reason, a job whose
// task was aborted while it was down is cancelled, a running one goes on;
// even without the state file (found by name). --status lists them.
func TestSlurmGlueRestart(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	args := []string{"--queue", "runq", "heldq", "--create-queue", "--template-files", e.template(t, "r.sh", "", ""), e.template(t, "h.sh", "#SBATCH --hold", "")}
	p := e.start(t, args...)
	runs := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "runq", "runs")
	dies := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "runq", "dies")
	held := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "heldq", "held")
	jobRuns, jobDies, jobHeld := e.jobOf(t, p, runs), e.jobOf(t, p, dies), e.jobOf(t, p, held)
	for _, id := range []string{runs, dies} {
		// Running its code (a kill during its clone would leave a partial
		// vcs cache entry behind for the other one).
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !strings.Contains(e.s.TaskLogText(id), "looping"); {
			time.Sleep(100 * time.Millisecond)
		}
	}
	e.waitStatus(t, p, runs, jobRuns.ID, "in_progress", time.Minute)
	e.waitStatus(t, p, dies, jobDies.ID, "in_progress", time.Minute)
	p.cmd.Process.Kill() // a crash: no clean stop
	<-p.done

	status := runAgent(t, e.env, "slurm", "--queue", "runq", "heldq", "--template-files", args[5], "--state-dir", e.state, "--status")
	for _, want := range []string{"tracks 3 SLURM job(s)", "SLURM job " + jobRuns.ID + ": task " + runs + ", queue runq", "RUNNING", "PENDING (JobHeldUser)"} {
		if !strings.Contains(status.stdout, want) {
			t.Errorf("--status has no %q:\n%s%s", want, status.stdout, status.stderr)
		}
	}
	// While the glue is down: the execute in the job of `dies` is killed
	// (no final status from inside, the job ends), `held` is aborted, the
	// state is lost.
	killExecute(t, dies)
	waitSlurmJob(t, e.c, jobDies.ID, time.Minute)
	stopTask(t, e.s, held)
	files, _ := filepath.Glob(filepath.Join(e.state, "*.json"))
	for _, f := range files {
		os.Remove(f)
	}

	p = e.start(t, args...)
	task := e.waitStatus(t, p, dies, jobDies.ID, "failed", 2*time.Minute)
	if !strings.Contains(task.StatusReason, "SLURM job "+jobDies.ID+" ended") {
		t.Errorf("killed job: reason %q", task.StatusReason)
	}
	if j := waitSlurmJob(t, e.c, jobHeld.ID, time.Minute); j.State != "CANCELLED" {
		t.Errorf("held job of an aborted task: %s", j.Describe())
	}
	for _, want := range []string{"Picked up SLURM job " + jobRuns.ID, "Picked up SLURM job " + jobHeld.ID} {
		if !strings.Contains(p.out.String(), want) {
			t.Errorf("glue output has no %q:\n%s", want, p.out.String())
		}
	}
	if task := taskStatus(t, e.s, runs); task.Status != "in_progress" {
		t.Errorf("the running task is %s (%s)", task.Status, task.StatusReason)
	}
	e.c.Cancel(context.Background(), jobRuns.ID)
	e.waitStatus(t, p, runs, jobRuns.ID, "failed", time.Minute)
	p.stop(t)
	if p.err != nil {
		t.Errorf("glue exit: %v", p.err)
	}
}

// The glue rides out a server outage and a slurmctld outage: nothing is
// failed while it cannot ask, a task pulled while slurmctld is down goes
// back to its queue, and everything runs once both are back.
func TestSlurmGlueOutages(t *testing.T) {
	e := newSlurmGlueEnv(t)
	repo := slurmScriptRepo(t)
	p := e.start(t, "--queue", "outage", "--create-queue", "--template-files", e.template(t, "o.sh", "", ""))
	long := enqueueSlurmTask(t, e.s, p, repo, "loop.py", "outage", "long")
	job := e.jobOf(t, p, long)
	e.waitStatus(t, p, long, job.ID, "in_progress", 2*time.Minute)

	e.s.Refuse(true)
	time.Sleep(8 * time.Second)
	e.s.Refuse(false)

	pidFile := filepath.Join(slurmCluster.home, "run", "slurmctld.pid")
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var ctld int
	fmt.Sscan(string(pid), &ctld)
	restart := func() {
		out, err := exec.Command("bash", "testdata/slurm/cluster.sh", "start").CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh start: %v\n%s", err, out)
		}
	}
	if err := syscall.Kill(ctld, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("bash", "testdata/slurm/cluster.sh", "start").Run() })
	later := enqueueSlurmTask(t, e.s, p, repo, "hello.py", "outage", "later")
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline) && !strings.Contains(p.out.String(), "returning it to queue outage"); {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // a few monitor rounds without answers
	if task := taskStatus(t, e.s, long); task.Status != "in_progress" {
		t.Errorf("running task %s (%s) during the outage", task.Status, task.StatusReason)
	}
	if task := taskStatus(t, e.s, later); task.Status != "queued" || !strings.Contains(p.out.String(), "returning it to queue outage") {
		t.Errorf("task pulled during the outage: %s (%s)\n%s", task.Status, task.StatusReason, p.out.String())
	}
	restart()
	e.waitStatus(t, p, later, e.jobOf(t, p, later).ID, "completed", 3*time.Minute)
	if task := taskStatus(t, e.s, long); task.Status != "in_progress" {
		t.Errorf("running task %s (%s) after the outages", task.Status, task.StatusReason)
	}
	log := e.s.TaskLogText(long)
	if !strings.Contains(log, "looping") {
		t.Errorf("console:\n%s", log)
	}
	p.stop(t)
}

// killExecute SIGKILLs the execute (started by this test's glue) that runs task.
func killExecute(t *testing.T, task string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "\x00execute\x00--require-queue\x00--id\x00"+task+"\x00") || !strings.HasPrefix(string(b), agentBin) {
			continue
		}
		var pid int
		fmt.Sscan(strings.TrimPrefix(filepath.Dir(p), "/proc/"), &pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no execute process runs task %s", task)
}

// Command-line mistakes and bad templates stop the glue before it starts.
func TestSlurmGlueUsage(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.sh")
	os.WriteFile(good, []byte("#!/bin/bash\n${CLEARML_AGENT_EXECUTE}\n"), 0o644)
	bad := filepath.Join(dir, "bad.sh")
	os.WriteFile(bad, []byte("#!/bin/bash\ncat <<EOF\n${CLEARML_TASK.name}\nEOF\n${CLEARML_AGENT_EXECUTE}\n"), 0o644)
	env := serverEnv(s)
	for _, tc := range []struct {
		args   []string
		code   int
		needle string
	}{
		{[]string{"slurm", "--queue", "q1"}, 2, "the following arguments are required: --template-files"},
		{[]string{"slurm", "--queue", "q1", "q2", "q3", "--template-files", good, good}, 2, "one per --queue (2 templates, 3 queues)"},
		{[]string{"slurm", "--queue", "q1", "--template-files", filepath.Join(dir, "none.sh")}, 1, "cannot read template " + filepath.Join(dir, "none.sh")},
		{[]string{"slurm", "--queue", "q1", "--template-files", bad}, 1, "template " + bad + ": slurm template line 3: ${CLEARML_TASK.name} is inside a here-document"},
		{[]string{"slurm", "--queue", "q1", "--template-files", good, "--max-jobs", "0"}, 2, "--max-jobs must be at least 1"},
		{[]string{"slurm", "--queue", "q1", "--template-files", good, "--agent-binary", "bin/agent"}, 2, "--agent-binary must be an absolute path"},
	} {
		r := runAgent(t, env, tc.args...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, r.code, tc.code, r.stderr)
		}
		oneErrorLine(t, r, tc.needle)
	}
	if r := runAgent(t, env, "slurm", "-h"); r.code != 0 || !strings.Contains(r.stdout, "--template-files TEMPLATE [TEMPLATE ...]") {
		t.Errorf("help: %d\n%s", r.code, r.stdout)
	}
}

// --detached starts the glue in the background; --stop stops it (it needs
// no cluster to start: SLURM is asked in the loop).
func TestSlurmGlueDetachAndStop(t *testing.T) {
	s := startServer(t)
	env := serverEnv(s)
	env["CLEARML_AGENT_RUNTIME_DIR"] = t.TempDir()
	env["TMPDIR"] = t.TempDir()
	env["CLEARML_WORKER_NAME"] = "gluebox"
	tmpl := filepath.Join(t.TempDir(), "t.sh")
	os.WriteFile(tmpl, []byte("#!/bin/bash\n${CLEARML_AGENT_EXECUTE}\n"), 0o644)
	state := t.TempDir()
	r := runAgent(t, env, "slurm", "--queue", "detached", "--create-queue", "--template-files", tmpl, "--state-dir", state, "-d")
	if r.code != 0 || !strings.Contains(r.stdout, "clearml-agent slurm started in the background") {
		t.Fatalf("-d: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !waitUntil(func() bool { _, ok := s.WorkerByID("gluebox:slurm:0"); return ok }, 30*time.Second) {
		t.Fatalf("the detached glue did not register")
	}
	r = runAgent(t, env, "slurm", "--queue", "detached", "--template-files", tmpl, "--stop")
	if r.code != 0 || !strings.Contains(r.stdout, "Terminating clearml-agent worker_id=gluebox:slurm:0") {
		t.Fatalf("--stop: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !waitUntil(func() bool { _, ok := s.WorkerByID("gluebox:slurm:0"); return !ok }, 30*time.Second) {
		t.Errorf("the glue did not unregister")
	}
}

func TestSlurmSubmitEnvScrubbed(t *testing.T) {
	got := slurmSubmitEnv([]string{"PATH=/bin", "HOME=/h", "CLEARML_API_SECRET_KEY=s", "CLEARML_API_HOST=http://x", "AWS_SECRET_ACCESS_KEY=k",
		"SLURM_CONF=/etc/slurm.conf", "SBATCH_PARTITION=gpu", "SBATCH_TOKEN=t", "LC_ALL=C", "GITHUB_TOKEN=g", "SLURM_JOB_ID=5"})
	want := []string{"PATH=/bin", "HOME=/h", "SLURM_CONF=/etc/slurm.conf", "SBATCH_PARTITION=gpu", "LC_ALL=C"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("env %v, want %v", got, want)
	}
}
