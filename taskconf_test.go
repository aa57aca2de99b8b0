package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The config written for a task or a container reads back exactly with our
// parser (the SDK's reader: TestSDKConfigFileRoundTrip), characters JSON
// would escape included.
func TestHOCONTextRoundTrip(t *testing.T) {
	in := map[string]any{
		"api": map[string]any{"host": "http://h:8008", "credentials": map[string]any{"secret_key": "s3cr&t<key>"}},
		"sdk": map[string]any{
			"query":     "https://x/out?a=1&b=2",
			"angle":     "<b>bold</b> & <i>",
			"quotes":    `say "hi" and 'bye'`,
			"backslash": `C:\path\to\file \n not a newline`,
			"unicode":   "naïve café – 日本語 ✓ \u2028",
			"newline":   "line one\nline two\ttab\r",
			"control":   "bell\a nul-free \x01 del\x7f",
			"specials":  "${HOME} # not a comment // nor this {braces} [list] = : , 🚀",
			"empty":     "",
			"num":       int64(42), "neg": int64(-7), "float": 0.25, "big": 1e21,
			"yes": true, "no": false, "nothing": nil,
			"list":       []any{"a&b", int64(1), []any{}, map[string]any{"k": "v"}},
			"dotted.key": "stays one key",
			"nested":     map[string]any{},
		},
	}
	text := hoconText(in)
	obj, err := parseHOCON("written", text, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if got := hoconToPlain(obj); !reflect.DeepEqual(got, any(in)) {
		t.Errorf("read back:\n%#v\nwant\n%#v\ntext:\n%s", got, in, text)
	}
	if strings.Contains(string(text), `\u00`) {
		t.Errorf("the text has \\u escapes the SDK would keep literally:\n%s", text)
	}
	// Keys pyhocon cannot read quoted are left out rather than mangled.
	if text := string(hoconText(map[string]any{`a"b`: "x", "": "y", "ok": "z"})); strings.Contains(text, `a"b`) || strings.Contains(text, `"": `) || !strings.Contains(text, `"ok": "z"`) {
		t.Errorf("unwritable keys:\n%s", text)
	}
}

// The task's config carries no agent section (git credentials, index and
// docker secrets) and, for a token login, no API keys; keys the agent got
// from its environment (CLEARML_API_SECRET_KEY, see dockerTestConfig) are
// in it, since the task's environment no longer has them.
func TestWriteTaskConfigStripsAgentSecrets(t *testing.T) {
	cfg := dockerTestConfig(t, map[string]string{}, `agent { git_user: alice, git_pass: "gp-secret", package_manager.extra_index_url: ["https://u:idx-secret@pypi.example"] }
api.credentials { access_key: AK, secret_key: "SK-in-file" }
sdk.aws.s3.secret: "s3-secret"`)
	dir := t.TempDir()
	for _, withCreds := range []bool{true, false} {
		path := filepath.Join(dir, "c.conf")
		if err := writeTaskConfig(cfg, path, withCreds); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		text := string(data)
		for _, bad := range []string{"gp-secret", "idx-secret", "git_user", `"agent"`} {
			if strings.Contains(text, bad) {
				t.Errorf("withCredentials=%v: the task's config has %q:\n%s", withCreds, bad, text)
			}
		}
		if strings.Contains(text, "SK-very-secret") != withCreds || !strings.Contains(text, "s3-secret") {
			t.Errorf("withCredentials=%v: credentials/sdk wrong:\n%s", withCreds, text)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", st.Mode())
		}
	}
}

func TestAgentOnlyEnvAndASCIILocale(t *testing.T) {
	for name, want := range map[string]bool{
		"CLEARML_API_ACCESS_KEY": true, "TRAINS_API_SECRET_KEY": true, "CLEARML_AGENT_GIT_PASS": true,
		"CLEARML_AGENT_DAEMON_CHILD": true, "CLEARML_AGENT_ASKPASS_PASS": true, "CLEARML_AGENT__AGENT__GIT_PASS": true,
		"CLEARML_AGENT__API__CREDENTIALS__SECRET_KEY": true, "CLEARML_AGENT__AGENT__VENVS_DIR": false,
		"CLEARML_API_HOST": false, "CLEARML_AUTH_TOKEN": false, "AWS_SECRET_ACCESS_KEY": false, "PATH": false,
	} {
		if got := agentOnlyEnv(name); got != want {
			t.Errorf("agentOnlyEnv(%s) = %v", name, got)
		}
	}
	for loc, want := range map[string]bool{"": true, "C": true, "POSIX": true, "en_US.ANSI_X3.4-1968": true, "C.ascii": true,
		"C.UTF-8": false, "en_US.UTF-8": false, "de_DE.ISO-8859-1": false} {
		if got := asciiLocale(map[string]string{"LANG": loc}); got != want {
			t.Errorf("asciiLocale(LANG=%q) = %v", loc, got)
		}
	}
	if asciiLocale(map[string]string{"LC_ALL": "C.UTF-8", "LANG": "C"}) {
		t.Error("LC_ALL wins over LANG")
	}
}
