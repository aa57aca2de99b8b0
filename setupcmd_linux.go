package main

import "syscall"

// setupSysProcAttr: a process group of its own, and SIGKILL when the
// agent dies. Pdeathsig follows the thread that started the child; Go ends
// no thread the agent starts processes from (no LockOSThread there).
func setupSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
