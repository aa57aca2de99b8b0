// Command clearml-agent is a drop-in replacement for the Python ClearML Agent:
// it pulls tasks from clearml-server queues and runs them in a Python venv or
// a Docker container.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// agentVersion is this build's version, shown by --version and sent to the server.
const agentVersion = "0.1.0"

const progName = "clearml-agent"

// cmdContext is what a command runs with: the global options and where
// its output goes.
type cmdContext struct {
	global globalOpts
	stdout io.Writer
	stderr io.Writer
}

// connect is the preamble of the commands that talk to the server: the
// configuration, and a client whose requests --debug logs to stderr. With
// asWorker the client speaks as this run's worker (workerIDFor), else as
// the host.
func (cx *cmdContext) connect(opts clientOptions, asWorker bool) (cfg *agentConfig, c *apiClient, workerID string, err error) {
	if cfg, err = loadConfig(cx.global.configFile, nil); err != nil {
		return nil, nil, "", err
	}
	if asWorker {
		workerID = workerIDFor(cfg)
		opts.workerID = workerID
	}
	c, err = cx.newClient(cfg, opts, func(format string, args ...any) {
		fmt.Fprintf(cx.stderr, progName+": debug: "+format+"\n", args...)
	})
	return cfg, c, workerID, err
}

// workerIDFor is agent.worker_id (under a daemon: the daemon's, through
// CLEARML_WORKER_ID), else "<worker_name>:<pid>" as the reference: a
// standalone execute must not report or unregister as a daemon's worker.
func workerIDFor(cfg *agentConfig) string {
	if id := cfg.str("agent.worker_id"); id != "" {
		return id
	}
	return cfg.str("agent.worker_name") + ":" + strconv.Itoa(os.Getpid())
}

// newClient makes the API client; with --debug its requests go to debugf.
func (cx *cmdContext) newClient(cfg *agentConfig, opts clientOptions, debugf func(format string, args ...any)) (*apiClient, error) {
	if cx.global.debug {
		opts.logf = debugf
	}
	return newAPIClient(cfg, opts)
}

// commandImpl is one subcommand: it registers its flags and runs.
type commandImpl interface {
	flags(t *flagTable)
	run(cx *cmdContext) error
}

type commandInfo struct {
	name        string
	description string
	hidden      bool
	new         func() commandImpl
	// envArgs are arguments from the environment, parsed before the
	// command line's (which win): a glue's Helm-chart settings.
	envArgs func() ([]string, error)
}

var commands = []commandInfo{
	{name: "execute", description: "Execute one task, locally and without a queue.",
		new: func() commandImpl { return &executeCmd{} }},
	{name: "build", description: "Build a task's environment (a folder or a Docker image) without running it.",
		new: func() commandImpl { return &buildCmd{} }},
	{name: "list", description: "List the workers registered on the server.",
		new: func() commandImpl { return &listCmd{} }},
	{name: "daemon", description: "Run a worker daemon that serves queues and runs their tasks.",
		new: func() commandImpl { return &daemonCmd{} }},
	{name: "config", description: "Print the effective configuration, with secrets masked.",
		new: func() commandImpl { return &configCmd{} }},
	{name: "k8s", description: "Serve queues by running each task as a Kubernetes pod (kubectl).",
		new: func() commandImpl { return &k8sCmd{} }, envArgs: k8sEnvArgs},
	{name: "slurm", description: "Serve queues by submitting each task as a SLURM batch job (sbatch).",
		new: func() commandImpl { return &slurmCmd{} }},
	{name: "init", description: "Create ~/clearml.conf: paste the credentials from the web UI, answer a few questions.",
		new: func() commandImpl { return &initWizardCmd{} }},
	{name: "install-bootstrap", description: "Accepted for compatibility: this agent needs no clearml-agent-bootstrap package.",
		new: func() commandImpl { return &installBootstrapCmd{} }},
}

func main() {
	// git runs this binary as its GIT_ASKPASS helper: answer and leave.
	if gitAskpassMain(os.Args[1:], os.LookupEnv, os.Stdout) {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: error: %s\n", progName, ue.msg)
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "%s: error: %s\n", progName, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "%s: error: %s\n", progName, oneLine(err.Error()))
	return 1
}

// exitError ends the program with a given status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// invocation is a parsed command line.
type invocation struct {
	global  globalOpts
	help    string // usage text to print instead of running, when asked for
	version bool
	info    *commandInfo
	cmd     commandImpl
	table   *flagTable
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	inv, err := parseCommandLine(args)
	if err != nil {
		return err
	}
	switch {
	case inv.help != "":
		_, err := io.WriteString(stdout, inv.help)
		return err
	case inv.version:
		_, err := fmt.Fprintf(stdout, "CLEARML-AGENT version %s\n", agentVersion)
		return err
	}
	if inv.global.configFile != "" {
		abs, err := expandConfigPath(inv.global.configFile)
		if err != nil {
			return err
		}
		inv.global.configFile = abs
	}
	return inv.cmd.run(&cmdContext{global: inv.global, stdout: stdout, stderr: stderr})
}

// parseCommandLine parses argv the way the reference's argparse does.
func parseCommandLine(args []string) (*invocation, error) {
	args, err := expandArgFiles(args, 0)
	if err != nil {
		return nil, err
	}
	inv := &invocation{}
	i, err := inv.parseGlobal(args)
	if err != nil {
		return nil, err
	}
	if inv.help != "" || inv.version {
		return inv, nil
	}
	if i == len(args) {
		inv.help = topUsage()
		return inv, nil
	}
	if err := inv.parseCommand(args[i], args[i+1:]); err != nil {
		return nil, err
	}
	return inv, nil
}

// parseGlobal parses the global options and returns the index of the
// command name. Global options end at the first token that is neither an
// option nor the value of one (--config-file).
func (inv *invocation) parseGlobal(args []string) (int, error) {
	gt := newFlagTable(progName)
	inv.global.register(gt, &inv.version)
	i := 0
	for i < len(args) && looksLikeOption(gt.fs, args[i]) {
		tok := args[i]
		i++
		if name, _, hasValue := strings.Cut(strings.TrimPrefix(tok, "--"), "="); strings.HasPrefix(tok, "--") && !hasValue {
			if full, _ := resolveLong(gt.fs, name); full != "" && full != "help" && !isBoolFlag(gt.fs.Lookup(full)) && i < len(args) {
				i++
			}
		}
	}
	if err := parseArgs(gt.fs, gt.shorts, args[:i]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			inv.help = topUsage()
			return i, nil
		}
		return i, withHint(err, progName+" -h")
	}
	return i, nil
}

// lookupCommand finds a command by name; the error lists the visible ones.
func lookupCommand(name string) (*commandInfo, error) {
	for k := range commands {
		if commands[k].name == name {
			return &commands[k], nil
		}
	}
	var names []string
	for _, c := range commands {
		if !c.hidden {
			names = append(names, "'"+c.name+"'")
		}
	}
	return nil, usagef("argument command: invalid choice: '%s' (choose from %s)", name, strings.Join(names, ", "))
}

// parseCommand parses the command's own flags (after those its
// environment gives, for the commands that read one).
func (inv *invocation) parseCommand(name string, rest []string) error {
	info, err := lookupCommand(name)
	if err != nil {
		return err
	}
	inv.info = info
	inv.cmd = inv.info.new()
	inv.table = newFlagTable(name)
	inv.cmd.flags(inv.table)
	if inv.info.envArgs != nil {
		pre, err := inv.info.envArgs()
		if err != nil {
			return err
		}
		rest = append(pre, rest...)
	}
	if err := parseArgs(inv.table.fs, inv.table.shorts, rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			inv.table.usage(&b, name, inv.info.description)
			inv.help = b.String()
			return nil
		}
		return withHint(err, progName+" "+name+" -h")
	}
	var missing []string
	for _, r := range inv.table.required {
		if !flagWasSet(inv.table.fs, r) {
			missing = append(missing, "--"+r)
		}
	}
	if len(missing) > 0 {
		return withHint(usagef("the following arguments are required: %s", strings.Join(missing, ", ")), progName+" "+name+" -h")
	}
	return nil
}

// withHint appends where to look for the right usage, keeping one line.
func withHint(err error, helpCmd string) error {
	var ue *usageError
	if errors.As(err, &ue) {
		return usagef("%s (see '%s')", ue.msg, helpCmd)
	}
	return err
}

// expandConfigPath does what the reference does to --config-file: expand
// $VARS, then ~, then make it absolute. The file must exist.
func expandConfigPath(p string) (string, error) {
	p = expandHome(os.ExpandEnv(p))
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("could not open configuration file %s (check the --config-file path)", abs)
	}
	// Children (execute under the daemon) read the same file.
	os.Setenv("CLEARML_CONFIG_FILE", abs)
	os.Setenv("TRAINS_CONFIG_FILE", abs)
	return abs, nil
}
