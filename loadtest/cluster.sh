#!/usr/bin/env bash
# Three `wkuser serve` nodes on one fresh PostgreSQL database, loaded by the tool spread over
# all three; with two builds, alternated round by round so that the machine's drift (and other
# work on it) weighs on both alike. Each run gets a database of its own, dropped afterwards;
# each report goes to $OUT/<label>-<round>.txt, ending with what the run cost the database
# (batches, events, transactions, and PostgreSQL's CPU when the server is on this machine),
# each node's log beside it.
#
#   loadtest/cluster.sh BINARY [ROUNDS] [LOADTEST_ARGS...]                  one build
#   loadtest/cluster.sh BEFORE AFTER [ROUNDS] [LOADTEST_ARGS...]           two builds, alternated
#   e.g. loadtest/cluster.sh /tmp/wkuser-old ./target/release/wkuser 3 --users 3000 --duration 20s
#
# PG (default postgres://postgres@127.0.0.1:5432) is the server; NODES (default 3) the nodes.
set -euo pipefail
builds=("$1")
shift
if [ $# -gt 0 ] && [ -x "$1" ] && [[ "$1" == */* ]]; then
    builds+=("$1")
    shift
fi
rounds=${1:-1}
[ $# -gt 0 ] && shift
tool=${LOADTEST:-./target/release/wkuser-loadtest}
out=${OUT:-$(mktemp -d /tmp/cluster-XXXX)}
pg=${PG:-postgres://postgres@127.0.0.1:5432}
nodes=${NODES:-3}
ulimit -n "$(ulimit -Hn)"
# The CPU PostgreSQL spent on a run: its backends' times, added to the postmaster's children's
# when they exit (every backend of the run's database does by the end). Only for a server on
# this machine whose data directory this user can read; empty otherwise.
pg_cpu() {
    local dir pid
    dir=$(psql "$pg/postgres" -qAtc "SHOW data_directory" 2> /dev/null) || return 0
    pid=$(head -1 "$dir/postmaster.pid" 2> /dev/null) || return 0
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2> /dev/null || true
}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    for b in "${!builds[@]}"; do
        binary=${builds[$b]}
        label=$([ "${#builds[@]}" -eq 1 ] && echo run || { [ "$b" -eq 0 ] && echo before || echo after; })
        db=wk_cluster_$$_${round}_$b
        psql "$pg/postgres" -qAtc "CREATE DATABASE $db" > /dev/null
        cpu_before=$(pg_cpu)
        pids=() apis=() wss=() datas=()
        for i in $(seq 1 "$nodes"); do
            api=127.0.0.1:63${i}1 ws=127.0.0.1:63${i}2
            apis+=("$api") wss+=("$ws")
            data=$(mktemp -d /tmp/cluster-data-XXXX)
            datas+=("$data")
            "$binary" serve --database-url "$pg/$db" --node-id "$i" --data-dir "$data" \
                --api-addr "$api" --ws-addr "$ws" > "$out/$label-$round-node$i.log" 2>&1 &
            pids+=($!)
            # One at a time: every node migrates the schema at its start.
            for _ in $(seq 1 100); do curl -sf "http://$api/readyz" > /dev/null && break; sleep 0.2; done
        done
        api_list=$(IFS=,; echo "${apis[*]}") ws_list=$(IFS=,; echo "${wss[*]}")
        "$tool" --api "$api_list" --ws "$ws_list" "$@" > "$out/$label-$round.txt" 2>&1 \
            || echo "round $round $label: the tool failed (see $out/$label-$round.txt)"
        for pid in "${pids[@]}"; do kill -TERM "$pid"; done
        for pid in "${pids[@]}"; do wait "$pid" || true; done
        # What the run cost the database: the log's batches and events, and its transactions.
        psql "$pg/$db" -qAtc "SELECT 'database: ' || (SELECT count(*) FROM log_batches) || ' batches, ' \
            || (SELECT count(*) FROM log_events) || ' events, ' || xact_commit || ' transactions' \
            FROM pg_stat_database WHERE datname = current_database()" >> "$out/$label-$round.txt"
        psql "$pg/postgres" -qAtc "DROP DATABASE $db" > /dev/null
        sleep 1
        cpu_after=$(pg_cpu)
        if [ -n "$cpu_before" ] && [ -n "$cpu_after" ]; then
            awk -v a="$cpu_after" -v b="$cpu_before" -v t="$(getconf CLK_TCK)" \
                'BEGIN { printf "postgresql cpu: %.2f s (every backend of the server meanwhile)\n", (a - b) / t }' \
                >> "$out/$label-$round.txt"
        fi
        rm -rf "${datas[@]}"
        echo "round $round $label ($binary): $out/$label-$round.txt"
    done
done
