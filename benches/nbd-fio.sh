#!/usr/bin/env bash
# Speed of the NBD export, side by side with `nbdkit memory` of the same size, in one run.
#
#   bash benches/nbd-fio.sh [raid0|raid1|raid10|raid5|raid6|all]   (default: all)
#
# Both servers listen on Unix sockets; fio's nbd engine drives them with the same jobs:
# 4k random read and write (iodepth 16), 1 MiB sequential read and write (iodepth 4).
# Prints a table with the ratio ours/nbdkit. Each job runs ROUNDS slices (default 10) of
# RUNTIME seconds (default 3, after a 1 s ramp) on each server, alternating, and the slices
# are averaged: the machine's speed drifts over seconds, and many short alternating slices
# put both servers under the same drift. Each round runs the two servers back to back, ours
# first in odd rounds and second in even ones, so neither always follows the other. The
# "slices" column is the range of the per-round ratios (ours against nbdkit in that round).
# JOBS="randwrite ..." runs only the named jobs (randread randwrite read write).
#
# AA=1 replaces our server with a second `nbdkit memory`: an A/A run whose ratios show the
# method's own noise on this machine (identical servers should come out at 1.00).
# A benchmark, not a test: numbers depend on the machine and its load.
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
rounds=${ROUNDS:-10}
runtime=${RUNTIME:-3}
aa=${AA:-0}
jobs=${JOBS:-randread randwrite read write}
work=$(mktemp -d /tmp/orion-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for t in fio nbdkit jq; do
    command -v "$t" >/dev/null || { echo "needs $t (apt-get install fio nbdkit jq)" >&2; exit 1; }
done
cargo build --release --quiet
raid=${CARGO_TARGET_DIR:-target}/release/raid

wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "no socket $1" >&2; exit 1
}

# fio_job URI NAME RW BS DEPTH -> prints "iops bw_bytes"
fio_job() {
    local uri=$1 name=$2 rw=$3 bs=$4 depth=$5
    fio --name="$name" --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" \
        --iodepth="$depth" --size=1G --time_based --runtime="$runtime" --ramp_time=1 \
        --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
        jq -r '.jobs[0] | if (.read.io_bytes > 0) then "\(.read.iops) \(.read.bw_bytes)" else "\(.write.iops) \(.write.bw_bytes)" end'
}

# Fill the first 1 GiB so reads do not hit holes (both servers are sparse).
fill() {
    fio --name=fill --ioengine=nbd --uri="$1" --rw=write --bs=1M --iodepth=4 --size=1G \
        --output-format=json >/dev/null 2>&1
}

run_level() {
    local level=$1; shift
    local members=("$@")
    local per_member=${members[0]#mem:}
    local dir="$work/$level"
    mkdir -p "$dir"
    "$raid" serve --create --level "$level" --chunk 512K --name bench \
        --nbd-socket "$dir/raid.sock" --control "$dir/ctl.sock" "${members[@]}" \
        >"$dir/raid.log" 2>&1 &
    pids+=($!)
    wait_socket "$dir/raid.sock"; wait_socket "$dir/ctl.sock"
    local size ours_name=raid
    size=$("$raid" status --json --control "$dir/ctl.sock" | jq '.arrays[0].size_bytes')
    if [ "$aa" = 1 ]; then
        # A/A: the array only gave the size; a second nbdkit takes our place.
        kill -INT "${pids[-1]}" 2>/dev/null || true
        wait "${pids[-1]}" 2>/dev/null || true
        rm -f "$dir/raid.sock"
        nbdkit -f --exit-with-parent --unix "$dir/raid.sock" memory "$size" &
        pids[-1]=$!
        wait_socket "$dir/raid.sock"
        ours_name=nbdkit-A
    fi
    nbdkit -f --exit-with-parent --unix "$dir/kit.sock" memory "$size" &
    pids+=($!)
    wait_socket "$dir/kit.sock"
    local ours="nbd+unix:///?socket=$dir/raid.sock"
    local kit="nbd+unix:///?socket=$dir/kit.sock"
    fill "$ours"; fill "$kit"
    printf '\n%s of %d x %s (%s bytes), %s alternating slices of %s s\n' "$level" \
        "${#members[@]}" "$per_member" "$size" "$rounds" "$runtime"
    printf '%-22s %14s %14s %7s %12s\n' "job" "$ours_name" "nbdkit" "ratio" "slices"
    for job in "randread 4k 16" "randwrite 4k 16" "read 1M 4" "write 1M 4"; do
        set -- $job
        case " $jobs " in *" $1 "*) ;; *) continue ;; esac
        # ROUNDS slices of each server, alternating, averaged.
        local o_iops=0 o_bw=0 k_iops=0 k_bw=0 oi ob ki kb lo= hi= r round
        for round in $(seq "$rounds"); do
            if [ $((round % 2)) = 1 ]; then
                read -r oi ob < <(fio_job "$ours" "$1" "$1" "$2" "$3")
                read -r ki kb < <(fio_job "$kit" "$1" "$1" "$2" "$3")
            else
                read -r ki kb < <(fio_job "$kit" "$1" "$1" "$2" "$3")
                read -r oi ob < <(fio_job "$ours" "$1" "$1" "$2" "$3")
            fi
            o_iops=$(echo "$o_iops + $oi / $rounds" | bc -l)
            o_bw=$(echo "$o_bw + $ob / $rounds" | bc -l)
            k_iops=$(echo "$k_iops + $ki / $rounds" | bc -l)
            k_bw=$(echo "$k_bw + $kb / $rounds" | bc -l)
            r=$(echo "$ob / $kb" | bc -l)
            if [ -z "$lo" ] || [ "$(echo "$r < $lo" | bc -l)" = 1 ]; then lo=$r; fi
            if [ -z "$hi" ] || [ "$(echo "$r > $hi" | bc -l)" = 1 ]; then hi=$r; fi
        done
        local spread
        spread=$(printf '%.2f-%.2f' "$lo" "$hi")
        if [ "$2" = 4k ]; then
            printf '%-22s %11.0f io %11.0f io %7.2f %12s\n' "$1 $2 qd$3 (IOPS)" "$o_iops" \
                "$k_iops" "$(echo "$o_iops / $k_iops" | bc -l)" "$spread"
        else
            printf '%-22s %9.0f MB/s %9.0f MB/s %7.2f %12s\n' "$1 $2 qd$3 (BW)" \
                "$(echo "$o_bw / 1000000" | bc -l)" "$(echo "$k_bw / 1000000" | bc -l)" \
                "$(echo "$o_bw / $k_bw" | bc -l)" "$spread"
        fi
    done
    kill -INT "${pids[-2]}" "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-2]}" 2>/dev/null || true
}

case $which in
    raid0|all) run_level 0 mem:512M mem:512M mem:512M mem:512M ;;&
    raid1|all) run_level 1 mem:2G mem:2G ;;&
    raid10|all) run_level 10 mem:1G mem:1G mem:1G mem:1G ;;&
    raid5|all) run_level 5 mem:512M mem:512M mem:512M mem:512M mem:512M ;;&
    raid6|all) run_level 6 mem:512M mem:512M mem:512M mem:512M mem:512M mem:512M ;;
    raid0|raid1|raid10|raid5) ;;
    *) echo "usage: $0 [raid0|raid1|raid10|raid5|raid6|all]" >&2; exit 2 ;;
esac
