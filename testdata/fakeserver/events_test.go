package fakeserver

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func jsonLines(c *client, body string, opts ...reqOpt) *reply {
	c.t.Helper()
	opts = append([]reqOpt{withHeader("Content-Type", "application/json-lines")}, opts...)
	return c.do(http.MethodPost, "/events.add_batch", body, opts...)
}

func TestEventsAddBatch(t *testing.T) {
	s, c := startServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetNow(now)
	id := s.AddTask(TaskSpec{Status: StatusInProgress})
	lines := []string{
		fmt.Sprintf(`{"task":"%s","type":"log","level":"INFO","msg":"task pulled\n","timestamp":1000}`, id),
		fmt.Sprintf(`{"task":"%s","type":"log","level":"DEBUG","msg":"line 2","worker":"explicit","iter":3}`, id),
		fmt.Sprintf(`{"task":"%s","type":"training_stats_scalar","metric":"loss","variant":"v","value":0.5,"iter":5}`, id),
	}
	r := jsonLines(c, strings.Join(lines, "\n")+"\n", withHeader("X-ClearML-Worker", "myhost"))
	if r.Status != 200 || num(r.Data["added"]) != 3 || num(r.Data["errors"]) != 0 {
		t.Fatalf("add_batch: %s", r.Raw)
	}
	log := s.TaskLog(id)
	if len(log) != 2 || log[0].Msg != "task pulled\n" || log[0].Worker != "myhost" || log[0].Timestamp != 1000 ||
		log[1].Worker != "explicit" || log[1].Timestamp != now.UnixMilli() || log[1].Level != "DEBUG" {
		t.Errorf("log: %+v", log)
	}
	if s.TaskLogText(id) != "task pulled\nline 2\n" {
		t.Errorf("text %q", s.TaskLogText(id))
	}
	tk, _ := s.Task(id)
	if num(tk.Doc["last_iteration"]) != 5 || !tk.LastUpdate.Equal(now) || tk.Doc["last_metrics"] == nil {
		t.Errorf("task side effects: %v", tk.Doc)
	}
	// the recorded request keeps the batch
	if rec := s.RequestsTo("events.add_batch"); len(rec) != 1 || len(rec[0].Batch) != 3 {
		t.Errorf("recorded batch: %+v", rec)
	}
	// a plain JSON object is a batch of one; worker defaults to <unknown>
	d := c.ok("/events.add_batch", map[string]any{"task": id, "type": "log", "msg": "obj"})
	if num(d["added"]) != 1 || s.TaskLog(id)[2].Worker != "<unknown>" {
		t.Errorf("object: %v", d)
	}
	// partial failure: counted per reason
	r = jsonLines(c, fmt.Sprintf(`{"task":"%s","type":"log","msg":"ok"}`+"\n"+`{"task":"nope","type":"log"}`+"\n"+`{"task":"%s"}`, id, id))
	if num(r.Data["added"]) != 1 || num(r.Data["errors"]) != 2 ||
		num(dig(r.Data, "errors_info", "Invalid task id nope")) != 1 || num(dig(r.Data, "errors_info", "Event must have a 'type' field")) != 1 {
		t.Errorf("partial: %s", r.Raw)
	}
	// errors of the whole call
	cases := []struct {
		name      string
		r         func() *reply
		code, sub int
		msg       string
	}{
		{"empty lines body", func() *reply { return jsonLines(c, "") }, 400, 17, "Batch request contains no items"},
		{"empty object", func() *reply { return c.get("/events.add_batch", "{}") }, 400, 17, "Batch request contains no items"},
		{"none added", func() *reply { return jsonLines(c, `{"task":"nope","type":"log"}`+"\n"+`{"task":"nope","type":"log"}`) },
			400, 131, "Events not added: Invalid task id nope=2"},
		{"bad type", func() *reply { return jsonLines(c, fmt.Sprintf(`{"task":"%s","type":"bogus"}`, id)) },
			400, 131, "Events not added: Invalid event type bogus=1"},
		{"bad line", func() *reply { return jsonLines(c, "{}\n{bad") }, 400, 0, ""},
		{"empty line", func() *reply { return jsonLines(c, "{}\n\n{}") }, 400, 0, ""},
		{"non-object line", func() *reply { return jsonLines(c, "[1]") }, 400, 0, "json lines must contain objects, found: list"},
		{"JSON list body", func() *reply { return c.get("/events.add_batch", "[{}]") }, 500, 0, "Data should be a dict"},
	}
	for _, tc := range cases {
		r := tc.r()
		if code, sub := r.code(); r.Status != tc.code || code != tc.code || sub != tc.sub || (tc.msg != "" && r.msg() != tc.msg) {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Raw)
		}
	}
	if r := jsonLines(c, "{}\n\n{}"); !strings.Contains(r.msg(), "in batch item #1") {
		t.Errorf("line index: %s", r.msg())
	}
	// published tasks refuse events unless allow_locked
	pub := s.AddTask(TaskSpec{Status: StatusPublished})
	c.expectErr("/events.add", map[string]any{"task": pub, "type": "log"}, 400, 131, "Events not added: Invalid task id "+pub+"=1")
	c.ok("/events.add", map[string]any{"task": pub, "type": "log", "allow_locked": true})
}

func TestEventsGetTaskLog(t *testing.T) {
	s, c := startServer(t)
	id := s.AddTask(TaskSpec{})
	var lines []string
	for i := 1; i <= 5; i++ {
		lines = append(lines, fmt.Sprintf(`{"task":"%s","type":"log","msg":"m%d","timestamp":%d}`, id, i, i*10))
	}
	jsonLines(c, strings.Join(lines, "\n"))
	msgs := func(d map[string]any) string {
		var out []string
		for _, e := range d["events"].([]any) {
			out = append(out, asString(e.(map[string]any)["msg"]))
		}
		return strings.Join(out, ",")
	}
	cases := []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"task": id}, "m5,m4,m3,m2,m1"},
		{map[string]any{"task": id, "batch_size": 2}, "m5,m4"},
		{map[string]any{"task": id, "batch_size": 2, "from_timestamp": 40}, "m3,m2"},
		{map[string]any{"task": id, "batch_size": 2, "navigate_earlier": false}, "m1,m2"},
		{map[string]any{"task": id, "order": "asc"}, "m1,m2,m3,m4,m5"},
	}
	for _, tc := range cases {
		d := c.ok("/v2.9/events.get_task_log", tc.body)
		if got := msgs(d); got != tc.want || num(d["total"]) != 5 {
			t.Errorf("%v: got %q (%v)", tc.body, got, d["total"])
		}
	}
	c.expectErr("/events.get_task_log", map[string]any{"task": "nope"}, 400, 101, "")
}
