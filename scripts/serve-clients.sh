#!/usr/bin/env bash
# serve-clients.sh: `usbpass serve` serves the stock clients of every pcsc-lite generation.
#
#   scripts/serve-clients.sh [--levels "L..."] [--clients "S..."] [--keep]
#
# This host has no USB, so each exchange level runs as `usbpass serve --simulate LEVEL` (cargo
# feature "sim": one simulated CCID reader of that level with the project's virtual card; built
# into target/sim, never into the shipped binary). Levels (default all): tpdu, short, extended,
# character (T=1 card), character-t0, iccd-a (T=0 card), iccd-b (T=1 card), qemu (QEMU 7.2's
# reader and descriptor, T=0 card). Against each, every client suite's own
# unmodified pyscard runs tests/matrix/cell.py (list, ATR, SELECT -> 90 00, SCardCancel of an
# INFINITE wait), then its `pcsc_scan -r` and `opensc-tool -a`, in a scripts/sandbox.sh sandbox
# whose /run/pcscd/pcscd.comm is usbpass's socket. Suites: bullseye 1.9.1 and bookworm 1.9.9
# (protocol 4:4), trixie 2.3.3 (4:5), sid 2.5.3 (4:6). Card events need a reader that can lose
# its card: they are checked on QEMU's reader by scripts/qemu-usb-test.sh.
#
# One line per cell, "client=C level=L: PASS" or "FAIL (why)"; last line
# "serve-clients: N passed, M failed". Exit 0 all passed, 1 some failed, 2 setup error.
# Environment: CARGO_TARGET_DIR, PCSC_BRIDGE_SUITES (suite cache, see suites.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SANDBOX=$ROOT/scripts/sandbox.sh
SUITES=$ROOT/scripts/suites.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LEVELS="tpdu short extended character character-t0 iccd-a iccd-b qemu"
CLIENTS="bullseye bookworm trixie sid"
KEEP=0
die() { echo "serve-clients: $*" >&2; exit 2; }
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --levels) LEVELS=${2:?}; shift 2 ;;
        --clients) CLIENTS=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) usage ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (suite roots, sandboxes)"

# shellcheck disable=SC2086
"$SUITES" prepare $CLIENTS >/dev/null || die "suite roots not available ($SUITES prepare $CLIENTS)"
echo "serve-clients: cargo build --release -p usbpass --features sim (into $TARGET/sim)" >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET/sim cargo build -q --release -p usbpass --features sim --bin usbpass) ||
    die "cargo build of usbpass with the sim feature failed"
USBPASS=$TARGET/sim/release/usbpass

WORK=$(mktemp -d /tmp/pcsc-bridge-serve.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ "$KEEP" = 1 ] || [ "${nfail:-1}" != 0 ]; then echo "serve-clients: logs in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

npass=0 nfail=0
result() { # CLIENT LEVEL PASS|FAIL WHY
    if [ "$3" = PASS ]; then
        npass=$((npass + 1)); echo "client=$1 level=$2: PASS${4:+ ($4)}"
    else
        nfail=$((nfail + 1)); echo "client=$1 level=$2: FAIL ($4)"
    fi
}

for level in $LEVELS; do
    sock=$WORK/$level/pcscd.comm
    mkdir -p "$WORK/$level"
    USBPASS_LOG=info "$USBPASS" serve --simulate "$level" --listen "$sock" > "$WORK/$level/usbpass.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    if [ ! -S "$sock" ]; then
        for c in $CLIENTS; do result "$c" "$level" FAIL "usbpass serve did not start: $(tail -n 2 "$WORK/$level/usbpass.log" | tr '\n' ' ')"; done
        continue
    fi
    # The simulated card's ATR, which the clients must read (usbpass/src/serve/mod.rs, ccid/sim.rs).
    case $level in
        qemu) atr="3B 0A 70 63 73 63 62 72 69 64 67 65" ;;
        character-t0|iccd-a) atr="3B 89 00 56 43 41 52 44 5F 4E 53 53" ;;
        iccd-b) atr="3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40" ;;
        *) atr="3B 8A 80 01 70 63 73 63 62 72 69 64 67 65 17" ;;
    esac
    for c in $CLIENTS; do
        log=$WORK/$level/$c.log
        args=(--no-events --cancel --expect-native --atr "$atr")
        out=$(timeout -k 2 40 "$SANDBOX" --suite "$c" --socket "$sock" --ro-bind "$ROOT/tests/matrix" /matrix \
            -- /usr/bin/python3 /matrix/cell.py "${args[@]}" 2>"$log.err" < /dev/null)
        echo "$out" > "$log"
        if ! grep -q '^@PASS' <<< "$out"; then
            why=$(sed -n 's/^@FAIL //p' <<< "$out" | head -n 1)
            result "$c" "$level" FAIL "${why:-no result: $(tail -n 2 "$log.err" | tr '\n' ' ' | cut -c1-200)}"
            continue
        fi
        scan=$(timeout -k 2 20 "$SANDBOX" --suite "$c" --socket "$sock" -- pcsc_scan -r 2>&1 < /dev/null)
        tool=$(timeout -k 2 20 "$SANDBOX" --suite "$c" --socket "$sock" -- opensc-tool -a 2>&1 < /dev/null)
        printf -- '--- pcsc_scan -r\n%s\n--- opensc-tool -a\n%s\n' "$scan" "$tool" >> "$log"
        if ! grep -q '^0: ' <<< "$scan"; then
            result "$c" "$level" FAIL "pcsc_scan -r listed no reader: $(head -n 2 <<< "$scan" | tr '\n' ' ')"
        elif ! grep -qiF "$(sed 's/ /:/g' <<< "$atr")" <<< "$tool"; then
            result "$c" "$level" FAIL "opensc-tool -a printed no ATR: $(head -n 3 <<< "$tool" | tr '\n' ' ')"
        else
            result "$c" "$level" PASS "$(grep -m1 '^0: ' <<< "$scan" | cut -c4-)"
        fi
    done
done
echo "serve-clients: $npass passed, $nfail failed"
[ "$nfail" = 0 ]
