package main

// The agent in a container (clearml-server's agent-services, or a pod)
// drives the host's docker engine, which resolves every path of `docker
// run` on the host. CLEARML_AGENT_DOCKER_HOST_MOUNT (or
// CLEARML_AGENT_K8S_HOST_MOUNT) = "<host folder>:<the same folder in the
// agent's container>" names the one folder both see: what the task
// container mounts (the agent binary, the task's config, the caches) must
// be inside it, and is handed to the engine by its host path.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// dockerHostMount is a parsed CLEARML_AGENT_DOCKER_HOST_MOUNT.
type dockerHostMount struct {
	Host  string // the folder on the host
	Local string // the same folder where the agent runs
	Var   string // the variable it came from, for messages
}

// dockerHostMountVars in the reference's order: the first one set wins.
var dockerHostMountVars = []string{"CLEARML_AGENT_K8S_HOST_MOUNT", "CLEARML_AGENT_DOCKER_HOST_MOUNT",
	"TRAINS_AGENT_K8S_HOST_MOUNT", "TRAINS_AGENT_DOCKER_HOST_MOUNT"}

// parseDockerHostMount reads the variable; false when none is set.
func parseDockerHostMount(env envLookup) (dockerHostMount, bool, error) {
	for _, name := range dockerHostMountVars {
		v, ok := env(name)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		host, local, found := strings.Cut(strings.TrimSpace(v), ":") // the first ":", as the reference
		m := dockerHostMount{Host: path.Clean(host), Local: path.Clean(local), Var: name}
		if !found || !path.IsAbs(host) || !path.IsAbs(local) {
			return m, true, fmt.Errorf("%s=%s: write it as <host folder>:<the same folder in the agent's container>, both absolute (e.g. /opt/clearml/agent:/root/.clearml)", name, v)
		}
		return m, true, nil
	}
	return dockerHostMount{}, false, nil
}

// HostPath is where a path of the agent's container is on the host. A path
// outside the shared folder has no host path: the error says so and how to
// fix it (what names the path: the caller's key).
func (m dockerHostMount) HostPath(local, what string) (string, error) {
	clean := path.Clean(local)
	if !path.IsAbs(local) {
		return "", fmt.Errorf("%s %s is not an absolute path", what, local)
	}
	switch {
	case clean == m.Local:
		return m.Host, nil
	case m.Local == "/":
		return path.Join(m.Host, clean[1:]), nil
	case strings.HasPrefix(clean, m.Local+"/"):
		return path.Join(m.Host, clean[len(m.Local)+1:]), nil
	}
	return "", fmt.Errorf("%s %s is outside %s, the folder the agent's container shares with the host (%s=%s:%s), so the host's docker cannot mount it: move it under %s",
		what, local, m.Local, m.Var, m.Host, m.Local, m.Local)
}

// dockerQuoteName quotes a worker id for a file name as Python's
// urllib.parse.quote(s, safe="") does (the reference names the task
// config .clearml_agent.<quoted worker id>.cfg in the shared folder).
func dockerQuoteName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.-~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// The agent's own container: docker mounts its /etc/hostname from
// .../containers/<id>/hostname, podman from .../overlay-containers/<id>/userdata/hostname.
var dockerMountinfoID = lazyRegexp(`/(?:docker/containers|overlay-containers)/([0-9a-f]{64})/(?:userdata/)?(?:hostname|hosts|resolv\.conf)\s`)

// dockerSelfContainerID finds the id of the container the agent runs in
// from /proc/self/mountinfo ("" when not in a docker or podman container).
// The reference reads /proc/1/cpuset, which is "/" under cgroup v2; the
// mounts of /etc/hostname work on both.
func dockerSelfContainerID(mountinfo string) string {
	if m := dockerMountinfoID().FindStringSubmatch(mountinfo); m != nil {
		return m[1]
	}
	return ""
}

// dockerJoinNetwork is the --network a task container takes when the
// agent runs in a container and the arguments name none: the agent
// container's own network mode (`docker inspect -f
// {{.HostConfig.NetworkMode}} <id>`), so a task reaches what the agent
// reaches (apiserver on the compose network). "" when nothing is to add.
func dockerJoinNetwork(opts []dockerOpt, agentNetworkMode string) string {
	for _, o := range opts {
		if o.Name == "network" {
			return ""
		}
	}
	switch agentNetworkMode {
	case "", "default", "bridge":
		return ""
	}
	return agentNetworkMode
}

// hostPath is where a path the agent sees is on the host: itself when
// the agent runs on the host, else through the shared folder.
func (b *dockerBuild) hostPath(local, what string) (string, error) {
	if b.host == nil {
		return local, nil
	}
	return b.host.HostPath(local, what)
}

// binaryHostPath is the agent binary's host path. In a container, the
// binary goes into the shared folder first, once per content
// (<shared>/.clearml-agent/bin/<sha256 prefix>/clearml-agent).
func (b *dockerBuild) binaryHostPath() (string, error) {
	if b.host == nil {
		return b.bin, nil
	}
	local, err := dockerShareBinary(b.bin, filepath.Join(b.host.Local, ".clearml-agent", "bin"))
	if err != nil {
		return "", fmt.Errorf("cannot put the agent binary in the folder shared with the host (%s): %v", b.host.Var, err)
	}
	return b.host.HostPath(local, "the agent binary")
}

var dockerSharedBinaries sync.Map // binary path -> its copy in the shared folder

// dockerShareBinary copies bin into dir/<sha256[:12]>/clearml-agent
// (0755) unless it is there; written under a temporary name and renamed,
// so a container never sees half a binary.
func dockerShareBinary(bin, dir string) (string, error) {
	if p, ok := dockerSharedBinaries.Load(bin + "\x00" + dir); ok {
		return p.(string), nil
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	dst := filepath.Join(dir, hex.EncodeToString(sum[:])[:12], "clearml-agent")
	if st, err := os.Stat(dst); err != nil || st.Size() != int64(len(data)) {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		tmp, err := os.CreateTemp(filepath.Dir(dst), ".clearml-agent-*")
		if err != nil {
			return "", err
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o755), os.Rename(tmp.Name(), dst)); err != nil {
			os.Remove(tmp.Name())
			return "", err
		}
	}
	dockerSharedBinaries.Store(bin+"\x00"+dir, dst)
	return dst, nil
}

// dockerOwnNetworkMode is the network mode of the container the agent
// runs in ("" when not in one, or the engine does not say).
func dockerOwnNetworkMode(engine string) string {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	id := dockerSelfContainerID(string(mi))
	if id == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := engineCmd(ctx, engine, "inspect", "--format", "{{.HostConfig.NetworkMode}}", id)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}
