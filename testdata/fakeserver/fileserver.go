package fakeserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// FileServer stands in for clearml-server's fileserver, the http:// files
// server that the SDK's StorageHelper uploads artifacts to:
//
//   - POST / with multipart/form-data: each part's form name is the path to
//     store it under; the answer is the JSON list of stored paths;
//   - GET /<path> returns the file ("?download" as an attachment);
//   - DELETE /<path> removes it; GET / answers "OK".
//
// With RequireAuth, every request except GET / needs a token of that API
// server (the Authorization: Bearer header or the token cookie), as the real
// fileserver does with its default auth.enabled: true. Files live in memory.
type FileServer struct {
	mu       sync.Mutex
	files    map[string][]byte
	requests []FileRequest
	auth     *Server

	addr    string
	hsrv    *http.Server
	serveWG sync.WaitGroup
}

// FileRequest is one recorded request to the files server.
type FileRequest struct {
	Time   time.Time
	Method string
	Path   string
	Header http.Header
	Stored []string // paths a POST stored
	Code   int
}

// NewFileServer returns an empty files server; call Start.
func NewFileServer() *FileServer {
	return &FileServer{files: map[string][]byte{}}
}

// RequireAuth makes requests carry a token issued by s.
func (f *FileServer) RequireAuth(s *Server) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = s
}

// Start listens on addr (e.g. "127.0.0.1:0") and returns the base URL.
func (f *FileServer) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	hs := &http.Server{Handler: f, ReadHeaderTimeout: 30 * time.Second}
	f.mu.Lock()
	f.addr, f.hsrv = ln.Addr().String(), hs
	f.mu.Unlock()
	f.serveWG.Add(1)
	go func() {
		defer f.serveWG.Done()
		_ = hs.Serve(ln)
	}()
	return f.URL(), nil
}

// URL is the base URL once started, "http://host:port".
func (f *FileServer) URL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addr == "" {
		return ""
	}
	return "http://" + f.addr
}

// Close stops the server and drops open connections.
func (f *FileServer) Close() error {
	f.mu.Lock()
	hs := f.hsrv
	f.mu.Unlock()
	var err error
	if hs != nil {
		err = hs.Close()
	}
	f.serveWG.Wait()
	return err
}

// File returns a stored file's content (path without the leading slash).
func (f *FileServer) File(p string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[strings.TrimPrefix(p, "/")]
	return append([]byte(nil), b...), ok
}

// Files lists the stored paths, sorted.
func (f *FileServer) Files() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.files))
	for p := range f.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Requests returns the recorded requests, oldest first.
func (f *FileServer) Requests() []FileRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FileRequest, len(f.requests))
	for i, r := range f.requests {
		r.Header = r.Header.Clone()
		r.Stored = append([]string(nil), r.Stored...)
		out[i] = r
	}
	return out
}

func (f *FileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := FileRequest{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
	code, stored := f.serve(w, r)
	rec.Code, rec.Stored = code, stored
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	f.mu.Unlock()
}

// serve answers one request and returns the status it sent.
func (f *FileServer) serve(w http.ResponseWriter, r *http.Request) (int, []string) {
	w.Header().Set("server", "clearml")
	plain := func(code int, msg string) (int, []string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg)
		return code, nil
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" {
		return plain(http.StatusUnsupportedMediaType, fmt.Sprintf("Content encoding is not supported (%s)", enc))
	}
	if r.URL.Path == "/" && r.Method == http.MethodGet {
		return plain(http.StatusOK, "OK")
	}
	if msg := f.checkAuth(r); msg != "" {
		return plain(http.StatusUnauthorized, msg)
	}
	p := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	switch {
	case r.URL.Path == "/" && r.Method == http.MethodPost:
		stored, err := f.upload(r)
		if errors.Is(err, errNotFound) {
			return plain(http.StatusNotFound, "Not Found")
		} else if err != nil {
			return plain(http.StatusBadRequest, err.Error())
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		b, _ := json.Marshal(stored)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return http.StatusOK, stored
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		f.mu.Lock()
		b, ok := f.files[p]
		f.mu.Unlock()
		if !ok {
			return plain(http.StatusNotFound, "Not Found")
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		if r.URL.Query().Has("download") {
			w.Header().Set("Content-Disposition", "attachment; filename="+path.Base(p))
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
		return http.StatusOK, nil
	case r.Method == http.MethodDelete:
		f.mu.Lock()
		_, ok := f.files[p]
		delete(f.files, p)
		f.mu.Unlock()
		if !ok {
			return plain(http.StatusNotFound, "File "+p+" not found")
		}
		b, _ := json.Marshal(p)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return http.StatusOK, nil
	}
	return plain(http.StatusMethodNotAllowed, "Method Not Allowed")
}

var errNotFound = errors.New("not found")

// upload stores every file part under its form name, as the real
// fileserver does (leading slashes dropped, no escaping the root: 404).
func (f *FileServer) upload(r *http.Request) ([]string, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	stored := []string{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		name := part.FormName()
		if name == "" || part.FileName() == "" {
			continue // not a file field
		}
		// werkzeug's safe_join: normalized, and never above the root
		clean := path.Clean(strings.TrimLeft(name, "/"))
		if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, errNotFound
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.files[clean] = data
		f.mu.Unlock()
		stored = append(stored, clean)
	}
	return stored, nil
}

// checkAuth returns "" when the request may proceed.
func (f *FileServer) checkAuth(r *http.Request) string {
	f.mu.Lock()
	s := f.auth
	f.mu.Unlock()
	if s == nil {
		return ""
	}
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		var ok bool
		if tok, ok = strings.CutPrefix(h, "Bearer "); !ok {
			return "Only bearer token authorization is supported"
		}
	} else if ck, err := r.Cookie(TokenCookie); err == nil {
		tok = ck.Value
	}
	if tok == "" {
		return "Unauthorized"
	}
	if err := s.ValidateToken(tok); err != nil {
		return err.Error()
	}
	return ""
}

// ValidateToken checks a Bearer token the way the API server does for
// auth.validate_token: signature, expiry, identity and revocation.
func (s *Server) ValidateToken(tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	claims, e := parseJWT(s.jwtKey, tok, s.now())
	if e != nil {
		return e
	}
	ident, _ := claims["identity"].(map[string]any)
	if ident == nil || asString(ident["user"]) == "" {
		return errors.New("token missing identity")
	}
	if sid := asString(claims["session_id"]); sid != "" && s.revoked[sid] {
		return errors.New("revoked token")
	}
	return nil
}
