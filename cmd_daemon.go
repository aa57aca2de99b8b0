package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonCmd serves queues as a registered worker.
type daemonCmd struct {
	workerFlags
	pollingInterval     intFlag
	foreground          bool
	docker              listFlag
	forceCurrentVersion bool
	queues              listFlag
	orderFairness       bool
	standalone          bool
	servicesMode        optIntFlag
	childReportTags     listFlag
	createQueue         bool
	detached            bool
	stop                listFlag
	dynamicGPUs         bool
	uptime              listFlag
	downtime            listFlag
	status              bool
	useOwnerToken       bool
	drain               bool
	podman              listFlag // --podman: docker mode with the podman CLI
	noGPUHost           bool     // docker mode on a host without a GPU: containers without GPU flags
	checkBootstrap      bool
	metricsAddress      string // --metrics-address

	pool     []string       // --dynamic-gpus: the GPUs to hand out (--gpus)
	gpuSpecs []gpuQueueSpec // --dynamic-gpus: what each queue's task takes
}

func (d *daemonCmd) flags(t *flagTable) {
	d.childReportTags.min = 1
	d.servicesMode.bare = -1
	registerForeground(t, &d.foreground)
	registerQueues(t, &d.queues)
	registerOrderFairness(t, &d.orderFairness)
	registerStandalone(t, &d.standalone)
	t.add(&d.servicesMode, "services-mode", "", "SERVICES_MODE", "Run several long-lived tasks at once, at most SERVICES_MODE (unlimited without a number)")
	t.add(&d.childReportTags, "child-report-tags", "", "CHILD_REPORT_TAGS", "Tags sent with the status reports of the worker running a task")
	registerCreateQueue(t, &d.createQueue)
	registerDetached(t, &d.detached)
	registerStop(t, &d.stop)
	t.boolVar(&d.drain, "drain", "", "With --stop: let the running tasks finish first and take no new one (SIGQUIT; bounded by agent.shutdown_grace_sec when set)")
	t.boolVar(&d.dynamicGPUs, "dynamic-gpus", "", "Allocate GPUs per task from the queue's need: --queue name=N")
	registerSchedule(t, &d.uptime, &d.downtime)
	registerStatus(t, &d.status)
	t.boolVar(&d.checkBootstrap, "check-bootstrap", "", "Accepted for compatibility: this agent needs no clearml-agent-bootstrap package")
	registerUseOwnerToken(t, &d.useOwnerToken)
	registerPollingInterval(t, &d.pollingInterval)
	registerMetricsAddress(t, &d.metricsAddress)
	d.workerFlags.register(t)
	registerDocker(t, &d.docker)
	registerPodman(t, &d.podman)
	t.boolVar(&d.forceCurrentVersion, "force-current-version", "", "Use this agent's version inside Docker (always true: the running binary is mounted)")
}

func (d *daemonCmd) run(cx *cmdContext) error {
	if err := d.gpuPool(); err != nil {
		return err
	}
	cfg, err := loadConfig(cx.global.configFile, nil)
	if err != nil {
		return err
	}
	if err := dockerEngineFlags(&d.docker, &d.podman); err != nil {
		return err
	}
	if d.docker.set && !d.stop.set && !d.status {
		// Else every task pulled would fail to start: refuse now, as the reference.
		engine := (taskOptions{podman: d.podman}).engine()
		if _, err := exec.LookPath(engine); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("--%s: the %s command is not on PATH; install it (or its CLI), or run the daemon without --%s", engine, engine, engine)}
		}
		if d.noGPUHost, err = dockerCheckGPUs(d.workerFlags, cx.stdout); err != nil {
			return err
		}
	}
	uptime, err := daemonSchedule(d.uptime.vals, d.downtime.vals, cfg, cx.stderr)
	if err != nil {
		return err
	}
	gpus, cpuOnly := d.devices()
	ident := newWorkerIdentity(cfg.str("agent.worker_id"), cfg.str("agent.worker_name"), workerIDDevices(gpus, cpuOnly, cfg.env), d.dynamicGPUs)
	reg, err := openInstanceRegistry(cfg.env)
	if err != nil {
		return err
	}
	if d.drain && !d.stop.set {
		return usagef("--drain goes with --stop: clearml-agent daemon --stop --drain [WORKER_ID ...]")
	}
	if d.stop.set {
		sig, timeout := unix.SIGTERM, defaultStopTimeout
		if d.drain {
			// Unbounded without agent.shutdown_grace_sec: the tasks decide.
			sig, timeout = sigDrain, 0
			if grace := shutdownGrace(cfg); grace > 0 {
				timeout = grace + defaultStopTimeout
			}
		}
		found, err := reg.stopWith(d.stop.vals, ident, cx.stdout, timeout, sig)
		if err == nil && !found {
			err = &exitError{code: 1}
		}
		return err
	}
	_, isDetachedChild := takeDetachedMarker()
	if d.detached && !isDetachedChild {
		return d.startDetached(cx, cfg, reg)
	}
	return d.work(cx, cfg, reg, ident, uptime, isDetachedChild)
}

// work is the daemon itself (in the foreground, or the detached child): it
// connects, claims the worker id and serves the queues until a signal.
func (d *daemonCmd) work(cx *cmdContext, cfg *agentConfig, reg *instanceRegistry, ident workerIdentity, uptime *activitySchedule, detachedChild bool) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, sigDrain)
	defer signal.Stop(sigs)
	idleMemoryMode()
	log, closeLog, err := d.openLog(cx, cfg, detachedChild)
	if err != nil {
		return err
	}
	defer closeLog()
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }
	if !d.status {
		applyConfigFiles(cfg, log)
	}
	if d.checkBootstrap {
		logf("--check-bootstrap: %s", bootstrapNotNeeded)
	}
	if !d.status {
		// Before any request: a port in use ends the daemon unregistered.
		stopMetrics, err := startAgentMetrics(d.metricsAddress, cfg, logf)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	c, err := cx.newClient(cfg, clientOptions{budget: 30 * time.Second, workerID: ident.idFor(0)}, func(format string, args ...any) { logf("debug: "+format, args...) })
	if err != nil {
		return err
	}
	queues, err := resolveQueuesRetrying(c, d.queues.vals, d.createQueue, sigs, logf)
	if err != nil {
		return err
	}
	startupStep() // the login's code and garbage are not the loops'
	if err := checkOwnerTokenKey(d.useOwnerToken, c.identity()); err != nil {
		return err
	}
	if d.status {
		sq := make([]statusQueue, len(queues))
		for i, q := range queues {
			sq[i] = statusQueue{Name: q.Name, Tags: q.Tags}
		}
		live, _ := reg.list()
		fmt.Fprint(cx.stdout, daemonStatusText(uptime, sq, nil, live, time.Now()))
		return nil
	}
	inst, err := claimWorkerID(c, reg, ident, logf)
	if err != nil {
		return err
	}
	defer inst.release()
	c.setWorker(inst.WorkerID)
	startupStep()
	printConfiguration(cx.stdout, cfg)
	startupStep()
	statusReportEach = reportFrequency(cfg.env, statusReportEach)
	childCfg, err := newChildConfig(cfg, cx.global.configFile)
	if err != nil {
		return err
	}
	defer childCfg.remove()
	s := d.newScheduler(cx, cfg, c, inst.WorkerID, log, queues, uptime)
	startupStep()
	s.childCfg, s.opts.global.configFile = childCfg, childCfg.path
	if detachedChild {
		logf("Worker \"%s\" :", s.workerID)
	}
	logf("Worker \"%s\" - Listening to queues:\n%s", s.workerID, queueTable(queues))
	if d.servicesMode.set && max(d.servicesMode.n, 0) != 1 {
		logf("ClearML-Agent running in services mode")
	}
	if err := d.serve(cx, s, inst, sigs); err != nil {
		return err
	}
	return s.crashError()
}

// openLog is where the daemon writes: stdout in the foreground (and for
// --status and the detached child, whose stdout is the log already), else
// a new log file, named on stdout.
func (d *daemonCmd) openLog(cx *cmdContext, cfg *agentConfig, detachedChild bool) (io.Writer, func(), error) {
	if d.foreground || d.status || detachedChild {
		return cx.stdout, func() {}, nil
	}
	logFile, err := createDaemonLog(cfg.env)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot create the daemon log: %w", err)
	}
	fmt.Fprintf(cx.stdout, backgroundNotice, logFile.Name())
	return logFile, func() { logFile.Close() }, nil
}

// claimWorkerID takes this daemon's worker id: a free local slot, not one
// the server saw alive lately.
func claimWorkerID(c *apiClient, reg *instanceRegistry, ident workerIdentity, logf func(string, ...any)) (*agentInstance, error) {
	var err error
	if reg.busyRemote, err = recentWorkerIDs(context.Background(), c); err != nil {
		logf("Warning: could not ask the server which worker ids are in use: %v", err)
	}
	inst, err := reg.claim(ident.idFor, os.Args)
	var dup *errDuplicateWorker
	if errors.As(err, &dup) {
		return nil, &exitError{code: 1, msg: dup.Error() + " (pick another id: agent.worker_id in clearml.conf or CLEARML_WORKER_ID; without them the id is <worker_name>:<free slot>, or <worker_name>:gpu<N> from --gpus)"}
	}
	return inst, err
}

// devices are the GPUs the worker serves; services mode implies CPU
// only, as in the reference.
func (d *daemonCmd) devices() (gpus string, cpuOnly bool) {
	if d.cpuOnly || d.servicesMode.set {
		return "", true
	}
	return d.gpus, false
}

// gpuPool reads --dynamic-gpus: every queue is name=N (or MIN-MAX), --gpus
// is the pool. It leaves the bare names in d.queues.
func (d *daemonCmd) gpuPool() (err error) {
	if !d.dynamicGPUs {
		return nil
	}
	if d.servicesMode.set {
		return usagef("--dynamic-gpus cannot be combined with --services-mode")
	}
	if d.pool, err = parseGPUPool(d.gpus); err != nil {
		return usagef("%v", err)
	}
	if len(d.queues.vals) == 0 {
		return usagef("--dynamic-gpus needs --queue name=N for every queue, e.g. --queue dual_gpus=2 single_gpu=1")
	}
	for i, q := range d.queues.vals {
		spec, err := parseGPUQueueSpec(q)
		if err != nil {
			return usagef("%v", err)
		}
		d.gpuSpecs = append(d.gpuSpecs, spec)
		d.queues.vals[i] = spec.queue
		if spec.fmin > 0 && !d.docker.set {
			return usagef("--dynamic-gpus: fractional GPUs (queue %s) run only in docker mode, as in the reference: add --docker", q)
		}
	}
	return nil
}

// startDetached is -d: the daemon starts again in the background, logging
// to a file, and this process returns once it runs.
func (d *daemonCmd) startDetached(cx *cmdContext, cfg *agentConfig, reg *instanceRegistry) error {
	logFile, err := createDaemonLog(cfg.env)
	if err != nil {
		return fmt.Errorf("cannot create the daemon log: %w", err)
	}
	defer logFile.Close()
	child, err := detach(os.Args[1:], logFile)
	if err != nil {
		return fmt.Errorf("cannot start the daemon in the background: %w", err)
	}
	fmt.Fprintf(cx.stdout, backgroundNotice, logFile.Name())
	fmt.Fprintf(cx.stdout, "clearml-agent daemon started in the background, pid %d\n", child.PID)
	return child.waitStarted(reg, 15*time.Second)
}

// newScheduler sets up the poll loop for the worker's queues.
func (d *daemonCmd) newScheduler(cx *cmdContext, cfg *agentConfig, c *apiClient, workerID string, log io.Writer,
	queues []queueRef, uptime *activitySchedule) *scheduler {
	child := taskOptions{workerFlags: d.workerFlags, standalone: d.standalone, docker: d.docker, podman: d.podman}
	child.cpuOnly = d.cpuOnly || d.servicesMode.set || d.noGPUHost // services mode implies CPU only
	tags := d.childReportTags.vals
	if len(tags) == 0 {
		tags = shellSplitLoose(firstEnv(cfg.env, "CLEARML_WORKER_TAGS"))
	}
	pace := defaultPollPace
	if d.pollingInterval.set {
		pace = time.Duration(max(d.pollingInterval.n, 1)) * time.Second
	}
	pace = pollPaceOverride(cfg.env, pace)
	maxRun := 1
	if d.servicesMode.set {
		maxRun = max(d.servicesMode.n, 0) // a bare --services-mode is unlimited
	}
	s := &scheduler{
		opts: schedOptions{child: child, global: cx.global, foreground: d.foreground, orderFairness: d.orderFairness, useOwnerToken: d.useOwnerToken},
		cfg:  cfg, api: c, workerID: workerID, log: log, queues: queues, uptime: uptime, pace: pace, maxRun: maxRun, tags: tags,
		now: time.Now, running: map[string]*childTask{}, owners: map[string]string{}, slotFree: make(chan struct{}, 1),
	}
	gpus, cpuOnly := d.devices()
	gset := newGPUSet(gpus, cpuOnly, cfg.env)
	s.stats = newStatsSampler(cfg, gset)
	if d.dynamicGPUs {
		s.allocateGPUs(d.gpuSpecs, d.pool, gset)
		s.logf("Dynamic GPU allocation over GPUs %s", strings.Join(d.pool, ","))
		for _, spec := range d.gpuSpecs {
			if spec.fmin > 0 {
				s.logf("%s", fractionalGPUNote)
				break
			}
		}
	}
	return s
}

// serve registers the worker, runs the poll loop until a signal, drains
// the running tasks and unregisters.
func (d *daemonCmd) serve(cx *cmdContext, s *scheduler, inst *agentInstance, sigs <-chan os.Signal) error {
	c, workerID := s.api, s.workerID
	ids := make([]string, len(s.queues))
	for i, q := range s.queues {
		ids[i] = q.ID
	}
	if err := c.call(withBudget(context.Background(), 5*time.Minute), "workers.register", "", map[string]any{"worker": workerID, "queues": ids}, nil); err != nil {
		s.logf("Worker failed registering itself with backend service: %v", err)
	} else {
		agentHealth.setReady(readyRegistered)
	}
	if d.dynamicGPUs {
		publishAvailableGPUs(c, workerID, d.pool, s.logf, cx.global.debug)
	}
	startupStep()
	// Exactly one unregister, on every way out, and no report after it.
	defer s.unregister(ids)
	if d.docker.set {
		// Containers a previous run of this worker left behind.
		cleanupStaleContainers(context.Background(), s.opts.child.engine(), workerID, s.log)
	}
	// Tasks a crash left in_progress on this worker: nothing else ends them.
	s.failOrphans(context.Background(), ownsWorker(workerID, s.cfg.str("agent.worker_name"), d.pool), inst.reg)
	notify := takeSDNotifier()
	notify.ready()
	startupDone()
	if metricsOn() != nil {
		// A poll waits up to its 15 s budget in an outage, and the loop
		// up to a minute outside the schedule: the period covers both.
		s.pollBeat = agentHealth.loop("poll", s.pace+30*time.Second)
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); s.stats.run(runCtx) }()
	go func() { defer bg.Done(); s.reportLoop(runCtx, statusReportEach, inst) }()
	go func() { defer bg.Done(); notify.watchdogLoop(runCtx) }()
	loopDone := make(chan struct{})
	go func() { s.runGuarded(runCtx); close(loopDone) }()

	sig := <-sigs
	agentHealth.setNotReady(readyStopping, "shutting down: taking no new task")
	s.shutdown(sig, sigs, notify)
	stopRun()
	select {
	case <-loopDone:
	case <-time.After(5 * time.Second): // a poll cut short by stopRun ends at once
	}
	// The report loop is done before the deferred unregister.
	bg.Wait()
	return nil
}

// shutdown is the daemon's way out (stop.go): SIGQUIT drains, then stops
// what still runs when the grace period (agent.shutdown_grace_sec, when
// set) passes or a SIGTERM or SIGINT comes; SIGTERM and SIGINT stop the
// running tasks at once.
func (s *scheduler) shutdown(sig os.Signal, sigs <-chan os.Signal, notify *sdNotifier) {
	notify.stopping()
	if sig == sigDrain {
		bound := "no time limit"
		if grace := shutdownGrace(s.cfg); grace > 0 {
			bound = "at most agent.shutdown_grace_sec=" + grace.String()
		}
		s.logf("clearml-agent received SIGQUIT: draining: no new task, exit when the running task(s) end (%s; SIGTERM or SIGINT stops them now)", bound)
		if s.drain(shutdownGrace(s.cfg), sigs) {
			return
		}
	} else {
		s.logf("clearml-agent received %s: stopping the running task(s) now (SIGQUIT drains instead)", sig)
	}
	s.stopNow()
}

// shutdownGrace bounds a drain: agent.shutdown_grace_sec, 0 when unset.
func shutdownGrace(cfg *agentConfig) time.Duration {
	return time.Duration(cfg.float("agent.shutdown_grace_sec", 0) * float64(time.Second))
}

// publishAvailableGPUs tells the server which GPUs a --dynamic-gpus worker
// hands out, in the reference's encoding ("0_,1_": whole GPUs), so an
// enterprise server's UI can show them. The open-source server has no such
// endpoint (404): that is expected and only noted in debug.
func publishAvailableGPUs(c *apiClient, workerID string, pool []string, logf func(string, ...any), debug bool) {
	vals := make([]string, len(pool))
	for i, g := range pool {
		vals[i] = strings.ReplaceAll(g, ":", ".") + "_"
	}
	body, _ := json.Marshal(map[string]any{"worker": workerID,
		"runtime_properties": []map[string]string{{"key": "available_gpus", "value": strings.Join(vals, ",")}}})
	ctx := withBudget(context.Background(), 10*time.Second)
	err := c.post(ctx, "workers.set_runtime_properties", "application/json", body)
	var ae *apiError
	switch {
	case err == nil:
	case errors.As(err, &ae) && ae.HTTPStatus == http.StatusNotFound:
		if debug {
			logf("workers.set_runtime_properties is not on this server: the GPU pool is not shown in the UI")
		}
	default:
		logf("Warning: could not publish the available GPUs: %v", err)
	}
}
