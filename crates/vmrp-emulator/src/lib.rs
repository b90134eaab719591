//! Azure in a box: ARM Compute, Service Bus, the managed-identity endpoint and the Functions host,
//! on one virtual clock, for tests and `vmrp local`. Not part of the deploy build.
//!
//! One listener on 127.0.0.1 serves every service, told apart by path
//! ([`server`](crate::server)):
//! - ARM: `/subscriptions/...` (api-version 2025-04-01) — [`arm`](crate::arm), behind
//!   [`require_arm_token`](crate::identity::require_arm_token)
//! - Service Bus REST: `/{queue}/messages` — [`servicebus`](crate::servicebus)
//! - managed identity (App Service shape): `/msi/token` — [`identity`](crate::identity)
//! - Table storage (the drill ledger): `/table/{account}/…` — [`table`](crate::table)
//! - inspection and control: `/_emulator/...` — [`server`](crate::server)
//!
//! [`host_sim`](crate::host_sim) plays the Functions host against a custom handler;
//! `vmrp emulate` (the command) lives in the `vmrp` package (`src/emulator/cli.rs`).
//!
//! Knows: the platform rules it models (cited in docs/emulator-arm.md), HTTP. Must not be linked
//! into the deploy binary (vmrp-handler does not depend on it; infra/tests/check_deploy_build.sh).

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use vmrp_azure as azure;
use vmrp_core::{messages, policy, schedule};

pub mod arm;
pub mod clock;
pub mod faults;
pub mod host_sim;
pub mod identity;
pub mod server;
pub mod servicebus;
pub mod table;
