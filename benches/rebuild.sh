#!/usr/bin/env bash
# Rebuild speed of a RAID5 member, idle and under a foreground fio load, in one run.
#
#   bash benches/rebuild.sh            MEMBER=512M RUNTIME=10 change the member size and the
#                                      seconds per fio run
#
# RAID5 of 4+1 image files on tmpfs (/dev/shm) plus a spare, served over NBD (Unix socket).
# Files rather than `mem:` members so `raid fail`/`remove`/`add` can name each one.
# (a) Idle: `raid fail` a member, time until the array is optimal again; the rate is the
#     member's used size over that time. The reference is a plain sequential copy of one
#     member's file to another tmpfs file with dd (1 MiB blocks): the same bytes read and
#     written through the same memory, without the parity work and the other members' reads.
# (b) Load: fio 4k random read/write 50/50 at iodepth 16 through the nbd engine. IOPS with
#     no rebuild, then with a rebuild at `rebuild_priority=low` running all along; and the
#     rebuild's rate at `high` under the same load against its idle rate.
# After each rebuild the failed member is removed and added back as the next spare.
# A benchmark, not a test: figures depend on the machine and its load (see `uptime`).
set -euo pipefail
cd "$(dirname "$0")/.."

member=${MEMBER:-512M}
runtime=${RUNTIME:-10}
work=$(mktemp -d /dev/shm/orion-rebuild.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for t in fio jq dd bc; do
    command -v "$t" >/dev/null || { echo "needs $t (apt-get install fio jq)" >&2; exit 1; }
done
raid=${CARGO_TARGET_DIR:-target}/release/raid
[ -x "$raid" ] || cargo build --release --quiet --bin raid
ctl="$work/ctl.sock"
sock="$work/raid.sock"
uri="nbd+unix:///?socket=$sock"

now() { date +%s.%N; }
wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "no socket $1" >&2; exit 1
}
status() { "$raid" status --json --control "$ctl" | jq -c '.arrays[0]'; }
state() { status | jq -r '.state'; }
# Waits until the array is optimal with no job; prints the seconds it took from $1.
wait_optimal() {
    local start=$1
    while :; do
        local s
        s=$(status)
        if [ "$(jq -r '.state' <<<"$s")" = optimal ] && [ "$(jq -r '.job' <<<"$s")" = null ]; then
            break
        fi
        sleep 0.02
    done
    echo "$(now) - $start" | bc -l
}
# Fails member $1, waits for the spare to rebuild, then makes $1 the next spare.
# Prints the seconds from the failure to optimal.
# The end is seen through one `raid monitor` (a control request every 20 ms in one process),
# not by `wait_optimal` alone: its `raid status` and three jq processes every 20 ms took
# about a quarter of the CPU of the rebuild they timed on 2 cores (perf). wait_optimal then
# only confirms the state, normally at its first look.
rebuild_once() {
    local m=$1 start t line mon_pid mon_fd
    coproc MON { exec "$raid" monitor --poll 20ms --control "$ctl"; }
    mon_pid=$MON_PID
    mon_fd=${MON[0]}
    sleep 0.2 # the monitor has taken its starting point
    start=$(now)
    "$raid" fail bench "$m" --control "$ctl" >/dev/null
    while read -r -t 300 line <&"$mon_fd"; do
        case $line in *rebuild_finished* | *rebuild_failed*) break ;; esac
    done
    t=$(wait_optimal "$start")
    kill "$mon_pid" 2>/dev/null || true
    wait "$mon_pid" 2>/dev/null || true
    "$raid" remove bench "$m" --control "$ctl" >/dev/null
    "$raid" add bench "$m" --control "$ctl" >/dev/null
    echo "$t"
}
# fio load for $1 seconds -> total IOPS (read + write)
load() {
    fio --name=load --ioengine=nbd --uri="$uri" --rw=randrw --rwmixread=50 --bs=4k \
        --iodepth=16 --size="$size" --time_based --runtime="$1" \
        --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
        jq -r '.jobs[0] | .read.iops + .write.iops'
}

echo "machine: $(nproc) cores; uptime:$(uptime | sed 's/.*load average/ load average/')"
members=()
for i in 0 1 2 3 4; do
    truncate -s "$member" "$work/d$i.img"
    members+=("$work/d$i.img")
done
truncate -s "$member" "$work/s0.img"
"$raid" serve --create --level 5 --chunk 512K --name bench \
    --nbd-socket "$sock" --control "$ctl" "${members[@]}" >"$work/raid.log" 2>&1 &
pids+=($!)
wait_socket "$sock"; wait_socket "$ctl"
size=$(status | jq '.size_bytes')
member_bytes=$((size / 4))
# Initial resync (if any) first, then fill every stripe.
wait_optimal "$(now)" >/dev/null
fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=4 --size="$size" \
    --output-format=json >/dev/null 2>&1
"$raid" add bench "$work/s0.img" --control "$ctl" >/dev/null

mbs() { echo "$member_bytes / $1 / 1000000" | bc -l; }

# Reference: one member's size copied sequentially, tmpfs to tmpfs (best of 3).
copy_s=
for _ in 1 2 3; do
    rm -f "$work/copy.img"
    start=$(now)
    dd if="$work/d0.img" of="$work/copy.img" bs=1M count=$((member_bytes >> 20)) status=none
    t=$(echo "$(now) - $start" | bc -l)
    if [ -z "$copy_s" ] || [ "$(echo "$t < $copy_s" | bc -l)" = 1 ]; then copy_s=$t; fi
done
rm -f "$work/copy.img"
# Second reference, the bytes a RAID5 rebuild must move: the 4 surviving members read
# (to /dev/null) plus one member written (from /dev/zero); no XOR.
start=$(now)
cat "$work/d0.img" "$work/d2.img" "$work/d3.img" "$work/d4.img" >/dev/null
dd if=/dev/zero of="$work/copy.img" bs=1M count=$((member_bytes >> 20)) status=none
work_s=$(echo "$(now) - $start" | bc -l)
rm -f "$work/copy.img"

# (a) idle rebuild at the default (normal) priority, best of 2.
idle_s=$(rebuild_once "$work/d1.img")
t=$(rebuild_once "$work/d2.img")
if [ "$(echo "$t < $idle_s" | bc -l)" = 1 ]; then idle_s=$t; fi

# (b) foreground IOPS without a rebuild.
base_iops=$(load "$runtime")

# ... with a low-priority rebuild running throughout (started as the load starts).
"$raid" set bench rebuild_priority=low --control "$ctl" >/dev/null
load "$runtime" >"$work/low.iops" &
lp=$!
sleep 0.5
low_start=$(now)
"$raid" fail bench "$work/d3.img" --control "$ctl" >/dev/null
wait "$lp"
low_iops=$(cat "$work/low.iops")
low_done=$(status | jq -r 'if .job == null then "finished" else "\(.job.progress * 100 | floor)%" end')
low_s=$(wait_optimal "$low_start")
"$raid" remove bench "$work/d3.img" --control "$ctl" >/dev/null
"$raid" add bench "$work/d3.img" --control "$ctl" >/dev/null

# Rebuild at high priority under the same load (the load outlasts the rebuild).
"$raid" set bench rebuild_priority=high --control "$ctl" >/dev/null
load $((runtime * 6)) >/dev/null &
lp=$!
sleep 1
high_s=$(rebuild_once "$work/d4.img")
kill -INT "$lp" 2>/dev/null || true
wait "$lp" 2>/dev/null || true
"$raid" set bench rebuild_priority=normal --control "$ctl" >/dev/null

printf '\nRAID5 4+1 on tmpfs files of %s (member used %d MiB), load: fio 4k randrw 50/50 qd16\n' \
    "$member" $((member_bytes >> 20))
printf '%-44s %12s %8s %8s\n' "measure" "figure" "ratio" "target"
printf '%-44s %9.0f MB/s %8s %8s\n' "sequential copy of one member (dd, tmpfs)" "$(mbs "$copy_s")" "" ""
printf '%-44s %9.0f MB/s %8s %8s\n' "read 4 members + write 1 (cat, dd)" "$(mbs "$work_s")" "" ""
printf '%-44s %9.0f MB/s %8.2f %8s\n' "idle rebuild (normal priority) / copy" "$(mbs "$idle_s")" \
    "$(echo "$copy_s / $idle_s" | bc -l)" ">=0.80"
printf '%-44s %12s %8.2f\n' "idle rebuild / read 4 + write 1" "" "$(echo "$work_s / $idle_s" | bc -l)"
printf '%-44s %9.0f IOPS %8s %8s\n' "foreground, no rebuild" "$base_iops" "" ""
printf '%-44s %9.0f IOPS %8.2f %8s\n' "foreground, low-priority rebuild running" "$low_iops" \
    "$(echo "$low_iops / $base_iops" | bc -l)" ">=0.80"
printf '%-44s %9.0f MB/s %8s %8s\n' "  (low rebuild: $low_done at load end, total)" "$(mbs "$low_s")" "" ""
printf '%-44s %9.0f MB/s %8.2f %8s\n' "rebuild under load, high priority" "$(mbs "$high_s")" \
    "$(echo "$idle_s / $high_s" | bc -l)" ">=0.50"
