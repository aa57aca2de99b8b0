package main

// End-to-end: setup subprocesses (git, pip) die with a killed `execute`,
// a venv-cache entry whose build was killed is rebuilt, and a failed clone
// says why and leaves nothing behind (issue 12, items 6 and 9).

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// processesWith lists the live processes whose command line holds needle.
func processesWith(needle string) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !pidAlive(pid) {
			continue
		}
		if cl := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cl, needle) {
			out[pid] = cl
		}
	}
	return out
}

// waitAllGone waits up to d for every pid to end; it reports the rest.
func waitAllGone(pids map[int]string, d time.Duration) map[int]string {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		left := map[int]string{}
		for pid, cl := range pids {
			if pidAlive(pid) {
				left[pid] = cl
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// needParentDeathSignal skips where a SIGKILLed agent cannot take its
// children along (no Pdeathsig outside Linux).
func needParentDeathSignal(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux-only")
	}
}

// killAll SIGKILLs what a failed test left running.
func killAll(pids map[int]string) {
	for pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestGitExecuteCloneFailure: the task's status names git's own error for
// a repository that is not one, and the vcs cache keeps no folder for it.
func TestGitExecuteCloneFailure(t *testing.T) {
	s := startServer(t)
	id := addScriptTask(s, "file:///etc", "train.py")
	env := executeEnv(t, s)
	cache := t.TempDir()
	env["CLEARML_AGENT__AGENT__VCS_CACHE__PATH"] = cache
	r := runAgent(t, env, "execute", "--id", id)
	if r.code == 0 {
		t.Fatalf("execute succeeded:\n%s", r.stdout)
	}
	task := taskStatus(t, s, id)
	if task.Status != "failed" || !strings.Contains(task.StatusReason+task.StatusMessage, "'/etc' does not appear to be a git repository") {
		t.Errorf("status %s, reason %q, message %q", task.Status, task.StatusReason, task.StatusMessage)
	}
	if strings.Contains(r.stderr, "and the repository exists") {
		t.Errorf("the error is git's boilerplate: %s", r.stderr)
	}
	left, _ := os.ReadDir(cache)
	for _, e := range left {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("the failed clone left %s in the vcs cache", e.Name())
		}
	}
}

// TestProcSetupGitDiesWithAgent: kill -9 of execute while git clones
// kills git (here a stand-in that hangs) with it.
func TestProcSetupGitDiesWithAgent(t *testing.T) {
	needParentDeathSignal(t)
	shim := t.TempDir()
	realGit, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	pidFile := filepath.Join(shim, "clone.pid")
	writeFile(t, filepath.Join(shim, "git"), fmt.Sprintf(`#!/bin/sh
case "$*" in
*" clone "*) echo $$ > %[1]q.tmp; mv %[1]q.tmp %[1]q; exec sleep 300 ;;
esac
exec %[2]q "$@"
`, pidFile, realGit))
	os.Chmod(filepath.Join(shim, "git"), 0o755)
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('never')\n"})
	id := addScriptTask(s, repo, "train.py")
	env := executeEnv(t, s)
	env["PATH"] = shim + ":" + os.Getenv("PATH") // the last PATH wins
	cmd, _ := startAgentCmd(t, env, "execute", "--id", id)
	gitPID := readPIDWithin(t, pidFile, 60*time.Second)
	cmd.Process.Kill()
	cmd.Wait()
	if left := waitAllGone(map[int]string{gitPID: "git clone"}, 3*time.Second); len(left) > 0 {
		killAll(left)
		t.Errorf("git outlived the killed agent: %v", left)
	}
}

// readPIDWithin waits up to d for a pid in file.
func readPIDWithin(t *testing.T, file string, d time.Duration) int {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(file); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no pid in %s after %v", file, d)
	return 0
}

// slowWheels serves a find-links page and one wheel; while stalled, the
// wheel's download starts and then hangs.
type slowWheels struct {
	dir, name string
	mu        sync.Mutex
	stalled   bool
	started   chan struct{} // a stalled download began
	release   chan struct{}
	once      sync.Once
}

func (w *slowWheels) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		fmt.Fprintf(rw, "<html><body><a href=%q>%s</a></body></html>\n", w.name, w.name)
		return
	}
	data, err := os.ReadFile(filepath.Join(w.dir, filepath.Base(r.URL.Path)))
	if err != nil {
		http.NotFound(rw, r)
		return
	}
	w.mu.Lock()
	stalled := w.stalled
	w.mu.Unlock()
	if !stalled {
		rw.Write(data)
		return
	}
	rw.Header().Set("Content-Length", strconv.Itoa(len(data)))
	rw.Write(data[:10])
	rw.(http.Flusher).Flush()
	w.once.Do(func() { close(w.started) })
	select {
	case <-w.release:
	case <-r.Context().Done():
	}
}

// TestVenvCacheBuildKilledAgent: kill -9 of execute while pip installs
// into a venv-cache entry leaves no pip behind (it used to go on as an
// orphan, writing into the entry), and the next run builds a good entry.
func TestVenvCacheBuildKilledAgent(t *testing.T) {
	needParentDeathSignal(t)
	if testing.Short() {
		t.Skip("builds real venvs")
	}
	if out, err := exec.Command("python3", "-c", "import venv, ensurepip").CombinedOutput(); err != nil {
		t.Skipf("python3 with venv and ensurepip is needed: %v %s", err, out)
	}
	wheels := &slowWheels{dir: t.TempDir(), name: "slowpkg-1.0-py3-none-any.whl", stalled: true,
		started: make(chan struct{}), release: make(chan struct{})}
	venvTestWheel(t, wheels.dir, "slowpkg", "1.0")
	srv := httptest.NewServer(wheels)
	defer srv.Close()
	defer func() {
		select {
		case <-wheels.release:
		default:
			close(wheels.release)
		}
	}()

	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import slowpkg\nprint('slowpkg', slowpkg.VERSION)\n"})
	addTask := func() string {
		id := s.AddTask(fakeserver.TaskSpec{Name: "slow pip", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3",
			Requirements: map[string]any{"pip": "slowpkg==1.0\n"}}})
		s.Enqueue(id, fakeserver.DefaultQueueName)
		return id
	}
	env := executeEnv(t, s)
	cache := t.TempDir()
	env["CLEARML_AGENT__AGENT__VENVS_CACHE__PATH"] = cache
	env["CLEARML_AGENT__AGENT__PACKAGE_MANAGER__NO_INDEX"] = "true"
	env["CLEARML_AGENT__AGENT__PACKAGE_MANAGER__FIND_LINKS"] = fmt.Sprintf("[%q]", srv.URL+"/")

	cmd, out := startAgentCmd(t, env, "execute", "--id", addTask())
	select {
	case <-wheels.started:
	case <-time.After(180 * time.Second):
		t.Fatalf("pip did not start downloading the wheel; output:\n%s", out)
	}
	pips := processesWith(cache)
	if len(pips) == 0 {
		t.Fatalf("no process runs from the venv cache %s; output:\n%s", cache, out)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if left := waitAllGone(pips, 3*time.Second); len(left) > 0 {
		killAll(left)
		t.Errorf("setup processes outlived the killed agent: %v", left)
	}

	// The next run finds the half-built entry, rebuilds it and runs.
	wheels.mu.Lock()
	wheels.stalled = false
	wheels.mu.Unlock()
	id := addTask()
	r := runAgent(t, env, "execute", "--id", id)
	if r.code != 0 || !strings.Contains(r.stdout, "Added the virtual environment to the cache") {
		t.Fatalf("second run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if log := s.TaskLogText(id); !strings.Contains(log, "slowpkg 1.0") {
		t.Errorf("the rebuilt venv lacks slowpkg:\n%s", log)
	}
	metas, _ := filepath.Glob(filepath.Join(cache, "*", venvMetaName))
	if len(metas) != 1 {
		t.Errorf("complete cache entries: %v", metas)
	}
	if left := processesWith(cache); len(left) > 0 {
		killAll(left)
		t.Errorf("processes still run from the venv cache: %v", left)
	}
}

// TestGlueCLIDiesWithGlue: a glue SIGKILLed while kubectl, or one of
// SLURM's commands, runs does not leave that command running (it would
// keep writing into the glue's HOME, or act for a dead glue).
func TestGlueCLIDiesWithGlue(t *testing.T) {
	needParentDeathSignal(t)
	tmpl := writeFile(t, filepath.Join(t.TempDir(), "job.sh"), "#!/bin/sh\n${CLEARML_AGENT_EXECUTE}\n")
	pod := writeFile(t, filepath.Join(t.TempDir(), "pod.yaml"), k8sTestTemplate)
	for _, c := range []struct {
		tools []string
		args  []string
	}{
		{[]string{"kubectl"}, []string{"k8s", "--queue", "default", "--namespace", "clearml", "--agent-image", "clearml-agent:local", "--template-yaml", pod}},
		{[]string{"sbatch", "squeue", "scontrol", "scancel", "sacct", "sinfo"}, []string{"slurm", "--foreground", "--queue", "default", "--template-files", tmpl}},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			shim := t.TempDir()
			pidFile := filepath.Join(shim, "tool.pid")
			for _, tool := range c.tools {
				// kubectl's local template parse at start goes to the real
				// one: the glue's API calls are what hangs.
				pass := ""
				if real, err := exec.LookPath(tool); err == nil && tool == "kubectl" {
					pass = fmt.Sprintf("case \"$*\" in *--local*) exec %q \"$@\" ;; esac\n", real)
				}
				writeFile(t, filepath.Join(shim, tool), fmt.Sprintf("#!/bin/sh\n%[2]secho $$ > %[1]q.tmp; mv %[1]q.tmp %[1]q; exec sleep 300\n", pidFile, pass))
				os.Chmod(filepath.Join(shim, tool), 0o755)
			}
			env := serverEnv(startServer(t))
			env["PATH"] = shim + ":" + os.Getenv("PATH")
			env["CLEARML_AGENT_RUNTIME_DIR"] = t.TempDir()
			env["HOME"] = t.TempDir() // the glues' state folders
			cmd, out := startAgentCmd(t, env, c.args...)
			pid := readPIDWithin(t, pidFile, 60*time.Second)
			cmd.Process.Kill()
			cmd.Wait()
			if left := waitAllGone(map[int]string{pid: c.args[0] + "'s tool"}, 3*time.Second); len(left) > 0 {
				killAll(left)
				t.Errorf("the tool outlived the killed glue: %v\n%s", left, out)
			}
		})
	}
}
