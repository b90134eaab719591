//! `vmrp-handler`: the deploy binary. The Functions host starts it as `vmrp-handler serve`
//! (host.json); it serves the functions and nothing else. Operators' tools are `vmrp`.

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vmrp's Azure Functions custom handler (started by the Functions host, see host.json).
#[derive(Debug, Parser)]
#[command(name = "vmrp-handler", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as the Azure Functions custom handler (started by the host, see host.json).
    Serve(vmrp_handler::host::ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            vmrp_handler::logging::init(vmrp_handler::logging::wants_json(args.log_json));
            match vmrp_handler::host::run(args).await {
                Ok(code) => code,
                Err(e) => {
                    // stderr: the host logs it as an Error, next to its own restart messages.
                    eprintln!("vmrp serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
