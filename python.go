package main

// Interpreters and requirement lines for the task's venv (see venv.go for
// the model): find, probe and select the Python a task asks for, and turn
// requirement lines into the cache key's normalised view.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errNoPython: no interpreter at all on PATH.
var errNoPython = errors.New("no Python found")

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
		return m.configuredInterpreter(ctx, configured)
	}
	if want == "" {
		if dp := strings.TrimSpace(m.cfg.str("agent.default_python")); dp != "" {
			want, source = strings.TrimPrefix(dp, "python"), "agent.default_python"
		}
	}

	seen := map[string]bool{}
	var found []pyInterp
	for _, n := range pyCandidateNames(binary, want, source, configured) {
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
	return m.fallbackInterpreter(ctx, want, source, seen, found)
}

// configuredInterpreter is agent.python_binary, when the task asks for no version.
func (m *venvManager) configuredInterpreter(ctx context.Context, configured string) (pyInterp, error) {
	exe, ok := m.lookPath(configured)
	if !ok {
		return pyInterp{}, fmt.Errorf("interpreter: agent.python_binary %q was not found; fix the path or unset it", configured)
	}
	in, err := m.probe(ctx, exe)
	if err != nil {
		return pyInterp{}, fmt.Errorf("interpreter: agent.python_binary %q does not run (%w); fix the path or unset it", configured, err)
	}
	return in, nil
}

// pyCandidateNames lists the executables to try, best first, for the
// version want ("" for any) asked for by source.
func pyCandidateNames(binary, want, source, configured string) []string {
	if want == "" {
		return []string{"python3", "python"}
	}
	var names []string
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
	return append(names, "python"+strings.SplitN(want, ".", 2)[0], "python")
}

// fallbackInterpreter handles a requested version that is not there: the
// first interpreter found (found, in order), with a warning, or an error
// when there is none. seen holds the executables already probed.
func (m *venvManager) fallbackInterpreter(ctx context.Context, want, source string, seen map[string]bool, found []pyInterp) (pyInterp, error) {
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
			return s, fmt.Errorf("requirements: cannot read %s: %w", f, unwrapPathErr(err))
		}
		s.files = append(s.files, f)
		s.all = append(s.all, strings.Split(string(data), "\n")...)
	}
	return s, nil
}
