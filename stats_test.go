package main

import (
	"context"
	"encoding/json"
	"reflect"
	"runtime"
	"testing"
	"time"
)

// fixtureSampler samples testdata/proc/sample1 then sample2, 2 s apart.
func fixtureSampler(t *testing.T, sysRoot string, gpus *gpuSet) (*statsSampler, time.Time) {
	s := newStatsSampler(nil, gpus)
	s.sysRoot = sysRoot
	s.homePath, s.tempPath = t.TempDir(), t.TempDir()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s.procRoot = "testdata/proc/sample1"
	s.sample(t0)
	s.close()
	s.procRoot = "testdata/proc/sample2"
	s.sample(t0.Add(2 * time.Second))
	s.close()
	return s, t0
}

func TestStatsProcFixtures(t *testing.T) {
	for _, sysRoot := range []string{"testdata/proc/sys", "testdata/proc/no-such-sys"} {
		s, _ := fixtureSampler(t, sysRoot, nil)
		m := s.snapshot()
		for _, k := range []string{"disk_free_home", "disk_free_temp"} {
			v, ok := m[k].(float64)
			if !ok || v < 0 || v > 100 {
				t.Errorf("%s = %v", k, m[k])
			}
			delete(m, k)
		}
		want := map[string]any{
			"cpu_usage":   []float64{50},  // (2500-1500)/(12000-10000) busy jiffies
			"memory_used": float64(7350),  // mean of 6850 and 7850 MB
			"memory_free": float64(11500), // MemAvailable: 12000 and 11000 MB
			"disk_read":   1.0,            // sda 1 MiB + nvme0n1 1 MiB over 2 s
			"disk_write":  1.25,           // sda 2 MiB + nvme0n1 0.5 MiB over 2 s
			"network_rx":  2.0,            // eth0 3 MiB + docker0 1 MiB over 2 s; lo ignored
			"network_tx":  0.5,            // eth0 1 MiB over 2 s
		}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("sys %s:\n got %v\nwant %v", sysRoot, m, want)
		}
		if m := s.snapshot(); m != nil {
			t.Errorf("second snapshot without samples: %v", m)
		}
	}
}

func TestStatsParsers(t *testing.T) {
	busy, total, ok := parseProcStat([]byte("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 1 1 1\n"))
	if !ok || busy != 1+2+3+6+7+8 || total != 36 {
		t.Errorf("stat: %d %d %v", busy, total, ok)
	}
	if _, _, ok := parseProcStat([]byte("intr 1 2\n")); ok {
		t.Error("stat without a cpu line parsed")
	}
	// Old kernels: no MemAvailable.
	used, free, ok := parseMeminfo([]byte("MemTotal: 2048 kB\nMemFree: 1024 kB\nBuffers: 0 kB\nCached: 512 kB\n"))
	if !ok || used != 0.5 || free != 1.5 {
		t.Errorf("meminfo: %v %v %v", used, free, ok)
	}
	for name, want := range map[string]bool{"sda": true, "sda1": false, "xvdb": true, "vda": true, "nvme0n1": true, "nvme0n1p2": false,
		"mmcblk0": true, "mmcblk0p1": false, "loop0": false, "dm-0": false, "md0": false, "zram0": false, "sr0": false} {
		if guessWholeDisk([]byte(name)) != want {
			t.Errorf("guessWholeDisk(%s) != %v", name, want)
		}
	}
}

func TestStatsGPULists(t *testing.T) {
	f := &fakeGPUBackend{gpus: []gpuInfo{
		{Index: 10, MIG: -1, UUID: "GPU-k", HasMem: true, MemTotalMB: 1000, MemUsedMB: 100, Util: 10, HasUtil: true, Temp: 50, HasTemp: true},
		{Index: 2, MIG: -1, UUID: "GPU-c", HasMem: true, MemTotalMB: 2000, MemUsedMB: 500, Util: 20, HasUtil: true, Temp: 60, HasTemp: true},
		{Index: 0, MIG: 1, UUID: "MIG-a1", HasMem: true, MemTotalMB: 500, MemUsedMB: 0}, // MIG: no utilisation
	}}
	g := newGPUSetWith(f, "all")
	s, t0 := fixtureSampler(t, "testdata/proc/sys", nil)
	defer s.close()
	s.snapshot()
	s.gpus, s.gpuMaxAge = g, time.Hour
	if _, err := g.read(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.sample(t0.Add(3 * time.Second))
	f.gpus[0].Util, f.gpus[1].MemUsedMB = 30, 1500
	g.read(context.Background())
	s.sample(t0.Add(4 * time.Second))
	m := s.snapshot()
	want := map[string][]float64{ // index order 0:1, 2, 10
		"gpu_usage":       {100, 20, 20},
		"gpu_memory_used": {0, 1000, 100},
		"gpu_memory_free": {500, 1000, 900},
		"gpu_temperature": {0, 60, 50},
	}
	for k, w := range want {
		if !reflect.DeepEqual(m[k], w) {
			t.Errorf("%s = %v, want %v", k, m[k], w)
		}
	}
	if _, err := json.Marshal(m); err != nil {
		t.Error(err)
	}
	// A stale reading is not reported.
	s.gpuMaxAge = time.Second
	s.sample(time.Now().Add(time.Minute))
	if m := s.snapshot(); m["gpu_usage"] != nil {
		t.Errorf("stale GPU reading reported: %v", m["gpu_usage"])
	}
}

func TestStatsRealProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc on " + runtime.GOOS + " (TestStatsWithoutProc covers it)")
	}
	s := newStatsSampler(nil, nil)
	defer s.close()
	s.sample(time.Now())
	// Let the jiffies move: cpu_usage needs the re-read (pread) /proc/stat
	// to show new counters.
	time.Sleep(60 * time.Millisecond)
	s.sample(time.Now())
	m := s.snapshot()
	cpu, _ := m["cpu_usage"].([]float64)
	if len(cpu) != 1 || cpu[0] < 0 || cpu[0] > 100 {
		t.Errorf("cpu_usage %v", m["cpu_usage"])
	}
	for _, k := range []string{"memory_used", "memory_free"} {
		if v, _ := m[k].(float64); v <= 0 {
			t.Errorf("%s = %v", k, m[k])
		}
	}
	for _, k := range []string{"disk_read", "disk_write", "network_rx", "network_tx", "disk_free_home", "disk_free_temp"} {
		if v, ok := m[k].(float64); !ok || v < 0 {
			t.Errorf("%s = %v", k, m[k])
		}
	}
	if _, err := json.Marshal(m); err != nil {
		t.Error(err)
	}
}

// Without /proc (macOS: statsProcRoot is ""), a worker still reports disk
// space and GPUs, and nothing fails.
func TestStatsWithoutProc(t *testing.T) {
	f := &fakeGPUBackend{gpus: []gpuInfo{{Index: 0, MIG: -1, UUID: "GPU-a", HasUtil: true, Util: 40}}}
	g := newGPUSetWith(f, "all")
	s := newStatsSampler(nil, g)
	s.procRoot = ""
	s.gpuMaxAge = time.Hour
	if _, err := g.read(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.sample(now)
	s.sample(now.Add(time.Second))
	m := s.snapshot()
	for _, k := range []string{"cpu_usage", "memory_used", "memory_free", "disk_read", "network_rx"} {
		if v, ok := m[k]; ok {
			t.Errorf("%s = %v without /proc", k, v)
		}
	}
	if v, ok := m["disk_free_home"].(float64); !ok || v < 0 || v > 100 {
		t.Errorf("disk_free_home = %v", m["disk_free_home"])
	}
	if !reflect.DeepEqual(m["gpu_usage"], []float64{40}) {
		t.Errorf("gpu_usage = %v", m["gpu_usage"])
	}
	for _, f := range s.files {
		if f != nil {
			t.Error("a /proc file was opened")
		}
	}
}

func TestStatsRunStopsWithContext(t *testing.T) {
	s := newStatsSampler(nil, newGPUSetWith(&fakeGPUBackend{}, "all"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.run(ctx); close(done) }()
	cancel()
	<-done
	if m := s.snapshot(); m["memory_used"] == nil {
		t.Errorf("no sample taken: %v", m)
	}
	for _, f := range s.files {
		if f != nil {
			t.Error("file left open after run")
		}
	}
}

func TestStatsConfig(t *testing.T) {
	cfg := &agentConfig{root: newHOCONObject(), env: mapEnv(map[string]string{"HOME": "/home/u"})}
	s := newStatsSampler(cfg, nil)
	if s.homePath != "/home/u" || s.gpuDefaultUtil != 100 {
		t.Errorf("defaults: %q %v", s.homePath, s.gpuDefaultUtil)
	}
	cfg.set("agent.resource_monitoring.disk_use_path", "~/data")
	cfg.set("agent.resource_monitoring.default_gpu_utilization", nil)
	s = newStatsSampler(cfg, nil)
	if s.homePath != "/home/u/data" || s.gpuDefaultUtil != 0 {
		t.Errorf("set: %q %v", s.homePath, s.gpuDefaultUtil)
	}
}

func BenchmarkStatsSample(b *testing.B) {
	s := newStatsSampler(nil, nil)
	defer s.close()
	now := time.Now()
	s.sample(now)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now = now.Add(statsInterval)
		s.sample(now)
	}
}
