package main

// End-to-end tests with the real ClearML Python SDK inside the task
// (issue 11): the built agent runs a task that calls Task.init(),
// connect(), reports, uploads an artifact, and is aborted, against the
// stand-in server and files server.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// sdkReport is what testdata/sdk/sdk_task.py writes about itself.
type sdkReport struct {
	TaskID      string            `json:"task_id"`
	Connected   map[string]any    `json:"connected"`
	Parameters  map[string]string `json:"parameters"`
	ArtifactURL string            `json:"artifact_url"`
	EnvNames    []string          `json:"env_names"`
	ConfigFile  string            `json:"config_file"`
	RoundTrip   map[string]any    `json:"roundtrip"`
	Python      string            `json:"python"`
}

// sdkRun is one run of sdk_task.py through `execute`, shared by the tests
// that only read its results: each SDK task costs about 15 s.
type sdkRun struct {
	rig     *sdkRig
	id      string
	res     runResult
	report  sdkReport
	elapsed time.Duration
	err     string // why the run is unusable, "" when it is
}

const sdkIterations = 5

var (
	sharedSDKOnce sync.Once
	sharedSDK     *sdkRun
)

// sharedSDKRun runs sdk_task.py once per test binary. Everything later
// tests read is in memory (servers' state, the report), so the first
// test's temporary folders may go.
func sharedSDKRun(t *testing.T) *sdkRun {
	t.Helper()
	needSDK(t)
	sharedSDKOnce.Do(func() {
		run := &sdkRun{err: "the shared SDK run did not finish; see the first SDK test's failure"}
		sharedSDK = run
		run.rig = newSDKRig(t)
		repo := sdkTaskRepo(t, "sdk_task.py")
		run.id = run.rig.addSDKTask(repo, "sdk_task.py", "sdk e2e")
		reportPath := filepath.Join(t.TempDir(), "report.json")
		env := run.rig.agentEnv(map[string]string{"SDK_E2E_REPORT": reportPath, "SDK_E2E_ITERATIONS": strconv.Itoa(sdkIterations)})
		start := time.Now()
		run.res = runAgent(t, env, "execute", "--id", run.id)
		run.elapsed = time.Since(start)
		t.Logf("shared SDK task: execute took %v", run.elapsed.Round(time.Millisecond))
		data, err := os.ReadFile(reportPath)
		if err != nil {
			run.err = fmt.Sprintf("the SDK task wrote no report (%v); exit %d\nstdout:\n%s\nstderr:\n%s",
				err, run.res.code, run.res.stdout, run.res.stderr)
			return
		}
		if err := json.Unmarshal(data, &run.report); err != nil {
			run.err = fmt.Sprintf("the SDK task's report: %v\n%s", err, data)
			return
		}
		run.err = ""
	})
	if sharedSDK.err != "" {
		t.Fatal(sharedSDK.err)
	}
	return sharedSDK
}

// TestSDKTaskEndToEnd: a real SDK task run by `execute` reuses the agent's
// task, connects parameters, reports scalars and text, registers an abort
// callback, uploads an artifact to the files server, and ends completed,
// with all of it on the stand-in servers (issue 11 §6).
func TestSDKTaskEndToEnd(t *testing.T) {
	run := sharedSDKRun(t)
	s, id := run.rig.s, run.id
	if run.res.code != 0 {
		t.Errorf("execute exit %d\nstdout:\n%s\nstderr:\n%s", run.res.code, run.res.stdout, run.res.stderr)
	}
	task := taskStatus(t, s, id)
	if task.Status != "completed" {
		t.Errorf("status = %s (%s)", task.Status, task.StatusReason)
	}
	if run.report.TaskID != id {
		t.Errorf("Task.init() gave task %q, not the agent's %s", run.report.TaskID, id)
	}
	if n := len(s.RequestsTo("tasks.create")); n != 0 {
		t.Errorf("the SDK created %d tasks instead of reusing the agent's", n)
	}
	log := s.TaskLogText(id)
	for _, bad := range []string{"Traceback", " - ERROR - ", "sub-process lost"} {
		if strings.Contains(log, bad) {
			t.Errorf("the task log has %q:\n%s", bad, log)
		}
	}
	for _, r := range s.Requests() {
		if r.Code != 200 {
			t.Errorf("request #%d %s answered %d/%d %s", r.Seq, r.Endpoint, r.Code, r.Subcode, r.Msg)
		}
	}
	checkSDKParams(t, run, task)
	checkSDKReports(t, run, log)
	checkSDKArtifact(t, run, task)
	rt := task.Runtime
	num := func(v any) float64 { f, _ := strconv.ParseFloat(fmt.Sprint(v), 64); return f }
	if num(rt["_abort_callback_timeout"]) != 7 || num(rt["_abort_poll_freq"]) != 15 {
		t.Errorf("register_abort_callback did not reach the task's runtime: %v", rt)
	}
}

// checkSDKParams: connect() wrote typed hyperparams, get_parameters() reads them.
func checkSDKParams(t *testing.T, run *sdkRun, task fakeserver.Task) {
	t.Helper()
	want := map[string]string{"General/lr": "0.25", "General/epochs": strconv.Itoa(sdkIterations), "General/name": "naïve <a&b>"}
	if !reflect.DeepEqual(run.report.Parameters, want) {
		t.Errorf("get_parameters() = %v, want %v", run.report.Parameters, want)
	}
	if fmt.Sprint(run.report.Connected) != fmt.Sprint(map[string]any{"lr": 0.25, "epochs": sdkIterations, "name": "naïve <a&b>"}) {
		t.Errorf("connect() returned %v", run.report.Connected)
	}
	hp, _ := task.Doc["hyperparams"].(map[string]any)
	gen, _ := hp["General"].(map[string]any)
	for name, typ := range map[string]string{"lr": "float", "epochs": "int", "name": "str"} {
		p, _ := gen[name].(map[string]any)
		if p["value"] != want["General/"+name] || p["type"] != typ || p["section"] != "General" {
			t.Errorf("hyperparams.General.%s on the server = %v, want value %q type %s", name, p, want["General/"+name], typ)
		}
	}
}

// checkSDKReports: scalars arrive as events, console and report_text as log lines.
func checkSDKReports(t *testing.T, run *sdkRun, log string) {
	t.Helper()
	s, id := run.rig.s, run.id
	got := sdkScalars(s, id, "loss", "train")
	for i := 0; i < sdkIterations; i++ {
		if v, ok := got[int64(i)]; !ok || v != 1.0/float64(i+1) {
			t.Errorf("scalar loss/train at iteration %d = %v (present %v); all: %v", i, v, ok, got)
		}
	}
	if len(got) != sdkIterations {
		t.Errorf("%d scalar events, want %d: %v", len(got), sdkIterations, got)
	}
	if task := taskStatus(t, s, id); fmt.Sprint(task.Doc["last_iteration"]) != strconv.Itoa(sdkIterations-1) {
		t.Errorf("last_iteration = %v", task.Doc["last_iteration"])
	}
	var lines []string
	for i := 0; i < sdkIterations; i++ {
		lines = append(lines, "iteration "+strconv.Itoa(i))
	}
	if !strings.Contains(log, strings.Join(lines, "\n")) {
		t.Errorf("the iteration lines are not in the task log in order:\n%s", log)
	}
	for _, want := range []string{"sdk task id " + id, "sdk text line <&> ✓", "artifact uploaded to " + run.rig.fs.URL(), "sdk task done"} {
		if !strings.Contains(log, want) {
			t.Errorf("the task log lacks %q:\n%s", want, log)
		}
	}
}

// checkSDKArtifact: the artifact is registered on the task and its file is
// on the files server, uploaded with the SDK's token.
func checkSDKArtifact(t *testing.T, run *sdkRun, task fakeserver.Task) {
	t.Helper()
	exec, _ := task.Doc["execution"].(map[string]any)
	arts, _ := exec["artifacts"].([]any)
	var art map[string]any
	for _, a := range arts {
		if m, _ := a.(map[string]any); m["key"] == "stats" {
			art = m
		}
	}
	if art == nil {
		t.Fatalf("no artifact \"stats\" on the task; execution.artifacts = %v; add_or_update_artifacts requests: %d",
			arts, len(run.rig.s.RequestsTo("tasks.add_or_update_artifacts")))
	}
	uri, _ := art["uri"].(string)
	if art["type"] != "dict" || art["mode"] != "output" || uri != run.report.ArtifactURL {
		t.Errorf("artifact = %v; the SDK's url %q", art, run.report.ArtifactURL)
	}
	u, err := url.Parse(uri)
	if err != nil || "http://"+u.Host != run.rig.fs.URL() {
		t.Fatalf("artifact uri %q is not on the files server %s", uri, run.rig.fs.URL())
	}
	data, ok := run.rig.fs.File(u.Path)
	if !ok {
		t.Fatalf("the files server has no %q; it has %v", u.Path, run.rig.fs.Files())
	}
	var content map[string]any
	if err := json.Unmarshal(data, &content); err != nil || fmt.Sprint(content) != fmt.Sprint(map[string]any{"label": "ok", "rows": sdkIterations}) {
		t.Errorf("artifact file = %q (%v)", data, err)
	}
	sum := sha256.Sum256(data)
	if art["hash"] != hex.EncodeToString(sum[:]) || fmt.Sprint(art["content_size"]) != strconv.Itoa(len(data)) {
		t.Errorf("artifact hash/size %v/%v do not match the file (%d bytes)", art["hash"], art["content_size"], len(data))
	}
	if !regexp.MustCompile(`^/[^/]+/sdk e2e\.` + run.id + `/artifacts/stats/stats\.json$`).MatchString(u.Path) {
		t.Errorf("artifact path %q is not <project>/<task name>.<id>/artifacts/stats/stats.json", u.Path)
	}
	for _, r := range run.rig.fs.Requests() {
		if r.Method == "POST" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			t.Errorf("upload without the SDK's token: %v", r.Header)
		}
	}
}

// TestSDKConfigFileRoundTrip (issue 11 §4): the private config file the
// agent writes for the task, read back by the SDK's own configuration
// loader, holds exactly the values of the agent's configuration.
func TestSDKConfigFileRoundTrip(t *testing.T) {
	run := sharedSDKRun(t)
	if run.report.ConfigFile == "" {
		t.Fatal("the task has no CLEARML_CONFIG_FILE")
	}
	for key, want := range sdkRoundTrip {
		got, ok := run.report.RoundTrip[key]
		if !ok {
			t.Errorf("sdk.e2e_roundtrip.%s is missing from the SDK's configuration (it has %v)", key, run.report.RoundTrip)
			continue
		}
		if got != want {
			t.Errorf("sdk.e2e_roundtrip.%s: the SDK reads %q, the agent's configuration says %q", key, got, want)
		}
	}
}

// sdkForbiddenEnv are variables a task must not inherit (issue 11 §5): the
// API credentials and their twins (the SDK reads them from the 0600
// config file), and the agent's own internal variables.
var sdkForbiddenEnv = regexp.MustCompile(`^(CLEARML|TRAINS)_(API_ACCESS_KEY|API_SECRET_KEY|AGENT_DAEMON_CHILD|AGENT_ASKPASS.*|AGENT_GIT_PASS)$`)

// TestSDKTaskEnvironmentSecrets (issue 11 §5): a task run by the daemon,
// whose agent has its credentials in clearml.conf, gets no credential
// variables and no agent-internal ones, and the SDK still logs in (with
// the config file only).
func TestSDKTaskEnvironmentSecrets(t *testing.T) {
	rig := newSDKRig(t)
	// The agent's credentials and host come from its clearml.conf only.
	rig.appendConf(t, fmt.Sprintf("api { api_server: %s, credentials { access_key: %s, secret_key: %s } }",
		hoconQuote(rig.s.URL()), hoconQuote(fakeserver.TestsAccessKey), hoconQuote(fakeserver.TestsSecretKey)))
	env := map[string]string{}
	for k, v := range rig.env {
		if !strings.HasPrefix(k, "CLEARML_API_") {
			env[k] = v
		}
	}
	reportPath := filepath.Join(t.TempDir(), "report.json")
	env["SDK_E2E_REPORT"] = reportPath
	id := rig.addSDKTask(sdkTaskRepo(t, "sdk_task.py"), "sdk_task.py", "sdk secrets")
	p := startDaemon(t, env, "--queue", fakeserver.DefaultQueueName)
	task := waitStatus(t, rig.s, p, id, "completed", 3*time.Minute)
	p.stop(t)
	data, err := os.ReadFile(reportPath)
	if err != nil {
		t.Fatalf("the SDK task wrote no report (%v); status %s; task log:\n%s", err, task.Status, rig.s.TaskLogText(id))
	}
	var rep sdkReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.TaskID != id || len(sdkScalars(rig.s, id, "loss", "train")) != sdkIterations {
		t.Errorf("the SDK did not log in and report to task %s (Task.init gave %q)", id, rep.TaskID)
	}
	var leaked []string
	for _, name := range rep.EnvNames {
		if sdkForbiddenEnv.MatchString(name) {
			leaked = append(leaked, name)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("the task's environment has %v", leaked)
	}
}

// TestSDKAbortKeepsReports (issue 11 §3): a real SDK task reporting a
// scalar and printing a line every 0.2 s is aborted through tasks.stop, as
// from the UI. Everything it produced before it died must reach the
// server, and its whole process tree must be gone within
// agent.abort_grace_period_sec (default 10 s) of the agent seeing the abort.
func TestSDKAbortKeepsReports(t *testing.T) {
	const grace = 10 * time.Second // agent.abort_grace_period_sec default
	rig := newSDKRig(t)
	countFile := filepath.Join(t.TempDir(), "count")
	env := rig.agentEnv(map[string]string{"SDK_COUNT_FILE": countFile})
	id := rig.addSDKTask(sdkTaskRepo(t, "sdk_abort.py"), "sdk_abort.py", "sdk abort")
	done := runAgentAsync(t, env, "execute", "--id", id)

	produced := func() int {
		b, _ := os.ReadFile(countFile)
		n, _ := strconv.Atoi(strings.Fields(string(b) + " 0")[0])
		return n
	}
	deadline := time.Now().Add(3 * time.Minute)
	for produced() < 15 { // about 3 s of reporting
		select {
		case r := <-done:
			t.Fatalf("the task ended before the abort: exit %d\n%s\n%s", r.code, r.stdout, rig.s.TaskLogText(id))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task never reported 15 iterations; log:\n%s", rig.s.TaskLogText(id))
		}
	}
	before := taskProcs(id)
	if len(before) == 0 {
		t.Fatal("no process of the task found in /proc: the tree measurement would be meaningless")
	}
	abortAt := time.Now()
	rig.call(t, "tasks.stop", map[string]any{"task": id})
	var gone time.Duration
	for gone == 0 {
		if len(taskProcs(id)) == 0 {
			gone = time.Since(abortAt)
		} else if time.Since(abortAt) > 2*time.Minute {
			t.Fatalf("the task's processes %v outlived the abort by 2 minutes", taskProcs(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var r runResult
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("execute did not end after the task's tree was gone")
	}
	n := produced()
	scalars := sdkScalars(rig.s, id, "progress", "iter")
	log := rig.s.TaskLogText(id)
	var lostScalars, lostLines []int
	for i := 0; i < n; i++ {
		if _, ok := scalars[int64(i)]; !ok {
			lostScalars = append(lostScalars, i)
		}
		if !regexp.MustCompile(`(?m)^tick ` + strconv.Itoa(i) + `$`).MatchString(log) {
			lostLines = append(lostLines, i)
		}
	}
	t.Logf("abort -> tree gone %.1f s (%d processes before); produced %d iterations; scalars arrived %d, lost %d; lines arrived %d, lost %d; reporter lost: %v",
		gone.Seconds(), len(before), n, n-len(lostScalars), len(lostScalars), n-len(lostLines), len(lostLines),
		strings.Contains(log, "sub-process lost"))
	if st := taskStatus(t, rig.s, id); st.Status != "stopped" {
		t.Errorf("status = %s (%s); exit %d", st.Status, st.StatusReason, r.code)
	}
	if len(lostScalars) > 0 {
		t.Errorf("%d of %d scalars never reached the server (iterations %v)", len(lostScalars), n, lostScalars)
	}
	if len(lostLines) > 0 {
		t.Errorf("%d of %d console lines never reached the server (ticks %v)", len(lostLines), n, lostLines)
	}
	// The grace runs from the agent's sight of the abort, which comes with
	// its next poll of the task (every abortPollEvery): on a loaded machine
	// the SDK's own exit (its hooks flush the reporter) takes 7 to 8.5 s.
	if gone > grace+abortPollEvery {
		t.Errorf("the task's tree was gone %.1f s after the abort, more than the %v grace period after the agent's next poll (%v)", gone.Seconds(), grace, abortPollEvery)
	}
}

// TestSDKAbortCallback: a real SDK task that registered an abort callback
// is aborted through tasks.stop; the SDK sees the "stopping" request on the
// stand-in, runs the callback and reports it done in the task's runtime,
// and the agent, which waited for that, stops the task.
func TestSDKAbortCallback(t *testing.T) {
	rig := newSDKRig(t)
	countFile := filepath.Join(t.TempDir(), "count")
	env := rig.agentEnv(map[string]string{"SDK_COUNT_FILE": countFile, "SDK_ABORT_CALLBACK": "1"})
	id := rig.addSDKTask(sdkTaskRepo(t, "sdk_abort.py"), "sdk_abort.py", "sdk abort callback")
	done := runAgentAsync(t, env, "execute", "--id", id)
	waitForFile(t, countFile, 3*time.Minute)
	abortAt := time.Now()
	rig.call(t, "tasks.stop", map[string]any{"task": id})
	var r runResult
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("execute did not end after tasks.stop; log:\n%s", rig.s.TaskLogText(id))
	}
	t.Logf("abort -> execute exit %.1f s", time.Since(abortAt).Seconds())
	task := taskStatus(t, rig.s, id)
	if task.Status != "stopped" {
		t.Errorf("status = %s (%s); exit %d", task.Status, task.StatusReason, r.code)
	}
	log := rig.s.TaskLogText(id)
	for _, want := range []string{"abort callback ran", "CALLBACK COMPLETED", "### Task abort callback completed in "} {
		if !strings.Contains(log, want) {
			t.Errorf("the task log lacks %q:\n%s", want, log)
		}
	}
	if v := fmt.Sprint(task.Runtime["_abort_callback_completed"]); v != "1" && !strings.EqualFold(v, "true") {
		t.Errorf("runtime._abort_callback_completed = %v", task.Runtime["_abort_callback_completed"])
	}
}
