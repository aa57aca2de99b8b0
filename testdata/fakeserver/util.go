package fakeserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// newID returns 32 lowercase hex chars, like uuid4().hex (§2.6).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return hex.EncodeToString(b[:])
}

// isoTime formats like Python's isoformat() of an aware UTC datetime:
// microseconds when non-zero, always "+00:00" (§1.4).
func isoTime(t time.Time) string {
	t = t.UTC()
	s := t.Format("2006-01-02T15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		s += fmt.Sprintf(".%06d", us)
	}
	return s + "+00:00"
}

// dbTime truncates to milliseconds, as Mongo stores datetimes.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond).Round(0) }

// render deep-copies a document into plain JSON values (times become strings).
func render(v any) any {
	switch x := v.(type) {
	case time.Time:
		return isoTime(x)
	case *time.Time:
		if x == nil {
			return nil
		}
		return isoTime(*x)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = render(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = render(e)
		}
		return l
	case []string:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = e
		}
		return l
	case []map[string]any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = render(e)
		}
		return l
	default:
		return v
	}
}

// deepCopy copies maps and lists, keeping time.Time values.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	case []string:
		return append([]string(nil), x...)
	default:
		return v
	}
}

func copyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return deepCopy(m).(map[string]any)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// asInt converts a decoded JSON number to int64.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
		if f, err := x.Float64(); err == nil && f == math.Trunc(f) {
			return int64(f), true
		}
	case int:
		return int64(x), true
	case int64:
		return x, true
	case float64:
		if x == math.Trunc(x) {
			return int64(x), true
		}
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func asString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// toStringList accepts []any of strings, []string or a single string.
func toStringList(v any) ([]string, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{x}, true
	case []string:
		return append([]string(nil), x...), true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func strListAny(l []string) []any {
	out := make([]any, len(l))
	for i, s := range l {
		out[i] = s
	}
	return out
}

func containsStr(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

func removeStr(l []string, s string) []string {
	out := l[:0:0]
	for _, e := range l {
		if e != s {
			out = append(out, e)
		}
	}
	return out
}

func sortedCopy(l []string) []string {
	out := append([]string{}, l...)
	sort.Strings(out)
	return out
}

// nestedGet walks a dotted path through maps.
func nestedGet(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = mm[p]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

// nestedSet creates intermediate maps as needed.
func nestedSet(m map[string]any, v any, path ...string) {
	cur := m
	for _, p := range path[:len(path)-1] {
		next, ok := cur[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[p] = next
		}
		cur = next
	}
	cur[path[len(path)-1]] = v
}

func nestedDelete(m map[string]any, path ...string) {
	cur := m
	for _, p := range path[:len(path)-1] {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return
		}
		cur = next
	}
	delete(cur, path[len(path)-1])
}

// parseVersion parses "2.13" into comparable parts; "" means the max version.
type version struct{ major, minor int }

func parseVersion(s string) (version, bool) {
	maj, min, _ := strings.Cut(s, ".")
	a, err := strconv.Atoi(maj)
	if err != nil {
		return version{}, false
	}
	b := 0
	if min != "" {
		if b, err = strconv.Atoi(min); err != nil {
			return version{}, false
		}
	}
	return version{a, b}, true
}

func mustVersion(s string) version {
	v, ok := parseVersion(s)
	if !ok {
		panic("bad version " + s)
	}
	return v
}

func (v version) less(o version) bool {
	if v.major != o.major {
		return v.major < o.major
	}
	return v.minor < o.minor
}

// compilePyRegex compiles a Python-style pattern with RE2, tolerating
// re.escape() output such as "\ " or "\-" (the agent escapes queue names).
func compilePyRegex(p string) (*regexp.Regexp, error) {
	if re, err := regexp.Compile(p); err == nil {
		return re, nil
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+1 < len(p) {
			c := p[i+1]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				b.WriteString(regexp.QuoteMeta(string(c)))
				i++
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return regexp.Compile(b.String())
}

// globToRegex turns a worker pattern glob (*, ?) into an anchored regex.
func globToRegex(g string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range g {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}
