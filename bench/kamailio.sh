#!/usr/bin/env bash
# What the node's check costs a call, measured with the real programs on loopback: call set-up
# time (INVITE sent to 200 received, sipp's response time) through Kamailio relaying to a sipp
# UAS, without a check and with each contrib/kamailio/ set-up (per-call dip, blocklist pull,
# the fraud-check agent as a redirect server); then the agent alone, sipp playing the PBX at a
# fixed rate of checks (INVITE in, 404 or 603 out, ACK). Release build; prints the figures.
# Usage: bench/kamailio.sh [CALLS] [CPS] [CHECK_RATE] [CHECK_SECS]   (default 1000 100 10000 10)
# Needs: kamailio, kamailio-utils-modules, kamailio-json-modules, sip-tester (sipp), python3;
# tcpdump (as root) adds the agent's latency on the wire (bench/sip_wire_latency.py).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CALLS=${1:-1000}
CPS=${2:-100}
CHECK_RATE=${3:-10000}
CHECK_SECS=${4:-10}
ATTACKER=127.0.0.3
CALLER=127.0.0.4
NUMBER=441234567

# BIN=path/to/sentrypeer measures that binary instead of building the release one.
if [ -z "${BIN:-}" ]; then
  cargo build --release --bins -q
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer"
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A UDP port free on an address a moment ago.
free_port() {
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}
# Waits (30 s at most) until a SIP server at 127.0.0.1:PORT answers OPTIONS with 200.
wait_sip() {
  python3 - "$1" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(0.2); me = "127.0.0.1:%d" % s.getsockname()[1]
deadline = time.time() + 30; n = 0
while time.time() < deadline:
    n += 1
    s.sendto(("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-w%d\r\n"
              "Max-Forwards: 70\r\nFrom: <sip:bench@%s>;tag=%d\r\nTo: <sip:127.0.0.1:%d>\r\n"
              "Call-ID: wait-%d\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n"
              % (port, me, n, me, n, port, n, n)).encode(), ("127.0.0.1", port))
    try:
        if s.recv(4096).startswith(b"SIP/2.0 200 "):
            sys.exit(0)
    except socket.timeout:
        pass
sys.exit("no answer on port %d" % port)
PY
}
# p50, p99 and max (ms), and how many, of the times from each call's first INVITE sent to its
# first final answer CODE received, from sipp's -trace_shortmsg logs (microsecond timestamps;
# sipp's own response-time counters count whole milliseconds).
latency() {
  python3 - "$1" "$2" <<'PY'
import glob, sys
sent, got = {}, {}
for path in glob.glob(sys.argv[1] + "/*_shortmessages.log"):
    for line in open(path, errors="replace"):
        f = line.rstrip("\n").split("\t")
        if len(f) < 7 or f[5] != "CSeq:1 INVITE":
            continue
        t, way, call = float(f[2]), f[3], f[4]
        if way == "S" and f[6].startswith("INVITE "):
            sent.setdefault(call, t)
        elif way == "R" and f[6].startswith("SIP/2.0 " + sys.argv[2] + " "):
            got.setdefault(call, t)
ms = sorted((got[c] - sent[c]) * 1000 for c in got if c in sent)
if not ms:
    print("no samples")
else:
    at = lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]
    print("p50 %.3f ms  p99 %.3f ms  max %.3f ms  (%d answered)" % (at(0.50), at(0.99), ms[-1], len(ms)))
PY
}
# Successful and failed calls and the call rate from sipp's final statistics screen.
sipp_totals() {
  awk -F'|' '/Successful call/ {gsub(/ /, "", $3); ok = $3}
    /Failed call/ {gsub(/ /, "", $3); failed = $3}
    /Call Rate/ {gsub(/ |cps/, "", $3); rate = $3}
    /INVITE ---/ {n = 0; line = $0; sub(/.*INVITE -+>/, "", line); k = split(line, w, " +")
      for (i = 1; i <= k; i++) if (w[i] ~ /^[0-9]+$/ && ++n == 2) retrans = w[i]}
    END {printf "%s ok, %s failed, %s INVITE retransmissions, sipp achieved %s/s", ok, failed, retrans, rate}' "$1"
}

# The node: API, SIP capture and the agent, all on loopback; one recorded attacker.
(cd "$WORK" && exec "$BIN" --udp-listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 -N \
  --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 -f "$WORK/sentrypeer.db" 2>node.log) &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q "Ready." "$WORK/node.log" 2>/dev/null && break; sleep 0.05; done
addr() { grep "transport=$1 " "$WORK/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/'; }
API=$(addr API) UDP=$(addr UDP) AGENT=$(addr AGENT)
python3 - "$ATTACKER" "$UDP" <<'PY'
import socket, sys
host, port = sys.argv[2].rsplit(":", 1); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.sendto(b"OPTIONS sip:900442037690000@198.51.100.10 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;"
         b"branch=z9hG4bK-bench;rport\r\nMax-Forwards: 70\r\nTo: <sip:900442037690000@198.51.100.10>\r\n"
         b"From: <sip:900442037690000@198.51.100.10>;tag=1\r\nCall-ID: bench-probe\r\n"
         b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", (host, int(port)))
PY
for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$API/ip-addresses/$ATTACKER")" = 200 ] && break
  sleep 0.05
done
echo "node: API $API, agent $AGENT; $ATTACKER listed"

# The UAS every relayed call ends at.
UAS_PORT=$(free_port 127.0.0.1)
(cd "$WORK" && exec sipp -sf "$REPO/tests/data/sipp/uas-answers.xml" -i 127.0.0.1 -p "$UAS_PORT" \
  -nostdin >uas.log 2>&1) &
PIDS+=($!)

# The relay with no check: the dip configuration without its route call.
sed 's/^\t\troute(SENTRYPEER_DIP);/\t\t$var(sp_checked) = 0;/' contrib/kamailio/sentrypeer-dip.cfg >"$WORK/relay-only.cfg"

calls_through() {
  local name=$1 cfg=$2 port dir kpid
  shift 2
  port=$(free_port 127.0.0.1)
  dir="$WORK/$name"
  mkdir -p "$dir"
  kamailio -f "$cfg" -DD -E -P "$dir/kamailio.pid" -Y "$dir" -A "SP_LISTEN=udp:127.0.0.1:$port" \
    -A "UAS=\"127.0.0.1:$UAS_PORT\"" "$@" >"$dir/kamailio.log" 2>&1 &
  kpid=$!
  wait_sip "$port"
  if [ "$name" = pull ]; then
    for _ in $(seq 1 200); do grep -q "pulled ip-addresses" "$dir/kamailio.log" && break; sleep 0.05; done
  fi
  (cd "$dir" && sipp "127.0.0.1:$port" -sf "$REPO/tests/data/sipp/uac-call.xml" -s "$NUMBER" \
    -i "$CALLER" -p "$(free_port "$CALLER")" -r "$CPS" -m "$CALLS" -l 1000 -nostdin -buff_size 8388608 \
    -trace_shortmsg -timeout 300s >sipp.log 2>&1) || true
  printf '%-26s %s; %s\n' "$name" "$(latency "$dir" 200)" "$(sipp_totals "$dir/sipp.log")"
  kill -TERM "$kpid"
  wait "$kpid" 2>/dev/null || true
}

echo
echo "call set-up time through Kamailio ($CALLS calls at $CPS/s from $CALLER to $NUMBER, a sipp UAS):"
calls_through relay-only "$WORK/relay-only.cfg"
calls_through dip contrib/kamailio/sentrypeer-dip.cfg -A "SP_API=\"$API\""
calls_through pull contrib/kamailio/sentrypeer-pull.cfg -A "SP_API=\"$API\"" -A SP_PULL_SECS=1
calls_through redirect contrib/kamailio/sentrypeer-redirect.cfg -A "SP_AGENT=\"$AGENT\""

# The agent alone: sipp as the PBX, one INVITE a check, the verdict awaited, then the ACK.
check() {
  local name=$1 caller=$2 code=$3 dir="$WORK/$1"
  mkdir -p "$dir"
  cat >"$dir/check.xml" <<XML
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="check">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]-[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      X-Source-IP: $caller
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="$code"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
XML
  # The same checks on the wire: tcpdump on loopback timestamps each INVITE and its answer in the
  # kernel, so sipp's own loop is not in the figure (root and tcpdump needed; skipped otherwise).
  local tcpdump_pid=
  if command -v tcpdump >/dev/null && [ "$(id -u)" = 0 ]; then
    tcpdump -i lo -n -s 512 -B 65536 -w "$dir/wire.pcap" udp port "${AGENT##*:}" 2>"$dir/tcpdump.log" &
    tcpdump_pid=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$dir/tcpdump.log" 2>/dev/null && break; sleep 0.05; done
  fi
  (cd "$dir" && sipp "$AGENT" -sf check.xml -s "$NUMBER" -i 127.0.0.1 -p "$(free_port 127.0.0.1)" \
    -r "$CHECK_RATE" -m $((CHECK_RATE * CHECK_SECS)) -l 10000 -nostdin -buff_size 8388608 -recv_timeout 2000 \
    -trace_shortmsg -timeout $((CHECK_SECS * 3 + 30))s >sipp.log 2>&1) || true
  printf '%-26s %s; %s\n' "$name" "$(latency "$dir" "$code")" "$(sipp_totals "$dir/sipp.log")"
  if [ -n "$tcpdump_pid" ]; then
    kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
    printf '%-26s %s; %s\n' "" "$(python3 "$REPO/bench/sip_wire_latency.py" "$dir/wire.pcap" "$code")" \
      "$(grep -o '[0-9]* packets dropped by kernel' "$dir/tcpdump.log")"
  fi
}

echo
echo "the agent alone ($CHECK_RATE checks/s for $CHECK_SECS s, sipp as the PBX over UDP; sipp's socket"
echo "buffers at 8 MiB, as its 64 KiB default drops answers at this rate):"
check "agent, 404 (no objection)" "$CALLER" 404
check "agent, 603 (bad actor)" "$ATTACKER" 603
echo "the agent's own count: $(curl -s "http://$API/health-check" | python3 -c 'import json, sys
a = json.load(sys.stdin)["agent"]
print("%d checks answered (%d declined, %d no objection)" % (a["checks"], a["declined"], a["proceeded"]))')"
echo "load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
