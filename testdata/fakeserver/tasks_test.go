package fakeserver

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// targetEndpoint is the endpoint that moves a task to each status (§4.3).
var targetEndpoint = map[string]string{
	StatusCreated:    "/v2.5/tasks.reset",
	StatusQueued:     "/v2.5/tasks.enqueue",
	StatusInProgress: "/v2.5/tasks.started",
	StatusStopped:    "/v2.5/tasks.stopped",
	StatusFailed:     "/v2.5/tasks.failed",
	StatusCompleted:  "/v2.5/tasks.completed",
	StatusClosed:     "/v2.5/tasks.close",
	StatusPublished:  "/v2.5/tasks.publish",
}

var fromStatuses = []string{StatusCreated, StatusQueued, StatusInProgress, StatusStopped, StatusClosed,
	StatusFailed, StatusPublishing, StatusPublished, StatusCompleted}

// expected of §4.2, written out independently of the implementation.
var allowedTable = map[string]string{
	StatusCreated:    "queued in_progress",
	StatusQueued:     "created in_progress stopped",
	StatusInProgress: "stopped failed created completed",
	StatusStopped:    "closed created failed queued in_progress published publishing completed",
	StatusClosed:     "created failed published publishing stopped",
	StatusFailed:     "created stopped published queued",
	StatusPublishing: "published",
	StatusPublished:  "",
	StatusCompleted:  "published in_progress created",
}

func TestStatusTransitionTable(t *testing.T) {
	s, c := startServer(t)
	for _, from := range fromStatuses {
		for _, to := range []string{StatusCreated, StatusQueued, StatusInProgress, StatusStopped, StatusFailed,
			StatusCompleted, StatusClosed, StatusPublished} {
			allowed := from == to || containsStr(strings.Fields(allowedTable[from]), to)
			if to == StatusPublished && from == StatusPublished {
				allowed = false // publish validates directly, no same-state shortcut
			}
			if got := AllowedTransition(from, to); got != (from == to || containsStr(strings.Fields(allowedTable[from]), to)) {
				t.Errorf("AllowedTransition(%s,%s)=%v", from, to, got)
			}
			t.Run(from+"->"+to, func(t *testing.T) {
				id := s.AddTask(TaskSpec{Status: from})
				body := map[string]any{"task": id, "status_reason": "r", "status_message": "m"}
				r := c.get(targetEndpoint[to], body)
				code, sub := r.code()
				switch {
				case to == StatusCreated && from == StatusPublished:
					if code != 400 || sub != 110 || r.msg() != fmt.Sprintf("Invalid task status: task_id=%s, status=published", id) {
						t.Fatalf("reset published: %s", r.Raw)
					}
				case allowed:
					if code != 200 {
						t.Fatalf("want allowed: %s", r.Raw)
					}
					tk, _ := s.Task(id)
					if tk.Status != to {
						t.Fatalf("status %s", tk.Status)
					}
					if to != StatusCreated && (tk.StatusReason != "r" || tk.StatusMessage != "m") {
						t.Errorf("reason/message %q %q", tk.StatusReason, tk.StatusMessage)
					}
				default:
					want := fmt.Sprintf("Invalid task status (Invalid status change): current_status=%s, new_status=%s", from, to)
					if r.Status != 400 || code != 400 || sub != 110 || r.msg() != want {
						t.Fatalf("want refused %q, got %s", want, r.Raw)
					}
					if tk, _ := s.Task(id); tk.Status != from {
						t.Fatalf("status changed to %s", tk.Status)
					}
				}
				// force skips the state machine
				id2 := s.AddTask(TaskSpec{Status: from})
				body["task"], body["force"] = id2, true
				if r := c.get(targetEndpoint[to], body); r.Status != 200 {
					t.Fatalf("forced: %s", r.Raw)
				}
				if tk, _ := s.Task(id2); tk.Status != to {
					t.Fatalf("forced status %s", tk.Status)
				}
			})
		}
	}
	id := s.AddTask(TaskSpec{Status: StatusUnknown})
	c.expectErr("/tasks.started", map[string]any{"task": id}, 500, 1,
		"Internal server error (Current status unknown not supported by state machine)")
	c.expectErr("/tasks.started", map[string]any{"task": "nope"}, 400, 101,
		"Invalid task id: id=nope, company="+DefaultCompanyID)
}

func TestStatusEndpointsResponses(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	s.SetNow(now)
	id := s.AddTask(TaskSpec{SystemTags: []string{"development"}})
	d := c.ok("/v2.5/tasks.started", map[string]any{"task": id, "force": true, "status_message": "pulled by agent"})
	f := d["fields"].(map[string]any)
	if num(d["updated"]) != 1 || num(d["started"]) != 1 || f["status"] != "in_progress" ||
		f["started"] != "2025-01-02T03:04:05.123000+00:00" || f["status_changed"] != f["started"] ||
		f["last_changed_by"] != TestsUserID || f["status_message"] != "pulled by agent" || f["status_reason"] != "" {
		t.Errorf("started: %v", d)
	}
	s.Advance(time.Second)
	d = c.ok("/v2.5/tasks.started", map[string]any{"task": id, "force": true})
	if _, ok := d["fields"].(map[string]any)["started"]; ok {
		t.Error("second started reports started")
	}
	if tk, _ := s.Task(id); !tk.Started.Equal(dbTime(now)) {
		t.Errorf("started moved: %v", tk.Started)
	}
	d = c.ok("/v2.5/tasks.stopped", map[string]any{"task": id})
	if d["fields"].(map[string]any)["completed"] == nil {
		t.Errorf("stopped: %v", d)
	}
	d = c.ok("/v2.5/tasks.completed", map[string]any{"task": id, "publish": true})
	if num(d["published"]) != 1 {
		t.Errorf("completed+publish: %v", d)
	}
	if tk, _ := s.Task(id); tk.Status != StatusPublished || tk.Doc["published"] == nil {
		t.Errorf("published: %+v", tk)
	}
	// enqueue removes "development"
	id = s.AddTask(TaskSpec{SystemTags: []string{"development", "x"}})
	c.ok("/tasks.enqueue", map[string]any{"task": id})
	if tk, _ := s.Task(id); strings.Join(tk.SystemTags, ",") != "x" {
		t.Errorf("system tags %v", tk.SystemTags)
	}
}

func TestEnqueueDequeue(t *testing.T) {
	s, c := startServer(t)
	q1 := s.AddQueue("qq1")
	q2 := s.AddQueue("qq2")
	def := s.DefaultQueueID()
	id := s.AddTask(TaskSpec{Status: StatusFailed})

	d := c.ok("/v2.5/tasks.enqueue", map[string]any{"task": id, "queue": q1})
	f := d["fields"].(map[string]any)
	if num(d["queued"]) != 1 || f["execution.queue"] != q1 || f["enqueue_status"] != "failed" || f["status"] != "queued" {
		t.Errorf("enqueue: %v", d)
	}
	// re-enqueue elsewhere keeps enqueue_status and leaves only one entry
	c.ok("/tasks.enqueue", map[string]any{"task": id, "queue_name": "qq2"})
	if q, _ := s.Queue("qq1"); len(q.Entries) != 0 {
		t.Errorf("qq1 entries %v", q.Entries)
	}
	if q, _ := s.Queue(q2); len(q.Entries) != 1 {
		t.Errorf("qq2 entries %v", q.Entries)
	}
	if tk, _ := s.Task(id); tk.EnqueueStatus != "failed" || tk.Queue != q2 {
		t.Errorf("after re-enqueue %+v", tk)
	}
	// 706 into the same queue; the forced revert rewrites status queued and,
	// like the server, drops enqueue_status
	c.expectErr("/tasks.enqueue", map[string]any{"task": id, "queue": q2}, 400, 706,
		"Failed adding task to queue since task is already queued: task="+id)
	if tk, _ := s.Task(id); tk.Status != StatusQueued || tk.StatusReason != "failed enqueueing" || tk.EnqueueStatus != "" {
		t.Errorf("after 706: %+v", tk)
	}
	// queue_name creates a missing queue
	c.ok("/tasks.enqueue", map[string]any{"task": id, "queue_name": "brand-new"})
	if _, ok := s.Queue("brand-new"); !ok {
		t.Error("queue_name did not create the queue")
	}
	c.expectErr("/tasks.enqueue", map[string]any{"task": id, "queue": q1, "queue_name": "qq1"}, 400, 12,
		"Validation error (Either queue id or queue name should be provided)")
	// unknown queue: 701, status reverted
	id2 := s.AddTask(TaskSpec{})
	c.expectErr("/tasks.enqueue", map[string]any{"task": id2, "queue": "nope"}, 400, 701,
		"Invalid queue id: id=nope, company="+DefaultCompanyID)
	if tk, _ := s.Task(id2); tk.Status != StatusCreated {
		t.Errorf("not reverted: %s", tk.Status)
	}
	// default queue, then 707 when there is none
	c.ok("/tasks.enqueue", map[string]any{"task": id2})
	if tk, _ := s.Task(id2); tk.Queue != def {
		t.Errorf("default queue %s", tk.Queue)
	}
	s.DeleteQueue(def)
	c.expectErr("/tasks.enqueue", map[string]any{"task": s.AddTask(TaskSpec{})}, 400, 707,
		"No queue is tagged as the default queue for this company")
	// refused from in_progress
	id3 := s.AddTask(TaskSpec{Status: StatusInProgress})
	c.expectErr("/tasks.enqueue", map[string]any{"task": id3, "queue": q1}, 400, 110, "")

	// dequeue back to enqueue_status, new_status wins
	c.ok("/tasks.enqueue", map[string]any{"task": id3, "queue": q1, "force": true})
	d = c.ok("/tasks.dequeue", map[string]any{"task": id3})
	if num(d["dequeued"]) != 1 || num(d["updated"]) != 1 || dig(d, "fields", "status") != "in_progress" {
		t.Errorf("dequeue: %v", d)
	}
	if q, _ := s.Queue(q1); len(q.Entries) != 0 {
		t.Error("dequeue left an entry")
	}
	d = c.ok("/tasks.dequeue", map[string]any{"task": id3, "new_status": "in_progress"})
	if tk, _ := s.Task(id3); num(d["updated"]) != 1 || tk.Status != StatusInProgress {
		t.Errorf("dequeue in_progress: %v", d)
	}
	id4 := s.AddTask(TaskSpec{Queue: "qq1"})
	c.ok("/tasks.dequeue", map[string]any{"task": id4, "new_status": "in_progress"})
	if tk, _ := s.Task(id4); tk.Status != StatusInProgress || tk.EnqueueStatus != "" {
		t.Errorf("execute-style dequeue: %+v", tk)
	}
	// not queued/in_progress: updated 0, not an error
	d = c.ok("/tasks.dequeue", map[string]any{"task": s.AddTask(TaskSpec{Status: StatusCompleted})})
	if num(d["updated"]) != 0 || num(d["dequeued"]) != 1 {
		t.Errorf("dequeue completed: %v", d)
	}
	// missing task: removed from all queues, dequeued 1 updated 0
	c.ok("/queues.add_task", map[string]any{"queue": q1, "task": "ghost"})
	d = c.ok("/tasks.dequeue", map[string]any{"task": "ghost"})
	if num(d["updated"]) != 0 || num(d["dequeued"]) != 1 {
		t.Errorf("dequeue ghost: %v", d)
	}
	if q, _ := s.Queue(q1); len(q.Entries) != 0 {
		t.Error("ghost entry left")
	}
}

func TestStop(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetNow(now)
	// run by a worker: message "stopping", status kept (also with force)
	for _, force := range []bool{false, true} {
		id := s.AddTask(TaskSpec{Status: StatusInProgress})
		c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": id})
		d := c.ok("/tasks.stop", map[string]any{"task": id, "force": force, "status_reason": "user abort"})
		tk, _ := s.Task(id)
		if tk.Status != StatusInProgress || tk.StatusMessage != "stopping" || tk.StatusReason != "user abort" ||
			dig(d, "fields", "status_message") != "stopping" {
			t.Errorf("force=%v: %+v", force, tk)
		}
	}
	// worker silent for 600 s: stopped at once
	id := s.AddTask(TaskSpec{Status: StatusInProgress})
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": id})
	s.Advance(601 * time.Second)
	c.ok("/tasks.stop", map[string]any{"task": id})
	if tk, _ := s.Task(id); tk.Status != StatusStopped || tk.StatusMessage != "Stopped by tests" {
		t.Errorf("stale worker: %+v", tk)
	}
	// no worker / development: stopped
	id = s.AddTask(TaskSpec{Status: StatusInProgress, LastWorker: "w", SystemTags: []string{"development"}})
	c.ok("/tasks.stop", map[string]any{"task": id})
	if tk, _ := s.Task(id); tk.Status != StatusStopped {
		t.Errorf("development: %+v", tk)
	}
	// queued: stopped and removed from its queue
	id = s.AddTask(TaskSpec{Queue: DefaultQueueName})
	c.ok("/tasks.stop", map[string]any{"task": id})
	if q, _ := s.Queue(DefaultQueueName); len(q.Entries) != 0 {
		t.Error("stop left the entry")
	}
	// created: refused unless forced
	id = s.AddTask(TaskSpec{})
	c.expectErr("/tasks.stop", map[string]any{"task": id}, 400, 110,
		"Invalid task status (Invalid status change): current_status=created, new_status=stopped")
	c.ok("/tasks.stop", map[string]any{"task": id, "force": true})
}

func TestResetDeleteArchive(t *testing.T) {
	s, c := startServer(t)
	id := s.AddTask(TaskSpec{Queue: DefaultQueueName, Runtime: map[string]any{"a": 1},
		Execution: map[string]any{"artifacts": []any{
			map[string]any{"key": "in", "type": "t", "mode": "input"},
			map[string]any{"key": "out", "type": "t", "mode": "output"}}}})
	c.ok("/events.add_batch", map[string]any{"task": id, "type": "log", "msg": "hi"})
	d := c.ok("/tasks.reset", map[string]any{"task": id})
	if num(dig(d, "dequeued", "removed")) != 1 || dig(d, "fields", "status") != "created" || d["urls"] != nil {
		t.Errorf("reset: %v", d)
	}
	tk, _ := s.Task(id)
	if tk.Status != StatusCreated || tk.StatusReason != "reset" || tk.StatusMessage != "reset" || tk.Queue != "" ||
		len(tk.Runtime) != 0 || len(s.Events(id)) != 0 || len(dig(tk.Doc, "execution", "artifacts").([]any)) != 1 {
		t.Errorf("after reset: %+v", tk)
	}
	// delete: created is fine, others need force or archived
	c.ok("/tasks.delete", map[string]any{"task": id})
	if _, ok := s.Task(id); ok {
		t.Error("not deleted")
	}
	id = s.AddTask(TaskSpec{Status: StatusCompleted})
	c.expectErr("/tasks.delete", map[string]any{"task": id}, 400, 123, "Task cannot be deleted (due to status, use force=True)")
	c.ok("/tasks.archive", map[string]any{"tasks": []string{id}})
	if tk, _ := s.Task(id); !containsStr(tk.SystemTags, "archived") {
		t.Error("archive tag")
	}
	c.ok("/tasks.delete", map[string]any{"task": id})
	id = s.AddTask(TaskSpec{Queue: DefaultQueueName, Status: StatusFailed})
	c.ok("/tasks.archive", map[string]any{"tasks": []string{id}})
	if tk, _ := s.Task(id); tk.Status != StatusFailed || tk.Queue != "" {
		t.Errorf("archive queued: %+v", tk)
	}
	id = s.AddTask(TaskSpec{Queue: DefaultQueueName})
	d = c.ok("/tasks.delete", map[string]any{"task": id, "force": true})
	if d["deleted"] != true {
		t.Errorf("delete: %v", d)
	}
	if q, _ := s.Queue(DefaultQueueName); len(q.Entries) != 0 {
		t.Error("delete left entry")
	}
}

func TestGetByIDAndGetAll(t *testing.T) {
	s, c := startServer(t)
	a := s.AddTask(TaskSpec{Name: "alpha", Status: StatusCompleted, Tags: []string{"b", "a"},
		Runtime: map[string]any{"x": "1"}, Container: map[string]string{"image": "python:3.11", "arguments": "--ipc=host -e A=1"}})
	b := s.AddTask(TaskSpec{Name: "beta", Status: StatusInProgress})
	h := s.AddTask(TaskSpec{Name: "hidden one", SystemTags: []string{"hidden"}})
	pub := s.AddTask(TaskSpec{Name: "public", Public: true})

	d := c.ok("/v2.20/tasks.get_by_id", map[string]any{"task": a})
	task := d["task"].(map[string]any)
	if task["id"] != a || task["name"] != "alpha" || task["company"] != DefaultCompanyID ||
		fmt.Sprint(task["tags"]) != "[a b]" || task["enqueue_status"] != nil || dig(task, "execution", "docker_cmd") != nil {
		t.Errorf("get_by_id: %v", task)
	}
	if _, ok := task["created"].(string); !ok {
		t.Errorf("created %v", task["created"])
	}
	// < 2.13: docker_cmd from container
	task = c.ok("/v2.5/tasks.get_by_id", map[string]any{"task": a})["task"].(map[string]any)
	if dig(task, "execution", "docker_cmd") != "python:3.11 --ipc=host -e A=1" {
		t.Errorf("docker_cmd: %v", task["execution"])
	}
	c.ok("/v2.5/tasks.get_by_id", map[string]any{"task": pub})
	c.expectErr("/tasks.get_by_id", map[string]any{"task": "x"}, 400, 101, "Invalid task id: ids=(x)")

	ids := func(d map[string]any) []string {
		var out []string
		for _, t := range d["tasks"].([]any) {
			out = append(out, asString(t.(map[string]any)["id"]))
		}
		return out
	}
	cases := []struct {
		name string
		body map[string]any
		want []string
	}{
		{"all visible", map[string]any{}, []string{a, b, pub}},
		{"search_hidden", map[string]any{"search_hidden": true}, []string{a, b, h, pub}},
		{"id includes hidden", map[string]any{"id": []string{h}}, []string{h}},
		{"empty id list", map[string]any{"id": []string{}}, []string{a, b, pub}},
		{"status", map[string]any{"status": []string{"in_progress", "completed"}}, []string{a, b}},
		{"status scalar", map[string]any{"status": "completed"}, []string{a}},
		{"status exclude", map[string]any{"status": []string{"-completed"}}, []string{b, pub}},
		{"tags", map[string]any{"tags": []string{"a"}}, []string{a}},
		{"tags all", map[string]any{"tags": []string{"__$all", "a", "z"}}, nil},
		{"name regex", map[string]any{"name": "^al"}, []string{a}},
		{"name unanchored", map[string]any{"name": "ta"}, []string{b}},
		{"order_by desc name", map[string]any{"order_by": []string{"-name"}}, []string{pub, b, a}},
		{"order_by name", map[string]any{"order_by": "name"}, []string{a, b, pub}},
		{"page", map[string]any{"page": 1, "page_size": 2}, []string{pub}},
		{"runtime equality", map[string]any{"runtime.x": "1"}, []string{a}},
	}
	for _, tc := range cases {
		got := ids(c.ok("/v2.14/tasks.get_all", tc.body))
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
	c.expectErr("/tasks.get_all", map[string]any{"page": -1}, 400, 12, "")
	c.expectErr("/tasks.get_all", map[string]any{"page": 0, "page_size": 0}, 400, 12, "")
	c.expectErr("/tasks.get_all", map[string]any{"page": 0, "page_size": nil}, 400, 11, "")

	// only_fields with dotted paths; id is not added
	d = c.ok("/v2.14/tasks.get_all", map[string]any{"id": []string{a}, "only_fields": []string{"status", "runtime.x", "container.image", "runtime.nope"}})
	got := d["tasks"].([]any)[0].(map[string]any)
	if len(got) != 3 || got["status"] != "completed" || dig(got, "runtime", "x") != "1" || dig(got, "container", "image") != "python:3.11" {
		t.Errorf("only_fields: %v", got)
	}
	d = c.ok("/v2.14/tasks.get_all", map[string]any{"id": []string{b}, "only_fields": []string{"runtime.x"}})
	if got := d["tasks"].([]any)[0].(map[string]any); len(got) != 0 {
		t.Errorf("missing path: %v", got)
	}
	d = c.ok("/v2.14/tasks.get_all", map[string]any{"id": []string{a}, "only_fields": []string{"runtime.nope"}})
	if got := d["tasks"].([]any)[0].(map[string]any); fmt.Sprint(got) != "map[runtime:map[]]" {
		t.Errorf("empty intermediate: %v", got)
	}
	d = c.ok("/v2.14/tasks.get_all", map[string]any{"id": []string{a}, "only_fields": []string{"enqueue_status", "id"}})
	if got := d["tasks"].([]any)[0].(map[string]any); got["id"] != a {
		t.Errorf("enqueue_status requested: %v", got)
	}
	d = c.ok("/v2.14/tasks.get_all", map[string]any{"id": []string{a}, "only_fields": []string{"-runtime"}})
	if got := d["tasks"].([]any)[0].(map[string]any); got["runtime"] != nil || got["name"] != "alpha" {
		t.Errorf("exclusion: %v", got)
	}
}

func TestCreateEditCloneUpdate(t *testing.T) {
	s, c := startServer(t)
	proj := s.AddProject("proj")
	d := c.ok("/tasks.create", map[string]any{"name": " my task ", "type": "training", "project": proj,
		"script":    map[string]any{"repository": " https://x/y.git ", "entry_point": "main.py"},
		"execution": map[string]any{"parameters": map[string]any{"lr": 0.1, "Env/X": "1"}}})
	id := asString(d["id"])
	tk, _ := s.Task(id)
	if tk.Name != "my task" || tk.Status != StatusCreated || tk.Script.Repository != "https://x/y.git" || tk.Script.Binary != "python" ||
		dig(tk.Doc, "hyperparams", "Args", "lr", "value") != "0.1" || dig(tk.Doc, "hyperparams", "Env", "X", "type") != "legacy" {
		t.Errorf("create: %+v", tk.Doc)
	}
	// < 2.9 returns legacy params
	task := c.ok("/v2.5/tasks.get_by_id", map[string]any{"task": id})["task"].(map[string]any)
	if dig(task, "execution", "parameters", "lr") != "0.1" || dig(task, "execution", "parameters", "Env/X") != "1" {
		t.Errorf("legacy params: %v", task["execution"])
	}
	c.expectErr("/tasks.create", map[string]any{"name": "xx", "type": "training"}, 400, 800, "")
	c.expectErr("/tasks.create", map[string]any{"name": "abc", "type": "training", "project": "nope"}, 400, 16,
		"Invalid value for fields (expecting Project id): id=nope, field=project")
	c.expectErr("/tasks.create", map[string]any{"name": "abc", "type": "training", "parent": "nope"}, 400, 16,
		"Invalid value for fields (expecting Task id): id=nope, field=parent")

	// edit: created only without force; script shallow-merged, container replaced
	d = c.ok("/tasks.edit", map[string]any{"task": id, "script": map[string]any{"version_num": "abc123"},
		"container": map[string]any{"image": "img"}})
	tk, _ = s.Task(id)
	if tk.Script.Repository != "https://x/y.git" || tk.Script.VersionNum != "abc123" || tk.Container["image"] != "img" {
		t.Errorf("edit merge: %+v", tk.Script)
	}
	if dig(d, "fields", "script", "entry_point") != "main.py" || dig(d, "fields", "last_update") == nil {
		t.Errorf("edit fields: %v", d)
	}
	c.ok("/tasks.edit", map[string]any{"task": id, "container": map[string]any{"arguments": "-v"}})
	if tk, _ := s.Task(id); tk.Container["image"] != nil {
		t.Errorf("container not replaced: %v", tk.Container)
	}
	s.SetTaskStatus(id, StatusInProgress, "")
	c.expectErr("/tasks.edit", map[string]any{"task": id, "name": "new"}, 400, 110,
		"Invalid task status: expected=created, status=in_progress")
	c.ok("/tasks.edit", map[string]any{"task": id, "force": true, "runtime": map[string]any{"_exec_agent_hostname": "h"}})
	if tk, _ := s.Task(id); tk.Runtime["_exec_agent_hostname"] != "h" {
		t.Errorf("runtime: %v", tk.Runtime)
	}
	// < 2.13: docker_cmd written back is split into container, replacing it
	c.ok("/v2.5/tasks.edit", map[string]any{"task": id, "force": true,
		"execution": map[string]any{"docker_cmd": "nvidia/cuda:12 --gpus all"}})
	if tk, _ := s.Task(id); tk.Container["image"] != "nvidia/cuda:12" || tk.Container["arguments"] != "--gpus all" ||
		dig(tk.Doc, "execution", "docker_cmd") != nil {
		t.Errorf("docker_cmd write: %v %v", tk.Container, tk.Doc["execution"])
	}
	// edit with force writes status directly
	c.ok("/tasks.edit", map[string]any{"task": id, "force": true, "status": "published"})
	if tk, _ := s.Task(id); tk.Status != StatusPublished {
		t.Errorf("edit status: %s", tk.Status)
	}
	// update: no state machine
	c.ok("/tasks.update", map[string]any{"task": id, "status": "created", "comment": "c"})
	if tk, _ := s.Task(id); tk.Status != StatusCreated || tk.Doc["comment"] != "c" {
		t.Errorf("update: %+v", tk)
	}
	if d := c.ok("/tasks.update", map[string]any{"task": id}); num(d["updated"]) != 0 {
		t.Error("empty update")
	}

	// clone
	c.ok("/tasks.enqueue", map[string]any{"task": id})
	c.ok("/tasks.edit", map[string]any{"task": id, "force": true, "system_tags": []string{"development", "keep"}})
	d = c.ok("/v2.5/tasks.clone", map[string]any{"task": id, "new_task_name": "Clone of x"})
	cl, _ := s.Task(asString(d["id"]))
	if cl.Name != "Clone of x" || cl.Status != StatusCreated || cl.Parent != id || cl.Queue != "" ||
		strings.Join(cl.SystemTags, ",") != "keep" || cl.Script.VersionNum != "abc123" || cl.Runtime != nil || cl.Project != proj {
		t.Errorf("clone: %+v", cl)
	}
	c.expectErr("/tasks.clone", map[string]any{"task": "nope"}, 400, 101, "")
}

func TestParamsConfigArtifactsRequirementsPing(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetNow(now)
	id := s.AddTask(TaskSpec{Hyperparams: map[string]map[string]string{"Environment": {"B": "2", "A": "1"}, "Args": {"x": "y"}},
		Configuration: map[string]string{"z": "1", "a": "2"}})
	d := c.ok("/tasks.get_hyper_params", map[string]any{"tasks": []string{id}})
	items := dig(d, "params", 0, "hyperparams").([]any)
	var names []string
	for _, it := range items {
		m := it.(map[string]any)
		names = append(names, asString(m["section"])+"/"+asString(m["name"]))
	}
	if strings.Join(names, ",") != "Args/x,Environment/A,Environment/B" {
		t.Errorf("hyper params order: %v", names)
	}
	c.expectErr("/tasks.get_hyper_params", map[string]any{"tasks": []string{id, "nope"}}, 400, 101, "Invalid task id: ids=(nope)")
	c.ok("/tasks.edit_hyper_params", map[string]any{"task": id, "hyperparams": []any{
		map[string]any{"section": "Args", "name": "x", "value": "z"}}})
	s.SetTaskStatus(id, StatusCompleted, "")
	c.expectErr("/tasks.edit_hyper_params", map[string]any{"task": id, "hyperparams": []any{
		map[string]any{"section": "Args", "name": "x", "value": "z"}}}, 400, 110, "Invalid task status: expected=created, status=completed")
	c.ok("/tasks.edit_hyper_params", map[string]any{"task": id, "hyperparams": []any{
		map[string]any{"section": "properties", "name": "p", "value": "1"}}})
	d = c.ok("/tasks.get_configurations", map[string]any{"tasks": []string{id}})
	if dig(d, "configurations", 0, "configuration", 0, "name") != "a" {
		t.Errorf("configurations: %v", d)
	}
	// artifacts: created or in_progress only
	c.expectErr("/tasks.add_or_update_artifacts", map[string]any{"task": id, "artifacts": []any{map[string]any{"key": "k", "type": "t"}}},
		400, 110, "Invalid task status: expected=created, status=completed")
	s.SetTaskStatus(id, StatusInProgress, "")
	for i := 0; i < 2; i++ {
		c.ok("/tasks.add_or_update_artifacts", map[string]any{"task": id, "artifacts": []any{
			map[string]any{"key": "k", "type": "t", "uri": fmt.Sprint(i)}, map[string]any{"key": "a", "type": "t"}}})
	}
	tk, _ := s.Task(id)
	arts := dig(tk.Doc, "execution", "artifacts").([]any)
	if len(arts) != 2 || dig(arts, 0, "key") != "a" || dig(arts, 1, "uri") != "1" || dig(arts, 1, "mode") != "output" {
		t.Errorf("artifacts: %v", arts)
	}
	// set_requirements needs a script
	c.expectErr("/tasks.set_requirements", map[string]any{"task": id, "requirements": map[string]any{"pip": "x"}},
		400, 122, "Task is missing expected fields (Task has no script field): task="+id)
	id2 := s.AddTask(TaskSpec{Status: StatusCompleted, Script: &Script{Repository: "r"}})
	d = c.ok("/tasks.set_requirements", map[string]any{"task": id2, "requirements": map[string]any{"pip": "a==1"}})
	if dig(d, "fields", "script.requirements", "pip") != "a==1" {
		t.Errorf("set_requirements: %v", d)
	}
	// ping: active_duration while running; missing task ignored
	c.ok("/tasks.started", map[string]any{"task": id, "force": true})
	s.Advance(90 * time.Second)
	if d := c.ok("/tasks.ping", map[string]any{"task": id}); len(d) != 0 {
		t.Errorf("ping data %v", d)
	}
	if tk, _ := s.Task(id); num(tk.Doc["active_duration"]) != 90 || !tk.LastUpdate.Equal(now.Add(90*time.Second)) {
		t.Errorf("ping: %v %v", tk.Doc["active_duration"], tk.LastUpdate)
	}
	c.ok("/tasks.ping", map[string]any{"task": "nope"})
}

func TestPublicTaskIsReadOnly(t *testing.T) {
	s, c := startServer(t)
	id := s.AddTask(TaskSpec{Public: true})
	c.ok("/tasks.get_by_id", map[string]any{"task": id})
	c.expectErr("/tasks.started", map[string]any{"task": id}, 403, 21, "")
}
