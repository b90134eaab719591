//! Logging for `vmrp`, filtered by `RUST_LOG` (default `info`): JSON lines under the Functions
//! host, readable lines in a terminal.
//!
//! **`RUST_LOG`** takes `level` and `target=level` directives, comma-separated (`info`,
//! `vmrp_handler=debug,hyper=warn`): tracing-subscriber's `Targets`, not `EnvFilter`, whose span
//! and field filters need a regex engine the deploy binary does not link (docs/bench.md). A value
//! it cannot read logs at `info` and says so in a WARN line.
//!
//! **Severity that survives the host.** The host reads a custom handler's console and gives each
//! line a level of its own (`WorkerProcess.cs` in Azure/azure-functions-host, category
//! `Host.Function.Console`): every stdout line is Information; a stderr line is Warning when it
//! contains "warn", Error when it contains "error", "fail" or "severe", else Information (all
//! case-insensitive). So `vmrp serve` writes TRACE/DEBUG/INFO to stdout and WARN/ERROR to stderr,
//! and makes sure the keyword the host looks for decides: a WARN JSON line carries
//! `"level":"WARN"`, an ERROR line `"level":"ERROR"`, and any "warn" inside an ERROR line (a reason
//! quoting an ARM warning) is written with a JSON escape (`w\u0061rn`, the same JSON value), so the
//! host does not demote it to Warning. docs/operations.md explains why this and not the reply's
//! `Logs` (always Information) or an exporter.
//!
//! Terminal commands whose stdout is their output (`emulate`'s JSON first line, tables) log
//! everything to stderr instead ([`init_stderr`]).

use std::io::Write;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter when `RUST_LOG` is unset or blank.
const DEFAULT_FILTER: &str = "info";

/// The filter `RUST_LOG`'s value asks for: `Err` (with the text) when it cannot be read, so the
/// caller can say so; unset or blank is `info`.
pub fn filter_from(rust_log: Option<&str>) -> Result<Targets, String> {
    let text = rust_log.map(str::trim).filter(|t| !t.is_empty());
    match text {
        None => Ok(DEFAULT_FILTER.parse().expect("the default filter parses")),
        Some(t) => t.parse::<Targets>().map_err(|e| format!("{t:?}: {e}")),
    }
}

/// Set by the Functions host (and `local.settings.json`) for every worker it starts.
pub const RUNTIME_VAR: &str = "FUNCTIONS_WORKER_RUNTIME";

/// Whether to log JSON lines: asked for, or running under the Functions host.
pub fn wants_json(flag: bool) -> bool {
    flag || std::env::var_os(RUNTIME_VAR).is_some_and(|v| !v.is_empty())
}

/// Installs the global subscriber of `vmrp serve`: INFO and below to stdout, WARN and ERROR to
/// stderr (module doc). A second call is a no-op (tests, embedded use).
pub fn init(json: bool) {
    init_with(json, Streams::ByLevel { json })
}

/// Terminal commands whose stdout is their output (`emulate`'s JSON first line, tables) log to
/// stderr instead.
pub fn init_stderr() {
    init_with(false, Streams::AllStderr)
}

/// Which stream a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The stream of a line at `level` under the host: the host records stderr lines above
/// Information only (module doc).
pub fn stream_for(level: Level) -> Stream {
    if level <= Level::WARN {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

/// An ERROR JSON line as the host must see it: every "warn" (any case) spelled with a JSON
/// escape for its `a`, so the host's "warn" test does not make it a Warning. Only ever applied
/// to JSON text: there "warn" can only occur inside a string, and `\u0061` decodes to `a`.
pub fn keep_error_level(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let hit = |w: &[u8]| w.eq_ignore_ascii_case(b"warn");
    if !line.windows(4).any(hit) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        if i + 4 <= line.len() && hit(&line[i..i + 4]) {
            out.push(line[i]);
            out.extend_from_slice(if line[i + 1] == b'A' {
                b"\\u0041"
            } else {
                b"\\u0061"
            });
            out.extend_from_slice(&line[i + 2..i + 4]);
            i += 4;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[derive(Debug, Clone, Copy)]
enum Streams {
    AllStderr,
    ByLevel { json: bool },
}

/// One line's writer: the stream, and whether its text needs [`keep_error_level`].
struct LineWriter {
    stream: Stream,
    escape_warn: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer formats a whole event into one buffer and writes it with one call.
        let text = if self.escape_warn {
            keep_error_level(buf)
        } else {
            std::borrow::Cow::Borrowed(buf)
        };
        match self.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&text)?,
            Stream::Stderr => std::io::stderr().lock().write_all(&text)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.stream {
            Stream::Stdout => std::io::stdout().flush(),
            Stream::Stderr => std::io::stderr().flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Streams {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            stream: match self {
                Streams::AllStderr => Stream::Stderr,
                Streams::ByLevel { .. } => Stream::Stdout,
            },
            escape_warn: false,
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        match *self {
            Streams::AllStderr => self.make_writer(),
            Streams::ByLevel { json } => LineWriter {
                stream: stream_for(*meta.level()),
                escape_warn: json && *meta.level() == Level::ERROR,
            },
        }
    }
}

fn init_with(json: bool, streams: Streams) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, unreadable) = match filter_from(rust_log.as_deref()) {
        Ok(f) => (f, None),
        Err(why) => (
            filter_from(None).expect("the default filter parses"),
            Some(why),
        ),
    };
    // The builder's own filter defaults to INFO; `filter` (a layer on top) can only narrow it,
    // so it starts wide open and `filter` decides.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(streams);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        let ansi = match streams {
            Streams::AllStderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
            Streams::ByLevel { .. } => {
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::io::IsTerminal::is_terminal(&std::io::stderr())
            }
        };
        builder.with_ansi(ansi).finish().with(filter).try_init()
    };
    if let (Ok(()), Some(why)) = (installed, unreadable) {
        tracing::warn!(
            "RUST_LOG {why}; logging at {DEFAULT_FILTER} (directives: level or target=level, comma-separated)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_takes_levels_and_targets_and_refuses_what_it_cannot_read() {
        use tracing_subscriber::filter::LevelFilter;
        // (RUST_LOG, Some((target, level, enabled?)) or None = refused)
        type Case<'a> = (Option<&'a str>, Option<(&'a str, Level, bool)>);
        let table: &[Case] = &[
            (None, Some(("vmrp_handler", Level::INFO, true))),
            (Some("  "), Some(("vmrp_handler", Level::DEBUG, false))),
            (Some("debug"), Some(("hyper", Level::DEBUG, true))),
            (
                Some("warn,vmrp_handler=debug"),
                Some(("vmrp_handler::functions", Level::DEBUG, true)),
            ),
            (
                Some("warn,vmrp_handler=debug"),
                Some(("hyper", Level::INFO, false)),
            ),
            (Some("off"), Some(("vmrp_handler", Level::ERROR, false))),
            (Some("vmrp=loud"), None),
        ];
        for (rust_log, want) in table {
            let got = filter_from(*rust_log);
            match want {
                Some((target, level, enabled)) => {
                    let f = got.unwrap_or_else(|e| panic!("{rust_log:?}: {e}"));
                    assert_eq!(
                        f.would_enable(target, level),
                        *enabled,
                        "{rust_log:?} {target} {level}"
                    );
                }
                None => {
                    let why = got.expect_err("must be refused");
                    assert!(why.contains("vmrp=loud"), "{why}");
                }
            }
        }
        assert_eq!(
            filter_from(None).unwrap().default_level(),
            Some(LevelFilter::INFO)
        );
    }

    #[test]
    fn warn_and_error_go_to_stderr_the_rest_to_stdout() {
        for (level, stream) in [
            (Level::ERROR, Stream::Stderr),
            (Level::WARN, Stream::Stderr),
            (Level::INFO, Stream::Stdout),
            (Level::DEBUG, Stream::Stdout),
            (Level::TRACE, Stream::Stdout),
        ] {
            assert_eq!(stream_for(level), stream, "{level}");
        }
    }

    #[test]
    fn error_lines_lose_the_word_warn_but_not_their_json_value() {
        let line = br#"{"level":"ERROR","reason":"ARM said: Warning, WARN and warned","n":1}"#;
        let out = keep_error_level(line);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.to_ascii_lowercase().contains("warn"), "{text}");
        let before: serde_json::Value = serde_json::from_slice(line).unwrap();
        let after: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(before, after);
        // Nothing to do: borrowed as is.
        let plain = br#"{"level":"ERROR","reason":"gave up"}"#;
        assert!(matches!(
            keep_error_level(plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
