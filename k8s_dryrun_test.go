package main

// Rendered pods through the real API server (validation and admission, server
// dry-run: nothing is stored), and the kwok stages the glue's tests use.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// k8sDryRunPod renders and sends the pod to the server, in namespace ns.
func k8sDryRunPod(t *testing.T, tmpl, ov map[string]any, task k8sTask, o k8sPodOptions, ns string) (*k8sRendered, map[string]any, error) {
	t.Helper()
	r := mustRender(t, tmpl, ov, task, o)
	r.Pod["metadata"].(map[string]any)["namespace"] = ns
	got, err := k8sServerDryRun(t, r.Pod)
	return r, got, err
}

// The chart's template and the other modes make pods the API server accepts,
// and it stores what the glue rendered.
func TestK8sPodServerDryRun(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	withScript := k8sTestTask()
	withScript.SetupScript, withScript.NeedsGit = "export A=$(echo 1)\necho $HOME", true
	entry := k8sTestOptions()
	entry.UseImageEntrypoint, entry.ForcePull = true, true
	ports := k8sTestOptions()
	ports.PortsMode, ports.PodNumber = true, 7
	mounted := k8sTestOptions()
	mounted.AgentPath, mounted.AgentImage = "/opt/agent/clearml-agent", ""
	owner := k8sTestOptions()
	owner.SecretEnv = []k8sEnv{{Name: "CLEARML_AUTH_TOKEN", Secret: "clearml-id-" + k8sTestTaskID, Key: "token"}}
	var ov map[string]any
	json.Unmarshal([]byte(`{"spec":{"containers":[{"resources":{"limits":{"nvidia.com/gpu":1}}}],"nodeSelector":{"zone":"a"}}}`), &ov)
	cases := []struct {
		name       string
		tmpl, ov   map[string]any
		task       k8sTask
		o          k8sPodOptions
		wantInit   bool
		wantShell  bool
		wantNoCmd  bool
		wantLimits string
	}{
		{"chart template", k8sChartTemplate(t), nil, k8sTestTask(), k8sTestOptions(), true, false, false, `{"memory":"1Gi"}`},
		{"overrides", k8sJSONTemplate(), ov, k8sTestTask(), k8sTestOptions(), true, false, false, `{"nvidia.com/gpu":"1"}`},
		{"setup script", k8sJSONTemplate(), nil, withScript, k8sTestOptions(), true, true, false, ""},
		{"image entrypoint", k8sJSONTemplate(), nil, k8sTestTask(), entry, false, false, true, ""},
		{"ports mode", k8sJSONTemplate(), nil, k8sTestTask(), ports, true, false, false, ""},
		{"binary mounted by the template", k8sJSONTemplate(), nil, k8sTestTask(), mounted, false, false, false, ""},
		{"owner token, no template", nil, nil, k8sTestTask(), owner, true, false, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, got, err := k8sDryRunPod(t, c.tmpl, c.ov, c.task, c.o, ns)
			if err != nil {
				t.Fatalf("the API server refused the pod: %v\n%s", err, jstr(r.Pod))
			}
			gc, rc := jget(got, "spec", "containers", 0), jget(r.Pod, "spec", "containers", 0)
			for _, k := range []string{"name", "image", "command", "env", "volumeMounts"} {
				if jstr(jget(gc, k)) != jstr(jget(rc, k)) {
					t.Errorf("stored %s = %s; rendered %s", k, jstr(jget(gc, k)), jstr(jget(rc, k)))
				}
			}
			if jstr(jget(got, "metadata", "labels")) != jstr(jget(r.Pod, "metadata", "labels")) {
				t.Errorf("labels: %s", jstr(jget(got, "metadata", "labels")))
			}
			if (jget(got, "spec", "initContainers") != nil) != c.wantInit {
				t.Errorf("init containers: %s", jstr(jget(got, "spec", "initContainers")))
			}
			if (jget(gc, "command", 0) == "/bin/bash") != c.wantShell || (jget(gc, "command") == nil) != c.wantNoCmd {
				t.Errorf("command: %s", jstr(jget(gc, "command")))
			}
			if c.wantLimits != "" && jstr(jget(gc, "resources", "limits")) != c.wantLimits {
				t.Errorf("limits = %s; want %s", jstr(jget(gc, "resources", "limits")), c.wantLimits)
			}
			if jget(got, "spec", "restartPolicy") != "Never" {
				t.Errorf("restartPolicy %v", jget(got, "spec", "restartPolicy"))
			}
		})
	}
}

// Hostile task fields: every pod the renderer accepts, the API server accepts
// too, and it holds nothing of the task outside the task container.
func TestK8sPodHostileTasks(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	tmpl := k8sChartTemplate(t)
	tasks := []k8sTask{
		{Image: "ubuntu --privileged -v /:/host", Arguments: "-e A=1 --pid=host --env=B=$(CLEARML_API_SECRET_KEY) -e 'C=x y' -e NVIDIA_VISIBLE_DEVICES=all"},
		{Image: "a.b:5000/c/d_e--f:TAG_1@sha256:" + strings.Repeat("f", 64), QueueName: strings.Repeat("Q ", 80), ParentID: "..x.."},
		{Image: "ubuntu", SetupScript: "#!/bin/bash\ncat <<'EOF'\n$(CLEARML_API_SECRET_KEY)\nEOF\nexit 0\n", QueueName: "évian,a=b/c"},
		{Image: "ubuntu", Arguments: `-e "` + strings.Repeat("x", 5000) + `=1" -e LONG=` + strings.Repeat("v", 20000)},
	}
	for i, task := range tasks {
		task.ID = fmt.Sprintf("%031x%d", i, i)
		r, got, err := k8sDryRunPod(t, tmpl, nil, task, k8sTestOptions(), ns)
		if err != nil {
			t.Errorf("task %d: the API server refused a rendered pod: %v", i, err)
			continue
		}
		k8sCheckConfined(t, tmpl, r.Pod)
		sc := jget(got, "spec", "containers", 0, "securityContext")
		if jstr(sc) != "{}" || jget(got, "spec", "hostPID") != nil || jget(got, "spec", "hostNetwork") != nil {
			t.Errorf("task %d: securityContext %s hostPID %v hostNetwork %v", i, jstr(sc), jget(got, "spec", "hostPID"), jget(got, "spec", "hostNetwork"))
		}
		for _, v := range jget(got, "spec", "volumes").([]any) {
			if jget(v, "hostPath") != nil {
				t.Errorf("task %d: hostPath volume %s", i, jstr(v))
			}
		}
	}
}

// A namespace that enforces the "restricted" Pod Security Standard admits the
// pod when the template's own containers comply: the glue's init container does.
func TestK8sPodRestrictedNamespace(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	tmpl := k8sJSONTemplate()
	if _, _, err := k8sDryRunPod(t, tmpl, nil, k8sTestTask(), k8sTestOptions(), ns); err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Fatalf("a non-compliant task container was admitted (is Pod Security admission on?): %v", err)
	}
	spec := tmpl["spec"].(map[string]any)
	spec["securityContext"] = map[string]any{"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	spec["containers"].([]any)[0].(map[string]any)["securityContext"] = map[string]any{
		"allowPrivilegeEscalation": false, "capabilities": map[string]any{"drop": []any{"ALL"}}}
	if r, _, err := k8sDryRunPod(t, tmpl, nil, k8sTestTask(), k8sTestOptions(), ns); err != nil {
		t.Fatalf("restricted namespace refused the pod: %v\n%s", err, jstr(r.Pod))
	}
}

// The per-task Secret of --use-owner-token is a valid object.
func TestK8sTaskSecretDryRun(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	s := k8sTaskSecret("clearml-id-"+k8sTestTaskID, ns, k8sLabels(k8sTestTask(), k8sTestOptions()), map[string]string{"token": "a.b.c"})
	got, err := k8sServerDryRun(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if jget(got, "data", "token") != "YS5iLmM=" {
		t.Errorf("stored %s", jstr(got))
	}
}

// kwokPod is a pod for the fake node with an outcome annotation.
func kwokPod(name, outcome string) map[string]any {
	ann := map[string]any{"kwok.clearml.ai/delay": "1s"}
	if outcome != "" {
		ann["kwok.clearml.ai/outcome"] = outcome
	}
	return map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "annotations": ann},
		"spec": map[string]any{"restartPolicy": "Never", "nodeSelector": map[string]any{"type": "kwok"},
			"containers": []any{map[string]any{"name": "task", "image": "example.com/task:1"}}}}
}

// waitPod polls the pod until cond holds.
func waitPod(t *testing.T, ns, name string, timeout time.Duration, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var pod map[string]any
	for time.Now().Before(deadline) {
		out, err := kubectlT(t, nil, "get", "pod", "-n", ns, name, "-o", "json")
		if err == nil {
			pod = nil
			json.Unmarshal([]byte(out), &pod)
			if cond(pod) {
				return pod
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("pod %s: condition not met in %s (are testdata/k8s/kwok-outcomes.yaml's stages loaded? run under testdata/k8s/with-cluster.sh); last:\n%s", name, timeout, jstr(jget(pod, "status")))
	return nil
}

// The kwok stages: exit 0 (the shared stage), exit 1, OOM kill, eviction, and
// an image that cannot be pulled (Pending, for good).
func TestK8sKwokOutcomes(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	cases := []struct{ outcome, phase, reason, podReason string }{
		{"", "Succeeded", "Completed", ""},
		{"fail", "Failed", "Error", ""},
		{"oom", "Failed", "OOMKilled", ""},
		{"evict", "Failed", "Error", "Evicted"},
	}
	for _, c := range cases {
		name := "outcome-" + c.outcome
		if c.outcome == "" {
			name += "none"
		}
		data, _ := json.Marshal(kwokPod(name, c.outcome))
		if _, err := kubectlT(t, data, "create", "-n", ns, "-f", "-"); err != nil {
			t.Fatal(err)
		}
		defer kubectlT(t, nil, "delete", "pod", "-n", ns, name, "--wait=false")
	}
	for _, c := range cases {
		name := "outcome-" + c.outcome
		if c.outcome == "" {
			name += "none"
		}
		pod := waitPod(t, ns, name, 30*time.Second, func(p map[string]any) bool {
			ph := jget(p, "status", "phase")
			return ph == "Succeeded" || ph == "Failed"
		})
		if ph := jget(pod, "status", "phase"); ph != c.phase {
			t.Errorf("%s: phase %v, want %s (are testdata/k8s/kwok-outcomes.yaml's stages loaded? run under testdata/k8s/with-cluster.sh)", name, ph, c.phase)
		}
		term := jget(pod, "status", "containerStatuses", 0, "state", "terminated")
		wantCode := map[string]float64{"": 0, "fail": 1, "oom": 137, "evict": 137}[c.outcome]
		if jget(term, "reason") != c.reason || jget(term, "exitCode") != wantCode || jget(pod, "status", "reason") != nilIfEmpty(c.podReason) {
			t.Errorf("%s: terminated %s, pod reason %v", name, jstr(term), jget(pod, "status", "reason"))
		}
	}
	data, _ := json.Marshal(kwokPod("outcome-pull", "image-pull-error"))
	if _, err := kubectlT(t, data, "create", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	defer kubectlT(t, nil, "delete", "pod", "-n", ns, "outcome-pull", "--wait=false")
	first := waitPod(t, ns, "outcome-pull", 30*time.Second, func(p map[string]any) bool {
		return jget(p, "status", "containerStatuses", 0, "state", "waiting", "reason") == "ImagePullBackOff"
	})
	time.Sleep(3 * time.Second)
	pod := waitPod(t, ns, "outcome-pull", time.Second, func(map[string]any) bool { return true })
	if jget(pod, "status", "phase") != "Pending" || jget(pod, "status", "containerStatuses", 0, "state", "waiting", "reason") != "ImagePullBackOff" {
		t.Errorf("the image pull error did not last: %s", jstr(jget(pod, "status")))
	}
	// The stage matches its own result again: it must be a no-op, not a loop of updates.
	if a, b := jget(first, "metadata", "resourceVersion"), jget(pod, "metadata", "resourceVersion"); a != b {
		t.Errorf("the pod keeps changing (resourceVersion %v -> %v)", a, b)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// deploy/k8s-rbac.yaml lets the glue's account do what the glue does, and no more.
func TestK8sRBACRole(t *testing.T) {
	needK8s(t)
	ns := k8sTestNamespace(t, nil)
	data, err := os.ReadFile(filepath.Join("deploy", "k8s-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubectlT(t, []byte(strings.ReplaceAll(string(data), "namespace: clearml", "namespace: "+ns)), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	as := "--as=system:serviceaccount:" + ns + ":clearml-agent"
	can := func(verb, resource, namespace string) bool {
		args := []string{"auth", "can-i", as, verb, resource, "-n", namespace}
		if res, sub, ok := strings.Cut(resource, "/"); ok {
			args[4] = res
			args = append(args, "--subresource="+sub)
		}
		out, _ := kubectlT(t, nil, args...)
		return strings.TrimSpace(out) == "yes"
	}
	for _, c := range []struct{ verb, res string }{{"create", "pods"}, {"list", "pods"}, {"get", "pods"}, {"delete", "pods"}, {"watch", "pods"}, {"create", "secrets"}, {"delete", "secrets"}} {
		if !can(c.verb, c.res, ns) {
			t.Errorf("the glue's account cannot %s %s", c.verb, c.res)
		}
	}
	for _, c := range []struct{ verb, res, ns string }{{"get", "secrets", ns}, {"list", "secrets", ns}, {"create", "pods/exec", ns}, {"create", "pods", "default"}, {"list", "nodes", ns}, {"patch", "pods", ns}} {
		if can(c.verb, c.res, c.ns) {
			t.Errorf("the glue's account can %s %s in %s", c.verb, c.res, c.ns)
		}
	}
	// A rendered pod, created as the glue's account (server dry-run).
	r := mustRender(t, k8sJSONTemplate(), nil, k8sTestTask(), k8sTestOptions())
	r.Pod["metadata"].(map[string]any)["namespace"] = ns
	pod, _ := json.Marshal(r.Pod)
	if _, err := kubectlT(t, pod, "create", as, "--dry-run=server", "-f", "-"); err != nil {
		t.Errorf("create as the glue's account: %v", err)
	}
}
