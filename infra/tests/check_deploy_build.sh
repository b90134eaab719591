#!/usr/bin/env bash
# Checks that the deploy binary (crates/vmrp-handler, `cargo build --release -p vmrp-handler`)
# leaves out the emulator, the fakes and the ops tools, in two ways:
#   1. dependency graph (no build needed): `cargo tree -p vmrp-handler -e normal` names none of
#      FORBIDDEN; the control: the ops package's graph (`cargo tree -p vmrp -e normal,dev`) names
#      every one of them, so a renamed crate or a broken `cargo tree` cannot let the check pass
#      vacuously;
#   2. the binary (built here when no path is given): strings only the emulator contains are
#      absent from the deploy binary, its --help lists no emulator or ops command, and it is at
#      most MAX_BYTES (8 MiB, issue 17; the release profile strips it). If the default build is
#      at hand and contains those strings, that is reported as the control.
# Usage: infra/tests/check_deploy_build.sh [DEPLOY_BIN] [DEFAULT_BIN]
#   DEPLOY_BIN   default target/deploy/release/vmrp-handler (where `vmrp package` builds it),
#                built first (a given path that is missing fails)
#   DEFAULT_BIN  default target/debug/vmrp
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPLOY_BIN="${1:-target/deploy/release/vmrp-handler}"
DEFAULT_BIN="${2:-target/debug/vmrp}"
# Crates the deploy binary must not link: the emulator, the fakes, the ops package, bench
# (procfs), tables, progress bars, packaging (zip), property tests; and what issue 17 cut for
# size (docs/bench.md, "Deploy binary"): clap (the handler parses its two flags), rand 0.9's
# rand_chacha (rand 0.10, azure_core's, instead), aws-lc-rs (rustls's ring provider), flate2
# (azure_core's gzip/deflate). Kept on purpose: toml (VMRP_POLICY_FILE=*.toml, docs/policy.md).
FORBIDDEN=(vmrp vmrp-emulator vmrp-testing procfs indicatif comfy-table zip proptest clap rand_chacha aws-lc-rs aws-lc-sys flate2)
# The size bound of the (stripped) deploy binary: 8 MiB.
MAX_BYTES=$((8 * 1024 * 1024))
# Literals that live only in crates/vmrp-emulator (control routes, fault-file errors).
MARKERS=("/_emulator/" "invalid faults file")

fail() { echo "check_deploy_build: FAIL: $*" >&2; exit 1; }

# Crate names of a package's graph, one a line.
crates_of() {
  local out
  out="$(cargo tree --offline "$@" --prefix none 2>/dev/null || cargo tree "$@" --prefix none)" \
    || fail "cargo tree $* failed"
  sed -E 's/ v[0-9].*//' <<<"$out" | sort -u
}
deploy_graph="$(crates_of -p vmrp-handler -e normal)"
ops_graph="$(crates_of -p vmrp -e normal,dev)"
grep -qx vmrp-handler <<<"$deploy_graph" || fail "control: vmrp-handler's graph does not name vmrp-handler"
for crate in "${FORBIDDEN[@]}"; do
  grep -qx -- "$crate" <<<"$ops_graph" \
    || fail "control: the ops package's graph has no $crate (renamed? then update FORBIDDEN)"
  if grep -qx -- "$crate" <<<"$deploy_graph"; then
    fail "the deploy binary's graph (cargo tree -p vmrp-handler -e normal) contains $crate"
  fi
done
echo "check_deploy_build: dependency graph ok (vmrp-handler has none of ${FORBIDDEN[*]}; the ops package has all)"

if [[ $# -eq 0 ]]; then
  # The default path: (re)build it, so the binary checked is this tree's deploy build; a no-op
  # when it is up to date. Never skipped: a check that passes without its subject proves nothing.
  cargo build --offline --release -p vmrp-handler --bin vmrp-handler --target-dir target/deploy 2>/dev/null \
    || cargo build --release -p vmrp-handler --bin vmrp-handler --target-dir target/deploy
fi
[[ -f "$DEPLOY_BIN" ]] || fail "$DEPLOY_BIN does not exist (cargo build --release -p vmrp-handler)"
for marker in "${MARKERS[@]}"; do
  if grep -aqF -- "$marker" "$DEPLOY_BIN"; then
    fail "$DEPLOY_BIN contains emulator-only text: $marker"
  fi
done
if "$DEPLOY_BIN" --help 2>&1 | grep -qiE '^\s+(emulate|local|bench|package|plan|status)\b'; then
  fail "$DEPLOY_BIN --help lists an emulator or ops command"
fi
"$DEPLOY_BIN" --help 2>&1 | grep -qiE '^\s+serve\b' || fail "$DEPLOY_BIN --help lists no serve command"
echo "check_deploy_build: $DEPLOY_BIN ($(stat -c %s "$DEPLOY_BIN") bytes) has no emulator text or command"
size="$(stat -c %s "$DEPLOY_BIN")"
(( size <= MAX_BYTES )) || fail "$DEPLOY_BIN is $size bytes, over the $MAX_BYTES-byte (8 MiB) bound (docs/bench.md, \"Deploy binary\"; strip it if it is not the release profile's build)"
echo "check_deploy_build: $DEPLOY_BIN is $size bytes, within $MAX_BYTES (8 MiB)"

if [[ -f "$DEFAULT_BIN" ]]; then
  found=0
  for marker in "${MARKERS[@]}"; do
    grep -aqF -- "$marker" "$DEFAULT_BIN" && found=1
  done
  if [[ $found == 1 ]]; then
    echo "check_deploy_build: control: $DEFAULT_BIN does contain emulator text"
  else
    echo "check_deploy_build: note: $DEFAULT_BIN has none of the markers either; the binary check proves little until the emulator is wired into the default binary"
  fi
fi
