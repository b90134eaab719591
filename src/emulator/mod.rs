//! Azure in a box: ARM Compute, Service Bus, the managed-identity endpoint and the Functions host,
//! on one virtual clock, for tests and `vmrp local`. Not part of the deploy build.
//!
//! One listener on 127.0.0.1 serves every service, told apart by path:
//! - ARM: `/subscriptions/...` (api-version 2025-04-01) — [`arm`]
//! - Service Bus REST: `/{queue}/messages`, `/{queue}/$deadletterqueue/...` — [`servicebus`]
//! - managed identity (App Service shape): `/msi/token` — [`identity`]
//! - inspection and control: `/_emulator/...` — [`control`]

pub mod arm;
pub mod clock;
pub mod faults;
