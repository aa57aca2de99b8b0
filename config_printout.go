package main

import (
	"fmt"
	"io"
	"strings"
)

// printConfiguration writes the reference's start-up printout of daemon,
// execute and build: the effective configuration, one "key = value" line
// per leaf, sanitized as `config` shows it (agent.sanitize_config_printout
// and the credentials' values), so a task's log says what its agent ran with.
// `config` prints the same text.
func printConfiguration(w io.Writer, cfg *agentConfig) error {
	location := cfg.location
	if location == "" {
		location = "None"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Current configuration (clearml_agent v%s, location: %s):\n----------------------\n", agentVersion, location)
	writeConfigProperties(&b, cfg)
	b.WriteString("\n\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// preamble is what execute says and sets up before the task's setup: the
// configuration printout, and the abort command (CLEARML_AGENT_ABORT_CALLBACK_CMD).
func (x *execution) preamble() {
	printConfiguration(x.log, x.cfg)
	if !x.opts.disableMonitoring && x.rank == 0 {
		x.abortCmd = newAbortCommand(x.cfg.env, x.log)
	}
}
