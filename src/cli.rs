//! The `vmrp` command line: one subcommand per job, each delegating to its module's `run`.

use std::fmt::Display;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// VM restore point automation for Azure.
///
/// Runs as an Azure Functions custom handler (`vmrp serve`), and carries an emulator of Azure
/// (`vmrp emulate`, `vmrp local`) plus read-only tools for operators (`plan`, `status`).
#[derive(Debug, Parser)]
#[command(name = "vmrp", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as the Azure Functions custom handler (started by the host, see host.json).
    Serve(crate::host::ServeArgs),
    /// Dry run: every create, copy and delete the policy would do now, with reasons (read-only).
    Plan(crate::commands::plan::PlanArgs),
    /// Coverage now: newest settled point per VM and region, late or missing points, copies in flight.
    Status(crate::commands::status::StatusArgs),
    /// Restore a VM's disks (and optionally a new VM, or the VM in place) from a restore point.
    Restore(crate::commands::restore::RestoreArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Assemble the deployable Functions package (host.json, function folders, the binary).
    Package(crate::package::PackageArgs),
    /// Run an emulated Azure (ARM, Service Bus, managed identity, Functions host) on 127.0.0.1.
    Emulate(crate::emulator::cli::EmulateArgs),
    /// See it work: emulator + Functions host simulation + this handler, a fleet, a few ticks.
    Local(crate::local::LocalArgs),
    /// Benchmarks: vmrp beside a Python SDK peer on the emulator (see docs/bench.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file with the same messages the functions log.
    Check(crate::policy::check::PolicyCheckArgs),
}

/// Parses the command line, runs the command, and turns its result into an exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            crate::logging::init(crate::logging::wants_json(args.log_json));
            // stderr: the host logs it as an Error, next to its own restart messages.
            finish("vmrp serve", crate::host::run(args).await)
        }
        Command::Plan(args) => {
            quiet_logging();
            finish("vmrp plan", crate::commands::plan::run(args).await)
        }
        Command::Status(args) => {
            quiet_logging();
            finish("vmrp status", crate::commands::status::run(args).await)
        }
        Command::Restore(args) => {
            quiet_logging();
            finish("vmrp restore", crate::commands::restore::run(args).await)
        }
        Command::Policy(PolicyCommand::Check(args)) => {
            finish("vmrp policy check", crate::policy::check::run(args).await)
        }
        Command::Package(args) => {
            quiet_logging();
            finish("vmrp package", crate::package::run(args).await)
        }
        Command::Emulate(args) => {
            crate::logging::init_stderr();
            finish("vmrp emulate", crate::emulator::cli::run(args).await)
        }
        Command::Local(args) => finish("vmrp local", crate::local::run(args).await),
        Command::Bench(args) => {
            quiet_logging();
            finish("vmrp bench", crate::bench::run(args).await)
        }
    }
}

/// Terminal tools print tables on stdout; only warnings and errors go to the log, on stderr.
fn quiet_logging() {
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    crate::logging::init_stderr();
}

fn finish<E: Display>(what: &str, result: Result<ExitCode, E>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}
