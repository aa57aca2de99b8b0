package main

// The task as the server stores it, the calls that read it, and the only
// code that changes its status.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// taskDoc holds the task fields execute reads (agent-execute.md §1).
type taskDoc struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	StatusMessage string `json:"status_message"`
	Project       string `json:"project"`
	LastWorker    string `json:"last_worker"` // the worker that last reported running it
	LastUpdate    string `json:"last_update"`
	Script        struct {
		Repository   string         `json:"repository"`
		Branch       string         `json:"branch"`
		VersionNum   string         `json:"version_num"`
		Tag          string         `json:"tag"`
		EntryPoint   string         `json:"entry_point"`
		WorkingDir   string         `json:"working_dir"`
		Diff         string         `json:"diff"`
		Binary       string         `json:"binary"`
		Requirements map[string]any `json:"requirements"`
	} `json:"script"`
	Container struct {
		Image            string `json:"image"`
		Arguments        string `json:"arguments"`
		SetupShellScript string `json:"setup_shell_script"`
	} `json:"container"`
	Execution struct {
		Queue     string `json:"queue"`
		DockerCmd string `json:"docker_cmd"`
	} `json:"execution"`
}

// requirementLines returns script.requirements[key] as lines: the server
// stores either one string or a list of strings.
func (t *taskDoc) requirementLines(key string) ([]string, bool) {
	v, ok := t.Script.Requirements[key]
	if !ok || v == nil {
		return nil, false
	}
	var lines []string
	switch x := v.(type) {
	case string:
		lines = strings.Split(x, "\n")
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				lines = append(lines, strings.Split(s, "\n")...)
			}
		}
	default:
		return nil, false
	}
	var out []string
	for _, l := range lines {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out, true
}

// idPattern is what the reference takes for an id rather than a name.
var idPattern = lazyRegexp(`^[-a-f0-9]{30,}$`)

// plainIDPattern is what an id from the server must be before it names a
// folder or a worker: real ids are uuid4().hex (32 hex digits); anything
// else that is not a plain token ("", ".", "..", "a/b", NUL) could make
// the task folder agent.venvs_dir itself, or a path outside it.
var plainIDPattern = lazyRegexp(`^[A-Za-z0-9_-]{1,128}$`)

// checkPlainID refuses an id (kind: "task", "queue") that is not a plain token.
func checkPlainID(kind, id string) error {
	if plainIDPattern().MatchString(id) {
		return nil
	}
	return fmt.Errorf("the server gave a %s id %q that is not a plain token (letters, digits, '-', '_'): refusing to use it in a file path or worker id; check the %s on the server", kind, id, kind)
}

// notFoundError: no task or queue has that name.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

// resolveName turns a task or queue name into its id (service is "tasks"
// or "queues"); ids pass through unchecked, as in the reference.
func resolveName(ctx context.Context, c *apiClient, service, nameOrID string) (string, error) {
	if idPattern().MatchString(nameOrID) {
		return nameOrID, nil
	}
	var r struct {
		Tasks  []struct{ ID, Name string } `json:"tasks"`
		Queues []struct{ ID, Name string } `json:"queues"`
	}
	req := map[string]any{"name": regexp.QuoteMeta(nameOrID), "only_fields": []string{"name", "id"}}
	if err := c.call(ctx, service+".get_all", "2.5", req, &r); err != nil {
		return "", err
	}
	found := r.Tasks
	if service == "queues" {
		found = r.Queues
	}
	kind := strings.TrimSuffix(service, "s")
	var ids []string
	for _, f := range found {
		if strings.EqualFold(f.Name, nameOrID) {
			ids = append(ids, f.ID)
		}
	}
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		hint := "check the name, or pass the id"
		if service == "queues" {
			if near := nearQueueNames(ctx, c, nameOrID); len(near) > 0 {
				hint = "did you mean " + strings.Join(near, " or ") + "?"
			}
		}
		return "", &notFoundError{fmt.Sprintf("could not find %s with name/id %q (%s)", kind, nameOrID, hint)}
	}
	return "", fmt.Errorf("found multiple %ss with name %q: %s (pass the id instead)", kind, nameOrID, strings.Join(ids, ", "))
}

// findTask fetches the task an --id value names: an id, or a name.
func findTask(ctx context.Context, c *apiClient, nameOrID string) (*taskDoc, error) {
	id, err := resolveName(ctx, c, "tasks", nameOrID)
	if err != nil {
		return nil, err
	}
	return getTask(ctx, c, id)
}

// getTask fetches a task with tasks.get_by_id at v2.5, as the reference.
// The id must be a plain token (checkPlainID): it names the task's folder.
func getTask(ctx context.Context, c *apiClient, id string) (*taskDoc, error) {
	if err := checkPlainID("task", id); err != nil {
		return nil, err
	}
	var r struct {
		Task json.RawMessage `json:"task"`
	}
	if err := c.call(ctx, "tasks.get_by_id", "2.5", map[string]any{"task": id}, &r); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.is(400, 101) {
			return nil, fmt.Errorf("could not find task id=%s on %s (check --id)", id, c.host)
		}
		return nil, err
	}
	var t taskDoc
	if err := json.Unmarshal(r.Task, &t); err != nil {
		return nil, fmt.Errorf("tasks.get_by_id: cannot read the task: %v", err)
	}
	// The task's id names its folder: it must be the one asked for.
	if t.ID != id {
		return nil, fmt.Errorf("tasks.get_by_id for task %s answered with task id %q; is api.api_server the ClearML API server?", id, t.ID)
	}
	return &t, nil
}

// setTaskCommit records the commit a task without one ran from.
func setTaskCommit(ctx context.Context, c *apiClient, taskID, commit string) error {
	return c.call(ctx, "tasks.edit", "2.5", map[string]any{"task": taskID, "script": map[string]any{"version_num": commit}, "force": true}, nil)
}

// setTaskRequirements stores the installed packages on the task, keeping
// the original lists once in org_pip/org_conda, as the reference does.
func setTaskRequirements(ctx context.Context, c *apiClient, t *taskDoc, frozen []string) error {
	return c.call(ctx, "tasks.set_requirements", "2.5", venvSetRequirementsBody(t.ID, t.Script.Requirements, frozen), nil)
}

// taskEnvironmentParams reads the task's hyper-parameters of section
// "Environment" as variables (names that cannot be variables are skipped).
func taskEnvironmentParams(ctx context.Context, c *apiClient, taskID string) (map[string]string, error) {
	var r struct {
		Params []struct {
			Hyperparams []struct {
				Section string `json:"section"`
				Name    string `json:"name"`
				Value   any    `json:"value"`
			} `json:"hyperparams"`
		} `json:"params"`
	}
	if err := c.call(ctx, "tasks.get_hyper_params", "2.9", map[string]any{"tasks": []string{taskID}}, &r); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range r.Params {
		for _, h := range p.Hyperparams {
			if h.Section == "Environment" && h.Name != "" && !strings.ContainsAny(h.Name, "=\x00") {
				out[h.Name] = scalarText(h.Value)
			}
		}
	}
	return out, nil
}

// taskRuntime reads a task's runtime properties.
func taskRuntime(ctx context.Context, c *apiClient, taskID string) (map[string]any, error) {
	var r struct {
		Tasks []struct {
			Runtime map[string]any `json:"runtime"`
		} `json:"tasks"`
	}
	err := c.call(ctx, "tasks.get_all", "2.15", map[string]any{"id": []string{taskID}, "only_fields": []string{"runtime"}, "search_hidden": true}, &r)
	if err != nil || len(r.Tasks) != 1 {
		return nil, err
	}
	return r.Tasks[0].Runtime, nil
}

// statusWriter changes task statuses for one worker. It is the only code
// that does (tasks.started, stopped, failed, completed, dequeue, and
// queues.add_task to put a task back), and every change names the worker.
type statusWriter struct {
	api      *apiClient
	workerID string
}

// changedBy is the status message of the agent's changes.
func (w statusWriter) changedBy() string { return "Changed by clearml-agent " + w.workerID }

// set sends tasks.<action> (started, stopped, completed, failed).
func (w statusWriter) set(ctx context.Context, action, taskID, reason string, force bool) error {
	return w.send(ctx, action, taskID, reason, w.changedBy(), force)
}

func (w statusWriter) send(ctx context.Context, action, taskID, reason, message string, force bool) error {
	req := map[string]any{"task": taskID, "status_reason": reason, "status_message": message}
	if force {
		req["force"] = true
	}
	return w.api.call(ctx, "tasks."+action, "2.5", req, nil)
}

// dequeue takes a queued task out of its queue, in_progress, and returns
// how many entries the server updated (0: the task was not queued).
func (w statusWriter) dequeue(ctx context.Context, taskID string) (int64, error) {
	var r struct {
		Updated json.Number `json:"updated"`
	}
	err := w.api.call(ctx, "tasks.dequeue", "", map[string]any{"task": taskID, "new_status": "in_progress"}, &r)
	n, _ := r.Updated.Int64()
	if err == nil && n >= 1 {
		w.send(ctx, "started", taskID, "starting execution soon", "", true)
	}
	return n, err
}

// started marks the task execute runs as started.
func (w statusWriter) started(ctx context.Context, taskID string) error {
	return w.set(ctx, "started", taskID, "worker started execution", true)
}

// pulled marks a task the daemon took from a queue as started.
func (w statusWriter) pulled(ctx context.Context, taskID string) error {
	return w.send(ctx, "started", taskID, "", "pulled by agent", true)
}

// launched marks a task the daemon is about to start a child for.
func (w statusWriter) launched(ctx context.Context, taskID string) error {
	return w.send(ctx, "started", taskID, "", "launch by agent", true)
}

// stoppedByShutdown stops a task the daemon pulled but, shutting down,
// will not run.
func (w statusWriter) stoppedByShutdown(ctx context.Context, taskID string) error {
	return w.set(ctx, "stopped", taskID, shutdownReason, true)
}

// failOrphaned fails a task that a restarted daemon on host found
// in_progress on one of its workers with no process running it: the
// machine crashed, or daemon, child and task were killed together.
func (w statusWriter) failOrphaned(ctx context.Context, taskID, host string) error {
	reason := fmt.Sprintf("the agent on %s restarted and found this task orphaned (no local process)", host)
	return w.set(ctx, "failed", taskID, reason, true)
}

// requeue puts a task back at the end of a queue.
func (w statusWriter) requeue(ctx context.Context, queueID, taskID string) error {
	return w.api.call(ctx, "queues.add_task", "2.5", map[string]any{"queue": queueID, "task": taskID}, nil)
}

// finalStatus is what a task gets when its process exited with code:
// the console's last line, and the status action ("" for none: the task
// was stopped because a user changed its status), reason and force.
// stopReason is why the monitor stopped it; cause, why the agent did.
func finalStatus(code int, stopReason string, cause stopCause) (msg, action, reason string, force bool) {
	switch {
	case stopReason == "stopped":
		return "Process aborted by user", "stopped", "task was stopped by tasks.stop", false
	case stopReason != "":
		return "Process stopped: task " + stopReason, "", "", false
	case cause == stopShutdown:
		return "Process terminated: the agent was shut down", "stopped", shutdownReason, true
	case cause == stopDaemonDied:
		return "Process terminated: the agent daemon died", "failed", daemonDiedReason, true
	case cause == stopUser || code == -2 || code == 254:
		return "Process terminated by user", "stopped", "user abort", true
	case code == 0:
		return "Process completed successfully", "completed", "worker execution done", false
	}
	return fmt.Sprintf("Process failed, exit code %d", code), "failed", exitCodeReason(code), false
}

// The status reasons of a task the agent ended without a user asking:
// distinct from "user abort", so that the UI says what happened.
const (
	shutdownReason   = "agent shutdown: the clearml-agent running the task was stopped"
	daemonDiedReason = "the agent daemon died (killed or crashed) while the task ran; the task was ended with it"
)

// terminatedStatus is finalStatus for a run the batch system ended (a
// SLURM job's scancel, time limit or preemption, why): no user abort.
func terminatedStatus(why string) (msg, action, reason string, force bool) {
	return "Process terminated: " + why, "failed", why, true
}

// exitCodeReason is the status reason of a task whose process failed.
func exitCodeReason(code int) string { return fmt.Sprintf("worker execution exit code %d", code) }

// cloneTask makes a copy of t, "Clone of <name>", and returns its id.
func cloneTask(ctx context.Context, c *apiClient, t *taskDoc) (string, error) {
	var r struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, "tasks.clone", "2.5", map[string]any{"task": t.ID, "new_task_name": "Clone of " + t.Name}, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("cloning task %s failed: %v", t.ID, err)
	}
	return r.ID, nil
}

// leftUnfinished is the rule for a task whose process (a daemon's child
// execute, a task container) ended: the task has no final status when it
// is still in_progress, or, when the process had to claim it itself (the
// execute in a container dequeues it), still queued or created. A task
// the watcher had claimed and that is queued or created again was reset
// or enqueued anew by a user while it ran, and is left alone.
func leftUnfinished(status string, claimedBefore bool) bool {
	switch status {
	case "in_progress":
		return true
	case "queued", "created":
		return !claimedBefore
	}
	return false
}

// settleUnfinished gives a task the process left unfinished its final
// status: by cause when the agent stopped the run (see finalStatus), else
// failed with reason. It returns the action taken ("" for none) and the
// error of setting it.
func (w statusWriter) settleUnfinished(ctx context.Context, taskID string, claimedBefore bool, cause stopCause, reason string) (string, error) {
	var r struct {
		Tasks []struct {
			Status string `json:"status"`
		} `json:"tasks"`
	}
	err := w.api.call(ctx, "tasks.get_all", "2.14", map[string]any{"id": []string{taskID}, "only_fields": []string{"status"}, "search_hidden": true}, &r)
	if err != nil || len(r.Tasks) != 1 || !leftUnfinished(r.Tasks[0].Status, claimedBefore) {
		return "", nil
	}
	action := "failed"
	if cause != stopNone {
		_, action, reason, _ = finalStatus(-1, "", cause)
	}
	return action, w.set(ctx, action, taskID, reason, true)
}

// Status changes of a glue (slurm, k8s), which hands tasks to a batch system.

// The reference's status_reason of a task in a glue's pending queue.
const (
	k8sPendingReason   = "k8s pending scheduler"
	slurmPendingReason = "slurm pending scheduler"
)

// toPending moves a task the glue pulled into its pending queue, still
// queued, so the UI shows it waiting while its job waits (the reference's
// k8s_scheduler queue); its message says it waits for its jobKind job. A
// stale entry there is removed first. execution.queue follows the task
// only where the reference lets it (the basic, open-source, feature set),
// so an abort in the UI finds the entry there.
func (w statusWriter) toPending(ctx context.Context, taskID, pendingID, reason, jobKind string, updateExecQueue bool) error {
	w.removeFromQueue(ctx, pendingID, taskID)
	return w.api.call(ctx, "tasks.enqueue", "", map[string]any{"task": taskID, "queue": pendingID, "status_reason": reason,
		"status_message": "waiting for its " + jobKind + " job", "update_execution_queue": updateExecQueue}, nil)
}

// requeueFront puts a task the glue (of kind, e.g. slurm) could not submit
// back at the head of the queue it came from.
func (w statusWriter) requeueFront(ctx context.Context, queueID, taskID, kind string) error {
	err := w.api.call(ctx, "tasks.enqueue", "", map[string]any{"task": taskID, "queue": queueID, "status_reason": "returned by the " + kind + " glue",
		"status_message": w.changedBy()}, nil)
	if err == nil {
		err = w.api.call(ctx, "queues.move_task_to_front", "2.4", map[string]any{"queue": queueID, "task": taskID}, nil)
	}
	return err
}

// removeFromQueue takes a task's entry out of a queue, leaving its status;
// no entry there is no error.
func (w statusWriter) removeFromQueue(ctx context.Context, queueID, taskID string) error {
	err := w.api.call(ctx, "queues.remove_task", "2.4", map[string]any{"queue": queueID, "task": taskID}, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.is(400, 703) {
		return nil
	}
	return err
}

// jobMessage shows where a task's job (label, e.g. "SLURM job 12") stands
// (detail, e.g. "PENDING (Priority)") without changing its status. It must
// never say "stopping", the abort request.
func (w statusWriter) jobMessage(ctx context.Context, taskID, label, detail string) error {
	message := strings.ReplaceAll(label+": "+detail, "stopping", "stop pending")
	return w.api.call(ctx, "tasks.update", "", map[string]any{"task": taskID, "status_message": message}, nil)
}

// jobEnded fails a task whose job ended (or could not start) before the
// task had a final status; reason is the batch system's, e.g. "SLURM job
// 12 ended TIMEOUT (TimeLimit)".
func (w statusWriter) jobEnded(ctx context.Context, taskID, reason string) error {
	return w.set(ctx, "failed", taskID, reason, true)
}
