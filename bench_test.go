package main

import (
	"debug/elf"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// The release binary is static (no ELF interpreter) and small.
func TestBinaryStaticAndSmall(t *testing.T) {
	f, err := elf.Open(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: it is not static")
		}
	}
	st, err := os.Stat(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 15<<20 {
		t.Errorf("binary is %d bytes, over the 15 MB budget", st.Size())
	}
}

func benchExec(b *testing.B, env []string, args ...string) {
	for b.Loop() {
		cmd := exec.Command(agentBin, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkCLIHelp is the wall time of `clearml-agent --help` (goal: < 10 ms).
func BenchmarkCLIHelp(b *testing.B) {
	benchExec(b, []string{"HOME=" + b.TempDir()}, "--help")
}

// BenchmarkCLIList is the wall time of `clearml-agent list` against a local
// stand-in server with one registered worker (goal: < 50 ms).
func BenchmarkCLIList(b *testing.B) {
	s := startServer(b)
	c := testClient(b, s.URL(), nil, clientOptions{})
	if err := c.call(b.Context(), "workers.register", "", map[string]any{"worker": "bench:cpu:0"}, nil); err != nil {
		b.Fatal(err)
	}
	env := []string{"HOME=" + b.TempDir()}
	for k, v := range serverEnv(s) {
		env = append(env, k+"="+v)
	}
	benchExec(b, env, "list")
}

// BenchmarkCLIConfig is the wall time of `clearml-agent config` with the
// reference's full sample file.
func BenchmarkCLIConfig(b *testing.B) {
	env := []string{"HOME=" + b.TempDir(), "CLEARML_CONFIG_FILE=testdata/hocon/basic.conf"}
	if _, err := os.Stat("../shared/fixtures/clearml.conf"); err == nil {
		env[1] = "CLEARML_CONFIG_FILE=../shared/fixtures/clearml.conf"
	}
	benchExec(b, env, "config")
}

// BenchmarkExecuteTrivial runs `execute` on a task that does nothing, with
// warm git and venv caches, and reports the agent's overhead: wall time
// minus the time the venv's python takes to run the same script on its own
// (goal: < 300 ms).
func BenchmarkExecuteTrivial(b *testing.B) {
	s := startServer(b)
	repo, _ := makeTaskRepo(b, map[string]string{"noop.py": "pass\n"})
	env := executeEnv(b, s)
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	envList = append(envList, "PATH="+os.Getenv("PATH"))
	run := func() {
		id := addScriptTask(s, repo, "noop.py")
		cmd := exec.Command(agentBin, "execute", "--id", id)
		cmd.Env = envList
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
	run() // warm the caches
	var python string
	if m, _ := filepath.Glob(filepath.Join(sharedVenvCache, "*", "bin", "python")); len(m) > 0 {
		python = m[0]
	}
	var pyTotal time.Duration
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		run()
	}
	agentTotal := time.Since(start)
	b.StopTimer()
	if python != "" {
		dir := b.TempDir()
		os.WriteFile(filepath.Join(dir, "noop.py"), []byte("pass\n"), 0o644)
		t0 := time.Now()
		for i := 0; i < b.N; i++ {
			exec.Command(python, "-u", filepath.Join(dir, "noop.py")).Run()
		}
		pyTotal = time.Since(t0)
	}
	b.ReportMetric(float64((agentTotal-pyTotal).Milliseconds())/float64(b.N), "overhead-ms/op")
	b.ReportMetric(float64(pyTotal.Milliseconds())/float64(b.N), "python-ms/op")
}

// BenchmarkExecuteRSS samples the agent's resident memory while a task
// runs for a second and reports the peak (goal: < 20 MB).
func BenchmarkExecuteRSS(b *testing.B) {
	s := startServer(b)
	repo, _ := makeTaskRepo(b, map[string]string{"sleep.py": "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.1)\n"})
	env := executeEnv(b, s)
	var peak int64
	for i := 0; i < b.N; i++ {
		id := addScriptTask(s, repo, "sleep.py")
		cmd := exec.Command(agentBin, "execute", "--id", id)
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
	sample:
		for {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				break sample
			case <-time.After(20 * time.Millisecond):
				if kb := vmRSSKiB(cmd.Process.Pid); kb > peak {
					peak = kb
				}
			}
		}
	}
	b.ReportMetric(float64(peak)/1024, "peak-rss-MiB")
}

// vmRSSKiB reads VmRSS of pid from /proc (0 when gone).
func vmRSSKiB(pid int) int64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// procCPUTicks is utime+stime of pid, in clock ticks (100 per second).
func procCPUTicks(pid int) int64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// BenchmarkDaemonIdle runs an idle daemon for 60 s and reports its CPU use
// (% of one core), peak RSS and requests a minute (goals: < 0.5 %,
// < 12 MiB, <= 27 requests a minute, the reference's idle load).
func BenchmarkDaemonIdle(b *testing.B) {
	s := startServer(b)
	env := executeEnv(b, s)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(agentBin, "daemon", "--foreground", "--queue", "default")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CLEARML_AGENT_RUNTIME_DIR=" + b.TempDir()}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second) // start-up is not idle
		s.ResetRequests()
		t0, c0 := time.Now(), procCPUTicks(cmd.Process.Pid)
		var peak int64
		for time.Since(t0) < 60*time.Second {
			time.Sleep(500 * time.Millisecond)
			peak = max(peak, vmRSSKiB(cmd.Process.Pid))
		}
		cpu := float64(procCPUTicks(cmd.Process.Pid)-c0) / 100 / time.Since(t0).Seconds() * 100
		reqs := len(s.Requests())
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		b.ReportMetric(cpu, "cpu-%")
		b.ReportMetric(float64(peak)/1024, "peak-rss-MiB")
		b.ReportMetric(float64(reqs), "requests/min")
	}
}

// BenchmarkDaemonPickup measures enqueue to "pulled by agent" (the first
// tasks.started) for trivial tasks enqueued at random moments (goal: 1.2 s
// average, half the reference's 2.4 s).
func BenchmarkDaemonPickup(b *testing.B) {
	s := startServer(b)
	repo, _ := makeTaskRepo(b, map[string]string{"noop.py": "pass\n"})
	env := executeEnv(b, s)
	cmd := exec.Command(agentBin, "daemon", "--foreground", "--queue", "default")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CLEARML_AGENT_RUNTIME_DIR=" + b.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	s.WaitForRequests("workers.register", 1, 30*time.Second)
	var total, launch time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(time.Duration(rng.Int64N(int64(2400 * time.Millisecond))))
		id := s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{Repository: repo, EntryPoint: "noop.py", Binary: "python3"}})
		enq := time.Now()
		s.Enqueue(id, fakeserver.DefaultQueueName)
		var picked time.Duration
		for picked == 0 {
			for _, r := range s.RequestsTo("tasks.started") {
				if r.Data["task"] == id {
					picked = time.Since(enq)
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		total += picked
		for j := 0; j < 3000; j++ {
			if t, _ := s.Task(id); t.Status == "completed" || t.Status == "failed" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		// get_next_task answered -> the child execute's first request (an
		// upper bound on the child process start, which comes before it).
		var popped time.Time
		for _, r := range s.Requests() {
			if r.Endpoint == "queues.get_next_task" && strings.Contains(string(r.Response), id) {
				popped = r.Time
			}
			if !popped.IsZero() && r.Endpoint == "auth.login" && r.Time.After(popped) {
				launch += r.Time.Sub(popped)
				break
			}
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "pickup-s")
	b.ReportMetric(float64(launch.Milliseconds())/float64(b.N), "launch-ms")
}

// BenchmarkCLIHelpFloor is the floor BenchmarkCLIHelp stands on: a static
// Go program that only imports net/http (which the agent needs) and prints
// one line. On slow-exec VMs it alone takes longer than 10 ms.
func BenchmarkCLIHelpFloor(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module floor\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport (\n\t\"net/http\"\n\t\"os\"\n)\n\nvar _ = http.DefaultClient\n\nfunc main() { os.Stdout.WriteString(\"hi\\n\") }\n"), 0o644)
	bin := filepath.Join(dir, "floor")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := exec.Command(bin).Run(); err != nil {
			b.Fatal(err)
		}
	}
}
