# Shared by loadtest/soak.sh and loadtest/scale.sh (sourced, not run): start a `wkuser serve`
# on $data and time it to ready, read its /stats, stop it. Expects $wkuser, $data, $api, $ws,
# $out; SERVE adds flags to the server, WK_MANAGER_TOKEN is sent when set.

auth=()
if [ -n "${WK_MANAGER_TOKEN:-}" ]; then auth=(-H "token: $WK_MANAGER_TOKEN"); fi
server=
ready_s=

# start NAME: starts the server (its output in $out/NAME.log), waits for /readyz 200, and sets
# $server (its pid) and $ready_s (seconds from the start to the first 200 of /readyz, polled
# every 10 ms).
start() {
    local t0
    t0=$(date +%s%N)
    # shellcheck disable=SC2086 # the extra flags are words on purpose
    "$wkuser" serve --data-dir "$data" --api-addr "$api" --ws-addr "$ws" ${SERVE:-} > "$out/$1.log" 2>&1 &
    server=$!
    until curl -sf "${auth[@]}" "http://$api/readyz" > /dev/null 2>&1; do
        if ! kill -0 "$server" 2> /dev/null; then
            echo "the server stopped before it was ready; see $out/$1.log" >&2
            server=
            exit 1
        fi
        sleep 0.01
    done
    ready_s=$(awk -v t0="$t0" -v t1="$(date +%s%N)" 'BEGIN { printf "%.2f", (t1 - t0) / 1e9 }')
}

# stat_of NAME: one counter of /stats.
stat_of() {
    curl -sf "${auth[@]}" "http://$api/stats" | grep -o "\"$1\":[0-9]*" | cut -d: -f2
}

# rss_mib: the server's resident memory, in MiB.
rss_mib() {
    awk -v b="$(stat_of rss_bytes)" 'BEGIN { printf "%.1f", b / 1048576 }'
}

# stop: SIGTERM, and waits for the server to end.
stop() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2> /dev/null || true
        wait "$server" || true
        server=
    fi
}
