package main

// PyTorch builds that match the host (issue 13, part 1), as the reference's
// helper/package/pytorch.py and requirements.py do it:
//
//   - CUDA version: agent.cuda_version (CLEARML_CUDA_VERSION, TRAINS_CUDA_VERSION
//     or CUDA_VERSION win over the file), else the driver (NVML), else
//     `nvcc --version`, else `nvidia-smi`'s "CUDA Version: X.Y"; 0 with
//     --cpu-only. As an integer 10*major+minor: 11.8 is 118.
//   - pytorch_resolve "pip" (default): probe the index for that version
//     (agent.package_manager.extra_index_url_template, default
//     https://download.pytorch.org/whl/cu{}/), then each lower one, 15 in all;
//     the first that answers is added as an extra index, and a single "=="
//     pin is relaxed: torch==2.1.0+cu118 becomes "torch ==2.1.0.*".
//   - "direct": pick a wheel URL from the index's flat page (torch_stable.html)
//     for the Python tag and platform, trying lower CUDA versions, never CPU.
//   - "none": torch is installed like any other package.
//
// Where this port differs (on purpose, see py-design.md): a CPU-only host
// gets the CPU index derived from the template (the reference probes
// "cu0" and falls back to its direct mode), failed probes are remembered
// too, and the answers can be kept across tasks (torchIndexResolver.TTL).
// Nothing here runs a process: detection gets its inputs as functions.

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// torchPackages are resolved against the PyTorch index (the reference's
// PytorchRequirement.packages).
var torchPackages = []string{"torch", "torchvision", "torchaudio", "torchcsprng", "torchtext"}

func torchIsPackage(name string) bool { return reqContains(torchPackages, pyNormalizeName(name)) }

// The reference's templates; "{}" is the CUDA version as 10*major+minor.
const (
	torchIndexTemplate        = "https://download.pytorch.org/whl/cu{}/"
	torchNightlyIndexTemplate = "https://download.pytorch.org/whl/nightly/cu{}/"
	torchPageTemplate         = "https://download.pytorch.org/whl/cu{}/torch_stable.html"
	torchNightlyPageTemplate  = "https://download.pytorch.org/whl/nightly/cu{}/torch_nightly.html"
	torchCPUPage              = "https://download.pytorch.org/whl/cpu/torch_stable.html"
	torchProbeDepth           = 15 // range(cuda, max(-1, cuda-15), -1)
)

// ---- the CUDA version ----

// cudaParseVersion reads a CUDA version as the reference's
// convert_cuda_version_to_int_10_base_str: "11.8" and "11.8.0" are 118,
// "12" is 120, "118" is 118 (one number from 60 up is already 10*major+minor).
func cudaParseVersion(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	parts := strings.Split(s, ".")
	nums := make([]int, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 100000 {
			return 0, false
		}
		nums = append(nums, n)
	}
	if len(nums) == 1 {
		if nums[0] < 60 {
			return nums[0] * 10, true
		}
		return nums[0], true
	}
	minor := nums[1]
	for minor >= 10 { // the reference reads the minor as a decimal fraction: 12.10 -> 121
		minor /= 10
	}
	return nums[0]*10 + minor, true
}

var (
	cudaSMIRe  = lazyRegexp(`CUDA Version\s*:\s*([0-9]+)\.([0-9]+)`)
	cudaNvccRe = lazyRegexp(`release ([0-9]+)\.([0-9]+)`)
)

// cudaFromSMI reads "CUDA Version: 12.4" from nvidia-smi's banner (or its
// -q report).
func cudaFromSMI(out string) (int, bool) {
	return cudaMatch(cudaSMIRe().FindStringSubmatch(out))
}

// cudaFromNvcc reads "release 11.8" from `nvcc --version`.
func cudaFromNvcc(out string) (int, bool) {
	return cudaMatch(cudaNvccRe().FindStringSubmatch(out))
}

func cudaMatch(m []string) (int, bool) {
	if m == nil {
		return 0, false
	}
	return cudaParseVersion(m[1] + "." + m[2])
}

// cudaFromDriver converts NVML's nvmlSystemGetCudaDriverVersion (12040 for
// 12.4) to 10*major+minor.
func cudaFromDriver(v int) (int, bool) {
	if v <= 0 {
		return 0, false
	}
	return v/1000*10 + v%1000/10, true
}

// cudaSources are where cudaDetect may look, in the reference's order.
// A nil function is a source this build or host does not have.
type cudaSources struct {
	CPUOnly bool                   // --cpu-only, services mode: no CUDA
	Config  string                 // agent.cuda_version after the variables (cudaConfigValue)
	Driver  func() (int, error)    // NVML's CUDA driver version (12040)
	Nvcc    func() (string, error) // `nvcc --version`
	SMI     func() (string, error) // `nvidia-smi`
}

// cudaConfigValue is agent.cuda_version as the reference reads it: the
// first set of CLEARML_CUDA_VERSION, TRAINS_CUDA_VERSION, CUDA_VERSION (which
// NVIDIA's CUDA images set), else the configuration's value.
func cudaConfigValue(configured string, env envLookup) string {
	for _, k := range []string{"CLEARML_CUDA_VERSION", "TRAINS_CUDA_VERSION", "CUDA_VERSION"} {
		if v, ok := env(k); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return strings.TrimSpace(configured)
}

// cudaDetect returns the CUDA version (0: none) and where it came from
// ("cpu-only", "config", "nvml", "nvcc", "nvidia-smi" or ""). warning is
// set when the configured value could not be read.
func cudaDetect(s cudaSources) (version int, from, warning string) {
	if s.CPUOnly {
		return 0, "cpu-only", ""
	}
	if s.Config != "" && s.Config != "0" {
		if v, ok := cudaParseVersion(s.Config); ok {
			return v, "config", ""
		}
		warning = fmt.Sprintf("agent.cuda_version %q is not a CUDA version (like 11.8); detecting it", s.Config)
	}
	if s.Driver != nil {
		if d, err := s.Driver(); err == nil {
			if v, ok := cudaFromDriver(d); ok {
				return v, "nvml", warning
			}
		}
	}
	if s.Nvcc != nil {
		if out, err := s.Nvcc(); err == nil {
			if v, ok := cudaFromNvcc(out); ok {
				return v, "nvcc", warning
			}
		}
	}
	if s.SMI != nil {
		if out, err := s.SMI(); err == nil {
			if v, ok := cudaFromSMI(out); ok {
				return v, "nvidia-smi", warning
			}
		}
	}
	return 0, "", warning
}

// ---- the index ----

// torchFormat fills a Python str.format template's "{}" or "{0}".
func torchFormat(template string, cuda int) string {
	n := strconv.Itoa(cuda)
	return strings.ReplaceAll(strings.ReplaceAll(template, "{0}", n), "{}", n)
}

// torchIndexCandidates are the indexes the reference probes for cuda, in
// order: the version itself, then each lower one (15 in all, not below 0).
func torchIndexCandidates(template string, cuda int) []string {
	var out []string
	for c := cuda; c > cuda-torchProbeDepth && c >= 0; c-- {
		out = append(out, torchFormat(template, c))
	}
	return out
}

// torchCPUIndex derives the CPU wheels' index from the CUDA template:
// ".../whl/cu{}/" gives ".../whl/cpu/". "" when the template has no "cu{}"
// part to replace (then the operator must name the CPU index).
func torchCPUIndex(template string) string {
	for _, p := range []string{"cu{}", "cu{0}"} {
		if strings.Contains(template, p) {
			return strings.Replace(template, p, "cpu", 1)
		}
	}
	return ""
}

// torchProbe is a remembered probe answer.
type torchProbe struct {
	OK bool      `json:"ok"`
	At time.Time `json:"at"`
}

// torchIndexResolver finds the index for a CUDA version, probing each
// candidate at most once (per TTL) and remembering both answers; Known can
// be saved and loaded to share them between tasks.
type torchIndexResolver struct {
	Template string
	Probe    func(url string) bool // GET url answers 2xx
	TTL      time.Duration         // 0: answers never expire
	Now      func() time.Time      // nil: time.Now

	mu    sync.Mutex
	Known map[string]torchProbe // index URL -> answer
}

// Resolve returns the index to add for cuda and the CUDA version it is
// for: the first candidate that answers. probed lists the URLs it asked.
func (r *torchIndexResolver) Resolve(cuda int) (index string, at int, probed []string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	if r.Known == nil {
		r.Known = map[string]torchProbe{}
	}
	template := r.Template
	if template == "" {
		template = torchIndexTemplate
	}
	for i, u := range torchIndexCandidates(template, cuda) {
		ans, seen := r.Known[u]
		if !seen || (r.TTL > 0 && now().Sub(ans.At) > r.TTL) {
			ans = torchProbe{OK: r.Probe != nil && r.Probe(u), At: now()}
			r.Known[u] = ans
			probed = append(probed, u)
		}
		if ans.OK {
			return u, cuda - i, probed, true
		}
	}
	return "", 0, probed, false
}

// ---- the requirement ----

// torchSpecParts splits a specifier into (op, version) pairs.
func torchSpecParts(spec string) [][2]string {
	var out [][2]string
	for _, c := range strings.Split(spec, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		i := strings.IndexFunc(c, func(r rune) bool { return !strings.ContainsRune("<>=!~", r) })
		if i < 0 {
			i = len(c)
		}
		out = append(out, [2]string{c[:i], strings.TrimSpace(c[i:])})
	}
	return out
}

var torchSubVersion = strings.NewReplacer("a", ".", "b", ".", "rc", ".", ".post", ".", ".dev", ".", "+", ".")

// torchRelaxPin is the line the reference's pip mode installs for a
// PyTorch requirement: a single "==" pin without its local label, as a
// prefix match when it has three parts (so 1.13.0 also takes NVIDIA's
// 1.13.0a0+936e930 builds); any other line is left as it is. The CUDA
// build then comes from the extra index.
func torchRelaxPin(r reqLine) string {
	parts := torchSpecParts(r.Spec)
	if r.Kind != reqName || len(parts) != 1 || parts[0][0] != "==" {
		return r.String()
	}
	v := strings.Trim(torchSubVersion.Replace(parts[0][1]), ".")
	nums := strings.Split(v, ".")
	if len(nums) > 3 {
		nums = nums[:3]
	}
	spec := "==" + strings.Join(nums, ".")
	if len(nums) == 3 && !strings.HasSuffix(spec, "*") {
		spec += ".*"
	}
	line := r.Name + r.Extras + " " + spec
	if r.Marker != "" {
		line += " ; " + r.Marker
	}
	return line
}

// torchStripLocal drops a "+cu118"/"+cpu" label from every version of a
// specifier (the reference's direct mode, before it looks for a wheel).
func torchStripLocal(spec string) string {
	parts := torchSpecParts(spec)
	for i := range parts {
		parts[i][1], _, _ = strings.Cut(parts[i][1], "+")
	}
	var s []string
	for _, p := range parts {
		s = append(s, p[0]+p[1])
	}
	return strings.Join(s, ",")
}

// torchRelease is a version's release numbers: "2.1.0a0+cu118" -> [2 1 0].
func torchRelease(v string) []int {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.Index(v, "!"); i >= 0 {
		v = v[i+1:]
	}
	var out []int
	for _, p := range strings.Split(v, ".") {
		j := 0
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			j++
		}
		if j == 0 {
			break
		}
		n, _ := strconv.Atoi(p[:j])
		out = append(out, n)
		if j < len(p) {
			break
		}
	}
	return out
}

// torchCompare compares release numbers, padding with zeros.
func torchCompare(a, b []int) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		x, y := 0, 0
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// torchSatisfies checks a version against a specifier the way the
// reference's SimpleVersion does: on release numbers only (pre, post and
// local labels ignored), "==1.2.*" as a prefix, "~=1.2.3" as >=1.2.3,==1.2.*.
func torchSatisfies(version, spec string) bool {
	have := torchRelease(version)
	if len(have) == 0 {
		return false
	}
	for _, p := range torchSpecParts(spec) {
		op, v := p[0], p[1]
		prefix := strings.HasSuffix(v, ".*")
		want := torchRelease(strings.TrimSuffix(v, ".*"))
		if len(want) == 0 {
			return false
		}
		if op == "~=" {
			if torchCompare(have, want) < 0 || len(want) < 2 {
				return false
			}
			op, prefix, want = "==", true, want[:len(want)-1]
		}
		c := torchCompare(have, want)
		if prefix {
			c = torchCompare(have[:min(len(have), len(want))], want)
		}
		ok := map[string]bool{"==": c == 0, "===": c == 0, "!=": c != 0, "<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[op]
		if !ok {
			return false
		}
	}
	return true
}

// torchNeedsOldSetuptools is the reference's fix for PyTorch before 1.11:
// when a torch requirement cannot be 1.11 or newer, "setuptools < 59" is
// added to the requirements (if the task has no setuptools line).
func torchNeedsOldSetuptools(r reqLine) bool {
	if r.Name != "torch" || r.Spec == "" {
		return false
	}
	spec := torchStripLocal(r.Spec)
	for _, p := range torchSpecParts(spec) {
		v := torchRelease(strings.TrimSuffix(p[1], ".*"))
		if len(v) == 0 {
			continue
		}
		op := p[0]
		if op == "~=" || (op == "==" && strings.HasSuffix(p[1], ".*")) {
			// An upper bound, exclusive: ~=1.10.0 and ==1.10.* stop below 1.11.
			if op == "~=" {
				if len(v) < 2 {
					continue
				}
				v = v[:len(v)-1]
			}
			v = append([]int(nil), v...)
			v[len(v)-1]++
			op = "<"
		}
		c := torchCompare(v, []int{1, 11})
		switch op {
		case "<":
			if c <= 0 {
				return true
			}
		case "==", "===", "<=":
			if c < 0 {
				return true
			}
		}
	}
	return false
}

// ---- direct mode ----

// torchWheelInfo is what a PyTorch wheel's file name says.
type torchWheelInfo struct {
	Name, Version, Local, Python, Platform string
}

// torchParseWheel reads name-version[+local]-pyTag-abiTag-platform.whl; the
// "+" may be escaped as %2B, as on download.pytorch.org's pages.
func torchParseWheel(link string) (torchWheelInfo, bool) {
	base := link
	if i := strings.IndexAny(base, "#?"); i >= 0 {
		base = base[:i]
	}
	base = base[strings.LastIndex(base, "/")+1:]
	base = strings.ReplaceAll(strings.ReplaceAll(base, "%2B", "+"), "%2b", "+")
	if !strings.HasSuffix(base, ".whl") {
		return torchWheelInfo{}, false
	}
	parts := strings.Split(strings.TrimSuffix(base, ".whl"), "-")
	if len(parts) < 5 {
		return torchWheelInfo{}, false
	}
	ver, local, _ := strings.Cut(parts[1], "+")
	return torchWheelInfo{Name: pyNormalizeName(parts[0]), Version: ver, Local: local, Python: parts[len(parts)-3], Platform: parts[len(parts)-1]}, true
}

// torchPickWheel chooses, among the links of an index page, the wheel the
// reference's direct mode would: the right project, the Python tag (cp311,
// or a pure py3 wheel), the platform ("linux") and machine ("x86_64"), a
// version that satisfies
// spec (local labels ignored); an exact "==" match wins, else the newest.
func torchPickWheel(links []string, name, spec, pyTag, platform, machine string) (link, version string, ok bool) {
	name = pyNormalizeName(name)
	spec = torchStripLocal(spec)
	exact := ""
	if p := torchSpecParts(spec); len(p) == 1 && p[0][0] == "==" && !strings.HasSuffix(p[0][1], "*") {
		exact = p[0][1]
	}
	var best []int
	for _, l := range links {
		w, good := torchParseWheel(l)
		if !good || w.Name != name || !torchTagFits(w, pyTag, platform, machine) {
			continue
		}
		if spec != "" && !torchSatisfies(w.Version, spec) {
			continue
		}
		if exact != "" && w.Version == exact {
			return l, w.Version, true
		}
		// The newest; at the same version a build for the platform beats a pure wheel.
		if v := torchRelease(w.Version); best == nil || torchCompare(v, best) > 0 || (torchCompare(v, best) == 0 && w.Platform != "any") {
			best, link, version, ok = v, l, w.Version, true
		}
	}
	return link, version, ok
}

// torchTagFits: a wheel for this Python (cp311, or any Python 3: py3) on
// this platform and machine (or any: a pure wheel).
func torchTagFits(w torchWheelInfo, pyTag, platform, machine string) bool {
	py := false
	for _, t := range strings.Split(w.Python, ".") {
		py = py || t == pyTag || t == "py3" || (pyTag != "" && t == "py"+strings.TrimPrefix(pyTag, "cp"))
	}
	p := strings.ToLower(w.Platform)
	return py && (p == "any" || (strings.Contains(p, platform) && strings.Contains(p, machine)))
}

// torchMachine is the wheel platform's machine for a GOARCH.
func torchMachine(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "ppc64le":
		return "ppc64le"
	}
	return goarch
}

// torchPyTag is the CPython wheel tag for a version: "3.11.7" -> "cp311".
func torchPyTag(pythonVersion string) string {
	p := strings.SplitN(pythonVersion, ".", 3)
	if len(p) < 2 {
		return ""
	}
	return "cp" + p[0] + p[1]
}

// ---- writing back ----

// torchReplacement is a requirement the direct mode replaced by a URL.
type torchReplacement struct {
	Name      string // normalized project name
	Requested string // the task's line, local label stripped ("torch==2.1.0")
	Installed string // what was installed instead (the wheel's URL)
	LocalFile bool   // the task's line was "name @ file://..."
}

var torchFreezeSplit = lazyRegexp(`[\s=.<>~!@#]+`)

// torchReplaceBack rewrites frozen lines (pip freeze) for
// tasks.set_requirements as the reference's replace_back: a package that
// was installed from a URL is recorded as the task asked for it, with the
// URL as a comment ("torch==2.1.0 # https://.../torch-2.1.0%2Bcu118-...whl");
// a plain pin keeps its version and gets the comment. Other lines are kept.
func torchReplaceBack(frozen []string, reps []torchReplacement) []string {
	if len(reps) == 0 {
		return frozen
	}
	out := append([]string(nil), frozen...)
	for i, line := range out {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		first := torchFreezeSplit().Split(t, 2)[0]
		for _, rep := range reps {
			if pyNormalizeName(first) != rep.Name {
				continue
			}
			switch {
			case !strings.Contains(t, "@"):
				out[i] = line + " # " + rep.Installed
			case strings.TrimSpace(rep.Requested) == strings.TrimSpace(rep.Installed):
			case rep.LocalFile:
				out[i] = rep.Installed
			default:
				out[i] = rep.Requested + " # " + rep.Installed
			}
			break
		}
	}
	return out
}
