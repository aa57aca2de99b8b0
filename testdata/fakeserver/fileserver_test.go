package fakeserver

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func startFileServer(t *testing.T, auth *Server) *FileServer {
	t.Helper()
	f := NewFileServer()
	if auth != nil {
		f.RequireAuth(auth)
	}
	if _, err := f.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// multipartBody is what the SDK's StorageHelper posts: one file field
// whose name (and file name) is the path to store.
func multipartBody(t *testing.T, files map[string]string) (*bytes.Buffer, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for name, content := range files {
		part, err := w.CreateFormFile(name, name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(part, content)
	}
	if err := w.WriteField("note", "not a file"); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	return &b, w.FormDataContentType()
}

func fsDo(t *testing.T, method, url string, body io.Reader, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestFileServerUploadDownloadDelete(t *testing.T) {
	f := startFileServer(t, nil)
	body, ct := multipartBody(t, map[string]string{"proj/task name.abc/artifacts/stats/stats.json": `{"a": 1}`})
	code, out := fsDo(t, "POST", f.URL()+"/", body, map[string]string{"Content-Type": ct})
	if code != 200 || out != `["proj/task name.abc/artifacts/stats/stats.json"]` {
		t.Fatalf("upload: %d %s", code, out)
	}
	// The SDK's artifact URL quotes the space; the server serves the decoded path.
	code, out = fsDo(t, "GET", f.URL()+"/proj/task%20name.abc/artifacts/stats/stats.json", nil, nil)
	if code != 200 || out != `{"a": 1}` {
		t.Errorf("download: %d %q", code, out)
	}
	if b, ok := f.File("/proj/task name.abc/artifacts/stats/stats.json"); !ok || string(b) != `{"a": 1}` {
		t.Errorf("File() = %q, %v", b, ok)
	}
	if code, _ := fsDo(t, "GET", f.URL()+"/nope.txt", nil, nil); code != 404 {
		t.Errorf("missing file: %d", code)
	}
	if code, out := fsDo(t, "GET", f.URL()+"/", nil, nil); code != 200 || out != "OK" {
		t.Errorf("ping: %d %q", code, out)
	}
	if code, out := fsDo(t, "DELETE", f.URL()+"/proj/task%20name.abc/artifacts/stats/stats.json", nil, nil); code != 200 ||
		out != `"proj/task name.abc/artifacts/stats/stats.json"` {
		t.Errorf("delete: %d %q", code, out)
	}
	if len(f.Files()) != 0 {
		t.Errorf("files after delete: %v", f.Files())
	}
	if code, _ := fsDo(t, "DELETE", f.URL()+"/proj/x", nil, nil); code != 404 {
		t.Errorf("delete of a missing file: %d", code)
	}
	reqs := f.Requests()
	if len(reqs) != 6 || reqs[0].Method != "POST" || len(reqs[0].Stored) != 1 || reqs[0].Code != 200 {
		t.Errorf("recorded requests: %+v", reqs)
	}
}

func TestFileServerRejectsEscapes(t *testing.T) {
	f := startFileServer(t, nil)
	for _, name := range []string{"../etc/passwd", "a/../../b", "/.."} {
		body, ct := multipartBody(t, map[string]string{name: "x"})
		if code, out := fsDo(t, "POST", f.URL()+"/", body, map[string]string{"Content-Type": ct}); code != 404 {
			t.Errorf("%q: %d %s", name, code, out)
		}
	}
	for name, want := range map[string]string{"/lead/slash.txt": "lead/slash.txt", "a//b/./c": "a/b/c", "a/../d": "d"} {
		body, ct := multipartBody(t, map[string]string{name: "x"})
		if code, out := fsDo(t, "POST", f.URL()+"/", body, map[string]string{"Content-Type": ct}); code != 200 || out != `["`+want+`"]` {
			t.Errorf("%q: %d %s, want %s", name, code, out, want)
		}
	}
}

func TestFileServerAuth(t *testing.T) {
	s, c := startServer(t)
	f := startFileServer(t, s)
	tok := c.login()
	up := func(h map[string]string) (int, string) {
		body, ct := multipartBody(t, map[string]string{"a.txt": "x"})
		hh := map[string]string{"Content-Type": ct}
		for k, v := range h {
			hh[k] = v
		}
		return fsDo(t, "POST", f.URL()+"/", body, hh)
	}
	if code, _ := up(nil); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, out := up(map[string]string{"Authorization": basicAuth(TestsAccessKey, TestsSecretKey)}); code != 401 ||
		out != "Only bearer token authorization is supported" {
		t.Errorf("basic auth: %d %q", code, out)
	}
	if code, _ := up(map[string]string{"Authorization": "Bearer " + tok + "x"}); code != 401 {
		t.Errorf("bad token: %d", code)
	}
	if code, out := up(map[string]string{"Authorization": "Bearer " + tok}); code != 200 {
		t.Errorf("bearer: %d %s", code, out)
	}
	if code, out := fsDo(t, "GET", f.URL()+"/a.txt", nil, map[string]string{"Cookie": TokenCookie + "=" + tok}); code != 200 || out != "x" {
		t.Errorf("cookie: %d %q", code, out)
	}
	if code, _ := fsDo(t, "GET", f.URL()+"/a.txt", nil, nil); code != 401 {
		t.Errorf("download without a token: %d", code)
	}
	if code, _ := fsDo(t, "GET", f.URL()+"/", nil, nil); code != 200 {
		t.Errorf("the ping needs no token: %d", code)
	}
	s.RevokeAllTokens()
	if code, _ := up(map[string]string{"Authorization": "Bearer " + tok}); code != 401 {
		t.Errorf("revoked token: %d", code)
	}
}

func TestFileServerConcurrentUploads(t *testing.T) {
	f := startFileServer(t, nil)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("d/%d.txt", i)
			body, ct := multipartBody(t, map[string]string{name: strings.Repeat("z", i*1000)})
			if code, out := fsDo(t, "POST", f.URL()+"/", body, map[string]string{"Content-Type": ct}); code != 200 {
				t.Errorf("%s: %d %s", name, code, out)
			}
			_ = f.Files()
			_ = f.Requests()
		}(i)
	}
	wg.Wait()
	if n := len(f.Files()); n != 8 {
		t.Errorf("%d files", n)
	}
}

// Real tasks always carry an output object (the SDK reads
// output.destination before an upload); clone keeps the destination.
func TestTaskOutputObject(t *testing.T) {
	s, c := startServer(t)
	seeded := s.AddTask(TaskSpec{Name: "seeded"})
	created := asString(c.ok("/tasks.create", map[string]any{"name": "created", "type": "training"})["id"])
	for _, id := range []string{seeded, created} {
		task := dig(c.ok("/tasks.get_by_id", map[string]any{"task": id}), "task")
		if out, ok := dig(task, "output").(map[string]any); !ok || len(out) != 0 {
			t.Errorf("task %s: output = %#v, want {}", id, dig(task, "output"))
		}
	}
	c.ok("/tasks.edit", map[string]any{"task": created, "output_dest": "http://files/x"})
	clone := asString(c.ok("/tasks.clone", map[string]any{"task": created})["id"])
	if d := dig(c.ok("/tasks.get_by_id", map[string]any{"task": clone}), "task", "output", "destination"); d != "http://files/x" {
		t.Errorf("clone output.destination = %v", d)
	}
	plain := asString(c.ok("/tasks.clone", map[string]any{"task": seeded})["id"])
	if out, ok := dig(c.ok("/tasks.get_by_id", map[string]any{"task": plain}), "task", "output").(map[string]any); !ok || len(out) != 0 {
		t.Errorf("clone of a task without destination: output = %#v", out)
	}
}

func TestLogRequests(t *testing.T) {
	s, c := startServer(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	s.LogRequests(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }))
	c.ok("/tasks.get_all", map[string]any{"name": "x"})
	c.expectErr("/tasks.get_by_id", map[string]any{"task": "nope"}, 400, 101, "")
	s.LogRequests(nil)
	c.ok("/tasks.get_all", nil)
	mu.Lock()
	defer mu.Unlock()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "#1 tasks.get_all -> 200/0 OK {\"name\":\"x\"}") ||
		!strings.Contains(lines[1], "#2 tasks.get_by_id -> 400/101 ") {
		t.Errorf("log:\n%s", buf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
