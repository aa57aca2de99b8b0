package main

// The docker argument policy: a task cannot take the host. Anyone who can
// enqueue a task chooses its container arguments, so the options that hand
// a container the host (privileges, the host's namespaces, devices, bind
// mounts of system or agent folders, files the docker CLI reads on the
// host) are refused unless the operator allows them in
// agent.docker_args_allow. The options are parsed as docker's CLI parses
// them (spf13/pflag: --flag=value, --flag value, -fvalue, -f=value, -f
// value, clustered switches -dit), so what is checked is what docker sees.

import (
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// dockerFlag describes one `docker run` / `podman run` option.
type dockerFlag struct {
	isBool bool                                      // a switch: --rm, --rm=false
	check  func(p *dockerArgPolicy, v string) string // "" or why the value is refused; nil: always allowed
}

// dockerRefuse is a check that refuses every use.
func dockerRefuse(why string) func(*dockerArgPolicy, string) string {
	return func(*dockerArgPolicy, string) string { return why }
}

// dockerRefuseTrue refuses a switch that is on.
func dockerRefuseTrue(why string) func(*dockerArgPolicy, string) string {
	return func(_ *dockerArgPolicy, v string) string {
		if b, _ := strconv.ParseBool(v); b {
			return why
		}
		return ""
	}
}

// dockerRefuseValues refuses the listed values, and those with a listed prefix ending in ":".
func dockerRefuseValues(why string, bad ...string) func(*dockerArgPolicy, string) string {
	return func(_ *dockerArgPolicy, v string) string {
		for _, b := range bad {
			if v == b || strings.HasSuffix(b, ":") && strings.HasPrefix(v, b) {
				return why
			}
		}
		return ""
	}
}

const (
	whyHostFile   = "the docker CLI would read or write that file on the agent's host"
	whyAgentOwns  = "the agent sets it for every container"
	whyPrivileges = "it gives the container privileges over the host"
)

// dockerFlags are the options of `docker run` (CLI 28) and `podman run`
// (4 and 5) by long name. An option not listed is refused: it may be new
// and hand over the host (as docker 28.1's --use-api-socket does).
var dockerFlags = map[string]dockerFlag{
	// Switches that are harmless.
	"disable-content-trust": {isBool: true}, "help": {isBool: true}, "init": {isBool: true},
	"interactive": {isBool: true}, "no-healthcheck": {isBool: true}, "publish-all": {isBool: true},
	"quiet": {isBool: true}, "read-only": {isBool: true}, "rm": {isBool: true}, "sig-proxy": {isBool: true},
	"tty": {isBool: true}, "http-proxy": {isBool: true}, "no-hosts": {isBool: true},
	"read-only-tmpfs": {isBool: true}, "rmi": {isBool: true}, "tls-verify": {isBool: true},
	"unsetenv-all": {isBool: true}, "passwd": {isBool: true},
	// Switches that hand over the host or the agent's control.
	"privileged":       {isBool: true, check: dockerRefuseTrue(whyPrivileges)},
	"use-api-socket":   {isBool: true, check: dockerRefuseTrue("it mounts the docker API socket (the host) into the container")},
	"oom-kill-disable": {isBool: true, check: dockerRefuseTrue("the container could exhaust the host's memory")},
	"detach":           {isBool: true, check: dockerRefuseTrue("the agent follows the container in the foreground")},
	"env-host":         {isBool: true, check: dockerRefuseTrue("it copies the agent's whole environment (its secrets) into the container")},
	"rootfs":           {isBool: true, check: dockerRefuseTrue("the image would be a folder of the agent's host")},
	"replace":          {isBool: true, check: dockerRefuseTrue("it would remove another container of the same name")},

	// Options whose value is harmless.
	"add-host": {}, "annotation": {}, "attach": {}, "blkio-weight": {}, "blkio-weight-device": {},
	"cap-drop": {}, "cpu-period": {}, "cpu-quota": {}, "cpu-rt-period": {}, "cpu-rt-runtime": {},
	"cpu-shares": {}, "cpus": {}, "cpuset-cpus": {}, "cpuset-mems": {}, "detach-keys": {},
	"device-read-bps": {}, "device-read-iops": {}, "device-write-bps": {}, "device-write-iops": {},
	"dns": {}, "dns-option": {}, "dns-search": {}, "domainname": {}, "entrypoint": {}, "env": {},
	"expose": {}, "group-add": {}, "health-cmd": {}, "health-interval": {}, "health-retries": {},
	"health-start-interval": {}, "health-start-period": {}, "health-timeout": {}, "health-on-failure": {},
	"hostname": {}, "ip": {}, "ip6": {}, "ipc": {check: dockerRefuseValues("it joins a namespace of the host by path", "ns:")},
	"isolation": {}, "kernel-memory": {}, "link": {}, "link-local-ip": {}, "log-driver": {}, "log-opt": {},
	"mac-address": {}, "memory": {}, "memory-reservation": {}, "memory-swap": {}, "memory-swappiness": {},
	"network": {}, "network-alias": {}, "pids-limit": {}, "platform": {}, "publish": {}, "pull": {},
	"shm-size": {}, "stop-signal": {}, "stop-timeout": {}, "storage-opt": {}, "sysctl": {}, "tmpfs": {},
	"ulimit": {}, "workdir": {}, "arch": {}, "os": {}, "variant": {}, "env-merge": {}, "unsetenv": {},
	"group-entry": {}, "passwd-entry": {}, "hostuser": {}, "image-volume": {}, "systemd": {}, "timeout": {},
	"tz": {}, "umask": {}, "cgroups": {},
	// Options checked by value.
	"volume": {check: (*dockerArgPolicy).checkVolume}, "mount": {check: (*dockerArgPolicy).checkMount},
	"device": {check: (*dockerArgPolicy).checkDevice}, "user": {check: (*dockerArgPolicy).checkUser},
	"label": {check: (*dockerArgPolicy).checkLabel}, "security-opt": {check: (*dockerArgPolicy).checkSecurityOpt},
	"cap-add":       {check: dockerRefuse(whyPrivileges)},
	"oom-score-adj": {check: (*dockerArgPolicy).checkOOMScore},
	"pid":           {check: dockerRefuseValues("it shares the host's (or another container's) processes", "host", "container:", "ns:")},
	"userns":        {check: dockerRefuseValues("it turns off the user namespace that separates the container from the host", "host", "container:", "ns:")},
	"uts":           {check: dockerRefuseValues("it shares the host's host name namespace", "host", "container:", "ns:")},
	"cgroupns":      {check: dockerRefuseValues("it shares the host's cgroup namespace", "host", "container:", "ns:")},
	// Options refused whatever their value.
	"device-cgroup-rule": {check: dockerRefuse("it opens host devices to the container")},
	"volumes-from":       {check: dockerRefuse("it mounts another container's volumes (the agent's own, possibly)")},
	"cgroup-parent":      {check: dockerRefuse("it moves the container out of the agent's resource limits")},
	"cgroup-conf":        {check: dockerRefuse("it rewrites the container's resource limits")},
	"runtime":            {check: dockerRefuse("the agent chooses the container runtime")},
	"gpus":               {check: dockerRefuse("the agent assigns the GPUs (--gpus of the agent)")},
	"restart":            {check: dockerRefuse(whyAgentOwns + " (--rm, or CLEARML_AGENT_SERVICES_DOCKER_RESTART)")},
	"name":               {check: dockerRefuse(whyAgentOwns)},
	"env-file":           {check: dockerRefuse(whyHostFile)},
	"label-file":         {check: dockerRefuse(whyHostFile)},
	"cidfile":            {check: dockerRefuse(whyHostFile)},
	"pidfile":            {check: dockerRefuse(whyHostFile)},
	"conmon-pidfile":     {check: dockerRefuse(whyHostFile)},
	"authfile":           {check: dockerRefuse(whyHostFile)},
	"decryption-key":     {check: dockerRefuse(whyHostFile)},
	"init-path":          {check: dockerRefuse(whyHostFile)},
	"seccomp-policy":     {check: dockerRefuse("it changes the container's system call filter")},
	"hooks-dir":          {check: dockerRefuse("it runs programs of the agent's host as root")},
	"preserve-fds":       {check: dockerRefuse("it passes the agent's open files into the container")},
	"secret":             {check: dockerRefuse("it reads the host's secret store")},
	"pod":                {check: dockerRefuse("it joins another pod's namespaces")},
	"pod-id-file":        {check: dockerRefuse(whyHostFile)},
	"uidmap":             {check: dockerRefuse("it maps the host's user ids into the container")},
	"gidmap":             {check: dockerRefuse("it maps the host's group ids into the container")},
	"subuidname":         {check: dockerRefuse("it maps the host's user ids into the container")},
	"subgidname":         {check: dockerRefuse("it maps the host's group ids into the container")},
	"chrootdirs":         {check: dockerRefuse("it changes how the container's root is set up")},
	"requires":           {check: dockerRefuse("it starts other containers")},
	"sdnotify":           {check: dockerRefuse("it hands the host's notify socket to the container")},
	"personality":        {check: dockerRefuse("it changes the kernel's execution domain")},
}

// dockerShortFlags maps one-letter options to long names.
var dockerShortFlags = map[byte]string{
	'a': "attach", 'c': "cpu-shares", 'd': "detach", 'e': "env", 'h': "hostname", 'i': "interactive",
	'l': "label", 'm': "memory", 'p': "publish", 'P': "publish-all", 'q': "quiet", 't': "tty",
	'u': "user", 'v': "volume", 'w': "workdir",
}

// dockerFlagAliases are docker's hidden spellings.
var dockerFlagAliases = map[string]string{"net": "network", "net-alias": "network-alias"}

// dockerOpt is one option of a docker command line, as docker parses it.
type dockerOpt struct {
	Name   string   // long name without dashes; "" for a token that is not an option
	Value  string   // the value; "true"/"false" for a switch
	Tokens []string // the tokens it came from (a clustered switch: its own canonical form)
	Err    string   // why docker's parser would not take it ("" when fine)
	// Cluster is, on the first option of a clustered token ("-itv /x:/y"),
	// that token and its value; the options that follow are its Cluster-1 others.
	Cluster    []string
	ClusterLen int
}

// parseDockerOpts splits arguments of `docker run` into options the way
// docker's flag parser does. Tokens that are not options (positional
// arguments, "--" and what follows) come back with Name "".
func parseDockerOpts(args []string) []dockerOpt {
	opts, _ := parseDockerOptsUntil(args, false)
	return opts
}

// parseDockerOptsUntil parses; with atImage it stops before the first
// positional token (the image of a `docker run` command line) and returns
// its index.
func parseDockerOptsUntil(args []string, atImage bool) ([]dockerOpt, int) {
	const notOption = "not an option (docker would take it as the image or its command)"
	var out []dockerOpt
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case atImage && (a == "--" || !strings.HasPrefix(a, "-") || a == "-"):
			return out, i
		case a == "--":
			for _, rest := range args[i:] {
				out = append(out, dockerOpt{Tokens: []string{rest}, Err: notOption})
			}
			return out, len(args)
		case strings.HasPrefix(a, "--"):
			o, used := parseDockerLong(a, args[i+1:])
			i += used
			out = append(out, o)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			opts, used := parseDockerShort(a, args[i+1:])
			i += used
			out = append(out, opts...)
		default:
			out = append(out, dockerOpt{Tokens: []string{a}, Err: notOption})
		}
	}
	return out, len(args)
}

// parseDockerLong parses "--name[=value]"; used counts the following tokens taken.
func parseDockerLong(a string, rest []string) (dockerOpt, int) {
	name, value, hasValue := strings.Cut(a[2:], "=")
	if alias, ok := dockerFlagAliases[name]; ok {
		name = alias
	}
	o := dockerOpt{Name: name, Tokens: []string{a}}
	f, known := dockerFlags[name]
	switch {
	case name == "" || strings.HasPrefix(name, "-"):
		o.Err = "bad option syntax"
	case !known:
		o.Err = "unknown option"
	case hasValue:
		o.Value = value
	case f.isBool:
		o.Value = "true"
	case len(rest) > 0: // docker takes the next token even when it starts with "-"
		o.Value = rest[0]
		o.Tokens = append(o.Tokens, rest[0])
		return o, 1
	default:
		o.Err = "needs a value"
	}
	return o, 0
}

// parseDockerShort parses "-abc", "-vVALUE", "-v=VALUE" and "-v VALUE".
func parseDockerShort(a string, rest []string) ([]dockerOpt, int) {
	var out []dockerOpt
	s := a[1:]
	used := 0
	for len(s) > 0 && used == 0 {
		name, ok := dockerShortFlags[s[0]]
		if !ok {
			out = append(out, dockerOpt{Name: "-" + s[:1], Tokens: []string{a}, Err: "unknown option"})
			break
		}
		o := dockerOpt{Name: name, Tokens: []string{a}}
		switch {
		case len(s) > 2 && s[1] == '=':
			o.Value, s = s[2:], ""
		case dockerFlags[name].isBool:
			o.Value, s = "true", s[1:]
		case len(s) > 1:
			o.Value, s = s[1:], ""
		case len(rest) > 0:
			o.Value, s = rest[0], ""
			o.Tokens, used = []string{a, rest[0]}, 1
		default:
			o.Err, s = "needs a value", ""
		}
		out = append(out, o)
	}
	if len(out) > 1 { // a cluster: each part in its own form, the whole kept on the first
		cluster := append([]string{a}, rest[:used]...)
		for i := range out {
			if out[i].Err == "" {
				out[i].Tokens = out[i].canonical()
			}
		}
		out[0].Cluster, out[0].ClusterLen = cluster, len(out)
	}
	return out, used
}

// canonical is the option in its long form.
func (o dockerOpt) canonical() []string {
	if f := dockerFlags[o.Name]; f.isBool && o.Value == "true" {
		return []string{"--" + o.Name}
	}
	return []string{"--" + o.Name + "=" + o.Value}
}

// dockerRefusal is one option the policy refused.
type dockerRefusal struct {
	Opt    dockerOpt
	Reason string
	Allow  string // the agent.docker_args_allow entry that lets it through; "" when none can
}

// String is the task log line.
func (r dockerRefusal) String() string {
	s := fmt.Sprintf("clearml-agent: refused the task's docker argument %q: %s", strings.Join(r.Opt.Tokens, " "), r.Reason)
	if r.Allow != "" {
		s += fmt.Sprintf(`; to allow it add %q to agent.docker_args_allow`, r.Allow)
	} else {
		s += " (agent.docker_args_allow cannot allow it: fix the task's container arguments)"
	}
	return s
}

// dockerArgPolicy is what the task's docker arguments may do.
type dockerArgPolicy struct {
	Allow      []string            // agent.docker_args_allow: "--flag", "--flag=value", "/host/path"
	Protected  []string            // host paths a bind mount may not expose, nor their parents
	ImageUser  string              // the image's USER: when it is not root, --user root is refused
	OwnDevices []string            // --device values the agent passes itself (CDI GPUs)
	AgentLabel []string            // label keys the agent sets
	Resolve    func(string) string // resolves symlinks of a host path; nil: none
}

// dockerDefaultProtected are the host folders no task may bind-mount (nor
// a parent of one). The agent adds its own folders, its config, the docker
// socket of DOCKER_HOST and the host side of CLEARML_AGENT_DOCKER_HOST_MOUNT.
var dockerDefaultProtected = []string{
	"/etc", "/root", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin",
	"/lib", "/lib32", "/lib64", "/libx32", "/run", "/var/run",
	"/var/lib/docker", "/var/lib/containerd", "/var/lib/containers", "/var/lib/kubelet",
}

// checkDockerArgs keeps the task's docker arguments the policy allows and
// lists the ones it refused.
func checkDockerArgs(args []string, p dockerArgPolicy) ([]string, []dockerRefusal) {
	var kept []string
	var refused []dockerRefusal
	opts := parseDockerOpts(args)
	for i := 0; i < len(opts); i++ {
		n := max(opts[i].ClusterLen, 1)
		var parts []string
		before := len(refused)
		for _, o := range opts[i : i+n] {
			if r, bad := p.judge(o); bad {
				refused = append(refused, r)
				continue
			}
			parts = append(parts, o.Tokens...)
		}
		if n > 1 && len(refused) == before {
			parts = opts[i].Cluster // all of a cluster kept: as written
		}
		kept = append(kept, parts...)
		i += n - 1
	}
	return kept, refused
}

// judge decides one option.
func (p *dockerArgPolicy) judge(o dockerOpt) (dockerRefusal, bool) {
	if o.Err != "" {
		return dockerRefusal{Opt: o, Reason: o.Err}, true
	}
	f := dockerFlags[o.Name]
	if f.isBool {
		if _, err := strconv.ParseBool(o.Value); err != nil {
			return dockerRefusal{Opt: o, Reason: "not a true/false value"}, true
		}
	}
	if f.check == nil {
		return dockerRefusal{}, false
	}
	why := f.check(p, o.Value)
	if why == "" || p.allowed(o) {
		return dockerRefusal{}, false
	}
	allow := "--" + o.Name
	if !f.isBool {
		allow += "=" + o.Value
	}
	if o.Name == "volume" || o.Name == "mount" {
		allow = p.mountAllowEntry(o)
	}
	return dockerRefusal{Opt: o, Reason: why, Allow: allow}, true
}

// allowed reports whether an agent.docker_args_allow entry lets o through.
func (p *dockerArgPolicy) allowed(o dockerOpt) bool {
	for _, e := range p.Allow {
		e = strings.TrimSpace(e)
		if strings.HasPrefix(e, "/") {
			continue // host paths: the mount checks use them
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(e, "-"), "=")
		if len(name) == 1 && len(e) > 1 && e[1] != '-' {
			name = dockerShortFlags[name[0]]
		}
		if alias, ok := dockerFlagAliases[name]; ok {
			name = alias
		}
		if name != o.Name {
			continue
		}
		if !hasValue || value == o.Value || o.Name == "cap-add" && dockerCapName(value) == dockerCapName(o.Value) ||
			o.Name == "device" && value == strings.SplitN(o.Value, ":", 2)[0] {
			return true
		}
	}
	return false
}

// dockerCapName normalizes a capability: "cap_sys_admin" is "SYS_ADMIN".
func dockerCapName(s string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "CAP_")
}

func (p *dockerArgPolicy) checkDevice(v string) string {
	for _, d := range p.OwnDevices {
		if v == d {
			return ""
		}
	}
	return "it gives the container a device of the host"
}

// checkUser refuses root when the image chose another user.
func (p *dockerArgPolicy) checkUser(v string) string {
	if dockerIsRootUser(p.ImageUser) {
		return ""
	}
	if dockerIsRootUser(v) {
		return fmt.Sprintf("the image runs as user %q and root in the container is root on the host's files", p.ImageUser)
	}
	return ""
}

// dockerIsRootUser: "", "root", "0", "0:0", "root:wheel" are root.
func dockerIsRootUser(u string) bool {
	name, _, _ := strings.Cut(strings.TrimSpace(u), ":")
	if name == "" || name == "root" {
		return true
	}
	n, err := strconv.Atoi(name)
	return err == nil && n == 0
}

func (p *dockerArgPolicy) checkLabel(v string) string {
	key, _, _ := strings.Cut(v, "=")
	for _, l := range p.AgentLabel {
		if key == l {
			return "the agent finds and removes its containers by this label"
		}
	}
	return ""
}

// checkSecurityOpt allows only no-new-privileges (it adds protection).
func (p *dockerArgPolicy) checkSecurityOpt(v string) string {
	switch strings.ToLower(v) {
	case "no-new-privileges", "no-new-privileges=true", "no-new-privileges:true":
		return ""
	}
	return "it weakens the container's confinement (seccomp, AppArmor, SELinux or masked paths)"
}

func (p *dockerArgPolicy) checkOOMScore(v string) string {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n < 0 {
		return "the host would kill its own processes before this container's"
	}
	return ""
}

// checkVolume checks -v [SOURCE:]TARGET[:OPTIONS].
func (p *dockerArgPolicy) checkVolume(v string) string {
	parts := strings.Split(v, ":")
	if len(parts) == 1 {
		return "" // an anonymous volume
	}
	if len(parts) > 3 {
		return "not a volume specification (SOURCE:TARGET[:OPTIONS])"
	}
	if len(parts) == 3 {
		for _, opt := range strings.Split(parts[2], ",") {
			if opt == "U" {
				return "it changes the owner of the host's files (:U)"
			}
		}
	}
	return p.checkSource(parts[0], true)
}

// checkSource checks a mount source: a named volume, or a host path.
func (p *dockerArgPolicy) checkSource(src string, isVolumeFlag bool) string {
	switch {
	case src == "":
		return "an empty mount source"
	case strings.HasPrefix(src, "/"):
		return p.checkHostPath(src)
	case isVolumeFlag && (strings.HasPrefix(src, ".") || strings.HasPrefix(src, "~")):
		return "a relative host path (docker resolves it from the agent's working folder); use an absolute path"
	case !dockerVolumeName().MatchString(src):
		return "not a volume name or an absolute host path"
	}
	return ""
}

var dockerVolumeName = lazyRegexp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// checkHostPath refuses a host path that is, contains, or is inside a protected one.
func (p *dockerArgPolicy) checkHostPath(src string) string {
	if p.hostPathAllowed(src) {
		return ""
	}
	for _, cand := range dockerPathForms(src, p.Resolve) {
		for _, prot := range append(append([]string{}, dockerDefaultProtected...), p.Protected...) {
			prot = path.Clean(prot)
			if cand == "/" {
				return "it mounts the host's root folder"
			}
			if cand == prot || strings.HasPrefix(cand, prot+"/") {
				return fmt.Sprintf("it mounts %s of the host", prot)
			}
			if strings.HasPrefix(prot, cand+"/") {
				return fmt.Sprintf("it mounts %s of the host, which holds %s", cand, prot)
			}
		}
	}
	return ""
}

// dockerPathForms is a host path cleaned of "..", "//" and trailing "/",
// and where it resolves to through symlinks.
func dockerPathForms(src string, resolve func(string) string) []string {
	clean := path.Clean(src)
	out := []string{clean}
	if resolve != nil {
		if r := path.Clean(resolve(clean)); r != clean {
			out = append(out, r)
		}
	}
	return out
}

// hostPathAllowed: an allow entry "/x" lets /x and what is below it through.
func (p *dockerArgPolicy) hostPathAllowed(src string) bool {
	// An allowed path that is a symlink (/etc/localtime) allows its target too.
	var allowed []string
	for _, e := range p.Allow {
		if e = strings.TrimSpace(e); strings.HasPrefix(e, "/") {
			allowed = append(allowed, dockerPathForms(e, p.Resolve)...)
		}
	}
	under := func(f string) bool {
		for _, e := range allowed {
			if f == e || e == "/" || strings.HasPrefix(f, e+"/") {
				return true
			}
		}
		return false
	}
	forms := dockerPathForms(src, p.Resolve)
	for _, f := range forms {
		if !under(f) {
			return false
		}
	}
	return len(allowed) > 0
}

// mountAllowEntry is the allow entry for a refused mount: its host path
// (cleaned) when that is what was refused, else the option itself.
func (p *dockerArgPolicy) mountAllowEntry(o dockerOpt) string {
	src := ""
	if o.Name == "volume" {
		if parts := strings.Split(o.Value, ":"); len(parts) >= 2 && len(parts) <= 3 {
			src = parts[0]
		}
	} else if m, err := parseDockerMount(o.Value); err == nil && m.Type == "bind" {
		src = m.Source
	}
	if strings.HasPrefix(src, "/") && p.checkHostPath(src) != "" {
		return path.Clean(src)
	}
	return "--" + o.Name + "=" + o.Value
}

// dockerResolveHostPath resolves the symlinks of the longest existing
// prefix of a host path (docker creates the rest): a link a task left in a
// data folder must not reach what the policy protects. Only where the
// agent sees the host's files (not in its own container).
func dockerResolveHostPath(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return path.Join(r, rest)
		}
		parent := path.Dir(cur)
		if parent == cur {
			return p
		}
		rest = path.Join(path.Base(cur), rest)
		cur = parent
	}
}
