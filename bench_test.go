package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"testing"
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
