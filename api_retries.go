package main

// Retries: which failures are retried, the backoff, the per-call budget
// and the api.http.retries configuration.

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

// The reference's shipped api.http.retries values. This agent's own
// schedule (0.25 s doubling to 30 s, 4 s for commands you type; retrying
// for as long as a daemon runs) stands in for them; values set to
// anything else are honoured.
const (
	shippedRetriesTotal  = 240
	shippedBackoffFactor = 1.0
	shippedBackoffMax    = 120.0
)

// applyRetryConfig reads api.http.retries (total: how many retries before
// an error, 0 for none; backoff_factor and backoff_max: the wait, factor x
// 2^n seconds up to the max) and api.http.wait_on_maintenance_forever (a
// 503 "under maintenance" does not use up the retries).
func (c *apiClient) applyRetryConfig(cfg *agentConfig) {
	if total := cfg.float("api.http.retries.total", shippedRetriesTotal); total != shippedRetriesTotal && total >= 0 {
		c.retryTotal, c.retryTotalSet = int(total), true
	}
	if f := cfg.float("api.http.retries.backoff_factor", shippedBackoffFactor); f != shippedBackoffFactor && f > 0 {
		c.retryBase = time.Duration(f * float64(time.Second))
	}
	if m := cfg.float("api.http.retries.backoff_max", shippedBackoffMax); m != shippedBackoffMax && m > 0 {
		c.retryMax = time.Duration(m * float64(time.Second))
	}
	c.maintenanceForever = cfg.boolean("api.http.wait_on_maintenance_forever", true)
}

// retriesSpent says whether a failed attempt (after retries retries) is
// the last one allowed by api.http.retries.total.
func (c *apiClient) retriesSpent(retries, status int, err error) bool {
	if !c.retryTotalSet || retries < c.retryTotal {
		return false
	}
	return err != nil || status != 503 || !c.maintenanceForever
}

// retryableStatus are the statuses the reference retries (plus 504 from
// proxies in front of a restarting server).
func retryableStatus(code int) bool {
	switch code {
	case 429, 502, 503, 504, 509:
		return true
	}
	return false
}

// retryableNetErr: connection-level failures worth another try.
func retryableNetErr(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return !dnsErr.IsNotFound
	}
	var ce *tls.CertificateVerificationError
	var cfg *configError // the CA bundle, read at the first TLS connection
	return !errors.As(err, &ce) && !errors.As(err, &cfg)
}

// callBudget is how long one call may keep retrying.
type callBudget struct {
	start    time.Time
	budget   time.Duration
	deadline time.Time // zero: no limit
	// A refused connection at an interactive prompt is a wrong host or a
	// stopped server: stop asking after a moment. A call with its own
	// budget (a final status, a log batch) waits out a restart instead.
	fastRefusal bool
}

func (c *apiClient) callBudget(ctx context.Context) callBudget {
	b := callBudget{start: time.Now(), budget: c.opts.budget, fastRefusal: c.opts.interactive}
	if d, ok := ctx.Value(budgetKey{}).(time.Duration); ok {
		b.budget, b.fastRefusal = d, false
	}
	if b.budget > 0 {
		b.deadline = b.start.Add(b.budget)
	}
	return b
}

// exceededBy says whether waiting wait after an attempt that failed with
// err (nil: a retryable status) would go past the budget.
func (b callBudget) exceededBy(wait time.Duration, err error) bool {
	if b.deadline.IsZero() {
		return false
	}
	limit := b.deadline
	if b.fastRefusal && err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		limit = b.start.Add(min(b.budget, 1500*time.Millisecond))
	}
	return time.Now().Add(wait).After(limit)
}

// backoff is capped exponential with jitter in [d/2, d].
func (c *apiClient) backoff(attempt int) time.Duration {
	d := c.retryBase << min(attempt, 16)
	if d > c.retryMax || d <= 0 {
		d = c.retryMax
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// budgetKey carries a per-call retry budget (see withBudget).
type budgetKey struct{}

// withBudget lets one call retry for longer (or shorter) than the client's
// default, e.g. a final status that must survive a server restart.
func withBudget(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, budgetKey{}, d)
}
