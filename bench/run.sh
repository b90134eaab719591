#!/usr/bin/env bash
# The benchmarks of docs/bench.md: vmrp beside a Python SDK peer (bench/peer) on the in-process emulator.
#   bench/run.sh [--quick] [--json FILE] [any other `vmrp bench` flag]
# Builds the release harness/handler and the deploy build (for its size), prepares the peer's
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

# The deploy build (what ships) is measured for size only; it goes to its own target dir so it
# does not evict the default-feature build the harness runs.
echo "bench: cargo build --release -p vmrp-handler (deploy build, for its size)" >&2
cargo build --release --quiet -p vmrp-handler --bin vmrp-handler --target-dir target/deploy
deploy="target/deploy/release/vmrp-handler"
stripped="target/deploy/vmrp-handler.stripped"
cp "$deploy" "$stripped"
strip "$stripped" 2>/dev/null || echo "bench: strip not found; sizing the unstripped binary" >&2

# The harness build has the emulator: keep it out of target/release, which holds deploy builds
# (`vmrp package --no-build` packages target/release/vmrp).
echo "bench: cargo build --release (harness + handler, in target/bench)" >&2
cargo build --release --quiet --target-dir target/bench

exec target/bench/release/vmrp bench --deploy-binary "$stripped" --peer "$venv/bin/python bench/peer/handler.py" "$@"
