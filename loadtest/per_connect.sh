#!/usr/bin/env bash
# What one connect or close costs the server, counted rather than timed: CPU time, context
# switches and (with STRACE=1) system calls per event recorded, while the load tool churns held
# sessions at a steady rate with no onlinestatus load beside it. Counts per event move far less
# than rates on a shared machine (docs/performance.md, "Where a login storm's time goes").
#
#   loadtest/per_connect.sh BINARY [CHURN_RATE] [SECONDS]
#   e.g. loadtest/per_connect.sh ./target/release/wkuser 1000 20
#
# Each event is one connect's `Connected` or one close's `Disconnected`: the events counted
# are the growth of `last_seq` in `/stats` over the window. Needs `perf`; `strace` for STRACE=1
# (which slows the server: its counts are per event, not its rates); with PERF_RECORD=FILE, a
# 10 s profile of the server (`perf record -g`) after the count; with ALLOC_EVENTS=EVENTS
# (uprobes on the allocator's entry points, added first with `perf probe -x BINARY --add
# GROUP:NAME=mi_malloc_aligned` and the like), their counts per event by thread kind, 10 s.
# API and WS (127.0.0.1:5711, :5712) are where the server listens.
set -euo pipefail
binary=$1 rate=${2:-1000} seconds=${3:-20}
tool=${LOADTEST:-./target/release/wkuser-loadtest}
api=${API:-127.0.0.1:5711} ws=${WS:-127.0.0.1:5712}
ulimit -n 20000
work=$(mktemp -d /tmp/per-connect-XXXX)
wkuser=$binary data=$work/data out=$work
# shellcheck source=loadtest/server.sh
. "$(dirname "$0")/server.sh"
trap 'kill -TERM $tool_pid 2>/dev/null || true; stop; rm -rf "$work"' EXIT
start server
# A soak long enough to cover the window: ceiling, tokens and sessions first (about 15 s).
"$tool" --api $api --ws $ws --users 10000 --status-clients 0 --churn-rate "$rate" \
    --soak "$((seconds + 60))s" > "$work/tool.log" 2>&1 &
tool_pid=$!
# Per thread kind (sled's IO threads as one): voluntary context switches (a thread waiting for
# another: the hand-offs), involuntary ones (preempted: the machine's load) and CPU ticks.
threads_of() {
    for t in /proc/"$server"/task/*; do
        comm=$(cat "$t/comm" 2> /dev/null) || continue
        vol=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2> /dev/null) || continue
        invol=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status" 2> /dev/null) || continue
        ticks=$(sed 's/.*) //' "$t/stat" 2> /dev/null | awk '{print $12 + $13}') || continue
        echo "${comm%%-[0-9]*} $vol $invol $ticks"
    done | awk '{v[$1] += $2; i[$1] += $3; c[$1] += $4} END {for (k in v) print k, v[k], i[k], c[k]}'
}
seq_of() { curl -sf "http://$api/stats" | sed -n 's/.*"last_seq":\([0-9]*\).*/\1/p'; }
# Wait until the churn runs: last_seq grows by more than half the rate in a second.
for _ in $(seq 1 120); do
    a=$(seq_of); sleep 1; b=$(seq_of)
    if [ $((b - a)) -gt $((rate / 2)) ]; then break; fi
done
sleep 3
threads_of > "$work/threads-before.txt"
before=$(seq_of)
perf stat -e task-clock,context-switches,cpu-migrations -p "$server" -o "$work/perf.txt" -- sleep "$seconds"
after=$(seq_of)
threads_of > "$work/threads-after.txt"
events=$((after - before))
clock_ms=$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$work/perf.txt")
switches=$(awk '/context-switches/ {gsub(",", "", $1); print $1}' "$work/perf.txt")
echo "events in ${seconds}s: $events ($((events / seconds))/s)"
awk -v c="$clock_ms" -v s="$switches" -v e="$events" 'BEGIN {
    printf "server CPU per event: %.1f us; context switches per event: %.2f\n", c * 1000 / e, s / e }'
echo "threads: $(ls /proc/$server/task | wc -l)"
hz=$(getconf CLK_TCK)
echo "per event, by thread kind: voluntary switches, involuntary switches, CPU us"
awk -v e="$events" -v hz="$hz" 'NR == FNR {v[$1] = $2; i[$1] = $3; c[$1] = $4; next}
    {printf "  %-18s %6.2f %6.2f %7.1f\n", $1, ($2 - v[$1]) / e, ($3 - i[$1]) / e, ($4 - c[$1]) * 1e6 / hz / e}' \
    "$work/threads-before.txt" "$work/threads-after.txt" | sort -k4 -n -r
if [ -n "${ALLOC_EVENTS:-}" ]; then
    before=$(seq_of)
    perf stat --per-thread -x, -e "$ALLOC_EVENTS" -p "$server" -o "$work/alloc.txt" -- sleep 10
    after=$(seq_of)
    events=$((after - before))
    echo "allocations (uprobes, 10 s, $events events), per event by thread kind:"
    awk -F, -v e="$events" '/^#/ || NF < 3 {next} {t=$1; sub(/-[0-9]+$/, "", t); n=$2; gsub(/ /, "", n); c[t] += n; tot += n}
        END {for (k in c) if (c[k] > 0) printf "  %-18s %7.1f\n", k, c[k] / e; printf "  %-18s %7.1f\n", "all", tot / e}' "$work/alloc.txt" | sort -k2 -n -r
fi
if [ -n "${PERF_RECORD:-}" ]; then
    perf record -F 499 -g -p "$server" -o "$PERF_RECORD" -- sleep 10 2> /dev/null
    echo "profile: $PERF_RECORD (perf report -i $PERF_RECORD --sort comm)"
fi
if [ "${STRACE:-0}" = 1 ]; then
    before=$(seq_of)
    timeout -s INT 5 strace -c -f -p "$server" -o "$work/strace.txt" || true
    after=$(seq_of)
    events=$((after - before))
    calls=$(awk '$NF == "total" {print $4}' "$work/strace.txt")
    echo "under strace, 5 s: $events events, $calls system calls: $(awk -v c="$calls" -v e="$events" 'BEGIN { printf "%.1f", c / e }') per event"
    sort -k4 -n -r "$work/strace.txt" | head -12
fi
