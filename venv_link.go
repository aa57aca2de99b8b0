package main

// The immutable venv cache's copy (issue 13, part 2b). A task never runs in
// a cache entry: a hit gives it a copy of the entry in its own folder, made
// of hard links (a link per file, so 10,000 files cost about 0.1 s of CPU),
// in private folders. What a task does there stays there: pip installs,
// upgrades and uninstalls, new .pth files and edits that replace a file
// (editors, sed -i) all change the task's folders, not the entry's. The
// one write that reaches the entry is an in-place write to a linked file:
// entry files are read-only (a task that is not root gets EACCES), and the
// manifest written at publish time (size and mtime of every file, in walk
// order) is checked in the same walk that makes the links, so the next task
// finds a changed entry, drops it and builds afresh. bin/ scripts and
// pyvenv.cfg hold the path the entry was built at; they are written anew
// with the task's path.
//
// Why not a thin venv layered over the entry (a .pth pointing at it): O(1),
// but edits that replace a file, `pip uninstall`, console scripts and data
// files of cached packages would all be the entry's (py-design.md §9).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const venvManifestName = ".clearml-manifest"

// venvRecord is one manifest line: kind 'd', 'f' or 'l', the path relative
// to the entry, and size and mtime (files) or target (links).
type venvRecord struct {
	kind   byte
	rel    string
	size   int64
	mtime  int64
	target string
}

func (r venvRecord) line() string {
	return fmt.Sprintf("%c\t%d\t%d\t%s\t%s\n", r.kind, r.size, r.mtime, venvQuoteName(r.rel), venvQuoteName(r.target))
}

func venvQuoteName(s string) string {
	if strings.ContainsAny(s, "\t\n\"") {
		return strconv.Quote(s)
	}
	return s
}

func venvUnquoteName(s string) string {
	if strings.HasPrefix(s, `"`) {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}

func venvReadManifest(entry string) ([]venvRecord, error) {
	data, err := os.ReadFile(filepath.Join(entry, venvManifestName))
	if err != nil {
		return nil, err
	}
	recs := make([]venvRecord, 0, bytes.Count(data, []byte{'\n'}))
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 5)
		if len(f) != 5 || len(f[0]) != 1 {
			return nil, fmt.Errorf("bad manifest line %q", sc.Text())
		}
		size, _ := strconv.ParseInt(f[1], 10, 64)
		mtime, _ := strconv.ParseInt(f[2], 10, 64)
		recs = append(recs, venvRecord{kind: f[0][0], size: size, mtime: mtime, rel: venvUnquoteName(f[3]), target: venvUnquoteName(f[4])})
	}
	return recs, sc.Err()
}

// errVenvModified: an entry's files differ from its manifest.
type errVenvModified struct{ rel string }

func (e *errVenvModified) Error() string { return "changed since it was cached: " + e.rel }

// venvWalker walks an entry with *at system calls. Without dst it only
// visits, in a fixed order (sorted names, depth first), to write the
// manifest; with dst it makes the task's copy, checking each entry against
// the manifest (index), several folders at once: on a loaded machine more
// runnable threads get more of the CPU, and the work is system calls.
type venvWalker struct {
	src     string
	dst     string                // "" to only visit
	oldPath string                // the path the entry was built at
	index   map[string]venvRecord // the manifest to check; nil: record into got
	got     []venvRecord
	visit   func(fd int, name string, st *unix.Stat_t) error // publish: chmod

	seen     atomic.Int64 // entries checked against index
	copyData atomic.Bool  // no hard links (another filesystem): copies
	sem      chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
}

func (w *venvWalker) run() error {
	src, err := os.Open(w.src)
	if err != nil {
		return err
	}
	defer src.Close()
	var dst *os.File
	if w.dst != "" {
		if err := os.MkdirAll(w.dst, 0o755); err != nil {
			return err
		}
		if dst, err = os.Open(w.dst); err != nil {
			return err
		}
		defer dst.Close()
		w.sem = make(chan struct{}, max(runtime.GOMAXPROCS(0), 2)-1)
	}
	w.fail(w.dir(src, dst, ""))
	w.wg.Wait()
	if w.err != nil {
		return w.err
	}
	if w.index != nil && int(w.seen.Load()) != len(w.index) {
		return &errVenvModified{rel: fmt.Sprintf("%d of its %d files or folders are gone", len(w.index)-int(w.seen.Load()), len(w.index))}
	}
	return nil
}

// fail keeps the first error; later work stops early.
func (w *venvWalker) fail(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *venvWalker) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err != nil
}

// check compares a record with the manifest (or records it).
func (w *venvWalker) check(r venvRecord) error {
	if w.index == nil {
		w.got = append(w.got, r)
		return nil
	}
	if e, ok := w.index[r.rel]; !ok || e != r {
		return &errVenvModified{rel: r.rel}
	}
	w.seen.Add(1)
	return nil
}

func (w *venvWalker) dir(src, dst *os.File, rel string) error {
	names, err := src.Readdirnames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names)
	sfd := int(src.Fd())
	dfd := -1
	if dst != nil {
		dfd = int(dst.Fd())
	}
	for _, name := range names {
		if rel == "" && (name == venvMetaName || name == venvManifestName) {
			continue
		}
		if w.sem != nil && w.failed() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(w.src, rel, name), err)
		}
		r := venvRecord{rel: rel + name}
		var err error
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			r.kind = 'd'
			if err = w.check(r); err == nil {
				err = w.subdir(sfd, dfd, name, r.rel+"/")
			}
		case unix.S_IFLNK:
			r.kind = 'l'
			if r.target, err = venvReadlinkat(sfd, name); err == nil {
				if err = w.check(r); err == nil && dfd >= 0 {
					err = unix.Symlinkat(strings.ReplaceAll(r.target, w.oldPath, w.dst), dfd, name)
				}
			}
		case unix.S_IFREG:
			r.kind, r.size, r.mtime = 'f', st.Size, st.Mtim.Nano()
			if err = w.check(r); err == nil {
				err = w.file(sfd, dfd, name, r.rel, &st)
			}
		default:
			continue // sockets, fifos: not part of a venv
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// subdir walks a folder: in a goroutine of its own while there is a free
// slot (copies only), else here.
func (w *venvWalker) subdir(sfd, dfd int, name, rel string) error {
	cfd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(w.src, rel), err)
	}
	child := os.NewFile(uintptr(cfd), filepath.Join(w.src, rel))
	var dchild *os.File
	if dfd >= 0 {
		if err := unix.Mkdirat(dfd, name, 0o755); err != nil && err != unix.EEXIST {
			child.Close()
			return fmt.Errorf("%s: %w", filepath.Join(w.dst, rel), err)
		}
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			child.Close()
			return fmt.Errorf("%s: %w", filepath.Join(w.dst, rel), err)
		}
		dchild = os.NewFile(uintptr(fd), filepath.Join(w.dst, rel))
	}
	walk := func() error {
		defer child.Close()
		if dchild != nil {
			defer dchild.Close()
		}
		return w.dir(child, dchild, rel)
	}
	if w.sem != nil {
		select {
		case w.sem <- struct{}{}:
			w.wg.Add(1)
			go func() {
				defer func() { <-w.sem; w.wg.Done() }()
				w.fail(walk())
			}()
			return nil
		default:
		}
	}
	return walk()
}

func venvReadlinkat(fd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// file links (or copies) one file; bin/ scripts and pyvenv.cfg that name
// the build path are written anew.
func (w *venvWalker) file(sfd, dfd int, name, rel string, st *unix.Stat_t) error {
	if w.visit != nil {
		if err := w.visit(sfd, name, st); err != nil {
			return err
		}
	}
	if dfd < 0 {
		return nil
	}
	if (strings.HasPrefix(rel, "bin/") || rel == "pyvenv.cfg") && st.Size < 4<<20 {
		data, err := venvReadAt(sfd, name)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(w.oldPath)) && bytes.IndexByte(data[:min(len(data), 8192)], 0) < 0 {
			data = bytes.ReplaceAll(data, []byte(w.oldPath), []byte(w.dst))
			return venvWriteAt(dfd, name, data, uint32(st.Mode)&0o777|0o200)
		}
	}
	if !w.copyData.Load() {
		err := unix.Linkat(sfd, name, dfd, name, 0)
		if err != unix.EXDEV && err != unix.EPERM && err != unix.EMLINK {
			if err != nil {
				return fmt.Errorf("%s: link: %w", filepath.Join(w.dst, rel), err)
			}
			return nil
		}
		w.copyData.Store(true) // another filesystem: copies from here on
	}
	data, err := venvReadAt(sfd, name)
	if err != nil {
		return err
	}
	if err := venvWriteAt(dfd, name, data, uint32(st.Mode)&0o777|0o200); err != nil {
		return err
	}
	// Keep the mtime: .pyc files are checked against their source's.
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(dfd, name, ts, 0)
}

func venvReadAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(f)
}

func venvWriteAt(dirfd int, name string, data []byte, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// venvSeal makes a built entry immutable: its files read-only, and the
// manifest the hits check.
func venvSeal(entry string) error {
	w := &venvWalker{src: entry, visit: func(fd int, name string, st *unix.Stat_t) error {
		if st.Mode&0o222 == 0 {
			return nil
		}
		err := unix.Fchmodat(fd, name, uint32(st.Mode)&0o7777&^0o222, 0)
		st.Mode &^= 0o222
		return err
	}}
	if err := w.run(); err != nil {
		return err
	}
	var b strings.Builder
	for _, r := range w.got {
		b.WriteString(r.line())
	}
	return os.WriteFile(filepath.Join(entry, venvManifestName), []byte(b.String()), 0o444)
}

// venvCopyEntry makes the task's copy of entry at dst, checking the
// manifest as it goes. An *errVenvModified means the entry was tampered
// with; dst is then left half made (the caller empties it).
func venvCopyEntry(entry, builtAt, dst string) (copied bool, err error) {
	recs, err := venvReadManifest(entry)
	if err != nil {
		return false, &errVenvModified{rel: venvManifestName}
	}
	index := make(map[string]venvRecord, len(recs))
	for _, r := range recs {
		index[r.rel] = r
	}
	w := &venvWalker{src: entry, dst: dst, oldPath: builtAt, index: index}
	err = w.run()
	var mod *errVenvModified
	if err != nil && !errors.As(err, &mod) {
		err = fmt.Errorf("copying the cached venv: %w", err)
	}
	return w.copyData.Load(), err
}
