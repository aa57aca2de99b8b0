package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testIsSecret(name string) bool {
	for _, s := range secretEnvVars {
		if s == name {
			return true
		}
	}
	return looksSecretName(name)
}

func TestDockerMoveSecrets(t *testing.T) {
	dir := t.TempDir()
	argv := []string{"docker", "run", "--network", "host", "-e", "CLEARML_AGENT_GIT_PASS=gp-1234", "--env=CLEARML_AUTH_TOKEN=tok-5678",
		"-eAWS_SECRET_ACCESS_KEY=aws-9999", "-e", "CLEARML_TASK_ID=t1", "--env", "MY_API_TOKEN=my-4321", "-e", "DOCKER_AUTH_TOKEN=dk-2468",
		"-it", "-e", "PLAIN", "-ite", "CLEARML_API_SECRET_KEY=sk-1357", "img", "bash", "-c", "echo -e CLEARML_AGENT_GIT_PASS=not-touched", "-e", "X_TOKEN=after-image"}
	out, env, err := dockerMoveSecrets(argv, testIsSecret, dir)
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(dir, "secrets.env")
	want := []string{"docker", "run", "--network", "host", "-e", "CLEARML_AGENT_GIT_PASS", "-e", "CLEARML_AUTH_TOKEN",
		"-e", "AWS_SECRET_ACCESS_KEY", "-e", "CLEARML_TASK_ID=t1", "-e", "MY_API_TOKEN", "-it", "-e", "PLAIN",
		"--interactive", "--tty", "-e", "CLEARML_API_SECRET_KEY", "--env-file", envFile, "img", "bash", "-c", "echo -e CLEARML_AGENT_GIT_PASS=not-touched", "-e", "X_TOKEN=after-image"}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("argv\n%q\nwant\n%q", out, want)
	}
	if want := []string{"CLEARML_AGENT_GIT_PASS=gp-1234", "CLEARML_AUTH_TOKEN=tok-5678", "AWS_SECRET_ACCESS_KEY=aws-9999", "MY_API_TOKEN=my-4321", "CLEARML_API_SECRET_KEY=sk-1357"}; !reflect.DeepEqual(env, want) {
		t.Errorf("CLI env %q", env)
	}
	st, err := os.Stat(envFile)
	data, _ := os.ReadFile(envFile)
	if err != nil || st.Mode().Perm() != 0o600 || string(data) != "DOCKER_AUTH_TOKEN=dk-2468\n" {
		t.Errorf("env file: %v %v %q", err, st, data)
	}
	if leaks := dockerArgvLeaks(out, []string{"gp-1234", "tok-5678", "aws-9999", "my-4321", "dk-2468", "sk-1357", ""}); leaks != nil {
		t.Errorf("leaks %q", leaks)
	}
	if leaks := dockerArgvLeaks(argv, []string{"gp-1234"}); len(leaks) != 1 {
		t.Errorf("leak not found: %q", leaks)
	}
	if _, _, err := dockerMoveSecrets([]string{"docker", "run", "-e", "DOCKER_X_TOKEN=a\nb", "img"}, testIsSecret, dir); err == nil {
		t.Error("a line break in an env file")
	}
	if _, _, err := dockerMoveSecrets([]string{"docker", "run", "-e", "DOCKER_X_TOKEN=a", "img"}, testIsSecret, ""); err == nil {
		t.Error("an env file without a private folder")
	}
}

// secretsOffArgvRun runs `<cli> run` with secrets moved off the argv while
// every process's command line is sampled; the container must get the
// values and no command line may show them.
func secretsOffArgvRun(t *testing.T, cli string, extraEnv map[string]string) {
	secrets := map[string]string{"CLEARML_AGENT_GIT_PASS": "gitpass-" + testRandHex(), "CLEARML_AUTH_TOKEN": "token-" + testRandHex(),
		"DOCKER_TEST_TOKEN": "envfile-" + testRandHex(), "MULTI_LINE_SECRET": "line1\nline2-" + testRandHex()}
	name := "clearml-test-secrets-" + testRandHex()
	argv := []string{cli, "run", "--rm", "--name", name, "--network", "host"}
	for _, k := range []string{"CLEARML_AGENT_GIT_PASS", "CLEARML_AUTH_TOKEN", "DOCKER_TEST_TOKEN", "MULTI_LINE_SECRET"} {
		argv = append(argv, "-e", k+"="+secrets[k])
	}
	argv = append(argv, dockerTestImage, "sh", "-c",
		`sleep 1.5; printf '%s|%s|%s|%s' "$CLEARML_AGENT_GIT_PASS" "$CLEARML_AUTH_TOKEN" "$DOCKER_TEST_TOKEN" "$MULTI_LINE_SECRET"`)
	isSecret := func(n string) bool { return secrets[n] != "" }
	out, cliEnv, err := dockerMoveSecrets(argv, isSecret, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, v := range secrets {
		values = append(values, v, strings.Split(v, "\n")[0])
	}
	sampler := sampleArgv(20*time.Millisecond, values...)
	cmd := exec.Command(out[0], out[1:]...)
	cmd.Env = append(os.Environ(), cliEnv...)
	for k, v := range extraEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	got, err := cmd.CombinedOutput()
	hits := sampler.Stop()
	if err != nil {
		t.Fatalf("%s run: %v\n%s", cli, err, got)
	}
	want := secrets["CLEARML_AGENT_GIT_PASS"] + "|" + secrets["CLEARML_AUTH_TOKEN"] + "|" + secrets["DOCKER_TEST_TOKEN"] + "|" + secrets["MULTI_LINE_SECRET"]
	if string(got) != want {
		t.Errorf("the container got %q, want %q", got, want)
	}
	if len(hits) > 0 {
		t.Errorf("secret values on a command line: %q", hits)
	}
	// The sampler did see the run (a sampler that saw nothing proves nothing).
	if !sampler.Saw(name) || sampler.samples < 10 {
		t.Errorf("the sampler did not observe the run (%d samples)", sampler.samples)
	}
}

func TestDockerSecretsOffArgv(t *testing.T) {
	needDockerImage(t)
	secretsOffArgvRun(t, "docker", nil)
}

func TestPodmanSecretsOffArgv(t *testing.T) {
	needDockerImage(t)
	secretsOffArgvRun(t, "podman", needPodman(t))
}
