package main

// The glue: a worker that serves queues like the daemon but hands each task
// to a batch system (SLURM, Kubernetes) instead of running it. This file is
// the backend-independent core; a backend implements glueBackend
// (slurm_glue.go) and its command calls runGlue.
//
//   - The worker is the daemon's: registration, status reports, queues by
//     name or id (--create-queue, --order-fairness), --uptime/--downtime,
//     a pid slot ("<host>:<kind>:N"), --detached, --stop, --status.
//   - Pending queue (the reference k8s glue's k8s_scheduler): a pulled task
//     is enqueued there, still queued, while its job waits in the batch
//     system, with the job's state in its status message. An abort (or a
//     dequeue) in the UI then cancels the job. The entry goes when the job
//     starts or ends.
//   - At most MaxJobs jobs in flight: no pull while that many are tracked.
//   - Monitor: a job that ended (or that the backend forgot) while its task
//     is still queued or in_progress fails the task with the backend's
//     reason, after a grace that lets the task's own execute finish first.
//   - Restarts: the jobs are kept in a small JSON file per worker and found
//     again through the backend (job name or label, by worker); jobs keep
//     running while the glue is down. Outages of the server or the batch
//     system only delay decisions: an unanswered question is never taken
//     for "the job ended".

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// gluePhase is where a job stands in the batch system.
type gluePhase int

const (
	gluePending gluePhase = iota // waiting for resources; the task is still queued
	glueRunning                  // started: execute inside owns the task
	glueEnded                    // over, whatever the task's status says
)

// glueJobState is one job as the backend sees it.
type glueJobState struct {
	Phase  gluePhase
	Detail string // the backend's words: "PENDING (Priority)", "TIMEOUT (TimeLimit, exit code 143)"
	Fatal  string // pending but never going to run (an image that cannot be pulled): the glue cancels the job and fails the task with this
}

// glueSubmission is one task to start as a job.
type glueSubmission struct {
	TaskID   string
	Task     map[string]any // the task document (tasks.get_by_id)
	Queue    queueRef       // the queue it was pulled from
	WorkerID string         // the glue's worker id
	// TaskWorkerID is the worker id the job's execute must run as
	// (CLEARML_WORKER_ID): the glue tells its own runs of a task from
	// another agent's by it.
	TaskWorkerID string
}

// glueTaskWorkerID is the worker id of the execute in a glue's job.
func glueTaskWorkerID(glueWorkerID, taskID string) string { return glueWorkerID + ":" + taskID }

// glueFound is a job of this worker that the backend knows about.
type glueFound struct {
	Job  string
	Task string
}

// glueSetup is what a backend gets when the glue starts serving.
type glueSetup struct {
	cfg      *agentConfig
	api      *apiClient
	workerID string
	stateDir string     // the glue's own folder (0700): state file, backend files
	queues   []queueRef // the resolved --queue values, in their order
	logf     func(format string, args ...any)
	postLog  func(ctx context.Context, taskID, msg string) // a line on the task's console
}

// glueBackend is a batch system. Errors other than *glueRefusal are taken
// as "the batch system cannot be asked now": the glue retries later.
type glueBackend interface {
	// Kind names the system in logs and status messages: "SLURM".
	Kind() string
	// Label names one job: "SLURM job 123".
	Label(job string) string
	// Start prepares serving (files, templates per queue); not called for --status.
	Start(ctx context.Context, s glueSetup) error
	// Submit starts a job for the task and returns its id. A *glueRefusal
	// (bad template, a request the system rejects) fails the task; any other
	// error puts it back at the head of its queue.
	Submit(ctx context.Context, s glueSubmission) (job string, err error)
	// Jobs reports the given jobs; a job missing from the map is unknown to
	// the system (ended long ago). An error answers nothing.
	Jobs(ctx context.Context, jobs []string) (map[string]glueJobState, error)
	// Find lists the jobs of workerID the system still knows, oldest first.
	Find(ctx context.Context, workerID string) ([]glueFound, error)
	// Cancel ends jobs; one that already ended is fine.
	Cancel(ctx context.Context, jobs ...string) error
	// Release is called once the glue stops tracking a job (its leftovers
	// may go).
	Release(ctx context.Context, job string)
}

// glueRefusal is a task the backend will not run: the task fails with it.
type glueRefusal struct{ msg string }

func (e *glueRefusal) Error() string { return e.msg }

func glueRefuse(format string, args ...any) error {
	return &glueRefusal{oneLine(fmt.Sprintf(format, args...))}
}

// glueOptions are a backend command's settings of the core.
type glueOptions struct {
	Kind          string // lower case, in the worker id "<host>:<kind>:N" and the default state folder
	PendingQueue  string // the pending queue's name
	PendingTags   []string
	PendingReason string        // status_reason of a task in the pending queue
	MaxJobs       int           // jobs in flight; 0 for no bound
	StateDir      string        // "": ~/.clearml/<kind>-glue
	EndGrace      time.Duration // after a job ended, how long execute may still set the final status
	// StopGrace: a job still running this long after its task got a final
	// status (or a user took the task back) is cancelled; 0 leaves it be
	// (a batch script may have work after execute).
	StopGrace time.Duration
}

// glueFlags are the daemon's flags that a glue has too.
type glueFlags struct {
	foreground, orderFairness, createQueue, detached, status bool
	queues, stop, uptime, downtime                           listFlag
	pollingInterval                                          intFlag
	metricsAddress                                           string
}

func (f *glueFlags) register(t *flagTable) {
	registerForeground(t, &f.foreground)
	registerQueues(t, &f.queues)
	registerOrderFairness(t, &f.orderFairness)
	registerCreateQueue(t, &f.createQueue)
	registerDetached(t, &f.detached)
	registerStop(t, &f.stop)
	registerSchedule(t, &f.uptime, &f.downtime)
	registerStatus(t, &f.status)
	registerPollingInterval(t, &f.pollingInterval)
	registerMetricsAddress(t, &f.metricsAddress)
}

// runGlue is a glue command: --stop, --detached, --status or serve.
func runGlue(cx *cmdContext, f *glueFlags, o glueOptions, b glueBackend) error {
	cfg, err := loadConfig(cx.global.configFile, nil)
	if err != nil {
		return err
	}
	uptime, err := daemonSchedule(f.uptime.vals, f.downtime.vals, cfg, cx.stderr)
	if err != nil {
		return err
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(homeDir(cfg.env), ".clearml", o.Kind+"-glue")
	}
	if o.EndGrace == 0 {
		o.EndGrace = 15 * time.Second
	}
	ident := newWorkerIdentity(cfg.str("agent.worker_id"), cfg.str("agent.worker_name")+":"+o.Kind, "", false)
	reg, err := openInstanceRegistry(cfg.env)
	if err != nil {
		return err
	}
	if f.stop.set {
		found, err := reg.stop(f.stop.vals, ident, cx.stdout, defaultStopTimeout)
		if err == nil && !found {
			err = &exitError{code: 1}
		}
		return err
	}
	_, detachedChild := takeDetachedMarker()
	if f.detached && !detachedChild && !f.status {
		logFile, err := createDaemonLog(cfg.env)
		if err != nil {
			return fmt.Errorf("cannot create the log file: %w", err)
		}
		defer logFile.Close()
		child, err := detach(os.Args[1:], logFile)
		if err != nil {
			return fmt.Errorf("cannot start in the background: %w", err)
		}
		fmt.Fprintf(cx.stdout, backgroundNotice, logFile.Name())
		fmt.Fprintf(cx.stdout, "clearml-agent %s started in the background, pid %d\n", o.Kind, child.PID)
		return child.waitStarted(reg, 15*time.Second)
	}
	return glueWork(cx, f, o, b, cfg, reg, ident, uptime, detachedChild)
}

// glueWork connects, claims the worker id and serves until a signal.
func glueWork(cx *cmdContext, f *glueFlags, o glueOptions, b glueBackend, cfg *agentConfig, reg *instanceRegistry,
	ident workerIdentity, uptime *activitySchedule, detachedChild bool) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	log := cx.stdout
	if !f.foreground && !f.status && !detachedChild {
		logFile, err := createDaemonLog(cfg.env)
		if err != nil {
			return fmt.Errorf("cannot create the log file: %w", err)
		}
		defer logFile.Close()
		fmt.Fprintf(cx.stdout, backgroundNotice, logFile.Name())
		log = logFile
	}
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }
	if !f.status {
		idleMemoryMode()
		// Before any request: a port in use ends the glue unregistered.
		stopMetrics, err := startAgentMetrics(f.metricsAddress, cfg, logf)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	c, err := cx.newClient(cfg, clientOptions{budget: 30 * time.Second, workerID: ident.idFor(0)}, func(format string, args ...any) { logf("debug: "+format, args...) })
	if err != nil {
		return err
	}
	queues, err := resolveQueuesRetrying(c, f.queues.vals, f.createQueue, sigs, logf)
	if err != nil {
		return err
	}
	if f.status {
		return glueStatus(cx.stdout, b, o, reg, uptime, queues)
	}
	inst, err := reg.claim(ident.idFor, os.Args)
	var dup *errDuplicateWorker
	if errors.As(err, &dup) {
		return &exitError{code: 1, msg: dup.Error() + " (set a different agent.worker_id or CLEARML_WORKER_ID)"}
	} else if err != nil {
		return err
	}
	defer inst.release()
	c.setWorker(inst.WorkerID)
	pace := defaultPollPace
	if f.pollingInterval.set {
		pace = time.Duration(max(f.pollingInterval.n, 1)) * time.Second
	}
	s := &scheduler{
		opts: schedOptions{global: cx.global, foreground: f.foreground, orderFairness: f.orderFairness},
		cfg:  cfg, api: c, workerID: inst.WorkerID, log: log, queues: queues, uptime: uptime, pace: pace,
	}
	g := newGlue(o, b, s)
	if err := g.start(sigs, cfg); err != nil {
		return err
	}
	g.logf("Worker \"%s\" - Listening to queues:\n%s", g.workerID, queueTable(queues))
	g.logf("%s glue: tasks wait in queue %q while their jobs are pending; state in %s", b.Kind(), g.pending.Name, g.state.path)
	return g.serve(sigs, inst)
}

// glue is one running glue worker.
type glue struct {
	opts     glueOptions
	b        glueBackend
	s        *scheduler // queue polling and worker reports, as the daemon's
	api      *apiClient
	status   statusWriter
	workerID string
	logf     func(format string, args ...any)
	now      func() time.Time

	pending         queueRef
	updateExecQueue bool // move execution.queue to the pending queue (basic feature set, as the reference)
	state           *glueState
	adopted         bool      // the backend's list of our jobs was merged in
	backoffUntil    time.Time // no pull before: the batch system refused to answer
	retryPause      time.Duration
	full            bool // MaxJobs reached (logged once)
	warned          map[string]time.Time
}

// newGlue makes a glue on a scheduler that has the worker's options, client,
// id, log, queues, schedule and pace set.
func newGlue(o glueOptions, b glueBackend, s *scheduler) *glue {
	s.now, s.running, s.owners, s.slotFree = time.Now, map[string]*childTask{}, map[string]string{}, make(chan struct{}, 1)
	return &glue{opts: o, b: b, s: s, api: s.api, status: statusWriter{s.api, s.workerID}, workerID: s.workerID,
		logf: s.logf, now: time.Now, warned: map[string]time.Time{}, retryPause: 10 * time.Second}
}

// start makes the pending queue, loads the state and starts the backend.
func (g *glue) start(sigs <-chan os.Signal, cfg *agentConfig) error {
	pending, err := g.ensurePendingQueue(sigs)
	if err != nil {
		return err
	}
	g.pending = pending
	fs := g.api.identity().FeatureSet
	g.updateExecQueue = fs == "" || fs == "basic"
	if err := os.MkdirAll(g.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot create the state folder %s: %v (set another with --state-dir)", g.opts.StateDir, err)
	}
	if g.state, err = loadGlueState(filepath.Join(g.opts.StateDir, glueStateName(g.workerID))); err != nil {
		return err
	}
	return g.b.Start(context.Background(), glueSetup{cfg: cfg, api: g.api, workerID: g.workerID, stateDir: g.opts.StateDir, queues: g.s.queues, logf: g.logf,
		postLog: func(ctx context.Context, taskID, msg string) {
			g.s.postLog(withBudget(ctx, 15*time.Second), taskID, msg+"\n")
		}})
}

// ensurePendingQueue finds or creates the pending queue (with the
// backend's system tags), waiting out a server outage.
func (g *glue) ensurePendingQueue(sigs <-chan os.Signal) (queueRef, error) {
	for attempt := 0; ; attempt++ {
		ctx := withBudget(context.Background(), 30*time.Second)
		id, err := resolveName(ctx, g.api, "queues", g.opts.PendingQueue)
		var nf *notFoundError
		if errors.As(err, &nf) {
			var r struct {
				ID string `json:"id"`
			}
			err = g.api.call(ctx, "queues.create", "2.4", map[string]any{"name": g.opts.PendingQueue, "system_tags": g.opts.PendingTags}, &r)
			id = r.ID
		}
		if err == nil {
			return queueRef{ID: id, Name: g.opts.PendingQueue}, nil
		}
		if !serverAway(err) {
			return queueRef{}, fmt.Errorf("pending queue %q: %w", g.opts.PendingQueue, err)
		}
		wait := min(time.Duration(1<<min(attempt, 5))*time.Second, 30*time.Second)
		g.logf("clearml-agent: %v; retrying in %s", err, wait)
		select {
		case <-sigs:
			return queueRef{}, &exitError{code: 254}
		case <-time.After(wait):
		}
	}
}

// serve registers the worker and runs the loop until a signal. The jobs
// keep running after the glue exits; the next start picks them up.
func (g *glue) serve(sigs <-chan os.Signal, inst *agentInstance) error {
	ids := make([]string, len(g.s.queues))
	for i, q := range g.s.queues {
		ids[i] = q.ID
	}
	if err := g.api.call(withBudget(context.Background(), 5*time.Minute), "workers.register", "", map[string]any{"worker": g.workerID, "queues": ids}, nil); err != nil {
		g.logf("Worker failed registering itself with backend service: %v", err)
	} else {
		agentHealth.setReady(readyRegistered)
	}
	defer func() {
		if err := g.api.call(withBudget(context.Background(), 30*time.Second), "workers.unregister", "", map[string]any{"worker": g.workerID, "queues": ids}, nil); err != nil {
			g.logf("Worker failed unregistering itself: %v", err)
		}
	}()
	notify := takeSDNotifier()
	notify.ready()
	startupDone()
	ctx, stop := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); g.s.reportLoop(ctx, statusReportEach, inst) }()
	go func() { defer bg.Done(); notify.watchdogLoop(ctx) }()
	go func() { defer bg.Done(); g.run(ctx) }()
	sig := <-sigs
	agentHealth.setNotReady(readyStopping, "shutting down: taking no new task")
	g.logf("clearml-agent received %s: stopping; %d job(s) keep running and the next start picks them up", sig, len(g.state.Jobs))
	notify.stopping()
	stop()
	bg.Wait()
	return g.state.save()
}

// run is the loop: follow the jobs, then pull when there is room.
func (g *glue) run(ctx context.Context) {
	lastMeta := g.now()
	var beat *loopBeat
	if metricsOn() != nil {
		// Each turn's requests wait at most about a minute in an outage.
		beat = agentHealth.loop("poll", g.s.pace+time.Minute)
		defer beat.done()
	}
	for ctx.Err() == nil {
		beat.beat()
		g.monitor(ctx)
		if g.now().Sub(lastMeta) > 10*time.Minute {
			g.s.refreshQueues(ctx)
			lastMeta = g.now()
		}
		if g.mayPull() && g.pullOne(ctx) {
			continue // look again at once
		}
		sleepCtx(ctx, g.s.pace)
	}
}

func (g *glue) mayPull() bool {
	if g.now().Before(g.backoffUntil) {
		return false
	}
	if n := len(g.state.Jobs); g.opts.MaxJobs > 0 && n >= g.opts.MaxJobs {
		if !g.full {
			g.logf("Maximum number of jobs reached (%d/%d): not pulling until one ends", n, g.opts.MaxJobs)
		}
		g.full = true
		return false
	}
	g.full = false
	return true
}

// pullOne takes the first task the queues give (in priority order, or
// round-robin with --order-fairness) and submits it.
func (g *glue) pullOne(ctx context.Context) bool {
	for _, q := range g.s.pollOrder() {
		allowed, warn := pullAllowed(q.Tags, "", g.s.uptime, g.now())
		if warn != "" {
			g.logf("Warning: %s", warn)
		}
		if !allowed {
			continue
		}
		id, err := g.s.nextTask(ctx, q)
		if err != nil {
			if ctx.Err() == nil {
				g.warn("poll "+q.ID, "Warning: Could not access task queue [%s], error: %v", q.ID, err)
			}
			continue
		}
		if id == "" {
			if g.s.opts.foreground || g.s.opts.global.debug {
				g.logf("No tasks in queue %s", q.ID)
			}
			continue
		}
		if g.s.opts.orderFairness {
			g.s.mu.Lock()
			g.s.nextQueue = (g.s.indexOf(q) + 1) % len(g.s.queues)
			g.s.mu.Unlock()
		}
		g.take(ctx, id, q)
		return true
	}
	return false
}

// take moves a pulled task into the pending queue and submits its job.
func (g *glue) take(ctx context.Context, taskID string, q queueRef) {
	c := withBudget(ctx, 30*time.Second)
	pulled := fmt.Sprintf("task %s pulled from %s by worker %s", taskID, q.ID, g.workerID)
	g.logf("%s", pulled)
	g.s.postLog(c, taskID, pulled+"\n")
	e := g.state.add(&glueJob{Task: taskID, Queue: q.ID, QueueName: q.Name, Submitted: g.now().UTC()})
	for _, old := range g.state.without(e, taskID) {
		g.b.Release(ctx, old.Job) // an earlier run of the same task
	}
	g.save()
	doc, err := getTaskDocument(c, g.api, taskID)
	if err == nil {
		err = g.toPending(c, taskID)
	}
	if err != nil {
		g.logf("Warning: task %s: %v; returning it to queue %s", taskID, err, q.Name)
		g.returnTask(ctx, e) // else the monitor tries again
		return
	}
	job, err := g.b.Submit(c, glueSubmission{TaskID: taskID, Task: doc, Queue: q, WorkerID: g.workerID,
		TaskWorkerID: glueTaskWorkerID(g.workerID, taskID)})
	var refusal *glueRefusal
	switch {
	case errors.As(err, &refusal):
		g.logf("Error: task %s: %s", taskID, refusal.msg)
		e.Failure = refusal.msg
		if g.fail(c, e, refusal.msg) {
			g.state.remove(e)
		} // else the monitor tries again
	case err != nil:
		g.backoffUntil = g.now().Add(g.retryPause)
		g.logf("Warning: task %s: %v; returning it to queue %s and pausing pulls for %s", taskID, err, q.Name, g.retryPause)
		g.returnTask(ctx, e)
	default:
		e.Job = job
		metricsOn().taskStarted(q.Name, g.s.takePickup(taskID), g.now())
		label := g.b.Label(job)
		g.logf("task %s: submitted %s", taskID, label)
		g.s.postLog(c, taskID, fmt.Sprintf("%s submitted by worker %s for queue %s\n", label, g.workerID, q.Name))
		if err := g.status.jobMessage(c, taskID, label, "submitted"); err == nil {
			e.Detail = "submitted"
		}
	}
	g.save()
}

// toPending enqueues the task into the pending queue, re-creating the queue
// once if someone deleted it (as the reference).
func (g *glue) toPending(ctx context.Context, taskID string) error {
	err := g.status.toPending(ctx, taskID, g.pending.ID, g.opts.PendingReason, g.b.Kind(), g.updateExecQueue)
	var ae *apiError
	if errors.As(err, &ae) && ae.is(400, 701) {
		if q, qerr := g.ensurePendingQueue(nil); qerr == nil {
			g.pending = q
			err = g.status.toPending(ctx, taskID, g.pending.ID, g.opts.PendingReason, g.b.Kind(), g.updateExecQueue)
		}
	}
	if err != nil {
		return fmt.Errorf("could not move it into pending queue %s: %w", g.opts.PendingQueue, err)
	}
	return nil
}

// returnTask puts a task without a job back at the head of its queue; it
// stays tracked (and is retried by the monitor) until that works.
func (g *glue) returnTask(ctx context.Context, e *glueJob) bool {
	c := withBudget(ctx, 15*time.Second)
	g.status.removeFromQueue(c, g.pending.ID, e.Task)
	if err := g.status.requeueFront(c, e.Queue, e.Task, g.opts.Kind); err != nil {
		g.warn("return "+e.Task, "Warning: could not return task %s to queue %s: %v (retrying)", e.Task, firstNonEmpty(e.QueueName, e.Queue), err)
		return false
	}
	g.state.remove(e)
	return true
}

// fail marks the task failed with reason and says so on its console.
func (g *glue) fail(ctx context.Context, e *glueJob, reason string) bool {
	g.status.removeFromQueue(ctx, g.pending.ID, e.Task)
	g.s.postLog(ctx, e.Task, "clearml-agent "+g.opts.Kind+" glue: "+reason+"\n")
	if err := g.status.jobEnded(ctx, e.Task, reason); err != nil {
		g.warn("fail "+e.Task, "Warning: could not mark task %s failed (%s): %v (retrying)", e.Task, reason, err)
		return false
	}
	g.logf("task %s failed: %s", e.Task, reason)
	return true
}

// warn logs a recurring problem at most once a minute.
func (g *glue) warn(key, format string, args ...any) {
	if last, ok := g.warned[key]; ok && g.now().Sub(last) < time.Minute {
		return
	}
	g.warned[key] = g.now()
	g.logf(format, args...)
}

func (g *glue) save() {
	if err := g.state.save(); err != nil {
		g.warn("state", "Warning: cannot write the state file: %v", err)
	}
}

// getTaskDocument is the whole task as tasks.get_by_id returns it, for
// template variables (CLEARML_TASK.<path>).
func getTaskDocument(ctx context.Context, c *apiClient, id string) (map[string]any, error) {
	var r struct {
		Task map[string]any `json:"task"`
	}
	if err := c.call(ctx, "tasks.get_by_id", "2.13", map[string]any{"task": id}, &r); err != nil {
		return nil, fmt.Errorf("could not read the task: %w", err)
	}
	if r.Task == nil {
		return nil, fmt.Errorf("could not read the task: no such task")
	}
	return r.Task, nil
}

// glueStatus is --status: the schedule and queues as the daemon's, then
// the jobs each glue of this kind on this host tracks.
func glueStatus(w io.Writer, b glueBackend, o glueOptions, reg *instanceRegistry, uptime *activitySchedule, queues []queueRef) error {
	sq := make([]statusQueue, len(queues))
	for i, q := range queues {
		sq[i] = statusQueue{Name: q.Name, Tags: q.Tags}
	}
	live, _ := reg.list()
	fmt.Fprint(w, daemonStatusText(uptime, sq, nil, live, time.Now()))
	files, _ := filepath.Glob(filepath.Join(o.StateDir, "*.json"))
	if len(files) == 0 {
		fmt.Fprintf(w, "No %s jobs tracked (no state in %s)\n", b.Kind(), o.StateDir)
	}
	for _, f := range files {
		st, err := loadGlueState(f)
		if err != nil {
			fmt.Fprintf(w, "%v\n", err)
			continue
		}
		fmt.Fprintf(w, "Worker %s tracks %d %s job(s):\n", st.Worker, len(st.Jobs), b.Kind())
		var ids []string
		for _, e := range st.Jobs {
			if e.Job != "" {
				ids = append(ids, e.Job)
			}
		}
		states, err := b.Jobs(withBudget(context.Background(), 30*time.Second), ids)
		for _, e := range st.Jobs {
			now := "being submitted"
			switch s, ok := states[e.Job]; {
			case e.Job == "":
			case err != nil:
				now = "state unknown: " + err.Error()
			case !ok:
				now = "no longer known to " + b.Kind()
			default:
				now = s.Detail
			}
			fmt.Fprintf(w, "  - %s: task %s, queue %s, submitted %s: %s\n", b.Label(e.Job), e.Task,
				firstNonEmpty(e.QueueName, e.Queue, "?"), e.Submitted.Local().Format("2006-01-02 15:04:05"), now)
		}
	}
	return nil
}

// glueJob is one tracked task and its job.
type glueJob struct {
	Task      string    `json:"task"`
	Job       string    `json:"job,omitempty"`   // "" while being submitted, or when it must go back to its queue
	Queue     string    `json:"queue,omitempty"` // the queue it was pulled from (id)
	QueueName string    `json:"queue_name,omitempty"`
	Submitted time.Time `json:"submitted"`
	Started   bool      `json:"started,omitempty"` // seen running: out of the pending queue
	Detail    string    `json:"detail,omitempty"`  // the state last shown on the task
	Failure   string    `json:"failure,omitempty"` // the task must fail with this (the backend refused it)
	endSeen   time.Time // when the job was first seen ended with the task not final
	doneSeen  time.Time // when the job was first seen running with the task no longer its own (StopGrace)
}

// glueState is the state file of one glue worker.
type glueState struct {
	path   string
	Worker string     `json:"worker"`
	Jobs   []*glueJob `json:"jobs"`
}

// glueStateName is the file name for a worker id.
func glueStateName(workerID string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, workerID) + ".json"
}

func loadGlueState(path string) (*glueState, error) {
	st := &glueState{path: path, Worker: strings.TrimSuffix(filepath.Base(path), ".json")}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err == nil {
		err = json.Unmarshal(data, st)
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %v (fix or remove it; the jobs are found again by name)", path, err)
	}
	st.path = path
	return st, nil
}

// save writes the file atomically (temp file and rename), mode 0600.
func (st *glueState) save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(st.path), ".state-*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), st.path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func (st *glueState) add(e *glueJob) *glueJob {
	st.Jobs = append(st.Jobs, e)
	return e
}

func (st *glueState) remove(e *glueJob) {
	for i, x := range st.Jobs {
		if x == e {
			st.Jobs = append(st.Jobs[:i], st.Jobs[i+1:]...)
			return
		}
	}
}

// without drops the other entries of a task and returns those that had a job.
func (st *glueState) without(keep *glueJob, task string) []*glueJob {
	var gone []*glueJob
	kept := st.Jobs[:0]
	for _, x := range st.Jobs {
		if x != keep && x.Task == task {
			if x.Job != "" {
				gone = append(gone, x)
			}
			continue
		}
		kept = append(kept, x)
	}
	st.Jobs = kept
	return gone
}
