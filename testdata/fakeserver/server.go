// Package fakeserver is an in-memory stand-in for clearml-server, for tests
// of the agent. The behaviour follows shared/reference/server-api.md; section
// numbers in comments (§x.y) point there.
//
//	s := fakeserver.New()              // seeded like a fresh server
//	url, err := s.Start("127.0.0.1:0") // real loopback listener
//	defer s.Close()
//	tid := s.AddTask(fakeserver.TaskSpec{Queue: "default"})
//	... run the agent against url with TestsAccessKey/TestsSecretKey ...
//	s.RequestsTo("tasks.started"); s.Task(tid); s.TaskLogText(tid)
package fakeserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Seeded identities (§2.6).
const (
	DefaultCompanyID   = "d1bd92a3b039400cbafc60a7a5b1e52b"
	DefaultCompanyName = "clearml"
	TestsUserID        = "__tests__"
	TestsUserName      = "tests"
	TestsAccessKey     = "EGRTCO8JMSIGI6S39GTP43NFWXDQOW"
	TestsSecretKey     = "LPEJbGJ6bK4tujQcmrD3i1dbMBDdwUwelVa-LG0K0FFmY9bzH_H0Sw"
	DefaultQueueName   = "default"
	// MaxAPIVersion is used when the path carries no version (§1.6).
	MaxAPIVersion = "2.31"
	// ServerVersion is put in the token's server_version claim.
	ServerVersion = "2.0.0"
	// TokenCookie is the cookie auth.login sets, read back as a Bearer token.
	TokenCookie = "clearml_token_basic"
)

// Server is one fake clearml-server. The zero value is not usable; call New.
type Server struct {
	mu sync.Mutex // guards everything below

	// clock
	clockFn func() time.Time
	frozen  *time.Time
	offset  time.Duration

	// auth
	companies     map[string]string // id -> name
	users         map[string]*User
	creds         map[string]*Credential // access key -> credential
	jwtKey        []byte
	tokenLifetime time.Duration
	sessions      map[string]bool // issued session ids
	revoked       map[string]bool

	// data
	queues    []*Queue // creation order
	tasks     map[string]map[string]any
	taskOrder []string
	projects  map[string]map[string]any
	projOrder []string
	workers   map[string]*Worker // key -> entry
	events    map[string][]map[string]any

	// test hooks
	requests []*Request
	faults   []*FaultRule
	reqLog   io.Writer // LogRequests

	// transport
	addr      string
	hsrv      *http.Server
	refusing  bool
	closed    chan struct{}
	closeOnce sync.Once
	serveWG   sync.WaitGroup
}

// New returns a server seeded like a fresh clearml-server (§2.6).
func New() *Server {
	s := &Server{
		companies:     map[string]string{},
		users:         map[string]*User{},
		creds:         map[string]*Credential{},
		jwtKey:        []byte(newID()),
		tokenLifetime: 30 * 24 * time.Hour,
		sessions:      map[string]bool{},
		revoked:       map[string]bool{},
		tasks:         map[string]map[string]any{},
		projects:      map[string]map[string]any{},
		workers:       map[string]*Worker{},
		events:        map[string][]map[string]any{},
		closed:        make(chan struct{}),
	}
	s.companies[DefaultCompanyID] = DefaultCompanyName
	for _, u := range []User{
		{ID: "__apiserver__", Name: "apiserver", Role: RoleSystem},
		{ID: "__fileserver__", Name: "fileserver", Role: RoleSystem},
		{ID: "__webserver__", Name: "webserver", Role: RoleSystem},
		{ID: "__services_agent__", Name: "services_agent", Role: RoleAdmin},
		{ID: TestsUserID, Name: TestsUserName, Role: RoleUser},
	} {
		u.Company = DefaultCompanyID
		uu := u
		s.users[u.ID] = &uu
	}
	s.creds[TestsAccessKey] = &Credential{Key: TestsAccessKey, Secret: TestsSecretKey, User: TestsUserID}
	now := dbTime(time.Now())
	s.queues = append(s.queues, &Queue{
		ID: newID(), Name: DefaultQueueName, Company: DefaultCompanyID,
		Created: now, LastUpdate: now, Tags: []string{}, SystemTags: []string{"default"},
	})
	return s
}

// ---- clock ----

// Now returns the server's current time.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Server) now() time.Time {
	if s.frozen != nil {
		return *s.frozen
	}
	if s.clockFn != nil {
		return s.clockFn().UTC()
	}
	return time.Now().UTC().Add(s.offset)
}

// SetClock installs a time source. It is called with the server lock held,
// so it must not call back into the Server. nil restores the wall clock.
func (s *Server) SetClock(fn func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clockFn, s.frozen, s.offset = fn, nil, 0
}

// SetNow freezes the clock at t.
func (s *Server) SetNow(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t = t.UTC()
	s.frozen = &t
}

// Advance moves the clock forward (a frozen clock stays frozen).
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.frozen != nil:
		t := s.frozen.Add(d)
		s.frozen = &t
	case s.clockFn != nil:
		fn := s.clockFn
		s.clockFn = func() time.Time { return fn().Add(d) }
	default:
		s.offset += d
	}
}

// ---- transport ----

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
// It returns the base URL, "http://host:port".
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	s.serve(ln)
	return s.URL(), nil
}

// URL is the base URL once started.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr == "" {
		return ""
	}
	return "http://" + s.addr
}

func (s *Server) serve(ln net.Listener) {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	s.mu.Lock()
	s.hsrv = hs
	s.mu.Unlock()
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = hs.Serve(ln)
	}()
}

// Refuse(true) stops listening and drops open connections, so clients get
// "connection refused"; Refuse(false) listens again on the same address.
func (s *Server) Refuse(on bool) error {
	s.mu.Lock()
	if on == s.refusing {
		s.mu.Unlock()
		return nil
	}
	s.refusing = on
	addr, hs := s.addr, s.hsrv
	s.mu.Unlock()
	if on {
		if hs != nil {
			// Stop listening at once, but answer the requests already being
			// handled, as a real server going down does: a request stored
			// but never answered would be resent and duplicated.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = hs.Shutdown(ctx)
			cancel()
			_ = hs.Close() // whatever did not finish in time
		}
		s.serveWG.Wait()
		return nil
	}
	if addr == "" {
		return errors.New("fakeserver: Refuse(false) before Start")
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.mu.Lock()
		s.refusing = true
		s.mu.Unlock()
		return err
	}
	s.serve(ln)
	return nil
}

// Close stops the listener, drops connections and releases hung requests.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	s.mu.Lock()
	hs := s.hsrv
	s.mu.Unlock()
	var err error
	if hs != nil {
		err = hs.Close()
	}
	s.serveWG.Wait()
	return err
}

// ---- endpoints ----

type handlerFunc func(c *call) (map[string]any, error)

type endpointImpl struct {
	min    version
	minStr string
	fn     handlerFunc
	roles  []string // nil: any role
}

var endpointTable = map[string][]endpointImpl{}

// register adds an implementation; the highest min_version <= requested wins (§1.6).
func register(name, minVer string, fn handlerFunc, roles ...string) {
	impl := endpointImpl{min: mustVersion(minVer), minStr: minVer, fn: fn, roles: roles}
	list := append(endpointTable[name], impl)
	for i := len(list) - 1; i > 0 && list[i-1].min.less(list[i].min); i-- {
		list[i-1], list[i] = list[i], list[i-1]
	}
	endpointTable[name] = list
}

func resolveEndpoint(name string, v version) *endpointImpl {
	for i, impl := range endpointTable[name] {
		if !v.less(impl.min) {
			return &endpointTable[name][i]
		}
	}
	return nil
}

// Endpoints lists the registered endpoint names with their min versions.
func Endpoints() map[string][]string {
	out := map[string][]string{}
	for name, impls := range endpointTable {
		for _, i := range impls {
			out[name] = append(out[name], i.minStr)
		}
	}
	return out
}

// §1.1: apiserver.version.required is false, so the version is optional.
var pathRe = regexp.MustCompile(`^/?(v(\d+\.?\d+)/)?([a-zA-Z_]\w+\.[a-zA-Z_]\w+)/?$`)

// call is one request as handlers see it.
type call struct {
	s       *Server
	r       *http.Request
	name    string
	ver     version
	verStr  string
	ident   Identity
	data    map[string]any
	batch   []map[string]any
	now     time.Time
	ip      string
	worker  string // X-ClearML-Worker header
	cookies []*http.Cookie

	tokenSession string // session id of a Bearer token
}

type result struct {
	status    int
	subcode   int
	msg       string
	stack     any // "" on success, string for 500/0, nil otherwise
	data      map[string]any
	name      string
	reqVer    json.RawMessage
	actualVer json.RawMessage
	cookies   []*http.Cookie
	pad       int // filler bytes streamed into data as "_padding" (PadNext)
}

type envelopeMeta struct {
	ID       string `json:"id"`
	Trx      string `json:"trx"`
	Endpoint struct {
		Name             string          `json:"name"`
		RequestedVersion json.RawMessage `json:"requested_version"`
		ActualVersion    json.RawMessage `json:"actual_version"`
	} `json:"endpoint"`
	ResultCode    int            `json:"result_code"`
	ResultSubcode int            `json:"result_subcode"`
	ResultMsg     string         `json:"result_msg"`
	ErrorStack    any            `json:"error_stack"`
	ErrorData     map[string]any `json:"error_data"`
}

// versionJSON renders a version as a string, or as a float when the
// requested version is below 2.1 (§1.4).
func versionJSON(s string, asFloat bool) json.RawMessage {
	if asFloat {
		f, err := strconv.ParseFloat(s, 64)
		if err == nil {
			out := strconv.FormatFloat(f, 'f', -1, 64)
			if !strings.Contains(out, ".") {
				out += ".0"
			}
			return json.RawMessage(out)
		}
	}
	b, _ := json.Marshal(s)
	return b
}

// ServeHTTP runs the request pipeline of §1.7. It can also be mounted on an
// httptest.Server instead of Start.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := s.record(r, body)

	if r.Method == http.MethodOptions { // §1.1
		w.Header().Set("server", "clearml")
		w.WriteHeader(http.StatusOK)
		s.finish(rec, http.StatusOK, 0, "", nil)
		return
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" {
		msg := fmt.Sprintf("Content encoding is not supported (%s)", enc)
		writePlain(w, http.StatusUnsupportedMediaType, msg, "")
		s.finish(rec, http.StatusUnsupportedMediaType, 0, msg, []byte(msg))
		return
	}
	m := pathRe.FindStringSubmatch(r.URL.Path)
	name := ""
	if m != nil {
		name = m[3]
	}
	f := s.takeFault(name, len(body))
	if f != nil && s.applyFault(w, r, f, rec) {
		return
	}
	res := s.handle(r, body, m, rec)
	s.writeEnvelope(s.afterHandle(w, f, res, rec), r, res, rec)
}

func writePlain(w http.ResponseWriter, status int, msg, retryAfter string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("server", "clearml")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func (s *Server) writeEnvelope(w http.ResponseWriter, r *http.Request, res *result, rec *Request) {
	var meta envelopeMeta
	meta.ID = newID()
	meta.Trx = firstHeader(r.Header, "X-ClearML-Trx", "X-Trains-Trx")
	if meta.Trx == "" {
		meta.Trx = meta.ID
	}
	meta.Endpoint.Name = res.name
	meta.Endpoint.RequestedVersion = res.reqVer
	meta.Endpoint.ActualVersion = res.actualVer
	if meta.Endpoint.ActualVersion == nil {
		meta.Endpoint.ActualVersion = json.RawMessage("null")
	}
	meta.ResultCode, meta.ResultSubcode, meta.ResultMsg = res.status, res.subcode, res.msg
	meta.ErrorStack = res.stack
	meta.ErrorData = map[string]any{}
	data := res.data
	if data == nil {
		data = map[string]any{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	envelope := struct {
		Meta envelopeMeta `json:"meta"`
		Data any          `json:"data"`
	}{meta, render(data)}
	if err := enc.Encode(envelope); err != nil {
		msg := "Failed processing request " + r.URL.String()
		writePlain(w, 500, msg, "")
		s.finish(rec, 500, 0, msg, []byte(msg))
		return
	}
	for _, ck := range res.cookies {
		http.SetCookie(w, ck)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("server", "clearml")
	w.WriteHeader(res.status)
	if res.pad > 0 {
		writePadded(w, buf.Bytes(), res.pad)
	} else {
		_, _ = w.Write(buf.Bytes())
	}
	s.finish(rec, res.status, res.subcode, res.msg, buf.Bytes())
}

// writePadded writes the encoded envelope with n bytes of "x" as the first
// member of its data object, in chunks, never holding the whole reply.
func writePadded(w io.Writer, env []byte, n int) {
	at := bytes.Index(env, []byte(`"data":{`)) // meta has no "data" key: this is the envelope's
	if at < 0 {
		_, _ = w.Write(env)
		return
	}
	at += len(`"data":{`)
	_, _ = w.Write(env[:at])
	_, _ = io.WriteString(w, `"_padding":"`)
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	for left := n; left > 0; left -= len(chunk) {
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			return // the client hung up: the agent stops reading at its cap
		}
	}
	sep := `",`
	if env[at] == '}' {
		sep = `"`
	}
	_, _ = io.WriteString(w, sep)
	_, _ = w.Write(env[at:])
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

func realIP(r *http.Request) string {
	if f := r.Header.Get("X-Forwarded-For"); f != "" {
		return strings.TrimSpace(strings.Split(f, ",")[0])
	}
	if ip := r.Header.Get("X-Real-IP"); ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// handle runs path → endpoint → auth → role → body → handler (§1.7).
func (s *Server) handle(r *http.Request, body []byte, m []string, rec *Request) *result {
	if m == nil { // dummy call: empty name, float version 1.0 (§1.1)
		return &result{status: 400, msg: "Invalid request path " + r.URL.Path,
			reqVer: json.RawMessage("1.0"), actualVer: nil}
	}
	verStr := m[2]
	if verStr == "" {
		verStr = MaxAPIVersion
	}
	ver, _ := parseVersion(verStr)
	floats := ver.less(version{2, 1})
	res := &result{name: m[3], reqVer: versionJSON(verStr, floats)}
	fail := func(e *APIError) *result {
		res.status, res.subcode, res.msg = e.Code, e.Subcode, e.Msg
		if e.Code == 500 && e.Subcode == 0 && !e.noStack {
			res.stack = "Traceback (most recent call last):\n  (fakeserver)\n" + e.Msg
		}
		return res
	}
	ep := resolveEndpoint(m[3], ver)
	if ep == nil {
		return fail(errNotFoundEndpoint(m[3], verStr))
	}
	res.actualVer = versionJSON(ep.minStr, floats)

	s.mu.Lock()
	defer s.mu.Unlock()
	c := &call{s: s, r: r, name: m[3], ver: ver, verStr: verStr, now: s.now(),
		ip: realIP(r), worker: firstHeader(r.Header, "X-ClearML-Worker", "X-Trains-Worker")}
	if err := s.authenticate(c); err != nil {
		return fail(err)
	}
	if err := checkRole(ep, c.ident); err != nil {
		return fail(err)
	}
	if imp, err := s.impersonate(c); err != nil {
		return fail(err)
	} else if imp {
		if err := checkRole(ep, c.ident); err != nil {
			return fail(err)
		}
	}
	if err := c.loadBody(body); err != nil {
		return fail(err)
	}
	rec.Data = copyMap(c.data)
	for _, b := range c.batch {
		rec.Batch = append(rec.Batch, copyMap(b))
	}
	data, err := safeRun(ep.fn, c)
	res.cookies = c.cookies
	if err != nil {
		var ae *APIError
		var pe *panicError
		switch {
		case errors.As(err, &ae):
			fail(ae)
		case errors.As(err, &pe):
			fail(&APIError{Code: 500, Msg: pe.msg})
			res.stack = "Traceback (most recent call last):\n" + pe.stack
		default:
			fail(&APIError{Code: 500, Msg: err.Error()})
		}
		res.data = data
		return res
	}
	res.status, res.msg, res.stack, res.data = 200, "OK", "", data
	return res
}

type panicError struct{ msg, stack string }

func (p *panicError) Error() string { return p.msg }

// safeRun turns a handler panic into 500/0 with a stack, like an unhandled exception.
func safeRun(fn handlerFunc, c *call) (data map[string]any, err error) {
	defer func() {
		if p := recover(); p != nil {
			data, err = nil, &panicError{msg: fmt.Sprint(p), stack: string(debug.Stack())}
		}
	}()
	return fn(c)
}

// loadBody implements §1.2: JSON (any content type), json-lines batches,
// and query-string args merged into the body.
func (c *call) loadBody(body []byte) *APIError {
	mt, _, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if mt == "application/json-lines" {
		lines := splitLines(body)
		for i, line := range lines {
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				return &APIError{Code: 400, Msg: fmt.Sprintf("Failed to decode JSON object: %v in batch item #%d", err, i)}
			}
			if dec.More() {
				return &APIError{Code: 400, Msg: fmt.Sprintf("Failed to decode JSON object: Extra data in batch item #%d", i)}
			}
			obj, ok := v.(map[string]any)
			if !ok {
				return &APIError{Code: 400, Msg: "json lines must contain objects, found: " + pyTypeName(v)}
			}
			c.batch = append(c.batch, obj)
		}
		c.data = map[string]any{}
		return nil
	}
	var v any
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return &APIError{Code: 400, Msg: "Failed to decode JSON object: " + err.Error()}
		}
		if dec.More() {
			return &APIError{Code: 400, Msg: "Failed to decode JSON object: Extra data"}
		}
	} else if len(body) > 0 {
		return &APIError{Code: 400, Msg: "Failed to decode JSON object: Expecting value: line 1 column 1 (char 0)"}
	}
	if isFalsy(v) {
		v = map[string]any{}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return &APIError{Code: 500, Msg: "Data should be a dict", noStack: true} // §7
	}
	mergeQuery(obj, c.r.URL.Query(), c.r.URL.RawQuery)
	c.data = obj
	return nil
}

func splitLines(b []byte) [][]byte {
	// Python bytes.splitlines(): \n, \r\n and \r; no trailing empty item.
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i])
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
	}
	return out
}

func pyTypeName(v any) string {
	switch v := v.(type) {
	case []any:
		return "list"
	case string:
		return "str"
	case bool:
		return "bool"
	case nil:
		return "NoneType"
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			return "float"
		}
		return "int"
	}
	return "object"
}

func isFalsy(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	case json.Number:
		f, _ := x.Float64()
		return f == 0
	}
	return false
}

// mergeQuery applies werkzeug's multi-dict the way the server does (§1.2).
func mergeQuery(body map[string]any, q url.Values, raw string) {
	if len(q) == 0 {
		return
	}
	// keep the order keys first appear in the raw query
	var order []string
	seen := map[string]bool{}
	for _, part := range strings.FieldsFunc(raw, func(r rune) bool { return r == '&' || r == ';' }) {
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if !seen[k] && q.Has(k) {
			seen[k] = true
			order = append(order, k)
		}
	}
	for k := range q {
		if !seen[k] {
			order = append(order, k)
		}
	}
	for _, k := range order {
		vals := q[k]
		var v any
		if len(vals) > 1 || strings.HasSuffix(k, "[]") {
			l := make([]any, len(vals))
			for i, x := range vals {
				l[i] = convertQueryValue(x)
			}
			v = l
		} else {
			v = convertQueryValue(vals[0])
		}
		path := strings.Split(strings.TrimRight(k, "[]"), ".")
		nestedSet(body, v, path...)
	}
}

func convertQueryValue(v string) any {
	digits := strings.Replace(v, ".", "", 1)
	if digits != "" && strings.Trim(digits, "0123456789") == "" {
		if strings.Contains(v, ".") {
			f, _ := strconv.ParseFloat(v, 64)
			return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
		}
		if i, err := strconv.ParseInt(v, 10, 64); err == nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
		return json.Number(v)
	}
	switch v {
	case "true", "True", "TRUE":
		return true
	case "false", "False", "FALSE":
		return false
	}
	return v
}
