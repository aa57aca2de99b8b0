package main

import (
	"regexp"
	"strconv"
	"strings"
)

// configCmd prints the effective configuration, as the reference does.
type configCmd struct{}

func (*configCmd) flags(*flagTable) {}

func (*configCmd) run(cx *cmdContext) error {
	cfg, err := loadConfig(cx.global.configFile, nil)
	if err != nil {
		return err
	}
	return printConfiguration(cx.stdout, cfg)
}

// configSanitizer holds the agent.sanitize_config_printout rules.
type configSanitizer struct {
	dontHide, hide, hideSection, dockerCmd, urls []*regexp.Regexp
	dockerExtraKeys                              []string
	dockerHide                                   bool
	values                                       *redactor
}

func newConfigSanitizer(cfg *agentConfig) *configSanitizer {
	load := func(key string, def ...string) []*regexp.Regexp {
		pats := def
		if _, ok := cfg.lookup("agent.sanitize_config_printout." + key); ok {
			pats = cfg.strList("agent.sanitize_config_printout." + key)
		}
		var out []*regexp.Regexp
		for _, p := range pats {
			if re, err := regexp.Compile(p); err == nil {
				out = append(out, re)
			}
		}
		return out
	}
	s := &configSanitizer{
		dontHide:        load("dont_hide_secrets", "^enable_git_ask_pass$"),
		hide:            load("hide_secrets", "secret", "pass", "token", "account_key", "contents"),
		hideSection:     load("hide_secrets_recursive", "^environment$"),
		dockerCmd:       load("docker_commands", "^extra_docker_arguments$"),
		urls:            load("urls", "^extra_index_url$"),
		dockerExtraKeys: cfg.strList("agent.hide_docker_command_env_vars.extra_keys"),
		dockerHide:      cfg.boolean("agent.hide_docker_command_env_vars.enabled", true),
	}
	// Whatever the rules say, the credentials themselves never print.
	s.values = newRedactor(cfg.str("api.credentials.secret_key"), cfg.str("agent.git_pass"),
		cfg.str("sdk.aws.s3.secret"), firstEnv(cfg.env, "CLEARML_AUTH_TOKEN"))
	return s
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// writeConfigProperties writes one "dotted.key = value" line per leaf.
func writeConfigProperties(w *strings.Builder, cfg *agentConfig) {
	s := newConfigSanitizer(cfg)
	root := cfg.root.Clone()
	root.Delete("env")
	if l, ok := root.Lookup("logging"); ok {
		if lo, ok := l.(*hoconObject); ok {
			lo.Delete("version")
			if u, ok := lo.Lookup("loggers", "urllib3"); ok {
				if uo, ok := u.(*hoconObject); ok {
					uo.Delete("level")
				}
			}
		}
	}
	var lines []string
	s.walk(root, nil, &lines)
	w.WriteString(strings.Join(lines, "\n"))
}

func (s *configSanitizer) walk(v any, path []string, lines *[]string) {
	switch x := v.(type) {
	case *hoconObject:
		for _, k := range x.Keys() {
			child, _ := x.Get(k)
			s.walk(s.sanitize(k, child), append(path, k), lines)
		}
	case []any:
		for i, item := range x {
			s.walk(item, append(path, strconv.Itoa(i)), lines)
		}
	case nil:
	default:
		text := s.values.redact(scalarText(x))
		*lines = append(*lines, strings.Join(path, ".")+" = "+escapeProperty(text))
	}
}

// sanitize applies the key-name rules to one key's value. A duration is
// no secret even when its name mentions one (isDurationSetting).
func (s *configSanitizer) sanitize(key string, v any) any {
	if !anyMatch(s.dontHide, key) && !isDurationSetting(key, v) {
		if anyMatch(s.hide, key) {
			return "****"
		}
		if anyMatch(s.hideSection, key) {
			if o, ok := v.(*hoconObject); ok {
				masked := newHOCONObject()
				for _, k := range o.Keys() {
					masked.Set(k, "****")
				}
				return masked
			}
			return "****"
		}
	}
	if anyMatch(s.urls, key) {
		switch x := v.(type) {
		case string:
			return maskURLPasswords(x)
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				if str, ok := e.(string); ok {
					e = maskURLPasswords(str)
				}
				out[i] = e
			}
			return out
		}
	}
	if l, ok := v.([]any); ok && s.dockerHide && anyMatch(s.dockerCmd, key) {
		var args []string
		for _, e := range l {
			args = append(args, scalarText(e))
		}
		out := make([]any, 0, len(args))
		for _, a := range maskDockerArgs(args, s.dockerExtraKeys) {
			out = append(out, a)
		}
		return out
	}
	return v
}

// escapeProperty escapes as the reference's properties output does.
func escapeProperty(s string) string {
	if !strings.ContainsAny(s, "=!#\n") {
		return s // nearly every value: no replacer, no copy
	}
	return propertyEscaper.Replace(s)
}

var propertyEscaper = strings.NewReplacer("=", `\=`, "!", `\!`, "#", `\#`, "\n", "\\\n")
