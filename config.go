package main

// Configuration: the same files, layers and precedence as the reference
// agent (built-in defaults < CLEARML_CONFIG_PATH < ~/trains.conf <
// ~/clearml.conf or --config-file < CLEARML_AGENT__* < specific env vars).

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

//go:embed defaults.conf
var defaultsConf []byte

// envLookup reads an environment variable; tests pass their own.
type envLookup func(string) (string, bool)

// agentConfig is the merged configuration.
type agentConfig struct {
	root     *hoconObject
	location string // the file `config` reports, "" when none
	env      envLookup
}

// configError is a configuration problem the user must fix.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// loadConfig builds the effective configuration. configFile is the
// --config-file value, already made absolute, or "".
func loadConfig(configFile string, env envLookup) (*agentConfig, error) {
	if env == nil {
		env = os.LookupEnv
	}
	root, err := parseHOCON("<built-in defaults>", defaultsConf, env)
	if err != nil {
		return nil, fmt.Errorf("built-in defaults: %v", err)
	}
	c := &agentConfig{root: root, env: env}

	if dir := firstEnv(env, "CLEARML_CONFIG_PATH", "TRAINS_CONFIG_PATH"); dir != "" {
		if err := c.readConfigDir(expandHomeEnv(dir, env)); err != nil {
			return nil, err
		}
	}

	home := homeDir(env)
	override := configFile
	if override == "" {
		override = firstEnv(env, "CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE")
		if override != "" {
			override = expandHomeEnv(override, env)
		}
	}
	var files []string
	if override != "" {
		files = []string{override}
		c.location = override
	} else {
		files = []string{filepath.Join(home, "trains.conf"), filepath.Join(home, "clearml.conf")}
		for _, f := range []string{files[1], files[0]} {
			if _, err := os.Stat(f); err == nil {
				c.location = f
				break
			}
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if os.IsNotExist(err) && override == "" {
				continue
			}
			return nil, &configError{fmt.Sprintf("could not open configuration file %s: %v (check --config-file or CLEARML_CONFIG_FILE)", f, unwrapPathErr(err))}
		}
		obj, err := parseHOCON(f, data, env)
		if err != nil {
			return nil, &configError{fmt.Sprintf("malformed configuration: %v (fix the file, or point --config-file elsewhere)", err)}
		}
		c.root.Merge(obj)
	}

	if err := c.applyAgentEnvOverrides(); err != nil {
		return nil, err
	}
	c.applySpecificEnv()
	c.fillRuntimeDefaults(home)
	return c, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// readConfigDir reads <dir>/default/*.conf (and <dir>/<TRAINS_ENV>/*.conf),
// each file under a key named after it, as the reference's config folders.
func (c *agentConfig) readConfigDir(dir string) error {
	envName, _ := c.env("TRAINS_ENV")
	if envName == "" {
		envName = "default"
	}
	subdirs := []string{"default"}
	if envName != "default" {
		subdirs = append(subdirs, envName)
	}
	for _, sub := range subdirs {
		matches, _ := filepath.Glob(filepath.Join(dir, sub, "*.conf"))
		sort.Strings(matches)
		for _, m := range matches {
			obj, err := parseHOCONFile(m, c.env)
			if err != nil {
				return &configError{fmt.Sprintf("malformed configuration: %v", err)}
			}
			key := strings.TrimSuffix(filepath.Base(m), ".conf")
			layer := newHOCONObject()
			layer.Set(key, obj)
			c.root.Merge(layer)
		}
	}
	return nil
}

// applyAgentEnvOverrides applies CLEARML_AGENT__SECTION__KEY=value, parsed as
// HOCON "section.key: value", in sorted variable order.
func (c *agentConfig) applyAgentEnvOverrides() error {
	const prefix = "CLEARML_AGENT__"
	var keys []string
	for _, kv := range environ(c.env) {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, prefix) && len(k) > len(prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, _ := c.env(k)
		path := strings.ToLower(strings.ReplaceAll(k[len(prefix):], "__", "."))
		obj, err := parseHOCON("environment variable "+k, []byte(path+": "+v), c.env)
		if err != nil {
			return &configError{fmt.Sprintf("cannot parse environment variable %s: %v (quote the value, e.g. %s='\"...\"')", k, err, k)}
		}
		c.root.Merge(obj)
	}
	return nil
}

// environ lists the environment. Tests that inject an envLookup also
// provide the list through the special key "\x00environ".
func environ(env envLookup) []string {
	if s, ok := env("\x00environ"); ok {
		return strings.Split(s, "\x00")
	}
	return os.Environ()
}

// specificEnv maps environment variables (first non-empty wins) to keys.
var specificEnv = []struct {
	path  string
	names []string
}{
	{"api.api_server", []string{"CLEARML_API_HOST", "TRAINS_API_HOST"}},
	{"api.web_server", []string{"CLEARML_WEB_HOST", "TRAINS_WEB_HOST"}},
	{"api.files_server", []string{"CLEARML_FILES_HOST", "TRAINS_FILES_HOST"}},
	{"api.credentials.access_key", []string{"CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY"}},
	{"api.credentials.secret_key", []string{"CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY"}},
	{"agent.worker_name", []string{"CLEARML_WORKER_NAME", "TRAINS_WORKER_NAME"}},
	{"agent.worker_id", []string{"CLEARML_WORKER_ID", "TRAINS_WORKER_ID"}},
	{"agent.cuda_version", []string{"CLEARML_CUDA_VERSION", "TRAINS_CUDA_VERSION", "CUDA_VERSION"}},
	{"agent.cudnn_version", []string{"CLEARML_CUDNN_VERSION", "TRAINS_CUDNN_VERSION", "CUDNN_VERSION"}},
	{"agent.metrics.address", []string{"CLEARML_AGENT_METRICS_ADDRESS"}},
	{"sdk.aws.s3.key", []string{"AWS_ACCESS_KEY_ID"}},
	{"sdk.aws.s3.secret", []string{"AWS_SECRET_ACCESS_KEY"}},
	{"sdk.aws.s3.region", []string{"AWS_DEFAULT_REGION"}},
	{"sdk.google.storage.credentials_json", []string{"GOOGLE_APPLICATION_CREDENTIALS"}},
}

// specificBoolEnv are boolean overrides.
var specificBoolEnv = []struct {
	path  string
	names []string
}{
	{"api.verify_certificate", []string{"CLEARML_API_HOST_VERIFY_CERT", "TRAINS_API_HOST_VERIFY_CERT"}},
	{"agent.crash_on_exception", []string{"CLEAMRL_AGENT_CRASH_ON_EXCEPTION", "CLEARML_AGENT_CRASH_ON_EXCEPTION"}},
	{"agent.apply_environment", []string{"CLEARML_AGENT_ENABLE_ENV_CONFIG_SECTION"}},
	{"agent.apply_files", []string{"CLEARML_AGENT_ENABLE_FILES_CONFIG_SECTION"}},
	{"agent.cpu_only", []string{"CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY"}},
}

func (c *agentConfig) applySpecificEnv() {
	// The session host comes from api_server; fill api.host the same way.
	if _, ok := c.lookup("api.host"); !ok {
		if v, ok := c.lookup("api.api_server"); ok {
			c.set("api.host", v)
		}
	}
	for _, e := range specificEnv {
		if v := firstEnv(c.env, e.names...); v != "" {
			c.set(e.path, v)
			if e.path == "api.api_server" {
				c.set("api.host", v)
			}
		}
	}
	for _, e := range specificBoolEnv {
		if v := firstEnv(c.env, e.names...); v != "" {
			if b, ok := parseBoolText(v); ok {
				c.set(e.path, b)
			}
		}
	}
	if v := firstEnv(c.env, "CLEARML_API_DEFAULT_REQ_METHOD"); v != "" {
		c.set("api.http.default_method", v)
	}
	acct, key := firstEnv(c.env, "AZURE_STORAGE_ACCOUNT"), firstEnv(c.env, "AZURE_STORAGE_KEY")
	if acct != "" && key != "" {
		entry := newHOCONObject()
		entry.Set("account_name", acct)
		entry.Set("account_key", key)
		list, _ := c.lookup("sdk.azure.storage.containers")
		l, _ := list.([]any)
		c.set("sdk.azure.storage.containers", append(append([]any{}, l...), entry))
	}
}

// cacheDirKeys are folders the reference expands to absolute paths at start.
var cacheDirKeys = []string{
	"agent.venvs_dir", "agent.vcs_cache.path", "agent.pip_download_cache.path",
	"agent.docker_pip_cache", "agent.docker_apt_cache", "agent.venvs_cache.path",
	"sdk.storage.cache.default_base_dir",
}

func (c *agentConfig) fillRuntimeDefaults(home string) {
	if c.str("agent.worker_name") == "" {
		if h, err := os.Hostname(); err == nil {
			c.set("agent.worker_name", h)
		}
	}
	for _, k := range cacheDirKeys {
		if v := c.str(k); v != "" {
			p := v
			if p == "~" || strings.HasPrefix(p, "~/") {
				p = filepath.Join(home, p[1:])
			}
			if abs, err := filepath.Abs(p); err == nil {
				c.set(k, abs)
			}
		}
	}
}

func (c *agentConfig) lookup(path string) (any, bool) {
	parts, err := splitHOCONPath(path)
	if err != nil {
		return nil, false
	}
	return c.root.Lookup(parts...)
}

func (c *agentConfig) set(path string, v any) {
	parts, err := splitHOCONPath(path)
	if err != nil {
		return
	}
	c.root.SetPath(v, parts...)
}

// str returns a scalar as text ("" when unset or null).
func (c *agentConfig) str(path string) string {
	v, ok := c.lookup(path)
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case bool, int64, float64:
		return scalarText(x)
	}
	return ""
}

func (c *agentConfig) boolean(path string, def bool) bool {
	v, ok := c.lookup(path)
	if !ok || v == nil {
		return def
	}
	switch x := v.(type) {
	case bool:
		return x
	case string:
		if b, ok := parseBoolText(x); ok {
			return b
		}
	case int64:
		return x != 0
	}
	return def
}

func (c *agentConfig) float(path string, def float64) float64 {
	v, ok := c.lookup(path)
	if !ok {
		return def
	}
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
			return f
		}
	}
	return def
}

// strings returns a list of scalars (a single string counts as one item).
func (c *agentConfig) strList(path string) []string {
	v, ok := c.lookup(path)
	if !ok {
		return nil
	}
	switch x := v.(type) {
	case []any:
		var out []string
		for _, e := range x {
			if e != nil {
				out = append(out, scalarText(e))
			}
		}
		return out
	case string:
		return []string{x}
	}
	return nil
}

// scalarText renders a scalar the way the reference (Python str) does.
func scalarText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return pyFloat(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// pyFloat formats like Python's repr of a float: 2.0, 0.0001, 1e-05, 1e+16.
func pyFloat(f float64) string {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs == 0 || (abs >= 1e-4 && abs < 1e16) {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.ContainsAny(s, ".") {
			s += ".0"
		}
		return s
	}
	return strconv.FormatFloat(f, 'e', -1, 64)
}

func parseBoolText(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "y", "on":
		return true, true
	case "0", "false", "no", "n", "off":
		return false, true
	}
	return false, false
}

// firstEnv returns the first non-empty (stripped) value among names.
func firstEnv(env envLookup, names ...string) string {
	for _, n := range names {
		if v, ok := env(n); ok {
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	return ""
}

func homeDir(env envLookup) string {
	if h, ok := env("HOME"); ok && h != "" {
		return h
	}
	h, _ := os.UserHomeDir()
	return h
}

func expandHome(p string) string {
	return expandHomeEnv(p, os.LookupEnv)
}

func expandHomeEnv(p string, env envLookup) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		return filepath.Join(homeDir(env), p[1:])
	}
	return p
}

// applyConfigFiles writes the config's top-level files {} section, as the
// reference does at start (unless agent.apply_files is false): each entry
// has path, contents, format (string|base64), target_format
// (string|json|yaml|bytes), overwrite (default true) and mode (octal).
func applyConfigFiles(c *agentConfig, log io.Writer) {
	if !c.boolean("agent.apply_files", true) {
		return
	}
	sec, ok := c.lookup("files")
	files, isObj := sec.(*hoconObject)
	if !ok || !isObj || len(files.Keys()) == 0 {
		return
	}
	fmt.Fprintln(log, "Creating files from configuration")
	for _, key := range files.Keys() {
		v, _ := files.Get(key)
		entry, ok := v.(*hoconObject)
		if !ok {
			continue
		}
		get := func(k string) any { x, _ := entry.Get(k); return x }
		text := func(k, def string) string {
			if x := get(k); x != nil {
				return scalarText(x)
			}
			return def
		}
		path := expandHomeEnv(os.Expand(text("path", ""), func(k string) string { v, _ := c.env(k); return v }), c.env)
		if path == "" {
			fmt.Fprintf(log, "Skipped [%s]: no path\n", key)
			continue
		}
		if st, err := os.Stat(path); err == nil {
			if st.IsDir() {
				fmt.Fprintf(log, "Skipped [%s]: is a directory %s\n", key, path)
				continue
			}
			if ow, ok := get("overwrite").(bool); ok && !ow {
				fmt.Fprintf(log, "Skipped [%s]: file exists %s\n", key, path)
				continue
			}
		}
		data, err := configFileData(get("contents"), text("format", "string"), text("target_format", "string"))
		if err != nil {
			fmt.Fprintf(log, "Skipped [%s]: %v\n", key, err)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintf(log, "Skipped [%s]: failed creating path %s (%v)\n", key, filepath.Dir(path), err)
			continue
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			fmt.Fprintf(log, "Skipped [%s]: failed saving file %s (%v)\n", key, path, err)
			continue
		}
		fmt.Fprintf(log, "Saved [%s]: %s\n", key, path)
		if m := text("mode", ""); m != "" {
			mode, err := parseOctalMode(m)
			if err == nil {
				err = os.Chmod(path, os.FileMode(mode))
			}
			if err != nil {
				fmt.Fprintf(log, "Skipped [%s]: failed setting mode %s for %s (%v)\n", key, m, path, err)
			}
		}
	}
}

// parseOctalMode reads a files {} mode as Python's int(mode, 8) does:
// "644", "0644", "0o777" or "0O777".
func parseOctalMode(m string) (uint64, error) {
	m = strings.TrimSpace(m)
	if len(m) > 2 && m[0] == '0' && (m[1] == 'o' || m[1] == 'O') {
		m = m[2:]
	}
	return strconv.ParseUint(m, 8, 32)
}

// configFileData is the bytes of one files {} entry.
func configFileData(contents any, format, target string) ([]byte, error) {
	switch {
	case format == "base64":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(scalarText(contents)))
		if err != nil {
			return nil, fmt.Errorf("failed decoding base64 (%v)", err)
		}
		return raw, nil
	case target == "json":
		b, err := json.MarshalIndent(hoconToPlain(contents), "", "  ")
		if err != nil {
			return nil, fmt.Errorf("failed encoding to json (%v)", err)
		}
		return b, nil
	case target == "yaml" || target == "yml":
		return []byte(dumpYAML(hoconToPlain(contents))), nil
	case contents == nil:
		return nil, nil
	}
	if o, ok := contents.(*hoconObject); ok {
		b, _ := json.Marshal(hoconToPlain(o))
		return b, nil
	}
	return []byte(scalarText(contents)), nil
}

// hoconToPlain converts parsed HOCON into maps and slices for encoding/json.
func hoconToPlain(v any) any {
	switch x := v.(type) {
	case *hoconObject:
		m := make(map[string]any, len(x.Keys()))
		for _, k := range x.Keys() {
			child, _ := x.Get(k)
			m[k] = hoconToPlain(child)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = hoconToPlain(e)
		}
		return out
	}
	return v
}

// tempDirFor is where the agent keeps its temp files.
func tempDirFor(cfg *agentConfig) string {
	if d := firstEnv(cfg.env, "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR"); d != "" {
		return d
	}
	return os.TempDir()
}
