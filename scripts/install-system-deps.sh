#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (headless Chromium for the web-app test).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "error: ${missing[*]} missing and not root: run 'apt-get install -y ${missing[*]}' as root" >&2
    exit 1
  fi
else
  SUDO=
fi

echo "installing ${missing[*]} (apt-get)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
