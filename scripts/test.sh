#!/usr/bin/env bash
# vmrp's test command: the Rust test suite (unit, protocol, client, emulator, lifecycle, chaos
# and security tests), the deploy build's unit tests and binary check, the ARM traffic check with
# oav, and the infra checks (pytest + checkov).
# Installs missing tools first when the registries are reachable (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${VMRP_TOOLS:-$HOME/.cache/vmrp-tools}"
export VMRP_TOOLS="$TOOLS"
if [ ! -x "$TOOLS/oav/node_modules/.bin/oav" ]; then
  scripts/setup.sh
fi
export VMRP_OAV="$TOOLS/oav/node_modules/.bin/oav"
# Tests that validate traffic with oav fail, not skip, when it is missing.
export VMRP_REQUIRE_OAV=1

# Every crate of the workspace (the deploy binary's, crates/vmrp-handler, included). Includes the
# CI-sized soak (tests/chaos.rs) and a whole scenario's ARM traffic checked by oav
# (tests/e2e_cli.rs); infra/tests/check_deploy_build.sh below builds and checks the deploy binary.
cargo test ${CARGO_TEST_FLAGS:-} --workspace --all-targets

# The client's requests and the official examples' responses, recorded, checked against the swagger
# (the emulator's own recorded traffic is checked inside its test suite with the same oav).
rm -rf target/arm-traffic
VMRP_TRAFFIC_DIR=target/arm-traffic cargo test ${CARGO_TEST_FLAGS:-} --test azure_arm example_ -q
scripts/validate-traffic.sh target/arm-traffic

infra/tests/run.sh
infra/tests/check_deploy_build.sh
