package main

// Offline Python packaging for tests: small valid wheels built on the fly,
// a PEP 503 "simple" index served on loopback (several indexes side by side,
// laid out like download.pytorch.org: /whl/cu118/, /whl/cu121/, /whl/cpu/),
// and fast venvs whose pip is seeded from the interpreter's bundled wheel
// instead of ensurepip.
//
//	x := newPyTestIndex(t)
//	x.Add("/whl/cu118/", pyTestWheel(t, dir, pyWheel{Name: "torch", Version: "2.1.0+cu118"}))
//	pip install --index-url x.URL("/simple/") --extra-index-url x.URL("/whl/cu118/") ...
//	x.Requests()   // every path asked for, in order (probing tests)

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// pyWheel describes a wheel for pyTestWheel. Only Name and Version are
// required; the wheel then holds one module that knows its version.
type pyWheel struct {
	Name     string            // project name as published ("Foo_Bar" is fine)
	Version  string            // may carry a local label: "2.1.0+cu118"
	Tag      string            // compatibility tag; default "py3-none-any"
	Requires []string          // Requires-Dist values, e.g. "numpy>=1.0"
	Files    map[string]string // extra files, path in the wheel -> content
}

// pyDistName is the name as wheel and sdist file names spell it (PEP 427).
func pyDistName(name string) string {
	return strings.ReplaceAll(pyNormalizeName(name), "-", "_")
}

// pyTestWheel writes the wheel into dir and returns its path. The module
// (the normalized name with "_") has VERSION set to the full version, so a
// test can tell +cu118 from +cu121 from the installed code.
func pyTestWheel(t testing.TB, dir string, w pyWheel) string {
	t.Helper()
	if w.Tag == "" {
		w.Tag = "py3-none-any"
	}
	mod := pyDistName(w.Name)
	info := fmt.Sprintf("%s-%s.dist-info", mod, w.Version)
	meta := fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", w.Name, w.Version)
	for _, r := range w.Requires {
		meta += "Requires-Dist: " + r + "\n"
	}
	files := map[string]string{
		mod + "/__init__.py": fmt.Sprintf("VERSION = %q\n", w.Version),
		info + "/METADATA":   meta,
		info + "/WHEEL":      "Wheel-Version: 1.0\nGenerator: clearml-agent-tests\nRoot-Is-Purelib: true\nTag: " + w.Tag + "\n",
	}
	for k, v := range w.Files {
		files[k] = v
	}
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, n := range names {
		fw, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(files[n]))
		sum := sha256.Sum256([]byte(files[n]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", n, base64.RawURLEncoding.EncodeToString(sum[:]), len(files[n]))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", info)
	fw, _ := zw.Create(info + "/RECORD")
	fw.Write([]byte(record.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	// A local label's "+" stays literal in the file name, as on download.pytorch.org.
	p := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.whl", mod, w.Version, w.Tag))
	venvWrite(t, p, buf.String(), 0o644)
	return p
}

// pyTestSdist writes NAME-VERSION.tar.gz: a pyproject.toml project built by
// setuptools' legacy backend, installable offline with --no-build-isolation
// (setuptools must be in the venv). It stands for packages that only ship
// source, such as ones that need Cython at build time.
func pyTestSdist(t testing.TB, dir, name, version string) string {
	t.Helper()
	mod := pyDistName(name)
	root := fmt.Sprintf("%s-%s", mod, version)
	files := map[string]string{
		root + "/pyproject.toml":          "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta:__legacy__\"\n",
		root + "/setup.py":                fmt.Sprintf("from setuptools import setup\nsetup(name=%q, version=%q, packages=[%q])\n", name, version, mod),
		root + "/" + mod + "/__init__.py": fmt.Sprintf("VERSION = %q\n", version),
		root + "/PKG-INFO":                fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", name, version),
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	p := filepath.Join(dir, root+".tar.gz")
	venvWrite(t, p, buf.String(), 0o644)
	return p
}

// pyTestIndex is a set of PEP 503 indexes on one loopback server. Each index
// lives at its own path ("/simple/", "/whl/cu118/"); a path no index was
// added at answers 404, as a missing CUDA build does on download.pytorch.org.
type pyTestIndex struct {
	srv *httptest.Server

	mu       sync.Mutex
	indexes  map[string]map[string][]string // index path -> normalized project -> files
	requests []string
}

func newPyTestIndex(t testing.TB) *pyTestIndex {
	t.Helper()
	x := &pyTestIndex{indexes: map[string]map[string][]string{}}
	x.srv = httptest.NewServer(http.HandlerFunc(x.serve))
	t.Cleanup(x.srv.Close)
	return x
}

// Add publishes files (wheels or sdists) in the index at path, creating it.
func (x *pyTestIndex) Add(index string, files ...string) {
	index = pyIndexPath(index)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.indexes[index] == nil {
		x.indexes[index] = map[string][]string{}
	}
	for _, f := range files {
		proj := pyNormalizeName(pyFileProject(filepath.Base(f)))
		x.indexes[index][proj] = append(x.indexes[index][proj], f)
	}
}

// URL is the index's address, with the trailing slash pip expects.
func (x *pyTestIndex) URL(index string) string { return x.srv.URL + pyIndexPath(index) }

// Requests lists the paths asked for so far, in order.
func (x *pyTestIndex) Requests() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.requests...)
}

// Reset forgets the recorded requests.
func (x *pyTestIndex) Reset() {
	x.mu.Lock()
	x.requests = nil
	x.mu.Unlock()
}

func pyIndexPath(p string) string {
	p = "/" + strings.Trim(p, "/") + "/"
	if p == "//" {
		return "/"
	}
	return p
}

// pyFileProject is the project part of a distribution file name.
func pyFileProject(file string) string {
	if strings.HasSuffix(file, ".whl") {
		return strings.SplitN(file, "-", 2)[0]
	}
	base := strings.TrimSuffix(strings.TrimSuffix(file, ".tar.gz"), ".zip")
	if i := strings.LastIndex(base, "-"); i > 0 {
		return base[:i]
	}
	return base
}

func (x *pyTestIndex) serve(w http.ResponseWriter, r *http.Request) {
	x.mu.Lock()
	x.requests = append(x.requests, r.URL.Path)
	x.mu.Unlock()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	x.mu.Lock()
	defer x.mu.Unlock()
	// /files/<index>/<file>: the distributions themselves.
	if rest, ok := strings.CutPrefix(p, "/files"); ok {
		index, file := pyIndexPath(path.Dir(rest)), path.Base(rest)
		for _, files := range x.indexes[index] {
			for _, f := range files {
				if filepath.Base(f) == file {
					http.ServeFile(w, r, f)
					return
				}
			}
		}
		http.NotFound(w, r)
		return
	}
	if idx, ok := x.indexes[pyIndexPath(p)]; ok && strings.HasSuffix(p, "/") {
		x.writeRoot(w, idx)
		return
	}
	index, last := pyIndexPath(path.Dir(strings.TrimSuffix(p, "/"))), path.Base(p)
	idx, ok := x.indexes[index]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if strings.HasSuffix(last, ".html") {
		// A flat page of every file, like torch_stable.html (pytorch_resolve: direct).
		var all []string
		for _, files := range idx {
			all = append(all, files...)
		}
		x.writeLinks(w, index, all, "")
		return
	}
	if pyNormalizeName(last) != last {
		http.Redirect(w, r, index+pyNormalizeName(last)+"/", http.StatusMovedPermanently)
		return
	}
	files, ok := idx[last]
	if !ok || !strings.HasSuffix(p, "/") {
		http.NotFound(w, r)
		return
	}
	x.writeLinks(w, index, files, last)
}

func (x *pyTestIndex) writeRoot(w http.ResponseWriter, idx map[string][]string) {
	var names []string
	for n := range idx {
		names = append(names, n)
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprint(w, "<!DOCTYPE html>\n<html><body>\n")
	for _, n := range names {
		fmt.Fprintf(w, "<a href=\"%s/\">%s</a><br/>\n", n, html.EscapeString(n))
	}
	fmt.Fprint(w, "</body></html>\n")
}

func (x *pyTestIndex) writeLinks(w http.ResponseWriter, index string, files []string, project string) {
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html><head><title>Links for %s</title></head><body>\n", html.EscapeString(project))
	sorted := append([]string(nil), files...)
	sort.Strings(sorted)
	for _, f := range sorted {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sum := sha256.Sum256(data)
		name := filepath.Base(f)
		// "+" is escaped in links, as download.pytorch.org does.
		href := "/files" + index + strings.ReplaceAll(url.PathEscape(name), "+", "%2B") + "#sha256=" + hex.EncodeToString(sum[:])
		fmt.Fprintf(w, "<a href=\"%s\">%s</a><br/>\n", html.EscapeString(href), html.EscapeString(name))
	}
	fmt.Fprint(w, "</body></html>\n")
}

// ---- fast venvs for tests ----

// pyNeedPython returns python3's path, or skips (fails when CI=true) when
// there is no python3 with the venv module.
func pyNeedPython(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Python")
	}
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import venv").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with the venv module is needed on CI: %v", err)
		}
		t.Skipf("python3 with the venv module is needed: %v", err)
	}
	return py
}

var pyTestSeeds sync.Map // interpreter -> *pyTestSeed

type pyTestSeed struct {
	once sync.Once
	dir  string
	err  error
}

// pyTestPipSeed unpacks the pip wheel that the interpreter's ensurepip
// would install (Debian keeps it in /usr/share/python-wheels) into a folder
// shared by the tests of this process, and compiles it once.
func pyTestPipSeed(t testing.TB, python string) string {
	t.Helper()
	v, _ := pyTestSeeds.LoadOrStore(python, &pyTestSeed{})
	s := v.(*pyTestSeed)
	s.once.Do(func() {
		out, err := exec.Command(python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").Output()
		if err != nil {
			s.err = fmt.Errorf("%s: %v", python, err)
			return
		}
		stdlib := strings.TrimSpace(string(out))
		var wheels []string
		for _, g := range []string{filepath.Join(stdlib, "ensurepip", "_bundled", "pip-*.whl"), "/usr/share/python-wheels/pip-*.whl"} {
			m, _ := filepath.Glob(g)
			wheels = append(wheels, m...)
		}
		if len(wheels) == 0 {
			s.err = fmt.Errorf("no bundled pip wheel for %s", python)
			return
		}
		s.dir, s.err = pyTestBuildSeed(python, wheels[0])
	})
	if s.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot seed pip: %v", s.err)
		}
		t.Skipf("cannot seed pip: %v", s.err)
	}
	return s.dir
}

// pyTestBuildSeed unpacks and compiles the wheel into a folder named by
// the interpreter and the wheel, reused by later runs.
func pyTestBuildSeed(python, wheel string) (string, error) {
	real, err := filepath.EvalSymlinks(python)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(wheel)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%d|%d", real, wheel, fi.Size(), fi.ModTime().UnixNano())))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("clearml-test-pipseed-%x", sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "pip")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp("", "clearml-test-pipseed-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := pyUnzip(wheel, tmp); err != nil {
		return "", err
	}
	if out, err := exec.Command(python, "-m", "compileall", "-q", tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("compileall: %v: %s", err, out)
	}
	os.Chmod(tmp, 0o755)
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "pip")); serr != nil {
			return "", err
		}
	}
	return dir, nil
}

func pyUnzip(whl, dir string) error {
	zr, err := zip.OpenReader(whl)
	if err != nil {
		return err
	}
	defer zr.Close()
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(dst, filepath.Clean(dir)+string(filepath.Separator)) {
			return fmt.Errorf("%s: bad path %q", whl, f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		var b bytes.Buffer
		_, err = b.ReadFrom(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pyTestVenv makes a venv without ensurepip and seeds pip through a .pth
// that adds the shared seed folder (a few milliseconds instead of seconds).
// It returns the venv's python.
func pyTestVenv(t testing.TB, python, dir string) string {
	t.Helper()
	seed := pyTestPipSeed(t, python)
	if out, err := exec.Command(python, "-m", "venv", "--without-pip", dir).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v: %s", err, out)
	}
	sp, err := filepath.Glob(filepath.Join(dir, "lib", "python3*", "site-packages"))
	if err != nil || len(sp) != 1 {
		t.Fatalf("venv %s: no site-packages (%v)", dir, sp)
	}
	venvWrite(t, filepath.Join(sp[0], "_clearml_pip_seed.pth"), fmt.Sprintf("import site; site.addsitedir(%q)\n", seed), 0o644)
	return filepath.Join(dir, "bin", "python")
}

// pyTestPip runs `python -m pip ARGS` offline (no config file, no cache,
// no version check) and returns its output.
func pyTestPip(t testing.TB, python string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(python, append([]string{"-m", "pip", "--no-cache-dir", "--disable-pip-version-check"}, args...)...)
	cmd.Env = append(pyTestCleanEnv(), "PIP_CONFIG_FILE="+os.DevNull, "PIP_NO_INPUT=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pyTestCleanEnv is the environment minus anything that steers pip, uv,
// poetry or Python elsewhere.
func pyTestCleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PIP_") || strings.HasPrefix(k, "UV_") || strings.HasPrefix(k, "POETRY_") ||
			k == "PYTHONPATH" || k == "PYTHONHOME" || k == "VIRTUAL_ENV" || k == "CONDA_PREFIX" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// pyTestImport runs python -c "import mod; print(mod.VERSION)".
func pyTestImport(t testing.TB, python, mod string) string {
	t.Helper()
	out, err := exec.Command(python, "-c", "import "+mod+"; print("+mod+".VERSION)").CombinedOutput()
	if err != nil {
		t.Fatalf("import %s: %v: %s", mod, err, out)
	}
	return strings.TrimSpace(string(out))
}

// ---- tests of the infrastructure ----

func TestPyTestIndexServesTorchBuilds(t *testing.T) {
	py := pyNeedPython(t)
	root := t.TempDir()
	x := newPyTestIndex(t)
	for _, local := range []string{"cu118", "cu121", "cpu"} {
		x.Add("/whl/"+local+"/", pyTestWheel(t, filepath.Join(root, local), pyWheel{Name: "torch", Version: "2.1.0+" + local}))
	}
	x.Add("/simple/", pyTestWheel(t, filepath.Join(root, "pypi"), pyWheel{Name: "torch", Version: "2.1.0"}),
		pyTestWheel(t, filepath.Join(root, "pypi"), pyWheel{Name: "Typing_Extensions", Version: "4.8.0"}))
	venvPy := pyTestVenv(t, py, filepath.Join(root, "venv"))

	// The pinned local version from its own index, as --index-url.
	if out, err := pyTestPip(t, venvPy, "install", "--index-url", x.URL("/whl/cu118/"), "torch==2.1.0+cu118"); err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	if got := pyTestImport(t, venvPy, "torch"); got != "2.1.0+cu118" {
		t.Fatalf("installed torch %s, want 2.1.0+cu118", got)
	}
	reqs := strings.Join(x.Requests(), " ")
	if !strings.Contains(reqs, "/whl/cu118/torch/") || !strings.Contains(reqs, "/files/whl/cu118/torch-2.1.0+cu118-py3-none-any.whl") {
		t.Errorf("requests %s: want the project page and the wheel of /whl/cu118/", reqs)
	}
	if strings.Contains(reqs, "cu121") || strings.Contains(reqs, "/simple/") {
		t.Errorf("requests %s: only /whl/cu118/ was named", reqs)
	}

	// The relaxed pin (what pytorch_resolve=pip installs) through an extra
	// index picks the CUDA build over the main index's plain 2.1.0.
	x.Reset()
	out, err := pyTestPip(t, venvPy, "install", "--force-reinstall", "--index-url", x.URL("/simple/"), "--extra-index-url", x.URL("/whl/cu121/"), "torch==2.1.0.*")
	if err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	if got := pyTestImport(t, venvPy, "torch"); got != "2.1.0+cu121" {
		t.Fatalf("installed torch %s, want 2.1.0+cu121", got)
	}
	// A non-normalized name is redirected to the normalized page, as PyPI does.
	x.Reset()
	if out, err := pyTestPip(t, venvPy, "download", "--no-deps", "-d", filepath.Join(root, "dl"), "--index-url", x.URL("/simple/"), "Typing_Extensions"); err != nil {
		t.Fatalf("pip download: %v\n%s", err, out)
	}
	if reqs := x.Requests(); len(reqs) == 0 || reqs[0] != "/simple/typing-extensions/" {
		t.Errorf("pip asked for %v; want /simple/typing-extensions/ first", reqs)
	}
}

func TestPyTestIndexPaths(t *testing.T) {
	root := t.TempDir()
	x := newPyTestIndex(t)
	x.Add("/whl/cu118/", pyTestWheel(t, root, pyWheel{Name: "torch", Version: "2.1.0+cu118"}),
		pyTestSdist(t, root, "Demo.Pkg", "1.0"))
	get := func(p string) (int, string) {
		resp, err := http.Get(x.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	for _, c := range []struct {
		path string
		code int
		want string
	}{
		{"/whl/cu118/", 200, `href="torch/"`},
		{"/whl/cu118/", 200, `href="demo-pkg/"`},
		{"/whl/cu118/torch/", 200, `torch-2.1.0%2Bcu118-py3-none-any.whl#sha256=`},
		{"/whl/cu118/demo-pkg/", 200, `demo_pkg-1.0.tar.gz`},
		{"/whl/cu118/torch_stable.html", 200, `torch-2.1.0+cu118-py3-none-any.whl</a>`},
		{"/whl/cu118/nothere/", 404, ""},
		{"/whl/cu121/", 404, ""},
		{"/whl/cu121/torch/", 404, ""},
		{"/files/whl/cu118/torch-2.1.0+cu118-py3-none-any.whl", 200, "PK"},
		{"/files/whl/cu121/torch-2.1.0+cu118-py3-none-any.whl", 404, ""},
	} {
		code, body := get(c.path)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d, want %d with %q:\n%.300s", c.path, code, c.code, c.want, body)
		}
	}
	want := []string{"/whl/cu118/", "/whl/cu118/", "/whl/cu118/torch/"}
	if got := x.Requests(); len(got) < 3 || strings.Join(got[:3], " ") != strings.Join(want, " ") {
		t.Errorf("recorded %v, want it to start with %v", got, want)
	}
}

func TestPyTestWheelhouse(t *testing.T) {
	py := pyNeedPython(t)
	root := t.TempDir()
	house := filepath.Join(root, "wheelhouse")
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "1.0", Requires: []string{"venvdep>=2"}})
	pyTestWheel(t, house, pyWheel{Name: "venvdep", Version: "2.5"})
	venvPy := pyTestVenv(t, py, filepath.Join(root, "venv"))
	if out, err := pyTestPip(t, venvPy, "install", "--no-index", "--find-links", house, "venvdemo==1.0"); err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	if got := pyTestImport(t, venvPy, "venvdep"); got != "2.5" {
		t.Fatalf("dependency venvdep %s, want 2.5", got)
	}
	out, err := pyTestPip(t, venvPy, "freeze")
	if err != nil || !strings.Contains(out, "venvdemo==1.0") || !strings.Contains(out, "venvdep==2.5") {
		t.Fatalf("freeze: %v\n%s", err, out)
	}
	// The seeded pip lives outside the venv and is not part of it.
	if strings.Contains(out, "pip==") {
		t.Errorf("freeze lists pip:\n%s", out)
	}
}
