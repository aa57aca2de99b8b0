#!/usr/bin/env bash
# The GPU check of issue 6, for a machine with a real NVIDIA driver.
#
#   bash testdata/gpu/device-check.sh prepare     # here, with Go: builds into .gpucheck/
#   bash testdata/gpu/device-check.sh run [DIR]   # there: needs bash, git, python3, nvidia-smi
#   bash testdata/gpu/device-check.sh dryrun      # anywhere: run, with testdata/gpu/fake's
#                                                 # nvidia-smi and torch (checks the check)
#
# With the device tool: prepare here, then
#   run(command="bash testdata/gpu/device-check.sh run $OUT", carry=[".gpucheck"], timeout_s=420)
#
# `run` does, in about three minutes:
#   1. nvidia-smi -L and the GPU unit tests (TestGPURealDevice), with the
#      nvidia-smi backend and with NVML (-tags nvml);
#   2. devicecheck (testdata/gpu/devicecheck): the static agent as
#      `daemon --gpus 0`, then the NVML agent as `daemon --gpus <GPU 0's UUID>`,
#      each against the stand-in server with a task that prints
#      torch.cuda.device_count() and holds 4 GiB while keeping the GPU busy;
#      every status report's GPU fields are compared with nvidia-smi.
# The whole output also goes to DIR/device-check.log when DIR is given.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.gpucheck

case "${1:-}" in
prepare)
  mkdir -p "$bin"
  grep -qx '/.gpucheck/' .git/info/exclude 2>/dev/null || echo '/.gpucheck/' >> .git/info/exclude
  flags=(-trimpath -ldflags='-s -w')
  CGO_ENABLED=0 go build "${flags[@]}" -o "$bin/clearml-agent" .
  CGO_ENABLED=0 go build "${flags[@]}" -o "$bin/devicecheck" ./testdata/gpu/devicecheck
  CGO_ENABLED=0 go test -c "${flags[@]}" -o "$bin/gpu.test" .
  # NVML needs cgo; go-nvml's header warns about deprecated calls we don't use.
  export CGO_CFLAGS="${CGO_CFLAGS:-} -Wno-deprecated-declarations"
  CGO_ENABLED=1 go build "${flags[@]}" -tags nvml -o "$bin/clearml-agent-nvml" .
  CGO_ENABLED=1 go test -c "${flags[@]}" -tags nvml -o "$bin/gpu-nvml.test" .
  ls -l "$bin"
  du -sh "$bin"
  ;;
run)
  out="${2:-}"
  if [ -n "$out" ]; then
    mkdir -p "$out"
    exec > >(tee "$out/device-check.log") 2>&1
  fi
  for f in clearml-agent clearml-agent-nvml devicecheck gpu.test gpu-nvml.test; do
    [ -x "$bin/$f" ] || { echo "device-check: error: $bin/$f is missing; run 'bash $0 prepare' first (with Go)"; exit 2; }
  done
  export PYTHONUNBUFFERED=1
  date -u; uname -a
  nvidia-smi -L
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
  status=0
  echo; echo "=== unit tests on the real driver (nvidia-smi backend) ==="
  CLEARML_AGENT_TEST_BINARY="$PWD/$bin/clearml-agent" "$bin/gpu.test" -test.count=1 -test.v -test.run 'TestGPURealDevice' || status=1
  echo; echo "=== unit tests on the real driver (NVML backend) ==="
  expect_nvml=1
  [ -n "${CLEARML_GPUCHECK_DRYRUN:-}" ] && expect_nvml=0 # the fakes have no libnvidia-ml
  CLEARML_AGENT_EXPECT_NVML=$expect_nvml CLEARML_AGENT_TEST_BINARY="$PWD/$bin/clearml-agent-nvml" "$bin/gpu-nvml.test" -test.count=1 -test.v -test.run 'TestGPURealDevice' || status=1
  echo
  "$bin/devicecheck" -run "$bin/clearml-agent=0" -run "$bin/clearml-agent-nvml=uuid0" "${@:3}" || status=1
  echo; echo "device-check: exit $status"
  exit $status
  ;;
dryrun)
  FAKE_SMI_STATE=$(mktemp)
  echo 0 > "$FAKE_SMI_STATE"
  trap 'rm -f "$FAKE_SMI_STATE"' EXIT
  export CLEARML_GPUCHECK_DRYRUN=1 FAKE_SMI_STATE PATH="$PWD/testdata/gpu/fake/bin:$PATH" PYTHONPATH="$PWD/testdata/gpu/fake/py${PYTHONPATH:+:$PYTHONPATH}"
  bash "$0" run "${@:2}"
  ;;
*)
  echo "usage: bash testdata/gpu/device-check.sh prepare | run [DIR] [devicecheck flags] | dryrun [DIR]" >&2
  exit 2
  ;;
esac
