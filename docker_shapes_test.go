package main

// Test infrastructure for docker mode in the shapes fleets deploy (issue
// 14): a non-root variant of the test image, the agent itself running in a
// container with the host's docker socket (clearml-server's agent-services),
// Podman on this machine, and a sampler of every process's argv (no secret
// may show there). The docker end-to-end tests build on these.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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

// dockerNonRootImage is dockerTestImage with a user "clearml" (uid/gid 1000,
// home /home/clearml) and USER 1000 (testdata/docker/build-nonroot-image.sh).
const dockerNonRootImage = "clearml-agent-test-nonroot:bookworm"

var nonRootImageOnce struct {
	sync.Once
	err error
}

// needNonRootImage builds the non-root image once per test binary (the
// script is idempotent: it rebuilds only when its recipe or the base image
// changed) and skips (fails on CI) when it cannot.
func needNonRootImage(t testing.TB) string {
	t.Helper()
	needDockerImage(t)
	nonRootImageOnce.Do(func() {
		out, err := exec.Command("bash", "testdata/docker/build-nonroot-image.sh").CombinedOutput()
		if err != nil {
			nonRootImageOnce.err = fmt.Errorf("building %s: %v\n%s", dockerNonRootImage, err, out)
		}
	})
	if err := nonRootImageOnce.err; err != nil {
		dockerMissing(t, err.Error())
	}
	return dockerNonRootImage
}

// TestNonRootTestImage checks the non-root image: uid 1000 with a
// writable home, and no way into /root (where the agent's default
// in-container paths are).
func TestNonRootTestImage(t *testing.T) {
	img := needNonRootImage(t)
	out, err := exec.Command("docker", "run", "--rm", img, "sh", "-c",
		`id -u; id -g; echo "$HOME"; touch "$HOME/w" && echo home-writable; ls /root >/dev/null 2>&1 || echo root-closed`).CombinedOutput()
	if err != nil || string(out) != "1000\n1000\n/home/clearml\nhome-writable\nroot-closed\n" {
		t.Errorf("%v: %q", err, out)
	}
	user, _ := exec.Command("docker", "image", "inspect", "-f", "{{.Config.User}}", img).Output()
	if strings.TrimSpace(string(user)) != "1000" {
		t.Errorf("image user %q", user)
	}
}

// dockerMissing skips, or fails on CI, where a component the test needs is missing.
func dockerMissing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (on CI the docker tests must run)", why)
	}
	t.Skip(why)
}

// testRandHex is a short random name part for containers and folders.
func testRandHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// agentContainer runs the static agent inside a container, as clearml-server's
// docker-compose runs agent-services: the host's docker socket and docker
// CLI, a host folder shared with the task containers through
// CLEARML_AGENT_DOCKER_HOST_MOUNT, and the host's network (the stand-in
// server listens on loopback).
type agentContainer struct {
	Image   string // the agent container's image; default dockerTestImage
	HostDir string // host side of the shared mount; default a fresh temp folder
	// Prefix is a folder that exists only in the agent container; the
	// binary, HOME and TMPDIR live under it, so a path the agent wrongly
	// hands to the host's engine is created on the host under this unique
	// name (which the cleanup removes), not in the host's /root or /usr.
	Prefix string
	Home   string // HOME in the agent container: Prefix/root (the compose file's /root)
	Mount  string // the shared mount in the agent container: Home/.clearml
	Name   string // the container's name (Start); Run and Exec add a suffix
}

// newAgentContainer fills the defaults; the test's cleanup removes the
// container and anything the host's engine created under the prefix.
func newAgentContainer(t testing.TB) *agentContainer {
	t.Helper()
	needDockerImage(t)
	if err := dockerCLIRunsInImage(); err != nil {
		dockerMissing(t, err.Error())
	}
	id := testRandHex()
	prefix := "/tmp/clearml-aic-" + id
	a := &agentContainer{Image: dockerTestImage, HostDir: t.TempDir(), Prefix: prefix,
		Home: prefix + "/root", Mount: prefix + "/root/.clearml", Name: "clearml-test-aic-" + id}
	t.Cleanup(func() {
		// Our containers only: the name prefix is unique to this test.
		if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "name=^"+a.Name).Output(); len(out) > 0 {
			exec.Command("docker", append([]string{"rm", "-f"}, strings.Fields(string(out))...)...).Run()
		}
		os.RemoveAll(a.Prefix) // only what a wrong host path made the engine create
	})
	return a
}

var dockerCLIInImage struct {
	sync.Once
	err error
}

// dockerCLIRunsInImage checks once that the host's docker CLI, mounted
// into the test image, runs there (a static CLI does; a dynamic one only
// with the same libraries).
func dockerCLIRunsInImage() error {
	dockerCLIInImage.Do(func() {
		docker, err := exec.LookPath("docker")
		if err != nil {
			dockerCLIInImage.err = fmt.Errorf("no docker CLI")
			return
		}
		out, err := exec.Command("docker", "run", "--rm", "-v", docker+":/usr/local/bin/docker:ro", dockerTestImage,
			"/usr/local/bin/docker", "--version").CombinedOutput()
		if err != nil {
			dockerCLIInImage.err = fmt.Errorf("the host's docker CLI (%s) does not run inside %s, so the agent's container cannot drive the engine: %v: %s",
				docker, dockerTestImage, err, strings.TrimSpace(string(out)))
		}
	})
	return dockerCLIInImage.err
}

// AgentPath is the agent binary's path inside the agent container.
func (a *agentContainer) AgentPath() string { return a.Prefix + "/bin/clearml-agent" }

// HostMountEnv is the CLEARML_AGENT_DOCKER_HOST_MOUNT value.
func (a *agentContainer) HostMountEnv() string { return a.HostDir + ":" + a.Mount }

// dockerRun is the `docker run` of the agent's container up to its image.
// Values of env reach the container as -e NAME with the value in the
// docker CLI's own environment (the returned list), never on a command line.
func (a *agentContainer) dockerRun(env map[string]string, name string, detach bool) ([]string, []string) {
	docker, _ := exec.LookPath("docker")
	argv := []string{"docker", "run", "--name", name, "--network", "host",
		"-l", "clearml-test=agent-in-container",
		"-v", "/var/run/docker.sock:/var/run/docker.sock",
		"-v", docker + ":/usr/local/bin/docker:ro",
		"-v", agentBin + ":" + a.AgentPath() + ":ro",
		"-v", a.HostMountEnv(),
		"-e", "CLEARML_AGENT_DOCKER_HOST_MOUNT=" + a.HostMountEnv(),
		"-e", "TMPDIR=" + a.Prefix + "/tmp", "-e", "HOME=" + a.Home, "-e", "CLEARML_TEST_CONTAINER_NAME=" + name}
	if detach {
		argv = append(argv, "-d")
	} else {
		argv = append(argv, "--rm")
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		if k != "HOME" { // the container's own HOME, as in the compose file
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var cliEnv []string
	for _, k := range keys {
		argv = append(argv, "-e", k)
		cliEnv = append(cliEnv, k+"="+env[k])
	}
	return append(argv, a.Image), cliEnv
}

// agentArgv is the agent command in the container: TMPDIR is created first.
func (a *agentContainer) agentArgv(args []string) []string {
	return append([]string{"sh", "-c", `mkdir -p "$TMPDIR" "$HOME" && exec "$0" "$@"`, a.AgentPath()}, args...)
}

// Run runs the agent in the container in the foreground.
func (a *agentContainer) Run(t testing.TB, env map[string]string, args ...string) runResult {
	t.Helper()
	return a.Exec(t, env, a.agentArgv(args)...)
}

// Exec runs any command in a container of the agent's shape, in the foreground.
func (a *agentContainer) Exec(t testing.TB, env map[string]string, command ...string) runResult {
	t.Helper()
	argv, cliEnv := a.dockerRun(env, a.Name+"-"+testRandHex(), false)
	argv = append(argv, command...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), cliEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return runResult{code, out.String(), errb.String()}
}

// Start runs the agent (a daemon) detached, named a.Name; Logs and the
// test's cleanup follow it.
func (a *agentContainer) Start(t testing.TB, env map[string]string, args ...string) {
	t.Helper()
	argv, cliEnv := a.dockerRun(env, a.Name, true)
	argv = append(argv, a.agentArgv(args)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), cliEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("starting the agent's container: %v\n%s", err, out)
	}
}

// Logs is the agent container's output so far.
func (a *agentContainer) Logs(t testing.TB) string {
	out, _ := exec.Command("docker", "logs", a.Name).CombinedOutput()
	return string(out)
}

// StrayHostPaths lists what the host's engine created under the prefix:
// container paths the agent handed to `docker run` as if they were host paths.
func (a *agentContainer) StrayHostPaths() []string {
	var out []string
	filepath.Walk(a.Prefix, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestAgentContainerShape checks the harness itself: the agent runs in the
// test image, reaches the stand-in server on loopback, and the docker CLI
// there drives the host's engine through the mounted socket.
func TestAgentContainerShape(t *testing.T) {
	a := newAgentContainer(t)
	s := startServer(t)
	r := a.Run(t, serverEnv(s), "list")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "workers:") {
		t.Fatalf("list from the agent's container: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(strings.Join(psArgs(), "\n"), fakeserver.TestsSecretKey) {
		t.Errorf("the secret key shows in a command line")
	}
	r = a.Exec(t, nil, "docker", "ps", "-q", "--filter", "label=clearml-test=agent-in-container", "--filter", "name=^"+a.Name)
	if r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		// It lists itself: the CLI in the container drives the host's engine.
		t.Fatalf("docker inside the agent's container: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The agent finds its own container (to join its network) from its mounts.
	r = a.Exec(t, nil, "sh", "-c", `cat /proc/self/mountinfo; echo ===; docker inspect -f "{{.Id}} {{.HostConfig.NetworkMode}}" "$CLEARML_TEST_CONTAINER_NAME"`)
	mountinfo, inspect, _ := strings.Cut(r.stdout, "===\n")
	if id := dockerSelfContainerID(mountinfo); r.code != 0 || id == "" || strings.TrimSpace(inspect) != id+" host" {
		t.Errorf("own container id %q; docker inspect says %q (exit %d, %s)", id, inspect, r.code, r.stderr)
	}
	if stray := a.StrayHostPaths(); len(stray) != 0 {
		t.Errorf("host paths created by the engine: %v", stray)
	}
}

// podmanConfOnce holds what needPodman found, shared by the tests.
var podmanConfOnce struct {
	sync.Once
	env map[string]string
	err error
}

// needPodman makes podman ready to run the test image as root here, and
// returns the environment the podman CLI needs (CONTAINERS_CONF when this
// machine needs lower rlimits than podman's defaults). It skips (fails on
// CI) when podman is missing or cannot run a container.
func needPodman(t testing.TB) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("podman tests skipped in -short mode")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		dockerMissing(t, "podman is not installed (apt-get install podman)")
	}
	podmanConfOnce.Do(func() { podmanConfOnce.env, podmanConfOnce.err = podmanPrepare() })
	if podmanConfOnce.err != nil {
		dockerMissing(t, podmanConfOnce.err.Error())
	}
	return podmanConfOnce.env
}

// podmanPrepare loads the test image into podman's store (from docker's,
// once) and finds a configuration that runs it.
func podmanPrepare() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if exec.CommandContext(ctx, "podman", "image", "exists", dockerTestImage).Run() != nil {
		save := exec.CommandContext(ctx, "docker", "save", dockerTestImage)
		load := exec.CommandContext(ctx, "podman", "load", "-q")
		pipe, err := save.StdoutPipe()
		if err != nil {
			return nil, err
		}
		load.Stdin = pipe
		var lerr bytes.Buffer
		load.Stderr = &lerr
		if err := save.Start(); err != nil {
			return nil, fmt.Errorf("docker save %s: %v (build it with testdata/docker/build-test-image.sh)", dockerTestImage, err)
		}
		lerrRun := load.Run()
		if err := save.Wait(); err != nil || lerrRun != nil {
			return nil, fmt.Errorf("docker save %s | podman load: %v %v: %s", dockerTestImage, err, lerrRun, lerr.String())
		}
	}
	try := func(env map[string]string) error {
		cmd := exec.CommandContext(ctx, "podman", "run", "--rm", "--network", "host", dockerTestImage, "true")
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("podman run --rm --network host %s true: %v: %s", dockerTestImage, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	first := try(nil)
	if first == nil {
		return map[string]string{}, nil
	}
	// Rootful podman raises RLIMIT_NOFILE and RLIMIT_NPROC to its own
	// defaults, which a process without CAP_SYS_RESOURCE (this sandbox)
	// may not: run with the limits this process has.
	conf, err := podmanLimitsConf()
	if err != nil {
		return nil, fmt.Errorf("%v; and %v", first, err)
	}
	env := map[string]string{"CONTAINERS_CONF": conf}
	if err := try(env); err != nil {
		return nil, fmt.Errorf("podman cannot run containers here: %v; with default_ulimits lowered: %v", first, err)
	}
	return env, nil
}

// podmanLimitsConf writes a containers.conf whose default_ulimits are this
// process's hard limits (nproc also capped by kernel.pid_max, which runc
// cannot exceed here).
func podmanLimitsConf() (string, error) {
	limits, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return "", err
	}
	hard := func(name string) int {
		for _, l := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(l, name) {
				f := strings.Fields(l[len(name):])
				if len(f) >= 2 {
					if n, err := strconv.Atoi(f[1]); err == nil {
						return n
					}
				}
			}
		}
		return 0
	}
	nofile, nproc := hard("Max open files"), hard("Max processes")
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if pm, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && (nproc == 0 || pm < nproc) {
			nproc = pm
		}
	}
	if nofile == 0 || nproc == 0 {
		return "", fmt.Errorf("cannot read this process's rlimits")
	}
	// A fixed name per limits: every test run reuses it, none leaves one behind.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("clearml-test-podman-conf-%d-%d", nofile, nproc))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "containers.conf")
	conf := fmt.Sprintf("[containers]\ndefault_ulimits = [\"nofile=%d:%d\", \"nproc=%d:%d\"]\n", nofile, nofile, nproc, nproc)
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

// TestPodmanRunsTestImage checks the podman harness: the test image runs
// with the host's network, a bind mount and -e NAME taken from the CLI's
// environment, as root and as another user.
func TestPodmanRunsTestImage(t *testing.T) {
	needDockerImage(t)
	env := needPodman(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "data"), []byte("mounted\n"), 0o644)
	s := startServer(t)
	port := s.URL()[strings.LastIndex(s.URL(), ":")+1:]
	name := "clearml-test-podman-" + testRandHex()
	cmd := exec.Command("podman", "run", "--rm", "--name", name, "--network", "host", "-v", dir+":/data:ro",
		"-e", "PODMAN_TEST_VALUE", "-u", "1000", dockerTestImage, "python3", "-c",
		"import os, socket; print(open('/data/data').read().strip(), os.getuid(), os.environ['PODMAN_TEST_VALUE']);"+
			"socket.create_connection(('127.0.0.1', "+port+"), timeout=10); print('reached the server')")
	cmd.Env = append(os.Environ(), "PODMAN_TEST_VALUE=from-cli-env")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	if got := string(out); got != "mounted 1000 from-cli-env\nreached the server\n" {
		t.Errorf("podman run printed %q", got)
	}
}

// psArgs is every process's command line now, as `ps -eo args` shows them
// (read from /proc, untruncated).
func psArgs() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		out = append(out, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	return out
}

// argvSampler samples every process's command line until stopped and
// records the lines that contain one of the needles.
type argvSampler struct {
	stop    chan struct{}
	done    chan struct{}
	hits    []string
	samples int
	seen    map[string]bool // command lines seen, to show the run was observed
}

func sampleArgv(every time.Duration, needles ...string) *argvSampler {
	s := &argvSampler{stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for _, line := range psArgs() {
				s.seen[line] = true
				for _, n := range needles {
					if n != "" && strings.Contains(line, n) {
						s.hits = append(s.hits, line)
					}
				}
			}
			s.samples++
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the offending command lines.
func (s *argvSampler) Stop() []string {
	close(s.stop)
	<-s.done
	return s.hits
}

// Saw reports whether a sampled command line contained sub.
func (s *argvSampler) Saw(sub string) bool {
	for l := range s.seen {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
