package fakeserver

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Queue is a queue document (§3.1). Entries are FIFO (§5).
type Queue struct {
	ID          string
	Name        string
	DisplayName string
	Company     string
	Created     time.Time
	LastUpdate  time.Time
	Tags        []string
	SystemTags  []string
	Entries     []QueueEntry
	Metadata    map[string]any
}

// QueueEntry is one waiting task.
type QueueEntry struct {
	Task  string
	Added time.Time
}

// hiddenQueueTags is services.queues.hidden_tags (§3.1).
var hiddenQueueTags = []string{"k8s-glue"}

func init() {
	register("queues.get_all", "2.4", queuesGetAll)
	register("queues.get_by_id", "2.4", queuesGetByID)
	register("queues.get_default", "2.4", queuesGetDefault)
	register("queues.create", "2.4", queuesCreate)
	register("queues.update", "2.4", queuesUpdate)
	register("queues.delete", "2.4", queuesDelete)
	register("queues.add_task", "2.4", queuesAddTask)
	register("queues.get_next_task", "1.0", queuesGetNextTask)
	register("queues.remove_task", "2.4", queuesRemoveTask)
	register("queues.clear_queue", "1.0", queuesClearQueue)
	register("queues.move_task_forward", "2.4", queuesMove(func(pos, n, _ int) int { return pos - n }))
	register("queues.move_task_backward", "2.4", queuesMove(func(pos, n, _ int) int { return pos + n }))
	register("queues.move_task_to_front", "2.4", queuesMove(func(_, _, _ int) int { return 0 }))
	register("queues.move_task_to_back", "2.4", queuesMove(func(_, _, l int) int { return l - 1 }))
	register("queues.peek_task", "2.15", queuesPeekTask)
	register("queues.get_num_entries", "2.15", queuesGetNumEntries)
}

func (q *Queue) clone() Queue {
	c := *q
	c.Tags = append([]string(nil), q.Tags...)
	c.SystemTags = append([]string(nil), q.SystemTags...)
	c.Entries = append([]QueueEntry(nil), q.Entries...)
	c.Metadata = copyMap(q.Metadata)
	return c
}

func (q *Queue) indexOf(task string) int {
	for i, e := range q.Entries {
		if e.Task == task {
			return i
		}
	}
	return -1
}

// doc is to_proper_dict(): the stored fields with id.
func (q *Queue) doc() map[string]any {
	entries := make([]any, len(q.Entries))
	for i, e := range q.Entries {
		entries[i] = map[string]any{"task": e.Task, "added": e.Added}
	}
	d := map[string]any{
		"id": q.ID, "name": q.Name, "company": q.Company, "created": q.Created,
		"tags": strListAny(sortedCopy(q.Tags)), "system_tags": strListAny(sortedCopy(q.SystemTags)),
		"entries": entries, "last_update": q.LastUpdate,
	}
	if q.DisplayName != "" {
		d["display_name"] = q.DisplayName
	}
	if q.Metadata != nil {
		d["metadata"] = copyMap(q.Metadata)
	}
	return d
}

// conformQueue applies the version rule: metadata is [] up to 2.16 (§1.6).
func (c *call) conformQueue(d map[string]any) map[string]any {
	if _, ok := d["metadata"]; ok && !(version{2, 16}).less(c.ver) {
		d["metadata"] = []any{}
	}
	return d
}

func (s *Server) queueByID(company, id string) *Queue {
	for _, q := range s.queues {
		if q.ID == id && q.Company == company {
			return q
		}
	}
	return nil
}

func (s *Server) queueByName(company, name string) *Queue {
	for _, q := range s.queues {
		if q.Name == name && q.Company == company {
			return q
		}
	}
	return nil
}

func validateTags(tags ...[]string) *APIError {
	for _, l := range tags {
		for _, t := range l {
			if strings.HasPrefix(t, "__$") {
				return newErr(400, 16, msgFieldsValue, "", kv{"tag", t})
			}
		}
	}
	return nil
}

func (s *Server) createQueue(company, name, display string, tags, sys []string, meta map[string]any, now time.Time) (*Queue, *APIError) {
	name = strings.TrimSpace(name)
	if len([]rune(name)) < 3 {
		return nil, newErr(400, 800, msgDataValidation, "", kv{"name", "String value is too short"})
	}
	if s.queueByName(company, name) != nil {
		return nil, newErr(400, 801, msgExpectedUnique, "", kv{"name", name}, kv{"company", company})
	}
	if e := validateTags(tags, sys); e != nil {
		return nil, e
	}
	now = dbTime(now)
	q := &Queue{ID: newID(), Name: name, DisplayName: display, Company: company, Created: now, LastUpdate: now,
		Tags: append([]string{}, tags...), SystemTags: append([]string{}, sys...), Metadata: meta}
	s.queues = append(s.queues, q)
	return q, nil
}

// addEntry appends at the tail; 706 if already there (§5).
func (s *Server) addEntry(q *Queue, task string, now time.Time) *APIError {
	if q.indexOf(task) >= 0 {
		return errTaskAlreadyQueued(task)
	}
	q.Entries = append(q.Entries, QueueEntry{Task: task, Added: dbTime(now)})
	q.LastUpdate = dbTime(now)
	return nil
}

func (q *Queue) removeAll(task string, now time.Time) int {
	n := 0
	kept := q.Entries[:0:0]
	for _, e := range q.Entries {
		if e.Task == task {
			n++
			continue
		}
		kept = append(kept, e)
	}
	if n > 0 {
		q.Entries = kept
		q.LastUpdate = dbTime(now)
	}
	return n
}

// removeTaskFromAllQueues drops every entry of task, except in queue exclude.
func (s *Server) removeTaskFromAllQueues(company, task, exclude string, now time.Time) int {
	n := 0
	for _, q := range s.queues {
		if q.Company == company && q.ID != exclude {
			n += q.removeAll(task, now)
		}
	}
	return n
}

// revertRemovedTasks forces tasks whose execution.queue is queueID back to
// enqueue_status or created (queue_bll._update_task_status_on_removal_from_queue).
func (s *Server) revertRemovedTasks(company, user string, taskIDs []string, queueID, reason string, now time.Time) []string {
	out := []string{}
	for _, id := range taskIDs {
		t := s.tasks[id]
		if t == nil || asString(t["company"]) != company {
			continue
		}
		if q, _ := nestedGet(t, "execution", "queue"); q != queueID {
			continue
		}
		out = append(out, id)
		next := asString(t["enqueue_status"])
		if next == "" {
			next = StatusCreated
		}
		_, _ = s.changeStatus(statusChange{task: t, newStatus: next, reason: reason, force: true, user: user,
			extra: map[string]any{"enqueue_status": nil, "execution.queue": unsetField}}, now)
	}
	return out
}

// ---- endpoints ----

func queuesGetAll(c *call) (map[string]any, error) {
	p := c.params()
	maxEntries, _ := p.integer("max_task_entries", 0)
	searchHidden := p.boolean("search_hidden", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	if e := validateTags(scalarOrListStrings(c.data["tags"]), scalarOrListStrings(c.data["system_tags"])); e != nil {
		return nil, e
	}
	_, hasID := c.lookupArg("id")
	if l, ok := c.data["id"].([]any); ok && len(l) == 0 {
		hasID = false
	}
	_, hasName := c.lookupArg("name")
	if s, ok := c.data["name"].(string); ok && s == "" {
		hasName = false
	}
	showHidden := searchHidden || hasID || hasName
	var docs []map[string]any
	for _, q := range c.s.queues {
		if q.Company != c.ident.Company {
			continue
		}
		if !showHidden && hasAny(q.SystemTags, hiddenQueueTags) {
			continue
		}
		d := q.doc()
		if maxEntries > 0 {
			if l := d["entries"].([]any); int64(len(l)) > maxEntries {
				d["entries"] = l[:maxEntries]
			}
		}
		docs = append(docs, d)
	}
	docs, err := c.filterDocs(docs, getAllSpec{listFields: []string{"id", "tags", "system_tags"}, patternFields: []string{"name"}})
	if err != nil {
		return nil, err
	}
	only, err := c.onlyFields()
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(docs))
	for _, d := range docs {
		out = append(out, c.conformQueue(project(d, only, nil)))
	}
	return map[string]any{"queues": out}, nil
}

func hasAny(l, wanted []string) bool {
	for _, w := range wanted {
		if containsStr(l, w) {
			return true
		}
	}
	return false
}

func queuesGetByID(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("queue", true)
	maxEntries, _ := p.integer("max_task_entries", 0)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, id)
	if q == nil {
		return nil, errInvalidQueueID(id, c.ident.Company)
	}
	d := q.doc()
	if l := d["entries"].([]any); maxEntries > 0 && int64(len(l)) > maxEntries {
		d["entries"] = l[:maxEntries]
	}
	return map[string]any{"queue": c.conformQueue(d)}, nil
}

func (s *Server) defaultQueue(company string) (*Queue, *APIError) {
	var found []*Queue
	for _, q := range s.queues {
		if q.Company == company && containsStr(q.SystemTags, "default") {
			found = append(found, q)
		}
	}
	switch len(found) {
	case 0:
		return nil, errNoDefaultQueue()
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, q := range found {
		ids[i] = q.ID
	}
	return nil, newErr(400, 708, msgMultipleDefaultQ, "", kv{"queues", ids})
}

func queuesGetDefault(c *call) (map[string]any, error) {
	q, e := c.s.defaultQueue(c.ident.Company)
	if e != nil {
		return nil, e
	}
	return map[string]any{"id": q.ID, "name": q.Name}, nil
}

func queuesCreate(c *call) (map[string]any, error) {
	p := c.params()
	name := p.str("name", true)
	display := p.optStr("display_name", "")
	tags, _ := p.strList("tags", false)
	sys, _ := p.strList("system_tags", false)
	meta := p.object("metadata", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	q, e := c.s.createQueue(c.ident.Company, name, display, tags, sys, copyMap(meta), c.now)
	if e != nil {
		return nil, e
	}
	return map[string]any{"id": q.ID}, nil
}

func queuesUpdate(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("queue", true)
	name, hasName := p.str("name", false), p.has("name")
	display, hasDisplay := p.str("display_name", false), p.has("display_name")
	tags, hasTags := p.strList("tags", false)
	sys, hasSys := p.strList("system_tags", false)
	meta := p.object("metadata", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, id)
	if q == nil {
		return nil, errInvalidQueueID(id, c.ident.Company)
	}
	if e := validateTags(tags, sys); e != nil {
		return nil, e
	}
	fields := map[string]any{}
	if hasName {
		name = strings.TrimSpace(name)
		if len([]rune(name)) < 3 {
			return nil, newErr(400, 800, msgDataValidation, "", kv{"name", "String value is too short"})
		}
		if o := c.s.queueByName(c.ident.Company, name); o != nil && o != q {
			return nil, newErr(400, 801, msgExpectedUnique, "", kv{"name", name}, kv{"company", c.ident.Company})
		}
		q.Name, fields["name"] = name, name
	}
	if hasDisplay {
		q.DisplayName, fields["display_name"] = display, display
	}
	if hasTags {
		q.Tags, fields["tags"] = tags, strListAny(sortedCopy(tags))
	}
	if hasSys {
		q.SystemTags, fields["system_tags"] = sys, strListAny(sortedCopy(sys))
	}
	if meta != nil {
		q.Metadata, fields["metadata"] = copyMap(meta), copyMap(meta)
	}
	updated := 0
	if len(fields) > 0 {
		updated = 1
		q.LastUpdate = dbTime(c.now)
		fields["last_update"] = q.LastUpdate
	}
	return map[string]any{"updated": updated, "fields": c.conformQueue(fields)}, nil
}

func queuesDelete(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("queue", true)
	force := p.boolean("force", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, id)
	if q == nil {
		return nil, errInvalidQueueID(id, c.ident.Company)
	}
	if len(q.Entries) > 0 {
		if !force {
			return nil, newErr(400, 702, msgQueueNotEmpty, "use force=true to delete", kv{"id", id})
		}
		c.s.revertRemovedTasks(c.ident.Company, c.ident.User, entryTasks(q), id, fmt.Sprintf("Queue %s was deleted", id), c.now)
	}
	for i, x := range c.s.queues {
		if x == q {
			c.s.queues = append(c.s.queues[:i], c.s.queues[i+1:]...)
			break
		}
	}
	return map[string]any{"deleted": 1}, nil
}

func entryTasks(q *Queue) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range q.Entries {
		if !seen[e.Task] {
			seen[e.Task] = true
			out = append(out, e.Task)
		}
	}
	return out
}

func queuesAddTask(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	tid := p.str("task", true)
	updateExec := p.boolean("update_execution_queue", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil {
		return nil, errInvalidQueueID(qid, c.ident.Company)
	}
	// the task's existence is not checked, and its status is not changed (§3.1)
	if e := c.s.addEntry(q, tid, c.now); e != nil {
		return nil, e
	}
	if t := c.s.tasks[tid]; t != nil && updateExec {
		nestedSet(t, qid, "execution", "queue")
	}
	return map[string]any{"added": 1}, nil
}

func queuesGetNextTask(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	withInfo := p.boolean("get_task_info", false)
	only := p.optStr("task", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil {
		return nil, errInvalidQueueID(qid, c.ident.Company)
	}
	if len(q.Entries) == 0 || (only != "" && q.Entries[0].Task != only) {
		return nil, nil // data: {}
	}
	e := q.Entries[0]
	q.Entries = q.Entries[1:]
	q.LastUpdate = dbTime(c.now)
	data := map[string]any{"entry": map[string]any{"task": e.Task, "added": e.Added}}
	if t := c.s.tasks[e.Task]; t != nil {
		// race fix: a stopped task goes back to queued, with a raw update (§3.1)
		if t["status"] == StatusStopped {
			t["status"] = StatusQueued
		}
		if withInfo {
			data["task_info"] = map[string]any{"company": t["company"], "user": t["user"]}
		}
	}
	return data, nil
}

func queuesRemoveTask(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	tid := p.str("task", true)
	updateStatus := p.boolean("update_task_status", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil || q.indexOf(tid) < 0 {
		return nil, errNotInQueue(tid, qid, c.ident.Company)
	}
	n := q.removeAll(tid, c.now)
	if updateStatus {
		c.s.revertRemovedTasks(c.ident.Company, c.ident.User, []string{tid}, qid,
			"Task was removed from the queue "+qid, c.now)
	}
	return map[string]any{"removed": n}, nil
}

func queuesClearQueue(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil {
		return nil, newErr(400, 701, msgInvalidQueueID, "", kv{"queue", qid})
	}
	removed := []string{}
	if len(q.Entries) > 0 {
		removed = c.s.revertRemovedTasks(c.ident.Company, c.ident.User, entryTasks(q), qid, fmt.Sprintf("Queue %s was cleared", qid), c.now)
		q.Entries = nil
		q.LastUpdate = dbTime(c.now)
	}
	return map[string]any{"removed_tasks": strListAny(removed)}, nil
}

func queuesMove(newPos func(pos, count, length int) int) handlerFunc {
	return func(c *call) (map[string]any, error) {
		p := c.params()
		qid := p.str("queue", true)
		tid := p.str("task", true)
		count, _ := p.integer("count", 1)
		if err := p.done(); err != nil {
			return nil, err
		}
		q := c.s.queueByID(c.ident.Company, qid)
		if q == nil || q.indexOf(tid) < 0 {
			return nil, errNotInQueue(tid, qid, c.ident.Company)
		}
		pos := q.indexOf(tid)
		np := newPos(pos, int(count), len(q.Entries))
		if np < 0 {
			np = 0
		}
		if np >= len(q.Entries) {
			np = len(q.Entries) - 1
		}
		if np != pos {
			e := q.Entries[pos]
			rest := append(append([]QueueEntry{}, q.Entries[:pos]...), q.Entries[pos+1:]...)
			q.Entries = append(append(append([]QueueEntry{}, rest[:np]...), e), rest[np:]...)
			q.LastUpdate = dbTime(c.now)
		}
		return map[string]any{"position": np}, nil
	}
}

func queuesPeekTask(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil {
		return nil, errInvalidQueueID(qid, c.ident.Company)
	}
	var t any
	if len(q.Entries) > 0 {
		t = q.Entries[0].Task
	}
	return map[string]any{"task": t}, nil
}

func queuesGetNumEntries(c *call) (map[string]any, error) {
	p := c.params()
	qid := p.str("queue", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	q := c.s.queueByID(c.ident.Company, qid)
	if q == nil {
		return nil, errInvalidQueueID(qid, c.ident.Company)
	}
	return map[string]any{"num": len(q.Entries)}, nil
}

// ---- test hooks ----

// AddQueue creates a queue in the default company and returns its id. It
// panics on an invalid or duplicate name (a broken test setup).
func (s *Server) AddQueue(name string, systemTags ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, e := s.createQueue(DefaultCompanyID, name, "", nil, systemTags, nil, s.now())
	if e != nil {
		panic("fakeserver: AddQueue: " + e.Msg)
	}
	return q.ID
}

// Queue returns a snapshot of the queue with this id or name (default company).
func (s *Server) Queue(nameOrID string) (Queue, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.lookupQueue(nameOrID); q != nil {
		return q.clone(), true
	}
	return Queue{}, false
}

func (s *Server) lookupQueue(nameOrID string) *Queue {
	for _, q := range s.queues {
		if q.ID == nameOrID {
			return q
		}
	}
	return s.queueByName(DefaultCompanyID, nameOrID)
}

// Queues returns snapshots of every queue, ordered by name.
func (s *Server) Queues() []Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Queue, 0, len(s.queues))
	for _, q := range s.queues {
		out = append(out, q.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DefaultQueueID is the id of the seeded "default" queue ("" if deleted).
func (s *Server) DefaultQueueID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.queueByName(DefaultCompanyID, DefaultQueueName); q != nil {
		return q.ID
	}
	return ""
}

// DeleteQueue removes a queue outright, leaving its tasks untouched.
func (s *Server) DeleteQueue(nameOrID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.lookupQueue(nameOrID)
	for i, x := range s.queues {
		if x == q {
			s.queues = append(s.queues[:i], s.queues[i+1:]...)
			return true
		}
	}
	return false
}

// Enqueue puts a task at the tail of a queue (name or id) like tasks.enqueue
// with force: status queued, enqueue_status, execution.queue.
func (s *Server) Enqueue(taskID, queue string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[taskID]
	if t == nil {
		return fmt.Errorf("fakeserver: no task %q", taskID)
	}
	q := s.lookupQueue(queue)
	if q == nil {
		return fmt.Errorf("fakeserver: no queue %q", queue)
	}
	now := s.now()
	if e := s.addEntry(q, taskID, now); e != nil {
		return e
	}
	prev := asString(t["status"])
	if prev == StatusQueued && asString(t["enqueue_status"]) != "" {
		prev = asString(t["enqueue_status"])
	}
	_, _ = s.changeStatus(statusChange{task: t, newStatus: StatusQueued, force: true, user: TestsUserID,
		extra: map[string]any{"enqueue_status": prev, "execution.queue": q.ID}}, now)
	s.removeTaskFromAllQueues(asString(t["company"]), taskID, q.ID, now)
	return nil
}
