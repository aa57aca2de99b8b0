package main

// The agent's image (deploy/Dockerfile) and a rendered task pod run with
// docker: kwok runs nothing inside pods, so what a pod's containers do is
// tested by running the same images, commands and environment with docker.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

var (
	agentImageOnce sync.Once
	agentImageErr  error
)

// needAgentImage builds the agent's image with deploy/build-image.sh (a no-op
// when it is up to date) and returns its name; no engine skips (fails on CI).
func needAgentImage(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("docker tests skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no Docker engine answers (docker info failed); on CI the image tests must run")
		}
		t.Skip("no Docker engine answers (docker info failed)")
	}
	image := os.Getenv("CLEARML_AGENT_IMAGE")
	if image == "" {
		image = "clearml-agent:local"
	}
	agentImageOnce.Do(func() {
		out, err := exec.Command("bash", "deploy/build-image.sh", image).CombinedOutput()
		if err != nil {
			agentImageErr = errors.New("deploy/build-image.sh: " + err.Error() + "\n" + string(out))
		}
	})
	if agentImageErr != nil {
		t.Fatal(agentImageErr)
	}
	return image
}

// imageFiles lists the files of every layer of the image (docker save).
func imageFiles(t *testing.T, image string) []string {
	t.Helper()
	out, err := exec.Command("docker", "save", image).Output()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	outer := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := outer.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(outer)
		if h.Typeflag != tar.TypeReg || (!strings.HasSuffix(h.Name, "layer.tar") && !strings.HasPrefix(h.Name, "blobs/")) {
			continue
		}
		layer := tar.NewReader(bytes.NewReader(body))
		for {
			lh, err := layer.Next()
			if err != nil {
				break // the end, or a blob that is not a layer
			}
			files = append(files, strings.TrimSuffix(lh.Name, "/")+map[bool]string{true: "/"}[lh.Typeflag == tar.TypeDir])
		}
	}
	sort.Strings(files)
	return files
}

// The image holds the static binary, the CA bundle and an empty /tmp, runs as
// a non-root user, is under 15 MB, and its init-container command delivers
// the binary into a volume with a read-only root file system.
func TestAgentImage(t *testing.T) {
	image := needAgentImage(t)
	size, err := exec.Command("docker", "image", "inspect", "-f", "{{.Size}} {{.Config.User}} {{json .Config.Entrypoint}}", image).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(size))
	n, _ := strconv.Atoi(f[0])
	if n <= 0 || n > 15<<20 || f[1] != "65532:65532" || f[2] != `["/clearml-agent"]` {
		t.Errorf("image: size %d (limit 15 MB), user %s, entrypoint %s", n, f[1], f[2])
	}
	t.Logf("image %s: %d bytes", image, n)
	files := strings.Join(imageFiles(t, image), " ")
	if want := "clearml-agent etc/ etc/ssl/ etc/ssl/certs/ etc/ssl/certs/ca-certificates.crt tmp/"; files != want {
		t.Errorf("image files = %s\nwant %s", files, want)
	}
	out, err := exec.Command("docker", "run", "--rm", image, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "CLEARML-AGENT version "+agentVersion {
		t.Errorf("--version: %v %q", err, out)
	}
	// The init container, as the pod runs it: its user, read-only root, the emptyDir.
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	out, err = exec.Command("docker", "run", "--rm", "--user", "65532:65532", "--read-only", "-v", dir+":"+k8sBinDir,
		"--entrypoint", k8sImageBinary, image, k8sInstallBinary, "--target", k8sBinDir+"/clearml-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(dir, "clearml-agent"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), agentVersion) {
		t.Errorf("the delivered binary: %v %q", err, out)
	}
}

// k8sDockerRun runs one container of a rendered pod with docker, as a kubelet
// would: command and env with $(VAR) expanded, Secret references resolved
// (passed by name, so no value is in docker's argv), the user and read-only
// root of its securityContext, and the pod's volumes from host folders.
func k8sDockerRun(t *testing.T, c any, volumes map[string]string, secrets map[string]map[string]string, extra ...string) (string, error) {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	argv := []string{"run", "--rm", "--name", "clearml-k8s-test-" + hex.EncodeToString(b[:]), "--label", "clearml-k8s-test=1"}
	env := map[string]string{}
	cmdEnv := os.Environ()
	for _, e := range k8sList(c.(map[string]any), "env") {
		name := jget(e, "name").(string)
		if ref := jget(e, "valueFrom", "secretKeyRef"); ref != nil {
			env[name] = secrets[jget(ref, "name").(string)][jget(ref, "key").(string)]
		} else {
			v, _ := jget(e, "value").(string)
			env[name] = k8sExpandLikeKubelet(v, env)
		}
		argv = append(argv, "-e", name)
		cmdEnv = append(cmdEnv, name+"="+env[name])
	}
	for _, m := range k8sList(c.(map[string]any), "volumeMounts") {
		spec := volumes[jget(m, "name").(string)] + ":" + jget(m, "mountPath").(string)
		if jget(m, "readOnly") == true {
			spec += ":ro"
		}
		argv = append(argv, "-v", spec)
	}
	if u, ok := jget(c, "securityContext", "runAsUser").(float64); ok {
		argv = append(argv, "--user", strconv.Itoa(int(u)))
	} else if u, ok := jget(c, "securityContext", "runAsUser").(int); ok {
		argv = append(argv, "--user", strconv.Itoa(u))
	}
	if jget(c, "securityContext", "readOnlyRootFilesystem") == true {
		argv = append(argv, "--read-only")
	}
	argv = append(argv, extra...)
	var cmd []string
	for _, x := range k8sList(c.(map[string]any), "command") {
		cmd = append(cmd, k8sExpandLikeKubelet(x.(string), env))
	}
	if len(cmd) > 0 {
		argv = append(argv, "--entrypoint", cmd[0])
	}
	argv = append(argv, jget(c, "image").(string))
	if len(cmd) > 1 {
		argv = append(argv, cmd[1:]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "docker", argv...)
	run.Env = cmdEnv
	out, err := run.CombinedOutput()
	return string(out), err
}

// The rendered pod's containers, run with docker against the stand-in server:
// the init container delivers the binary, the task container runs the task's
// setup script and `execute --full-monitoring --require-queue` to completed.
func TestPodContainerCompletesTask(t *testing.T) {
	needDockerImage(t)
	image := needAgentImage(t)
	// Shell syntax the kubelet would expand if the glue did not escape it:
	// $(POD_MARK) is a variable of the container (bash finds no such command).
	setup := "export SETUP_MARK=\"$(echo set)$((1+1))$(POD_MARK)\""
	s := startServer(t)
	repo, _ := makeTaskRepo(t, map[string]string{"train.py": "import os\nprint('pod mark', os.environ.get('POD_MARK'), os.environ.get('SETUP_MARK'), os.environ.get('CLEARML_WORKER_ID'))\n"})
	id := s.AddTask(fakeserver.TaskSpec{Name: "k8s pod", Script: &fakeserver.Script{Repository: repo, EntryPoint: "train.py", Binary: "python3"},
		Container: map[string]string{"image": dockerTestImage, "arguments": "-e POD_MARK=from-task --network host",
			"setup_shell_script": setup}})
	if err := s.Enqueue(id, fakeserver.DefaultQueueName); err != nil {
		t.Fatal(err)
	}
	task := k8sTask{ID: id, Image: dockerTestImage, Arguments: "-e POD_MARK=from-task --network host",
		SetupScript: setup, NeedsGit: true, QueueName: fakeserver.DefaultQueueName}
	o := k8sPodOptions{WorkerID: "k8s-glue-test", AgentImage: image, Env: []k8sEnv{{Name: "CLEARML_API_HOST", Value: s.URL()}}}
	r := mustRender(t, k8sJSONTemplate(), nil, task, o)
	secrets := map[string]map[string]string{"creds": {"access": fakeserver.TestsAccessKey, "secret": fakeserver.TestsSecretKey}}
	bin := t.TempDir()
	os.Chmod(bin, 0o777)
	vols := map[string]string{k8sBinVolume: bin}
	if out, err := k8sDockerRun(t, jget(r.Pod, "spec", "initContainers", 0), vols, secrets); err != nil {
		t.Fatalf("init container: %v\n%s", err, out)
	}
	out, err := k8sDockerRun(t, jget(r.Pod, "spec", "containers", 0), vols, secrets, "--network", "host", "-v", repo+":"+repo+":ro")
	if err != nil {
		t.Fatalf("task container: %v\n%s", err, out)
	}
	if st := taskStatus(t, s, id); st.Status != "completed" {
		t.Fatalf("status %s (%s)\n%s", st.Status, st.StatusReason, out)
	}
	if log := s.TaskLogText(id); !strings.Contains(log, "pod mark from-task set2 k8s-glue-test:"+id) {
		t.Errorf("the task's log lacks its output:\n%s", log)
	}
	if strings.Contains(out, fakeserver.TestsSecretKey) {
		t.Error("the secret key shows in the container's output")
	}
}
