#!/usr/bin/env bash
# Installs the tools vmrp's tests use besides cargo, into a cache folder (needs the package
# registries; run before going offline): oav (npm) for ARM traffic validation, the infra checks'
# Python venv (pytest, checkov, pycep), and headless Chromium (Debian package) for the HTML
# report's browser test (tests/html_report.rs). Idempotent: re-running skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/oav/node_modules/.bin/oav" ]; then
  echo "setup: installing oav 4.0.3 into $TOOLS/oav"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/oav" oav@4.0.3 >/dev/null
fi

# Chromium renders the HTML coverage report in tests/html_report.rs (which fails under CI=true
# without it). Debian's package; apt needs root (or sudo).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${VMRP_CHROMIUM:-}" ]; then
  echo "setup: installing chromium (Debian package)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

# pytest + checkov for the infra checks, pinned in infra/tests/run.sh.
infra/tests/run.sh --setup
echo "setup: tools ready in $TOOLS"
