package fakeserver

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

var isoMicro = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$`)

func workerIDs(d map[string]any) string {
	var out []string
	for _, w := range d["workers"].([]any) {
		out = append(out, asString(w.(map[string]any)["id"]))
	}
	return strings.Join(out, ",")
}

func TestWorkerRegisterAndTTL(t *testing.T) {
	s, c := startServer(t)
	start := time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC)
	s.SetNow(start)
	def := s.DefaultQueueID()
	c.ok("/workers.register", map[string]any{"worker": "host:cpu:0", "queues": []string{def}})
	c.expectErr("/workers.register", map[string]any{"worker": "w", "queues": []string{def, "zz", "aa"}}, 400, 701,
		"Invalid queue id: ids=(aa, zz)")
	c.expectErr("/workers.register", map[string]any{"worker": "w", "timeout": -5}, 400, 1002,
		"Worker registration failed (invalid timeout): timeout=-5, worker=w")

	d := c.ok("/workers.get_all", map[string]any{"last_seen": 0})
	w := dig(d, "workers", 0).(map[string]any)
	if w["id"] != "host:cpu:0" || w["key"] != "worker_"+DefaultCompanyID+"_"+TestsUserID+"_host:cpu:0" ||
		dig(w, "user", "id") != TestsUserID || dig(w, "user", "name") != "tests" || dig(w, "company", "name") != "clearml" ||
		w["ip"] != "127.0.0.1" || num(w["register_timeout"]) != 600 || w["register_time"] != "2025-01-02T03:04:05.123456+00:00" ||
		w["last_activity_time"] != w["register_time"] || w["last_report_time"] != nil || w["task"] != nil || w["queue"] != nil {
		t.Errorf("entry: %v", w)
	}
	if q := dig(w, "queues", 0).(map[string]any); q["id"] != def || q["name"] != "default" || num(q["num_tasks"]) != 0 || q["next_task"] != nil {
		t.Errorf("queues: %v", q)
	}
	// TTL: gone 600 s after register
	s.Advance(599 * time.Second)
	if len(s.Workers()) != 1 {
		t.Fatal("expired early")
	}
	s.Advance(time.Second)
	if len(s.Workers()) != 0 || workerIDs(c.ok("/workers.get_all", map[string]any{"last_seen": 0})) != "" {
		t.Fatal("not expired")
	}
	// custom timeout; re-register overwrites fresh
	c.ok("/workers.register", map[string]any{"worker": "w2", "timeout": 30, "tags": []string{"x"}})
	s.Advance(10 * time.Second)
	c.ok("/workers.register", map[string]any{"worker": "w2", "timeout": 30})
	if w, _ := s.WorkerByID("w2"); len(w.Tags) != 0 || !w.RegisterTime.Equal(s.Now()) {
		t.Errorf("re-register: %+v", w)
	}
	s.Advance(29 * time.Second)
	if _, ok := s.WorkerByID("w2"); !ok {
		t.Fatal("TTL not reset by register")
	}
	// status_report resets the TTL
	c.ok("/workers.status_report", map[string]any{"worker": "w2", "timestamp": 1})
	s.Advance(29 * time.Second)
	if _, ok := s.WorkerByID("w2"); !ok {
		t.Fatal("TTL not reset by status_report")
	}
	s.Advance(2 * time.Second)
	if _, ok := s.WorkerByID("w2"); ok {
		t.Fatal("w2 should have expired")
	}
	// unregister: missing is fine; per-user key
	c.ok("/workers.unregister", map[string]any{"worker": "never"})
	s.AddUser(User{ID: "u2", Name: "U2"})
	s.AddCredentials("u2", "U2KEY", "u2secret")
	u2 := withHeader("Authorization", basicAuth("U2KEY", "u2secret"))
	c.ok("/workers.register", map[string]any{"worker": "same"})
	c.ok("/workers.register", map[string]any{"worker": "same"}, u2)
	if n := len(s.Workers()); n != 2 {
		t.Fatalf("two users → two entries, got %d", n)
	}
	c.ok("/workers.unregister", map[string]any{"worker": "same"}, u2)
	if ws := s.Workers(); len(ws) != 1 || ws[0].User.ID != TestsUserID {
		t.Errorf("unregister by other user: %+v", ws)
	}
	if d := c.ok("/workers.get_count", nil); num(d["count"]) != 1 {
		t.Errorf("get_count: %v", d)
	}
}

func TestWorkerStatusReport(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetNow(now)
	proj := s.AddProject("Proj")
	def := s.DefaultQueueID()
	q2 := s.AddQueue("second")
	task := s.AddTask(TaskSpec{Name: "running", Project: proj, Status: StatusInProgress})
	next := s.AddTask(TaskSpec{Name: "waiting", Queue: DefaultQueueName})

	// auto-register on the first report, with 600 s and no queues
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": now.UnixMilli(), "tags": []string{"a"},
		"machine_stats": map[string]any{"cpu_usage": []any{1.5}}}, withHeader("X-Forwarded-For", "10.0.0.9"))
	w, ok := s.WorkerByID("w")
	if !ok || w.RegisterTimeout != 600 || len(w.Queues) != 0 || w.IP != "10.0.0.9" || strings.Join(w.Tags, ",") != "a" ||
		w.MachineStats["cpu_usage"] == nil || w.LastReportTime.IsZero() {
		t.Fatalf("auto-register: %+v", w)
	}
	// queues replaced only when non-empty; tags replaced (cleared when omitted / null)
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "queues": []string{def, q2}, "tags": nil, "machine_stats": nil})
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "queues": []string{}})
	w, _ = s.WorkerByID("w")
	if strings.Join(w.Queues, ",") != def+","+q2 || len(w.Tags) != 0 || w.MachineStats == nil {
		t.Errorf("queues/tags: %+v", w)
	}
	// with a task: task last_worker & times, entry task/project/queue
	s.Advance(time.Minute)
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": task, "queue": def, "queues": []string{def, q2}})
	tk, _ := s.Task(task)
	if tk.LastWorker != "w" || !tk.LastUpdate.Equal(now.Add(time.Minute)) || tk.Doc["last_worker_report"] == nil {
		t.Errorf("task: %+v", tk)
	}
	s.UpdateTask(task, func(d map[string]any) { d["active_duration"] = int64(12); d["last_iteration"] = int64(7) })
	e := dig(c.ok("/workers.get_all", nil), "workers", 0).(map[string]any)
	if dig(e, "task", "id") != task || dig(e, "task", "name") != "running" || num(dig(e, "task", "running_time")) != 12000 ||
		num(dig(e, "task", "last_iteration")) != 7 || dig(e, "project", "name") != "Proj" || dig(e, "queue", "id") != def ||
		dig(e, "queue", "next_task", "id") != next || dig(e, "queue", "next_task", "name") != "waiting" || num(dig(e, "queue", "num_tasks")) != 1 {
		t.Errorf("entry with task: %v", e)
	}
	for _, k := range []string{"register_time", "last_activity_time", "last_report_time"} {
		if !isoMicro.MatchString(asString(e[k])) {
			t.Errorf("%s format %v", k, e[k])
		}
	}
	// queue not among queues → no "queue"
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": task, "queue": "other"})
	if e := dig(c.ok("/workers.get_all", nil), "workers", 0).(map[string]any); e["queue"] != nil {
		t.Errorf("queue shown: %v", e["queue"])
	}
	// unknown task: 101, entry still saved with the old task, activity updated
	s.Advance(time.Minute)
	c.expectErr("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": "nope", "tags": []string{"z"}}, 400, 101,
		"Invalid task id: id=nope, company="+DefaultCompanyID)
	w, _ = s.WorkerByID("w")
	if w.Task == nil || w.Task.ID != task || strings.Join(w.Tags, ",") != "z" || !w.LastActivityTime.Equal(s.Now()) ||
		w.LastReportTime.Equal(s.Now()) || w.Queue != "" {
		t.Errorf("after 101: %+v", w)
	}
	// no task → task and project cleared
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1})
	if w, _ = s.WorkerByID("w"); w.Task != nil || w.Project != nil {
		t.Errorf("task not cleared: %+v", w)
	}
}

func TestWorkersGetAllFilters(t *testing.T) {
	s, c := startServer(t)
	s.SetNow(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := func(id string, tags, sys []string) {
		c.ok("/workers.register", map[string]any{"worker": id, "tags": tags, "system_tags": sys, "timeout": 100000})
	}
	reg("gpu-1", []string{"gpu", "fast"}, nil)
	reg("gpu-2", []string{"gpu"}, []string{"svc"})
	reg("cpu-1", nil, []string{"svc"})
	s.Advance(2 * time.Hour)
	reg("cpu-2", []string{"fast"}, nil)
	cases := []struct {
		body map[string]any
		want string
	}{
		{map[string]any{}, "cpu-2"}, // last_seen defaults to 3600
		{map[string]any{"last_seen": 0}, "cpu-1,cpu-2,gpu-1,gpu-2"},
		{map[string]any{"last_seen": nil}, "cpu-1,cpu-2,gpu-1,gpu-2"},
		{map[string]any{"last_seen": 7201}, "cpu-1,cpu-2,gpu-1,gpu-2"},
		{map[string]any{"last_seen": 0, "tags": []string{"gpu"}}, "gpu-1,gpu-2"},
		{map[string]any{"last_seen": 0, "tags": []string{"gpu", "fast"}}, "cpu-2,gpu-1,gpu-2"},
		{map[string]any{"last_seen": 0, "tags": []string{"-fast"}}, "cpu-1,gpu-2"},
		{map[string]any{"last_seen": 0, "tags": []string{"gpu", "-fast"}}, "gpu-2"},
		{map[string]any{"last_seen": 0, "system_tags": []string{"svc"}, "tags": []string{"gpu"}}, "gpu-2"},
		{map[string]any{"last_seen": 0, "worker_pattern": "gpu-*"}, "gpu-1,gpu-2"},
		{map[string]any{"last_seen": 0, "worker_pattern": "?pu-1"}, "cpu-1,gpu-1"},
	}
	for _, tc := range cases {
		if got := workerIDs(c.ok("/workers.get_all", tc.body)); got != tc.want {
			t.Errorf("%v: got %q want %q", tc.body, got, tc.want)
		}
	}
	if d := c.ok("/workers.get_count", map[string]any{"tags": []string{"gpu"}}); num(d["count"]) != 2 {
		t.Errorf("get_count: %v", d)
	}
	if d := c.ok("/workers.get_count", map[string]any{"last_seen": 60}); num(d["count"]) != 1 {
		t.Errorf("get_count last_seen: %v", d)
	}
}
