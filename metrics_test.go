package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// A strict parser of the text exposition format 0.0.4, for checking what
// the writer produces. Stricter than the format where our writer has no
// reason to differ: no blank lines, no comments other than HELP and TYPE,
// single spaces, no trailing comma, TYPE given for every family, and a
// family's lines together.

type expoSample struct {
	name   string
	labels map[string]string
	value  float64
}

type expoFamily struct {
	name, help, typ string
	hasHelp         bool
	samples         []expoSample
}

type exposition struct {
	families map[string]*expoFamily
	order    []string
}

var (
	expoNameRE  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	expoLabelRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*`)
	expoValueRE = regexp.MustCompile(`^(?:[+-]?Inf|NaN|[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)$`)
)

func parseExposition(text string) (*exposition, error) {
	e := &exposition{families: map[string]*expoFamily{}}
	if text == "" {
		return e, nil
	}
	if !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("output does not end with a newline")
	}
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("output is not valid UTF-8")
	}
	var cur *expoFamily
	seen := map[string]bool{} // series keys
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		var err error
		switch {
		case strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE "):
			cur, err = e.parseMeta(line, cur)
		case strings.HasPrefix(line, "#"):
			err = fmt.Errorf("comment other than HELP/TYPE")
		default:
			err = e.parseSampleLine(line, cur, seen)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %v", i+1, line, err)
		}
	}
	for _, name := range e.order {
		if err := e.families[name].check(); err != nil {
			return nil, fmt.Errorf("family %s: %v", name, err)
		}
	}
	return e, nil
}

func (e *exposition) parseMeta(line string, cur *expoFamily) (*expoFamily, error) {
	kind, rest := line[2:6], line[7:]
	name := expoNameRE.FindString(rest)
	if name == "" {
		return nil, fmt.Errorf("bad metric name")
	}
	rest = rest[len(name):]
	f := e.families[name]
	if f == nil {
		f = &expoFamily{name: name}
		e.families[name] = f
		e.order = append(e.order, name)
	} else if f != cur {
		return nil, fmt.Errorf("%s of %s apart from the family's other lines", kind, name)
	}
	if len(f.samples) > 0 {
		return nil, fmt.Errorf("%s after samples", kind)
	}
	if kind == "HELP" {
		if f.hasHelp {
			return nil, fmt.Errorf("second HELP")
		}
		f.hasHelp = true
		if rest == "" {
			return f, nil
		}
		if rest[0] != ' ' {
			return nil, fmt.Errorf("no space after the name")
		}
		help, err := unescapeExpo(rest[1:], false)
		f.help = help
		return f, err
	}
	if f.typ != "" {
		return nil, fmt.Errorf("second TYPE")
	}
	switch rest {
	case " counter", " gauge", " histogram", " summary", " untyped":
		f.typ = rest[1:]
	default:
		return nil, fmt.Errorf("bad type %q", rest)
	}
	return f, nil
}

// familyOf is the family a sample name belongs to, given the current one.
func familyOf(name string, cur *expoFamily) bool {
	if cur == nil {
		return false
	}
	if name == cur.name {
		return cur.typ != "histogram"
	}
	switch cur.typ {
	case "histogram":
		return name == cur.name+"_bucket" || name == cur.name+"_sum" || name == cur.name+"_count"
	case "summary":
		return name == cur.name+"_sum" || name == cur.name+"_count"
	}
	return false
}

func (e *exposition) parseSampleLine(line string, cur *expoFamily, seen map[string]bool) error {
	name := expoNameRE.FindString(line)
	if name == "" {
		return fmt.Errorf("bad metric name")
	}
	if !familyOf(name, cur) || cur.typ == "" {
		return fmt.Errorf("sample of %s outside its family (no TYPE before it, or lines apart)", name)
	}
	rest := line[len(name):]
	labels := map[string]string{}
	var keys []string
	if strings.HasPrefix(rest, "{") {
		var err error
		if rest, err = parseExpoLabels(rest[1:], labels, &keys); err != nil {
			return err
		}
	}
	fields := strings.Split(rest, " ")
	if len(fields) < 2 || len(fields) > 3 || fields[0] != "" {
		return fmt.Errorf("want one space, the value and an optional timestamp")
	}
	if !expoValueRE.MatchString(fields[1]) {
		return fmt.Errorf("bad value %q", fields[1])
	}
	v, err := strconv.ParseFloat(fields[1], 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return err
	}
	if len(fields) == 3 {
		if _, err := strconv.ParseInt(fields[2], 10, 64); err != nil {
			return fmt.Errorf("bad timestamp %q", fields[2])
		}
	}
	slices.Sort(keys)
	key := name
	for _, k := range keys {
		key += "\xff" + k + "\xfe" + labels[k]
	}
	if seen[key] {
		return fmt.Errorf("duplicate series")
	}
	seen[key] = true
	cur.samples = append(cur.samples, expoSample{name, labels, v})
	return nil
}

// parseExpoLabels parses `a="x",b="y"}` and returns what follows the brace.
func parseExpoLabels(s string, labels map[string]string, keys *[]string) (string, error) {
	for {
		ln := expoLabelRE.FindString(s)
		if ln == "" || strings.HasPrefix(ln, "__") {
			return "", fmt.Errorf("bad label name at %q", s)
		}
		if _, dup := labels[ln]; dup {
			return "", fmt.Errorf("label %s twice", ln)
		}
		s = s[len(ln):]
		if !strings.HasPrefix(s, `="`) {
			return "", fmt.Errorf(`want =" after %s`, ln)
		}
		s = s[2:]
		end := -1
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' {
				i++
			} else if s[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 {
			return "", fmt.Errorf("unterminated value of %s", ln)
		}
		v, err := unescapeExpo(s[:end], true)
		if err != nil {
			return "", err
		}
		labels[ln] = v
		*keys = append(*keys, ln)
		s = s[end+1:]
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		if !strings.HasPrefix(s, ",") || strings.HasPrefix(s, ",}") {
			return "", fmt.Errorf("want , or } after the value of %s", ln)
		}
		s = s[1:]
	}
}

// unescapeExpo undoes label value escaping (\\ \" \n) or HELP escaping
// (\\ \n); any other escape is an error.
func unescapeExpo(s string, quoted bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' && quoted {
			return "", fmt.Errorf("unescaped quote")
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i++; i == len(s) {
			return "", fmt.Errorf("backslash at the end")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !quoted {
				return "", fmt.Errorf(`\" in HELP`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// check verifies a family as a whole: counters not negative; histogram
// buckets increasing in le, cumulative, ending with +Inf equal to _count,
// with one _sum and one _count per label set.
func (f *expoFamily) check() error {
	if f.typ == "" {
		return fmt.Errorf("no TYPE")
	}
	for _, s := range f.samples {
		if f.typ == "counter" && !(s.value >= 0) {
			return fmt.Errorf("counter value %v", s.value)
		}
		if _, le := s.labels["le"]; le != (s.name == f.name+"_bucket") && f.typ == "histogram" {
			return fmt.Errorf("le on %s, or a bucket without le", s.name)
		}
	}
	if f.typ != "histogram" {
		return nil
	}
	type group struct {
		les, counts []float64
		sum, count  int
		countV      float64
	}
	groups := map[string]*group{}
	for _, s := range f.samples {
		g := groups[expoGroupKey(s.labels)]
		if g == nil {
			g = &group{}
			groups[expoGroupKey(s.labels)] = g
		}
		switch s.name {
		case f.name + "_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil || !expoValueRE.MatchString(s.labels["le"]) {
				return fmt.Errorf("bad le %q", s.labels["le"])
			}
			if n := len(g.les); n > 0 && (le <= g.les[n-1] || s.value < g.counts[n-1]) {
				return fmt.Errorf("buckets not increasing or not cumulative at le=%v", le)
			}
			g.les, g.counts = append(g.les, le), append(g.counts, s.value)
		case f.name + "_sum":
			g.sum++
		case f.name + "_count":
			g.count++
			g.countV = s.value
		}
	}
	for k, g := range groups {
		n := len(g.les)
		if n == 0 || !math.IsInf(g.les[n-1], 1) {
			return fmt.Errorf("series %q: no +Inf bucket", k)
		}
		if g.sum != 1 || g.count != 1 || g.counts[n-1] != g.countV {
			return fmt.Errorf("series %q: _sum %d, _count %d, +Inf %v != _count %v", k, g.sum, g.count, g.counts[n-1], g.countV)
		}
	}
	return nil
}

func expoGroupKey(labels map[string]string) string {
	var keys []string
	for k := range labels {
		if k != "le" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

// value finds a sample by name and label pairs ("k", "v", ...), which must
// be all its labels.
func (e *exposition) value(name string, kv ...string) (float64, bool) {
	for _, f := range e.families {
		for _, s := range f.samples {
			if s.name != name || len(s.labels) != len(kv)/2 {
				continue
			}
			match := true
			for i := 0; i+1 < len(kv); i += 2 {
				if v, ok := s.labels[kv[i]]; !ok || v != kv[i+1] {
					match = false
				}
			}
			if match {
				return s.value, true
			}
		}
	}
	return 0, false
}

func writeAndParse(t testing.TB, r *metricRegistry) (string, *exposition) {
	t.Helper()
	var b bytes.Buffer
	if err := r.write(&b); err != nil {
		t.Fatal(err)
	}
	e, err := parseExposition(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return b.String(), e
}

// The parser itself must reject what Prometheus would (or what our writer
// must never produce); a parser that accepts anything proves nothing.
func TestExpositionParserRejects(t *testing.T) {
	good := "# HELP a_total A.\n# TYPE a_total counter\na_total{q=\"x\"} 1\n"
	if _, err := parseExposition(good); err != nil {
		t.Fatalf("good input rejected: %v", err)
	}
	hist := "# HELP h H.\n# TYPE h histogram\n"
	bad := map[string]string{
		"no newline":         strings.TrimSuffix(good, "\n"),
		"blank line":         good + "\n",
		"plain comment":      "# hello\n" + good,
		"sample before TYPE": "a_total 1\n# TYPE a_total counter\n",
		"HELP twice":         "# HELP a A.\n# HELP a A.\n# TYPE a gauge\n",
		"TYPE twice":         "# TYPE a gauge\n# TYPE a gauge\n",
		"TYPE after sample":  "# TYPE a gauge\na 1\n# TYPE a gauge\n",
		"family split":       "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a A.\n",
		"bad type":           "# TYPE a meter\n",
		"bad name":           "# TYPE 1a gauge\n",
		"bad label name":     "# TYPE a gauge\na{1x=\"v\"} 1\n",
		"reserved label":     "# TYPE a gauge\na{__x=\"v\"} 1\n",
		"unquoted":           "# TYPE a gauge\na{x=v} 1\n",
		"bad escape":         "# TYPE a gauge\na{x=\"\\t\"} 1\n",
		"HELP bad escape":    "# HELP a \\\"x\n# TYPE a gauge\n",
		"trailing comma":     "# TYPE a gauge\na{x=\"v\",} 1\n",
		"label twice":        "# TYPE a gauge\na{x=\"v\",x=\"w\"} 1\n",
		"duplicate series":   "# TYPE a gauge\na{x=\"v\",y=\"w\"} 1\na{y=\"w\",x=\"v\"} 2\n",
		"two spaces":         "# TYPE a gauge\na  1\n",
		"bad value":          "# TYPE a gauge\na 0x10\n",
		"inf spelled":        "# TYPE a gauge\na inf\n",
		"negative counter":   "# TYPE a_total counter\na_total -1\n",
		"other family name":  "# TYPE a gauge\nb 1\n",
		"no +Inf":            hist + "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		"not cumulative":     hist + "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"le not increasing":  hist + "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"+Inf != count":      hist + "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
		"no _sum":            hist + "h_bucket{le=\"+Inf\"} 1\nh_count 1\n",
		"le on _count":       hist + "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count{le=\"1\"} 1\n",
		"bare histogram":     hist + "h 1\n",
		"invalid UTF-8":      "# TYPE a gauge\na{x=\"\xff\"} 1\n",
	}
	for name, in := range bad {
		if _, err := parseExposition(in); err == nil {
			t.Errorf("%s: accepted:\n%s", name, in)
		}
	}
}

func TestMetricsWriterFormat(t *testing.T) {
	r := newMetricRegistry()
	c := r.counterVec("x_requests_total", "Requests.\nSecond line with a \\ backslash.", "queue", "result")
	c.with("b", "ok").add(2)
	c.with("a \"quoted\" \\ back\nslash", "ok").inc()
	c.with("a", "fail").add(0.5)
	g := r.gaugeVec("x_value", "Special values.", "k")
	for k, v := range map[string]float64{"pinf": math.Inf(1), "ninf": math.Inf(-1), "nan": math.NaN(), "big": 1e21, "small": 1.5e-7, "neg": -2, "int": 1234567} {
		g.with(k).set(v)
	}
	h := r.histogramVec("x_duration_seconds", "Durations.", []float64{0.5, 1, 2.5}, "queue")
	for _, v := range []float64{0.25, 0.5, 0.75, 3, 100} {
		h.with("q").observe(v)
	}
	h.with("q").observe(math.NaN()) // dropped
	r.counterVec("x_empty_total", "Declared, never incremented.", "queue")
	r.gaugeVec("x_plain", "No labels.").with().set(3)
	want := `# HELP x_duration_seconds Durations.
# TYPE x_duration_seconds histogram
x_duration_seconds_bucket{queue="q",le="0.5"} 2
x_duration_seconds_bucket{queue="q",le="1"} 3
x_duration_seconds_bucket{queue="q",le="2.5"} 3
x_duration_seconds_bucket{queue="q",le="+Inf"} 5
x_duration_seconds_sum{queue="q"} 104.5
x_duration_seconds_count{queue="q"} 5
# HELP x_empty_total Declared, never incremented.
# TYPE x_empty_total counter
# HELP x_plain No labels.
# TYPE x_plain gauge
x_plain 3
# HELP x_requests_total Requests.\nSecond line with a \\ backslash.
# TYPE x_requests_total counter
x_requests_total{queue="a",result="fail"} 0.5
x_requests_total{queue="a \"quoted\" \\ back\nslash",result="ok"} 1
x_requests_total{queue="b",result="ok"} 2
# HELP x_value Special values.
# TYPE x_value gauge
x_value{k="big"} 1e+21
x_value{k="int"} 1.234567e+06
x_value{k="nan"} NaN
x_value{k="neg"} -2
x_value{k="ninf"} -Inf
x_value{k="pinf"} +Inf
x_value{k="small"} 1.5e-07
`
	got, e := writeAndParse(t, r)
	if got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	if v, ok := e.value("x_requests_total", "queue", "a \"quoted\" \\ back\nslash", "result", "ok"); !ok || v != 1 {
		t.Errorf("escaped label read back: %v %v", v, ok)
	}
	if e.families["x_requests_total"].help != "Requests.\nSecond line with a \\ backslash." {
		t.Errorf("help read back: %q", e.families["x_requests_total"].help)
	}
	if again, _ := writeAndParse(t, r); again != got {
		t.Error("two writes of the same state differ")
	}
}

func TestMetricsValueSemantics(t *testing.T) {
	r := newMetricRegistry()
	c := r.counterVec("c_total", "C.").with()
	c.add(-1)
	c.add(math.NaN())
	c.add(3)
	c.add(0.25)
	c.inc()
	if v := c.value(); v != 4.25 {
		t.Errorf("counter = %v, want 4.25 (negative and NaN adds dropped)", v)
	}
	g := r.gaugeVec("g", "G.").with()
	g.inc()
	g.inc()
	g.dec()
	g.add(-0.5)
	if v := g.value(); v != 0.5 {
		t.Errorf("gauge = %v, want 0.5", v)
	}
	h := r.histogramVec("h_seconds", "H.", []float64{1, 10}).with()
	h.observeSince(time.Now().Add(-2 * time.Second))
	if s := math.Float64frombits(h.bits.Load()); s < 2 || s > 9 || h.counts[1].Load() != 1 {
		t.Errorf("observeSince: sum %v, counts %v %v", s, h.counts[0].Load(), h.counts[1].Load())
	}
	big := r.counterVec("big_total", "Past 2^53.").with()
	big.add(1 << 53)
	big.inc()
	out, _ := writeAndParse(t, r)
	if !strings.Contains(out, "big_total 9007199254740993\n") {
		t.Errorf("whole counts must be exact:\n%s", out)
	}
}

func TestMetricsRegistrationPanics(t *testing.T) {
	cases := map[string]func(r *metricRegistry){
		"counter without _total": func(r *metricRegistry) { r.counterVec("c", "C.") },
		"bad name":               func(r *metricRegistry) { r.gaugeVec("1g", "G.") },
		"empty help":             func(r *metricRegistry) { r.gaugeVec("g", " ") },
		"bad label":              func(r *metricRegistry) { r.gaugeVec("g", "G.", "a-b") },
		"reserved label":         func(r *metricRegistry) { r.gaugeVec("g", "G.", "__a") },
		"label twice":            func(r *metricRegistry) { r.gaugeVec("g", "G.", "a", "a") },
		"le on histogram":        func(r *metricRegistry) { r.histogramVec("h", "H.", []float64{1}, "le") },
		"buckets unsorted":       func(r *metricRegistry) { r.histogramVec("h", "H.", []float64{2, 1}) },
		"bucket +Inf":            func(r *metricRegistry) { r.histogramVec("h", "H.", []float64{1, math.Inf(1)}) },
		"name twice":             func(r *metricRegistry) { r.gaugeVec("g", "G."); r.gaugeVec("g", "G.") },
		"histogram suffix clash": func(r *metricRegistry) { r.histogramVec("h", "H.", nil); r.gaugeVec("h_count", "G.") },
		"wrong label count":      func(r *metricRegistry) { r.gaugeVec("g", "G.", "a").with("x", "y") },
	}
	for name, fn := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn(newMetricRegistry())
		}()
	}
}

// Known label sets cost no allocation on the hot path.
func TestMetricsHotPathAllocs(t *testing.T) {
	r := newMetricRegistry()
	c := r.counterVec("c_total", "C.", "queue", "result")
	h := r.histogramVec("h_seconds", "H.", pickupBuckets, "queue")
	g := r.gaugeVec("g", "G.")
	q := strings.Repeat("q", 200) // longer than the stack buffer of the key
	c.with("default", taskCompleted).inc()
	h.with("default").observe(1)
	c.with(q, taskFailed).inc()
	allocs := testing.AllocsPerRun(1000, func() {
		c.with("default", taskCompleted).inc()
		c.with("default", taskCompleted).add(1.5)
		h.with("default").observe(0.7)
		g.with().add(1)
	})
	if allocs != 0 {
		t.Errorf("hot path allocates %v times a run", allocs)
	}
	if a := testing.AllocsPerRun(100, func() { c.with(q, taskFailed).inc() }); a > 1 {
		t.Errorf("long label value: %v allocations", a)
	}
}

// Increments from many goroutines while scrapes run: every scrape is valid
// (histogram +Inf equals _count mid-flight) and the totals are exact.
func TestMetricsConcurrent(t *testing.T) {
	r := newMetricRegistry()
	c := r.counterVec("c_total", "C.", "queue")
	h := r.histogramVec("h_seconds", "H.", []float64{1, 2}, "queue")
	const workers, n = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				q := strconv.Itoa(i % 3)
				c.with(q).inc()
				h.with(q).observe(float64(w))
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for scrapes := 0; ; scrapes++ {
		select {
		case <-done:
			_, e := writeAndParse(t, r)
			var sum, hsum float64
			for q := range 3 {
				v, _ := e.value("c_total", "queue", strconv.Itoa(q))
				sum += v
				hv, _ := e.value("h_seconds_count", "queue", strconv.Itoa(q))
				hsum += hv
			}
			if sum != workers*n || hsum != workers*n {
				t.Errorf("totals %v, %v; want %d", sum, hsum, workers*n)
			}
			return
		default:
			writeAndParse(t, r)
		}
	}
}

// The agent's families: all declared, valid, following the conventions.
func TestAgentMetricFamilies(t *testing.T) {
	m := newAgentMetricSet(newMetricRegistry(), func() bool { return true })
	fillAgentMetrics(m)
	out, e := writeAndParse(t, m.reg)
	want := map[string]string{
		"clearml_agent_build_info":                  "gauge",
		"clearml_agent_tasks_started_total":         "counter",
		"clearml_agent_tasks_total":                 "counter",
		"clearml_agent_task_duration_seconds":       "histogram",
		"clearml_agent_task_pickup_latency_seconds": "histogram",
		"clearml_agent_queue_polls_total":           "counter",
		"clearml_agent_queue_poll_errors_total":     "counter",
		"clearml_agent_api_requests_total":          "counter",
		"clearml_agent_api_retries_total":           "counter",
		"clearml_agent_api_outages_total":           "counter",
		"clearml_agent_api_outage_seconds_total":    "counter",
		"clearml_agent_console_lines_shipped_total": "counter",
		"clearml_agent_console_lines_spooled_total": "counter",
		"clearml_agent_console_spool_bytes":         "gauge",
		"clearml_agent_venv_cache_hits_total":       "counter",
		"clearml_agent_venv_cache_misses_total":     "counter",
		"clearml_agent_venv_build_duration_seconds": "histogram",
		"clearml_agent_gpu_utilization_ratio":       "gauge",
		"clearml_agent_gpu_memory_used_bytes":       "gauge",
		"clearml_agent_gpu_memory_total_bytes":      "gauge",
		"clearml_agent_gpu_temperature_celsius":     "gauge",
		"clearml_agent_ready":                       "gauge",
		"process_resident_memory_bytes":             "gauge",
		"process_cpu_seconds_total":                 "counter",
		"process_start_time_seconds":                "gauge",
	}
	for name, typ := range want {
		f := e.families[name]
		if f == nil || f.typ != typ || f.help == "" || len(f.samples) == 0 {
			t.Errorf("family %s: got %+v, want type %s with help and samples", name, f, typ)
		}
	}
	if len(e.families) != len(want) {
		t.Errorf("%d families, want %d: %v", len(e.families), len(want), e.order)
	}
	for _, f := range e.families {
		for _, s := range f.samples {
			for k := range s.labels {
				if slices.Contains([]string{"task", "task_id", "name", "user", "secret", "token", "password", "key"}, k) {
					t.Errorf("%s has label %q", s.name, k)
				}
			}
		}
		unit := strings.HasSuffix(f.name, "_seconds") || strings.HasSuffix(f.name, "_bytes") || strings.HasSuffix(f.name, "_ratio") ||
			strings.HasSuffix(f.name, "_celsius") || strings.HasSuffix(f.name, "_info") || f.name == "clearml_agent_ready"
		if f.typ != "counter" && !unit {
			t.Errorf("%s: a gauge or histogram should name its unit", f.name)
		}
	}
	checks := []struct {
		name string
		kv   []string
		want float64
	}{
		{"clearml_agent_build_info", []string{"version", agentVersion, "go_version", runtime.Version(), "nvml", strconv.FormatBool(buildNVML)}, 1},
		{"clearml_agent_tasks_total", []string{"queue", "gpu-a100", "result", taskCompleted}, 2},
		{"clearml_agent_task_duration_seconds_count", []string{"queue", "gpu-a100", "result", taskCompleted}, 2},
		{"clearml_agent_gpu_utilization_ratio", []string{"gpu", "0", "uuid", "GPU-0"}, 0.97},
		{"clearml_agent_gpu_memory_used_bytes", []string{"gpu", "1:2", "uuid", "MIG-1"}, 512 << 20},
		{"clearml_agent_gpu_temperature_celsius", []string{"gpu", "0", "uuid", "GPU-0"}, 41},
		{"clearml_agent_api_requests_total", []string{"endpoint", "queues.get_next_task", "class", "error"}, 1},
		{"clearml_agent_api_outages_total", nil, 2},
		{"clearml_agent_ready", nil, 1},
	}
	for _, c := range checks {
		if v, ok := e.value(c.name, c.kv...); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v\n%s", c.name, c.kv, v, ok, c.want, out)
		}
	}
	if _, ok := e.value("clearml_agent_gpu_temperature_celsius", "gpu", "1:2", "uuid", "MIG-1"); ok {
		t.Error("a reading the GPU did not give (HasTemp false) is shown")
	}
	if v, _ := e.value("process_resident_memory_bytes"); v < 1<<20 {
		t.Errorf("RSS %v bytes", v)
	}
	if v, _ := e.value("clearml_agent_api_outage_seconds_total"); v < 5 || v > 60 {
		t.Errorf("outage seconds %v: want the 5 s outage and the current one", v)
	}
}

// fillAgentMetrics gives every family of m at least one series.
func fillAgentMetrics(m *agentMetricSet) {
	m.tasksStarted.with("gpu-a100").add(3)
	m.tasksEnded.with("gpu-a100", taskCompleted).add(2)
	m.tasksEnded.with("gpu-a100", taskFailed).inc()
	m.tasksEnded.with("cpu", taskStopped).inc()
	m.taskDuration.with("gpu-a100", taskCompleted).observe(42)
	m.taskDuration.with("gpu-a100", taskCompleted).observe(4200)
	m.pickupLatency.with("gpu-a100").observe(0.8)
	m.queuePolls.with("gpu-a100").add(10)
	m.queuePollErrs.with("gpu-a100").inc()
	m.apiRequests.with("queues.get_next_task", apiResultClass(200, nil)).add(9)
	m.apiRequests.with("queues.get_next_task", apiResultClass(0, fmt.Errorf("refused"))).inc()
	m.apiRetries.with("queues.get_next_task").inc()
	now := time.Now()
	m.outage.down(now.Add(-10 * time.Second))
	m.outage.up(now.Add(-5 * time.Second))
	m.outage.down(now.Add(-time.Millisecond))
	m.linesShipped.add(100)
	m.linesSpooled.add(7)
	m.spoolBytes.set(4096)
	m.venvCacheHits.inc()
	m.venvCacheMiss.inc()
	m.venvBuild.observe(12.5)
	m.setGPUReadings([]gpuInfo{
		{Index: 0, MIG: -1, UUID: "GPU-0", MemTotalMB: 81559, MemUsedMB: 1024, Util: 97, Temp: 41, HasMem: true, HasUtil: true, HasTemp: true},
		{Index: 1, MIG: 2, UUID: "MIG-1", MemTotalMB: 10240, MemUsedMB: 512, HasMem: true},
	})
}

// FuzzMetricsEscape: any label value and HELP text survive the writer's
// escaping and read back equal (invalid UTF-8 as U+FFFD).
func FuzzMetricsEscape(f *testing.F) {
	for _, s := range []string{"", `\`, `"`, "\n", `\n`, `\"`, "a\\\"b\nc", "\xff", "é\xc3", "}", `",x="y`, "# HELP"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, value, help string) {
		r := newMetricRegistry()
		r.gaugeVec("fuzz_value", "h"+help, "v").with(value).set(1)
		out, e := writeAndParse(t, r)
		want := strings.ToValidUTF8(value, "\uFFFD")
		if v, ok := e.value("fuzz_value", "v", want); !ok || v != 1 {
			t.Fatalf("value %q not read back:\n%s", value, out)
		}
		if got := e.families["fuzz_value"].help; got != "h"+strings.ToValidUTF8(help, "\uFFFD") {
			t.Fatalf("help %q read back as %q", help, got)
		}
	})
}

// BenchmarkMetricsScrape is one /metrics page of the agent's families: a
// scrape allocates, and an idle agent's heap only shrinks at a GC, so
// keep it small.
func BenchmarkMetricsScrape(b *testing.B) {
	m := newAgentMetricSet(newMetricRegistry(), func() bool { return true })
	fillAgentMetrics(m)
	h := newMetricsHandler(m.reg, newHealthState())
	req := httptest.NewRequest("GET", "/metrics", nil)
	w := discardResponse{http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

// discardResponse keeps one header map, as the server does per response.
type discardResponse struct{ h http.Header }

func (d discardResponse) Header() http.Header       { return d.h }
func (discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (discardResponse) WriteHeader(int)             {}
