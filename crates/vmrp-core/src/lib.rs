//! vmrp-core: the pure part of vmrp, in the manner of kube-core. ARM's wire types (ids, models,
//! the [`azure::Arm`] / [`azure::Scheduler`] traits the handlers call), the policy, schedules,
//! names, queue messages, and every decision (tick planning, poll, retention) as plain functions.
//!
//! Knows: Azure's resource shapes and vmrp's rules. Must not know: HTTP (no reqwest), a runtime
//! (no tokio outside tests), the Functions host, the emulator, the test fakes.

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

/// ARM's wire types and the traits behind which vmrp-azure speaks HTTP to Azure.
pub mod azure;
/// Typed trigger events (timer, VM change events).
pub mod events;
/// The handler contract: `Invocation<T>`, `Context`, `Outcome`.
pub mod invocation;
/// The versioned queue messages.
pub mod messages;
/// Deterministic resource names and message ids.
pub mod names;
/// Tick planning for the timer: one paced create per VM within ARM's write budget.
pub mod plan;
/// The policy model, target matching and validation.
pub mod policy;
/// What to do after one look at a restore point: poll again, settled, retry, give up.
pub mod poll;
/// Retention: which restore points of a collection to keep or delete, with reasons.
pub mod retention;
/// NCRONTAB schedules: next occurrence, the tick a run belongs to, spacing.
pub mod schedule;

/// The fakes of vmrp-testing, compiled into this crate's own unit tests. A dev-dependency on
/// vmrp-testing would not do: it depends on this crate, so its fakes would speak a second copy
/// of these types (cargo builds the crate under test apart from the library the fakes link).
#[cfg(test)]
#[path = "../../vmrp-testing/src/fakes/mod.rs"]
#[allow(dead_code)]
mod testing;
