package main

// Machine stats for workers.status_report (agent-daemon.md §4.6): sampled
// from /proc twice a second and averaged per report. Sampling keeps its
// /proc files open and re-reads them with pread into one buffer, so a
// sample costs a few syscalls and almost no allocation. macOS has no /proc:
// there only disk space and GPUs are reported (stats_darwin.go).

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	pfStat = iota
	pfMeminfo
	pfDiskstats
	pfNetDev
	pfCount
)

var procFileNames = [pfCount]string{"stat", "meminfo", "diskstats", "net/dev"}

const (
	statsInterval     = 500 * time.Millisecond
	statsRefreshEvery = 120 // samples between refreshing the disk list and pruning counters
	bytesPerMB        = 1 << 20
)

// ioCounter is a device's last cumulative byte counts (read/write or rx/tx);
// gen is the sample that saw it, so a device missing from one sample
// does not give a bogus delta.
type ioCounter struct {
	a, b uint64
	gen  uint64
}

type gpuKey struct{ index, mig int }

// statsAcc sums samples until the next snapshot.
type statsAcc struct {
	nMem                                     int
	memUsed, memFree                         float64
	nCPU                                     int
	cpu                                      float64
	nRate                                    int
	diskRead, diskWrite, netRx, netTx        float64
	nHome, nTemp                             int
	diskHome, diskTemp                       float64
	nGPU                                     int
	gpuKeys                                  []gpuKey
	gpuUtil, gpuMemUsed, gpuMemFree, gpuTemp []float64
}

// statsSampler samples machine stats; run it with run, read with snapshot.
type statsSampler struct {
	procRoot, sysRoot  string
	homePath, tempPath string
	interval           time.Duration
	gpus               *gpuSet
	gpuInterval        time.Duration
	gpuMaxAge          time.Duration
	gpuDefaultUtil     float64 // for GPUs without a reading (MIG); 0 when disabled

	// sampler goroutine only
	lastGPU   *gpuReading // the reading last published to the metrics
	files     [pfCount]*os.File
	buf       []byte
	gen       uint64
	prevT     time.Time
	prevBusy  uint64
	prevTotal uint64
	haveCPU   bool
	disks     map[string]bool // physical disks; nil: guess by name
	prevDisk  map[string]*ioCounter
	prevNet   map[string]*ioCounter

	mu  sync.Mutex
	acc statsAcc
}

// newStatsSampler reads agent.resource_monitoring.* from cfg (nil: defaults).
// gpus nil means no GPU stats.
func newStatsSampler(cfg *agentConfig, gpus *gpuSet) *statsSampler {
	s := &statsSampler{
		procRoot:       statsProcRoot,
		sysRoot:        "/sys",
		tempPath:       os.TempDir(),
		interval:       statsInterval,
		gpus:           gpus,
		gpuDefaultUtil: 100,
		buf:            make([]byte, 16<<10),
		prevDisk:       map[string]*ioCounter{},
		prevNet:        map[string]*ioCounter{},
	}
	env := envLookup(os.LookupEnv)
	if cfg != nil {
		env = cfg.env
		s.homePath = cfg.str("agent.resource_monitoring.disk_use_path")
		if v, ok := cfg.lookup("agent.resource_monitoring.default_gpu_utilization"); ok {
			s.gpuDefaultUtil = 0
			if v != nil {
				s.gpuDefaultUtil = cfg.float("agent.resource_monitoring.default_gpu_utilization", 100)
			}
		}
	}
	if s.homePath == "" {
		s.homePath = homeDir(env)
	}
	s.homePath = expandHomeEnv(s.homePath, env)
	if gpus != nil {
		// nvidia-smi is a process per call: poll it less often than NVML.
		s.gpuInterval = 5 * time.Second
		if gpus.backend != nil && gpus.backend.name() == "NVML" {
			s.gpuInterval = statsInterval
		}
		s.gpuMaxAge = 3*s.gpuInterval + gpus.timeout
	}
	return s
}

// run samples every interval until ctx ends; GPUs are polled in their own
// goroutine so a slow driver never delays a sample.
func (s *statsSampler) run(ctx context.Context) {
	if s.gpus != nil {
		go s.gpus.poll(ctx, s.gpuInterval)
	}
	defer s.close()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	s.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

func (s *statsSampler) close() {
	for i, f := range s.files {
		if f != nil {
			f.Close()
			s.files[i] = nil
		}
	}
}

// readProc returns the content of one /proc file (only the start when
// firstLine), reusing s.buf. nil without /proc (macOS).
func (s *statsSampler) readProc(which int, firstLine bool) []byte {
	if s.procRoot == "" {
		return nil
	}
	f := s.files[which]
	if f == nil {
		var err error
		if f, err = os.Open(filepath.Join(s.procRoot, procFileNames[which])); err != nil {
			return nil
		}
		s.files[which] = f
	}
	for {
		n, err := f.ReadAt(s.buf, 0)
		if err != nil && err != io.EOF {
			f.Close()
			s.files[which] = nil
			return nil
		}
		if n < len(s.buf) || firstLine {
			return s.buf[:n]
		}
		s.buf = make([]byte, 2*len(s.buf))
	}
}

// sampleValues is one sample; ok flags say which parts were read.
type sampleValues struct {
	cpu                               float64
	cpuOK                             bool
	memUsed, memFree                  float64
	memOK                             bool
	diskRead, diskWrite, netRx, netTx float64
	rateOK                            bool
	diskHome, diskTemp                float64
	homeOK, tempOK                    bool
}

// sample takes one reading at now and adds it to the running sums.
func (s *statsSampler) sample(now time.Time) {
	if s.gen%statsRefreshEvery == 0 {
		s.disks = physicalDisks(s.sysRoot)
		if s.gen > 0 {
			pruneCounters(s.prevDisk, s.gen)
			pruneCounters(s.prevNet, s.gen)
		}
	}
	s.gen++
	var v sampleValues
	var dt float64
	if !s.prevT.IsZero() {
		dt = now.Sub(s.prevT).Seconds()
	}
	s.prevT = now

	if busy, total, ok := parseProcStat(s.readProc(pfStat, true)); ok {
		if s.haveCPU && total > s.prevTotal && busy >= s.prevBusy {
			v.cpu = 100 * float64(busy-s.prevBusy) / float64(total-s.prevTotal)
			v.cpuOK = true
		}
		s.prevBusy, s.prevTotal, s.haveCPU = busy, total, true
	}
	if used, free, ok := parseMeminfo(s.readProc(pfMeminfo, false)); ok {
		v.memUsed, v.memFree, v.memOK = used, free, true
	}
	disk := s.readProc(pfDiskstats, false)
	rd, wr := s.diskDelta(disk)
	net := s.readProc(pfNetDev, false)
	rx, tx := s.netDelta(net)
	if dt > 0 && (disk != nil || net != nil) {
		v.diskRead, v.diskWrite = rd/bytesPerMB/dt, wr/bytesPerMB/dt
		v.netRx, v.netTx = rx/bytesPerMB/dt, tx/bytesPerMB/dt
		v.rateOK = true
	}
	v.diskHome, v.homeOK = diskFreePercent(s.homePath)
	v.diskTemp, v.tempOK = diskFreePercent(s.tempPath)

	var gr *gpuReading
	if s.gpus != nil {
		gr = s.gpus.latest(now, s.gpuMaxAge)
	}
	s.mu.Lock()
	s.acc.add(&v)
	if gr != nil {
		s.acc.addGPU(gr.gpus, s.gpuDefaultUtil)
	}
	s.mu.Unlock()
	if m := metricsOn(); m != nil && gr != nil && gr != s.lastGPU {
		s.lastGPU = gr // a new reading: published once, not per sample
		m.setGPUReadings(gr.gpus)
	}
}

func (a *statsAcc) add(v *sampleValues) {
	if v.cpuOK {
		a.nCPU++
		a.cpu += v.cpu
	}
	if v.memOK {
		a.nMem++
		a.memUsed += v.memUsed
		a.memFree += v.memFree
	}
	if v.rateOK {
		a.nRate++
		a.diskRead += v.diskRead
		a.diskWrite += v.diskWrite
		a.netRx += v.netRx
		a.netTx += v.netTx
	}
	if v.homeOK {
		a.nHome++
		a.diskHome += v.diskHome
	}
	if v.tempOK {
		a.nTemp++
		a.diskTemp += v.diskTemp
	}
}

// addGPU adds one GPU reading; if the set of GPUs changed, the GPU sums
// restart so each list position stays one GPU.
func (a *statsAcc) addGPU(gpus []gpuInfo, defUtil float64) {
	same := len(gpus) == len(a.gpuKeys)
	for i := 0; same && i < len(gpus); i++ {
		same = a.gpuKeys[i] == gpuKey{gpus[i].Index, gpus[i].MIG}
	}
	if !same {
		a.nGPU = 0
		a.gpuKeys = a.gpuKeys[:0]
		for _, g := range gpus {
			a.gpuKeys = append(a.gpuKeys, gpuKey{g.Index, g.MIG})
		}
		a.gpuUtil = statsResize(a.gpuUtil, len(gpus))
		a.gpuMemUsed = statsResize(a.gpuMemUsed, len(gpus))
		a.gpuMemFree = statsResize(a.gpuMemFree, len(gpus))
		a.gpuTemp = statsResize(a.gpuTemp, len(gpus))
	}
	a.nGPU++
	for i, g := range gpus {
		util := defUtil
		if g.HasUtil {
			util = g.Util
		}
		a.gpuUtil[i] += util
		if g.HasMem {
			a.gpuMemUsed[i] += g.MemUsedMB
			a.gpuMemFree[i] += math.Max(0, g.MemTotalMB-g.MemUsedMB)
		}
		if g.HasTemp {
			a.gpuTemp[i] += g.Temp
		}
	}
}

func statsResize(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// snapshot returns the averages since the previous snapshot, keyed and in
// units as machine_stats wants them (rounded to 3 decimals), and starts
// a new period. nil when nothing was sampled.
func (s *statsSampler) snapshot() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &s.acc
	if a.nMem+a.nCPU+a.nRate+a.nHome+a.nGPU == 0 {
		return nil
	}
	m := map[string]any{}
	avg := func(sum float64, n int) float64 { return statsRound3(sum / float64(n)) }
	// One averaged value, as the reference sends: the server and UI treat
	// the list as one series, and per-core values would change their graphs.
	if a.nCPU > 0 {
		m["cpu_usage"] = []float64{avg(a.cpu, a.nCPU)}
	}
	if a.nMem > 0 {
		m["memory_used"] = avg(a.memUsed, a.nMem)
		m["memory_free"] = avg(a.memFree, a.nMem)
	}
	if a.nRate > 0 {
		m["disk_read"] = avg(a.diskRead, a.nRate)
		m["disk_write"] = avg(a.diskWrite, a.nRate)
		m["network_rx"] = avg(a.netRx, a.nRate)
		m["network_tx"] = avg(a.netTx, a.nRate)
	}
	if a.nHome > 0 {
		m["disk_free_home"] = avg(a.diskHome, a.nHome)
	}
	if a.nTemp > 0 {
		m["disk_free_temp"] = avg(a.diskTemp, a.nTemp)
	}
	if a.nGPU > 0 && len(a.gpuKeys) > 0 {
		list := func(sums []float64) []float64 {
			out := make([]float64, len(sums))
			for i, x := range sums {
				out[i] = avg(x, a.nGPU)
			}
			return out
		}
		m["gpu_usage"] = list(a.gpuUtil)
		m["gpu_memory_used"] = list(a.gpuMemUsed)
		m["gpu_memory_free"] = list(a.gpuMemFree)
		m["gpu_temperature"] = list(a.gpuTemp)
	}
	keys, util, used, free, temp := a.gpuKeys[:0], a.gpuUtil, a.gpuMemUsed, a.gpuMemFree, a.gpuTemp
	*a = statsAcc{gpuKeys: keys, gpuUtil: util[:0], gpuMemUsed: used[:0], gpuMemFree: free[:0], gpuTemp: temp[:0]}
	return m
}

func statsRound3(x float64) float64 { return math.Round(x*1000) / 1000 }

// --- /proc parsing: byte level, no allocation ---

// procLine splits b at the first newline.
func procLine(b []byte) (line, rest []byte) {
	for i, c := range b {
		if c == '\n' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// procField returns the next space-separated field of b and the rest.
func procField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], b[j:]
}

func procUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// parseProcStat reads the aggregate "cpu" line: busy and total jiffies.
// iowait counts as idle and guest time is already in user, as psutil does.
func parseProcStat(b []byte) (busy, total uint64, ok bool) {
	line, _ := procLine(b)
	f, rest := procField(line)
	if string(f) != "cpu" {
		return 0, 0, false
	}
	var idle uint64
	// user nice system idle iowait irq softirq steal [guest guest_nice]
	for i := 0; i < 8; i++ {
		f, rest = procField(rest)
		n, okN := procUint(f)
		if !okN {
			if i < 4 {
				return 0, 0, false
			}
			break
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return total - idle, total, true
}

// parseMeminfo gives used and available memory in MB. used is
// total - free - buffers - cached - reclaimable slab, as psutil (and free).
func parseMeminfo(b []byte) (usedMB, freeMB float64, ok bool) {
	var total, free, avail, buffers, cached, srecl uint64
	var haveTotal, haveAvail bool
	for len(b) > 0 {
		var line []byte
		line, b = procLine(b)
		key, rest := procField(line)
		var dst *uint64
		switch string(key) {
		case "MemTotal:":
			dst, haveTotal = &total, true
		case "MemFree:":
			dst = &free
		case "MemAvailable:":
			dst, haveAvail = &avail, true
		case "Buffers:":
			dst = &buffers
		case "Cached:":
			dst = &cached
		case "SReclaimable:":
			dst = &srecl
		default:
			continue
		}
		f, _ := procField(rest)
		*dst, _ = procUint(f)
	}
	if !haveTotal {
		return 0, 0, false
	}
	if !haveAvail { // kernels before 3.14
		avail = free + buffers + cached
	}
	used := total - free
	if c := buffers + cached + srecl; c < used {
		used -= c
	}
	return float64(used) / 1024, float64(avail) / 1024, true
}

// diskDelta sums the bytes read and written on physical disks since the
// previous sample.
func (s *statsSampler) diskDelta(b []byte) (rd, wr float64) {
	for len(b) > 0 {
		var line []byte
		line, b = procLine(b)
		_, rest := procField(line) // major
		_, rest = procField(rest)  // minor
		name, rest := procField(rest)
		if len(name) == 0 || !s.isDisk(name) {
			continue
		}
		var v [7]uint64 // reads merged sectors ms writes merged sectors
		if !procUints(rest, v[:]) {
			continue
		}
		r, w := counterDelta(s.prevDisk, name, v[2]*512, v[6]*512, s.gen) // sectors are always 512 bytes here
		rd += r
		wr += w
	}
	return rd, wr
}

// procUints reads len(v) leading numeric fields of b into v.
func procUints(b []byte, v []uint64) bool {
	for i := range v {
		var f []byte
		f, b = procField(b)
		var ok bool
		if v[i], ok = procUint(f); !ok {
			return false
		}
	}
	return true
}

// netDelta sums bytes received and sent on every interface but lo.
func (s *statsSampler) netDelta(b []byte) (rx, tx float64) {
	for len(b) > 0 {
		var line []byte
		line, b = procLine(b)
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
		}
		if colon < 0 {
			continue // header
		}
		name, _ := procField(line[:colon])
		if len(name) == 0 || string(name) == "lo" {
			continue
		}
		rest := line[colon+1:]
		var v [9]uint64 // rx bytes, 7 more rx fields, tx bytes
		if !procUints(rest, v[:]) {
			continue
		}
		r, t := counterDelta(s.prevNet, name, v[0], v[8], s.gen)
		rx += r
		tx += t
	}
	return rx, tx
}

// counterDelta records a device's counters and returns the growth since
// the previous sample (0 for a new device or a counter that went back).
func counterDelta(prev map[string]*ioCounter, name []byte, a, b, gen uint64) (da, db float64) {
	p := prev[string(name)]
	if p == nil {
		p = &ioCounter{}
		prev[string(name)] = p
	} else if p.gen == gen-1 {
		if a >= p.a {
			da = float64(a - p.a)
		}
		if b >= p.b {
			db = float64(b - p.b)
		}
	}
	p.a, p.b, p.gen = a, b, gen
	return da, db
}

// pruneCounters forgets devices not seen lately (container veths come and go).
func pruneCounters(m map[string]*ioCounter, gen uint64) {
	for k, p := range m {
		if p.gen+2 < gen {
			delete(m, k)
		}
	}
}

func (s *statsSampler) isDisk(name []byte) bool {
	if s.disks != nil {
		return s.disks[string(name)]
	}
	return guessWholeDisk(name)
}

// physicalDisks lists block devices backed by hardware (/sys/block/X/device
// exists): whole disks, not partitions, loop, dm, md or zram, so I/O is not
// counted twice. nil when /sys is not readable.
func physicalDisks(sysRoot string) map[string]bool {
	ents, err := os.ReadDir(filepath.Join(sysRoot, "block"))
	if err != nil {
		return nil
	}
	m := map[string]bool{}
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(sysRoot, "block", e.Name(), "device")); err == nil {
			m[e.Name()] = true
		}
	}
	return m
}

// guessWholeDisk is the fallback without /sys: common whole-disk names.
func guessWholeDisk(name []byte) bool {
	letters := func(b []byte) bool {
		for _, c := range b {
			if c < 'a' || c > 'z' {
				return false
			}
		}
		return len(b) > 0
	}
	has := func(p string) bool { return len(name) > len(p) && string(name[:len(p)]) == p }
	switch {
	case has("xvd"):
		return letters(name[3:])
	case has("sd"), has("hd"), has("vd"):
		return letters(name[2:])
	case has("nvme"), has("mmcblk"):
		for _, c := range name {
			if c == 'p' {
				return false // a partition: nvme0n1p1, mmcblk0p1
			}
		}
		return true
	}
	return false
}

// diskFreePercent is 100 - psutil's disk_usage(path).percent.
func diskFreePercent(path string) (float64, bool) {
	var st unix.Statfs_t
	if path == "" || unix.Statfs(path, &st) != nil {
		return 0, false
	}
	bs := statfsBlockSize(&st)
	used := (st.Blocks - st.Bfree) * bs
	avail := st.Bavail * bs
	if used+avail == 0 {
		return 0, false
	}
	pct := math.Round(float64(used)/float64(used+avail)*1000) / 10
	return 100 - pct, true
}
