package main

// End-to-end docker tests on the real engine, with the test image built by
// testdata/docker/build-test-image.sh (python3, venv, git; no agent). They
// skip without an engine or the image, except on CI, where they must run.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

const dockerTestImage = "clearml-agent-test:bookworm"

// needDockerImage skips (fails on CI) when the engine or the image is missing.
func needDockerImage(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("docker tests skipped in -short mode")
	}
	miss := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (on CI the docker tests must run: .ci/run builds the image)", why)
		}
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		miss("no Docker engine answers (docker info failed)")
	}
	if err := exec.CommandContext(ctx, "docker", "image", "inspect", dockerTestImage).Run(); err != nil {
		miss("docker image " + dockerTestImage + " is missing; build it with testdata/docker/build-test-image.sh")
	}
}

// dockerLeftovers lists the containers (running or not) labelled with the task.
func dockerLeftovers(t testing.TB, taskID string) string {
	out, err := exec.Command("docker", "ps", "-a", "-q", "--filter", "label="+dockerLabelTask+"="+taskID).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// addDockerTask is a queued task whose container is the test image, on the
// host network (to reach the stand-in server) with the repo mounted.
func addDockerTask(s *fakeserver.Server, repo, entry, setup string) string {
	id := s.AddTask(fakeserver.TaskSpec{Name: "docker e2e",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage, "arguments": "--network host -v " + repo + ":" + repo + ":ro", "setup_shell_script": setup}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	return id
}

func dockerEnv(t testing.TB, s *fakeserver.Server) map[string]string {
	env := executeEnv(t, s)
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = dockerVenvCache(t)
	// The test image has no OpenCV libraries: do not apt-get them in every
	// test (TestDockerImageLacksPackages does).
	env["CLEARML_AGENT__AGENT__DOCKER_INSTALL_OPENCV_LIBS"] = "false"
	return env
}

var dockerVenvCacheDir string

// dockerVenvCache is shared by the docker tests, so only the first builds the venv.
func dockerVenvCache(t testing.TB) string {
	if dockerVenvCacheDir == "" {
		d, err := os.MkdirTemp("", "clearml-docker-venvs")
		if err != nil {
			t.Fatal(err)
		}
		dockerVenvCacheDir = d
	}
	return dockerVenvCacheDir
}

func TestDockerExecuteE2E(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os, sys\nprint('in container', os.path.exists('/.dockerenv'), os.environ.get('SETUP_MARK'))\nprint(sys.executable)\n"})
	id := addDockerTask(s, repo, "train.py", "echo setup-ran > /tmp/mark\n# a comment\nexport SETUP_MARK=$(cat /tmp/mark)")
	r := runAgent(t, dockerEnv(t, s), "execute", "--id", id, "--docker", "--cpu-only")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	task := taskStatus(t, s, id)
	if task.Status != "completed" {
		t.Errorf("status = %s (%s)", task.Status, task.StatusReason)
	}
	log := s.TaskLogText(id)
	if !strings.Contains(log, "in container True setup-ran") {
		t.Errorf("the task did not run in the container after the setup script; log:\n%s\nstdout:\n%s", log, r.stdout)
	}
	if !strings.Contains(r.stdout, "Executing: docker run") || strings.Contains(r.stdout, fakeserver.TestsSecretKey) && fakeserver.TestsSecretKey != "" {
		t.Errorf("docker command not logged, or the secret shows:\n%s", r.stdout)
	}
	if left := dockerLeftovers(t, id); left != "" {
		t.Errorf("containers left behind: %s", left)
	}
}

func TestDockerExecuteAbortE2E(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"loop.py": "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"})
	id := addDockerTask(s, repo, "loop.py", "")
	done := runAgentAsync(t, dockerEnv(t, s), "execute", "--id", id, "--docker", "--cpu-only")
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(s.TaskLogText(id), "looping") {
		if time.Now().After(deadline) {
			t.Fatal("the task never started")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopTask(t, s, id)
	select {
	case r := <-done:
		if task := taskStatus(t, s, id); task.Status != "stopped" {
			t.Errorf("status = %s (%s); stdout:\n%s", task.Status, task.StatusReason, r.stdout)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("execute --docker did not end after tasks.stop")
	}
	if left := dockerLeftovers(t, id); left != "" {
		t.Errorf("containers left behind: %s", left)
	}
}

func TestDockerCleanupStaleContainers(t *testing.T) {
	needDockerImage(t)
	wid := "stale-test-" + strings.ToLower(dockerRandString()[:8])
	out, err := exec.Command("docker", "create", "-l", dockerLabelParent+"="+wid, dockerTestImage, "true").CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v %s", err, out)
	}
	// A container with a restart policy is meant to outlive the agent.
	out, err = exec.Command("docker", "create", "-l", dockerLabelParent+"="+wid, "-l", dockerLabelRestart+"=always", dockerTestImage, "true").CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v %s", err, out)
	}
	kept := strings.TrimSpace(string(out))
	defer exec.Command("docker", "rm", "-f", kept).Run()
	var log strings.Builder
	cleanupStaleContainers(context.Background(), "docker", wid, &log)
	left, _ := exec.Command("docker", "ps", "-a", "-q", "--no-trunc", "--filter", "label="+dockerLabelParent+"="+wid).Output()
	if strings.TrimSpace(string(left)) != kept || !strings.Contains(log.String(), "removing container") {
		t.Errorf("left %q (want only %s); log %q", left, kept, log.String())
	}
}

// BenchmarkDockerTaskStart is the time from `execute --docker` to the
// first line of the task, on a cached image, vcs cache and venv.
func BenchmarkDockerTaskStart(b *testing.B) {
	needDockerImage(b)
	s := startServer(b)
	repo, _ := makeTaskRepo(b, map[string]string{"t.py": "import time\nprint('T0=%.6f' % time.time(), flush=True)\n"})
	env := dockerEnv(b, s)
	run := func() time.Duration {
		id := addDockerTask(s, repo, "t.py", "")
		start := time.Now()
		r := runAgent(b, env, "execute", "--id", id, "--docker", "--cpu-only")
		if r.code != 0 {
			b.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		log := s.TaskLogText(id)
		i := strings.Index(log, "T0=")
		if i < 0 {
			b.Fatalf("no start mark in the log:\n%s", log)
		}
		var t0 float64
		fmt.Sscanf(log[i+3:], "%f", &t0)
		return time.Unix(0, int64(t0*1e9)).Sub(start)
	}
	run() // warm the caches
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += run()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/task-start")
}

// TestDockerImageActiveVenv: an image whose environment is an active venv
// (VIRTUAL_ENV set, as images built for one application often are) runs
// the task in that venv, with the task's packages added to it, instead of
// building another (agent#222, sdk#1074).
func TestDockerImageActiveVenv(t *testing.T) {
	needDockerImage(t)
	image := "clearml-agent-test-venv:" + strings.ToLower(fmt.Sprint(time.Now().UnixNano()))
	tmp := strings.ReplaceAll(image, ":", "-")
	if out, err := exec.Command("docker", "run", "--name", tmp, dockerTestImage, "python3", "-m", "venv", "/opt/appenv").CombinedOutput(); err != nil {
		t.Fatalf("making the venv image: %v\n%s", err, out)
	}
	defer exec.Command("docker", "rm", "-f", tmp).Run()
	if out, err := exec.Command("docker", "commit", "--change", "ENV VIRTUAL_ENV=/opt/appenv",
		"--change", "ENV PATH=/opt/appenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", tmp, image).CombinedOutput(); err != nil {
		t.Fatalf("docker commit: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import sys\nprint('python is', sys.executable)\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "active venv",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": image, "arguments": "--network host -v " + repo + ":" + repo + ":ro"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	r := runAgent(t, dockerEnv(t, s), "execute", "--id", id, "--docker", "--cpu-only")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	if !strings.Contains(log, "python is /opt/appenv/bin/python") {
		t.Errorf("the task did not run in the image's venv; log:\n%s", log)
	}
	if strings.Contains(log, "Creating virtual environment") || !strings.Contains(log, "no venv: the container's active venv") {
		t.Errorf("a venv was built although the image has an active one; log:\n%s", log)
	}
}

// TestDockerImageLacksPackages: an image whose python3 has no venv module
// nor pip wheel (as Debian's without python3-venv, e.g. CUDA images: with
// the wheels, the agent's own venv kit needs no venv module) and no OpenCV
// libraries gets them from apt-get inside the container, only because they
// are missing. Where no Debian mirror answers, the task fails with a reason
// that names the missing module; either way the attempt is in the log.
func TestDockerImageLacksPackages(t *testing.T) {
	needDockerImage(t)
	image := "clearml-agent-test-noensurepip:" + strings.ToLower(fmt.Sprint(time.Now().UnixNano()))
	tmp := strings.ReplaceAll(image, ":", "-")
	if out, err := exec.Command("docker", "run", "--name", tmp, dockerTestImage, "dpkg", "--purge", "--force-depends", "python3-venv", "python3.11-venv", "python3-pip-whl", "python3-setuptools-whl").CombinedOutput(); err != nil {
		t.Fatalf("making the image: %v\n%s", err, out)
	}
	defer exec.Command("docker", "rm", "-f", tmp).Run()
	if out, err := exec.Command("docker", "commit", tmp, image).CombinedOutput(); err != nil {
		t.Fatalf("docker commit: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('ran in a fresh venv')\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "bare image",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": image, "arguments": "--network host -v " + repo + ":" + repo + ":ro"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := dockerEnv(t, s)
	delete(env, "CLEARML_AGENT__AGENT__DOCKER_INSTALL_OPENCV_LIBS") // the default: on
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = t.TempDir()    // a venv must be built
	r := runAgent(t, env, "execute", "--id", id, "--docker", "--cpu-only")
	log := s.TaskLogText(id)
	for _, want := range []string{
		"clearml-agent: the image lacks the OpenCV system libraries; installing libsm6 libxext6 libxrender-dev libglib2.0-0 with apt-get",
		"clearml-agent: the image lacks the venv module; installing python3.11-venv with apt-get",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	task := taskStatus(t, s, id)
	switch {
	case task.Status == "completed" && strings.Contains(log, "ran in a fresh venv"):
		t.Logf("apt-get installed the venv module (exit %d)", r.code)
	case task.Status == "failed" && strings.Contains(task.StatusReason+task.StatusMessage, "venv module"):
		t.Logf("no Debian mirror: the task failed as it should: %s %s", task.StatusReason, task.StatusMessage)
	default:
		t.Errorf("status %s (%s / %s), exit %d\n%s", task.Status, task.StatusReason, task.StatusMessage, r.code, log)
	}
}
