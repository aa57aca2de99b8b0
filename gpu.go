package main

// GPUs: the --gpus selection (env vars, worker id, docker flags) and GPU
// detection behind one interface: nvidia-smi by default, NVML with
// -tags nvml, rocm-smi on AMD hosts (gpu_rocm.go). The allocator behind
// --dynamic-gpus is in gpu_alloc.go.

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// gpuEnv sets the GPU visibility variables a task sees, as the reference
// does for --gpus and --cpu-only (agent-execute.md §5). env is modified.
// Ranges of plain indices are expanded ("0-3" is "0,1,2,3"): CUDA does not
// understand ranges, so passing them verbatim would hide every GPU.
func gpuEnv(env map[string]string, gpus string, cpuOnly bool) {
	env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
	if env["KUBERNETES_SERVICE_HOST"] != "" || env["KUBERNETES_PORT"] != "" {
		return
	}
	switch {
	case cpuOnly:
		env["CUDA_VISIBLE_DEVICES"] = "none"
		env["NVIDIA_VISIBLE_DEVICES"] = "none"
	case strings.EqualFold(gpus, "all"):
		delete(env, "CUDA_VISIBLE_DEVICES")
		env["NVIDIA_VISIBLE_DEVICES"] = "all"
	case gpus != "":
		v := strings.ReplaceAll(gpus, ".", ":")
		if ids, err := gpuListItems(gpus); err == nil && len(ids) > 0 {
			v = strings.Join(ids, ",")
		}
		env["CUDA_VISIBLE_DEVICES"] = v
		env["NVIDIA_VISIBLE_DEVICES"] = v
	case env["CUDA_VISIBLE_DEVICES"] != "" && env["NVIDIA_VISIBLE_DEVICES"] == "":
		env["NVIDIA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
	}
	if rocmHost() {
		rocmEnv(env, gpus, cpuOnly)
	}
}

// maxGPURange bounds "a-b" so a typo cannot build a huge list.
const maxGPURange = 1024

// gpuListItems splits a --gpus list into device ids in the env-var form:
// "a-b" of plain indices is expanded, MIG "g.m" becomes "g:m", anything
// else (GPU-/MIG- UUIDs, "-1") is kept as written.
func gpuListItems(s string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, b, ok := strings.Cut(item, "-"); ok && gpuDigits(a) && gpuDigits(b) {
			lo, err1 := strconv.Atoi(a)
			hi, err2 := strconv.Atoi(b)
			if err1 != nil || err2 != nil || hi < lo || hi-lo >= maxGPURange {
				return nil, fmt.Errorf("invalid GPU range %q", item)
			}
			for i := lo; i <= hi; i++ {
				out = append(out, strconv.Itoa(i))
			}
			continue
		}
		if g, m, ok := strings.Cut(item, "."); ok && gpuDigits(g) && gpuDigits(m) {
			item = g + ":" + m
		}
		out = append(out, item)
	}
	return out, nil
}

func gpuDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// gpuVisible is the NVIDIA_VISIBLE_DEVICES (else CUDA_VISIBLE_DEVICES) value
// a task would get from these flags and this environment.
func gpuVisible(gpus string, cpuOnly bool, env envLookup) string {
	m := map[string]string{}
	for _, k := range []string{"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "KUBERNETES_SERVICE_HOST", "KUBERNETES_PORT"} {
		if v, ok := env(k); ok {
			m[k] = v
		}
	}
	gpuEnv(m, gpus, cpuOnly)
	if v := m["NVIDIA_VISIBLE_DEVICES"]; v != "" {
		return v
	}
	return m["CUDA_VISIBLE_DEVICES"]
}

// workerIDDevices is the device text in the worker id (agent-daemon.md
// §4.2), for newWorkerIdentity: "" (none given), "none" (CPU only), or the
// --gpus text as written ("0-3", "all", "0.1"), so ids match the Python
// agent's; without --gpus, the inherited NVIDIA/CUDA_VISIBLE_DEVICES.
func workerIDDevices(gpus string, cpuOnly bool, env envLookup) string {
	v := gpuVisible(gpus, cpuOnly, env)
	k8s := firstEnv(env, "KUBERNETES_SERVICE_HOST", "KUBERNETES_PORT") != ""
	if gpus != "" && !cpuOnly && !k8s {
		v = gpus
		if strings.EqualFold(v, "all") {
			v = "all"
		}
	}
	return gpuIDText(v)
}

// dockerGPUArgs is the `docker run` GPU flags and the NVIDIA_VISIBLE_DEVICES
// value for the agent inside the container, from the (already gpuEnv'd)
// environment. The reference gave the container "all" for a list (agent#47);
// here it gets exactly the selected devices. skipFlag is
// CLEARML_DOCKER_SKIP_GPUS_FLAG. On an AMD host the flags are device
// mounts (rocmDockerArgs) instead of --gpus.
func dockerGPUArgs(env envLookup, skipFlag bool) (args []string, inner string) {
	g := firstEnv(env, "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
	switch {
	case g == "none":
		return nil, "none"
	case g == "" || strings.EqualFold(g, "all"):
		if skipFlag {
			return nil, "all"
		}
		if rocmHost() {
			return rocmDockerArgs(""), "all"
		}
		return []string{"--gpus", "all"}, "all"
	}
	list := g
	if ids, err := gpuListItems(g); err == nil && len(ids) > 0 {
		list = strings.Join(ids, ",")
	}
	if skipFlag {
		return nil, list
	}
	if rocmHost() {
		return rocmDockerArgs(list), list
	}
	// The quotes are part of the argument: docker reads --gpus as CSV, so
	// an unquoted "device=0,1" would be two fields.
	return []string{"--gpus", `"device=` + list + `"`}, list
}

// podmanGPUArgs are dockerGPUArgs for podman: the NVIDIA GPUs as CDI
// devices (nvidia.com/gpu=<id>, from the NVIDIA container toolkit's CDI
// spec; podman 4 ignores --gpus), and NVIDIA_VISIBLE_DEVICES inside.
func podmanGPUArgs(env envLookup, skipFlag bool) (args []string, inner string) {
	flag, inner := dockerGPUArgs(env, skipFlag)
	if len(flag) != 2 || flag[0] != "--gpus" {
		return flag, inner // none, or AMD device mounts
	}
	if inner == "all" {
		return []string{"--device", "nvidia.com/gpu=all"}, inner
	}
	for _, id := range strings.Split(inner, ",") {
		args = append(args, "--device", "nvidia.com/gpu="+id)
	}
	return args, inner
}

// gpuHostHasGPU reports whether this host has a GPU: a backend answers
// (NVML, nvidia-smi, rocm-smi) or a GPU device exists. Tests replace it.
var gpuHostHasGPU = sync.OnceValue(func() bool {
	if amd, nvidia := gpuDevices(); amd || nvidia {
		return true
	}
	return detectGPUBackend(nil) != nil
})

// gpuInfo is one GPU (or MIG slice) as a backend reports it.
type gpuInfo struct {
	Index      int    // physical GPU index
	MIG        int    // MIG device index on that GPU, -1 for a whole GPU
	UUID       string // GPU-... or MIG-...
	ParentUUID string // the GPU's UUID for a MIG slice
	Name       string
	PCIBus     string // rocm-smi only: "0000:C1:00.0"
	MemTotalMB float64
	MemUsedMB  float64
	Util       float64 // %
	Temp       float64 // °C
	HasMem     bool
	HasUtil    bool
	HasTemp    bool
}

// id is the device id in env-var form: "3" or "3:1".
func (g gpuInfo) id() string {
	if g.MIG < 0 {
		return strconv.Itoa(g.Index)
	}
	return strconv.Itoa(g.Index) + ":" + strconv.Itoa(g.MIG)
}

// gpuBackend reads every GPU of the machine.
type gpuBackend interface {
	name() string
	query(ctx context.Context) ([]gpuInfo, []string, error) // GPUs, warnings
}

var smiQueryArgs = []string{
	"--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu",
	"--format=csv,noheader,nounits",
}

// smiBackend runs nvidia-smi once per query. --query-gpu does not list MIG
// devices, so when the selection names one (mig), each query also reads
// them: memory from `nvidia-smi -q -x`, UUIDs from `nvidia-smi -L`.
type smiBackend struct {
	path string
	mig  bool
}

func (b smiBackend) name() string { return "nvidia-smi" }

func (b smiBackend) query(ctx context.Context) ([]gpuInfo, []string, error) {
	out, err := b.run(ctx, smiQueryArgs...)
	if err != nil {
		return nil, nil, err
	}
	gpus, warns := parseNvidiaSMI(out)
	if b.mig {
		xmlOut, err := b.run(ctx, "-q", "-x")
		var list []byte
		if err == nil {
			list, err = b.run(ctx, "-L")
		}
		var slices map[string][]gpuInfo
		if err == nil {
			slices, err = parseSMIMIG(xmlOut, list)
		}
		if err != nil {
			return gpus, append(warns, fmt.Sprintf("MIG devices unknown: %v", err)), nil
		}
		gpus = smiWithMIG(gpus, slices)
	}
	return gpus, warns, nil
}

// run runs nvidia-smi with args and returns its stdout.
func (b smiBackend) run(ctx context.Context, args ...string) ([]byte, error) {
	return runGPUTool(ctx, b.path, "nvidia-smi", args...)
}

// runGPUTool runs a GPU tool (nvidia-smi, rocm-smi) and returns its stdout;
// an error names the tool (label) and quotes the first line it printed.
func runGPUTool(ctx context.Context, path, label string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	// Own process group, so a wrapper script's children die with it and
	// cannot keep the pipe open past the timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 100 * time.Millisecond
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s did not answer in time", label)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", label, err, msg)
		}
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return stdout.Bytes(), nil
}

// smiXML is the part of `nvidia-smi -q -x` that MIG stats need.
type smiXML struct {
	GPUs []struct {
		UUID       string `xml:"uuid"`
		MIGDevices []struct {
			Index int    `xml:"index"`
			Total string `xml:"fb_memory_usage>total"`
			Used  string `xml:"fb_memory_usage>used"`
		} `xml:"mig_devices>mig_device"`
	} `xml:"gpu"`
}

var smiMIGLine = lazyRegexp(`^\s*MIG\b.*\bDevice\s+(\d+):\s*\(UUID:\s*(MIG-[^)\s]+)\)`)
var smiGPULine = lazyRegexp(`^GPU\s+\d+:.*\(UUID:\s*(GPU-[^)\s]+)\)`)

// parseSMIMIG reads the MIG devices of each GPU, by the GPU's UUID, from
// `nvidia-smi -q -x` (memory) and `nvidia-smi -L` (MIG UUIDs). Only
// MIG, MemTotalMB/MemUsedMB/HasMem and UUID are set.
func parseSMIMIG(xmlOut, list []byte) (map[string][]gpuInfo, error) {
	var doc smiXML
	if err := xml.Unmarshal(xmlOut, &doc); err != nil {
		return nil, fmt.Errorf("nvidia-smi -q -x: %w", err)
	}
	uuids := map[string]string{} // "GPU-...:1" -> MIG-...
	parent := ""
	for _, line := range strings.Split(string(list), "\n") {
		if m := smiGPULine().FindStringSubmatch(line); m != nil {
			parent = m[1]
		} else if m := smiMIGLine().FindStringSubmatch(line); m != nil && parent != "" {
			uuids[parent+":"+m[1]] = m[2]
		}
	}
	out := map[string][]gpuInfo{}
	for _, g := range doc.GPUs {
		uuid := strings.TrimSpace(g.UUID)
		for _, d := range g.MIGDevices {
			s := gpuInfo{MIG: d.Index, UUID: uuids[uuid+":"+strconv.Itoa(d.Index)]}
			total, okT := smiNumber(strings.TrimSuffix(strings.TrimSpace(d.Total), "MiB"))
			used, okU := smiNumber(strings.TrimSuffix(strings.TrimSpace(d.Used), "MiB"))
			if okT && okU {
				s.MemTotalMB, s.MemUsedMB, s.HasMem = total, used, true
			}
			out[uuid] = append(out[uuid], s)
		}
	}
	return out, nil
}

// smiWithMIG lists a GPU that has MIG devices as those devices, as the NVML
// backend does; they keep the GPU's name and temperature, and have no
// utilisation of their own.
func smiWithMIG(gpus []gpuInfo, slices map[string][]gpuInfo) []gpuInfo {
	out := make([]gpuInfo, 0, len(gpus))
	for _, g := range gpus {
		migs := slices[g.UUID]
		if len(migs) == 0 {
			out = append(out, g)
			continue
		}
		for _, m := range migs {
			s := g
			s.MIG, s.UUID, s.ParentUUID = m.MIG, m.UUID, g.UUID
			s.MemTotalMB, s.MemUsedMB, s.HasMem = m.MemTotalMB, m.MemUsedMB, m.HasMem
			s.Util, s.HasUtil = 0, false
			out = append(out, s)
		}
	}
	sortGPUs(out)
	return out
}

// parseNvidiaSMI reads the CSV of smiQueryArgs. Unusable lines are skipped
// with a warning; "[N/A]"/"[Not Supported]" values are left unset.
func parseNvidiaSMI(out []byte) ([]gpuInfo, []string) {
	var gpus []gpuInfo
	var warns []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 7 {
			warns = append(warns, fmt.Sprintf("nvidia-smi: skipping unexpected line %q", line))
			continue
		}
		// A comma inside the name would add fields: the name is what is
		// between the uuid and the last four numbers.
		n := len(f)
		f = append([]string{f[0], f[1], strings.Join(f[2:n-4], ",")}, f[n-4:]...)
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil || idx < 0 || f[1] == "" {
			warns = append(warns, fmt.Sprintf("nvidia-smi: skipping unexpected line %q", line))
			continue
		}
		g := gpuInfo{Index: idx, MIG: -1, UUID: f[1], Name: f[2]}
		total, okT := smiNumber(f[3])
		used, okU := smiNumber(f[4])
		if okT && okU {
			g.MemTotalMB, g.MemUsedMB, g.HasMem = total, used, true
		}
		g.Util, g.HasUtil = smiNumber(f[5])
		g.Temp, g.HasTemp = smiNumber(f[6])
		gpus = append(gpus, g)
	}
	sortGPUs(gpus)
	return gpus, warns
}

func smiNumber(s string) (float64, bool) {
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v != v || v < 0 {
		return 0, false
	}
	return v, true
}

// sortGPUs orders by index then MIG slice (the reference sorted the keys
// as text, putting 10 before 2).
func sortGPUs(g []gpuInfo) {
	sort.SliceStable(g, func(i, j int) bool {
		if g[i].Index != g[j].Index {
			return g[i].Index < g[j].Index
		}
		return g[i].MIG < g[j].MIG
	})
}

// detectGPUBackend picks NVML (with -tags nvml, when the driver loads),
// then nvidia-smi on PATH, then rocm-smi, else nil: no GPUs, quietly. On
// an AMD host (rocmHost: /dev/kfd and no NVIDIA device, the reference's
// test) rocm-smi comes first.
func detectGPUBackend(logf func(string, ...any)) gpuBackend {
	if rocmHost() {
		if p := findROCmSMI(os.LookupEnv); p != "" {
			return rocmBackend{path: p}
		}
	}
	if b, err := newNVMLBackend(); err == nil {
		return b
	} else if !errors.Is(err, errNoNVML) && logf != nil {
		logf("NVML unavailable (%v), trying nvidia-smi", err)
	}
	if p, err := exec.LookPath("nvidia-smi"); err == nil {
		return smiBackend{path: p}
	}
	if amd, _ := gpuDevices(); amd {
		if p := findROCmSMI(os.LookupEnv); p != "" {
			return rocmBackend{path: p}
		}
	}
	return nil
}

// gpuReading is one successful query of the selected GPUs.
type gpuReading struct {
	at   time.Time
	gpus []gpuInfo
}

// gpuSet is the GPUs a worker uses: the --gpus/--cpu-only selection,
// resolved against what the backend detects.
type gpuSet struct {
	backend gpuBackend
	all     bool
	sel     []string // device ids, GPU-/MIG- UUIDs; used when !all
	timeout time.Duration
	logf    func(string, ...any)

	busy     atomic.Bool // a query is running (a stuck NVML call is abandoned, not repeated)
	last     atomic.Pointer[gpuReading]
	warnMu   sync.Mutex
	warned   map[string]bool
	failures int // consecutive, poll goroutine only
}

func stderrWarn(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "WARNING: "+format+"\n", a...)
}

// newGPUSet returns the selected GPUs, or nil for CPU mode: --cpu-only,
// NVIDIA_VISIBLE_DEVICES=none, or no GPU tool (NVML, nvidia-smi, rocm-smi).
func newGPUSet(gpus string, cpuOnly bool, env envLookup) *gpuSet {
	v := gpuVisible(gpus, cpuOnly, env)
	if v == "none" {
		return nil
	}
	b := detectGPUBackend(stderrWarn)
	if b == nil {
		return nil
	}
	g := newGPUSetWith(b, v)
	if smi, ok := b.(smiBackend); ok {
		for _, id := range g.sel {
			if strings.Contains(id, ":") || strings.HasPrefix(strings.ToUpper(id), "MIG-") {
				smi.mig = true
				g.backend = smi
				break
			}
		}
	}
	return g
}

// newGPUSetWith selects from visible ("", "all" or a list) on backend b.
func newGPUSetWith(b gpuBackend, visible string) *gpuSet {
	g := &gpuSet{backend: b, timeout: 5 * time.Second, logf: stderrWarn, warned: map[string]bool{}}
	if visible == "" || strings.EqualFold(visible, "all") {
		g.all = true
	} else if ids, err := gpuListItems(visible); err == nil {
		g.sel = ids
	} else {
		g.sel = strings.Split(visible, ",")
	}
	return g
}

// warnOnce logs each distinct message once, so a bad line does not repeat
// every poll.
func (g *gpuSet) warnOnce(msg string) {
	g.warnMu.Lock()
	seen := g.warned[msg]
	if !seen && len(g.warned) < 64 {
		g.warned[msg] = true
	}
	g.warnMu.Unlock()
	if !seen && g.logf != nil {
		g.logf("%s", msg)
	}
}

// selects reports whether the selection includes d.
func (g *gpuSet) selects(d gpuInfo) bool {
	if g.all {
		return true
	}
	whole := strconv.Itoa(d.Index)
	for _, s := range g.sel {
		switch {
		case s == d.id(), s == whole, strings.EqualFold(s, d.UUID),
			d.ParentUUID != "" && strings.EqualFold(s, d.ParentUUID):
			return true
		}
	}
	return false
}

// resolve keeps the selected GPUs of detected, in index order.
func (g *gpuSet) resolve(detected []gpuInfo) []gpuInfo {
	out := make([]gpuInfo, 0, len(detected))
	for _, d := range detected {
		if g.selects(d) {
			out = append(out, d)
		}
	}
	sortGPUs(out)
	return out
}

var errGPUBusy = errors.New("previous GPU query still running")

// read queries the backend within the timeout and returns the selected
// GPUs. It never waits longer than the timeout, even on a stuck driver call.
func (g *gpuSet) read(ctx context.Context) ([]gpuInfo, error) {
	if !g.busy.CompareAndSwap(false, true) {
		return nil, errGPUBusy
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	type result struct {
		gpus  []gpuInfo
		warns []string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		defer g.busy.Store(false)
		gpus, warns, err := g.backend.query(ctx)
		ch <- result{gpus, warns, err}
	}()
	defer cancel()
	select {
	case r := <-ch:
		for _, w := range r.warns {
			g.warnOnce(w)
		}
		if r.err != nil {
			return nil, r.err
		}
		sel := g.resolve(r.gpus)
		g.last.Store(&gpuReading{at: time.Now(), gpus: sel})
		return sel, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: no answer within %v", g.backend.name(), g.timeout)
	}
}

// poll reads the GPUs every interval until ctx ends. After 3 failures in a
// row it warns once and slows down rather than giving up for good.
func (g *gpuSet) poll(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := interval
		if _, err := g.read(ctx); err != nil {
			g.failures++
			if g.failures == 3 {
				g.logf("GPU monitoring failed getting GPU reading (%v), retrying every minute", err)
			}
			if g.failures >= 3 {
				wait = time.Minute
			}
		} else {
			if g.failures >= 3 {
				g.logf("GPU monitoring recovered")
			}
			g.failures = 0
		}
		t.Reset(wait)
	}
}

// latest is the last good reading if it is newer than maxAge.
func (g *gpuSet) latest(now time.Time, maxAge time.Duration) *gpuReading {
	r := g.last.Load()
	if r == nil || now.Sub(r.at) > maxAge {
		return nil
	}
	return r
}

// freeMemMB is a GPU's free memory from the last reading (for the
// allocator's gate); ok is false when unknown.
func (g *gpuSet) freeMemMB(id string) (float64, bool) {
	r := g.last.Load()
	if r == nil {
		return 0, false
	}
	for _, d := range r.gpus {
		if (d.id() == id || strings.EqualFold(d.UUID, id)) && d.HasMem {
			return d.MemTotalMB - d.MemUsedMB, true
		}
	}
	return 0, false
}
