//! `vmrp-handler`: the deploy binary. The Functions host starts it as `vmrp-handler serve`
//! (host.json); it serves the functions and nothing else. Operators' tools are `vmrp`.

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::process::ExitCode;

use vmrp_handler::args::{self, Command};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("vmrp-handler {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vmrp-handler: {e}");
            // clap's code for a usage error, as before.
            return ExitCode::from(2);
        }
    };
    vmrp_handler::logging::init(vmrp_handler::logging::wants_json(args.log_json));
    let runtime = match vmrp_handler::host::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmrp serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vmrp_handler::host::run(args)) {
        Ok(code) => code,
        Err(e) => {
            // stderr: the host logs it as an Error, next to its own restart messages.
            eprintln!("vmrp serve: {e}");
            ExitCode::FAILURE
        }
    }
}
