package main

// Task code: clone through a shared VCS cache, check out, update submodules,
// apply the uncommitted diff, or write a standalone script; and one
// credential model for every git call. Credentials reach git only through
// GIT_ASKPASS (this binary, see gitAskpassMain), never in a URL on a command
// line, in .git/config or in the log.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Environment variables of the ask-pass protocol between the agent and the
// copy of itself that git runs as GIT_ASKPASS.
const (
	gitAskpassMarker  = "CLEARML_AGENT_ASKPASS"
	gitAskpassUserEnv = "CLEARML_AGENT_ASKPASS_USER"
	gitAskpassPassEnv = "CLEARML_AGENT_ASKPASS_PASS"
	gitAskpassHostEnv = "CLEARML_AGENT_ASKPASS_HOST"
)

// gitCacheLockTimeout is how long a task waits for another one that holds
// the same cache entry, as in the reference; then it clones without cache.
var gitCacheLockTimeout = 300 * time.Second

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
	return gitReplaceSSHURL(raw)
}

func gitOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
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

// gitCacheKey names a cache entry: md5 of the credential-free URL (the
// reference hashes the raw URL; for a URL without credentials they agree).
func gitCacheKey(cloneURL string) string {
	sum := md5.Sum([]byte(cloneURL))
	return hex.EncodeToString(sum[:])
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

// gitSource is the task's script section.
type gitSource struct {
	repository, branch, commit, tag, diff, entryPoint, workingDir string
}

// gitResult describes prepared code. root is the checkout (or the folder
// holding a standalone script); src is the task's source with the entry
// point and working dir adjusted for a standalone script.
type gitResult struct {
	root   string
	url    string // without credentials
	branch string
	commit string
	src    gitSource
}

// gitCheckout prepares a task's code. Zero fields take defaults.
type gitCheckout struct {
	cfg      *agentConfig
	creds    gitCreds
	log      io.Writer
	cacheDir string   // default agent.vcs_cache.path
	askpass  string   // GIT_ASKPASS program; default this executable
	gitBin   string   // default "git" from PATH
	environ  []string // base environment; default os.Environ()
	offline  bool     // --standalone-mode: use the vcs cache as is, fetch nothing
}

func newGitCheckout(cfg *agentConfig, creds gitCreds, log io.Writer) *gitCheckout {
	return &gitCheckout{cfg: cfg, creds: creds, log: log}
}

func (g *gitCheckout) logf(format string, a ...any) {
	if g.log != nil {
		fmt.Fprintf(g.log, format+"\n", a...)
	}
}

// gitLogRedactor hides passwords and URL passwords in anything logged.
func gitLogRedactor(secrets ...string) func(string) string {
	r := newRedactor(secrets...)
	return func(s string) string {
		s = r.redact(s)
		for _, sec := range secrets {
			// newRedactor skips short values; git output must not show them either.
			if sec != "" && len(sec) < 4 && strings.Contains(s, ":"+sec+"@") {
				s = strings.ReplaceAll(s, ":"+sec+"@", ":"+mask+"@")
			}
		}
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			lines = append(lines, maskURLPasswords(l))
		}
		return strings.Join(lines, "\n")
	}
}

// gitCmd is one git invocation.
type gitCmd struct {
	dir   string
	auth  gitCreds // non-zero: answer prompts through ask-pass
	stdin string
	clean bool // ignore user and system git config (diff apply)
	args  []string
}

// gitExec runs git and logs its output after redaction. The error's text
// is git's last meaningful output line.
func (g *gitCheckout) gitExec(ctx context.Context, c gitCmd) (string, error) {
	bin := gitOr(g.gitBin, "git")
	argv := []string{"-c", "safe.directory=*"}
	if c.auth.user != "" {
		// Reset credential helpers: none may answer instead of us, or store our password.
		argv = append(argv, "-c", "credential.helper=")
	}
	argv = append(argv, c.args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Dir = c.dir
	cmd.Env = g.gitEnv(c)
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	red := gitLogRedactor(g.creds.pass, c.auth.pass)
	text := red(out.String())
	g.logf("git %s", red(strings.Join(c.args, " ")))
	if t := strings.TrimRight(text, "\n"); t != "" {
		g.logf("%s", t)
	}
	if err != nil {
		if ctx.Err() != nil {
			return text, ctx.Err()
		}
		if errors.Is(err, exec.ErrNotFound) {
			return text, errors.New("git is not installed (install it, e.g. apt-get install git)")
		}
		return text, errors.New(gitLastLine(text, err.Error()))
	}
	return text, nil
}

func gitLastLine(text, def string) string {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "hint:") {
			return l
		}
	}
	return def
}

func (g *gitCheckout) gitEnv(c gitCmd) []string {
	base := g.environ
	if base == nil {
		base = os.Environ()
	}
	var env []string
	userSSH := false
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, gitAskpassMarker), k == "GIT_TERMINAL_PROMPT":
			continue
		case k == "GIT_ASKPASS" && c.auth.user != "":
			continue
		case c.clean && (k == "GIT_CONFIG_GLOBAL" || k == "GIT_CONFIG_NOSYSTEM" || strings.HasPrefix(k, "GIT_CONFIG_")):
			continue
		case k == "GIT_SSH_COMMAND" || k == "GIT_SSH":
			userSSH = true
		}
		env = append(env, kv)
	}
	env = append(env, "GIT_TERMINAL_PROMPT=0")
	if !userSSH {
		env = append(env, "GIT_SSH_COMMAND=ssh -oBatchMode=yes")
	}
	if c.clean {
		env = append(env, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	}
	if c.auth.user != "" {
		env = append(env, gitAskpassEnv(g.askpass, c.auth)...)
	}
	return env
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

// gitIsLiteralScript is the reference's test: a diff that is not a git
// diff (nor "submodule ..." followed by one) is a whole script.
func gitIsLiteralScript(diff string) bool {
	d := strings.ToLower(strings.TrimLeft(diff, " \t\r\n"))
	if d == "" || strings.HasPrefix(d, "diff ") {
		return false
	}
	if strings.HasPrefix(d, "submodule ") {
		if lines := strings.Split(diff, "\n"); len(lines) > 1 &&
			strings.HasPrefix(strings.ToLower(strings.TrimLeft(lines[1], " \t")), "diff ") {
			return false
		}
	}
	return true
}

// run prepares the task's code under dest: a repository is checked out in
// dest/<repo-name>; a standalone script (a diff that is not a patch and no
// repository) is written into dest.
func (g *gitCheckout) run(ctx context.Context, src gitSource, dest string) (gitResult, error) {
	src.repository = strings.TrimSpace(src.repository)
	src.branch, src.commit, src.tag = strings.TrimSpace(src.branch), strings.TrimSpace(src.commit), strings.TrimSpace(src.tag)
	literal := gitIsLiteralScript(src.diff)
	if src.repository == "" {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return gitResult{}, fmt.Errorf("code: %v", err)
		}
		res := gitResult{root: dest, src: src}
		if !literal {
			g.logf("WARNING: running a task without repository or literal script in `script.diff`")
			return res, nil
		}
		g.logf("found literal script in `script.diff`")
		var err error
		res.src, err = gitWriteScript(dest, src, false)
		return res, err
	}
	for _, rev := range []string{src.commit, src.tag, src.branch} {
		if strings.HasPrefix(rev, "-") {
			return gitResult{}, fmt.Errorf("checkout: refusing revision %q that looks like an option", rev)
		}
	}

	rewritten := gitRewriteURL(g.cfg, src.repository, g.creds)
	cloneURL, auth := gitAuthFor(rewritten, g.creds)
	shown := maskURLPasswords(gitAddAuth(src.repository, g.creds, true))
	if rewritten != src.repository {
		g.logf("Using rewritten repository url %q for %q", cloneURL, shown)
	}
	name := gitRepoName(cloneURL)
	root := filepath.Join(dest, name)
	if err := os.RemoveAll(root); err != nil {
		return gitResult{}, fmt.Errorf("clone: cannot clear %s: %v", root, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return gitResult{}, fmt.Errorf("clone: %v", err)
	}
	if err := g.fetchIntoCache(ctx, cloneURL, auth, name, root); err != nil {
		return gitResult{}, err
	}

	if err := g.checkout(ctx, root, src, auth); err != nil {
		return gitResult{}, err
	}
	if _, err := os.Stat(filepath.Join(root, ".gitmodules")); err != nil {
		// No submodules: skip a git process.
	} else if _, err := g.gitExec(ctx, gitCmd{dir: root, auth: auth, args: []string{"submodule", "update", "--init", "--recursive"}}); err != nil {
		return gitResult{}, fmt.Errorf("submodule: git submodule update failed: %v (check the submodule URLs and that the credentials cover their host)", err)
	}

	res := gitResult{root: root, url: cloneURL, src: src}
	if literal {
		g.logf("found literal script in `script.diff`")
		var err error
		if res.src, err = gitWriteScript(root, src, true); err != nil {
			return gitResult{}, err
		}
	} else if strings.TrimSpace(src.diff) != "" {
		if err := gitApplyDiff(ctx, root, src.diff, g.log); err != nil {
			return gitResult{}, err
		}
	}
	out, err := g.gitExec(ctx, gitCmd{dir: root, args: []string{"rev-parse", "HEAD", "--abbrev-ref", "HEAD"}})
	if err != nil {
		return gitResult{}, fmt.Errorf("checkout: git rev-parse HEAD: %v", err)
	}
	revs := strings.Fields(out)
	res.commit = revs[0]
	if len(revs) > 1 {
		res.branch = revs[1]
	}
	g.logf("type: git\nurl: %s\nbranch: %s\ncommit: %s\nroot: %s", cloneURL, res.branch, res.commit, root)
	return res, nil
}

// fetchIntoCache clones or refreshes the cache entry under its lock and
// copies it to root. With the cache off (or its lock stuck) it clones
// straight into root.
func (g *gitCheckout) fetchIntoCache(ctx context.Context, cloneURL string, auth gitCreds, name, root string) error {
	fetchArgs := []string{"--all", "--tags", "--recurse-submodules"}
	cacheOn := true
	cacheDir := g.cacheDir
	if g.cfg != nil {
		cacheOn = g.cfg.boolean("agent.vcs_cache.enabled", true)
		if _, ok := g.cfg.lookup("agent.git_fetch_args"); ok {
			fetchArgs = g.cfg.strList("agent.git_fetch_args")
		}
		if cacheDir == "" {
			cacheDir = expandHomeEnv(g.cfg.str("agent.vcs_cache.path"), g.cfg.env)
		}
	}
	clone := func(dir string) error {
		if g.offline && !gitIsLocalURL(cloneURL) {
			return fmt.Errorf("clone: standalone mode makes no network calls, and %s is not in the vcs cache (run the task once without --standalone-mode, or enable agent.vcs_cache)", cloneURL)
		}
		_ = os.RemoveAll(dir)
		g.logf("cloning: %s", cloneURL)
		verbosity := "--quiet"
		if g.cfg != nil && g.cfg.env != nil {
			if v, _ := parseBoolText(firstEnv(g.cfg.env, "CLEARML_AGENT_GIT_CLONE_VERBOSE")); v {
				verbosity = "--verbose"
			}
		}
		if _, err := g.gitExec(ctx, gitCmd{auth: auth, args: []string{"clone", "--recursive", verbosity, "--", cloneURL, dir}}); err != nil {
			return fmt.Errorf("clone: git clone %s failed: %v (check the URL, that the commit is pushed, and the git credentials: agent.git_user/agent.git_pass or CLEARML_AGENT_GIT_USER/CLEARML_AGENT_GIT_PASS)", cloneURL, err)
		}
		return nil
	}
	if !cacheOn || cacheDir == "" {
		return clone(root)
	}
	key := gitCacheKey(cloneURL)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("clone: vcs cache %s: %v (fix agent.vcs_cache.path)", cacheDir, err)
	}
	unlock, err := gitLockFile(ctx, filepath.Join(cacheDir, key+".lock"), gitCacheLockTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("clone: %v", ctx.Err())
		}
		g.logf("Could not lock cache folder %q (%v), cloning without the cache.", name, err)
		return clone(root)
	}
	defer unlock()
	cached := filepath.Join(cacheDir, name+"."+key, name)
	if st, err := os.Stat(filepath.Join(cached, ".git")); err == nil && st.IsDir() {
		g.logf("Using cached repository in %q", cached)
	} else if err := clone(cached); err != nil {
		return err
	}
	fetch := gitCmd{dir: cached, auth: auth, args: append([]string{"fetch"}, fetchArgs...)}
	if g.offline {
		g.logf("standalone mode: using the cached repository without fetching")
	} else if _, err := g.gitExec(ctx, fetch); err != nil {
		if g.cfg == nil || !g.cfg.boolean("agent.vcs_cache.clone_on_pull_fail", false) {
			return fmt.Errorf("fetch: git fetch in the vcs cache %s failed: %v (check the git credentials; or set agent.vcs_cache.clone_on_pull_fail to re-clone)", cached, err)
		}
		g.logf("pulling git failed, re-cloning: %s", cloneURL)
		if err := clone(cached); err != nil {
			return err
		}
	}
	if err := gitCopyTree(cached, root); err != nil {
		return fmt.Errorf("clone: copying the cached repository: %v", err)
	}
	return nil
}

// checkout tries the commit, else the tag, else the branch, else the
// remote's master, main or default branch, as the reference does.
func (g *gitCheckout) checkout(ctx context.Context, root string, src gitSource, auth gitCreds) error {
	var revs []string
	switch {
	case src.commit != "":
		revs = []string{src.commit}
	case src.tag != "":
		revs = []string{"refs/tags/" + src.tag}
	case src.branch != "":
		revs = []string{"origin/" + strings.TrimPrefix(src.branch, "origin/")}
	default:
		revs = []string{"origin/master", "origin/main", "origin/HEAD"}
	}
	if len(revs) > 1 {
		// Try only the default-branch names that exist, so the log holds
		// no "invalid reference" noise.
		var have []string
		refs := g.remoteRefs(ctx, root)
		for _, rev := range revs {
			if refs["refs/remotes/"+rev] {
				have = append(have, rev)
			}
		}
		if len(have) > 0 {
			revs = have
		}
	}
	var last error
	for _, rev := range revs {
		_, err := g.gitExec(ctx, gitCmd{dir: root, auth: auth, args: []string{"-c", "advice.detachedHead=false", "checkout", "--force", "--quiet", rev, "--"}})
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("checkout: git checkout %s failed: %v (make sure the commit/branch/tag was pushed)", strings.Join(revs, ", "), last)
}

// gitIsLocalURL: a path or file:// URL, which needs no network.
func gitIsLocalURL(u string) bool {
	return strings.HasPrefix(u, "/") || strings.HasPrefix(u, "file://") || strings.HasPrefix(u, "./") || strings.HasPrefix(u, "../")
}

// remoteRefs lists the refs under refs/remotes/origin, in one git call.
func (g *gitCheckout) remoteRefs(ctx context.Context, root string) map[string]bool {
	cmd := exec.CommandContext(ctx, gitOr(g.gitBin, "git"), "-c", "safe.directory=*", "for-each-ref", "--format=%(refname)", "refs/remotes/origin")
	cmd.Dir = root
	cmd.Env = g.gitEnv(gitCmd{})
	out, _ := cmd.Output()
	refs := map[string]bool{}
	for _, r := range strings.Fields(string(out)) {
		refs[r] = true
	}
	return refs
}

// gitLockFile takes an exclusive flock, waiting up to timeout.
func gitLockFile(ctx context.Context, name string, timeout time.Duration) (func(), error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, err
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("timed out after %v", timeout)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// gitCopyTree copies a tree, keeping symlinks and modes.
func gitCopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return gitCopyFile(p, target, info.Mode().Perm())
		}
		return nil // sockets, fifos: not repository content
	})
}

func gitCopyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// gitWriteScript writes a literal-script diff as the entry point file
// (W:222-264). In a repository an existing file wins over the diff.
func gitWriteScript(dir string, src gitSource, inRepo bool) (gitSource, error) {
	entry, wd := gitNormalizeExec(src.entryPoint, src.workingDir, func(string) (string, bool) { return "", false })
	file := ""
	if f := strings.Fields(entry); len(f) > 0 && (f[0] == "-m" || f[0] == "-c") {
		file = "untitled.py"
		if f[0] == "-c" {
			file = "untitled.sh"
		}
		if d, name, ok := strings.Cut(wd, ":"); ok {
			wd, file = d, name
		}
	}
	loc := dir
	if inRepo {
		loc = filepath.Join(dir, wd)
		if !gitWithin(dir, loc) {
			return src, fmt.Errorf("code: working_dir %q escapes the repository", wd)
		}
	} else {
		wd = "."
		if entry == "" {
			entry = "untitled.py"
		} else if file == "" {
			entry = path.Base(entry)
		}
	}
	if file == "" {
		file = entry
	}
	target := filepath.Join(loc, file)
	if !gitWithin(dir, target) {
		return src, fmt.Errorf("code: script path %q escapes %s", file, dir)
	}
	src.entryPoint, src.workingDir = entry, wd
	if _, err := os.Stat(target); err == nil && inRepo {
		return src, nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return src, fmt.Errorf("code: %v", err)
	}
	if err := os.WriteFile(target, []byte(src.diff), 0o644); err != nil {
		return src, fmt.Errorf("code: writing the script: %v", err)
	}
	return src, nil
}

func gitWithin(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// gitApplyDiff applies the task's uncommitted changes in dir with git's
// and the user's config out of the way (diff.noprefix, apply.whitespace),
// with the strip level the diff itself uses. On failure the error names
// the first hunk git rejected.
func gitApplyDiff(ctx context.Context, dir, diff string, log io.Writer) error {
	g := &gitCheckout{log: log}
	p := gitDiffStrip(diff)
	apply := func(p int, check bool) (string, error) {
		gitTouchMissing(dir, diff, p)
		args := []string{"apply", "--unidiff-zero", "--whitespace=nowarn", "-p" + strconv.Itoa(p)}
		if check {
			args = append(args, "--check")
		}
		return g.gitExec(ctx, gitCmd{dir: dir, clean: true, stdin: diff + "\n", args: args})
	}
	out, err := apply(p, false)
	if err == nil {
		g.logf("successfully applied uncommitted changes")
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("diff: %v", ctx.Err())
	}
	if _, cerr := apply(1-p, true); cerr == nil {
		if _, err2 := apply(1-p, false); err2 == nil {
			g.logf("successfully applied uncommitted changes")
			return nil
		}
	}
	hunk := gitFailingHunk(diff, out)
	hint := ""
	if strings.Contains(strings.ToLower(out), "no such file") {
		hint = "; files were missing: were the changes pushed?"
	}
	return fmt.Errorf("diff: failed applying the uncommitted changes: %v; first failing hunk: %s%s", err, strconv.Quote(hunk), hint)
}

// gitDiffStrip guesses -p: 1 for a/ b/ (or mnemonic i/ w/ c/ o/) prefixes,
// 0 for diffs made with diff.noprefix.
func gitDiffStrip(diff string) int {
	var old string
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "--- "):
			old = gitDiffPath(l[4:])
		case strings.HasPrefix(l, "+++ "):
			nw := gitDiffPath(l[4:])
			if old != "" && old != "/dev/null" && nw != "/dev/null" {
				if old == nw {
					return 0
				}
				oi, ni := strings.IndexByte(old, '/'), strings.IndexByte(nw, '/')
				if oi == 1 && ni == 1 && old[2:] == nw[2:] {
					return 1
				}
			}
		case strings.HasPrefix(l, "diff --git "):
			rest := l[len("diff --git "):]
			if n := len(rest); n%2 == 1 && rest[:n/2] == rest[n/2+1:] {
				return 0
			}
		}
	}
	return 1
}

func gitDiffPath(s string) string {
	if i := strings.IndexByte(s, '\t'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, "\r")
	if strings.HasPrefix(s, `"`) {
		if u, err := strconv.Unquote(s); err == nil {
			s = u
		}
	}
	return s
}

// gitTouchMissing creates empty files for "--- <old>" paths that do not
// exist, as the reference does, so hunks against new files apply.
func gitTouchMissing(dir, diff string, p int) {
	for _, l := range strings.Split(diff, "\n") {
		if !strings.HasPrefix(l, "--- ") {
			continue
		}
		name := gitDiffPath(l[4:])
		if name == "/dev/null" {
			continue
		}
		for i := 0; i < p; i++ {
			_, name, _ = strings.Cut(name, "/")
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if name == "" || !gitWithin(dir, target) {
			continue
		}
		if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
			if os.MkdirAll(filepath.Dir(target), 0o755) == nil {
				if f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
		}
	}
}

var gitPatchFailed = lazyRegexp(`patch failed: (.+):(\d+)`)

// gitFailingHunk finds the hunk git reported ("patch failed: f:N"), else
// the first hunk of the file it named, else the first hunk.
func gitFailingHunk(diff, gitOut string) string {
	file, line := "", ""
	if m := gitPatchFailed().FindStringSubmatch(gitOut); m != nil {
		file, line = m[1], m[2]
	} else if m := lazyRegexp(`error: (.+?): (?:does not exist|No such file|patch does not apply|already exists)`)().FindStringSubmatch(gitOut); m != nil {
		file = m[1]
	}
	type hunk struct{ file, text string }
	var hunks []hunk
	cur, inHunk := "", false
	var b []string
	flush := func() {
		if inHunk {
			hunks = append(hunks, hunk{cur, strings.Join(b, "\n")})
		}
		b, inHunk = nil, false
	}
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "diff "), strings.HasPrefix(l, "--- "):
			flush()
		case strings.HasPrefix(l, "+++ "):
			flush()
			cur = gitDiffPath(l[4:])
		case strings.HasPrefix(l, "@@"):
			flush()
			inHunk = true
			b = []string{cur + ": " + l}
		case inHunk:
			b = append(b, l)
		}
	}
	flush()
	matches := func(h hunk) bool {
		return file != "" && (h.file == file || strings.HasSuffix(h.file, "/"+file))
	}
	for _, h := range hunks {
		if matches(h) && line != "" && strings.Contains(strings.SplitN(h.text, "\n", 2)[0], "@@ -"+line) {
			return gitTrim(h.text)
		}
	}
	for _, h := range hunks {
		if matches(h) {
			return gitTrim(h.text)
		}
	}
	if len(hunks) > 0 {
		return gitTrim(hunks[0].text)
	}
	return gitTrim(diff)
}

func gitTrim(s string) string {
	const max = 1200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// gitNormalizeExec is ExecutionInfo's normalisation (§9.7): expand ~ and
// $VARS, clean the path, and split "entry:workdir" when workdir is empty.
func gitNormalizeExec(entry, workdir string, env envLookup) (string, string) {
	norm := func(p string) string {
		p = strings.TrimSpace(p)
		if p == "" {
			return ""
		}
		if p == "~" || strings.HasPrefix(p, "~/") {
			if h, ok := env("HOME"); ok && h != "" {
				p = h + p[1:]
			}
		}
		return filepath.Clean(gitExpandVars(p, env))
	}
	entry, workdir = norm(entry), norm(workdir)
	if workdir == "" {
		e, w, _ := strings.Cut(entry, ":")
		entry, workdir = e, w
	}
	return entry, workdir
}

var gitVarRef = lazyRegexp(`\$([A-Za-z0-9_]+|\{[^}]*\})`)

// gitExpandVars is os.path.expandvars: unknown variables stay as written.
func gitExpandVars(s string, env envLookup) string {
	if !strings.Contains(s, "$") {
		return s
	}
	return gitVarRef().ReplaceAllStringFunc(s, func(m string) string {
		name := strings.TrimSuffix(strings.TrimPrefix(m[1:], "{"), "}")
		if v, ok := env(name); ok {
			return v
		}
		return m
	})
}

// gitResolveEntry turns the task's entry point and working dir into the
// directory to run in and the interpreter arguments: "-m mod args",
// "-c code", a script, or a script followed by arguments (when no file
// carries the whole entry point's name). Paths may not leave checkoutDir.
func gitResolveEntry(checkoutDir string, src gitSource, env envLookup) (string, []string, error) {
	if env == nil {
		env = os.LookupEnv
	}
	entry, wd := gitNormalizeExec(src.entryPoint, src.workingDir, env)
	if wd == "" {
		wd = "."
	}
	root, err := filepath.Abs(checkoutDir)
	if err != nil {
		return "", nil, err
	}
	// As the reference (os.path.join): an absolute working_dir or entry
	// point wins over the checkout, which is how code already in an image
	// runs. The task's code runs anyway, so confining it adds nothing.
	workDir := wd
	if !filepath.IsAbs(wd) {
		workDir = filepath.Join(root, wd)
	}
	if entry == "" {
		return "", nil, errors.New("entry: the task has no entry point (set script.entry_point)")
	}
	fields := strings.Fields(entry)
	switch fields[0] {
	case "-m":
		args, err := shlexSplit(entry)
		if err != nil {
			return "", nil, fmt.Errorf("entry: %v", err)
		}
		return workDir, args, nil
	case "-c":
		return workDir, []string{"-c", strings.Join(fields[1:], " ")}, nil
	}
	args := []string{entry}
	path := entry
	if !filepath.IsAbs(path) {
		path = filepath.Join(workDir, entry)
	}
	if _, err := os.Stat(path); err != nil {
		// Newer agents: "train.py --lr 0.1" is a script plus arguments.
		if split, err := shlexSplit(entry); err == nil && len(split) > 0 {
			args = split
		}
	}
	return workDir, args, nil
}
