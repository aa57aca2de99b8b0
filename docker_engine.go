package main

// The container engine's CLI (docker, or podman with --podman): running,
// stopping and removing containers, and what the agent tells the task
// before its container starts.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// engine is the container CLI of a docker-mode run.
func (o taskOptions) engine() string {
	if o.podman.set {
		return "podman"
	}
	return "docker"
}

// dockerEngineFlags folds --podman into --docker: the image and
// arguments come from either, --podman picks the engine. Different
// containers in both is an error, as in the reference.
func dockerEngineFlags(docker, podman *listFlag) error {
	if !podman.set {
		return nil
	}
	if docker.set && len(docker.vals) > 0 && len(podman.vals) > 0 && !slices.Equal(docker.vals, podman.vals) {
		return usagef("--docker %s and --podman %s name different containers: give the image and its arguments to one of them", strings.Join(docker.vals, " "), strings.Join(podman.vals, " "))
	}
	if !docker.set || len(docker.vals) == 0 {
		docker.vals, docker.set = podman.vals, true
	}
	return nil
}

// dockerCheckGPUs is the start-up check of docker mode: on a host without
// a GPU (no NVML, no nvidia-smi, no rocm-smi, no GPU device), containers
// run without GPU flags (noGPU), which it says once on out; --gpus given
// on such a host is an error (every task would fail to start).
func dockerCheckGPUs(w workerFlags, out io.Writer) (noGPU bool, err error) {
	if w.cpuOnly || gpuHostHasGPU() {
		return false, nil
	}
	if w.gpus != "" {
		return false, &exitError{code: 1, msg: fmt.Sprintf("--gpus %s: this host has no GPU (no NVML, nvidia-smi or rocm-smi, no GPU device); drop --gpus, or pass --cpu-only", w.gpus)}
	}
	fmt.Fprintln(out, "clearml-agent: no GPU found on this host (no NVML, nvidia-smi or rocm-smi): containers run without GPU access, as with --cpu-only")
	return true, nil
}

// dockerLoggedCommand is the argv as logged: secret env values hidden,
// following agent.hide_docker_command_env_vars (enabled, extra_keys,
// parse_embedded_urls) and CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV.
func dockerLoggedCommand(cfg *agentConfig, argv []string) string {
	shown := argv
	if cfg.boolean("agent.hide_docker_command_env_vars.enabled", true) || firstEnv(cfg.env, "CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV") != "" {
		shown = dockerMaskArgs(argv, dockerHiddenNames(cfg), dockerEmbeddedURLs(cfg), nil)
	}
	q := make([]string, len(shown))
	for i, a := range shown {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// dockerCmd runs one docker client command and returns its output.
func dockerCmd(ctx context.Context, args ...string) (string, error) {
	return engineCmd(ctx, "docker", args...)
}

// engineCmd runs one command of the engine's CLI and returns its output.
func engineCmd(ctx context.Context, engine string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, engine, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", engine, args[0], err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// dockerPull pulls an image, its progress to out.
func dockerPull(ctx context.Context, engine, image string, out io.Writer) {
	pull := exec.CommandContext(ctx, engine, "pull", image)
	pull.Stdout, pull.Stderr = out, out
	pull.Run()
}

// dockerStopTask passes a stop on to the agent in a container (kill
// --signal: the image's STOPSIGNAL plays no part), which stops its task and
// sets its status; a container still running after wait is killed. done
// is closed when the container's client has exited.
func dockerStopTask(engine, name string, cause stopCause, wait time.Duration, done <-chan struct{}) {
	kill := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := engineCmd(ctx, engine, append([]string{"kill"}, append(args, name)...)...)
		return err
	}
	if err := kill("--signal", cause.signalFor()); err != nil {
		kill()
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		kill()
	}
}

// dockerRemove removes a container whatever its state; a missing one is fine.
func dockerRemove(ctx context.Context, engine, name string) {
	engineCmd(ctx, engine, "rm", "-f", name)
}

// cleanupStaleContainers removes the containers a previous run of this
// worker left behind (found by label), so a restart starts clean; those
// with a restart policy are meant to outlive it and stay.
func cleanupStaleContainers(ctx context.Context, engine, workerID string, log io.Writer) {
	out, err := engineCmd(ctx, engine, "ps", "-a", "--filter", "label="+dockerLabelParent+"="+workerID,
		"--format", `{{.ID}} {{.Label "`+dockerLabelRestart+`"}}`)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		id, restart, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if id == "" || strings.TrimSpace(restart) != "" {
			continue
		}
		if log != nil {
			fmt.Fprintf(log, "clearml-agent: removing container %s left behind by worker %s\n", id, workerID)
		}
		dockerRemove(ctx, engine, id)
	}
}

// dockerTaskLog writes lines to the task's log (c nil: local only), before
// the execute in its container starts shipping the rest.
func dockerTaskLog(c *apiClient, taskID, workerID string, local io.Writer, lines ...string) {
	if len(lines) == 0 {
		return
	}
	if c == nil {
		for _, l := range lines {
			fmt.Fprintln(local, l)
		}
		return
	}
	sh := newConsoleShipper(c, shipperOptions{taskID: taskID, worker: workerID, localCopy: local})
	for _, l := range lines {
		fmt.Fprintln(sh, l)
	}
	sh.Close(withBudget(context.Background(), time.Minute))
}

// announce tells the task what docker mode decided before its container
// starts: the notes (refused arguments, dropped mounts...) in its log
// (and local), the published ports in its runtime properties, and the
// container it runs in written back when it named none.
func (r *dockerRun) announce(c *apiClient, taskID, workerID string, local io.Writer) {
	dockerTaskLog(c, taskID, workerID, local, r.notes...)
	if c == nil {
		return
	}
	ctx := withBudget(context.Background(), 30*time.Second)
	if r.portMapping != "" {
		rt, err := taskRuntime(ctx, c, taskID)
		if err == nil {
			if rt == nil {
				rt = map[string]any{}
			}
			rt["_external_host_tcp_port_mapping"] = r.portMapping
			err = c.call(ctx, "tasks.edit", "2.13", map[string]any{"task": taskID, "runtime": rt, "force": true}, nil)
		}
		if err != nil {
			fmt.Fprintf(local, "clearml-agent: warning: could not store the port mapping on the task: %v\n", err)
		}
	}
	if r.writeBack != nil {
		if err := c.call(ctx, "tasks.edit", "2.13", map[string]any{"task": taskID, "container": r.writeBack, "force": true}, nil); err != nil {
			fmt.Fprintf(local, "clearml-agent: warning: could not write the container back to the task: %v\n", err)
		}
	}
}

// dockerPythonList renders a list as Python's repr does, for the log lines
// the reference prints.
func dockerPythonList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		b, _ := json.Marshal(s)
		q[i] = "'" + strings.ReplaceAll(strings.Trim(string(b), `"`), "'", `\'`) + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}
