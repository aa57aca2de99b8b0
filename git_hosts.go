package main

// Which credentials a repository gets, and how git receives them, for the
// reference's per-host keys: agent.git_host_match_prefix,
// agent.git.extra_credentials, agent.enable_git_ask_pass, Azure DevOps PATs
// and Microsoft Entra tokens (agent.git_use_azure_pat,
// agent.git_use_ms_entra_token), and the scheme that ssh URLs become
// (agent.translate_ssl_replacement_scheme).

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// gitURLHost is the host of a repository URL (scp-style included,
// lower-cased) and the text a host prefix is matched against: the URL, or
// "host:path" for scp-style URLs, as the reference.
func gitURLHost(raw string) (host, full string) {
	if m := gitSCPSyntax().FindStringSubmatch(raw); m != nil && !strings.Contains(raw, "://") {
		return strings.ToLower(m[2]), m[2] + ":" + m[3]
	}
	u, ok := gitParseURL(raw)
	if !ok || u.scheme == "" {
		return "", raw
	}
	return strings.Trim(u.host, "[]"), raw
}

// gitCredsForURL picks the credentials for one repository as the
// reference's _get_config_creds: the configured ones when agent.git_host is
// unset or matches, else none; then the first agent.git.extra_credentials
// entry ({host, user|username, pass|password}) whose host matches wins over
// them. A host matches the URL's host, or with agent.git_host_match_prefix
// is a prefix of the whole URL (case aside). What it returns is bound to
// the URL's host; note says which extra entry matched, for the log.
func gitCredsForURL(cfg *agentConfig, base gitCreds, raw string) (creds gitCreds, note string) {
	if cfg == nil {
		return base, ""
	}
	host, full := gitURLHost(raw)
	prefix := cfg.boolean("agent.git_host_match_prefix", false)
	match := func(h string) bool {
		h = strings.ToLower(strings.TrimSpace(h))
		if prefix {
			return strings.HasPrefix(strings.ToLower(full), h)
		}
		return host == h
	}
	if base.host == "" || match(base.host) {
		creds = gitCreds{user: base.user, pass: base.pass}
	}
	for i, e := range gitExtraCredentials(cfg) {
		if e.user == "" || e.pass == "" || e.host == "" {
			note += fmt.Sprintf("Git extra credentials entry #%d does not contain user, pass and host: skipped\n", i)
			continue
		}
		if match(e.host) {
			creds = gitCreds{user: e.user, pass: e.pass}
			note += fmt.Sprintf("Matched extra git credentials for host %s user %s\n", e.host, e.user)
			break
		}
	}
	if creds.user == "" && creds.pass == "" {
		return gitCreds{}, strings.TrimSpace(note)
	}
	creds.host = host
	return creds, strings.TrimSpace(note)
}

// gitExtraCredentials reads agent.git.extra_credentials.
func gitExtraCredentials(cfg *agentConfig) []gitCreds {
	v, _ := cfg.lookup("agent.git.extra_credentials")
	list, _ := v.([]any)
	var out []gitCreds
	for _, item := range list {
		o, ok := item.(*hoconObject)
		if !ok {
			out = append(out, gitCreds{})
			continue
		}
		get := func(keys ...string) string {
			for _, k := range keys {
				if x, ok := o.Get(k); ok && x != nil {
					if s := strings.TrimSpace(scalarText(x)); s != "" {
						return s
					}
				}
			}
			return ""
		}
		out = append(out, gitCreds{user: get("user", "username"), pass: get("pass", "password"), host: get("host")})
	}
	return out
}

// gitPromptCreds are the credentials pip's git may answer with: with
// agent.git_host_match_prefix, git_host is a URL prefix, and git's prompt
// names only the host, so the binding is to the prefix's host.
func gitPromptCreds(cfg *agentConfig, c gitCreds) gitCreds {
	if c.host != "" && strings.Contains(c.host, "/") {
		c.host, _ = gitURLHost(strings.TrimRight(c.host, "/"))
	}
	return c
}

// gitSSHReplacementScheme is the scheme ssh URLs become when credentials
// are set (CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME, else
// agent.translate_ssl_replacement_scheme, else https).
func gitSSHReplacementScheme(cfg *agentConfig) string {
	s := firstEnv(cfg.env, "CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME")
	if s == "" {
		s = strings.TrimSpace(cfg.str("agent.translate_ssl_replacement_scheme"))
	}
	return strings.ToLower(gitOr(strings.TrimSuffix(s, "://"), "https"))
}

// gitTranslateSSH is gitReplaceSSHURL with the configured scheme.
func gitTranslateSSH(cfg *agentConfig, raw string) string {
	out := gitReplaceSSHURL(raw)
	if out == raw {
		return raw
	}
	if scheme := gitSSHReplacementScheme(cfg); scheme != "https" {
		out = scheme + strings.TrimPrefix(out, "https")
	}
	return out
}

// gitAuthScope is the part of a clone URL an HTTP header is bound to:
// scheme://host[:port]/ (git's http.<url>.* matching).
func gitAuthScope(cloneURL string) string {
	u, ok := gitParseURL(cloneURL)
	if !ok || (u.scheme != "http" && u.scheme != "https") || u.host == "" {
		return ""
	}
	s := u.scheme + "://" + u.host
	if u.port != "" {
		s += ":" + u.port
	}
	return s + "/"
}

// gitAuthHeaderEnv carries the Authorization header to git (--config-env).
const gitAuthHeaderEnv = "CLEARML_AGENT_GIT_AUTH_HEADER"

// gitHeaderMode is how git gets credentials instead of GIT_ASKPASS: "bearer"
// (an MS Entra token), "azure-pat" (Basic with the PAT alone), "basic"
// (agent.enable_git_ask_pass: false), or "" for ask-pass.
func gitHeaderMode(cfg *agentConfig, log io.Writer) string {
	if cfg == nil {
		return ""
	}
	on := func(envName, key string) bool {
		if b, ok := parseBoolText(firstEnv(cfg.env, envName)); ok && b {
			return true
		}
		return cfg.boolean(key, false)
	}
	entra := on("CLEARML_AGENT_GIT_USE_MS_ENTRA_TOKEN", "agent.git_use_ms_entra_token")
	pat := on("CLEARML_AGENT_GIT_USE_AZURE_PAT", "agent.git_use_azure_pat")
	switch {
	case entra && pat:
		if log != nil {
			fmt.Fprintln(log, "WARNING: Git MS Entra token and Azure PAT support are both turned on, using the MS Entra token")
		}
		return "bearer"
	case entra:
		return "bearer"
	case pat:
		return "azure-pat"
	case !cfg.boolean("agent.enable_git_ask_pass", true):
		return "basic"
	}
	return ""
}

// gitHeaderModeNames say which setting chose a header mode.
var gitHeaderModeNames = map[string]string{"bearer": "MS Entra token", "azure-pat": "Azure DevOps PAT",
	"basic": "agent.enable_git_ask_pass: false"}

// gitHeaderAuth is what a git call gets in header mode: the argv that
// names the header's variable (never its value) for the scope, and the
// variable. nil when ask-pass answers instead.
func gitHeaderAuth(mode, scope string, auth gitCreds) (args, env []string) {
	if mode == "" || scope == "" || auth.pass == "" {
		return nil, nil
	}
	var value string
	switch mode {
	case "bearer":
		value = "Authorization: Bearer " + auth.pass
	case "azure-pat":
		value = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(":"+auth.pass))
	default:
		value = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(auth.user+":"+auth.pass))
	}
	return []string{"--config-env=http." + scope + ".extraHeader=" + gitAuthHeaderEnv}, []string{gitAuthHeaderEnv + "=" + value}
}

// credsFor is gitCredsForURL for the checkout's repository, logging which
// extra credentials matched.
func (g *gitCheckout) credsFor(repository string) gitCreds {
	creds, note := gitCredsForURL(g.cfg, g.creds, repository)
	if note != "" {
		g.logf("%s", note)
	}
	return creds
}

// useAuthScope binds a credentials header to the clone URL, saying so
// when one is used.
func (g *gitCheckout) useAuthScope(cloneURL string, auth gitCreds) {
	g.authScope = gitAuthScope(cloneURL)
	if mode := gitHeaderMode(g.cfg, g.log); mode != "" && auth.pass != "" && g.authScope != "" {
		g.logf("git credentials for %s go in an HTTP Authorization header (%s), not through GIT_ASKPASS", g.authScope, gitHeaderModeNames[mode])
	}
}
