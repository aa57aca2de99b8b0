package main

// Local agent instances (reference §4.2, §4.3, §4.16): one pid file per
// running daemon in a per-user runtime directory, so that several agents on
// one host get distinct slots ("host:0", "host:1", ...), `daemon --stop`
// finds them without the server and --status can list them. The worker id
// formats are built here too (workerIdentity and the *WorkerID functions).
//
// Each file is named by its slot and flock'ed by its agent for the agent's
// lifetime: a file that nobody holds a lock on is stale, whatever its pid
// says. That avoids pid-reuse and zombie mistakes and works across pid
// namespaces (containers sharing a host-mounted directory).
//
// Detaching, the daemon log file and sd_notify are in detach.go.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	runtimeDirEnv      = "CLEARML_AGENT_RUNTIME_DIR" // overrides the directory (tests, unusual setups)
	instancePrefix     = "agent-"
	instanceSuffix     = ".json"
	claimPrefix        = ".claim-"
	globalLockName     = ".global.lock"
	globalLockTimeout  = 10 * time.Second
	defaultStopTimeout = 60 * time.Second // above a task's stop grace plus unregistering
)

// hostMountEnvs move the pid files to a folder shared between containers and
// allow duplicate worker ids, as the reference does.
var hostMountEnvs = []string{"CLEARML_AGENT_K8S_HOST_MOUNT", "CLEARML_AGENT_DOCKER_HOST_MOUNT",
	"TRAINS_AGENT_K8S_HOST_MOUNT", "TRAINS_AGENT_DOCKER_HOST_MOUNT"}

// agentInstance is one running daemon as its pid file describes it.
type agentInstance struct {
	WorkerID string    `json:"worker_id"`
	Slot     int       `json:"slot"`
	PID      int       `json:"pid"`
	PIDNS    string    `json:"pid_ns,omitempty"` // /proc/self/ns/pid of the agent
	Argv     []string  `json:"argv"`
	Started  time.Time `json:"started"`

	path       string
	marker     string      // ranHereMarker of the id: removed on a clean exit
	pythonPath string      // our pid file in the Python agent's format, for Python agents on this host
	file       *os.File    // the owner's open, locked file; nil once released
	mu         *sync.Mutex // guards file: release and refresh may race
	reg        *instanceRegistry
}

// instanceRegistry is the directory of pid files.
type instanceRegistry struct {
	dir            string
	pythonDir      string    // where Python agents keep theirs (tempfile.gettempdir()); "" to ignore them
	allowDuplicate bool      // host-mount mode: duplicate ids only warn
	warn           io.Writer // warnings; nil discards
	// busyRemote: worker ids the server saw report recently
	// (recentWorkerIDs). claim takes them for ids of live agents elsewhere
	// (another TMPDIR, a container, another host), unless this host's last
	// daemon with that id died without unregistering (ranHereMarker).
	busyRemote map[string]bool
}

// errDuplicateWorker is the "already running" failure (exit 1); remote:
// the server says so, not this host's pid files.
type errDuplicateWorker struct {
	id     string
	remote bool
}

func (e *errDuplicateWorker) Error() string {
	if e.remote {
		return fmt.Sprintf("Worker id [%s] is in use: another agent (under another TMPDIR, in a container or on another host) reported to the server as %s within the last %d s; if it was one that died, the id is free once it has been silent that long",
			e.id, e.id, int(recentWorkerWindow.Seconds()))
	}
	return fmt.Sprintf("Instance with the same WORKER_ID [%s] is already running", e.id)
}

// recentWorkerWindow is how recently a worker must have reported to count
// as alive: two report periods (an agent reports every 30 s; a dead one's
// registration lingers on the server for 10 minutes).
var recentWorkerWindow = 2 * statusReportEach

// recentWorkerIDs asks the server which workers reported within
// recentWorkerWindow.
func recentWorkerIDs(ctx context.Context, c *apiClient) (map[string]bool, error) {
	var r struct {
		Workers []struct {
			ID string `json:"id"`
		} `json:"workers"`
	}
	req := map[string]any{"last_seen": int(recentWorkerWindow.Seconds())}
	if err := c.call(withBudget(ctx, 30*time.Second), "workers.get_all", "", req, &r); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, w := range r.Workers {
		out[w.ID] = true
	}
	return out, nil
}

// ranHereMarker is the file that says a daemon of this host registered as
// id: written at claim, removed at a clean exit (after unregistering). A
// marker without a live agent means that daemon died, and the server's
// registration of id is its own, not another agent's.
func (r *instanceRegistry) ranHereMarker(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(r.dir, fmt.Sprintf(".ran-here-%x", sum[:8]))
}

// instancesDir is where pid files live: $CLEARML_AGENT_RUNTIME_DIR, else the
// container side of a host mount (the part after the last ':'), else
// <tmp>/clearml-agent-<uid>. Not $XDG_RUNTIME_DIR: logind removes it at
// logout while a detached agent keeps running, and it is unset for cron and
// system services, so two agents could disagree on the directory.
func instancesDir(env envLookup) (dir string, hostMount bool) {
	if env == nil {
		env = os.LookupEnv
	}
	if d := firstEnv(env, runtimeDirEnv); d != "" {
		return d, false
	}
	if m := firstEnv(env, hostMountEnvs...); m != "" {
		return m[strings.LastIndexByte(m, ':')+1:], true
	}
	tmp := firstEnv(env, "TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "clearml-agent-"+strconv.Itoa(os.Getuid())), false
}

// openInstanceRegistry creates the directory if needed (0700). The default
// one lives in a shared temp dir, so it must be ours and private.
func openInstanceRegistry(env envLookup) (*instanceRegistry, error) {
	dir, hostMount := instancesDir(env)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if env == nil {
		env = os.LookupEnv
	}
	if !hostMount && firstEnv(env, runtimeDirEnv) == "" {
		fi, err := os.Lstat(dir)
		if err != nil {
			return nil, err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || (st != nil && int(st.Uid) != os.Getuid()) || fi.Mode().Perm()&0o022 != 0 {
			return nil, fmt.Errorf("%s is not a private directory owned by this user; remove it or set %s", dir, runtimeDirEnv)
		}
	}
	r := &instanceRegistry{dir: dir, allowDuplicate: hostMount}
	if !hostMount {
		r.pythonDir = firstNonEmpty(firstEnv(env, "TMPDIR", "TEMP", "TMP"), "/tmp")
	}
	return r, nil
}

// Python agents on the same host (a fleet moving over, one agent at a time)
// keep "<tmp>/.clearmlagent_<pid>_<random>.tmp" holding "<worker id>\n<slot>"
// (agent-daemon.md §4.3). Both kinds must see each other's slots, or both
// would register as host:0, one worker on the server.
const pythonPidPrefix, pythonPidSuffix = ".clearmlagent_", ".tmp"

// pythonInstances reads the live Python agents' pid files.
func (r *instanceRegistry) pythonInstances() []agentInstance {
	if r.pythonDir == "" {
		return nil
	}
	names, _ := filepath.Glob(filepath.Join(r.pythonDir, pythonPidPrefix+"*"+pythonPidSuffix))
	var out []agentInstance
	for _, path := range names {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(path), pythonPidPrefix), "_")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if !instancePIDAlive(pid) {
			os.Remove(path) // stale, as the reference clears them at registration
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		id, slotText, _ := strings.Cut(string(data), "\n")
		slot, err := strconv.Atoi(strings.TrimSpace(slotText))
		if err != nil {
			continue
		}
		out = append(out, agentInstance{WorkerID: strings.TrimSpace(id), Slot: slot, PID: pid, path: path})
	}
	return out
}

// writePythonPidFile leaves our claim where Python agents look for it.
func (r *instanceRegistry) writePythonPidFile(inst *agentInstance) {
	if r.pythonDir == "" {
		return
	}
	f, err := os.CreateTemp(r.pythonDir, fmt.Sprintf("%s%d_*%s", pythonPidPrefix, inst.PID, pythonPidSuffix))
	if err != nil {
		return // best effort: only Python agents read it
	}
	_, err = fmt.Fprintf(f, "%s\n%d", inst.WorkerID, inst.Slot)
	if cerr := f.Close(); err != nil || cerr != nil {
		os.Remove(f.Name())
		return
	}
	inst.pythonPath = f.Name()
}

// lockGlobal serialises claims. flock dies with its holder, so there is no
// stale lock to time out and delete as in the reference.
func (r *instanceRegistry) lockGlobal() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(r.dir, globalLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(globalLockTimeout)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// slotOfName parses "agent-<slot>.json".
func slotOfName(name string) (int, bool) {
	if !strings.HasPrefix(name, instancePrefix) || !strings.HasSuffix(name, instanceSuffix) {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, instancePrefix), instanceSuffix))
	return n, err == nil && n >= 0
}

// fileLocked reports whether some process holds a lock on path; false also
// when the file is gone.
func fileLocked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

// scan returns the live instances sorted by slot; with clean (global lock
// held) it removes stale pid files and abandoned claim files.
func (r *instanceRegistry) scan(clean bool) ([]agentInstance, error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, err
	}
	var out []agentInstance
	for _, e := range entries {
		path := filepath.Join(r.dir, e.Name())
		if strings.HasPrefix(e.Name(), claimPrefix) {
			if clean && !fileLocked(path) {
				os.Remove(path)
			}
			continue
		}
		slot, ok := slotOfName(e.Name())
		if !ok {
			continue
		}
		if !fileLocked(path) {
			if clean {
				os.Remove(path)
			}
			continue
		}
		inst := agentInstance{Slot: slot, path: path}
		if data, err := os.ReadFile(path); err == nil {
			// Unreadable content still holds its slot (from the name).
			if json.Unmarshal(data, &inst) == nil {
				inst.Slot, inst.path = slot, path
			}
		}
		out = append(out, inst)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out, nil
}

// list returns the running instances, removing stale pid files.
func (r *instanceRegistry) list() ([]agentInstance, error) {
	unlock, err := r.lockGlobal()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.scan(true)
}

// claim registers this process: it takes the lowest slot that is free on
// the host and whose id (idFor(slot)) no running agent uses. A fixed id
// (idFor ignores the slot) already in use is an *errDuplicateWorker, unless
// in host-mount mode. The returned instance holds its file until release.
func (r *instanceRegistry) claim(idFor func(slot int) string, argv []string) (*agentInstance, error) {
	return r.claimFor(os.Getpid(), idFor, argv)
}

func (r *instanceRegistry) claimFor(pid int, idFor func(slot int) string, argv []string) (*agentInstance, error) {
	unlock, err := r.lockGlobal()
	if err != nil {
		return nil, err
	}
	defer unlock()
	live, err := r.scan(true)
	if err != nil {
		return nil, err
	}
	live = append(live, r.pythonInstances()...)
	used := map[int]bool{}
	ids := map[string]bool{}
	for _, in := range live {
		used[in.Slot] = true
		if in.WorkerID != "" {
			ids[in.WorkerID] = true
		}
	}
	remote := map[string]bool{}
	for id := range r.busyRemote {
		if !ids[id] && !fileExists(r.ranHereMarker(id)) {
			ids[id], remote[id] = true, true
		}
	}
	slot := 0
	for ; ; slot++ {
		if used[slot] {
			continue
		}
		id := idFor(slot)
		if !ids[id] {
			break
		}
		if idFor(slot+1) != id {
			continue // slot-based id taken by a fixed id elsewhere: try the next slot
		}
		if !r.allowDuplicate {
			return nil, &errDuplicateWorker{id, remote[id]}
		}
		if r.warn != nil {
			fmt.Fprintf(r.warn, "clearml_agent: Warning: Instance with the same WORKER_ID [%s] was found on this machine. We are ignoring it, make sure this not a mistake.\n", id)
		}
		break
	}
	inst := &agentInstance{WorkerID: idFor(slot), Slot: slot, PID: pid, PIDNS: pidNamespace(),
		Argv: argv, Started: time.Now().UTC().Truncate(time.Second), mu: new(sync.Mutex), reg: r}
	if err := r.writeInstance(inst); err != nil {
		return nil, err
	}
	inst.marker = r.ranHereMarker(inst.WorkerID)
	os.WriteFile(inst.marker, []byte(inst.WorkerID+"\n"), 0o600)
	r.writePythonPidFile(inst)
	return inst, nil
}

// writeInstance writes a locked claim file, then renames it into place, so
// that a pid file is never seen unlocked or half written.
func (r *instanceRegistry) writeInstance(inst *agentInstance) error {
	data, err := json.MarshalIndent(inst, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(r.dir, claimPrefix+"*") // mode 0600
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		return fail(err)
	}
	path := filepath.Join(r.dir, instancePrefix+strconv.Itoa(inst.Slot)+instanceSuffix)
	if err := os.Rename(f.Name(), path); err != nil {
		return fail(err)
	}
	if inst.file != nil {
		inst.file.Close()
	}
	inst.file, inst.path = f, path
	return nil
}

// release removes the pid file and drops its lock. Idempotent.
func (a *agentInstance) release() {
	if a == nil || a.mu == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return
	}
	// Remove only our own file: if it was deleted under us, the path may
	// belong to another agent by now.
	if fi, err := os.Stat(a.path); err == nil {
		if own, err := a.file.Stat(); err == nil && os.SameFile(fi, own) {
			os.Remove(a.path)
		}
	}
	a.file.Close()
	a.file = nil
	if a.marker != "" {
		os.Remove(a.marker)
	}
	if a.pythonPath != "" {
		os.Remove(a.pythonPath)
		a.pythonPath = ""
	}
}

// refresh keeps the pid file fresh for temp cleaners (call it now and then,
// e.g. with each status report) and rewrites it if it was deleted.
func (a *agentInstance) refresh() error {
	if a == nil || a.mu == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return nil
	}
	now := time.Now()
	if fi, err := os.Stat(a.path); err == nil {
		if own, err := a.file.Stat(); err == nil && os.SameFile(fi, own) {
			return os.Chtimes(a.path, now, now)
		}
	}
	unlock, err := a.reg.lockGlobal()
	if err != nil {
		return err
	}
	defer unlock()
	if fileLocked(a.path) {
		return fmt.Errorf("pid file %s was replaced by another agent", a.path)
	}
	return a.reg.writeInstance(a)
}

// workerIdentity is how the daemon names itself (reference §4.2): a fixed id
// (agent.worker_id, or a GPU id), or name:<slot>.
type workerIdentity struct {
	fixedID string
	name    string // agent.worker_name, plus ":cpu" for --cpu-only
}

// newWorkerIdentity computes it from agent.worker_id, agent.worker_name and
// the visible devices (NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES after
// --gpus/--cpu-only were applied; "" when unset).
func newWorkerIdentity(workerID, workerName, visible string, dynamicGPUs bool) workerIdentity {
	if workerID != "" {
		return workerIdentity{fixedID: workerID, name: workerName}
	}
	switch {
	case visible == "":
		return workerIdentity{name: workerName}
	case strings.EqualFold(visible, "none"):
		return workerIdentity{name: workerName + ":cpu"}
	case dynamicGPUs:
		return workerIdentity{fixedID: workerName + ":dgpu" + gpuIDText(visible), name: workerName}
	}
	return workerIdentity{fixedID: gpuWorkerID(workerName, visible), name: workerName}
}

// idFor is the worker id for a slot; pass it to claim.
func (w workerIdentity) idFor(slot int) string {
	if w.fixedID != "" {
		return w.fixedID
	}
	return numberedWorkerID(w.name, slot)
}

// The worker id formats (reference §4.2) are built only here:
//
//	<name>:<n>                  a daemon's slot n, or a standalone execute's pid n
//	<name>:cpu:<n>              a --cpu-only daemon's slot (idFor of name+":cpu")
//	<name>:gpu<devices>         a daemon on --gpus, or its child on leased GPUs
//	<name>:dgpu<devices>        a daemon with --dynamic-gpus
//	<daemon id>:service:<task>  a child of a daemon running several tasks at once
//
// <devices> is the device list as given ("0,1", "0-3"), with the ':' of a
// MIG slice ("0:1") written as '.', so ids keep one ':' per level.

// numberedWorkerID is <name>:<n>.
func numberedWorkerID(name string, n int) string { return name + ":" + strconv.Itoa(n) }

// gpuWorkerID is <name>:gpu<devices>.
func gpuWorkerID(name, devices string) string { return name + ":gpu" + gpuIDText(devices) }

// gpuWorkerDevices is the inverse of gpuWorkerID for workers named name:
// the <devices> part of id (MIG slices still written "0.1"), ok false when
// id is not such a worker's.
func gpuWorkerDevices(name, id string) (devices string, ok bool) {
	if devices, ok = strings.CutPrefix(id, name+":gpu"); !ok {
		return "", false
	}
	return devices, true
}

// serviceWorkerID is <daemon id>:service:<task>.
func serviceWorkerID(daemonID, taskID string) string { return daemonID + ":service:" + taskID }

func gpuIDText(devices string) string { return strings.ReplaceAll(devices, ":", ".") }

// matches says whether a running agent's id is one that this identity
// would produce: the fixed id, or name:<digits>. The reference matched any
// id starting with "name:", so a bare --stop also killed "host:gpu0" and
// "host:cpu:1"; it no longer does.
func (w workerIdentity) matches(id string) bool {
	if w.fixedID != "" {
		return id == w.fixedID
	}
	rest, ok := strings.CutPrefix(id, w.name+":")
	return ok && rest != "" && strings.Trim(rest, "0123456789") == ""
}

// stop implements `daemon --stop [WORKER_ID...]`. With ids, it stops each
// exactly; without, the first (lowest slot) agent that ident matches. Each
// gets SIGTERM; after timeout, SIGKILL. found is false when some agent was
// not found (the exit status is then 1, as the reference); err reports an
// agent that could not be stopped.
func (r *instanceRegistry) stop(ids []string, ident workerIdentity, out io.Writer, timeout time.Duration) (found bool, err error) {
	return r.stopWith(ids, ident, out, timeout, unix.SIGTERM)
}

// stopWith is stop with the signal to send: SIGTERM (stop at once) or
// sigDrain (let the running tasks finish). timeout 0 waits without limit.
func (r *instanceRegistry) stopWith(ids []string, ident workerIdentity, out io.Writer, timeout time.Duration, sig unix.Signal) (found bool, err error) {
	live, err := r.list()
	if err != nil {
		return false, err
	}
	if len(ids) == 0 {
		i := indexInstance(live, func(in agentInstance) bool { return ident.matches(in.WorkerID) })
		if i < 0 {
			idText := ident.fixedID
			if idText == "" {
				idText = "None"
			}
			fmt.Fprintf(out, "Could not find a running clearml-agent instance with worker_name=%s worker_id=%s\n", ident.name, idText)
			return false, nil
		}
		return true, terminateInstance(live[i], out, timeout, sig)
	}
	found = true
	var errs []error
	for _, id := range ids {
		i := indexInstance(live, func(in agentInstance) bool { return in.WorkerID == id })
		if i < 0 {
			found = false
			fmt.Fprintf(out, "Could not find a running clearml-agent instance with worker_name=%s worker_id=%s\n", id, id)
			continue
		}
		if err := terminateInstance(live[i], out, timeout, sig); err != nil {
			errs = append(errs, err)
		}
	}
	return found, errors.Join(errs...)
}

func indexInstance(list []agentInstance, match func(agentInstance) bool) int {
	for i, in := range list {
		if match(in) {
			return i
		}
	}
	return -1
}

// terminateInstance sends sig and waits until the agent has released its
// pid file or its process is gone; after timeout (if positive) it sends
// SIGKILL.
func terminateInstance(in agentInstance, out io.Writer, timeout time.Duration, sig unix.Signal) error {
	if sig == sigDrain {
		fmt.Fprintf(out, "Draining clearml-agent worker_id=%s pid=%d: it exits when its running tasks end\n", in.WorkerID, in.PID)
	} else {
		fmt.Fprintf(out, "Terminating clearml-agent worker_id=%s pid=%d\n", in.WorkerID, in.PID)
	}
	fail := func(why string) error {
		fmt.Fprintf(out, "Could not terminate process pid=%d\n", in.PID)
		return fmt.Errorf("could not stop worker %s (pid %d): %s", in.WorkerID, in.PID, why)
	}
	if in.PID <= 0 {
		return fail("its pid file " + in.path + " holds no pid")
	}
	if ns := pidNamespace(); in.PIDNS != "" && ns != "" && in.PIDNS != ns {
		// Its pid means another process here: signal nothing.
		return fail("it runs in another pid namespace (container)")
	}
	gone := func() bool { return !fileLocked(in.path) || !instancePIDAlive(in.PID) }
	if err := unix.Kill(in.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fail(err.Error())
	}
	if waitUntil(gone, timeout) {
		return nil
	}
	fmt.Fprintf(out, "clearml_agent: Warning: pid=%d did not exit within %s of %s, sending SIGKILL\n", in.PID, timeout, unix.SignalName(sig))
	unix.Kill(in.PID, unix.SIGKILL)
	if waitUntil(func() bool { return !instancePIDAlive(in.PID) }, 5*time.Second) {
		return nil
	}
	return fail("still running after SIGKILL")
}

func waitUntil(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if timeout > 0 && time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// instancePIDAlive: the process exists and is not a zombie.
func instancePIDAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if st, ok := readProcStat(pid); ok {
		return st.state != 'Z' && st.state != 'X'
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func pidNamespace() string {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return ns
}
