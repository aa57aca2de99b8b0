//go:build !nvml || !cgo

package main

import "errors"

// errNoNVML: this build has no NVML backend (build with -tags nvml and cgo).
var errNoNVML = errors.New("built without NVML")

func newNVMLBackend() (gpuBackend, error) { return nil, errNoNVML }
