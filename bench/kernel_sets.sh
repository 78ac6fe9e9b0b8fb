#!/usr/bin/env bash
# Prints the kernel-set figures (--nftables, --ipset), all inside network namespaces this script
# creates and deletes: the host's own ruleset is never touched. Needs root, iproute2, nftables,
# ipset, iptables, curl and python3 (apt-get install -y iproute2 nftables ipset iptables curl).
#
#   1. the tools alone: 100,000 addresses loaded into an empty set by one `nft -f` and one
#      `ipset restore`, and the cost of one small batch (100 addresses) against that set;
#   2. the node: a database listing 100,000 addresses, the node started with --nftables
#      (then --ipset): how long until the kernel holds them all (the startup reconcile: store
#      read and load), and that reconcile's own duration;
#   3. sustained: 19,000 probes/s from 64 allowlisted sources plus 1,000 probes/s from a new
#      address each (20,000 probes/s in all, 1,000 new addresses/s) for SECS seconds: the new
#      addresses in the kernel at the end, the longest capture-to-kernel delay, batches, and
#      the probes recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-20}
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bins -q
BIN=$target/release/sentrypeer
GEN=$target/release/sentrypeer-loadgen
WORK=$(mktemp -d)
NS=spb$$
N=$NS-n; A=$NS-a
NODE_PID=
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  ip netns del "$N" 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

in_n() { ip netns exec "$N" "$@"; }
in_a() { ip netns exec "$A" "$@"; }
now_ms() { date +%s%3N; }

ip netns add "$N"; ip netns add "$A"
ip -n "$N" link set lo up; ip -n "$A" link set lo up
ip -n "$N" link add sp0 type veth peer name sp1 netns "$A"
ip -n "$N" addr add 198.51.100.1/24 dev sp0; ip -n "$N" link set sp0 up
ip -n "$A" addr add 198.51.100.2/24 dev sp1; ip -n "$A" link set sp1 up
# The attacker may send from any 10.0.0.0/8 address; the node routes its replies back.
ip -n "$A" route add local 10.0.0.0/8 dev lo
ip -n "$N" route add 10.0.0.0/8 via 198.51.100.2

# --- 1. The tools alone.
python3 - "$WORK" <<'EOF'
import sys
w = sys.argv[1]
ips = [f"100.64.{(i >> 8) & 255}.{i & 255}" if i < 65536 else f"100.65.{(i >> 8) & 255}.{i & 255}" for i in range(100000)]
with open(f"{w}/load.nft", "w") as f:
    f.write("add table inet spbench\nadd set inet spbench s { type ipv4_addr; flags timeout; }\n")
    for j in range(0, len(ips), 512):
        f.write("add element inet spbench s { " + ", ".join(f"{ip} timeout 3600000ms" for ip in ips[j:j+512]) + " }\n")
with open(f"{w}/batch.nft", "w") as f:
    f.write("add element inet spbench s { " + ", ".join(f"10.9.0.{i} timeout 3600000ms" for i in range(100)) + " }\n")
with open(f"{w}/load.ipset", "w") as f:
    f.write("create spbench hash:ip family inet timeout 0 maxelem 4194304\n")
    f.writelines(f"add spbench {ip} timeout 3600\n" for ip in ips)
with open(f"{w}/batch.ipset", "w") as f:
    f.writelines(f"add spbench 10.9.0.{i} timeout 3600\n" for i in range(100))
EOF
t=$(now_ms); in_n nft -f "$WORK/load.nft"; nft_load=$(( $(now_ms) - t ))
t=$(now_ms); for _ in $(seq 50); do in_n nft -f "$WORK/batch.nft"; done; nft_batch=$(( ($(now_ms) - t) / 50 ))
t=$(now_ms); in_n ipset restore -exist < "$WORK/load.ipset"; ipset_load=$(( $(now_ms) - t ))
t=$(now_ms); for _ in $(seq 50); do in_n ipset restore -exist < "$WORK/batch.ipset"; done; ipset_batch=$(( ($(now_ms) - t) / 50 ))
in_n nft delete table inet spbench; in_n ipset destroy spbench

# start_node DIR ARGS...: the node inside the node namespace; sets NODE_PID and API.
start_node() {
  local dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && exec ip netns exec "$N" "$BIN" -f sentrypeer.db --udp-listen 198.51.100.1:5060 \
     --tcp-listen 198.51.100.1:5060 -N --api-listen 127.0.0.1:0 "$@" 2>node.log) &
  NODE_PID=$!
  for _ in $(seq 1 600); do grep -q "Ready." "$dir/node.log" 2>/dev/null && break; sleep 0.05; done
  API=$(grep "transport=API" "$dir/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
# health PYTHON-EXPRESSION-ON-h: a value from /health-check.
health() { in_n curl -s "http://$API/health-check" | python3 -c "import json,sys; h=json.load(sys.stdin); print($1)"; }

# --- 2. The node's startup load of 100,000 listed addresses.
seed=$WORK/seed
mkdir -p "$seed"
"$GEN" seed-db --db "$seed/sentrypeer.db" --events 100000 --numbers 1000 --addresses 100000 >/dev/null
declare -A LOAD RECON
for kind in nftables ipset; do
  d=$WORK/load-$kind; mkdir -p "$d"; cp "$seed"/sentrypeer.db* "$d/"
  if [ $kind = nftables ]; then args=(--nftables); else args=(--ipset spbench); fi
  t=$(now_ms)
  start_node "$d" "${args[@]}"
  for _ in $(seq 1 400); do
    [ "$(health "h['kernel_sets']['$kind']['elements']")" -ge 100000 ] 2>/dev/null && break; sleep 0.02
  done
  LOAD[$kind]=$(( $(now_ms) - t ))
  RECON[$kind]=$(health "h['kernel_sets']['$kind']['last_reconcile_duration_ms']")
  if [ $kind = nftables ]; then
    inkernel=$(in_n nft list set inet sentrypeer bad_actors_v4 | grep -o 'expires' | wc -l)
  else
    inkernel=$(in_n ipset list spbench -t | awk '/Number of entries/ {print $4}')
  fi
  echo "  $kind: $inkernel addresses in the kernel after the startup load" >&2
  stop_node
  if [ $kind = nftables ]; then in_n "$BIN" nftables flush >/dev/null; else in_n ipset destroy spbench; in_n ipset destroy spbench6; fi
done

# --- 3. Sustained: 20,000 probes/s, 1,000 of them from new addresses.
declare -A NEW DELAY BATCHES REC RATE FAIL
SECS=$(( SECS / 5 * 5 )); new=$((1000 * SECS))
for kind in nftables ipset; do
  d=$WORK/sustained-$kind
  if [ $kind = nftables ]; then args=(--nftables); else args=(--ipset spbench); fi
  start_node "$d" "${args[@]}" --allow 10.1.0.0/16
  if [ $kind = ipset ]; then in_n iptables -I INPUT -m set --match-set spbench src -j DROP; fi
  in_a "$GEN" send --target 198.51.100.1:5060 --rate 19000 --count $((19000 * SECS)) --sources 64 --source-from 10.1.0.1 >"$d/steady.out" &
  steady=$!
  # A new address per probe, 5,000 sockets at a time (the open-files limit).
  for k in $(seq 0 $((SECS / 5 - 1))); do
    first=$((k * 5000 + 1))
    in_a "$GEN" send --target 198.51.100.1:5060 --rate 1000 --count 5000 --sources 5000 \
      --source-from "10.2.$((first / 256)).$((first % 256))" >"$d/new-$k.out"
  done
  wait $steady
  sleep 1
  if [ $kind = nftables ]; then
    NEW[$kind]=$(in_n nft list set inet sentrypeer bad_actors_v4 | grep -o '10\.2\.[0-9]*\.[0-9]*' | sort -u | wc -l)
  else
    NEW[$kind]=$(in_n ipset list spbench | grep -c '^10\.2\.')
  fi
  DELAY[$kind]=$(health "h['kernel_sets']['$kind']['max_delay_ms']")
  BATCHES[$kind]=$(health "h['kernel_sets']['$kind']['batches']")
  FAIL[$kind]=$(health "h['kernel_sets']['$kind']['failures']")
  received=$(health "h['counters']['messages_received']")
  secs=$(sed 's/.*seconds=\([0-9.]*\).*/\1/' "$d/steady.out")
  RATE[$kind]=$(python3 -c "print(round($received / $secs))")
  REC[$kind]=$(health "h['outputs']['$kind']['dropped']")
  stop_node
  if [ $kind = nftables ]; then in_n "$BIN" nftables flush >/dev/null
  else in_n iptables -D INPUT -m set --match-set spbench src -j DROP; in_n ipset destroy spbench; in_n ipset destroy spbench6; fi
done

cat <<EOF
| measure | nftables | ipset | target |
|---|---|---|---|
| tool alone: 100,000 addresses into an empty set, one run | ${nft_load} ms | ${ipset_load} ms | |
| tool alone: one batch of 100 addresses (a run), set holding 100,000 | ${nft_batch} ms | ${ipset_batch} ms | |
| node: 100,000 listed addresses in the kernel after start (start to last element) | ${LOAD[nftables]} ms | ${LOAD[ipset]} ms | < 2 s |
| node: that startup reconcile alone (store read + load) | ${RECON[nftables]} ms | ${RECON[ipset]} ms | |
| sustained ${SECS} s: new addresses in the kernel at the end | ${NEW[nftables]} of $new | ${NEW[ipset]} of $new | all |
| sustained: longest capture-to-kernel delay | ${DELAY[nftables]} ms | ${DELAY[ipset]} ms | < 1 s |
| sustained: probes received per second | ${RATE[nftables]}/s | ${RATE[ipset]}/s | 20,000/s |
| sustained: batches (tool runs), failures, events dropped by the output's queue | ${BATCHES[nftables]}, ${FAIL[nftables]}, ${REC[nftables]} | ${BATCHES[ipset]}, ${FAIL[ipset]}, ${REC[ipset]} | |
EOF
