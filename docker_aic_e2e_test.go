package main

// The end-to-end tests of issue 14: the agent in a container, a non-root
// image, a CPU-only host, no secret on a command line, --podman. Run them with:
//
//	go test -count=1 -run 'TestDockerAgentInContainer|TestDockerNonRootImageExecute|TestDockerCPUOnlyHostExecute|TestDockerSecretsNotOnArgvE2E|TestPodmanExecuteE2E' -v .

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// TestDockerAgentInContainerExecute: `execute --docker` in the agent's
// container runs a docker-mode task to completed, and the host's engine is
// handed no path that exists only in the agent's container.
func TestDockerAgentInContainerExecute(t *testing.T) {
	a := newAgentContainer(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('in task container', os.path.exists('/.dockerenv'))\n"})
	// No --network: the task container joins the agent container's (the
	// host's here), or it would not reach the server on loopback.
	id := s.AddTask(fakeserver.TaskSpec{Name: "agent in container",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage, "arguments": "-v " + repo + ":" + repo + ":ro"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := serverEnv(s)
	env["CLEARML_AGENT__AGENT__DOCKER_INSTALL_OPENCV_LIBS"] = "false"
	env["GIT_CONFIG_GLOBAL"] = "/dev/null"
	r := a.Run(t, env, "execute", "--id", id, "--docker", "--cpu-only")
	task := taskStatus(t, s, id)
	if r.code != 0 || task.Status != "completed" {
		t.Errorf("exit %d, task %s (%s)\nstdout:\n%s\nstderr:\n%s\ntask log:\n%s", r.code, task.Status, task.StatusReason, r.stdout, r.stderr, s.TaskLogText(id))
	}
	if stray := a.StrayHostPaths(); len(stray) != 0 {
		t.Errorf("the host's engine was handed container paths and created them on the host: %v", stray)
	}
	if !strings.Contains(r.stdout, " --network host ") || !strings.Contains(r.stdout, "-v "+a.HostDir+"/.clearml-agent/bin/") {
		t.Errorf("the task container did not join the agent's network, or the binary is not mounted from the shared folder:\n%s", r.stdout)
	}
	if left, _ := filepath.Glob(filepath.Join(a.HostDir, ".clearml-agent", "tasks", "*")); len(left) != 0 {
		t.Errorf("the run's private files were left in the shared folder: %v", left)
	}
	if left := dockerLeftovers(t, id); left != "" {
		t.Errorf("containers left behind: %s", left)
	}
}

// TestDockerAgentInContainerDaemon: the daemon in the agent's container
// (the agent-services shape) runs a queued docker-mode task to completed.
func TestDockerAgentInContainerDaemon(t *testing.T) {
	a := newAgentContainer(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('daemon task ran')\n"})
	id := addDockerTask(s, repo, "train.py", "")
	env := serverEnv(s)
	env["CLEARML_AGENT__AGENT__DOCKER_INSTALL_OPENCV_LIBS"] = "false"
	env["CLEARML_WORKER_ID"] = "clearml-services-" + testRandHex()
	a.Start(t, env, "daemon", "--queue", fakeserver.DefaultQueueName, "--docker", dockerTestImage, "--cpu-only", "--foreground")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st := taskStatus(t, s, id)
		if st.Status == "completed" {
			break
		}
		if st.Status == "failed" || time.Now().After(deadline) {
			t.Fatalf("task %s (%s)\nagent:\n%s\ntask log:\n%s", st.Status, st.StatusReason, a.Logs(t), s.TaskLogText(id))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(s.TaskLogText(id), "daemon task ran") {
		t.Errorf("task log:\n%s", s.TaskLogText(id))
	}
	if stray := a.StrayHostPaths(); len(stray) != 0 {
		t.Errorf("the host's engine was handed container paths: %v", stray)
	}
}

// TestDockerNonRootImageExecute (issue 14 part 2): a task whose image runs
// as uid 1000 completes; its config is readable in the container.
func TestDockerNonRootImageExecute(t *testing.T) {
	img := needNonRootImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('uid', os.getuid(), 'home', os.environ.get('HOME'))\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "non-root",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": img, "arguments": "--network host -v " + repo + ":" + repo + ":ro"}})
	// The test's repository is a local folder, which git reads only as its
	// owner: the image's user's, as a real repository would be remote.
	filepath.Walk(repo, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, 1000, 1000)
		}
		return err
	})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	r := runAgent(t, dockerEnv(t, s), "execute", "--id", id, "--docker", "--cpu-only")
	task := taskStatus(t, s, id)
	if r.code != 0 || task.Status != "completed" || !strings.Contains(s.TaskLogText(id), "uid 1000 home /home/clearml") {
		t.Errorf("exit %d, task %s (%s)\nstdout:\n%s\nstderr:\n%s\ntask log:\n%s", r.code, task.Status, task.StatusReason, r.stdout, r.stderr, s.TaskLogText(id))
	}
}

// TestDockerCPUOnlyHostExecute (issue 14 part 3): without --cpu-only on a
// host with no NVIDIA GPU, the container runs without GPU flags.
func TestDockerCPUOnlyHostExecute(t *testing.T) {
	needDockerImage(t)
	if _, err := exec.LookPath("nvidia-smi"); err == nil {
		t.Skip("this host has nvidia-smi")
	}
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('ran without a GPU')\n"})
	id := addDockerTask(s, repo, "train.py", "")
	r := runAgent(t, dockerEnv(t, s), "execute", "--id", id, "--docker")
	task := taskStatus(t, s, id)
	if r.code != 0 || task.Status != "completed" || strings.Contains(r.stdout, "--gpus") {
		t.Errorf("exit %d, task %s (%s)\nstdout:\n%s\nstderr:\n%s", r.code, task.Status, task.StatusReason, r.stdout, r.stderr)
	}
}

// TestDockerSecretsNotOnArgvE2E (issue 14 part 4): during a docker-mode
// run, no process's command line shows the git password.
func TestDockerSecretsNotOnArgvE2E(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import time\ntime.sleep(2)\nprint('done')\n"})
	id := addDockerTask(s, repo, "train.py", "")
	env := dockerEnv(t, s)
	pass := "gitpass-" + testRandHex()
	env["CLEARML_AGENT_GIT_USER"] = "someone"
	env["CLEARML_AGENT_GIT_PASS"] = pass
	sampler := sampleArgv(20*time.Millisecond, pass)
	r := runAgent(t, env, "execute", "--id", id, "--docker", "--cpu-only")
	hits := sampler.Stop()
	if task := taskStatus(t, s, id); r.code != 0 || task.Status != "completed" {
		t.Fatalf("exit %d, task %s (%s)\n%s", r.code, task.Status, task.StatusReason, r.stdout)
	}
	if !sampler.Saw("docker run") {
		t.Fatal("the sampler never saw the docker run")
	}
	if len(hits) > 0 {
		t.Errorf("the git password is on a command line: %q", hits[0])
	}
}

// podmanLeftovers lists podman containers labelled with the task.
func podmanLeftovers(t testing.TB, env map[string]string, taskID string) string {
	cmd := exec.Command("podman", "ps", "-a", "-q", "--filter", "label="+dockerLabelTask+"="+taskID)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestPodmanExecuteE2E (issue 14 part 5): `execute --podman` runs a task
// in a podman container to completed.
func TestPodmanExecuteE2E(t *testing.T) {
	needDockerImage(t)
	penv := needPodman(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('in podman', os.path.exists('/run/.containerenv'))\n"})
	id := addDockerTask(s, repo, "train.py", "")
	env := dockerEnv(t, s)
	for k, v := range penv {
		env[k] = v
	}
	r := runAgent(t, env, "execute", "--id", id, "--podman", "--cpu-only")
	task := taskStatus(t, s, id)
	if r.code != 0 || task.Status != "completed" || !strings.Contains(s.TaskLogText(id), "in podman True") {
		t.Errorf("exit %d, task %s (%s)\nstdout:\n%s\nstderr:\n%s", r.code, task.Status, task.StatusReason, r.stdout, r.stderr)
	}
	if left := podmanLeftovers(t, penv, id); left != "" {
		t.Errorf("podman containers left behind: %s", left)
	}
}
