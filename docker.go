package main

// Docker mode (agent-execute.md §7): the task runs in a container whose
// entry point is this very binary (static, mounted read-only), running
// `execute` there. Nothing is pip-installed into the container: the
// container's python builds the venv, as on the host.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
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
)

// dockerRunOptions are the caller's choices for one container.
type dockerRunOptions struct {
	// task are the options of the execute inside; their --docker values
	// pick the image, their GPUs the container's.
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
}

// dockerImage is the chosen image with its arguments.
type dockerImage struct {
	image       string
	args        []string
	setupScript string
	isDefault   bool // the agent's image, not the task's
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
// agent.disable_task_docker_override make the agent's choice win.
func dockerChooseImage(cfg *agentConfig, task *taskDoc, o dockerRunOptions) (dockerImage, error) {
	ti, targs := task.Container.Image, task.Container.Arguments
	if ti == "" && task.Execution.DockerCmd != "" {
		var rest []string
		ti, rest = dockerSplit([]string{task.Execution.DockerCmd})
		targs = strings.Join(rest, " ")
	}
	d := dockerImage{setupScript: task.Container.SetupShellScript}
	override := o.forceDocker || cfg.boolean("agent.disable_task_docker_override", false)
	if ti != "" && !override {
		d.image = strings.TrimSpace(ti)
		if f := strings.Fields(d.image); len(f) > 1 { // "image args" in the image field
			d.image, d.args = f[0], f[1:]
		}
		if strings.TrimSpace(targs) != "" {
			a, err := shlexSplit(targs)
			if err != nil {
				return d, fmt.Errorf("container arguments of the task: %v", err)
			}
			d.args = append(d.args, a...)
		}
		return d, nil
	}
	d.image, d.args = dockerAgentDefault(cfg, o)
	d.isDefault = true
	if d.image == "" {
		return d, errors.New("no docker image: set the task's container image, pass --docker IMAGE or set agent.default_docker.image")
	}
	return d, nil
}

// dockerFilterArgs keeps only the switches matching one of the regexes
// (agent.docker_args_filters), with their value when it is a separate token.
func dockerFilterArgs(args []string, filters []string) []string {
	if len(filters) == 0 {
		return args
	}
	var res []*regexp.Regexp
	for _, f := range filters {
		if re, err := regexp.Compile(f); err == nil {
			res = append(res, re)
		}
	}
	out := []string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		ok := false
		for _, re := range res {
			if re.MatchString(a) {
				ok = true
				break
			}
		}
		if !ok {
			continue
		}
		out = append(out, a)
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// dockerResolveEnv expands $VAR and ${VAR} in -e/--env values from env;
// unknown variables are left as written.
func dockerResolveEnv(args []string, env envLookup) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-e" || out[i] == "--env" {
			i++
			out[i] = dockerEnvVarPattern().ReplaceAllStringFunc(out[i], func(m string) string {
				k := strings.Trim(m, "${}")
				if v, ok := env(k); ok {
					return v
				}
				return m
			})
		}
	}
	return out
}

// dockerSwitch is the name of a switch token ("--ipc=host" -> "ipc").
func dockerSwitch(a string) string {
	a = strings.TrimLeft(a, "-")
	n, _, _ := strings.Cut(a, "=")
	return n
}

// dockerArgGroups splits args into switch groups: a switch with its
// separate value, or a lone token.
func dockerArgGroups(args []string) [][]string {
	var g [][]string
	for i := 0; i < len(args); i++ {
		grp := []string{args[i]}
		if strings.HasPrefix(args[i], "-") && !strings.Contains(args[i], "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			grp = append(grp, args[i])
		}
		g = append(g, grp)
	}
	return g
}

// dockerMergeArgs combines task (or default) arguments with the agent's
// extra arguments. The first list wins for the protected switches.
func dockerMergeArgs(task, extra []string, extraFirst bool, protected []string) []string {
	first, second := extra, task
	if !extraFirst {
		first, second = task, extra
	}
	prot := map[string]bool{}
	for _, p := range protected {
		prot[strings.TrimLeft(p, "-")] = true
	}
	seen := map[string]bool{}
	for _, grp := range dockerArgGroups(first) {
		if strings.HasPrefix(grp[0], "-") {
			seen[dockerSwitch(grp[0])] = true
		}
	}
	out := append([]string{}, first...)
	for _, grp := range dockerArgGroups(second) {
		if s := dockerSwitch(grp[0]); strings.HasPrefix(grp[0], "-") && prot[s] && seen[s] {
			continue
		}
		out = append(out, grp...)
	}
	return out
}

// dockerGPUs is the --gpus flag and, when there is none (CPU only, or
// CLEARML_DOCKER_SKIP_GPUS_FLAG), the NVIDIA_VISIBLE_DEVICES to pass with -e.
func dockerGPUs(env envLookup, gpus string, cpuOnly bool) ([]string, string) {
	m := map[string]string{}
	for _, k := range []string{"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "KUBERNETES_SERVICE_HOST", "KUBERNETES_PORT"} {
		if v := firstEnv(env, k); v != "" {
			m[k] = v
		}
	}
	gpuEnv(m, gpus, cpuOnly)
	skip := firstEnv(env, "CLEARML_DOCKER_SKIP_GPUS_FLAG", "TRAINS_DOCKER_SKIP_GPUS_FLAG") != ""
	flag, inner := dockerGPUArgs(func(k string) (string, bool) { v, ok := m[k]; return v, ok }, skip)
	if flag != nil {
		return flag, ""
	}
	return nil, inner
}

var dockerEnvVarPattern = lazyRegexp(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

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
// credentials (they go as env), and cache paths moved to the container's.
func dockerContainerConfig(cfg *agentConfig) map[string]any {
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
	set(out, "agent.venvs_dir", dockerRoot+"/.clearml/venvs-builds")
	set(out, "agent.vcs_cache.path", dockerRoot+"/.clearml/vcs-cache")
	set(out, "agent.pip_download_cache.path", dockerRoot+"/.clearml/pip-download-cache")
	set(out, "agent.venvs_cache.path", dockerRoot+"/.clearml/venvs-cache")
	set(out, "sdk.storage.cache.default_base_dir", "/clearml_agent_cache")
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
	in.id, in.docker, in.gpus, in.logFile = taskID, listFlag{}, "", ""
	in.fullMonitoring = in.fullMonitoring || o.servicesMode
	in.optimization = min(in.optimization, 2)
	return executeArgv(globalOpts{}, in)
}

// dockerRun is one container to start.
type dockerRun struct {
	argv    []string // docker run ...
	img     dockerImage
	name    string // the container's
	cleanup func() // removes its temp files (the config and ssh copies), once it ended
}

// dockerTaskArgv prepares the `docker run ...` that runs the agent's
// `execute --id <task>` inside the container: run arguments, environment,
// mounts, image, entry script.
func dockerTaskArgv(cfg *agentConfig, task *taskDoc, o dockerRunOptions) (*dockerRun, error) {
	img, err := dockerChooseImage(cfg, task, o)
	if err != nil {
		return nil, err
	}
	bin, err := dockerHostAgent(cfg, o)
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
	tmp, err := os.MkdirTemp(tempDirFor(cfg), "clearml-agent-docker-")
	if err != nil {
		return nil, err
	}
	run := &dockerRun{img: img, name: o.name, cleanup: func() { os.RemoveAll(tmp) }}
	argv, innerNV, err := dockerRunArgs(cfg, img, task.ID, o)
	var mounts []string
	var sshCopied bool
	if err == nil {
		mounts, sshCopied, err = dockerMounts(cfg, img, o, tmp, bin)
	}
	if err != nil {
		run.cleanup()
		return nil, err
	}
	argv = append(append(argv, dockerEnvArgs(cfg, img, task.ID, o, innerNV)...), mounts...)
	if !o.debug && !slices.Contains(argv, "--restart") {
		argv = append(argv, "--rm")
	}
	run.argv = append(append(argv, img.image), dockerEntry(cfg, img, task, o, sshCopied)...)
	return run, nil
}

// dockerRunArgs is `docker run` with the container's arguments: the
// restart policy, the GPUs, the task's (or default) arguments merged with
// the agent's extra ones, and the labels. innerNV is the
// NVIDIA_VISIBLE_DEVICES to pass when there is no --gpus flag.
func dockerRunArgs(cfg *agentConfig, img dockerImage, taskID string, o dockerRunOptions) (argv []string, innerNV string, err error) {
	env := cfg.env
	argv = []string{"docker", "run"}
	if r := firstEnv(env, "CLEARML_AGENT_SERVICES_DOCKER_RESTART"); r != "" {
		pol, _, _ := strings.Cut(r, ";")
		argv = append(argv, "--restart", pol)
	}
	gpuFlag, innerNV := dockerGPUs(env, o.task.gpus, o.task.cpuOnly)
	argv = append(argv, gpuFlag...)

	// Task/default arguments, filtered, then merged with the agent's extras.
	args := dockerFilterArgs(img.args, cfg.strList("agent.docker_args_filters"))
	if f := firstEnv(env, "CLEARML_AGENT_DOCKER_ARGS_FILTERS"); f != "" {
		args = dockerFilterArgs(args, strings.Fields(f))
	}
	if cfg.boolean("agent.docker_allow_host_environ", false) {
		args = dockerResolveEnv(args, env)
	}
	var extra []string
	if v := firstEnv(env, "CLEARML_AGENT_EXTRA_DOCKER_ARGS"); v != "" {
		if extra, err = shlexSplit(v); err != nil {
			return nil, "", fmt.Errorf("CLEARML_AGENT_EXTRA_DOCKER_ARGS: %w", err)
		}
	} else {
		for _, a := range cfg.strList("agent.extra_docker_arguments") {
			f, err := shlexSplit(a)
			if err != nil {
				return nil, "", fmt.Errorf("agent.extra_docker_arguments: %w", err)
			}
			extra = append(extra, f...)
		}
	}
	if sock := firstEnv(env, "SSH_AUTH_SOCK"); sock != "" && !dockerSSHDisabled(cfg) {
		extra = append(extra, "-v", sock+":"+sock, "-e", "SSH_AUTH_SOCK="+sock)
	}
	extra = dockerResolveEnv(extra, env)
	protected := cfg.strList("agent.protected_docker_extra_args")
	if _, ok := cfg.lookup("agent.protected_docker_extra_args"); !ok {
		protected = []string{"privileged", "security-opt", "network", "ipc"}
	}
	argv = append(argv, dockerMergeArgs(args, extra, cfg.boolean("agent.docker_args_extra_precedes_task", true), protected)...)

	argv = append(argv, "-l", dockerLabelWorker+"="+o.workerID, "-l", dockerLabelParent+"="+o.parentWorkerID, "-l", dockerLabelTask+"="+taskID)
	for _, l := range strings.Fields(firstEnv(env, "CLEARML_AGENT_EXTRA_DOCKER_LABELS")) {
		argv = append(argv, "-l", l)
	}
	return argv, innerNV, nil
}

// dockerEnvArgs are the container's -e variables.
func dockerEnvArgs(cfg *agentConfig, img dockerImage, taskID string, o dockerRunOptions, innerNV string) []string {
	env := cfg.env
	var argv []string
	if innerNV != "" {
		argv = append(argv, "-e", "NVIDIA_VISIBLE_DEVICES="+innerNV)
	}
	argv = append(argv, "-e", "CLEARML_WORKER_ID="+o.workerID, "-e", "CLEARML_DOCKER_IMAGE="+img.image, "-e", "CLEARML_TASK_ID="+taskID)
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
	creds := gitCredentialsFrom(cfg, o.task.gitUser, o.task.gitPass)
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

// dockerMounts are the container's name and mounts: the git files, the
// configuration (written to tmp) and the agent binary (bin), the ssh
// folder (copied to tmp) and the caches.
func dockerMounts(cfg *agentConfig, img dockerImage, o dockerRunOptions, tmp, bin string) (argv []string, sshCopied bool, err error) {
	home := homeDir(cfg.env)
	for _, f := range []string{".git-credentials", ".gitconfig"} {
		if p := filepath.Join(home, f); fileExists(p) {
			argv = append(argv, "-v", p+":"+dockerRoot+"/"+f)
		}
	}
	argv = append(argv, "--name", o.name)

	confPath := filepath.Join(tmp, "clearml.conf")
	// HOCON, not JSON: Go's JSON escapes <, > and & (see hoconText).
	if err := os.WriteFile(confPath, hoconText(dockerContainerConfig(cfg)), 0o600); err != nil {
		return nil, false, err
	}
	argv = append(argv, "-v", confPath+":"+dockerConfigPath+":ro", "-e", "CLEARML_CONFIG_FILE="+dockerConfigPath,
		"-v", bin+":"+o.agentMount+":ro")

	if sshDir := filepath.Join(home, ".ssh"); !dockerSSHDisabled(cfg) && fileExists(sshDir) && firstEnv(cfg.env, "SSH_AUTH_SOCK") == "" {
		dst := filepath.Join(tmp, "ssh")
		if err := gitCopyTree(sshDir, dst); err == nil {
			argv = append(argv, "-v", dst+":/.ssh:ro")
			sshCopied = true
		}
	}
	mount := func(key, inside string) {
		if p := cfg.str(key); p != "" {
			os.MkdirAll(p, 0o755)
			argv = append(argv, "-v", p+":"+inside)
		}
	}
	mount("agent.docker_apt_cache", "/var/cache/apt/archives")
	mount("agent.docker_pip_cache", dockerRoot+"/.cache/pip")
	if cfg.boolean("agent.pip_download_cache.enabled", true) {
		mount("agent.pip_download_cache.path", dockerRoot+"/.clearml/pip-download-cache")
	}
	mount("sdk.storage.cache.default_base_dir", "/clearml_agent_cache")
	if !o.noCacheMounts {
		if cfg.boolean("agent.vcs_cache.enabled", true) {
			mount("agent.vcs_cache.path", dockerRoot+"/.clearml/vcs-cache")
		}
		// One venv cache per image: a venv built in one image is no use in another.
		if p := cfg.str("agent.venvs_cache.path"); p != "" && cfg.float("agent.venvs_cache.max_entries", 10) >= 1 {
			sub := filepath.Join(p, "docker", dockerImageKey(img.image))
			os.MkdirAll(sub, 0o755)
			argv = append(argv, "-v", sub+":"+dockerRoot+"/.clearml/venvs-cache")
		}
	}
	return argv, sshCopied, nil
}

// dockerEntry is what the container runs: the agent, after the
// reference's script hooks when there are any.
func dockerEntry(cfg *agentConfig, img dockerImage, task *taskDoc, o dockerRunOptions, sshCopied bool) []string {
	// The pre-process lines first, then the init lines, which replace the
	// reference's container bootstrap (there is none here).
	script := dockerScriptLines(strings.Join(cfg.strList("agent.docker_preprocess_bash_script"), "\n"))
	for _, l := range dockerScriptLines(strings.Join(cfg.strList("agent.docker_init_bash_script"), "\n")) {
		script = append(script, strings.ReplaceAll(l, "{python_single_digit}", "3"))
	}
	if sshCopied {
		script = append(script, "cp -Rf /.ssh -T ~/.ssh")
	}
	if task.Script.Repository != "" && len(o.innerArgs) == 0 {
		// Git is the one thing the agent may need from the image.
		script = append(script, dockerGitCheck)
	}
	script = append(script, dockerScriptLines(strings.Join(cfg.strList("agent.extra_docker_shell_script"), "\n"))...)
	script = append(script, dockerScriptLines(img.setupScript)...)
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

// dockerLoggedCommand is the argv as logged: secret env values hidden,
// following agent.hide_docker_command_env_vars.
func dockerLoggedCommand(cfg *agentConfig, argv []string) string {
	shown := argv
	if cfg.boolean("agent.hide_docker_command_env_vars.enabled", true) {
		shown = maskDockerArgs(argv, cfg.strList("agent.hide_docker_command_env_vars.extra_keys"))
	}
	q := make([]string, len(shown))
	for i, a := range shown {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// dockerCmd runs one docker client command and returns its output.
func dockerCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// dockerPull pulls an image, its progress to out.
func dockerPull(ctx context.Context, image string, out io.Writer) {
	pull := exec.CommandContext(ctx, "docker", "pull", image)
	pull.Stdout, pull.Stderr = out, out
	pull.Run()
}

// dockerStopTask passes a stop on to the agent in a container (docker kill
// --signal: the image's STOPSIGNAL plays no part), which stops its task and
// sets its status; a container still running after wait is killed. done
// is closed when the container's client has exited.
func dockerStopTask(name string, cause stopCause, wait time.Duration, done <-chan struct{}) {
	kill := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := dockerCmd(ctx, append([]string{"kill"}, append(args, name)...)...)
		return err
	}
	if err := kill("--signal", cause.signalFor()); err != nil {
		kill()
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		kill()
	}
}

// dockerRemove removes a container whatever its state; a missing one is fine.
func dockerRemove(ctx context.Context, name string) {
	dockerCmd(ctx, "rm", "-f", name)
}

// cleanupStaleContainers removes the containers a previous run of this
// worker left behind (found by label), so a restart starts clean.
func cleanupStaleContainers(ctx context.Context, workerID string, log io.Writer) {
	out, err := dockerCmd(ctx, "ps", "-a", "-q", "--filter", "label="+dockerLabelParent+"="+workerID)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		id := strings.TrimSpace(sc.Text())
		if id == "" {
			continue
		}
		if log != nil {
			fmt.Fprintf(log, "clearml-agent: removing container %s left behind by worker %s\n", id, workerID)
		}
		dockerRemove(ctx, id)
	}
}

// dockerPythonList renders a list as Python's repr does, for the log lines
// the reference prints.
func dockerPythonList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		b, _ := json.Marshal(s)
		q[i] = "'" + strings.ReplaceAll(strings.Trim(string(b), `"`), "'", `\'`) + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}
