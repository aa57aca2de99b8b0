package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procStatusKiB reads the kB fields of /proc/PID/status (VmHWM, VmRSS,
// RssAnon, RssFile, ...); Threads is a count.
func procStatusKiB(pid int) map[string]int64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// BenchmarkDaemonIdleProc measures an idle daemon from outside, as an
// operator would: /proc/PID/status after 20 s idle (goal: VmHWM < 10 MiB).
// VmHWM is the kernel's own peak, so no spike between samples is missed.
// RssFile is the binary's pages mapped in (the kernel maps most of its text
// and rodata: each fault maps the 64 KiB around it), RssAnon the heap,
// stacks and runtime. GOMAXPROCS, when set, is passed on: GOMAXPROCS=64
// shows a 64-core host on a small one.
//
// 20 s is not the steady state: the heap grows until the next collection
// (the daemon runs at GOGC=20, mem_linux.go: about 1 MiB of heap), and
// rssanon-growth-KiB/min (the last 15 s) says how fast; CLEARML_BENCH_IDLE=3m
// measures the plateau. CLEARML_BENCH_GODEBUG=gctrace=1 shows the
// daemon's collections.
//
// It runs with the metrics listener off and on (scraped every second over
// the last 15 s, as Prometheus would), and reports the server requests and
// the CPU time of that window too: the listener must add neither.
func BenchmarkDaemonIdleProc(b *testing.B) {
	b.Run("listener=off", func(b *testing.B) { benchDaemonIdle(b, false) })
	b.Run("listener=on", func(b *testing.B) { benchDaemonIdle(b, true) })
}

func benchDaemonIdle(b *testing.B, listener bool) {
	idle := 20 * time.Second
	if v := os.Getenv("CLEARML_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			b.Fatalf("CLEARML_BENCH_IDLE=%q: want a duration of 10s or more", v)
		}
		idle = d
	}
	s := startServer(b)
	env := executeEnv(b, s)
	for i := 0; i < b.N; i++ {
		args := []string{"daemon", "--foreground", "--queue", "default"}
		var metricsURL string
		if listener {
			port, err := freeLoopbackPort()
			if err != nil {
				b.Fatal(err)
			}
			addr := "127.0.0.1:" + strconv.Itoa(port)
			args = append(args, "--metrics-address", addr)
			metricsURL = "http://" + addr + "/metrics"
		}
		cmd := exec.Command(agentBin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CLEARML_AGENT_RUNTIME_DIR=" + b.TempDir()}
		if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
			cmd.Env = append(cmd.Env, "GOMAXPROCS="+v)
		}
		if v, ok := os.LookupEnv("CLEARML_BENCH_GODEBUG"); ok {
			// e.g. gctrace=1: the daemon's collections, on stderr.
			cmd.Env = append(cmd.Env, "GODEBUG="+v)
			cmd.Stderr = os.Stderr
		}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if len(s.WaitForRequests("workers.register", 1, 30*time.Second)) == 0 {
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatal("the daemon did not register within 30 s")
		}
		time.Sleep(idle - 15*time.Second)
		anon0 := procStatusKiB(cmd.Process.Pid)["RssAnon"]
		req0, cpu0, t0 := len(s.Requests()), procCPUTicks(cmd.Process.Pid), time.Now()
		scrapes := 0
		for end := t0.Add(15 * time.Second); time.Now().Before(end); {
			if listener {
				if resp, err := http.Get(metricsURL); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					scrapes++
				}
			}
			time.Sleep(time.Second)
		}
		st := procStatusKiB(cmd.Process.Pid)
		window := time.Since(t0)
		reqs, cpu := len(s.Requests())-req0, procCPUTicks(cmd.Process.Pid)-cpu0
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if st["VmHWM"] == 0 {
			b.Fatal("no /proc status for the daemon")
		}
		for _, k := range []string{"VmHWM", "VmRSS", "RssAnon", "RssFile"} {
			b.ReportMetric(float64(st[k])/1024, strings.ToLower(k)+"-MiB")
		}
		b.ReportMetric(float64(st["Threads"]), "threads")
		b.ReportMetric(float64(st["RssAnon"]-anon0)*4, "rssanon-growth-KiB/min")
		b.ReportMetric(float64(reqs)/window.Minutes(), "server-requests/min")
		// Clock ticks are 1/100 s on Linux (USER_HZ).
		b.ReportMetric(float64(cpu)/100/window.Seconds()*100, "cpu-%")
		if listener {
			b.ReportMetric(float64(scrapes), "scrapes")
		}
	}
}
