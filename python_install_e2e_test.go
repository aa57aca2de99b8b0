package main

// End-to-end tests of forgiving installs (issue 13, part 2), the immutable
// venv cache and requirement lines that are not pip options (part 2b).

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// pyLocalBackend is an in-tree PEP 517 backend: a local folder package
// that builds offline, with no setuptools.
const pyLocalBackend = `import base64, hashlib, os, zipfile
NAME, VER = "localpkg", "0.1"

def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = "%s-%s.dist-info" % (NAME, VER)
    files = {
        NAME + "/__init__.py": b"VERSION = '0.1'\n",
        info + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (NAME, VER)).encode(),
        info + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join("%s,%s,%d\n" % (n, _digest(d), len(d)) for n, d in files.items()) + info + "/RECORD,,\n"
    name = "%s-%s-py3-none-any.whl" % (NAME, VER)
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr(info + "/RECORD", record)
    return name
`

// pyInOrder checks that the needles appear in text in this order.
func pyInOrder(t *testing.T, text string, needles ...string) {
	t.Helper()
	at := 0
	for _, n := range needles {
		i := strings.Index(text[at:], n)
		if i < 0 {
			t.Errorf("%q is missing (or out of order) after offset %d", n, at)
			return
		}
		at += i + len(n)
	}
}

// TestPythonForgivingInstallsE2E: what the reference forgives, in its order:
// Cython first for an old Python, priority packages (an optional one that
// cannot install is left out), the main install, post packages (an
// optional one may fail), then local folders; a missing file:// wheel
// falls back to the index; VCS and -e lines outside the checkout and pip
// options are ignored with a warning. A requirement that fails fails the
// task with the line and pip's reason.
func TestPythonForgivingInstallsE2E(t *testing.T) {
	x := pyE2E(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{
		"t.py": "import cython, prio1, venvdemo, venvdep, postpkg, localpkg\n" +
			"print('GOT', cython.VERSION, prio1.VERSION, venvdemo.VERSION, venvdep.VERSION, postpkg.VERSION, localpkg.VERSION)\n",
		"localpkg/pyproject.toml": "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
		"localpkg/backend.py":     pyLocalBackend,
	})
	env := pyE2EEnv(t, s, x, `agent.package_manager { priority_packages: [prio1], post_packages: [postpkg], post_optional_packages: [optpost] }`)
	reqs := strings.Join([]string{
		"prio1==1.0",
		"pygobject",
		"venvdemo==1.0",
		"venvdep @ file:///nonexistent/venvdep-3.1-py3-none-any.whl",
		"postpkg==1.0",
		"optpost==9.9",
		"-e ./localpkg",
		"git+file:///nonexistent/elsewhere.git#egg=elsewhere",
		"-e /nonexistent/outside",
		"--index-url http://127.0.0.1:9/evil/",
	}, "\n")
	// python3.8: the reference installs Cython first for Pythons before 3.9
	// (here the task falls back to the Python there is, with a warning).
	id := pyTask(s, repo, "t.py", "python3.8", reqs)
	r, task, log := pyRun(t, s, env, id)
	if r.code != 0 || task.Status != "completed" {
		t.Fatalf("exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
	}
	if !strings.Contains(log, "GOT 3.0.0 1.0 1.0 3.1 1.0 0.1\n") {
		t.Errorf("the task did not get every package:\n%s", log)
	}
	pyInOrder(t, log, "Successfully installed Cython-3.0.0", "Successfully installed prio1-1.0",
		"optional priority package pygobject did not install", "venvdemo-1.0", "Successfully installed postpkg-1.0",
		`"optpost==9.9" failed`, "Successfully installed localpkg-0.1")
	for _, w := range []string{
		"local file /nonexistent/venvdep-3.1-py3-none-any.whl not found: installing venvdep from the package index",
		`ignoring requirement line "--index-url http://127.0.0.1:9/evil/": pip options are not accepted`,
		`ignoring requirement line "git+file:///nonexistent/elsewhere.git#egg=elsewhere": it points at /nonexistent/elsewhere.git, outside the task's checkout`,
		`ignoring requirement line "-e /nonexistent/outside": it points at /nonexistent/outside, outside the task's checkout`,
	} {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %q", w)
		}
	}
	if strings.Contains(log, "127.0.0.1:9") && strings.Contains(log, "Looking in indexes: http://127.0.0.1:9") {
		t.Error("the task's --index-url line redirected pip")
	}
	if f := pyFrozen(task); !strings.Contains(f, "venvdemo==1.0") || !strings.Contains(f, "localpkg") {
		t.Errorf("set_requirements:\n%s", f)
	}

	for _, c := range []struct{ reqs, line, reason string }{
		{"venvdemo==1.0\nnosuchpkg==9.9", "nosuchpkg==9.9", "No matching distribution found for nosuchpkg==9.9"},
		{"venvdemo==1.0\npostpkg==7.0", "postpkg==7.0", "No matching distribution found for postpkg==7.0"},
	} {
		id := pyTask(s, repo, "t.py", "python3", c.reqs)
		r, task, log := pyRun(t, s, env, id)
		want := fmt.Sprintf("installing %q failed: ", c.line)
		if r.code != 1 || task.Status != "failed" || !strings.Contains(task.StatusReason, want) || !strings.Contains(task.StatusReason, c.reason) {
			t.Errorf("%q: exit %d, %s (%s), want failed with %q and %q\n%s", c.reqs, r.code, task.Status, task.StatusReason, want, c.reason, log)
		}
		if strings.Contains(task.StatusReason, "clearml-requirements-") {
			t.Errorf("the status names the agent's temp file: %s", task.StatusReason)
		}
	}
}

// TestPythonVenvCacheImmutableE2E: a task that pip-installs a package,
// drops a .pth into site-packages and edits installed files (one replaced,
// as editors do, one written in place) leaves the cache entry as it was:
// the next task with the same requirements sees none of it.
func TestPythonVenvCacheImmutableE2E(t *testing.T) {
	x := pyE2E(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{
		"evil.py": `import os, subprocess, sys, sysconfig, venvdemo, venvdemo.extra
sp = sysconfig.get_paths()["purelib"]
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "venvdep==3.1"])
open(os.path.join(sp, "zz_poison.pth"), "w").write("import sys; print('POISONED', file=sys.stderr)\n")
init = venvdemo.__file__
open(init + ".tmp", "w").write(open(init).read() + "RENAMED = True\n")
os.replace(init + ".tmp", init)
try:
    with open(venvdemo.extra.__file__, "a") as f:
        f.write("TAMPERED = True\n")
    print("EDITED in place")
except OSError as e:
    print("EDIT refused:", e)
`,
		"check.py": `import importlib.util, venvdemo, venvdemo.extra
print("RENAMED", hasattr(venvdemo, "RENAMED"), "TAMPERED", hasattr(venvdemo.extra, "TAMPERED"),
      "VENVDEP", importlib.util.find_spec("venvdep") is not None)
`,
	})
	env := pyE2EEnv(t, s, x, "")
	const reqs = "venvdemo==1.0"
	r, task, log := pyRun(t, s, env, pyTask(s, repo, "evil.py", "python3", reqs))
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "Added the virtual environment to the cache") {
		t.Fatalf("evil task: exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
	}
	root := os.Geteuid() == 0
	if root != strings.Contains(log, "EDITED in place") {
		t.Errorf("in-place edit: root %v, log:\n%s", root, log)
	}
	for i, want := range []string{"changed since it was cached: lib/", "Using cached virtual environment"} {
		r, task, log = pyRun(t, s, env, pyTask(s, repo, "check.py", "python3", reqs))
		if r.code != 0 || task.Status != "completed" {
			t.Fatalf("check task: exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
		}
		if !strings.Contains(log, "RENAMED False TAMPERED False VENVDEP False\n") || strings.Contains(log, "POISONED") {
			t.Errorf("task %d saw what an earlier task did:\n%s", i+2, log)
		}
		if i == 0 && !root {
			want = "Using cached virtual environment" // a non-root task could not write in place
		}
		if !strings.Contains(log, want) {
			t.Errorf("task %d: log lacks %q:\n%s", i+2, want, log)
		}
	}
}

// TestPythonRequirementOptionsE2E: requirement lines that are pip options
// are ignored with a warning; "-r FILE" must not put a line of FILE
// anywhere (log, status, set_requirements, the agent's output). With
// agent.package_manager.allow_requirement_options, -r works for files of
// the checkout only.
func TestPythonRequirementOptionsE2E(t *testing.T) {
	x := pyE2E(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"t.py": "import venvdemo\nprint('OK', venvdemo.VERSION)\n", "more.txt": "venvdep==3.1\n"})
	buf := make([]byte, 8)
	rand.Read(buf)
	secret := "SECRET-" + hex.EncodeToString(buf) + ":$y$j9T$notahash:19000:0:99999:7:::"
	secretFile := writeFile(t, filepath.Join(t.TempDir(), "shadow"), secret+"\nsecond line\n")
	secrets := []string{secret, "tok3n-" + hex.EncodeToString(buf)}
	if f, err := os.Open("/etc/shadow"); err == nil { // readable when the tests run as root
		sc := bufio.NewScanner(f)
		if sc.Scan() && len(sc.Text()) > 8 {
			secrets = append(secrets, sc.Text())
		}
		f.Close()
	}
	reqs := strings.Join([]string{"-r /etc/shadow", "-r " + secretFile, "-c " + secretFile, "--requirement=" + secretFile,
		"--index-url http://127.0.0.1:9/evil/", "--extra-index-url http://user:" + secrets[1] + "@127.0.0.1:9/x/",
		"-f /tmp", "--trusted-host evil", "--pre", "venvdemo==1.0"}, "\n")
	check := func(r runResult, task fakeserver.Task, log string) {
		t.Helper()
		for _, sec := range secrets {
			for what, text := range map[string]string{"log": log, "status": task.StatusReason + task.StatusMessage,
				"set_requirements": pyFrozen(task), "stdout": r.stdout, "stderr": r.stderr} {
				if strings.Contains(text, sec) {
					t.Errorf("the %s holds %.20q...", what, sec)
				}
			}
		}
	}
	env := pyE2EEnv(t, s, x, "")
	r, task, log := pyRun(t, s, env, pyTask(s, repo, "t.py", "python3", reqs))
	if r.code != 0 || task.Status != "completed" || !strings.Contains(log, "OK 1.0\n") {
		t.Fatalf("exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
	}
	check(r, task, log)
	for _, l := range []string{"-r /etc/shadow", "-r " + secretFile, "--index-url http://127.0.0.1:9/evil/", "--pre", "--trusted-host evil", "-f /tmp"} {
		if !strings.Contains(log, fmt.Sprintf("ignoring requirement line %q: pip options are not accepted", l)) {
			t.Errorf("no warning for %q:\n%s", l, log)
		}
	}

	if !strings.Contains(log, `ignoring requirement line "--extra-index-url http://user:*`) { // the password masked
		t.Errorf("no warning for --extra-index-url:\n%s", log)
	}

	// Allowed by the operator: -r inside the checkout is read; outside, not.
	env = pyE2EEnv(t, s, x, "agent.package_manager.allow_requirement_options: true\n")
	r, task, log = pyRun(t, s, env, pyTask(s, repo, "t.py", "python3", "-r /etc/shadow\n-r "+secretFile+"\n-r more.txt\nvenvdemo==1.0"))
	if r.code != 0 || task.Status != "completed" || !strings.Contains(pyFrozen(task), "venvdep==3.1") {
		t.Fatalf("allowed: exit %d, %s (%s)\n%s\nfrozen: %s", r.code, task.Status, task.StatusReason, log, pyFrozen(task))
	}
	check(r, task, log)
	if !strings.Contains(log, `ignoring requirement line "-r /etc/shadow": --requirement must name a file inside the task's checkout`) {
		t.Errorf("log:\n%s", log)
	}
}
