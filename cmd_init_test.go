package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// runInit runs `clearml-agent init` with stdin (not a terminal) and only
// the given environment, as runAgent does.
func runInit(t *testing.T, env map[string]string, stdin string, args ...string) runResult {
	t.Helper()
	cmdEnv := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	r, err := execAgent(cmdEnv, stdin, append(args, "init")...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// webUIBlock is the text the web UI's "Copy to clipboard" gives.
func webUIBlock(url, key, secret string) string {
	return "api {\n  web_server: " + url + "/\n  api_server: " + url + "\n  files_server: " + url +
		"\n  credentials {\n    \"access_key\" = \"" + key + "\"\n    \"secret_key\" = \"" + secret + "\"\n  }\n}\n"
}

// readInitConfig loads the written file the way the agent does.
func readInitConfig(t *testing.T, path string) *agentConfig {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	cfg, err := loadConfig(path, mapEnv(map[string]string{"HOME": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// From stdin, with every question answered: the file holds the answers
// and every built-in default, the agent works with it, and no secret is
// printed.
func TestInitStdinAnswers(t *testing.T) {
	s := startServer(t)
	home := t.TempDir()
	in := webUIBlock(s.URL(), fakeserver.TestsAccessKey, fakeserver.TestsSecretKey) +
		"\n\n\n" + // keep the three URLs
		"s\n" + // output URI: the file server
		"octocat\nghp_s3cr3tT0ken\n" +
		"https://pypi.example.com/simple\nhttps://mirror.example.org/pypi\n\n"
	r := runInit(t, map[string]string{"HOME": home}, in)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	for _, secret := range []string{fakeserver.TestsSecretKey, "ghp_s3cr3tT0ken"} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("a secret was printed:\n%s", r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "Credentials verified") || !strings.Contains(r.stdout, "setup completed") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	path := filepath.Join(home, "clearml.conf")
	cfg := readInitConfig(t, path)
	want := map[string]string{
		"api.web_server":                     s.URL(),
		"api.api_server":                     s.URL(),
		"api.files_server":                   s.URL(),
		"api.credentials.access_key":         fakeserver.TestsAccessKey,
		"api.credentials.secret_key":         fakeserver.TestsSecretKey,
		"agent.git_user":                     "octocat",
		"agent.git_pass":                     "ghp_s3cr3tT0ken",
		"sdk.development.default_output_uri": s.URL(),
	}
	for k, v := range want {
		if got := cfg.str(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := cfg.strList("agent.package_manager.extra_index_url"); strings.Join(got, " ") != "https://pypi.example.com/simple https://mirror.example.org/pypi" {
		t.Errorf("extra_index_url = %q", got)
	}
	// The full template: every built-in default is in the file itself.
	data, _ := os.ReadFile(path)
	file, err := parseHOCON(path, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	defaults, _ := parseHOCON("defaults", defaultsConf, nil)
	inFile, inDefaults := map[string]string{}, map[string]string{}
	flattenDefaults("", file, inFile)
	flattenDefaults("", defaults, inDefaults)
	for k, v := range inDefaults {
		if k != "sdk.development.default_output_uri" && inFile[k] != v {
			t.Errorf("%s: the file has %q, the default is %s", k, inFile[k], v)
		}
	}
	if logins := s.RequestsTo("auth.login"); len(logins) != 1 {
		t.Errorf("%d auth.login requests, want 1", len(logins))
	}
	// The agent runs with the new file and nothing else.
	if r := runAgent(t, map[string]string{"HOME": home}, "list"); r.code != 0 {
		t.Errorf("list with the new file: exit %d, %s", r.code, r.stderr)
	}
}

// Only the block, the input ends: every question takes its default. Also
// the block pasted as one line, and CLEARML_CONFIG_FILE in a new folder.
func TestInitStdinDefaults(t *testing.T) {
	s := startServer(t)
	block := webUIBlock(s.URL(), fakeserver.TestsAccessKey, fakeserver.TestsSecretKey)
	oneLine := strings.Join(strings.Fields(strings.ReplaceAll(block, "\n", " ")), " ") + "\n"
	for name, in := range map[string]string{"block": block, "one line": oneLine} {
		t.Run(name, func(t *testing.T) {
			home := t.TempDir()
			target := filepath.Join(t.TempDir(), "etc", "clearml", "agent.conf")
			r := runInit(t, map[string]string{"HOME": home, "CLEARML_CONFIG_FILE": target}, in)
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
			}
			cfg := readInitConfig(t, target)
			if cfg.str("api.api_server") != s.URL() || cfg.str("api.credentials.secret_key") != fakeserver.TestsSecretKey {
				t.Errorf("api: %q %q", cfg.str("api.api_server"), cfg.str("api.credentials.secret_key"))
			}
			if cfg.str("agent.git_user") != "" || cfg.str("sdk.development.default_output_uri") != "" || cfg.strList("agent.package_manager.extra_index_url") != nil {
				t.Errorf("defaults not kept: git_user %q output %q", cfg.str("agent.git_user"), cfg.str("sdk.development.default_output_uri"))
			}
			if _, err := os.Stat(filepath.Join(home, "clearml.conf")); err == nil {
				t.Error("~/clearml.conf written despite CLEARML_CONFIG_FILE")
			}
		})
	}
}

// Wrong credentials are checked with the server and refused; nothing is
// written. Typed again (the questions after a refusal), they pass.
func TestInitWrongCredentials(t *testing.T) {
	s := startServer(t)
	home := t.TempDir()
	const wrong = "wR0ngSecretValue"
	block := webUIBlock(s.URL(), fakeserver.TestsAccessKey, wrong)
	r := runInit(t, map[string]string{"HOME": home}, block)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\nstdout %s", r.code, r.stdout)
	}
	oneErrorLine(t, r, "rejected access key \""+fakeserver.TestsAccessKey+"\"")
	if !strings.Contains(r.stderr, "nothing was written") || strings.Contains(r.stdout+r.stderr, wrong) {
		t.Errorf("stderr %q / stdout %q", r.stderr, r.stdout)
	}
	if _, err := os.Stat(filepath.Join(home, "clearml.conf")); err == nil {
		t.Error("a file was written with refused credentials")
	}

	in := block + "\n\n\n" + fakeserver.TestsAccessKey + "\n" + fakeserver.TestsSecretKey + "\n"
	r = runInit(t, map[string]string{"HOME": home}, in)
	if r.code != 0 {
		t.Fatalf("retry: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if got := readInitConfig(t, filepath.Join(home, "clearml.conf")).str("api.credentials.secret_key"); got != fakeserver.TestsSecretKey {
		t.Errorf("secret_key = %q", got)
	}
	if n := len(s.RequestsTo("auth.login")); n != 3 {
		t.Errorf("%d auth.login requests, want 3 (refused, refused, accepted)", n)
	}

	// A server that does not answer: a clear error, at once.
	s.Close()
	r = runInit(t, map[string]string{"HOME": t.TempDir()}, block)
	if r.code != 1 {
		t.Fatalf("unreachable: exit %d", r.code)
	}
	oneErrorLine(t, r, "cannot reach the API server at "+s.URL())
}

// An existing file is kept unless the user says yes; then the old one is
// kept as .bak.
func TestInitExistingFile(t *testing.T) {
	s := startServer(t)
	home := t.TempDir()
	path := filepath.Join(home, "clearml.conf")
	old := "api.api_server: \"http://old.example:8008\"\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	block := webUIBlock(s.URL(), fakeserver.TestsAccessKey, fakeserver.TestsSecretKey)
	for _, in := range []string{"", "n\n" + block, "\n" + block} {
		r := runInit(t, map[string]string{"HOME": home}, in)
		if r.code != 1 {
			t.Fatalf("answer %q: exit %d, want 1", in, r.code)
		}
		oneErrorLine(t, r, "already exists and was left unchanged")
		if data, _ := os.ReadFile(path); string(data) != old {
			t.Fatalf("answer %q changed the file: %q", in, data)
		}
	}
	if r := runInit(t, map[string]string{"HOME": home}, "y\n"+block); r.code != 0 {
		t.Fatalf("yes: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := readInitConfig(t, path).str("api.api_server"); got != s.URL() {
		t.Errorf("api_server = %q", got)
	}
	if data, _ := os.ReadFile(path + ".bak"); string(data) != old {
		t.Errorf(".bak = %q", data)
	}
}

// No input at all: one error line that says what to do.
func TestInitNoInput(t *testing.T) {
	r := runInit(t, map[string]string{"HOME": t.TempDir()}, "")
	if r.code != 1 {
		t.Fatalf("exit %d", r.code)
	}
	oneErrorLine(t, r, "no credentials given")
}

func TestInitParsePasted(t *testing.T) {
	tests := []struct {
		name, text string
		want       pastedConfig
	}{
		{"web UI", webUIBlock("https://app.clear.ml", "AK", "S-K"),
			pastedConfig{web: "https://app.clear.ml/", api: "https://app.clear.ml", files: "https://app.clear.ml", accessKey: "AK", secret: "S-K"}},
		{"one line", `api { web_server: https://app.clear.ml api_server: https://api.clear.ml files_server: https://files.clear.ml credentials { "access_key" = "AK" "secret_key" = "SK" } }`,
			pastedConfig{web: "https://app.clear.ml", api: "https://api.clear.ml", files: "https://files.clear.ml", accessKey: "AK", secret: "SK"}},
		{"credentials only", "credentials {\"access_key\": \"AK\", \"secret_key\": \"SK\"}",
			pastedConfig{accessKey: "AK", secret: "SK"}},
		{"old host key", "api { host: http://srv:8008\n credentials { access_key: AK, secret_key: SK } }",
			pastedConfig{api: "http://srv:8008", accessKey: "AK", secret: "SK"}},
	}
	for _, tc := range tests {
		got, err := parsePastedConfig(tc.text)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
		}
	}
	if _, err := parsePastedConfig("api { credentials { "); err == nil {
		t.Error("a broken block parsed")
	}
	for _, tc := range []struct {
		line  string
		delta int
	}{{"api {", 1}, {"  }", -1}, {`"secret_key" = "a{b"`, 0}, {`x: "q\"{"`, 0}, {"a { b { } }", 0}} {
		if d, _ := braceDepth(tc.line); d != tc.delta {
			t.Errorf("braceDepth(%q) = %d, want %d", tc.line, d, tc.delta)
		}
	}
}

func TestInitServerURLs(t *testing.T) {
	for _, tc := range []struct{ in, web, api, files string }{
		{"https://app.clear.ml", "https://app.clear.ml", "https://api.clear.ml", "https://files.clear.ml"},
		{"https://api.clear.ml", "https://app.clear.ml", "https://api.clear.ml", "https://files.clear.ml"},
		{"https://demoapp.demo.clear.ml", "https://demoapp.demo.clear.ml", "https://demoapi.demo.clear.ml", "https://demofiles.demo.clear.ml"},
		{"http://10.0.0.5:8080", "http://10.0.0.5:8080", "http://10.0.0.5:8008", "http://10.0.0.5:8081"},
		{"http://srv:8008", "http://srv:8080", "http://srv:8008", "http://srv:8081"},
		{"https://clearml.corp.example", "https://clearml.corp.example", "https://clearml.corp.example", "https://clearml.corp.example"},
	} {
		web, api, files := deriveServers(tc.in)
		if web != tc.web || api != tc.api || files != tc.files {
			t.Errorf("%s: %s %s %s", tc.in, web, api, files)
		}
	}
	for in, want := range map[string]string{
		"app.clear.ml": "https://app.clear.ml", "srv:8080": "http://srv:8080", "http://srv:8008/": "http://srv:8008",
		"ftp://x": "", "": "", "https://": "",
	} {
		if got, ok := normalizeServerURL(in); got != want || ok != (want != "") {
			t.Errorf("normalizeServerURL(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

// Values with quotes, backslashes and ${...} survive the round trip.
func TestInitRenderQuoting(t *testing.T) {
	a := &initAnswers{web: "https://app.clear.ml", api: "https://api.clear.ml", files: "https://files.clear.ml",
		accessKey: "AK", secret: `s"e\c${HOME}#r`, gitUser: "me", gitPass: `p"w\d`, outputURI: "s3://b/${x}",
		indexes: []string{"https://u:p@idx.example/simple"}}
	dir := t.TempDir()
	path := filepath.Join(dir, "clearml.conf")
	if err := writeInitConfig(path, renderInitConfig(a)); err != nil {
		t.Fatal(err)
	}
	cfg := readInitConfig(t, path)
	for k, v := range map[string]string{"api.credentials.secret_key": a.secret, "agent.git_pass": a.gitPass,
		"sdk.development.default_output_uri": a.outputURI, "agent.git_user": "me"} {
		if got := cfg.str(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("leftovers in the folder: %v", ents)
	}
}
