#!/usr/bin/env bash
# demo.sh: the main job on the embedded default (the project's virtual card, no hardware).
#
#   scripts/demo.sh [--host SUITE] [--client SUITE]      (defaults: trixie, bookworm)
#
# Sets everything up (packages, the glibc-2.17 libpcscbridge.so, Debian suite roots), then:
# a host pcscd of one generation (default trixie's pcsc-lite 2.3.3, protocol 4:5) with a vpcd
# reader and the virtual card; a sandboxed client of another (default bookworm's 1.9.9,
# protocol 4:4) in a bwrap sandbox built the way Flatpak's --socket=pcsc builds it. The
# client's own unmodified pyscard, pcsc_scan and opensc-tool fail natively with
# SCARD_E_SERVICE_STOPPED, then work through pcsc-bridge (LD_PRELOAD and drop-in).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
HOST=trixie CLIENT=bookworm
while [ $# -gt 0 ]; do
    case $1 in
        --host) HOST=${2:?}; shift 2 ;;
        --client) CLIENT=${2:?}; shift 2 ;;
        *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

scripts/setup.sh
LIB=$(scripts/build-so.sh | tail -n 1)
scripts/suites.sh prepare "$HOST" "$CLIENT" >/dev/null

out=$(scripts/testhost.sh up --suite "$HOST")
DIR=$(echo "$out" | sed -n 's/^DIR=//p')
SOCKET=$(echo "$out" | sed -n 's/^SOCKET=//p')
trap 'scripts/testhost.sh down "$DIR" >/dev/null 2>&1 || true' EXIT

CHECK='
import sys
from smartcard.scard import *
from smartcard.util import toHexString
rv, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
if rv != SCARD_S_SUCCESS:
    sys.exit("SCardEstablishContext: 0x%08X (%s)" % (rv & 0xFFFFFFFF, SCardGetErrorMessage(rv)))
rv, readers = SCardListReaders(ctx, [])
print("readers:", readers)
rv, card, proto = SCardConnect(ctx, readers[0], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
rv, name, state, proto, atr = SCardStatus(card)
print("ATR:", toHexString(atr))
rv, resp = SCardTransmit(card, proto, [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01])
print("SELECT ->", toHexString(resp[-2:]))
'
show() { # TITLE ROUTE-ARGS...
    local title=$1; shift
    echo
    echo "== $title"
    scripts/sandbox.sh --suite "$CLIENT" --socket "$SOCKET" "$@" -- /usr/bin/python3 -c "$CHECK" 2>&1 | sed 's/^/   /' || true
    scripts/sandbox.sh --suite "$CLIENT" --socket "$SOCKET" "$@" -- timeout 5 pcsc_scan -r 2>&1 | sed 's/^/   pcsc_scan: /' || true
    scripts/sandbox.sh --suite "$CLIENT" --socket "$SOCKET" "$@" -- timeout 5 opensc-tool -a 2>&1 | sed 's/^/   opensc-tool: /' || true
}
echo "host pcscd: $HOST ($(scripts/suites.sh info 2>/dev/null | grep -w "$HOST" | head -1))"
echo "sandboxed client: $CLIENT"
show "native: the client's own libpcsclite against the host's pcscd"
show "through pcsc-bridge, LD_PRELOAD" --preload "$LIB"
show "through pcsc-bridge, drop-in libpcsclite.so.1" --dropin "$LIB"
