#!/usr/bin/env bash
# sandbox.sh: run a command in a bwrap sandbox built like Flatpak's --socket=pcsc, on a suite root.
#
#   sandbox.sh --suite SUITE --socket HOSTSOCKET [ROUTE] [OPTIONS] -- CMD [ARG...]
#   sandbox.sh --suite SUITE --proxy DIR [OPTIONS] -- CMD [ARG...]
#
# The sandbox sees the suite root's /usr and /etc read-only (/lib, /lib64, /bin, /sbin are symlinks
# into usr, as in a merged-/usr root), fresh /proc, /dev, /tmp and /run, and the host's pcscd socket
# bound read-only at /run/pcscd/pcscd.comm with PCSCLITE_CSOCK_NAME pointing at it (what Flatpak's
# flatpak_run_add_pcsc_args does). All namespaces are unshared (--unshare-all); nothing of the
# host's /usr is visible. The environment is cleared: PATH, HOME=/tmp, LANG=C.UTF-8 and
# PCSCLITE_CSOCK_NAME are set, plus whatever --env adds.
#
# ROUTE (at most one; default: none, the suite's own libpcsclite):
#   --preload LIB    LIB bound at /app/lib/libpcscbridge.so, LD_PRELOAD=/app/lib/libpcscbridge.so
#   --dropin LIB     LIB bound at /app/lib/libpcsclite.so.1, LD_LIBRARY_PATH=/app/lib
#   --delegate LIB   LIB bound at /app/lib/libpcscbridge.so,
#                    LIBPCSCLITE_DELEGATE=/app/lib/libpcscbridge.so (pcsc-lite 2.1.0+ only)
#   --proxy DIR      no library: the suite's own libpcsclite talks to a `usbpass proxy` whose
#                    socket is DIR/pcscd.comm. The FOLDER DIR is bound (read-only) at
#                    /run/user/UID/pcsc-bridge, as Flatpak's --filesystem=xdg-run/pcsc-bridge
#                    does, so a socket the proxy makes anew stays visible; XDG_RUNTIME_DIR is
#                    /run/user/UID and PCSCLITE_CSOCK_NAME the socket in the folder. --socket
#                    may still be given (the host socket is then bound too, unused).
# OPTIONS:
#   --env NAME=VALUE      set a variable inside (repeatable)
#   --ro-bind SRC DEST    bind a host file or folder read-only at DEST (repeatable)
#   --no-socket           do not bind a socket (--socket not needed)
#   --print               print the bwrap command line instead of running it
# Exit status: the command's, or 125 on usage/setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOCK_IN=/run/pcscd/pcscd.comm
APP_LIB=/app/lib

die() { echo "sandbox: $*" >&2; exit 125; }
usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 125; }

suite="" socket="" route="" lib="" nosock=0 print=0 proxy=""
envs=() binds=()
while [ $# -gt 0 ]; do
    case $1 in
        --suite) suite=${2:?}; shift 2 ;;
        --socket) socket=${2:?}; shift 2 ;;
        --preload|--dropin|--delegate)
            [ -z "$route" ] || die "only one of --preload, --dropin, --delegate, --proxy"
            route=${1#--}; lib=${2:?}; shift 2 ;;
        --proxy)
            [ -z "$route" ] || die "only one of --preload, --dropin, --delegate, --proxy"
            route=proxy; proxy=${2:?}; shift 2 ;;
        --env) [[ ${2:?} == *=* ]] || die "--env wants NAME=VALUE"; envs+=("$2"); shift 2 ;;
        --ro-bind) binds+=("${2:?}" "${3:?}"); shift 3 ;;
        --no-socket) nosock=1; shift ;;
        --print) print=1; shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "sandbox: unknown option $1" >&2; usage ;;
    esac
done
[ $# -gt 0 ] || usage
[ -n "$suite" ] || die "--suite is required"
command -v bwrap >/dev/null || die "bwrap missing (apt-get install bubblewrap)"
sroot=$("$ROOT/scripts/suites.sh" path "$suite") || die "suite $suite is not prepared"

args=(--unshare-all --die-with-parent --new-session
      --ro-bind "$sroot/usr" /usr --ro-bind "$sroot/etc" /etc)
for d in lib lib64 bin sbin lib32 libx32; do
    if [ -L "$sroot/$d" ]; then
        args+=(--symlink "$(readlink "$sroot/$d")" "/$d")
    elif [ -d "$sroot/$d" ]; then            # a root without merged /usr
        args+=(--ro-bind "$sroot/$d" "/$d")
    fi
done
args+=(--proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --dir /var --symlink ../run /var/run
       --clearenv --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /tmp
       --setenv LANG C.UTF-8 --chdir /tmp)

[ "$route" = proxy ] && [ -z "$socket" ] && nosock=1
if [ "$nosock" = 0 ]; then
    [ -n "$socket" ] || die "--socket is required (or --no-socket)"
    # Flatpak binds the socket only if it exists when the sandbox starts
    [ -S "$socket" ] || die "no socket at $socket"
    args+=(--ro-bind "$socket" "$SOCK_IN" --setenv PCSCLITE_CSOCK_NAME "$SOCK_IN")
fi

if [ "$route" = proxy ]; then
    [ -d "$proxy" ] || die "no proxy folder at $proxy"
    [ -S "$proxy/pcscd.comm" ] || die "no proxy socket at $proxy/pcscd.comm"
    xdg=/run/user/$(id -u)
    args+=(--ro-bind "$(realpath "$proxy")" "$xdg/pcsc-bridge" --setenv XDG_RUNTIME_DIR "$xdg"
           --setenv PCSCLITE_CSOCK_NAME "$xdg/pcsc-bridge/pcscd.comm")
elif [ -n "$route" ]; then
    [ -f "$lib" ] || die "no library at $lib"
    lib=$(realpath "$lib")
    case $route in
        preload) args+=(--ro-bind "$lib" "$APP_LIB/libpcscbridge.so"
                        --setenv LD_PRELOAD "$APP_LIB/libpcscbridge.so") ;;
        dropin) args+=(--ro-bind "$lib" "$APP_LIB/libpcsclite.so.1"
                       --setenv LD_LIBRARY_PATH "$APP_LIB") ;;
        delegate) args+=(--ro-bind "$lib" "$APP_LIB/libpcscbridge.so"
                         --setenv LIBPCSCLITE_DELEGATE "$APP_LIB/libpcscbridge.so") ;;
    esac
fi
for ((i = 0; i < ${#binds[@]}; i += 2)); do
    [ -e "${binds[i]}" ] || die "nothing to bind at ${binds[i]}"
    args+=(--ro-bind "$(realpath "${binds[i]}")" "${binds[i + 1]}")
done
for e in "${envs[@]}"; do args+=(--setenv "${e%%=*}" "${e#*=}"); done

if [ "$print" = 1 ]; then
    printf '%q ' bwrap "${args[@]}" -- "$@"; echo
    exit 0
fi
exec bwrap "${args[@]}" -- "$@"
