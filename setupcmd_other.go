//go:build unix && !linux

package main

import "syscall"

// setupSysProcAttr: a process group of its own. There is no parent-death
// signal outside Linux: a SIGKILLed agent leaves its setup commands running.
func setupSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
