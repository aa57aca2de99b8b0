package main

// Helpers for the end-to-end tests that run the real ClearML Python SDK
// (../shared/sdk) inside tasks run by the agent, against the stand-in
// server and files server.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// sdkPython is the task's interpreter: Debian's, whose packages are the
// SDK's dependencies (see .ci/run).
const sdkPython = "/usr/bin/python3"

// sdkDeps are the modules the SDK needs that Debian packages provide.
var sdkDeps = []string{"furl", "jwt", "jsonschema", "numpy", "PIL", "psutil", "yaml", "attr", "dateutil",
	"requests", "six", "urllib3", "pyparsing"}

var (
	sdkCheckOnce sync.Once
	sdkDirFound  string
	sdkMissing   string
)

// needSDK returns the folder holding the real SDK's "clearml" package. When
// it or its dependencies are missing the test is skipped with the reason,
// or fails when CI=true (CI must run these tests).
func needSDK(t testing.TB) string {
	t.Helper()
	sdkCheckOnce.Do(func() { sdkDirFound, sdkMissing = findSDK() })
	if sdkMissing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("real ClearML SDK: %s", sdkMissing)
		}
		t.Skipf("real ClearML SDK: %s (CI=true makes this a failure)", sdkMissing)
	}
	return sdkDirFound
}

func findSDK() (dir, missing string) {
	root, err := filepath.Abs(filepath.Join("..", "shared", "sdk"))
	if err != nil {
		return "", err.Error()
	}
	found, _ := filepath.Glob(filepath.Join(root, "clearml-*", "clearml", "__init__.py"))
	if len(found) == 0 {
		return "", "no " + filepath.Join(root, "clearml-*") + " folder; see ../shared/sdk/README.md"
	}
	sort.Strings(found)
	dir = filepath.Dir(filepath.Dir(found[len(found)-1]))
	if _, err := os.Stat(sdkPython); err != nil {
		return "", sdkPython + " is missing (the SDK tests run tasks with Debian's python3)"
	}
	probe := "import " + strings.Join(sdkDeps, ", ")
	cmd := exec.Command(sdkPython, "-c", probe)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PYTHONDONTWRITEBYTECODE=1"}
	if out, err := cmd.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return "", fmt.Sprintf("%s cannot import the SDK's dependencies (%s); install the Debian packages listed in .ci/run",
			sdkPython, lines[len(lines)-1])
	}
	return dir, ""
}

// sdkPyCache keeps compiled SDK modules out of the read-only shared folder
// and across runs (about 18 MB, bounded: only fixed paths are compiled).
func sdkPyCache() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "clearml-agent-tests", "sdk-pycache")
}

// sdkRig is a stand-in API server, a files server, and the agent's
// environment and configuration for running real SDK tasks.
type sdkRig struct {
	s    *fakeserver.Server
	fs   *fakeserver.FileServer
	env  map[string]string // the agent's environment
	home string
	conf string // the agent's clearml.conf
}

// sdkRoundTrip holds configuration values that must reach the SDK exactly
// as written (issue 11 §4); they sit in the agent's config under
// sdk.e2e_roundtrip.
var sdkRoundTrip = map[string]string{
	"query":     "https://files.example.com/out?a=1&b=2",
	"angle":     "<b>bold</b> & <i>",
	"quotes":    `say "hi" and 'bye'`,
	"backslash": `C:\path\to\file \n not a newline`,
	"unicode":   "naïve café – 日本語 ✓",
	"newline":   "line one\nline two\ttab",
	"secretish": "s3cr&t<key>",
	"specials":  "${HOME} # not a comment // nor this {braces} [list] = : , 🚀",
}

// newSDKRig starts the servers and writes the agent's configuration: the
// task runs Debian's python3 in a venv with the system site packages, and
// the SDK plus the pathlib2 shim on PYTHONPATH through environment {}.
func newSDKRig(t *testing.T) *sdkRig {
	t.Helper()
	sdk := needSDK(t)
	shim, err := filepath.Abs(filepath.Join("testdata", "sdk"))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t)
	fs := fakeserver.NewFileServer()
	fs.RequireAuth(s)
	if _, err := fs.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	env := executeEnv(t, s)
	var rt strings.Builder
	keys := make([]string, 0, len(sdkRoundTrip))
	for k := range sdkRoundTrip {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&rt, "  %s: %s\n", k, hoconQuote(sdkRoundTrip[k]))
	}
	// The SDK needs a web server address for its links (it never calls it).
	conf := fmt.Sprintf(`api.files_server: %s
api.web_server: %s
agent {
  python_binary: %s
  package_manager.system_site_packages: true
}
environment {
  PYTHONPATH: %s
  PYTHONPYCACHEPREFIX: %s
}
sdk.e2e_roundtrip {
%s}
`, hoconQuote(fs.URL()), hoconQuote(s.URL()), hoconQuote(sdkPython), hoconQuote(sdk+string(os.PathListSeparator)+shim),
		hoconQuote(sdkPyCache()), rt.String())
	path := filepath.Join(env["HOME"], "clearml.conf")
	writeFile(t, path, conf)
	return &sdkRig{s: s, fs: fs, env: env, home: env["HOME"], conf: path}
}

// appendConf adds text to the agent's clearml.conf.
func (r *sdkRig) appendConf(t *testing.T, text string) {
	t.Helper()
	f, err := os.OpenFile(r.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(text + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// hoconQuote writes s as a HOCON quoted string (JSON string syntax, with
// <, > and & left as they are).
func hoconQuote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// sdkTaskRepo commits the given scripts of testdata/sdk into a task repo.
func sdkTaskRepo(t testing.TB, scripts ...string) string {
	t.Helper()
	files := map[string]string{}
	for _, name := range scripts {
		b, err := os.ReadFile(filepath.Join("testdata", "sdk", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	repo, _ := makeTaskRepo(t, files)
	return repo
}

// agentEnv is the agent's environment plus extra variables (which the
// task inherits).
func (r *sdkRig) agentEnv(extra map[string]string) map[string]string {
	env := map[string]string{}
	for k, v := range r.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// addSDKTask adds a queued task that runs entry from repo with python3.
func (r *sdkRig) addSDKTask(repo, entry, name string) string {
	id := r.s.AddTask(fakeserver.TaskSpec{Name: name, Project: r.s.AddProject("sdk e2e"),
		Script: &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: "python3"}})
	if err := r.s.Enqueue(id, fakeserver.DefaultQueueName); err != nil {
		panic(err)
	}
	return id
}

// call sends one API request as a UI user would (Basic auth) and fails the
// test unless the server answers 200.
func (r *sdkRig) call(t testing.TB, endpoint string, body map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, r.s.URL()+"/"+endpoint, bytes.NewReader(b))
	req.SetBasicAuth(fakeserver.TestsAccessKey, fakeserver.TestsSecretKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	var env struct {
		Meta struct {
			ResultMsg string `json:"result_msg"`
		} `json:"meta"`
		Data map[string]any `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d %s (%v)", endpoint, resp.StatusCode, env.Meta.ResultMsg, err)
	}
	return env.Data
}

// sdkScalars returns the training_stats_scalar events of a task for one
// metric/variant, by iteration.
func sdkScalars(s *fakeserver.Server, id, metric, variant string) map[int64]float64 {
	out := map[int64]float64{}
	for _, ev := range s.Events(id) {
		if ev["type"] != "training_stats_scalar" || ev["metric"] != metric || ev["variant"] != variant {
			continue
		}
		it, _ := ev["iter"].(int64)
		var v float64
		switch x := ev["value"].(type) {
		case json.Number:
			v, _ = x.Float64()
		case float64:
			v = x
		}
		out[it] = v
	}
	return out
}

// taskProcs lists the live (non-zombie) processes whose environment holds
// CLEARML_TASK_ID=id: the task's whole tree, even processes that left its
// process group.
func taskProcs(id string) []int {
	needle := []byte("CLEARML_TASK_ID=" + id + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid := 0
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
				continue
			}
		}
		environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(append([]byte{0}, environ...), append([]byte{0}, needle...)) {
			out = append(out, pid)
		}
	}
	return out
}
