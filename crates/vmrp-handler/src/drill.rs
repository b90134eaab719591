//! Restore drills: prove points restorable by restoring them. A drill restores the newest settled
//! point of a VM in one region (its own, or a copy region) as disks into a drill resource group,
//! records how long that took, deletes what it created, and reports passed or failed with the
//! reason. It never touches the VM or its collections: disks mode only, into the drill group.
//!
//! The rotation is pure ([`rotation`], [`runs_to_cover`]): run `n` drills `per_run` VMs starting
//! at `n * per_run` in the sorted fleet, wrapping, so every VM is drilled within
//! `ceil(fleet / per_run)` runs. [`run`] is one drill run as the policy's `drills` section
//! configures it ([`crate::policy::drills::Drills`]): the rotating set picked from the run's tick
//! ([`run_number`], so a replay of the same tick drills the same VMs), each VM drilled in every
//! configured region, one `vmrp::drill` event per VM and region ([`emit`]). The restore phase of
//! each drill is bounded ([`Bounds::restore`]); a drill that takes longer is reported failed
//! ("timed out"), and its disks are still deleted; the whole run is bounded too ([`Bounds::run`]).
//!
//! Every ARM call goes through the handlers' [`Arm`] trait, so the registered timer function
//! (crates/vmrp-handler/src/functions/run_restore_drills.rs) and `vmrp local --drill` run this code, and unit tests
//! run it against `testing::FakeArm`. Each disk a drill makes carries its run's tick
//! ([`TAG_DRILL`]) and a deterministic name; [`run_within`] sweeps the drill groups before and
//! after, so a run killed mid-drill leaves nothing past its redelivery or the next run.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use serde::Serialize;

use crate::azure::models::Disk;
use crate::azure::{Arm, DrillLedger, DrillRecord, ResourceId, VmScope};
use crate::policy::drills::{DrillGroup, Drills};
use crate::policy::regions::canonical_region;
use crate::policy::Policy;
use crate::restore::{self, points_in_region, Mode, Options, PointFacts, Selector};
use crate::schedule::Schedule;

/// `tracing` target of the drill events (docs/operations.md, drills).
pub const DRILL_TARGET: &str = "vmrp::drill";

/// The VMs drilled by run `run`: `per_run` of them (all when the fleet is smaller), rotating.
pub fn rotation(vms: &[ResourceId], per_run: usize, run: u64) -> Vec<ResourceId> {
    let n = vms.len();
    if n == 0 || per_run == 0 {
        return Vec::new();
    }
    let k = per_run.min(n);
    let start = ((run as u128 * k as u128) % n as u128) as usize;
    (0..k).map(|i| vms[(start + i) % n].clone()).collect()
}

/// How many runs cover every VM at least once (in vmrp-core: the policy's check states it).
pub use crate::policy::drills::runs_to_cover;

pub use crate::policy::drills::DrillResult;

/// Tag on every disk a drill creates, its value the run's tick (RFC 3339; `unscheduled` for a
/// drill outside a run). A run deletes tagged disks of other ticks before it starts and every
/// tagged disk of its own tick when it ends, so a drill cut off by the invocation's timeout
/// leaves nothing behind past the next run (or its own redelivery). Untagged disks in the drill
/// group are never touched.
pub const TAG_DRILL: &str = "vmrp-drill";

/// Drills `vm` in `region`: restores its newest settled point there as disks into
/// `drill_group` (same subscription), then deletes them. Never fails: the outcome says why.
pub async fn drill_vm(
    arm: &dyn Arm,
    vm: &ResourceId,
    region: &str,
    copy: bool,
    drill_group: &str,
) -> DrillResult {
    let group = DrillGroup {
        subscription: vm.subscription().to_string(),
        name: drill_group.to_string(),
    };
    drill_vm_into(arm, vm, region, copy, &group, Bounds::default().restore).await
}

/// [`drill_vm`] into a drill group of any subscription, the restore phase bounded by
/// `restore_within`: past it the drill fails "timed out" (what it made is still deleted).
pub async fn drill_vm_into(
    arm: &dyn Arm,
    vm: &ResourceId,
    region: &str,
    copy: bool,
    group: &DrillGroup,
    restore_within: Duration,
) -> DrillResult {
    drill_one(arm, vm, region, copy, group, restore_within, None).await
}

/// The value of [`TAG_DRILL`] for a run at `tick`.
fn tick_tag(tick: Option<OffsetDateTime>) -> String {
    tick.map_or_else(|| "unscheduled".to_string(), crate::schedule::rfc3339)
}

/// One drill, I/O only through [`Arm`]: choose the newest settled point in `region`, plan its
/// disks into the drill group (the same `restore::plan` as `vmrp restore`, tagged with the
/// run's tick), create each (adopting one a previous delivery of this run already made from
/// the same disk restore point), read it back until ARM says `Succeeded`, then delete them all.
async fn drill_one(
    arm: &dyn Arm,
    vm: &ResourceId,
    region: &str,
    copy: bool,
    group: &DrillGroup,
    restore_within: Duration,
    tick: Option<OffsetDateTime>,
) -> DrillResult {
    let region = canonical_region(region);
    let mut result = DrillResult {
        vm: vm.to_string(),
        region: region.clone(),
        copy,
        point: None,
        passed: false,
        reason: None,
        seconds_to_restore: None,
        disks: Vec::new(),
        cleaned: true,
    };
    let planned = async {
        let points = points_in_region(arm, vm, &region).await?;
        let facts: Vec<PointFacts> = points
            .iter()
            .map(|p| PointFacts {
                name: p.name.clone().unwrap_or_default(),
                created: p.time_created(),
                state: restore::point_state(p, copy || p.source_restore_point().is_some()),
            })
            .collect();
        let i = restore::choose(&facts, &Selector::Newest, &region)?;
        let point = &points[i];
        let options = Options {
            subscription: group.subscription.clone(),
            resource_group: group.name.clone(),
            region: region.clone(),
            copy,
            point_name: facts[i].name.clone(),
            sku: None,
            zone: None,
            source_zones: Vec::new(),
            disk_encryption_set: None,
            source_metadata: serde_json::Value::Null,
            mode: Mode::Disks,
        };
        let mut calls = restore::plan(&restore::disks_of(point), &options)?;
        let salt = drill_salt(vm, &region);
        for call in &mut calls {
            if call.kind == restore::CallKind::CreateDisk {
                call.id = salted(&call.id, &salt);
            }
            if let Some(body) = call.body.as_mut() {
                body["tags"] = serde_json::json!({ TAG_DRILL: tick_tag(tick) });
            }
        }
        Ok::<_, String>((point.id.clone().unwrap_or_default(), calls))
    }
    .await;
    let (point, calls) = match planned {
        Ok(p) => p,
        Err(reason) => {
            result.reason = Some(reason);
            return result;
        }
    };
    result.point = Some(point);
    let started = Instant::now();
    let mut failure = None;
    // Every disk whose PUT was sent: after a timeout, the one in flight may still be created.
    let mut sent: Vec<String> = Vec::new();
    let restored = tokio::time::timeout(restore_within, async {
        for call in calls
            .iter()
            .filter(|c| c.kind == restore::CallKind::CreateDisk)
        {
            sent.push(call.id.clone());
            restore_disk(arm, call).await?;
        }
        Ok::<_, String>(())
    })
    .await;
    match restored {
        Ok(Ok(())) => result.seconds_to_restore = Some(started.elapsed().as_secs_f64()),
        Ok(Err(e)) => failure = Some(e),
        Err(_) => {
            failure = Some(format!(
                "timed out: the restore took longer than {} s (the bound of one drill)",
                restore_within.as_secs()
            ))
        }
    }
    // Clean up whatever may exist, even after a failure (a DELETE of a disk that is not there
    // counts as deleted); a disk left behind fails the drill.
    result.disks = sent;
    for id in &result.disks {
        let deleted = match ResourceId::parse(id) {
            Ok(rid) => arm.delete_disk(&rid).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deleted {
            result.cleaned = false;
            failure.get_or_insert(format!("cleaning up {id}: {e}"));
        }
    }
    result.passed = failure.is_none();
    result.reason = failure;
    result
}

/// Eight hex digits of the VM's id and the region: the drill group is shared by every VM and
/// region, and `restore::disk_name` (`{disk}-rp-{point}`) alone collides when two VMs' disks
/// share a name, or a VM's local and copy points share theirs.
fn drill_salt(vm: &ResourceId, region: &str) -> String {
    use sha2::Digest;
    let key = format!("{}|{}", vm.as_str().to_ascii_lowercase(), region);
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `id` with `-{salt}` on its last segment, kept to Azure's 80 characters (`disk_name` already
/// left only ASCII letters, digits, `-`, `_` and `.`).
fn salted(id: &str, salt: &str) -> String {
    let (parent, name) = id.rsplit_once('/').unwrap_or(("", id));
    let keep = restore::MAX_DISK_NAME - salt.len() - 1;
    let name = if name.len() > keep {
        name[..keep].trim_end_matches(['-', '.'])
    } else {
        name
    };
    format!("{parent}/{name}-{salt}")
}

/// One disk of a drill: adopt it when it exists from the same disk restore point (a replayed
/// run), else create it, then read it back: a drill passes only on a disk ARM reports
/// `Succeeded`.
async fn restore_disk(arm: &dyn Arm, call: &restore::Call) -> Result<(), String> {
    let id = ResourceId::parse(&call.id).map_err(|e| format!("{}: {e}", call.id))?;
    let source = call.source.clone().unwrap_or_default();
    let made_from = |d: &Disk| {
        d.properties
            .as_ref()
            .and_then(|p| p.creation_data.as_ref())
            .and_then(|c| c.source_resource_id.clone())
    };
    let same = |s: &str| {
        s.trim_start_matches('/')
            .eq_ignore_ascii_case(source.trim_start_matches('/'))
    };
    let existing = arm
        .get_disk(&id)
        .await
        .map_err(|e| format!("reading a disk: {e}"))?;
    match existing {
        Some(d) if made_from(&d).is_some_and(|s| same(&s)) => {}
        Some(d) => {
            return Err(format!(
                "disk {id} exists and was not made from {source} (its source: {})",
                made_from(&d).unwrap_or_else(|| "none".into())
            ))
        }
        None => {
            let body = call.body.clone().unwrap_or_default();
            arm.create_disk(&id, &body)
                .await
                .map_err(|e| format!("creating a disk from its disk restore point: {e}"))?;
        }
    }
    let disk = arm
        .get_disk(&id)
        .await
        .map_err(|e| format!("reading the restored disk: {e}"))?
        .ok_or_else(|| format!("disk {id} is not there after its create"))?;
    let state = disk
        .properties
        .as_ref()
        .and_then(|p| p.provisioning_state.clone())
        .unwrap_or_else(|| "unknown".into());
    if !state.eq_ignore_ascii_case("Succeeded") {
        return Err(format!(
            "disk {id} is '{state}' after its create, not 'Succeeded'"
        ));
    }
    Ok(())
}

/// How long one drill may take: the restore phase (disk PUTs until each disk exists); cleanup
/// always runs after it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub restore: Duration,
    /// The whole run: no drill starts past it, and each drill's restore ends by it (cleanup
    /// runs after). Drills not started are named in the run's report, not failed.
    pub run: Duration,
}

impl Default for Bounds {
    /// Two minutes per VM and region, and eight minutes per run: host.json's `functionTimeout`
    /// is ten, and the last drill's cleanup and the final sweep need the rest. A run of many
    /// VMs in two regions does not fit; docs/policy.md keeps `vmsPerRun` at 1 by default.
    fn default() -> Self {
        Self {
            restore: Duration::from_secs(120),
            run: Duration::from_secs(8 * 60),
        }
    }
}

/// The run number of the drill tick `tick` under `schedule`: consecutive runs get consecutive
/// numbers, the same tick always the same number (a replayed run drills the same VMs). A
/// schedule with one fixed interval counts intervals since 2000-01-01; an irregular one counts
/// its occurrences since 2024-01-01 (bounded work: at most 200,000 steps, then intervals).
pub fn run_number(schedule: &Schedule, tick: OffsetDateTime) -> u64 {
    const EPOCH: OffsetDateTime = time::macros::datetime!(2000-01-01 00:00 UTC);
    const COUNT_FROM: OffsetDateTime = time::macros::datetime!(2024-01-01 00:00 UTC);
    let year_before = tick - time::Duration::days(366);
    let min = schedule.min_interval(year_before);
    let max = {
        let mut prev = schedule.next_after(year_before);
        let mut max: Option<time::Duration> = None;
        let mut n = 0;
        while let Some(p) = prev {
            let Some(next) = schedule.next_after(p) else {
                break;
            };
            if next > tick || n > 20_000 {
                break;
            }
            max = Some(max.map_or(next - p, |m| m.max(next - p)));
            prev = Some(next);
            n += 1;
        }
        max
    };
    let by_interval = |gap: time::Duration| {
        ((tick - EPOCH).whole_seconds().max(0) / gap.whole_seconds().max(1)) as u64
    };
    match (min, max) {
        (Some(a), Some(b)) if a == b => by_interval(a),
        (Some(a), _) if tick > COUNT_FROM => {
            let mut at = COUNT_FROM;
            let mut n = 0u64;
            while let Some(next) = schedule.next_after(at) {
                if next > tick {
                    return n;
                }
                n += 1;
                at = next;
                if n > 200_000 {
                    break;
                }
            }
            by_interval(a)
        }
        (Some(a), _) => by_interval(a),
        _ => 0,
    }
}

/// The fleet drills rotate over: every VM a rule of `policy` selects, with its region, sorted by
/// id (the rotation's order).
pub fn fleet(
    policy: &Policy,
    vms: &[crate::azure::models::VirtualMachine],
) -> Vec<(ResourceId, String)> {
    let mut out: Vec<(ResourceId, String)> = vms
        .iter()
        .filter(|vm| policy.rule_for(vm).is_some())
        .filter_map(|vm| {
            let id = ResourceId::parse(vm.id.as_deref()?).ok()?;
            Some((id, vm.location.clone().unwrap_or_default()))
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.to_string()
            .to_lowercase()
            .cmp(&b.0.to_string().to_lowercase())
    });
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// What one run drills: `(vm, region, copy)` for the rotating set of run `run`, every
/// configured region each.
pub fn plan_run(
    drills: &Drills,
    fleet: &[(ResourceId, String)],
    run: u64,
) -> Vec<(ResourceId, String, bool)> {
    let ids: Vec<ResourceId> = fleet.iter().map(|(id, _)| id.clone()).collect();
    rotation(&ids, drills.vms_per_run as usize, run)
        .into_iter()
        .flat_map(|vm| {
            let home = fleet
                .iter()
                .find(|(id, _)| *id == vm)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            drills
                .targets(&home)
                .into_iter()
                .map(move |(region, copy)| (vm.clone(), region, copy))
        })
        .collect()
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The run's number ([`run_number`]): which slice of the rotation it drilled.
    pub run: u64,
    pub results: Vec<DrillResult>,
    /// `(vm, region)` the run's budget left no time for (drilled again when the rotation
    /// comes back to them).
    pub not_started: Vec<(String, String)>,
    /// Tagged disks of this or earlier runs the sweeps deleted (left by a run cut off by its
    /// invocation's timeout, or by a drill whose own cleanup failed).
    pub swept: Vec<String>,
    /// Sweeps that could not list or delete (the next run tries again).
    pub sweep_failures: Vec<String>,
    /// Drills whose result the ledger kept (docs/restore.md, "Where drill results are kept").
    pub recorded: usize,
    /// Drills whose result the ledger could not keep, with why: the drill's own result
    /// stands (it is in `results` and its event), and the other drills are still recorded.
    pub record_failures: Vec<String>,
}

/// One drill run at `tick`: [`run_within`], the results only.
pub async fn run(
    arm: &dyn Arm,
    drills: &Drills,
    fleet: &[(ResourceId, String)],
    tick: OffsetDateTime,
    bounds: Bounds,
) -> Result<Vec<DrillResult>, String> {
    run_within(arm, drills, fleet, tick, bounds, None)
        .await
        .map(|r| r.results)
}

/// One drill run at `tick`: sweeps what earlier runs left in the drill groups, drills each VM
/// and region of the run's slice of the rotation in turn (one at a time: a drill is a probe,
/// not a load) within `bounds`, emits one event per drill and records it in `ledger` (right
/// after the drill, so a run cut off later keeps what it finished), then sweeps this run's
/// own tag.
pub async fn run_within(
    arm: &dyn Arm,
    drills: &Drills,
    fleet: &[(ResourceId, String)],
    tick: OffsetDateTime,
    bounds: Bounds,
    ledger: Option<&dyn DrillLedger>,
) -> Result<RunReport, String> {
    let schedule = Schedule::parse(&drills.schedule).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut report = RunReport {
        run: run_number(&schedule, tick),
        ..RunReport::default()
    };
    // Every group the fleet's drills use (one per subscription for a group given by name), so
    // a disk leaked by a run over other VMs is still found.
    let mut groups: Vec<DrillGroup> = Vec::new();
    for (vm, _) in fleet {
        let g = drills.group_for(vm);
        if !groups.iter().any(|x| {
            x.subscription.eq_ignore_ascii_case(&g.subscription)
                && x.name.eq_ignore_ascii_case(&g.name)
        }) {
            groups.push(g);
        }
    }
    let this = tick_tag(Some(tick));
    // Before: disks of other runs (this run's own, from an earlier delivery, are adopted).
    sweep(arm, &groups, |t| t != this, &mut report).await;
    for (vm, region, copy) in plan_run(drills, fleet, report.run) {
        let left = bounds.run.saturating_sub(started.elapsed());
        if left.is_zero() {
            report.not_started.push((vm.to_string(), region));
            continue;
        }
        let group = drills.group_for(&vm);
        let within = bounds.restore.min(left);
        let result = drill_one(arm, &vm, &region, copy, &group, within, Some(tick)).await;
        emit(&result, tick);
        if let Some(ledger) = ledger {
            record(ledger, &result, tick, &mut report).await;
        }
        report.results.push(result);
    }
    // After: anything of this run still there (a drill whose cleanup failed, a disk made by a
    // killed delivery from a point that is no longer the newest).
    sweep(arm, &groups, |t| t == this, &mut report).await;
    Ok(report)
}

/// Keeps one drill's result in the ledger. A failure is logged and named in the report; it
/// neither changes the drill's result nor stops the run (the next drill is still recorded).
async fn record(
    ledger: &dyn DrillLedger,
    result: &DrillResult,
    tick: OffsetDateTime,
    report: &mut RunReport,
) {
    match ledger.record(&DrillRecord::of(result, tick)).await {
        Ok(()) => report.recorded += 1,
        Err(e) => {
            tracing::warn!(vm = %result.vm, region = %result.region, error = %e, "could not record the drill's result in the drill table");
            report
                .record_failures
                .push(format!("{} {}: {e}", result.vm, result.region));
        }
    }
}

/// Deletes the disks in `groups` whose [`TAG_DRILL`] value `pick` selects. Disks without the
/// tag are someone else's: never touched.
async fn sweep(
    arm: &dyn Arm,
    groups: &[DrillGroup],
    pick: impl Fn(&str) -> bool,
    report: &mut RunReport,
) {
    for g in groups {
        let scope = VmScope::ResourceGroup {
            subscription: g.subscription.clone(),
            resource_group: g.name.clone(),
        };
        let disks = match arm.list_disks(&scope).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(group = %g.name, subscription = %g.subscription, error = %e, "could not list the drill group for leftover drill disks");
                report
                    .sweep_failures
                    .push(format!("listing {}/{}: {e}", g.subscription, g.name));
                continue;
            }
        };
        for d in disks {
            let tagged = d
                .tags
                .as_ref()
                .and_then(|t| t.get(TAG_DRILL))
                .is_some_and(|t| pick(t));
            let Some(id) = d.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
                continue;
            };
            // Only what lies in the drill group (a listing is scoped, but an id is checked
            // before a delete anyway).
            if !tagged || !scope.contains(&id) {
                continue;
            }
            match arm.delete_disk(&id).await {
                Ok(()) => {
                    tracing::info!(disk = %id, "deleted a disk an earlier drill left behind");
                    report.swept.push(id.to_string());
                }
                Err(e) => report.sweep_failures.push(format!("deleting {id}: {e}")),
            }
        }
    }
}

/// Logs one drill's event: Information when passed, Error when failed (an operator acts on it,
/// docs/operations.md).
pub fn emit(r: &DrillResult, tick: OffsetDateTime) {
    let tick = crate::schedule::rfc3339(tick);
    let role = if r.copy { "copy" } else { "local" };
    let point = r.point.as_deref().unwrap_or_default();
    let reason = r.reason.as_deref().unwrap_or_default();
    let seconds = r.seconds_to_restore.unwrap_or(-1.0);
    let disks = r.disks.len() as u64;
    if r.passed {
        tracing::info!(target: "vmrp::drill", tick = %tick, outcome = "passed", vm = %r.vm, region = %r.region, role, point = %point, seconds_to_restore = seconds, disks, cleaned = r.cleaned, reason = %reason, "drill passed {} {}", r.vm, r.region);
    } else {
        tracing::error!(target: "vmrp::drill", tick = %tick, outcome = "failed", vm = %r.vm, region = %r.region, role, point = %point, seconds_to_restore = seconds, disks, cleaned = r.cleaned, reason = %reason, "drill failed {} {}: {reason}", r.vm, r.region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vms(n: usize) -> Vec<ResourceId> {
        (0..n)
            .map(|i| {
                ResourceId::parse(&format!(
                    "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm{i:02}"
                ))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn drill_disk_names_differ_per_vm_and_region_and_stay_within_80_characters() {
        let v = vms(2);
        let id = "/subscriptions/s/resourceGroups/rg-drill/providers/Microsoft.Compute/disks/osdisk-rp-rp-1";
        let a = salted(id, &drill_salt(&v[0], "westeurope"));
        let b = salted(id, &drill_salt(&v[1], "westeurope"));
        let c = salted(id, &drill_salt(&v[0], "swedencentral"));
        assert!(a != b && a != c && b != c, "{a} {b} {c}");
        assert_eq!(
            a,
            salted(id, &drill_salt(&v[0], "westeurope")),
            "deterministic"
        );
        assert!(a.starts_with("/subscriptions/s/resourceGroups/rg-drill/providers/Microsoft.Compute/disks/osdisk-rp-rp-1-"));
        let long = format!(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/{}",
            "x".repeat(80)
        );
        let name = salted(&long, "0123abcd")
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(name.len(), restore::MAX_DISK_NAME);
        assert!(name.ends_with("-0123abcd"));
    }

    #[test]
    fn the_rotation_covers_every_vm_within_the_stated_runs() {
        for (n, k) in [(10, 3), (7, 7), (5, 9), (1, 1), (100, 8)] {
            let fleet = vms(n);
            let period = runs_to_cover(n, k);
            let mut seen = std::collections::BTreeSet::new();
            for run in 0..period {
                let batch = rotation(&fleet, k, run);
                assert_eq!(batch.len(), k.min(n));
                seen.extend(batch);
            }
            assert_eq!(seen.len(), n, "{n} VMs, {k} per run, {period} runs");
        }
        assert!(rotation(&[], 3, 0).is_empty());
        assert!(rotation(&vms(3), 0, 0).is_empty());
        assert_eq!(runs_to_cover(0, 3), 0);
        // Run numbers far in the future stay in range.
        assert_eq!(rotation(&vms(10), 3, u64::MAX).len(), 3);
    }

    #[test]
    fn run_numbers_are_consecutive_and_replays_repeat_them() {
        use time::macros::datetime;
        let daily = Schedule::parse("0 30 2 * * *").unwrap();
        let t = datetime!(2026-12-06 02:30 UTC);
        let n = run_number(&daily, t);
        assert_eq!(run_number(&daily, t), n, "a replay picks the same run");
        assert_eq!(run_number(&daily, t + time::Duration::days(1)), n + 1);
        // Irregular (Mon, Thu): consecutive occurrences still count one by one.
        let twice = Schedule::parse("0 0 1 * * 1,4").unwrap();
        let mon = datetime!(2026-11-30 01:00 UTC);
        let thu = datetime!(2026-12-03 01:00 UTC);
        let next_mon = datetime!(2026-12-07 01:00 UTC);
        let a = run_number(&twice, mon);
        assert_eq!(run_number(&twice, thu), a + 1);
        assert_eq!(run_number(&twice, next_mon), a + 2);
    }

    #[test]
    fn a_run_plans_the_rotating_set_in_every_configured_region() {
        let drills: Drills = serde_json::from_str(
            r#"{"resourceGroup":"dr","vmsPerRun":2,"regions":["local","swedencentral"]}"#,
        )
        .unwrap();
        let fleet: Vec<(ResourceId, String)> = vms(3)
            .into_iter()
            .map(|id| (id, "westeurope".into()))
            .collect();
        let runs: Vec<_> = (0..2).map(|n| plan_run(&drills, &fleet, n)).collect();
        assert_eq!(runs[0].len(), 4, "two VMs, two regions");
        assert_eq!(runs[0][0].1, "westeurope");
        assert!(!runs[0][0].2);
        assert_eq!(runs[0][1].1, "swedencentral");
        assert!(runs[0][1].2);
        let mut seen: std::collections::BTreeSet<_> =
            runs.iter().flatten().map(|(vm, _, _)| vm.clone()).collect();
        assert_eq!(seen.len(), 3, "two runs of two cover three VMs");
        seen.clear();
        assert!(plan_run(&drills, &[], 0).is_empty());
    }
}
