package main

// The task as the server stores it, and the status calls the agent makes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// taskDoc holds the task fields execute reads (agent-execute.md §1).
type taskDoc struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	StatusMessage string `json:"status_message"`
	Project       string `json:"project"`
	Script        struct {
		Repository   string         `json:"repository"`
		Branch       string         `json:"branch"`
		VersionNum   string         `json:"version_num"`
		Tag          string         `json:"tag"`
		EntryPoint   string         `json:"entry_point"`
		WorkingDir   string         `json:"working_dir"`
		Diff         string         `json:"diff"`
		Binary       string         `json:"binary"`
		Requirements map[string]any `json:"requirements"`
	} `json:"script"`
	Container struct {
		Image            string `json:"image"`
		Arguments        string `json:"arguments"`
		SetupShellScript string `json:"setup_shell_script"`
	} `json:"container"`
	Execution struct {
		Queue     string `json:"queue"`
		DockerCmd string `json:"docker_cmd"`
	} `json:"execution"`
}

// requirementLines returns script.requirements[key] as lines: the server
// stores either one string or a list of strings.
func (t *taskDoc) requirementLines(key string) ([]string, bool) {
	v, ok := t.Script.Requirements[key]
	if !ok || v == nil {
		return nil, false
	}
	var lines []string
	switch x := v.(type) {
	case string:
		lines = strings.Split(x, "\n")
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				lines = append(lines, strings.Split(s, "\n")...)
			}
		}
	default:
		return nil, false
	}
	var out []string
	for _, l := range lines {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out, true
}

// idPattern is what the reference takes for an id rather than a name.
var idPattern = lazyRegexp(`^[-a-f0-9]{30,}$`)

// notFoundError: no task or queue has that name.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

// resolveName turns a task or queue name into its id (service is "tasks"
// or "queues"); ids pass through unchecked, as in the reference.
func resolveName(ctx context.Context, c *apiClient, service, nameOrID string) (string, error) {
	if idPattern().MatchString(nameOrID) {
		return nameOrID, nil
	}
	var r struct {
		Tasks  []struct{ ID, Name string } `json:"tasks"`
		Queues []struct{ ID, Name string } `json:"queues"`
	}
	req := map[string]any{"name": regexp.QuoteMeta(nameOrID), "only_fields": []string{"name", "id"}}
	if err := c.call(ctx, service+".get_all", "2.5", req, &r); err != nil {
		return "", err
	}
	found := r.Tasks
	if service == "queues" {
		found = r.Queues
	}
	kind := strings.TrimSuffix(service, "s")
	var ids []string
	for _, f := range found {
		if strings.EqualFold(f.Name, nameOrID) {
			ids = append(ids, f.ID)
		}
	}
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		hint := "check the name, or pass the id"
		if service == "queues" {
			if near := nearQueueNames(ctx, c, nameOrID); len(near) > 0 {
				hint = "did you mean " + strings.Join(near, " or ") + "?"
			}
		}
		return "", &notFoundError{fmt.Sprintf("could not find %s with name/id %q (%s)", kind, nameOrID, hint)}
	}
	return "", fmt.Errorf("found multiple %ss with name %q: %s (pass the id instead)", kind, nameOrID, strings.Join(ids, ", "))
}

// getTask fetches a task with tasks.get_by_id at v2.5, as the reference.
func getTask(ctx context.Context, c *apiClient, id string) (*taskDoc, error) {
	var r struct {
		Task json.RawMessage `json:"task"`
	}
	if err := c.call(ctx, "tasks.get_by_id", "2.5", map[string]any{"task": id}, &r); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.is(400, 101) {
			return nil, fmt.Errorf("could not find task id=%s on %s (check --id)", id, c.host)
		}
		return nil, err
	}
	var t taskDoc
	if err := json.Unmarshal(r.Task, &t); err != nil {
		return nil, fmt.Errorf("tasks.get_by_id: cannot read the task: %v", err)
	}
	return &t, nil
}

// setStatus sends tasks.<action> (started, stopped, completed, failed).
func setStatus(ctx context.Context, c *apiClient, action, taskID, reason, message string, force bool) error {
	req := map[string]any{"task": taskID, "status_reason": reason, "status_message": message}
	if force {
		req["force"] = true
	}
	return c.call(ctx, "tasks."+action, "2.5", req, nil)
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
