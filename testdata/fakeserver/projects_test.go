package fakeserver

import (
	"testing"
	"time"
)

func TestProjects(t *testing.T) {
	s, c := startServer(t)
	id := asString(c.ok("/projects.create", map[string]any{"name": "Team/Alpha", "description": "d"})["id"])
	c.expectErr("/projects.create", map[string]any{"name": "Team/Alpha"}, 400, 801, "")
	other := s.AddProject("Beta")
	d := c.ok("/projects.get_all", map[string]any{"name": "^Team/", "only_fields": []string{"id", "name"}})
	if l := d["projects"].([]any); len(l) != 1 || dig(l, 0, "id") != id || len(l[0].(map[string]any)) != 2 {
		t.Errorf("get_all: %v", d)
	}
	if p := c.ok("/projects.get_by_id", map[string]any{"project": other})["project"].(map[string]any); p["name"] != "Beta" {
		t.Errorf("get_by_id: %v", p)
	}
	c.expectErr("/projects.get_by_id", map[string]any{"project": "x"}, 400, 401, "Invalid project id: id=x")
	// a task in the project shows it in the worker entry
	tid := asString(c.ok("/tasks.create", map[string]any{"name": "in proj", "type": "testing", "project": id})["id"])
	c.ok("/workers.status_report", map[string]any{"worker": "w", "timestamp": 1, "task": tid})
	if w, _ := s.WorkerByID("w"); w.Project == nil || w.Project.Name != "Team/Alpha" {
		t.Errorf("worker project: %+v", w.Project)
	}
}

func TestClockAndSystemRole(t *testing.T) {
	s, c := startServer(t)
	base := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	s.SetClock(func() time.Time { return base })
	if !s.Now().Equal(base) {
		t.Fatalf("SetClock: %v", s.Now())
	}
	s.Advance(time.Minute)
	if !s.Now().Equal(base.Add(time.Minute)) {
		t.Fatalf("Advance with SetClock: %v", s.Now())
	}
	s.SetClock(nil)
	if d := time.Since(s.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("wall clock: %v", s.Now())
	}
	// system role: token without exp; may use get_token_for_user
	s.AddCompany("c2", "Other")
	s.AddUser(User{ID: "sys", Role: RoleSystem})
	s.AddUser(User{ID: "alice", Company: "c2"})
	s.AddCredentials("sys", "SYSKEY", "syssecret")
	sys := withHeader("Authorization", basicAuth("SYSKEY", "syssecret"))
	tok := asString(c.ok("/auth.login", nil, sys)["token"])
	if _, ok := decodeClaims(t, tok)["exp"]; ok {
		t.Error("system token has exp")
	}
	tok = asString(c.ok("/auth.get_token_for_user", map[string]any{"user": "alice"}, sys)["token"])
	if id := decodeClaims(t, tok)["identity"].(map[string]any); id["user"] != "alice" || id["company_name"] != "Other" {
		t.Errorf("token for user: %v", id)
	}
	// alice's company sees none of the seeded queues
	if d := c.ok("/queues.get_all", nil, withHeader("Authorization", "Bearer "+tok)); len(d["queues"].([]any)) != 0 {
		t.Errorf("company scoping: %v", d)
	}
}
