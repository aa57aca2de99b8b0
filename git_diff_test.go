package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGitDiffStrip(t *testing.T) {
	for d, want := range map[string]int{
		"diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n":              1,
		"diff --git x.py x.py\n--- x.py\n+++ x.py\n":                      0,
		"diff --git i/x.py w/x.py\n--- i/x.py\n+++ w/x.py\n":              1,
		"diff --git a/n.py a/n.py\nnew file\n--- /dev/null\n+++ a/n.py\n": 0,
		"diff --git a/n.py b/n.py\n--- /dev/null\n+++ b/n.py\n":           1,
		"--- a/b/x.py\t2020\n+++ a/b/x.py\t2021\n":                        0,
	} {
		if got := gitDiffStrip(d); got != want {
			t.Errorf("gitDiffStrip(%q) = %d, want %d", d, got, want)
		}
	}
}

func TestGitApplyDiff(t *testing.T) {
	// The developer who made the diff had diff.noprefix set.
	env := gitTestEnv(t, "[diff]\n\tnoprefix = true\n")
	f := gitMakeFixture(t, env)
	gitWrite(t, filepath.Join(f.work, "src", "model.py"), "a = 1\nb = 20\nc = 3\n")
	gitWrite(t, filepath.Join(f.work, "new.py"), "x = 1\n")
	runGit(t, env, f.work, "add", "-N", "new.py")
	diff := runGit(t, env, f.work, "diff") + "\n"
	if !strings.Contains(diff, "--- src/model.py") {
		t.Fatalf("fixture diff has prefixes:\n%s", diff)
	}
	runGit(t, env, f.work, "checkout", "-q", ".")
	os.Remove(filepath.Join(f.work, "new.py"))

	// The agent's user has a hostile global config too.
	hostile := filepath.Join(t.TempDir(), "gitconfig")
	gitWrite(t, hostile, "[apply]\n\twhitespace = error-all\n[diff]\n\tnoprefix = true\n")
	t.Setenv("GIT_CONFIG_GLOBAL", hostile)

	var log bytes.Buffer
	g := &gitCheckout{cfg: testConfig(t, "", nil), log: &log, cacheDir: t.TempDir(), environ: env}
	res, err := g.run(context.Background(), gitSource{repository: f.origin, diff: diff}, t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if got := gitReadFile(t, filepath.Join(res.root, "src", "model.py")); got != "a = 1\nb = 20\nc = 3\n" {
		t.Errorf("model.py = %q", got)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "new.py")); got != "x = 1\n" {
		t.Errorf("new.py = %q", got)
	}

	// A prefixed diff with trailing whitespace applies despite apply.whitespace=error-all.
	dir := t.TempDir()
	gitWrite(t, filepath.Join(dir, "m.py"), "a = 1\n")
	ws := "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-a = 1\n+a = 2   \n"
	if err := gitApplyDiff(context.Background(), dir, ws, &log); err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(dir, "m.py")); got != "a = 2   \n" {
		t.Errorf("m.py = %q", got)
	}

	// A diff that does not apply names its first failing hunk.
	bad := "diff --git a/src/model.py b/src/model.py\n--- a/src/model.py\n+++ b/src/model.py\n" +
		"@@ -1,3 +1,3 @@\n a = 1\n-b = 999\n+b = 1000\n c = 3\n"
	_, err = g.run(context.Background(), gitSource{repository: f.origin, diff: bad}, t.TempDir())
	if err == nil {
		t.Fatal("bad diff applied")
	}
	for _, want := range []string{"diff:", "@@ -1,3 +1,3 @@", "b = 999", "src/model.py"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") && !strings.HasPrefix(err.Error(), "diff:") {
		t.Errorf("error: %q", err)
	}
}
