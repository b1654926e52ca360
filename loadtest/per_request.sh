#!/usr/bin/env bash
# What one `/user/onlinestatus` request costs the server and the ceiling, counted rather than
# timed: CPU time, context switches and system calls per answer, with no churn, while the load
# tool's clients ask onlinestatus of each in turn (the ceiling's first "onlinestatus alone",
# then the server's "with churn" phase at --churn-rate 0). Counts per answer move far less
# than rates on a shared machine (docs/performance.md, "The onlinestatus path's own cost").
#
#   loadtest/per_request.sh BINARY [SECONDS]
#   e.g. loadtest/per_request.sh ./target/release/wkuser 8
#
# Answers are counted by their `writev` (one each, on either side; the server's own
# `wkuser_http_requests_total` is printed beside, to check), and the load tool's CPU in the
# same windows is printed per answer too (its clients share the two cores). Needs `perf`.
# With ALLOC_EVENTS and CEILING_ALLOC_EVENTS (uprobes on each binary's allocator entry points,
# `perf probe -x BINARY --add GROUP:NAME=mi_malloc_aligned` and the like, and on hyper's
# `Server::encode`, once per answer), their counts for 4 s; with PERF_RECORD=PREFIX, a profile
# of each (`perf record -g`, PREFIX-server.data and PREFIX-ceiling.data); with TRACE=1,
# `perf trace -s` for 3 s into $OUT (it slows each side: its counts are per answer, not
# rates). API and WS (127.0.0.1:5713, :5714) are where the server listens.
set -euo pipefail
binary=$1 seconds=${2:-8}
tool=${LOADTEST:-./target/release/wkuser-loadtest}
api=${API:-127.0.0.1:5713} ws=${WS:-127.0.0.1:5714}
ulimit -n 20000
work=$(mktemp -d /tmp/per-request-XXXX)
wkuser=$binary data=$work/data out=$work
# shellcheck source=loadtest/server.sh
. "$(dirname "$0")/server.sh"
trap 'kill -TERM $tool_pid 2>/dev/null || true; stop; rm -rf "$work"' EXIT
start server
# Long enough for every step below on each side.
phase=$((seconds + 8))
[ -n "${ALLOC_EVENTS:-}${CEILING_ALLOC_EVENTS:-}" ] && phase=$((phase + 6))
[ -n "${PERF_RECORD:-}" ] && phase=$((phase + 12))
[ "${TRACE:-0}" = 1 ] && phase=$((phase + 5))
"$tool" --api $api --ws $ws --users 10000 --churn-rate 0 --duration "${phase}s" \
    --measure-time "${phase}s" > "$work/tool.log" 2>&1 &
tool_pid=$!
wait_for() {
    for _ in $(seq 1 600); do grep -q "$1" "$work/tool.log" && return 0; sleep 0.5; done
    echo "the tool never said: $1" >&2
    cat "$work/tool.log" >&2
    exit 1
}
requests_of() { curl -sf "http://$api/metrics" | awk '/^wkuser_http_requests_total\{.*onlinestatus.*status="200"/ {n += $NF} END {print n + 0}'; }
# One side's counts: $1 its name, $2 its pid, $3 the uprobes for it.
count() {
    local name=$1 pid=$2 probes=$3
    sleep 3
    local before after
    before=$(requests_of)
    # The answers are counted by their writes: one `writev` each, on either side.
    perf stat -e task-clock -p "$tool_pid" -o "$work/$name.tool" -- sleep "$seconds" &
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_writev \
        -p "$pid" -o "$work/$name.perf" -- sleep "$seconds"
    wait $!
    after=$(requests_of)
    echo "$name: the server's own count of the requests in the window: $((after - before))" >> "$work/counts"
    awk -F, -v n="$name" '/^#/ || NF < 3 {next} {e = $3; sub(/.*:/, "", e); print n, e, $1}' "$work/$name.perf" >> "$work/counts"
    awk -v n="$name" '/task-clock/ {gsub(",", "", $1); print n, "tool-task-clock", $1}' "$work/$name.tool" >> "$work/counts"
    if [ -n "$probes" ]; then
        perf stat -x, -e "$probes" -p "$pid" -o "$work/$name.alloc" -- sleep 4
        awk -F, -v n="$name" '/^#/ || NF < 3 {next} {e = $3; sub(/.*:/, "", e); print n, "probe", e, $1}' "$work/$name.alloc" >> "$work/counts"
    fi
    if [ -n "${PERF_RECORD:-}" ]; then
        perf record -F 999 -g -p "$pid" -o "$PERF_RECORD-$name.data" -- sleep 10 2> /dev/null
    fi
    if [ "${TRACE:-0}" = 1 ]; then
        perf trace -s -p "$pid" -o "$work/$name.trace" -- sleep 3 || true
        cp "$work/$name.trace" "${OUT:-/tmp}/per-request-$name.trace" 2> /dev/null || true
    fi
}
wait_for "ceiling:   opened"
ceiling=$(pgrep -P "$tool_pid" -f ' ceiling ' | head -1)
count ceiling "$ceiling" "${CEILING_ALLOC_EVENTS:-}"
wait_for "server:   the ceiling in the slices between"
count server "$server" "${ALLOC_EVENTS:-}"
# The figures needed are in; the ceilings' second run is not.
wait_for "server:   with churn at"
[ -n "${OUT:-}" ] && cp "$work/tool.log" "$OUT/per-request-tool.log"
ceiling_rate=$(sed -n 's/.* ceiling:   onlinestatus alone, [0-9]* clients, [0-9.]* s: \([0-9]*\)\/s.*/\1/p' "$work/tool.log" | head -1)
server_rate=$(sed -n 's/.* server:   with churn at 0\/s for [0-9.]* s: onlinestatus \([0-9]*\)\/s.*/\1/p' "$work/tool.log" | head -1)
echo "onlinestatus/s over the phase: ceiling $ceiling_rate, server $server_rate"
grep -E 'ceiling in the slices between' "$work/tool.log" || true
cat "$work/counts"
# Per answer: the perf stat window's counts per `writev`; the uprobes' own window's per
# `Server::encode` (the probes slow the process, so their window has a rate of its own).
awk '
    /own count/ {next}
    $2 == "probe" {p[$1 " " $3] = $4; if ($3 ~ /encode/) e[$1] = $4; next}
    $2 == "sys_enter_writev" {w[$1] = $3; next}
    {v[$1 " " $2] = $3}
    END {
        for (x in v) {
            split(x, q, " ")
            if (w[q[1]] == 0) continue
            scale = (q[2] ~ /task-clock/) ? 1000 : 1
            printf "%s: %s per answer %.3f%s\n", q[1], q[2], v[x] * scale / w[q[1]], (scale == 1000) ? " us" : ""
        }
        for (x in p) {
            split(x, q, " ")
            if (e[q[1]] > 0 && q[2] !~ /encode/) printf "%s: %s (uprobe) per answer %.2f\n", q[1], q[2], p[x] / e[q[1]]
        }
    }' "$work/counts" | sort
