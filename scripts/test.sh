#!/usr/bin/env bash
# vmrp's test command: the Rust test suite (unit, protocol, client, emulator, lifecycle, chaos
# and security tests), the ARM traffic check with oav, and the infra checks (pytest + checkov).
# Installs missing tools first when the registries are reachable (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
export VMRP_TOOLS="$TOOLS"
if [ ! -x "$TOOLS/oav/node_modules/.bin/oav" ]; then
  scripts/setup.sh
fi
export VMRP_OAV="$TOOLS/oav/node_modules/.bin/oav"

cargo test ${CARGO_TEST_FLAGS:-} --all-targets

# The client's requests and the official examples' responses, recorded, checked against the swagger
# (the emulator's own recorded traffic is checked inside its test suite with the same oav).
rm -rf target/arm-traffic
VMRP_TRAFFIC_DIR=target/arm-traffic cargo test ${CARGO_TEST_FLAGS:-} --test azure_arm example_ -q
scripts/validate-traffic.sh target/arm-traffic

infra/tests/run.sh
infra/tests/check_deploy_build.sh
