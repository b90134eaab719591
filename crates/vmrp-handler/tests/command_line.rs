//! The deploy binary's command line, end to end: what the Functions host runs (`vmrp-handler
//! serve`, host.json) and what an operator typing it gets. The parser's table tests are in
//! src/args.rs; these check that main wires them to exit codes and streams.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vmrp-handler");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        // No port: `serve` must stop at its first check, before any network or credential.
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("RUST_LOG")
        .output()
        .expect("the deploy binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_answer_on_stdout_and_exit_0() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let out = text(&help.stdout);
    assert!(out.contains("Usage: vmrp-handler serve"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  serve ")), "{out}");
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        text(&version.stdout).trim(),
        format!("vmrp-handler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_wrong_command_line_exits_2_with_the_reason_and_the_usage() {
    for args in [
        &[][..],
        &["local"][..],
        &["serve", "--log-jsn"][..],
        &["serve", "--shutdown-grace-secs", "soon"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("vmrp-handler: "), "{args:?}: {err}");
        assert!(err.contains("Usage: vmrp-handler serve"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn serve_with_its_flags_gets_to_the_port_check() {
    // The flags parse, logging starts, and serve refuses to start without the host's port.
    let out = run(&["serve", "--log-json", "--shutdown-grace-secs=5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("FUNCTIONS_CUSTOMHANDLER_PORT is not set"),
        "{err}"
    );
}
