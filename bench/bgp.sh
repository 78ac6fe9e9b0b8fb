#!/usr/bin/env bash
# The BGP blackhole feed at size: N listed addresses (default 100,000) written straight into the
# database, gobgpd started on loopback as the receiving router, then the node started and timed
# until `gobgp global rib summary` counts every route. Prints the figure; loopback only, bounded.
# Usage: bench/bgp.sh [N] [RUNS]   (SENTRYPEER_BIN=path: time that binary instead of building one)
# Needs: sqlite3 and gobgpd (apt-get install -y sqlite3 gobgpd).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
RUNS=${2:-3}

WORK=$(mktemp -d)
NODE_PID=
GOBGP_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; fi
  if [ -n "$GOBGP_PID" ]; then kill "$GOBGP_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "${SENTRYPEER_BIN:-}" ]; then
  cargo build --release --bins -q
  SENTRYPEER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer"
fi
# A copy: a shared target directory may be rebuilt from another checkout meanwhile.
cp "$SENTRYPEER_BIN" "$WORK/sentrypeer"
BIN=$WORK/sentrypeer
"$BIN" --help | grep -q -- --bgp-neighbor || { echo "the built binary has no BGP feed"; exit 1; }
DB=$WORK/sentrypeer.db
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

BGP_PORT=$(free_port 127.0.0.3)
API_PORT=$(free_port 127.0.0.1)
cat >"$WORK/gobgpd.toml" <<EOF
[global.config]
  as = 65001
  router-id = "192.0.2.3"
  port = $BGP_PORT
  local-address-list = ["127.0.0.3"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.0.1"
    peer-as = 65000
  [neighbors.transport.config]
    passive-mode = true
    local-address = "127.0.0.3"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
EOF
gobgp() { command gobgp -u 127.0.0.1 -p "$API_PORT" "$@"; }
start_gobgpd() {
  gobgpd -f "$WORK/gobgpd.toml" --api-hosts "127.0.0.1:$API_PORT" --pprof-disable >"$WORK/gobgpd.log" 2>&1 &
  GOBGP_PID=$!
  for _ in $(seq 1 400); do gobgp neighbor >/dev/null 2>&1 && return; sleep 0.05; done
  cat "$WORK/gobgpd.log"; exit 1
}
stop_gobgpd() { kill -TERM "$GOBGP_PID"; wait "$GOBGP_PID" 2>/dev/null || true; GOBGP_PID=; }
start_node() {
  (cd "$WORK" && exec "$BIN" --udp-listen 127.0.0.1:0 -N --tcp-listen 127.0.0.1:0 -f "$DB" "$@" 2>node.log) &
  NODE_PID=$!
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
routes() { gobgp global rib summary -a ipv4 2>/dev/null | sed -n 's/.*Destination: \([0-9]*\).*/\1/p'; }

# A first start makes the database and records the rule, so the seeded rows need no re-evaluation.
start_node; for _ in $(seq 1 400); do grep -q "Ready." "$WORK/node.log" 2>/dev/null && break; sleep 0.05; done; stop_node
sqlite3 -cmd ".timeout 10000" "$DB" <<SQL
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $N - 1),
  t(now) AS (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count, first_seen_ms,
  last_seen_ms, local_last_ms, announced_until_ms, change_seq)
SELECT printf('%d.%d.%d.%d', 100 + (i >> 22), 64 + ((i >> 16) & 63), (i >> 8) & 255, i & 255),
  strftime('%Y-%m-%d %H:%M:%f000000', (now - i % 3600000) / 1000.0, 'unixepoch'), 1,
  now - i % 3600000 - 60000, now - i % 3600000, now - i % 3600000,
  now - i % 3600000 + 7 * 86400000, i + 1
FROM n, t;
UPDATE sentrypeer_actor_state SET change_seq = $N WHERE id = 1;
COMMIT;
SQL
echo "seeded $N listed addresses"

FEED=(--bgp-neighbor "127.0.0.3:$BGP_PORT" --bgp-local-as 65000 --bgp-peer-as 65001
  --bgp-next-hop 192.0.2.1 --bgp-max-routes "$N")
echo "node start to all $N routes in gobgpd's RIB (gobgp global rib summary), fresh gobgpd each run:"
for r in $(seq 1 "$RUNS"); do
  start_gobgpd
  t0=$(now)
  start_node "${FEED[@]}"
  got=0
  for _ in $(seq 1 1200); do
    got=$(routes); got=${got:-0}
    [ "$got" -ge "$N" ] && break
    sleep 0.05
  done
  took=$(since "$t0")
  [ "$got" -ge "$N" ] || { echo "  run $r: only $got routes after ${took} s"; tail -5 "$WORK/node.log"; exit 1; }
  established=$(grep "BGP session established" "$WORK/node.log" | head -1 | cut -c1-27)
  up=$(awk -v a="$t0" -v b="$(date -d "$established" +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
  echo "  run $r: $got routes in ${took} s (session established ${up} s after the start)"
  # With SENTRYPEER_LOG=sentrypeer=debug: when the node had written the whole table.
  sent=$(grep "BGP routes sent" "$WORK/node.log" | grep -v "announced=0 " | head -1 | cut -c1-27)
  [ -z "$sent" ] || echo "    table written $(awk -v a="$t0" -v b="$(date -d "$sent" +%s.%N)" 'BEGIN {printf "%.2f", b - a}') s after the start"
  stop_node
  stop_gobgpd
done
