package fakeserver

import (
	"strings"
	"time"
)

// Minimal projects service: enough for task project references.

func init() {
	register("projects.get_all", "1.0", projectsGetAll)
	register("projects.get_by_id", "1.0", projectsGetByID)
	register("projects.create", "1.0", projectsCreate)
}

func (s *Server) createProject(company, user, name string, now time.Time) string {
	for _, id := range s.projOrder {
		if p := s.projects[id]; asString(p["company"]) == company && p["name"] == name {
			return id
		}
	}
	now = dbTime(now)
	id := newID()
	s.projects[id] = map[string]any{"id": id, "name": name, "basename": basename(name), "company": company,
		"user": user, "created": now, "last_update": now, "tags": []any{}, "system_tags": []any{}}
	s.projOrder = append(s.projOrder, id)
	return id
}

func basename(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

func projectsGetAll(c *call) (map[string]any, error) {
	var docs []map[string]any
	for _, id := range c.s.projOrder {
		p := c.s.projects[id]
		if cc := asString(p["company"]); cc == c.ident.Company || cc == "" {
			docs = append(docs, p)
		}
	}
	docs, err := c.filterDocs(docs, getAllSpec{listFields: []string{"id", "tags", "system_tags", "user"},
		patternFields: []string{"name", "basename"}})
	if err != nil {
		return nil, err
	}
	only, err := c.onlyFields()
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(docs))
	for _, d := range docs {
		out = append(out, project(d, only, nil))
	}
	return map[string]any{"projects": out}, nil
}

func projectsGetByID(c *call) (map[string]any, error) {
	p := c.params()
	id := p.str("project", true)
	if err := p.done(); err != nil {
		return nil, err
	}
	d := c.s.projects[id]
	if d == nil || (asString(d["company"]) != c.ident.Company && asString(d["company"]) != "") {
		return nil, newErr(400, 401, msgInvalidProjectID, "", kv{"id", id})
	}
	return map[string]any{"project": copyMap(d)}, nil
}

func projectsCreate(c *call) (map[string]any, error) {
	p := c.params()
	name := strings.TrimSpace(p.str("name", true))
	desc := p.optStr("description", "")
	tags, _ := p.strList("tags", false)
	sys, _ := p.strList("system_tags", false)
	dest := p.optStr("default_output_destination", "")
	if err := p.done(); err != nil {
		return nil, err
	}
	if len([]rune(name)) < 3 {
		return nil, newErr(400, 800, msgDataValidation, "", kv{"name", "String value is too short"})
	}
	for _, id := range c.s.projOrder {
		if d := c.s.projects[id]; asString(d["company"]) == c.ident.Company && d["name"] == name {
			return nil, newErr(400, 801, msgExpectedUnique, "", kv{"name", name}, kv{"company", c.ident.Company})
		}
	}
	if e := validateTags(tags, sys); e != nil {
		return nil, e
	}
	id := c.s.createProject(c.ident.Company, c.ident.User, name, c.now)
	d := c.s.projects[id]
	if desc != "" {
		d["description"] = desc
	}
	if dest != "" {
		d["default_output_destination"] = dest
	}
	d["tags"], d["system_tags"] = strListAny(tags), strListAny(sys)
	return map[string]any{"id": id}, nil
}

// AddProject creates a project in the default company and returns its id
// (an existing one with the same name is reused).
func (s *Server) AddProject(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createProject(DefaultCompanyID, TestsUserID, name, s.now())
}
