#!/usr/bin/env bash
# build-so.sh: build libpcscbridge.so against a glibc floor (default 2.17) so it loads in old
# runtimes (bullseye has glibc 2.31; a plain build on bookworm needs 2.34).
#
#   scripts/build-so.sh [--glibc 2.17] [--jobs N] [--no-install]
#
# Uses cargo-zigbuild with Zig as the linker (both from PyPI: `pip install ziglang cargo-zigbuild`
# into the python3 on PATH, unless --no-install) and builds
#   cargo zigbuild --release -p pcsc-bridge-interpose --target x86_64-unknown-linux-gnu.GLIBC
# then checks with objdump -T that no GLIBC_ symbol version above the floor is referenced.
# Also builds usbpass as a static musl program (`cargo zigbuild --target x86_64-unknown-linux-musl`,
# libusb built in) and puts it beside the library: `pcsc-bridge flatpak enable` installs both, and
# the library starts it inside a sandbox that sees USB readers and no pcscd, whatever the runtime.
# Prints the library's path on the last line (target/x86_64-unknown-linux-gnu/release/...).
# Environment: CARGO_TARGET_DIR (default target/), PYTHON (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLOOR=2.17 JOBS=1 INSTALL=1
PY=${PYTHON:-python3}
die() { echo "build-so: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case $1 in
        --glibc) FLOOR=${2:?}; shift 2 ;;
        --jobs) JOBS=${2:?}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
command -v objdump >/dev/null || die "objdump missing (apt-get install binutils)"
command -v "$PY" >/dev/null || die "$PY missing"

if [ "$INSTALL" = 1 ]; then
    "$PY" -m pip install -q --disable-pip-version-check ziglang cargo-zigbuild ||
        die "pip install ziglang cargo-zigbuild failed"
fi
# pip puts cargo-zigbuild in the interpreter's scripts folder (not always on PATH, e.g. pyenv)
SCRIPTS=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$SCRIPTS:$PATH"
command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild not found (in $SCRIPTS or PATH)"
"$PY" -m ziglang version >/dev/null 2>&1 || command -v zig >/dev/null ||
    die "zig not found (pip install ziglang)"

TRIPLE=x86_64-unknown-linux-gnu
cd "$ROOT"
echo "build-so: cargo zigbuild --release -p pcsc-bridge-interpose --target $TRIPLE.$FLOOR -j $JOBS" >&2
cargo zigbuild --release -p pcsc-bridge-interpose --target "$TRIPLE.$FLOOR" -j "$JOBS" >&2 ||
    die "cargo zigbuild failed"

OUT=${CARGO_TARGET_DIR:-$ROOT/target}/$TRIPLE/release/libpcscbridge.so
USBPASS_OUT=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/release/usbpass
[ -f "$OUT" ] || die "no library at $OUT after the build"
max=$(objdump -T "$OUT" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
echo "build-so: highest GLIBC_ version referenced: ${max:-none}" >&2
if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$FLOOR" | sort -V | tail -n 1)" != "$FLOOR" ]; then
    for v in $(objdump -T "$OUT" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV); do
        [ "$(printf '%s\n%s\n' "$v" "$FLOOR" | sort -V | tail -n 1)" = "$FLOOR" ] && continue
        objdump -T "$OUT" | grep -F "GLIBC_$v " >&2 || true
    done
    die "$OUT needs glibc $max > $FLOOR"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    [ "$INSTALL" = 1 ] || die "the Rust target x86_64-unknown-linux-musl is missing (rustup target add)"
    rustup target add x86_64-unknown-linux-musl >&2 || die "rustup target add x86_64-unknown-linux-musl failed"
fi
echo "build-so: cargo zigbuild --release -p usbpass --bin usbpass --target x86_64-unknown-linux-musl" >&2
cargo zigbuild --release -p usbpass --bin usbpass --target x86_64-unknown-linux-musl -j "$JOBS" >&2 ||
    die "cargo zigbuild of usbpass failed"
[ -f "$USBPASS_OUT" ] || die "no usbpass at $USBPASS_OUT after the build"
! ldd "$USBPASS_OUT" >/dev/null 2>&1 || die "$USBPASS_OUT is not static: $(ldd "$USBPASS_OUT" | tr '\n' ' ')"
cp "$USBPASS_OUT" "$(dirname "$OUT")/usbpass"
echo "build-so: usbpass (static, $(du -k "$USBPASS_OUT" | cut -f1) KiB) beside the library" >&2
echo "$OUT"
