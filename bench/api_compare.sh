#!/usr/bin/env bash
# Compares the API's lookup throughput of two sentrypeer binaries, alternating runs on one
# machine so that load affects both alike: bench/api_compare.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Each run: a fresh node on loopback, wrk -t1 -c8 -d8s against /numbers/{n}. Needs wrk.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") rounds=${3:-3}
trap 'jobs -p | xargs -r kill 2>/dev/null' EXIT
run() {
  local bin=$1 dir pid api
  dir=$(mktemp -d)
  (cd "$dir" && exec "$bin" --udp-listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 -N -a --api-listen 127.0.0.1:0 2>node.log) &
  pid=$!
  for _ in $(seq 1 200); do grep -q "Ready." "$dir/node.log" 2>/dev/null && break; sleep 0.05; done
  api=$(grep "transport=API" "$dir/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
  wrk -t1 -c8 -d8s --latency "http://$api/numbers/5551234" |
    awk -v b="$3" '/Requests\/sec/ {r=$2} /99%/ {p=$2} END {printf "%-4s %10s req/s  p99 %s\n", b, r, p}'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}
for _ in $(seq 1 "$rounds"); do run "$old" x old; run "$new" x new; done
