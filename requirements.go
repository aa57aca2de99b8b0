package main

// Requirement lines as the agent reads them (issue 13, parts 2 and 2b),
// following the reference's helper/package/requirements.py, priority_req.py,
// post_req.py and external_req.py, with one deliberate difference: a line
// is a package, not a pip option. Lines such as "-r /etc/shadow" or
// "--index-url http://elsewhere" are dropped with a warning unless the
// operator allows options, and -e/VCS/path lines must stay inside the
// task's checkout.
//
// reqParse classifies one line; reqPlan turns a task's lines into the
// install steps, in the reference's order:
//
//	Cython (Python < 3.9, pip only)  reqCythonFirst
//	priority packages                one at a time; optional ones may fail
//	the main install                 one `pip install -r` of Main
//	post packages                    one at a time; optional ones may fail
//	VCS and local folders            one at a time (the reference's ExternalRequirements)
//
// Nothing here runs a process or reads configuration: the caller passes
// reqPolicy, so the venv code can plug it in as it likes.

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
)

// reqKind is what a requirement line is.
type reqKind uint8

const (
	reqSkip     reqKind = iota // blank, or only a comment
	reqName                    // name[extras] specifier ; marker
	reqNameURL                 // name @ URL (http, https, ftp, file)
	reqVCS                     // git+https://..., or name @ git+...
	reqURL                     // a bare http(s)/ftp URL of a wheel or sdist
	reqPath                    // a local path or file: URL
	reqEditable                // -e / --editable, a path or a VCS URL
	reqOption                  // a pip option: -r, -c, -i, --index-url, --pre, ...
	reqInvalid                 // none of the above: left for pip to reject
)

func (k reqKind) String() string {
	return [...]string{"skip", "name", "name-url", "vcs", "url", "path", "editable", "option", "invalid"}[k]
}

// reqLine is one parsed requirement line.
type reqLine struct {
	Raw     string
	Text    string   // without the comment, spaces collapsed
	Kind    reqKind  //
	Name    string   // PEP 503 normalized; "" when the line names none
	Extras  string   // "[a,b]" or ""
	Spec    string   // the version specifier without spaces: "==2.1.0+cu118"
	Marker  string   // the environment marker, after ';'
	Loc     string   // the URL or path (name-url, vcs, url, path, editable)
	Option  string   // reqOption: the long option ("--index-url"), or the option as written when unknown
	Value   string   // reqOption: its value
	Hashes  []string // per-requirement --hash values, kept
	Dropped []string // other per-requirement options (--global-option, --config-settings): removed
}

// reqPipOption is a pip requirement-file option.
type reqPipOption struct {
	long, short string
	value       bool
}

// reqPipOptions are the options pip reads in a requirements file, and a
// few more it once did. An unknown "-x" line is still an option.
var reqPipOptions = []reqPipOption{
	{"--requirement", "-r", true}, {"--constraint", "-c", true}, {"--editable", "-e", true},
	{"--index-url", "-i", true}, {"--extra-index-url", "", true}, {"--no-index", "", false},
	{"--find-links", "-f", true}, {"--trusted-host", "", true}, {"--pre", "", false},
	{"--prefer-binary", "", false}, {"--no-binary", "", true}, {"--only-binary", "", true},
	{"--require-hashes", "", false}, {"--use-feature", "", true}, {"--global-option", "", true},
	{"--config-settings", "", true}, {"--hash", "", true}, {"--always-unzip", "-Z", false},
	{"--process-dependency-links", "", false}, {"--install-option", "", true},
}

var (
	reqNameRe   = lazyRegexp(`^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$`)
	reqSpecRe   = lazyRegexp(`^(?:(?:~=|===|==|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+(?:,|$))+$`)
	reqSchemeRe = lazyRegexp(`^([A-Za-z][A-Za-z0-9+.-]*):`)
	reqVCSRe    = lazyRegexp(`^(?:git|hg|svn|bzr)\+[A-Za-z]+:|^git://`)
	reqEggRe    = lazyRegexp(`[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)`)
)

// reqStripComment removes a comment as pip does: '#' at the start or after
// whitespace. It also collapses runs of whitespace.
func reqStripComment(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	// pip's rule is (^|\s+)#: any whitespace before the hash, as Fields sees it,
	// so that the joined text never starts a comment it did not start before.
	prev := ' '
	for i, c := range s {
		if c == '#' && unicode.IsSpace(prev) {
			s = s[:i]
			break
		}
		prev = c
	}
	return strings.Join(strings.Fields(s), " ")
}

// reqParse classifies one requirement line.
func reqParse(raw string) reqLine {
	r := reqLine{Raw: raw, Text: reqStripComment(raw)}
	t := r.Text
	switch {
	case t == "":
		r.Kind = reqSkip
	case strings.HasPrefix(t, "-"):
		reqParseOption(&r)
	case reqVCSRe().MatchString(t):
		r.Kind, r.Loc, r.Name = reqVCS, t, reqEggName(t)
	default:
		reqParseRequirement(&r)
	}
	return r
}

func reqParseOption(r *reqLine) {
	t := r.Text
	opt, val, hasVal := t, "", false
	if i := strings.IndexAny(t, " ="); i > 0 {
		opt, val, hasVal = t[:i], strings.TrimSpace(t[i+1:]), true
	}
	var known *reqPipOption
	for i := range reqPipOptions {
		o := &reqPipOptions[i]
		switch {
		case opt == o.long:
			known = o
		case o.short != "" && strings.HasPrefix(t, o.short) && !strings.HasPrefix(t, "--"):
			// -rfile, -r file, -r=file: optparse reads all three.
			known, val, hasVal = o, strings.TrimLeft(strings.TrimPrefix(t, o.short), " ="), len(t) > len(o.short)
		}
		if known != nil {
			break
		}
	}
	if known == nil && strings.HasPrefix(opt, "--") && len(opt) > 2 {
		// optparse takes an unambiguous prefix of a long option.
		var match []*reqPipOption
		for i := range reqPipOptions {
			if strings.HasPrefix(reqPipOptions[i].long, opt) {
				match = append(match, &reqPipOptions[i])
			}
		}
		if len(match) == 1 {
			known = match[0]
		}
	}
	r.Kind, r.Option, r.Value = reqOption, opt, val
	if known == nil {
		return
	}
	r.Option = known.long
	if !known.value && hasVal {
		r.Value = val
	}
	if known.long == "--editable" {
		r.Kind, r.Loc, r.Option, r.Value = reqEditable, val, "", ""
		r.Name = reqEggName(val)
	}
}

// reqEggName is the project a URL names in its #egg= fragment, if any.
func reqEggName(loc string) string {
	if m := reqEggRe().FindStringSubmatch(loc); m != nil {
		return pyNormalizeName(m[1])
	}
	return ""
}

func reqParseRequirement(r *reqLine) {
	t := r.Text
	if m := reqSchemeRe().FindStringSubmatch(t); m != nil && len(m[1]) > 1 {
		switch strings.ToLower(m[1]) {
		case "http", "https", "ftp":
			r.Kind, r.Loc, r.Name = reqURL, t, reqFileProject(t)
			return
		case "file":
			r.Kind, r.Loc, r.Name = reqPath, t, reqFileProject(t)
			return
		}
	}
	if strings.HasPrefix(t, ".") || strings.HasPrefix(t, "/") || strings.HasPrefix(t, "~") ||
		reqLooksLikeArchive(t) {
		r.Kind, r.Loc, r.Name = reqPath, t, reqFileProject(t)
		return
	}
	m := reqNameRe().FindStringSubmatch(t)
	if m == nil {
		r.Kind = reqInvalid
		return
	}
	r.Name, r.Extras = pyNormalizeName(m[1]), strings.ReplaceAll(m[2], " ", "")
	rest := strings.TrimSpace(m[3])
	if loc, ok := strings.CutPrefix(rest, "@"); ok {
		loc, marker, _ := strings.Cut(strings.TrimSpace(loc), " ;")
		r.Marker = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(marker), ";"))
		r.Loc = strings.TrimSpace(loc)
		if reqVCSRe().MatchString(r.Loc) {
			r.Kind = reqVCS
		} else if sm := reqSchemeRe().FindStringSubmatch(r.Loc); sm != nil && len(sm[1]) > 1 {
			r.Kind = reqNameURL
		} else {
			r.Kind = reqInvalid
		}
		return
	}
	spec, marker, _ := strings.Cut(rest, ";")
	r.Marker = strings.TrimSpace(marker)
	var specWords []string
	for _, w := range strings.Fields(spec) {
		switch {
		case strings.HasPrefix(w, "--hash="):
			r.Hashes = append(r.Hashes, strings.TrimPrefix(w, "--hash="))
		case strings.HasPrefix(w, "--"):
			r.Dropped = append(r.Dropped, w)
		default:
			specWords = append(specWords, w)
		}
	}
	r.Spec = strings.Join(specWords, "")
	if strings.HasPrefix(r.Spec, "(") && strings.HasSuffix(r.Spec, ")") {
		r.Spec = r.Spec[1 : len(r.Spec)-1] // the old "name (>=1.0)" form
	}
	r.Kind = reqName
	if r.Spec != "" && !reqSpecRe().MatchString(r.Spec) {
		r.Kind = reqInvalid
	}
}

func reqLooksLikeArchive(t string) bool {
	if strings.ContainsAny(t, " ;") {
		return false
	}
	for _, s := range []string{".whl", ".tar.gz", ".tar.bz2", ".zip", ".tgz"} {
		if strings.HasSuffix(strings.ToLower(t), s) {
			return strings.Contains(t, "/") || s == ".whl"
		}
	}
	return false
}

// reqFileProject is the project a wheel or sdist URL or path names, if it
// can tell ("" otherwise).
func reqFileProject(loc string) string {
	if n := reqEggName(loc); n != "" {
		return n
	}
	base := loc
	if i := strings.IndexAny(base, "#?"); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, "/")
	base = base[strings.LastIndex(base, "/")+1:]
	if u, err := url.PathUnescape(base); err == nil {
		base = u
	}
	switch {
	case strings.HasSuffix(base, ".whl"):
		return pyNormalizeName(strings.SplitN(base, "-", 2)[0])
	case strings.HasSuffix(base, ".tar.gz"), strings.HasSuffix(base, ".zip"), strings.HasSuffix(base, ".tgz"), strings.HasSuffix(base, ".tar.bz2"):
		if i := strings.LastIndex(base, "-"); i > 0 {
			return pyNormalizeName(base[:i])
		}
	}
	return ""
}

// String is the line as the agent installs it: name, extras, specifier,
// hashes and marker in pip's syntax (per-requirement options other than
// --hash are left out); other kinds are returned as written.
func (r reqLine) String() string {
	switch r.Kind {
	case reqName:
		s := r.Name + r.Extras + r.Spec
		for _, h := range r.Hashes {
			s += " --hash=" + h
		}
		if r.Marker != "" {
			s += " ; " + r.Marker
		}
		return s
	case reqNameURL, reqVCS:
		if r.Name == "" || r.Loc == r.Text {
			return r.Loc
		}
		s := r.Name + r.Extras + " @ " + r.Loc
		if r.Marker != "" {
			s += " ; " + r.Marker
		}
		return s
	}
	return r.Text
}

// localPath is the filesystem path a line points at ("" for none): a
// path, a file: URL, an editable folder, or a VCS repository on disk.
func (r reqLine) localPath() string {
	loc := r.Loc
	switch r.Kind {
	case reqPath, reqNameURL, reqEditable, reqVCS:
	default:
		return ""
	}
	if r.Kind == reqVCS || (r.Kind == reqEditable && reqVCSRe().MatchString(loc)) {
		_, after, ok := strings.Cut(loc, "+")
		if !ok || !strings.HasPrefix(strings.ToLower(after), "file:") {
			return ""
		}
		loc = after
		if i := strings.LastIndex(loc, "@"); i > len("file:///") {
			loc = loc[:i] // the revision
		}
	}
	if i := strings.IndexAny(loc, "#"); i >= 0 {
		loc = loc[:i]
	}
	if rest, ok := strings.CutPrefix(loc, "file:"); ok {
		rest = strings.TrimPrefix(rest, "//localhost")
		rest = strings.TrimPrefix(rest, "//")
		if u, err := url.PathUnescape(rest); err == nil {
			rest = u
		}
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		return rest
	}
	if r.Kind == reqNameURL {
		return "" // http(s)/ftp
	}
	return loc
}

// reqPolicy is what reqPlan needs from the configuration and the task.
type reqPolicy struct {
	Checkout     string // the task's checkout; "" when the task has none
	WorkDir      string // where relative paths resolve; "" means Checkout
	AllowOptions bool   // the operator allows pip options in requirements

	// The reference's lists (agent.package_manager.*). nil means the
	// reference's default; an empty, non-nil list means none.
	Priority, PriorityOptional, Post, PostOptional []string

	// Torch: PyTorch packages are resolved apart (pytorch_resolve is not
	// "none"), so they are never priority or post packages.
	Torch bool

	Exists func(path string) bool // nil: os.Stat
}

// The reference's defaults (priority_req.py, post_req.py, agent.conf).
var (
	reqDefaultPriority         = []string{"cython", "numpy", "setuptools", "pip", "uv"}
	reqDefaultPriorityOptional = []string{"pygobject"}
	reqDefaultPost             = []string{"horovod"}
	// reqCollected appear once, last, wherever the task listed them
	// (the reference's PackageCollectorRequirement).
	reqCollected = []string{"trains", "clearml", "nbconvert", "ipython"}
)

// reqStep is a package installed on its own.
type reqStep struct {
	Line     string
	Name     string
	Optional bool // its failure does not fail the task
}

// reqInstallPlan is reqPlan's answer.
type reqInstallPlan struct {
	Priority []reqStep // installed first, in the task's order
	// Main is installed with one `pip install -r`. It holds the
	// non-optional priority lines again (so the resolver keeps their pins);
	// an optional priority package that installed is appended by the caller.
	Main     []string
	Post     []reqStep // after Main
	External []reqStep // after Post: VCS URLs and local folders, -e dropped
	Warnings []string  // for the task log, one line each
}

func reqNames(list, def []string) map[string]bool {
	if list == nil {
		list = def
	}
	m := map[string]bool{}
	for _, n := range list {
		if n = strings.TrimSpace(n); n != "" {
			m[pyNormalizeName(n)] = true
		}
	}
	return m
}

// reqPlan sorts a task's requirement lines into install steps.
func reqPlan(lines []string, p reqPolicy) reqInstallPlan {
	var plan reqInstallPlan
	prio, prioOpt := reqNames(p.Priority, reqDefaultPriority), reqNames(p.PriorityOptional, reqDefaultPriorityOptional)
	post, postOpt := reqNames(p.Post, reqDefaultPost), reqNames(p.PostOptional, nil)
	collected := map[string]string{}
	var collectedOrder []string
	warn := func(format string, args ...any) { plan.Warnings = append(plan.Warnings, fmt.Sprintf(format, args...)) }
	for _, raw := range lines {
		r := reqParse(raw)
		switch r.Kind {
		case reqSkip:
			continue
		case reqOption:
			if line, ok := p.option(r, warn); ok {
				plan.Main = append(plan.Main, line)
			}
			continue
		case reqEditable, reqVCS, reqPath, reqNameURL:
			if step, main, ok := p.located(r, warn); ok {
				if main != "" {
					plan.Main = append(plan.Main, main)
				} else {
					plan.External = append(plan.External, step)
				}
			}
			continue
		}
		if len(r.Dropped) > 0 {
			warn("requirement %q: ignoring per-requirement options %s", reqRedact(r.Text), strings.Join(r.Dropped, " "))
		}
		line := r.String()
		if r.Kind == reqInvalid {
			line = r.Text // pip names the problem
		}
		n := r.Name
		switch {
		case n == "":
			plan.Main = append(plan.Main, line)
		case p.Torch && torchIsPackage(n):
			plan.Main = append(plan.Main, line)
		case reqContains(reqCollected, n):
			if _, seen := collected[n]; !seen {
				collectedOrder = append(collectedOrder, n)
			}
			collected[n] = line
		case prio[n] || prioOpt[n]:
			opt := prioOpt[n] && !prio[n]
			plan.Priority = append(plan.Priority, reqStep{Line: line, Name: n, Optional: opt})
			if !opt {
				plan.Main = append(plan.Main, line)
			}
		case post[n] || postOpt[n]:
			plan.Post = append(plan.Post, reqStep{Line: line, Name: n, Optional: postOpt[n] && !post[n]})
		default:
			plan.Main = append(plan.Main, line)
		}
	}
	for _, n := range collectedOrder {
		plan.Main = append(plan.Main, collected[n])
	}
	return plan
}

func reqContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// option decides about a pip option line: dropped unless allowed, and even
// then -r/-c must name a file inside the checkout.
func (p reqPolicy) option(r reqLine, warn func(string, ...any)) (string, bool) {
	if !p.AllowOptions {
		warn("ignoring requirement line %q: pip options are not accepted in requirements (the operator can allow them)", reqRedact(r.Text))
		return "", false
	}
	switch r.Option {
	case "--requirement", "--constraint":
		abs, inside := p.inside(r.Value)
		if !inside {
			warn("ignoring requirement line %q: %s must name a file inside the task's checkout", reqRedact(r.Text), r.Option)
			return "", false
		}
		return r.Option + " " + abs, true
	}
	return r.Text, true
}

// located decides about a line that points somewhere: a missing local file
// behind "name @ file://" is dropped back to the name (as the reference);
// editable, VCS and path lines on this machine must be inside the checkout.
// It returns either an External step or a line for Main.
func (p reqPolicy) located(r reqLine, warn func(string, ...any)) (step reqStep, main string, ok bool) {
	local := r.localPath()
	if r.Kind == reqNameURL && local != "" {
		if !p.exists(local) {
			warn("local file %s not found: installing %s from the package index", local, r.Name+r.Extras)
			r.Kind, r.Loc = reqName, ""
			return reqStep{}, r.String(), true
		}
		return reqStep{}, r.String(), true
	}
	if r.Kind == reqNameURL {
		return reqStep{}, r.String(), true
	}
	if local != "" {
		abs, inside := p.inside(local)
		if !inside {
			warn("ignoring requirement line %q: it points at %s, outside the task's checkout", reqRedact(r.Text), local)
			return reqStep{}, "", false
		}
		if r.Kind == reqPath && (strings.HasSuffix(abs, ".whl") || !p.isDir(abs)) {
			return reqStep{}, abs, true // a wheel or an archive: part of the main install
		}
		if r.Kind != reqVCS {
			return reqStep{Line: abs, Name: r.Name}, "", true
		}
	}
	line := r.String()
	if r.Kind == reqEditable {
		line = r.Loc // the reference installs it, not a link to it
	}
	return reqStep{Line: line, Name: r.Name}, "", true
}

// inside resolves path against the working dir and says whether it lies
// in the checkout (lexically: the checkout is the task's own code anyway).
func (p reqPolicy) inside(path string) (string, bool) {
	if p.Checkout == "" {
		return path, false
	}
	base := p.WorkDir
	if base == "" {
		base = p.Checkout
	}
	if strings.HasPrefix(path, "~") {
		return path, false
	}
	abs := path
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(base, abs)
	}
	abs = filepath.Clean(abs)
	root := filepath.Clean(p.Checkout)
	return abs, abs == root || strings.HasPrefix(abs, root+string(filepath.Separator))
}

func (p reqPolicy) exists(path string) bool {
	if p.Exists != nil {
		return p.Exists(path)
	}
	_, err := os.Stat(path)
	return err == nil
}

func (p reqPolicy) isDir(path string) bool {
	if p.Exists != nil {
		return !reqLooksLikeArchive(path)
	}
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

var reqUserinfoRe = lazyRegexp(`://[^/@\s]*:[^/@\s]*@`)

// reqRedact hides a password in a URL (https://user:token@host/...).
func reqRedact(s string) string {
	return reqUserinfoRe().ReplaceAllStringFunc(s, func(m string) string {
		user, _, _ := strings.Cut(strings.TrimPrefix(m, "://"), ":")
		return "://" + user + ":***@"
	})
}

// reqCythonFirst is the reference's rule (worker.py): when pip installs
// (not uv or poetry), Cython goes in before anything else unless the task
// asked for Python 3.9 or newer. The requested version is script.binary's
// ("python3.8" -> "3.8"); one the reference cannot read as major.minor
// (plain "python3") counts as older, so such tasks get Cython too.
func reqCythonFirst(requestedPython, tool string) bool {
	if tool != "" && tool != "pip" {
		return false
	}
	major, rest, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(requestedPython), "python"), ".")
	minor, _, _ := strings.Cut(rest, ".")
	if major == "" {
		major = "3"
	}
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return true
	}
	return ma < 3 || (ma == 3 && mi < 9)
}
