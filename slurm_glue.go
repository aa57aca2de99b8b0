package main

// `clearml-agent slurm`: the glue (glue.go) over SLURM. Each task pulled
// from a queue becomes an sbatch job rendered from the queue's template
// (slurm_template.go); ${CLEARML_AGENT_EXECUTE} runs this same binary's
// `execute --require-queue --id TASK` on the node, which claims the task
// when the job starts.
//
// Credentials: the job never gets them in its environment or script
// (slurmctld keeps scripts, `scontrol show job` shows environments).
// execute reads the glue's effective configuration from a 0600 file in the
// state folder (<state dir>/<worker>.conf), which must be on a file system
// the nodes share, as must the binary (--agent-binary). sbatch runs with a
// scrubbed environment: PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE,
// LC_*, TZ, TMPDIR, SLURM_CONF and SBATCH_*; anything else a job needs is
// set in its template.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	slurmPendingQueue  = "slurm_scheduler"
	slurmCommentPrefix = "clearml_worker="
)

// slurmCmd is `clearml-agent slurm`.
type slurmCmd struct {
	glueFlags
	templates    listFlag
	maxJobs      intFlag
	pendingQueue string
	agentBinary  string
	stateDir     string
}

func (s *slurmCmd) flags(t *flagTable) {
	s.glueFlags.register(t)
	s.templates.min = 1
	t.add(&s.templates, "template-files", "", "TEMPLATE", "sbatch templates: one per --queue, in the same order, or one for all queues")
	t.require()
	t.add(&s.maxJobs, "max-jobs", "", "MAX_JOBS", "At most this many SLURM jobs in flight (default: no limit)")
	s.pendingQueue = slurmPendingQueue
	t.stringVar(&s.pendingQueue, "pending-queue-name", "NAME", "Queue where a task waits while its job is pending (default: "+slurmPendingQueue+")")
	t.stringVar(&s.agentBinary, "agent-binary", "PATH", "This agent's binary as the compute nodes see it, on a shared file system (default: this binary)")
	t.stringVar(&s.stateDir, "state-dir", "DIR", "The glue's folder for its state, the jobs' configuration file and their output, on a shared file system (default: ~/.clearml/slurm-glue)")
}

func (s *slurmCmd) run(cx *cmdContext) error {
	if n := len(s.templates.vals); n > 1 && n != len(s.queues.vals) {
		return usagef("--template-files: give one template for all queues or one per --queue (%d templates, %d queues)", n, len(s.queues.vals))
	}
	if s.maxJobs.set && s.maxJobs.n < 1 {
		return usagef("--max-jobs must be at least 1")
	}
	b := &slurmBackend{cli: slurmClient{Env: slurmSubmitEnv(os.Environ()), Timeout: 30 * time.Second}}
	for _, f := range s.templates.vals {
		data, err := os.ReadFile(expandHome(f))
		if err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("cannot read template %s: %v", f, unwrapPathErr(err))}
		}
		if err := checkSlurmTemplate(string(data)); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("template %s: %v", f, err)}
		}
		b.templates = append(b.templates, slurmTemplate{file: f, text: string(data)})
	}
	bin, err := slurmAgentBinary(s.agentBinary)
	if err != nil {
		return err
	}
	b.agentBin = bin
	stateDir := s.stateDir
	if stateDir != "" {
		if stateDir, err = filepath.Abs(expandHome(stateDir)); err != nil {
			return err
		}
	}
	o := glueOptions{Kind: "slurm", PendingQueue: s.pendingQueue, PendingTags: []string{"slurm-glue"},
		PendingReason: slurmPendingReason, MaxJobs: s.maxJobs.n, StateDir: stateDir}
	return runGlue(cx, &s.glueFlags, o, b)
}

// slurmAgentBinary is the binary the jobs run: --agent-binary (absolute:
// it is a path on the nodes), else this one.
func slurmAgentBinary(flagValue string) (string, error) {
	if flagValue != "" {
		if !filepath.IsAbs(flagValue) {
			return "", usagef("--agent-binary must be an absolute path (the path of the binary on the compute nodes)")
		}
		return flagValue, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find this binary's path (%v): pass --agent-binary", err)
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	return self, nil
}

// checkSlurmTemplate renders a template with stand-in values: what fails
// then fails for every task (a variable where quoting cannot protect it, an
// unterminated ${...}), so the glue refuses to start.
func checkSlurmTemplate(text string) error {
	_, err := renderSlurmTemplate(text, func(name string) (slurmValue, bool) {
		script := name == "CLEARML_PRE_SETUP" || name == "CLEARML_POST_SETUP" || name == "CLEARML_AGENT_EXECUTE"
		return slurmValue{Text: "x", Script: script}, true
	})
	return err
}

// slurmSubmitEnv is the environment sbatch runs with, and so the jobs'
// (sbatch exports it): the glue's, without anything that could hold a
// secret.
func slurmSubmitEnv(environ []string) []string {
	keep := map[string]bool{"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "SHELL": true, "LANG": true,
		"LANGUAGE": true, "TZ": true, "TMPDIR": true, "SLURM_CONF": true}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if keep[k] || strings.HasPrefix(k, "LC_") || strings.HasPrefix(k, "SBATCH_") && !looksSecretName(k) {
			out = append(out, kv)
		}
	}
	return out
}

type slurmTemplate struct{ file, text string }

// slurmBackend implements glueBackend with sbatch, squeue and scancel.
type slurmBackend struct {
	cli       slurmClient
	templates []slurmTemplate
	perQueue  map[string]slurmTemplate // queue id -> its template
	agentBin  string
	jobConfig string // the jobs' configuration file
	logf      func(format string, args ...any)
}

func (b *slurmBackend) Kind() string            { return "SLURM" }
func (b *slurmBackend) Label(job string) string { return "SLURM job " + job }

// Start maps templates to queues and writes the jobs' configuration file.
func (b *slurmBackend) Start(ctx context.Context, s glueSetup) error {
	b.logf = s.logf
	b.perQueue = map[string]slurmTemplate{}
	for i, q := range s.queues {
		b.perQueue[q.ID] = b.templates[min(i, len(b.templates)-1)]
	}
	jobs := filepath.Join(s.stateDir, "jobs")
	if err := os.MkdirAll(jobs, 0o700); err != nil {
		return err
	}
	// sbatch's folder: a job's output (slurm-%j.out, relative --output) lands there.
	b.cli.Dir = jobs
	b.jobConfig = filepath.Join(s.stateDir, strings.TrimSuffix(glueStateName(s.workerID), ".json")+".conf")
	if err := writeJobConfig(s.cfg, b.jobConfig); err != nil {
		return fmt.Errorf("cannot write the jobs' configuration file %s: %v", b.jobConfig, err)
	}
	if _, err := os.Stat(b.agentBin); err != nil {
		s.logf("Warning: the agent binary %s is not on this machine (%v); the jobs will fail unless the nodes have it (--agent-binary)", b.agentBin, unwrapPathErr(err))
	}
	return nil
}

// writeJobConfig writes the glue's effective configuration (file,
// environment overrides, defaults) as JSON, which HOCON reads, mode 0600.
// The worker's name and id are the node's own.
func writeJobConfig(cfg *agentConfig, path string) error {
	root := cfg.root.Clone()
	root.Delete("env")
	if a, ok := root.Lookup("agent"); ok {
		if ao, ok := a.(*hoconObject); ok {
			ao.Delete("worker_id")
			ao.Delete("worker_name")
		}
	}
	data, err := json.MarshalIndent(hoconToPlain(root), "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".job-conf-*") // 0600
	if err != nil {
		return err
	}
	_, err = f.Write(append([]byte("# Written by clearml-agent slurm for the execute of its jobs: the glue's configuration. Secret: keep 0600.\n"), append(data, '\n')...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// executeCommand is ${CLEARML_AGENT_EXECUTE}: execute, every word quoted,
// which may follow srun or `singularity exec`. Each rank of a multi-node
// job runs it; execute lets only rank 0 (SLURM_PROCID) claim the task and
// set its status.
//
// When SLURM ends a job (scancel, time limit) it sends SIGTERM to the batch
// shell only, and SIGKILL to everything KillWait later, or at once when
// the shell dies. A shell waiting for a foreground command defers its
// traps, so the command runs in the background and a trap hands the
// SIGTERM on: execute then stops the task and reports SLURM's reason. The
// line's status is execute's.
func (b *slurmBackend) executeCommand(s glueSubmission) string {
	argv := []string{"env", "CLEARML_WORKER_ID=" + s.TaskWorkerID, b.agentBin}
	return shellJoin(append(argv, glueJobArgv(globalOpts{configFile: b.jobConfig}, s.TaskID)...)) +
		" & trap 'kill -TERM $! 2>/dev/null; wait $!' TERM; wait $!"
}

// Submit renders the queue's template for the task and submits it with
// --no-requeue (a node failure ends the job NODE_FAIL rather than running
// execute again on a task already claimed), named clearml_task_<id> and
// commented with the worker, so a restarted glue finds it.
func (b *slurmBackend) Submit(ctx context.Context, s glueSubmission) (string, error) {
	tmpl, ok := b.perQueue[s.Queue.ID]
	if !ok {
		tmpl = b.templates[0]
	}
	vars := map[string]slurmValue{
		"CLEARML_QUEUE_NAME":    {Text: s.Queue.Name},
		"CLEARML_QUEUE_ID":      {Text: s.Queue.ID},
		"CLEARML_WORKER_ID":     {Text: s.WorkerID},
		"CLEARML_PRE_SETUP":     {Script: true},
		"CLEARML_POST_SETUP":    {Script: true},
		"CLEARML_AGENT_EXECUTE": {Text: b.executeCommand(s), Script: true},
	}
	script, err := renderSlurmTemplate(tmpl.text, slurmTaskLookup(s.Task, vars))
	if err != nil {
		return "", glueRefuse("SLURM template %s: %v", tmpl.file, err)
	}
	id, err := b.cli.Submit(ctx, script, slurmSubmit{JobName: slurmJobName(s.TaskID), NoRequeue: true,
		Args: []string{"--comment=" + slurmCommentPrefix + s.WorkerID}})
	if err != nil && !slurmUnavailable(err) {
		return "", glueRefuse("SLURM refused the job (template %s): %v", tmpl.file, err)
	}
	return id, err
}

// slurmUnavailable: the error says SLURM could not be asked (controller
// down, timeout, munge), not that it refused the job.
func slurmUnavailable(err error) bool {
	var se *slurmError
	if !errors.As(err, &se) {
		return true
	}
	if errors.Is(se.Err, context.DeadlineExceeded) || errors.Is(se.Err, context.Canceled) {
		return true
	}
	low := strings.ToLower(se.Stderr + " " + se.Error())
	for _, s := range []string{"unable to contact", "socket timed out", "connection refused", "connect failure",
		"zero bytes", "munge", "not found: install", "slurm_persist_conn", "temporarily unavailable", "try again"} {
		if strings.Contains(low, s) {
			return true
		}
	}
	return false
}

// slurmHopeless are pending reasons that never clear by themselves.
var slurmHopeless = map[string]bool{"DependencyNeverSatisfied": true, "BadConstraints": true, "InvalidAccount": true, "InvalidQOS": true}

// Jobs reports jobs by squeue, then the accounting (slurm_cli.go).
func (b *slurmBackend) Jobs(ctx context.Context, jobs []string) (map[string]glueJobState, error) {
	found, err := b.cli.Jobs(ctx, jobs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]glueJobState, len(found))
	for id, j := range found {
		st := glueJobState{Phase: glueRunning, Detail: j.Describe()}
		switch {
		case j.Final():
			st.Phase = glueEnded
		case j.State == "PENDING" || j.State == "REQUEUED" || j.State == "REQUEUE_HOLD" || j.State == "REQUEUE_FED" || j.State == "CONFIGURING":
			st.Phase = gluePending
			if slurmHopeless[j.Reason] {
				st.Fatal = "the job can never start: " + j.Describe()
			}
		}
		out[id] = st
	}
	return out, nil
}

// Find lists this user's clearml_task_* jobs submitted by workerID.
func (b *slurmBackend) Find(ctx context.Context, workerID string) ([]glueFound, error) {
	jobs, err := b.cli.Find(ctx, slurmJobPrefix)
	if err != nil {
		return nil, err
	}
	var out []glueFound
	for _, j := range jobs {
		if task, ok := slurmTaskID(j.Name); ok && j.Comment == slurmCommentPrefix+workerID {
			out = append(out, glueFound{Job: j.ID, Task: task})
		}
	}
	return out, nil
}

func (b *slurmBackend) Cancel(ctx context.Context, jobs ...string) error {
	return b.cli.Cancel(ctx, jobs...)
}

// Release: SLURM keeps nothing to clean (job output files stay for the user).
func (b *slurmBackend) Release(context.Context, string) {}
