package main

// daemonCmd serves queues as a registered worker.
type daemonCmd struct {
	workerFlags
	pollingInterval     intFlag
	foreground          bool
	docker              listFlag
	forceCurrentVersion bool
	queues              listFlag
	orderFairness       bool
	standalone          bool
	servicesMode        optIntFlag
	childReportTags     listFlag
	createQueue         bool
	detached            bool
	stop                listFlag
	dynamicGPUs         bool
	uptime              listFlag
	downtime            listFlag
	status              bool
	useOwnerToken       bool
}

func (d *daemonCmd) flags(t *flagTable) {
	d.pollingInterval = intFlag{n: 5}
	d.queues.min = 1
	d.childReportTags.min = 1
	d.servicesMode.bare = -1
	t.boolVar(&d.foreground, "foreground", "", "Pipe the full log to stdout/stderr; do not use when running in the background")
	t.add(&d.queues, "queue", "", "QUEUES", "Queues to serve, by name or id, in priority order (default: the queue tagged 'default')")
	t.boolVar(&d.orderFairness, "order-fairness", "", "Pull from the queues round-robin instead of in priority order")
	t.boolVar(&d.standalone, "standalone-mode", "", "Use no network connections; assume every requirement is pre-installed")
	t.add(&d.servicesMode, "services-mode", "", "SERVICES_MODE", "Run several long-lived tasks at once, at most SERVICES_MODE (unlimited without a number)")
	t.add(&d.childReportTags, "child-report-tags", "", "CHILD_REPORT_TAGS", "Tags sent with the status reports of the worker running a task")
	t.boolVar(&d.createQueue, "create-queue", "", "Create the queues given with --queue if they do not exist")
	t.boolVar(&d.detached, "detached", "d", "Run in the background; the command returns at once")
	t.add(&d.stop, "stop", "", "WORKER_ID", "Stop a running agent with the same arguments, or the given worker ids")
	t.boolVar(&d.dynamicGPUs, "dynamic-gpus", "", "Allocate GPUs per task from the queue's need: --queue name=N")
	t.add(&d.uptime, "uptime", "", "UPTIME", `Hours and days the agent serves queues, e.g. "17-20 TUE"`)
	t.add(&d.downtime, "downtime", "", "DOWNTIME", `Hours and days the agent does not serve queues, e.g. "09-13 TUE"`)
	t.boolVar(&d.status, "status", "", "Print the worker's schedule and queues, then exit")
	t.boolVar(&d.useOwnerToken, "use-owner-token", "", "Run each task with its owner's credentials")
	t.add(&d.pollingInterval, "polling-interval", "", "POLLING_INTERVAL", "Seconds between queue polls (default: 5)")
	d.workerFlags.register(t)
	t.add(&d.docker, "docker", "", "DOCKER", "Run tasks in Docker: --docker [IMAGE [ARGS ...]], or the image from agent.default_docker")
	t.boolVar(&d.forceCurrentVersion, "force-current-version", "", "Use this agent's version inside Docker (always true: the running binary is mounted)")
}

func (d *daemonCmd) run(env *runEnv) error { return errNotImplemented("daemon") }
