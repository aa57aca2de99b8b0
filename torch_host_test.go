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
