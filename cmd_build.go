package main

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
	t.stringVar(&b.target, "target", "TARGET", "Folder for the virtual environment and the source code")
	t.boolVar(&b.installGlobally, "install-globally", "", "Install the required packages before creating the virtual environment (always on with --docker)")
	t.add(&b.docker, "docker", "", "DOCKER", "Build a Docker image: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
	t.boolVar(&b.forceDocker, "force-docker", "", "Use the agent's Docker image even if the task names its own")
	t.stringVar(&b.pythonVersion, "python-version", "PYTHON_VERSION", "Python version of the virtual environment")
	t.add(&b.entryPoint, "entry-point", "", "{reuse_task,clone_task}", "With --docker, how the image runs the task when it starts")
	b.workerFlags.register(t)
}

func (b *buildCmd) run(env *runEnv) error { return errNotImplemented("build") }
