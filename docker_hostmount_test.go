package main

import (
	"strings"
	"testing"
)

func TestDockerHostMount(t *testing.T) {
	env := func(m map[string]string) envLookup {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	m, ok, err := parseDockerHostMount(env(map[string]string{"CLEARML_AGENT_DOCKER_HOST_MOUNT": "/opt/clearml/agent:/root/.clearml/"}))
	if !ok || err != nil || m.Host != "/opt/clearml/agent" || m.Local != "/root/.clearml" || m.Var != "CLEARML_AGENT_DOCKER_HOST_MOUNT" {
		t.Fatalf("%+v %v %v", m, ok, err)
	}
	tests := []struct{ local, host, err string }{
		{"/root/.clearml", "/opt/clearml/agent", ""},
		{"/root/.clearml/", "/opt/clearml/agent", ""},
		{"/root/.clearml/vcs-cache", "/opt/clearml/agent/vcs-cache", ""},
		{"/root/.clearml/a/../venvs-cache/", "/opt/clearml/agent/venvs-cache", ""},
		{"/root/.clearml/../.ssh", "", "/root/.clearml/../.ssh is outside /root/.clearml"},
		{"/root/.clearml-other/x", "", "outside"},
		{"/usr/local/bin/clearml-agent", "", "agent binary /usr/local/bin/clearml-agent is outside /root/.clearml, the folder the agent's container shares with the host (CLEARML_AGENT_DOCKER_HOST_MOUNT=/opt/clearml/agent:/root/.clearml), so the host's docker cannot mount it: move it under /root/.clearml"},
		{"relative/x", "", "not an absolute path"},
	}
	for _, tt := range tests {
		got, err := m.HostPath(tt.local, "agent binary")
		if got != tt.host || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: %q %v", tt.local, got, err)
		}
	}
	// The K8s name wins, as in the reference; a bad value is an error naming the variable.
	m, _, _ = parseDockerHostMount(env(map[string]string{"CLEARML_AGENT_DOCKER_HOST_MOUNT": "/a:/b", "CLEARML_AGENT_K8S_HOST_MOUNT": "/mnt/host/data:/root/.clearml"}))
	if m.Host != "/mnt/host/data" || m.Var != "CLEARML_AGENT_K8S_HOST_MOUNT" {
		t.Errorf("%+v", m)
	}
	for _, bad := range []string{"/only", "rel:/b", "/a:rel"} {
		if _, ok, err := parseDockerHostMount(env(map[string]string{"TRAINS_AGENT_DOCKER_HOST_MOUNT": bad})); !ok || err == nil || !strings.Contains(err.Error(), "TRAINS_AGENT_DOCKER_HOST_MOUNT="+bad) {
			t.Errorf("%q: %v %v", bad, ok, err)
		}
	}
	if _, ok, _ := parseDockerHostMount(env(nil)); ok {
		t.Error("no variable, yet a mount")
	}
	if root := (dockerHostMount{Host: "/h", Local: "/", Var: "X"}); func() string { p, _ := root.HostPath("/a/b", "x"); return p }() != "/h/a/b" {
		t.Error("a root mount")
	}
	if got := dockerQuoteName("host:gpu0,1 ~a_b.c-d/é"); got != "host%3Agpu0%2C1%20~a_b.c-d%2F%C3%A9" {
		t.Errorf("quoted %q", got)
	}
}

func TestDockerSelfContainerID(t *testing.T) {
	id := strings.Repeat("37a38fc692e4", 5) + "abcd"
	docker := "93 76 254:0 /var/lib/docker/containers/" + id + "/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n"
	podman := "93 84 254:0 /run/containers/storage/overlay-containers/" + id + "/userdata/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
	host := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
	if dockerSelfContainerID(host+docker) != id || dockerSelfContainerID(podman) != id || dockerSelfContainerID(host) != "" {
		t.Error("container id from mountinfo")
	}
	opts := parseDockerOpts([]string{"--ipc=host"})
	if dockerJoinNetwork(opts, "clearml_backend") != "clearml_backend" || dockerJoinNetwork(opts, "bridge") != "" ||
		dockerJoinNetwork(parseDockerOpts([]string{"--net", "host"}), "clearml_backend") != "" {
		t.Error("network to join")
	}
}
