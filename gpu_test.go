package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGPUParseNvidiaSMIFixtures(t *testing.T) {
	u := func(s string) string { return "GPU-" + s + "-0000-0000-0000-000000000000" }
	tests := []struct {
		file  string
		want  []gpuInfo
		warns int
	}{
		{"a100x2.csv", []gpuInfo{
			{Index: 0, MIG: -1, UUID: "GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11", Name: "NVIDIA A100-SXM4-40GB", MemTotalMB: 40960, MemUsedMB: 1024, Util: 37, Temp: 41, HasMem: true, HasUtil: true, HasTemp: true},
			{Index: 1, MIG: -1, UUID: "GPU-9f3c2d1e-7a6b-4c5d-8e9f-1a2b3c4d5e6f", Name: "NVIDIA A100-SXM4-40GB", MemTotalMB: 40960, HasMem: true, HasUtil: true, HasTemp: true, Temp: 33},
		}, 0},
		{"quirks.csv", []gpuInfo{
			{Index: 0, MIG: -1, UUID: u("aaaaaaaa"), Name: "Tesla T4"},
			{Index: 1, MIG: -1, UUID: u("bbbbbbbb"), Name: "NVIDIA A100 80GB PCIe", MemTotalMB: 81920, MemUsedMB: 512, HasMem: true, Temp: 30, HasTemp: true},
			{Index: 2, MIG: -1, UUID: u("cccccccc"), Name: "Quadro RTX 6000, Rev. B", MemTotalMB: 24576, MemUsedMB: 100, HasMem: true, Util: 5, HasUtil: true, Temp: 55, HasTemp: true},
		}, 0},
		{"garbage.csv", []gpuInfo{
			{Index: 0, MIG: -1, UUID: u("dddddddd"), Name: "NVIDIA H100 80GB HBM3", MemTotalMB: 81559, MemUsedMB: 4, HasMem: true, HasUtil: true, Temp: 29, HasTemp: true},
			{Index: 3, MIG: -1, UUID: u("ffffffff"), Name: "NVIDIA H100 80GB HBM3", MemTotalMB: 81559, MemUsedMB: 81000, HasMem: true, Util: 99, HasUtil: true, Temp: 71, HasTemp: true},
		}, 4},
	}
	for _, tc := range tests {
		data, err := os.ReadFile(filepath.Join("testdata", "gpu", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		got, warns := parseNvidiaSMI(data)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.file, got, tc.want)
		}
		if len(warns) != tc.warns {
			t.Errorf("%s: %d warnings, want %d: %q", tc.file, len(warns), tc.warns, warns)
		}
	}

	data, _ := os.ReadFile("testdata/gpu/twelve.csv")
	got, _ := parseNvidiaSMI(data)
	var order []int
	for _, g := range got {
		order = append(order, g.Index)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v (numeric, not lexical)", order, want)
	}
}

func TestGPUFlagVectors(t *testing.T) {
	const unset = "<unset>"
	tests := []struct {
		name     string
		gpus     string
		cpuOnly  bool
		env      []string
		cuda, nv string // env after gpuEnv
		suffix   string
		slot     bool
		dsuffix  string // with --dynamic-gpus
		docker   []string
		inner    string
	}{
		{"no flag", "", false, nil, unset, unset, "", true, "", []string{"--gpus", "all"}, "all"},
		{"one", "0", false, nil, "0", "0", "gpu0", false, "dgpu0", []string{"--gpus", `"device=0"`}, "0"},
		{"agent#47: --gpus 1 gives the container GPU 1 only", "1", false, nil, "1", "1", "gpu1", false, "dgpu1", []string{"--gpus", `"device=1"`}, "1"},
		{"list", "0,1,2", false, nil, "0,1,2", "0,1,2", "gpu0,1,2", false, "dgpu0,1,2", []string{"--gpus", `"device=0,1,2"`}, "0,1,2"},
		{"range expands for CUDA, id keeps the text", "0-3", false, nil, "0,1,2,3", "0,1,2,3", "gpu0-3", false, "dgpu0-3", []string{"--gpus", `"device=0,1,2,3"`}, "0,1,2,3"},
		{"range and list", "0-1,4", false, nil, "0,1,4", "0,1,4", "gpu0-1,4", false, "dgpu0-1,4", []string{"--gpus", `"device=0,1,4"`}, "0,1,4"},
		{"all", "all", false, nil, unset, "all", "gpuall", false, "dgpuall", []string{"--gpus", "all"}, "all"},
		{"ALL", "ALL", false, []string{"CUDA_VISIBLE_DEVICES", "3"}, unset, "all", "gpuall", false, "dgpuall", []string{"--gpus", "all"}, "all"},
		{"uuid", "GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11", false, nil,
			"GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11", "GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11",
			"gpuGPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11", false, "dgpuGPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11",
			[]string{"--gpus", `"device=GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11"`}, "GPU-6b2a1b2e-0d4b-4c3e-9a1f-0c3a0d7e1a11"},
		{"mig colon", "0:1", false, nil, "0:1", "0:1", "gpu0.1", false, "dgpu0.1", []string{"--gpus", `"device=0:1"`}, "0:1"},
		{"mig dot", "0.1", false, nil, "0:1", "0:1", "gpu0.1", false, "dgpu0.1", []string{"--gpus", `"device=0:1"`}, "0:1"},
		{"mig list", "0.0,0.1", false, nil, "0:0,0:1", "0:0,0:1", "gpu0.0,0.1", false, "dgpu0.0,0.1", []string{"--gpus", `"device=0:0,0:1"`}, "0:0,0:1"},
		{"cpu only", "", true, nil, "none", "none", "cpu:", true, "cpu:", nil, "none"},
		{"cpu only wins over gpus", "0,1", true, nil, "none", "none", "cpu:", true, "cpu:", nil, "none"},
		{"inherited CUDA_VISIBLE_DEVICES", "", false, []string{"CUDA_VISIBLE_DEVICES", "3"}, "3", "3", "gpu3", false, "dgpu3", []string{"--gpus", `"device=3"`}, "3"},
		{"inherited NVIDIA all (CUDA image)", "", false, []string{"NVIDIA_VISIBLE_DEVICES", "all"}, unset, "all", "gpuall", false, "dgpuall", []string{"--gpus", "all"}, "all"},
		{"inherited none", "", false, []string{"NVIDIA_VISIBLE_DEVICES", "none"}, unset, "none", "cpu:", true, "cpu:", nil, "none"},
		{"-1 kept", "-1", false, nil, "-1", "-1", "gpu-1", false, "dgpu-1", []string{"--gpus", `"device=-1"`}, "-1"},
		{"kubernetes skips --gpus", "0", false, []string{"KUBERNETES_SERVICE_HOST", "10.0.0.1"}, unset, unset, "", true, "", []string{"--gpus", "all"}, "all"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for i := 0; i+1 < len(tc.env); i += 2 {
				m[tc.env[i]] = tc.env[i+1]
			}
			env := mapEnv(maps.Clone(m))
			gpuEnv(m, tc.gpus, tc.cpuOnly)
			get := func(k string) string {
				if v, ok := m[k]; ok {
					return v
				}
				return unset
			}
			if get("CUDA_VISIBLE_DEVICES") != tc.cuda || get("NVIDIA_VISIBLE_DEVICES") != tc.nv {
				t.Errorf("env CUDA=%s NVIDIA=%s, want %s %s", get("CUDA_VISIBLE_DEVICES"), get("NVIDIA_VISIBLE_DEVICES"), tc.cuda, tc.nv)
			}
			if m["CUDA_DEVICE_ORDER"] != "PCI_BUS_ID" {
				t.Errorf("CUDA_DEVICE_ORDER = %q", m["CUDA_DEVICE_ORDER"])
			}
			devs := workerIDDevices(tc.gpus, tc.cpuOnly, env)
			for _, c := range []struct {
				dynamic bool
				suffix  string
			}{{false, tc.suffix}, {true, tc.dsuffix}} {
				want := "h:" + c.suffix
				if tc.slot {
					want += "7"
				}
				if got := newWorkerIdentity("", "h", devs, c.dynamic).idFor(7); got != want {
					t.Errorf("worker id (dynamic %v) %q, want %q", c.dynamic, got, want)
				}
			}
			args, inner := dockerGPUArgs(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, false)
			if !reflect.DeepEqual(args, tc.docker) || inner != tc.inner {
				t.Errorf("docker %q inner %q, want %q %q", args, inner, tc.docker, tc.inner)
			}
			if args, inner := dockerGPUArgs(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, true); args != nil || inner != tc.inner {
				t.Errorf("skip flag: docker %q inner %q, want none %q", args, inner, tc.inner)
			}
		})
	}
}

func TestGPUListItemsErrors(t *testing.T) {
	for _, s := range []string{"3-1", "0-5000"} {
		if _, err := gpuListItems(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	// gpuEnv keeps an unparsable value as written rather than dropping it.
	m := map[string]string{}
	gpuEnv(m, "3-1", false)
	if m["CUDA_VISIBLE_DEVICES"] != "3-1" {
		t.Errorf("CUDA_VISIBLE_DEVICES = %q", m["CUDA_VISIBLE_DEVICES"])
	}
}

// fakeGPUBackend returns fixed GPUs; block makes it hang until released.
type fakeGPUBackend struct {
	gpus  []gpuInfo
	err   error
	block chan struct{}
	calls atomic.Int32
}

func (f *fakeGPUBackend) name() string { return "fake" }
func (f *fakeGPUBackend) query(ctx context.Context) ([]gpuInfo, []string, error) {
	f.calls.Add(1)
	if f.block != nil {
		<-f.block // ignores ctx, like a stuck driver call
	}
	return append([]gpuInfo(nil), f.gpus...), nil, f.err
}

func migFixture() []gpuInfo {
	return []gpuInfo{
		{Index: 0, MIG: 0, UUID: "MIG-a0", ParentUUID: "GPU-a", HasMem: true, MemTotalMB: 10, MemUsedMB: 1},
		{Index: 0, MIG: 1, UUID: "MIG-a1", ParentUUID: "GPU-a", HasMem: true, MemTotalMB: 10, MemUsedMB: 2},
		{Index: 1, MIG: -1, UUID: "GPU-b"},
		{Index: 2, MIG: -1, UUID: "GPU-c"},
		{Index: 10, MIG: -1, UUID: "GPU-k"},
	}
}

func TestGPUSetSelection(t *testing.T) {
	tests := []struct {
		visible string
		want    []string
	}{
		{"", []string{"0:0", "0:1", "1", "2", "10"}},
		{"all", []string{"0:0", "0:1", "1", "2", "10"}},
		{"10,2", []string{"2", "10"}},
		{"0", []string{"0:0", "0:1"}},
		{"0:1", []string{"0:1"}},
		{"0.1", []string{"0:1"}},
		{"GPU-a", []string{"0:0", "0:1"}},
		{"mig-a0,gpu-c", []string{"0:0", "2"}},
		{"1-2", []string{"1", "2"}},
		{"7", nil},
	}
	for _, tc := range tests {
		g := newGPUSetWith(&fakeGPUBackend{gpus: migFixture()}, tc.visible)
		sel, err := g.read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range sel {
			ids = append(ids, d.id())
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("%q: %v, want %v", tc.visible, ids, tc.want)
		}
	}
	g := newGPUSetWith(&fakeGPUBackend{gpus: migFixture()}, "0")
	if _, ok := g.freeMemMB("0:1"); ok {
		t.Error("free memory known before any reading")
	}
	g.read(context.Background())
	if free, ok := g.freeMemMB("0:1"); !ok || free != 8 {
		t.Errorf("freeMemMB(0:1) = %v, %v", free, ok)
	}
}

func TestGPUSetCPUOnlyIsNil(t *testing.T) {
	if g := newGPUSet("0", true, mapEnv(nil)); g != nil {
		t.Error("--cpu-only gave a GPU set")
	}
	if g := newGPUSet("", false, mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "none"})); g != nil {
		t.Error("NVIDIA_VISIBLE_DEVICES=none gave a GPU set")
	}
}

func TestGPUStuckBackendTimesOut(t *testing.T) {
	f := &fakeGPUBackend{gpus: migFixture(), block: make(chan struct{})}
	g := newGPUSetWith(f, "all")
	g.timeout = 50 * time.Millisecond
	if _, err := g.read(context.Background()); err == nil {
		t.Fatal("stuck backend: no error")
	}
	// The stuck call is not repeated while it is still running.
	if _, err := g.read(context.Background()); err != errGPUBusy {
		t.Errorf("second read: %v, want errGPUBusy", err)
	}
	if f.calls.Load() != 1 {
		t.Errorf("%d backend calls, want 1", f.calls.Load())
	}
	close(f.block)
	for g.busy.Load() {
		time.Sleep(time.Millisecond)
	}
	if sel, err := g.read(context.Background()); err != nil || len(sel) != 5 {
		t.Errorf("after unblock: %d GPUs, %v", len(sel), err)
	}
}

// fakeSMI puts an executable nvidia-smi first on PATH.
func fakeSMI(t *testing.T, script string) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestGPUFakeNvidiaSMI(t *testing.T) {
	fixture, _ := filepath.Abs("testdata/gpu/a100x2.csv")
	argsFile := filepath.Join(t.TempDir(), "args")
	fakeSMI(t, fmt.Sprintf("echo \"$@\" > %s\ncat %s\n", argsFile, fixture))
	g := newGPUSet("1", false, mapEnv(nil))
	if g == nil {
		t.Fatal("no GPU set with nvidia-smi on PATH")
	}
	if g.backend.name() != "nvidia-smi" && g.backend.name() != "NVML" {
		t.Fatalf("backend %q", g.backend.name())
	}
	if g.backend.name() == "NVML" {
		t.Skip("NVML present: nvidia-smi is not used")
	}
	sel, err := g.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 1 || sel[0].Index != 1 || sel[0].UUID != "GPU-9f3c2d1e-7a6b-4c5d-8e9f-1a2b3c4d5e6f" {
		t.Errorf("selected %+v", sel)
	}
	args, _ := os.ReadFile(argsFile)
	if got, want := strings.TrimSpace(string(args)), strings.Join(smiQueryArgs, " "); got != want {
		t.Errorf("nvidia-smi args %q, want %q", got, want)
	}
}

// TestGPUNvidiaSMIMIG: --query-gpu lists no MIG devices, so a MIG selection
// makes the nvidia-smi backend read them from -q -x and -L.
func TestGPUNvidiaSMIMIG(t *testing.T) {
	abs := func(name string) string { p, _ := filepath.Abs(filepath.Join("testdata", "gpu", name)); return p }
	calls := filepath.Join(t.TempDir(), "calls")
	fakeSMI(t, fmt.Sprintf(`echo "$1" >> %s
case "$1" in
  --query-gpu=*) cat %s ;;
  -q) cat %s ;;
  -L) cat %s ;;
  *) exit 9 ;;
esac
`, calls, abs("mig-a100.csv"), abs("mig-q.xml"), abs("mig-L.txt")))
	const (
		gpu0  = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
		mig00 = "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
		mig01 = "MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb"
		name  = "NVIDIA A100-SXM4-40GB"
	)
	slice0 := gpuInfo{Index: 0, MIG: 0, UUID: mig00, ParentUUID: gpu0, Name: name, MemTotalMB: 19968, MemUsedMB: 3600, HasMem: true, Temp: 34, HasTemp: true}
	slice1 := gpuInfo{Index: 0, MIG: 1, UUID: mig01, ParentUUID: gpu0, Name: name, MemTotalMB: 9728, MemUsedMB: 13, HasMem: true, Temp: 34, HasTemp: true}
	whole1 := gpuInfo{Index: 1, MIG: -1, UUID: "GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", Name: name, MemTotalMB: 40960, MemUsedMB: 4, HasMem: true, HasUtil: true, Temp: 30, HasTemp: true}
	for _, tc := range []struct {
		gpus    string
		want    []gpuInfo
		queries int // nvidia-smi runs per read
	}{
		{"0:1", []gpuInfo{slice1}, 3},
		{"0.0,1", []gpuInfo{slice0, whole1}, 3},
		{mig00, []gpuInfo{slice0}, 3},
		{"0", []gpuInfo{{Index: 0, MIG: -1, UUID: gpu0, Name: name, MemTotalMB: 40960, MemUsedMB: 3627, HasMem: true, Temp: 34, HasTemp: true}}, 1},
	} {
		os.Remove(calls)
		g := newGPUSet(tc.gpus, false, mapEnv(nil))
		if g == nil || g.backend.name() != "nvidia-smi" {
			t.Skip("nvidia-smi backend not selected")
		}
		got, err := g.read(context.Background())
		if err != nil {
			t.Fatalf("--gpus %s: %v", tc.gpus, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("--gpus %s:\n got %+v\nwant %+v", tc.gpus, got, tc.want)
		}
		b, _ := os.ReadFile(calls)
		if n := strings.Count(string(b), "\n"); n != tc.queries {
			t.Errorf("--gpus %s: %d nvidia-smi runs, want %d: %q", tc.gpus, n, tc.queries, b)
		}
	}
}

func TestGPUParseSMIMIG(t *testing.T) {
	xmlOut, _ := os.ReadFile("testdata/gpu/mig-q.xml")
	list, _ := os.ReadFile("testdata/gpu/mig-L.txt")
	got, err := parseSMIMIG(xmlOut, list)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got["GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"]); n != 2 || len(got) != 1 {
		t.Errorf("MIG devices %+v", got)
	}
	// An -L without MIG lines still gives the memory; the UUID stays unknown.
	got, err = parseSMIMIG(xmlOut, nil)
	if err != nil || got["GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"][1].UUID != "" || got["GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"][1].MemTotalMB != 9728 {
		t.Errorf("without -L: %+v %v", got, err)
	}
	if _, err := parseSMIMIG([]byte("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."), list); err == nil {
		t.Error("a driver error as XML was accepted")
	}
}

func TestGPUFakeNvidiaSMIHangs(t *testing.T) {
	// The child sleep holds stdout: killing only the shell would not end Wait.
	fakeSMI(t, "sleep 60\necho never\n")
	g := newGPUSet("", false, mapEnv(nil))
	if g == nil || g.backend.name() != "nvidia-smi" {
		t.Skip("nvidia-smi backend not selected")
	}
	g.timeout = 200 * time.Millisecond
	if _, err := g.read(context.Background()); err == nil {
		t.Fatal("hanging nvidia-smi: no error")
	}
	if r := g.latest(time.Now(), time.Hour); r != nil {
		t.Error("a reading after a timeout")
	}
	// The query goroutine ends once the process group is killed.
	for g.busy.Load() {
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGPUFakeNvidiaSMIFails(t *testing.T) {
	fakeSMI(t, "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n")
	g := newGPUSet("", false, mapEnv(nil))
	if g == nil || g.backend.name() != "nvidia-smi" {
		t.Skip("nvidia-smi backend not selected")
	}
	_, err := g.read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "couldn't communicate") {
		t.Fatalf("err = %v", err)
	}
	// poll warns after three failures in a row and keeps running.
	warned := make(chan string, 4)
	g.logf = func(f string, a ...any) { warned <- fmt.Sprintf(f, a...) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.poll(ctx, time.Millisecond); close(done) }()
	msg := <-warned
	cancel()
	<-done
	if !strings.Contains(msg, "GPU monitoring failed") {
		t.Errorf("warning %q", msg)
	}
	// Stats then carry no GPU fields.
	s := newStatsSampler(nil, g)
	defer s.close()
	s.sample(time.Now())
	if m := s.snapshot(); m["gpu_usage"] != nil {
		t.Errorf("gpu_usage %v from a failing nvidia-smi", m["gpu_usage"])
	}
}

func TestGPUNoBackendIsNil(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if g := newGPUSet("0", false, mapEnv(nil)); g != nil && g.backend.name() != "NVML" {
		t.Errorf("GPU set %q without nvidia-smi", g.backend.name())
	}
}

func TestGPUQueueSpec(t *testing.T) {
	tests := []struct {
		in       string
		queue    string
		min, max int
		err      string
	}{
		{"q=2", "q", 2, 2, ""},
		{"q=1-4", "q", 1, 4, ""},
		{"q=-3", "q", 1, 3, ""},
		{"dual gpu=2-2", "dual gpu", 2, 2, ""},
		{"q", "", 0, 0, "needs a GPU count"},
		{"q=0", "", 0, 0, "positive"},
		{"q=0-2", "", 0, 0, "positive"},
		{"q=3-1", "", 0, 0, "above maximum"},
		{"q=1.5", "", 0, 0, "invalid"},
		{"q=x", "", 0, 0, "invalid"},
		{"=2", "", 0, 0, "needs a GPU count"},
	}
	for _, tc := range tests {
		q, err := parseGPUQueueSpec(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || q != (gpuQueueSpec{queue: tc.queue, min: tc.min, max: tc.max}) {
			t.Errorf("%q: %+v %v", tc.in, q, err)
		}
	}
	for in, want := range map[string][]string{"0-3": {"0", "1", "2", "3"}, "0,2": {"0", "2"}, "0:1,0.2": {"0:1", "0:2"}} {
		if got, err := parseGPUPool(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("pool %q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "all", "0,0", "3-1"} {
		if _, err := parseGPUPool(in); err == nil {
			t.Errorf("pool %q: no error", in)
		}
	}
}

func TestGPUAllocator(t *testing.T) {
	pool, _ := parseGPUPool("0-3")
	a := newGPUAllocator(pool, 0, nil)
	l1 := a.allocate("t1", 1, 2)
	if l1 == nil || l1.visible() != "0,1" {
		t.Fatalf("t1 got %v", l1)
	}
	if l := a.allocate("t2", 3, 3); l != nil {
		t.Fatalf("t2 got %v with 2 free", l.ids)
	}
	l2 := a.allocate("t2", 1, 8)
	if l2 == nil || l2.visible() != "2,3" {
		t.Fatalf("t2 got %v", l2)
	}
	if free, total := a.available(); free != 0 || total != 4 {
		t.Errorf("available %d/%d", free, total)
	}
	if l := a.allocate("t3", 1, 1); l != nil {
		t.Fatal("allocation from an exhausted pool")
	}
	l1.release()
	l1.release() // idempotent: every exit path may call it
	if free, _ := a.available(); free != 2 {
		t.Errorf("after release: %d free", free)
	}
	l3 := a.allocate("t3", 1, 1)
	if l3 == nil || l3.visible() != "0" {
		t.Fatalf("t3 got %v", l3)
	}
	// a late second release of t1 must not free t3's GPU
	l1.release()
	if l := a.allocate("t4", 2, 2); l != nil {
		t.Fatalf("t4 got %v", l.ids)
	}
	a.setExternal([]string{"1"})
	if l := a.allocate("t5", 1, 1); l != nil {
		t.Fatalf("t5 got GPU %v used by another worker", l.ids)
	}
	a.setExternal(nil)
	if l := a.allocate("t5", 1, 1); l == nil || l.visible() != "1" {
		t.Fatalf("t5 got %v", l)
	}
}

func TestGPUAllocatorMemoryGate(t *testing.T) {
	free := map[string]float64{"0": 100, "1": 5000, "2": 20000}
	a := newGPUAllocator([]string{"0", "1", "2", "3"}, 4096, func(id string) (float64, bool) {
		v, ok := free[id]
		return v, ok
	})
	l := a.allocate("t", 1, 4)
	if l == nil || l.visible() != "1,2,3" { // 0 is below the gate, 3 is unknown
		t.Fatalf("got %v", l)
	}
	if f, _ := a.available(); f != 0 {
		t.Errorf("%d available", f)
	}
	// With a real gpuSet as the source of free memory.
	g := newGPUSetWith(&fakeGPUBackend{gpus: migFixture()}, "0")
	g.read(context.Background())
	a = newGPUAllocator([]string{"0:0", "0:1"}, 8.5, g.freeMemMB)
	if l := a.allocate("t", 1, 2); l == nil || l.visible() != "0:0" {
		t.Fatalf("got %v", l)
	}
}

func TestGPUAllocatorStress(t *testing.T) {
	pool, _ := parseGPUPool("0-7")
	a := newGPUAllocator(pool, 0, nil)
	var inUse [8]atomic.Int32
	var granted atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				n := 1 + (w+i)%3
				l := a.allocate(fmt.Sprintf("w%d-%d", w, i), 1, n)
				if l == nil {
					continue
				}
				granted.Add(1)
				for _, id := range l.ids {
					k := int(id[0] - '0')
					if inUse[k].Add(1) != 1 {
						t.Errorf("GPU %s given to two tasks", id)
					}
				}
				a.available()
				for _, id := range l.ids {
					inUse[id[0]-'0'].Add(-1)
				}
				l.release()
				if i%2 == 0 {
					l.release()
				}
			}
		}(w)
	}
	wg.Wait()
	if free, total := a.available(); free != total {
		t.Errorf("%d/%d free after all tasks ended", free, total)
	}
	if granted.Load() == 0 {
		t.Error("nothing allocated")
	}
}

// TestGPURealDevice checks the backend against a real driver. It runs only
// where nvidia-smi works (a GPU machine), and with -tags nvml it checks the
// NVML backend; elsewhere it skips. See testdata/gpu/device-check.sh.
func TestGPURealDevice(t *testing.T) {
	out, err := exec.Command("nvidia-smi", "-L").Output()
	if err != nil {
		t.Skip("no working nvidia-smi: not a GPU machine")
	}
	want := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "GPU ") {
			want++
		}
	}
	g := newGPUSet("all", false, os.LookupEnv)
	if g == nil {
		t.Fatal("no GPU backend on a machine with nvidia-smi")
	}
	t.Logf("GPU backend: %s", g.backend.name())
	if os.Getenv("CLEARML_AGENT_EXPECT_NVML") == "1" && g.backend.name() != "NVML" {
		_, err := newNVMLBackend()
		t.Errorf("an NVML build on a driver machine uses %s (NVML: %v)", g.backend.name(), err)
	}
	gpus, err := g.read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != want {
		t.Errorf("backend found %d GPUs, nvidia-smi -L lists %d", len(gpus), want)
	}
	for _, d := range gpus {
		t.Logf("GPU %d %s %s: mem %.0f/%.0f MB, util %.0f%%, %.0f C", d.Index, d.UUID, d.Name, d.MemUsedMB, d.MemTotalMB, d.Util, d.Temp)
		if d.UUID == "" || d.Name == "" || !d.HasMem || d.MemTotalMB <= 0 {
			t.Errorf("incomplete GPU record: %+v", d)
		}
	}
	s := newStatsSampler(nil, g)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	s.run(ctx)
	ms := s.snapshot()
	if used, ok := ms["gpu_memory_used"].([]float64); !ok || len(used) != want {
		t.Errorf("machine_stats GPU fields: %v", ms)
	}
}

// TestGPUAllocatorRandomSequences checks the allocator against a model over
// 1,000 random sequences of enqueue (allocate), finish, abort (release, then
// the late second release of a killed child), crash (released out of order,
// twice) and other agents taking GPUs: no GPU is ever given to two tasks or
// to a GPU another agent holds, each grant is within [min, max] and as large
// as possible, a refusal happens only when fewer than min are free, and
// after every sequence all GPUs are free again (no leak).
func TestGPUAllocatorRandomSequences(t *testing.T) {
	pool := []string{"0", "1", "2", "3", "4", "5", "6", "7"}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	for seq := 0; seq < 1000; seq++ {
		a := newGPUAllocator(pool, 0, nil)
		var live []*gpuLease
		external := map[string]bool{}
		held := func() map[string]bool {
			h := map[string]bool{}
			for _, l := range live {
				for _, id := range l.ids {
					if h[id] {
						t.Fatalf("seed %d seq %d: GPU %s held twice", seed, seq, id)
					}
					h[id] = true
				}
			}
			return h
		}
		for op := 0; op < 20+rng.IntN(40); op++ {
			switch r := rng.IntN(10); {
			case r < 5: // enqueue
				lo := 1 + rng.IntN(4)
				hi := lo + rng.IntN(3)
				h := held()
				free := 0
				for _, id := range pool {
					if !h[id] && !external[id] {
						free++
					}
				}
				l := a.allocate(fmt.Sprint("t", seq, "-", op), lo, hi)
				switch {
				case l == nil && free >= lo:
					t.Fatalf("seed %d seq %d: refused %d-%d with %d free", seed, seq, lo, hi, free)
				case l != nil && (len(l.ids) < lo || len(l.ids) > hi || len(l.ids) != min(free, hi)):
					t.Fatalf("seed %d seq %d: granted %v for %d-%d with %d free", seed, seq, l.ids, lo, hi, free)
				case l != nil:
					for _, id := range l.ids {
						if h[id] || external[id] {
							t.Fatalf("seed %d seq %d: GPU %s granted while in use", seed, seq, id)
						}
					}
					live = append(live, l)
				}
			case r < 7 && len(live) > 0: // finish
				i := rng.IntN(len(live))
				live[i].release()
				live = append(live[:i], live[i+1:]...)
			case r < 8 && len(live) > 0: // abort: stopped, and the dying child's release comes again
				i := rng.IntN(len(live))
				l := live[i]
				live = append(live[:i], live[i+1:]...)
				l.release()
				held()
				l.release()
			case r < 9 && len(live) > 1: // crash: two leases end in the other order, each released twice
				i, j := rng.IntN(len(live)), rng.IntN(len(live))
				if i == j {
					continue
				}
				li, lj := live[i], live[j]
				lj.release()
				li.release()
				li.release()
				lj.release()
				rest := live[:0]
				for _, l := range live {
					if l != li && l != lj {
						rest = append(rest, l)
					}
				}
				live = rest
			default: // other agents on the host change what they hold
				external = map[string]bool{}
				var ids []string
				for _, id := range pool {
					if rng.IntN(5) == 0 {
						external[id] = true
						ids = append(ids, id)
					}
				}
				a.setExternal(ids)
			}
			held()
		}
		for _, l := range live {
			l.release()
		}
		a.setExternal(nil)
		if free, total := a.available(); free != total {
			t.Fatalf("seed %d seq %d: %d of %d GPUs free after every task ended (leak)", seed, seq, free, total)
		}
	}
}

// FuzzParseNvidiaSMI feeds the nvidia-smi parsers (CSV, -q -x, -L) arbitrary
// output: a driver in a bad state prints anything. They must not panic, and
// what they return must be usable.
func FuzzParseNvidiaSMI(f *testing.F) {
	for _, name := range []string{"a100x2.csv", "quirks.csv", "garbage.csv", "mig-a100.csv", "mig-q.xml", "mig-L.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", "gpu", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, []byte("GPU 0: X (UUID: GPU-1)\n  MIG 1g.5gb Device 0: (UUID: MIG-2)\n"))
	}
	f.Fuzz(func(t *testing.T, out, list []byte) {
		gpus, _ := parseNvidiaSMI(out)
		for i, g := range gpus {
			if g.Index < 0 || g.UUID == "" || g.MemTotalMB < 0 || g.MemUsedMB < 0 || (i > 0 && gpus[i-1].Index > g.Index) {
				t.Fatalf("bad GPU record %+v", g)
			}
		}
		slices, err := parseSMIMIG(out, list)
		if err == nil {
			merged := smiWithMIG(gpus, slices)
			for _, g := range merged {
				if g.MIG >= 0 && g.ParentUUID == "" {
					t.Fatalf("MIG slice without its GPU: %+v", g)
				}
			}
		}
	})
}
