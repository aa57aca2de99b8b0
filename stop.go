package main

// The agent's stop protocol: which signal means what, for the daemon, its
// child `execute` processes (in a venv, or in a container) and a
// standalone `execute`.
//
//	daemon    SIGTERM, SIGINT  stop at once: every running task is stopped
//	                           (shutdown), then one unregister, exit 0, within
//	                           about 8 s (docker stop gives 10 s)
//	          SIGQUIT          drain: no new task; exit when the running ones
//	                           end (bounded by agent.shutdown_grace_sec when
//	                           set); SIGTERM/SIGINT during a drain stops now
//	execute   SIGINT           a user's Ctrl-C: stopped, "user abort"
//	          SIGTERM          the agent is shut down (docker stop,
//	                           Kubernetes, systemd): stopped, shutdownReason
//	          SIGUSR1          the same, sent by the daemon when it stops
//	          SIGUSR2          the parent-death signal of every child the
//	                           daemon starts: the daemon died; the task is
//	                           failed with daemonDiedReason. A SIGUSR2 while
//	                           the parent that started us is still there is
//	                           ignored (Go delivers it when the forking
//	                           thread exits, not only the process).
//
// In docker mode the daemon's child is the docker client, whose signal
// proxy passes SIGUSR2 on to the container; the daemon sends the shutdown
// with `docker kill --signal USR1`. Inside, the agent is the container's
// PID 1 (its parent pid is 0), so there a SIGUSR2 always means the agent
// outside died. A tasks.stop abort is not a signal: the monitor sees it.

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

const (
	sigShutdown   = syscall.SIGUSR1 // daemon -> child execute: the agent is shutting down
	sigParentDied = syscall.SIGUSR2 // Pdeathsig of the daemon's children
	sigDrain      = syscall.SIGQUIT // to the daemon: finish the running tasks, take no new one
)

// stopCause is why the agent stops a task that did not end by itself.
type stopCause int

const (
	stopNone     stopCause = iota
	stopUser               // SIGINT to execute: the user's Ctrl-C
	stopShutdown           // the agent is shut down (SIGTERM, or SIGUSR1 from the daemon)
	stopDaemonDied
)

// Bounds of a stop at once (daemon SIGTERM, execute SIGTERM/SIGUSR1): the
// task gets shutdownTaskGrace (at most agent.abort_grace_period_sec) to
// exit before SIGKILL, its console shutdownFlushBudget to be delivered;
// the daemon kills a child still there after shutdownChildWait. Together
// with unregistering they fit in 8 s. Variables so tests can shorten them.
var (
	shutdownTaskGrace   = 4 * time.Second
	shutdownFlushBudget = 2 * time.Second
	shutdownChildWait   = 6500 * time.Millisecond
)

// notifyStopSignals routes the signals execute acts on to c.
func notifyStopSignals(c chan<- os.Signal) {
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, sigShutdown, sigParentDied)
}

// stopCauseOf says what a signal to execute means; stopNone for a
// parent-death signal while the parent that started us (ppid, as read at
// start) is still our parent.
func stopCauseOf(sig os.Signal, ppid int) stopCause {
	switch sig {
	case syscall.SIGINT:
		return stopUser
	case syscall.SIGTERM, sigShutdown:
		return stopShutdown
	case sigParentDied:
		if ppid > 0 && os.Getppid() == ppid {
			return stopNone
		}
		return stopDaemonDied
	}
	return stopNone
}

// signalFor is the signal (docker kill --signal) that passes cause on to
// the agent in a container.
func (c stopCause) signalFor() string {
	switch c {
	case stopUser:
		return "INT"
	case stopDaemonDied:
		return "USR2"
	}
	return "USR1"
}

// taskGrace is how long a task stopped for c may take before SIGKILL.
func (c stopCause) taskGrace(abortGrace time.Duration) time.Duration {
	if c == stopShutdown {
		return min(abortGrace, shutdownTaskGrace)
	}
	return abortGrace
}

// logLine is the console line that says why the agent stops the task.
func (c stopCause) logLine(sig os.Signal) string {
	switch {
	case c == stopShutdown && sig == sigShutdown:
		return "clearml-agent is shutting down (the daemon was stopped)"
	case c == stopShutdown:
		return "clearml-agent is shutting down (" + sig.String() + ")"
	case c == stopDaemonDied:
		return "the clearml-agent daemon died"
	}
	return "clearml-agent received " + sig.String()
}

// exit is execute's exit status for a run stopped for c: 254 for an
// interruption, as the reference (a Python KeyboardInterrupt), 1 when the
// daemon died.
func (c stopCause) exit() error {
	if c == stopDaemonDied {
		return &exitError{code: 1}
	}
	return &exitError{code: 254}
}

// stopRequest is the first signal that stops a run: its cause (for the
// final status) and the signal (for the log).
type stopRequest struct {
	once  sync.Once
	c     chan struct{}
	quit  chan struct{}
	cause stopCause
	sig   os.Signal
}

// watchStopSignals turns the signals on sigs into one stop request, until
// close. A spurious parent-death signal (ppid still our parent) is ignored.
func watchStopSignals(sigs <-chan os.Signal, ppid int) *stopRequest {
	r := &stopRequest{c: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		for {
			select {
			case <-r.quit:
				return
			case s := <-sigs:
				if cause := stopCauseOf(s, ppid); cause != stopNone {
					r.set(cause, s)
				}
			}
		}
	}()
	return r
}

func (r *stopRequest) set(cause stopCause, sig os.Signal) {
	r.once.Do(func() {
		r.cause, r.sig = cause, sig
		close(r.c)
	})
}

// requested is closed once a stop was requested.
func (r *stopRequest) requested() <-chan struct{} { return r.c }

// get is the request's cause and signal; stopNone when there is none yet.
func (r *stopRequest) get() (stopCause, os.Signal) {
	select {
	case <-r.c:
		return r.cause, r.sig
	default:
		return stopNone, nil
	}
}

// close ends the watcher (once).
func (r *stopRequest) close() {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
}
