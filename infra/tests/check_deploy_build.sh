#!/usr/bin/env bash
# Checks that the deploy build (`cargo build --release --no-default-features`) leaves out the
# emulator, in two ways:
#   1. feature graph (no build needed): without default features nothing turns on vmrp's
#      `emulator` feature; with them it is on (the control, so the check cannot pass vacuously);
#   2. the binary (built here when no path is given): strings only the emulator contains are absent from the deploy
#      binary, and its --help lists no emulator command. If the default build is at hand and
#      contains those strings, that is reported as the control.
# Usage: infra/tests/check_deploy_build.sh [DEPLOY_BIN] [DEFAULT_BIN]
#   DEPLOY_BIN   default target/deploy/release/vmrp (where `vmrp package` builds it), built first (a given path that is missing fails)
#   DEFAULT_BIN  default target/debug/vmrp
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPLOY_BIN="${1:-target/deploy/release/vmrp}"
DEFAULT_BIN="${2:-target/debug/vmrp}"
# Literals that live only in src/emulator (control routes, fault-file errors).
MARKERS=("/_emulator/" "invalid faults file")

fail() { echo "check_deploy_build: FAIL: $*" >&2; exit 1; }

features_with() { cargo tree --offline -e features -i vmrp "$@" 2>/dev/null || cargo tree -e features -i vmrp "$@"; }
features_with | grep -q 'vmrp feature "emulator"' \
  || fail "control: the default build does not enable the emulator feature (did its name change?)"
if features_with --no-default-features | grep -q 'vmrp feature "emulator"'; then
  fail "the deploy build (--no-default-features) still enables the emulator feature"
fi
echo "check_deploy_build: feature graph ok (emulator on by default, off in the deploy build)"

if [[ $# -eq 0 ]]; then
  # The default path: (re)build it, so the binary checked is this tree's deploy build; a no-op
  # when it is up to date. Never skipped: a check that passes without its subject proves nothing.
  cargo build --offline --release --no-default-features --bin vmrp --target-dir target/deploy 2>/dev/null \
    || cargo build --release --no-default-features --bin vmrp --target-dir target/deploy
fi
[[ -f "$DEPLOY_BIN" ]] || fail "$DEPLOY_BIN does not exist (cargo build --release --no-default-features)"
for marker in "${MARKERS[@]}"; do
  if grep -aqF -- "$marker" "$DEPLOY_BIN"; then
    fail "$DEPLOY_BIN contains emulator-only text: $marker"
  fi
done
if "$DEPLOY_BIN" --help 2>&1 | grep -qiE '^\s+(emulate|local)\b'; then
  fail "$DEPLOY_BIN --help lists an emulator command"
fi
echo "check_deploy_build: $DEPLOY_BIN ($(stat -c %s "$DEPLOY_BIN") bytes) has no emulator text or command"

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
