package main

// Installing a task's requirements (issue 13, part 2): the lines are
// planned first (requirements.go: options dropped, priority and post
// packages, VCS and local folders apart, PyTorch resolved for the host),
// then installed in the reference's order, each step with its own pip run:
//
//	Cython            when the task's Python is older than 3.9 (pip only); may fail
//	priority          one at a time; an optional one may fail (and is then left out)
//	PyTorch wheels    fetched into agent.pip_download_cache once (torch_host.go)
//	main              one `pip install -r`
//	post              one at a time; an optional one may fail
//	VCS, folders      one at a time
//
// A step that fails fails the task with the line and pip's reason.
//
// Configuration (agent.package_manager.*): priority_packages,
// priority_optional_packages, post_packages, post_optional_packages (as
// the reference), and allow_requirement_options (ours, default false):
// requirement lines that are pip options (-r, -c, --index-url, ...) are
// ignored with a warning unless it is true.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// venvPlan is what a task installs, decided before the cache key.
type venvPlan struct {
	reqInstallPlan
	cython  bool       // install Cython first
	torch   *torchPlan // nil: no PyTorch line, or pytorch_resolve none
	local   bool       // refers to files in the checkout: not cacheable
	workDir string     // pip's working folder
}

func (p *venvPlan) empty() bool {
	return p == nil || len(p.Priority)+len(p.Main)+len(p.Post)+len(p.External) == 0
}

// cfgList is a list setting and whether it is set at all (an empty list
// is set: it means none, where unset means the reference's default).
func (m *venvManager) cfgList(path string) ([]string, bool) {
	if _, ok := m.cfg.lookup(path); !ok {
		return nil, false
	}
	l := m.cfg.strList(path)
	if l == nil {
		l = []string{}
	}
	return l, true
}

// reqPolicy is the planning policy for a task.
func (m *venvManager) reqPolicy(spec venvSpec, torch bool) reqPolicy {
	p := reqPolicy{Checkout: spec.checkoutDir(), WorkDir: spec.taskWorkDir(), Torch: torch,
		AllowOptions: m.cfg.boolean("agent.package_manager.allow_requirement_options", false)}
	p.Priority, _ = m.cfgList("agent.package_manager.priority_packages")
	p.PriorityOptional, _ = m.cfgList("agent.package_manager.priority_optional_packages")
	p.Post, _ = m.cfgList("agent.package_manager.post_packages")
	p.PostOptional, _ = m.cfgList("agent.package_manager.post_optional_packages")
	return p
}

// planRequirements plans the task's lines (or its repository's
// requirements.txt files), resolves PyTorch for this host and logs the
// warnings.
func (m *venvManager) planRequirements(ctx context.Context, spec venvSpec, in pyInterp, t venvTool, reqs venvRequirementSet) (*venvPlan, error) {
	lines := reqs.taskLines
	if len(reqs.files) > 0 {
		var err error
		if lines, err = m.repoLines(spec, reqs.files); err != nil {
			return nil, err
		}
	}
	mode := m.torchMode()
	p := &venvPlan{reqInstallPlan: reqPlan(lines, m.reqPolicy(spec, mode != "none")), workDir: spec.taskWorkDir()}
	for _, w := range p.Warnings {
		m.logf("WARNING: %s", w)
	}
	p.local = venvPlanIsLocal(p.reqInstallPlan)
	if !p.empty() && t.uv == "" && venvCythonFirst(spec.binary, in) {
		p.cython = true
		for _, s := range p.Priority {
			p.cython = p.cython && s.Name != "cython"
		}
	}
	if mode != "none" {
		tp, err := m.planTorch(ctx, spec, in, mode, p)
		if err != nil {
			return nil, err
		}
		p.torch = tp
	}
	return p, nil
}

// venvCythonFirst is the reference's rule (reqCythonFirst) on the Python
// the task asks for; a task that names no minor version ("python3", which
// the reference counts as old) is judged by the interpreter it gets.
func venvCythonFirst(binary string, in pyInterp) bool {
	want := pyRequestedVersion(binary)
	if !strings.Contains(want, ".") {
		want = in.version
	}
	return reqCythonFirst("python"+want, "pip")
}

// venvPlanIsLocal says whether a plan installs files of the checkout,
// whose content the cache key cannot see.
func venvPlanIsLocal(p reqInstallPlan) bool {
	for _, s := range p.External {
		if strings.HasPrefix(s.Line, "/") {
			return true
		}
	}
	for _, l := range p.Main {
		if strings.HasPrefix(l, "/") || strings.HasPrefix(l, "--requirement ") || strings.HasPrefix(l, "--constraint ") {
			return true
		}
	}
	return false
}

// repoLines reads the repository's requirements.txt files. Their own
// "-r other.txt" lines are read in too when the file is inside the
// checkout (the repository's files are the task's anyway); what is
// outside stays a line for reqPlan to refuse.
func (m *venvManager) repoLines(spec venvSpec, files []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var read func(file string, depth int) error
	read = func(file string, depth int) error {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("requirements: cannot read %s: %w", file, unwrapPathErr(err))
		}
		seen[file] = true
		for _, l := range strings.Split(string(data), "\n") {
			r := reqParse(l)
			if r.Kind == reqOption && r.Option == "--requirement" && depth < 8 {
				inc := filepath.Join(filepath.Dir(file), r.Value)
				if filepath.IsAbs(r.Value) {
					inc = r.Value
				}
				if real, ok := venvInside(spec.checkoutDir(), inc); ok {
					if !seen[real] {
						if err := read(real, depth+1); err != nil {
							return err
						}
					}
					continue
				}
			}
			out = append(out, l)
		}
		return nil
	}
	for _, f := range files {
		m.logf("Trying pip install: %s", f) // the reference's words
		if err := read(f, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// venvInside resolves path (symlinks too) and says whether it is inside root.
func venvInside(root, path string) (string, bool) {
	if root == "" {
		return "", false
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", false
	}
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", false
	}
	return real, real == r || strings.HasPrefix(real, r+string(filepath.Separator))
}

// keyLines is the plan as the cache key sees it.
func (p *venvPlan) keyLines() []string {
	var out []string
	if p.cython {
		out = append(out, "cython-first")
	}
	for _, s := range p.Priority {
		out = append(out, fmt.Sprintf("priority:%v:%s", s.Optional, s.Line))
	}
	main := append([]string(nil), p.Main...)
	sort.Strings(main)
	for i, l := range main {
		if i == 0 || l != main[i-1] {
			out = append(out, "main:"+l)
		}
	}
	for _, s := range p.Post {
		out = append(out, fmt.Sprintf("post:%v:%s", s.Optional, s.Line))
	}
	for _, s := range p.External {
		out = append(out, "external:"+s.Line)
	}
	if p.torch != nil {
		out = append(out, "torch:"+p.torch.key())
	}
	return out
}

// pinPip applies agent.package_manager.pip_version (new venvs only: an
// existing environment's pip is the user's), without --upgrade: a pip
// that already fits needs no index. Failure only warns.
func (m *venvManager) pinPip(ctx context.Context, t venvTool, py string, flags []string) {
	var pins []string
	for _, p := range m.cfg.strList("agent.package_manager.pip_version") {
		if p = strings.TrimSpace(p); p != "" {
			pins = append(pins, "pip"+p)
		}
	}
	if len(pins) == 0 || t.uv != "" {
		return
	}
	if _, err := m.runLogged(ctx, "", pipArgv(t, py, append(pins, venvIndexFlags(flags)...)...)...); err != nil {
		m.logf("WARNING: could not install pip%s: %v; keeping the venv's pip", strings.Join(pins, ","), err)
	}
}

// venvIndexFlags keeps the flags that say where packages come from (for
// pip calls other than the main install: pip download has no --upgrade).
func venvIndexFlags(flags []string) []string {
	var idx []string
	for i := 0; i < len(flags); i++ {
		switch flags[i] {
		case "--no-index", "--pre", "--prefer-binary":
			idx = append(idx, flags[i])
		case "--extra-index-url", "--find-links", "--index-url", "--trusted-host", "-i", "-f":
			if i+1 < len(flags) {
				idx = append(idx, flags[i], flags[i+1])
				i++
			}
		}
	}
	return idx
}

// install puts the planned requirements into the environment of py.
func (m *venvManager) install(ctx context.Context, t venvTool, py string, p *venvPlan, pinPip bool) error {
	if p.empty() {
		m.logf("No requirements to install")
		return nil
	}
	flags := m.installFlags()
	if p.torch != nil && p.torch.index != "" {
		flags = append(flags, "--extra-index-url", p.torch.index)
	}
	if pinPip {
		m.pinPip(ctx, t, py, flags)
	}
	if t.uv == "" && m.legacyResolver(py) {
		flags = append(flags, "--use-deprecated=legacy-resolver")
	}
	run := func(what string, lines []string, optional bool) error {
		err := m.installLines(ctx, t, py, p.workDir, what, lines, flags)
		if err != nil && optional {
			m.logf("WARNING: %v; going on without it", err)
			return nil
		}
		return err
	}
	if p.cython {
		m.logf("Installing Cython first (the task's Python is older than 3.9, as the reference does)")
		_ = run("Cython", []string{"Cython"}, true)
	}
	main := append([]string(nil), p.Main...)
	for _, s := range p.Priority {
		err := m.installLines(ctx, t, py, p.workDir, "priority package", []string{s.Line}, flags)
		switch {
		case err != nil && s.Optional:
			m.logf("WARNING: optional priority package %s did not install (%v); leaving it out", s.Line, err)
		case err != nil:
			m.logf("WARNING: priority package %s did not install on its own (%v); trying again with the rest", s.Line, err)
		case s.Optional:
			main = append(main, s.Line)
		}
	}
	if p.torch != nil {
		var err error
		if main, err = m.torchFetch(ctx, t, py, p.torch, main, flags); err != nil {
			return err
		}
	}
	if err := run("the requirements", main, false); err != nil {
		return err
	}
	for _, s := range p.Post {
		if err := run("post package", []string{s.Line}, s.Optional); err != nil {
			return err
		}
	}
	for _, s := range p.External {
		line := pyVCSRequirement(s.Line, m.gitAuth != nil)
		if err := run("package", []string{line}, false); err != nil {
			return err
		}
	}
	return nil
}

// installLines runs one `pip install -r` of lines (a file keeps
// per-requirement options such as --hash working).
func (m *venvManager) installLines(ctx context.Context, t venvTool, py, dir, what string, lines, flags []string) error {
	if len(lines) == 0 {
		return nil
	}
	f, err := os.CreateTemp("", "clearml-requirements-*.txt")
	if err != nil {
		return fmt.Errorf("requirements: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("requirements: %w", err)
	}
	if dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = ""
		}
	}
	out, err := m.runLogged(ctx, dir, pipArgv(t, py, append([]string{"-r", f.Name()}, flags...)...)...)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("requirements: installing %s: %w", what, ctx.Err())
	}
	line, reason := pyFailure(out, lines)
	if reason == "" {
		reason = fmt.Sprintf("%s %v (see the log above)", t.name(), err)
	}
	if line == "" && len(lines) == 1 {
		line = lines[0]
	}
	if line != "" {
		return fmt.Errorf("requirements: installing %q failed: %s", reqRedact(line), reqRedact(reason))
	}
	return fmt.Errorf("requirements: installing %s failed: %s", what, reqRedact(reason))
}

var (
	pyErrorLine    = lazyRegexp(`(?m)^(?:ERROR|error): (.+)$`)
	pyExceptionRe  = lazyRegexp(`(?m)^\s*(\w+(?:Error|Exception)\b:? .*)$`)
	pyCollectingRe = lazyRegexp(`(?m)^(?:Collecting|Processing|Obtaining) (\S+)`)
	pyFromFile     = lazyRegexp(` \(from -r \S+ \(line \d+\)\)`) // our temp file: noise
)

// pyFailure reads pip's (or uv's) output after a failure: the line of lines
// that failed (when pip names the package) and pip's reason, on one line.
func pyFailure(out string, lines []string) (line, reason string) {
	var reasons []string
	for _, m := range pyErrorLine().FindAllStringSubmatch(out, -1) {
		r := strings.TrimSpace(m[1])
		if r == "subprocess-exited-with-error" || strings.HasPrefix(r, "Command errored out") {
			continue
		}
		reasons = append(reasons, r)
	}
	if ex := pyExceptionRe().FindAllStringSubmatch(out, -1); len(ex) > 0 {
		reasons = append(reasons, strings.TrimSpace(ex[len(ex)-1][1]))
	}
	if len(reasons) == 0 {
		if uvReason := pyUVReason(out); uvReason != "" {
			reasons = append(reasons, uvReason)
		}
	}
	reason = oneLine(pyFromFile().ReplaceAllString(strings.Join(venvUnique(reasons), "; "), ""))
	if len(reason) > 600 {
		reason = reason[:600] + "..."
	}
	pkg := pyInstallFailure(out)
	if pkg == "" {
		if c := pyCollectingRe().FindAllStringSubmatch(out, -1); len(c) > 0 {
			pkg = c[len(c)-1][1]
		}
	}
	return venvMatchLine(pkg, lines), reason
}

// pyUVReason is uv's "× ..." / "╰─▶ ..." explanation.
func pyUVReason(out string) string {
	var parts []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		for _, p := range []string{"× ", "╰─▶ ", "error: "} {
			if rest, ok := strings.CutPrefix(l, p); ok {
				parts = append(parts, rest)
			}
		}
	}
	return strings.Join(parts, " ")
}

func venvUnique(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// venvMatchLine finds the requirement line for what pip names ("nosuch==1.0",
// "nosuch", a file name), by project name.
func venvMatchLine(pkg string, lines []string) string {
	if pkg == "" {
		return ""
	}
	name := reqParse(pkg).Name
	if name == "" {
		name = reqFileProject(pkg)
	}
	for _, l := range lines {
		r := reqParse(l)
		if r.Text == pkg || (name != "" && (r.Name == name || reqFileProject(r.Loc) == name)) {
			return r.Text
		}
	}
	return ""
}

// venvHash is a short content hash for file names.
func venvHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// legacyResolver says whether the pip of the environment of py matches
// agent.package_manager.pip_legacy_resolver (default ">=20.3,<24.3"): the
// reference installs with pip's legacy resolver then, which accepts the
// loosely pinned requirement lists the SDK records. The version is read from
// pip's dist-info folder: no process.
func (m *venvManager) legacyResolver(py string) bool {
	specs := m.cfg.strList("agent.package_manager.pip_legacy_resolver")
	if len(specs) == 0 {
		return false
	}
	ver := venvPipVersion(py)
	if ver == "" {
		return false
	}
	for _, spec := range specs {
		if pyVersionInSpec(ver, spec) {
			return true
		}
	}
	return false
}

// venvPipVersion reads the version of the pip that py runs from its
// dist-info folder: the venv's own, else the seed's (venv_seed.go).
func venvPipVersion(py string) string {
	root := filepath.Dir(filepath.Dir(py))
	sps, _ := filepath.Glob(filepath.Join(root, "lib", "python*", "site-packages"))
	for _, sp := range sps {
		for _, dir := range []string{sp, venvSeedOf(sp)} {
			if dir == "" {
				continue
			}
			if found, _ := filepath.Glob(filepath.Join(dir, "pip-*.dist-info")); len(found) == 1 {
				return strings.TrimSuffix(strings.TrimPrefix(filepath.Base(found[0]), "pip-"), ".dist-info")
			}
		}
	}
	return ""
}

// pyVersionInSpec checks a version against comma-separated clauses with
// >=, <=, >, <, ==, != on dotted numbers (what pip_legacy_resolver holds):
// the comparison the PyTorch resolver uses, an empty spec matching nothing.
func pyVersionInSpec(version, spec string) bool {
	return strings.TrimSpace(spec) != "" && torchSatisfies(version, spec)
}
