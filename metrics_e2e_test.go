package main

// The metrics of a running daemon, end to end: the built binary with
// --metrics-address, the stand-in server, tasks that complete and fail,
// and Debian's Prometheus scraping the daemon's listener.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const trainFail = "import sys\nprint('about to fail')\nsys.exit(3)\n"

// probeGet answers a GET's status and body; status 0 when nothing answered.
func probeGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP waits until url answers want, and returns the body.
func waitHTTP(t *testing.T, url string, want int, timeout time.Duration, p *daemonProc) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var code int
	var body string
	for time.Now().Before(deadline) {
		if code, body = probeGet(url); code == want {
			return body
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %d %q, want %d; daemon output:\n%s", url, code, body, want, p.out.String())
	return ""
}

func TestPrometheusDaemonEndToEnd(t *testing.T) {
	prom := sharedPrometheus(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": trainOK, "fail.py": trainFail,
		"slow.py": "import time\nfor i in range(80):\n    print('line %d' % i, flush=True)\n    time.sleep(0.1)\n"})
	addr := metricsListen(t)
	env := executeEnv(t, s)
	// The tasks' temp folder, where spool and metrics files go: this test's
	// own, as other tests leave undelivered spools in theirs.
	tmp := t.TempDir()
	env["CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"] = tmp
	p := startDaemon(t, env, "--queue", "default", "--metrics-address", addr)
	base := "http://" + addr

	// Ready once registered; alive with its loops turning.
	waitHTTP(t, base+"/readyz", 200, 60*time.Second, p)
	if code, body := probeGet(base + "/healthz"); code != 200 || !strings.HasPrefix(body, "ok\n") || !strings.Contains(body, "loop poll:") || !strings.Contains(body, "loop report:") {
		t.Errorf("/healthz: %d %q", code, body)
	}

	ok1 := enqueueScript(t, s, repo, "train.py", "default")
	bad := enqueueScript(t, s, repo, "fail.py", "default")
	ok2 := enqueueScript(t, s, repo, "train.py", "default")
	waitStatus(t, s, p, ok1, "completed", 120*time.Second)
	waitStatus(t, s, p, bad, "failed", 120*time.Second)
	waitStatus(t, s, p, ok2, "completed", 120*time.Second)
	// A task whose console meets an outage: its lines go to the disk spool
	// (counted by the child, added by the daemon when it ends).
	slow := enqueueScript(t, s, repo, "slow.py", "default")
	waitStatus(t, s, p, slow, "in_progress", 60*time.Second)
	time.Sleep(time.Second)
	s.Refuse(true)
	time.Sleep(3 * time.Second)
	s.Refuse(false)
	waitStatus(t, s, p, slow, "completed", 120*time.Second)
	// The daemon counts a task once its child is gone and settled.
	waitMetricSamples(t, addr, p, 30*time.Second,
		`clearml_agent_tasks_total{queue="default",result="completed"} 3`,
		`clearml_agent_tasks_total{queue="default",result="failed"} 1`)

	// An outage: not ready (no task can be taken), still alive (the loops
	// retry), and ready again once the server answers.
	s.Refuse(true)
	body := waitHTTP(t, base+"/readyz", 503, 30*time.Second, p)
	if !strings.Contains(body, "server: ") {
		t.Errorf("/readyz in an outage: %q", body)
	}
	time.Sleep(3 * time.Second)
	if code, body := probeGet(base + "/healthz"); code != 200 {
		t.Errorf("/healthz in an outage: %d %q", code, body)
	}
	s.Refuse(false)
	waitHTTP(t, base+"/readyz", 200, 60*time.Second, p)

	prom.scrapeAddr(t, addr)
	prom.waitScrape(t)
	eq := func(q string, want float64) {
		t.Helper()
		if v := prom.queryValue(t, "%s", q); v != want {
			t.Errorf("%s = %v, want %v", q, v, want)
		}
	}
	pos := func(q string) {
		t.Helper()
		if v := prom.queryValue(t, "%s", q); !(v > 0) {
			t.Errorf("%s = %v, want > 0", q, v)
		}
	}
	eq(`clearml_agent_tasks_total{result="completed"}`, 3)
	eq(`clearml_agent_tasks_total{result="failed"}`, 1)
	eq(`clearml_agent_tasks_started_total{queue="default"}`, 4)
	eq(`clearml_agent_task_pickup_latency_seconds_count{queue="default"}`, 4)
	eq(`sum(clearml_agent_task_duration_seconds_count)`, 4)
	eq(`clearml_agent_ready`, 1)
	// The daemon's own outages (a report may fall in the task's outage too).
	if v := prom.queryValue(t, "clearml_agent_api_outages_total"); v < 1 || v > 2 {
		t.Errorf("outages = %v, want 1 or 2", v)
	}
	pos(`clearml_agent_api_outage_seconds_total`)
	pos(`sum(clearml_agent_api_requests_total{class="error"})`)
	pos(`sum(clearml_agent_api_retries_total)`)
	pos(`clearml_agent_queue_polls_total{queue="default"}`)
	pos(`clearml_agent_api_requests_total{endpoint="queues.get_next_task",class="2xx"}`)
	pos(`clearml_agent_api_requests_total{endpoint="workers.register",class="2xx"}`)
	pos(`process_resident_memory_bytes`)
	// What the tasks' execute processes counted reaches the daemon when
	// they end (README: Metrics and health): console lines, venv cache,
	// and their API requests.
	if v := prom.queryValue(t, "clearml_agent_console_lines_shipped_total"); v < 80+3*5 {
		t.Errorf("console lines shipped = %v, want the tasks' lines (at least 95)", v)
	}
	pos(`clearml_agent_console_lines_spooled_total`)
	eq(`clearml_agent_console_spool_bytes`, 0) // all delivered: no spool file left
	eq(`clearml_agent_venv_cache_hits_total + clearml_agent_venv_cache_misses_total`, 4)
	pos(`clearml_agent_api_requests_total{endpoint="events.add_batch",class="2xx"}`)
	eq(`clearml_agent_build_info{version="`+agentVersion+`"}`, 1)
	if v := prom.queryValue(t, `histogram_quantile(0.95, sum by (le) (clearml_agent_task_pickup_latency_seconds_bucket))`); !(v >= 0 && v < 300) {
		t.Errorf("pickup latency p95 = %v s", v)
	}
	// No metrics file is left behind in the tasks' temp dir.
	if left, _ := filepath.Glob(filepath.Join(tmp, ".clearml_agent.metrics.*")); len(left) > 0 {
		t.Errorf("metrics files left: %v", left)
	}

	// Stopping: not ready; then the listener is gone with the daemon.
	p.stop(t)
	if code, _ := probeGet(base + "/readyz"); code != 0 {
		t.Errorf("/readyz answers %d after the daemon exited", code)
	}
}

// A port in use: one error line, exit status 1, and the server never hears
// of the worker.
// metricsListen is a free loopback HOST:PORT for --metrics-address.
func metricsListen(t *testing.T) string {
	t.Helper()
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// waitMetricSamples waits until the /metrics page at addr holds every one
// of samples (whole lines, "name{labels} value"); a long-running command
// counts a task's end once it has seen it, a moment after the server has.
func waitMetricSamples(t *testing.T, addr string, p *daemonProc, timeout time.Duration, samples ...string) {
	t.Helper()
	var page string
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		_, page = probeGet("http://" + addr + "/metrics")
		have := map[string]bool{}
		for _, line := range strings.Split(page, "\n") {
			have[line] = true
		}
		var missing []string
		for _, want := range samples {
			if !have[want] {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q:\n%s\noutput:\n%s", missing, page, p.out.String())
		}
	}
}

func TestMetricsAddressInUse(t *testing.T) {
	s := startServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := executeEnv(t, s)
	env["CLEARML_AGENT_RUNTIME_DIR"] = t.TempDir()
	r := runAgent(t, env, "daemon", "--foreground", "--queue", "default", "--metrics-address", ln.Addr().String())
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	oneErrorLine(t, r, "metrics address "+ln.Addr().String()+" is already in use")
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests reached the server, want none", n)
	}
	// The same from the environment (and from agent.metrics.address, below
	// it), for slurm too.
	env["CLEARML_AGENT_METRICS_ADDRESS"] = ln.Addr().String()
	r = runAgent(t, env, "daemon", "--foreground", "--queue", "default")
	if r.code != 1 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("CLEARML_AGENT_METRICS_ADDRESS: exit %d, stderr %q", r.code, r.stderr)
	}
	tmpl := filepath.Join(t.TempDir(), "job.sh")
	os.WriteFile(tmpl, []byte("#!/bin/sh\n#SBATCH --job-name=${CLEARML_TASK.id}\n${CLEARML_AGENT_EXECUTE}\n"), 0o644)
	r = runAgent(t, env, "slurm", "--foreground", "--queue", "default", "--template-files", tmpl)
	if r.code != 1 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("slurm: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := len(s.RequestsTo("workers.register")); n != 0 {
		t.Errorf("workers.register sent %d times", n)
	}
}

// Flag over environment over configuration.
func TestMetricsAddressPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "clearml.conf")
	if err := os.WriteFile(conf, []byte("agent.metrics.address: \"127.0.0.1:7001\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(env map[string]string) *agentConfig {
		t.Helper()
		cfg, err := loadConfig(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	home := map[string]string{"HOME": t.TempDir()}
	if got := metricsAddress("", load(home)); got != "127.0.0.1:7001" {
		t.Errorf("config: %q", got)
	}
	withEnv := map[string]string{"HOME": home["HOME"], "CLEARML_AGENT_METRICS_ADDRESS": "127.0.0.1:7002"}
	if got := metricsAddress("", load(withEnv)); got != "127.0.0.1:7002" {
		t.Errorf("env over config: %q", got)
	}
	if got := metricsAddress("127.0.0.1:7003", load(withEnv)); got != "127.0.0.1:7003" {
		t.Errorf("flag over env: %q", got)
	}
}

// The GPU gauges come from the status reports' sampler: on the stand-in
// nvidia-smi (one GPU, 81559 MiB, 41 °C idle).
func TestMetricsDaemonGPUs(t *testing.T) {
	s := startServer(t)
	addr := metricsListen(t)
	env := executeEnv(t, s)
	fake, _ := filepath.Abs("testdata/gpu/fake/bin")
	env["PATH"] = fake + string(os.PathListSeparator) + os.Getenv("PATH")
	env["FAKE_SMI_STATE"] = filepath.Join(t.TempDir(), "none")
	p := startDaemon(t, env, "--queue", "default", "--gpus", "0", "--metrics-address", addr)
	want := []string{
		`clearml_agent_gpu_memory_total_bytes{gpu="0",uuid="GPU-11111111-2222-3333-4444-555555555555"} 8.5520809984e+10`,
		`clearml_agent_gpu_memory_used_bytes{gpu="0",uuid="GPU-11111111-2222-3333-4444-555555555555"} 5.36870912e+08`,
		`clearml_agent_gpu_temperature_celsius{gpu="0",uuid="GPU-11111111-2222-3333-4444-555555555555"} 41`,
		`clearml_agent_gpu_utilization_ratio{gpu="0",uuid="GPU-11111111-2222-3333-4444-555555555555"} 0`,
	}
	waitMetricSamples(t, addr, p, 60*time.Second, want...)
	p.stop(t)
}
