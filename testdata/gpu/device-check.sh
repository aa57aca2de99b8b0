#!/usr/bin/env bash
# The GPU checks that need a real NVIDIA driver (issue 6): run on a GPU
# machine, e.g. through the device tool, from the repository root.
set -euo pipefail
nvidia-smi -L
go test -count=1 -run 'TestGPURealDevice|GPU|Stats' -v . 2>&1 | tail -40
if command -v gcc >/dev/null; then
  CGO_ENABLED=1 go test -count=1 -tags nvml -run 'TestGPURealDevice' -v . 2>&1 | tail -20
fi
