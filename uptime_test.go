package main

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// week0 is a Sunday at 00:00 in a fixed zone; schedules read t's own zone.
var week0 = time.Date(2024, 1, 7, 0, 0, 0, 0, time.FixedZone("X", 5*3600+1800))

func TestScheduleParse(t *testing.T) {
	valid := []struct {
		specs []string
		want  string // String() minus the title line
	}{
		{[]string{"17-20 TUE"}, "  - 17:00-19:59 on TUE"},
		{[]string{"17-20", "TUE"}, "  - 17:00-19:59 on TUE"}, // unquoted: the reference crashed
		{[]string{"0-8 MON-FRI"}, "  - 0:00-7:59 on MON and TUE and WED and THU and FRI"},
		{[]string{"9 SAT"}, "  - 9:00-23:59 on SAT"},
		{[]string{"0-24 sun"}, "  - 0:00-23:59 on SUN"},
		{[]string{"22-0 fri-mon"}, "  - 22:00-23:59 on FRI and SAT and SUN and MON"},
		{[]string{"09-17 WED"}, "  - 9:00-16:59 on WED"},
		{[]string{"8-12,13-17 MON,WED-THU,MON"}, "  - 8:00-11:59 on MON and WED and THU\n  - 13:00-16:59 on MON and WED and THU"},
		{[]string{"  1-2   SAT  ", "3 SUN 4-5 MON"}, "  - 1:00-1:59 on SAT\n  - 3:00-23:59 on SUN\n  - 4:00-4:59 on MON"},
	}
	for _, tt := range valid {
		s, err := parseSchedule(tt.specs, nil)
		if err != nil {
			t.Errorf("%q: %v", tt.specs, err)
			continue
		}
		want := "Working hours uptime configurations\n" + tt.want
		if got := s.String(); got != want {
			t.Errorf("%q:\n got %q\nwant %q", tt.specs, got, want)
		}
	}

	invalid := map[string]string{
		"17-20":         "no days",
		"TUE":           "expected hours",
		"17-20 XYZ":     "bad days",
		"17-20 MON-":    "bad days",
		"25 MON":        "bad hours",
		"5-25 MON":      "bad hours",
		"5-5 MON":       "no time",
		"22-6 MON":      "wrap past midnight",
		"-5 MON":        "expected hours",
		"1-2-3 MON":     "bad hours",
		"17-20, MON":    "bad hours",
		"17-20 MON x":   "expected hours",
		"   ":           "empty spec",
		"17-20 17 MON":  "no days",
		"100 MON":       "bad hours",
		"17-20 MONDAY":  "bad days",
		"1-2 MON 3 TUE": "", // valid: two specs in one item
	}
	for spec, want := range invalid {
		_, err := parseSchedule(nil, []string{spec})
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--downtime") {
			t.Errorf("%q: error %v, want one with %q", spec, err, want)
		}
	}

	if s, err := parseSchedule(nil, nil); s != nil || err != nil {
		t.Errorf("no specs: %v, %v", s, err)
	}
	if _, err := parseSchedule([]string{"1 MON"}, []string{"2 TUE"}); err == nil {
		t.Error("uptime and downtime together: no error")
	}
}

func TestScheduleActiveWeek(t *testing.T) {
	up, err := parseSchedule([]string{"17-20 SUN,TUE", "0-8 MON-FRI", "9 SAT", "22-0 SAT-SUN"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	down, err := parseSchedule(nil, []string{"17-20 SUN,TUE", "0-8 MON-FRI", "9 SAT", "22-0 SAT-SUN"})
	if err != nil {
		t.Fatal(err)
	}
	want := func(day time.Weekday, h int) bool {
		switch {
		case (day == time.Sunday || day == time.Tuesday) && h >= 17 && h < 20:
			return true
		case day >= time.Monday && day <= time.Friday && h < 8:
			return true
		case day == time.Saturday && h >= 9:
			return true
		case (day == time.Saturday || day == time.Sunday) && h >= 22:
			return true
		}
		return false
	}
	on := 0
	for i := 0; i < 7*24*4; i++ {
		now := week0.Add(time.Duration(i) * 15 * time.Minute)
		w := want(now.Weekday(), now.Hour())
		if got := up.active(now); got != w {
			t.Errorf("uptime at %s: %v, want %v", now.Format("Mon 15:04"), got, w)
		}
		if got := down.active(now); got == w {
			t.Errorf("downtime at %s: %v, want %v", now.Format("Mon 15:04"), got, !w)
		}
		if w {
			on++
		}
	}
	// 2*3 + 5*8 + 15 + 2 (Sunday 22-24; Saturday's is inside "9 SAT") hours, 4 quarters each.
	if on != (6+40+15+2)*4 {
		t.Errorf("%d active quarter hours", on)
	}
	var none *activitySchedule
	if !none.active(week0) || !none.next(week0).IsZero() {
		t.Error("a nil schedule is always active and never changes")
	}
}

func TestScheduleNext(t *testing.T) {
	s, err := parseSchedule([]string{"0-8 MON-FRI"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mon := week0.AddDate(0, 0, 1)
	for _, tt := range []struct{ from, want time.Time }{
		{mon.Add(7*time.Hour + 30*time.Minute), mon.Add(8 * time.Hour)},
		{mon.Add(8 * time.Hour), mon.AddDate(0, 0, 1)},
		{week0.Add(3 * time.Hour), mon},
		{mon.AddDate(0, 0, 4).Add(9 * time.Hour), mon.AddDate(0, 0, 7)}, // Friday after work: next Monday
	} {
		if got := s.next(tt.from); !got.Equal(tt.want) {
			t.Errorf("next(%s) = %s, want %s", tt.from.Format("Mon 15:04"), got.Format("Mon 15:04"), tt.want.Format("Mon 15:04"))
		}
	}
	always, _ := parseSchedule([]string{"0-24 SUN-SAT"}, nil)
	if got := always.next(mon); !got.IsZero() {
		t.Errorf("always-on schedule changes at %s", got)
	}
	// Across a DST change the result is still the first hour whose state differs.
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		s, _ := parseSchedule([]string{"3-4 SUN"}, nil)
		from := time.Date(2024, 3, 10, 0, 30, 0, 0, ny) // clocks jump 02:00 -> 03:00
		got := s.next(from)
		if !got.After(from) || !s.active(got) || got.Hour() != 3 {
			t.Errorf("DST: next(%s) = %s", from, got)
		}
	}
}

func TestScheduleStatusText(t *testing.T) {
	s, err := parseSchedule([]string{"17-20 SUN,TUE", "0-8 MON-FRI", "9 SAT"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	queues := []statusQueue{{Name: "default"}, {Name: "second", Tags: []string{"force_workers:on"}}}
	workers := []agentInstance{{WorkerID: "host:0", PID: 42}}
	got := daemonStatusText(s, queues, nil, workers, week0)
	want := `Working hours uptime configurations
  - 17:00-19:59 on SUN and TUE
  - 0:00-7:59 on MON and TUE and WED and THU and FRI
  - 9:00-23:59 on SAT

Currently forced ON
  - Listening to queue 'default'
  - Listening to queue 'second' (tagged 'force_workers:on')
  - Worker 'host:0' running on this host, pid 42
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	got = daemonStatusText(nil, []statusQueue{{Name: "q"}}, &forceProperty{Value: "off", Expiry: 90 * time.Minute}, nil, week0.Add(10*time.Hour))
	want = "No uptime/downtime configurations found\n\nCurrently forced OFF\n  - Server runtime property 'force: off' expires at 11:30\n  - Listening to queue 'q'\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	got = daemonStatusText(nil, []statusQueue{{Name: "q", Tags: []string{"force_workers:off"}}}, nil, nil, week0)
	want = "No uptime/downtime configurations found\n\nCurrently forced OFF\n  - Listening to queue 'q' (tagged 'force_workers:off')\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	got = daemonStatusText(nil, nil, nil, nil, week0)
	if want := "No uptime/downtime configurations found\n \n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestScheduleFromConfig(t *testing.T) {
	home := t.TempDir()
	conf := writeFile(t, filepath.Join(home, "a.conf"), `agent { uptime: ["17-20 TUE"] }`)
	cfg, err := loadConfig(conf, mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := daemonSchedule(nil, nil, cfg, io.Discard)
	if err != nil || s == nil || !s.uptime || !s.active(week0.AddDate(0, 0, 2).Add(18*time.Hour)) {
		t.Fatalf("config uptime: %v, %v", s, err)
	}
	// The command line wins over the configuration.
	s, err = daemonSchedule(nil, []string{"1 MON"}, cfg, io.Discard)
	if err != nil || s == nil || s.uptime {
		t.Fatalf("CLI downtime: %v, %v", s, err)
	}
	var ue *usageError
	if _, err := daemonSchedule([]string{"1 MON"}, []string{"2 MON"}, cfg, io.Discard); !errors.As(err, &ue) {
		t.Errorf("both flags: %v, want a usage error", err)
	}
	if _, err := daemonSchedule([]string{"1 XYZ"}, nil, cfg, io.Discard); !errors.As(err, &ue) {
		t.Errorf("bad CLI spec: %v, want a usage error", err)
	}

	both := writeFile(t, filepath.Join(home, "b.conf"), `agent { uptime: ["1 MON"], downtime: "2 TUE" }`)
	cfg, err = loadConfig(both, mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	if s, err := daemonSchedule(nil, nil, cfg, &warn); s != nil || err != nil || !strings.HasPrefix(warn.String(), "WARNING: Both uptime and downtime") {
		t.Errorf("both in config: %v, %v, %q; want neither used, with a warning", s, err, warn.String())
	}
	var ce *configError
	bad := writeFile(t, filepath.Join(home, "c.conf"), `agent.downtime: ["1 XYZ"]`)
	cfg, err = loadConfig(bad, mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemonSchedule(nil, nil, cfg, io.Discard); !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "agent.downtime") {
		t.Errorf("bad config spec: %v", err)
	}
	if s, err := daemonSchedule(nil, nil, nil, io.Discard); s != nil || err != nil {
		t.Errorf("nothing: %v, %v", s, err)
	}
}

func TestSchedulePullAllowed(t *testing.T) {
	off, _ := parseSchedule([]string{"0-1 MON"}, nil) // inactive at week0 (Sunday)
	for _, tt := range []struct {
		tags  []string
		force string
		s     *activitySchedule
		want  bool
		warn  bool
	}{
		{nil, "", nil, true, false},
		{nil, "", off, false, false},
		{[]string{queueTagForceOn}, "off", off, true, false},
		{[]string{queueTagForceOn, queueTagForceOff}, "on", nil, false, false},
		{nil, "on", off, true, false},
		{nil, "off", nil, false, false},
		{nil, "maybe", off, false, true},
	} {
		got, warn := pullAllowed(tt.tags, tt.force, tt.s, week0)
		if got != tt.want || (warn != "") != tt.warn {
			t.Errorf("%v %q: %v %q", tt.tags, tt.force, got, warn)
		}
	}
}
