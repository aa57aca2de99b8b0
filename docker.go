package main

// Docker mode (agent-execute.md §7): the task runs in a container whose
// entry point is this very binary (static, mounted read-only), running
// `execute` there. Nothing is pip-installed into the container: the
// container's python builds the venv, as on the host.

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Paths inside the container.
const (
	dockerAgentPath  = "/usr/local/bin/clearml-agent"
	dockerConfigPath = "/tmp/clearml.conf"
	dockerRoot       = "/root"
)

// Labels put on every container this agent starts; a restarted agent
// removes the containers it left behind by the parent label.
const (
	dockerLabelWorker = "clearml-worker-id"
	dockerLabelParent = "clearml-parent-worker-id"
	dockerLabelTask   = "clearml-task-id"
	// dockerLabelRestart marks a container with a restart policy
	// (CLEARML_AGENT_SERVICES_DOCKER_RESTART): it outlives the agent.
	dockerLabelRestart = "clearml-restart-policy"
)

// dockerRunOptions are the caller's choices for one container.
type dockerRunOptions struct {
	// task are the options of the execute inside; their --docker values
	// pick the image, their GPUs the container's, --podman the engine.
	task           taskOptions
	forceDocker    bool              // the agent's image wins over the task's
	workerID       string            // the worker running the task (CLEARML_WORKER_ID inside)
	parentWorkerID string            // the daemon's worker id; default workerID
	servicesMode   bool              // a daemon's services-mode task
	workerTags     string            // --child-report-tags, shlex-joined
	env            map[string]string // more -e variables
	debug          bool              // keep the container (no --rm)
	name           string            // container name; default from the config or generated
	agentBinary    string            // host path of the static agent; default this executable
	// innerArgs replaces `execute --id ...` as the agent command (build uses it).
	innerArgs []string
	// noCacheMounts leaves the vcs and venv caches inside the container (build --docker).
	noCacheMounts bool
	// agentMount is where the binary is mounted; default dockerAgentPath.
	agentMount string

	// api reads what the templates and the restart selector need from the
	// server, only when they need it; nil: taskInfo only (tests).
	api       *apiClient
	queueID   string         // the queue the task came from ("" : the task's execution.queue)
	queueName string         // its name, when the caller knows it ("": asked of the server when a template needs it)
	taskInfo  map[string]any // the task's document, when the caller has it
	// imageUser is who the image runs as, when known (tests); nil: asked of the engine.
	imageUser *dockerImageUser
}

// dockerImage is the chosen image with its arguments.
type dockerImage struct {
	image       string
	args        []string
	setupScript string
	isDefault   bool   // the agent's image, not the task's
	fromTask    bool   // args are the task's: the policy checks them
	argsText    string // the task's arguments as it wrote them
	// writeBack: the task named no image, so the one it runs in is written
	// back to it (agent.default_docker.update_back_task).
	writeBack bool
}

// dockerSplit splits a --docker value list: one value with spaces is
// "image args..." (agent-execute.md §7).
func dockerSplit(vals []string) (string, []string) {
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) == 1 {
		f, err := shlexSplit(vals[0])
		if err != nil || len(f) == 0 {
			f = strings.Fields(vals[0])
		}
		if len(f) == 0 {
			return "", nil
		}
		if len(f) == 1 {
			return f[0], nil
		}
		return f[0], f[1:]
	}
	return vals[0], append([]string(nil), vals[1:]...)
}

// dockerAgentDefault is the agent's own image: --docker values, else
// CLEARML_DOCKER_IMAGE, else agent.default_docker.
func dockerAgentDefault(cfg *agentConfig, o dockerRunOptions) (string, []string) {
	var image string
	var args []string
	if len(o.task.docker.vals) > 0 {
		image, args = dockerSplit(o.task.docker.vals)
	} else {
		v := firstEnv(cfg.env, "CLEARML_DOCKER_IMAGE", "TRAINS_DOCKER_IMAGE")
		if v == "" {
			v = cfg.str("agent.default_docker.image")
		}
		if v == "" {
			v = "nvidia/cuda"
		}
		image, args = dockerSplit([]string{v})
	}
	if len(args) == 0 {
		for _, a := range cfg.strList("agent.default_docker.arguments") {
			if f, err := shlexSplit(a); err == nil {
				args = append(args, f...)
			}
		}
	}
	return image, args
}

// dockerChooseImage applies the precedence: the task's container, then
// --docker, then agent.default_docker; --force-docker and
// agent.disable_task_docker_override make the agent's choice win. The
// task's image field is one image reference, nothing else; a task that
// names arguments but no image keeps its arguments (issue 14: the
// reference uses its default arguments then).
func dockerChooseImage(cfg *agentConfig, task *taskDoc, o dockerRunOptions) (dockerImage, error) {
	ti, targs := strings.TrimSpace(task.Container.Image), task.Container.Arguments
	if ti == "" && strings.TrimSpace(task.Execution.DockerCmd) != "" {
		// The old API's "image args" in one field.
		f, err := shlexSplit(task.Execution.DockerCmd)
		if err != nil {
			return dockerImage{}, fmt.Errorf("execution.docker_cmd of the task: %v", err)
		}
		ti, targs = f[0], shellJoin(f[1:])
	}
	d := dockerImage{setupScript: task.Container.SetupShellScript}
	override := o.forceDocker || cfg.boolean("agent.disable_task_docker_override", false)
	var taskArgs []string
	if strings.TrimSpace(targs) != "" && !override {
		a, err := shlexSplit(targs)
		if err != nil {
			return d, fmt.Errorf("container arguments of the task: %v", err)
		}
		taskArgs = a
	}
	if ti != "" && !override {
		if why := dockerImageRefError(ti); why != "" {
			return d, fmt.Errorf("the task's container image: %s", why)
		}
		d.image, d.args, d.fromTask = ti, taskArgs, true
		return d, nil
	}
	d.image, d.args = dockerAgentDefault(cfg, o)
	d.isDefault = true
	if len(taskArgs) > 0 {
		d.args, d.fromTask, d.argsText = taskArgs, true, strings.TrimSpace(targs)
	}
	d.writeBack = ti == "" && !override
	if d.image == "" {
		return d, errors.New("no docker image: set the task's container image, pass --docker IMAGE or set agent.default_docker.image")
	}
	return d, nil
}

var dockerNamePattern = lazyRegexp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// dockerRandString is 32 random lower-case letters; tests replace it.
var dockerRandString = func() string {
	b := make([]byte, 32)
	rand.Read(b)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b)
}

// dockerContainerName renders agent.docker_container_name_format, or the
// default clearml-id-<task>-<random 8>, which must be unique per run.
func dockerContainerName(cfg *agentConfig, taskID, workerID string) (string, error) {
	format := cfg.str("agent.docker_container_name_format")
	if format == "" {
		format = "clearml-id-{task_id}-{rand_string:.8}"
	}
	wid := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, workerID)
	rs := dockerRandString()
	fields := map[string]string{"task_id": taskID, "worker_id": wid, "rand_string": rs}
	if o, ok := cfg.lookup("agent.docker_container_name_format_fields"); ok {
		if obj, ok := o.(*hoconObject); ok {
			for _, k := range obj.Keys() {
				v, _ := obj.Get(k)
				fields[k] = scalarText(v)
			}
		}
	}
	name := lazyFieldPattern().ReplaceAllStringFunc(format, func(m string) string {
		key, spec, _ := strings.Cut(m[1:len(m)-1], ":")
		v, ok := fields[key]
		if !ok {
			return m
		}
		var n int
		if _, err := fmt.Sscanf(spec, ".%d", &n); err == nil && n < len(v) {
			v = v[:n]
		}
		return v
	})
	if !dockerNamePattern().MatchString(name) {
		return "", fmt.Errorf("docker container name %q (from agent.docker_container_name_format %q) is not a valid container name", name, format)
	}
	return name, nil
}

var lazyFieldPattern = lazyRegexp(`\{[A-Za-z_][A-Za-z0-9_]*(:[^}]*)?\}`)

// dockerContainerConfig is the configuration the inner agent reads: the
// api (credentials) and sdk sections, the agent section without git
// credentials (they go as env), and cache paths moved to the container's
// (in: docker_internal_mounts for the image's user).
func dockerContainerConfig(cfg *agentConfig, in dockerInside) map[string]any {
	plain, _ := hoconToPlain(cfg.root).(map[string]any)
	out := map[string]any{}
	for _, k := range []string{"api", "sdk", "agent", "environment", "files"} {
		if v, ok := plain[k]; ok {
			out[k] = v
		}
	}
	agent, _ := out["agent"].(map[string]any)
	if agent == nil {
		agent = map[string]any{}
		out["agent"] = agent
	}
	for _, k := range []string{"git_user", "git_pass", "worker_id", "worker_name", "python_binary", "default_python"} {
		delete(agent, k)
	}
	set := func(m map[string]any, path string, v any) {
		parts := strings.Split(path, ".")
		for _, p := range parts[:len(parts)-1] {
			n, ok := m[p].(map[string]any)
			if !ok {
				n = map[string]any{}
				m[p] = n
			}
			m = n
		}
		m[parts[len(parts)-1]] = v
	}
	set(out, "agent.venvs_dir", in.venvBuild)
	set(out, "agent.vcs_cache.path", in.vcsCache)
	set(out, "agent.pip_download_cache.path", in.pipDownload)
	set(out, "agent.venvs_cache.path", in.venvsCache)
	set(out, "sdk.storage.cache.default_base_dir", in.sdkCache)
	ssp := true
	if v := firstEnv(cfg.env, "CLEARML_AGENT_FORCE_SYSTEM_SITE_PACKAGES"); v != "" {
		ssp, _ = parseBoolText(v)
	}
	set(out, "agent.package_manager.system_site_packages", ssp)
	return out
}

// dockerStaticCheck refuses a dynamically linked agent: it would not run
// in an arbitrary image.
func dockerStaticCheck(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("agent binary %s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("agent binary %s is dynamically linked and cannot run inside an arbitrary image; build it with CGO_ENABLED=0 (or set CLEARML_AGENT_DOCKER_AGENT_BINARY to a static build)", path)
		}
	}
	return nil
}

// dockerHostAgent is the static agent binary to mount.
func dockerHostAgent(cfg *agentConfig, o dockerRunOptions) (string, error) {
	p := o.agentBinary
	if p == "" {
		p = firstEnv(cfg.env, "CLEARML_AGENT_DOCKER_AGENT_BINARY")
	}
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = exe
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	if o.agentBinary == "" {
		if err := dockerStaticCheck(p); err != nil {
			return "", err
		}
	}
	return p, nil
}

// dockerScriptLines are the non-empty, non-comment lines of a shell script
// (a string, or a config list).
func dockerScriptLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// dockerInnerExecute is the agent command run in the container: execute
// for the task, with the options of the run inside (the image and the
// GPUs are the container's, the log file the host's).
func dockerInnerExecute(taskID string, o dockerRunOptions) []string {
	in := o.task
	in.id, in.docker, in.podman, in.gpus, in.logFile = taskID, listFlag{}, listFlag{}, "", ""
	in.fullMonitoring = in.fullMonitoring || o.servicesMode
	in.optimization = min(in.optimization, 2)
	return executeArgv(globalOpts{}, in)
}

// dockerRun is one container to start.
type dockerRun struct {
	argv    []string // docker run ... (or podman run ...)
	engine  string   // the CLI: "docker" or "podman"
	cliEnv  []string // NAME=VALUE for the CLI's environment: the secrets, off the argv
	img     dockerImage
	name    string // the container's
	keep    bool   // a restart policy: the container outlives the run (no --rm, not removed)
	cleanup func() // removes its temp files (the config and ssh copies), once it ended

	notes       []string          // lines for the task log: refused arguments, dropped mounts...
	portMapping string            // host:container,... (the runtime's _external_host_tcp_port_mapping)
	writeBack   map[string]string // the container to write back to the task (update_back_task); nil: none
}

// environ is the CLI's environment: the agent's, and the secret values
// the argv names with `-e NAME`.
func (r *dockerRun) environ(base []string) []string {
	return append(append([]string(nil), base...), r.cliEnv...)
}

// dockerBuild is the state of preparing one container.
type dockerBuild struct {
	cfg  *agentConfig
	task *taskDoc
	o    dockerRunOptions
	img  dockerImage
	run  *dockerRun
	tmp  string           // the run's private folder: config, ssh copy, env file
	host *dockerHostMount // the agent runs in a container: the folder it shares with the host
	bin  string           // the agent binary, as the agent sees it
	user dockerImageUser  // who the container runs as
	in   dockerInside     // paths inside the container
	vars *dockerTaskVars  // the template variables
	apt  bool             // the arguments set CLEARML_APT_INSTALL
}

func (b *dockerBuild) note(lines ...string) { b.run.notes = append(b.run.notes, lines...) }

// dockerTaskArgv prepares the `docker run ...` that runs the agent's
// `execute --id <task>` inside the container: run arguments, environment,
// mounts, image, entry script; the secrets go to the CLI's environment.
func dockerTaskArgv(cfg *agentConfig, task *taskDoc, o dockerRunOptions) (*dockerRun, error) {
	img, err := dockerChooseImage(cfg, task, o)
	if err != nil {
		return nil, err
	}
	bin, err := dockerHostAgent(cfg, o)
	if err != nil {
		return nil, err
	}
	hm, inContainer, err := parseDockerHostMount(cfg.env)
	if err != nil {
		return nil, err
	}
	o.parentWorkerID = cmp.Or(o.parentWorkerID, o.workerID)
	o.agentMount = cmp.Or(o.agentMount, dockerAgentPath)
	if o.name == "" {
		if o.name, err = dockerContainerName(cfg, task.ID, o.workerID); err != nil {
			return nil, err
		}
	}
	b := &dockerBuild{cfg: cfg, task: task, o: o, img: img, bin: bin,
		vars: &dockerTaskVars{api: o.api, cfg: cfg, task: task, queueID: o.queueID, workerID: o.workerID, doc: o.taskInfo}}
	if o.queueID != "" && o.queueName != "" {
		b.vars.names = map[string]string{"queues" + o.queueID: o.queueName}
	}
	parent := tempDirFor(cfg)
	if inContainer {
		// The engine runs on the host: the run's files must be in the shared folder.
		b.host = &hm
		parent = filepath.Join(hm.Local, ".clearml-agent", "tasks")
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return nil, err
		}
	}
	if b.tmp, err = os.MkdirTemp(parent, "clearml-agent-docker-"); err != nil {
		return nil, err
	}
	b.run = &dockerRun{img: img, name: o.name, engine: o.task.engine(), cleanup: func() { os.RemoveAll(b.tmp) }}
	if err := b.build(); err != nil {
		b.run.cleanup()
		return nil, err
	}
	if b.run.keep {
		// A restarted container mounts its config again.
		b.run.cleanup = func() {}
	}
	return b.run, nil
}

// build assembles the command line.
func (b *dockerBuild) build() error {
	imageUser, err := b.imageUser()
	if err != nil {
		return err
	}
	argv, innerNV, err := b.runArgs(imageUser)
	if err != nil {
		return err
	}
	if b.user, err = b.effectiveUser(imageUser, argv[2:]); err != nil {
		return err
	}
	b.in = dockerInsidePaths(b.cfg, b.user)
	argv = append(argv, b.envArgs(innerNV)...)
	mounts, sshCopied, err := b.mounts()
	if err != nil {
		return err
	}
	argv = append(argv, mounts...)
	if !b.o.debug && !b.run.keep {
		argv = append(argv, "--rm")
	}
	argv = append(append(argv, b.img.image), b.entry(sshCopied)...)
	if b.img.writeBack && b.cfg.boolean("agent.default_docker.update_back_task", true) {
		b.run.writeBack = map[string]string{"image": b.img.image, "arguments": cmp.Or(b.img.argsText, shellJoin(b.img.args)), "setup_shell_script": b.img.setupScript}
	}
	return b.secretsOff(argv)
}

// runArgs is `docker run` with the container's arguments: the restart
// policy, the GPUs, the task's (or default) arguments merged with the
// agent's extra ones, and the labels. innerNV is the
// NVIDIA_VISIBLE_DEVICES to pass with -e ("" for none).
func (b *dockerBuild) runArgs(imageUser dockerImageUser) (argv []string, innerNV string, err error) {
	env, o := b.cfg.env, b.o
	argv = []string{b.run.engine, "run"}
	restart := b.restartPolicy()
	if restart != "" {
		argv = append(argv, "--restart", restart)
		b.run.keep = true
	}
	gpuFlag, inner := dockerGPUs(env, o.task.gpus, o.task.cpuOnly, b.run.engine)
	argv = append(argv, gpuFlag...)
	if gpuFlag == nil || b.run.engine == "podman" || b.host != nil {
		innerNV = inner
	}
	args, err := b.containerArgs(imageUser)
	if err != nil {
		return nil, "", err
	}
	argv = append(argv, args...)
	argv = append(argv, "-l", dockerLabelWorker+"="+o.workerID, "-l", dockerLabelParent+"="+o.parentWorkerID, "-l", dockerLabelTask+"="+b.task.ID)
	if restart != "" {
		argv = append(argv, "-l", dockerLabelRestart+"="+restart)
	}
	for _, l := range strings.Fields(firstEnv(env, "CLEARML_AGENT_EXTRA_DOCKER_LABELS")) {
		argv = append(argv, "-l", l)
	}
	return argv, innerNV, nil
}

// envArgs are the container's -e variables. Secret values are moved off
// the argv afterwards (secretsOff).
func (b *dockerBuild) envArgs(innerNV string) []string {
	env, o, taskID := b.cfg.env, b.o, b.task.ID
	var argv []string
	if innerNV != "" {
		argv = append(argv, "-e", "NVIDIA_VISIBLE_DEVICES="+innerNV)
	}
	argv = append(argv, "-e", "CLEARML_WORKER_ID="+o.workerID, "-e", "CLEARML_DOCKER_IMAGE="+b.img.image, "-e", "CLEARML_TASK_ID="+taskID)
	if v := firstEnv(env, "CLEARML_AUTH_TOKEN"); v != "" {
		argv = append(argv, "-e", "CLEARML_AUTH_TOKEN="+v)
	}
	if o.workerTags != "" {
		argv = append(argv, "-e", "CLEARML_WORKER_TAGS="+o.workerTags)
	}
	if v := firstEnv(env, "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL"); v != "" {
		argv = append(argv, "-e", "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL="+v)
	}
	if o.servicesMode {
		argv = append(argv, "-e", "CLEARML_AGENT_SERVICE_TASK=1")
	}
	creds := gitCredentialsFrom(b.cfg, o.task.gitUser, o.task.gitPass)
	for _, kv := range (taskOptions{workerFlags: workerFlags{gitUser: creds.user, gitPass: creds.pass}}).childEnv() {
		argv = append(argv, "-e", kv)
	}
	keys := make([]string, 0, len(o.env))
	for k := range o.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		argv = append(argv, "-e", k+"="+o.env[k])
	}
	return argv
}

// mounts are the container's name and mounts: the git files, the
// configuration (written to tmp) and the agent binary, the ssh folder
// (copied to tmp) and the caches. Every source is a host path (hostPath).
func (b *dockerBuild) mounts() (argv []string, sshCopied bool, err error) {
	cfg, in := b.cfg, b.in
	home := homeDir(cfg.env)
	for _, f := range []string{".git-credentials", ".gitconfig"} {
		if p, ok := b.privateCopy(filepath.Join(home, f), f); ok {
			argv = append(argv, "-v", p+":"+path.Join(in.home, f))
		}
	}
	argv = append(argv, "--name", b.o.name)

	confPath := filepath.Join(b.tmp, "clearml.conf")
	// HOCON, not JSON: Go's JSON escapes <, > and & (see hoconText).
	if err := os.WriteFile(confPath, hoconText(dockerContainerConfig(cfg, in)), 0o600); err != nil {
		return nil, false, err
	}
	if err := b.giveToUser(b.tmp, confPath); err != nil {
		return nil, false, err
	}
	hostConf, err := b.hostPath(confPath, "the task's configuration")
	if err != nil {
		return nil, false, err
	}
	hostBin, err := b.binaryHostPath()
	if err != nil {
		return nil, false, err
	}
	argv = append(argv, "-v", hostConf+":"+dockerConfigPath+":ro", "-e", "CLEARML_CONFIG_FILE="+dockerConfigPath,
		"-v", hostBin+":"+b.o.agentMount+":ro")

	if sshDir := filepath.Join(home, ".ssh"); !dockerSSHDisabled(cfg) && fileExists(sshDir) && firstEnv(cfg.env, "SSH_AUTH_SOCK") == "" {
		if p, ok := b.privateCopy(sshDir, "ssh"); ok {
			argv = append(argv, "-v", p+":"+in.sshRO+":ro")
			sshCopied = true
		}
	}
	return append(argv, b.cacheMounts()...), sshCopied, nil
}

// cacheMounts are the cache folders of the host in the container.
func (b *dockerBuild) cacheMounts() []string {
	cfg, in := b.cfg, b.in
	var argv []string
	mount := func(p, inside, key string) {
		if p == "" {
			return
		}
		if src, ok := b.cacheDir(p, key); ok {
			argv = append(argv, "-v", src+":"+inside)
		}
	}
	if b.user.root() {
		mount(cfg.str("agent.docker_apt_cache"), in.aptCache, "agent.docker_apt_cache")
	}
	mount(cfg.str("agent.docker_pip_cache"), in.pipCache, "agent.docker_pip_cache")
	if n := len(argv); n > 0 && strings.HasSuffix(argv[n-1], ":"+in.pipCache) && in.pipCache != dockerRoot+"/.cache/pip" {
		argv = append(argv, "-e", "PIP_CACHE_DIR="+in.pipCache) // not where pip looks by default
	}
	if cfg.boolean("agent.pip_download_cache.enabled", true) {
		mount(cfg.str("agent.pip_download_cache.path"), in.pipDownload, "agent.pip_download_cache.path")
	}
	mount(cfg.str("sdk.storage.cache.default_base_dir"), in.sdkCache, "sdk.storage.cache.default_base_dir")
	if !b.o.noCacheMounts {
		if cfg.boolean("agent.vcs_cache.enabled", true) {
			mount(cfg.str("agent.vcs_cache.path"), in.vcsCache, "agent.vcs_cache.path")
		}
		// One venv cache per image: a venv built in one image is no use in another.
		if p := cfg.str("agent.venvs_cache.path"); p != "" && cfg.float("agent.venvs_cache.max_entries", 10) >= 1 {
			mount(filepath.Join(p, "docker", dockerImageKey(b.img.image)), in.venvsCache, "agent.venvs_cache.path")
		}
	}
	return argv
}

// entry is what the container runs: the agent, after the reference's
// script hooks when there are any.
func (b *dockerBuild) entry(sshCopied bool) []string {
	cfg, o, task := b.cfg, b.o, b.task
	// The pre-process lines first, then the init lines, which replace the
	// reference's container bootstrap (there is none here).
	script := dockerScriptLines(strings.Join(cfg.strList("agent.docker_preprocess_bash_script"), "\n"))
	for _, l := range dockerScriptLines(strings.Join(cfg.strList("agent.docker_init_bash_script"), "\n")) {
		script = append(script, strings.ReplaceAll(l, "{python_single_digit}", "3"))
	}
	if sshCopied {
		script = append(script, "cp -Rf "+shellQuote(b.in.sshRO)+" -T "+b.in.sshFolder)
	}
	if b.apt {
		script = append(script, dockerAptInstall)
	}
	if task.Script.Repository != "" && len(o.innerArgs) == 0 {
		// Git is the one thing the agent may need from the image.
		script = append(script, dockerGitCheck)
	}
	script = append(script, dockerScriptLines(strings.Join(cfg.strList("agent.extra_docker_shell_script"), "\n"))...)
	script = append(script, dockerScriptLines(b.img.setupScript)...)
	inner := o.innerArgs
	if len(inner) == 0 {
		inner = append([]string{o.agentMount}, dockerInnerExecute(task.ID, o)...)
	}
	if len(script) == 0 {
		return inner
	}
	q := make([]string, len(inner))
	for i, a := range inner {
		q[i] = shellQuote(a)
	}
	script = append(script, "exec "+strings.Join(q, " "))
	return []string{"bash", "-c", strings.Join(script, " ; ")}
}

// dockerGitCheck installs git only when the task needs it and the image lacks it, saying so.
const dockerGitCheck = `command -v git >/dev/null 2>&1 || { echo "clearml-agent: the image has no git, which the task's repository needs; installing it with apt-get"; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git) || { echo "clearml-agent: error: cannot install git in the image; use an image with git"; exit 1; }; }`

// dockerAptInstall installs CLEARML_APT_INSTALL (given with -e in the
// docker arguments, as the reference's bootstrap reads it), then drops
// it, so the task's environment does not carry it.
const dockerAptInstall = `CLEARML_APT_INSTALL="$CLEARML_APT_INSTALL $TRAINS_APT_INSTALL"; if [ -n "$(echo $CLEARML_APT_INSTALL)" ]; then echo "clearml-agent: installing CLEARML_APT_INSTALL:$CLEARML_APT_INSTALL"; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $CLEARML_APT_INSTALL) || dnf install -y $CLEARML_APT_INSTALL || echo "clearml-agent: warning: could not install$CLEARML_APT_INSTALL (CLEARML_APT_INSTALL)"; fi; unset CLEARML_APT_INSTALL TRAINS_APT_INSTALL`

// dockerImageKey names an image's venv cache folder.
func dockerImageKey(image string) string {
	sum := sha256.Sum256([]byte(image))
	return hex.EncodeToString(sum[:8])
}

func dockerSSHDisabled(cfg *agentConfig) bool {
	if v := firstEnv(cfg.env, "CLEARML_AGENT_DISABLE_SSH_MOUNT"); v != "" {
		b, _ := parseBoolText(v)
		return b
	}
	return cfg.boolean("agent.disable_ssh_mount", false)
}
