package main

var logLevels = []string{"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"}

// workerFlags are the options execute, build and daemon share.
type workerFlags struct {
	optimization countFlag
	gitUser      string
	gitPass      string
	logLevel     choiceFlag
	gpus         string
	cpuOnly      bool
}

func (w *workerFlags) register(t *flagTable) {
	w.logLevel = choiceFlag{val: "INFO", choices: logLevels, upper: true}
	t.add(&w.optimization, "O", "", "", "Compile optimized pyc code (see the python documentation); repeat for more optimization")
	t.stringVar(&w.gitUser, "git-user", "GIT_USER", "Git username for repository access")
	t.stringVar(&w.gitPass, "git-pass", "GIT_PASS", "Git password for repository access")
	t.add(&w.logLevel, "log-level", "", "{DEBUG,INFO,WARN,WARNING,ERROR,CRITICAL}", "SDK log level (default: INFO)")
	t.stringVar(&w.gpus, "gpus", "GPUS", "GPUs to use, e.g. 0 | 0,1,2 | 0-3 | all (sets NVIDIA_VISIBLE_DEVICES)")
	t.boolVar(&w.cpuOnly, "cpu-only", "", "Disable GPU access, in Docker or in the virtual environment")
}
