#!/usr/bin/env bash
# Samples the resident memory of every running `wkuser serve` whose command line contains
# PATTERN, every INTERVAL seconds, until stopped: one line per process per sample,
#   <seconds since this process was first seen> <pid> <binary> <VmRSS in MiB>
# A new pid (the next round of loadtest/alternate.sh) starts its own clock, so the lines of
# one server read as RSS over its own run. Reads /proc only; never signals anything.
#
#   scripts/sample-rss.sh '--api-addr 127.0.0.1:5701' 10 > /tmp/rss.txt &
#   loadtest/alternate.sh BEFORE AFTER 3 --users 5000 --duration 240s
set -euo pipefail
pattern=${1:?usage: sample-rss.sh PATTERN [INTERVAL_SECONDS]}
interval=${2:-10}
declare -A first_seen
while true; do
    now=$(date +%s)
    for pid in $(pgrep -f -- "serve .*$pattern" || true); do
        [ -r "/proc/$pid/status" ] || continue
        rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$rss_kib" ] || continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || echo '?')
        [ -n "${first_seen[$pid]:-}" ] || first_seen[$pid]=$now
        printf '%d %d %s %.1f\n' $((now - first_seen[$pid])) "$pid" "$exe" "$(echo "$rss_kib / 1024" | bc -l)"
    done
    sleep "$interval"
done
