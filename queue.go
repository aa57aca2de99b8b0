package main

// The daemon's queues: resolving --queue names (and the default queue),
// their names and tags, and polling them for tasks.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// defaultPollPace is the gap between two queues.get_next_task calls while
// idle. The reference's idle load is 27 requests a minute (get_all plus
// get_next_task every 5 s, and a status report every 30 s); spending the
// whole budget on get_next_task (25 a minute plus 2 reports) halves the
// average pickup time to about 1.2 s.
const defaultPollPace = 2400 * time.Millisecond

// queueRef is a queue the worker serves.
type queueRef struct {
	ID   string   `json:"id"`
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// GPUs a task of this queue takes with --dynamic-gpus.
	gpuMin, gpuMax int
	// A fractional queue's share of one GPU (gpu_fraction.go); 0 otherwise.
	gpuFracMin, gpuFracMax float64
}

// resolveQueues turns --queue values into queues, as the reference does:
// ids pass through, names must match exactly (case-insensitive), no queue
// means the one tagged default, and --create-queue creates missing ones.
func resolveQueues(ctx context.Context, c *apiClient, names []string, create bool) ([]queueRef, error) {
	if len(names) == 0 {
		var r struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if err := c.call(ctx, "queues.get_default", "2.5", map[string]any{}, &r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				return nil, err
			}
			names = []string{"default"}
		} else {
			return []queueRef{{ID: r.ID, Name: r.Name}}, nil
		}
	}
	var ids []string
	for _, n := range names {
		id, err := resolveName(ctx, c, "queues", n)
		if err != nil && create && !idPattern().MatchString(n) {
			var r struct {
				ID string `json:"id"`
			}
			if cerr := c.call(ctx, "queues.create", "2.5", map[string]any{"name": n}, &r); cerr != nil {
				return nil, fmt.Errorf("cannot create queue %q: %w", n, cerr)
			}
			id, err = r.ID, nil
		}
		if err != nil {
			var nf *notFoundError
			if !create && errors.As(err, &nf) {
				return nil, fmt.Errorf("%w (or pass --create-queue to create it)", err)
			}
			return nil, err
		}
		ids = append(ids, id)
	}
	return fetchQueues(ctx, c, ids)
}

// fetchQueues reads names and tags of the queues, keeping the given order.
func fetchQueues(ctx context.Context, c *apiClient, ids []string) ([]queueRef, error) {
	var r struct {
		Queues []queueRef `json:"queues"`
	}
	if err := c.call(ctx, "queues.get_all", "2.5", map[string]any{"id": ids, "only_fields": []string{"id", "name", "tags"}}, &r); err != nil {
		return nil, err
	}
	byID := map[string]queueRef{}
	for _, q := range r.Queues {
		byID[q.ID] = q
	}
	out := make([]queueRef, 0, len(ids))
	for _, id := range ids {
		q, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("could not find queue with name/id %q", id)
		}
		out = append(out, q)
	}
	return out, nil
}

// queueTable renders the reference's banner table of queues.
func queueTable(queues []queueRef) string {
	rows := [][]string{{"id", "name", "tags"}}
	for _, q := range queues {
		tags := ""
		if len(q.Tags) > 0 {
			quoted := make([]string, len(q.Tags))
			for i, t := range q.Tags {
				quoted[i] = "'" + t + "'"
			}
			tags = "[" + strings.Join(quoted, ", ") + "]"
		}
		rows = append(rows, []string{q.ID, q.Name, tags})
	}
	widths := make([]int, 3)
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c)+1, 3)
		}
	}
	// The reference's layout: the last column is one wider than the others.
	border := "+"
	for i, w := range widths {
		if i == len(widths)-1 {
			w++
		}
		border += strings.Repeat("-", w+1) + "+"
	}
	line := func(r []string) string {
		s := "|"
		for i, c := range r {
			pad := widths[i] - len(c)
			if i == len(r)-1 {
				pad++
			}
			s += " " + c + strings.Repeat(" ", pad) + "|"
		}
		return s
	}
	out := []string{border, line(rows[0]), border}
	for _, r := range rows[1:] {
		out = append(out, line(r))
	}
	out = append(out, border, "")
	return strings.Join(out, "\n")
}

// queueHasEntries peeks whether q has a task waiting (--dynamic-gpus); on
// an error it says yes, so a big task is not passed over by mistake.
func (s *scheduler) queueHasEntries(ctx context.Context, q queueRef) bool {
	var r struct {
		Queue struct {
			Entries []json.RawMessage `json:"entries"`
		} `json:"queue"`
	}
	if err := s.api.call(withBudget(ctx, 10*time.Second), "queues.get_by_id", "2.4", map[string]any{"queue": q.ID, "max_task_entries": 1}, &r); err != nil {
		return true
	}
	return len(r.Queue.Entries) > 0
}

func (s *scheduler) indexOf(q queueRef) int {
	for i, x := range s.queues {
		if x.ID == q.ID {
			return i
		}
	}
	return 0
}

// pollOrder is the queues in priority order, or rotated for fairness.
func (s *scheduler) pollOrder() []queueRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.opts.orderFairness || len(s.queues) == 0 {
		return slices.Clone(s.queues)
	}
	n := s.nextQueue % len(s.queues)
	return append(slices.Clone(s.queues[n:]), s.queues[:n]...)
}

func (s *scheduler) refreshQueues(ctx context.Context) {
	ids := make([]string, len(s.queues))
	for i, q := range s.queues {
		ids[i] = q.ID
	}
	if qs, err := fetchQueues(withBudget(ctx, 10*time.Second), s.api, ids); err == nil {
		s.mu.Lock()
		for i := range qs {
			qs[i].gpuMin, qs[i].gpuMax = s.queues[i].gpuMin, s.queues[i].gpuMax
			qs[i].gpuFracMin, qs[i].gpuFracMax = s.queues[i].gpuFracMin, s.queues[i].gpuFracMax
		}
		s.queues = qs
		s.mu.Unlock()
	}
}

// nextTask pops the head of a queue ("" when empty). With
// --use-owner-token it also learns the task's owner.
func (s *scheduler) nextTask(ctx context.Context, q queueRef) (string, error) {
	var r struct {
		Entry struct {
			Task  string `json:"task"`
			Added string `json:"added"` // when it was enqueued
		} `json:"entry"`
		TaskInfo struct {
			User string `json:"user"`
		} `json:"task_info"`
	}
	req := map[string]any{"queue": q.ID}
	if s.opts.useOwnerToken {
		req["get_task_info"] = true
	}
	err := s.api.call(withBudget(ctx, 15*time.Second), "queues.get_next_task", "2.14", req, &r)
	if m := metricsOn(); m != nil {
		m.queuePolled(q.Name, err)
		if err == nil && r.Entry.Task != "" {
			s.notePickup(r.Entry.Task, r.Entry.Added)
		}
	}
	if err == nil && r.Entry.Task != "" && s.opts.useOwnerToken {
		s.mu.Lock()
		s.owners[r.Entry.Task] = r.TaskInfo.User
		s.mu.Unlock()
	}
	return r.Entry.Task, err
}

// nearQueueNames lists up to three existing queue names close to name (a
// typo, another case), for the "not found" message.
func nearQueueNames(ctx context.Context, c *apiClient, name string) []string {
	var r struct {
		Queues []struct{ Name string } `json:"queues"`
	}
	if c.call(ctx, "queues.get_all", "2.4", map[string]any{"only_fields": []string{"name"}}, &r) != nil {
		return nil
	}
	var out []string
	for _, q := range r.Queues {
		if len(out) < 3 && q.Name != "" && editDistance(strings.ToLower(q.Name), strings.ToLower(name)) <= max(1, min(2, len(name)/3)) {
			out = append(out, strconv.Quote(q.Name))
		}
	}
	return out
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// resolveQueuesRetrying is resolveQueues that waits out a server outage
// (a service manager restarting the daemon would only hit the same wall);
// a signal gives up (exit 254).
func resolveQueuesRetrying(c *apiClient, names []string, create bool, sigs <-chan os.Signal, logf func(string, ...any)) ([]queueRef, error) {
	for attempt := 0; ; attempt++ {
		queues, err := resolveQueues(withBudget(context.Background(), 30*time.Second), c, names, create)
		if err == nil || !serverAway(err) {
			return queues, err
		}
		wait := min(time.Duration(1<<min(attempt, 5))*time.Second, 30*time.Second)
		logf("clearml-agent: %v; retrying in %s", err, wait)
		select {
		case <-sigs:
			return nil, &exitError{code: 254}
		case <-time.After(wait):
		}
	}
}

// serverAway says whether err means the server cannot be reached or
// failed (5xx): something to wait out rather than give up on.
func serverAway(err error) bool {
	var ue *unreachableError
	var ae *apiError
	return errors.As(err, &ue) || errors.As(err, &ae) && ae.Code >= 500
}
