//! `vmrp local`: see it work in one command. Starts the emulator (ARM, Service Bus, identity),
//! the Functions host simulation, and this very binary as the custom handler; runs a fleet for a
//! few timer ticks on the virtual clock; then prints coverage per VM and exits non-zero when any
//! expected point is missing.
//!
//! The same [`run_scenario`] drives the end-to-end, chaos and benchmark runs, so what the README
//! shows is what the tests check.
//!
//! **Virtual time follows the handler.** At thousands of virtual seconds per real second, every
//! real millisecond the handler spends is seconds of virtual time: a 500-VM fleet on a debug
//! build fell days behind (polls delivered 60 virtual hours late, creates landing on the next
//! tick), which real Azure Functions, whose handler is just as fast in real seconds, never sees.
//! So while the handler is behind — a due message waits for a receiver, or the handler is
//! restarting — the clock slows down (to `speed / 40` at the slowest), while a tick is planned
//! (a timer run, a PlanRestorePoints message) to real time ([`PLANNING_SPEED`]: planning costs
//! the tick's window its real seconds, as in Azure), and it speeds up again once the handler
//! has caught up ([`governed_speed`]). Idle stretches (copies
//! replicating, hours between ticks) still pass at full speed.

use crate::policy::regions::{canonical_region, known_region, same_region};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::azure::Queue;
use crate::emulator::arm::throttle::BackgroundLoad;
use crate::emulator::arm::{ArmConfig, FleetSpec, PointSummary};
use crate::emulator::clock::VirtualClock;
use crate::emulator::faults::FaultConfig;
use crate::emulator::host_sim::{HandlerState, HostSim, HostSimConfig, InvocationStatus};
use crate::emulator::server::{self, BusAuth, EmulatorConfig, RunningEmulator};
use crate::emulator::servicebus::ServiceBus;
use crate::names;
use crate::policy::Policy;

mod coverage;
mod drill;
mod governor;
mod render;
mod report;

pub use coverage::*;
pub use drill::*;
pub use governor::*;
pub use render::*;
pub use report::*;

/// The app the host simulation loads: the repository's own host.json and function.json files,
/// embedded so an installed binary runs `vmrp local` anywhere.
const APP_FILES: &[(&str, &str)] = &[
    ("host.json", include_str!("../../host.json")),
    (
        "ScheduleRestorePoints/function.json",
        include_str!("../../functions/ScheduleRestorePoints/function.json"),
    ),
    (
        "PlanRestorePoints/function.json",
        include_str!("../../functions/PlanRestorePoints/function.json"),
    ),
    (
        "CreateRestorePoint/function.json",
        include_str!("../../functions/CreateRestorePoint/function.json"),
    ),
    (
        "StartCrossRegionCopy/function.json",
        include_str!("../../functions/StartCrossRegionCopy/function.json"),
    ),
    (
        "PollRestorePoint/function.json",
        include_str!("../../functions/PollRestorePoint/function.json"),
    ),
    (
        "OnVmChanged/function.json",
        include_str!("../../functions/OnVmChanged/function.json"),
    ),
    (
        "RunRestoreDrills/function.json",
        include_str!("../../functions/RunRestoreDrills/function.json"),
    ),
];

/// `VMRP_DRILL_SCHEDULE` in `vmrp local`: once a year on 1 January, outside any scenario (they
/// start on 5 January), so a run's own timers stay the lifecycle's; `--drill` fires
/// RunRestoreDrills itself through the host ([`drill_through_host`]).
pub const LOCAL_DRILL_SCHEDULE: &str = "0 30 2 1 1 *";

/// A fixed virtual start shortly before a tick (15 virtual minutes leave the handler time to
/// start even at high speed), so runs with the same seed are the same run.
const VIRTUAL_START: OffsetDateTime = datetime!(2026-01-05 03:45:00 UTC);

/// `vmrp local` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Number of VMs in the emulated fleet.
    #[arg(long, default_value_t = 12)]
    pub vms: usize,
    /// Regions the VMs live in (comma-separated ARM names).
    #[arg(long, value_delimiter = ',', default_value = "westeurope,northeurope")]
    pub regions: Vec<String>,
    /// Region(s) every point is copied to (comma-separated; empty for no copies).
    #[arg(long, value_delimiter = ',', default_value = "swedencentral")]
    pub copy_to: Vec<String>,
    /// Timer ticks to run (the schedule fires every 4 h of virtual time by default).
    #[arg(long, default_value_t = 3)]
    pub ticks: u32,
    /// Virtual seconds per real second (1200 = 20 minutes per second).
    #[arg(long, default_value_t = 1200.0)]
    pub speed: f64,
    /// Fault injection file (the emulator's format, see `vmrp emulate --help`).
    #[arg(long)]
    pub faults: Option<PathBuf>,
    /// Policy file (JSON or TOML); default: every VM tagged vmrp=on, copies to --copy-to.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Seed of the fleet and of every fault decision (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timer schedule (NCRONTAB, six fields).
    #[arg(long, default_value = crate::config::DEFAULT_SCHEDULE)]
    pub schedule: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the handler's console (its log lines) here; default: a file in a temporary folder.
    #[arg(long)]
    pub handler_log: Option<PathBuf>,
    /// Give up after this many real seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Handler instances (separate processes, each with its own port and in-memory cache) that
    /// compete for the invocations, as a scaled-out Flex Consumption app's do (1 to 16).
    #[arg(long, default_value_t = DEFAULT_INSTANCES)]
    pub instances: usize,
    /// Share of every ARM throttling bucket that other tools (Azure Policy, Defender, Terraform,
    /// Backup) spend, 0 <= F < 1: `F` steadily, or `F:bursty` (twice F half of the time, F <= 0.5).
    #[arg(long, value_name = "F", default_value = "0", value_parser = parse_background_load)]
    pub background_load: BackgroundLoad,
    /// Leave the emulator running after the run (prints its URLs), until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub keep_running: bool,
    /// The fleet's mix: `plain` (the default), or `mixed`, which adds Premium SSD v2 and Ultra
    /// disks, CMK-encrypted disks, confidential, Trusted Launch and M-series VMs with a
    /// write-accelerated disk, sizes without Premium storage, Azure Backup-protected VMs and
    /// VMs with platform periodic restore points, under a crash-consistent default policy; the
    /// report explains every VM without a point, as `vmrp plan` names them beforehand.
    #[arg(long, value_enum, default_value_t = FleetMix::Plain)]
    pub fleet: FleetMix,
    /// Also write the coverage at the end of the run as one self-contained HTML page, the same
    /// page as `vmrp status --html` (src/html_report.rs).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// After the run, drill every VM once: restore its newest local and copy points as disks
    /// into the drill group (the policy's `drills`, else `rg-vmrp-drill`), time it, delete
    /// them, and report each drill (exit 1 when one failed or left a disk behind).
    #[arg(long)]
    pub drill: bool,
}

/// `vmrp local --fleet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetMix {
    Plain,
    Mixed,
}

impl FleetMix {
    /// Sets the fractions of `--fleet mixed` (each case in a few VMs of a small fleet).
    pub fn apply(self, fleet: &mut FleetSpec) {
        if self == FleetMix::Plain {
            return;
        }
        fleet.ultra_disk_fraction = 0.08;
        fleet.premium_v2_fraction = 0.12;
        fleet.cmk_fraction = 0.15;
        fleet.confidential_fraction = 0.08;
        fleet.trusted_launch_fraction = 0.2;
        fleet.write_accelerated_fraction = 0.1;
        fleet.no_premium_size_fraction = 0.08;
        fleet.backup_fraction = 0.15;
        fleet.periodic_restore_points_fraction = 0.1;
        fleet.min_data_disks = fleet.min_data_disks.max(1);
    }
}

/// The default policy of `--fleet mixed`: [`default_policy`], crash-consistent (the mode most
/// of Azure's restrictions apply to), leaving Ultra and Premium SSD v2 disks out of the points
/// (as the support matrix says to) rather than skipping their VMs, and mapping each fleet
/// region's disk encryption set to the copy region's ([`copy_region_encryption_sets`]), so the
/// customer-managed-key disks are copied encrypted with a key of the target region.
pub fn mixed_policy(
    subscriptions: &[String],
    regions: &[String],
    copy_to: &[String],
    tag: (&str, &str),
) -> Policy {
    use crate::emulator::arm::fleet::encryption_set_id;
    let mut policy = default_policy(subscriptions, copy_to, tag);
    for rule in &mut policy.rules {
        rule.consistency = crate::azure::models::ConsistencyMode::CrashConsistent;
        rule.exclude_disks.skus = vec!["UltraSSD_LRS".into(), "PremiumV2_LRS".into()];
        for copy in &mut rule.copies {
            for sub in subscriptions {
                for region in regions {
                    copy.encryption_sets.insert(
                        encryption_set_id(sub, region),
                        encryption_set_id(sub, &copy.region),
                    );
                }
            }
        }
    }
    policy
}

/// The disk encryption sets `--fleet mixed` needs in its copy regions (the fleet seeds one per
/// subscription and fleet region only): one per subscription and copy region, named as the
/// fleet names its own.
fn copy_region_encryption_sets(scenario: &Scenario, subscriptions: &[String]) -> Vec<Value> {
    use crate::emulator::arm::fleet::{encryption_set_doc, encryption_set_id};
    if scenario.mix != FleetMix::Mixed {
        return Vec::new();
    }
    subscriptions
        .iter()
        .flat_map(|sub| {
            scenario
                .copy_to
                .iter()
                .filter(|r| !scenario.fleet.regions.contains(r))
                .map(move |region| {
                    encryption_set_doc(&encryption_set_id(sub, region), region, scenario.seed)
                })
        })
        .collect()
}
/// The `VMRP_ARM_SHARE` `vmrp local --background-load F` gives the handler: `0.95 × (1 − F)`
/// (what other tools leave, less the default 5 % reserve).
pub fn told_share(load: BackgroundLoad) -> f64 {
    0.95 * (1.0 - load.share)
}

/// `--background-load F[:bursty]` (also `vmrp emulate`'s).
pub fn parse_background_load(text: &str) -> Result<BackgroundLoad, String> {
    BackgroundLoad::parse(text)
}

/// Handler instances of `vmrp local`, `vmrp emulate` and the lifecycle tests: more than one,
/// so the suite sees what a scaled-out app sees (each instance its own cache), and few enough
/// that the README's demo stays fast.
pub const DEFAULT_INSTANCES: usize = 2;
/// The most instances `--instances` accepts: each is a process on a machine that runs the
/// emulator too.
pub const MAX_INSTANCES: usize = 16;

/// Everything a run needs; `LocalArgs` maps onto it, tests build it directly.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub fleet: FleetSpec,
    /// Which default policy goes with the fleet when `policy` is `None`.
    pub mix: FleetMix,
    pub copy_to: Vec<String>,
    pub ticks: u32,
    pub speed: f64,
    pub faults: FaultConfig,
    /// `None`: the default policy for the fleet (see [`default_policy`]).
    pub policy: Option<Policy>,
    pub seed: u64,
    pub schedule: String,
    pub timeout: Duration,
    pub handler: PathBuf,
    pub handler_log: Option<PathBuf>,
    /// Kill a handler instance (SIGKILL) this many times at random moments during the run; which
    /// instance is drawn from the seed too.
    pub kills: u32,
    /// Handler instances ([`DEFAULT_INSTANCES`]).
    pub instances: usize,
    /// The share of ARM's buckets other tools spend (`--background-load`).
    pub background_load: BackgroundLoad,
    /// `--drill`: the app identity also holds the drill role at the drill group ([`drill_demo`]).
    pub drill: bool,
    /// Further app settings for the handler (e.g. `VMRP_ARM_SHARE`), over the run's own.
    pub app_settings: BTreeMap<String, String>,
    pub show_progress: bool,
    /// Slow virtual time while the handler is behind (module doc); off only for tests of the
    /// clock itself.
    pub pace_to_handler: bool,
    /// Record every ARM request/response pair into this directory as oav traffic files
    /// ([`crate::emulator::arm::traffic`]), so a whole run can be checked against the swagger.
    pub record_traffic: Option<PathBuf>,
    /// The handler's `RUST_LOG`; `None`: `VMRP_HANDLER_LOG_LEVEL`, else `info`.
    pub handler_log_level: Option<String>,
    /// End the run this long (virtual) after the last tick even if copies are still queued:
    /// for rows about the ticks' local points, whose fate is known one schedule period after
    /// the tick, when a one-subscription fleet's copies need days. `None`: run until quiet.
    pub stop_after_last_tick: Option<time::Duration>,
}

impl Scenario {
    pub fn new(handler: PathBuf) -> Self {
        Self {
            fleet: FleetSpec {
                count: 12,
                tagged_fraction: 1.0,
                ..FleetSpec::default()
            },
            mix: FleetMix::Plain,
            copy_to: vec!["swedencentral".into()],
            ticks: 3,
            speed: 1200.0,
            faults: FaultConfig::default(),
            policy: None,
            seed: 1,
            schedule: crate::config::DEFAULT_SCHEDULE.into(),
            timeout: Duration::from_secs(300),
            handler,
            handler_log: None,
            kills: 0,
            instances: DEFAULT_INSTANCES,
            background_load: BackgroundLoad::default(),
            drill: false,
            app_settings: BTreeMap::new(),
            show_progress: false,
            pace_to_handler: true,
            record_traffic: None,
            handler_log_level: None,
            stop_after_last_tick: None,
        }
    }
}

/// Why a run could not be carried out (as opposed to a run whose coverage is incomplete).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Io(String),
}

/// Runs `vmrp local`.
pub async fn run(args: LocalArgs) -> Result<ExitCode, LocalError> {
    if std::env::var_os("RUST_LOG").is_none() {
        // The handler's console is in its log file (--handler-log), each line with the level
        // the host gives it; its WARN/ERROR lines (on stderr since the severity change (docs/operations.md)) would otherwise
        // scroll through the progress display.
        std::env::set_var("RUST_LOG", "warn,Host.Function.Console=off");
    }
    crate::logging::init_stderr();
    check_args(&args)?;
    let handler = std::env::current_exe()
        .map_err(|e| LocalError::Io(format!("cannot find this executable: {e}")))?;
    let mut scenario = Scenario::new(handler);
    scenario.fleet.count = args.vms;
    // Regions are checked before anything starts: the emulator would refuse a collection in a
    // location ARM does not know, deep into the run.
    let known = |flag: &str, regions: &[String]| -> Result<Vec<String>, LocalError> {
        regions
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                known_region(r)
                    .map(str::to_string)
                    .map_err(|e| LocalError::Io(format!("{flag}: {e}")))
            })
            .collect()
    };
    scenario.fleet.regions = known("--regions", &args.regions)?;
    scenario.fleet.seed = args.seed;
    scenario.mix = args.fleet;
    args.fleet.apply(&mut scenario.fleet);
    scenario.copy_to = known("--copy-to", &args.copy_to)?;
    scenario.ticks = args.ticks;
    scenario.speed = args.speed;
    scenario.seed = args.seed;
    scenario.schedule = args.schedule.clone();
    scenario.timeout = Duration::from_secs(args.timeout_secs);
    scenario.handler_log = args.handler_log.clone();
    scenario.instances = args.instances;
    scenario.background_load = args.background_load;
    scenario.drill = args.drill;
    // The operator of a subscription other tools share tells vmrp its share
    // (`VMRP_ARM_SHARE`, docs/deploy.md): what is left, less the default 5 % reserve for work
    // the plan does not know about.
    if args.background_load.share > 0.0 {
        scenario.app_settings.insert(
            crate::functions::ARM_SHARE_VAR.into(),
            format!("{:.2}", told_share(args.background_load)),
        );
    }
    scenario.show_progress = true;
    if let Some(path) = &args.faults {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LocalError::Io(format!("--faults {}: {e}", path.display())))?;
        scenario.faults = FaultConfig::from_json(&text).map_err(LocalError::Io)?;
    }
    if let Some(path) = &args.policy {
        scenario.policy =
            Some(Policy::from_file(path).map_err(|e| LocalError::Policy(e.to_string()))?);
    }

    let (report, emulator) = run_scenario_keep(&scenario).await?;
    println!("{}", render(&report));
    println!("{}", summary_line(&report));
    if let Some(path) = &args.report {
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        std::fs::write(path, text)
            .map_err(|e| LocalError::Io(format!("--report {}: {e}", path.display())))?;
        println!("report written to {}", path.display());
    }
    let mut drills_ok = true;
    if args.drill {
        let drilled = drill_demo(&emulator, &scenario).await?;
        print!("{}", drilled.render());
        drills_ok = drilled.ok();
    }
    if let Some(path) = &args.html {
        let page = html_report(&emulator, &scenario, &report).await?;
        crate::html_report::write(path, &page).map_err(LocalError::Io)?;
        println!("HTML report written to {}", path.display());
    }
    if args.keep_running {
        println!("emulator still running: {}", emulator.announcement());
        println!("press Ctrl-C to stop");
        // SIGTERM too: `timeout`, CI runners and service managers send it, and the handler
        // must stop with us (it also dies with us on a SIGKILL, see host_sim).
        crate::emulator::cli::shutdown_signal().await;
    }
    emulator
        .stop()
        .await
        .map_err(|e| LocalError::Emulator(e.to_string()))?;
    Ok(if report.clean() && drills_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The coverage page of a finished run: the emulator read through ARM exactly as `vmrp status`
/// reads Azure (at the virtual now), plus the reasons the run found for every missing point.
pub async fn html_report(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    report: &LocalReport,
) -> Result<crate::html_report::Report, LocalError> {
    use crate::azure::client::{ArmClient, ArmClientConfig};
    // A token the emulator's identity endpoint issues in-process (the managed-identity
    // credential reads its endpoint from the process environment, which this process lacks).
    let token = emulator
        .identity
        .issue("https://management.azure.com", None);
    let credential =
        crate::azure::credential::StaticToken::new(&token.access_token, Duration::from_secs(3000));
    let settings = emulator.handler_settings(BusAuth::Sas);
    let env = |k: &str| settings.get(k).cloned();
    let mut config = ArmClientConfig::from_env(&env, credential)
        .map_err(|e| LocalError::Emulator(e.to_string()))?;
    config.loopback_only = true;
    let arm = ArmClient::new(config).map_err(|e| LocalError::Emulator(e.to_string()))?;
    let policy = match &scenario.policy {
        Some(p) => p.clone(),
        None => default_policy(
            &emulator.subscriptions,
            &scenario.copy_to,
            (&scenario.fleet.tag_key, &scenario.fleet.tag_value),
        ),
    };
    let schedule = crate::schedule::Schedule::parse(&scenario.schedule)
        .map_err(|e| LocalError::Policy(e.to_string()))?;
    let inventory = crate::inventory::gather(&arm, &emulator.subscriptions)
        .await
        .map_err(|e| LocalError::Emulator(format!("reading the emulator for --html: {e}")))?;
    let now = emulator.clock.now();
    let rows = crate::commands::status::evaluate(
        &inventory,
        Some(&policy),
        &schedule,
        now,
        crate::commands::status::Grace::default(),
    );
    let failures = [("local", &report.local), ("copy", &report.copies)]
        .into_iter()
        .flat_map(|(role, counts)| {
            counts
                .failed
                .iter()
                .map(move |m| crate::html_report::Failure {
                    vm: m.vm.clone(),
                    region: m.region.clone(),
                    role: role.into(),
                    what: crate::schedule::rfc3339(m.tick),
                    reason: format!("{} ({})", m.reason, explanation_label(m.explained_by)),
                })
        })
        .collect();
    Ok(crate::html_report::Report {
        title: format!(
            "vmrp local: {} VMs, {} ticks",
            report.vms,
            report.ticks.len()
        ),
        generated_at: now,
        schedule: scenario.schedule.clone(),
        rows,
        failures,
        ticks: crate::html_report::ticks_from_inventory(&inventory, 12),
    })
}

/// Refuses, before anything starts, flags that would only fail at the end of a run (or never
/// finish): a speed that is not a positive number, and a `--report` or `--html` path
/// that cannot be written.
pub fn check_args(args: &LocalArgs) -> Result<(), LocalError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(LocalError::Io(format!(
            "--speed {}: must be a positive number of virtual seconds per real second (e.g. 1200)",
            args.speed
        )));
    }
    check_instances(args.instances).map_err(LocalError::Io)?;
    if let Some(path) = &args.report {
        writable(path).map_err(|e| LocalError::Io(format!("--report {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.html {
        writable(path).map_err(|e| LocalError::Io(format!("--html {}: {e}", path.display())))?;
    }
    Ok(())
}

/// `--instances N`: 1 to [`MAX_INSTANCES`] (`vmrp local` and `vmrp emulate`).
pub fn check_instances(n: usize) -> Result<(), String> {
    if (1..=MAX_INSTANCES).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "--instances {n}: must be between 1 and {MAX_INSTANCES} handler instances"
        ))
    }
}

/// Whether `path` can be written, checked by opening it for writing (and removing it again
/// when it did not exist), so a run does not go to waste on a report it cannot save.
fn writable(path: &Path) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The policy `vmrp local` uses without `--policy`: every VM of the emulated subscriptions
/// tagged `vmrp=on`, keep 3 local points and 2 copies per copy region.
pub fn default_policy(subscriptions: &[String], copy_to: &[String], tag: (&str, &str)) -> Policy {
    let copies: Vec<Value> = copy_to
        .iter()
        .map(|r| json!({"region": r, "retention": {"keepLast": 2}}))
        .collect();
    let doc = json!({"rules": [{
        "name": "local-demo",
        "targets": {"subscriptions": subscriptions, "tags": {tag.0: tag.1}},
        "copies": copies,
        "retention": {"keepLast": 3},
        "deadlines": {"localMinutes": 120, "copyMinutes": 1440, "maxRetries": 2}
    }]});
    // Invariant: a constant input (a fixed policy, date or template) that a test exercises.
    Policy::from_json_str(&doc.to_string()).expect("the default policy parses")
}

/// The scopes the deploy assigns vmrp's role at for `policy`, as ARM ids.
pub fn role_scopes(policy: &Policy) -> Vec<String> {
    crate::functions::collection_scopes(policy)
        .into_iter()
        .map(|scope| match scope {
            crate::azure::VmScope::Subscription(sub) => format!("/subscriptions/{sub}"),
            crate::azure::VmScope::ResourceGroup {
                subscription,
                resource_group,
            } => format!("/subscriptions/{subscription}/resourceGroups/{resource_group}"),
        })
        .collect()
}

/// Runs a scenario to the end and stops the emulator.
pub async fn run_scenario(scenario: &Scenario) -> Result<LocalReport, LocalError> {
    let (report, emulator) = run_scenario_keep(scenario).await?;
    emulator
        .stop()
        .await
        .map_err(|e| LocalError::Emulator(e.to_string()))?;
    Ok(report)
}

/// Runs a scenario and hands back the still-running emulator (for `--keep-running` and for
/// tests that compare the report with the emulator's own state).
pub async fn run_scenario_keep(
    scenario: &Scenario,
) -> Result<(LocalReport, RunningEmulator), LocalError> {
    let started = Instant::now();
    // The fleet is deterministic: its subscriptions are known before the emulator starts.
    let subscriptions =
        crate::emulator::arm::fleet::generate(&scenario.fleet, VIRTUAL_START).subscriptions;
    let policy = scenario_policy(scenario, &subscriptions);
    let arm = arm_config(scenario, &policy, &subscriptions)?;
    // Real time while the handler starts, so the first tick cannot pass before the timer
    // listens (at 3000× the 15 virtual minutes before it are 0.3 real seconds); the scenario's
    // speed from the moment the triggers run.
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: VIRTUAL_START,
        seed: scenario.seed,
        faults: scenario.faults.clone(),
        arm,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| LocalError::Emulator(e.to_string()))?;

    check_before_run(&emulator, scenario, &subscriptions).await?;
    if let Some(problem) = policy_problem(&emulator, scenario, &policy) {
        let _ = emulator.stop().await;
        return Err(problem);
    }
    // Kept on purpose: it holds the app files the host simulation restarts the handler from
    // (after a kill) and the handler log the report names, which outlive this function.
    let app_root = tempfile::Builder::new()
        .prefix("vmrp-local-")
        .tempdir()
        .map_err(|e| LocalError::Io(e.to_string()))?
        .keep();
    write_app(&app_root)?;
    let handler_log = scenario
        .handler_log
        .clone()
        .unwrap_or_else(|| app_root.join("handler.log"));

    let sim_config = host_sim_config(&emulator, scenario, &policy, &app_root, &handler_log);
    let sim = emulator
        .start_host_sim(sim_config)
        .await
        .map_err(|e| LocalError::Emulator(e.to_string()))?;
    sim.wait_ready(Duration::from_secs(30))
        .await
        .map_err(LocalError::Emulator)?;
    emulator.clock.set_speed(scenario.speed);
    let governor = scenario
        .pace_to_handler
        .then(|| spawn_governor(&emulator, &sim, scenario));

    let timer = crate::schedule::Schedule::parse(&scenario.schedule)
        .map_err(|e| LocalError::Policy(e.to_string()))?;
    let ticks = timer.occurrences(
        VIRTUAL_START,
        VIRTUAL_START + time::Duration::days(3650),
        scenario.ticks as usize,
    );
    let expected = expected_points(&emulator, &policy, &ticks, &timer);
    let mut tracker = Tracker::default();
    let progress = Progress::new(
        scenario.show_progress,
        expected.local.len() + expected.copies.len(),
    );
    let mut kill_plan = kill_moments(scenario, &ticks);
    let mut planned_kills_by_instance = vec![0u64; scenario.instances.max(1)];
    for (_, instance) in &kill_plan {
        planned_kills_by_instance[*instance] += 1;
    }
    let deadline = started + scenario.timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let points = emulator.arm.restore_points();
        tracker.observe(&points);
        let now = emulator.clock.now();
        if kill_plan.first().is_some_and(|(t, _)| *t <= now) {
            let (_, instance) = kill_plan.remove(0);
            sim.kill_instance(instance);
        }
        let done = tracker.settled_count(&expected);
        let pending = pending_messages(&emulator);
        progress.update(done, &tracker, &points, now, ticks.len(), &ticks);
        let timer_done = ticks
            .last()
            .is_some_and(|t| now > *t + time::Duration::minutes(1));
        // Done only once every tick's timer invocation has finished and nothing it started is
        // still running or queued (at high speed the minute after the last tick passes before
        // the timer invocation has sent anything).
        let timer_runs = sim
            .records()
            .iter()
            .filter(|r| r.function == crate::functions::SCHEDULE_RESTORE_POINTS)
            .count();
        let quiet = pending == 0 && sim.in_flight() == 0 && timer_runs >= ticks.len();
        let stop_asked = timer_runs >= ticks.len() && past_asked_stop(scenario, &ticks, now);
        if (timer_done && quiet || stop_asked) && kill_plan.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "vmrp local: giving up after {:?} (real); {pending} messages still pending",
                scenario.timeout
            );
            break;
        }
    }
    progress.finish();
    if let Some(g) = governor {
        g.abort();
        emulator.clock.set_speed(scenario.speed);
    }
    // Let the handler finish what it is writing before the final picture.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracker.observe(&emulator.arm.restore_points());
    let mut report = build_report(
        &emulator,
        &sim,
        &expected,
        &tracker,
        &ticks,
        started,
        Some(handler_log),
    );
    report.planned_kills_by_instance = planned_kills_by_instance;
    report.background_load = scenario.background_load;
    report.arm_share_told = scenario
        .app_settings
        .get(crate::functions::ARM_SHARE_VAR)
        .and_then(|v| v.parse().ok());
    Ok((report, emulator))
}

/// Whether `now` is past [`Scenario::stop_after_last_tick`] after the last tick.
fn past_asked_stop(scenario: &Scenario, ticks: &[OffsetDateTime], now: OffsetDateTime) -> bool {
    scenario
        .stop_after_last_tick
        .zip(ticks.last())
        .is_some_and(|(after, last)| now >= *last + after)
}

/// The scenario's policy: `--policy`, else the default for the fleet's subscriptions (or the
/// mixed one for a mixed fleet).
fn scenario_policy(scenario: &Scenario, subscriptions: &[String]) -> Policy {
    let tag = (
        scenario.fleet.tag_key.as_str(),
        scenario.fleet.tag_value.as_str(),
    );
    match (&scenario.policy, scenario.mix) {
        (Some(p), _) => p.clone(),
        (None, FleetMix::Plain) => default_policy(subscriptions, &scenario.copy_to, tag),
        (None, FleetMix::Mixed) => mixed_policy(
            subscriptions,
            &scenario.fleet.regions,
            &scenario.copy_to,
            tag,
        ),
    }
}

/// The emulated ARM for the scenario: its fleet, background load and the role vmrp would be
/// granted for `policy`.
fn arm_config(
    scenario: &Scenario,
    policy: &Policy,
    subscriptions: &[String],
) -> Result<ArmConfig, LocalError> {
    let mut arm = ArmConfig {
        fleet: scenario.fleet.clone(),
        record_traffic: scenario.record_traffic.clone(),
        ..ArmConfig::default()
    };
    scenario
        .background_load
        .validate()
        .map_err(|e| LocalError::Io(format!("--background-load: {e}")))?;
    arm.throttle.background = scenario.background_load;
    // vmrp's role holds what the deploy would assign for this policy (infra/main.bicep assigns
    // at the target subscriptions and resource groups; docs/deploy.md lists the collection and
    // copy groups among them): anything else is refused 403, as ARM does.
    arm.rules.role_scopes = Some(role_scopes(policy));
    // ... and exactly the actions the deployed role grants (infra/modules/vm-role.bicep), so a
    // run shows the whole lifecycle works under least privilege.
    arm.rules.role_actions = Some(crate::emulator::arm::rules::deployed_role_actions());
    // With --drill, the drill role too: disk write/delete at the drill group only
    // (infra/modules/drill-role.bicep), so a drill writing anywhere else is refused 403.
    if scenario.drill {
        arm.rules.role_grants = drill_section(policy, &scenario.copy_to)
            .role_scopes(subscriptions)
            .into_iter()
            .map(|scope| crate::emulator::arm::rules::RoleGrant {
                scope,
                actions: crate::azure::operations::DRILL_ACTIONS
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            })
            .collect();
    }
    Ok(arm)
}

/// Refuses a fleet other than the one the role scopes were computed for; adds the copy
/// regions' disk encryption sets.
async fn check_before_run(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    subscriptions: &[String],
) -> Result<(), LocalError> {
    if emulator.subscriptions != subscriptions {
        return Err(LocalError::Emulator(
            "the fleet's subscriptions differ from the ones the role scopes were computed for"
                .into(),
        ));
    }
    for set in copy_region_encryption_sets(scenario, subscriptions) {
        emulator
            .arm
            .add_encryption_set(set)
            .map_err(LocalError::Emulator)?;
    }
    Ok(())
}

/// Why `policy` cannot run on the emulated fleet: it is invalid, or it selects none of the
/// fleet's VMs (a run would "complete" with 0 VMs). `None` when it can.
fn policy_problem(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    policy: &Policy,
) -> Option<LocalError> {
    if let Err(problems) = policy.validate_with_timer(&scenario.schedule) {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Some(LocalError::Policy(lines.join("; ")));
    }
    let vms = emulator.arm.list_vms();
    if !vms.iter().any(|vm| policy.rule_for(vm).is_some()) {
        let message = format!(
            "no rule selects any of the {} VMs of the emulated fleet (subscription(s) {}, tag {}={} on {:.0}% of them); nothing to run. Target those subscriptions, or leave out --policy for the default policy",
            vms.len(),
            emulator.subscriptions.join(", "),
            scenario.fleet.tag_key,
            scenario.fleet.tag_value,
            scenario.fleet.tagged_fraction * 100.0
        );
        return Some(LocalError::Policy(message));
    }
    None
}

/// The simulated Functions host: the handler's app settings, the scenario's ticks and
/// instances, and the handler's console log at `handler_log`.
fn host_sim_config(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    policy: &Policy,
    app_root: &Path,
    handler_log: &Path,
) -> HostSimConfig {
    let mut sim_config = HostSimConfig::new(app_root);
    sim_config.app_settings = app_settings(emulator, scenario, policy);
    sim_config.timer_ticks = Some(scenario.ticks);
    sim_config.executable_override = Some(scenario.handler.clone());
    sim_config.console_log = Some(handler_log.to_path_buf());
    // At thousands of virtual seconds per real second, functionTimeout would otherwise be a
    // fraction of a real second: a handler busy on a 2-core machine is not a hung handler.
    sim_config.min_real_function_timeout = Duration::from_secs(30);
    sim_config.instances = scenario.instances;
    sim_config
}

/// The app settings the host simulation gives `scenario`'s handler instances on `emulator`
/// (`vmrp bench` starts one more handler with them, to measure one invocation alone).
pub fn scenario_app_settings(
    emulator: &RunningEmulator,
    scenario: &Scenario,
) -> BTreeMap<String, String> {
    let policy = scenario_policy(scenario, &emulator.subscriptions);
    app_settings(emulator, scenario, &policy)
}

/// The handler's app settings: the emulator's endpoints, the policy (with the drills section
/// under --drill), the schedule, and the scenario's own.
fn app_settings(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    policy: &Policy,
) -> BTreeMap<String, String> {
    let mut settings = emulator.handler_settings(BusAuth::Sas);
    // With --drill the app's policy carries the drills section the demo drills with, so the
    // registered RunRestoreDrills function drills exactly what `drill_demo` does.
    let mut app_policy = policy.clone();
    if scenario.drill {
        app_policy.drills = Some(drill_section(policy, &scenario.copy_to));
    }
    settings.insert(
        "VMRP_POLICY".into(),
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        serde_json::to_string(&app_policy).expect("policy serialises"),
    );
    settings.insert(
        crate::functions::run_restore_drills::DRILL_SCHEDULE_SETTING.into(),
        LOCAL_DRILL_SCHEDULE.into(),
    );
    settings.insert("VMRP_SCHEDULE".into(), scenario.schedule.clone());
    settings.insert("VMRP_LOOPBACK_ONLY".into(), "1".into());
    settings.extend(scenario.app_settings.clone());
    // The emulator's Retry-After counts virtual seconds; slept in real time it would stall an
    // invocation for many virtual hours (and past functionTimeout's real floor).
    settings.insert(crate::config::MAX_RETRY_AFTER_VAR.into(), "1".into());
    settings.insert(
        "RUST_LOG".into(),
        scenario.handler_log_level.clone().unwrap_or_else(|| {
            std::env::var("VMRP_HANDLER_LOG_LEVEL").unwrap_or_else(|_| "info".into())
        }),
    );
    settings
}

fn write_app(root: &Path) -> Result<(), LocalError> {
    for (path, text) in APP_FILES {
        let full = root.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LocalError::Io(e.to_string()))?;
        }
        std::fs::write(&full, text).map_err(|e| LocalError::Io(e.to_string()))?;
    }
    Ok(())
}

/// Moments (virtual) to kill a handler instance, and which one: spread over the ticks, drawn
/// from the seed (the instance from a dice of its own, so the moments stay those of a
/// one-instance run with the same seed).
pub fn kill_moments(scenario: &Scenario, ticks: &[OffsetDateTime]) -> Vec<(OffsetDateTime, usize)> {
    let (Some(first), Some(last)) = (ticks.first(), ticks.last()) else {
        return Vec::new();
    };
    let span = (*last - *first) + time::Duration::hours(1);
    let dice = crate::emulator::faults::Dice::new(scenario.seed ^ 0x6b696c6c);
    let which = crate::emulator::faults::Dice::new(scenario.seed ^ 0x696e7374);
    let n = scenario.instances.max(1);
    let mut out: Vec<(OffsetDateTime, usize)> = (0..scenario.kills)
        .map(|_| {
            let at = *first + span * dice.unit();
            let instance = ((which.unit() * n as f64) as usize).min(n - 1);
            (at, instance)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests;
