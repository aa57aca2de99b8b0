package main

// The task console, shipped to the server as events.add_batch log events
// while the task runs. Writes never wait for the network: lines are
// cleaned, redacted and queued (in memory, or in a spool file during an
// outage or when output outpaces the server), and one goroutine ships them
// in order, retrying until they are delivered or Close's context ends.
// The queue is spool.go; one delivery attempt is apiClient.postEventBatch.
// A server that answers but refuses, and Close's bounds: logship_refuse.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	shipFlushEvery     = 200 * time.Millisecond // lines reach the server well within 1 s
	shipMaxBatchBytes  = 1 << 20                // the reference's packet size
	shipMaxEventBytes  = 64 << 10               // the reference's max_event_size
	shipMemQueueBytes  = 4 << 20                // queued beyond this, lines go to the spool file
	shipAttemptTimeout = 30 * time.Second
	shipLoginTimeout   = 5 * time.Second
	shipRetryBase      = 100 * time.Millisecond
	shipRetryMax       = 5 * time.Second // the first try after an outage comes at most this late
	shipRefusedWait    = 5 * time.Second // at Close, for a server that answers without taking the lines
	shipMinCutBytes    = 256             // a line refused as too large is cut down to this, then dropped
	shipDropNoteEvery  = 10 * time.Second
)

// lineCutMarker ends a line cut for the server (the local copy keeps it whole).
const lineCutMarker = " [clearml-agent: line cut, longer than %d bytes]"

var errShipperClosed = errors.New("console shipper: already closed")

// shipperOptions configure a consoleShipper; zero values take defaults.
type shipperOptions struct {
	taskID, worker string
	spoolDir       string    // where the spool file goes during an outage (default: the temp dir)
	localCopy      io.Writer // every line, redacted, also goes here (--log-file, stdout)
	suppressCR     bool      // agent.suppress_carriage_return
	flushEvery     time.Duration
	maxBatchBytes  int // per POST; keep under api.http.max_req_size
	maxLineBytes   int // longer lines are cut for the server
	memQueueBytes  int
	secrets        []string
	// At Close: how long to keep trying a server that answers but does not
	// take the lines (HTML pages, cut-off JSON, 5xx) before dropping them
	// (default shipRefusedWait), and one that cannot be reached before
	// leaving them in the spool file (0: until Close's context ends).
	refusedWait, outageWait time.Duration
}

// consoleShipper is an io.Writer for the task's stdout and stderr.
type consoleShipper struct {
	c         *apiClient
	opts      shipperOptions
	red       *redactor
	maxSecret int
	peekLimit int
	retryBase time.Duration
	retryMax  time.Duration

	mu        sync.Mutex
	partial   []byte // the unfinished line
	overlong  bool   // the unfinished line was already shipped cut
	skipLF    bool   // a '\r' ended the last write (suppressCR off): a leading '\n' belongs to it
	q         spoolQueue
	outage    bool // the last send failed: queue to disk
	closed    bool
	lastTS    int64
	sent      int // lines delivered
	dropped   int // lines lost: no spool file and memory full
	rejected  int // lines the server refused for good, dropped (the agent's notes not counted)
	rejectErr error
	lastErr   error
	localBuf  []byte
	closeAt   time.Time // when Close began
	lastNote  time.Time // when the console was last told about dropped lines

	attemptCancel context.CancelFunc // ends the attempt under way

	localMu   sync.Mutex // keeps local-copy writes in order without holding mu
	localErr  error
	localDead bool

	wake    chan struct{} // something was queued
	full    chan struct{} // a batch is full: ship now
	closing chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	body       bytes.Buffer // sender-owned
	msg        []byte
	rbuf       []byte
	event      logEvent
	batchLimit int  // record bytes per batch: halved on each 413
	headCut    int  // > 0: the head line was refused as too large; send it cut to this
	refuseAll  bool // a 413 even for a minimal request: drop batches whole until one is taken
}

type logEvent struct {
	Type      string `json:"type"`
	Task      string `json:"task"`
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Worker    string `json:"worker"`
	Msg       string `json:"msg"`
}

// shipperBatchBytes is the POST size for this server: the reference's
// 1 MiB, or less when api.http.max_req_size says so.
func shipperBatchBytes(cfg *agentConfig) int {
	limit := int(cfg.float("api.http.max_req_size", 15<<20)) - 4<<10
	return max(min(shipMaxBatchBytes, limit), 2*shipMaxEventBytes)
}

// newConsoleShipper starts the shipping goroutine; Close stops it.
func newConsoleShipper(c *apiClient, opts shipperOptions) *consoleShipper {
	if opts.flushEvery <= 0 {
		opts.flushEvery = shipFlushEvery
	}
	if opts.maxBatchBytes <= 0 {
		opts.maxBatchBytes = shipMaxBatchBytes
	}
	if opts.maxLineBytes <= 0 || opts.maxLineBytes > shipMaxEventBytes-128 {
		opts.maxLineBytes = shipMaxEventBytes - 128 // room for the marker and '\n'
	}
	if opts.memQueueBytes <= 0 {
		opts.memQueueBytes = shipMemQueueBytes
	}
	if opts.spoolDir == "" {
		opts.spoolDir = os.TempDir()
	}
	if opts.refusedWait <= 0 {
		opts.refusedWait = shipRefusedWait
	}
	s := &consoleShipper{
		c:          c,
		opts:       opts,
		red:        newRedactor(opts.secrets...),
		peekLimit:  max(opts.maxBatchBytes, 2*shipMaxEventBytes),
		retryBase:  shipRetryBase,
		retryMax:   shipRetryMax,
		wake:       make(chan struct{}, 1),
		full:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		done:       make(chan struct{}),
		batchLimit: opts.maxBatchBytes,
	}
	for _, sec := range s.red.secrets {
		s.maxSecret = max(s.maxSecret, len(sec))
	}
	safeID := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == '*' || r == 0 {
			return '_'
		}
		return r
	}, opts.taskID)
	s.q = spoolQueue{dir: opts.spoolDir, pattern: "clearml-console-" + safeID + "-*.spool", memCap: opts.memQueueBytes}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.run()
	return s
}

// Write queues p; complete lines are cleaned and redacted now, the rest
// waits for its newline (a secret may straddle two writes).
func (s *consoleShipper) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errShipperClosed
	}
	s.feed(p, 'D', time.Now().UnixMilli())
	s.unlockAndFlushLocal()
	return len(p), nil
}

// logf sends an agent note (INFO), such as setup output, as whole lines.
func (s *consoleShipper) logf(format string, args ...any) {
	s.note('I', fmt.Sprintf(format, args...))
}

// note sends text at a level: 'D'ebug, 'I'nfo, 'W'arning or 'E'rror.
func (s *consoleShipper) note(level byte, text string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	now := time.Now().UnixMilli()
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		s.emit(s.clean([]byte(line)), level, now)
	}
	s.unlockAndFlushLocal()
}

// feed splits p into lines; called with mu held.
func (s *consoleShipper) feed(p []byte, level byte, now int64) {
	for len(p) > 0 {
		if s.skipLF {
			s.skipLF = false
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		// Look no further than a line may grow, so a huge write is
		// buffered (and cut) piece by piece, never whole.
		window := p[:min(len(p), s.opts.maxLineBytes+s.maxSecret+1)]
		var i int
		if s.opts.suppressCR {
			i = bytes.IndexByte(window, '\n')
		} else { // '\r' ends a line too ("\r\n" counts once)
			i = bytes.IndexAny(window, "\r\n")
		}
		if i < 0 || len(s.partial)+i > s.opts.maxLineBytes+s.maxSecret {
			n := len(window)
			if i >= 0 {
				n = i
			}
			s.partial = append(s.partial, p[:n]...)
			s.trimPartial(level, now)
			p = p[n:]
			continue
		}
		line := p[:i]
		if len(s.partial) > 0 {
			s.partial = append(s.partial, line...)
			line = s.partial
		}
		s.endLine(line, level, now)
		s.partial = s.partial[:0]
		sep := p[i]
		p = p[i+1:]
		if sep == '\r' {
			if len(p) == 0 {
				s.skipLF = true
			} else if p[0] == '\n' {
				p = p[1:]
			}
		}
	}
}

// endLine finishes one line (without its newline).
func (s *consoleShipper) endLine(line []byte, level byte, now int64) {
	if s.overlong { // its head was shipped cut; the rest is for the local copy
		s.overlong = false
		s.appendLocal(s.redactLine(validUTF8(line)))
		s.appendLocal("\n")
		return
	}
	text := s.clean(line)
	if text == "\x1b[0m" { // a bare colour reset, dropped as the reference does
		return
	}
	s.emit(text, level, now)
}

// emit sends one clean line to the local copy and the queue.
func (s *consoleShipper) emit(text string, level byte, now int64) {
	s.appendLocal(text)
	s.appendLocal("\n")
	if len(text) > s.opts.maxLineBytes {
		text = cutUTF8(text, s.opts.maxLineBytes) + fmt.Sprintf(lineCutMarker, s.opts.maxLineBytes)
	}
	s.push(now, level, text)
}

func (s *consoleShipper) push(now int64, level byte, text string) {
	if !s.q.push(now, level, text, s.outage) {
		s.dropped++
	}
}

// trimPartial bounds the unfinished line: progress bars keep only their
// last two '\r' segments, and a line longer than the cap is shipped cut,
// its rest streamed to the local copy only.
func (s *consoleShipper) trimPartial(level byte, now int64) {
	if s.opts.suppressCR && !s.overlong {
		if j := bytes.LastIndexByte(s.partial, '\r'); j > 0 {
			if k := bytes.LastIndexByte(s.partial[:j], '\r'); k >= 0 {
				s.partial = s.partial[:copy(s.partial, s.partial[k+1:])]
			}
		}
	}
	if len(s.partial) <= s.opts.maxLineBytes+s.maxSecret {
		return
	}
	c := s.safeCut(s.partial)
	if c == 0 {
		return
	}
	head := s.partial[:c]
	if !s.overlong {
		s.overlong = true
		text := s.clean(head)
		s.push(now, level, cutUTF8(text, s.opts.maxLineBytes)+fmt.Sprintf(lineCutMarker, s.opts.maxLineBytes))
	}
	s.appendLocal(s.redactLine(validUTF8(head)))
	s.partial = s.partial[:copy(s.partial, s.partial[c:])]
}

// safeCut is where p can be split with no secret straddling the split or
// beginning in the held-back tail, on a rune boundary.
func (s *consoleShipper) safeCut(p []byte) int {
	c := len(p)
	if s.maxSecret > 1 {
		c -= s.maxSecret - 1
	}
	for moved := true; moved && c > 0; {
		moved = false
		for _, sec := range s.red.secrets {
			lo, hi := max(0, c-len(sec)+1), min(len(p), c+len(sec)-1)
			if i := bytes.Index(p[lo:hi], []byte(sec)); i >= 0 && lo+i < c {
				c, moved = lo+i, true
			}
		}
	}
	for c > 0 && c < len(p) && !utf8.RuneStart(p[c]) {
		c--
	}
	return c
}

// clean applies '\r' handling, drops backspaces, fixes UTF-8 and redacts.
func (s *consoleShipper) clean(line []byte) string {
	if s.opts.suppressCR {
		line = lastCRSegment(line)
	}
	if bytes.IndexByte(line, '\b') >= 0 {
		line = bytes.ReplaceAll(line, []byte{'\b'}, nil)
	}
	return s.redactLine(validUTF8(line))
}

func (s *consoleShipper) redactLine(t string) string {
	return maskURLPasswordsInText(s.red.redact(t))
}

// lastCRSegment is what a terminal shows of a '\r'-rewritten line: the
// last segment, or the one before it when the line ends with '\r'.
func lastCRSegment(b []byte) []byte {
	j := bytes.LastIndexByte(b, '\r')
	if j < 0 {
		return b
	}
	if j < len(b)-1 {
		return b[j+1:]
	}
	k := bytes.LastIndexByte(b[:j], '\r')
	return b[k+1 : j]
}

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// cutUTF8 shortens s to at most n bytes without splitting a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (s *consoleShipper) appendLocal(t string) {
	if s.opts.localCopy != nil {
		s.localBuf = append(s.localBuf, t...)
	}
}

// unlockAndFlushLocal releases mu, wakes the sender and writes the local
// copy; localMu is taken before mu is released so copies stay in order.
func (s *consoleShipper) unlockAndFlushLocal() {
	out := s.localBuf
	s.localBuf = nil
	queued := s.q.size()
	if len(out) > 0 {
		s.localMu.Lock()
	}
	s.mu.Unlock()
	if queued > 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
		if queued >= int64(s.opts.maxBatchBytes) {
			select {
			case s.full <- struct{}{}:
			default:
			}
		}
	}
	if len(out) > 0 {
		if !s.localDead {
			if _, err := s.opts.localCopy.Write(out); err != nil {
				s.localErr, s.localDead = err, true
			}
		}
		s.localMu.Unlock()
	}
}

// run ships queued lines: it lets a batch gather for flushEvery (unless
// one is full), then sends until the queue is empty.
func (s *consoleShipper) run() {
	defer close(s.done)
	for {
		closing := false
		select {
		case <-s.wake:
		case <-s.closing:
			closing = true
		case <-s.ctx.Done():
			return
		}
		if !closing {
			t := time.NewTimer(s.opts.flushEvery)
			select {
			case <-t.C:
			case <-s.full:
			case <-s.closing:
				closing = true
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			t.Stop()
		}
		if !s.drain() || closing {
			return
		}
	}
}

// drain sends batches until the queue is empty (true) or the shipper is
// stopped (false). A failed batch is retried with backoff; the queue goes
// to disk meanwhile. A refused one is split, cut or dropped (settle).
func (s *consoleShipper) drain() bool {
	attempt, reauthed := 0, false
	for {
		s.mu.Lock()
		batch, err := s.q.peek(min(s.peekLimit, s.batchLimit), &s.rbuf)
		if err != nil {
			s.lastErr = fmt.Errorf("reading the spool file %s: %w", s.q.path, err)
		}
		s.mu.Unlock()
		var retryAfter time.Duration
		if err == nil {
			if len(batch) == 0 {
				return true
			}
			b := s.encode(batch)
			actx, cancel := context.WithCancel(s.ctx)
			s.mu.Lock()
			s.attemptCancel = cancel
			s.mu.Unlock()
			retryAfter, err = s.c.postEventBatch(actx, b.body, b.events, s.attemptTimeout())
			cancel()
			if s.settle(b, err) {
				if err != nil && s.closeExpired(s.opts.refusedWait) {
					s.dropQueued(err) // refusals that take long: the flush stays bounded
				}
				attempt, reauthed = 0, false
				continue
			}
			if errors.Is(err, errTokenRefused) && !reauthed {
				reauthed = true // tokens rotate: log in again at once
				continue
			}
		}
		if s.ctx.Err() != nil {
			return false
		}
		wait := s.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, 4*s.retryMax)
		}
		attempt++
		wait, closing, over := s.closeBound(err, wait)
		if over {
			if isShipRefusal(err) {
				s.dropQueued(err)
				return true
			}
			return false // unreachable: Close leaves the lines in the spool file
		}
		wake := s.closing // Close shortens the wait to its bound
		if closing {
			wake = nil
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return false
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func (s *consoleShipper) backoff(attempt int) time.Duration {
	d := s.retryBase << min(attempt, 16)
	if d > s.retryMax || d <= 0 {
		d = s.retryMax
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// noteLevel marks the agent's own notes about dropped lines in the queue
// (sent as WARNING): they are not counted as task lines, and dropping one
// makes no further note.
const noteLevel = 'w'

var levelNames = map[byte]string{'D': "DEBUG", 'I': "INFO", 'W': "WARNING", 'E': "ERROR", noteLevel: "WARNING"}

// shipBatch is one encoded request.
type shipBatch struct {
	body     []byte
	consumed int // record bytes it covers
	events   int
	lines    int // records, notes included
	notes    int
	headLen  int // bytes of the first line's text as sent (after any cut)
	lastTS   int64
}

// encode turns queued records into json-lines events: consecutive lines
// of one level share an event of at most 64 KiB, as the reference does,
// within batchLimit; the head line is cut to headCut when that is set.
func (s *consoleShipper) encode(batch []byte) shipBatch {
	s.body.Reset()
	enc := json.NewEncoder(&s.body)
	enc.SetEscapeHTML(false)
	maxEvent := min(shipMaxEventBytes, s.batchLimit)
	b := shipBatch{lastTS: s.lastTS}
	pos := 0
	for pos < len(batch) {
		start := pos
		var level byte
		var ts int64
		n, notes := 0, 0
		s.msg = s.msg[:0]
		for pos < len(batch) {
			end := pos + bytes.IndexByte(batch[pos:], '\n')
			rts, rlevel, text := parseRecord(batch[pos:end])
			if n > 0 && (rlevel != level || len(s.msg)+len(text)+1 > maxEvent) {
				break
			}
			if n == 0 {
				level, ts = rlevel, rts
			}
			if pos == 0 {
				if s.headCut > 0 && len(text) > s.headCut {
					text = []byte(cutUTF8(string(text), s.headCut))
					b.headLen = len(text)
					text = fmt.Appendf(text, lineCutMarker, s.headCut)
				} else {
					b.headLen = len(text)
				}
			}
			s.msg = append(append(s.msg, text...), '\n')
			n++
			if rlevel == noteLevel {
				notes++
			}
			pos = end + 1
		}
		if ts <= b.lastTS { // strictly increasing, so the server keeps the order
			ts = b.lastTS + 1
		}
		mark := s.body.Len()
		s.event = logEvent{Type: "log", Task: s.opts.taskID, Timestamp: ts, Level: levelNames[level], Worker: s.opts.worker, Msg: string(s.msg)}
		_ = enc.Encode(&s.event) // cannot fail: strings and numbers only
		if s.body.Len() > s.batchLimit && b.events > 0 {
			s.body.Truncate(mark)
			pos = start
			break
		}
		b.lastTS = ts
		b.events++
		b.lines += n
		b.notes += notes
		b.consumed = pos
	}
	b.body = bytes.TrimSuffix(s.body.Bytes(), []byte("\n"))
	return b
}

// errTokenRefused: events.add_batch answered 401; the client's token is
// marked stale, so the next try logs in again.
var errTokenRefused = errors.New("events.add_batch: the server refused the token")

// Close ships what is left and waits for delivery, for ctx to end or for
// its bounds (refusedWait, outageWait): lines the server refused are
// dropped, and the error counts them; undelivered lines stay in the spool
// file, which the error names. Cancel ctx on a signal: Close returns at once.
func (s *consoleShipper) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errShipperClosed
	}
	if len(s.partial) > 0 || s.overlong { // a last unfinished line gets its newline
		s.endLine(s.partial, 'D', time.Now().UnixMilli())
		s.partial = nil
	}
	s.closed = true
	s.closeAt = time.Now()
	s.unlockAndFlushLocal()
	close(s.closing)
	if s.opts.outageWait > 0 {
		// An attempt under way when the bound ends is cut short too.
		t := time.AfterFunc(s.opts.outageWait, func() {
			s.mu.Lock()
			if s.attemptCancel != nil {
				s.attemptCancel()
			}
			s.mu.Unlock()
		})
		defer t.Stop()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	s.cancel()
	<-s.done

	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.q.size() > 0 {
		why := s.lastErr
		if why == nil {
			why = ctx.Err()
		}
		path, n, err := s.q.persist()
		if err != nil {
			errs = append(errs, fmt.Errorf("console log of task %s: lines not delivered (%v) and the spool file failed: %w", s.opts.taskID, why, err))
		} else {
			errs = append(errs, fmt.Errorf("console log of task %s: %d lines not delivered (%v); they are kept in %s", s.opts.taskID, n, why, path))
		}
	} else {
		s.q.release()
	}
	if s.rejected > 0 {
		errs = append(errs, fmt.Errorf("console log of task %s: %d lines dropped: the server refused them: %w", s.opts.taskID, s.rejected, s.rejectErr))
	}
	if s.dropped > 0 {
		errs = append(errs, fmt.Errorf("console log of task %s: %d lines lost: no spool file (%v) and the memory queue was full", s.opts.taskID, s.dropped, s.q.err))
	}
	s.localMu.Lock()
	if s.localErr != nil {
		errs = append(errs, fmt.Errorf("console log copy: %w", s.localErr))
	}
	s.localMu.Unlock()
	return errors.Join(errs...)
}

// spoolPath is the current spool file, "" when none (for tests).
func (s *consoleShipper) spoolPath() (string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q.path, s.q.spilled
}
