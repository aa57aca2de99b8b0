package main

// The daemon's scheduler: which queue to poll, how often, and running the
// tasks it pulls as child `execute` processes of this same binary.

import (
	"context"
	"encoding/json"
	"errors"
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

// defaultPollPace is the gap between two queues.get_next_task calls while
// idle. The reference's idle load is 27 requests a minute (get_all plus
// get_next_task every 5 s, and a status report every 30 s); spending the
// whole budget on get_next_task (25 a minute plus 2 reports) halves the
// average pickup time to about 1.2 s.
const defaultPollPace = 2400 * time.Millisecond

// queueRef is a queue the worker serves.
type queueRef struct {
	ID   string   `json:"id"`
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// GPUs a task of this queue takes with --dynamic-gpus.
	gpuMin, gpuMax int
}

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
	lease     *gpuLease // --dynamic-gpus: the task's GPUs
}

// scheduler runs the daemon's loop.
type scheduler struct {
	d        *daemonCmd
	global   globalOpts
	cfg      *agentConfig
	api      *apiClient
	workerID string
	log      io.Writer
	queues   []queueRef
	sched    *activitySchedule // nil: always active
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
	draining  bool
}

func (s *scheduler) logf(format string, args ...any) {
	fmt.Fprintf(s.log, format+"\n", args...)
}

// resolveQueues turns --queue values into queues, as the reference does:
// ids pass through, names must match exactly (case-insensitive), no queue
// means the one tagged default, and --create-queue creates missing ones.
func resolveQueues(ctx context.Context, c *apiClient, names []string, create bool) ([]queueRef, error) {
	if len(names) == 0 {
		var r struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if err := c.call(ctx, "queues.get_default", "2.5", map[string]any{}, &r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				return nil, err
			}
			names = []string{"default"}
		} else {
			return []queueRef{{ID: r.ID, Name: r.Name}}, nil
		}
	}
	var ids []string
	for _, n := range names {
		id, err := resolveName(ctx, c, "queues", n)
		if err != nil && create && !idPattern().MatchString(n) {
			var r struct {
				ID string `json:"id"`
			}
			if cerr := c.call(ctx, "queues.create", "2.5", map[string]any{"name": n}, &r); cerr != nil {
				return nil, fmt.Errorf("cannot create queue %q: %v", n, cerr)
			}
			id, err = r.ID, nil
		}
		if err != nil {
			var nf *notFoundError
			if !create && errors.As(err, &nf) {
				return nil, fmt.Errorf("%v (or pass --create-queue to create it)", err)
			}
			return nil, err
		}
		ids = append(ids, id)
	}
	return fetchQueues(ctx, c, ids)
}

// fetchQueues reads names and tags of the queues, keeping the given order.
func fetchQueues(ctx context.Context, c *apiClient, ids []string) ([]queueRef, error) {
	var r struct {
		Queues []queueRef `json:"queues"`
	}
	if err := c.call(ctx, "queues.get_all", "2.5", map[string]any{"id": ids, "only_fields": []string{"id", "name", "tags"}}, &r); err != nil {
		return nil, err
	}
	byID := map[string]queueRef{}
	for _, q := range r.Queues {
		byID[q.ID] = q
	}
	out := make([]queueRef, 0, len(ids))
	for _, id := range ids {
		q, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("could not find queue with name/id %q", id)
		}
		out = append(out, q)
	}
	return out, nil
}

// queueTable renders the reference's banner table of queues.
func queueTable(queues []queueRef) string {
	rows := [][]string{{"id", "name", "tags"}}
	for _, q := range queues {
		tags := ""
		if len(q.Tags) > 0 {
			quoted := make([]string, len(q.Tags))
			for i, t := range q.Tags {
				quoted[i] = "'" + t + "'"
			}
			tags = "[" + strings.Join(quoted, ", ") + "]"
		}
		rows = append(rows, []string{q.ID, q.Name, tags})
	}
	widths := make([]int, 3)
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c)+1, 3)
		}
	}
	// The reference's layout: the last column is one wider than the others.
	border := "+"
	for i, w := range widths {
		if i == len(widths)-1 {
			w++
		}
		border += strings.Repeat("-", w+1) + "+"
	}
	line := func(r []string) string {
		s := "|"
		for i, c := range r {
			pad := widths[i] - len(c)
			if i == len(r)-1 {
				pad++
			}
			s += " " + c + strings.Repeat(" ", pad) + "|"
		}
		return s
	}
	out := []string{border, line(rows[0]), border}
	for _, r := range rows[1:] {
		out = append(out, line(r))
	}
	out = append(out, border, "")
	return strings.Join(out, "\n")
}

// run is the polling loop; it returns when ctx ends (drain done). Each
// empty get_next_task is followed by one pace of sleep, so the request rate
// stays constant however many queues there are; a pulled task restarts the
// round at the first queue (priority) or the next one (--order-fairness).
func (s *scheduler) run(ctx context.Context) {
	lastMeta := s.now()
	var nextPoll, lastExternal time.Time
	for ctx.Err() == nil {
		if !s.hasFreeSlot() {
			select {
			case <-ctx.Done():
				return
			case <-s.slotFree:
			}
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
		polled, gpuWait := false, false
		for _, q := range s.pollOrder() {
			if ctx.Err() != nil || !s.hasFreeSlot() {
				break
			}
			ok, warn := pullAllowed(q.Tags, "", s.sched, s.now())
			if warn != "" {
				s.logf("Warning: %s", warn)
			}
			if !ok {
				continue
			}
			if s.alloc != nil {
				if free, total := s.alloc.available(); free < max(q.gpuMin, 1) {
					gpuWait = true
					// A waiting task of this queue keeps the GPUs for itself, as
					// the reference: lower-priority queues would starve it.
					if wait := time.Until(nextPoll); wait > 0 && !sleepCtx(ctx, wait) {
						return
					}
					nextPoll = time.Now().Add(s.pace)
					waiting := s.queueHasEntries(ctx, q)
					if waiting || s.d.foreground || s.global.debug {
						s.logf("Not enough free GPUs %d/%d for queue %s", free, total, q.Name)
					}
					if waiting && !s.d.orderFairness {
						break
					}
					continue
				}
			}
			polled = true
			// Polls keep a fixed rhythm (one per pace, not pace after each
			// answer), so slow answers do not stretch the pickup time.
			if wait := time.Until(nextPoll); wait > 0 && !sleepCtx(ctx, wait) {
				return
			}
			nextPoll = time.Now().Add(s.pace)
			taskID, err := s.nextTask(ctx, q)
			if err == nil && taskID != "" {
				s.launch(ctx, taskID, q)
				nextPoll = time.Time{} // after a task, look again at once
				if s.d.orderFairness {
					s.mu.Lock()
					s.nextQueue = (s.indexOf(q) + 1) % len(s.queues)
					s.mu.Unlock()
				}
				s.refreshQueues(ctx)
				lastMeta = s.now()
				break
			}
			if err != nil && ctx.Err() == nil {
				s.logf("Warning: Could not access task queue [%s], error: %v", q.ID, err)
			} else if s.d.foreground || s.global.debug {
				s.logf("No tasks in queue %s", q.ID)
			}
		}
		if !polled && gpuWait {
			// Waiting for GPUs: a task that ends frees some.
			select {
			case <-ctx.Done():
				return
			case <-s.slotFree:
			case <-time.After(30 * time.Second): // other agents' GPUs
			}
			continue
		}
		if !polled {
			// Outside the schedule (or every queue forced off): wait for
			// the next change, checking at least once a minute.
			wait := time.Minute
			if s.sched != nil {
				if next := s.sched.next(s.now()); !next.IsZero() {
					wait = min(wait, max(next.Sub(s.now()), time.Second))
				}
			}
			if !sleepCtx(ctx, wait) {
				return
			}
		}
	}
}

// queueHasEntries peeks whether q has a task waiting (--dynamic-gpus); on
// an error it says yes, so a big task is not passed over by mistake.
func (s *scheduler) queueHasEntries(ctx context.Context, q queueRef) bool {
	var r struct {
		Queue struct {
			Entries []json.RawMessage `json:"entries"`
		} `json:"queue"`
	}
	if err := s.api.call(withBudget(ctx, 10*time.Second), "queues.get_by_id", "2.4", map[string]any{"queue": q.ID, "max_task_entries": 1}, &r); err != nil {
		return true
	}
	return len(r.Queue.Entries) > 0
}

// refreshExternalGPUs marks the GPUs that other live workers of this host
// (<name>:gpu<list>, not our own children) run tasks on, as the reference
// does, so two agents sharing a pool never hand out the same GPU.
func (s *scheduler) refreshExternalGPUs(ctx context.Context) {
	var r struct {
		Workers []struct {
			ID string `json:"id"`
		} `json:"workers"`
	}
	if err := s.api.call(withBudget(ctx, 10*time.Second), "workers.get_all", "", map[string]any{"last_seen": 600}, &r); err != nil {
		return
	}
	prefix := s.cfg.str("agent.worker_name") + ":gpu"
	s.mu.Lock()
	ours := map[string]bool{}
	for _, c := range s.running {
		if c.lease != nil {
			ours[prefix+strings.ReplaceAll(c.lease.visible(), ":", ".")] = true
		}
	}
	s.mu.Unlock()
	var busy []string
	for _, w := range r.Workers {
		if !strings.HasPrefix(w.ID, prefix) || ours[w.ID] {
			continue
		}
		// Another agent's --gpus text: "0,1", "0-3", "0.1".
		devs := strings.TrimPrefix(w.ID, prefix)
		if ids, err := gpuListItems(devs); err == nil {
			busy = append(busy, ids...)
			continue
		}
		for _, g := range strings.Split(devs, ",") {
			busy = append(busy, strings.ReplaceAll(g, ".", ":"))
		}
	}
	s.alloc.setExternal(busy)
}

func (s *scheduler) indexOf(q queueRef) int {
	for i, x := range s.queues {
		if x.ID == q.ID {
			return i
		}
	}
	return 0
}

// pollOrder is the queues in priority order, or rotated for fairness.
func (s *scheduler) pollOrder() []queueRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.d.orderFairness || len(s.queues) == 0 {
		return slices.Clone(s.queues)
	}
	n := s.nextQueue % len(s.queues)
	return append(slices.Clone(s.queues[n:]), s.queues[:n]...)
}

func (s *scheduler) refreshQueues(ctx context.Context) {
	ids := make([]string, len(s.queues))
	for i, q := range s.queues {
		ids[i] = q.ID
	}
	if qs, err := fetchQueues(withBudget(ctx, 10*time.Second), s.api, ids); err == nil {
		s.mu.Lock()
		for i := range qs {
			qs[i].gpuMin, qs[i].gpuMax = s.queues[i].gpuMin, s.queues[i].gpuMax
		}
		s.queues = qs
		s.mu.Unlock()
	}
}

func (s *scheduler) hasFreeSlot() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	if s.alloc != nil {
		free, _ := s.alloc.available()
		return free > 0
	}
	return s.maxRun == 0 || len(s.running) < s.maxRun
}

// nextTask pops the head of a queue ("" when empty). With
// --use-owner-token it also learns the task's owner.
func (s *scheduler) nextTask(ctx context.Context, q queueRef) (string, error) {
	var r struct {
		Entry struct {
			Task string `json:"task"`
		} `json:"entry"`
		TaskInfo struct {
			User string `json:"user"`
		} `json:"task_info"`
	}
	req := map[string]any{"queue": q.ID}
	if s.d.useOwnerToken {
		req["get_task_info"] = true
	}
	err := s.api.call(withBudget(ctx, 15*time.Second), "queues.get_next_task", "2.14", req, &r)
	if err == nil && r.Entry.Task != "" && s.d.useOwnerToken {
		s.mu.Lock()
		s.owners[r.Entry.Task] = r.TaskInfo.User
		s.mu.Unlock()
	}
	return r.Entry.Task, err
}

// launch does the daemon's side of starting a task (agent-daemon.md §4.9)
// and starts the child execute. In the default mode it waits for the task.
func (s *scheduler) launch(ctx context.Context, taskID string, q queueRef) {
	c := withBudget(ctx, 30*time.Second)
	if s.alloc != nil {
		lease := s.alloc.allocate(taskID, q.gpuMin, q.gpuMax)
		if lease == nil {
			// Only this daemon allocates: the check before the poll holds,
			// unless another agent took GPUs meanwhile. Put the task back.
			s.logf("Not enough free GPUs for task %s: returning it to queue %s", taskID, q.Name)
			s.api.call(c, "queues.add_task", "2.5", map[string]any{"queue": q.ID, "task": taskID}, nil)
			return
		}
		s.mu.Lock()
		s.leases[taskID] = lease
		s.mu.Unlock()
	}
	if err := setStatus(c, s.api, "started", taskID, "", "pulled by agent", true); err != nil {
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
	if err := setStatus(c, s.api, "started", taskID, "", "launch by agent", true); err != nil {
		s.logf("Warning: Could not set status=in_progress task id '%s', skipping: %v", taskID, err)
		s.clearCurrent(ctx)
		return
	}
	var ownerToken string
	if s.d.useOwnerToken {
		s.mu.Lock()
		owner := s.owners[taskID]
		delete(s.owners, taskID)
		s.mu.Unlock()
		tok, err := s.api.ownerToken(c, owner)
		if err != nil || owner == "" {
			reason := fmt.Sprintf("--use-owner-token: the server refused a token for the task's owner %q: %v", owner, err)
			s.logf("Error: %s", reason)
			setStatus(c, s.api, "failed", taskID, oneLine(reason), "Changed by clearml-agent "+s.workerID, true)
			s.clearCurrent(ctx)
			return
		}
		ownerToken = tok
	}
	s.logf("Running task '%s'", taskID)
	child, err := s.startChild(ctx, taskID, q.ID, ownerToken)
	if err != nil {
		s.logf("Error: cannot start the task process: %v", err)
		setStatus(c, s.api, "failed", taskID, "agent could not start execute: "+oneLine(err.Error()), "Changed by clearml-agent "+s.workerID, true)
		s.clearCurrent(ctx)
		return
	}
	go s.watchChild(ctx, child)
	if s.maxRun == 1 {
		<-child.done
	}
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
	cpuOnly := s.d.cpuOnly || s.d.servicesMode.set
	gpus := s.d.gpus
	wid := s.workerID
	var inner map[string]string // only for the child execute itself
	switch {
	case lease != nil:
		// The child runs on its GPUs as the worker <name>:gpu<list>, so the
		// UI shows the allocation (agent-daemon.md §4.19).
		gpus, cpuOnly = lease.visible(), false
		wid = s.cfg.str("agent.worker_name") + ":gpu" + strings.ReplaceAll(gpus, ":", ".")
	case s.maxRun == 1:
		// The daemon reports for this worker; the child must not clear
		// the worker's queue with reports of its own.
		inner = map[string]string{"CLEARML_AGENT_DAEMON_CHILD": "1"}
	default:
		wid = s.workerID + ":service:" + taskID
	}
	var argv []string
	if s.global.configFile != "" {
		argv = append(argv, "--config-file", s.global.configFile)
	}
	if s.global.debug {
		argv = append(argv, "--debug")
	}
	argv = append(argv, "execute", "--id", taskID, "--log-level", s.d.logLevel.val)
	if n := int(s.d.optimization); n > 0 {
		argv = append(argv, "-"+strings.Repeat("O", n))
	}
	if s.d.standalone {
		argv = append(argv, "--standalone-mode")
	}
	if cpuOnly {
		argv = append(argv, "--cpu-only")
	} else if gpus != "" {
		argv = append(argv, "--gpus", gpus)
	}
	cmd := exec.Command(self, argv...)
	if s.childCommand != nil {
		cmd = s.childCommand(taskID)
	}
	env := os.Environ()
	for k, v := range inner {
		env = append(env, k+"="+v)
	}
	env = append(env, "CLEARML_WORKER_ID="+wid, "TRAINS_WORKER_ID="+wid)
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
	if s.d.gitUser != "" {
		env = append(env, "CLEARML_AGENT_GIT_USER="+s.d.gitUser)
	}
	if s.d.gitPass != "" {
		env = append(env, "CLEARML_AGENT_GIT_PASS="+s.d.gitPass)
	}
	child = &childTask{taskID: taskID, queueID: queueID, done: make(chan struct{}), cleanup: func() {}, lease: lease}
	if s.d.docker.set && s.childCommand == nil {
		task, err := getTask(withBudget(ctx, 30*time.Second), s.api, taskID)
		if err != nil {
			return nil, err
		}
		dargv, cleanup, err := dockerTaskArgv(s.cfg, task, dockerRunOptions{
			cliDocker: s.d.docker.vals, cliDockerSet: true, workerID: wid, parentWorkerID: s.workerID,
			gpus: gpus, cpuOnly: cpuOnly, standalone: s.d.standalone,
			servicesMode: s.maxRun != 1, logLevel: s.d.logLevel.val, optimization: int(s.d.optimization),
			workerTags: shellJoin(s.tags), env: inner, debug: s.global.debug, gitUser: s.d.gitUser, gitPass: s.d.gitPass,
		})
		if err != nil {
			return nil, err
		}
		s.logf("Executing: %s", dockerLoggedCommand(s.cfg, dargv))
		cmd = exec.Command(dargv[0], dargv[1:]...)
		child.container, child.cleanup = dockerArgvName(dargv), cleanup
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
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
		if !s.global.debug {
			dockerRemove(context.Background(), child.container)
		}
		child.cleanup()
	}
	// execute sets the final status itself; a task still in_progress means
	// it died first (a crash of ours must not leave the task running).
	bg := withBudget(context.Background(), 5*time.Minute)
	var r struct {
		Tasks []struct {
			Status string `json:"status"`
		} `json:"tasks"`
	}
	if err := s.api.call(bg, "tasks.get_all", "2.14", map[string]any{"id": []string{child.taskID}, "only_fields": []string{"status"}, "search_hidden": true}, &r); err == nil &&
		len(r.Tasks) == 1 && r.Tasks[0].Status == "in_progress" {
		reason := fmt.Sprintf("worker execution exit code %d", child.code)
		if err := setStatus(bg, s.api, "failed", child.taskID, reason, "Changed by clearml-agent "+s.workerID, true); err != nil {
			s.logf("Warning: could not update task id '%s' status. Task exit code %d", child.taskID, child.code)
		}
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

func (s *scheduler) clearCurrent(ctx context.Context) {
	s.mu.Lock()
	s.current = nil
	s.mu.Unlock()
	s.report(ctx)
}

// setRuntimeHostname records which host runs the task, as the reference.
func (s *scheduler) setRuntimeHostname(ctx context.Context, taskID string) {
	var r struct {
		Tasks []struct {
			Runtime map[string]any `json:"runtime"`
		} `json:"tasks"`
	}
	err := s.api.call(ctx, "tasks.get_all", "2.15", map[string]any{"id": []string{taskID}, "only_fields": []string{"runtime"}, "search_hidden": true}, &r)
	runtime := map[string]any{}
	if err == nil && len(r.Tasks) == 1 && r.Tasks[0].Runtime != nil {
		runtime = r.Tasks[0].Runtime
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
	if _, err := s.api.do(ctx, request{endpoint: "events.add_batch", method: "POST", contentType: "application/json-lines", body: ev}); err != nil {
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
	if err := s.api.call(withBudget(ctx, 10*time.Second), "workers.status_report", "", body, nil); err != nil && ctx.Err() == nil {
		s.logf("Warning: status report failed: %v", err)
	}
}

// reportLoop sends status reports on the reference's cadence: 3 s after
// start, then every 30 s. It also keeps the pid file fresh against temp
// cleaners.
func (s *scheduler) reportLoop(ctx context.Context, every time.Duration, inst *agentInstance) {
	if !sleepCtx(ctx, 3*time.Second) {
		return
	}
	for {
		s.report(ctx)
		if inst != nil {
			inst.refresh()
		}
		if !sleepCtx(ctx, every) {
			return
		}
	}
}

// drain stops taking tasks and waits for the running ones up to grace;
// then (or on a second signal) stops them. Their execute children set the
// final status ("user abort").
func (s *scheduler) drain(grace time.Duration, again <-chan os.Signal) {
	s.mu.Lock()
	s.draining = true
	children := make([]*childTask, 0, len(s.running))
	for _, c := range s.running {
		children = append(children, c)
	}
	s.mu.Unlock()
	if len(children) == 0 {
		return
	}
	s.logf("Draining: waiting up to %s for %d running task(s) to finish", grace, len(children))
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	allDone := make(chan struct{})
	go func() {
		for _, c := range children {
			<-c.done
		}
		close(allDone)
	}()
	select {
	case <-allDone:
		return
	case <-deadline.C:
		s.logf("Grace period over: stopping the running task(s)")
	case <-again:
		s.logf("Second signal: stopping the running task(s) now")
	}
	stopGrace := 10 * time.Second
	if s.cfg != nil {
		stopGrace = abortGrace(s.cfg)
	}
	for _, c := range children {
		if c.container != "" {
			// Signalling the docker client would leave the container running.
			go dockerStop(context.Background(), c.container, stopGrace)
		} else {
			c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	<-allDone
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
