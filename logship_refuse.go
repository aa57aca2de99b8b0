package main

// How the console shipper (logship.go) treats a server that answers but
// does not take a batch, and Close's bounds: a batch refused as too large
// (413) is halved, then a single line cut, and what even a minimal request
// cannot carry is dropped and counted; a 200 with an HTML page or cut-off
// JSON is no delivery and is retried, at Close for refusedWait only;
// an unreachable server gets outageWait at Close, then the spool file.

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// settle records the outcome of one attempt. True: go on at once (the
// batch was delivered or dropped, or goes again smaller); false: back off.
func (s *consoleShipper) settle(b shipBatch, err error) bool {
	s.mu.Lock()
	defer s.unlockAndFlushLocal() // a note about dropped lines goes to the local copy too
	var perm *permanentShipError
	switch {
	case err == nil:
		s.q.commit(b.consumed)
		s.lastTS, s.sent, s.outage, s.lastErr = b.lastTS, s.sent+b.lines-b.notes, false, nil
		metricsOn().linesDelivered(b.lines - b.notes)
		s.headCut, s.refuseAll = 0, false
		return true
	case !errors.As(err, &perm):
		s.lastErr = err
		if !s.outage {
			s.outage = true
			_ = s.q.spill() // keep what is queued on disk until the server takes it
		}
		_ = s.q.flush() // a crashed agent leaves its lines in the file
		return false
	case perm.tooLarge && !s.refuseAll && b.lines > 1:
		s.batchLimit = max(b.consumed/2, 1) // fewer lines per batch, from now on
		return true
	case perm.tooLarge && !s.refuseAll && b.headLen/2 >= shipMinCutBytes:
		s.headCut = b.headLen / 2
		return true
	case perm.tooLarge && !s.refuseAll:
		// Even one short line is too large: size is not the problem.
		// Drop whole batches from now on, until one is taken.
		s.refuseAll, s.batchLimit = true, s.opts.maxBatchBytes
	}
	s.q.commit(b.consumed)
	s.lastTS, s.headCut = b.lastTS, 0
	s.noteDropped(b.lines-b.notes, err)
	return true
}

// noteDropped counts n task lines the server refused for good and, at most
// every shipDropNoteEvery (and always while closing), says so in the
// console: both copies, the server's when the note gets through. Called
// with mu held.
func (s *consoleShipper) noteDropped(n int, err error) {
	if n <= 0 { // only notes were dropped: no note about a note
		return
	}
	s.rejected += n
	s.rejectErr = err
	if !s.closeAt.IsZero() || time.Since(s.lastNote) >= shipDropNoteEvery {
		s.lastNote = time.Now()
		text := fmt.Sprintf("clearml_agent: Warning: %d console lines dropped so far: %v", s.rejected, err)
		s.appendLocal(text + "\n")
		s.push(time.Now().UnixMilli(), noteLevel, text)
	}
}

// dropQueued drops every queued line: the server refuses them, and Close's
// bound for that is over.
func (s *consoleShipper) dropQueued(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped := 0
	for s.q.size() > 0 {
		batch, perr := s.q.peek(s.peekLimit, &s.rbuf)
		if perr != nil || len(batch) == 0 {
			break // Close keeps the rest in the spool file
		}
		for rec := range bytes.Lines(batch) {
			if _, level, _ := parseRecord(rec); level != noteLevel {
				dropped++
			}
		}
		s.q.commit(len(batch))
	}
	if dropped > 0 {
		s.rejected += dropped
		s.rejectErr = err
	}
}

// closeBound applies Close's bounds to a failed attempt: refusedWait for a
// server that answers without taking the lines, outageWait for one that
// cannot be reached. It returns the wait before the next try, whether Close
// has begun, and whether the bound is over.
func (s *consoleShipper) closeBound(err error, wait time.Duration) (time.Duration, bool, bool) {
	s.mu.Lock()
	at := s.closeAt
	s.mu.Unlock()
	if at.IsZero() {
		return wait, false, false
	}
	limit := s.opts.outageWait
	if isShipRefusal(err) {
		limit = s.opts.refusedWait
	}
	if limit <= 0 {
		return wait, true, false
	}
	left := time.Until(at.Add(limit))
	return min(wait, max(left, 0)), true, left <= 0
}

// closeExpired reports whether Close began more than d ago.
func (s *consoleShipper) closeExpired(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closeAt.IsZero() && time.Since(s.closeAt) >= d
}

// attemptTimeout bounds one attempt; while closing with an outage bound,
// by what is left of it.
func (s *consoleShipper) attemptTimeout() time.Duration {
	s.mu.Lock()
	at := s.closeAt
	s.mu.Unlock()
	if at.IsZero() || s.opts.outageWait <= 0 {
		return shipAttemptTimeout
	}
	left := time.Until(at.Add(max(s.opts.outageWait, s.opts.refusedWait)))
	return min(shipAttemptTimeout, max(left, time.Second))
}

// permanentShipError is a batch the server will never accept (bad task id,
// malformed request, too large): it is split, cut or dropped, not retried.
type permanentShipError struct {
	err      error
	tooLarge bool // 413: a smaller request may pass
}

func (e *permanentShipError) Error() string { return e.err.Error() }
func (e *permanentShipError) Unwrap() error { return e.err }

// refusedShipError: something answered, but not with a delivery (an HTML
// page or cut-off JSON with 200, a 500): retried, for a bounded time at Close.
type refusedShipError struct{ err error }

func (e *refusedShipError) Error() string { return e.err.Error() + " (not a delivery)" }
func (e *refusedShipError) Unwrap() error { return e.err }

// isShipRefusal: the server answers, so waiting for it to come back is
// pointless; Close gives it refusedWait, not outageWait.
func isShipRefusal(err error) bool {
	var p *permanentShipError
	var r *refusedShipError
	return errors.As(err, &p) || errors.As(err, &r) || errors.Is(err, errTokenRefused)
}
