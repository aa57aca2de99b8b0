package main

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// childAgentsFull is the reference's limit on services-mode containers when
// CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD is set: the command (with
// {parent_worker_label} replaced by this worker's container label) prints
// one line per running child, containers of an earlier run of the daemon
// included, and at the limit no task is taken. It sleeps one pace when full.
func (s *scheduler) childAgentsFull(ctx context.Context) bool {
	if s.cfg == nil || !s.opts.child.docker.set || s.maxRun <= 1 {
		return false
	}
	text := firstEnv(s.cfg.env, "CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD")
	if text == "" {
		return false
	}
	n := countChildAgents(ctx, text, s.workerID, s.logf)
	if n < s.maxRun {
		return false
	}
	if s.opts.foreground || s.opts.global.debug {
		s.logf("Reached max number of services %d, sleeping for %.1f seconds", s.maxRun, s.pace.Seconds())
	}
	sleepCtx(ctx, s.pace)
	return true
}

// countChildAgents runs the count command; an error counts 0, as the reference.
func countChildAgents(ctx context.Context, text, workerID string, logf func(string, ...any)) int {
	text = strings.NewReplacer("{parent_worker_label}", dockerLabelParent+"="+workerID, "{{", "{", "}}", "}").Replace(text)
	argv, err := shlexSplit(text)
	if err != nil || len(argv) == 0 {
		logf("Warning: CLEARML_AGENT_CHILD_AGENTS_COUNT_CMD %q is not a command: %v", text, err)
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		logf("Warning: error getting child agents: %v", err)
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}
