//! `vmrp bench`: the figures of docs/bench.md, vmrp side by side with a Python SDK peer
//! (`bench/peer/handler.py`) against the same in-process emulator, fed the same host envelopes.
//!
//! Per-invocation figures (cold start, peak RSS, CPU per invocation) use restore points that stay
//! `Creating`, so every poll takes the common path: one GET with instanceView and one scheduled
//! Service Bus send. vmrp and the peer are measured alternately in the same run, because the
//! machine is shared and noisy; medians with min/max are reported. Fleet figures (write pacing,
//! polling efficiency) run the real host simulation through [`crate::local::run_scenario_keep`].
//! See docs/bench.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::azure::id::ResourceId;
use crate::emulator::arm::{ArmConfig, FleetSpec, ThrottleConfig, Timings};
use crate::emulator::host_sim::{service_bus_body, ClientInfo};
use crate::emulator::server::{self, BusAuth, EmulatorConfig, RunningEmulator};
use crate::emulator::servicebus::{Delivery, StoredMessage};
use crate::local::{run_scenario_keep, Scenario};
use crate::messages::{PollRequest, QueueMessage, Role};
use crate::names;

/// How many restore points the per-invocation figures poll (round-robin).
const POLLED_POINTS: usize = 200;
/// Invocations in flight at once, like the host's `maxConcurrentCalls` (host.json).
const CONCURRENCY: usize = 16;
/// ARM's default write bucket: capacity 200, refill 10 per second.
const WRITE_BURST: f64 = 200.0;
const WRITE_REFILL_PER_SEC: f64 = 10.0;

/// `vmrp bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Smaller run that fits in a few minutes on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// Write every figure and raw sample as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Command that starts the peer handler (split on whitespace).
    #[arg(long, default_value = "python3 bench/peer/handler.py")]
    pub peer: String,
    /// Poll invocations for the memory and CPU figures (default 10000; --quick 2000).
    #[arg(long)]
    pub invocations: Option<usize>,
    /// VMs in the fleet-tick figure (default 10000; --quick 2000).
    #[arg(long)]
    pub fleet: Option<usize>,
    /// Cold-start runs per handler (default 10; --quick 5); memory/CPU runs are half that (≥ 1).
    #[arg(long)]
    pub runs: Option<usize>,
    /// The stripped deploy binary (`cargo build --release -p vmrp-handler`) to size.
    #[arg(long)]
    pub deploy_binary: Option<PathBuf>,
    /// The vmrp handler binary (default: this executable).
    #[arg(long)]
    pub handler: Option<PathBuf>,
    /// Virtual seconds per real second in the fleet-tick run.
    #[arg(long, default_value_t = 10.0)]
    pub fleet_speed: f64,
    /// Skip the peer (vmrp figures only).
    #[arg(long)]
    pub no_peer: bool,
    /// Per-invocation figures only: skip the fleet tick and polling efficiency (profiling runs).
    #[arg(long)]
    pub skip_fleet: bool,
    /// Also run the large-estate row: VMS VMs over SUBS subscriptions, one tick, each
    /// subscription planned by its own PlanRestorePoints invocation (docs/bench.md; the full
    /// row is `--estate 20000:10`).
    #[arg(long, value_name = "VMS:SUBS", value_parser = parse_estate)]
    pub estate: Option<(usize, usize)>,
    /// Also run the tick-window row: VMS VMs in one subscription, two copy regions, the default
    /// policy (application-consistent, 4-hourly), two ticks; the share of VMs covered each tick
    /// and the VMs each tick's plan left out (docs/bench.md; the full row is `--window 5000`).
    #[arg(long, value_name = "VMS", value_parser = clap::value_parser!(u32).range(1..))]
    pub window: Option<u32>,
}

/// `--estate VMS:SUBS`.
fn parse_estate(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected VMS:SUBS with both at least 1, e.g. 20000:10; got {text:?}");
    let (vms, subs) = text.split_once(':').ok_or_else(bad)?;
    let vms: usize = vms.trim().parse().map_err(|_| bad())?;
    let subs: usize = subs.trim().parse().map_err(|_| bad())?;
    if vms == 0 || subs == 0 {
        return Err(bad());
    }
    Ok((vms, subs))
}

/// The two handlers measured.
#[derive(Debug, Clone)]
struct Contender {
    name: &'static str,
    command: Vec<String>,
}

/// Median, min, max of samples.
fn stats(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 0 {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    };
    Some((median, s[0], s[s.len() - 1]))
}

fn stats_json(samples: &[f64]) -> Value {
    match stats(samples) {
        Some((m, lo, hi)) => json!({"median": m, "min": lo, "max": hi, "samples": samples}),
        None => json!({"samples": samples}),
    }
}

/// The write-pacing bound: the writes beyond the burst, at the refill rate.
pub fn pacing_bound_secs(writes: u64) -> f64 {
    ((writes as f64 - WRITE_BURST) / WRITE_REFILL_PER_SEC).max(0.0)
}

/// How close one tick's creates came to ARM's write budget (the fleet-tick figure; the pacing
/// e2e test asserts the same figure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WritePacing {
    pub point_puts: u64,
    pub collection_puts: u64,
    /// Writes the tick needed: point PUTs + collection PUTs.
    pub writes: u64,
    /// Virtual seconds from the tick to the last restore point PUT accepted (max `timeCreated`).
    pub span_secs: f64,
    /// [`pacing_bound_secs`] of `writes`.
    pub bound_secs: f64,
}

impl WritePacing {
    /// `span / bound` (0 when the writes fit in the burst).
    pub fn ratio_to_bound(&self) -> f64 {
        if self.bound_secs > 0.0 {
            self.span_secs / self.bound_secs
        } else {
            0.0
        }
    }
}

/// [`WritePacing`] of a one-tick run, from ARM's final points and counters. The tick is the
/// earliest tick named by a point.
pub fn write_pacing(
    points: &[crate::emulator::arm::PointSummary],
    counters: &crate::emulator::arm::ArmCounters,
) -> Result<WritePacing, String> {
    let op = |k: &str| counters.requests_by_operation.get(k).copied().unwrap_or(0);
    let point_puts = op("RestorePoints_Create");
    let collection_puts = op("RestorePointCollections_CreateOrUpdate");
    let tick = points
        .iter()
        .filter_map(|p| names::parse_restore_point_name(p.id.rsplit('/').next()?))
        .map(|(t, _)| t)
        .min()
        .ok_or("no restore point was created")?;
    let last = points
        .iter()
        .map(|p| p.time_created)
        .max()
        .ok_or("no restore point was created")?;
    let writes = point_puts + collection_puts;
    Ok(WritePacing {
        point_puts,
        collection_puts,
        writes,
        span_secs: (last - tick).as_seconds_f64(),
        bound_secs: pacing_bound_secs(writes),
    })
}

/// Runs `vmrp bench`.
pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let invocations = args
        .invocations
        .unwrap_or(if args.quick { 2000 } else { 10_000 });
    let fleet = args.fleet.unwrap_or(if args.quick { 2000 } else { 10_000 });
    let runs = args.runs.unwrap_or(if args.quick { 5 } else { 10 }).max(1);
    let load_runs = (runs / 2).max(1);
    let handler = match &args.handler {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?,
    };
    let mut contenders = vec![Contender {
        name: "vmrp",
        command: vec![handler.display().to_string(), "serve".into()],
    }];
    if !args.no_peer {
        let command: Vec<String> = args.peer.split_whitespace().map(String::from).collect();
        if command.is_empty() {
            return Err("--peer: expected a command, got an empty string".into());
        }
        contenders.push(Contender {
            name: "peer",
            command,
        });
    }

    let mut report = json!({
        "date": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "quick": args.quick,
        "invocations": invocations,
        "concurrency": CONCURRENCY,
        "runs": runs,
        "loadRuns": load_runs,
        "fleet": fleet,
    });

    eprintln!("bench: per-invocation figures ({runs} cold starts, {load_runs} × {invocations} polls per handler)");
    let per_invocation = per_invocation_figures(&contenders, runs, load_runs, invocations).await?;
    report["perInvocation"] = per_invocation;

    if !args.skip_fleet {
        eprintln!("bench: fleet tick with {fleet} VMs");
        report["fleetTick"] = fleet_tick(&handler, fleet, args.fleet_speed).await?;

        eprintln!("bench: polling efficiency");
        report["polling"] = polling_efficiency(&handler).await?;
    }
    if let Some((vms, subs)) = args.estate {
        eprintln!("bench: estate tick with {vms} VMs over {subs} subscriptions");
        report["estateTick"] = estate_tick(&handler, vms, subs, args.fleet_speed).await?;
    }
    if let Some(vms) = args.window {
        eprintln!("bench: tick-window row with {vms} VMs, two copy regions, two ticks");
        report["windowTicks"] = window_ticks(&handler, vms as usize).await?;
    }

    if let Some(path) = &args.deploy_binary {
        let bytes = std::fs::metadata(path)
            .map_err(|e| format!("--deploy-binary {}: {e}", path.display()))?
            .len();
        report["deployBinary"] =
            json!({"path": path, "bytes": bytes, "mib": bytes as f64 / 1048576.0});
    }

    let (table, all_met) = render(&report);
    println!("{table}");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("--json {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(if all_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A restore point that stays `Creating`, and what a poll message for it needs.
#[derive(Debug, Clone)]
struct PolledPoint {
    point: ResourceId,
    vm: ResourceId,
    tick: OffsetDateTime,
}

/// Cold start, peak RSS and CPU per invocation for each contender, alternating.
async fn per_invocation_figures(
    contenders: &[Contender],
    runs: usize,
    load_runs: usize,
    invocations: usize,
) -> Result<Value, String> {
    let now = OffsetDateTime::now_utc();
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: now.replace_nanosecond(0).unwrap_or(now),
        seed: 8,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: POLLED_POINTS,
                tagged_fraction: 1.0,
                ephemeral_os_fraction: 0.0,
                shared_disk_fraction: 0.0,
                ultra_disk_fraction: 0.0,
                premium_v2_fraction: 0.0,
                seed: 8,
                ..FleetSpec::default()
            },
            // Points stay `Creating`: every poll requeues (the common path).
            timings: Timings {
                local_create_secs: (30.0 * 86_400.0, 30.0 * 86_400.0),
                ..Timings::default()
            },
            // Throttling is the fleet figure's subject; here it would only add noise.
            throttle: ThrottleConfig {
                enabled: false,
                ..ThrottleConfig::default()
            },
            ..ArmConfig::default()
        },
        require_arm_auth: false,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| format!("emulator: {e}"))?;
    let points = create_points(&emulator).await?;
    let settings = handler_settings(&emulator);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("vmrp-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;

    let mut cold: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut loads: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    // Each run's messages carry fresh attempt numbers, so no send is a duplicate of another.
    let mut attempt_base = 0u32;
    let per_round = (invocations / POLLED_POINTS + 2) as u32;
    for round in 0..runs {
        for c in contenders {
            attempt_base += 1;
            let envelope = poll_envelope(&emulator, &points[round % points.len()], attempt_base);
            let log = work.path().join(format!("{}-cold-{round}.log", c.name));
            let mut child = spawn(c, &settings, &log)?;
            let result = wait_first_success(&client, &mut child, &envelope).await;
            let _ = child.process.kill().await;
            let ms = result
                .map_err(|e| format!("{} cold start: {e} (log: {})", c.name, log.display()))?;
            eprintln!("  cold start {:>4}: {ms:7.1} ms", c.name);
            cold.entry(c.name).or_default().push(ms);
        }
    }
    for round in 0..load_runs {
        for c in contenders {
            let log = work.path().join(format!("{}-load-{round}.log", c.name));
            let sample = load_run(
                c,
                &emulator,
                &settings,
                &client,
                &points,
                invocations,
                attempt_base,
                &log,
            )
            .await
            .map_err(|e| format!("{} load: {e} (log: {})", c.name, log.display()))?;
            attempt_base += per_round;
            eprintln!("  load {:>4}: {sample}", c.name);
            loads.entry(c.name).or_default().push(sample);
        }
    }
    let mut out = serde_json::Map::new();
    for c in contenders {
        let samples = loads.get(c.name).cloned().unwrap_or_default();
        let field =
            |k: &str| -> Vec<f64> { samples.iter().filter_map(|s| s[k].as_f64()).collect() };
        out.insert(
            c.name.to_string(),
            json!({
                "command": c.command,
                "coldStartMs": stats_json(cold.get(c.name).map(Vec::as_slice).unwrap_or(&[])),
                "peakRssMib": stats_json(&field("peakRssMib")),
                "cpuUsPerInvocation": stats_json(&field("cpuUsPerInvocation")),
                "invocationsPerSec": stats_json(&field("invocationsPerSec")),
                "loadRuns": samples,
            }),
        );
    }
    emulator.stop().await.map_err(|e| e.to_string())?;
    Ok(Value::Object(out))
}

/// One collection and one point per VM, through the emulator's ARM API like any client.
async fn create_points(emulator: &RunningEmulator) -> Result<Vec<PolledPoint>, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let tick = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?
        .replace_second(0)
        .map_err(|e| e.to_string())?;
    let api = crate::azure::models::API_VERSION;
    let base = emulator.urls.arm.trim_end_matches('/');
    // ARM (and the emulator) refuses a request without a bearer token: one from the emulator's
    // own identity endpoint, for the audience the handlers use.
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let mut out = Vec::new();
    for vm in emulator.arm.list_vms() {
        let Some(vm_id) = vm.resource_id() else {
            continue;
        };
        let collection = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/restorePointCollections/{}",
            vm_id.subscription(),
            vm_id.resource_group().unwrap_or_default(),
            names::collection_name(&vm_id)
        );
        let point = format!(
            "{collection}/restorePoints/{}",
            names::restore_point_name(tick, 0)
        );
        let location = vm.location.clone().unwrap_or_default();
        for (url, body) in [
            (
                &collection,
                json!({"location": location, "properties": {"source": {"id": vm_id.as_str()}}}),
            ),
            (&point, json!({"properties": {}})),
        ] {
            let rsp = http
                .put(format!("{base}{url}?api-version={api}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("PUT {url}: {e}"))?;
            if !rsp.status().is_success() {
                let status = rsp.status();
                let text = rsp.text().await.unwrap_or_default();
                return Err(format!("PUT {url}: {status}: {text}"));
            }
        }
        out.push(PolledPoint {
            point: ResourceId::parse(&point).map_err(|e| e.to_string())?,
            vm: vm_id,
            tick,
        });
    }
    if out.is_empty() {
        return Err("the emulator's fleet has no VMs to create points for".into());
    }
    Ok(out)
}

/// What the host gives a handler: the emulator's settings plus vmrp's own (the peer ignores them).
fn handler_settings(emulator: &RunningEmulator) -> BTreeMap<String, String> {
    let mut settings = emulator.handler_settings(BusAuth::Sas);
    let policy = crate::local::default_policy(&emulator.subscriptions, &[], ("vmrp", "on"));
    settings.insert(
        "VMRP_POLICY".into(),
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        serde_json::to_string(&policy).expect("policy serialises"),
    );
    settings.insert("VMRP_LOOPBACK_ONLY".into(), "1".into());
    settings
}

/// The host envelope of a PollRestorePoint invocation for `point`, poll number `attempt`.
fn poll_envelope(emulator: &RunningEmulator, point: &PolledPoint, attempt: u32) -> String {
    let now = emulator.clock.now();
    let msg = PollRequest {
        target: point.point.clone(),
        role: Role::Local,
        attempt,
        first_seen: point.tick,
        deadline: now + time::Duration::days(30),
        vm: point.vm.clone(),
        tick: point.tick,
        rule: Some("local-demo".into()),
        retry: 0,
        copy_to: Vec::new(),
        source: None,
        target_region: None,
        prune_again: 0,
    };
    let body = QueueMessage::Poll(msg).encode();
    let message = StoredMessage {
        sequence_number: i64::from(attempt),
        message_id: names::message_id("poll", point.point.as_str(), point.tick, attempt),
        body,
        content_type: Some("application/json".into()),
        correlation_id: None,
        subject: None,
        reply_to: None,
        to: None,
        session_id: None,
        reply_to_session_id: None,
        partition_key: None,
        application_properties: serde_json::Map::new(),
        enqueued_time: now,
        scheduled_enqueue_time: None,
        expires_at: now + time::Duration::days(14),
        available_at: now,
        delivery_count: 1,
        lock_token: None,
        locked_until: None,
        duplicated: false,
    };
    let delivery = Delivery {
        queue: "rp-poll".into(),
        message,
        lock_token: uuid::Uuid::new_v4().to_string(),
    };
    let client = ClientInfo {
        fully_qualified_namespace: format!(
            "{}.servicebus.windows.net",
            emulator.bus.config().namespace
        ),
        identifier: "vmrp-bench".into(),
    };
    service_bus_body("PollRestorePoint", "msg", false, &delivery, &client, now)
}

struct Running {
    process: tokio::process::Child,
    pid: i32,
    port: u16,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts a handler the way the host does: app settings + FUNCTIONS_CUSTOMHANDLER_PORT.
fn spawn(
    c: &Contender,
    settings: &BTreeMap<String, String>,
    log: &std::path::Path,
) -> Result<Running, String> {
    let port = free_port()?;
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new(&c.command[0]);
    cmd.args(&c.command[1..])
        .envs(settings)
        // The handler's own default log level, as deployed.
        .env_remove("RUST_LOG")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let process = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.command))?;
    let pid = process
        .id()
        .ok_or("the handler exited at once")?
        .try_into()
        .map_err(|_| "pid out of range".to_string())?;
    Ok(Running { process, pid, port })
}

/// Milliseconds from spawn (well, from now; call right after [`spawn`]) to the first 2xx answer
/// to a PollRestorePoint invocation.
async fn wait_first_success(
    client: &reqwest::Client,
    child: &mut Running,
    envelope: &str,
) -> Result<f64, String> {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{}/PollRestorePoint", child.port);
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(60) {
        match client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(envelope.to_string())
            .send()
            .await
        {
            Ok(rsp) if rsp.status().is_success() => {
                return Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(rsp) => {
                let status = rsp.status();
                let text = rsp.text().await.unwrap_or_default();
                last = format!(
                    "HTTP {status}: {}",
                    text.chars().take(600).collect::<String>()
                );
            }
            Err(e) => last = e.to_string(),
        }
        if let Ok(Some(status)) = child.process.try_wait() {
            return Err(format!(
                "the handler exited ({status}); last answer: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Err(format!("no 2xx within 60 s; last answer: {last}"))
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: i32) -> Result<f64, String> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

fn peak_rss_kib(pid: i32) -> Result<u64, String> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?
        .vmhwm
        .ok_or_else(|| format!("/proc/{pid}/status has no VmHWM"))
}

/// Starts a handler, waits until it answers, then sends `invocations` polls, 16 at a time.
#[allow(clippy::too_many_arguments)]
async fn load_run(
    c: &Contender,
    emulator: &RunningEmulator,
    settings: &BTreeMap<String, String>,
    client: &reqwest::Client,
    points: &[PolledPoint],
    invocations: usize,
    attempt_base: u32,
    log: &std::path::Path,
) -> Result<Value, String> {
    let mut child = spawn(c, settings, log)?;
    let warm = poll_envelope(emulator, &points[0], attempt_base + 1);
    wait_first_success(client, &mut child, &warm).await?;
    let queued_before = emulator
        .bus
        .messages("rp-poll")
        .map(|m| m.len())
        .unwrap_or(0);
    // Envelopes are built before the clock starts: the harness's work is not the handler's.
    let envelopes: Arc<Vec<String>> = Arc::new(
        (0..invocations)
            .map(|i| {
                let attempt = attempt_base + 2 + (i / points.len()) as u32;
                poll_envelope(emulator, &points[i % points.len()], attempt)
            })
            .collect(),
    );
    let cpu_before = cpu_secs(child.pid)?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{}/PollRestorePoint", child.port);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (next, envelopes, client, url) =
            (next.clone(), envelopes.clone(), client.clone(), url.clone());
        workers.spawn(async move {
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(envelope) = envelopes.get(i) else {
                    break;
                };
                let key = match client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(envelope.clone())
                    .send()
                    .await
                {
                    Ok(rsp) if rsp.status().is_success() => match rsp.json::<Value>().await {
                        Ok(v) => v["ReturnValue"]["status"]
                            .as_str()
                            .unwrap_or("no status")
                            .to_string(),
                        Err(_) => "unreadable reply".into(),
                    },
                    Ok(rsp) => format!("HTTP {}", rsp.status().as_u16()),
                    Err(e) => format!("error: {e}"),
                };
                *statuses.entry(key).or_default() += 1;
            }
            statuses
        });
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        for (k, n) in done.map_err(|e| e.to_string())? {
            *statuses.entry(k).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_secs(child.pid)?;
    let peak = peak_rss_kib(child.pid)?;
    let _ = child.process.kill().await;
    let queued_after = emulator
        .bus
        .messages("rp-poll")
        .map(|m| m.len())
        .unwrap_or(0);
    let rescheduled = statuses.get("rescheduled").copied().unwrap_or(0);
    if rescheduled != invocations as u64 {
        return Err(format!(
            "expected {invocations} rescheduled polls, got {statuses:?}"
        ));
    }
    Ok(json!({
        "invocations": invocations,
        "statuses": statuses,
        "scheduledMessagesAdded": queued_after.saturating_sub(queued_before),
        "seconds": elapsed,
        "invocationsPerSec": invocations as f64 / elapsed,
        "cpuSeconds": cpu_after - cpu_before,
        "cpuUsPerInvocation": (cpu_after - cpu_before) * 1e6 / invocations as f64,
        "peakRssMib": peak as f64 / 1024.0,
    }))
}

/// One timer tick over a large fleet through the real host simulation: how close the creates
/// come to ARM's write budget.
async fn fleet_tick(handler: &std::path::Path, vms: usize, speed: f64) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.seed = 8;
    scenario.copy_to = Vec::new();
    scenario.ticks = 1;
    scenario.speed = speed;
    scenario.seed = 8;
    // A tick one virtual minute after the start, so the run does not wait for 04:00.
    scenario.schedule = "0 46 3 * * *".into();
    scenario.timeout = Duration::from_secs(1800);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("fleet tick: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    emulator.stop().await.map_err(|e| e.to_string())?;
    let pacing = write_pacing(&points, &counters).map_err(|e| format!("fleet tick: {e}"))?;
    let WritePacing {
        point_puts,
        collection_puts,
        writes,
        span_secs: span,
        bound_secs: bound,
    } = pacing;
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "speed": speed,
        "pointsCreated": points.len(),
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "pointPuts": point_puts,
        "collectionPuts": collection_puts,
        "writesNeeded": writes,
        "tickToLastPointSecs": span,
        "boundSecs": bound,
        "ratioToBound": pacing.ratio_to_bound(),
        "throttled429": throttled,
        "throttledByClass": counters.throttled_by_class,
        "armRequests": counters.requests,
        "armCallsPerVm": counters.requests as f64 / vms.max(1) as f64,
        "armRequestsByOperation": counters.requests_by_operation,
        "realSeconds": real,
    }))
}

/// The large-estate row: one tick over `vms` VMs in `subs` subscriptions, no copies. Each
/// subscription is planned by its own invocation and paced by its own write bucket, so the
/// figure is the slowest subscription's time from the tick to its last create, against the
/// bound of that subscription's writes ([`pacing_bound_secs`]); the whole estate in one bucket
/// would take `serialBoundSecs`.
async fn estate_tick(
    handler: &std::path::Path,
    vms: usize,
    subs: usize,
    speed: f64,
) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.subscriptions = subs;
    scenario.fleet.seed = 9;
    scenario.copy_to = Vec::new();
    scenario.ticks = 1;
    scenario.speed = speed;
    scenario.seed = 9;
    scenario.schedule = "0 46 3 * * *".into();
    scenario.timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("estate tick: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    emulator.stop().await.map_err(|e| e.to_string())?;
    let tick = points
        .iter()
        .filter_map(|p| names::parse_restore_point_name(p.id.rsplit('/').next()?))
        .map(|(t, _)| t)
        .min()
        .ok_or("estate tick: no restore point was created")?;
    // Per subscription: creates (each a collection PUT and a point PUT on a first tick) and the
    // last create's time.
    let mut per_sub: BTreeMap<String, (u64, OffsetDateTime)> = BTreeMap::new();
    for p in points.iter().filter(|p| p.source_restore_point.is_none()) {
        let sub =
            p.id.split('/')
                .nth(2)
                .unwrap_or_default()
                .to_ascii_lowercase();
        let e = per_sub.entry(sub).or_insert((0, p.time_created));
        e.0 += 1;
        e.1 = e.1.max(p.time_created);
    }
    let rows: Vec<Value> = per_sub
        .iter()
        .map(|(sub, (creates, last))| {
            let span = (*last - tick).as_seconds_f64();
            let bound = pacing_bound_secs(2 * creates);
            json!({"subscription": sub, "creates": creates, "tickToLastPointSecs": span,
                   "boundSecs": bound})
        })
        .collect();
    let slowest = rows
        .iter()
        .max_by(|a, b| {
            a["tickToLastPointSecs"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["tickToLastPointSecs"].as_f64().unwrap_or(0.0))
        })
        .cloned()
        .unwrap_or(Value::Null);
    let plans = report
        .invocations_by_function
        .get(crate::functions::PLAN_RESTORE_POINTS)
        .map(|m| m.values().sum::<u64>())
        .unwrap_or(0);
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "subscriptions": subs,
        "speed": speed,
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "planInvocations": plans,
        "slowestSubscription": slowest,
        "serialBoundSecs": pacing_bound_secs(2 * report.local.expected as u64),
        "perSubscription": rows,
        "throttled429": throttled,
        "armRequests": counters.requests,
        "realSeconds": real,
    }))
}

/// The tick-window row: `vms` VMs in one subscription with two copy regions under the default
/// policy (application-consistent, every 4 hours: a create after tick + 1 h is superseded), two
/// ticks. Per tick: the VMs whose local point settled, the VMs the plan said beforehand would not
/// fit (`leftOut`), the rest; and whether the VMs left out differ between the ticks (the plan
/// rotates its order from tick to tick so no VM is always last).
async fn window_ticks(handler: &std::path::Path, vms: usize) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.seed = 10;
    scenario.copy_to = vec!["swedencentral".into(), "francecentral".into()];
    scenario.ticks = 2;
    scenario.seed = 10;
    scenario.timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("tick-window row: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let counters = emulator.arm.counters();
    emulator.stop().await.map_err(|e| e.to_string())?;
    let per_tick: Vec<Value> = report
        .ticks
        .iter()
        .map(|tick| {
            let at = |m: &&crate::local::Missing| names::restore_point_name(m.tick, 0) == *tick;
            let missing: Vec<&crate::local::Missing> =
                report.local.failed.iter().filter(at).collect();
            let left_out: Vec<&str> = missing
                .iter()
                .filter(|m| m.explained_by == crate::local::Explanation::LeftOutByPlan)
                .map(|m| m.vm.as_str())
                .collect();
            // The rest: VMs with nothing to restore (by design, reported), and anything else.
            let mut nothing_to_restore = 0;
            let mut other: BTreeMap<String, usize> = BTreeMap::new();
            for m in missing
                .iter()
                .filter(|m| m.explained_by != crate::local::Explanation::LeftOutByPlan)
            {
                match crate::local::reason_class(&m.reason) {
                    (_, true) => nothing_to_restore += 1,
                    (class, false) => *other.entry(class.to_string()).or_default() += 1,
                }
            }
            let copies_missing = report.copies.failed.iter().filter(at).count();
            let settled = vms.saturating_sub(missing.len());
            json!({
                "tick": tick,
                "settled": settled,
                "coveredShare": settled as f64 / vms.max(1) as f64,
                "leftOutByPlan": left_out.len(),
                "leftOutVms": left_out,
                "nothingToRestore": nothing_to_restore,
                "otherMissing": other,
                "copiesExpected": 2 * vms,
                "copiesMissing": copies_missing,
            })
        })
        .collect();
    let left_out_of = |i: usize| -> std::collections::BTreeSet<String> {
        per_tick.get(i).map_or_else(Default::default, |t| {
            t["leftOutVms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
    };
    let (first, second) = (left_out_of(0), left_out_of(1));
    let both = first.intersection(&second).count();
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "copyRegions": scenario.copy_to,
        "ticks": per_tick,
        "leftOutInBothTicks": both,
        "leftOutDiffer": first != second || first.is_empty(),
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "copiesSettled": report.copies.settled,
        "copiesExpected": report.copies.expected,
        "localMissingByReason": report.local.failed_by_reason,
        "copiesMissingByReason": report.copies.failed_by_reason,
        "duplicates": report.local.duplicates + report.copies.duplicates,
        "throttled429": throttled,
        "armRequests": counters.requests,
        "realSeconds": real,
    }))
}

/// GETs of restore points per settled local point (no copies), then per copy (with copies).
async fn polling_efficiency(handler: &std::path::Path) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    let mut local_gets_per_point = 0.0;
    for with_copies in [false, true] {
        let mut scenario = Scenario::new(handler.to_path_buf());
        scenario.fleet.count = 30;
        scenario.fleet.seed = 8;
        scenario.seed = 8;
        scenario.ticks = 2;
        scenario.copy_to = if with_copies {
            vec!["swedencentral".into()]
        } else {
            Vec::new()
        };
        scenario.timeout = Duration::from_secs(600);
        let (report, emulator) = run_scenario_keep(&scenario)
            .await
            .map_err(|e| format!("polling: {e}"))?;
        let timings = emulator.arm.config().timings.clone();
        let counters = emulator.arm.counters();
        emulator.stop().await.map_err(|e| e.to_string())?;
        let gets = counters
            .requests_by_operation
            .get("RestorePoints_Get")
            .copied()
            .unwrap_or(0);
        let key = if with_copies {
            "withCopies"
        } else {
            "localOnly"
        };
        let mut v = json!({
            "vms": 30,
            "ticks": 2,
            "localSettled": report.local.settled,
            "localExpected": report.local.expected,
            "copiesSettled": report.copies.settled,
            "copiesExpected": report.copies.expected,
            "restorePointGets": gets,
            "throttled429": report.throttled_429,
            "complete": report.complete,
        });
        if with_copies {
            // Copy GETs: all GETs minus what the local points needed in the run without copies.
            let copy_gets = gets as f64 - local_gets_per_point * report.local.settled as f64;
            let per_copy = copy_gets / report.copies.settled.max(1) as f64;
            // The emulator's mean copy time (start + replication): the figure's denominator.
            let mean_hours = ((timings.copy_start_secs.0 + timings.copy_start_secs.1) / 2.0
                + (timings.copy_duration_secs.0 + timings.copy_duration_secs.1) / 2.0)
                / 3600.0;
            v["copyGets"] = json!(copy_gets);
            v["getsPerCopy"] = json!(per_copy);
            v["meanCopyHours"] = json!(mean_hours);
            v["getsPerCopyHour"] = json!(per_copy / mean_hours);
        } else {
            local_gets_per_point = gets as f64 / report.local.settled.max(1) as f64;
            v["getsPerLocalPoint"] = json!(local_gets_per_point);
        }
        out.insert(key.into(), v);
    }
    Ok(Value::Object(out))
}

/// One row: figure, vmrp, peer, ratio, goal, met.
struct Row {
    figure: String,
    vmrp: String,
    peer: String,
    ratio: String,
    goal: &'static str,
    met: Option<bool>,
}

fn fmt_stat(v: &Value, unit: &str) -> String {
    match (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64()) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.2} {unit} ({lo:.2}–{hi:.2})"),
        _ => "-".into(),
    }
}

/// The table and whether every goal with a measurement was met.
fn render(report: &Value) -> (String, bool) {
    let per = &report["perInvocation"];
    let mut rows = Vec::new();
    let median = |who: &str, k: &str| per[who][k]["median"].as_f64();
    let ratio = |k: &str| match (median("peer", k), median("vmrp", k)) {
        (Some(p), Some(v)) if v > 0.0 => Some(p / v),
        _ => None,
    };
    let ratio_text = |r: Option<f64>| r.map(|r| format!("{r:.1}×")).unwrap_or("-".into());

    let cold_ratio = ratio("coldStartMs");
    rows.push(Row {
        figure: "cold start (exec → first poll answered)".into(),
        vmrp: fmt_stat(&per["vmrp"]["coldStartMs"], "ms"),
        peer: fmt_stat(&per["peer"]["coldStartMs"], "ms"),
        ratio: ratio_text(cold_ratio),
        goal: "< 20 ms and ≥ 30× faster",
        met: median("vmrp", "coldStartMs")
            .map(|v| v < 20.0 && cold_ratio.is_some_and(|r| r >= 30.0)),
    });
    let rss_ratio = ratio("peakRssMib");
    rows.push(Row {
        figure: format!("peak RSS over {} polls", report["invocations"]),
        vmrp: fmt_stat(&per["vmrp"]["peakRssMib"], "MiB"),
        peer: fmt_stat(&per["peer"]["peakRssMib"], "MiB"),
        ratio: ratio_text(rss_ratio),
        goal: "≤ 20 MB and ≥ 4× below",
        met: median("vmrp", "peakRssMib")
            .map(|v| v * 1.048576 <= 20.0 && rss_ratio.is_some_and(|r| r >= 4.0)),
    });
    let cpu_ratio = ratio("cpuUsPerInvocation");
    rows.push(Row {
        figure: "CPU per invocation".into(),
        vmrp: fmt_stat(&per["vmrp"]["cpuUsPerInvocation"], "µs"),
        peer: fmt_stat(&per["peer"]["cpuUsPerInvocation"], "µs"),
        ratio: ratio_text(cpu_ratio),
        goal: "≥ 20× below",
        met: cpu_ratio.map(|r| r >= 20.0),
    });
    rows.push(Row {
        figure: "throughput (16 in flight)".into(),
        vmrp: fmt_stat(&per["vmrp"]["invocationsPerSec"], "/s"),
        peer: fmt_stat(&per["peer"]["invocationsPerSec"], "/s"),
        ratio: ratio("invocationsPerSec")
            .map(|r| format!("{:.1}×", 1.0 / r))
            .unwrap_or("-".into()),
        goal: "-",
        met: None,
    });
    let f = &report["fleetTick"];
    let fleet_ratio = f["ratioToBound"].as_f64();
    let throttled = f["throttled429"].as_u64();
    // --skip-fleet: no fleet tick or polling figures to show.
    let fleet_ran = !f.is_null();
    rows.push(Row {
        figure: format!("fleet tick, {} VMs: tick → last point / bound", f["vms"]),
        vmrp: format!(
            "{:.0} s / {:.0} s = {:.3}; {} × 429; {:.2} ARM calls/VM",
            f["tickToLastPointSecs"].as_f64().unwrap_or(f64::NAN),
            f["boundSecs"].as_f64().unwrap_or(f64::NAN),
            fleet_ratio.unwrap_or(f64::NAN),
            throttled.unwrap_or(0),
            f["armCallsPerVm"].as_f64().unwrap_or(f64::NAN)
        ),
        peer: "-".into(),
        ratio: "-".into(),
        goal: "≤ 1.10 × bound, zero 429s",
        met: fleet_ratio.map(|r| r <= 1.10 && throttled == Some(0)),
    });
    let e = &report["estateTick"];
    if !e.is_null() {
        let slow = &e["slowestSubscription"];
        let span = slow["tickToLastPointSecs"].as_f64();
        let bound = slow["boundSecs"].as_f64();
        let throttled = e["throttled429"].as_u64();
        rows.push(Row {
            figure: format!(
                "estate tick, {} VMs over {} subscriptions: slowest subscription's tick → last point / its bound",
                e["vms"], e["subscriptions"]
            ),
            vmrp: format!(
                "{:.0} s / {:.0} s (whole estate in one bucket: {:.0} s); {} plan invocations; {} × 429",
                span.unwrap_or(f64::NAN),
                bound.unwrap_or(f64::NAN),
                e["serialBoundSecs"].as_f64().unwrap_or(f64::NAN),
                e["planInvocations"],
                throttled.unwrap_or(0)
            ),
            peer: "-".into(),
            ratio: "-".into(),
            goal: "≤ 1.10 × bound, zero 429s",
            met: span.zip(bound).map(|(s, b)| {
                (s <= 1.10 * b || s <= 60.0) && throttled == Some(0)
            }),
        });
    }
    let w = &report["windowTicks"];
    if !w.is_null() {
        let ticks = w["ticks"].as_array().cloned().unwrap_or_default();
        let shares: Vec<String> = ticks
            .iter()
            .map(|t| {
                format!(
                    "{:.1} % (+{} left out by plan, {} nothing to restore)",
                    100.0 * t["coveredShare"].as_f64().unwrap_or(f64::NAN),
                    t["leftOutByPlan"],
                    t["nothingToRestore"]
                )
            })
            .collect();
        // Covered means settled or named by the plan beforehand; nothing else missing.
        let explained = ticks.iter().all(|t| {
            t["otherMissing"]
                .as_object()
                .is_some_and(|o| o.values().all(|v| v.as_u64() == Some(0)))
        });
        let throttled = w["throttled429"].as_u64();
        rows.push(Row {
            figure: format!(
                "tick window, {} VMs, 2 copy regions, 4-hourly app-consistent: VMs covered per tick",
                w["vms"]
            ),
            vmrp: format!(
                "{}; left out in both ticks {}; {} × 429",
                shares.join(", "),
                w["leftOutInBothTicks"],
                throttled.unwrap_or(0)
            ),
            peer: "-".into(),
            ratio: "-".into(),
            goal: "100 % or left out beforehand, rotating",
            met: Some(explained && w["leftOutDiffer"].as_bool() == Some(true)),
        });
    }
    let p = &report["polling"];
    let per_point = p["localOnly"]["getsPerLocalPoint"].as_f64();
    rows.push(Row {
        figure: "restore point GETs per settled local point".into(),
        vmrp: per_point.map(|v| format!("{v:.2}")).unwrap_or("-".into()),
        peer: "-".into(),
        ratio: "-".into(),
        goal: "≤ 3",
        met: per_point.map(|v| v <= 3.0),
    });
    rows.push(Row {
        figure: "copy GETs per copy (per copy-hour)".into(),
        vmrp: match (
            p["withCopies"]["getsPerCopy"].as_f64(),
            p["withCopies"]["getsPerCopyHour"].as_f64(),
        ) {
            (Some(a), Some(b)) => format!("{a:.2} ({b:.2}/h)"),
            _ => "-".into(),
        },
        peer: "-".into(),
        ratio: "-".into(),
        goal: "-",
        met: None,
    });
    if let Some(bytes) = report["deployBinary"]["bytes"].as_u64() {
        rows.push(Row {
            figure: "deploy binary (stripped)".into(),
            vmrp: format!("{:.2} MiB", bytes as f64 / 1048576.0),
            peer: "-".into(),
            ratio: "-".into(),
            goal: "≤ 12 MB",
            met: Some(bytes as f64 <= 12.0 * 1_000_000.0),
        });
    }
    if !fleet_ran {
        rows.retain(|r| {
            !(r.figure.starts_with("fleet tick")
                || r.figure.starts_with("restore point GETs")
                || r.figure.starts_with("copy GETs"))
        });
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["figure", "vmrp", "peer", "ratio", "goal", "met?"]);
    let mut all = true;
    for r in &rows {
        if r.met == Some(false) {
            all = false;
        }
        table.add_row([
            r.figure.clone(),
            r.vmrp.clone(),
            r.peer.clone(),
            r.ratio.clone(),
            r.goal.to_string(),
            match r.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".to_string(),
            },
        ]);
    }
    (table.to_string(), all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_median_min_max() {
        assert_eq!(stats(&[]), None);
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
    }

    #[test]
    fn pacing_bound_is_writes_beyond_the_burst_at_the_refill_rate() {
        for (writes, secs) in [(0, 0.0), (200, 0.0), (4000, 380.0), (20_000, 1980.0)] {
            assert_eq!(pacing_bound_secs(writes), secs, "{writes} writes");
        }
    }
}
