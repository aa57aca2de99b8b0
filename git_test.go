package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// --- real repositories ---

// gitTestEnv is an isolated git environment: a temp HOME and global config.
func gitTestEnv(t *testing.T, extraConfig string) []string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	home := t.TempDir()
	conf := filepath.Join(home, ".gitconfig")
	text := "[user]\n\tname = Test\n\temail = t@example.com\n[init]\n\tdefaultBranch = master\n" +
		"[protocol \"file\"]\n\tallow = always\n[advice]\n\tdetachedHead = false\n" + extraConfig
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GIT_") || k == "HOME" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "GIT_CONFIG_GLOBAL="+conf, "GIT_CONFIG_NOSYSTEM=1")
}

func gitWrite(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type gitFixture struct {
	origin            string // bare repository path
	c1, c2, c3, cFeat string
	work              string
	env               []string
}

// gitMakeFixture builds origin.git: c1 (tag v1) -> c2 -> c3 (adds the
// submodule libs/sub) on master, and branch feature from c2.
func gitMakeFixture(t *testing.T, env []string) gitFixture {
	t.Helper()
	base := t.TempDir()
	f := gitFixture{origin: filepath.Join(base, "origin.git"), work: filepath.Join(base, "work"), env: env}
	sub := filepath.Join(base, "sub.git")
	subWork := filepath.Join(base, "subwork")
	runGit(t, env, base, "init", "-q", "--bare", sub)
	runGit(t, env, base, "init", "-q", subWork)
	gitWrite(t, filepath.Join(subWork, "lib.py"), "LIB = 1\n")
	runGit(t, env, subWork, "add", ".")
	runGit(t, env, subWork, "commit", "-qm", "lib")
	runGit(t, env, subWork, "push", "-q", sub, "master")

	runGit(t, env, base, "init", "-q", "--bare", f.origin)
	runGit(t, env, base, "init", "-q", f.work)
	w := f.work
	gitWrite(t, filepath.Join(w, "train.py"), "print('v1')\n")
	gitWrite(t, filepath.Join(w, "src", "model.py"), "a = 1\nb = 2\nc = 3\n")
	runGit(t, env, w, "add", ".")
	runGit(t, env, w, "commit", "-qm", "c1")
	f.c1 = runGit(t, env, w, "rev-parse", "HEAD")
	runGit(t, env, w, "tag", "v1")
	gitWrite(t, filepath.Join(w, "train.py"), "print('v2')\n")
	runGit(t, env, w, "commit", "-qam", "c2")
	f.c2 = runGit(t, env, w, "rev-parse", "HEAD")
	runGit(t, env, w, "checkout", "-qb", "feature")
	gitWrite(t, filepath.Join(w, "train.py"), "print('feature')\n")
	runGit(t, env, w, "commit", "-qam", "feat")
	f.cFeat = runGit(t, env, w, "rev-parse", "HEAD")
	runGit(t, env, w, "checkout", "-q", "master")
	runGit(t, env, w, "submodule", "add", "-q", sub, "libs/sub")
	runGit(t, env, w, "commit", "-qm", "c3")
	f.c3 = runGit(t, env, w, "rev-parse", "HEAD")
	runGit(t, env, w, "push", "-q", "--tags", f.origin, "master", "feature")
	return f
}

func gitReadFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGitCheckoutCacheOrderSubmodules(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	cache := t.TempDir()
	var log bytes.Buffer
	g := &gitCheckout{cfg: testConfig(t, "", nil), log: &log, cacheDir: cache, environ: env}
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		src    gitSource
		commit string
		train  string
	}{
		{"default branch", gitSource{}, f.c3, "print('v2')\n"},
		{"commit", gitSource{commit: f.c1}, f.c1, "print('v1')\n"},
		{"commit before tag and branch", gitSource{commit: f.c2, tag: "v1", branch: "feature"}, f.c2, "print('v2')\n"},
		{"tag before branch", gitSource{tag: "v1", branch: "feature"}, f.c1, "print('v1')\n"},
		{"branch", gitSource{branch: "feature"}, f.cFeat, "print('feature')\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log.Reset()
			tc.src.repository = f.origin
			dest := t.TempDir()
			res, err := g.run(ctx, tc.src, dest)
			if err != nil {
				t.Fatalf("%v\nlog:\n%s", err, log.String())
			}
			if res.root != filepath.Join(dest, "origin.git") || res.commit != tc.commit {
				t.Errorf("root %s commit %s, want %s", res.root, res.commit, tc.commit)
			}
			if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != tc.train {
				t.Errorf("train.py = %q, want %q", got, tc.train)
			}
			if tc.commit == f.c3 {
				if got := gitReadFile(t, filepath.Join(res.root, "libs", "sub", "lib.py")); got != "LIB = 1\n" {
					t.Errorf("submodule lib.py = %q", got)
				}
			}
		})
	}
	// Every run after the first used the cache entry keyed by the URL.
	entry := filepath.Join(cache, "origin.git."+gitCacheKey(f.origin), "origin.git", ".git")
	if _, err := os.Stat(entry); err != nil {
		t.Errorf("cache entry: %v", err)
	}
	if !strings.Contains(log.String(), "Using cached repository in") {
		t.Errorf("second clone missed the cache:\n%s", log.String())
	}
	if _, err := os.Stat(filepath.Join(cache, gitCacheKey(f.origin)+".lock")); err != nil {
		t.Errorf("lock file: %v", err)
	}

	// A new commit pushed after caching is fetched.
	gitWrite(t, filepath.Join(f.work, "train.py"), "print('v3')\n")
	runGit(t, env, f.work, "commit", "-qam", "c4")
	runGit(t, env, f.work, "push", "-q", f.origin, "master")
	res, err := g.run(ctx, gitSource{repository: f.origin, branch: "master"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v3')\n" {
		t.Errorf("after push: %q", got)
	}

	// Failures name their step.
	for _, tc := range []struct {
		src  gitSource
		want string
	}{
		{gitSource{repository: f.origin, commit: "deadbeef"}, "checkout:"},
		{gitSource{repository: f.origin, branch: "nope"}, "checkout:"},
		{gitSource{repository: f.origin, branch: "--upload-pack=x"}, "checkout:"},
		{gitSource{repository: filepath.Join(t.TempDir(), "missing.git")}, "clone:"},
	} {
		_, err := g.run(ctx, tc.src, t.TempDir())
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want prefix %q", tc.src, err, tc.want)
		}
	}

	// Without the cache: straight into dest.
	nc := &gitCheckout{cfg: testConfig(t, "agent.vcs_cache.enabled: false", nil), log: &log, cacheDir: t.TempDir(), environ: env}
	res, err = nc.run(ctx, gitSource{repository: f.origin, tag: "v1"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res.commit != f.c1 {
		t.Errorf("no cache: commit %s", res.commit)
	}
	if ents, _ := os.ReadDir(nc.cacheDir); len(ents) != 0 {
		t.Errorf("cache used while disabled: %v", ents)
	}
}

func TestGitCheckoutConcurrentCache(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	cache := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		// Built here: a helper's t.Fatal must not run on another goroutine.
		g := &gitCheckout{cfg: testConfig(t, "", nil), cacheDir: cache, environ: env}
		dest := t.TempDir()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = g.run(context.Background(), gitSource{repository: f.origin}, dest)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestGitHTTPCredentials clones over smart HTTP with basic auth and checks
// the password went only through the ask-pass channel.
func TestGitHTTPCredentials(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	execPath := runGit(t, env, "", "--exec-path")
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend not available")
	}
	const user, pass = "alice", "Sup3r-Secret-Passw0rd"
	var mu sync.Mutex
	authed := 0
	cgiHandler := &cgi.Handler{Path: backend, Root: "/git",
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(f.origin), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		authed++
		mu.Unlock()
		cgiHandler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	repoURL := srv.URL + "/git/origin.git"

	// A git shim records every argv; an ask-pass script speaks our protocol.
	bin := t.TempDir()
	argvLog := filepath.Join(bin, "argv.log")
	realGit, _ := exec.LookPath("git")
	gitWrite(t, filepath.Join(bin, "git"), "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '"+argvLog+"'\nexec '"+realGit+"' \"$@\"\n")
	gitWrite(t, filepath.Join(bin, "askpass"), "#!/bin/sh\ncase \"$1\" in [Uu]*) printf '%s\\n' \"$"+gitAskpassUserEnv+"\";; *) printf '%s\\n' \"$"+gitAskpassPassEnv+"\";; esac\n")
	os.Chmod(filepath.Join(bin, "git"), 0o755)
	os.Chmod(filepath.Join(bin, "askpass"), 0o755)

	cache := t.TempDir()
	newG := func(c gitCreds, log *bytes.Buffer) *gitCheckout {
		return &gitCheckout{cfg: testConfig(t, "", nil), creds: c, log: log, cacheDir: cache,
			askpass: filepath.Join(bin, "askpass"), gitBin: filepath.Join(bin, "git"), environ: env}
	}
	ctx := context.Background()

	assertNoLeak := func(t *testing.T, log string, dirs ...string) {
		t.Helper()
		if strings.Contains(log, pass) {
			t.Errorf("password in the log:\n%s", log)
		}
		if b, _ := os.ReadFile(argvLog); bytes.Contains(b, []byte(pass)) || len(b) == 0 {
			t.Errorf("password in git's argv (or no argv recorded):\n%s", b)
		}
		for _, d := range dirs {
			filepath.WalkDir(d, func(p string, de os.DirEntry, err error) error {
				if err == nil && de.Type().IsRegular() {
					if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(pass)) {
						t.Errorf("password in %s", p)
					}
				}
				return nil
			})
		}
	}

	t.Run("configured credentials", func(t *testing.T) {
		var log bytes.Buffer
		dest := t.TempDir()
		res, err := newG(gitCreds{user: user, pass: pass}, &log).run(ctx, gitSource{repository: repoURL}, dest)
		if err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v2')\n" {
			t.Errorf("train.py = %q", got)
		}
		if res.url != repoURL {
			t.Errorf("url %q", res.url)
		}
		if authed == 0 {
			t.Error("server saw no authenticated request")
		}
		assertNoLeak(t, log.String(), dest, cache)
		// Second run: cache hit plus an authenticated fetch.
		log.Reset()
		if _, err := newG(gitCreds{user: user, pass: pass}, &log).run(ctx, gitSource{repository: repoURL, tag: "v1"}, dest); err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		if !strings.Contains(log.String(), "Using cached repository") {
			t.Errorf("no cache hit:\n%s", log.String())
		}
		assertNoLeak(t, log.String(), dest, cache)
	})

	t.Run("credentials in the task url", func(t *testing.T) {
		var log bytes.Buffer
		dest := t.TempDir()
		u := strings.Replace(repoURL, "://", "://"+user+":"+pass+"@", 1)
		res, err := newG(gitCreds{}, &log).run(ctx, gitSource{repository: u, tag: "v1"}, dest)
		if err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v1')\n" {
			t.Errorf("train.py = %q", got)
		}
		assertNoLeak(t, log.String(), dest, cache)
	})

	t.Run("git_host elsewhere", func(t *testing.T) {
		var log bytes.Buffer
		_, err := newG(gitCreds{user: user, pass: pass, host: "github.com"}, &log).run(ctx, gitSource{repository: repoURL}, t.TempDir())
		if err == nil || !strings.HasPrefix(err.Error(), "clone:") && !strings.HasPrefix(err.Error(), "fetch:") {
			t.Errorf("credentials sent to a host other than git_host? err=%v", err)
		}
		assertNoLeak(t, log.String())
	})

	t.Run("wrong password", func(t *testing.T) {
		var log bytes.Buffer
		_, err := newG(gitCreds{user: user, pass: "wrong-password"}, &log).run(ctx, gitSource{repository: srv.URL + "/git/other.git"}, t.TempDir())
		if err == nil || !strings.HasPrefix(err.Error(), "clone:") || strings.Contains(err.Error(), "wrong-password") {
			t.Errorf("err=%v", err)
		}
	})
}

func TestGitEnv(t *testing.T) {
	g := &gitCheckout{askpass: "/x/agent", environ: []string{"PATH=/bin", "GIT_TERMINAL_PROMPT=1", "CLEARML_AGENT_ASKPASS_PASS=injected", "GIT_ASKPASS=/user/askpass"}}
	env := strings.Join(g.gitEnv(gitCmd{auth: gitCreds{"u", "p", "h"}}), "\n")
	for _, want := range []string{"GIT_TERMINAL_PROMPT=0", "GIT_SSH_COMMAND=ssh -oBatchMode=yes", "GIT_ASKPASS=/x/agent",
		"CLEARML_AGENT_ASKPASS=1", "CLEARML_AGENT_ASKPASS_USER=u", "CLEARML_AGENT_ASKPASS_PASS=p", "CLEARML_AGENT_ASKPASS_HOST=h"} {
		if !strings.Contains(env+"\n", want+"\n") {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
	for _, bad := range []string{"GIT_TERMINAL_PROMPT=1", "injected", "/user/askpass"} {
		if strings.Contains(env, bad) {
			t.Errorf("env keeps %q", bad)
		}
	}
	g.environ = []string{"GIT_SSH_COMMAND=ssh -i key", "GIT_ASKPASS=/user/askpass"}
	env = strings.Join(g.gitEnv(gitCmd{}), "\n")
	if strings.Contains(env, "BatchMode") || !strings.Contains(env, "GIT_ASKPASS=/user/askpass") || strings.Contains(env, gitAskpassMarker) {
		t.Errorf("user settings not kept:\n%s", env)
	}
}

func TestGitErrorLine(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"fatal: '/etc' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n",
			"fatal: '/etc' does not appear to be a git repository"},
		{"Host key verification failed.\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n",
			"Host key verification failed."},
		{"git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n",
			"git@github.com: Permission denied (publickey)."},
		{"remote: Invalid username or password.\nfatal: Authentication failed for 'https://example.com/r.git/'\n",
			"fatal: Authentication failed for 'https://example.com/r.git/'"},
		{"error: pathspec 'nope' did not match any file(s) known to git\nhint: maybe\n", "error: pathspec 'nope' did not match any file(s) known to git"},
		{"Cloning into 'x'...\nwarning: something\nsome last words\n", "some last words"},
		{"hint: only a hint\n", "exit status 128"},
		{"", "exit status 128"},
	} {
		if got := gitErrorLine(tc.out, "exit status 128"); got != tc.want {
			t.Errorf("gitErrorLine(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

// TestGitCloneFailureCleanup: a failed clone names git's real error (not
// "and the repository exists.") and leaves no folder in the vcs cache.
func TestGitCloneFailureCleanup(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	cache := t.TempDir()
	missing := filepath.Join(t.TempDir(), "missing.git")
	for _, tc := range []struct{ repo, want string }{
		{"file:///etc", "fatal: '/etc' does not appear to be a git repository"},
		{missing, "fatal: repository '" + missing + "' does not exist"},
	} {
		g := &gitCheckout{cfg: testConfig(t, "", nil), cacheDir: cache, environ: env}
		_, err := g.run(context.Background(), gitSource{repository: tc.repo}, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "git clone "+tc.repo+" failed: "+tc.want) || strings.Contains(err.Error(), "repository exists") {
			t.Errorf("clone %s: %v", tc.repo, err)
		}
	}
	left, _ := os.ReadDir(cache)
	for _, e := range left {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("the failed clone left %s in the vcs cache", e.Name())
		}
	}
	// Without the cache, nothing is left in the task's folder either.
	dest := t.TempDir()
	g := &gitCheckout{cfg: testConfig(t, "agent.vcs_cache.enabled: false", nil), environ: env}
	if _, err := g.run(context.Background(), gitSource{repository: missing}, dest); err == nil {
		t.Fatal("clone of a missing repository succeeded")
	}
	if left, _ := os.ReadDir(dest); len(left) != 0 {
		t.Errorf("left in the task folder: %v", left)
	}
}
