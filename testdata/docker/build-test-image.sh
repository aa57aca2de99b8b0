#!/usr/bin/env bash
# Builds the image the docker tests run tasks in: Debian bookworm with
# python3, venv and git, and no clearml-agent. No registry is needed: the
# root file system comes from debootstrap and is imported with `docker import`.
# Skips the build when the image already exists.
set -euo pipefail
image="${CLEARML_TEST_IMAGE:-clearml-agent-test:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! docker info >/dev/null 2>&1; then
  echo "build-test-image: no Docker engine answers; not building $image" >&2
  exit 1
fi
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-test-image: $image already exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /tmp/clearml-test-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
# Leaner image: the package lists and docs are not needed by the tests.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image"
echo "build-test-image: built $image"
