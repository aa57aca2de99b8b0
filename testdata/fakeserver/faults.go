package fakeserver

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"strconv"
	"time"
)

// Fault is one injected misbehaviour. It is checked after the path is parsed
// and before anything else, like a proxy in front of the server.
type Fault struct {
	Endpoint   string        // "service.action"; "" or "*" matches every request
	Times      int           // how many requests it hits; 0 = until removed
	Skip       int           // let this many matching requests through first
	Status     int           // answer with this HTTP status; 0 = answer normally (after Delay)
	Subcode    int           // result_subcode of the envelope
	Message    string        // result_msg, or the plain body; default http.StatusText
	Plain      bool          // plain-text body instead of the JSON envelope
	RetryAfter string        // Retry-After header value
	Delay      time.Duration // wait this long first
	Hang       bool          // never answer; returns when the client gives up or on Close
	Drop       bool          // close the connection without an HTTP answer
	// HTML answers Status (200 too) with an HTML error page, as nginx or a
	// load balancer in front of the server does.
	HTML bool
	// BodyOver makes the rule match only requests whose body is longer
	// than this many bytes (0: any body), e.g. a proxy's 413.
	BodyOver int
	// Truncate answers normally (the handler runs: a batch is stored) but
	// sends only the first Truncate bytes of the JSON reply.
	Truncate int
	// PadReply answers normally with PadReply bytes of filler added to the
	// reply's data (field "_padding"): an oversized reply.
	PadReply int
}

// FaultRule is an installed Fault.
type FaultRule struct {
	s       *Server
	f       Fault
	hits    int
	skipped int
}

// Hits is how many requests the rule has answered so far.
func (r *FaultRule) Hits() int {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.hits
}

// AddFault installs f; rules are tried in the order they were added.
func (s *Server) AddFault(f Fault) *FaultRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &FaultRule{s: s, f: f}
	s.faults = append(s.faults, r)
	return r
}

// RemoveFault uninstalls one rule.
func (s *Server) RemoveFault(r *FaultRule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.faults {
		if x == r {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			return
		}
	}
}

// ClearFaults removes every rule.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// FailNext answers the next n calls to endpoint with an envelope error.
func (s *Server) FailNext(endpoint string, n, code, subcode int, msg string) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Status: code, Subcode: subcode, Message: msg})
}

// FailPlain answers the next n calls with a plain-text status, as a proxy
// would (e.g. 502, 503).
func (s *Server) FailPlain(endpoint string, n, status int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Status: status, Plain: true})
}

// RateLimit answers the next n calls with 429 and Retry-After (whole seconds).
func (s *Server) RateLimit(endpoint string, n int, retryAfter time.Duration) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Status: http.StatusTooManyRequests, Plain: true,
		RetryAfter: strconv.Itoa(int(retryAfter / time.Second))})
}

// DelayNext delays the next n answers by d.
func (s *Server) DelayNext(endpoint string, n int, d time.Duration) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Delay: d})
}

// HangNext never answers the next n calls (until the client gives up).
func (s *Server) HangNext(endpoint string, n int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Hang: true})
}

// HTMLNext answers the next n calls (0: until removed) with an HTML page
// and status, as a proxy in front of the server would; status may be 200.
func (s *Server) HTMLNext(endpoint string, n, status int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Status: status, HTML: true})
}

// RejectBodiesOver answers 413 with an HTML page to every call whose body
// is longer than limit bytes, as nginx's client_max_body_size does.
func (s *Server) RejectBodiesOver(endpoint string, limit int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Status: http.StatusRequestEntityTooLarge, HTML: true, BodyOver: limit})
}

// TruncateNext cuts the JSON reply of the next n calls (0: until removed)
// to keep bytes; the calls themselves take effect.
func (s *Server) TruncateNext(endpoint string, n, keep int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Truncate: keep})
}

// PadNext makes the reply of the next n calls (0: until removed) about
// size bytes larger.
func (s *Server) PadNext(endpoint string, n, size int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, PadReply: size})
}

// DropNext closes the connection of the next n calls without answering.
func (s *Server) DropNext(endpoint string, n int) *FaultRule {
	return s.AddFault(Fault{Endpoint: endpoint, Times: n, Drop: true})
}

func (s *Server) takeFault(name string, bodyLen int) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.faults {
		if r.f.Endpoint != "" && r.f.Endpoint != "*" && r.f.Endpoint != name {
			continue
		}
		if r.f.BodyOver > 0 && bodyLen <= r.f.BodyOver {
			continue
		}
		if r.f.Times > 0 && r.hits >= r.f.Times {
			continue
		}
		if r.skipped < r.f.Skip {
			r.skipped++
			continue
		}
		r.hits++
		f := r.f
		return &f
	}
	return nil
}

func (s *Server) markFault(rec *Request, kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Fault = kind
}

// applyFault reports whether the request was fully handled by the fault.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault, rec *Request) bool {
	if f.Delay > 0 {
		s.markFault(rec, "delay")
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			s.finish(rec, 0, 0, "client gave up", nil)
			return true
		case <-s.closed:
			s.finish(rec, 0, 0, "server closed", nil)
			return true
		}
	}
	switch {
	case f.Hang:
		s.markFault(rec, "hang")
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		s.finish(rec, 0, 0, "hung", nil)
		return true
	case f.Drop:
		s.markFault(rec, "drop")
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				s.finish(rec, 0, 0, "dropped", nil)
				return true
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or a recorder: abort the stream
	case f.Status != 0:
		msg := f.Message
		if msg == "" {
			msg = http.StatusText(f.Status)
		}
		if f.HTML {
			s.markFault(rec, "html")
			page := htmlErrorPage(f.Status, f.Message)
			writePlain(w, f.Status, page, f.RetryAfter)
			s.finish(rec, f.Status, 0, msg, []byte(page))
			return true
		}
		if f.Plain {
			s.markFault(rec, "plain")
			writePlain(w, f.Status, msg, f.RetryAfter)
			s.finish(rec, f.Status, 0, msg, []byte(msg))
			return true
		}
		s.markFault(rec, "status")
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		res := &result{status: f.Status, subcode: f.Subcode, msg: msg, reqVer: json.RawMessage("1.0")}
		if m := pathRe.FindStringSubmatch(r.URL.Path); m != nil {
			v := m[2]
			if v == "" {
				v = MaxAPIVersion
			}
			pv, _ := parseVersion(v)
			res.name, res.reqVer = m[3], versionJSON(v, pv.less(version{2, 1}))
		}
		if f.Status == 500 && f.Subcode == 0 {
			res.stack = "Traceback (most recent call last):\n  (injected fault)\n" + msg
		}
		s.writeEnvelope(w, r, res, rec)
		return true
	}
	return false
}

// htmlErrorPage is an error page as a web server in front of the API
// server writes it.
func htmlErrorPage(status int, msg string) string {
	title := fmt.Sprintf("%d %s", status, http.StatusText(status))
	body := "<center><h1>" + html.EscapeString(title) + "</h1></center>\r\n"
	if msg != "" {
		body += "<p>" + html.EscapeString(msg) + "</p>\r\n"
	}
	return "<html>\r\n<head><title>" + html.EscapeString(title) + "</title></head>\r\n<body>\r\n" +
		body + "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
}

// afterHandle applies the faults that change a normal answer: padding the
// data, and cutting the reply short (the returned writer).
func (s *Server) afterHandle(w http.ResponseWriter, f *Fault, res *result, rec *Request) http.ResponseWriter {
	if f == nil {
		return w
	}
	if f.PadReply > 0 {
		// Written by writeEnvelope as data's "_padding" string, streamed:
		// encoding 100 MB through encoding/json takes seconds under -race.
		s.markFault(rec, "pad")
		res.pad = f.PadReply
	}
	if f.Truncate > 0 {
		s.markFault(rec, "truncate")
		return &truncatingWriter{ResponseWriter: w, left: f.Truncate}
	}
	return w
}

// truncatingWriter passes on the first left bytes and swallows the rest,
// so the reply is well framed HTTP with a cut-off body.
type truncatingWriter struct {
	http.ResponseWriter
	left int
}

func (t *truncatingWriter) Write(p []byte) (int, error) {
	n := min(len(p), t.left)
	t.left -= n
	if n > 0 {
		if _, err := t.ResponseWriter.Write(p[:n]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
