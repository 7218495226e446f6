#!/usr/bin/env bash
# test.sh: the whole test suite (what CI runs).
#
#   scripts/test.sh
#
# 1. setup (packages, release build)
# 2. the shipped library: libpcscbridge.so built against glibc 2.17 (scripts/build-so.sh)
# 3. unit and integration tests (cargo test), including unmodified clients compared
#    line by line, native vs pcsc-bridge (the shipped library), by each route
# 4. the exported symbols, SONAME, NODELETE and glibc floor of the shipped library
# 5. the version matrix: 4 client suites x 4 host suites x routes, in sandboxes; usbpass serve
#    (simulated readers of every exchange level) against every suite's stock clients
# 6. real Flatpak (offline, local runtimes): native fails, `pcsc-bridge flatpak enable` fixes it
# 7. the USB path in a QEMU guest: stock clients through usbpass serve on QEMU's usb-ccid
#    reader, side by side with Debian's pcscd + libccid
# 8. fuzz targets, bounded
# Ends with "N passed, M failed" over the steps; exit 1 if any failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh || exit 1

passed=0 failed=0 failures=()
step() { # NAME CMD...
    local name=$1; shift
    echo
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1)); echo "=== $name: PASS ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAIL ($((SECONDS - t0)) s)"
    fi
}

LIB=$ROOT/target/x86_64-unknown-linux-gnu/release/libpcscbridge.so
step "build the shipped library (glibc 2.17)" scripts/build-so.sh
[ -f "$LIB" ] || LIB=$ROOT/target/release/libpcscbridge.so
export PCSC_BRIDGE_LIB=$LIB
step "clippy and rustfmt" sh -c 'cargo clippy --workspace --all-targets --release --quiet -- -D warnings && cargo fmt --check'
step "cargo test" cargo test --workspace --release -- --test-threads=2
step "exported symbols and glibc floor" env GLIBC_FLOOR=2.17 scripts/check-symbols.sh "$LIB"
step "version matrix" scripts/matrix.sh --lib "$LIB"
step "usbpass serve: stock clients of every suite, simulated readers of every level" scripts/serve-clients.sh
step "proxy: host pcscd restart under a sandboxed client" scripts/proxy-restart-test.sh
step "real Flatpak" scripts/flatpak-test.sh --glibc-floor
step "USB path: usbpass vs pcscd+libccid on QEMU's usb-ccid reader" scripts/qemu-usb-test.sh
step "benchmarks (quick; informative, never fail on a ratio)" sh -c 'scripts/bench.sh --quick --lib "$PCSC_BRIDGE_LIB" && scripts/bench-proxy.sh --quick && scripts/qemu-usb-test.sh --bench --no-build'
step "fuzz (bounded)" scripts/fuzz.sh 15

echo
[ ${#failures[@]} -eq 0 ] || echo "failed steps: ${failures[*]}"
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
