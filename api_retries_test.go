package main

import (
	"context"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// api.http.retries.total caps the retries (0: none), backoff_factor and
// backoff_max set the wait; api.http.wait_on_maintenance_forever keeps
// retrying a 503 beyond that cap.
func TestConfigHTTPRetries(t *testing.T) {
	client := func(t *testing.T, s *fakeserver.Server, extra map[string]string) *apiClient {
		env := serverEnv(s)
		env["HOME"] = t.TempDir()
		env["CLEARML_AGENT__API__HTTP__RETRIES__BACKOFF_FACTOR"] = "0.01"
		env["CLEARML_AGENT__API__HTTP__RETRIES__BACKOFF_MAX"] = "0.02"
		for k, v := range extra {
			env[k] = v
		}
		cfg, err := loadConfig("", mapEnv(env))
		if err != nil {
			t.Fatal(err)
		}
		c, err := newAPIClient(cfg, clientOptions{interactive: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.retryBase != 10*time.Millisecond || c.retryMax != 20*time.Millisecond {
			t.Errorf("backoff %v..%v, want 10ms..20ms from backoff_factor/backoff_max", c.retryBase, c.retryMax)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		extra  map[string]string
		inject func(s *fakeserver.Server)
		calls  int
		ok     bool
	}{
		{"total 2 on 502", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "2"}, func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 10, 502) }, 3, false},
		{"total 0", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "0"}, func(s *fakeserver.Server) { s.FailPlain("workers.get_all", 10, 502) }, 1, false},
		{"total 1, maintenance not forever", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "1", "CLEARML_AGENT__API__HTTP__WAIT_ON_MAINTENANCE_FOREVER": "false"},
			func(s *fakeserver.Server) { s.FailNext("workers.get_all", 5, 503, 0, "maintenance") }, 2, false},
		{"total 1, maintenance forever (default)", map[string]string{"CLEARML_AGENT__API__HTTP__RETRIES__TOTAL": "1"},
			func(s *fakeserver.Server) { s.FailNext("workers.get_all", 5, 503, 0, "maintenance") }, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t)
			tc.inject(s)
			c := client(t, s, tc.extra)
			err := c.call(context.Background(), "workers.get_all", "", map[string]any{}, nil)
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want success %v", err, tc.ok)
			}
			if n := len(s.RequestsTo("workers.get_all")); n != tc.calls {
				t.Errorf("%d requests, want %d", n, tc.calls)
			}
		})
	}
}
