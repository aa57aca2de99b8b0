package main

import (
	"context"
	"testing"
)

func TestQueueTable(t *testing.T) {
	got := queueTable([]queueRef{
		{ID: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Name: "default"},
		{ID: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Name: "second", Tags: []string{"x"}},
	})
	want := `+----------------------------------+---------+--------+
| id                               | name    | tags   |
+----------------------------------+---------+--------+
| aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | default |        |
| bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb | second  | ['x']  |
+----------------------------------+---------+--------+
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestResolveQueues(t *testing.T) {
	s := startServer(t)
	second := s.AddQueue("second")
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true})
	ctx := context.Background()
	qs, err := resolveQueues(ctx, c, nil, false)
	if err != nil || len(qs) != 1 || qs[0].ID != s.DefaultQueueID() {
		t.Fatalf("default queue: %v %v", qs, err)
	}
	qs, err = resolveQueues(ctx, c, []string{"second", s.DefaultQueueID()}, false)
	if err != nil || len(qs) != 2 || qs[0].ID != second || qs[1].Name != "default" {
		t.Fatalf("by name and id: %v %v", qs, err)
	}
	if _, err := resolveQueues(ctx, c, []string{"nope"}, false); err == nil {
		t.Error("unknown queue accepted")
	}
	qs, err = resolveQueues(ctx, c, []string{"made-here"}, true)
	if err != nil || len(qs) != 1 || qs[0].Name != "made-here" {
		t.Fatalf("--create-queue: %v %v", qs, err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"default", "defualt", 2}, {"default", "default", 0}, {"gpu", "gpus", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

// A server error (5xx) while resolving the queues must reach the daemon's
// retry-on-outage check, wrapped as it may be: the daemon waits it out.
func TestResolveQueuesServerErrorIsRetried(t *testing.T) {
	s := startServer(t)
	c := testClient(t, s.URL(), nil, clientOptions{interactive: true})
	s.FailNext("queues.create", 1, 500, 0, "database is restarting")
	_, err := resolveQueues(context.Background(), c, []string{"made-later"}, true)
	if err == nil || !serverAway(err) {
		t.Fatalf("queues.create answering 500: %v; the daemon would give up instead of retrying", err)
	}
	if qs, err := resolveQueues(context.Background(), c, []string{"made-later"}, true); err != nil || len(qs) != 1 {
		t.Fatalf("after the outage: %v %v", qs, err)
	}
	if _, err := resolveQueues(context.Background(), c, []string{"nope"}, false); err == nil || serverAway(err) {
		t.Errorf("an unknown queue is not an outage: %v", err)
	}
}
