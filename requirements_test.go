package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestReqParse(t *testing.T) {
	for _, c := range []struct {
		line                         string
		kind                         reqKind
		name, extras, spec, marker   string
		loc, option, value, asString string
	}{
		{line: "", kind: reqSkip},
		{line: "   # just a comment", kind: reqSkip},
		{line: "numpy", kind: reqName, name: "numpy", asString: "numpy"},
		{line: "Numpy_Foo.bar >= 1.0 , < 2 # pinned", kind: reqName, name: "numpy-foo-bar", spec: ">=1.0,<2", asString: "numpy-foo-bar>=1.0,<2"},
		{line: "torch==2.1.0+cu118", kind: reqName, name: "torch", spec: "==2.1.0+cu118"},
		{line: "requests[socks, security]>=2 ; python_version < '3.12'", kind: reqName, name: "requests", extras: "[socks,security]", spec: ">=2", marker: "python_version < '3.12'",
			asString: "requests[socks,security]>=2 ; python_version < '3.12'"},
		{line: "pkg (>=1.0)", kind: reqName, name: "pkg", spec: ">=1.0"},
		{line: "pkg==1.0 --hash=sha256:abc --global-option=--x", kind: reqName, name: "pkg", spec: "==1.0", asString: "pkg==1.0 --hash=sha256:abc"},
		{line: "pkg#notacomment", kind: reqInvalid, name: "pkg"},
		{line: "numpy=1.0", kind: reqInvalid, name: "numpy"},
		{line: "clearml @ file:///tmp/build/clearml-1.0-py3-none-any.whl", kind: reqNameURL, name: "clearml", loc: "file:///tmp/build/clearml-1.0-py3-none-any.whl"},
		{line: "foo @ https://h/foo-1.0.tar.gz ; sys_platform == 'linux'", kind: reqNameURL, name: "foo", loc: "https://h/foo-1.0.tar.gz", marker: "sys_platform == 'linux'"},
		{line: "foo @ git+https://github.com/o/foo.git@v1", kind: reqVCS, name: "foo", loc: "git+https://github.com/o/foo.git@v1"},
		{line: "git+https://github.com/o/foo.git#egg=Foo_Bar", kind: reqVCS, name: "foo-bar", loc: "git+https://github.com/o/foo.git#egg=Foo_Bar"},
		{line: "git://github.com/o/foo.git", kind: reqVCS, loc: "git://github.com/o/foo.git"},
		{line: "https://download.pytorch.org/whl/cu118/torch-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl", kind: reqURL, name: "torch"},
		{line: "./libs/mypkg", kind: reqPath, loc: "./libs/mypkg"},
		{line: "/opt/wheels/x_y-1.0-py3-none-any.whl", kind: reqPath, name: "x-y", loc: "/opt/wheels/x_y-1.0-py3-none-any.whl"},
		{line: "x_y-1.0-py3-none-any.whl", kind: reqPath, name: "x-y"},
		{line: "file:///srv/pkgs/demo-2.0.tar.gz", kind: reqPath, name: "demo"},
		{line: "-e .", kind: reqEditable, loc: "."},
		{line: "--editable=git+https://h/r.git#egg=r", kind: reqEditable, name: "r", loc: "git+https://h/r.git#egg=r"},
		{line: "-e/abs/path", kind: reqEditable, loc: "/abs/path"},
		{line: "-r /etc/shadow", kind: reqOption, option: "--requirement", value: "/etc/shadow"},
		{line: "-r/etc/shadow", kind: reqOption, option: "--requirement", value: "/etc/shadow"},
		{line: "--requirement=base.txt", kind: reqOption, option: "--requirement", value: "base.txt"},
		{line: "-c constraints.txt", kind: reqOption, option: "--constraint", value: "constraints.txt"},
		{line: "-i http://evil/simple", kind: reqOption, option: "--index-url", value: "http://evil/simple"},
		{line: "--index-url http://evil/simple", kind: reqOption, option: "--index-url", value: "http://evil/simple"},
		{line: "--ind http://evil/simple", kind: reqOption, option: "--index-url", value: "http://evil/simple"},
		{line: "--extra-index-url=https://u:tok@h/simple", kind: reqOption, option: "--extra-index-url", value: "https://u:tok@h/simple"},
		{line: "-f /wheels", kind: reqOption, option: "--find-links", value: "/wheels"},
		{line: "--trusted-host h", kind: reqOption, option: "--trusted-host", value: "h"},
		{line: "--pre", kind: reqOption, option: "--pre"},
		{line: "--no-index", kind: reqOption, option: "--no-index"},
		{line: "--weird-thing x", kind: reqOption, option: "--weird-thing", value: "x"},
		{line: "-Z", kind: reqOption, option: "--always-unzip"},
	} {
		r := reqParse(c.line)
		if r.Kind != c.kind || r.Name != c.name && c.name != "" || r.Extras != c.extras || (c.spec != "" && r.Spec != c.spec) ||
			r.Marker != c.marker || (c.loc != "" && r.Loc != c.loc) || r.Option != c.option || r.Value != c.value {
			t.Errorf("reqParse(%q) = %s name=%q extras=%q spec=%q marker=%q loc=%q option=%q value=%q", c.line, r.Kind, r.Name, r.Extras, r.Spec, r.Marker, r.Loc, r.Option, r.Value)
		}
		if c.asString != "" && r.String() != c.asString {
			t.Errorf("reqParse(%q).String() = %q, want %q", c.line, r.String(), c.asString)
		}
	}
}

func TestReqLocalPath(t *testing.T) {
	for line, want := range map[string]string{
		"-e .":                               ".",
		"-e git+file:///src/repo@main#egg=r": "/src/repo",
		"git+file:///src/repo":               "/src/repo",
		"-e git+https://h/r.git":             "",
		"demo @ file:///tmp/a%20b/demo.whl":  "/tmp/a b/demo.whl",
		"demo @ file://localhost/tmp/d.whl":  "/tmp/d.whl",
		"demo @ https://h/demo.whl":          "",
		"file:///srv/x.tar.gz":               "/srv/x.tar.gz",
		"./pkg":                              "./pkg",
		"numpy":                              "",
	} {
		if got := reqParse(line).localPath(); got != want {
			t.Errorf("localPath(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestReqPlanOrder(t *testing.T) {
	lines := []string{
		"# from the SDK",
		"horovod==0.28",
		"numpy==1.26.4",
		"clearml==1.14",
		"pandas>=2",
		"PyGObject==3.42",
		"torch==2.1.0+cu118",
		"Cython==3.0.0",
		"ipython",
		"clearml>=1.16 ; python_version >= '3.8'",
		"git+https://github.com/o/lib.git@v2#egg=lib",
		"-e git+https://github.com/o/edit.git#egg=edit",
		"requests",
	}
	plan := reqPlan(lines, reqPolicy{Checkout: "/work/repo", Torch: true})
	want := reqInstallPlan{
		Priority: []reqStep{
			{Line: "numpy==1.26.4", Name: "numpy"},
			{Line: "pygobject==3.42", Name: "pygobject", Optional: true},
			{Line: "cython==3.0.0", Name: "cython"},
		},
		Main: []string{"numpy==1.26.4", "pandas>=2", "torch==2.1.0+cu118", "cython==3.0.0", "requests",
			"clearml>=1.16 ; python_version >= '3.8'", "ipython"},
		Post: []reqStep{{Line: "horovod==0.28", Name: "horovod"}},
		External: []reqStep{
			{Line: "git+https://github.com/o/lib.git@v2#egg=lib", Name: "lib"},
			{Line: "git+https://github.com/o/edit.git#egg=edit", Name: "edit"},
		},
	}
	if !reflect.DeepEqual(plan, want) {
		t.Errorf("plan:\n got %+v\nwant %+v", plan, want)
	}

	// Configured lists replace the defaults; optional post packages; torch
	// is an ordinary package when pytorch_resolve is none.
	plan = reqPlan([]string{"torch==2.1.0", "numpy", "horovod", "deepspeed", "pygobject"}, reqPolicy{
		Priority: []string{"Torch"}, PriorityOptional: []string{}, Post: []string{"deepspeed"}, PostOptional: []string{"horovod"},
	})
	want = reqInstallPlan{
		Priority: []reqStep{{Line: "torch==2.1.0", Name: "torch"}},
		Main:     []string{"torch==2.1.0", "numpy", "pygobject"},
		Post:     []reqStep{{Line: "horovod", Name: "horovod", Optional: true}, {Line: "deepspeed", Name: "deepspeed"}},
	}
	if !reflect.DeepEqual(plan, want) {
		t.Errorf("plan with configured lists:\n got %+v\nwant %+v", plan, want)
	}
}

func TestReqPlanOptionsAndPaths(t *testing.T) {
	exists := map[string]bool{"/work/repo/libs/a": true, "/wheelhouse/present-1.0-py3-none-any.whl": true, "/work/repo/sub/extra.txt": true}
	policy := reqPolicy{Checkout: "/work/repo", WorkDir: "/work/repo/sub", Exists: func(p string) bool { return exists[p] }}
	lines := []string{
		"-r /etc/shadow",
		"--index-url https://user:s3cret@evil.example/simple",
		"--extra-index-url http://mirror/simple",
		"-f /wheels",
		"--trusted-host mirror",
		"--pre",
		"-c ../constraints.txt",
		"-e .",
		"-e ../libs/a",
		"-e /home/other/project",
		"git+file:///home/other/repo#egg=other",
		"../../outside/pkg",
		"present @ file:///wheelhouse/present-1.0-py3-none-any.whl",
		"gone[extra] @ file:///build/gone-1.0-py3-none-any.whl ; python_version > '3'",
		"./dist/own-1.0-py3-none-any.whl",
		"numpy",
	}
	plan := reqPlan(lines, policy)
	wantMain := []string{"present @ file:///wheelhouse/present-1.0-py3-none-any.whl", "gone[extra] ; python_version > '3'",
		"/work/repo/sub/dist/own-1.0-py3-none-any.whl", "numpy"}
	if !reflect.DeepEqual(plan.Main, wantMain) {
		t.Errorf("main:\n got %q\nwant %q", plan.Main, wantMain)
	}
	wantExt := []reqStep{{Line: "/work/repo/sub"}, {Line: "/work/repo/libs/a"}}
	if !reflect.DeepEqual(plan.External, wantExt) {
		t.Errorf("external: got %+v, want %+v", plan.External, wantExt)
	}
	warnings := strings.Join(plan.Warnings, "\n")
	for _, w := range []string{`"-r /etc/shadow"`, `"--pre"`, `"-c ../constraints.txt"`, "/home/other/project, outside", "/home/other/repo, outside",
		"../../outside/pkg", "/build/gone-1.0-py3-none-any.whl not found: installing gone[extra]", "user:***@evil.example"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
	if strings.Contains(warnings, "s3cret") {
		t.Errorf("a password reached the warnings:\n%s", warnings)
	}
	if len(plan.Warnings) != 11 {
		t.Errorf("%d warnings, want 11 (one per dropped or rewritten line):\n%s", len(plan.Warnings), warnings)
	}

	// The operator allows options: they stay, but -r/-c only inside the checkout.
	policy.AllowOptions = true
	plan = reqPlan([]string{"-r /etc/shadow", "-r extra.txt", "-c ../../../etc/passwd", "--index-url http://mirror/simple", "--pre", "numpy"}, policy)
	wantMain = []string{"--requirement /work/repo/sub/extra.txt", "--index-url http://mirror/simple", "--pre", "numpy"}
	if !reflect.DeepEqual(plan.Main, wantMain) {
		t.Errorf("allowed options: main %q, want %q", plan.Main, wantMain)
	}
	if len(plan.Warnings) != 2 || !strings.Contains(plan.Warnings[0], "/etc/shadow") || !strings.Contains(plan.Warnings[1], "/etc/passwd") {
		t.Errorf("allowed options: warnings %q", plan.Warnings)
	}

	// No checkout (a standalone script): nothing local is accepted.
	plan = reqPlan([]string{"-e .", "./pkg", "numpy"}, reqPolicy{})
	if !reflect.DeepEqual(plan.Main, []string{"numpy"}) || len(plan.External) != 0 || len(plan.Warnings) != 2 {
		t.Errorf("no checkout: %+v", plan)
	}
}

func TestReqCythonFirst(t *testing.T) {
	for _, c := range []struct {
		python, tool string
		want         bool
	}{
		{"3.8", "pip", true}, {"python3.8", "", true}, {"3.9", "pip", false}, {"3.11.7", "pip", false},
		{"3.10", "pip", false}, {"2.7", "pip", true}, {"3", "pip", true}, {"", "pip", true},
		{"3.8", "uv", false}, {"3.8", "poetry", false},
	} {
		if got := reqCythonFirst(c.python, c.tool); got != c.want {
			t.Errorf("reqCythonFirst(%q, %q) = %v, want %v", c.python, c.tool, got, c.want)
		}
	}
}

func TestReqRedact(t *testing.T) {
	for in, want := range map[string]string{
		"--index-url https://user:tok@h/simple": "--index-url https://user:***@h/simple",
		"git+https://:tok@h/r.git":              "git+https://:***@h/r.git",
		"https://h/simple":                      "https://h/simple",
		"git+ssh://git@github.com/o/r.git":      "git+ssh://git@github.com/o/r.git",
	} {
		if got := reqRedact(in); got != want {
			t.Errorf("reqRedact(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzReqParse: classification never panics, is stable on its own output,
// and a line starting with "-" is never a package.
func FuzzReqParse(f *testing.F) {
	for _, s := range []string{"numpy==1.0", "-r /etc/shadow", "-e .", "torch==2.1.0+cu118 ; python_version>'3'",
		"x @ file:///a%20b.whl", "git+file:///r@v#egg=x", "--ind=http://h", "pkg (>=1)", "a[b]>=1 --hash=sha256:0",
		"-", "--", "@", "a @", "#", "\\", "file:", "-e", "a;b", "ftp://h/x-1.0.zip"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r := reqParse(line)
		if r.Kind > reqInvalid {
			t.Fatalf("kind %d", r.Kind)
		}
		again := reqParse(r.Text)
		if again.Kind != r.Kind || again.Name != r.Name || again.Option != r.Option {
			t.Fatalf("not stable: %q -> %s/%q/%q, its text %q -> %s/%q/%q", line, r.Kind, r.Name, r.Option, r.Text, again.Kind, again.Name, again.Option)
		}
		if strings.HasPrefix(r.Text, "-") && r.Kind != reqOption && r.Kind != reqEditable {
			t.Fatalf("%q starts with - but is %s", line, r.Kind)
		}
		if r.Name != "" && pyNormalizeName(r.Name) != r.Name {
			t.Fatalf("name %q not normalized", r.Name)
		}
		if r.Kind == reqName {
			if back := reqParse(r.String()); back.Kind != reqName || back.Name != r.Name || back.Spec != r.Spec {
				t.Fatalf("String() %q of %q parses as %s %q %q", r.String(), line, back.Kind, back.Name, back.Spec)
			}
		}
		plan := reqPlan([]string{line}, reqPolicy{Checkout: "/c", Exists: func(string) bool { return false }})
		for _, m := range plan.Main {
			if strings.HasPrefix(m, "-") {
				t.Fatalf("option %q reached the main install", m)
			}
		}
	})
}
