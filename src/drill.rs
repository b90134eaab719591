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
//! ("timed out"), and its disks are still deleted.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use serde::Serialize;

use crate::azure::client::ArmClient;
use crate::azure::ResourceId;
use crate::commands::restore::{execute, points_in_region, Outcome};
use crate::policy::drills::{DrillGroup, Drills};
use crate::policy::regions::canonical_region;
use crate::policy::Policy;
use crate::restore::{self, Mode, Options, PointFacts, Selector};
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

/// One drill's result (the `drill` event's payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    pub vm: String,
    pub region: String,
    /// A copy region's point (`true`) or the VM's own (`false`).
    pub copy: bool,
    pub point: Option<String>,
    pub passed: bool,
    pub reason: Option<String>,
    /// Time to restore every disk (absent when the restore did not finish).
    pub seconds_to_restore: Option<f64>,
    /// The disks it created; all deleted again when `cleaned`.
    pub disks: Vec<String>,
    pub cleaned: bool,
}

/// Drills `vm` in `region`: restores its newest settled point there as disks into
/// `drill_group` (same subscription), then deletes them. Never fails: the outcome says why.
pub async fn drill_vm(
    client: &ArmClient,
    vm: &ResourceId,
    region: &str,
    copy: bool,
    drill_group: &str,
) -> DrillResult {
    let group = DrillGroup {
        subscription: vm.subscription().to_string(),
        name: drill_group.to_string(),
    };
    drill_vm_into(client, vm, region, copy, &group, Bounds::default().restore).await
}

/// [`drill_vm`] into a drill group of any subscription, the restore phase bounded by
/// `restore_within`: past it the drill fails "timed out" (what it made is still deleted).
pub async fn drill_vm_into(
    client: &ArmClient,
    vm: &ResourceId,
    region: &str,
    copy: bool,
    group: &DrillGroup,
    restore_within: Duration,
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
        let points = points_in_region(client, vm, &region).await?;
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
        let calls = restore::plan(&restore::disks_of(point), &options)?;
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
    result.point = Some(point.clone());
    let mut outcome = Outcome {
        vm: vm.to_string(),
        point,
        region,
        copy,
        planned: false,
        disks: Vec::new(),
        new_vm: None,
        calls: calls.clone(),
    };
    let started = Instant::now();
    let mut swapped = false;
    let mut failure = None;
    // How many calls were sent: after a timeout, the one in flight may still create its disk.
    let mut sent = 0;
    let restored = tokio::time::timeout(restore_within, async {
        for call in &calls {
            sent += 1;
            execute(client, call, &mut outcome, &mut swapped).await?;
        }
        Ok::<_, String>(())
    })
    .await;
    let timed_out = restored.is_err();
    match restored {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failure = Some(e),
        Err(_) => {
            failure = Some(format!(
                "timed out: the restore took longer than {} s (the bound of one drill)",
                restore_within.as_secs()
            ))
        }
    }
    result.disks = outcome.disks.iter().map(|d| d.id.clone()).collect();
    if timed_out {
        // The call cut off by the bound may have created its disk after all (ARM finishes a PUT
        // whose caller went away): delete it too (a DELETE of a disk that does not exist is 404,
        // which counts as deleted). Only calls that were sent: a later disk name is untouched.
        for call in calls.iter().take(sent) {
            if call.kind == restore::CallKind::CreateDisk && !result.disks.contains(&call.id) {
                result.disks.push(call.id.clone());
            }
        }
    }
    if failure.is_none() {
        result.seconds_to_restore = Some(started.elapsed().as_secs_f64());
    }
    // Clean up whatever was made, even after a failure; a disk left behind fails the drill.
    for id in &result.disks {
        let deleted = match ResourceId::parse(id) {
            Ok(rid) => client.delete_disk(&rid).await.map_err(|e| e.to_string()),
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

/// How long one drill may take: the restore phase (disk PUTs until each disk exists); cleanup
/// always runs after it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub restore: Duration,
}

impl Default for Bounds {
    /// Two minutes per VM and region: a run of `vmsPerRun` (at most 50) VMs in two regions stays
    /// far below the Functions Consumption/Flex default timeout only with few VMs per run, which
    /// is why docs/policy.md keeps the default at 1.
    fn default() -> Self {
        Self {
            restore: Duration::from_secs(120),
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

/// One drill run at `tick`: plans it, drills each VM and region in turn (one at a time: a drill
/// is a probe, not a load), emits one event per drill, and returns the results.
pub async fn run(
    client: &ArmClient,
    drills: &Drills,
    fleet: &[(ResourceId, String)],
    tick: OffsetDateTime,
    bounds: Bounds,
) -> Result<Vec<DrillResult>, String> {
    let schedule = Schedule::parse(&drills.schedule).map_err(|e| e.to_string())?;
    let n = run_number(&schedule, tick);
    let mut out = Vec::new();
    for (vm, region, copy) in plan_run(drills, fleet, n) {
        let group = drills.group_for(&vm);
        let result = drill_vm_into(client, &vm, &region, copy, &group, bounds.restore).await;
        emit(&result, tick);
        out.push(result);
    }
    Ok(out)
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
