package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// TestExecuteTaskGetsNoAgentSecrets (issue 11 §5, issue 12 §10): the task's
// environment and private config carry none of the agent's secrets (API
// keys, git credentials from the config, the environment or a daemon) nor
// its internal variables; the task's Environment parameters override the
// agent's variables; PYTHONIOENCODING=utf-8 under the C locale.
func TestExecuteTaskGetsNoAgentSecrets(t *testing.T) {
	const gitPass, confGitPass, indexSecret = "env-git-Passw0rd", "conf-git-Passw0rd", "idx-t0ken"
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"env.py": `import os
conf = open(os.environ["CLEARML_CONFIG_FILE"]).read()
bad = [k for k in os.environ if k.endswith(("API_ACCESS_KEY", "API_SECRET_KEY", "AGENT_GIT_PASS", "AGENT_GIT_USER", "AGENT_DAEMON_CHILD"))]
print("forbidden env:", sorted(bad))
print("git pass anywhere:", any(p in v for v in list(os.environ.values()) + [conf] for p in ["` + gitPass + `", "` + confGitPass + `", "` + indexSecret + `"]))
print("agent section:", '"agent"' in conf)
print("api secret in conf:", "` + fakeserver.TestsSecretKey + `" in conf)
print("log level:", os.environ.get("CLEARML_LOG_LEVEL"), os.environ.get("TRAINS_LOG_LEVEL"))
print("io encoding:", os.environ.get("PYTHONIOENCODING"))
`})
	id := s.AddTask(fakeserver.TaskSpec{Script: &fakeserver.Script{Repository: repo, EntryPoint: "env.py", Binary: "python3"},
		Hyperparams: map[string]map[string]string{"Environment": {"CLEARML_LOG_LEVEL": "DEBUG"}}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["CLEARML_AGENT_GIT_USER"] = "alice"
	env["CLEARML_AGENT_GIT_PASS"] = gitPass
	env["CLEARML_AGENT_DAEMON_CHILD"] = "0"
	writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), `agent { enable_task_env: true, git_user: bob, git_pass: "`+confGitPass+`"
  package_manager.extra_index_url: ["https://u:`+indexSecret+`@pypi.example/simple"] }
`)
	r := runAgent(t, env, "execute", "--id", id, "--log-level", "warning")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	log := s.TaskLogText(id)
	for _, want := range []string{"forbidden env: []", "git pass anywhere: False", "agent section: False",
		"api secret in conf: True", "log level: DEBUG DEBUG", "io encoding: utf-8"} {
		if !strings.Contains(log, want+"\n") {
			t.Errorf("task output lacks %q:\n%s", want, log)
		}
	}
}
