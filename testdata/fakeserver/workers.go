package fakeserver

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// DefaultWorkerTimeout is the registration TTL when none is given (§6).
const DefaultWorkerTimeout = 600

// IDName is an {id, name} pair.
type IDName struct {
	ID   string
	Name string
}

// Worker is a worker entry of the TTL store (§3.2, §6).
type Worker struct {
	Key              string // worker_{company}_{user}_{id}
	ID               string
	User             IDName
	Company          IDName
	IP               string
	RegisterTime     time.Time
	RegisterTimeout  int
	LastActivityTime time.Time
	LastReportTime   time.Time // zero until a successful status_report
	Task             *IDName
	Project          *IDName
	Queue            string
	Queues           []string
	Tags             []string
	SystemTags       []string
	MachineStats     map[string]any // last non-null machine_stats
	Expires          time.Time      // TTL deadline
	Reports          int            // status_report calls seen for this entry
}

func init() {
	register("workers.get_all", "2.4", workersGetAll)
	register("workers.get_count", "1.0", workersGetCount)
	register("workers.register", "2.4", workersRegister)
	register("workers.unregister", "2.4", workersUnregister)
	register("workers.status_report", "2.4", workersStatusReport)
}

func workerKey(company, user, id string) string {
	return fmt.Sprintf("worker_%s_%s_%s", company, user, id)
}

func (w *Worker) clone() Worker {
	c := *w
	if w.Task != nil {
		t := *w.Task
		c.Task = &t
	}
	if w.Project != nil {
		p := *w.Project
		c.Project = &p
	}
	c.Queues = append([]string(nil), w.Queues...)
	c.Tags = append([]string(nil), w.Tags...)
	c.SystemTags = append([]string(nil), w.SystemTags...)
	c.MachineStats = copyMap(w.MachineStats)
	return c
}

// liveWorkers drops expired entries and returns the rest, sorted by key.
func (s *Server) liveWorkers(now time.Time) []*Worker {
	var out []*Worker
	for k, w := range s.workers {
		if !now.Before(w.Expires) {
			delete(s.workers, k)
			continue
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *Server) registerWorker(id Identity, worker, ip string, queues []string, timeout int, tags, sys []string, now time.Time) *Worker {
	w := &Worker{
		Key: workerKey(id.Company, id.User, worker), ID: worker,
		User:    IDName{id.User, s.userName(id.User)},
		Company: IDName{id.Company, s.companies[id.Company]},
		IP:      ip, RegisterTime: now, RegisterTimeout: timeout, LastActivityTime: now,
		Queues: append([]string{}, queues...), Tags: append([]string{}, tags...), SystemTags: append([]string{}, sys...),
	}
	s.saveWorker(w, now)
	return w
}

func (s *Server) userName(id string) string {
	if u, ok := s.users[id]; ok {
		return u.Name
	}
	return ""
}

// saveWorker (re)stores the entry and resets its TTL.
func (s *Server) saveWorker(w *Worker, now time.Time) {
	w.Expires = now.Add(time.Duration(w.RegisterTimeout) * time.Second)
	s.workers[w.Key] = w
}

func workersRegister(c *call) (map[string]any, error) {
	p := c.params()
	worker := p.str("worker", true)
	timeout, _ := p.integer("timeout", DefaultWorkerTimeout)
	queues, _ := p.strList("queues", false)
	tags, _ := p.strList("tags", false)
	sys, _ := p.strList("system_tags", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	if timeout == 0 {
		timeout = DefaultWorkerTimeout
	}
	if timeout < 0 {
		return nil, newErr(400, 1002, msgWorkerRegFailed, "invalid timeout", kv{"timeout", timeout}, kv{"worker", worker})
	}
	var missing []string
	for _, q := range queues {
		if c.s.queueByID(c.ident.Company, q) == nil && !containsStr(missing, q) {
			missing = append(missing, q)
		}
	}
	if len(missing) > 0 {
		return nil, errInvalidQueueIDs(missing)
	}
	c.s.liveWorkers(c.now)
	c.s.registerWorker(c.ident, worker, c.ip, queues, int(timeout), tags, sys, c.now)
	return nil, nil
}

func workersUnregister(c *call) (map[string]any, error) {
	p := c.params()
	worker := p.str("worker", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	// missing is fine: auto_unregister (§3.2); another user's entry is untouched
	delete(c.s.workers, workerKey(c.ident.Company, c.ident.User, worker))
	return nil, nil
}

func workersStatusReport(c *call) (map[string]any, error) {
	p := c.params()
	worker := p.str("worker", true)
	p.integer("timestamp", 0)
	if !p.has("timestamp") {
		p.fail(errRequired("timestamp"))
	}
	task := p.optStr("task", "")
	queue := p.optStr("queue", "")
	queues, _ := p.strList("queues", false)
	tags, _ := p.strList("tags", false)
	sys, _ := p.strList("system_tags", false)
	stats := p.object("machine_stats", false)
	if err := p.done(); err != nil {
		return nil, err
	}
	c.s.liveWorkers(c.now)
	w := c.s.workers[workerKey(c.ident.Company, c.ident.User, worker)]
	if w == nil { // auto_register: 600 s, no queues (§3.2)
		w = c.s.registerWorker(c.ident, worker, "", nil, DefaultWorkerTimeout, nil, nil, c.now)
	}
	defer c.s.saveWorker(w, c.now) // saved (and TTL reset) even on error
	w.Reports++
	w.IP = c.ip
	// omitted lists parse as [], so a report without tags clears them
	w.Tags, w.SystemTags = append([]string{}, tags...), append([]string{}, sys...)
	if stats != nil {
		w.MachineStats = copyMap(stats)
	}
	w.LastActivityTime = c.now
	w.Queue = queue
	if len(queues) > 0 {
		w.Queues = queues
	}
	if task == "" {
		w.Task, w.Project = nil, nil
	} else {
		t := c.s.tasks[task]
		if t == nil || asString(t["company"]) != c.ident.Company {
			return nil, errInvalidTaskID(task, c.ident.Company)
		}
		now := dbTime(c.now)
		t["last_worker"], t["last_worker_report"] = worker, now
		t["last_update"], t["last_change"], t["last_changed_by"] = now, now, c.ident.User
		w.Task = &IDName{task, asString(t["name"])}
		w.Project = nil
		if pr := c.s.projects[asString(t["project"])]; pr != nil {
			w.Project = &IDName{asString(pr["id"]), asString(pr["name"])}
		}
	}
	w.LastReportTime = c.now
	return nil, nil
}

// filterWorkers applies company, tag (with "-" exclusion), pattern and
// last_seen filters like WorkerBLL.get_all.
func (c *call) filterWorkers(defaultLastSeen int64) ([]*Worker, error) {
	p := c.params()
	lastSeen, _ := p.integer("last_seen", defaultLastSeen)
	tags, _ := p.strList("tags", false)
	sys, _ := p.strList("system_tags", false)
	pattern := p.optStr("worker_pattern", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	if v, ok := c.data["last_seen"]; ok && v == nil {
		lastSeen = 0
	}
	var re = globToRegex("*")
	if pattern != "" {
		re = globToRegex(pattern)
	}
	var out []*Worker
	for _, w := range c.s.liveWorkers(c.now) {
		if w.Company.ID != c.ident.Company || !re.MatchString(w.ID) {
			continue
		}
		if !matchWorkerTags(w.Tags, tags) || !matchWorkerTags(w.SystemTags, sys) {
			continue
		}
		if lastSeen != 0 {
			ls := lastSeen
			if ls < 1 {
				ls = 1
			}
			if w.LastActivityTime.Before(c.now.Add(-time.Duration(ls) * time.Second)) {
				continue
			}
		}
		out = append(out, w)
	}
	return out, nil
}

// matchWorkerTags: any included tag (OR) and none of the "-" excluded ones.
func matchWorkerTags(have, filter []string) bool {
	var include []string
	for _, f := range filter {
		if strings.HasPrefix(f, "-") {
			if containsStr(have, f[1:]) {
				return false
			}
			continue
		}
		include = append(include, f)
	}
	if len(include) == 0 {
		return true
	}
	return hasAny(have, include)
}

func (s *Server) queueInfo(company, qid string) map[string]any {
	e := map[string]any{"id": qid}
	q := s.queueByID(company, qid)
	if q == nil {
		return e
	}
	e["name"] = q.Name
	if q.DisplayName != "" {
		e["display_name"] = q.DisplayName
	}
	e["num_tasks"] = len(q.Entries)
	if len(q.Entries) > 0 {
		next := map[string]any{"id": q.Entries[0].Task}
		if t := s.tasks[q.Entries[0].Task]; t != nil {
			next["name"] = t["name"]
		}
		e["next_task"] = next
	}
	return e
}

// workerDoc builds the get_all entry; dates keep microseconds (§3.2).
func (s *Server) workerDoc(w *Worker) map[string]any {
	d := map[string]any{
		"key": w.Key, "id": w.ID,
		"user":    map[string]any{"id": w.User.ID, "name": w.User.Name},
		"company": map[string]any{"id": w.Company.ID, "name": w.Company.Name},
		"ip":      w.IP, "register_time": isoTime(w.RegisterTime), "register_timeout": w.RegisterTimeout,
		"last_activity_time": isoTime(w.LastActivityTime),
		"tags":               strListAny(w.Tags), "system_tags": strListAny(w.SystemTags),
	}
	if !w.LastReportTime.IsZero() {
		d["last_report_time"] = isoTime(w.LastReportTime)
	}
	if w.Task != nil {
		td := map[string]any{"id": w.Task.ID}
		if w.Task.Name != "" {
			td["name"] = w.Task.Name
		}
		if t := s.tasks[w.Task.ID]; t != nil {
			ad, _ := asInt(t["active_duration"])
			td["running_time"] = ad * 1000
			li, _ := asInt(t["last_iteration"])
			td["last_iteration"] = li
		}
		d["task"] = td
	}
	if w.Project != nil {
		d["project"] = map[string]any{"id": w.Project.ID, "name": w.Project.Name}
	}
	if w.Queue != "" && containsStr(w.Queues, w.Queue) {
		d["queue"] = s.queueInfo(w.Company.ID, w.Queue)
	}
	qs := make([]any, 0, len(w.Queues))
	for _, q := range w.Queues {
		qs = append(qs, s.queueInfo(w.Company.ID, q))
	}
	d["queues"] = qs
	return d
}

func workersGetAll(c *call) (map[string]any, error) {
	ws, err := c.filterWorkers(3600)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(ws))
	for _, w := range ws {
		out = append(out, c.s.workerDoc(w))
	}
	return map[string]any{"workers": out}, nil
}

func workersGetCount(c *call) (map[string]any, error) {
	ws, err := c.filterWorkers(0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"count": len(ws)}, nil
}

// ---- test hooks ----

// Workers returns snapshots of the live (unexpired) workers, sorted by key.
func (s *Server) Workers() []Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Worker
	for _, w := range s.liveWorkers(s.now()) {
		out = append(out, w.clone())
	}
	return out
}

// WorkerByID returns the live worker with this id (any user), if any.
func (s *Server) WorkerByID(id string) (Worker, bool) {
	for _, w := range s.Workers() {
		if w.ID == id {
			return w, true
		}
	}
	return Worker{}, false
}
