package main

// The metrics listener: /metrics, /healthz (alive and loops turning) and
// /readyz (registered and able to take a task), for Prometheus, Kubernetes
// probes and systemd's watchdog alike. It is opt-in, on loopback unless the
// operator names another address, and it never waits on the agent's loops:
// loops publish (an atomic store, a flag), the handlers only read.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// healthStaleFactor: a loop that has not turned for this many periods is
// stalled, and /healthz fails.
const healthStaleFactor = 3

// Readiness conditions; each holds the agent not ready while set.
const (
	readyRegistered = "registered" // set until workers.register succeeds
	readyStopping   = "stopping"   // a drain or stop: no new task is taken
	readyServer     = "server"     // the API server does not answer
)

// healthState is what /healthz and /readyz report.
type healthState struct {
	mu       sync.Mutex
	loops    map[*loopBeat]struct{}
	notReady map[string]string // condition -> reason
}

func newHealthState() *healthState {
	return &healthState{
		loops:    map[*loopBeat]struct{}{},
		notReady: map[string]string{readyRegistered: "not registered with the server yet"},
	}
}

// agentHealth is the process's health, fed by the daemon's loops.
var agentHealth = newHealthState()

// loopBeat is one loop's heartbeat. A loop that waits on the server (an
// outage) must keep beating while it retries: a failed liveness probe
// restarts the agent, which cures nothing in an outage.
type loopBeat struct {
	h      *healthState
	name   string
	period time.Duration
	last   atomic.Int64 // unix nanoseconds
	parked atomic.Bool  // waiting on purpose (a running task), not stalled
}

// loop registers a loop that turns every period (it counts as turning now).
func (h *healthState) loop(name string, period time.Duration) *loopBeat {
	b := &loopBeat{h: h, name: name, period: max(period, time.Second)}
	b.beat()
	h.mu.Lock()
	h.loops[b] = struct{}{}
	h.mu.Unlock()
	return b
}

// beat marks one turn of the loop; it is one atomic store. A nil beat
// (metrics off) does nothing, as do park and done.
func (b *loopBeat) beat() {
	if b != nil {
		b.last.Store(time.Now().UnixNano())
	}
}

// park marks the loop waiting on purpose (on) or turning again (off).
func (b *loopBeat) park(on bool) {
	if b != nil {
		b.parked.Store(on)
		b.beat()
	}
}

// done unregisters a loop that ended on purpose (a drain, a shutdown).
func (b *loopBeat) done() {
	if b == nil {
		return
	}
	b.h.mu.Lock()
	delete(b.h.loops, b)
	b.h.mu.Unlock()
}

// live reports whether every loop turned within healthStaleFactor periods;
// reasons has a line per loop, stalled or not, sorted by name.
func (h *healthState) live(now time.Time) (ok bool, reasons []string) {
	h.mu.Lock()
	loops := make([]*loopBeat, 0, len(h.loops))
	for b := range h.loops {
		loops = append(loops, b)
	}
	h.mu.Unlock()
	slices.SortFunc(loops, func(a, b *loopBeat) int { return strings.Compare(a.name, b.name) })
	ok = true
	for _, b := range loops {
		ago := now.Sub(time.Unix(0, b.last.Load())).Round(time.Millisecond)
		limit := healthStaleFactor * b.period
		if b.parked.Load() {
			reasons = append(reasons, fmt.Sprintf("loop %s: waiting for a running task", b.name))
		} else if ago > limit {
			ok = false
			reasons = append(reasons, fmt.Sprintf("loop %s: stalled: last turn %s ago, limit %s (%d × its %s period)", b.name, ago, limit, healthStaleFactor, b.period))
		} else {
			reasons = append(reasons, fmt.Sprintf("loop %s: turned %s ago", b.name, ago))
		}
	}
	return ok, reasons
}

// setNotReady holds the agent not ready for cond until setReady(cond).
func (h *healthState) setNotReady(cond, reason string) {
	h.mu.Lock()
	h.notReady[cond] = reason
	h.mu.Unlock()
}

func (h *healthState) setReady(cond string) {
	h.mu.Lock()
	delete(h.notReady, cond)
	h.mu.Unlock()
}

// ready reports readiness and, when not ready, one "cond: reason" per
// condition, sorted.
func (h *healthState) ready() (ok bool, reasons []string) {
	h.mu.Lock()
	for c, r := range h.notReady {
		reasons = append(reasons, c+": "+r)
	}
	h.mu.Unlock()
	slices.Sort(reasons)
	return len(reasons) == 0, reasons
}

func (h *healthState) isReady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.notReady) == 0
}

// newMetricsHandler serves /metrics, /healthz and /readyz.
func newMetricsHandler(reg *metricRegistry, h *healthState) http.Handler {
	mux := http.NewServeMux()
	var page struct {
		sync.Mutex
		buf []byte // the last page's, reused: scrapes allocate little
	}
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !getOrHead(w, r) {
			return
		}
		page.Lock()
		defer page.Unlock()
		page.buf = reg.appendText(page.buf[:0])
		w.Header().Set("Content-Type", metricsContentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(page.buf)))
		w.Write(page.buf)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if getOrHead(w, r) {
			ok, lines := h.live(time.Now())
			writeProbe(w, ok, "ok", "not ok", lines)
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if getOrHead(w, r) {
			ok, lines := h.ready()
			writeProbe(w, ok, "ready", "not ready", lines)
		}
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		if getOrHead(w, r) {
			writeProbe(w, true, "clearml-agent "+agentVersion+": /metrics /healthz /readyz", "", nil)
		}
	})
	return mux
}

func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
	return false
}

// writeProbe answers 200 or 503 with a first line and the reasons.
func writeProbe(w http.ResponseWriter, ok bool, okLine, failLine string, lines []string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	first := okLine
	if !ok {
		first = failLine
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, first+"\n")
	for _, l := range lines {
		io.WriteString(w, l+"\n")
	}
}

// metricsListenAddr turns the operator's address into the one to listen
// on. A bare port (":9090" or "9090") means loopback, 127.0.0.1:9090: the
// page shows the agent's queues and load, so it is published only where
// the operator says; "0.0.0.0:9090" or "[::]:9090" listens everywhere.
func metricsListenAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s != "" && strings.Trim(s, "0123456789") == "" {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 0 || n > 65535 || strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("invalid metrics address %q: want HOST:PORT or PORT, e.g. 127.0.0.1:9090, or 0.0.0.0:9090 to listen on every interface", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// metricsServer is a running listener.
type metricsServer struct {
	addr string // the address it listens on (the port filled in for :0)
	srv  *http.Server
	once sync.Once
}

// startMetricsListener starts the listener of the process's metrics and
// health; it is listening when it returns, and stop closes it.
func startMetricsListener(addr string) (stop func(), err error) {
	s, err := listenMetrics(addr, newMetricsHandler(agentMetrics().reg, agentHealth))
	if err != nil {
		return nil, err
	}
	return s.stop, nil
}

// listenMetrics listens on addr (see metricsListenAddr) and serves h in
// its own goroutine. Timeouts keep a stuck client from holding a
// connection; each request has its own goroutine, so a slow scraper
// delays nobody else.
func listenMetrics(addr string, h http.Handler) (*metricsServer, error) {
	a, err := metricsListenAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, metricsListenError(a, err)
	}
	s := &metricsServer{addr: ln.Addr().String(), srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          log.New(io.Discard, "", 0), // a bad client is no news for the agent's log
	}}
	go s.srv.Serve(ln)
	return s, nil
}

// stop closes the listener and its connections (at most a second for a
// scrape under way); a second call does nothing.
func (s *metricsServer) stop() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s.srv.Shutdown(ctx) != nil {
			s.srv.Close()
		}
	})
}

func metricsListenError(addr string, err error) error {
	const fix = "pick another with --metrics-address HOST:PORT (agent.metrics.address, CLEARML_AGENT_METRICS_ADDRESS)"
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("metrics address %s is already in use (another agent on this machine?): stop what listens there or %s", addr, fix)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("no permission to listen on %s (ports below 1024 need privileges): %s", addr, fix)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("metrics address %s is not an address of this machine: name one of its addresses, or 0.0.0.0 for all; %s", addr, fix)
	}
	return fmt.Errorf("cannot listen on %s for metrics: %v: %s", addr, err, fix)
}
