//! Read pacing for `vmrp status` and `vmrp plan`: at 5,000 VMs they read a collection (and, for
//! `plan`, a disk) per VM, thousands of reads against a subscription's read bucket that the
//! handlers spend too (ARM: 250 reads, refilled at 25/s, per subscription; docs/emulator-arm.md).
//! Unpaced, such a command drains the bucket in seconds and the handlers, and the command
//! itself, meet 429s.
//!
//! [`PacedArm`] wraps the command's ARM client. After each response it reads what ARM reported
//! left in that subscription's read bucket (`x-ms-ratelimit-remaining-subscription-reads`,
//! `Arm::rate_limits_for`) and learns the bucket's size as the most it has seen left. Before
//! each read it estimates what is left now (the last reading plus ARM's refill since) and waits
//! until a read leaves at least `1 - share` of the bucket: the command uses at most `share` of
//! each subscription's burst, and the rest stays for the handlers. The wait uses ARM's refill
//! rate; when the handlers spend at the same time, the next reading is lower and the command
//! waits longer, so the two together stay under the bucket. A progress bar on stderr (only when
//! stderr is a terminal and the output is not `--json`) counts the reads and the time spent
//! waiting for budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::azure::models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};
use crate::azure::{Accepted, Arm, ArmError, RateLimits, ResourceId, VmScope};

/// ARM's read refill per subscription (reads per second), the rate a bucket is assumed to
/// refill at between two readings (docs/emulator-arm.md, "Throttling").
pub const ARM_READ_REFILL_PER_SEC: f64 = 25.0;

/// The default share of each subscription's read bucket `status` and `plan` may use.
pub const DEFAULT_READ_SHARE: f64 = 0.5;

/// What the pacer knows of one subscription's read bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Reads left at the last reading.
    left: f64,
    /// When it was read.
    at: Instant,
    /// The most ever seen left: the bucket's size, as far as the pacer can tell.
    size: f64,
}

/// An [`Arm`] whose reads are paced from ARM's remaining-reads headers (see the module doc).
pub struct PacedArm<A> {
    inner: A,
    share: f64,
    refill_per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    waited: Mutex<Duration>,
    bar: Option<indicatif::ProgressBar>,
}

impl<A: Arm> PacedArm<A> {
    /// Paces `inner`'s reads to at most `share` (0 < share ≤ 1) of each subscription's read
    /// bucket; `progress` shows a bar on stderr.
    pub fn new(inner: A, share: f64, progress: bool) -> Self {
        let bar = progress.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ARM reads  {msg}",
                )
                // Invariant: a constant template.
                .expect("valid template"),
            );
            bar
        });
        Self {
            inner,
            share: share.clamp(0.01, 1.0),
            refill_per_sec: ARM_READ_REFILL_PER_SEC,
            buckets: Mutex::new(HashMap::new()),
            waited: Mutex::new(Duration::ZERO),
            bar,
        }
    }

    /// The client inside.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Adds `n` reads the command expects to make to the progress bar's length.
    pub fn expect_reads(&self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc_length(n as u64);
        }
    }

    /// How long the reads waited for budget in all.
    pub fn waited(&self) -> Duration {
        *self.waited.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clears the progress bar (before the command prints its table).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// How long a read in `subscription` must wait at `now` (pure: see [`wait_for`]).
    fn wait_before(&self, subscription: &str, now: Instant) -> Duration {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.get(subscription).map_or(Duration::ZERO, |b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            wait_for(b.left, b.size, elapsed, self.refill_per_sec, self.share)
        })
    }

    /// Waits until a read in `subscription` keeps the headroom.
    async fn before(&self, subscription: &str) {
        let sub = subscription.to_ascii_lowercase();
        let wait = self.wait_before(&sub, Instant::now());
        if wait > Duration::ZERO {
            if let Some(bar) = &self.bar {
                bar.set_message(format!(
                    "waiting {:.1}s for ARM's read budget in {sub}",
                    wait.as_secs_f64()
                ));
            }
            tokio::time::sleep(wait).await;
            *self.waited.lock().unwrap_or_else(|e| e.into_inner()) += wait;
        }
    }

    /// Records what ARM reported left after a read in `subscription`.
    fn after(&self, subscription: &str) {
        let sub = subscription.to_ascii_lowercase();
        let reported = self.inner.rate_limits_for(&sub).remaining_reads;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match (reported, buckets.get_mut(&sub)) {
            (Some(left), Some(b)) => {
                b.left = f64::from(left);
                b.at = now;
                b.size = b.size.max(b.left + 1.0);
            }
            (Some(left), None) => {
                let left = f64::from(left);
                buckets.insert(
                    sub,
                    Bucket {
                        left,
                        at: now,
                        size: left + 1.0,
                    },
                );
            }
            // No header: count the read against the estimate.
            (None, Some(b)) => b.left -= 1.0,
            (None, None) => {}
        }
        if let Some(bar) = &self.bar {
            if bar.position() >= bar.length().unwrap_or(0) {
                bar.inc_length(1);
            }
            bar.inc(1);
        }
    }

    async fn read<T>(
        &self,
        subscription: &str,
        call: impl std::future::Future<Output = Result<T, ArmError>>,
    ) -> Result<T, ArmError> {
        self.before(subscription).await;
        let out = call.await;
        self.after(subscription);
        out
    }
}

/// How long to wait before one more read, when `left` reads were reported left in a bucket of
/// `size`, `elapsed` seconds ago, the bucket refilling at `refill` per second, and the command
/// may take it down to `size · (1 - share)` and no lower.
pub fn wait_for(left: f64, size: f64, elapsed: f64, refill: f64, share: f64) -> Duration {
    let floor = size * (1.0 - share.clamp(0.0, 1.0));
    let now_left = (left + elapsed * refill).min(size);
    // After this read, at least `floor` must be left.
    let missing = floor + 1.0 - now_left;
    if missing <= 0.0 || refill <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_millis((missing / refill * 1000.0).ceil() as u64)
}

fn sub_of(scope: &VmScope) -> &str {
    match scope {
        VmScope::Subscription(s) => s,
        VmScope::ResourceGroup { subscription, .. } => subscription,
    }
}

#[async_trait]
impl<A: Arm> Arm for PacedArm<A> {
    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        self.read(id.subscription(), self.inner.get_vm(id)).await
    }
    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        self.read(sub_of(scope), self.inner.list_vms(scope)).await
    }
    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        self.read(id.subscription(), self.inner.get_disk(id)).await
    }
    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        self.read(sub_of(scope), self.inner.list_disks(scope)).await
    }
    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        self.inner.put_collection(id, body).await
    }
    async fn get_collection(
        &self,
        id: &ResourceId,
        expand: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        self.read(id.subscription(), self.inner.get_collection(id, expand))
            .await
    }
    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let out = self
            .read(subscription, self.inner.list_collections(subscription))
            .await;
        // Each collection is read once more (with its points) by the inventory.
        if let Ok(list) = &out {
            self.expect_reads(list.len());
        }
        out
    }
    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        self.read(
            subscription,
            self.inner
                .list_collections_in_group(subscription, resource_group),
        )
        .await
    }
    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        self.inner.delete_collection(id).await
    }
    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        self.inner.create_restore_point(id, body).await
    }
    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        self.read(
            id.subscription(),
            self.inner.get_restore_point(id, instance_view),
        )
        .await
    }
    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        self.inner.delete_restore_point(id).await
    }
    fn rate_limits(&self) -> RateLimits {
        self.inner.rate_limits()
    }
    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        self.inner.rate_limits_for(subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_waits_only_when_it_would_eat_into_the_handlers_share() {
        let ms = |d: Duration| d.as_millis();
        // (left, size, elapsed s, share) → wait ms at 25/s.
        let table = [
            // A full bucket: go.
            (249.0, 250.0, 0.0, 0.5, 0),
            // At the floor (125 of 250 kept for the handlers): one read needs one refill.
            (125.0, 250.0, 0.0, 0.5, 40),
            // Below it: wait for the missing reads to refill.
            (100.0, 250.0, 0.0, 0.5, 1040),
            // Time since the reading counts as refill.
            (100.0, 250.0, 1.0, 0.5, 40),
            // A small bucket (an emulator's): its own half.
            (10.0, 20.0, 0.0, 0.5, 40),
            // The whole bucket allowed: wait only when nothing is left.
            (0.0, 250.0, 0.0, 1.0, 40),
            (5.0, 250.0, 0.0, 1.0, 0),
        ];
        for (left, size, elapsed, share, want) in table {
            assert_eq!(
                ms(wait_for(left, size, elapsed, 25.0, share)),
                want,
                "{left} of {size}, {elapsed}s ago, share {share}"
            );
        }
    }
}
