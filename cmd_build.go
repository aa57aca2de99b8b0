package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// buildCmd prepares a task's environment without running it.
type buildCmd struct {
	workerFlags
	id              string
	target          string
	installGlobally bool
	docker          listFlag
	forceDocker     bool
	pythonVersion   string
	entryPoint      choiceFlag
}

func (b *buildCmd) flags(t *flagTable) {
	b.entryPoint = choiceFlag{choices: []string{"reuse_task", "clone_task"}}
	t.stringVar(&b.id, "id", "TASK_ID", "Build the environment of this task id")
	t.require()
	t.stringVar(&b.target, "target", "TARGET", "Folder for the virtual environment and the source code (with --docker: the image name)")
	t.boolVar(&b.installGlobally, "install-globally", "", "Install the required packages before creating the virtual environment (always on with --docker)")
	registerDocker(t, &b.docker)
	t.boolVar(&b.forceDocker, "force-docker", "", "Use the agent's Docker image even if the task names its own")
	t.stringVar(&b.pythonVersion, "python-version", "PYTHON_VERSION", "Python version of the virtual environment")
	t.add(&b.entryPoint, "entry-point", "", "{reuse_task,clone_task}", "With --docker, how the image runs the task when it starts")
	b.workerFlags.register(t)
}

// buildForImageEnv marks the build that runs inside the container of
// `build --docker`: the venv goes to the (unmounted) venv cache and the
// code to the vcs cache, so `execute --standalone-mode` finds both later,
// for the task or a clone of it.
const buildForImageEnv = "CLEARML_AGENT_BUILD_FOR_IMAGE"

func (b *buildCmd) run(cx *cmdContext) error {
	if !b.docker.set && (b.entryPoint.val != "" || b.forceDocker) {
		return usagef("--entry-point and --force-docker build a Docker image: add --docker [IMAGE]")
	}
	cfg, c, workerID, err := cx.connect(clientOptions{interactive: true}, true)
	if err != nil {
		return err
	}
	printConfiguration(cx.stdout, cfg)
	ctx := context.Background()
	task, err := findTask(ctx, c, b.id)
	if err != nil {
		return err
	}
	if b.docker.set {
		return b.buildImage(ctx, cx, cfg, task, workerID)
	}
	if b.pythonVersion != "" {
		task.Script.Binary = "python" + strings.TrimPrefix(b.pythonVersion, "python")
	}
	// --gpus/--cpu-only only steer CUDA detection here.
	if b.gpus != "" || b.cpuOnly {
		m := map[string]string{}
		gpuEnv(m, b.gpus, b.cpuOnly)
		for k, v := range m {
			os.Setenv(k, v)
		}
	}
	p := &preparer{opts: &taskOptions{workerFlags: b.workerFlags, id: task.ID}, cfg: cfg, api: c, workerID: workerID,
		task: task, log: cx.stdout, build: true}
	if forImage, _ := parseBoolText(firstEnv(cfg.env, buildForImageEnv)); !forImage {
		// A build is the task's own: it neither reads nor feeds the venv cache.
		cfg.set("agent.venvs_cache.path", "")
		p.buildDir = b.target
		if p.buildDir == "" {
			p.buildDir = filepath.Join(cfg.str("agent.venvs_dir"), sanitizeDirName(task.ID))
		}
		if p.buildDir, err = filepath.Abs(expandHome(p.buildDir)); err != nil {
			return err
		}
	}
	if b.installGlobally {
		if err := b.installGlobal(ctx, cfg, task, cx); err != nil {
			return err
		}
		cfg.set("agent.package_manager.system_site_packages", true)
	}
	if p.tmpDir, err = os.MkdirTemp(tempDirFor(cfg), "clearml-agent-build-"); err != nil {
		return err
	}
	defer os.RemoveAll(p.tmpDir)
	argv, dir, _, err := p.prepare(ctx)
	defer p.venv.release()
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("building task %s failed: %s", task.ID, err)}
	}
	b.printResult(cx.stdout, task, p.venv, argv, dir)
	return nil
}

// printResult says what the build made, as the reference.
func (b *buildCmd) printResult(out io.Writer, task *taskDoc, venv *venvResult, argv []string, dir string) {
	fmt.Fprintf(out, "\nRestoring running environment of task id [%s]:\n", task.ID)
	if venv != nil {
		for _, l := range venv.frozen {
			fmt.Fprintln(out, l)
		}
		if venv.dir != "" {
			fmt.Fprintf(out, "Virtual environment: %s\n", filepath.Join(venv.dir, "bin"))
		}
	}
	fmt.Fprintf(out, "Source code: %s\nEntry point: %s\n", dir, strings.Join(argv[1:], " "))
}

// installGlobal installs the task's packages into the interpreter itself
// (--install-globally); the venv then sees them through system site packages.
func (b *buildCmd) installGlobal(ctx context.Context, cfg *agentConfig, task *taskDoc, cx *cmdContext) error {
	reqs, _ := task.requirementLines("pip")
	if len(reqs) == 0 {
		return nil
	}
	in, err := newVenvManager(cfg, cx.stdout).selectInterpreter(ctx, task.Script.Binary)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(tempDirFor(cfg), "clearml-requirements-*.txt")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	f.WriteString(strings.Join(reqs, "\n") + "\n")
	f.Close()
	fmt.Fprintf(cx.stdout, "Installing the task's packages globally into %s\n", in.real)
	cmd := setupCmd(ctx, in.real, "-m", "pip", "install", "-r", f.Name())
	cmd.Env = append(os.Environ(), "PIP_BREAK_SYSTEM_PACKAGES=1")
	cmd.Stdout, cmd.Stderr = cx.stdout, cx.stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("--install-globally: pip install into %s failed: %v", in.real, err)
	}
	return nil
}

// buildImage is `build --docker`: run this agent's build in a container of
// the task's image, then commit the container as the target image.
func (b *buildCmd) buildImage(ctx context.Context, cx *cmdContext, cfg *agentConfig, task *taskDoc, workerID string) error {
	target := b.target
	if target == "" {
		target = "task_id_" + strings.ToLower(task.ID)
	}
	inner := "cp " + buildAgentMount + " " + dockerAgentPath + " && cp " + dockerConfigPath + " " + dockerRoot + "/clearml.conf && " +
		buildForImageEnv + "=1 " + dockerAgentPath
	for _, a := range b.innerArgv(task.ID) {
		inner += " " + shellQuote(a)
	}
	o := dockerRunOptions{
		task: taskOptions{workerFlags: b.workerFlags, docker: b.docker}, forceDocker: b.forceDocker, workerID: workerID, debug: true,
		noCacheMounts: true, agentMount: buildAgentMount, innerArgs: []string{"bash", "-c", inner},
	}
	run, err := dockerTaskArgv(cfg, task, o)
	if err != nil {
		return err
	}
	defer run.cleanup()
	defer dockerRemove(context.Background(), run.engine, run.name)
	fmt.Fprintf(cx.stdout, "Building docker image %s for task %s from %s\nExecuting: %s\n", target, task.ID, run.img.image, dockerLoggedCommand(cfg, run.argv))
	proc, err := startTaskProcess(run.argv, "", run.environ(os.Environ()), cx.stdout)
	if err != nil {
		return fmt.Errorf("cannot run docker: %w", err)
	}
	if code := proc.wait(); code != 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("building the environment of task %s in docker failed (exit code %d)", task.ID, code)}
	}
	entry := `ENTRYPOINT []`
	cmd := `CMD ["bash"]`
	switch b.entryPoint.val {
	case "reuse_task", "clone_task":
		run := taskOptions{id: task.ID, standalone: true, clone: b.entryPoint.val == "clone_task"}
		entry = "ENTRYPOINT " + dockerPythonJSON(append([]string{dockerAgentPath}, executeArgv(globalOpts{}, run)...))
		cmd = "CMD []"
	}
	commit := []string{"commit", "--change", entry, "--change", cmd,
		"--change", "ENV CLEARML_CONFIG_FILE=" + dockerRoot + "/clearml.conf"}
	// -e values are kept by commit: blank the secret ones.
	for _, k := range []string{"CLEARML_AGENT_GIT_USER", "CLEARML_AGENT_GIT_PASS", "CLEARML_AUTH_TOKEN"} {
		for _, a := range run.argv {
			if strings.HasPrefix(a, k+"=") || a == k { // -e NAME: its value is in the CLI's environment
				commit = append(commit, "--change", "ENV "+k+"=")
				break
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := dockerCmd(cctx, append(commit, run.name, target)...); err != nil {
		return err
	}
	fmt.Fprintf(cx.stdout, "Docker image %s is ready (task %s). It holds this agent's API credentials in %s/clearml.conf: keep it private.\n", target, task.ID, dockerRoot)
	return nil
}

// innerArgv is the command line of the build that build --docker runs in
// the container.
func (b *buildCmd) innerArgv(taskID string) []string {
	var enc buildCmd
	t := newFlagTable("build")
	enc.flags(t)
	enc = *b
	enc.id = taskID
	return append([]string{"build"}, t.argv(&enc.id, &enc.pythonVersion, &enc.cpuOnly)...)
}

// buildAgentMount is where build --docker mounts the agent: a bind mount is
// not committed, so the build copies it to dockerAgentPath in the image.
const buildAgentMount = "/tmp/clearml-agent.mnt"

// dockerPythonJSON is a JSON array of strings (a Dockerfile exec form).
func dockerPythonJSON(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ",") + "]"
}
