package main

// End-to-end tests of Poetry and uv projects (issue 13, part 3): Debian's
// poetry against the loopback index, and uv through the recording stand-in
// (testdata/uvstandin: uv cannot be installed here; it rejects what uv
// rejects).

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// pyDirFiles reads every file under dir into a map for makeTaskRepo.
func pyDirFiles(t *testing.T, dir, prefix string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.Join(prefix, rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestPythonPoetryE2E: a Poetry project is installed by poetry into the
// task's venv and runs from it; poetry_version installs that Poetry into
// a venv of its own; CLEARML_AGENT_FORCE_POETRY with
// poetry_files_from_repo_working_dir finds the project in the working dir.
func TestPythonPoetryE2E(t *testing.T) {
	pyNeedPoetry(t)
	x := pyE2E(t)
	s := startServer(t)
	proj := t.TempDir()
	pyTestPoetryProject(t, proj, x.URL("/simple/"), map[string]string{"venvdemo": "1.0"})
	repo, _ := makeTaskRepo(t, pyDirFiles(t, proj, ""))
	env := pyE2EEnv(t, s, x, `agent.package_manager { type: poetry, poetry_version: "1.2.9", poetry_install_extra_args: ["-v"] }`)
	id := pyTask(s, repo, "main.py", "python3", "nosuchpkg==1.0") // ignored: the lock file wins
	r, task, log := pyRun(t, s, env, id)
	venv := runDirIn(t, log, env["HOME"], id) + "/venv"
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "POETRY 1.0 "+venv+"\n") {
		t.Fatalf("exit %d, %s (%s): want the task in %s\n%s", r.code, task.Status, task.StatusReason, venv, log)
	}
	// poetry_version: poetry 1.2.9 in a venv of its own (kept with the
	// shared venv kits, so it may come from an earlier run).
	for _, want := range []string{`poetry_version "==1.2.9"`, "Poetry Enabled: Ignoring requested python packages",
		"/.tools/poetry-", "/bin/poetry install -n -v\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if f := pyFrozen(task); !strings.Contains(f, "venvdemo==1.0") {
		t.Errorf("set_requirements (poetry show):\n%s", f)
	}

	sub := t.TempDir()
	pyTestPoetryProject(t, sub, x.URL("/simple/"), map[string]string{"venvdemo": "2.0"})
	repo2, _ := makeTaskRepo(t, pyDirFiles(t, sub, "app"))
	env = pyE2EEnv(t, s, x, "agent.package_manager.poetry_files_from_repo_working_dir: true\n")
	env["CLEARML_AGENT_FORCE_POETRY"] = "1"
	id = s.AddTask(fakeserver.TaskSpec{Name: "poetry-wd", Script: &fakeserver.Script{Repository: repo2, EntryPoint: "main.py", WorkingDir: "app", Binary: "python3"}})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	r, task, log = pyRun(t, s, env, id)
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "POETRY 2.0 ") || !strings.Contains(log, "Notice: poetry was found") {
		t.Fatalf("forced, working dir: exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
	}
}

// TestPythonUVProjectE2E: a uv project is synced (--locked with a uv.lock,
// uv_sync_extra_args, the extra indexes, UV_INDEX_STRATEGY with
// uv_unsafe_best_match) and the task runs through `uv run`; without project
// files uv_replace_pip installs with `uv pip`; conda is said to run as pip.
func TestPythonUVProjectE2E(t *testing.T) {
	x := pyE2E(t)
	bin, uvLog := pyTestUV(t)
	s := startServer(t)
	const pyproject = `[project]
name = "demo-app"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["venvdemo>=1"]

[dependency-groups]
dev = ["venvdep"]
`
	const lock = "version = 1\nrevision = 3\n\n[[package]]\nname = \"demo-app\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\n\n" +
		"[[package]]\nname = \"venvdemo\"\nversion = \"1.0\"\nsource = { registry = \"standin\" }\n"
	const main = "import os, sys, venvdemo, importlib.util\nprint('UV', venvdemo.VERSION, sys.prefix, importlib.util.find_spec('venvdep') is not None)\n"
	repo, _ := makeTaskRepo(t, map[string]string{"pyproject.toml": pyproject, "uv.lock": lock, "main.py": main})
	cpu := x.URL("/whl/cpu/")
	env := pyE2EEnv(t, s, x, `agent.package_manager { type: uv, uv_version: ">0.4", uv_sync_extra_args: ["--no-dev"], uv_run_extra_args: ["--no-dev"],
  uv_unsafe_best_match: true, extra_index_url: ["`+cpu+`"] }`)
	env["PATH"] = bin + string(os.PathListSeparator) + os.Getenv("PATH")
	env["UV_STANDIN_LOG"] = uvLog
	id := pyTask(s, repo, "main.py", "python3", "nosuchpkg==1.0") // ignored: the lock file wins
	r, task, log := pyRun(t, s, env, id)
	checkout := runDirIn(t, log, env["HOME"], id) + "/task_repository/repo.git"
	venv := filepath.Join(checkout, ".venv")
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "UV 1.0 "+venv+" False\n") {
		t.Fatalf("exit %d, %s (%s): want venvdemo 1.0 (the lock) in %s, no dev group\n%s", r.code, task.Status, task.StatusReason, venv, log)
	}
	calls := pyTestUVCalls(t, uvLog)
	var argvs []string
	for _, c := range calls {
		argvs = append(argvs, strings.Join(c.Argv, " "))
	}
	want := []string{"--version", "sync --locked --no-dev --extra-index-url " + cpu, "pip freeze --python " + venv + "/bin/python",
		"run --no-dev --python " + venv + "/bin/python python -u main.py"}
	if strings.Join(argvs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("uv calls:\n%s\nwant:\n%s", strings.Join(argvs, "\n"), strings.Join(want, "\n"))
	}
	sync := calls[1]
	if sync.Dir != checkout || sync.Env["UV_INDEX_STRATEGY"] != "unsafe-best-match" || sync.Env["UV_CACHE_DIR"] == "" || sync.Env["UV_PYTHON"] == "" {
		t.Errorf("sync: dir %s env %v", sync.Dir, sync.Env)
	}
	if f := pyFrozen(task); !strings.Contains(f, "venvdemo==1.0") {
		t.Errorf("set_requirements:\n%s", f)
	}

	// No project files: uv_replace_pip makes uv the installer; without
	// it (and for conda, said once) pip installs.
	plain, _ := makeTaskRepo(t, map[string]string{"t.py": "import venvdemo\nprint('PLAIN', venvdemo.VERSION)\n"})
	os.Remove(uvLog)
	env = pyE2EEnv(t, s, x, "agent.package_manager { type: uv, uv_replace_pip: true }\n")
	env["PATH"] = bin + string(os.PathListSeparator) + os.Getenv("PATH")
	env["UV_STANDIN_LOG"] = uvLog
	r, task, log = pyRun(t, s, env, pyTask(s, plain, "t.py", "python3", "venvdemo==1.0"))
	calls = pyTestUVCalls(t, uvLog)
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "PLAIN 1.0") || len(calls) < 3 ||
		calls[0].Argv[0] != "venv" || strings.Join(calls[1].Argv[:3], " ") != "pip install --python" {
		t.Errorf("uv_replace_pip: exit %d, %s (%s), calls %+v\n%s", r.code, task.Status, task.StatusReason, calls, log)
	}
	env = pyE2EEnv(t, s, x, "agent.package_manager.type: conda\n")
	r, task, log = pyRun(t, s, env, pyTask(s, plain, "t.py", "python3", "venvdemo==1.0"))
	if r.code != 0 || task.Status != "completed" || strings.Count(log, "this agent does not run conda; it installs the task's requirements with pip") != 1 {
		t.Errorf("conda: exit %d, %s\n%s", r.code, task.Status, log)
	}
}

// runDirIn is the run's own folder (<venvs_dir>/<task id>.<random>) as
// the task log names it.
func runDirIn(t *testing.T, log, home, id string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(filepath.Join(home, ".clearml", "venvs-builds", id)) + `\.[0-9]+`)
	dir := re.FindString(log)
	if dir == "" {
		t.Fatalf("no run folder of task %s in the log:\n%s", id, log)
	}
	return dir
}
