package main

// The venv cache (configuration in venv.go): finished venvs keyed by a hash
// of everything that shapes them, shared by concurrent tasks and agents.
//
// Layout, under venvs_cache.path:
//
//	.lock               serialises eviction
//	interpreters.json   remembered interpreter probes, so a hit runs no python
//	torch-index.json    remembered PyTorch index probes (torch_host.go)
//	.kits/<id>/         venv templates and pip seeds (venv_seed.go)
//	<key>.lock          flock: shared while a task copies the entry, exclusive while building or evicting
//	<key>/              the venv: read-only files, .clearml-manifest, and .clearml-venv.json (the marker, last)
//	.build-<key>-*      an entry being built (published by rename)
//	.trash.<key>.*      an entry being removed (renamed first, so no task sees it half gone)
//
// Entries are immutable: no task runs in one. A hit is a hard-link copy into
// the task's own folder, checked against the manifest (venv_link.go), so
// nothing a task does reaches the next task with the same key. Venvs are not
// relocatable, but only bin/ scripts and pyvenv.cfg hold the build path, and
// the copy writes those anew.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// release lets the cache evict the entry again; call it when the task ends.
// (A task's copy does not need the entry: the lock is only held while copying.)
func (r *venvResult) release() {
	if r != nil && r.lock != nil {
		r.lock.Close()
		r.lock = nil
	}
}

// keepLockAcrossExec makes the entry's lock survive an exec of the task, so
// the task process itself keeps the venv from eviction until it exits.
func (r *venvResult) keepLockAcrossExec() error {
	if r == nil || r.lock == nil {
		return nil
	}
	_, err := unix.FcntlInt(r.lock.Fd(), unix.F_SETFD, 0)
	return err
}

// cacheDir is the venv cache folder, or "" when caching is off.
func (m *venvManager) cacheDir() string {
	dir := m.env("CLEARML_AGENT_VENV_CACHE_PATH")
	if dir == "" {
		dir = strings.TrimSpace(m.cfg.str("agent.venvs_cache.path"))
	}
	if dir == "" || m.cfg.float("agent.venvs_cache.max_entries", 10) < 1 {
		return ""
	}
	dir = expandHomeEnv(dir, m.envLookup())
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return dir
}

const venvKeyVersion = "clearml-go-venv/2"

// cacheKey hashes everything that shapes the venv: interpreter, tool,
// venv flags, index flags and the planned requirements (PyTorch's index
// for this host included).
func (m *venvManager) cacheKey(in pyInterp, t venvTool, plan *venvPlan) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", venvKeyVersion, in.real, in.version, t.name())
	fmt.Fprintf(h, "system_site_packages=%v\nvenv_tool=%s\n", m.cfg.boolean("agent.package_manager.system_site_packages", false),
		strings.ToLower(strings.TrimSpace(m.cfg.str("agent.package_manager.venv_tool"))))
	fmt.Fprintf(h, "flags=%q\npins=%q\n", m.installFlags(), m.cfg.strList("agent.package_manager.pip_version"))
	for _, l := range plan.keyLines() {
		fmt.Fprintf(h, "req=%s\n", l)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// venvMeta is the completion marker of a cache entry.
type venvMeta struct {
	Key           string    `json:"key"`
	Python        string    `json:"python"`
	PythonVersion string    `json:"python_version"`
	Frozen        []string  `json:"frozen"`
	Created       time.Time `json:"created"`
	BuiltAt       string    `json:"built_at"` // the staging folder it was built in: its bin/ scripts name it
}

const venvMetaName = ".clearml-venv.json"

func venvReadMeta(entry string) (*venvMeta, bool) {
	data, err := os.ReadFile(filepath.Join(entry, venvMetaName))
	if err != nil {
		return nil, false
	}
	var meta venvMeta
	if json.Unmarshal(data, &meta) != nil {
		return nil, false
	}
	return &meta, true
}

// venvLock opens path and flocks it (how: LOCK_SH or LOCK_EX), polling so
// ctx can cancel. It retries when an evictor unlinked the file meanwhile.
func venvLock(ctx context.Context, path string, how int) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := venvFlockWait(ctx, f, how); err != nil {
			f.Close()
			return nil, err
		}
		if venvSameFile(f, path) {
			return f, nil
		}
		f.Close()
	}
}

// venvTryLock is venvLock without waiting: nil, nil when the lock is held.
func venvTryLock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if err == nil && venvSameFile(f, path) {
		return f, nil
	}
	f.Close()
	if err == nil || err == unix.EWOULDBLOCK || err == unix.EINTR {
		return nil, nil
	}
	return nil, fmt.Errorf("lock %s: %w", path, err)
}

func venvFlockWait(ctx context.Context, f *os.File, how int) error {
	delay := 5 * time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// venvSameFile reports whether path still names the open file f.
func venvSameFile(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// cacheLookup gives the task (taskDir) a copy of the entry for key if it is
// complete; nil when there is none. Runs no python. An entry whose files
// changed since it was cached (a task wrote into a linked file) loses its
// marker, so the next builder replaces it.
func (m *venvManager) cacheLookup(ctx context.Context, cache, key, taskDir string) (*venvResult, error) {
	entry := filepath.Join(cache, key)
	if _, err := os.Stat(entry + ".lock"); err != nil {
		if _, err := os.Stat(entry); err != nil {
			return nil, nil // never built
		}
	}
	// Shared: waits for a build in progress.
	f, err := venvLock(ctx, entry+".lock", unix.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("venv: cache: %w", err)
	}
	defer f.Close()
	return m.cacheCopy(cache, key, taskDir, false)
}

// cacheCopy copies the entry for key into taskDir; the caller holds the
// entry's lock. nil, nil: the entry is incomplete or was modified.
func (m *venvManager) cacheCopy(cache, key, taskDir string, built bool) (*venvResult, error) {
	entry := filepath.Join(cache, key)
	meta, ok := venvReadMeta(entry)
	if !ok || meta.BuiltAt == "" || !venvIsExecutable(venvPython(entry)) {
		return nil, nil
	}
	if err := venvCleanTaskDir(taskDir); err != nil {
		return nil, fmt.Errorf("venv: cleaning %s: %w", taskDir, err)
	}
	t0 := time.Now()
	copied, err := venvCopyEntry(entry, meta.BuiltAt, taskDir)
	var mod *errVenvModified
	if errors.As(err, &mod) {
		m.logf("WARNING: cached virtual environment %s %v; building it again", key, err)
		os.Remove(filepath.Join(entry, venvMetaName))
		if err := venvCleanTaskDir(taskDir); err != nil {
			return nil, fmt.Errorf("venv: cleaning %s: %w", taskDir, err)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("venv: cache: %w", err)
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(entry, venvMetaName), now, now)
	how := "linked"
	if copied {
		how = "copied (the cache is on another filesystem than the task's folder: link them for speed)"
	}
	if !built {
		m.logf("Using cached virtual environment %s (%s into %s in %d ms)", entry, how, taskDir, time.Since(t0).Milliseconds())
	}
	return &venvResult{python: venvPython(taskDir), dir: taskDir, pythonVersion: meta.PythonVersion,
		cacheHit: !built, frozen: meta.Frozen}, nil
}

// cachePrepare gives the task a copy of the cache entry for key, building
// the entry with build if needed; concurrent callers wait and reuse it.
// nil, nil means the cache has no room (free space) and the caller should
// build elsewhere.
func (m *venvManager) cachePrepare(ctx context.Context, cache, key, taskDir string, in pyInterp, build func(dir string) ([]string, error)) (*venvResult, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		m.logf("WARNING: venv cache %s unusable: %v", cache, err)
		return nil, nil
	}
	entry := filepath.Join(cache, key)
	delay := 5 * time.Millisecond
	for {
		if r, err := m.cacheLookup(ctx, cache, key, taskDir); err != nil || r != nil {
			return r, err
		}
		// Exclusive without waiting: a task may hold the entry shared for
		// hours, and a complete entry must then be reused, not awaited.
		f, err := venvTryLock(entry+".lock", unix.LOCK_EX)
		if err != nil {
			return nil, fmt.Errorf("venv: cache: %w", err)
		}
		if f == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
			delay = min(delay*2, 250*time.Millisecond)
			continue
		}
		built := false
		if _, ok := venvReadMeta(entry); !ok {
			room, err := m.makeRoom(ctx, cache, key)
			if err != nil || !room {
				f.Close()
				return nil, err
			}
			if err := m.cacheBuild(cache, key, in, build); err != nil {
				f.Close()
				return nil, err
			}
			built = true
		}
		// Downgrade to shared; flock may drop the lock for a moment, so check again.
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("venv: cache: lock: %w", err)
		}
		if venvSameFile(f, entry+".lock") {
			r, err := m.cacheCopy(cache, key, taskDir, built)
			if err != nil || r != nil {
				f.Close()
				return r, err
			}
		}
		f.Close()
	}
}

// cacheBuild builds the entry in a staging folder, seals it (read-only
// files, manifest) and publishes it by rename. Called under the entry's
// exclusive lock.
func (m *venvManager) cacheBuild(cache, key string, in pyInterp, build func(dir string) ([]string, error)) error {
	entry := filepath.Join(cache, key)
	old, _ := filepath.Glob(filepath.Join(cache, ".build-"+key+"-*"))
	for _, o := range append(old, entry) { // a crashed or dropped build's leftovers
		if err := venvRemoveAll(o); err != nil {
			return fmt.Errorf("venv: cache: %w", err)
		}
	}
	stage, err := os.MkdirTemp(cache, ".build-"+key+"-")
	if err != nil {
		return fmt.Errorf("venv: cache: %w", err)
	}
	frozen, err := build(stage)
	if err == nil {
		meta := venvMeta{Key: key, Python: in.real, PythonVersion: in.version, Frozen: frozen, Created: time.Now().UTC(), BuiltAt: stage}
		data, _ := json.MarshalIndent(meta, "", "  ")
		if err = venvSeal(stage); err == nil {
			err = venvWriteFileAtomic(filepath.Join(stage, venvMetaName), data)
		}
		if err == nil {
			err = os.Rename(stage, entry)
		}
	}
	if err != nil {
		venvRemoveAll(stage)
		return err
	}
	m.logf("Added the virtual environment to the cache: %s", entry)
	return nil
}

// venvEntry is a cache entry seen by eviction.
type venvEntry struct {
	key      string
	lastUsed time.Time
	complete bool
}

func (m *venvManager) cacheEntries(cache string) []venvEntry {
	ents, _ := os.ReadDir(cache)
	var out []venvEntry
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(cache, e.Name())
		ve := venvEntry{key: e.Name()}
		if fi, err := os.Stat(filepath.Join(dir, venvMetaName)); err == nil {
			ve.lastUsed, ve.complete = fi.ModTime(), true
		} else if fi, err := os.Stat(dir); err == nil {
			ve.lastUsed = fi.ModTime()
		}
		out = append(out, ve)
	}
	// Leftovers of failed builds first, then least recently used.
	sort.Slice(out, func(i, j int) bool {
		if out[i].complete != out[j].complete {
			return !out[i].complete
		}
		return out[i].lastUsed.Before(out[j].lastUsed)
	})
	return out
}

// makeRoom evicts idle entries (never keep) until at most max-1 remain and
// the free space is above the threshold. false: no room even so.
func (m *venvManager) makeRoom(ctx context.Context, cache, keep string) (bool, error) {
	g, err := venvLock(ctx, filepath.Join(cache, ".lock"), unix.LOCK_EX)
	if err != nil {
		return false, fmt.Errorf("venv: cache: %w", err)
	}
	defer g.Close()
	m.sweepTrash(cache)
	maxEntries := int(m.cfg.float("agent.venvs_cache.max_entries", 10))
	var idle []venvEntry
	count := 0
	for _, e := range m.cacheEntries(cache) {
		if e.key != keep {
			idle = append(idle, e)
			if e.complete {
				count++
			}
		}
	}
	for len(idle) > 0 && (count >= maxEntries || !idle[0].complete) {
		if m.evict(cache, idle[0].key) && idle[0].complete {
			count--
		}
		idle = idle[1:]
	}
	thr := m.cfg.float("agent.venvs_cache.free_space_threshold_gb", 2.0)
	if thr <= 0 {
		return true, nil
	}
	need := uint64(thr * (1 << 30))
	for {
		free, err := m.free(cache)
		if err != nil || free >= need {
			return true, nil
		}
		if len(idle) == 0 {
			m.logf("WARNING: less than %.1f GB free in %s even after eviction: not caching this venv", thr, cache)
			return false, nil
		}
		m.evict(cache, idle[0].key)
		idle = idle[1:]
	}
}

func (m *venvManager) free(dir string) (uint64, error) {
	if m.freeSpace != nil {
		return m.freeSpace(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// evict removes an entry unless a task holds it; true when removed.
func (m *venvManager) evict(cache, key string) bool {
	entry := filepath.Join(cache, key)
	lockPath := entry + ".lock"
	f, err := venvTryLock(lockPath, unix.LOCK_EX)
	if err != nil || f == nil {
		return false // in use, or being built
	}
	defer f.Close()
	os.Remove(filepath.Join(entry, venvMetaName))
	trash := filepath.Join(cache, fmt.Sprintf(".trash.%s.%d.%d", key, os.Getpid(), time.Now().UnixNano()))
	if err := os.Rename(entry, trash); err != nil && !os.IsNotExist(err) {
		m.logf("WARNING: venv cache: could not remove %s: %v", entry, err)
		return false
	}
	os.RemoveAll(trash)
	os.Remove(lockPath) // waiters notice the unlinked lock file and retry
	m.logf("Removed cached virtual environment %s", key)
	return true
}

// sweepTrash removes what an interrupted eviction left. Called under .lock.
func (m *venvManager) sweepTrash(cache string) {
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".trash.") {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
}

// venvWriteFileAtomic writes data to a temp file beside path and renames it.
func venvWriteFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
