//! vmrp: VM restore point automation for Azure, run as an Azure Functions custom handler.

/// Everything that speaks HTTP to Azure: ARM client, credentials, Service Bus scheduler.
pub mod azure;
/// `vmrp bench`: the figures of docs/bench.md, vmrp beside a Python SDK peer on the emulator.
#[cfg(feature = "emulator")]
pub mod bench;
/// The command line: subcommands and exit codes.
pub mod cli;
/// Terminal commands: status, plan.
pub mod commands;
/// Settings from the environment → handler dependencies.
pub mod config;
/// The timer's coverage signal: VMs covered / expected per rule, region and role.
pub mod coverage;
/// Restore drills: restore a point as disks into a drill group, time it, delete it.
pub mod drill;
/// The emulator of Azure and the Functions host (not in the deploy build).
#[cfg(feature = "emulator")]
pub mod emulator;
/// Typed trigger events (timer, VM change events).
pub mod events;
/// The seven functions and their dependencies.
pub mod functions;
/// The custom-handler transport: envelope decoding, routing, error mapping.
pub mod host;
/// The self-contained HTML coverage report (`status --html`, `local --html`).
pub mod html_report;
/// Read-only coverage: VMs, their collections (by source.id) and points.
pub mod inventory;
/// The handler contract: `Invocation<T>`, `Context`, `Outcome`.
pub mod invocation;
/// `vmrp local`: emulator + host simulation + this handler, one command.
#[cfg(feature = "emulator")]
pub mod local;
/// tracing setup: JSON lines under the Functions host (WARN/ERROR on stderr), readable lines in a
/// terminal.
pub mod logging;
/// The versioned queue messages.
pub mod messages;
/// Deterministic resource names and message ids.
pub mod names;
/// `vmrp package`: the Functions deployment package (host.json, function folders, binary, zip).
pub mod package;
/// Tick planning for the timer: one paced create per VM within ARM's write budget.
pub mod plan;
/// The policy model, target matching and validation.
pub mod policy;
/// What to do after one look at a restore point: poll again, settled, retry, give up.
pub mod poll;
/// Restore planning: which point, and the ARM calls that bring its disks (and a VM) back.
pub mod restore;
/// Retention: which restore points of a collection to keep or delete, with reasons.
pub mod retention;
/// NCRONTAB schedules: next occurrence, the tick a run belongs to, spacing.
pub mod schedule;
/// In-memory fakes of ARM and the scheduler, and fixture builders, for tests.
#[cfg(any(test, feature = "emulator"))]
pub mod testing;
