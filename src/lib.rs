//! vmrp: VM restore point automation for Azure, run as an Azure Functions custom handler.

/// Everything that speaks HTTP to Azure: ARM client, credentials, Service Bus scheduler.
pub mod azure;
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
/// The handler contract: `Invocation<T>`, `Context`, `Outcome`.
pub mod invocation;
/// tracing setup: JSON lines under the Functions host, readable lines in a terminal.
pub mod logging;
/// The versioned queue messages.
pub mod messages;
/// Deterministic resource names and message ids.
pub mod names;
/// The policy model, target matching and validation.
pub mod policy;
/// NCRONTAB schedules: next occurrence, the tick a run belongs to, spacing.
pub mod schedule;
