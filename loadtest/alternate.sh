#!/usr/bin/env bash
# Compares two builds of the server under the same load tool, alternating them round by round
# so that the machine's drift weighs on both alike. Each run gets a fresh data directory; each
# report is written to $OUT/<label>-<round>.txt. API and WS (127.0.0.1:5701, :5702) are where the
# servers listen.
#
#   loadtest/alternate.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [LOADTEST_ARGS...]
#   e.g. loadtest/alternate.sh /tmp/wkuser-old ./target/release/wkuser 3 --users 10000 --duration 20s
# One build under two settings: the same binary twice, with extra flags for one side's server
# (BEFORE_SERVE, AFTER_SERVE) and load tool (BEFORE_TOOL, AFTER_TOOL), e.g. the webhook:
#   AFTER_SERVE="--webhook-url http://127.0.0.1:5703/hook" AFTER_TOOL="--webhook-sink 127.0.0.1:5703" \
#   loadtest/alternate.sh ./target/release/wkuser ./target/release/wkuser 3 --users 5000
# A third arm after those two in each round, with THIRD=BINARY (and THIRD_SERVE, THIRD_TOOL),
# e.g. a build before, the build after, and the build after with the webhook on:
#   THIRD=./target/release/wkuser THIRD_SERVE="--webhook-url http://127.0.0.1:5703/hook" \
#   THIRD_TOOL="--webhook-sink 127.0.0.1:5703" loadtest/alternate.sh OLD ./target/release/wkuser 3
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
tool=${LOADTEST:-./target/release/wkuser-loadtest}
out=${OUT:-$(mktemp -d /tmp/alternate-XXXX)}
api=${API:-127.0.0.1:5701} ws=${WS:-127.0.0.1:5702}
ulimit -n 20000
for round in $(seq 1 "$rounds"); do
    for label in before after ${THIRD:+third}; do
        binary=$before serve_flags=${BEFORE_SERVE:-} tool_flags=${BEFORE_TOOL:-}
        if [ "$label" = after ]; then
            binary=$after serve_flags=${AFTER_SERVE:-} tool_flags=${AFTER_TOOL:-}
        elif [ "$label" = third ]; then
            binary=$THIRD serve_flags=${THIRD_SERVE:-} tool_flags=${THIRD_TOOL:-}
        fi
        data=$(mktemp -d /tmp/alternate-data-XXXX)
        # shellcheck disable=SC2086 # the extra flags are words on purpose
        "$binary" serve --data-dir "$data/data" --api-addr $api --ws-addr $ws $serve_flags > "$data/server.log" 2>&1 &
        server=$!
        for _ in $(seq 1 50); do curl -sf "http://$api/readyz" > /dev/null && break; sleep 0.2; done
        # shellcheck disable=SC2086
        "$tool" --api $api --ws $ws $tool_flags "$@" > "$out/$label-$round.txt" 2>&1 || echo "round $round $label: the tool failed"
        kill -TERM $server
        wait $server || true
        rm -rf "$data"
        echo "round $round $label: $out/$label-$round.txt"
    done
done
