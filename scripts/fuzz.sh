#!/usr/bin/env bash
# fuzz.sh [SECONDS]: run every fuzz target of shared/fuzz for SECONDS each (default 20).
# Installs cargo-fuzz from crates.io if missing. libFuzzer needs nightly flags:
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
status=0
for crate in shared usbpass; do
    cd "$ROOT/$crate"
    for t in $(cargo fuzz list); do
        # Seed inputs, where the crate ships them, as a second corpus folder.
        seeds=()
        [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
        mkdir -p "fuzz/corpus/$t"
        echo "fuzz: $crate/$t for ${SECS}s"
        if cargo fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- -max_total_time="$SECS" >"fuzz/$t.log" 2>&1; then
            echo "fuzz: $crate/$t ok ($(grep -o 'Done [0-9]* runs' "fuzz/$t.log" | tail -1))"
        else
            echo "fuzz: $crate/$t FAILED"; tail -30 "fuzz/$t.log"; status=1
        fi
    done
done
exit $status
