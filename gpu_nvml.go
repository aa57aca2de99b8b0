//go:build nvml && cgo

package main

// NVML backend. go-nvml opens libnvml.so with dlopen at run time, so this
// binary still starts on machines without the NVIDIA driver.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// errNoNVML: no NVIDIA driver library on this machine (not worth a warning).
var errNoNVML = errors.New("NVML library not found")

var nvmlInit struct {
	once  sync.Once
	ret   nvml.Return
	memV2 bool // nvmlDeviceGetMemoryInfo_v2 exists (drivers since 510)
}

// newNVMLBackend initialises NVML once for the process; it stays loaded
// because the sampler reads it twice a second.
func newNVMLBackend() (gpuBackend, error) {
	nvmlInit.once.Do(func() {
		nvmlInit.ret = nvml.Init()
		nvmlInit.memV2 = nvmlInit.ret == nvml.SUCCESS && nvml.Extensions().LookupSymbol("nvmlDeviceGetMemoryInfo_v2") == nil
	})
	if r := nvmlInit.ret; r == nvml.ERROR_LIBRARY_NOT_FOUND {
		return nil, errNoNVML
	} else if r != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml.Init: %s", nvml.ErrorString(r))
	}
	return nvmlBackend{}, nil
}

type nvmlBackend struct{}

func (nvmlBackend) name() string { return "NVML" }

// query lists every GPU; a GPU in MIG mode is listed as its slices, as the
// reference does. NVML calls cannot be interrupted: gpuSet.read bounds them.
func (nvmlBackend) query(ctx context.Context) ([]gpuInfo, []string, error) {
	n, r := nvml.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, nil, fmt.Errorf("NVML: %s", nvml.ErrorString(r))
	}
	var out []gpuInfo
	var warns []string
	for i := 0; i < n && ctx.Err() == nil; i++ {
		dev, r := nvml.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			warns = append(warns, fmt.Sprintf("NVML: GPU %d: %s", i, nvml.ErrorString(r)))
			continue
		}
		g := gpuInfo{Index: i, MIG: -1}
		g.UUID, _ = dev.GetUUID()
		g.Name, _ = dev.GetName()
		if t, r := dev.GetTemperature(nvml.TEMPERATURE_GPU); r == nvml.SUCCESS {
			g.Temp, g.HasTemp = float64(t), true
		}
		if cur, _, r := dev.GetMigMode(); r == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
			out = append(out, nvmlMIGSlices(dev, g)...)
			continue
		}
		g.MemTotalMB, g.MemUsedMB, g.HasMem = nvmlMemory(dev)
		if u, r := dev.GetUtilizationRates(); r == nvml.SUCCESS {
			g.Util, g.HasUtil = float64(u.Gpu), true
		}
		out = append(out, g)
	}
	return out, warns, ctx.Err()
}

// nvmlMIGSlices lists the MIG devices of a GPU; they have no utilisation.
func nvmlMIGSlices(dev nvml.Device, parent gpuInfo) []gpuInfo {
	var out []gpuInfo
	slots, r := dev.GetMaxMigDeviceCount()
	if r != nvml.SUCCESS {
		return nil
	}
	for j := 0; j < slots; j++ {
		mig, r := dev.GetMigDeviceHandleByIndex(j)
		if r != nvml.SUCCESS {
			continue // an empty slot
		}
		g := parent
		g.MIG, g.ParentUUID = j, parent.UUID
		g.UUID, _ = mig.GetUUID()
		g.MemTotalMB, g.MemUsedMB, g.HasMem = nvmlMemory(mig)
		out = append(out, g)
	}
	return out
}

// nvmlMemory reads total and used memory. The v2 call leaves out what the
// driver reserves, as nvidia-smi does; v1 counts it as used (hundreds of
// MiB on a large card), so the two backends would disagree.
func nvmlMemory(dev nvml.Device) (total, used float64, ok bool) {
	if nvmlInit.memV2 {
		if m, r := dev.GetMemoryInfo_v2(); r == nvml.SUCCESS {
			return mib(m.Total), mib(m.Used), true
		}
	}
	if m, r := dev.GetMemoryInfo(); r == nvml.SUCCESS {
		return mib(m.Total), mib(m.Used), true
	}
	return 0, 0, false
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
