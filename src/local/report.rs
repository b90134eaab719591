//! What a `vmrp local` run reports: counts per role, missing points and their explanations, and the fault contract a run under faults must keep.

use super::*;

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
        self.failed.iter().filter(|m| nothing_to_restore(m)).count()
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

pub(super) fn explanation_label(e: Explanation) -> &'static str {
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
        // Copies more than a day behind give way to newer points on purpose
        // (`start_cross_region_copy::COPY_BACKLOG_DROPPED`): Azure's copy limit, not ordering.
        (
            "dropped from the copy backlog",
            "dropped from the copy backlog (a day behind)",
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
        // Put back while the target region refuses copies (its disk copies in flight at
        // Azure's limit): `start_cross_region_copy::COPY_LIMIT_WAIT`.
        (
            "waiting for room among the copies in flight",
            "waiting at Azure's copy-in-flight limit",
            false,
        ),
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

/// A miss because the VM has nothing a restore point could hold, or is not supported: said by
/// the plan beforehand (`Unsupported`, e.g. every disk excluded) or reported by the create
/// handler (a create the plan did not list, e.g. after `OnVmChanged`); either way, every tick.
fn nothing_to_restore(m: &Missing) -> bool {
    m.explained_by == Explanation::Unsupported
        || m.explained_by == Explanation::Reported && reason_class(&m.reason).1
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
                .filter(|m| nothing_to_restore(m))
                .map(|m| m.vm.as_str())
                .collect()
        })
        .collect();
    for vm in nothing.iter().flatten().collect::<BTreeSet<_>>() {
        let local = report
            .local
            .failed
            .iter()
            .filter(|m| m.vm == *vm && nothing_to_restore(m))
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
    out.extend(points_left_behind(report, points));
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

/// The points ARM still holds `Failed`, in progress, or (a copy) short of 100 %: each a breach
/// of the fault contract, but for the evidence of a superseded retry.
fn points_left_behind(report: &LocalReport, points: &[PointSummary]) -> Vec<String> {
    let mut out = Vec::new();
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
    out
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
