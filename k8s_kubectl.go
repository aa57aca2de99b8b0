package main

// The Kubernetes glue's way to the cluster: kubectl, shelled out as the
// reference does (no client library). Objects go in on stdin, never on
// the command line; a failure is a *k8sError that says whether the API
// server refused the request (the task fails) or could not be asked (the
// glue retries).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// k8sKubectl runs kubectl.
type k8sKubectl struct {
	bin     string         // "kubectl" (from PATH)
	timeout time.Duration  // per call
	ignore  *regexp.Regexp // K8S_GLUE_IGNORE_KUBECTL_ERROR: such errors are never refusals
	debugf  func(format string, args ...any)
}

// k8sError is a kubectl command that failed.
type k8sError struct {
	args   string
	reason string // the API's reason, from "Error from server (Reason)": NotFound, Invalid, ...
	msg    string // kubectl's stderr, one line
}

func (e *k8sError) Error() string { return "kubectl " + e.args + ": " + e.msg }

var k8sServerReason = lazyRegexp(`Error from server \((\w+)\)`)

// run runs kubectl with args, stdin as its input, and returns its stdout.
func (k *k8sKubectl) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.SysProcAttr = childSysProcAttr(syscall.SIGKILL) // dies with a SIGKILLed glue
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if k.debugf != nil {
		k.debugf("kubectl %s: %v (%s)", strings.Join(args, " "), errOr(err, "ok"), time.Since(start).Round(time.Millisecond))
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	e := &k8sError{args: strings.Join(args, " "), msg: oneLine(strings.TrimSpace(stderr.String()))}
	if m := k8sServerReason().FindStringSubmatch(e.msg); m != nil {
		e.reason = m[1]
	}
	switch {
	case errors.Is(err, exec.ErrNotFound):
		e.msg = "kubectl is not on PATH; the glue needs it (see the README: the glue's image)"
	case ctx.Err() != nil:
		e.msg = fmt.Sprintf("no answer in %s", k.timeout)
	case e.msg == "":
		e.msg = err.Error()
	}
	return nil, e
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// k8sIs tells whether err is a kubectl failure with one of the API reasons.
func k8sIs(err error, reasons ...string) bool {
	var e *k8sError
	if !errors.As(err, &e) {
		return false
	}
	for _, r := range reasons {
		if e.reason == r {
			return true
		}
	}
	return false
}

// refused: the API server will not take this object, whatever the glue
// retries (invalid, forbidden by admission). Missing RBAC permissions and
// exhausted quotas are the cluster's state, not the task's: retried.
func (k *k8sKubectl) refused(err error) bool {
	var e *k8sError
	if !errors.As(err, &e) || k.ignore != nil && k.ignore.MatchString(e.msg) {
		return false
	}
	switch e.reason {
	case "Invalid", "BadRequest", "RequestEntityTooLarge", "UnsupportedMediaType":
		return true
	case "Forbidden":
		return !strings.Contains(e.msg, "exceeded quota") && !strings.Contains(e.msg, "cannot create resource")
	}
	return false
}

// k8sPod is what the glue reads of a pod.
type k8sPod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		CreationTimestamp time.Time         `json:"creationTimestamp"`
		DeletionTimestamp *time.Time        `json:"deletionTimestamp"`
	} `json:"metadata"`
	Status struct {
		Phase      string `json:"phase"`
		Reason     string `json:"reason"`
		Message    string `json:"message"`
		Conditions []struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"conditions"`
		InitContainerStatuses []k8sContainerStatus `json:"initContainerStatuses"`
		ContainerStatuses     []k8sContainerStatus `json:"containerStatuses"`
	} `json:"status"`
}

type k8sContainerStatus struct {
	Name  string `json:"name"`
	State struct {
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
		Terminated *struct {
			Reason   string `json:"reason"`
			Message  string `json:"message"`
			ExitCode int    `json:"exitCode"`
		} `json:"terminated"`
	} `json:"state"`
}

// listPods lists the pods of a namespace that match a label selector.
func (k *k8sKubectl) listPods(ctx context.Context, namespace, selector string) ([]k8sPod, error) {
	out, err := k.run(ctx, nil, "get", "pods", "--namespace", namespace, "--selector", selector, "--output", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []k8sPod `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("kubectl get pods: unreadable answer: %v", err)
	}
	return list.Items, nil
}

// create creates an object and returns what the server stored.
func (k *k8sKubectl) create(ctx context.Context, obj map[string]any) (*k8sPod, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out, err := k.run(ctx, data, "create", "--filename", "-", "--output", "json")
	if err != nil {
		return nil, err
	}
	var got k8sPod
	if err := json.Unmarshal(out, &got); err != nil || got.Metadata.UID == "" {
		return nil, fmt.Errorf("kubectl create: unreadable answer: %v", err)
	}
	return &got, nil
}

// deletePod deletes one pod, only if it is still the one with uid (a pod
// of the same name may be a later run of the task). Gone already is fine.
func (k *k8sKubectl) deletePod(ctx context.Context, namespace, name, uid string) error {
	opts, _ := json.Marshal(map[string]any{"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": map[string]any{"uid": uid}})
	f, err := os.CreateTemp("", "clearml-k8s-delete-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, err = k.run(ctx, nil, "delete", "--raw", "/api/v1/namespaces/"+namespace+"/pods/"+name, "--filename", f.Name())
	if k8sIs(err, "NotFound", "Conflict") {
		return nil
	}
	return err
}

// deleteSecret deletes the glue's Secret of a pod; absent is fine.
func (k *k8sKubectl) deleteSecret(ctx context.Context, namespace, name string) error {
	_, err := k.run(ctx, nil, "delete", "secret", name, "--namespace", namespace, "--ignore-not-found", "--wait=false")
	return err
}

// k8sJobID names a pod exactly: namespace, name and uid (a later run of
// the same task has the same name).
func k8sJobID(p *k8sPod) string {
	return p.Metadata.Namespace + "/" + p.Metadata.Name + "/" + p.Metadata.UID
}

func k8sSplitJob(job string) (namespace, name, uid string) {
	namespace, rest, _ := strings.Cut(job, "/")
	name, uid, _ = strings.Cut(rest, "/")
	return namespace, name, uid
}

// k8sPodState turns a pod's status into the glue's view: Pending pods say
// why they wait (and are fatal when a container waits for a reason in
// fatal, e.g. ImagePullBackOff), failed ones say Kubernetes' reason.
func k8sPodState(p *k8sPod, fatal []string) glueJobState {
	st := p.Status
	switch st.Phase {
	case "Running":
		if p.Metadata.DeletionTimestamp != nil {
			return glueJobState{Phase: glueRunning, Detail: "Terminating"}
		}
		return glueJobState{Phase: glueRunning, Detail: "Running"}
	case "Succeeded":
		return glueJobState{Phase: glueEnded, Detail: "Succeeded"}
	case "Failed":
		return glueJobState{Phase: glueEnded, Detail: k8sFailure(p)}
	case "Pending", "":
	default: // Unknown: the node does not report; the pod may still run
		return glueJobState{Phase: glueRunning, Detail: k8sReason(st.Phase, st.Reason)}
	}
	for _, list := range [][]k8sContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
		for _, c := range list {
			if w := c.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" {
				d := k8sReason(w.Reason, w.Message)
				for _, f := range fatal {
					if w.Reason == f {
						return glueJobState{Phase: gluePending, Detail: d, Fatal: d}
					}
				}
				return glueJobState{Phase: gluePending, Detail: d}
			}
		}
	}
	for _, c := range st.Conditions {
		if c.Type == "PodScheduled" && c.Status == "False" {
			return glueJobState{Phase: gluePending, Detail: k8sReason(firstNonEmpty(c.Reason, "Unschedulable"), c.Message)}
		}
	}
	if p.Metadata.DeletionTimestamp != nil {
		return glueJobState{Phase: gluePending, Detail: "Terminating"}
	}
	return glueJobState{Phase: gluePending, Detail: "Pending"}
}

// k8sFailure is why a Failed pod failed: the pod's reason (Evicted), else
// its task container's (OOMKilled, Error) with the exit code, else a
// failed init container's.
func k8sFailure(p *k8sPod) string {
	st := p.Status
	if st.Reason != "" {
		return k8sReason(st.Reason, st.Message)
	}
	term := func(c k8sContainerStatus) string {
		t := c.State.Terminated
		return fmt.Sprintf("%s (exit code %d)", firstNonEmpty(t.Reason, "Error"), t.ExitCode)
	}
	for _, c := range st.ContainerStatuses {
		if c.Name == p.Metadata.Name && c.State.Terminated != nil {
			return term(c)
		}
	}
	for _, c := range st.InitContainerStatuses {
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			return "init container " + c.Name + ": " + term(c)
		}
	}
	for _, c := range st.ContainerStatuses {
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			return "container " + c.Name + ": " + term(c)
		}
	}
	return "Failed"
}

func k8sReason(reason, message string) string {
	if message = oneLine(message); message != "" {
		if len(message) > 300 {
			message = message[:300] + "..."
		}
		return reason + " (" + message + ")"
	}
	return reason
}
