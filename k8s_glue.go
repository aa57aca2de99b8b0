package main

// `clearml-agent k8s`: the glue (glue.go) over Kubernetes, the reference's
// k8s glue (k8s_glue_example.py / K8sIntegration) under the same options
// and K8S_GLUE_* variables. Each task pulled from a queue becomes a pod
// rendered from the queue's template (k8s_pod.go); the pod runs this
// binary's `execute --full-monitoring --require-queue --id T`, delivered
// by an init container from the agent's image.
//
// The pods' labels are the glue's state: the agent label (md5 of the
// worker id) finds them again after a restart, the task id label names
// their task. kubectl is the only way to the cluster (k8s_kubectl.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// k8sPorts is the ports mode's slots.
type k8sPorts struct {
	first, count int
	basePort     intFlag
	gateway      string
}

// k8sBackend implements glueBackend with kubectl.
type k8sBackend struct {
	kc             k8sKubectl
	base           map[string]any            // --template-yaml
	overrides      map[string]any            // --overrides-yaml
	queueTmpl      map[string]map[string]any // --queue-template: queue name or id -> template
	tmplFor        map[string]map[string]any // queue id -> its merged template (Start)
	pod            k8sPodOptions             // what every pod shares
	namespace      string
	namespaces     []string // where this glue's pods may be: --namespace and the templates'
	useOwnerToken  bool
	systemPackages bool
	ports          k8sPorts
	bashScript     []string // --container-bash-script lines
	hasBashScript  bool
	extraScript    []string // agent.extra_docker_shell_script
	gitPass        string   // agent.git_pass: to the pods through their Secret
	fatal          []string // waiting reasons that end a pending pod (K8S_GLUE_POD_MONITOR_EVICTION_REASONS)
	deleteDelay    time.Duration
	setup          glueSetup
	label          string          // the agent label selector, CLEARML=agent-<md5>
	seen           map[string]bool // pods listed once: one that vanishes was deleted
}

func (b *k8sBackend) Kind() string { return "Kubernetes" }

func (b *k8sBackend) Label(job string) string {
	ns, name, _ := k8sSplitJob(job)
	return "pod " + ns + "/" + name
}

// Start maps the templates to the queues, sets what every pod gets from
// the glue's configuration, and renders each queue's template once for a
// stand-in task: a template the glue cannot use stops it now.
func (b *k8sBackend) Start(ctx context.Context, s glueSetup) error {
	b.setup = s
	b.pod.WorkerID = s.workerID
	b.label = k8sAgentLabel(s.workerID)
	cfg := s.cfg
	if err := checkOwnerTokenKey(b.useOwnerToken, s.api.identity()); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"CLEARML_API_HOST", cfg.str("api.api_server")}, {"CLEARML_WEB_HOST", cfg.str("api.web_server")},
		{"CLEARML_FILES_HOST", cfg.str("api.files_server")}, {"CLEARML_AGENT_GIT_USER", cfg.str("agent.git_user")}} {
		if kv[1] != "" {
			b.pod.Env = append(b.pod.Env, k8sEnv{Name: kv[0], Value: kv[1]})
		}
	}
	if b.systemPackages {
		b.pod.Env = append(b.pod.Env, k8sEnv{Name: "CLEARML_AGENT__AGENT__PACKAGE_MANAGER__SYSTEM_SITE_PACKAGES", Value: "true"})
	}
	b.gitPass = cfg.str("agent.git_pass")
	b.extraScript = cfg.strList("agent.extra_docker_shell_script")
	b.pod.ForcePull = cfg.boolean("agent.docker_force_pull", false)
	if cfg.str("agent.worker_id") == "" {
		s.logf("Warning: no CLEARML_WORKER_ID (agent.worker_id): a glue restarted on another host or pod gets another worker id and will not find this one's pods; set it (the Helm chart sets the release name)")
	}
	if v := os.Getenv("K8S_GLUE_POD_AGENT_INSTALL_ARGS"); v != "" {
		s.logf("Note: K8S_GLUE_POD_AGENT_INSTALL_ARGS is ignored: the pods get this agent from its image, not from pip")
	}
	b.tmplFor = map[string]map[string]any{}
	used := map[string]bool{}
	for _, q := range s.queues {
		t := b.base
		for _, key := range []string{q.ID, q.Name} {
			if over, ok := b.queueTmpl[key]; ok {
				t, used[key] = k8sMergeTemplate(b.base, over), true
				break
			}
		}
		b.tmplFor[q.ID] = t
	}
	for key := range b.queueTmpl {
		if !used[key] {
			return usagef("--queue-template %s: not one of the queues served (--queue)", key)
		}
	}
	return b.probe()
}

// probe renders each queue's pod for a stand-in task and collects the
// namespaces the pods go to.
func (b *k8sBackend) probe() error {
	nss := map[string]bool{b.namespace: true}
	for id, t := range b.tmplFor {
		o := b.podOptions("probe", 0)
		r, err := k8sRenderPod(t, b.overrides, k8sTask{ID: "0123456789abcdef", QueueID: id, Image: "ubuntu"}, o)
		if err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("the pod template of queue %s: %s", id, oneLine(err.Error()))}
		}
		ns, _ := jsonPath(r.Pod, "metadata", "namespace").(string)
		nss[ns] = true
	}
	for ns := range nss {
		b.namespaces = append(b.namespaces, ns)
	}
	sort.Strings(b.namespaces)
	return nil
}

// podOptions are the pod options for one pod; secret names the task's
// Secret when it has one.
func (b *k8sBackend) podOptions(secret string, slot int) k8sPodOptions {
	o := b.pod
	o.PodNumber = slot
	o.Env = append([]k8sEnv(nil), b.pod.Env...)
	o.SecretEnv = append([]k8sEnv(nil), b.pod.SecretEnv...)
	if secret != "" {
		if b.useOwnerToken {
			o.SecretEnv = append(o.SecretEnv, k8sEnv{Name: "CLEARML_AUTH_TOKEN", Secret: secret, Key: "token"})
		}
		if b.gitPass != "" {
			o.SecretEnv = append(o.SecretEnv, k8sEnv{Name: "CLEARML_AGENT_GIT_PASS", Secret: secret, Key: "git_pass"})
		}
	}
	return o
}

func jsonPath(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// k8sMergeTemplate is a queue's template over the base: objects merge,
// lists replace, except the containers (merged one by one, by position)
// and their env (merged by name), so that a queue's file can add a GPU
// limit without repeating the base's credentials.
func k8sMergeTemplate(base, over map[string]any) map[string]any {
	out := k8sCopy(base)
	if out == nil {
		out = map[string]any{}
	}
	ov := k8sCopy(over)
	bc, _ := jsonPath(out, "spec", "containers").([]any)
	oc, _ := jsonPath(ov, "spec", "containers").([]any)
	if len(bc) > 0 && len(oc) > 0 {
		for i, x := range oc {
			om, _ := x.(map[string]any)
			if i >= len(bc) || om == nil {
				bc = append(bc, x)
				continue
			}
			bm, _ := bc[i].(map[string]any)
			if bm == nil {
				bc[i] = x
				continue
			}
			env := k8sMergeEnvList(k8sList(bm, "env"), k8sList(om, "env"))
			k8sMerge(bm, om)
			if env != nil {
				bm["env"] = env
			}
		}
		ov["spec"].(map[string]any)["containers"] = bc
	}
	k8sMerge(out, ov)
	return out
}

func k8sMergeEnvList(base, over []any) []any {
	if len(over) == 0 {
		return nil
	}
	out := append([]any(nil), base...)
	index := map[string]int{}
	for i, x := range out {
		if n, ok := jsonPath(x, "name").(string); ok {
			index[n] = i
		}
	}
	for _, x := range over {
		n, _ := jsonPath(x, "name").(string)
		if i, ok := index[n]; ok {
			out[i] = x
		} else {
			out = append(out, x)
		}
	}
	return out
}

// Submit renders the task's pod and creates it (and its Secret first,
// when it needs one). The pod's uid makes the job id: a later run of the
// task has a pod of the same name.
func (b *k8sBackend) Submit(ctx context.Context, s glueSubmission) (string, error) {
	task, err := b.podTask(s)
	if err != nil {
		return "", glueRefuse("%v", err)
	}
	slot := 0
	if b.pod.PortsMode {
		if slot, err = b.freeSlot(ctx); err != nil {
			return "", err
		}
	}
	name := b.pod.PodNamePrefix + s.TaskID
	data := map[string]string{}
	if b.useOwnerToken {
		user, _ := s.Task["user"].(string)
		tok, err := b.setup.api.ownerToken(ctx, user)
		if err != nil || user == "" {
			return "", glueRefuse("--%s: the server refused a token for the task's owner %q: %v", useOwnerTokenFlag, user, err)
		}
		data["token"] = tok
	}
	if b.gitPass != "" {
		data["git_pass"] = b.gitPass
	}
	secret := ""
	if len(data) > 0 {
		secret = name
	}
	o := b.podOptions(secret, slot)
	o.Script = b.script(s.TaskID)
	r, err := k8sRenderPod(b.tmplFor[s.Queue.ID], b.overrides, task, o)
	if err != nil {
		return "", glueRefuse("cannot make the task's pod: %v", err)
	}
	for _, w := range r.Warnings {
		b.setup.postLog(ctx, s.TaskID, "clearml-agent k8s glue: "+w)
	}
	ns, _ := jsonPath(r.Pod, "metadata", "namespace").(string)
	if secret != "" {
		labels := map[string]string{}
		for k, v := range jsonPath(r.Pod, "metadata", "labels").(map[string]any) {
			labels[k], _ = v.(string)
		}
		if err := b.createSecret(ctx, k8sTaskSecret(secret, ns, labels, data)); err != nil {
			return "", b.submitError("Secret", err)
		}
	}
	pod, err := b.createPod(ctx, r.Pod)
	if err != nil {
		if secret != "" {
			b.kc.deleteSecret(ctx, ns, secret)
		}
		return "", b.submitError("pod", err)
	}
	job := k8sJobID(pod)
	b.seen[job] = true
	b.setProperties(ctx, s, slot)
	return job, nil
}

func (b *k8sBackend) submitError(what string, err error) error {
	var e *k8sError
	if b.kc.refused(err) && errors.As(err, &e) {
		return glueRefuse("Kubernetes refused the task's %s: %s", what, e.msg)
	}
	return err
}

// podTask is what the pod takes from the task: its image (or the
// default, as docker mode picks it), arguments, setup script, ids.
func (b *k8sBackend) podTask(s glueSubmission) (k8sTask, error) {
	raw, _ := json.Marshal(s.Task)
	var doc taskDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return k8sTask{}, fmt.Errorf("the task document is unreadable: %v", err)
	}
	img, err := dockerChooseImage(b.setup.cfg, &doc, dockerRunOptions{})
	if err != nil {
		return k8sTask{}, err
	}
	parent, _ := s.Task["parent"].(string)
	return k8sTask{ID: s.TaskID, ParentID: parent, QueueID: s.Queue.ID, QueueName: s.Queue.Name,
		Image: img.image, Arguments: shellJoin(img.args), SetupScript: img.setupScript,
		NeedsGit: doc.Script.Repository != ""}, nil
}

// createSecret creates the task's Secret, replacing a stale one of an
// earlier run.
func (b *k8sBackend) createSecret(ctx context.Context, obj map[string]any) error {
	_, err := b.kc.create(ctx, obj)
	if k8sIs(err, "AlreadyExists") {
		md := obj["metadata"].(map[string]any)
		if err = b.kc.deleteSecret(ctx, md["namespace"].(string), md["name"].(string)); err == nil {
			_, err = b.kc.create(ctx, obj)
		}
	}
	return err
}

// createPod creates the pod. A pod of the same name is an earlier run of
// the task (finished, or left by a glue that lost track): it goes first.
func (b *k8sBackend) createPod(ctx context.Context, obj map[string]any) (*k8sPod, error) {
	pod, err := b.kc.create(ctx, obj)
	if !k8sIs(err, "AlreadyExists") {
		return pod, err
	}
	md := obj["metadata"].(map[string]any)
	ns, name := md["namespace"].(string), md["name"].(string)
	b.setup.logf("pod %s/%s of an earlier run of the task exists: deleting it", ns, name)
	if _, err := b.kc.run(ctx, nil, "delete", "pod", name, "--namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=40s"); err != nil {
		return nil, err
	}
	return b.kc.create(ctx, obj)
}

// script is the shell lines before the agent: --container-bash-script
// (its {placeholders} filled, its lines that install or start the Python
// agent left out: this binary is the agent) and
// agent.extra_docker_shell_script.
func (b *k8sBackend) script(taskID string) []string {
	extra := strings.Join(b.extraScript, "\n")
	if !b.hasBashScript {
		return b.extraScript
	}
	placed := false
	var out []string
	for _, line := range b.bashScript {
		if k8sAgentLine().MatchString(line) {
			continue
		}
		placed = placed || strings.Contains(line, "{extra_docker_bash_script}")
		out = append(out, k8sFormat(line, map[string]string{"task_id": taskID, "extra_bash_init_cmd": "", "agent_install_args": "",
			"default_execution_agent_args": k8sDefaultExecArgs(), "extra_docker_bash_script": extra}))
	}
	if !placed {
		out = append(out, b.extraScript...)
	}
	return out
}

// k8sAgentLine: a --container-bash-script line that installs or runs the Python agent.
var k8sAgentLine = lazyRegexp(`clearml[_-]agent\b.*\bexecute\b|pip3?\b.*\binstall\b.*\bclearml-agent\b`)

// k8sFormat is Python's str.format for named fields: {name} is replaced,
// {{ and }} are braces; unknown fields stay as they are.
func k8sFormat(s string, vals map[string]string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "{{"), strings.HasPrefix(s[i:], "}}"):
			out.WriteByte(s[i])
			i++
		case s[i] == '{':
			if end := strings.IndexByte(s[i:], '}'); end > 0 {
				if v, ok := vals[s[i+1:i+end]]; ok {
					out.WriteString(v)
					i += end
					continue
				}
			}
			out.WriteByte(s[i])
		default:
			out.WriteByte(s[i])
		}
	}
	return out.String()
}

// setProperties records on the task where it runs, as the reference's
// user properties (k8s-queue; in ports mode the slot and its port).
func (b *k8sBackend) setProperties(ctx context.Context, s glueSubmission, slot int) {
	props := [][2]string{{"k8s-queue", s.Queue.Name}}
	if b.pod.PortsMode {
		label := strings.ReplaceAll(b.pod.LimitPodLabel, "{pod_number}", strconv.Itoa(slot))
		props = append(props, [2]string{"k8s-pod-number", strconv.Itoa(slot)}, [2]string{"k8s-pod-label", label},
			[2]string{"k8s-agent", b.label})
		if b.ports.basePort.set {
			props = append(props, [2]string{"k8s-pod-port", strconv.Itoa(b.ports.basePort.n + slot)})
			if b.ports.gateway != "" {
				props = append(props, [2]string{"k8s-gateway-address", b.ports.gateway})
			}
		}
	}
	var params []map[string]any
	for _, p := range props {
		params = append(params, map[string]any{"section": "properties", "name": p[0], "value": p[1], "type": "str"})
	}
	err := b.setup.api.call(withBudget(ctx, 15*time.Second), "tasks.edit_hyper_params", "2.9", map[string]any{"task": s.TaskID, "hyperparams": params, "force": true}, nil)
	if err != nil {
		b.setup.logf("Warning: task %s: could not set its k8s properties: %v", s.TaskID, err)
	}
}

// freeSlot is the first ports-mode slot no pending or running pod holds.
func (b *k8sBackend) freeSlot(ctx context.Context) (int, error) {
	key, _, _ := strings.Cut(b.pod.LimitPodLabel, "=")
	used := map[string]bool{}
	for _, ns := range b.namespaces {
		pods, err := b.kc.listPods(ctx, ns, b.label)
		if err != nil {
			return 0, err
		}
		for _, p := range pods {
			if p.Status.Phase == "Pending" || p.Status.Phase == "Running" || p.Status.Phase == "" {
				used[p.Metadata.Labels[key]] = true
			}
		}
	}
	_, valueTmpl, _ := strings.Cut(b.pod.LimitPodLabel, "=")
	for n := b.ports.first; n < b.ports.first+b.ports.count; n++ {
		if !used[strings.ReplaceAll(valueTmpl, "{pod_number}", strconv.Itoa(n))] {
			return n, nil
		}
	}
	return 0, fmt.Errorf("all %d k8s services are in use", b.ports.count)
}

// Jobs lists the pods of the jobs' namespaces and reports each job; a pod
// seen before and gone now was deleted (by a user, or Kubernetes).
func (b *k8sBackend) Jobs(ctx context.Context, jobs []string) (map[string]glueJobState, error) {
	byNS := map[string][]string{}
	for _, j := range jobs {
		ns, _, _ := k8sSplitJob(j)
		byNS[ns] = append(byNS[ns], j)
	}
	selector := b.label
	if selector == "" { // --status: any glue's task pods; the uid tells them apart
		selector = k8sTaskIDLabel
	}
	out := map[string]glueJobState{}
	for ns, ids := range byNS {
		pods, err := b.kc.listPods(ctx, ns, selector)
		if err != nil {
			return nil, err
		}
		byID := map[string]*k8sPod{}
		for i := range pods {
			byID[k8sJobID(&pods[i])] = &pods[i]
		}
		for _, j := range ids {
			if p := byID[j]; p != nil {
				out[j] = k8sPodState(p, b.fatal)
				b.seen[j] = true
			} else if b.seen[j] {
				out[j] = glueJobState{Phase: glueEnded, Detail: "deleted (by a user or by Kubernetes)"}
			}
		}
	}
	return out, nil
}

// Find lists this worker's pods (by the agent label) in the namespaces
// the glue creates pods in, oldest first.
func (b *k8sBackend) Find(ctx context.Context, workerID string) ([]glueFound, error) {
	label := k8sAgentLabel(workerID)
	var pods []k8sPod
	for _, ns := range b.namespaces {
		p, err := b.kc.listPods(ctx, ns, label)
		if err != nil {
			return nil, err
		}
		pods = append(pods, p...)
	}
	sort.SliceStable(pods, func(i, j int) bool {
		return pods[i].Metadata.CreationTimestamp.Before(pods[j].Metadata.CreationTimestamp)
	})
	var out []glueFound
	for i := range pods {
		p := &pods[i]
		task := p.Metadata.Labels[k8sTaskIDLabel]
		if task == "" {
			continue
		}
		j := k8sJobID(p)
		b.seen[j] = true
		out = append(out, glueFound{Job: j, Task: task})
	}
	return out, nil
}

// Cancel deletes the pods (and their Secrets).
func (b *k8sBackend) Cancel(ctx context.Context, jobs ...string) error {
	for _, j := range jobs {
		ns, name, uid := k8sSplitJob(j)
		b.kc.deleteSecret(ctx, ns, name) // first: it never outlives the pod (the pod read it when it started)
		if err := b.kc.deletePod(ctx, ns, name, uid); err != nil {
			return err
		}
	}
	return nil
}

// Release cleans up after a job the glue no longer follows: its Secret
// at once, the pod after K8S_GLUE_COMPLETED_POD_DELETION_DELAY_MINUTES
// (0: now), retried while the API server does not answer. A glue that
// stops before finds the pod again when it starts, and releases it then.
func (b *k8sBackend) Release(ctx context.Context, job string) {
	ns, name, _ := k8sSplitJob(job)
	delete(b.seen, job)
	if err := b.kc.deleteSecret(ctx, ns, name); err != nil {
		b.setup.logf("Warning: cannot delete Secret %s/%s: %v", ns, name, err)
	}
	b.deletePodLater(job, b.deleteDelay, 0)
}

func (b *k8sBackend) deletePodLater(job string, after time.Duration, attempt int) {
	del := func() {
		ns, name, uid := k8sSplitJob(job)
		err := b.kc.deletePod(context.Background(), ns, name, uid)
		if err != nil && attempt < 20 {
			b.deletePodLater(job, 30*time.Second, attempt+1)
		} else if err != nil {
			b.setup.logf("Warning: cannot delete finished pod %s/%s: %v (delete it by hand)", ns, name, err)
		}
	}
	if after <= 0 && attempt == 0 {
		del()
		return
	}
	time.AfterFunc(after, del)
}
