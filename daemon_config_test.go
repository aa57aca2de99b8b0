package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tasks run with the configuration the daemon started with; with
// agent.reload_config an edited file reaches the next task.
func TestDaemonReloadConfig(t *testing.T) {
	repo, _ := makeTaskRepo(t, map[string]string{"mark.py": "import os\nprint('MARK=' + os.environ.get('MARK', ''))\n"})
	for _, reload := range []bool{false, true} {
		s := startServer(t)
		env := executeEnv(t, s)
		conf := filepath.Join(env["HOME"], "clearml.conf")
		writeFile(t, conf, "agent.reload_config: "+strconv.FormatBool(reload)+"\nenvironment { MARK: before }\n")
		p := startDaemon(t, env, "--queue", "default")
		first := enqueueScript(t, s, repo, "mark.py", "default")
		waitStatus(t, s, p, first, "completed", 90*time.Second)
		writeFile(t, conf, "agent.reload_config: "+strconv.FormatBool(reload)+"\nenvironment { MARK: after-edit }\n")
		second := enqueueScript(t, s, repo, "mark.py", "default")
		waitStatus(t, s, p, second, "completed", 90*time.Second)
		p.stop(t)
		want := "MARK=before\n"
		if reload {
			want = "MARK=after-edit\n"
		}
		if log := s.TaskLogText(second); !strings.Contains(log, want) {
			t.Errorf("reload_config %v: the task after the edit lacks %q:\n%s", reload, want, log)
		}
		if !strings.Contains(s.TaskLogText(first), "MARK=before\n") {
			t.Errorf("reload_config %v: the first task did not get the configuration", reload)
		}
		if got := strings.Contains(p.out.String(), "Config file change detected"); got != reload {
			t.Errorf("reload_config %v: change logged %v:\n%s", reload, got, p.out.String())
		}
	}
}
