package fakeserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// client talks to the fake over real HTTP, like the agent does.
type client struct {
	t     *testing.T
	base  string
	hc    *http.Client
	token string // Bearer when set, else Basic with the seeded key
}

type reply struct {
	Status int
	Header http.Header
	Raw    []byte
	Meta   map[string]any
	Data   map[string]any
}

func (r *reply) code() (int, int) {
	c, _ := asInt(r.Meta["result_code"])
	s, _ := asInt(r.Meta["result_subcode"])
	return int(c), int(s)
}

func (r *reply) msg() string { return asString(r.Meta["result_msg"]) }

func startServer(t *testing.T) (*Server, *client) {
	t.Helper()
	s := New()
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, &client{t: t, base: url, hc: &http.Client{Timeout: 10 * time.Second}}
}

func basicAuth(key, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"+secret))
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func noAuth() reqOpt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// do sends method to path (e.g. "/v2.5/tasks.get_all") with body: nil,
// []byte/string (raw) or anything JSON-encodable.
func (c *client) do(method, path string, body any, opts ...reqOpt) *reply {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else {
		req.Header.Set("Authorization", basicAuth(TestsAccessKey, TestsSecretKey))
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := &reply{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var env map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&env); err != nil {
			c.t.Fatalf("bad envelope %q: %v", raw, err)
		}
		r.Meta, _ = env["meta"].(map[string]any)
		r.Data, _ = env["data"].(map[string]any)
	}
	return r
}

// get is the agent's default: GET with a JSON body.
func (c *client) get(path string, body any, opts ...reqOpt) *reply {
	c.t.Helper()
	return c.do(http.MethodGet, path, body, opts...)
}

// ok calls and requires 200.
func (c *client) ok(path string, body any, opts ...reqOpt) map[string]any {
	c.t.Helper()
	r := c.get(path, body, opts...)
	if r.Status != 200 {
		c.t.Fatalf("%s: %d %s", path, r.Status, r.Raw)
	}
	return r.Data
}

// expectErr calls and requires the given code/subcode (and message if not "").
func (c *client) expectErr(path string, body any, code, sub int, msg string, opts ...reqOpt) *reply {
	c.t.Helper()
	r := c.get(path, body, opts...)
	gc, gs := r.code()
	if r.Status != code || gc != code || gs != sub {
		c.t.Fatalf("%s: want %d/%d, got HTTP %d meta %d/%d: %s", path, code, sub, r.Status, gc, gs, r.Raw)
	}
	if msg != "" && r.msg() != msg {
		c.t.Fatalf("%s: message\n got: %q\nwant: %q", path, r.msg(), msg)
	}
	return r
}

func (c *client) login() string {
	c.t.Helper()
	d := c.ok("/auth.login", nil)
	return asString(d["token"])
}

func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func num(v any) int64 {
	i, _ := asInt(v)
	return i
}
