package main

// End-to-end tests of the task's Python environment (issue 13): the built
// agent runs real tasks against the stand-in server, installing test
// wheels from a loopback PEP 503 index that holds PyTorch builds for
// CUDA 11.8 and 12.1 and for the CPU, laid out like download.pytorch.org.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// pyE2EIndex is the loopback index of the Python end-to-end tests, made
// once per test process (its wheels are written in Go, in milliseconds):
//
//	/simple/      venvdemo 1.0 (two modules) and 2.0, venvdep 3.1, prio1, postpkg, Cython, and torch 2.1.0 as on PyPI
//	/whl/cu118/   torch 2.1.0+cu118, torchvision 0.16.0+cu118
//	/whl/cu121/   torch 2.1.0+cu121
//	/whl/cpu/     torch 2.1.0+cpu, torchvision 0.16.0+cpu
//	poetry 1.2.9  (/simple/) a stand-in whose `poetry` runs the system's
var pyE2EIndex struct {
	once sync.Once
	x    *pyTestIndex
}

func pyE2E(t *testing.T) *pyTestIndex {
	t.Helper()
	pyNeedPython(t)
	s := &pyE2EIndex
	s.once.Do(func() {
		dir := filepath.Join(filepath.Dir(agentBin), "pyindex")
		x := &pyTestIndex{indexes: map[string]map[string][]string{}}
		x.srv = httptest.NewServer(http.HandlerFunc(x.serve)) // lives as long as the test process
		w := func(sub string, pw pyWheel) string { return pyTestWheel(t, filepath.Join(dir, sub), pw) }
		x.Add("/simple/",
			w("simple", pyWheel{Name: "venvdemo", Version: "1.0", Files: map[string]string{"venvdemo/extra.py": "X = 1\n"}}),
			w("simple", pyWheel{Name: "venvdemo", Version: "2.0"}),
			w("simple", pyWheel{Name: "venvdep", Version: "3.1"}), w("simple", pyWheel{Name: "prio1", Version: "1.0"}),
			w("simple", pyWheel{Name: "postpkg", Version: "1.0"}), w("simple", pyWheel{Name: "Cython", Version: "3.0.0"}),
			w("simple", pyWheel{Name: "torch", Version: "2.1.0"}),
			w("simple", pyWheel{Name: "poetry", Version: "1.2.9", Files: map[string]string{
				"poetry/__init__.py":                      "import os, sys\n\ndef main():\n    os.execv('/usr/bin/poetry', ['/usr/bin/poetry'] + sys.argv[1:])\n",
				"poetry-1.2.9.dist-info/entry_points.txt": "[console_scripts]\npoetry = poetry:main\n",
			}}))
		for _, v := range []string{"cu118", "cu121", "cpu"} {
			x.Add("/whl/"+v+"/", w(v, pyWheel{Name: "torch", Version: "2.1.0+" + v}))
		}
		for _, v := range []string{"cu118", "cpu"} {
			x.Add("/whl/"+v+"/", w(v, pyWheel{Name: "torchvision", Version: "0.16.0+" + v}))
		}
		s.x = x
	})
	return s.x
}

// pyE2EEnv is the agent's environment for the Python tests: the stand-in
// server, a private venv cache (the tests count builds and hits), the
// shared venv kits, pip pointed at the loopback index, and clearml.conf
// with conf added.
func pyE2EEnv(t *testing.T, s *fakeserver.Server, x *pyTestIndex, conf string) map[string]string {
	t.Helper()
	env := executeEnv(t, s)
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = t.TempDir()
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__SEED_PATH"] = venvTestSeedRoot()
	env["PIP_INDEX_URL"] = x.URL("/simple/")
	env["PIP_CONFIG_FILE"] = os.DevNull
	env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
	base := fmt.Sprintf(`agent {
  package_manager { pip_version: [], extra_index_url_template: "%s" }
  pip_download_cache.path: %q
}
`, x.URL("/whl/")+"cu{}/", filepath.Join(env["HOME"], "pip-download-cache"))
	writeFile(t, filepath.Join(env["HOME"], "clearml.conf"), base+conf)
	return env
}

// pyTask adds a queued task running entry from repo with requirements.
func pyTask(s *fakeserver.Server, repo, entry, binary, reqs string) string {
	sc := &fakeserver.Script{Repository: repo, EntryPoint: entry, Binary: binary}
	if reqs != "" {
		sc.Requirements = map[string]any{"pip": reqs}
	}
	id := s.AddTask(fakeserver.TaskSpec{Name: "py-e2e", Script: sc})
	s.Enqueue(id, fakeserver.DefaultQueueName)
	return id
}

// pyRun executes the task and returns the agent's result, the task and its log.
func pyRun(t *testing.T, s *fakeserver.Server, env map[string]string, id string, args ...string) (runResult, fakeserver.Task, string) {
	t.Helper()
	r := runAgent(t, env, append([]string{"execute", "--id", id}, args...)...)
	return r, taskStatus(t, s, id), s.TaskLogText(id)
}

// pyFrozen is what the agent wrote back with tasks.set_requirements.
func pyFrozen(task fakeserver.Task) string {
	if task.Script == nil {
		return ""
	}
	switch v := task.Script.Requirements["pip"].(type) {
	case []any:
		var lines []string
		for _, l := range v {
			lines = append(lines, fmt.Sprint(l))
		}
		return strings.Join(lines, "\n")
	case string:
		return v
	}
	return ""
}

// pyRootProbes lists the index roots asked for (/whl/cu122/), in order.
func pyRootProbes(x *pyTestIndex) []string {
	var out []string
	for _, r := range x.Requests() {
		if strings.HasPrefix(r, "/whl/") && strings.Count(r, "/") == 3 && strings.HasSuffix(r, "/") {
			out = append(out, r)
		}
	}
	return out
}

func pyCount(reqs []string, prefix string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// TestPythonTorchE2E: PyTorch for the host's CUDA (part 1). The fake
// nvidia-smi reports the driver's CUDA version; the task asks for
// torch==2.1.0+cu118 and gets the build for the host each time.
func TestPythonTorchE2E(t *testing.T) {
	x := pyE2E(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"t.py": "import torch\nprint('TORCH', torch.VERSION)\n"})
	env := pyE2EEnv(t, s, x, "")
	smiPath := filepath.Join(mustAbs(t, "testdata/gpu/fake/bin")) + string(os.PathListSeparator) + os.Getenv("PATH")
	const asked = "torch==2.1.0+cu118"
	for _, c := range []struct {
		name   string
		env    map[string]string
		args   []string
		reqs   string
		want   string   // the installed build
		probes []string // index roots probed, in order
		hit    bool
	}{
		{name: "driver CUDA 12.2: the closest lower index, cu121", env: map[string]string{"PATH": smiPath, "FAKE_SMI_CUDA": "12.2"},
			want: "2.1.0+cu121", probes: []string{"/whl/cu122/", "/whl/cu121/"}},
		{name: "driver CUDA 11.8: cu118", env: map[string]string{"PATH": smiPath, "FAKE_SMI_CUDA": "11.8"},
			want: "2.1.0+cu118", probes: []string{"/whl/cu118/"}},
		{name: "--cpu-only: the CPU index, not probed", env: map[string]string{"PATH": smiPath, "FAKE_SMI_CUDA": "12.2"}, args: []string{"--cpu-only"},
			want: "2.1.0+cpu"},
		{name: "no GPU: the CPU wheels again (a cache hit)", want: "2.1.0+cpu", hit: true},
		{name: "CUDA_VERSION wins over the driver; answers remembered", env: map[string]string{"PATH": smiPath, "FAKE_SMI_CUDA": "11.8", "CUDA_VERSION": "12.1.1"},
			want: "2.1.0+cu121", hit: true},
		{name: "another venv: the wheel from agent.pip_download_cache", env: map[string]string{"PATH": smiPath, "FAKE_SMI_CUDA": "12.2"},
			reqs: asked + "\nvenvdemo==1.0", want: "2.1.0+cu121"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range c.env {
				e[k] = v
			}
			reqs := c.reqs
			if reqs == "" {
				reqs = asked
			}
			x.Reset()
			id := pyTask(s, repo, "t.py", "python3", reqs)
			r, task, log := pyRun(t, s, e, id, c.args...)
			if r.code != 0 || task.Status != "completed" {
				t.Fatalf("exit %d, %s (%s)\n%s\n%s", r.code, task.Status, task.StatusReason, log, r.stderr)
			}
			if !strings.Contains(log, "TORCH "+c.want+"\n") {
				t.Errorf("want torch %s; log:\n%s", c.want, log)
			}
			if got := pyRootProbes(x); strings.Join(got, " ") != strings.Join(c.probes, " ") {
				t.Errorf("probed %q, want %q", got, c.probes)
			}
			if hit := strings.Contains(log, "Using cached virtual environment"); hit != c.hit {
				t.Errorf("cache hit %v, want %v", hit, c.hit)
			}
			frozen := pyFrozen(task)
			variant := strings.SplitN(c.want, "+", 2)[1]
			wantLine := asked + " # " + c.want + " from " + x.URL("/whl/"+variant+"/")
			if !strings.Contains(frozen, wantLine) {
				t.Errorf("set_requirements does not carry the asked version: want %q in\n%s", wantLine, frozen)
			}
			if c.reqs != "" {
				// The wheel came from the download cache: the index served
				// no torch file, only the other package.
				if n := pyCount(x.Requests(), "/files/whl/"); n != 0 {
					t.Errorf("torch was downloaded again: %q", x.Requests())
				}
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join(env["HOME"], "pip-download-cache", "*", "torch-*.whl"))
	if len(files) != 3 {
		t.Errorf("download cache holds %q, want the cu118, cu121 and cpu wheels", files)
	}
}

// TestPythonTorchDirectE2E: pytorch_resolve: direct picks the wheel from the
// index's flat page (torch_stable.html), lower CUDA versions first tried
// down from the host's, and records the wheel's URL.
func TestPythonTorchDirectE2E(t *testing.T) {
	x := pyE2E(t)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"t.py": "import torch, torchvision\nprint('TORCH', torch.VERSION, torchvision.VERSION)\n"})
	env := pyE2EEnv(t, s, x, fmt.Sprintf("agent.package_manager { pytorch_resolve: direct, torch_page: %q }\n", x.URL("/whl/")+"cu{}/torch_stable.html"))
	env["PATH"] = mustAbs(t, "testdata/gpu/fake/bin") + string(os.PathListSeparator) + os.Getenv("PATH")
	env["FAKE_SMI_CUDA"] = "11.9"
	x.Reset()
	id := pyTask(s, repo, "t.py", "python3", "torch==2.1.0+cu121\ntorchvision")
	r, task, log := pyRun(t, s, env, id)
	if r.code != 0 || task.Status != "completed" {
		t.Fatalf("exit %d, %s (%s)\n%s", r.code, task.Status, task.StatusReason, log)
	}
	if !strings.Contains(log, "TORCH 2.1.0+cu118 0.16.0+cu118\n") {
		t.Errorf("log:\n%s", log)
	}
	var pages []string
	for _, q := range x.Requests() {
		if strings.HasSuffix(q, ".html") {
			pages = append(pages, q)
		}
	}
	if strings.Join(pages, " ") != "/whl/cu119/torch_stable.html /whl/cu118/torch_stable.html" {
		t.Errorf("pages fetched: %q", pages)
	}
	url := x.URL("/files/whl/cu118/") + "torch-2.1.0%2Bcu118-py3-none-any.whl"
	if frozen := pyFrozen(task); !strings.Contains(frozen, "torch==2.1.0+cu121 # 2.1.0+cu118 from "+url) ||
		!strings.Contains(frozen, "torchvision==0.16.0+cu118 # from ") {
		t.Errorf("set_requirements:\n%s", frozen)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
