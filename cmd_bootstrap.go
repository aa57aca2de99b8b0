package main

import "fmt"

// installBootstrapCmd is the reference's install-bootstrap: it installs
// clearml-agent-bootstrap, a prebuilt agent and Python manager that cuts a
// task's start-up time. This agent is that already (one static binary,
// mounted into containers as it is), so the command accepts the
// reference's flags, installs nothing and says so.
type installBootstrapCmd struct {
	check    bool
	force    bool
	version  string
	fromFile string
}

func (b *installBootstrapCmd) flags(t *flagTable) {
	t.boolVar(&b.check, "check", "", "Preview what would be installed without making changes")
	t.boolVar(&b.force, "force", "", "Force reinstall even if already installed")
	t.stringVar(&b.version, "version", "VERSION", "Install a specific release version (e.g. v0.3.0)")
	t.stringVar(&b.fromFile, "from-file", "FROM_FILE", "Install from a local .whl file instead of downloading a release")
}

// bootstrapNotNeeded is the one line install-bootstrap and
// daemon --check-bootstrap answer with.
const bootstrapNotNeeded = "clearml-agent-bootstrap is not needed: this agent is a single static binary that starts tasks without it; nothing to install or check"

func (b *installBootstrapCmd) run(cx *cmdContext) error {
	_, err := fmt.Fprintln(cx.stdout, bootstrapNotNeeded)
	return err
}
