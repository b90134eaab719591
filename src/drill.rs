//! Restore drills: prove points restorable by restoring them. A drill restores the newest settled
//! point of a VM in one region (its own, or a copy region) as disks into a drill resource group,
//! records how long that took, deletes what it created, and reports passed or failed with the
//! reason. It never touches the VM or its collections: disks mode only, into the drill group.
//!
//! The rotation is pure ([`rotation`], [`runs_to_cover`]): run `n` drills `per_run` VMs starting
//! at `n * per_run` in the sorted fleet, wrapping, so every VM is drilled within
//! `ceil(fleet / per_run)` runs. The scheduled function and the policy section that would drive
//! this (issue: `drills`) are not built yet; `drill_vm` is what each run would call per VM and
//! region.

use std::time::Instant;

use serde::Serialize;

use crate::azure::client::ArmClient;
use crate::azure::ResourceId;
use crate::commands::restore::{execute, points_in_region, Outcome};
use crate::policy::regions::canonical_region;
use crate::restore::{self, Mode, Options, PointFacts, Selector};

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

/// How many runs cover every VM at least once: the period the policy states.
pub fn runs_to_cover(vms: usize, per_run: usize) -> u64 {
    if vms == 0 {
        return 0;
    }
    vms.div_ceil(per_run.max(1)) as u64
}

/// One drill's result (the `drill` event's payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    pub vm: String,
    pub region: String,
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
    let region = canonical_region(region);
    let mut result = DrillResult {
        vm: vm.to_string(),
        region: region.clone(),
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
            subscription: vm.subscription().to_string(),
            resource_group: drill_group.to_string(),
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
    for call in &calls {
        if let Err(e) = execute(client, call, &mut outcome, &mut swapped).await {
            failure = Some(e);
            break;
        }
    }
    result.disks = outcome.disks.iter().map(|d| d.id.clone()).collect();
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
}
