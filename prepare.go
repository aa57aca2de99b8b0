package main

// Preparing a task to run: its code (checkout or a given folder), its
// Python environment (or a custom build script's), its entry point and its
// environment variables. execute runs what prepare returns; build stops
// after it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// preparer makes one task ready to launch.
type preparer struct {
	opts     *taskOptions
	cfg      *agentConfig
	api      *apiClient
	workerID string
	task     *taskDoc
	log      io.Writer // setup output
	tmpDir   string    // the run's temp folder: the task's clearml.conf, custom build files
	build    bool      // build: prepare only, write nothing to the task
	rank     int       // RANK / SLURM_PROCID: only rank 0 writes the task's packages and commit
	buildDir string    // build --target: code and venv go here

	venv     *venvResult       // release it when the run ends
	taskDir  string            // <venvs_dir>/<task id>: code and any uncached venv; removed after the run
	taskVars map[string]string // the task's "Environment" hyper-parameters (agent.enable_task_env)
}

// stepError is a setup failure; the step names what failed for the status reason.
type stepError struct {
	step string
	err  error
	exit int // the agent's exit code; 0 means 1
}

func (e *stepError) Error() string { return e.step + ": " + oneLine(e.err.Error()) }

// prepare checks out the code, prepares Python and returns what to run.
func (p *preparer) prepare(ctx context.Context) (argv []string, dir string, env []string, err error) {
	t := p.task
	fmt.Fprintf(p.log, "Executing task id [%s]:\n", t.ID)
	for _, kv := range [][2]string{
		{"repository", t.Script.Repository}, {"branch", t.Script.Branch}, {"version_num", t.Script.VersionNum},
		{"tag", t.Script.Tag}, {"entry_point", t.Script.EntryPoint}, {"working_dir", t.Script.WorkingDir},
	} {
		fmt.Fprintf(p.log, "%s = %s\n", kv[0], kv[1])
	}
	fmt.Fprintln(p.log)
	applyConfigFiles(p.cfg, p.log)

	res, src, venvDir, err := p.checkout(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	workDir, entryArgs, err := gitResolveEntry(res.root, res.src, p.cfg.env)
	if err != nil {
		return nil, "", nil, &stepError{step: "entry point", err: err}
	}
	custom, err := p.customBuild(ctx, res.root, src, venvDir)
	if err != nil {
		return nil, "", nil, err
	}
	pyExe := ""
	if custom != nil {
		// The script made the environment: run what it names, as it says.
		workDir, entryArgs, pyExe = custom.WorkingDir, []string{custom.EntryPoint}, custom.Binary
	} else {
		py, err := p.pythonEnv(ctx, res.root, workDir, entryArgs, venvDir)
		if err != nil {
			return nil, "", nil, &stepError{step: "python environment", err: err}
		}
		p.venv, pyExe = py, py.python
		if len(py.frozen) > 0 && !p.build && p.rank == 0 {
			p.writeRequirements(ctx, py.frozen)
		}
	}
	if t.Script.VersionNum == "" && res.commit != "" && !p.build && p.rank == 0 {
		setTaskCommit(ctx, p.api, t.ID, res.commit)
	}
	if entryArgs, err = p.convertNotebook(workDir, entryArgs); err != nil {
		return nil, "", nil, err
	}
	argv = venvPythonArgs(pyExe, int(p.opts.optimization), entryArgs)
	if shell := taskShell(t.Script.Binary, p.cfg.env); shell != "" {
		argv = append([]string{shell}, entryArgs...)
	}
	if p.cfg.boolean("agent.enable_task_env", false) {
		p.taskVars = p.environmentParams(ctx)
	}
	env, err = p.taskEnv(workDir, entryArgs)
	if err != nil {
		return nil, "", nil, &stepError{step: "environment", err: err}
	}
	fmt.Fprintf(p.log, "\nRunning task id [%s]:\n[%s]$ %s\n\nEnvironment setup completed successfully\n\n", t.ID, workDir, strings.Join(argv, " "))
	return argv, workDir, env, nil
}

// checkout puts the task's code in place (or takes the folder
// CLEARML_AGENT_FORCE_CODE_DIR names) and says where the venv goes.
func (p *preparer) checkout(ctx context.Context) (res gitResult, src gitSource, venvDir string, err error) {
	t := p.task
	taskDir := filepath.Join(p.cfg.str("agent.venvs_dir"), sanitizeDirName(t.ID))
	if p.rank > 0 {
		taskDir += ".rank" + strconv.Itoa(p.rank) // the ranks of a multi-node run may share a home folder
	}
	venvDir = filepath.Join(taskDir, "venv")
	if p.buildDir != "" {
		taskDir, venvDir = p.buildDir, p.buildDir
	}
	if err := os.MkdirAll(taskDir, 0o755); err != nil {
		return res, src, "", &stepError{step: "prepare", err: err}
	}
	if p.buildDir == "" {
		p.taskDir = taskDir
	}
	codeDir := filepath.Join(taskDir, "task_repository")
	os.RemoveAll(codeDir)

	src = gitSource{
		repository: t.Script.Repository, branch: t.Script.Branch, commit: t.Script.VersionNum,
		tag: t.Script.Tag, diff: t.Script.Diff, entryPoint: t.Script.EntryPoint, workingDir: t.Script.WorkingDir,
	}
	// The reference's overrides for code that is already in place (an image).
	if v := firstEnv(p.cfg.env, "CLEARML_AGENT_FORCE_EXEC_SCRIPT"); v != "" {
		wd, entry, ok := strings.Cut(v, ":")
		if !ok {
			wd, entry = "", v
		}
		src.workingDir, src.entryPoint = wd, entry
		fmt.Fprintf(p.log, "CLEARML_AGENT_FORCE_EXEC_SCRIPT: working_dir = %s, entry_point = %s\n", wd, entry)
	}
	if dir := firstEnv(p.cfg.env, "CLEARML_AGENT_FORCE_CODE_DIR"); dir != "" {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			return res, src, "", &stepError{step: "code", err: fmt.Errorf("CLEARML_AGENT_FORCE_CODE_DIR %q is not a folder; point it at the code or unset it", dir)}
		}
		fmt.Fprintf(p.log, "Using the code in %s (CLEARML_AGENT_FORCE_CODE_DIR): no clone, no diff\n", dir)
		return gitResult{root: dir, src: src}, src, venvDir, nil
	}
	g := newGitCheckout(p.cfg, gitCredentialsFrom(p.cfg, p.opts.gitUser, p.opts.gitPass), p.log)
	g.offline = p.opts.standalone
	if res, err = g.run(ctx, src, codeDir); err != nil {
		return res, src, "", &stepError{step: "failed cloning repository", err: err}
	}
	return res, src, venvDir, nil
}

// convertNotebook runs a notebook entry point as the script converted from it.
func (p *preparer) convertNotebook(workDir string, entryArgs []string) ([]string, error) {
	if len(entryArgs) == 0 || !strings.EqualFold(filepath.Ext(entryArgs[0]), ".ipynb") {
		return entryArgs, nil
	}
	script, err := notebookToScript(filepath.Join(workDir, entryArgs[0]))
	if err != nil {
		return nil, &stepError{step: "notebook", err: err}
	}
	if script != "" {
		fmt.Fprintf(p.log, "Converted the notebook %s to %s\n", entryArgs[0], script)
		py := strings.TrimSuffix(entryArgs[0], filepath.Ext(entryArgs[0])) + ".py"
		entryArgs = append([]string{py}, entryArgs[1:]...)
	}
	return entryArgs, nil
}

// pythonEnv prepares the task's Python: its requirements, or the repo's
// requirements.txt files, in a (cached) venv or a prepared interpreter.
func (p *preparer) pythonEnv(ctx context.Context, root, workDir string, entryArgs []string, venvDir string) (*venvResult, error) {
	t := p.task
	reqs, hasReqs := t.requirementLines("pip")
	if p.cfg.boolean("agent.package_manager.force_original_requirements", false) {
		// What the task was created with, not what a previous run froze.
		if org, ok := t.requirementLines("org_pip"); ok {
			reqs, hasReqs = org, true
		}
	}
	spec := venvSpec{binary: t.Script.Binary, requirements: reqs, taskHasRequirements: hasReqs,
		workDir: root, standalone: p.opts.standalone}
	if !hasReqs || p.cfg.boolean("agent.package_manager.force_repo_requirements_txt", false) {
		spec.requirements, spec.taskHasRequirements = nil, false
		entryDir := workDir
		if len(entryArgs) > 0 && !strings.HasPrefix(entryArgs[0], "-") {
			entryDir = filepath.Dir(filepath.Join(workDir, entryArgs[0]))
		}
		spec.repoRequirementsFiles = findRequirementsTxt(root, entryDir)
	}
	vm := newVenvManager(p.cfg, p.log)
	if creds := gitCredentialsFrom(p.cfg, p.opts.gitUser, p.opts.gitPass); creds.complete() {
		vm.gitAuth = &creds
	}
	if apt := newContainerApt(p.cfg.env, p.log); apt != nil && !p.opts.standalone {
		vm.aptInstall = apt.install
		if p.cfg.boolean("agent.docker_install_opencv_libs", true) && opencvLibsMissing() {
			if err := apt.install(ctx, "the OpenCV system libraries", opencvPackages...); err != nil {
				fmt.Fprintf(p.log, "clearml-agent: warning: %v; going on without them\n", err)
			}
		}
	}
	return vm.prepare(ctx, spec, venvDir)
}

// customBuild runs agent.custom_build_script (CLEARML_AGENT_CUSTOM_BUILD_SCRIPT)
// after the checkout, as the reference: it gets the task and checkout in
// CLEARML_* variables and may write {binary, entry_point, working_dir} to
// $CLEARML_CUSTOM_BUILD_OUTPUT, which then replace the venv and entry point.
// A missing script or unusable output is a warning; a failing script fails
// the task with its exit code. nil means the standard flow.
func (p *preparer) customBuild(ctx context.Context, root string, src gitSource, venvDir string) (*customBuildResult, error) {
	script := firstEnv(p.cfg.env, "CLEARML_AGENT_CUSTOM_BUILD_SCRIPT")
	if script == "" {
		script = strings.TrimSpace(p.cfg.str("agent.custom_build_script"))
	}
	if script == "" {
		return nil, nil
	}
	script = expandHomeEnv(script, p.cfg.env)
	fi, err := os.Stat(script)
	if err != nil || fi.IsDir() {
		fmt.Fprintf(p.log, "clearml_agent: Warning: custom build script %s was not found; going on with the standard flow\n", script)
		return nil, nil
	}
	dir, err := os.MkdirTemp(p.tmpDir, "custom-build-")
	if err != nil {
		return nil, &stepError{step: "custom build script", err: err}
	}
	taskJSON := filepath.Join(dir, "task.json")
	data, _ := json.Marshal(p.task)
	if err := os.WriteFile(taskJSON, data, 0o600); err != nil {
		return nil, &stepError{step: "custom build script", err: err}
	}
	output := filepath.Join(dir, "output.json")
	argv := []string{script}
	if fi.Mode()&0o111 == 0 {
		argv = []string{"bash", script}
	}
	fmt.Fprintf(p.log, "Running the custom build script %s\n", script)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CLEARML_CUSTOM_BUILD_TASK_CONFIG_JSON="+taskJSON, "CLEARML_TASK_SCRIPT_ENTRY="+src.entryPoint,
		"CLEARML_TASK_WORKING_DIR="+src.workingDir, "CLEARML_VENV_PATH="+venvDir, "CLEARML_GIT_ROOT="+root, "CLEARML_CUSTOM_BUILD_OUTPUT="+output)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		code := 1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
		return nil, &stepError{step: "custom build script", err: fmt.Errorf("%s failed: %v", script, err), exit: code}
	}
	raw, err := os.ReadFile(output)
	if err != nil {
		fmt.Fprintf(p.log, "clearml_agent: Warning: the custom build script wrote no %s; going on with the standard flow\n", "$CLEARML_CUSTOM_BUILD_OUTPUT")
		return nil, nil
	}
	var r customBuildResult
	if err := json.Unmarshal(raw, &r); err != nil || r.Binary == "" || r.EntryPoint == "" || r.WorkingDir == "" {
		fmt.Fprintf(p.log, "clearml_agent: Warning: the custom build script's output is not {\"binary\", \"entry_point\", \"working_dir\"} (%v); going on with the standard flow\n", err)
		return nil, nil
	}
	fmt.Fprintf(p.log, "Custom build: binary %s, entry point %s, working dir %s\n", r.Binary, r.EntryPoint, r.WorkingDir)
	return &r, nil
}

// customBuildResult is what a custom build script may write.
type customBuildResult struct {
	Binary     string `json:"binary"`
	EntryPoint string `json:"entry_point"`
	WorkingDir string `json:"working_dir"`
}

// writeRequirements stores the installed packages on the task.
func (p *preparer) writeRequirements(ctx context.Context, frozen []string) {
	if err := setTaskRequirements(ctx, p.api, p.task, frozen); err != nil {
		fmt.Fprintf(p.log, "clearml_agent: Warning: could not store the installed packages: %v\n", err)
	}
}

// environmentParams reads the task's hyper-parameters of section
// "Environment", which agent.enable_task_env exports to the task as
// variables. A failure is a warning: the task runs without them.
func (p *preparer) environmentParams(ctx context.Context) map[string]string {
	vars, err := taskEnvironmentParams(withBudget(ctx, time.Minute), p.api, p.task.ID)
	if err != nil {
		fmt.Fprintf(p.log, "clearml_agent: Warning: could not read the task's Environment parameters: %v\n", err)
	}
	return vars
}

// findRequirementsTxt lists the requirements.txt files from the repo root
// down to the entry point's folder, root first, as the reference installs
// them (a folder outside the repo adds only the root's).
func findRequirementsTxt(codeDir, entryDir string) []string {
	dirs := []string{codeDir}
	if rel, err := filepath.Rel(codeDir, entryDir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		d := codeDir
		for _, part := range strings.Split(rel, string(filepath.Separator)) {
			d = filepath.Join(d, part)
			dirs = append(dirs, d)
		}
	}
	var out []string
	for _, d := range dirs {
		if p := filepath.Join(d, "requirements.txt"); fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

// taskEnv is the environment of the task process (agent-execute.md §5).
func (p *preparer) taskEnv(workDir string, entryArgs []string) ([]string, error) {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range configEnvironment(p.cfg) {
		env[k] = v
	}
	for k, v := range p.taskVars {
		env[k] = v
	}
	accessKey, secretKey, token := p.api.credentials()
	confPath := filepath.Join(p.tmpDir, "clearml.conf")
	if err := writePrivateConfig(p.cfg, confPath, accessKey == ""); err != nil {
		return nil, err
	}
	env["CLEARML_TASK_ID"] = p.task.ID
	env["CLEARML_LOG_LEVEL"] = p.opts.logLevel.val
	env["CLEARML_LOG_TASK_TO_BACKEND"] = "0"
	env["CLEARML_CONFIG_FILE"] = confPath
	env["CLEARML_WORKER_ID"] = p.workerID
	env["CLEARML_API_HOST"] = p.api.host
	if ws := p.cfg.str("api.web_server"); ws != "" {
		env["CLEARML_WEB_HOST"] = ws
	}
	if fs := p.cfg.str("api.files_server"); fs != "" {
		env["CLEARML_FILES_HOST"] = fs
	}
	if accessKey != "" {
		env["CLEARML_API_ACCESS_KEY"] = accessKey
		env["CLEARML_API_SECRET_KEY"] = secretKey
	} else {
		// A token (e.g. the owner's, --use-owner-token): the task gets it,
		// and no key of the agent's.
		for _, k := range []string{"CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "TRAINS_API_ACCESS_KEY", "TRAINS_API_SECRET_KEY"} {
			delete(env, k)
		}
		env["CLEARML_AUTH_TOKEN"] = token
	}
	gpuEnv(env, p.opts.gpus, p.opts.cpuOnly)
	if p.venv != nil && p.venv.dir != "" {
		// As if activated: subprocesses that call python or pip get the venv.
		env["VIRTUAL_ENV"] = p.venv.dir
		env["PATH"] = filepath.Join(p.venv.dir, "bin") + string(os.PathListSeparator) + env["PATH"]
	}
	pyPath := []string{}
	if old := env["PYTHONPATH"]; old != "" {
		pyPath = append(pyPath, old)
	}
	pyPath = append(pyPath, workDir)
	if len(entryArgs) > 0 && !strings.HasPrefix(entryArgs[0], "-") {
		if d := filepath.Dir(filepath.Join(workDir, entryArgs[0])); d != workDir {
			pyPath = append(pyPath, d)
		}
	}
	if extra := env["CLEARML_AGENT_EXTRA_PYTHON_PATH"]; extra != "" {
		pyPath = append(pyPath, extra)
	}
	env["PYTHONPATH"] = strings.Join(pyPath, string(os.PathListSeparator))
	// Legacy SDKs read TRAINS_* names.
	for k, v := range env {
		if rest, ok := strings.CutPrefix(k, "CLEARML_"); ok {
			if _, has := env["TRAINS_"+rest]; !has || k == "CLEARML_TASK_ID" || k == "CLEARML_CONFIG_FILE" {
				env["TRAINS_"+rest] = v
			}
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// taskShell is the shell a bash/sh/zsh task runs with ("" for python):
// $SHELL, else /bin/bash, as the reference does.
func taskShell(binary string, env envLookup) string {
	switch filepath.Base(strings.TrimSpace(binary)) {
	case "bash", "sh", "zsh":
		if sh := firstEnv(env, "SHELL"); sh != "" {
			return sh
		}
		return "/bin/bash"
	}
	return ""
}

// writePrivateConfig writes the effective configuration, credentials
// included, as a 0600 JSON file (JSON is HOCON) for the SDK in the task.
func writePrivateConfig(cfg *agentConfig, path string, stripCredentials bool) error {
	plain := hoconToPlain(cfg.root).(map[string]any)
	if api, ok := plain["api"].(map[string]any); ok && stripCredentials {
		delete(api, "credentials")
	}
	data, err := json.MarshalIndent(plain, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func sanitizeDirName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == '.' && s == ".." {
			return '_'
		}
		return r
	}, s)
}

// notebookToScript writes the code cells of a Jupyter notebook to a .py
// beside it and returns its path, as the reference does with nbconvert, but
// without needing nbconvert or IPython in the task's environment: IPython
// magics and shell escapes (%, %%, !) cannot run in plain Python and are
// left as comments. A file that is not notebook JSON (a script saved under
// the .ipynb name) gives "": it runs as it is.
func notebookToScript(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the notebook: %v", err)
	}
	var nb struct {
		Cells []struct {
			CellType string          `json:"cell_type"`
			Source   json.RawMessage `json:"source"`
		} `json:"cells"`
		NBFormat int `json:"nbformat"`
	}
	if json.Unmarshal(data, &nb) != nil || nb.NBFormat == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("#!/usr/bin/env python\n# coding: utf-8\n# Converted from " + filepath.Base(path) + " by clearml-agent\n")
	for i, c := range nb.Cells {
		if c.CellType != "code" {
			continue
		}
		// nbformat 4 stores source as a list of lines or as one string.
		var text string
		var lines []string
		if json.Unmarshal(c.Source, &lines) == nil {
			text = strings.Join(lines, "")
		} else if json.Unmarshal(c.Source, &text) != nil {
			return "", fmt.Errorf("cell %d of %s has unreadable source", i, filepath.Base(path))
		}
		fmt.Fprintf(&b, "\n\n# In[%d]:\n\n", i+1)
		cellMagic := strings.HasPrefix(strings.TrimSpace(text), "%%")
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			t := strings.TrimSpace(l)
			if cellMagic || strings.HasPrefix(t, "%") || strings.HasPrefix(t, "!") {
				b.WriteString("# (IPython only, not run) " + l + "\n")
				continue
			}
			b.WriteString(l + "\n")
		}
	}
	out := strings.TrimSuffix(path, filepath.Ext(path)) + ".py"
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("writing the converted notebook beside it (%v); the notebook's folder must be writable", err)
	}
	return out, nil
}

// configEnvironment is the config's top-level environment {} section, when
// agent.apply_environment allows it.
func configEnvironment(cfg *agentConfig) map[string]string {
	out := map[string]string{}
	if !cfg.boolean("agent.apply_environment", true) {
		return out
	}
	if sec, ok := cfg.lookup("environment"); ok {
		if o, ok := sec.(*hoconObject); ok {
			for _, k := range o.Keys() {
				if v, _ := o.Get(k); v != nil {
					out[k] = scalarText(v)
				}
			}
		}
	}
	return out
}

// removeTaskDir deletes the task's folder once it has ended: one folder
// per task id would otherwise fill the disk of a long-running worker (the
// reference reuses and wipes one folder per Python version). --debug keeps it.
func (p *preparer) removeTaskDir(keep bool, warn io.Writer) {
	if p.taskDir == "" || keep {
		return
	}
	if err := os.RemoveAll(p.taskDir); err != nil {
		fmt.Fprintf(warn, "clearml_agent: Warning: could not remove %s: %v\n", p.taskDir, err)
	}
}
