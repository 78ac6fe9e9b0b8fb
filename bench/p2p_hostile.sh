#!/usr/bin/env bash
# A host cycling through fresh peer identities against one release node (with one honest
# peer): the node's peak memory, database growth, counters, and the honest peer's propagation
# during the attack.
#
#   bench/p2p_hostile.sh [IDENTITIES=10000] [CONCURRENCY=6] [HOLD_MS=50]
#
# Builds in its own target directory so that it does not contend with other builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-p2p}
cargo build --release --features p2p --bin sentrypeer
cargo build --release --features p2p --example p2p_hostile
exec "$CARGO_TARGET_DIR/release/examples/p2p_hostile" "${1:-10000}" "${2:-6}" "${3:-50}"
