package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func probe(t *testing.T, h http.Handler, method, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

func TestMetricsHandlers(t *testing.T) {
	reg := newMetricRegistry()
	reg.counterVec("t_total", "T.", "queue").with("default").add(2)
	h := newHealthState()
	srv := newMetricsHandler(reg, h)

	code, hdr, body := probe(t, srv, "GET", "/metrics")
	if code != 200 || hdr.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" || !strings.Contains(body, `t_total{queue="default"} 2`) {
		t.Errorf("/metrics: %d %q\n%s", code, hdr.Get("Content-Type"), body)
	}
	if _, err := parseExposition(body); err != nil {
		t.Error(err)
	}

	// Not ready until registered; the reason is in the body.
	code, hdr, body = probe(t, srv, "GET", "/readyz")
	if code != 503 || hdr.Get("Content-Type") != "text/plain; charset=utf-8" || body != "not ready\nregistered: not registered with the server yet\n" {
		t.Errorf("/readyz at start: %d %q", code, body)
	}
	h.setReady(readyRegistered)
	h.setNotReady("server", "unreachable since 12:00:00")
	h.setNotReady("draining", "SIGTERM received")
	if code, _, body = probe(t, srv, "GET", "/readyz"); code != 503 || body != "not ready\ndraining: SIGTERM received\nserver: unreachable since 12:00:00\n" {
		t.Errorf("/readyz with two conditions: %d %q", code, body)
	}
	h.setReady("server")
	h.setReady("draining")
	if code, _, body = probe(t, srv, "GET", "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}

	// Alive with no loops; a loop that stops turning fails /healthz.
	if code, _, body = probe(t, srv, "GET", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	poll := h.loop("poll", time.Second)
	report := h.loop("report", 10*time.Second)
	if code, _, body = probe(t, srv, "GET", "/healthz"); code != 200 || !strings.Contains(body, "loop poll: turned") {
		t.Errorf("/healthz with fresh loops: %d %q", code, body)
	}
	poll.last.Store(time.Now().Add(-4 * time.Second).UnixNano()) // 4 periods: stalled
	report.last.Store(time.Now().Add(-20 * time.Second).UnixNano())
	code, _, body = probe(t, srv, "GET", "/healthz")
	if code != 503 || !strings.HasPrefix(body, "not ok\nloop poll: stalled: last turn 4") || !strings.Contains(body, "limit 3s (3 × its 1s period)") ||
		!strings.Contains(body, "loop report: turned 20") {
		t.Errorf("/healthz with a stalled loop: %d %q", code, body)
	}
	poll.beat()
	if code, _, _ = probe(t, srv, "GET", "/healthz"); code != 200 {
		t.Errorf("/healthz after the loop turned again: %d", code)
	}
	poll.last.Store(0)
	poll.done() // a loop that ended on purpose is not a stall
	if code, _, body = probe(t, srv, "HEAD", "/healthz"); code != 200 || strings.Contains(body, "poll") {
		t.Errorf("HEAD /healthz after done: %d %q", code, body)
	}

	if code, hdr, _ = probe(t, srv, "POST", "/metrics"); code != 405 || hdr.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /metrics: %d allow %q", code, hdr.Get("Allow"))
	}
	if code, _, _ = probe(t, srv, "GET", "/metrics/x"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
	if code, _, body = probe(t, srv, "GET", "/"); code != 200 || !strings.Contains(body, "/metrics") {
		t.Errorf("index: %d %q", code, body)
	}
}

func TestMetricsListenAddr(t *testing.T) {
	good := map[string]string{
		":9090":          "127.0.0.1:9090",
		"9090":           "127.0.0.1:9090",
		" 9090 ":         "127.0.0.1:9090",
		"127.0.0.1:0":    "127.0.0.1:0",
		"0.0.0.0:9090":   "0.0.0.0:9090",
		"[::]:9090":      "[::]:9090",
		"[::1]:9100":     "[::1]:9100",
		"localhost:9090": "localhost:9090",
		"10.1.2.3:65535": "10.1.2.3:65535",
	}
	for in, want := range good {
		if got, err := metricsListenAddr(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "host", ":", ":http", ":99999", ":-1", "::1:9090", "a b:80", "http://x:80"} {
		if got, err := metricsListenAddr(in); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
			t.Errorf("%q: %q, %v; want an error naming HOST:PORT", in, got, err)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsListener(t *testing.T) {
	reg := newMetricRegistry()
	reg.gaugeVec("g", "G.").with().set(7)
	s, err := listenMetrics("127.0.0.1:0", newMetricsHandler(reg, newHealthState()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	if code, body := httpGet(t, "http://"+s.addr+"/metrics"); code != 200 || !strings.Contains(body, "\ng 7\n") {
		t.Fatalf("%d %q", code, body)
	}

	// A client that sends half a request holds its own connection only.
	slow, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
	if code, _ := httpGet(t, "http://"+s.addr+"/healthz"); code != 200 {
		t.Errorf("healthz beside a stuck client: %d", code)
	}

	// The port in use: one clear error naming the address and the fix.
	_, err = listenMetrics(s.addr, http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), s.addr+" is already in use") || !strings.Contains(err.Error(), "--metrics-address") ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("second listener on %s: %v", s.addr, err)
	}

	t0 := time.Now()
	s.stop()
	s.stop()
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("stop took %v with a stuck client", d)
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Error("still listening after stop")
	}
	// The stuck client's connection was closed too.
	slow.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(slow).ReadByte(); err == nil {
		t.Error("stuck client's connection still open")
	}
}

func TestMetricsListenerAddressErrors(t *testing.T) {
	if _, err := listenMetrics("192.0.2.1:9090", http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "not an address of this machine") {
		t.Errorf("foreign address: %v", err)
	}
	if _, err := listenMetrics("bogus", http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), `invalid metrics address "bogus"`) {
		t.Errorf("bad address: %v", err)
	}
}

// startMetricsListener serves the process's own set: the agent families
// and the process's health.
func TestStartMetricsListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err := startMetricsListener(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	e, err := parseExposition(body)
	if code != 200 || err != nil {
		t.Fatalf("%d %v\n%s", code, err, body)
	}
	if v, ok := e.value("clearml_agent_ready"); !ok || v != 0 {
		t.Errorf("clearml_agent_ready = %v (%v) before registration", v, ok)
	}
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("/readyz before registration: %d", code)
	}
}
