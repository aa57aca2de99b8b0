package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func mustParse(t *testing.T, args ...string) *invocation {
	t.Helper()
	inv, err := parseCommandLine(args)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return inv
}

// An argv written for the Python agent keeps its meaning.
func TestDaemonArgvMeaning(t *testing.T) {
	inv := mustParse(t, "daemon", "--queue", "default", "services", "--gpu", "0,1", "--docker", "nvidia/cuda:12.4 --ipc=host", "-d")
	d := inv.cmd.(*daemonCmd)
	if got := d.queues.vals; !reflect.DeepEqual(got, []string{"default", "services"}) {
		t.Errorf("queues = %q", got)
	}
	if d.gpus != "0,1" {
		t.Errorf("gpus = %q", d.gpus)
	}
	if !d.docker.set || !reflect.DeepEqual(d.docker.vals, []string{"nvidia/cuda:12.4 --ipc=host"}) {
		t.Errorf("docker = %+v", d.docker)
	}
	if !d.detached || inv.global.debug {
		t.Errorf("detached=%v debug=%v, want detached only", d.detached, inv.global.debug)
	}
}

func TestParseTable(t *testing.T) {
	type check func(t *testing.T, inv *invocation)
	daemon := func(f func(d *daemonCmd) bool) check {
		return func(t *testing.T, inv *invocation) {
			t.Helper()
			if !f(inv.cmd.(*daemonCmd)) {
				t.Errorf("unexpected daemon options: %+v", inv.cmd)
			}
		}
	}
	execute := func(f func(e *executeCmd) bool) check {
		return func(t *testing.T, inv *invocation) {
			t.Helper()
			if !f(inv.cmd.(*executeCmd)) {
				t.Errorf("unexpected execute options: %+v", inv.cmd)
			}
		}
	}
	tests := []struct {
		name string
		args []string
		ok   check
	}{
		{"debug before, detached after", []string{"-d", "daemon", "-d"}, func(t *testing.T, inv *invocation) {
			if !inv.global.debug || !inv.cmd.(*daemonCmd).detached {
				t.Errorf("want debug and detached")
			}
		}},
		{"long debug", []string{"--debug", "list"}, func(t *testing.T, inv *invocation) {
			if !inv.global.debug {
				t.Error("debug not set")
			}
		}},
		{"abbreviated global", []string{"--deb", "--conf=/x", "config"}, func(t *testing.T, inv *invocation) {
			if !inv.global.debug || inv.global.configFile != "/x" {
				t.Errorf("global = %+v", inv.global)
			}
		}},
		{"config-file separate value", []string{"--config-file", "/etc/c.conf", "list"}, func(t *testing.T, inv *invocation) {
			if inv.global.configFile != "/etc/c.conf" || inv.info.name != "list" {
				t.Errorf("got %+v %s", inv.global, inv.info.name)
			}
		}},
		{"opt=value", []string{"daemon", "--gpus=all", "--queue=q1"}, daemon(func(d *daemonCmd) bool {
			return d.gpus == "all" && reflect.DeepEqual(d.queues.vals, []string{"q1"})
		})},
		{"prefix abbreviations", []string{"daemon", "--q", "a", "--fore", "--cpu"}, daemon(func(d *daemonCmd) bool {
			return d.foreground && d.cpuOnly && reflect.DeepEqual(d.queues.vals, []string{"a"})
		})},
		{"count -OO", []string{"execute", "--id", "t1", "-OO"}, execute(func(e *executeCmd) bool { return e.optimization == 2 })},
		{"count -O -O -O", []string{"execute", "--id", "t1", "-O", "-O", "-O"}, execute(func(e *executeCmd) bool { return e.optimization == 3 })},
		{"cluster -Od", []string{"daemon", "-Od"}, daemon(func(d *daemonCmd) bool { return d.optimization == 1 && d.detached })},
		{"services-mode bare", []string{"daemon", "--services-mode", "--queue", "s"}, daemon(func(d *daemonCmd) bool {
			return d.servicesMode.set && d.servicesMode.n == -1
		})},
		{"services-mode N", []string{"daemon", "--services-mode", "5"}, daemon(func(d *daemonCmd) bool {
			return d.servicesMode.set && d.servicesMode.n == 5
		})},
		{"services-mode absent", []string{"daemon"}, daemon(func(d *daemonCmd) bool { return !d.servicesMode.set })},
		{"bare docker", []string{"daemon", "--docker", "--queue", "q"}, daemon(func(d *daemonCmd) bool {
			return d.docker.set && len(d.docker.vals) == 0 && d.queues.vals[0] == "q"
		})},
		{"docker image and args", []string{"execute", "--id", "x", "--docker", "img:1", "-v /a:/b"}, execute(func(e *executeCmd) bool {
			return reflect.DeepEqual(e.docker.vals, []string{"img:1", "-v /a:/b"})
		})},
		{"bare stop", []string{"daemon", "--stop"}, daemon(func(d *daemonCmd) bool { return d.stop.set && len(d.stop.vals) == 0 })},
		{"stop ids", []string{"daemon", "--stop", "h:gpu0", "h:gpu1"}, daemon(func(d *daemonCmd) bool {
			return reflect.DeepEqual(d.stop.vals, []string{"h:gpu0", "h:gpu1"})
		})},
		{"uptime specs", []string{"daemon", "--uptime", "17-20 TUE", "20-24 FRI"}, daemon(func(d *daemonCmd) bool {
			return reflect.DeepEqual(d.uptime.vals, []string{"17-20 TUE", "20-24 FRI"})
		})},
		{"downtime specs", []string{"daemon", "--downtime", "09-13 TUE"}, daemon(func(d *daemonCmd) bool {
			return reflect.DeepEqual(d.downtime.vals, []string{"09-13 TUE"})
		})},
		{"child report tags", []string{"daemon", "--child-report-tags", "a", "b", "--status"}, daemon(func(d *daemonCmd) bool {
			return reflect.DeepEqual(d.childReportTags.vals, []string{"a", "b"}) && d.status
		})},
		{"repeated list replaces", []string{"daemon", "--queue", "a", "--queue", "b"}, daemon(func(d *daemonCmd) bool {
			return reflect.DeepEqual(d.queues.vals, []string{"b"})
		})},
		{"log level upper-cased", []string{"daemon", "--log-level", "debug"}, daemon(func(d *daemonCmd) bool { return d.logLevel.val == "DEBUG" })},
		{"log level default", []string{"daemon"}, daemon(func(d *daemonCmd) bool { return d.logLevel.val == "INFO" })},
		{"polling interval", []string{"daemon", "--polling-interval", "7"}, daemon(func(d *daemonCmd) bool { return d.pollingInterval.n == 7 })},
		{"polling default", []string{"daemon"}, daemon(func(d *daemonCmd) bool { return d.pollingInterval.n == 5 })},
		{"negative number is a value", []string{"daemon", "--gpus", "-1"}, daemon(func(d *daemonCmd) bool { return d.gpus == "-1" })},
		{"every daemon bool", []string{"daemon", "--order-fairness", "--standalone-mode", "--create-queue", "--dynamic-gpus", "--use-owner-token", "--force-current-version"},
			daemon(func(d *daemonCmd) bool {
				return d.orderFairness && d.standalone && d.createQueue && d.dynamicGPUs && d.useOwnerToken && d.forceCurrentVersion
			})},
		{"git credentials", []string{"execute", "--id", "t", "--git-user", "u", "--git-pass", "p"}, execute(func(e *executeCmd) bool {
			return e.gitUser == "u" && e.gitPass == "p"
		})},
		{"execute bools", []string{"execute", "--id", "t", "--clone", "--require-queue", "--disable-monitoring", "--full-monitoring", "--standalone-mode", "--log-file", "/tmp/l"},
			execute(func(e *executeCmd) bool {
				return e.clone && e.requireQueue && e.disableMonitoring && e.fullMonitoring && e.standalone && e.logFile == "/tmp/l"
			})},
		{"build", []string{"build", "--id", "t", "--target", "/x", "--entry-point", "clone_task", "--python-version", "3.11", "--force-docker", "--install-globally"},
			func(t *testing.T, inv *invocation) {
				b := inv.cmd.(*buildCmd)
				if b.id != "t" || b.target != "/x" || b.entryPoint.val != "clone_task" || b.pythonVersion != "3.11" || !b.forceDocker || !b.installGlobally {
					t.Errorf("build = %+v", b)
				}
			}},
		{"help", []string{"daemon", "-h"}, func(t *testing.T, inv *invocation) {
			if !strings.Contains(inv.help, "--queue") {
				t.Errorf("help = %q", inv.help)
			}
		}},
		{"no command prints usage", []string{}, func(t *testing.T, inv *invocation) {
			if !strings.Contains(inv.help, "usage:") {
				t.Errorf("help = %q", inv.help)
			}
		}},
		{"version", []string{"--version"}, func(t *testing.T, inv *invocation) {
			if !inv.version {
				t.Error("version not set")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.ok(t, mustParse(t, tt.args...)) })
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"daemon", "--bogus"}, "unrecognized arguments: --bogus"},
		{[]string{"daemon", "--docker", "img", "--ipc=host"}, "unrecognized arguments: --ipc=host"},
		{[]string{"daemon", "--g", "0"}, "ambiguous option: --g could match"},
		{[]string{"daemon", "--queue"}, "argument --queue: expected at least one argument"},
		{[]string{"daemon", "--services-mode", "x"}, "argument --services-mode: invalid int value: 'x'"},
		{[]string{"daemon", "--log-level", "loud"}, "argument --log-level: invalid choice: 'LOUD'"},
		{[]string{"daemon", "--foreground=1"}, "ignored explicit argument '1'"},
		{[]string{"daemon", "extra"}, "unrecognized arguments: extra"},
		{[]string{"execute"}, "the following arguments are required: --id"},
		{[]string{"execute", "--id"}, "argument --id: expected one argument"},
		{[]string{"build", "--id", "x", "--entry-point", "nope"}, "invalid choice: 'nope'"},
		{[]string{"frobnicate"}, "invalid choice: 'frobnicate'"},
		{[]string{"list", "--debug"}, "unrecognized arguments: --debug"},
		{[]string{"--bogus", "list"}, "unrecognized arguments: --bogus"},
		{[]string{"execute", "--id", "x", "-Z"}, "unrecognized arguments: -Z"},
	}
	for _, tt := range tests {
		_, err := parseCommandLine(tt.args)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", tt.args, err)
			continue
		}
		if !strings.Contains(ue.msg, tt.want) {
			t.Errorf("%q: error %q does not contain %q", tt.args, ue.msg, tt.want)
		}
	}
}

func TestArgFiles(t *testing.T) {
	dir := t.TempDir()
	inner := filepath.Join(dir, "inner.args")
	outer := filepath.Join(dir, "outer.args")
	os.WriteFile(inner, []byte("--gpus\n0,1\n"), 0o644)
	os.WriteFile(outer, []byte("--queue\nfirst queue\nsecond\n@"+inner+"\n"), 0o644)
	inv := mustParse(t, "daemon", "@"+outer, "--foreground")
	d := inv.cmd.(*daemonCmd)
	if !reflect.DeepEqual(d.queues.vals, []string{"first queue", "second"}) || d.gpus != "0,1" || !d.foreground {
		t.Errorf("got queues=%q gpus=%q foreground=%v", d.queues.vals, d.gpus, d.foreground)
	}
	if _, err := parseCommandLine([]string{"daemon", "@" + filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "cannot read argument file") {
		t.Errorf("missing @file: %v", err)
	}
}

// The help of each command lists every flag it parses.
func TestHelpListsEveryFlag(t *testing.T) {
	for _, c := range commands {
		inv := mustParse(t, c.name, "-h")
		for _, name := range inv.table.order {
			want := "--" + name
			if len(name) == 1 {
				want = "-" + name
			}
			if !strings.Contains(inv.help, want) {
				t.Errorf("%s -h does not list %s", c.name, want)
			}
		}
	}
}

// Every flag of the CLI reference (shared/seeds) is parsed and documented.
func TestSeedFlagsCovered(t *testing.T) {
	seeds, _ := filepath.Glob(filepath.Join("..", "shared", "seeds", "*.txt"))
	if len(seeds) == 0 {
		t.Skip("no CLI reference under ../shared/seeds")
	}
	data, err := os.ReadFile(seeds[0])
	if err != nil {
		t.Fatal(err)
	}
	// Each synopsis block starts with "clearml-agent CMD [-h]".
	synopsis := regexp.MustCompile(`(?s)clearml-agent (\w+) \[-h\](.*?)` + "```")
	flagRe := regexp.MustCompile(`\[(--?[A-Za-z][\w-]*)`)
	found := 0
	for _, m := range synopsis.FindAllStringSubmatch(string(data), -1) {
		cmd, body := m[1], m[2]
		inv := mustParse(t, cmd, "-h")
		flags := flagRe.FindAllStringSubmatch(body, -1)
		// --id is required, so the synopsis shows it without brackets.
		if strings.Contains(body, "--id TASK_ID") {
			flags = append(flags, []string{"", "--id"})
		}
		for _, f := range flags {
			found++
			if !strings.Contains(inv.help, f[1]) {
				t.Errorf("%s -h does not list %s from the CLI reference", cmd, f[1])
			}
		}
	}
	if found < 40 {
		t.Fatalf("found only %d flags in the CLI reference; is the synopsis pattern stale?", found)
	}
}

// Any argv gets a parse or a usage error, never a panic.
func FuzzParseCommandLine(f *testing.F) {
	f.Add("daemon\x00--queue\x00a\x00b\x00--gpu\x000,1\x00-d")
	f.Add("-d\x00execute\x00--id\x00x\x00-OO\x00--docker")
	f.Add("--conf\x00x\x00build\x00--id=1\x00--entry-point\x00reuse_task")
	f.Add("daemon\x00--services-mode\x00--stop\x00--uptime\x00--")
	f.Fuzz(func(t *testing.T, argv string) {
		args := strings.Split(argv, "\x00")
		for _, a := range args {
			if strings.HasPrefix(a, "@") {
				return // @file reads the filesystem
			}
		}
		inv, err := parseCommandLine(args)
		if err == nil && inv == nil {
			t.Fatal("nil invocation without an error")
		}
		var ue *usageError
		if err != nil && !errors.As(err, &ue) {
			t.Fatalf("non-usage error %v", err)
		}
	})
}
