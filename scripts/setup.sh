#!/usr/bin/env bash
# setup.sh: install what pcsc-bridge's tests and demo need on Debian 12, and build.
#
#   scripts/setup.sh [--no-build]
#
# Idempotent: a second run only checks. Needs root (apt-get); the Rust toolchain
# (cargo) must already be on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PKGS=(pcscd vsmartcard-vpcd pcsc-tools opensc python3-pyscard bubblewrap debootstrap
      libpcsclite-dev gcc binutils util-linux procps python3)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # The image's policy-rc.d keeps pcscd from starting as a system service;
    # tests start their own daemons on private sockets.
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found on PATH (install a Rust toolchain)" >&2; exit 1; }

if [ "${1:-}" != --no-build ]; then
    echo "setup: building (release)"
    cargo build --release --workspace --quiet
fi
echo "setup: ok"
