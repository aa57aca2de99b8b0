package main

// The options of one task run: what `execute` accepts, and the one encoder
// back to argv that the daemon, docker mode and build start their child
// executes with, so that a flag added here reaches every child.

import "strings"

// taskOptions are the flags of `execute`.
type taskOptions struct {
	workerFlags
	id                string
	logFile           string
	disableMonitoring bool
	fullMonitoring    bool
	requireQueue      bool
	standalone        bool
	docker            listFlag
	podman            listFlag // --podman: docker mode with the podman CLI (dockerEngineFlags)
	clone             bool
	force             bool // run a task that is in_progress elsewhere, completed or published
}

// taskIDFlag is execute's --id (the daemon's orphan check matches it in
// its children's command lines).
const taskIDFlag = "id"

func (o *taskOptions) register(t *flagTable) {
	t.stringVar(&o.id, taskIDFlag, "TASK_ID", "Id (or name) of the task to execute")
	t.require()
	t.stringVar(&o.logFile, "log-file", "LOG_FILE", "Also write the task's output (stdout/stderr) to this file")
	t.boolVar(&o.disableMonitoring, "disable-monitoring", "", "Disable logging and monitoring, except for stdout")
	t.boolVar(&o.fullMonitoring, "full-monitoring", "", "Full log: environment setup, task output and monitoring, plus stdout (always on in this agent)")
	t.boolVar(&o.requireQueue, "require-queue", "", "Fail if the task is not queued (for external schedulers such as K8s or SLURM)")
	registerStandalone(t, &o.standalone)
	registerDocker(t, &o.docker)
	registerPodman(t, &o.podman)
	t.boolVar(&o.clone, "clone", "", "Clone the task given by --id, then execute the clone")
	t.boolVar(&o.force, "force", "", "Run the task even if it is in_progress on another worker, completed or published (refused by default)")
	o.workerFlags.register(t)
}

// executeArgv is the command line (after the program name) of a child
// `execute` running o. The git credentials are left out, since any user
// sees a process's argv: childEnv carries them.
func executeArgv(g globalOpts, o taskOptions) []string {
	t, enc := o.encoder()
	argv := append(g.argv(), "execute")
	// The order children have always had their flags in (docker's logged
	// command shows it).
	return append(argv, t.argv(&enc.id, &enc.fullMonitoring, &enc.standalone, &enc.requireQueue, &enc.clone,
		&enc.cpuOnly, &enc.gpus, &enc.logLevel, &enc.optimization, &enc.disableMonitoring, &enc.logFile, &enc.docker, &enc.podman, &enc.force)...)
}

// encoder is execute's flag table bound to a copy of o, for
// flagTable.argv.
func (o taskOptions) encoder() (*flagTable, *taskOptions) {
	enc := new(taskOptions)
	t := newFlagTable("execute")
	enc.register(t)
	*enc = o
	return t, enc
}

// glueJobArgv is the child execute of a glue's batch job (slurm): it
// claims the queued task itself, --require-queue --id TASK, in the order
// the job scripts have always shown.
func glueJobArgv(g globalOpts, taskID string) []string {
	t, enc := taskOptions{id: taskID, requireQueue: true}.encoder()
	return append(append(g.argv(), "execute"), t.argv(&enc.requireQueue, &enc.id)...)
}

// k8sDefaultExecArgs is K8S_GLUE_DEF_EXEC_AGENT_ARGS's default, the
// reference's: --full-monitoring --require-queue.
func k8sDefaultExecArgs() string {
	t, enc := taskOptions{fullMonitoring: true, requireQueue: true}.encoder()
	return strings.Join(t.argv(&enc.fullMonitoring, &enc.requireQueue), " ")
}

// childEnv is the part of o a child gets in its environment: the git
// credentials (gitCredentialsFrom reads them there).
func (o taskOptions) childEnv() []string {
	var env []string
	if o.gitUser != "" {
		env = append(env, "CLEARML_AGENT_GIT_USER="+o.gitUser)
	}
	if o.gitPass != "" {
		env = append(env, "CLEARML_AGENT_GIT_PASS="+o.gitPass)
	}
	return env
}
