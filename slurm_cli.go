package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The SLURM client commands the glue runs: sbatch, squeue, sacct, scancel.
// Argv only (no shell), each under a timeout; errors name the command and
// the fix.

// slurmJobPrefix starts the name of every job the glue submits; the rest is
// the task id, so the glue finds its jobs again after a restart (the
// documented templates name jobs the same way).
const slurmJobPrefix = "clearml_task_"

func slurmJobName(taskID string) string { return slurmJobPrefix + taskID }

// slurmTaskID is the task id in one of our job names.
func slurmTaskID(jobName string) (string, bool) {
	id, ok := strings.CutPrefix(jobName, slurmJobPrefix)
	return id, ok && id != ""
}

// slurmClient runs the client commands.
type slurmClient struct {
	Env     []string      // environment of the commands; nil: this process's
	Timeout time.Duration // per command; 0: 30 s
	Dir     string        // working folder (sbatch resolves relative --output here)
}

// slurmJob is one job as SLURM reports it.
type slurmJob struct {
	ID       string
	Name     string
	State    string // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
	Reason   string // squeue's reason (TimeLimit, OutOfMemory, NodeDown, NonZeroExitCode, Priority...)
	ExitCode string // "code:signal"
	Nodes    string
	Comment  string // --comment (Find only): the glue's worker
	Source   string // squeue, sacct, or sacct -c (the job completion log)
}

// slurmFinalStates are the states of a job that has ended.
var slurmFinalStates = map[string]bool{"COMPLETED": true, "FAILED": true, "CANCELLED": true, "TIMEOUT": true,
	"OUT_OF_MEMORY": true, "NODE_FAIL": true, "PREEMPTED": true, "BOOT_FAIL": true, "DEADLINE": true,
	"SPECIAL_EXIT": true, "REVOKED": true}

// Final: the job has ended (COMPLETING has not: its processes may still run).
func (j slurmJob) Final() bool { return slurmFinalStates[j.State] }

// Describe is the state and the reason for a status message, e.g.
// "TIMEOUT (TimeLimit)" or "FAILED (NonZeroExitCode, exit code 2)".
func (j slurmJob) Describe() string {
	var extra []string
	// A cancelled job keeps its last pending reason (Priority, JobHeldUser):
	// not news.
	if j.Reason != "" && j.Reason != "None" && j.State != "CANCELLED" {
		extra = append(extra, j.Reason)
	}
	if code, sig, ok := strings.Cut(j.ExitCode, ":"); ok && j.State != "COMPLETED" {
		if code != "0" && code != "" {
			extra = append(extra, "exit code "+code)
		}
		if sig != "0" && sig != "" {
			extra = append(extra, "signal "+sig)
		}
	}
	if len(extra) == 0 {
		return j.State
	}
	return j.State + " (" + strings.Join(extra, ", ") + ")"
}

// slurmError is a client command that failed.
type slurmError struct {
	Cmd     string
	Err     error
	Stderr  string
	Timeout time.Duration
}

func (e *slurmError) Error() string {
	if errors.Is(e.Err, exec.ErrNotFound) {
		return fmt.Sprintf("%s not found: install the SLURM client commands (Debian: slurm-client) on this machine or put them on PATH", e.Cmd)
	}
	// The last line says it; drop the command's own "sbatch: error: ".
	msg := strings.TrimSpace(e.Stderr)
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	msg = strings.TrimPrefix(msg, e.Cmd+": ")
	for _, p := range []string{"error: ", "fatal: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	fix := ""
	switch low := strings.ToLower(msg); {
	case strings.Contains(low, "configuration source"), strings.Contains(low, "s_p_parse_file"),
		strings.Contains(low, "unable to process configuration"):
		fix = "; set SLURM_CONF to the cluster's slurm.conf"
	case strings.Contains(low, "munge"):
		fix = "; check that munged runs with the cluster's key"
	case strings.Contains(low, "unable to contact slurm controller"), strings.Contains(low, "socket timed out"),
		strings.Contains(low, "connection refused"), errors.Is(e.Err, context.DeadlineExceeded):
		fix = "; check that slurmctld is up and reachable (scontrol ping)"
	}
	if errors.Is(e.Err, context.DeadlineExceeded) {
		if msg == "" {
			msg = "no output"
		}
		return fmt.Sprintf("%s did not answer within %v (%s)%s", e.Cmd, e.Timeout, msg, fix)
	}
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: %s%s", e.Cmd, msg, fix)
}

func (e *slurmError) Unwrap() error { return e.Err }

// slurmLookPath finds a command on the PATH of env (this process's when
// env has none), so a client with its own environment runs its own tools.
func slurmLookPath(name string, env []string) (string, error) {
	for i := len(env) - 1; i >= 0; i-- {
		if path, ok := strings.CutPrefix(env[i], "PATH="); ok {
			for _, dir := range filepath.SplitList(path) {
				p := filepath.Join(dir, name)
				if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
					return p, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	return exec.LookPath(name)
}

// run runs one command and returns its stdout.
func (c slurmClient) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	path, err := slurmLookPath(name, env)
	if err != nil {
		return "", &slurmError{Cmd: name, Err: exec.ErrNotFound}
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL) // dies with a SIGKILLed glue
	cmd.Env, cmd.Dir = env, c.Dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return out.String(), &slurmError{Cmd: name, Err: err, Stderr: errb.String(), Timeout: timeout}
	}
	return out.String(), nil
}

// slurmSubmit says how to submit one batch script.
type slurmSubmit struct {
	JobName   string   // --job-name, over the script's own
	NoRequeue bool     // --no-requeue: a node failure ends the job (NODE_FAIL) instead of rerunning it
	Args      []string // more sbatch options, before the script
}

// Submit hands a batch script to sbatch (on stdin) and returns the job id.
func (c slurmClient) Submit(ctx context.Context, script string, o slurmSubmit) (string, error) {
	args := []string{"--parsable"}
	if o.JobName != "" {
		args = append(args, "--job-name="+o.JobName)
	}
	if o.NoRequeue {
		args = append(args, "--no-requeue")
	}
	args = append(args, o.Args...)
	out, err := c.run(ctx, script, "sbatch", args...)
	if err != nil {
		return "", err
	}
	// --parsable prints "id" or "id;cluster".
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	if _, perr := strconv.ParseUint(id, 10, 64); perr != nil {
		return "", fmt.Errorf("sbatch printed %q, not a job id: is sbatch the SLURM one?", strings.TrimSpace(out))
	}
	return id, nil
}

// slurmQueueFormat: squeue -O fields, "|" after each; the name goes last so
// a "|" in it does not shift the others.
const slurmQueueFormat = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,Name:"

// slurmFindFormat adds the comment (the glue's, without "|") before the name.
const slurmFindFormat = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,Comment:|,Name:"

// parseSlurmQueue reads squeue output in slurmQueueFormat, or
// slurmFindFormat withComment.
func parseSlurmQueue(out string, withComment bool) []slurmJob {
	n := 6
	if withComment {
		n = 7
	}
	var jobs []slurmJob
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, "|", n)
		if len(f) < n || !slurmJobIDPattern().MatchString(strings.TrimSpace(f[0])) {
			continue // a header, or a line of a name with a newline in it
		}
		j := slurmJob{ID: strings.TrimSpace(f[0]), State: strings.TrimSpace(f[1]), Reason: strings.TrimSpace(f[2]),
			Nodes: strings.TrimSpace(f[4]), Name: strings.TrimRight(f[n-1], " "), Source: "squeue"}
		if withComment {
			j.Comment = strings.TrimSpace(f[5])
		}
		// squeue's exit_code is the raw wait status.
		if st, err := strconv.Atoi(strings.TrimSpace(f[3])); err == nil {
			j.ExitCode = fmt.Sprintf("%d:%d", st>>8&0xff, st&0x7f)
		}
		jobs = append(jobs, j)
	}
	return jobs
}

var slurmJobIDPattern = lazyRegexp(`^[0-9]+(_[0-9]+|\+[0-9]+)?$`)

// Jobs reports the given jobs: squeue first (live jobs, and finished ones
// for MinJobAge), then sacct for the rest (with slurmdbd), then the job
// completion log (sacct -c, jobcomp/filetxt). A job no source knows is
// missing from the result.
func (c slurmClient) Jobs(ctx context.Context, ids []string) (map[string]slurmJob, error) {
	found := map[string]slurmJob{}
	if len(ids) == 0 {
		return found, nil
	}
	out, err := c.run(ctx, "", "squeue", "--noheader", "--states=all", "--jobs="+strings.Join(ids, ","), "-O", slurmQueueFormat)
	var se *slurmError
	// squeue fails when none of the ids is known any more: that is an answer.
	if err != nil && !(errors.As(err, &se) && strings.Contains(se.Stderr, "Invalid job id")) {
		return nil, err
	}
	for _, j := range parseSlurmQueue(out, false) {
		found[j.ID] = j
	}
	var rest []string
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			rest = append(rest, id)
		}
	}
	if len(rest) > 0 {
		for _, j := range c.accounting(ctx, rest) {
			found[j.ID] = j
		}
	}
	return found, nil
}

// accounting asks sacct, then the job completion log, about ended jobs; a
// cluster without either answers nothing.
func (c slurmClient) accounting(ctx context.Context, ids []string) []slurmJob {
	fields := []string{"-n", "-P", "-X", "-j", strings.Join(ids, ","), "-o", "JobID,State,Reason,ExitCode,NodeList,JobName"}
	out, err := c.run(ctx, "", "sacct", fields...)
	source := "sacct"
	if err != nil || strings.TrimSpace(out) == "" {
		// jobcomp/filetxt has no Reason column and ignores -X.
		out, err = c.run(ctx, "", "sacct", "-c", "-n", "-P", "-j", strings.Join(ids, ","), "-o", "JobID,State,ExitCode,NodeList,JobName")
		source = "sacct -c"
		if err != nil {
			return nil
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	byID := map[string]slurmJob{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if source == "sacct -c" && len(f) >= 5 {
			f = append(f[:2], append([]string{""}, f[2:]...)...) // no Reason column
		}
		if len(f) < 6 || !want[f[0]] {
			continue
		}
		state, _, _ := strings.Cut(f[1], " ") // "CANCELLED by 0"
		// A requeued job has several records: the last one counts.
		byID[f[0]] = slurmJob{ID: f[0], State: state, Reason: f[2], ExitCode: f[3], Nodes: f[4],
			Name: strings.Join(f[5:], "|"), Source: source}
	}
	jobs := make([]slurmJob, 0, len(byID))
	for _, j := range byID {
		jobs = append(jobs, j)
	}
	return jobs
}

// Find lists the jobs of this user whose name starts with prefix that
// slurmctld still knows (live, or ended within MinJobAge), by job id, with
// their comments.
func (c slurmClient) Find(ctx context.Context, prefix string) ([]slurmJob, error) {
	out, err := c.run(ctx, "", "squeue", "--noheader", "--me", "--states=all", "-O", slurmFindFormat)
	if err != nil {
		return nil, err
	}
	var jobs []slurmJob
	for _, j := range parseSlurmQueue(out, true) {
		if strings.HasPrefix(j.Name, prefix) {
			jobs = append(jobs, j)
		}
	}
	sort.Slice(jobs, func(a, b int) bool { return slurmJobLess(jobs[a].ID, jobs[b].ID) })
	return jobs, nil
}

func slurmJobLess(a, b string) bool {
	na, ea := strconv.ParseUint(a, 10, 64)
	nb, eb := strconv.ParseUint(b, 10, 64)
	if ea == nil && eb == nil {
		return na < nb
	}
	return a < b
}

// Cancel cancels jobs; one that has already ended or is unknown is fine.
func (c slurmClient) Cancel(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := c.run(ctx, "", "scancel", ids...)
	var se *slurmError
	if errors.As(err, &se) && (strings.Contains(se.Stderr, "already completing or completed") ||
		strings.Contains(se.Stderr, "Invalid job id")) {
		return nil
	}
	return err
}

// slurmTermReason is, inside a SLURM job (SLURM_JOB_ID set), why SLURM is
// ending it, for execute when its task was stopped by a signal: scancel,
// the time limit or a preemption is SLURM's doing, not a user abort. ""
// outside a job, when scontrol cannot tell, or while the job is still
// RUNNING (then the signal was not SLURM's).
func slurmTermReason(env envLookup) string {
	id := firstEnv(env, "SLURM_JOB_ID")
	if id == "" {
		return ""
	}
	out, err := slurmClient{Timeout: 3 * time.Second}.run(context.Background(), "", "scontrol", "show", "job", "-o", id)
	if err != nil {
		return ""
	}
	fields := map[string]string{}
	for _, f := range strings.Fields(out) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	state, reason := fields["JobState"], fields["Reason"]
	switch {
	case state == "" || state == "RUNNING":
		return ""
	case reason == "TimeLimit" || state == "TIMEOUT":
		return fmt.Sprintf("SLURM job %s reached its time limit (TIMEOUT, TimeLimit)", id)
	case state == "PREEMPTED" || strings.HasPrefix(reason, "Preempt"):
		return fmt.Sprintf("SLURM job %s was preempted (PREEMPTED)", id)
	case reason == "None" && (state == "COMPLETING" || state == "CANCELLED"):
		return fmt.Sprintf("SLURM job %s was cancelled (CANCELLED, scancel)", id)
	case reason == "" || reason == "None":
		return fmt.Sprintf("SLURM job %s is ending: %s", id, state)
	}
	return fmt.Sprintf("SLURM job %s is ending: %s (%s)", id, state, reason)
}
