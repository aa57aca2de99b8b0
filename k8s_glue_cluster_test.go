package main

// `clearml-agent k8s` end to end: the built binary serves queues of the
// stand-in server and creates pods on the real API server (kwok plays
// their life cycle; run under testdata/k8s/with-cluster.sh). The glue
// acts as its ServiceAccount with deploy/k8s-rbac.yaml's Role only.
// Nothing runs inside kwok's pods, so k8sExecuteStandIn makes the status
// changes the execute in a pod would make; TestK8sGluePodRunsInDocker
// runs a real pod's containers with docker instead.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// k8sGlueSetup is a namespace with the glue's account and the chart's
// credentials Secret, a stand-in server, and the glue's environment.
type k8sGlueSetup struct {
	s   *fakeserver.Server
	ns  string
	dir string
	env map[string]string
}

// k8sTestTemplate is a base pod template as an operator writes it (YAML,
// no kind): credentials from the Secret "creds", the fake node's selector,
// a toleration, a label and a memory limit.
const k8sTestTemplate = `metadata:
  labels:
    team: red
spec:
  nodeSelector:
    type: kwok
  tolerations:
  - key: nvidia.com/gpu
    operator: Exists
    effect: NoSchedule
  containers:
  - resources:
      limits:
        memory: 1Gi
    env:
    - name: CLEARML_API_ACCESS_KEY
      valueFrom:
        secretKeyRef: {name: creds, key: access}
    - name: CLEARML_API_SECRET_KEY
      valueFrom:
        secretKeyRef: {name: creds, key: secret}
`

func newK8sGlueSetup(t *testing.T) *k8sGlueSetup {
	t.Helper()
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	rbac, err := os.ReadFile(filepath.Join("deploy", "k8s-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubectlT(t, []byte(strings.ReplaceAll(string(rbac), "namespace: clearml", "namespace: "+ns)), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectlT(t, nil, "create", "secret", "generic", "creds", "-n", ns,
		"--from-literal=access="+fakeserver.TestsAccessKey, "--from-literal=secret="+fakeserver.TestsSecretKey); err != nil {
		t.Fatal(err)
	}
	k := &k8sGlueSetup{s: startServer(t), ns: ns, dir: t.TempDir()}
	// The glue's kubectl acts as the ServiceAccount (impersonated by the test's admin).
	raw, err := kubectlT(t, nil, "config", "view", "--raw", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var kc map[string]any
	json.Unmarshal([]byte(raw), &kc)
	for _, u := range kc["users"].([]any) {
		u.(map[string]any)["user"].(map[string]any)["as"] = "system:serviceaccount:" + ns + ":clearml-agent"
	}
	data, _ := json.Marshal(kc)
	kubeconfig := filepath.Join(k.dir, "kubeconfig.json")
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	k.env = serverEnv(k.s)
	k.env["KUBECONFIG"] = kubeconfig
	k.env["HOME"] = filepath.Join(k.dir, "home")
	k.env["CLEARML_WORKER_ID"] = "k8s-glue-" + ns
	k.env["K8S_GLUE_AGENT_IMAGE"] = "clearml-agent:local"
	k.file(t, "template.yaml", k8sTestTemplate)
	return k
}

// file writes a file into the setup's folder and returns its path.
func (k *k8sGlueSetup) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(k.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the glue with the base template, polling every second.
func (k *k8sGlueSetup) start(t *testing.T, env map[string]string, args ...string) *daemonProc {
	t.Helper()
	e := map[string]string{}
	for key, v := range k.env {
		e[key] = v
	}
	for key, v := range env {
		e[key] = v
	}
	base := []string{"k8s", "--namespace", k.ns, "--template-yaml", filepath.Join(k.dir, "template.yaml"), "--polling-interval", "1", "--create-queue"}
	return startAgentProc(t, e, append(base, args...)...)
}

// enqueue adds a task to a queue, once the glue created it (--create-queue).
func (k *k8sGlueSetup) enqueue(t *testing.T, queue string, spec fakeserver.TaskSpec) string {
	t.Helper()
	if !waitUntil(func() bool { _, ok := k.s.Queue(queue); return ok }, 30*time.Second) {
		t.Fatalf("the glue did not create queue %q", queue)
	}
	if spec.Name == "" {
		spec.Name = "k8s task"
	}
	id := k.s.AddTask(spec)
	if err := k.s.Enqueue(id, queue); err != nil {
		t.Fatal(err)
	}
	return id
}

// pods lists the namespace's pods (as the test's admin).
func (k *k8sGlueSetup) pods(t *testing.T) []k8sPod {
	t.Helper()
	out, err := kubectlT(t, nil, "get", "pods", "-n", k.ns, "-o", "json")
	if err != nil {
		return nil
	}
	var list struct{ Items []k8sPod }
	json.Unmarshal([]byte(out), &list)
	return list.Items
}

// pod returns the task's stored pod as JSON, or nil.
func (k *k8sGlueSetup) pod(t *testing.T, task string) map[string]any {
	t.Helper()
	out, err := kubectlT(t, nil, "get", "pod", "-n", k.ns, "clearml-id-"+task, "-o", "json")
	if err != nil {
		return nil
	}
	var m map[string]any
	json.Unmarshal([]byte(out), &m)
	return m
}

// waitPodOf waits for the task's pod and returns it with the time it was seen.
func (k *k8sGlueSetup) waitPodOf(t *testing.T, p *daemonProc, task string, timeout time.Duration) (map[string]any, time.Time) {
	t.Helper()
	var pod map[string]any
	if !waitUntil(func() bool { pod = k.pod(t, task); return pod != nil }, timeout) {
		t.Fatalf("no pod for task %s in %s; glue output:\n%s", task, timeout, p.out.String())
	}
	return pod, time.Now()
}

// waitNoPod waits until the task's pod is gone.
func (k *k8sGlueSetup) waitNoPod(t *testing.T, p *daemonProc, task string, timeout time.Duration) {
	t.Helper()
	if !waitUntil(func() bool { return k.pod(t, task) == nil }, timeout) {
		t.Fatalf("the pod of task %s is still there after %s: %s\nglue output:\n%s", task, timeout, jstr(jget(k.pod(t, task), "status", "phase")), p.out.String())
	}
}

// k8sExecuteStandIn plays the execute inside every pod of the namespace
// (except pods annotated clearml.test/no-execute): it claims the task when
// kwok starts the pod (tasks.dequeue, as --require-queue), stops it when
// aborted ("stopping"), and completes it when the pod succeeds.
func (k *k8sGlueSetup) k8sExecuteStandIn(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { cancel(); wg.Wait() })
	home := t.TempDir()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, p := range k.pods(t) {
				k.standInStep(t, home, p)
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}()
}

// standInStep runs on the stand-in's goroutine: it reports with t.Error.
func (k *k8sGlueSetup) standInStep(t *testing.T, home string, p k8sPod) {
	id := p.Metadata.Labels[k8sTaskIDLabel]
	task, ok := k.s.Task(id)
	if id == "" || !ok {
		return
	}
	var pod map[string]any
	raw, _ := json.Marshal(p)
	json.Unmarshal(raw, &pod)
	c, err := newTestClient(home, k.s.URL(), nil, clientOptions{workerID: "k8s-glue-" + k.ns + ":" + id})
	if err != nil {
		t.Error(err)
		return
	}
	w := statusWriter{api: c, workerID: "k8s-glue-" + k.ns + ":" + id}
	ctx := withBudget(context.Background(), 10*time.Second)
	switch {
	case p.Status.Phase == "Running" && task.Status == "queued":
		w.dequeue(ctx, id)
	case p.Status.Phase == "Running" && task.Status == "in_progress" && task.StatusMessage == "stopping":
		w.set(ctx, "stopped", id, "task was stopped by tasks.stop", false)
	case p.Status.Phase == "Succeeded" && task.Status == "in_progress":
		w.set(ctx, "completed", id, "worker execution done", false)
	}
}

// The two queues' tasks become pods from their templates, with the
// reference's labels and environment, the template's selector and
// toleration, the queue template's resources; they complete and their
// pods are cleaned up. The glue runs as the Helm chart starts it: the
// command alone, its settings in K8S_GLUE_* variables.
func TestK8sGlueTwoQueues(t *testing.T) {
	t.Parallel()
	k := newK8sGlueSetup(t)
	gpu := k.file(t, "gpu.yaml", `metadata:
  labels:
    pool: gpu
  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 8s}
spec:
  containers:
  - resources:
      limits:
        memory: 2Gi
        cpu: "2"
    env:
    - name: QUEUE_KIND
      value: gpu
`)
	k.k8sExecuteStandIn(t)
	env := map[string]string{"K8S_GLUE_QUEUE": "cpu,gpu", "K8S_GLUE_MAX_PODS": "4", "K8S_GLUE_COMPLETED_POD_DELETION_DELAY_MINUTES": "0.1",
		"K8S_GLUE_EXTRA_ARGS": "--namespace " + k.ns + " --template-yaml " + filepath.Join(k.dir, "template.yaml") + " --queue-template gpu=" + gpu + " --create-queue --polling-interval 1"}
	e := map[string]string{}
	for key, v := range k.env {
		e[key] = v
	}
	for key, v := range env {
		e[key] = v
	}
	p := startAgentProc(t, e, "k8s")
	cpuTask := k.enqueue(t, "cpu", fakeserver.TaskSpec{Parent: "fedcba9876543210fedcba9876543210"})
	enqueued := time.Now()
	gpuTask := k.enqueue(t, "gpu", fakeserver.TaskSpec{Container: map[string]string{"image": "nvcr.io/nvidia/pytorch:24.01-py3", "arguments": "-e MY_VAR=1 --ipc=host"}})
	cpuPod, seen := k.waitPodOf(t, p, cpuTask, 60*time.Second)
	t.Logf("enqueue -> pod created: %s", seen.Sub(enqueued).Round(10*time.Millisecond))
	gpuPod, _ := k.waitPodOf(t, p, gpuTask, 60*time.Second)
	// --status: the tracked pods, as Kubernetes sees them.
	st := runAgent(t, e, "k8s", "--status")
	if want := "pod " + k.ns + "/clearml-id-" + gpuTask + ": task " + gpuTask + ", queue gpu"; st.code != 0 || !strings.Contains(st.stdout, want) {
		t.Errorf("--status: exit %d, no %q:\n%s%s", st.code, want, st.stdout, st.stderr)
	}

	agent := k8sAgentLabel("k8s-glue-" + k.ns)
	cpuQ, _ := k.s.Queue("cpu")
	c := jget(cpuPod, "spec", "containers", 0)
	wantLabels := map[string]any{"CLEARML": strings.TrimPrefix(agent, "CLEARML="), "clearml-agent-queue": cpuQ.ID,
		"clearml-agent-queue-name": "cpu", "clearml-task-id": cpuTask, "clearml-parent-task-id": "fedcba9876543210fedcba9876543210", "team": "red"}
	if jstr(jget(cpuPod, "metadata", "labels")) != jstr(wantLabels) {
		t.Errorf("labels %s\nwant %s", jstr(jget(cpuPod, "metadata", "labels")), jstr(wantLabels))
	}
	env0 := envOf(c)
	if env0["CLEARML_WORKER_ID"] != jstr(map[string]any{"name": "CLEARML_WORKER_ID", "value": "k8s-glue-" + k.ns + ":" + cpuTask}) ||
		!strings.Contains(env0["CLEARML_API_SECRET_KEY"], `"secretKeyRef":{"key":"secret","name":"creds"}`) ||
		!strings.Contains(env0["CLEARML_API_HOST"], k.s.URL()) {
		t.Errorf("env %v", env0)
	}
	wantCmd := []any{"/clearml-agent-bin/clearml-agent", "execute", "--id", cpuTask, "--full-monitoring", "--require-queue"}
	if jstr(jget(c, "command")) != jstr(wantCmd) || jget(cpuPod, "spec", "initContainers", 0, "image") != "clearml-agent:local" {
		t.Errorf("command %s, init container %s", jstr(jget(c, "command")), jstr(jget(cpuPod, "spec", "initContainers", 0)))
	}
	if jstr(jget(cpuPod, "spec", "nodeSelector")) != `{"type":"kwok"}` || jget(cpuPod, "spec", "tolerations", 0, "key") != "nvidia.com/gpu" ||
		jstr(jget(c, "resources", "limits")) != `{"memory":"1Gi"}` {
		t.Errorf("cpu pod: nodeSelector %s tolerations %s resources %s", jstr(jget(cpuPod, "spec", "nodeSelector")),
			jstr(jget(cpuPod, "spec", "tolerations")), jstr(jget(c, "resources")))
	}
	g := jget(gpuPod, "spec", "containers", 0)
	genv := envOf(g)
	if jstr(jget(g, "resources", "limits")) != `{"cpu":"2","memory":"2Gi"}` || jget(gpuPod, "metadata", "labels", "pool") != "gpu" ||
		jget(g, "image") != "nvcr.io/nvidia/pytorch:24.01-py3" || genv["QUEUE_KIND"] == "" || genv["MY_VAR"] == "" || genv["CLEARML_API_ACCESS_KEY"] == "" {
		t.Errorf("gpu pod: image %v limits %s labels %s env %v", jget(g, "image"), jstr(jget(g, "resources", "limits")), jstr(jget(gpuPod, "metadata", "labels")), genv)
	}
	for _, id := range []string{cpuTask, gpuTask} {
		waitStatus(t, k.s, p, id, "completed", 60*time.Second)
	}
	// K8S_GLUE_COMPLETED_POD_DELETION_DELAY_MINUTES=0.1: finished pods stay 6 s.
	time.Sleep(3 * time.Second)
	if k.pod(t, gpuTask) == nil {
		t.Errorf("the finished pod went before the deletion delay")
	}
	for _, id := range []string{cpuTask, gpuTask} {
		k.waitNoPod(t, p, id, 30*time.Second)
	}
	if task, _ := k.s.Task(cpuTask); !strings.Contains(jstr(task.Doc["hyperparams"]), `"k8s-queue"`) {
		t.Errorf("no k8s-queue property: %s", jstr(task.Doc["hyperparams"]))
	}
	for _, want := range []string{"task " + cpuTask + " pulled from", "pod " + k.ns + "/clearml-id-" + cpuTask + " submitted by worker"} {
		if log := k.s.TaskLogText(cpuTask); !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, log)
		}
	}
	if log := k.s.TaskLogText(gpuTask); !strings.Contains(log, `container arguments skipped (a pod takes only -e/--env NAME=VALUE): "--ipc"`) {
		t.Errorf("gpu console:\n%s", log)
	}
}

// Pods that end without the task's final status fail the task with
// Kubernetes' reason: exit 1, OOM kill, eviction, an image that cannot be
// pulled (while pending), a pod deleted by an admin; one that succeeds
// completes. Every pod is cleaned up.
func TestK8sGlueOutcomes(t *testing.T) {
	t.Parallel()
	k := newK8sGlueSetup(t)
	k.k8sExecuteStandIn(t)
	outcomes := []struct{ queue, annotations, status, reason string }{
		{"done", `{}`, "completed", ""},
		{"fail", `{kwok.clearml.ai/outcome: fail}`, "failed", "ended Error (exit code 1) before the task had a final status"},
		{"oom", `{kwok.clearml.ai/outcome: oom}`, "failed", "ended OOMKilled (exit code 137) before the task had a final status"},
		{"evict", `{kwok.clearml.ai/outcome: evict}`, "failed", "ended Evicted (The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.) before the task had a final status"},
		{"pull", `{kwok.clearml.ai/outcome: image-pull-error}`, "failed", `: ImagePullBackOff (Back-off pulling image "ubuntu:22.04": ErrImagePull: pull access denied)`},
		{"gone", `{pod-complete.stage.kwok.x-k8s.io/delay: 10m}`, "failed", "ended deleted (by a user or by Kubernetes) before the task had a final status"},
	}
	args := []string{"--queue"}
	var qt []string
	for _, o := range outcomes {
		args = append(args, o.queue)
		qt = append(qt, o.queue+"="+k.file(t, o.queue+".yaml", "metadata:\n  annotations: "+o.annotations+"\n"))
	}
	metrics := metricsListen(t)
	p := k.start(t, nil, append(append(append(args, "--queue-template"), qt...), "--metrics-address", metrics)...)
	ids := map[string]string{}
	for _, o := range outcomes {
		ids[o.queue] = k.enqueue(t, o.queue, fakeserver.TaskSpec{Container: map[string]string{"image": "ubuntu:22.04"}})
	}
	k.waitPodOf(t, p, ids["gone"], 60*time.Second)
	if !waitUntil(func() bool { task, _ := k.s.Task(ids["gone"]); return task.Status == "in_progress" }, 30*time.Second) {
		t.Fatalf("the stand-in did not claim the task")
	}
	if _, err := kubectlT(t, nil, "delete", "pod", "-n", k.ns, "clearml-id-"+ids["gone"]); err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		task := waitStatus(t, k.s, p, ids[o.queue], o.status, 90*time.Second)
		want := "pod " + k.ns + "/clearml-id-" + ids[o.queue] + " " + o.reason
		if o.queue == "pull" {
			want = "pod " + k.ns + "/clearml-id-" + ids[o.queue] + o.reason
		}
		if o.reason != "" && task.StatusReason != want {
			t.Errorf("%s: reason %q\nwant %q", o.queue, task.StatusReason, want)
		}
		if o.reason != "" && !strings.Contains(k.s.TaskLogText(ids[o.queue]), "clearml-agent k8s glue: "+want) {
			t.Errorf("%s: console lacks the reason:\n%s", o.queue, k.s.TaskLogText(ids[o.queue]))
		}
	}
	for _, o := range outcomes {
		k.waitNoPod(t, p, ids[o.queue], 30*time.Second)
	}
	// The glue's own listener counted each pod's start and each end by its
	// outcome.
	var samples []string
	for _, o := range outcomes {
		result := "failed"
		if o.status == "completed" {
			result = "completed"
		}
		samples = append(samples, `clearml_agent_tasks_started_total{queue="`+o.queue+`"} 1`,
			`clearml_agent_task_pickup_latency_seconds_count{queue="`+o.queue+`"} 1`,
			`clearml_agent_tasks_total{queue="`+o.queue+`",result="`+result+`"} 1`)
	}
	waitMetricSamples(t, metrics, p, 30*time.Second, append(samples, `clearml_agent_ready 1`)...)
	if q, _ := k.s.Queue("k8s_scheduler"); len(q.Entries) != 0 {
		t.Errorf("pending queue holds %v", q.Entries)
	}
}

// An abort while the pod is pending (it cannot be scheduled) deletes the
// pod; so does one while it runs, once execute in it had its time.
func TestK8sGlueAbort(t *testing.T) {
	t.Parallel()
	k := newK8sGlueSetup(t)
	k.k8sExecuteStandIn(t)
	stuck := k.file(t, "stuck.yaml", "spec:\n  nodeSelector:\n    fleet: none\n")
	long := k.file(t, "long.yaml", "metadata:\n  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 10m}\n")
	p := k.start(t, nil, "--queue", "stuck", "long", "--queue-template", "stuck="+stuck, "long="+long)
	pending := k.enqueue(t, "stuck", fakeserver.TaskSpec{})
	running := k.enqueue(t, "long", fakeserver.TaskSpec{})
	k.waitPodOf(t, p, pending, 60*time.Second)
	task := waitTaskCond(t, k.s, p, pending, "showing why its pod waits", 60*time.Second, func(task fakeserver.Task) bool {
		return strings.Contains(task.StatusMessage, "Unschedulable")
	})
	pq, _ := k.s.Queue("k8s_scheduler")
	if task.Status != "queued" || task.Queue != pq.ID || task.StatusReason != "k8s pending scheduler" {
		t.Errorf("pending task: %s in %s (%s); want queued in k8s_scheduler", task.Status, task.Queue, task.StatusReason)
	}
	stopTask(t, k.s, pending)
	k.waitNoPod(t, p, pending, 30*time.Second)
	if st := taskStatus(t, k.s, pending); st.Status != "stopped" {
		t.Errorf("aborted pending task: %s", st.Status)
	}
	k.waitPodOf(t, p, running, 60*time.Second)
	waitStatus(t, k.s, p, running, "in_progress", 30*time.Second)
	// As the running execute's reports keep it: a worker runs the task, so the abort is "stopping".
	k.s.UpdateTask(running, func(doc map[string]any) {
		doc["last_worker"] = "k8s-glue-" + k.ns + ":" + running
		doc["last_update"] = time.Now()
	})
	stopTask(t, k.s, running)
	waitStatus(t, k.s, p, running, "stopped", 30*time.Second)
	k.waitNoPod(t, p, running, 60*time.Second)
	if log := k.s.TaskLogText(running); !strings.Contains(log, "cancelled: still running 30s after the task became stopped") {
		t.Errorf("console:\n%s", log)
	}
}

func waitTaskCond(t *testing.T, s *fakeserver.Server, p *daemonProc, id, what string, timeout time.Duration, cond func(fakeserver.Task) bool) fakeserver.Task {
	t.Helper()
	var task fakeserver.Task
	if !waitUntil(func() bool { task, _ = s.Task(id); return cond(task) }, timeout) {
		t.Fatalf("task %s not %s: %s (%s) %q\nglue output:\n%s", id, what, task.Status, task.StatusReason, task.StatusMessage, p.out.String())
	}
	return task
}

// --max-pods 2: never more than two pods, and every task gets its turn.
func TestK8sGlueMaxPods(t *testing.T) {
	t.Parallel()
	k := newK8sGlueSetup(t)
	k.k8sExecuteStandIn(t)
	slow := k.file(t, "slow.yaml", "metadata:\n  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 4s}\n")
	p := k.start(t, nil, "--queue", "work", "--queue-template", "work="+slow, "--max-pods", "2")
	var ids []string
	for range 5 {
		ids = append(ids, k.enqueue(t, "work", fakeserver.TaskSpec{}))
	}
	most := 0
	done := func() bool {
		for _, id := range ids {
			if task, _ := k.s.Task(id); task.Status != "completed" {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !done() && time.Now().Before(deadline) {
		n := 0
		for _, pod := range k.pods(t) {
			if pod.Metadata.DeletionTimestamp == nil && (pod.Status.Phase == "Pending" || pod.Status.Phase == "Running" || pod.Status.Phase == "") {
				n++
			}
		}
		most = max(most, n)
		time.Sleep(100 * time.Millisecond)
	}
	if !done() {
		t.Fatalf("not all tasks completed; glue output:\n%s", p.out.String())
	}
	if most != 2 {
		t.Errorf("at most %d pods in flight at once; want 2", most)
	}
	if !strings.Contains(p.out.String(), "Maximum number of jobs reached (2/2)") {
		t.Errorf("glue output:\n%s", p.out.String())
	}
}

// The glue killed (SIGKILL) and started again with no state of its own
// finds its pods by their labels: a running task completes, a pending one
// can still be aborted, and no task gets a second pod.
func TestK8sGlueRestart(t *testing.T) {
	t.Parallel()
	k := newK8sGlueSetup(t)
	k.k8sExecuteStandIn(t)
	stuck := k.file(t, "stuck.yaml", "spec:\n  nodeSelector:\n    fleet: none\n")
	long := k.file(t, "long.yaml", "metadata:\n  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 20s}\n")
	args := []string{"--queue", "stuck", "long", "--queue-template", "stuck=" + stuck, "long=" + long}
	p := k.start(t, nil, args...)
	pending := k.enqueue(t, "stuck", fakeserver.TaskSpec{})
	running := k.enqueue(t, "long", fakeserver.TaskSpec{})
	pod1, _ := k.waitPodOf(t, p, pending, 60*time.Second)
	pod2, _ := k.waitPodOf(t, p, running, 60*time.Second)
	waitStatus(t, k.s, p, running, "in_progress", 30*time.Second)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	os.RemoveAll(k.env["HOME"]) // no state file: the labels must do
	p2 := k.start(t, nil, args...)
	for _, id := range []string{pending, running} {
		if !waitUntil(func() bool { return strings.Contains(p2.out.String(), "(task "+id+")") }, 60*time.Second) {
			t.Fatalf("the restarted glue did not pick up the pod of %s:\n%s", id, p2.out.String())
		}
	}
	stopTask(t, k.s, pending)
	k.waitNoPod(t, p2, pending, 30*time.Second)
	waitStatus(t, k.s, p2, running, "completed", 60*time.Second)
	k.waitNoPod(t, p2, running, 30*time.Second)
	if n := len(k.s.RequestsTo("tasks.enqueue")); n != 2 {
		t.Errorf("tasks.enqueue calls: %d, want one into the pending queue per task", n)
	}
	for _, pod := range []map[string]any{pod1, pod2} {
		id := jget(pod, "metadata", "labels", "clearml-task-id").(string)
		if strings.Count(p.out.String()+p2.out.String(), "task "+id+": submitted") != 1 {
			t.Errorf("task %s submitted more than once:\n%s\n%s", id, p.out.String(), p2.out.String())
		}
	}
}

// The API server killed and restarted while a pod runs: the glue waits it
// out, the task completes, and a task enqueued meanwhile gets its pod.
func TestK8sGlueAPIServerRestart(t *testing.T) {
	pidFile := os.Getenv("K8S_TEST_APISERVER_PIDFILE")
	k := newK8sGlueSetup(t)
	if pidFile == "" {
		msg := "no K8S_TEST_APISERVER_PIDFILE: run under testdata/k8s/with-cluster.sh, whose API server can be restarted"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	k.k8sExecuteStandIn(t)
	long := k.file(t, "long.yaml", "metadata:\n  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 25s}\n")
	p := k.start(t, nil, "--queue", "work", "--queue-template", "work="+long)
	first := k.enqueue(t, "work", fakeserver.TaskSpec{})
	k.waitPodOf(t, p, first, 60*time.Second)
	waitStatus(t, k.s, p, first, "in_progress", 30*time.Second)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(data), &pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	second := k.enqueue(t, "work", fakeserver.TaskSpec{})
	if !waitUntil(func() bool { _, err := kubectlT(t, nil, "get", "--raw=/readyz"); return err == nil }, 2*time.Minute) {
		t.Fatal("the API server did not come back")
	}
	t.Logf("API server back after %s", time.Since(down).Round(100*time.Millisecond))
	k.waitPodOf(t, p, second, 60*time.Second)
	for _, id := range []string{first, second} {
		waitStatus(t, k.s, p, id, "completed", 90*time.Second)
		k.waitNoPod(t, p, id, 30*time.Second)
	}
	select {
	case <-p.done:
		t.Fatalf("the glue exited:\n%s", p.out.String())
	default:
	}
}

// Hostile task fields (image strings with options, arguments, a setup
// script with kubelet variables, a queue name) reach the pod only as the
// task container's image, environment and script: what the server stores
// is the template otherwise. An image that is no image fails the task.
func TestK8sGlueHostileTasks(t *testing.T) {
	const hostileQueue = "évian a=b/c; rm -rf $(x)"
	t.Parallel()
	k := newK8sGlueSetup(t)
	p := k.start(t, nil, "--queue", hostileQueue, "--ports-mode", "--num-of-services", "4", "--base-port", "30000", "--gateway-address", "10.0.0.7")
	tmpl, err := k8sLoadTemplate(filepath.Join(k.dir, "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	specs := []map[string]string{
		{"image": "ubuntu", "arguments": "-e A=1 --privileged -v /:/host --pid=host --env=B=$(CLEARML_API_SECRET_KEY) -e CLEARML_API_HOST=http://evil -e NVIDIA_VISIBLE_DEVICES=all"},
		{"image": "ubuntu", "setup_shell_script": "cat <<'EOF'\n$(CLEARML_API_SECRET_KEY)\nEOF\n"},
		{"image": "ubuntu", "arguments": `-e "X=1" --mount type=bind,src=/,dst=/host --security-opt seccomp=unconfined`},
	}
	var ids []string
	for _, c := range specs {
		ids = append(ids, k.enqueue(t, hostileQueue, fakeserver.TaskSpec{Container: c}))
	}
	// Not one image reference: the task fails with the reason, no pod.
	bad := map[string]string{
		k.enqueue(t, hostileQueue, fakeserver.TaskSpec{Container: map[string]string{"image": "$(whoami)"}}):                      "is not a valid image reference",
		k.enqueue(t, hostileQueue, fakeserver.TaskSpec{Container: map[string]string{"image": "ubuntu --privileged -v /:/host"}}): "it holds spaces",
	}
	slots := map[any]bool{}
	for _, id := range ids {
		pod, _ := k.waitPodOf(t, p, id, 60*time.Second)
		k8sCheckConfinedStored(t, tmpl, pod)
		// Ports mode: a slot label per pod, its port and the gateway as the task's properties.
		slot := jget(pod, "metadata", "labels", "ai.allegro.agent.serial")
		slots[slot] = true
		var n int
		fmt.Sscanf(fmt.Sprint(slot), "pod-%d", &n)
		var props string
		waitUntil(func() bool {
			task, _ := k.s.Task(id)
			props = jstr(jget(task.Doc, "hyperparams", "properties"))
			return strings.Contains(props, "k8s-pod-port")
		}, 10*time.Second)
		if n < 1 || n > 4 || !strings.Contains(props, fmt.Sprintf(`"value":"%d"`, 30000+n)) || !strings.Contains(props, `"value":"10.0.0.7"`) {
			t.Errorf("slot %v, properties %s", slot, props)
		}
		if v := jget(pod, "metadata", "labels", "clearml-agent-queue-name"); v != "vian-a-b-c-rm-rf-x" {
			t.Errorf("queue name label %v", v)
		}
		env := envOf(jget(pod, "spec", "containers", 0))
		if strings.Contains(env["CLEARML_API_HOST"], "evil") || env["NVIDIA_VISIBLE_DEVICES"] != "" {
			t.Errorf("env %v", env)
		}
		if b, ok := env["B"]; ok && !strings.Contains(b, "$$(CLEARML_API_SECRET_KEY)") {
			t.Errorf("a kubelet variable reference reached the pod unescaped: %s", b)
		}
	}
	if len(slots) != len(ids) {
		t.Errorf("slots %v: not one per pod", slots)
	}
	for id, reason := range bad {
		task := waitStatus(t, k.s, p, id, "failed", 60*time.Second)
		if !strings.Contains(task.StatusReason, reason) {
			t.Errorf("bad image: %q, want %q", task.StatusReason, reason)
		}
		if k.pod(t, id) != nil {
			t.Errorf("a pod was created for an invalid image (%s)", reason)
		}
	}
}

// k8sCheckConfinedStored is k8sCheckConfined on a pod as the server stores
// it: fields the server defaults are left out of the comparison.
func k8sCheckConfinedStored(t *testing.T, tmpl, pod map[string]any) {
	t.Helper()
	p := k8sCopy(pod)
	spec := p["spec"].(map[string]any)
	for _, k := range []string{"dnsPolicy", "schedulerName", "securityContext", "terminationGracePeriodSeconds", "enableServiceLinks",
		"preemptionPolicy", "priority", "nodeName", "serviceAccountName", "serviceAccount"} {
		delete(spec, k)
	}
	var tol []any
	for _, x := range k8sList(spec, "tolerations") {
		if jget(x, "key") == "nvidia.com/gpu" {
			tol = append(tol, x)
		}
	}
	spec["tolerations"] = tol
	c := jget(spec, "containers", 0).(map[string]any)
	for _, k := range []string{"terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy"} {
		delete(c, k)
	}
	if r, ok := c["resources"].(map[string]any); ok && jstr(r["requests"]) == jstr(r["limits"]) {
		delete(r, "requests") // the server copies limits to requests
	}
	k8sCheckConfined(t, tmpl, p)
}

// The pod the glue created, as the API server stores it, run with docker
// as a kubelet would (init container, then the task container, Secrets read
// from the API server) against the stand-in server: the real execute
// claims the task from the pending queue and completes it. With
// --use-owner-token the pod's only credential is the owner's token, from
// the per-task Secret that goes with the pod.
func TestK8sGluePodRunsInDocker(t *testing.T) {
	needDockerImage(t)
	image := needAgentImage(t)
	t.Parallel()
	k := newK8sGlueSetup(t)
	k.s.AddUser(fakeserver.User{ID: "agent-admin", Role: fakeserver.RoleAdmin})
	k.s.AddCredentials("agent-admin", "ADMINKEY0000000000000000000000", "admin-secret-value-123")
	k.s.AddUser(fakeserver.User{ID: "bob"})
	k.file(t, "template.yaml", `metadata:
  annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 10m}
spec:
  nodeSelector: {type: kwok}
`)
	script := k.file(t, "bash.sh", "export SCRIPT_MARK=script-{task_id}\n[ ! -z $CLEARML_AGENT_NO_UPDATE ] || python3 -m pip install clearml-agent{agent_install_args}\n")
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('pod says', os.environ.get('POD_MARK'), os.environ.get('SCRIPT_MARK'), os.environ.get('CLEARML_WORKER_ID'), bool(os.environ.get('CLEARML_AUTH_TOKEN')))\n"})
	p := k.start(t, map[string]string{"CLEARML_API_ACCESS_KEY": "ADMINKEY0000000000000000000000", "CLEARML_API_SECRET_KEY": "admin-secret-value-123",
		"K8S_GLUE_AGENT_IMAGE": image}, "--queue", "work", "--use-owner-token", "--debug", "--container-bash-script", script)
	id := k.enqueue(t, "work", fakeserver.TaskSpec{User: "bob", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage, "arguments": "-e POD_MARK=from-task"}})
	enqueued := time.Now()
	pod, seen := k.waitPodOf(t, p, id, 60*time.Second)
	t.Logf("enqueue -> pod created: %s", seen.Sub(enqueued).Round(10*time.Millisecond))
	if strings.Contains(jstr(pod), "admin-secret-value-123") || strings.Contains(jstr(pod), "eyJ") {
		t.Fatalf("a credential in the pod spec:\n%s", jstr(pod))
	}
	// The kubelet's view of the Secrets the pod references.
	secrets := map[string]map[string]string{}
	out, err := kubectlT(t, nil, "get", "secret", "-n", k.ns, "clearml-id-"+id, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var sec struct{ Data map[string][]byte }
	json.Unmarshal([]byte(out), &sec)
	secrets["clearml-id-"+id] = map[string]string{}
	for key, v := range sec.Data {
		secrets["clearml-id-"+id][key] = string(v)
	}
	bin := t.TempDir()
	os.Chmod(bin, 0o777)
	vols := map[string]string{k8sBinVolume: bin}
	if out, err := k8sDockerRun(t, jget(pod, "spec", "initContainers", 0), vols, secrets); err != nil {
		t.Fatalf("init container: %v\n%s", err, out)
	}
	started := time.Now()
	dout, err := k8sDockerRun(t, jget(pod, "spec", "containers", 0), vols, secrets, "--network", "host", "-v", repo+":"+repo+":ro")
	t.Logf("task container (docker run to exit): %s", time.Since(started).Round(10*time.Millisecond))
	if err != nil {
		t.Fatalf("task container: %v\n%s", err, dout)
	}
	task := waitStatus(t, k.s, p, id, "completed", 30*time.Second)
	t.Logf("enqueue -> completed (glue, pod, docker run): %s", time.Since(enqueued).Round(10*time.Millisecond))
	if log := k.s.TaskLogText(id); !strings.Contains(log, "pod says from-task script-"+id+" k8s-glue-"+k.ns+":"+id+" True") {
		t.Errorf("the task's log lacks its output:\n%s", log)
	}
	if task.LastWorker != "k8s-glue-"+k.ns+":"+id {
		t.Errorf("last worker %q", task.LastWorker)
	}
	// The pod still runs in kwok (its delay is long): the glue deletes it and its Secret.
	k.waitNoPod(t, p, id, 60*time.Second)
	if _, err := kubectlT(t, nil, "get", "secret", "-n", k.ns, "clearml-id-"+id); err == nil {
		t.Errorf("the task's Secret outlived its pod; glue output:\n%s", p.out.String())
	}
}

// deploy/k8s-glue.yaml: the API server takes the ConfigMap and the
// Deployment, a namespace that enforces the "restricted" Pod Security
// Standard admits the glue's pod, its base template renders task pods the
// server accepts, and its K8S_GLUE_* settings parse as the command's.
func TestK8sGlueDeployManifest(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	data, err := os.ReadFile(filepath.Join("deploy", "k8s-glue.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := kubectlT(t, []byte(strings.ReplaceAll(string(data), "namespace: clearml", "namespace: "+ns)), "create", "--dry-run=server", "-o", "json", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	for d := json.NewDecoder(strings.NewReader(out)); d.More(); {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		items = append(items, m)
	}
	if len(items) != 2 || items[0]["kind"] != "ConfigMap" || items[1]["kind"] != "Deployment" {
		t.Fatalf("stored %s", out)
	}
	cm, deploy := items[0], items[1]
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "glue", "namespace": ns},
		"spec": jget(deploy, "spec", "template", "spec")}
	if _, err := k8sServerDryRun(t, pod); err != nil {
		t.Errorf("the glue's pod in a restricted namespace: %v", err)
	}
	glue := jget(deploy, "spec", "template", "spec", "containers", 0)
	env := map[string]string{}
	for _, e := range k8sList(glue.(map[string]any), "env") {
		if v, ok := jget(e, "value").(string); ok {
			env[jget(e, "name").(string)] = v
		}
	}
	for k, v := range env {
		if strings.HasPrefix(k, "K8S_GLUE_") {
			t.Setenv(k, v)
		}
	}
	inv, err := parseCommandLine(k8sStrings(jget(glue, "command").([]any))[1:])
	if err != nil {
		t.Fatal(err)
	}
	c := inv.cmd.(*k8sCmd)
	if c.templateYAML != "/etc/clearml-agent/template.yaml" || c.maxPods.n != 10 || jstr(c.queues.vals) != `["default"]` || env["CLEARML_WORKER_ID"] == "" {
		t.Errorf("the glue's settings: %+v", c)
	}
	tmplFile := filepath.Join(t.TempDir(), "template.yaml")
	os.WriteFile(tmplFile, []byte(jget(cm, "data", "template.yaml").(string)), 0o600)
	tmpl, err := k8sLoadTemplate(tmplFile)
	if err != nil {
		t.Fatal(err)
	}
	o := k8sTestOptions()
	o.AgentImage, o.Namespace = env["K8S_GLUE_AGENT_IMAGE"], ns
	if _, err := k8sServerDryRun(t, mustRender(t, tmpl, nil, k8sTestTask(), o).Pod); err == nil || !strings.Contains(err.Error(), "restricted") || strings.Contains(err.Error(), `"`+k8sInitName+`"`) {
		t.Errorf("a task pod of the base template in a restricted namespace: %v (want the task container refused, the init container passing)", err)
	}
	plain := k8sTestNamespace(t, nil)
	r := mustRender(t, tmpl, nil, k8sTestTask(), o)
	r.Pod["metadata"].(map[string]any)["namespace"] = plain
	if _, err := k8sServerDryRun(t, r.Pod); err != nil {
		t.Errorf("a task pod of the base template: %v", err)
	}
}

func k8sStrings(l []any) []string {
	out := make([]string, len(l))
	for i, x := range l {
		out[i], _ = x.(string)
	}
	return out
}
