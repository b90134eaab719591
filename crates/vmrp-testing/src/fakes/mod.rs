//! In-memory fakes for handler tests: [`FakeArm`] (VMs, disks, collections and restore points with
//! scripted provisioning, replication and errors, plus a call log) and [`FakeScheduler`] (records
//! the messages handlers send, with Service Bus duplicate detection), [`FakeLedger`] (drill
//! results in memory), and fixture builders.
//!
//! The fakes follow the ARM contract where the handlers depend on it (reference/arm/CONTRACT.md):
//! a point PUT needs its collection, a second PUT of an existing point is refused, a VM accepts
//! one create at a time (409), a copy starts `Creating` with 0 % replication, and GETs omit the
//! instance view unless asked for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::azure::models::{
    DataDisk, DiffDiskSettings, Disk, DiskProperties, DiskRestorePointInstanceView,
    DiskRestorePointReplicationStatus, DiskSku, ManagedDiskParameters, OsDisk, RestorePoint,
    RestorePointCollection, RestorePointInstanceView, StorageProfile, Tags, VirtualMachine,
    VirtualMachineProperties,
};
use crate::azure::{
    Accepted, Arm, ArmError, LroHandle, OutgoingMessage, RateLimits, ResourceId, Scheduler,
    SendError, VmScope,
};
use crate::messages::QueueMessage;
use crate::policy::{Deadlines, Policy, Retention, Rule, Targets};

mod arm;
mod fixtures;
mod ledger;
mod scheduler;

pub use fixtures::*;
pub use ledger::FakeLedger;
pub use scheduler::*;

/// The operation names of the call log and of scripted errors, in the emulator's fault style.
pub mod op {
    pub const GET_VM: &str = "GET virtualMachines";
    pub const LIST_VMS: &str = "LIST virtualMachines";
    pub const GET_DISK: &str = "GET disks";
    pub const LIST_DISKS: &str = "LIST disks";
    pub const PUT_COLLECTION: &str = "PUT restorePointCollections";
    pub const GET_COLLECTION: &str = "GET restorePointCollections";
    pub const LIST_COLLECTIONS: &str = "LIST restorePointCollections";
    pub const DELETE_COLLECTION: &str = "DELETE restorePointCollections";
    pub const PUT_POINT: &str = "PUT restorePoints";
    pub const GET_POINT: &str = "GET restorePoints";
    pub const DELETE_POINT: &str = "DELETE restorePoints";
    pub const PUT_DISK: &str = "PUT disks";
    pub const DELETE_DISK: &str = "DELETE disks";
}

/// One recorded ARM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: &'static str,
    /// The id or scope the call addressed.
    pub target: String,
}

#[derive(Default)]
struct ArmState {
    now: Option<OffsetDateTime>,
    /// What `rate_limits` answers (headers a real response would carry).
    limits: RateLimits,
    /// What `rate_limits_for` answers per (lowercase) subscription.
    limits_by_subscription: BTreeMap<String, RateLimits>,
    /// `Retry-After` on the next successful restore point polls (front first).
    poll_retry_after: VecDeque<Duration>,
    vms: BTreeMap<ResourceId, VirtualMachine>,
    disks: BTreeMap<ResourceId, Disk>,
    /// Collections without their points (points live in `points`).
    collections: BTreeMap<ResourceId, RestorePointCollection>,
    points: BTreeMap<ResourceId, RestorePoint>,
    /// Scripted errors per operation, consumed in order.
    errors: HashMap<&'static str, VecDeque<ArmError>>,
    /// `provisioningState` given to the next created points (front first), then `Creating`.
    next_states: VecDeque<String>,
    calls: Vec<Call>,
    allow_concurrent_creates: bool,
    /// Scopes the caller's role is assigned at; `None` = everything allowed.
    role_scopes: Option<Vec<String>>,
    /// The next restore point PUT goes through, but its answer is lost and the client's retry
    /// meets the point it just made (what a timeout after ARM accepted the PUT looks like).
    lose_next_put_answer: bool,
    /// The next disk PUT creates its disk and then never answers (an invocation killed while
    /// it waited: what the host's functionTimeout does to a slow drill).
    stall_next_disk_put: bool,
}

/// An in-memory ARM Compute with scripted behaviour. All methods take `&self`.
#[derive(Default)]
pub struct FakeArm {
    state: Mutex<ArmState>,
}

/// The time used for `timeCreated` when the test did not set one.
pub fn default_now() -> OffsetDateTime {
    time::macros::datetime!(2026-11-25 03:00:00 UTC)
}

fn arm_error(op: &str, status: u16, code: &str, message: &str) -> ArmError {
    ArmError {
        operation: op.to_string(),
        status: Some(status),
        code: code.to_string(),
        message: message.to_string(),
        request_id: None,
        retry_after: None,
    }
}

fn not_found(op: &str, id: &ResourceId) -> ArmError {
    arm_error(
        op,
        404,
        "ResourceNotFound",
        &format!("The resource '{id}' was not found."),
    )
}

impl FakeArm {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ArmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- setup -------------------------------------------------------------------------

    /// The time stamped on points created from now on.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.lock().now = Some(now);
    }
    pub fn add_vm(&self, vm: VirtualMachine) -> ResourceId {
        let id = vm.resource_id().expect("fixture VM has an id");
        self.lock().vms.insert(id.clone(), vm);
        id
    }
    /// What `rate_limits_for(subscription)` answers, as if that subscription's last response
    /// carried these headers.
    pub fn report_rate_limits_for(&self, subscription: &str, limits: RateLimits) {
        self.lock()
            .limits_by_subscription
            .insert(subscription.to_ascii_lowercase(), limits);
    }
    /// What the next `rate_limits` calls answer, as if the last response (whatever its
    /// subscription) carried these headers.
    pub fn report_rate_limits(&self, limits: RateLimits) {
        self.lock().limits = limits;
    }
    pub fn remove_vm(&self, id: &ResourceId) {
        self.lock().vms.remove(id);
    }
    pub fn add_disk(&self, disk: Disk) -> ResourceId {
        let id = ResourceId::parse(disk.id.as_deref().expect("fixture disk has an id"))
            .expect("fixture disk id parses");
        self.lock().disks.insert(id.clone(), disk);
        id
    }
    /// Inserts a collection as if it had been created earlier.
    pub fn add_collection(&self, id: &ResourceId, location: &str, source: &ResourceId) {
        let mut c = RestorePointCollection::for_source(location, source, Tags::new());
        c.id = Some(id.to_string());
        c.name = id.name().map(str::to_string);
        self.lock().collections.insert(id.clone(), c);
    }
    /// Inserts a restore point (fixture): `state` is its provisioningState, `replication` the
    /// per-disk completion percentages of a copy (empty for local points).
    pub fn add_point(
        &self,
        id: &ResourceId,
        state: &str,
        created: OffsetDateTime,
        source: Option<&ResourceId>,
        replication: &[i32],
    ) {
        let mut p = match source {
            Some(s) => RestorePoint::copy_of(s),
            None => RestorePoint::local(None, &[]),
        };
        p.id = Some(id.to_string());
        p.name = id.name().map(str::to_string);
        let props = p.properties.get_or_insert_with(Default::default);
        props.provisioning_state = Some(state.to_string());
        props.time_created = Some(created);
        props.instance_view = Some(instance_view(id, replication));
        self.lock().points.insert(id.clone(), p);
    }
    /// Moves a point to `state` (e.g. `Succeeded`, `Failed`).
    pub fn set_point_state(&self, id: &ResourceId, state: &str) {
        let mut s = self.lock();
        let p = s.points.get_mut(id).expect("point exists");
        p.properties
            .get_or_insert_with(Default::default)
            .provisioning_state = Some(state.to_string());
    }
    /// Sets a copy's per-disk replication percentages.
    pub fn set_replication(&self, id: &ResourceId, percents: &[i32]) {
        let mut s = self.lock();
        let p = s.points.get_mut(id).expect("point exists");
        p.properties
            .get_or_insert_with(Default::default)
            .instance_view = Some(instance_view(id, percents));
    }
    /// Sets a point's per-disk `snapshotAccessState` (one disk restore point per entry), as
    /// Azure reports it for Premium SSD v2 / Ultra disks.
    pub fn set_access_states(&self, id: &ResourceId, states: &[&str]) {
        let mut s = self.lock();
        let p = s.points.get_mut(id).expect("point exists");
        let disks = states
            .iter()
            .enumerate()
            .map(|(i, st)| DiskRestorePointInstanceView {
                id: Some(format!("{id}/diskRestorePoints/disk{i}")),
                replication_status: None,
                snapshot_access_state: Some(st.to_string()),
            })
            .collect();
        p.properties
            .get_or_insert_with(Default::default)
            .instance_view = Some(RestorePointInstanceView {
            disk_restore_points: Some(disks),
            statuses: None,
        });
    }
    /// Replaces a point's `sourceMetadata` (e.g. disks with a disk encryption set).
    pub fn set_source_metadata(&self, id: &ResourceId, metadata: serde_json::Value) {
        let mut s = self.lock();
        let p = s.points.get_mut(id).expect("point exists");
        p.properties
            .get_or_insert_with(Default::default)
            .source_metadata = Some(metadata);
    }
    /// Marks a copy's disk `disk` as Azure shows a failed (or terminated) disk restore point
    /// copy: replication status `Failed`, no message, no percent.
    pub fn fail_replication(&self, id: &ResourceId, disk: usize) {
        let mut s = self.lock();
        let p = s.points.get_mut(id).expect("point exists");
        let iv = p
            .properties
            .get_or_insert_with(Default::default)
            .instance_view
            .get_or_insert_with(|| instance_view(id, &[0]));
        let d = &mut iv.disk_restore_points.get_or_insert_with(Vec::new)[disk];
        d.replication_status = Some(DiskRestorePointReplicationStatus {
            status: Some(crate::azure::models::InstanceViewStatus {
                code: Some("ReplicationState/failed".into()),
                level: Some("Error".into()),
                display_status: Some("Failed".into()),
                message: None,
                time: None,
            }),
            completion_percent: None,
        });
    }
    /// The next created points get these provisioning states (in order), then `Creating`.
    pub fn script_next_states(&self, states: &[&str]) {
        self.lock()
            .next_states
            .extend(states.iter().map(|s| s.to_string()));
    }
    /// The next call of `op` fails with `error` (scripted errors queue up per operation).
    pub fn fail_next(&self, op: &'static str, error: ArmError) {
        self.lock().errors.entry(op).or_default().push_back(error);
    }
    /// The next successful restore point poll (GET) carries `Retry-After: secs`.
    pub fn retry_after_on_next_poll(&self, secs: u64) {
        self.lock()
            .poll_retry_after
            .push_back(Duration::from_secs(secs));
    }
    /// The next call of `op` is throttled: 429 with `Retry-After: secs`.
    pub fn throttle_next(&self, op: &'static str, secs: u64) {
        let mut e = arm_error(
            op,
            429,
            "TooManyRequests",
            "The request is being throttled.",
        );
        e.retry_after = Some(Duration::from_secs(secs));
        self.fail_next(op, e);
    }
    /// The next call of `op` meets the documented concurrent-create conflict (409).
    pub fn conflict_next(&self, op: &'static str) {
        self.fail_next(
            op,
            arm_error(
                op,
                409,
                "Conflict",
                "RestorePoint creation failed since a concurrent 'Create RestorePoint' operation was triggered on the VM.",
            ),
        );
    }
    /// The next call of `op` is refused permanently (`status`, `code`).
    pub fn refuse_next(&self, op: &'static str, status: u16, code: &str, message: &str) {
        self.fail_next(op, arm_error(op, status, code, message));
    }
    /// The next restore point PUT is applied, then its answer is lost: the caller sees what
    /// its retry of the same PUT gets (409, the point exists).
    pub fn lose_next_put_answer(&self) {
        self.lock().lose_next_put_answer = true;
    }
    /// The next disk PUT creates the disk, then hangs forever (the caller is killed meanwhile).
    pub fn stall_next_disk_put(&self) {
        self.lock().stall_next_disk_put = true;
    }
    /// Every managed disk the fake holds (ids).
    pub fn disk_ids(&self) -> Vec<ResourceId> {
        self.lock().disks.keys().cloned().collect()
    }
    /// Refuses every call outside `scopes` (subscription or resource group ids) with 403
    /// `AuthorizationFailed`, as ARM answers a role assigned at those scopes only (the
    /// emulator's `roleScopes` rule).
    pub fn set_role_scopes(&self, scopes: &[&str]) {
        self.lock().role_scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
    }

    /// Lets a VM start a create while another is still `Creating` (off by default, like Azure).
    pub fn allow_concurrent_creates(&self) {
        self.lock().allow_concurrent_creates = true;
    }

    // ----- inspection --------------------------------------------------------------------

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }
    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
    pub fn point(&self, id: &ResourceId) -> Option<RestorePoint> {
        self.lock().points.get(id).cloned()
    }
    pub fn collection(&self, id: &ResourceId) -> Option<RestorePointCollection> {
        self.lock().collections.get(id).cloned()
    }
    /// Ids of the points in a collection, sorted.
    pub fn point_ids(&self, collection: &ResourceId) -> Vec<ResourceId> {
        self.lock()
            .points
            .keys()
            .filter(|p| p.parent().as_ref() == Some(collection))
            .cloned()
            .collect()
    }

    // ----- internals ---------------------------------------------------------------------

    /// Logs the call and returns a scripted error for it, if any.
    fn enter(&self, s: &mut ArmState, op: &'static str, target: &str) -> Result<(), ArmError> {
        s.calls.push(Call {
            op,
            target: target.to_string(),
        });
        if let Some(scopes) = &s.role_scopes {
            let under = |scope: &str| {
                let (t, sc) = (target.to_ascii_lowercase(), scope.to_ascii_lowercase());
                t == sc || t.starts_with(&format!("{sc}/"))
            };
            if !scopes.iter().any(|sc| under(sc)) {
                return Err(arm_error(
                    op,
                    403,
                    "AuthorizationFailed",
                    &format!(
                        "The client 'fake' with object id 'fake' does not have authorization to \
                         perform action '{op}' over scope '{target}' or the scope is invalid."
                    ),
                ));
            }
        }
        match s.errors.get_mut(op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn points_of(s: &ArmState, collection: &ResourceId) -> Vec<RestorePoint> {
        s.points
            .iter()
            .filter(|(id, _)| id.parent().as_ref() == Some(collection))
            .map(|(_, p)| without_instance_view(p.clone()))
            .collect()
    }

    /// The VM whose points a collection holds (following a copy collection to its source).
    fn vm_of_collection(s: &ArmState, collection: &ResourceId) -> Option<ResourceId> {
        let source = ResourceId::parse(s.collections.get(collection)?.source_id()?).ok()?;
        if source.is_type("Microsoft.Compute/virtualMachines") {
            Some(source)
        } else {
            None
        }
    }
}

fn instance_view(id: &ResourceId, replication: &[i32]) -> RestorePointInstanceView {
    let disks = if replication.is_empty() {
        vec![DiskRestorePointInstanceView {
            id: Some(format!("{id}/diskRestorePoints/os")),
            replication_status: None,
            snapshot_access_state: Some("Available".into()),
        }]
    } else {
        replication
            .iter()
            .enumerate()
            .map(|(i, pct)| DiskRestorePointInstanceView {
                id: Some(format!("{id}/diskRestorePoints/disk{i}")),
                replication_status: Some(DiskRestorePointReplicationStatus {
                    status: None,
                    completion_percent: Some(*pct),
                }),
                snapshot_access_state: None,
            })
            .collect()
    };
    RestorePointInstanceView {
        disk_restore_points: Some(disks),
        statuses: None,
    }
}

fn without_instance_view(mut p: RestorePoint) -> RestorePoint {
    if let Some(props) = p.properties.as_mut() {
        props.instance_view = None;
    }
    p
}

fn accepted<T>(status: u16) -> Accepted<T> {
    Accepted {
        status,
        body: None,
        lro: LroHandle {
            async_operation: None,
            location: None,
            retry_after: Some(Duration::from_secs(10)),
        },
    }
}

fn scope_label(scope: &VmScope) -> String {
    match scope {
        VmScope::Subscription(sub) => format!("/subscriptions/{sub}"),
        VmScope::ResourceGroup {
            subscription,
            resource_group,
        } => format!("/subscriptions/{subscription}/resourceGroups/{resource_group}"),
    }
}

#[cfg(test)]
mod tests;
