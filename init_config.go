package main

// The parts of `init` that do not talk to the user: server URLs, the
// credentials check, and writing the new clearml.conf.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// normalizeServerURL reads a server URL as the reference does: without a
// scheme, http:// when a port is given, else https://. The result has no
// trailing slash; ok is false for anything but http(s) with a host.
func normalizeServerURL(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", false
	}
	if !strings.Contains(s, "://") {
		if strings.Contains(s, ":") {
			s = "http://" + s
		} else {
			s = "https://" + s
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/"), true
}

// deriveServers guesses all three server URLs from one of them, by the
// conventions of clearml-server: app./api./files. host names (hosted and
// most proxied installs), or ports 8080/8008/8081 (self-hosted). Anything
// else gives the same URL three times, for the user to correct.
func deriveServers(raw string) (web, api, files string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw, raw, raw
	}
	with := func(host string) string { return u.Scheme + "://" + host + strings.TrimRight(u.Path, "/") }
	h, port := u.Hostname(), u.Port()
	for _, p := range [][3]string{{"app.", "api.", "files."}, {"demoapp.", "demoapi.", "demofiles."}} {
		for _, prefix := range p[:2] {
			rest, ok := strings.CutPrefix(h, prefix)
			if !ok {
				continue
			}
			host := func(pre string) string {
				if port != "" {
					return pre + rest + ":" + port
				}
				return pre + rest
			}
			return with(host(p[0])), with(host(p[1])), with(host(p[2]))
		}
	}
	switch port {
	case "8080", "8008", "8081":
		return with(h + ":8080"), with(h + ":8008"), with(h + ":8081")
	}
	return with(u.Host), with(u.Host), with(u.Host)
}

// initRejected: the server refused the credentials (as opposed to not
// answering).
type initRejected struct{ msg string }

func (e *initRejected) Error() string { return e.msg }

// verifyInitCredentials logs in to the API server with the keys. Nothing
// from the environment takes part but a CA bundle: a CLEARML_AUTH_TOKEN or
// CLEARML_API_* variable must not stand in for the keys being checked.
func verifyInitCredentials(ctx context.Context, api, key, secret string, env envLookup) error {
	root, err := parseHOCON("<built-in defaults>", defaultsConf, nil)
	if err != nil {
		return err
	}
	cfg := &agentConfig{root: root, env: func(k string) (string, bool) {
		if k == "REQUESTS_CA_BUNDLE" || k == "CURL_CA_BUNDLE" {
			return env(k)
		}
		return "", false
	}}
	cfg.set("api.api_server", api)
	cfg.set("api.credentials.access_key", key)
	cfg.set("api.credentials.secret_key", secret)
	c, err := newAPIClient(cfg, clientOptions{interactive: true, budget: 15 * time.Second})
	if err != nil {
		return err
	}
	data, err := c.checkLogin(ctx)
	var ae *apiError
	var ue *unreachableError
	switch {
	case errors.As(err, &ae) && (ae.HTTPStatus == 401 || ae.Code == 401):
		return &initRejected{fmt.Sprintf("the server at %s rejected access key %q: %s (check the keys, or create new ones in the web UI)", api, key, ae.Msg)}
	case errors.As(err, &ue):
		return fmt.Errorf("cannot reach the API server at %s: %s", api, describeNetErr(ue.cause))
	case err != nil:
		return fmt.Errorf("%s did not answer as a ClearML API server (%v); a self-hosted API server usually listens on port 8008", api, err)
	}
	var r struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(data, &r) != nil || r.Token == "" {
		return fmt.Errorf("%s answered auth.login without a token: is it the API server (not the web application)?", api)
	}
	return nil
}

// hoconString quotes s for a HOCON file (a JSON string).
func hoconString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSpace(b.String())
}

// renderInitConfig is the new file: the server block and the answers,
// then defaults.conf (every setting at its default, with comments).
func renderInitConfig(a *initAnswers) []byte {
	var b strings.Builder
	b.WriteString(`# ClearML configuration, written by "clearml-agent init".
# Read by clearml-agent (this one and the Python agent) and by the ClearML SDK.
# Environment variables override it: CLEARML_API_HOST, CLEARML_API_ACCESS_KEY,
# CLEARML_API_SECRET_KEY, CLEARML_AGENT_GIT_USER, CLEARML_AGENT_GIT_PASS, ...
# It holds secrets: keep it readable by its owner only (mode 0600).

api {
  # The web application, the API server and the file server (a self-hosted
  # clearml-server serves them on ports 8080, 8008 and 8081).
`)
	fmt.Fprintf(&b, "  web_server: %s\n  api_server: %s\n  files_server: %s\n", hoconString(a.web), hoconString(a.api), hoconString(a.files))
	b.WriteString("  # Created in the web application: Settings > Workspace > Create new credentials.\n")
	fmt.Fprintf(&b, "  credentials {\n    \"access_key\": %s\n    \"secret_key\": %s\n  }\n}\n\n", hoconString(a.accessKey), hoconString(a.secret))
	b.WriteString("# Git credentials for cloning over https (a personal access token goes in\n# git_pass); leave both empty to clone with this machine's SSH key.\n")
	fmt.Fprintf(&b, "agent.git_user: %s\nagent.git_pass: %s\n\n", hoconString(a.gitUser), hoconString(a.gitPass))
	b.WriteString("# Extra package indexes for pip, e.g. a private mirror.\n")
	if len(a.indexes) == 0 {
		b.WriteString("# agent.package_manager.extra_index_url: [\"https://pypi.example.com/simple\"]\n\n")
	} else {
		b.WriteString("agent.package_manager.extra_index_url: [\n")
		for _, u := range a.indexes {
			b.WriteString("  " + hoconString(u) + "\n")
		}
		b.WriteString("]\n\n")
	}
	body := string(defaultsConf)
	if a.outputURI != "" {
		b.WriteString("# Where tasks store models and artifacts unless Task.init says otherwise.\n")
		fmt.Fprintf(&b, "sdk.development.default_output_uri: %s\n\n", hoconString(a.outputURI))
		// The body comes later and would set it back to "".
		body = strings.Replace(body, "default_output_uri: \"\"", "# default_output_uri: \"\"", 1)
	}
	// The body without defaults.conf's own header.
	if i := strings.Index(body, "\nagent {"); i >= 0 {
		body = body[i+1:]
	}
	b.WriteString("# Everything below is at its built-in default; change what you need.\n\n")
	b.WriteString(body)
	return []byte(b.String())
}

// writeInitConfig writes data to path with mode 0600, through a temporary
// file in the same folder so a failure never leaves half a file; an
// existing file is kept as path.bak.
func writeInitConfig(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %v (set CLEARML_CONFIG_FILE to write elsewhere)", dir, unwrapPathErr(err))
	}
	tmp, err := os.CreateTemp(dir, ".clearml.conf.*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %v (set CLEARML_CONFIG_FILE to write elsewhere)", dir, unwrapPathErr(err))
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		if err := os.Rename(path, path+".bak"); err != nil {
			return fmt.Errorf("cannot keep the old %s as .bak: %v", path, unwrapPathErr(err))
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write %s: %v", path, unwrapPathErr(err))
	}
	return nil
}
