package fakeserver

// params reads typed request fields, like the server's jsonmodels request
// classes: unknown keys are ignored, null counts as absent, a missing
// required field or a wrong type gives 400/12 (§1.6, §1.7). After the first
// error every getter is a no-op; check p.err once at the end.
type params struct {
	data map[string]any
	err  *APIError
}

func (c *call) params() *params { return &params{data: c.data} }

func (p *params) get(k string) (any, bool) {
	v, ok := p.data[k]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

func (p *params) has(k string) bool {
	_, ok := p.get(k)
	return ok
}

func (p *params) fail(e *APIError) {
	if p.err == nil {
		p.err = e
	}
}

func (p *params) str(k string, required bool) string {
	if p.err != nil {
		return ""
	}
	v, ok := p.get(k)
	if !ok {
		if required {
			p.fail(errRequired(k))
		}
		return ""
	}
	s, ok := v.(string)
	if !ok {
		p.fail(errWrongType(k, "str", v))
	}
	return s
}

func (p *params) optStr(k, def string) string {
	if !p.has(k) {
		return def
	}
	return p.str(k, false)
}

func (p *params) boolean(k string, def bool) bool {
	if p.err != nil {
		return def
	}
	v, ok := p.get(k)
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		p.fail(errWrongType(k, "bool", v))
		return def
	}
	return b
}

// integer returns def when absent; present reports whether the key had a value.
func (p *params) integer(k string, def int64) (val int64, present bool) {
	if p.err != nil {
		return def, false
	}
	v, ok := p.get(k)
	if !ok {
		return def, false
	}
	i, ok := asInt(v)
	if !ok {
		p.fail(errWrongType(k, "int", v))
		return def, false
	}
	return i, true
}

// strList accepts only a JSON list of strings (typed model fields).
func (p *params) strList(k string, required bool) ([]string, bool) {
	if p.err != nil {
		return nil, false
	}
	v, ok := p.get(k)
	if !ok {
		if required {
			p.fail(errRequired(k))
		}
		return nil, false
	}
	l, isList := v.([]any)
	if !isList {
		p.fail(errWrongType(k, "list", v))
		return nil, false
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, ok := e.(string)
		if !ok {
			p.fail(errWrongType(k, "str", e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (p *params) object(k string, required bool) map[string]any {
	if p.err != nil {
		return nil
	}
	v, ok := p.get(k)
	if !ok {
		if required {
			p.fail(errRequired(k))
		}
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		p.fail(errWrongType(k, "dict", v))
	}
	return m
}

func (p *params) list(k string, required bool) []any {
	if p.err != nil {
		return nil
	}
	v, ok := p.get(k)
	if !ok {
		if required {
			p.fail(errRequired(k))
		}
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		p.fail(errWrongType(k, "list", v))
	}
	return l
}

// done returns p.err as an error (nil-safe for the interface).
func (p *params) done() error {
	if p.err == nil {
		return nil
	}
	return p.err
}
