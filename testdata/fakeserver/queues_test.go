package fakeserver

import (
	"fmt"
	"strings"
	"testing"
)

func TestQueueFIFOAndGetNextTask(t *testing.T) {
	s, c := startServer(t)
	q := s.AddQueue("fifo")
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, s.AddTask(TaskSpec{Name: fmt.Sprintf("task %d", i), Queue: "fifo"}))
	}
	// empty queue → data {}
	empty := s.AddQueue("empty")
	if d := c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": empty}); len(d) != 0 {
		t.Errorf("empty: %v", d)
	}
	c.expectErr("/v2.14/queues.get_next_task", map[string]any{"queue": "nope"}, 400, 701,
		"Invalid queue id: id=nope, company="+DefaultCompanyID)
	// task filter: only pops when the head matches
	if d := c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": q, "task": ids[1]}); len(d) != 0 {
		t.Errorf("task filter popped: %v", d)
	}
	// FIFO, status unchanged, execution.queue kept, get_task_info
	d := c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": q, "get_task_info": true})
	if dig(d, "entry", "task") != ids[0] || dig(d, "entry", "added") == nil ||
		dig(d, "task_info", "user") != TestsUserID || dig(d, "task_info", "company") != DefaultCompanyID {
		t.Errorf("pop: %v", d)
	}
	if tk, _ := s.Task(ids[0]); tk.Status != StatusQueued || tk.Queue != q {
		t.Errorf("popped task changed: %+v", tk)
	}
	if _, ok := c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": q, "task": ids[1]})["entry"]; !ok {
		t.Error("task filter on head")
	}
	// race fix: stopped → queued on pop
	s.SetTaskStatus(ids[2], StatusStopped, "")
	d = c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": q})
	if tk, _ := s.Task(ids[2]); dig(d, "entry", "task") != ids[2] || tk.Status != StatusQueued || tk.StatusReason != "" {
		t.Errorf("stopped race fix: %+v", tk)
	}
	// dangling entry: still returned, no task_info
	ghost := s.AddTask(TaskSpec{Queue: "fifo"})
	s.DeleteTask(ghost)
	d = c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": q, "get_task_info": true})
	if dig(d, "entry", "task") != ghost || d["task_info"] != nil {
		t.Errorf("dangling: %v", d)
	}
	if qq, _ := s.Queue(q); len(qq.Entries) != 0 {
		t.Errorf("left: %v", qq.Entries)
	}
}

func TestQueueCRUD(t *testing.T) {
	s, c := startServer(t)
	d := c.ok("/v2.5/queues.create", map[string]any{"name": "  gpu  ", "tags": []string{"b", "a"}})
	gpu := asString(d["id"])
	if q, _ := s.Queue(gpu); q.Name != "gpu" {
		t.Errorf("name not stripped: %q", q.Name)
	}
	c.expectErr("/queues.create", map[string]any{"name": "gpu"}, 400, 801,
		"Value combination already exists (unique field already contains this value): name=gpu, company="+DefaultCompanyID)
	c.expectErr("/queues.create", map[string]any{"name": "ab"}, 400, 800, "Data validation error: name=String value is too short")
	c.expectErr("/queues.create", map[string]any{"name": "abc", "tags": []string{"__$x"}}, 400, 16, "")

	q := c.ok("/queues.get_by_id", map[string]any{"queue": gpu})["queue"].(map[string]any)
	if q["name"] != "gpu" || fmt.Sprint(q["tags"]) != "[a b]" || fmt.Sprint(q["entries"]) != "[]" || q["created"] == nil || q["user"] != nil {
		t.Errorf("get_by_id: %v", q)
	}
	c.expectErr("/queues.get_by_id", map[string]any{"queue": "x"}, 400, 701, "Invalid queue id: id=x, company="+DefaultCompanyID)

	d = c.ok("/queues.update", map[string]any{"queue": gpu, "display_name": "GPU"})
	if num(d["updated"]) != 1 || dig(d, "fields", "display_name") != "GPU" {
		t.Errorf("update: %v", d)
	}
	// get_default / 707 / 708
	if d := c.ok("/v2.5/queues.get_default", nil); d["name"] != "default" {
		t.Errorf("get_default: %v", d)
	}
	c.ok("/queues.update", map[string]any{"queue": gpu, "system_tags": []string{"default"}})
	r := c.expectErr("/queues.get_default", nil, 400, 708, "")
	if !strings.HasPrefix(r.msg(), "More than one queue is tagged as the default queue for this company: queues=(") {
		t.Errorf("708: %s", r.msg())
	}
	c.ok("/queues.update", map[string]any{"queue": gpu, "system_tags": []string{}})
	c.ok("/queues.delete", map[string]any{"queue": s.DefaultQueueID()})
	c.expectErr("/queues.get_default", nil, 400, 707, "No queue is tagged as the default queue for this company")

	// add_task: no existence check, 706 on duplicates, execution.queue set
	tid := s.AddTask(TaskSpec{})
	if d := c.ok("/queues.add_task", map[string]any{"queue": gpu, "task": tid}); num(d["added"]) != 1 {
		t.Errorf("add_task: %v", d)
	}
	if tk, _ := s.Task(tid); tk.Queue != gpu || tk.Status != StatusCreated {
		t.Errorf("add_task task: %+v", tk)
	}
	c.expectErr("/queues.add_task", map[string]any{"queue": gpu, "task": tid}, 400, 706, "")
	c.ok("/queues.add_task", map[string]any{"queue": gpu, "task": "ghost"})
	c.expectErr("/queues.add_task", map[string]any{"queue": "nope", "task": tid}, 400, 701, "")
	// peek / num / move
	if d := c.ok("/v2.15/queues.peek_task", map[string]any{"queue": gpu}); d["task"] != tid {
		t.Errorf("peek: %v", d)
	}
	if d := c.ok("/v2.15/queues.get_num_entries", map[string]any{"queue": gpu}); num(d["num"]) != 2 {
		t.Errorf("num: %v", d)
	}
	if d := c.ok("/queues.move_task_to_front", map[string]any{"queue": gpu, "task": "ghost"}); num(d["position"]) != 0 {
		t.Errorf("move: %v", d)
	}
	if d := c.ok("/v2.15/queues.peek_task", map[string]any{"queue": gpu}); d["task"] != "ghost" {
		t.Errorf("peek after move: %v", d)
	}
	c.expectErr("/queues.move_task_backward", map[string]any{"queue": gpu, "task": "x"}, 400, 703, "")
	// remove_task: 703, and update_task_status reverts
	c.expectErr("/queues.remove_task", map[string]any{"queue": gpu, "task": "x"}, 400, 703,
		"Invalid queue id or task not in queue: task=x, id="+gpu+", company="+DefaultCompanyID)
	if d := c.ok("/queues.remove_task", map[string]any{"queue": gpu, "task": "ghost"}); num(d["removed"]) != 1 {
		t.Errorf("remove: %v", d)
	}
	queued := s.AddTask(TaskSpec{Status: StatusFailed, Queue: "gpu"})
	c.ok("/queues.remove_task", map[string]any{"queue": gpu, "task": queued, "update_task_status": true})
	if tk, _ := s.Task(queued); tk.Status != StatusFailed || tk.Queue != "" || tk.StatusReason != "Task was removed from the queue "+gpu {
		t.Errorf("remove_task revert: %+v", tk)
	}
	// delete: 702 unless forced; force reverts the queued tasks
	q2 := s.AddQueue("other")
	t2 := s.AddTask(TaskSpec{Queue: "other"})
	c.expectErr("/queues.delete", map[string]any{"queue": q2}, 400, 702, "Queue is not empty (use force=true to delete): id="+q2)
	c.ok("/queues.delete", map[string]any{"queue": q2, "force": true})
	if tk, _ := s.Task(t2); tk.Status != StatusCreated || tk.Queue != "" || tk.StatusReason != "Queue "+q2+" was deleted" {
		t.Errorf("delete revert: %+v", tk)
	}
	// clear_queue
	t3 := s.AddTask(TaskSpec{Queue: "gpu"})
	d = c.ok("/queues.clear_queue", map[string]any{"queue": gpu})
	if fmt.Sprint(d["removed_tasks"]) != "["+tid+" "+t3+"]" {
		t.Errorf("clear_queue: %v", d)
	}
}

func TestQueuesGetAll(t *testing.T) {
	s, c := startServer(t)
	a := s.AddQueue("alpha")
	b := s.AddQueue("beta", "k8s-glue")
	s.AddQueue("my-queue.x")
	names := func(d map[string]any) string {
		var out []string
		for _, q := range d["queues"].([]any) {
			out = append(out, asString(q.(map[string]any)["name"]))
		}
		return strings.Join(out, ",")
	}
	cases := []struct {
		body map[string]any
		want string
	}{
		{map[string]any{}, "default,alpha,my-queue.x"},
		{map[string]any{"search_hidden": true}, "default,alpha,beta,my-queue.x"},
		{map[string]any{"name": "beta"}, "beta"},
		{map[string]any{"id": []string{b, a}}, "alpha,beta"},
		{map[string]any{"name": "ph|et"}, "alpha,beta"}, // unanchored regex; name shows hidden
		{map[string]any{"name": `my\-queue\.x`}, "my-queue.x"},
		{map[string]any{"name": "^ALPHA$"}, ""},
		{map[string]any{"system_tags": []string{"default"}}, "default"},
		{map[string]any{"system_tags": []string{"-default"}}, "alpha,my-queue.x"},
		{map[string]any{"order_by": []string{"-name"}}, "my-queue.x,default,alpha"},
	}
	for _, tc := range cases {
		if got := names(c.ok("/v2.5/queues.get_all", tc.body)); got != tc.want {
			t.Errorf("%v: got %q want %q", tc.body, got, tc.want)
		}
	}
	d := c.ok("/v2.5/queues.get_all", map[string]any{"id": []string{a}, "only_fields": []string{"id", "tags"}})
	if q := dig(d, "queues", 0).(map[string]any); len(q) != 2 || q["id"] != a {
		t.Errorf("only_fields: %v", q)
	}
	// max_task_entries and metadata version rule
	s.AddTask(TaskSpec{Queue: "alpha"})
	s.AddTask(TaskSpec{Queue: "alpha"})
	d = c.ok("/v2.5/queues.get_all", map[string]any{"id": []string{a}, "max_task_entries": 1})
	if l := dig(d, "queues", 0, "entries").([]any); len(l) != 1 {
		t.Errorf("max_task_entries: %v", l)
	}
	c.ok("/queues.update", map[string]any{"queue": a, "metadata": map[string]any{"k": map[string]any{"key": "k", "value": "v"}}})
	if m := dig(c.ok("/v2.16/queues.get_by_id", map[string]any{"queue": a}), "queue", "metadata"); fmt.Sprint(m) != "[]" {
		t.Errorf("metadata <=2.16: %v", m)
	}
	if m := dig(c.ok("/v2.17/queues.get_by_id", map[string]any{"queue": a}), "queue", "metadata", "k", "value"); m != "v" {
		t.Errorf("metadata 2.17: %v", m)
	}
}
