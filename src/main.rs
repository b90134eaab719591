//! The `vmrp` binary: everything lives in the library (`vmrp::cli`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vmrp::cli::main().await
}
