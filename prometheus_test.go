package main

// End-to-end checks of the metrics with a real Prometheus server (Debian's
// prometheus package). One server is shared by all the tests of the test
// binary: it starts in seconds, not milliseconds. It scrapes one fixed
// loopback target every second, and each test points that target at what
// it wants scraped (a handler, or a running agent's listener).

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const promJob = "clearml-agent-test"

// promHarness is the shared Prometheus server.
type promHarness struct {
	url    string // http://127.0.0.1:PORT, the server's API
	dir    string // config, storage and log
	cmd    *exec.Cmd
	exited chan struct{}
	target atomic.Pointer[http.Handler] // what the scrape target serves; nil: nothing
	owner  sync.Mutex                   // held by the test that owns the target
}

var sharedProm struct {
	once sync.Once
	p    *promHarness
	err  error
}

// sharedPrometheus returns the running server, starting it on first use.
// Without prometheus the test is skipped, and fails when CI=true.
func sharedPrometheus(t testing.TB) *promHarness {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is not installed (CI=true): .ci/run installs it with apt-get install prometheus")
		}
		t.Skip("prometheus is not installed (Debian: apt-get install prometheus); skipping the Prometheus end-to-end test")
	}
	sharedProm.once.Do(func() {
		sweepPrometheusDirs()
		for try := 0; try < 3; try++ { // the free port picked may be taken meanwhile
			if sharedProm.p, sharedProm.err = startPrometheus(bin); sharedProm.err == nil {
				return
			}
		}
	})
	if sharedProm.err != nil {
		t.Fatal(sharedProm.err)
	}
	return sharedProm.p
}

// stopSharedPrometheus stops the shared server and removes its files; the
// test binary's TestMain should call it after m.Run. (Without it the server
// still dies with the test binary, and the next run removes the files.)
//
//lint:ignore U1000 for TestMain (e2e_test.go), which another change owns
func stopSharedPrometheus() {
	p := sharedProm.p
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	os.RemoveAll(p.dir)
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startPrometheus(bin string) (*promHarness, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("clearml-agent-prometheus-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	p := &promHarness{dir: dir, exited: make(chan struct{})}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(tln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := p.target.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", metricsContentType) // nothing to show
	}))
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"+
		"scrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", promJob, tln.Addr())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Prometheus dies with the test binary: Pdeathsig follows the thread
	// that started it, so that thread stays locked until Prometheus exits.
	p.cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL)
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := p.cmd.Start()
		if err == nil {
			// Tracked: the agent code some tests run in this process
			// (startTaskProcess) SIGKILLs its untracked children.
			trackChild(p.cmd.Process.Pid)
		}
		started <- err
		if err == nil {
			p.cmd.Wait()
			untrackChild(p.cmd.Process.Pid)
			logf.Close()
			close(p.exited)
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	if err := p.waitUp(60 * time.Second); err != nil {
		stopPrometheus(p)
		return nil, err
	}
	return p, nil
}

func stopPrometheus(p *promHarness) {
	p.cmd.Process.Kill()
	<-p.exited
	os.RemoveAll(p.dir)
}

// waitUp waits until the server is ready and has scraped the target once.
func (p *promHarness) waitUp(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("prometheus exited at start:\n%s", p.logTail())
		default:
		}
		if res, err := p.tryQuery("up{job=%q}", promJob); err == nil && len(res) == 1 && res[0].Value == 1 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("prometheus not up with its target after %v:\n%s", timeout, p.logTail())
}

func (p *promHarness) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "prometheus.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// sweepPrometheusDirs removes the files of servers whose test binary is
// gone (one killed before it could clean up).
func sweepPrometheusDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "clearml-agent-prometheus-*-*"))
	for _, d := range dirs {
		f := strings.Split(filepath.Base(d), "-")
		pid, err := strconv.Atoi(f[len(f)-2])
		if err == nil && pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// scrape points the target at h until the test ends; tests that scrape
// take turns.
func (p *promHarness) scrape(t testing.TB, h http.Handler) {
	p.owner.Lock()
	p.target.Store(&h)
	t.Cleanup(func() {
		p.target.Store(nil)
		p.owner.Unlock()
	})
}

// scrapeAddr points the target at a listener, e.g. a running agent's
// --metrics-address, until the test ends.
func (p *promHarness) scrapeAddr(t testing.TB, hostPort string) {
	p.scrape(t, httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: hostPort}))
}

// waitScrape waits for a scrape that started after now, so that queries
// see what the target serves now.
func (p *promHarness) waitScrape(t testing.TB) {
	t.Helper()
	// Prometheus may move a scrape's timestamp a few ms onto its schedule.
	since := float64(time.Now().Add(50*time.Millisecond).UnixMilli()) / 1000
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := p.tryQuery("timestamp(up{job=%q})", promJob); err == nil && len(res) == 1 && res[0].Value >= since {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no scrape of the target within 30 s:\n%s", p.logTail())
}

// promSample is one element of an instant vector.
type promSample struct {
	Labels map[string]string
	Value  float64
}

func (p *promHarness) tryQuery(format string, args ...any) ([]promSample, error) {
	q := fmt.Sprintf(format, args...)
	var out struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := p.getJSON("/api/v1/query?query="+url.QueryEscape(q), &out); err != nil {
		return nil, err
	}
	if out.Status != "success" || out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s %s (%s)", q, out.Status, out.Error, out.Data.ResultType)
	}
	var res []promSample
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64) // "+Inf", "-Inf", "NaN" too
		if err != nil {
			return nil, fmt.Errorf("query %s: value %q", q, s)
		}
		res = append(res, promSample{r.Metric, v})
	}
	sort.Slice(res, func(i, j int) bool { return fmt.Sprint(res[i].Labels) < fmt.Sprint(res[j].Labels) })
	return res, nil
}

func (p *promHarness) getJSON(path string, v any) error {
	resp, err := http.Get(p.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// query runs an instant query; the result is sorted by labels.
func (p *promHarness) query(t testing.TB, format string, args ...any) []promSample {
	t.Helper()
	res, err := p.tryQuery(format, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// queryValue runs a query that must give exactly one sample.
func (p *promHarness) queryValue(t testing.TB, format string, args ...any) float64 {
	t.Helper()
	res := p.query(t, format, args...)
	if len(res) != 1 {
		t.Fatalf("query %s: %d samples, want 1: %v", fmt.Sprintf(format, args...), len(res), res)
	}
	return res[0].Value
}

// metadata is the TYPE and HELP Prometheus took from the target for a family.
func (p *promHarness) metadata(t testing.TB, family string) (typ, help string) {
	t.Helper()
	var out struct {
		Data map[string][]struct{ Type, Help string }
	}
	if err := p.getJSON("/api/v1/metadata?metric="+url.QueryEscape(family), &out); err != nil {
		t.Fatal(err)
	}
	if m := out.Data[family]; len(m) == 1 {
		return m[0].Type, m[0].Help
	}
	return "", ""
}

func sampleLines(exposition string) int {
	n := 0
	for _, l := range strings.Split(exposition, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// Counters, a histogram and special gauge values, incremented in process
// and read back through Prometheus' query API.
func TestPrometheusScrapesRegistry(t *testing.T) {
	p := sharedPrometheus(t)
	reg := newMetricRegistry()
	tasks := reg.counterVec("ptest_tasks_total", "Tasks.\nBy queue \\ result.", "queue", "result")
	pickup := reg.histogramVec("ptest_pickup_seconds", "Pickup.", []float64{1, 2, 4, 8}, "queue")
	odd := reg.gaugeVec("ptest_odd_value", "Odd values.", "k")
	p.scrape(t, newMetricsHandler(reg, newHealthState()))

	strange := "gpu \"a\" \\ b\nc é"
	tasks.with("default", taskCompleted).add(3)
	tasks.with(strange, taskFailed).inc()
	for v, n := range map[float64]int{0.5: 1, 1.5: 3, 3: 4, 6: 2} {
		for range n {
			pickup.with("default").observe(v)
		}
	}
	odd.with("pinf").set(math.Inf(1))
	odd.with("ninf").set(math.Inf(-1))
	odd.with("nan").set(math.NaN())
	odd.with("big").set(1e21)
	odd.with("neg").set(-2.5)
	p.waitScrape(t)

	res := p.query(t, `ptest_tasks_total`)
	if len(res) != 2 || res[0].Labels["queue"] != "default" || res[0].Value != 3 || res[1].Labels["queue"] != strange || res[1].Labels["result"] != "failed" || res[1].Value != 1 {
		t.Errorf("ptest_tasks_total: %v", res)
	}
	if v := p.queryValue(t, `ptest_tasks_total{result="completed"}`); v != 3 {
		t.Errorf("completed = %v, want 3", v)
	}
	if v := p.queryValue(t, `ptest_pickup_seconds_count`); v != 10 {
		t.Errorf("_count = %v, want 10", v)
	}
	if v := p.queryValue(t, `ptest_pickup_seconds_sum`); v != 29 {
		t.Errorf("_sum = %v, want 29", v)
	}
	// Ranks over the cumulative buckets 1:1 2:4 4:8 8:10, interpolated.
	for q, want := range map[float64]float64{0.5: 2.5, 0.9: 6, 0.1: 1} {
		if v := p.queryValue(t, `histogram_quantile(%v, ptest_pickup_seconds_bucket)`, q); v != want {
			t.Errorf("histogram_quantile(%v) = %v, want %v", q, v, want)
		}
	}
	want := map[string]float64{"pinf": math.Inf(1), "ninf": math.Inf(-1), "nan": math.NaN(), "big": 1e21, "neg": -2.5}
	for _, s := range p.query(t, `ptest_odd_value`) {
		if !sameFloat(s.Value, want[s.Labels["k"]]) {
			t.Errorf("ptest_odd_value{k=%q} = %v", s.Labels["k"], s.Value)
		}
		delete(want, s.Labels["k"])
	}
	if len(want) > 0 {
		t.Errorf("gauges not scraped: %v", want)
	}
	if typ, help := p.metadata(t, "ptest_tasks_total"); typ != "counter" || help != "Tasks.\nBy queue \\ result." {
		t.Errorf("metadata: %q %q", typ, help)
	}

	// Later increments show at the next scrape, exactly.
	tasks.with("default", taskCompleted).add(2)
	pickup.with("default").observe(100)
	p.waitScrape(t)
	if v := p.queryValue(t, `ptest_tasks_total{queue="default"}`); v != 5 {
		t.Errorf("after more tasks: %v, want 5", v)
	}
	if v := p.queryValue(t, `ptest_pickup_seconds_bucket{le="+Inf"}`); v != 11 {
		t.Errorf("+Inf bucket = %v, want 11", v)
	}
	if v := p.queryValue(t, `ptest_pickup_seconds_bucket{le="8"}`); v != 10 {
		t.Errorf("le=8 bucket = %v, want 10", v)
	}
}

// The agent's own families through its real listener: Prometheus takes
// every sample, with the declared types.
func TestPrometheusScrapesAgentListener(t *testing.T) {
	p := sharedPrometheus(t)
	m := newAgentMetricSet(newMetricRegistry(), func() bool { return false })
	fillAgentMetrics(m)
	s, err := listenMetrics("127.0.0.1:0", newMetricsHandler(m.reg, newHealthState()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	p.scrapeAddr(t, s.addr)
	p.waitScrape(t)

	var b strings.Builder
	m.reg.write(&b)
	_, e := writeAndParse(t, m.reg)
	if v := p.queryValue(t, `scrape_samples_scraped{job=%q}`, promJob); v != float64(sampleLines(b.String())) {
		t.Errorf("Prometheus took %v samples of %d", v, sampleLines(b.String()))
	}
	if v := p.queryValue(t, `sum(clearml_agent_tasks_total{result="completed"})`); v != 2 {
		t.Errorf("completed tasks = %v, want 2", v)
	}
	if v := p.queryValue(t, `clearml_agent_build_info{version=%q}`, agentVersion); v != 1 {
		t.Errorf("build_info = %v", v)
	}
	if v := p.queryValue(t, `clearml_agent_ready`); v != 0 {
		t.Errorf("ready = %v, want 0", v)
	}
	// Two tasks of 42 s and 4200 s: the median (rank 1 of 2) is the top of
	// the (30, 60] bucket.
	if v := p.queryValue(t, `histogram_quantile(0.5, clearml_agent_task_duration_seconds_bucket{result="completed"})`); v != 60 {
		t.Errorf("median task duration = %v, want 60", v)
	}
	for _, name := range e.order {
		if typ, _ := p.metadata(t, name); typ != e.families[name].typ {
			t.Errorf("%s: Prometheus has type %q, want %q", name, typ, e.families[name].typ)
		}
	}
}
