// Command devicecheck is the real-GPU check of issue 6. It needs a machine
// with an NVIDIA driver, python3 and git; testdata/gpu/device-check.sh
// builds it and runs it there.
//
// For each -run AGENT=GPUS it starts the stand-in server in process, queues
// a task that prints what CUDA sees and holds GPU memory while keeping the
// GPU busy, runs `AGENT daemon --queue default --gpus GPUS`, and samples
// nvidia-smi itself twice a second. Every workers.status_report that carries
// GPU fields is then compared with nvidia-smi over the same time window:
// the agent sends averages, so each value must lie within what nvidia-smi
// showed in that window (plus a small margin). It prints one PASS or FAIL
// line per check and exits 1 if any failed.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// gpuTask is the task's entry point. torch when it is there, else the CUDA
// driver API through ctypes, so the check needs no framework.
const gpuTask = `import ctypes, os, sys, time
hold = float(os.environ.get("GPUCHECK_HOLD", "40"))
mib = int(os.environ.get("GPUCHECK_ALLOC_MIB", "4096"))
print("GPUCHECK env CUDA_VISIBLE_DEVICES=%s NVIDIA_VISIBLE_DEVICES=%s CUDA_DEVICE_ORDER=%s" % (
    os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER")))
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    n = torch.cuda.device_count()
    print("GPUCHECK torch %s device_count=%d" % (torch.__version__, n))
    if n == 0:
        sys.exit(3)
    x = torch.empty(mib << 20, dtype=torch.uint8, device="cuda:0")
    x.fill_(7)
    torch.cuda.synchronize()
    print("GPUCHECK allocated=%dMiB on %s" % (mib, torch.cuda.get_device_name(0)))
    a = torch.randn(4096, 4096, device="cuda:0")
    end = time.time() + hold
    while time.time() < end:
        for _ in range(10):
            a = torch.tanh(a @ a)
        torch.cuda.synchronize()
        time.sleep(0.02)
else:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        print("GPUCHECK no torch and no libcuda: %s" % e)
        sys.exit(3)
    n = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(n)) != 0:
        print("GPUCHECK cuInit/cuDeviceGetCount failed")
        sys.exit(3)
    print("GPUCHECK libcuda device_count=%d" % n.value)
    dev, ctx, ptr = ctypes.c_int(0), ctypes.c_void_p(), ctypes.c_uint64(0)
    if cuda.cuDeviceGet(ctypes.byref(dev), 0) or cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) or \
            cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib << 20)):
        print("GPUCHECK allocation failed")
        sys.exit(3)
    print("GPUCHECK allocated=%dMiB" % mib)
    time.sleep(hold)
print("GPUCHECK done")
`

// smiSample is one GPU's line of one nvidia-smi query (MiB, %, C).
type smiSample struct {
	at                      time.Time
	index                   int
	uuid                    string
	total, used, util, temp float64
}

var (
	smiCmd   = flag.String("smi", "nvidia-smi", "nvidia-smi to compare with")
	hold     = flag.Duration("hold", 40*time.Second, "how long the task holds GPU memory")
	allocMiB = flag.Int("alloc-mib", 4096, "GPU memory the task allocates")
	timeout  = flag.Duration("timeout", 3*time.Minute, "limit for each run")
	python   = flag.String("python", "python3", "interpreter the task runs with (CLEARML_AGENT_SKIP_PIP_VENV_INSTALL)")
	runs     multiFlag
	failures int
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func check(ok bool, format string, args ...any) {
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
		failures++
	}
	fmt.Printf("%s  %s\n", verdict, fmt.Sprintf(format, args...))
}

func main() {
	flag.Var(&runs, "run", "AGENT=GPUS: an agent binary and its --gpus value (uuid0 means GPU 0's UUID); repeatable")
	flag.Parse()
	if len(runs) == 0 {
		fmt.Fprintln(os.Stderr, "devicecheck: error: give at least one -run AGENT=GPUS")
		os.Exit(2)
	}
	first, err := querySMI(context.Background())
	if err != nil || len(first) == 0 {
		fmt.Printf("FAIL  nvidia-smi does not answer: %v\n", err)
		os.Exit(1)
	}
	for _, s := range first {
		fmt.Printf("nvidia-smi: GPU %d %s: %.0f/%.0f MiB used, %.0f%%, %.0f C\n", s.index, s.uuid, s.used, s.total, s.util, s.temp)
	}
	if p, err := exec.LookPath(*python); err == nil {
		*python = p
	}
	for _, r := range runs {
		agent, gpus, ok := strings.Cut(r, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "devicecheck: error: -run %q: want AGENT=GPUS\n", r)
			os.Exit(2)
		}
		gpus = strings.ReplaceAll(gpus, "uuid0", first[0].uuid)
		runOne(agent, gpus, first)
	}
	if failures > 0 {
		fmt.Printf("\n%d check(s) failed\n", failures)
		os.Exit(1)
	}
	fmt.Println("\nall checks passed")
}

func runOne(agent, gpus string, all []smiSample) {
	abs, err := filepath.Abs(agent)
	if err != nil {
		panic(err)
	}
	fmt.Printf("\n=== %s daemon --gpus %s ===\n", filepath.Base(agent), gpus)
	want := selected(gpus, all)
	root, err := os.MkdirTemp("", "gpucheck-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	repo := filepath.Join(root, "repo")
	if err := makeRepo(repo); err != nil {
		check(false, "task repository: %v", err)
		return
	}

	s := fakeserver.New()
	taskID := s.AddTask(fakeserver.TaskSpec{Name: "gpu device check",
		Script: &fakeserver.Script{Repository: repo, EntryPoint: "gpu_task.py", Binary: "python3"},
		Queue:  fakeserver.DefaultQueueName})
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer s.Close()
	home := filepath.Join(root, "home")
	conf := filepath.Join(home, "clearml.conf")
	os.MkdirAll(home, 0o700)
	os.WriteFile(conf, []byte(fmt.Sprintf(`api {
  api_server: %q
  web_server: %q
  files_server: %q
  credentials { access_key: %q, secret_key: %q }
}
agent {
  venvs_dir: %q
  vcs_cache.path: %q
  venvs_cache.path: ""
}
`, url, url, url, fakeserver.TestsAccessKey, fakeserver.TestsSecretKey,
		filepath.Join(home, "venvs-builds"), filepath.Join(home, "vcs-cache"))), 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var mu sync.Mutex
	var samples []smiSample
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if got, err := querySMI(ctx); err == nil {
				mu.Lock()
				samples = append(samples, got...)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	logPath := filepath.Join(root, "daemon.log")
	logFile, _ := os.Create(logPath)
	start := time.Now()
	cmd := exec.Command(abs, "daemon", "--queue", "default", "--gpus", gpus)
	cmd.Env = append(os.Environ(), "HOME="+home, "CLEARML_CONFIG_FILE="+conf,
		"CLEARML_AGENT_SKIP_PIP_VENV_INSTALL="+*python,
		"GPUCHECK_HOLD="+strconv.FormatFloat(hold.Seconds(), 'f', -1, 64),
		"GPUCHECK_ALLOC_MIB="+strconv.Itoa(*allocMiB))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		check(false, "start %s: %v", agent, err)
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait for the task to end, then for the daemon's report after it.
	status := ""
	for ctx.Err() == nil {
		if t, ok := s.Task(taskID); ok && (t.Status == "completed" || t.Status == "failed" || t.Status == "stopped") {
			status = t.Status
			break
		}
		select {
		case err := <-exited:
			exited <- err
			cancel()
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.WaitForRequests("workers.status_report", countReports(s)+1, 5*time.Second)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	cancel()
	logFile.Close()
	elapsed := time.Since(start)

	var console []string
	for _, rq := range s.RequestsTo("events.add_batch") {
		for _, ev := range rq.Batch {
			if ev["task"] == taskID && ev["type"] == "log" {
				if msg, _ := ev["msg"].(string); msg != "" {
					console = append(console, strings.Split(strings.TrimRight(msg, "\n"), "\n")...)
				}
			}
		}
	}
	fmt.Printf("--- task console (%d lines), GPUCHECK lines and the last 5 ---\n", len(console))
	for i, l := range console {
		if strings.Contains(l, "GPUCHECK") || i >= len(console)-5 {
			fmt.Println("  " + l)
		}
	}
	check(status == "completed", "task status %q after %.1fs (want completed)", status, elapsed.Seconds())
	text := strings.Join(console, "\n")
	wantCVD := strings.ReplaceAll(gpus, ".", ":")
	check(strings.Contains(text, "CUDA_VISIBLE_DEVICES="+wantCVD+" ") && strings.Contains(text, "NVIDIA_VISIBLE_DEVICES="+wantCVD+" ") &&
		strings.Contains(text, "CUDA_DEVICE_ORDER=PCI_BUS_ID"), "task environment: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES = %s, CUDA_DEVICE_ORDER=PCI_BUS_ID", wantCVD)
	check(strings.Contains(text, fmt.Sprintf("device_count=%d", len(want))), "CUDA inside the task sees %d device(s)", len(want))
	check(strings.Contains(text, fmt.Sprintf("GPUCHECK allocated=%dMiB", *allocMiB)), "the task allocated %d MiB", *allocMiB)

	// Compare the reports with nvidia-smi over each report's window.
	mu.Lock()
	defer mu.Unlock()
	prev := start
	nGPU, maxUsed := 0, 0.0
	fmt.Println("--- status reports: agent value, then nvidia-smi's range over the same window ---")
	for _, rq := range s.RequestsTo("workers.status_report") {
		ms, _ := rq.Data["machine_stats"].(map[string]any)
		used := floats(ms["gpu_memory_used"])
		if used == nil {
			var keys []string
			for k := range ms {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			fmt.Printf("report at +%.1fs without GPU fields; machine_stats keys %v\n", rq.Time.Sub(start).Seconds(), keys)
			prev = rq.Time
			continue
		}
		nGPU++
		free, util, temp := floats(ms["gpu_memory_free"]), floats(ms["gpu_usage"]), floats(ms["gpu_temperature"])
		worker, _ := rq.Data["worker"].(string)
		task, _ := rq.Data["task"].(string)
		fmt.Printf("report at +%.1fs worker %s task %q\n", rq.Time.Sub(start).Seconds(), worker, task)
		ok := len(used) == len(want) && len(free) == len(want) && len(util) == len(want) && len(temp) == len(want)
		check(ok, "  one value per selected GPU (%d): used %v free %v usage %v temperature %v", len(want), used, free, util, temp)
		if !ok {
			prev = rq.Time
			continue
		}
		for i, g := range want {
			// The static agent reuses an nvidia-smi reading for up to 5 s
			// (one process per poll), so its window starts that much earlier.
			win := window(samples, g.index, prev.Add(-6*time.Second), rq.Time.Add(time.Second))
			if len(win) == 0 {
				check(false, "  GPU %d: no nvidia-smi samples in the window", g.index)
				continue
			}
			lo, hi := span(win, func(s smiSample) float64 { return s.used })
			check(within(used[i], lo, hi, 256), "  GPU %d memory used %.0f MiB, nvidia-smi %.0f..%.0f", g.index, used[i], lo, hi)
			flo, fhi := span(win, func(s smiSample) float64 { return s.total - s.used })
			check(within(free[i], flo, fhi, 256), "  GPU %d memory free %.0f MiB, nvidia-smi %.0f..%.0f", g.index, free[i], flo, fhi)
			tlo, thi := span(win, func(s smiSample) float64 { return s.temp })
			check(within(temp[i], tlo, thi, 3), "  GPU %d temperature %.1f C, nvidia-smi %.0f..%.0f", g.index, temp[i], tlo, thi)
			ulo, uhi := span(win, func(s smiSample) float64 { return s.util })
			check(within(util[i], ulo, uhi, 10), "  GPU %d usage %.1f%%, nvidia-smi %.0f..%.0f", g.index, util[i], ulo, uhi)
			maxUsed = math.Max(maxUsed, used[i])
		}
		if strings.HasSuffix(worker, ":service:"+taskID) {
			continue
		}
		suffix := ":gpu" + strings.ReplaceAll(gpus, ":", ".")
		check(strings.HasSuffix(worker, suffix), "  worker id %q ends with %q", worker, suffix)
		prev = rq.Time
	}
	check(nGPU >= 2, "%d status reports carried GPU fields (want at least 2)", nGPU)
	baseline := want[0].used
	check(maxUsed >= baseline+0.5*float64(*allocMiB), "the reports saw the task's memory: peak used %.0f MiB, idle %.0f MiB, allocation %d MiB", maxUsed, baseline, *allocMiB)
	if failures > 0 {
		if b, err := os.ReadFile(logPath); err == nil {
			fmt.Printf("--- daemon log (last 3000 bytes) ---\n%s\n", tail(b, 3000))
		}
	}
}

// selected lists the GPUs that --gpus names (indexes or UUIDs).
func selected(gpus string, all []smiSample) []smiSample {
	var out []smiSample
	for _, part := range strings.Split(gpus, ",") {
		for _, s := range all {
			if part == strconv.Itoa(s.index) || strings.EqualFold(part, s.uuid) {
				out = append(out, s)
			}
		}
	}
	return out
}

func makeRepo(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "gpu_task.py"), []byte(gpuTask), 0o644); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"}, {"add", "."},
		{"-c", "user.name=check", "-c", "user.email=check@localhost", "commit", "-q", "-m", "gpu task"},
	} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v %s", args[0], err, out)
		}
	}
	return nil
}

func querySMI(ctx context.Context) ([]smiSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, *smiCmd, "--query-gpu=index,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	r := csv.NewReader(bytes.NewReader(out))
	r.TrimLeadingSpace = true
	recs, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	var got []smiSample
	for _, rec := range recs {
		if len(rec) != 6 {
			continue
		}
		num := func(s string) (float64, bool) {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			return f, err == nil
		}
		idx, _ := num(rec[0])
		s := smiSample{at: now, index: int(idx), uuid: strings.TrimSpace(rec[1])}
		s.total, _ = num(rec[2])
		s.used, _ = num(rec[3])
		s.util, _ = num(rec[4])
		s.temp, _ = num(rec[5])
		got = append(got, s)
	}
	return got, nil
}

func window(all []smiSample, index int, from, to time.Time) []smiSample {
	var out []smiSample
	for _, s := range all {
		if s.index == index && !s.at.Before(from) && !s.at.After(to) {
			out = append(out, s)
		}
	}
	return out
}

func span(w []smiSample, f func(smiSample) float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range w {
		lo, hi = math.Min(lo, f(s)), math.Max(hi, f(s))
	}
	return lo, hi
}

func within(v, lo, hi, margin float64) bool { return v >= lo-margin && v <= hi+margin }

func floats(v any) []float64 {
	list, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]float64, 0, len(list))
	for _, x := range list {
		var f float64
		switch n := x.(type) {
		case float64:
			f = n
		case json.Number: // the stand-in server decodes numbers so
			var err error
			if f, err = n.Float64(); err != nil {
				return nil
			}
		default:
			return nil
		}
		out = append(out, f)
	}
	return out
}

func countReports(s *fakeserver.Server) int { return len(s.RequestsTo("workers.status_report")) }

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
