#!/usr/bin/env bash
# The container images, built with podman from docker/Dockerfile.operator and
# docker/Dockerfile.runtime-cpu (no Docker daemon or registry needed):
#
#   scripts/images.sh [build]        install podman when missing, make the base image once, build both
#                                    (status 3: this host cannot run containers at all; the reason
#                                    is kept for the container tests, which then skip)
#   scripts/images.sh names          print the two image references it builds
#   scripts/images.sh push           push both to their registry (podman login first)
#   scripts/images.sh podman ARGS    run podman with the configuration the builds use
#
# PYKAITO_IMAGE_REGISTRY (default ghcr.io/pykaito) names the registry; the tag is the package's
# version. BASE_IMAGE overrides the base (default: a Debian image made here with mmdebstrap, since
# the usual python:3.11-slim may not be reachable; the Dockerfiles default to python:3.11-slim).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pykaito"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)"
registry="${PYKAITO_IMAGE_REGISTRY:-ghcr.io/pykaito}"
operator_image="$registry/operator:$version"
cpu_image="$registry/runtime-cpu:$version"
packages=(podman runc mmdebstrap uidmap catatonit containernetworking-plugins)

say() { printf 'images: %s\n' "$*" >&2; }

# podman's defaults fail on some hosts: crun with hybrid cgroups, ulimits above the hard limit.
write_conf() {
  mkdir -p "$cache/containers"
  local nofile
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  cat >"$cache/containers/containers.conf.new" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
  mv "$cache/containers/containers.conf.new" "$cache/containers/containers.conf"
  export CONTAINERS_CONF="$cache/containers/containers.conf"
}

install_tools() {
  local missing=() pkg
  for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ! command -v dpkg >/dev/null 2>&1; then
    command -v podman >/dev/null 2>&1 && return 0
    say "error: podman is missing and this is not a Debian system: install podman, then run this again"
    exit 1
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "error: ${missing[*]} missing and not root: run 'apt-get install -y ${missing[*]}' as root"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A minimal Debian with Python 3, made from the distribution's own packages (no registry needed).
base_image() {
  local codename image
  codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")"
  image="localhost/pykaito-base:$codename"
  if ! podman image exists "$image"; then
    say "making the base image $image (mmdebstrap, once)"
    local tar
    tar="$(mktemp --suffix=.tar)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      "$codename" "$tar" >&2
    podman import --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
    rm -f "$tar"
  fi
  printf '%s\n' "$image"
}

# Whether this host can run a container at all (some sandboxes forbid the namespaces podman needs).
# When it cannot, the reason goes to $unavailable_file for the container tests to skip with, and
# the build stops with status 3.
unavailable_file="$cache/containers/unavailable"
probe() {
  local base="$1" out
  rm -f "$unavailable_file"
  if ! out="$(podman run --rm --network host "$base" true 2>&1)"; then
    mkdir -p "$(dirname "$unavailable_file")"
    printf 'podman cannot run a container on this host: %s\n' "$(printf '%s' "$out" | tail -n 1)" \
      >"$unavailable_file"
    say "$(cat "$unavailable_file")"
    exit 3
  fi
}

build() {
  install_tools
  write_conf
  local base="${BASE_IMAGE:-}"
  [ -n "$base" ] || base="$(base_image)"
  probe "$base"
  local args=(build --format docker --network host --build-arg "BASE_IMAGE=$base")
  # pip inside the build checks the package index against the CA bundle PIP_CERT names
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    args+=(--volume "$PIP_CERT:/run/pykaito-ca.crt:ro" --build-arg PIP_CERT=/run/pykaito-ca.crt)
  fi
  # the portable llama-cpp-python wheel, compiled once per machine, goes into the build context
  local wheels
  wheels="$(bash "$root/scripts/llama-wheel.sh")"
  rm -f "$root"/docker/wheels/*.whl
  cp -l "$wheels"/*.whl "$root/docker/wheels/" 2>/dev/null || cp "$wheels"/*.whl "$root/docker/wheels/"
  local start=$SECONDS
  say "building $operator_image"
  podman "${args[@]}" -f "$root/docker/Dockerfile.operator" -t "$operator_image" "$root" >&2
  say "building $cpu_image"
  podman "${args[@]}" -f "$root/docker/Dockerfile.runtime-cpu" -t "$cpu_image" "$root" >&2
  say "built in $((SECONDS - start)) s:"
  local image
  for image in "$operator_image" "$cpu_image"; do
    say "  $image $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
  done
}

case "${1:-build}" in
  build) build ;;
  names) printf '%s\n%s\n' "$operator_image" "$cpu_image" ;;
  push)
    write_conf
    podman push "$operator_image"
    podman push "$cpu_image"
    ;;
  podman)
    shift
    write_conf
    exec podman "$@"
    ;;
  *)
    say "usage: scripts/images.sh [build|names|push|podman ARGS...]"
    exit 2
    ;;
esac
