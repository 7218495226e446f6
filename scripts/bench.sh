#!/usr/bin/env bash
# Benchmark: pcsc-bridge (libpcscbridge.so) against the native libpcsclite, both
# loaded into one process (tests/bench/bench.c) and driven in interleaved rounds
# against one pcscd + virtual card brought up by scripts/testhost.sh.
#
# usage: scripts/bench.sh [--quick] [--lib PATH] [--native PATH] [--cpu N | --no-pin]
#                         [-- BENCH_ARGS...]
#   --quick        short run for CI (200 ops x 5 rounds, 2 card events each way)
#   --lib PATH     library under test (default: target/release/libpcscbridge.so,
#                  built with cargo if missing)
#   --native PATH  reference library (default: the system's libpcsclite.so.1)
#   --cpu N        pin bench, pcscd and card to CPU N (default: the last CPU)
#   --no-pin       do not pin (results get bimodal on VMs, see below)
#   BENCH_ARGS     passed to the bench binary, e.g. -- --only transmit-8,context
# Environment: BENCH_ITERS, BENCH_ROUNDS, BENCH_EVENT_ROUNDS (read by the binary),
#   BENCH_TIMEOUT (seconds for the bench binary, default 900),
#   TESTHOST (default scripts/testhost.sh), CC (default gcc).
#
# Pinning: on these 2-vCPU VMs a wakeup that crosses CPUs costs about 60 us
# extra, and the scheduler keeps a placement for many milliseconds, so unpinned
# rounds jump between two modes (e.g. 21 us and 150 us for a transaction).
# Everything on one CPU measures the libraries' own cost consistently.
#
# A benchmark, not a test: it exits non-zero only when something fails to build,
# start or run, never because of a ratio.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/bench-common.sh
. "$root/scripts/lib/bench-common.sh"

quick=0
lib=""
native=""
cpu=""
pin=1
bench_args=()
while (($#)); do
    case $1 in
    --quick) quick=1 ;;
    --lib) lib=$2; shift ;;
    --native) native=$2; shift ;;
    --cpu) cpu=$2; shift ;;
    --no-pin) pin=0 ;;
    --) shift; bench_args=("$@"); break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench.sh: $*" >&2; }

[[ -n $native ]] || native=$(bench_find_native)
[[ -n $native && -e $native ]] || { log "native libpcsclite.so.1 not found (use --native)"; exit 1; }

if [[ -z $lib ]]; then
    lib=$target/release/libpcscbridge.so
    if [[ ! -e $lib ]]; then
        log "building $lib"
        (cd "$root" && cargo build --release -p pcsc-bridge-interpose) >&2
    fi
fi
[[ -e $lib ]] || { log "library not found: $lib"; exit 1; }
lib=$(realpath "$lib")
native=$(realpath "$native")

start=$SECONDS
work=$(mktemp -d /tmp/pcsc-bench.XXXXXX)
hostdir=""
cleanup() {
    local rc=$?
    if [[ -n $hostdir ]]; then
        "$testhost" down "$hostdir" >/dev/null 2>&1 || log "warning: testhost down failed"
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The benchmark binary.
bin=$target/bench/bench
bench_build bench -ldl -lpthread

# The same file twice (validation run): glibc would hand back the one object it
# already has (it matches by device/inode), so give B its own copy; both are then
# loaded the same way, with plain dlopen.
if [[ $lib == "$native" ]]; then
    cp "$lib" "$work/libpcsclite-copy.so.1"
    lib=$work/libpcsclite-copy.so.1
    log "--lib is the native library: using a copy for B ($lib)"
fi

bench_pin

[[ -x $testhost ]] || { log "test host script not found: $testhost"; exit 1; }
# pcscd and the card inherit the CPU affinity of the script that starts them.
hostdir=$work/host
up_out=$("${pin_cmd[@]}" "$testhost" up --dir "$hostdir") || { log "testhost up failed"; exit 1; }
declare -A host=()
while IFS= read -r line; do
    [[ $line == *=* ]] && host[${line%%=*}]=${line#*=}
done <<<"$up_out"
[[ -n ${host[DIR]:-} ]] && hostdir=${host[DIR]}
for k in SOCKET READER CARD_CTL; do
    [[ -n ${host[$k]:-} ]] || { log "testhost up did not print $k="; exit 1; }
done

args=(--reader "${host[READER]}" --ctl "${host[CARD_CTL]}")
((quick)) && args+=(--quick)
args+=("${bench_args[@]}")
log "native=$native bridge=$lib cpu=${cpu:-unpinned}"

rc=0
PCSCLITE_CSOCK_NAME=${host[SOCKET]} timeout -k 5 "${BENCH_TIMEOUT:-900}" \
    "${pin_cmd[@]}" "$bin" "${args[@]}" "$native" "$lib" || rc=$?
((rc == 124)) && log "timed out after ${BENCH_TIMEOUT:-900} s (BENCH_TIMEOUT)"

# Cost of the run: CPU time of the daemon and the card (from the host's pid list).
for name in pcscd vcard; do
    pid=$(awk -v n="$name" '$1 == n { p = $2 } END { print p }' "$hostdir/pids" 2>/dev/null || true)
    if [[ -z $pid && $name == pcscd ]]; then
        pid=$(tr -dc '0-9' < "$(dirname "${host[SOCKET]}")/pcscd.pid" 2>/dev/null || true)
    fi
    [[ -n $pid && -r /proc/$pid/stat ]] || continue
    echo "bench $name cpu: $(bench_cpu_time "$pid")"
done
echo "bench total wall: $((SECONDS - start)) s (before teardown)"
if ((rc)); then
    log "benchmark failed (exit $rc)"
fi
exit $rc
