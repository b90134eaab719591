#!/usr/bin/env bash
# The benchmarks of docs/bench.md: vmrp beside a Python SDK peer (bench/peer) on the in-process emulator.
#   bench/run.sh [--quick] [--json FILE] [any other `vmrp bench` flag]
# Builds the deploy build (the handler measured, and its size) and the release harness, prepares the peer's
# venv in ${VMRP_TOOLS:-~/.cache/vmrp-tools}/peer-venv, then runs `vmrp bench`. See docs/bench.md.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
venv="$tools/peer-venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum bench/peer/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "bench: preparing the peer's venv in $venv" >&2
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/peer/requirements.txt
  echo "$want" >"$stamp"
fi

# The deploy build (what ships): its size, and it is the handler under test (cold start, peak
# RSS, CPU per poll, the fleet runs); it goes to its own target dir, where `vmrp package` builds it.
echo "bench: cargo build --release -p vmrp-handler (deploy build: the handler measured, and its size)" >&2
cargo build --release --quiet -p vmrp-handler --bin vmrp-handler --target-dir target/deploy
deploy="target/deploy/release/vmrp-handler"
stripped="target/deploy/vmrp-handler.stripped"
cp "$deploy" "$stripped"
strip "$stripped" 2>/dev/null || echo "bench: strip not found; sizing the unstripped binary" >&2

# The harness build has the emulator: keep it out of target/release, which holds deploy builds
# (`vmrp package --no-build` packages target/release/vmrp).
echo "bench: cargo build --release (the harness, in target/bench)" >&2
cargo build --release --quiet --target-dir target/bench

# Before/after in one run: add `--baseline PATH` (an earlier deploy build) to the flags.
exec target/bench/release/vmrp bench --handler "$deploy" --deploy-binary "$stripped" --peer "$venv/bin/python bench/peer/handler.py" "$@"
