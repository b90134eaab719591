#!/usr/bin/env bash
# Installs the tools vmrp's tests use besides cargo, into a cache folder (needs the package
# registries; run before going offline): oav (npm) for ARM traffic validation, and the infra checks'
# Python venv (pytest, checkov, pycep). Idempotent: re-running skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/oav/node_modules/.bin/oav" ]; then
  echo "setup: installing oav 4.0.3 into $TOOLS/oav"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/oav" oav@4.0.3 >/dev/null
fi

# pytest + checkov for the infra checks, pinned in infra/tests/run.sh.
infra/tests/run.sh --setup
echo "setup: tools ready in $TOOLS"
