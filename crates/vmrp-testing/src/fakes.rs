//! In-memory fakes for handler tests: [`FakeArm`] (VMs, disks, collections and restore points with
//! scripted provisioning, replication and errors, plus a call log) and [`FakeScheduler`] (records
//! the messages handlers send, with Service Bus duplicate detection), and fixture builders.
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

#[async_trait]
impl Arm for FakeArm {
    fn rate_limits(&self) -> RateLimits {
        self.lock().limits
    }

    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        self.lock()
            .limits_by_subscription
            .get(&subscription.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_VM, id.as_str())?;
        Ok(s.vms.get(id).cloned())
    }

    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_VMS, &scope_label(scope))?;
        Ok(s.vms
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, vm)| vm.clone())
            .collect())
    }

    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_DISKS, &scope_label(scope))?;
        Ok(s.disks
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, disk)| disk.clone())
            .collect())
    }

    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_DISK, id.as_str())?;
        Ok(s.disks.get(id).cloned())
    }

    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::PUT_COLLECTION, id.as_str())?;
        if body.location.is_none() {
            return Err(arm_error(
                op::PUT_COLLECTION,
                400,
                "InvalidParameter",
                "location is required",
            ));
        }
        if let Some(existing) = s.collections.get_mut(id) {
            // Only tags may change on an existing collection.
            existing.tags = body.tags.clone();
            return Ok(existing.clone());
        }
        let source = body.source_id().map(ResourceId::parse);
        match source {
            Some(Ok(src)) => {
                let known = s.vms.contains_key(&src) || s.collections.contains_key(&src);
                if !known {
                    return Err(not_found(op::PUT_COLLECTION, &src));
                }
            }
            _ => {
                return Err(arm_error(
                    op::PUT_COLLECTION,
                    400,
                    "InvalidParameter",
                    "properties.source.id is required",
                ))
            }
        }
        let mut c = body.clone();
        c.id = Some(id.to_string());
        c.name = id.name().map(str::to_string);
        c.kind = Some("Microsoft.Compute/restorePointCollections".into());
        c.properties
            .get_or_insert_with(Default::default)
            .provisioning_state = Some("Succeeded".into());
        s.collections.insert(id.clone(), c.clone());
        Ok(c)
    }

    async fn get_collection(
        &self,
        id: &ResourceId,
        expand_points: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_COLLECTION, id.as_str())?;
        let Some(mut c) = s.collections.get(id).cloned() else {
            return Ok(None);
        };
        if expand_points {
            c.properties
                .get_or_insert_with(Default::default)
                .restore_points = Some(Self::points_of(&s, id));
        }
        Ok(Some(c))
    }

    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let mut s = self.lock();
        self.enter(
            &mut s,
            op::LIST_COLLECTIONS,
            &format!("/subscriptions/{subscription}"),
        )?;
        Ok(s.collections
            .iter()
            .filter(|(id, _)| id.subscription().eq_ignore_ascii_case(subscription))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let scope = VmScope::ResourceGroup {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
        };
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_COLLECTIONS, &scope_label(&scope))?;
        Ok(s.collections
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_COLLECTION, id.as_str())?;
        if s.collections.remove(id).is_none() {
            return Ok(accepted(204));
        }
        s.points.retain(|p, _| p.parent().as_ref() != Some(id));
        Ok(accepted(202))
    }

    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::PUT_POINT, id.as_str())?;
        let collection = id.parent().expect("restore point id has a parent");
        if !s.collections.contains_key(&collection) {
            return Err(arm_error(
                op::PUT_POINT,
                404,
                "ParentResourceNotFound",
                &format!("Parent resource '{collection}' not found."),
            ));
        }
        if s.points.contains_key(id) {
            return Err(arm_error(
                op::PUT_POINT,
                409,
                "OperationNotAllowed",
                "Properties of an existing restore point cannot be updated.",
            ));
        }
        let source = body.source_restore_point().map(ResourceId::parse);
        let replication = match &source {
            Some(Ok(src)) => {
                if !s.points.contains_key(src) {
                    return Err(not_found(op::PUT_POINT, src));
                }
                vec![0, 0]
            }
            Some(Err(e)) => {
                return Err(arm_error(
                    op::PUT_POINT,
                    400,
                    "InvalidParameter",
                    &e.to_string(),
                ))
            }
            None => Vec::new(),
        };
        if source.is_none() && !s.allow_concurrent_creates {
            if let Some(vm) = Self::vm_of_collection(&s, &collection) {
                let busy = s.points.iter().any(|(pid, p)| {
                    pid.parent()
                        .is_some_and(|c| Self::vm_of_collection(&s, &c).as_ref() == Some(&vm))
                        && p.source_restore_point().is_none()
                        && !p.provisioning_state().is_final()
                });
                if busy {
                    return Err(arm_error(
                        op::PUT_POINT,
                        409,
                        "Conflict",
                        "RestorePoint creation failed since a concurrent 'Create RestorePoint' operation was triggered on the VM.",
                    ));
                }
            }
        }
        let state = s
            .next_states
            .pop_front()
            .unwrap_or_else(|| "Creating".to_string());
        // Like Azure, a point records the VM as it was (here: just its location).
        let metadata = Self::vm_of_collection(&s, &collection)
            .and_then(|vm| s.vms.get(&vm))
            .and_then(|vm| vm.location.clone())
            .map(|location| serde_json::json!({ "location": location }));
        let mut p = body.clone();
        p.id = Some(id.to_string());
        p.name = id.name().map(str::to_string);
        let props = p.properties.get_or_insert_with(Default::default);
        props.provisioning_state = Some(state);
        // A copy's request may carry per-disk encryption in `sourceMetadata`: kept, so tests
        // can read what was asked for.
        props.source_metadata =
            metadata.or_else(|| body.properties.as_ref()?.source_metadata.clone());
        props.time_created = Some(s.now.unwrap_or_else(default_now));
        props.instance_view = Some(instance_view(id, &replication));
        s.points.insert(id.clone(), p.clone());
        if std::mem::take(&mut s.lose_next_put_answer) {
            // The retry of the same PUT: the point exists now.
            return Err(arm_error(
                op::PUT_POINT,
                409,
                "OperationNotAllowed",
                "Properties of an existing restore point cannot be updated.",
            ));
        }
        let mut acc = accepted(201);
        acc.body = Some(without_instance_view(p));
        Ok(acc)
    }

    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_POINT, id.as_str())?;
        Ok(s.points.get(id).cloned().map(|p| {
            if instance_view {
                p
            } else {
                without_instance_view(p)
            }
        }))
    }

    async fn poll_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<(Option<RestorePoint>, Option<Duration>), ArmError> {
        let point = self.get_restore_point(id, instance_view).await?;
        Ok((point, self.lock().poll_retry_after.pop_front()))
    }

    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_POINT, id.as_str())?;
        match s.points.remove(id) {
            Some(_) => Ok(accepted(202)),
            None => Ok(accepted(204)),
        }
    }

    /// Azure's rules for a restored disk, as the emulator models them (docs/emulator-arm.md):
    /// `Restore` from a disk restore point of a point that succeeded and, for a copy, has fully
    /// replicated; an existing disk of the same source is the same disk (200), another source is
    /// a `creationData` change (409).
    async fn create_disk(&self, id: &ResourceId, body: &serde_json::Value) -> Result<(), ArmError> {
        let stall = {
            let mut s = self.lock();
            self.enter(&mut s, op::PUT_DISK, id.as_str())?;
            let cd = &body["properties"]["creationData"];
            let source = cd["sourceResourceId"].as_str().unwrap_or_default();
            let refuse =
                |status, code, msg: String| Err(arm_error(op::PUT_DISK, status, code, &msg));
            if let Some(existing) = s.disks.get(id) {
                let same = existing
                    .properties
                    .as_ref()
                    .and_then(|p| p.creation_data.as_ref())
                    .and_then(|c| c.source_resource_id.as_deref())
                    .is_some_and(|x| x.eq_ignore_ascii_case(source));
                return if same {
                    Ok(())
                } else {
                    refuse(
                        409,
                        "PropertyChangeNotAllowed",
                        "Changing property 'creationData' is not allowed.".into(),
                    )
                };
            }
            if !cd["createOption"]
                .as_str()
                .is_some_and(|o| o.eq_ignore_ascii_case("Restore"))
            {
                return refuse(
                    400,
                    "InvalidParameter",
                    "createOption must be 'Restore'".into(),
                );
            }
            let point_id = source
                .to_ascii_lowercase()
                .find("/diskrestorepoints/")
                .and_then(|i| ResourceId::parse(&source[..i]).ok());
            let Some(point) = point_id.as_ref().and_then(|p| s.points.get(p)) else {
                return refuse(
                    404,
                    "ResourceNotFound",
                    format!("The disk restore point '{source}' was not found."),
                );
            };
            let props = point.properties.clone().unwrap_or_default();
            let state = props.provisioning_state.clone().unwrap_or_default();
            if !state.eq_ignore_ascii_case("Succeeded") {
                return refuse(409, "OperationNotAllowed", format!(
                    "The restore point '{}' is in state '{state}': a disk can be restored only from a restore point that succeeded.",
                    point_id.as_ref().map(ResourceId::as_str).unwrap_or_default()
                ));
            }
            let lowest = props
                .instance_view
                .as_ref()
                .and_then(|iv| iv.disk_restore_points.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|d| d.replication_status.as_ref()?.completion_percent)
                .min();
            if let Some(pct) = lowest.filter(|p| *p < 100) {
                return refuse(409, "OperationNotAllowed", format!(
                    "The restore point is still being copied ({pct}%): it can be used to restore only after every disk restore point has replicated."
                ));
            }
            let disk = Disk {
                id: Some(id.to_string()),
                name: id.name().map(str::to_string),
                location: body["location"].as_str().map(str::to_string),
                tags: serde_json::from_value(body["tags"].clone()).ok(),
                sku: body["sku"]["name"]
                    .as_str()
                    .map(|n| crate::azure::models::DiskSku {
                        name: Some(n.to_string()),
                    }),
                properties: Some(DiskProperties {
                    creation_data: Some(crate::azure::models::DiskCreationData {
                        create_option: Some("Restore".into()),
                        source_resource_id: Some(source.to_string()),
                    }),
                    provisioning_state: Some("Succeeded".into()),
                    ..Default::default()
                }),
            };
            s.disks.insert(id.clone(), disk);
            std::mem::take(&mut s.stall_next_disk_put)
        };
        if stall {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn delete_disk(&self, id: &ResourceId) -> Result<(), ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_DISK, id.as_str())?;
        s.disks.remove(id);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scheduler
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct SchedulerState {
    sent: Vec<OutgoingMessage>,
    /// When each message in `sent` was sent (the scheduler's `now` then).
    sent_at: Vec<OffsetDateTime>,
    /// What "now" is for sends (moved by tests with [`FakeScheduler::set_now`]).
    now: Option<OffsetDateTime>,
    /// Remaining sends to refuse with a transient 503.
    failures: u32,
}

/// The duplicate detection window vmrp's queues are deployed with (P7D in
/// infra/modules/servicebus.bicep; the emulator's `DUPLICATE_WINDOW`, checked equal in a test).
pub const DUPLICATE_DETECTION_WINDOW: time::Duration = time::Duration::days(7);

/// Records sent messages. Service Bus duplicate detection is modelled by
/// [`FakeScheduler::delivered`], within the deployed window as Azure applies it.
#[derive(Default)]
pub struct FakeScheduler {
    state: Mutex<SchedulerState>,
}

impl FakeScheduler {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SchedulerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The next `n` sends fail (503).
    pub fn fail_next(&self, n: u32) {
        self.lock().failures += n;
    }
    /// Every message sent, duplicates included.
    pub fn sent(&self) -> Vec<OutgoingMessage> {
        self.lock().sent.clone()
    }
    /// The moment later sends happen at (for the duplicate detection window); unset, every send
    /// happens at one moment.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.lock().now = Some(now);
    }
    /// What Service Bus would enqueue: a message is dropped when one with its id was enqueued
    /// less than [`DUPLICATE_DETECTION_WINDOW`] before it; a later one is enqueued again.
    pub fn delivered(&self) -> Vec<OutgoingMessage> {
        let s = self.lock();
        let mut accepted: std::collections::HashMap<&str, OffsetDateTime> = Default::default();
        let mut out = Vec::new();
        for (m, at) in s.sent.iter().zip(&s.sent_at) {
            let duplicate = accepted
                .get(m.message_id.as_str())
                .is_some_and(|first| *at - *first < DUPLICATE_DETECTION_WINDOW);
            if !duplicate {
                accepted.insert(&m.message_id, *at);
                out.push(m.clone());
            }
        }
        out
    }
    /// Removes and returns everything sent so far.
    pub fn take(&self) -> Vec<OutgoingMessage> {
        let mut s = self.lock();
        s.sent_at.clear();
        std::mem::take(&mut s.sent)
    }
    /// Sent messages decoded, in order.
    pub fn messages(&self) -> Vec<QueueMessage> {
        self.sent()
            .iter()
            .map(|m| QueueMessage::decode(&m.body).expect("handlers send valid messages"))
            .collect()
    }
}

#[async_trait]
impl Scheduler for FakeScheduler {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        let mut s = self.lock();
        if s.failures > 0 {
            s.failures -= 1;
            return Err(SendError {
                queue: message.queue.name().to_string(),
                status: Some(503),
                message: "ServiceUnavailable (scripted)".into(),
            });
        }
        let at = s.now.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        s.sent.push(message);
        s.sent_at.push(at);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}`.
pub fn vm_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "virtualMachines", name)
        .expect("fixture names form an id")
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}`.
pub fn disk_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "disks", name)
        .expect("fixture names form an id")
}

/// Builds a [`VirtualMachine`] the way ARM returns it: a managed OS disk named `{name}-os`.
pub struct VmBuilder {
    vm: VirtualMachine,
}

impl VmBuilder {
    pub fn new(sub: &str, rg: &str, name: &str) -> Self {
        let id = vm_id(sub, rg, name);
        let os_disk = disk_id(sub, rg, &format!("{name}-os"));
        Self {
            vm: VirtualMachine {
                id: Some(id.to_string()),
                name: Some(name.to_string()),
                kind: Some("Microsoft.Compute/virtualMachines".into()),
                location: Some("eastus".into()),
                tags: None,
                zones: None,
                properties: Some(VirtualMachineProperties {
                    vm_id: Some(format!("00000000-0000-0000-0000-{:0>12}", name.len())),
                    provisioning_state: Some("Succeeded".into()),
                    storage_profile: Some(StorageProfile {
                        os_disk: Some(OsDisk {
                            os_type: Some("Linux".into()),
                            name: Some(format!("{name}-os")),
                            managed_disk: Some(ManagedDiskParameters {
                                id: Some(os_disk.to_string()),
                                storage_account_type: Some("Premium_LRS".into()),
                                disk_encryption_set: None,
                            }),
                            ..Default::default()
                        }),
                        data_disks: None,
                    }),
                    ..Default::default()
                }),
            },
        }
    }
    pub fn location(mut self, location: &str) -> Self {
        self.vm.location = Some(location.into());
        self
    }
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.vm
            .tags
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }
    /// A managed data disk at `lun` with this disk id and storage type (e.g. `Premium_LRS`).
    pub fn data_disk(mut self, lun: i32, disk: &ResourceId, storage: &str) -> Self {
        let sp = self.storage_profile();
        sp.data_disks.get_or_insert_with(Vec::new).push(DataDisk {
            lun,
            name: disk.name().map(str::to_string),
            managed_disk: Some(ManagedDiskParameters {
                id: Some(disk.to_string()),
                storage_account_type: Some(storage.into()),
                disk_encryption_set: None,
            }),
            disk_size_gb: Some(128),
            ..Default::default()
        });
        self
    }
    /// Makes the OS disk ephemeral (`diffDiskSettings.option = Local`).
    pub fn ephemeral_os(mut self) -> Self {
        if let Some(os) = self.storage_profile().os_disk.as_mut() {
            os.diff_disk_settings = Some(DiffDiskSettings {
                option: Some("Local".into()),
                placement: Some("CacheDisk".into()),
            });
        }
        self
    }
    fn storage_profile(&mut self) -> &mut StorageProfile {
        self.vm
            .properties
            .get_or_insert_with(Default::default)
            .storage_profile
            .get_or_insert_with(Default::default)
    }
    pub fn build(self) -> VirtualMachine {
        self.vm
    }
}

/// A managed disk as `GET disks/{name}` returns it.
pub fn disk(id: &ResourceId, sku: &str, max_shares: Option<i32>, tags: &[(&str, &str)]) -> Disk {
    Disk {
        id: Some(id.to_string()),
        name: id.name().map(str::to_string),
        location: Some("eastus".into()),
        tags: (!tags.is_empty()).then(|| {
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        sku: Some(DiskSku {
            name: Some(sku.into()),
        }),
        properties: Some(DiskProperties {
            max_shares,
            disk_size_gb: Some(128),
            ..Default::default()
        }),
    }
}

/// A rule covering every VM, crash-consistent, keeping the newest `keep_last` points; adjust the
/// public fields for other cases.
pub fn rule(name: &str, keep_last: u32) -> Rule {
    Rule {
        name: name.to_string(),
        targets: Targets::default(),
        schedule: None,
        consistency: crate::azure::models::ConsistencyMode::CrashConsistent,
        consistency_tag: None,
        exclude_disks: Default::default(),
        copies: Vec::new(),
        retention: Retention::newest(keep_last),
        deadlines: Deadlines::default(),
        collection_resource_group: None,
        instant_access: None,
        skip_backup_protected: false,
    }
}

/// A policy of these rules, keeping orphans forever.
pub fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        orphans: Default::default(),
        drills: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::ProvisioningState;

    fn setup() -> (FakeArm, ResourceId, ResourceId) {
        let arm = FakeArm::new();
        let vm = arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
        let c = crate::names::collection_id(&vm, None).unwrap();
        arm.add_collection(&c, "eastus", &vm);
        (arm, vm, c)
    }

    #[tokio::test]
    async fn one_create_per_vm_at_a_time_and_no_second_put() {
        let (arm, _vm, c) = setup();
        let p1 = c.child("restorePoints", "rp-1");
        let p2 = c.child("restorePoints", "rp-2");
        let body = RestorePoint::local(None, &[]);
        assert_eq!(
            arm.create_restore_point(&p1, &body).await.unwrap().status,
            201
        );
        let busy = arm.create_restore_point(&p2, &body).await.unwrap_err();
        assert_eq!((busy.status, busy.is_transient()), (Some(409), true));
        arm.set_point_state(&p1, "Succeeded");
        let again = arm.create_restore_point(&p1, &body).await.unwrap_err();
        assert_eq!((again.status, again.is_transient()), (Some(409), false));
        assert!(arm.create_restore_point(&p2, &body).await.is_ok());
        assert_eq!(arm.count(op::PUT_POINT), 4);
    }

    #[tokio::test]
    async fn scripted_states_errors_and_instance_view() {
        let (arm, vm, c) = setup();
        arm.script_next_states(&["Failed"]);
        arm.throttle_next(op::PUT_POINT, 12);
        let p = c.child("restorePoints", "rp-1");
        let body = RestorePoint::local(None, &[]);
        let throttled = arm.create_restore_point(&p, &body).await.unwrap_err();
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(12)));
        arm.create_restore_point(&p, &body).await.unwrap();
        let plain = arm.get_restore_point(&p, false).await.unwrap().unwrap();
        assert_eq!(plain.provisioning_state(), ProvisioningState::Failed);
        assert!(plain.properties.as_ref().unwrap().instance_view.is_none());
        // A copy starts at 0 % per disk; progress shows only with the instance view.
        let target = crate::names::copy_collection_id(&vm, "westus2", None).unwrap();
        arm.add_collection(&target, "westus2", &c);
        let copy = target.child("restorePoints", "rp-1");
        arm.create_restore_point(&copy, &RestorePoint::copy_of(&p))
            .await
            .unwrap();
        let seen = arm.get_restore_point(&copy, true).await.unwrap().unwrap();
        assert_eq!(seen.replication_percents(), vec![0, 0]);
        arm.set_replication(&copy, &[100, 70]);
        let seen = arm.get_restore_point(&copy, true).await.unwrap().unwrap();
        assert_eq!(seen.replication_percents(), vec![100, 70]);
        let listed = arm.get_collection(&target, true).await.unwrap().unwrap();
        assert_eq!(listed.restore_points().len(), 1);
        assert!(listed.restore_points()[0]
            .properties
            .as_ref()
            .unwrap()
            .instance_view
            .is_none());
    }

    #[tokio::test]
    async fn scheduler_models_duplicate_detection_and_failures() {
        let bus = FakeScheduler::new();
        let msg = |id: &str| OutgoingMessage {
            queue: crate::azure::Queue::Poll,
            message_id: id.into(),
            body: "{}".into(),
            not_before: None,
        };
        bus.send(msg("a")).await.unwrap();
        bus.send(msg("a")).await.unwrap();
        bus.fail_next(1);
        assert_eq!(bus.send(msg("b")).await.unwrap_err().status, Some(503));
        bus.send(msg("b")).await.unwrap();
        assert_eq!(bus.sent().len(), 3);
        assert_eq!(bus.delivered().len(), 2);
        // Within the deployed window a replay is dropped; past it, it is enqueued again.
        let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
        let bus = FakeScheduler::new();
        bus.set_now(t0);
        bus.send(msg("a")).await.unwrap();
        bus.set_now(t0 + time::Duration::hours(2));
        bus.send(msg("a")).await.unwrap();
        assert_eq!(bus.delivered().len(), 1, "a replay 2 h later is dropped");
        bus.set_now(t0 + DUPLICATE_DETECTION_WINDOW);
        bus.send(msg("a")).await.unwrap();
        assert_eq!(
            bus.delivered().len(),
            2,
            "a replay after the window is enqueued"
        );
    }
}
