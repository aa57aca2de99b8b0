package main

// Setup subprocesses: what the agent runs to prepare a task (git, python
// and pip for venvs, the docker CLI, build scripts) starts through
// setupCmd. Each runs in its own process group and, on Linux, gets SIGKILL
// from the kernel when the agent dies (childSysProcAttr), so a killed
// agent leaves no pip writing into a venv-cache entry that the next run
// rebuilds. Cancelling the context kills the whole group, not just the
// leader: pip building an sdist, or git running ssh, has children of its own.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// setupWaitDelay bounds the wait for a cancelled command's output pipes,
// which a grandchild outside the group could hold open.
const setupWaitDelay = 5 * time.Second

// setupCmd is exec.CommandContext for a setup subprocess.
func setupCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL)
	cmd.Cancel = func() error { return killSetupGroup(cmd) }
	cmd.WaitDelay = setupWaitDelay
	return cmd
}

// killSetupGroup SIGKILLs the command's process group (its pid: Setpgid).
func killSetupGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil || cmd.Process.Pid <= 0 {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
