package main

// The server's replies: the meta/data envelope, the errors a call returns
// (an API error, an unreachable server, a reply over its cap) and the
// token's claims.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// apiError is a non-200 envelope from the server.
type apiError struct {
	Endpoint   string
	HTTPStatus int
	Code       int
	Subcode    int
	Msg        string
	Stack      string
}

func (e *apiError) Error() string {
	if e.Code == 0 && e.Subcode == 0 {
		// Not the API's answer (a proxy's page, a web server): Msg says
		// what came back, with its HTTP status.
		return fmt.Sprintf("%s failed: %s", e.Endpoint, e.Msg)
	}
	msg := e.Msg
	if msg == "" {
		msg = http.StatusText(e.HTTPStatus)
	}
	return fmt.Sprintf("%s failed: %s (HTTP %d, result code %d/%d)", e.Endpoint, msg, e.HTTPStatus, e.Code, e.Subcode)
}

// is reports whether the error has this code and subcode.
func (e *apiError) is(code, subcode int) bool { return e.Code == code && e.Subcode == subcode }

// Reply caps: a reply is held in memory whole, so neither a server nor
// whatever answers in its place may make the agent hold hundreds of
// megabytes. The largest replies the agent reads are task documents
// (tasks.get_by_id, tasks.get_all, tasks.get_hyper_params): MongoDB caps a
// document at 16 MiB of BSON, and its JSON can be larger (escapes), hence
// 64 MiB for those. Everything else is far smaller: a workers.get_all
// entry is about 1 KiB, a queue entry under 100 bytes, a status change or
// a login a few hundred bytes; 16 MiB.
const (
	replyCapDefault  = 16 << 20
	replyCapTaskDocs = 64 << 20
)

// replyCap is the largest reply accepted from endpoint.
func replyCap(endpoint string) int64 {
	switch endpoint {
	case "tasks.get_by_id", "tasks.get_all", "tasks.get_hyper_params":
		return replyCapTaskDocs
	}
	return replyCapDefault
}

// replyTooLargeError is a reply over its endpoint's cap. It is not retried.
type replyTooLargeError struct {
	endpoint string
	size     int64 // the announced length; 0 when only "over the cap" is known
	limit    int64
}

func (e *replyTooLargeError) Error() string {
	size := fmt.Sprintf("more than %d MiB", e.limit>>20)
	if e.size > 0 {
		size = fmt.Sprintf("%.1f MiB", float64(e.size)/(1<<20))
	}
	return fmt.Sprintf("%s: the server's reply is %s, over the %d MiB this agent accepts from that endpoint; is api.api_server the ClearML API server, and is it healthy?", e.endpoint, size, e.limit>>20)
}

// unreachableError means the server could not be reached at all.
type unreachableError struct {
	host  string
	cause error
}

func (e *unreachableError) Error() string {
	var ce *tls.CertificateVerificationError
	var cfg *configError
	switch {
	case errors.As(e.cause, &cfg):
		return cfg.msg // the CA bundle: its own fix
	case errors.As(e.cause, &ce):
		return fmt.Sprintf("cannot reach the ClearML API server at %s: %s (set REQUESTS_CA_BUNDLE to the CA bundle that signed the server's certificate, or api.verify_certificate: false to skip the check)", e.host, describeNetErr(e.cause))
	}
	return fmt.Sprintf("cannot reach the ClearML API server at %s: %s (check api.api_server in ~/clearml.conf or CLEARML_API_HOST)", e.host, describeNetErr(e.cause))
}

func (e *unreachableError) Unwrap() error { return e.cause }

// describeNetErr shortens Go's wrapped network errors to their cause.
func describeNetErr(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dnsErr):
		return "unknown host " + dnsErr.Name
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timed out"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without an answer"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return oneLine(ue.Err.Error())
	}
	return oneLine(err.Error())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tokenClaims are the JWT claims the agent reads (never verified: the
// server signs them, the agent only needs the values).
type tokenClaims struct {
	Exp           float64 `json:"exp"`
	Iat           float64 `json:"iat"`
	APIVersion    string  `json:"api_version"`
	FeatureSet    string  `json:"feature_set"`
	ServerVersion string  `json:"server_version"`
	Env           string  `json:"env"`
	Identity      struct {
		User               string `json:"user"`
		Company            string `json:"company"`
		Role               string `json:"role"`
		ServiceAccountType int    `json:"service_account_type"`
	} `json:"identity"`
}

// mayImpersonate: the server lets system, root and admin keys impersonate
// (server-api.md §2.4), and the reference also accepts service accounts of
// type 2 and up. An unknown role (no claims) is given the benefit.
func (c tokenClaims) mayImpersonate() bool {
	switch c.Identity.Role {
	case "", "system", "root", "admin":
		return true
	}
	return c.Identity.ServiceAccountType >= 2
}

// parseTokenClaims decodes a JWT's payload without verifying it.
func parseTokenClaims(token string) (tokenClaims, error) {
	var c tokenClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, fmt.Errorf("token payload: %v", err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("token payload: %v", err)
	}
	if c.APIVersion == "" {
		c.APIVersion = "2.1"
		if c.Env == "prod" {
			c.APIVersion = "2.2"
		}
	}
	if c.FeatureSet == "" {
		c.FeatureSet = "basic"
	}
	return c, nil
}

// envelope is the server's reply wrapper.
type envelope struct {
	Meta *struct {
		ResultCode    int             `json:"result_code"`
		ResultSubcode int             `json:"result_subcode"`
		ResultMsg     string          `json:"result_msg"`
		ErrorStack    json.RawMessage `json:"error_stack"`
	} `json:"meta"`
	Data json.RawMessage `json:"data"`
}

// decodeEnvelope turns an HTTP reply into data or an *apiError.
func decodeEnvelope(endpoint string, status int, body []byte) (json.RawMessage, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil || env.Meta == nil {
		return nil, &apiError{Endpoint: endpoint, HTTPStatus: status,
			Msg: fmt.Sprintf("HTTP %d with a reply that is not a ClearML API envelope (is api.api_server the API server, usually port 8008?): %s", status, replySnippet(body))}
	}
	m := env.Meta
	if m.ResultCode != 200 {
		var stack string
		_ = json.Unmarshal(m.ErrorStack, &stack)
		return nil, &apiError{Endpoint: endpoint, HTTPStatus: status, Code: m.ResultCode, Subcode: m.ResultSubcode, Msg: m.ResultMsg, Stack: stack}
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return json.RawMessage("{}"), nil
	}
	return env.Data, nil
}

var htmlTitlePattern = lazyRegexp(`(?is)<title>(.{0,200}?)</title>`)

// replySnippet shows what came back instead of an envelope: an HTML page
// by its title (a proxy's or web server's error page), else the start of
// the text.
func replySnippet(body []byte) string {
	text := strings.TrimSpace(string(body))
	if text == "" {
		return "an empty reply"
	}
	if m := htmlTitlePattern().FindStringSubmatch(text); m != nil {
		return fmt.Sprintf("an HTML page titled %q", strings.Join(strings.Fields(m[1]), " "))
	}
	if len(text) > 120 {
		text = text[:120] + "..."
	}
	return strconv.Quote(text)
}

// readCapped reads a reply of at most limit bytes (nil, nil when it is
// longer). A reply of unknown length is read in chunks joined once at the
// end: io.ReadAll's doubling would leave up to twice the cap as garbage
// before an oversized reply is refused.
func readCapped(r io.Reader, length, limit int64) ([]byte, error) {
	if length >= 0 && length <= limit {
		body := make([]byte, length)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	var chunks [][]byte
	var total int64
	size := 32 << 10
	for {
		chunk := make([]byte, size)
		n, err := io.ReadFull(r, chunk)
		total += int64(n)
		if total > limit {
			return nil, nil
		}
		chunks = append(chunks, chunk[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
		size = min(size*2, 1<<20)
	}
	if len(chunks) == 1 {
		return chunks[0], nil
	}
	return bytes.Join(chunks, nil), nil
}
