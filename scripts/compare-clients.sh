#!/usr/bin/env bash
# compare-clients.sh: run unmodified PC/SC clients against one pcscd three ways and diff them.
#
#   scripts/compare-clients.sh SOCKET LIB [READER]
#
#   SOCKET  pcscd socket (given to the clients as PCSCLITE_CSOCK_NAME)
#   LIB     the library under test (e.g. target/release/libpcscbridge.so, SONAME libpcsclite.so.1)
#   READER  reader with the card (default: each client's own choice, normally the first reader)
#
# Routes, each compared with "native" (Debian's /usr/lib/x86_64-linux-gnu/libpcsclite.so.1):
#   preload  LD_PRELOAD=LIB
#   dropin   LD_LIBRARY_PATH=DIR where DIR/libpcsclite.so.1 is a copy of LIB
# Clients: pcsc_scan -r / -c / -n -t 1 (no ATR analysis: it would try to download the ATR list), opensc-tool -l / -a / -s APDUs, tests/clients/exercise.c,
# tests/clients/pyscard_check.py (Debian's /usr/bin/python3).
#
# Every run also records LD_DEBUG=libs (to files, not the client's output) and checks that the
# route really took effect: native loads Debian's library; preload initialises LIB and nobody
# searches for "libpcsclite.so.1" (pcsc_scan's DT_NEEDED and the dlopen() of opensc and pyscard
# are satisfied by LIB's SONAME); dropin initialises DIR/libpcsclite.so.1.
#
# Output: "compare CLIENT route=ROUTE: PASS|FAIL" per case (diffs and reasons on stderr, full
# outputs under the work folder), then "compare-clients: N passed, M failed". Exit 1 if any failed,
# 2 on usage or setup errors.
#
# Environment: COMPARE_OUT (work folder, kept; default a new /tmp folder, removed when all pass),
# EXERCISE_BIN (prebuilt exercise program; default: built here with gcc), NATIVE_LIB,
# PYSCARD_PYTHON (default /usr/bin/python3), COMPARE_CLIENTS (space-separated subset of case
# names), COMPARE_ROUTES (default "preload dropin").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NATIVE_LIB=${NATIVE_LIB:-/usr/lib/x86_64-linux-gnu/libpcsclite.so.1}
PY=${PYSCARD_PYTHON:-/usr/bin/python3}
ROUTES=${COMPARE_ROUTES:-preload dropin}

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "compare-clients: $*" >&2; exit 2; }

[ $# -ge 2 ] && [ $# -le 3 ] || usage
SOCKET=$1
LIB=$2
READER=${3:-}

[ -S "$SOCKET" ] || die "no socket at $SOCKET"
[ -f "$LIB" ] || die "no library at $LIB"
[ -f "$NATIVE_LIB" ] || die "no native library at $NATIVE_LIB (apt-get install libpcsclite1)"
LIB=$(realpath "$LIB")
NATIVE_REAL=$(realpath "$NATIVE_LIB")

if command -v readelf >/dev/null; then
    soname=$(readelf -d "$LIB" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [ "$soname" = libpcsclite.so.1 ] ||
        echo "compare-clients: warning: SONAME of $LIB is '${soname:-none}', not libpcsclite.so.1;" \
            "LD_PRELOAD will not satisfy dlopen(\"libpcsclite.so.1\")" >&2
fi

if [ -n "${COMPARE_OUT:-}" ]; then
    WORK=$COMPARE_OUT
    mkdir -p "$WORK" || die "cannot create $WORK"
    KEEP=1
else
    WORK=$(mktemp -d /tmp/compare-clients.XXXXXX) || die "mktemp failed"
    KEEP=0
fi
DROPIN=$WORK/dropin
mkdir -p "$DROPIN" "$WORK/home"
# a copy, not a symlink: the loader then reports the drop-in path itself
cp -f "$LIB" "$DROPIN/libpcsclite.so.1" || die "cannot copy $LIB"

EXERCISE=${EXERCISE_BIN:-}
if [ -z "$EXERCISE" ]; then
    EXERCISE=$WORK/exercise
    gcc -O1 -g -Wall -pthread -I/usr/include/PCSC -o "$EXERCISE" \
        "$ROOT/tests/clients/exercise.c" -lpcsclite ||
        die "building tests/clients/exercise.c failed (apt-get install gcc libpcsclite-dev)"
fi
[ -x "$EXERCISE" ] || die "exercise program $EXERCISE not executable"
PYSCRIPT=$ROOT/tests/clients/pyscard_check.py

# ---------------------------------------------------------------- clients
# name|timeout seconds|command (eval'd; may use $EXERCISE $PY $PYSCRIPT $READER)
SELECT=00:A4:04:00:07:A0:00:00:05:27:21:01
CASES=(
    "pcsc_scan-r|20|pcsc_scan -r"
    "pcsc_scan-c|20|pcsc_scan -c"
    "pcsc_scan-t1|30|pcsc_scan -n -t 1"
    "opensc-tool-l|20|opensc-tool -l"
    "opensc-tool-a|20|opensc-tool -a"
    "opensc-tool-s|20|opensc-tool -s $SELECT -s 00:B0:00:00:10 -s 80:01:00:00:05:01:02:03:04:05:00 -s 80:02:02:00:00 -s 00:A4:04:00:02:12:34"
    # extended READ BINARY (Le 4096): opensc refuses it for this reader ("Invalid arguments")
    "opensc-tool-s-ext|20|opensc-tool -s $SELECT -s 00:B0:00:10:00:10:00"
    "exercise|120|\"\$EXERCISE\" \${READER:+\"\$READER\"}"
    "pyscard|120|\"\$PY\" \"\$PYSCRIPT\" \${READER:+\"\$READER\"}"
)

selected() {
    [ -z "${COMPARE_CLIENTS:-}" ] && return 0
    case " $COMPARE_CLIENTS " in *" $1 "*) return 0 ;; esac
    return 1
}

# run NAME ROUTE TIMEOUT CMD: output in $WORK/NAME.ROUTE.{out,err,rc}, LD_DEBUG in .../ld.*
run() {
    local name=$1 route=$2 tmo=$3 cmd=$4 base=$WORK/$1.$2
    rm -rf "$base.ld"
    mkdir -p "$base.ld"
    # timeout runs env runs the client: only the client gets LD_PRELOAD/LD_DEBUG
    local -a envs=(timeout -k 5 "$tmo" env -u LD_PRELOAD -u LD_LIBRARY_PATH -u LIBPCSCLITE_DELEGATE
        -u PCSCLITE_DEBUG -u PCSCLITE_NO_BLOCKING
        "PCSCLITE_CSOCK_NAME=$SOCKET" LC_ALL=C LANG=C TERM=dumb HOME="$WORK/home"
        "LD_DEBUG=libs" "LD_DEBUG_OUTPUT=$base.ld/ld")
    case $route in
        native) ;;
        preload) envs+=("LD_PRELOAD=$LIB") ;;
        dropin) envs+=("LD_LIBRARY_PATH=$DROPIN") ;;
    esac
    (
        cd "$WORK" || exit 125
        EXERCISE=$EXERCISE PY=$PY PYSCRIPT=$PYSCRIPT READER=$READER \
            eval "\"\${envs[@]}\" $cmd" </dev/null >"$base.out" 2>"$base.err"
        echo $? >"$base.rc"
    )
}

# normalise NAME FILE: only what legitimately differs between runs
normalise() {
    local name=$1 file=$2
    # ANSI colour/cursor sequences (all clients)
    sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' "$file" |
        case $name in
            pcsc_scan*)
                # the spinner ("\r - \r \\ ...") depends on timing; the date line on the clock
                tr '\r' '\n' |
                    sed -E -e '/^[[:space:]]*[-\\|\/]?[[:space:]]*$/d' \
                        -e 's/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}$/<DATE>/'
                ;;
            *) cat ;;
        esac
}

# normalised transcript of one run: stdout, stderr, exit status
transcript() {
    local name=$1 route=$2 base=$WORK/$1.$2
    normalise "$name" "$base.out"
    echo "--- stderr ---"
    normalise "$name" "$base.err"
    echo "--- exit=$(cat "$base.rc" 2>/dev/null || echo none) ---"
}

# route_check NAME ROUTE: did the route load the library it should? Prints a reason if not.
route_check() {
    local name=$1 route=$2 dir=$WORK/$1.$2.ld
    local inits
    inits=$(cat "$dir"/ld.* 2>/dev/null | sed -n 's/^ *[0-9]*:[[:space:]]*calling init: //p' | sort -u)
    [ -n "$inits" ] || { echo "no LD_DEBUG output in $dir"; return 1; }
    local p real found_native=0 found_lib=0 found_drop=0
    while IFS= read -r p; do
        [ -e "$p" ] || continue
        real=$(realpath "$p")
        [ "$real" = "$NATIVE_REAL" ] && found_native=1
        [ "$real" = "$LIB" ] && [ "$p" != "$DROPIN/libpcsclite.so.1" ] && found_lib=1
        [ "$p" = "$DROPIN/libpcsclite.so.1" ] && found_drop=1
    done <<<"$inits"
    case $route in
        native)
            [ $found_native = 1 ] || { echo "native run did not load $NATIVE_REAL"; return 1; } ;;
        preload)
            [ $found_lib = 1 ] || { echo "LD_PRELOAD run did not initialise $LIB"; return 1; }
            if grep -qh 'find library=libpcsclite\.so\.1 ' "$dir"/ld.* 2>/dev/null; then
                echo "libpcsclite.so.1 was searched for although LIB was preloaded (SONAME mismatch?)"
                return 1
            fi ;;
        dropin)
            [ $found_drop = 1 ] || { echo "drop-in run did not load $DROPIN/libpcsclite.so.1"; return 1; } ;;
    esac
    return 0
}

passed=0
failed=0
report() { # NAME ROUTE STATUS [reason]
    echo "compare $1 route=$2: $3"
    if [ "$3" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

for c in "${CASES[@]}"; do
    name=${c%%|*}
    rest=${c#*|}
    tmo=${rest%%|*}
    cmd=${rest#*|}
    selected "$name" || continue
    # all routes of one client back to back, so that pcscd's state (event counters, card power)
    # is the same for each of them
    run "$name" native "$tmo" "$cmd"
    transcript "$name" native >"$WORK/$name.native.norm"
    if ! why=$(route_check "$name" native); then
        echo "compare-clients: $name native: $why" >&2
    fi
    for route in $ROUTES; do
        run "$name" "$route" "$tmo" "$cmd"
        transcript "$name" "$route" >"$WORK/$name.$route.norm"
        reasons=()
        if ! diff -u --label "$name.native" --label "$name.$route" \
            "$WORK/$name.native.norm" "$WORK/$name.$route.norm" >"$WORK/$name.$route.diff"; then
            reasons+=("output differs from native: $WORK/$name.$route.diff")
        fi
        if ! why=$(route_check "$name" "$route"); then
            reasons+=("route check: $why")
        fi
        if [ ${#reasons[@]} -eq 0 ]; then
            report "$name" "$route" PASS
        else
            report "$name" "$route" FAIL
            {
                for r in "${reasons[@]}"; do echo "compare $name route=$route: $r"; done
                head -n 40 "$WORK/$name.$route.diff"
            } >&2
        fi
    done
done

echo "compare-clients: $passed passed, $failed failed"
if [ "$failed" -eq 0 ] && [ "$KEEP" = 0 ]; then
    rm -rf "$WORK"
elif [ "$failed" -ne 0 ]; then
    echo "compare-clients: outputs kept in $WORK" >&2
fi
[ "$failed" -eq 0 ]
