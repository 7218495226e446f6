#!/usr/bin/env bash
# matrix.sh: the version matrix (issue 3): every client suite x every host suite, natively and
# through pcsc-bridge by each route that applies.
#
#   scripts/matrix.sh [--quick] [--lib PATH] [--usbpass PATH] [--clients "S..."] [--hosts "S..."]
#                     [--routes "R..."] [--keep] [--no-tools]
#
#   --lib PATH     the pcsc-bridge library (default target/release/libpcscbridge.so)
#   --usbpass PATH the usbpass binary for the proxy route (default target/release/usbpass)
#   --quick        checks (a)-(c) only: no card removal/insertion and no pcsc_scan/opensc-tool runs
#   --clients, --hosts   suites (default: bullseye bookworm trixie sid, from scripts/suites.sh)
#   --routes       subset of "native preload dropin delegate proxy" (default all; delegate only
#                  for clients whose libpcsclite is 2.1.0+)
#   --no-tools     skip the pcsc_scan -r / opensc-tool -a listing checks
#   --keep         keep the work folder (logs of every cell) even when everything passed
#
# One host per host suite (scripts/testhost.sh up --suite), started once and shared by that
# host's cells; hosts run their cells in parallel, each host's cells one after the other (the
# card's events are per host). Each cell runs tests/matrix/cell.py with the client suite's own
# /usr/bin/python3 + pyscard in scripts/sandbox.sh. A cell passes when (a) the reader is listed,
# (b) the ATR is read, (c) SELECT of the AID answers 90 00, (d) GetStatusChange sees EMPTY then
# PRESENT while the harness removes and inserts the card (testhost.sh card DIR remove|insert);
# unless --no-tools, `pcsc_scan -r` must list the reader and `opensc-tool -a` print the ATR.
# The route must really be in effect (cell.py checks the process's mapped libraries). Every
# pcsc-bridge cell also checks (e) SCardCancel of an INFINITE SCardGetStatusChange (0x80100002).
#
# Route proxy: per host, one `usbpass proxy --listen WORK/proxy-H/pcscd.comm --upstream HOSTSOCKET`
# (started once, killed by its PID at the end); the client runs with its OWN unmodified
# libpcsclite, the proxy's folder bound into the sandbox as Flatpak's
# --filesystem=xdg-run/pcsc-bridge would (scripts/sandbox.sh --proxy). After a host's cells, a
# sharing check with two clients of different suites at once through that host's proxy: one
# connects EXCLUSIVE, the other's SCardConnect must get SCARD_E_SHARING_VIOLATION; after the
# first disconnects, both connect SHARED and transmit. It prints "share clients=A+B host=H
# route=proxy: PASS|FAIL (why)" and counts as a pcsc-bridge cell.
#
# Output: one line per cell, "client=C host=H route=R: PASS" or "FAIL (why)". Native cells are
# compared with what the protocol versions predict (pcscd-protocol.md §5.6): "(expected)" after
# a predicted failure, "UNEXPECTED" when the result differs. Then a grid per route, and last
# "matrix: N passed, M failed" counting only pcsc-bridge cells (routes other than native, and
# the proxy sharing checks).
# Exit status: 0 all pcsc-bridge cells passed, 1 some failed, 2 usage or setup error.
#
# Environment: MATRIX_CELL_TIMEOUT (seconds per cell, default 40), MATRIX_EVENT_TIMEOUT (seconds
# per event, default 10), PCSC_BRIDGE_SUITES (suite cache, see suites.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTHOST=$ROOT/scripts/testhost.sh
SANDBOX=$ROOT/scripts/sandbox.sh
SUITES=$ROOT/scripts/suites.sh
CELL_DIR=$ROOT/tests/matrix
CELL_TIMEOUT=${MATRIX_CELL_TIMEOUT:-40}
EVENT_TIMEOUT=${MATRIX_EVENT_TIMEOUT:-10}
READER="Virtual PCD 00 00"

usage() { sed -n '2,44p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "matrix: $*" >&2; exit 2; }

LIB=$ROOT/target/release/libpcscbridge.so
USBPASS=$ROOT/target/release/usbpass
QUICK=0 KEEP=0 TOOLS=1
CLIENTS="bullseye bookworm trixie sid" HOSTS="bullseye bookworm trixie sid"
ROUTES="native preload dropin delegate proxy"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1; TOOLS=0; shift ;;
        --lib) LIB=${2:?}; shift 2 ;;
        --usbpass) USBPASS=${2:?}; shift 2 ;;
        --clients) CLIENTS=${2:?}; shift 2 ;;
        --hosts) HOSTS=${2:?}; shift 2 ;;
        --routes) ROUTES=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-tools) TOOLS=0; shift ;;
        -h|--help) usage ;;
        *) echo "matrix: unknown option $1" >&2; usage ;;
    esac
done
for r in $ROUTES; do
    case $r in native|preload|dropin|delegate|proxy) ;; *) die "unknown route $r" ;; esac
done
[ "$(id -u)" = 0 ] || die "needs root (test hosts use mount namespaces)"
for t in bwrap unshare chroot debootstrap timeout; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install bubblewrap debootstrap)"
done

# routes that load the pcsc-bridge library (proxy does not: it needs usbpass)
BRIDGE_ROUTES=$(for r in $ROUTES; do case $r in preload|dropin|delegate) echo "$r" ;; esac; done | xargs)
PROXY=0
for r in $ROUTES; do [ "$r" = proxy ] && PROXY=1; done
if [ "$PROXY" = 1 ]; then
    [ -x "$USBPASS" ] || die "no usbpass binary at $USBPASS (cargo build --release -p usbpass, or --usbpass PATH, or --routes without proxy)"
    USBPASS=$(realpath "$USBPASS")
fi
if [ -n "$BRIDGE_ROUTES" ]; then
    [ -f "$LIB" ] || die "no pcsc-bridge library at $LIB (cargo build --release -p pcsc-bridge-interpose, or --lib PATH, or --routes native)"
    LIB=$(realpath "$LIB")
    if command -v nm >/dev/null && ! nm -D --defined-only "$LIB" 2>/dev/null | grep -qw SCardEstablishContext; then
        die "$LIB does not export SCardEstablishContext"
    fi
fi

T0=$(date +%s)
# ------------------------------------------------------------------ suites
ALL_SUITES=$(printf '%s\n' $CLIENTS $HOSTS | awk '!seen[$0]++' | xargs)
"$SUITES" prepare $ALL_SUITES >&2 || die "suites.sh prepare $ALL_SUITES failed"
declare -A VER PROTO GLIBC
for s in $ALL_SUITES; do
    r=$("$SUITES" path "$s") || die "no root for $s"
    VER[$s]=$(sed -n 's/^upstream=//p' "$r/.pcsc-bridge-info")
    PROTO[$s]=$(sed -n 's/^protocol=//p' "$r/.pcsc-bridge-info")
    g=$(sed -n 's/^glibc=//p' "$r/.pcsc-bridge-info"); GLIBC[$s]=${g%%-*}
done
vge() { dpkg --compare-versions "$1" ge "$2"; }

# the highest GLIBC_ symbol version the library needs, against each client's glibc
if [ -n "$BRIDGE_ROUTES" ] && command -v objdump >/dev/null; then
    LIB_GLIBC=$(objdump -T "$LIB" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    echo "matrix: library $LIB (needs glibc ${LIB_GLIBC:-?})" >&2
    for c in $CLIENTS; do
        if [ -n "$LIB_GLIBC" ] && ! vge "${GLIBC[$c]}" "$LIB_GLIBC"; then
            echo "matrix: note: client $c has glibc ${GLIBC[$c]} < $LIB_GLIBC: the library cannot load there" >&2
        fi
    done
fi

routes_for() { # CLIENT
    local r
    for r in $ROUTES; do
        [ "$r" = delegate ] && ! vge "${VER[$1]}" 2.1.0 && continue
        echo "$r"
    done
}

# Native prediction from pcscd-protocol.md §5.6 (only 4:4 and later occur here).
# Echoes "ok" or "fail"; a 2.5.x client on a <= 4:5 server is "ok" (pcsc_scan's first call
# trips the 2.5.x fallback bug: noted separately).
predict() { # CLIENT HOST
    local cv=${VER[$1]} sv=${VER[$2]} cp=${PROTO[$1]} sp=${PROTO[$2]}
    if [ "$cp" = "$sp" ]; then echo ok; return; fi
    case "$cp>$sp" in
        "4:4>4:6"|"4:5>4:6") echo ok; return ;;            # 2.5 server accepts older minors
        "4:4>4:5") vge "$sv" 2.4.1 && { echo ok; return; } ;;  # 2.4.1 server is lenient
    esac
    # clients 2.4.1+ retry with the server's minor (4:4 or 4:5)
    if vge "$cv" 2.4.1 && { [ "$sp" = 4:4 ] || [ "$sp" = 4:5 ]; }; then echo ok; return; fi
    echo fail
}
pnp_bug_expected() { # CLIENT HOST: the 2.5.0+ client's first-call GetStatusChange bug applies
    vge "${VER[$1]}" 2.5.0 && [ "${PROTO[$2]}" != 4:6 ]
}

# ------------------------------------------------------------------ work folder, hosts, cleanup
WORK=$(mktemp -d /tmp/pcsc-bridge-matrix.XXXXXX) || die "mktemp failed"
declare -A HOSTDIR PROXYPID
WORKERS=()
cleanup() {
    local rc=$? p c h
    trap - EXIT INT TERM
    for p in "${WORKERS[@]}"; do
        # the worker's children first (timeout/bwrap/testhost of a running cell), then the worker
        for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do kill -TERM "$c" 2>/dev/null; done
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${WORKERS[@]}"; do wait "$p" 2>/dev/null; done
    for h in "${!PROXYPID[@]}"; do
        kill -TERM "${PROXYPID[$h]}" 2>/dev/null && wait "${PROXYPID[$h]}" 2>/dev/null
    done
    for h in "${!HOSTDIR[@]}"; do
        if [ -f "${HOSTDIR[$h]}/.testhost" ]; then
            cp -f "${HOSTDIR[$h]}/pcscd.log" "$WORK/pcscd-$h.log" 2>/dev/null
            "$TESTHOST" down "${HOSTDIR[$h]}" >/dev/null 2>&1 ||
                echo "matrix: teardown of host $h failed" >&2
        fi
    done
    if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "matrix: logs in $WORK" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_host() { # SUITE
    local out
    out=$("$TESTHOST" up --suite "$1" --dir "$WORK/host-$1" 2> "$WORK/host-$1.err") || {
        cat "$WORK/host-$1.err" >&2; return 1; }
    HOSTDIR[$1]=$(sed -n 's/^DIR=//p' <<< "$out")
}
for h in $HOSTS; do
    start_host "$h" || die "could not start the $h host"
done
# one usbpass proxy per host (its socket folder is what the proxy cells bind)
start_proxy() { # HOST
    local h=$1 i
    "$USBPASS" proxy --listen "$WORK/proxy-$h/pcscd.comm" --upstream "${HOSTDIR[$h]}/run/pcscd.comm" \
        < /dev/null > "$WORK/proxy-$h.log" 2>&1 &
    PROXYPID[$h]=$!
    for i in $(seq 1 200); do
        [ -S "$WORK/proxy-$h/pcscd.comm" ] && return 0
        kill -0 "${PROXYPID[$h]}" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 5 "$WORK/proxy-$h.log" >&2
    return 1
}
if [ "$PROXY" = 1 ]; then
    for h in $HOSTS; do start_proxy "$h" || die "could not start the proxy for the $h host"; done
fi
ATR=$("$(cat "${HOSTDIR[${HOSTS%% *}]}/vcard.bin")" atr) || die "vcard atr failed"
echo "matrix: hosts up ($(for h in $HOSTS; do printf '%s=%s ' "$h" "${VER[$h]}"; done| xargs)) after $(( $(date +%s) - T0 )) s" >&2

# ------------------------------------------------------------------ one cell
# Writes WORK/res/CLIENT.HOST.ROUTE: line 1 PASS|FAIL, line 2 the reason, line 3 tool notes.
run_cell() { # CLIENT HOST ROUTE
    local c=$1 h=$2 r=$3 dir=${HOSTDIR[$2]} key="$1.$2.$3"
    local log=$WORK/cells/$key.log err=$WORK/cells/$key.err fifo=$WORK/cells/$key.fifo
    local route_args=() expect=() cellargs=() line result="" why="" rc notes=""
    case $r in
        native) expect=(--expect-native) ;;
        preload) route_args=(--preload "$LIB"); expect=(--expect-lib /app/lib/libpcscbridge.so) ;;
        dropin) route_args=(--dropin "$LIB"); expect=(--expect-lib /app/lib/libpcsclite.so.1) ;;
        delegate) route_args=(--delegate "$LIB"); expect=(--expect-lib /app/lib/libpcscbridge.so) ;;
        proxy) expect=(--expect-native) ;;
    esac
    # how the sandbox reaches pcscd: the host socket file, or the proxy's folder
    if [ "$r" = proxy ]; then
        route_args=(--proxy "$WORK/proxy-$h")
    else
        route_args=(--socket "$dir/run/pcscd.comm" "${route_args[@]}")
    fi
    cellargs=(--reader "$READER" --atr "$ATR" --timeout "$EVENT_TIMEOUT" "${expect[@]}")
    [ "$QUICK" = 1 ] && cellargs+=(--no-events)
    [ "$r" != native ] && cellargs+=(--cancel)
    # every cell starts with the card in
    [ "$("$TESTHOST" card "$dir" status 2>/dev/null)" = present ] ||
        "$TESTHOST" card "$dir" insert >/dev/null 2>&1
    mkfifo "$fifo"
    timeout -k 2 "$CELL_TIMEOUT" "$SANDBOX" --suite "$c" \
        "${route_args[@]}" --ro-bind "$CELL_DIR" /matrix \
        -- /usr/bin/python3 /matrix/cell.py "${cellargs[@]}" < /dev/null > "$fifo" 2> "$err" &
    local pid=$!
    exec 7< "$fifo"
    while IFS= read -r line <&7; do
        echo "$line" >> "$log"
        case $line in
            @remove) "$TESTHOST" card "$dir" remove >> "$log" 2>&1 ;;
            @insert) "$TESTHOST" card "$dir" insert >> "$log" 2>&1 ;;
            @PASS) result=PASS ;;
            "@FAIL "*) result=FAIL; why=${line#@FAIL } ;;
        esac
    done
    exec 7<&-
    wait "$pid"; rc=$?
    rm -f "$fifo"
    if [ -z "$result" ]; then
        result=FAIL
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timeout after ${CELL_TIMEOUT} s"
        else why="exit $rc"; fi
    fi
    if [ "$result" = FAIL ]; then
        # what the loader or pyscard said (a library that cannot load, e.g. a glibc too old)
        local hint
        hint=$(grep -m1 -E "GLIBC_|ld\.so|dlopen|cannot open shared|undefined symbol" "$err" |
               sed 's/^[[:space:]]*//' | cut -c1-160)
        [ -n "$hint" ] || hint=$(grep -m1 -E "GLIBC_|dlopen" "$log" | sed 's/^[[:space:]]*//' | cut -c1-160)
        [ -n "$hint" ] && why="$why; $hint"
    fi
    # tool checks: the suite's own unmodified pcsc_scan and opensc-tool
    if [ "$TOOLS" = 1 ] && { [ "$result" = PASS ] || [ "$r" = native ]; }; then
        local out
        out=$(timeout -k 2 15 "$SANDBOX" --suite "$c" \
              "${route_args[@]}" -- pcsc_scan -r 2>&1 < /dev/null)
        echo "--- pcsc_scan -r" >> "$log"; echo "$out" >> "$log"
        grep -qF "$READER" <<< "$out" || notes="pcsc_scan -r: $(grep -m1 -iE 'SCard|No reader|error' <<< "$out" || echo 'reader not listed')"
        out=$(timeout -k 2 15 "$SANDBOX" --suite "$c" \
              "${route_args[@]}" -- opensc-tool -a 2>&1 < /dev/null)
        echo "--- opensc-tool -a" >> "$log"; echo "$out" >> "$log"
        local atr_colon
        atr_colon=$(sed 's/ /:/g' <<< "$ATR" | tr 'A-F' 'a-f')
        grep -qiF "$atr_colon" <<< "$out" ||
            notes="${notes:+$notes; }opensc-tool -a: $(grep -m1 -iE 'fail|no smart|error' <<< "$out" || echo 'no ATR')"
    fi
    printf '%s\n%s\n%s\n' "$result" "$why" "$notes" > "$WORK/res/$key"
}

# The proxy sharing check: clients A and B (suites), each one cell.py --repl process in its own
# sandbox, at once through HOST's proxy. Writes WORK/res/share.HOST like a cell (and
# WORK/res/share.HOST.clients: "A+B").
share_check() { # HOST A B
    local h=$1 a=$2 b=$3 k log
    log=$WORK/cells/share.$h.log
    local -A in out pid name=([A]=$a [B]=$b)
    local result=PASS why="" fd
    echo "$a+$b" > "$WORK/res/share.$h.clients"
    [ "$("$TESTHOST" card "${HOSTDIR[$h]}" status 2>/dev/null)" = present ] ||
        "$TESTHOST" card "${HOSTDIR[$h]}" insert >/dev/null 2>&1
    for k in A B; do
        local s=$a; [ "$k" = B ] && s=$b
        mkfifo "$WORK/cells/share.$h.$k.in" "$WORK/cells/share.$h.$k.out"
        timeout -k 2 "$CELL_TIMEOUT" "$SANDBOX" --suite "$s" --proxy "$WORK/proxy-$h" \
            --ro-bind "$CELL_DIR" /matrix -- /usr/bin/python3 /matrix/cell.py --repl \
            --reader "$READER" < "$WORK/cells/share.$h.$k.in" > "$WORK/cells/share.$h.$k.out" \
            2>> "$log" &
        pid[$k]=$!
        exec {fd}> "$WORK/cells/share.$h.$k.in"; in[$k]=$fd
        exec {fd}< "$WORK/cells/share.$h.$k.out"; out[$k]=$fd
    done
    # step CLIENT "COMMAND" EXPECTED-PREFIX: the answer must start with "@= VERB EXPECTED"
    step() {
        [ "$result" = PASS ] || return 0
        local ans=""
        echo "$2" >&"${in[$1]}"
        IFS= read -r -t 15 ans <&"${out[$1]}"
        echo "${name[$1]}: $2 -> $ans" >> "$log"
        if [[ $ans != "@= ${2%% *} $3"* ]]; then
            result=FAIL
            why="${name[$1]} $2: ${ans:-no answer}"
            [ -n "$ans" ] && why="${name[$1]} $2: ${ans#@= } (expected $3)"
        fi
    }
    step A "establish a" 0x00000000
    step B "establish b" 0x00000000
    step A "connect a x exclusive" 0x00000000
    step A "transmit x" "0x00000000 9000"
    step B "connect b y shared" 0x8010000B
    step B "connect b y exclusive" 0x8010000B
    step A "transmit x" "0x00000000 9000"
    step A "disconnect x" 0x00000000
    step B "connect b y shared" 0x00000000
    step A "connect a x shared" 0x00000000
    step B "transmit y" "0x00000000 9000"
    step A "transmit x" "0x00000000 9000"
    step A "connect a z exclusive" 0x8010000B
    step B "disconnect y" 0x00000000
    step A "disconnect x" 0x00000000
    step A "release a" 0x00000000
    step B "release b" 0x00000000
    for k in A B; do
        { echo quit >&"${in[$k]}"; } 2>/dev/null
        fd=${in[$k]}; exec {fd}>&-
        fd=${out[$k]}; exec {fd}<&-
    done
    for k in A B; do wait "${pid[$k]}" 2>/dev/null; done
    rm -f "$WORK/cells/share.$h".?.in "$WORK/cells/share.$h".?.out
    printf '%s\n%s\n\n' "$result" "$why" > "$WORK/res/share.$h"
}

host_worker() { # HOST
    local h=$1 c r
    for c in $CLIENTS; do
        for r in $(routes_for "$c"); do
            run_cell "$c" "$h" "$r"
        done
    done
    if [ "$PROXY" = 1 ]; then
        # two different client suites, a different pair per host
        local cl i=0 x
        read -r -a cl <<< "$CLIENTS"
        for x in $HOSTS; do [ "$x" = "$h" ] && break; i=$((i + 1)); done
        share_check "$h" "${cl[i % ${#cl[@]}]}" "${cl[(i + 1) % ${#cl[@]}]}"
    fi
}

mkdir -p "$WORK/res" "$WORK/cells"
T1=$(date +%s)
for h in $HOSTS; do
    host_worker "$h" > "$WORK/worker-$h.log" 2>&1 &
    WORKERS+=($!)
done
wrc=0
for p in "${WORKERS[@]}"; do wait "$p" || wrc=1; done
WORKERS=()
[ "$wrc" = 0 ] || echo "matrix: a host worker failed (see $WORK/worker-*.log)" >&2

# ------------------------------------------------------------------ report
passed=0 failed=0 unexpected=0
declare -A GRID
for c in $CLIENTS; do
    for h in $HOSTS; do
        for r in $(routes_for "$c"); do
            f=$WORK/res/$c.$h.$r
            if [ -f "$f" ]; then
                { IFS= read -r result; IFS= read -r why; IFS= read -r notes; } < "$f"
            else
                result=FAIL why="cell did not run" notes=""
            fi
            text=$result
            [ "$result" = FAIL ] && text="FAIL ($why)"
            cellmark=$result
            if [ "$r" = native ]; then
                p=$(predict "$c" "$h")
                if [ "$result" = FAIL ] && [ "$p" = fail ] && [[ $why == SCardEstablishContext:* ]]; then
                    text="$text (expected)"; cellmark="fail(exp)"
                elif [ "$result" = PASS ] && [ "$p" = ok ]; then :
                else
                    text="$text UNEXPECTED (protocols ${PROTO[$c]}/${PROTO[$h]} predict $p)"
                    cellmark="$result(UNEXP)"; unexpected=$((unexpected + 1))
                fi
                if [ -n "$notes" ]; then
                    if pnp_bug_expected "$c" "$h" && [[ $notes == "pcsc_scan -r:"* ]] &&
                       [[ $notes != *opensc-tool* ]]; then
                        text="$text [$notes: 2.5.x first-call bug (expected)]"
                    elif [ "$result" = PASS ]; then
                        text="$text [$notes] UNEXPECTED"; unexpected=$((unexpected + 1))
                        cellmark="PASS(tools!)"
                    fi
                fi
            else
                if [ "$result" = PASS ] && [ -n "$notes" ]; then
                    result=FAIL; text="FAIL ($notes)"; cellmark=FAIL
                fi
                if [ "$result" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
            fi
            GRID[$c.$h.$r]=$cellmark
            echo "client=$c host=$h route=$r: $text"
        done
    done
done
if [ "$PROXY" = 1 ]; then
    for h in $HOSTS; do
        f=$WORK/res/share.$h
        pair=$(cat "$f.clients" 2>/dev/null || echo "?")
        if [ -f "$f" ]; then { IFS= read -r result; IFS= read -r why; } < "$f"
        else result=FAIL why="check did not run"; fi
        if [ "$result" = PASS ]; then passed=$((passed + 1)); text=PASS
        else failed=$((failed + 1)); text="FAIL ($why)"; fi
        echo "share clients=$pair host=$h route=proxy: $text"
    done
fi

echo
for r in $ROUTES; do
    printf '%-18s' "route=$r"
    for h in $HOSTS; do printf ' %-14s' "$h ${VER[$h]}"; done; echo
    for c in $CLIENTS; do
        grep -qx "$r" <<< "$(routes_for "$c")" || continue
        printf '%-18s' "$c ${VER[$c]}"
        for h in $HOSTS; do printf ' %-14s' "${GRID[$c.$h.$r]}"; done; echo
    done
done
echo
[ "$unexpected" = 0 ] || echo "matrix: $unexpected native result(s) differ from the protocol prediction"
echo "matrix: time $(( $(date +%s) - T0 )) s (cells $(( $(date +%s) - T1 )) s)" >&2
echo "matrix: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$wrc" = 0 ] || exit 1
exit 0
