package fakeserver

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Task statuses (§4.1).
const (
	StatusCreated    = "created"
	StatusQueued     = "queued"
	StatusInProgress = "in_progress"
	StatusStopped    = "stopped"
	StatusPublishing = "publishing"
	StatusPublished  = "published"
	StatusClosed     = "closed"
	StatusFailed     = "failed"
	StatusCompleted  = "completed"
	StatusUnknown    = "unknown"
)

var validStatuses = []string{StatusCreated, StatusQueued, StatusInProgress, StatusStopped, StatusPublishing,
	StatusPublished, StatusClosed, StatusFailed, StatusCompleted, StatusUnknown}

var taskTypes = []string{"training", "testing", "inference", "data_processing", "application", "monitor",
	"controller", "report", "optimizer", "service", "qc", "custom"}

// stateMachine is the transition table of §4.2.
var stateMachine = map[string][]string{
	StatusCreated:    {StatusQueued, StatusInProgress},
	StatusQueued:     {StatusCreated, StatusInProgress, StatusStopped},
	StatusInProgress: {StatusStopped, StatusFailed, StatusCreated, StatusCompleted},
	StatusStopped:    {StatusClosed, StatusCreated, StatusFailed, StatusQueued, StatusInProgress, StatusPublished, StatusPublishing, StatusCompleted},
	StatusClosed:     {StatusCreated, StatusFailed, StatusPublished, StatusPublishing, StatusStopped},
	StatusFailed:     {StatusCreated, StatusStopped, StatusPublished, StatusQueued},
	StatusPublishing: {StatusPublished},
	StatusPublished:  {},
	StatusCompleted:  {StatusPublished, StatusInProgress, StatusCreated},
}

// AllowedTransition reports whether the state machine allows from → to
// without force (same status is always allowed).
func AllowedTransition(from, to string) bool {
	return from == to || containsStr(stateMachine[from], to)
}

// taskHiddenFields are excluded from responses unless requested (§3.5).
var taskHiddenFields = []string{"enqueue_status", "unique_metrics", "company_origin"}

// taskUpdateTimeout is apiserver.workers.task_update_timeout (§3.3 stop).
const taskUpdateTimeout = 600 * time.Second

type unsetT struct{}

// unsetField as an extra value removes the field.
var unsetField = unsetT{}

func init() {
	register("tasks.get_by_id", "1.0", tasksGetByID)
	register("tasks.get_all", "1.0", tasksGetAll)
	register("tasks.get_all_ex", "1.0", tasksGetAll)
	register("tasks.create", "1.0", tasksCreate)
	register("tasks.edit", "1.0", tasksEdit)
	register("tasks.update", "1.0", tasksUpdate)
	register("tasks.clone", "1.0", tasksClone)
	register("tasks.enqueue", "1.0", tasksEnqueue)
	register("tasks.dequeue", "1.0", tasksDequeue)
	register("tasks.started", "1.0", tasksStarted)
	register("tasks.stopped", "1.0", simpleStatus(StatusStopped, true))
	register("tasks.failed", "1.0", simpleStatus(StatusFailed, false))
	register("tasks.close", "1.0", simpleStatus(StatusClosed, false))
	register("tasks.completed", "2.2", tasksCompleted)
	register("tasks.stop", "1.0", tasksStop)
	register("tasks.reset", "1.0", tasksReset)
	register("tasks.publish", "1.0", tasksPublish)
	register("tasks.ping", "1.0", tasksPing)
	register("tasks.set_requirements", "1.0", tasksSetRequirements)
	register("tasks.delete", "1.0", tasksDelete)
	register("tasks.archive", "1.0", tasksArchive)
	register("tasks.get_hyper_params", "1.0", tasksGetHyperParams)
	register("tasks.edit_hyper_params", "1.0", tasksEditHyperParams)
	register("tasks.get_configurations", "1.0", tasksGetConfigurations)
	register("tasks.add_or_update_artifacts", "2.10", tasksAddOrUpdateArtifacts)
}

// ---- status changes ----

type statusChange struct {
	task      map[string]any
	newStatus string
	reason    string
	message   string
	force     bool
	user      string
	current   string         // override of the status read
	extra     map[string]any // more fields (dotted keys); unsetField removes
}

// changeStatus is ChangeStatusRequest.execute (§3.3): validate unless
// forced, then set status, reason, message and the change times.
func (s *Server) changeStatus(sc statusChange, now time.Time) (map[string]any, *APIError) {
	cur := sc.current
	if cur == "" {
		cur = asString(sc.task["status"])
	}
	if !sc.force && sc.newStatus != cur {
		allowed, ok := stateMachine[cur]
		if !ok {
			return nil, newErr(500, 1, msgInternalError, fmt.Sprintf("Current status %s not supported by state machine", cur))
		}
		if !containsStr(allowed, sc.newStatus) {
			return nil, errStatusChange(cur, sc.newStatus)
		}
	}
	now = dbTime(now)
	fields := map[string]any{
		"status": sc.newStatus, "status_reason": sc.reason, "status_message": sc.message,
		"status_changed": now, "last_update": now, "last_change": now, "last_changed_by": sc.user,
	}
	t := sc.task
	for k, v := range fields {
		t[k] = v
	}
	if sc.newStatus == StatusQueued {
		setDocStrings(t, "system_tags", removeStr(docStrings(t, "system_tags"), "development"))
	}
	for _, k := range sortedKeys(sc.extra) {
		v := sc.extra[k]
		path := strings.Split(k, ".")
		if _, un := v.(unsetT); un || v == nil {
			nestedDelete(t, path...)
			if v == nil {
				fields[k] = nil
			}
			continue
		}
		nestedSet(t, v, path...)
		fields[k] = v
	}
	return map[string]any{"updated": 1, "fields": fields}, nil
}

func docStrings(t map[string]any, k string) []string {
	l, _ := toStringList(t[k])
	return l
}

func setDocStrings(t map[string]any, k string, l []string) {
	t[k] = strListAny(l)
}

// readTask finds a task of the company or a public one.
func (s *Server) readTask(company, id string) map[string]any {
	t := s.tasks[id]
	if t == nil {
		return nil
	}
	if c := asString(t["company"]); c == company || c == "" {
		return t
	}
	return nil
}

// writeTask is get_task_with_write_access: 101 if missing, 403/21 if public.
func (c *call) writeTask(id string) (map[string]any, *APIError) {
	t := c.s.tasks[id]
	if t != nil && asString(t["company"]) == c.ident.Company {
		return t, nil
	}
	if t != nil && asString(t["company"]) == "" {
		return nil, newErr(403, 21, msgNoWritePermission, "", kv{"id", id})
	}
	return nil, errInvalidTaskID(id, c.ident.Company)
}

// updateReq reads UpdateRequest: task*, force, status_reason, status_message.
type updateReq struct {
	task, reason, message string
	force                 bool
}

func (c *call) updateRequest(p *params) updateReq {
	return updateReq{task: p.str("task", true), force: p.boolean("force", false),
		reason: p.optStr("status_reason", ""), message: p.optStr("status_message", "")}
}

func simpleStatus(target string, setCompleted bool) handlerFunc {
	return func(c *call) (map[string]any, error) {
		p := c.params()
		u := c.updateRequest(p)
		if err := p.done(); err != nil {
			return nil, err
		}
		t, e := c.writeTask(u.task)
		if e != nil {
			return nil, e
		}
		extra := map[string]any{}
		if setCompleted {
			extra["completed"] = dbTime(c.now)
		}
		res, e := c.s.changeStatus(statusChange{task: t, newStatus: target, reason: u.reason, message: u.message,
			force: u.force, user: c.ident.User, extra: extra}, c.now)
		if e != nil {
			return nil, e
		}
		return res, nil
	}
}

func tasksStarted(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	extra := map[string]any{}
	if t["started"] == nil {
		extra["started"] = dbTime(c.now) // reported in fields only the first time
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: StatusInProgress, reason: u.reason,
		message: u.message, force: u.force, user: c.ident.User, extra: extra}, c.now)
	if e != nil {
		return nil, e
	}
	if st, ok := t["started"].(time.Time); ok && dbTime(c.now).Before(st) {
		t["started"] = dbTime(c.now) // min-merge
	}
	res["started"] = res["updated"]
	return res, nil
}

func tasksCompleted(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	publish := p.boolean("publish", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: StatusCompleted, reason: u.reason, message: u.message,
		force: u.force, user: c.ident.User, extra: map[string]any{"completed": dbTime(c.now)}}, c.now)
	if e != nil {
		return nil, e
	}
	res["published"] = 0
	if publish {
		if _, e := c.publish(t, u); e != nil {
			return nil, e
		}
		res["published"] = 1
	}
	return res, nil
}

func (c *call) publish(t map[string]any, u updateReq) (map[string]any, *APIError) {
	cur := asString(t["status"])
	// validate_status_change is called directly: published → published is refused too
	if !u.force && !containsStr(stateMachine[cur], StatusPublished) {
		if _, ok := stateMachine[cur]; !ok {
			return nil, newErr(500, 1, msgInternalError, fmt.Sprintf("Current status %s not supported by state machine", cur))
		}
		return nil, errStatusChange(cur, StatusPublished)
	}
	t["status"] = StatusPublishing // raw save first, as the server does
	output := asMap(t["output"])
	if output == nil {
		output = map[string]any{}
	}
	return c.s.changeStatus(statusChange{task: t, newStatus: StatusPublished, reason: u.reason, message: u.message,
		force: u.force, user: c.ident.User, extra: map[string]any{"published": dbTime(c.now), "output": output}}, c.now)
}

func tasksPublish(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	prev := t["status"]
	res, e := c.publish(t, u)
	if e != nil {
		t["status"] = prev
		return nil, e
	}
	return res, nil
}

// isRunByWorker: last_worker set and last_update younger than 600 s (§3.3 stop).
func isRunByWorker(t map[string]any, now time.Time) bool {
	lu, ok := t["last_update"].(time.Time)
	return asString(t["last_worker"]) != "" && ok && now.Sub(lu) < taskUpdateTimeout
}

// tasksStop follows the server: "stopping" is set whenever a worker runs the
// task, force only skips the transition check (§3.3 stop).
func tasksStop(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	_ = p.boolean("include_pipeline_steps", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	status := asString(t["status"])
	queued := status == StatusQueued
	newStatus, msg := status, "stopping"
	if queued || containsStr(docStrings(t, "system_tags"), "development") || !isRunByWorker(t, c.now) {
		if queued {
			c.dequeueFromExecQueue(t)
		}
		newStatus, msg = StatusStopped, "Stopped by "+c.ident.UserName
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: newStatus, reason: u.reason, message: msg,
		force: u.force, user: c.ident.User}, c.now)
	if e != nil {
		return nil, e
	}
	return res, nil
}

// dequeueFromExecQueue is TaskBLL.dequeue with silent_fail: only for a queued
// task with execution.queue; returns {"removed": n} or nil.
func (c *call) dequeueFromExecQueue(t map[string]any) map[string]any {
	if asString(t["status"]) != StatusQueued {
		return nil
	}
	qid, _ := nestedGet(t, "execution", "queue")
	q := c.s.queueByID(c.ident.Company, asString(qid))
	if q == nil || q.indexOf(asString(t["id"])) < 0 {
		return nil
	}
	return map[string]any{"removed": q.removeAll(asString(t["id"]), c.now)}
}

func tasksEnqueue(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	qid := p.optStr("queue", "")
	qname := p.optStr("queue_name", "")
	verify := p.boolean("verify_watched_queue", false)
	updateExec := p.boolean("update_execution_queue", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	if qid != "" && qname != "" {
		return nil, errValidation("Either queue id or queue name should be provided")
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	if !updateExec {
		eq, _ := nestedGet(t, "execution", "queue")
		if !(t["status"] == StatusQueued && asString(eq) != "") {
			return nil, errValidation("Cannot skip setting execution queue for a task that is not enqueued or does not have execution queue set")
		}
	}
	if qname != "" {
		q := c.s.queueByName(c.ident.Company, qname)
		if q == nil {
			if q, e = c.s.createQueue(c.ident.Company, qname, "", nil, nil, nil, c.now); e != nil {
				return nil, e
			}
		}
		qid = q.ID
	}
	if qid == "" {
		q, e := c.s.defaultQueue(c.ident.Company)
		if e != nil {
			return nil, e
		}
		qid = q.ID
	}
	prevStatus := asString(t["status"])
	before := prevStatus
	if prevStatus == StatusQueued && asString(t["enqueue_status"]) != "" {
		before = asString(t["enqueue_status"])
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: StatusQueued, reason: u.reason, message: u.message,
		force: u.force, user: c.ident.User, extra: map[string]any{"enqueue_status": before}}, c.now)
	if e != nil {
		return nil, e
	}
	q := c.s.queueByID(c.ident.Company, qid)
	addErr := errInvalidQueueID(qid, c.ident.Company)
	if q != nil {
		addErr = c.s.addEntry(q, u.task, c.now)
	}
	if addErr != nil { // revert by force, then raise (§3.3 enqueue)
		_, _ = c.s.changeStatus(statusChange{task: t, newStatus: prevStatus, reason: "failed enqueueing", force: true,
			user: c.ident.User, current: StatusQueued, extra: map[string]any{"enqueue_status": nil}}, c.now)
		return nil, addErr
	}
	if updateExec {
		nestedSet(t, qid, "execution", "queue")
		res["fields"].(map[string]any)["execution.queue"] = qid
	}
	c.s.removeTaskFromAllQueues(c.ident.Company, u.task, qid, c.now)
	res["queued"] = 1
	if verify {
		watched := false
		for _, w := range c.s.liveWorkers(c.now) {
			if w.Company.ID == c.ident.Company && containsStr(w.Queues, qid) {
				watched = true
			}
		}
		res["queue_watched"] = watched
	}
	return res, nil
}

func tasksDequeue(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p) // force is ignored: always forced
	all := p.boolean("remove_from_all_queues", false)
	newStatus := p.optStr("new_status", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	if newStatus != "" && !containsStr(validStatuses, newStatus) {
		return nil, errValidation("Invalid task status: " + newStatus)
	}
	if c.s.readTask(c.ident.Company, u.task) == nil {
		c.s.removeTaskFromAllQueues(c.ident.Company, u.task, "", c.now)
		return map[string]any{"dequeued": 1, "updated": 0}, nil
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	c.dequeueFromExecQueue(t)
	if all {
		c.s.removeTaskFromAllQueues(c.ident.Company, u.task, "", c.now)
	}
	status := asString(t["status"])
	if status != StatusQueued && status != StatusInProgress {
		return map[string]any{"dequeued": 1, "updated": 0}, nil
	}
	target := newStatus
	if target == "" {
		target = asString(t["enqueue_status"])
	}
	if target == "" {
		target = StatusCreated
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: target, reason: u.reason, message: u.message,
		force: true, user: c.ident.User, extra: map[string]any{"enqueue_status": nil}}, c.now)
	if e != nil {
		return nil, e
	}
	res["dequeued"] = 1
	return res, nil
}

func tasksReset(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	clearAll := p.boolean("clear_all", false)
	returnURLs := p.boolean("return_file_urls", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	if !u.force && t["status"] == StatusPublished {
		return nil, newErr(400, 110, msgInvalidTaskStatus, "", kv{"task_id", u.task}, kv{"status", StatusPublished})
	}
	dequeued := c.dequeueFromExecQueue(t)
	if dequeued == nil {
		dequeued = map[string]any{}
	}
	c.s.removeTaskFromAllQueues(c.ident.Company, u.task, "", c.now)
	delete(c.s.events, u.task)
	extra := map[string]any{
		"last_iteration": 0, "last_metrics": map[string]any{}, "metric_stats": map[string]any{},
		"runtime": map[string]any{}, "models.output": []any{},
	}
	for _, f := range []string{"output.result", "output.error", "last_worker", "last_worker_report", "started",
		"completed", "published", "active_duration", "enqueue_status"} {
		extra[f] = unsetField
	}
	if clearAll {
		extra["execution"] = map[string]any{}
		extra["script"] = unsetField
	} else {
		extra["execution.queue"] = unsetField
		if arts, ok := nestedGet(t, "execution", "artifacts"); ok {
			var kept []any
			l, _ := arts.([]any)
			for _, a := range l {
				if asString(asMap(a)["mode"]) == "input" {
					kept = append(kept, a)
				}
			}
			if kept == nil {
				kept = []any{}
			}
			extra["execution.artifacts"] = kept
		}
	}
	if _, ok := t["models"].(map[string]any); !ok {
		t["models"] = map[string]any{}
	}
	res, e := c.s.changeStatus(statusChange{task: t, newStatus: StatusCreated, reason: "reset", message: "reset",
		force: u.force, user: c.ident.User, extra: extra}, c.now)
	if e != nil {
		return nil, e
	}
	// unset operators are not reported in fields
	f := res["fields"].(map[string]any)
	for k, v := range extra {
		if _, un := v.(unsetT); un {
			delete(f, k)
		}
	}
	res["dequeued"] = dequeued
	res["deleted_models"] = 0
	res["updated_children"] = 0
	res["updated_models"] = 0
	if returnURLs {
		res["urls"] = map[string]any{"model_urls": []any{}, "event_urls": []any{}, "artifact_urls": []any{}}
	} else {
		res["urls"] = nil
	}
	return res, nil
}

func tasksPing(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	t := c.s.tasks[id]
	if t == nil || asString(t["company"]) != c.ident.Company {
		return nil, nil // a missing task is silently ignored (§3.3)
	}
	c.s.touchTask(t, c.ident.User, c.now)
	return nil, nil
}

// touchTask is the ping side effect: times, and active_duration while running.
func (s *Server) touchTask(t map[string]any, user string, now time.Time) {
	now = dbTime(now)
	t["last_update"], t["last_change"], t["last_changed_by"] = now, now, user
	if st, ok := t["started"].(time.Time); ok && t["status"] == StatusInProgress {
		t["active_duration"] = int64(now.Sub(st) / time.Second)
	}
}

func tasksSetRequirements(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	req := p.object("requirements", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(id)
	if e != nil {
		return nil, e
	}
	script, _ := t["script"].(map[string]any)
	if script == nil {
		return nil, newErr(400, 122, msgMissingTaskFields, "Task has no script field", kv{"task", id})
	}
	script["requirements"] = copyMap(req)
	now := dbTime(c.now)
	t["last_update"], t["last_change"], t["last_changed_by"] = now, now, c.ident.User
	return map[string]any{"updated": 1, "fields": map[string]any{"script.requirements": copyMap(req)}}, nil
}

func tasksDelete(c *call) (map[string]any, error) {
	p := c.params()
	u := c.updateRequest(p)
	returnURLs := p.boolean("return_file_urls", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(u.task)
	if e != nil {
		return nil, e
	}
	if !u.force && t["status"] != StatusCreated && !containsStr(docStrings(t, "system_tags"), "archived") {
		return nil, newErr(400, 123, msgTaskCannotDelete, "due to status, use force=True")
	}
	c.s.removeTaskFromAllQueues(c.ident.Company, u.task, "", c.now)
	c.s.deleteTask(u.task)
	res := map[string]any{"deleted": true, "updated_children": 0, "updated_models": 0, "deleted_models": 0, "urls": nil}
	if returnURLs {
		res["urls"] = map[string]any{"model_urls": []any{}, "event_urls": []any{}, "artifact_urls": []any{}}
	}
	return res, nil
}

func (s *Server) deleteTask(id string) {
	delete(s.tasks, id)
	delete(s.events, id)
	for i, x := range s.taskOrder {
		if x == id {
			s.taskOrder = append(s.taskOrder[:i], s.taskOrder[i+1:]...)
			break
		}
	}
}

func tasksArchive(c *call) (map[string]any, error) {
	p := c.params()
	ids, _ := p.strList("tasks", true)
	reason := p.optStr("status_reason", "")
	msg := p.optStr("status_message", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	n := 0
	for _, id := range ids {
		t, e := c.writeTask(id)
		if e != nil {
			return nil, e
		}
		switch t["status"] {
		case StatusQueued:
			c.dequeueFromExecQueue(t)
			c.s.removeTaskFromAllQueues(c.ident.Company, id, "", c.now)
			next := asString(t["enqueue_status"])
			if next == "" {
				next = StatusCreated
			}
			_, _ = c.s.changeStatus(statusChange{task: t, newStatus: next, reason: reason, message: msg, force: true,
				user: c.ident.User, extra: map[string]any{"enqueue_status": nil, "execution.queue": unsetField}}, c.now)
		case StatusInProgress:
			_, _ = c.s.changeStatus(statusChange{task: t, newStatus: StatusStopped, reason: reason, message: msg,
				force: true, user: c.ident.User}, c.now)
		}
		tags := docStrings(t, "system_tags")
		if !containsStr(tags, "archived") {
			setDocStrings(t, "system_tags", append(tags, "archived"))
		}
		n++
	}
	return map[string]any{"archived": n}, nil
}

// ---- reads ----

// conformTask applies the per-version output rules of §1.6.
func (c *call) conformTask(d map[string]any) map[string]any {
	for _, k := range []string{"tags", "system_tags"} {
		if l, ok := toStringList(d[k]); ok && d[k] != nil {
			d[k] = strListAny(sortedCopy(l))
		}
	}
	if c.ver.less(version{2, 13}) {
		models := asMap(d["models"])
		if in, _ := models["input"].([]any); len(in) > 0 {
			if m := asMap(in[0]); m != nil {
				nestedSet(d, m["model"], "execution", "model")
			}
		}
		if out, _ := models["output"].([]any); len(out) > 0 {
			if m := asMap(out[len(out)-1]); m != nil {
				nestedSet(d, m["model"], "output", "model")
			}
		}
		if ct := asMap(d["container"]); asString(ct["image"]) != "" {
			parts := []string{asString(ct["image"])}
			if a := asString(ct["arguments"]); a != "" {
				parts = append(parts, a)
			}
			nestedSet(d, strings.Join(parts, " "), "execution", "docker_cmd")
		}
	}
	if c.ver.less(version{2, 9}) {
		legacy := map[string]any{}
		for _, sec := range asMap(d["hyperparams"]) {
			for _, pv := range asMap(sec) {
				pm := asMap(pv)
				if asString(pm["type"]) == "legacy" {
					legacy[legacyName(asString(pm["section"]), asString(pm["name"]))] = pm["value"]
				}
			}
		}
		if len(legacy) > 0 {
			nestedSet(d, legacy, "execution", "parameters")
		}
		desc := map[string]any{}
		for name, cv := range asMap(d["configuration"]) {
			if cm := asMap(cv); asString(cm["type"]) == "legacy" {
				desc[name] = cm["value"]
			}
		}
		if len(desc) > 0 {
			nestedSet(d, desc, "execution", "model_desc")
		}
	}
	return d
}

func legacyName(section, name string) string {
	if section == "" || section == "Args" {
		return name
	}
	return section + "/" + name
}

func tasksGetByID(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	t := c.s.readTask(c.ident.Company, id)
	if t == nil {
		return nil, errInvalidTaskIDs(id)
	}
	return map[string]any{"task": c.conformTask(project(t, nil, taskHiddenFields))}, nil
}

func tasksGetAll(c *call) (map[string]any, error) {
	p := c.params()
	searchHidden := p.boolean("search_hidden", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	ids := scalarOrListStrings(c.data["id"])
	var docs []map[string]any
	for _, id := range c.s.taskOrder {
		t := c.s.tasks[id]
		if cc := asString(t["company"]); cc != c.ident.Company && cc != "" {
			continue
		}
		// hidden tasks only with search_hidden or a non-empty id list (§3.3)
		if !searchHidden && len(ids) == 0 && containsStr(docStrings(t, "system_tags"), "hidden") {
			continue
		}
		docs = append(docs, t)
	}
	docs, err := c.filterDocs(docs, getAllSpec{
		listFields: []string{"id", "user", "tags", "system_tags", "type", "status", "project", "parent",
			"execution.queue", "models.input.model"},
		patternFields: []string{"name", "comment", "report"},
	})
	if err != nil {
		return nil, err
	}
	only, err := c.onlyFields()
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(docs))
	for _, t := range docs {
		out = append(out, c.conformTask(project(t, only, taskHiddenFields)))
	}
	return map[string]any{"tasks": out}, nil
}

// ---- create / edit ----

// embeddedFields are shallow-merged by edit; the others are replaced (§3.3 edit).
var embeddedFields = map[string]bool{"script": true, "execution": true, "output": true, "models": true}

var createFields = []string{"name", "tags", "system_tags", "type", "comment", "parent", "project", "models",
	"container", "output_dest", "execution", "hyperparams", "configuration", "script", "runtime"}

// userSetAllowed fields do not bump last_update on edit.
var userSetAllowed = map[string]bool{"name": true, "comment": true, "tags": true, "system_tags": true,
	"project": true, "status_message": true, "created": true}

// prepareFields picks and normalises create/edit fields (prepare_for_save).
func (c *call) prepareFields(allowed []string, prev map[string]any) (map[string]any, *APIError) {
	f := map[string]any{}
	for _, k := range allowed {
		if v, ok := c.data[k]; ok {
			f[k] = deepCopy(v)
		}
	}
	for _, k := range []string{"tags", "system_tags"} {
		if v, ok := f[k]; ok && v != nil {
			l, ok := toStringList(v)
			if !ok {
				return nil, errWrongType(k, "list", v)
			}
			if e := validateTags(l); e != nil {
				return nil, e
			}
			f[k] = strListAny(l)
		}
	}
	for _, k := range []string{"script", "execution", "models", "container", "hyperparams", "configuration", "runtime"} {
		if v, ok := f[k]; ok && v != nil {
			if _, isMap := v.(map[string]any); !isMap {
				return nil, errWrongType(k, "dict", v)
			}
		}
	}
	if od, ok := f["output_dest"]; ok {
		delete(f, "output_dest")
		out := copyMap(asMap(prev["output"]))
		if out == nil {
			out = map[string]any{}
		}
		out["destination"] = od
		f["output"] = out
	}
	if models := asMap(f["models"]); models != nil {
		for _, k := range []string{"input", "output"} {
			l, _ := models[k].([]any)
			for _, m := range l {
				if mm := asMap(m); mm != nil {
					mm["updated"] = dbTime(c.now)
				}
			}
		}
	}
	// legacy execution.parameters / model_desc are converted at any version
	if exec := asMap(f["execution"]); exec != nil {
		if params, ok := exec["parameters"].(map[string]any); ok {
			hp := asMap(f["hyperparams"])
			if hp == nil {
				hp = copyMap(asMap(prev["hyperparams"]))
				if hp == nil {
					hp = map[string]any{}
				}
				for sec, sv := range hp { // drop previous legacy values
					for name, pv := range asMap(sv) {
						if asString(asMap(pv)["type"]) == "legacy" {
							delete(asMap(sv), name)
						}
					}
					if len(asMap(sv)) == 0 {
						delete(hp, sec)
					}
				}
			}
			for full, v := range params {
				sec, name := "Args", full
				if a, b, ok := strings.Cut(full, "/"); ok {
					sec, name = a, b
				}
				nestedSet(hp, map[string]any{"section": sec, "name": name, "value": pyStr(v), "type": "legacy"}, sec, name)
			}
			f["hyperparams"] = hp
			delete(exec, "parameters")
		}
		if desc, ok := exec["model_desc"].(map[string]any); ok {
			cfg := asMap(f["configuration"])
			if cfg == nil {
				cfg = copyMap(asMap(prev["configuration"]))
				if cfg == nil {
					cfg = map[string]any{}
				}
			}
			for name, v := range desc {
				cfg[name] = map[string]any{"name": name, "value": pyStr(v), "type": "legacy"}
			}
			f["configuration"] = cfg
			delete(exec, "model_desc")
		}
		if arts, ok := exec["artifacts"].([]any); ok {
			exec["artifacts"] = sortArtifacts(arts)
		}
	}
	if c.ver.less(version{2, 13}) {
		exec := asMap(f["execution"])
		if m, ok := exec["model"]; ok && m != nil {
			var l []any
			if asString(m) != "" {
				l = []any{map[string]any{"name": "input", "model": m, "updated": dbTime(c.now)}}
			}
			nestedSet(f, l, "models", "input")
			delete(exec, "model")
		}
		out := asMap(f["output"])
		if m, ok := out["model"]; ok && m != nil {
			var l []any
			if asString(m) != "" {
				l = []any{map[string]any{"name": "output", "model": m, "updated": dbTime(c.now)}}
			}
			nestedSet(f, l, "models", "output")
			delete(out, "model")
		}
		// docker_cmd is split at the first space and replaces container (§1.6)
		if dc, ok := exec["docker_cmd"]; ok {
			if s, ok := dc.(string); ok {
				image, args, _ := strings.Cut(s, " ")
				nestedSet(f, image, "container", "image")
				nestedSet(f, args, "container", "arguments")
			}
			delete(exec, "docker_cmd")
		}
	} else if exec := asMap(f["execution"]); exec != nil {
		delete(exec, "docker_cmd")
		delete(exec, "model")
	}
	if script := asMap(f["script"]); script != nil {
		for k, v := range script {
			if s, ok := v.(string); ok && k != "diff" && k != "requirements" {
				script[k] = strings.TrimSpace(s)
			}
		}
	}
	if hp := asMap(f["hyperparams"]); hp != nil {
		clean := map[string]any{}
		for sec, sv := range hp {
			if strings.TrimSpace(sec) == "" {
				return nil, errValidation("Empty section name is not allowed")
			}
			sm := map[string]any{}
			for name, pv := range asMap(sv) {
				if strings.TrimSpace(name) == "" {
					return nil, errValidation("Empty parameter name is not allowed")
				}
				sm[strings.TrimSpace(name)] = pv
			}
			clean[strings.TrimSpace(sec)] = sm
		}
		f["hyperparams"] = clean
	}
	if cfg := asMap(f["configuration"]); cfg != nil {
		for name := range cfg {
			if strings.TrimSpace(name) == "" {
				return nil, errValidation("Empty configuration name is not allowed")
			}
		}
	}
	if e := c.validateRefs(f); e != nil {
		return nil, e
	}
	return f, nil
}

func sortArtifacts(l []any) []any {
	out := append([]any(nil), l...)
	sort.SliceStable(out, func(i, j int) bool { return asString(asMap(out[i])["key"]) < asString(asMap(out[j])["key"]) })
	return out
}

// validateRefs checks project and parent references (§3.3 create).
func (c *call) validateRefs(f map[string]any) *APIError {
	if pr, ok := f["project"].(string); ok && pr != "" {
		pd := c.s.projects[pr]
		if pd == nil || (asString(pd["company"]) != c.ident.Company && asString(pd["company"]) != "") {
			return newErr(400, 16, msgFieldsValue, "expecting Project id", kv{"id", pr}, kv{"field", "project"})
		}
	}
	if pa, ok := f["parent"].(string); ok && pa != "" && !strings.HasPrefix(pa, "__DELETED__") {
		if c.s.readTask(c.ident.Company, pa) == nil {
			return newErr(400, 16, msgFieldsValue, "expecting Task id", kv{"id", pa}, kv{"field", "parent"})
		}
	}
	return nil
}

func validateNameAndType(f map[string]any, needType bool) *APIError {
	if n, ok := f["name"]; ok {
		s, isStr := n.(string)
		if !isStr {
			return errWrongType("name", "str", n)
		}
		if len([]rune(strings.TrimSpace(s))) < 3 {
			return newErr(400, 800, msgDataValidation, "", kv{"name", "String value is too short"})
		}
		f["name"] = strings.TrimSpace(s)
	}
	if ty, ok := f["type"]; ok || needType {
		s, _ := ty.(string)
		if !containsStr(taskTypes, s) {
			return errValidation(fmt.Sprintf("error for field 'type'. value %s is not in the enum", pyRepr(ty)))
		}
	}
	return nil
}

// newTaskDoc fills the defaults of a fresh task.
func newTaskDoc(id, company, user string, now time.Time) map[string]any {
	now = dbTime(now)
	return map[string]any{
		"id": id, "company": company, "user": user, "status": StatusCreated,
		"created": now, "last_update": now, "last_change": now, "last_changed_by": user,
		"tags": []any{}, "system_tags": []any{}, "last_iteration": int64(0),
		// The real server's Task.output defaults to an empty embedded
		// document, so every task carries it; the SDK reads
		// task.output.destination before uploading an artifact.
		"output": map[string]any{},
	}
}

func applyScriptDefaults(t map[string]any) {
	if sc := asMap(t["script"]); sc != nil {
		for k, v := range map[string]string{"binary": "python", "repository": "", "entry_point": ""} {
			if _, ok := sc[k]; !ok {
				sc[k] = v
			}
		}
	}
}

func (s *Server) insertTask(t map[string]any) {
	id := asString(t["id"])
	if _, exists := s.tasks[id]; !exists {
		s.taskOrder = append(s.taskOrder, id)
	}
	s.tasks[id] = t
}

func tasksCreate(c *call) (map[string]any, error) {
	p := c.params()
	p.str("name", true)
	p.str("type", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	f, e := c.prepareFields(createFields, nil)
	if e != nil {
		return nil, e
	}
	if e := validateNameAndType(f, true); e != nil {
		return nil, e
	}
	t := newTaskDoc(newID(), c.ident.Company, c.ident.User, c.now)
	for k, v := range f {
		if v != nil {
			t[k] = v
		}
	}
	applyScriptDefaults(t)
	c.s.insertTask(t)
	return map[string]any{"id": t["id"]}, nil
}

func tasksEdit(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	force := p.boolean("force", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(id)
	if e != nil {
		return nil, e
	}
	if !force && t["status"] != StatusCreated {
		return nil, errExpectedCreated(asString(t["status"]))
	}
	f, e := c.prepareFields(append(append([]string{}, createFields...), "status"), t)
	if e != nil {
		return nil, e
	}
	if e := validateNameAndType(f, false); e != nil {
		return nil, e
	}
	if st, ok := f["status"]; ok {
		if s, _ := st.(string); !containsStr(validStatuses, s) {
			return nil, errValidation(fmt.Sprintf("error for field 'status'. value %s is not in the enum", pyRepr(st)))
		}
	}
	if len(f) == 0 {
		return map[string]any{"updated": 0}, nil
	}
	onlyUserSet := true
	for k, v := range f {
		if !userSetAllowed[k] {
			onlyUserSet = false
		}
		if embeddedFields[k] {
			if old := asMap(t[k]); old != nil {
				if nv := asMap(v); nv != nil {
					merged := copyMap(old)
					for kk, vv := range nv {
						merged[kk] = vv
					}
					f[k] = merged
				}
			}
		}
	}
	now := dbTime(c.now)
	f["last_change"], f["last_changed_by"] = now, c.ident.User
	if !onlyUserSet {
		f["last_update"] = now
	}
	for k, v := range f {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = deepCopy(v)
		}
	}
	applyScriptDefaults(t)
	return map[string]any{"updated": 1, "fields": c.conformTask(copyMap(f))}, nil
}

func tasksUpdate(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(id)
	if e != nil {
		return nil, e
	}
	f, e := c.prepareFields([]string{"name", "tags", "system_tags", "comment", "project", "status",
		"status_reason", "status_message"}, t)
	if e != nil {
		return nil, e
	}
	if v, ok := c.data["output__error"]; ok {
		f["output.error"] = v
	}
	if e := validateNameAndType(f, false); e != nil {
		return nil, e
	}
	if len(f) == 0 {
		return map[string]any{"updated": 0}, nil
	}
	// no status check and no state machine (§4.3)
	now := dbTime(c.now)
	for k, v := range f {
		nestedSet(t, deepCopy(v), strings.Split(k, ".")...)
	}
	t["last_change"], t["last_changed_by"] = now, c.ident.User
	f["last_change"], f["last_changed_by"] = now, c.ident.User
	return map[string]any{"updated": 1, "fields": f}, nil
}

func tasksClone(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	name, hasName := p.str("new_task_name", false), p.has("new_task_name")
	comment, hasComment := p.str("new_task_comment", false), p.has("new_task_comment")
	tags, hasTags := p.strList("new_task_tags", false)
	sys, hasSys := p.strList("new_task_system_tags", false)
	parent := p.optStr("new_task_parent", "")
	proj, hasProj := p.str("new_task_project", false), p.has("new_task_project")
	hyper := p.object("new_task_hyperparams", false)
	config := p.object("new_task_configuration", false)
	container := p.object("new_task_container", false)
	inModels := p.list("new_task_input_models", false)
	overrides := p.object("execution_overrides", false)
	validate := p.boolean("validate_references", false)
	newProjName := p.optStr("new_project_name", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	if e := validateTags(tags, sys); e != nil {
		return nil, e
	}
	orig := c.s.readTask(c.ident.Company, id)
	if orig == nil {
		return nil, errInvalidTaskIDs(id)
	}
	t := newTaskDoc(newID(), c.ident.Company, c.ident.User, c.now)
	for _, k := range []string{"name", "comment", "project", "type", "script", "container", "configuration", "hyperparams"} {
		if v, ok := orig[k]; ok {
			t[k] = deepCopy(v)
		}
	}
	if tags, ok := orig["tags"]; ok && tags != nil {
		t["tags"] = deepCopy(tags)
	}
	t["system_tags"] = strListAny(removeStr(removeStr(docStrings(orig, "system_tags"), "development"), "archived"))
	if od, ok := nestedGet(orig, "output", "destination"); ok {
		t["output"] = map[string]any{"destination": od}
	}
	if in, ok := nestedGet(orig, "models", "input"); ok {
		t["models"] = map[string]any{"input": deepCopy(in), "output": []any{}}
	}
	exec := copyMap(asMap(orig["execution"]))
	if exec == nil {
		exec = map[string]any{}
	}
	delete(exec, "queue")
	if arts, ok := exec["artifacts"].([]any); ok {
		var kept []any
		for _, a := range arts {
			if asString(asMap(a)["mode"]) == "input" {
				kept = append(kept, a)
			}
		}
		if kept == nil {
			kept = []any{}
		}
		exec["artifacts"] = kept
	}
	for k, v := range overrides {
		switch k {
		case "docker_cmd":
			if s, ok := v.(string); ok {
				image, args, _ := strings.Cut(s, " ")
				t["container"] = map[string]any{"image": image, "arguments": args}
			}
		case "model":
			if s, ok := v.(string); ok && s != "" && inModels == nil {
				nestedSet(t, []any{map[string]any{"name": "input", "model": s, "updated": dbTime(c.now)}}, "models", "input")
			}
		default:
			exec[k] = deepCopy(v)
		}
	}
	t["execution"] = exec
	if hasName {
		t["name"] = name
	}
	if hasComment {
		t["comment"] = comment
	}
	if hasTags {
		t["tags"] = strListAny(tags)
	}
	if hasSys {
		t["system_tags"] = strListAny(sys)
	}
	if hasProj {
		t["project"] = proj
	}
	if hyper != nil {
		t["hyperparams"] = copyMap(hyper)
	}
	if config != nil {
		t["configuration"] = copyMap(config)
	}
	if container != nil {
		t["container"] = copyMap(container)
	}
	if inModels != nil {
		l := make([]any, 0, len(inModels))
		for _, m := range inModels {
			mm := copyMap(asMap(m))
			if mm != nil {
				mm["updated"] = dbTime(c.now)
				l = append(l, mm)
			}
		}
		nestedSet(t, l, "models", "input")
	}
	switch op := asString(orig["parent"]); {
	case parent != "":
		t["parent"] = parent
	case op != "" && !strings.HasPrefix(op, "__DELETED__"):
		t["parent"] = op
	default:
		t["parent"] = id
	}
	var newProject map[string]any
	if newProjName != "" {
		pid := c.s.createProject(c.ident.Company, c.ident.User, newProjName, c.now)
		t["project"] = pid
		newProject = map[string]any{"id": pid, "name": newProjName}
	}
	if validate || hasProj {
		if e := c.validateRefs(map[string]any{"project": t["project"], "parent": parent}); e != nil {
			return nil, e
		}
	}
	if asString(t["project"]) == "" {
		delete(t, "project")
	}
	c.s.insertTask(t)
	res := map[string]any{"id": t["id"]}
	if newProject != nil {
		res["new_project"] = newProject
	}
	return res, nil
}

// ---- hyperparams, configuration, artifacts ----

func tasksGetHyperParams(c *call) (map[string]any, error) {
	p := c.params()
	ids, _ := p.strList("tasks", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, errValidation("error for field 'tasks'. list must have at least 1 item")
	}
	var missing []string
	for _, id := range ids {
		if c.s.readTask(c.ident.Company, id) == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, errInvalidTaskIDs(missing...)
	}
	out := []any{}
	for _, id := range ids {
		var items []any
		hp := asMap(c.s.tasks[id]["hyperparams"])
		for _, sec := range sortedKeys(hp) {
			sm := asMap(hp[sec])
			for _, name := range sortedKeys(sm) {
				item := copyMap(asMap(sm[name]))
				if item == nil {
					continue
				}
				item["section"], item["name"] = sec, name
				items = append(items, item)
			}
		}
		if items == nil {
			items = []any{}
		}
		out = append(out, map[string]any{"task": id, "hyperparams": items})
	}
	return map[string]any{"params": out}, nil
}

func tasksEditHyperParams(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	items := p.list("hyperparams", true)
	replace := p.optStr("replace_hyperparams", "none")
	force := p.boolean("force", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	if replace != "none" && replace != "section" && replace != "all" {
		return nil, errValidation(fmt.Sprintf("error for field 'replace_hyperparams'. value '%s' is not in the enum", replace))
	}
	t, e := c.writeTask(id)
	if e != nil {
		return nil, e
	}
	onlyProps := len(items) > 0
	type hpItem struct {
		sec, name string
		doc       map[string]any
	}
	var parsed []hpItem
	for _, it := range items {
		m := asMap(it)
		sec, name := strings.TrimSpace(asString(m["section"])), strings.TrimSpace(asString(m["name"]))
		if m == nil || m["value"] == nil {
			return nil, errRequired("value")
		}
		if sec == "" {
			return nil, errValidation("Empty section name is not allowed")
		}
		if name == "" {
			return nil, errValidation("Empty parameter name is not allowed")
		}
		if !strings.EqualFold(sec, "properties") {
			onlyProps = false
		}
		d := copyMap(m)
		d["section"], d["name"] = sec, name
		if _, ok := d["value"].(string); !ok {
			d["value"] = pyStr(d["value"])
		}
		parsed = append(parsed, hpItem{sec, name, d})
	}
	if !onlyProps {
		st := asString(t["status"])
		if !(st == StatusCreated || (force && st == StatusInProgress)) {
			return nil, errExpectedCreated(st)
		}
	}
	hp := copyMap(asMap(t["hyperparams"]))
	if hp == nil || replace == "all" {
		hp = map[string]any{}
	}
	if replace == "section" {
		for _, it := range parsed {
			delete(hp, it.sec)
		}
	}
	for _, it := range parsed {
		nestedSet(hp, it.doc, it.sec, it.name)
	}
	t["hyperparams"] = hp
	now := dbTime(c.now)
	t["last_change"], t["last_changed_by"] = now, c.ident.User
	if !onlyProps {
		t["last_update"] = now
	}
	return map[string]any{"updated": 1}, nil
}

func tasksGetConfigurations(c *call) (map[string]any, error) {
	p := c.params()
	ids, _ := p.strList("tasks", true)
	names, hasNames := p.strList("names", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if c.s.readTask(c.ident.Company, id) == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, errInvalidTaskIDs(missing...)
	}
	out := []any{}
	for _, id := range ids {
		cfg := asMap(c.s.tasks[id]["configuration"])
		items := []any{}
		for _, name := range sortedKeys(cfg) {
			if hasNames && len(names) > 0 && !containsStr(names, name) {
				continue
			}
			item := copyMap(asMap(cfg[name]))
			if item == nil {
				continue
			}
			item["name"] = name
			items = append(items, item)
		}
		out = append(out, map[string]any{"task": id, "configuration": items})
	}
	return map[string]any{"configurations": out}, nil
}

func tasksAddOrUpdateArtifacts(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("task", true)
	arts := p.list("artifacts", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	t, e := c.writeTask(id)
	if e != nil {
		return nil, e
	}
	if st := asString(t["status"]); st != StatusCreated && st != StatusInProgress {
		return nil, errExpectedCreated(st)
	}
	exec := asMap(t["execution"])
	if exec == nil {
		exec = map[string]any{}
		t["execution"] = exec
	}
	cur, _ := exec["artifacts"].([]any)
	for _, a := range arts {
		m := copyMap(asMap(a))
		if m == nil || asString(m["key"]) == "" {
			return nil, errRequired("key")
		}
		if asString(m["type"]) == "" {
			return nil, errRequired("type")
		}
		if asString(m["mode"]) == "" {
			m["mode"] = "output"
		}
		replaced := false
		for i, x := range cur {
			xm := asMap(x)
			if asString(xm["key"]) == asString(m["key"]) && asString(xm["mode"]) == asString(m["mode"]) {
				cur[i], replaced = m, true
			}
		}
		if !replaced {
			cur = append(cur, m)
		}
	}
	exec["artifacts"] = sortArtifacts(cur)
	now := dbTime(c.now)
	t["last_update"], t["last_change"], t["last_changed_by"] = now, now, c.ident.User
	return map[string]any{"updated": 1}, nil
}
