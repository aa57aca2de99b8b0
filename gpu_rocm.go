package main

// AMD GPUs (ROCm). The reference supports them since 3.0 through
// librocm_smi64; this binary stays static and asks the rocm-smi tool
// instead, the way it asks nvidia-smi on NVIDIA hosts:
//
//   - stats and detection: one `rocm-smi ... --json` call per poll
//     (rocmSMIArgs), parsed by parseROCmSMI;
//   - a task's --gpus: HIP_VISIBLE_DEVICES besides CUDA_VISIBLE_DEVICES
//     (rocmEnv);
//   - docker mode: /dev/kfd plus the selected GPUs' render nodes
//     (rocmDockerArgs) instead of `--gpus`.
//
// An AMD host is one with /dev/kfd and no NVIDIA device, as the
// reference decides (helper/gpu/util.py detect_rocm_env).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// gpuDevices reports whether the host has an AMD compute device (/dev/kfd)
// and an NVIDIA one; tests replace it.
var gpuDevices = sync.OnceValues(func() (amd, nvidia bool) { return probeGPUDevices("/") })

// probeGPUDevices looks for the device files under root.
func probeGPUDevices(root string) (amd, nvidia bool) {
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(root, p)); return err == nil }
	return exists("dev/kfd"), exists("dev/nvidia0") || exists("proc/driver/nvidia")
}

// rocmHost: an AMD GPU host without NVIDIA GPUs.
func rocmHost() bool {
	amd, nvidia := gpuDevices()
	return amd && !nvidia
}

// findROCmSMI finds rocm-smi on PATH, else in $ROCM_PATH/bin or
// /opt/rocm/bin (ROCm installs there and does not always touch PATH).
func findROCmSMI(env envLookup) string {
	if p, err := exec.LookPath("rocm-smi"); err == nil {
		return p
	}
	dirs := []string{"/opt/rocm/bin"}
	if r, ok := env("ROCM_PATH"); ok && r != "" {
		dirs = append([]string{filepath.Join(r, "bin")}, dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, "rocm-smi")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// rocmSMIArgs: identity (name, unique id, PCI bus) and the readings in one
// call; rocm-smi starts a Python interpreter, so one call per poll.
var rocmSMIArgs = []string{"--showid", "--showuniqueid", "--showbus", "--showproductname",
	"--showuse", "--showmeminfo", "vram", "--showtemp", "--json"}

type rocmBackend struct{ path string }

func (b rocmBackend) name() string { return "rocm-smi" }

func (b rocmBackend) query(ctx context.Context) ([]gpuInfo, []string, error) {
	out, err := runGPUTool(ctx, b.path, "rocm-smi", rocmSMIArgs...)
	if err != nil {
		return nil, nil, err
	}
	return parseROCmSMI(out)
}

// rocm-smi's JSON keys. Names changed case between ROCm 5 ("Card series")
// and 6 ("Card Series"), so keys are matched without case.
var (
	rocmNameKeys = []string{"Device Name", "Card Series", "Card Model"}
	rocmTempKeys = []string{"Temperature (Sensor edge) (C)", "Temperature (Sensor junction) (C)", "Temperature (Sensor memory) (C)"}
)

// parseROCmSMI reads `rocm-smi --json`: {"card0": {"GPU use (%)": "12",
// ...}, "system": {...}}. Every value is a string; "N/A" (and "None")
// leave a reading unset. Memory is in bytes.
func parseROCmSMI(out []byte) ([]gpuInfo, []string, error) {
	// Tolerate text around the JSON (a warning printed to stdout).
	i, j := bytes.IndexByte(out, '{'), bytes.LastIndexByte(out, '}')
	if i < 0 || j < i {
		return nil, nil, fmt.Errorf("rocm-smi printed no JSON: %q", firstLine(string(out)))
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(out[i:j+1], &doc); err != nil {
		return nil, nil, fmt.Errorf("rocm-smi printed unreadable JSON: %v", err)
	}
	var gpus []gpuInfo
	var warns []string
	seen := map[int]bool{}
	for card, fields := range doc {
		num, ok := strings.CutPrefix(card, "card")
		idx, err := strconv.Atoi(num)
		if !ok || err != nil || idx < 0 || seen[idx] || strconv.Itoa(idx) != num {
			if card != "system" {
				warns = append(warns, fmt.Sprintf("rocm-smi: skipping unexpected entry %q", card))
			}
			continue
		}
		seen[idx] = true
		gpus = append(gpus, rocmGPU(idx, fields))
	}
	sortGPUs(gpus)
	return gpus, warns, nil
}

// rocmGPU reads one card's fields.
func rocmGPU(idx int, fields map[string]any) gpuInfo {
	get := func(key string) (string, bool) {
		for k, v := range fields {
			if strings.EqualFold(k, key) {
				s := strings.TrimSpace(fmt.Sprint(v))
				if s == "" || strings.EqualFold(s, "N/A") || s == "None" || s == "<nil>" {
					return "", false
				}
				return s, true
			}
		}
		return "", false
	}
	num := func(key string) (float64, bool) {
		s, ok := get(key)
		if !ok {
			return 0, false
		}
		return smiNumber(s)
	}
	g := gpuInfo{Index: idx, MIG: -1}
	for _, k := range rocmNameKeys {
		if v, ok := get(k); ok {
			g.Name = v
			break
		}
	}
	if v, ok := get("Unique ID"); ok {
		if u, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), 16, 64); err == nil {
			// The form ROCR_VISIBLE_DEVICES and rocminfo use.
			g.UUID = fmt.Sprintf("GPU-%016x", u)
		}
	}
	g.PCIBus, _ = get("PCI Bus")
	total, okT := num("VRAM Total Memory (B)")
	used, okU := num("VRAM Total Used Memory (B)")
	if okT && okU {
		g.MemTotalMB, g.MemUsedMB, g.HasMem = total/bytesPerMB, used/bytesPerMB, true
	}
	g.Util, g.HasUtil = num("GPU use (%)")
	for _, k := range rocmTempKeys {
		if g.Temp, g.HasTemp = num(k); g.HasTemp {
			break
		}
	}
	return g
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// rocmEnv adds HIP_VISIBLE_DEVICES to a task's environment on an AMD host,
// after gpuEnv set CUDA_VISIBLE_DEVICES (which HIP also reads, but only
// when HIP_VISIBLE_DEVICES is unset, and "none" is not a HIP value).
// ROCR_VISIBLE_DEVICES is left alone on purpose: HIP numbers its devices
// within the ROCr-visible ones, so giving both the same host indices (as
// the reference does in docker mode) hides the GPUs for any selection but
// "0", "0,1", ...
func rocmEnv(env map[string]string, gpus string, cpuOnly bool) {
	switch {
	case cpuOnly:
		env["HIP_VISIBLE_DEVICES"] = "-1"
	case strings.EqualFold(gpus, "all"):
		delete(env, "HIP_VISIBLE_DEVICES")
	case gpus != "":
		env["HIP_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
	}
}

// rocmDockerArgs are the `docker run` flags that give a container the
// AMD GPUs in visible ("" or "all": every GPU; else a list of indices or
// GPU- unique ids): /dev/kfd, and /dev/dri for all GPUs or one render node
// per selected GPU. Inside, ROCm sees only those GPUs, numbered from 0, so
// no HIP_/ROCR_VISIBLE_DEVICES is passed (the reference passes the host
// indices, which hides GPUs unless the selection starts at 0).
func rocmDockerArgs(visible string) []string {
	return rocmDockerArgsAt(visible, "/sys")
}

func rocmDockerArgsAt(visible, sysRoot string) []string {
	args := []string{"--device=/dev/kfd"}
	if visible == "" || strings.EqualFold(visible, "all") {
		args = append(args, "--device=/dev/dri")
	} else {
		nodes := rocmRenderNodes(sysRoot)
		ids, err := gpuListItems(visible)
		if err != nil {
			ids = strings.Split(visible, ",")
		}
		for _, id := range ids {
			if minor, ok := rocmRenderMinor(id, nodes); ok {
				args = append(args, fmt.Sprintf("--device=/dev/dri/renderD%d", minor))
			}
		}
	}
	return append(args, "--group-add", "video")
}

// kfdGPU is one GPU node of the KFD topology.
type kfdGPU struct {
	renderMinor int
	uniqueID    uint64
}

// rocmRenderNodes lists the GPU nodes of the KFD topology in node order,
// which is the order HIP numbers devices in. nil when it cannot be read.
func rocmRenderNodes(sysRoot string) []kfdGPU {
	dir := filepath.Join(sysRoot, "class", "kfd", "kfd", "topology", "nodes")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var ids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			ids = append(ids, n)
		}
	}
	sort.Ints(ids)
	var out []kfdGPU
	for _, n := range ids {
		data, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(n), "properties"))
		if err != nil {
			continue
		}
		props := map[string]uint64{}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				if x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
					props[k] = x
				}
			}
		}
		if props["simd_count"] > 0 && props["drm_render_minor"] > 0 {
			out = append(out, kfdGPU{renderMinor: int(props["drm_render_minor"]), uniqueID: props["unique_id"]})
		}
	}
	return out
}

// rocmRenderMinor maps a --gpus entry to its render node's minor number:
// an index through the topology (else 128+index, the reference's rule), a
// GPU- unique id through the topology only.
func rocmRenderMinor(id string, nodes []kfdGPU) (int, bool) {
	if n, err := strconv.Atoi(id); err == nil && n >= 0 {
		if nodes == nil {
			return 128 + n, true
		}
		if n < len(nodes) {
			return nodes[n].renderMinor, true
		}
		return 0, false
	}
	if hex, ok := strings.CutPrefix(strings.ToUpper(id), "GPU-"); ok {
		if u, err := strconv.ParseUint(hex, 16, 64); err == nil {
			for _, g := range nodes {
				if g.uniqueID == u {
					return g.renderMinor, true
				}
			}
		}
	}
	return 0, false
}
