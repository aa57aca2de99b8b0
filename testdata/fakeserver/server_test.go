package fakeserver

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestEnvelopeShape(t *testing.T) {
	_, c := startServer(t)
	r := c.get("/v2.5/queues.get_default", nil, withHeader("X-ClearML-Trx", "trx-1"))
	if r.Status != 200 || r.Header.Get("server") != "clearml" || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status/headers: %d %v", r.Status, r.Header)
	}
	for _, k := range []string{"id", "trx", "endpoint", "result_code", "result_subcode", "result_msg", "error_stack", "error_data"} {
		if _, ok := r.Meta[k]; !ok {
			t.Errorf("meta lacks %s", k)
		}
	}
	if !hex32.MatchString(asString(r.Meta["id"])) || r.Meta["trx"] != "trx-1" {
		t.Errorf("id/trx: %v %v", r.Meta["id"], r.Meta["trx"])
	}
	ep := r.Meta["endpoint"].(map[string]any)
	if ep["name"] != "queues.get_default" || ep["requested_version"] != "2.5" || ep["actual_version"] != "2.4" {
		t.Errorf("endpoint: %v", ep)
	}
	if r.Meta["result_msg"] != "OK" || r.Meta["error_stack"] != "" || len(r.Meta["error_data"].(map[string]any)) != 0 {
		t.Errorf("meta: %v", r.Meta)
	}
	if r.Data["name"] != "default" || !hex32.MatchString(asString(r.Data["id"])) {
		t.Errorf("data: %v", r.Data)
	}
	// trx defaults to the call id; X-Trains-Trx also works
	r = c.get("/queues.get_default", nil)
	if r.Meta["trx"] != r.Meta["id"] {
		t.Errorf("trx default: %v", r.Meta)
	}
	r = c.get("/queues.get_default", nil, withHeader("X-Trains-Trx", "t2"))
	if r.Meta["trx"] != "t2" {
		t.Errorf("X-Trains-Trx: %v", r.Meta["trx"])
	}
	// error: data {}, error_stack null, HTTP status == result_code
	r = c.expectErr("/v2.5/tasks.get_by_id", map[string]any{"task": "nope"}, 400, 101, "Invalid task id: ids=(nope)")
	if r.Meta["error_stack"] != nil || len(r.Data) != 0 {
		t.Errorf("error meta: %v data %v", r.Meta, r.Data)
	}
	// empty data is {} (workers.register)
	r = c.get("/workers.register", map[string]any{"worker": "w"})
	if string(r.Raw) == "" || r.Data == nil || len(r.Data) != 0 {
		t.Errorf("register data: %s", r.Raw)
	}
}

func TestPathsAndVersions(t *testing.T) {
	_, c := startServer(t)
	cases := []struct {
		path      string
		code, sub int
		versions  string // raw JSON of requested_version,actual_version
		msg       string
	}{
		{"/tasks.get_all", 200, 0, `"2.31","actual_version":"1.0"`, "OK"},
		{"/v2.5/tasks.get_all", 200, 0, `"2.5","actual_version":"1.0"`, "OK"},
		{"/v2.14/queues.get_next_task/", 400, 12, `"2.14","actual_version":"1.0"`, "Validation error (error for field 'queue'. field is required!)"},
		{"/v2.99/tasks.get_all", 200, 0, `"2.99","actual_version":"1.0"`, "OK"},
		{"/v2.4/workers.get_all", 200, 0, `"2.4","actual_version":"2.4"`, "OK"},
		{"/v2.3/workers.get_all", 404, 0, `"2.3","actual_version":null`, "Unable to find endpoint for name workers.get_all and version 2.3"},
		{"/v2.3/workers.register", 404, 0, `"2.3","actual_version":null`, "Unable to find endpoint for name workers.register and version 2.3"},
		{"/v2.1/tasks.completed", 404, 0, `"2.1","actual_version":null`, "Unable to find endpoint for name tasks.completed and version 2.1"},
		{"/v2.9/tasks.add_or_update_artifacts", 404, 0, `"2.9","actual_version":null`, "Unable to find endpoint for name tasks.add_or_update_artifacts and version 2.9"},
		{"/workers.get_runtime_properties", 404, 0, `"2.31","actual_version":null`, "Unable to find endpoint for name workers.get_runtime_properties and version 2.31"},
		{"/workers.set_runtime_properties", 404, 0, `"2.31","actual_version":null`, ""},
		{"/workers.cluster_report", 404, 0, `"2.31","actual_version":null`, ""},
		{"/users.get_vaults", 404, 0, `"2.31","actual_version":null`, ""},
		{"/v2.0/tasks.get_all", 200, 0, `2.0,"actual_version":1.0`, "OK"}, // floats below 2.1
		{"/v1.5/auth.login", 200, 0, `1.5,"actual_version":1.0`, "OK"},
		{"/foo", 400, 0, `1.0,"actual_version":null`, "Invalid request path /foo"},
		{"/v2.5/tasks", 400, 0, `1.0,"actual_version":null`, "Invalid request path /v2.5/tasks"},
		{"/a/b/tasks.get_all", 400, 0, `1.0,"actual_version":null`, "Invalid request path /a/b/tasks.get_all"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			r := c.get(tc.path, nil)
			code, sub := r.code()
			if r.Status != tc.code || code != tc.code || sub != tc.sub {
				t.Fatalf("got %d %d/%d: %s", r.Status, code, sub, r.Raw)
			}
			if !strings.Contains(string(r.Raw), `"requested_version":`+tc.versions) {
				t.Errorf("versions: want %s in %s", tc.versions, r.Raw)
			}
			if tc.msg != "" && r.msg() != tc.msg {
				t.Errorf("msg %q", r.msg())
			}
			if tc.code != 200 && r.Meta["error_stack"] != nil {
				t.Errorf("error_stack %v", r.Meta["error_stack"])
			}
		})
	}
	r := c.get("/foo", nil)
	if !strings.Contains(string(r.Raw), `"name":""`) {
		t.Errorf("dummy call envelope: %s", r.Raw)
	}
}

func TestMethodsBodiesAndQuery(t *testing.T) {
	s, c := startServer(t)
	id := s.AddTask(TaskSpec{Name: "abc"})
	// every method is accepted; GET carries a JSON body
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		r := c.do(m, "/v2.5/tasks.get_by_id", map[string]any{"task": id})
		if r.Status != 200 || dig(r.Data, "task", "id") != id {
			t.Fatalf("%s: %d %s", m, r.Status, r.Raw)
		}
	}
	// content type is ignored for JSON bodies
	r := c.get("/tasks.get_by_id", `{"task":"`+id+`"}`, withHeader("Content-Type", "text/plain"))
	if r.Status != 200 {
		t.Fatalf("text/plain body: %s", r.Raw)
	}
	// query args merge into the body, with type conversion
	s.ResetRequests()
	c.get("/tasks.get_all?page=0&page_size=2&search_hidden=true&id="+id+"&x.y=1.5&l[]=a&r=1&r=2", map[string]any{"z": "q"})
	data := s.RequestsTo("tasks.get_all")[0].Data
	want := map[string]any{"page": int64(0), "page_size": int64(2), "search_hidden": true, "id": id,
		"z": "q", "x": map[string]any{"y": 1.5}, "l": []any{"a"}, "r": []any{int64(1), int64(2)}}
	for k, v := range want {
		if got := render(data[k]); !equalJSON(got, v) {
			t.Errorf("query %s: got %#v want %#v", k, got, v)
		}
	}
	// empty and falsy bodies are {}
	for _, b := range []string{"", "null", "[]", "{}"} {
		if r := c.get("/queues.get_default", b); r.Status != 200 {
			t.Errorf("body %q: %s", b, r.Raw)
		}
	}
	// non-dict body → 500/0 "Data should be a dict" with null stack
	r = c.expectErr("/queues.get_default", "[1]", 500, 0, "Data should be a dict")
	if r.Meta["error_stack"] != nil {
		t.Errorf("stack: %v", r.Meta["error_stack"])
	}
	r = c.get("/queues.get_default", "{bad")
	if code, sub := r.code(); code != 400 || sub != 0 || !strings.HasPrefix(r.msg(), "Failed to decode JSON object") {
		t.Errorf("bad json: %s", r.Raw)
	}
	// OPTIONS → 200 empty
	r = c.do(http.MethodOptions, "/anything", nil)
	if r.Status != 200 || len(r.Raw) != 0 {
		t.Errorf("OPTIONS: %d %q", r.Status, r.Raw)
	}
	// Content-Encoding → 415 plain text
	r = c.get("/tasks.get_all", "{}", withHeader("Content-Encoding", "gzip"))
	if r.Status != 415 || string(r.Raw) != "Content encoding is not supported (gzip)" || r.Meta != nil {
		t.Errorf("415: %d %q", r.Status, r.Raw)
	}
}

func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k := range x {
			if !equalJSON(x[k], y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	if fa, ok := asFloat(a); ok {
		fb, ok := asFloat(b)
		return ok && fa == fb
	}
	return a == b
}

func TestValidationErrors(t *testing.T) {
	_, c := startServer(t)
	cases := []struct {
		path string
		body any
		msg  string
	}{
		{"/tasks.get_by_id", map[string]any{}, "Validation error (error for field 'task'. field is required!)"},
		{"/tasks.get_by_id", map[string]any{"task": nil}, "Validation error (error for field 'task'. field is required!)"},
		{"/workers.register", map[string]any{}, "Validation error (error for field 'worker'. field is required!)"},
		{"/workers.status_report", map[string]any{"worker": "w"}, "Validation error (error for field 'timestamp'. field is required!)"},
		{"/queues.create", map[string]any{}, "Validation error (error for field 'name'. field is required!)"},
		{"/tasks.started", map[string]any{"task": 5}, ""},
		{"/tasks.started", map[string]any{"task": "x", "force": "yes"}, ""},
		{"/workers.register", map[string]any{"worker": "w", "queues": "q"}, ""},
		{"/tasks.create", map[string]any{"name": "abc"}, "Validation error (error for field 'type'. field is required!)"},
		{"/tasks.create", map[string]any{"name": "abc", "type": "bogus"}, ""},
		{"/tasks.dequeue", map[string]any{"task": "x", "new_status": "bogus"}, "Validation error (Invalid task status: bogus)"},
		{"/auth.login?expiration_sec=31536001", nil, "Validation error (error for field 'expiration_sec'. '31536001' is bigger than maximum (31536000).)"},
	}
	for _, tc := range cases {
		c.expectErr(tc.path, tc.body, 400, 12, tc.msg)
	}
	// a handler panic is a 500/0 with a stack
	r := c.get("/tasks.get_all", map[string]any{"order_by": 5})
	if code, _ := r.code(); code != 400 {
		t.Errorf("order_by type: %s", r.Raw)
	}
}

func TestRecording(t *testing.T) {
	s, c := startServer(t)
	c.get("/v2.5/queues.get_all?x=1", map[string]any{"name": "default"}, withHeader("X-ClearML-Worker", "host"))
	c.get("/workers.get_all", map[string]any{"last_seen": 0})
	c.get("/bad", nil)
	all := s.Requests()
	if len(all) != 3 {
		t.Fatalf("recorded %d", len(all))
	}
	r := all[0]
	if r.Seq != 1 || r.Method != "GET" || r.Path != "/v2.5/queues.get_all" || r.Endpoint != "queues.get_all" ||
		r.Version != "2.5" || r.RawQuery != "x=1" || r.Header.Get("X-ClearML-Worker") != "host" ||
		r.Data["name"] != "default" || num(r.Data["x"]) != 1 || r.Code != 200 || !r.Done ||
		!strings.Contains(string(r.Body), "default") || !strings.Contains(string(r.Response), `"queues"`) {
		t.Errorf("record: %+v", r)
	}
	if w := s.RequestsTo("workers.get_all"); len(w) != 1 || w[0].Version != "" || num(w[0].Data["last_seen"]) != 0 {
		t.Errorf("RequestsTo: %+v", w)
	}
	if all[2].Endpoint != "" || all[2].Code != 400 {
		t.Errorf("bad path record: %+v", all[2])
	}
	// copies are independent
	all[0].Data["name"] = "changed"
	if s.Requests()[0].Data["name"] != "default" {
		t.Error("Requests() is not a copy")
	}
	s.ResetRequests()
	if len(s.Requests()) != 0 {
		t.Error("ResetRequests")
	}
}

func TestPipelineOrder(t *testing.T) {
	_, c := startServer(t)
	// endpoint before auth, auth before body, body before validation
	c.expectErr("/v2.3/workers.get_all", "{bad", 404, 0, "", noAuth())
	c.expectErr("/tasks.get_by_id", "{bad", 401, 20, "", noAuth())
	c.expectErr("/auth.get_token_for_user", "{bad", 403, 20, "")
	r := c.get("/tasks.get_by_id", "{bad")
	if code, sub := r.code(); code != 400 || sub != 0 {
		t.Errorf("bad body: %s", r.Raw)
	}
	c.expectErr("/tasks.get_by_id", "{}", 400, 12, "")
}

func TestSeedHelpers(t *testing.T) {
	s, c := startServer(t)
	id := s.AddTask(TaskSpec{Name: "seeded", Script: &Script{Repository: "https://r.git", Branch: "main",
		VersionNum: "sha", Tag: "v1", EntryPoint: "run.py", WorkingDir: "src", Diff: "d", Binary: "python3.11",
		Requirements: map[string]any{"pip": "numpy"}}, Container: map[string]string{"image": "img"}})
	if err := s.Enqueue(id, DefaultQueueName); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(id, DefaultQueueName); err == nil {
		t.Error("double Enqueue")
	}
	tk, ok := s.Task(id)
	if !ok || tk.Status != StatusQueued || tk.Queue != s.DefaultQueueID() || tk.EnqueueStatus != StatusCreated {
		t.Errorf("Enqueue: %+v", tk)
	}
	task := c.ok("/v2.5/tasks.get_by_id", map[string]any{"task": id})["task"].(map[string]any)
	for k, v := range map[string]string{"repository": "https://r.git", "branch": "main", "version_num": "sha", "tag": "v1",
		"entry_point": "run.py", "working_dir": "src", "diff": "d", "binary": "python3.11"} {
		if dig(task, "script", k) != v {
			t.Errorf("script.%s = %v", k, dig(task, "script", k))
		}
	}
	if dig(task, "script", "requirements", "pip") != "numpy" || dig(task, "execution", "docker_cmd") != "img" {
		t.Errorf("task: %v", task)
	}
	d := c.ok("/v2.14/queues.get_next_task", map[string]any{"queue": s.DefaultQueueID()})
	if dig(d, "entry", "task") != id {
		t.Errorf("pop: %v", d)
	}
	if len(s.Tasks()) != 1 || len(s.Queues()) != 1 {
		t.Errorf("Tasks/Queues")
	}
	if err := s.UpdateTask(id, func(doc map[string]any) { doc["comment"] = "x" }); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.Task(id); tk.Doc["comment"] != "x" {
		t.Error("UpdateTask")
	}
	if s.Now().IsZero() {
		t.Error("Now")
	}
}
