package fakeserver

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Event types accepted by events.add / add_batch (§3.4).
var eventTypes = []string{"log", "training_stats_scalar", "training_stats_vector", "training_debug_image", "plot"}

// LogEvent is one "log" event of a task.
type LogEvent struct {
	Timestamp int64 // epoch ms
	Level     string
	Msg       string
	Worker    string
	Iter      int64
}

func init() {
	register("events.add", "1.0", eventsAdd)
	register("events.add_batch", "1.0", eventsAddBatch)
	register("events.get_task_log", "1.0", eventsGetTaskLog)
}

func eventsAdd(c *call) (map[string]any, error) {
	return c.addEvents([]map[string]any{copyMap(c.data)})
}

func eventsAddBatch(c *call) (map[string]any, error) {
	events := c.batch
	if events == nil && len(c.data) > 0 { // a JSON object is a batch of one
		events = []map[string]any{c.data}
	}
	if len(events) == 0 {
		return nil, newErr(400, 17, msgBatchNoItems, "")
	}
	return c.addEvents(events)
}

// addEvents is EventBLL.add_events: per-event errors are counted, and 131
// is raised only when nothing was added.
func (c *call) addEvents(events []map[string]any) (map[string]any, error) {
	worker := c.worker
	if worker == "" {
		worker = "<unknown>"
	}
	errs := map[string]int{}
	var errOrder []string
	fail := func(reason string) {
		if errs[reason] == 0 {
			errOrder = append(errOrder, reason)
		}
		errs[reason]++
	}
	added := 0
	maxIter := map[string]int64{}
	used := map[string]bool{}
	var usedOrder []string
	for _, in := range events {
		ev := copyMap(in)
		delete(ev, "x_axis_label")
		allowLocked, _ := ev["allow_locked"].(bool)
		delete(ev, "allow_locked")
		modelEvent, _ := ev["model_event"].(bool)
		if modelEvent {
			if m, ok := ev["model"]; ok {
				ev["task"] = m
				delete(ev, "model")
			}
		}
		ev["model_event"] = modelEvent
		typ, ok := ev["type"].(string)
		if !ok {
			fail("Event must have a 'type' field")
			continue
		}
		typ = strings.ReplaceAll(typ, " ", "_")
		if !containsStr(eventTypes, typ) {
			fail("Invalid event type " + typ)
			continue
		}
		if modelEvent && typ == "log" {
			fail("Task log events are not supported for models")
			continue
		}
		tid, ok := ev["task"].(string)
		if !ok {
			fail("Event must have a 'task' field")
			continue
		}
		t := c.s.tasks[tid]
		if modelEvent || t == nil || asString(t["company"]) != c.ident.Company ||
			(!allowLocked && (t["status"] == StatusPublishing || t["status"] == StatusPublished)) {
			kind := "task"
			if modelEvent {
				kind = "model"
			}
			fail(fmt.Sprintf("Invalid %s id %s", kind, tid))
			continue
		}
		ev["type"] = typ
		ev["@timestamp"] = isoTime(c.now)
		if ts, ok := ev["ts"]; ok {
			ev["timestamp"] = ts
			delete(ev, "ts")
		}
		if _, ok := ev["timestamp"]; !ok {
			ev["timestamp"] = c.now.UnixMilli()
		}
		if _, ok := ev["worker"]; !ok {
			ev["worker"] = worker
		}
		if iv, ok := ev["iter"]; ok && iv != nil {
			it, ok := asInt(iv)
			if !ok {
				fail(fmt.Sprintf("Iteration number should not exceed %d", int64(math.MaxInt64)))
				continue
			}
			ev["iter"] = it
			if cur, seen := maxIter[tid]; !seen || it > cur {
				maxIter[tid] = it
			}
		}
		if v, ok := ev["values"]; ok {
			ev["value"] = v
			delete(ev, "values")
		}
		ev["metric"] = asString(ev["metric"])
		ev["variant"] = asString(ev["variant"])
		if typ != "log" { // metric events are keyed, so a re-send overwrites
			key := eventKey(ev)
			replaced := false
			for i, old := range c.s.events[tid] {
				if old["_id"] == key {
					c.s.events[tid][i], replaced = ev, true
				}
			}
			ev["_id"] = key
			if !replaced {
				c.s.events[tid] = append(c.s.events[tid], ev)
			}
		} else {
			ev["_id"] = newID()
			c.s.events[tid] = append(c.s.events[tid], ev)
		}
		if typ == "training_stats_scalar" {
			updateLastMetrics(t, ev)
		}
		if !used[tid] {
			used[tid] = true
			usedOrder = append(usedOrder, tid)
		}
		added++
	}
	for _, tid := range usedOrder { // sending events also "pings" the task
		t := c.s.tasks[tid]
		c.s.touchTask(t, c.ident.User, c.now)
		if it, ok := maxIter[tid]; ok {
			if cur, _ := asInt(t["last_iteration"]); it > cur {
				t["last_iteration"] = it
			}
		}
	}
	if added == 0 {
		kvs := make([]kv, len(errOrder))
		for i, r := range errOrder {
			kvs[i] = kv{r, errs[r]}
		}
		return nil, newErr(400, 131, msgEventsNotAdded, "", kvs...)
	}
	info := map[string]any{}
	total := 0
	for r, n := range errs {
		info[r] = n
		total += n
	}
	return map[string]any{"added": added, "errors": total, "errors_info": info}, nil
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func eventKey(ev map[string]any) string {
	parts := []string{asString(ev["task"]), fmt.Sprint(ev["iter"]), asString(ev["metric"]), asString(ev["variant"])}
	if k := asString(ev["key"]); k != "" {
		parts = append(parts, k)
	}
	return md5hex(asString(ev["type"]) + "-" + strings.Join(parts, "-"))
}

// updateLastMetrics keeps task.last_metrics[md5(metric)][md5(variant)] (§3.4).
func updateLastMetrics(t map[string]any, ev map[string]any) {
	val, ok := asFloat(ev["value"])
	if !ok {
		return
	}
	it, _ := asInt(ev["iter"])
	lm := asMap(t["last_metrics"])
	if lm == nil {
		lm = map[string]any{}
		t["last_metrics"] = lm
	}
	mh, vh := md5hex(asString(ev["metric"])), md5hex(asString(ev["variant"]))
	mm := asMap(lm[mh])
	if mm == nil {
		mm = map[string]any{}
		lm[mh] = mm
	}
	e := asMap(mm[vh])
	if e == nil {
		e = map[string]any{"metric": ev["metric"], "variant": ev["variant"], "first_value": val,
			"first_value_iteration": it, "min_value": val, "min_value_iteration": it,
			"max_value": val, "max_value_iteration": it, "count": int64(0), "mean_value": 0.0}
		mm[vh] = e
	}
	n, _ := asInt(e["count"])
	mean, _ := asFloat(e["mean_value"])
	e["mean_value"] = (mean*float64(n) + val) / float64(n+1)
	e["count"] = n + 1
	e["value"] = val
	if mn, _ := asFloat(e["min_value"]); val < mn {
		e["min_value"], e["min_value_iteration"] = val, it
	}
	if mx, _ := asFloat(e["max_value"]); val > mx {
		e["max_value"], e["max_value_iteration"] = val, it
	}
}

func eventsGetTaskLog(c *call) (map[string]any, error) {
	p := c.params()
	tid := p.str("task", true)
	batch, _ := p.integer("batch_size", 5000)
	earlier := p.boolean("navigate_earlier", true)
	from, hasFrom := p.integer("from_timestamp", 0)
	order := p.optStr("order", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	if c.s.readTask(c.ident.Company, tid) == nil {
		return nil, errInvalidTaskIDs(tid)
	}
	var logs []map[string]any
	for _, e := range c.s.events[tid] {
		if e["type"] == "log" {
			logs = append(logs, e)
		}
	}
	total := len(logs)
	sort.SliceStable(logs, func(i, j int) bool {
		a, _ := asInt(logs[i]["timestamp"])
		b, _ := asInt(logs[j]["timestamp"])
		return a < b
	})
	var sel []map[string]any
	for _, e := range logs {
		ts, _ := asInt(e["timestamp"])
		if hasFrom && ((earlier && ts >= from) || (!earlier && ts <= from)) {
			continue
		}
		sel = append(sel, e)
	}
	if batch > 0 && int64(len(sel)) > batch {
		if earlier {
			sel = sel[int64(len(sel))-batch:]
		} else {
			sel = sel[:batch]
		}
	}
	desc := earlier
	if order != "" {
		desc = order == "desc"
	}
	out := make([]any, 0, len(sel))
	for i := range sel {
		e := sel[i]
		if desc {
			e = sel[len(sel)-1-i]
		}
		d := copyMap(e)
		delete(d, "_id")
		out = append(out, d)
	}
	return map[string]any{"events": out, "returned": len(out), "total": total}, nil
}

// ---- test hooks ----

// Events returns copies of every stored event of a task, in arrival order.
func (s *Server) Events(taskID string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, e := range s.events[taskID] {
		d := copyMap(e)
		delete(d, "_id")
		out = append(out, d)
	}
	return out
}

// TaskLog returns the task's log events in arrival order.
func (s *Server) TaskLog(taskID string) []LogEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []LogEvent
	for _, e := range s.events[taskID] {
		if e["type"] != "log" {
			continue
		}
		ts, _ := asInt(e["timestamp"])
		it, _ := asInt(e["iter"])
		out = append(out, LogEvent{Timestamp: ts, Level: asString(e["level"]), Msg: asString(e["msg"]),
			Worker: asString(e["worker"]), Iter: it})
	}
	return out
}

// TaskLogText joins the log messages, one line per event at least.
func (s *Server) TaskLogText(taskID string) string {
	var b strings.Builder
	for _, e := range s.TaskLog(taskID) {
		b.WriteString(e.Msg)
		if !strings.HasSuffix(e.Msg, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
