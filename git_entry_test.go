package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestGitNormalizeExec(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "HOME" {
			return "/home/u", true
		}
		return "", false
	}
	for _, tc := range []struct{ entry, wd, wantEntry, wantWd string }{ // §9.7
		{"./train.py", ".", "train.py", "."},
		{"src/../train.py", "sub/", "train.py", "sub"},
		{"-m pkg.mod --x ./a/../b", "", "-m pkg.mod --x ./b", ""},
		{"train.py:src", "", "train.py", "src"},
		{"~/x.py", "$HOME/w", "/home/u/x.py", "/home/u/w"},
		{" train.py ", "${NOPE}/w", "train.py", "${NOPE}/w"},
	} {
		e, w := gitNormalizeExec(tc.entry, tc.wd, env)
		if e != tc.wantEntry || w != tc.wantWd {
			t.Errorf("gitNormalizeExec(%q, %q) = %q, %q; want %q, %q", tc.entry, tc.wd, e, w, tc.wantEntry, tc.wantWd)
		}
	}
}

func TestGitResolveEntry(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "src"), 0o755)
	os.WriteFile(filepath.Join(root, "src", "train.py"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "my script.py"), nil, 0o644)
	env := func(k string) (string, bool) {
		switch k {
		case "HOME":
			return "/home/u", true
		case "EPOCHS":
			return "3", true
		}
		return "", false
	}
	for _, tc := range []struct {
		entry, wd string
		dir       string
		args      []string
		err       string
	}{
		{"train.py", "src", "src", []string{"train.py"}, ""},
		{"train.py:src", "", "src", []string{"train.py"}, ""},
		{"src/train.py", "", ".", []string{"src/train.py"}, ""},
		{"my script.py", ".", ".", []string{"my script.py"}, ""},
		{"train.py --lr 0.1 --name 'a b'", "src", "src", []string{"train.py", "--lr", "0.1", "--name", "a b"}, ""},
		{"-m pkg.mod --epochs $EPOCHS", "", ".", []string{"-m", "pkg.mod", "--epochs", "3"}, ""},
		{"-c print(1)", "", ".", []string{"-c", "print(1)"}, ""},
		// As the reference's os.path.join: absolute and ~ paths win (code in an image).
		{"train.py", "../outside", "../outside", []string{"train.py"}, ""},
		{"train.py", "$HOME/w", "/home/u/w", []string{"train.py"}, ""},
		{"../../etc/x.py", "src", "src", []string{"../../etc/x.py"}, ""},
		{"~/x.py", "", ".", []string{"/home/u/x.py"}, ""},
		{"/opt/app/run.py --fast", "/opt/app", "/opt/app", []string{"/opt/app/run.py", "--fast"}, ""},
		{"", "src", "", nil, "no entry point"},
	} {
		dir, args, err := gitResolveEntry(root, gitSource{entryPoint: tc.entry, workingDir: tc.wd}, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("(%q, %q): err %v, want %q", tc.entry, tc.wd, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("(%q, %q): %v", tc.entry, tc.wd, err)
			continue
		}
		want := tc.dir
		if !filepath.IsAbs(want) {
			want = filepath.Join(root, tc.dir)
		}
		if dir != want || !reflect.DeepEqual(args, tc.args) {
			t.Errorf("(%q, %q) = %q %q, want %q %q", tc.entry, tc.wd, dir, args, want, tc.args)
		}
	}
}

func TestGitShlexSplit(t *testing.T) {
	for in, want := range map[string][]string{
		`a b  c`:             {"a", "b", "c"},
		`a 'b c' "d \"e\""`:  {"a", "b c", `d "e"`},
		`a\ b x"y"z`:         {"a b", "xyz"},
		`'' ""`:              {"", ""},
		`"a\nb" '\n'`:        {`a\nb`, `\n`},
		"  \t":               nil,
		`--name=$HOME/x 'q'`: {"--name=$HOME/x", "q"},
	} {
		got, err := shlexSplit(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("shlexSplit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := shlexSplit(`a "b`); err == nil {
		t.Error("unclosed quote accepted")
	}
}

func TestGitIsLiteralScript(t *testing.T) {
	for d, want := range map[string]bool{
		"":                                 false,
		"diff --git a/x b/x\n":             false,
		"  \nDIFF --git a/x b/x\n":         false,
		"submodule x 1..2:\ndiff --git\n":  false,
		"submodule x 1..2:\nprint(1)\n":    true,
		"print('hello')\n":                 true,
		"#!/bin/bash\necho diff --git x\n": true,
	} {
		if got := gitIsLiteralScript(d); got != want {
			t.Errorf("gitIsLiteralScript(%q) = %v", d, got)
		}
	}
}

func TestGitLiteralScripts(t *testing.T) {
	ctx := context.Background()
	t.Parallel()
	g := newGitCheckout(testConfig(t, "", nil), gitCreds{}, nil)
	script := "print('hello')\n"
	for _, tc := range []struct {
		entry, wd string
		file      string
		entryOut  string
	}{
		{"some/dir/run.py", "", "run.py", "run.py"},
		{"", "", "untitled.py", "untitled.py"},
		{"-m pkg", "", "untitled.py", "-m pkg"},
		{"-c echo", "", "untitled.sh", "-c echo"},
	} {
		dest := t.TempDir()
		res, err := g.run(ctx, gitSource{diff: script, entryPoint: tc.entry, workingDir: tc.wd}, dest)
		if err != nil {
			t.Fatal(err)
		}
		if got := gitReadFile(t, filepath.Join(dest, tc.file)); got != script {
			t.Errorf("%q: %s = %q", tc.entry, tc.file, got)
		}
		if res.root != dest || res.src.entryPoint != tc.entryOut {
			t.Errorf("%q: root %s entry %q", tc.entry, res.root, res.src.entryPoint)
		}
		if tc.entry == "some/dir/run.py" {
			dir, args, err := gitResolveEntry(res.root, res.src, nil)
			if err != nil || dir != dest || !reflect.DeepEqual(args, []string{"run.py"}) {
				t.Errorf("resolve: %s %q %v", dir, args, err)
			}
		}
	}

	// With a repository: written into the working dir, unless the file exists.
	env := gitTestEnv(t, "")
	f := gitMakeFixture(t, env)
	g = &gitCheckout{cfg: testConfig(t, "", nil), cacheDir: t.TempDir(), environ: env}
	res, err := g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "nb.py", workingDir: "space dir"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "space dir", "nb.py")); got != script {
		t.Errorf("nb.py = %q", got)
	}
	res, err = g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "train.py"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := gitReadFile(t, filepath.Join(res.root, "train.py")); got != "print('v2')\n" {
		t.Errorf("existing file replaced: %q", got)
	}
	_, err = g.run(ctx, gitSource{repository: f.origin, diff: script, entryPoint: "x.py", workingDir: "../../escape"}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("escape: %v", err)
	}
}
