package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// CLEARML_AGENT_EXEC_USER runs the task as that user, with that user's
// home and caches (needs root: useradd makes the user).
func TestExecuteExecUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a task as another user needs root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd is not installed")
	}
	name := fmt.Sprintf("clmtask%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-r", name).Run() })
	home := "/home/" + name
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"who.py": `import os, pwd, re, sys
conf = open(os.environ["CLEARML_CONFIG_FILE"]).read()  # HOCON; the one value this needs
cache = re.search(r'default_base_dir"?\s*[:=]\s*"?([^"\n]+)"?', conf).group(1)
os.makedirs(cache, exist_ok=True)
open(os.path.join(cache, "probe"), "w").write("x")
open("written-in-cwd", "w").write("x")
print("WHO", pwd.getpwuid(os.getuid()).pw_name, os.getgid() == pwd.getpwuid(os.getuid()).pw_gid, os.environ["HOME"], cache, sys.executable.startswith(os.environ["HOME"]))
`})
	id := addScriptTask(s, repo, "who.py")
	env := executeEnv(t, s)
	delete(env, "CLEARML_AGENT__AGENT__VENVS_CACHE__PATH") // the user's own cache, under their home
	env["PATH"] = "/usr/local/bin:/usr/bin:/bin"           // an interpreter every user can run
	env["CLEARML_AGENT_EXEC_USER"] = name
	r := runAgent(t, env, "execute", "--id", id)
	log := s.TaskLogText(id)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, log, r.stderr)
	}
	want := "WHO " + name + " True " + home + " " + home + "/.clearml/cache True"
	if !strings.Contains(log, want) {
		t.Errorf("the task log lacks %q:\n%s", want, log)
	}
	st, err := os.Stat(filepath.Join(home, ".clearml", "cache", "probe"))
	if err != nil || st.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Errorf("the SDK cache file is not the user's: %v", err)
	}
	if task := taskStatus(t, s, id); task.Status != "completed" {
		t.Errorf("status %s (%s)", task.Status, task.StatusReason)
	}
	// An unknown user: a clear setup failure.
	id = addScriptTask(s, repo, "who.py")
	env["CLEARML_AGENT_EXEC_USER"] = "no-such-user-here"
	if r := runAgent(t, env, "execute", "--id", id); r.code == 0 || !strings.Contains(taskStatus(t, s, id).StatusReason, "no user \"no-such-user-here\"") {
		t.Errorf("unknown user: exit %d, reason %q", r.code, taskStatus(t, s, id).StatusReason)
	}
}
