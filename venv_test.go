package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// venvTestConfig is testConfig with the venv kits (templates, pip seeds)
// shared by the tests: making one compiles pip.
func venvTestConfig(t testing.TB, conf string, env map[string]string) *agentConfig {
	t.Helper()
	e := map[string]string{"CLEARML_AGENT__AGENT__VENVS_CACHE__SEED_PATH": venvTestSeedRoot()}
	maps.Copy(e, env)
	return testConfig(t, conf, e)
}

// execLog records the subprocesses a manager starts.
type execLog struct {
	mu    sync.Mutex
	argvs [][]string
}

func (l *execLog) hook(argv []string) {
	l.mu.Lock()
	l.argvs = append(l.argvs, append([]string(nil), argv...))
	l.mu.Unlock()
}

func (l *execLog) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.argvs {
		if strings.Contains(strings.Join(a, " "), substr) {
			n++
		}
	}
	return n
}

func (l *execLog) total() int { return l.count("") }

func venvWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func TestVenvInstallFlags(t *testing.T) {
	conf := `agent.package_manager {
  extra_index_url: ["https://a/simple", "https://b/simple"]
  no_index: true
  find_links: /wheels
  extra_pip_install_flags: ["--prefer-binary"]
  force_upgrade: true
}`
	m := newVenvManager(venvTestConfig(t, conf, nil), nil)
	want := []string{"--extra-index-url", "https://a/simple", "--extra-index-url", "https://b/simple", "--no-index", "--find-links", "/wheels", "--prefer-binary", "--upgrade"}
	if got := m.installFlags(); !reflect.DeepEqual(got, want) {
		t.Errorf("flags = %q\nwant    %q", got, want)
	}
	m = newVenvManager(venvTestConfig(t, conf, map[string]string{"CLEARML_EXTRA_PIP_INSTALL_FLAGS": `--timeout 5 --trusted-host "my host"`}), nil)
	if got := m.installFlags(); !reflect.DeepEqual(got[7:10], []string{"--timeout", "5", "--trusted-host"}) || got[10] != "my host" {
		t.Errorf("env flags = %q", got)
	}
}

func TestVenvShellSplit(t *testing.T) {
	got, err := shlexSplit(`a 'b c' "d \"e\"" f\ g  `)
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b c", `d "e"`, "f g"}) {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := shlexSplit(`'open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestPythonArgs(t *testing.T) {
	for _, tc := range []struct {
		opt  int
		want []string
	}{
		{0, []string{"/v/bin/python", "-u", "train.py"}},
		{1, []string{"/v/bin/python", "-u", "-O", "train.py"}},
		{2, []string{"/v/bin/python", "-u", "-OO", "train.py"}},
		{3, []string{"/v/bin/python", "-u", "-OO", "train.py"}},
	} {
		if got := venvPythonArgs("/v/bin/python", tc.opt, []string{"train.py"}); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("-O x%d: %q", tc.opt, got)
		}
	}
}

func TestVenvSetRequirementsBody(t *testing.T) {
	prev := map[string]any{"pip": "numpy\n", "conda": "", "org_pip": nil}
	got := venvSetRequirementsBody("t1", prev, []string{"numpy==1.26.4"})
	want := map[string]any{"task": "t1", "requirements": map[string]any{"pip": []string{"numpy==1.26.4"}, "org_pip": "numpy\n", "conda": ""}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	// org_pip is set once: a second run keeps the original.
	got = venvSetRequirementsBody("t1", map[string]any{"pip": []any{"numpy==1.26.4"}, "org_pip": "numpy\n"}, []string{"numpy==1.26.4"})
	if r := got["requirements"].(map[string]any); r["org_pip"] != "numpy\n" {
		t.Errorf("org_pip overwritten: %v", r)
	}
	if _, ok := prev["org_pip"]; !ok || prev["pip"] != "numpy\n" {
		t.Error("the previous map was modified")
	}
}

func TestVenvInstallFailure(t *testing.T) {
	for out, want := range map[string]string{
		"ERROR: Could not find a version that satisfies the requirement nosuch==1.0 (from versions: none)\nERROR: No matching distribution found for nosuch==1.0\n": "nosuch==1.0",
		"  × No solution found when resolving dependencies:\n  ╰─▶ Because foo was not found in the package registry and you require foo, we can conclude":          "foo",
		"error: something else": "",
	} {
		if got := pyInstallFailure(out); got != want {
			t.Errorf("pyInstallFailure(%q) = %q, want %q", out, got, want)
		}
	}
}

// venvTestWheel writes a minimal pure-Python wheel into dir.
func venvTestWheel(t testing.TB, dir, name, version string) {
	t.Helper()
	files := []struct{ name, body string }{
		{name + "/__init__.py", "VERSION = " + fmt.Sprintf("%q", version) + "\n"},
		{fmt.Sprintf("%s-%s.dist-info/METADATA", name, version), fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", name, version)},
		{fmt.Sprintf("%s-%s.dist-info/WHEEL", name, version), "Wheel-Version: 1.0\nGenerator: venv_test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f.body))
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	recName := fmt.Sprintf("%s-%s.dist-info/RECORD", name, version)
	fmt.Fprintf(&record, "%s,,\n", recName)
	w, _ := zw.Create(recName)
	w.Write([]byte(record.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	venvWrite(t, filepath.Join(dir, fmt.Sprintf("%s-%s-py3-none-any.whl", name, version)), buf.String(), 0o644)
}

func venvNeedPython(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds real venvs")
	}
	if out, err := exec.Command("python3", "-c", "import venv, ensurepip").CombinedOutput(); err != nil {
		t.Skipf("python3 with venv and ensurepip is needed: %v %s", err, out)
	}
}

func venvHasFrozen(frozen []string, want string) bool {
	for _, l := range frozen {
		if strings.EqualFold(l, want) {
			return true
		}
	}
	return false
}

// TestVenvRealPython builds real venvs, as few as possible (each costs seconds).
func TestVenvRealPython(t *testing.T) {
	venvNeedPython(t)
	ctx := context.Background()
	root := t.TempDir()
	wheels := filepath.Join(root, "wheels")
	venvTestWheel(t, wheels, "venvdemo", "1.0")
	cache := filepath.Join(root, "cache")
	conf := fmt.Sprintf(`agent {
  package_manager { no_index: true, find_links: [%q], system_site_packages: true, pip_version: [] }
  venvs_cache { path: %q, max_entries: 5, free_space_threshold_gb: 0 }
}`, wheels, cache)
	cfg := venvTestConfig(t, conf, nil)
	spec := venvSpec{binary: "python3", requirements: []string{"venvdemo==1.0"}, taskHasRequirements: true}

	// Two tasks with the same requirements at once: one builds, one waits and reuses.
	var log execLog
	var out1, out2 bytes.Buffer
	results := make([]*venvResult, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, out := range []*bytes.Buffer{&out1, &out2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := newVenvManager(cfg, out)
			m.onExec = log.hook
			results[i], errs[i] = m.prepare(ctx, spec, filepath.Join(root, fmt.Sprint("task", i)))
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("prepare %d: %v\n%s%s", i, errs[i], out1.String(), out2.String())
		}
		defer results[i].release()
	}
	if n := log.count(" install -r "); n != 1 {
		t.Errorf("venvs built: %d, want 1", n)
	}
	r := results[0]
	if results[0].cacheHit == results[1].cacheHit || r.dir != filepath.Join(root, "task0") || results[1].dir != filepath.Join(root, "task1") {
		t.Errorf("results: %+v / %+v", results[0], results[1])
	}
	if !venvHasFrozen(r.frozen, "venvdemo==1.0") || !reflect.DeepEqual(r.frozen, results[1].frozen) {
		t.Errorf("frozen = %q / %q", r.frozen, results[1].frozen)
	}
	if !strings.Contains(out1.String()+out2.String(), "venvdemo") {
		t.Error("pip output is not in the task log")
	}
	cfgText, _ := os.ReadFile(filepath.Join(r.dir, "pyvenv.cfg"))
	if !strings.Contains(string(cfgText), "include-system-site-packages = true") {
		t.Errorf("system_site_packages not honoured:\n%s", cfgText)
	}
	if out, err := exec.Command(r.python, "-c", "import venvdemo; print(venvdemo.VERSION)").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1.0" {
		t.Errorf("venv python cannot import the wheel: %v %s", err, out)
	}

	// Later tasks hit without running any python: the same requirements as
	// a string with other spelling, from requirements.txt, or forced.
	repoReq := writeFile(t, filepath.Join(root, "repo", "requirements.txt"), "# deps\nvenvdemo == 1.0\n")
	forced := venvTestConfig(t, conf+"\nagent.package_manager.force_repo_requirements_txt: true", nil)
	for _, tc := range []struct {
		name string
		cfg  *agentConfig
		spec venvSpec
	}{
		{"task string", cfg, venvSpec{binary: "python3", requirements: strings.Split("# Python 3\nVenvDemo==1.0\n", "\n"), taskHasRequirements: true}},
		{"repo requirements.txt", cfg, venvSpec{binary: "python3", repoRequirementsFiles: []string{repoReq}}},
		{"force_repo_requirements_txt", forced, venvSpec{binary: "python3", requirements: []string{"other"}, taskHasRequirements: true, repoRequirementsFiles: []string{repoReq}}},
		{"standalone", cfg, venvSpec{binary: "python3", requirements: []string{"venvdemo==1.0"}, taskHasRequirements: true, standalone: true}},
	} {
		t.Run("hit/"+tc.name, func(t *testing.T) {
			var log execLog
			m := newVenvManager(tc.cfg, nil)
			m.onExec = log.hook
			h, err := m.prepare(ctx, tc.spec, filepath.Join(root, "task-hit"))
			if err != nil {
				t.Fatal(err)
			}
			defer h.release()
			if !h.cacheHit || h.dir != filepath.Join(root, "task-hit") || !venvHasFrozen(h.frozen, "venvdemo==1.0") {
				t.Errorf("got %+v", h)
			}
			if log.total() != 0 {
				t.Errorf("a cache hit ran %q", log.argvs)
			}
		})
	}

	t.Run("standalone installs nothing", func(t *testing.T) {
		var log execLog
		m := newVenvManager(cfg, nil)
		m.onExec = log.hook
		task := filepath.Join(root, "task-standalone")
		s, err := m.prepare(ctx, venvSpec{binary: "python3", requirements: []string{"venvdemo==2.0"}, taskHasRequirements: true, standalone: true}, task)
		if err != nil {
			t.Fatal(err)
		}
		if s.dir != "" || s.cacheHit || log.count("install") != 0 || log.count(" -m venv") != 0 {
			t.Errorf("standalone built or installed: %+v %q", s, log.argvs)
		}
		if log.count("freeze") != 1 {
			t.Errorf("standalone should still freeze: %q", log.argvs)
		}
	})

	t.Run("existing environments", func(t *testing.T) {
		// A venv made beforehand, as a user's image or machine has one.
		pre := filepath.Join(root, "prebuilt")
		if out, err := exec.Command("python3", "-m", "venv", pre).CombinedOutput(); err != nil {
			t.Fatalf("python3 -m venv: %v %s", err, out)
		}
		preConf := conf + "\nagent.package_manager.pip_version: [\"<99\"]"
		prePy := filepath.Join(pre, "bin", "python")
		task := filepath.Join(root, "task-existing")
		for _, tc := range []struct {
			name      string
			conf      string
			env       map[string]string
			reqs      []string
			python    string // "" for the system python3
			dir       string
			installs  int
			wantErr   string
			cacheHits bool
		}{
			{name: "SKIP_PIP_VENV_INSTALL=path installs into it", conf: preConf, env: map[string]string{"CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": prePy},
				reqs: []string{"venvdemo==1.0"}, python: prePy, dir: pre, installs: 1},
			{name: "legacy TRAINS_ name", conf: preConf, env: map[string]string{"TRAINS_AGENT_SKIP_PIP_VENV_INSTALL": prePy},
				reqs: []string{"venvdemo==1.0"}, python: prePy, dir: pre, installs: 1},
			{name: "SKIP_PYTHON_ENV_INSTALL installs nothing", conf: preConf, env: map[string]string{"CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL": "1"},
				reqs: []string{"nosuchpkg==9.9"}},
			{name: "SKIP_PIP_VENV_INSTALL=0 is off", conf: conf, env: map[string]string{"CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": "0"},
				reqs: []string{"venvdemo==1.0"}, cacheHits: true},
			{name: "missing interpreter", conf: preConf, env: map[string]string{"CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": "/nonexistent/bin/python"},
				reqs: []string{"venvdemo==1.0"}, wantErr: `CLEARML_AGENT_SKIP_PIP_VENV_INSTALL: "/nonexistent/bin/python" was not found`},
			{name: "container venv", conf: preConf, env: map[string]string{"CLEARML_DOCKER_IMAGE": "img", "VIRTUAL_ENV": pre},
				reqs: []string{"venvdemo==1.0"}, python: prePy, dir: pre, installs: 1},
			{name: "container venv, docker_use_activated_venv off", conf: conf + "\nagent.docker_use_activated_venv: false",
				env: map[string]string{"CLEARML_DOCKER_IMAGE": "img", "VIRTUAL_ENV": pre}, reqs: []string{"venvdemo==1.0"}, cacheHits: true},
			{name: "active venv outside a container", conf: conf, env: map[string]string{"VIRTUAL_ENV": pre},
				reqs: []string{"venvdemo==1.0"}, cacheHits: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var log execLog
				var out bytes.Buffer
				m := newVenvManager(venvTestConfig(t, tc.conf, tc.env), &out)
				m.onExec = log.hook
				r, err := m.prepare(ctx, venvSpec{binary: "python3", requirements: tc.reqs, taskHasRequirements: true}, task)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "\n") {
						t.Fatalf("error = %v, want %q", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("%v\n%s", err, out.String())
				}
				defer r.release()
				if tc.cacheHits {
					if !r.cacheHit || log.total() != 0 {
						t.Errorf("want the ordinary cached venv, got %+v after %q", r, log.argvs)
					}
					return
				}
				if log.count(" -m venv") != 0 || r.cacheHit || r.dir != tc.dir {
					t.Errorf("an existing environment must be used as is: %+v after %q", r, log.argvs)
				}
				if tc.python != "" && r.python != tc.python {
					t.Errorf("python = %s, want %s", r.python, tc.python)
				}
				if n := log.count(" install "); n != tc.installs {
					t.Errorf("%d installs, want %d: %q", n, tc.installs, log.argvs)
				}
				if log.count("pip<99") != 0 {
					t.Errorf("the existing environment's pip was re-pinned: %q", log.argvs)
				}
				if log.count("freeze") != 1 {
					t.Errorf("want one freeze: %q", log.argvs)
				}
				if tc.installs > 0 && !venvHasFrozen(r.frozen, "venvdemo==1.0") {
					t.Errorf("frozen = %q", r.frozen)
				}
				if !strings.Contains(out.String(), "no venv: ") {
					t.Errorf("the log does not say why no venv was made:\n%s", out.String())
				}
			})
		}
	})

	t.Run("missing package, no cache", func(t *testing.T) {
		noCache := venvTestConfig(t, fmt.Sprintf(`agent {
  package_manager { no_index: true, find_links: [%q], pip_version: [] }
  venvs_cache.path: ""
}`, wheels), nil)
		task := filepath.Join(root, "task-missing")
		keep := writeFile(t, filepath.Join(task, "task_repository", "repo", "train.py"), "")
		writeFile(t, filepath.Join(task, "stale"), "")
		var out bytes.Buffer
		m := newVenvManager(noCache, &out)
		_, err := m.prepare(ctx, venvSpec{binary: "python3", requirements: []string{"venvdemo==1.0", "nosuchpkg==9.9"}, taskHasRequirements: true}, task)
		if err == nil || !strings.HasPrefix(err.Error(), "requirements: ") || !strings.Contains(err.Error(), `"nosuchpkg==9.9"`) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("error = %v\n%s", err, out.String())
		}
		t.Logf("error: %v", err)
		cfgText, _ := os.ReadFile(filepath.Join(task, "pyvenv.cfg"))
		if !strings.Contains(string(cfgText), "include-system-site-packages = false") {
			t.Errorf("the venv should be in the task folder, without system site packages:\n%s", cfgText)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Error("task_repository was removed")
		}
		if _, err := os.Stat(filepath.Join(task, "stale")); !os.IsNotExist(err) {
			t.Error("old files in the task folder were kept")
		}
	})
}

// uvShim stands in for uv where it is not installed (no index reaches
// here): it speaks the three commands the agent uses, through python's own
// venv and pip, so the wiring (argv, flags, freeze) is still exercised.
const uvShim = `#!/bin/sh
cmd="$1 $2"; shift 2
[ "$1" = --allow-existing ] && shift
[ "$1" = --python ] && py="$2" && shift 2
case "$cmd" in
"venv --allow-existing"|"venv "*) exec "$py" -m venv "$@" ;;
"pip install") exec "$py" -m pip --disable-pip-version-check install "$@" ;;
"pip freeze") exec "$py" -m pip --disable-pip-version-check freeze ;;
esac
echo "uv shim: unsupported: $cmd $*" >&2; exit 2
`

func TestVenvUV(t *testing.T) {
	venvNeedPython(t)
	root := t.TempDir()
	pathEnv := ""
	if _, err := exec.LookPath("uv"); err != nil {
		bin := filepath.Join(root, "bin")
		os.MkdirAll(bin, 0o755)
		os.WriteFile(filepath.Join(bin, "uv"), []byte(uvShim), 0o755)
		pathEnv = bin + string(os.PathListSeparator) + os.Getenv("PATH")
		t.Log("uv is not installed: testing the uv path through a shim")
	}
	wheels := filepath.Join(root, "wheels")
	venvTestWheel(t, wheels, "venvdemo", "1.0")
	cfg := venvTestConfig(t, fmt.Sprintf(`agent {
  package_manager { type: uv, uv_replace_pip: true, no_index: true, find_links: [%q] }
  venvs_cache.path: %q
}`, wheels, filepath.Join(root, "cache")), nil)
	var log execLog
	m := newVenvManager(cfg, nil)
	m.onExec = log.hook
	m.pathEnv = pathEnv
	r, err := m.prepare(context.Background(), venvSpec{binary: "python3", requirements: []string{"venvdemo==1.0"}, taskHasRequirements: true}, filepath.Join(root, "task"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.release()
	if log.count("uv venv") != 1 || log.count("uv pip install") != 1 || !venvHasFrozen(r.frozen, "venvdemo==1.0") {
		t.Errorf("uv: %q, frozen %q", log.argvs, r.frozen)
	}
}

func TestPyVersionInSpec(t *testing.T) {
	for _, tc := range []struct {
		v, spec string
		want    bool
	}{
		{"23.0.1", ">=20.3,<24.3", true}, {"24.3", ">=20.3,<24.3", false}, {"20.2.4", ">=20.3,<24.3", false},
		{"20.3", ">=20.3,<24.3", true}, {"24.2.1", ">=20.3, <24.3", true}, {"22.0", "==22", true},
		{"22.0.1", "!=22.0.1", false}, {"25.0", ">24", true}, {"x", ">=1", false}, {"23.0", "~=23", false},
	} {
		if got := pyVersionInSpec(tc.v, tc.spec); got != tc.want {
			t.Errorf("pyVersionInSpec(%q, %q) = %v, want %v", tc.v, tc.spec, got, tc.want)
		}
	}
}

func TestVenvLegacyResolver(t *testing.T) {
	for _, tc := range []struct {
		pip, conf string
		want      bool
	}{
		{"23.2.1", "", true},
		{"24.3.1", "", false},
		{"20.2.4", "", false},
		{"23.2.1", "agent.package_manager.pip_legacy_resolver: []", false},
	} {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "lib", "python3.11", "site-packages", "pip-"+tc.pip+".dist-info"), 0o755)
		m := newVenvManager(venvTestConfig(t, tc.conf, nil), nil)
		if got := m.legacyResolver(filepath.Join(root, "bin", "python")); got != tc.want {
			t.Errorf("pip %s, %q: %v, want %v", tc.pip, tc.conf, got, tc.want)
		}
	}
}

func TestVenvRunArgv(t *testing.T) {
	argv := []string{"/p/.venv/bin/python", "-u", "main.py", "--x"}
	if got := (*venvResult)(nil).runArgv(argv); !reflect.DeepEqual(got, argv) {
		t.Errorf("nil result: %q", got)
	}
	r := &venvResult{python: "/p/.venv/bin/python", runPrefix: []string{"/bin/uv", "run", "--no-dev", "--python", "/p/.venv/bin/python", "python"}}
	want := []string{"/bin/uv", "run", "--no-dev", "--python", "/p/.venv/bin/python", "python", "-u", "main.py", "--x"}
	if got := r.runArgv(argv); !reflect.DeepEqual(got, want) {
		t.Errorf("uv run: %q", got)
	}
	// A shell task (bash script.sh) does not go through uv.
	if got := r.runArgv([]string{"/bin/bash", "x.sh"}); !reflect.DeepEqual(got, []string{"/bin/bash", "x.sh"}) {
		t.Errorf("shell: %q", got)
	}
}
