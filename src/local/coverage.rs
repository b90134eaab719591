//! Coverage: the points the policy expects, what the run saw, and the report built from both.

use super::*;
use crate::emulator::host_sim::InvocationRecord;

/// What the policy asks for: (vm, tick) locally and (vm, tick, region) copies.
pub(super) struct Expected {
    /// VMs the policy's per-VM check refuses (as the timer's plan does), with the reason.
    unsupported: BTreeMap<String, String>,
    pub(super) local: BTreeSet<(String, OffsetDateTime)>,
    pub(super) copies: BTreeSet<(String, OffsetDateTime, String)>,
    vm_region: BTreeMap<String, String>,
}

pub(super) fn expected_points(
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
pub(super) struct Tracker {
    /// (vm, region, point id) → (tick, is copy)
    settled: BTreeMap<(String, String, String), (OffsetDateTime, bool)>,
}

impl Tracker {
    pub(super) fn observe(&mut self, points: &[PointSummary]) {
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

    pub(super) fn settled_count(&self, expected: &Expected) -> usize {
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
pub(super) fn names_copy_collection(text: &str, vm: &str) -> bool {
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

pub(super) fn build_report(
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
    let (invocations, reported) = invocations_and_reports(&records, expected);
    let evidence = Evidence {
        expected,
        ticks,
        records: &records,
        points: &points,
        reported,
        left_out: left_out_by_plan(&records),
        outage: emulator.arm.outage_window(),
    };
    let local = role_counts(
        expected.local.iter().map(|(vm, tick)| {
            let region = expected.vm_region.get(vm).cloned().unwrap_or_default();
            (vm, *tick, region)
        }),
        expected.local.len(),
        false,
        &keys,
        &evidence,
    );
    let copies = role_counts(
        expected
            .copies
            .iter()
            .map(|(vm, tick, region)| (vm, *tick, region.clone())),
        expected.copies.len(),
        true,
        &keys,
        &evidence,
    );
    let untracked_in_progress = untracked_in_progress(emulator, &points);
    let (dead_letters, parked) = left_on_the_queues(emulator);
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

/// Reasons vmrp reported for points it gave up on, by VM name: (function, virtual start,
/// summary).
type Reported = BTreeMap<String, Vec<(String, OffsetDateTime, String)>>;

/// The invocations by function and outcome status, and the reasons vmrp reported, by VM name.
fn invocations_and_reports(
    records: &[InvocationRecord],
    expected: &Expected,
) -> (BTreeMap<String, BTreeMap<String, u64>>, Reported) {
    let mut reported: Reported = BTreeMap::new();
    let mut invocations: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in records {
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
        // A copy still waiting for its source's background data copy, or for room among
        // the region's copies in flight, when the run ends is explained by that wait (its last
        // rescheduled outcome), not left unexplained.
        let waiting = status == "rescheduled"
            && r.function == crate::functions::START_CROSS_REGION_COPY
            && r.response
                .as_ref()
                .and_then(|v| v["ReturnValue"]["summary"].as_str())
                .is_some_and(|s| {
                    use crate::functions::start_cross_region_copy::{
                        BACKGROUND_COPY_WAIT, COPY_LIMIT_WAIT,
                    };
                    s.contains(BACKGROUND_COPY_WAIT) || s.contains(COPY_LIMIT_WAIT)
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
    (invocations, reported)
}

/// VMs the tick's plan left out (PlanRestorePoints' outcome `leftOut`; a timer of the
/// version before the fan-out planned in-process), by (VM name, tick).
fn left_out_by_plan(records: &[InvocationRecord]) -> BTreeMap<(String, OffsetDateTime), String> {
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
    left_out
}

/// What the run saw, to explain an expected point that never settled ([`Evidence::reason_for`]).
struct Evidence<'a> {
    expected: &'a Expected,
    ticks: &'a [OffsetDateTime],
    records: &'a [InvocationRecord],
    points: &'a [PointSummary],
    reported: Reported,
    left_out: BTreeMap<(String, OffsetDateTime), String>,
    /// The ARM outage the run injected, if any.
    outage: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl Evidence<'_> {
    /// The tick window an invocation belongs to when its summary names no point: from its tick
    /// to the next one (the last tick's window stays open).
    fn window_of(&self, tick: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let next = self.ticks.iter().find(|t| **t > tick).copied().unwrap_or(
            // Invariant: a constant input (a fixed policy, date or template) that a test exercises.
            OffsetDateTime::from_unix_timestamp(253_402_300_799).expect("year 9999"),
        );
        (tick, next)
    }

    /// A tick whose timer run failed every time (the host retries it under the function's retry
    /// policy) sent only part of its creates; the points it never asked for are explained by it.
    fn failed_timer_run(&self, tick: OffsetDateTime) -> Option<String> {
        let (from, to) = self.window_of(tick);
        let runs: Vec<&InvocationRecord> = self
            .records
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
    }

    /// A tick whose timer run succeeded but reported that a subscription's listing failed (an
    /// ARM outage at the tick): the VMs it could not list got no create. Not by design: vmrp
    /// could list again once ARM is back, within the tick's window.
    fn listing_failed(&self, tick: OffsetDateTime) -> Option<String> {
        let (from, to) = self.window_of(tick);
        self.records
            .iter()
            .filter(|r| r.function == crate::functions::SCHEDULE_RESTORE_POINTS)
            .filter(|r| r.started >= from && r.started < to)
            .filter_map(|r| {
                let summary = r.response.as_ref()?["ReturnValue"]["summary"].as_str()?;
                summary.contains("listing failed").then(|| {
                    let during = if self
                        .outage
                        .is_some_and(|(a, b)| a <= r.started && r.started < b)
                    {
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
    }

    /// Why `vm`'s point of `tick` in `region` (a copy's when `copy`) never settled.
    fn reason_for(
        &self,
        vm: &str,
        region: &str,
        tick: OffsetDateTime,
        copy: bool,
    ) -> (String, Explanation) {
        // Said before the tick ran: the VM's point (and so its copies) did not fit the window.
        if let Some(why) = self.left_out.get(&(vm.to_string(), tick)) {
            return (
                format!("did not fit the tick's window (planned beforehand): {why}"),
                Explanation::LeftOutByPlan,
            );
        }
        let stem = names::restore_point_name(tick, 0);
        let (from, to) = self.window_of(tick);
        let candidates: Vec<&(String, OffsetDateTime, String)> = self
            .reported
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
        if let Some(reason) = self.expected.unsupported.get(vm) {
            return (reason.clone(), Explanation::Unsupported);
        }
        let seen = self.points.iter().find(|p| {
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
            None => self.nothing_created(tick),
        }
    }

    /// Why no point at all was created for `tick`: its timer run failed, its listing failed,
    /// or nothing explains it.
    fn nothing_created(&self, tick: OffsetDateTime) -> (String, Explanation) {
        if let Some(error) = self.failed_timer_run(tick) {
            return (
                format!(
                    "no restore point was created: the timer run for this tick failed ({error})"
                ),
                Explanation::TimerRunFailed,
            );
        }
        match self.listing_failed(tick) {
            Some(why) => (
                format!("no restore point was created: the timer's listing failed ({why})"),
                Explanation::Reported,
            ),
            None => (
                "no restore point was created".into(),
                Explanation::Unexplained,
            ),
        }
    }
}

/// One role's counts: each expected (VM, tick, region) is settled (extra settled points are
/// duplicates) or missing with the reason the run's evidence gives.
fn role_counts<'v>(
    wanted: impl Iterator<Item = (&'v String, OffsetDateTime, String)>,
    expected: usize,
    copy: bool,
    keys: &BTreeMap<(String, OffsetDateTime, String, bool), usize>,
    evidence: &Evidence<'_>,
) -> RoleCounts {
    let mut role = RoleCounts {
        expected,
        ..Default::default()
    };
    for (vm, tick, region) in wanted {
        match keys.get(&(vm.clone(), tick, region.clone(), copy)) {
            Some(n) => {
                role.settled += 1;
                role.duplicates += n - 1;
            }
            None => {
                let (reason, explained_by) = evidence.reason_for(vm, &region, tick, copy);
                role.failed.push(Missing {
                    vm: vm.clone(),
                    region,
                    tick,
                    reason,
                    explained_by,
                })
            }
        }
    }
    for m in &role.failed {
        let key = format!(
            "{}: {}",
            explanation_label(m.explained_by),
            reason_class(&m.reason).0
        );
        *role.failed_by_reason.entry(key).or_insert(0) += 1;
    }
    role
}

/// Points in progress at the end must have a poll pending for them: the ids of those without.
fn untracked_in_progress(emulator: &RunningEmulator, points: &[PointSummary]) -> Vec<String> {
    let pending_targets: BTreeSet<String> = emulator
        .bus
        .messages(Queue::Poll.name())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.body).ok())
        .filter_map(|v| v["target"].as_str().map(|t| t.to_ascii_lowercase()))
        .collect();
    points
        .iter()
        .filter(|p| {
            p.provisioning_state != "Succeeded"
                && p.provisioning_state != "Failed"
                && p.provisioning_state != "Canceled"
        })
        .filter(|p| !pending_targets.contains(&p.id.to_ascii_lowercase()))
        .map(|p| p.id.clone())
        .collect()
}

/// The dead letters of every queue, and the messages parked on the failed queue.
fn left_on_the_queues(emulator: &RunningEmulator) -> (Vec<Value>, Vec<Value>) {
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
    (dead_letters, parked)
}

pub(super) fn vm_rows(
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
