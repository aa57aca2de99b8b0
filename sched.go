package main

// The daemon's scheduler: the poll loop, and running the tasks it pulls
// as child `execute` processes of this same binary (in a container with
// --docker): launch, watch, report, drain. The queues are in queue.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childTask is a task running under the daemon.
type childTask struct {
	taskID  string
	queueID string
	cmd     *exec.Cmd
	done    chan struct{}
	code    int
	// container is the docker container name in docker mode; cleanup
	// removes its temp files.
	container string
	cleanup   func()
	engine    string    // the container's CLI (docker, podman)
	keep      bool      // the container has a restart policy: not removed
	lease     *gpuLease // --dynamic-gpus: the task's GPUs
	workerID  string    // the worker it runs as (services mode, --dynamic-gpus: not the daemon's)
	signalled bool      // sent the shutdown (stopNow)
	killed    bool      // killed after shutdownChildWait

	// Metrics (metrics_wire.go): the queue's name, the start, and the
	// file the child execute leaves its counters in.
	queueName   string
	started     time.Time
	metricsFile string
}

// schedOptions are the daemon's options the scheduler acts on.
type schedOptions struct {
	child         taskOptions // every child execute's options (--docker: run it in a container)
	global        globalOpts  // passed on to every child
	foreground    bool        // log every empty poll
	orderFairness bool
	useOwnerToken bool
}

// scheduler runs the daemon's loop.
type scheduler struct {
	opts     schedOptions
	cfg      *agentConfig
	api      *apiClient
	workerID string
	log      io.Writer
	queues   []queueRef
	uptime   *activitySchedule // nil: always active
	pace     time.Duration
	maxRun   int // concurrent tasks: 1, N, or 0 for unlimited (services mode)
	tags     []string
	stats    *statsSampler
	now      func() time.Time

	// Test hooks: replace the child command; learn when a child exits.
	childCommand func(taskID string) *exec.Cmd
	childExited  func(taskID string)

	mu        sync.Mutex
	running   map[string]*childTask
	owners    map[string]string // task -> owner user, for --use-owner-token
	alloc     *gpuAllocator     // --dynamic-gpus
	leases    map[string]*gpuLease
	current   map[string]any // task/queue of the running task, for reports
	slotFree  chan struct{}  // a child ended
	nextQueue int            // round-robin position (--order-fairness)
	draining  bool           // take no new task
	stopping  bool           // stop the running tasks at once (SIGTERM, SIGINT)
	launching int            // polls that may turn into a running task

	reportMu     sync.Mutex // a report and the unregister never overlap
	unregistered bool       // nothing reaches the server for the worker after it

	pickups  map[string]time.Time // task -> enqueue time, for the pickup latency (metrics on)
	pollBeat *loopBeat            // the poll loop's heartbeat (metrics on)

	crashErr error  // the internal error that stopped the loop (agent.crash_on_exception)
	onCrash  func() // test hook: instead of SIGTERM to the daemon
	childCfg *childConfig
}

func (s *scheduler) logf(format string, args ...any) {
	fmt.Fprintf(s.log, format+"\n", args...)
}

// status changes task statuses as the daemon's worker.
func (s *scheduler) status() statusWriter { return statusWriter{s.api, s.workerID} }

// run is the polling loop; it returns when ctx ends (drain done). Each
// empty get_next_task is followed by one pace of sleep, so the request rate
// stays constant however many queues there are; a pulled task restarts the
// round at the first queue (priority) or the next one (--order-fairness).
func (s *scheduler) run(ctx context.Context) {
	lastMeta := s.now()
	var nextPoll, lastExternal time.Time
	defer func() {
		if ctx.Err() != nil || s.isDraining() {
			s.pollBeat.done() // ended on purpose; after a panic it runs again
		}
	}()
	for ctx.Err() == nil && !s.isDraining() {
		s.pollBeat.beat()
		if !s.hasFreeSlot() {
			s.pollBeat.park(true) // waiting for a task to end is no stall
			select {
			case <-ctx.Done():
				return
			case <-s.slotFree:
			}
			s.pollBeat.park(false)
			continue
		}
		if s.childAgentsFull(ctx) { // CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD
			continue
		}
		// GPUs other agents on this host hold (--dynamic-gpus).
		if s.alloc != nil && s.now().Sub(lastExternal) > 30*time.Second {
			s.refreshExternalGPUs(ctx)
			lastExternal = s.now()
		}
		// Queue tags change rarely: refresh them now and then, not per poll.
		if s.now().Sub(lastMeta) > 10*time.Minute {
			s.refreshQueues(ctx)
			lastMeta = s.now()
			// The refresh takes the place of one poll: the request rate
			// stays within the budget.
			nextPoll = time.Now().Add(s.pace)
		}
		polled, gpuWait, pulled, ok := s.pollRound(ctx, &nextPoll)
		switch {
		case !ok:
			return
		case pulled:
			lastMeta = s.now()
		case !polled && gpuWait:
			// Waiting for GPUs: a task that ends frees some.
			select {
			case <-ctx.Done():
				return
			case <-s.slotFree:
			case <-time.After(30 * time.Second): // other agents' GPUs
			}
		case !polled:
			// Outside the schedule (or every queue forced off): wait for
			// the next change, checking at least once a minute.
			wait := time.Minute
			if s.uptime != nil {
				if next := s.uptime.next(s.now()); !next.IsZero() {
					wait = min(wait, max(next.Sub(s.now()), time.Second))
				}
			}
			if !sleepCtx(ctx, wait) {
				return
			}
		}
	}
}

// pollRound polls the queues in order until one gives a task (pulled),
// keeping one poll per pace (nextPoll). polled: some queue was asked;
// gpuWait: some queue waits for free GPUs; ok is false when ctx ended.
func (s *scheduler) pollRound(ctx context.Context, nextPoll *time.Time) (polled, gpuWait, pulled, ok bool) {
	for _, q := range s.pollOrder() {
		if ctx.Err() != nil || !s.hasFreeSlot() {
			break
		}
		allowed, warn := pullAllowed(q.Tags, "", s.uptime, s.now())
		if warn != "" {
			s.logf("Warning: %s", warn)
		}
		if !allowed {
			continue
		}
		if s.alloc != nil {
			if free, total := s.alloc.available(); free < max(q.gpuMin, 1) && !s.alloc.fits(q) {
				gpuWait = true
				// A waiting task of this queue keeps the GPUs for itself, as
				// the reference: lower-priority queues would starve it.
				if wait := time.Until(*nextPoll); wait > 0 && !sleepCtx(ctx, wait) {
					return polled, gpuWait, false, false
				}
				*nextPoll = time.Now().Add(s.pace)
				waiting := s.queueHasEntries(ctx, q)
				if waiting || s.opts.foreground || s.opts.global.debug {
					s.logf("Not enough free GPUs %d/%d for queue %s", free, total, q.Name)
				}
				if waiting && !s.opts.orderFairness {
					break
				}
				continue
			}
		}
		polled = true
		s.pollBeat.beat()
		// Polls keep a fixed rhythm (one per pace, not pace after each
		// answer), so slow answers do not stretch the pickup time.
		if wait := time.Until(*nextPoll); wait > 0 && !sleepCtx(ctx, wait) {
			return polled, gpuWait, false, false
		}
		*nextPoll = time.Now().Add(s.pace)
		if !s.beginPull() {
			break // draining: a stop or drain came during the wait
		}
		taskID, err := s.nextTask(ctx, q)
		if err == nil && taskID != "" {
			s.launch(ctx, taskID, q)
			s.endPull()
			*nextPoll = time.Time{} // after a task, look again at once
			if s.opts.orderFairness {
				s.mu.Lock()
				s.nextQueue = (s.indexOf(q) + 1) % len(s.queues)
				s.mu.Unlock()
			}
			if !s.isDraining() {
				s.refreshQueues(ctx)
			}
			return polled, gpuWait, true, true
		}
		s.endPull()
		if err != nil && ctx.Err() == nil {
			s.logf("Warning: Could not access task queue [%s], error: %v", q.ID, err)
		} else if s.opts.foreground || s.opts.global.debug {
			s.logf("No tasks in queue %s", q.ID)
		}
	}
	return polled, gpuWait, false, true
}

// beginPull counts a poll that may start a task, unless the daemon drains;
// endPull ends it. A drain or stop waits for the polls counted.
func (s *scheduler) beginPull() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.launching++
	return true
}

func (s *scheduler) endPull() {
	s.mu.Lock()
	s.launching--
	s.mu.Unlock()
}

func (s *scheduler) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *scheduler) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// idle: no task runs and none is being started.
func (s *scheduler) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running) == 0 && s.launching == 0
}

func (s *scheduler) hasFreeSlot() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	if s.alloc != nil {
		free, _ := s.alloc.available()
		return free > 0 || s.alloc.fractionFree() > 0
	}
	return s.maxRun == 0 || len(s.running) < s.maxRun
}

// launch does the daemon's side of starting a task (agent-daemon.md §4.9)
// and starts the child execute. In the default mode it waits for the task.
func (s *scheduler) launch(ctx context.Context, taskID string, q queueRef) {
	// A stop must not cut the status calls of a task already pulled.
	ctx = context.WithoutCancel(ctx)
	c := withBudget(ctx, 30*time.Second)
	if err := checkPlainID("task", taskID); err != nil {
		// It would name a folder and a worker id: fail it, run nothing.
		s.logf("Error: queue %s: %v", q.Name, err)
		s.abandon(ctx, taskID, err.Error())
		return
	}
	if s.isStopping() {
		// Pulled as the daemon stops: still queued on the server, put it back.
		s.logf("Stopping: returning task %s to queue %s", taskID, q.Name)
		s.status().requeue(c, q.ID, taskID)
		return
	}
	if !s.leaseGPUs(c, taskID, q) {
		return
	}
	if err := s.status().pulled(c, taskID); err != nil {
		s.logf("Warning: Could not set status=in_progress task id '%s', retrying in a bit", taskID)
	}
	s.mu.Lock()
	if s.maxRun == 1 {
		s.current = map[string]any{"task": taskID, "queue": q.ID}
	}
	s.mu.Unlock()
	s.report(ctx)
	s.postLog(c, taskID, fmt.Sprintf("task %s pulled from %s by worker %s\n", taskID, q.ID, s.workerID))
	s.logf("task %s pulled from %s by worker %s", taskID, q.ID, s.workerID)
	s.setRuntimeHostname(c, taskID)
	if err := s.status().launched(c, taskID); err != nil {
		s.logf("Warning: Could not set status=in_progress task id '%s', skipping: %v", taskID, err)
		s.clearCurrent(ctx)
		return
	}
	ownerToken, ok := s.taskOwnerToken(ctx, c, taskID)
	if !ok {
		return
	}
	if s.isStopping() {
		s.status().stoppedByShutdown(c, taskID)
		s.clearCurrent(ctx)
		return
	}
	s.logf("Running task '%s'", taskID)
	child, err := s.startChild(ctx, taskID, q.ID, ownerToken)
	if err != nil {
		s.logf("Error: cannot start the task process: %v", err)
		s.abandon(ctx, taskID, "agent could not start execute: "+err.Error())
		return
	}
	child.queueName, child.started = q.Name, time.Now()
	metricsOn().taskStarted(q.Name, s.takePickup(taskID), child.started)
	go s.watchChild(ctx, child)
	if s.maxRun == 1 {
		s.pollBeat.park(true)
		<-child.done
		s.pollBeat.park(false)
	}
}

// taskOwnerToken is, with --use-owner-token, a token for the task's owner
// (its user's rights, not the agent's); a task that cannot have one fails.
func (s *scheduler) taskOwnerToken(ctx, c context.Context, taskID string) (string, bool) {
	if !s.opts.useOwnerToken {
		return "", true
	}
	s.mu.Lock()
	owner := s.owners[taskID]
	delete(s.owners, taskID)
	s.mu.Unlock()
	tok, err := s.api.ownerToken(c, owner)
	if err != nil || owner == "" {
		reason := fmt.Sprintf("--%s: the server refused a token for the task's owner %q: %v", useOwnerTokenFlag, owner, err)
		s.logf("Error: %s", reason)
		s.abandon(ctx, taskID, reason)
		return "", false
	}
	return tok, true
}

// startChild runs `clearml-agent execute` for the task; the options the
// user gave the daemon reach it (the reference drops several).
func (s *scheduler) startChild(ctx context.Context, taskID, queueID, ownerToken string) (child *childTask, err error) {
	s.mu.Lock()
	lease := s.leases[taskID]
	delete(s.leases, taskID)
	s.mu.Unlock()
	defer func() {
		if err != nil && lease != nil {
			lease.release()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfg := s.childConfig() // agent.reload_config
	o, wid, inner := s.childOptions(taskID, lease)
	child = &childTask{taskID: taskID, queueID: queueID, done: make(chan struct{}), cleanup: func() {}, lease: lease, workerID: wid}
	var cmd *exec.Cmd
	var cliEnv []string // docker mode: the secrets, for the CLI's environment
	switch {
	case s.childCommand != nil:
		cmd = s.childCommand(taskID)
	case o.docker.set:
		task, err := getTask(withBudget(ctx, 30*time.Second), s.api, taskID)
		if err != nil {
			return nil, err
		}
		run, err := dockerTaskArgv(cfg, task, dockerRunOptions{task: o, workerID: wid, parentWorkerID: s.workerID,
			servicesMode: s.maxRun != 1, workerTags: shellJoin(s.tags), env: inner, debug: s.opts.global.debug, api: s.api, queueID: queueID})
		if err != nil {
			dockerTaskLog(s.api, taskID, wid, s.log, "clearml_agent: ERROR: "+err.Error())
			return nil, err
		}
		run.announce(s.api, taskID, wid, s.log)
		s.logf("Executing: %s", dockerLoggedCommand(s.cfg, run.argv))
		cmd = exec.Command(run.argv[0], run.argv[1:]...)
		child.container, child.cleanup, child.engine, child.keep = run.name, run.cleanup, run.engine, run.keep
		cliEnv = run.cliEnv
	default:
		if o.cpuOnly {
			o.gpus = ""
		}
		o.docker, o.podman = listFlag{}, listFlag{}
		cmd = exec.Command(self, executeArgv(s.opts.global, o)...)
	}
	cmd.Env = append(s.childEnv(o, wid, inner, ownerToken), cliEnv...)
	if metricsOn() != nil && !o.docker.set {
		child.metricsFile = childMetricsPath(tempDirFor(s.cfg), taskID)
		cmd.Env = append(cmd.Env, metricsFileEnv+"="+child.metricsFile)
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Should the daemon die, the child learns it (stop.go); the docker
	// client passes the signal on to the agent in the container.
	cmd.SysProcAttr = childSysProcAttr(sigParentDied)
	if err := cmd.Start(); err != nil {
		child.cleanup()
		return nil, err
	}
	child.cmd = cmd
	s.mu.Lock()
	s.running[taskID] = child
	s.mu.Unlock()
	return child, nil
}

// daemonChildEnv tells a child execute that the daemon reports its worker.
const daemonChildEnv = "CLEARML_AGENT_DAEMON_CHILD"

// childOptions are the options of the execute that runs taskID, the
// worker it runs as, and the variables only that execute gets.
func (s *scheduler) childOptions(taskID string, lease *gpuLease) (o taskOptions, workerID string, inner map[string]string) {
	o, workerID = s.opts.child, s.workerID
	o.id = taskID
	o.force = true // the queue gave the task to this daemon: it is ours to run, whatever ran it before
	switch {
	case lease != nil:
		// The child runs on its GPUs as the worker <name>:gpu<list>, so the
		// UI shows the allocation (agent-daemon.md §4.19).
		o.gpus, o.cpuOnly = lease.visible(), false
		workerID = s.cfg.str("agent.worker_name") + ":gpu" + lease.workerLabel()
		if o.docker.set {
			inner = map[string]string{"CLEARML_AGENT_GPU_FRACTIONS": lease.fractionsEnv()}
		}
	case s.maxRun == 1:
		// The daemon reports for this worker; the child must not clear
		// the worker's queue with reports of its own.
		inner = map[string]string{daemonChildEnv: "1"}
	default:
		workerID = s.workerID + ":service:" + taskID
	}
	return o, workerID, inner
}

// childEnv is the environment of a child execute (or its docker client).
func (s *scheduler) childEnv(o taskOptions, workerID string, inner map[string]string, ownerToken string) []string {
	env := os.Environ()
	for k, v := range inner {
		env = append(env, k+"="+v)
	}
	env = append(env, "CLEARML_WORKER_ID="+workerID, "TRAINS_WORKER_ID="+workerID)
	if ownerToken != "" {
		// The task runs as its owner: no agent credentials reach it.
		env = slices.DeleteFunc(env, func(kv string) bool {
			return strings.HasPrefix(kv, "CLEARML_API_ACCESS_KEY=") || strings.HasPrefix(kv, "CLEARML_API_SECRET_KEY=") ||
				strings.HasPrefix(kv, "TRAINS_API_ACCESS_KEY=") || strings.HasPrefix(kv, "TRAINS_API_SECRET_KEY=")
		})
		env = append(env, "CLEARML_AUTH_TOKEN="+ownerToken)
	}
	if len(s.tags) > 0 {
		env = append(env, "CLEARML_WORKER_TAGS="+shellJoin(s.tags))
	}
	// Git credentials from the command line travel in the environment,
	// never in the child's argv (visible in ps).
	return append(env, o.childEnv()...)
}

// watchChild waits for a child and makes sure its task has a final status
// even if execute itself died.
func (s *scheduler) watchChild(ctx context.Context, child *childTask) {
	err := child.cmd.Wait()
	if s.childExited != nil {
		s.childExited(child.taskID)
	}
	child.code = 0
	if err != nil {
		child.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			child.code = ee.ExitCode()
			if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
				child.code = -int(st.Signal())
			}
		}
	}
	s.logf("DONE: Running task '%s', exit status %d", child.taskID, child.code)
	if child.lease != nil {
		child.lease.release()
	}
	if child.container != "" {
		if !s.opts.global.debug && !child.keep {
			dockerRemove(context.Background(), child.engine, child.container)
		}
		child.cleanup()
	}
	// execute sets the final status itself: a task it left without one
	// means it died first (a crash of ours must not leave the task running),
	// or the daemon killed it while stopping.
	budget, cause := 5*time.Minute, stopNone
	if s.isStopping() {
		budget, cause = shutdownFlushBudget, stopShutdown
	}
	bg := withBudget(context.Background(), budget)
	action, err := s.status().settleUnfinished(bg, child.taskID, true, cause, exitCodeReason(child.code))
	if action != "" && err != nil {
		s.logf("Warning: could not update task id '%s' status. Task exit code %d", child.taskID, child.code)
	}
	s.countEnded(child, action, cause)
	if child.workerID != s.workerID && (child.killed || child.code < 0 || child.container != "" && child.code > 128) {
		// Killed before its execute could unregister its own worker.
		s.api.call(withBudget(context.Background(), budget), "workers.unregister", "", map[string]any{"worker": child.workerID}, nil)
	}
	s.mu.Lock()
	delete(s.running, child.taskID)
	if cur, _ := s.current["task"].(string); cur == child.taskID {
		s.current = nil
	}
	s.mu.Unlock()
	close(child.done)
	select {
	case s.slotFree <- struct{}{}:
	default:
	}
	s.report(ctx)
}

// abandon fails a task the daemon could not start.
func (s *scheduler) abandon(ctx context.Context, taskID, reason string) {
	s.status().set(withBudget(ctx, 30*time.Second), "failed", taskID, oneLine(reason), true)
	s.clearCurrent(ctx)
}

func (s *scheduler) clearCurrent(ctx context.Context) {
	s.mu.Lock()
	s.current = nil
	s.mu.Unlock()
	s.report(ctx)
}

// setRuntimeHostname records which host runs the task, as the reference.
func (s *scheduler) setRuntimeHostname(ctx context.Context, taskID string) {
	runtime, err := taskRuntime(ctx, s.api, taskID)
	if runtime == nil {
		runtime = map[string]any{}
	}
	host, _ := os.Hostname()
	runtime["_exec_agent_hostname"] = host
	if err == nil {
		err = s.api.call(ctx, "tasks.edit", "", map[string]any{"task": taskID, "force": true, "runtime": runtime}, nil)
	}
	if err != nil {
		s.logf("Warning: failed obtaining/setting hostname for task '%s': %v", taskID, err)
	}
}

// postLog sends one INFO line to a task's console.
func (s *scheduler) postLog(ctx context.Context, taskID, msg string) {
	ev, _ := json.Marshal(map[string]any{"type": "log", "level": "INFO", "task": taskID, "worker": s.workerID, "msg": msg, "timestamp": time.Now().UnixMilli()})
	if err := s.api.post(ctx, "events.add_batch", "application/json-lines", ev); err != nil {
		s.logf("Warning: could not send a log line to task %s: %v", taskID, err)
	}
}

// report sends one workers.status_report with the current task and stats.
func (s *scheduler) report(ctx context.Context) {
	body := map[string]any{"worker": s.workerID, "timestamp": time.Now().Unix() * 1000}
	ids := make([]string, 0, len(s.queues))
	s.mu.Lock()
	for _, q := range s.queues {
		ids = append(ids, q.ID)
	}
	for k, v := range s.current {
		body[k] = v
	}
	s.mu.Unlock()
	body["queues"] = ids
	if len(s.tags) > 0 && s.maxRun == 1 {
		body["tags"] = s.tags
	}
	if s.stats != nil {
		body["machine_stats"] = s.stats.snapshot()
	}
	// A report after the unregister would register the worker again (a
	// ghost in the UI until the server times it out): none is sent after
	// it, and one in flight is not cancelled but waited for.
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	if s.unregistered {
		return
	}
	if err := s.api.call(withBudget(context.WithoutCancel(ctx), reportBudget), "workers.status_report", "", body, nil); err != nil && ctx.Err() == nil {
		s.logf("Warning: status report failed: %v", err)
	} else if err == nil {
		agentHealth.setReady(readyRegistered) // a report registers the worker too
	}
}

// unregister removes the worker from the server, once, after the last report.
func (s *scheduler) unregister(queueIDs []string) {
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	if s.unregistered {
		return
	}
	s.unregistered = true
	if err := s.api.call(withBudget(context.Background(), 30*time.Second), "workers.unregister", "", map[string]any{"worker": s.workerID, "queues": queueIDs}, nil); err != nil {
		s.logf("Worker failed unregistering itself: %v", err)
	}
}

// reportLoop sends status reports on the reference's cadence: 3 s after
// start, then every 30 s. It also keeps the pid file fresh against temp
// cleaners.
func (s *scheduler) reportLoop(ctx context.Context, every time.Duration, inst *agentInstance) {
	var beat *loopBeat
	if metricsOn() != nil {
		// A report waits at most reportBudget, outage or not: the loop beats.
		beat = agentHealth.loop("report", every+reportBudget)
		defer beat.done()
	}
	if !sleepCtx(ctx, 3*time.Second) {
		return
	}
	for {
		beat.beat()
		s.report(ctx)
		if inst != nil {
			inst.refresh()
		}
		metricsOn().refreshSpoolBytes(tempDirFor(s.cfg))
		dropBinaryPages() // what rare paths mapped (a GC, a refresh) goes
		if !sleepCtx(ctx, every) {
			return
		}
	}
}

// drain takes no new task and waits until the running ones end, at most
// grace when it is positive. It returns false when it ended otherwise: the
// grace period passed, or a stop signal (SIGTERM, SIGINT) came on sigs;
// the caller then stops the tasks at once (stopNow).
func (s *scheduler) drain(grace time.Duration, sigs <-chan os.Signal) bool {
	s.mu.Lock()
	s.draining = true
	n := len(s.running)
	s.mu.Unlock()
	if n > 0 {
		s.logf("Draining: waiting for %d running task(s) to finish", n)
	}
	var deadline <-chan time.Time
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !s.idle() {
		select {
		case <-deadline:
			s.logf("Grace period (agent.shutdown_grace_sec) over: stopping the running task(s)")
			return false
		case sig := <-sigs:
			if sig == sigDrain {
				s.logf("Already draining (SIGTERM or SIGINT stops the running task(s) now)")
				continue
			}
			s.logf("clearml-agent received %s while draining: stopping the running task(s) now", sig)
			return false
		case <-tick.C:
		}
	}
	return true
}

// stopNow stops every running task at once: each child execute gets
// sigShutdown (in a container, through docker kill --signal), stops its
// task, delivers its console and sets the status "agent shutdown"; what
// still runs after shutdownChildWait is killed, and its watcher settles
// its task. A task being started is stopped as soon as it runs.
func (s *scheduler) stopNow() {
	s.mu.Lock()
	s.draining, s.stopping = true, true
	s.mu.Unlock()
	deadline := time.Now().Add(shutdownChildWait)
	for !s.idle() && time.Now().Before(deadline) {
		s.signalChildren(false)
		time.Sleep(20 * time.Millisecond)
	}
	if s.idle() {
		return
	}
	s.logf("Warning: task(s) still running %s after the shutdown signal: killing them", shutdownChildWait)
	s.signalChildren(true)
	end := time.Now().Add(1500 * time.Millisecond)
	for !s.idle() && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
}

// signalChildren sends each running child the shutdown once (kill false),
// or kills each once (kill true).
func (s *scheduler) signalChildren(kill bool) {
	s.mu.Lock()
	var todo []*childTask
	for _, c := range s.running {
		if kill && !c.killed {
			c.killed = true
			todo = append(todo, c)
		} else if !kill && !c.signalled {
			c.signalled = true
			todo = append(todo, c)
		}
	}
	s.mu.Unlock()
	docker := func(engine string, args ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownChildWait)
		defer cancel()
		engineCmd(ctx, engine, args...)
	}
	for _, c := range todo {
		switch {
		case kill:
			if c.container != "" {
				go docker(c.engine, "kill", c.container)
			}
			killGroup(c.cmd.Process.Pid, syscall.SIGKILL)
		case c.container != "":
			// Signalling the docker client reaches the agent inside only
			// through its signal proxy (off with a tty); docker kill always.
			go docker(c.engine, "kill", "--signal", stopShutdown.signalFor(), c.container)
		default:
			c.cmd.Process.Signal(sigShutdown)
		}
	}
}
