package main

// What the glue takes from a task into a pod, checked: the image reference,
// the environment from the container arguments, Kubernetes names and labels.

import (
	"errors"
	"fmt"
	"strings"
)

// k8sValidImage refuses anything but one image reference (docker mode's
// rule, so a task is refused the same way by both).
func k8sValidImage(ref string) error {
	if why := dockerImageRefError(ref); why != "" {
		return errors.New(why)
	}
	return nil
}

// k8sTaskImage splits the image field ("image args": the task's image was
// checked as one reference before, but a default image, like --docker's,
// may carry arguments) and the container arguments, and checks the image.
func k8sTaskImage(image, arguments string) (string, []string, error) {
	f := strings.Fields(image)
	if len(f) == 0 {
		return "", nil, fmt.Errorf("the task has no container image and no default is set; set agent.default_docker.image or CLEARML_DOCKER_IMAGE")
	}
	if err := k8sValidImage(f[0]); err != nil {
		return "", nil, fmt.Errorf("the task's container image: %v", err)
	}
	args := f[1:]
	if strings.TrimSpace(arguments) != "" {
		a, err := shlexSplit(arguments)
		if err != nil {
			return "", nil, fmt.Errorf("the task's container arguments: %v", err)
		}
		args = append(args, a...)
	}
	return f[0], args, nil
}

var k8sEnvName = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// k8sTaskEnv takes -e/--env NAME=VALUE from docker-style arguments, the only
// ones a pod can honour (the reference's rule). Skipped arguments are named in
// the warnings by their flag only: values may be secret.
func k8sTaskEnv(args []string) ([]k8sEnv, []string) {
	var env []k8sEnv
	var skipped []string
	for i := 0; i < len(args); i++ {
		a, val := args[i], ""
		switch {
		case a == "-e" || a == "--env":
			if i+1 >= len(args) {
				skipped = append(skipped, fmt.Sprintf("%q", a))
				continue
			}
			i++
			val = args[i]
		case strings.HasPrefix(a, "--env="):
			val = strings.TrimPrefix(a, "--env=")
		default:
			if strings.HasPrefix(a, "-") {
				flag, _, _ := strings.Cut(a, "=")
				skipped = append(skipped, fmt.Sprintf("%q", k8sShort(flag)))
			}
			continue
		}
		name, value, _ := strings.Cut(val, "=")
		env = append(env, k8sEnv{Name: name, Value: value})
	}
	var warn []string
	if len(skipped) > 0 {
		warn = append(warn, fmt.Sprintf("container arguments skipped (a pod takes only -e/--env NAME=VALUE): %s", strings.Join(skipped, " ")))
	}
	return env, warn
}

// k8sProtectedEnv: variables a task may not set in its pod. They carry the
// pod's identity and how it reaches the server (credentials would follow a
// redirected API host), or GPU visibility, which the device plugin owns.
func k8sProtectedEnv(name string) bool {
	n := strings.ToUpper(name)
	switch n {
	case "CLEARML_WORKER_ID", "TRAINS_WORKER_ID", "CLEARML_TASK_ID", "TRAINS_TASK_ID", "CLEARML_AUTH_TOKEN", "TRAINS_AUTH_TOKEN":
		return true
	}
	for _, p := range []string{"CLEARML_API_", "TRAINS_API_", "CLEARML_CONFIG", "TRAINS_CONFIG", "CLEARML_AGENT__API__", "TRAINS_AGENT__API__", "NVIDIA_"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// k8sCredentialEnv are names that must come from a Secret, never a plain value.
func k8sCredentialEnv(name string) bool {
	n := strings.ToUpper(name)
	return looksSecretName(n) || strings.HasSuffix(n, "_ACCESS_KEY") || strings.HasSuffix(n, "_SECRET_KEY")
}

// k8sMergeEnv sets the task container's environment: the template's, the
// glue's plain values where the template has none, the glue's Secret
// references, the task's variables (not the protected ones), and the worker id.
func k8sMergeEnv(c map[string]any, taskEnv []k8sEnv, t k8sTask, o k8sPodOptions) []string {
	var names []string
	byName := map[string]map[string]any{}
	for _, x := range k8sList(c, "env") {
		if m, ok := x.(map[string]any); ok {
			if n, _ := m["name"].(string); n != "" && byName[n] == nil {
				names = append(names, n)
				byName[n] = m
			}
		}
	}
	set := func(e k8sEnv) {
		m := map[string]any{"name": e.Name, "value": k8sEscape(e.Value)}
		if e.Secret != "" {
			m = map[string]any{"name": e.Name, "valueFrom": map[string]any{
				"secretKeyRef": map[string]any{"name": e.Secret, "key": e.Key}}}
		}
		if byName[e.Name] == nil {
			names = append(names, e.Name)
		}
		byName[e.Name] = m
	}
	glue := map[string]bool{}
	for _, e := range o.Env {
		glue[e.Name] = true
		if byName[e.Name] == nil {
			set(e)
		}
	}
	for _, e := range o.SecretEnv {
		glue[e.Name] = true
		set(e)
	}
	var refused []string
	for _, e := range taskEnv {
		if !k8sEnvName().MatchString(e.Name) || k8sProtectedEnv(e.Name) || glue[e.Name] {
			refused = append(refused, fmt.Sprintf("%q", k8sShort(e.Name)))
			continue
		}
		set(e)
	}
	if o.WorkerID != "" {
		set(k8sEnv{Name: "CLEARML_WORKER_ID", Value: o.WorkerID + ":" + t.ID})
	}
	if o.UseImageEntrypoint {
		set(k8sEnv{Name: "CLEARML_TASK_ID", Value: t.ID})
	}
	env := make([]any, len(names))
	for i, n := range names {
		env[i] = byName[n]
	}
	if len(env) > 0 {
		c["env"] = env
	}
	if len(refused) > 0 {
		return []string{fmt.Sprintf("environment variables refused (reserved or invalid names): %s", strings.Join(refused, " "))}
	}
	return nil
}

// k8sCheckOptions refuses options that would put a secret in the pod spec as
// a plain value, or name something Kubernetes cannot.
func k8sCheckOptions(o k8sPodOptions) error {
	for _, e := range o.Env {
		if k8sCredentialEnv(e.Name) {
			return fmt.Errorf("%s would be a plain value in the pod spec; pass it from a Kubernetes Secret", e.Name)
		}
		if !k8sEnvName().MatchString(e.Name) {
			return fmt.Errorf("%q is not an environment variable name", e.Name)
		}
	}
	for _, e := range o.SecretEnv {
		if !k8sEnvName().MatchString(e.Name) || !k8sIsDNSSubdomain(e.Secret) || e.Key == "" {
			return fmt.Errorf("environment variable %q from Secret %q key %q: invalid name, Secret or key", e.Name, e.Secret, e.Key)
		}
	}
	return nil
}

// k8sCheckCredentials: the task container must reach the server somehow
// (keys, a token, a config file, or whatever envFrom brings).
func k8sCheckCredentials(c map[string]any) error {
	if len(k8sList(c, "envFrom")) > 0 {
		return nil
	}
	has := map[string]bool{}
	for _, x := range k8sList(c, "env") {
		if m, ok := x.(map[string]any); ok {
			n, _ := m["name"].(string)
			has[n] = true
		}
	}
	if has["CLEARML_API_ACCESS_KEY"] && has["CLEARML_API_SECRET_KEY"] || has["TRAINS_API_ACCESS_KEY"] && has["TRAINS_API_SECRET_KEY"] ||
		has["CLEARML_AUTH_TOKEN"] || has["CLEARML_CONFIG_FILE"] || has["TRAINS_CONFIG_FILE"] {
		return nil
	}
	return fmt.Errorf("the task pod would get no API credentials: set CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY from a Secret in the pod template (valueFrom.secretKeyRef), or use --use-owner-token")
}

var (
	k8sLabelValueRe = lazyRegexp(`^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	k8sDNSLabelRe   = lazyRegexp(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`)
	k8sDNSSubRe     = lazyRegexp(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$`)
	k8sNotAlnum     = lazyRegexp(`[^a-z0-9]+`)
)

// k8sLabelValue makes a string a label value as the reference does
// (lowercase, runs of other characters become one '-', at most 63), and
// also makes sure the cut does not end on a '-'.
func k8sLabelValue(s string) string {
	v := k8sNotAlnum().ReplaceAllString(strings.ToLower(s), "-")
	v = strings.Trim(v, "-")
	if len(v) > 63 {
		v = strings.TrimRight(v[:63], "-")
	}
	return v
}

func k8sIsLabelValue(s string) bool { return len(s) <= 63 && k8sLabelValueRe().MatchString(s) }

func k8sIsDNSLabel(s string) bool { return len(s) <= 63 && k8sDNSLabelRe().MatchString(s) }

func k8sIsDNSSubdomain(s string) bool { return len(s) <= 253 && k8sDNSSubRe().MatchString(s) }

// k8sIsLabelKey: [DNS subdomain "/"] name.
func k8sIsLabelKey(s string) bool {
	prefix, name, ok := strings.Cut(s, "/")
	if !ok {
		name, prefix = s, ""
	} else if !k8sIsDNSSubdomain(prefix) {
		return false
	}
	return name != "" && k8sIsLabelValue(name)
}

// k8sShort quotes at most 60 characters of hostile text for a message.
func k8sShort(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
