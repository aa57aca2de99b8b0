package main

// Prometheus metrics: a small registry (counters, gauges and histograms
// with fixed label names, plus values read at scrape time) and a writer for
// the text exposition format 0.0.4. The agent's families are declared in
// one place, newAgentMetricSet, with their HELP text.
//
// The hot path is one map lookup under a read lock to find a series (no
// allocation once the label set exists; callers on a hot loop can keep the
// *metricCounter) and one atomic add. Nothing here runs a goroutine.

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

type metricKind uint8

const (
	kindCounter metricKind = iota
	kindGauge
	kindHistogram
)

func (k metricKind) String() string {
	return [...]string{"counter", "gauge", "histogram"}[k]
}

// metricSeries is one label set of a family. Counters keep whole
// increments in n (one atomic add) and fractional adds as float bits;
// gauges keep their value in bits; histograms count each bucket apart
// (the writer makes them cumulative) and keep their sum in bits.
type metricSeries struct {
	labelValues []string
	n           atomic.Uint64
	bits        atomic.Uint64
	counts      []atomic.Uint64 // histograms: one per bound, then +Inf
	upper       []float64       // histograms: the family's bounds
}

// The typed views of a series; a caller holds one of these.
type (
	metricCounter   metricSeries
	metricGauge     metricSeries
	metricHistogram metricSeries
)

// collectFunc reports values read at scrape time (RSS, CPU, GPU readings).
// It runs on the scraping goroutine: it must be quick and never block on
// the network or on a loop's lock; read a cached value.
type collectFunc func(emit func(v float64, labelValues ...string))

// metricFamily is one metric name with its HELP, TYPE and label names.
type metricFamily struct {
	name, help string
	kind       metricKind
	labels     []string
	buckets    []float64
	collect    collectFunc

	mu     sync.RWMutex
	series map[string]*metricSeries
	sorted []*metricSeries // by label values, for the writer
}

// metricRegistry holds the families that one /metrics page shows.
type metricRegistry struct {
	mu       sync.Mutex
	families []*metricFamily // sorted by name
	names    map[string]bool // family names and histogram suffixed names
}

func newMetricRegistry() *metricRegistry {
	return &metricRegistry{names: map[string]bool{}}
}

// validMetricName: [a-zA-Z_:][a-zA-Z0-9_:]* for a metric, the same
// without ':' for a label (checked by hand: a regexp compiled at package
// init would cost every command, metrics or not).
func validMetricName(s string, label bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || (i > 0 && c >= '0' && c <= '9') || (!label && c == ':')
		if !ok {
			return false
		}
	}
	return s != ""
}

// register adds a family; a bad declaration is a programming error and
// panics (the families are declared at start-up, and a test writes them).
func (r *metricRegistry) register(f *metricFamily) *metricFamily {
	if !validMetricName(f.name, false) || strings.TrimSpace(f.help) == "" {
		panic(fmt.Sprintf("metrics: bad name or empty help for %q", f.name))
	}
	if f.kind == kindCounter && !strings.HasSuffix(f.name, "_total") {
		panic("metrics: counter " + f.name + " must end in _total")
	}
	for i, l := range f.labels {
		if !validMetricName(l, true) || strings.HasPrefix(l, "__") || slices.Contains(f.labels[:i], l) ||
			(f.kind == kindHistogram && l == "le") {
			panic(fmt.Sprintf("metrics: bad label %q on %s", l, f.name))
		}
	}
	for i, b := range f.buckets {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= f.buckets[i-1]) {
			panic("metrics: buckets of " + f.name + " must be finite and increasing")
		}
	}
	names := []string{f.name}
	if f.kind == kindHistogram {
		names = append(names, f.name+"_bucket", f.name+"_sum", f.name+"_count")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		if r.names[n] {
			panic("metrics: " + n + " declared twice")
		}
		r.names[n] = true
	}
	f.series = map[string]*metricSeries{}
	i := sort.Search(len(r.families), func(i int) bool { return r.families[i].name > f.name })
	r.families = slices.Insert(slices.Clip(r.families), i, f) // a new array: writers hold the old one
	if len(f.labels) == 0 && f.collect == nil {
		f.get(nil) // a family without labels shows 0 from the start
	}
	return f
}

type (
	counterVec   struct{ f *metricFamily }
	gaugeVec     struct{ f *metricFamily }
	histogramVec struct{ f *metricFamily }
)

func (r *metricRegistry) counterVec(name, help string, labels ...string) counterVec {
	return counterVec{r.register(&metricFamily{name: name, help: help, kind: kindCounter, labels: labels})}
}

func (r *metricRegistry) gaugeVec(name, help string, labels ...string) gaugeVec {
	return gaugeVec{r.register(&metricFamily{name: name, help: help, kind: kindGauge, labels: labels})}
}

func (r *metricRegistry) histogramVec(name, help string, buckets []float64, labels ...string) histogramVec {
	return histogramVec{r.register(&metricFamily{name: name, help: help, kind: kindHistogram, labels: labels, buckets: buckets})}
}

// gaugeFunc and counterFunc declare families whose series come from fn at
// scrape time.
func (r *metricRegistry) gaugeFunc(name, help string, labels []string, fn collectFunc) {
	r.register(&metricFamily{name: name, help: help, kind: kindGauge, labels: labels, collect: fn})
}

func (r *metricRegistry) counterFunc(name, help string, labels []string, fn collectFunc) {
	r.register(&metricFamily{name: name, help: help, kind: kindCounter, labels: labels, collect: fn})
}

// with returns the series for these label values (in the family's label
// order), creating it on first use.
func (v counterVec) with(labelValues ...string) *metricCounter {
	return (*metricCounter)(v.f.get(labelValues))
}

func (v gaugeVec) with(labelValues ...string) *metricGauge {
	return (*metricGauge)(v.f.get(labelValues))
}

func (v histogramVec) with(labelValues ...string) *metricHistogram {
	return (*metricHistogram)(v.f.get(labelValues))
}

// get finds or creates a series. The key is built in a stack buffer and
// the map lookup with string(key) does not allocate.
func (f *metricFamily) get(values []string) *metricSeries {
	if len(values) != len(f.labels) || f.collect != nil {
		panic(fmt.Sprintf("metrics: %s takes labels %v, got %d values", f.name, f.labels, len(values)))
	}
	var buf [128]byte
	key := buf[:0]
	for _, v := range values {
		key = binaryAppendLen(key, len(v))
		key = append(key, v...)
	}
	f.mu.RLock()
	s := f.series[string(key)]
	f.mu.RUnlock()
	if s != nil {
		return s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s = f.series[string(key)]; s == nil {
		s = &metricSeries{labelValues: slices.Clone(values)}
		if f.kind == kindHistogram {
			s.upper = f.buckets
			s.counts = make([]atomic.Uint64, len(f.buckets)+1)
		}
		f.series[string(key)] = s
		i, _ := slices.BinarySearchFunc(f.sorted, s, func(a, b *metricSeries) int { return slices.Compare(a.labelValues, b.labelValues) })
		f.sorted = slices.Insert(f.sorted, i, s)
	}
	return s
}

// binaryAppendLen prefixes each label value with its length, so no value
// can forge another label set's key.
func binaryAppendLen(b []byte, n int) []byte {
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

func addFloatBits(a *atomic.Uint64, d float64) {
	for {
		old := a.Load()
		if a.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

func (c *metricCounter) inc() { c.n.Add(1) }

// add drops negative and NaN amounts: a counter only goes up, and a
// metrics mistake must not stop the agent.
func (c *metricCounter) add(d float64) {
	if !(d >= 0) {
		return
	}
	if d == math.Trunc(d) && d < 1<<64 {
		c.n.Add(uint64(d))
		return
	}
	addFloatBits(&c.bits, d)
}

func (c *metricCounter) value() float64 {
	return float64(c.n.Load()) + math.Float64frombits(c.bits.Load())
}

func (g *metricGauge) set(v float64) { g.bits.Store(math.Float64bits(v)) }
func (g *metricGauge) add(d float64) { addFloatBits(&g.bits, d) }
func (g *metricGauge) inc()          { g.add(1) }
func (g *metricGauge) dec()          { g.add(-1) }
func (g *metricGauge) value() float64 {
	return math.Float64frombits(g.bits.Load())
}

// observe records one value; NaN is dropped (it would make _sum NaN for
// the life of the process).
func (h *metricHistogram) observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	h.counts[sort.SearchFloat64s(h.upper, v)].Add(1)
	addFloatBits(&h.bits, v)
}

// observeSince records the seconds since t0.
func (h *metricHistogram) observeSince(t0 time.Time) { h.observe(time.Since(t0).Seconds()) }

// The exposition writer.

const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

type collected struct {
	values []string
	v      float64
}

// appendText renders every family onto b: HELP and TYPE once per family,
// families by name, series by label values, so two scrapes of the same
// state are equal. A scrape allocates little (an idle agent's heap only
// shrinks at a GC, which may be minutes away): pass the last page's buffer.
func (r *metricRegistry) appendText(b []byte) []byte {
	r.mu.Lock()
	fams := r.families // only ever replaced, never changed in place
	r.mu.Unlock()
	for _, f := range fams {
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.help, false)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.kind.String()...)
		b = append(b, '\n')
		if f.collect != nil {
			b = f.writeCollected(b)
			continue
		}
		// Loops never wait here: they take the read lock too, and a new
		// label set waits at most for this family's lines.
		f.mu.RLock()
		for _, s := range f.sorted {
			b = f.writeSeries(b, s)
		}
		f.mu.RUnlock()
	}
	return b
}

func (r *metricRegistry) write(w io.Writer) error {
	_, err := w.Write(r.appendText(nil))
	return err
}

func (f *metricFamily) writeCollected(b []byte) []byte {
	if len(f.labels) == 0 { // one value: written as it comes
		done := false
		f.collect(func(v float64, _ ...string) {
			if !done && (f.kind != kindCounter || v >= 0) {
				b, done = f.appendSample(b, "", nil, "", v), true
			}
		})
		return b
	}
	var got []collected
	f.collect(func(v float64, values ...string) {
		if len(values) == len(f.labels) {
			got = append(got, collected{slices.Clone(values), v})
		}
	})
	slices.SortStableFunc(got, func(a, b collected) int { return slices.Compare(a.values, b.values) })
	for i, c := range got {
		if i > 0 && slices.Equal(c.values, got[i-1].values) {
			continue // a series twice would fail the whole scrape
		}
		if f.kind == kindCounter && !(c.v >= 0) {
			continue
		}
		b = f.appendSample(b, "", c.values, "", c.v)
	}
	return b
}

func (f *metricFamily) writeSeries(b []byte, s *metricSeries) []byte {
	switch f.kind {
	case kindCounter:
		if s.bits.Load() == 0 {
			// Whole counts are written exactly, even past 2^53.
			b = f.appendName(b, "", s.labelValues, "", 0)
			b = strconv.AppendUint(b, s.n.Load(), 10)
			return append(b, '\n')
		}
		return f.appendSample(b, "", s.labelValues, "", (*metricCounter)(s).value())
	case kindGauge:
		return f.appendSample(b, "", s.labelValues, "", (*metricGauge)(s).value())
	}
	// Histogram: _count is the sum of the buckets read here, so +Inf and
	// _count agree even while another goroutine observes.
	var cum uint64
	for i := range s.counts {
		cum += s.counts[i].Load()
		le := math.Inf(1)
		if i < len(s.upper) {
			le = s.upper[i]
		}
		b = f.appendName(b, "_bucket", s.labelValues, "le", le)
		b = strconv.AppendUint(b, cum, 10)
		b = append(b, '\n')
	}
	b = f.appendSample(b, "_sum", s.labelValues, "", math.Float64frombits(s.bits.Load()))
	b = f.appendName(b, "_count", s.labelValues, "", 0)
	b = strconv.AppendUint(b, cum, 10)
	return append(b, '\n')
}

func (f *metricFamily) appendSample(b []byte, suffix string, values []string, extra string, v float64) []byte {
	b = f.appendName(b, suffix, values, extra, 0)
	b = appendMetricFloat(b, v)
	return append(b, '\n')
}

// appendName writes name{labels} and the space before the value; extra
// names one more label (le) whose value is the float le.
func (f *metricFamily) appendName(b []byte, suffix string, values []string, extra string, le float64) []byte {
	b = append(b, f.name...)
	b = append(b, suffix...)
	if len(values) > 0 || extra != "" {
		b = append(b, '{')
		for i, v := range values {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, f.labels[i]...)
			b = append(b, `="`...)
			b = appendEscaped(b, v, true)
			b = append(b, '"')
		}
		if extra != "" {
			if len(values) > 0 {
				b = append(b, ',')
			}
			b = append(b, extra...)
			b = append(b, `="`...)
			b = appendMetricFloat(b, le)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ' ')
}

// appendMetricFloat writes a value the way Prometheus parses it.
func appendMetricFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendEscaped escapes a label value (\\, \", \n) or HELP text (\\, \n).
// Invalid UTF-8 becomes U+FFFD: Prometheus rejects the whole scrape for one
// bad byte, and a queue name is outside input.
func appendEscaped(b []byte, s string, quote bool) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// The agent's metric families.

// buildNVML is true in builds with the NVML backend (metrics_nvml.go).
var buildNVML bool

// Task results, the values of the result label of the task families.
const (
	taskCompleted = "completed"
	taskFailed    = "failed"
	taskStopped   = "stopped" // aborted by a user or by the agent
)

var (
	taskDurationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 259200}
	pickupBuckets       = []float64{0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800, 3600}
	venvBuildBuckets    = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800}
)

// agentMetricSet is every family the agent exposes. Labels: queue is the
// queue's name (operators chose it and read dashboards by it; the agent
// serves a fixed few, so the series stay few); endpoint is the API call
// name (a fixed set in the code). No task id or name, user, secret or
// token is ever a label value.
type agentMetricSet struct {
	reg *metricRegistry

	tasksStarted   counterVec   // queue
	tasksEnded     counterVec   // queue, result
	taskDuration   histogramVec // queue, result
	pickupLatency  histogramVec // queue
	queuePolls     counterVec   // queue
	queuePollErrs  counterVec   // queue
	apiRequests    counterVec   // endpoint, class
	apiRetries     counterVec   // endpoint
	outage         outageClock
	linesShipped   *metricCounter
	linesSpooled   *metricCounter
	spoolBytes     *metricGauge
	venvCacheHits  *metricCounter
	venvCacheMiss  *metricCounter
	venvBuild      *metricHistogram
	gpuReadings    atomic.Pointer[[]gpuInfo]
	readiness      func() bool
	processStarted time.Time
}

// agentMetrics is the process's set, made on first use so that commands
// which never touch metrics (help, list, config) pay nothing for it.
var agentMetrics = sync.OnceValue(func() *agentMetricSet {
	return newAgentMetricSet(newMetricRegistry(), agentHealth.isReady)
})

func newAgentMetricSet(r *metricRegistry, ready func() bool) *agentMetricSet {
	m := &agentMetricSet{reg: r, readiness: ready, processStarted: time.Now()}
	r.gaugeFunc("clearml_agent_build_info", "Always 1; the labels say which agent build this is.",
		[]string{"version", "go_version", "nvml"}, func(emit func(float64, ...string)) {
			emit(1, agentVersion, runtime.Version(), strconv.FormatBool(buildNVML))
		})
	m.tasksStarted = r.counterVec("clearml_agent_tasks_started_total", "Tasks this agent pulled from a queue and started.", "queue")
	m.tasksEnded = r.counterVec("clearml_agent_tasks_total", "Tasks that ended, by result: completed, failed or stopped (aborted).", "queue", "result")
	m.taskDuration = r.histogramVec("clearml_agent_task_duration_seconds", "Time from a task's start by this agent to its end.", taskDurationBuckets, "queue", "result")
	m.pickupLatency = r.histogramVec("clearml_agent_task_pickup_latency_seconds", "Time from a task's enqueueing to its start by this agent.", pickupBuckets, "queue")
	m.queuePolls = r.counterVec("clearml_agent_queue_polls_total", "Requests for the next task of a queue.", "queue")
	m.queuePollErrs = r.counterVec("clearml_agent_queue_poll_errors_total", "Requests for the next task of a queue that failed.", "queue")
	m.apiRequests = r.counterVec("clearml_agent_api_requests_total", "Requests to the ClearML API server, by endpoint and result class (2xx, 3xx, 4xx, 5xx, or error when no answer came).", "endpoint", "class")
	m.apiRetries = r.counterVec("clearml_agent_api_retries_total", "API requests sent again after a network error or a retryable answer.", "endpoint")
	r.counterFunc("clearml_agent_api_outages_total", "Times the API server became unreachable.", nil, m.outage.collectCount)
	r.counterFunc("clearml_agent_api_outage_seconds_total", "Time spent with the API server unreachable, the current outage included.", nil, m.outage.collectSeconds)
	m.linesShipped = r.counterVec("clearml_agent_console_lines_shipped_total", "Console lines of tasks delivered to the server.").with()
	m.linesSpooled = r.counterVec("clearml_agent_console_lines_spooled_total", "Console lines written to the disk spool while the server could not take them.").with()
	m.spoolBytes = r.gaugeVec("clearml_agent_console_spool_bytes", "Bytes of console lines now held in the disk spool.").with()
	m.venvCacheHits = r.counterVec("clearml_agent_venv_cache_hits_total", "Tasks that reused a cached virtual environment.").with()
	m.venvCacheMiss = r.counterVec("clearml_agent_venv_cache_misses_total", "Tasks that found no cached virtual environment and built one.").with()
	m.venvBuild = r.histogramVec("clearml_agent_venv_build_duration_seconds", "Time to create a virtual environment and install a task's requirements.", venvBuildBuckets).with()
	gpu := []string{"gpu", "uuid"}
	r.gaugeFunc("clearml_agent_gpu_utilization_ratio", "GPU utilisation, 0 to 1, at the last sample.", gpu, m.gpuCollect(func(g gpuInfo) (float64, bool) { return g.Util / 100, g.HasUtil }))
	r.gaugeFunc("clearml_agent_gpu_memory_used_bytes", "GPU memory in use at the last sample.", gpu, m.gpuCollect(func(g gpuInfo) (float64, bool) { return g.MemUsedMB * (1 << 20), g.HasMem }))
	r.gaugeFunc("clearml_agent_gpu_memory_total_bytes", "GPU memory in all.", gpu, m.gpuCollect(func(g gpuInfo) (float64, bool) { return g.MemTotalMB * (1 << 20), g.HasMem && g.MemTotalMB > 0 }))
	r.gaugeFunc("clearml_agent_gpu_temperature_celsius", "GPU temperature at the last sample.", gpu, m.gpuCollect(func(g gpuInfo) (float64, bool) { return g.Temp, g.HasTemp }))
	r.gaugeFunc("clearml_agent_ready", "1 when the agent is registered and able to take a task (as /readyz says), else 0.", nil, func(emit func(float64, ...string)) {
		if m.readiness != nil && m.readiness() {
			emit(1)
		} else {
			emit(0)
		}
	})
	// The process families keep their standard names, as every exporter
	// writes them, so stock dashboards and alerts work unchanged.
	r.gaugeFunc("process_resident_memory_bytes", "Resident memory of the agent process.", nil, collectRSS)
	r.counterFunc("process_cpu_seconds_total", "User and system CPU time of the agent process.", nil, collectCPU)
	r.gaugeFunc("process_start_time_seconds", "Start time of the agent process, in seconds since the Unix epoch.", nil, func(emit func(float64, ...string)) {
		emit(float64(m.processStarted.UnixMilli()) / 1000)
	})
	return m
}

// setGPUReadings publishes the last GPU sample; the stats sampler calls it
// each time it reads the GPUs, and scrapes read it (never the GPUs).
func (m *agentMetricSet) setGPUReadings(gpus []gpuInfo) {
	gpus = slices.Clone(gpus)
	m.gpuReadings.Store(&gpus)
}

func (m *agentMetricSet) gpuCollect(read func(gpuInfo) (float64, bool)) collectFunc {
	return func(emit func(float64, ...string)) {
		p := m.gpuReadings.Load()
		if p == nil {
			return
		}
		for _, g := range *p {
			if v, ok := read(g); ok {
				emit(v, g.id(), g.UUID)
			}
		}
	}
}

// apiResultClass is the class label of an API request: the status class,
// or "error" when no answer came (network error, timeout).
func apiResultClass(status int, err error) string {
	switch {
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 300 && status < 400:
		return "3xx"
	case status >= 400 && status < 500:
		return "4xx"
	case status >= 500 && status < 600:
		return "5xx"
	}
	return "error"
}

// outageClock counts outages of the API server and the time spent in them;
// the time of an outage still going on counts at each scrape, so a long
// outage shows while it lasts.
type outageClock struct {
	mu    sync.Mutex
	since time.Time // zero while the server is reachable
	total time.Duration
	count uint64
}

// down marks the server unreachable (again marks nothing new); began says
// whether an outage began.
func (o *outageClock) down(now time.Time) (began bool) {
	o.mu.Lock()
	if began = o.since.IsZero(); began {
		o.since = now
		o.count++
	}
	o.mu.Unlock()
	return began
}

// up marks the server reachable and adds the outage's length; ended says
// whether an outage ended.
func (o *outageClock) up(now time.Time) (ended bool) {
	o.mu.Lock()
	if ended = !o.since.IsZero(); ended {
		o.total += max(now.Sub(o.since), 0)
		o.since = time.Time{}
	}
	o.mu.Unlock()
	return ended
}

func (o *outageClock) read(now time.Time) (count uint64, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d = o.total
	if !o.since.IsZero() {
		d += max(now.Sub(o.since), 0)
	}
	return o.count, d
}

func (o *outageClock) collectCount(emit func(float64, ...string)) {
	n, _ := o.read(time.Now())
	emit(float64(n))
}

func (o *outageClock) collectSeconds(emit func(float64, ...string)) {
	_, d := o.read(time.Now())
	emit(d.Seconds())
}

// collectRSS reads the resident pages from /proc/self/statm, at scrape
// time, into a buffer on the stack (os.ReadFile would allocate 2 KiB).
func collectRSS(emit func(float64, ...string)) {
	var buf [96]byte
	fd, err := syscall.Open("/proc/self/statm", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	n, _ := syscall.Read(fd, buf[:])
	syscall.Close(fd)
	// size resident shared ...: the second field.
	f := buf[:max(n, 0)]
	_, rest, _ := bytes.Cut(f, []byte{' '})
	resident, _, _ := bytes.Cut(rest, []byte{' '})
	if pages, err := strconv.ParseUint(string(resident), 10, 64); err == nil {
		emit(float64(pages) * float64(syscall.Getpagesize()))
	}
}

func collectCPU(emit func(float64, ...string)) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	emit(tv(ru.Utime) + tv(ru.Stime))
}
