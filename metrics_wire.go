package main

// The wiring of the metrics into the agent: which process counts
// (liveMetrics), the hooks the loops and the API client call, and the
// counters a task's execute hands to the daemon when it ends.
//
// The hooks are methods on a nil-able *agentMetricSet: without
// --metrics-address nothing is counted and a hook is one atomic load and a
// nil check, so commands and daemons without metrics pay nothing.
//
// A daemon's tasks run in child execute processes. Their console lines
// shipped and spooled, venv cache hits and misses, venv build times and API
// requests reach the daemon when the child ends: the daemon names a file in
// CLEARML_AGENT_METRICS_FILE, the child writes its counters there at exit,
// and the daemon adds them to its own and removes the file. So these
// counters move when a task ends, not while it runs; a child that is
// killed, or runs inside a container (--docker), reports nothing.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// liveMetrics is the process's metric set while it counts: a daemon or
// glue with a metrics listener, or a daemon's child execute asked for its
// counters; nil otherwise.
var liveMetrics atomic.Pointer[agentMetricSet]

func metricsOn() *agentMetricSet { return liveMetrics.Load() }

// enableMetrics makes the process count.
func enableMetrics() *agentMetricSet {
	m := agentMetrics()
	liveMetrics.Store(m)
	return m
}

// metricsAddress is the listener's address: the flag, else
// CLEARML_AGENT_METRICS_ADDRESS, else agent.metrics.address (the
// environment variable is mapped onto the key in config.go); "" is off.
func metricsAddress(flagValue string, cfg *agentConfig) string {
	if flagValue != "" {
		return flagValue
	}
	return strings.TrimSpace(cfg.str("agent.metrics.address"))
}

// startAgentMetrics starts counting and the listener when an address is
// set; stop closes it (a no-op when off). It runs before the worker
// registers, so a port in use stops the command with one line and exit
// status 1, and the server never sees the worker.
func startAgentMetrics(flagValue string, cfg *agentConfig, logf func(string, ...any)) (stop func(), err error) {
	addr := metricsAddress(flagValue, cfg)
	if addr == "" {
		return func() {}, nil
	}
	m := enableMetrics()
	s, err := listenMetrics(addr, newMetricsHandler(m.reg, agentHealth))
	if err != nil {
		liveMetrics.Store(nil)
		return nil, &exitError{code: 1, msg: err.Error()}
	}
	logf("Metrics and health on http://%s (/metrics /healthz /readyz)", s.addr)
	return s.stop, nil
}

// Hooks. Each is safe on a nil set.

// apiAnswer counts one HTTP attempt to the API server and moves the outage
// clock: no answer, or a gateway's 502/503/504 (the server behind a proxy
// is away), is an outage; any other answer ends one.
func (m *agentMetricSet) apiAnswer(endpoint string, status int, err error) {
	if m == nil {
		return
	}
	m.apiRequests.with(endpoint, apiResultClass(status, err)).inc()
	// No task can be taken while the server is away: not ready (only on
	// the change, so an answer costs no lock of the health state).
	if err != nil || status == 502 || status == 503 || status == 504 {
		if m.outage.down(time.Now()) {
			agentHealth.setNotReady(readyServer, "the API server does not answer (outage)")
		}
	} else if m.outage.up(time.Now()) {
		agentHealth.setReady(readyServer)
	}
}

func (m *agentMetricSet) apiRetry(endpoint string) {
	if m != nil {
		m.apiRetries.with(endpoint).inc()
	}
}

func (m *agentMetricSet) queuePolled(queue string, err error) {
	if m == nil {
		return
	}
	m.queuePolls.with(queue).inc()
	if err != nil {
		m.queuePollErrs.with(queue).inc()
	}
}

// taskStarted counts a task started from queue; enqueued is when the
// server queued it (zero: unknown, no pickup latency). A server clock
// ahead of ours gives a negative latency: counted as 0.
func (m *agentMetricSet) taskStarted(queue string, enqueued, now time.Time) {
	if m == nil {
		return
	}
	m.tasksStarted.with(queue).inc()
	if !enqueued.IsZero() {
		m.pickupLatency.with(queue).observe(max(now.Sub(enqueued).Seconds(), 0))
	}
}

func (m *agentMetricSet) taskEnded(queue, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.tasksEnded.with(queue, result).inc()
	m.taskDuration.with(queue, result).observe(d.Seconds())
}

func (m *agentMetricSet) linesDelivered(n int) {
	if m != nil && n > 0 {
		m.linesShipped.add(float64(n))
	}
}

func (m *agentMetricSet) linesToSpool(n int) {
	if m != nil && n > 0 {
		m.linesSpooled.add(float64(n))
	}
}

func (m *agentMetricSet) venvCache(hit bool) {
	switch {
	case m == nil:
	case hit:
		m.venvCacheHits.inc()
	default:
		m.venvCacheMiss.inc()
	}
}

func (m *agentMetricSet) venvBuilt(d time.Duration) {
	if m != nil {
		m.venvBuild.observe(d.Seconds())
	}
}

// parseEnqueueTime reads a queue entry's "added" time: ISO 8601 with an
// offset (clearml-server writes "2024-05-01T10:00:00.123000+00:00"), or
// without one, taken as UTC.
func parseEnqueueTime(s string) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t
	}
	return time.Time{}
}

// The counters a child execute hands to its daemon.

// metricsFileEnv names the file a daemon's child execute writes its
// counters to at exit.
const metricsFileEnv = "CLEARML_AGENT_METRICS_FILE"

// childCounters is that file: the counter and histogram series the child
// moved (families by name, so both sides are this same binary), and the
// final status the child set ("" when it set none).
type childCounters struct {
	Result     string            `json:"result,omitempty"`
	Counters   []childSeries     `json:"counters,omitempty"`
	Histograms []childHistSeries `json:"histograms,omitempty"`
}

type childSeries struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels,omitempty"`
	Value  float64  `json:"value"`
}

type childHistSeries struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels,omitempty"`
	Counts []uint64 `json:"counts"` // per bucket, +Inf last: not cumulative
	Sum    float64  `json:"sum"`
}

// childResult is the final status this execute set, for its daemon.
var childResult atomic.Pointer[string]

func noteTaskResult(action string) {
	if action != "" {
		childResult.Store(&action)
	}
}

// startChildMetrics is execute's side: when its daemon asked for the
// counters, count, and return the function that writes them at exit.
func startChildMetrics() (write func()) {
	path := os.Getenv(metricsFileEnv)
	if path == "" {
		return func() {}
	}
	os.Unsetenv(metricsFileEnv) // for this process only, not the task's
	m := enableMetrics()
	return func() { writeChildCounters(m, path) }
}

// writeChildCounters writes m's counter and histogram series that moved,
// and the result noted, to path.
func writeChildCounters(m *agentMetricSet, path string) {
	var out childCounters
	if r := childResult.Load(); r != nil {
		out.Result = *r
	}
	m.reg.mu.Lock()
	fams := m.reg.families
	m.reg.mu.Unlock()
	for _, f := range fams {
		if f.collect != nil || f.kind == kindGauge {
			continue
		}
		f.mu.RLock()
		for _, s := range f.sorted {
			if f.kind == kindCounter {
				if v := (*metricCounter)(s).value(); v > 0 {
					out.Counters = append(out.Counters, childSeries{f.name, s.labelValues, v})
				}
				continue
			}
			h := childHistSeries{Name: f.name, Labels: s.labelValues, Counts: make([]uint64, len(s.counts)), Sum: (*metricGauge)(s).value()}
			var n uint64
			for i := range s.counts {
				h.Counts[i] = s.counts[i].Load()
				n += h.Counts[i]
			}
			if n > 0 {
				out.Histograms = append(out.Histograms, h)
			}
		}
		f.mu.RUnlock()
	}
	data, _ := json.Marshal(out)
	// Written whole, then renamed: the daemon never reads half a file.
	tmp := path + ".tmp"
	if os.WriteFile(tmp, data, 0o600) == nil {
		os.Rename(tmp, path)
	}
}

// childMetricsPath is the file the daemon names for a child: in the
// agent's temp dir, by task id (a plain id, checked before launch).
func childMetricsPath(dir, taskID string) string {
	return filepath.Join(dir, fmt.Sprintf(".clearml_agent.metrics.%d.%s.json", os.Getpid(), taskID))
}

// mergeChildMetrics adds a child's counters to m and removes the file; it
// returns the final status the child set ("" when unknown).
func (m *agentMetricSet) mergeChildMetrics(path string) (result string, err error) {
	data, err := os.ReadFile(path)
	os.Remove(path)
	os.Remove(path + ".tmp")
	if m == nil || errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var in childCounters
	if err := json.Unmarshal(data, &in); err != nil {
		return "", fmt.Errorf("%s: %v", path, err)
	}
	m.reg.mu.Lock()
	fams := map[string]*metricFamily{}
	for _, f := range m.reg.families {
		fams[f.name] = f
	}
	m.reg.mu.Unlock()
	for _, c := range in.Counters {
		if f := fams[c.Name]; f != nil && f.kind == kindCounter && f.collect == nil && len(c.Labels) == len(f.labels) {
			(*metricCounter)(f.get(c.Labels)).add(c.Value)
		}
	}
	for _, h := range in.Histograms {
		f := fams[h.Name]
		if f == nil || f.kind != kindHistogram || len(h.Labels) != len(f.labels) || len(h.Counts) != len(f.buckets)+1 {
			continue
		}
		s := f.get(h.Labels)
		for i, n := range h.Counts {
			s.counts[i].Add(n)
		}
		addFloatBits(&s.bits, h.Sum)
	}
	switch in.Result {
	case taskCompleted, taskFailed, taskStopped:
		return in.Result, nil
	}
	return "", nil
}

// The scheduler's side.

// notePickup keeps a pulled task's enqueue time until it starts.
func (s *scheduler) notePickup(taskID, added string) {
	t := parseEnqueueTime(added)
	if t.IsZero() {
		return
	}
	s.mu.Lock()
	if s.pickups == nil {
		s.pickups = map[string]time.Time{}
	}
	s.pickups[taskID] = t
	s.mu.Unlock()
}

func (s *scheduler) takePickup(taskID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.pickups[taskID]
	delete(s.pickups, taskID)
	return t
}

// countEnded counts a child's end: its result is the status the daemon
// set (action), else the one the child reported setting, else the one its
// exit code gives.
func (s *scheduler) countEnded(child *childTask, action string, cause stopCause) {
	m := metricsOn()
	if m == nil || child.started.IsZero() {
		return
	}
	result := action
	if child.metricsFile != "" {
		r, err := m.mergeChildMetrics(child.metricsFile)
		if err != nil {
			s.logf("Warning: metrics of task %s: %v", child.taskID, err)
		}
		if result == "" {
			result = r
		}
	}
	if result == "" {
		_, result, _, _ = finalStatus(child.code, "", cause)
	}
	if result != taskCompleted && result != taskStopped {
		result = taskFailed
	}
	m.taskEnded(child.queueName, result, time.Since(child.started))
	m.refreshSpoolBytes(tempDirFor(s.cfg)) // the task's spool is delivered, or left
}

// refreshSpoolBytes sets the spool gauge to the console spool files now in
// dir (the tasks' temp dir): the tasks are other processes, so their spool
// is read from the disk, at each status report and when a task ends.
func (m *agentMetricSet) refreshSpoolBytes(dir string) {
	if m == nil {
		return
	}
	files, _ := filepath.Glob(filepath.Join(dir, "clearml-console-*.spool"))
	var n int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	m.spoolBytes.set(float64(n))
}

// glueJobEnded counts a glue's job that it stops tracking: the task's
// status as last read gives the result (a task the glue failed, or one
// still in_progress, is failed; a deleted one stopped), and the duration
// runs from the submission.
func (m *agentMetricSet) glueJobEnded(e *glueJob, status string, exists bool, now time.Time) {
	if m == nil {
		return
	}
	result := taskFailed
	switch {
	case !exists || status == "stopped":
		result = taskStopped
	case status == "completed" || status == "published":
		result = taskCompleted
	}
	m.taskEnded(firstNonEmpty(e.QueueName, e.Queue), result, now.Sub(e.Submitted))
}
