package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestProcSetupCmdCancelKillsGroup: cancelling a setup command's context
// kills its whole process group, a background grandchild included, and
// Wait returns at once although the grandchild held the output pipe.
func TestProcSetupCmdCancelKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := setupCmd(ctx, "sh", "-c", `sleep 300 & echo $! > "$1.tmp"; mv "$1.tmp" "$1"; echo started; wait`, "sh", pidFile)
	var out lockedBuffer
	cmd.Stdout = &out // a pipe: the grandchild holds it open too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	if st, ok := readProcStat(cmd.Process.Pid); !ok || st.pgrp != cmd.Process.Pid {
		t.Errorf("not in a process group of its own: %+v", st)
	}
	if st, ok := readProcStat(pid); !ok || st.pgrp != cmd.Process.Pid {
		t.Errorf("the grandchild is not in the command's group: %+v", st)
	}
	start := time.Now()
	cancel()
	if err := cmd.Wait(); err == nil {
		t.Error("Wait succeeded after cancel")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Wait took %v after cancel", d)
	}
	waitGone(t, pid)
}
