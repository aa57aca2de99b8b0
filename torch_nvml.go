//go:build nvml && cgo

package main

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlCUDADriverVersion is the driver's CUDA version through NVML (12040
// for 12.4), or nil when NVML is not there.
func nvmlCUDADriverVersion() func() (int, error) {
	if _, err := newNVMLBackend(); err != nil {
		return nil
	}
	return func() (int, error) {
		v, r := nvml.SystemGetCudaDriverVersion()
		if r != nvml.SUCCESS {
			return 0, fmt.Errorf("NVML: %s", nvml.ErrorString(r))
		}
		return v, nil
	}
}
