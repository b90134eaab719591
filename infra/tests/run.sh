#!/usr/bin/env bash
# Checks the Azure templates offline: structural tests (pytest, infra/tests/test_infra.py) and
# checkov's Bicep policies. Creates a pinned virtualenv in a cache directory on first use.
#   infra/tests/run.sh            # from anywhere in the repo
#   infra/tests/run.sh --setup    # only create the virtualenv (needs PyPI; CI runs this before going offline)
#   VMRP_INFRA_VENV=/path ...     # to choose where the virtualenv lives
set -euo pipefail
cd "$(dirname "$0")/../.."

PINS=(
  "checkov==3.3.30"     # Bicep scanning; brings pycep-parser (the Bicep parser the tests use) and PyYAML
  "pycep-parser==0.5.1"
  "pytest==8.4.2"
)
VENV="${VMRP_INFRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vmrp-infra/venv}"
STAMP="$VENV/.vmrp-pins"

if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "${PINS[*]}" ]]; then
  echo "infra: creating virtualenv in $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$STAMP"
fi
[[ "${1:-}" == "--setup" ]] && exit 0

"$VENV/bin/python" -m pytest -q infra/tests

# (A template checkov cannot parse fails the pytest run above: test_every_template_parses uses the
# same parser.) --skip-download: no calls to the vendor's API (offline, no guideline texts).
"$VENV/bin/checkov" -d infra --framework bicep --compact --skip-download --quiet
echo "infra: checkov found no failed checks"
