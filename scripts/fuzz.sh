#!/usr/bin/env bash
# fuzz.sh [SECONDS]: run every fuzz target of shared/fuzz for SECONDS each (default 20).
# Installs cargo-fuzz from crates.io if missing. libFuzzer needs nightly flags:
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd "$ROOT/shared"
export RUSTC_BOOTSTRAP=1
status=0
for t in $(cargo fuzz list); do
    echo "fuzz: $t for ${SECS}s"
    if cargo fuzz run "$t" -- -max_total_time="$SECS" >"fuzz/$t.log" 2>&1; then
        echo "fuzz: $t ok ($(grep -o 'Done [0-9]* runs' "fuzz/$t.log" | tail -1))"
    else
        echo "fuzz: $t FAILED"; tail -30 "fuzz/$t.log"; status=1
    fi
done
exit $status
