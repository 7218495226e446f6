#!/usr/bin/env bash
# demo.sh: the main job on the embedded default (the project's virtual card, no hardware).
#
#   scripts/demo.sh
#
# Sets everything up (scripts/setup.sh), brings up a real pcscd with a vpcd reader
# and the virtual card on a private socket, and runs unmodified PC/SC clients
# (pcsc_scan, opensc-tool, pyscard) first on Debian's own libpcsclite, then through
# pcsc-bridge's libpcscbridge.so by LD_PRELOAD and as a drop-in libpcsclite.so.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh

LIB=$ROOT/target/release/libpcscbridge.so
out=$(scripts/testhost.sh up)
eval "$(echo "$out" | grep -E '^(DIR|SOCKET|READER)=' | sed 's/=\(.*\)/="\1"/')"
DROPIN=$(mktemp -d)
trap 'scripts/testhost.sh down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DROPIN"' EXIT
cp "$LIB" "$DROPIN/libpcsclite.so.1"
export PCSCLITE_CSOCK_NAME=$SOCKET

run() { # TITLE ENV... -- CMD...
    local title=$1; shift
    echo
    echo "== $title"
    env "$@" 2>&1 | sed 's/^/   /'
}
APDU=00:A4:04:00:07:A0:00:00:05:27:21:01
for route in native preload dropin; do
    case $route in
        native) E=() ;;
        preload) E=(LD_PRELOAD="$LIB") ;;
        dropin) E=(LD_LIBRARY_PATH="$DROPIN") ;;
    esac
    echo
    echo "######## route: $route"
    run "pcsc_scan -r" "${E[@]}" timeout 10 pcsc_scan -r
    run "opensc-tool -a" "${E[@]}" timeout 10 opensc-tool -r "$READER" -a
    run "opensc-tool -s SELECT" "${E[@]}" timeout 10 opensc-tool -r "$READER" -s "$APDU"
    run "pyscard" "${E[@]}" timeout 10 /usr/bin/python3 -c '
from smartcard.System import readers
r = readers()
print("readers:", [str(x) for x in r])
c = r[0].createConnection(); c.connect()
print("ATR:", " ".join("%02X" % b for b in c.getATR()))
data, sw1, sw2 = c.transmit([0x00,0xA4,0x04,0x00,0x07,0xA0,0x00,0x00,0x05,0x27,0x21,0x01])
print("SELECT -> %02X %02X" % (sw1, sw2))'
done
echo
echo "demo: the same readers, ATR and responses natively and through pcsc-bridge"
