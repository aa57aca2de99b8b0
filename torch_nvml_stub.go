//go:build !nvml || !cgo

package main

// nvmlCUDADriverVersion: this build has no NVML (nvidia-smi answers instead).
func nvmlCUDADriverVersion() func() (int, error) { return nil }
