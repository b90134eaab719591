//! A read-only picture of restore point coverage, gathered through the `Arm` trait: every VM,
//! its collections (found by `source.id`, so points other tools made show too), their points,
//! and the replication progress of copies still in flight. `vmrp status` and `vmrp plan` use it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::OffsetDateTime;

use crate::azure::models::{
    ProvisioningState, RestorePoint, RestorePointCollection, VirtualMachine,
};
use crate::azure::{Arm, ArmError, ResourceId, VmScope};
use crate::policy::regions::canonical_region;

/// Whether a collection holds a VM's own points or copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CollectionRole {
    Local,
    Copy,
}

/// The state of one restore point, as coverage sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum PointStatus {
    /// Local: `Succeeded`. Copy: `Succeeded` and every disk replicated.
    Settled,
    /// Still being created, or a copy still replicating (lowest disk percent when known).
    InProgress {
        percent: Option<i32>,
    },
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointSummary {
    pub id: ResourceId,
    pub name: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    pub status: PointStatus,
    /// For copies: the source point.
    pub source: Option<ResourceId>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionView {
    pub id: ResourceId,
    pub region: String,
    pub role: CollectionRole,
    /// Oldest first.
    pub points: Vec<PointSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmCoverage {
    pub id: ResourceId,
    pub location: String,
    #[serde(skip)]
    pub vm: VirtualMachine,
    pub collections: Vec<CollectionView>,
    /// Azure Backup's collections of this VM ([`ResourceId::is_azure_backup`]): read, never
    /// judged by retention nor written to; their points count against the VM's 500.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_backup: Vec<CollectionView>,
}

impl VmCoverage {
    /// The newest settled point per region (the VM's own region and each copy region).
    pub fn newest_settled_by_region(&self) -> BTreeMap<String, &PointSummary> {
        let mut out: BTreeMap<String, &PointSummary> = BTreeMap::new();
        for c in &self.collections {
            for p in c.points.iter().filter(|p| p.status == PointStatus::Settled) {
                let newer = out
                    .get(&c.region)
                    .is_none_or(|best| p.created > best.created);
                if newer {
                    out.insert(c.region.clone(), p);
                }
            }
        }
        out
    }

    /// Every point of every collection with its collection.
    pub fn points(&self) -> impl Iterator<Item = (&CollectionView, &PointSummary)> {
        self.collections
            .iter()
            .flat_map(|c| c.points.iter().map(move |p| (c, p)))
    }
}

/// Coverage for every VM of the given subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub vms: Vec<VmCoverage>,
}

/// Reads VMs, collections and points of `subscriptions`. Copies in flight cost one extra GET
/// each (with instanceView) to learn their replication percent.
pub async fn gather(arm: &dyn Arm, subscriptions: &[String]) -> Result<Inventory, ArmError> {
    let mut vms = Vec::new();
    let mut collections = Vec::new();
    for sub in subscriptions {
        vms.extend(arm.list_vms(&VmScope::Subscription(sub.clone())).await?);
        collections.extend(arm.list_collections(sub).await?);
    }
    let vm_ids: HashMap<ResourceId, usize> = vms
        .iter()
        .enumerate()
        .filter_map(|(i, vm)| vm.resource_id().map(|id| (id, i)))
        .collect();

    // Local collections: source.id is a VM. Copy collections: source.id is a local collection.
    let mut owner_of_collection: HashMap<ResourceId, usize> = HashMap::new();
    let mut locals = Vec::new();
    let mut copies = Vec::new();
    let mut backups = Vec::new();
    for c in collections {
        let (Some(id), Some(source)) = (
            c.id.as_deref().and_then(|i| ResourceId::parse(i).ok()),
            c.source_id(),
        ) else {
            continue;
        };
        let Ok(source) = ResourceId::parse(source) else {
            continue;
        };
        if let (true, Some(&vm)) = (id.is_azure_backup(), vm_ids.get(&source)) {
            // Azure Backup's instant-restore collection: not one of vmrp's local collections.
            backups.push((id, vm, c));
        } else if let Some(&vm) = vm_ids.get(&source) {
            owner_of_collection.insert(id.clone(), vm);
            locals.push((id, vm, c));
        } else if source.is_type("Microsoft.Compute/restorePointCollections") {
            copies.push((id, source, c));
        }
    }
    let mut by_vm: Vec<Vec<CollectionView>> = vec![Vec::new(); vms.len()];
    let mut backup_by_vm: Vec<Vec<CollectionView>> = vec![Vec::new(); vms.len()];
    for (id, vm, c) in backups {
        backup_by_vm[vm].push(read_collection(arm, &id, &c, CollectionRole::Local).await?);
    }
    for (id, vm, c) in locals {
        by_vm[vm].push(read_collection(arm, &id, &c, CollectionRole::Local).await?);
    }
    for (id, source, c) in copies {
        let Some(&vm) = owner_of_collection.get(&source) else {
            continue;
        };
        by_vm[vm].push(read_collection(arm, &id, &c, CollectionRole::Copy).await?);
    }
    let mut out: Vec<VmCoverage> = vms
        .into_iter()
        .zip(by_vm.into_iter().zip(backup_by_vm))
        .filter_map(|(vm, (mut collections, azure_backup))| {
            let id = vm.resource_id()?;
            collections.sort_by(|a, b| {
                (a.role != CollectionRole::Local, &a.region)
                    .cmp(&(b.role != CollectionRole::Local, &b.region))
            });
            Some(VmCoverage {
                id,
                location: canonical_region(vm.location.as_deref().unwrap_or_default()),
                vm,
                collections,
                azure_backup,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Inventory { vms: out })
}

async fn read_collection(
    arm: &dyn Arm,
    id: &ResourceId,
    listed: &RestorePointCollection,
    role: CollectionRole,
) -> Result<CollectionView, ArmError> {
    let full = arm
        .get_collection(id, true)
        .await?
        .unwrap_or_else(|| listed.clone());
    let mut points = Vec::new();
    for p in full.restore_points() {
        let Some(pid) = p.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
            continue;
        };
        let status = match (role, p.provisioning_state()) {
            (_, ProvisioningState::Failed | ProvisioningState::Canceled) => PointStatus::Failed,
            (_, ProvisioningState::InProgress(_)) => PointStatus::InProgress { percent: None },
            (CollectionRole::Local, ProvisioningState::Succeeded) => PointStatus::Settled,
            (CollectionRole::Copy, ProvisioningState::Succeeded) => {
                // `Succeeded` on a copy only means started: settled is every disk at 100 %.
                let detailed: Option<RestorePoint> = if p.replication_percents().is_empty() {
                    arm.get_restore_point(&pid, true).await?
                } else {
                    Some(p.clone())
                };
                copy_status(detailed.as_ref().unwrap_or(p))
            }
        };
        points.push(PointSummary {
            name: p
                .name
                .clone()
                .unwrap_or_else(|| pid.name().unwrap_or_default().to_string()),
            created: p.time_created(),
            source: p
                .source_restore_point()
                .and_then(|s| ResourceId::parse(s).ok()),
            id: pid,
            status,
        });
    }
    points.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(CollectionView {
        id: id.clone(),
        region: canonical_region(
            full.location
                .as_deref()
                .or(listed.location.as_deref())
                .unwrap_or_default(),
        ),
        role,
        points,
    })
}

/// Settled when every disk restore point reports 100 %; otherwise in progress at the lowest percent.
pub fn copy_status(point: &RestorePoint) -> PointStatus {
    let percents = point.replication_percents();
    match percents.iter().min() {
        Some(&min) if min >= 100 => PointStatus::Settled,
        Some(&min) => PointStatus::InProgress { percent: Some(min) },
        None => PointStatus::InProgress { percent: None },
    }
}

/// The tick of a vmrp-named point, else when it was created.
fn tick_of(id: &ResourceId, created: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    id.name()
        .and_then(crate::names::parse_restore_point_name)
        .map(|(t, _)| t)
        .or(created)
}

/// Why each local point must survive retention for now (docs/lifecycle.md, retention), by the same rules as
/// `PollRestorePoint`'s pruning, so the dry run shows what the poller will do: a copy of it is
/// still replicating; or it settled, has no copy yet in some region, is newer than every point
/// copied there (an older one was copied and since pruned, or will never be copied:
/// `retention::awaits_copy`), and is younger than the copy deadline (deleting it would make
/// that copy impossible). `copy_regions` are the VM's effective ones (`Rule::copies_from`).
pub fn copy_holds(
    vm: &VmCoverage,
    copy_regions: &[String],
    now: OffsetDateTime,
    copy_deadline: time::Duration,
) -> std::collections::HashMap<ResourceId, String> {
    let mut holds = std::collections::HashMap::new();
    for region in copy_regions {
        let region = canonical_region(region);
        let copies: Vec<&PointSummary> = vm
            .collections
            .iter()
            .filter(|c| c.role == CollectionRole::Copy && c.region == region)
            .flat_map(|c| c.points.iter())
            .collect();
        for copy in &copies {
            if let (PointStatus::InProgress { percent }, Some(source)) =
                (&copy.status, &copy.source)
            {
                let pct = percent.map(|p| format!(" ({p}%)")).unwrap_or_default();
                holds
                    .entry(source.clone())
                    .or_insert_with(|| format!("copy to {region} still replicating{pct}"));
            }
        }
        let locals = vm
            .collections
            .iter()
            .filter(|c| c.role == CollectionRole::Local)
            .flat_map(|c| c.points.iter());
        let newest_copied = copies
            .iter()
            .filter_map(|c| match &c.source {
                Some(s) => tick_of(s, None),
                None => tick_of(&c.id, None),
            })
            .max();
        for p in locals.filter(|p| p.status == PointStatus::Settled) {
            let young = p.created.is_some_and(|c| now - c <= copy_deadline);
            let copied = copies.iter().any(|c| c.source.as_ref() == Some(&p.id));
            let waits = tick_of(&p.id, p.created)
                .is_some_and(|t| crate::retention::awaits_copy(t, copied, newest_copied));
            if young && waits {
                holds
                    .entry(p.id.clone())
                    .or_insert_with(|| format!("copy to {region} not started yet"));
            }
        }
    }
    holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::{
        DiskRestorePointInstanceView, DiskRestorePointReplicationStatus, RestorePointInstanceView,
        RestorePointProperties,
    };

    fn copy_point(percents: &[i32]) -> RestorePoint {
        RestorePoint {
            properties: Some(RestorePointProperties {
                provisioning_state: Some("Succeeded".into()),
                instance_view: Some(RestorePointInstanceView {
                    disk_restore_points: Some(
                        percents
                            .iter()
                            .map(|p| DiskRestorePointInstanceView {
                                replication_status: Some(DiskRestorePointReplicationStatus {
                                    completion_percent: Some(*p),
                                    status: None,
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    statuses: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn copy_settles_only_when_every_disk_is_replicated() {
        assert_eq!(copy_status(&copy_point(&[100, 100])), PointStatus::Settled);
        assert_eq!(
            copy_status(&copy_point(&[100, 40])),
            PointStatus::InProgress { percent: Some(40) }
        );
        assert_eq!(
            copy_status(&copy_point(&[])),
            PointStatus::InProgress { percent: None }
        );
    }
}
