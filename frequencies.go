package main

import (
	"strconv"
	"time"
)

// envSeconds reads a variable holding seconds (a float); 0 when unset,
// unreadable or not positive.
func envSeconds(env envLookup, name string) time.Duration {
	f, err := strconv.ParseFloat(firstEnv(env, name), 64)
	if err != nil || f <= 0 {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

// pollPaceOverride is CLEARML_AGENT_QUEUE_POLL_FREQ_SEC: the gap between
// queue polls, winning over --polling-interval as in the reference.
func pollPaceOverride(env envLookup, pace time.Duration) time.Duration {
	if d := envSeconds(env, "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC"); d > 0 {
		return d
	}
	return pace
}

// reportFrequency is CLEARML_AGENT_STATUS_REPORT_FREQ_SEC: how often a
// worker reports its machine (the reference's machine update interval).
func reportFrequency(env envLookup, def time.Duration) time.Duration {
	if d := envSeconds(env, "CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"); d > 0 {
		return d
	}
	return def
}
