#!/usr/bin/env bash
# test.sh: the whole test suite (what CI runs).
#
#   scripts/test.sh
#
# 1. setup (packages, release build)      2. unit and integration tests (cargo test)
# 3. unmodified clients compared, native vs pcsc-bridge, by each route
# 4. the exported symbol list against Debian's libpcsclite   5. fuzz targets, bounded
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

step "cargo test" cargo test --workspace --release -- --test-threads=2
step "exported symbols" scripts/check-symbols.sh target/release/libpcscbridge.so
step "fuzz (bounded)" scripts/fuzz.sh 20

echo
[ ${#failures[@]} -eq 0 ] || echo "failed steps: ${failures[*]}"
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
