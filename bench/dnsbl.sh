#!/usr/bin/env bash
# DNSBL throughput: dnsperf asks the node's DNS blocklist (release build, loopback, UDP) a mix of
# listed and unlisted addresses and numbers, over a database seeded with 50,000 addresses and
# 20,000 numbers, and prints queries/s answered and latency: first as fast as it answers (200
# queries outstanding), then at a fixed 20,000 queries/s for the latency of an unsaturated server.
# Loopback only, bounded in time.
# Needs: dnsperf, curl (apt-get install -y dnsperf curl).
# Usage: bench/dnsbl.sh [SECONDS, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v dnsperf >/dev/null || { echo "dnsperf is not installed (apt-get install -y dnsperf)" >&2; exit 1; }

cargo build --release --bins -q
target="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=$target/release/sentrypeer
GEN=$target/release/sentrypeer-loadgen
WORK=$(mktemp -d)
NODE_PID=
trap '[ -n "$NODE_PID" ] && kill $NODE_PID 2>/dev/null; rm -rf "$WORK"' EXIT

addresses=50000
numbers=20000
"$GEN" seed-db --db "$WORK/sentrypeer.db" --events 200000 --numbers $numbers --addresses $addresses >&2

# The node: no SIP listeners, the API for its counters, the DNSBL on a loopback port.
(cd "$WORK" && exec "$BIN" -R -a --api-listen 127.0.0.1:0 \
  --dnsbl-listen 127.0.0.1:0 --dnsbl-zone bl.example 2>node.log) &
NODE_PID=$!
for _ in $(seq 1 600); do grep -q "Ready." "$WORK/node.log" 2>/dev/null && break; sleep 0.05; done
DNS=$(grep "transport=DNSBL" "$WORK/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
API=$(grep "transport=API" "$WORK/node.log" | head -1 | sed 's/.*addr=\([^ ]*\).*/\1/')
PORT=${DNS##*:}

# 100,000 queries, in the mix a mail server or PBX would send: half listed addresses (A), a
# fifth unlisted addresses (NXDOMAIN), a tenth TXT of listed addresses, a fifth numbers (listed
# and not, under numbers.).
python3 - "$WORK/queries.txt" $addresses $numbers <<'EOF'
import random, sys
out, addresses, numbers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(5782)
def rev_v4(n):  # 100.64.0.0 + n, as the seeded database has them
    ip = (100 << 24) + (64 << 16) + n
    o = [(ip >> s) & 255 for s in (24, 16, 8, 0)]
    return f"{o[3]}.{o[2]}.{o[1]}.{o[0]}.bl.example"
with open(out, "w") as f:
    for i in range(100_000):
        r = rng.random()
        if r < 0.5:
            f.write(f"{rev_v4(rng.randrange(addresses))} A\n")
        elif r < 0.7:
            f.write(f"{rng.randrange(1, 255)}.{rng.randrange(256)}.18.198.bl.example A\n")
        elif r < 0.8:
            f.write(f"{rev_v4(rng.randrange(addresses))} TXT\n")
        else:
            # Seeded numbers are 441000000000 + k, k < numbers; half of these are past them.
            digits = str(441_000_000_000 + rng.randrange(2 * numbers))
            f.write(".".join(reversed(digits)) + ".numbers.bl.example A\n")
EOF

echo "DNSBL at $DNS; dnsperf for ${secs}s (UDP, 4 clients, 200 outstanding)..." >&2
dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$secs" -c 4 -q 200 -T 1 > "$WORK/max.txt" 2>&1 || true
cat "$WORK/max.txt" >&2
echo "dnsperf for 10s at 20,000 queries/s..." >&2
dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l 10 -c 4 -q 200 -T 1 -Q 20000 > "$WORK/fixed.txt" 2>&1 || true
cat "$WORK/fixed.txt" >&2
health=$(curl -s "http://$API/health-check")
load=$(cut -d' ' -f1-3 /proc/loadavg)

# field FILE PATTERN N: the Nth word of the line matching PATTERN.
field() { awk -v n="$3" "/$2/ {print \$n}" "$1"; }
ms() { python3 -c "print(f'{float(\"$1\")*1000:.2f} ms')"; }
row() { # row LABEL FILE
  echo "| $1 | $(field "$2" 'Queries per second:' 4) | $(field "$2" 'Queries sent:' 3) / $(field "$2" 'Queries lost:' 3) | $(ms "$(field "$2" 'Average Latency' 4)") ± $(ms "$(field "$2" 'Latency StdDev' 4)") |"
}
echo "| dnsperf run (UDP, loopback) | queries/s answered | sent / lost | latency, mean ± stddev |"
echo "| --- | --- | --- | --- |"
row "as fast as answered, ${secs}s, 200 outstanding" "$WORK/max.txt"
row "fixed 20,000/s, 10s" "$WORK/fixed.txt"
python3 - "$health" "$load" <<'EOF'
import json, sys
c = json.loads(sys.argv[1])["counters"]
print(f"\nNode's answers: listed {c['dnsbl_listed']}, NXDOMAIN {c['dnsbl_nxdomain']}, "
      f"failed {c['dnsbl_failed']}, malformed {c['dnsbl_malformed']}; load average at the end: {sys.argv[2]}")
EOF
