package main

// The clearml-server REST client: {host}/v{X.Y}/{service}.{action} with a
// JSON body (GET by default, as the reference sends), token login and
// refresh, and the retry loop. The client's lock, token and raw send are
// used by this file only. The replies (envelope, errors, caps) are in
// api_reply.go; the retry policy in api_retries.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clientOptions tune a client for its caller.
type clientOptions struct {
	// interactive callers (list, config, execute setup) give up after
	// budget; a daemon retries for as long as it runs.
	interactive bool
	budget      time.Duration
	workerID    string
	logf        func(format string, args ...any) // each request and retry (--debug); nil for none
}

// apiClient talks to one clearml-server.
type apiClient struct {
	host         string
	accessKey    string
	secretKey    string
	credSource   string
	method       string
	workerHeader string
	threshold    time.Duration
	opts         clientOptions
	hc           *http.Client
	retryBase    time.Duration
	retryMax     time.Duration
	logf         func(format string, args ...any)
	tokenTTL     int // api.auth.request_token_expiration_sec: asked of auth.login; 0 for the server's default

	retryTotal         int  // api.http.retries.total, when retryTotalSet (api_retries.go)
	retryTotalSet      bool // else: retry within the budget
	maintenanceForever bool // api.http.wait_on_maintenance_forever

	mu     sync.Mutex
	token  string
	stale  bool // the server refused the token: log in again before the next call
	claims tokenClaims
}

// newAPIClient builds a client from the configuration; it does not log in yet.
func newAPIClient(cfg *agentConfig, opts clientOptions) (*apiClient, error) {
	host := cfg.str("api.api_server")
	if host == "" {
		host = cfg.str("api.host")
	}
	if host == "" {
		return nil, &configError{"no ClearML API server configured: set api.api_server in ~/clearml.conf or the CLEARML_API_HOST environment variable"}
	}
	host = strings.TrimRight(host, "/")
	if u, err := url.Parse(host); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &configError{fmt.Sprintf("api.api_server %q is not an http:// or https:// URL: fix it in ~/clearml.conf or CLEARML_API_HOST", host)}
	}
	c := &apiClient{
		host:      host,
		method:    http.MethodGet,
		opts:      opts,
		retryBase: 250 * time.Millisecond,
		retryMax:  30 * time.Second,
		logf:      opts.logf,
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if opts.interactive {
		c.retryMax = 4 * time.Second
		if c.opts.budget == 0 {
			c.opts.budget = 20 * time.Second
		}
	}
	c.applyRetryConfig(cfg)
	if tok := firstEnv(cfg.env, "CLEARML_AUTH_TOKEN", "TRAINS_AUTH_TOKEN"); tok != "" {
		c.token = tok
		c.credSource = "CLEARML_AUTH_TOKEN"
		c.claims, _ = parseTokenClaims(tok)
	} else {
		c.accessKey = cfg.str("api.credentials.access_key")
		c.secretKey = cfg.str("api.credentials.secret_key")
		c.credSource = "api.credentials in " + orNone(cfg.location)
		if firstEnv(cfg.env, "CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY") != "" {
			c.credSource = "CLEARML_API_ACCESS_KEY/CLEARML_API_SECRET_KEY"
		}
		if c.accessKey == "" || c.secretKey == "" {
			return nil, &configError{"no API credentials: set api.credentials.access_key and secret_key in ~/clearml.conf, or CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY"}
		}
	}
	switch m := strings.ToUpper(firstNonEmpty(cfg.str("api.http.default_method"), "GET")); m {
	case "GET", "POST", "PUT":
		c.method = m
	default:
		return nil, &configError{fmt.Sprintf("api.http.default_method %q must be get, post or put (CLEARML_API_DEFAULT_REQ_METHOD too)", m)}
	}
	c.threshold = time.Duration(cfg.float("api.auth.token_expiration_threshold_sec", 43200)) * time.Second
	c.tokenTTL = int(cfg.float("api.auth.request_token_expiration_sec", 0))
	c.workerHeader = opts.workerID
	if c.workerHeader == "" {
		c.workerHeader, _ = os.Hostname()
	}

	var err error
	if c.hc, err = newHTTPClient(cfg, opts.interactive); err != nil {
		return nil, err
	}
	return c, nil
}

// newHTTPClient is the client's HTTP transport: TLS as configured
// (api.verify_certificate, REQUESTS_CA_BUNDLE), quicker to give up a dial
// for interactive commands.
func newHTTPClient(cfg *agentConfig, interactive bool) (*http.Client, error) {
	tlsConf := &tls.Config{InsecureSkipVerify: !cfg.boolean("api.verify_certificate", true)}
	dialTimeout := 10 * time.Second
	if interactive {
		dialTimeout = 5 * time.Second
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	if bundle := firstEnv(cfg.env, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"); bundle != "" && !tlsConf.InsecureSkipVerify {
		bt, err := newCABundleTransport(t, bundle)
		if err != nil {
			return nil, err
		}
		return &http.Client{Transport: bt}, nil
	}
	return &http.Client{Transport: t}, nil
}

func orNone(s string) string {
	if s == "" {
		return "(no config file)"
	}
	return s
}

func expTime(exp float64) time.Time {
	if exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// request describes one call.
type request struct {
	endpoint    string // service.action
	version     string // "2.5", or "" for none
	method      string // "" means the default method
	contentType string
	body        []byte
	login       bool
	header      map[string]string // extra headers
}

// call sends a JSON request and decodes data into out (when non-nil).
func (c *apiClient) call(ctx context.Context, endpoint, version string, req any, out any) error {
	body := []byte("{}")
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return err
		}
	}
	data, err := c.do(ctx, request{endpoint: endpoint, version: version, contentType: "application/json", body: body})
	if err != nil {
		return err
	}
	if out != nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("%s: cannot decode the server's reply: %v", endpoint, err)
		}
	}
	return nil
}

// post sends one POST of a ready body (e.g. JSON lines) and drops the reply.
func (c *apiClient) post(ctx context.Context, endpoint, contentType string, body []byte) error {
	_, err := c.do(ctx, request{endpoint: endpoint, method: http.MethodPost, contentType: contentType, body: body})
	return err
}

// credentials are what a task process is given to reach the server: the
// keys, or (without keys) the current token.
func (c *apiClient) credentials() (accessKey, secretKey, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accessKey, c.secretKey, c.token
}

// setWorker makes the client speak as worker id (the X-ClearML-Worker
// header) from its next call on; call it before the client is shared.
func (c *apiClient) setWorker(id string) { c.workerHeader = id }

// identity is the claims of the current token (zero before the first login).
func (c *apiClient) identity() tokenClaims {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.claims
}

// login gets a fresh token (Basic with keys, Bearer with an auth token).
func (c *apiClient) login(ctx context.Context) error {
	data, err := c.do(ctx, request{endpoint: "auth.login", login: true})
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Code == 401 {
			who := fmt.Sprintf("access key %q", c.accessKey)
			if c.accessKey == "" {
				who = "the token in CLEARML_AUTH_TOKEN"
			}
			return fmt.Errorf("the server at %s rejected %s: %s (check %s; the secret is not shown)", c.host, who, ae.Msg, c.credSource)
		}
		return err
	}
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &r); err != nil || r.Token == "" {
		return fmt.Errorf("the server at %s answered auth.login without a token: is api.api_server the ClearML API server (usually port 8008)?", c.host)
	}
	claims, err := parseTokenClaims(r.Token)
	if err != nil {
		return fmt.Errorf("the server at %s sent an unreadable token: %v", c.host, err)
	}
	c.mu.Lock()
	c.token, c.claims, c.stale = r.Token, claims, false
	c.mu.Unlock()
	return nil
}

// checkLogin makes one auth.login with the client's keys and returns the
// reply's data; the client does not keep the token (init checks the keys
// it is given with it).
func (c *apiClient) checkLogin(ctx context.Context) (json.RawMessage, error) {
	return c.do(ctx, request{endpoint: "auth.login", login: true})
}

// ownerToken logs in as user through impersonation (X-ClearML-Impersonate-As),
// for --use-owner-token. The server allows it to admin, root and system
// roles only; its refusal is returned as is.
func (c *apiClient) ownerToken(ctx context.Context, user string) (string, error) {
	data, err := c.do(ctx, request{endpoint: "auth.login", login: true, header: map[string]string{"X-ClearML-Impersonate-As": user}})
	if err != nil {
		return "", err
	}
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &r); err != nil || r.Token == "" {
		return "", fmt.Errorf("the server answered auth.login without a token for user %s", user)
	}
	return r.Token, nil
}

// ensureToken logs in when there is no token or it is close to expiry.
func (c *apiClient) ensureToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok, stale, claims := c.token, c.stale, c.claims
	c.mu.Unlock()
	if tok != "" && !stale && !c.nearExpiry(claims, time.Now()) {
		return tok, nil
	}
	if err := c.login(ctx); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, nil
}

// nearExpiry: refresh within the threshold, but never more often than half
// the token's life (a server with short tokens would otherwise force a
// login before every call).
func (c *apiClient) nearExpiry(cl tokenClaims, now time.Time) bool {
	if cl.Exp <= 0 {
		return false
	}
	exp := expTime(cl.Exp)
	threshold := c.threshold
	if cl.Iat > 0 && cl.Iat < cl.Exp {
		if half := exp.Sub(expTime(cl.Iat)) / 2; threshold > half {
			threshold = half
		}
	}
	return exp.Sub(now) <= threshold
}

func (c *apiClient) url(r request) string {
	u := c.host + "/" + r.endpoint
	if r.version != "" {
		u = c.host + "/v" + r.version + "/" + r.endpoint
	}
	if r.endpoint == "auth.login" && c.tokenTTL > 0 {
		u += "?expiration_sec=" + strconv.Itoa(c.tokenTTL)
	}
	return u
}

// do sends one request with retries and returns the envelope's data.
func (c *apiClient) do(ctx context.Context, r request) (json.RawMessage, error) {
	b := c.callBudget(ctx)
	reauthed := false
	for attempt := 0; ; attempt++ {
		var token string
		if !r.login {
			var err error
			if token, err = c.ensureToken(ctx); err != nil {
				return nil, err
			}
		}
		status, body, retryAfter, err := c.send(ctx, r, b.deadline, token)
		var tooLarge *replyTooLargeError
		if errors.As(err, &tooLarge) {
			return nil, err // the same request gets the same reply
		}
		if err == nil && status == 401 && !r.login && !reauthed {
			// Tokens rotate: one fresh login, then the same call again.
			reauthed = true
			c.mu.Lock()
			c.stale = true
			c.mu.Unlock()
			attempt--
			continue
		}
		if err == nil && !retryableStatus(status) {
			return decodeEnvelope(r.endpoint, status, body)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && !retryableNetErr(err) {
			return nil, &unreachableError{c.host, err}
		}
		wait := c.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, c.retryMax)
		}
		if c.retriesSpent(attempt, status, err) || b.exceededBy(wait, err) {
			return c.lastAnswer(r, status, body, err)
		}
		metricsOn().apiRetry(r.endpoint)
		if err := c.waitRetry(ctx, r, status, err, wait); err != nil {
			return nil, err
		}
	}
}

// lastAnswer is what a call that may not retry again returns.
func (c *apiClient) lastAnswer(r request, status int, body []byte, err error) (json.RawMessage, error) {
	if err != nil {
		return nil, &unreachableError{c.host, err}
	}
	return decodeEnvelope(r.endpoint, status, body)
}

// waitRetry logs why the call is retried and waits; the error is the
// context's, when it ends first.
func (c *apiClient) waitRetry(ctx context.Context, r request, status int, err error, wait time.Duration) error {
	if err != nil {
		c.logf("%s: %s; retrying in %s", r.endpoint, describeNetErr(err), wait.Round(time.Millisecond))
	} else {
		c.logf("%s: HTTP %d; retrying in %s", r.endpoint, status, wait.Round(time.Millisecond))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// send makes one HTTP attempt. A non-nil error is a transport failure.
func (c *apiClient) send(ctx context.Context, r request, deadline time.Time, token string) (int, []byte, time.Duration, error) {
	attemptTimeout := 60 * time.Second
	if !deadline.IsZero() {
		// The last attempt still gets a moment, so the error it reports is
		// the server's, not our own deadline.
		attemptTimeout = max(min(10*time.Second, time.Until(deadline)), 500*time.Millisecond)
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()

	method := r.method
	if method == "" {
		method = c.method
	}
	req, err := http.NewRequestWithContext(actx, method, c.url(r), bytes.NewReader(r.body))
	if err != nil {
		return 0, nil, 0, err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-ClearML-Worker", c.workerHeader)
	req.Header.Set("X-Trains-Worker", c.workerHeader)
	req.Header.Set("X-ClearML-Agent", "clearml-agent-go-"+agentVersion)
	req.Header.Set("X-Trains-Agent", "clearml-agent-go-"+agentVersion)
	req.Header.Set("User-Agent", progName+"/"+agentVersion)
	if r.login {
		if c.accessKey != "" {
			req.SetBasicAuth(c.accessKey, c.secretKey)
		} else {
			c.mu.Lock()
			tok := c.token
			c.mu.Unlock()
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	} else {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c.logf("%s %s", method, req.URL.Redacted())
	resp, err := c.hc.Do(req)
	if err != nil {
		metricsOn().apiAnswer(r.endpoint, 0, err)
		return 0, nil, 0, err
	}
	metricsOn().apiAnswer(r.endpoint, resp.StatusCode, nil)
	defer resp.Body.Close()
	limit := replyCap(r.endpoint)
	if resp.ContentLength > limit {
		return 0, nil, 0, &replyTooLargeError{endpoint: r.endpoint, size: resp.ContentLength, limit: limit}
	}
	body, err := readCapped(resp.Body, resp.ContentLength, limit)
	if err != nil {
		return 0, nil, 0, err
	}
	if body == nil {
		return 0, nil, 0, &replyTooLargeError{endpoint: r.endpoint, limit: limit}
	}
	var retryAfter time.Duration
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			retryAfter = time.Duration(n) * time.Second
		}
	}
	return resp.StatusCode, body, retryAfter, nil
}

// postEventBatch sends one json-lines batch of events (events.add_batch,
// POST, no version, as the reference) in a single attempt: the console
// shipper owns retries and backoff. Errors, by what the shipper does next:
//   - errTokenRefused (401; the token is marked stale first): log in again;
//   - *permanentShipError: the server will never take this batch (413, a 4xx
//     envelope, a 4xx that is not the API's answer at all): split or drop it;
//   - *refusedShipError: something answered, but not with a delivery (a 2xx
//     HTML page or cut-off JSON, a 500): retry, for a bounded time at close;
//   - anything else (transport, 408, 429, 502-504) is an outage: retry and
//     spool, with the server's Retry-After.
func (c *apiClient) postEventBatch(ctx context.Context, body []byte, events int, attemptTimeout time.Duration) (retryAfter time.Duration, err error) {
	lctx, cancel := context.WithTimeout(ctx, min(shipLoginTimeout, attemptTimeout))
	tok, err := c.ensureToken(lctx)
	cancel()
	if err != nil {
		return 0, err // even rejected keys: they may be fixed while the task runs
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	r := request{endpoint: "events.add_batch", method: http.MethodPost, contentType: "application/json-lines", body: body}
	status, resp, retryAfter, err := c.send(actx, r, time.Time{}, tok)
	if err != nil {
		return 0, fmt.Errorf("events.add_batch: %s", describeNetErr(err))
	}
	switch {
	case status == http.StatusUnauthorized:
		c.mu.Lock()
		c.stale = true
		c.mu.Unlock()
		return 0, errTokenRefused
	case status == http.StatusRequestEntityTooLarge:
		return 0, &permanentShipError{tooLarge: true, err: fmt.Errorf(
			"events.add_batch: HTTP 413: a request of %d bytes is too large for the server or a proxy in front of it", len(body))}
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
		status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return retryAfter, fmt.Errorf("events.add_batch: HTTP %d", status)
	}
	data, err := decodeEnvelope(r.endpoint, status, resp)
	if err != nil {
		var ae *apiError
		errors.As(err, &ae)
		switch {
		case status >= 400 && status < 500:
			return 0, &permanentShipError{err: err} // an envelope's 4xx, or a proxy's page
		case ae != nil && ae.Code >= 400 && ae.Code < 500 && ae.Code != 401 && ae.Code != 429:
			return 0, &permanentShipError{err: err}
		}
		return retryAfter, &refusedShipError{err}
	}
	var res struct {
		Added      int            `json:"added"`
		ErrorsInfo map[string]int `json:"errors_info"`
	}
	if json.Unmarshal(data, &res) == nil && res.Added != events {
		// Some events were refused; resending would duplicate the rest.
		c.logf("events.add_batch: only %d of %d log events registered: %v", res.Added, events, res.ErrorsInfo)
	}
	return 0, nil
}
