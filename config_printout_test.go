package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// printoutSecrets is a configuration whose secrets hide in every place the
// sanitizer knows: key names, the environment section, URLs, docker -e.
const printoutSecrets = `
agent {
  git_user: "alice"
  git_pass: "git-Pass-Value-1"
  package_manager.extra_index_url: ["https://bob:Index-Pass-Value-2@pypi.example.com/simple"]
  extra_docker_arguments: ["-e", "MY_SECRET=Docker-Secret-Value-3", "--ipc=host"]
  custom_token: "Token-Value-4"
}
environment { SOME_VAR: "Env-Value-5" }
`

var printoutSecretValues = []string{"git-Pass-Value-1", "Index-Pass-Value-2", "Docker-Secret-Value-3", "Token-Value-4", "Env-Value-5"}

// checkPrintout finds the printout in text: its header and sanitized lines,
// and none of the secrets (the API secret included).
func checkPrintout(t *testing.T, where, text, location string) {
	t.Helper()
	header := "Current configuration (clearml_agent v" + agentVersion + ", location: " + location + "):\n----------------------\n"
	if strings.Count(text, header) != 1 {
		t.Errorf("%s: want the printout header once, %q:\n%s", where, header, text)
	}
	for _, want := range []string{"agent.git_user = alice\n", "agent.git_pass = ****\n", "agent.custom_token = ****\n",
		"environment.SOME_VAR = ****\n", "agent.package_manager.extra_index_url.0 = https://bob:********@pypi.example.com/simple\n",
		"agent.extra_docker_arguments.1 = MY_SECRET\\=********\n", "agent.extra_docker_arguments.2 = --ipc\\=host\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("%s: the printout lacks %q", where, want)
		}
	}
	for _, secret := range append(printoutSecretValues, fakeserver.TestsSecretKey) {
		if secret != "" && strings.Contains(text, secret) {
			t.Errorf("%s: secret %q printed", where, secret)
		}
	}
}

func TestExecuteConfigPrintout(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('task ran')\n"})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	conf := writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), printoutSecrets)
	r := runAgent(t, env, "execute", "--id", id)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	// In the task's console on the server, before the setup.
	checkPrintout(t, "task log", log, conf)
	if i, j := strings.Index(log, "Current configuration"), strings.Index(log, "Executing task id"); i < 0 || j < i {
		t.Errorf("the printout does not come before the setup:\n%s", log)
	}
	checkPrintout(t, "stdout", r.stdout, conf)
}

func TestDaemonConfigPrintout(t *testing.T) {
	s := startServer(t)
	env := executeEnv(t, s)
	conf := writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), printoutSecrets)
	p := startDaemon(t, env, "--queue", "default")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), "Listening to queues") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	p.stop(t)
	out := p.out.String()
	checkPrintout(t, "daemon output", out, conf)
	if i, j := strings.Index(out, "Current configuration"), strings.Index(out, "Listening to queues"); i < 0 || j < i {
		t.Errorf("the printout does not come before the queues:\n%s", out)
	}
}

func TestBuildConfigPrintout(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('built')\n"})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	conf := writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), printoutSecrets)
	r := runAgent(t, env, "build", "--id", id, "--target", filepath.Join(t.TempDir(), "env"))
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	checkPrintout(t, "build output", r.stdout+r.stderr, conf)
}
