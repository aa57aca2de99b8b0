package main

// Golden command lines of docker mode in the shapes of issue 14: the task's
// arguments under the policy, templating, ports, the restart selector,
// secrets off the argv, the agent in a container, non-root images, CPU-only
// hosts, podman.

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fileOwner is the uid owning a file (-1 unknown).
func fileOwner(st os.FileInfo) int {
	if st == nil {
		return -1
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(s.Uid)
	}
	return -1
}

// argvRun is one dockerTaskArgv result with what the test needs.
type argvRun struct {
	*dockerRun
	home string
	cfg  *agentConfig
}

// dockerTestRun runs dockerTaskArgv on a CPU-only worker "w" with a root
// image unless o says otherwise.
func dockerTestRun(t *testing.T, env map[string]string, conf string, task *taskDoc, o dockerRunOptions) (argvRun, error) {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"]; !ok {
		env["CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"] = t.TempDir()
	}
	cfg := dockerTestConfig(t, env, conf)
	if o.agentBinary == "" {
		o.agentBinary = "/opt/agent"
	}
	if o.imageUser == nil {
		o.imageUser = &dockerRootUser
	}
	if o.workerID == "" {
		o.workerID = "w"
	}
	if o.task.gpus == "" {
		o.task.cpuOnly = true
	}
	run, err := dockerTaskArgv(cfg, task, o)
	if err != nil {
		return argvRun{home: env["HOME"], cfg: cfg}, err
	}
	t.Cleanup(run.cleanup)
	return argvRun{dockerRun: run, home: env["HOME"], cfg: cfg}, nil
}

func mustRun(t *testing.T, env map[string]string, conf string, task *taskDoc, o dockerRunOptions) argvRun {
	t.Helper()
	r, err := dockerTestRun(t, env, conf, task, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// containerPart is the argv between `run` and the agent's labels: the
// restart policy, GPUs and the container's arguments.
func (r argvRun) containerPart() string {
	i := slices.Index(r.argv, "-l")
	return strings.Join(r.argv[2:i], " ")
}

func (r argvRun) text() string { return strings.Join(r.argv, " ") }

func (r argvRun) notesText() string { return strings.Join(r.notes, "\n") }

func taskWith(image, args string) *taskDoc {
	t := &taskDoc{ID: "tid"}
	t.Container.Image, t.Container.Arguments = image, args
	return t
}

// TestDockerTaskArgsPolicyGolden: a task's container arguments lose every
// option that hands the container the host, each refusal one task log line
// naming the option and agent.docker_args_allow; what ML tasks need stays.
func TestDockerTaskArgsPolicyGolden(t *testing.T) {
	home := t.TempDir()
	hostile := "--network host --ipc=host --shm-size 8g -v /data:/data -e A=1 " +
		"--privileged --privileged=true --cap-add=SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined " +
		"--pid=host --pid host --userns host --uts=host --device /dev/sda --device=/dev/mem " +
		"-v /:/host --volume=/etc:/etc2 -v/proc:/p --mount type=bind,source=/var/run/docker.sock,target=/s " +
		"--volumes-from agent -v " + home + "/.clearml:/c -v " + home + "/.ssh:/k -itv /root:/r " +
		"--entrypoint /bin/sh --name other -l clearml-worker-id=x"
	r := mustRun(t, map[string]string{"HOME": home}, "", taskWith("py:3.11", hostile), dockerRunOptions{})
	if got, want := r.containerPart(), "--network host --ipc=host --shm-size 8g -v /data:/data -e A=1 --interactive --tty"; got != want {
		t.Errorf("container arguments:\n got %s\nwant %s", got, want)
	}
	for _, refused := range []string{"--privileged", "--privileged=true", "--cap-add=SYS_ADMIN", "--cap-add NET_ADMIN", "--security-opt seccomp=unconfined",
		"--pid=host", "--pid host", "--userns host", "--uts=host", "--device /dev/sda", "--device=/dev/mem", "-v /:/host", "--volume=/etc:/etc2",
		"-v/proc:/p", "--mount type=bind,source=/var/run/docker.sock,target=/s", "--volumes-from agent", "-v " + home + "/.clearml:/c",
		"-v " + home + "/.ssh:/k", "--volume=/root:/r", "--name other", "-l clearml-worker-id=x"} {
		want := "clearml-agent: refused the task's docker argument \"" + refused + "\": "
		if !strings.Contains(r.notesText(), want) {
			t.Errorf("no refusal line for %q in:\n%s", refused, r.notesText())
		}
	}
	for _, n := range r.notes {
		if strings.HasPrefix(n, "clearml-agent: refused") && !strings.Contains(n, "; to allow it add ") {
			t.Errorf("a refusal that does not name the key to change: %q", n)
		}
	}
	if !strings.Contains(r.notesText(), "ignoring docker argument(s) --entrypoint") || strings.Contains(r.text(), "entrypoint") {
		t.Errorf("--entrypoint (agent.forbidden_docker_args) not stripped:\n%s\n%s", r.text(), r.notesText())
	}

	// The operator widens the policy: agent.docker_args_allow and CLEARML_AGENT_DOCKER_ARGS_ALLOW.
	r = mustRun(t, map[string]string{"HOME": t.TempDir(), "CLEARML_AGENT_DOCKER_ARGS_ALLOW": "--cap-add=sys_ptrace /etc/localtime"},
		`agent.docker_args_allow: ["--privileged", "--device=/dev/fuse"]`,
		taskWith("py:3.11", "--privileged --cap-add CAP_SYS_PTRACE --cap-add SYS_ADMIN --device /dev/fuse -v /etc/localtime:/etc/localtime:ro -v /etc:/e"), dockerRunOptions{})
	if got, want := r.containerPart(), "--privileged --cap-add CAP_SYS_PTRACE --device /dev/fuse -v /etc/localtime:/etc/localtime:ro"; got != want {
		t.Errorf("allowed:\n got %s\nwant %s\n%s", got, want, r.notesText())
	}
	// ... and narrows it: agent.docker_args_filters keeps only matching switches.
	r = mustRun(t, nil, `agent.docker_args_filters: ["^--network$", "^-e$"]`, taskWith("py:3.11", "--network host -e A=1 --ipc=host -v /data:/d"), dockerRunOptions{})
	if got := r.containerPart(); got != "--network host -e A=1" {
		t.Errorf("filtered: %s", got)
	}
	// --user root when the image's user is not root.
	u := dockerImageUser{User: "1000", UID: 1000, GID: 1000, Home: "/home/u"}
	if os.Getuid() != 0 {
		u.UID, u.GID = os.Getuid(), os.Getgid()
	}
	r = mustRun(t, nil, "", taskWith("py:3.11", "-u 0 --user=root:root --user 1000"), dockerRunOptions{imageUser: &u})
	if got := r.containerPart(); got != "--user 1000" || strings.Count(r.notesText(), "root in the container is root on the host's files") != 2 {
		t.Errorf("--user root: %s\n%s", got, r.notesText())
	}
}

// TestDockerOperatorArgsTrusted: the agent's own arguments (--docker,
// default_docker, extra_docker_arguments) are the operator's: not checked,
// except where templating put a task's value in them.
func TestDockerOperatorArgsTrusted(t *testing.T) {
	bare := &taskDoc{ID: "tid"}
	r := mustRun(t, nil, `agent.extra_docker_arguments: ["--cap-add=SYS_PTRACE", "-v", "${CLEARML_TASK.script.working_dir}:/w", "-e", "Q=${CLEARML_QUEUE_NAME}"]`,
		bare, dockerRunOptions{task: cliDocker("agent/img --privileged"), taskInfo: map[string]any{"script": map[string]any{"working_dir": "/etc"}}, queueID: "q1", queueName: "gpu-queue"})
	if got := r.containerPart(); got != "--cap-add=SYS_PTRACE -e Q=gpu-queue --privileged" {
		t.Errorf("operator arguments: %s\n%s", got, r.notesText())
	}
	if !strings.Contains(r.notesText(), `refused the task's docker argument "-v /etc:/w": it mounts /etc of the host`) {
		t.Errorf("a templated host path was not checked:\n%s", r.notesText())
	}
	r = mustRun(t, nil, `agent.extra_docker_arguments: ["-v", "${CLEARML_TASK.script.working_dir}:/w"]`,
		bare, dockerRunOptions{task: cliDocker("agent/img"), taskInfo: map[string]any{"script": map[string]any{"working_dir": "/data/x"}}})
	if got := r.containerPart(); got != "-v /data/x:/w" {
		t.Errorf("templated data mount: %s", got)
	}
}

// TestDockerImageIsOneReference: flags smuggled into the task's image
// field fail the task; the agent's own --docker "image args" still splits.
func TestDockerImageIsOneReference(t *testing.T) {
	for _, img := range []string{"alpine --privileged -v /:/host", "--privileged", "Alpine", "alpine;rm"} {
		_, err := dockerTestRun(t, nil, "", taskWith(img, ""), dockerRunOptions{})
		if err == nil || !strings.Contains(err.Error(), "the task's container image: ") {
			t.Errorf("%q: %v", img, err)
		}
	}
	r := mustRun(t, nil, "", &taskDoc{ID: "tid"}, dockerRunOptions{task: cliDocker("agent/img:1 --ipc=host")})
	if r.img.image != "agent/img:1" || r.containerPart() != "--ipc=host" {
		t.Errorf("%s %s", r.img.image, r.containerPart())
	}
}

// TestDockerNoImageKeepsTaskArgs: a task with arguments and no image runs
// in the agent's image with its own arguments (checked), and the container
// it ran in is written back unless agent.default_docker.update_back_task is off.
func TestDockerNoImageKeepsTaskArgs(t *testing.T) {
	task := taskWith("", "-e A=1 --privileged")
	task.Container.SetupShellScript = "echo hi"
	r := mustRun(t, nil, "", task, dockerRunOptions{task: cliDocker("agent/img --shm-size=1g")})
	if r.img.image != "agent/img" || r.containerPart() != "-e A=1" || !strings.Contains(r.notesText(), `"--privileged"`) {
		t.Errorf("%s | %s\n%s", r.img.image, r.containerPart(), r.notesText())
	}
	if want := map[string]string{"image": "agent/img", "arguments": "-e A=1 --privileged", "setup_shell_script": "echo hi"}; !reflect.DeepEqual(r.writeBack, want) {
		t.Errorf("write back %v", r.writeBack)
	}
	r = mustRun(t, nil, "", &taskDoc{ID: "tid"}, dockerRunOptions{task: cliDocker("agent/img --shm-size=1g")})
	if r.containerPart() != "--shm-size=1g" || r.writeBack["arguments"] != "--shm-size=1g" {
		t.Errorf("default arguments: %s %v", r.containerPart(), r.writeBack)
	}
	r = mustRun(t, nil, "agent.default_docker.update_back_task: false", task, dockerRunOptions{task: cliDocker("agent/img")})
	if r.writeBack != nil {
		t.Errorf("update_back_task false, yet %v", r.writeBack)
	}
	if r = mustRun(t, nil, "", taskWith("task/img", "-e A=1"), dockerRunOptions{task: cliDocker("agent/img")}); r.writeBack != nil {
		t.Errorf("a task with an image is not written back: %v", r.writeBack)
	}
}

// TestDockerTemplatesGolden: ${CLEARML_TASK.*}, ${CLEARML_QUEUE_NAME} and
// friends in the task's arguments; the agent's configuration stays closed
// to the task.
func TestDockerTemplatesGolden(t *testing.T) {
	doc := map[string]any{"name": "train resnet", "project": "p1", "tags": []any{"a", "b"},
		"hyperparams": map[string]any{"General": map[string]any{"lr": map[string]any{"value": "0.01"}}}}
	args := "-e NAME=${CLEARML_TASK.name} -e Q=${CLEARML_QUEUE_NAME} -e QID=$CLEARML_QUEUE_ID -e LR=${CLEARML_TASK.hyperparams.General.lr.value:0.1} " +
		"-e BS=${CLEARML_TASK.hyperparams.General.bs.value:32} -e TAGS=${CLEARML_TASK.tags} -e W=${CLEARML_WORKER_ID} -e P=${CLEARML_PROJECT_ID} " +
		"-e K=${CLEARML_CONFIG.api.credentials.access_key} -e N=${CLEARML_TASK.nope} -e HOME2=$HOME"
	r := mustRun(t, nil, "", taskWith("py:3.11", args), dockerRunOptions{taskInfo: doc, queueID: "q1", queueName: "gpu-queue", workerID: "host:0"})
	want := "-e NAME=train resnet -e Q=gpu-queue -e QID=q1 -e LR=0.01 -e BS=32 -e TAGS=a,b -e W=host:0 -e P=p1 " +
		"-e K=${CLEARML_CONFIG.api.credentials.access_key} -e N=${CLEARML_TASK.nope} -e HOME2=$HOME"
	if got := r.containerPart(); got != want {
		t.Errorf("templated:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(r.notesText(), "a task's arguments cannot read CONFIG") || !strings.Contains(r.notesText(), "${CLEARML_TASK.nope} was not replaced") {
		t.Errorf("notes:\n%s", r.notesText())
	}
	// The operator's arguments may read the configuration.
	r = mustRun(t, nil, `agent.extra_docker_arguments: ["-e", "K=${CLEARML_CONFIG.api.credentials.access_key}"]`, &taskDoc{ID: "tid"}, dockerRunOptions{task: cliDocker("img")})
	if got := r.containerPart(); got != "-e K=AK" {
		t.Errorf("operator template: %s", got)
	}
}

// TestDockerPortsGolden: published ports move into
// agent.docker_args_allowed_port_range when outside it or taken; the task
// gets CLEARML_AGENT_HOST_IP (CLEARML_AGENT_FORCE_HOST_MACHINE_IP) and the mapping.
func TestDockerPortsGolden(t *testing.T) {
	old := dockerPortInUse
	dockerPortInUse = func(proto string, port int) bool { return proto == "tcp" && port == 9000 }
	defer func() { dockerPortInUse = old }()
	env := func() map[string]string { return map[string]string{"CLEARML_AGENT_FORCE_HOST_MACHINE_IP": "10.9.8.7"} }
	r := mustRun(t, env(), "agent.docker_args_allowed_port_range: [9000, 9010]", taskWith("py:3.11", "-p 8080:80 -p 9005:90/udp --publish=9003:3000"), dockerRunOptions{})
	if got, want := r.containerPart(), "--publish=9001:80 -p 9005:90/udp --publish=9003:3000 -e CLEARML_AGENT_HOST_IP=10.9.8.7"; got != want {
		t.Errorf("ports:\n got %s\nwant %s", got, want)
	}
	if r.portMapping != "9001:80,9005:90,9003:3000" || !strings.Contains(r.notesText(), "host port(s) moved to 9001:80") {
		t.Errorf("mapping %q\n%s", r.portMapping, r.notesText())
	}
	// No range: a free port stays; with the host's network nothing is published.
	r = mustRun(t, env(), "", taskWith("py:3.11", "-p 8080:80"), dockerRunOptions{})
	if r.containerPart() != "-p 8080:80 -e CLEARML_AGENT_HOST_IP=10.9.8.7" || r.portMapping != "8080:80" {
		t.Errorf("no range: %s %q", r.containerPart(), r.portMapping)
	}
	r = mustRun(t, env(), "agent.docker_args_allowed_port_range: [9000, 9010]", taskWith("py:3.11", "--network host -p 8080:80"), dockerRunOptions{})
	if r.containerPart() != "--network host -p 8080:80" || r.portMapping != "" {
		t.Errorf("host network: %s %q", r.containerPart(), r.portMapping)
	}
}

// TestDockerRestartSelector: CLEARML_AGENT_SERVICES_DOCKER_RESTART applies
// its policy (and drops --rm) only to the tasks its selector matches.
func TestDockerRestartSelector(t *testing.T) {
	doc := map[string]any{"script": map[string]any{"branch": "main"}, "hyperparams": map[string]any{"svc": map[string]any{"on": true, "n": 3.0}}}
	tests := []struct {
		value, restart, note string
	}{
		{"unless-stopped", "unless-stopped", ""},
		{"on-failure:3;script.branch=main", "on-failure:3", ""},
		{"always;script.branch=dev", "", ""},
		{"always;script.branch", "always", ""},
		{"always;script.nope", "", ""},
		{"no;hyperparams.svc.on=true", "no", ""},
		{"always;hyperparams.svc.on=false", "", ""},
		{"always;hyperparams.svc.n=3", "always", ""},
		{"sometimes", "", "ignoring CLEARML_AGENT_SERVICES_DOCKER_RESTART=sometimes"},
		{"on-failure:x", "", "ignoring"},
	}
	for _, tt := range tests {
		r := mustRun(t, map[string]string{"CLEARML_AGENT_SERVICES_DOCKER_RESTART": tt.value}, "", taskWith("py:3.11", ""), dockerRunOptions{taskInfo: doc})
		restart, rm := "", slices.Contains(r.argv, "--rm")
		if i := slices.Index(r.argv, "--restart"); i > 0 {
			restart = r.argv[i+1]
		}
		labelled := strings.Contains(r.text(), "-l clearml-restart-policy="+tt.restart+" ")
		if restart != tt.restart || rm == (tt.restart != "") || r.keep != (tt.restart != "") || labelled != (tt.restart != "") || !strings.Contains(r.notesText(), tt.note) {
			t.Errorf("%s: --restart %q, --rm %v, keep %v\n%s", tt.value, restart, rm, r.keep, r.notesText())
		}
	}
}

// TestDockerSecretsHiddenGolden: secret values leave the argv for the CLI's
// environment: the agent's, the names in CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV
// and hide_docker_command_env_vars.extra_keys, and with parse_embedded_urls
// variables whose value holds a URL password; the logged command shows none.
func TestDockerSecretsHiddenGolden(t *testing.T) {
	env := map[string]string{"CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV": "DB_CONN MYVAR", "CLEARML_AUTH_TOKEN": "tok-123456", "CLEARML_AGENT_GIT_PASS": "gitpass-123"}
	args := "-e DB_CONN=postgres://db/x -e MYVAR=hidden-value-1 -e EXTRA=extra-value-1 -e IDX=https://user:pw1234@pypi.example/simple -e PLAIN=ok"
	r := mustRun(t, env, `agent.hide_docker_command_env_vars.extra_keys: ["EXTRA"]`, taskWith("py:3.11", args), dockerRunOptions{})
	if got := r.containerPart(); got != "-e DB_CONN -e MYVAR -e EXTRA -e IDX -e PLAIN=ok" {
		t.Errorf("task secrets on the argv: %s", got)
	}
	wantEnv := []string{"DB_CONN=postgres://db/x", "MYVAR=hidden-value-1", "EXTRA=extra-value-1", "IDX=https://user:pw1234@pypi.example/simple", "CLEARML_AUTH_TOKEN=tok-123456", "CLEARML_AGENT_GIT_PASS=gitpass-123"}
	for _, kv := range wantEnv {
		if !slices.Contains(r.cliEnv, kv) {
			t.Errorf("the CLI's environment lacks %s: %q", kv, r.cliEnv)
		}
		if _, v, _ := strings.Cut(kv, "="); strings.Contains(r.text(), v) || strings.Contains(dockerLoggedCommand(r.cfg, r.argv), v) {
			t.Errorf("%s is on the argv or the logged command", v)
		}
	}
	if !strings.Contains(r.text(), " -e CLEARML_AUTH_TOKEN ") || !strings.Contains(r.text(), " -e CLEARML_AGENT_GIT_PASS ") {
		t.Errorf("the agent's secrets are not passed by name: %s", r.text())
	}
	// parse_embedded_urls off: a URL value is the operator's business, shown as it is.
	r = mustRun(t, nil, "agent.hide_docker_command_env_vars.parse_embedded_urls: false", taskWith("py:3.11", "-e IDX=https://user:pw1234@pypi.example/simple"), dockerRunOptions{})
	if r.containerPart() != "-e IDX=https://user:pw1234@pypi.example/simple" || !strings.Contains(dockerLoggedCommand(r.cfg, r.argv), "pw1234") {
		t.Errorf("parse_embedded_urls false: %s", r.containerPart())
	}
	// A URL password in the setup script is masked when logged.
	task := taskWith("py:3.11", "")
	task.Container.SetupShellScript = "pip download --index-url https://u:scriptpw99@idx.example/simple x"
	r = mustRun(t, nil, "", task, dockerRunOptions{})
	if logged := dockerLoggedCommand(r.cfg, r.argv); strings.Contains(logged, "scriptpw99") || !strings.Contains(logged, "https://u:********@idx.example") {
		t.Errorf("logged: %s", logged)
	}
	// A secret that would still be on the argv stops the run.
	_, err := dockerTestRun(t, map[string]string{"CLEARML_AGENT_GIT_PASS": "gitpass-123"}, "", taskWith("py:3.11", "-e COPY=gitpass-123"), dockerRunOptions{})
	if err == nil || strings.Contains(err.Error(), "gitpass-123") || !strings.Contains(err.Error(), "not starting the container") {
		t.Errorf("leak check: %v", err)
	}
}

// TestDockerAptInstall: CLEARML_APT_INSTALL in the docker arguments is
// installed before the task, then dropped from its environment.
func TestDockerAptInstall(t *testing.T) {
	r := mustRun(t, nil, "", taskWith("py:3.11", "-e CLEARML_APT_INSTALL=curl"), dockerRunOptions{})
	script := r.argv[len(r.argv)-1]
	if !strings.HasPrefix(script, dockerAptInstall+" ; exec ") || !strings.Contains(script, "unset CLEARML_APT_INSTALL TRAINS_APT_INSTALL") {
		t.Errorf("entry: %q", r.argv[len(r.argv)-3:])
	}
	if r = mustRun(t, nil, "", taskWith("py:3.11", "-e A=1"), dockerRunOptions{}); strings.Contains(r.text(), "APT_INSTALL") {
		t.Errorf("apt without CLEARML_APT_INSTALL: %s", r.text())
	}
}

// TestDockerHostMountGolden (the agent in a container): every path handed
// to the engine is a host path: the binary and the run's config are put in
// the shared folder, caches are translated, what lies outside is dropped
// with a note.
func TestDockerHostMountGolden(t *testing.T) {
	home := t.TempDir()
	shared := filepath.Join(home, ".clearml")
	bin := filepath.Join(t.TempDir(), "clearml-agent")
	os.WriteFile(bin, []byte("a static agent"), 0o755)
	env := map[string]string{"HOME": home, "CLEARML_AGENT_DOCKER_HOST_MOUNT": "/opt/clearml/agent:" + shared, "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock"}
	r := mustRun(t, env, `sdk.storage.cache.default_base_dir: "/var/cache/sdk"`, taskWith("py:3.11", ""), dockerRunOptions{agentBinary: bin})
	var sources []string
	for i, a := range r.argv {
		if a == "-v" {
			sources = append(sources, strings.SplitN(r.argv[i+1], ":", 2)[0])
		}
	}
	for _, src := range sources {
		if !strings.HasPrefix(src, "/opt/clearml/agent/") {
			t.Errorf("mount source %s is not a host path", src)
		}
	}
	for _, want := range []string{"/opt/clearml/agent/apt-cache:/var/cache/apt/archives", "/opt/clearml/agent/pip-cache:/root/.cache/pip",
		"/opt/clearml/agent/vcs-cache:/root/.clearml/vcs-cache", "/opt/clearml/agent/.clearml-agent/tasks/clearml-agent-docker-",
		"/opt/clearml/agent/.clearml-agent/bin/"} {
		if !strings.Contains(r.text(), want) {
			t.Errorf("argv lacks %s:\n%s", want, r.text())
		}
	}
	if !strings.Contains(r.notesText(), "/var/cache/sdk is outside "+shared) || !strings.Contains(r.notesText(), "not mounting the ssh agent's socket") {
		t.Errorf("notes:\n%s", r.notesText())
	}
	// The binary is in the shared folder once, by content, executable.
	copies, _ := filepath.Glob(filepath.Join(shared, ".clearml-agent", "bin", "*", "clearml-agent"))
	if st, err := os.Stat(copies[0]); len(copies) != 1 || err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("binary copies %v", copies)
	}
	// The run's private folder is removed with the run.
	r.cleanup()
	if left, _ := filepath.Glob(filepath.Join(shared, ".clearml-agent", "tasks", "*")); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	// Without the variable, paths are the agent's own.
	r = mustRun(t, map[string]string{"HOME": home}, "", taskWith("py:3.11", ""), dockerRunOptions{agentBinary: bin})
	if !strings.Contains(r.text(), "-v "+bin+":/usr/local/bin/clearml-agent:ro") {
		t.Errorf("%s", r.text())
	}
}

// TestDockerNonRootGolden: an image running as uid 1000 gets its config
// (owned by that uid, 0600, in a 0700 folder), per-uid cache folders at
// paths outside /root and its own home.
func TestDockerNonRootGolden(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to hand files to uid 1000")
	}
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[user]\n\tname = x\n"), 0o600)
	u := dockerImageUser{User: "1000", UID: 1000, GID: 1000, Home: "/home/clearml"}
	r := mustRun(t, map[string]string{"HOME": home}, "", taskWith("py:3.11", ""), dockerRunOptions{imageUser: &u})
	for _, want := range []string{
		home + "/.clearml/pip-cache/uid-1000:/.clearml/pip-cache -e PIP_CACHE_DIR=/.clearml/pip-cache",
		home + "/.clearml/vcs-cache/uid-1000:/.clearml/vcs-cache",
		home + "/.clearml/pip-download-cache/uid-1000:/.clearml/pip-download-cache",
		home + "/.clearml/cache/uid-1000:/clearml_agent_cache",
		"/.gitconfig:/home/clearml/.gitconfig",
	} {
		if !strings.Contains(r.text(), want) {
			t.Errorf("argv lacks %s:\n%s", want, r.text())
		}
	}
	if strings.Contains(r.text(), "/var/cache/apt/archives") || strings.Contains(r.text(), ":/root/") {
		t.Errorf("root's paths for a non-root image:\n%s", r.text())
	}
	var conf string
	for _, a := range r.argv {
		if p, ok := strings.CutSuffix(a, ":/tmp/clearml.conf:ro"); ok {
			conf = p
		}
	}
	for p, mode := range map[string]os.FileMode{conf: 0o600, filepath.Dir(conf): 0o700 | os.ModeDir, filepath.Join(home, ".clearml/vcs-cache/uid-1000"): 0o755 | os.ModeDir} {
		st, err := os.Stat(p)
		if err != nil || st.Mode() != mode || fileOwner(st) != 1000 {
			t.Errorf("%s: %v %v owner %d", p, err, st.Mode(), fileOwner(st))
		}
	}
	data, _ := os.ReadFile(conf)
	if !strings.Contains(string(data), `"/home/clearml/.clearml/venvs-builds"`) || !strings.Contains(string(data), `"/.clearml/vcs-cache"`) {
		t.Errorf("container config paths:\n%s", data)
	}
}

func TestDockerInsidePaths(t *testing.T) {
	cfg := dockerTestConfig(t, map[string]string{}, "")
	root := dockerInsidePaths(cfg, dockerRootUser)
	if root.pipCache != "/root/.cache/pip" || root.vcsCache != "/root/.clearml/vcs-cache" || root.venvBuild != "/root/.clearml/venvs-builds" || root.sdkCache != "/clearml_agent_cache" {
		t.Errorf("root %+v", root)
	}
	u := dockerImageUser{User: "1000", UID: 1000, Home: "/home/u"}
	nr := dockerInsidePaths(cfg, u)
	if nr.pipCache != "/.clearml/pip-cache" || nr.venvsCache != "/.clearml/venvs-cache" || nr.venvBuild != "/home/u/.clearml/venvs-builds" || nr.home != "/home/u" {
		t.Errorf("non-root %+v", nr)
	}
	cfg = dockerTestConfig(t, map[string]string{}, `agent.docker_internal_mounts { vcs_cache: "~/vcs", pip_download: "/root/dl", sdk_cache: "/data/sdk" }`)
	nr = dockerInsidePaths(cfg, u)
	if nr.vcsCache != "/home/u/vcs" || nr.pipDownload != "/home/u/dl" || nr.sdkCache != "/data/sdk" {
		t.Errorf("configured %+v", nr)
	}
	if got := parseDockerImageConfig(`{"User":"1000:1001","Env":["PATH=/bin","HOME=/home/x"]}`); got != (dockerImageUser{User: "1000:1001", UID: 1000, GID: 1001, Home: "/home/x"}) {
		t.Errorf("image config %+v", got)
	}
	if got := parseDockerImageConfig(`{"User":"","Env":null}`); !got.root() || got.Home != "/root" {
		t.Errorf("root image %+v", got)
	}
}

// TestDockerCPUOnlyHost: without a GPU, docker mode runs containers
// without GPU flags and says so; --gpus there is a start-up error.
func TestDockerCPUOnlyHost(t *testing.T) {
	old := gpuHostHasGPU
	defer func() { gpuHostHasGPU = old }()
	gpuHostHasGPU = func() bool { return false }
	var out strings.Builder
	noGPU, err := dockerCheckGPUs(workerFlags{}, &out)
	if !noGPU || err != nil || !strings.Contains(out.String(), "no GPU found on this host") {
		t.Errorf("%v %v %q", noGPU, err, out.String())
	}
	_, err = dockerCheckGPUs(workerFlags{gpus: "0,1"}, &out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(ee.msg, "--gpus 0,1: this host has no GPU") {
		t.Errorf("--gpus on a CPU host: %v", err)
	}
	gpuHostHasGPU = func() bool { return true }
	if noGPU, err := dockerCheckGPUs(workerFlags{gpus: "0"}, &out); noGPU || err != nil {
		t.Errorf("GPU host: %v %v", noGPU, err)
	}
	// The container of a CPU-only run has no GPU flag.
	r := mustRun(t, nil, "", taskWith("py:3.11", ""), dockerRunOptions{})
	if strings.Contains(r.text(), "--gpus") || !strings.Contains(r.text(), "-e NVIDIA_VISIBLE_DEVICES=none") {
		t.Errorf("%s", r.text())
	}
}

// TestPodmanArgv: --podman runs the podman CLI; GPUs are CDI devices with
// NVIDIA_VISIBLE_DEVICES inside.
func TestPodmanArgv(t *testing.T) {
	old := gpuDevices
	gpuDevices = func() (bool, bool) { return false, true }
	defer func() { gpuDevices = old }()
	podman := taskOptions{podman: listFlag{set: true}}
	for _, tt := range []struct{ gpus, want string }{
		{"all", "podman run --device nvidia.com/gpu=all -l"},
		{"0,1", "podman run --device nvidia.com/gpu=0 --device nvidia.com/gpu=1 -l"},
		{"0.1", "podman run --device nvidia.com/gpu=0:1 -l"},
	} {
		o := podman
		o.gpus = tt.gpus
		r := mustRun(t, nil, "", taskWith("py:3.11", ""), dockerRunOptions{task: o})
		nv := strings.ReplaceAll(tt.gpus, ".", ":")
		if !strings.HasPrefix(r.text(), tt.want) || !strings.Contains(r.text(), "-e NVIDIA_VISIBLE_DEVICES="+nv+" ") || r.engine != "podman" {
			t.Errorf("%s: %s", tt.gpus, r.text())
		}
	}
	o := podman
	o.cpuOnly = true
	if r := mustRun(t, nil, "", taskWith("py:3.11", ""), dockerRunOptions{task: o}); strings.Contains(r.text(), "nvidia.com/gpu") {
		t.Errorf("cpu only: %s", r.text())
	}
	// The inner execute does not get --podman; executeArgv carries it to children.
	if a := strings.Join(dockerInnerExecute("t", dockerRunOptions{task: taskOptions{podman: listFlag{set: true, vals: []string{"img"}}}}), " "); strings.Contains(a, "podman") {
		t.Errorf("inner %s", a)
	}
	if a := strings.Join(executeArgv(globalOpts{}, taskOptions{id: "t", podman: listFlag{set: true}}), " "); a != "execute --id t --podman" {
		t.Errorf("executeArgv %s", a)
	}
}

func TestDockerEngineFlags(t *testing.T) {
	list := func(set bool, vals ...string) *listFlag { return &listFlag{set: set, vals: vals} }
	tests := []struct {
		docker, podman *listFlag
		want           []string
		err            bool
	}{
		{list(false), list(true, "img", "-e", "A=1"), []string{"img", "-e", "A=1"}, false},
		{list(true, "img"), list(true), []string{"img"}, false},
		{list(true), list(true, "img"), []string{"img"}, false},
		{list(true, "img"), list(true, "img"), []string{"img"}, false},
		{list(true, "a"), list(true, "b"), nil, true},
	}
	for _, tt := range tests {
		err := dockerEngineFlags(tt.docker, tt.podman)
		if (err != nil) != tt.err || err == nil && (!tt.docker.set || !reflect.DeepEqual(tt.docker.vals, tt.want)) {
			t.Errorf("%v %v: %v %v", tt.docker, tt.podman, tt.docker.vals, err)
		}
	}
	if (taskOptions{podman: listFlag{set: true}}).engine() != "podman" || (taskOptions{}).engine() != "docker" {
		t.Error("engine")
	}
}
