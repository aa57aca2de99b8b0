package main

// New venvs without a Python process (issue 13, part 4). `python -m venv`
// spends seconds in ensurepip; instead, once per interpreter, the agent
// makes a kit:
//
//	template  a venv made by `python -m venv --without-pip`, plus bin/pip scripts
//	seed      the pip (and, before Python 3.12, setuptools) wheels this
//	          interpreter's ensurepip would install, unpacked, compiled, read-only
//
// A task's venv is then the template's dozen files copied with their paths
// rewritten, and one line, site-packages/_clearml_seed.pth, that puts the
// seed on sys.path: `python -m pip` works as in an ensurepip venv (freeze,
// install; a task that upgrades pip gets its own copy in the venv, which
// shadows the seed; pip says the seed is "outside environment" and leaves
// it alone).
//
// Kits live under agent.venvs_cache.seed_path (default: the venv cache
// folder, else agent.venvs_dir), in .kits/<id>/, made under .kits/<id>.lock
// and published by rename. A portable venv (`build --target`) is made by
// `python -m venv` as before: it outlives the agent's folders and must not
// depend on them.

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// venvKit is what makes a new venv without running Python.
type venvKit struct {
	dir          string // .kits/<id>
	MadeAt       string `json:"made_at"`       // the path the template was made at (in its files)
	SitePackages string `json:"site_packages"` // relative: lib/python3.11/site-packages
	Pip          string `json:"pip"`           // the seed's pip version; "" without a seed
}

func (k *venvKit) template() string { return filepath.Join(k.dir, "venv") }
func (k *venvKit) seed() string     { return filepath.Join(k.dir, "seed") }

const venvSeedPth = "_clearml_seed.pth"

// errNoPipWheel: the interpreter has no bundled pip wheel (Debian's
// python3 without python3-venv): its venvs are made by python -m venv,
// which says what to install.
var errNoPipWheel = errors.New("no bundled pip wheel")

// seedRoot is where kits live: agent.venvs_cache.seed_path, else the venv
// cache, else agent.venvs_dir/.kits; "" when new venvs use python -m venv
// (a portable venv: `build --target`).
func (m *venvManager) seedRoot() string {
	if m.portable {
		return ""
	}
	dir := strings.TrimSpace(m.cfg.str("agent.venvs_cache.seed_path"))
	if dir == "" {
		dir = m.cacheDir()
	}
	if dir == "" {
		if dir = strings.TrimSpace(m.cfg.str("agent.venvs_dir")); dir == "" {
			return ""
		}
	}
	dir = expandHomeEnv(dir, m.envLookup())
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return dir
}

func venvKitID(in pyInterp) string {
	sum := sha256.Sum256([]byte(venvKeyVersion + "\n" + in.real + "\n" + in.version + "\n" + venvFingerprint(in.real)))
	return hex.EncodeToString(sum[:])[:20]
}

// kit returns the interpreter's kit, making it the first time (seconds,
// once); nil, nil when there is no seed root.
func (m *venvManager) kit(ctx context.Context, in pyInterp) (*venvKit, error) {
	root := m.seedRoot()
	if root == "" {
		return nil, nil
	}
	id := venvKitID(in)
	m.mu.Lock()
	k := m.kits[id]
	m.mu.Unlock()
	if k != nil {
		return k, nil
	}
	kits := filepath.Join(root, ".kits")
	dir := filepath.Join(kits, id)
	k, err := venvLoadKit(dir)
	if err != nil {
		if err := os.MkdirAll(kits, 0o755); err != nil {
			return nil, err
		}
		lock, err := venvLock(ctx, dir+".lock", unix.LOCK_EX)
		if err != nil {
			return nil, err
		}
		defer lock.Close()
		if k, err = venvLoadKit(dir); err != nil {
			m.logf("Preparing the venv template and pip seed for %s (once per interpreter)", in.real)
			if k, err = m.makeKit(ctx, in, kits, dir); err != nil {
				return nil, err
			}
		}
	}
	m.mu.Lock()
	if m.kits == nil {
		m.kits = map[string]*venvKit{}
	}
	m.kits[id] = k
	m.mu.Unlock()
	return k, nil
}

func venvLoadKit(dir string) (*venvKit, error) {
	data, err := os.ReadFile(filepath.Join(dir, "kit.json"))
	if err != nil {
		return nil, err
	}
	k := &venvKit{dir: dir}
	if err := json.Unmarshal(data, k); err != nil {
		return nil, err
	}
	return k, nil
}

// makeKit builds a kit in a temp folder beside dir and renames it into place.
func (m *venvManager) makeKit(ctx context.Context, in pyInterp, kits, dir string) (*venvKit, error) {
	tmp, err := os.MkdirTemp(kits, ".tmp-"+filepath.Base(dir)+"-")
	if err != nil {
		return nil, err
	}
	defer venvRemoveAll(tmp)
	var out bytes.Buffer
	run := func(argv ...string) error {
		out.Reset()
		if err := m.run(ctx, "", &out, &out, argv...); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	}
	k := &venvKit{dir: dir, MadeAt: filepath.Join(tmp, "venv")}
	if err := run(in.real, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"); err != nil {
		return nil, err
	}
	wheels := venvBundledWheels(strings.TrimSpace(out.String()), in.version)
	if wheels["pip"] == "" {
		return nil, errNoPipWheel
	}
	if err := run(in.real, "-m", "venv", "--without-pip", k.MadeAt); err != nil {
		return nil, err
	}
	sp, _ := filepath.Glob(filepath.Join(k.MadeAt, "lib", "python*", "site-packages"))
	if len(sp) != 1 {
		return nil, fmt.Errorf("the venv made by %s has no site-packages", in.real)
	}
	k.SitePackages, _ = filepath.Rel(k.MadeAt, sp[0])
	seed := filepath.Join(tmp, "seed")
	for _, w := range wheels {
		if err := venvUnzip(w, seed); err != nil {
			return nil, err
		}
	}
	// Compiled once, with the final path in tracebacks: the seed is read-only.
	if err := run(in.real, "-m", "compileall", "-q", "-j", "0", "-d", filepath.Join(dir, "seed"), seed); err != nil {
		return nil, err
	}
	if err := venvReadOnly(seed, true); err != nil {
		return nil, err
	}
	k.Pip = venvWheelVersion(wheels["pip"])
	if err := venvWritePipScripts(k.MadeAt, in.version); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(k)
	if err := os.WriteFile(filepath.Join(tmp, "kit.json"), data, 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return k, nil
}

// venvBundledWheels finds the wheels ensurepip would install: the
// stdlib's ensurepip/_bundled, else Debian's /usr/share/python-wheels for
// its own interpreters. The newest of each; setuptools only before 3.12.
func venvBundledWheels(stdlib, version string) map[string]string {
	want := []string{"pip"}
	if v := strings.SplitN(version, ".", 3); len(v) >= 2 {
		if minor, _ := strconv.Atoi(v[1]); v[0] == "3" && minor < 12 {
			want = append(want, "setuptools")
		}
	}
	dirs := []string{filepath.Join(stdlib, "ensurepip", "_bundled")}
	if strings.HasPrefix(stdlib, "/usr/lib/") {
		dirs = append(dirs, "/usr/share/python-wheels")
	}
	out := map[string]string{}
	for _, d := range dirs {
		for _, name := range want {
			if out[name] != "" {
				continue
			}
			found, _ := filepath.Glob(filepath.Join(d, name+"-*.whl"))
			sort.Slice(found, func(i, j int) bool {
				return torchCompare(torchRelease(venvWheelVersion(found[i])), torchRelease(venvWheelVersion(found[j]))) < 0
			})
			if len(found) > 0 {
				out[name] = found[len(found)-1]
			}
		}
	}
	if out["pip"] == "" {
		return nil
	}
	return out
}

// venvWheelVersion is the version in a wheel's file name.
func venvWheelVersion(path string) string {
	parts := strings.Split(filepath.Base(path), "-")
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// venvUnzip unpacks a wheel into dir.
func venvUnzip(whl, dir string) error {
	zr, err := zip.OpenReader(whl)
	if err != nil {
		return err
	}
	defer zr.Close()
	root := filepath.Clean(dir) + string(filepath.Separator)
	buf := make([]byte, 32<<10) // one for all: pip's wheel has ~1,000 files
	for _, f := range zr.File {
		dst := filepath.Join(dir, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(dst, root) {
			return fmt.Errorf("%s: bad path %q", whl, f.Name)
		}
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := venvUnzipFile(f, dst, buf); err != nil {
			return fmt.Errorf("%s: %w", whl, err)
		}
	}
	return nil
}

func venvUnzipFile(f *zip.File, dst string, buf []byte) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// Only the Writer: *os.File's ReadFrom would allocate its own buffer.
	_, err = io.CopyBuffer(struct{ io.Writer }{w}, rc, buf)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// venvReadOnly drops the write bits of every file under dir (and of the
// folders too when dirs), so a task (not root) cannot change shared files.
func venvReadOnly(dir string, dirs bool) error {
	var folders []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if d.IsDir() {
			folders = append(folders, p)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.Chmod(p, fi.Mode().Perm()&^0o222)
	})
	if err != nil || !dirs {
		return err
	}
	for _, f := range folders {
		if err := os.Chmod(f, 0o555); err != nil {
			return err
		}
	}
	return nil
}

// venvRemoveAll removes a tree that may hold read-only folders.
func venvRemoveAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

const venvPipScript = `#!%s
# -*- coding: utf-8 -*-
import re
import sys
from pip._internal.cli.main import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\.pyw|\.exe)?$", "", sys.argv[0])
    sys.exit(main())
`

// venvWritePipScripts adds bin/pip, pip3 and pip3.X, as ensurepip does, so
// a task that runs `pip install` gets the venv's pip, not the system's.
func venvWritePipScripts(venv, version string) error {
	mm := strings.Join(strings.SplitN(version, ".", 3)[:2], ".")
	body := fmt.Sprintf(venvPipScript, filepath.Join(venv, "bin", "python"))
	for _, n := range []string{"pip", "pip" + strings.SplitN(mm, ".", 2)[0], "pip" + mm} {
		if err := os.WriteFile(filepath.Join(venv, "bin", n), []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// venvFromKit makes a venv at dir from the kit: the template's files with
// its path replaced by dir, include-system-site-packages as configured,
// and the seed's .pth line.
func venvFromKit(k *venvKit, dir string, systemSitePackages bool) error {
	tmpl := k.template()
	err := filepath.WalkDir(tmpl, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tmpl, p)
		dst := filepath.Join(dir, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(strings.ReplaceAll(target, k.MadeAt, dir), dst)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		data = bytes.ReplaceAll(data, []byte(k.MadeAt), []byte(dir))
		if rel == "pyvenv.cfg" {
			data = venvSetSystemSitePackages(data, systemSitePackages)
		}
		return os.WriteFile(dst, data, fi.Mode().Perm())
	})
	if err != nil || k.Pip == "" {
		return err
	}
	line := fmt.Sprintf("import site; site.addsitedir(%s)\n", strconv.Quote(k.seed()))
	return os.WriteFile(filepath.Join(dir, k.SitePackages, venvSeedPth), []byte(line), 0o644)
}

func venvSetSystemSitePackages(cfg []byte, on bool) []byte {
	lines := strings.Split(string(cfg), "\n")
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "include-system-site-packages" {
			lines[i] = "include-system-site-packages = " + strconv.FormatBool(on)
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

// venvSeedOf is the seed folder a venv's site-packages points at ("" for none).
func venvSeedOf(sitePackages string) string {
	data, err := os.ReadFile(filepath.Join(sitePackages, venvSeedPth))
	if err != nil {
		return ""
	}
	_, rest, ok := strings.Cut(string(data), "addsitedir(")
	if !ok {
		return ""
	}
	q, _, _ := strings.Cut(rest, ")")
	s, err := strconv.Unquote(q)
	if err != nil {
		return ""
	}
	return s
}
