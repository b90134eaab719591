//! The deploy binary's command line: `vmrp-handler serve [--log-json] [--shutdown-grace-secs N]`.
//!
//! The Functions host starts the handler with host.json's `arguments` (`["serve"]`) and gives it
//! everything else through the environment, so the deploy binary parses its two flags itself
//! instead of linking clap (docs/bench.md, "Deploy binary"). The flags and their defaults are
//! those of `vmrp serve` (clap, `--features cli`): the same [`ServeArgs`].

use crate::host::serve::DEFAULT_SHUTDOWN_GRACE_SECS;
use crate::host::ServeArgs;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve(ServeArgs),
    Help,
    Version,
}

/// A command line the binary does not understand; the message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}\n\n{USAGE}")]
pub struct UsageError(String);

/// `--help`: the command is indented on its own line, as clap printed it (check_deploy_build.sh
/// looks for it).
pub const USAGE: &str = "\
vmrp's Azure Functions custom handler (started by the Functions host, see host.json)

Usage: vmrp-handler serve [OPTIONS]

Commands:
  serve  Run as the Azure Functions custom handler (started by the host, see host.json)

Options of serve:
      --log-json                       Log JSON lines; automatic under the Functions host
                                       (FUNCTIONS_WORKER_RUNTIME is set)
      --shutdown-grace-secs <SECONDS>  After SIGTERM/SIGINT, how long in-flight invocations may
                                       take to finish [default: 600]
  -h, --help                           Print help
  -V, --version                        Print version";

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err(UsageError("missing the command: serve".into()));
    };
    match first.as_ref() {
        "serve" => {}
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" => return Ok(Command::Version),
        other => {
            return Err(UsageError(format!(
                "unknown command {other:?}: this binary only serves (vmrp-handler serve); the operators' commands are in `vmrp`"
            )))
        }
    }
    let mut serve = ServeArgs::default();
    while let Some(arg) = args.next() {
        let arg = arg.as_ref();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        match name {
            "--log-json" if inline.is_none() => serve.log_json = true,
            "--shutdown-grace-secs" => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next().map(|v| v.as_ref().to_string()).ok_or_else(|| {
                        UsageError("--shutdown-grace-secs needs a value (SECONDS)".into())
                    })?,
                };
                serve.shutdown_grace_secs = value.trim().parse().map_err(|_| {
                    UsageError(format!(
                        "--shutdown-grace-secs {value:?}: expected a whole number of seconds (default {DEFAULT_SHUTDOWN_GRACE_SECS})"
                    ))
                })?;
            }
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => return Err(UsageError(format!("unexpected argument {arg:?} for serve"))),
        }
    }
    Ok(Command::Serve(serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(log_json: bool, shutdown_grace_secs: u64) -> Result<Command, String> {
        Ok(Command::Serve(ServeArgs {
            log_json,
            shutdown_grace_secs,
        }))
    }

    #[test]
    fn parses_what_the_host_and_operators_pass() {
        let table: &[(&[&str], Result<Command, String>)] = &[
            (&["serve"], serve(false, 600)),
            (&["serve", "--log-json"], serve(true, 600)),
            (&["serve", "--shutdown-grace-secs", "1"], serve(false, 1)),
            (
                &["serve", "--shutdown-grace-secs=30", "--log-json"],
                serve(true, 30),
            ),
            (&["--help"], Ok(Command::Help)),
            (&["-h"], Ok(Command::Help)),
            (&["serve", "--help"], Ok(Command::Help)),
            (&["--version"], Ok(Command::Version)),
            (&["-V"], Ok(Command::Version)),
        ];
        for (args, want) in table {
            let got = parse(args.iter()).map_err(|e| e.0);
            assert_eq!(&got, want, "{args:?}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_know_and_says_why() {
        let table: &[(&[&str], &str)] = &[
            (&[], "missing the command: serve"),
            (&["local"], "only serves"),
            (&["serve", "--log-jsn"], "unexpected argument \"--log-jsn\""),
            (
                &["serve", "--log-json=1"],
                "unexpected argument \"--log-json=1\"",
            ),
            (&["serve", "extra"], "unexpected argument \"extra\""),
            (&["serve", "--shutdown-grace-secs"], "needs a value"),
            (
                &["serve", "--shutdown-grace-secs", "soon"],
                "expected a whole number",
            ),
            (
                &["serve", "--shutdown-grace-secs=-1"],
                "expected a whole number",
            ),
        ];
        for (args, want) in table {
            let err = parse(args.iter()).expect_err(&format!("{args:?} must be refused"));
            assert!(err.0.contains(want), "{args:?}: {}", err.0);
            // The whole message carries the usage, so the fix is at hand.
            assert!(
                err.to_string().contains("Usage: vmrp-handler serve"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_usage_lists_serve_as_a_command_the_way_check_deploy_build_looks_for_it() {
        assert!(USAGE
            .lines()
            .any(|l| l.starts_with("  serve ") && l.trim_start().starts_with("serve")));
        for ops in ["emulate", "local", "bench", "package", "plan", "status"] {
            assert!(
                !USAGE.lines().any(|l| l.trim_start().starts_with(ops)),
                "{ops}"
            );
        }
    }
}
