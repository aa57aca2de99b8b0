package main

// PyTorch for this host (issue 13, part 1): the parts of pytorch.go that
// run processes, read configuration and use the network.
//
//	agent.package_manager.pytorch_resolve   pip (default), direct, none; CLEARML_AGENT_PACKAGE_PYTORCH_RESOLVE wins
//	agent.package_manager.extra_index_url_template   default https://download.pytorch.org/whl/cu{}/
//	agent.package_manager.cpu_extra_index_url        ours: the CPU wheels' index (default: the template with cu{} -> cpu)
//	agent.package_manager.torch_page, torch_nightly_page, torch_nightly   direct mode, as the reference
//	agent.cuda_version (CLEARML_CUDA_VERSION, CUDA_VERSION), agent.cpu_only (CLEARML_CPU_ONLY)
//	agent.pip_download_cache {enabled, path}   wheels kept in <path>/cu121/ or <path>/cpu/
//
// The CUDA version comes from the configuration, else the driver (NVML in
// the nvml build), `nvcc --version`, `nvidia-smi`, as the reference; none
// (and --cpu-only) means the CPU wheels. Index probes are remembered in
// <pip_download_cache.path>/torch-index.json: answers that found an index
// for good, misses for a day.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// torchPlan is how a task's PyTorch lines are installed on this host.
type torchPlan struct {
	mode    string // "pip" or "direct"
	cuda    int    // 0: CPU wheels
	variant string // "cu121", "cpu": the download cache's subfolder
	index   string // pip mode: the extra index every pip call gets
	pyTag   string // cp311
	lines   []torchLine
}

// torchLine is one PyTorch requirement of the task.
type torchLine struct {
	req  reqLine // as the task wrote it
	line string  // what goes to pip: the relaxed pin, or the wheel's URL (direct)
	url  string  // direct mode: the wheel
}

func (tp *torchPlan) key() string {
	parts := []string{tp.mode, tp.variant, tp.index}
	for _, l := range tp.lines {
		parts = append(parts, l.line)
	}
	return strings.Join(parts, "|")
}

func (m *venvManager) torchMode() string {
	mode := strings.ToLower(m.env("CLEARML_AGENT_PACKAGE_PYTORCH_RESOLVE"))
	if mode == "" {
		mode = strings.ToLower(strings.TrimSpace(m.cfg.str("agent.package_manager.pytorch_resolve")))
	}
	switch mode {
	case "", "pip":
		return "pip"
	case "direct", "none":
		return mode
	}
	m.logf("WARNING: agent.package_manager.pytorch_resolve %q is not pip, direct or none; using pip", mode)
	return "pip"
}

// cudaVersion detects the host's CUDA version once per manager.
func (m *venvManager) cudaVersion(ctx context.Context, cpuOnly bool) int {
	m.mu.Lock()
	done, v := m.cudaDone, m.cuda
	m.mu.Unlock()
	if done {
		return v
	}
	if on, ok := parseBoolText(firstEnv(m.envLookup(), "CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY")); ok {
		cpuOnly = cpuOnly || on
	}
	output := func(name string, args ...string) func() (string, error) {
		p, ok := m.lookPath(name)
		if !ok {
			return nil
		}
		return func() (string, error) {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := m.run(c, "", &out, io.Discard, append([]string{p}, args...)...)
			return out.String(), err
		}
	}
	src := cudaSources{CPUOnly: cpuOnly || m.cfg.boolean("agent.cpu_only", false), Config: m.cfg.str("agent.cuda_version"),
		Driver: nvmlCUDADriverVersion(), Nvcc: output("nvcc", "--version"), SMI: output("nvidia-smi")}
	v, from, warn := cudaDetect(src)
	if warn != "" {
		m.logf("WARNING: %s", warn)
	}
	switch {
	case from == "cpu-only":
		m.logf("PyTorch: CPU only (--cpu-only or agent.cpu_only)")
	case v == 0:
		m.logf("PyTorch: no CUDA found (no NVIDIA driver, nvcc or agent.cuda_version): CPU wheels")
	default:
		m.logf("PyTorch: CUDA %d.%d (from %s)", v/10, v%10, from)
	}
	m.mu.Lock()
	m.cuda, m.cudaDone = v, true
	m.mu.Unlock()
	return v
}

// planTorch rewrites the plan's PyTorch lines for this host.
func (m *venvManager) planTorch(ctx context.Context, spec venvSpec, in pyInterp, mode string, p *venvPlan) (*torchPlan, error) {
	tp := &torchPlan{mode: mode, pyTag: torchPyTag(in.version)}
	var at []int
	for i, l := range p.Main {
		if r := reqParse(l); r.Kind == reqName && torchIsPackage(r.Name) {
			tp.lines = append(tp.lines, torchLine{req: r})
			at = append(at, i)
		}
	}
	if len(tp.lines) == 0 {
		return nil, nil
	}
	tp.cuda = m.cudaVersion(ctx, spec.cpuOnly)
	if mode == "pip" && !m.torchPipIndex(tp) {
		m.logf("PyTorch: no index found for CUDA %d; trying pytorch_resolve=direct, as the reference", tp.cuda)
		tp.mode = "direct"
	}
	if tp.mode == "direct" {
		if err := m.torchDirect(ctx, tp); err != nil {
			return nil, err
		}
	}
	oldSetuptools := false
	for i := range tp.lines {
		p.Main[at[i]] = tp.lines[i].line
		oldSetuptools = oldSetuptools || torchNeedsOldSetuptools(tp.lines[i].req)
	}
	if oldSetuptools && !venvPlanHas(p, "setuptools") {
		p.Main = append(p.Main, "setuptools < 59")
	}
	return tp, nil
}

func venvPlanHas(p *venvPlan, name string) bool {
	for _, l := range append(append([]string(nil), p.Main...), venvStepLines(p.Priority)...) {
		if reqParse(l).Name == name {
			return true
		}
	}
	return false
}

func venvStepLines(steps []reqStep) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Line)
	}
	return out
}

// torchPipIndex finds the index for the host (pip mode) and relaxes the
// pins; false when no index answered.
func (m *venvManager) torchPipIndex(tp *torchPlan) bool {
	tmpl := strings.TrimSpace(m.cfg.str("agent.package_manager.extra_index_url_template"))
	if tmpl == "" {
		tmpl = torchIndexTemplate
	}
	if tp.cuda == 0 {
		tp.index, tp.variant = strings.TrimSpace(m.cfg.str("agent.package_manager.cpu_extra_index_url")), "cpu"
		if tp.index == "" {
			tp.index = torchCPUIndex(tmpl)
		}
		if tp.index == "" {
			m.logf("WARNING: PyTorch: no CPU index: extra_index_url_template %q has no cu{} to derive it from; set agent.package_manager.cpu_extra_index_url", tmpl)
			return false
		}
	} else {
		idx, at, ok := m.torchResolve(tmpl, tp.cuda)
		if !ok {
			return false
		}
		tp.index, tp.variant = idx, fmt.Sprintf("cu%d", at)
		m.logf("Torch CUDA %d index page found, adding `%s`", at, reqRedact(idx))
	}
	for i := range tp.lines {
		tp.lines[i].line = torchRelaxPin(tp.lines[i].req)
		m.logf("PyTorch: Adding index `%s` and installing `%s`", reqRedact(tp.index), tp.lines[i].line)
	}
	return true
}

// torchResolve probes the template's candidates for cuda, remembering the
// answers on disk.
func (m *venvManager) torchResolve(tmpl string, cuda int) (string, int, bool) {
	file := m.torchProbeFile()
	r := &torchIndexResolver{Template: tmpl, Probe: m.torchProbe, Known: map[string]torchProbe{}}
	if data, err := os.ReadFile(file); err == nil && file != "" {
		_ = json.Unmarshal(data, &r.Known)
	}
	// Misses expire after a day (a mirror may gain a build); hits stay.
	for u, ans := range r.Known {
		if !ans.OK && time.Since(ans.At) > 24*time.Hour {
			delete(r.Known, u)
		}
	}
	if m.offline { // --standalone-mode: what is known only
		r.Probe = func(string) bool { return false }
	}
	idx, at, probed, ok := r.Resolve(cuda)
	if len(probed) > 0 && file != "" && !m.offline {
		data, _ := json.Marshal(r.Known)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
			_ = venvWriteFileAtomic(file, data)
		}
	}
	return idx, at, ok
}

func (m *venvManager) torchProbeFile() string {
	if d := m.downloadCache(); d != "" {
		return filepath.Join(d, "torch-index.json")
	}
	if d := m.cacheDir(); d != "" {
		return filepath.Join(d, "torch-index.json")
	}
	return ""
}

// downloadCache is agent.pip_download_cache.path when enabled, else "".
func (m *venvManager) downloadCache() string {
	if !m.cfg.boolean("agent.pip_download_cache.enabled", true) {
		return ""
	}
	d := strings.TrimSpace(m.cfg.str("agent.pip_download_cache.path"))
	if d == "" {
		return ""
	}
	d = expandHomeEnv(d, m.envLookup())
	if abs, err := filepath.Abs(d); err == nil {
		d = abs
	}
	return d
}

var torchHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}

// torchProbe is the reference's requests.get(url).ok.
func (m *venvManager) torchProbe(u string) bool {
	resp, err := torchHTTP.Get(u)
	if err != nil {
		m.logf("PyTorch: probing %s: %v", reqRedact(u), err)
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode < 400
}

// torchFetch installs PyTorch wheels from agent.pip_download_cache: one
// found there is installed from its file; others are downloaded there
// first (pip download, or the wheel's URL in direct mode), for this task
// and the next ones. It returns the main lines to install.
func (m *venvManager) torchFetch(ctx context.Context, t venvTool, py string, tp *torchPlan, main, flags []string) ([]string, error) {
	cache := m.downloadCache()
	if cache == "" || t.uv != "" {
		return main, nil // uv keeps its own cache (UV_CACHE_DIR)
	}
	dir := filepath.Join(cache, tp.variant)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.logf("WARNING: PyTorch: download cache %s: %v", dir, err)
		return main, nil
	}
	out := append([]string(nil), main...)
	var fetch []string
	for _, l := range tp.lines {
		if f := m.torchCached(dir, tp, l); f == "" {
			fetch = append(fetch, l.line)
		}
	}
	if len(fetch) > 0 {
		if tp.mode == "direct" {
			m.torchDownloadURLs(ctx, dir, tp)
		} else {
			args := append([]string{"-m", "pip", "--disable-pip-version-check", "download", "--no-deps", "--dest", dir}, venvIndexFlags(flags)...)
			if _, err := m.runLogged(ctx, "", append(append([]string{py}, args...), fetch...)...); err != nil {
				m.logf("WARNING: PyTorch: could not download %s into %s (%v); installing from the index", strings.Join(fetch, ", "), dir, err)
			}
		}
	}
	for _, l := range tp.lines {
		if f := m.torchCached(dir, tp, l); f != "" {
			for i := range out {
				if out[i] == l.line {
					out[i] = f
				}
			}
		}
	}
	return out, nil
}

// torchCached is the newest wheel in dir that fits the line, or "".
func (m *venvManager) torchCached(dir string, tp *torchPlan, l torchLine) string {
	if tp.mode == "direct" {
		f := filepath.Join(dir, torchFileName(l.url))
		if _, err := os.Stat(f); err == nil {
			return f
		}
		return ""
	}
	r := reqParse(l.line)
	files, _ := filepath.Glob(filepath.Join(dir, "*.whl"))
	best, bestV := "", []int(nil)
	for _, f := range files {
		w, ok := torchParseWheel(filepath.Base(f))
		if !ok || w.Name != r.Name || (r.Spec != "" && !torchSatisfies(w.Version, r.Spec)) || !torchTagFits(w, tp.pyTag, "linux", torchMachine(runtime.GOARCH)) {
			continue
		}
		if v := torchRelease(w.Version); best == "" || torchCompare(v, bestV) > 0 {
			best, bestV = f, v
		}
	}
	if r.Spec == "" {
		return "" // unpinned: the index decides (a newer build may be out)
	}
	return best
}

func torchFileName(u string) string {
	base := u
	if i := strings.IndexAny(base, "#?"); i >= 0 {
		base = base[:i]
	}
	base = base[strings.LastIndex(base, "/")+1:]
	if s, err := url.PathUnescape(base); err == nil {
		base = s
	}
	return base
}

// torchDownloadURLs fetches direct mode's wheels into dir.
func (m *venvManager) torchDownloadURLs(ctx context.Context, dir string, tp *torchPlan) {
	for _, l := range tp.lines {
		dst := filepath.Join(dir, torchFileName(l.url))
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		m.logf("Downloading %s into %s", reqRedact(l.url), dir)
		if err := torchDownload(ctx, l.url, dst); err != nil {
			m.logf("WARNING: PyTorch: downloading %s: %v; pip will fetch it", reqRedact(l.url), err)
		}
	}
}

func torchDownload(ctx context.Context, u, dst string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: torchHTTP.Transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".download-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// torchWriteBack rewrites frozen lines for tasks.set_requirements so they
// carry what the task asked for (the reference's replace_back): the
// task's line, with what was installed as a comment ("torch==2.1.0+cu118 #
// 2.1.0+cu121 from https://.../cu121/"); an unpinned line gets the
// installed version.
func torchWriteBack(frozen []string, tp *torchPlan) []string {
	if tp == nil {
		return frozen
	}
	out := append([]string(nil), frozen...)
	for i, f := range out {
		name, ver := torchFrozenVersion(f)
		for _, l := range tp.lines {
			if name == "" || l.req.Name != name {
				continue
			}
			from := tp.index
			if tp.mode == "direct" {
				from = l.url
			}
			if l.req.Spec != "" {
				out[i] = l.req.Text + " # " + ver + " from " + from
			} else {
				out[i] = l.req.Name + l.req.Extras + "==" + ver + " # from " + from
			}
		}
	}
	return out
}

// torchFrozenVersion reads "torch==2.1.0+cu121" or "torch @ file:///…/torch-2.1.0%2Bcu121-….whl".
func torchFrozenVersion(line string) (name, version string) {
	r := reqParse(line)
	switch r.Kind {
	case reqName:
		if v, ok := strings.CutPrefix(r.Spec, "=="); ok {
			return r.Name, v
		}
	case reqNameURL:
		if w, ok := torchParseWheel(r.Loc); ok {
			return r.Name, w.Version + map[bool]string{true: "+" + w.Local}[w.Local != ""]
		}
	}
	return "", ""
}

// torchDirect picks each line's wheel from the index's flat page
// (pytorch_resolve: direct): the host's CUDA version, then lower ones,
// then the nightly page with torch_nightly; never the CPU page for a GPU.
func (m *venvManager) torchDirect(ctx context.Context, tp *torchPlan) error {
	page := strings.TrimSpace(m.cfg.str("agent.package_manager.torch_page"))
	if page == "" {
		page = torchPageTemplate
	}
	var pages []string
	if tp.cuda == 0 {
		cpu := torchCPUIndex(page)
		if cpu == "" {
			cpu = torchCPUPage
		}
		pages = []string{cpu}
	} else {
		pages = torchIndexCandidates(page, tp.cuda)
	}
	if m.cfg.boolean("agent.package_manager.torch_nightly", false) && tp.cuda > 0 {
		nightly := strings.TrimSpace(m.cfg.str("agent.package_manager.torch_nightly_page"))
		if nightly == "" {
			nightly = torchNightlyPageTemplate
		}
		pages = append(pages, torchFormat(nightly, tp.cuda))
	}
	cache := map[string][]string{}
	for i := range tp.lines {
		l := &tp.lines[i]
		found := false
		for pi, p := range pages {
			links, ok := cache[p]
			if !ok {
				links = m.torchPageLinks(ctx, p)
				cache[p] = links
			}
			link, ver, ok := torchPickWheel(links, l.req.Name, l.req.Spec, tp.pyTag, "linux", torchMachine(runtime.GOARCH))
			if ok {
				l.url, l.line, found = link, link, true
				tp.variant = torchVariant(link, tp.cuda-pi)
				m.logf("PyTorch: %s %s from %s", l.req.Name, ver, reqRedact(link))
				break
			}
		}
		if !found {
			return fmt.Errorf("requirements: could not locate PyTorch version %s matching CUDA version %d (pages: %s); set agent.package_manager.pytorch_resolve: pip, or pin a version that exists", reqRedact(l.req.Text), tp.cuda, reqRedact(strings.Join(pages, ", ")))
		}
	}
	return nil
}

// torchVariant names the download cache folder for a wheel URL.
func torchVariant(link string, cuda int) string {
	if w, ok := torchParseWheel(link); ok && w.Local != "" {
		return w.Local
	}
	if cuda <= 0 {
		return "cpu"
	}
	return fmt.Sprintf("cu%d", cuda)
}

var torchHrefRe = lazyRegexp(`(?i)href\s*=\s*["']([^"']+)["']`)

// torchPageLinks fetches a flat page of wheel links (torch_stable.html).
func (m *venvManager) torchPageLinks(ctx context.Context, page string) []string {
	if m.offline {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, page, nil)
	if err != nil {
		return nil
	}
	resp, err := torchHTTP.Do(req)
	if err != nil {
		m.logf("PyTorch: %s: %v", reqRedact(page), err)
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	base, _ := url.Parse(page)
	var links []string
	for _, mt := range torchHrefRe().FindAllStringSubmatch(string(body), -1) {
		href := strings.ReplaceAll(mt[1], "&amp;", "&")
		if u, err := base.Parse(href); err == nil {
			u.Fragment = ""
			links = append(links, u.String())
		}
	}
	return links
}
