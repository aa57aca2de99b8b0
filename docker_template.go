package main

// Templating of docker arguments, as the reference's CustomTemplate does
// for extra_docker_arguments and the task's container arguments:
// ${CLEARML_TASK.name}, ${CLEARML_TASK.hyperparams.General.lr.value:0.1},
// ${CLEARML_QUEUE_NAME}, $CLEARML_WORKER_ID... are replaced inside one
// argument, which stays one argument (docker's argv has no shell: a value
// cannot add options). The variable lookup is the one of the SLURM
// templates (CLEARML_TASK.<field path> in the task document, the glue's
// CLEARML_* names); see docker-design.md.

import (
	"cmp"
	"context"
	"strings"
	"time"
)

// dockerTemplateLookup resolves a variable name ("CLEARML_TASK.name",
// "CLEARML_QUEUE_NAME"); false: no such value. A list is joined with ",".
type dockerTemplateLookup func(name string) (string, bool)

// dockerTemplateUntrusted are the roots a task's own arguments may not
// read: the agent's configuration (its credentials), the user's vaults and
// identity. Only the operator's extra_docker_arguments may.
var dockerTemplateUntrusted = []string{"CONFIG", "USER_VAULTS", "PROVIDERS_INFO", "USER"}

// dockerTemplateNote says what could not be replaced, for the task log.
type dockerTemplateNote struct {
	Arg  int    // index of the argument
	Var  string // the variable as written
	Why  string
	Text string // the task log line
}

// renderDockerArgs replaces the template variables in each argument. An
// argument is templated only when it holds "$" and "CLEARML_", as in the
// reference; there "$$" is a "$". A variable without a value and without a
// default is left as written (the reference does the same) and noted.
// fromTask: the arguments come from the task, which may not read the
// agent's configuration or the user's vaults. templated[i] tells which
// arguments changed: the docker policy must check those (a value can hold
// a path).
func renderDockerArgs(args []string, lookup dockerTemplateLookup, fromTask bool) (out []string, templated []bool, notes []dockerTemplateNote) {
	out = make([]string, len(args))
	templated = make([]bool, len(args))
	for i, a := range args {
		out[i] = a
		if !strings.Contains(a, "$") || !strings.Contains(a, "CLEARML_") {
			continue
		}
		var b strings.Builder
		for j := 0; j < len(a); {
			n, text, note := dockerTemplateAt(a[j:], lookup, fromTask)
			if note != "" {
				notes = append(notes, dockerTemplateNote{Arg: i, Var: a[j : j+n], Why: note,
					Text: "clearml-agent: docker argument " + a + ": " + a[j:j+n] + " " + note})
			}
			b.WriteString(text)
			j += n
		}
		out[i] = b.String()
		templated[i] = out[i] != a
	}
	return out, templated, notes
}

// dockerTemplateAt reads at the start of s: a variable, "$$", or one byte.
// It returns how many bytes it read, what they become, and a note when a
// variable stays as written.
func dockerTemplateAt(s string, lookup dockerTemplateLookup, fromTask bool) (int, string, string) {
	if !strings.HasPrefix(s, "$") || len(s) == 1 {
		return 1, s[:1], ""
	}
	if s[1] == '$' {
		return 2, "$", ""
	}
	var body string
	var n int
	if s[1] == '{' {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return 1, "$", ""
		}
		body, n = s[2:end], end+1
	} else {
		// Unbraced, as Python's string.Template: [_a-zA-Z][_a-zA-Z0-9.|:]*
		n = 1
		for n < len(s) && dockerTemplateIDByte(s[n], n == 1) {
			n++
		}
		body = s[1:n]
	}
	if !strings.HasPrefix(body, "CLEARML_") {
		return n, s[:n], "" // not ours: a shell-like $HOME stays
	}
	name, def, hasDef := strings.Cut(body, ":")
	root, _, _ := strings.Cut(strings.TrimPrefix(name, "CLEARML_"), ".")
	if fromTask {
		for _, u := range dockerTemplateUntrusted {
			if root == u {
				return n, s[:n], "was not replaced: a task's arguments cannot read " + root + " (only agent.extra_docker_arguments can)"
			}
		}
	}
	v, ok := lookup(name)
	if !ok && !hasDef {
		return n, s[:n], "was not replaced: the task has no such value and there is no default (write ${" + name + ":default})"
	}
	if !ok {
		v = def
	}
	// The reference's default filter: newlines are removed.
	return n, strings.NewReplacer("\r", "", "\n", "").Replace(v), ""
}

func dockerTemplateIDByte(c byte, first bool) bool {
	switch {
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return true
	case first:
		return false
	}
	return c >= '0' && c <= '9' || c == '.' || c == '|' || c == ':'
}

// dockerTaskVars are the template variables of one task: CLEARML_TASK.<path>
// (the task's document), CLEARML_QUEUE_ID/NAME, CLEARML_WORKER_ID,
// CLEARML_PROJECT_ID/NAME and, for the operator's arguments only,
// CLEARML_CONFIG.<path>. The server is asked only when an argument holds
// a variable, once per name.
type dockerTaskVars struct {
	api      *apiClient
	cfg      *agentConfig
	task     *taskDoc
	queueID  string
	workerID string
	doc      map[string]any // the task's document; nil until needed
	names    map[string]string
}

// document is the task's whole document (tasks.get_by_id); empty when the
// server cannot say.
func (v *dockerTaskVars) document() map[string]any {
	if v.doc == nil {
		v.doc = map[string]any{}
		if v.api != nil && v.task != nil {
			var r struct {
				Task map[string]any `json:"task"`
			}
			if err := v.api.call(withBudget(context.Background(), 30*time.Second), "tasks.get_by_id", "2.5", map[string]any{"task": v.task.ID}, &r); err == nil && r.Task != nil {
				v.doc = r.Task
			}
		}
	}
	return v.doc
}

// name is the name of a queue or project by id (service "queues", "projects").
func (v *dockerTaskVars) name(service, id string) (string, bool) {
	if id == "" {
		return "", false
	}
	if n, ok := v.names[service+id]; ok {
		return n, n != ""
	}
	var r struct {
		Queue   struct{ Name string } `json:"queue"`
		Project struct{ Name string } `json:"project"`
	}
	n := ""
	if v.api != nil {
		key := strings.TrimSuffix(service, "s")
		if err := v.api.call(withBudget(context.Background(), 30*time.Second), service+".get_by_id", "", map[string]any{key: id}, &r); err == nil {
			n = cmp.Or(r.Queue.Name, r.Project.Name)
		}
	}
	if v.names == nil {
		v.names = map[string]string{}
	}
	v.names[service+id] = n
	return n, n != ""
}

// lookup resolves one variable name; lists are joined with ",".
func (v *dockerTaskVars) lookup(name string) (string, bool) {
	doc := func(path string) (string, bool) {
		x, ok := slurmDig(v.document(), strings.Split(path, "."))
		if !ok {
			return "", false
		}
		s, ok := slurmScalar(x)
		if s.Multi {
			return strings.Join(s.Words, ","), ok
		}
		return s.Text, ok
	}
	queue := v.queueID
	switch name {
	case "CLEARML_WORKER_ID":
		return v.workerID, v.workerID != ""
	case "CLEARML_QUEUE_ID", "CLEARML_QUEUE_NAME":
		if queue == "" {
			queue, _ = doc("execution.queue")
		}
		if name == "CLEARML_QUEUE_ID" {
			return queue, queue != ""
		}
		return v.name("queues", queue)
	case "CLEARML_PROJECT_ID":
		return doc("project")
	case "CLEARML_PROJECT_NAME":
		id, _ := doc("project")
		return v.name("projects", id)
	}
	if p, ok := strings.CutPrefix(name, "CLEARML_TASK."); ok {
		return doc(p)
	}
	if p, ok := strings.CutPrefix(name, "CLEARML_CONFIG."); ok && v.cfg != nil {
		switch x, ok := v.cfg.lookup(p); x.(type) {
		case []any:
			return strings.Join(v.cfg.strList(p), ","), true
		case *hoconObject, nil:
			return "", false
		default:
			return scalarText(x), ok
		}
	}
	return "", false
}
