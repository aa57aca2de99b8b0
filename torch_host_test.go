package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestCUDAFromHost: the host's CUDA version through the processes the
// reference asks, in its order (config, NVML, nvcc, nvidia-smi).
func TestCUDAFromHost(t *testing.T) {
	smi, err := filepath.Abs("testdata/gpu/fake/bin")
	if err != nil {
		t.Fatal(err)
	}
	nvcc := t.TempDir()
	venvWrite(t, filepath.Join(nvcc, "nvcc"), "#!/bin/sh\necho 'Cuda compilation tools, release 11.7, V11.7.99'\n", 0o755)
	t.Setenv("FAKE_SMI_CUDA", "12.2")
	for _, c := range []struct {
		name, conf, path string
		env              map[string]string
		cpuOnly          bool
		want             int
		log              string
	}{
		{name: "nvidia-smi", path: smi, want: 122, log: "PyTorch: CUDA 12.2 (from nvidia-smi)"},
		{name: "nvcc before nvidia-smi", path: nvcc + ":" + smi, want: 117, log: "(from nvcc)"},
		{name: "agent.cuda_version", conf: `agent.cuda_version: "11.8"`, path: smi, want: 118, log: "(from config)"},
		{name: "CUDA_VERSION", env: map[string]string{"CUDA_VERSION": "12.1.1"}, path: smi, want: 121, log: "(from config)"},
		{name: "--cpu-only", path: smi, cpuOnly: true, want: 0, log: "CPU only"},
		{name: "CLEARML_CPU_ONLY", env: map[string]string{"CLEARML_CPU_ONLY": "1"}, path: smi, want: 0, log: "CPU only"},
		{name: "no driver", path: t.TempDir(), want: 0, log: "no CUDA found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			m := newVenvManager(venvTestConfig(t, c.conf, c.env), &out)
			m.pathEnv = c.path + ":/usr/bin:/bin"
			if got := m.cudaVersion(context.Background(), c.cpuOnly); got != c.want || !strings.Contains(out.String(), c.log) {
				t.Errorf("CUDA %d, want %d; log %q, want %q", got, c.want, out.String(), c.log)
			}
		})
	}
}

// TestTorchDirectNightly: direct mode walks the flat pages down from the
// host's CUDA version, then the nightly page with torch_nightly; without a
// match it fails with the reference's words.
func TestTorchDirectNightly(t *testing.T) {
	x := newPyTestIndex(t)
	dir := t.TempDir()
	x.Add("/whl/cu118/", pyTestWheel(t, dir, pyWheel{Name: "torch", Version: "2.1.0+cu118"}))
	x.Add("/whl/nightly/cu121/", pyTestWheel(t, dir, pyWheel{Name: "torch", Version: "2.3.0.dev20240101+cu121"}))
	conf := `agent.package_manager { torch_page: "` + x.URL("/whl/") + `cu{}/torch_stable.html", torch_nightly_page: "` +
		x.URL("/whl/nightly/") + `cu{}/torch_nightly.html", torch_nightly: %v }`
	for _, c := range []struct {
		spec    string
		nightly bool
		want    string
	}{
		{"==2.1.0", false, "/files/whl/cu118/torch-2.1.0%2Bcu118-py3-none-any.whl"},
		{">=2.3.0.dev0", true, "/files/whl/nightly/cu121/torch-2.3.0.dev20240101%2Bcu121-py3-none-any.whl"},
		{">=2.3.0.dev0", false, "could not locate PyTorch version torch>=2.3.0.dev0 matching CUDA version 121"},
	} {
		m := newVenvManager(venvTestConfig(t, strings.ReplaceAll(conf, "%v", map[bool]string{true: "true", false: "false"}[c.nightly]), nil), nil)
		tp := &torchPlan{mode: "direct", cuda: 121, pyTag: "cp311", lines: []torchLine{{req: reqParse("torch" + c.spec)}}}
		err := m.torchDirect(context.Background(), tp)
		got := tp.lines[0].url
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("torch%s nightly=%v: %q, want %q", c.spec, c.nightly, got, c.want)
		}
	}
}

// TestTorchCPUIndex: the CPU index is derived from the template, or
// configured; it is not probed.
func TestTorchCPUIndex(t *testing.T) {
	for _, c := range []struct{ conf, want string }{
		{"", "https://download.pytorch.org/whl/cpu/"},
		{`agent.package_manager.extra_index_url_template: "https://mirror/torch/cu{}/"`, "https://mirror/torch/cpu/"},
		{`agent.package_manager.cpu_extra_index_url: "https://mirror/cpu-wheels/"`, "https://mirror/cpu-wheels/"},
	} {
		m := newVenvManager(venvTestConfig(t, c.conf, nil), nil)
		tp := &torchPlan{mode: "pip", cuda: 0, lines: []torchLine{{req: reqParse("torch==2.1.0+cu118")}}}
		if ok := m.torchPipIndex(tp); !ok || tp.index != c.want || tp.variant != "cpu" || tp.lines[0].line != "torch ==2.1.0.*" {
			t.Errorf("%q: %v %+v", c.conf, ok, tp)
		}
	}
}
