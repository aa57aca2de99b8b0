package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// abortCommand is CLEARML_AGENT_ABORT_CALLBACK_CMD: a command the agent
// runs, in the task's working dir and environment, when the task is
// aborted, and gives CLEARML_AGENT_ABORT_CALLBACK_TIMEOUT seconds (default
// 180) before stopping the task, as the reference. It registers like the
// SDK's abort callback (runtime _abort_callback_timeout, _abort_poll_freq
// 10), so the wait in waitAbortCallback covers it, and reports its end
// with runtime _abort_callback_completed.
type abortCommand struct {
	argv    []string
	timeout int

	mu      sync.Mutex
	dir     string
	env     []string
	started bool
}

func newAbortCommand(env envLookup, log io.Writer) *abortCommand {
	text := firstEnv(env, "CLEARML_AGENT_ABORT_CALLBACK_CMD")
	if text == "" {
		return nil
	}
	argv, err := shlexSplit(text)
	if err != nil || len(argv) == 0 {
		fmt.Fprintf(log, "WARNING: CLEARML_AGENT_ABORT_CALLBACK_CMD %q cannot be split into a command (%v): ignored\n", text, err)
		return nil
	}
	timeout := 180
	if n, err := strconv.Atoi(firstEnv(env, "CLEARML_AGENT_ABORT_CALLBACK_TIMEOUT")); err == nil {
		timeout = n
	}
	return &abortCommand{argv: argv, timeout: timeout}
}

// register records the callback on the task before it starts, with where
// and how it will run.
func (a *abortCommand) register(ctx context.Context, api *apiClient, taskID, dir string, env []string, log io.Writer) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.dir, a.env = dir, env
	a.mu.Unlock()
	err := editTaskRuntime(ctx, api, taskID, map[string]any{
		"_abort_callback_timeout": strconv.Itoa(a.timeout), "_abort_poll_freq": "10"})
	if err != nil {
		fmt.Fprintf(log, "WARNING: failed registering bash callback: %v\n", err)
		return
	}
	fmt.Fprintf(log, "INFO: registering bash callback, timeout %ds: %s\n", a.timeout, shellJoin(a.argv))
}

// launch starts the command once (the task was aborted); when it ends,
// the task's runtime says the callback completed.
func (a *abortCommand) launch(api *apiClient, taskID string, log io.Writer) {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.started || a.dir == "" {
		a.mu.Unlock()
		return
	}
	a.started = true
	dir, env := a.dir, a.env
	a.mu.Unlock()
	fmt.Fprintf(log, "INFO: running bash on_abort callback: %s\n", shellJoin(a.argv))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.timeout+10)*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, a.argv[0], a.argv[1:]...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, log, log
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(log, "WARNING: failed running bash callback: %v\n", err)
		}
		if err := editTaskRuntime(withBudget(context.Background(), time.Minute), api, taskID, map[string]any{"_abort_callback_completed": "1"}); err != nil {
			fmt.Fprintf(log, "WARNING: failed updating bash callback completed: %v\n", err)
		}
	}()
}

// editTaskRuntime merges props into the task's runtime properties.
func editTaskRuntime(ctx context.Context, api *apiClient, taskID string, props map[string]any) error {
	var r struct {
		Tasks []struct {
			Runtime map[string]any `json:"runtime"`
		} `json:"tasks"`
	}
	if err := api.call(withBudget(ctx, 30*time.Second), "tasks.get_all", "2.13", map[string]any{
		"id": []string{taskID}, "only_fields": []string{"runtime"}, "search_hidden": true}, &r); err != nil {
		return err
	}
	runtime := map[string]any{}
	if len(r.Tasks) > 0 && r.Tasks[0].Runtime != nil {
		runtime = r.Tasks[0].Runtime
	}
	for k, v := range props {
		runtime[k] = v
	}
	return api.call(withBudget(ctx, 30*time.Second), "tasks.edit", "2.13", map[string]any{"task": taskID, "runtime": runtime, "force": true}, nil)
}
