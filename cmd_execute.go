package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// executeCmd runs one task.
type executeCmd struct {
	workerFlags
	id                string
	logFile           string
	disableMonitoring bool
	fullMonitoring    bool
	requireQueue      bool
	standalone        bool
	docker            listFlag
	clone             bool
}

func (e *executeCmd) flags(t *flagTable) {
	t.stringVar(&e.id, "id", "TASK_ID", "Id (or name) of the task to execute")
	t.stringVar(&e.logFile, "log-file", "LOG_FILE", "Also write the task's output (stdout/stderr) to this file")
	t.boolVar(&e.disableMonitoring, "disable-monitoring", "", "Disable logging and monitoring, except for stdout")
	t.boolVar(&e.fullMonitoring, "full-monitoring", "", "Full log: environment setup, task output and monitoring, plus stdout (always on in this agent)")
	t.boolVar(&e.requireQueue, "require-queue", "", "Fail if the task is not queued (for external schedulers such as K8s or SLURM)")
	t.boolVar(&e.standalone, "standalone-mode", "", "Use no network connections; assume everything is pre-installed")
	t.add(&e.docker, "docker", "", "DOCKER", "Run in Docker: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
	t.boolVar(&e.clone, "clone", "", "Clone the task given by --id, then execute the clone")
	e.workerFlags.register(t)
}

// Timings of the run phase. Variables so tests can shorten them.
var (
	abortPollEvery   = 2 * time.Second
	statusReportEach = 30 * time.Second
	statsFirstReport = 3 * time.Second
)

func (e *executeCmd) run(env *runEnv) error {
	cfg, err := loadConfig(env.global.configFile, nil)
	if err != nil {
		return err
	}
	workerID := workerIDFor(cfg)
	c, err := newAPIClient(cfg, clientOptions{interactive: true, workerID: workerID})
	if err != nil {
		return err
	}
	if env.global.debug {
		c.logf = func(format string, args ...any) {
			fmt.Fprintf(env.stderr, "clearml-agent: debug: "+format+"\n", args...)
		}
	}
	if e.docker.set {
		return e.taskExit(env, cfg, e.runDocker(env, cfg, c, workerID), func() bool { return true })
	}
	x := &execution{opts: e, cfg: cfg, api: c, workerID: workerID, stdout: env.stdout, debug: env.global.debug, rank: taskRank(cfg.env)}
	// Under a daemon, the daemon reports the worker (with its queue): the
	// child only pings its task and watches for an abort.
	x.underDaemon, _ = parseBoolText(firstEnv(cfg.env, "CLEARML_AGENT_DAEMON_CHILD"))
	if !e.fullMonitoring {
		return x.run()
	}
	return e.taskExit(env, cfg, x.run(), func() bool { return x.claimed })
}

// taskExit is the exit of `execute --docker` and `--full-monitoring` (how
// Kubernetes glue runs tasks): as in the reference, 0 once the task has its
// final status, however the task ended, so a Job does not run it again;
// CLEARML_AGENT_PROPAGATE_EXITCODE=1 returns the task's code instead.
func (e *executeCmd) taskExit(env *runEnv, cfg *agentConfig, err error, taskEnded func() bool) error {
	var ee *exitError
	if err == nil || !errors.As(err, &ee) || ee.code == 254 || !taskEnded() {
		return err
	}
	if on, _ := parseBoolText(firstEnv(cfg.env, "CLEARML_AGENT_PROPAGATE_EXITCODE")); on {
		return err
	}
	if ee.msg != "" {
		fmt.Fprintf(env.stderr, "%s: %s (exit 0: set CLEARML_AGENT_PROPAGATE_EXITCODE=1 for the task's exit code)\n", progName, ee.msg)
	}
	return nil
}

// execution is one run of execute.
type execution struct {
	opts        *executeCmd
	underDaemon bool
	cfg         *agentConfig
	api         *apiClient
	workerID    string
	stdout      io.Writer
	debug       bool

	build    bool   // build: prepare only, write nothing to the task
	rank     int    // RANK / SLURM_PROCID: only rank 0 writes the task's status and packages
	buildDir string // build --target: code and venv go here

	task     *taskDoc
	venv     *venvResult
	log      io.Writer // setup and task output: stdout, the server, --log-file
	shipper  *consoleShipper
	tmpDir   string
	taskDir  string            // <venvs_dir>/<task id>: code and any uncached venv; removed after the run
	taskVars map[string]string // the task's "Environment" hyper-parameters (agent.enable_task_env)
	localLog io.Writer         // stdout (and --log-file): the log once the server's part is closed
	claimed  bool              // the task is ours: it gets a final status whatever happens
}

// stepError is a setup failure; the step names what failed for the status reason.
type stepError struct {
	step string
	err  error
	exit int // the agent's exit code; 0 means 1
}

func (e *stepError) Error() string { return e.step + ": " + oneLine(e.err.Error()) }

func (x *execution) run() (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	id, err := resolveName(ctx, x.api, "tasks", x.opts.id)
	if err != nil {
		return err
	}
	if x.task, err = getTask(ctx, x.api, id); err != nil {
		return err
	}
	if err := x.claim(ctx); err != nil {
		return err
	}
	x.claimed = true
	// From here on the task is ours: whatever happens, it gets a final status.
	finalized := false
	defer func() {
		if r := recover(); r != nil {
			x.fail(fmt.Sprintf("agent crashed: %v", r))
			fmt.Fprintf(os.Stderr, "%s: internal error: %v\n%s", progName, r, debug.Stack())
			err = &exitError{code: 1, msg: fmt.Sprintf("internal error while running task %s: %v", x.task.ID, r)}
			return
		}
		if !finalized && !x.opts.disableMonitoring {
			x.fail("agent stopped before the task ran")
		}
	}()

	x.tmpDir, err = os.MkdirTemp(tempDirFor(x.cfg), "clearml-agent-task-")
	if err != nil {
		finalized = true
		x.fail("cannot create a temp dir: " + err.Error())
		return err
	}
	defer os.RemoveAll(x.tmpDir)

	if err := x.openLog(ctx); err != nil {
		finalized = true
		x.fail("cannot open the log: " + err.Error())
		return err
	}
	monitorCtx, stopMonitor := context.WithCancel(ctx)
	abort := make(chan string, 1)
	var monitorDone sync.WaitGroup
	if !x.opts.disableMonitoring {
		monitorDone.Add(1)
		go func() { defer monitorDone.Done(); x.monitor(monitorCtx, abort) }()
	}
	defer func() {
		stopMonitor()
		monitorDone.Wait()
		x.closeLog()
		if !x.opts.disableMonitoring && !x.underDaemon {
			x.api.call(withBudget(context.Background(), 30*time.Second), "workers.unregister", "", map[string]any{"worker": x.workerID}, nil)
		}
	}()

	argv, dir, taskEnv, setupErr := x.setup(ctx)
	defer x.removeTaskDir()
	defer x.venv.release()
	if setupErr != nil {
		finalized = true
		fmt.Fprintf(x.log, "\nclearml_agent: ERROR: %s\n", setupErr)
		stopMonitor()
		monitorDone.Wait()
		x.closeLog() // the console is complete before the status says the task ended
		x.fail(setupErr.Error())
		code := 1
		var se *stepError
		if errors.As(setupErr, &se) && se.exit > 0 {
			code = se.exit
		}
		return &exitError{code: code, msg: fmt.Sprintf("task %s failed during setup: %s", x.task.ID, setupErr)}
	}

	if !x.opts.disableMonitoring {
		x.status(ctx, "started", "worker starting task execution", true)
	}
	fmt.Fprintf(x.log, "Starting Task Execution:\n\n")
	proc, err := startTaskProcess(argv, dir, taskEnv, x.log)
	if err != nil {
		finalized = true
		x.fail("cannot start the task process: " + err.Error())
		return &exitError{code: 1, msg: fmt.Sprintf("cannot start %s: %v", argv[0], err)}
	}
	grace := abortGrace(x.cfg)
	var stopReason string
	userAbort := false
	exited := make(chan int, 1)
	go func() { exited <- proc.wait() }()
	var code int
wait:
	for {
		select {
		case code = <-exited:
			break wait
		case stopReason = <-abort:
			fmt.Fprintf(x.log, "\nUser aborted: stopping task (%s)\n", stopReason)
			go proc.stop(grace)
		case s := <-sigs:
			userAbort = true
			fmt.Fprintf(x.log, "\nclearml-agent received %s: stopping the task\n", s)
			go proc.stop(grace)
		}
	}
	finalized = true
	stopMonitor()
	monitorDone.Wait()
	if x.opts.disableMonitoring {
		return exitStatus(code)
	}
	x.finish(code, stopReason, userAbort)
	if userAbort {
		return &exitError{code: 254}
	}
	return exitStatus(code)
}

// removeTaskDir deletes the task's folder once it has ended: one folder
// per task id would otherwise fill the disk of a long-running worker (the
// reference reuses and wipes one folder per Python version). --debug keeps it.
func (x *execution) removeTaskDir() {
	if x.taskDir == "" || x.debug {
		return
	}
	if err := os.RemoveAll(x.taskDir); err != nil {
		fmt.Fprintf(x.stdout, "clearml_agent: Warning: could not remove %s: %v\n", x.taskDir, err)
	}
}

// abortGrace is how long an aborted task may take to exit after SIGTERM
// before SIGKILL (agent.abort_grace_period_sec; the reference has none).
func abortGrace(cfg *agentConfig) time.Duration {
	return time.Duration(cfg.float("agent.abort_grace_period_sec", 10) * float64(time.Second))
}

// exitStatus turns a task exit code into the agent's own.
func exitStatus(code int) error {
	switch {
	case code == 0:
		return nil
	case code < 0: // killed by a signal: the shell's convention
		return &exitError{code: 128 - code}
	}
	return &exitError{code: code}
}

// claim takes the task: clone it, or dequeue it, then mark it started.
func (x *execution) claim(ctx context.Context) error {
	t := x.task
	switch {
	case x.opts.clone:
		var r struct {
			ID string `json:"id"`
		}
		if err := x.api.call(ctx, "tasks.clone", "2.5", map[string]any{"task": t.ID, "new_task_name": "Clone of " + t.Name}, &r); err != nil || r.ID == "" {
			return fmt.Errorf("cloning task %s failed: %v", t.ID, err)
		}
		nt, err := getTask(ctx, x.api, r.ID)
		if err != nil {
			return err
		}
		x.task = nt
	case x.rank > 0:
		// A multi-node run: rank 0 claims the task and owns its status.
		return nil
	default:
		var r struct {
			Updated json.Number `json:"updated"`
		}
		err := x.api.call(ctx, "tasks.dequeue", "", map[string]any{"task": t.ID, "new_status": "in_progress"}, &r)
		n, _ := r.Updated.Int64()
		if x.opts.requireQueue && (err != nil || n < 1) {
			return fmt.Errorf("execution requires a queued task, but task id=%s is not queued (status %s); enqueue it first or drop --require-queue", t.ID, t.Status)
		}
		if err == nil && n >= 1 {
			setStatus(ctx, x.api, "started", t.ID, "starting execution soon", "", true)
		}
	}
	if x.opts.disableMonitoring {
		return nil
	}
	return setStatus(ctx, x.api, "started", x.task.ID, "worker started execution", x.changedBy(), true)
}

// taskRank is this process's rank in a multi-node run (RANK, else
// SLURM_PROCID), 0 when neither is set or readable.
func taskRank(env envLookup) int {
	n, err := strconv.Atoi(firstEnv(env, "RANK", "SLURM_PROCID"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func (x *execution) changedBy() string { return "Changed by clearml-agent " + x.workerID }

// status sets a status, logging a refusal instead of failing.
func (x *execution) status(ctx context.Context, action, reason string, force bool) {
	if x.rank > 0 {
		return
	}
	if err := setStatus(withBudget(ctx, 5*time.Minute), x.api, action, x.task.ID, reason, x.changedBy(), force); err != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not update task id %s status: %v\n", x.task.ID, err)
	}
}

// fail marks the task failed; it must never be left in_progress by us.
func (x *execution) fail(reason string) {
	if x.task == nil || x.opts.disableMonitoring || x.rank > 0 {
		return
	}
	ctx := withBudget(context.Background(), 5*time.Minute)
	if err := setStatus(ctx, x.api, "failed", x.task.ID, reason, x.changedBy(), true); err != nil && x.log != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not mark task %s failed: %v\n", x.task.ID, err)
	}
}

// finish sets the final status from the exit code and stop reason. The
// console is delivered first, so that a task the server shows as ended
// has its whole log.
func (x *execution) finish(code int, stopReason string, userAbort bool) {
	ctx := context.Background()
	var msg, action, reason string
	force := false
	switch {
	case stopReason == "stopped":
		msg, action, reason = "Process aborted by user", "stopped", "task was stopped by tasks.stop"
	case stopReason != "":
		msg = "Process stopped: task " + stopReason
	case userAbort || code == -2 || code == 254:
		msg, action, reason, force = "Process terminated by user", "stopped", "user abort", true
	case code == 0:
		msg, action, reason = "Process completed successfully", "completed", "worker execution done"
	default:
		msg, action, reason = fmt.Sprintf("Process failed, exit code %d", code), "failed", fmt.Sprintf("worker execution exit code %d", code)
	}
	fmt.Fprintln(x.log, msg)
	x.closeLog()
	if action != "" {
		x.status(ctx, action, reason, force)
	}
}

// openLog sets up where output goes: stdout always, the server unless
// monitoring is disabled, and --log-file when given.
func (x *execution) openLog(ctx context.Context) error {
	local := x.stdout
	if x.opts.logFile != "" {
		f, err := os.OpenFile(expandHome(x.opts.logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		local = io.MultiWriter(x.stdout, f)
	}
	x.localLog = local
	if x.opts.disableMonitoring {
		x.log = local
		return nil
	}
	x.shipper = newConsoleShipper(x.api, shipperOptions{
		taskID:        x.task.ID,
		worker:        x.workerID,
		spoolDir:      tempDirFor(x.cfg), // not tmpDir: an undelivered spool must outlive the run
		localCopy:     local,
		suppressCR:    x.cfg.boolean("agent.suppress_carriage_return", true),
		maxBatchBytes: shipperBatchBytes(x.cfg),
		secrets:       x.secrets(),
	})
	x.log = x.shipper
	return nil
}

// closeLog delivers what is left of the console, and sends later output
// (status warnings) to the local copy only. Idempotent.
func (x *execution) closeLog() {
	if x.shipper == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := x.shipper.Close(ctx); err != nil {
		fmt.Fprintf(x.stdout, "clearml_agent: Warning: %v\n", err)
	}
	x.shipper, x.log = nil, x.localLog
}

// secrets are the values never to show in the task log: the configured
// credentials and whatever the task's environment holds under secret names.
func (x *execution) secrets() []string {
	creds := gitCredentialsFrom(x.cfg, x.opts.gitUser, x.opts.gitPass)
	out := []string{x.cfg.str("api.credentials.secret_key"), creds.pass, firstEnv(x.cfg.env, "CLEARML_AUTH_TOKEN"), x.cfg.str("sdk.aws.s3.secret")}
	env := append([]string(nil), os.Environ()...)
	for k, v := range x.configEnvironment() {
		env = append(env, k+"="+v)
	}
	return append(out, secretEnvValues(env)...)
}

// configEnvironment is the config's top-level environment {} section, when
// agent.apply_environment allows it.
func (x *execution) configEnvironment() map[string]string {
	out := map[string]string{}
	if !x.cfg.boolean("agent.apply_environment", true) {
		return out
	}
	if sec, ok := x.cfg.lookup("environment"); ok {
		if o, ok := sec.(*hoconObject); ok {
			for _, k := range o.Keys() {
				if v, _ := o.Get(k); v != nil {
					out[k] = scalarText(v)
				}
			}
		}
	}
	return out
}

// monitor reports the worker and watches for an abort until ctx ends.
func (x *execution) monitor(ctx context.Context, abort chan<- string) {
	// Without a daemon this process is the worker: it reports the machine
	// too, as the reference's resource monitor does.
	var stats *statsSampler
	if !x.underDaemon {
		stats = newStatsSampler(x.cfg, newGPUSet(x.opts.gpus, x.opts.cpuOnly, x.cfg.env))
		go stats.run(ctx)
	}
	report := func() {
		if x.underDaemon {
			return
		}
		body := map[string]any{"worker": x.workerID, "timestamp": time.Now().Unix() * 1000, "task": x.task.ID}
		if ms := stats.snapshot(); ms != nil {
			body["machine_stats"] = ms
		}
		x.api.call(withBudget(ctx, 10*time.Second), "workers.status_report", "", body, nil)
	}
	// agent.task_ping_interval_sec: 0 disables the ping.
	pingEvery := time.Duration(x.cfg.float("agent.task_ping_interval_sec", 60) * float64(time.Second))
	ping := func() {
		if pingEvery > 0 {
			x.api.call(withBudget(ctx, 10*time.Second), "tasks.ping", "2.5", map[string]any{"task": x.task.ID}, nil)
		}
	}
	ping()
	lastPing := time.Now()
	// One report now names the task's worker at once; the next, with the
	// first averaged stats, after 3 s as the reference's; then every 30 s.
	report()
	lastReport := time.Now().Add(statsFirstReport - statusReportEach)
	createdCount := 0
	tick := time.NewTicker(abortPollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastReport) >= statusReportEach {
			report()
			lastReport = time.Now()
		}
		if pingEvery > 0 && time.Since(lastPing) >= pingEvery {
			ping()
			lastPing = time.Now()
		}
		var r struct {
			Tasks []struct {
				Status        string `json:"status"`
				StatusMessage string `json:"status_message"`
			} `json:"tasks"`
		}
		err := x.api.call(withBudget(ctx, 10*time.Second), "tasks.get_all", "2.14", map[string]any{
			"id": []string{x.task.ID}, "only_fields": []string{"status", "status_message"}, "search_hidden": true,
		}, &r)
		if err != nil {
			continue // the server is away: keep running, poll again
		}
		reason := ""
		switch {
		case len(r.Tasks) == 0:
			reason = "not_found"
		case r.Tasks[0].Status == "in_progress" && strings.Contains(r.Tasks[0].StatusMessage, "stopping"):
			reason = "stopped"
		case r.Tasks[0].Status == "created":
			createdCount++
			if createdCount < 5 {
				fmt.Fprintf(x.log, "Warning: Task %s was reset! if state is consistent we shall terminate (%d/4).\n", x.task.ID, createdCount)
				continue
			}
			reason = "reset"
		default:
			createdCount = 0
			switch r.Tasks[0].Status {
			// Not "completed": the task itself may mark it so while it
			// still runs (Task.mark_completed), as the reference allows.
			case "closed", "stopped", "failed", "published", "queued":
				reason = "status_changed"
			}
		}
		if reason != "" {
			if reason != "not_found" && !x.waitAbortCallback(ctx) {
				return // the task ended while its callback ran
			}
			abort <- reason
			return
		}
	}
}

// waitAbortCallback gives the SDK's abort callback (Task.register_abort_callback)
// its time before the task is stopped, as the reference: when the task's
// runtime has _abort_callback_timeout, wait until _abort_callback_completed
// is set or min(timeout + _abort_poll_freq, agent.abort_callback_max_timeout)
// passes. It returns false when ctx ended first (the task exited).
func (x *execution) waitAbortCallback(ctx context.Context) bool {
	runtime := func() (map[string]any, bool) {
		var r struct {
			Tasks []struct {
				Runtime map[string]any `json:"runtime"`
			} `json:"tasks"`
		}
		err := x.api.call(withBudget(ctx, 10*time.Second), "tasks.get_all", "2.14", map[string]any{
			"id": []string{x.task.ID}, "only_fields": []string{"runtime"}, "search_hidden": true,
		}, &r)
		if err != nil || len(r.Tasks) == 0 {
			return nil, false
		}
		return r.Tasks[0].Runtime, true
	}
	num := func(v any) float64 {
		f, err := strconv.ParseFloat(strings.TrimSpace(scalarText(v)), 64)
		if err != nil || f < 0 {
			return 0
		}
		return f
	}
	rt, ok := runtime()
	timeout := num(rt["_abort_callback_timeout"])
	if !ok || timeout <= 0 {
		return true
	}
	freq := num(rt["_abort_poll_freq"])
	limit := min(timeout+freq, x.cfg.float("agent.abort_callback_max_timeout", 1800))
	fmt.Fprintf(x.log, "### Task abort callback timeout set, waiting for max %s sec ###\n", strconv.FormatFloat(limit, 'f', -1, 64))
	every := abortPollEvery
	if freq > 0 {
		every = min(every, time.Duration(freq*float64(time.Second)))
	}
	start := time.Now()
	deadline := start.Add(time.Duration(limit * float64(time.Second)))
	for time.Now().Before(deadline) {
		if rt, ok := runtime(); ok {
			if done, _ := parseBoolText(scalarText(rt["_abort_callback_completed"])); done {
				fmt.Fprintf(x.log, "### Task abort callback completed in %.2f seconds ###\n", time.Since(start).Seconds())
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(every, time.Until(deadline))):
		}
	}
	fmt.Fprintf(x.log, "### Task abort callback timed out after %.0f seconds ###\n", time.Since(start).Seconds())
	return true
}

// setup checks out the code, prepares Python and returns what to run.
func (x *execution) setup(ctx context.Context) (argv []string, dir string, env []string, err error) {
	t := x.task
	fmt.Fprintf(x.log, "Executing task id [%s]:\n", t.ID)
	for _, kv := range [][2]string{
		{"repository", t.Script.Repository}, {"branch", t.Script.Branch}, {"version_num", t.Script.VersionNum},
		{"tag", t.Script.Tag}, {"entry_point", t.Script.EntryPoint}, {"working_dir", t.Script.WorkingDir},
	} {
		fmt.Fprintf(x.log, "%s = %s\n", kv[0], kv[1])
	}
	fmt.Fprintln(x.log)
	applyConfigFiles(x.cfg, x.log)

	taskDir := filepath.Join(x.cfg.str("agent.venvs_dir"), sanitizeDirName(t.ID))
	venvDir := filepath.Join(taskDir, "venv")
	if x.buildDir != "" {
		taskDir, venvDir = x.buildDir, x.buildDir
	}
	if err := os.MkdirAll(taskDir, 0o755); err != nil {
		return nil, "", nil, &stepError{step: "prepare", err: err}
	}
	if x.buildDir == "" {
		x.taskDir = taskDir
	}
	codeDir := filepath.Join(taskDir, "task_repository")
	os.RemoveAll(codeDir)

	src := gitSource{
		repository: t.Script.Repository, branch: t.Script.Branch, commit: t.Script.VersionNum,
		tag: t.Script.Tag, diff: t.Script.Diff, entryPoint: t.Script.EntryPoint, workingDir: t.Script.WorkingDir,
	}
	// The reference's overrides for code that is already in place (an image).
	if v := firstEnv(x.cfg.env, "CLEARML_AGENT_FORCE_EXEC_SCRIPT"); v != "" {
		wd, entry, ok := strings.Cut(v, ":")
		if !ok {
			wd, entry = "", v
		}
		src.workingDir, src.entryPoint = wd, entry
		fmt.Fprintf(x.log, "CLEARML_AGENT_FORCE_EXEC_SCRIPT: working_dir = %s, entry_point = %s\n", wd, entry)
	}
	var res gitResult
	if dir := firstEnv(x.cfg.env, "CLEARML_AGENT_FORCE_CODE_DIR"); dir != "" {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			return nil, "", nil, &stepError{step: "code", err: fmt.Errorf("CLEARML_AGENT_FORCE_CODE_DIR %q is not a folder; point it at the code or unset it", dir)}
		}
		fmt.Fprintf(x.log, "Using the code in %s (CLEARML_AGENT_FORCE_CODE_DIR): no clone, no diff\n", dir)
		res = gitResult{root: dir, src: src}
	} else {
		g := newGitCheckout(x.cfg, gitCredentialsFrom(x.cfg, x.opts.gitUser, x.opts.gitPass), x.log)
		g.offline = x.opts.standalone
		if res, err = g.run(ctx, src, codeDir); err != nil {
			return nil, "", nil, &stepError{step: "failed cloning repository", err: err}
		}
	}
	workDir, entryArgs, err := gitResolveEntry(res.root, res.src, x.cfg.env)
	if err != nil {
		return nil, "", nil, &stepError{step: "entry point", err: err}
	}

	custom, err := x.customBuild(ctx, res.root, src, venvDir)
	if err != nil {
		return nil, "", nil, err
	}
	pyExe := ""
	if custom != nil {
		// The script made the environment: run what it names, as it says.
		workDir, entryArgs, pyExe = custom.WorkingDir, []string{custom.EntryPoint}, custom.Binary
	} else {
		py, err := x.pythonEnv(ctx, res.root, workDir, entryArgs, venvDir)
		if err != nil {
			return nil, "", nil, &stepError{step: "python environment", err: err}
		}
		x.venv, pyExe = py, py.python
		if len(py.frozen) > 0 && !x.build && x.rank == 0 {
			x.writeRequirements(ctx, py.frozen)
		}
	}
	if t.Script.VersionNum == "" && res.commit != "" && !x.build && x.rank == 0 {
		x.api.call(ctx, "tasks.edit", "2.5", map[string]any{"task": t.ID, "script": map[string]any{"version_num": res.commit}, "force": true}, nil)
	}

	if len(entryArgs) > 0 && strings.EqualFold(filepath.Ext(entryArgs[0]), ".ipynb") {
		script, err := notebookToScript(filepath.Join(workDir, entryArgs[0]))
		if err != nil {
			return nil, "", nil, &stepError{step: "notebook", err: err}
		}
		if script != "" {
			fmt.Fprintf(x.log, "Converted the notebook %s to %s\n", entryArgs[0], script)
			py := strings.TrimSuffix(entryArgs[0], filepath.Ext(entryArgs[0])) + ".py"
			entryArgs = append([]string{py}, entryArgs[1:]...)
		}
	}
	argv = x.venv.runArgv(venvPythonArgs(pyExe, int(x.opts.optimization), entryArgs)) // uv run for a uv project
	if shell := taskShell(t.Script.Binary, x.cfg.env); shell != "" {
		argv = append([]string{shell}, entryArgs...)
	}
	if x.cfg.boolean("agent.enable_task_env", false) {
		x.taskVars = x.environmentParams(ctx)
	}
	env, err = x.taskEnv(workDir, entryArgs)
	if err != nil {
		return nil, "", nil, &stepError{step: "environment", err: err}
	}
	fmt.Fprintf(x.log, "\nRunning task id [%s]:\n[%s]$ %s\n\nEnvironment setup completed successfully\n\n", t.ID, workDir, strings.Join(argv, " "))
	return argv, workDir, env, nil
}

// pythonEnv prepares the task's Python: its requirements, or the repo's
// requirements.txt files, in a (cached) venv or a prepared interpreter.
func (x *execution) pythonEnv(ctx context.Context, root, workDir string, entryArgs []string, venvDir string) (*venvResult, error) {
	t := x.task
	reqs, hasReqs := t.requirementLines("pip")
	if x.cfg.boolean("agent.package_manager.force_original_requirements", false) {
		// What the task was created with, not what a previous run froze.
		if org, ok := t.requirementLines("org_pip"); ok {
			reqs, hasReqs = org, true
		}
	}
	spec := venvSpec{binary: t.Script.Binary, requirements: reqs, taskHasRequirements: hasReqs,
		workDir: root, standalone: x.opts.standalone, checkout: root, workingDir: workDir, cpuOnly: x.opts.cpuOnly,
		portable: x.buildDir != ""}
	if !hasReqs || x.cfg.boolean("agent.package_manager.force_repo_requirements_txt", false) {
		spec.requirements, spec.taskHasRequirements = nil, false
		entryDir := workDir
		if len(entryArgs) > 0 && !strings.HasPrefix(entryArgs[0], "-") {
			entryDir = filepath.Dir(filepath.Join(workDir, entryArgs[0]))
		}
		spec.repoRequirementsFiles = findRequirementsTxt(root, entryDir)
	}
	vm := newVenvManager(x.cfg, x.log)
	if creds := gitCredentialsFrom(x.cfg, x.opts.gitUser, x.opts.gitPass); creds.complete() {
		vm.gitAuth = &creds
	}
	if apt := newContainerApt(x.cfg.env, x.log); apt != nil && !x.opts.standalone {
		vm.aptInstall = apt.install
		if x.cfg.boolean("agent.docker_install_opencv_libs", true) && opencvLibsMissing() {
			if err := apt.install(ctx, "the OpenCV system libraries", opencvPackages...); err != nil {
				fmt.Fprintf(x.log, "clearml-agent: warning: %v; going on without them\n", err)
			}
		}
	}
	return vm.prepare(ctx, spec, venvDir)
}

// customBuild runs agent.custom_build_script (CLEARML_AGENT_CUSTOM_BUILD_SCRIPT)
// after the checkout, as the reference: it gets the task and checkout in
// CLEARML_* variables and may write {binary, entry_point, working_dir} to
// $CLEARML_CUSTOM_BUILD_OUTPUT, which then replace the venv and entry point.
// A missing script or unusable output is a warning; a failing script fails
// the task with its exit code. nil means the standard flow.
func (x *execution) customBuild(ctx context.Context, root string, src gitSource, venvDir string) (*customBuildResult, error) {
	script := firstEnv(x.cfg.env, "CLEARML_AGENT_CUSTOM_BUILD_SCRIPT")
	if script == "" {
		script = strings.TrimSpace(x.cfg.str("agent.custom_build_script"))
	}
	if script == "" {
		return nil, nil
	}
	script = expandHomeEnv(script, x.cfg.env)
	fi, err := os.Stat(script)
	if err != nil || fi.IsDir() {
		fmt.Fprintf(x.log, "clearml_agent: Warning: custom build script %s was not found; going on with the standard flow\n", script)
		return nil, nil
	}
	dir, err := os.MkdirTemp(x.tmpDir, "custom-build-")
	if err != nil {
		return nil, &stepError{step: "custom build script", err: err}
	}
	taskJSON := filepath.Join(dir, "task.json")
	data, _ := json.Marshal(x.task)
	if err := os.WriteFile(taskJSON, data, 0o600); err != nil {
		return nil, &stepError{step: "custom build script", err: err}
	}
	output := filepath.Join(dir, "output.json")
	argv := []string{script}
	if fi.Mode()&0o111 == 0 {
		argv = []string{"bash", script}
	}
	fmt.Fprintf(x.log, "Running the custom build script %s\n", script)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CLEARML_CUSTOM_BUILD_TASK_CONFIG_JSON="+taskJSON, "CLEARML_TASK_SCRIPT_ENTRY="+src.entryPoint,
		"CLEARML_TASK_WORKING_DIR="+src.workingDir, "CLEARML_VENV_PATH="+venvDir, "CLEARML_GIT_ROOT="+root, "CLEARML_CUSTOM_BUILD_OUTPUT="+output)
	cmd.Stdout, cmd.Stderr = x.log, x.log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		code := 1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
		return nil, &stepError{step: "custom build script", err: fmt.Errorf("%s failed: %v", script, err), exit: code}
	}
	raw, err := os.ReadFile(output)
	if err != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: the custom build script wrote no %s; going on with the standard flow\n", "$CLEARML_CUSTOM_BUILD_OUTPUT")
		return nil, nil
	}
	var r customBuildResult
	if err := json.Unmarshal(raw, &r); err != nil || r.Binary == "" || r.EntryPoint == "" || r.WorkingDir == "" {
		fmt.Fprintf(x.log, "clearml_agent: Warning: the custom build script's output is not {\"binary\", \"entry_point\", \"working_dir\"} (%v); going on with the standard flow\n", err)
		return nil, nil
	}
	fmt.Fprintf(x.log, "Custom build: binary %s, entry point %s, working dir %s\n", r.Binary, r.EntryPoint, r.WorkingDir)
	return &r, nil
}

// customBuildResult is what a custom build script may write.
type customBuildResult struct {
	Binary     string `json:"binary"`
	EntryPoint string `json:"entry_point"`
	WorkingDir string `json:"working_dir"`
}

// writeRequirements stores the installed packages on the task, keeping
// the original lists once in org_pip/org_conda, as the reference does.
func (x *execution) writeRequirements(ctx context.Context, frozen []string) {
	body := venvSetRequirementsBody(x.task.ID, x.task.Script.Requirements, frozen)
	if err := x.api.call(ctx, "tasks.set_requirements", "2.5", body, nil); err != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not store the installed packages: %v\n", err)
	}
}

// environmentParams reads the task's hyper-parameters of section
// "Environment", which agent.enable_task_env exports to the task as
// variables. A failure is a warning: the task runs without them.
func (x *execution) environmentParams(ctx context.Context) map[string]string {
	var r struct {
		Params []struct {
			Hyperparams []struct {
				Section string `json:"section"`
				Name    string `json:"name"`
				Value   any    `json:"value"`
			} `json:"hyperparams"`
		} `json:"params"`
	}
	if err := x.api.call(withBudget(ctx, time.Minute), "tasks.get_hyper_params", "2.9", map[string]any{"tasks": []string{x.task.ID}}, &r); err != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not read the task's Environment parameters: %v\n", err)
		return nil
	}
	out := map[string]string{}
	for _, p := range r.Params {
		for _, h := range p.Hyperparams {
			if h.Section == "Environment" && h.Name != "" && !strings.ContainsAny(h.Name, "=\x00") {
				out[h.Name] = scalarText(h.Value)
			}
		}
	}
	return out
}

// findRequirementsTxt lists the requirements.txt files from the repo root
// down to the entry point's folder, root first, as the reference installs
// them (a folder outside the repo adds only the root's).
func findRequirementsTxt(codeDir, entryDir string) []string {
	dirs := []string{codeDir}
	if rel, err := filepath.Rel(codeDir, entryDir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		d := codeDir
		for _, part := range strings.Split(rel, string(filepath.Separator)) {
			d = filepath.Join(d, part)
			dirs = append(dirs, d)
		}
	}
	var out []string
	for _, d := range dirs {
		if p := filepath.Join(d, "requirements.txt"); fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

// taskEnv is the environment of the task process (agent-execute.md §5).
func (x *execution) taskEnv(workDir string, entryArgs []string) ([]string, error) {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range x.configEnvironment() {
		env[k] = v
	}
	for k, v := range x.taskVars {
		env[k] = v
	}
	confPath := filepath.Join(x.tmpDir, "clearml.conf")
	if err := writePrivateConfig(x.cfg, confPath, x.api.accessKey == ""); err != nil {
		return nil, err
	}
	env["CLEARML_TASK_ID"] = x.task.ID
	env["CLEARML_LOG_LEVEL"] = x.opts.logLevel.val
	env["CLEARML_LOG_TASK_TO_BACKEND"] = "0"
	env["CLEARML_CONFIG_FILE"] = confPath
	env["CLEARML_WORKER_ID"] = x.workerID
	env["CLEARML_API_HOST"] = x.api.host
	if ws := x.cfg.str("api.web_server"); ws != "" {
		env["CLEARML_WEB_HOST"] = ws
	}
	if fs := x.cfg.str("api.files_server"); fs != "" {
		env["CLEARML_FILES_HOST"] = fs
	}
	if x.api.accessKey != "" {
		env["CLEARML_API_ACCESS_KEY"] = x.api.accessKey
		env["CLEARML_API_SECRET_KEY"] = x.api.secretKey
	} else {
		// A token (e.g. the owner's, --use-owner-token): the task gets it,
		// and no key of the agent's.
		for _, k := range []string{"CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "TRAINS_API_ACCESS_KEY", "TRAINS_API_SECRET_KEY"} {
			delete(env, k)
		}
		x.api.mu.Lock()
		env["CLEARML_AUTH_TOKEN"] = x.api.token
		x.api.mu.Unlock()
	}
	gpuEnv(env, x.opts.gpus, x.opts.cpuOnly)
	if x.venv != nil && x.venv.dir != "" {
		// As if activated: subprocesses that call python or pip get the venv.
		env["VIRTUAL_ENV"] = x.venv.dir
		env["PATH"] = filepath.Join(x.venv.dir, "bin") + string(os.PathListSeparator) + env["PATH"]
	}
	pyPath := []string{}
	if old := env["PYTHONPATH"]; old != "" {
		pyPath = append(pyPath, old)
	}
	pyPath = append(pyPath, workDir)
	if len(entryArgs) > 0 && !strings.HasPrefix(entryArgs[0], "-") {
		if d := filepath.Dir(filepath.Join(workDir, entryArgs[0])); d != workDir {
			pyPath = append(pyPath, d)
		}
	}
	if extra := env["CLEARML_AGENT_EXTRA_PYTHON_PATH"]; extra != "" {
		pyPath = append(pyPath, extra)
	}
	env["PYTHONPATH"] = strings.Join(pyPath, string(os.PathListSeparator))
	// Legacy SDKs read TRAINS_* names.
	for k, v := range env {
		if rest, ok := strings.CutPrefix(k, "CLEARML_"); ok {
			if _, has := env["TRAINS_"+rest]; !has || k == "CLEARML_TASK_ID" || k == "CLEARML_CONFIG_FILE" {
				env["TRAINS_"+rest] = v
			}
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// taskShell is the shell a bash/sh/zsh task runs with ("" for python):
// $SHELL, else /bin/bash, as the reference does.
func taskShell(binary string, env envLookup) string {
	switch filepath.Base(strings.TrimSpace(binary)) {
	case "bash", "sh", "zsh":
		if sh := firstEnv(env, "SHELL"); sh != "" {
			return sh
		}
		return "/bin/bash"
	}
	return ""
}

// writePrivateConfig writes the effective configuration, credentials
// included, as a 0600 JSON file (JSON is HOCON) for the SDK in the task.
func writePrivateConfig(cfg *agentConfig, path string, stripCredentials bool) error {
	plain := hoconToPlain(cfg.root).(map[string]any)
	if api, ok := plain["api"].(map[string]any); ok && stripCredentials {
		delete(api, "credentials")
	}
	data, err := json.MarshalIndent(plain, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// hoconToPlain converts parsed HOCON into maps and slices for encoding/json.
func hoconToPlain(v any) any {
	switch x := v.(type) {
	case *hoconObject:
		m := make(map[string]any, len(x.Keys()))
		for _, k := range x.Keys() {
			child, _ := x.Get(k)
			m[k] = hoconToPlain(child)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = hoconToPlain(e)
		}
		return out
	}
	return v
}

// workerIDFor is agent.worker_id (under a daemon: the daemon's, through
// CLEARML_WORKER_ID), else "<worker_name>:<pid>" as the reference: a
// standalone execute must not report or unregister as a daemon's worker.
func workerIDFor(cfg *agentConfig) string {
	if id := cfg.str("agent.worker_id"); id != "" {
		return id
	}
	return cfg.str("agent.worker_name") + ":" + strconv.Itoa(os.Getpid())
}

func sanitizeDirName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == '.' && s == ".." {
			return '_'
		}
		return r
	}, s)
}

func tempDirFor(cfg *agentConfig) string {
	if d := firstEnv(cfg.env, "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"); d != "" {
		return d
	}
	return os.TempDir()
}

// notebookToScript writes the code cells of a Jupyter notebook to a .py
// beside it and returns its path, as the reference does with nbconvert, but
// without needing nbconvert or IPython in the task's environment: IPython
// magics and shell escapes (%, %%, !) cannot run in plain Python and are
// left as comments. A file that is not notebook JSON (a script saved under
// the .ipynb name) gives "": it runs as it is.
func notebookToScript(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the notebook: %v", err)
	}
	var nb struct {
		Cells []struct {
			CellType string          `json:"cell_type"`
			Source   json.RawMessage `json:"source"`
		} `json:"cells"`
		NBFormat int `json:"nbformat"`
	}
	if json.Unmarshal(data, &nb) != nil || nb.NBFormat == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("#!/usr/bin/env python\n# coding: utf-8\n# Converted from " + filepath.Base(path) + " by clearml-agent\n")
	for i, c := range nb.Cells {
		if c.CellType != "code" {
			continue
		}
		// nbformat 4 stores source as a list of lines or as one string.
		var text string
		var lines []string
		if json.Unmarshal(c.Source, &lines) == nil {
			text = strings.Join(lines, "")
		} else if json.Unmarshal(c.Source, &text) != nil {
			return "", fmt.Errorf("cell %d of %s has unreadable source", i, filepath.Base(path))
		}
		fmt.Fprintf(&b, "\n\n# In[%d]:\n\n", i+1)
		cellMagic := strings.HasPrefix(strings.TrimSpace(text), "%%")
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			t := strings.TrimSpace(l)
			if cellMagic || strings.HasPrefix(t, "%") || strings.HasPrefix(t, "!") {
				b.WriteString("# (IPython only, not run) " + l + "\n")
				continue
			}
			b.WriteString(l + "\n")
		}
	}
	out := strings.TrimSuffix(path, filepath.Ext(path)) + ".py"
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("writing the converted notebook beside it (%v); the notebook's folder must be writable", err)
	}
	return out, nil
}
