package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// asROCmHost makes the process see an AMD host (amd: /dev/kfd) with or
// without NVIDIA devices, for the length of the test.
func asROCmHost(t *testing.T, amd, nvidia bool) {
	t.Helper()
	old := gpuDevices
	gpuDevices = func() (bool, bool) { return amd, nvidia }
	t.Cleanup(func() { gpuDevices = old })
}

// The fixtures follow rocm_smi.py's JSON writer (formatJson) of ROCm 6.2
// and of 5.2.3, Debian bookworm's package: every value a string, "N/A"
// for what a device cannot read, keys renamed between versions.
func TestROCmParseFixtures(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		file  string
		want  []gpuInfo
		warns int
	}{
		{"rocm-mi250x.json", []gpuInfo{
			{Index: 0, MIG: -1, UUID: "GPU-6e9a2f3c1b4d0a57", Name: "AMD Instinct MI250X", PCIBus: "0000:C1:00.0",
				MemTotalMB: 68702699520.0 / mb, MemUsedMB: 49152, Util: 97, Temp: 41, HasMem: true, HasUtil: true, HasTemp: true},
			{Index: 1, MIG: -1, UUID: "GPU-1f0e3b7c9a8d6e52", Name: "AMD Instinct MI250X", PCIBus: "0000:C6:00.0",
				MemTotalMB: 68702699520.0 / mb, MemUsedMB: 11808768.0 / mb, Util: 0, Temp: 38, HasMem: true, HasUtil: true, HasTemp: true},
		}, 0},
		{"rocm-mi300x-cpx.json", []gpuInfo{
			// No edge sensor: the junction temperature stands in.
			{Index: 0, MIG: -1, UUID: "GPU-2d1f9e44bc0a7713", Name: "AMD Instinct MI300X", PCIBus: "0000:0C:00.0",
				MemTotalMB: 24560, MemUsedMB: 270, Util: 12, Temp: 52, HasMem: true, HasUtil: true, HasTemp: true},
			{Index: 1, MIG: -1, Name: "AMD Instinct MI300X", PCIBus: "0000:0C:00.1",
				MemTotalMB: 24560, MemUsedMB: 270, Temp: 53, HasMem: true, HasTemp: true},
			{Index: 2, MIG: -1, Name: "AMD Instinct MI300X", PCIBus: "0000:0C:00.2", Temp: 54, HasTemp: true},
		}, 0},
		{"rocm-5.2-navi21.json", []gpuInfo{
			{Index: 0, MIG: -1, UUID: "GPU-8f1e6f52d2a31b0c", Name: "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", PCIBus: "0000:03:00.0",
				MemTotalMB: 17163091968.0 / mb, MemUsedMB: 26333184.0 / mb, Util: 3, Temp: 38, HasMem: true, HasUtil: true, HasTemp: true},
		}, 0},
		{"rocm-noise.txt", []gpuInfo{
			{Index: 1, MIG: -1, Name: "AMD Radeon PRO W7900", MemTotalMB: 48301604864.0 / mb, MemUsedMB: 1, Util: 5, Temp: 33, HasMem: true, HasUtil: true, HasTemp: true},
		}, 1}, // cardX
	}
	for _, tc := range tests {
		data, err := os.ReadFile(filepath.Join("testdata", "gpu", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		got, warns, err := parseROCmSMI(data)
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.file, got, tc.want)
		}
		if len(warns) != tc.warns {
			t.Errorf("%s: warnings %q, want %d", tc.file, warns, tc.warns)
		}
	}
	for _, bad := range []string{"", "ERROR: No DRM devices available. Exiting", "{\"card0\": ", `{"card0": "flat"}`} {
		if gpus, _, err := parseROCmSMI([]byte(bad)); err == nil {
			t.Errorf("%q: no error, GPUs %+v", bad, gpus)
		}
	}
}

// fakeROCmSMI puts testdata's stand-in rocm-smi alone on PATH, printing
// fixture, and returns the file its arguments are written to.
func fakeROCmSMI(t *testing.T, fixture string) string {
	t.Helper()
	dir := t.TempDir()
	src, _ := filepath.Abs("testdata/gpu/fake/bin/rocm-smi")
	if err := os.Symlink(src, filepath.Join(dir, "rocm-smi")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+"/usr/bin:/bin")
	fx, _ := filepath.Abs(filepath.Join("testdata", "gpu", fixture))
	t.Setenv("FAKE_ROCM_SMI_JSON", fx)
	args := filepath.Join(t.TempDir(), "args")
	t.Setenv("FAKE_ROCM_SMI_ARGS", args)
	return args
}

// On an AMD host the agent finds rocm-smi, selects by index or unique id,
// and reports the GPUs in machine_stats as it does NVIDIA's.
func TestROCmFakeSMIWorkerStats(t *testing.T) {
	asROCmHost(t, true, false)
	argsFile := fakeROCmSMI(t, "rocm-mi250x.json")
	for _, sel := range []string{"1", "GPU-1F0E3B7C9A8D6E52"} {
		g := newGPUSet(sel, false, mapEnv(nil))
		if g == nil || g.backend.name() != "rocm-smi" {
			t.Fatalf("--gpus %s: GPU set %+v, want the rocm-smi backend", sel, g)
		}
		gpus, err := g.read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(gpus) != 1 || gpus[0].Index != 1 || gpus[0].PCIBus != "0000:C6:00.0" {
			t.Errorf("--gpus %s selected %+v", sel, gpus)
		}
	}
	args, _ := os.ReadFile(argsFile)
	if got, want := strings.TrimSpace(string(args)), strings.Join(rocmSMIArgs, " "); got != want {
		t.Errorf("rocm-smi args %q, want %q", got, want)
	}

	g := newGPUSet("", false, mapEnv(nil))
	s := newStatsSampler(nil, g)
	if s.gpuInterval != 5*time.Second {
		t.Errorf("rocm-smi polled every %v, want 5s (a process per call)", s.gpuInterval)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	go s.run(ctx)
	var m map[string]any
	for m == nil || m["gpu_usage"] == nil {
		if ctx.Err() != nil {
			t.Fatalf("no GPU stats from rocm-smi: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
		if sm := s.snapshot(); sm != nil {
			m = sm
		}
	}
	want := map[string][]float64{
		"gpu_usage":       {97, 0},
		"gpu_memory_used": {49152, 11.262},
		"gpu_memory_free": {16368, 65508.738},
		"gpu_temperature": {41, 38},
	}
	for k, w := range want {
		if !reflect.DeepEqual(m[k], w) {
			t.Errorf("%s = %v, want %v", k, m[k], w)
		}
	}
}

func TestROCmDetection(t *testing.T) {
	root := t.TempDir()
	touch := func(p string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		os.WriteFile(filepath.Join(root, p), nil, 0o644)
	}
	if amd, nv := probeGPUDevices(root); amd || nv {
		t.Errorf("empty root: amd %v nvidia %v", amd, nv)
	}
	touch("dev/kfd")
	if amd, nv := probeGPUDevices(root); !amd || nv {
		t.Errorf("kfd: amd %v nvidia %v", amd, nv)
	}
	touch("proc/driver/nvidia")
	if amd, nv := probeGPUDevices(root); !amd || !nv {
		t.Errorf("kfd and nvidia: amd %v nvidia %v", amd, nv)
	}

	// Both tools on PATH: the host's devices decide.
	fakeROCmSMI(t, "rocm-mi250x.json")
	fakeSMI(t, "exit 0\n")
	for _, tc := range []struct {
		amd, nvidia bool
		want        string
	}{
		{true, false, "rocm-smi"},
		{true, true, "nvidia-smi"},
		{false, true, "nvidia-smi"},
	} {
		asROCmHost(t, tc.amd, tc.nvidia)
		b := detectGPUBackend(nil)
		if b == nil || (b.name() != tc.want && b.name() != "NVML") {
			t.Errorf("amd %v nvidia %v: backend %v, want %s", tc.amd, tc.nvidia, b, tc.want)
		}
	}
	// rocm-smi without /dev/kfd (installed, no AMD GPU): no GPUs, quietly.
	fakeROCmSMI(t, "rocm-mi250x.json")
	asROCmHost(t, false, false)
	if b := detectGPUBackend(nil); b != nil && b.name() != "NVML" {
		t.Errorf("no /dev/kfd: backend %s", b.name())
	}
	// /opt/rocm/bin is not on PATH everywhere: $ROCM_PATH/bin is searched.
	rocm := t.TempDir()
	os.MkdirAll(filepath.Join(rocm, "bin"), 0o755)
	os.WriteFile(filepath.Join(rocm, "bin", "rocm-smi"), []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", t.TempDir())
	if p := findROCmSMI(mapEnv(map[string]string{"ROCM_PATH": rocm})); p != filepath.Join(rocm, "bin", "rocm-smi") {
		t.Errorf("findROCmSMI = %q", p)
	}
}

// A task's environment on an AMD host: HIP_VISIBLE_DEVICES follows --gpus
// and --cpu-only; ROCR_VISIBLE_DEVICES is never set (HIP would apply its
// indices on top of ROCr's).
func TestROCmTaskEnv(t *testing.T) {
	const unset = "<unset>"
	tests := []struct {
		gpus    string
		cpuOnly bool
		amd     bool
		hip     string
	}{
		{"1,2", false, true, "1,2"},
		{"0-2", false, true, "0,1,2"},
		{"GPU-1f0e3b7c9a8d6e52", false, true, "GPU-1f0e3b7c9a8d6e52"},
		{"all", false, true, unset},
		{"", false, true, unset},
		{"", true, true, "-1"},
		{"1,2", false, false, unset}, // NVIDIA host: unchanged
	}
	for _, tc := range tests {
		asROCmHost(t, tc.amd, false)
		env := map[string]string{}
		gpuEnv(env, tc.gpus, tc.cpuOnly)
		hip, ok := env["HIP_VISIBLE_DEVICES"]
		if !ok {
			hip = unset
		}
		if hip != tc.hip {
			t.Errorf("--gpus %q cpu-only %v amd %v: HIP_VISIBLE_DEVICES %q, want %q", tc.gpus, tc.cpuOnly, tc.amd, hip, tc.hip)
		}
		if _, ok := env["ROCR_VISIBLE_DEVICES"]; ok {
			t.Errorf("--gpus %q: ROCR_VISIBLE_DEVICES set", tc.gpus)
		}
	}
	// "all" removes an inherited selection.
	asROCmHost(t, true, false)
	env := map[string]string{"HIP_VISIBLE_DEVICES": "3"}
	gpuEnv(env, "all", false)
	if _, ok := env["HIP_VISIBLE_DEVICES"]; ok {
		t.Errorf("--gpus all kept HIP_VISIBLE_DEVICES=%s", env["HIP_VISIBLE_DEVICES"])
	}
}

// Docker mode on an AMD host: /dev/kfd and the selected GPUs' render nodes
// (by the KFD topology, in HIP's order), never `--gpus`.
func TestROCmDockerArgs(t *testing.T) {
	sys := filepath.Join("testdata", "gpu", "kfd")
	tail := []string{"--group-add", "video"}
	tests := []struct {
		visible, sys string
		want         []string
	}{
		{"", sys, []string{"--device=/dev/kfd", "--device=/dev/dri"}},
		{"all", sys, []string{"--device=/dev/kfd", "--device=/dev/dri"}},
		// Node order 1, 2, 3, 10 has render minors 128, 130, 129, 131.
		{"1,2", sys, []string{"--device=/dev/kfd", "--device=/dev/dri/renderD130", "--device=/dev/dri/renderD129"}},
		{"0-3", sys, []string{"--device=/dev/kfd", "--device=/dev/dri/renderD128", "--device=/dev/dri/renderD130", "--device=/dev/dri/renderD129", "--device=/dev/dri/renderD131"}},
		{"GPU-1f0e3b7c9a8d6e52", sys, []string{"--device=/dev/kfd", "--device=/dev/dri/renderD130"}},
		// Unknown GPUs are not exposed (never more than asked for).
		{"7,GPU-00000000000000ff", sys, []string{"--device=/dev/kfd"}},
		// No topology: the reference's rule, renderD(128+index).
		{"0,2", t.TempDir(), []string{"--device=/dev/kfd", "--device=/dev/dri/renderD128", "--device=/dev/dri/renderD130"}},
	}
	for _, tc := range tests {
		want := append(append([]string{}, tc.want...), tail...)
		if got := rocmDockerArgsAt(tc.visible, tc.sys); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %q, want %q", tc.visible, got, want)
		}
	}

	// dockerGPUArgs (what docker.go calls) uses them on an AMD host only.
	asROCmHost(t, true, false)
	args, _ := dockerGPUArgs(mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "all"}), false)
	if !reflect.DeepEqual(args, rocmDockerArgs("")) {
		t.Errorf("all: %q", args)
	}
	args, _ = dockerGPUArgs(mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "0,1"}), false)
	if !reflect.DeepEqual(args, rocmDockerArgs("0,1")) || len(args) != 5 {
		t.Errorf("0,1: %q", args)
	}
	if args, inner := dockerGPUArgs(mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "none"}), false); args != nil || inner != "none" {
		t.Errorf("none: %q %q", args, inner)
	}
	if args, inner := dockerGPUArgs(mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "0,1"}), true); args != nil || inner != "0,1" {
		t.Errorf("skip flag: %q %q", args, inner)
	}
	asROCmHost(t, true, true)
	if args, _ := dockerGPUArgs(mapEnv(map[string]string{"NVIDIA_VISIBLE_DEVICES": "all"}), false); !reflect.DeepEqual(args, []string{"--gpus", "all"}) {
		t.Errorf("mixed host: %q", args)
	}
}

func FuzzParseROCmSMI(f *testing.F) {
	for _, name := range []string{"rocm-mi250x.json", "rocm-mi300x-cpx.json", "rocm-5.2-navi21.json", "rocm-noise.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", "gpu", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"card1": {"GPU use (%)": 1}, "card01": {}, "card-2": {}}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		gpus, _, err := parseROCmSMI(out)
		if err != nil && gpus != nil {
			t.Fatalf("GPUs with an error: %+v", gpus)
		}
		for i, g := range gpus {
			if g.Index < 0 || g.MIG != -1 || g.MemTotalMB < 0 || g.MemUsedMB < 0 || (i > 0 && gpus[i-1].Index >= g.Index) {
				t.Fatalf("bad GPU record %+v in %+v", g, gpus)
			}
			if g.UUID != "" && (len(g.UUID) != 20 || !strings.HasPrefix(g.UUID, "GPU-")) {
				t.Fatalf("bad UUID %q", g.UUID)
			}
		}
	})
}
