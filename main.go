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
	"strings"
)

// agentVersion is this build's version, shown by --version and sent to the server.
const agentVersion = "0.1.0"

const progName = "clearml-agent"

// flagTable is one command's FlagSet plus what usage needs: display order,
// metavars and single-letter aliases.
type flagTable struct {
	fs      *flag.FlagSet
	order   []string
	metavar map[string]string
	shorts  map[string]string // letter -> flag name
}

func newFlagTable(name string) *flagTable {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagTable{fs: fs, metavar: map[string]string{}, shorts: map[string]string{}}
}

// add registers a flag. A one-letter name is a short-only option (like -O).
func (t *flagTable) add(v flag.Value, name, short, metavar, help string) {
	t.fs.Var(v, name, help)
	t.order = append(t.order, name)
	t.metavar[name] = metavar
	if short != "" {
		t.shorts[short] = name
	}
	if len(name) == 1 {
		t.shorts[name] = name
	}
}

func (t *flagTable) boolVar(p *bool, name, short, help string) {
	t.add((*boolValue)(p), name, short, "", help)
}

func (t *flagTable) stringVar(p *string, name, metavar, help string) {
	t.add((*stringValue)(p), name, "", metavar, help)
}

type boolValue bool

func (b *boolValue) Set(string) error { *b = true; return nil }
func (b *boolValue) String() string {
	if b != nil && *b {
		return "true"
	}
	return "false"
}
func (b *boolValue) IsBoolFlag() bool { return true }

type stringValue string

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string {
	if s == nil {
		return ""
	}
	return string(*s)
}

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

// usage writes the command's help: synopsis, description and every flag.
func (t *flagTable) usage(w io.Writer, cmd, description string, required map[string]bool) {
	var b strings.Builder
	line := "usage: " + progName + " " + cmd + " [-h]"
	for _, n := range t.order {
		o := t.optString(n)
		if !required[n] {
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
		left := t.optString(n)
		for letter, full := range t.shorts {
			if full == n && letter != n {
				left = "-" + letter + ", " + left
			}
		}
		row(left, t.fs.Lookup(n).Usage)
	}
	io.WriteString(w, b.String())
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

// globalOpts are the options given before the command.
type globalOpts struct {
	configFile string
	debug      bool
}

// runEnv is what a command runs with.
type runEnv struct {
	global globalOpts
	stdout io.Writer
	stderr io.Writer
}

// commandImpl is one subcommand: it registers its flags and runs.
type commandImpl interface {
	flags(t *flagTable)
	run(env *runEnv) error
}

type commandInfo struct {
	name        string
	description string
	required    []string
	hidden      bool
	new         func() commandImpl
}

var commands = []commandInfo{
	{name: "execute", description: "Execute one task, locally and without a queue.", required: []string{"id"},
		new: func() commandImpl { return &executeCmd{} }},
	{name: "build", description: "Build a task's environment (a folder or a Docker image) without running it.", required: []string{"id"},
		new: func() commandImpl { return &buildCmd{} }},
	{name: "list", description: "List the workers registered on the server.",
		new: func() commandImpl { return &listCmd{} }},
	{name: "daemon", description: "Run a worker daemon that serves queues and runs their tasks.",
		new: func() commandImpl { return &daemonCmd{} }},
	{name: "config", description: "Print the effective configuration, with secrets masked.",
		new: func() commandImpl { return &configCmd{} }},
	{name: "init", description: "Interactive configuration wizard (not supported by this agent).", hidden: true,
		new: func() commandImpl { return &initCmd{} }},
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

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

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
	return inv.cmd.run(&runEnv{global: inv.global, stdout: stdout, stderr: stderr})
}

// parseCommandLine parses argv the way the reference's argparse does.
func parseCommandLine(args []string) (*invocation, error) {
	args, err := expandArgFiles(args, 0)
	if err != nil {
		return nil, err
	}
	inv := &invocation{}
	gt := newFlagTable(progName)
	gt.stringVar(&inv.global.configFile, "config-file", "CONFIG_FILE", "Configuration file (default: ~/clearml.conf)")
	gt.boolVar(&inv.global.debug, "debug", "d", "Print debug information")
	gt.boolVar(&inv.version, "version", "", "Show the version and exit")

	// Global options end at the first token that is neither an option nor
	// the value of --config-file.
	i := 0
	for i < len(args) && looksLikeOption(gt.fs, args[i]) {
		tok := args[i]
		i++
		if name, _, hasValue := strings.Cut(strings.TrimPrefix(tok, "--"), "="); strings.HasPrefix(tok, "--") && !hasValue {
			if full, _ := resolveLong(gt.fs, name); full == "config-file" && i < len(args) {
				i++
			}
		}
	}
	if err := parseArgs(gt.fs, gt.shorts, args[:i]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			inv.help = topUsage()
			return inv, nil
		}
		return nil, withHint(err, progName+" -h")
	}
	if inv.version {
		return inv, nil
	}
	if i == len(args) {
		inv.help = topUsage()
		return inv, nil
	}
	name := args[i]
	for k := range commands {
		if commands[k].name == name {
			inv.info = &commands[k]
		}
	}
	if inv.info == nil {
		var names []string
		for _, c := range commands {
			if !c.hidden {
				names = append(names, "'"+c.name+"'")
			}
		}
		return nil, usagef("argument command: invalid choice: '%s' (choose from %s)", name, strings.Join(names, ", "))
	}
	inv.cmd = inv.info.new()
	inv.table = newFlagTable(name)
	inv.cmd.flags(inv.table)
	required := map[string]bool{}
	for _, r := range inv.info.required {
		required[r] = true
	}
	if err := parseArgs(inv.table.fs, inv.table.shorts, args[i+1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			inv.table.usage(&b, name, inv.info.description, required)
			inv.help = b.String()
			return inv, nil
		}
		return nil, withHint(err, progName+" "+name+" -h")
	}
	var missing []string
	for _, r := range inv.info.required {
		if !flagWasSet(inv.table.fs, r) {
			missing = append(missing, "--"+r)
		}
	}
	if len(missing) > 0 {
		return nil, withHint(usagef("the following arguments are required: %s", strings.Join(missing, ", ")), progName+" "+name+" -h")
	}
	return inv, nil
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

func topUsage() string {
	var b strings.Builder
	b.WriteString("CLEARML-AGENT Deep Learning DevOps\n\n")
	b.WriteString("usage: " + progName + " [-h] [--help] [--version] [--config-file CONFIG_FILE] [--debug]\n")
	b.WriteString("                     {execute,build,list,daemon,config} ...\n\ncommands:\n")
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.description)
		}
	}
	b.WriteString(`
options:
  -h, --help                 show this help message and exit
  --version                  show the version and exit
  --config-file CONFIG_FILE  configuration file (default: ~/clearml.conf)
  -d, --debug                print debug information

Run '` + progName + ` COMMAND -h' for the flags of a command.
`)
	return b.String()
}
