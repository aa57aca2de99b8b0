package main

// The task console, shipped to the server as events.add_batch log events
// while the task runs. Writes never wait for the network: lines are
// cleaned, redacted and queued (in memory, or in a spool file during an
// outage or when output outpaces the server), and one goroutine ships them
// in order, retrying until they are delivered or Close's context ends.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
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
	shipMemHardBytes   = 64 << 20               // without a usable spool file, lines beyond this are dropped
	shipAttemptTimeout = 30 * time.Second
	shipLoginTimeout   = 5 * time.Second
	shipRetryBase      = 100 * time.Millisecond
	shipRetryMax       = 5 * time.Second // the first try after an outage comes at most this late
	shipDiskFlushBytes = 64 << 10
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
	rejected  int // lines the server refused for good
	rejectErr error
	lastErr   error
	localBuf  []byte

	localMu   sync.Mutex // keeps local-copy writes in order without holding mu
	localErr  error
	localDead bool

	wake    chan struct{} // something was queued
	full    chan struct{} // a batch is full: ship now
	closing chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	body  bytes.Buffer // sender-owned
	msg   []byte
	rbuf  []byte
	event logEvent
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
	s := &consoleShipper{
		c:         c,
		opts:      opts,
		red:       newRedactor(opts.secrets...),
		peekLimit: max(opts.maxBatchBytes, 2*shipMaxEventBytes),
		retryBase: shipRetryBase,
		retryMax:  shipRetryMax,
		wake:      make(chan struct{}, 1),
		full:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
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
	t = s.red.redact(t)
	if strings.Contains(t, "://") && strings.Contains(t, "@") {
		t = urlPasswordInText().ReplaceAllString(t, "${1}"+mask+"@")
	}
	return t
}

// urlPasswordInText finds user:password@ in URLs without touching the
// spacing around them (maskURLPasswords rejoins fields).
var urlPasswordInText = lazyRegexp(`([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@`)

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
// to disk meanwhile.
func (s *consoleShipper) drain() bool {
	attempt, reauthed := 0, false
	for {
		s.mu.Lock()
		batch, err := s.q.peek(s.peekLimit, &s.rbuf)
		if err != nil {
			s.lastErr = fmt.Errorf("reading the spool file %s: %v", s.q.path, err)
		}
		s.mu.Unlock()
		var retryAfter time.Duration
		if err == nil {
			if len(batch) == 0 {
				return true
			}
			body, consumed, events, lines, lastTS := s.encode(batch)
			retryAfter, err = s.post(s.ctx, body, events)
			s.mu.Lock()
			switch {
			case err == nil:
				s.q.commit(consumed)
				s.lastTS, s.sent, s.outage, s.lastErr = lastTS, s.sent+lines, false, nil
			case isPermanentShip(err):
				s.q.commit(consumed)
				s.lastTS, s.rejected, s.rejectErr = lastTS, s.rejected+lines, err
			default:
				s.lastErr = err
				if !s.outage {
					s.outage = true
					_ = s.q.spill() // keep what is queued on disk until the server is back
				}
				_ = s.q.flush() // a crashed agent leaves its lines in the file
			}
			s.mu.Unlock()
			if err == nil || isPermanentShip(err) {
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
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return false
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

var levelNames = map[byte]string{'D': "DEBUG", 'I': "INFO", 'W': "WARNING", 'E': "ERROR"}

// encode turns queued records into json-lines events: consecutive lines
// of one level share an event of at most 64 KiB, as the reference does.
// It returns the body, the record bytes it covers, and counts.
func (s *consoleShipper) encode(batch []byte) (body []byte, consumed, events, lines int, lastTS int64) {
	s.body.Reset()
	enc := json.NewEncoder(&s.body)
	enc.SetEscapeHTML(false)
	lastTS = s.lastTS
	pos := 0
	for pos < len(batch) {
		start := pos
		var level byte
		var ts int64
		n := 0
		s.msg = s.msg[:0]
		for pos < len(batch) {
			end := pos + bytes.IndexByte(batch[pos:], '\n')
			rts, rlevel, text := parseRecord(batch[pos:end])
			if n > 0 && (rlevel != level || len(s.msg)+len(text)+1 > shipMaxEventBytes) {
				break
			}
			if n == 0 {
				level, ts = rlevel, rts
			}
			s.msg = append(append(s.msg, text...), '\n')
			n++
			pos = end + 1
		}
		if ts <= lastTS { // strictly increasing, so the server keeps the order
			ts = lastTS + 1
		}
		mark := s.body.Len()
		s.event = logEvent{Type: "log", Task: s.opts.taskID, Timestamp: ts, Level: levelNames[level], Worker: s.opts.worker, Msg: string(s.msg)}
		_ = enc.Encode(&s.event) // cannot fail: strings and numbers only
		if s.body.Len() > s.opts.maxBatchBytes && events > 0 {
			s.body.Truncate(mark)
			pos = start
			break
		}
		lastTS = ts
		events++
		lines += n
		consumed = pos
	}
	return bytes.TrimSuffix(s.body.Bytes(), []byte("\n")), consumed, events, lines, lastTS
}

// A record is "<ms> <level letter> <text>".
func appendRecord(b []byte, ts int64, level byte, text string) []byte {
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ' ', level, ' ')
	b = append(b, text...)
	return append(b, '\n')
}

func parseRecord(r []byte) (int64, byte, []byte) {
	sp := bytes.IndexByte(r, ' ')
	if sp < 0 || len(r) < sp+3 {
		return 0, 'D', r
	}
	ts, _ := strconv.ParseInt(string(r[:sp]), 10, 64)
	return ts, r[sp+1], r[sp+3:]
}

var errTokenRefused = errors.New("events.add_batch: the server refused the token")

// permanentShipError is a batch the server will never accept (bad task id,
// malformed request): it is dropped rather than retried.
type permanentShipError struct{ err error }

func (e *permanentShipError) Error() string { return e.err.Error() }
func (e *permanentShipError) Unwrap() error { return e.err }

func isPermanentShip(err error) bool {
	var p *permanentShipError
	return errors.As(err, &p)
}

// post sends one json-lines batch (POST, no version, as the reference).
func (s *consoleShipper) post(ctx context.Context, body []byte, events int) (time.Duration, error) {
	lctx, cancel := context.WithTimeout(ctx, shipLoginTimeout)
	tok, err := s.c.ensureToken(lctx)
	cancel()
	if err != nil {
		return 0, err // even rejected keys: they may be fixed while the task runs
	}
	actx, cancel := context.WithTimeout(ctx, shipAttemptTimeout)
	defer cancel()
	r := request{endpoint: "events.add_batch", method: http.MethodPost, contentType: "application/json-lines", body: body}
	status, resp, retryAfter, err := s.c.send(actx, r, time.Time{}, tok)
	if err != nil {
		return 0, fmt.Errorf("events.add_batch: %s", describeNetErr(err))
	}
	if status == http.StatusUnauthorized {
		s.c.mu.Lock()
		s.c.stale = true
		s.c.mu.Unlock()
		return 0, errTokenRefused
	}
	if status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500 {
		return retryAfter, fmt.Errorf("events.add_batch: HTTP %d", status)
	}
	data, err := decodeEnvelope(r.endpoint, status, resp)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 && ae.Code != 401 && ae.Code != 429 {
			return 0, &permanentShipError{err}
		}
		return 0, err
	}
	var res struct {
		Added      int            `json:"added"`
		ErrorsInfo map[string]int `json:"errors_info"`
	}
	if json.Unmarshal(data, &res) == nil && res.Added != events {
		// Some events were refused; resending would duplicate the rest.
		s.c.logf("events.add_batch: only %d of %d log events registered: %v", res.Added, events, res.ErrorsInfo)
	}
	return 0, nil
}

// Close ships what is left and waits for delivery or for ctx to end; then
// the undelivered lines stay in the spool file, which the error names.
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
	s.unlockAndFlushLocal()
	close(s.closing)
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
			errs = append(errs, fmt.Errorf("console log of task %s: lines not delivered (%v) and the spool file failed: %v", s.opts.taskID, why, err))
		} else {
			errs = append(errs, fmt.Errorf("console log of task %s: %d lines not delivered (%v); they are kept in %s", s.opts.taskID, n, why, path))
		}
	} else {
		s.q.release()
	}
	if s.rejected > 0 {
		errs = append(errs, fmt.Errorf("console log of task %s: the server refused %d lines: %v", s.opts.taskID, s.rejected, s.rejectErr))
	}
	if s.dropped > 0 {
		errs = append(errs, fmt.Errorf("console log of task %s: %d lines lost: no spool file (%v) and the memory queue was full", s.opts.taskID, s.dropped, s.q.err))
	}
	s.localMu.Lock()
	if s.localErr != nil {
		errs = append(errs, fmt.Errorf("console log copy: %v", s.localErr))
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

// spoolQueue is a FIFO byte stream of records: the head in memory, the
// tail in a file. While the file exists every new record goes to it, so
// order is kept and memory stays bounded; mem is empty whenever the file
// holds data. The file is removed once drained.
type spoolQueue struct {
	dir, pattern string
	memCap       int
	mem          []byte
	head         int
	f            *os.File
	path         string
	rd, wr       int64  // stream offsets in the file; wr counts wbuf too
	wbuf         []byte // records not yet written to f
	flushAt      int
	spilled      int64 // bytes ever written to the spool
	err          error // the spool file could not be created
}

func (q *spoolQueue) memLen() int            { return len(q.mem) - q.head }
func (q *spoolQueue) diskLen() int64         { return q.wr - q.rd }
func (q *spoolQueue) size() int64            { return int64(q.memLen()) + q.diskLen() }
func (q *spoolQueue) fileLen() int64         { return q.wr - int64(len(q.wbuf)) }
func (q *spoolQueue) useDisk() bool          { return q.f != nil }
func (q *spoolQueue) recordLen(t string) int { return len(t) + 24 }

// push queues a record; toDisk asks for the spool. False: dropped.
func (q *spoolQueue) push(ts int64, level byte, text string, toDisk bool) bool {
	n := q.recordLen(text)
	if !q.useDisk() && (toDisk || q.memLen()+n > q.memCap) {
		_ = q.spill() // on failure the record stays in memory, up to the hard cap
	}
	if q.useDisk() {
		if len(q.wbuf)+n > shipMemHardBytes {
			return false
		}
		before := len(q.wbuf)
		q.wbuf = appendRecord(q.wbuf, ts, level, text)
		q.wr += int64(len(q.wbuf) - before)
		q.spilled += int64(len(q.wbuf) - before)
		if len(q.wbuf) >= max(q.flushAt, shipDiskFlushBytes) {
			_ = q.flush()
		}
		return true
	}
	if q.memLen()+n > shipMemHardBytes {
		return false
	}
	q.mem = appendRecord(q.mem, ts, level, text)
	return true
}

// spill opens the spool file and moves the memory queue into it.
func (q *spoolQueue) spill() error {
	if q.f == nil {
		if q.err != nil {
			return q.err
		}
		f, err := os.CreateTemp(q.dir, q.pattern)
		if err != nil {
			q.err = err
			return err
		}
		q.f, q.path, q.rd, q.wr, q.wbuf = f, f.Name(), 0, 0, q.wbuf[:0]
	}
	if m := q.memLen(); m > 0 {
		q.wbuf = append(q.wbuf, q.mem[q.head:]...)
		q.wr += int64(m)
		q.spilled += int64(m)
		q.mem, q.head = nil, 0 // not reused: the sender may be reading it
	}
	return q.flush()
}

func (q *spoolQueue) flush() error {
	if q.f == nil || len(q.wbuf) == 0 {
		return nil
	}
	off := q.fileLen()
	if _, err := q.f.WriteAt(q.wbuf, off); err != nil {
		_ = q.f.Truncate(off) // no half record; wbuf still has it
		q.flushAt = len(q.wbuf) + 1<<20
		return err
	}
	q.wbuf, q.flushAt = q.wbuf[:0], 0
	return nil
}

// peek returns whole records from the head of the stream, about limit
// bytes; memory records are returned in place, the rest copied into buf.
func (q *spoolQueue) peek(limit int, buf *[]byte) ([]byte, error) {
	if q.memLen() > 0 {
		return cutRecords(q.mem[q.head:], limit), nil
	}
	if q.diskLen() == 0 {
		return nil, nil
	}
	n := int(min(int64(limit), q.diskLen()))
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	got := 0
	if fl := q.fileLen(); q.rd < fl {
		m := int(min(int64(n), fl-q.rd))
		if _, err := q.f.ReadAt(b[:m], q.rd); err != nil {
			return nil, err
		}
		got = m
	}
	if got < n {
		off := int(q.rd + int64(got) - q.fileLen())
		copy(b[got:], q.wbuf[off:])
	}
	return cutRecords(b, limit), nil
}

// cutRecords keeps the whole records of b within limit (at least one).
func cutRecords(b []byte, limit int) []byte {
	j := bytes.LastIndexByte(b[:min(len(b), limit)], '\n')
	if j < 0 {
		j = bytes.IndexByte(b, '\n')
		if j < 0 {
			return nil
		}
	}
	return b[:j+1]
}

// commit removes n delivered bytes from the head of the stream.
func (q *spoolQueue) commit(n int) {
	m := min(n, q.memLen())
	q.head += m
	n -= m
	switch {
	case q.head == len(q.mem):
		q.mem, q.head = q.mem[:0], 0
	case q.head >= 1<<20 && 2*q.head >= len(q.mem):
		q.mem, q.head = append(q.mem[:0], q.mem[q.head:]...), 0
	}
	q.rd += int64(n)
	if q.f != nil && q.rd >= q.wr {
		q.release()
	}
}

// release closes and removes the spool file.
func (q *spoolQueue) release() {
	if q.f != nil {
		_ = q.f.Close()
		_ = os.Remove(q.path)
	}
	q.f, q.path, q.rd, q.wr, q.wbuf = nil, "", 0, 0, q.wbuf[:0]
}

// persist leaves only the undelivered records in the spool file, closes
// it and returns its path and line count.
func (q *spoolQueue) persist() (string, int, error) {
	if err := q.spill(); err != nil {
		return "", 0, err
	}
	if q.rd > 0 { // drop what was delivered, so nothing is sent twice from it
		nf, err := os.CreateTemp(q.dir, q.pattern)
		if err != nil {
			return q.path, 0, err
		}
		_, err = io.Copy(nf, io.NewSectionReader(q.f, q.rd, q.wr-q.rd))
		if cerr := nf.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(nf.Name(), q.path)
		}
		if err != nil {
			_ = os.Remove(nf.Name())
			return q.path, 0, err
		}
		_ = q.f.Close()
		if q.f, err = os.Open(q.path); err != nil {
			return q.path, 0, err
		}
		q.wr -= q.rd
		q.rd = 0
	}
	lines := 0
	if _, err := q.f.Seek(0, io.SeekStart); err == nil {
		buf := make([]byte, 64<<10)
		for {
			k, err := q.f.Read(buf)
			lines += bytes.Count(buf[:k], []byte{'\n'})
			if err != nil {
				break
			}
		}
	}
	path := q.path
	_ = q.f.Close()
	q.f = nil
	return path, lines, nil
}

// secretEnvValues are the values of environment variables ("K=V") named
// like secrets: *_PASSWORD, *_PASS, *_SECRET*, *_TOKEN, *_KEY and
// connection strings, plus the agent's known secret variables.
func secretEnvValues(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !secretEnvName(k) {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) < 6 { // short values would mask ordinary words
			continue
		}
		switch strings.ToLower(v) {
		case "true", "false", "none", "null":
			continue
		}
		out = append(out, v)
	}
	return out
}

func secretEnvName(name string) bool {
	k := strings.ToUpper(name)
	for _, known := range secretEnvVars {
		if k == known {
			return true
		}
	}
	if strings.Contains(k, "_SECRET") || strings.HasPrefix(k, "SECRET") {
		return true
	}
	for _, suf := range []string{"_PASSWORD", "_PASS", "_PASSWD", "_TOKEN", "_KEY", "_CONNECTION_STRING"} {
		if strings.HasSuffix(k, suf) {
			return true
		}
	}
	return false
}
