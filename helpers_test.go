package main

// Test helpers shared by the package's tests: one locked buffer, one
// environment (and the stand-in server's variables), one configuration
// builder, one git runner, one file writer.

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// lockedBuffer collects output that one goroutine writes while another
// reads it (a daemon's output, a shipper's local copy, a copier's).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mapEnv is an environment for tests: m is all of it, the list that
// environ reads included.
func mapEnv(m map[string]string) envLookup {
	return func(k string) (string, bool) {
		if k == "\x00environ" {
			var kv []string
			for k, v := range m {
				kv = append(kv, k+"="+v)
			}
			return strings.Join(kv, "\x00"), true
		}
		v, ok := m[k]
		return v, ok
	}
}

// serverEnv is the environment that points the agent at the stand-in
// server s, with its keys.
func serverEnv(s *fakeserver.Server) map[string]string { return serverEnvAt(s.URL()) }

// serverEnvAt is serverEnv for a server at host.
func serverEnvAt(host string) map[string]string {
	return map[string]string{
		"CLEARML_API_HOST":       host,
		"CLEARML_API_ACCESS_KEY": fakeserver.TestsAccessKey,
		"CLEARML_API_SECRET_KEY": fakeserver.TestsSecretKey,
	}
}

// writeFile writes content to path (0600), making its folders.
func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testConfig loads conf ("" for none) as the configuration file, with env
// as the whole environment and HOME at a temp dir unless env sets it.
func testConfig(t testing.TB, conf string, env map[string]string) *agentConfig {
	t.Helper()
	e := map[string]string{"HOME": t.TempDir()}
	maps.Copy(e, env)
	file := ""
	if conf != "" {
		file = writeFile(t, filepath.Join(t.TempDir(), "clearml.conf"), conf)
	}
	cfg, err := loadConfig(file, mapEnv(e))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runGit runs git in dir and returns its trimmed output. env is the whole
// environment (see gitTestEnv); nil means this one with a private, empty
// configuration and the identity and settings a test repository needs.
func runGit(t testing.TB, env []string, dir string, args ...string) string {
	t.Helper()
	if env == nil {
		args = append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always"}, args...)
		env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	}
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// stopTask aborts a task as the UI's Abort does: tasks.stop on the stand-in.
func stopTask(t testing.TB, s *fakeserver.Server, id string) {
	t.Helper()
	if err := testClient(t, s.URL(), nil, clientOptions{}).call(context.Background(), "tasks.stop", "2.5", map[string]any{"task": id}, nil); err != nil {
		t.Fatal(err)
	}
}
