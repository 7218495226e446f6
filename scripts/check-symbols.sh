#!/usr/bin/env bash
# check-symbols.sh LIB: LIB exports exactly the symbols of Debian's libpcsclite.so.1,
# has the SONAME libpcsclite.so.1, is linked -z nodelete, and (reported) its
# highest GLIBC symbol version.
set -euo pipefail
LIB=${1:?usage: check-symbols.sh LIB}
NATIVE=${NATIVE_LIB:-/usr/lib/x86_64-linux-gnu/libpcsclite.so.1}
# Besides libpcsclite's symbols we export only `dlopen`, the LD_PRELOAD route's
# interceptor (interpose/src/dlopen.rs).
all=$(nm -D --defined-only "$LIB" | awk '{print $3}' | sort)
ours=$(echo "$all" | grep -vx dlopen)
if [ "$(echo "$all" | grep -cx dlopen)" = 1 ]; then echo "extra: dlopen (interceptor)"; else echo "dlopen interceptor missing"; ok_extra=1; fi
theirs=$(nm -D --defined-only "$NATIVE" | awk '{print $3}' | sort)
ok=${ok_extra:-0}
if [ "$ours" = "$theirs" ]; then
    echo "symbols: the same $(echo "$ours" | wc -l) as $NATIVE"
else
    echo "symbols differ from $NATIVE:"; diff <(echo "$theirs") <(echo "$ours") || true; ok=1
fi
soname=$(readelf -d "$LIB" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libpcsclite.so.1 ] && echo "soname: $soname" || { echo "soname: '$soname' (want libpcsclite.so.1)"; ok=1; }
readelf -d "$LIB" | grep -q 'NODELETE' && echo "flags: NODELETE" || { echo "flags: NODELETE missing"; ok=1; }
glibc=$(objdump -T "$LIB" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
echo "highest glibc symbol version: ${glibc:-none}"
if [ -n "${GLIBC_FLOOR:-}" ]; then
    if [ "$(printf '%s\n%s\n' "GLIBC_$GLIBC_FLOOR" "$glibc" | sort -V | tail -1)" != "GLIBC_$GLIBC_FLOOR" ]; then
        echo "glibc floor exceeded: $glibc > GLIBC_$GLIBC_FLOOR"; ok=1
    fi
fi
exit $ok
