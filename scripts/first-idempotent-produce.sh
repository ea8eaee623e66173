#!/usr/bin/env bash
# How long the first idempotent produce to a partition takes after a broker restart, when the
# partition already holds about 2.5 GiB (the broker rebuilds its idempotent-producer state from
# the log's tail first). A plain produce after a restart is measured beside it.
#
# Usage: bash scripts/first-idempotent-produce.sh   (needs kcat and a release build:
#        cargo build --release -p spate). SPATE_BIN, DATA and PORT override the defaults.
# Writes about 2.5 GiB under DATA (default /tmp/spate-first-produce) and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SPATE_BIN:-target/release/spate}
data=${DATA:-/tmp/spate-first-produce}
addr=127.0.0.1:${PORT:-19092}
log=$(mktemp)
pid=

start() {
    setsid "$bin" serve --data-dir "$data" --listen "$addr" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 150); do
        grep -q "spate is ready" "$log" && return
        sleep 0.2
    done
    echo "the broker did not start:" >&2
    cat "$log" >&2
    exit 1
}
stop() {
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    pid=
}
trap 'stop; rm -rf "$data" "$log"' EXIT

command -v kcat >/dev/null || { echo "kcat is needed (Debian package kcat)" >&2; exit 1; }
rm -rf "$data"
start
"$bin" topic create t --partitions 1 -b "$addr"
line=$(head -c 10000 /dev/zero | tr '\0' x)
{ yes "$line" || true; } | head -n 260000 | "$bin" produce t -b "$addr" --acks 1 --batch 100
stop
for kind in plain idempotent plain idempotent; do
    start
    idem=false
    [ "$kind" = idempotent ] && idem=true
    s=$(date +%s%N)
    echo probe | kcat -P -b "$addr" -t t -p 0 -X enable.idempotence=$idem \
        -X request.required.acks=all
    e=$(date +%s%N)
    echo "$kind: first produce after the restart took $(( (e - s) / 1000000 )) ms"
    stop
done
