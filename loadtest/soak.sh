#!/usr/bin/env bash
# Issue 22's soak end to end: a `wkuser serve` on a fresh data directory; the load tool's soak
# (--soak DURATION, by default 30m with 10,000 sessions held and 1,000 connects/s), which
# closes every session at its end and prints the server's RSS then; the server restarted on
# the same data, and its RSS once ready beside the RSS after the soak (issue 22: within 20%).
#
#   loadtest/soak.sh [DURATION] [LOADTEST_ARGS...]
#   e.g. loadtest/soak.sh 30m
#        loadtest/soak.sh 3m --users 5000 --known-users 100000
#
# WKUSER (default ./target/release/wkuser) and LOADTEST (./target/release/wkuser-loadtest) name
# the binaries; SERVE adds flags to the server (e.g. SERVE="--log-cache-mb 16"); OUT (default
# a new /tmp/soak-XXXX) receives the tool's output (soak.txt) and the servers' logs; API and
# WS (127.0.0.1:5721, 127.0.0.1:5722) are where the server listens.
set -euo pipefail
duration=${1:-30m}
[ $# -gt 0 ] && shift
wkuser=${WKUSER:-./target/release/wkuser}
tool=${LOADTEST:-./target/release/wkuser-loadtest}
out=${OUT:-$(mktemp -d /tmp/soak-XXXX)}
api=${API:-127.0.0.1:5721} ws=${WS:-127.0.0.1:5722}
mkdir -p "$out"
data=$(mktemp -d /tmp/soak-data-XXXX)
# shellcheck source=loadtest/server.sh
. "$(dirname "$0")/server.sh"
trap 'stop; rm -rf "$data"' EXIT
ulimit -n "$(ulimit -Hn)"

start server
echo "soak.sh: a fresh server ready in $ready_s s ($out/server.log)"
"$tool" --api "$api" --ws "$ws" --soak "$duration" --data-dir "$data" "$@" | tee "$out/soak.txt"
closed=$(rss_mib) users=$(stat_of known_users) events=$(stat_of last_seq)
stop
start restarted
# The same pause as the tool's before its reading.
sleep 1
restarted=$(rss_mib)
stop
echo
echo "soak.sh: RSS after every session closed: $closed MiB; the server restarted on the same data ($users known users, $events events): $restarted MiB, ready in $ready_s s"
awk -v a="$closed" -v r="$restarted" 'BEGIN {
    d = a / r - 1
    printf "soak.sh: after the soak against restarted: %+.1f%%; within 20%% (issue 22): %s\n", d * 100, (d <= 0.2 ? "met" : "missed")
}'
echo "soak.sh: output and logs in $out"
