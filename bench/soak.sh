#!/usr/bin/env bash
# Soak: the long chaos run (tests/chaos.rs `soak_*`, ignored in `cargo test`) on the real vmrp
# binary behind the Functions host simulation, against the emulator with every fault kind on.
#   VMS=500 TICKS=5 KILLS=12 SEED=5 SPEED=2400 TIMEOUT_SECS=1200 bench/soak.sh
# Prints the run's figures (coverage, missing points by reason, invocations, faults injected,
# 429s, dead letters, kills, real time). Virtual time follows the handler (src/local/), so the
# run takes as long as the handler needs: about 8 minutes for the defaults on 2 cores (debug).
# HANDLER_LOG=/tmp/soak-handler.log keeps the handler's console for debugging.
set -euo pipefail
cd "$(dirname "$0")/.."
export VMS="${VMS:-500}" TICKS="${TICKS:-5}" KILLS="${KILLS:-12}" SEED="${SEED:-5}"
export SPEED="${SPEED:-2400}" TIMEOUT_SECS="${TIMEOUT_SECS:-1200}"
echo "soak: ${VMS} VMs × ${TICKS} ticks, ${KILLS} kills, seed ${SEED}, speed ${SPEED}"
start=$(date +%s)
cargo test --test chaos soak_every_point_settles_once_or_is_reported -- --ignored --nocapture
echo "soak: wall time $(( $(date +%s) - start )) s (build included)"
