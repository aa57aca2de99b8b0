package main

// Task code: clone through a shared VCS cache (one flock per entry), check
// out the commit, tag or branch, update submodules, then apply the
// uncommitted diff (git_diff.go) or write a literal script (git_entry.go).
// Every git call goes through gitExec with the credential model of
// git_creds.go: credentials reach git only through GIT_ASKPASS (this binary,
// see gitAskpassMain), never in a URL on a command line, in .git/config or
// in the log.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// gitCacheLockTimeout is how long a task waits for another one that holds
// the same cache entry, as in the reference; then it clones without cache.
var gitCacheLockTimeout = 300 * time.Second

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

	authScope string // the clone URL's scheme://host[:port]/, for a credentials header (git_hosts.go)
}

func newGitCheckout(cfg *agentConfig, creds gitCreds, log io.Writer) *gitCheckout {
	return &gitCheckout{cfg: cfg, creds: creds, log: log}
}

func (g *gitCheckout) logf(format string, a ...any) {
	if g.log != nil {
		fmt.Fprintf(g.log, format+"\n", a...)
	}
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
			return gitResult{}, fmt.Errorf("code: %w", err)
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

	creds := g.credsFor(src.repository)
	rewritten := gitRewriteURL(g.cfg, src.repository, creds)
	cloneURL, auth := gitAuthFor(rewritten, creds)
	shown := maskURLPasswords(gitAddAuth(src.repository, creds, true))
	g.useAuthScope(cloneURL, auth)
	if rewritten != src.repository {
		g.logf("Using rewritten repository url %q for %q", cloneURL, shown)
	}
	name := gitRepoName(cloneURL)
	root := filepath.Join(dest, name)
	if err := os.RemoveAll(root); err != nil {
		return gitResult{}, fmt.Errorf("clone: cannot clear %s: %w", root, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return gitResult{}, fmt.Errorf("clone: %w", err)
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
		return gitResult{}, fmt.Errorf("submodule: git submodule update failed: %w (check the submodule URLs and that the credentials cover their host)", err)
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
		return gitResult{}, fmt.Errorf("checkout: git rev-parse HEAD: %w", err)
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
	if !cacheOn || cacheDir == "" {
		return g.cloneTo(ctx, cloneURL, auth, root, root)
	}
	key := gitCacheKey(cloneURL)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("clone: vcs cache %s: %w (fix agent.vcs_cache.path)", cacheDir, err)
	}
	unlock, err := gitLockFile(ctx, filepath.Join(cacheDir, key+".lock"), gitCacheLockTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("clone: %w", ctx.Err())
		}
		g.logf("Could not lock cache folder %q (%v), cloning without the cache.", name, err)
		return g.cloneTo(ctx, cloneURL, auth, root, root)
	}
	defer unlock()
	entry := filepath.Join(cacheDir, name+"."+key)
	cached := filepath.Join(entry, name)
	if st, err := os.Stat(filepath.Join(cached, ".git")); err == nil && st.IsDir() {
		g.logf("Using cached repository in %q", cached)
	} else if err := g.cloneTo(ctx, cloneURL, auth, cached, entry); err != nil {
		return err
	}
	fetch := gitCmd{dir: cached, auth: auth, args: append([]string{"fetch"}, fetchArgs...)}
	if g.offline {
		g.logf("standalone mode: using the cached repository without fetching")
	} else if _, err := g.gitExec(ctx, fetch); err != nil {
		if g.cfg == nil || !g.cfg.boolean("agent.vcs_cache.clone_on_pull_fail", false) {
			return fmt.Errorf("fetch: git fetch in the vcs cache %s failed: %w (check the git credentials; or set agent.vcs_cache.clone_on_pull_fail to re-clone)", cached, err)
		}
		g.logf("pulling git failed, re-cloning: %s", cloneURL)
		if err := g.cloneTo(ctx, cloneURL, auth, cached, entry); err != nil {
			return err
		}
	}
	if err := gitCopyTree(cached, root); err != nil {
		return fmt.Errorf("clone: copying the cached repository: %w", err)
	}
	return nil
}

// cloneTo clones cloneURL into dir. A failed clone leaves nothing behind:
// it removes rm (dir, or the vcs-cache entry holding it, whose lock the
// caller holds, so no other task is using it).
func (g *gitCheckout) cloneTo(ctx context.Context, cloneURL string, auth gitCreds, dir, rm string) error {
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
		_ = os.RemoveAll(rm)
		return fmt.Errorf("clone: git clone %s failed: %w (check the URL, that the commit is pushed, and the git credentials: agent.git_user/agent.git_pass or CLEARML_AGENT_GIT_USER/CLEARML_AGENT_GIT_PASS)", cloneURL, err)
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
	return fmt.Errorf("checkout: git checkout %s failed: %w (make sure the commit/branch/tag was pushed)", strings.Join(revs, ", "), last)
}

// gitIsLocalURL: a path or file:// URL, which needs no network.
func gitIsLocalURL(u string) bool {
	return strings.HasPrefix(u, "/") || strings.HasPrefix(u, "file://") || strings.HasPrefix(u, "./") || strings.HasPrefix(u, "../")
}

// remoteRefs lists the refs under refs/remotes/origin, in one git call.
func (g *gitCheckout) remoteRefs(ctx context.Context, root string) map[string]bool {
	cmd := setupCmd(ctx, gitOr(g.gitBin, "git"), "-c", "safe.directory=*", "for-each-ref", "--format=%(refname)", "refs/remotes/origin")
	cmd.Dir = root
	cmd.Env = g.gitEnv(gitCmd{})
	out, _ := cmd.Output()
	refs := map[string]bool{}
	for _, r := range strings.Fields(string(out)) {
		refs[r] = true
	}
	return refs
}

// gitCacheKey names a cache entry: md5 of the credential-free URL (the
// reference hashes the raw URL; for a URL without credentials they agree).
func gitCacheKey(cloneURL string) string {
	sum := md5.Sum([]byte(cloneURL))
	return hex.EncodeToString(sum[:])
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
	hdrArgs, hdrEnv := gitHeaderAuth(gitHeaderMode(g.cfg, nil), g.authScope, c.auth)
	envCmd := c
	if hdrArgs != nil {
		envCmd.auth = gitCreds{} // a header instead of ask-pass
	}
	argv = append(append(argv, hdrArgs...), c.args...)
	cmd := setupCmd(ctx, bin, argv...)
	cmd.Dir = c.dir
	cmd.Env = append(g.gitEnv(envCmd), hdrEnv...)
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
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
		return text, errors.New(gitErrorLine(text, err.Error()))
	}
	return text, nil
}

// gitBoilerplate are lines git adds after the real error.
var gitBoilerplate = []string{
	"fatal: Could not read from remote repository.",
	"Please make sure you have the correct access rights",
	"and the repository exists.",
}

// gitErrorLine picks the line of git's output that names the problem: the
// first "fatal:" line, else the first "error:" line, else the last line;
// never a hint or the "make sure you have the correct access rights"
// boilerplate, in whose place the line before it (ssh's "Permission
// denied (publickey).", "Host key verification failed.") is the error.
func gitErrorLine(text, def string) string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "hint:") && !strings.HasPrefix(l, "Cloning into ") {
			lines = append(lines, l)
		}
	}
	generic := -1
	for _, prefix := range []string{"fatal:", "error:"} {
		for i, l := range lines {
			switch {
			case slices.Contains(gitBoilerplate, l):
				if generic < 0 {
					generic = i
				}
			case strings.HasPrefix(l, prefix):
				return l
			}
		}
	}
	if generic > 0 {
		return lines[generic-1]
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if !slices.Contains(gitBoilerplate, lines[i]) {
			return lines[i]
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

// gitOr is s, or def when s is empty.
func gitOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
