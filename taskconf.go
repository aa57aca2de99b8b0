package main

// What a task is handed besides its code: its private configuration file
// and the part of the agent's environment it inherits. The task gets what
// the ClearML SDK needs (api.*, sdk.*, the credentials when the agent
// logs in with keys) and none of the agent's own secrets (git password,
// index and docker credentials in agent.*) or internal variables.

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// writeTaskConfig writes the task's private configuration (0600): the
// agent's effective configuration less its agent section, which the SDK
// never reads and which holds the agent's secrets; api.credentials only
// when the task logs in with the agent's keys (withCredentials).
func writeTaskConfig(cfg *agentConfig, path string, withCredentials bool) error {
	plain, _ := hoconToPlain(cfg.root).(map[string]any)
	if plain == nil {
		plain = map[string]any{}
	}
	delete(plain, "agent")
	if api, ok := plain["api"].(map[string]any); ok && !withCredentials {
		delete(api, "credentials")
	}
	return os.WriteFile(path, hoconText(plain), 0o600)
}

// hoconText writes plain values (maps, lists, strings, numbers, booleans,
// nil) as HOCON that both the SDK's parser (its pyhocon fork) and ours read
// back exactly. JSON would not do: Go's encoder escapes <, > and & as
// \u003c..., and pyhocon keeps \uXXXX escapes literally. So a string is
// quoted with only the escapes pyhocon decodes (\\ \" \n \r \t), any
// other character as it is. A key pyhocon cannot read quoted (empty, or
// with a quote, a backslash or a control character) is left out.
func hoconText(v any) []byte {
	var b strings.Builder
	hoconWrite(&b, v, "")
	b.WriteByte('\n')
	return []byte(b.String())
}

func hoconWrite(b *strings.Builder, v any, indent string) {
	inner := indent + "  "
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			if hoconKeyWritable(k) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		b.WriteString("{\n")
		for _, k := range keys {
			b.WriteString(inner + `"` + k + `": `)
			hoconWrite(b, x[k], inner)
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case []any:
		b.WriteString("[\n")
		for i, e := range x {
			b.WriteString(inner)
			hoconWrite(b, e, inner)
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case string:
		b.WriteString(hoconQuoteString(x))
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	default:
		b.WriteString(hoconQuoteString(fmt.Sprint(x)))
	}
}

// hoconQuoteString quotes s for both HOCON readers (see hoconText).
func hoconQuoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// hoconKeyWritable: pyhocon takes a quoted key as it is, between quotes
// that may not be escaped.
func hoconKeyWritable(k string) bool {
	return k != "" && !strings.ContainsFunc(k, func(r rune) bool { return r == '"' || r == '\\' || r < ' ' || r == 0x7f })
}

// inheritedTaskEnv is what the task inherits: the agent's environment and
// the config's environment {} section, less what agentOnlyEnv keeps back.
func inheritedTaskEnv(cfg *agentConfig) map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range configEnvironment(cfg) {
		env[k] = v
	}
	for k := range env {
		if agentOnlyEnv(k) {
			delete(env, k)
		}
	}
	return env
}

// agentOnlyEnv says whether a variable of the agent's environment stays
// out of the task's: the API keys (the SDK reads them from the private
// config), the git credentials, secret-looking CLEARML_AGENT__* overrides
// of the agent's configuration, and the agent's internal variables.
func agentOnlyEnv(name string) bool {
	switch strings.ToUpper(name) {
	case "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "TRAINS_API_ACCESS_KEY", "TRAINS_API_SECRET_KEY",
		"CLEARML_AGENT_GIT_USER", "CLEARML_AGENT_GIT_PASS", "TRAINS_AGENT_GIT_USER", "TRAINS_AGENT_GIT_PASS",
		daemonChildEnv, "TRAINS_AGENT_DAEMON_CHILD", detachedLogEnv,
		gitAskpassMarker, gitAskpassUserEnv, gitAskpassPassEnv, gitAskpassHostEnv:
		return true
	}
	rest, ok := strings.CutPrefix(strings.ToUpper(name), "CLEARML_AGENT__")
	return ok && looksSecretName(rest)
}

// asciiLocale says whether the environment's locale makes Python's file
// system encoding ASCII: no locale, C or POSIX (Python before 3.7), or an
// explicit ASCII codeset. The reference then sets PYTHONIOENCODING=utf-8.
func asciiLocale(env map[string]string) bool {
	loc := ""
	for _, k := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v := env[k]; v != "" {
			loc = v
			break
		}
	}
	if loc == "" || loc == "C" || loc == "POSIX" {
		return true
	}
	_, codeset, _ := strings.Cut(loc, ".")
	codeset, _, _ = strings.Cut(codeset, "@")
	switch strings.ToUpper(strings.ReplaceAll(codeset, "-", "")) {
	case "ASCII", "USASCII", "ANSI_X3.41968", "646":
		return true
	}
	return false
}
