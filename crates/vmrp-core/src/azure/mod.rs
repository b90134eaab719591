//! Everything that speaks HTTP to Azure: the ARM Compute client, credentials, and the Service Bus
//! scheduler. Handlers see only the [`Arm`] and [`Scheduler`] traits defined here, and the
//! [`DrillLedger`] drills record their results in.

pub mod error;
pub mod id;
pub mod ledger;
pub mod models;

pub use error::{ArmError, ErrorClass, SendError};
pub use id::ResourceId;
pub use ledger::{DrillLedger, DrillRecord, LedgerError};

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};

/// Where to list VMs, disks or restore point collections: a subscription, or one resource group
/// (all a role assigned at resource groups may list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VmScope {
    Subscription(String),
    ResourceGroup {
        subscription: String,
        resource_group: String,
    },
}

impl VmScope {
    /// Whether the resource `id` lies in this scope (ARM compares ids case-insensitively).
    pub fn contains(&self, id: &ResourceId) -> bool {
        match self {
            VmScope::Subscription(sub) => id.subscription().eq_ignore_ascii_case(sub),
            VmScope::ResourceGroup {
                subscription,
                resource_group,
            } => {
                id.subscription().eq_ignore_ascii_case(subscription)
                    && id
                        .resource_group()
                        .is_some_and(|rg| rg.eq_ignore_ascii_case(resource_group))
            }
        }
    }
}

/// How a long-running operation can be followed after ARM accepted it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LroHandle {
    /// `Azure-AsyncOperation` header, preferred when present.
    pub async_operation: Option<String>,
    /// `Location` header.
    pub location: Option<String>,
    /// `Retry-After`, when ARM sent one.
    pub retry_after: Option<Duration>,
}

/// A write ARM accepted: the body it returned (if any) and how to follow the operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted<T> {
    pub status: u16,
    pub body: Option<T>,
    pub lro: LroHandle,
}

/// What the last responses said about a subscription's remaining ARM budget, and ARM's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub remaining_reads: Option<u32>,
    pub remaining_writes: Option<u32>,
    pub remaining_deletes: Option<u32>,
    /// The `Date` of the last response (1 s resolution): how late it is after a long listing,
    /// for a handler that only knows when its invocation started.
    pub date: Option<time::OffsetDateTime>,
    /// The `Date` of the response that carried each bucket's reading. A reading refills from
    /// when ARM gave it, not from a later response about another bucket: ARM reports a bucket
    /// only on its own class of request (reads on GETs, deletes on DELETEs), so a deletes reading
    /// taken at 0 and dated by every later GET never aged, and pacing held every prune back
    /// (CI's chaos run: 641 prunes put back, failed points left after the last tick).
    pub reads_at: Option<time::OffsetDateTime>,
    pub writes_at: Option<time::OffsetDateTime>,
    pub deletes_at: Option<time::OffsetDateTime>,
}

/// The ARM Compute operations vmrp uses. Implemented by the reqwest client (`azure::client`)
/// and by in-memory fakes in tests. A 404 is an `Err` whose [`ArmError::is_not_found`] is true;
/// the `get_*` helpers that return `Option` map it to `None`.
#[async_trait]
pub trait Arm: Send + Sync {
    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError>;
    /// All VMs in the scope, following `nextLink`.
    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError>;
    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError>;
    /// All managed disks in the scope, following `nextLink` (the timer's one read for the
    /// disk details of a whole fleet).
    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError>;

    /// PUT a collection (not long-running: 200 existed / 201 created).
    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError>;
    /// GET a collection; `expand_points` adds `$expand=restorePoints`.
    async fn get_collection(
        &self,
        id: &ResourceId,
        expand_points: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError>;
    /// All collections of a subscription, following `nextLink`.
    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError>;
    /// All collections of one resource group, following `nextLink`: what a role assigned at
    /// resource groups can list (a subscription-wide list needs the role on the subscription).
    /// The default filters the subscription's list, for in-memory fakes only; the ARM client
    /// lists the group itself.
    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let all = self.list_collections(subscription).await?;
        Ok(all
            .into_iter()
            .filter(|c| {
                c.id.as_deref()
                    .and_then(|i| ResourceId::parse(i).ok())
                    .and_then(|i| {
                        i.resource_group()
                            .map(|rg| rg.eq_ignore_ascii_case(resource_group))
                    })
                    .unwrap_or(false)
            })
            .collect())
    }
    /// The collections of `scope`: the subscription's or the resource group's list.
    async fn list_collections_in(
        &self,
        scope: &VmScope,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        match scope {
            VmScope::Subscription(sub) => self.list_collections(sub).await,
            VmScope::ResourceGroup {
                subscription,
                resource_group,
            } => {
                self.list_collections_in_group(subscription, resource_group)
                    .await
            }
        }
    }
    /// Start deleting a collection (long-running; returns once ARM accepted it).
    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError>;

    /// Start creating a restore point (long-running: 201 + operation headers). Returns once
    /// accepted; the caller polls the point itself.
    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError>;
    /// GET a restore point; `instance_view` adds `$expand=instanceView`.
    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError>;
    /// GET a restore point to poll it: the point, and the `Retry-After` ARM put on that answer
    /// if any (how long the poller should wait before asking again). Fakes without headers
    /// keep the default.
    async fn poll_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<(Option<RestorePoint>, Option<Duration>), ArmError> {
        Ok((self.get_restore_point(id, instance_view).await?, None))
    }
    /// Start deleting a restore point (long-running; returns once ARM accepted it).
    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError>;

    /// PUT a managed disk (a restore drill's: `creationData.createOption: Restore` from a disk
    /// restore point) and wait for ARM's operation to finish. The body is the document
    /// `restore::plan` builds, so the drill and `vmrp restore` send the same request.
    /// The default refuses: only the ARM client and `testing::FakeArm` write disks (a test
    /// double that never drills needs neither).
    async fn create_disk(&self, id: &ResourceId, body: &serde_json::Value) -> Result<(), ArmError> {
        let _ = body;
        Err(no_disk_writes("PUT disks", id))
    }
    /// DELETE a managed disk and wait for it; a disk already gone counts as deleted.
    async fn delete_disk(&self, id: &ResourceId) -> Result<(), ArmError> {
        Err(no_disk_writes("DELETE disks", id))
    }

    /// The budget the last response reported, whichever subscription it came from.
    fn rate_limits(&self) -> RateLimits {
        RateLimits::default()
    }
    /// The budget the last response from `subscription` reported: ARM's buckets are per
    /// subscription, so one subscription's headers say nothing about another's.
    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        let _ = subscription;
        RateLimits::default()
    }
    /// Takes calls a handler of this process has decided to make off `subscription`'s reading
    /// ([`RateLimits::debit`]) until ARM's next response there replaces it, so the invocations
    /// running at once in one process do not all spend the same remaining count.
    fn debit(&self, subscription: &str, reads: u32, writes: u32, deletes: u32) {
        let _ = (subscription, reads, writes, deletes);
    }
}

impl RateLimits {
    /// These readings as one response dated `at` would give them: ARM's clock, and each bucket
    /// that has a reading dated `at`.
    pub fn dated(mut self, at: time::OffsetDateTime) -> Self {
        self.date = Some(at);
        self.reads_at = self.remaining_reads.map(|_| at);
        self.writes_at = self.remaining_writes.map(|_| at);
        self.deletes_at = self.remaining_deletes.map(|_| at);
        self
    }

    /// The reading less calls about to be made (saturating; a bucket without a reading stays
    /// without one).
    pub fn debit(&mut self, reads: u32, writes: u32, deletes: u32) {
        let take = |left: &mut Option<u32>, n: u32| {
            if let Some(l) = left.as_mut() {
                *l = l.saturating_sub(n);
            }
        };
        take(&mut self.remaining_reads, reads);
        take(&mut self.remaining_writes, writes);
        take(&mut self.remaining_deletes, deletes);
    }
}

/// The refusal of an [`Arm`] that does not write disks.
fn no_disk_writes(operation: &str, id: &ResourceId) -> ArmError {
    ArmError {
        operation: operation.to_string(),
        status: Some(501),
        code: "NotImplemented".into(),
        message: format!("this ARM implementation does not write disks ({id})"),
        request_id: None,
        retry_after: None,
    }
}

/// vmrp's queues: the four it consumes, and the parking queue for messages that can never
/// succeed (sent to, never consumed by vmrp: an operator reads it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Queue {
    #[serde(rename = "rp-create")]
    Create,
    #[serde(rename = "rp-copy")]
    Copy,
    #[serde(rename = "rp-poll")]
    Poll,
    /// "Plan this subscription for this tick": the timer's fan-out (docs/architecture.md,
    /// "Fan-out per subscription").
    #[serde(rename = "rp-plan")]
    Plan,
    /// A message that failed for good, with its reason (see `host::park`).
    #[serde(rename = "rp-failed")]
    Failed,
}

impl Queue {
    /// The queues vmrp consumes (each has a function triggered by it).
    pub const ALL: [Queue; 4] = [Queue::Create, Queue::Copy, Queue::Poll, Queue::Plan];
    /// Every queue vmrp sends to: the consumed ones and the parking queue.
    pub const SENT: [Queue; 5] = [
        Queue::Create,
        Queue::Copy,
        Queue::Poll,
        Queue::Plan,
        Queue::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Queue::Create => "rp-create",
            Queue::Copy => "rp-copy",
            Queue::Poll => "rp-poll",
            Queue::Plan => "rp-plan",
            Queue::Failed => "rp-failed",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(name))
    }
}

/// A message to put on a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub queue: Queue,
    /// Deterministic id (see `names::message_id`), so Service Bus duplicate detection drops replays.
    pub message_id: String,
    /// JSON text of a `messages::QueueMessage`.
    pub body: String,
    /// `ScheduledEnqueueTimeUtc`; `None` = now.
    pub not_before: Option<OffsetDateTime>,
}

/// Sends (optionally scheduled) messages to vmrp's queues: what the Functions output binding
/// cannot do (PROTOCOL.md §4.4).
#[async_trait]
pub trait Scheduler: Send + Sync {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError>;
    /// Sends many; implementations may batch. Stops at the first failure, reporting how many went.
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<(), SendError> {
        for m in messages {
            self.send(m).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use super::RateLimits;

    /// Calls decided on are taken off the reading, never below zero, and a bucket without a
    /// reading stays unknown (no reading means "go", not "empty").
    #[test]
    fn a_debit_lowers_the_reading_it_has() {
        let mut l = RateLimits {
            remaining_reads: Some(10),
            remaining_writes: Some(1),
            remaining_deletes: None,
            ..RateLimits::default()
        };
        l.debit(3, 2, 5);
        assert_eq!(l.remaining_reads, Some(7));
        assert_eq!(l.remaining_writes, Some(0));
        assert_eq!(l.remaining_deletes, None);
    }
}
