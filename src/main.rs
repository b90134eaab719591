//! TEMPORARY entry point: only `vmrp serve` (the full CLI is merged by the lead).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vmrp",
    version,
    about = "VM restore point automation for Azure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the Azure Functions custom handler (started by the host, see host.json).
    Serve(vmrp::host::ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            vmrp::logging::init(vmrp::logging::wants_json(args.log_json));
            match vmrp::host::run(args).await {
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
