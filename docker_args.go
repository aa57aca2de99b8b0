package main

// The container's arguments: the task's (or the agent's default) ones,
// templated, filtered and checked against the policy (docker_policy.go),
// stripped of agent.forbidden_docker_args, merged with the agent's extra
// arguments, their published ports placed (docker_ports.go); and the
// restart policy.

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

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

var dockerEnvVarPattern = lazyRegexp(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

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

// dockerGPUs are the container's GPU arguments and the value of
// NVIDIA_VISIBLE_DEVICES inside ("none" for CPU only). Docker gets --gpus
// (or AMD device mounts); podman gets CDI devices (podmanGPUArgs).
func dockerGPUs(env envLookup, gpus string, cpuOnly bool, engine string) ([]string, string) {
	m := map[string]string{}
	for _, k := range []string{"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "KUBERNETES_SERVICE_HOST", "KUBERNETES_PORT"} {
		if v := firstEnv(env, k); v != "" {
			m[k] = v
		}
	}
	gpuEnv(m, gpus, cpuOnly)
	skip := firstEnv(env, "CLEARML_DOCKER_SKIP_GPUS_FLAG", "TRAINS_DOCKER_SKIP_GPUS_FLAG") != ""
	get := func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	if engine == "podman" {
		return podmanGPUArgs(get, skip)
	}
	return dockerGPUArgs(get, skip)
}

// containerArgs are the container's arguments: the task's (or the
// default) ones templated, filtered and checked against the policy, the
// agent's extra ones templated, both stripped of
// agent.forbidden_docker_args, merged, their ports placed, and the agent
// container's network when it runs in one. Each refusal is a task log note.
func (b *dockerBuild) containerArgs(imageUser dockerImageUser) ([]string, error) {
	cfg, env := b.cfg, b.cfg.env
	policy := b.policy(imageUser)
	args, _, notes := renderDockerArgs(b.img.args, b.vars.lookup, b.img.fromTask)
	b.noteTemplates(notes)
	args = dockerFilterArgs(args, cfg.strList("agent.docker_args_filters"))
	if f := firstEnv(env, "CLEARML_AGENT_DOCKER_ARGS_FILTERS"); f != "" {
		args = dockerFilterArgs(args, shellSplitLoose(f))
	}
	if b.img.fromTask {
		var refused []dockerRefusal
		args, refused = checkDockerArgs(args, policy)
		b.noteRefusals(refused)
	}
	if cfg.boolean("agent.docker_allow_host_environ", false) {
		args = dockerResolveEnv(args, env)
	}
	extra, err := b.extraArgs(policy)
	if err != nil {
		return nil, err
	}
	forbidden := cfg.strList("agent.forbidden_docker_args")
	if _, ok := cfg.lookup("agent.forbidden_docker_args"); !ok {
		forbidden = []string{"entrypoint"}
	}
	args, stripped := dockerStripForbidden(args, forbidden)
	extra, stripped2 := dockerStripForbidden(extra, forbidden)
	if s := dockerUnion(stripped, stripped2); len(s) > 0 {
		b.note(fmt.Sprintf("clearml-agent: ignoring docker argument(s) %s: they would override the agent startup script and prevent the task from running (agent.forbidden_docker_args)", strings.Join(s, " ")))
	}
	protected := cfg.strList("agent.protected_docker_extra_args")
	if _, ok := cfg.lookup("agent.protected_docker_extra_args"); !ok {
		protected = []string{"privileged", "security-opt", "network", "ipc"}
	}
	merged := dockerMergeArgs(args, extra, cfg.boolean("agent.docker_args_extra_precedes_task", true), protected)
	merged = b.placePorts(merged)
	b.apt = slices.ContainsFunc(parseDockerOpts(merged), func(o dockerOpt) bool {
		return o.Name == "env" && (strings.HasPrefix(o.Value, "CLEARML_APT_INSTALL=") || strings.HasPrefix(o.Value, "TRAINS_APT_INSTALL="))
	})
	// In a container (the host mount, or a Kubernetes pod, as the reference
	// decides) the task container joins the agent's network.
	if b.host != nil || firstEnv(env, "KUBERNETES_SERVICE_HOST") != "" && firstEnv(env, "KUBERNETES_PORT") != "" {
		if nw := dockerJoinNetwork(parseDockerOpts(merged), dockerOwnNetworkMode(b.run.engine)); nw != "" {
			merged = append(merged, "--network", nw)
		}
	}
	return merged, nil
}

// extraArgs are the agent's own extra arguments (CLEARML_AGENT_EXTRA_DOCKER_ARGS
// or agent.extra_docker_arguments) and the ssh agent's socket. Templating
// may put a task's value in them: those arguments are checked too.
func (b *dockerBuild) extraArgs(policy dockerArgPolicy) ([]string, error) {
	cfg, env := b.cfg, b.cfg.env
	var extra []string
	if v := firstEnv(env, "CLEARML_AGENT_EXTRA_DOCKER_ARGS"); v != "" {
		f, err := shlexSplit(v)
		if err != nil {
			return nil, fmt.Errorf("CLEARML_AGENT_EXTRA_DOCKER_ARGS: %w", err)
		}
		extra = f
	} else {
		for _, a := range cfg.strList("agent.extra_docker_arguments") {
			f, err := shlexSplit(a)
			if err != nil {
				return nil, fmt.Errorf("agent.extra_docker_arguments: %w", err)
			}
			extra = append(extra, f...)
		}
	}
	extra, templated, notes := renderDockerArgs(extra, b.vars.lookup, false)
	b.noteTemplates(notes)
	extra, refused := dockerCheckTemplated(extra, templated, policy)
	b.noteRefusals(refused)
	if sock := firstEnv(env, "SSH_AUTH_SOCK"); sock != "" && !dockerSSHDisabled(cfg) {
		if hp, err := b.hostPath(sock, "SSH_AUTH_SOCK"); err != nil {
			b.note("clearml-agent: not mounting the ssh agent's socket: " + err.Error())
		} else {
			extra = append(extra, "-v", hp+":"+sock, "-e", "SSH_AUTH_SOCK="+sock)
		}
	}
	return dockerResolveEnv(extra, env), nil
}

func (b *dockerBuild) noteTemplates(notes []dockerTemplateNote) {
	for _, n := range notes {
		b.note(n.Text)
	}
}

func (b *dockerBuild) noteRefusals(refused []dockerRefusal) {
	for _, r := range refused {
		b.note(r.String())
	}
}

// dockerUnion is a and the items of b not in a.
func dockerUnion(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// dockerCheckTemplated checks, of the operator's arguments, the options
// that templating changed (a task's value may be a host path), and keeps
// the others as written.
func dockerCheckTemplated(args []string, templated []bool, p dockerArgPolicy) ([]string, []dockerRefusal) {
	if !slices.Contains(templated, true) {
		return args, nil
	}
	var out []string
	var refused []dockerRefusal
	opts := parseDockerOpts(args)
	pos := 0
	for i := 0; i < len(opts); i++ {
		n := max(opts[i].ClusterLen, 1)
		toks := opts[i].Tokens
		if n > 1 {
			toks = opts[i].Cluster
		}
		if end := min(pos+len(toks), len(templated)); slices.Contains(templated[pos:end], true) {
			kept, r := checkDockerArgs(toks, p)
			out, refused = append(out, kept...), append(refused, r...)
		} else {
			out = append(out, toks...)
		}
		pos += len(toks)
		i += n - 1
	}
	return out, refused
}

// policy is what a task's arguments may do: agent.docker_args_allow (and
// CLEARML_AGENT_DOCKER_ARGS_ALLOW) widen the defaults; the agent's own
// folders are protected.
func (b *dockerBuild) policy(imageUser dockerImageUser) dockerArgPolicy {
	cfg := b.cfg
	allow := cfg.strList("agent.docker_args_allow")
	if v := firstEnv(cfg.env, "CLEARML_AGENT_DOCKER_ARGS_ALLOW"); v != "" {
		allow = append(allow, shellSplitLoose(v)...)
	}
	p := dockerArgPolicy{Allow: allow, ImageUser: imageUser.User,
		AgentLabel: []string{dockerLabelWorker, dockerLabelParent, dockerLabelTask}}
	if sock, ok := strings.CutPrefix(firstEnv(cfg.env, "DOCKER_HOST"), "unix://"); ok {
		p.Protected = append(p.Protected, sock)
	}
	if b.host != nil {
		// The agent's paths are not the host's: protect the shared folder.
		return dockerAppendProtected(p, b.host.Host)
	}
	p.Resolve = dockerResolveHostPath
	home := homeDir(cfg.env)
	p = dockerAppendProtected(p, filepath.Join(home, ".clearml"), filepath.Join(home, ".ssh"),
		filepath.Join(home, ".git-credentials"), filepath.Join(home, ".gitconfig"), b.bin, b.tmp, cfg.location)
	for _, k := range []string{"agent.docker_pip_cache", "agent.docker_apt_cache", "agent.pip_download_cache.path",
		"agent.vcs_cache.path", "agent.venvs_cache.path", "agent.venvs_dir", "sdk.storage.cache.default_base_dir"} {
		p = dockerAppendProtected(p, cfg.str(k))
	}
	return p
}

func dockerAppendProtected(p dockerArgPolicy, paths ...string) dockerArgPolicy {
	for _, s := range paths {
		if filepath.IsAbs(s) {
			p.Protected = append(p.Protected, filepath.Clean(s))
		}
	}
	return p
}

// placePorts applies agent.docker_args_allowed_port_range to the
// published ports (docker_ports.go); the task learns the host's address
// (CLEARML_AGENT_HOST_IP) and the mapping (its runtime).
func (b *dockerBuild) placePorts(args []string) []string {
	if !slices.ContainsFunc(parseDockerOpts(args), func(o dockerOpt) bool { return o.Name == "publish" }) {
		return args
	}
	var pol dockerPortPolicy
	if r := b.cfg.strList("agent.docker_args_allowed_port_range"); len(r) == 2 {
		lo, err1 := strconv.Atoi(strings.TrimSpace(r[0]))
		hi, err2 := strconv.Atoi(strings.TrimSpace(r[1]))
		if err1 != nil || err2 != nil || lo < 1 || hi < lo || hi > 65535 {
			b.note(fmt.Sprintf("clearml-agent: ignoring agent.docker_args_allowed_port_range %v: write it as [low, high]", r))
		} else {
			pol.Lo, pol.Hi = lo, hi
		}
	}
	pol.InUse = dockerPortInUse
	args, mapping, log := dockerRemapPorts(args, pol)
	b.note(log...)
	if mapping == "" {
		return args
	}
	b.run.portMapping = mapping
	if ip := dockerHostMachineIP(b.cfg.env, b.cfg.str("api.public_ip_ping")); ip != "" {
		args = append(args, "-e", "CLEARML_AGENT_HOST_IP="+ip)
	}
	return args
}

// dockerPortInUse: a tcp port of the host something listens on (udp
// ports are not checked, as in the reference).
var dockerPortInUse = func(proto string, port int) bool {
	if proto != "tcp" {
		return false
	}
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return true
	}
	l.Close()
	return false
}

// restartPolicy reads CLEARML_AGENT_SERVICES_DOCKER_RESTART:
// "<policy>[;<task field path>[=<value>]]": the policy applies to the
// tasks whose field exists (and equals the value). The reference honours
// it only with the Enterprise server; this agent with any.
func (b *dockerBuild) restartPolicy() string {
	v := strings.TrimSpace(firstEnv(b.cfg.env, "CLEARML_AGENT_SERVICES_DOCKER_RESTART"))
	if v == "" {
		return ""
	}
	pol, selector, _ := strings.Cut(v, ";")
	if !dockerRestartValid(pol) {
		b.note(fmt.Sprintf("clearml-agent: ignoring CLEARML_AGENT_SERVICES_DOCKER_RESTART=%s: the policy must be no, always, unless-stopped or on-failure[:N]", v))
		return ""
	}
	if selector == "" {
		return pol
	}
	field, want, hasWant := strings.Cut(selector, "=")
	got, ok := slurmDig(b.vars.document(), strings.Split(strings.TrimSpace(field), "."))
	if !ok || hasWant && !dockerFieldEquals(got, want) {
		return ""
	}
	return pol
}

func dockerRestartValid(p string) bool {
	switch p {
	case "no", "always", "unless-stopped", "on-failure":
		return true
	}
	n, ok := strings.CutPrefix(p, "on-failure:")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

// dockerFieldEquals compares a task field with the selector's text, as
// the reference: a bool as a bool, a number as a number, else as text.
func dockerFieldEquals(v any, want string) bool {
	switch x := v.(type) {
	case bool:
		b, ok := parseBoolText(want)
		return ok && b == x
	case float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(want), 64)
		return err == nil && f == x || scalarText(x) == want
	case string:
		return x == want
	}
	return scalarText(v) == want
}
