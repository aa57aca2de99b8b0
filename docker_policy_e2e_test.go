package main

// End-to-end tests of the docker argument policy and the reference's
// docker behaviours (issue 14 part 4) where they change what runs, and of
// --gpus on a host without a GPU (part 3) and the podman daemon (part 5).

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// policyTaskScript prints what the container gave the task.
const policyTaskScript = `import os
caps = int([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1], 16)
print('TPL=%s APT=%s SYS_ADMIN=%s HOST_ETC=%s' % (os.environ.get('TPL'), os.environ.get('CLEARML_APT_INSTALL'),
      bool(caps >> 21 & 1), os.path.exists('/host-etc/passwd')))
`

// TestDockerPolicyE2E: a task that names no image but arguments runs in
// the agent's image with its arguments, less the refused ones (each a line
// in its log), ${CLEARML_TASK.name} filled in, --entrypoint stripped,
// CLEARML_APT_INSTALL installed and dropped; the container is written back
// to the task, and the restart selector keeps its container. A task whose
// image field smuggles flags fails with the reason.
func TestDockerPolicyE2E(t *testing.T) {
	needDockerImage(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": policyTaskScript})
	args := "--network host -v " + repo + ":" + repo + ":ro -e TPL=${CLEARML_TASK.name} -e CLEARML_APT_INSTALL=fake-pkg " +
		"--privileged --cap-add SYS_ADMIN -v /etc:/host-etc --entrypoint /bin/false"
	id := s.AddTask(fakeserver.TaskSpec{Name: "policy-e2e",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"arguments": args}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := dockerEnv(t, s)
	// apt-get, as the container's shell sees it: no mirror needed.
	pre, _ := json.Marshal([]string{`apt-get() { echo "fake-apt-get $*"; }`})
	env["CLEARML_AGENT__AGENT__DOCKER_PREPROCESS_BASH_SCRIPT"] = string(pre)
	env["CLEARML_AGENT_SERVICES_DOCKER_RESTART"] = "on-failure:2;name=policy-e2e"
	env["CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"] = t.TempDir() // the kept container's config
	t.Cleanup(func() {
		if ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+dockerLabelTask+"="+id).Output(); len(ids) > 0 {
			exec.Command("docker", append([]string{"rm", "-f"}, strings.Fields(string(ids))...)...).Run()
		}
	})
	r := runAgent(t, env, "execute", "--id", id, "--docker", dockerTestImage, "--cpu-only")
	task := taskStatus(t, s, id)
	log := s.TaskLogText(id)
	if r.code != 0 || task.Status != "completed" {
		t.Fatalf("exit %d, task %s (%s)\nstdout:\n%s\nstderr:\n%s\nlog:\n%s", r.code, task.Status, task.StatusReason, r.stdout, r.stderr, log)
	}
	for _, want := range []string{
		"TPL=policy-e2e APT=None SYS_ADMIN=False HOST_ETC=False",
		`clearml-agent: refused the task's docker argument "--privileged": it gives the container privileges over the host; to allow it add "--privileged" to agent.docker_args_allow`,
		`clearml-agent: refused the task's docker argument "--cap-add SYS_ADMIN"`,
		`clearml-agent: refused the task's docker argument "-v /etc:/host-etc": it mounts /etc of the host; to allow it add "/etc" to agent.docker_args_allow`,
		"clearml-agent: ignoring docker argument(s) --entrypoint",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("task log lacks %q:\n%s", want, log)
		}
	}
	// The container's output before the agent in it starts is the docker client's.
	if !strings.Contains(r.stdout, "fake-apt-get install -y -qq fake-pkg") {
		t.Errorf("CLEARML_APT_INSTALL was not installed:\n%s", r.stdout)
	}
	if img, _ := task.Container["image"].(string); img != dockerTestImage || task.Container["arguments"] != args {
		t.Errorf("container written back: %v", task.Container)
	}
	// The selector matched: the container has the policy and outlived the run.
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label="+dockerLabelTask+"="+id, "--format", "{{.ID}}").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("the container with a restart policy was removed: %v", err)
	}
	pol, _ := exec.Command("docker", "inspect", "--format", "{{json .HostConfig.RestartPolicy}}", strings.TrimSpace(string(out))).Output()
	var rp struct {
		Name              string
		MaximumRetryCount int
	}
	if json.Unmarshal(pol, &rp); rp.Name != "on-failure" || rp.MaximumRetryCount != 2 {
		t.Errorf("restart policy %s", pol)
	}

	// Flags in the image field: the task fails, nothing runs.
	bad := s.AddTask(fakeserver.TaskSpec{Name: "smuggler",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage + " --privileged -v /:/host"}})
	s.Enqueue(bad, fakeserver.DefaultQueueName)
	r = runAgent(t, dockerEnv(t, s), "execute", "--id", bad, "--docker", "--cpu-only")
	task = taskStatus(t, s, bad)
	if r.code == 0 || task.Status != "failed" || !strings.Contains(task.StatusReason, "is not one image name") ||
		!strings.Contains(s.TaskLogText(bad), "is not one image name") || dockerLeftovers(t, bad) != "" {
		t.Errorf("exit %d, task %s (%s)\n%s\nlog:\n%s", r.code, task.Status, task.StatusReason, r.stderr, s.TaskLogText(bad))
	}
}

// TestDockerGPUsOnCPUHostE2E: --gpus on a host without a GPU stops docker
// mode at start-up with one line, for execute and the daemon.
func TestDockerGPUsOnCPUHostE2E(t *testing.T) {
	if gpuHostHasGPU() {
		t.Skip("this host has a GPU")
	}
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print(1)\n"})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	r := runAgent(t, env, "execute", "--id", id, "--docker", "img", "--gpus", "0")
	if r.code != 1 {
		t.Errorf("execute: exit %d", r.code)
	}
	oneErrorLine(t, r, "--gpus 0: this host has no GPU")
	r = runAgent(t, env, "daemon", "--queue", "default", "--docker", "--gpus", "0,1", "--foreground")
	if r.code != 1 {
		t.Errorf("daemon: exit %d", r.code)
	}
	oneErrorLine(t, r, "--gpus 0,1: this host has no GPU")
	if st := taskStatus(t, s, id); st.Status != "queued" {
		t.Errorf("the task was touched: %s", st.Status)
	}
}

// TestPodmanDaemonE2E: `daemon --podman` runs a queued task in a podman
// container to completed and leaves no container.
func TestPodmanDaemonE2E(t *testing.T) {
	needDockerImage(t)
	penv := needPodman(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('daemon in podman', os.path.exists('/run/.containerenv'))\n"})
	id := addDockerTask(s, repo, "train.py", "")
	env := dockerEnv(t, s)
	for k, v := range penv {
		env[k] = v
	}
	p := startDaemon(t, env, "--queue", "default", "--podman", "--cpu-only")
	waitStatus(t, s, p, id, "completed", 3*time.Minute)
	p.stop(t)
	if log := s.TaskLogText(id); !strings.Contains(log, "daemon in podman True") {
		t.Errorf("task log:\n%s\ndaemon:\n%s", log, p.out.String())
	}
	if !strings.Contains(p.out.String(), "Executing: podman run ") {
		t.Errorf("daemon output:\n%s", p.out.String())
	}
	if left := podmanLeftovers(t, penv, id); left != "" {
		t.Errorf("podman containers left behind: %s", left)
	}
}

// TestDockerPortsE2E: on the docker bridge, a published port outside
// agent.docker_args_allowed_port_range moves into it; the task gets
// CLEARML_AGENT_HOST_IP and its runtime the mapping.
func TestDockerPortsE2E(t *testing.T) {
	needDockerImage(t)
	s := fakeserver.New()
	if _, err := s.Start("0.0.0.0:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	port := s.URL()[strings.LastIndex(s.URL(), ":")+1:]
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('HOST_IP=%s' % os.environ.get('CLEARML_AGENT_HOST_IP'))\n"})
	// The bridge's container reaches the stand-in server on the host's address.
	args := "-v " + repo + ":" + repo + ":ro --add-host host.docker.internal:host-gateway " +
		"-e CLEARML_API_HOST=http://host.docker.internal:" + port + " -p 8080:8000"
	id := s.AddTask(fakeserver.TaskSpec{Name: "ports",
		Script:    &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage, "arguments": args}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := dockerEnv(t, s)
	env["CLEARML_AGENT__AGENT__DOCKER_ARGS_ALLOWED_PORT_RANGE"] = "[41000, 41999]"
	env["CLEARML_AGENT_FORCE_HOST_MACHINE_IP"] = "10.9.8.7"
	r := runAgent(t, env, "execute", "--id", id, "--docker", "--cpu-only")
	task := taskStatus(t, s, id)
	if r.code != 0 || task.Status != "completed" || !strings.Contains(s.TaskLogText(id), "HOST_IP=10.9.8.7") {
		t.Fatalf("exit %d, task %s (%s)\nstdout:\n%s\nlog:\n%s", r.code, task.Status, task.StatusReason, r.stdout, s.TaskLogText(id))
	}
	mapping, _ := task.Runtime["_external_host_tcp_port_mapping"].(string)
	host, ctr, _ := strings.Cut(mapping, ":")
	if !strings.HasPrefix(host, "41") || len(host) != 5 || ctr != "8000" || !strings.Contains(r.stdout, "--publish="+mapping+" ") {
		t.Errorf("mapping %q\n%s", mapping, r.stdout)
	}
}
