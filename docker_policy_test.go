package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// optsText renders parsed options as "name=value" (or "!err tokens").
func optsText(opts []dockerOpt) string {
	var out []string
	for _, o := range opts {
		if o.Err != "" {
			out = append(out, fmt.Sprintf("!%s[%s]", o.Err, strings.Join(o.Tokens, " ")))
			continue
		}
		out = append(out, o.Name+"="+o.Value)
	}
	return strings.Join(out, " | ")
}

func TestParseDockerOptsLikePflag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--ipc=host", "--shm-size", "8g"}, "ipc=host | shm-size=8g"},
		{[]string{"-v", "/a:/b", "-v/c:/d", "-v=/e:/f"}, "volume=/a:/b | volume=/c:/d | volume=/e:/f"},
		{[]string{"-e", "A=1", "-eB=2", "--env", "C=3", "--env=D=4"}, "env=A=1 | env=B=2 | env=C=3 | env=D=4"},
		{[]string{"-dit"}, "detach=true | interactive=true | tty=true"},
		{[]string{"-itv", "/:/host"}, "interactive=true | tty=true | volume=/:/host"},
		{[]string{"-tv/:/host"}, "tty=true | volume=/:/host"},
		{[]string{"-td=false"}, "tty=true | detach=false"},
		{[]string{"--privileged"}, "privileged=true"},
		{[]string{"--privileged=false"}, "privileged=false"},
		{[]string{"--privileged", "false"}, "privileged=true | !not an option (docker would take it as the image or its command)[false]"},
		// A value option takes the next token even when it looks like an option.
		{[]string{"--name", "--privileged"}, "name=--privileged"},
		{[]string{"-u", "-v"}, "user=-v"},
		{[]string{"--net=host", "--net", "bridge"}, "network=host | network=bridge"},
		{[]string{"-u0"}, "user=0"},
		{[]string{"-privileged"}, "publish=rivileged"},
		{[]string{"--bogus", "x"}, "!unknown option[--bogus] | !not an option (docker would take it as the image or its command)[x]"},
		{[]string{"-x"}, "!unknown option[-x]"},
		{[]string{"-v"}, "!needs a value[-v]"},
		{[]string{"--volume"}, "!needs a value[--volume]"},
		{[]string{"--", "--privileged"}, "!not an option (docker would take it as the image or its command)[--] | !not an option (docker would take it as the image or its command)[--privileged]"},
		{[]string{"--=x"}, "!bad option syntax[--=x]"},
		{[]string{"alpine"}, "!not an option (docker would take it as the image or its command)[alpine]"},
	}
	for _, tt := range tests {
		if got := optsText(parseDockerOpts(tt.args)); got != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.args, got, tt.want)
		}
	}
	// A cluster is kept as written, or split when a part is refused.
	kept, refused := checkDockerArgs([]string{"-itv", "/data:/data", "-td"}, dockerArgPolicy{})
	if len(refused) != 1 || strings.Join(refused[0].Opt.Tokens, " ") != "--detach" {
		t.Errorf("refused %+v", refused)
	}
	if want := []string{"-itv", "/data:/data", "--tty"}; !reflect.DeepEqual(kept, want) {
		t.Errorf("rebuilt %q, want %q", kept, want)
	}
}

// hostile is one task argument list that must lose exactly the refused options.
type hostile struct {
	args    string // shell words
	refused []string
	kept    string
}

func runPolicyCases(t *testing.T, p dockerArgPolicy, cases []hostile) {
	t.Helper()
	for _, c := range cases {
		args, err := shlexSplit(c.args)
		if err != nil {
			t.Fatal(err)
		}
		kept, refused := checkDockerArgs(args, p)
		var got []string
		for _, r := range refused {
			got = append(got, strings.Join(r.Opt.Tokens, " "))
			line := r.String()
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "clearml-agent: refused the task's docker argument ") {
				t.Errorf("refusal line %q", line)
			}
			if r.Allow != "" && !strings.Contains(line, "agent.docker_args_allow") {
				t.Errorf("refusal line does not name the key: %q", line)
			}
		}
		if !reflect.DeepEqual(got, c.refused) || strings.Join(kept, " ") != c.kept {
			t.Errorf("%s:\n refused %q, want %q\n kept %q, want %q", c.args, got, c.refused, strings.Join(kept, " "), c.kept)
		}
	}
}

func TestDockerPolicyRefusesHostTakeover(t *testing.T) {
	p := dockerArgPolicy{ImageUser: "1000", Protected: []string{"/home/agent/.clearml", "/var/run/docker.sock", "/tmp/clearml-agent"},
		AgentLabel: []string{"clearml-worker-id"}, OwnDevices: []string{"nvidia.com/gpu=0"}}
	runPolicyCases(t, p, []hostile{
		{"--privileged", []string{"--privileged"}, ""},
		{"--privileged=true", []string{"--privileged=true"}, ""},
		{"--privileged=1", []string{"--privileged=1"}, ""},
		{"--privileged=false --ipc=host", nil, "--privileged=false --ipc=host"},
		{"--privileged=maybe", []string{"--privileged=maybe"}, ""},
		{"-dit", []string{"--detach"}, "--interactive --tty"},
		{"--cap-add SYS_ADMIN", []string{"--cap-add SYS_ADMIN"}, ""},
		{"--cap-add=ALL", []string{"--cap-add=ALL"}, ""},
		{"--security-opt seccomp=unconfined", []string{"--security-opt seccomp=unconfined"}, ""},
		{"--security-opt=apparmor=unconfined --security-opt label=disable", []string{"--security-opt=apparmor=unconfined", "--security-opt label=disable"}, ""},
		{"--security-opt=no-new-privileges:true", nil, "--security-opt=no-new-privileges:true"},
		{"--pid host --pid=host --pid=container:agent", []string{"--pid host", "--pid=host", "--pid=container:agent"}, ""},
		{"--userns host --userns=host --uts host --uts=host --cgroupns=host", []string{"--userns host", "--userns=host", "--uts host", "--uts=host", "--cgroupns=host"}, ""},
		{"--userns=keep-id --uts=private --pid=private", nil, "--userns=keep-id --uts=private --pid=private"},
		{"--device /dev/sda --device=/dev/mem:/dev/mem:rwm", []string{"--device /dev/sda", "--device=/dev/mem:/dev/mem:rwm"}, ""},
		{"--device nvidia.com/gpu=0 --device=nvidia.com/gpu=all", []string{"--device=nvidia.com/gpu=all"}, "--device nvidia.com/gpu=0"},
		{"--device-cgroup-rule='c 1:1 rwm'", []string{"--device-cgroup-rule=c 1:1 rwm"}, ""},
		{"--user root", []string{"--user root"}, ""},
		{"--user=0 -u 0 -u0 -u=0:0 -uroot:root --user 00", []string{"--user=0", "-u 0", "-u0", "-u=0:0", "-uroot:root", "--user 00"}, ""},
		{"--user 1000 -u 1001:0", nil, "--user 1000 -u 1001:0"},
		{"-v /:/host", []string{"-v /:/host"}, ""},
		{"-v/:/host -v=/:/host --volume /:/host --volume=/:/host", []string{"-v/:/host", "-v=/:/host", "--volume /:/host", "--volume=/:/host"}, ""},
		{"-v //:/host -v /./:/host -v /tmp/..:/host -v /etc/../:/host", []string{"-v //:/host", "-v /./:/host", "-v /tmp/..:/host", "-v /etc/../:/host"}, ""},
		{"-v /var/run/docker.sock:/var/run/docker.sock", []string{"-v /var/run/docker.sock:/var/run/docker.sock"}, ""},
		{"-v /run/docker.sock:/s -v /var/run:/r -v /var:/v", []string{"-v /run/docker.sock:/s", "-v /var/run:/r", "-v /var:/v"}, ""},
		{"-v /etc:/etc:ro -v /etc/shadow:/s -v /etc/:/e", []string{"-v /etc:/etc:ro", "-v /etc/shadow:/s", "-v /etc/:/e"}, ""},
		{"-v /root:/r -v /root/.ssh:/k -v /proc:/p -v /sys:/s -v /dev:/d -v /dev/shm:/dev/shm", []string{"-v /root:/r", "-v /root/.ssh:/k", "-v /proc:/p", "-v /sys:/s", "-v /dev:/d", "-v /dev/shm:/dev/shm"}, ""},
		{"-v /usr:/u -v /boot:/b -v /var/lib/docker:/d", []string{"-v /usr:/u", "-v /boot:/b", "-v /var/lib/docker:/d"}, ""},
		{"-v /home/agent/.clearml/vcs-cache:/c -v /home/agent:/h -v /home:/h -v /tmp:/t", []string{"-v /home/agent/.clearml/vcs-cache:/c", "-v /home/agent:/h", "-v /home:/h", "-v /tmp:/t"}, ""},
		{"-v ./data:/d -v ../..:/d -v ~/x:/d", []string{"-v ./data:/d", "-v ../..:/d", "-v ~/x:/d"}, ""},
		{"-v /data:/data:U", []string{"-v /data:/data:U"}, ""},
		{"-v a:b:c:d", []string{"-v a:b:c:d"}, ""},
		{"--mount type=bind,source=/,target=/host", []string{"--mount type=bind,source=/,target=/host"}, ""},
		{"--mount=type=bind,src=/etc,dst=/e,readonly", []string{"--mount=type=bind,src=/etc,dst=/e,readonly"}, ""},
		{"--mount type=bind,source=/data,source=/,target=/x", []string{"--mount type=bind,source=/data,source=/,target=/x"}, ""},
		{`--mount 'type=bind,"source=/",target=/x'`, []string{"--mount type=bind,\"source=/\",target=/x"}, ""},
		{"--mount TYPE=BIND,Source=/proc,target=/p", []string{"--mount TYPE=BIND,Source=/proc,target=/p"}, ""},
		{"--mount type=volume,source=v,target=/x,volume-driver=local,volume-opt=device=/,volume-opt=o=bind", []string{"--mount type=volume,source=v,target=/x,volume-driver=local,volume-opt=device=/,volume-opt=o=bind"}, ""},
		{"--mount type=bind,source=relative,target=/x", []string{"--mount type=bind,source=relative,target=/x"}, ""},
		{"--mount type=devpts,target=/dev/pts", []string{"--mount type=devpts,target=/dev/pts"}, ""},
		{"--volumes-from clearml-agent-services", []string{"--volumes-from clearml-agent-services"}, ""},
		{"--use-api-socket", []string{"--use-api-socket"}, ""},
		{"--env-file /etc/shadow --label-file=/etc/shadow --cidfile /etc/cron.d/x", []string{"--env-file /etc/shadow", "--label-file=/etc/shadow", "--cidfile /etc/cron.d/x"}, ""},
		{"--cgroup-parent / --runtime=runc --gpus all --restart always --name x", []string{"--cgroup-parent /", "--runtime=runc", "--gpus all", "--restart always", "--name x"}, ""},
		{"--hooks-dir /tmp/h --env-host --rootfs --preserve-fds 5 --secret s", []string{"--hooks-dir /tmp/h", "--env-host", "--rootfs", "--preserve-fds 5", "--secret s"}, ""},
		{"-l clearml-worker-id=other -l team=a", []string{"-l clearml-worker-id=other"}, "-l team=a"},
		{"--oom-score-adj=-1000 --oom-kill-disable", []string{"--oom-score-adj=-1000", "--oom-kill-disable"}, ""},
		{"--bogus-new-flag /:/host", []string{"--bogus-new-flag", "/:/host"}, ""},
		{"alpine --privileged", []string{"alpine", "--privileged"}, ""},
		{"-- --privileged", []string{"--", "--privileged"}, ""},
		{"-v", []string{"-v"}, ""},
		{"--net=host --name=--privileged", []string{"--name=--privileged"}, "--net=host"},
	})
}

func TestDockerPolicyKeepsWhatTasksNeed(t *testing.T) {
	p := dockerArgPolicy{ImageUser: "", Protected: []string{"/home/agent/.clearml"}}
	runPolicyCases(t, p, []hostile{
		{"--ipc=host --shm-size=8g --network host -e A=1 --env B=2 -eC=3",
			nil, "--ipc=host --shm-size=8g --network host -e A=1 --env B=2 -eC=3"},
		{"-v /data:/data -v /mnt/datasets:/datasets:ro --mount type=bind,source=/srv/models,target=/models,readonly",
			nil, "-v /data:/data -v /mnt/datasets:/datasets:ro --mount type=bind,source=/srv/models,target=/models,readonly"},
		{"-v cache:/cache -v /scratch --mount type=volume,source=v,target=/v --mount type=tmpfs,target=/t --tmpfs /run",
			nil, "-v cache:/cache -v /scratch --mount type=volume,source=v,target=/v --mount type=tmpfs,target=/t --tmpfs /run"},
		{"--user root -p 8080:80 --rm -it --init --ulimit nofile=1024 --cpus 2 -m 4g --cap-drop ALL",
			nil, "--user root -p 8080:80 --rm -it --init --ulimit nofile=1024 --cpus 2 -m 4g --cap-drop ALL"},
		{"-v /tmp/.X11-unix:/tmp/.X11-unix --entrypoint ''", nil, "-v /tmp/.X11-unix:/tmp/.X11-unix --entrypoint "},
	})
}

func TestDockerPolicyAllowList(t *testing.T) {
	p := dockerArgPolicy{ImageUser: "1000", Allow: []string{"--cap-add=SYS_PTRACE", "--device=/dev/fuse", "/etc/localtime",
		"--security-opt=seccomp=unconfined", "-u", "--privileged", "/dev/shm"}}
	runPolicyCases(t, p, []hostile{
		{"--cap-add sys_ptrace --cap-add=CAP_SYS_PTRACE --cap-add SYS_ADMIN", []string{"--cap-add SYS_ADMIN"}, "--cap-add sys_ptrace --cap-add=CAP_SYS_PTRACE"},
		{"--device /dev/fuse --device /dev/fuse:/dev/fuse:rwm --device /dev/sda", []string{"--device /dev/sda"}, "--device /dev/fuse --device /dev/fuse:/dev/fuse:rwm"},
		{"-v /etc/localtime:/etc/localtime:ro -v /etc:/etc", []string{"-v /etc:/etc"}, "-v /etc/localtime:/etc/localtime:ro"},
		{"--mount type=bind,src=/etc/localtime,dst=/etc/localtime -v /dev/shm:/dev/shm", nil, "--mount type=bind,src=/etc/localtime,dst=/etc/localtime -v /dev/shm:/dev/shm"},
		{"--security-opt seccomp=unconfined --security-opt apparmor=unconfined", []string{"--security-opt apparmor=unconfined"}, "--security-opt seccomp=unconfined"},
		{"-u 0 --privileged", nil, "-u 0 --privileged"},
	})
	// A refusal names the entry that lets it through.
	_, refused := checkDockerArgs([]string{"-v", "/etc/../etc/passwd/:/p", "--cap-add", "NET_ADMIN", "--privileged"},
		dockerArgPolicy{})
	var allow []string
	for _, r := range refused {
		allow = append(allow, r.Allow)
	}
	if want := []string{"/etc/passwd", "--cap-add=NET_ADMIN", "--privileged"}; !reflect.DeepEqual(allow, want) {
		t.Errorf("allow entries %q, want %q", allow, want)
	}
	if got := refused[0].String(); got != `clearml-agent: refused the task's docker argument "-v /etc/../etc/passwd/:/p": it mounts /etc of the host; to allow it add "/etc/passwd" to agent.docker_args_allow` {
		t.Errorf("line: %s", got)
	}
}

// TestDockerPolicySymlinks: a symlink that a task left in a data folder
// does not open the host's root.
func TestDockerPolicySymlinks(t *testing.T) {
	data := t.TempDir()
	if err := os.Symlink("/", filepath.Join(data, "evil")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(data, "ok"), 0o755)
	p := dockerArgPolicy{Resolve: dockerResolveHostPath}
	runPolicyCases(t, p, []hostile{
		{"-v " + data + "/evil:/host -v " + data + "/evil/etc:/e -v " + data + "/ok:/ok -v " + data + "/ok/not-yet/x:/n",
			[]string{"-v " + data + "/evil:/host", "-v " + data + "/evil/etc:/e"}, "-v " + data + "/ok:/ok -v " + data + "/ok/not-yet/x:/n"},
	})
}

func TestDockerImageRef(t *testing.T) {
	good := []string{"alpine", "alpine:3.19", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04", "localhost:5000/team/img:v1",
		"registry.example.com/a/b/c", "ghcr.io/org/my_img__x-y:latest", "[::1]:5000/img", "img@sha256:" + strings.Repeat("a", 64),
		"clearml-agent-test:bookworm", strings.Repeat("b", 64), "sha256:" + strings.Repeat("c", 64)}
	bad := []string{"", "alpine --privileged -v /:/host", "alpine\t--privileged", "alpine\n", "-v", "--privileged",
		"Alpine", "alpine:", "alpine:tag:x", "docker-archive:/etc/x.tar", "alpine;id", "a/../b", "img@sha256:short",
		"$(id)", "alpine:" + strings.Repeat("t", 129), strings.Repeat("a", 256)}
	for _, s := range good {
		if e := dockerImageRefError(s); e != "" {
			t.Errorf("%q refused: %s", s, e)
		}
	}
	for _, s := range bad {
		if e := dockerImageRefError(s); e == "" {
			t.Errorf("%q accepted", s)
		}
	}
	if e := dockerImageRefError("alpine --privileged -v /:/host"); !strings.Contains(e, "not one image name") {
		t.Errorf("message: %s", e)
	}
}

func TestDockerStripForbidden(t *testing.T) {
	args := []string{"--entrypoint", "/bin/sh", "--ipc=host", "--entrypoint=/x", "-e", "A=1", "--net", "host"}
	kept, stripped := dockerStripForbidden(args, []string{"entrypoint", "e", "network"})
	if !reflect.DeepEqual(kept, []string{"--ipc=host"}) || !reflect.DeepEqual(stripped, []string{"--entrypoint", "--env", "--network"}) {
		t.Errorf("kept %q stripped %q", kept, stripped)
	}
	if kept, stripped := dockerStripForbidden(args, nil); !reflect.DeepEqual(kept, args) || stripped != nil {
		t.Errorf("no list: %q %q", kept, stripped)
	}
}

func TestParseDockerMount(t *testing.T) {
	m, err := parseDockerMount(`type=bind,"source=/a,b",target=/x,readonly`)
	if err != nil || m.Type != "bind" || m.Source != "/a,b" || m.Target != "/x" || m.Opts["readonly"] != "true" {
		t.Errorf("%+v %v", m, err)
	}
	if m, _ := parseDockerMount("target=/x"); m.Type != "volume" {
		t.Errorf("default type %q", m.Type)
	}
	if _, err := parseDockerMount(`type=bind,"source=/a`); err == nil {
		t.Error("an open quote parsed")
	}
}
