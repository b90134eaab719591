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

/// The app the host simulation loads: the repository's own host.json and function.json files,
/// embedded so an installed binary runs `vmrp local` anywhere.
const APP_FILES: &[(&str, &str)] = &[
    ("host.json", include_str!("../host.json")),
    (
        "ScheduleRestorePoints/function.json",
        include_str!("../functions/ScheduleRestorePoints/function.json"),
    ),
    (
        "PlanRestorePoints/function.json",
        include_str!("../functions/PlanRestorePoints/function.json"),
    ),
    (
        "CreateRestorePoint/function.json",
        include_str!("../functions/CreateRestorePoint/function.json"),
    ),
    (
        "StartCrossRegionCopy/function.json",
        include_str!("../functions/StartCrossRegionCopy/function.json"),
    ),
    (
        "PollRestorePoint/function.json",
        include_str!("../functions/PollRestorePoint/function.json"),
    ),
    (
        "OnVmChanged/function.json",
        include_str!("../functions/OnVmChanged/function.json"),
    ),
    (
        "RunRestoreDrills/function.json",
        include_str!("../functions/RunRestoreDrills/function.json"),
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

/// Counts for one role (local points or copies).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleCounts {
    /// (VM, tick[, region]) combinations the policy asks for.
    pub expected: usize,
    /// Of those, how many had a settled point (seen at any moment of the run).
    pub settled: usize,
    /// Expected but never settled, each with the reason vmrp reported (or what was seen).
    pub failed: Vec<Missing>,
    /// Extra settled points for the same (VM, tick, region): should be 0.
    pub duplicates: usize,
    /// `failed`, counted by [`Explanation`] class and reason class ([`reason_class`]), e.g.
    /// `"reported: every disk excluded" → 300`.
    pub failed_by_reason: BTreeMap<String, usize>,
}

impl RoleCounts {
    /// Expected points that are neither settled nor explained: should be 0.
    pub fn unexplained(&self) -> usize {
        self.failed
            .iter()
            .filter(|m| m.explained_by == Explanation::Unexplained)
            .count()
    }

    /// Every expected point settled, or is missing by design: VMs with nothing to restore are
    /// reported by vmrp, as they must be, and are not a coverage gap.
    pub fn covered(&self) -> bool {
        self.failed.len() == self.nothing_to_restore()
    }

    /// Expected points missing by design: the VM has nothing a restore point could hold
    /// (every disk excluded), so vmrp reports instead of creating.
    pub fn nothing_to_restore(&self) -> usize {
        self.failed
            .iter()
            .filter(|m| {
                m.explained_by == Explanation::Unsupported
                    || m.explained_by == Explanation::Reported && reason_class(&m.reason).1
            })
            .count()
    }
}

/// Where the reason of a missing point comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Explanation {
    /// vmrp itself reported the failure (an invocation outcome `reported` with its summary).
    Reported,
    /// The timer run of the tick failed (e.g. the handler was killed during it, every retry).
    TimerRunFailed,
    /// Only the emulator's state tells: the point exists but never settled.
    PointState,
    /// The VM is one restore points do not support as the policy asks (`Rule::check_vm`, the
    /// check the timer's plan and `vmrp plan` run): no create was sent, by design.
    Unsupported,
    /// The timer's plan said before the tick that the VM does not fit before the tick's
    /// supersede cut-off (`Plan::left_out`, carried in the timer's outcome as `leftOut`).
    LeftOutByPlan,
    /// Nothing explains it.
    Unexplained,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Missing {
    pub vm: String,
    pub region: String,
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    pub reason: String,
    pub explained_by: Explanation,
}

fn explanation_label(e: Explanation) -> &'static str {
    match e {
        Explanation::Reported => "reported",
        Explanation::TimerRunFailed => "timer run failed",
        Explanation::PointState => "seen in ARM",
        Explanation::Unsupported => "unsupported, named by vmrp plan",
        Explanation::LeftOutByPlan => "planned beforehand",
        Explanation::Unexplained => "unexplained",
    }
}

/// A short class for a failure reason (for counting), and whether it is a failure by design:
/// the VM has nothing a restore point could hold, so no point is the right outcome.
pub fn reason_class(reason: &str) -> (&'static str, bool) {
    const CLASSES: &[(&str, &str, bool)] = &[
        ("every disk is excluded", "every disk excluded", true),
        (
            "not supported by restore points",
            "not supported by restore points",
            true,
        ),
        ("must be at least", "spacing refused by Azure", false),
        // Azure's 500 points per VM across all collections: `policy check`
        // warns when a policy can reach it; other tools' points count too.
        (
            "maximum allowed snapshot limit",
            "500 points per VM reached (Azure's limit)",
            false,
        ),
        // Said by the plan before the tick (`Plan::left_out`): its reason names the next tick
        // that would supersede the create, so it must be classed before the two "superseded"
        // classes below, or a VM left out is counted as a copy lost to ordering.
        (
            "did not fit the tick's window",
            "did not fit the tick's window (planned beforehand)",
            false,
        ),
        // A create that came too late (create_restore_point.rs): the next tick takes its place.
        (
            "too close to the next tick",
            "create superseded by the next tick",
            false,
        ),
        ("superseded", "superseded by a newer copy", false),
        // Premium SSD v2 / Ultra snapshots copy only after their background data copy.
        (
            "background data copy",
            "waiting for the source's background data copy",
            false,
        ),
        ("listing failed", "the timer's listing failed", false),
        ("gave up after", "gave up after reschedules", false),
        ("timer run for this tick failed", "timer run failed", false),
        ("already exists", "name already taken", false),
        ("is Failed", "point Failed", false),
        ("Creating", "still in progress at the end", false),
        ("no restore point was created", "never created", false),
    ];
    CLASSES
        .iter()
        .find(|(needle, _, _)| reason.contains(needle))
        .map(|(_, class, by_design)| (*class, *by_design))
        .unwrap_or(("other", false))
}

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRow {
    pub vm: String,
    pub region: String,
    /// Points now in each region (own region first).
    pub points_by_region: BTreeMap<String, usize>,
    pub last_settled: Option<String>,
    pub last_settled_age_minutes: Option<i64>,
    pub failures: Vec<String>,
}

/// The report of a run (`--report FILE`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalReport {
    pub vms: usize,
    pub ticks: Vec<String>,
    pub local: RoleCounts,
    pub copies: RoleCounts,
    pub dead_letters: Vec<Value>,
    /// Messages parked on `rp-failed` (failed for good, each once, with its reason): what an
    /// operator reads in the portal's Service Bus Explorer on a real deployment.
    pub parked: Vec<Value>,
    /// 429 answers the emulator served (what the handler received).
    pub throttled_429: u64,
    pub arm_requests_by_operation: BTreeMap<String, u64>,
    pub arm_requests: u64,
    pub invocations_by_function: BTreeMap<String, BTreeMap<String, u64>>,
    pub handler_restarts: u64,
    pub handler_kills: u64,
    /// Handler instances that ran.
    pub instances: usize,
    /// The share of ARM's buckets other tools spent (`--background-load`), and the
    /// `VMRP_ARM_SHARE` the handler was given, if any.
    pub background_load: BackgroundLoad,
    pub arm_share_told: Option<f64>,
    /// Invocations sent to each instance (by index).
    pub invocations_by_instance: Vec<u64>,
    /// Kills each instance received, and the kills the run planned for it.
    pub handler_kills_by_instance: Vec<u64>,
    pub planned_kills_by_instance: Vec<u64>,
    /// Invocations the handler answered with a caught panic (`error.kind` = `panic`).
    pub handler_panics: u64,
    /// Points still in `Creating` at the end with no poll pending for them.
    pub untracked_in_progress: Vec<String>,
    pub virtual_seconds: i64,
    pub real_seconds: f64,
    /// Every expected point settled, or is missing by design (its VM has nothing to restore).
    pub complete: bool,
    pub rows: Vec<VmRow>,
    pub handler_log: Option<PathBuf>,
}

/// A miss the plan makes on purpose, with its own reason: the VM has nothing a restore point
/// could hold, or the point was superseded (a create too close to the next tick, a copy older
/// than one already copied). Anything else under faults is a lost point.
pub fn missing_by_design(m: &Missing) -> bool {
    m.explained_by == Explanation::Unsupported
        || m.explained_by == Explanation::LeftOutByPlan
        || m.explained_by == Explanation::Reported
            && (reason_class(&m.reason).1
            // create_restore_point's and start_cross_region_copy's own wording.
            || m.reason.contains("): superseded by it")
            || m.reason.contains(" is newer and already copied"))
}

/// What a run under faults and handler kills must still end with: every due point
/// settled exactly once (due = expected − [`missing_by_design`]), no point left `Failed` or
/// `Creating` (or a copy short of 100 %) in ARM — except the Failed point of a tick whose retry
/// was superseded by the next tick, which retention removes once a newer point settles — no dead letter, nothing in progress untracked,
/// the kills really happened, and no more timer runs failed than there were kills (a kill can
/// fail at most the run it lands in; the host retries it). `points` is ARM's final state.
/// Empty when the contract holds; else one line per breach.
pub fn fault_contract_violations(
    report: &LocalReport,
    points: &[PointSummary],
    kills: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    for (role, counts) in [("local", &report.local), ("copies", &report.copies)] {
        let by_design = counts
            .failed
            .iter()
            .filter(|m| missing_by_design(m))
            .count();
        let due = counts.expected - by_design;
        if counts.settled != due {
            out.push(format!(
                "{role}: {} settled, {due} due ({} expected − {by_design} missing by design)",
                counts.settled, counts.expected
            ));
        }
        for m in counts.failed.iter().filter(|m| !missing_by_design(m)) {
            out.push(format!(
                "{role}: {} {} {} lost: {} ({})",
                m.vm,
                m.region,
                names::restore_point_name(m.tick, 0),
                m.reason,
                explanation_label(m.explained_by)
            ));
        }
        if counts.duplicates != 0 {
            out.push(format!("{role}: {} duplicates", counts.duplicates));
        }
    }
    // Nothing to restore is a property of the VM, not of a tick or a role: a VM reported so
    // for one tick and not for another was misreported once.
    let nothing: Vec<BTreeSet<&str>> = [&report.local, &report.copies]
        .iter()
        .map(|c| {
            c.failed
                .iter()
                .filter(|m| m.explained_by == Explanation::Reported && reason_class(&m.reason).1)
                .map(|m| m.vm.as_str())
                .collect()
        })
        .collect();
    for vm in nothing.iter().flatten().collect::<BTreeSet<_>>() {
        let local = report
            .local
            .failed
            .iter()
            .filter(|m| m.vm == *vm && reason_class(&m.reason).1)
            .count();
        if local != report.ticks.len() {
            out.push(format!(
                "{vm}: nothing to restore on {local} of {} ticks",
                report.ticks.len()
            ));
        }
        if report.copies.expected > 0 && !nothing[1].contains(vm) {
            out.push(format!("{vm}: nothing to restore locally, yet copied"));
        }
    }
    // A Failed local point whose retry came too close to the next tick (superseded by design)
    // stays as the evidence of that failure until a newer point settles and retention deletes
    // it (retention.rs, rule 3): not a point left behind.
    let superseded_retry: BTreeSet<(&str, OffsetDateTime)> = report
        .local
        .failed
        .iter()
        .filter(|m| missing_by_design(m) && m.reason.contains("): superseded by it"))
        .map(|m| (m.vm.as_str(), m.tick))
        .collect();
    for p in points {
        let copy = p.source_restore_point.is_some();
        let evidence_of_a_superseded_retry = !copy
            && p.provisioning_state == "Failed"
            && p.id
                .rsplit('/')
                .next()
                .and_then(names::parse_restore_point_name)
                .is_some_and(|(tick, _)| {
                    let vm = p.vm.rsplit('/').next().unwrap_or_default();
                    superseded_retry.contains(&(vm, tick))
                });
        if evidence_of_a_superseded_retry {
            continue;
        }
        if p.provisioning_state != "Succeeded" || (copy && p.copy_percent != Some(100)) {
            out.push(format!(
                "{} left {} (copy {:?})",
                p.id, p.provisioning_state, p.copy_percent
            ));
        }
    }
    if !report.dead_letters.is_empty() {
        out.push(format!("{} dead letters", report.dead_letters.len()));
    }
    if !report.untracked_in_progress.is_empty() {
        out.push(format!(
            "in progress with no poll pending: {:?}",
            report.untracked_in_progress
        ));
    }
    if report.handler_kills != u64::from(kills) {
        out.push(format!(
            "{} handler kills, {kills} planned",
            report.handler_kills
        ));
    }
    // Each kill hits one instance: the one the seed chose, not another and not all.
    if report.handler_kills_by_instance != report.planned_kills_by_instance {
        out.push(format!(
            "kills by instance {:?}, planned {:?}",
            report.handler_kills_by_instance, report.planned_kills_by_instance
        ));
    }
    // The timer and the per-subscription planning it fans out to: a kill fails at most the run
    // it lands in.
    let timer_failures: u64 = [
        crate::functions::SCHEDULE_RESTORE_POINTS,
        crate::functions::PLAN_RESTORE_POINTS,
    ]
    .iter()
    .filter_map(|f| report.invocations_by_function.get(*f))
    .map(|by| {
        // build_report's labels for a host-side failure (`InvocationStatus`, lowercased).
        by.iter()
            .filter(|(s, _)| ["failed", "timedout", "protocolviolation"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum::<u64>()
    })
    .sum();
    if timer_failures > u64::from(kills) {
        out.push(format!(
            "{timer_failures} timer and planning runs failed with {kills} kills"
        ));
    }
    out
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

/// The drill group `vmrp local --drill` uses when the policy names none.
pub const DEMO_DRILL_GROUP: &str = "rg-vmrp-drill";

/// The policy's `drills`, or for a policy without one: [`DEMO_DRILL_GROUP`], four VMs per run,
/// the VM's own region and every copy region.
pub fn drill_section(policy: &Policy, copy_to: &[String]) -> crate::policy::drills::Drills {
    policy
        .drills
        .clone()
        .unwrap_or_else(|| crate::policy::drills::Drills {
            schedule: crate::policy::drills::DEFAULT_DRILL_SCHEDULE.into(),
            vms_per_run: 4,
            regions: std::iter::once(crate::policy::drills::LOCAL.to_string())
                .chain(copy_to.iter().cloned())
                .collect(),
            resource_group: DEMO_DRILL_GROUP.into(),
            cover_within_days: None,
        })
}

/// What `vmrp local --drill` did: every drill, how many runs it took to cover the fleet, and
/// the disks the emulator still holds in the drill group afterwards (none, when cleanup worked).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub vms: usize,
    pub runs: u64,
    pub results: Vec<crate::drill::DrillResult>,
    /// VMs with at least one drill (every VM, when the rotation covered the fleet).
    pub covered: usize,
    pub left_in_drill_group: Vec<String>,
}

impl DrillReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    pub fn ok(&self) -> bool {
        self.passed() == self.results.len()
            && self.left_in_drill_group.is_empty()
            && self.covered == self.vms
    }
    pub fn render(&self) -> String {
        let mut out = format!(
            "drills: {} VMs in {} runs, {} drills: {} passed, {} failed; {}/{} VMs drilled; drill group {}\n",
            self.vms,
            self.runs,
            self.results.len(),
            self.passed(),
            self.results.len() - self.passed(),
            self.covered,
            self.vms,
            if self.left_in_drill_group.is_empty() {
                "empty".to_string()
            } else {
                format!("still holds {} disks", self.left_in_drill_group.len())
            }
       );
        if let Some(slowest) = self
            .results
            .iter()
            .filter_map(|r| r.seconds_to_restore)
            .max_by(f64::total_cmp)
        {
            out.insert_str(out.len() - 1, &format!("; slowest restore {slowest:.2} s"));
        }
        for r in self.results.iter().filter(|r| !r.passed) {
            out.push_str(&format!(
                "  drill failed: {} {} ({}): {}\n",
                r.vm,
                r.region,
                if r.copy { "copy" } else { "local" },
                r.reason.as_deref().unwrap_or("no reason")
            ));
        }
        out
    }
}

/// An ARM client for the emulator with the app's identity (a token the emulator's identity
/// endpoint issues in-process), loopback only: what a drill in the function app would use.
pub fn app_arm_client(
    emulator: &RunningEmulator,
) -> Result<crate::azure::client::ArmClient, LocalError> {
    use crate::azure::client::{ArmClient, ArmClientConfig};
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
    ArmClient::new(config).map_err(|e| LocalError::Emulator(e.to_string()))
}

/// `vmrp local --drill`: after the run, drills the fleet with the app identity (the deployed
/// role plus the drill role at the drill group) over as many consecutive drill runs as cover
/// every VM (`drill::runs_to_cover`), then reads the emulator's own state for disks left in the
/// drill group. With the host simulation up and `--drill` (the app's policy then carries the
/// drills section), each run is the registered RunRestoreDrills function fired through the
/// host's timer path ([`drill_through_host`]), its drills read from the invocation's outcome;
/// otherwise the same `drill::run`, called directly.
pub async fn drill_demo(
    emulator: &RunningEmulator,
    scenario: &Scenario,
) -> Result<DrillReport, LocalError> {
    use crate::azure::Arm;
    let arm = app_arm_client(emulator)?;
    let policy = match &scenario.policy {
        Some(p) => p.clone(),
        None => default_policy(
            &emulator.subscriptions,
            &scenario.copy_to,
            (&scenario.fleet.tag_key, &scenario.fleet.tag_value),
        ),
    };
    let drills = drill_section(&policy, &scenario.copy_to);
    ensure_drill_groups(emulator, scenario, &drills);
    let mut vms = Vec::new();
    for sub in &emulator.subscriptions {
        vms.extend(
            arm.list_vms(&crate::azure::VmScope::Subscription(sub.clone()))
                .await
                .map_err(|e| LocalError::Emulator(format!("listing VMs for --drill: {e}")))?,
        );
    }
    let fleet = crate::drill::fleet(&policy, &vms);
    let runs = crate::drill::runs_to_cover(fleet.len(), drills.vms_per_run as usize);
    let schedule = crate::schedule::Schedule::parse(&drills.schedule)
        .map_err(|e| LocalError::Policy(format!("drills.schedule: {e}")))?;
    let mut results = Vec::new();
    if scenario.drill && emulator.host_sim().is_some() {
        // The registered RunRestoreDrills function, fired through the host's timer path: the
        // app's policy carries this drills section (run_scenario_keep with --drill).
        for run in drill_through_host(emulator, scenario, runs).await? {
            if run.status != "succeeded" {
                return Err(LocalError::Emulator(format!(
                    "RunRestoreDrills at {}: invocation {}: {}",
                    run.fired_at, run.status, run.outcome
                )));
            }
            results.extend(run.drills);
        }
    } else {
        // No host (a caller's own emulator): the same run, called directly.
        let mut tick = emulator.clock.now();
        for _ in 0..runs {
            tick = schedule
                .next_after(tick)
                .ok_or_else(|| LocalError::Policy("drills.schedule has no next run".into()))?;
            results.extend(
                crate::drill::run(&arm, &drills, &fleet, tick, crate::drill::Bounds::default())
                    .await
                    .map_err(LocalError::Policy)?,
            );
        }
    }
    let covered = fleet
        .iter()
        .filter(|(id, _)| results.iter().any(|r| r.vm == id.to_string()))
        .count();
    let groups: Vec<String> = drills
        .role_scopes(&emulator.subscriptions)
        .iter()
        .map(|g| format!("{}/", g.to_ascii_lowercase()))
        .collect();
    let left_in_drill_group = emulator.arm.dump()["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .filter(|id| {
            let id = id.to_ascii_lowercase();
            groups.iter().any(|g| id.starts_with(g))
        })
        .map(str::to_string)
        .collect();
    Ok(DrillReport {
        vms: fleet.len(),
        runs,
        results,
        covered,
        left_in_drill_group,
    })
}

/// What one RunRestoreDrills invocation through the host answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDrillRun {
    /// When the host fired the timer (virtual).
    pub fired_at: String,
    /// The invocation's status as the host recorded it (`succeeded`, `failed`, ...).
    pub status: String,
    /// The handler's `ReturnValue` (its `Outcome`: status, summary, each drill).
    pub outcome: serde_json::Value,
    /// The run's drills, from the outcome.
    pub drills: Vec<crate::drill::DrillResult>,
}

/// The registered RunRestoreDrills function, run through the host simulation's timer path
/// (the host's "run now" of a timer function, as the control endpoint offers): creates the
/// drill group(s), then fires the timer once per run needed to cover the fleet, moving the
/// virtual clock to the drill schedule's next occurrence before each, so each firing is the
/// next run of the rotation. Needs a run started with `--drill` (its app policy carries the
/// drills section) whose emulator is still up ([`run_scenario_keep`]).
pub async fn drill_through_host(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    runs: u64,
) -> Result<Vec<HostDrillRun>, LocalError> {
    let sim = emulator
        .host_sim()
        .ok_or_else(|| LocalError::Emulator("the host simulation is not running".into()))?;
    let policy = match &scenario.policy {
        Some(p) => p.clone(),
        None => default_policy(
            &emulator.subscriptions,
            &scenario.copy_to,
            (&scenario.fleet.tag_key, &scenario.fleet.tag_value),
        ),
    };
    let drills = drill_section(&policy, &scenario.copy_to);
    ensure_drill_groups(emulator, scenario, &drills);
    let schedule = crate::schedule::Schedule::parse(&drills.schedule)
        .map_err(|e| LocalError::Policy(format!("drills.schedule: {e}")))?;
    let mut out = Vec::new();
    for _ in 0..runs {
        let now = emulator.clock.now();
        let next = schedule
            .next_after(now)
            .ok_or_else(|| LocalError::Policy("drills.schedule has no next run".into()))?;
        emulator
            .clock
            .try_advance(next - now)
            .map_err(LocalError::Emulator)?;
        let record = sim
            .fire_timer(crate::functions::RUN_RESTORE_DRILLS)
            .await
            .map_err(|e| LocalError::Emulator(e.to_string()))?;
        let record = serde_json::to_value(&record).unwrap_or_default();
        let outcome = record["response"]["ReturnValue"].clone();
        let drills = match outcome.get("drills") {
            Some(d) => serde_json::from_value(d.clone()).map_err(|e| {
                LocalError::Emulator(format!("RunRestoreDrills answered unreadable drills: {e}"))
            })?,
            None => Vec::new(),
        };
        out.push(HostDrillRun {
            fired_at: record["started"].as_str().unwrap_or_default().to_string(),
            status: record["status"].as_str().unwrap_or_default().to_string(),
            outcome,
            drills,
        });
    }
    Ok(out)
}

/// The drill group exists before a drill (the operator creates it; infra/main.bicep assigns the
/// drill role there), so the demo creates it in the emulator.
fn ensure_drill_groups(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    drills: &crate::policy::drills::Drills,
) {
    let location = scenario
        .fleet
        .regions
        .first()
        .cloned()
        .unwrap_or_else(|| "westeurope".into());
    for scope in drills.role_scopes(&emulator.subscriptions) {
        if let Ok(id) = crate::azure::ResourceId::parse(&scope) {
            emulator.arm.add_resource_group(
                id.subscription(),
                id.resource_group().unwrap_or_default(),
                &location,
            );
        }
    }
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

impl LocalReport {
    /// Complete coverage, and nothing went wrong on the way: no handler panic, no dead letter
    /// and nothing parked (a message that failed for good is lost work even when a later tick
    /// covered it).
    pub fn clean(&self) -> bool {
        self.complete
            && self.handler_panics == 0
            && self.dead_letters.is_empty()
            && self.parked.is_empty()
    }
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
    let tag = (
        scenario.fleet.tag_key.as_str(),
        scenario.fleet.tag_value.as_str(),
    );
    let policy = match (&scenario.policy, scenario.mix) {
        (Some(p), _) => p.clone(),
        (None, FleetMix::Plain) => default_policy(&subscriptions, &scenario.copy_to, tag),
        (None, FleetMix::Mixed) => mixed_policy(
            &subscriptions,
            &scenario.fleet.regions,
            &scenario.copy_to,
            tag,
        ),
    };
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
    arm.rules.role_scopes = Some(role_scopes(&policy));
    // ... and exactly the actions the deployed role grants (infra/modules/vm-role.bicep), so a
    // run shows the whole lifecycle works under least privilege.
    arm.rules.role_actions = Some(crate::emulator::arm::rules::deployed_role_actions());
    // With --drill, the drill role too: disk write/delete at the drill group only
    // (infra/modules/drill-role.bicep), so a drill writing anywhere else is refused 403.
    if scenario.drill {
        arm.rules.role_grants = drill_section(&policy, &scenario.copy_to)
            .role_scopes(&subscriptions)
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

    if emulator.subscriptions != subscriptions {
        return Err(LocalError::Emulator(
            "the fleet's subscriptions differ from the ones the role scopes were computed for"
                .into(),
        ));
    }
    for set in copy_region_encryption_sets(scenario, &subscriptions) {
        emulator
            .arm
            .add_encryption_set(set)
            .map_err(LocalError::Emulator)?;
    }
    if let Err(problems) = policy.validate_with_timer(&scenario.schedule) {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let _ = emulator.stop().await;
        return Err(LocalError::Policy(lines.join("; ")));
    }
    // A policy that selects nothing would "complete" with 0 VMs: say so before running.
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
        let _ = emulator.stop().await;
        return Err(LocalError::Policy(message));
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

    let mut settings = emulator.handler_settings(BusAuth::Sas);
    // With --drill the app's policy carries the drills section the demo drills with, so the
    // registered RunRestoreDrills function drills exactly what `drill_demo` does.
    let mut app_policy = policy.clone();
    if scenario.drill {
        app_policy.drills = Some(drill_section(&policy, &scenario.copy_to));
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
    let mut sim_config = HostSimConfig::new(&app_root);
    sim_config.app_settings = settings;
    sim_config.timer_ticks = Some(scenario.ticks);
    sim_config.executable_override = Some(scenario.handler.clone());
    sim_config.console_log = Some(handler_log.clone());
    // At thousands of virtual seconds per real second, functionTimeout would otherwise be a
    // fraction of a real second: a handler busy on a 2-core machine is not a hung handler.
    sim_config.min_real_function_timeout = Duration::from_secs(30);
    sim_config.instances = scenario.instances;
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
        if timer_done && quiet && kill_plan.is_empty() {
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

/// The slowest the governor lets the clock run, as a fraction of the scenario's speed: at 2400×
/// a handler restart (about a real second) still costs only a virtual minute, and ARM's token
/// buckets (refilled in virtual time) still refill faster than the handler can drain them.
const SLOWEST_FRACTION: f64 = 1.0 / 40.0;
/// A message due this long ago (virtual) and not yet received means the handler is behind. So
/// a handler slower than the plan (a debug build on a busy machine) may deliver work up to this
/// late in virtual time before the clock slows down: tests bounding virtual durations allow it.
pub const ALLOWED_LAG: time::Duration = time::Duration::minutes(5);
/// How often the governor looks.
const GOVERNOR_PERIOD: Duration = Duration::from_millis(25);
/// The clock's speed while a tick is being planned (a timer run, or a PlanRestorePoints message
/// due or being handled): real time. Planning is seconds to a minute of real work (listings
/// with their pauses, up to `coverage_max_reads` coverage reads, 8 at a time), which in Azure
/// costs that many seconds of the tick's window. At `speed / 40` (60× for the soak's 2400×) a
/// 40-s plan of 2,000 VMs cost 40 virtual minutes: it passed the host's functionTimeout
/// (10 virtual minutes, once 30 real seconds had passed too), was timed out, its instance
/// restarted, the message redelivered, again and again, and the tick's plan ran after the
/// supersede cut-off or never (bench.md, "Correct at scale (session 5)").
pub const PLANNING_SPEED: f64 = 1.0;

/// How the handler stands, for the governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerLag {
    /// Nothing due waits: the clock may run at the scenario's speed.
    UpToDate,
    /// A due message waits, or an instance is restarting: slow down to `speed / 40`.
    Behind,
    /// A tick is being planned: slow down to [`PLANNING_SPEED`].
    Planning,
}

/// The slowest the governor lets the clock run for `lag`, given the scenario's speed.
pub fn governor_floor(target: f64, lag: HandlerLag) -> f64 {
    match lag {
        HandlerLag::Planning => PLANNING_SPEED.min(target),
        HandlerLag::UpToDate | HandlerLag::Behind => (target * SLOWEST_FRACTION).max(1.0),
    }
}

/// The next clock speed: halve while the handler is behind (down to `slowest`), grow by half
/// while it keeps up (up to `target`).
pub fn governed_speed(current: f64, target: f64, slowest: f64, behind: bool) -> f64 {
    let slowest = slowest.min(target);
    if behind {
        (current / 2.0).max(slowest)
    } else {
        (current * 1.5).min(target)
    }
}

/// How the handler stands right now (see the module doc).
fn handler_lag(clock: &VirtualClock, bus: &ServiceBus, sim: &HostSim) -> HandlerLag {
    // A tick's planning runs in PlanRestorePoints (rp-plan) after the timer's fan-out: a timer
    // run or a plan message due or being handled is real work that must cost the tick's
    // window what it would cost in Azure ([`PLANNING_SPEED`]).
    // Only a plan being handled or due now: a replan scheduled for later (after an outage's
    // 503s) is not planning, and the clock must carry the outage at its usual pace.
    let now = clock.now();
    if sim.timers_in_flight() > 0
        || bus.messages(Queue::Plan.name()).is_ok_and(|m| {
            m.iter()
                .any(|m| m.lock_token.is_some() || m.available_at <= now)
        })
    {
        return HandlerLag::Planning;
    }
    if sim.handler_state() != HandlerState::Ready {
        return HandlerLag::Behind;
    }
    let since = clock.now() - ALLOWED_LAG;
    if Queue::ALL
        .iter()
        .any(|q| bus.waiting_since(q.name(), since) > 0)
    {
        HandlerLag::Behind
    } else {
        HandlerLag::UpToDate
    }
}

/// Runs [`governed_speed`] on the clock until aborted.
fn spawn_governor(
    emulator: &RunningEmulator,
    sim: &Arc<HostSim>,
    scenario: &Scenario,
) -> tokio::task::JoinHandle<()> {
    let (clock, bus, sim) = (emulator.clock.clone(), emulator.bus.clone(), sim.clone());
    let target = scenario.speed;
    tokio::spawn(async move {
        let mut speed = target;
        loop {
            tokio::time::sleep(GOVERNOR_PERIOD).await;
            let lag = handler_lag(&clock, &bus, &sim);
            let slowest = governor_floor(target, lag);
            let next = governed_speed(speed, target, slowest, lag != HandlerLag::UpToDate);
            if next != speed {
                clock.set_speed(next);
                speed = next;
            }
        }
    })
}

fn pending_messages(emulator: &RunningEmulator) -> usize {
    Queue::ALL
        .iter()
        .map(|q| {
            emulator
                .bus
                .messages(q.name())
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

/// What the policy asks for: (vm, tick) locally and (vm, tick, region) copies.
struct Expected {
    /// VMs the policy's per-VM check refuses (as the timer's plan does), with the reason.
    unsupported: BTreeMap<String, String>,
    local: BTreeSet<(String, OffsetDateTime)>,
    copies: BTreeSet<(String, OffsetDateTime, String)>,
    vm_region: BTreeMap<String, String>,
}

fn expected_points(
    emulator: &RunningEmulator,
    policy: &Policy,
    ticks: &[OffsetDateTime],
    timer: &crate::schedule::Schedule,
) -> Expected {
    let mut e = Expected {
        unsupported: BTreeMap::new(),
        local: BTreeSet::new(),
        copies: BTreeSet::new(),
        vm_region: BTreeMap::new(),
    };
    // VMs with an Azure Backup collection: a rule with skipBackupProtected expects none of theirs.
    let backup_protected: BTreeSet<String> = emulator
        .arm
        .collections()
        .iter()
        .filter(|c| {
            c.id.as_deref()
                .and_then(|i| crate::azure::ResourceId::parse(i).ok())
                .is_some_and(|i| i.is_azure_backup())
        })
        .filter_map(|c| c.source_id().map(|s| s.to_ascii_lowercase()))
        .collect();
    for vm in emulator.arm.list_vms() {
        let Some(id) = vm.resource_id() else { continue };
        let Some(rule) = policy.rule_for(&vm) else {
            continue;
        };
        if rule.skip_backup_protected
            && backup_protected.contains(&id.as_str().to_ascii_lowercase())
        {
            continue;
        }
        let name = id.name().unwrap_or_default().to_string();
        e.vm_region.insert(
            name.clone(),
            canonical_region(vm.location.as_deref().unwrap_or_default()),
        );
        let disks: Vec<crate::policy::DiskInfo> = emulator
            .arm
            .disks_of(&vm)
            .iter()
            .filter_map(crate::policy::DiskInfo::from_disk)
            .collect();
        let refused: Vec<String> = rule
            .check_vm(&vm, &disks)
            .into_iter()
            .filter(|p| p.refuses_create())
            .map(|p| p.message)
            .collect();
        if !refused.is_empty() {
            e.unsupported.insert(
                name.clone(),
                format!("not supported by restore points: {}", refused.join("; ")),
            );
        }
        for tick in ticks {
            if !rule.is_due(timer, *tick).unwrap_or(false) {
                continue;
            }
            e.local.insert((name.clone(), *tick));
            for region in copy_regions_of(rule, vm.location.as_deref()) {
                e.copies.insert((name.clone(), *tick, region));
            }
        }
    }
    e
}

/// The regions a VM's points are copied to: the rule's, less the VM's own region, which the
/// create handler leaves out (a copy needs another region, `create_restore_point.rs`).
pub fn copy_regions_of(rule: &crate::policy::Rule, home: Option<&str>) -> Vec<String> {
    rule.copy_regions()
        .iter()
        .filter(|c| !home.is_some_and(|h| same_region(&c.region, h)))
        .map(|c| canonical_region(&c.region))
        .collect()
}

/// Everything seen settled during the run (points can be pruned by retention before the end).
#[derive(Default)]
struct Tracker {
    /// (vm, region, point id) → (tick, is copy)
    settled: BTreeMap<(String, String, String), (OffsetDateTime, bool)>,
}

impl Tracker {
    fn observe(&mut self, points: &[PointSummary]) {
        for p in points {
            let copy = p.source_restore_point.is_some();
            let settled =
                p.provisioning_state == "Succeeded" && (!copy || p.copy_percent == Some(100));
            if !settled {
                continue;
            }
            let point_name = p.id.rsplit('/').next().unwrap_or_default();
            let Some((tick, _)) = names::parse_restore_point_name(point_name) else {
                continue;
            };
            let vm = p.vm.rsplit('/').next().unwrap_or_default().to_string();
            self.settled.insert(
                (vm, canonical_region(&p.region), p.id.to_ascii_lowercase()),
                (tick, copy),
            );
        }
    }

    /// Settled points per (vm, tick, region, role).
    fn by_key(&self) -> BTreeMap<(String, OffsetDateTime, String, bool), usize> {
        let mut out = BTreeMap::new();
        for ((vm, region, _), (tick, copy)) in &self.settled {
            *out.entry((vm.clone(), *tick, region.clone(), *copy))
                .or_insert(0) += 1;
        }
        out
    }

    fn settled_count(&self, expected: &Expected) -> usize {
        let keys = self.by_key();
        let local = expected
            .local
            .iter()
            .filter(|(vm, tick)| {
                keys.contains_key(&(
                    vm.clone(),
                    *tick,
                    expected.vm_region.get(vm).cloned().unwrap_or_default(),
                    false,
                ))
            })
            .count();
        let copies = expected
            .copies
            .iter()
            .filter(|(vm, tick, region)| {
                keys.contains_key(&(vm.clone(), *tick, region.clone(), true))
            })
            .count();
        local + copies
    }
}

/// Whether `text` names one of `vm`'s copy collections: `rpc-{vm}-{8 hex}_{region}`, or the
/// pre-hash `rpc-{vm}-{region}`; its local collection `rpc-{vm}-{8 hex}` is not one.
fn names_copy_collection(text: &str, vm: &str) -> bool {
    let prefix = format!("rpc-{vm}-");
    text.match_indices(&prefix).any(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let hex = rest
            .chars()
            .take(8)
            .filter(|c| c.is_ascii_hexdigit())
            .count();
        match (hex, rest.chars().nth(8)) {
            (8, Some('_')) => true,
            (8, None | Some('/' | ' ' | ',' | ':' | ')')) => false,
            _ => true,
        }
    })
}

fn build_report(
    emulator: &RunningEmulator,
    sim: &Arc<HostSim>,
    expected: &Expected,
    tracker: &Tracker,
    ticks: &[OffsetDateTime],
    started: Instant,
    handler_log: Option<PathBuf>,
) -> LocalReport {
    let keys = tracker.by_key();
    let now = emulator.clock.now();
    let points = emulator.arm.restore_points();
    let records = sim.records();
    // Reasons vmrp reported for points it gave up on, by VM name: (function, virtual start,
    // summary).
    let mut reported: BTreeMap<String, Vec<(String, OffsetDateTime, String)>> = BTreeMap::new();
    let mut invocations: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in &records {
        let status = match r.status {
            InvocationStatus::Succeeded => r
                .response
                .as_ref()
                .and_then(|v| v["ReturnValue"]["status"].as_str())
                .unwrap_or("succeeded")
                .to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        *invocations
            .entry(r.function.clone())
            .or_default()
            .entry(status.clone())
            .or_insert(0) += 1;
        // A copy still waiting for its source's background data copy when the run ends is
        // explained by that wait (its last rescheduled outcome), not left unexplained.
        let waiting = status == "rescheduled"
            && r.function == crate::functions::START_CROSS_REGION_COPY
            && r.response
                .as_ref()
                .and_then(|v| v["ReturnValue"]["summary"].as_str())
                .is_some_and(|s| {
                    s.contains(crate::functions::start_cross_region_copy::BACKGROUND_COPY_WAIT)
                });
        if status == "reported" || waiting {
            if let Some(summary) = r
                .response
                .as_ref()
                .and_then(|v| v["ReturnValue"]["summary"].as_str())
            {
                for vm in expected.vm_region.keys() {
                    if summary.contains(&format!("/{vm}"))
                        || summary.contains(&format!("-{vm}/"))
                        || summary.contains(&format!("rpc-{vm}-"))
                        || summary.contains(&format!(" {vm}"))
                    {
                        reported.entry(vm.clone()).or_default().push((
                            r.function.clone(),
                            r.started,
                            summary.to_string(),
                        ));
                    }
                }
            }
        }
    }
    // VMs the tick's plan left out (PlanRestorePoints' outcome `leftOut`; a timer of the
    // version before the fan-out planned in-process), by (VM name, tick).
    let mut left_out: BTreeMap<(String, OffsetDateTime), String> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r.function == crate::functions::PLAN_RESTORE_POINTS
            || r.function == crate::functions::SCHEDULE_RESTORE_POINTS
    }) {
        let items = r
            .response
            .as_ref()
            .and_then(|v| v["ReturnValue"]["leftOut"].as_array().cloned())
            .unwrap_or_default();
        for item in items {
            let (Some(vm), Some(tick), Some(reason)) = (
                item["vm"].as_str(),
                item["tick"].as_str().and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                }),
                item["reason"].as_str(),
            ) else {
                continue;
            };
            let name = vm.rsplit('/').next().unwrap_or(vm).to_string();
            left_out.insert((name, tick), reason.to_string());
        }
    }
    // The tick window an invocation belongs to when its summary names no point: from its tick
    // to the next one (the last tick's window stays open).
    let window_of = |tick: OffsetDateTime| -> (OffsetDateTime, OffsetDateTime) {
        let next = ticks.iter().find(|t| **t > tick).copied().unwrap_or(
            // Invariant: a constant input (a fixed policy, date or template) that a test exercises.
            OffsetDateTime::from_unix_timestamp(253_402_300_799).expect("year 9999"),
        );
        (tick, next)
    };
    // A tick whose timer run failed every time (the host retries it under the function's retry
    // policy) sent only part of its creates; the points it never asked for are explained by it.
    let failed_timer_run = |tick: OffsetDateTime| -> Option<String> {
        let (from, to) = window_of(tick);
        let runs: Vec<&crate::emulator::host_sim::InvocationRecord> = records
            .iter()
            .filter(|r| r.function == crate::functions::SCHEDULE_RESTORE_POINTS)
            .filter(|r| r.started >= from && r.started < to)
            .collect();
        if runs.iter().any(|r| r.status == InvocationStatus::Succeeded) {
            return None;
        }
        runs.last().map(|r| {
            format!(
                "{} run(s), the last {:?}: {}",
                runs.len(),
                r.status,
                r.error.clone().unwrap_or_else(|| "no reply".into())
            )
        })
    };
    // A tick whose timer run succeeded but reported that a subscription's listing failed (an
    // ARM outage at the tick): the VMs it could not list got no create. Not by design: vmrp
    // could list again once ARM is back, within the tick's window.
    let outage = emulator.arm.outage_window();
    let listing_failed = |tick: OffsetDateTime| -> Option<String> {
        let (from, to) = window_of(tick);
        records
            .iter()
            .filter(|r| r.function == crate::functions::SCHEDULE_RESTORE_POINTS)
            .filter(|r| r.started >= from && r.started < to)
            .filter_map(|r| {
                let summary = r.response.as_ref()?["ReturnValue"]["summary"].as_str()?;
                summary.contains("listing failed").then(|| {
                    let during = if outage.is_some_and(|(a, b)| a <= r.started && r.started < b) {
                        ", during the ARM outage"
                    } else {
                        ""
                    };
                    format!(
                        "timer run at {}{during}",
                        crate::schedule::rfc3339(r.started)
                    )
                })
            })
            .next_back()
    };
    let reason_for = |vm: &str,
                      region: &str,
                      tick: OffsetDateTime,
                      copy: bool|
     -> (String, Explanation) {
        // Said before the tick ran: the VM's point (and so its copies) did not fit the window.
        if let Some(why) = left_out.get(&(vm.to_string(), tick)) {
            return (
                format!("did not fit the tick's window (planned beforehand): {why}"),
                Explanation::LeftOutByPlan,
            );
        }
        let stem = names::restore_point_name(tick, 0);
        let (from, to) = window_of(tick);
        let candidates: Vec<&(String, OffsetDateTime, String)> = reported
            .get(vm)
            .map(|rs| {
                rs.iter()
                    // A copy's report does not explain a missing local point.
                    .filter(|(function, _, summary)| {
                        copy || (function != crate::functions::START_CROSS_REGION_COPY
                            && !names_copy_collection(summary, vm)
                            && !summary.starts_with("copy of"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A summary naming this tick's point; else one naming no point at all (a VM-level
        // reason: every disk excluded, a refused create), reported during this tick's window.
        let named = candidates.iter().find(|(_, _, s)| s.contains(&stem));
        let vm_level = || {
            candidates
                .iter()
                .find(|(_, at, s)| !s.contains("/restorePoints/rp-") && *at >= from && *at < to)
        };
        if let Some((_, _, summary)) = named.or_else(vm_level) {
            return (summary.clone(), Explanation::Reported);
        }
        if let Some(reason) = expected.unsupported.get(vm) {
            return (reason.clone(), Explanation::Unsupported);
        }
        let seen = points.iter().find(|p| {
            p.vm.ends_with(&format!("/{vm}"))
                && canonical_region(&p.region) == region
                && p.source_restore_point.is_some() == copy
                && p.id.contains(&stem)
        });
        match seen {
                Some(p) => (
                    format!(
                        "point {} is {} (copy {}%)",
                        p.id.rsplit('/').next().unwrap_or_default(),
                        p.provisioning_state,
                        p.copy_percent.map(|c| c.to_string()).unwrap_or("-".into())
                    ),
                    Explanation::PointState,
                ),
                None => match failed_timer_run(tick) {
                    Some(error) => (
                        format!(
                            "no restore point was created: the timer run for this tick failed ({error})"
                        ),
                        Explanation::TimerRunFailed,
                    ),
                    None => match listing_failed(tick) {
                        Some(why) => (
                            format!("no restore point was created: the timer's listing failed ({why})"),
                            Explanation::Reported,
                        ),
                        None => (
                            "no restore point was created".into(),
                            Explanation::Unexplained,
                        ),
                    },
                },
            }
    };
    let mut local = RoleCounts {
        expected: expected.local.len(),
        ..Default::default()
    };
    for (vm, tick) in &expected.local {
        let region = expected.vm_region.get(vm).cloned().unwrap_or_default();
        match keys.get(&(vm.clone(), *tick, region.clone(), false)) {
            Some(n) => {
                local.settled += 1;
                local.duplicates += n - 1;
            }
            None => {
                let (reason, explained_by) = reason_for(vm, &region, *tick, false);
                local.failed.push(Missing {
                    vm: vm.clone(),
                    region: region.clone(),
                    tick: *tick,
                    reason,
                    explained_by,
                })
            }
        }
    }
    let mut copies = RoleCounts {
        expected: expected.copies.len(),
        ..Default::default()
    };
    for (vm, tick, region) in &expected.copies {
        match keys.get(&(vm.clone(), *tick, region.clone(), true)) {
            Some(n) => {
                copies.settled += 1;
                copies.duplicates += n - 1;
            }
            None => {
                let (reason, explained_by) = reason_for(vm, region, *tick, true);
                copies.failed.push(Missing {
                    vm: vm.clone(),
                    region: region.clone(),
                    tick: *tick,
                    reason,
                    explained_by,
                })
            }
        }
    }
    for role in [&mut local, &mut copies] {
        for m in &role.failed {
            let key = format!(
                "{}: {}",
                explanation_label(m.explained_by),
                reason_class(&m.reason).0
            );
            *role.failed_by_reason.entry(key).or_insert(0) += 1;
        }
    }
    // Points in progress at the end must have a poll pending for them.
    let pending_targets: BTreeSet<String> = emulator
        .bus
        .messages(Queue::Poll.name())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.body).ok())
        .filter_map(|v| v["target"].as_str().map(|t| t.to_ascii_lowercase()))
        .collect();
    let untracked_in_progress = points
        .iter()
        .filter(|p| {
            p.provisioning_state != "Succeeded"
                && p.provisioning_state != "Failed"
                && p.provisioning_state != "Canceled"
        })
        .filter(|p| !pending_targets.contains(&p.id.to_ascii_lowercase()))
        .map(|p| p.id.clone())
        .collect();
    let mut dead_letters = Vec::new();
    for q in Queue::ALL {
        for d in emulator.bus.dead_letters(q.name()).unwrap_or_default() {
            dead_letters.push(json!({"queue": q.name(), "messageId": d.message.message_id, "reason": d.reason, "description": d.description, "body": d.message.body}));
        }
    }
    let parked: Vec<Value> = emulator
        .bus
        .messages(Queue::Failed.name())
        .unwrap_or_default()
        .iter()
        .map(|m| serde_json::from_str(&m.body).unwrap_or_else(|_| Value::String(m.body.clone())))
        .collect();
    // A panic in a queue function is parked (the invocation answers `reported`), one in the
    // timer or Event Grid function fails the invocation: both count.
    let parked_panics = parked.iter().filter(|p| p["errorKind"] == "panic").count() as u64;
    let handler_panics = records
        .iter()
        .filter(|r| {
            r.response
                .as_ref()
                .is_some_and(|v| v["error"]["kind"] == "panic")
        })
        .count() as u64
        + parked_panics;
    let counters = emulator.arm.counters();
    let sim_counters = sim.counters();
    let rows = vm_rows(expected, &points, &local, &copies, now);
    let complete = local.covered() && copies.covered();
    LocalReport {
        vms: expected.vm_region.len(),
        ticks: ticks
            .iter()
            .map(|t| names::restore_point_name(*t, 0))
            .collect(),
        local,
        copies,
        dead_letters,
        parked,
        throttled_429: counters.responses_by_status.get(&429).copied().unwrap_or(0),
        arm_requests_by_operation: counters.requests_by_operation.clone(),
        arm_requests: counters.requests,
        invocations_by_function: invocations,
        handler_restarts: sim_counters.handler_restarts,
        handler_kills: sim_counters.handler_kills,
        instances: sim.instance_count(),
        invocations_by_instance: sim
            .instance_counters()
            .iter()
            .map(|c| c.invocations)
            .collect(),
        handler_kills_by_instance: sim.instance_counters().iter().map(|c| c.kills).collect(),
        // Filled in by the run, which knows its kill plan and settings.
        planned_kills_by_instance: vec![0; sim.instance_count()],
        background_load: BackgroundLoad::default(),
        arm_share_told: None,
        handler_panics,
        untracked_in_progress,
        virtual_seconds: (now - VIRTUAL_START).whole_seconds(),
        real_seconds: started.elapsed().as_secs_f64(),
        complete,
        rows,
        handler_log,
    }
}

fn vm_rows(
    expected: &Expected,
    points: &[PointSummary],
    local: &RoleCounts,
    copies: &RoleCounts,
    now: OffsetDateTime,
) -> Vec<VmRow> {
    expected
        .vm_region
        .iter()
        .map(|(vm, region)| {
            let mine: Vec<&PointSummary> = points
                .iter()
                .filter(|p| p.vm.rsplit('/').next() == Some(vm.as_str()))
                .collect();
            let mut points_by_region = BTreeMap::new();
            for p in &mine {
                *points_by_region
                    .entry(canonical_region(&p.region))
                    .or_insert(0) += 1;
            }
            let last = mine
                .iter()
                .filter(|p| p.source_restore_point.is_none() && p.provisioning_state == "Succeeded")
                .max_by_key(|p| p.time_created);
            let failures = local
                .failed
                .iter()
                .chain(&copies.failed)
                .filter(|m| &m.vm == vm)
                .map(|m| {
                    format!(
                        "{} {}: {}",
                        m.region,
                        names::restore_point_name(m.tick, 0),
                        m.reason
                    )
                })
                .collect();
            VmRow {
                vm: vm.clone(),
                region: region.clone(),
                points_by_region,
                last_settled: last.map(|p| p.id.rsplit('/').next().unwrap_or_default().to_string()),
                last_settled_age_minutes: last.map(|p| (now - p.time_created).whole_minutes()),
                failures,
            }
        })
        .collect()
}

/// The summary table.
pub fn render(report: &LocalReport) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "VM",
        "region",
        "points per region",
        "last settled",
        "age",
        "failures",
    ]);
    for r in &report.rows {
        let per_region: Vec<String> = r
            .points_by_region
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        table.add_row([
            r.vm.clone(),
            r.region.clone(),
            per_region.join(", "),
            r.last_settled.clone().unwrap_or_else(|| "-".into()),
            r.last_settled_age_minutes
                .map(crate::commands::status::human_minutes)
                .unwrap_or_else(|| "-".into()),
            if r.failures.is_empty() {
                "-".into()
            } else {
                r.failures.join("; ")
            },
        ]);
    }
    table.to_string()
}

/// One line: what was expected, what settled, what failed.
pub fn summary_line(r: &LocalReport) -> String {
    format!(
        "{}: {} VMs × {} ticks — local {}/{} settled ({} nothing to restore, {} otherwise explained, {} unexplained), copies {}/{} settled ({} nothing to restore, {} otherwise explained, {} unexplained), {} duplicates, {} dead letters, {} handler panics, {} parked, {} × 429, {} ARM requests, {} handler instances, {} handler restarts; {:.0} h virtual in {:.1} s",
        if r.clean() {
            "coverage complete"
        } else if r.complete {
            "FAILED (coverage complete, but work was dead-lettered or parked, or the handler panicked)"
        } else {
            "COVERAGE INCOMPLETE"
        },
        r.vms,
        r.ticks.len(),
        r.local.settled,
        r.local.expected,
        r.local.nothing_to_restore(),
        r.local.failed.len() - r.local.unexplained() - r.local.nothing_to_restore(),
        r.local.unexplained(),
        r.copies.settled,
        r.copies.expected,
        r.copies.nothing_to_restore(),
        r.copies.failed.len() - r.copies.unexplained() - r.copies.nothing_to_restore(),
        r.copies.unexplained(),
        r.local.duplicates + r.copies.duplicates,
        r.dead_letters.len(),
        r.handler_panics,
        r.parked.len(),
        r.throttled_429,
        r.arm_requests,
        r.instances,
        r.handler_restarts,
        r.virtual_seconds as f64 / 3600.0,
        r.real_seconds,
    )
}

/// The virtual moment as the progress line shows it: to the second, no nanoseconds.
pub fn virtual_label(now: OffsetDateTime) -> String {
    let (h, m, s) = now.to_hms();
    format!("{} {h:02}:{m:02}:{s:02}", now.date())
}

/// Live progress on a terminal (hidden when stdout is not one).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(show: bool, total: usize) -> Self {
        if !show {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} settled  {msg}",
            )
            // Invariant: a constant input (a fixed policy, date or template) that a test exercises.
            .expect("valid template"),
        );
        Self { bar: Some(bar) }
    }

    fn update(
        &self,
        done: usize,
        _tracker: &Tracker,
        points: &[PointSummary],
        now: OffsetDateTime,
        total_ticks: usize,
        ticks: &[OffsetDateTime],
    ) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(done as u64);
        let fired = ticks.iter().filter(|t| **t <= now).count();
        let creating = points
            .iter()
            .filter(|p| p.provisioning_state == "Creating")
            .count();
        let failed = points
            .iter()
            .filter(|p| p.provisioning_state == "Failed")
            .count();
        let mut copy_pct: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for p in points
            .iter()
            .filter(|p| p.source_restore_point.is_some() && p.copy_percent.unwrap_or(100) < 100)
        {
            let e = copy_pct
                .entry(canonical_region(&p.region))
                .or_insert((0, 0));
            e.0 += i64::from(p.copy_percent.unwrap_or(0));
            e.1 += 1;
        }
        let copies: Vec<String> = copy_pct
            .iter()
            .map(|(r, (sum, n))| format!("{r} {}%", sum / n.max(&1)))
            .collect();
        bar.set_message(format!(
            "tick {fired}/{total_ticks} | virtual {} | creating {creating} | copying {} | failed {failed}",
            virtual_label(now),
            if copies.is_empty() { "-".to_string() } else { copies.join(", ") }
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vmrp local` with a policy that made the handler panic said "coverage complete … 12 dead
    /// letters" and exited 0: complete coverage with dead letters or panics is a failed run.
    /// A create that ended Failed and whose retry came too close to the next tick leaves its
    /// Failed point as evidence (retention removes it later): by design, not a point left
    /// behind. The same Failed point without that reason breaks the contract.
    #[test]
    fn a_failed_point_whose_retry_was_superseded_is_not_left_behind() {
        let tick = time::macros::datetime!(2026-01-05 08:00 UTC);
        let vm_id =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
        let point = PointSummary {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/rpc-vm1-0a1b2c3d/restorePoints/{}", names::restore_point_name(tick, 0)),
            collection: "rpc-vm1-0a1b2c3d".into(),
            vm: vm_id.into(),
            region: "westeurope".into(),
            provisioning_state: "Failed".into(),
            consistency_mode: "ApplicationConsistent".into(),
            time_created: tick,
            source_restore_point: None,
            copy_percent: None,
        };
        let report = |reason: &str| {
            let missing = Missing {
                vm: "vm1".into(),
                region: "westeurope".into(),
                tick,
                reason: reason.into(),
                explained_by: Explanation::Reported,
            };
            LocalReport {
                vms: 1,
                ticks: vec![names::restore_point_name(tick, 0)],
                local: RoleCounts {
                    expected: 1,
                    failed: vec![missing],
                    ..Default::default()
                },
                copies: RoleCounts::default(),
                dead_letters: Vec::new(),
                parked: Vec::new(),
                throttled_429: 0,
                arm_requests_by_operation: BTreeMap::new(),
                arm_requests: 0,
                invocations_by_function: BTreeMap::new(),
                handler_restarts: 0,
                handler_kills: 0,
                instances: 1,
                invocations_by_instance: vec![0],
                handler_kills_by_instance: vec![0],
                planned_kills_by_instance: vec![0],
                background_load: BackgroundLoad::default(),
                arm_share_told: None,
                handler_panics: 0,
                untracked_in_progress: Vec::new(),
                virtual_seconds: 0,
                real_seconds: 0.0,
                complete: false,
                rows: Vec::new(),
                handler_log: None,
            }
        };
        let superseded = report(&format!("{vm_id}: the create for tick 2026-01-05T08:00:00Z came at 2026-01-05T09:04:16Z, too close to the next tick 2026-01-05T12:00:00Z (points 3h apart at least): superseded by it"));
        assert_eq!(
            fault_contract_violations(&superseded, std::slice::from_ref(&point), 0),
            Vec::<String>::new()
        );
        let gave_up = report(&format!("{vm_id}: gave up after 20 reschedules: 429"));
        let violations = fault_contract_violations(&gave_up, &[point], 0);
        assert!(
            violations.iter().any(|v| v.contains("left Failed")),
            "{violations:?}"
        );
    }

    #[test]
    fn dead_letters_or_panics_fail_a_complete_run() {
        let report = |dead_letters: usize, handler_panics: u64| LocalReport {
            vms: 1,
            ticks: vec!["rp-20261125T0400Z".into()],
            local: RoleCounts::default(),
            copies: RoleCounts::default(),
            dead_letters: vec![json!({"queue": "rp-create"}); dead_letters],
            parked: Vec::new(),
            throttled_429: 0,
            arm_requests_by_operation: BTreeMap::new(),
            arm_requests: 0,
            invocations_by_function: BTreeMap::new(),
            handler_restarts: 0,
            handler_kills: 0,
            instances: 1,
            invocations_by_instance: vec![0],
            handler_kills_by_instance: vec![0],
            planned_kills_by_instance: vec![0],
            background_load: BackgroundLoad::default(),
            arm_share_told: None,
            handler_panics,
            untracked_in_progress: Vec::new(),
            virtual_seconds: 0,
            real_seconds: 0.0,
            complete: true,
            rows: Vec::new(),
            handler_log: None,
        };
        assert!(report(0, 0).clean());
        assert!(summary_line(&report(0, 0)).starts_with("coverage complete"));
        for (dead, panics) in [(12, 0), (0, 1)] {
            let r = report(dead, panics);
            assert!(!r.clean());
            let line = summary_line(&r);
            assert!(line.starts_with("FAILED"), "{line}");
            assert!(
                line.contains(&format!("{dead} dead letters, {panics} handler panics")),
                "{line}"
            );
        }
    }

    #[test]
    fn copy_collections_are_told_from_the_local_one_in_summaries() {
        for (text, copy) in [
            (".../rpc-vm1-0a1b2c3d/restorePoints/rp-1 failed", false),
            (
                ".../rpc-vm1-0a1b2c3d_westus2/restorePoints/rp-1 failed",
                true,
            ),
            ("target collection rpc-vm1-westus2 exists", true),
            ("collection rpc-vm1-0a1b2c3d exists with source x", false),
            ("nothing here", false),
        ] {
            assert_eq!(names_copy_collection(text, "vm1"), copy, "{text}");
        }
    }

    #[test]
    fn the_clock_slows_while_behind_and_recovers() {
        // (current, behind) → next, for a target of 2400 and a floor of 60.
        let table = [
            (2400.0, false, 2400.0),
            (2400.0, true, 1200.0),
            (100.0, true, 60.0),
            (60.0, true, 60.0),
            (60.0, false, 90.0),
            (2000.0, false, 2400.0),
        ];
        for (current, behind, next) in table {
            assert_eq!(
                governed_speed(current, 2400.0, 60.0, behind),
                next,
                "{current} behind={behind}"
            );
        }
        // A floor above the target never speeds the clock up past the target.
        assert_eq!(governed_speed(10.0, 10.0, 60.0, true), 10.0);
    }

    /// Regression (the 2,000-VM soak's 08:00 tick, all left out): the governor slowed the
    /// clock to `speed / 40` whatever the handler was doing, so a plan taking 40 real seconds
    /// (listings and coverage reads at 2,000 VMs on a loaded machine) cost 40 virtual minutes
    /// at 2400×: past functionTimeout (timed out, restarted, redelivered) and past most of the
    /// tick's window. While a tick is planned the clock now runs at real time.
    #[test]
    fn a_plan_costs_the_tick_its_real_time_not_forty_times_more() {
        // (target, lag) → floor
        let table = [
            (2400.0, HandlerLag::Planning, PLANNING_SPEED),
            (2400.0, HandlerLag::Behind, 60.0),
            (2400.0, HandlerLag::UpToDate, 60.0),
            (10.0, HandlerLag::Behind, 1.0),
            (0.5, HandlerLag::Planning, 0.5),
        ];
        for (target, lag, floor) in table {
            assert_eq!(governor_floor(target, lag), floor, "{target} {lag:?}");
        }
        // The governor's loop over a 40-s plan at 2400×: the virtual time it lets pass.
        let plan_real_s = 40.0;
        let period = GOVERNOR_PERIOD.as_secs_f64();
        let (mut speed, mut virtual_s) = (2400.0, 0.0);
        for _ in 0..(plan_real_s / period) as usize {
            speed = governed_speed(
                speed,
                2400.0,
                governor_floor(2400.0, HandlerLag::Planning),
                true,
            );
            virtual_s += speed * period;
        }
        // The slowdown's first periods (halving from 2400×) cost about a minute; then real time.
        assert!(
            virtual_s < 3.0 * 60.0,
            "a 40-s plan cost {virtual_s:.0} virtual seconds"
        );
        // functionTimeout (10 virtual minutes) is not reached by a plan shorter than that.
        assert!(virtual_s < 600.0);
    }

    #[test]
    fn the_progress_line_shows_virtual_time_to_the_second() {
        let at = time::macros::datetime!(2026-01-05 05:43:07.744708711 UTC);
        assert_eq!(virtual_label(at), "2026-01-05 05:43:07");
    }

    /// Regression: `--copy-to westeurope` on a westeurope fleet counted the copies the handler
    /// rightly skips as expected, and the report said COVERAGE INCOMPLETE.
    #[test]
    fn no_copy_is_expected_into_the_vms_own_region() {
        let policy = default_policy(
            &["00000000-0000-0000-0000-000000000001".to_string()],
            &["westeurope".to_string(), "swedencentral".to_string()],
            ("vmrp", "on"),
        );
        let rule = &policy.rules[0];
        assert_eq!(
            copy_regions_of(rule, Some("West Europe")),
            ["swedencentral"]
        );
        assert_eq!(
            copy_regions_of(rule, Some("northeurope")),
            ["westeurope", "swedencentral"]
        );
    }

    #[test]
    fn speed_and_report_are_checked_before_the_run() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LocalArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("report.json");
        let args = |extra: &[&str]| {
            let mut argv = vec!["x"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args
        };
        for speed in ["0", "-5", "NaN", "inf"] {
            let flag = format!("--speed={speed}");
            let e = check_args(&args(&[flag.as_str()])).unwrap_err().to_string();
            assert!(e.starts_with("--speed"), "{speed}: {e}");
        }
        let unwritable = dir.path().join("no-such-folder").join("r.json");
        let e = check_args(&args(&["--report", unwritable.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--report"), "{e}");
        check_args(&args(&["--report", ok.to_str().unwrap()])).unwrap();
        assert!(!ok.exists(), "the check leaves no file behind");
    }

    #[test]
    fn nothing_to_restore_is_covered_anything_else_is_not() {
        let missing = |reason: &str, explained_by| Missing {
            vm: "vm1".into(),
            region: "westeurope".into(),
            tick: time::macros::datetime!(2026-01-05 04:00 UTC),
            reason: reason.into(),
            explained_by,
        };
        let by_design = missing(
            "vm1: every disk is excluded, nothing to restore",
            Explanation::Reported,
        );
        let mut counts = RoleCounts {
            expected: 2,
            settled: 1,
            failed: vec![by_design],
            ..RoleCounts::default()
        };
        assert!(counts.covered());
        counts.failed.push(missing(
            "vm1: gave up after 20 reschedules: 429",
            Explanation::Reported,
        ));
        assert!(!counts.covered(), "explained is not covered");
    }

    #[test]
    fn failure_reasons_fall_into_classes() {
        let vm =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
        let table = [
            (format!("{vm}: every disk is excluded, nothing to restore"), "every disk excluded", true),
            (format!("{vm}: creating the point failed: OperationNotAllowed Restore points of VM 'vm1' that are application-consistent must be at least 180 minutes apart"), "spacing refused by Azure", false),
            ("copy of x to swedencentral superseded: y is newer and already copied".to_string(), "superseded by a newer copy", false),
            (format!("{vm}: creating the point failed: VMRestorePointClientError Restore point creation failed: the maximum allowed snapshot limit of 500 restore points has been reached for VM 'vm1'. Delete older restore points and retry."), "500 points per VM reached (Azure's limit)", false),
            (format!("{vm}: the create for tick 2026-01-05T04:00:00Z came at 2026-01-05T05:10:00Z, too close to the next tick 2026-01-05T08:00:00Z (points 3h apart at least): superseded by it"), "create superseded by the next tick", false),
            (format!("{vm}: gave up after 20 reschedules: 429"), "gave up after reschedules", false),
            ("no restore point was created: the timer run for this tick failed (3 run(s))".to_string(), "timer run failed", false),
            ("point rp-20260105T0400Z is Failed (copy -%)".to_string(), "point Failed", false),
            ("point rp-20260105T0400Z is Creating (copy 40%)".to_string(), "still in progress at the end", false),
            ("no restore point was created".to_string(), "never created", false),
            (format!("copy of {vm}/rp-1 to swedencentral: {}: 1 of 2 disk restore points not copyable (first: d1 is InstantAccess): the snapshot's background data copy (Premium SSD v2 / Ultra disk) has not completed", crate::functions::start_cross_region_copy::BACKGROUND_COPY_WAIT), "waiting for the source's background data copy", false),
            // The plan's left-out reason names the next tick that would supersede the create:
            // still a VM left out beforehand, not a copy lost to ordering.
            ("did not fit the tick's window (planned beforehand): does not fit this tick: its create would go at 2026-01-05T05:01:00Z (+3660s, after 900 creates in subscription s paced at 67% of ARM's budget), within 60 min of 2026-01-05T08:00:00Z, after which the create is superseded by the next tick 2026-01-05T08:00:00Z (2 points 3 h apart); the next tick's order differs".to_string(), "did not fit the tick's window (planned beforehand)", false),
            ("something new".to_string(), "other", false),
        ];
        for (reason, class, by_design) in table {
            assert_eq!(reason_class(&reason), (class, by_design), "{reason}");
        }
    }
}
