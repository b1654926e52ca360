#!/usr/bin/env bash
# Issue 21's figures at scale, end to end, on a fresh data directory:
#  1. a `wkuser serve`; the load tool seeds KNOWN_USERS users with a token each (--seed-only)
#     and, with SESSIONS, opens and closes that many sessions of theirs (two events each:
#     SESSIONS=2000000 makes 5,000,000 events with a million users); it prints the seeding
#     rate, RSS per known user and the log's bytes per event;
#  2. the tool's usual run over the first --users of them (10,000 unless given: seeding is
#     skipped, they are there), which prints RSS with the sessions open (skip it with RUN=0);
#  3. the server restarted on the same data: start to ready, RSS once ready;
#  4. the view deleted and the server started again: start to ready while it rebuilds the view
#     from the log, RSS once ready.
#
#   loadtest/scale.sh [KNOWN_USERS] [LOADTEST_ARGS...]
#   e.g. SESSIONS=2000000 RUN=0 loadtest/scale.sh 1000000
#        loadtest/scale.sh 200000 --users 10000 --duration 20s
#
# WKUSER, LOADTEST, SERVE, OUT, API, WS as in loadtest/soak.sh (ports 5731/5732 here).
set -euo pipefail
known=${1:-1000000}
[ $# -gt 0 ] && shift
wkuser=${WKUSER:-./target/release/wkuser}
tool=${LOADTEST:-./target/release/wkuser-loadtest}
out=${OUT:-$(mktemp -d /tmp/scale-XXXX)}
api=${API:-127.0.0.1:5731} ws=${WS:-127.0.0.1:5732}
mkdir -p "$out"
data=$(mktemp -d /tmp/scale-data-XXXX)
# shellcheck source=loadtest/server.sh
. "$(dirname "$0")/server.sh"
trap 'stop; rm -rf "$data"' EXIT
ulimit -n "$(ulimit -Hn)"

start server
echo "scale.sh: a fresh server ready in $ready_s s"
"$tool" --api "$api" --ws "$ws" --known-users "$known" --seed-only --seed-sessions "${SESSIONS:-0}" --data-dir "$data" | tee "$out/seed.txt"
if [ "${RUN:-1}" != 0 ]; then
    "$tool" --api "$api" --ws "$ws" --known-users "$known" --data-dir "$data" "$@" | tee "$out/run.txt"
fi
users=$(stat_of known_users) events=$(stat_of last_seq)
stop

start restarted
first_ready=$ready_s
sleep 1
first_rss=$(rss_mib)
stop

rm -f "$data"/view.sqlite "$data"/view.sqlite-wal "$data"/view.sqlite-shm
start rebuilt
rebuild_ready=$ready_s
sleep 1
rebuild_rss=$(rss_mib)
stop

echo
echo "scale.sh: $users known users, $events events; on disk: $(du -sh "$data/log" | cut -f1) of log, $(du -shc "$data"/view.sqlite* | tail -1 | cut -f1) of view"
echo "scale.sh: restarted with the view up to date: ready in $first_ready s, RSS $first_rss MiB ($(awk -v m="$first_rss" -v u="$users" 'BEGIN { printf "%.0f", m * 1048576 / u }') B per known user)"
echo "scale.sh: restarted with the view deleted (rebuilt from the log): ready in $rebuild_ready s, RSS $rebuild_rss MiB"
echo "scale.sh: output and logs in $out (the rebuild's progress lines in rebuilt.log)"
