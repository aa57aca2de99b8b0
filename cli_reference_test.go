package main

import (
	"strings"
	"testing"
	"time"
)

// referenceFlags are the options of the reference's argparse tables
// (clearml_agent/interface/worker.py and base.py of 3.0.3, unchanged since):
// every one must parse here.
var referenceFlags = map[string][]string{
	"": {"--version", "--config-file", "--debug", "-d"},
	"execute": {"--id", "--log-file", "--disable-monitoring", "--full-monitoring", "--require-queue",
		"--standalone-mode", "--docker", "--clone", "-O", "--git-user", "--git-pass", "--log-level", "--gpus", "--cpu-only"},
	"build": {"--id", "--target", "--install-globally", "--docker", "--force-docker", "--python-version",
		"--entry-point", "-O", "--git-user", "--git-pass", "--log-level", "--gpus", "--cpu-only"},
	"daemon": {"--polling-interval", "--foreground", "--podman", "--docker", "--force-current-version", "--queue",
		"--order-fairness", "--standalone-mode", "--services-mode", "--child-report-tags", "--create-queue",
		"--detached", "-d", "--stop", "--dynamic-gpus", "--uptime", "--downtime", "--status", "--check-bootstrap",
		"--use-owner-token", "-O", "--git-user", "--git-pass", "--log-level", "--gpus", "--cpu-only"},
	"list":              nil,
	"config":            nil,
	"init":              nil,
	"install-bootstrap": {"--check", "--force", "--version", "--from-file"},
}

// pendingFlags are reference flags another issue adds (--podman: docker).
var pendingFlags = map[string]string{"daemon --podman": "issue 14 (docker engineer)"}

func TestCLIReferenceFlags(t *testing.T) {
	known := map[string]bool{}
	for _, c := range commands {
		known[c.name] = true
	}
	for cmd, flags := range referenceFlags {
		table := newFlagTable(progName)
		if cmd == "" {
			var g globalOpts
			var version bool
			g.register(table, &version)
		} else {
			if !known[cmd] {
				t.Errorf("command %q of the reference is missing", cmd)
				continue
			}
			for _, c := range commands {
				if c.name == cmd {
					c.new().flags(table)
				}
			}
		}
		for _, f := range flags {
			name := strings.TrimLeft(f, "-")
			_, short := table.shorts[name]
			if table.fs.Lookup(name) != nil || len(name) == 1 && short {
				continue
			}
			if why, ok := pendingFlags[cmd+" "+f]; ok {
				t.Logf("%s %s: not registered yet (%s)", cmd, f, why)
				continue
			}
			t.Errorf("%s: the reference's %s is not accepted", orNone(cmd), f)
		}
	}
}

func TestCLIInstallBootstrap(t *testing.T) {
	for _, args := range [][]string{
		{"install-bootstrap"},
		{"install-bootstrap", "--check", "--force", "--version", "v0.3.0", "--from-file", "/tmp/x.whl"},
	} {
		r := runAgent(t, nil, args...)
		if r.code != 0 || r.stdout != bootstrapNotNeeded+"\n" || r.stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 0 and the one line", args, r.code, r.stdout, r.stderr)
		}
	}
	r := runAgent(t, nil, "install-bootstrap", "--bogus")
	if r.code != 2 {
		t.Errorf("an unknown flag: exit %d, want 2", r.code)
	}
	if h := runAgent(t, nil, "-h"); !strings.Contains(h.stdout, "install-bootstrap") {
		t.Errorf("-h does not list install-bootstrap:\n%s", h.stdout)
	}
}

func TestDaemonCheckBootstrap(t *testing.T) {
	s := startServer(t)
	p := startDaemon(t, serverEnv(s), "--queue", "default", "--check-bootstrap")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), "Listening to queues") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	p.stop(t)
	out := p.out.String()
	if strings.Count(out, bootstrapNotNeeded) != 1 {
		t.Errorf("--check-bootstrap: want the one line once; output:\n%s", out)
	}
}
