package main

import (
	"bytes"
	"testing"
)

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
		cfg := testConfig(t, tc.conf, nil)
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
	cfg := testConfig(t, conf, nil)
	if got := gitCredentialsFrom(cfg, "", ""); got != (gitCreds{"cu", "cp", "github.com"}) {
		t.Errorf("config: %+v", got)
	}
	cfg = testConfig(t, conf, map[string]string{
		"CLEARML_AGENT_GIT_USER": "eu", "TRAINS_AGENT_GIT_PASS": "ep", "CLEARML_AGENT_GIT_HOST": "gitlab.com"})
	if got := gitCredentialsFrom(cfg, "", ""); got != (gitCreds{"eu", "ep", "gitlab.com"}) {
		t.Errorf("env: %+v", got)
	}
	if got := gitCredentialsFrom(cfg, "fu", "fp"); got != (gitCreds{"fu", "fp", "gitlab.com"}) {
		t.Errorf("flags: %+v", got)
	}
	if got := gitCredentialsFrom(testConfig(t, "", nil), "", ""); got != (gitCreds{}) {
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
