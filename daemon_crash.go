package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"time"
)

// runGuarded is the poll loop as the reference's daemon runs it: an
// internal error (a panic) is logged as FATAL ERROR with its stack and
// saved to a .clearml_agent-crash*.log file, and the loop starts again a
// second later; with agent.crash_on_exception the daemon stops instead
// (drained and unregistered, exit code 1).
func (s *scheduler) runGuarded(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.runRecovered(ctx)
		if err == nil {
			return
		}
		s.logf("FATAL ERROR:\n%v", err)
		if s.cfg.boolean("agent.crash_on_exception", false) {
			s.mu.Lock()
			s.crashErr = err
			s.mu.Unlock()
			if s.onCrash != nil {
				s.onCrash()
			} else {
				syscall.Kill(os.Getpid(), syscall.SIGTERM) // serve drains and unregisters
			}
			return
		}
		if f, ferr := os.CreateTemp(tempDirFor(s.cfg), ".clearml_agent-crash*.log"); ferr == nil {
			fmt.Fprintf(f, "%v\n", err)
			f.Close()
			s.logf("The crash is saved in %s; the daemon goes on (agent.crash_on_exception: true stops it instead)", f.Name())
		}
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

// runRecovered runs the loop once; a panic comes back as an error with its stack.
func (s *scheduler) runRecovered(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v\n%s", r, debug.Stack())
		}
	}()
	s.run(ctx)
	return nil
}

// crashError is the daemon's exit after a crash that stopped it.
func (s *scheduler) crashError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.crashErr == nil {
		return nil
	}
	return &exitError{code: 1, msg: "the daemon stopped on an internal error (agent.crash_on_exception is set; see FATAL ERROR in its log)"}
}
