package main

// macOS process control. There is no child subreaper and no parent-death
// signal: instead, before a task's group is signalled, the descendants
// that left the group (setsid) but are still in its process tree are
// collected from the kern.proc sysctl and signalled too, and the agent's
// own SIGINT/SIGTERM handling stops its tasks. A SIGKILLed agent leaves
// its tasks running on macOS (on Linux they get SIGKILL from the kernel).

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func becomeSubreaper() {}

// childSysProcAttr: the task's own process group; deathSig has no macOS
// equivalent and is ignored.
func childSysProcAttr(syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// selfExe is this binary for re-running itself.
func selfExe() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// darwinProcStates maps kinfo_proc's p_stat (SIDL..SZOMB) to the letters
// of Linux's /proc/<pid>/stat.
var darwinProcStates = map[int8]byte{1: 'I', 2: 'R', 3: 'S', 4: 'T', 5: 'Z'}

func readProcStat(pid int) (procStat, bool) {
	if pid <= 0 {
		return procStat{}, false
	}
	k, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil || int(k.Proc.P_pid) != pid {
		return procStat{}, false
	}
	st := procStat{state: darwinProcStates[k.Proc.P_stat], ppid: int(k.Eproc.Ppid), pgrp: int(k.Eproc.Pgid)}
	if st.state == 0 {
		st.state = '?'
	}
	st.session, _ = unix.Getsid(pid)
	return st, true
}

// processTable lists every process as pid -> (parent, group).
func processTable() map[int][2]int {
	procs, err := unix.SysctlKinfoProcSlice("kern.proc.all")
	if err != nil {
		return nil
	}
	m := make(map[int][2]int, len(procs))
	for i := range procs {
		m[int(procs[i].Proc.P_pid)] = [2]int{int(procs[i].Eproc.Ppid), int(procs[i].Eproc.Pgid)}
	}
	return m
}

func childPIDs(ppid int) []int {
	var out []int
	for pid, pg := range processTable() {
		if pg[0] == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// escapedDescendants lists the processes below root that are not in root's
// process group (killGroup misses them).
func escapedDescendants(root int) []int {
	table := processTable()
	children := map[int][]int{}
	for pid, pg := range table {
		children[pg[0]] = append(children[pg[0]], pid)
	}
	var out []int
	queue := []int{root}
	seen := map[int]bool{root: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if seen[c] {
				continue
			}
			seen[c] = true
			queue = append(queue, c)
			if table[c][1] != root {
				out = append(out, c)
			}
		}
	}
	return out
}
