package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// venvFakePython writes a script that answers the probe like Python would.
func venvFakePython(t testing.TB, dir, name, version string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	body := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n%%s\\n' %s \"$0\"\n", version)
	if version == "" { // like a pyenv shim for a version that is not installed
		body = "#!/bin/sh\necho \"pyenv: $0: command not found\" >&2\nexit 127\n"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPythonRequestedVersion(t *testing.T) {
	for in, want := range map[string]string{
		"python3.10": "3.10", "/usr/bin/python3.8": "3.8", "python3.10.4": "3.10", "python2.7": "2.7",
		"python3": "3", "python": "", "/bin/bash": "", "": "", "python3.11-dbg": "", "python3.010": "3.10",
	} {
		if got := pyRequestedVersion(in); got != want {
			t.Errorf("pyRequestedVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPythonInterpreterSelection(t *testing.T) {
	bin := t.TempDir()
	py3 := venvFakePython(t, bin, "python3", "3.11.7")
	py310 := venvFakePython(t, bin, "python3.10", "3.10.13")
	venvFakePython(t, bin, "python", "3.11.7")
	venvFakePython(t, bin, "python3.12", "") // broken shim
	other := venvFakePython(t, t.TempDir(), "py312", "3.12.1")

	tests := []struct {
		name, conf, binary, want, errHas string
	}{
		{"task version", "", "python3.10", py310, ""},
		{"task path, found by name", "", "/usr/bin/python3.10", py310, ""},
		{"major only", "", "python3", py3, ""},
		{"nothing asked", "", "", py3, ""},
		{"not python", "", "/bin/bash", py3, ""},
		{"default_python", "agent.default_python: \"3.10\"", "", py310, ""},
		{"python_binary when nothing asked", "agent.python_binary: " + other, "", other, ""},
		{"python_binary matching the request", "agent.python_binary: " + other, "python3.12", other, ""},
		{"ignore requested version", "agent.ignore_requested_python_version: true", "python3.12", py3, ""},
		// A version that is not there: the first one found, with a warning, as the reference.
		{"missing version", "", "python3.12", py3, ""},
		{"missing default_python", "agent.default_python: \"3.9\"", "", py3, ""},
		{"python_binary of another version", "agent.python_binary: " + py310, "python3.12", py310, ""},
		{"python_binary missing", "agent.python_binary: /nonexistent/python", "", "", `agent.python_binary "/nonexistent/python" was not found`},
	}
	t.Run("no python at all", func(t *testing.T) {
		m := newVenvManager(venvTestConfig(t, "", nil), nil)
		m.pathEnv = t.TempDir()
		_, err := m.selectInterpreter(context.Background(), "python3.12")
		if err == nil || !strings.HasPrefix(err.Error(), "interpreter: ") || !strings.Contains(err.Error(), "but no Python found on PATH") {
			t.Errorf("error = %v", err)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			m := newVenvManager(venvTestConfig(t, tc.conf, nil), &log)
			m.pathEnv = bin
			in, err := m.selectInterpreter(context.Background(), tc.binary)
			if strings.HasPrefix(tc.name, "missing") || strings.Contains(tc.name, "another version") {
				if w := log.String(); !strings.HasPrefix(w, "WARNING: ") || !strings.Contains(w, "which was not found (found: ") ||
					!strings.Contains(w, "3.10.13 ("+py310+")") || strings.Count(w, "\n") != 1 {
					t.Errorf("the fallback is not announced in one line listing what was found: %q", w)
				}
			} else if log.Len() != 0 {
				t.Errorf("unexpected log: %q", log.String())
			}
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.errHas)
				}
				if !strings.HasPrefix(err.Error(), "interpreter: ") || strings.Contains(err.Error(), "\n") {
					t.Errorf("error should be one line naming the step: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if in.exe != tc.want || in.real != tc.want {
				t.Errorf("got %+v, want %s", in, tc.want)
			}
		})
	}
}

func TestPythonProbeRemembered(t *testing.T) {
	bin := t.TempDir()
	venvFakePython(t, bin, "python3.10", "3.10.13")
	cfg := venvTestConfig(t, "agent.venvs_cache.path: "+filepath.Join(t.TempDir(), "cache"), nil)
	var log execLog
	for i := 0; i < 2; i++ { // the second manager reads interpreters.json
		m := newVenvManager(cfg, nil)
		m.pathEnv, m.onExec = bin, log.hook
		for j := 0; j < 2; j++ {
			if _, err := m.selectInterpreter(context.Background(), "python3.10"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := log.total(); n != 1 {
		t.Errorf("probes run: %d, want 1", n)
	}
	// A changed executable is probed again.
	time.Sleep(10 * time.Millisecond)
	venvFakePython(t, bin, "python3.10", "3.10.14")
	m := newVenvManager(cfg, nil)
	m.pathEnv, m.onExec = bin, log.hook
	in, err := m.selectInterpreter(context.Background(), "python3.10")
	if err != nil || in.version != "3.10.14" || log.total() != 2 {
		t.Errorf("after change: %+v, %v, %d probes", in, err, log.total())
	}
}

func TestVenvNormalizeRequirements(t *testing.T) {
	got, ok := pyNormalizeRequirements([]string{
		"# Python 3.10", "", "Numpy >= 1.26  # pinned", "scikit_learn==1.4", "numpy>=1.26",
		"torch @ https://x/torch.whl", "--extra-index-url https://idx", "git+https://github.com/a/b.git@v1",
	})
	want := []string{"--extra-index-url https://idx", "git+https://github.com/a/b.git@v1", "numpy>=1.26", "scikit-learn==1.4", "torch @ https://x/torch.whl"}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q (%v), want %q", got, ok, want)
	}
	for _, l := range []string{"-r other.txt", "-e .", "./pkg", "/abs/pkg", "file:///w/x.whl", "--requirement x"} {
		if _, ok := pyNormalizeRequirements([]string{"a", l}); ok {
			t.Errorf("%q should make the set uncacheable", l)
		}
	}
}

func TestVenvRequirementSource(t *testing.T) {
	repo := writeFile(t, filepath.Join(t.TempDir(), "requirements.txt"), "repo-pkg\n")
	task := venvSpec{requirements: []string{"task-pkg"}, taskHasRequirements: true, repoRequirementsFiles: []string{repo}}
	for _, tc := range []struct {
		name, conf string
		spec       venvSpec
		wantTask   []string
		wantFiles  []string
	}{
		{"task requirements win", "", task, []string{"task-pkg"}, nil},
		{"empty task requirements install nothing", "", venvSpec{taskHasRequirements: true, repoRequirementsFiles: []string{repo}}, nil, nil},
		{"no task requirements: the repo's", "", venvSpec{repoRequirementsFiles: []string{repo}}, nil, []string{repo}},
		{"force_repo_requirements_txt", "agent.package_manager.force_repo_requirements_txt: true", task, nil, []string{repo}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newVenvManager(venvTestConfig(t, tc.conf, nil), nil)
			s, err := m.requirementsFor(tc.spec)
			if err != nil || !reflect.DeepEqual(s.taskLines, tc.wantTask) || !reflect.DeepEqual(s.files, tc.wantFiles) {
				t.Errorf("got %+v, %v", s, err)
			}
		})
	}
	m := newVenvManager(venvTestConfig(t, "", nil), nil)
	if _, err := m.requirementsFor(venvSpec{repoRequirementsFiles: []string{"/nonexistent/requirements.txt"}}); err == nil || !strings.HasPrefix(err.Error(), "requirements: ") {
		t.Errorf("missing file: %v", err)
	}
}

// Requirements come from the task (the server): any text normalizes
// without a panic, and normalizing twice changes nothing.
func FuzzNormalizeRequirements(f *testing.F) {
	f.Add("numpy==1.26\n# comment\nTorch >= 2.0 ; python_version > '3.8'\n-e git+https://x/y.git#egg=z\n")
	f.Add("pkg[extra]==1\n--extra-index-url https://u:p@h/simple\n\n./local.whl\n")
	f.Fuzz(func(t *testing.T, text string) {
		norm, _ := pyNormalizeRequirements(strings.Split(text, "\n"))
		again, _ := pyNormalizeRequirements(norm)
		if strings.Join(norm, "\n") != strings.Join(again, "\n") {
			t.Fatalf("not idempotent: %q -> %q", norm, again)
		}
	})
}

// TestPyVCSRequirement: the reference's rewrites (agent-execute.md §9.4),
// with the credentials left to ask-pass instead of the URL.
func TestPyVCSRequirement(t *testing.T) {
	for _, tc := range []struct{ in, noCreds, creds string }{
		{"git+https://bitbucket.org/s/ti.git@master#subdirectory=.", "git+https://bitbucket.org/s/ti.git@master#subdirectory=.", "git+https://bitbucket.org/s/ti.git@master#subdirectory=."},
		{"git+ssh://git@bitbucket.org/s/ti.git@main#subdirectory=a", "git+ssh://git@bitbucket.org/s/ti.git@main#subdirectory=a", "git+https://bitbucket.org/s/ti.git@main#subdirectory=a"},
		{"git+git://git@bitbucket.org/s/ti.git@master#subdirectory=b", "git+ssh://git@bitbucket.org/s/ti.git@master#subdirectory=b", "git+https://bitbucket.org/s/ti.git@master#subdirectory=b"},
		{"-e git+https://github.com/clearml/clearml.git@v1.0#egg=clearml", "git+https://github.com/clearml/clearml.git@v1.0#egg=clearml", "git+https://github.com/clearml/clearml.git@v1.0#egg=clearml"},
		{"clearml @ git+https://github.com/clearml/clearml.git@abc123", "clearml @ git+https://github.com/clearml/clearml.git@abc123", "clearml @ git+https://github.com/clearml/clearml.git@abc123"},
		{"numpy==1.26.4", "numpy==1.26.4", "numpy==1.26.4"},
		{"-e ./local", "-e ./local", "-e ./local"},
	} {
		if got := pyVCSRequirement(tc.in, false); got != tc.noCreds {
			t.Errorf("%q without credentials: %q, want %q", tc.in, got, tc.noCreds)
		}
		if got := pyVCSRequirement(tc.in, true); got != tc.creds {
			t.Errorf("%q with credentials: %q, want %q", tc.in, got, tc.creds)
		}
	}
}
