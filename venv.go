package main

// The task's Python environment (agent-execute.md §4, issue 13): pick the
// interpreter, create a venv, install the requirements with pip or uv (or
// a Poetry or uv project), freeze the result, and keep finished venvs in a
// content-addressed, immutable cache. One venvManager does it all:
//
//	python.go          interpreters (find, probe, select) and requirement sources
//	venv.go            the package tool, creating a venv, freeze, prepare (this file)
//	venv_seed.go       new venvs from a per-interpreter template and a shared pip seed
//	venv_install.go    planning and installing requirements (requirements.go plans)
//	torch_host.go      PyTorch for this host (pytorch.go: the pure rules)
//	pyproject_run.go   Poetry and uv projects (pyproject.go: arguments, environment)
//	venv_cache.go      the cache: keys, locks, eviction, layout
//	venv_link.go       the cache's checked hard-link copies
//
// Configuration read here (agent.*):
//
//	python_binary, default_python, ignore_requested_python_version
//	package_manager.type                     pip (default), uv, poetry; conda runs as pip (said once)
//	package_manager.system_site_packages     venv --system-site-packages
//	package_manager.extra_index_url          list: --extra-index-url each
//	package_manager.extra_pip_install_flags  list; CLEARML_EXTRA_PIP_INSTALL_FLAGS (shell words) wins
//	package_manager.force_upgrade            --upgrade
//	package_manager.force_repo_requirements_txt
//	package_manager.pip_version              pins for pip in a new venv
//	package_manager.pip_legacy_resolver      pip versions that get --use-deprecated=legacy-resolver
//	package_manager.{priority,priority_optional,post,post_optional}_packages  (venv_install.go)
//	package_manager.{pytorch_resolve,extra_index_url_template,torch_page,torch_nightly...}  (torch_host.go)
//	package_manager.{poetry_*,uv_*}          (pyproject_run.go)
//	venvs_cache.{path,max_entries,free_space_threshold_gb}; CLEARML_AGENT_VENV_CACHE_PATH wins
//	pip_download_cache.{enabled,path}, cuda_version, cpu_only
//	docker_use_activated_venv                in a container, use an active VIRTUAL_ENV (see existingEnv)
//
// Keys this port adds (absent from the reference):
//
//	package_manager.no_index    bool: pass --no-index (air-gapped sites)
//	package_manager.find_links  list (or one string) of wheel folders or URLs: --find-links each
//	package_manager.venv_tool   "venv" (default) or "virtualenv" (python -m virtualenv, venv if missing)
//	package_manager.allow_requirement_options  bool: honour pip options in requirement lines
//	package_manager.cpu_extra_index_url        the CPU PyTorch index (default: derived from the template)
//	venvs_cache.seed_path       where venv kits live (default: venvs_cache.path)

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
	"strings"
	"sync"
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

	// Issue 13 (requirements, PyTorch, Poetry and uv projects):
	checkout   string // the task's checkout; "" means workDir. -e, VCS and path lines must point inside it
	workingDir string // the task's working directory: pip's folder, relative paths, *_files_from_repo_working_dir; "" means checkout
	cpuOnly    bool   // --cpu-only (or services mode): no CUDA detection, CPU PyTorch wheels
	portable   bool   // the venv outlives the agent's folders (build --target): python -m venv, no shared pip seed
}

func (s venvSpec) checkoutDir() string {
	if s.checkout != "" {
		return s.checkout
	}
	return s.workDir
}

func (s venvSpec) taskWorkDir() string {
	if s.workingDir != "" {
		return s.workingDir
	}
	return s.checkoutDir()
}

// venvResult is the environment a task runs in.
type venvResult struct {
	python        string   // the interpreter to run the task with
	dir           string   // the venv; "" when the system interpreter is used
	pythonVersion string   // e.g. "3.11.7"
	cacheHit      bool     // reused from the venv cache
	frozen        []string // pip freeze lines, for tasks.set_requirements
	lock          *os.File // shared lock on the cache entry: keeps it from eviction
	runPrefix     []string // runs the task's python through a tool (uv run ... python); nil: python itself
}

// runArgv is the task's command line (venvPythonArgs) as the environment
// wants it run: `uv run [uv_run_extra_args] --python P python -u ...` for
// a uv project, else unchanged.
func (r *venvResult) runArgv(argv []string) []string {
	if r == nil || len(r.runPrefix) == 0 || len(argv) == 0 || argv[0] != r.python {
		return argv
	}
	return append(append([]string(nil), r.runPrefix...), argv[1:]...)
}

// venvManager prepares environments. One may serve many tasks.
type venvManager struct {
	cfg *agentConfig
	log io.Writer

	pathEnv   string                           // PATH searched for python and uv; "" means $PATH
	onExec    func(argv []string)              // called before every subprocess (tests count them)
	freeSpace func(dir string) (uint64, error) // bytes free; tests replace it

	mu       sync.Mutex
	probes   map[string]pyProbe  // interpreter probes by executable path
	kits     map[string]*venvKit // venv templates and pip seeds by interpreter (venv_seed.go)
	cuda     int                 // the host's CUDA version (torch_host.go)
	cudaDone bool
	said     map[string]bool // notes already in the task log
	offline  bool            // --standalone-mode: no index probes or downloads
	uvAsPip  bool            // a uv project's sync failed without a lock: uv installs the requirements
	portable bool            // venvSpec.portable

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

func (m *venvManager) tool(ctx context.Context, in pyInterp) venvTool {
	if m.packageManager() != "uv" || !(m.uvAsPip || m.cfg.boolean("agent.package_manager.uv_replace_pip", false)) {
		return venvTool{}
	}
	uv, err := m.toolBinary(ctx, in, "uv")
	if err != nil {
		m.logf("WARNING: %v; using pip", err)
		return venvTool{}
	}
	m.sayOnce("uv-pip", "INFO: using UV as pip drop-in replacement (agent.package_manager.uv_replace_pip)")
	return venvTool{uv: uv}
}

// packageManager is agent.package_manager.type as the reference reads it:
// CLEARML_AGENT_FORCE_UV and CLEARML_AGENT_FORCE_POETRY win; conda (out of
// scope) and unknown types run as pip, which the task log says once.
func (m *venvManager) packageManager() string {
	if b, ok := parseBoolText(m.env("CLEARML_AGENT_FORCE_POETRY")); ok && b {
		return "poetry"
	}
	if b, ok := parseBoolText(m.env("CLEARML_AGENT_FORCE_UV")); ok && b {
		return "uv"
	}
	typ := strings.ToLower(strings.TrimSpace(m.cfg.str("agent.package_manager.type")))
	switch typ {
	case "", "pip":
		return "pip"
	case "uv", "poetry":
		return typ
	case "conda":
		m.sayOnce("conda", "NOTE: agent.package_manager.type is conda: this agent does not run conda; it installs the task's requirements with pip")
	default:
		m.sayOnce("type", fmt.Sprintf("WARNING: agent.package_manager.type %q is not supported; using pip", typ))
	}
	return "pip"
}

// sayOnce logs a note once per manager.
func (m *venvManager) sayOnce(id, msg string) {
	m.mu.Lock()
	if m.said == nil {
		m.said = map[string]bool{}
	}
	seen := m.said[id]
	m.said[id] = true
	m.mu.Unlock()
	if !seen {
		m.logf("%s", msg)
	}
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
	return m.runEnv(ctx, dir, nil, stdout, stderr, argv...)
}

// runEnv is run with environment changes: set[k] = v, or removed when v is "\x00".
func (m *venvManager) runEnv(ctx context.Context, dir string, env map[string]string, stdout, stderr io.Writer, argv ...string) error {
	if m.onExec != nil {
		m.onExec(argv)
	}
	cmd := setupCmd(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, changed := env[k]; !changed && k != "PYTHONPATH" && k != "PYTHONHOME" && k != "__PYVENV_LAUNCHER__" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		if v != venvUnset {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if m.gitAuth != nil {
		cmd.Env = append(cmd.Env, "GIT_TERMINAL_PROMPT=0")
		cmd.Env = append(cmd.Env, gitAskpassEnv("", *m.gitAuth)...)
	}
	return cmd.Run()
}

// venvUnset in runEnv's env removes the variable.
const venvUnset = "\x00"

// runLogged runs argv with its output in the task log, and returns the
// output's tail for error messages.
func (m *venvManager) runLogged(ctx context.Context, dir string, argv ...string) (string, error) {
	return m.runLoggedEnv(ctx, dir, nil, argv...)
}

func (m *venvManager) runLoggedEnv(ctx context.Context, dir string, env map[string]string, argv ...string) (string, error) {
	fmt.Fprintf(m.log, "> %s\n", strings.Join(argv, " "))
	tail := &venvTail{}
	w := io.MultiWriter(m.log, tail)
	err := m.runEnv(ctx, dir, env, w, w, argv...)
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
		} else if kit, err := m.kit(ctx, in); err != nil && !errors.Is(err, errNoPipWheel) {
			m.logf("WARNING: cannot prepare a venv template for %s (%v); using python -m venv", in.real, err)
		} else if kit != nil {
			if err := venvFromKit(kit, dir, ssp); err != nil {
				return fmt.Errorf("venv: creating %s: %w", dir, err)
			}
			return nil
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

// pipArgv is the install command for the venv at python.
func pipArgv(t venvTool, python string, args ...string) []string {
	if t.uv != "" {
		return append([]string{t.uv, "pip", "install", "--python", python}, args...)
	}
	return append([]string{python, "-m", "pip", "--disable-pip-version-check", "install"}, args...)
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
func (m *venvManager) build(ctx context.Context, in pyInterp, t venvTool, plan *venvPlan, dir string) ([]string, error) {
	m.logf("Creating virtual environment %s (Python %s, %s)", dir, in.version, t.name())
	t0 := time.Now()
	if err := m.createVenv(ctx, in, t, dir); err != nil {
		return nil, err
	}
	m.logf("Virtual environment ready in %d ms", time.Since(t0).Milliseconds())
	if err := m.install(ctx, t, venvPython(dir), plan, true); err != nil {
		return nil, err
	}
	metricsOn().venvBuilt(time.Since(t0))
	if plan.empty() && !m.cfg.boolean("agent.package_manager.system_site_packages", false) {
		return nil, nil // nothing installed, nothing to freeze (pip itself is not listed)
	}
	frozen, err := m.freeze(ctx, t, venvPython(dir))
	if err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	return torchWriteBack(frozen, plan.torch), nil
}

// prepare gives the task its environment. taskVenvDir is the task's own
// folder (agent.venvs_dir/<version>): the venv is built there, or a cached
// one copied there, and its task_repository and code subfolders are left
// alone.
func (m *venvManager) prepare(ctx context.Context, spec venvSpec, taskVenvDir string) (*venvResult, error) {
	m.offline, m.portable = spec.standalone, spec.portable
	if r, err := m.prepareExisting(ctx, spec); err != nil || r != nil {
		return r, err
	}
	in, err := m.interpreter(ctx, spec.binary)
	if err != nil {
		return nil, err
	}
	if !spec.standalone {
		if r, err := m.prepareProject(ctx, spec, in, taskVenvDir); err != nil || r != nil {
			return r, err
		}
	}
	reqs, err := m.requirementsFor(spec)
	if err != nil {
		return nil, err
	}
	t := m.tool(ctx, in)
	plan, err := m.planRequirements(ctx, spec, in, t, reqs)
	if err != nil {
		return nil, err
	}
	key := m.cacheKey(in, t, plan)
	cache := m.cacheDir()
	if cache != "" && plan.local {
		m.logf("Requirements refer to files of the checkout (-r, -e, paths): not using the venv cache")
		cache = ""
	}
	if spec.standalone {
		return m.prepareStandalone(ctx, in, t, cache, key, taskVenvDir)
	}
	if cache != "" {
		r, err := m.cachePrepare(ctx, cache, key, taskVenvDir, in, func(dir string) ([]string, error) {
			return m.build(ctx, in, t, plan, dir)
		})
		if r != nil {
			metricsOn().venvCache(r.cacheHit)
		}
		if err != nil || r != nil {
			return r, err
		}
		// nil, nil: no room in the cache; build uncached.
	}
	if err := venvCleanTaskDir(taskVenvDir); err != nil {
		return nil, fmt.Errorf("venv: cleaning %s: %w", taskVenvDir, err)
	}
	frozen, err := m.build(ctx, in, t, plan, taskVenvDir)
	if err != nil {
		return nil, err
	}
	return &venvResult{python: venvPython(taskVenvDir), dir: taskVenvDir, pythonVersion: in.version, frozen: frozen}, nil
}

// interpreter selects the task's Python, installing one in a container
// that has none.
func (m *venvManager) interpreter(ctx context.Context, binary string) (pyInterp, error) {
	in, err := m.selectInterpreter(ctx, binary)
	if errors.Is(err, errNoPython) && m.aptInstall != nil {
		if aerr := m.aptInstall(ctx, "Python 3", "python3", "python3-venv", "python3-pip"); aerr != nil {
			return in, fmt.Errorf("interpreter: the image has no Python, and %w", aerr)
		}
		in, err = m.selectInterpreter(ctx, binary)
	}
	if err == nil {
		m.logf("Python interpreter: %s (Python %s)", in.real, in.version)
	}
	return in, err
}

// prepareStandalone installs nothing and builds nothing: a cached or
// existing venv, else the interpreter itself.
func (m *venvManager) prepareStandalone(ctx context.Context, in pyInterp, t venvTool, cache, key, taskVenvDir string) (*venvResult, error) {
	if cache != "" {
		if r, err := m.cacheLookup(ctx, cache, key, taskVenvDir); err != nil || r != nil {
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
	var err error
	if r.frozen, err = m.freeze(ctx, t, r.python); err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	return r, nil
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
	t := m.tool(ctx, *in)
	var plan *venvPlan
	if install && !spec.standalone {
		reqs, err := m.requirementsFor(spec)
		if err != nil {
			return nil, err
		}
		if plan, err = m.planRequirements(ctx, spec, *in, t, reqs); err != nil {
			return nil, err
		}
		if err := m.install(ctx, t, in.real, plan, false); err != nil {
			return nil, err
		}
	}
	if r.frozen, err = m.freeze(ctx, t, r.python); err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	if plan != nil {
		r.frozen = torchWriteBack(r.frozen, plan.torch)
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
