//! vmrp: VM restore point automation for Azure, run as an Azure Functions custom handler.

/// Everything that speaks HTTP to Azure: ARM client, credentials, Service Bus scheduler.
pub mod azure;
/// Terminal commands: status, plan.
pub mod commands;
/// Settings from the environment → handler dependencies.
pub mod config;
/// The emulator of Azure and the Functions host (not in the deploy build).
#[cfg(feature = "emulator")]
pub mod emulator;
/// Typed trigger events (timer, VM change events).
pub mod events;
/// The five functions and their dependencies.
pub mod functions;
/// The custom-handler transport: envelope decoding, routing, error mapping.
pub mod host;
/// Read-only coverage: VMs, their collections (by source.id) and points.
pub mod inventory;
/// The handler contract: `Invocation<T>`, `Context`, `Outcome`.
pub mod invocation;
/// tracing setup: JSON lines under the Functions host, readable lines in a terminal.
pub mod logging;
/// The versioned queue messages.
pub mod messages;
/// Deterministic resource names and message ids.
pub mod names;
/// `vmrp package`: the Functions deployment package (host.json, function folders, binary, zip).
pub mod package;
/// The policy model, target matching and validation.
pub mod policy;
/// Retention: which restore points of a collection to keep or delete, with reasons.
pub mod retention;
/// NCRONTAB schedules: next occurrence, the tick a run belongs to, spacing.
pub mod schedule;
