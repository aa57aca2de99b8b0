package main

// Pod rendering for the Kubernetes glue (`clearml-agent k8s`): a pure function
// from the base pod template, the overrides, one task and the glue's options to
// the pod object the glue creates, built as the reference's
// K8sIntegration._kubectl_apply builds it, except that the agent reaches the
// pod as this static binary (an init container copies it from the agent's
// image into an emptyDir) instead of `pip install clearml-agent`, and that
// credentials reach it only through Secrets, never in its command line.
//
// Task fields are hostile input: the image must be one image reference, only
// `-e NAME=VALUE` of the container arguments is used, names and labels are
// sanitised or refused, and nothing from a task reaches the pod spec outside
// the task container's image, environment and shell script.

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// The reference's label keys and defaults.
const (
	k8sAgentLabelKey        = "CLEARML" // value "agent-<md5(worker id)[:8]>"
	k8sQueueLabel           = "clearml-agent-queue"
	k8sQueueNameLabel       = "clearml-agent-queue-name"
	k8sParentLabel          = "clearml-parent-task-id"
	k8sTaskIDLabel          = "clearml-task-id"
	k8sDefaultNamespace     = "clearml"
	k8sDefaultPodNamePrefix = "clearml-id-"
	k8sDefaultLimitPodLabel = "ai.clearml.agent.serial=pod-{pod_number}"
	k8sDefaultPendingQueue  = "k8s_scheduler"
)

// How the binary reaches the task container.
const (
	k8sBinVolume     = "clearml-agent-bin"
	k8sBinDir        = "/clearml-agent-bin"
	k8sInitName      = "clearml-agent-init"
	k8sImageBinary   = "/clearml-agent"     // the binary's path in deploy/Dockerfile's image
	k8sInstallBinary = "k8s-install-binary" // hidden command: copy this binary to --target
	k8sImageUser     = 65532                // deploy/Dockerfile's USER
)

// k8sPodOptions are the glue's settings that shape every pod.
type k8sPodOptions struct {
	Namespace     string       // used when the template names none (default "clearml")
	PodNamePrefix string       // default "clearml-id-"
	WorkerID      string       // the glue's worker id: the agent label, CLEARML_WORKER_ID
	PortsMode     bool         // add LimitPodLabel with PodNumber
	LimitPodLabel string       // "key=value{pod_number}", default ai.clearml.agent.serial=pod-{pod_number}
	PodNumber     int          // ports mode: the pod's slot
	Exec          *taskOptions // execute's flags (K8S_GLUE_DEF_EXEC_AGENT_ARGS); nil: --full-monitoring --require-queue
	AgentImage    string       // the init container's image (deploy/Dockerfile)
	AgentPath     string       // when set, the binary's path in the task container (the template mounts it): no init container
	Env           []k8sEnv     // plain values (API host, config); the template's own variables win
	SecretEnv     []k8sEnv     // values from Secrets (credentials, owner token, git password)
	Script        []string     // shell lines run before the agent (extra_docker_shell_script, --container-bash-script)
	ForcePull     bool         // agent.docker_force_pull: imagePullPolicy Always
	// UseImageEntrypoint keeps the image's own entrypoint: no command, no
	// binary, CLEARML_TASK_ID set (K8S_GLUE_POD_USE_IMAGE_ENTRYPOINT).
	UseImageEntrypoint bool
}

// k8sEnv is one environment variable: a plain value, or a Secret's key.
type k8sEnv struct {
	Name, Value string
	Secret, Key string // valueFrom.secretKeyRef when Secret is set
}

// k8sTask is what the pod takes from one task (all of it hostile).
type k8sTask struct {
	ID, ParentID       string
	QueueID, QueueName string
	Image              string // the task's container image, or the default (may hold "image args")
	Arguments          string // container arguments: only -e/--env NAME=VALUE are used
	SetupScript        string // container.setup_shell_script, run in the task container
	NeedsGit           bool   // the task has a repository: check the image has git
}

// k8sRendered is a rendered pod and what the renderer skipped.
type k8sRendered struct {
	Pod      map[string]any
	Name     string
	Warnings []string // skipped container arguments and refused variables, for the task log
}

// k8sRenderPod builds the pod for task t. template and overrides may be nil;
// neither is modified.
func k8sRenderPod(template, overrides map[string]any, t k8sTask, o k8sPodOptions) (*k8sRendered, error) {
	o = k8sOptionDefaults(o)
	if err := k8sCheckOptions(o); err != nil {
		return nil, err
	}
	name := o.PodNamePrefix + t.ID
	if !k8sIsLabelValue(t.ID) || t.ID == "" {
		return nil, fmt.Errorf("task id %q cannot name a pod (letters, digits, '-', '_', '.' only)", t.ID)
	}
	if !k8sIsDNSLabel(name) {
		return nil, fmt.Errorf("pod name %q is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63); check --pod-name-prefix", name)
	}
	image, args, err := k8sTaskImage(t.Image, t.Arguments)
	if err != nil {
		return nil, err
	}
	pod := k8sCopy(template)
	if pod == nil {
		pod = map[string]any{}
	}
	resources := k8sApplyOverrides(pod, overrides)
	if err := k8sCheckKind(pod); err != nil {
		return nil, err
	}
	r := &k8sRendered{Pod: pod, Name: name}
	if err := k8sSetMetadata(pod, name, t, o); err != nil {
		return nil, err
	}
	spec := k8sMap(pod, "spec")
	if p, _ := spec["restartPolicy"].(string); p == "Always" {
		return nil, fmt.Errorf("the pod template sets restartPolicy Always, which would run the task again after it ends; use Never or OnFailure")
	} else if p == "" {
		spec["restartPolicy"] = "Never"
	}
	env, warn := k8sTaskEnv(args)
	r.Warnings = append(r.Warnings, warn...)
	c, err := k8sTaskContainer(spec, name, image, resources)
	if err != nil {
		return nil, err
	}
	r.Warnings = append(r.Warnings, k8sMergeEnv(c, env, t, o)...)
	if err := k8sCheckCredentials(c); err != nil {
		return nil, err
	}
	if !o.UseImageEntrypoint {
		if err := k8sDeliverBinary(spec, c, o); err != nil {
			return nil, err
		}
		c["command"] = k8sCommand(t, o)
		delete(c, "args")
	}
	if o.ForcePull {
		for _, x := range k8sList(spec, "containers") {
			if m, ok := x.(map[string]any); ok && m["imagePullPolicy"] == nil {
				m["imagePullPolicy"] = "Always"
			}
		}
	}
	return r, nil
}

func k8sOptionDefaults(o k8sPodOptions) k8sPodOptions {
	if o.Namespace == "" {
		o.Namespace = k8sDefaultNamespace
	}
	if o.PodNamePrefix == "" {
		o.PodNamePrefix = k8sDefaultPodNamePrefix
	}
	if o.LimitPodLabel == "" {
		o.LimitPodLabel = k8sDefaultLimitPodLabel
	}
	if o.Exec == nil {
		o.Exec = &taskOptions{fullMonitoring: true, requireQueue: true}
	}
	return o
}

// k8sCheckKind accepts a Pod template (kind and apiVersion may be left out).
func k8sCheckKind(pod map[string]any) error {
	if k, ok := pod["kind"].(string); ok && k != "" && !strings.EqualFold(k, "Pod") {
		return fmt.Errorf("the pod template is a %s; the glue creates Pods (kind: Pod, or leave kind out)", k)
	}
	if v, ok := pod["apiVersion"].(string); ok && v != "" && v != "v1" {
		return fmt.Errorf("the pod template's apiVersion is %s; a Pod is apiVersion v1", v)
	}
	pod["kind"], pod["apiVersion"] = "Pod", "v1"
	return nil
}

// k8sApplyOverrides merges --overrides-yaml into the pod. As in the reference,
// its containers' resources are kept for the task container and the
// containers section is not merged.
func k8sApplyOverrides(pod, overrides map[string]any) map[string]any {
	ov := k8sCopy(overrides)
	if ov == nil {
		return nil
	}
	var resources map[string]any
	if spec, ok := ov["spec"].(map[string]any); ok {
		cs, _ := spec["containers"].([]any)
		for _, x := range cs {
			c, _ := x.(map[string]any)
			if r, ok := c["resources"].(map[string]any); ok {
				if resources == nil {
					resources = map[string]any{}
				}
				k8sMerge(resources, r)
			}
		}
		delete(spec, "containers")
	}
	k8sMerge(pod, ov)
	return resources
}

// k8sSetMetadata names the pod and sets the glue's labels over the template's.
func k8sSetMetadata(pod map[string]any, name string, t k8sTask, o k8sPodOptions) error {
	md := k8sMap(pod, "metadata")
	for _, k := range []string{"uid", "resourceVersion", "creationTimestamp", "generateName", "ownerReferences", "managedFields"} {
		delete(md, k)
	}
	md["name"] = name
	if ns, _ := md["namespace"].(string); ns == "" {
		md["namespace"] = o.Namespace
	}
	labels := k8sMap(md, "labels")
	for k, v := range k8sLabels(t, o) {
		labels[k] = v
	}
	if o.PortsMode {
		k, v, ok := strings.Cut(strings.ReplaceAll(o.LimitPodLabel, "{pod_number}", strconv.Itoa(o.PodNumber)), "=")
		if !ok || !k8sIsLabelKey(k) || !k8sIsLabelValue(v) {
			return fmt.Errorf("--limit-pod-label %q does not give a valid KEY=VALUE label", o.LimitPodLabel)
		}
		labels[k] = v
	}
	return nil
}

// k8sLabels are the reference's pod labels: the agent label, the queue id and
// name, the parent and the task id (empty values left out).
func k8sLabels(t k8sTask, o k8sPodOptions) map[string]string {
	k, v, _ := strings.Cut(k8sAgentLabel(o.WorkerID), "=")
	out := map[string]string{k: v}
	for key, val := range map[string]string{
		k8sQueueLabel:     k8sLabelValue(t.QueueID),
		k8sQueueNameLabel: k8sLabelValue(t.QueueName),
		k8sParentLabel:    k8sLabelValue(t.ParentID),
		k8sTaskIDLabel:    t.ID, // checked to be a label value: it names the task exactly
	} {
		if val != "" {
			out[key] = val
		}
	}
	return out
}

// k8sAgentLabel is the label (KEY=VALUE) that marks this glue's pods.
func k8sAgentLabel(workerID string) string {
	if workerID == "" {
		return k8sAgentLabelKey + "=agent"
	}
	sum := md5.Sum([]byte(workerID))
	return k8sAgentLabelKey + "=agent-" + hex.EncodeToString(sum[:])[:8]
}

// k8sTaskContainer merges the template's first container with the task's
// name, image and resources, and returns it (it stays in spec.containers).
func k8sTaskContainer(spec map[string]any, name, image string, resources map[string]any) (map[string]any, error) {
	cs := k8sList(spec, "containers")
	if len(cs) == 0 {
		cs = append(cs, map[string]any{})
	}
	c, ok := cs[0].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the pod template's first container is not an object")
	}
	c["name"], c["image"] = name, image
	if resources != nil {
		k8sMerge(k8sMap(c, "resources"), resources)
	}
	cs[0] = c
	spec["containers"] = cs
	for i, x := range cs[1:] {
		if m, ok := x.(map[string]any); !ok || m["name"] == name {
			return nil, fmt.Errorf("the pod template's container %d has the task container's name %q or is not an object", i+2, name)
		}
	}
	return c, nil
}

// k8sCommand is the task container's command: the agent's execute, after
// the operator's and the task's shell lines when there are any.
func k8sCommand(t k8sTask, o k8sPodOptions) []any {
	bin := o.AgentPath
	if bin == "" {
		bin = k8sBinDir + "/clearml-agent"
	}
	x := *o.Exec
	x.id = t.ID
	argv := append([]string{bin}, executeArgv(globalOpts{}, x)...)
	var lines []string
	lines = append(lines, dockerScriptLines(strings.Join(o.Script, "\n"))...)
	if t.NeedsGit {
		lines = append(lines, dockerGitCheck)
	}
	lines = append(lines, dockerScriptLines(t.SetupScript)...)
	if len(lines) > 0 {
		q := make([]string, len(argv))
		for i, a := range argv {
			q[i] = shellQuote(a)
		}
		lines = append(lines, "exec "+strings.Join(q, " "))
		argv = []string{"/bin/bash", "-c", strings.Join(lines, "\n")}
	}
	for i, a := range argv {
		argv[i] = k8sEscape(a)
	}
	return k8sAnyList(argv)
}

// k8sExecOptions parses execute's flags for the pods
// (K8S_GLUE_DEF_EXEC_AGENT_ARGS); the glue sets --id.
func k8sExecOptions(args string) (*taskOptions, error) {
	words, err := shlexSplit(args)
	if err != nil {
		return nil, err
	}
	var o taskOptions
	t := newFlagTable("execute")
	o.register(t)
	if err := parseArgs(t.fs, t.shorts, words); err != nil {
		return nil, err
	}
	if o.id != "" || o.gitPass != "" || o.clone {
		return nil, fmt.Errorf("--id, --clone and --git-pass are not execute flags the glue can give every pod")
	}
	return &o, nil
}

// k8sEscape keeps a string literal through the kubelet, which expands
// $(VAR) in a container's command, args and env values ("$$" is one "$").
func k8sEscape(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// k8sDeliverBinary adds the emptyDir, the init container that fills it from
// the agent's image, and the read-only mount in the task container. With
// AgentPath the template provides the binary and nothing is added.
func k8sDeliverBinary(spec, c map[string]any, o k8sPodOptions) error {
	if o.AgentPath != "" {
		return nil
	}
	if err := k8sValidImage(o.AgentImage); err != nil {
		return fmt.Errorf("the agent image (init container): %v", err)
	}
	vols := k8sList(spec, "volumes")
	for _, v := range vols {
		if m, _ := v.(map[string]any); m["name"] == k8sBinVolume {
			return fmt.Errorf("the pod template has a volume named %s, which the glue adds", k8sBinVolume)
		}
	}
	spec["volumes"] = append(vols, map[string]any{"name": k8sBinVolume, "emptyDir": map[string]any{}})
	mounts := k8sList(c, "volumeMounts")
	for _, v := range mounts {
		if m, _ := v.(map[string]any); m["mountPath"] == k8sBinDir {
			return fmt.Errorf("the pod template mounts something at %s, where the glue mounts the agent", k8sBinDir)
		}
	}
	c["volumeMounts"] = append(mounts, map[string]any{"name": k8sBinVolume, "mountPath": k8sBinDir, "readOnly": true})
	init := map[string]any{
		"name":            k8sInitName,
		"image":           o.AgentImage,
		"command":         k8sAnyList([]string{k8sImageBinary, k8sInstallBinary, "--target", k8sBinDir + "/clearml-agent"}),
		"volumeMounts":    []any{map[string]any{"name": k8sBinVolume, "mountPath": k8sBinDir}},
		"resources":       map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "16Mi"}, "limits": map[string]any{"memory": "64Mi"}},
		"securityContext": k8sRestrictedContext(),
	}
	// First, so that the template's own init containers can use the agent too.
	spec["initContainers"] = append([]any{init}, k8sList(spec, "initContainers")...)
	return nil
}

// k8sRestrictedContext passes the "restricted" Pod Security Standard, so the
// init container is admitted wherever the template's containers are.
func k8sRestrictedContext() map[string]any {
	return map[string]any{
		"runAsNonRoot":             true,
		"runAsUser":                k8sImageUser,
		"runAsGroup":               k8sImageUser,
		"allowPrivilegeEscalation": false,
		"readOnlyRootFilesystem":   true,
		"capabilities":             map[string]any{"drop": []any{"ALL"}},
		"seccompProfile":           map[string]any{"type": "RuntimeDefault"},
	}
}

// k8sCopy deep-copies a JSON object (nil stays nil).
func k8sCopy(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	_ = d.Decode(&out)
	return out
}

// k8sMerge merges src into dst recursively: objects merge, anything else is
// replaced (the reference's merge_dicts).
func k8sMerge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				k8sMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// k8sMap returns m[key] as an object, creating it when absent or not one.
func k8sMap(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

func k8sList(m map[string]any, key string) []any {
	v, _ := m[key].([]any)
	return v
}

func k8sAnyList(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// k8sTaskSecret is the Secret the glue creates next to a pod for values the
// pod must not carry in its spec (the owner's token, a git password).
func k8sTaskSecret(name, namespace string, labels map[string]string, data map[string]string) map[string]any {
	enc := map[string]any{}
	for k, v := range data {
		enc[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	lab := map[string]any{}
	for k, v := range labels {
		lab[k] = v
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata": map[string]any{"name": name, "namespace": namespace, "labels": lab},
		"data":     enc,
	}
}

// k8sLoadTemplate reads a pod template (--template-yaml, --overrides-yaml):
// JSON directly, YAML through `kubectl label --local -o json`, which parses
// it offline (`kubectl create --dry-run=client` wants the API server).
// kubectl needs kind and apiVersion, which the reference's templates leave
// out: they are added (a Pod, v1) when the file has no top-level key for them.
func k8sLoadTemplate(path string) (map[string]any, error) {
	p, err := filepath.Abs(expandHome(os.ExpandEnv(path)))
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("pod template: %v (check --template-yaml / --overrides-yaml)", err)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return k8sDecodeObject(t, p)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return map[string]any{}, nil
	}
	if !regexp.MustCompile(`(?m)^kind\s*:`).Match(data) {
		data = append(append(data, '\n'), "kind: Pod\n"...)
	}
	if !regexp.MustCompile(`(?m)^apiVersion\s*:`).Match(data) {
		data = append(data, "apiVersion: v1\n"...)
	}
	tmp, err := os.CreateTemp("", "clearml-k8s-template-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// Removing a label that is not there changes nothing: the object comes back as parsed.
	cmd := exec.Command("kubectl", "label", "--local", "-o", "json", "-f", tmp.Name(), "clearml.ai/template-parse-")
	cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL) // dies with a SIGKILLed glue
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if _, lerr := exec.LookPath("kubectl"); lerr != nil {
			return nil, fmt.Errorf("pod template %s: kubectl is needed to read YAML and is not on PATH; install kubectl or give the template as JSON", p)
		}
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "error: ")
		return nil, fmt.Errorf("pod template %s: %s", p, oneLine(strings.ReplaceAll(msg, tmp.Name(), p)))
	}
	return k8sDecodeObject(out, p)
}

func k8sDecodeObject(b []byte, path string) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("pod template %s: %v", path, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("pod template %s: more than one object; give one pod template per file", path)
	}
	if k, _ := m["kind"].(string); k == "List" {
		return nil, fmt.Errorf("pod template %s: more than one object; give one pod template per file", path)
	}
	return m, nil
}

// k8sInstallCmd is the init container's command, hidden from the usage:
// `clearml-agent k8s-install-binary --target PATH`.
type k8sInstallCmd struct{ target string }

func (c *k8sInstallCmd) flags(t *flagTable) {
	t.stringVar(&c.target, "target", "PATH", "Where to copy this binary (the pod's shared emptyDir)")
	t.require()
}

func (c *k8sInstallCmd) run(cx *cmdContext) error {
	if err := k8sInstallBinaryTo(c.target); err != nil {
		return err
	}
	_, err := fmt.Fprintf(cx.stdout, "clearml-agent %s installed at %s\n", agentVersion, c.target)
	return err
}

func init() {
	commands = append(commands, commandInfo{name: k8sInstallBinary, hidden: true,
		description: "Copy this binary to a path (the init container of the Kubernetes glue's task pods).",
		new:         func() commandImpl { return &k8sInstallCmd{} }})
}

// k8sInstallBinaryTo copies this executable to dst (mode 0755), through a
// temporary file so that a reader never sees half a binary.
func k8sInstallBinaryTo(dst string) error {
	src, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".clearml-agent-*")
	if err != nil {
		return fmt.Errorf("installing the agent binary: %v (is %s a writable volume?)", err, filepath.Dir(dst))
	}
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("installing the agent binary at %s: %v", dst, err)
	}
	return nil
}
