package main

// execute: the lifecycle of one task run. It claims the task, ships the
// console, monitors the task for an abort, supervises the process (a venv
// run, or the docker client of `execute --docker`) and sets the final
// status. What to launch comes from prepare.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// executeCmd runs one task.
type executeCmd struct{ taskOptions }

func (e *executeCmd) flags(t *flagTable) { e.taskOptions.register(t) }

func (e *executeCmd) run(cx *cmdContext) error {
	defer startChildMetrics()() // under a daemon with metrics: counters for it at exit
	if err := dockerEngineFlags(&e.docker, &e.podman); err != nil {
		return err
	}
	if e.docker.set {
		noGPU, err := dockerCheckGPUs(e.workerFlags, cx.stdout)
		if err != nil {
			return err
		}
		e.cpuOnly = e.cpuOnly || noGPU
	}
	cfg, c, workerID, err := cx.connect(clientOptions{interactive: true}, true)
	if err != nil {
		return err
	}
	statusReportEach = reportFrequency(cfg.env, statusReportEach)
	// The stop protocol (stop.go): from here on a signal stops the run
	// with a final status instead of killing the agent.
	sigs := make(chan os.Signal, 4)
	notifyStopSignals(sigs)
	defer signal.Stop(sigs)
	stop := watchStopSignals(sigs, os.Getppid())
	defer stop.close()
	if e.docker.set {
		return e.taskExit(cx, cfg, e.runDocker(cx, cfg, c, workerID, stop), func() bool { return true })
	}
	x := &execution{opts: &e.taskOptions, cfg: cfg, api: c, status: statusWriter{c, workerID}, workerID: workerID,
		stdout: cx.stdout, debug: cx.global.debug, rank: taskRank(cfg.env), stop: stop, budget: 5 * time.Minute}
	// Under a daemon, the daemon reports the worker (with its queue): the
	// child only pings its task and watches for an abort.
	x.underDaemon, _ = parseBoolText(firstEnv(cfg.env, daemonChildEnv))
	if !e.fullMonitoring {
		return x.run()
	}
	return e.taskExit(cx, cfg, x.run(), func() bool { return x.claimed })
}

// taskExit is the exit of `execute --docker` and `--full-monitoring` (how
// Kubernetes glue runs tasks): as in the reference, 0 once the task has its
// final status, however the task ended, so a Job does not run it again;
// CLEARML_AGENT_PROPAGATE_EXITCODE=1 returns the task's code instead.
func (e *executeCmd) taskExit(cx *cmdContext, cfg *agentConfig, err error, taskEnded func() bool) error {
	var ee *exitError
	if err == nil || !errors.As(err, &ee) || ee.code == 254 || !taskEnded() {
		return err
	}
	if on, _ := parseBoolText(firstEnv(cfg.env, "CLEARML_AGENT_PROPAGATE_EXITCODE")); on {
		return err
	}
	if ee.msg != "" {
		fmt.Fprintf(cx.stderr, "%s: %s (exit 0: set CLEARML_AGENT_PROPAGATE_EXITCODE=1 for the task's exit code)\n", progName, ee.msg)
	}
	return nil
}

// execution is one run of execute.
type execution struct {
	opts        *taskOptions
	underDaemon bool
	cfg         *agentConfig
	api         *apiClient
	status      statusWriter
	workerID    string
	stdout      io.Writer
	debug       bool
	rank        int // RANK / SLURM_PROCID: only rank 0 writes the task's status and packages
	stop        *stopRequest
	budget      time.Duration // for the final status and console: short when the agent shuts down

	task     *taskDoc
	log      io.Writer // setup and task output: stdout, the server, --log-file
	shipper  *consoleShipper
	localLog io.Writer // stdout (and --log-file): the log once the server's part is closed
	claimed  bool      // the task is ours: it gets a final status whatever happens

	abortCmd *abortCommand // CLEARML_AGENT_ABORT_CALLBACK_CMD
}

func (x *execution) run() (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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

	tmpDir, err := os.MkdirTemp(tempDirFor(x.cfg), "clearml-agent-task-")
	if err != nil {
		finalized = true
		x.fail("cannot create a temp dir: " + err.Error())
		return err
	}
	defer os.RemoveAll(tmpDir)

	if err := x.openLog(); err != nil {
		finalized = true
		x.fail("cannot open the log: " + err.Error())
		return err
	}
	x.preamble()
	abort, stopMonitor := x.startMonitor(ctx)
	defer func() {
		// The monitor's last report has returned before the unregister: a
		// report after it would register the worker again.
		stopMonitor()
		x.closeLog()
		if !x.opts.disableMonitoring && !x.underDaemon {
			x.api.call(withBudget(context.Background(), min(x.budget, 30*time.Second)), "workers.unregister", "", map[string]any{"worker": x.workerID}, nil)
		}
	}()

	p := &preparer{opts: x.opts, cfg: x.cfg, api: x.api, workerID: x.workerID, task: x.task, log: x.log, tmpDir: tmpDir, rank: x.rank}
	setupCtx, cancelSetup := context.WithCancel(ctx)
	defer cancelSetup()
	go func() {
		select {
		case <-x.stop.requested():
			cancelSetup() // a stop during setup ends git, pip and the rest now
		case <-setupCtx.Done():
		}
	}()
	argv, dir, taskEnv, runAs, setupErr := x.prepareAs(setupCtx, p)
	defer p.removeTaskDir(x.debug, x.stdout)
	defer p.venv.release()
	finalized = true
	if cause, sig := x.stop.get(); cause != stopNone {
		// Stopped before the task started: that, not the setup, is what ended it.
		fmt.Fprintf(x.log, "\n%s: the task's setup was stopped\n", cause.logLine(sig))
		stopMonitor()
		if !x.opts.disableMonitoring {
			x.finish(-1, "", cause)
		}
		return cause.exit()
	}
	if setupErr != nil {
		return x.setupFailed(setupErr, stopMonitor)
	}
	return x.runTask(argv, dir, taskEnv, runAs, stopMonitor, abort, p.task.Script.Binary)
}

// runTask starts the prepared task, supervises it and sets its final status.
func (x *execution) runTask(argv []string, dir string, taskEnv []string, runAs *execUser, stopMonitor func(), abort <-chan string, binary string) error {
	if !x.opts.disableMonitoring {
		x.setStatus(context.Background(), "started", "worker starting task execution", true)
	}
	x.abortCmd.register(context.Background(), x.api, x.task.ID, dir, taskEnv, x.log)
	fmt.Fprintf(x.log, "Starting Task Execution:\n\n")
	proc, err := startTaskProcess(argv, dir, taskEnv, x.log, runAs.credential()...)
	if err != nil {
		x.fail("cannot start the task process: " + err.Error())
		return &exitError{code: 1, msg: fmt.Sprintf("cannot start %s: %v", argv[0], err)}
	}
	grace := abortGrace(x.cfg)
	python := taskShell(binary, x.cfg.env) == ""
	code, stopReason, cause := supervise(proc, abort, x.stop, x.log, "the task", func(c stopCause) {
		if python {
			proc.stopPython(c.taskGrace(grace))
		} else {
			proc.stop(c.taskGrace(grace))
		}
	})
	stopMonitor()
	if x.opts.disableMonitoring {
		return exitStatus(code)
	}
	x.finish(code, stopReason, cause)
	if stopReason == "" && cause != stopNone {
		return cause.exit()
	}
	return exitStatus(code)
}

// setupFailed ends a run whose preparation failed: the console is complete
// before the status says the task ended.
func (x *execution) setupFailed(setupErr error, stopMonitor func()) error {
	fmt.Fprintf(x.log, "\nclearml_agent: ERROR: %s\n", setupErr)
	stopMonitor()
	x.closeLog()
	x.fail(setupErr.Error())
	code := 1
	var se *stepError
	if errors.As(setupErr, &se) && se.exit > 0 {
		code = se.exit
	}
	return &exitError{code: code, msg: fmt.Sprintf("task %s failed during setup: %s", x.task.ID, setupErr)}
}

// supervise waits for a task's process (the task, or the docker client
// running it). An abort from the monitor or a stop request (a signal to
// the agent) stops it with stop; what names it in the log.
func supervise(proc *taskProcess, abort <-chan string, req *stopRequest, log io.Writer, what string, stop func(stopCause)) (code int, stopReason string, cause stopCause) {
	exited := make(chan int, 1)
	go func() { exited <- proc.wait() }()
	stopping := req.requested()
	for {
		select {
		case code = <-exited:
			return code, stopReason, cause
		case stopReason = <-abort:
			abort = nil
			fmt.Fprintf(log, "\nUser aborted: stopping task (%s)\n", stopReason)
			go stop(stopNone)
		case <-stopping:
			stopping = nil
			var sig os.Signal
			cause, sig = req.get()
			fmt.Fprintf(log, "\n%s: stopping %s\n", cause.logLine(sig), what)
			go stop(cause)
		}
	}
}

// runDocker is `execute --docker`: the task runs in a container where
// this binary runs `execute`, which claims the task, runs it and sets its
// status. Here we only watch: a stop signal is passed on to the agent in
// the container (docker kill --signal), which stops the task and sets its
// status; a container that ends without a final status fails the task.
func (e *executeCmd) runDocker(cx *cmdContext, cfg *agentConfig, c *apiClient, workerID string, req *stopRequest) error {
	ctx := context.Background()
	task, err := findTask(ctx, c, e.id)
	if err != nil {
		return err
	}
	if !e.clone {
		if err := mayRun(task, workerID, e.force); err != nil {
			return err
		}
	}
	o := dockerRunOptions{task: e.taskOptions, workerID: workerID, debug: cx.global.debug, api: c, queueID: task.Execution.Queue}
	run, err := dockerTaskArgv(cfg, task, o)
	if err != nil {
		// Nothing started: the task fails with the reason in its log.
		dockerTaskLog(c, task.ID, workerID, cx.stdout, "clearml_agent: ERROR: "+err.Error())
		if !e.clone && !e.disableMonitoring {
			(statusWriter{c, workerID}).settleUnfinished(withBudget(ctx, time.Minute), task.ID, false, stopNone, oneLine(err.Error()))
		}
		return err
	}
	defer run.cleanup()
	img, name, out := run.img, run.name, cx.stdout
	def := ""
	if img.isDefault {
		def = "default "
	}
	fmt.Fprintf(out, "Running Task %s inside %sdocker: %s arguments: %s\n", task.ID, def, img.image, dockerPythonList(dockerMaskArgs(img.args, dockerHiddenNames(cfg), dockerEmbeddedURLs(cfg), nil)))
	if s := strings.TrimSpace(img.setupScript); s != "" {
		fmt.Fprintf(out, "custom_setup_bash_script:\n%s\n", s)
	}
	run.announce(c, task.ID, workerID, out)
	if cfg.boolean("agent.docker_force_pull", false) {
		dockerPull(ctx, run.engine, img.image, out)
	}
	fmt.Fprintf(out, "Executing: %s\n", dockerLoggedCommand(cfg, run.argv))
	proc, err := startTaskProcess(run.argv, "", run.environ(os.Environ()), out)
	if err != nil {
		return fmt.Errorf("cannot run %s: %w", run.engine, err)
	}
	grace := abortGrace(cfg)
	code, _, cause := supervise(proc, nil, req, out, "container "+name, func(c stopCause) {
		dockerStopTask(run.engine, name, c, c.taskGrace(grace)+shutdownFlushBudget+time.Second, proc.done)
	})
	if !o.debug && !run.keep {
		dockerRemove(context.Background(), run.engine, name)
	}
	if !e.clone && !e.disableMonitoring {
		// The execute inside claims the task: queued or created, it never ran.
		reason := fmt.Sprintf("docker container exited with code %d before the task had a final status", code)
		if action, _ := (statusWriter{c, workerID}).settleUnfinished(withBudget(ctx, time.Minute), task.ID, false, cause, reason); action == "failed" {
			fmt.Fprintf(out, "clearml_agent: ERROR: %s\n", reason)
		}
	}
	if cause != stopNone {
		return cause.exit()
	}
	return exitStatus(code)
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

// taskRank is this process's rank in a multi-node run (RANK, else
// SLURM_PROCID), 0 when neither is set or readable.
func taskRank(env envLookup) int {
	n, err := strconv.Atoi(firstEnv(env, "RANK", "SLURM_PROCID"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// claim takes the task: clone it, or dequeue it, then mark it started.
func (x *execution) claim(ctx context.Context) error {
	t, err := findTask(ctx, x.api, x.opts.id)
	if err != nil {
		return err
	}
	x.task = t
	switch {
	case x.opts.clone:
		cloneID, err := cloneTask(ctx, x.api, t)
		if err != nil {
			return err
		}
		if x.task, err = getTask(ctx, x.api, cloneID); err != nil {
			return err
		}
	case x.rank > 0:
		// A multi-node run: rank 0 claims the task and owns its status.
		return nil
	default:
		if err := mayRun(t, x.workerID, x.opts.force); err != nil {
			return err
		}
		n, err := x.status.dequeue(ctx, t.ID)
		if x.opts.requireQueue && (err != nil || n < 1) {
			return fmt.Errorf("execution requires a queued task, but task id=%s is not queued (status %s); enqueue it first or drop --require-queue", t.ID, t.Status)
		}
	}
	if x.opts.disableMonitoring {
		return nil
	}
	return x.status.started(ctx, x.task.ID)
}

// mayRun refuses to run a task that another worker is running (both runs
// would fight over its status and console), or one that has ended with
// results (completed, published) that a rerun would overwrite, unless
// force. A daemon's children always have force: the queue gave them the task.
func mayRun(t *taskDoc, workerID string, force bool) error {
	if force {
		return nil
	}
	last := "no worker has reported running it"
	if t.LastWorker != "" {
		last = "worker " + t.LastWorker
		if at, err := time.Parse(time.RFC3339Nano, t.LastUpdate); err == nil && time.Since(at) >= 0 {
			last += fmt.Sprintf(", last update %s ago", time.Since(at).Round(time.Second))
		}
	}
	switch {
	case t.Status == "in_progress" && t.LastWorker != workerID:
		return &exitError{code: 1, msg: fmt.Sprintf("task %s is in_progress (%s): a second run would fight the first over its status and console; stop it first, or pass --force to run it anyway", t.ID, last)}
	case t.Status == "completed" || t.Status == "published":
		return &exitError{code: 1, msg: fmt.Sprintf("task %s is %s (%s): running it again would overwrite its results; run a copy with --clone, or pass --force to run it anyway", t.ID, t.Status, last)}
	}
	return nil
}

// setStatus sets a status, logging a refusal instead of failing.
func (x *execution) setStatus(ctx context.Context, action, reason string, force bool) {
	if x.rank > 0 {
		return
	}
	if err := x.status.set(withBudget(ctx, x.budget), action, x.task.ID, reason, force); err != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not update task id %s status: %v\n", x.task.ID, err)
	}
}

// fail marks the task failed; it must never be left in_progress by us.
func (x *execution) fail(reason string) {
	if x.task == nil || x.opts.disableMonitoring || x.rank > 0 {
		return
	}
	ctx := withBudget(context.Background(), x.budget)
	noteTaskResult(taskFailed)
	if err := x.status.set(ctx, "failed", x.task.ID, reason, true); err != nil && x.log != nil {
		fmt.Fprintf(x.log, "clearml_agent: Warning: could not mark task %s failed: %v\n", x.task.ID, err)
	}
}

// finish sets the final status from the exit code and stop reason. The
// console is delivered first, so that a task the server shows as ended
// has its whole log.
func (x *execution) finish(code int, stopReason string, cause stopCause) {
	msg, action, reason, force := finalStatus(code, stopReason, cause)
	if cause == stopShutdown {
		// The agent's supervisor (docker stop, Kubernetes, systemd, the
		// daemon) gives it seconds, not minutes.
		x.budget = shutdownFlushBudget
	}
	if stopReason == "" && (cause != stopNone || code < 0) {
		// In a SLURM job, scancel, the time limit or a preemption is no user abort.
		if why := slurmTermReason(x.cfg.env); why != "" {
			msg, action, reason, force = terminatedStatus(why)
		}
	}
	fmt.Fprintln(x.log, msg)
	x.closeLog()
	noteTaskResult(action)
	if action != "" {
		x.setStatus(context.Background(), action, reason, force)
	}
}

// openLog sets up where output goes: stdout always, the server unless
// monitoring is disabled, and --log-file when given.
func (x *execution) openLog() error {
	local := x.stdout
	if x.opts.logFile != "" {
		f, err := os.OpenFile(expandHome(x.opts.logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		local = io.MultiWriter(x.stdout, f)
	}
	x.localLog = local
	prefix, ship := multiNodeConsole(x.cfg.env, x.rank)
	if x.opts.disableMonitoring || !ship {
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
	if prefix != "" {
		x.log = &linePrefixer{w: x.shipper, prefix: []byte(prefix)}
	}
	return nil
}

// closeLog delivers what is left of the console, and sends later output
// (status warnings) to the local copy only. Idempotent.
func (x *execution) closeLog() {
	if x.shipper == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), x.budget)
	defer cancel()
	// A signal during the final flush ends the wait: the lines left stay in
	// the spool file (a signal that stopped the task was taken already).
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
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
	for k, v := range configEnvironment(x.cfg) {
		env = append(env, k+"="+v)
	}
	return append(out, secretEnvValues(env)...)
}

// Timings of the run phase. Variables so tests can shorten them.
var (
	reportBudget     = 5 * time.Second // a status report's retries: a stop waits for one in flight
	abortPollEvery   = 2 * time.Second
	statusReportEach = 30 * time.Second
	statsFirstReport = 3 * time.Second
)

// startMonitor starts the monitor (unless monitoring is disabled); the
// channel says why the task must stop, and stop ends the monitor and waits
// for it (idempotent).
func (x *execution) startMonitor(ctx context.Context) (<-chan string, func()) {
	monitorCtx, cancel := context.WithCancel(ctx)
	abort := make(chan string, 1)
	var done sync.WaitGroup
	if !x.opts.disableMonitoring {
		done.Add(1)
		go func() { defer done.Done(); x.monitor(monitorCtx, abort) }()
	}
	return abort, func() { cancel(); done.Wait() }
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
		// Not cancelled with ctx: stopping the monitor waits for a report in
		// flight, so that none reaches the server after the unregister.
		x.api.call(withBudget(context.WithoutCancel(ctx), reportBudget), "workers.status_report", "", body, nil)
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
	// Reports may come more often than abort polls (CLEARML_AGENT_STATUS_REPORT_FREQ_SEC).
	tick := time.NewTicker(min(abortPollEvery, statusReportEach))
	defer tick.Stop()
	lastPoll := time.Now()
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
		if time.Since(lastPoll) < abortPollEvery-abortPollEvery/10 {
			continue
		}
		lastPoll = time.Now()
		if reason := x.abortReason(ctx, &createdCount); reason != "" {
			if reason != "not_found" && !x.waitAbortCallback(ctx) {
				return // the task ended while its callback ran
			}
			abort <- reason
			return
		}
	}
}

// abortReason reads the task's status and says why the task must stop
// ("" to go on). A reset must be seen five times in a row (createdCount).
func (x *execution) abortReason(ctx context.Context, createdCount *int) string {
	var r struct {
		Tasks []struct {
			Status        string `json:"status"`
			StatusMessage string `json:"status_message"`
		} `json:"tasks"`
	}
	err := x.api.call(withBudget(ctx, 10*time.Second), "tasks.get_all", "2.14", map[string]any{
		"id": []string{x.task.ID}, "only_fields": []string{"status", "status_message"}, "search_hidden": true,
	}, &r)
	switch {
	case err != nil:
		return "" // the server is away: keep running, poll again
	case len(r.Tasks) == 0:
		return "not_found"
	case r.Tasks[0].Status == "in_progress" && strings.Contains(r.Tasks[0].StatusMessage, "stopping"):
		return "stopped"
	case r.Tasks[0].Status == "queued" && x.rank > 0:
		return "" // rank 0 has not claimed it yet
	case r.Tasks[0].Status == "created":
		if *createdCount++; *createdCount < 5 {
			fmt.Fprintf(x.log, "Warning: Task %s was reset! if state is consistent we shall terminate (%d/4).\n", x.task.ID, *createdCount)
			return ""
		}
		return "reset"
	}
	*createdCount = 0
	switch r.Tasks[0].Status {
	// Not "completed": the task itself may mark it so while it still runs
	// (Task.mark_completed), as the reference allows.
	case "closed", "stopped", "failed", "published", "queued":
		return "status_changed"
	}
	return ""
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
	x.abortCmd.launch(x.api, x.task.ID, x.log)
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
