# shellcheck shell=bash disable=SC2154,SC2034
# Sourced by scripts/bench.sh and scripts/bench-proxy.sh: the steps both benchmarks take the same
# way (finding the stock client library, building their C program, CPU pinning, reading a
# process's CPU time), so a fix to one reaches both. Needs `root` (the checkout); sets `target`,
# `testhost` and `cc` from the environment; the functions read `pin` and `cpu` and set `pin_cmd`,
# the sourcing script's variables (hence the shellcheck directive above).

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target = /* ]] || target=$root/$target
testhost=${TESTHOST:-$root/scripts/testhost.sh}
cc=${CC:-gcc}

# The system's libpcsclite.so.1 (Debian's multiarch path first), or nothing.
bench_find_native() {
    local c
    for c in /usr/lib/x86_64-linux-gnu/libpcsclite.so.1 /usr/lib/*/libpcsclite.so.1 /usr/lib64/libpcsclite.so.1; do
        [[ -e $c ]] && { echo "$c"; return 0; }
    done
    return 0
}

# bench_build NAME [LIBS...]: builds tests/bench/NAME.c into $target/bench/NAME when the binary is
# missing or older than the source or the header it shares (tests/bench/bench-common.h).
bench_build() {
    local src=$root/tests/bench/$1.c bin=$target/bench/$1
    shift
    mkdir -p "$(dirname "$bin")"
    if [[ ! -x $bin || $src -nt $bin || $root/tests/bench/bench-common.h -nt $bin ]]; then
        "$cc" -O2 -Wall -o "$bin.tmp" "$src" "$@"
        mv "$bin.tmp" "$bin"
    fi
}

# Sets pin_cmd (a command prefix) from `pin` and `cpu`: `taskset -c CPU`, CPU defaulting to the
# last one, or nothing with --no-pin (why pin: see the header of scripts/bench.sh).
bench_pin() {
    pin_cmd=()
    if ((pin)); then
        [[ -n $cpu ]] || cpu=$(($(nproc) - 1))
        pin_cmd=(taskset -c "$cpu")
    fi
}

# bench_cpu_time PID: "user U s sys S s" of a live process (from /proc/PID/stat).
bench_cpu_time() {
    local st
    read -r -a st < <(sed 's/.*) //' "/proc/$1/stat")
    awk -v u="${st[11]}" -v s="${st[12]}" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "user %.2f s sys %.2f s", u / hz, s / hz }'
}
