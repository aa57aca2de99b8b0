package main

// executeCmd runs one task.
type executeCmd struct {
	workerFlags
	id                string
	logFile           string
	disableMonitoring bool
	fullMonitoring    bool
	requireQueue      bool
	standalone        bool
	docker            listFlag
	clone             bool
}

func (e *executeCmd) flags(t *flagTable) {
	t.stringVar(&e.id, "id", "TASK_ID", "Id (or name) of the task to execute")
	t.stringVar(&e.logFile, "log-file", "LOG_FILE", "Also write the task's output (stdout/stderr) to this file")
	t.boolVar(&e.disableMonitoring, "disable-monitoring", "", "Disable logging and monitoring, except for stdout")
	t.boolVar(&e.fullMonitoring, "full-monitoring", "", "Full log: environment setup, task output and monitoring, plus stdout")
	t.boolVar(&e.requireQueue, "require-queue", "", "Fail if the task is not queued (for external schedulers such as K8s or SLURM)")
	t.boolVar(&e.standalone, "standalone-mode", "", "Use no network connections; assume everything is pre-installed")
	t.add(&e.docker, "docker", "", "DOCKER", "Run in Docker: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
	t.boolVar(&e.clone, "clone", "", "Clone the task given by --id, then execute the clone")
	e.workerFlags.register(t)
}

func (e *executeCmd) run(env *runEnv) error { return errNotImplemented("execute") }
