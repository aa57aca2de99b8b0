package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testRegistry(t *testing.T) *instanceRegistry {
	t.Helper()
	return &instanceRegistry{dir: t.TempDir()}
}

func mustClaim(t *testing.T, r *instanceRegistry, pid int, id workerIdentity) *agentInstance {
	t.Helper()
	in, err := r.claimFor(pid, id.idFor, []string{"daemon", "--queue", "q"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.release)
	return in
}

func liveIDs(t *testing.T, r *instanceRegistry) []string {
	t.Helper()
	live, err := r.list()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range live {
		ids = append(ids, fmt.Sprintf("%d=%s", in.Slot, in.WorkerID))
	}
	return ids
}

func TestInstanceSlots(t *testing.T) {
	r := testRegistry(t)
	host := newWorkerIdentity("", "myhost", "", false)
	a := mustClaim(t, r, os.Getpid(), host)
	b := mustClaim(t, r, os.Getpid(), host)
	c := mustClaim(t, r, os.Getpid(), host)
	if a.WorkerID != "myhost:0" || b.WorkerID != "myhost:1" || c.WorkerID != "myhost:2" {
		t.Fatalf("ids %s %s %s", a.WorkerID, b.WorkerID, c.WorkerID)
	}
	b.release()
	b.release() // idempotent
	if got := liveIDs(t, r); !reflect.DeepEqual(got, []string{"0=myhost:0", "2=myhost:2"}) {
		t.Fatalf("after release: %v", got)
	}
	if d := mustClaim(t, r, os.Getpid(), host); d.WorkerID != "myhost:1" {
		t.Errorf("lowest free slot: got %s", d.WorkerID)
	}

	// The slot is machine-global (reference, observed): with host:gpu0 on
	// slot 0 and host:cpu:1 running, a new --cpu-only agent is host:cpu:2.
	r2 := testRegistry(t)
	mustClaim(t, r2, os.Getpid(), newWorkerIdentity("", "host", "0", false))
	mustClaim(t, r2, os.Getpid(), newWorkerIdentity("", "host", "none", false))
	if e := mustClaim(t, r2, os.Getpid(), newWorkerIdentity("", "host", "none", false)); e.WorkerID != "host:cpu:2" {
		t.Errorf("global slot: got %s", e.WorkerID)
	}

	// The pid file: 0600, JSON with id, slot, pid and argv.
	path := filepath.Join(r.dir, "agent-2.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	var got agentInstance
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.WorkerID != "myhost:2" || got.Slot != 2 || got.PID != os.Getpid() || !reflect.DeepEqual(got.Argv, []string{"daemon", "--queue", "q"}) || got.Started.IsZero() {
		t.Errorf("pid file %s", data)
	}
}

func TestInstanceDuplicate(t *testing.T) {
	r := testRegistry(t)
	fixed := newWorkerIdentity("fixed:id", "host", "", false)
	mustClaim(t, r, os.Getpid(), fixed)
	_, err := r.claim(fixed.idFor, nil)
	var dup *errDuplicateWorker
	if !errors.As(err, &dup) || err.Error() != "Instance with the same WORKER_ID [fixed:id] is already running" {
		t.Fatalf("duplicate: %v", err)
	}
	if code := exitCodeOf(err); code != 1 {
		t.Errorf("exit status %d", code)
	}

	// A slot id that a fixed id already uses moves to the next slot.
	mustClaim(t, r, os.Getpid(), newWorkerIdentity("host:1", "x", "", false))
	if in := mustClaim(t, r, os.Getpid(), newWorkerIdentity("", "host", "", false)); in.WorkerID != "host:2" || in.Slot != 2 {
		t.Errorf("got %s on slot %d", in.WorkerID, in.Slot)
	}

	// Host-mount mode (shared folder between containers) only warns.
	var warn bytes.Buffer
	r.allowDuplicate, r.warn = true, &warn
	in := mustClaim(t, r, os.Getpid(), fixed)
	if in.WorkerID != "fixed:id" || !strings.Contains(warn.String(), "Instance with the same WORKER_ID [fixed:id] was found") {
		t.Errorf("host mount: %s, %q", in.WorkerID, warn.String())
	}
}

// exitCodeOf is what run() turns err into.
func exitCodeOf(err error) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

func TestInstanceStale(t *testing.T) {
	r := testRegistry(t)
	host := newWorkerIdentity("", "host", "", false)
	a := mustClaim(t, r, os.Getpid(), host)
	mustClaim(t, r, os.Getpid(), host)
	// The owner dies: its descriptor, and so its lock, goes; the file stays.
	a.file.Close()
	if _, err := os.Stat(a.path); err != nil {
		t.Fatal(err)
	}
	// Garbage: an unlocked pid file and an abandoned claim are removed; a
	// locked file with bad content keeps its slot.
	writeFile(t, filepath.Join(r.dir, "agent-5.json"), "junk")
	writeFile(t, filepath.Join(r.dir, ".claim-123"), "junk")
	locked := writeFile(t, filepath.Join(r.dir, "agent-3.json"), "junk")
	f, err := os.Open(locked)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(t, r); !reflect.DeepEqual(got, []string{"1=host:1", "3="}) {
		t.Errorf("live: %v", got)
	}
	for _, name := range []string{"agent-0.json", "agent-5.json", ".claim-123"} {
		if _, err := os.Stat(filepath.Join(r.dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s not cleaned: %v", name, err)
		}
	}
	if in := mustClaim(t, r, os.Getpid(), host); in.Slot != 0 {
		t.Errorf("slot %d, want the freed 0", in.Slot)
	}
	if in := mustClaim(t, r, os.Getpid(), host); in.Slot != 2 {
		t.Errorf("slot %d, want 2 (3 is held)", in.Slot)
	}

	// A real process that held the lock and died.
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("no flock(1)")
	}
	dead := filepath.Join(r.dir, "agent-9.json")
	writeFile(t, dead, `{"worker_id":"host:9","slot":9}`)
	if err := exec.Command(flock, "-x", dead, "true").Run(); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(t, r); strings.Contains(strings.Join(got, " "), "host:9") {
		t.Errorf("dead holder still listed: %v", got)
	}
}

func TestInstanceRefresh(t *testing.T) {
	r := testRegistry(t)
	in := mustClaim(t, r, os.Getpid(), newWorkerIdentity("", "host", "", false))
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(in.path, old, old)
	if err := in.refresh(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(in.path); !fi.ModTime().After(old.Add(time.Hour)) {
		t.Error("refresh did not touch the file")
	}
	os.Remove(in.path) // a temp cleaner
	if err := in.refresh(); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(t, r); !reflect.DeepEqual(got, []string{"0=host:0"}) {
		t.Errorf("after re-creation: %v", got)
	}
	in.release()
	if err := in.refresh(); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(t, r); len(got) != 0 {
		t.Errorf("after release: %v", got)
	}
}

func TestInstanceDir(t *testing.T) {
	uid := strconv.Itoa(os.Getuid())
	for _, tt := range []struct {
		env  map[string]string
		dir  string
		host bool
	}{
		{map[string]string{"CLEARML_AGENT_RUNTIME_DIR": "/x/y", "CLEARML_AGENT_DOCKER_HOST_MOUNT": "/a:/b"}, "/x/y", false},
		{map[string]string{"CLEARML_AGENT_DOCKER_HOST_MOUNT": "/host/tmp:/mnt/tmp"}, "/mnt/tmp", true},
		{map[string]string{"TRAINS_AGENT_K8S_HOST_MOUNT": "/only"}, "/only", true},
		{map[string]string{"TMPDIR": "/scratch"}, "/scratch/clearml-agent-" + uid, false},
		{map[string]string{}, "/tmp/clearml-agent-" + uid, false},
	} {
		dir, host := instancesDir(mapEnv(tt.env))
		if dir != tt.dir || host != tt.host {
			t.Errorf("%v: %s %v", tt.env, dir, host)
		}
	}

	tmp := t.TempDir()
	r, err := openInstanceRegistry(mapEnv(map[string]string{"TMPDIR": tmp}))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(r.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v %v", r.dir, fi.Mode(), err)
	}
	// Someone else's (or a shared) folder in /tmp is refused.
	os.Chmod(r.dir, 0o777)
	if _, err := openInstanceRegistry(mapEnv(map[string]string{"TMPDIR": tmp})); err == nil {
		t.Error("world-writable runtime dir accepted")
	}
	os.Chmod(r.dir, 0o700)
	os.Remove(r.dir)
	os.Symlink(tmp, r.dir)
	if _, err := openInstanceRegistry(mapEnv(map[string]string{"TMPDIR": tmp})); err == nil {
		t.Error("symlinked runtime dir accepted")
	}
	r, err = openInstanceRegistry(mapEnv(map[string]string{"CLEARML_AGENT_DOCKER_HOST_MOUNT": "x:" + tmp + "/shared"}))
	if err != nil || !r.allowDuplicate {
		t.Errorf("host mount: %v", err)
	}
}

func TestInstanceWorkerIdentity(t *testing.T) {
	for _, tt := range []struct {
		id, name, visible string
		dynamic           bool
		want              string
	}{
		{"", "myhost", "", false, "myhost:3"},
		{"", "myhost", "none", false, "myhost:cpu:3"},
		{"", "myhost", "NONE", false, "myhost:cpu:3"},
		{"", "myhost", "0,1", false, "myhost:gpu0,1"},
		{"", "myhost", "all", false, "myhost:gpuall"},
		{"", "myhost", "0:1", false, "myhost:gpu0.1"},
		{"", "myhost", "3", true, "myhost:dgpu3"},
		{"", "wn", "1", false, "wn:gpu1"},
		{"fixed:id", "myhost", "0", false, "fixed:id"},
	} {
		if got := newWorkerIdentity(tt.id, tt.name, tt.visible, tt.dynamic).idFor(3); got != tt.want {
			t.Errorf("%+v: %s", tt, got)
		}
	}
	// A bare --stop matches only what the same arguments would start
	// (the reference's "host:" prefix also hit GPU and CPU agents).
	plain := newWorkerIdentity("", "host", "", false)
	cpu := newWorkerIdentity("", "host", "none", false)
	gpu := newWorkerIdentity("", "host", "0", false)
	for _, tt := range []struct {
		w    workerIdentity
		id   string
		want bool
	}{
		{plain, "host:0", true}, {plain, "host:12", true},
		{plain, "host:gpu0", false}, {plain, "host:cpu:1", false}, {plain, "host:", false}, {plain, "hostx:0", false},
		{cpu, "host:cpu:1", true}, {cpu, "host:1", false},
		{gpu, "host:gpu0", true}, {gpu, "host:gpu0,1", false},
	} {
		if got := tt.w.matches(tt.id); got != tt.want {
			t.Errorf("%+v matches %q: %v", tt.w, tt.id, got)
		}
	}
}

// startSleeper runs a process that stands for an agent; Wait reaps it.
func startSleeper(t *testing.T, script string) (pid int, exited chan struct{}, stdout *bufio.Reader) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The script says "ready" once its signal dispositions are set.
	stdout = bufio.NewReader(out)
	if line, _ := stdout.ReadString('\n'); line != "ready\n" {
		t.Fatalf("sleeper said %q", line)
	}
	exited = make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	return cmd.Process.Pid, exited, stdout
}

func TestStopInstances(t *testing.T) {
	r := testRegistry(t)
	host := newWorkerIdentity("", "host", "", false)
	gpu := newWorkerIdentity("", "host", "0", false)
	p0, e0, _ := startSleeper(t, "echo ready; exec sleep 60")
	p1, e1, _ := startSleeper(t, "echo ready; exec sleep 60")
	pg, eg, _ := startSleeper(t, "echo ready; exec sleep 60")
	mustClaim(t, r, pg, gpu) // slot 0
	mustClaim(t, r, p0, host)
	mustClaim(t, r, p1, host)

	// Bare --stop: the first agent these arguments would start, not the GPU one.
	var out bytes.Buffer
	found, err := r.stop(nil, host, &out, 10*time.Second)
	if !found || err != nil {
		t.Fatalf("bare stop: %v %v\n%s", found, err, out.String())
	}
	if want := fmt.Sprintf("Terminating clearml-agent worker_id=host:1 pid=%d\n", p0); out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	<-e0
	if !instancePIDAlive(p1) || !instancePIDAlive(pg) {
		t.Fatal("bare --stop stopped more than one agent")
	}

	// Explicit ids: each exactly; a missing one makes found false.
	out.Reset()
	found, err = r.stop([]string{"host:gpu0", "nope"}, host, &out, 10*time.Second)
	if found || err != nil {
		t.Fatalf("ids: %v %v", found, err)
	}
	want := fmt.Sprintf("Terminating clearml-agent worker_id=host:gpu0 pid=%d\n", pg) +
		"Could not find a running clearml-agent instance with worker_name=nope worker_id=nope\n"
	if got := out.String(); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	<-eg
	if !instancePIDAlive(p1) {
		t.Fatal("host:2 stopped too")
	}

	// --stop --cpu-only does not find host:2 (reference, observed).
	out.Reset()
	found, err = r.stop(nil, newWorkerIdentity("", "host", "none", false), &out, time.Second)
	if found || err != nil || out.String() != "Could not find a running clearml-agent instance with worker_name=host:cpu worker_id=None\n" {
		t.Errorf("cpu-only: %v %v %q", found, err, out.String())
	}
	found, err = r.stop([]string{"host:2"}, host, &out, 10*time.Second)
	if !found || err != nil {
		t.Fatalf("host:2: %v %v", found, err)
	}
	<-e1
}

func TestStopTimeout(t *testing.T) {
	r := testRegistry(t)
	// An agent that ignores SIGTERM gets SIGKILL after the timeout.
	pid, exited, _ := startSleeper(t, "trap '' TERM; echo ready; exec sleep 60")
	mustClaim(t, r, pid, newWorkerIdentity("stubborn", "host", "", false))
	var out bytes.Buffer
	found, err := r.stop([]string{"stubborn"}, workerIdentity{}, &out, 200*time.Millisecond)
	if !found || err != nil {
		t.Fatalf("%v %v\n%s", found, err, out.String())
	}
	<-exited
	if !strings.Contains(out.String(), "did not exit within 200ms of SIGTERM, sending SIGKILL") {
		t.Errorf("output %q", out.String())
	}

	// A pid in another pid namespace is never signalled.
	in := mustClaim(t, r, pid, newWorkerIdentity("elsewhere", "host", "", false))
	in.PIDNS = "pid:[1]"
	if err := r.writeInstance(in); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	found, err = r.stop([]string{"elsewhere"}, workerIdentity{}, &out, time.Second)
	if !found || err == nil || !strings.Contains(out.String(), "Could not terminate process pid=") {
		t.Errorf("other namespace: %v %v %q", found, err, out.String())
	}
}

func TestStopReleasedFile(t *testing.T) {
	// An agent that has released its pid file counts as stopped, even while
	// its process still runs (finishing its exit).
	r := testRegistry(t)
	pid, _, out := startSleeper(t, "trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done")
	in := mustClaim(t, r, pid, newWorkerIdentity("w", "host", "", false))
	go func() {
		if line, _ := out.ReadString('\n'); line == "term\n" {
			in.release()
		}
	}()
	var buf bytes.Buffer
	found, err := r.stop([]string{"w"}, workerIdentity{}, &buf, time.Minute)
	if !found || err != nil || strings.Contains(buf.String(), "SIGKILL") {
		t.Errorf("%v %v %q", found, err, buf.String())
	}
	if !instancePIDAlive(pid) {
		t.Error("the agent was killed")
	}
}

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

// TestInstancePythonAgents: Python agents on the host count, and see us.
func TestInstancePythonAgents(t *testing.T) {
	r := testRegistry(t)
	r.pythonDir = t.TempDir()
	// A live Python agent (the test runner's pid stands in) on slot 0, and
	// the file a dead one left on slot 1.
	writeFile(t, filepath.Join(r.pythonDir, fmt.Sprintf(".clearmlagent_%d_x1y2.tmp", os.Getppid())), "host:0\n0")
	writeFile(t, filepath.Join(r.pythonDir, ".clearmlagent_999999999_dead.tmp"), "host:1\n1")
	in := mustClaim(t, r, os.Getpid(), newWorkerIdentity("", "host", "", false))
	if in.WorkerID != "host:1" {
		t.Fatalf("claimed %s, want host:1 (slot 0 is the Python agent's)", in.WorkerID)
	}
	ours, _ := filepath.Glob(filepath.Join(r.pythonDir, fmt.Sprintf(".clearmlagent_%d_*.tmp", os.Getpid())))
	if len(ours) != 1 {
		t.Fatalf("no pid file for Python agents: %v", ours)
	}
	if data, _ := os.ReadFile(ours[0]); string(data) != "host:1\n1" {
		t.Errorf("pid file for Python agents holds %q", data)
	}
	// A fixed id a Python agent uses is a duplicate.
	writeFile(t, filepath.Join(r.pythonDir, fmt.Sprintf(".clearmlagent_%d_x3.tmp", os.Getppid())), "fixed:id\n2")
	if _, err := r.claimFor(os.Getpid(), newWorkerIdentity("fixed:id", "host", "", false).idFor, nil); err == nil {
		t.Error("a worker id a Python agent holds was claimed again")
	}
	if _, err := os.Stat(filepath.Join(r.pythonDir, ".clearmlagent_999999999_dead.tmp")); !os.IsNotExist(err) {
		t.Errorf("a dead Python agent's pid file was kept: %v", err)
	}
	in.release()
	if _, err := os.Stat(ours[0]); !os.IsNotExist(err) {
		t.Errorf("pid file for Python agents left after release: %v", err)
	}
}
