package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDetachLog(t *testing.T) {
	dir := t.TempDir()
	f, err := createDaemonLog(mapEnv(map[string]string{"CLEARML_AGENT_TEMP_STDOUT_FILE_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if filepath.Dir(f.Name()) != dir || !regexp.MustCompile(`^\.clearml_agent_daemon_out[a-z0-9_]{8}\.txt$`).MatchString(filepath.Base(f.Name())) {
		t.Errorf("name %s", f.Name())
	}
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if got := fmt.Sprintf(backgroundNotice, f.Name()); got != "Running CLEARML-AGENT daemon in background mode, writing stdout/stderr to "+f.Name()+"\n" {
		t.Errorf("notice %q", got)
	}
}

func TestDetachStripFlag(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"daemon --queue a -d", "daemon --queue a"},
		{"-d daemon --detached --foreground", "-d daemon --foreground"},
		{"--debug daemon -Od --det --de", "--debug daemon -O"},
		{"daemon -dO --downtime x", "daemon -O --downtime x"},
		{"daemon --d --docker img -- -d", "daemon --d --docker img -- -d"},
		{"--config-file c daemon --queue q", "--config-file c daemon --queue q"},
	} {
		if got := strings.Join(stripDetachedFlag(strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDetachChild(t *testing.T) {
	dir := t.TempDir()
	log, err := createDaemonLog(mapEnv(map[string]string{"CLEARML_AGENT_TEMP_STDOUT_FILE_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	d, err := detachExec("/bin/sh", "fake-agent", []string{"-c", `echo "out $0"; echo err >&2; echo "log=$CLEARML_AGENT_DETACHED_LOG"; read x; echo "stdin=[$x]"; exec sleep 60`}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(d.PID, syscall.SIGKILL); <-d.exited }()
	want := "out fake-agent\nerr\nlog=" + log.Name() + "\nstdin=[]\n"
	var got []byte
	waitUntil(func() bool { got, _ = os.ReadFile(log.Name()); return string(got) == want }, 10*time.Second)
	if string(got) != want {
		t.Fatalf("log %q, want %q", got, want)
	}
	st, ok := readProcStat(d.PID)
	me, _ := readProcStat(os.Getpid())
	if !ok || st.session != d.PID || st.session == me.session || st.pgrp != d.PID {
		t.Errorf("child session %d pgrp %d (pid %d, ours %d)", st.session, st.pgrp, d.PID, me.session)
	}

	// It starts once its pid file appears; stop then finds it.
	r := testRegistry(t)
	mustClaim(t, r, d.PID, newWorkerIdentity("", "host", "", false))
	if err := d.waitStarted(r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if found, err := r.stop(nil, newWorkerIdentity("", "host", "", false), &out, 10*time.Second); !found || err != nil {
		t.Fatalf("stop: %v %v %q", found, err, out.String())
	}
	<-d.exited
}

func TestDetachEarlyExit(t *testing.T) {
	log, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	d, err := detachExec("/bin/sh", "sh", []string{"-c", "exit 3"}, log)
	if err != nil {
		t.Fatal(err)
	}
	err = d.waitStarted(testRegistry(t), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("early exit: %v", err)
	}
	// Still starting when the wait ends: no error, the log will tell.
	d, err = detachExec("/bin/sh", "sh", []string{"-c", "exec sleep 60"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(d.PID, syscall.SIGKILL); <-d.exited }()
	if err := d.waitStarted(testRegistry(t), 100*time.Millisecond); err != nil {
		t.Errorf("slow start: %v", err)
	}
}

func TestDetachMarker(t *testing.T) {
	t.Setenv(detachedLogEnv, "/tmp/x.txt")
	if p, ok := takeDetachedMarker(); !ok || p != "/tmp/x.txt" {
		t.Errorf("%q %v", p, ok)
	}
	if _, ok := os.LookupEnv(detachedLogEnv); ok {
		t.Error("marker left in the environment")
	}
	if _, ok := takeDetachedMarker(); ok {
		t.Error("marker found twice")
	}
}

func readDatagram(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestSDNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := newSDNotifier(mapEnv(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}))
	if n == nil || n.watchdog != 20*time.Millisecond {
		t.Fatalf("notifier %+v", n)
	}
	if err := n.ready(); err != nil {
		t.Fatal(err)
	}
	if got := readDatagram(t, c); got != "READY=1" {
		t.Errorf("got %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.watchdogLoop(ctx); close(done) }()
	for i := 0; i < 2; i++ {
		if got := readDatagram(t, c); got != "WATCHDOG=1" {
			t.Errorf("got %q", got)
		}
	}
	cancel()
	<-done
}

func TestSDNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@clearml-agent-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := newSDNotifier(mapEnv(map[string]string{"NOTIFY_SOCKET": name}))
	if err := n.stopping(); err != nil {
		t.Fatal(err)
	}
	if got := readDatagram(t, c); got != "STOPPING=1" {
		t.Errorf("got %q", got)
	}
	n.status("Listening to\nqueue q")
	if got := readDatagram(t, c); got != "STATUS=Listening to queue q" {
		t.Errorf("got %q", got)
	}
	if n.watchdog != 0 {
		t.Error("watchdog without WATCHDOG_USEC")
	}
	n.watchdogLoop(context.Background()) // returns at once
}

func TestSDNotifyOff(t *testing.T) {
	for _, env := range []map[string]string{{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}} {
		if n := newSDNotifier(mapEnv(env)); n != nil {
			t.Errorf("%v: %+v", env, n)
		}
	}
	var n *sdNotifier
	if n.ready() != nil || n.stopping() != nil {
		t.Error("nil notifier failed")
	}
	n.watchdogLoop(context.Background())
	t.Setenv("NOTIFY_SOCKET", "/run/x")
	t.Setenv("WATCHDOG_USEC", "1000")
	if n := takeSDNotifier(); n == nil || n.addr != "/run/x" || n.watchdog == 0 {
		t.Errorf("take: %+v", n)
	}
	for _, k := range sdNotifyEnv {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s left for tasks", k)
		}
	}
	// The watchdog belongs to another process: no pings from us.
	o := newSDNotifier(mapEnv(map[string]string{"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}))
	if o == nil || o.watchdog != 0 {
		t.Errorf("%+v", o)
	}
}
