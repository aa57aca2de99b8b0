package fakeserver

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// Request is one recorded HTTP request and how it was answered.
type Request struct {
	Seq      int       // 1-based arrival order
	Time     time.Time // server clock at arrival
	Method   string
	Path     string
	RawQuery string
	Endpoint string // "service.action"; "" when the path does not parse
	Version  string // version given in the path, "" when none
	Header   http.Header
	Body     []byte
	Data     map[string]any   // parsed body merged with the query; nil if never parsed
	Batch    []map[string]any // json-lines items
	Code     int              // HTTP status; 0 while pending or when no answer was sent
	Subcode  int
	Msg      string // result_msg, or the plain-text body
	Response []byte // raw response body
	Fault    string // kind of injected fault that answered it, "" when none
	Done     bool   // answered (or given up)
}

func (s *Server) record(r *http.Request, body []byte) *Request {
	rec := &Request{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: append([]byte(nil), body...),
	}
	if m := pathRe.FindStringSubmatch(r.URL.Path); m != nil {
		rec.Endpoint, rec.Version = m[3], m[2]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Time = s.now()
	rec.Seq = len(s.requests) + 1
	s.requests = append(s.requests, rec)
	return rec
}

func (s *Server) finish(rec *Request, code, sub int, msg string, resp []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Code, rec.Subcode, rec.Msg, rec.Done = code, sub, msg, true
	rec.Response = append([]byte(nil), resp...)
	if s.reqLog != nil {
		name := rec.Endpoint
		if name == "" {
			name = rec.Method + " " + rec.Path
		}
		body := rec.Body
		if len(body) > 600 {
			body = append(body[:600:600], "..."...)
		}
		fmt.Fprintf(s.reqLog, "%s #%d %s -> %d/%d %s %s\n", rec.Time.Format("15:04:05.000"), rec.Seq, name, code, sub, msg, body)
	}
}

// LogRequests writes one line per answered request to w (nil: stop).
func (s *Server) LogRequests(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqLog = w
}

func (r *Request) clone() Request {
	c := *r
	c.Header = r.Header.Clone()
	c.Body = append([]byte(nil), r.Body...)
	c.Response = append([]byte(nil), r.Response...)
	c.Data = copyMap(r.Data)
	if r.Batch != nil {
		c.Batch = make([]map[string]any, len(r.Batch))
		for i, b := range r.Batch {
			c.Batch[i] = copyMap(b)
		}
	}
	return c
}

// Requests returns a copy of every recorded request, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = r.clone()
	}
	return out
}

// RequestsTo returns the recorded requests for one "service.action".
func (s *Server) RequestsTo(endpoint string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if r.Endpoint == endpoint {
			out = append(out, r.clone())
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// WaitForRequests polls until at least n answered requests to endpoint
// ("" = any) were recorded or timeout passes; it returns what it saw.
func (s *Server) WaitForRequests(endpoint string, n int, timeout time.Duration) []Request {
	deadline := time.Now().Add(timeout)
	for {
		var got []Request
		for _, r := range s.Requests() {
			if (endpoint == "" || r.Endpoint == endpoint) && r.Done {
				got = append(got, r)
			}
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}
