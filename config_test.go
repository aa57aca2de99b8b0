package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigPrecedence(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "trains.conf"), `
agent { worker_name: from-trains, git_user: legacy-user }
api.web_server: "http://trains-web"
`)
	writeFile(t, filepath.Join(home, "clearml.conf"), `
api { api_server: "http://file-host:8008", credentials { access_key: FILEKEY, secret_key: filesecret } }
agent { worker_name: from-file, package_manager.type: uv, foo { bar: 1 } }
`)
	tests := []struct {
		name string
		env  map[string]string
		key  string
		want string
	}{
		{"file value", nil, "api.api_server", "http://file-host:8008"},
		{"clearml.conf wins over trains.conf", nil, "agent.worker_name", "from-file"},
		{"trains.conf still merged", nil, "agent.git_user", "legacy-user"},
		{"trains.conf only key", nil, "api.web_server", "http://trains-web"},
		{"defaults under the file", nil, "agent.venvs_cache.max_entries", "10"},
		{"api.host follows api_server", nil, "api.host", "http://file-host:8008"},
		{"CLEARML_AGENT__ beats file", map[string]string{"CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE": "pip"}, "agent.package_manager.type", "pip"},
		{"CLEARML_AGENT__ creates keys", map[string]string{"CLEARML_AGENT__AGENT__FOO__BAZ": "42"}, "agent.foo.baz", "42"},
		{"CLEARML_AGENT__ merges deeply", map[string]string{"CLEARML_AGENT__AGENT__FOO__BAZ": "42"}, "agent.foo.bar", "1"},
		{"specific env beats CLEARML_AGENT__", map[string]string{
			"CLEARML_AGENT__AGENT__WORKER_NAME": "from-agent-env", "CLEARML_WORKER_NAME": "from-specific"}, "agent.worker_name", "from-specific"},
		{"CLEARML_AGENT__ beats file (worker name)", map[string]string{"CLEARML_AGENT__AGENT__WORKER_NAME": "from-agent-env"}, "agent.worker_name", "from-agent-env"},
		{"CLEARML_API_HOST", map[string]string{"CLEARML_API_HOST": "http://env-host:8008"}, "api.api_server", "http://env-host:8008"},
		{"CLEARML_API_HOST sets api.host", map[string]string{"CLEARML_API_HOST": "http://env-host:8008"}, "api.host", "http://env-host:8008"},
		{"TRAINS_ twin", map[string]string{"TRAINS_API_HOST": "http://legacy:8008"}, "api.api_server", "http://legacy:8008"},
		{"CLEARML_ beats TRAINS_", map[string]string{"TRAINS_API_HOST": "http://legacy", "CLEARML_API_HOST": "http://new"}, "api.api_server", "http://new"},
		{"empty env ignored", map[string]string{"CLEARML_API_HOST": "  "}, "api.api_server", "http://file-host:8008"},
		{"env keys", map[string]string{"CLEARML_API_ACCESS_KEY": "ENVKEY"}, "api.credentials.access_key", "ENVKEY"},
		{"env secret", map[string]string{"CLEARML_API_SECRET_KEY": "envsecret"}, "api.credentials.secret_key", "envsecret"},
		{"worker id", map[string]string{"CLEARML_WORKER_ID": "box:gpu9"}, "agent.worker_id", "box:gpu9"},
		{"cuda version fallback", map[string]string{"CUDA_VERSION": "12.4"}, "agent.cuda_version", "12.4"},
		{"verify cert", map[string]string{"CLEARML_API_HOST_VERIFY_CERT": "0"}, "api.verify_certificate", "false"},
		{"aws secret", map[string]string{"AWS_SECRET_ACCESS_KEY": "awss"}, "sdk.aws.s3.secret", "awss"},
		{"cache dirs absolute", nil, "agent.venvs_dir", filepath.Join(home, ".clearml/venvs-builds")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"HOME": home}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg, err := loadConfig("", mapEnv(env))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.str(tt.key); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.key, got, tt.want)
			}
			if cfg.location != filepath.Join(home, "clearml.conf") {
				t.Errorf("location = %q", cfg.location)
			}
		})
	}
}

func TestConfigFileOverrideReadsOnlyThatFile(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "clearml.conf"), `agent.git_user: home`)
	other := writeFile(t, filepath.Join(t.TempDir(), "other.conf"), `agent.worker_name: other`)
	for _, env := range []map[string]string{
		{"HOME": home, "CLEARML_CONFIG_FILE": other},
		{"HOME": home, "TRAINS_CONFIG_FILE": other},
	} {
		cfg, err := loadConfig("", mapEnv(env))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.str("agent.git_user") != "" || cfg.str("agent.worker_name") != "other" || cfg.location != other {
			t.Errorf("env %v: git_user=%q worker_name=%q location=%q", env, cfg.str("agent.git_user"), cfg.str("agent.worker_name"), cfg.location)
		}
	}
	// --config-file wins over CLEARML_CONFIG_FILE.
	third := writeFile(t, filepath.Join(t.TempDir(), "third.conf"), `agent.worker_name: third`)
	cfg, err := loadConfig(third, mapEnv(map[string]string{"HOME": home, "CLEARML_CONFIG_FILE": other}))
	if err != nil || cfg.str("agent.worker_name") != "third" {
		t.Errorf("--config-file: %v %q", err, cfg.str("agent.worker_name"))
	}
}

func TestConfigNoFile(t *testing.T) {
	cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.location != "" || cfg.str("agent.package_manager.type") != "pip" {
		t.Errorf("location=%q type=%q", cfg.location, cfg.str("agent.package_manager.type"))
	}
}

func TestConfigErrors(t *testing.T) {
	home := t.TempDir()
	bad := writeFile(t, filepath.Join(home, "clearml.conf"), "api {\n  api_server: \"http://x\n}\n")
	_, err := loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err == nil || !strings.Contains(err.Error(), bad+":2:") || strings.Contains(err.Error(), "\n") {
		t.Errorf("malformed config error = %v; want one line naming %s:2:col", err, bad)
	}
	_, err = loadConfig(filepath.Join(home, "nope.conf"), mapEnv(map[string]string{"HOME": home}))
	if err == nil || !strings.Contains(err.Error(), "nope.conf") {
		t.Errorf("missing file error = %v", err)
	}
	os.Remove(bad)
	_, err = loadConfig("", mapEnv(map[string]string{"HOME": home, "CLEARML_AGENT__AGENT__X": "{"}))
	if err == nil || !strings.Contains(err.Error(), "CLEARML_AGENT__AGENT__X") {
		t.Errorf("bad env override error = %v", err)
	}
}

func TestApplyConfigFiles(t *testing.T) {
	home := t.TempDir()
	existing := writeFile(t, filepath.Join(home, "keep.txt"), "old")
	writeFile(t, filepath.Join(home, "clearml.conf"), `
files {
  pip: { path: "~/.config/pip/pip.conf", contents: """[global]
index-url = https://mirror/simple""", mode: "0600" }
  blob: { path: "$HOME/blob.bin", contents: "aGVsbG8=", format: base64, target_format: bytes }
  js: { path: "~/out/x.json", contents { a: 1, b: [true, "x"] }, target_format: json }
  keep: { path: "~/keep.txt", contents: "new", overwrite: false }
}
`)
	cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	applyConfigFiles(cfg, &log)
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(home, p)); return string(b) }
	if got := read(".config/pip/pip.conf"); got != "[global]\nindex-url = https://mirror/simple" {
		t.Errorf("pip.conf = %q", got)
	}
	if st, err := os.Stat(filepath.Join(home, ".config/pip/pip.conf")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("pip.conf mode: %v %v", st, err)
	}
	if got := read("blob.bin"); got != "hello" {
		t.Errorf("blob = %q", got)
	}
	var js map[string]any
	if err := json.Unmarshal([]byte(read("out/x.json")), &js); err != nil || js["a"] != float64(1) {
		t.Errorf("x.json = %q (%v)", read("out/x.json"), err)
	}
	if got, _ := os.ReadFile(existing); string(got) != "old" || !strings.Contains(log.String(), "Skipped [keep]: file exists") {
		t.Errorf("overwrite: false not honoured: %q\n%s", got, log.String())
	}
	// agent.apply_files: false writes nothing.
	home2 := t.TempDir()
	writeFile(t, filepath.Join(home2, "clearml.conf"), "agent.apply_files: false\nfiles { a: { path: \"~/a\", contents: x } }\n")
	cfg, _ = loadConfig("", mapEnv(map[string]string{"HOME": home2}))
	applyConfigFiles(cfg, &log)
	if _, err := os.Stat(filepath.Join(home2, "a")); err == nil {
		t.Error("files written with agent.apply_files false")
	}
}

// The reference's full sample config parses and keeps its values.
func TestSampleConfigLoads(t *testing.T) {
	sample := filepath.Join("..", "shared", "fixtures", "clearml.conf")
	if _, err := os.Stat(sample); err != nil {
		t.Skip("the reference sample config is not at ../shared/fixtures/clearml.conf")
	}
	cfg, err := loadConfig(sample, mapEnv(map[string]string{"HOME": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"api.api_server":             "https://demoapi.demo.clear.ml",
		"api.credentials.access_key": "EGRTCO8JMSIGI6S39GTP43NFWXDQOW",
		"api.credentials.secret_key": "x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl$PdOyj5wG1&E!Z8",
		"agent.default_docker.image": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04",
		"agent.package_manager.type": "pip",
		"agent.docker_force_pull":    "false",
	} {
		if got := cfg.str(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestConfigPrintout(t *testing.T) {
	home := t.TempDir()
	conf := writeFile(t, filepath.Join(home, "clearml.conf"), `
api {
  api_server: "http://h:8008"
  credentials { "access_key": "AK1234", "secret_key": "S3cr3t!#value" }
}
agent {
  git_user: me
  git_pass: "hunter2-pass"
  enable_git_ask_pass: true
  package_manager.extra_index_url: ["https://user:pw123@pypi.example/simple", "https://plain.example/simple"]
  extra_docker_arguments: ["-e", "CLEARML_API_SECRET_KEY=abcd1234", "-e", "FOO=bar", "--ipc=host"]
  note: "a=b!c#d"
  empty: ""
  ratio: 2.0
  nothing: null
}
environment { MY_TOKEN: tok-value-1, OTHER: plain }
sdk.aws.s3.credentials: [{ bucket: b1, key: k1, secret: s-one }]
`)
	cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeConfigProperties(&b, cfg)
	out := b.String()
	for _, want := range []string{
		"api.api_server = http://h:8008\n",
		"api.credentials.access_key = AK1234\n",
		"api.credentials.secret_key = ****\n",
		"api.auth.token_expiration_threshold_sec = 43200\n", // a duration, not a secret (issue 12)
		"agent.git_pass = ****\n",
		"agent.enable_git_ask_pass = true\n",
		"agent.sanitize_config_printout = ****\n",
		"agent.package_manager.extra_index_url.0 = https://user:********@pypi.example/simple\n",
		"agent.package_manager.extra_index_url.1 = https://plain.example/simple\n",
		"agent.extra_docker_arguments.1 = CLEARML_API_SECRET_KEY\\=********\n",
		"agent.extra_docker_arguments.3 = FOO\\=bar\n",
		"agent.note = a\\=b\\!c\\#d\n",
		"agent.empty = \n",
		"agent.ratio = 2.0\n",
		"agent.venvs_cache.max_entries = 10\n",
		"environment.MY_TOKEN = ****\n",
		"environment.OTHER = ****\n",
		"sdk.aws.s3.credentials.0.bucket = b1\n",
		"sdk.aws.s3.credentials.0.secret = ****\n",
	} {
		if !strings.Contains(out+"\n", want) {
			t.Errorf("printout lacks %q", want)
		}
	}
	for _, secret := range []string{"S3cr3t", "hunter2", "pw123", "abcd1234", "tok-value-1", "s-one"} {
		if strings.Contains(out, secret) {
			t.Errorf("printout leaks %q", secret)
		}
	}
	if strings.Contains(out, "agent.nothing") {
		t.Error("null leaves must be omitted")
	}
	_ = conf
}

// files {} modes in Python's octal spellings, "0o777" included.
func TestConfigFilesModeSpellings(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "clearml.conf"), `
files {
  a: { path: "~/a.sh", contents: "x", mode: "0o755" }
  b: { path: "~/b.txt", contents: "x", mode: "0O640" }
  c: { path: "~/c.txt", contents: "x", mode: 600 }
  d: { path: "~/d.txt", contents: "x", mode: " 0604 " }
}
`)
	cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	applyConfigFiles(cfg, &log)
	for name, want := range map[string]os.FileMode{"a.sh": 0o755, "b.txt": 0o640, "c.txt": 0o600, "d.txt": 0o604} {
		st, err := os.Stat(filepath.Join(home, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v\n%s", name, st.Mode().Perm(), err, want, log.String())
		}
	}
	if strings.Contains(log.String(), "failed setting mode") {
		t.Errorf("a mode was refused:\n%s", log.String())
	}
}

// CLEARML_CPU_ONLY (and its twins) is agent.cpu_only, as in the reference.
func TestConfigCPUOnlyVariables(t *testing.T) {
	for _, name := range []string{"CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY"} {
		cfg, err := loadConfig("", mapEnv(map[string]string{"HOME": t.TempDir(), name: "1"}))
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.boolean("agent.cpu_only", false) {
			t.Errorf("%s=1 does not set agent.cpu_only", name)
		}
	}
	cfg, _ := loadConfig("", mapEnv(map[string]string{"HOME": t.TempDir()}))
	if cfg.boolean("agent.cpu_only", false) {
		t.Error("agent.cpu_only is on by default")
	}
}
