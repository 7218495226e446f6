#!/usr/bin/env bash
# qemu-usb-test.sh: end-to-end test of the USB CCID path (issue 5) in a QEMU guest.
#
#   qemu-usb-test.sh [--quick] [--phases LIST] [--no-build] [--rebuild] [--timeout SEC] [--keep]
#   qemu-usb-test.sh --bench [--phases LIST] [--no-build] [--timeout SEC] [--keep]
#
# The guest gets QEMU's emulated reader (`-device qemu-xhci -device usb-ccid,serial=PCSCBRIDGE01
# -device ccid-card-passthru,chardev=ccid`), software emulation only (`-accel tcg`; /dev/kvm here
# cannot run a guest). The card behind the reader is the project's virtual card, `vscard`
# (tests/src/bin/vscard.rs), on the host: QEMU connects to its Unix socket and speaks the VSCard
# protocol; vscard logs every APDU it gets (full hex) so we can assert on what the driver sent.
# The guest's second serial port (/dev/ttyS1) is connected to vscard's control socket, so the
# guest script removes/inserts the card and marks sections of the APDU log itself.
#
# Phases (one boot, run in order; the reader gets a USB port reset between them):
#   ref      the reference stack: Debian bookworm's pcscd 1.9.9 -f + libccid 1.5.2 (no udev)
#   usbpass  `usbpass serve --listen /run/pcscd/pcscd.comm` instead of pcscd
#   sbx-usb  no daemon at all: the clients run in a bwrap sandbox built like Flatpak's for an app
#            with --device=usb (only /dev/bus/usb; no network, no /run/udev) whose
#            libpcsclite.so.1 is pcsc-bridge with usbpass beside it (what `pcsc-bridge flatpak
#            enable` installs); the first PC/SC call makes pcsc-bridge start usbpass
#   sbx-all  the same with --device=all (all of /dev)
# Each phase runs the same cases: stock `pcsc_scan -r`, `opensc-tool -a`, `opensc-tool -s SELECT`,
# and a pyscard script (list, status, connect, ATR, attributes, features, SELECT, READ BINARY,
# echo, 61xx + GET RESPONSE, transaction + VERIFY, card removal, insertion, reconnect, and the
# "64-byte answer" quirk: an echo whose reader answer is exactly 64 bytes, then another command).
# Sandbox phases add: `shared` (four client processes started at once, one usbpass, owner-only
# socket in $XDG_RUNTIME_DIR), `doctor` (names usbpass as the backend), `plug`/`unplug` (an empty
# second usb-ccid hot-plugged and removed through QEMU's QMP: PnP notification, reader list), and
# in the last phase `pull`: the card's reader is unplugged while an APDU is in flight (vscard
# holds the answer), which must end the transmit with READER_UNAVAILABLE, REMOVED_CARD or
# NO_SMARTCARD and leave usbpass serving. The guest reaches QMP through vscard's control channel.
# Reference results are informational (`reference: ...` lines); the other phases' cases must
# pass, and where the result is a value (reader name, attributes, features) or an APDU trace,
# must equal the reference's. The last line is `usbpass e2e: N passed, M failed` (all phases but
# ref); exit 1 if M > 0 (2: setup).
#
# The reference stack here (QEMU 7.2, pcscd 1.9.9, libccid 1.5.2) passes everything but the 64-byte
# quirk: after a DataBlock of exactly 64 bytes (the 52-byte echo), the next command's bulk-IN read
# returns 0 bytes (the zero-length packet ending the previous transfer), libccid logs "Not enough
# data received: 0 bytes" and the transmit fails with SCARD_E_NOT_TRANSACTED (py_quirk64); the real
# answer stays queued and, as libccid does not check bSeq, is handed to the next command, so every
# later answer is one behind (py_after_quirk). A driver that skips empty reads and matches bSeq
# passes both.
#
#   --quick        all phases but ref, compared with the reference results cached by the last
#                  full run (CACHE/reference.txt)
#   --phases LIST  e.g. ref, or usbpass,sbx-usb (default ref,usbpass,sbx-usb,sbx-all; --bench:
#                  ref,usbpass)
#   --no-build     do not run cargo; use the binaries in target/
#   --rebuild      rebuild the cached guest kernel and root
#   --timeout SEC  host-side limit for the guest (default 240; the guest's own watchdog fires
#                  15 s earlier)
#   --keep         keep the run folder's big files (initrd) too
#   --bench        benchmark instead of the e2e cases (issue 5 part 7), same guest and reader: per
#                  phase, cold start = the daemon's process start (`pcscd -f` + libccid, or `usbpass
#                  serve`) to the first APDU answered, seen by a client polling EstablishContext/
#                  ListReaders/Connect/Transmit every 5 ms (BENCH_COLD runs, default 5, median; a USB
#                  port reset before each, the card stays in), then on the last run's daemon the
#                  median round trip of BENCH_APDUS (default 200) echo APDUs `80 01 00 00 08 <8 bytes>`
#                  (10-byte answer, far from the 64-byte quirk) timed in pyscard with perf_counter.
#                  Prints `usb-bench apdu: reference X ms, usbpass Y ms, ratio Y/X` and the same for
#                  cold-start. Under TCG absolute times are slow; the ratios are what matter. Never
#                  fails on a ratio (exit 2 only when a number is missing). Daemons run without
#                  debug logs (USBPASS_LOG default warn).
#
# Cache (CACHE = $PCSC_BRIDGE_QEMU_CACHE, default /var/cache/pcsc-bridge/qemu): the guest kernel
# (linux-image-6.1.0-NN-amd64 from apt: uncompressed vmlinux, which boots through its PVH entry,
# and the four USB modules), and a debootstrapped bookworm root with pcscd libccid opensc
# pcsc-tools python3-pyscard usbutils, trimmed and packed as an uncompressed cpio (faster to boot
# under TCG than a compressed one). Cold: about 1.5 min; warm runs only build a small second cpio
# (busybox, modules, scripts, usbpass + the libraries `ldd` lists that the root lacks).
# Environment: USBPASS (usbpass binary to test), PCSC_BRIDGE_LIB (the library for
# the sandbox phases; default: the newest libpcscbridge.so in target/), QEMU_TEST_KERNEL (package name),
# USBPASS_LOG (passed to usbpass in the guest, default debug), CARGO_TARGET_DIR.
# Logs of a run: /tmp/pcsc-bridge-qemu.XXXXXX (console.log, vscard.log, usb.pcap, report.txt; the
# last 10 runs are kept).
# Needs root, network to deb.debian.org for the cold build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PCSC_BRIDGE_QEMU_CACHE:-/var/cache/pcsc-bridge/qemu}
MIRROR=${QEMU_TEST_MIRROR:-http://deb.debian.org/debian}
GUEST_PACKAGES=pcscd,libccid,opensc,pcsc-tools,python3-pyscard,usbutils,bubblewrap
RECIPE=2 # bump when the root's build or trim changes
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PY=/usr/bin/python3
SERIAL=PCSCBRIDGE01

PHASES="" BUILD=1 REBUILD=0 TIMEOUT=240 KEEP=0 BENCH=0
T_START=$(date +%s%3N)

secs() { local d=$(($(date +%s%3N) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
log() { printf '[%5ss] %s\n' "$(secs "$T_START")" "$*" >&2; }
die() { echo "qemu-usb-test: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --quick) PHASES=usbpass,sbx-usb,sbx-all ;;
        --phases) PHASES=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        --rebuild) REBUILD=1 ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        --bench) BENCH=1 ;;
        -h|--help) usage ;;
        *) echo "qemu-usb-test: unknown argument $1" >&2; usage ;;
    esac
    shift
done
if [ -z "$PHASES" ]; then
    PHASES=ref,usbpass,sbx-usb,sbx-all
    [ "$BENCH" = 1 ] && PHASES=ref,usbpass
fi
P='(ref|usbpass|sbx-usb|sbx-all)'
[[ $PHASES =~ ^$P(,$P)*$ ]] || die "--phases: ref, usbpass, sbx-usb, sbx-all, comma-separated"
[ "$BENCH" = 1 ] && [[ $PHASES == *sbx* ]] && die "--bench: phases ref and usbpass only"
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 30 ] || die "--timeout: at least 30 seconds"
[ "$(id -u)" = 0 ] || die "needs root (apt-get, debootstrap, the cache in /var/cache)"

# ---------------------------------------------------------------------------------------------
# Host packages
ensure_host_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    [ -x /bin/busybox ] && file_is_static /bin/busybox || missing+=(busybox-static)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || { apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 &&
             apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2; } \
        || die "apt-get install ${missing[*]} failed"
    file_is_static /bin/busybox || die "/bin/busybox is not the static busybox (apt-get install busybox-static)"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Cached guest kernel: CACHE/kernel/{vmlinux,modules/*.ko,package}
ensure_kernel() {
    local k=$CACHE/kernel
    if [ "$REBUILD" = 0 ] && [ -s "$k/vmlinux" ] && [ -s "$k/modules/xhci-pci.ko" ]; then
        return
    fi
    local pkg=${QEMU_TEST_KERNEL:-}
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache show linux-image-amd64 2>/dev/null |
            sed -n 's/^Depends: \(linux-image-6\.[^ ,]*-amd64\).*/\1/p' | head -n1)
        if [ -z "$pkg" ]; then
            apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
            pkg=$(apt-cache show linux-image-amd64 2>/dev/null |
                sed -n 's/^Depends: \(linux-image-6\.[^ ,]*-amd64\).*/\1/p' | head -n1)
        fi
    fi
    [ -n "$pkg" ] || die "cannot find the guest kernel package (set QEMU_TEST_KERNEL=linux-image-6.1.0-NN-amd64)"
    log "guest kernel: downloading $pkg"
    local tmp
    tmp=$(mktemp -d "$CACHE/.kernel.XXXXXX")
    (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2) || die "apt-get download $pkg failed"
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mkdir -p "$tmp/k/modules"
    "$PY" - "$tmp"/x/boot/vmlinuz-* "$tmp/k/vmlinux" <<'EOF' || die "cannot extract vmlinux"
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no xz payload in " + sys.argv[1])
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("payload is not an ELF file")
open(sys.argv[2], "wb").write(elf)
EOF
    local m
    for m in common/usb-common core/usbcore host/xhci-hcd host/xhci-pci; do
        cp "$tmp"/x/lib/modules/*/kernel/drivers/usb/$m.ko "$tmp/k/modules/" || die "module $m missing in $pkg"
    done
    echo "$pkg" >"$tmp/k/package"
    rm -rf "$k"
    mv "$tmp/k" "$k"
    rm -rf "$tmp"
}

# ---------------------------------------------------------------------------------------------
# Cached reference root: CACHE/rootfs.cpio (+ rootfs.files, rootfs.info, rootfs.stamp)
root_stamp() { echo "recipe=$RECIPE packages=$GUEST_PACKAGES mirror=$MIRROR"; }

ensure_root() {
    if [ "$REBUILD" = 0 ] && [ -s "$CACHE/rootfs.cpio" ] &&
        [ "$(cat "$CACHE/rootfs.stamp" 2>/dev/null)" = "$(root_stamp)" ]; then
        return
    fi
    local r=$CACHE/.rootfs.new
    rm -rf "$r"
    log "reference root: debootstrap bookworm with $GUEST_PACKAGES (about a minute)"
    debootstrap --variant=minbase --include="$GUEST_PACKAGES" bookworm "$r" "$MIRROR" \
        >"$CACHE/rootfs.log" 2>&1 || die "debootstrap failed, see $CACHE/rootfs.log"
    chroot "$r" dpkg-query -W -f '${Package} ${Version}\n' pcscd libccid opensc pcsc-tools \
        python3-pyscard libpcsclite1 >"$CACHE/rootfs.info.new"
    # Trim what the guest never runs: docs, locales, apt/dpkg state, perl (ATR_analysis only).
    (
        cd "$r"
        rm -rf var/cache/apt/* var/lib/apt/lists/* var/cache/debconf var/lib/dpkg var/log/* \
            usr/share/doc usr/share/man usr/share/locale usr/share/info usr/share/lintian \
            usr/share/perl usr/share/perl5 usr/share/zoneinfo usr/share/bash-completion \
            usr/lib/x86_64-linux-gnu/perl usr/lib/x86_64-linux-gnu/perl-base \
            usr/lib/x86_64-linux-gnu/libperl.so* usr/bin/perl usr/bin/perl5* \
            usr/lib/x86_64-linux-gnu/gconv usr/lib/apt usr/lib/x86_64-linux-gnu/libapt* \
            usr/lib/python3.11/test usr/lib/python3.11/pydoc_data usr/lib/python3.11/idlelib \
            usr/lib/python3.11/ensurepip usr/lib/python3.11/tkinter
        mkdir -p run/pcscd qemu-test
        find . -mindepth 1 -printf '/%P\n' | sort >"$CACHE/rootfs.files.new"
        find . -mindepth 1 -print0 | cpio --null -o -H newc --quiet >"$CACHE/rootfs.cpio.new"
    ) || die "packing the root failed"
    mv "$CACHE/rootfs.files.new" "$CACHE/rootfs.files"
    mv "$CACHE/rootfs.info.new" "$CACHE/rootfs.info"
    mv "$CACHE/rootfs.cpio.new" "$CACHE/rootfs.cpio"
    root_stamp >"$CACHE/rootfs.stamp"
    rm -f "$CACHE/reference.txt" # results of another root
    rm -rf "$r"
    log "reference root: $(du -h "$CACHE/rootfs.cpio" | cut -f1) cpio ($(tr '\n' ' ' <"$CACHE/rootfs.info"))"
}

# ---------------------------------------------------------------------------------------------
# Binaries
VSCARD="" USBPASS_BIN="" USBPASS_NOTE="" BRIDGE_LIB="" BRIDGE_CLI=""
build_binaries() {
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release (vscard, usbpass)"
        (cd "$ROOT" && cargo build -q --release -p pcsc-bridge-tests --bin vscard >&2) ||
            die "cargo build of vscard failed"
        if [[ $PHASES =~ usbpass|sbx ]] && [ -z "${USBPASS:-}" ]; then
            (cd "$ROOT" && cargo build -q --release -p usbpass --bin usbpass >&2) ||
                USBPASS_NOTE="cargo build of usbpass failed; testing the binary left in target/ (stale)"
        fi
        if [[ $PHASES == *sbx* ]] && [ -z "${PCSC_BRIDGE_LIB:-}" ]; then
            (cd "$ROOT" && cargo build -q --release -p pcsc-bridge-interpose >&2) ||
                USBPASS_NOTE+="${USBPASS_NOTE:+; }cargo build of the interposer failed (stale files tested)"
        fi
    fi
    VSCARD=$TARGET/release/vscard
    [ -x "$VSCARD" ] || die "no $VSCARD (run without --no-build)"
    if [ -n "${USBPASS:-}" ]; then
        USBPASS_BIN=$USBPASS
    else
        local c
        USBPASS_BIN=$(for c in "$TARGET/x86_64-unknown-linux-musl/release/usbpass" \
            "$TARGET/x86_64-unknown-linux-gnu/release/usbpass" "$TARGET/release/usbpass"; do
            [ -x "$c" ] && echo "$(stat -c %Y "$c") $c"; done | sort -rn | head -n1 | cut -d' ' -f2-)
    fi
    [ -n "$USBPASS_BIN" ] && [ -x "$USBPASS_BIN" ] || USBPASS_BIN=""
    # The library an app would bundle: the shipped one (glibc floor, scripts/build-so.sh) if it is
    # the newest, else the plain release build.
    if [ -n "${PCSC_BRIDGE_LIB:-}" ]; then
        BRIDGE_LIB=$PCSC_BRIDGE_LIB
    else
        BRIDGE_LIB=$(for c in "$TARGET/x86_64-unknown-linux-gnu/release/libpcscbridge.so" \
            "$TARGET/release/libpcscbridge.so"; do
            [ -f "$c" ] && echo "$(stat -c %Y "$c") $c"; done | sort -rn | head -n1 | cut -d' ' -f2-)
    fi
    BRIDGE_CLI=$TARGET/release/pcsc-bridge
    [ -n "$USBPASS_NOTE" ] && log "warning: $USBPASS_NOTE"
    return 0
}

# ---------------------------------------------------------------------------------------------
# Per-run overlay cpio: /init, /qemu-test/{busybox,modules,cases.py,env,usbpass/...}
make_overlay() {
    local ov=$RUN/overlay
    mkdir -p "$ov/qemu-test/modules"
    cp /bin/busybox "$ov/qemu-test/busybox"
    cp "$CACHE"/kernel/modules/*.ko "$ov/qemu-test/modules/"
    write_init >"$ov/init"
    write_cases >"$ov/qemu-test/cases.py"
    write_sbx_run >"$ov/qemu-test/sbx-run"
    chmod 755 "$ov/init" "$ov/qemu-test/cases.py" "$ov/qemu-test/sbx-run"
    {
        echo "PHASES='${PHASES//,/ }'"
        echo "WATCHDOG=$((TIMEOUT - 15))"
        if [ "$BENCH" = 1 ]; then
            echo "USBPASS_LOG='${USBPASS_LOG:-warn}'"
        else
            echo "USBPASS_LOG='${USBPASS_LOG:-debug}'"
        fi
        echo "export BENCH=$BENCH BENCH_APDUS=${BENCH_APDUS:-200} BENCH_COLD=${BENCH_COLD:-5}"
    } >"$ov/qemu-test/env"
    if [ "$BENCH" = 1 ]; then
        write_bench >"$ov/qemu-test/bench.py"
        chmod 755 "$ov/qemu-test/bench.py"
    fi
    if [[ $PHASES == *sbx* ]] && [ -n "$USBPASS_BIN" ] && [ -f "$BRIDGE_LIB" ]; then
        # The app as `pcsc-bridge flatpak enable` leaves it: its libpcsclite.so.1 is pcsc-bridge,
        # usbpass beside it: the one shipped beside the library (scripts/build-so.sh: static)
        # if there is one, else the one under test (libusb is built into both).
        local app_usbpass=$USBPASS_BIN
        [ -x "$(dirname "$BRIDGE_LIB")/usbpass" ] && app_usbpass=$(dirname "$BRIDGE_LIB")/usbpass
        mkdir -p "$ov/qemu-test/app/lib" "$ov/qemu-test/app/bin"
        cp "$BRIDGE_LIB" "$ov/qemu-test/app/lib/libpcsclite.so.1"
        cp "$app_usbpass" "$ov/qemu-test/app/lib/usbpass"
        [ -x "$BRIDGE_CLI" ] && cp "$BRIDGE_CLI" "$ov/qemu-test/app/bin/pcsc-bridge"
        log "app: ${BRIDGE_LIB#"$ROOT"/} as libpcsclite.so.1, ${app_usbpass#"$ROOT"/} beside it"
    fi
    if [ -n "$USBPASS_BIN" ] && [[ $PHASES =~ usbpass|sbx ]]; then
        mkdir -p "$ov/qemu-test/usbpass/lib"
        cp "$USBPASS_BIN" "$ov/qemu-test/usbpass/usbpass"
        local lib
        # Libraries the guest root lacks (by file name); glibc and friends are bookworm's on both.
        while read -r lib; do
            [ -f "$lib" ] || { log "warning: usbpass needs $lib (not found on the host)"; continue; }
            grep -q "/$(basename "$lib")\$" "$CACHE/rootfs.files" && continue
            cp -L "$lib" "$ov/qemu-test/usbpass/lib/"
            log "usbpass: adding $(basename "$lib") to the guest"
        done < <(ldd "$USBPASS_BIN" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^\t\(\/[^ ]*\) (.*/\1/p' | grep -v 'ld-linux')
    fi
    (cd "$ov" && find . -mindepth 1 -print0 | cpio --null -o -H newc --quiet) >"$RUN/overlay.cpio"
    cat "$CACHE/rootfs.cpio" "$RUN/overlay.cpio" >"$RUN/initrd"
}

write_sbx_run() {
    cat <<'EOF'
#!/qemu-test/busybox sh
# sbx-run usb|all CMD...: written by scripts/qemu-usb-test.sh.
# Run a command in a sandbox built like Flatpak's for an app with --device=usb (only /dev/bus/usb
# of the devices) or --device=all (all of /dev): every namespace unshared (so no network, no
# netlink), no /run/udev, /sys's device folders read-only, the app's files in /app with
# pcsc-bridge as its libpcsclite.so.1 and usbpass beside it. /dev/ttyS1 is the test's channel to
# vscard (card removal, APDU log marks, QMP), not something an app would get.
devs="--dev /dev --dev-bind /dev/bus/usb /dev/bus/usb --dev-bind /dev/ttyS1 /dev/ttyS1"
[ "$1" = all ] && devs="--dev-bind /dev /dev"
. /qemu-test/env
shift
exec /usr/bin/bwrap --unshare-all --die-with-parent --new-session \
    --ro-bind /usr /usr --ro-bind /etc /etc --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --symlink usr/bin /bin --symlink usr/sbin /sbin --proc /proc $devs \
    --ro-bind-try /sys/block /sys/block --ro-bind /sys/bus /sys/bus --ro-bind /sys/class /sys/class \
    --ro-bind /sys/dev /sys/dev --ro-bind /sys/devices /sys/devices \
    --tmpfs /tmp --tmpfs /run --dir /run/user/0 --dir /var --symlink ../run /var/run \
    --ro-bind /qemu-test /qemu-test --ro-bind /qemu-test/app /app \
    --setenv XDG_RUNTIME_DIR /run/user/0 --setenv LD_LIBRARY_PATH /app/lib \
    --setenv PATH /app/bin:/usr/bin:/bin --setenv USBPASS_LOG "$USBPASS_LOG" \
    --setenv USBPASS_LOG_FILE /tmp/usbpass.log \
    "$@"
EOF
}

write_init() {
    cat <<'EOF'
#!/qemu-test/busybox sh
# Guest init (written by scripts/qemu-usb-test.sh).
B=/qemu-test/busybox
if [ "$1" != stage2 ]; then
    # The initramfs root cannot be pivot_root'ed (bwrap needs that): make / a bind mount of it.
    $B mkdir -p /.root && $B mount --rbind / /.root && cd /.root && $B mount --move . / &&
        exec $B chroot . /init stage2
    echo "@@ERROR could not re-root the initramfs (sandbox phases will fail)"
fi
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B mount -t tmpfs run /run
$B mkdir -p /run/pcscd /tmp
. /qemu-test/env
up() { $B cut -d' ' -f1 /proc/uptime; }
echo "@@BOOT $(up)"
( $B sleep "$WATCHDOG"; echo "@@WATCHDOG guest watchdog after ${WATCHDOG}s"; $B poweroff -f ) &
for m in usb-common usbcore xhci-hcd xhci-pci; do
    $B insmod /qemu-test/modules/$m.ko || echo "@@ERROR insmod $m failed"
done
wait_reader() {
    i=0
    while [ $i -lt 150 ]; do
        $B grep -qs '^0b$' /sys/bus/usb/devices/*/bInterfaceClass && return 0
        $B sleep 0.1; i=$((i + 1))
    done
    return 1
}
if wait_reader; then
    for d in /sys/bus/usb/devices/*; do
        [ "$($B cat $d/idVendor 2>/dev/null)" = 08e6 ] &&
            echo "@@USB $(up) $($B cat $d/idVendor):$($B cat $d/idProduct) $($B cat $d/manufacturer 2>/dev/null)/$($B cat $d/product 2>/dev/null) serial $($B cat $d/serial 2>/dev/null) speed $($B cat $d/speed)"
    done
else
    echo "@@ERROR no CCID interface (class 0b) after 15 s"
fi
for ph in $PHASES; do LAST_PHASE=$ph; done
first=1
for ph in $PHASES; do
    if [ $first = 0 ] && [ "$BENCH" != 1 ]; then
        # A clean reader for the next phase: USB port reset (QEMU resets the device's state).
        usbreset 08e6:4433 >/dev/null 2>&1 || echo "@@ERROR usbreset failed"
        $B sleep 0.3
        wait_reader || echo "@@ERROR reader gone after usbreset"
    fi
    first=0
    echo "@@PHASE $ph $(up)"
    dead=""
    case $ph in
        ref) daemon="/usr/sbin/pcscd -f -d"; [ "$BENCH" = 1 ] && daemon="/usr/sbin/pcscd -f" ;;
        usbpass)
            daemon="/usr/bin/env USBPASS_LOG=$USBPASS_LOG LD_LIBRARY_PATH=/qemu-test/usbpass/lib /qemu-test/usbpass/usbpass serve --listen /run/pcscd/pcscd.comm"
            [ -x /qemu-test/usbpass/usbpass ] || dead="usbpass binary not available (not built?)" ;;
        sbx-*)
            daemon=""
            [ -x /qemu-test/app/lib/usbpass ] && [ -f /qemu-test/app/lib/libpcsclite.so.1 ] ||
                dead="pcsc-bridge library or usbpass not available (not built?)"
            [ -x /usr/bin/bwrap ] || dead="no bwrap in the guest root (rebuild it: --rebuild)" ;;
    esac
    if [ "$BENCH" = 1 ]; then
        if [ -n "$dead" ]; then
            echo "@@BENCH $ph dead $dead"
        else
            $B timeout 150 /usr/bin/python3 /qemu-test/bench.py "$ph" "$daemon"
        fi
    elif [ -n "$dead" ]; then
        /usr/bin/python3 /qemu-test/cases.py "$ph" --dead "$dead"
    elif [ -z "$daemon" ]; then
        lastflag=""
        [ "$ph" = "$LAST_PHASE" ] && lastflag=--last
        $B timeout 120 /qemu-test/sbx-run "${ph#sbx-}" /usr/bin/python3 /qemu-test/cases.py "$ph" --sandbox $lastflag
    else
        $B timeout 100 /usr/bin/python3 /qemu-test/cases.py "$ph" --daemon "$daemon"
    fi
    echo "@@PHASE_RC $ph $? $(up)"
    pid=$($B cat /tmp/$ph.pid 2>/dev/null)
    [ -n "$pid" ] && $B kill -9 "$pid" 2>/dev/null
    $B rm -f /run/pcscd/pcscd.comm
done
echo "@@END $(up)"
$B poweroff -f
EOF
}

write_cases() {
    cat <<'EOF'
#!/usr/bin/python3
# Guest side of scripts/qemu-usb-test.sh: start one PC/SC stack (the daemon), run the stock
# clients and pyscard cases against QEMU's usb-ccid reader, print results on the serial console.
#   cases.py PHASE --daemon 'CMD...' | --dead REASON
# Output (the host parses it): @@CASES PHASE names..., @@RESULT PHASE CASE PASS|FAIL MS detail,
# @@OUT PHASE CASE ... / @@ENDOUT (client output), @@LOG PHASE daemon ... / @@ENDLOG.
# The vscard control socket is on /dev/ttyS1: `mark PHASE:CASE` cuts its APDU log into sections.
import json, os, select, shlex, subprocess, sys, termios, threading, time, tty

ATR = bytes.fromhex("3B0A" + b"pcscbridge".hex())
AID = bytes.fromhex("A0000005272101")
SELECT_AID = bytes([0, 0xA4, 4, 0, 7]) + AID  # SELECT of the AID: answered FCI + 90 00
FCI = bytes.fromhex("6F0E8407A0000005272101A503880101")
SERIAL = "PCSCBRIDGE01"
SERIAL2 = "PCSCBRIDGE02"  # an empty reader hot-plugged in sandbox phases

def pattern(off, n):  # the card's file content (tests/src/card.rs file_byte)
    return bytes(((i & 0xFF) ^ 0x5A) for i in range(off, off + n))

CASES = ["ready", "pcsc_scan", "opensc_atr", "opensc_apdu", "py_list", "py_status", "py_connect",
         "py_atr", "py_attr", "py_features", "py_select", "py_read_binary", "py_echo",
         "py_get_response", "py_transaction", "py_remove", "py_insert", "py_reconnect", "held",
         "py_quirk64", "py_after_quirk", "py_pull_card"]
# Sandbox phases (no daemon: the app's libpcsclite.so.1 is pcsc-bridge, which starts usbpass)
# add: one usbpass shared by the app's processes, doctor, reader hot-plug and unplug, and (in the
# last phase only, as it takes the reader away for good) pulling the reader during an APDU.
SANDBOX_CASES = ["shared", "doctor", "plug", "unplug"]
PNP = "\\\\?PnP?\\Notification"

phase, args = sys.argv[1], sys.argv[2:]
daemon_cmd = dead = None
sandbox = last = False
while args:
    a = args.pop(0)
    if a == "--daemon":
        daemon_cmd = args.pop(0)
    elif a == "--dead":
        dead = args.pop(0)
    elif a == "--sandbox":
        sandbox = True
    elif a == "--last":
        last = True
if sandbox:
    CASES = CASES + SANDBOX_CASES + (["pull"] if last else [])
# The reference phase also checks usbpass beside pcscd: a sandboxed app with no pcscd socket
# whose usbpass finds the reader held by pcscd (doctor must say so).
if phase == "ref" and os.path.exists("/qemu-test/app/bin/pcsc-bridge"):
    CASES.insert(CASES.index("held") + 1, "sbx_held")

def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

def one_line(s):
    return " ".join(str(s).split())[:700]

class Ctl:
    """vscard's control socket, reached through the guest's second serial port."""
    def __init__(self, path="/dev/ttyS1"):
        self.fd, self.buf = None, b""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
            a = termios.tcgetattr(fd)
            a[4] = a[5] = termios.B115200
            termios.tcsetattr(fd, termios.TCSANOW, a)
            termios.tcflush(fd, termios.TCIOFLUSH)
            self.fd = fd
        except OSError as e:
            out("ctl: cannot open %s: %s" % (path, e))

    def __call__(self, cmd, timeout=5.0):
        if self.fd is None:
            return "err no control channel"
        os.write(self.fd, (cmd + "\n").encode())
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return "err timeout"
            if select.select([self.fd], [], [], left)[0]:
                self.buf += os.read(self.fd, 256)
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip("\r\0 ")

ctl = Ctl()
ctl("mark %s:begin" % phase)
out("@@CASES %s %s" % (phase, " ".join(CASES)))

def result(case, ok, ms, detail):
    out("@@RESULT %s %s %s %d %s" % (phase, case, "PASS" if ok else "FAIL", ms, one_line(detail)))

if dead is not None:
    for c in CASES:
        result(c, False, 0, dead)
    ctl("mark %s:end" % phase)
    sys.exit(0)

from smartcard.scard import *  # noqa: E402

class Fail(Exception):
    pass

def hexs(b):
    return " ".join("%02X" % x for x in bytes(b))

def err(hr):
    return "%s (0x%08X)" % (SCardGetErrorMessage(hr).strip(), hr & 0xFFFFFFFF)

def check(hr, what):
    if hr != SCARD_S_SUCCESS:
        raise Fail("%s: %s" % (what, err(hr)))

st = {"ctx": None, "card": None, "proto": None, "reader": None}
daemon = None
dlog = "/tmp/%s-daemon.log" % phase
if sandbox:  # usbpass, started by pcsc-bridge, logs there (sbx-run sets USBPASS_LOG_FILE)
    dlog = os.environ.get("USBPASS_LOG_FILE", dlog)

def daemon_dead():
    if daemon is None or daemon.poll() is None:
        return None
    lines = open(dlog, errors="replace").read().strip().splitlines()
    return "daemon exited rc=%d: %s" % (daemon.returncode, " | ".join(lines[:3]))

def ctx():
    if st["ctx"] is None:
        hr, c = SCardEstablishContext(SCARD_SCOPE_USER)
        check(hr, "SCardEstablishContext")
        st["ctx"] = c
    return st["ctx"]

def transmit(apdu):
    hr, resp = SCardTransmit(st["card"], st["proto"], list(apdu))
    check(hr, "SCardTransmit(%s, %d bytes)" % (hexs(apdu[:4]), len(apdu)))
    return bytes(resp)

def expect(apdu, want):
    r = transmit(apdu)
    if r != want:
        raise Fail("%s... -> %s, want %s" % (hexs(apdu[:5]), hexs(r), hexs(want)))
    return r

def run_client(case, argv, timeout=25):
    t = time.monotonic()
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        text, rc = p.stdout.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = (e.stdout or b"").decode(errors="replace") + "\n[timeout]", -1
    out("@@OUT %s %s rc=%d %.1fs $ %s" % (phase, case, rc, time.monotonic() - t, " ".join(argv)))
    for line in text.splitlines()[:60]:
        out("  " + line)
    out("@@ENDOUT")
    return rc, text

def wait_state(present, timeout_s):
    """Wait for the card to be reported present/absent: (ms, event state, ATR)."""
    t0, cur = time.monotonic(), SCARD_STATE_UNAWARE
    while True:
        left = int((timeout_s - (time.monotonic() - t0)) * 1000)
        if left <= 0:
            raise Fail("card still %s after %ds" % ("absent" if present else "present", timeout_s))
        hr, states = SCardGetStatusChange(ctx(), min(left, 2000), [(st["reader"], cur)])
        if hr == SCARD_E_TIMEOUT:
            continue
        check(hr, "SCardGetStatusChange")
        _, ev, atr = states[0]
        if ev & (SCARD_STATE_PRESENT if present else SCARD_STATE_EMPTY):
            return int((time.monotonic() - t0) * 1000), ev, bytes(atr)
        cur = ev & ~SCARD_STATE_CHANGED

# A client process of the app: establish a context and list readers (sandbox phases start
# three at the same moment as the first case, so that usbpass is started under contention).
PROBE = """
from smartcard.scard import *
hr, c = SCardEstablishContext(SCARD_SCOPE_USER)
hr2, r = SCardListReaders(c, []) if hr == 0 else (hr, [])
print("%08X %08X %d" % (hr & 0xFFFFFFFF, hr2 & 0xFFFFFFFF, len(r)))
"""
probes = []

def c_ready():
    if sandbox:
        probes.extend(subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT) for _ in range(3))
    t0, last = time.monotonic(), "no answer"
    while time.monotonic() - t0 < 25:
        d = daemon_dead()
        if d:
            raise Fail(d)
        hr, c = SCardEstablishContext(SCARD_SCOPE_USER)
        if hr == SCARD_S_SUCCESS:
            hr, readers = SCardListReaders(c, [])
            if hr == SCARD_S_SUCCESS and readers:
                hr2, states = SCardGetStatusChange(c, 0, [(readers[0], SCARD_STATE_UNAWARE)])
                if hr2 == SCARD_S_SUCCESS and states[0][1] & SCARD_STATE_PRESENT:
                    st["ctx"], st["reader"] = c, readers[0]
                    return "reader with a card %.1fs after the %s" % (
                        time.monotonic() - t_daemon, "first PC/SC call" if sandbox else "daemon's start")
                last = "reader %r, no card yet" % readers[0]
            else:
                last = "no reader: " + err(hr)
            SCardReleaseContext(c)
        else:
            last = "SCardEstablishContext: " + err(hr)
        time.sleep(0.2)
    raise Fail("not ready after 25s: " + last)

def c_pcsc_scan():
    rc, text = run_client("pcsc_scan", ["pcsc_scan", "-r"])
    lines = [l.strip() for l in text.splitlines() if l.strip().startswith("0:")]
    if rc != 0 or not lines:
        raise Fail("rc=%d, no reader line: %s" % (rc, one_line(text)[-200:]))
    return lines[0]

def c_opensc_atr():
    rc, text = run_client("opensc_atr", ["opensc-tool", "-a"])
    want = ":".join("%02x" % x for x in ATR)
    if rc != 0 or want not in text.lower():
        raise Fail("rc=%d, no %s in: %s" % (rc, want, one_line(text)[-200:]))
    return want

def c_opensc_apdu():
    rc, text = run_client("opensc_apdu", ["opensc-tool", "-s", "00:A4:04:00:07:" + ":".join("%02X" % x for x in AID)])
    got = [l.strip() for l in text.splitlines() if l.startswith("Received")]
    if rc != 0 or "SW1=0x90, SW2=0x00" not in text or "6F 0E 84 07" not in text.upper():
        raise Fail("rc=%d: %s" % (rc, one_line(text)[-250:]))
    return got[0] + " + the FCI"

def c_py_list():
    hr, readers = SCardListReaders(ctx(), [])
    check(hr, "SCardListReaders")
    if len(readers) != 1 or SERIAL not in readers[0]:
        raise Fail("readers %r (want one, with %s)" % (readers, SERIAL))
    st["reader"] = readers[0]
    return readers[0]

def c_py_status():
    ms, ev, atr = wait_state(True, 5)
    if atr != ATR:
        raise Fail("ATR %s, want %s" % (hexs(atr), hexs(ATR)))
    return "present, ATR %s" % hexs(atr)

def c_py_connect():
    hr, card, proto = SCardConnect(ctx(), st["reader"], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
    check(hr, "SCardConnect")
    st["card"], st["proto"] = card, proto
    if proto != SCARD_PROTOCOL_T0:
        raise Fail("protocol %d, want T=0" % proto)
    return "T=0"

def c_py_atr():
    hr, reader, state, proto, atr = SCardStatus(st["card"])
    check(hr, "SCardStatus")
    if bytes(atr) != ATR:
        raise Fail("ATR %s" % hexs(atr))
    return "%s, reader state 0x%X, protocol %d" % (hexs(atr), state, proto)

def c_py_attr():
    vals = []
    for name, attr in (("vendor", SCARD_ATTR_VENDOR_NAME), ("ifd_version", SCARD_ATTR_VENDOR_IFD_VERSION),
                       ("serial", SCARD_ATTR_VENDOR_IFD_SERIAL_NO), ("maxinput", SCARD_ATTR_MAXINPUT)):
        hr, v = SCardGetAttrib(st["card"], attr)
        vals.append("%s=%s" % (name, hexs(v) if hr == SCARD_S_SUCCESS else "0x%08X" % (hr & 0xFFFFFFFF)))
    return " ".join(vals)

def c_py_features():
    hr, v = SCardControl(st["card"], SCARD_CTL_CODE(3400), [])
    check(hr, "SCardControl(CM_IOCTL_GET_FEATURE_REQUEST)")
    return hexs(v)

def c_py_select():
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "FCI + 90 00"

def c_py_read_binary():
    expect(bytes([0, 0xB0, 0, 0, 0x10]), pattern(0, 16) + b"\x90\x00")
    expect(bytes([0, 0xB0, 0x01, 0x02, 0x08]), pattern(0x102, 8) + b"\x90\x00")
    return "16 + 8 bytes + 90 00"

def c_py_echo():
    d = bytes(range(1, 6))
    expect(bytes([0x80, 1, 0, 0, len(d)]) + d, d + b"\x90\x00")
    return "5 bytes + 90 00"

def c_py_get_response():
    expect(bytes([0x80, 2, 0x01, 0x2C, 0]), pattern(0, 256) + b"\x61\x2C")
    expect(bytes([0, 0xC0, 0, 0, 0x2C]), pattern(256, 44) + b"\x90\x00")
    return "256 bytes + 61 2C, GET RESPONSE: 44 bytes + 90 00"

def c_py_transaction():
    check(SCardBeginTransaction(st["card"]), "SCardBeginTransaction")
    expect(bytes([0, 0x20, 0, 0x81, 6]) + b"123456", b"\x90\x00")
    check(SCardEndTransaction(st["card"], SCARD_LEAVE_CARD), "SCardEndTransaction")
    return "VERIFY 90 00 inside a transaction"

def c_py_remove():
    r = ctl("remove")
    if not r.startswith("ok"):
        raise Fail("vscard remove: " + r)
    ms, ev, _ = wait_state(False, 10)
    hr, resp = SCardTransmit(st["card"], st["proto"], [0, 0xB0, 0, 0, 1])
    if hr != SCARD_W_REMOVED_CARD:
        raise Fail("EMPTY after %d ms, but a transmit on the old handle gave %s" % (ms, err(hr)))
    return "EMPTY after %d ms; old handle: SCARD_W_REMOVED_CARD" % ms

def c_py_insert():
    r = ctl("insert")
    if not r.startswith("ok"):
        raise Fail("vscard insert: " + r)
    ms, ev, atr = wait_state(True, 10)
    if atr != ATR:
        raise Fail("ATR %s after insertion" % hexs(atr))
    return "PRESENT after %d ms, ATR ok" % ms

def c_py_reconnect():
    if st["card"] is not None:
        SCardDisconnect(st["card"], SCARD_LEAVE_CARD)
        st["card"] = None
    c_py_connect()
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "new handle, T=0, SELECT ok"

def c_py_quirk64():
    # 52 data bytes + SW = 54: the reader's DataBlock is exactly 64 bytes (10-byte header + 54).
    d = bytes((i * 3 + 1) & 0xFF for i in range(52))
    expect(bytes([0x80, 1, 0, 0, 52]) + d, d + b"\x90\x00")
    expect(bytes([0, 0xB0, 0, 0, 4]), pattern(0, 4) + b"\x90\x00")
    return "64-byte reader answer, then READ BINARY ok"

def usbpass_pids():
    pids = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and open("/proc/%s/comm" % d).read().strip() == "usbpass":
                pids.append(int(d))
        except OSError:
            pass
    return pids

def c_shared():
    outs = []
    for p in probes:
        try:
            outs.append(p.communicate(timeout=20)[0].decode(errors="replace").strip())
        except subprocess.TimeoutExpired:
            p.kill()
            outs.append("timeout")
    bad = [o for o in outs if not o.startswith("00000000 00000000 1")]
    if bad:
        raise Fail("client processes started together: %s" % " | ".join(outs))
    pids = usbpass_pids()
    if len(pids) != 1:
        raise Fail("%d usbpass processes in the sandbox (want 1): %r" % (len(pids), pids))
    sock = os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"), "pcsc-bridge", "usbpass.comm")
    try:
        mode = os.stat(os.path.dirname(sock)).st_mode & 0o777
        sst = os.stat(sock)
    except OSError as e:
        raise Fail("usbpass socket: %s" % e)
    if mode & 0o077 or sst.st_mode & 0o077:
        raise Fail("usbpass socket not owner-only: folder %o, socket %o" % (mode, sst.st_mode & 0o777))
    return "one usbpass (started by the first of %d processes at once) at %s, owner-only" % (
        len(probes) + 1, sock)

def c_doctor():
    rc, text = run_client("doctor", ["pcsc-bridge", "doctor"])
    line = [l.strip() for l in text.splitlines() if "backend" in l]
    if rc != 0 or not line or "usbpass (USB readers" not in line[0]:
        raise Fail("rc=%d (want 0: PC/SC works), backend line %r" % (rc, line))
    usb = [l.strip() for l in text.splitlines() if "usb-readers" in l]
    if not usb or "08E6:4433" not in usb[0]:
        raise Fail("no usb-readers line naming 08E6:4433: %r" % usb)
    return "exit 0; " + line[0]

def qmp(cmd, **arguments):
    r = ctl("qmp " + json.dumps({"execute": cmd, "arguments": arguments}), timeout=20)
    if not r.startswith("ok"):
        raise Fail("QMP %s: %s" % (cmd, r))
    return r

def pnp_change(action, want_readers):
    """Run action() while a PnP SCardGetStatusChange waits; (ms, readers) once it returns."""
    # A PnP query counts readers from the start of the call (and, with a 4:5+ server, carries
    # the reader-events counter in its high word): a zero timeout just gives the current state.
    hr, states = SCardGetStatusChange(ctx(), 0, [(PNP, SCARD_STATE_UNAWARE)])
    if hr not in (SCARD_S_SUCCESS, SCARD_E_TIMEOUT):
        check(hr, "SCardGetStatusChange(PnP, 0)")
    cur = states[0][1] & ~SCARD_STATE_CHANGED
    got = {}
    def wait():
        got["r"] = SCardGetStatusChange(ctx(), 20000, [(PNP, cur)])
        got["t"] = time.monotonic()
    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    action()
    th.join(25)
    if "r" not in got:
        raise Fail("no PnP notification within 25 s")
    hr, states = got["r"]
    check(hr, "SCardGetStatusChange(PnP)")
    if not states[0][1] & SCARD_STATE_CHANGED:
        raise Fail("PnP returned without CHANGED: 0x%X" % states[0][1])
    ms = int((got["t"] - t0) * 1000)
    for _ in range(50):
        hr, readers = SCardListReaders(ctx(), [])
        if hr in (SCARD_S_SUCCESS, SCARD_E_NO_READERS_AVAILABLE) and len(readers or []) == want_readers:
            return ms, readers or []
        time.sleep(0.1)
    raise Fail("PnP after %d ms, but the readers are %r (want %d)" % (ms, readers, want_readers))

def c_plug():
    ms, readers = pnp_change(lambda: qmp("device_add", driver="usb-ccid", id="ccid2", serial=SERIAL2), 2)
    new = [r for r in readers if SERIAL2 in r]
    if not new:
        raise Fail("readers %r: none with %s" % (readers, SERIAL2))
    hr, states = SCardGetStatusChange(ctx(), 0, [(new[0], SCARD_STATE_UNAWARE)])
    check(hr, "SCardGetStatusChange(new reader)")
    if not states[0][1] & SCARD_STATE_EMPTY:
        raise Fail("new reader state 0x%X, want EMPTY" % states[0][1])
    return "PnP %d ms after device_add: %r, empty" % (ms, new[0])

def c_unplug():
    ms, readers = pnp_change(lambda: qmp("device_del", id="ccid2"), 1)
    if any(SERIAL2 in r for r in readers) or SERIAL not in readers[0]:
        raise Fail("readers %r after unplugging %s" % (readers, SERIAL2))
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "PnP %d ms after device_del; the other reader still answers" % ms

def transmit_in_background(apdu):
    """SCardTransmit in a thread; returns wait(timeout) -> (hr, response, when it returned) or None."""
    got = {}
    def send():
        got["r"] = SCardTransmit(st["card"], st["proto"], list(apdu))
        got["t"] = time.monotonic()
    th = threading.Thread(target=send)
    th.start()
    def wait(timeout):
        th.join(timeout)
        return (got["r"][0], got["r"][1], got["t"]) if "r" in got else None
    return wait

def c_pull():
    r = ctl("delay 4000")
    if not r.startswith("ok"):
        raise Fail("vscard delay: " + r)
    wait = transmit_in_background(SELECT_AID)
    time.sleep(1.0)
    t0 = time.monotonic()
    qmp("device_del", id="ccid0")
    done = wait(25)
    if done is None:
        raise Fail("SCardTransmit still blocked 25 s after the reader was pulled")
    hr, resp, t_end = done
    ms = int((t_end - t0) * 1000)
    allowed = (SCARD_E_READER_UNAVAILABLE, SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD)
    if hr not in allowed:
        raise Fail("transmit during the pull: %s, response %s, %d ms after device_del" % (err(hr), hexs(resp), ms))
    hr2 = SCardStatus(st["card"])[0]
    if hr2 != SCARD_E_READER_UNAVAILABLE:  # what libpcsclite says for a handle whose reader went
        raise Fail("SCardStatus on the pulled reader's handle: %s" % err(hr2))
    hr3, c2 = SCardEstablishContext(SCARD_SCOPE_USER)
    check(hr3, "SCardEstablishContext after the pull")
    hr4, readers = SCardListReaders(c2, [])
    SCardReleaseContext(c2)
    if hr4 not in (SCARD_E_NO_READERS_AVAILABLE, SCARD_S_SUCCESS) or readers:
        raise Fail("readers after the pull: %s %r" % (err(hr4), readers))
    if len(usbpass_pids()) != 1:
        raise Fail("usbpass is gone after the pull")
    return "transmit -> %s %d ms after device_del; handle -> %s; new context ok, no readers" % (
        err(hr), ms, err(hr2))

def c_held():
    # A second usbpass while this phase's stack holds the reader (in the ref phase: the reader
    # is pcscd's): it must leave the reader alone, say why, and the holder keeps working.
    exe = next((p for p in ("/qemu-test/usbpass/usbpass", "/app/lib/usbpass") if os.path.exists(p)), None)
    if exe is None:
        raise Fail("no usbpass binary in the guest")
    sock, log = "/tmp/held-%s.sock" % phase, "/tmp/held-%s.log" % phase
    env = dict(os.environ, USBPASS_LOG="info", LD_LIBRARY_PATH="/qemu-test/usbpass/lib")
    env.pop("USBPASS_LOG_FILE", None)
    p = subprocess.Popen([exe, "serve", "--listen", sock], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(100):
            if os.path.exists(sock) or p.poll() is not None:
                break
            time.sleep(0.1)
        probe = subprocess.run([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PCSCLITE_CSOCK_NAME=sock), timeout=30)
        got = probe.stdout.decode(errors="replace").strip()
    finally:
        p.terminate()
        p.wait(5)
    text = open(log, errors="replace").read()
    said = [l for l in text.splitlines() if "in use by another program" in l]
    if not got.startswith("00000000 8010002E 0"):
        raise Fail("a client of the second usbpass got %r (want no readers); its log: %s" % (got, one_line(text)[-300:]))
    if not said:
        raise Fail("the second usbpass did not say why it left the reader alone: %s" % one_line(text)[-300:])
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "a second usbpass lists no reader and logs: %s; the holder still answers" % (
        said[0].split("usbpass::serve::backend: ")[-1][:120])

def c_sbx_held():
    rc, text = run_client("sbx_held", ["/qemu-test/sbx-run", "usb", "/app/bin/pcsc-bridge", "doctor"], timeout=40)
    warn = [l.strip() for l in text.splitlines() if "usb-readers" in l]
    if not warn or "[warn]" not in warn[0].lower() or "held by another program" not in text:
        raise Fail("rc=%d, doctor in a sandbox without pcscd while pcscd holds the reader: %s" % (
            rc, one_line(text)[-400:]))
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "doctor in the sandbox: %s" % warn[0][:150]

def c_py_pull_card():
    # The card is pulled while the reader waits for its answer (vscard holds it 2 s). Whatever
    # happens, the card goes back in and the held answer is out of the way before the next case.
    r = ctl("delay 2000")
    if not r.startswith("ok"):
        raise Fail("vscard delay: " + r)
    t_hold = time.monotonic()
    try:
        wait = transmit_in_background(SELECT_AID)
        time.sleep(0.5)
        t0 = time.monotonic()
        r = ctl("remove")
        if not r.startswith("ok"):
            raise Fail("vscard remove: " + r)
        done = wait(20)
        if done is None:
            raise Fail("SCardTransmit still blocked 20 s after the card was pulled")
        hr, resp, t_end = done
        ms = int((t_end - t0) * 1000)
        what = "%s %s" % (err(hr), hexs(resp)) if hr == SCARD_S_SUCCESS else err(hr)
        if hr not in (SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD):
            raise Fail("transmit during the pull: %s, %d ms after the card was pulled" % (what, ms))
    finally:
        ctl("insert")
        time.sleep(max(0.0, 2.3 - (time.monotonic() - t_hold)))
    wait_state(True, 10)
    hr2, proto = SCardReconnect(st["card"], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_RESET_CARD)
    check(hr2, "SCardReconnect after reinsertion")
    expect(SELECT_AID, FCI + b"\x90\x00")
    return "transmit -> %s; card back, reconnected, SELECT ok" % err(hr)

def c_py_after_quirk():
    r = transmit(SELECT_AID)
    if r == pattern(0, 4) + b"\x90\x00":
        raise Fail("SELECT got %s: the answer to the previous READ BINARY (the driver is one "
                   "answer behind)" % hexs(r))
    if r != FCI + b"\x90\x00":
        raise Fail("SELECT -> %s" % hexs(r))
    return "SELECT ok"

t_daemon = time.monotonic()  # sandbox phases: the first client starts usbpass
if daemon_cmd:
    os.makedirs("/run/pcscd", exist_ok=True)
    t_daemon = time.monotonic()
    daemon = subprocess.Popen(shlex.split(daemon_cmd), stdout=open(dlog, "wb"), stderr=subprocess.STDOUT)
    open("/tmp/%s.pid" % phase, "w").write(str(daemon.pid))
    out("daemon: %s (pid %d)" % (daemon_cmd, daemon.pid))

def hung(name):
    """A case blocked (in a PC/SC call that never returns): report and stop the phase."""
    result(name, False, CASE_LIMIT * 1000, "hung: no answer within %d s" % CASE_LIMIT)
    for c in CASES[CASES.index(name) + 1:]:
        result(c, False, 0, "not run: case %s hung" % name)
    if daemon is not None:
        daemon.kill()
    ctl("mark %s:end" % phase)
    os._exit(1)

CASE_LIMIT = 30
for name in CASES:
    ctl("mark %s:%s" % (phase, name))
    guard = threading.Timer(CASE_LIMIT, hung, (name,))
    guard.daemon = True
    guard.start()
    t = time.monotonic()
    d = daemon_dead()
    if d:
        result(name, False, 0, d)
        guard.cancel()
        continue
    try:
        detail = globals()["c_" + name]()
        result(name, True, (time.monotonic() - t) * 1000, detail)
    except Fail as e:
        result(name, False, (time.monotonic() - t) * 1000, str(e))
    except Exception as e:  # pyscard raising, or a bug here
        result(name, False, (time.monotonic() - t) * 1000, "%s: %s" % (type(e).__name__, e))
    guard.cancel()
ctl("mark %s:end" % phase)

if daemon is not None:
    daemon.terminate()
    try:
        daemon.wait(5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
if daemon is not None or (sandbox and os.path.exists(dlog)):
    lines = [l.rstrip() for l in open(dlog, errors="replace")]
    keys = ("error", "not enough", "failed", "warn", "panic", "card atr", "removed", "inserted",
            "ccid_usb", "not implemented", "usage", "unplugged", "no device", "gone")
    # Matching lines, with 6 lines of context around "Not enough data" (the 64-byte quirk).
    keep = set(i for i, l in enumerate(lines) if any(k in l.lower() for k in keys))
    for i, l in enumerate(lines):
        if "not enough data" in l.lower():
            keep.update(range(max(0, i - 6), min(len(lines), i + 7)))
    if sandbox and last:  # the pull: how usbpass saw the reader go
        keep.update(range(max(0, len(lines) - 30), len(lines)))
    sel = [lines[i] for i in sorted(keep)]
    out("@@LOG %s daemon: %d of %d lines (rc %s)" % (phase, min(len(sel), 150), len(lines),
                                                      daemon.returncode if daemon else "-"))
    for l in sel[:150]:
        out("  " + l[:300])
    out("@@ENDLOG")
EOF
}

write_bench() {
    cat <<'EOF'
#!/usr/bin/python3
# Guest side of scripts/qemu-usb-test.sh --bench: cold start and APDU round trip of one stack.
#   bench.py PHASE 'DAEMON CMD...'
# Output: @@BENCH PHASE cold RUN MS | @@BENCH PHASE apdu N MEDIAN_MS P10 P90 ERRORS | @@BENCH PHASE error TEXT
import glob, os, shlex, subprocess, sys, time
from smartcard.scard import *  # imported before any timing

phase, cmd = sys.argv[1], sys.argv[2]
N = int(os.environ.get("BENCH_APDUS", "200"))
COLD = max(1, int(os.environ.get("BENCH_COLD", "5")))
DATA = bytes(range(0x11, 0x19))
ECHO = [0x80, 0x01, 0x00, 0x00, len(DATA)] + list(DATA)
WANT = list(DATA) + [0x90, 0x00]

def out(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

def reader_present():
    for f in glob.glob("/sys/bus/usb/devices/*/bInterfaceClass"):
        try:
            if open(f).read().strip() == "0b":
                return True
        except OSError:
            pass
    return False

def usb_reset():
    """Same reader state before every start: USB port reset (the card stays inserted)."""
    subprocess.run(["usbreset", "08e6:4433"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    end = time.monotonic() + 15
    while not reader_present():
        if time.monotonic() > end:
            out("@@BENCH %s error reader gone after usbreset" % phase)
            return
        time.sleep(0.05)

def try_once():
    """EstablishContext, ListReaders, Connect, Transmit: the handles if the APDU was answered."""
    hr, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    if hr != SCARD_S_SUCCESS:
        return None
    hr, readers = SCardListReaders(ctx, [])
    if hr == SCARD_S_SUCCESS and readers:
        hr, card, proto = SCardConnect(ctx, readers[0], SCARD_SHARE_SHARED,
                                       SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
        if hr == SCARD_S_SUCCESS:
            hr, resp = SCardTransmit(card, proto, ECHO)
            if hr == SCARD_S_SUCCESS and list(resp) == WANT:
                return ctx, card, proto
            SCardDisconnect(card, SCARD_LEAVE_CARD)
    SCardReleaseContext(ctx)
    return None

def stop(d):
    d.terminate()
    try:
        d.wait(5)
    except subprocess.TimeoutExpired:
        d.kill()
        d.wait()

daemon = handles = None
for run in range(COLD):
    usb_reset()
    for f in ("/run/pcscd/pcscd.comm", "/run/pcscd/pcscd.pid"):
        try:
            os.unlink(f)
        except OSError:
            pass
    log = open("/tmp/%s-bench-%d.log" % (phase, run), "wb")
    t0 = time.monotonic()
    daemon = subprocess.Popen(shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT)
    open("/tmp/%s.pid" % phase, "w").write(str(daemon.pid))
    handles = None
    while handles is None and time.monotonic() - t0 < 30 and daemon.poll() is None:
        handles = try_once()
        if handles is None:
            time.sleep(0.005)
    ms = (time.monotonic() - t0) * 1000
    if handles is None:
        tail = " | ".join(open(log.name, errors="replace").read().strip().splitlines()[-3:])
        out("@@BENCH %s error cold start %d: no APDU answered after %.0f ms (daemon rc %s) %s"
            % (phase, run, ms, daemon.poll(), tail[:300]))
        stop(daemon)
        sys.exit(1)
    out("@@BENCH %s cold %d %.1f" % (phase, run, ms))
    if run < COLD - 1:
        ctx, card, _ = handles
        SCardDisconnect(card, SCARD_LEAVE_CARD)
        SCardReleaseContext(ctx)
        stop(daemon)

ctx, card, proto = handles
for _ in range(20):  # warm-up
    SCardTransmit(card, proto, ECHO)
times, errors = [], 0
for _ in range(N):
    t = time.perf_counter()
    hr, resp = SCardTransmit(card, proto, ECHO)
    times.append((time.perf_counter() - t) * 1000)
    if hr != SCARD_S_SUCCESS or list(resp) != WANT:
        errors += 1
times.sort()
q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
out("@@BENCH %s apdu %d %.3f %.3f %.3f %d" % (phase, N, q(0.5), q(0.1), q(0.9), errors))
SCardDisconnect(card, SCARD_LEAVE_CARD)
SCardReleaseContext(ctx)
stop(daemon)
lines = open(log.name, errors="replace").read().splitlines()
out("@@LOG %s daemon (last run): %d lines (rc %s)" % (phase, len(lines), daemon.returncode))
for l in lines[:60]:
    out("  " + l[:300])
out("@@ENDLOG")
EOF
}

# ---------------------------------------------------------------------------------------------
# Run the guest
run_guest() {
    "$VSCARD" --listen "$RUN/card.sock" --ctl "$RUN/ctl.sock" --qmp "$RUN/qmp.sock" --log --once \
        >"$RUN/vscard.log" 2>&1 &
    VSCARD_PID=$!
    for _ in $(seq 50); do
        [ -S "$RUN/card.sock" ] && [ -S "$RUN/ctl.sock" ] && break
        sleep 0.1
    done
    [ -S "$RUN/ctl.sock" ] || die "vscard did not start (see $RUN/vscard.log)"
    log "guest: booting (phases $PHASES; logs in $RUN)"
    local t0 rc=0
    t0=$(date +%s%3N)
    timeout --kill-after=5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -nodefaults -display none \
        -no-reboot -m 1024 -smp 1 \
        -kernel "$CACHE/kernel/vmlinux" -initrd "$RUN/initrd" \
        -append "console=ttyS0 loglevel=3 panic=-1 rdinit=/init" \
        -serial "file:$RUN/console.log" \
        -chardev "socket,id=ctl,path=$RUN/ctl.sock" -serial chardev:ctl \
        -chardev "socket,id=ccid,path=$RUN/card.sock" \
        -qmp "unix:$RUN/qmp.sock,server=on,wait=off" \
        -device qemu-xhci -device "usb-ccid,id=ccid0,serial=$SERIAL,pcap=$RUN/usb.pcap" \
        -device ccid-card-passthru,chardev=ccid \
        >"$RUN/qemu.log" 2>&1 || rc=$?
    GUEST_SECONDS=$(secs "$t0")
    [ "$rc" = 124 ] && echo "@@HOST_TIMEOUT qemu killed after ${TIMEOUT}s" >>"$RUN/console.log"
    [ "$rc" != 0 ] && [ "$rc" != 124 ] && echo "@@HOST_ERROR qemu exited rc=$rc: $(head -c 300 "$RUN/qemu.log")" >>"$RUN/console.log"
    if kill -0 "$VSCARD_PID" 2>/dev/null; then
        kill "$VSCARD_PID" 2>/dev/null || true
    fi
    wait "$VSCARD_PID" 2>/dev/null || true
    VSCARD_PID=""
    log "guest: done in ${GUEST_SECONDS}s (qemu rc=$rc)"
}

cleanup() {
    [ -n "${VSCARD_PID:-}" ] && kill "$VSCARD_PID" 2>/dev/null || true
    if [ -n "${RUN:-}" ] && [ -d "$RUN" ]; then
        rm -f "$RUN/card.sock" "$RUN/ctl.sock" "$RUN/qmp.sock"
        [ "$KEEP" = 1 ] || rm -rf "$RUN/initrd" "$RUN/overlay.cpio" "$RUN/overlay"
    fi
}

# ---------------------------------------------------------------------------------------------
# Evaluate: console.log + vscard.log -> report; reference results cached for --quick
evaluate() {
    "$PY" - "$RUN" "$CACHE" "$PHASES" "$USBPASS_BIN" "$USBPASS_NOTE" <<'EOF'
import json, os, re, sys
run, cache, phases, usbpass_bin, usbpass_note = sys.argv[1:6]
phases = phases.split(",")
con = open(os.path.join(run, "console.log"), errors="replace").read().splitlines()
vsl = open(os.path.join(run, "vscard.log"), errors="replace").read().splitlines()

# Compare these cases' values with the reference (what a faithful stack must reproduce).
VALUE_CASES = {"pcsc_scan", "py_list", "py_attr", "py_features", "py_status", "py_atr"}
# Cases whose APDU trace (what the card received) must equal the reference's.
TRACE_CASES = {"py_select", "py_read_binary", "py_echo", "py_get_response", "py_transaction",
               "py_reconnect", "py_quirk64", "py_after_quirk"}

cases, results, problems = {}, {}, []
for l in con:
    if l.startswith("@@CASES "):
        p = l.split()
        cases[p[1]] = p[2:]
    elif l.startswith("@@RESULT "):
        m = re.match(r"@@RESULT (\S+) (\S+) (PASS|FAIL) (\d+) ?(.*)", l)
        if m:
            results[(m[1], m[2])] = (m[3], int(m[4]), m[5])
    elif l.startswith(("@@ERROR", "@@WATCHDOG", "@@HOST_TIMEOUT", "@@HOST_ERROR")):
        problems.append(l[2:])
    elif "Kernel panic" in l:
        problems.append(l.strip())

# APDU traces per (phase, case) from vscard's log.
traces, section = {}, None
for l in vsl:
    m = re.match(r"\[[ \d.]+\] === (\S+):(\S+)", l)
    if m:
        section = (m[1], m[2])
        continue
    m = re.match(r"\[[ \d.]+\] apdu #\d+ > (.*)", l)
    if m and section:
        traces.setdefault(section, []).append(m[1])

# Reference: this run's, else the cached one (--quick).
ref_file = os.path.join(cache, "reference.txt")
ref_source = "this run"
if "ref" in phases and ("ref", "ready") in results:
    ref = {c: results[("ref", c)] for c in cases.get("ref", []) if ("ref", c) in results}
    ref_traces = {c: traces.get(("ref", c), []) for c in cases.get("ref", [])}
    json.dump({"results": ref, "traces": ref_traces}, open(ref_file + ".new", "w"), indent=1)
    os.replace(ref_file + ".new", ref_file)
else:
    try:
        d = json.load(open(ref_file))
        ref, ref_traces = {k: tuple(v) for k, v in d["results"].items()}, d["traces"]
        ref_source = "cached from the last full run"
    except (OSError, ValueError, KeyError):
        ref, ref_traces, ref_source = {}, {}, "none (run without --quick once)"

out = []
def say(s=""):
    out.append(s)
    print(s)

say("== guest")
for l in con:
    if l.startswith(("@@BOOT", "@@USB", "@@PHASE ", "@@PHASE_RC", "@@END ")):
        say("   " + l[2:])
for p in problems:
    say("!! " + p)

# USB traffic (usb-ccid's pcap, usbmon link type 220): bulk answers per phase; phases are told
# apart by the re-enumeration after the USB reset between them (GET_DESCRIPTOR(device) again).
try:
    import struct
    data = open(os.path.join(run, "usb.pcap"), "rb").read()
    pos, seg, segs = 24, None, []
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 64:
            continue
        typ, xfer, ep = pkt[8], pkt[9], pkt[10]
        length = struct.unpack_from("<I", pkt, 32)[0]  # the URB's data length
        if xfer == 2 and typ == ord("C") and pkt[64:66] == b"\x12\x01" and (seg is None or seg["bulk_out"]):
            seg = {"bulk_out": 0, "answers": 0, "zlp": 0, "sixty_four": 0}
            segs.append(seg)
        if seg is None or xfer != 3 or typ != ord("C"):
            continue
        if ep == 0x03:
            seg["bulk_out"] += 1
        elif ep == 0x82:
            if length == 0:
                seg["zlp"] += 1
            else:
                seg["answers"] += 1
                seg["sixty_four"] += length == 64
    segs = [x for x in segs if x["bulk_out"]]
    for ph, x in zip(phases, segs):
        say("   usb %s: %d bulk-OUT messages, %d bulk-IN answers (%d of exactly 64 bytes), "
            "%d zero-length bulk-IN reads" % (ph, x["bulk_out"], x["answers"], x["sixty_four"], x["zlp"]))
except (OSError, struct.error) as e:
    say("   usb: no capture (%s)" % e)

if "ref" in phases:
    info = open(os.path.join(cache, "rootfs.info")).read().split("\n")
    say("== reference stack (%s), informational" % ", ".join(x for x in info if x))
    for c in cases.get("ref", []):
        r = results.get(("ref", c))
        if r is None:
            say("reference: %-16s FAIL not reached (guest stopped)" % c)
        else:
            say("reference: %-16s %s %6dms %s" % (c, r[0], r[1], r[2]))
    if not cases.get("ref"):
        say("reference: no results (guest failed before the phase, see console.log)")

npass = nfail = 0
TITLES = {"usbpass": "usbpass serve as the daemon",
          "sbx-usb": "an app in a Flatpak-like sandbox with --device=usb, pcsc-bridge starts usbpass",
          "sbx-all": "an app in a Flatpak-like sandbox with --device=all, pcsc-bridge starts usbpass"}
for ph in [p for p in phases if p != "ref"]:
    ucases = cases.get(ph) or cases.get("ref") or [c for c in ref] or ["ready"]
    # Why the daemon died, in one phrase.
    dead_reason = None
    for c in ucases:
        r = results.get((ph, c))
        if r and r[0] == "FAIL" and ("daemon exited" in r[2] or "not available" in r[2]):
            txt = r[2]
            if "not implemented" in txt or re.search(r"unknown option.*--listen", txt):
                dead_reason = "usbpass serve not implemented (%s)" % txt
            else:
                dead_reason = txt
            break
    say("== %s: %s (%s) vs reference (%s)" % (ph, TITLES[ph], usbpass_bin or "no binary", ref_source))
    if usbpass_note:
        say("!! " + usbpass_note)
    if dead_reason:
        say("!! " + dead_reason)
    say("%-16s %-9s %-9s %s" % ("case", "reference", ph, "detail"))
    for c in ucases:
        r = results.get((ph, c))
        rr = ref.get(c)
        if r is None:
            status, detail = "FAIL", "not reached (guest stopped: watchdog, timeout or crash)"
        else:
            status, detail = r[0], r[2]
            if status == "FAIL" and dead_reason and ("daemon exited" in detail or "not available" in detail):
                detail = dead_reason.split(" (")[0] if "not implemented" in dead_reason else detail
            if status == "PASS" and rr and rr[0] == "PASS":
                if c in VALUE_CASES and detail != rr[2]:
                    status, detail = "FAIL", "differs from the reference: %s | reference: %s" % (detail, rr[2])
                rt, ut = ref_traces.get(c), traces.get((ph, c), [])
                if c in TRACE_CASES and rt is not None and rt != ut:
                    status = "FAIL"
                    detail = "the card received other APDUs than under the reference: %s | reference: %s" % (
                        " / ".join(ut)[:300], " / ".join(rt)[:300])
        if status == "PASS":
            npass += 1
        else:
            nfail += 1
        say("%-16s %-9s %-9s %s" % (c, rr[0] if rr else "-", status, detail))
# usbpass next to pcscd (the ref phase's "held" and "sbx_held" cases test usbpass and
# pcsc-bridge, not the reference).
held = [c for c in ("held", "sbx_held") if ("ref", c) in results]
if held:
    say("== usbpass while pcscd holds the reader")
for c in held:
    r = results[("ref", c)]
    say("%-16s %-9s %-9s %s" % (c, "-", r[0], r[2]))
    npass, nfail = npass + (r[0] == "PASS"), nfail + (r[0] != "PASS")
if any(p != "ref" for p in phases):
    out.append("usbpass e2e: %d passed, %d failed" % (npass, nfail))  # printed last by the script
open(os.path.join(run, "report.txt"), "w").write("\n".join(out) + "\n")
sys.exit(1 if nfail else 0)
EOF
}

# Benchmark results (--bench): console.log -> report.txt; exit 2 if a number is missing.
evaluate_bench() {
    "$PY" - "$RUN" "$PHASES" <<'EOF'
import os, statistics, sys
run, phases = sys.argv[1], sys.argv[2].split(",")
con = open(os.path.join(run, "console.log"), errors="replace").read().splitlines()
cold, apdu, out = {}, {}, []
missing = False
def say(s):
    out.append(s)
    print(s)
for l in con:
    if l.startswith(("@@BOOT", "@@USB", "@@END ")):
        say("   " + l[2:])
    elif l.startswith(("@@ERROR", "@@WATCHDOG", "@@HOST_TIMEOUT", "@@HOST_ERROR")) or "Kernel panic" in l:
        say("!! " + l.lstrip("@"))
    elif l.startswith("@@BENCH "):
        p = l.split()
        if p[2] == "cold":
            cold.setdefault(p[1], []).append(float(p[4]))
        elif p[2] == "apdu":
            apdu[p[1]] = [float(x) for x in p[4:7]] + [int(p[3]), int(p[7])]
        else:
            say("!! %s: %s" % (p[1], " ".join(p[2:])))
name = {"ref": "reference", "usbpass": "usbpass"}
for ph in phases:
    c, a = cold.get(ph), apdu.get(ph)
    say("   %s: cold start runs %s ms; apdu %s" % (name[ph], ", ".join("%.0f" % x for x in c) if c else "-",
        "median %.3f ms, p10 %.3f, p90 %.3f, n %d, errors %d" % tuple(a) if a else "-"))
    if not (c and a):
        missing = True
def line(what, r, u, fmt):
    parts = ["%s %s" % (n, fmt % v if v is not None else "n/a") for n, v in (("reference", r), ("usbpass", u))]
    ratio = "%.2f" % (u / r) if r and u is not None else "n/a"
    say("usb-bench %s: %s, ratio %s" % (what, ", ".join(parts), ratio))
if "ref" in phases and "usbpass" in phases:
    med = lambda ph: statistics.median(cold[ph]) if ph in cold else None
    line("apdu", apdu.get("ref", [None])[0], apdu.get("usbpass", [None])[0], "%.2f ms")
    line("cold-start", med("ref"), med("usbpass"), "%.0f ms")
open(os.path.join(run, "report.txt"), "w").write("\n".join(out) + "\n")
sys.exit(2 if missing else 0)
EOF
}

# ---------------------------------------------------------------------------------------------
ensure_host_packages
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
ensure_kernel
ensure_root
flock -u 9
build_binaries
# Keep the logs of the last 10 runs.
find /tmp -maxdepth 1 -name 'pcsc-bridge-qemu.??????' -type d -printf '%T@ %p\n' 2>/dev/null |
    sort -rn | tail -n +10 | cut -d' ' -f2- | while read -r old; do
        if [ -f "$old/console.log" ]; then rm -rf "$old"; fi
    done
RUN=$(mktemp -d /tmp/pcsc-bridge-qemu.XXXXXX)
trap cleanup EXIT
make_overlay
log "initrd: $(du -h "$RUN/initrd" | cut -f1) (root $(du -h "$CACHE/rootfs.cpio" | cut -f1) + run $(du -h "$RUN/overlay.cpio" | cut -f1)), kernel $(cat "$CACHE/kernel/package")"
run_guest
rc=0
if [ "$BENCH" = 1 ]; then
    evaluate_bench || rc=$?
    log "total $(secs "$T_START")s; logs: $RUN"
    exit "$rc"
fi
evaluate || rc=$?
log "total $(secs "$T_START")s; logs: $RUN"
if [[ $PHASES =~ usbpass|sbx ]]; then
    tail -n1 "$RUN/report.txt"
fi
exit "$rc"
