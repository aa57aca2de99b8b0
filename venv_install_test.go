package main

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPyFailure(t *testing.T) {
	lines := []string{"venvdemo==1.0", "NoSuch_Pkg==9.9 ; python_version > '3'", "./local/pkg", "git+https://h/x.git#egg=gitpkg"}
	for _, c := range []struct{ out, line, reason string }{
		{"Processing /w/venvdemo-1.0-py3-none-any.whl (from -r /tmp/clearml-requirements-1.txt (line 1))\n" +
			"ERROR: Could not find a version that satisfies the requirement nosuch-pkg==9.9 (from -r /tmp/clearml-requirements-1.txt (line 2)) (from versions: 1.0, 2.0)\n" +
			"ERROR: No matching distribution found for nosuch-pkg==9.9 (from -r /tmp/clearml-requirements-1.txt (line 2))\n",
			lines[1], "Could not find a version that satisfies the requirement nosuch-pkg==9.9 (from versions: 1.0, 2.0); No matching distribution found for nosuch-pkg==9.9"},
		{"Collecting gitpkg\n  error: subprocess-exited-with-error\n  × Getting requirements to build wheel did not run successfully.\n" +
			"      ModuleNotFoundError: No module named 'Cython'\n      [end of output]\nerror: subprocess-exited-with-error\n",
			lines[3], "ModuleNotFoundError: No module named 'Cython'"},
		{"  × No solution found when resolving dependencies:\n  ╰─▶ Because venvdemo was not found in the package registry and you require venvdemo, we can conclude that your requirements are unsatisfiable.\n",
			lines[0], "No solution found when resolving dependencies: Because venvdemo was not found in the package registry and you require venvdemo, we can conclude that your requirements are unsatisfiable."},
		{"something odd", "", ""},
	} {
		line, reason := pyFailure(c.out, lines)
		if line != c.line || reason != c.reason {
			t.Errorf("pyFailure(%.40q):\n got %q, %q\nwant %q, %q", c.out, line, reason, c.line, c.reason)
		}
	}
}

func TestVenvCythonFirst(t *testing.T) {
	for _, c := range []struct {
		binary, have string
		want         bool
	}{
		{"python3.8", "3.11.7", true}, {"python3.10", "3.8.18", false}, {"python3", "3.8.18", true},
		{"python3", "3.11.7", false}, {"", "3.7.1", true}, {"python", "3.12.1", false},
	} {
		if got := venvCythonFirst(c.binary, pyInterp{version: c.have}); got != c.want {
			t.Errorf("venvCythonFirst(%q, %s) = %v", c.binary, c.have, got)
		}
	}
}

func TestVenvPlanKeyAndLocal(t *testing.T) {
	m := newVenvManager(venvTestConfig(t, "agent.package_manager.pytorch_resolve: none", nil), nil)
	checkout := t.TempDir()
	plan := func(lines ...string) *venvPlan {
		t.Helper()
		p, err := m.planRequirements(context.Background(), venvSpec{checkout: checkout}, pyInterp{version: "3.11.7"}, venvTool{}, venvRequirementSet{taskLines: lines})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := plan("numpy==1.26", "Venv_Demo == 1.0", "# c"), plan("venv-demo==1.0", "numpy==1.26")
	if !reflect.DeepEqual(a.keyLines(), b.keyLines()) || a.local || len(a.Priority) != 1 {
		t.Errorf("same requirements, other spelling: %q / %q (local %v)", a.keyLines(), b.keyLines(), a.local)
	}
	if p := plan("-e ./pkg", "x==1"); !p.local || p.External[0].Line != filepath.Join(checkout, "pkg") {
		t.Errorf("a folder of the checkout: %+v", p)
	}
	if p := plan("-r /etc/shadow", "x==1"); p.local || len(p.Main) != 1 || len(p.Warnings) != 1 {
		t.Errorf("an option: %+v", p)
	}
}

func TestTorchWriteBack(t *testing.T) {
	tp := &torchPlan{mode: "pip", index: "https://i/whl/cu121/", lines: []torchLine{
		{req: reqParse("torch==2.1.0+cu118")}, {req: reqParse("torchvision")}}}
	frozen := []string{"numpy==1.26.4", "torch @ file:///c/cu121/torch-2.1.0%2Bcu121-cp311-cp311-linux_x86_64.whl", "torchvision==0.16.0+cu121"}
	want := []string{"numpy==1.26.4", "torch==2.1.0+cu118 # 2.1.0+cu121 from https://i/whl/cu121/", "torchvision==0.16.0+cu121 # from https://i/whl/cu121/"}
	if got := torchWriteBack(frozen, tp); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := torchWriteBack(frozen, nil); !reflect.DeepEqual(got, frozen) {
		t.Errorf("no torch: %q", got)
	}
}

func TestVenvBundledWheels(t *testing.T) {
	stdlib := t.TempDir()
	b := filepath.Join(stdlib, "ensurepip", "_bundled")
	for _, f := range []string{"pip-22.0.4-py3-none-any.whl", "pip-23.0.1-py3-none-any.whl", "setuptools-56.0.0-py3-none-any.whl"} {
		venvWrite(t, filepath.Join(b, f), "", 0o644)
	}
	got := venvBundledWheels(stdlib, "3.8.18")
	if filepath.Base(got["pip"]) != "pip-23.0.1-py3-none-any.whl" || filepath.Base(got["setuptools"]) != "setuptools-56.0.0-py3-none-any.whl" {
		t.Errorf("3.8: %v", got)
	}
	if got := venvBundledWheels(stdlib, "3.12.1"); got["setuptools"] != "" || got["pip"] == "" {
		t.Errorf("3.12 has no setuptools in its venvs: %v", got)
	}
	if got := venvBundledWheels(t.TempDir(), "3.11.7"); got != nil {
		t.Errorf("no wheels: %v", got)
	}
}

// TestVenvToolBinary: uv_version picks the uv on PATH when it fits, else
// pip-installs that uv into a venv of its own (and says why it cannot).
func TestVenvToolBinary(t *testing.T) {
	py := pyNeedPython(t)
	bin, _ := pyTestUV(t)
	house := t.TempDir()
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "1.0"})
	for _, c := range []struct{ version, want string }{
		{"", filepath.Join(bin, "uv")}, {">0.4", filepath.Join(bin, "uv")}, {"0.8.99", filepath.Join(bin, "uv")},
		{"==9.9", "could not install uv==9.9: "},
	} {
		conf := `agent.package_manager { uv_version: "` + c.version + `", no_index: true, find_links: ["` + house + `"] }
agent.venvs_cache.path: "` + t.TempDir() + `"`
		m := newVenvManager(venvTestConfig(t, conf, nil), nil)
		m.pathEnv = bin + ":" + filepath.Dir(py) + ":/usr/bin:/bin"
		in, err := m.selectInterpreter(context.Background(), "python3")
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.toolBinary(context.Background(), in, "uv")
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("uv_version %q: %q, want %q...", c.version, got, c.want)
		}
	}
}
