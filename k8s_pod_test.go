package main

// Pod rendering without a cluster. The same pods go through the real API
// server's validation in k8s_dryrun_test.go (TestK8s*).

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const k8sTestTaskID = "0123456789abcdef0123456789abcdef"

// k8sChartTemplate is testdata/k8s/chart-template.yaml as kubectl parses it.
func k8sChartTemplate(t testing.TB) map[string]any {
	t.Helper()
	needKubectl(t)
	m, err := k8sLoadTemplate(filepath.Join("testdata", "k8s", "chart-template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// needKubectl: the template loader parses YAML with kubectl (no cluster needed).
func needKubectl(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kubectl is not on PATH (on CI it must be)")
		}
		t.Skip("kubectl is not on PATH")
	}
}

// k8sJSONTemplate is a minimal template with credentials from a Secret.
func k8sJSONTemplate() map[string]any {
	var m map[string]any
	json.Unmarshal([]byte(`{"spec":{"containers":[{"env":[
		{"name":"CLEARML_API_ACCESS_KEY","valueFrom":{"secretKeyRef":{"name":"creds","key":"access"}}},
		{"name":"CLEARML_API_SECRET_KEY","valueFrom":{"secretKeyRef":{"name":"creds","key":"secret"}}}]}]}}`), &m)
	return m
}

func k8sTestTask() k8sTask {
	return k8sTask{ID: k8sTestTaskID, ParentID: "fedcba9876543210fedcba9876543210", QueueID: "aaaabbbbccccdddd0000111122223333",
		QueueName: "GPU Queue #1", Image: "nvcr.io/nvidia/pytorch:24.01-py3"}
}

func k8sTestOptions() k8sPodOptions {
	return k8sPodOptions{WorkerID: "k8s-glue:1", AgentImage: "clearml-agent:local",
		Env: []k8sEnv{{Name: "CLEARML_API_HOST", Value: "http://glue-default:8008"}}}
}

func mustRender(t testing.TB, tmpl, ov map[string]any, task k8sTask, o k8sPodOptions) *k8sRendered {
	t.Helper()
	r, err := k8sRenderPod(tmpl, ov, task, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// jget walks a JSON value: keys for objects, ints for lists.
func jget(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func jstr(v any) string { b, _ := json.Marshal(v); return string(b) }

// envOf returns the container's env as name -> entry (JSON).
func envOf(c any) map[string]string {
	out := map[string]string{}
	for _, e := range jget(c, "env").([]any) {
		out[jget(e, "name").(string)] = jstr(e)
	}
	return out
}

// The chart's template, rendered as the reference renders it.
func TestPodRenderChartTemplate(t *testing.T) {
	tmpl := k8sChartTemplate(t)
	before := jstr(tmpl)
	r := mustRender(t, tmpl, nil, k8sTestTask(), k8sTestOptions())
	if jstr(tmpl) != before {
		t.Error("the template was modified")
	}
	pod := r.Pod
	name := "clearml-id-" + k8sTestTaskID
	if r.Name != name || jget(pod, "metadata", "name") != name || jget(pod, "kind") != "Pod" || jget(pod, "apiVersion") != "v1" {
		t.Errorf("name/kind: %s %s", r.Name, jstr(pod["metadata"]))
	}
	if jget(pod, "metadata", "namespace") != "clearml" {
		t.Errorf("namespace = %v; want the template's", jget(pod, "metadata", "namespace"))
	}
	wantLabels := map[string]any{"team": "red", "CLEARML": "agent-" + k8sMD5("k8s-glue:1")[:8],
		"clearml-agent-queue": "aaaabbbbccccdddd0000111122223333", "clearml-agent-queue-name": "gpu-queue-1",
		"clearml-parent-task-id": "fedcba9876543210fedcba9876543210", "clearml-task-id": k8sTestTaskID}
	if got := jget(pod, "metadata", "labels"); !reflect.DeepEqual(got, wantLabels) {
		t.Errorf("labels = %s\nwant %s", jstr(got), jstr(wantLabels))
	}
	spec := pod["spec"].(map[string]any)
	for _, k := range []string{"nodeSelector", "tolerations", "serviceAccountName", "securityContext"} {
		if jstr(spec[k]) != jstr(jget(tmpl, "spec", k)) {
			t.Errorf("spec.%s = %s; want the template's %s", k, jstr(spec[k]), jstr(jget(tmpl, "spec", k)))
		}
	}
	if spec["restartPolicy"] != "Never" {
		t.Errorf("restartPolicy = %v", spec["restartPolicy"])
	}
	c := jget(spec, "containers", 0)
	if jget(c, "name") != name || jget(c, "image") != "nvcr.io/nvidia/pytorch:24.01-py3" {
		t.Errorf("container name/image: %s", jstr(c))
	}
	wantCmd := []any{"/clearml-agent-bin/clearml-agent", "execute", "--id", k8sTestTaskID, "--full-monitoring", "--require-queue"}
	if !reflect.DeepEqual(jget(c, "command"), wantCmd) || jget(c, "args") != nil {
		t.Errorf("command = %s args = %s", jstr(jget(c, "command")), jstr(jget(c, "args")))
	}
	env := envOf(c)
	if env["CLEARML_API_HOST"] != `{"name":"CLEARML_API_HOST","value":"https://api.clear.ml"}` {
		t.Errorf("the template's API host must win over the glue's default: %s", env["CLEARML_API_HOST"])
	}
	if !strings.Contains(env["CLEARML_API_SECRET_KEY"], `"secretKeyRef":{"key":"agentk8sglue_secret","name":"clearml-agent-ac"}`) {
		t.Errorf("secret key: %s", env["CLEARML_API_SECRET_KEY"])
	}
	if env["CLEARML_WORKER_ID"] != `{"name":"CLEARML_WORKER_ID","value":"k8s-glue:1:`+k8sTestTaskID+`"}` {
		t.Errorf("worker id: %s", env["CLEARML_WORKER_ID"])
	}
	if jstr(jget(c, "resources")) != `{"limits":{"memory":"1Gi"}}` || jstr(jget(c, "ports")) != `[{"containerPort":10022}]` {
		t.Errorf("resources/ports: %s %s", jstr(jget(c, "resources")), jstr(jget(c, "ports")))
	}
	if jstr(jget(c, "volumeMounts")) != `[{"mountPath":"/clearml-agent-bin","name":"clearml-agent-bin","readOnly":true}]` {
		t.Errorf("mounts: %s", jstr(jget(c, "volumeMounts")))
	}
	init := jget(spec, "initContainers", 0)
	if jget(init, "image") != "clearml-agent:local" || jstr(jget(init, "command")) != `["/clearml-agent","k8s-install-binary","--target","/clearml-agent-bin/clearml-agent"]` {
		t.Errorf("init container: %s", jstr(init))
	}
	if jstr(spec["volumes"]) != `[{"emptyDir":{},"name":"clearml-agent-bin"}]` {
		t.Errorf("volumes: %s", jstr(spec["volumes"]))
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %q", r.Warnings)
	}
}

func k8sMD5(s string) string {
	v := k8sAgentLabel(s)
	return strings.TrimPrefix(v, "CLEARML=agent-")
}

// The agent label is md5(worker id)[:8], as the reference computes it.
func TestPodAgentLabel(t *testing.T) {
	// python3 -c "import hashlib; print(hashlib.md5(b'k8s-glue:1').hexdigest()[:8])"
	if got := k8sAgentLabel("k8s-glue:1"); got != "CLEARML=agent-657d7df2" {
		t.Errorf("agent label = %s", got)
	}
	if got := k8sAgentLabel(""); got != "CLEARML=agent" {
		t.Errorf("no worker id: %s", got)
	}
}

// --overrides-yaml: merged into the pod; its containers' resources go to the
// task container and the containers section itself is dropped.
func TestPodRenderOverrides(t *testing.T) {
	var ov map[string]any
	json.Unmarshal([]byte(`{"metadata":{"labels":{"extra":"yes"}},"spec":{"nodeSelector":{"zone":"a"},
		"containers":[{"name":"ignored","image":"ignored","resources":{"limits":{"nvidia.com/gpu":1},"requests":{"cpu":"2"}}}]}}`), &ov)
	tmpl := k8sJSONTemplate()
	tmpl["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["resources"] = map[string]any{"limits": map[string]any{"memory": "4G"}}
	r := mustRender(t, tmpl, ov, k8sTestTask(), k8sTestOptions())
	c := jget(r.Pod, "spec", "containers", 0)
	if got := jstr(jget(c, "resources")); got != `{"limits":{"memory":"4G","nvidia.com/gpu":1},"requests":{"cpu":"2"}}` {
		t.Errorf("resources = %s", got)
	}
	if jget(c, "image") != "nvcr.io/nvidia/pytorch:24.01-py3" || len(jget(r.Pod, "spec", "containers").([]any)) != 1 {
		t.Errorf("the overrides' containers leaked: %s", jstr(jget(r.Pod, "spec", "containers")))
	}
	if jget(r.Pod, "spec", "nodeSelector", "zone") != "a" || jget(r.Pod, "metadata", "labels", "extra") != "yes" {
		t.Errorf("overrides not merged: %s", jstr(r.Pod))
	}
	if jget(ov, "spec", "containers") == nil {
		t.Error("the overrides were modified")
	}
}

// Shell lines (the operator's, the git check, the task's setup script) run
// before the agent under bash; every "$" is doubled for the kubelet.
func TestPodRenderScript(t *testing.T) {
	task := k8sTestTask()
	task.SetupScript = "# comment\nexport A=$(echo hi)\necho ${HOME} $$\n"
	task.NeedsGit = true
	o := k8sTestOptions()
	o.Script = []string{"apt-get update", "  "}
	o.Exec = &taskOptions{fullMonitoring: true}
	r := mustRender(t, k8sJSONTemplate(), nil, task, o)
	cmd := jget(r.Pod, "spec", "containers", 0, "command").([]any)
	if len(cmd) != 3 || cmd[0] != "/bin/bash" || cmd[1] != "-c" {
		t.Fatalf("command = %s", jstr(cmd))
	}
	want := strings.Join([]string{"apt-get update", dockerGitCheck, "export A=$(echo hi)", "echo ${HOME} $$",
		"exec /clearml-agent-bin/clearml-agent execute --id " + k8sTestTaskID + " --full-monitoring"}, "\n")
	if got := k8sUnescape(cmd[2].(string)); got != want {
		t.Errorf("script =\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(cmd[2].(string), "export A=$$(echo hi)") {
		t.Errorf("$ not escaped for the kubelet: %s", cmd[2])
	}
}

// k8sUnescape is the kubelet's $(VAR) expansion with no variables: "$$" -> "$".
func k8sUnescape(s string) string { return k8sExpandLikeKubelet(s, nil) }

// k8sExpandLikeKubelet expands $(VAR) from env (unknown names stay) and
// reduces "$$" to "$", as the kubelet does to command, args and env values.
func k8sExpandLikeKubelet(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			j := strings.IndexByte(s[i+2:], ')')
			if j < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+j]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + j
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// Credentials reach the pod only from Secrets: a plain secret from the glue
// is refused, and a pod with no credentials at all is refused.
func TestPodRenderCredentials(t *testing.T) {
	task := k8sTestTask()
	o := k8sTestOptions()
	if _, err := k8sRenderPod(nil, nil, task, o); err == nil || !strings.Contains(err.Error(), "no API credentials") {
		t.Errorf("no credentials: %v", err)
	}
	for _, name := range []string{"CLEARML_API_SECRET_KEY", "CLEARML_API_ACCESS_KEY", "CLEARML_AUTH_TOKEN", "CLEARML_AGENT_GIT_PASS"} {
		bad := o
		bad.Env = append([]k8sEnv{}, o.Env...)
		bad.Env = append(bad.Env, k8sEnv{Name: name, Value: "s3cr3t"})
		if _, err := k8sRenderPod(k8sJSONTemplate(), nil, task, bad); err == nil || !strings.Contains(err.Error(), "from a Kubernetes Secret") {
			t.Errorf("plain %s: %v", name, err)
		}
	}
	// The owner's token from a per-task Secret (--use-owner-token).
	o.SecretEnv = []k8sEnv{{Name: "CLEARML_AUTH_TOKEN", Secret: "clearml-id-" + k8sTestTaskID, Key: "token"}}
	r := mustRender(t, nil, nil, task, o)
	if got := envOf(jget(r.Pod, "spec", "containers", 0))["CLEARML_AUTH_TOKEN"]; got != `{"name":"CLEARML_AUTH_TOKEN","valueFrom":{"secretKeyRef":{"key":"token","name":"clearml-id-`+k8sTestTaskID+`"}}}` {
		t.Errorf("token: %s", got)
	}
	s := k8sTaskSecret("clearml-id-x", "ns", map[string]string{"clearml-task-id": "x"}, map[string]string{"token": "tok en"})
	if jstr(s) != `{"apiVersion":"v1","data":{"token":"dG9rIGVu"},"kind":"Secret","metadata":{"labels":{"clearml-task-id":"x"},"name":"clearml-id-x","namespace":"ns"},"type":"Opaque"}` {
		t.Errorf("secret = %s", jstr(s))
	}
}

// Hostile task fields: the image is one reference, only -e/--env reach the
// environment (and not the reserved names), ids and queue names cannot
// break names or labels.
func TestPodRenderHostileTask(t *testing.T) {
	tmpl := k8sJSONTemplate()
	bad := []struct{ name, id, image, args, want string }{
		{"image with a flag", "", "--privileged", "", "not an image name: it starts with -"},
		{"image with shell", "", "ubuntu;rm", "", "not a valid image reference"},
		{"image uppercase path", "", "Ubuntu/Latest", "", "not a valid image reference"},
		{"image with a quote", "", `ubuntu"`, "", "not a valid image reference"},
		{"no image", "", "   ", "", "no container image"},
		{"bad quoting", "", "ubuntu", `-e "A=1`, "container arguments"},
		{"id with a slash", "../../etc", "ubuntu", "", "cannot name a pod"},
		{"id with a space", "a b", "ubuntu", "", "cannot name a pod"},
		{"id uppercase", "ABCDEF", "ubuntu", "", "not a valid Kubernetes name"},
		{"id too long", strings.Repeat("a", 60), "ubuntu", "", "not a valid Kubernetes name"},
	}
	for _, c := range bad {
		task := k8sTestTask()
		if c.id != "" {
			task.ID = c.id
		}
		task.Image, task.Arguments = c.image, c.args
		if _, err := k8sRenderPod(tmpl, nil, task, k8sTestOptions()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v; want %q", c.name, err, c.want)
		}
	}
	task := k8sTestTask()
	task.Image = "ubuntu:22.04 --privileged --network=host"
	task.QueueName = "evil,app=x\nfoo/bar"
	task.ParentID = "-Parent_ID.."
	task.Arguments = `-v /:/host --cap-add=SYS_ADMIN -e FOO=bar --env=OK=2 -e 'A B=1' -e CLEARML_API_HOST=http://evil ` +
		`-e CLEARML_WORKER_ID=me -e NVIDIA_VISIBLE_DEVICES=all -e CLEARML_AGENT__API__API_SERVER=http://evil -e "X=$(CLEARML_API_SECRET_KEY)" -e`
	r := mustRender(t, tmpl, nil, task, k8sTestOptions())
	c := jget(r.Pod, "spec", "containers", 0)
	if jget(c, "image") != "ubuntu:22.04" {
		t.Errorf("image = %v", jget(c, "image"))
	}
	env := envOf(c)
	want := []string{"CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_API_HOST", "FOO", "OK", "X", "CLEARML_WORKER_ID"}
	if len(env) != len(want) {
		t.Errorf("env = %v; want %v", env, want)
	}
	for _, n := range want {
		if env[n] == "" {
			t.Errorf("env %s missing: %v", n, env)
		}
	}
	if env["CLEARML_API_HOST"] != `{"name":"CLEARML_API_HOST","value":"http://glue-default:8008"}` || !strings.Contains(env["CLEARML_WORKER_ID"], "k8s-glue:1:") {
		t.Errorf("a task overrode the glue's variables: %s %s", env["CLEARML_API_HOST"], env["CLEARML_WORKER_ID"])
	}
	if env["X"] != `{"name":"X","value":"$$(CLEARML_API_SECRET_KEY)"}` {
		t.Errorf("a task's value must stay literal for the kubelet: %s", env["X"])
	}
	if got := jget(r.Pod, "metadata", "labels", "clearml-agent-queue-name"); got != "evil-app-x-foo-bar" {
		t.Errorf("queue name label = %v", got)
	}
	if got := jget(r.Pod, "metadata", "labels", "clearml-parent-task-id"); got != "parent-id" {
		t.Errorf("parent label = %v", got)
	}
	ws := strings.Join(r.Warnings, "\n")
	for _, w := range []string{`"--privileged"`, `"--network"`, `"-v"`, `"--cap-add"`, `"-e"`, `"A B"`, `"CLEARML_API_HOST"`, `"NVIDIA_VISIBLE_DEVICES"`, `"CLEARML_AGENT__API__API_SERVER"`, `"CLEARML_WORKER_ID"`} {
		if !strings.Contains(ws, w) {
			t.Errorf("warnings do not name %s:\n%s", w, ws)
		}
	}
	if strings.Contains(ws, "/host") || strings.Contains(ws, "SYS_ADMIN") || strings.Contains(ws, "evil") {
		t.Errorf("warnings carry argument values:\n%s", ws)
	}
	k8sCheckConfined(t, tmpl, r.Pod)
}

// k8sCheckConfined: outside the task container's image, command, env and
// mounts and the glue's own additions, the pod is the template.
func k8sCheckConfined(t testing.TB, tmpl, pod map[string]any) {
	t.Helper()
	spec, tspec := pod["spec"].(map[string]any), k8sCopy(tmpl)
	if tspec == nil {
		tspec = map[string]any{}
	}
	ts, _ := tspec["spec"].(map[string]any)
	for k, v := range spec {
		switch k {
		case "containers", "initContainers", "volumes", "restartPolicy":
			continue
		}
		if jstr(v) != jstr(ts[k]) {
			t.Errorf("spec.%s = %s, not the template's %s", k, jstr(v), jstr(ts[k]))
		}
	}
	c := jget(spec, "containers", 0).(map[string]any)
	tc, _ := jget(ts, "containers", 0).(map[string]any)
	for k, v := range c {
		switch k {
		case "name", "image", "command", "env", "volumeMounts", "imagePullPolicy":
			continue
		}
		if jstr(v) != jstr(tc[k]) {
			t.Errorf("container %s = %s, not the template's %s", k, jstr(v), jstr(tc[k]))
		}
	}
	for _, v := range jget(spec, "volumes").([]any) {
		if jget(v, "name") == k8sBinVolume && jstr(jget(v, "emptyDir")) != "{}" {
			t.Errorf("volume %s", jstr(v))
		}
	}
	if n := len(jget(spec, "initContainers").([]any)); n != 1+len(k8sList(ts, "initContainers")) {
		t.Errorf("%d init containers", n)
	}
}

func TestPodRenderTemplateErrors(t *testing.T) {
	cases := []struct{ tmpl, want string }{
		{`{"kind":"Job","spec":{}}`, "the glue creates Pods"},
		{`{"apiVersion":"apps/v1"}`, "apiVersion v1"},
		{`{"spec":{"restartPolicy":"Always"}}`, "restartPolicy Always"},
		{`{"spec":{"volumes":[{"name":"clearml-agent-bin","hostPath":{"path":"/"}}]}}`, "volume named clearml-agent-bin"},
		{`{"spec":{"containers":[{"volumeMounts":[{"name":"x","mountPath":"/clearml-agent-bin"}]}]}}`, "mounts something at /clearml-agent-bin"},
		{`{"spec":{"containers":[{}, {"name":"clearml-id-` + k8sTestTaskID + `"}]}}`, "has the task container's name"},
	}
	o := k8sTestOptions()
	o.SecretEnv = []k8sEnv{{Name: "CLEARML_AUTH_TOKEN", Secret: "s", Key: "k"}}
	for _, c := range cases {
		var m map[string]any
		if err := json.Unmarshal([]byte(c.tmpl), &m); err != nil {
			t.Fatal(err)
		}
		if _, err := k8sRenderPod(m, nil, k8sTestTask(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v; want %q", c.tmpl, err, c.want)
		}
	}
	bad := o
	bad.AgentImage = "clearml agent"
	if _, err := k8sRenderPod(nil, nil, k8sTestTask(), bad); err == nil || !strings.Contains(err.Error(), "agent image") {
		t.Errorf("bad agent image: %v", err)
	}
}

// Ports mode labels the pod with its slot; the image entrypoint mode and a
// binary mounted by the template add no init container.
func TestPodRenderModes(t *testing.T) {
	o := k8sTestOptions()
	o.PortsMode, o.PodNumber = true, 3
	r := mustRender(t, k8sJSONTemplate(), nil, k8sTestTask(), o)
	if got := jget(r.Pod, "metadata", "labels", "ai.clearml.agent.serial"); got != "pod-3" {
		t.Errorf("limit label = %v", got)
	}
	o.LimitPodLabel = "bad label={pod_number}"
	if _, err := k8sRenderPod(k8sJSONTemplate(), nil, k8sTestTask(), o); err == nil || !strings.Contains(err.Error(), "--limit-pod-label") {
		t.Errorf("bad limit label: %v", err)
	}

	o = k8sTestOptions()
	o.UseImageEntrypoint, o.ForcePull = true, true
	r = mustRender(t, k8sJSONTemplate(), nil, k8sTestTask(), o)
	c := jget(r.Pod, "spec", "containers", 0)
	if jget(c, "command") != nil || jget(r.Pod, "spec", "initContainers") != nil || jget(c, "imagePullPolicy") != "Always" {
		t.Errorf("image entrypoint mode: %s", jstr(r.Pod))
	}
	if envOf(c)["CLEARML_TASK_ID"] == "" {
		t.Error("CLEARML_TASK_ID missing in image entrypoint mode")
	}

	o = k8sTestOptions()
	o.AgentPath, o.AgentImage = "/opt/clearml/clearml-agent", ""
	r = mustRender(t, k8sJSONTemplate(), nil, k8sTestTask(), o)
	if jget(r.Pod, "spec", "initContainers") != nil || jget(r.Pod, "spec", "containers", 0, "command", 0) != "/opt/clearml/clearml-agent" {
		t.Errorf("agent path mode: %s", jstr(r.Pod))
	}
}

// Label values as the reference's _safe_k8s_label_value makes them, without
// its trailing '-' after the cut at 63.
func TestPodLabelValue(t *testing.T) {
	cases := map[string]string{
		"default":                      "default",
		"GPU Queue #1":                 "gpu-queue-1",
		"__a__b__":                     "a-b",
		"a.b_c":                        "a-b-c",
		"évian":                        "vian",
		"":                             "",
		"!!!":                          "",
		strings.Repeat("a", 62) + "_b": strings.Repeat("a", 62),
	}
	for in, want := range cases {
		if got := k8sLabelValue(in); got != want || !k8sIsLabelValue(got) {
			t.Errorf("k8sLabelValue(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestPodImageReferences(t *testing.T) {
	good := []string{"ubuntu", "ubuntu:22.04", "nvidia/cuda:12.2.0-runtime-ubuntu22.04", "localhost:5000/a/b:c",
		"registry.example.com/team/img@sha256:" + strings.Repeat("ab", 32), "a__b", "a--b.c_d:TAG_1.0", "clearml-agent:local"}
	bad := []string{"", "Ubuntu", "-it", "ubuntu:", "ubuntu latest", "ubuntu;ls", "ubuntu:tag:tag", "/abs", "a/", "a//b",
		"ubuntu@sha256:short", "ubuntu\n", "$(x)", strings.Repeat("a", 600)}
	for _, g := range good {
		if err := k8sValidImage(g); err != nil {
			t.Errorf("%q refused: %v", g, err)
		}
	}
	for _, b := range bad {
		if err := k8sValidImage(b); err == nil {
			t.Errorf("%q accepted", b)
		}
	}
}

// Templates: YAML without kind (as the chart writes it) through kubectl (which
// leaves an empty labels map), JSON directly; several objects or broken YAML
// are one-line errors.
func TestPodLoadTemplate(t *testing.T) {
	needKubectl(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m, err := k8sLoadTemplate(write("a.yaml", "metadata:\n  namespace: x\nspec:\n  containers:\n  - resources:\n      limits: {cpu: 1000m, memory: 4G}\n  restartPolicy: Never\n"))
	if err != nil || jstr(m) != `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{},"namespace":"x"},"spec":{"containers":[{"resources":{"limits":{"cpu":"1000m","memory":"4G"}}}],"restartPolicy":"Never"}}` {
		t.Errorf("yaml: %s %v", jstr(m), err)
	}
	m, err = k8sLoadTemplate(write("b.json", `{"spec":{"containers":[{"ports":[{"containerPort":10022}]}]}}`))
	if err != nil || jstr(m) != `{"spec":{"containers":[{"ports":[{"containerPort":10022}]}]}}` {
		t.Errorf("json: %s %v", jstr(m), err)
	}
	t.Setenv("K8S_TEST_DIR", dir)
	if m, err = k8sLoadTemplate("$K8S_TEST_DIR/a.yaml"); err != nil || jget(m, "metadata", "namespace") != "x" {
		t.Errorf("$VAR in the path: %v", err)
	}
	for name, body := range map[string]string{
		"two.yaml":    "kind: Pod\napiVersion: v1\n---\nkind: Pod\napiVersion: v1\n",
		"broken.yaml": "spec: [\n",
		"job.yaml":    "kind: Job\napiVersion: batch/v1\nspec: {}\n",
	} {
		_, err := k8sLoadTemplate(write(name, body))
		if name == "job.yaml" {
			continue // parses; k8sRenderPod refuses the kind
		}
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := k8sLoadTemplate(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

// The init container's command copies the running binary.
func TestPodInstallBinary(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "clearml-agent")
	if err := k8sInstallBinaryTo(dst); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	a, _ := os.ReadFile(self)
	b, _ := os.ReadFile(dst)
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o755 || len(a) == 0 || string(a) != string(b) {
		t.Errorf("copy differs or mode %v: %v", st.Mode(), err)
	}
	r := runAgent(t, nil, "k8s-install-binary")
	oneErrorLine(t, r, "--target")
	if r.code != 2 {
		t.Errorf("exit %d", r.code)
	}
	if err := k8sInstallBinaryTo(filepath.Join(t.TempDir(), "no", "dir", "x")); err == nil || !strings.Contains(err.Error(), "writable volume") {
		t.Errorf("missing folder: %v", err)
	}
}

// FuzzK8sPod: whatever a task holds, a rendered pod keeps to the template,
// names and labels are valid, and the image is one reference.
func FuzzK8sPod(f *testing.F) {
	f.Add(k8sTestTaskID, "ubuntu:22.04 --privileged", "-e A=1 -v /:/host", "GPU #1", "p", "echo $(x)")
	f.Add("x", "Ubuntu", "--env=B=$(SECRET)", "a,b=c", "-", "")
	f.Add("abc", "a/b@sha256:"+strings.Repeat("0", 64), "-e", "\n", "Parent", "exit 1")
	tmpl := k8sJSONTemplate()
	tmpl["spec"].(map[string]any)["securityContext"] = map[string]any{"runAsNonRoot": true}
	f.Fuzz(func(t *testing.T, id, image, args, queue, parent, setup string) {
		task := k8sTask{ID: id, Image: image, Arguments: args, QueueName: queue, QueueID: queue, ParentID: parent, SetupScript: setup}
		r, err := k8sRenderPod(tmpl, nil, task, k8sTestOptions())
		if err != nil {
			return
		}
		if _, err := json.Marshal(r.Pod); err != nil {
			t.Fatal(err)
		}
		if !k8sIsDNSLabel(r.Name) || k8sValidImage(jget(r.Pod, "spec", "containers", 0, "image").(string)) != nil {
			t.Fatalf("name %q image %v", r.Name, jget(r.Pod, "spec", "containers", 0, "image"))
		}
		for k, v := range jget(r.Pod, "metadata", "labels").(map[string]any) {
			if !k8sIsLabelKey(k) || !k8sIsLabelValue(v.(string)) {
				t.Fatalf("label %q=%q", k, v)
			}
		}
		for _, e := range jget(r.Pod, "spec", "containers", 0, "env").([]any) {
			if n := jget(e, "name").(string); !k8sEnvName().MatchString(n) {
				t.Fatalf("env name %q", n)
			}
		}
		k8sCheckConfined(t, tmpl, r.Pod)
	})
}
