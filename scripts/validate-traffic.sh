#!/usr/bin/env bash
# Validates recorded ARM traffic (oav traffic files, one JSON per request/response pair) against
# the copied Compute 2025-04-01 swagger, offline. Installs oav 4.0.3 into a cache directory on
# first use (needs the npm registry once).
#
#   scripts/validate-traffic.sh DIR
#
# Exit 0 when oav reports "No errors were found.", non-zero otherwise. Prints the oav path as
# `VMRP_OAV=...` so tests can use it: `VMRP_OAV=$(...) cargo test --test emulator_arm`.
set -euo pipefail

dir="${1:?usage: $0 TRAFFIC_DIR}"
[ -d "$dir" ] || { echo "error: '$dir' is not a directory of traffic files" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shared="${VMRP_SHARED:-$here/../../shared}"
spec="$shared/reference/arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01"
[ -d "$spec" ] || { echo "error: swagger not found at $spec (set VMRP_SHARED)" >&2; exit 2; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/vmrp-oav"
oav="$cache/node_modules/.bin/oav"
if [ ! -x "$oav" ]; then
    command -v npm >/dev/null || { echo "error: npm is needed to install oav@4.0.3" >&2; exit 2; }
    mkdir -p "$cache"
    npm install --prefix "$cache" --no-audit --no-fund oav@4.0.3 >&2
fi
echo "VMRP_OAV=$oav" >&2

# `--report ""`: without it oav 4.0.3 tries to write an HTML report from a template missing in
# the npm package and exits 1 even for valid traffic (VALIDATING.md).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
"$oav" validate-traffic "$dir" "$spec" --report "" >"$log" 2>&1 || status=$?
cat "$log"
if [ "$status" -ne 0 ] || ! grep -q "No errors were found" "$log"; then
    echo "traffic in $dir does not validate (oav exit $status)" >&2
    exit 1
fi
