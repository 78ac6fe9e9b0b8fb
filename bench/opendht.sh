#!/usr/bin/env bash
# OpenDHT propagation and bytes per event (bench/opendht_propagation.py), in a network namespace of its own
# so that loopback carries only this benchmark. Needs root (unshare), dhtnode and
# python3-opendht (.ci/install-deps), and a binary built with the `opendht` feature: BIN, or
# a release build made here.
#
#   bench/opendht.sh [COUNT=200] [RATE=20]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-200}
RATE=${2:-20}
if [ -z "${BIN:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
  cargo build --release --features opendht --bin sentrypeer
  BIN="$CARGO_TARGET_DIR/release/sentrypeer"
fi
exec unshare -n sh -c "ip link set lo up && exec /usr/bin/python3 bench/opendht_propagation.py '$BIN' $COUNT $RATE"
