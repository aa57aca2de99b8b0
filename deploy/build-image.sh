#!/usr/bin/env bash
# Builds the agent's image (deploy/Dockerfile) from this checkout: a static
# binary and the host's CA bundle, FROM scratch. No registry is needed.
# usage: deploy/build-image.sh [IMAGE]   (default clearml-agent:local, or $CLEARML_AGENT_IMAGE)
# Rebuilds only when the Dockerfile, binary or bundle changed: the image carries their
# sha256 as a label.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-${CLEARML_AGENT_IMAGE:-clearml-agent:local}}"
certs="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
docker info >/dev/null 2>&1 || { echo "build-image: no Docker engine answers; start one or set DOCKER_HOST" >&2; exit 1; }
[ -r "$certs" ] || { echo "build-image: no CA bundle at $certs; install ca-certificates or set CA_BUNDLE" >&2; exit 1; }
ctx=$(mktemp -d "${TMPDIR:-/tmp}/clearml-agent-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$ctx/clearml-agent" .
cp "$certs" "$ctx/ca-certificates.crt"
mkdir -m 1777 "$ctx/tmp"
sum=$(cat deploy/Dockerfile "$ctx/clearml-agent" "$ctx/ca-certificates.crt" | sha256sum | cut -c1-64)
if [ "$(docker image inspect -f '{{index .Config.Labels "ai.clear.ml.agent.sha256"}}' "$image" 2>/dev/null)" = "$sum" ]; then
  echo "build-image: $image is up to date"
  exit 0
fi
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
# The legacy builder's deprecation notice is noise: show the output only on failure.
if ! out=$(docker build -q -f deploy/Dockerfile --label "ai.clear.ml.agent.sha256=$sum" -t "$image" "$ctx" 2>&1); then
  echo "$out" >&2; echo "build-image: docker build failed" >&2; exit 1
fi
# The replaced build would linger untagged: remove it (unless a container still uses it).
[ -z "$old" ] || [ "$old" = "$(docker image inspect -f '{{.Id}}' "$image")" ] || docker rmi "$old" >/dev/null 2>&1 || true
echo "build-image: built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
