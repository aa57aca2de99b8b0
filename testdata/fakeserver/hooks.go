package fakeserver

import (
	"fmt"
	"time"
)

// Script is the task's script section (§4.1).
type Script struct {
	Repository   string
	Branch       string
	VersionNum   string
	Tag          string
	EntryPoint   string
	WorkingDir   string
	Diff         string
	Binary       string         // default "python"
	Requirements map[string]any // e.g. {"pip": "..."}
}

// TaskSpec seeds a task with AddTask. Zero fields take defaults.
type TaskSpec struct {
	ID            string // generated when empty
	Name          string // default "test task"
	Type          string // default "training"
	Status        string // default "created"; see Queue
	StatusReason  string
	StatusMessage string
	User          string // default __tests__
	Company       string // default the seeded company
	Public        bool   // company "" (readable by all, not writable)
	Project       string // project id (see AddProject)
	Parent        string
	Comment       string
	Script        *Script
	Container     map[string]string // image, arguments, setup_shell_script
	Runtime       map[string]any
	Hyperparams   map[string]map[string]string // section -> name -> value
	Configuration map[string]string            // name -> value
	Execution     map[string]any               // merged into execution
	Tags          []string
	SystemTags    []string
	LastWorker    string
	// Queue (name or id) enqueues the task at the tail, status queued.
	Queue string
	// Extra raw document fields, set last.
	Extra map[string]any
}

// Task is a snapshot of a task document.
type Task struct {
	ID            string
	Name          string
	Type          string
	Status        string
	StatusReason  string
	StatusMessage string
	User          string
	Company       string
	Project       string
	Parent        string
	Queue         string // execution.queue
	EnqueueStatus string
	LastWorker    string
	Tags          []string
	SystemTags    []string
	Script        *Script
	Container     map[string]any
	Runtime       map[string]any
	Created       time.Time
	Started       time.Time
	Completed     time.Time
	StatusChanged time.Time
	LastUpdate    time.Time
	// Doc is a deep copy of the whole stored document (times as time.Time).
	Doc map[string]any
}

func (sc *Script) doc() map[string]any {
	d := map[string]any{"repository": sc.Repository, "entry_point": sc.EntryPoint, "binary": sc.Binary}
	if sc.Binary == "" {
		d["binary"] = "python"
	}
	for k, v := range map[string]string{"branch": sc.Branch, "version_num": sc.VersionNum, "tag": sc.Tag,
		"working_dir": sc.WorkingDir, "diff": sc.Diff} {
		if v != "" {
			d[k] = v
		}
	}
	if sc.Requirements != nil {
		d["requirements"] = deepCopy(sc.Requirements)
	}
	return d
}

// AddTask stores a task built from spec and returns its id. It panics on a
// broken spec (unknown queue), since that is a test bug.
func (s *Server) AddTask(spec TaskSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := spec.ID
	if id == "" {
		id = newID()
	}
	company := spec.Company
	if company == "" {
		company = DefaultCompanyID
	}
	if spec.Public {
		company = ""
	}
	user := spec.User
	if user == "" {
		user = TestsUserID
	}
	now := s.now()
	t := newTaskDoc(id, company, user, now)
	t["name"] = orDefault(spec.Name, "test task")
	t["type"] = orDefault(spec.Type, "training")
	if spec.Status != "" {
		t["status"] = spec.Status
	}
	if spec.StatusReason != "" || spec.StatusMessage != "" || spec.Status != "" {
		t["status_reason"], t["status_message"], t["status_changed"] = spec.StatusReason, spec.StatusMessage, dbTime(now)
	}
	for k, v := range map[string]string{"project": spec.Project, "parent": spec.Parent, "comment": spec.Comment,
		"last_worker": spec.LastWorker} {
		if v != "" {
			t[k] = v
		}
	}
	if spec.Script != nil {
		t["script"] = spec.Script.doc()
	}
	if spec.Container != nil {
		ct := map[string]any{}
		for k, v := range spec.Container {
			ct[k] = v
		}
		t["container"] = ct
	}
	if spec.Runtime != nil {
		t["runtime"] = copyMap(spec.Runtime)
	}
	if spec.Hyperparams != nil {
		hp := map[string]any{}
		for sec, items := range spec.Hyperparams {
			sm := map[string]any{}
			for name, val := range items {
				sm[name] = map[string]any{"section": sec, "name": name, "value": val}
			}
			hp[sec] = sm
		}
		t["hyperparams"] = hp
	}
	if spec.Configuration != nil {
		cfg := map[string]any{}
		for name, val := range spec.Configuration {
			cfg[name] = map[string]any{"name": name, "value": val}
		}
		t["configuration"] = cfg
	}
	if spec.Execution != nil {
		t["execution"] = copyMap(spec.Execution)
	}
	if spec.Tags != nil {
		t["tags"] = strListAny(spec.Tags)
	}
	if spec.SystemTags != nil {
		t["system_tags"] = strListAny(spec.SystemTags)
	}
	for k, v := range spec.Extra {
		t[k] = deepCopy(v)
	}
	s.insertTask(t)
	if spec.Queue != "" {
		q := s.lookupQueue(spec.Queue)
		if q == nil {
			panic(fmt.Sprintf("fakeserver: AddTask: no queue %q", spec.Queue))
		}
		if e := s.addEntry(q, id, now); e != nil {
			panic("fakeserver: AddTask: " + e.Msg)
		}
		prev := asString(t["status"])
		_, _ = s.changeStatus(statusChange{task: t, newStatus: StatusQueued, force: true, user: user,
			reason: spec.StatusReason, message: spec.StatusMessage,
			extra: map[string]any{"enqueue_status": prev, "execution.queue": q.ID}}, now)
	}
	return id
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Task returns a snapshot of a task.
func (s *Server) Task(id string) (Task, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t == nil {
		return Task{}, false
	}
	return snapshotTask(t), true
}

// Tasks returns snapshots of every task in insertion order.
func (s *Server) Tasks() []Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Task, 0, len(s.taskOrder))
	for _, id := range s.taskOrder {
		out = append(out, snapshotTask(s.tasks[id]))
	}
	return out
}

func snapshotTask(t map[string]any) Task {
	doc := copyMap(t)
	tm := func(k string) time.Time { v, _ := t[k].(time.Time); return v }
	q, _ := nestedGet(t, "execution", "queue")
	out := Task{
		ID: asString(t["id"]), Name: asString(t["name"]), Type: asString(t["type"]), Status: asString(t["status"]),
		StatusReason: asString(t["status_reason"]), StatusMessage: asString(t["status_message"]),
		User: asString(t["user"]), Company: asString(t["company"]), Project: asString(t["project"]),
		Parent: asString(t["parent"]), Queue: asString(q), EnqueueStatus: asString(t["enqueue_status"]),
		LastWorker: asString(t["last_worker"]), Tags: docStrings(t, "tags"), SystemTags: docStrings(t, "system_tags"),
		Container: copyMap(asMap(t["container"])), Runtime: copyMap(asMap(t["runtime"])),
		Created: tm("created"), Started: tm("started"), Completed: tm("completed"),
		StatusChanged: tm("status_changed"), LastUpdate: tm("last_update"), Doc: doc,
	}
	if sc := asMap(t["script"]); sc != nil {
		out.Script = &Script{Repository: asString(sc["repository"]), Branch: asString(sc["branch"]),
			VersionNum: asString(sc["version_num"]), Tag: asString(sc["tag"]), EntryPoint: asString(sc["entry_point"]),
			WorkingDir: asString(sc["working_dir"]), Diff: asString(sc["diff"]), Binary: asString(sc["binary"]),
			Requirements: copyMap(asMap(sc["requirements"]))}
	}
	return out
}

// UpdateTask runs fn on the stored document under the server lock (raw
// edit, no checks). fn must not call back into the Server.
func (s *Server) UpdateTask(id string, fn func(doc map[string]any)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t == nil {
		return fmt.Errorf("fakeserver: no task %q", id)
	}
	fn(t)
	return nil
}

// SetTaskStatus forces a status with message, like the web UI would.
func (s *Server) SetTaskStatus(id, status, message string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t == nil {
		return fmt.Errorf("fakeserver: no task %q", id)
	}
	_, e := s.changeStatus(statusChange{task: t, newStatus: status, message: message, force: true, user: TestsUserID}, s.now())
	if e != nil {
		return e
	}
	return nil
}

// DeleteTask removes the document only, leaving queue entries dangling (§5).
func (s *Server) DeleteTask(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteTask(id)
}
