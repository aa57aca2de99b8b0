#!/usr/bin/env bash
# Builds the non-root variant of the docker test image: the same Debian
# bookworm root file system (testdata/docker/build-test-image.sh builds it)
# with a user "clearml" (uid and gid 1000, home /home/clearml) and USER 1000,
# as images that refuse to run as root are built. No registry, no network.
# Rebuilds only when this recipe or the base image changed (both are in a label).
set -euo pipefail
base="${CLEARML_TEST_IMAGE:-clearml-agent-test:bookworm}"
image="${CLEARML_TEST_NONROOT_IMAGE:-clearml-agent-test-nonroot:bookworm}"

if ! docker info >/dev/null 2>&1; then
  echo "build-nonroot-image: no Docker engine answers; not building $image" >&2
  exit 1
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null) || {
  echo "build-nonroot-image: $base is missing; build it first with testdata/docker/build-test-image.sh" >&2
  exit 1
}
dockerfile="FROM $base
RUN groupadd --gid 1000 clearml && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/clearml --shell /bin/bash clearml
ENV HOME=/home/clearml
WORKDIR /home/clearml
USER 1000"
recipe=$(printf '%s\n%s\n' "$base_id" "$dockerfile" | sha256sum | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "org.clearml.test.recipe"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$recipe" ]; then
  echo "build-nonroot-image: $image is up to date"
  exit 0
fi
# The classic builder: the buildx plugin is not needed, and there is no context.
# Its deprecation notice is shown only when the build fails.
if ! out=$(printf '%s\nLABEL org.clearml.test.recipe=%s\n' "$dockerfile" "$recipe" |
  DOCKER_BUILDKIT=0 docker build -q -t "$image" - 2>&1); then
  echo "$out" >&2
  echo "build-nonroot-image: building $image failed" >&2
  exit 1
fi
echo "build-nonroot-image: built $image"
