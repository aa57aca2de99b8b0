//go:build nvml && cgo

package main

// The build_info metric says whether this build has the NVML backend.
func init() { buildNVML = true }
