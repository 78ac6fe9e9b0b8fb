#!/usr/bin/env bash
# The bad-actor set's exports at size: N listed addresses (default 1,000,000) written straight into
# the database, then `sentrypeer export --format nft` and `GET /blocklist/ip-addresses?format=plain`
# timed, with the extra peak memory each costs. Prints the figures; loopback only, bounded.
# Usage: bench/blocklist.sh [N] [RUNS]
# Needs: sqlite3, curl, GNU time (apt-get install -y sqlite3 curl time); nft and unshare for the
# optional last figure (nft loading the export in a private network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
RUNS=${2:-3}

cargo build --release --bins -q
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer"
WORK=$(mktemp -d)
NODE_PID=
trap '[ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
DB=$WORK/sentrypeer.db
RULE=(--actor-ttl 7d)

start_node() {
  (cd "$WORK" && exec "$BIN" --udp-listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 -N \
    --api-listen 127.0.0.1:0 -f "$DB" "${RULE[@]}" 2>node.log) &
  NODE_PID=$!
  for _ in $(seq 1 1200); do grep -q "Ready." "$WORK/node.log" 2>/dev/null && break; sleep 0.05; done
  grep -q "Ready." "$WORK/node.log" || { cat "$WORK/node.log"; exit 1; }
  API=$(grep "transport=API" "$WORK/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# `/usr/bin/time -v` figures: wall seconds and peak RSS (KiB) of a command.
timed() {
  /usr/bin/time -v -o "$WORK/time" "$@"
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$WORK/time")
  peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time")
}

# A first start makes the database and records the rule, so the seeded rows need no re-evaluation.
start_node; stop_node
# An empty export: the command's own footprint, what the export's extra memory is measured from.
timed "$BIN" -f "$DB" "${RULE[@]}" export --format nft >/dev/null 2>&1
empty_peak=$peak

t0=$(date +%s.%N)
sqlite3 -cmd ".timeout 10000" "$DB" <<SQL
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $N - 1),
  t(now) AS (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count, first_seen_ms,
  last_seen_ms, local_last_ms, announced_until_ms, change_seq)
SELECT printf('%d.%d.%d.%d', 100 + (i >> 22), 64 + ((i >> 16) & 63), (i >> 8) & 255, i & 255),
  strftime('%Y-%m-%d %H:%M:%f000000', (now - i % 3600000) / 1000.0, 'unixepoch'), 1 + i % 7,
  now - i % 3600000 - 60000, now - i % 3600000, now - i % 3600000,
  now - i % 3600000 + 7 * 86400000, i + 1
FROM n, t;
UPDATE sentrypeer_actor_state SET change_seq = $N WHERE id = 1;
COMMIT;
SQL
echo "seeded $N listed addresses in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s; database $(( $(stat -c %s "$DB") / 1048576 )) MiB"

start_node
sleep 1
echo "node: RSS $(mib "$(status_kib "$NODE_PID" VmRSS)") MiB after start (peak so far $(mib "$(status_kib "$NODE_PID" VmHWM)") MiB)"

echo
echo "sentrypeer export --format nft (${RULE[*]}, beside the running node; extra = peak RSS less an empty export's $(mib "$empty_peak") MiB):"
for r in $(seq 1 "$RUNS"); do
  timed "$BIN" -f "$DB" "${RULE[@]}" export --format nft >"$WORK/out.nft" 2>"$WORK/cursor"
  elements=$(grep -o ' timeout [0-9]*s' "$WORK/out.nft" | wc -l)
  echo "  run $r: ${wall} s, peak RSS $(mib "$peak") MiB (+$(mib $((peak - empty_peak))) MiB), $elements elements, $(( $(stat -c %s "$WORK/out.nft") / 1048576 )) MiB, $(cat "$WORK/cursor")"
done

echo
echo "GET /blocklist/ip-addresses?format=plain (curl; extra = the node's VmHWM after less its VmRSS before, the peak reset first):"
for r in $(seq 1 "$RUNS"); do
  # Writing 5 to clear_refs resets VmHWM to the current RSS, so the peak is this request's.
  echo 5 >/proc/"$NODE_PID"/clear_refs 2>/dev/null || echo "  (cannot reset the peak: it may predate the request)"
  before=$(status_kib "$NODE_PID" VmRSS)
  t=$(curl -s -o "$WORK/out.txt" -w '%{time_starttransfer} %{time_total}' "http://$API/blocklist/ip-addresses?format=plain")
  hwm=$(status_kib "$NODE_PID" VmHWM)
  read -r ttfb total <<<"$t"
  echo "  run $r: first byte $(awk -v t="$ttfb" 'BEGIN {printf "%.0f", t * 1000}') ms, complete ${total} s, node RSS $(mib "$before") -> peak $(mib "$hwm") MiB (+$(mib $((hwm - before))) MiB), $(wc -l <"$WORK/out.txt") lines"
done
stop_node

if command -v nft >/dev/null && unshare -n true 2>/dev/null; then
  echo
  timed unshare -n nft -f "$WORK/out.nft"
  echo "nft -f of that export in a private network namespace: ${wall} s, peak RSS $(mib "$peak") MiB"
fi
