//! `vmrp emulate`: runs the emulator (and optionally the Functions host simulation with the
//! handler) on 127.0.0.1 until SIGINT/SIGTERM. The first stdout line is one JSON object with
//! the URLs, subscriptions and test credentials, so scripts can read it and go.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use time::OffsetDateTime;

use super::arm::{ArmConfig, FleetSpec};
use super::faults::FaultConfig;
use super::host_sim::HostSimConfig;
use super::server::{start, BusAuth, EmulatorConfig, EmulatorError};

/// The app setting the timer's schedule comes from, and its default when unset.
const SCHEDULE_SETTING: &str = "VMRP_SCHEDULE";
const DEFAULT_SCHEDULE: &str = "0 0 */4 * * *";

/// Run an emulated Azure (ARM Compute, Service Bus, managed identity, Functions host) locally.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulateArgs {
    /// Port to listen on (127.0.0.1 only); 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Number of VMs in the generated fleet.
    #[arg(long, default_value_t = 20)]
    pub fleet: usize,
    /// Regions of the fleet, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "westeurope,northeurope")]
    pub regions: Vec<String>,
    /// Virtual seconds per real second (e.g. 600 makes 10 minutes pass in one second).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Fault injection file (JSON; see `emulator::faults`).
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Record ARM traffic into this directory.
    #[arg(long, value_name = "DIR")]
    pub record_traffic: Option<PathBuf>,
    /// Write the full emulator state as JSON to FILE on shutdown.
    #[arg(long, value_name = "FILE")]
    pub dump_state: Option<PathBuf>,
    /// Seed for the fleet and every random fault decision (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Virtual start time, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Also run the Functions host simulation for the app in DIR (host.json + function
    /// folders), starting its custom handler wired to this emulator.
    #[arg(long, value_name = "DIR")]
    pub app_root: Option<PathBuf>,
    /// Start this handler program instead of host.json's defaultExecutablePath.
    #[arg(long, value_name = "PATH", requires = "app_root")]
    pub handler: Option<PathBuf>,
    /// Extra app setting for the handler, KEY=VALUE (repeatable), e.g. VMRP_SCHEDULE=0 0 * * * *.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// How the handler authenticates to Service Bus: `sas` (connection string with the key) or
    /// `identity` (tokens from the managed-identity endpoint).
    #[arg(long, value_enum, default_value_t = BusAuth::Sas)]
    pub bus_auth: BusAuth,
    /// Do not require a token on ARM requests (any bearer token, and for tokens this emulator's
    /// identity endpoint issued, the right audience): for poking at it by hand.
    #[arg(long)]
    pub no_arm_auth: bool,
    /// Service Bus maxDeliveryCount of every queue.
    #[arg(long, default_value_t = 10)]
    pub max_delivery_count: u32,
    /// Fire each timer at most N times (host simulation).
    #[arg(long, value_name = "N")]
    pub timer_ticks: Option<u32>,
    /// Handler instances the host simulation starts (each its own process, port and in-memory
    /// cache, competing for invocations like Flex Consumption instances; 1 to 16).
    #[arg(long, value_name = "N", default_value_t = crate::local::DEFAULT_INSTANCES)]
    pub instances: usize,
    /// Share of every ARM throttling bucket that other tools spend, 0 <= F < 1: `F` steadily,
    /// or `F:bursty` (twice F half of the time, F <= 0.5).
    #[arg(long, value_name = "F", default_value = "0", value_parser = crate::local::parse_background_load)]
    pub background_load: super::arm::throttle::BackgroundLoad,
}

/// What `vmrp emulate` can fail with (each names the flag or file at fault).
#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    #[error("--{flag}: {reason}")]
    Arg { flag: &'static str, reason: String },
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error("cannot write to stdout: {0}")]
    Stdout(String),
}

/// The emulator settings the flags describe.
// The real `FleetSpec` (emu-arm) has more fields than the placeholder; `..Default::default()`
// must stay for the merge even where it is needless today.
#[allow(clippy::needless_update)]
pub fn config_from_args(args: &EmulateArgs) -> Result<EmulatorConfig, EmulateError> {
    let arg = |flag: &'static str, reason: String| EmulateError::Arg { flag, reason };
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(arg(
            "speed",
            format!("must be a positive number, got {}", args.speed),
        ));
    }
    let faults = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| arg("faults", format!("cannot read {}: {e}", path.display())))?;
            FaultConfig::from_json(&text)
                .map_err(|e| arg("faults", format!("{}: {e}", path.display())))?
        }
        None => FaultConfig::default(),
    };
    let start = match &args.start {
        Some(text) => OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
            arg(
                "start",
                format!("{text:?} is not RFC 3339 (2026-01-01T03:00:00Z): {e}"),
            )
        })?,
        None => EmulatorConfig::default().start,
    };
    if start > super::clock::LATEST {
        return Err(arg(
            "start",
            format!(
                "{:?} is too late: start before {} (the emulator's schedules and deadlines look years ahead)",
                args.start.as_deref().unwrap_or_default(),
                crate::schedule::rfc3339(super::clock::LATEST)
            ),
        ));
    }
    let regions: Vec<String> = args
        .regions
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| !r.is_empty())
        .collect();
    if regions.is_empty() {
        return Err(arg("regions", "give at least one region".into()));
    }
    if args.max_delivery_count == 0 {
        return Err(arg("max-delivery-count", "must be at least 1".into()));
    }
    let mut config = EmulatorConfig {
        port: args.port,
        speed: args.speed,
        start,
        seed: args.seed,
        faults,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: args.fleet,
                regions,
                seed: args.seed,
                ..Default::default()
            },
            record_traffic: args.record_traffic.clone(),
            ..Default::default()
        },
        require_arm_auth: !args.no_arm_auth,
        dump_state: args.dump_state.clone(),
        ..Default::default()
    };
    config.bus.max_delivery_count = args.max_delivery_count;
    config.arm.throttle.background = args.background_load;
    // --no-arm-auth: ARM answers requests without any token too (on by default, as in Azure).
    config.arm.rules.require_authorization = !args.no_arm_auth;
    Ok(config)
}

fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, EmulateError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| EmulateError::Arg {
                    flag: "env",
                    reason: format!("{p:?} is not KEY=VALUE"),
                })
        })
        .collect()
}

/// `vmrp emulate`: runs until SIGINT or SIGTERM.
pub async fn run(args: EmulateArgs) -> Result<ExitCode, EmulateError> {
    run_with(args, std::io::stdout(), shutdown_signal()).await
}

/// SIGINT (Ctrl-C) or SIGTERM (`timeout`, CI runners, service managers), whichever comes first.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// [`run`] with the output and the shutdown trigger supplied (tests).
pub async fn run_with(
    args: EmulateArgs,
    mut out: impl Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ExitCode, EmulateError> {
    let config = config_from_args(&args)?;
    crate::local::check_instances(args.instances).map_err(|e| EmulateError::Arg {
        flag: "instances",
        reason: e.trim_start_matches("--instances ").to_string(),
    })?;
    let extra_env = parse_env(&args.env)?;
    // Absolute from here on: the handler starts in the app root as its working directory, where
    // a relative `pkg/vmrp` would name `pkg/pkg/vmrp`.
    let absolute = |flag: &'static str, path: &PathBuf| {
        std::path::absolute(path).map_err(|e| EmulateError::Arg {
            flag,
            reason: format!("{}: {e}", path.display()),
        })
    };
    let app_root = args
        .app_root
        .as_ref()
        .map(|p| absolute("app-root", p))
        .transpose()?;
    let handler = args
        .handler
        .as_ref()
        .map(|p| absolute("handler", p))
        .transpose()?;
    let emulator = start(config).await?;
    if let Some(root) = &app_root {
        let mut settings = emulator.handler_settings(args.bus_auth);
        // The timer reads %VMRP_SCHEDULE%; default it like the handler's config does.
        if std::env::var(SCHEDULE_SETTING).is_err() {
            settings.insert(SCHEDULE_SETTING.into(), DEFAULT_SCHEDULE.into());
        }
        // RunRestoreDrills reads %VMRP_DRILL_SCHEDULE%: the policy's default drill schedule.
        let drill = crate::functions::run_restore_drills::DRILL_SCHEDULE_SETTING;
        if std::env::var(drill).is_err() {
            settings.insert(
                drill.into(),
                crate::policy::drills::DEFAULT_DRILL_SCHEDULE.into(),
            );
        }
        settings.extend(extra_env);
        let sim_config = HostSimConfig {
            app_settings: settings,
            timer_ticks: args.timer_ticks,
            executable_override: handler,
            instances: args.instances,
            ..HostSimConfig::new(root.clone())
        };
        if let Err(e) = emulator.start_host_sim(sim_config).await {
            let _ = emulator.stop().await;
            return Err(e.into());
        }
    }
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    let line = serde_json::to_string(&emulator.announcement()).expect("JSON values serialize");
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| EmulateError::Stdout(e.to_string()))?;
    tracing::info!(urls = ?emulator.urls, "emulator ready; stop with Ctrl-C or SIGTERM");
    shutdown.await;
    emulator.stop().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulateArgs,
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let cli = Cli::parse_from([
            "x",
            "--port",
            "0",
            "--fleet",
            "3",
            "--regions",
            "a,b",
            "--speed",
            "60",
            "--seed",
            "9",
            "--start",
            "2026-01-01T03:00:00Z",
            "--env",
            "K=V",
        ]);
        let cfg = config_from_args(&cli.args).unwrap();
        assert_eq!(cfg.arm.fleet.count, 3);
        assert_eq!(cfg.arm.fleet.regions, ["a", "b"]);
        assert_eq!(cfg.speed, 60.0);
        assert_eq!(cfg.start, time::macros::datetime!(2026-01-01 03:00 UTC));
        let bad = Cli::parse_from(["x", "--start", "yesterday"]);
        assert!(config_from_args(&bad.args)
            .unwrap_err()
            .to_string()
            .starts_with("--start"));
        let bad = Cli::parse_from(["x", "--speed=-1"]);
        assert!(config_from_args(&bad.args)
            .unwrap_err()
            .to_string()
            .starts_with("--speed"));
        let bad = Cli::parse_from(["x", "--faults", "/nonexistent/faults.json"]);
        assert!(config_from_args(&bad.args)
            .unwrap_err()
            .to_string()
            .starts_with("--faults"));
        assert!(parse_env(&["novalue".into()])
            .unwrap_err()
            .to_string()
            .starts_with("--env"));
    }

    #[tokio::test]
    async fn prints_the_json_first_line_binds_loopback_and_stops_on_signal() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("dump.json");
        let cli = Cli::parse_from(["x", "--dump-state", dump.to_str().unwrap()]);
        let buf = SharedBuf::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_with(cli.args, buf.clone(), async {
            let _ = rx.await;
        }));
        let line = loop {
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            if let Some((first, _)) = text.split_once('\n') {
                break first.to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("first line is JSON");
        for key in ["arm", "serviceBus", "identity", "control"] {
            assert!(
                v[key].as_str().unwrap().starts_with("http://127.0.0.1:"),
                "{key}: {v}"
            );
        }
        assert!(v["subscriptions"].is_array());
        let cs = v["serviceBusConnectionString"].as_str().unwrap();
        assert!(
            cs.starts_with("Endpoint=sb://")
                && cs.contains(";SharedAccessKeyName=")
                && cs.contains(";SharedAccessKey="),
            "{cs}"
        );
        assert!(!v["identityHeader"].as_str().unwrap().is_empty());
        // Really listening, on loopback.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let clock = http
            .get(format!("{}/clock", v["control"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(clock.status(), 200);
        tx.send(()).unwrap();
        assert_eq!(task.await.unwrap().unwrap(), ExitCode::SUCCESS);
        assert!(dump.exists(), "state dumped on shutdown");
    }
}
