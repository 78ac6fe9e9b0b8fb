#!/usr/bin/env bash
# Sustained ingest on the default bind path, measured the way a deployment is sized.
#
#   bench/ingest.sh [--bin PATH]... [--numbers N] [--transport udp|tcp] [--body BYTES] [--junk] RATE [SECONDS]
#
# For each binary (default: this checkout's release build), in turn, in the same run: a fresh node
# listening on the IPv4 and IPv6 wildcards (`--udp-listen 0.0.0.0:P --udp-listen [::]:P`, the
# `recvmsg` + `IP_PKTINFO` path), JSON log on, API on loopback and polled every 100 ms; then
# `sentrypeer-loadgen send --sources 64 --numbers N` at RATE for SECONDS (default 60). Printed, one
# row per binary:
# - achieved: the rate the generator reports it sent at (not the one asked for);
# - in window: rows in `honey` when sending stopped, as a rate over the send window;
# - queue at stop: the sqlite output's queue depth when sending stopped, and its capacity;
# - recorded / lost: rows once the queue drained, and sent - rows; of those, the kernel's drops
#   (UDP receive-buffer overflows on this machine during the run: the capture did not read in
#   time) and the database queue's (full: the writer did not keep up);
# - node CPU: the node's CPU time over the send window, in cores (1.00: one core all the time);
#   writer busy: the database writer thread's share of one core over the window (its headroom
#   is what is left of 100%);
# - bytes written per event: what the node wrote (`wchar` in /proc/PID/io: the WAL, checkpoint
#   copies into the database file, the JSON log) over the window, per row recorded in it;
# - peak RSS: the node's VmHWM.
# Loopback only; the generator shares the machine's cores with the node.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=(); numbers=100000; transport=udp; body=0; junk=
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bins+=("$(realpath "$2")"); shift 2 ;;
    --numbers) numbers=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --body) body=$2; shift 2 ;;
    --junk) junk=--junk; shift ;;
    *) break ;;
  esac
done
rate=${1:?usage: bench/ingest.sh [--bin PATH]... RATE [SECONDS]}
secs=${2:-60}
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --bins -q
  bins=("${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer")
fi
GEN=${GEN:-${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer-loadgen}
[ -x "$GEN" ] || cargo build --release -q --bin sentrypeer-loadgen
WORK=$(mktemp -d)
NODE_PID=; POLL_PID=
trap '[ -n "$POLL_PID" ] && kill $POLL_PID 2>/dev/null; [ -n "$NODE_PID" ] && kill $NODE_PID 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() {
  python3 -c 'import socket
for _ in range(100):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("0.0.0.0", 0)); p = a.getsockname()[1]
    b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        b.bind(("::", p)); t.bind(("0.0.0.0", p)); print(p); break
    except OSError:
        pass'
}
# UDP receive-buffer overflows, IPv4 and IPv6, machine-wide (the run is the only UDP load).
rcvbuf_errors() {
  echo $(( $(awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp) + $(awk '/^Udp6RcvbufErrors/ {print $2}' /proc/net/snmp6) ))
}
# CPU seconds (user + system) of a process, or of one of its threads by name.
cpu_secs() {
  python3 - "$1" "${2:-}" <<'PY'
import os, sys
pid, name = sys.argv[1], sys.argv[2]
tick = os.sysconf('SC_CLK_TCK')
def secs(stat):
    f = open(stat).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
if not name:
    print(secs(f'/proc/{pid}/stat'))
else:
    for t in os.listdir(f'/proc/{pid}/task'):
        if open(f'/proc/{pid}/task/{t}/comm').read().strip() == name:
            print(secs(f'/proc/{pid}/task/{t}/stat')); break
    else:
        print(0)
PY
}
health() { curl -s -m 2 "http://$API/health-check"; }
sqlite_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['outputs']['sqlite']['$1'])"; }

printf '| binary | offered | achieved | sent | in window | queue at stop | recorded after drain | lost | kernel drops | queue drops | node CPU | writer busy | written per event | peak RSS | API answered |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
for bin in "${bins[@]}"; do
  d=$WORK/node; rm -rf "$d"; mkdir -p "$d"
  port=$(free_port)
  (cd "$d" && exec "$bin" --udp-listen "0.0.0.0:$port" --udp-listen "[::]:$port" \
     --tcp-listen "0.0.0.0:$port" -N -j --json-log-file "$d/log.json" -a --api-listen 127.0.0.1:0 2>node.log) &
  NODE_PID=$!
  for _ in $(seq 1 600); do grep -q "Ready." "$d/node.log" 2>/dev/null && break; sleep 0.05; done
  API=$(grep "transport=API" "$d/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
  capacity=$(health | sqlite_field queue_capacity 2>/dev/null || echo "?")
  # The API answering throughout: a poll every 100 ms, answers counted.
  (ok=0; n=0; while :; do n=$((n + 1)); curl -s -m 1 -o /dev/null -w '%{http_code}' "http://$API/health-check" | grep -q 200 && ok=$((ok + 1)); echo "$ok/$n" > "$d/poll"; sleep 0.1; done) &
  POLL_PID=$!
  count=$((rate * secs))
  rcvbuf0=$(rcvbuf_errors)
  cpu0=$(cpu_secs $NODE_PID); wcpu0=$(cpu_secs $NODE_PID output-sqlite)
  wchar0=$(awk '/^wchar/ {print $2}' /proc/$NODE_PID/io)
  out=$("$GEN" send --target "127.0.0.1:$port" --transport "$transport" --rate "$rate" --count "$count" \
        --sources 64 --numbers "$numbers" --body-bytes "$body" $junk)
  cpu1=$(cpu_secs $NODE_PID); wcpu1=$(cpu_secs $NODE_PID output-sqlite)
  wchar1=$(awk '/^wchar/ {print $2}' /proc/$NODE_PID/io)
  window=$(sqlite3 "$d/sentrypeer.db" "SELECT count(*) FROM honey")
  depth=$(health | sqlite_field queue_depth)
  answered=$(cat "$d/poll")
  kill $POLL_PID 2>/dev/null; wait $POLL_PID 2>/dev/null || true; POLL_PID=
  sent=$(echo "$out" | sed 's/.*sent=\([0-9]*\).*/\1/')
  took=$(echo "$out" | sed 's/.*seconds=\([0-9.]*\).*/\1/')
  for _ in $(seq 1 1200); do [ "$(health | sqlite_field queue_depth)" = 0 ] && break; sleep 0.1; done
  rows=$(sqlite3 "$d/sentrypeer.db" "SELECT count(*) FROM honey")
  kdrops=$(( $(rcvbuf_errors) - rcvbuf0 ))
  qdrops=$(health | sqlite_field dropped)
  hwm=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$NODE_PID/status)
  kill -TERM $NODE_PID; wait $NODE_PID 2>/dev/null || true; NODE_PID=
  python3 - "$bin" "$rate" "$sent" "$took" "$window" "$depth" "$capacity" "$rows" "$hwm" "$answered" "$secs" "$kdrops" "$qdrops" \
    "$(python3 -c "print($cpu1 - $cpu0)")" "$(python3 -c "print($wcpu1 - $wcpu0)")" "$((wchar1 - wchar0))" <<'PY'
import sys
bin_, rate, sent, took, window, depth, cap, rows, hwm, answered, secs, kdrops, qdrops, cpu, wcpu, wchar = sys.argv[1:]
sent, took, window, rows = int(sent), float(took), int(window), int(rows)
lost = sent - rows
print(f"| {bin_.split('/')[-1]} | {int(rate):,}/s for {secs} s | {sent/took:,.0f}/s | {sent:,} "
      f"| {window:,} ({window/took:,.0f}/s) | {int(depth):,} of {cap} | {rows:,} "
      f"| {lost:,} ({100*lost/max(sent,1):.2f}%) | {int(kdrops):,} | {int(qdrops):,} | {float(cpu)/took:.2f} | {100*float(wcpu)/took:.0f}% "
      f"| {f'{int(wchar)/window/1024:,.1f} KiB' if window else '-'} | {hwm} MiB | {answered} |")
PY
done
