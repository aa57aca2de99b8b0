package main

// The console shipper against a server that answers but refuses: 413
// (split, cut, drop with a count), HTML pages and cut-off JSON (retried,
// bounded at Close), and Close's bounds and cancellation.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// closeWithin closes sh with a generous context and returns Close's error
// and how long it took.
func closeWithin(t *testing.T, sh *consoleShipper) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err := sh.Close(ctx)
	return time.Since(start), err
}

// TestShipPostEventBatchClasses: what each kind of answer to
// events.add_batch means for the shipper.
func TestShipPostEventBatchClasses(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), nil, clientOptions{workerID: "box:0"})
	task := s.AddTask(fakeserver.TaskSpec{Name: "classes"})
	body := []byte(fmt.Sprintf(`{"type":"log","task":%q,"timestamp":1,"level":"INFO","worker":"box:0","msg":"x\n"}`, task))
	type class int
	const (
		ok class = iota
		outage
		refused
		permanent
		tooLarge
	)
	classOf := func(err error) class {
		var p *permanentShipError
		var r *refusedShipError
		switch {
		case err == nil:
			return ok
		case errors.As(err, &p) && p.tooLarge:
			return tooLarge
		case errors.As(err, &p):
			return permanent
		case errors.As(err, &r):
			return refused
		}
		return outage
	}
	for _, tc := range []struct {
		name  string
		fault fakeserver.Fault
		want  class
	}{
		{"delivered", fakeserver.Fault{}, ok},
		{"413 HTML", fakeserver.Fault{Status: 413, HTML: true}, tooLarge},
		{"413 envelope", fakeserver.Fault{Status: 413}, tooLarge},
		{"403 HTML", fakeserver.Fault{Status: 403, HTML: true}, permanent},
		{"404 plain", fakeserver.Fault{Status: 404, Plain: true}, permanent},
		{"400 envelope", fakeserver.Fault{Status: 400, Subcode: 12}, permanent},
		{"200 HTML", fakeserver.Fault{Status: 200, HTML: true}, refused},
		{"truncated JSON", fakeserver.Fault{Truncate: 25}, refused},
		{"500 envelope", fakeserver.Fault{Status: 500}, refused},
		{"500 HTML", fakeserver.Fault{Status: 500, HTML: true}, refused},
		{"502 HTML", fakeserver.Fault{Status: 502, HTML: true}, outage},
		{"503 plain", fakeserver.Fault{Status: 503, Plain: true}, outage},
		{"429", fakeserver.Fault{Status: 429, Plain: true}, outage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.ClearFaults()
			if tc.fault != (fakeserver.Fault{}) {
				tc.fault.Endpoint, tc.fault.Times = "events.add_batch", 1
				s.AddFault(tc.fault)
			}
			_, err := c.postEventBatch(context.Background(), body, 1, 5*time.Second)
			if got := classOf(err); got != tc.want {
				t.Errorf("class %d, want %d (err %v)", got, tc.want, err)
			}
		})
	}
}

// TestConsoleShipper413SplitAndCut: a proxy refuses bodies over 4 KiB.
// Batches are split until they pass, a line too long for any request is
// cut with a marker, and nothing else is lost or reordered.
func TestConsoleShipper413SplitAndCut(t *testing.T) {
	s := startServer(t)
	s.RejectBodiesOver("events.add_batch", 4096)
	local := &lockedBuffer{}
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true, localCopy: local})
	var want []string
	for i := range 300 {
		want = append(want, fmt.Sprintf("line %04d %s", i, strings.Repeat("x", i%90)))
	}
	long := "LONG " + strings.Repeat("y", 20000)
	want = append(want[:150], append([]string{long}, want[150:]...)...)
	sh.Write([]byte(strings.Join(want, "\n") + "\n"))
	took, err := closeWithin(t, sh)
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("Close took %v", took)
	}
	got := strings.Split(strings.TrimSuffix(s.TaskLogText(task), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d lines on the server, want %d", len(got), len(want))
	}
	for i := range want {
		if want[i] == long {
			if !strings.HasPrefix(got[i], "LONG yyy") || len(got[i]) > 4096 || !strings.Contains(got[i], "[clearml-agent: line cut") {
				t.Errorf("the long line arrived as %.80q... (%d bytes)", got[i], len(got[i]))
			}
			continue
		}
		if got[i] != want[i] {
			t.Fatalf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
	if !strings.Contains(local.String(), long+"\n") {
		t.Error("the local copy lost the whole long line")
	}
	for _, r := range s.RequestsTo("events.add_batch") {
		if r.Code == 200 && len(r.Body) > 4096 {
			t.Errorf("a %d-byte batch passed the 4 KiB proxy", len(r.Body))
		}
	}
}

// TestConsoleShipper413Everything: every batch, however small, is refused
// with an HTML 413. The lines are dropped and counted, the console says
// so, and Close takes moments (it used to wait for its whole context).
func TestConsoleShipper413Everything(t *testing.T) {
	s := startServer(t)
	s.HTMLNext("events.add_batch", 0, http.StatusRequestEntityTooLarge)
	local := &lockedBuffer{}
	sh, _ := newTestShipper(t, s, shipperOptions{suppressCR: true, localCopy: local})
	for i := range 28 {
		fmt.Fprintf(sh, "task line %02d\n", i)
	}
	took, err := closeWithin(t, sh)
	if err == nil || !strings.Contains(err.Error(), "28 lines dropped") || !strings.Contains(err.Error(), "HTTP 413") {
		t.Errorf("Close = %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("Close took %v with a server that refuses for good", took)
	}
	if !strings.Contains(local.String(), "console lines dropped so far") {
		t.Errorf("the local log does not say lines were dropped:\n%s", local.String())
	}
	if n := len(s.RequestsTo("events.add_batch")); n > 40 {
		t.Errorf("%d requests for 28 lines", n)
	}
}

// TestConsoleShipperDropNoteShipped: a 4xx HTML page drops one batch; the
// next batches pass, and the server's console says how many were dropped.
func TestConsoleShipperDropNoteShipped(t *testing.T) {
	s := startServer(t)
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true})
	sh.Write([]byte("first\n"))
	waitFor(t, "the first line", func() bool { return strings.Contains(s.TaskLogText(task), "first") })
	rule := s.HTMLNext("events.add_batch", 1, http.StatusForbidden)
	sh.Write([]byte("refused one\nrefused two\n"))
	waitFor(t, "the refusal", func() bool { return rule.Hits() == 1 })
	sh.Write([]byte("after\n"))
	_, err := closeWithin(t, sh)
	if err == nil || !strings.Contains(err.Error(), "2 lines dropped") {
		t.Errorf("Close = %v", err)
	}
	log := s.TaskLogText(task)
	if !strings.Contains(log, "clearml_agent: Warning: 2 console lines dropped so far: events.add_batch") ||
		!strings.Contains(log, "after\n") || strings.Contains(log, "refused one") {
		t.Errorf("server log:\n%s", log)
	}
	for _, e := range s.TaskLog(task) {
		if strings.Contains(e.Msg, "dropped so far") && e.Level != "WARNING" {
			t.Errorf("note level %s", e.Level)
		}
	}
}

// TestConsoleShipperRefusedBounded: a proxy answers 200 with an HTML page,
// or the reply is cut-off JSON. That is not a delivery: retried while the
// task runs and for refusedWait at Close, then dropped with a count; the
// shipper recovers when the server does.
func TestConsoleShipperRefusedBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeserver.Fault
	}{
		{"200 HTML", fakeserver.Fault{Status: 200, HTML: true}},
		{"truncated JSON", fakeserver.Fault{Truncate: 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t)
			tc.fault.Endpoint = "events.add_batch"
			f := tc.fault
			f.Times = 3
			s.AddFault(f)
			sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true, refusedWait: 700 * time.Millisecond})
			sh.Write([]byte("retried until taken\n"))
			waitFor(t, "delivery after 3 refusals", func() bool { sh.mu.Lock(); defer sh.mu.Unlock(); return sh.sent == 1 })
			if !strings.Contains(s.TaskLogText(task), "retried until taken") {
				t.Fatal("the line is not on the server")
			}
			rule := s.AddFault(tc.fault) // now for good
			for i := range 10 {
				fmt.Fprintf(sh, "never taken %d\n", i)
			}
			took, err := closeWithin(t, sh)
			if err == nil || !strings.Contains(err.Error(), "10 lines dropped") {
				t.Errorf("Close = %v", err)
			}
			if took < 600*time.Millisecond || took > 5*time.Second {
				t.Errorf("Close took %v, want about refusedWait", took)
			}
			if rule.Hits() < 2 {
				t.Errorf("%d tries: a refusal is retried", rule.Hits())
			}
			if p, _ := sh.spoolPath(); p != "" {
				t.Errorf("spool file %s left for dropped lines", p)
			}
		})
	}
}

// TestConsoleShipperCloseOutageWait: an unreachable server gets outageWait
// at Close, then the lines stay in the spool file.
func TestConsoleShipperCloseOutageWait(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	sh, _ := newTestShipper(t, s, shipperOptions{suppressCR: true, spoolDir: dir, outageWait: 500 * time.Millisecond})
	if err := s.Refuse(true); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		fmt.Fprintf(sh, "kept %d\n", i)
	}
	took, err := closeWithin(t, sh)
	if err == nil || !strings.Contains(err.Error(), "5 lines not delivered") || !strings.Contains(err.Error(), dir) {
		t.Errorf("Close = %v", err)
	}
	if took < 400*time.Millisecond || took > 5*time.Second {
		t.Errorf("Close took %v, want about outageWait", took)
	}
}

// TestConsoleShipperCloseCancelled: a cancelled context (a signal) ends
// Close at once, even while the server refuses and refusedWait is long.
func TestConsoleShipperCloseCancelled(t *testing.T) {
	s := startServer(t)
	s.HTMLNext("events.add_batch", 0, 200)
	sh, _ := newTestShipper(t, s, shipperOptions{suppressCR: true, refusedWait: time.Minute})
	sh.Write([]byte("pending\n"))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	err := sh.Close(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %v after its context was cancelled", took)
	}
	if err == nil || !strings.Contains(err.Error(), "1 lines not delivered") {
		t.Errorf("Close = %v", err)
	}
}
