package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A child's counters reach its daemon: counters and histograms add up,
// gauges and scrape-time families are not carried, the result comes back,
// and the file is gone.
func TestChildMetricsRoundTrip(t *testing.T) {
	child := newAgentMetricSet(newMetricRegistry(), nil)
	child.linesDelivered(40)
	child.linesToSpool(3)
	child.venvCache(true)
	child.venvBuilt(12 * time.Second)
	child.apiAnswer("events.add_batch", 200, nil)
	child.spoolBytes.set(999)
	noteTaskResult(taskFailed)
	defer childResult.Store(nil)
	path := filepath.Join(t.TempDir(), "m.json")
	writeChildCounters(child, path)

	daemon := newAgentMetricSet(newMetricRegistry(), nil)
	daemon.linesDelivered(2)
	daemon.venvBuilt(1 * time.Second)
	res, err := daemon.mergeChildMetrics(path)
	if err != nil || res != taskFailed {
		t.Fatalf("merge: %q, %v", res, err)
	}
	if v := daemon.linesShipped.value(); v != 42 {
		t.Errorf("lines shipped %v, want 42", v)
	}
	if v := daemon.linesSpooled.value(); v != 3 {
		t.Errorf("lines spooled %v, want 3", v)
	}
	if v := daemon.venvCacheHits.value(); v != 1 {
		t.Errorf("venv hits %v", v)
	}
	if v := daemon.apiRequests.with("events.add_batch", "2xx").value(); v != 1 {
		t.Errorf("api requests %v", v)
	}
	if v := daemon.spoolBytes.value(); v != 0 {
		t.Errorf("a gauge was carried: %v", v)
	}
	_, e := writeAndParse(t, daemon.reg)
	if v, ok := e.value("clearml_agent_venv_build_duration_seconds_count"); !ok || v != 2 {
		t.Errorf("venv build count %v %v, want 2", v, ok)
	}
	if v, ok := e.value("clearml_agent_venv_build_duration_seconds_sum"); !ok || v != 13 {
		t.Errorf("venv build sum %v %v, want 13", v, ok)
	}
	// Merged once: the file is gone, and a missing file is no error.
	if res, err := daemon.mergeChildMetrics(path); res != "" || err != nil {
		t.Errorf("second merge: %q %v", res, err)
	}
	// A nil set (metrics off) is a no-op everywhere.
	var off *agentMetricSet
	off.linesDelivered(1)
	off.apiAnswer("x", 0, nil)
	off.taskStarted("q", time.Now(), time.Now())
	off.taskEnded("q", taskCompleted, time.Second)
}

func TestParseEnqueueTime(t *testing.T) {
	want := time.Date(2026, 5, 1, 10, 0, 0, 123000000, time.UTC)
	for _, s := range []string{"2026-05-01T10:00:00.123000+00:00", "2026-05-01T10:00:00.123Z", "2026-05-01T10:00:00.123", "2026-05-01T12:00:00.123+02:00"} {
		if got := parseEnqueueTime(s); !got.Equal(want) {
			t.Errorf("%q: %v", s, got)
		}
	}
	if got := parseEnqueueTime(""); !got.IsZero() {
		t.Errorf("empty: %v", got)
	}
}

// A loop waiting for a running task is not stalled; once it turns again
// the period counts.
func TestLoopBeatPark(t *testing.T) {
	h := newHealthState()
	b := h.loop("poll", time.Second)
	b.last.Store(time.Now().Add(-time.Hour).UnixNano())
	if ok, _ := h.live(time.Now()); ok {
		t.Fatal("a loop silent for an hour is live")
	}
	b.park(true)
	b.last.Store(time.Now().Add(-time.Hour).UnixNano())
	if ok, lines := h.live(time.Now()); !ok || !strings.Contains(strings.Join(lines, "\n"), "waiting for a running task") {
		t.Errorf("parked: %v %v", ok, lines)
	}
	b.park(false)
	if ok, _ := h.live(time.Now()); !ok {
		t.Error("unparked just now: not live")
	}
	b.done()
	var none *loopBeat
	none.beat()
	none.park(true)
	none.done()
	h.setReady(readyRegistered)
	h.setNotReady(readyStopping, "shutting down")
	if ok, lines := h.ready(); ok || len(lines) != 1 || !strings.HasPrefix(lines[0], "stopping: ") {
		t.Errorf("stopping: %v %v", ok, lines)
	}
}
