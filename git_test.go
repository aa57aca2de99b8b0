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
	"reflect"
	"strings"
	"sync"
	"testing"
)

// gitTestConfig is the built-in defaults plus text, reading env from m.
func gitTestConfig(t *testing.T, text string, m map[string]string) *agentConfig {
	t.Helper()
	env := func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	root, err := parseHOCON("defaults", defaultsConf, env)
	if err != nil {
		t.Fatal(err)
	}
	if text != "" {
		obj, err := parseHOCON("test", []byte(text), env)
		if err != nil {
			t.Fatal(err)
		}
		root.Merge(obj)
	}
	return &agentConfig{root: root, env: env}
}

func TestGitAddAuthVectors(t *testing.T) {
	const bb, bbUser, bbBoth = "https://bitbucket.org/company/repo", "https://user@bitbucket.org/company/repo", "https://user:password@bitbucket.org/company/repo"
	up := gitCreds{user: "USER", pass: "PASSWORD"}
	for _, tc := range []struct {
		url   string
		c     gitCreds
		reset bool
		want  string
	}{
		// §9.1 rows 1-20, "actual (ConfigTree)" column.
		{bb, gitCreds{}, false, bb},
		{bb, gitCreds{user: "USER"}, false, bb},
		{bb, gitCreds{pass: "PASSWORD"}, false, bb},
		{bb, up, false, "https://USER:PASSWORD@bitbucket.org/company/repo"},
		{bbUser, gitCreds{}, false, bbUser},
		{bbUser, gitCreds{user: "USER"}, false, bbUser},
		{bbUser, gitCreds{pass: "PASSWORD"}, false, bbUser},
		{bbUser, up, false, "https://USER:PASSWORD@bitbucket.org/company/repo"},
		{bbBoth, gitCreds{}, false, bbBoth},
		{bbBoth, up, false, bbBoth},
		{bbBoth, gitCreds{user: "USER"}, false, bbBoth},
		{"ssh://git@bitbucket.org/company/repo", up, false, "ssh://git@bitbucket.org/company/repo"},
		{"ssh://git@bitbucket.org/company/repo", gitCreds{}, false, "ssh://git@bitbucket.org/company/repo"},
		{"git@bitbucket.org:company/repo.git", up, false, "git@bitbucket.org:company/repo.git"},
		{"git@bitbucket.org:company/repo.git", gitCreds{user: "USER"}, false, "git@bitbucket.org:company/repo.git"},
		// Extra vectors.
		{"http://bitbucket.org/company/repo", up, false, "http://USER:PASSWORD@bitbucket.org/company/repo"},
		{"http://bitbucket.org/company/repo", up, true, "http://bitbucket.org/company/repo"},
		{"https://github.com:8443/a/b.git", up, false, "https://USER:PASSWORD@github.com:8443/a/b.git"},
		{"https://github.com:8443/a/b.git", up, true, "https://github.com:8443/a/b.git"},
		{bbUser, up, true, bb},
		{"git://github.com/a/b.git", up, false, "git://github.com/a/b.git"},
		{"git+https://github.com/a/b.git", up, false, "git+https://github.com/a/b.git"},
		{"git+https://github.com/a/b.git", up, true, "git+https://github.com/a/b.git"},
		{"https://github.com/a/b.git", gitCreds{user: "us@er", pass: "p:a/ss"}, false, "https://us%40er:p%3Aa%2Fss@github.com/a/b.git"},
		{"https://gitlab.com/a/b.git", gitCreds{user: "USER", pass: "PASSWORD", host: "github.com"}, false, "https://gitlab.com/a/b.git"},
		{"https://GitHub.com/a/b.git", gitCreds{user: "USER", pass: "PASSWORD", host: "github.com"}, false, "https://USER:PASSWORD@github.com/a/b.git"},
	} {
		if got := gitAddAuth(tc.url, tc.c, tc.reset); got != tc.want {
			t.Errorf("gitAddAuth(%q, %+v, reset=%v) = %q, want %q", tc.url, tc.c, tc.reset, got, tc.want)
		}
	}
}

func TestGitReplaceSSHURLVectors(t *testing.T) {
	for _, u := range []string{"a", "foo://a/b", "foo://a/b/", "https://a/b/", "https://example.com/a/b",
		"https://example.com/a/b/", "ftp://example.com/a/b", "ftp://example.com/a/b/"} {
		if got := gitReplaceSSHURL(u); got != u {
			t.Errorf("gitReplaceSSHURL(%q) = %q, want unchanged", u, got)
		}
	}
	for in, want := range map[string]string{ // §9.2
		"github.com:foo/bar.git":                        "https://github.com/foo/bar.git",
		"git@github.com:foo/bar.git":                    "https://github.com/foo/bar.git",
		"bitbucket.org:foo/bar.git":                     "https://bitbucket.org/foo/bar.git",
		"hg@bitbucket.org:foo/bar.git":                  "https://bitbucket.org/foo/bar.git",
		"ssh://bitbucket.org/foo/bar.git":               "https://bitbucket.org/foo/bar.git",
		"ssh://git@github.com/foo/bar.git":              "https://github.com/foo/bar.git",
		"ssh://user@github.com/foo/bar.git":             "https://user@github.com/foo/bar.git",
		"ssh://git:password@github.com/foo/bar.git":     "https://git:password@github.com/foo/bar.git",
		"ssh://user:password@github.com/foo/bar.git":    "https://user:password@github.com/foo/bar.git",
		"ssh://hg@bitbucket.org/foo/bar.git":            "https://bitbucket.org/foo/bar.git",
		"ssh://user@bitbucket.org/foo/bar.git":          "https://user@bitbucket.org/foo/bar.git",
		"ssh://hg:password@bitbucket.org/foo/bar.git":   "https://hg:password@bitbucket.org/foo/bar.git",
		"ssh://user:password@bitbucket.org/foo/bar.git": "https://user:password@bitbucket.org/foo/bar.git",
	} {
		if got := gitReplaceSSHURL(in); got != want {
			t.Errorf("gitReplaceSSHURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGitRewriteURLVectors(t *testing.T) {
	up := gitCreds{user: "U", pass: "P"}
	const force = "agent.force_git_ssh_protocol: true\n"
	const bob = force + "agent.force_git_ssh_port: 2222\nagent.force_git_ssh_user: bob\n"
	for _, tc := range []struct {
		conf      string
		c         gitCreds
		in        string
		rewritten string
		withCreds string
	}{ // §9.3
		{"", gitCreds{}, "git@github.com:foo/bar.git", "git@github.com:foo/bar.git", "git@github.com:foo/bar.git"},
		{"", up, "git@github.com:foo/bar.git", "https://github.com/foo/bar.git", "https://U:P@github.com/foo/bar.git"},
		{"", up, "ssh://git@github.com:2222/foo/bar.git", "https://github.com:2222/foo/bar.git", "https://U:P@github.com:2222/foo/bar.git"},
		{"", gitCreds{user: "U", pass: "P", host: "github.com"}, "git@gitlab.com:foo/bar.git", "git@gitlab.com:foo/bar.git", "git@gitlab.com:foo/bar.git"},
		{"", gitCreds{user: "U", pass: "P", host: "github.com"}, "git@github.com:foo/bar.git", "https://github.com/foo/bar.git", "https://U:P@github.com/foo/bar.git"},
		{"agent.translate_ssh: false", up, "git@github.com:foo/bar.git", "git@github.com:foo/bar.git", "git@github.com:foo/bar.git"},
		{force, gitCreds{}, "https://github.com/foo/bar.git", "ssh://git@github.com/foo/bar.git", "ssh://git@github.com/foo/bar.git"},
		{force, gitCreds{}, "https://user:pass@github.com:443/foo/bar.git", "ssh://git@github.com/foo/bar.git", "ssh://git@github.com/foo/bar.git"},
		{force, gitCreds{}, "http://github.com/foo/bar.git", "http://github.com/foo/bar.git", "http://github.com/foo/bar.git"},
		{bob, gitCreds{}, "https://github.com/foo/bar.git", "ssh://bob@github.com:2222/foo/bar.git", "ssh://bob@github.com:2222/foo/bar.git"},
		{bob, gitCreds{}, "ssh://alice@github.com:22/foo/bar.git", "ssh://bob@github.com:2222/foo/bar.git", "ssh://bob@github.com:2222/foo/bar.git"},
		{bob, gitCreds{}, "git@github.com:foo/bar.git", "git@github.com:foo/bar.git", "git@github.com:foo/bar.git"},
		{force, up, "git@github.com:foo/bar.git", "https://github.com/foo/bar.git", "https://U:P@github.com/foo/bar.git"},
		{force, gitCreds{host: "gitlab.com"}, "https://github.com/foo/bar.git", "https://github.com/foo/bar.git", "https://github.com/foo/bar.git"},
		{force, gitCreds{user: "U", pass: "P", host: "gitlab.com"}, "https://github.com/foo/bar.git", "https://github.com/foo/bar.git", "https://github.com/foo/bar.git"},
		{force, gitCreds{}, "ssh://alice@github.com/foo/bar.git", "ssh://alice@github.com/foo/bar.git", "ssh://alice@github.com/foo/bar.git"},
	} {
		cfg := gitTestConfig(t, tc.conf, nil)
		got := gitRewriteURL(cfg, tc.in, tc.c)
		if got != tc.rewritten {
			t.Errorf("[%s] %+v gitRewriteURL(%q) = %q, want %q", tc.conf, tc.c, tc.in, got, tc.rewritten)
		}
		if auth := gitAddAuth(got, tc.c, false); auth != tc.withCreds {
			t.Errorf("[%s] %+v clone url of %q = %q, want %q", tc.conf, tc.c, tc.in, auth, tc.withCreds)
		}
		// What git really gets: never a password.
		argvURL, _ := gitAuthFor(got, tc.c)
		if u, _ := gitParseURL(argvURL); u.hasPass {
			t.Errorf("gitAuthFor(%q) = %q keeps a password", got, argvURL)
		}
	}
}

func TestGitAuthFor(t *testing.T) {
	up := gitCreds{user: "U", pass: "PASSWORD"}
	for _, tc := range []struct {
		in   string
		c    gitCreds
		url  string
		auth gitCreds
	}{
		{"https://github.com/a/b.git", up, "https://github.com/a/b.git", gitCreds{"U", "PASSWORD", "github.com"}},
		{"https://x@GitHub.com:8443/a/b.git", up, "https://github.com:8443/a/b.git", gitCreds{"U", "PASSWORD", "github.com"}},
		{"https://gitlab.com/a/b.git", gitCreds{"U", "PASSWORD", "github.com"}, "https://gitlab.com/a/b.git", gitCreds{}},
		{"https://me:to%40ken@host/a.git", up, "https://host/a.git", gitCreds{"me", "to@ken", "host"}},
		{"https://me:tok@host/a.git", gitCreds{}, "https://host/a.git", gitCreds{"me", "tok", "host"}},
		{"https://me:@host/a.git", gitCreds{}, "https://me@host/a.git", gitCreds{}},
		{"ssh://git:pw@host/a.git", up, "ssh://git@host/a.git", gitCreds{}},
		{"git@github.com:a/b.git", up, "git@github.com:a/b.git", gitCreds{}},
		{"/srv/repo.git", up, "/srv/repo.git", gitCreds{}},
	} {
		url, auth := gitAuthFor(tc.in, tc.c)
		if url != tc.url || auth != tc.auth {
			t.Errorf("gitAuthFor(%q, %+v) = %q, %+v; want %q, %+v", tc.in, tc.c, url, auth, tc.url, tc.auth)
		}
	}
}

func TestGitCredentialsFrom(t *testing.T) {
	conf := "agent { git_user: cu, git_pass: cp, git_host: GitHub.com }"
	cfg := gitTestConfig(t, conf, nil)
	if got := gitCredentialsFrom(cfg, "", ""); got != (gitCreds{"cu", "cp", "github.com"}) {
		t.Errorf("config: %+v", got)
	}
	cfg = gitTestConfig(t, conf, map[string]string{
		"CLEARML_AGENT_GIT_USER": "eu", "TRAINS_AGENT_GIT_PASS": "ep", "CLEARML_AGENT_GIT_HOST": "gitlab.com"})
	if got := gitCredentialsFrom(cfg, "", ""); got != (gitCreds{"eu", "ep", "gitlab.com"}) {
		t.Errorf("env: %+v", got)
	}
	if got := gitCredentialsFrom(cfg, "fu", "fp"); got != (gitCreds{"fu", "fp", "gitlab.com"}) {
		t.Errorf("flags: %+v", got)
	}
	if got := gitCredentialsFrom(gitTestConfig(t, "", nil), "", ""); got != (gitCreds{}) {
		t.Errorf("none: %+v", got)
	}
}

func TestGitAskpassMain(t *testing.T) {
	env := map[string]string{gitAskpassMarker: "1", gitAskpassUserEnv: "alice", gitAskpassPassEnv: "s3cret", gitAskpassHostEnv: "github.com"}
	look := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct{ prompt, want string }{
		{"Username for 'https://github.com': ", "alice\n"},
		{"Password for 'https://alice@github.com': ", "s3cret\n"},
		{"Password for 'https://alice@GitHub.com:8443/x': ", "s3cret\n"},
		{"Username for 'https://evil.com': ", "\n"},
		{"Password for 'https://alice@evil.com': ", "\n"},
		{"Password: ", "\n"},
	} {
		var out bytes.Buffer
		if !gitAskpassMain([]string{tc.prompt}, look, &out) {
			t.Fatalf("not handled")
		}
		if out.String() != tc.want {
			t.Errorf("%q -> %q, want %q", tc.prompt, out.String(), tc.want)
		}
	}
	env[gitAskpassHostEnv] = ""
	var out bytes.Buffer
	gitAskpassMain([]string{"Password: "}, look, &out)
	if out.String() != "s3cret\n" {
		t.Errorf("unbound host: %q", out.String())
	}
	delete(env, gitAskpassMarker)
	if gitAskpassMain([]string{"Password: "}, look, &out) {
		t.Error("handled without the marker")
	}
}

func TestGitRepoNameAndCacheKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/foo/bar.git":           "bar.git",
		"git@github.com:foo/bar.git":               "bar.git",
		"https://github.com/foo/bar.git/":          "bar.git",
		"https://dev.azure.com/org/proj/_git/repo": "repo",
		"/srv/git/x.git":                           "x.git",
		"https://host/":                            "repository",
		"https://host/a/..":                        "repository",
	} {
		if got := gitRepoName(in); got != want {
			t.Errorf("gitRepoName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := gitCacheKey("https://github.com/foo/bar.git"); got != "6f78e446bcca12f282383075934401fe" {
		t.Errorf("cache key = %s", got)
	}
}

func TestGitNormalizeExec(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "HOME" {
			return "/home/u", true
		}
		return "", false
	}
	for _, tc := range []struct{ entry, wd, wantEntry, wantWd string }{ // §9.7
		{"./train.py", ".", "train.py", "."},
		{"src/../train.py", "sub/", "train.py", "sub"},
		{"-m pkg.mod --x ./a/../b", "", "-m pkg.mod --x ./b", ""},
		{"train.py:src", "", "train.py", "src"},
		{"~/x.py", "$HOME/w", "/home/u/x.py", "/home/u/w"},
		{" train.py ", "${NOPE}/w", "train.py", "${NOPE}/w"},
	} {
		e, w := gitNormalizeExec(tc.entry, tc.wd, env)
		if e != tc.wantEntry || w != tc.wantWd {
			t.Errorf("gitNormalizeExec(%q, %q) = %q, %q; want %q, %q", tc.entry, tc.wd, e, w, tc.wantEntry, tc.wantWd)
		}
	}
}

func TestGitResolveEntry(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "src"), 0o755)
	os.WriteFile(filepath.Join(root, "src", "train.py"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "my script.py"), nil, 0o644)
	env := func(k string) (string, bool) {
		switch k {
		case "HOME":
			return "/home/u", true
		case "EPOCHS":
			return "3", true
		}
		return "", false
	}
	for _, tc := range []struct {
		entry, wd string
		dir       string
		args      []string
		err       string
	}{
		{"train.py", "src", "src", []string{"train.py"}, ""},
		{"train.py:src", "", "src", []string{"train.py"}, ""},
		{"src/train.py", "", ".", []string{"src/train.py"}, ""},
		{"my script.py", ".", ".", []string{"my script.py"}, ""},
		{"train.py --lr 0.1 --name 'a b'", "src", "src", []string{"train.py", "--lr", "0.1", "--name", "a b"}, ""},
		{"-m pkg.mod --epochs $EPOCHS", "", ".", []string{"-m", "pkg.mod", "--epochs", "3"}, ""},
		{"-c print(1)", "", ".", []string{"-c", "print(1)"}, ""},
		// As the reference's os.path.join: absolute and ~ paths win (code in an image).
		{"train.py", "../outside", "../outside", []string{"train.py"}, ""},
		{"train.py", "$HOME/w", "/home/u/w", []string{"train.py"}, ""},
		{"../../etc/x.py", "src", "src", []string{"../../etc/x.py"}, ""},
		{"~/x.py", "", ".", []string{"/home/u/x.py"}, ""},
		{"/opt/app/run.py --fast", "/opt/app", "/opt/app", []string{"/opt/app/run.py", "--fast"}, ""},
		{"", "src", "", nil, "no entry point"},
	} {
		dir, args, err := gitResolveEntry(root, gitSource{entryPoint: tc.entry, workingDir: tc.wd}, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("(%q, %q): err %v, want %q", tc.entry, tc.wd, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("(%q, %q): %v", tc.entry, tc.wd, err)
			continue
		}
		want := tc.dir
		if !filepath.IsAbs(want) {
			want = filepath.Join(root, tc.dir)
		}
		if dir != want || !reflect.DeepEqual(args, tc.args) {
			t.Errorf("(%q, %q) = %q %q, want %q %q", tc.entry, tc.wd, dir, args, want, tc.args)
		}
	}
}

func TestGitShlexSplit(t *testing.T) {
	for in, want := range map[string][]string{
		`a b  c`:             {"a", "b", "c"},
		`a 'b c' "d \"e\""`:  {"a", "b c", `d "e"`},
		`a\ b x"y"z`:         {"a b", "xyz"},
		`'' ""`:              {"", ""},
		`"a\nb" '\n'`:        {`a\nb`, `\n`},
		"  \t":               nil,
		`--name=$HOME/x 'q'`: {"--name=$HOME/x", "q"},
	} {
		got, err := shlexSplit(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("shlexSplit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := shlexSplit(`a "b`); err == nil {
		t.Error("unclosed quote accepted")
	}
}

func TestGitIsLiteralScript(t *testing.T) {
	for d, want := range map[string]bool{
		"":                                 false,
		"diff --git a/x b/x\n":             false,
		"  \nDIFF --git a/x b/x\n":         false,
		"submodule x 1..2:\ndiff --git\n":  false,
		"submodule x 1..2:\nprint(1)\n":    true,
		"print('hello')\n":                 true,
		"#!/bin/bash\necho diff --git x\n": true,
	} {
		if got := gitIsLiteralScript(d); got != want {
			t.Errorf("gitIsLiteralScript(%q) = %v", d, got)
		}
	}
}

func TestGitDiffStrip(t *testing.T) {
	for d, want := range map[string]int{
		"diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n":              1,
		"diff --git x.py x.py\n--- x.py\n+++ x.py\n":                      0,
		"diff --git i/x.py w/x.py\n--- i/x.py\n+++ w/x.py\n":              1,
		"diff --git a/n.py a/n.py\nnew file\n--- /dev/null\n+++ a/n.py\n": 0,
		"diff --git a/n.py b/n.py\n--- /dev/null\n+++ b/n.py\n":           1,
		"--- a/b/x.py\t2020\n+++ a/b/x.py\t2021\n":                        0,
	} {
		if got := gitDiffStrip(d); got != want {
			t.Errorf("gitDiffStrip(%q) = %d, want %d", d, got, want)
		}
	}
}

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

func gitT(t *testing.T, env []string, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
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
	gitT(t, env, base, "init", "-q", "--bare", sub)
	gitT(t, env, base, "init", "-q", subWork)
	gitWrite(t, filepath.Join(subWork, "lib.py"), "LIB = 1\n")
	gitT(t, env, subWork, "add", ".")
	gitT(t, env, subWork, "commit", "-qm", "lib")
	gitT(t, env, subWork, "push", "-q", sub, "master")

	gitT(t, env, base, "init", "-q", "--bare", f.origin)
	gitT(t, env, base, "init", "-q", f.work)
	w := f.work
	gitWrite(t, filepath.Join(w, "train.py"), "print('v1')\n")
	gitWrite(t, filepath.Join(w, "src", "model.py"), "a = 1\nb = 2\nc = 3\n")
	gitT(t, env, w, "add", ".")
	gitT(t, env, w, "commit", "-qm", "c1")
	f.c1 = gitT(t, env, w, "rev-parse", "HEAD")
	gitT(t, env, w, "tag", "v1")
	gitWrite(t, filepath.Join(w, "train.py"), "print('v2')\n")
	gitT(t, env, w, "commit", "-qam", "c2")
	f.c2 = gitT(t, env, w, "rev-parse", "HEAD")
	gitT(t, env, w, "checkout", "-qb", "feature")
	gitWrite(t, filepath.Join(w, "train.py"), "print('feature')\n")
	gitT(t, env, w, "commit", "-qam", "feat")
	f.cFeat = gitT(t, env, w, "rev-parse", "HEAD")
	gitT(t, env, w, "checkout", "-q", "master")
	gitT(t, env, w, "submodule", "add", "-q", sub, "libs/sub")
	gitT(t, env, w, "commit", "-qm", "c3")
	f.c3 = gitT(t, env, w, "rev-parse", "HEAD")
	gitT(t, env, w, "push", "-q", "--tags", f.origin, "master", "feature")
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
	g := &gitCheckout{cfg: gitTestConfig(t, "", nil), log: &log, cacheDir: cache, environ: env}
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
	gitT(t, env, f.work, "commit", "-qam", "c4")
	gitT(t, env, f.work, "push", "-q", f.origin, "master")
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
	nc := &gitCheckout{cfg: gitTestConfig(t, "agent.vcs_cache.enabled: false", nil), log: &log, cacheDir: t.TempDir(), environ: env}
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
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g := &gitCheckout{cfg: gitTestConfig(t, "", nil), cacheDir: cache, environ: env}
			_, errs[i] = g.run(context.Background(), gitSource{repository: f.origin}, t.TempDir())
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestGitApplyDiff(t *testing.T) {
	// The developer who made the diff had diff.noprefix set.
	env := gitTestEnv(t, "[diff]\n\tnoprefix = true\n")
	f := gitMakeFixture(t, env)
	gitWrite(t, filepath.Join(f.work, "src", "model.py"), "a = 1\nb = 20\nc = 3\n")
	gitWrite(t, filepath.Join(f.work, "new.py"), "x = 1\n")
	gitT(t, env, f.work, "add", "-N", "new.py")
	diff := gitT(t, env, f.work, "diff") + "\n"
	if !strings.Contains(diff, "--- src/model.py") {
		t.Fatalf("fixture diff has prefixes:\n%s", diff)
	}
	gitT(t, env, f.work, "checkout", "-q", ".")
	os.Remove(filepath.Join(f.work, "new.py"))

	// The agent's user has a hostile global config too.
	hostile := filepath.Join(t.TempDir(), "gitconfig")
	gitWrite(t, hostile, "[apply]\n\twhitespace = error-all\n[diff]\n\tnoprefix = true\n")
	t.Setenv("GIT_CONFIG_GLOBAL", hostile)

	var log bytes.Buffer
	g := &gitCheckout{cfg: gitTestConfig(t, "", nil), log: &log, cacheDir: t.TempDir(), environ: env}
	res, err := g.run(context.Background(), gitSource{repository: f.origin, diff: diff}, t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if got := gitReadFile(t, filepath.Join(res.root, "src", "model.py")); got != "a = 1\nb = 20\nc = 3\n" {
		t.Errorf("model.py = %q", got)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "new.py")); got != "x = 1\n" {
		t.Errorf("new.py = %q", got)
	}

	// A prefixed diff with trailing whitespace applies despite apply.whitespace=error-all.
	dir := t.TempDir()
	gitWrite(t, filepath.Join(dir, "m.py"), "a = 1\n")
	ws := "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-a = 1\n+a = 2   \n"
	if err := gitApplyDiff(context.Background(), dir, ws, &log); err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(dir, "m.py")); got != "a = 2   \n" {
		t.Errorf("m.py = %q", got)
	}

	// A diff that does not apply names its first failing hunk.
	bad := "diff --git a/src/model.py b/src/model.py\n--- a/src/model.py\n+++ b/src/model.py\n" +
		"@@ -1,3 +1,3 @@\n a = 1\n-b = 999\n+b = 1000\n c = 3\n"
	_, err = g.run(context.Background(), gitSource{repository: f.origin, diff: bad}, t.TempDir())
	if err == nil {
		t.Fatal("bad diff applied")
	}
	for _, want := range []string{"diff:", "@@ -1,3 +1,3 @@", "b = 999", "src/model.py"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") && !strings.HasPrefix(err.Error(), "diff:") {
		t.Errorf("error: %q", err)
	}
}

func TestGitLiteralScripts(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g := newGitCheckout(gitTestConfig(t, "", nil), gitCreds{}, nil)
	script := "print('hello')\n"
	for _, tc := range []struct {
		entry, wd string
		file      string
		entryOut  string
	}{
		{"some/dir/run.py", "", "run.py", "run.py"},
		{"", "", "untitled.py", "untitled.py"},
		{"-m pkg", "", "untitled.py", "-m pkg"},
		{"-c echo", "", "untitled.sh", "-c echo"},
	} {
		dest := t.TempDir()
		res, err := g.run(ctx, gitSource{diff: script, entryPoint: tc.entry, workingDir: tc.wd}, dest)
		if err != nil {
			t.Fatal(err)
		}
		if got := gitReadFile(t, filepath.Join(dest, tc.file)); got != script {
			t.Errorf("%q: %s = %q", tc.entry, tc.file, got)
		}
		if res.root != dest || res.src.entryPoint != tc.entryOut {
			t.Errorf("%q: root %s entry %q", tc.entry, res.root, res.src.entryPoint)
		}
		if tc.entry == "some/dir/run.py" {
			dir, args, err := gitResolveEntry(res.root, res.src, nil)
			if err != nil || dir != dest || !reflect.DeepEqual(args, []string{"run.py"}) {
				t.Errorf("resolve: %s %q %v", dir, args, err)
			}
		}
	}

	// With a repository: written into the working dir, unless the file exists.
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	g = &gitCheckout{cfg: gitTestConfig(t, "", nil), cacheDir: t.TempDir(), environ: env}
	res, err := g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "nb.py", workingDir: "space dir"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "space dir", "nb.py")); got != script {
		t.Errorf("nb.py = %q", got)
	}
	res, err = g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "train.py"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v2')\n" {
		t.Errorf("existing file replaced: %q", got)
	}
	_, err = g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "x.py", workingDir: "../../escape"}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("escape: %v", err)
	}
}

// TestGitHTTPCredentials clones over smart HTTP with basic auth and checks
// the password went only through the ask-pass channel.
func TestGitHTTPCredentials(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	execPath := gitT(t, env, "", "--exec-path")
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
		return &gitCheckout{cfg: gitTestConfig(t, "", nil), creds: c, log: log, cacheDir: cache,
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
