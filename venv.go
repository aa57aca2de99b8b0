package main

// The task's Python environment (agent-execute.md §4): pick the interpreter,
// create a venv, install the requirements with pip or uv, freeze the result,
// and keep finished venvs in a content-addressed cache. One venvManager does
// it all, in three files:
//
//	python.go      interpreters (find, probe, select) and requirement lines (source, normalisation)
//	venv.go        the package tool, creating a venv, install, freeze, prepare (this file)
//	venv_cache.go  the content-hash cache: keys, completion marker, locks, eviction; its layout
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
//	package_manager.pip_legacy_resolver      pip versions that get --use-deprecated=legacy-resolver
//	venvs_cache.{path,max_entries,free_space_threshold_gb}; CLEARML_AGENT_VENV_CACHE_PATH wins
//	docker_use_activated_venv                in a container, use an active VIRTUAL_ENV (see existingEnv)
//
// Keys this port adds (absent from the reference):
//
//	package_manager.no_index    bool: pass --no-index (air-gapped sites)
//	package_manager.find_links  list (or one string) of wheel folders or URLs: --find-links each
//	package_manager.venv_tool   "venv" (default) or "virtualenv" (python -m virtualenv, venv if missing)

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
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

func (m *venvManager) envLookup() envLookup {
	if m.cfg != nil && m.cfg.env != nil {
		return m.cfg.env
	}
	return os.LookupEnv
}

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

// run runs argv with stdin from /dev/null and without PYTHONPATH/PYTHONHOME,
// which would leak the agent's environment into pip.
func (m *venvManager) run(ctx context.Context, dir string, stdout, stderr io.Writer, argv ...string) error {
	if m.onExec != nil {
		m.onExec(argv)
	}
	cmd := setupCmd(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
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
			return fmt.Errorf("venv: %s has no venv module, and %w", in.real, aerr)
		}
		os.RemoveAll(dir)
		out, err = m.runLogged(ctx, "", argv...)
	}
	if err != nil {
		hint := ""
		if strings.Contains(out, "ensurepip") {
			hint = fmt.Sprintf("; install the venv module (e.g. apt install python%s-venv)", strings.Join(strings.SplitN(in.version, ".", 3)[:2], "."))
		}
		return fmt.Errorf("venv: creating %s with %s failed: %w%s", dir, in.real, err, hint)
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
			return fmt.Errorf("requirements: %w", err)
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
			return fmt.Errorf("requirements: %w", err)
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
		return fmt.Errorf("requirements: installing %s: %w", what, ctx.Err())
	}
	if pkg := pyInstallFailure(out); pkg != "" {
		return fmt.Errorf("requirements: installing %s failed: %s could not install %q (%w); see the log above", what, t.name(), pkg, err)
	}
	return fmt.Errorf("requirements: installing %s failed: %s %w; see the log above", what, t.name(), err)
}

// freeze lists what is installed, minus the agent itself, as the reference.
func (m *venvManager) freeze(ctx context.Context, t venvTool, python string) ([]string, error) {
	argv := []string{python, "-m", "pip", "--disable-pip-version-check", "freeze"}
	if t.uv != "" {
		argv = []string{t.uv, "pip", "freeze", "--python", python}
	}
	var out, errOut bytes.Buffer
	if err := m.run(ctx, "", &out, &errOut, argv...); err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(errOut.String()))
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
			return nil, fmt.Errorf("interpreter: the image has no Python, and %w", aerr)
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
		return nil, fmt.Errorf("venv: cleaning %s: %w", taskVenvDir, err)
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
			return nil, false, "", fmt.Errorf("interpreter: %s: %q does not run (%w); set it to a python executable, or unset it", what, exe, err)
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
