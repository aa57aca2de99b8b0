package main

// End-to-end tests: build the static binary once, then run it the way a
// user would, against the stand-in server.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clearml-agent-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "clearml-agent")
	if prebuilt := os.Getenv("CLEARML_AGENT_TEST_BINARY"); prebuilt != "" {
		// A compiled test binary on a machine without Go (the GPU device check).
		agentBin = prebuilt
	} else {
		build := exec.Command("go", "build", "-trimpath", "-o", agentBin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the agent: %v\n%s(set CLEARML_AGENT_TEST_BINARY to a built agent where Go is missing)\n", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	stopSlurmTestCluster()
	stopSharedPrometheus()
	os.RemoveAll(dir)
	os.Exit(code)
}

type runResult struct {
	code           int
	stdout, stderr string
}

// runAgent runs the binary with only the given environment (plus PATH), so
// the developer's own ~/clearml.conf never leaks into a test.
func runAgent(t testing.TB, env map[string]string, args ...string) runResult {
	t.Helper()
	r, err := execAgent(agentEnv(t, env), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runAgentAsync runs the agent in the background; its result arrives on
// the channel. A failure to start it is reported with t.Error (t.Fatal
// belongs to the test's own goroutine) and gives exit code -1.
func runAgentAsync(t testing.TB, env map[string]string, args ...string) <-chan runResult {
	cmdEnv := agentEnv(t, env)
	done := make(chan runResult, 1)
	go func() {
		r, err := execAgent(cmdEnv, "", args...)
		if err != nil {
			t.Error(err)
			r.code = -1
		}
		done <- r
	}()
	return done
}

// agentEnv is the agent's whole environment: PATH, env, and HOME at a
// temp dir unless env sets it.
func agentEnv(t testing.TB, env map[string]string) []string {
	cmdEnv := []string{"PATH=" + os.Getenv("PATH")}
	if _, ok := env["HOME"]; !ok {
		cmdEnv = append(cmdEnv, "HOME="+t.TempDir())
	}
	for k, v := range env {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	return cmdEnv
}

// execAgent runs the agent with stdin ("": none) to its end; the error is a failure
// to run it at all (an exit status is the result's code).
func execAgent(env []string, stdin string, args ...string) (runResult, error) {
	cmd := exec.Command(agentBin, args...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return runResult{}, err
	}
	return runResult{code, out.String(), errb.String()}, nil
}

// oneErrorLine checks the stderr of a failed run: one line, the prefix, a needle.
func oneErrorLine(t *testing.T, r runResult, needle string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "clearml-agent: error: ") || !strings.Contains(lines[0], needle) {
		t.Errorf("stderr = %q; want one 'clearml-agent: error:' line containing %q", r.stderr, needle)
	}
}

func TestCLIUsageAndExitCodes(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // substring of stdout, when code is 0
		stderr string // substring of the one error line otherwise
	}{
		{nil, 0, "usage: clearml-agent", ""},
		{[]string{"--help"}, 0, "{execute,build,list,daemon,config,k8s,slurm,init,install-bootstrap}", ""},
		{[]string{"-h"}, 0, "CLEARML-AGENT AI Orchestration DevOps", ""},
		{[]string{"--version"}, 0, "CLEARML-AGENT version " + agentVersion, ""},
		{[]string{"daemon", "-h"}, 0, "--child-report-tags", ""},
		{[]string{"execute", "--help"}, 0, "--require-queue", ""},
		{[]string{"build", "-h"}, 0, "--install-globally", ""},
		{[]string{"list", "-h"}, 0, "usage: clearml-agent list [-h]", ""},
		{[]string{"config", "-h"}, 0, "usage: clearml-agent config [-h]", ""},
		{[]string{"daemon", "--bogus"}, 2, "", "unrecognized arguments: --bogus"},
		{[]string{"daemon", "--docker", "img", "--ipc=host"}, 2, "", "unrecognized arguments: --ipc=host"},
		{[]string{"execute"}, 2, "", "the following arguments are required: --id"},
		{[]string{"nope"}, 2, "", "invalid choice: 'nope'"},
		{[]string{"--config-file", "/does/not/exist.conf", "list"}, 1, "", "could not open configuration file /does/not/exist.conf"},
		{[]string{"execute", "--id", "abc"}, 1, "", "no ClearML API server configured"},
		{[]string{"execute", "--id", "abc", "--docker"}, 1, "", "no ClearML API server configured"},
		{[]string{"daemon", "--queue", "default"}, 1, "", "no ClearML API server configured"},
		{[]string{"daemon", "--dynamic-gpus", "--queue", "a=1"}, 2, "", "--gpus"},
		{[]string{"daemon", "--uptime", "1-2 MON", "--downtime", "3-4 TUE"}, 2, "", "uptime"},
		{[]string{"build", "--id", "abc"}, 1, "", "no ClearML API server configured"},
		{[]string{"init"}, 1, "", "no credentials given"}, // stdin is /dev/null
		{[]string{"build", "--id", "x", "--entry-point", "reuse_task"}, 2, "", "add --docker"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runAgent(t, nil, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			if tt.code == 0 {
				if !strings.Contains(r.stdout, tt.stdout) || r.stderr != "" {
					t.Errorf("stdout %q lacks %q (stderr %q)", r.stdout, tt.stdout, r.stderr)
				}
				return
			}
			oneErrorLine(t, r, tt.stderr)
		})
	}
}

func TestCLIList(t *testing.T) {
	s := startServer(t)
	r := runAgent(t, serverEnv(s), "list")
	if r.code != 0 || r.stdout != "workers: []\n\n" {
		t.Fatalf("empty list: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	c := testClient(t, s.URL(), nil, clientOptions{workerID: "gpu-box:gpu0"})
	ctx := context.Background()
	if err := c.call(ctx, "workers.register", "", map[string]any{"worker": "gpu-box:gpu0", "queues": []string{s.DefaultQueueID()}}, nil); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, serverEnv(s), "list")
	if r.code != 0 {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"workers:\n- company:\n    id: " + fakeserver.DefaultCompanyID + "\n",
		"  id: gpu-box:gpu0\n",
		"  queues:\n  - id: " + s.DefaultQueueID() + "\n",
		"    name: default\n    num_tasks: 0\n",
		"  register_time: '",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list output lacks %q:\n%s", want, r.stdout)
		}
	}
	reqs := s.RequestsTo("workers.get_all")
	if last := reqs[len(reqs)-1]; last.Path != "/workers.get_all" || string(last.Body) != `{"last_seen":0}` {
		t.Errorf("list sent %s %s", last.Path, last.Body)
	}
}

func TestCLIListFailures(t *testing.T) {
	s := startServer(t)
	bad := serverEnv(s)
	bad["CLEARML_API_SECRET_KEY"] = "not-the-secret-123"
	r := runAgent(t, bad, "list")
	if r.code != 1 || strings.Contains(r.stderr+r.stdout, "not-the-secret-123") {
		t.Errorf("bad credentials: exit %d, output %q %q", r.code, r.stdout, r.stderr)
	}
	oneErrorLine(t, r, `rejected access key "`+fakeserver.TestsAccessKey+`"`)
	// The daemon says the same, and no hint about queues.
	r = runAgent(t, bad, "daemon", "--queue", "default", "--foreground")
	oneErrorLine(t, r, `rejected access key "`+fakeserver.TestsAccessKey+`"`)
	if r.code != 1 || strings.Contains(r.stderr, "create-queue") {
		t.Errorf("daemon with bad credentials: exit %d, %q", r.code, r.stderr)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	env := serverEnv(s)
	env["CLEARML_API_HOST"] = "http://" + addr
	r = runAgent(t, env, "list")
	if r.code != 1 {
		t.Errorf("unreachable: exit %d", r.code)
	}
	oneErrorLine(t, r, "cannot reach the ClearML API server at http://"+addr+": connection refused (check api.api_server in ~/clearml.conf or CLEARML_API_HOST)")

	r = runAgent(t, map[string]string{}, "list")
	if r.code != 1 {
		t.Errorf("no server configured: exit %d", r.code)
	}
	oneErrorLine(t, r, "no ClearML API server configured")
}

func TestCLIConfig(t *testing.T) {
	home := t.TempDir()
	conf := writeFile(t, filepath.Join(home, "clearml.conf"), `
api {
  api_server: "http://file-host:8008"
  credentials { "access_key": "FILEKEY", "secret_key": "file-secret-value" }
}
agent.git_pass: "git-secret-value"
agent.package_manager.type: pip
`)
	r := runAgent(t, map[string]string{
		"HOME": "" + home,
		"CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE": "uv",
		"CLEARML_API_HOST":                            "http://env-host:8008",
		"CLEARML_AUTH_TOKEN":                          "env-token-value",
	}, "config")
	if r.code != 0 {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	header := "Current configuration (clearml_agent v" + agentVersion + ", location: " + conf + "):\n----------------------\n"
	if !strings.HasPrefix(r.stdout, header) || !strings.HasSuffix(r.stdout, "\n\n") {
		t.Errorf("output framing:\n%s", r.stdout)
	}
	for _, want := range []string{
		"api.api_server = http://env-host:8008\n",
		"api.credentials.access_key = FILEKEY\n",
		"api.credentials.secret_key = ****\n",
		"agent.git_pass = ****\n",
		"agent.package_manager.type = uv\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	for _, secret := range []string{"file-secret-value", "git-secret-value", "env-token-value"} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("config output leaks %q", secret)
		}
	}

	// A malformed file gives one line naming file, line and column.
	writeFile(t, conf, "api {\n  api_server = \"http://x\n}\n")
	r = runAgent(t, map[string]string{"HOME": home}, "config")
	if r.code != 1 {
		t.Errorf("malformed: exit %d", r.code)
	}
	oneErrorLine(t, r, conf+":2:")

	// --config-file names the only file read.
	other := writeFile(t, filepath.Join(t.TempDir(), "other.conf"), "agent.worker_name: other-name\n")
	r = runAgent(t, map[string]string{"HOME": home}, "--config-file", other, "config")
	if r.code != 0 || !strings.Contains(r.stdout, "location: "+other+")") || !strings.Contains(r.stdout, "agent.worker_name = other-name\n") {
		t.Errorf("--config-file: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}
