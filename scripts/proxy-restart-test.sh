#!/usr/bin/env bash
# proxy-restart-test.sh: the host pcscd restarts under a running sandboxed client (issue 4).
#
#   scripts/proxy-restart-test.sh [--client SUITE] [--host SUITE] [--usbpass PATH] [--keep]
#
#   --client SUITE  the sandboxed client's suite (default bookworm): its own /usr/bin/python3,
#                   pyscard and unmodified libpcsclite, in scripts/sandbox.sh
#   --host SUITE    the host pcscd's suite (default bookworm; scripts/testhost.sh up --suite)
#   --usbpass PATH  default target/release/usbpass
#   --keep          keep the work folder (logs) even when everything passed
#
# One test host, one `usbpass proxy` in front of it, and two long-running clients of the same
# suite, each one tests/matrix/cell.py --repl process in its own sandbox:
#   P  bound to the proxy's FOLDER (sandbox.sh --proxy: what Flatpak's
#      --filesystem=xdg-run/pcsc-bridge gives), PCSCLITE_CSOCK_NAME the socket in it;
#   N  bound to the host pcscd's socket FILE (sandbox.sh --socket: what Flatpak's --socket=pcsc
#      does).
# Before: both establish a context, list the reader, connect and transmit (SELECT -> 90 00).
# Then `testhost.sh restart-pcscd` (the daemon is stopped and started again; its socket is a new
# file). After, in the SAME processes (pids checked):
#   P  the old card handle fails (the code is reported); a NEW SCardEstablishContext works, the
#      reader is listed, connect + transmit work; the old context works again too;
#   N  a new SCardEstablishContext gets SCARD_E_NO_SERVICE (0x8010001D): its sandbox still holds
#      the dead socket file.
# Meanwhile the proxy's socket path never disappears (polled every 10 ms, same inode) and the
# proxy process stays the same.
# Output: one line per step, then "proxy-restart: PASS" or "proxy-restart: FAIL (why)".
# Exit status: 0 pass, 1 fail, 2 usage or setup error. Needs root (like testhost.sh, matrix.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTHOST=$ROOT/scripts/testhost.sh
SANDBOX=$ROOT/scripts/sandbox.sh
READER="Virtual PCD 00 00"
OK=0x00000000

usage() { sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "proxy-restart: $*" >&2; exit 2; }

CLIENT=bookworm HOST=bookworm USBPASS=$ROOT/target/release/usbpass KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --client) CLIENT=${2:?}; shift 2 ;;
        --host) HOST=${2:?}; shift 2 ;;
        --usbpass) USBPASS=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage ;;
        *) echo "proxy-restart: unknown option $1" >&2; usage ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (test hosts use mount namespaces)"
[ -x "$USBPASS" ] || die "no usbpass at $USBPASS (cargo build --release -p usbpass, or --usbpass)"
USBPASS=$(realpath "$USBPASS")
"$ROOT/scripts/suites.sh" prepare "$CLIENT" "$HOST" > /dev/null || die "suites.sh prepare failed"

T0=$(date +%s%N)
WORK=$(mktemp -d /tmp/pcsc-bridge-proxy-restart.XXXXXX) || die "mktemp failed"
HOSTDIR=$WORK/host PROXYDIR=$WORK/proxy
PROXY_PID="" WATCH_PID=""
declare -A CPID IN OUT
cleanup() {
    local rc=$? k fd
    trap - EXIT INT TERM
    for k in "${!IN[@]}"; do fd=${IN[$k]}; exec {fd}>&-; done
    for k in "${!OUT[@]}"; do fd=${OUT[$k]}; exec {fd}<&-; done
    for k in "${!CPID[@]}"; do kill -TERM "${CPID[$k]}" 2>/dev/null; wait "${CPID[$k]}" 2>/dev/null; done
    [ -n "$WATCH_PID" ] && { kill -TERM "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; }
    [ -n "$PROXY_PID" ] && { kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; }
    if [ -f "$HOSTDIR/.testhost" ]; then
        cp -f "$HOSTDIR"/pcscd.log* "$WORK/" 2>/dev/null
        "$TESTHOST" down "$HOSTDIR" > /dev/null 2>&1 || echo "proxy-restart: host teardown failed" >&2
    fi
    if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "proxy-restart: logs in $WORK" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ host, proxy
"$TESTHOST" up --suite "$HOST" --dir "$HOSTDIR" > "$WORK/host.out" 2>&1 || {
    cat "$WORK/host.out" >&2; die "could not start the $HOST host"; }
HOSTSOCK=$HOSTDIR/run/pcscd.comm
"$USBPASS" proxy --listen "$PROXYDIR/pcscd.comm" --upstream "$HOSTSOCK" \
    < /dev/null > "$WORK/usbpass.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 200); do [ -S "$PROXYDIR/pcscd.comm" ] && break; sleep 0.05; done
[ -S "$PROXYDIR/pcscd.comm" ] || { tail "$WORK/usbpass.log" >&2; die "the proxy did not start"; }

# ------------------------------------------------------------------ clients
start_client() { # NAME SANDBOX-ARGS...
    local k=$1 fd; shift
    mkfifo "$WORK/$k.in" "$WORK/$k.out"
    "$SANDBOX" --suite "$CLIENT" "$@" --ro-bind "$ROOT/tests/matrix" /matrix \
        -- /usr/bin/python3 /matrix/cell.py --repl --reader "$READER" \
        < "$WORK/$k.in" > "$WORK/$k.out" 2> "$WORK/$k.err" &
    CPID[$k]=$!
    exec {fd}> "$WORK/$k.in"; IN[$k]=$fd
    exec {fd}< "$WORK/$k.out"; OUT[$k]=$fd
}
start_client P --proxy "$PROXYDIR"
start_client N --socket "$HOSTSOCK"

FAIL=""
ANS=""
ask() { # NAME COMMAND: the answer in ANS, without "@= VERB "
    ANS=""
    { echo "$2" >&"${IN[$1]}"; } 2>/dev/null || { ANS="(client gone)"; return; }
    IFS= read -r -t 20 ANS <&"${OUT[$1]}" || ANS="(no answer)"
    ANS=${ANS#"@= ${2%% *} "}
}
# check NAME COMMAND EXPECTED-PREFIX [NOTE]: ask, print, record the first failure
check() {
    ask "$1" "$2"
    local res=ok
    [[ $ANS == "$3"* ]] || res="FAIL (expected $3)"
    printf '  %s %-24s -> %-40s %s\n' "$1" "$2" "$ANS" "${res}${4:+  $4}"
    [ "$res" = ok ] || [ -n "$FAIL" ] || FAIL="$1: $2: $ANS, expected $3"
}
# report NAME COMMAND: ask and print, no expectation
report() {
    ask "$1" "$2"
    printf '  %s %-24s -> %-40s (reported)\n' "$1" "$2" "$ANS"
}

echo "proxy-restart: client $CLIENT (P: proxy folder, N: host socket file), host $HOST"
echo "before the restart:"
declare -A PID0
for k in P N; do
    ask "$k" pid; PID0[$k]=${ANS#"$OK "}
    check "$k" "establish c1" "$OK"
    check "$k" "list c1" "$OK $READER"
    check "$k" "connect c1 h1 shared" "$OK"
    check "$k" "transmit h1" "$OK 9000"
done
[ -z "$FAIL" ] || { echo "proxy-restart: FAIL (before the restart: $FAIL)"; exit 1; }

# ------------------------------------------------------------------ the restart
inode() { stat -Lc %i "$1" 2>/dev/null || echo none; }
PINODE=$(inode "$PROXYDIR/pcscd.comm") HINODE=$(inode "$HOSTSOCK")
# the watcher: the proxy socket must be there at every look (every 10 ms)
( gone=0 looks=0
  trap 'echo "$looks $gone" > "$WORK/watch.result"; exit 0' TERM
  while :; do
      [ -S "$PROXYDIR/pcscd.comm" ] || gone=$((gone + 1))
      looks=$((looks + 1)); sleep 0.01
  done ) &
WATCH_PID=$!
t=$(date +%s%N)
"$TESTHOST" restart-pcscd "$HOSTDIR" > "$WORK/restart.out" 2>&1 || {
    cat "$WORK/restart.out" >&2; die "testhost.sh restart-pcscd failed"; }
echo "restart-pcscd: $(( ($(date +%s%N) - t) / 1000000 )) ms; host socket inode $HINODE -> $(inode "$HOSTSOCK")"

echo "after the restart:"
# P: the old card is gone; a new context in the same process works (the proxy may need a
# moment to see the daemon again: a few tries, reported)
report P "transmit h1"
tries=0
while :; do
    tries=$((tries + 1))
    ask P "establish c2"
    if [ "$ANS" = "$OK" ]; then
        ask P "list c2"
        [[ $ANS == "$OK $READER"* ]] && break
        ask P "release c2"
    fi
    [ "$tries" -lt 50 ] || break
    sleep 0.1
done
printf '  P %-24s -> %-40s %s\n' "establish c2 + list c2" "$ANS" "(try $tries)"
[[ $ANS == "$OK $READER"* ]] || FAIL="P: no working new context after the restart ($tries tries): $ANS"
check P "connect c2 h2 shared" "$OK"
check P "transmit h2" "$OK 9000"
check P "disconnect h2" "$OK"
check P "list c1" "$OK $READER" "(the old context)"
check P "connect c1 h3 shared" "$OK" "(the old context)"
check P "transmit h3" "$OK 9000" "(the old context)"
check P "cancel c2" 0x80100002 "(SCardCancel of an INFINITE wait)"
report P "disconnect h1"
# N: the sandbox holds the dead socket file
report N "transmit h1"
check N "establish c2" 0x8010001D "(SCARD_E_NO_SERVICE: the bound socket file is the dead one)"
for k in P N; do
    ask "$k" pid
    if [ "${ANS#"$OK "}" = "${PID0[$k]}" ] && kill -0 "${CPID[$k]}" 2>/dev/null; then
        echo "  $k same process all along (pid ${PID0[$k]%% *} in its sandbox; bwrap pid ${CPID[$k]})"
    else echo "  $k process changed: ${PID0[$k]} -> $ANS"; [ -n "$FAIL" ] || FAIL="$k: not the same process"; fi
done

kill -TERM "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=""
read -r looks gone < "$WORK/watch.result" 2>/dev/null || { looks=0; gone="?"; }
echo "proxy socket: missing at $gone of $looks looks; inode $PINODE -> $(inode "$PROXYDIR/pcscd.comm")"
[ "$gone" = 0 ] && [ "$looks" -gt 0 ] || [ -n "$FAIL" ] || FAIL="the proxy socket disappeared ($gone of $looks looks)"
[ "$(inode "$PROXYDIR/pcscd.comm")" = "$PINODE" ] || [ -n "$FAIL" ] || FAIL="the proxy socket was made anew"
kill -0 "$PROXY_PID" 2>/dev/null || [ -n "$FAIL" ] || FAIL="the proxy died"
echo "proxy-restart: time $(( ($(date +%s%N) - T0) / 1000000 )) ms"
if [ -n "$FAIL" ]; then echo "proxy-restart: FAIL ($FAIL)"; exit 1; fi
echo "proxy-restart: PASS"
exit 0
