package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTaskProcessExitCodesAndOutput(t *testing.T) {
	for _, tt := range []struct {
		script string
		code   int
		out    string
	}{
		{"echo out; echo err >&2; echo out2", 0, "out\nerr\nout2\n"},
		{"exit 3", 3, ""},
		{"kill -9 $$", -9, ""},
	} {
		var out lockedBuffer
		p, err := startTaskProcess([]string{"sh", "-c", tt.script}, t.TempDir(), os.Environ(), &out)
		if err != nil {
			t.Fatal(err)
		}
		if code := p.wait(); code != tt.code || out.String() != tt.out {
			t.Errorf("%q: code %d output %q, want %d %q", tt.script, code, out.String(), tt.code, tt.out)
		}
	}
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.state != 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 500 && pidAlive(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if pidAlive(pid) {
		t.Errorf("process %d is still alive", pid)
	}
}

// readPID waits for a child to write its pid into file.
func readPID(t *testing.T, file string) int {
	t.Helper()
	for i := 0; i < 500; i++ {
		if data, err := os.ReadFile(file); err == nil && strings.HasSuffix(string(data), "\n") {
			pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err == nil {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", file)
	return 0
}

// SIGTERM first: a task that exits on TERM ends with that signal, and its
// children in the group go with it.
func TestTaskProcessStopGraceful(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	var out lockedBuffer
	p, err := startTaskProcess([]string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}, dir, os.Environ(), &out)
	if err != nil {
		t.Fatal(err)
	}
	child := readPID(t, pidFile)
	p.stop(5 * time.Second)
	if code := p.wait(); code != -int(syscall.SIGTERM) {
		t.Errorf("exit code %d, want -15", code)
	}
	waitGone(t, child)
}

// A task that ignores SIGTERM is killed after the grace period, and a
// grandchild that left the process group (setsid) is killed too.
func TestTaskProcessStopKillsStubbornAndEscaped(t *testing.T) {
	dir := t.TempDir()
	escaped := filepath.Join(dir, "escaped.pid")
	script := "trap '' TERM; setsid sh -c 'echo $$ > " + escaped + "; exec sleep 60' & sleep 60; wait"
	var out lockedBuffer
	p, err := startTaskProcess([]string{"sh", "-c", script}, dir, os.Environ(), &out)
	if err != nil {
		t.Fatal(err)
	}
	esc := readPID(t, escaped)
	p.stop(200 * time.Millisecond)
	if code := p.wait(); code != -int(syscall.SIGKILL) {
		t.Errorf("exit code %d, want -9", code)
	}
	waitGone(t, esc)
	if processGroupAlive(p.pid()) {
		t.Error("the task's process group is still alive")
	}
}

// A task that exits normally but leaves a daemonized child behind: the
// child is killed when the task ends.
func TestTaskProcessReapsLeftovers(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, "left.pid")
	var out lockedBuffer
	p, err := startTaskProcess([]string{"sh", "-c", "setsid sh -c 'echo $$ > " + left + "; exec sleep 60' >/dev/null 2>&1 & sleep 0.2; exit 0"}, dir, os.Environ(), &out)
	if err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, left)
	if code := p.wait(); code != 0 {
		t.Errorf("exit code %d", code)
	}
	waitGone(t, pid)
}

// exitCodeOf reads a Wait error as Python's Popen.returncode.
func TestProcExitCodeOf(t *testing.T) {
	for _, tt := range []struct {
		script string
		code   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"exit 255", 255},
		{"kill -9 $$", -9},
		{"kill -TERM $$", -15},
	} {
		if code := exitCodeOf(exec.Command("sh", "-c", tt.script).Run()); code != tt.code {
			t.Errorf("%q: %d, want %d", tt.script, code, tt.code)
		}
	}
	// Never started: no exit status.
	if code := exitCodeOf(exec.Command(filepath.Join(t.TempDir(), "missing")).Run()); code != -1 {
		t.Errorf("missing program: %d, want -1", code)
	}
	if code := exitCodeOf(fmt.Errorf("wrapped: %w", exec.Command("sh", "-c", "exit 4").Run())); code != 4 {
		t.Errorf("wrapped: %d, want 4", code)
	}
}

// readProcStat finds the fields after a command name holding spaces and
// ')', and parentOf and the state come from it.
func TestProcStatOddName(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a) b (c")
	if err := os.WriteFile(odd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run a copy of sleep from the temp dir: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, ok := readProcStat(cmd.Process.Pid)
	if !ok || st.ppid != os.Getpid() || st.pgrp != cmd.Process.Pid || st.state == 'Z' {
		t.Errorf("stat %+v %v (pid %d, ours %d)", st, ok, cmd.Process.Pid, os.Getpid())
	}
	if got := parentOf(cmd.Process.Pid); got != os.Getpid() {
		t.Errorf("parentOf %d, want %d", got, os.Getpid())
	}
	if !slices.Contains(childPIDs(os.Getpid()), cmd.Process.Pid) {
		t.Errorf("childPIDs misses %d", cmd.Process.Pid)
	}
	if _, ok := readProcStat(-1); ok {
		t.Error("stat of pid -1")
	}
	if parentOf(-1) != -1 {
		t.Error("parent of pid -1")
	}
}

// TestCrossBuildDarwin: the agent builds for macOS (amd64 and arm64), its
// tests included (go vet type-checks them).
func TestCrossBuildDarwin(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no go tool on CI")
		}
		t.Skip("no go tool: cannot cross-compile")
	}
	for _, arch := range []string{"arm64", "amd64"} {
		cmd := exec.Command(goBin, "vet", ".")
		cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH="+arch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=darwin GOARCH=%s go vet .: %v\n%s", arch, err, out)
		}
	}
}
