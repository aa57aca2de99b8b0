package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var venvTestSeeds struct {
	once sync.Once
	dir  string
}

// venvTestSeedRoot is a seed root (agent.venvs_cache.seed_path) shared by
// the tests of this and later runs: making a kit compiles pip (seconds).
// The folder is named by the hash of venv_seed.go, so a change of the
// kit's layout gets a fresh one.
func venvTestSeedRoot() string {
	s := &venvTestSeeds
	s.once.Do(func() {
		data, _ := os.ReadFile("venv_seed.go")
		sum := sha256.Sum256(data)
		s.dir = filepath.Join(os.TempDir(), fmt.Sprintf("clearml-test-venv-seeds-%x", sum[:6]))
		os.MkdirAll(s.dir, 0o755)
	})
	return s.dir
}

func TestVenvSeedKit(t *testing.T) {
	pyNeedPython(t)
	root := t.TempDir()
	house := filepath.Join(root, "wheels")
	pyTestWheel(t, house, pyWheel{Name: "venvdemo", Version: "1.0"})
	conf := fmt.Sprintf("agent.venvs_cache { path: %q, seed_path: %q }", filepath.Join(root, "cache"), venvTestSeedRoot())
	ctx := context.Background()
	var log execLog
	m := newVenvManager(venvTestConfig(t, conf, nil), nil)
	m.onExec = log.hook
	in, err := m.selectInterpreter(ctx, "python3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.kit(ctx, in); err != nil { // made once, outside the timing
		t.Fatal(err)
	}
	for i, ssp := range []bool{false, true} {
		log.argvs = nil
		dir := filepath.Join(root, fmt.Sprint("venv", i))
		t0 := time.Now()
		if err := m.createVenv(ctx, in, venvTool{}, dir); err != nil {
			t.Fatal(err)
		}
		t.Logf("new venv in %v", time.Since(t0))
		if log.total() != 0 {
			t.Errorf("a new venv ran %q", log.argvs)
		}
		cfg, _ := os.ReadFile(filepath.Join(dir, "pyvenv.cfg"))
		if !strings.Contains(string(cfg), fmt.Sprintf("include-system-site-packages = %v", ssp)) || strings.Contains(string(cfg), ".tmp-") {
			t.Errorf("pyvenv.cfg:\n%s", cfg)
		}
		m.cfg.set("agent.package_manager.system_site_packages", true)
	}
	vpy := filepath.Join(root, "venv0", "bin", "python")
	// python -m pip works, and so does bin/pip (a task's `pip install` must
	// reach the venv, not the system).
	if out, err := pyTestPip(t, vpy, "install", "--no-index", "--find-links", house, "venvdemo==1.0"); err != nil {
		t.Fatalf("pip install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(root, "venv0", "bin", "pip"), "--disable-pip-version-check", "freeze").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "venvdemo==1.0" {
		t.Errorf("bin/pip freeze: %v\n%s", err, out)
	}
	out, err = exec.Command(vpy, "-c", "import sys, pip, venvdemo; print(sys.prefix, venvdemo.__file__)").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), filepath.Join(root, "venv0")+" "+filepath.Join(root, "venv0", "lib")) {
		t.Errorf("venv python: %v\n%s", err, out)
	}
	if v := venvPipVersion(vpy); v == "" {
		t.Error("the seed's pip version is not found")
	}
	// The seed is shared: read-only, and no task's install lands there.
	k, _ := m.kit(ctx, in)
	if err := os.WriteFile(filepath.Join(k.seed(), "x"), nil, 0o644); err == nil && os.Geteuid() != 0 {
		t.Error("the seed is writable")
	}
	if _, err := os.Stat(filepath.Join(k.seed(), "venvdemo")); err == nil {
		t.Error("pip installed into the seed")
	}
}
