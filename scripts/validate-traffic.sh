#!/usr/bin/env bash
# Validates recorded ARM traffic (oav traffic files, one JSON per request/response pair) against
# the vendored Microsoft.Compute 2025-04-01 swagger, offline (reference/arm/VALIDATING.md).
#
#   scripts/validate-traffic.sh DIR
#
# Traffic comes from the client (VMRP_TRAFFIC_DIR=DIR cargo test --test azure_arm example_) or
# the emulator (vmrp emulate --record-traffic DIR, or the emulator_arm tests). oav@4.0.3 is
# installed once into $VMRP_TOOLS/oav (scripts/setup.sh; needs the npm registry that once).
# Exit 0 only when oav exits 0 and reports "No errors were found.".
set -euo pipefail

dir="${1:?usage: $0 TRAFFIC_DIR}"
[ -d "$dir" ] || { echo "error: '$dir' is not a directory of traffic files" >&2; exit 2; }
count=$(find "$dir" -name '*.json' | wc -l)
[ "$count" -gt 0 ] || { echo "error: no traffic files in $dir" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
spec="$here/../reference/arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01"
[ -d "$spec" ] || { echo "error: swagger not found at $spec" >&2; exit 2; }

tools="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
oav="${VMRP_OAV:-$tools/oav/node_modules/.bin/oav}"
if [ ! -x "$oav" ]; then
    command -v npm >/dev/null || { echo "error: npm is needed to install oav@4.0.3" >&2; exit 2; }
    mkdir -p "$tools/oav"
    npm install --silent --prefix "$tools/oav" --no-audit --no-fund oav@4.0.3 >&2
    oav="$tools/oav/node_modules/.bin/oav"
fi

# `--report ""`: without it oav 4.0.3 tries to write an HTML report from a template missing in
# the npm package and exits 1 even for valid traffic (VALIDATING.md).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "validating $count traffic files in $dir" >&2
status=0
"$oav" validate-traffic "$dir" "$spec" --report "" >"$log" 2>&1 || status=$?
tail -n 20 "$log"
if [ "$status" -ne 0 ] || ! grep -q "No errors were found" "$log"; then
    echo "traffic in $dir does not validate (oav exit $status)" >&2
    exit 1
fi
