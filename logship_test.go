package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// newTestShipper ships to a fresh task of s with fast retries.
func newTestShipper(t testing.TB, s *fakeserver.Server, opts shipperOptions) (*consoleShipper, string) {
	t.Helper()
	c := testClient(t, s.URL(), nil, clientOptions{workerID: "box:0"})
	if opts.taskID == "" {
		opts.taskID = s.AddTask(fakeserver.TaskSpec{Name: "console"})
	}
	opts.worker = "box:0"
	if opts.spoolDir == "" {
		opts.spoolDir = t.TempDir()
	}
	if opts.flushEvery == 0 {
		opts.flushEvery = 10 * time.Millisecond
	}
	sh := newConsoleShipper(c, opts)
	sh.retryBase, sh.retryMax = 5*time.Millisecond, 50*time.Millisecond
	return sh, opts.taskID
}

func closeShipper(t testing.TB, sh *consoleShipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sh.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// writeChunked writes text in pieces of random size, as a pipe would.
func writeChunked(t testing.TB, w *consoleShipper, text string, rng *rand.Rand) {
	t.Helper()
	for len(text) > 0 {
		n := min(len(text), 1+rng.IntN(300))
		if _, err := w.Write([]byte(text[:n])); err != nil {
			t.Fatal(err)
		}
		text = text[n:]
	}
}

// waitFor polls cond; the limit only guards against a hang.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func TestConsoleShipperOrderAndShape(t *testing.T) {
	s := startServer(t)
	local := &lockedBuffer{}
	sh, task := newTestShipper(t, s, shipperOptions{localCopy: local, suppressCR: true})
	sh.logf("cloning %s", "https://example.com/repo.git")
	var want strings.Builder
	want.WriteString("cloning https://example.com/repo.git\n")
	for i := range 3000 {
		fmt.Fprintf(&want, "line %05d %s\n", i, strings.Repeat("o", i%50))
	}
	writeChunked(t, sh, strings.TrimPrefix(want.String(), "cloning https://example.com/repo.git\n"), rand.New(rand.NewPCG(1, 2)))
	closeShipper(t, sh)

	if got := s.TaskLogText(task); got != want.String() {
		t.Fatalf("server log differs: got %d bytes, want %d", len(got), want.Len())
	}
	if got := local.String(); got != want.String() {
		t.Fatalf("local copy differs: got %d bytes, want %d", len(got), want.Len())
	}
	var last int64
	for i, e := range s.TaskLog(task) {
		if e.Worker != "box:0" || e.Timestamp <= last {
			t.Fatalf("event %d: worker %q, timestamp %d after %d", i, e.Worker, e.Timestamp, last)
		}
		last = e.Timestamp
		if wantLevel := map[bool]string{true: "INFO", false: "DEBUG"}[i == 0]; e.Level != wantLevel {
			t.Errorf("event %d level %q, want %q", i, e.Level, wantLevel)
		}
	}
	for _, ev := range s.Events(task) {
		if ev["type"] != "log" || ev["task"] != task {
			t.Fatalf("event = %v", ev)
		}
	}
	reqs := s.RequestsTo("events.add_batch")
	if len(reqs) == 0 {
		t.Fatal("no events.add_batch requests")
	}
	for _, r := range reqs {
		if r.Method != "POST" || r.Path != "/events.add_batch" || r.Header.Get("Content-Type") != "application/json-lines" || r.Code != 200 {
			t.Fatalf("request %s %s %q -> %d", r.Method, r.Path, r.Header.Get("Content-Type"), r.Code)
		}
		if len(r.Body) > shipMaxBatchBytes {
			t.Fatalf("batch of %d bytes", len(r.Body))
		}
	}
	if _, err := sh.Write([]byte("late\n")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestConsoleShipperCarriageReturn(t *testing.T) {
	s := startServer(t)
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true})
	for _, w := range []string{
		"plain\n",
		"a\rb\rc\n",
		"10%\r20%\r\n",
		"ab\b\bxy\n",
		"\x1b[0m\n",
		"split\r", "bar\n",
	} {
		sh.Write([]byte(w))
	}
	// A progress bar that runs long without a newline stays small in memory.
	sh.Write([]byte("epoch 1"))
	for i := range 5000 {
		fmt.Fprintf(sh, "\r%4d/5000 |%s|", i+1, strings.Repeat("#", i/100))
	}
	sh.mu.Lock()
	held := len(sh.partial)
	sh.mu.Unlock()
	if held > 200 {
		t.Errorf("a progress bar holds %d bytes", held)
	}
	sh.Write([]byte("\nno newline at the end"))
	closeShipper(t, sh)
	want := "plain\nc\n20%\nabxy\nbar\n5000/5000 |" + strings.Repeat("#", 49) + "|\nno newline at the end\n"
	if got := s.TaskLogText(task); got != want {
		t.Errorf("log = %q\nwant %q", got, want)
	}

	sh, task = newTestShipper(t, s, shipperOptions{suppressCR: false})
	for _, w := range []string{"a\rb\r\nc\n", "d\r", "\ne\n"} {
		sh.Write([]byte(w))
	}
	closeShipper(t, sh)
	if got, want := s.TaskLogText(task), "a\nb\nc\nd\ne\n"; got != want {
		t.Errorf("without suppression: log = %q, want %q", got, want)
	}
}

func TestConsoleShipperLongLine(t *testing.T) {
	s := startServer(t)
	local := &lockedBuffer{}
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true, localCopy: local, secrets: []string{"LONGSECRET-42"}})
	long := strings.Repeat("x", 200<<10)
	sh.Write([]byte(long[:1000]))
	sh.Write([]byte(long[1000:])) // one huge write without a newline
	sh.mu.Lock()
	held := len(sh.partial)
	sh.mu.Unlock()
	if held > 70<<10 {
		t.Fatalf("holding %d bytes of one line", held)
	}
	sh.Write([]byte("\nafter\n"))
	// A huge line written in pieces, with secrets everywhere, never held whole.
	var huge strings.Builder
	for huge.Len() < 1<<20 {
		huge.WriteString(strings.Repeat("y", 977) + "LONGSECRET-42")
	}
	for rest := huge.String(); len(rest) > 0; {
		n := min(len(rest), 4093)
		sh.Write([]byte(rest[:n]))
		rest = rest[n:]
		sh.mu.Lock()
		held := len(sh.partial)
		sh.mu.Unlock()
		if held > 70<<10 {
			t.Fatalf("holding %d bytes of one line", held)
		}
	}
	sh.Write([]byte("\nend\n"))
	closeShipper(t, sh)

	max := sh.opts.maxLineBytes
	marker := fmt.Sprintf(lineCutMarker, max)
	events := s.TaskLogText(task)
	lines := strings.Split(strings.TrimSuffix(events, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines on the server", len(lines))
	}
	if lines[0] != long[:max]+marker || lines[1] != "after" || lines[3] != "end" {
		t.Errorf("lines 0,1,3 = %.40q (%d bytes), %q, %q", lines[0], len(lines[0]), lines[1], lines[3])
	}
	if !strings.HasSuffix(lines[2], marker) || len(lines[2]) > max+len(marker) || strings.Contains(lines[2], "LONGSECRET") {
		t.Errorf("cut huge line: %d bytes, ends %q", len(lines[2]), lines[2][len(lines[2])-60:])
	}
	wantLocal := long + "\nafter\n" + strings.ReplaceAll(huge.String(), "LONGSECRET-42", mask) + "\nend\n"
	if got := local.String(); got != wantLocal {
		t.Errorf("local copy: %d bytes, want %d; secret shown: %v", len(got), len(wantLocal), strings.Contains(got, "LONGSECRET"))
	}
}

func TestConsoleShipperRedaction(t *testing.T) {
	s := startServer(t)
	local := &lockedBuffer{}
	env := []string{"HOME=/root", "MY_API_TOKEN=tok_abcdef123", "DB_PASSWORD=pa55word!", "USE_KEY=true",
		"AWS_SECRET_ACCESS_KEY=AKIAsecretvalue", "CLEARML_AGENT_GIT_PASS=gitpass-999", "PATH=/usr/bin"}
	secrets := append([]string{"hunter2-secret"}, secretEnvValues(env)...)
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true, localCopy: local, secrets: secrets})
	for _, w := range []string{
		"pass: hunt", "er2-secret and more\n",
		"token tok_abc", "def123\n",
		"db pa55word! aws AKIAsecretvalue git gitpass-999\n",
		"clone  https://user:urlpw123@github.com/x.git  done\n",
		"USE_KEY is true\n",
	} {
		sh.Write([]byte(w))
	}
	sh.logf("setup with hunter2-secret")
	closeShipper(t, sh)
	want := "pass: ******** and more\ntoken ********\ndb ******** aws ******** git ********\n" +
		"clone  https://user:********@github.com/x.git  done\nUSE_KEY is true\nsetup with ********\n"
	if got := s.TaskLogText(task); got != want {
		t.Errorf("server log = %q\nwant %q", got, want)
	}
	if got := local.String(); got != want {
		t.Errorf("local copy = %q", got)
	}
}

// TestConsoleShipperOutage: faults of every kind, then an outage of a
// couple of seconds while the task keeps writing; no line is lost or
// repeated, order is kept, and the spool file is used then removed.
func TestConsoleShipperOutage(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	local := &lockedBuffer{}
	sh, task := newTestShipper(t, s, shipperOptions{suppressCR: true, spoolDir: dir, localCopy: local})
	var want strings.Builder
	n := 0
	write := func(phase string, count int) {
		var b strings.Builder
		for range count {
			fmt.Fprintf(&b, "%s line %05d\n", phase, n)
			n++
		}
		want.WriteString(b.String())
		sh.Write([]byte(b.String()))
	}
	delivered := func() bool { return strings.Count(s.TaskLogText(task), "\n") == n }

	write("ok", 200)
	waitFor(t, "the first lines", delivered)

	s.FailPlain("events.add_batch", 3, 500)
	s.FailNext("events.add_batch", 2, 500, 0, "injected")
	s.FailPlain("events.add_batch", 1, 503)
	s.RateLimit("events.add_batch", 1, 0)
	s.DropNext("events.add_batch", 2)
	write("faults", 200)
	waitFor(t, "lines after faults", delivered)

	s.RevokeAllTokens()
	write("rotated", 200)
	waitFor(t, "lines after token revocation", delivered)

	if err := s.Refuse(true); err != nil {
		t.Fatal(err)
	}
	outage := 2 * time.Second
	if testing.Short() {
		outage = 500 * time.Millisecond
	}
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		write("outage", 20)
	}
	last := fmt.Sprintf("outage line %05d", n-1)
	var spool string
	waitFor(t, "the spool file to hold the last line", func() bool {
		spool, _ = sh.spoolPath()
		b, _ := os.ReadFile(spool)
		return spool != "" && bytes.Contains(b, []byte(last))
	})
	if filepath.Dir(spool) != dir {
		t.Errorf("spool file %s not in %s", spool, dir)
	}
	if err := s.Refuse(false); err != nil {
		t.Fatal(err)
	}
	write("back", 200)
	closeShipper(t, sh)

	if got := s.TaskLogText(task); got != want.String() {
		gl, wl := strings.Split(got, "\n"), strings.Split(want.String(), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("line %d: got %q, want %q (%d lines, want %d)", i, gl[i], wl[i], len(gl), len(wl))
			}
		}
		t.Fatalf("got %d lines, want %d", len(gl), len(wl))
	}
	if local.String() != want.String() {
		t.Error("local copy differs")
	}
	if _, spilled := sh.spoolPath(); spilled == 0 {
		t.Error("the spool file was never used")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("spool dir not empty after delivery: %v", left)
	}
	var faults int
	for _, r := range s.RequestsTo("events.add_batch") {
		if r.Fault != "" || r.Code == 401 {
			faults++
		}
	}
	if faults < 10 {
		t.Errorf("only %d failed requests seen", faults)
	}
}

// TestConsoleShipperCloseDeadServer: Close gives up when its context ends
// and names the spool file, which holds every undelivered line.
func TestConsoleShipperCloseDeadServer(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	sh, _ := newTestShipper(t, s, shipperOptions{suppressCR: true, spoolDir: dir})
	sh.Write([]byte("delivered\n"))
	waitFor(t, "the first line", func() bool { sh.mu.Lock(); defer sh.mu.Unlock(); return sh.sent == 1 })
	if err := s.Refuse(true); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("dead line %03d", i))
		fmt.Fprintf(sh, "%s\n", want[i])
	}
	sh.Write([]byte("unfinished"))
	want = append(want, "unfinished")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := sh.Close(ctx)
	if err == nil {
		t.Fatal("Close succeeded with the server down")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 || !strings.Contains(err.Error(), files[0]) || !strings.Contains(err.Error(), "101 lines") {
		t.Fatalf("Close: %v; files %v", err, files)
	}
	b, _ := os.ReadFile(files[0])
	var got []string
	for _, rec := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		_, level, text := parseRecord([]byte(rec))
		if level != 'D' {
			t.Errorf("level %c in %q", level, rec)
		}
		got = append(got, string(text))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("spool file holds %q", got)
	}
}

func TestConsoleShipperRejected(t *testing.T) {
	s := startServer(t)
	sh, _ := newTestShipper(t, s, shipperOptions{taskID: "no-such-task"})
	sh.Write([]byte("one\ntwo\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Close(ctx); err == nil || !strings.Contains(err.Error(), "2 lines dropped") {
		t.Errorf("Close = %v", err)
	}
}

// BenchmarkConsoleShipper pushes short lines, one Write each, through to
// the stand-in server and checks that none is lost.
func BenchmarkConsoleShipper(b *testing.B) {
	s := startServer(b)
	sh, task := newTestShipper(b, s, shipperOptions{suppressCR: true, flushEvery: shipFlushEvery,
		secrets: []string{"some-secret-value"}, localCopy: &lockedBuffer{}})
	line := []byte("epoch 12 step 3456 loss 0.1234 acc 0.987\n")
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		sh.Write(line)
	}
	closeShipper(b, sh)
	elapsed := time.Since(start)
	b.StopTimer()
	got := 0
	for _, e := range s.TaskLog(task) {
		got += strings.Count(e.Msg, "\n")
	}
	if got != b.N {
		b.Fatalf("%d of %d lines arrived", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "lines/s")
}

func TestShipperBatchBytes(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{}, shipMaxBatchBytes},
		{map[string]string{"CLEARML_AGENT__API__HTTP__MAX_REQ_SIZE": "300000"}, 300000 - 4<<10},
		{map[string]string{"CLEARML_AGENT__API__HTTP__MAX_REQ_SIZE": "1000"}, 2 * shipMaxEventBytes},
	} {
		tc.env["HOME"] = t.TempDir()
		cfg, err := loadConfig("", mapEnv(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if got := shipperBatchBytes(cfg); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.env, got, tc.want)
		}
	}
}
