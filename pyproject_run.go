package main

// Poetry and uv projects (issue 13, part 3), as the reference's
// poetry_api.py and uv_api.py; the argument and environment rules are in
// pyproject.go.
//
//	agent.package_manager.type: poetry (or CLEARML_AGENT_FORCE_POETRY)
//	    pyproject.toml or poetry.lock in the checkout (or the working dir
//	    with poetry_files_from_repo_working_dir): `poetry install -n
//	    [poetry_install_extra_args]` into the task's venv (VIRTUAL_ENV), and
//	    the task runs with that venv's python. poetry_version installs that
//	    Poetry into a venv of its own; without it, poetry on PATH.
//	agent.package_manager.type: uv (or CLEARML_AGENT_FORCE_UV)
//	    pyproject.toml or uv.lock (or the working dir with
//	    uv_files_from_repo_working_dir): `uv sync [--locked]
//	    [uv_sync_extra_args]` in the project, then the task runs as `uv run
//	    [uv_run_extra_args] --python <project>/.venv/bin/python python ...`.
//	    Without project files: pip, or `uv venv` + `uv pip install` with
//	    uv_replace_pip. uv: CLEARML_BOOTSTRAP_UV_EXEC, else uv on PATH if it
//	    fits uv_version, else uv<uv_version> pip-installed into a venv of its own.
//
// A Poetry or uv project is not kept in the venv cache: its lock file is
// the cache key the tools keep themselves.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// prepareProject handles a Poetry or uv project; nil, nil when the task is
// not one (the requirements are then installed as usual).
func (m *venvManager) prepareProject(ctx context.Context, spec venvSpec, in pyInterp, taskVenvDir string) (*venvResult, error) {
	switch tool := m.packageManager(); tool {
	case "poetry", "uv":
		dir := spec.checkoutDir()
		if m.cfg.boolean("agent.package_manager."+tool+"_files_from_repo_working_dir", false) {
			dir = spec.taskWorkDir()
		}
		if dir == "" || !venvHasAny(dir, pyProjectFiles(tool)) {
			m.logf("Could not find pyproject.toml or %s in %q: installing the requirements with pip", pyProjectFiles(tool)[1], dir)
			return nil, nil
		}
		if tool == "poetry" {
			return m.preparePoetry(ctx, in, dir, taskVenvDir)
		}
		return m.prepareUVProject(ctx, in, dir)
	}
	return nil, nil
}

func venvHasAny(dir string, names []string) bool {
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// preparePoetry installs the project into the task's venv with poetry.
// A failure falls back to pip, as the reference.
func (m *venvManager) preparePoetry(ctx context.Context, in pyInterp, dir, taskVenvDir string) (*venvResult, error) {
	poetry, err := m.toolBinary(ctx, in, "poetry")
	if err != nil {
		m.logf("WARNING: %v; installing the requirements with pip", err)
		return nil, nil
	}
	m.logf("Poetry Enabled: Ignoring requested python packages, using repository poetry lock file!")
	if err := venvCleanTaskDir(taskVenvDir); err != nil {
		return nil, fmt.Errorf("venv: cleaning %s: %w", taskVenvDir, err)
	}
	if err := m.createVenv(ctx, in, venvTool{}, taskVenvDir); err != nil {
		return nil, err
	}
	env := m.poetryEnv(taskVenvDir)
	argv := append([]string{poetry, "install", "-n"}, m.cfg.strList("agent.package_manager.poetry_install_extra_args")...)
	if out, err := m.runLoggedEnv(ctx, dir, env, argv...); err != nil {
		_, reason := pyFailure(out, nil)
		m.logf("WARNING: poetry install failed (%s); installing the requirements with pip", reqRedact(reason))
		return nil, nil
	}
	var show bytes.Buffer
	var frozen []string
	if err := m.runEnv(ctx, dir, env, &show, io.Discard, poetry, "show", "-n"); err == nil {
		frozen = poetryShowToFreeze(show.String())
	} else if frozen, err = m.freeze(ctx, venvTool{}, venvPython(taskVenvDir)); err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	return &venvResult{python: venvPython(taskVenvDir), dir: taskVenvDir, pythonVersion: in.version, frozen: frozen}, nil
}

// poetryEnv makes poetry install into the task's venv: it uses an active
// VIRTUAL_ENV. The null keyring keeps poetry from waiting on a desktop
// keyring service that a worker has not (unless the operator chose one).
func (m *venvManager) poetryEnv(venv string) map[string]string {
	env := map[string]string{
		"VIRTUAL_ENV":  venv,
		"PATH":         filepath.Join(venv, "bin") + string(os.PathListSeparator) + os.Getenv("PATH"),
		"CONDA_PREFIX": venvUnset,
		"PYTHONPATH":   venvUnset,
	}
	if os.Getenv("PYTHON_KEYRING_BACKEND") == "" {
		env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
	}
	return env
}

// uvOptionsFor reads the uv settings for the project in dir.
func (m *venvManager) uvOptionsFor(dir string) uvOptions {
	_, err := os.Stat(filepath.Join(dir, "uv.lock"))
	o := uvOptions{
		LockExists:      err == nil,
		SyncLocked:      m.cfg.boolean("agent.package_manager.uv_sync_locked_if_lock_file", true),
		SyncExtraArgs:   m.cfg.strList("agent.package_manager.uv_sync_extra_args"),
		RunExtraArgs:    m.cfg.strList("agent.package_manager.uv_run_extra_args"),
		UnsafeBestMatch: m.cfg.boolean("agent.package_manager.uv_unsafe_best_match", false),
		VenvsDir:        m.cfg.str("agent.venvs_dir"),
		DownloadCache:   m.cfg.str("agent.pip_download_cache.path"),
	}
	for _, u := range m.cfg.strList("agent.package_manager.extra_index_url") {
		if u = strings.TrimSpace(u); u != "" {
			o.ExtraIndexURLs = append(o.ExtraIndexURLs, u)
		}
	}
	return o
}

// uvCallEnv is the environment change for one uv call (uvEnv), logged
// when it skips uv_unsafe_best_match.
func (m *venvManager) uvCallEnv(o uvOptions, args []string, in pyInterp) map[string]string {
	set, unset, note := uvEnv(o, args, args[0] == "sync" || args[0] == "run", os.LookupEnv)
	if note != "" {
		m.logf("INFO: %s", note)
	}
	for _, k := range unset {
		set[k] = venvUnset
	}
	if args[0] == "sync" && os.Getenv("UV_PYTHON") == "" && in.real != "" {
		set["UV_PYTHON"] = in.real // the interpreter the task asked for
	}
	return set
}

// prepareUVProject syncs the project with uv; the task then runs through
// `uv run`. A locked sync that fails is tried once more without the lock,
// as the reference; a sync without a lock that fails falls back to uv as
// pip's replacement.
func (m *venvManager) prepareUVProject(ctx context.Context, in pyInterp, dir string) (*venvResult, error) {
	uv, err := m.toolBinary(ctx, in, "uv")
	if err != nil {
		return nil, fmt.Errorf("requirements: %w", err)
	}
	m.logf("UV Enabled: Ignoring requested python packages, using repository uv lock file!")
	o := m.uvOptionsFor(dir)
	sync := func(locked bool) (string, error) {
		args := uvSyncArgs(o, locked)
		return m.runLoggedEnv(ctx, dir, m.uvCallEnv(o, args, in), append([]string{uv}, args...)...)
	}
	out, err := sync(true)
	if err != nil && o.LockExists {
		m.logf("INFO: failed installing using lock file, trying without")
		out, err = sync(false)
	} else if err != nil {
		_, reason := pyFailure(out, nil)
		m.logf("WARNING: Failed installing uv requirements from lock file (%s): Reverting to UV as pip replacement", reqRedact(reason))
		m.uvAsPip = true
		return nil, nil
	}
	if err != nil {
		_, reason := pyFailure(out, nil)
		return nil, fmt.Errorf("requirements: uv sync in %s failed: %s", dir, reqRedact(reason))
	}
	venv := filepath.Join(dir, ".venv")
	if v := os.Getenv("UV_PROJECT_ENVIRONMENT"); v != "" {
		venv = v
		if !filepath.IsAbs(v) {
			venv = filepath.Join(dir, v)
		}
	}
	py := venvPython(venv)
	r := &venvResult{python: py, dir: venv, pythonVersion: in.version}
	freezeArgs := []string{"pip", "freeze", "--python", py}
	var frozen bytes.Buffer
	if err := m.runEnv(ctx, dir, m.uvCallEnv(o, freezeArgs, in), &frozen, io.Discard, append([]string{uv}, freezeArgs...)...); err != nil {
		m.logf("WARNING: could not freeze installed packages: %v", err)
	}
	for _, l := range strings.Split(frozen.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "clearml-agent") && !strings.Contains(l, "clearml_agent") {
			r.frozen = append(r.frozen, l)
		}
	}
	r.runPrefix = append([]string{uv}, uvRunArgs(o, py, nil)...)
	return r, nil
}

// toolBinary finds uv or poetry: for uv CLEARML_BOOTSTRAP_UV_EXEC first;
// then the one on PATH when agent.package_manager.<tool>_version is unset
// or the PATH one fits it; else <tool><version> pip-installed into a venv
// of its own (kept for later tasks).
func (m *venvManager) toolBinary(ctx context.Context, in pyInterp, tool string) (string, error) {
	if tool == "uv" {
		if p := m.env("CLEARML_BOOTSTRAP_UV_EXEC"); p != "" {
			if !venvIsExecutable(p) {
				return "", fmt.Errorf("CLEARML_BOOTSTRAP_UV_EXEC %q is not an executable; point it at uv or unset it", p)
			}
			return p, nil
		}
	}
	spec := strings.ReplaceAll(strings.TrimSpace(m.cfg.str("agent.package_manager."+tool+"_version")), " ", "")
	if spec != "" && !strings.ContainsAny(spec, "=<>~!") {
		spec = "==" + spec
	}
	if p, ok := m.lookPath(tool); ok {
		if spec == "" {
			m.sayOnce(tool+"-found", fmt.Sprintf("Notice: %s was found (%s), no specific version required, skipping its installation", tool, p))
			return p, nil
		}
		var out bytes.Buffer
		if err := m.run(ctx, "", &out, io.Discard, p, "--version"); err == nil {
			if v := pyVersionWord().FindString(out.String()); v != "" && pyVersionInSpec(v, spec) {
				return p, nil
			}
		}
		m.logf("%s on PATH (%s) is not %s_version %q", tool, p, tool, spec)
	}
	return m.toolVenv(ctx, in, tool, spec)
}

var pyVersionWord = lazyRegexp(`\d+(?:\.\d+)+`)

// toolVenv pip-installs tool+spec into <seed root>/.tools/<tool>-<hash>/
// (once, under a lock) and returns its executable.
func (m *venvManager) toolVenv(ctx context.Context, in pyInterp, tool, spec string) (string, error) {
	root := m.seedRoot()
	if root == "" {
		root = m.cfg.str("agent.venvs_dir")
	}
	if root == "" {
		return "", fmt.Errorf("%s%s is needed but there is no folder to install it into (set agent.venvs_cache.path)", tool, spec)
	}
	dir := filepath.Join(root, ".tools", tool+"-"+venvHash(venvKitID(in), spec, strings.Join(m.installFlags(), " ")))
	exe := filepath.Join(dir, "bin", tool)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return exe, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	lock, err := venvLock(ctx, dir+".lock", unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return exe, nil
	}
	m.logf("Installing %s%s into %s", tool, spec, dir)
	os.RemoveAll(dir)
	if err := m.createVenv(ctx, in, venvTool{}, dir); err != nil {
		return "", err
	}
	argv := pipArgv(venvTool{}, venvPython(dir), append([]string{tool + spec}, m.installFlags()...)...)
	if out, err := m.runLogged(ctx, "", argv...); err != nil {
		_, reason := pyFailure(out, nil)
		os.RemoveAll(dir)
		return "", fmt.Errorf("could not install %s%s: %s", tool, spec, reqRedact(reason))
	}
	if !venvIsExecutable(exe) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("installing %s%s gave no %s executable", tool, spec, tool)
	}
	return exe, os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
}
