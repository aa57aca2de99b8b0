package main

// Git credentials and the URLs they attach to: where credentials come from
// (flags, CLEARML_AGENT_GIT_*, agent.git_*), URL parsing as furl does, the
// reference's URL rewrites (add_auth, force_git_ssh_protocol, translate_ssh,
// requirement lines), and the ask-pass helper that hands the credentials to
// git for their host only.

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// Environment variables of the ask-pass protocol between the agent and the
// copy of itself that git runs as GIT_ASKPASS.
const (
	gitAskpassMarker  = "CLEARML_AGENT_ASKPASS"
	gitAskpassUserEnv = "CLEARML_AGENT_ASKPASS_USER"
	gitAskpassPassEnv = "CLEARML_AGENT_ASKPASS_PASS"
	gitAskpassHostEnv = "CLEARML_AGENT_ASKPASS_HOST"
)

// gitCreds are the configured git credentials. host, when set, is the only
// host (lower-cased) they are sent to.
type gitCreds struct{ user, pass, host string }

// gitCredentialsFrom reads credentials: the --git-user/--git-pass flags
// first (the reference ignores them), then CLEARML_AGENT_GIT_* (or
// TRAINS_AGENT_GIT_*), then agent.git_user/git_pass/git_host.
func gitCredentialsFrom(cfg *agentConfig, flagUser, flagPass string) gitCreds {
	env := envLookup(os.LookupEnv)
	if cfg != nil && cfg.env != nil {
		env = cfg.env
	}
	pick := func(flag string, envNames []string, key string) string {
		if v := strings.TrimSpace(flag); v != "" {
			return v
		}
		if v := firstEnv(env, envNames...); v != "" {
			return v
		}
		if cfg != nil {
			return strings.TrimSpace(cfg.str(key))
		}
		return ""
	}
	return gitCreds{
		user: pick(flagUser, []string{"CLEARML_AGENT_GIT_USER", "TRAINS_AGENT_GIT_USER"}, "agent.git_user"),
		pass: pick(flagPass, []string{"CLEARML_AGENT_GIT_PASS", "TRAINS_AGENT_GIT_PASS"}, "agent.git_pass"),
		host: strings.ToLower(pick("", []string{"CLEARML_AGENT_GIT_HOST", "TRAINS_AGENT_GIT_HOST"}, "agent.git_host")),
	}
}

func (c gitCreds) complete() bool { return c.user != "" && c.pass != "" }

// gitURL is a repository URL split the way furl does for scheme://authority
// URLs. Anything else (scp-style git@host:path, plain paths) has scheme ""
// and is kept verbatim.
type gitURL struct {
	scheme           string // lower-cased
	user, pass       string // still percent-encoded
	hasUser, hasPass bool
	host             string // lower-cased
	port             string
	rest             string // path, query and fragment
	raw              string
}

var gitSchemeChars = lazyRegexp(`^[A-Za-z][A-Za-z0-9+.-]*$`)

func gitParseURL(raw string) (gitURL, bool) {
	u := gitURL{raw: raw}
	scheme, after, ok := strings.Cut(raw, "://")
	if !ok || !gitSchemeChars().MatchString(scheme) {
		return u, true
	}
	u.scheme = strings.ToLower(scheme)
	auth := after
	if i := strings.IndexAny(after, "/?#"); i >= 0 {
		auth, u.rest = after[:i], after[i:]
	}
	if i := strings.LastIndex(auth, "@"); i >= 0 {
		u.hasUser = true
		u.user, u.pass, u.hasPass = strings.Cut(auth[:i], ":")
		auth = auth[i+1:]
	}
	hostport := auth
	if strings.HasPrefix(hostport, "[") { // IPv6 literal
		end := strings.Index(hostport, "]")
		if end < 0 {
			return u, false
		}
		u.host, hostport = hostport[:end+1], hostport[end+1:]
		if hostport != "" {
			if hostport[0] != ':' {
				return u, false
			}
			u.port = hostport[1:]
		}
	} else {
		u.host, u.port, _ = strings.Cut(hostport, ":")
	}
	for _, r := range u.port {
		if r < '0' || r > '9' {
			return u, false // furl refuses a bad port; so do we
		}
	}
	u.host = strings.ToLower(u.host)
	return u, true
}

func (u gitURL) String() string {
	if u.scheme == "" {
		return u.raw
	}
	var b strings.Builder
	b.WriteString(u.scheme)
	b.WriteString("://")
	if u.hasUser {
		b.WriteString(u.user)
		if u.hasPass {
			b.WriteString(":")
			b.WriteString(u.pass)
		}
		b.WriteString("@")
	}
	b.WriteString(u.host)
	if u.port != "" {
		b.WriteString(":" + u.port)
	}
	b.WriteString(u.rest)
	return b.String()
}

func (u *gitURL) setAuth(user, pass string) {
	u.user, u.pass = gitEscapeUserinfo(user), gitEscapeUserinfo(pass)
	u.hasUser, u.hasPass = user != "" || pass != "", pass != ""
}

func (u *gitURL) clearAuth() { u.user, u.pass, u.hasUser, u.hasPass = "", "", false, false }

// gitEscapeUserinfo percent-encodes all but unreserved characters, as furl
// does for user and password ("us@er" -> "us%40er").
func gitEscapeUserinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func gitUnescape(s string) string {
	if v, err := url.PathUnescape(s); err == nil {
		return v
	}
	return s
}

// gitSCPSyntax matches scp-like URLs: [user@]host:path.
var gitSCPSyntax = lazyRegexp(`^(?:([^/@:#]*?)@)?([^/@:#]*?):([^/@:#].*)?$`)

// gitAddAuth is the reference's Git.add_auth (§9.1): it embeds the
// credentials in an http(s) URL that lacks a user and password, or with
// reset strips them under the same conditions. The agent itself never runs
// git with its result; it documents the reference and feeds gitAuthFor.
func gitAddAuth(raw string, c gitCreds, reset bool) string {
	u, ok := gitParseURL(raw)
	if !ok || u.scheme == "" || u.scheme == "ssh" || strings.HasPrefix(u.scheme, "git") {
		return raw
	}
	if u.user != "" && u.pass != "" || !c.complete() || c.host != "" && c.host != u.host {
		return raw
	}
	if reset {
		u.clearAuth()
	} else {
		u.setAuth(c.user, c.pass)
	}
	return u.String()
}

// gitAuthFor decides what git gets: the URL for its command line, without
// any credentials, and the credentials the ask-pass helper may answer with
// (a zero gitCreds for none). Credentials written into the task's URL win
// over configured ones; configured ones apply to http(s) URLs on git_host
// (when set). Either way they are bound to the URL's host.
func gitAuthFor(raw string, c gitCreds) (string, gitCreds) {
	u, ok := gitParseURL(raw)
	if !ok || u.scheme == "" {
		return raw, gitCreds{}
	}
	if u.scheme != "http" && u.scheme != "https" {
		// ssh keys do the work; still never pass a password on argv.
		if u.hasPass {
			u.pass, u.hasPass = "", false
			return u.String(), gitCreds{}
		}
		return raw, gitCreds{}
	}
	host := strings.Trim(u.host, "[]")
	if u.user != "" && u.pass != "" {
		own := gitCreds{user: gitUnescape(u.user), pass: gitUnescape(u.pass), host: host}
		u.clearAuth()
		return u.String(), own
	}
	if !c.complete() || c.host != "" && c.host != u.host {
		if u.hasPass { // "user:@host": an empty password is still not argv material
			u.pass, u.hasPass = "", false
			return u.String(), gitCreds{}
		}
		return raw, gitCreds{}
	}
	u.clearAuth()
	return u.String(), gitCreds{user: c.user, pass: c.pass, host: host}
}

// gitReplaceSSHURL turns an ssh or scp-style URL into https, dropping the
// git/hg users (§9.2).
func gitReplaceSSHURL(raw string) string {
	special := func(user string, hasPass bool) bool {
		l := strings.ToLower(user)
		return (l == "git" || l == "hg") && !hasPass
	}
	if m := gitSCPSyntax().FindStringSubmatch(raw); m != nil {
		u := gitURL{scheme: "https", host: strings.ToLower(m[2]), rest: "/" + strings.TrimPrefix(m[3], "/")}
		if m[3] == "" {
			u.rest = ""
		}
		if m[1] != "" && !special(m[1], false) {
			u.user, u.hasUser = m[1], true
		}
		return u.String()
	}
	u, ok := gitParseURL(raw)
	if !ok || u.scheme != "ssh" {
		return raw
	}
	u.scheme = "https"
	if special(u.user, u.hasPass && u.pass != "") {
		u.clearAuth()
	}
	return u.String()
}

// gitRewriteURL applies force_git_ssh_protocol (with force_git_ssh_user and
// force_git_ssh_port) and translate_ssh, as the reference's _set_ssh_url
// does before every clone and fetch (§9.3). It never adds credentials.
func gitRewriteURL(cfg *agentConfig, raw string, c gitCreds) string {
	raw = strings.TrimSpace(raw)
	if raw == "" || cfg == nil {
		return raw
	}
	if cfg.boolean("agent.force_git_ssh_protocol", false) {
		u, ok := gitParseURL(raw)
		if !ok || c.host != "" && c.host != u.host {
			return raw
		}
		port := cfg.str("agent.force_git_ssh_port")
		if port == "0" {
			port = ""
		}
		user := cfg.str("agent.force_git_ssh_user")
		switch u.scheme {
		case "https":
			u.scheme = "ssh"
			u.clearAuth()
			u.user, u.hasUser = gitEscapeUserinfo(gitOr(user, "git")), true
			u.port = port
			return u.String()
		case "ssh":
			if port != "" || user != "" {
				u.user, u.hasUser = gitEscapeUserinfo(gitOr(user, "git")), true
				u.port = port
				return u.String()
			}
			return raw
		}
		// scp-style and others fall through, as in the reference.
	}
	if !cfg.boolean("agent.translate_ssh", true) || !c.complete() {
		return raw
	}
	if c.host != "" {
		u, _ := gitParseURL(raw)
		if c.host != u.host {
			m := gitSCPSyntax().FindStringSubmatch(raw)
			if m == nil || !strings.EqualFold(m[2], c.host) {
				return raw
			}
		}
	}
	return gitTranslateSSH(cfg, raw)
}

// gitRepoName is the clone folder name: the last path element of the URL
// ("bar.git", "repo" for Azure's .../_git/repo).
func gitRepoName(raw string) string {
	p := raw
	if u, ok := gitParseURL(raw); ok && u.scheme != "" {
		p = u.rest
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
	} else if m := gitSCPSyntax().FindStringSubmatch(raw); m != nil {
		p = m[3]
	}
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndexAny(p, "/:\\"); i >= 0 {
		p = p[i+1:]
	}
	if p == "" || p == "." || p == ".." {
		return "repository"
	}
	return p
}

// gitAskpassMain answers git's ask-pass prompt when this binary runs as
// GIT_ASKPASS (marker CLEARML_AGENT_ASKPASS=1). args are os.Args[1:]: git
// passes the prompt as the only argument ("Username for 'https://host': ").
// It answers only for the host the agent bound the credentials to; for any
// other host it prints an empty line, so git fails instead of leaking.
func gitAskpassMain(args []string, env envLookup, stdout io.Writer) (handled bool) {
	if v, _ := env(gitAskpassMarker); v != "1" {
		return false
	}
	prompt := ""
	if len(args) > 0 {
		prompt = args[len(args)-1]
	}
	user, _ := env(gitAskpassUserEnv)
	pass, _ := env(gitAskpassPassEnv)
	want, _ := env(gitAskpassHostEnv)
	if want != "" && !strings.EqualFold(gitPromptHost(prompt), want) {
		fmt.Fprintln(stdout)
		return true
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(prompt)), "username") {
		fmt.Fprintln(stdout, user)
	} else {
		fmt.Fprintln(stdout, pass)
	}
	return true
}

// gitPromptHost extracts the host from "Password for 'https://u@host:1/': ".
func gitPromptHost(prompt string) string {
	i, j := strings.Index(prompt, "'"), strings.LastIndex(prompt, "'")
	if i < 0 || j <= i {
		return ""
	}
	u, ok := gitParseURL(prompt[i+1 : j])
	if !ok || u.scheme == "" {
		return ""
	}
	return strings.Trim(u.host, "[]")
}

// gitAskpassEnv makes git ask this binary (or askpass) for the credentials,
// answered only for auth.host when it is set.
func gitAskpassEnv(askpass string, auth gitCreds) []string {
	if askpass == "" {
		askpass, _ = os.Executable()
	}
	return []string{"GIT_ASKPASS=" + askpass, gitAskpassMarker + "=1",
		gitAskpassUserEnv + "=" + auth.user, gitAskpassPassEnv + "=" + auth.pass,
		gitAskpassHostEnv + "=" + auth.host}
}

// pyVCSRequirement rewrites a requirement line's git URL as the reference
// does (agent-execute.md §9.4), without putting credentials in it: with
// credentials (given to pip's git through ask-pass) git+ssh:// and git+git://
// become git+https://, without them git+git:// becomes git+ssh://. A
// leading -e is dropped: the package is installed, not linked to a checkout.
func pyVCSRequirement(line string, haveCreds bool) string {
	l := strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(l, "-e "); ok && strings.Contains(rest, "git+") {
		l = strings.TrimSpace(rest)
	}
	i := strings.Index(l, "git+")
	if i < 0 {
		return line
	}
	url := l[i:]
	switch {
	case haveCreds && (strings.HasPrefix(url, "git+ssh://") || strings.HasPrefix(url, "git+git://")):
		rest := url[len("git+ssh://"):]
		if at := strings.Index(rest, "@"); at >= 0 && at < strings.IndexAny(rest+"/", "/:") {
			rest = rest[at+1:] // the ssh user (git@) is no https user
		}
		url = "git+https://" + rest
	case !haveCreds && strings.HasPrefix(url, "git+git://"):
		url = "git+ssh://" + url[len("git+git://"):]
	}
	return l[:i] + url
}
