//! The `vmrp` binary: everything lives in the library (`vmrp::cli`).

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vmrp::cli::main().await
}
