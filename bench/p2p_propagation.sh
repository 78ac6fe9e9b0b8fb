#!/usr/bin/env bash
# Peer-to-peer propagation benchmark: NODES real nodes on loopback (in one process), probes
# sent round-robin at RATE events/s for SECONDS, then latency percentiles (capture on the
# origin -> stored by each peer) and bytes on the wire per event.
#
#   bench/p2p_propagation.sh [NODES=20] [RATE=100] [SECONDS=30]
#
# Builds in its own target directory so that it does not contend with other builds.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-20}
RATE=${2:-100}
SECONDS_=${3:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-p2p}
cargo build --release --features p2p --example p2p_propagation
exec "$CARGO_TARGET_DIR/release/examples/p2p_propagation" "$NODES" "$RATE" "$SECONDS_"
