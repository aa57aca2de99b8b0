package main

import "time"

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
