package main

// Tests named TestK8s* run against a real Kubernetes API server (kube-apiserver,
// kube-scheduler and kwok, a simulated kubelet): .ci/run starts one with
// testdata/k8s/with-cluster.sh and runs `go test -run '^TestK8s' .` under it;
// the main `go test` run skips them (-skip '^TestK8s'). Without a cluster they
// skip with a message, and fail when CI=true.
//
//   bash ../shared/k8s/build.sh                       # once per machine (~10 min)
//   testdata/k8s/with-cluster.sh go test -count=1 -run '^TestK8s' .

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	k8sClusterOnce sync.Once
	k8sClusterMiss string // why there is no cluster; "" when there is one
)

// needK8s skips (fails on CI) unless KUBECONFIG names a cluster that answers.
func needK8s(t testing.TB) {
	t.Helper()
	k8sClusterOnce.Do(func() { k8sClusterMiss = k8sProbeCluster() })
	if k8sClusterMiss == "" {
		return
	}
	msg := k8sClusterMiss + "; run the Kubernetes tests under testdata/k8s/with-cluster.sh (after bash ../shared/k8s/build.sh)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (on CI they must run: .ci/run starts the cluster)")
	}
	t.Skip(msg)
}

func k8sProbeCluster() string {
	if os.Getenv("KUBECONFIG") == "" {
		return "no Kubernetes cluster (KUBECONFIG is not set)"
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		return "kubectl is not on PATH"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", "get", "--raw=/readyz").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		return fmt.Sprintf("the API server of KUBECONFIG=%s does not answer /readyz (%v: %s)", os.Getenv("KUBECONFIG"), err, oneLine(string(out)))
	}
	return ""
}

// kubectlT runs kubectl with stdin and returns stdout; stderr goes into the error.
func kubectlT(t testing.TB, stdin []byte, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// k8sTestNamespace creates a namespace of its own for the test (with labels,
// e.g. a Pod Security level). Namespaces are never deleted: without a
// controller-manager they would stay Terminating, and the cluster is thrown away.
func k8sTestNamespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := "clearml-test-" + hex.EncodeToString(b[:])
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name, "labels": labels}}
	data, _ := json.Marshal(ns)
	if _, err := kubectlT(t, data, "create", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	return name
}

// k8sServerDryRun sends the object through the API server's validation and
// admission without storing it, and returns what the server would store.
func k8sServerDryRun(t testing.TB, obj map[string]any) (map[string]any, error) {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	out, err := kubectlT(t, data, "create", "--dry-run=server", "-o", "json", "-f", "-")
	if err != nil {
		return nil, err
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("kubectl output: %v\n%s", err, out)
	}
	return got, nil
}

func TestK8sClusterAnswers(t *testing.T) {
	needK8s(t)
	out, err := kubectlT(t, nil, "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kwok-node-0") {
		t.Errorf("nodes = %q; want the fake node kwok-node-0 of with-cluster.sh", out)
	}
}
