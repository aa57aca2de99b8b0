package fakeserver

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Generic get_all rules of §3.5: list filters, pattern fields, ordering,
// paging and projection over documents kept as maps.

const maxPageSize = 500

type getAllSpec struct {
	listFields    []string // dotted paths filtered with list semantics
	patternFields []string // unanchored regex search
}

// filterDocs applies filters, order and paging; docs are not copied.
func (c *call) filterDocs(docs []map[string]any, spec getAllSpec) ([]map[string]any, error) {
	out := docs[:0:0]
	type listFilter struct {
		path  []string
		items []any
	}
	var lfs []listFilter
	for _, f := range spec.listFields {
		v, ok := c.lookupArg(f)
		if !ok {
			continue
		}
		items, isList := v.([]any)
		if !isList {
			items = []any{v}
		}
		if len(items) == 0 {
			continue // id: [] means no filter
		}
		lfs = append(lfs, listFilter{strings.Split(f, "."), items})
	}
	type patFilter struct {
		path []string
		re   *regexp.Regexp
	}
	var pfs []patFilter
	for _, f := range spec.patternFields {
		v, ok := c.lookupArg(f)
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, errValidation("", kv{"field", f})
		}
		re, err := compilePyRegex(s)
		if err != nil {
			return nil, newErr(400, 21, msgInvalidRegex, err.Error())
		}
		pfs = append(pfs, patFilter{strings.Split(f, "."), re})
	}
	var search *regexp.Regexp
	if st, ok := c.data["search_text"].(string); ok && st != "" {
		search = regexp.MustCompile("(?i)" + regexp.QuoteMeta(st))
	}
	// equality on runtime.* keys (§3.3 tasks.get_all)
	eq := map[string]any{}
	for k, v := range c.data {
		if strings.HasPrefix(k, "runtime.") {
			eq[k] = v
		}
	}
docs:
	for _, d := range docs {
		for _, lf := range lfs {
			if !matchList(leafStrings(d, lf.path), lf.items) {
				continue docs
			}
		}
		for _, pf := range pfs {
			v, _ := nestedGet(d, pf.path...)
			s, ok := v.(string)
			if !ok || !pf.re.MatchString(s) {
				continue docs
			}
		}
		if search != nil {
			hit := false
			for _, k := range []string{"id", "name", "comment"} {
				if search.MatchString(asString(d[k])) {
					hit = true
				}
			}
			if !hit {
				continue
			}
		}
		for k, want := range eq {
			got, _ := nestedGet(d, strings.Split(k, ".")...)
			if fmt.Sprint(render(got)) != fmt.Sprint(want) {
				continue docs
			}
		}
		out = append(out, d)
	}
	if err := c.orderDocs(out); err != nil {
		return nil, err
	}
	return c.pageDocs(out)
}

// lookupArg finds a request arg by dotted name, as a flat key or nested.
func (c *call) lookupArg(name string) (any, bool) {
	if v, ok := c.data[name]; ok {
		return v, v != nil
	}
	if strings.Contains(name, ".") {
		v, ok := nestedGet(c.data, strings.Split(name, ".")...)
		return v, ok && v != nil
	}
	return nil, false
}

// leafStrings collects the values at path, expanding lists.
func leafStrings(d any, path []string) []string {
	var out []string
	var walk func(v any, p []string)
	walk = func(v any, p []string) {
		switch x := v.(type) {
		case nil:
			return
		case []any:
			for _, e := range x {
				walk(e, p)
			}
			return
		case []string:
			if len(p) == 0 {
				out = append(out, x...)
			}
			return
		case map[string]any:
			if len(p) == 0 {
				return
			}
			walk(x[p[0]], p[1:])
			return
		case string:
			if len(p) == 0 && x != "" {
				out = append(out, x)
			}
			return
		}
		if len(p) == 0 {
			out = append(out, fmt.Sprint(render(v)))
		}
	}
	walk(d, path)
	return out
}

// matchList implements list-field semantics: values ORed, "-x" excludes,
// null matches missing/empty, and the __$all/__$any/__$not operators.
func matchList(vals []string, items []any) bool {
	var include, all, exclude []string
	includeNull := false
	mode, negate := "any", false
	for _, it := range items {
		if it == nil {
			includeNull = true
			continue
		}
		s := fmt.Sprint(it)
		switch s {
		case "__$all", "__$and":
			mode = "all"
			continue
		case "__$any", "__$or":
			mode = "any"
			continue
		case "__$not":
			negate = true
			continue
		}
		switch {
		case negate:
			exclude = append(exclude, s)
			negate = false
		case strings.HasPrefix(s, "-"):
			exclude = append(exclude, s[1:])
		case mode == "all":
			all = append(all, s)
		default:
			include = append(include, s)
		}
	}
	for _, x := range exclude {
		if containsStr(vals, x) {
			return false
		}
	}
	for _, x := range all {
		if !containsStr(vals, x) {
			return false
		}
	}
	if len(include) == 0 && !includeNull {
		return true
	}
	if includeNull && len(vals) == 0 {
		return true
	}
	for _, x := range include {
		if containsStr(vals, x) {
			return true
		}
	}
	return false
}

func (c *call) orderDocs(docs []map[string]any) error {
	var fields []string
	switch v := c.data["order_by"].(type) {
	case nil:
		return nil // natural (insertion) order
	case string:
		fields = []string{v}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				fields = append(fields, s)
			}
		}
	default:
		return errWrongType("order_by", "list", v)
	}
	if len(fields) == 0 {
		return nil
	}
	fields = append(fields, "id") // tie-breaker
	sort.SliceStable(docs, func(i, j int) bool {
		for n, f := range fields {
			desc := strings.HasPrefix(f, "-")
			path := strings.Split(strings.TrimPrefix(f, "-"), ".")
			a, _ := nestedGet(docs[i], path...)
			b, _ := nestedGet(docs[j], path...)
			if n == 0 && (a == nil) != (b == nil) {
				return b == nil // nulls last in the first order field
			}
			cmp := compareValues(a, b)
			if cmp == 0 {
				continue
			}
			if desc {
				return cmp > 0
			}
			return cmp < 0
		}
		return false
	})
	return nil
}

func compareValues(a, b any) int {
	if a == nil || b == nil {
		switch {
		case a == nil && b == nil:
			return 0
		case a == nil:
			return -1
		default:
			return 1
		}
	}
	if ta, ok := a.(time.Time); ok {
		if tb, ok := b.(time.Time); ok {
			return ta.Compare(tb)
		}
	}
	if fa, ok := asFloat(a); ok {
		if fb, ok := asFloat(b); ok {
			switch {
			case fa < fb:
				return -1
			case fa > fb:
				return 1
			}
			return 0
		}
	}
	sa, sb := fmt.Sprint(render(a)), fmt.Sprint(render(b))
	return strings.Compare(sa, sb)
}

func (c *call) pageDocs(docs []map[string]any) ([]map[string]any, error) {
	p := c.params()
	page, hasPage := p.integer("page", 0)
	size, hasSize := p.integer("page_size", maxPageSize)
	if err := p.done(); err != nil {
		return nil, err
	}
	if v, ok := c.data["page_size"]; ok && v == nil && hasPage {
		return nil, newErr(400, 11, msgMissingRequired, "", kv{"fields", []string{"page_size"}})
	}
	if hasPage && page < 0 {
		return nil, errValidation("page must be >=0", kv{"field", "page"})
	}
	if hasSize && size < 1 {
		return nil, errValidation("page_size must be >0", kv{"field", "page_size"})
	}
	if size > maxPageSize {
		size = maxPageSize
	}
	start := page * size
	if start >= int64(len(docs)) {
		return docs[:0], nil
	}
	end := start + size
	if end > int64(len(docs)) {
		end = int64(len(docs))
	}
	return docs[start:end], nil
}

// onlyFields returns only_fields (or its alias projection).
func (c *call) onlyFields() ([]string, error) {
	for _, k := range []string{"only_fields", "projection"} {
		v, ok := c.data[k]
		if !ok || v == nil {
			continue
		}
		l, ok := toStringList(v)
		if !ok {
			return nil, errWrongType(k, "list", v)
		}
		return l, nil
	}
	return nil, nil
}

// project copies doc keeping only the requested dotted paths; "-path"
// excludes. hidden fields are dropped unless explicitly included.
func project(doc map[string]any, fields []string, hidden []string) map[string]any {
	var incl, excl [][]string
	for _, f := range fields {
		if f == "" {
			continue
		}
		if strings.HasPrefix(f, "-") {
			excl = append(excl, strings.Split(f[1:], "."))
		} else {
			incl = append(incl, strings.Split(f, "."))
		}
	}
	var out map[string]any
	if len(incl) == 0 {
		out = copyMap(doc)
		for _, h := range hidden {
			delete(out, h)
		}
	} else {
		out = map[string]any{}
		for _, p := range incl {
			copyPath(doc, out, p)
		}
	}
	for _, p := range excl {
		nestedDelete(out, p...)
	}
	return out
}

func copyPath(src, dst map[string]any, path []string) {
	v, ok := src[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		dst[path[0]] = deepCopy(v)
		return
	}
	switch x := v.(type) {
	case map[string]any:
		sub, ok := dst[path[0]].(map[string]any)
		if !ok {
			sub = map[string]any{}
			dst[path[0]] = sub
		}
		copyPath(x, sub, path[1:])
	case []any:
		l, ok := dst[path[0]].([]any)
		if !ok || len(l) != len(x) {
			l = make([]any, len(x))
			for i := range l {
				l[i] = map[string]any{}
			}
			dst[path[0]] = l
		}
		for i, e := range x {
			if em, ok := e.(map[string]any); ok {
				if dm, ok := l[i].(map[string]any); ok {
					copyPath(em, dm, path[1:])
				}
			}
		}
	}
}

// scalarOrListStrings accepts a string or a list of strings.
func scalarOrListStrings(v any) []string {
	l, _ := toStringList(v)
	return l
}
