package main

// Process control for task processes: each task runs in its own process
// group; stopping it is SIGTERM to the group, a grace period, then SIGKILL.
// The agent is a child subreaper, so descendants that escape the group
// (setsid, double fork) are re-parented to it and killed too: no orphans.

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const prSetChildSubreaper = 36

var subreaperOnce sync.Once

// becomeSubreaper makes orphaned descendants re-parent to this process.
func becomeSubreaper() {
	subreaperOnce.Do(func() {
		syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	})
}

// taskProcess is a running task command.
type taskProcess struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited and its output is drained
	exitCode int
	signaled bool // ended by a signal
	waitErr  error
	stopOnce sync.Once
}

// startTaskProcess runs argv in dir with env. stdout and stderr share one
// pipe, so their lines keep the order the task produced them in.
func startTaskProcess(argv []string, dir string, env []string, out io.Writer) (*taskProcess, error) {
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
	// Pdeathsig: if the agent itself is killed, the task does not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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
		p.waitErr = err
		if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			if st.Signaled() {
				p.signaled = true
				p.exitCode = -int(st.Signal())
			} else {
				p.exitCode = st.ExitStatus()
			}
		}
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
// the group and any re-parented descendants.
func (p *taskProcess) stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		killGroup(p.pid(), syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
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

func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		syscall.Kill(-pgid, sig)
	}
}

// reapOrphans SIGKILLs every remaining child of this process that is not
// the agent's own helper (a task's descendant re-parented to us as
// subreaper) and reaps it. Children we still track are left to their owners.
func reapOrphans() {
	// Each reaped orphan's own children re-parent to us in turn: repeat.
	for round := 0; round < 20; round++ {
		found := false
		for _, pid := range childPIDs(os.Getpid()) {
			if trackedChild(pid) {
				continue
			}
			found = true
			syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
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

// childPIDs lists the direct children of ppid from /proc.
func childPIDs(ppid int) []int {
	var out []int
	// /proc/<pid>/task/<tid>/children is exact but needs CONFIG_PROC_CHILDREN;
	// scanning stat files works everywhere.
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parentOf(pid) == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// parentOf reads the parent pid from /proc/<pid>/stat (-1 if unknown).
func parentOf(pid int) int {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return -1
	}
	// The command name is in parentheses and may hold spaces: skip past it.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return -1
	}
	return ppid
}

// processGroupAlive reports whether any process is left in the group.
func processGroupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
