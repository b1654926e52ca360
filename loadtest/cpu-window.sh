#!/usr/bin/env bash
# The CPU time the server and the load tool spend during the churn (the window "onlinestatus
# with churn"), from /proc: less sensitive to a noisy machine than the throughput figures. Runs
# one server on a fresh data directory under one run of the tool, with the webhook or without,
# and writes the tool's report to $OUT/<label>.txt and the CPU figures to $OUT/<label>.cpu.
#
#   loadtest/cpu-window.sh BINARY LABEL hook|nohook [LOADTEST_ARGS...]
#   e.g. OUT=/tmp/cpu loadtest/cpu-window.sh ./target/release/wkuser after-hook hook --users 10000 --duration 20s
# The window starts when the tool says "the ceiling in the slices between" (the churn begins)
# and ends when it says "with churn at" (the churn is over): CPU seconds of each process, of
# the server's threads by name, and of the whole machine (all of its CPUs, busy jiffies); and
# with perf, the server's disk syncs and context switches in the window ($OUT/<label>.syncs).
# PROFILE=1 also records the server's stacks in the window (perf record, $OUT/<label>.perf.data):
# its own cost then weighs on the CPU figures, so profile and count in separate runs.
set -euo pipefail
binary=$1 label=$2 mode=$3
shift 3
tool=${LOADTEST:-./target/release/wkuser-loadtest}
out=${OUT:-$(mktemp -d /tmp/cpu-window-XXXX)}
mkdir -p "$out"
api=127.0.0.1:5701 ws=127.0.0.1:5702
serve_flags="" tool_flags=""
if [ "$mode" = hook ]; then
    serve_flags="--webhook-url http://127.0.0.1:5703/hook" tool_flags="--webhook-sink 127.0.0.1:5703"
fi
ulimit -n 20000
tick=$(getconf CLK_TCK)
data=$(mktemp -d /tmp/cpu-window-data-XXXX)
# shellcheck disable=SC2086 # the extra flags are words on purpose
"$binary" serve --data-dir "$data/data" --api-addr $api --ws-addr $ws $serve_flags > "$data/server.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do curl -sf "http://$api/readyz" > /dev/null && break; sleep 0.2; done
report=$out/$label.txt
# shellcheck disable=SC2086
"$tool" --api $api --ws $ws $tool_flags "$@" > "$report" 2>&1 &
loader=$!

# utime + stime of a process (its threads, the exited ones included), in ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy jiffies of the whole machine.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# "tid name ticks" for each thread of the server.
threads() { for t in /proc/"$server"/task/*; do echo "${t##*/} $(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done; }
wait_for() { until grep -q "$1" "$report"; do kill -0 $loader 2> /dev/null || return 1; sleep 0.2; done; }

if wait_for "server:   the ceiling in the slices between"; then
    s0=$(ticks $server) l0=$(ticks $loader) m0=$(busy) t0=$(date +%s.%N)
    threads > "$data/threads-0"
    # The server's disk syncs (sled's flushes) and context switches in the window.
    perf stat -e syscalls:sys_enter_sync_file_range,syscalls:sys_enter_fsync,context-switches \
        -p $server -o "$out/$label.syncs" > /dev/null 2>&1 &
    counter=$!
    if [ -n "${PROFILE:-}" ]; then
        perf record -q -F 250 --call-graph dwarf,16384 -p $server -o "$out/$label.perf.data" > /dev/null 2>&1 &
        profiler=$!
    fi
    wait_for "server:   with churn at" || true
    kill -INT $counter; wait $counter || true
    if [ -n "${PROFILE:-}" ]; then kill -INT $profiler; wait $profiler || true; fi
    s1=$(ticks $server) l1=$(ticks $loader) m1=$(busy) t1=$(date +%s.%N)
    threads > "$data/threads-1"
    {
        echo "window_s $(echo "$t1 - $t0" | bc)"
        echo "server_cpu_s $(echo "scale=2; ($s1 - $s0) / $tick" | bc)"
        echo "tool_cpu_s $(echo "scale=2; ($l1 - $l0) / $tick" | bc)"
        echo "machine_busy_cpu_s $(echo "scale=2; ($m1 - $m0) / $tick" | bc)"
        # The server's threads by name (threads started or ended within the window left out).
        join <(sort "$data/threads-0") <(sort "$data/threads-1") 2> /dev/null \
            | awk -v tick="$tick" '{d[$2] += $5 - $3} END {for (n in d) printf "thread %s %.2f\n", n, d[n] / tick}' \
            | sort -k3 -nr
    } > "$out/$label.cpu"
else
    echo "the tool ended before the churn" > "$out/$label.cpu"
fi
wait $loader || echo "$label: the tool failed"
kill -TERM $server
wait $server || true
rm -rf "$data"
echo "$label: $report, $out/$label.cpu"
