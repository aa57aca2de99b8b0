package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuildTargetDir(t *testing.T) {
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "print('built')\n"})
	id := addScriptTask(s, repo, "train.py")
	target := filepath.Join(t.TempDir(), "env")
	r := runAgent(t, executeEnv(t, s), "build", "--id", id, "--target", target)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, p := range []string{"bin/python", "task_repository/repo.git/train.py"} {
		if _, err := os.Stat(filepath.Join(target, p)); err != nil {
			t.Errorf("%s missing in the target: %v\n%s", p, err, r.stdout)
		}
	}
	for _, want := range []string{"Restoring running environment of task id [" + id + "]", "Virtual environment: " + target + "/bin", "Entry point: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	// Nothing changes on the task: no status, no requirements, no version.
	task := taskStatus(t, s, id)
	if task.Status != "queued" || (task.Script != nil && task.Script.VersionNum != "") {
		t.Errorf("build touched the task: status %s script %+v", task.Status, task.Script)
	}
	// The venv runs the code as built.
	out, err := exec.Command(filepath.Join(target, "bin/python"), filepath.Join(target, "task_repository/repo.git/train.py")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "built" {
		t.Errorf("running the built env: %v %s", err, out)
	}
}

func TestBuildDockerImageEntryPoints(t *testing.T) {
	needDockerImage(t)
	for _, entry := range []string{"reuse_task", "clone_task"} {
		t.Run(entry, func(t *testing.T) {
			s := startServer(t)
			repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('from image', os.environ.get('CLEARML_TASK_ID'))\n"})
			id := addDockerTask(s, repo, "train.py", "")
			image := "clearml-agent-test-build:" + strings.ToLower(id)
			t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })
			env := dockerEnv(t, s)
			r := runAgent(t, env, "build", "--id", id, "--docker", "--cpu-only", "--target", image, "--entry-point", entry)
			if r.code != 0 {
				t.Fatalf("build exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if left := dockerLeftovers(t, id); left != "" {
				t.Errorf("build left containers: %s", left)
			}
			before := taskStatus(t, s, id).Status
			// No repo mount: the code and venv must be in the image.
			start := time.Now()
			out, err := exec.Command("docker", "run", "--rm", "--network", "host", image).CombinedOutput()
			t.Logf("docker run %s took %v", image, time.Since(start))
			if err != nil {
				t.Fatalf("docker run %s: %v\n%s", image, err, out)
			}
			ran := id
			if entry == "clone_task" {
				// Each start runs a new clone; the built task is left as it was.
				ran = ""
				for _, tk := range s.Tasks() {
					if tk.ID != id && tk.Name == "Clone of docker e2e" {
						ran = tk.ID
					}
				}
				if ran == "" {
					t.Fatalf("no clone of %s was made:\n%s", id, out)
				}
				if st := taskStatus(t, s, id).Status; st != before {
					t.Errorf("the built task went from %s to %s", before, st)
				}
			}
			if task := taskStatus(t, s, ran); task.Status != "completed" {
				t.Errorf("status = %s (%s)\n%s", task.Status, task.StatusReason, out)
			}
			if log := s.TaskLogText(ran); !strings.Contains(log, "from image "+ran) {
				t.Errorf("task output not on the server:\n%s\ncontainer output:\n%s", log, out)
			}
		})
	}
}
