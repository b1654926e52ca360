#!/usr/bin/env bash
# Bytes per event on disk, and the SQL view's bytes per session, after one load-tool run
# (docs/performance.md, "Bytes per event"):
#   1. starts SERVER_BINARY (`wkuser`, release) on a fresh data directory,
#   2. runs the load tool against it with LOADTEST_ARGS,
#   3. stops it (SIGTERM) and reads the stopped data directory: the log's split
#      (examples/log_bytes) and the view's tables (SQLite's dbstat),
#   4. starts and stops it once more and reads the log again (sled settles its files at a start).
#
#   cargo build --release --bins --examples
#   scripts/bytes-per-event.sh ./target/release/wkuser --users 10000 --duration 20s --measure-time 1s
#
# Environment: LOADTEST (default ./target/release/wkuser-loadtest), LOG_BYTES (default
# ./target/release/examples/log_bytes), API / WS (default 127.0.0.1:15001 / 127.0.0.1:15200),
# KEEP=1 to keep the data directory. Needs sqlite3. Stops the one server it started, by pid.
set -euo pipefail
server=${1:?usage: bytes-per-event.sh SERVER_BINARY [LOADTEST_ARGS...]}
shift
loadtest=${LOADTEST:-./target/release/wkuser-loadtest}
log_bytes=${LOG_BYTES:-./target/release/examples/log_bytes}
api=${API:-127.0.0.1:15001}
ws=${WS:-127.0.0.1:15200}
data=$(mktemp -d /tmp/wkuser-bytes.XXXXXX)
pid=

stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
cleanup() {
    stop
    if [ "${KEEP:-0}" = 1 ]; then echo "data directory kept: $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT

start() {
    "$server" serve --data-dir "$data" --api-addr "$api" --ws-addr "$ws" >>"$data.server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do
        if curl -sf "http://$api/stats" >/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "the server did not answer on $api; its log:" >&2
    cat "$data.server.log" >&2
    exit 1
}

ulimit -n "$(ulimit -Hn)"
start
"$loadtest" --api "$api" --ws "$ws" "$@" >"$data.loadtest.txt"
tail -n 3 "$data.loadtest.txt"
stop

echo "== after the run ($server $*)"
"$log_bytes" "$data"
view="$data/view.sqlite"
sessions=$(sqlite3 "$view" 'SELECT count(*) FROM device_sessions')
sqlite3 "$view" "SELECT printf('view: %d sessions; file %d B, %.1f B/session; device_sessions and its indexes %d B, %.1f B/session', $sessions, (SELECT page_count * page_size FROM pragma_page_count, pragma_page_size), (SELECT page_count * page_size FROM pragma_page_count, pragma_page_size) * 1.0 / $sessions, sum(pgsize), sum(pgsize) * 1.0 / $sessions) FROM dbstat WHERE name IN ('device_sessions', 'device_sessions_by_uid', 'device_sessions_open', 'sqlite_autoindex_device_sessions_1')"

start
stop
echo "== after one more start and stop"
"$log_bytes" "$data" | head -4
rm -f "$data.server.log" "$data.loadtest.txt"
