//! Logging for `vmrp`: tracing to stdout (the Functions host records each stdout line as
//! Information and each stderr line as Error, PROTOCOL §1), filtered by `RUST_LOG` (default
//! `info`). JSON lines under the host, readable lines in a terminal.

use tracing_subscriber::EnvFilter;

/// Set by the Functions host (and `local.settings.json`) for every worker it starts.
pub const RUNTIME_VAR: &str = "FUNCTIONS_WORKER_RUNTIME";

/// Whether to log JSON lines: asked for, or running under the Functions host.
pub fn wants_json(flag: bool) -> bool {
    flag || std::env::var_os(RUNTIME_VAR).is_some_and(|v| !v.is_empty())
}

/// Installs the global subscriber writing to stdout (what `vmrp serve` needs under the host).
/// A second call is a no-op (tests, embedded use).
pub fn init(json: bool) {
    init_with(json, false)
}

/// Terminal commands whose stdout is their output (`emulate`'s JSON first line, tables) log to
/// stderr instead.
pub fn init_stderr() {
    init_with(false, true)
}

fn init_with(json: bool, stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer =
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
            if stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(if stderr {
                std::io::IsTerminal::is_terminal(&std::io::stderr())
            } else {
                std::io::IsTerminal::is_terminal(&std::io::stdout())
            })
            .try_init()
    };
}
