#!/usr/bin/env bash
# Installs the tools vmrp's tests use besides cargo, into a cache folder (needs the package
# registries; run before going offline): oav (npm) for ARM traffic validation, and a Python venv
# with pytest + checkov for the infra checks. Idempotent: re-running skips what is there.
set -euo pipefail
TOOLS="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/oav/node_modules/.bin/oav" ]; then
  echo "setup: installing oav 4.0.3 into $TOOLS/oav"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/oav" oav@4.0.3 >/dev/null
fi

if [ ! -x "$TOOLS/venv/bin/checkov" ] || [ ! -x "$TOOLS/venv/bin/pytest" ]; then
  echo "setup: creating Python venv with pytest and checkov in $TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check pytest==8.3.5 checkov==3.2.469
fi
echo "setup: tools ready in $TOOLS"
