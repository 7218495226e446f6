#!/usr/bin/env bash
# flatpak-test.sh: pcsc-bridge in real Flatpak sandboxes, offline.
#
#   flatpak-test.sh [--suites "bookworm trixie"] [--host-suite SUITE] [--glibc-floor]
#                   [--rebuild] [--keep]
#
# For each suite, a local Flatpak runtime is made from that suite's root (scripts/suites.sh; its
# /usr and /etc: python3, pyscard and that suite's libpcsclite), exported into a local OSTree repo
# with a tiny app (--socket=pcsc; its command runs a pyscard check: list readers, connect, ATR,
# SELECT 00 A4 04 00 07 A0 00 00 05 27 21 01 -> 90 00), and both are installed under a private
# FLATPAK_USER_DIR. The app then runs with `flatpak run` against a test host (scripts/testhost.sh:
# pcscd + vpcd + virtual card; host-side PCSCLITE_CSOCK_NAME makes Flatpak bind that socket at
# /run/pcscd/pcscd.comm in the sandbox). Cases per suite:
#   native           the runtime's own libpcsclite vs the host pcscd: works when their protocols
#                    agree, fails with 0x8010001E when not (trixie's 2.3.3 vs bookworm's 1.9.9)
#   native-doctor    `pcsc-bridge doctor` inside the sandbox: exit 0, or 1 with the enable hint
#   preload          after `pcsc-bridge flatpak enable APP`: the check passes
#   preload-doctor   doctor inside (the copy enable put in ~/.var/app/APP/pcsc-bridge): route preload
#   preload-usbpass  enable also put usbpass there (the library starts it when the sandbox sees
#                    USB readers and no pcscd; that is tested in scripts/qemu-usb-test.sh, this
#                    host has no USB): it runs in the runtime (`usbpass --version`)
#   disable          `pcsc-bridge flatpak disable APP`: the override file is byte for byte what it
#                    was before enable (a user override set beforehand survives), native again
#   delegate         same with --route delegate (runtimes whose libpcsclite is 2.1.0+)
#   proxy            --route proxy through `usbpass proxy` (the app's own libpcsclite, any
#                    version, talks to the proxy), doctor inside, disable restores the override
#   no-socket        (first suite) host socket missing: doctor inside fails with the --socket hint
# Prints `flatpak SUITE route=CASE: PASS|FAIL (...)` lines and `flatpak: N passed, M failed`;
# exit status 0 when all passed.
#
# The runtimes, app and installation are cached in FLATPAK_TEST_CACHE (default
# /var/cache/pcsc-bridge/flatpak), keyed on the suite root's stamp and this script's app, so a
# second run takes seconds (--rebuild forces a rebuild). HOME and XDG_RUNTIME_DIR are temporary
# folders (so ~/.var/app lands there); --keep leaves them and the host for inspection.
# Runtimes with an older glibc than the build machine's (bullseye: 2.31) need --glibc-floor: the
# library and the tool then come from scripts/build-so.sh (Zig, glibc 2.17 floor).
# Environment: PCSC_BRIDGE_BIN, PCSC_BRIDGE_LIB (default target/release/{pcsc-bridge,libpcscbridge.so},
# built), USBPASS (default target/release/usbpass, built; the proxy case is skipped when that
# fails), CARGO_TARGET_DIR, FLATPAK_TEST_SUITES (same as --suites).
# Needs root (test host, suite roots). Installs flatpak with apt-get when it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FLATPAK_TEST_CACHE:-/var/cache/pcsc-bridge/flatpak}
SUITES=${FLATPAK_TEST_SUITES:-bookworm trixie}
HOST_SUITE="" REBUILD=0 KEEP=0 FLOOR=0
RUNTIME_ID=org.pcscbridge.Test.Platform
REMOTE=pcsc-bridge-test
FORMAT=1          # bump when the runtime/app layout below changes

die() { echo "flatpak-test: $*" >&2; exit 2; }
usage() { sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { echo "flatpak-test: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --suites) SUITES=${2:?}; shift 2 ;;
        --host-suite) HOST_SUITE=${2:?}; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        --glibc-floor) FLOOR=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage ;;
        *) echo "flatpak-test: unknown option $1" >&2; usage ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (test host in a mount namespace, suite roots)"

T0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

if ! command -v flatpak >/dev/null; then
    log "installing flatpak (apt-get)"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q flatpak >&2 || die "apt-get install flatpak failed"
fi

# ---- pcsc-bridge under test -------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${PCSC_BRIDGE_BIN:-$TARGET/release/pcsc-bridge}
LIB=${PCSC_BRIDGE_LIB:-$TARGET/release/libpcscbridge.so}
if [ "$FLOOR" = 1 ]; then
    log "scripts/build-so.sh (glibc 2.17 floor)"
    LIB=$("$ROOT/scripts/build-so.sh" | tail -n 1) || die "scripts/build-so.sh failed"
    BIN=$(dirname "$LIB")/pcsc-bridge
elif [ -z "${PCSC_BRIDGE_BIN:-}" ] || [ -z "${PCSC_BRIDGE_LIB:-}" ]; then
    log "cargo build --release -p pcsc-bridge-interpose"
    (cd "$ROOT" && cargo build -q --release -p pcsc-bridge-interpose >&2) || die "cargo build failed"
fi
# usbpass (the proxy route's server): optional, that case is skipped without it
USBPASS=${USBPASS:-}
if [ -z "$USBPASS" ]; then
    if (cd "$ROOT" && cargo build -q --release -p usbpass >/dev/null 2>&1) &&
        "$TARGET/release/usbpass" --help 2>/dev/null | grep -q 'usbpass proxy'; then
        USBPASS=$TARGET/release/usbpass
    fi
fi
if [ -z "${VCARD:-}" ] && [ ! -x "$TARGET/release/vcard" ]; then   # testhost.sh's card, built before HOME changes
    (cd "$ROOT" && cargo build -q --release -p pcsc-bridge-tests --bin vcard >&2) || die "cargo build of vcard failed"
fi
[ -x "$BIN" ] || die "no pcsc-bridge binary at $BIN"
[ -f "$LIB" ] || die "no library at $LIB"
# both go into the sandbox: the runtimes' glibc must be new enough
NEED=$(objdump -T "$LIB" "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
for s in $SUITES; do
    has=$(sed -n 's/^glibc=//p' "$("$ROOT/scripts/suites.sh" path "$s" 2>/dev/null)/.pcsc-bridge-info" 2>/dev/null || true)
    has=${has%%-*}
    if [ -n "$NEED" ] && [ -n "$has" ] && dpkg --compare-versions "$has" lt "$NEED"; then
        die "$s has glibc $has but $LIB / $BIN need $NEED: run with --glibc-floor"
    fi
done

# ---- the app (its files take part in the cache key) -------------------------------------------
CHECK_PY=$(cat <<'PY'
import sys
from smartcard import scard
from smartcard.util import toHexString

SELECT = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01]


def fail(what, hr):
    print("RESULT fail %s 0x%08X" % (what, hr & 0xFFFFFFFF), flush=True)
    sys.exit(1)


hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
if hr != scard.SCARD_S_SUCCESS:
    fail("SCardEstablishContext", hr)
hr, readers = scard.SCardListReaders(ctx, [])
if hr != scard.SCARD_S_SUCCESS:
    fail("SCardListReaders", hr)
print("readers=%s" % "|".join(readers))
want = sys.argv[1] if len(sys.argv) > 1 else None
reader = want if want in readers else readers[0]
hr, card, proto = scard.SCardConnect(ctx, reader, scard.SCARD_SHARE_SHARED,
                                     scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
if hr != scard.SCARD_S_SUCCESS:
    fail("SCardConnect", hr)
hr, name, state, p, atr = scard.SCardStatus(card)
if hr != scard.SCARD_S_SUCCESS:
    fail("SCardStatus", hr)
print("atr=%s" % toHexString(atr))
pci = scard.SCARD_PCI_T1 if proto == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T0
hr, resp = scard.SCardTransmit(card, pci, SELECT)
if hr != scard.SCARD_S_SUCCESS:
    fail("SCardTransmit", hr)
print("select=%s" % toHexString(resp[-2:]))
scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
scard.SCardReleaseContext(ctx)
if resp[-2:] != [0x90, 0x00]:
    print("RESULT fail SELECT", flush=True)
    sys.exit(1)
print("RESULT ok", flush=True)
PY
)
APP_KEY=$( { echo "format=$FORMAT"; echo "$CHECK_PY"; } | sha256sum | cut -c1-16)

app_id() { echo "org.pcscbridge.Test.${1^}"; }

# ---- private Flatpak installation --------------------------------------------------------------
mkdir -p "$CACHE"
exec 8> "$CACHE/.lock"
flock 8                               # one run at a time: they share the installation's overrides
export FLATPAK_USER_DIR=$CACHE/user
REPO=$CACHE/repo
TMP=$(mktemp -d /tmp/pcsc-bridge-flatpak.XXXXXX)
# cargo and rustup (testhost.sh may build) keep their homes when HOME moves
[ -d "$HOME/.cargo" ] && export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
[ -d "$HOME/.rustup" ] && export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export HOME=$TMP/home XDG_RUNTIME_DIR=$TMP/run
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
unset LD_PRELOAD LIBPCSCLITE_DELEGATE PCSCLITE_CSOCK_NAME
HOSTDIR=""
cleanup() {
    local st=$?
    for s in $SUITES; do rm -f "$FLATPAK_USER_DIR/overrides/$(app_id "$s")"; done
    if [ "$KEEP" = 1 ]; then
        log "kept: HOME=$HOME, host ${HOSTDIR:-none}"
    else
        if [ -n "$HOSTDIR" ]; then "$ROOT/scripts/testhost.sh" down "$HOSTDIR" >/dev/null 2>&1 || true; fi
        rm -rf "$TMP"
    fi
    exit $st
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fp() { flatpak "$@"; }

# Build, export and install the runtime and app of one suite, unless the cache is current.
prepare_suite() { # SUITE
    local s=$1 sroot key app b
    sroot=$("$ROOT/scripts/suites.sh" path "$s" 2>/dev/null) || {
        log "preparing the $s root (scripts/suites.sh prepare $s)"
        "$ROOT/scripts/suites.sh" prepare "$s" >&2 || die "scripts/suites.sh prepare $s failed"
        sroot=$("$ROOT/scripts/suites.sh" path "$s")
    }
    app=$(app_id "$s")
    key=$( { cat "$sroot/.pcsc-bridge-stamp" "$sroot/.pcsc-bridge-info"; echo "app=$APP_KEY"; } | sha256sum | cut -c1-16)
    if [ "$REBUILD" = 0 ] && [ "$(cat "$CACHE/$s.key" 2>/dev/null)" = "$key" ] &&
        fp info --user "$RUNTIME_ID//$s" >/dev/null 2>&1 && fp info --user "$app//test" >/dev/null 2>&1; then
        return 0
    fi
    local t0; t0=$(date +%s.%N)
    log "building the $s runtime and $app (cached in $CACHE)"
    rm -f "$CACHE/$s.key"
    b=$CACHE/build/$s
    rm -rf "$b"
    mkdir -p "$b/rt/files" "$b/app/files/bin" "$b/app/files/share"
    # the runtime: the suite's /usr (hard links: no copy) and its /etc as /usr/etc, minus docs
    cp -al "$sroot/usr" "$b/rt/usr"
    rm -rf "$b/rt/usr/share/doc" "$b/rt/usr/share/man" "$b/rt/usr/share/locale" "$b/rt/usr/share/info"
    cp -a "$sroot/etc" "$b/rt/usr/etc"
    cat > "$b/rt/metadata" <<EOF
[Runtime]
name=$RUNTIME_ID
runtime=$RUNTIME_ID/x86_64/$s
sdk=$RUNTIME_ID/x86_64/$s
EOF
    echo "$CHECK_PY" > "$b/app/files/share/pcsc-check.py"
    printf '#!/bin/sh\nexec /usr/bin/python3 /app/share/pcsc-check.py "$@"\n' > "$b/app/files/bin/pcsc-check"
    chmod 755 "$b/app/files/bin/pcsc-check"
    cat > "$b/app/metadata" <<EOF
[Application]
name=$app
runtime=$RUNTIME_ID/x86_64/$s
sdk=$RUNTIME_ID/x86_64/$s
command=pcsc-check

[Context]
sockets=pcsc;
EOF
    fp build-finish "$b/app" --command=pcsc-check >/dev/null
    fp build-export --runtime --disable-sandbox "$REPO" "$b/rt" "$s" >/dev/null
    fp build-export --disable-sandbox "$REPO" "$b/app" test >/dev/null
    fp --user remote-add --if-not-exists --no-gpg-verify "$REMOTE" "file://$REPO"
    fp --user install -y --noninteractive --reinstall "$REMOTE" "$RUNTIME_ID//$s" "$app//test" >/dev/null
    # installed: the exported repository is not needed any more (about half the disk)
    rm -rf "$b" "$REPO"
    echo "$key" > "$CACHE/$s.key"
    log "$s: runtime and app built and installed in $(elapsed "$t0") s"
}

for s in $SUITES; do prepare_suite "$s"; done
log "setup (flatpak, build, runtimes) took $(elapsed "$T0") s"

# ---- the test host -----------------------------------------------------------------------------
host_args=(up)
[ -n "$HOST_SUITE" ] && host_args+=(--suite "$HOST_SUITE")
out=$("$ROOT/scripts/testhost.sh" "${host_args[@]}") || die "testhost.sh ${host_args[*]} failed"
HOSTDIR=$(sed -n 's/^DIR=//p' <<< "$out")
SOCKET=$(sed -n 's/^SOCKET=//p' <<< "$out")
READER=$(sed -n 's/^READER=//p' <<< "$out")
ATR="3B 8A 80 01 70 63 73 63 62 72 69 64 67 65 17"

# protocol of a pcsc-lite version (pcscd-protocol.md)
proto_of() {
    local v=$1
    if dpkg --compare-versions "$v" lt 1.8.9; then echo 4:2
    elif dpkg --compare-versions "$v" lt 1.8.24; then echo 4:3
    elif dpkg --compare-versions "$v" lt 2.3.0; then echo 4:4
    elif dpkg --compare-versions "$v" lt 2.5.0; then echo 4:5
    else echo 4:6; fi
}
info_of() { sed -n "s/^$2=//p" "$("$ROOT/scripts/suites.sh" path "$1")/.pcsc-bridge-info"; }
if [ -n "$HOST_SUITE" ]; then
    HOST_UP=$(info_of "$HOST_SUITE" upstream)
else
    HOST_UP=$(pcscd --version 2>&1 | sed -n 's/.*version \([0-9.]*[0-9]\).*/\1/p' | head -n 1)
fi
HOST_PROTO=$(proto_of "$HOST_UP")
log "host pcscd $HOST_UP (protocol $HOST_PROTO) at $SOCKET"

# Does the runtime's own libpcsclite work natively against the host? (measured table,
# docs/test-environments.md: 2.5.x clients fall back; 2.5.x daemons take 4:4 and 4:5; 2.4.1
# clients fall back to 4:4)
native_works() { # CLIENT_UPSTREAM
    local c d=$HOST_PROTO
    c=$(proto_of "$1")
    [ "$c" = "$d" ] && return 0
    [ "$d" = 4:6 ] && { [ "$c" = 4:4 ] || [ "$c" = 4:5 ]; } && return 0
    [ "$c" = 4:6 ] && { [ "$d" = 4:4 ] || [ "$d" = 4:5 ]; } && return 0
    [ "$c" = 4:5 ] && [ "$d" = 4:4 ] && dpkg --compare-versions "$1" ge 2.4.1 && return 0
    return 1
}

PASS=0 FAILN=0
result() { # SUITE CASE OK(0/1) TEXT
    if [ "$3" = 0 ]; then PASS=$((PASS + 1)); echo "flatpak $1 route=$2: PASS ($4)"
    else FAILN=$((FAILN + 1)); echo "flatpak $1 route=$2: FAIL ($4)"; fi
}

# Runs the app; sets OUT, RC, SECS.
run_app() { # APP [SOCKET]
    local t0 sock=${2:-$SOCKET}
    t0=$(date +%s.%N)
    RC=0
    OUT=$(PCSCLITE_CSOCK_NAME=$sock timeout 60 flatpak run "$1//test" "$READER" 2>&1) || RC=$?
    SECS=$(elapsed "$t0")
}
# Runs pcsc-bridge doctor inside the app's sandbox; sets OUT, RC, SECS.
run_doctor() { # APP BIN-PATH-INSIDE [SOCKET] [flatpak run options...]
    local app=$1 bin=$2 sock=${3:-$SOCKET} t0
    shift 3 || shift $#
    t0=$(date +%s.%N)
    RC=0
    OUT=$(PCSCLITE_CSOCK_NAME=$sock timeout 60 flatpak run "$@" --command="$bin" "$app//test" doctor 2>&1) || RC=$?
    SECS=$(elapsed "$t0")
}
last_result() { sed -n 's/^RESULT //p' <<< "$OUT" | tail -n 1; }
first_line() { head -n "${2:-3}" <<< "$1" | tr '\n' ' ' | cut -c1-300; }

# the expected app outcome: "ok" or the error code
check_app() { # SUITE CASE EXPECT(ok|fail) APP
    local s=$1 c=$2 want=$3 app=$4 r
    run_app "$app"
    r=$(last_result)
    if [ "$want" = ok ]; then
        if [ "$RC" = 0 ] && [ "$r" = ok ] && grep -qx "atr=$ATR" <<< "$OUT" && grep -qx "select=90 00" <<< "$OUT"; then
            result "$s" "$c" 0 "readers, ATR, SELECT 90 00 in ${SECS} s"
        else
            result "$s" "$c" 1 "want success, got rc=$RC: $(first_line "$OUT" 6)"
        fi
    else
        if [ "$RC" != 0 ] && grep -q "0x8010001E" <<< "$r"; then
            result "$s" "$c" 0 "fails as expected: $r, in ${SECS} s"
        else
            result "$s" "$c" 1 "want 0x8010001E, got rc=$RC: $(first_line "$OUT" 6)"
        fi
    fi
}

PCB() { "$BIN" "$@"; }          # pcsc-bridge on the host side (HOME, FLATPAK_USER_DIR exported)
BINDIR=$(cd "$(dirname "$BIN")" && pwd)
FIRST=1
for s in $SUITES; do
    app=$(app_id "$s")
    up=$(info_of "$s" upstream)
    rt_lib=$("$ROOT/scripts/suites.sh" path "$s")/usr/lib/x86_64-linux-gnu/libpcsclite.so.1
    native=fail; native_works "$up" && native=ok
    log "$s: pcsc-lite $up ($(proto_of "$up")), natively expected: $native"
    ovr=$FLATPAK_USER_DIR/overrides/$app
    rm -f "$ovr"
    rm -rf "$HOME/.var/app/$app"

    # native
    check_app "$s" native "$native" "$app"
    run_doctor "$app" "$BINDIR/pcsc-bridge" "$SOCKET" --filesystem="$BINDIR:ro"
    if [ "$native" = ok ]; then
        if [ "$RC" = 0 ] && grep -q "result: OK" <<< "$OUT"; then
            result "$s" native-doctor 0 "exit 0, result OK, in ${SECS} s"
        else
            result "$s" native-doctor 1 "want exit 0, got $RC: $(grep -E '^\[(FAIL|warn)\]|^next step' <<< "$OUT" | head -n 3 | tr '\n' ' ')"
        fi
    else
        if [ "$RC" = 1 ] && grep -q "pcsc-bridge flatpak enable $app" <<< "$OUT" && grep -q "offers protocol" <<< "$OUT"; then
            result "$s" native-doctor 0 "exit 1 with the hint \`pcsc-bridge flatpak enable $app\`, in ${SECS} s"
        else
            result "$s" native-doctor 1 "want exit 1 + enable hint, got $RC: $(first_line "$OUT" 12)"
        fi
    fi

    # a user override from before: must survive enable/disable byte for byte
    flatpak override --user "$app" --env=PCSC_TEST_KEEP=1
    before=$(cat "$ovr")

    # preload
    if PCB flatpak enable "$app" --lib "$LIB" > "$TMP/enable.out" 2>&1; then
        check_app "$s" preload ok "$app"
        run_doctor "$app" "$HOME/.var/app/$app/pcsc-bridge/pcsc-bridge" "$SOCKET"
        if [ "$RC" = 0 ] && grep -q "route: preload" <<< "$OUT" && grep -q "$ATR" <<< "$OUT"; then
            result "$s" preload-doctor 0 "exit 0, route preload, the card's ATR, in ${SECS} s"
        else
            result "$s" preload-doctor 1 "got $RC: $(first_line "$OUT" 12)"
        fi
        # usbpass, installed beside the library for the USB fallback, must run in the runtime
        # (a static program: any runtime's libc will do)
        if [ -x "$HOME/.var/app/$app/pcsc-bridge/usbpass" ]; then
            RC=0
            UOUT=$(timeout 60 flatpak run --command="$HOME/.var/app/$app/pcsc-bridge/usbpass" "$app//test" --version 2>&1) ||
                RC=$?
            if [ "$RC" = 0 ] && grep -q "^usbpass " <<< "$UOUT"; then
                result "$s" preload-usbpass 0 "enable installed usbpass beside the library; in the sandbox: $UOUT"
            else
                result "$s" preload-usbpass 1 "usbpass --version in the sandbox: rc $RC: $(first_line "$UOUT" 3)"
            fi
        else
            result "$s" preload-usbpass 1 "enable did not install usbpass: $(first_line "$(cat "$TMP/enable.out")" 6)"
        fi
        st=$(PCB flatpak status "$app" 2>&1 || true)
        if grep -q "enabled (route preload)" <<< "$st"; then
            result "$s" preload-status 0 "status: $(head -n 1 <<< "$st")"
        else
            result "$s" preload-status 1 "status: $(first_line "$st" 4)"
        fi
    else
        result "$s" preload 1 "enable failed: $(first_line "$(cat "$TMP/enable.out")" 4)"
    fi
    if PCB flatpak disable "$app" > "$TMP/disable.out" 2>&1 && [ "$(cat "$ovr" 2>/dev/null)" = "$before" ] &&
        [ ! -e "$HOME/.var/app/$app/pcsc-bridge" ]; then
        check_app "$s" disable "$native" "$app"
    else
        result "$s" disable 1 "override not restored: $(first_line "$(cat "$ovr" 2>/dev/null)" 6) / $(first_line "$(cat "$TMP/disable.out")" 4)"
    fi

    # delegate (pcsc-lite 2.1.0+ only)
    if grep -q LIBPCSCLITE_DELEGATE "$rt_lib" 2>/dev/null; then
        if PCB flatpak enable "$app" --route delegate --lib "$LIB" > "$TMP/enable.out" 2>&1; then
            check_app "$s" delegate ok "$app"
        else
            result "$s" delegate 1 "enable failed: $(first_line "$(cat "$TMP/enable.out")" 4)"
        fi
        if PCB flatpak disable "$app" > "$TMP/disable.out" 2>&1 && [ "$(cat "$ovr" 2>/dev/null)" = "$before" ]; then
            check_app "$s" delegate-disable "$native" "$app"
        else
            result "$s" delegate-disable 1 "override not restored: $(first_line "$(cat "$ovr" 2>/dev/null)" 6)"
        fi
    else
        echo "flatpak $s route=delegate: SKIP (pcsc-lite $up predates LIBPCSCLITE_DELEGATE)"
    fi

    # proxy (usbpass proxy, when it is there): its default socket is
    # $XDG_RUNTIME_DIR/pcsc-bridge/pcscd.comm, which --filesystem=xdg-run/pcsc-bridge shows
    # in the sandbox at /run/user/UID/pcsc-bridge/pcscd.comm
    if [ -n "$USBPASS" ]; then
        psock=$XDG_RUNTIME_DIR/pcsc-bridge/pcscd.comm
        "$USBPASS" proxy --listen "$psock" --upstream "$SOCKET" > "$TMP/usbpass.log" 2>&1 &
        ppid=$!
        for _ in $(seq 1 100); do [ -S "$psock" ] && break; sleep 0.05; done
        if [ -S "$psock" ] && PCB flatpak enable "$app" --route proxy > "$TMP/enable.out" 2>&1; then
            check_app "$s" proxy ok "$app"
            run_doctor "$app" "$HOME/.var/app/$app/pcsc-bridge/pcsc-bridge" "$SOCKET"
            if [ "$RC" = 0 ] && grep -q "route: proxy" <<< "$OUT" && grep -q "socket: $psock" <<< "$OUT"; then
                result "$s" proxy-doctor 0 "exit 0, route proxy, socket $psock, in ${SECS} s"
            else
                result "$s" proxy-doctor 1 "got $RC: $(first_line "$OUT" 12)"
            fi
        else
            result "$s" proxy 1 "no proxy socket at $psock or enable failed: $(first_line "$(cat "$TMP/usbpass.log" "$TMP/enable.out" 2>/dev/null)" 4)"
        fi
        if PCB flatpak disable "$app" > "$TMP/disable.out" 2>&1 && [ "$(cat "$ovr" 2>/dev/null)" = "$before" ]; then
            check_app "$s" proxy-disable "$native" "$app"
        else
            result "$s" proxy-disable 1 "override not restored: $(first_line "$(cat "$ovr" 2>/dev/null)" 6)"
        fi
        kill "$ppid" 2>/dev/null || true
        wait "$ppid" 2>/dev/null || true
    else
        echo "flatpak $s route=proxy: SKIP (usbpass proxy not available)"
    fi

    # no socket on the host side: Flatpak binds nothing; doctor says what to do
    if [ "$FIRST" = 1 ]; then
        FIRST=0
        run_doctor "$app" "$BINDIR/pcsc-bridge" "$TMP/no-such-socket" --filesystem="$BINDIR:ro"
        if [ "$RC" = 1 ] && grep -q "flatpak override --user --socket=pcsc $app" <<< "$OUT"; then
            result "$s" no-socket 0 "doctor exit 1 with the --socket=pcsc hint, in ${SECS} s"
        else
            result "$s" no-socket 1 "got $RC: $(first_line "$OUT" 8)"
        fi
    fi
    rm -f "$ovr"
done

echo "flatpak: $PASS passed, $FAILN failed (total $(elapsed "$T0") s)"
[ "$FAILN" = 0 ]
