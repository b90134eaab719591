//! Azure in a box: ARM Compute, Service Bus, the managed-identity endpoint and the Functions host,
//! on one virtual clock, for tests and `vmrp local`. Not part of the deploy build.
//!
//! One listener on 127.0.0.1 serves every service, told apart by path
//! ([`server`](crate::emulator::server)):
//! - ARM: `/subscriptions/...` (api-version 2025-04-01) — [`arm`](crate::emulator::arm), behind
//!   [`require_arm_token`](crate::emulator::identity::require_arm_token)
//! - Service Bus REST: `/{queue}/messages` — [`servicebus`](crate::emulator::servicebus)
//! - managed identity (App Service shape): `/msi/token` — [`identity`](crate::emulator::identity)
//! - inspection and control: `/_emulator/...` — [`server`](crate::emulator::server)
//!
//! [`host_sim`](crate::emulator::host_sim) plays the Functions host against a custom handler;
//! [`cli`](crate::emulator::cli) is `vmrp emulate`.

pub mod arm;
pub mod cli;
pub mod clock;
pub mod faults;
pub mod host_sim;
pub mod identity;
pub mod server;
pub mod servicebus;
