package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// venvFakeEntry makes a complete-looking cache entry last used at `used`.
func venvFakeEntry(t testing.TB, cache, key string, used time.Time, meta venvMeta) {
	t.Helper()
	dir := filepath.Join(cache, key)
	venvWrite(t, filepath.Join(dir, "bin", "python"), "", 0o755)
	data := fmt.Sprintf(`{"key":%q,"python_version":%q,"frozen":%q}`, key, meta.PythonVersion, meta.Frozen)
	marker := filepath.Join(dir, venvMetaName)
	if err := os.WriteFile(marker, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(marker, used, used); err != nil {
		t.Fatal(err)
	}
}

func venvKeys(t *testing.T, cache string) []string {
	t.Helper()
	var keys []string
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if e.IsDir() {
			keys = append(keys, e.Name())
		}
	}
	return keys
}

func TestVenvCacheEviction(t *testing.T) {
	cache := t.TempDir()
	m := newVenvManager(venvTestConfig(t, "agent.venvs_cache { max_entries: 3, free_space_threshold_gb: 1 }", nil), nil)
	base := time.Now().Add(-time.Hour)
	for i, k := range []string{"k0", "k1", "k2", "k3"} {
		venvFakeEntry(t, cache, k, base.Add(time.Duration(i)*time.Minute), venvMeta{})
	}
	if err := os.MkdirAll(filepath.Join(cache, "partial"), 0o755); err != nil { // a crashed build
		t.Fatal(err)
	}
	// A task is using the oldest entry.
	busy, err := venvLock(context.Background(), filepath.Join(cache, "k0.lock"), unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	m.freeSpace = func(string) (uint64, error) { return 10 << 30, nil }
	room, err := m.makeRoom(context.Background(), cache, "new")
	if err != nil || !room {
		t.Fatal(room, err)
	}
	// Room for "new" means 2 others stay: k1, k2 (least recently used) go, busy k0 stays.
	if got := venvKeys(t, cache); !reflect.DeepEqual(got, []string{"k0", "k3"}) {
		t.Errorf("after max_entries eviction: %q", got)
	}
	if _, err := os.Stat(filepath.Join(cache, "k1.lock")); !os.IsNotExist(err) {
		t.Errorf("lock file of an evicted entry left behind: %v", err)
	}

	// Low disk: evict idle entries until enough is free, else refuse.
	evictions := 0
	m.freeSpace = func(string) (uint64, error) {
		if len(venvKeys(t, cache)) > 1 {
			return 0, nil
		}
		return 2 << 30, nil
	}
	if room, err := m.makeRoom(context.Background(), cache, "new"); err != nil || !room {
		t.Fatal(room, err)
	}
	if got := venvKeys(t, cache); !reflect.DeepEqual(got, []string{"k0"}) {
		t.Errorf("after free-space eviction: %q (evictions %d)", got, evictions)
	}
	m.freeSpace = func(string) (uint64, error) { return 0, nil }
	if room, err := m.makeRoom(context.Background(), cache, "new"); err != nil || room {
		t.Errorf("no room expected: %v %v", room, err)
	}
	busy.Close()
}

func TestVenvCacheLookupWaitsForBuilder(t *testing.T) {
	cache := t.TempDir()
	m := newVenvManager(venvTestConfig(t, "", nil), nil)
	if err := os.MkdirAll(filepath.Join(cache, "k"), 0o755); err != nil {
		t.Fatal(err)
	}
	builder, err := venvLock(context.Background(), filepath.Join(cache, "k.lock"), unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *venvResult)
	go func() {
		r, _ := m.cacheLookup(context.Background(), cache, "k")
		done <- r
	}()
	venvFakeEntry(t, cache, "k", time.Now(), venvMeta{PythonVersion: "3.11.7", Frozen: []string{"a==1"}})
	builder.Close()
	r := <-done
	if r == nil || !r.cacheHit || r.frozen[0] != "a==1" {
		t.Fatalf("lookup after build: %+v", r)
	}
	r.release()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	builder, _ = venvLock(context.Background(), filepath.Join(cache, "k.lock"), unix.LOCK_EX)
	defer builder.Close()
	if _, err := m.cacheLookup(ctx, cache, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lookup should give up when its context ends, with the context's error wrapped: %v", err)
	}
}

// BenchmarkVenvCacheHit times prepare on a cache hit: interpreter from the
// remembered probe, key, lock, marker read, touch. No python runs.
func BenchmarkVenvCacheHit(b *testing.B) {
	bin := b.TempDir()
	venvFakePython(b, bin, "python3.10", "3.10.13")
	cache := filepath.Join(b.TempDir(), "cache")
	cfg := venvTestConfig(b, fmt.Sprintf("agent.venvs_cache.path: %q", cache), nil)
	m := newVenvManager(cfg, nil)
	m.pathEnv = bin
	spec := venvSpec{binary: "python3.10", requirements: []string{"numpy==1.26.4", "clearml==1.16.0", "torch==2.3.0"}, taskHasRequirements: true}
	in, err := m.selectInterpreter(context.Background(), spec.binary)
	if err != nil {
		b.Fatal(err)
	}
	reqs, _ := m.requirementsFor(spec)
	key, _ := m.cacheKey(in, m.tool(), reqs)
	venvFakeEntry(b, cache, key, time.Now(), venvMeta{PythonVersion: in.version, Frozen: []string{"numpy==1.26.4"}})
	m = newVenvManager(cfg, nil) // a fresh process: the probe comes from interpreters.json
	m.pathEnv = bin
	m.onExec = func([]string) { b.Fatal("a cache hit ran a process") }
	task := filepath.Join(b.TempDir(), "task")
	for b.Loop() {
		r, err := m.prepare(context.Background(), spec, task)
		if err != nil || !r.cacheHit {
			b.Fatal(r, err)
		}
		r.release()
	}
}

func TestVenvKeepLockAcrossExec(t *testing.T) {
	f, err := venvLock(context.Background(), filepath.Join(t.TempDir(), "k.lock"), unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	r := &venvResult{lock: f}
	defer r.release()
	if err := r.keepLockAcrossExec(); err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Errorf("FD_CLOEXEC still set: %#x %v", flags, err)
	}
}
