package main

// The task's Python environment (agent-execute.md §4): pick the interpreter,
// create a venv, install the requirements with pip or uv, freeze the result,
// and keep finished venvs in a content-addressed cache.
//
// Configuration read here (agent.*):
//
//	python_binary, default_python, ignore_requested_python_version
//	package_manager.type                     pip (default) or uv; others fall back to pip
//	package_manager.system_site_packages     venv --system-site-packages
//	package_manager.extra_index_url          list: --extra-index-url each
//	package_manager.extra_pip_install_flags  list; CLEARML_EXTRA_PIP_INSTALL_FLAGS (shell words) wins
//	package_manager.force_upgrade            --upgrade
//	package_manager.force_repo_requirements_txt
//	package_manager.pip_version              pins for pip in a new venv
//	venvs_cache.{path,max_entries,free_space_threshold_gb}; CLEARML_AGENT_VENV_CACHE_PATH wins
//	docker_use_activated_venv                in a container, use an active VIRTUAL_ENV (see existingEnv)
//
// Keys this port adds (absent from the reference):
//
//	package_manager.no_index    bool: pass --no-index (air-gapped sites)
//	package_manager.find_links  list (or one string) of wheel folders or URLs: --find-links each
//	package_manager.venv_tool   "venv" (default) or "virtualenv" (python -m virtualenv, venv if missing)
//
// Cache layout, under venvs_cache.path:
//
//	.lock               serialises eviction
//	interpreters.json   remembered interpreter probes, so a hit runs no python
//	<key>.lock          flock: shared while a task uses the entry, exclusive while building or evicting
//	<key>/              the venv; <key>/.clearml-venv.json is written last and marks it complete
//
// Venvs are not relocatable (script shebangs hold absolute paths), so an
// entry is built in place, at its final path, under the exclusive lock, and
// tasks run from there: a hit is lock, read the marker, touch it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// venvSpec is what a task asks of its environment.
type venvSpec struct {
	binary                string   // script.binary, e.g. "python3.10"
	requirements          []string // script.requirements.pip as lines
	taskHasRequirements   bool     // requirements.pip was set (an empty string counts: install nothing)
	repoRequirementsFiles []string // the repo's requirements.txt files, root first; installed when the task has none
	workDir               string   // working directory for installs (the repo); "" for the current one
	standalone            bool     // --standalone-mode: install nothing, build nothing
}

// venvResult is the environment a task runs in.
type venvResult struct {
	python        string   // the interpreter to run the task with
	dir           string   // the venv; "" when the system interpreter is used
	pythonVersion string   // e.g. "3.11.7"
	cacheHit      bool     // reused from the venv cache
	frozen        []string // pip freeze lines, for tasks.set_requirements
	lock          *os.File // shared lock on the cache entry: keeps it from eviction
}

// release lets the cache evict the entry again; call it when the task ends.
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
	_, _, e := syscall.Syscall(syscall.SYS_FCNTL, r.lock.Fd(), syscall.F_SETFD, 0)
	if e != 0 {
		return e
	}
	return nil
}

// venvManager prepares environments. One may serve many tasks.
type venvManager struct {
	cfg *agentConfig
	log io.Writer

	pathEnv   string                           // PATH searched for python and uv; "" means $PATH
	onExec    func(argv []string)              // called before every subprocess (tests count them)
	freeSpace func(dir string) (uint64, error) // bytes free; tests replace it

	mu     sync.Mutex
	probes map[string]pyProbe // interpreter probes by executable path

	// gitAuth, when set, is given to pip's git for git+ requirements
	// (through ask-pass, as for the task's own repository).
	gitAuth *gitCreds

	// aptInstall, when set (a root execute inside a task container with
	// apt-get), installs what the image lacks: Python or its venv module.
	aptInstall func(ctx context.Context, why string, pkgs ...string) error
}

// errNoPython: no interpreter at all on PATH.
var errNoPython = errors.New("no Python found")

func newVenvManager(cfg *agentConfig, log io.Writer) *venvManager {
	if log == nil {
		log = io.Discard
	}
	return &venvManager{cfg: cfg, log: log}
}

func (m *venvManager) logf(format string, args ...any) {
	fmt.Fprintf(m.log, format+"\n", args...)
}

func (m *venvManager) env(name string) string {
	if m.cfg != nil && m.cfg.env != nil {
		v, _ := m.cfg.env(name)
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(os.Getenv(name))
}

// ---- interpreter ----

// pyInterp is a usable Python interpreter.
type pyInterp struct {
	exe     string // as found (may be a pyenv shim)
	real    string // sys.executable
	version string // "3.11.7"
}

// pyProbe is a remembered probe; the stat fingerprint invalidates it.
type pyProbe struct {
	Fingerprint string `json:"fingerprint"`
	Real        string `json:"real"`
	Version     string `json:"version"`
}

// pyRequestedVersion reads the version a task asks for from script.binary:
// python3.10 and /usr/bin/python3.10.4 give "3.10"; python3 gives "3" (any
// 3.x; the reference says "3.0"); python, bash or python3.11-dbg give "".
func pyRequestedVersion(binary string) string {
	base := strings.TrimSpace(binary)
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	rest, ok := strings.CutPrefix(base, "python")
	if !ok || rest == "" {
		return ""
	}
	parts := strings.Split(rest, ".")
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil || p == "" {
			return ""
		}
	}
	if len(parts) > 2 {
		parts = parts[:2]
	}
	for i, p := range parts {
		n, _ := strconv.Atoi(p)
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}

// pyVersionMatches reports whether have ("3.10.13") is of want ("3.10", "3").
func pyVersionMatches(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	if len(w) > len(h) {
		return false
	}
	for i := range w {
		a, err1 := strconv.Atoi(h[i])
		b, err2 := strconv.Atoi(w[i])
		if err1 != nil || err2 != nil || a != b {
			return false
		}
	}
	return true
}

// lookPath finds an executable like exec.LookPath, but on m.pathEnv.
func (m *venvManager) lookPath(name string) (string, bool) {
	if strings.Contains(name, "/") {
		if venvIsExecutable(name) {
			return name, true
		}
		return "", false
	}
	path := m.pathEnv
	if path == "" {
		path = os.Getenv("PATH")
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if p := filepath.Join(d, name); venvIsExecutable(p) {
			return p, true
		}
	}
	return "", false
}

func venvIsExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func venvFingerprint(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return ""
	}
	ino := uint64(0)
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d:%d:%d", fi.Size(), fi.ModTime().UnixNano(), ino)
}

var pyVersionText = lazyRegexp(`^\d+\.\d+\.\d+$`)

const pyProbeScript = "import sys;print('%d.%d.%d' % sys.version_info[:3]);print(sys.executable)"

// probe runs exe once to learn its version and real path. Results are
// remembered in memory and in the cache folder, keyed by the file's stat.
func (m *venvManager) probe(ctx context.Context, exe string) (pyInterp, error) {
	fp := venvFingerprint(exe)
	m.mu.Lock()
	if m.probes == nil {
		m.probes = m.loadProbes()
	}
	p, ok := m.probes[exe]
	m.mu.Unlock()
	if ok && fp != "" && p.Fingerprint == fp && venvIsExecutable(p.Real) {
		return pyInterp{exe: exe, real: p.Real, version: p.Version}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := m.run(ctx, "", &out, io.Discard, exe, "-c", pyProbeScript); err != nil {
		return pyInterp{}, err
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !pyVersionText().MatchString(strings.TrimSpace(lines[0])) {
		return pyInterp{}, fmt.Errorf("unexpected output %q", out.String())
	}
	in := pyInterp{exe: exe, version: strings.TrimSpace(lines[0]), real: strings.TrimSpace(lines[1])}
	if in.real == "" {
		in.real = exe
	}
	m.mu.Lock()
	m.probes[exe] = pyProbe{Fingerprint: fp, Real: in.real, Version: in.version}
	m.saveProbes()
	m.mu.Unlock()
	return in, nil
}

func (m *venvManager) probeFile() string {
	if dir := m.cacheDir(); dir != "" {
		return filepath.Join(dir, "interpreters.json")
	}
	return ""
}

func (m *venvManager) loadProbes() map[string]pyProbe {
	probes := map[string]pyProbe{}
	if f := m.probeFile(); f != "" {
		if data, err := os.ReadFile(f); err == nil {
			_ = json.Unmarshal(data, &probes)
		}
	}
	return probes
}

// saveProbes writes the probe file whole; the last writer wins, which only
// costs a later probe. Called with m.mu held.
func (m *venvManager) saveProbes() {
	f := m.probeFile()
	if f == "" {
		return
	}
	data, err := json.Marshal(m.probes)
	if err == nil {
		_ = os.MkdirAll(filepath.Dir(f), 0o755)
		err = venvWriteFileAtomic(f, data)
	}
	if err != nil {
		m.logf("WARNING: could not remember the interpreter probe in %s: %v", f, err)
	}
}

// selectInterpreter picks the Python for a task. A version the task (or
// agent.default_python) asks for must be found: no silent substitution.
func (m *venvManager) selectInterpreter(ctx context.Context, binary string) (pyInterp, error) {
	want, source := "", ""
	if !m.cfg.boolean("agent.ignore_requested_python_version", false) {
		if want = pyRequestedVersion(binary); want != "" {
			source = fmt.Sprintf("the task (script.binary %q)", binary)
		}
	}
	configured := strings.TrimSpace(m.cfg.str("agent.python_binary"))
	if configured != "" {
		configured = expandHomeEnv(configured, m.envLookup())
	}
	if want == "" && configured != "" {
		exe, ok := m.lookPath(configured)
		if !ok {
			return pyInterp{}, fmt.Errorf("interpreter: agent.python_binary %q was not found; fix the path or unset it", configured)
		}
		in, err := m.probe(ctx, exe)
		if err != nil {
			return pyInterp{}, fmt.Errorf("interpreter: agent.python_binary %q does not run (%v); fix the path or unset it", configured, err)
		}
		return in, nil
	}
	if want == "" {
		if dp := strings.TrimSpace(m.cfg.str("agent.default_python")); dp != "" {
			want, source = strings.TrimPrefix(dp, "python"), "agent.default_python"
		}
	}

	var names []string
	if want != "" {
		if strings.Contains(binary, "/") && source != "agent.default_python" {
			names = append(names, binary)
		}
		if configured != "" {
			names = append(names, configured)
		}
		names = append(names, "python"+want)
		if mm := strings.SplitN(want, ".", 3); len(mm) == 3 {
			names = append(names, "python"+mm[0]+"."+mm[1])
		}
		names = append(names, "python"+strings.SplitN(want, ".", 2)[0], "python")
	} else {
		names = []string{"python3", "python"}
	}
	seen := map[string]bool{}
	var found []pyInterp
	for _, n := range names {
		exe, ok := m.lookPath(n)
		if !ok || seen[exe] {
			continue
		}
		seen[exe] = true
		in, err := m.probe(ctx, exe)
		if err != nil {
			continue // e.g. a pyenv shim for a version that is not installed
		}
		if want == "" || pyVersionMatches(in.version, want) {
			return in, nil
		}
		found = append(found, in)
	}
	if want == "" {
		return pyInterp{}, fmt.Errorf("interpreter: %w on PATH (tried python3, python); install Python 3 or set agent.python_binary", errNoPython)
	}
	// Look a little wider so the error can say what is there.
	for minor := 6; minor <= 15; minor++ {
		if exe, ok := m.lookPath(fmt.Sprintf("python3.%d", minor)); ok && !seen[exe] {
			seen[exe] = true
			if in, err := m.probe(ctx, exe); err == nil {
				found = append(found, in)
			}
		}
	}
	var list []string
	dedup := map[string]bool{}
	for _, in := range found {
		if !dedup[in.real] {
			dedup[in.real] = true
			list = append(list, fmt.Sprintf("%s (%s)", in.version, in.exe))
		}
	}
	if len(found) == 0 {
		return pyInterp{}, fmt.Errorf("interpreter: %s requests Python %s, but %w on PATH; install Python %s or set agent.python_binary to its path", source, want, errNoPython, want)
	}
	// As the reference: the first interpreter found, with a warning that
	// the task's log shows (a task recorded on 3.11 usually runs on 3.10).
	m.logf("WARNING: %s requests Python %s, which was not found (found: %s); using Python %s (%s). For an exact match install Python %s or set agent.python_binary to its path.",
		source, want, strings.Join(list, ", "), found[0].version, found[0].exe, want)
	return found[0], nil
}

func (m *venvManager) envLookup() envLookup {
	if m.cfg != nil && m.cfg.env != nil {
		return m.cfg.env
	}
	return os.LookupEnv
}

// ---- requirements ----

// pyNormalizeRequirements makes the cache key's view of requirement lines:
// comments and blanks dropped, names lower-cased with runs of -_. as one -,
// sorted and unique. cacheable is false when the lines point at files whose
// content the key cannot see (-r, -c, -e, local paths).
func pyNormalizeRequirements(lines []string) (norm []string, cacheable bool) {
	cacheable = true
	seen := map[string]bool{}
	for _, l := range lines {
		// Any run of (Unicode) spaces counts as one: normalizing twice
		// must give the same key.
		l = strings.Join(strings.Fields(strings.ToValidUTF8(l, "\uFFFD")), " ")
		// A '#' after any whitespace starts a comment (pip's rule).
		for i := 1; i < len(l); i++ {
			if l[i] == '#' && strings.ContainsRune(" \t\f\v\r", rune(l[i-1])) {
				l = strings.TrimSpace(l[:i])
				break
			}
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, p := range []string{"-r", "--requirement", "-c", "--constraint", "-e", "--editable", ".", "/", "~", "file:"} {
			if strings.HasPrefix(l, p) {
				cacheable = false
			}
		}
		if !strings.HasPrefix(l, "-") {
			l = pyNormalizeName(l)
		}
		if !seen[l] {
			seen[l] = true
			norm = append(norm, l)
		}
	}
	sort.Strings(norm)
	return norm, cacheable
}

var pyReqName = lazyRegexp(`^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$`)
var pyNameSeps = lazyRegexp(`[-_.]+`)

func pyNormalizeName(l string) string {
	mt := pyReqName().FindStringSubmatch(l)
	if mt == nil {
		return l
	}
	name, rest := strings.ToLower(pyNameSeps().ReplaceAllString(mt[1], "-")), strings.TrimSpace(mt[2])
	if rest != "" && !strings.ContainsAny(rest[:1], "<>=!~[;@(") {
		// Not a name plus specifier (a typo, or free text): keep it whole,
		// lower-cased, so normalizing again gives the same key.
		return strings.ToLower(strings.Join(strings.Fields(l), " "))
	}
	if strings.HasPrefix(rest, "@") {
		return name + " " + rest
	}
	spec, marker, hasMarker := strings.Cut(rest, ";")
	spec = strings.Join(strings.Fields(spec), "")
	if hasMarker {
		spec += ";" + strings.Join(strings.Fields(marker), " ")
	}
	return name + spec
}

// venvRequirementSet is what prepare installs.
type venvRequirementSet struct {
	taskLines []string // task requirements, installed from a temp file
	files     []string // repo requirements.txt files, each installed in turn
	all       []string // every line, for the cache key
}

func (s venvRequirementSet) empty() bool {
	norm, _ := pyNormalizeRequirements(s.all)
	return len(norm) == 0
}

// requirementsFor decides between the task's requirements and the repo's
// requirements.txt files (§2 step 9, §4 "the source of the requirements").
func (m *venvManager) requirementsFor(spec venvSpec) (venvRequirementSet, error) {
	var s venvRequirementSet
	if spec.taskHasRequirements && !m.cfg.boolean("agent.package_manager.force_repo_requirements_txt", false) {
		s.taskLines = spec.requirements
		s.all = spec.requirements
		return s, nil
	}
	for _, f := range spec.repoRequirementsFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return s, fmt.Errorf("requirements: cannot read %s: %v", f, unwrapPathErr(err))
		}
		s.files = append(s.files, f)
		s.all = append(s.all, strings.Split(string(data), "\n")...)
	}
	return s, nil
}

// ---- package tool ----

// venvTool is how packages get into a venv.
type venvTool struct {
	uv string // uv executable; "" means pip
}

func (m *venvManager) tool() venvTool {
	typ := strings.ToLower(strings.TrimSpace(m.cfg.str("agent.package_manager.type")))
	if b, ok := parseBoolText(m.env("CLEARML_AGENT_FORCE_UV")); ok && b {
		typ = "uv"
	}
	switch typ {
	case "", "pip":
		return venvTool{}
	case "uv":
		if p, ok := m.lookPath("uv"); ok {
			return venvTool{uv: p}
		}
		m.logf("WARNING: agent.package_manager.type is uv but uv is not on PATH; using pip")
	default:
		m.logf("WARNING: agent.package_manager.type %q is not supported; using pip", typ)
	}
	return venvTool{}
}

func (t venvTool) name() string {
	if t.uv != "" {
		return "uv"
	}
	return "pip"
}

// installFlags are the index and extra flags for every install.
func (m *venvManager) installFlags() []string {
	var f []string
	for _, u := range m.cfg.strList("agent.package_manager.extra_index_url") {
		if u = strings.TrimSpace(u); u != "" {
			f = append(f, "--extra-index-url", u)
		}
	}
	if m.cfg.boolean("agent.package_manager.no_index", false) {
		f = append(f, "--no-index")
	}
	for _, d := range m.cfg.strList("agent.package_manager.find_links") {
		if d = strings.TrimSpace(d); d != "" {
			if !strings.Contains(d, "://") {
				d = expandHomeEnv(d, m.envLookup())
			}
			f = append(f, "--find-links", d)
		}
	}
	if env := m.env("CLEARML_EXTRA_PIP_INSTALL_FLAGS"); env != "" {
		words, err := shlexSplit(env)
		if err != nil {
			m.logf("WARNING: ignoring CLEARML_EXTRA_PIP_INSTALL_FLAGS: %v", err)
		}
		f = append(f, words...)
	} else {
		f = append(f, m.cfg.strList("agent.package_manager.extra_pip_install_flags")...)
	}
	if m.cfg.boolean("agent.package_manager.force_upgrade", false) {
		f = append(f, "--upgrade")
	}
	return f
}

// ---- subprocesses ----

// run runs argv with stdin from /dev/null and without PYTHONPATH/PYTHONHOME,
// which would leak the agent's environment into pip.
func (m *venvManager) run(ctx context.Context, dir string, stdout, stderr io.Writer, argv ...string) error {
	if m.onExec != nil {
		m.onExec(argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "PYTHONPATH" && k != "PYTHONHOME" && k != "__PYVENV_LAUNCHER__" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if m.gitAuth != nil {
		cmd.Env = append(cmd.Env, "GIT_TERMINAL_PROMPT=0")
		cmd.Env = append(cmd.Env, gitAskpassEnv("", *m.gitAuth)...)
	}
	return cmd.Run()
}

// runLogged runs argv with its output in the task log, and returns the
// output's tail for error messages.
func (m *venvManager) runLogged(ctx context.Context, dir string, argv ...string) (string, error) {
	fmt.Fprintf(m.log, "> %s\n", strings.Join(argv, " "))
	tail := &venvTail{}
	w := io.MultiWriter(m.log, tail)
	err := m.run(ctx, dir, w, w, argv...)
	return string(tail.buf), err
}

// venvTail keeps the last 64 KiB written to it.
type venvTail struct{ buf []byte }

func (t *venvTail) Write(p []byte) (int, error) {
	const keep = 64 << 10
	t.buf = append(t.buf, p...)
	if len(t.buf) > keep {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-keep:]...)
	}
	return len(p), nil
}

var pyFailedPackage = []func() *regexp.Regexp{
	lazyRegexp(`No matching distribution found for (\S+)`),
	lazyRegexp(`Could not find a version that satisfies the requirement (\S+)`),
	lazyRegexp(`Failed building wheel for (\S+)`),
	lazyRegexp(`Because (\S+) was not found in the package registry`),
	lazyRegexp(`Because there is no version of (\S+)`),
	lazyRegexp(`Invalid requirement: '([^']+)'`),
}

// pyInstallFailure names the package pip (or uv) could not install, if it says.
func pyInstallFailure(output string) string {
	for _, f := range pyFailedPackage {
		if mt := f().FindStringSubmatch(output); mt != nil {
			return strings.Trim(mt[1], `"'`)
		}
	}
	return ""
}

// ---- building ----

func venvPython(dir string) string { return filepath.Join(dir, "bin", "python") }

func (m *venvManager) createVenv(ctx context.Context, in pyInterp, t venvTool, dir string) error {
	ssp := m.cfg.boolean("agent.package_manager.system_site_packages", false)
	var argv []string
	if t.uv != "" {
		argv = []string{t.uv, "venv", "--allow-existing", "--python", in.real}
		if ssp {
			argv = append(argv, "--system-site-packages")
		}
		argv = append(argv, dir)
	} else {
		mod := "venv"
		if strings.EqualFold(strings.TrimSpace(m.cfg.str("agent.package_manager.venv_tool")), "virtualenv") {
			mod = "virtualenv"
		}
		argv = []string{in.real, "-m", mod}
		if ssp {
			argv = append(argv, "--system-site-packages")
		}
		argv = append(argv, dir)
		if mod == "virtualenv" {
			if _, err := m.runLogged(ctx, "", argv...); err == nil {
				return nil
			}
			m.logf("WARNING: python -m virtualenv failed; trying python -m venv")
			argv[2] = "venv"
		}
	}
	out, err := m.runLogged(ctx, "", argv...)
	if err != nil && strings.Contains(out, "ensurepip") && m.aptInstall != nil {
		// Debian's python3 without its venv module (as in CUDA images).
		pkg := "python" + strings.Join(strings.SplitN(in.version, ".", 3)[:2], ".") + "-venv"
		if aerr := m.aptInstall(ctx, "the venv module", pkg); aerr != nil {
			return fmt.Errorf("venv: %s has no venv module, and %v", in.real, aerr)
		}
		os.RemoveAll(dir)
		out, err = m.runLogged(ctx, "", argv...)
	}
	if err != nil {
		hint := ""
		if strings.Contains(out, "ensurepip") {
			hint = fmt.Sprintf("; install the venv module (e.g. apt install python%s-venv)", strings.Join(strings.SplitN(in.version, ".", 3)[:2], "."))
		}
		return fmt.Errorf("venv: creating %s with %s failed: %v%s", dir, in.real, err, hint)
	}
	if !venvIsExecutable(venvPython(dir)) {
		return fmt.Errorf("venv: %s has no bin/python after creation", dir)
	}
	return nil
}

// legacyResolver says whether the pip of the environment of py matches
// agent.package_manager.pip_legacy_resolver (default ">=20.3,<24.3"): the
// reference installs with pip's legacy resolver then, which accepts the
// loosely pinned requirement lists the SDK records. The version is read from
// pip's dist-info folder: no process.
func (m *venvManager) legacyResolver(py string) bool {
	specs := m.cfg.strList("agent.package_manager.pip_legacy_resolver")
	if len(specs) == 0 {
		return false
	}
	root := filepath.Dir(filepath.Dir(py))
	found, _ := filepath.Glob(filepath.Join(root, "lib", "python*", "site-packages", "pip-*.dist-info"))
	if len(found) != 1 {
		return false
	}
	ver := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(found[0]), "pip-"), ".dist-info")
	for _, spec := range specs {
		if pyVersionInSpec(ver, spec) {
			return true
		}
	}
	return false
}

// pyVersionInSpec checks a version against comma-separated clauses with
// >=, <=, >, <, ==, != on dotted numbers (what pip_legacy_resolver holds).
func pyVersionInSpec(version, spec string) bool {
	num := func(v string) []int {
		var out []int
		for _, p := range strings.Split(strings.TrimSpace(v), ".") {
			n, err := strconv.Atoi(strings.TrimRightFunc(p, func(r rune) bool { return r < '0' || r > '9' }))
			if err != nil {
				break
			}
			out = append(out, n)
		}
		return out
	}
	cmp := func(a, b []int) int {
		for i := 0; i < max(len(a), len(b)); i++ {
			x, y := 0, 0
			if i < len(a) {
				x = a[i]
			}
			if i < len(b) {
				y = b[i]
			}
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
		}
		return 0
	}
	have := num(version)
	if len(have) == 0 {
		return false
	}
	for _, clause := range strings.Split(spec, ",") {
		clause = strings.TrimSpace(clause)
		op := strings.TrimRight(clause[:min(2, len(clause))], "0123456789. ")
		want := num(strings.TrimPrefix(clause, op))
		if len(want) == 0 {
			return false
		}
		c := cmp(have, want)
		ok := map[string]bool{">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0, "==": c == 0, "!=": c != 0}[op]
		if !ok {
			return false
		}
	}
	return true
}

// pipArgv is the install command for the venv at python.
func pipArgv(t venvTool, python string, args ...string) []string {
	if t.uv != "" {
		return append([]string{t.uv, "pip", "install", "--python", python}, args...)
	}
	return append([]string{python, "-m", "pip", "--disable-pip-version-check", "install"}, args...)
}

// install puts the requirements into the environment of the interpreter py.
// pinPip applies agent.package_manager.pip_version first (new venvs only:
// an existing environment's pip is the user's).
func (m *venvManager) install(ctx context.Context, t venvTool, py string, reqs venvRequirementSet, workDir string, pinPip bool) error {
	if reqs.empty() {
		m.logf("No requirements to install")
		return nil
	}
	flags := m.installFlags()
	if t.uv == "" && pinPip {
		// The reference's pip pins, without --upgrade: a pip that already
		// fits needs no index. Failure only warns.
		var pins []string
		for _, p := range m.cfg.strList("agent.package_manager.pip_version") {
			if p = strings.TrimSpace(p); p != "" {
				pins = append(pins, "pip"+p)
			}
		}
		if len(pins) > 0 {
			var idx []string
			for i := 0; i < len(flags); i++ {
				switch flags[i] {
				case "--no-index":
					idx = append(idx, flags[i])
				case "--extra-index-url", "--find-links":
					if i+1 < len(flags) {
						idx = append(idx, flags[i], flags[i+1])
						i++
					}
				}
			}
			if _, err := m.runLogged(ctx, "", pipArgv(t, py, append(pins, idx...)...)...); err != nil {
				m.logf("WARNING: could not install pip%s: %v; keeping the venv's pip", strings.Join(pins, ","), err)
			}
		}
	}
	if t.uv == "" && m.legacyResolver(py) {
		flags = append(flags, "--use-deprecated=legacy-resolver")
	}
	if len(reqs.taskLines) > 0 {
		f, err := os.CreateTemp("", "cached-reqs*.txt")
		if err != nil {
			return fmt.Errorf("requirements: %v", err)
		}
		defer os.Remove(f.Name())
		lines := make([]string, len(reqs.taskLines))
		for i, l := range reqs.taskLines {
			lines[i] = pyVCSRequirement(l, m.gitAuth != nil)
		}
		_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("requirements: %v", err)
		}
		if err := m.installFile(ctx, t, py, f.Name(), workDir, "the task's requirements", flags); err != nil {
			return err
		}
	}
	for _, file := range reqs.files {
		wd := workDir
		if wd == "" {
			wd = filepath.Dir(file)
		}
		if err := m.installFile(ctx, t, py, file, wd, file, flags); err != nil {
			return err
		}
	}
	return nil
}

func (m *venvManager) installFile(ctx context.Context, t venvTool, py, file, dir, what string, flags []string) error {
	if dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = ""
		}
	}
	out, err := m.runLogged(ctx, dir, pipArgv(t, py, append([]string{"-r", file}, flags...)...)...)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("requirements: installing %s: %v", what, ctx.Err())
	}
	if pkg := pyInstallFailure(out); pkg != "" {
		return fmt.Errorf("requirements: installing %s failed: %s could not install %q (%v); see the log above", what, t.name(), pkg, err)
	}
	return fmt.Errorf("requirements: installing %s failed: %s %v; see the log above", what, t.name(), err)
}

// freeze lists what is installed, minus the agent itself, as the reference.
func (m *venvManager) freeze(ctx context.Context, t venvTool, python string) ([]string, error) {
	argv := []string{python, "-m", "pip", "--disable-pip-version-check", "freeze"}
	if t.uv != "" {
		argv = []string{t.uv, "pip", "freeze", "--python", python}
	}
	var out, errOut bytes.Buffer
	if err := m.run(ctx, "", &out, &errOut, argv...); err != nil {
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(errOut.String()))
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(l) != "" && !strings.Contains(l, "clearml-agent") && !strings.Contains(l, "clearml_agent") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// build makes a venv at dir and installs into it.
func (m *venvManager) build(ctx context.Context, in pyInterp, t venvTool, reqs venvRequirementSet, workDir, dir string) ([]string, error) {
	m.logf("Creating virtual environment %s (Python %s, %s)", dir, in.version, t.name())
	if err := m.createVenv(ctx, in, t, dir); err != nil {
		return nil, err
	}
	if err := m.install(ctx, t, venvPython(dir), reqs, workDir, true); err != nil {
		return nil, err
	}
	frozen, err := m.freeze(ctx, t, venvPython(dir))
	if err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	return frozen, nil
}

// ---- prepare ----

// prepare gives the task its environment. taskVenvDir is the task's own
// folder (agent.venvs_dir/<version>): an uncached venv is built there, and
// its task_repository and code subfolders are left alone.
func (m *venvManager) prepare(ctx context.Context, spec venvSpec, taskVenvDir string) (*venvResult, error) {
	if r, err := m.prepareExisting(ctx, spec); err != nil || r != nil {
		return r, err
	}
	in, err := m.selectInterpreter(ctx, spec.binary)
	if errors.Is(err, errNoPython) && m.aptInstall != nil {
		if aerr := m.aptInstall(ctx, "Python 3", "python3", "python3-venv", "python3-pip"); aerr != nil {
			return nil, fmt.Errorf("interpreter: the image has no Python, and %v", aerr)
		}
		in, err = m.selectInterpreter(ctx, spec.binary)
	}
	if err != nil {
		return nil, err
	}
	m.logf("Python interpreter: %s (Python %s)", in.real, in.version)
	reqs, err := m.requirementsFor(spec)
	if err != nil {
		return nil, err
	}
	t := m.tool()
	key, cacheable := m.cacheKey(in, t, reqs)
	cache := m.cacheDir()
	if cache != "" && !cacheable {
		m.logf("Requirements refer to local files (-r, -e, paths): not using the venv cache")
	}

	if spec.standalone {
		// Install nothing, build nothing: a cached or existing venv, else the interpreter itself.
		if cache != "" && cacheable {
			if r, err := m.cacheLookup(ctx, cache, key); err != nil || r != nil {
				return r, err
			}
		}
		r := &venvResult{python: in.real, pythonVersion: in.version}
		if venvIsExecutable(venvPython(taskVenvDir)) {
			r.python, r.dir = venvPython(taskVenvDir), taskVenvDir
			m.logf("Standalone mode: using the existing venv %s", taskVenvDir)
		} else {
			m.logf("Standalone mode: no venv in %s; using %s", taskVenvDir, in.real)
		}
		if r.frozen, err = m.freeze(ctx, t, r.python); err != nil {
			m.logf("WARNING: could not freeze installed packages: %v", err)
		}
		return r, nil
	}

	if cache != "" && cacheable {
		r, err := m.cachePrepare(ctx, cache, key, in, func(dir string) ([]string, error) {
			return m.build(ctx, in, t, reqs, spec.workDir, dir)
		})
		if err != nil || r != nil {
			return r, err
		}
		// nil, nil: no room in the cache; build uncached.
	}
	if err := venvCleanTaskDir(taskVenvDir); err != nil {
		return nil, fmt.Errorf("venv: cleaning %s: %v", taskVenvDir, err)
	}
	frozen, err := m.build(ctx, in, t, reqs, spec.workDir, taskVenvDir)
	if err != nil {
		return nil, err
	}
	return &venvResult{python: venvPython(taskVenvDir), dir: taskVenvDir, pythonVersion: in.version, frozen: frozen}, nil
}

// existingEnv says whether the task runs in an interpreter that is already
// set up rather than in a new venv (agent-execute.md §4, "Skipping the venv"):
//
//	CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1    the default python; nothing installed
//	CLEARML_AGENT_SKIP_PIP_VENV_INSTALL=PATH   that python; requirements installed into it
//	CLEARML_AGENT_SKIP_PIP_VENV_INSTALL=1      the task's python; requirements installed into it
//	in a container, an active VIRTUAL_ENV      that venv, when agent.docker_use_activated_venv
//	                                           and system_site_packages are both true
//
// It returns nil when a venv is to be made.
func (m *venvManager) existingEnv(ctx context.Context, binary string) (in *pyInterp, install bool, why string, err error) {
	env := m.envLookup()
	use := func(exe, what string, install bool) (*pyInterp, bool, string, error) {
		p, ok := m.lookPath(exe)
		if !ok {
			return nil, false, "", fmt.Errorf("interpreter: %s: %q was not found; set it to a python executable, or unset it", what, exe)
		}
		got, err := m.probe(ctx, p)
		if err != nil {
			return nil, false, "", fmt.Errorf("interpreter: %s: %q does not run (%v); set it to a python executable, or unset it", what, exe, err)
		}
		return &got, install, what, nil
	}
	if v := firstEnv(env, "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL", "TRAINS_AGENT_SKIP_PYTHON_ENV_INSTALL"); v != "" {
		if on, _ := parseBoolText(v); on {
			// The reference runs its own interpreter: here, the configured
			// or default one, whatever version the task asked for.
			got, err := m.selectInterpreter(ctx, "")
			if err != nil {
				return nil, false, "", err
			}
			return &got, false, "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL", nil
		}
	}
	if v := firstEnv(env, "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", "TRAINS_AGENT_SKIP_PIP_VENV_INSTALL"); v != "" {
		on, isBool := parseBoolText(v)
		switch {
		case isBool && on:
			got, err := m.selectInterpreter(ctx, binary)
			if err != nil {
				return nil, false, "", err
			}
			return &got, true, "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", nil
		case !isBool:
			return use(expandHomeEnv(v, env), "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", true)
		}
	}
	if firstEnv(env, "CLEARML_DOCKER_IMAGE", "TRAINS_DOCKER_IMAGE") != "" &&
		m.cfg.boolean("agent.docker_use_activated_venv", true) &&
		m.cfg.boolean("agent.package_manager.system_site_packages", false) {
		if ve := firstEnv(env, "VIRTUAL_ENV"); ve != "" && venvIsExecutable(venvPython(ve)) {
			return use(venvPython(ve), "the container's active venv (VIRTUAL_ENV)", true)
		}
	}
	return nil, false, "", nil
}

// prepareExisting runs the task in an existing interpreter when existingEnv
// says so: no venv is made and the venv cache is not used.
func (m *venvManager) prepareExisting(ctx context.Context, spec venvSpec) (*venvResult, error) {
	in, install, why, err := m.existingEnv(ctx, spec.binary)
	if err != nil || in == nil {
		return nil, err
	}
	m.logf("Python interpreter: %s (Python %s), no venv: %s", in.real, in.version, why)
	r := &venvResult{python: in.real, pythonVersion: in.version}
	// A venv's interpreter: the task sees it as activated, as with ours.
	if d := filepath.Dir(filepath.Dir(in.real)); d != "/" {
		if _, err := os.Stat(filepath.Join(d, "pyvenv.cfg")); err == nil {
			r.dir = d
		}
	}
	t := m.tool()
	if install && !spec.standalone {
		reqs, err := m.requirementsFor(spec)
		if err != nil {
			return nil, err
		}
		if err := m.install(ctx, t, in.real, reqs, spec.workDir, false); err != nil {
			return nil, err
		}
	}
	if r.frozen, err = m.freeze(ctx, t, r.python); err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	return r, nil
}

// venvCleanTaskDir empties dir for a fresh venv, keeping the task's code.
func venvCleanTaskDir(dir string) error {
	if dir == "" {
		return errors.New("no task folder given")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == "task_repository" || e.Name() == "code" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// venvPythonArgs is the task's command: <python> -u [-O|-OO] entry...
func venvPythonArgs(python string, optimization int, entry []string) []string {
	argv := []string{python, "-u"}
	if optimization > 0 {
		argv = append(argv, "-"+strings.Repeat("O", min(optimization, 2)))
	}
	return append(argv, entry...)
}

// venvSetRequirementsBody is the tasks.set_requirements request: the task's
// previous script.requirements, with pip moved to org_pip and conda to
// org_conda (only when those are still empty), and pip set to the freeze.
func venvSetRequirementsBody(taskID string, previous map[string]any, frozen []string) map[string]any {
	reqs := map[string]any{}
	for k, v := range previous {
		reqs[k] = v
	}
	for _, k := range []string{"pip", "conda"} {
		if venvTruthy(reqs[k]) && !venvTruthy(reqs["org_"+k]) {
			reqs["org_"+k] = reqs[k]
			delete(reqs, k)
		}
	}
	if frozen == nil {
		frozen = []string{}
	}
	reqs["pip"] = frozen
	return map[string]any{"task": taskID, "requirements": reqs}
}

func venvTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case []string:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	case bool:
		return x
	}
	return true
}

// ---- cache ----

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

const venvKeyVersion = "clearml-go-venv/1"

// cacheKey hashes everything that shapes the venv: interpreter, tool,
// venv flags, index flags and the normalised requirements.
func (m *venvManager) cacheKey(in pyInterp, t venvTool, reqs venvRequirementSet) (string, bool) {
	norm, cacheable := pyNormalizeRequirements(reqs.all)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", venvKeyVersion, in.real, in.version, t.name())
	fmt.Fprintf(h, "system_site_packages=%v\nvenv_tool=%s\n", m.cfg.boolean("agent.package_manager.system_site_packages", false),
		strings.ToLower(strings.TrimSpace(m.cfg.str("agent.package_manager.venv_tool"))))
	fmt.Fprintf(h, "flags=%q\npins=%q\n", m.installFlags(), m.cfg.strList("agent.package_manager.pip_version"))
	for _, l := range norm {
		fmt.Fprintf(h, "req=%s\n", l)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], cacheable
}

// venvMeta is the completion marker of a cache entry.
type venvMeta struct {
	Key           string    `json:"key"`
	Python        string    `json:"python"`
	PythonVersion string    `json:"python_version"`
	Frozen        []string  `json:"frozen"`
	Created       time.Time `json:"created"`
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
	err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	if err == nil && venvSameFile(f, path) {
		return f, nil
	}
	f.Close()
	if err == nil || err == syscall.EWOULDBLOCK || err == syscall.EINTR {
		return nil, nil
	}
	return nil, fmt.Errorf("lock %s: %v", path, err)
}

func venvFlockWait(ctx context.Context, f *os.File, how int) error {
	delay := 5 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			return fmt.Errorf("lock %s: %v", f.Name(), err)
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

func venvHitResult(entry string, meta *venvMeta, lock *os.File, built bool) *venvResult {
	return &venvResult{python: venvPython(entry), dir: entry, pythonVersion: meta.PythonVersion,
		cacheHit: !built, frozen: meta.Frozen, lock: lock}
}

// cacheLookup returns the entry for key if it is complete, holding its
// shared lock; nil when it is not there. Runs no python.
func (m *venvManager) cacheLookup(ctx context.Context, cache, key string) (*venvResult, error) {
	entry := filepath.Join(cache, key)
	if _, err := os.Stat(entry); err != nil {
		return nil, nil
	}
	f, err := venvLock(ctx, entry+".lock", syscall.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("venv: cache: %v", err)
	}
	meta, ok := venvReadMeta(entry)
	if !ok || !venvIsExecutable(venvPython(entry)) {
		f.Close()
		return nil, nil
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(entry, venvMetaName), now, now)
	m.logf("Using cached virtual environment %s", entry)
	return venvHitResult(entry, meta, f, false), nil
}

// cachePrepare returns the cache entry for key, building it with build if
// needed; concurrent callers wait and reuse it. nil, nil means the cache has
// no room (free space) and the caller should build elsewhere.
func (m *venvManager) cachePrepare(ctx context.Context, cache, key string, in pyInterp, build func(dir string) ([]string, error)) (*venvResult, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		m.logf("WARNING: venv cache %s unusable: %v", cache, err)
		return nil, nil
	}
	entry := filepath.Join(cache, key)
	delay := 5 * time.Millisecond
	for {
		// Wait (shared) for a build in progress; a complete entry is a hit.
		if r, err := m.cacheLookup(ctx, cache, key); err != nil || r != nil {
			return r, err
		}
		// Exclusive without waiting: a task may hold the entry shared for
		// hours, and a complete entry must then be reused, not awaited.
		f, err := venvTryLock(entry+".lock", syscall.LOCK_EX)
		if err != nil {
			return nil, fmt.Errorf("venv: cache: %v", err)
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
		if _, ok := venvReadMeta(entry); !ok {
			room, err := m.makeRoom(ctx, cache, key)
			if err != nil || !room {
				f.Close()
				return nil, err
			}
			if err := os.RemoveAll(entry); err != nil { // a crashed build's leftovers
				f.Close()
				return nil, fmt.Errorf("venv: cache: %v", err)
			}
			frozen, err := build(entry)
			if err == nil {
				meta := venvMeta{Key: key, Python: in.real, PythonVersion: in.version, Frozen: frozen, Created: time.Now().UTC()}
				data, _ := json.MarshalIndent(meta, "", "  ")
				err = venvWriteFileAtomic(filepath.Join(entry, venvMetaName), data)
			}
			if err != nil {
				os.RemoveAll(entry)
				f.Close()
				return nil, err
			}
			m.logf("Added the virtual environment to the cache: %s", entry)
		}
		// Downgrade to shared; flock may drop the lock for a moment, so check again.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("venv: cache: lock: %v", err)
		}
		if meta, ok := venvReadMeta(entry); ok && venvSameFile(f, entry+".lock") {
			return venvHitResult(entry, meta, f, true), nil
		}
		f.Close()
	}
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
	g, err := venvLock(ctx, filepath.Join(cache, ".lock"), syscall.LOCK_EX)
	if err != nil {
		return false, fmt.Errorf("venv: cache: %v", err)
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
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// evict removes an entry unless a task holds it; true when removed.
func (m *venvManager) evict(cache, key string) bool {
	entry := filepath.Join(cache, key)
	lockPath := entry + ".lock"
	f, err := venvTryLock(lockPath, syscall.LOCK_EX)
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
