package main

// Uptime/downtime windows: when the daemon may pull tasks (reference §4.8).
// A spec is "HOURS DAYS" in local time: "17-20 TUE", "0-8 MON-FRI", "9 SAT".
// HOURS is a comma list of H (H to midnight) or H1-H2 (end exclusive, 0 means
// 24); DAYS is a comma list of SUN..SAT or ranges, case-insensitive.
// Fixes over the reference: ranges may start at hour 0, day ranges may wrap
// (FRI-MON), a spec split over two argv items (unquoted) still parses, and a
// bad spec is an error rather than a warning and a silently empty window.

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// weekdayNames is indexed by time.Weekday, as the reference's DAYS list.
var weekdayNames = [7]string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}

type scheduleSpec struct {
	hours [][2]int // [start, end) pairs, as written
	days  []time.Weekday
}

// activitySchedule is an uptime or a downtime list. A nil schedule means
// "always active".
type activitySchedule struct {
	uptime bool
	specs  []scheduleSpec
	week   [7][24]bool // hours some spec covers
}

// parseSchedule parses the --uptime or --downtime specs. Neither gives nil;
// both is an error, as is any malformed spec.
func parseSchedule(uptime, downtime []string) (*activitySchedule, error) {
	if len(uptime) > 0 && len(downtime) > 0 {
		return nil, fmt.Errorf("--%s and --%s cannot be used together", uptimeFlag, downtimeFlag)
	}
	s := &activitySchedule{uptime: len(uptime) > 0}
	items, name := uptime, "--"+uptimeFlag
	if !s.uptime {
		items, name = downtime, "--"+downtimeFlag
	}
	if len(items) == 0 {
		return nil, nil
	}
	// One token stream: "17-20 TUE" and the unquoted pair "17-20" "TUE"
	// read the same.
	var toks []string
	for _, it := range items {
		toks = append(toks, strings.Fields(it)...)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("%s: empty spec; expected \"HOURS DAYS\", e.g. \"17-20 TUE\"", name)
	}
	for i := 0; i < len(toks); i += 2 {
		if !isScheduleHours(toks[i]) {
			return nil, fmt.Errorf("%s: expected hours before %q; a spec is \"HOURS DAYS\", e.g. \"17-20 TUE\"", name, toks[i])
		}
		if i+1 >= len(toks) || isScheduleHours(toks[i+1]) {
			return nil, fmt.Errorf("%s: hours %q have no days; a spec is \"HOURS DAYS\", e.g. \"%s MON-FRI\"", name, toks[i], toks[i])
		}
		hours, err := parseScheduleHours(toks[i])
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, toks[i]+" "+toks[i+1], err)
		}
		days, err := parseScheduleDays(toks[i+1])
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, toks[i]+" "+toks[i+1], err)
		}
		s.specs = append(s.specs, scheduleSpec{hours: hours, days: days})
		for _, d := range days {
			for _, h := range hours {
				for x := h[0]; x < h[1]; x++ {
					s.week[d][x] = true
				}
			}
		}
	}
	return s, nil
}

// daemonSchedule picks the schedule the daemon follows: the command line if
// either flag has specs (both is a usage error), else agent.uptime /
// agent.downtime from the configuration (both: a warning, and neither is used).
func daemonSchedule(uptime, downtime []string, cfg *agentConfig, warn io.Writer) (*activitySchedule, error) {
	if len(uptime) > 0 || len(downtime) > 0 {
		s, err := parseSchedule(uptime, downtime)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return s, nil
	}
	if cfg == nil {
		return nil, nil
	}
	up, down := cfg.strList("agent.uptime"), cfg.strList("agent.downtime")
	if len(up) > 0 && len(down) > 0 {
		// The reference ignores both, so such a file still runs a worker.
		fmt.Fprintln(warn, "WARNING: Both uptime and downtime were specified when only one of them could be used. Both will be ignored (remove agent.uptime or agent.downtime from the configuration).")
		return nil, nil
	}
	s, err := parseSchedule(up, down)
	if err != nil {
		return nil, &configError{"agent." + strings.TrimPrefix(err.Error(), "--")}
	}
	return s, nil
}

func isScheduleHours(tok string) bool { return tok != "" && tok[0] >= '0' && tok[0] <= '9' }

func parseScheduleHours(tok string) ([][2]int, error) {
	var out [][2]int
	for _, part := range strings.Split(tok, ",") {
		a, b, isRange := strings.Cut(part, "-")
		start, ok := scheduleHour(a)
		end := 24
		if isRange {
			var ok2 bool
			end, ok2 = scheduleHour(b)
			ok = ok && ok2
		}
		if !ok || start > 23 || end > 24 {
			return nil, fmt.Errorf("bad hours %q: use H or H1-H2 with hours 0 to 24", part)
		}
		if end == 0 {
			end = 24
		}
		if start == end {
			return nil, fmt.Errorf("hours %q cover no time", part)
		}
		if start > end {
			return nil, fmt.Errorf("hours %q wrap past midnight: write two specs, e.g. \"%d-24 MON\" \"0-%d TUE\"", part, start, end)
		}
		out = append(out, [2]int{start, end})
	}
	return out, nil
}

func scheduleHour(s string) (int, bool) {
	if s == "" || len(s) > 2 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func parseScheduleDays(tok string) ([]time.Weekday, error) {
	var out []time.Weekday
	seen := map[time.Weekday]bool{}
	add := func(d time.Weekday) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, part := range strings.Split(tok, ",") {
		a, b, isRange := strings.Cut(part, "-")
		start, ok := scheduleDay(a)
		end := start
		if isRange {
			var ok2 bool
			end, ok2 = scheduleDay(b)
			ok = ok && ok2
		}
		if !ok {
			return nil, fmt.Errorf("bad days %q: use SUN, MON, TUE, WED, THU, FRI, SAT or a range such as MON-FRI", part)
		}
		for d := start; ; d = (d + 1) % 7 {
			add(d)
			if d == end {
				break
			}
		}
	}
	return out, nil
}

func scheduleDay(s string) (time.Weekday, bool) {
	for i, n := range weekdayNames {
		if strings.EqualFold(s, n) {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// active reports whether the daemon may pull tasks at t (local time of t).
func (s *activitySchedule) active(t time.Time) bool {
	if s == nil {
		return true
	}
	return s.week[t.Weekday()][t.Hour()] == s.uptime
}

// next is the first time after t at which active changes, or the zero time
// when it never does (every hour of the week in or out).
func (s *activitySchedule) next(t time.Time) time.Time {
	if s == nil {
		return time.Time{}
	}
	cur := s.active(t)
	h := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, t.Location())
	// 8 days of hours covers a week even across DST changes.
	for i := 0; i < 8*24; i++ {
		n := time.Date(h.Year(), h.Month(), h.Day(), h.Hour()+1, 0, 0, 0, h.Location())
		if !n.After(h) { // a DST gap or repeat can stall the wall clock
			n = h.Add(time.Hour)
		}
		h = n
		if s.active(h) != cur {
			return h
		}
	}
	return time.Time{}
}

// String is the schedule part of `daemon --status`, in the reference's words.
func (s *activitySchedule) String() string {
	if s == nil {
		return "No uptime/downtime configurations found"
	}
	kind := "downtime"
	if s.uptime {
		kind = "uptime"
	}
	lines := []string{"Working hours " + kind + " configurations"}
	for _, sp := range s.specs {
		names := make([]string, len(sp.days))
		for i, d := range sp.days {
			names[i] = weekdayNames[d]
		}
		for _, h := range sp.hours {
			lines = append(lines, fmt.Sprintf("  - %d:00-%d:59 on %s", h[0], h[1]-1, strings.Join(names, " and ")))
		}
	}
	return strings.Join(lines, "\n")
}

// Queue tags and the worker runtime property that override the schedule.
const (
	queueTagForceOn  = "force_workers:on"
	queueTagForceOff = "force_workers:off"
)

// pullAllowed decides, for one queue and one poll, whether the daemon pulls
// from it (reference §4.8 order): queue tag off, queue tag on, the worker's
// runtime property "force" (on/off), then the schedule. warn is non-empty
// for an invalid force value.
func pullAllowed(queueTags []string, force string, s *activitySchedule, t time.Time) (pull bool, warn string) {
	if slices.Contains(queueTags, queueTagForceOff) {
		return false, ""
	}
	if slices.Contains(queueTags, queueTagForceOn) {
		return true, ""
	}
	switch force {
	case "":
	case "off":
		return false, ""
	case "on":
		return true, ""
	default:
		warn = fmt.Sprintf("invalid runtime_property 'force: %s' supported values are: '['on']/['off']', ignoring", force)
	}
	return s.active(t), warn
}

// statusQueue is one queue as `daemon --status` shows it.
type statusQueue struct {
	Name string
	Tags []string
}

// forceProperty is the worker runtime property "force" set from the server.
type forceProperty struct {
	Value  string
	Expiry time.Duration // 0: no expiry
}

// daemonStatusText is the whole `daemon --status` report: the schedule, the
// forced state, the queues (as the reference, minus its stray quote) and the
// agents running on this host. It ends with a newline.
func daemonStatusText(s *activitySchedule, queues []statusQueue, force *forceProperty, workers []agentInstance, now time.Time) string {
	var forced string
	var qlines []string
	for _, q := range queues {
		tag := ""
		switch {
		case slices.Contains(q.Tags, queueTagForceOff):
			tag = queueTagForceOff
			if forced == "" {
				forced = "OFF"
			}
		case slices.Contains(q.Tags, queueTagForceOn):
			tag = queueTagForceOn
			forced = "ON"
		}
		line := fmt.Sprintf("  - Listening to queue '%s'", q.Name)
		if tag != "" {
			line += fmt.Sprintf(" (tagged '%s')", tag)
		}
		qlines = append(qlines, line)
	}
	var serverLine string
	if force != nil {
		if forced == "" {
			forced = strings.ToUpper(force.Value)
		}
		serverLine = fmt.Sprintf("  - Server runtime property 'force: %s'", force.Value)
		if force.Expiry > 0 {
			serverLine += " expires at " + now.Add(force.Expiry).Format("15:04")
		}
	}
	parts := []string{s.String()}
	if forced != "" {
		parts = append(parts, "\nCurrently forced "+forced)
	} else {
		parts = append(parts, " ")
	}
	if serverLine != "" {
		parts = append(parts, serverLine)
	}
	if len(qlines) > 0 {
		parts = append(parts, strings.Join(qlines, "\n"))
	}
	for _, w := range workers {
		parts = append(parts, fmt.Sprintf("  - Worker '%s' running on this host, pid %d", w.WorkerID, w.PID))
	}
	return strings.Join(parts, "\n") + "\n"
}
