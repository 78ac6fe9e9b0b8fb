#!/usr/bin/env bash
# Upstream SentryPeer (C) and this project's node, side by side in one run, on one machine.
#
#   bench/compare_upstream.sh [--build-upstream] [--upstream PATH] [--bin PATH] [--seconds S]
#                             [--ladder "R1 R2 ..."] [--events N] [--build-only]
#
# --build-upstream  installs upstream's Debian build dependencies (needs root), clones its source
#                   from UPSTREAM_SRC (a git URL or a local path; default
#                   https://github.com/SentryPeer/SentryPeer) at UPSTREAM_REF (default v4.0.5)
#                   into UPSTREAM_WORK (default /tmp/sentrypeer-upstream), builds it with its own
#                   autotools defaults (./bootstrap.sh, ./configure, make) and prints the binary's
#                   path. --build-only stops there.
# --upstream PATH   an upstream binary built before (default: UPSTREAM_WORK/src/sentrypeer).
# --bin PATH        this project's node (default: this checkout's release build).
#
# Upstream binds fixed ports (SIP 5060 on 0.0.0.0 over UDP and TCP, TLS 5061, API 8082), so every
# node, ours too, runs in a network namespace this script creates (loopback only, nothing leaves
# it) and the generator runs in the same namespace. Both nodes listen on the default wildcard
# path: upstream on its 0.0.0.0:5060, ours on `--udp-listen 0.0.0.0:5060 --udp-listen [::]:5060`.
# Upstream is only run as a binary; nothing of it is part of this project.
#
# Measured, alternating the two binaries at each step so machine load falls on both alike:
# 1. Sustained ingest: for each RATE of the ladder, a fresh node, JSON log on, API on, then
#    `sentrypeer-loadgen send --sources 64 --numbers 100000` at RATE for S seconds (default 30).
#    Zero-loss rate: the highest rung where rows == sent (after the writer drained); a binary
#    leaves the ladder at its first lossy rung.
# 2. Saturation: both nodes, fresh, at the same offered rate (the higher of the two first lossy
#    rungs) for S seconds. "In window": rows in `honey` when sending stopped, over the
#    generator's own send time; then rows once they stop growing, and the loss. Peak RSS: the
#    node's VmHWM at the end of that run.
# 3. API lookups: one database seeded with N events (default 1,000,000; 250,000 numbers, 50,000
#    addresses), copied for each node; `wrk -t1 -c8 -d10s` on `/numbers/{n}` and
#    `/ip-addresses/{ip}` with a number and an address that are in it. Idle node (no ingest).
# Prints one table with both and the ratio ours / upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

UPSTREAM_SRC=${UPSTREAM_SRC:-https://github.com/SentryPeer/SentryPeer}
UPSTREAM_REF=${UPSTREAM_REF:-v4.0.5}
UPSTREAM_WORK=${UPSTREAM_WORK:-/tmp/sentrypeer-upstream}
build=false; build_only=false; upstream=; ours=; secs=30; events=1000000
ladder="10 25 50 100 250 500 1000 2500 5000 10000 20000 35000 50000 65000 80000 100000"
while [ $# -gt 0 ]; do
  case $1 in
    --build-upstream) build=true; shift ;;
    --build-only) build=true; build_only=true; shift ;;
    --upstream) upstream=$(realpath "$2"); shift 2 ;;
    --bin) ours=$(realpath "$2"); shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --ladder) ladder=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

build_upstream() {
  local started=$SECONDS src=$UPSTREAM_WORK/src
  apt-get install -y --no-install-recommends git build-essential autoconf automake libtool \
    autoconf-archive pkg-config clang libclang-dev libosip2-dev libmicrohttpd-dev libjansson-dev \
    libpcre2-dev libcurl4-openssl-dev libsqlite3-dev uuid-dev libopendht-c-dev >&2
  rm -rf "$src"; mkdir -p "$UPSTREAM_WORK"
  git clone -q "$UPSTREAM_SRC" "$src" >&2
  git -C "$src" checkout -q "$UPSTREAM_REF" >&2
  # Upstream's Makefile expects its Rust library under its own sentrypeer_rust/target.
  (cd "$src" && unset CARGO_TARGET_DIR && ./bootstrap.sh && ./configure && make -j"$(nproc)") >&2
  echo "built upstream $UPSTREAM_REF ($(git -C "$src" rev-parse --short HEAD)) in $((SECONDS - started)) s" >&2
  echo "$src/sentrypeer"
}

if $build; then upstream=$(build_upstream); echo "$upstream"; fi
$build_only && exit 0
upstream=${upstream:-$UPSTREAM_WORK/src/sentrypeer}
[ -x "$upstream" ] || { echo "no upstream binary at $upstream (use --build-upstream or --upstream)" >&2; exit 2; }
if [ -z "$ours" ]; then
  cargo build --release --bins -q
  ours=${CARGO_TARGET_DIR:-$PWD/target}/release/sentrypeer
fi
GEN=${GEN:-$(dirname "$ours")/sentrypeer-loadgen}
[ -x "$GEN" ] || { echo "no generator at $GEN" >&2; exit 2; }
command -v wrk >/dev/null || apt-get install -y wrk >&2

NS=sp-cmp-$$
WORK=$(mktemp -d)
NODE_PID=
cleanup() {
  [ -n "$NODE_PID" ] && kill -TERM "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

# start KIND DIR: a fresh node of KIND (ours|upstream) with its database in DIR; waits until
# its API answers and the SIP port is bound. Sets NODE_PID.
start() {
  local kind=$1 dir=$2
  mkdir -p "$dir"
  if [ "$kind" = ours ]; then
    (cd "$dir" && exec ip netns exec "$NS" "$ours" --udp-listen 0.0.0.0:5060 --udp-listen "[::]:5060" \
       --tcp-listen 0.0.0.0:5060 -N -j --json-log-file "$dir/log.json" -a --api-listen 127.0.0.1:8082 \
       2>node.log >&2) &
  else
    # Upstream's own defaults: Rust UDP/TCP/TLS listeners, API on 8082, JSON log, db in DIR.
    (cd "$dir" && exec ip netns exec "$NS" "$upstream" -a -j -l "$dir/log.json" -f "$dir/sentrypeer.db" \
       >node.log 2>&1) &
  fi
  NODE_PID=$!
  for _ in $(seq 1 600); do
    in_ns curl -s -m 1 -o /dev/null "http://127.0.0.1:8082/health-check" &&
      in_ns ss -Hlun 'sport = :5060' | grep -q . && return 0
    sleep 0.05
  done
  echo "$kind did not start in $dir:" >&2; cat "$dir/node.log" >&2; exit 1
}
stop() { kill -TERM "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
# A busy timeout: a writer holding the lock must not read as 0 rows.
rows() { sqlite3 -cmd ".timeout 10000" "$1/sentrypeer.db" "SELECT count(*) FROM honey" 2>/dev/null || echo 0; }
hwm() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$NODE_PID/status"; }
# Waits until the row count stops changing (upstream has no queue gauge; ours drains the same way).
settle() {
  local dir=$1 last=-1 now
  for _ in $(seq 1 600); do
    now=$(rows "$dir"); [ "$now" = "$last" ] && break; last=$now; sleep 0.5
  done
  echo "$last"
}

# ingest KIND RATE: one sustained run; prints "sent took window rows hwm".
ingest() {
  local kind=$1 rate=$2 d=$WORK/$1-$2 out sent took window rows mem
  start "$kind" "$d"
  out=$(in_ns "$GEN" send --target 127.0.0.1:5060 --rate "$rate" --count $((rate * secs)) \
        --sources 64 --numbers 100000)
  window=$(rows "$d")
  sent=$(echo "$out" | sed 's/.*sent=\([0-9]*\).*/\1/')
  took=$(echo "$out" | sed 's/.*seconds=\([0-9.]*\).*/\1/')
  rows=$(settle "$d"); mem=$(hwm); stop; rm -rf "$d"
  echo "$sent $took $window $rows $mem"
  echo "  $kind $rate/s for ${secs}s: sent=$sent in ${took}s, rows at stop=$window, after drain=$rows, peak RSS ${mem} MiB" >&2
}

declare -A zero=([ours]=0 [upstream]=0) zinfo=() first_lossy=() done_=([ours]=false [upstream]=false)
for rate in $ladder; do
  for kind in ours upstream; do
    ${done_[$kind]} && continue
    read -r sent took window rows mem < <(ingest "$kind" "$rate")
    if [ "$rows" -eq "$sent" ]; then
      zero[$kind]=$rate
      zinfo[$kind]=$(python3 -c "print(f'{$sent/$took:,.0f}/s achieved, {$mem} MiB')")
    else
      done_[$kind]=true; first_lossy[$kind]=$rate
    fi
  done
  ${done_[ours]} && ${done_[upstream]} && break
done

# Saturation: both at the same offered rate, the higher of the two first lossy rungs (so both
# are past their zero-loss rate), sustained for the same time.
sat_rate=$(printf '%s\n' "${first_lossy[ours]:-0}" "${first_lossy[upstream]:-0}" | sort -n | tail -1)
declare -A sat=() satrate=() smem=()
if [ "$sat_rate" -gt 0 ]; then
  for kind in ours upstream; do
    read -r sent took window rows mem < <(ingest "$kind" "$sat_rate")
    satrate[$kind]=$(python3 -c "print(round($window/$took))")
    sat[$kind]=$(python3 -c "print(f'achieved {$sent/$took:,.0f}/s for {$took:.1f} s: {$window:,} rows in window = {$window/$took:,.0f}/s; after drain {$rows:,}, lost {100*($sent-$rows)/$sent:.2f}%')")
    smem[$kind]=$mem
  done
fi

# API lookups over one seeded database.
seed=$WORK/seed.db
"$GEN" seed-db --db "$seed" --events "$events" --numbers 250000 --addresses 50000 >&2
number=$(sqlite3 "$seed" "SELECT called_number FROM honey WHERE called_number != '' LIMIT 1 OFFSET 1000")
ip=$(sqlite3 "$seed" "SELECT source_ip FROM honey LIMIT 1 OFFSET 1000")
declare -A num ip_ num_p99 ip_p99 code_n code_i
for kind in ours upstream; do
  d=$WORK/api-$kind; mkdir -p "$d"; cp "$seed" "$d/sentrypeer.db"
  start "$kind" "$d"
  code_n[$kind]=$(in_ns curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:8082/numbers/$number")
  code_i[$kind]=$(in_ns curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:8082/ip-addresses/$ip")
  w=$(in_ns wrk -t1 -c8 -d10s --latency "http://127.0.0.1:8082/numbers/$number")
  num[$kind]=$(echo "$w" | awk '/Requests\/sec/ {printf "%.0f", $2}'); num_p99[$kind]=$(echo "$w" | awk '$1=="99%" {print $2}')
  w=$(in_ns wrk -t1 -c8 -d10s --latency "http://127.0.0.1:8082/ip-addresses/$ip")
  ip_[$kind]=$(echo "$w" | awk '/Requests\/sec/ {printf "%.0f", $2}'); ip_p99[$kind]=$(echo "$w" | awk '$1=="99%" {print $2}')
  echo "  $kind API: /numbers/$number ${code_n[$kind]} ${num[$kind]} req/s; /ip-addresses/$ip ${code_i[$kind]} ${ip_[$kind]} req/s" >&2
  stop
done

ratio() { python3 -c "a, b = float('$1' or 0), float('$2' or 0); print(f'{a/b:.2f}x' if a and b else 'n/a')"; }
echo
echo "Both nodes in one network namespace, default wildcard bind (0.0.0.0:5060; ours also [::]:5060),"
echo "JSON log on, API on; generator: 64 sources, 100,000 numbers, sustained ${secs} s per rung."
echo
echo "| measure | ours | upstream $UPSTREAM_REF | ours / upstream |"
echo "|---|---|---|---|"
echo "| highest zero-loss rate (sustained ${secs} s, rows = sent) | ${zero[ours]}/s (${zinfo[ours]:-none}) | ${zero[upstream]}/s (${zinfo[upstream]:-none}) | $(ratio "${zero[ours]}" "${zero[upstream]}") |"
echo "| saturated run, both asked ${sat_rate}/s for ${secs} s | ${sat[ours]:-not reached} | ${sat[upstream]:-not reached} | $(ratio "${satrate[ours]:-}" "${satrate[upstream]:-}") |"
echo "| peak RSS at saturation (VmHWM) | ${smem[ours]:-n/a} MiB | ${smem[upstream]:-n/a} MiB | $(ratio "${smem[ours]:-}" "${smem[upstream]:-}") |"
echo "| \`/numbers/{n}\`, $events events, wrk -t1 -c8 10 s | ${num[ours]} req/s, p99 ${num_p99[ours]} (HTTP ${code_n[ours]}) | ${num[upstream]} req/s, p99 ${num_p99[upstream]} (HTTP ${code_n[upstream]}) | $(ratio "${num[ours]}" "${num[upstream]}") |"
echo "| \`/ip-addresses/{ip}\`, same | ${ip_[ours]} req/s, p99 ${ip_p99[ours]} (HTTP ${code_i[ours]}) | ${ip_[upstream]} req/s, p99 ${ip_p99[upstream]} (HTTP ${code_i[upstream]}) | $(ratio "${ip_[ours]}" "${ip_[upstream]}") |"
