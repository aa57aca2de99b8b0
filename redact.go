package main

// Secret handling shared by config printing, logs and the console shipped
// to the server: secrets are masked by key name, inside URLs, inside docker
// -e arguments, and by value wherever a known secret appears verbatim.

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

const mask = "********"

// secretEnvVars never show their values in a docker command or a log.
var secretEnvVars = []string{
	"CLEARML_AGENT_GIT_PASS", "TRAINS_AGENT_GIT_PASS",
	"CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY",
	"AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY",
	"CLEARML_AUTH_TOKEN",
}

// urlPasswordPattern is the one URL-password rule: the password of a
// scheme://user:password@ URL anywhere in text (never across whitespace).
var urlPasswordPattern = lazyRegexp(`([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@`)

// maskURLPasswordsInText replaces URL passwords, keeping the text around
// them as it is (the console shipped to the server).
func maskURLPasswordsInText(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	return urlPasswordPattern().ReplaceAllString(s, "${1}"+mask+"@")
}

// maskURLPasswords replaces the password of every user:pass@ URL in s; a
// string that had one comes back with its fields joined by single spaces
// (commands and config values shown to the user).
func maskURLPasswords(s string) string {
	if !strings.Contains(s, "@") || !urlPasswordPattern().MatchString(s) {
		return s
	}
	return strings.Join(strings.Fields(maskURLPasswordsInText(s)), " ")
}

// maskDockerArgs hides the values of secret -e/--env variables and URL
// passwords in a docker argument list. extraKeys adds variable names.
func maskDockerArgs(args []string, extraKeys []string) []string {
	keys := map[string]bool{}
	for _, k := range secretEnvVars {
		keys[k] = true
	}
	for _, k := range extraKeys {
		keys[k] = true
	}
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		var kv string
		inline := false
		switch {
		case (a == "-e" || a == "--env") && i+1 < len(out):
			i++
			kv = out[i]
		case strings.HasPrefix(a, "--env="):
			kv, inline = a[len("--env="):], true
		case strings.HasPrefix(a, "-e") && len(a) > 2 && strings.Contains(a, "="):
			kv, inline = a[2:], true
		default:
			if !strings.HasPrefix(a, "-") {
				out[i] = maskURLPasswords(a)
			}
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if keys[k] || looksSecretName(k) {
			v = mask
		} else {
			v = maskURLPasswords(v)
		}
		if inline {
			out[i] = strings.TrimSuffix(a, kv) + k + "=" + v
		} else {
			out[i] = k + "=" + v
		}
	}
	return out
}

// secretNamePattern is the one secret-name rule (case-insensitive): a
// name that mentions a secret, password or token, ends in _KEY or
// _CONNECTION_STRING, or names an account, API or private key.
var secretNamePattern = lazyRegexp(`(?i)secret|pass(word|wd)?|token|account_key|api_key|private_key|_key$|_connection_string$`)

// durationNamePattern: a setting's name that ends in a time unit.
var durationNamePattern = lazyRegexp(`(?i)_(sec|secs|seconds|ms|min|mins|minutes|hours|days)$`)

// isDurationSetting reports whether a setting is a number of time units
// (api.auth.token_expiration_threshold_sec = 43200): a setting about a
// token or a password, never a secret itself, whatever word its name
// contains. Both the name and the value must say so.
func isDurationSetting(name string, value any) bool {
	if !durationNamePattern().MatchString(name) {
		return false
	}
	switch v := value.(type) {
	case int64, float64:
		return true
	case string:
		_, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return err == nil
	}
	return false
}

// looksSecretName guesses from a variable name whether its value is secret:
// the agent's known secret variables and any name secretNamePattern matches.
func looksSecretName(name string) bool {
	return slices.Contains(secretEnvVars, strings.ToUpper(name)) || secretNamePattern().MatchString(name)
}

// secretEnvValues are the values of environment variables ("K=V") whose
// names look secret (looksSecretName), for masking wherever they appear.
func secretEnvValues(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !looksSecretName(k) {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) < 6 { // short values would mask ordinary words
			continue
		}
		switch strings.ToLower(v) {
		case "true", "false", "none", "null":
			continue
		}
		out = append(out, v)
	}
	return out
}

// lazyRegexp compiles on first use: start-up time matters for a CLI.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// redactor replaces known secret values anywhere in text.
type redactor struct {
	secrets []string
}

// newRedactor keeps secrets worth hiding: short values would mask noise.
func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		r.add(s)
	}
	return r
}

func (r *redactor) add(s string) {
	s = strings.TrimSpace(s)
	if len(s) < 4 {
		return
	}
	for _, have := range r.secrets {
		if have == s {
			return
		}
	}
	r.secrets = append(r.secrets, s)
	// Longest first, so a secret containing another is masked whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
}

func (r *redactor) redact(s string) string {
	if r == nil {
		return s
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, mask)
		}
	}
	return s
}
