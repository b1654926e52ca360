#!/usr/bin/env bash
# Where a running server's threads wait, from the kernel's scheduler events: for each of its
# threads (by name), how often it woke, how long it then waited for a CPU (the scheduling
# delay), how long it slept in an uninterruptible wait (D: the disk, for the log writer's sync)
# and how long it ran. Meant for the middle of a soak (docs/performance.md, "Where the soak's
# stalls come from"): every connect and close waits for the log writer's batch, so the writer's
# long waits are the tails' stalls.
#
#   loadtest/stalls.sh PID [SECONDS]
#   e.g. loadtest/soak.sh 6m &   then, in minute 3:
#        loadtest/stalls.sh "$(pgrep -f 'wkuser serve')" 20
#
# Needs perf and the right to trace the scheduler (root, or kernel.perf_event_paranoid <= -1).
# perf records every context switch of the machine (about 10 MB a second under the soak) into
# $OUT/sched.data (default a new /tmp/stalls-XXXX), and its own cost weighs on what it measures:
# a figure from this run says where the time goes, not what the tails are without it.
set -euo pipefail
pid=$1 seconds=${2:-20}
out=${OUT:-$(mktemp -d /tmp/stalls-XXXX)}
mkdir -p "$out"
kill -0 "$pid"
perf sched record -k mono -o "$out/sched.data" -- sleep "$seconds" > "$out/perf.log" 2>&1
perf sched timehist --state -i "$out/sched.data" 2> /dev/null > "$out/timehist.txt"
# timehist's columns: time, cpu, task as name[tid/pid] (a name may hold spaces), the wait since
# the task last left the CPU, the scheduling delay (from its wake-up to its run), the run time,
# and the state it left the CPU in. The time off the CPU before a wake-up counts as a D wait when
# the task had left the CPU in state D.
{
    printf "%-18s %8s | %-39s | %-36s | %s\n" thread wake-ups "waiting for a CPU after a wake-up (ms)" "asleep in D (ms)" "running (ms)"
    printf "%-18s %8s | %9s %7s %7s %9s | %9s %7s %7s %7s | %s\n" "" "" total ">5" ">20" longest total ">5" ">20" longest total
    awk -v pid="$pid" '
    match($0, /\[[0-9]+\/[0-9]+\]/) {
        task = substr($0, RSTART + 1, RLENGTH - 2)
        split(task, ids, "/")
        if (ids[2] != pid) next
        name = substr($0, 1, RSTART - 1)
        sub(/^ *[0-9.]+ +\[[0-9]+\] +/, "", name)
        nf = split(substr($0, RSTART + RLENGTH), f, " ")
        wait = f[1]; delay = f[2]; run = f[3]; state = (nf >= 4 ? f[4] : "")
        tid = ids[1]
        n[name]++; runs[name] += run
        delays[name] += delay
        if (delay > 5) d5[name]++
        if (delay > 20) d20[name]++
        if (delay > dmax[name]) dmax[name] = delay
        if (left[tid] == "D") {
            off = wait - delay
            io[name] += off
            if (off > 5) io5[name]++
            if (off > 20) io20[name]++
            if (off > iomax[name]) iomax[name] = off
        }
        left[tid] = state
    }
    END {
        for (k in n)
            printf "%-18s %8d | %9.0f %7d %7d %9.1f | %9.0f %7d %7d %7.1f | %.0f\n", k, n[k], delays[k], d5[k], d20[k], dmax[k], io[k], io5[k], io20[k], iomax[k], runs[k]
    }
' "$out/timehist.txt" | sort -t'|' -k2 -rn
} | tee "$out/stalls.txt"
echo "stalls.sh: $seconds s of $pid; perf data and timehist in $out"
