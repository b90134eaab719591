//! vmrp: VM restore point automation for Azure, run as an Azure Functions custom handler.
//!
//! This package is the ops side and the one `vmrp` command for users: `plan`, `status`,
//! `restore`, `policy check`, `package`, `local`, `emulate`, `bench` (and `serve`, the handler,
//! for `vmrp local`). The product lives in the workspace's crates (docs/architecture.md):
//! vmrp-core (pure types and decisions), vmrp-azure (HTTP to Azure), vmrp-handler (host +
//! functions, the deploy binary `vmrp-handler`), vmrp-emulator, vmrp-testing (fakes). Their
//! modules are re-exported here, so `vmrp::policy::...` and the like keep their paths.

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub use vmrp_handler::{
    azure, config, coverage, drill, events, functions, host, inventory, invocation, logging,
    messages, names, plan, policy, poll, restore, retention, schedule,
};
/// In-memory fakes of ARM and the scheduler, and fixture builders, for tests (vmrp-testing).
pub use vmrp_testing as testing;

/// The emulator of Azure and the Functions host (vmrp-emulator), and `vmrp emulate`.
pub mod emulator {
    pub use vmrp_emulator::*;
    /// `vmrp emulate`: the emulator as a standalone process.
    pub mod cli;
}

/// `vmrp bench`: the figures of docs/bench.md, vmrp beside a Python SDK peer on the emulator.
pub mod bench;
/// The command line: subcommands and exit codes.
pub mod cli;
/// Terminal commands: status, plan.
pub mod commands;
/// The self-contained HTML coverage report (`status --html`, `local --html`).
pub mod html_report;
/// `vmrp local`: emulator + host simulation + this handler, one command.
pub mod local;
/// `vmrp package`: the Functions deployment package (host.json, function folders, binary, zip).
pub mod package;
