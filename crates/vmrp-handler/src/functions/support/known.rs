//! What one handler process learned from ARM and may reuse: collections that exist, disk
//! details, and which regions refused copies a moment ago. Losing it (a new instance) costs a
//! few reads or one refused PUT, never a wrong write.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use super::{after, CollectionNames};
use crate::azure::ResourceId;
use crate::policy::DiskInfo;

/// What this process learned from ARM and may reuse: collections that exist ("create once, then
/// skipped") and disk details. Losing it (a new instance) only costs a few reads.
#[derive(Debug, Default)]
pub struct KnownResources {
    collections: Mutex<HashSet<ResourceId>>,
    /// Collection id by today's naming → the legacy-named collection that takes its place.
    aliases: Mutex<HashMap<ResourceId, ResourceId>>,
    disks: Mutex<HashMap<ResourceId, (OffsetDateTime, Option<DiskInfo>)>>,
    /// (subscription, target region), lowercase → until when Compute refused copies there
    /// (a copy PUT answered 429: the region's disk copies in flight are at their limit), and
    /// how many refusals in a row this process met there.
    copies_refused: Mutex<HashMap<(String, String), (OffsetDateTime, u32)>>,
    /// (subscription, target region), lowercase → the lane this process's copy PUTs there
    /// take one at a time, so a burst of copy messages meets a refusal once, not once each.
    copy_lanes: Mutex<HashMap<(String, String), CopyLane>>,
}

impl KnownResources {
    pub fn collection_exists(&self, id: &ResourceId) -> bool {
        lock(&self.collections).contains(id)
    }
    pub fn remember_collection(&self, id: &ResourceId) {
        lock(&self.collections).insert(id.clone());
    }
    pub fn forget_collection(&self, id: &ResourceId) {
        lock(&self.collections).remove(id);
    }
    /// The collection known to exist for `names`: the legacy one it resolved to, or its own id.
    pub fn resolved(&self, names: &CollectionNames) -> Option<ResourceId> {
        let collections = lock(&self.collections);
        if let Some(legacy) = lock(&self.aliases).get(&names.id) {
            if collections.contains(legacy) {
                return Some(legacy.clone());
            }
        }
        collections.contains(&names.id).then(|| names.id.clone())
    }
    /// Remembers that the legacy collection `actual` exists and stands for `names.id`.
    pub fn remember_alias(&self, names: &CollectionNames, actual: &ResourceId) {
        lock(&self.aliases).insert(names.id.clone(), actual.clone());
        self.remember_collection(actual);
    }
    /// A cached Disk GET no older than `ttl` (`Some(None)` = the disk was not found).
    pub fn disk(
        &self,
        id: &ResourceId,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Option<Option<DiskInfo>> {
        let disks = lock(&self.disks);
        let (at, info) = disks.get(id)?;
        (now - *at <= ttl).then(|| info.clone())
    }
    pub fn remember_disk(&self, id: &ResourceId, now: OffsetDateTime, info: Option<DiskInfo>) {
        lock(&self.disks).insert(id.clone(), (now, info));
    }
    /// Until when copies into `region` of `subscription` should not be asked for, when a copy
    /// there was refused (429) after `now`'s reading; `None`: ask. A stale or missing entry
    /// costs one more refused PUT, never a wrong write.
    pub fn copies_refused_until(
        &self,
        subscription: &str,
        region: &str,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let key = copy_gate_key(subscription, region);
        let (until, _) = *lock(&self.copies_refused).get(&key)?;
        (until > now).then_some(until)
    }
    /// Compute refused a copy into `region` of `subscription` at `now`, asking to wait
    /// `retry_after`. The hold doubles with each refusal in a row this process meets there (up
    /// to 4 × `retry_after`): a region that stays full is asked less and less often by each
    /// instance, and every instance asks on its own. Returns until when copies there are held.
    pub fn remember_copies_refused(
        &self,
        subscription: &str,
        region: &str,
        now: OffsetDateTime,
        retry_after: Duration,
    ) -> OffsetDateTime {
        let mut gates = lock(&self.copies_refused);
        let (until, in_a_row) = gates
            .entry(copy_gate_key(subscription, region))
            .or_insert((now, 0));
        *in_a_row = in_a_row.saturating_add(1);
        let hold = retry_after.saturating_mul(1 << (*in_a_row - 1).min(2));
        *until = (*until).max(after(now, hold));
        *until
    }
    /// A copy into `region` of `subscription` was accepted: the region has room again.
    pub fn forget_copies_refused(&self, subscription: &str, region: &str) {
        lock(&self.copies_refused).remove(&copy_gate_key(subscription, region));
    }
    /// The lane copy PUTs into `region` of `subscription` take one at a time on this process.
    pub fn copy_lane(&self, subscription: &str, region: &str) -> CopyLane {
        lock(&self.copy_lanes)
            .entry(copy_gate_key(subscription, region))
            .or_default()
            .clone()
    }
}

/// The turn copy PUTs into one (subscription, region) take on this process.
pub type CopyLane = std::sync::Arc<tokio::sync::Mutex<()>>;

fn copy_gate_key(subscription: &str, region: &str) -> (String, String) {
    (
        subscription.to_ascii_lowercase(),
        region.to_ascii_lowercase(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
