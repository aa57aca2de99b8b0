package main

// At start, a daemon fails the tasks a previous run of its worker left
// in_progress: after a crash of the whole machine (daemon, child and task
// killed together) nothing else would ever end them.

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// failOrphans fails the tasks the server shows in_progress on one of this
// daemon's workers (owns) that no process on this host runs, and that no
// other live agent of this host (its pid files) reports for.
func (s *scheduler) failOrphans(ctx context.Context, owns func(workerID string) bool, reg *instanceRegistry) {
	tasks, err := inProgressTasks(ctx, s.api)
	if err != nil {
		s.logf("Warning: could not look for tasks a previous run of this worker left in_progress: %v", err)
		return
	}
	others := map[string]bool{}
	if reg != nil {
		live, _ := reg.list()
		for _, in := range live {
			if in.PID != os.Getpid() {
				others[in.WorkerID] = true
			}
		}
	}
	var running map[string]bool
	host, _ := os.Hostname()
	for _, t := range tasks {
		if t.LastWorker == "" || !owns(t.LastWorker) || others[t.LastWorker] {
			continue
		}
		if running == nil {
			running = localTaskRuns()
		}
		if running[t.ID] {
			continue // its execute still runs here, and will set its status
		}
		s.logf("Task %s is in_progress on worker %s, but no process on this host runs it: marking it failed", t.ID, t.LastWorker)
		if err := s.status().failOrphaned(withBudget(ctx, 30*time.Second), t.ID, host); err != nil {
			s.logf("Warning: could not mark task %s failed: %v", t.ID, err)
		}
	}
}

// ownsWorker says whether a task's last worker is this daemon's: its own
// id, a services-mode child's (<id>:service:<task>), or with
// --dynamic-gpus a child's on GPUs of its pool (<name>:gpu<devices>).
func ownsWorker(daemonID, name string, pool []string) func(string) bool {
	return func(w string) bool {
		if w == daemonID || strings.HasPrefix(w, daemonID+":service:") {
			return true
		}
		devs, ok := gpuWorkerDevices(name, w)
		if !ok || len(pool) == 0 || devs == "" {
			return false
		}
		for _, d := range strings.Split(devs, ",") {
			if !slices.Contains(pool, strings.ReplaceAll(d, ".", ":")) {
				return false
			}
		}
		return true
	}
}

// inProgressTasks lists the in_progress tasks (id and last worker), page
// by page so no reply grows with the size of the server.
func inProgressTasks(ctx context.Context, c *apiClient) ([]taskDoc, error) {
	const pageSize = 500
	var out []taskDoc
	for page := 0; page < 200; page++ {
		var r struct {
			Tasks []taskDoc `json:"tasks"`
		}
		err := c.call(withBudget(ctx, 30*time.Second), "tasks.get_all", "2.14", map[string]any{
			"status": []string{"in_progress"}, "only_fields": []string{"id", "last_worker"}, "search_hidden": true,
			"order_by": []string{"id"}, "page": page, "page_size": pageSize,
		}, &r)
		if err != nil {
			return nil, err
		}
		out = append(out, r.Tasks...)
		if len(r.Tasks) < pageSize {
			break
		}
	}
	return out, nil
}

// localTaskRuns lists the tasks some process on this host runs as
// `execute --id <task>` (an agent's child, ours or another's, or the
// docker client whose container runs it), from /proc.
func localTaskRuns() map[string]bool {
	out := map[string]bool{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(data) == 0 {
			continue
		}
		// Arguments split further on spaces: a shell's -c script counts too.
		tokens := strings.Fields(strings.ReplaceAll(string(data), "\x00", " "))
		if !slices.Contains(tokens, "execute") {
			continue
		}
		for i, tok := range tokens {
			switch {
			case tok == "--"+taskIDFlag && i+1 < len(tokens):
				out[tokens[i+1]] = true
			case strings.HasPrefix(tok, "--"+taskIDFlag+"="):
				out[strings.TrimPrefix(tok, "--"+taskIDFlag+"=")] = true
			}
		}
	}
	return out
}
