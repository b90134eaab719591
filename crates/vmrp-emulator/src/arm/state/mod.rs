//! The emulator's resources (subscriptions, resource groups, VMs, disks, restore point
//! collections, restore points) and their lifecycle. Nothing runs in the background: every
//! state (Creating → Succeeded/Failed, copy progress, deletions) is computed from the virtual
//! clock when a request or accessor looks at it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use super::fleet::{det_uuid, unit};
use super::lro::Operation;
use crate::azure::id::ResourceId;
use crate::azure::models::{
    ConsistencyMode, DiskRestorePointInstanceView, DiskRestorePointReplicationStatus, IdRef,
    InstanceViewStatus, RestorePoint, RestorePointCollection, RestorePointCollectionProperties,
    RestorePointCollectionSource, RestorePointInstanceView, RestorePointProperties, Tags,
    VirtualMachine,
};

/// Virtual durations of the lifecycle, in seconds; ranges are `[min, max]` with per-resource
/// jitter derived from the fleet seed and the resource id (same seed → same durations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Timings {
    /// A local restore point stays `Creating` this long.
    pub local_create_secs: (f64, f64),
    /// A cross-region copy stays `Creating` this long before `Succeeded` (= copy started).
    pub copy_start_secs: (f64, f64),
    /// Total time for a disk restore point's replication to reach 100 %.
    pub copy_duration_secs: (f64, f64),
    /// Copy progress is refreshed in steps of this length (Azure: about 10 minutes).
    pub copy_progress_step_secs: f64,
    /// Deletes (restore points and collections) take this long.
    pub delete_secs: (f64, f64),
    /// `Retry-After` sent with long-running operation answers.
    pub lro_retry_after_secs: u64,
    /// The background data copy of a Premium SSD v2 / Ultra disk's snapshot (a local disk
    /// restore point of such a disk): a fixed part picked in this range ...
    pub background_copy_secs: (f64, f64),
    /// ... plus this much per GiB of the disk, so larger disks take longer (their data is
    /// copied to standard storage; learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots).
    pub background_copy_secs_per_gib: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            local_create_secs: (30.0, 90.0),
            copy_start_secs: (60.0, 180.0),
            copy_duration_secs: (3600.0, 7200.0),
            copy_progress_step_secs: 600.0,
            delete_secs: (10.0, 30.0),
            lro_retry_after_secs: 10,
            background_copy_secs: (300.0, 900.0),
            background_copy_secs_per_gib: 2.0,
        }
    }
}

/// A duration in `range` picked by `(seed, key)`.
pub fn jitter(seed: u64, key: &str, range: (f64, f64)) -> Duration {
    let (lo, hi) = if range.0 <= range.1 {
        range
    } else {
        (range.1, range.0)
    };
    let secs = lo.max(0.0) + (hi - lo).max(0.0) * unit(seed, key);
    // Configured values may be NaN or absurd: keep within [0, ten years].
    let secs = if secs.is_finite() {
        secs.clamp(0.0, 10.0 * 365.0 * 86_400.0)
    } else {
        0.0
    };
    Duration::seconds_f64(secs)
}

/// ARM location names compare without case and spaces ("West US" = "westus").
pub fn same_location(a: &str, b: &str) -> bool {
    normalize_location(a) == normalize_location(b)
}

pub fn normalize_location(a: &str) -> String {
    a.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[derive(Debug, Clone)]
pub struct ResourceGroup {
    pub name: String,
    pub location: String,
}

/// A VM as ARM returns it (the full document); `userData` is kept apart and only shown with
/// `$expand=userData`.
#[derive(Debug, Clone)]
pub struct VmRecord {
    pub doc: Value,
    pub user_data: Option<String>,
}

impl VmRecord {
    pub fn typed(&self) -> VirtualMachine {
        serde_json::from_value(self.doc.clone()).unwrap_or_default()
    }
    pub fn location(&self) -> String {
        self.doc["location"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn os_type(&self) -> Option<String> {
        self.doc["properties"]["storageProfile"]["osDisk"]["osType"]
            .as_str()
            .map(str::to_string)
    }
    pub fn vm_unique_id(&self) -> String {
        self.doc["properties"]["vmId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A pending deletion: the resource shows `Deleting` until `done_at`, then disappears.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub done_at: OffsetDateTime,
    pub operation: String,
}

#[derive(Debug, Clone)]
pub struct CollectionRecord {
    pub id: ResourceId,
    pub location: String,
    pub tags: Option<Tags>,
    /// `properties.source.id` as sent.
    pub source_id: String,
    pub source_location: String,
    /// True when the source is another collection (a cross-region copy target).
    pub is_copy_target: bool,
    pub instant_access: Option<bool>,
    pub guid: String,
    pub deleting: Option<Deletion>,
}

impl CollectionRecord {
    pub fn render(&self, points: Option<Vec<RestorePoint>>) -> RestorePointCollection {
        RestorePointCollection {
            id: Some(self.id.to_string()),
            name: self.id.name().map(str::to_string),
            kind: Some("Microsoft.Compute/restorePointCollections".into()),
            location: Some(self.location.clone()),
            tags: self.tags.clone(),
            properties: Some(RestorePointCollectionProperties {
                source: Some(RestorePointCollectionSource {
                    id: Some(self.source_id.clone()),
                    location: Some(self.source_location.clone()),
                }),
                provisioning_state: Some(
                    if self.deleting.is_some() {
                        "Deleting"
                    } else {
                        "Succeeded"
                    }
                    .into(),
                ),
                restore_point_collection_id: Some(self.guid.clone()),
                restore_points: points,
                instant_access: self.instant_access,
            }),
        }
    }
}

/// How a restore point's creation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed { code: String, message: String },
}

/// One disk restore point of a point.
#[derive(Debug, Clone, Default)]
pub struct DiskPoint {
    pub id: String,
    /// For copies: when this disk's replication reaches 100 %.
    pub replicated_at: Option<OffsetDateTime>,
    /// Local points of Premium SSD v2 / Ultra disks: when the snapshot's background data copy
    /// completes (before it, `snapshotAccessState` is `Pending` or `InstantAccess`). `None`
    /// for other disks, whose snapshots are usable at once.
    pub background_done_at: Option<OffsetDateTime>,
    /// Local points of Premium SSD v2 / Ultra disks in an `instantAccess` collection: when
    /// instant access lapses (`instantAccessDurationMinutes` after creation, default 300).
    pub instant_access_until: Option<OffsetDateTime>,
    /// The managed disk this disk restore point was taken from (local points), for the
    /// per-disk limit of snapshots in progress.
    pub source_disk: Option<String>,
}

/// `snapshotAccessState` of a disk whose snapshot needs a background data copy (Premium SSD v2,
/// Ultra), from whether instant access is still on and whether the copy completed
/// (learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots, "Check snapshot
/// access state").
pub fn fast_disk_access_state(instant_access: bool, copied: bool) -> &'static str {
    match (instant_access, copied) {
        (true, true) => "AvailableWithInstantAccess",
        (true, false) => "InstantAccess",
        (false, true) => "Available",
        (false, false) => "Pending",
    }
}

/// Whether a cross-region copy may start from a disk restore point in `state`: only once its
/// background data copy completed (`InstantAccess` restores but does not copy).
pub fn copyable_access_state(state: &str) -> bool {
    matches!(state, "Available" | "AvailableWithInstantAccess")
}

#[derive(Debug, Clone)]
pub struct PointRecord {
    pub id: ResourceId,
    pub collection: ResourceId,
    /// The VM the point (or its source, for a copy) was taken from.
    pub vm: ResourceId,
    pub mode: ConsistencyMode,
    pub exclude_disks: Vec<String>,
    pub instant_access_minutes: Option<i32>,
    pub source_point: Option<ResourceId>,
    /// The creation time of the source point (copies), for the in-order rule.
    pub source_created: Option<OffsetDateTime>,
    pub created: OffsetDateTime,
    /// When `Creating` ends.
    pub ready_at: OffsetDateTime,
    pub outcome: Outcome,
    pub disks: Vec<DiskPoint>,
    pub source_metadata: Value,
    pub instant_access_disks: bool,
    pub operation: String,
    pub deleting: Option<Deletion>,
    /// Copies: when the platform terminates a copy still replicating (two weeks after it
    /// started, docs/emulator-arm.md); `None`: never.
    pub terminate_at: Option<OffsetDateTime>,
    /// Copies: the target encryption set each disk was asked for, by disk (`os`, `data:{i}` by position).
    pub encryption: BTreeMap<String, String>,
}

/// A point's state at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Creating,
    Succeeded,
    Failed,
    Deleting,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

fn status(code: &str, level: &str, display: &str, message: Option<String>) -> InstanceViewStatus {
    InstanceViewStatus {
        code: Some(code.into()),
        level: Some(level.into()),
        display_status: Some(display.into()),
        message,
        time: None,
    }
}

impl PointRecord {
    pub fn is_copy(&self) -> bool {
        self.source_point.is_some()
    }

    /// The creation phase, ignoring deletion.
    pub fn creation_phase(&self, now: OffsetDateTime) -> Phase {
        if now < self.ready_at {
            Phase::Creating
        } else {
            match self.outcome {
                Outcome::Succeeded => Phase::Succeeded,
                Outcome::Failed { .. } => Phase::Failed,
            }
        }
    }

    pub fn phase(&self, now: OffsetDateTime) -> Phase {
        if self.deleting.is_some() {
            Phase::Deleting
        } else {
            self.creation_phase(now)
        }
    }

    /// Replication percent of one disk of a copy, in progress steps.
    pub fn disk_percent(&self, disk: &DiskPoint, now: OffsetDateTime, step_secs: f64) -> i32 {
        let Some(done) = disk.replicated_at else {
            return 100;
        };
        if now >= done {
            return 100;
        }
        let total = (done - self.created).as_seconds_f64().max(1.0);
        let elapsed = (now - self.created).as_seconds_f64().max(0.0);
        let step = step_secs.max(1.0);
        let stepped = (elapsed / step).floor() * step;
        ((stepped / total) * 100.0).floor().clamp(0.0, 99.0) as i32
    }

    /// `snapshotAccessState` of one disk restore point of a local point (any phase).
    pub fn local_access_state(&self, disk: &DiskPoint, now: OffsetDateTime) -> &'static str {
        match self.creation_phase(now) {
            Phase::Creating => return "Pending",
            Phase::Failed | Phase::Deleting => return "Unknown",
            Phase::Succeeded => {}
        }
        let Some(done) = disk.background_done_at else {
            // Snapshots of other disk types are usable at once.
            return if self.instant_access_disks {
                "AvailableWithInstantAccess"
            } else {
                "Available"
            };
        };
        let instant = disk.instant_access_until.is_some_and(|t| now < t);
        fast_disk_access_state(instant, now >= done)
    }

    /// The background data copy's percent of a local disk restore point (100 for disks
    /// without one), in the same steps as copy progress.
    pub fn background_percent(&self, disk: &DiskPoint, now: OffsetDateTime, step_secs: f64) -> i32 {
        let Some(done) = disk.background_done_at else {
            return 100;
        };
        if now >= done {
            return 100;
        }
        let total = (done - self.created).as_seconds_f64().max(1.0);
        let elapsed = (now - self.created).as_seconds_f64().max(0.0);
        let step = step_secs.max(1.0);
        let stepped = (elapsed / step).floor() * step;
        ((stepped / total) * 100.0).floor().clamp(0.0, 99.0) as i32
    }

    /// True while a disk of this local point still copies its snapshot in the background
    /// (a failed or deleted point holds no snapshot in progress).
    pub fn background_in_progress(&self, disk: &DiskPoint, now: OffsetDateTime) -> bool {
        !self.is_copy()
            && self.deleting.is_none()
            && !matches!(self.outcome, Outcome::Failed { .. })
            && disk.background_done_at.is_some_and(|t| now < t)
    }

    /// The first disk restore point that a cross-region copy cannot start from yet, with its
    /// `snapshotAccessState` (`None`: every disk is copyable).
    pub fn first_uncopyable_disk(&self, now: OffsetDateTime) -> Option<(&str, &'static str)> {
        self.disks.iter().find_map(|d| {
            let state = self.local_access_state(d, now);
            (!copyable_access_state(state)).then_some((d.id.as_str(), state))
        })
    }

    /// True once a copy that had not finished replicating was terminated by the platform
    /// ("If the copy time exceeds two weeks, the copy operation is terminated automatically").
    pub fn terminated(&self, now: OffsetDateTime) -> bool {
        self.terminate_at.is_some_and(|t| {
            now >= t
                && self
                    .disks
                    .iter()
                    .any(|d| d.replicated_at.is_some_and(|done| done > t))
        })
    }

    /// For copies: the lowest disk percent (100 when every disk finished); `None` if failed
    /// (a failed copy shows no intermediate percent).
    pub fn copy_percent(&self, now: OffsetDateTime, step_secs: f64) -> Option<i32> {
        if matches!(self.outcome, Outcome::Failed { .. }) && now >= self.ready_at {
            return None;
        }
        if self.terminated(now) {
            return None;
        }
        Some(
            self.disks
                .iter()
                .map(|d| self.disk_percent(d, now, step_secs))
                .min()
                .unwrap_or(100),
        )
    }

    /// True while a copy is still replicating (neither finished nor failed).
    pub fn copy_in_flight(&self, now: OffsetDateTime, step_secs: f64) -> bool {
        self.is_copy() && self.copy_percent(now, step_secs).is_some_and(|p| p < 100)
    }

    pub fn render(&self, now: OffsetDateTime, instance_view: bool, step_secs: f64) -> RestorePoint {
        let phase = self.phase(now);
        let iv = instance_view.then(|| self.instance_view(now, step_secs));
        RestorePoint {
            id: Some(self.id.to_string()),
            name: self.id.name().map(str::to_string),
            kind: Some("Microsoft.Compute/restorePointCollections/restorePoints".into()),
            properties: Some(RestorePointProperties {
                exclude_disks: (!self.exclude_disks.is_empty()).then(|| {
                    self.exclude_disks
                        .iter()
                        .map(|id| IdRef { id: id.clone() })
                        .collect()
                }),
                source_metadata: Some(self.source_metadata.clone()),
                provisioning_state: Some(phase.as_str().into()),
                consistency_mode: Some(self.mode.clone()),
                // A copy shows its source's creation time ("The target restore point only
                // shows the creation time when the source restore point was created",
                // virtual-machines-restore-points-copy, Limitations).
                time_created: Some(self.source_created.unwrap_or(self.created)),
                source_restore_point: self
                    .source_point
                    .as_ref()
                    .map(|s| IdRef { id: s.to_string() }),
                instant_access_duration_minutes: self.instant_access_minutes,
                instance_view: iv,
            }),
        }
    }

    fn instance_view(&self, now: OffsetDateTime, step_secs: f64) -> RestorePointInstanceView {
        let creation = self.creation_phase(now);
        let failed = match (&creation, &self.outcome) {
            (Phase::Failed, Outcome::Failed { code, message }) => Some((code, message)),
            _ => None,
        };
        let access_ready = if self.instant_access_disks {
            "AvailableWithInstantAccess"
        } else {
            "Available"
        };
        let mut disks = Vec::new();
        for d in &self.disks {
            let mut view = DiskRestorePointInstanceView {
                id: Some(d.id.clone()),
                replication_status: None,
                snapshot_access_state: None,
            };
            if self.is_copy() {
                // Failed or terminated: no detail and no partial percent (Limitations).
                let (st, pct) = if failed.is_some() || self.terminated(now) {
                    (
                        status("ReplicationState/failed", "Error", "Failed", None),
                        None,
                    )
                } else {
                    let pct = self.disk_percent(d, now, step_secs);
                    if pct >= 100 {
                        (
                            status("ReplicationState/succeeded", "Info", "Succeeded", None),
                            Some(100),
                        )
                    } else {
                        (
                            status("ReplicationState/inProgress", "Info", "In progress", None),
                            Some(pct),
                        )
                    }
                };
                view.snapshot_access_state = Some(
                    if pct == Some(100) {
                        access_ready
                    } else {
                        "Pending"
                    }
                    .into(),
                );
                view.replication_status = Some(DiskRestorePointReplicationStatus {
                    status: Some(st),
                    completion_percent: pct,
                });
            } else {
                match creation {
                    Phase::Succeeded => {
                        let pct = self.background_percent(d, now, step_secs);
                        view.snapshot_access_state = Some(
                            if d.background_done_at.is_some() {
                                self.local_access_state(d, now)
                            } else {
                                access_ready
                            }
                            .into(),
                        );
                        // The background data copy's progress, as `completionPercent` (the
                        // property Microsoft says to watch before copying such a snapshot).
                        view.replication_status = Some(DiskRestorePointReplicationStatus {
                            status: Some(if pct >= 100 {
                                status("ReplicationState/succeeded", "Info", "Succeeded", None)
                            } else {
                                status("ReplicationState/inProgress", "Info", "In progress", None)
                            }),
                            completion_percent: Some(pct),
                        });
                    }
                    Phase::Creating => view.snapshot_access_state = Some("Pending".into()),
                    _ => view.snapshot_access_state = Some("Unknown".into()),
                }
            }
            disks.push(view);
        }
        let statuses = match (&creation, failed) {
            (_, Some((code, message))) => vec![status(
                &format!("ProvisioningState/failed/{code}"),
                "Error",
                "Provisioning failed",
                Some(message.clone()),
            )],
            (Phase::Creating, None) => {
                vec![status(
                    "ProvisioningState/creating",
                    "Info",
                    "Creating",
                    None,
                )]
            }
            _ if self.is_copy() && self.terminated(now) => {
                vec![status("ReplicationState/failed", "Error", "Failed", None)]
            }
            _ => {
                let done =
                    !self.is_copy() || self.copy_percent(now, step_secs).is_some_and(|p| p >= 100);
                if done {
                    vec![status(
                        "ReplicationState/succeeded",
                        "Info",
                        "Succeeded",
                        None,
                    )]
                } else {
                    vec![status(
                        "ReplicationState/inProgress",
                        "Info",
                        "In progress",
                        None,
                    )]
                }
            }
        };
        RestorePointInstanceView {
            disk_restore_points: Some(disks),
            statuses: Some(statuses),
        }
    }
}

/// Everything the emulator knows, behind one lock.
#[derive(Debug, Default)]
pub struct Store {
    /// Subscription ids in the order they were added.
    pub subscriptions: Vec<String>,
    /// Keyed by (subscription, resource group) in lower case.
    pub resource_groups: BTreeMap<(String, String), ResourceGroup>,
    pub vms: BTreeMap<ResourceId, VmRecord>,
    pub disks: BTreeMap<ResourceId, Value>,
    /// Disk encryption sets (`Microsoft.Compute/diskEncryptionSets`) by id.
    pub encryption_sets: BTreeMap<ResourceId, Value>,
    pub collections: BTreeMap<ResourceId, CollectionRecord>,
    pub points: BTreeMap<ResourceId, PointRecord>,
    /// Keyed by lower-case operation id.
    pub operations: BTreeMap<String, Operation>,
    /// Accepted create PUTs per VM (for the hourly limit).
    pub create_log: HashMap<ResourceId, Vec<OffsetDateTime>>,
    /// Accepted copy PUTs per target collection (for the hourly limit).
    pub copy_log: HashMap<ResourceId, Vec<OffsetDateTime>>,
    pub op_seq: u64,
    /// When the earliest pending deletion completes.
    pub next_sweep: Option<OffsetDateTime>,
    /// Source points deleted while one of their copies was still replicating.
    pub sources_deleted_during_copy: u64,
    /// Power state of VMs that are not running (`deallocated`); absent = running.
    pub power: BTreeMap<ResourceId, String>,
    /// Network interfaces created through the API (a restored VM's).
    pub nics: BTreeMap<ResourceId, Value>,
}

impl Store {
    pub fn has_subscription(&self, sub: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(sub))
    }
    pub fn add_subscription(&mut self, sub: &str) {
        if !self.has_subscription(sub) {
            self.subscriptions.push(sub.to_string());
        }
    }
    pub fn resource_group(&self, sub: &str, rg: &str) -> Option<&ResourceGroup> {
        self.resource_groups
            .get(&(sub.to_ascii_lowercase(), rg.to_ascii_lowercase()))
    }
    pub fn add_resource_group(&mut self, sub: &str, rg: &str, location: &str) {
        self.add_subscription(sub);
        self.resource_groups
            .entry((sub.to_ascii_lowercase(), rg.to_ascii_lowercase()))
            .or_insert_with(|| ResourceGroup {
                name: rg.to_string(),
                location: location.to_string(),
            });
    }

    /// Notes that a deletion completes at `done_at` (so [`Store::sweep`] knows when to look).
    pub fn schedule_sweep(&mut self, done_at: OffsetDateTime) {
        self.next_sweep = Some(self.next_sweep.map_or(done_at, |t| t.min(done_at)));
    }

    /// Removes what finished deleting by `now` (a no-op until the earliest pending deletion).
    pub fn sweep(&mut self, now: OffsetDateTime) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let gone: Vec<ResourceId> = self
            .collections
            .iter()
            .filter(|(_, c)| c.deleting.as_ref().is_some_and(|d| d.done_at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.collections.remove(id);
        }
        let points: Vec<ResourceId> = self
            .points
            .iter()
            .filter(|(_, p)| {
                gone.contains(&p.collection)
                    || p.deleting.as_ref().is_some_and(|d| d.done_at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in points {
            self.points.remove(&id);
        }
        let pending = self
            .collections
            .values()
            .filter_map(|c| c.deleting.as_ref())
            .chain(self.points.values().filter_map(|p| p.deleting.as_ref()))
            .map(|d| d.done_at)
            .min();
        self.next_sweep = pending;
    }

    pub fn points_of_collection(&self, collection: &ResourceId) -> Vec<&PointRecord> {
        self.points
            .values()
            .filter(|p| &p.collection == collection)
            .collect()
    }

    pub fn points_of_vm(&self, vm: &ResourceId) -> Vec<&PointRecord> {
        self.points.values().filter(|p| &p.vm == vm).collect()
    }

    pub fn next_operation_id(&mut self, seed: u64) -> String {
        self.op_seq += 1;
        det_uuid(seed, &format!("operation/{}", self.op_seq))
    }
}

/// The `sourceMetadata` of a new local point: the VM's profile at creation time, without the
/// excluded disks, each disk with its `diskRestorePoint.id`. Returns the metadata and the disk
/// restore point ids.
pub fn source_metadata(
    vm: &VmRecord,
    point_id: &ResourceId,
    excluded: &[String],
    seed: u64,
) -> (Value, Vec<String>) {
    let props = &vm.doc["properties"];
    let sp = &props["storageProfile"];
    let is_excluded = |d: &Value| {
        d["managedDisk"]["id"].as_str().is_some_and(|id| {
            excluded.iter().any(|e| {
                e.trim_start_matches('/')
                    .eq_ignore_ascii_case(id.trim_start_matches('/'))
            })
        })
    };
    let mut disk_points = Vec::new();
    let mut disk_entry = |d: &Value, keys: &[&str]| -> Value {
        let mut out = serde_json::Map::new();
        for k in keys {
            if let Some(v) = d.get(*k) {
                if !v.is_null() {
                    out.insert((*k).to_string(), v.clone());
                }
            }
        }
        if let Some(m) = d.get("managedDisk") {
            let mut md = serde_json::Map::new();
            for k in ["storageAccountType", "id", "diskEncryptionSet"] {
                if let Some(v) = m.get(k) {
                    md.insert(k.into(), v.clone());
                }
            }
            out.insert("managedDisk".into(), Value::Object(md));
        }
        let name = d["name"].as_str().unwrap_or("disk");
        let rp_id = format!(
            "{point_id}/diskRestorePoints/{name}_{}",
            det_uuid(seed, &format!("{point_id}/{name}"))
        );
        disk_points.push(rp_id.clone());
        out.insert("diskRestorePoint".into(), json!({ "id": rp_id }));
        Value::Object(out)
    };
    let mut storage = serde_json::Map::new();
    if let Some(os) = sp.get("osDisk").filter(|o| !is_excluded(o)) {
        storage.insert(
            "osDisk".into(),
            disk_entry(
                os,
                &[
                    "osType",
                    "encryptionSettings",
                    "name",
                    "caching",
                    "diskSizeGB",
                    "writeAcceleratorEnabled",
                ],
            ),
        );
    }
    let data: Vec<Value> = sp["dataDisks"]
        .as_array()
        .map(|a| a.iter().filter(|d| !is_excluded(d)).cloned().collect())
        .unwrap_or_default();
    let data: Vec<Value> = data
        .iter()
        .map(|d| {
            disk_entry(
                d,
                &[
                    "lun",
                    "name",
                    "caching",
                    "diskSizeGB",
                    "writeAcceleratorEnabled",
                ],
            )
        })
        .collect();
    storage.insert("dataDisks".into(), Value::Array(data));
    if let Some(t) = sp.get("diskControllerType") {
        storage.insert("diskControllerType".into(), t.clone());
    }
    let mut meta = serde_json::Map::new();
    meta.insert("vmId".into(), props["vmId"].clone());
    for k in [
        "hardwareProfile",
        "osProfile",
        "diagnosticsProfile",
        "securityProfile",
        "licenseType",
    ] {
        if let Some(v) = props.get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    meta.insert("storageProfile".into(), Value::Object(storage));
    meta.insert("location".into(), vm.doc["location"].clone());
    if let Some(u) = &vm.user_data {
        meta.insert("userData".into(), json!(u));
    }
    // The VM's osProfile may carry write-only secrets in a hand-made document; never echo them.
    if let Some(p) = meta.get_mut("osProfile").and_then(Value::as_object_mut) {
        p.remove("adminPassword");
        p.remove("customData");
    }
    (Value::Object(meta), disk_points)
}

/// The `sourceMetadata` of a copy: the source's, with each disk restore point renamed into the
/// copy and pointing back at its source (`sourceDiskRestorePoint`).
pub fn copy_metadata(
    source: &PointRecord,
    copy_id: &ResourceId,
    seed: u64,
) -> (Value, Vec<String>) {
    let mut meta = source.source_metadata.clone();
    let mut ids = Vec::new();
    let mut rename = |d: &mut Value| {
        let name = d["name"].as_str().unwrap_or("disk").to_string();
        let src = d["diskRestorePoint"]["id"].clone();
        let id = format!(
            "{copy_id}/diskRestorePoints/{name}_{}",
            det_uuid(seed, &format!("{copy_id}/{name}"))
        );
        ids.push(id.clone());
        d["diskRestorePoint"] = json!({"id": id, "sourceDiskRestorePoint": {"id": src}});
    };
    if let Some(os) = meta
        .get_mut("storageProfile")
        .and_then(|s| s.get_mut("osDisk"))
    {
        rename(os);
    }
    if let Some(data) = meta
        .get_mut("storageProfile")
        .and_then(|s| s.get_mut("dataDisks"))
        .and_then(Value::as_array_mut)
    {
        for d in data {
            rename(d);
        }
    }
    (meta, ids)
}

#[cfg(test)]
mod tests;
