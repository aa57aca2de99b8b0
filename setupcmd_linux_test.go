package main

import (
	"context"
	"os"
	"syscall"
	"testing"
)

// TestProcSetupCmdAttributes: own group and, on Linux, SIGKILL on the
// agent's death (the end-to-end tests kill -9 the agent).
func TestProcSetupCmdAttributes(t *testing.T) {
	cmd := setupCmd(context.Background(), "true")
	a := cmd.SysProcAttr
	if a == nil || !a.Setpgid || a.Pdeathsig != syscall.SIGKILL || cmd.Cancel == nil || cmd.WaitDelay <= 0 {
		t.Fatalf("SysProcAttr %+v, Cancel set %v, WaitDelay %v", a, cmd.Cancel != nil, cmd.WaitDelay)
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	// Cancelling after the end is harmless.
	if err := killSetupGroup(cmd); err != nil && err != os.ErrProcessDone {
		t.Errorf("killSetupGroup after exit: %v", err)
	}
}
