package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

func TestDaemonFractionalGPUSpecs(t *testing.T) {
	for in, want := range map[string]gpuQueueSpec{
		"half=0.5":      {queue: "half", fmin: 0.5, fmax: 0.5},
		"s=0.25-0.5":    {queue: "s", fmin: 0.25, fmax: 0.5},
		"m=0.5-2":       {queue: "m", max: 2, fmin: 0.5, fmax: 2},
		"q=0.125":       {queue: "q", fmin: 0.125, fmax: 0.125},
		"whole=2":       {queue: "whole", min: 2, max: 2},
		"ranged=1-3":    {queue: "ranged", min: 1, max: 3},
		"upto=-2":       {queue: "upto", min: 1, max: 2},
		"a=b=0.5":       {queue: "a=b", fmin: 0.5, fmax: 0.5},
		"spaced= 0.5 ":  {queue: "spaced", fmin: 0.5, fmax: 0.5},
		"tight=0.5-0.5": {queue: "tight", fmin: 0.5, fmax: 0.5},
	} {
		if got, err := parseGPUQueueSpec(in); err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{"q=1.5": "below 1", "q=0.5-1.5": "below 1", "q=0": "positive",
		"q=0.75-0.5": "above maximum", "q=x": "invalid"} {
		if _, err := parseGPUQueueSpec(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: err %v, want %q", in, err, msg)
		}
	}
	// Fractions need docker mode, as in the reference.
	r := runAgent(t, nil, "daemon", "--dynamic-gpus", "--gpus", "0", "--queue", "half=0.5")
	if r.code != 2 || !strings.Contains(r.stderr, "add --docker") {
		t.Errorf("fractions without --docker: exit %d, %s", r.code, r.stderr)
	}
}

func TestDaemonFractionalGPUAllocator(t *testing.T) {
	a := newGPUAllocator([]string{"0", "1"}, 0, nil)
	half := queueRef{gpuFracMin: 0.5, gpuFracMax: 0.5}
	var got []string
	var leases []*gpuLease
	for range 4 {
		l := a.allocateQueue("t", half)
		if l == nil {
			t.Fatalf("no share after %v", got)
		}
		got = append(got, l.workerLabel()+"="+l.visible()+"/"+l.fractionsEnv())
		leases = append(leases, l)
	}
	if want := "0.5a=0/0.5 0.5b=0/0.5 1.5a=1/0.5 1.5b=1/0.5"; strings.Join(got, " ") != want {
		t.Errorf("shares %s, want %s", strings.Join(got, " "), want)
	}
	if a.allocateQueue("t", half) != nil || a.fractionFree() != 0 {
		t.Error("a share was given past a full GPU")
	}
	if a.allocate("w", 1, 1) != nil {
		t.Error("a whole GPU was given while tasks hold shares of it")
	}
	leases[1].release()
	if l := a.allocateQueue("t", queueRef{gpuFracMin: 0.25, gpuFracMax: 0.25}); l == nil || l.workerLabel() != "0.25a" {
		t.Errorf("the freed half: %+v", l)
	}
	leases[0].release()
	// Another agent's fractional worker holds most of GPU 0.
	b := newGPUAllocator([]string{"0", "1"}, 0, nil)
	shares, labels, ok := parseFractionalWorker("0.75a,1.5a")
	if !ok || shares["0"] != 0.75 || shares["1"] != 0.5 {
		t.Fatalf("parsed %v %v", shares, ok)
	}
	lm := map[string]bool{}
	for _, l := range labels {
		lm[l] = true
	}
	b.setExternalFractions(shares, lm)
	if l := b.allocateQueue("t", half); l == nil || l.workerLabel() != "1.5b" {
		t.Errorf("with others' shares: %+v, want 1.5b", l)
	}
	if _, _, ok := parseFractionalWorker("0,1"); ok {
		t.Error("whole GPUs parsed as fractions")
	}
	// A spec up to 2 takes whole GPUs while some are free.
	c := newGPUAllocator([]string{"0", "1", "2"}, 0, nil)
	if l := c.allocateQueue("t", queueRef{gpuFracMin: 0.5, gpuFracMax: 2}); l == nil || l.visible() != "0,1" || l.fractionsEnv() != "1,1" || l.workerLabel() != "0,1" {
		t.Errorf("0.5-2 with free GPUs: %+v", l)
	}
}

// Two tasks of a half-GPU queue share GPU 0 at once, in containers that
// get CLEARML_AGENT_GPU_FRACTIONS.
func TestDaemonDockerFractionalGPUs(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	s.AddQueue("half")
	dir := t.TempDir()
	repo, _ := makeTaskRepo(t, map[string]string{"share.py": `import os, time
d = os.environ["MARKDIR"]
open(os.path.join(d, os.environ["CLEARML_TASK_ID"]), "w").close()
deadline = time.time() + 60
while time.time() < deadline and len(os.listdir(d)) < 2:
    time.sleep(0.05)
print("SHARE", os.environ.get("CLEARML_AGENT_GPU_FRACTIONS"), os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CLEARML_WORKER_ID"), "peers", len(os.listdir(d)), flush=True)
`})
	var ids []string
	for range 2 {
		id := s.AddTask(fakeserver.TaskSpec{Name: "fraction",
			Script: &fakeserver.Script{Repository: repo, EntryPoint: "share.py", Binary: "python3"},
			Container: map[string]string{"image": dockerTestImage,
				"arguments": "--network host -e MARKDIR=" + dir + " -v " + dir + ":" + dir + " -v " + repo + ":" + repo + ":ro"}})
		if err := s.Enqueue(id, "half"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	env := dockerEnv(t, s)
	env["CLEARML_DOCKER_SKIP_GPUS_FLAG"] = "1" // no GPU here: the variable, not docker's --gpus
	// The fake nvidia-smi makes this a GPU host for the daemon's start-up check.
	fake, _ := filepath.Abs("testdata/gpu/fake/bin")
	env["PATH"] = fake + string(os.PathListSeparator) + os.Getenv("PATH")
	p := startDaemon(t, env, "--dynamic-gpus", "--gpus", "0", "--queue", "half=0.5", "--docker")
	for _, id := range ids {
		waitStatus(t, s, p, id, "completed", 180*time.Second)
	}
	p.stop(t)
	if !strings.Contains(p.out.String(), fractionalGPUNote) {
		t.Errorf("the daemon does not say what fractions do not do:\n%s", p.out.String())
	}
	seen := map[string]bool{}
	for _, id := range ids {
		log := s.TaskLogText(id)
		i := strings.Index(log, "SHARE ")
		if i < 0 {
			t.Fatalf("task %s printed nothing:\n%s", id, log)
		}
		f := strings.Fields(log[i:])
		if len(f) < 6 || f[1] != "0.5" || f[2] != "0" || f[5] != "2" {
			t.Errorf("task %s: %q; want fraction 0.5 of GPU 0, run beside the other", id, strings.Join(f[:min(6, len(f))], " "))
		}
		if len(f) > 3 {
			seen[f[3][strings.LastIndex(f[3], ":")+1:]] = true
		}
	}
	if !seen["gpu0.5a"] || !seen["gpu0.5b"] {
		t.Errorf("worker ids %v, want gpu0.5a and gpu0.5b", seen)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("markers %d", len(entries))
	}
}
