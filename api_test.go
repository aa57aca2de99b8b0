package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// startServer runs a fresh stand-in clearml-server for one test.
func startServer(t testing.TB) *fakeserver.Server {
	t.Helper()
	s := fakeserver.New()
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testClient is a client of the stand-in server at host with fast retries.
func testClient(t testing.TB, host string, extra map[string]string, opts clientOptions) *apiClient {
	t.Helper()
	c, err := newTestClient(t.TempDir(), host, extra, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newTestClient is testClient with HOME at home, for goroutines other
// than the test's (which may not call t.Fatal).
func newTestClient(home, host string, extra map[string]string, opts clientOptions) (*apiClient, error) {
	env := serverEnvAt(host)
	env["HOME"] = home
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := loadConfig("", mapEnv(env))
	if err != nil {
		return nil, err
	}
	c, err := newAPIClient(cfg, opts)
	if err != nil {
		return nil, err
	}
	c.retryBase = time.Millisecond
	c.retryMax = 20 * time.Millisecond
	return c, nil
}

func TestClientRequestShape(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true, workerID: "box:cpu:0"})
	var out map[string]any
	if err := c.call(context.Background(), "workers.get_all", "", map[string]any{"last_seen": 0}, &out); err != nil {
		t.Fatal(err)
	}
	if _, ok := out["workers"]; !ok {
		t.Errorf("data = %v", out)
	}
	if err := c.call(context.Background(), "queues.get_all", "2.5", map[string]any{"name": "default"}, nil); err != nil {
		t.Fatal(err)
	}
	logins := s.RequestsTo("auth.login")
	if len(logins) != 1 || !strings.HasPrefix(logins[0].Header.Get("Authorization"), "Basic ") || logins[0].Path != "/auth.login" {
		t.Fatalf("logins = %+v", logins)
	}
	reqs := s.RequestsTo("workers.get_all")
	if len(reqs) != 1 {
		t.Fatalf("get_all requests = %d", len(reqs))
	}
	r := reqs[0]
	if r.Method != "GET" || r.Path != "/workers.get_all" || string(r.Body) != `{"last_seen":0}` {
		t.Errorf("request = %s %s %s", r.Method, r.Path, r.Body)
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", r.Header)
	}
	if r.Header.Get("X-ClearML-Worker") != "box:cpu:0" || r.Header.Get("X-Trains-Worker") != "box:cpu:0" {
		t.Errorf("worker headers = %v", r.Header)
	}
	if q := s.RequestsTo("queues.get_all"); len(q) != 1 || q[0].Path != "/v2.5/queues.get_all" {
		t.Errorf("versioned request = %+v", q)
	}
}

func TestClientRetries(t *testing.T) {
	tests := []struct {
		name   string
		inject func(s *fakeserver.Server)
		calls  int // requests to workers.get_all expected
	}{
		{"502 plain", func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 2, 502) }, 3},
		{"503 envelope", func(s *fakeserver.Server) { s.FailNext("workers.get_all", 3, 503, 0, "maintenance") }, 4},
		{"429 with Retry-After", func(s *fakeserver.Server) { s.RateLimit("workers.get_all", 1, 0) }, 2},
		{"509", func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 1, 509) }, 2},
		{"dropped connection", func(s *fakeserver.Server) { s.DropNext("workers.get_all", 2) }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t)
			tt.inject(s)
			c := testClient(t, s.URL(), nil, clientOptions{interactive: true})
			if err := c.call(context.Background(), "workers.get_all", "", map[string]any{}, nil); err != nil {
				t.Fatalf("call after transient faults: %v", err)
			}
			if n := len(s.RequestsTo("workers.get_all")); n != tt.calls {
				t.Errorf("requests = %d, want %d", n, tt.calls)
			}
		})
	}
}

func TestClientNoRetryOnClientErrors(t *testing.T) {
	for _, code := range []int{400, 403, 404, 500} {
		s := startServer(t)
		s.FailNext("workers.get_all", 5, code, 7, "nope")
		c := testClient(t, s.URL(), nil, clientOptions{interactive: true})
		err := c.call(context.Background(), "workers.get_all", "", nil, nil)
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != code || ae.Subcode != 7 || ae.Msg != "nope" {
			t.Errorf("%d: err = %v", code, err)
		}
		if n := len(s.RequestsTo("workers.get_all")); n != 1 {
			t.Errorf("%d: requests = %d, want 1 (no retry)", code, n)
		}
	}
}

func TestClientServerErrorEnvelope(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true})
	err := c.call(context.Background(), "queues.get_by_id", "2.5", map[string]any{"queue": "0123456789abcdef0123456789abcdef"}, nil)
	var ae *apiError
	if !errors.As(err, &ae) || !ae.is(400, 701) {
		t.Fatalf("err = %v, want 400/701", err)
	}
}

// A revoked or rotated token costs one login and no failed call.
func TestClientReloginOn401(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), nil, clientOptions{})
	ctx := context.Background()
	if err := c.call(ctx, "workers.get_all", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	s.RevokeAllTokens()
	if err := c.call(ctx, "workers.get_all", "", nil, nil); err != nil {
		t.Fatalf("call after token revocation: %v", err)
	}
	if n := len(s.RequestsTo("auth.login")); n != 2 {
		t.Errorf("logins = %d, want 2", n)
	}
	if n := len(s.RequestsTo("workers.get_all")); n != 3 {
		t.Errorf("get_all = %d, want 3 (one refused, retried once)", n)
	}
}

func TestClientBadCredentials(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), map[string]string{"CLEARML_API_SECRET_KEY": "wrong-secret-value"}, clientOptions{interactive: true})
	err := c.call(context.Background(), "workers.get_all", "", nil, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if !strings.Contains(msg, `access key "`+fakeserver.TestsAccessKey+`"`) || strings.Contains(msg, "wrong-secret-value") || strings.Contains(msg, "\n") {
		t.Errorf("error = %q", msg)
	}
	if n := len(s.RequestsTo("auth.login")); n != 1 {
		t.Errorf("logins = %d, want 1 (no retry of a refused login)", n)
	}
}

func TestClientAuthToken(t *testing.T) {
	s := startServer(t)
	tok, err := s.IssueToken(fakeserver.TestsUserID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := testClient(t, s.URL(), map[string]string{"CLEARML_AUTH_TOKEN": tok, "CLEARML_API_ACCESS_KEY": "", "CLEARML_API_SECRET_KEY": ""}, clientOptions{})
	if err := c.call(context.Background(), "workers.get_all", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(s.RequestsTo("auth.login")); n != 0 {
		t.Errorf("logins = %d, want 0 with CLEARML_AUTH_TOKEN", n)
	}
	if got := s.RequestsTo("workers.get_all")[0].Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("Authorization = %q", got)
	}
}

func TestClientUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now
	c := testClient(t, "http://"+addr, nil, clientOptions{interactive: true, budget: 300 * time.Millisecond})
	err = c.call(context.Background(), "workers.get_all", "", nil, nil)
	var ue *unreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want unreachable", err)
	}
	want := "cannot reach the ClearML API server at http://" + addr + ": connection refused (check api.api_server in ~/clearml.conf or CLEARML_API_HOST)"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

func TestClientGivesUpOnHang(t *testing.T) {
	s := startServer(t)
	s.HangNext("workers.get_all", 0)
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true, budget: 300 * time.Millisecond})
	err := c.call(context.Background(), "workers.get_all", "", nil, nil)
	var ue *unreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
}

func TestClientNonEnvelope(t *testing.T) {
	s := startServer(t)
	s.FailPlain("workers.get_all", 0, 502)
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true, budget: 200 * time.Millisecond})
	err := c.call(context.Background(), "workers.get_all", "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "HTTP 502") || !strings.Contains(err.Error(), "not a ClearML API envelope") {
		t.Fatalf("err = %v", err)
	}
}

func TestClientConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "no ClearML API server configured"},
		{map[string]string{"CLEARML_API_HOST": "localhost:8008"}, "not an http:// or https:// URL"},
		{map[string]string{"CLEARML_API_HOST": "http://h:8008"}, "no API credentials"},
		{map[string]string{"CLEARML_API_HOST": "http://h", "CLEARML_API_ACCESS_KEY": "a", "CLEARML_API_SECRET_KEY": "b", "CLEARML_API_DEFAULT_REQ_METHOD": "patch"}, "must be get, post or put"},
	} {
		tt.env["HOME"] = t.TempDir()
		cfg, err := loadConfig("", mapEnv(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newAPIClient(cfg, clientOptions{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.env, err, tt.want)
		}
	}
}

func TestNearExpiry(t *testing.T) {
	c := &apiClient{threshold: 12 * time.Hour}
	now := time.Unix(1_000_000, 0)
	for _, tt := range []struct {
		iat, exp float64
		want     bool
	}{
		{0, 0, false},                                  // no exp: never expires
		{1_000_000, 1_000_000 + 30*86400, false},       // 30-day token, fresh
		{1_000_000 - 30*86400, 1_000_000 + 3600, true}, // an hour left, threshold 12 h
		{1_000_000 - 60, 1_000_000 + 60, true},         // 2-minute token at half life
		{1_000_000 - 10, 1_000_000 + 110, false},       // 2-minute token, early on
	} {
		if got := c.nearExpiry(tokenClaims{Iat: tt.iat, Exp: tt.exp}, now); got != tt.want {
			t.Errorf("iat=%v exp=%v: got %v, want %v", tt.iat, tt.exp, got, tt.want)
		}
	}
}

func TestParseTokenClaims(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"exp":123,"api_version":"2.31","identity":{"user":"u1"}}`))
	c, err := parseTokenClaims("h." + payload + ".sig")
	if err != nil || c.Exp != 123 || c.APIVersion != "2.31" || c.Identity.User != "u1" || c.FeatureSet != "basic" {
		t.Errorf("claims = %+v, %v", c, err)
	}
	payload = base64.RawURLEncoding.EncodeToString([]byte(`{"env":"prod"}`))
	if c, _ := parseTokenClaims("h." + payload + ".s"); c.APIVersion != "2.2" {
		t.Errorf("prod default api_version = %q", c.APIVersion)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c"} {
		if _, err := parseTokenClaims(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(200, []byte(`{"meta":{"result_code":200,"result_subcode":0,"result_msg":"OK"},"data":{"a":1}}`))
	f.Add(400, []byte(`{"meta":{"result_code":400,"result_subcode":701,"result_msg":"Invalid queue id","error_stack":null},"data":{}}`))
	f.Add(500, []byte(`{"meta":{"result_code":500,"error_stack":"Traceback..."}}`))
	f.Add(502, []byte(`<html>Bad Gateway</html>`))
	f.Add(200, []byte(`{"data":{}}`))
	f.Add(200, []byte(`{"meta":{"result_code":200},"data":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		data, err := decodeEnvelope("x.y", status, body)
		if err == nil && !json.Valid(data) {
			t.Fatalf("data %q is not JSON", data)
		}
		var ae *apiError
		if err != nil && (!errors.As(err, &ae) || ae.Code == 200) {
			t.Fatalf("err = %#v", err)
		}
	})
}

func FuzzParseTokenClaims(f *testing.F) {
	f.Add("a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1,"identity":{"user":"x"}}`)) + ".b")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := parseTokenClaims(tok)
		if err == nil && (c.APIVersion == "" || c.FeatureSet == "") {
			t.Fatalf("defaults not applied: %+v", c)
		}
	})
}

// TestAPITokenExpirationRequest: api.auth.request_token_expiration_sec asks
// auth.login for that lifetime, as the reference (a query parameter).
func TestAPITokenExpirationRequest(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), map[string]string{"CLEARML_AGENT__API__AUTH__REQUEST_TOKEN_EXPIRATION_SEC": "3600"}, clientOptions{})
	if err := c.call(t.Context(), "queues.get_all", "2.4", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	logins := s.RequestsTo("auth.login")
	if len(logins) != 1 || logins[0].RawQuery != "expiration_sec=3600" {
		t.Fatalf("auth.login requests: %+v", logins)
	}
	if left := time.Until(time.Unix(int64(c.claims.Exp), 0)); left < 55*time.Minute || left > 61*time.Minute {
		t.Errorf("token lifetime %v, want about an hour", left)
	}
}
