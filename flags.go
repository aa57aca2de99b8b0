package main

// The flag table: the value types, the help rendered from a command's
// table, and the encoder that turns flag values back into argv. The flags
// several commands share, and the global options, are registered here,
// once, with one help text; execute's in options.go, the other commands'
// own in their cmd_*.go file.

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// flagTable is one command's FlagSet plus what usage needs: display order,
// metavars and single-letter aliases.
type flagTable struct {
	fs       *flag.FlagSet
	order    []string
	metavar  map[string]string
	shorts   map[string]string // letter -> flag name
	names    map[any]string    // bound variable -> flag name, for argv
	defaults map[string]string // flag name -> value at registration
	required []string
}

func newFlagTable(name string) *flagTable {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagTable{fs: fs, metavar: map[string]string{}, shorts: map[string]string{},
		names: map[any]string{}, defaults: map[string]string{}}
}

// add registers a flag. A one-letter name is a short-only option (like -O).
func (t *flagTable) add(v flag.Value, name, short, metavar, help string) {
	t.fs.Var(v, name, help)
	t.bind(v, name, short, metavar)
}

func (t *flagTable) boolVar(p *bool, name, short, help string) {
	t.fs.BoolVar(p, name, *p, help)
	t.bind(p, name, short, "")
}

func (t *flagTable) stringVar(p *string, name, metavar, help string) {
	t.fs.StringVar(p, name, *p, help)
	t.bind(p, name, "", metavar)
}

func (t *flagTable) bind(variable any, name, short, metavar string) {
	t.order = append(t.order, name)
	t.metavar[name] = metavar
	t.names[variable], t.defaults[name] = name, t.fs.Lookup(name).Value.String()
	if short != "" {
		t.shorts[short] = name
	}
	if len(name) == 1 {
		t.shorts[name] = name
	}
}

// require makes the flag registered last a required one.
func (t *flagTable) require() { t.required = append(t.required, t.order[len(t.order)-1]) }

// argv renders the flags bound to variables (the registered pointers), in
// that order, as the tokens that set them; a flag at its default gives
// none. A value that starts with "-" is joined with "=", so it cannot be
// taken for an option.
func (t *flagTable) argv(variables ...any) []string {
	var out []string
	for _, p := range variables {
		name, ok := t.names[p]
		if !ok {
			panic(fmt.Sprintf("flagTable.argv: %T is not a registered flag", p))
		}
		v := t.fs.Lookup(name).Value
		switch x := v.(type) {
		case *listFlag:
			if x.set {
				out = append(append(out, "--"+name), x.vals...)
			}
		case *countFlag:
			if *x > 0 {
				out = append(out, "-"+strings.Repeat(name, int(*x)))
			}
		case boolFlagger:
			if v.String() == "true" {
				out = append(out, "--"+name)
			}
		default:
			switch s := v.String(); {
			case s == "" || s == t.defaults[name]:
			case strings.HasPrefix(s, "-"):
				out = append(out, "--"+name+"="+s)
			default:
				out = append(out, "--"+name, s)
			}
		}
	}
	return out
}

// Flags shared by several commands: one registration, one help text.

var logLevels = []string{"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"}

// workerFlags are the options execute, build and daemon share.
type workerFlags struct {
	optimization countFlag
	gitUser      string
	gitPass      string
	logLevel     choiceFlag
	gpus         string
	cpuOnly      bool
}

func (w *workerFlags) register(t *flagTable) {
	w.logLevel = choiceFlag{val: "INFO", choices: logLevels, upper: true}
	t.add(&w.optimization, optimizeShort, "", "", "Compile optimized pyc code (see the python documentation); repeat for more optimization")
	t.stringVar(&w.gitUser, "git-user", "GIT_USER", "Git username for repository access")
	t.stringVar(&w.gitPass, "git-pass", "GIT_PASS", "Git password for repository access")
	t.add(&w.logLevel, "log-level", "", "{DEBUG,INFO,WARN,WARNING,ERROR,CRITICAL}", "SDK log level (default: INFO)")
	t.stringVar(&w.gpus, "gpus", "GPUS", "GPUs to use, e.g. 0 | 0,1,2 | 0-3 | all (sets NVIDIA_VISIBLE_DEVICES)")
	t.boolVar(&w.cpuOnly, "cpu-only", "", "Disable GPU access, in Docker or in the virtual environment")
}

// registerDocker adds --docker (execute, build and daemon).
func registerDocker(t *flagTable, l *listFlag) {
	t.add(l, "docker", "", "DOCKER", "Run in Docker: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
}

// registerPodman adds --podman (execute and daemon): as --docker, with the
// podman CLI running the containers (3.0.3's flag).
func registerPodman(t *flagTable, l *listFlag) {
	t.add(l, "podman", "", "PODMAN", "Run in a container with podman: --podman [IMAGE [ARGS ...]], as --docker")
}

// registerStandalone adds --standalone-mode (execute and daemon).
func registerStandalone(t *flagTable, b *bool) {
	t.boolVar(b, "standalone-mode", "", "Use no network connections; assume everything is pre-installed")
}

// globalOpts are the options given before the command.
type globalOpts struct {
	configFile string
	debug      bool
}

// register adds the global options, in the order the top-level help shows
// them; version is --version, which only the command line has.
func (g *globalOpts) register(t *flagTable, version *bool) {
	t.boolVar(version, "version", "", "show the version and exit")
	t.stringVar(&g.configFile, "config-file", "CONFIG_FILE", "configuration file (default: ~/clearml.conf)")
	t.boolVar(&g.debug, "debug", "d", "print debug information")
}

// argv renders the global options for a child agent.
func (g globalOpts) argv() []string {
	var enc globalOpts
	var version bool
	t := newFlagTable(progName)
	enc.register(t, &version)
	enc = g
	return t.argv(&enc.configFile, &enc.debug)
}

// Value types, with argparse's semantics (args.go parses into them).

type boolFlagger interface{ IsBoolFlag() bool }

// listFlag is a multi-value option: nargs '+' (min 1) or '*' (min 0).
// Each occurrence replaces the previous one, as argparse's store does.
type listFlag struct {
	vals []string
	set  bool
	min  int
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.vals, " ")
}

// Set takes a JSON array of strings: the whole occurrence at once.
func (l *listFlag) Set(s string) error {
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return err
	}
	l.vals, l.set = v, true
	return nil
}

// optIntFlag is nargs '?' with an int type: absent, bare (constant) or N.
type optIntFlag struct {
	n    int
	set  bool
	bare int // the value of the bare flag
}

func (o *optIntFlag) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.n)
}

func (o *optIntFlag) Set(s string) error {
	if s == "" {
		o.n, o.set = o.bare, true
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("invalid int value: '%s'", s)
	}
	o.n, o.set = n, true
	return nil
}

// countFlag counts repetitions, like -OO.
type countFlag int

func (c *countFlag) String() string {
	if c == nil {
		return "0"
	}
	return strconv.Itoa(int(*c))
}
func (c *countFlag) Set(string) error { *c++; return nil }
func (c *countFlag) IsBoolFlag() bool { return true }

// choiceFlag is a single value from a fixed set, optionally upper-cased first.
type choiceFlag struct {
	val     string
	choices []string
	upper   bool
}

func (c *choiceFlag) String() string {
	if c == nil {
		return ""
	}
	return c.val
}

func (c *choiceFlag) Set(s string) error {
	if c.upper {
		s = strings.ToUpper(s)
	}
	for _, ch := range c.choices {
		if s == ch {
			c.val = s
			return nil
		}
	}
	q := make([]string, len(c.choices))
	for i, ch := range c.choices {
		q[i] = "'" + ch + "'"
	}
	return fmt.Errorf("invalid choice: '%s' (choose from %s)", s, strings.Join(q, ", "))
}

// intFlag is a plain int option with argparse's error wording.
type intFlag struct {
	n   int
	set bool
}

func (i *intFlag) String() string {
	if i == nil {
		return "0"
	}
	return strconv.Itoa(i.n)
}

func (i *intFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid int value: '%s'", s)
	}
	i.n, i.set = n, true
	return nil
}

// Help rendering.

// optString renders one option for the synopsis line.
func (t *flagTable) optString(name string) string {
	f := t.fs.Lookup(name)
	flagName := "--" + name
	if len(name) == 1 {
		flagName = "-" + name
	}
	mv := t.metavar[name]
	switch v := f.Value.(type) {
	case *listFlag:
		if v.min > 0 {
			return fmt.Sprintf("%s %s [%s ...]", flagName, mv, mv)
		}
		return fmt.Sprintf("%s [%s [%s ...]]", flagName, mv, mv)
	case *optIntFlag:
		return fmt.Sprintf("%s [%s]", flagName, mv)
	}
	if mv == "" {
		return flagName
	}
	return flagName + " " + mv
}

// leftColumn is an option as the help's table shows it, aliases first.
func (t *flagTable) leftColumn(name string) string {
	left := t.optString(name)
	for letter, full := range t.shorts {
		if full == name && letter != name {
			left = "-" + letter + ", " + left
		}
	}
	return left
}

// usage writes the command's help: synopsis, description and every flag.
func (t *flagTable) usage(w io.Writer, cmd, description string) {
	var b strings.Builder
	line := "usage: " + progName + " " + cmd + " [-h]"
	for _, n := range t.order {
		o := t.optString(n)
		if !slices.Contains(t.required, n) {
			o = "[" + o + "]"
		}
		line += " " + o
	}
	b.WriteString(wrapUsage(line, len("usage: "+progName+" "+cmd+" ")))
	b.WriteString("\n\n" + description + "\n\noptions:\n")
	row := func(left, help string) {
		if len(left) > 22 {
			fmt.Fprintf(&b, "  %s\n  %-22s %s\n", left, "", help)
		} else {
			fmt.Fprintf(&b, "  %-22s %s\n", left, help)
		}
	}
	row("-h, --help", "show this help message and exit")
	for _, n := range t.order {
		row(t.leftColumn(n), t.fs.Lookup(n).Usage)
	}
	io.WriteString(w, b.String())
}

// topUsage is the program's help, rendered from the global options' table.
func topUsage() string {
	t := newFlagTable(progName)
	var g globalOpts
	var version bool
	g.register(t, &version)
	var b strings.Builder
	var names []string
	for _, c := range commands {
		if !c.hidden {
			names = append(names, c.name)
		}
	}
	lead := "usage: " + progName + " "
	b.WriteString("CLEARML-AGENT AI Orchestration DevOps\n\n" + lead + "[-h] [--help]")
	for _, n := range t.order {
		b.WriteString(" [" + t.optString(n) + "]")
	}
	b.WriteString("\n" + strings.Repeat(" ", len(lead)) + "{" + strings.Join(names, ",") + "} ...\n\ncommands:\n")
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-18s %s\n", c.name, c.description)
		}
	}
	b.WriteString("\noptions:\n")
	fmt.Fprintf(&b, "  %-26s %s\n", "-h, --help", "show this help message and exit")
	for _, n := range t.order {
		fmt.Fprintf(&b, "  %-26s %s\n", t.leftColumn(n), t.fs.Lookup(n).Usage)
	}
	b.WriteString("\nRun '" + progName + " COMMAND -h' for the flags of a command.\n")
	return b.String()
}

func wrapUsage(line string, indent int) string {
	const width = 100
	var out strings.Builder
	col := 0
	for i, word := range splitUsageWords(line) {
		if i > 0 && col+1+len(word) > width {
			out.WriteString("\n" + strings.Repeat(" ", indent))
			col = indent
		} else if i > 0 {
			out.WriteString(" ")
			col++
		}
		out.WriteString(word)
		col += len(word)
	}
	return out.String()
}

// splitUsageWords splits a synopsis into words, keeping bracketed groups whole.
func splitUsageWords(s string) []string {
	var words []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '[':
			depth++
		case ']':
			depth--
		case ' ':
			if depth == 0 {
				if i > start {
					words = append(words, s[start:i])
				}
				start = i + 1
			}
		}
	}
	if start < len(s) {
		words = append(words, s[start:])
	}
	return words
}

// Flags of the commands that serve queues: daemon and the glues (slurm).

func registerForeground(t *flagTable, p *bool) {
	t.boolVar(p, "foreground", "", "Pipe the full log to stdout/stderr; do not use when running in the background")
}

// Flag names other files build or match argv and messages with.
const (
	queueFlag         = "queue"
	detachedFlag      = "detached"
	detachedShort     = "d" // -d of daemon and slurm; -d before the command is --debug
	optimizeShort     = "O" // -O (-OO): a flag without a value, clustered with -d
	uptimeFlag        = "uptime"
	downtimeFlag      = "downtime"
	useOwnerTokenFlag = "use-owner-token" // daemon and k8s
)

func registerQueues(t *flagTable, l *listFlag) {
	l.min = 1
	t.add(l, queueFlag, "", "QUEUES", "Queues to serve, by name or id, in priority order (default: the queue tagged 'default')")
}

func registerOrderFairness(t *flagTable, p *bool) {
	t.boolVar(p, "order-fairness", "", "Pull from the queues round-robin instead of in priority order")
}

func registerCreateQueue(t *flagTable, p *bool) {
	t.boolVar(p, "create-queue", "", "Create the queues given with --queue if they do not exist")
}

func registerDetached(t *flagTable, p *bool) {
	t.boolVar(p, detachedFlag, detachedShort, "Run in the background; the command returns at once")
}

func registerStop(t *flagTable, l *listFlag) {
	t.add(l, "stop", "", "WORKER_ID", "Stop a running agent with the same arguments, or the given worker ids")
}

// registerSchedule adds --uptime and --downtime.
func registerSchedule(t *flagTable, up, down *listFlag) {
	t.add(up, uptimeFlag, "", "UPTIME", `Hours and days the agent serves queues, e.g. "17-20 TUE"`)
	t.add(down, downtimeFlag, "", "DOWNTIME", `Hours and days the agent does not serve queues, e.g. "09-13 TUE"`)
}

func registerStatus(t *flagTable, p *bool) {
	t.boolVar(p, "status", "", "Print the worker's schedule and queues (a glue: and its jobs), then exit")
}

func registerPollingInterval(t *flagTable, p *intFlag) {
	*p = intFlag{n: 5}
	t.add(p, "polling-interval", "", "POLLING_INTERVAL", "Seconds between queue polls (default: 5)")
}

// registerMetricsAddress adds --metrics-address (daemon, slurm, k8s).
func registerMetricsAddress(t *flagTable, p *string) {
	t.stringVar(p, "metrics-address", "HOST:PORT", "Serve Prometheus /metrics, /healthz and /readyz on HOST:PORT (off by default; a bare PORT is loopback)")
}

// registerUseOwnerToken is --use-owner-token of daemon and k8s.
func registerUseOwnerToken(t *flagTable, p *bool) {
	t.boolVar(p, useOwnerTokenFlag, "", "Run each task with its owner's credentials: a token for the task's user (for a pod, in a per-task Secret)")
}

// checkOwnerTokenKey refuses --use-owner-token at start when the agent's key
// may not act as a task's owner, rather than fail every task pulled (as the
// reference does).
func checkOwnerTokenKey(on bool, claims tokenClaims) error {
	if !on || claims.mayImpersonate() {
		return nil
	}
	return &exitError{code: 1, msg: fmt.Sprintf("--%s: this key's role (%s) may not act as a task's owner; use an admin or service-account key, or run without --%s", useOwnerTokenFlag, claims.Identity.Role, useOwnerTokenFlag)}
}
