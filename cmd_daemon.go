package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
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
}

func (d *daemonCmd) flags(t *flagTable) {
	d.pollingInterval = intFlag{n: 5}
	d.queues.min = 1
	d.childReportTags.min = 1
	d.servicesMode.bare = -1
	t.boolVar(&d.foreground, "foreground", "", "Pipe the full log to stdout/stderr; do not use when running in the background")
	t.add(&d.queues, "queue", "", "QUEUES", "Queues to serve, by name or id, in priority order (default: the queue tagged 'default')")
	t.boolVar(&d.orderFairness, "order-fairness", "", "Pull from the queues round-robin instead of in priority order")
	t.boolVar(&d.standalone, "standalone-mode", "", "Use no network connections; assume every requirement is pre-installed")
	t.add(&d.servicesMode, "services-mode", "", "SERVICES_MODE", "Run several long-lived tasks at once, at most SERVICES_MODE (unlimited without a number)")
	t.add(&d.childReportTags, "child-report-tags", "", "CHILD_REPORT_TAGS", "Tags sent with the status reports of the worker running a task")
	t.boolVar(&d.createQueue, "create-queue", "", "Create the queues given with --queue if they do not exist")
	t.boolVar(&d.detached, "detached", "d", "Run in the background; the command returns at once")
	t.add(&d.stop, "stop", "", "WORKER_ID", "Stop a running agent with the same arguments, or the given worker ids")
	t.boolVar(&d.dynamicGPUs, "dynamic-gpus", "", "Allocate GPUs per task from the queue's need: --queue name=N")
	t.add(&d.uptime, "uptime", "", "UPTIME", `Hours and days the agent serves queues, e.g. "17-20 TUE"`)
	t.add(&d.downtime, "downtime", "", "DOWNTIME", `Hours and days the agent does not serve queues, e.g. "09-13 TUE"`)
	t.boolVar(&d.status, "status", "", "Print the worker's schedule and queues, then exit")
	t.boolVar(&d.useOwnerToken, "use-owner-token", "", "Run each task with its owner's credentials")
	t.add(&d.pollingInterval, "polling-interval", "", "POLLING_INTERVAL", "Seconds between queue polls (default: 5)")
	d.workerFlags.register(t)
	t.add(&d.docker, "docker", "", "DOCKER", "Run tasks in Docker: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
	t.boolVar(&d.forceCurrentVersion, "force-current-version", "", "Use this agent's version inside Docker (always true: the running binary is mounted)")
}

func (d *daemonCmd) run(env *runEnv) error {
	// --dynamic-gpus: every queue is name=N (or MIN-MAX); --gpus is the pool.
	var gpuSpecs []gpuQueueSpec
	var pool []string
	if d.dynamicGPUs {
		if d.servicesMode.set {
			return usagef("--dynamic-gpus cannot be combined with --services-mode")
		}
		var err error
		if pool, err = parseGPUPool(d.gpus); err != nil {
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
			gpuSpecs = append(gpuSpecs, spec)
			d.queues.vals[i] = spec.queue
		}
	}
	cfg, err := loadConfig(env.global.configFile, nil)
	if err != nil {
		return err
	}
	if d.docker.set && !d.stop.set && !d.status {
		// Else every task pulled would fail to start: refuse now, as the reference.
		if _, err := exec.LookPath("docker"); err != nil {
			return &exitError{code: 1, msg: "--docker: the docker command is not on PATH; install Docker (or its CLI), or run the daemon without --docker"}
		}
	}
	sched, err := daemonSchedule(d.uptime.vals, d.downtime.vals, cfg, env.stderr)
	if err != nil {
		return err
	}
	// Services mode implies CPU only, as in the reference.
	cpuOnly := d.cpuOnly || d.servicesMode.set
	gpus := d.gpus
	if cpuOnly {
		gpus = ""
	}
	ident := newWorkerIdentity(cfg.str("agent.worker_id"), cfg.str("agent.worker_name"), workerIDDevices(gpus, cpuOnly, cfg.env), d.dynamicGPUs)
	reg, err := openInstanceRegistry(cfg.env)
	if err != nil {
		return err
	}
	if d.stop.set {
		found, err := reg.stop(d.stop.vals, ident, env.stdout, defaultStopTimeout)
		if err != nil {
			return err
		}
		if !found {
			return &exitError{code: 1}
		}
		return nil
	}

	_, isDetachedChild := takeDetachedMarker()
	if d.detached && !isDetachedChild {
		logFile, err := createDaemonLog(cfg.env)
		if err != nil {
			return fmt.Errorf("cannot create the daemon log: %v", err)
		}
		defer logFile.Close()
		child, err := detach(os.Args[1:], logFile)
		if err != nil {
			return fmt.Errorf("cannot start the daemon in the background: %v", err)
		}
		fmt.Fprintf(env.stdout, backgroundNotice, logFile.Name())
		fmt.Fprintf(env.stdout, "clearml-agent daemon started in the background, pid %d\n", child.PID)
		return child.waitStarted(reg, 15*time.Second)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	log := env.stdout
	if !d.foreground && !d.status && !isDetachedChild {
		logFile, err := createDaemonLog(cfg.env)
		if err != nil {
			return fmt.Errorf("cannot create the daemon log: %v", err)
		}
		defer logFile.Close()
		fmt.Fprintf(env.stdout, backgroundNotice, logFile.Name())
		log = logFile
	}
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }
	if !d.status {
		applyConfigFiles(cfg, log)
	}

	// Connect, and keep trying while the server is away: a service manager
	// restarting us would only hit the same wall.
	c, err := newAPIClient(cfg, clientOptions{budget: 30 * time.Second, workerID: ident.idFor(0)})
	if err != nil {
		return err
	}
	if env.global.debug {
		c.logf = func(format string, args ...any) { logf("debug: "+format, args...) }
	}
	var queues []queueRef
	for attempt := 0; ; attempt++ {
		queues, err = resolveQueues(withBudget(context.Background(), 30*time.Second), c, d.queues.vals, d.createQueue)
		if err == nil {
			break
		}
		var ue *unreachableError
		var ae *apiError
		if !errors.As(err, &ue) && !(errors.As(err, &ae) && ae.Code >= 500) {
			return err
		}
		wait := min(time.Duration(1<<min(attempt, 5))*time.Second, 30*time.Second)
		logf("clearml-agent: %v; retrying in %s", err, wait)
		select {
		case <-sigs:
			return &exitError{code: 254}
		case <-time.After(wait):
		}
	}

	if d.useOwnerToken {
		// Refuse now rather than fail every task pulled, as the reference.
		c.mu.Lock()
		claims := c.claims
		c.mu.Unlock()
		if !claims.mayImpersonate() {
			return &exitError{code: 1, msg: fmt.Sprintf("--use-owner-token: this key's role (%s) may not act as a task's owner; use an admin or service-account key, or run without --use-owner-token", claims.Identity.Role)}
		}
	}
	if d.status {
		sq := make([]statusQueue, len(queues))
		for i, q := range queues {
			sq[i] = statusQueue{Name: q.Name, Tags: q.Tags}
		}
		live, _ := reg.list()
		fmt.Fprint(env.stdout, daemonStatusText(sched, sq, nil, live, time.Now()))
		return nil
	}

	inst, err := reg.claim(ident.idFor, os.Args)
	if err != nil {
		var dup *errDuplicateWorker
		if errors.As(err, &dup) {
			return &exitError{code: 1, msg: dup.Error() + " (set a different agent.worker_id or CLEARML_WORKER_ID)"}
		}
		return err
	}
	defer inst.release()
	workerID := inst.WorkerID
	c.workerHeader = workerID

	tags := d.childReportTags.vals
	if len(tags) == 0 {
		tags = shellSplitLoose(firstEnv(cfg.env, "CLEARML_WORKER_TAGS"))
	}
	pace := defaultPollPace
	if d.pollingInterval.set {
		pace = time.Duration(max(d.pollingInterval.n, 1)) * time.Second
	}
	maxRun := 1
	if d.servicesMode.set {
		maxRun = max(d.servicesMode.n, 0) // a bare --services-mode is unlimited
	}
	s := &scheduler{
		d: d, global: env.global, cfg: cfg, api: c, workerID: workerID, log: log,
		queues: queues, sched: sched, pace: pace, maxRun: maxRun, tags: tags,
		now: time.Now, running: map[string]*childTask{}, owners: map[string]string{}, slotFree: make(chan struct{}, 1),
	}
	gset := newGPUSet(gpus, cpuOnly, cfg.env)
	s.stats = newStatsSampler(cfg, gset)
	if d.dynamicGPUs {
		for i, spec := range gpuSpecs {
			s.queues[i].gpuMin, s.queues[i].gpuMax = spec.min, spec.max
		}
		var freeMem func(string) (float64, bool)
		if gset != nil {
			freeMem = gset.freeMemMB
		}
		s.alloc = newGPUAllocator(pool, cfg.float("agent.gpu_free_memory_min_mb", 0), freeMem)
		s.leases = map[string]*gpuLease{}
		s.maxRun = 0 // bounded by free GPUs, tasks run side by side
		logf("Dynamic GPU allocation over GPUs %s", strings.Join(pool, ","))
	}

	if isDetachedChild {
		logf("Worker \"%s\" :", workerID)
	}
	logf("Worker \"%s\" - Listening to queues:\n%s", workerID, queueTable(queues))
	if maxRun != 1 {
		logf("ClearML-Agent running in services mode")
	}
	ids := make([]string, len(queues))
	for i, q := range queues {
		ids[i] = q.ID
	}
	if err := c.call(withBudget(context.Background(), 5*time.Minute), "workers.register", "", map[string]any{"worker": workerID, "queues": ids}, nil); err != nil {
		logf("Worker failed registering itself with backend service: %v", err)
	}
	if d.dynamicGPUs {
		publishAvailableGPUs(c, workerID, pool, logf, env.global.debug)
	}
	// Exactly one unregister, on every way out.
	defer func() {
		if err := c.call(withBudget(context.Background(), 30*time.Second), "workers.unregister", "", map[string]any{"worker": workerID, "queues": ids}, nil); err != nil {
			logf("Worker failed unregistering itself: %v", err)
		}
	}()
	if d.docker.set {
		// Containers a previous run of this worker left behind.
		cleanupStaleContainers(context.Background(), workerID, log)
	}
	notify := takeSDNotifier()
	notify.ready()

	runCtx, stopRun := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); s.stats.run(runCtx) }()
	go func() { defer bg.Done(); s.reportLoop(runCtx, statusReportEach, inst) }()
	go func() { defer bg.Done(); notify.watchdogLoop(runCtx) }()
	loopDone := make(chan struct{})
	go func() { s.run(runCtx); close(loopDone) }()

	sig := <-sigs
	logf("clearml-agent received %s: draining (a second signal stops the running task now)", sig)
	notify.stopping()
	grace := time.Duration(cfg.float("agent.shutdown_grace_sec", 60) * float64(time.Second))
	s.drain(grace, sigs)
	stopRun()
	<-loopDone
	bg.Wait()
	return nil
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
	_, err := c.do(ctx, request{endpoint: "workers.set_runtime_properties", method: http.MethodPost, contentType: "application/json", body: body})
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
