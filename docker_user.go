package main

// Images that do not run as root (USER 1000). The container's user must
// read its configuration (and no other user may), and write its caches:
// the in-container paths follow agent.docker_internal_mounts, with /root
// replaced by the user's home; the task's private folder and a per-user
// folder of each host cache are handed to that user (chown).

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// dockerImageUser is who a container runs as.
type dockerImageUser struct {
	User string // as the image's USER (or --user) names it; "" is root
	UID  int    // -1: unknown
	GID  int    // -1: unknown (the file's group is left as it is)
	Home string // the user's home in the container; "" unknown
}

func (u dockerImageUser) root() bool { return dockerIsRootUser(u.User) }

var dockerRootUser = dockerImageUser{UID: 0, GID: 0, Home: dockerRoot}

// imageUser asks the engine who the image runs as (USER, and HOME from
// its environment); an image not here yet is pulled first, as `docker
// run` would.
func (b *dockerBuild) imageUser() (dockerImageUser, error) {
	if b.o.imageUser != nil {
		return *b.o.imageUser, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	engine, image := b.run.engine, b.img.image
	out, err := engineCmd(ctx, engine, "image", "inspect", "--format", "{{json .Config}}", image)
	if err != nil {
		pull := exec.Command(engine, "pull", "-q", image)
		if perr := pull.Run(); perr == nil {
			out, err = engineCmd(ctx, engine, "image", "inspect", "--format", "{{json .Config}}", image)
		}
	}
	if err != nil {
		// docker run will say what is wrong with the image.
		return dockerRootUser, nil
	}
	return parseDockerImageConfig(out), nil
}

// parseDockerImageConfig reads the user and home of `image inspect`'s Config.
func parseDockerImageConfig(out string) dockerImageUser {
	var c struct {
		User string
		Env  []string
	}
	json.Unmarshal([]byte(strings.TrimSpace(out)), &c)
	u := dockerImageUser{User: strings.TrimSpace(c.User), UID: -1, GID: -1}
	for _, kv := range c.Env {
		if h, ok := strings.CutPrefix(kv, "HOME="); ok {
			u.Home = h
		}
	}
	return dockerUserIDs(u)
}

// dockerUserIDs fills the ids of a numeric "uid[:gid]" user.
func dockerUserIDs(u dockerImageUser) dockerImageUser {
	if u.root() {
		return dockerImageUser{User: u.User, UID: 0, GID: 0, Home: dockerRoot}
	}
	name, group, _ := strings.Cut(u.User, ":")
	if n, err := strconv.Atoi(name); err == nil {
		u.UID = n
	}
	if g, err := strconv.Atoi(group); err == nil {
		u.GID = g
	}
	return u
}

// effectiveUser is who the container runs as: the last --user of its
// arguments, else the image's. A user given by name, or without a known
// home, is asked of the image itself (one short container).
func (b *dockerBuild) effectiveUser(image dockerImageUser, args []string) (dockerImageUser, error) {
	u := image
	for _, o := range parseDockerOpts(args) {
		if o.Name == "user" && o.Err == "" {
			u = dockerUserIDs(dockerImageUser{User: o.Value, UID: -1, GID: -1, Home: image.Home})
		}
	}
	if u.root() || u.UID >= 0 && u.Home != "" || b.o.imageUser != nil {
		return u, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := engineCmd(ctx, b.run.engine, "run", "--rm", "--network", "none", "--user", u.User, "--entrypoint", "/bin/sh",
		b.img.image, "-c", `id -u; id -g; printf '%s\n' "$HOME"`)
	f := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(f) != 3 {
		b.note(fmt.Sprintf("clearml-agent: warning: cannot tell the uid and home of user %q in image %s (%v); set agent.docker_internal_mounts for it", u.User, b.img.image, err))
		if u.Home == "" {
			u.Home = "/"
		}
		return u, nil
	}
	u.UID, _ = strconv.Atoi(f[0])
	u.GID, _ = strconv.Atoi(f[1])
	u.Home = f[2]
	return u, nil
}

// dockerInside are the paths inside the container (agent.docker_internal_mounts).
type dockerInside struct {
	home, sdkCache, aptCache, sshFolder, sshRO, pipCache, poetryCache string
	vcsCache, venvsCache, venvBuild, pipDownload                      string
}

// dockerInsidePaths reads agent.docker_internal_mounts. For a user other
// than root, /root is closed: the caches the reference puts there go to
// /.clearml/<name> (mount points in the user's home would be created
// root-owned there, and ~/.cache, ~/.clearml then unwritable); other
// /root paths move to the user's home. "~" is the user's home.
func dockerInsidePaths(cfg *agentConfig, u dockerImageUser) dockerInside {
	home := u.Home
	if home == "" {
		home = dockerRoot
	}
	get := func(key, def, neutral string) string {
		v := strings.TrimSpace(cfg.str("agent.docker_internal_mounts." + key))
		if v == "" {
			v = def
		}
		switch {
		case u.root():
		case v == def && neutral != "":
			v = neutral
		case v == dockerRoot || strings.HasPrefix(v, dockerRoot+"/"):
			v = path.Join(home, v[len(dockerRoot):])
		}
		if v == "~" || strings.HasPrefix(v, "~/") {
			v = path.Join(home, v[1:])
		}
		return v
	}
	return dockerInside{
		home:        home,
		sdkCache:    get("sdk_cache", "/clearml_agent_cache", ""),
		aptCache:    get("apt_cache", "/var/cache/apt/archives", ""),
		sshFolder:   "~/.ssh", // expanded by the container's shell
		sshRO:       get("ssh_ro_folder", "/.ssh", ""),
		pipCache:    get("pip_cache", dockerRoot+"/.cache/pip", "/.clearml/pip-cache"),
		poetryCache: get("poetry_cache", dockerRoot+"/.cache/pypoetry", "/.clearml/poetry-cache"),
		vcsCache:    get("vcs_cache", dockerRoot+"/.clearml/vcs-cache", "/.clearml/vcs-cache"),
		venvsCache:  get("venvs_cache", dockerRoot+"/.clearml/venvs-cache", "/.clearml/venvs-cache"),
		venvBuild:   get("venv_build", "~/.clearml/venvs-builds", ""),
		pipDownload: get("pip_download", dockerRoot+"/.clearml/pip-download-cache", "/.clearml/pip-download-cache"),
	}
}

// giveToUser hands the run's private files to the container's user when
// it is not root (and not the agent's own user): only that user, and
// root, can read them.
func (b *dockerBuild) giveToUser(paths ...string) error {
	u := b.user
	if u.root() || u.UID == os.Getuid() {
		return nil
	}
	if u.UID < 0 {
		return fmt.Errorf("image %s runs as user %q, whose uid is unknown, so the agent cannot hand it the task's configuration; use a numeric USER (uid[:gid]) or pass --user uid:gid in the container arguments", b.img.image, u.User)
	}
	for _, p := range paths {
		err := filepath.WalkDir(p, func(q string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(q, u.UID, u.GID)
		})
		if err != nil {
			return fmt.Errorf("image %s runs as uid %d, and the agent (uid %d) cannot hand that user the task's configuration (%v): run the agent as root, or as uid %d", b.img.image, u.UID, os.Getuid(), err, u.UID)
		}
	}
	return nil
}

// cacheDir is the host folder to mount for a cache at p (key names it):
// p itself for root, else p/uid-<uid>, owned by that user, so users never
// share writable trees. false: no mount (the reason is noted).
func (b *dockerBuild) cacheDir(p, key string) (string, bool) {
	if !b.user.root() {
		if b.user.UID < 0 {
			b.note(fmt.Sprintf("clearml-agent: not mounting %s: the uid of the image's user %q is unknown", key, b.user.User))
			return "", false
		}
		p = filepath.Join(p, "uid-"+strconv.Itoa(b.user.UID))
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		b.note(fmt.Sprintf("clearml-agent: not mounting %s: %v", key, err))
		return "", false
	}
	if err := b.giveToUser(p); err != nil {
		b.note(fmt.Sprintf("clearml-agent: not mounting %s: %v", key, err))
		return "", false
	}
	hp, err := b.hostPath(p, key)
	if err != nil {
		b.note("clearml-agent: not mounting a cache: " + err.Error())
		return "", false
	}
	return hp, true
}

// privateCopy is the host path to mount for src (a file or folder of the
// agent's user): src itself on the host for root, else a copy in the
// run's private folder, handed to the container's user. false: src is
// missing, or cannot be handed over (noted).
func (b *dockerBuild) privateCopy(src, name string) (string, bool) {
	if !fileExists(src) {
		return "", false
	}
	p := src
	if b.host != nil || !b.user.root() || name == "ssh" {
		p = filepath.Join(b.tmp, name)
		if err := gitCopyTree(src, p); err != nil {
			b.note(fmt.Sprintf("clearml-agent: not mounting %s: %v", src, err))
			return "", false
		}
		if err := b.giveToUser(p); err != nil {
			b.note(fmt.Sprintf("clearml-agent: not mounting %s: %v", src, err))
			return "", false
		}
	}
	hp, err := b.hostPath(p, src)
	if err != nil {
		b.note("clearml-agent: not mounting " + src + ": " + err.Error())
		return "", false
	}
	return hp, true
}
