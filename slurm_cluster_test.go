package main

// Tests against a real one-node SLURM cluster on this machine
// (testdata/slurm/cluster.sh). They skip with the reason when SLURM cannot
// run here, and fail instead on CI (CI=true), where .ci/run installs it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var slurmCluster struct {
	once  sync.Once
	skip  string   // why the cluster is not there
	env   []string // environment for the client commands
	home  string   // the cluster's state folder
	users *os.File // shared lock held while this process uses the cluster
}

// slurmClusterHome is cluster.sh's state folder.
func slurmClusterHome() string {
	if h := os.Getenv("CLEARML_SLURM_HOME"); h != "" {
		return h
	}
	return "/tmp/clearml-slurm"
}

// needSlurm starts the cluster once per test run (or uses the running one)
// and returns a client for it.
func needSlurm(t testing.TB) slurmClient {
	t.Helper()
	slurmCluster.once.Do(startSlurmTestCluster)
	if why := slurmCluster.skip; why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SLURM: %s (on CI the SLURM tests must run: .ci/run installs slurm-wlm and munge)", why)
		}
		t.Skipf("SLURM: %s", why)
	}
	return slurmClient{Env: slurmCluster.env, Timeout: 30 * time.Second, Dir: t.TempDir()}
}

func startSlurmTestCluster() {
	for _, bin := range []string{"munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sacct"} {
		if _, err := exec.LookPath(bin); err != nil {
			slurmCluster.skip = bin + " not found (apt-get install slurm-wlm munge)"
			return
		}
	}
	if os.Geteuid() != 0 {
		slurmCluster.skip = "testdata/slurm/cluster.sh runs the daemons as root; run the tests as root"
		return
	}
	home := slurmClusterHome()
	if err := os.MkdirAll(home, 0o755); err != nil {
		slurmCluster.skip = err.Error()
		return
	}
	// Every test process holds a shared lock while it may use the cluster;
	// the last one out stops a cluster that tests started (see
	// stopSlurmTestCluster), a cluster someone started by hand stays.
	users, err := os.OpenFile(filepath.Join(home, "users.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err == nil {
		err = syscall.Flock(int(users.Fd()), syscall.LOCK_SH)
	}
	if err != nil {
		slurmCluster.skip = "locking " + home + ": " + fmt.Sprint(err)
		return
	}
	slurmCluster.users, slurmCluster.home = users, home
	script, _ := filepath.Abs(filepath.Join("testdata", "slurm", "cluster.sh"))
	if exec.Command("bash", script, "status").Run() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "bash", script, "start").CombinedOutput()
		if err != nil {
			slurmCluster.skip = fmt.Sprintf("testdata/slurm/cluster.sh start: %v: %s", err, strings.TrimSpace(string(out)))
			return
		}
		os.WriteFile(filepath.Join(home, "started-by-tests"), nil, 0o644)
	}
	slurmCluster.env = append(os.Environ(), "SLURM_CONF="+filepath.Join(home, "slurm.conf"))
	trackSlurmDaemons(home)
}

// trackSlurmDaemons marks the cluster's daemons (they carry
// CLEARML_SLURM_CLUSTER=<home>) as tracked children: started while this
// test process was a subreaper, they are re-parented to it, and the agent
// code some tests run in-process (startTaskProcess) SIGKILLs untracked ones.
func trackSlurmDaemons(home string) {
	mark := []byte("CLEARML_SLURM_CLUSTER=" + home)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !slices.ContainsFunc(bytes.Split(env, []byte{0}), func(v []byte) bool { return bytes.Equal(v, mark) }) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			trackChild(pid)
		}
	}
}

// stopSlurmTestCluster (from TestMain) stops the cluster when tests started
// it and no other test process is using it.
func stopSlurmTestCluster() {
	users := slurmCluster.users
	if users == nil {
		return
	}
	defer users.Close()
	marker := filepath.Join(slurmCluster.home, "started-by-tests")
	if _, err := os.Stat(marker); err != nil {
		return
	}
	if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // another test process still uses it
	}
	script, _ := filepath.Abs(filepath.Join("testdata", "slurm", "cluster.sh"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", script, "stop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "testdata/slurm/cluster.sh stop: %v: %s\n", err, out)
		return
	}
	os.Remove(marker)
}

// slurmMode is the cluster's process tracking: "v1" (cgroups) or "none".
func slurmMode() string {
	b, _ := os.ReadFile(filepath.Join(slurmCluster.home, "mode"))
	return strings.TrimSpace(string(b))
}

// waitSlurmJob polls until the job has ended.
func waitSlurmJob(t testing.TB, c slurmClient, id string, within time.Duration) slurmJob {
	t.Helper()
	deadline := time.Now().Add(within)
	var last slurmJob
	for time.Now().Before(deadline) {
		jobs, err := c.Jobs(context.Background(), []string{id})
		if err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
		if j, ok := jobs[id]; ok {
			if last = j; j.Final() {
				return j
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("job %s did not end within %v (last: %+v)", id, within, last)
	return last
}

// waitSlurmState polls until the job reaches state.
func waitSlurmState(t testing.TB, c slurmClient, id, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		jobs, err := c.Jobs(context.Background(), []string{id})
		if err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
		if jobs[id].State == state {
			return
		}
		if jobs[id].Final() {
			t.Fatalf("job %s ended %s while waiting for %s", id, jobs[id].Describe(), state)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("job %s not %s within %v", id, state, within)
}

var slurmTestTaskSeq atomic.Int64

// slurmTestTaskID is a unique fake task id, 32 hex digits like a real one.
func slurmTestTaskID() string {
	return fmt.Sprintf("%016x%08x%08x", time.Now().UnixNano(), os.Getpid(), slurmTestTaskSeq.Add(1))
}

func submitSlurm(t testing.TB, c slurmClient, script string, o slurmSubmit) string {
	t.Helper()
	id, err := c.Submit(context.Background(), script, o)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	t.Cleanup(func() { c.Cancel(context.Background(), id) })
	return id
}

func TestSlurmClusterJobCompletes(t *testing.T) {
	c := needSlurm(t)
	task := slurmTestTaskID()
	start := time.Now()
	id := submitSlurm(t, c, "#!/bin/bash\n#SBATCH --job-name=ignored\n#SBATCH --output=out-%j.log\ndate +%s.%N > started\necho hello from $SLURM_JOB_NAME\n",
		slurmSubmit{JobName: slurmJobName(task), NoRequeue: true})
	j := waitSlurmJob(t, c, id, time.Minute)
	if j.State != "COMPLETED" || j.ExitCode != "0:0" || j.Describe() != "COMPLETED" {
		t.Fatalf("job: %+v (%s), want COMPLETED 0:0", j, j.Describe())
	}
	if j.Name != slurmJobName(task) {
		t.Errorf("job name %q, want %q (the command line wins over #SBATCH)", j.Name, slurmJobName(task))
	}
	out, err := os.ReadFile(filepath.Join(c.Dir, "out-"+id+".log"))
	if err != nil || string(out) != "hello from "+slurmJobName(task)+"\n" {
		t.Errorf("output: %q %v", out, err)
	}
	var started float64
	if b, err := os.ReadFile(filepath.Join(c.Dir, "started")); err == nil {
		fmt.Sscan(string(b), &started)
		t.Logf("sbatch to job start: %.3fs", started-float64(start.UnixNano())/1e9)
	}
	// Found again by name, as the glue does after a restart.
	jobs, err := c.Find(context.Background(), slurmJobName(task))
	if err != nil || len(jobs) != 1 || jobs[0].ID != id || jobs[0].State != "COMPLETED" {
		t.Errorf("Find: %+v %v", jobs, err)
	}
	if tid, ok := slurmTaskID(jobs[0].Name); !ok || tid != task {
		t.Errorf("task id from %q: %q", jobs[0].Name, tid)
	}
}

func TestSlurmClusterTimeLimit(t *testing.T) {
	c := needSlurm(t)
	t.Parallel()
	// The job asks SLURM why it got SIGTERM, as execute can.
	script := "#!/bin/bash\n#SBATCH --time=0:01\n#SBATCH --output=out.log\n" +
		"trap 'scontrol show job $SLURM_JOB_ID > why.txt; exit 143' TERM\nsleep 600 & wait\n"
	id := submitSlurm(t, c, script, slurmSubmit{JobName: slurmJobName(slurmTestTaskID()), NoRequeue: true})
	j := waitSlurmJob(t, c, id, 150*time.Second)
	if j.State != "TIMEOUT" || j.Reason != "TimeLimit" || j.Describe() != "TIMEOUT (TimeLimit, exit code 143)" {
		t.Fatalf("job: %+v (%s), want TIMEOUT (TimeLimit, exit code 143)", j, j.Describe())
	}
	why, _ := os.ReadFile(filepath.Join(c.Dir, "why.txt"))
	if !strings.Contains(string(why), "Reason=TimeLimit") {
		t.Errorf("inside the job, scontrol show job said:\n%s", why)
	}
}

func TestSlurmClusterCancel(t *testing.T) {
	c := needSlurm(t)
	ctx := context.Background()
	running := submitSlurm(t, c, "#!/bin/bash\n#SBATCH --output=/dev/null\nsleep 600\n", slurmSubmit{JobName: slurmJobName(slurmTestTaskID())})
	held := submitSlurm(t, c, "#!/bin/bash\nsleep 600\n", slurmSubmit{JobName: slurmJobName(slurmTestTaskID()), Args: []string{"--hold"}})
	waitSlurmState(t, c, running, "RUNNING", 30*time.Second)
	if err := c.Cancel(ctx, running, held); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{running, held} {
		if j := waitSlurmJob(t, c, id, 30*time.Second); j.State != "CANCELLED" || !strings.HasPrefix(j.Describe(), "CANCELLED") {
			t.Errorf("job %s: %+v (%s), want CANCELLED", id, j, j.Describe())
		}
	}
	// Cancelling again, or an unknown job, is not an error.
	if err := c.Cancel(ctx, running, "999999999"); err != nil {
		t.Errorf("cancel again: %v", err)
	}
	jobs, err := c.Jobs(ctx, []string{"999999999"})
	if err != nil || len(jobs) != 0 {
		t.Errorf("unknown job: %+v %v", jobs, err)
	}
}

func TestSlurmClusterOutOfMemory(t *testing.T) {
	c := needSlurm(t)
	script := "#!/bin/bash\n#SBATCH --mem=50M\n#SBATCH --output=out.log\n" +
		"python3 -c 'import time; b = bytearray(400 << 20); time.sleep(20)'\n"
	id := submitSlurm(t, c, script, slurmSubmit{JobName: slurmJobName(slurmTestTaskID()), NoRequeue: true})
	j := waitSlurmJob(t, c, id, time.Minute)
	if slurmMode() == "v1" {
		if j.State != "OUT_OF_MEMORY" || j.Reason != "OutOfMemory" {
			t.Errorf("job: %+v (%s), want OUT_OF_MEMORY (OutOfMemory)", j, j.Describe())
		}
	} else if j.State != "FAILED" {
		// Without the memory cgroup the step is killed by OverMemoryKill.
		t.Errorf("job: %+v (%s), want FAILED", j, j.Describe())
	}
	// The job completion log knows the same state once the job has ended.
	if acc := c.accounting(context.Background(), []string{id}); len(acc) != 1 || acc[0].State != j.State || acc[0].Source != "sacct -c" {
		t.Errorf("sacct -c: %+v, want state %s", acc, j.State)
	}
}

func TestSlurmClusterTwoRanks(t *testing.T) {
	c := needSlurm(t)
	script := "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --output=out.log\nsrun bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS'\n"
	id := submitSlurm(t, c, script, slurmSubmit{JobName: slurmJobName(slurmTestTaskID())})
	if j := waitSlurmJob(t, c, id, time.Minute); j.State != "COMPLETED" {
		t.Fatalf("job: %+v", j)
	}
	out, _ := os.ReadFile(filepath.Join(c.Dir, "out.log"))
	for _, want := range []string{"rank=0 of 2", "rank=1 of 2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

func TestSlurmClusterErrorsNameTheFix(t *testing.T) {
	c := needSlurm(t)
	ctx := context.Background()
	noConf := slurmClient{Env: append(os.Environ(), "SLURM_CONF=/nonexistent/slurm.conf"), Timeout: 3 * time.Second}
	_, err := noConf.Submit(ctx, "#!/bin/bash\ntrue\n", slurmSubmit{})
	if err == nil || !strings.HasPrefix(err.Error(), "sbatch did not answer within 3s (s_p_parse_file: cannot stat file /nonexistent/slurm.conf") ||
		!strings.HasSuffix(err.Error(), "; set SLURM_CONF to the cluster's slurm.conf") {
		t.Errorf("no config: %v", err)
	}
	noPath := slurmClient{Env: []string{"PATH=" + t.TempDir()}}
	_, err = noPath.Find(ctx, slurmJobPrefix)
	if err == nil || err.Error() != "squeue not found: install the SLURM client commands (Debian: slurm-client) on this machine or put them on PATH" {
		t.Errorf("no squeue: %v", err)
	}
	_, err = c.Submit(ctx, "#!/bin/bash\n#SBATCH --partition=nosuch\ntrue\n", slurmSubmit{})
	var se *slurmError
	if !errors.As(err, &se) || err.Error() != "sbatch: Batch job submission failed: Invalid partition name specified" {
		t.Errorf("bad partition: %v", err)
	}
	slow := c
	slow.Timeout = time.Nanosecond
	if _, err = slow.Find(ctx, slurmJobPrefix); err == nil || !strings.Contains(err.Error(), "squeue did not answer within 1ns") {
		t.Errorf("timeout: %v", err)
	}
}

// A template filled with hostile task values runs on the cluster: every
// value arrives as the literal text, nothing runs, and the #SBATCH lines
// take no extra options.
func TestSlurmTemplateHostileValuesOnCluster(t *testing.T) {
	c := needSlurm(t)
	canary := t.TempDir()
	hostile := strings.ReplaceAll("a'b\"c $(touch CANARY/1) `touch CANARY/2`; touch CANARY/3\n#SBATCH --chdir=/\ntouch CANARY/4 \\ \x00 %j --x", "CANARY", canary)
	task := map[string]any{
		"id": slurmTestTaskID(), "name": hostile, "project": "p",
		"hyperparams": map[string]any{"Args": map[string]any{"p": map[string]any{"value": hostile}}},
	}
	vars := map[string]slurmValue{
		"CLEARML_QUEUE_NAME":    {Text: "q"},
		"CLEARML_AGENT_EXECUTE": {Text: "echo agent runs here", Script: true},
	}
	tmpl := "#!/bin/bash\n#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}\n#SBATCH --output=out-%j.log\n" +
		"#SBATCH --comment=${CLEARML_TASK.name}\n#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}\n" +
		"printf '%s\\0' ${CLEARML_TASK.name} \"${CLEARML_TASK.hyperparams.Args.p.value}\" '${CLEARML_TASK.name}' > values.bin\n" +
		"N=${CLEARML_TASK.name}\nprintf '%s\\0' \"$N\" >> values.bin\n${CLEARML_AGENT_EXECUTE}\n"
	script, err := renderSlurmTemplate(tmpl, slurmTaskLookup(task, vars))
	if err != nil {
		t.Fatal(err)
	}
	id := submitSlurm(t, c, script, slurmSubmit{JobName: slurmJobName(task["id"].(string))})
	if j := waitSlurmJob(t, c, id, time.Minute); j.State != "COMPLETED" {
		t.Fatalf("job: %+v (%s)\nscript:\n%s", j, j.Describe(), script)
	}
	want := strings.ReplaceAll(hostile, "\x00", "")
	got, _ := os.ReadFile(filepath.Join(c.Dir, "values.bin"))
	if string(got) != strings.Repeat(want+"\x00", 4) {
		t.Errorf("values arrived as %q, want 4 times %q", got, want)
	}
	if entries, _ := os.ReadDir(canary); len(entries) > 0 {
		t.Errorf("a value ran a command: %s exists\nscript:\n%s", entries[0].Name(), script)
	}
	out, _ := os.ReadFile(filepath.Join(c.Dir, "out-"+id+".log"))
	if string(out) != "agent runs here\n" {
		t.Errorf("job output (in the submit folder, so --chdir=/ was not taken): %q", out)
	}
	comment, err := c.run(context.Background(), "", "squeue", "--noheader", "--states=all", "-j", id, "-O", "Comment:|")
	if wantComment := slurmDirectiveSafe(want, false) + "|"; err != nil || strings.TrimSpace(comment) != wantComment {
		t.Errorf("comment %q (%v), want %q", comment, err, wantComment)
	}
}
