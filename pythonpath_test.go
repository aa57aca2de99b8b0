package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// agent.force_git_root_python_path puts the repository's root on
// PYTHONPATH instead of the script's folder; TRAINS_AGENT_EXTRA_PYTHON_PATH
// is the twin of CLEARML_AGENT_EXTRA_PYTHON_PATH.
func TestExecutePythonPathKeys(t *testing.T) {
	s := startServer(t)
	extra := t.TempDir()
	writeFile(t, filepath.Join(extra, "extramod.py"), "X = 1\n")
	repo, _ := makeTaskRepo(t, map[string]string{
		"rootmod.py": "R = 1\n",
		"sub/train.py": `import os, importlib.util as u
print("PYTHONPATH=" + os.environ.get("PYTHONPATH", ""))
print("rootmod:", u.find_spec("rootmod") is not None, "extramod:", u.find_spec("extramod") is not None)
`,
	})
	run := func(conf string, vars map[string]string) string {
		t.Helper()
		id := s.AddTask(fakeserver.TaskSpec{Name: "pythonpath", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", WorkingDir: "sub", Binary: "python3"}})
		s.Enqueue(id, fakeserver.DefaultQueueName)
		env := executeEnv(t, s)
		for k, v := range vars {
			env[k] = v
		}
		writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), conf)
		if r := runAgent(t, env, "execute", "--id", id); r.code != 0 {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		return s.TaskLogText(id)
	}
	log := run("", map[string]string{"TRAINS_AGENT_EXTRA_PYTHON_PATH": extra})
	if !strings.Contains(log, "rootmod: False extramod: True") {
		t.Errorf("default (script folder, TRAINS_AGENT_EXTRA_PYTHON_PATH): %s", log)
	}
	log = run("agent.force_git_root_python_path: true", nil)
	if !strings.Contains(log, "rootmod: True extramod: False") {
		t.Errorf("force_git_root_python_path: %s", log)
	}
	for _, l := range strings.Split(log, "\n") {
		if p, ok := strings.CutPrefix(l, "PYTHONPATH="); ok && strings.HasSuffix(p, "/sub") {
			t.Errorf("force_git_root_python_path still adds the script folder: %s", p)
		}
	}
}
