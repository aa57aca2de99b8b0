package main

import (
	"bytes"
	"context"
	"encoding/base64"
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

func TestGitCredsForURL(t *testing.T) {
	extras := `agent.git.extra_credentials: [
  {host: "gitlab.com", user: "gu", pass: "gp"},
  {host: "bitbucket.org", username: "bu", password: "bp"},
  {host: "incomplete.org", user: "x"},
  {host: "github.com", user: "xu", pass: "xp"},
]`
	base := gitCreds{user: "u", pass: "p"}
	for _, tc := range []struct {
		conf string
		base gitCreds
		url  string
		want gitCreds
	}{
		{"", base, "https://github.com/a/b.git", gitCreds{"u", "p", "github.com"}},
		{"", gitCreds{"u", "p", "github.com"}, "https://gitlab.com/a/b.git", gitCreds{}},
		{"", gitCreds{"u", "p", "github.com"}, "git@GitHub.com:a/b.git", gitCreds{"u", "p", "github.com"}},
		{extras, gitCreds{"u", "p", "example.com"}, "https://gitlab.com/a/b.git", gitCreds{"gu", "gp", "gitlab.com"}},
		{extras, gitCreds{"u", "p", "example.com"}, "git@gitlab.com:a/b.git", gitCreds{"gu", "gp", "gitlab.com"}},
		{extras, gitCreds{}, "https://bitbucket.org:8443/a/b.git", gitCreds{"bu", "bp", "bitbucket.org"}},
		{extras, gitCreds{"u", "p", "example.com"}, "https://example.com/a.git", gitCreds{"u", "p", "example.com"}},
		// An extra entry for the host wins over the configured pair, as in the reference.
		{extras, base, "https://github.com/a/b.git", gitCreds{"xu", "xp", "github.com"}},
		{extras, gitCreds{"u", "p", "example.com"}, "https://incomplete.org/a.git", gitCreds{}},
		// Prefix matching: the host is a prefix of the whole URL.
		{"agent.git_host_match_prefix: true", gitCreds{"u", "p", "https://github.com/myorg/"}, "https://github.com/MyOrg/x.git", gitCreds{"u", "p", "github.com"}},
		{"agent.git_host_match_prefix: true", gitCreds{"u", "p", "https://github.com/myorg/"}, "https://github.com/other/x.git", gitCreds{}},
		{"agent.git_host_match_prefix: true\n" + `agent.git.extra_credentials: [{host: "gitlab.com:team/", user: "tu", pass: "tp"}]`,
			gitCreds{}, "git@gitlab.com:team/x.git", gitCreds{"tu", "tp", "gitlab.com"}},
		{"agent.git_host_match_prefix: true\n" + `agent.git.extra_credentials: [{host: "gitlab.com:team/", user: "tu", pass: "tp"}]`,
			gitCreds{}, "git@gitlab.com:other/x.git", gitCreds{}},
	} {
		got, note := gitCredsForURL(testConfig(t, tc.conf, nil), tc.base, tc.url)
		if got != tc.want {
			t.Errorf("conf %q base %+v url %s: %+v, want %+v (%s)", tc.conf, tc.base, tc.url, got, tc.want, note)
		}
	}
	_, note := gitCredsForURL(testConfig(t, extras, nil), base, "https://incomplete.org/a.git")
	if !strings.Contains(note, "entry #2 does not contain user, pass and host") {
		t.Errorf("incomplete entry not reported: %q", note)
	}
	// pip's git gets the prefix's host.
	if got := gitPromptCreds(nil, gitCreds{"u", "p", "https://github.com/myorg/"}); got.host != "github.com" {
		t.Errorf("prompt host %q", got.host)
	}
}

func TestGitRewriteURLReplacementScheme(t *testing.T) {
	c := gitCreds{user: "u", pass: "p"}
	for _, tc := range []struct {
		conf string
		env  map[string]string
		in   string
		want string
	}{
		{"", nil, "git@github.com:a/b.git", "https://github.com/a/b.git"},
		{"agent.translate_ssl_replacement_scheme: http", nil, "git@github.com:a/b.git", "http://github.com/a/b.git"},
		{"agent.translate_ssl_replacement_scheme: http", nil, "ssh://git@host:2222/a/b.git", "http://host:2222/a/b.git"},
		{"agent.translate_ssl_replacement_scheme: http", nil, "https://github.com/a/b.git", "https://github.com/a/b.git"},
		{"agent.translate_ssl_replacement_scheme: http", map[string]string{"CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME": "https"}, "git@github.com:a/b.git", "https://github.com/a/b.git"},
		{"", map[string]string{"CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME": "http"}, "git@github.com:a/b.git", "http://github.com/a/b.git"},
	} {
		if got := gitRewriteURL(testConfig(t, tc.conf, tc.env), tc.in, c); got != tc.want {
			t.Errorf("conf %q env %v: %s -> %s, want %s", tc.conf, tc.env, tc.in, got, tc.want)
		}
	}
}

// TestGitHeaderCredentials clones from a real git HTTP server that accepts
// one Authorization header: an MS Entra token (Bearer), an Azure DevOps PAT
// (Basic with the token alone), or user and password when
// agent.enable_git_ask_pass is false. The credentials reach git in the
// environment only, never through the ask-pass helper, argv or a file.
func TestGitHeaderCredentials(t *testing.T) {
	t.Parallel()
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	backend := filepath.Join(runGit(t, env, "", "--exec-path"), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend not available")
	}
	const user, pass = "alice", "Header-Secret-Token-42"
	var mu sync.Mutex
	var want string
	cgiHandler := &cgi.Handler{Path: backend, Root: "/git",
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(f.origin), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := r.Header.Get("Authorization") == want
		mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	repoURL := srv.URL + "/git/origin.git"

	bin := t.TempDir()
	argvLog, askLog := filepath.Join(bin, "argv.log"), filepath.Join(bin, "ask.log")
	realGit, _ := exec.LookPath("git")
	gitWrite(t, filepath.Join(bin, "git"), "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '"+argvLog+"'\nexec '"+realGit+"' \"$@\"\n")
	gitWrite(t, filepath.Join(bin, "askpass"), "#!/bin/sh\necho \"$1\" >> '"+askLog+"'\ncase \"$1\" in [Uu]*) printf '%s\\n' \"$"+gitAskpassUserEnv+"\";; *) printf '%s\\n' \"$"+gitAskpassPassEnv+"\";; esac\n")
	os.Chmod(filepath.Join(bin, "git"), 0o755)
	os.Chmod(filepath.Join(bin, "askpass"), 0o755)

	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, conf string
		vars       map[string]string
		header     string
		askpass    bool
	}{
		{"ms entra token", "agent.git_use_ms_entra_token: true", nil, "Bearer " + pass, false},
		{"ms entra token by variable", "", map[string]string{"CLEARML_AGENT_GIT_USE_MS_ENTRA_TOKEN": "1"}, "Bearer " + pass, false},
		{"azure pat", "", map[string]string{"CLEARML_AGENT_GIT_USE_AZURE_PAT": "true"}, basic(":" + pass), false},
		{"both: entra wins", "agent.git_use_azure_pat: true\nagent.git_use_ms_entra_token: true", nil, "Bearer " + pass, false},
		{"no ask-pass", "agent.enable_git_ask_pass: false", nil, basic(user + ":" + pass), false},
		{"ask-pass (default)", "", nil, basic(user + ":" + pass), true},
		{"extra credentials for this host", "agent.git.extra_credentials: [{host: \"127.0.0.1\", user: \"" + user + "\", pass: \"" + pass + "\"}]", nil, basic(user + ":" + pass), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			want = tc.header
			mu.Unlock()
			os.Remove(argvLog)
			os.Remove(askLog)
			creds := gitCreds{user: user, pass: pass}
			if strings.Contains(tc.name, "extra") {
				creds = gitCreds{user: "wrong", pass: "wrong-password", host: "127.0.0.1"}
			}
			var log bytes.Buffer
			dest, cache := t.TempDir(), t.TempDir()
			g := &gitCheckout{cfg: testConfig(t, tc.conf, tc.vars), creds: creds, log: &log, cacheDir: cache,
				askpass: filepath.Join(bin, "askpass"), gitBin: filepath.Join(bin, "git"), environ: env}
			res, err := g.run(context.Background(), gitSource{repository: repoURL}, dest)
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v2')\n" {
				t.Errorf("train.py = %q", got)
			}
			asked, _ := os.ReadFile(askLog)
			if tc.askpass != (len(asked) > 0) {
				t.Errorf("ask-pass called: %q, want called %v", asked, tc.askpass)
			}
			if b, _ := os.ReadFile(argvLog); bytes.Contains(b, []byte(pass)) || len(b) == 0 {
				t.Errorf("password in git's argv (or no argv):\n%s", b)
			}
			if strings.Contains(log.String(), pass) {
				t.Errorf("password in the log:\n%s", log.String())
			}
			for _, d := range []string{dest, cache} {
				filepath.WalkDir(d, func(p string, de os.DirEntry, err error) error {
					if err == nil && de.Type().IsRegular() {
						if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(pass)) {
							t.Errorf("password in %s", p)
						}
					}
					return nil
				})
			}
		})
	}
}
