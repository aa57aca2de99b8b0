package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// dockerTestConfig is testConfig with API credentials and HOME set in env
// (the caller reads them back).
func dockerTestConfig(t *testing.T, env map[string]string, conf string) *agentConfig {
	t.Helper()
	if _, ok := env["HOME"]; !ok {
		env["HOME"] = t.TempDir()
	}
	env["CLEARML_API_HOST"] = "http://127.0.0.1:8008"
	env["CLEARML_API_ACCESS_KEY"] = "AK"
	env["CLEARML_API_SECRET_KEY"] = "SK-very-secret"
	return testConfig(t, conf, env)
}

func TestDockerArgHelpers(t *testing.T) {
	prot := []string{"privileged", "security-opt", "network", "ipc"}
	tests := []struct {
		name      string
		got, want []string
	}{
		{"merge extra first", dockerMergeArgs([]string{"--ipc=host", "--privileged"}, []string{"--network=host", "--ipc=private"}, true, prot),
			[]string{"--network=host", "--ipc=private", "--privileged"}},
		{"merge separate values", dockerMergeArgs([]string{"--network", "bridge", "-e", "A=1"}, []string{"--network", "host"}, true, prot),
			[]string{"--network", "host", "-e", "A=1"}},
		{"merge unprotected", dockerMergeArgs([]string{"--shm-size=8g"}, []string{"--ipc=host"}, true, prot),
			[]string{"--ipc=host", "--shm-size=8g"}},
		{"merge task first", dockerMergeArgs([]string{"--ipc=host", "--privileged"}, []string{"--network=host", "--ipc=private"}, false, prot),
			[]string{"--ipc=host", "--privileged", "--network=host"}},
		{"filter", dockerFilterArgs([]string{"-e", "A=1", "--ipc=host", "--env", "B=2", "-v", "/x:/y", "-e"}, []string{"^--env$", "^-e$"}),
			[]string{"-e", "A=1", "--env", "B=2", "-e"}},
		{"filter inline", dockerFilterArgs([]string{"--env=A=1", "-e", "B", "--privileged"}, []string{"^--env$", "^-e$"}),
			[]string{"-e", "B"}},
		{"env resolve", dockerResolveEnv([]string{"-e", "A=$HOSTVAR", "B=${HOSTVAR}x", "--rm", "-e", "C=$NOPE"}, mapLookup(map[string]string{"HOSTVAR": "hv"})),
			[]string{"-e", "A=hv", "B=${HOSTVAR}x", "--rm", "-e", "C=$NOPE"}},
		{"env resolve only -e", dockerResolveEnv([]string{"--env", "X=$HOSTVAR", "-v", "$HOSTVAR:/a"}, mapLookup(map[string]string{"HOSTVAR": "hv"})),
			[]string{"--env", "X=hv", "-v", "$HOSTVAR:/a"}},
		{"sanitize", maskDockerArgs([]string{"-e", "CLEARML_API_SECRET_KEY=abc", "-e", "FOO=bar", "--env", "AWS_SECRET_ACCESS_KEY=zzz", "-e", "URL=https://u:p@host/x"}, nil),
			[]string{"-e", "CLEARML_API_SECRET_KEY=********", "-e", "FOO=bar", "--env", "AWS_SECRET_ACCESS_KEY=********", "-e", "URL=https://u:********@host/x"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, tt.got, tt.want)
		}
	}
	// dockerSplit: one value with spaces is image + args.
	if img, args := dockerSplit([]string{"img --ipc=host -e A=1"}); img != "img" || !reflect.DeepEqual(args, []string{"--ipc=host", "-e", "A=1"}) {
		t.Errorf("split: %q %q", img, args)
	}
	if img, args := dockerSplit([]string{"img", "--ipc=host"}); img != "img" || !reflect.DeepEqual(args, []string{"--ipc=host"}) {
		t.Errorf("split list: %q %q", img, args)
	}
}

// cliDocker is the options of `--docker vals...`.
func cliDocker(vals ...string) taskOptions {
	return taskOptions{docker: listFlag{vals: vals, set: true}}
}

var cpuOnlyOpts = taskOptions{workerFlags: workerFlags{cpuOnly: true}}

func mapLookup(m map[string]string) envLookup {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDockerImagePrecedence(t *testing.T) {
	withTask := &taskDoc{ID: "t1"}
	withTask.Container.Image = "task/img:1"
	withTask.Container.Arguments = "--ipc=host -e A='x y'"
	withTask.Container.SetupShellScript = "echo hi"
	bare := &taskDoc{ID: "t2"}
	legacy := &taskDoc{ID: "t3"}
	legacy.Execution.DockerCmd = "old/img --shm-size=1g"
	tests := []struct {
		name     string
		env      map[string]string
		conf     string
		task     *taskDoc
		o        dockerRunOptions
		image    string
		args     []string
		isDefult bool
	}{
		{"task wins over --docker", nil, "", withTask, dockerRunOptions{task: cliDocker("cli/img --x")}, "task/img:1", []string{"--ipc=host", "-e", "A=x y"}, false},
		{"--force-docker", nil, "", withTask, dockerRunOptions{task: cliDocker("cli/img", "--x"), forceDocker: true}, "cli/img", []string{"--x"}, true},
		{"disable_task_docker_override", nil, "agent.disable_task_docker_override: true", withTask, dockerRunOptions{task: cliDocker("cli/img")}, "cli/img", nil, true},
		{"--docker when the task has none", nil, "", bare, dockerRunOptions{task: cliDocker("cli/img --ipc=host")}, "cli/img", []string{"--ipc=host"}, true},
		{"bare --docker: default_docker", nil, `agent.default_docker { image: "def/img", arguments: ["--ipc=host"] }`, bare, dockerRunOptions{task: cliDocker()}, "def/img", []string{"--ipc=host"}, true},
		{"CLEARML_DOCKER_IMAGE", map[string]string{"CLEARML_DOCKER_IMAGE": "env/img --net=host"}, "", bare, dockerRunOptions{}, "env/img", []string{"--net=host"}, true},
		{"--docker image without args takes the default args", nil, `agent.default_docker.arguments: "--shm-size=2g"`, bare, dockerRunOptions{task: cliDocker("cli/img")}, "cli/img", []string{"--shm-size=2g"}, true},
		{"legacy execution.docker_cmd", nil, "", legacy, dockerRunOptions{}, "old/img", []string{"--shm-size=1g"}, false},
	}
	for _, tt := range tests {
		env := tt.env
		if env == nil {
			env = map[string]string{}
		}
		cfg := dockerTestConfig(t, env, tt.conf)
		d, err := dockerChooseImage(cfg, tt.task, tt.o)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if d.image != tt.image || !reflect.DeepEqual(d.args, tt.args) || d.isDefault != tt.isDefult || d.setupScript != tt.task.Container.SetupShellScript {
			t.Errorf("%s: got %q %q default=%v", tt.name, d.image, d.args, d.isDefault)
		}
	}
}

// TestDockerTaskArgvGolden checks the exact argv of the reference's cases.
func TestDockerTaskArgvGolden(t *testing.T) {
	old := dockerRandString
	dockerRandString = func() string { return "abcdefghijklmnopqrstuvwxyzabcdef" }
	defer func() { dockerRandString = old }()

	task := &taskDoc{ID: "tid1"}
	task.Container.Image = "py:3.11"
	task.Container.Arguments = "--network host --ipc=host"
	withRepo := &taskDoc{ID: "tid2"}
	withRepo.Script.Repository = "https://github.com/a/b.git"
	withRepo.Container.Image = "py:3.11"
	withRepo.Container.SetupShellScript = "apt-get install -y foo\n# comment\n\nexport A=1"

	type tc struct {
		name string
		env  map[string]string
		conf string
		task *taskDoc
		o    dockerRunOptions
		want func(home, tmp string) []string
	}
	caches := func(home string) []string {
		return []string{
			"-v", home + "/.clearml/apt-cache:/var/cache/apt/archives",
			"-v", home + "/.clearml/pip-cache:/root/.cache/pip",
			"-v", home + "/.clearml/pip-download-cache:/root/.clearml/pip-download-cache",
			"-v", home + "/.clearml/cache:/clearml_agent_cache",
			"-v", home + "/.clearml/vcs-cache:/root/.clearml/vcs-cache",
		}
	}
	venvs := func(home, image string) []string {
		return []string{"-v", home + "/.clearml/venvs-cache/docker/" + dockerImageKey(image) + ":/root/.clearml/venvs-cache"}
	}
	common := func(home, tmp, tid, wid, image string) []string {
		a := []string{"-e", "CLEARML_WORKER_ID=" + wid, "-e", "CLEARML_DOCKER_IMAGE=" + image, "-e", "CLEARML_TASK_ID=" + tid}
		return a
	}
	tail := func(home, tmp, tid, name string) []string {
		a := []string{"--name", name, "-v", tmp + "/clearml.conf:/tmp/clearml.conf:ro", "-e", "CLEARML_CONFIG_FILE=/tmp/clearml.conf",
			"-v", "/opt/agent:/usr/local/bin/clearml-agent:ro"}
		return append(a, caches(home)...)
	}
	labels := func(wid, parent, tid string) []string {
		return []string{"-l", "clearml-worker-id=" + wid, "-l", "clearml-parent-worker-id=" + parent, "-l", "clearml-task-id=" + tid}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	name1 := "clearml-id-tid1-abcdefgh"
	tests := []tc{
		{"defaults: --gpus all", nil, "", task, dockerRunOptions{workerID: "w:gpuall"}, func(home, tmp string) []string {
			return cat([]string{"docker", "run", "--gpus", "all", "--network", "host", "--ipc=host"}, labels("w:gpuall", "w:gpuall", "tid1"),
				common(home, tmp, "tid1", "w:gpuall", "py:3.11"), tail(home, tmp, "tid1", name1), venvs(home, "py:3.11"),
				[]string{"--rm", "py:3.11", "/usr/local/bin/clearml-agent", "execute", "--id", "tid1"})
		}},
		{"--gpus 0,1", nil, "", task, dockerRunOptions{workerID: "w", task: taskOptions{workerFlags: workerFlags{gpus: "0,1"}}}, func(home, tmp string) []string {
			return cat([]string{"docker", "run", "--gpus", `"device=0,1"`, "--network", "host", "--ipc=host"}, labels("w", "w", "tid1"),
				common(home, tmp, "tid1", "w", "py:3.11"), tail(home, tmp, "tid1", name1), venvs(home, "py:3.11"),
				[]string{"--rm", "py:3.11", "/usr/local/bin/clearml-agent", "execute", "--id", "tid1"})
		}},
		{"CLEARML_DOCKER_SKIP_GPUS_FLAG", map[string]string{"CLEARML_DOCKER_SKIP_GPUS_FLAG": "1"}, "", task, dockerRunOptions{workerID: "w", task: taskOptions{workerFlags: workerFlags{gpus: "0,1"}}}, func(home, tmp string) []string {
			return cat([]string{"docker", "run", "--network", "host", "--ipc=host"}, labels("w", "w", "tid1"), []string{"-e", "NVIDIA_VISIBLE_DEVICES=0,1"},
				common(home, tmp, "tid1", "w", "py:3.11"), tail(home, tmp, "tid1", name1), venvs(home, "py:3.11"),
				[]string{"--rm", "py:3.11", "/usr/local/bin/clearml-agent", "execute", "--id", "tid1"})
		}},
		{"--cpu-only, debug keeps the container, parent worker, services, tags, git creds, env", nil, "", task,
			dockerRunOptions{workerID: "w:service:tid1", parentWorkerID: "w", debug: true, servicesMode: true, workerTags: "a b",
				task: taskOptions{workerFlags: workerFlags{cpuOnly: true, gitUser: "gu", gitPass: "gp", logLevel: choiceFlag{val: "DEBUG"}, optimization: 2}},
				env:  map[string]string{"Z": "1", "CLEARML_AGENT_DAEMON_CHILD": "1"}},
			func(home, tmp string) []string {
				return cat([]string{"docker", "run", "--network", "host", "--ipc=host"}, labels("w:service:tid1", "w", "tid1"), []string{"-e", "NVIDIA_VISIBLE_DEVICES=none"},
					common(home, tmp, "tid1", "w:service:tid1", "py:3.11"),
					[]string{"-e", "CLEARML_WORKER_TAGS=a b", "-e", "CLEARML_AGENT_SERVICE_TASK=1", "-e", "CLEARML_AGENT_GIT_USER=gu", "-e", "CLEARML_AGENT_GIT_PASS",
						"-e", "CLEARML_AGENT_DAEMON_CHILD=1", "-e", "Z=1"},
					tail(home, tmp, "tid1", name1), venvs(home, "py:3.11"),
					[]string{"py:3.11", "/usr/local/bin/clearml-agent", "execute", "--id", "tid1", "--full-monitoring", "--cpu-only", "--log-level", "DEBUG", "-OO"})
			}},
		{"extra args precede, protected switch dropped, filters, labels, name format", map[string]string{"CLEARML_AGENT_EXTRA_DOCKER_LABELS": "team=ml", "HOSTV": "hv"},
			`agent { extra_docker_arguments: ["--network=bridge", "-e", "X=$HOSTV"], docker_args_filters: ["^--network$", "^--ipc"], docker_container_name_format: "job-{task_id}-{worker_id}", vcs_cache.enabled: false, venvs_cache.path: "", pip_download_cache.enabled: false }`,
			task, dockerRunOptions{workerID: "w:gpu0", task: cpuOnlyOpts},
			func(home, tmp string) []string {
				return cat([]string{"docker", "run", "--network=bridge", "-e", "X=hv", "--ipc=host"}, labels("w:gpu0", "w:gpu0", "tid1"), []string{"-l", "team=ml", "-e", "NVIDIA_VISIBLE_DEVICES=none"},
					common(home, tmp, "tid1", "w:gpu0", "py:3.11"),
					[]string{"--name", "job-tid1-w-gpu0", "-v", tmp + "/clearml.conf:/tmp/clearml.conf:ro", "-e", "CLEARML_CONFIG_FILE=/tmp/clearml.conf", "-v", "/opt/agent:/usr/local/bin/clearml-agent:ro",
						"-v", home + "/.clearml/apt-cache:/var/cache/apt/archives", "-v", home + "/.clearml/pip-cache:/root/.cache/pip", "-v", home + "/.clearml/cache:/clearml_agent_cache"},
					[]string{"--rm", "py:3.11", "/usr/local/bin/clearml-agent", "execute", "--id", "tid1", "--cpu-only"})
			}},
		{"setup script and git check run before the agent", nil, `agent.extra_docker_shell_script: ["echo extra"]`, withRepo, dockerRunOptions{workerID: "w", task: cpuOnlyOpts},
			func(home, tmp string) []string {
				return cat([]string{"docker", "run"}, labels("w", "w", "tid2"), []string{"-e", "NVIDIA_VISIBLE_DEVICES=none"},
					common(home, tmp, "tid2", "w", "py:3.11"), tail(home, tmp, "tid2", "clearml-id-tid2-abcdefgh"), venvs(home, "py:3.11"),
					[]string{"--rm", "py:3.11", "bash", "-c", dockerGitCheck + " ; echo extra ; apt-get install -y foo ; export A=1 ; exec /usr/local/bin/clearml-agent execute --id tid2 --cpu-only"})
			}},
		{"docker_preprocess_bash_script, then docker_init_bash_script", nil,
			`agent { docker_preprocess_bash_script: ["export PRE=1"], docker_init_bash_script: ["# init", "echo python{python_single_digit}"] }`, task, dockerRunOptions{workerID: "w", task: cpuOnlyOpts},
			func(home, tmp string) []string {
				return cat([]string{"docker", "run", "--network", "host", "--ipc=host"}, labels("w", "w", "tid1"), []string{"-e", "NVIDIA_VISIBLE_DEVICES=none"},
					common(home, tmp, "tid1", "w", "py:3.11"), tail(home, tmp, "tid1", name1), venvs(home, "py:3.11"),
					[]string{"--rm", "py:3.11", "bash", "-c", "export PRE=1 ; echo python3 ; exec /usr/local/bin/clearml-agent execute --id tid1 --cpu-only"})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = map[string]string{}
			}
			env["CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"] = t.TempDir()
			cfg := dockerTestConfig(t, env, tt.conf)
			tt.o.agentBinary = "/opt/agent"
			tt.o.imageUser = &dockerRootUser
			run, err := dockerTaskArgv(cfg, tt.task, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			defer run.cleanup()
			argv := run.argv
			tmp := ""
			for _, a := range argv {
				if before, ok := strings.CutSuffix(a, "/clearml.conf:/tmp/clearml.conf:ro"); ok {
					tmp = before
				}
			}
			want := tt.want(env["HOME"], tmp)
			if !reflect.DeepEqual(argv, want) {
				t.Errorf("argv:\n got %q\nwant %q", argv, want)
			}
			// The container's config: 0600, credentials in, git password out.
			st, err := os.Stat(tmp + "/clearml.conf")
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("config file: %v %v", err, st)
			}
			data, _ := os.ReadFile(tmp + "/clearml.conf")
			if !strings.Contains(string(data), "SK-very-secret") || strings.Contains(string(data), "git_pass") {
				t.Errorf("container config:\n%s", data)
			}
		})
	}
}

func TestDockerLoggedCommandHidesSecrets(t *testing.T) {
	cfg := dockerTestConfig(t, map[string]string{}, `agent.hide_docker_command_env_vars.extra_keys: ["MY_KEY"]`)
	argv := []string{"docker", "run", "-e", "CLEARML_AGENT_GIT_PASS=gp", "-e", "MY_KEY=mk", "-e", "PLAIN=ok", "-e", "CLEARML_AUTH_TOKEN=tok", "img"}
	got := dockerLoggedCommand(cfg, argv)
	want := "docker run -e 'CLEARML_AGENT_GIT_PASS=********' -e 'MY_KEY=********' -e PLAIN=ok -e 'CLEARML_AUTH_TOKEN=********' img"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	cfg = dockerTestConfig(t, map[string]string{}, `agent.hide_docker_command_env_vars.enabled: false`)
	if got := dockerLoggedCommand(cfg, argv); !strings.Contains(got, "GIT_PASS=gp") {
		t.Errorf("hiding disabled, got %s", got)
	}
}

func TestDockerContainerName(t *testing.T) {
	cfg := dockerTestConfig(t, map[string]string{}, `agent.docker_container_name_format: "bad name {task_id}"`)
	if _, err := dockerContainerName(cfg, "t", "w"); err == nil {
		t.Error("an invalid name was accepted")
	}
	cfg = dockerTestConfig(t, map[string]string{}, `agent { docker_container_name_format: "x-{team}-{rand_string}", docker_container_name_format_fields: { team: ml } }`)
	n, err := dockerContainerName(cfg, "t", "w")
	if err != nil || !strings.HasPrefix(n, "x-ml-") || len(n) != len("x-ml-")+32 {
		t.Errorf("name %q %v", n, err)
	}
}
