#!/usr/bin/env bash
# Validates recorded ARM traffic (oav traffic format, one JSON file per request/response pair)
# against the copied Microsoft.Compute 2025-04-01 swagger, offline.
#
#   scripts/validate-traffic.sh DIR
#
# Record the traffic first, e.g.:
#   VMRP_TRAFFIC_DIR=target/arm-traffic cargo test --test azure_arm example_
#
# oav@4.0.3 is installed once into $VMRP_OAV_DIR (default ~/.cache/vmrp-oav) with npm.
# `--report ""` is required with oav 4.0.3 (its HTML template is missing from the package).
set -euo pipefail

if [[ $# -ne 1 || ! -d "$1" ]]; then
    echo "usage: $0 DIR   (DIR = folder of recorded traffic files)" >&2
    exit 2
fi
traffic_dir=$(cd "$1" && pwd)
repo_root=$(cd "$(dirname "$0")/.." && pwd)
spec="$repo_root/../shared/reference/arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01"
if [[ ! -d "$spec" ]]; then
    echo "spec folder not found: $spec" >&2
    exit 2
fi
oav_dir=${VMRP_OAV_DIR:-$HOME/.cache/vmrp-oav}
oav="$oav_dir/node_modules/.bin/oav"
if [[ ! -x "$oav" ]] || [[ "$("$oav" --version 2>/dev/null | tail -n1)" != "4.0.3" ]]; then
    echo "installing oav@4.0.3 into $oav_dir" >&2
    mkdir -p "$oav_dir"
    npm install --prefix "$oav_dir" --no-audit --no-fund oav@4.0.3 >"$oav_dir/install.log" 2>&1 \
        || { cat "$oav_dir/install.log" >&2; exit 2; }
fi
count=$(find "$traffic_dir" -name '*.json' | wc -l)
if [[ "$count" -eq 0 ]]; then
    echo "no traffic files in $traffic_dir" >&2
    exit 2
fi
echo "validating $count traffic files in $traffic_dir" >&2
report="$oav_dir/report.json"
"$oav" validate-traffic "$traffic_dir" "$spec" --report "" --jsonReport "$report"
