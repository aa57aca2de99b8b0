package main

// The Kubernetes glue's pieces without a cluster: the command line and the
// Helm chart's variables, pod states, queue templates, the bash script and
// kubectl's errors. The glue against a real API server: k8s_glue_cluster_test.go.

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// K8S_GLUE_QUEUE, K8S_GLUE_MAX_PODS and K8S_GLUE_EXTRA_ARGS are arguments
// before the command line's, which win.
func TestKubeGlueCommandLine(t *testing.T) {
	t.Setenv("K8S_GLUE_QUEUE", "q1,q2")
	t.Setenv("K8S_GLUE_MAX_PODS", "3")
	t.Setenv("K8S_GLUE_EXTRA_ARGS", "--namespace ns1 --template-yaml '/etc/clearml/my template.yaml' --create-queue")
	inv, err := parseCommandLine([]string{"k8s", "--max-pods", "5", "--pending-queue-name", "waiting"})
	if err != nil {
		t.Fatal(err)
	}
	c := inv.cmd.(*k8sCmd)
	if !reflect.DeepEqual(c.queues.vals, []string{"q1,q2"}) || c.maxPods.n != 5 || c.namespace != "ns1" ||
		c.templateYAML != "/etc/clearml/my template.yaml" || !c.createQueue || c.pendingQueue != "waiting" || !c.foreground {
		t.Errorf("parsed %+v", c)
	}
	if inv, err = parseCommandLine([]string{"k8s", "--k8s-pending-queue-name", "other"}); err != nil || inv.cmd.(*k8sCmd).pendingQueue != "other" || inv.cmd.(*k8sCmd).maxPods.n != 3 {
		t.Errorf("--k8s-pending-queue-name: %v %+v", err, inv)
	}
	t.Setenv("K8S_GLUE_EXTRA_ARGS", "--no-such-flag")
	_, err = parseCommandLine([]string{"k8s"})
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(ue.msg, "K8S_GLUE_EXTRA_ARGS") || !strings.Contains(ue.msg, "--no-such-flag") {
		t.Errorf("a bad K8S_GLUE_EXTRA_ARGS: %v", err)
	}
	t.Setenv("K8S_GLUE_EXTRA_ARGS", "")
	d := (&k8sCmd{})
	tbl := newFlagTable("k8s")
	d.flags(tbl)
	if d.pendingQueue != "k8s_scheduler" || d.namespace != "clearml" || d.podNamePrefix != "clearml-id-" || d.numOfServices.n != 20 ||
		d.basePodNum.n != 1 || d.limitPodLabel != "ai.allegro.agent.serial=pod-{pod_number}" {
		t.Errorf("defaults %+v", d)
	}
}

// Mistakes stop the glue before it connects: one line, exit 2.
func TestKubeGlueUsageErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--ports-mode", "--max-pods", "2", "--agent-image", "a"}, "argument --max-pods: not allowed with argument --ports-mode"},
		{nil, []string{"--ssh-server-port", "2222", "--agent-image", "a"}, "--ssh-server-port is not supported"},
		{nil, []string{"--queue", "q"}, "set --agent-image (or K8S_GLUE_AGENT_IMAGE)"},
		{map[string]string{"CLEARML_K8S_GLUE_KIND": "job", "K8S_GLUE_AGENT_IMAGE": "a"}, nil, "CLEARML_K8S_GLUE_KIND=job is not supported"},
		{map[string]string{"K8S_GLUE_DEF_EXEC_AGENT_ARGS": "--id x", "K8S_GLUE_AGENT_IMAGE": "a"}, nil, "K8S_GLUE_DEF_EXEC_AGENT_ARGS"},
		{map[string]string{"K8S_GLUE_MAX_PODS": "many"}, nil, "K8S_GLUE_QUEUE / K8S_GLUE_MAX_PODS / K8S_GLUE_EXTRA_ARGS: argument --max-pods: invalid int value: 'many'"},
		{nil, []string{"--agent-image", "a", "--queue-template", "q"}, "--queue-template \"q\": give QUEUE=FILE"},
	}
	for _, c := range cases {
		r := runAgent(t, c.env, append([]string{"k8s"}, c.args...)...)
		if r.code != 2 {
			t.Errorf("%v %v: exit %d\n%s", c.env, c.args, r.code, r.stderr)
			continue
		}
		oneErrorLine(t, r, c.want)
	}
}

func k8sPodJSON(t *testing.T, s string) *k8sPod {
	t.Helper()
	var p k8sPod
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// Pod statuses as kubelets (and kwok) report them, in the glue's words.
func TestKubePodStates(t *testing.T) {
	fatal := []string{"ImagePullBackOff", "InvalidImageName"}
	cases := []struct {
		status string
		want   glueJobState
	}{
		{`{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}]}`,
			glueJobState{Phase: gluePending, Detail: "Unschedulable (0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.)"}},
		{`{"phase":"Pending","initContainerStatuses":[{"name":"clearml-agent-init","state":{"waiting":{"reason":"ImagePullBackOff","message":"Back-off pulling image"}}}]}`,
			glueJobState{Phase: gluePending, Detail: "ImagePullBackOff (Back-off pulling image)", Fatal: "ImagePullBackOff (Back-off pulling image)"}},
		{`{"phase":"Pending","containerStatuses":[{"name":"p","state":{"waiting":{"reason":"ContainerCreating"}}}]}`,
			glueJobState{Phase: gluePending, Detail: "ContainerCreating"}},
		{`{"phase":"Pending"}`, glueJobState{Phase: gluePending, Detail: "Pending"}},
		{`{"phase":"Running"}`, glueJobState{Phase: glueRunning, Detail: "Running"}},
		{`{"phase":"Unknown","reason":"NodeLost"}`, glueJobState{Phase: glueRunning, Detail: "Unknown (NodeLost)"}},
		{`{"phase":"Succeeded"}`, glueJobState{Phase: glueEnded, Detail: "Succeeded"}},
		{`{"phase":"Failed","containerStatuses":[{"name":"side","state":{"terminated":{"exitCode":0}}},{"name":"p","state":{"terminated":{"reason":"OOMKilled","exitCode":137}}}]}`,
			glueJobState{Phase: glueEnded, Detail: "OOMKilled (exit code 137)"}},
		{`{"phase":"Failed","reason":"Evicted","message":"The node was low on resource: memory."}`,
			glueJobState{Phase: glueEnded, Detail: "Evicted (The node was low on resource: memory.)"}},
		{`{"phase":"Failed","initContainerStatuses":[{"name":"clearml-agent-init","state":{"terminated":{"reason":"Error","exitCode":1}}}]}`,
			glueJobState{Phase: glueEnded, Detail: "init container clearml-agent-init: Error (exit code 1)"}},
		{`{"phase":"Failed","reason":"DeadlineExceeded","message":"` + strings.Repeat("x", 400) + `"}`,
			glueJobState{Phase: glueEnded, Detail: "DeadlineExceeded (" + strings.Repeat("x", 300) + "...)"}},
	}
	for _, c := range cases {
		p := k8sPodJSON(t, `{"metadata":{"name":"p"},"status":`+c.status+`}`)
		if got := k8sPodState(p, fatal); got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.status, got, c.want)
		}
	}
	p := k8sPodJSON(t, `{"metadata":{"name":"p","deletionTimestamp":"2024-01-01T00:00:00Z"},"status":{"phase":"Running"}}`)
	if got := k8sPodState(p, fatal); got.Phase != glueRunning || got.Detail != "Terminating" {
		t.Errorf("deleting: %+v", got)
	}
	if k8sJobID(p) != "/p/" {
		t.Errorf("job id %q", k8sJobID(p))
	}
	if ns, name, uid := k8sSplitJob("ns/clearml-id-x/1234-5"); ns != "ns" || name != "clearml-id-x" || uid != "1234-5" {
		t.Errorf("split: %s %s %s", ns, name, uid)
	}
}

// A queue's template merges over the base: objects merge, the task
// container merges, its env by name, other lists replace.
func TestKubeMergeTemplate(t *testing.T) {
	var base, over map[string]any
	json.Unmarshal([]byte(`{"metadata":{"labels":{"a":"1"}},"spec":{"nodeSelector":{"x":"1"},"tolerations":[{"key":"a"}],
		"containers":[{"env":[{"name":"K","value":"1"},{"name":"S","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}}],"resources":{"limits":{"memory":"1Gi"}}}]}}`), &base)
	json.Unmarshal([]byte(`{"metadata":{"labels":{"b":"2"}},"spec":{"nodeSelector":{"y":"2"},"tolerations":[{"key":"b"}],
		"containers":[{"env":[{"name":"K","value":"2"},{"name":"N","value":"3"}],"resources":{"limits":{"cpu":"2"}}},{"name":"side","image":"busybox"}]}}`), &over)
	before := jstr(base)
	got := k8sMergeTemplate(base, over)
	want := `{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"containers":[{"env":[{"name":"K","value":"2"},{"name":"S","valueFrom":{"secretKeyRef":{"key":"k","name":"s"}}},{"name":"N","value":"3"}],"resources":{"limits":{"cpu":"2","memory":"1Gi"}}},{"image":"busybox","name":"side"}],"nodeSelector":{"x":"1","y":"2"},"tolerations":[{"key":"b"}]}}`
	if jstr(got) != want {
		t.Errorf("merged\n%s\nwant\n%s", jstr(got), want)
	}
	if jstr(base) != before {
		t.Error("the base template was modified")
	}
	if jstr(k8sMergeTemplate(nil, over)) != jstr(over) {
		t.Errorf("no base: %s", jstr(k8sMergeTemplate(nil, over)))
	}
}

// --container-bash-script: the reference's placeholders, braces, and its
// lines that install or run the Python agent left out.
func TestKubeBashScript(t *testing.T) {
	b := &k8sBackend{hasBashScript: true, extraScript: []string{"echo extra"}, bashScript: []string{
		"export DEBIAN_FRONTEND='noninteractive'",
		"[ ! -z $LOCAL_PYTHON ] || for i in {{20..5}}; do which python3.$i && break ; done",
		"{extra_bash_init_cmd}",
		"[ ! -z $CLEARML_AGENT_NO_UPDATE ] || $LOCAL_PYTHON -m pip install clearml-agent{agent_install_args}",
		"{extra_docker_bash_script}",
		"echo {task_id} {unknown}",
		"$LOCAL_PYTHON -m clearml_agent execute {default_execution_agent_args} --id {task_id}",
	}}
	want := []string{"export DEBIAN_FRONTEND='noninteractive'", "[ ! -z $LOCAL_PYTHON ] || for i in {20..5}; do which python3.$i && break ; done",
		"", "echo extra", "echo T1 {unknown}"}
	if got := b.script("T1"); !reflect.DeepEqual(got, want) {
		t.Errorf("script\n%q\nwant\n%q", got, want)
	}
	b.bashScript = []string{"echo hi"}
	if got := b.script("T1"); !reflect.DeepEqual(got, []string{"echo hi", "echo extra"}) {
		t.Errorf("without the placeholder: %q", got)
	}
	b.hasBashScript = false
	if got := b.script("T1"); !reflect.DeepEqual(got, []string{"echo extra"}) {
		t.Errorf("no script: %q", got)
	}
}

// K8S_GLUE_DEF_EXEC_AGENT_ARGS are execute's flags, encoded by executeArgv.
func TestKubeExecOptions(t *testing.T) {
	x, err := k8sExecOptions("--full-monitoring --require-queue --log-level debug")
	if err != nil {
		t.Fatal(err)
	}
	o := k8sTestOptions()
	o.Exec = x
	r := mustRender(t, k8sJSONTemplate(), nil, k8sTestTask(), o)
	want := []any{"/clearml-agent-bin/clearml-agent", "execute", "--id", k8sTestTaskID, "--full-monitoring", "--require-queue", "--log-level", "DEBUG"}
	if got := jget(r.Pod, "spec", "containers", 0, "command"); !reflect.DeepEqual(got, want) {
		t.Errorf("command %s", jstr(got))
	}
	for _, bad := range []string{"--bogus", "--id x", "--clone", "'unterminated"} {
		if _, err := k8sExecOptions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// kubectl's errors: what the API server refuses fails the task; an
// unreachable server, missing permissions or quota are retried.
func TestKubectlErrors(t *testing.T) {
	k := &k8sKubectl{}
	e := func(msg string) error {
		x := &k8sError{msg: msg}
		if m := k8sServerReason().FindStringSubmatch(msg); m != nil {
			x.reason = m[1]
		}
		return x
	}
	refused := []string{
		`Error from server (Invalid): error when creating "STDIN": Pod "clearml-id-x" is invalid: spec.containers[0].image: Required value`,
		`Error from server (Forbidden): error when creating "STDIN": pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged`,
	}
	retried := []string{
		`The connection to the server 127.0.0.1:16443 was refused - did you specify the right host or port?`,
		`Error from server (Forbidden): error when creating "STDIN": pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`,
		`Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:ns:clearml-agent" cannot create resource "pods" in API group "" in the namespace "x"`,
		`Error from server (InternalError): an error on the server`,
		`Error from server (AlreadyExists): pods "x" already exists`,
	}
	for _, m := range refused {
		if !k.refused(e(m)) {
			t.Errorf("not a refusal: %s", m)
		}
	}
	for _, m := range retried {
		if k.refused(e(m)) {
			t.Errorf("a refusal: %s", m)
		}
	}
	if !k8sIs(e(retried[4]), "NotFound", "AlreadyExists") || k8sIs(errors.New("x"), "NotFound") {
		t.Error("k8sIs")
	}
	var err error
	if k.ignore, err = k8sIgnorePattern(`Error from server \(Invalid\)`); err != nil {
		t.Fatal(err)
	}
	if k.refused(e(refused[0])) || !k.refused(e(refused[1])) {
		t.Error("K8S_GLUE_IGNORE_KUBECTL_ERROR not applied")
	}
}

// A template that leaves the task pods without credentials, or a queue
// template for a queue not served, stops the glue at start instead of
// failing every task.
func TestKubeGlueRefusesTemplate(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	nocreds := filepath.Join(dir, "t.json")
	os.WriteFile(nocreds, []byte(`{"spec":{"containers":[{"env":[{"name":"A","value":"1"}]}]}}`), 0o600)
	env := serverEnv(s)
	env["K8S_GLUE_AGENT_IMAGE"] = "clearml-agent:local"
	r := runAgent(t, env, "k8s", "--queue", "work", "--create-queue", "--template-yaml", nocreds)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	oneErrorLine(t, r, "the task pod would get no API credentials")
	r = runAgent(t, env, "k8s", "--queue", "work", "--queue-template", "other="+nocreds)
	if r.code != 2 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	oneErrorLine(t, r, "--queue-template other: not one of the queues served")
}
