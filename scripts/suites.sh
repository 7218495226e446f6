#!/usr/bin/env bash
# suites.sh: minimal Debian roots with other pcsc-lite generations (the version matrix, issue 3).
#
#   suites.sh prepare [SUITE...]   build or reuse a root per suite (default: bullseye bookworm trixie sid)
#   suites.sh path SUITE           print the root of SUITE (exit 1 if it is not prepared)
#   suites.sh info [SUITE...]      print "SUITE VERSION PROTOCOL ROOT" of prepared roots
#   suites.sh remove SUITE...      delete roots
#
# Each root is `debootstrap --variant=minbase SUITE` plus, installed inside with apt-get:
#   pcscd libpcsclite1 vsmartcard-vpcd pcsc-tools opensc python3-pyscard
# A root is reused when its stamp file (ROOT/.pcsc-bridge-stamp: suite, mirror, package list)
# matches; otherwise it is rebuilt from scratch in ROOT.new and renamed into place, so an
# interrupted build never leaves a half root behind. Builds are serialised per suite with flock.
#
# Environment:
#   PCSC_BRIDGE_SUITES   cache folder (default /var/cache/pcsc-bridge/suites); roots are CACHE/SUITE
#   SUITES_MIRROR        Debian mirror (default http://deb.debian.org/debian)
#   SUITES_JOBS          suites built at once (default 2: debootstrap is mostly network and dpkg)
# Needs root, debootstrap, unshare, chroot, flock. Logs of a build: CACHE/SUITE.log
set -euo pipefail

CACHE=${PCSC_BRIDGE_SUITES:-/var/cache/pcsc-bridge/suites}
MIRROR=${SUITES_MIRROR:-http://deb.debian.org/debian}
JOBS=${SUITES_JOBS:-2}
SELF=$(realpath "${BASH_SOURCE[0]}")
DEFAULT_SUITES="bullseye bookworm trixie sid"
PACKAGES="pcscd libpcsclite1 vsmartcard-vpcd pcsc-tools opensc python3-pyscard"
STAMP_NAME=.pcsc-bridge-stamp
INFO_NAME=.pcsc-bridge-info
STAMP_FORMAT=1

die() { echo "suites: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

valid_suite() { [[ $1 =~ ^[a-z][a-z0-9-]*$ ]] || die "bad suite name '$1'"; }

stamp_text() { # SUITE
    printf 'format=%s\nsuite=%s\nmirror=%s\npackages=%s\n' "$STAMP_FORMAT" "$1" "$MIRROR" "$PACKAGES"
}

is_ready() { # SUITE
    local root=$CACHE/$1
    [ -f "$root/$STAMP_NAME" ] && [ "$(cat "$root/$STAMP_NAME")" = "$(stamp_text "$1")" ] &&
        [ -x "$root/usr/sbin/pcscd" ] && [ -f "$root/$INFO_NAME" ]
}

# pcsc-lite version -> wire protocol (pcscd-protocol.md §11.1)
protocol_of() { # VERSION (upstream part, e.g. 2.3.3)
    local v=$1
    if dpkg --compare-versions "$v" lt 1.6.0; then echo "3:0"
    elif dpkg --compare-versions "$v" lt 1.6.5; then echo "4:0"
    elif dpkg --compare-versions "$v" lt 1.8.9; then echo "4:2"
    elif dpkg --compare-versions "$v" lt 1.8.24; then echo "4:3"
    elif dpkg --compare-versions "$v" lt 2.3.0; then echo "4:4"
    elif dpkg --compare-versions "$v" lt 2.5.0; then echo "4:5"
    else echo "4:6"; fi
}

# Run a command chrooted in ROOT inside a private mount namespace with /proc mounted.
in_root() { # ROOT CMD...
    local root=$1; shift
    unshare -m --propagation private sh -c \
        'root=$1; shift; mount -t proc proc "$root/proc" && exec chroot "$root" "$@"' \
        sh "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        LANG=C.UTF-8 "$@"
}

build() { # SUITE  (called with the suite's lock held; output goes to the log)
    local suite=$1 new=$CACHE/$1.new root=$CACHE/$1 t0 ver
    t0=$(date +%s)
    rm -rf "$new"
    mkdir -p "$CACHE/.debs/$suite"
    echo "== debootstrap $suite ($(date -u +%FT%TZ))"
    # --cache-dir keeps the downloaded .debs: a rebuild does not download them again.
    debootstrap --variant=minbase --cache-dir="$CACHE/.debs/$suite" "$suite" "$new" "$MIRROR"
    # no service starts in maintainer scripts; the mirror may be a frozen snapshot
    printf '#!/bin/sh\nexit 101\n' > "$new/usr/sbin/policy-rc.d"
    chmod 755 "$new/usr/sbin/policy-rc.d"
    cat > "$new/etc/apt/apt.conf.d/99pcsc-bridge" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
DPkg::Lock::Timeout "600";
EOF
    cp -f /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
    echo "== apt-get install $PACKAGES"
    # pcscd is installed here rather than with debootstrap --include: that fails for trixie and
    # sid (polkitd depends on a D-Bus provider debootstrap does not resolve).
    in_root "$new" apt-get -q update
    # shellcheck disable=SC2086
    in_root "$new" apt-get -q -y install --no-install-recommends $PACKAGES
    in_root "$new" apt-get clean
    rm -rf "$new/var/lib/apt/lists/"*_Packages "$new/var/lib/apt/lists/"*_Translation-* 2>/dev/null || true
    # mount points used by testhost.sh --suite
    mkdir -p "$new/run/pcscd" "$new/hostconf"
    [ -x "$new/usr/sbin/pcscd" ] || { echo "pcscd missing after install"; return 1; }
    [ -f "$new/usr/lib/pcsc/drivers/serial/libifdvpcd.so" ] || { echo "vpcd driver missing"; return 1; }
    ver=$(dpkg-query --admindir="$new/var/lib/dpkg" -W -f '${Version}' libpcsclite1)
    local up=${ver#*:}; up=${up%%-*}
    printf 'suite=%s\nversion=%s\nupstream=%s\nprotocol=%s\nglibc=%s\n' "$suite" "$ver" "$up" \
        "$(protocol_of "$up")" \
        "$(dpkg-query --admindir="$new/var/lib/dpkg" -W -f '${Version}' libc6)" > "$new/$INFO_NAME"
    stamp_text "$suite" > "$new/$STAMP_NAME"
    rm -rf "$root"
    mv "$new" "$root"
    echo "== done in $(( $(date +%s) - t0 )) s"
}

prepare_one() { # SUITE -> 0 ok / 1 failed; prints one status line
    local suite=$1 t0 log=$CACHE/$1.log
    t0=$(date +%s)
    exec 9> "$CACHE/.$suite.lock"
    flock 9
    if is_ready "$suite"; then
        exec 9>&-
        return 0
    fi
    echo "suites: building $suite (log: $log)" >&2
    # the build runs in its own session (process group), so an interrupted prepare can stop all
    # of it (debootstrap, dpkg, apt in the chroot) by that group's id and remove the half root
    local bpid st=0
    setsid "$SELF" _build "$suite" > "$log" 2>&1 < /dev/null &
    bpid=$!
    # (set -e is in force: every command of the trap must succeed or be excused)
    trap 'kill -TERM -- -"$bpid" "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true
          rm -rf "$CACHE/$suite.new" || true; echo "suites: build of $suite interrupted" >&2; exit 143' TERM INT HUP
    wait "$bpid" || st=$?
    trap - TERM INT HUP
    if [ "$st" != 0 ]; then
        rm -rf "$CACHE/$suite.new"
        exec 9>&-
        echo "suites: building $suite FAILED after $(( $(date +%s) - t0 )) s; last lines of $log:" >&2
        tail -n 15 "$log" | sed 's/^/    /' >&2
        return 1
    fi
    exec 9>&-
    echo "suites: built $suite in $(( $(date +%s) - t0 )) s" >&2
}

info_line() { # SUITE
    local root=$CACHE/$1
    # shellcheck disable=SC1090,SC2154  # the info file sets suite, upstream, protocol, glibc
    ( . "$root/$INFO_NAME"; printf '%-9s pcsc-lite %-10s protocol %s  glibc %-10s %s\n' \
        "$suite" "$upstream" "$protocol" "${glibc%%-*}" "$root" )
}

cmd_prepare() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
    local s suites=("$@") failed=0
    [ ${#suites[@]} -gt 0 ] || read -r -a suites <<< "$DEFAULT_SUITES"
    for s in "${suites[@]}"; do valid_suite "$s"; done
    mkdir -p "$CACHE"
    local need=()
    for s in "${suites[@]}"; do is_ready "$s" || need+=("$s"); done
    if [ ${#need[@]} -gt 0 ]; then
        command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
        local t0 st
        t0=$(date +%s)
        # at most JOBS builds at once; each job reports through its exit status
        declare -A pid_of=()
        trap 'for s in "${!pid_of[@]}"; do kill -TERM "${pid_of[$s]}" 2>/dev/null || true; done
              wait || true; exit 143' TERM INT HUP
        for s in "${need[@]}"; do
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
            prepare_one "$s" & pid_of[$s]=$!
        done
        for s in "${need[@]}"; do
            if wait "${pid_of[$s]}"; then st=0; else st=$?; fi
            [ "$st" = 0 ] || failed=1
        done
        trap - TERM INT HUP
        echo "suites: prepared ${need[*]} in $(( $(date +%s) - t0 )) s" >&2
    fi
    for s in "${suites[@]}"; do
        if is_ready "$s"; then info_line "$s"; else echo "$s: NOT READY"; failed=1; fi
    done
    [ "$failed" = 0 ] || die "some suites failed"
}

cmd_path() {
    [ $# = 1 ] || usage
    valid_suite "$1"
    is_ready "$1" || die "suite $1 is not prepared (scripts/suites.sh prepare $1)"
    echo "$CACHE/$1"
}

cmd_info() {
    local s suites=("$@")
    [ ${#suites[@]} -gt 0 ] || read -r -a suites <<< "$DEFAULT_SUITES"
    for s in "${suites[@]}"; do
        valid_suite "$s"
        if is_ready "$s"; then info_line "$s"; else echo "$s: not prepared"; fi
    done
}

cmd_remove() {
    [ $# -gt 0 ] || usage
    [ "$(id -u)" = 0 ] || die "needs root"
    local s
    for s in "$@"; do
        valid_suite "$s"
        exec 9> "$CACHE/.$s.lock"; flock 9
        rm -rf "${CACHE:?}/$s" "${CACHE:?}/$s.new"
        exec 9>&-
    done
}

case ${1:-} in
    prepare) shift; cmd_prepare "$@" ;;
    path) shift; cmd_path "$@" ;;
    info) shift; cmd_info "$@" ;;
    remove) shift; cmd_remove "$@" ;;
    _build) shift; build "$1" ;;   # internal: run by prepare_one with the suite's lock held
    *) usage ;;
esac
