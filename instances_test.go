package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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
	if code := runExitStatus(err); code != 1 {
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

// runExitStatus is what run() turns err into.
func runExitStatus(err error) int {
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

// The id builders that the daemon, its children and execute share.
func TestInstanceWorkerIDFormats(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{numberedWorkerID("host", 4242), "host:4242"},
		{gpuWorkerID("host", "0,1"), "host:gpu0,1"},
		{gpuWorkerID("host", "0:1,1:0"), "host:gpu0.1,1.0"},
		{serviceWorkerID("host:0", "abc123"), "host:0:service:abc123"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, tt := range []struct {
		id, devices string
		ok          bool
	}{
		{"host:gpu0,1", "0,1", true}, {"host:gpu0.1", "0.1", true},
		{"host:0", "", false}, {"other:gpu0", "", false}, {"host:dgpu0", "", false},
	} {
		if devs, ok := gpuWorkerDevices("host", tt.id); devs != tt.devices || ok != tt.ok {
			t.Errorf("%q: %q %v, want %q %v", tt.id, devs, ok, tt.devices, tt.ok)
		}
	}
	// Round trip: a child's id on leased GPUs names those GPUs.
	if devs, ok := gpuWorkerDevices("host", gpuWorkerID("host", "2:0")); !ok || devs != "2.0" {
		t.Errorf("round trip: %q %v", devs, ok)
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

// TestDaemonClaimBusyRemote: a worker id the server saw report recently is
// another agent's (another TMPDIR, container or host): a fixed id is
// refused, a slot id moves to the next slot; unless this host's last
// daemon with that id died without unregistering (its marker is left).
func TestDaemonClaimBusyRemote(t *testing.T) {
	r := testRegistry(t)
	r.busyRemote = map[string]bool{"fixed:1": true, "host:0": true}
	fixed := newWorkerIdentity("fixed:1", "host", "", false)
	_, err := r.claimFor(os.Getpid(), fixed.idFor, nil)
	var dup *errDuplicateWorker
	if !errors.As(err, &dup) || !dup.remote || !strings.Contains(err.Error(), "Worker id [fixed:1] is in use") {
		t.Fatalf("a fixed id busy on the server: %v", err)
	}
	slot := mustClaim(t, r, os.Getpid(), newWorkerIdentity("", "host", "", false))
	if slot.WorkerID != "host:1" {
		t.Errorf("slot id %s, want host:1 (host:0 is busy on the server)", slot.WorkerID)
	}
	// A daemon of this host claimed fixed:1 and died: its lock is gone,
	// its pid file and marker stay. The registration the server saw is
	// its own, and the id is free to take over.
	crashed, err := (&instanceRegistry{dir: r.dir}).claimFor(os.Getpid(), fixed.idFor, nil)
	if err != nil {
		t.Fatal(err)
	}
	crashed.file.Close()
	again, err := r.claimFor(os.Getpid(), fixed.idFor, nil)
	if err != nil {
		t.Fatalf("a restart after a crash: %v", err)
	}
	// A clean exit removes the marker: the id is then another agent's again.
	again.release()
	if _, err := r.claimFor(os.Getpid(), fixed.idFor, nil); !errors.As(err, &dup) {
		t.Errorf("after a clean exit, a fixed id busy on the server: %v", err)
	}
}
