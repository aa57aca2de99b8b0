package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the copier goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
		var out syncBuffer
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
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
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
	var out syncBuffer
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
	var out syncBuffer
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
	var out syncBuffer
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
