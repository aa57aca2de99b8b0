package main

// The `clearml-agent k8s` command: the reference glue's options
// (k8s_glue_example.py) under the same names and defaults, the Helm
// chart's K8S_GLUE_* variables, and the checks that stop a misconfigured
// glue before it serves. The backend is k8s_glue.go.

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const k8sDefaultLimit = "ai.allegro.agent.serial=pod-{pod_number}" // the example's default (the chart's Services select it)

// k8sCmd is `clearml-agent k8s`.
type k8sCmd struct {
	glueFlags
	templateYAML, overridesYAML string
	queueTemplates              listFlag
	namespace                   string
	maxPods                     intFlag
	pendingQueue                string
	podNamePrefix               string
	limitPodLabel               string
	containerBashScript         string
	useOwnerToken               bool
	portsMode                   bool
	numOfServices, basePort     intFlag
	basePodNum, sshServerPort   intFlag
	gatewayAddress              string
	noSystemPackages, debug     bool
	agentImage, agentPath       string
}

func (c *k8sCmd) flags(t *flagTable) {
	c.foreground = true // the reference glue logs to stdout: a container's log
	c.glueFlags.register(t)
	c.pendingQueue, c.namespace, c.podNamePrefix, c.limitPodLabel = k8sDefaultPendingQueue, k8sDefaultNamespace, k8sDefaultPodNamePrefix, k8sDefaultLimit
	c.numOfServices, c.basePodNum = intFlag{n: 20}, intFlag{n: 1}
	t.stringVar(&c.templateYAML, "template-yaml", "FILE", "The base pod template (YAML or JSON)")
	t.stringVar(&c.overridesYAML, "overrides-yaml", "FILE", "Merged over the template; its containers' resources go to the task container")
	c.queueTemplates.min = 1
	t.add(&c.queueTemplates, "queue-template", "", "QUEUE=FILE", "A queue's own template, merged over --template-yaml for its tasks (one per queue)")
	t.stringVar(&c.namespace, "namespace", "NAMESPACE", "Namespace of the pods when the template names none (default: clearml)")
	t.add(&c.maxPods, "max-pods", "", "MAX_PODS", "At most this many task pods in flight (pending or running)")
	t.stringVar(&c.pendingQueue, "k8s-pending-queue-name", "NAME", "Queue where tasks wait while their pods are pending (default: k8s_scheduler)")
	t.stringVar(&c.pendingQueue, "pending-queue-name", "NAME", "Same as --k8s-pending-queue-name")
	t.stringVar(&c.podNamePrefix, "pod-name-prefix", "PREFIX", "Pod name: PREFIX + task id (default: clearml-id-)")
	t.stringVar(&c.limitPodLabel, "limit-pod-label", "LABEL", "Ports mode: the pod's slot label (default: "+k8sDefaultLimit+")")
	t.stringVar(&c.containerBashScript, "container-bash-script", "FILE", "Shell lines the task container runs before the agent ({task_id} etc. substituted)")
	registerUseOwnerToken(t, &c.useOwnerToken)
	t.boolVar(&c.portsMode, "ports-mode", "", "Give each pod a numbered slot label (for Services that expose its ports)")
	t.add(&c.numOfServices, "num-of-services", "", "N", "Ports mode: number of slots (default: 20)")
	t.add(&c.basePort, "base-port", "", "PORT", "Ports mode: the task's k8s-pod-port property is PORT + slot")
	t.add(&c.basePodNum, "base-pod-num", "", "N", "Ports mode: the first slot's number (default: 1)")
	t.stringVar(&c.gatewayAddress, "gateway-address", "ADDRESS", "Ports mode: the task's k8s-gateway-address property")
	t.add(&c.sshServerPort, "ssh-server-port", "", "PORT", "Not supported: an SSH server in the task pod")
	t.boolVar(&c.noSystemPackages, "no-system-packages", "", "Do not let the task's venv see the image's system packages")
	t.boolVar(&c.debug, "debug", "", "Log every kubectl command")
	t.stringVar(&c.agentImage, "agent-image", "IMAGE", "This agent's image (deploy/Dockerfile) for the pods' init container (default: $K8S_GLUE_AGENT_IMAGE)")
	t.stringVar(&c.agentPath, "agent-path", "PATH", "The agent binary's path in the task container when the template mounts it (no init container)")
}

// k8sEnvArgs are the Helm chart's settings as arguments before the command
// line's (which win): --queue $K8S_GLUE_QUEUE, --max-pods
// $K8S_GLUE_MAX_PODS, then $K8S_GLUE_EXTRA_ARGS, as the reference's image
// entrypoint passes them.
func k8sEnvArgs() ([]string, error) {
	var args []string
	if q := strings.TrimSpace(os.Getenv("K8S_GLUE_QUEUE")); q != "" {
		args = append(args, "--"+queueFlag, q)
	}
	if n := strings.TrimSpace(os.Getenv("K8S_GLUE_MAX_PODS")); n != "" {
		args = append(args, "--max-pods", n)
	}
	if extra := os.Getenv("K8S_GLUE_EXTRA_ARGS"); strings.TrimSpace(extra) != "" {
		words, err := shlexSplit(extra)
		if err != nil {
			return nil, usagef("K8S_GLUE_EXTRA_ARGS: %v", err)
		}
		args = append(args, words...)
	}
	if len(args) > 0 {
		t := newFlagTable("k8s")
		(&k8sCmd{}).flags(t)
		if err := parseArgs(t.fs, t.shorts, args); err != nil {
			return nil, usagef("K8S_GLUE_QUEUE / K8S_GLUE_MAX_PODS / K8S_GLUE_EXTRA_ARGS: %v", err)
		}
	}
	return args, nil
}

func (c *k8sCmd) run(cx *cmdContext) error {
	var queues []string
	for _, q := range c.queues.vals {
		for _, name := range strings.Split(q, ",") { // the reference's "q1,q2"
			if name = strings.TrimSpace(name); name != "" {
				queues = append(queues, name)
			}
		}
	}
	c.queues.vals = queues
	b, err := c.backend(cx)
	if err != nil {
		return err
	}
	tags := []string{"k8s-glue"}
	if v, ok := os.LookupEnv("K8S_GLUE_DEFAULT_SCHEDULER_QUEUE_TAGS"); ok {
		if tags, err = shlexSplit(v); err != nil {
			return usagef("K8S_GLUE_DEFAULT_SCHEDULER_QUEUE_TAGS: %v", err)
		}
	}
	maxJobs := c.maxPods.n
	if c.portsMode {
		maxJobs = c.numOfServices.n // one pod per slot
	}
	o := glueOptions{Kind: "k8s", PendingQueue: c.pendingQueue, PendingTags: tags, PendingReason: k8sPendingReason,
		MaxJobs: maxJobs, StopGrace: 30 * time.Second}
	return runGlue(cx, &c.glueFlags, o, b)
}

// backend checks the options and reads the files: mistakes stop the glue
// before it serves, rather than fail every task.
func (c *k8sCmd) backend(cx *cmdContext) (*k8sBackend, error) {
	switch {
	case c.portsMode && c.maxPods.set:
		return nil, usagef("argument --max-pods: not allowed with argument --ports-mode")
	case c.maxPods.set && c.maxPods.n < 1:
		return nil, usagef("--max-pods must be at least 1")
	case c.portsMode && c.numOfServices.n < 1:
		return nil, usagef("--num-of-services must be at least 1")
	case c.sshServerPort.n != 0:
		return nil, usagef("--ssh-server-port is not supported: it installs an SSH server with a fixed root password in the task pod; expose SSH through the template instead")
	}
	if kind := os.Getenv("CLEARML_K8S_GLUE_KIND"); kind != "" && !strings.EqualFold(kind, "pod") {
		return nil, usagef("CLEARML_K8S_GLUE_KIND=%s is not supported: this glue creates pods", kind)
	}
	b := &k8sBackend{namespace: c.namespace, useOwnerToken: c.useOwnerToken, fatal: []string{"ImagePullBackOff", "InvalidImageName"},
		kc: k8sKubectl{bin: "kubectl", timeout: 60 * time.Second}, queueTmpl: map[string]map[string]any{},
		seen: map[string]bool{}}
	b.pod = k8sPodOptions{Namespace: c.namespace, PodNamePrefix: c.podNamePrefix, PortsMode: c.portsMode, LimitPodLabel: c.limitPodLabel,
		AgentImage: firstNonEmpty(c.agentImage, os.Getenv("K8S_GLUE_AGENT_IMAGE")), AgentPath: c.agentPath,
		UseImageEntrypoint: envTrue(os.Getenv("K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT"))}
	b.ports = k8sPorts{first: c.basePodNum.n, count: c.numOfServices.n, basePort: c.basePort, gateway: c.gatewayAddress}
	if c.debug || cx.global.debug {
		b.kc.debugf = func(format string, args ...any) { fmt.Fprintf(cx.stdout, "debug: "+format+"\n", args...) }
	}
	if b.pod.AgentImage == "" && b.pod.AgentPath == "" && !b.pod.UseImageEntrypoint {
		return nil, usagef("the task pods need this agent: set --agent-image (or K8S_GLUE_AGENT_IMAGE) to the image built from deploy/Dockerfile, or --agent-path to where the template mounts the binary")
	}
	if err := c.readEnv(b); err != nil {
		return nil, err
	}
	return b, c.readFiles(b)
}

// readEnv takes the reference's K8S_GLUE_* settings of the pods.
func (c *k8sCmd) readEnv(b *k8sBackend) error {
	if v, ok := os.LookupEnv("K8S_GLUE_DEF_EXEC_AGENT_ARGS"); ok {
		x, err := k8sExecOptions(v)
		if err != nil {
			return usagef("K8S_GLUE_DEF_EXEC_AGENT_ARGS: %v", err)
		}
		b.pod.Exec = x
	}
	if v, ok := os.LookupEnv("K8S_GLUE_POD_MONITOR_EVICTION_REASONS"); ok {
		r, err := shlexSplit(v)
		if err != nil {
			return usagef("K8S_GLUE_POD_MONITOR_EVICTION_REASONS: %v", err)
		}
		b.fatal = r
	}
	if v := os.Getenv("K8S_GLUE_IGNORE_KUBECTL_ERROR"); v != "" {
		re, err := k8sIgnorePattern(v)
		if err != nil {
			return usagef("K8S_GLUE_IGNORE_KUBECTL_ERROR: %v", err)
		}
		b.kc.ignore = re
	}
	if v := strings.TrimSpace(os.Getenv("K8S_GLUE_COMPLETED_POD_DELETION_DELAY_MINUTES")); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 {
			return usagef("K8S_GLUE_COMPLETED_POD_DELETION_DELAY_MINUTES=%s is not a number of minutes", v)
		}
		b.deleteDelay = time.Duration(n * float64(time.Minute))
	}
	b.systemPackages = !c.noSystemPackages
	return nil
}

// readFiles loads the templates and the bash script.
func (c *k8sCmd) readFiles(b *k8sBackend) error {
	var err error
	if c.templateYAML != "" {
		if b.base, err = k8sLoadTemplate(c.templateYAML); err != nil {
			return &exitError{code: 1, msg: oneLine(err.Error())}
		}
	}
	if c.overridesYAML != "" {
		if b.overrides, err = k8sLoadTemplate(c.overridesYAML); err != nil {
			return &exitError{code: 1, msg: oneLine(err.Error())}
		}
	}
	for _, v := range c.queueTemplates.vals {
		q, file, ok := strings.Cut(v, "=")
		if !ok || q == "" || file == "" {
			return usagef("--queue-template %q: give QUEUE=FILE", v)
		}
		if b.queueTmpl[q], err = k8sLoadTemplate(file); err != nil {
			return &exitError{code: 1, msg: oneLine(err.Error())}
		}
	}
	if c.containerBashScript != "" {
		data, err := os.ReadFile(expandHome(c.containerBashScript))
		if err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("--container-bash-script: %v", unwrapPathErr(err))}
		}
		b.bashScript = strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		b.hasBashScript = true
	}
	return nil
}

// k8sIgnorePattern is K8S_GLUE_IGNORE_KUBECTL_ERROR, matched from the
// start of kubectl's error as Python's re.match.
func k8sIgnorePattern(v string) (*regexp.Regexp, error) {
	return regexp.Compile("^(?:" + v + ")")
}

func envTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "y", "on":
		return true
	}
	return false
}
