#!/usr/bin/env bash
# The test command: every test of the repository in one `go test` run.
# Where the Kubernetes test binaries are built (../shared/k8s/build.sh, once
# per machine), the run goes under a fresh control plane
# (testdata/k8s/with-cluster.sh) so the TestK8s* tests have one; elsewhere
# they skip with a message (and fail with CI=true, where .ci/run builds them).
# Extra arguments go to `go test` (e.g. -run, -short).
set -euo pipefail
cd "$(dirname "$0")/.."
run=(go test -race -timeout 75m "$@" ./... ./testdata/fakeserver)
home="${K8S_TEST_HOME:-$HOME/.cache/clearml-k8s-test}"
if [ -x "$home/bin/kwok" ] && command -v kubectl >/dev/null; then
  exec testdata/k8s/with-cluster.sh "${run[@]}"
fi
echo "test.sh: no Kubernetes test binaries in $home (run ../shared/k8s/build.sh): the TestK8s* tests will skip" >&2
exec "${run[@]}"
