package main

// Linux process control: the agent is a child subreaper and a task gets a
// parent-death signal, so neither an escaped descendant nor a task whose
// agent was SIGKILLed outlives it. The process table is /proc.

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

var subreaperOnce sync.Once

// becomeSubreaper makes orphaned descendants re-parent to this process.
func becomeSubreaper() {
	subreaperOnce.Do(func() {
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	})
}

// childSysProcAttr is how the agent starts a task or a child agent: in its
// own process group, and sent deathSig by the kernel if the agent dies.
// Note that Pdeathsig fires when the thread that started the child exits;
// Go only ends threads locked with LockOSThread, which the agent does not
// use around process starts.
func childSysProcAttr(deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
}

// selfExe is this binary for re-running itself; /proc/self/exe still works
// when the file was replaced (an upgrade) while the agent runs.
func selfExe() string { return "/proc/self/exe" }

// escapedDescendants is nil on Linux: the subreaper collects them.
func escapedDescendants(int) []int { return nil }

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

// readProcStat parses /proc/<pid>/stat. The command name is in parentheses
// and may hold spaces and ')': the fields start after the last ')'.
func readProcStat(pid int) (procStat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return procStat{}, false
	}
	var st procStat
	st.state = f[0][0]
	var e1, e2, e3 error
	st.ppid, e1 = strconv.Atoi(f[1])
	st.pgrp, e2 = strconv.Atoi(f[2])
	st.session, e3 = strconv.Atoi(f[3])
	return st, e1 == nil && e2 == nil && e3 == nil
}
