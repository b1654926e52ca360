#!/usr/bin/env bash
# Runs schemathesis (property-based testing from the OpenAPI document) against a real server.
#
#   scripts/schemathesis.sh [SCHEMATHESIS_ARGS...]     e.g. scripts/schemathesis.sh --max-examples 50
#
# Installs schemathesis from PyPI into a virtualenv under target/ (once), builds the server,
# starts it on a scratch data directory with a manager token on loopback ports, runs every
# check schemathesis has against GET /openapi.json (sent as a Prometheus-style bearer token),
# then stops the server. Exits with schemathesis's status: 0 when no check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet schemathesis
fi
"$venv/bin/schemathesis" --version

cargo build --quiet --bin wkuser
token=schemathesis-$RANDOM$RANDOM
data=$(mktemp -d /tmp/wkuser-schemathesis-XXXX)
api=127.0.0.1:${WK_SCHEMATHESIS_PORT:-5931}
ws=127.0.0.1:$(( ${WK_SCHEMATHESIS_PORT:-5931} + 1 ))
./target/debug/wkuser serve --data-dir "$data/data" --api-addr "$api" --ws-addr "$ws" \
    --manager-token "$token" > "$data/server.log" 2>&1 &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap stop EXIT
for _ in $(seq 1 100); do
    curl -sf "http://$api/readyz" > /dev/null && break
    sleep 0.1
done

# Every check (schemathesis 4 runs them all by default), as scripts/schemathesis.toml sets them.
set +e
# Run from target/: schemathesis keeps a cache (.schemathesis/) in its working directory.
(cd target && "schemathesis-venv/bin/schemathesis" --config-file ../scripts/schemathesis.toml \
    run "http://$api/openapi.json" \
    --header "Authorization: Bearer $token" \
    --workers 2 \
    "$@")
status=$?
set -e
if grep -q "panicked" "$data/server.log"; then
    echo "the server panicked:" >&2
    grep -A5 panicked "$data/server.log" >&2
    status=1
fi
exit $status
