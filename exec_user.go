package main

// CLEARML_AGENT_EXEC_USER: the task runs as another user (the agent stays
// root), with that user's home and caches, as the reference does on Linux.
// The reference moves the venv into a fresh shared home and opens the SDK
// cache to everyone (chmod 777); here the caches the agent keeps under its
// own home move to the same place under the user's home instead, and only
// the task's own files are handed over.

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// execUser is the account a task runs as.
type execUser struct {
	name     string
	uid, gid uint32
	groups   []uint32
	home     string
	dirs     []string // cache folders moved under home, handed to the user
}

// execUserCacheKeys are the folders that move to the user's home.
var execUserCacheKeys = []string{"agent.venvs_dir", "agent.venvs_cache.path", "agent.vcs_cache.path",
	"agent.pip_download_cache.path", "sdk.storage.cache.default_base_dir"}

// prepareExecUser reads CLEARML_AGENT_EXEC_USER (or TRAINS_AGENT_EXEC_USER)
// and points the caches under the agent's home at the user's; nil when
// unset, or when it does not apply (not Linux, or
// CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL, as the reference).
func prepareExecUser(cfg *agentConfig, log io.Writer) (*execUser, error) {
	name := firstEnv(cfg.env, "CLEARML_AGENT_EXEC_USER", "TRAINS_AGENT_EXEC_USER")
	if name == "" {
		return nil, nil
	}
	if skip, _ := parseBoolText(firstEnv(cfg.env, "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL")); skip || runtime.GOOS != "linux" {
		fmt.Fprintf(log, "CLEARML_AGENT_EXEC_USER=%s is ignored: it needs Linux and a virtual environment (CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL unset)\n", name)
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, &stepError{step: "CLEARML_AGENT_EXEC_USER", err: fmt.Errorf("no user %q on this machine; create it or unset the variable", name)}
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if uint32(uid) == uint32(os.Geteuid()) {
		return nil, nil // already that user
	}
	if os.Geteuid() != 0 {
		return nil, &stepError{step: "CLEARML_AGENT_EXEC_USER", err: fmt.Errorf("running tasks as %s needs the agent to run as root (it runs as uid %d); run it as root or unset the variable", name, os.Geteuid())}
	}
	eu := &execUser{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				eu.groups = append(eu.groups, uint32(n))
			}
		}
	}
	agentHome := filepath.Clean(homeDir(cfg.env))
	for _, k := range execUserCacheKeys {
		v := cfg.str(k)
		if rel, err := filepath.Rel(agentHome, v); err == nil && v != "" && !strings.HasPrefix(rel, "..") && eu.home != "" {
			v = filepath.Join(eu.home, rel)
			cfg.set(k, v)
		}
		if v != "" {
			eu.dirs = append(eu.dirs, v)
		}
	}
	fmt.Fprintf(log, "Running the task as user %s (uid %d), HOME %s; caches: %s\n", eu.name, eu.uid, eu.home, strings.Join(eu.dirs, ", "))
	return eu, nil
}

// handOver gives the user what the task needs once it is prepared: its
// folder (code), the run's temp folder (its private configuration), and
// the cache folders (the SDK writes its cache there); the environment
// becomes the user's (HOME, USER, LOGNAME).
func (eu *execUser) handOver(taskDir, tmpDir string, env []string) ([]string, error) {
	if eu == nil {
		return env, nil
	}
	for _, d := range append([]string{taskDir, tmpDir}, eu.dirs...) {
		if d == "" {
			continue
		}
		if err := eu.ensureDir(d); err != nil {
			return nil, &stepError{step: "CLEARML_AGENT_EXEC_USER", err: err}
		}
	}
	for _, d := range []string{taskDir, tmpDir} {
		if d == "" {
			continue
		}
		err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(eu.uid), int(eu.gid))
		})
		if err != nil {
			return nil, &stepError{step: "CLEARML_AGENT_EXEC_USER", err: fmt.Errorf("handing %s to %s: %w", d, eu.name, err)}
		}
	}
	set := map[string]string{"HOME": eu.home, "USER": eu.name, "LOGNAME": eu.name}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); set[k] == "" {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out, nil
}

// ensureDir makes dir and, when it is under the user's home, hands it and
// the folders between to the user (a cache's contents stay the agent's,
// readable).
func (eu *execUser) ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(eu.home, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil // a folder the operator chose: left as it is
	}
	p := eu.home
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." {
			continue
		}
		p = filepath.Join(p, part)
		if err := os.Lchown(p, int(eu.uid), int(eu.gid)); err != nil {
			return err
		}
	}
	return nil
}

// credential is what the task's process runs with (none without a user).
func (eu *execUser) credential() []*syscall.Credential {
	if eu == nil {
		return nil
	}
	return []*syscall.Credential{{Uid: eu.uid, Gid: eu.gid, Groups: eu.groups}}
}

// prepareAs prepares the task and, with CLEARML_AGENT_EXEC_USER, hands it
// to that user; runAs is nil without one.
func (x *execution) prepareAs(ctx context.Context, p *preparer) (argv []string, dir string, env []string, runAs *execUser, err error) {
	if runAs, err = prepareExecUser(x.cfg, x.log); err != nil {
		return nil, "", nil, nil, err
	}
	if argv, dir, env, err = p.prepare(ctx); err != nil {
		return nil, "", nil, nil, err
	}
	taskDir := ""
	if p.runDir != nil {
		taskDir = p.runDir.path
	}
	env, err = runAs.handOver(taskDir, p.tmpDir, env)
	return argv, dir, env, runAs, err
}
