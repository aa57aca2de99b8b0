package main

import "golang.org/x/sys/unix"

// The termios requests (init's hidden prompts).
const (
	ioctlGetTermios = unix.TIOCGETA
	ioctlSetTermios = unix.TIOCSETA
)
