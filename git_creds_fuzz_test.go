package main

import (
	"strings"
	"testing"
)

// FuzzGitURL checks that URL parsing and rewriting never panic, that the
// URL handed to git never carries a password, and that configured
// credentials never leak into it.
func FuzzGitURL(f *testing.F) {
	for _, s := range []string{
		"https://github.com/foo/bar.git", "git@github.com:foo/bar.git", "ssh://git@github.com:2222/foo/bar.git",
		"https://user:pass@github.com:443/a", "http://[::1]:8080/x.git", "https://a@b@c/d", "ssh://u:p@h/x",
		"file:///srv/r.git", "github.com:foo/bar.git", "https://h:badport/x", "https://%zz:%zz@h/x", "",
	} {
		f.Add(s, "USER", "PASSWORD", "", uint8(0))
	}
	f.Add("https://GitHub.com/a/b.git", "us@er", "p:a/ss", "github.com", uint8(3))
	cfgs := []*agentConfig{
		testConfig(f, "", nil),
		testConfig(f, "agent.force_git_ssh_protocol: true", nil),
		testConfig(f, "agent.force_git_ssh_protocol: true\nagent.force_git_ssh_port: 2222\nagent.force_git_ssh_user: bob", nil),
		testConfig(f, "agent.translate_ssh: false", nil),
	}
	f.Fuzz(func(t *testing.T, raw, user, pass, host string, mode uint8) {
		c := gitCreds{user: user, pass: pass, host: strings.ToLower(host)}
		rewritten := gitRewriteURL(cfgs[int(mode)%len(cfgs)], raw, c)
		argvURL, auth := gitAuthFor(rewritten, c)
		_ = gitAddAuth(raw, c, mode&4 != 0)
		_ = gitReplaceSSHURL(raw)
		if name := gitRepoName(argvURL); name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			t.Errorf("gitRepoName(%q) = %q", argvURL, name)
		}
		if len(pass) >= 3 {
			for _, p := range []string{pass, gitEscapeUserinfo(pass)} {
				if !strings.Contains(raw, p) && (strings.Contains(rewritten, p) || strings.Contains(argvURL, p)) {
					t.Errorf("password %q leaked: %q -> %q -> %q", pass, raw, rewritten, argvURL)
				}
			}
		}
		if u, ok := gitParseURL(argvURL); ok && u.scheme != "" {
			if u.hasPass {
				t.Errorf("argv url %q keeps a password", argvURL)
			}
			if auth.user != "" && u.hasUser {
				t.Errorf("argv url %q keeps a user while ask-pass answers", argvURL)
			}
			if again, _ := gitParseURL(u.String()); again.String() != u.String() {
				t.Errorf("unstable: %q -> %q", u.String(), again.String())
			}
		}
		if auth.user != "" && auth.pass == "" {
			t.Errorf("incomplete ask-pass binding %+v for %q", auth, argvURL)
		}
	})
}
