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
    /// (subscription, target region), lowercase → what this process knows of Compute refusing
    /// copies there (a copy PUT answered 429: the region's disk copies in flight are at their
    /// limit).
    copies_refused: Mutex<HashMap<(String, String), CopyGate>>,
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
    /// there was refused (429) after `now`'s reading and no copy seen finishing there since
    /// left room; `None`: ask. A stale or missing entry costs one more refused PUT, never a
    /// wrong write.
    pub fn copies_refused_until(
        &self,
        subscription: &str,
        region: &str,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let key = copy_gate_key(subscription, region);
        match lock(&self.copies_refused).get(&key)?.turn(now) {
            CopyTurn::Held(until) => Some(until),
            CopyTurn::Open | CopyTurn::Room => None,
        }
    }
    /// Whether a copy PUT into `region` of `subscription` may go now, and on what ground; a
    /// [`CopyTurn::Room`] spends the room it was given. The caller holds the region's
    /// [`copy_lane`](Self::copy_lane), so the check and the spend are one step on this process.
    pub fn take_copy_turn(
        &self,
        subscription: &str,
        region: &str,
        now: OffsetDateTime,
    ) -> CopyTurn {
        let mut gates = lock(&self.copies_refused);
        let Some(gate) = gates.get_mut(&copy_gate_key(subscription, region)) else {
            return CopyTurn::Open;
        };
        let turn = gate.turn(now);
        if turn == CopyTurn::Room {
            gate.room -= 1;
        }
        turn
    }
    /// Compute refused a copy into `region` of `subscription` at `now`, asking to wait
    /// `retry_after`. The hold is [`COPY_HOLD_FACTOR`] × `retry_after`: nothing in a full region
    /// frees before a copy there finishes (an hour or more), so asking again after the bare
    /// `Retry-After` only earns another refusal; the slots finishing copies free are taken
    /// through room ([`copy_finished`](Self::copy_finished)), and the hold only bounds how long
    /// an instance that sees none waits. Room counted before is gone (another instance took
    /// it). Returns until when copies there are held.
    pub fn remember_copies_refused(
        &self,
        subscription: &str,
        region: &str,
        now: OffsetDateTime,
        retry_after: Duration,
    ) -> OffsetDateTime {
        let mut gates = lock(&self.copies_refused);
        let gate = gates
            .entry(copy_gate_key(subscription, region))
            .or_insert(CopyGate {
                until: now,
                hold: retry_after,
                room: 0,
            });
        gate.hold = retry_after.saturating_mul(COPY_HOLD_FACTOR);
        gate.until = gate.until.max(after(now, gate.hold));
        gate.room = 0;
        gate.until
    }
    /// A copy into `region` of `subscription` was accepted on a [`CopyTurn::Open`]: the region
    /// has room again.
    pub fn forget_copies_refused(&self, subscription: &str, region: &str) {
        lock(&self.copies_refused).remove(&copy_gate_key(subscription, region));
    }
    /// A copy into `region` of `subscription` was accepted on a [`CopyTurn::Room`]: the region
    /// is still full but for the slots finishing copies free, so the hold goes on for its
    /// current length from `now` instead of ending in a probe that would likely be refused.
    pub fn copy_took_room(&self, subscription: &str, region: &str, now: OffsetDateTime) {
        if let Some(gate) = lock(&self.copies_refused).get_mut(&copy_gate_key(subscription, region))
        {
            gate.until = gate.until.max(after(now, gate.hold));
        }
    }
    /// This process saw a copy into `region` of `subscription` finish (every disk replicated,
    /// or failed): a slot among Compute's copies in flight is free. While copies there are
    /// held, one copy may take it before the hold ends ([`CopyTurn::Room`]); Service Bus spreads
    /// the copies' polls over the instances, so together they refill about as fast as copies
    /// finish, without asking a full region again and again.
    pub fn copy_finished(&self, subscription: &str, region: &str) {
        if let Some(gate) = lock(&self.copies_refused).get_mut(&copy_gate_key(subscription, region))
        {
            gate.room = (gate.room + 1).min(MAX_ROOM);
        }
    }
    /// The lane copy PUTs into `region` of `subscription` take one at a time on this process.
    pub fn copy_lane(&self, subscription: &str, region: &str) -> CopyLane {
        lock(&self.copy_lanes)
            .entry(copy_gate_key(subscription, region))
            .or_default()
            .clone()
    }
}

/// What this process knows of a region refusing copies.
#[derive(Debug, Clone, Copy)]
struct CopyGate {
    /// Copies there wait until then (unless there is room).
    until: OffsetDateTime,
    /// The hold's length ([`COPY_HOLD_FACTOR`] × the last `Retry-After`).
    hold: Duration,
    /// Copies this process saw finish there since the last refusal, not yet taken.
    room: u32,
}

/// A region that refused a copy is held this many times its `Retry-After` (Compute's 600 s:
/// 40 min). Doubling from the bare `Retry-After` (10, 20, 40 min) asked twice more before
/// any copy there could have finished: 2,045 refusals in the 2,000-VM soak over 20
/// subscriptions, 1.03 % of its ARM requests.
pub const COPY_HOLD_FACTOR: u32 = 4;

impl CopyGate {
    /// Whether a copy PUT may go at `now` (without spending the room).
    fn turn(&self, now: OffsetDateTime) -> CopyTurn {
        if self.until <= now {
            CopyTurn::Open
        } else if self.room > 0 {
            CopyTurn::Room
        } else {
            CopyTurn::Held(self.until)
        }
    }
}

/// At most this many finished copies are kept as room: a process with no copy waiting for the
/// region should not bank a burst that would meet the limit at once.
const MAX_ROOM: u32 = 4;

/// Whether a copy PUT into a region may go now ([`KnownResources::take_copy_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyTurn {
    /// No refusal known, or its hold is over: ask.
    Open,
    /// The region refused copies, but a copy this process saw finish there freed a slot.
    Room,
    /// Held until then.
    Held(OffsetDateTime),
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
