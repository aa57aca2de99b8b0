package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// The Task.init() patch goes after the __future__ imports, once.
func TestExecuteTaskInitPatch(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"print(1)\n", "from clearml import Task\n(__name__ != \"__main__\") or Task.init()\nprint(1)\n"},
		{"\"\"\"doc\n\"\"\"\n# c\nfrom __future__ import annotations\nfrom __future__ import (division,\n  print_function)\nimport os\n",
			"\"\"\"doc\n\"\"\"\n# c\nfrom __future__ import annotations\nfrom __future__ import (division,\n  print_function)\nfrom clearml import Task\n(__name__ != \"__main__\") or Task.init()\nimport os\n"},
		{"from __future__ import annotations", "from __future__ import annotations\nfrom clearml import Task\n(__name__ != \"__main__\") or Task.init()\n"},
	} {
		p := writeFile(t, filepath.Join(t.TempDir(), "x.py"), tc.in)
		var log strings.Builder
		patchTaskInit(p, &log)
		patchTaskInit(p, &log) // a second time changes nothing
		if got, _ := os.ReadFile(p); string(got) != tc.want {
			t.Errorf("patched %q:\n%s\nwant:\n%s", tc.in, got, tc.want)
		}
		if !strings.Contains(log.String(), "already patched") {
			t.Errorf("the second patch was not refused:\n%s", log.String())
		}
	}
}

// CLEARML_AGENT_FORCE_TASK_INIT ("Add Task.init" in the web UI): the
// script calls Task.init() first, and clearml is installed for it.
func TestExecuteForceTaskInit(t *testing.T) {
	s := startServer(t)
	house := t.TempDir()
	pyTestWheel(t, house, pyWheel{Name: "clearml", Version: "9.9.9", Files: map[string]string{
		"clearml/__init__.py": "class Task:\n    @staticmethod\n    def init(*a, **k):\n        print('STANDIN TASK INIT', flush=True)\n"}})
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "\"\"\"A script.\"\"\"\nfrom __future__ import annotations\nprint('script body')\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "force init", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3",
		Requirements: map[string]any{"pip": "# nothing\n"}}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	env := executeEnv(t, s)
	env["CLEARML_AGENT_FORCE_TASK_INIT"] = "1"
	writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), "agent.package_manager { no_index: true, find_links: [\""+house+"\"], pip_version: [] }\n")
	r := runAgent(t, env, "execute", "--id", id)
	log := s.TaskLogText(id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, log, r.stderr)
	}
	i, j := strings.Index(log, "STANDIN TASK INIT"), strings.Index(log, "script body")
	if i < 0 || j < i {
		t.Errorf("Task.init() did not run before the script:\n%s", log)
	}
	for _, want := range []string{"Force clearml Task.init patch adding clearml package to requirements", "Force clearml Task.init patch adding to entry point script"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}
