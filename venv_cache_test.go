package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// venvFakeEntry makes a complete, sealed cache entry last used at `used`.
func venvFakeEntry(t testing.TB, cache, key string, used time.Time, meta venvMeta) {
	t.Helper()
	dir := filepath.Join(cache, key)
	venvWrite(t, filepath.Join(dir, "bin", "python"), "#!/bin/sh\n# "+dir+"\n", 0o755)
	venvWrite(t, filepath.Join(dir, "lib", "python3.10", "site-packages", "demo", "__init__.py"), "", 0o644)
	if err := venvSeal(dir); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf(`{"key":%q,"python_version":%q,"frozen":%q,"built_at":%q}`, key, meta.PythonVersion, meta.Frozen, dir)
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
		r, _ := m.cacheLookup(context.Background(), cache, "k", filepath.Join(t.TempDir(), "task"))
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
	if _, err := m.cacheLookup(ctx, cache, "k", filepath.Join(t.TempDir(), "task")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lookup should give up when its context ends, with the context's error wrapped: %v", err)
	}
}

// BenchmarkVenvCacheHit times prepare on a cache hit of a small entry:
// interpreter from the remembered probe, plan (PyTorch: no GPU here, the
// CPU index), key, lock, the checked hard-link copy. No python runs.
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
	plan, err := m.planRequirements(context.Background(), spec, in, venvTool{}, reqs)
	if err != nil {
		b.Fatal(err)
	}
	key := m.cacheKey(in, venvTool{}, plan)
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

// venvFakeTree adds n small files (and their folders, 50 files each) under
// the entry's site-packages, like a venv with many packages.
func venvFakeTree(t testing.TB, entry string, n int) {
	t.Helper()
	sp := filepath.Join(entry, "lib", "python3.10", "site-packages")
	for i := 0; i < n; i++ {
		dir := filepath.Join(sp, fmt.Sprintf("pkg%03d", i/50))
		if i%50 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("m%d.py", i)), []byte("X = 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVenvCacheImmutable: a task's changes to its copy never reach the
// entry; an in-place write through a hard link is caught at the next hit.
func TestVenvCacheImmutable(t *testing.T) {
	cache := t.TempDir()
	m := newVenvManager(venvTestConfig(t, "", nil), nil)
	venvFakeTree(t, filepath.Join(cache, "k"), 120)
	venvFakeEntry(t, cache, "k", time.Now(), venvMeta{PythonVersion: "3.10.13", Frozen: []string{"a==1"}})
	ctx := context.Background()
	task1 := filepath.Join(t.TempDir(), "task1")
	r, err := m.cacheLookup(ctx, cache, "k", task1)
	if err != nil || r == nil || r.dir != task1 || r.python != filepath.Join(task1, "bin", "python") {
		t.Fatalf("hit: %+v %v", r, err)
	}
	script, _ := os.ReadFile(filepath.Join(task1, "bin", "python"))
	if !strings.Contains(string(script), task1) || strings.Contains(string(script), filepath.Join(cache, "k")) {
		t.Errorf("bin/ script not rewritten for the task:\n%s", script)
	}
	sp := filepath.Join(task1, "lib", "python3.10", "site-packages")
	// What pip and editors do: new files, replaced files, removed files.
	venvWrite(t, filepath.Join(sp, "zz_poison.pth"), "import os\n", 0o644)
	venvWrite(t, filepath.Join(sp, "pkg000", "m0.py.tmp"), "X = 2\n", 0o644)
	if err := os.Rename(filepath.Join(sp, "pkg000", "m0.py.tmp"), filepath.Join(sp, "pkg000", "m0.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(sp, "pkg001", "m50.py")); err != nil {
		t.Fatal(err)
	}
	task2 := filepath.Join(t.TempDir(), "task2")
	if r, err := m.cacheLookup(ctx, cache, "k", task2); err != nil || r == nil {
		t.Fatalf("second hit: %+v %v", r, err)
	}
	sp2 := filepath.Join(task2, "lib", "python3.10", "site-packages")
	if data, _ := os.ReadFile(filepath.Join(sp2, "pkg000", "m0.py")); string(data) != "X = 1\n" {
		t.Errorf("a replaced file reached the entry: %q", data)
	}
	if _, err := os.Stat(filepath.Join(sp2, "zz_poison.pth")); err == nil {
		t.Error("a new .pth reached the entry")
	}
	if _, err := os.Stat(filepath.Join(sp2, "pkg001", "m50.py")); err != nil {
		t.Error("a removed file went from the entry")
	}
	// An in-place write goes through the link (root ignores the read-only
	// mode): the next hit sees the change and drops the entry.
	f, err := os.OpenFile(filepath.Join(sp2, "pkg002", "m100.py"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		if os.Geteuid() != 0 {
			t.Logf("in-place write refused (not root): %v", err)
			return
		}
		t.Fatal(err)
	}
	f.WriteString("import os\n")
	f.Close()
	var log strings.Builder
	m.log = &log
	task3 := filepath.Join(t.TempDir(), "task3")
	if r, err := m.cacheLookup(ctx, cache, "k", task3); err != nil || r != nil {
		t.Fatalf("a modified entry was used: %+v %v", r, err)
	}
	if !strings.Contains(log.String(), "changed since it was cached: lib/python3.10/site-packages/pkg002/m100.py") {
		t.Errorf("log: %s", log.String())
	}
	if ents, _ := os.ReadDir(task3); len(ents) != 0 {
		t.Errorf("the half copy was left in the task folder: %v", ents)
	}
}

// BenchmarkVenvCacheHitCopy times the copy of a hit for an entry of 10,000
// files (goal < 300 ms) and of a small one (goal < 50 ms), and reports the
// CPU time too (the machine is shared).
func BenchmarkVenvCacheHitCopy(b *testing.B) {
	for _, n := range []int{50, 10000} {
		b.Run(fmt.Sprint(n, "files"), func(b *testing.B) {
			cache := b.TempDir()
			m := newVenvManager(venvTestConfig(b, "", nil), nil)
			venvFakeTree(b, filepath.Join(cache, "k"), n-2)
			venvFakeEntry(b, cache, "k", time.Now(), venvMeta{PythonVersion: "3.10.13"})
			tasks := b.TempDir()
			var cpu time.Duration
			i := 0
			for b.Loop() {
				c0 := venvCPUTime()
				r, err := m.cacheLookup(context.Background(), cache, "k", filepath.Join(tasks, fmt.Sprint(i)))
				cpu += venvCPUTime() - c0
				if err != nil || r == nil {
					b.Fatal(r, err)
				}
				i++
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// venvCPUTime is this process's user+system time.
func venvCPUTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
