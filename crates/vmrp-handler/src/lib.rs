//! vmrp-handler: the Azure Functions custom handler, in the manner of kube-runtime on top of
//! kube-core and kube-client. The host transport (`host`: envelopes, routing, error mapping), the
//! functions (typed event + context in, typed outcome out, I/O through vmrp-core's traits), their
//! settings and logging. Its binary, `vmrp-handler`, is the deploy binary: `vmrp package` ships it.
//!
//! Knows: the Functions envelope (only `host`), the functions' work. Must not know (by
//! construction, it does not depend on them): the emulator, the test fakes, the ops tools (bench,
//! tables, progress bars, packaging). infra/tests/check_deploy_build.sh fails if one comes back.

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

/// Everything that speaks HTTP to Azure (vmrp-azure, with vmrp-core's wire types).
pub use vmrp_azure as azure;
pub use vmrp_core::{events, invocation, messages, names, plan, policy, poll, retention, schedule};
#[cfg(test)]
use vmrp_testing as testing;

/// The deploy binary's command line (`vmrp-handler serve`), parsed without clap.
pub mod args;
/// Settings from the environment → handler dependencies.
pub mod config;
/// The timer's coverage signal: VMs covered / expected per rule, region and role.
pub mod coverage;
/// Restore drills: restore a point as disks into a drill group, time it, delete it.
pub mod drill;
/// The seven functions and their dependencies.
pub mod functions;
/// The custom-handler transport: envelope decoding, routing, error mapping.
pub mod host;
/// Read-only coverage: VMs, their collections (by source.id) and points.
pub mod inventory;
/// tracing setup: JSON lines under the Functions host (WARN/ERROR on stderr), readable lines in a
/// terminal.
pub mod logging;
/// Restore planning: which point, and the ARM calls that bring its disks (and a VM) back.
pub mod restore;
