package fakeserver

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawGet sends a GET with Basic auth and returns the status and body, or the error.
func rawGet(hc *http.Client, url string) (int, http.Header, string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, strings.NewReader("{}"))
	req.Header.Set("Authorization", basicAuth(TestsAccessKey, TestsSecretKey))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), nil
}

func TestFaultStatusErrors(t *testing.T) {
	s, c := startServer(t)
	rule := s.FailNext("queues.get_default", 2, 500, 0, "boom")
	for i := 0; i < 2; i++ {
		r := c.expectErr("/v2.5/queues.get_default", nil, 500, 0, "boom")
		if stack, _ := r.Meta["error_stack"].(string); stack == "" {
			t.Errorf("500/0 without stack: %s", r.Raw)
		}
		if dig(r.Meta, "endpoint", "name") != "queues.get_default" {
			t.Errorf("endpoint: %v", r.Meta)
		}
	}
	c.ok("/v2.5/queues.get_default", nil)
	if rule.Hits() != 2 {
		t.Errorf("hits %d", rule.Hits())
	}
	if rec := s.RequestsTo("queues.get_default"); rec[0].Fault != "status" || rec[2].Fault != "" || rec[0].Code != 500 {
		t.Errorf("records: %+v", rec)
	}
	// other endpoints are untouched; subcodes pass through
	s.FailNext("tasks.get_all", 1, 400, 101, "custom")
	c.ok("/queues.get_default", nil)
	c.expectErr("/tasks.get_all", nil, 400, 101, "custom")

	cases := []struct {
		name   string
		add    func()
		status int
		body   string
		retry  string
	}{
		{"502 plain", func() { s.FailPlain("tasks.get_all", 1, 502) }, 502, "Bad Gateway", ""},
		{"503 plain", func() { s.FailPlain("", 1, 503) }, 503, "Service Unavailable", ""},
		{"429 retry-after", func() { s.RateLimit("*", 1, 3*time.Second) }, 429, "Too Many Requests", "3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.add()
			st, h, body, err := rawGet(c.hc, c.base+"/tasks.get_all")
			if err != nil || st != tc.status || body != tc.body || h.Get("Retry-After") != tc.retry ||
				strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Fatalf("got %d %q %v %v", st, body, h, err)
			}
			if st, _, _, _ := rawGet(c.hc, c.base+"/tasks.get_all"); st != 200 {
				t.Fatalf("not recovered: %d", st)
			}
		})
	}
	// Skip lets requests through first; Times 0 means until removed
	r := s.AddFault(Fault{Endpoint: "tasks.get_all", Skip: 1, Status: 503, Plain: true})
	c.ok("/tasks.get_all", nil)
	for i := 0; i < 3; i++ {
		if st, _, _, _ := rawGet(c.hc, c.base+"/tasks.get_all"); st != 503 {
			t.Fatalf("unlimited fault %d: %d", i, st)
		}
	}
	s.RemoveFault(r)
	c.ok("/tasks.get_all", nil)
	s.FailNext("", 0, 500, 0, "")
	s.ClearFaults()
	c.ok("/tasks.get_all", nil)
}

func TestFaultDelayHangDrop(t *testing.T) {
	s, c := startServer(t)
	s.DelayNext("tasks.get_all", 1, 200*time.Millisecond)
	start := time.Now()
	c.ok("/tasks.get_all", nil)
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("delay %v", el)
	}
	c.ok("/tasks.get_all", nil)
	if rec := s.RequestsTo("tasks.get_all"); rec[0].Fault != "delay" || rec[1].Fault != "" {
		t.Errorf("delay applied %q %q", rec[0].Fault, rec[1].Fault)
	}
	// delay then error
	s.AddFault(Fault{Endpoint: "tasks.get_all", Times: 1, Delay: 50 * time.Millisecond, Status: 502, Plain: true})
	if st, _, _, _ := rawGet(c.hc, c.base+"/tasks.get_all"); st != 502 {
		t.Errorf("delay+status: %d", st)
	}

	// hang: the client gives up, the server stays usable
	s.HangNext("tasks.get_all", 1)
	short := &http.Client{Timeout: 300 * time.Millisecond}
	if _, _, _, err := rawGet(short, c.base+"/tasks.get_all"); err == nil {
		t.Fatal("hang answered")
	}
	c.ok("/tasks.get_all", nil)
	recs := s.WaitForRequests("tasks.get_all", 5, 2*time.Second)
	var hung *Request
	for i := range recs {
		if recs[i].Fault == "hang" {
			hung = &recs[i]
		}
	}
	if hung == nil || hung.Code != 0 {
		t.Errorf("hang record: %+v", recs)
	}

	// drop: connection closed without an answer
	s.DropNext("tasks.get_all", 1)
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, _, _, err := rawGet(fresh, c.base+"/tasks.get_all"); err == nil {
		t.Fatal("drop answered")
	}
	if st, _, _, err := rawGet(fresh, c.base+"/tasks.get_all"); err != nil || st != 200 {
		t.Fatalf("after drop: %d %v", st, err)
	}
	if rec := s.RequestsTo("tasks.get_all"); rec[len(rec)-2].Fault != "drop" {
		t.Errorf("drop record: %+v", rec[len(rec)-2])
	}
}

func TestRefuse(t *testing.T) {
	s, c := startServer(t)
	c.ok("/tasks.get_all", nil) // leaves a keep-alive connection
	if err := s.Refuse(true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, _, _, err := rawGet(c.hc, c.base+"/tasks.get_all")
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("refuse %d: %v", i, err)
		}
	}
	if err := s.Refuse(false); err != nil {
		t.Fatal(err)
	}
	if s.URL() != c.base {
		t.Errorf("URL changed: %s", s.URL())
	}
	c.ok("/tasks.get_all", nil)
	// state survives
	if _, ok := s.Queue(DefaultQueueName); !ok {
		t.Error("state lost")
	}
}

func TestConcurrentClients(t *testing.T) {
	s, c := startServer(t)
	q := s.AddQueue("busy")
	const n = 40
	for i := 0; i < n; i++ {
		s.AddTask(TaskSpec{Queue: "busy"})
	}
	got := make(chan string, n*2)
	done := make(chan struct{})
	for w := 0; w < 4; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				st, _, body, err := rawGet(c.hc, c.base+"/v2.14/queues.get_next_task?queue="+q)
				if err != nil || st != 200 {
					return
				}
				if !strings.Contains(body, `"entry"`) {
					return
				}
				got <- body
				_, _, _, _ = rawGet(c.hc, c.base+"/workers.status_report?worker=w&timestamp=1")
			}
		}()
	}
	for w := 0; w < 4; w++ {
		<-done
	}
	close(got)
	seen := map[string]bool{}
	for b := range got {
		if seen[b] {
			t.Fatalf("entry popped twice: %s", b)
		}
		seen[b] = true
	}
	if len(seen) != n {
		t.Fatalf("popped %d of %d", len(seen), n)
	}
}

// rawPost sends body to url with Basic auth.
func rawPost(hc *http.Client, url, body string) (int, http.Header, string, error) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", basicAuth(TestsAccessKey, TestsSecretKey))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), nil
}

// TestFaultHTMLTruncatePad: a proxy's HTML pages (any status, 200 too),
// a 413 only for large bodies, cut-off JSON and oversized replies.
func TestFaultHTMLTruncatePad(t *testing.T) {
	s, c := startServer(t)
	s.HTMLNext("tasks.get_all", 1, 200)
	st, h, body, err := rawGet(c.hc, c.base+"/tasks.get_all")
	if err != nil || st != 200 || !strings.HasPrefix(body, "<html>") || !strings.Contains(body, "200 OK") ||
		!strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("HTML 200: %d %q %v %v", st, body, h, err)
	}
	if rec := s.RequestsTo("tasks.get_all"); rec[0].Fault != "html" || rec[0].Code != 200 {
		t.Errorf("record: %+v", rec[0])
	}
	c.ok("/tasks.get_all", nil)

	// 413 for bodies over 100 bytes only, until removed; other endpoints pass
	rule := s.RejectBodiesOver("tasks.get_all", 100)
	if st, _, _, _ := rawPost(c.hc, c.base+"/tasks.get_all", "{}"); st != 200 {
		t.Errorf("small body: %d", st)
	}
	big := `{"only_fields": ["` + strings.Repeat("n", 200) + `"]}`
	for i := 0; i < 2; i++ {
		st, _, body, _ := rawPost(c.hc, c.base+"/tasks.get_all", big)
		if st != 413 || !strings.Contains(body, "413 Request Entity Too Large") {
			t.Fatalf("big body %d: %d %q", i, st, body)
		}
	}
	if st, _, _, _ := rawPost(c.hc, c.base+"/queues.get_all", big); st != 200 {
		t.Errorf("other endpoint: %d", st)
	}
	if rule.Hits() != 2 {
		t.Errorf("hits %d", rule.Hits())
	}
	s.RemoveFault(rule)

	// truncated JSON: well framed, cut short, and the call took effect
	s.TruncateNext("queues.create", 1, 40)
	st, _, body, err = rawPost(c.hc, c.base+"/queues.create", `{"name": "cut-short"}`)
	var v any
	if err != nil || st != 200 || len(body) != 40 || json.Unmarshal([]byte(body), &v) == nil {
		t.Fatalf("truncated: %d %q %v", st, body, err)
	}
	if _, ok := s.Queue("cut-short"); !ok {
		t.Error("the truncated call did not take effect")
	}

	// padded: a valid envelope, size bytes larger
	s.PadNext("tasks.get_all", 1, 3<<20)
	r := c.get("/tasks.get_all", nil)
	if r.Status != 200 || len(r.Raw) < 3<<20 || len(asString(r.Data["_padding"])) != 3<<20 {
		t.Fatalf("padded reply: %d, %d bytes", r.Status, len(r.Raw))
	}
	if r := c.get("/tasks.get_all", nil); len(r.Raw) > 1<<20 {
		t.Error("padding not limited to one call")
	}
}
