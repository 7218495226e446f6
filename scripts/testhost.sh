#!/usr/bin/env bash
# testhost.sh: a private test host = a real pcscd (own mount namespace, socket DIR/run/pcscd.comm)
# with a vsmartcard-vpcd reader and the project's virtual card (tests/src/bin/vcard.rs).
#
#   testhost.sh up [--dir DIR] [--port PORT] [--no-card] [--pcscd PATH | --suite SUITE]
#       prints: DIR=... SOCKET=... PORT=... READER=... CARD_CTL=...  (one per line)
#       --suite SUITE: run that Debian suite's own pcscd (and vpcd driver) chrooted in its root
#       from scripts/suites.sh (prepare it first); the socket is still DIR/run/pcscd.comm.
#   testhost.sh down DIR
#   testhost.sh card DIR insert|remove|status
#   testhost.sh reader DIR add|remove      (exit 3 = unsupported by this pcscd; Debian's pcscd)
#   testhost.sh restart-pcscd DIR
#
# Environment: PCSCD (pcscd binary, default pcscd on PATH; --pcscd wins), VCARD (vcard binary),
# TESTHOST_TIMEOUT (seconds to wait for readiness, default 10), PCSC_BRIDGE_SUITES (see suites.sh).
# Needs root (mount namespace). Several hosts can run at once; each uses TCP ports PORT and PORT+1
# (vpcd listens on both, on 0.0.0.0) and PORT+2, PORT+3 for `reader add`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=/tmp/pcsc-bridge-hosts
PORTS_DIR=$BASE/.ports
VPCD_LIB=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
TIMEOUT=${TESTHOST_TIMEOUT:-10}

die() { echo "testhost: $*" >&2; exit 1; }

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_vcard() {
    if [ -n "${VCARD:-}" ]; then
        [ -x "$VCARD" ] || die "VCARD=$VCARD is not executable"
        echo "$VCARD"; return
    fi
    local t=${CARGO_TARGET_DIR:-$ROOT/target}
    for c in "$t/release/vcard" "$t/debug/vcard"; do
        [ -x "$c" ] && { echo "$c"; return; }
    done
    echo "testhost: building vcard (cargo build -p pcsc-bridge-tests --bin vcard --release)" >&2
    (cd "$ROOT" && cargo build -q -p pcsc-bridge-tests --bin vcard --release >&2) \
        || die "cargo build of vcard failed"
    [ -x "$t/release/vcard" ] || die "vcard not found after build"
    echo "$t/release/vcard"
}

# Is a TCP port in use (any socket bound to it, IPv4 or IPv6)?
port_used() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Reserve PORT..PORT+3 for DIR (atomic mkdir; stale reservations of vanished DIRs are reclaimed).
reserve_ports() {
    local port=$1 dir=$2 p
    mkdir -p "$PORTS_DIR"
    if ! mkdir "$PORTS_DIR/$port" 2>/dev/null; then
        local owner
        owner=$(cat "$PORTS_DIR/$port/owner" 2>/dev/null || true)
        if [ -n "$owner" ] && [ -d "$owner" ]; then return 1; fi
        rm -rf "$PORTS_DIR/$port"
        mkdir "$PORTS_DIR/$port" 2>/dev/null || return 1
    fi
    echo "$dir" > "$PORTS_DIR/$port/owner"
    for p in "$port" $((port + 1)) $((port + 2)) $((port + 3)); do
        if port_used "$p"; then rm -rf "$PORTS_DIR/$port"; return 1; fi
    done
    return 0
}

pick_port() {
    local dir=$1 i port
    for i in $(seq 1 200); do
        port=$(( (RANDOM * 32768 + RANDOM) % 10000 * 4 + 20000 ))   # 20000..59996, step 4
        reserve_ports "$port" "$dir" && { echo "$port"; return 0; }
    done
    return 1
}

write_conf() { # FILE PORT [NAME]
    cat > "$1" <<EOF
FRIENDLYNAME "${3:-Virtual PCD}"
DEVICENAME /dev/null:$2
LIBPATH $VPCD_LIB
CHANNELID $2
EOF
}

# Is PID alive (and not a zombie)?
alive() {
    local st
    [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$st" != Z ] && [ "$st" != X ]
}

# Does PID belong to this host? Its command line mentions DIR, or (a chrooted suite pcscd, whose
# command line has only paths inside its root) its environment has PCSC_BRIDGE_TESTHOST=DIR.
ours() {
    alive "$1" || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$2" && return 0
    tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | grep -qxF "PCSC_BRIDGE_TESTHOST=$2"
}

stop_pid() { # PID DIR: SIGTERM, up to 3 s, SIGKILL
    local pid=$1 dir=$2 i
    ours "$pid" "$dir" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 60); do
        alive "$pid" || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do alive "$pid" || return 0; sleep 0.05; done
}

pid_of() { # DIR NAME
    awk -v n="$2" '$1 == n { print $2 }' "$1/pids" 2>/dev/null | tail -n 1
}

set_pid() { # DIR NAME PID
    local f=$1/pids
    touch "$f"
    { grep -v "^$2 " "$f" || true; echo "$2 $3"; } > "$f.tmp"
    mv "$f.tmp" "$f"
}

pcscd_bin() { # DIR
    local b
    b=$(cat "$1/pcscd.bin" 2>/dev/null || true)
    echo "${b:-${PCSCD:-pcscd}}"
}

start_pcscd() { # DIR
    local dir=$1 bin extra=() pid sroot
    bin=$(pcscd_bin "$dir")
    sroot=$(cat "$dir/suite.root" 2>/dev/null || true)
    mkdir -p "$dir/run"
    rm -f "$dir/run/pcscd.comm" "$dir/run/pcscd.pid"
    [ -f "$dir/pcscd.log" ] && mv "$dir/pcscd.log" "$dir/pcscd.log.$(date +%s%N)"
    if [ -n "$sroot" ]; then
        # A suite's pcscd, chrooted in its root (its own libraries and vpcd driver). In a private
        # mount namespace: /proc mounted, DIR/run bound onto ROOT/run/pcscd (the socket stays
        # reachable as DIR/run/pcscd.comm) and DIR/conf onto ROOT/hostconf. Nothing in the shared
        # root is changed, so several hosts may use the same root at once.
        if chroot "$sroot" /usr/sbin/pcscd --help 2>&1 | grep -q -- '--disable-polkit'; then
            extra+=(--disable-polkit)
        fi
        PCSC_BRIDGE_TESTHOST=$dir unshare -m --propagation private sh -c \
            'd=$1; r=$2; shift 2
             mount -t proc proc "$r/proc" && mount --bind "$d/run" "$r/run/pcscd" &&
             mount --bind "$d/conf" "$r/hostconf" && exec chroot "$r" "$@"' \
            sh "$dir" "$sroot" /usr/sbin/pcscd -f -d -c /hostconf "${extra[@]}" \
            < /dev/null > "$dir/pcscd.log" 2>&1 &
    else
        if "$bin" --help 2>&1 | grep -q -- '--disable-polkit'; then extra+=(--disable-polkit); fi
        mkdir -p /run/pcscd
        # unshare execs sh, which execs pcscd: $! is pcscd's PID.
        PCSC_BRIDGE_TESTHOST=$dir unshare -m --propagation private sh -c \
            'mount --bind "$1/run" /run/pcscd && shift && exec "$@"' \
            sh "$dir" "$bin" -f -d -c "$dir/conf" "${extra[@]}" \
            < /dev/null > "$dir/pcscd.log" 2>&1 &
    fi
    pid=$!
    set_pid "$dir" pcscd "$pid"
}

start_card() { # DIR PORT ABSENT(0/1)
    local dir=$1 port=$2 args=()
    [ "$3" = 1 ] && args+=(--absent)
    PCSC_BRIDGE_TESTHOST=$dir "$VCARD_BIN" --port "$port" --ctl "$dir/card.ctl" "${args[@]}" \
        < /dev/null > "$dir/vcard.log" 2>&1 &
    set_pid "$dir" vcard "$!"
}

# Wait until pcscd's log has a line matching the fixed string STR (and pcscd is alive).
wait_log() { # DIR STR
    local dir=$1 str=$2 pid deadline
    pid=$(pid_of "$dir" pcscd)
    deadline=$(( $(date +%s%N) + TIMEOUT * 1000000000 ))
    while :; do
        grep -qF -- "$str" "$dir/pcscd.log" 2>/dev/null && [ -S "$dir/run/pcscd.comm" ] && return 0
        alive "$pid" || { echo "testhost: pcscd exited; last log lines:" >&2; tail -n 15 "$dir/pcscd.log" >&2; return 1; }
        [ "$(date +%s%N)" -lt "$deadline" ] || { echo "testhost: timeout (${TIMEOUT}s) waiting for '$str' in $dir/pcscd.log" >&2; tail -n 15 "$dir/pcscd.log" >&2; return 1; }
        sleep 0.02
    done
}

teardown() { # DIR
    local dir=$1 pid port
    for name in vcard pcscd; do
        pid=$(pid_of "$dir" "$name")
        [ -n "$pid" ] && stop_pid "$pid" "$dir"
    done
    port=$(cat "$dir/port" 2>/dev/null || true)
    if [ -n "$port" ] && [ "$(cat "$PORTS_DIR/$port/owner" 2>/dev/null)" = "$dir" ]; then
        rm -rf "$PORTS_DIR/$port"
    fi
}

check_dir() {
    [ -n "${1:-}" ] || usage
    [ -f "$1/.testhost" ] || die "$1 is not a test host folder (no .testhost marker)"
}

cmd_up() {
    local dir="" port="" nocard=0 pcscd_arg="" suite="" sroot=""
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) dir=${2:?}; shift 2 ;;
            --port) port=${2:?}; shift 2 ;;
            --no-card) nocard=1; shift ;;
            --pcscd) pcscd_arg=${2:?}; shift 2 ;;
            --suite) suite=${2:?}; shift 2 ;;
            *) usage ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "needs root (mount namespace for pcscd)"
    local bin=${pcscd_arg:-${PCSCD:-pcscd}}
    if [ -n "$suite" ]; then
        [ -z "$pcscd_arg" ] || die "--pcscd and --suite exclude each other"
        sroot=$("$ROOT/scripts/suites.sh" path "$suite") || die "no root for suite $suite"
        bin=$sroot/usr/sbin/pcscd
        [ -x "$bin" ] || die "no pcscd in $sroot"
        [ -e "$sroot$VPCD_LIB" ] || die "vpcd driver missing in $sroot (re-run suites.sh prepare $suite)"
        [ -d "$sroot/run/pcscd" ] && [ -d "$sroot/hostconf" ] ||
            die "$sroot lacks run/pcscd or hostconf (re-run suites.sh prepare $suite)"
    else
        command -v "$bin" >/dev/null || die "pcscd not found ($bin)"
        [ -e "$VPCD_LIB" ] || die "vpcd driver missing: $VPCD_LIB (apt-get install vsmartcard-vpcd)"
    fi
    VCARD_BIN=$(find_vcard)

    mkdir -p "$BASE"
    if [ -z "$dir" ]; then
        dir=$(mktemp -d "$BASE/host.XXXXXX")
    else
        mkdir -p "$dir"
        dir=$(cd "$dir" && pwd)
    fi
    touch "$dir/.testhost"
    echo "$bin" > "$dir/pcscd.bin"
    if [ -n "$sroot" ]; then
        echo "$sroot" > "$dir/suite.root"; echo "$suite" > "$dir/suite"
    else
        rm -f "$dir/suite.root" "$dir/suite"
    fi
    echo "$VCARD_BIN" > "$dir/vcard.bin"
    # From here on, tear down on failure.
    trap 'rc=$?; if [ $rc -ne 0 ]; then teardown "$dir"; fi' EXIT

    if [ -z "$port" ]; then
        port=$(pick_port "$dir") || die "no free port pair found"
    else
        [ "$port" != 35963 ] && [ "$port" != 35962 ] || die "refusing vpcd's default port"
        reserve_ports "$port" "$dir" || die "port $port (or $((port + 1))..$((port + 3))) is in use"
    fi
    echo "$port" > "$dir/port"
    mkdir -p "$dir/conf" "$dir/run"
    rm -f "$dir/conf/"*
    write_conf "$dir/conf/vpcd" "$port"
    : > "$dir/pids"

    local t0 atr
    t0=$(date +%s%N)
    start_pcscd "$dir"
    start_card "$dir" "$port" "$nocard"
    if [ "$nocard" = 1 ]; then
        wait_log "$dir" "daemon ready" || die "pcscd did not come up"
    else
        atr=$("$VCARD_BIN" atr)
        wait_log "$dir" "Card ATR: $atr" || die "the card did not show up in pcscd"
    fi
    echo "up in $(( ($(date +%s%N) - t0) / 1000000 )) ms" > "$dir/up.time"
    trap - EXIT
    echo "DIR=$dir"
    echo "SOCKET=$dir/run/pcscd.comm"
    echo "PORT=$port"
    echo "READER=Virtual PCD 00 00"
    echo "CARD_CTL=$dir/card.ctl"
}

cmd_down() {
    local dir=${1:-}
    check_dir "$dir"
    teardown "$dir"
    rm -rf "$dir"
}

cmd_card() {
    local dir=${1:-} op=${2:-}
    check_dir "$dir"
    case $op in insert|remove|status) ;; *) usage ;; esac
    "$(cat "$dir/vcard.bin")" ctl "$dir/card.ctl" "$op"
}

cmd_restart_pcscd() {
    local dir=${1:-} pid status
    check_dir "$dir"
    pid=$(pid_of "$dir" pcscd)
    [ -n "$pid" ] && stop_pid "$pid" "$dir"
    start_pcscd "$dir"
    status=$("$(cat "$dir/vcard.bin")" ctl "$dir/card.ctl" status 2>/dev/null || echo absent)
    if [ "$status" = present ]; then
        wait_log "$dir" "Card ATR: $("$(cat "$dir/vcard.bin")" atr)" || die "card not seen after restart"
    else
        wait_log "$dir" "daemon ready" || die "pcscd did not come back"
    fi
}

# `reader add|remove`: see the comment of reader_mode below.
cmd_reader() {
    local dir=${1:-} op=${2:-} port pid
    check_dir "$dir"
    port=$(cat "$dir/port")
    pid=$(pid_of "$dir" pcscd)
    case $op in
        add) write_conf "$dir/conf/vpcd-2" $((port + 2)) "Second PCD" ;;
        remove) rm -f "$dir/conf/vpcd-2" ;;
        *) usage ;;
    esac
    # --restart: a stock pcscd (libudev hotplug) reads serial readers only when it
    # starts, and two conf entries for vpcd's driver in one pcscd do not both come
    # up. So with --restart, "remove" restarts pcscd with no reader at all and
    # "add" restarts it with the card's reader back: clients see the reader list
    # change across a daemon restart.
    if [ "${3:-}" = --restart ]; then
        rm -f "$dir/conf/vpcd-2"
        mkdir -p "$dir/conf.off"
        if [ "$op" = remove ]; then
            [ -f "$dir/conf/vpcd" ] && mv "$dir/conf/vpcd" "$dir/conf.off/vpcd"
            local p
            p=$(pid_of "$dir" pcscd)
            [ -n "$p" ] && stop_pid "$p" "$dir"
            start_pcscd "$dir"
            wait_log "$dir" "daemon ready" || die "pcscd did not come back"
        else
            [ -f "$dir/conf.off/vpcd" ] && mv "$dir/conf.off/vpcd" "$dir/conf/vpcd"
            cmd_restart_pcscd "$dir"
        fi
        return
    fi
    reader_apply "$dir" "$op"
}

# Make pcscd pick up the change of DIR/conf: SIGUSR1 (what `pcscd --hotplug` sends) makes pcscd
# re-read its serial reader configuration, but only in builds with libusb hotplug. Debian's pcscd
# (1.9.x and 2.x) uses libudev hotplug, where that handler does nothing (measured with 1.9.9: the
# log shows "Received signal: 10" and the reader list stays the same). So this verifies in the log
# that the reader really came or went, and otherwise undoes the change and exits with status 3
# ("unsupported by this pcscd") so tests can skip.
reader_apply() { # DIR OP
    local dir=$1 op=$2 pid before deadline
    pid=$(pid_of "$dir" pcscd)
    ours "$pid" "$dir" || die "pcscd of $dir is not running"
    before=$(wc -l < "$dir/pcscd.log")
    kill -USR1 "$pid"
    deadline=$(( $(date +%s%N) + 2000000000 ))
    while [ "$(date +%s%N)" -lt "$deadline" ]; do
        if tail -n +"$((before + 1))" "$dir/pcscd.log" | grep -i "Second PCD" \
            | grep -qiE "$( [ "$op" = add ] && echo 'Attempting startup' || echo 'remov')"; then
            return 0
        fi
        sleep 0.05
    done
    [ "$op" = add ] && rm -f "$dir/conf/vpcd-2"
    echo "testhost: unsupported: this pcscd ($(pcscd_bin "$dir")) did not re-read $dir/conf on SIGUSR1" \
        "(libudev hotplug builds such as Debian's ignore it); reader $op not possible" >&2
    exit 3
}

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    card) shift; cmd_card "$@" ;;
    reader) shift; cmd_reader "$@" ;;
    restart-pcscd) shift; cmd_restart_pcscd "$@" ;;
    *) usage ;;
esac
