package main

// The glue's monitor (see glue.go): each round it asks the server for the
// tracked tasks and the backend for their jobs, once each, and acts on
// what changed.

import (
	"context"
	"fmt"
	"time"
)

// glueTask is what the monitor reads of a tracked task.
type glueTask struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	LastWorker   string `json:"last_worker"`
}

// monitor follows every tracked job once.
func (g *glue) monitor(ctx context.Context) {
	if !g.adopted {
		g.adopt(ctx)
	}
	if len(g.state.Jobs) == 0 {
		return
	}
	jobs := append([]*glueJob(nil), g.state.Jobs...)
	var taskIDs, jobIDs []string
	for _, e := range jobs {
		taskIDs = append(taskIDs, e.Task)
		if e.Job != "" {
			jobIDs = append(jobIDs, e.Job)
		}
	}
	tasks, err := g.taskStates(ctx, taskIDs)
	if err != nil {
		if ctx.Err() == nil {
			g.warn("tasks", "Warning: cannot read the tracked tasks from the server: %v (retrying)", err)
		}
		return
	}
	states, err := g.b.Jobs(withBudget(ctx, 30*time.Second), jobIDs)
	if err != nil {
		if ctx.Err() == nil {
			g.warn("jobs", "Warning: cannot ask %s about the jobs: %v (retrying; the jobs are not forgotten)", g.b.Kind(), err)
		}
		return
	}
	before := len(g.state.Jobs)
	dirty := false
	for _, e := range jobs {
		if ctx.Err() != nil {
			break
		}
		t, exists := tasks[e.Task]
		var done bool
		switch {
		case e.Failure != "":
			done = g.fail(withBudget(ctx, 15*time.Second), e, e.Failure)
		case e.Job == "":
			done = g.adopted && (!exists || t.Status != "queued" || g.returnTask(ctx, e))
		default:
			st, known := states[e.Job]
			detail, started := e.Detail, e.Started
			done = g.follow(ctx, e, st, known, t, exists)
			dirty = dirty || e.Detail != detail || e.Started != started
		}
		if done {
			if e.Job != "" {
				metricsOn().glueJobEnded(e, t.Status, exists, g.now())
			}
			g.state.remove(e)
			if e.Job != "" {
				g.b.Release(ctx, e.Job)
			}
		}
	}
	if dirty || len(g.state.Jobs) != before {
		g.save()
	}
}

// adopt merges the jobs the backend knows for this worker into the state:
// a crash between submitting and writing the state file loses nothing.
func (g *glue) adopt(ctx context.Context) {
	found, err := g.b.Find(withBudget(ctx, 30*time.Second), g.workerID)
	if err != nil {
		if ctx.Err() == nil {
			g.warn("find", "Warning: cannot list this worker's jobs in %s: %v (retrying)", g.b.Kind(), err)
		}
		return
	}
	g.adopted = true
	byTask := map[string]*glueJob{}
	for _, e := range g.state.Jobs {
		byTask[e.Task] = e
	}
	added := map[string]bool{}
	for _, f := range found {
		e := byTask[f.Task]
		switch {
		case e == nil:
			byTask[f.Task] = g.state.add(&glueJob{Task: f.Task, Job: f.Job, Submitted: g.now().UTC()})
			added[f.Task] = true
		case e.Job == "" || added[f.Task] && e.Job != f.Job:
			e.Job = f.Job // the newest job of a task counts
		default:
			continue
		}
		g.logf("Picked up %s (task %s)", g.b.Label(f.Job), f.Task)
	}
	if n := len(g.state.Jobs); n > 0 {
		g.logf("Tracking %d %s job(s)", n, g.b.Kind())
	}
	g.save()
}

// taskStates reads the tracked tasks; a task missing from the map was deleted.
func (g *glue) taskStates(ctx context.Context, ids []string) (map[string]glueTask, error) {
	var r struct {
		Tasks []glueTask `json:"tasks"`
	}
	err := g.api.call(withBudget(ctx, 15*time.Second), "tasks.get_all", "2.14", map[string]any{"id": ids,
		"only_fields": []string{"id", "status", "status_reason", "last_worker"}, "search_hidden": true}, &r)
	if err != nil {
		return nil, err
	}
	out := make(map[string]glueTask, len(r.Tasks))
	for _, t := range r.Tasks {
		out[t.ID] = t
	}
	return out, nil
}

// follow acts on one job; done means the glue stops tracking it.
func (g *glue) follow(ctx context.Context, e *glueJob, st glueJobState, known bool, t glueTask, exists bool) (done bool) {
	c := withBudget(ctx, 15*time.Second)
	label := g.b.Label(e.Job)
	// The task still waits for (or runs in) this job: queued by us in the
	// pending queue, or claimed by execute in the job (not by some other
	// agent it was enqueued to since). Anything else is a user's doing
	// (abort, dequeue, reset, enqueue elsewhere) or a final status.
	ours := exists && (t.Status == "queued" && t.StatusReason == g.opts.PendingReason ||
		t.Status == "in_progress" && (t.LastWorker == "" || t.LastWorker == glueTaskWorkerID(g.workerID, e.Task)))
	switch {
	case !exists:
		if !known || st.Phase == glueEnded {
			g.logf("task %s was deleted; %s had ended", e.Task, label)
			return true
		}
		if err := g.b.Cancel(c, e.Job); err != nil {
			g.warn("cancel "+e.Job, "Warning: task %s was deleted; cannot cancel %s: %v (retrying)", e.Task, label, err)
			return false
		}
		g.logf("task %s was deleted: %s cancelled", e.Task, label)
		return true
	case !known:
		// A job the system no longer lists ended long ago; one just
		// submitted may not be listed yet.
		if g.now().Sub(e.Submitted) < time.Minute {
			return false
		}
		return !ours || g.fail(c, e, fmt.Sprintf("%s is no longer known to %s (it ended and was forgotten before the glue saw how)", label, g.b.Kind()))
	case st.Phase == gluePending:
		return g.followPending(c, e, st, t, ours, label)
	case st.Phase == glueRunning:
		// execute in the job has claimed the task (or is about to): its
		// entry in the pending queue goes.
		if !e.Started && g.status.removeFromQueue(c, g.pending.ID, e.Task) == nil {
			e.Started = true
		}
		return g.stopLeftover(c, e, t, ours, label)
	}
	if !ours {
		// The task has its final status (or a user took it back).
		if !e.Started {
			g.status.removeFromQueue(c, g.pending.ID, e.Task)
		}
		return true
	}
	// Ended, the task not final: give execute, which may still be writing
	// its own final status, a grace first.
	if e.endSeen.IsZero() {
		e.endSeen = g.now()
	}
	if g.now().Sub(e.endSeen) < g.opts.EndGrace {
		return false
	}
	return g.fail(c, e, fmt.Sprintf("%s ended %s before the task had a final status", label, st.Detail))
}

// followPending handles a job that waits in the batch system.
func (g *glue) followPending(ctx context.Context, e *glueJob, st glueJobState, t glueTask, ours bool, label string) bool {
	switch {
	case t.Status == "in_progress":
		return false // execute claimed it: the job is starting
	case !ours:
		// Aborted or dequeued in the UI while waiting: the job goes.
		if err := g.b.Cancel(ctx, e.Job); err != nil {
			g.warn("cancel "+e.Job, "Warning: cannot cancel %s of task %s (%s): %v (retrying)", label, e.Task, t.Status, err)
			return false
		}
		// The console line goes first: once the entry leaves the pending
		// queue, a reader may take the task as settled.
		msg := fmt.Sprintf("%s cancelled: the task was %s while the job was pending", label, t.Status)
		g.s.postLog(ctx, e.Task, msg+"\n")
		g.status.removeFromQueue(ctx, g.pending.ID, e.Task)
		g.logf("task %s: %s", e.Task, msg)
		return true
	case st.Fatal != "":
		if err := g.b.Cancel(ctx, e.Job); err != nil {
			return false
		}
		return g.fail(ctx, e, label+": "+st.Fatal)
	case st.Detail != e.Detail:
		if g.status.jobMessage(ctx, e.Task, label, st.Detail) == nil {
			e.Detail = st.Detail
			g.s.postLog(ctx, e.Task, label+": "+st.Detail+"\n")
		}
	}
	return false
}

// stopLeftover cancels a job that still runs StopGrace after its task got
// a final status or was taken back by a user (aborted, reset, enqueued
// elsewhere): execute in it had its time to end it.
func (g *glue) stopLeftover(ctx context.Context, e *glueJob, t glueTask, ours bool, label string) bool {
	if ours || g.opts.StopGrace <= 0 {
		e.doneSeen = time.Time{}
		return false
	}
	if e.doneSeen.IsZero() {
		e.doneSeen = g.now()
	}
	if g.now().Sub(e.doneSeen) < g.opts.StopGrace {
		return false
	}
	if err := g.b.Cancel(ctx, e.Job); err != nil {
		g.warn("cancel "+e.Job, "Warning: cannot cancel %s of task %s (%s): %v (retrying)", label, e.Task, t.Status, err)
		return false
	}
	msg := fmt.Sprintf("%s cancelled: still running %s after the task became %s", label, g.opts.StopGrace, firstNonEmpty(t.Status, "deleted"))
	g.s.postLog(ctx, e.Task, msg+"\n")
	g.logf("task %s: %s", e.Task, msg)
	return true
}
