package main

// Process control for task processes: each task runs in its own process
// group; stopping it is SIGINT to a Python task's main process or SIGTERM
// to a shell task's group, a grace period, then SIGKILL.
// On Linux the agent is a child subreaper, so descendants that escape the
// group (setsid, double fork) are re-parented to it and killed too: no
// orphans. macOS has no subreaper: there the descendants still attached to
// the task are found by walking the process table before the group is
// killed (proc_darwin.go). Exit codes read as Python's Popen.returncode
// (negative signal number when killed by a signal); exitCodeOf is the one
// decoder. The per-OS parts (process table, subreaper, parent-death signal)
// are in proc_linux.go and proc_darwin.go.

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// taskProcess is a running task command.
type taskProcess struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited and its output is drained
	exitCode int
	stopOnce sync.Once
}

// startTaskProcess runs argv in dir with env. stdout and stderr share one
// pipe, so their lines keep the order the task produced them in.
func startTaskProcess(argv []string, dir string, env []string, out io.Writer, runAs ...*syscall.Credential) (*taskProcess, error) {
	becomeSubreaper()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = w, w
	// If the agent itself is killed, the task does not outlive it (Linux).
	cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL)
	if len(runAs) > 0 && runAs[0] != nil {
		cmd.SysProcAttr.Credential = runAs[0] // CLEARML_AGENT_EXEC_USER
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	trackChild(cmd.Process.Pid)
	p := &taskProcess{cmd: cmd, done: make(chan struct{})}
	copied := make(chan struct{})
	go func() {
		io.Copy(out, r)
		r.Close()
		close(copied)
	}()
	go func() {
		err := cmd.Wait()
		untrackChild(cmd.Process.Pid)
		p.exitCode = exitCodeOf(err)
		// The leader is gone: whatever it left behind goes too. This also
		// closes any inherited copy of the pipe, so the copy can finish.
		killGroup(cmd.Process.Pid, syscall.SIGKILL)
		reapOrphans()
		<-copied
		close(p.done)
	}()
	return p, nil
}

// pid is the task's process (and process group) id.
func (p *taskProcess) pid() int { return p.cmd.Process.Pid }

// stop asks the group to end (SIGTERM), waits up to grace, then SIGKILLs
// the group and any re-parented descendants: shell tasks and containers.
func (p *taskProcess) stop(grace time.Duration) { p.stopWith(false, grace) }

// interruptAfter is how long a Python task has to exit on SIGINT before
// its main process also gets SIGTERM (a script that swallows
// KeyboardInterrupt). A variable so tests can shorten it.
var interruptAfter = 2 * time.Second

// stopPython stops a Python task the way that lets the ClearML SDK keep
// what the task reported: SIGINT to the main process only (a
// KeyboardInterrupt: the SDK's exit hooks flush its events while its
// reporter subprocess is still alive), SIGTERM to the main process after
// interruptAfter, SIGKILL to the whole tree at grace. A SIGTERM to the
// group would kill the reporter first while the SDK's main process ignores
// SIGTERM. When the main process exits the rest of the group is killed
// (startTaskProcess), so a plain script stops as fast as with SIGTERM.
func (p *taskProcess) stopPython(grace time.Duration) { p.stopWith(true, grace) }

func (p *taskProcess) stopWith(interrupt bool, grace time.Duration) {
	p.stopOnce.Do(func() {
		escaped := escapedDescendants(p.pid())
		defer killPIDs(escaped, syscall.SIGKILL)
		kill := time.NewTimer(grace)
		defer kill.Stop()
		if interrupt {
			unix.Kill(p.pid(), unix.SIGINT)
			term := time.NewTimer(min(interruptAfter, grace))
			defer term.Stop()
			select {
			case <-p.done:
				return
			case <-term.C:
				unix.Kill(p.pid(), unix.SIGTERM)
			}
		} else {
			killGroup(p.pid(), syscall.SIGTERM)
			killPIDs(escaped, syscall.SIGTERM)
		}
		select {
		case <-p.done:
		case <-kill.C:
			killGroup(p.pid(), syscall.SIGKILL)
			reapOrphans()
		}
	})
}

// wait blocks until the task has exited and returns its exit code
// (negative signal number when killed by a signal, as Python's Popen).
func (p *taskProcess) wait() int {
	<-p.done
	return p.exitCode
}

// exitCodeOf decodes what exec.Cmd.Wait returned as Python's
// Popen.returncode: 0 for nil, the exit status, the negative signal number
// for a process killed by a signal, and -1 when there is no exit status
// (the process could not be started or waited for).
func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1
	}
	if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		return -int(st.Signal())
	}
	return ee.ExitCode()
}

func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		unix.Kill(-pgid, sig)
	}
}

// killPIDs signals each process of pids (from escapedDescendants).
func killPIDs(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		if pid > 1 {
			unix.Kill(pid, sig)
		}
	}
}

// reapOrphans SIGKILLs every remaining child of this process that is not
// the agent's own helper (on Linux, a task's descendant re-parented to us
// as subreaper) and reaps it. Children we still track are left to their
// owners.
func reapOrphans() {
	// Each reaped orphan's own children re-parent to us in turn: repeat.
	for round := 0; round < 20; round++ {
		found := false
		for _, pid := range childPIDs(os.Getpid()) {
			if trackedChild(pid) {
				continue
			}
			found = true
			unix.Kill(pid, unix.SIGKILL)
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, 0, nil)
		}
		if !found {
			return
		}
	}
}

// trackedPIDs are children started through exec.Cmd that someone waits for.
var trackedPIDs sync.Map

func trackChild(pid int)        { trackedPIDs.Store(pid, true) }
func untrackChild(pid int)      { trackedPIDs.Delete(pid) }
func trackedChild(pid int) bool { _, ok := trackedPIDs.Load(pid); return ok }

// parentOf is the parent pid of pid (-1 if unknown).
func parentOf(pid int) int {
	st, ok := readProcStat(pid)
	if !ok {
		return -1
	}
	return st.ppid
}

// procStat is what the agent reads of a process: from /proc/<pid>/stat on
// Linux, from the kern.proc sysctl on macOS.
type procStat struct {
	state   byte // R, S, D, Z (zombie), X (dead), ...
	ppid    int
	pgrp    int
	session int
}

// processGroupAlive reports whether any process is left in the group.
func processGroupAlive(pgid int) bool {
	err := unix.Kill(-pgid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
