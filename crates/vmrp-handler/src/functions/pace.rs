//! Pacing for every ARM caller, not only the timer: before a handler spends ARM calls it asks
//! [`decide`] whether the subscription's bucket, as ARM last reported it
//! (`x-ms-ratelimit-remaining-subscription-reads` / `-writes` / `-deletes`, kept per
//! subscription by the ARM client), still has room for it beside the share other tools keep and
//! the other handler instances acting on the same reading. If not, the handler puts its message
//! back on the queue for later (a scheduled re-enqueue with a deterministic message id) instead
//! of calling ARM, so the polls and retries that pile up during an outage do not all meet ARM's
//! buckets at once when it ends.
//!
//! ARM's buckets (reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s per subscription) are
//! described in "Understand how Azure Resource Manager throttles requests"
//! (<https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>).

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::azure::RateLimits;

/// Which of a subscription's ARM buckets a step spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Reads,
    Writes,
    Deletes,
}

impl Bucket {
    /// ARM's size and refill per second of the bucket (the defaults of the page cited above).
    pub fn spec(self) -> (u32, f64) {
        match self {
            Bucket::Reads => (250, 25.0),
            Bucket::Writes | Bucket::Deletes => (200, 10.0),
        }
    }

    /// The bucket's remaining count in `limits`.
    pub fn remaining(self, limits: &RateLimits) -> Option<u32> {
        match self {
            Bucket::Reads => limits.remaining_reads,
            Bucket::Writes => limits.remaining_writes,
            Bucket::Deletes => limits.remaining_deletes,
        }
    }

    /// ARM's `Date` on the response that carried the bucket's reading in `limits` (not the
    /// last response's: that may be about another bucket).
    pub fn reported_at(self, limits: &RateLimits) -> Option<OffsetDateTime> {
        match self {
            Bucket::Reads => limits.reads_at,
            Bucket::Writes => limits.writes_at,
            Bucket::Deletes => limits.deletes_at,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Reads => "reads",
            Bucket::Writes => "writes",
            Bucket::Deletes => "deletes",
        }
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceInput {
    pub bucket: Bucket,
    /// What ARM last reported left in the subscription's bucket, and ARM's `Date` on that
    /// response. `None`: no reading yet (nothing to go by, so go).
    pub remaining: Option<u32>,
    pub reported_at: Option<OffsetDateTime>,
    /// The invocation's clock.
    pub now: OffsetDateTime,
    /// The share of the bucket vmrp may use (`VMRP_ARM_SHARE`): the rest stays for other tools.
    pub share: f64,
    /// How many handler instances may act on the same reading at once (`VMRP_INSTANCES`).
    pub instances: u32,
    /// Calls of that bucket the step is about to make.
    pub cost: u32,
}

/// What a handler does with its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Go,
    /// Put the message back for this long instead of calling ARM.
    Wait(Duration),
}

/// Shortest spread of the waits of messages that found the bucket low together: enough for
/// ARM's read refill to serve a few thousand of them without their meeting again.
pub const MIN_SPREAD: Duration = Duration::from_secs(60);
/// Longest wait: a message waits at most this long per decision (the next decision may wait
/// again if the bucket is still low).
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Go, or wait. The reading is aged by ARM's refill since ARM's `Date` on it (a reading without
/// a date cannot be aged and is not acted on: waiting on it could wait forever, as no call of
/// this instance would renew it). vmrp may spend down to the floor others keep
/// (`capacity × (1 − share)`), less what the other instances acting on the same reading may
/// spend (`instances × cost`). Below that, it waits for vmrp's share of the refill to make up
/// the deficit, plus a spread from the message id (`key`) so that messages refused together
/// come back apart, and the same message always gets the same wait (replays stay idempotent).
pub fn decide(input: &PaceInput, key: &str) -> Pace {
    let (Some(remaining), Some(at)) = (input.remaining, input.reported_at) else {
        return Pace::Go;
    };
    let (capacity, refill) = input.bucket.spec();
    let capacity = f64::from(capacity);
    let share = input.share.clamp(0.01, 1.0);
    // ARM's `Date` has whole seconds, cut down: the reading may be up to a second younger than
    // it says, and a second of refill (25 reads) is more than the instances' headroom.
    let age = (input.now - at - time::Duration::SECOND)
        .as_seconds_f64()
        .max(0.0);
    let estimated = (f64::from(remaining) + age * refill).min(capacity);
    let floor = capacity * (1.0 - share);
    let need = floor + f64::from(input.instances.max(1)) * f64::from(input.cost.max(1));
    // Whatever the share, a step needing more than the whole bucket goes when it is full.
    let need = need.min(capacity);
    if estimated >= need {
        return Pace::Go;
    }
    // The deficit at vmrp's share of the refill, plus the second the reading's date may hide.
    let base = (need - estimated) / (refill * share) + 1.0;
    let spread = base.max(MIN_SPREAD.as_secs_f64());
    let wait = base + unit(key) * spread;
    Pace::Wait(Duration::from_secs_f64(wait.min(MAX_WAIT.as_secs_f64())))
}

/// A number in `[0, 1)` from `key`, the same every time.
fn unit(key: &str) -> f64 {
    let digest = Sha256::digest(key.to_ascii_lowercase().as_bytes());
    // Invariant: a SHA-256 digest has 32 bytes, so its first 8 form a u64.
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 08:00:00 UTC);

    fn input(bucket: Bucket, remaining: Option<u32>, age_s: i64) -> PaceInput {
        PaceInput {
            bucket,
            remaining,
            reported_at: Some(NOW - time::Duration::seconds(age_s)),
            now: NOW,
            share: 0.95,
            instances: 4,
            cost: 1,
        }
    }

    #[test]
    fn decides_from_the_aged_reading_the_share_and_the_instances() {
        // (case, input, go?)
        let with = |f: &dyn Fn(&mut PaceInput)| {
            let mut i = input(Bucket::Reads, Some(20), 0);
            f(&mut i);
            i
        };
        let table: Vec<(&str, PaceInput, bool)> = vec![
            ("no reading", input(Bucket::Reads, None, 0), true),
            (
                "a reading without ARM's date",
                with(&|i| i.reported_at = None),
                true,
            ),
            ("full bucket", input(Bucket::Reads, Some(250), 0), true),
            // floor = 250 × 0.05 = 12.5; need = 12.5 + 4 × 1 = 16.5
            (
                "above floor + headroom",
                input(Bucket::Reads, Some(17), 0),
                true,
            ),
            (
                "below floor + headroom",
                input(Bucket::Reads, Some(16), 0),
                false,
            ),
            ("empty", input(Bucket::Reads, Some(0), 0), false),
            (
                "empty, dated a second ago: maybe taken just now (Date has whole seconds)",
                input(Bucket::Reads, Some(0), 1),
                false,
            ),
            (
                "empty but 2 s old: at least 25 refilled",
                input(Bucket::Reads, Some(0), 2),
                true,
            ),
            (
                "a share of 0.5 keeps 125 for others",
                with(&|i| {
                    i.share = 0.5;
                    i.remaining = Some(128);
                }),
                false,
            ),
            (
                "more instances need more headroom",
                with(&|i| {
                    i.instances = 10;
                    i.remaining = Some(20);
                }),
                false,
            ),
            (
                "a costlier step needs more headroom",
                with(&|i| {
                    i.cost = 5;
                    i.remaining = Some(20);
                }),
                false,
            ),
            (
                "writes refill at 10/s: 3 s old (2 s for sure), 0 left is 20",
                PaceInput {
                    bucket: Bucket::Writes,
                    ..input(Bucket::Writes, Some(0), 3)
                },
                true,
            ),
            (
                "writes: floor 10 + 4",
                input(Bucket::Writes, Some(13), 0),
                false,
            ),
            (
                "a clock behind ARM's counts as a fresh reading",
                input(Bucket::Reads, Some(0), -30),
                false,
            ),
            (
                "a step that needs more than the bucket goes when it is full",
                with(&|i| {
                    i.cost = 1000;
                    i.remaining = Some(250);
                }),
                true,
            ),
        ];
        for (case, i, go) in table {
            let got = decide(&i, "m-1");
            assert_eq!(got == Pace::Go, go, "{case}: {got:?}");
        }
    }

    #[test]
    fn the_wait_covers_the_deficit_and_spreads_by_message_id() {
        // Empty read bucket: need 16.5, share of the refill 23.75/s → base ≈ 0.69 s, plus the
        // second ARM's `Date` may hide.
        let i = input(Bucket::Reads, Some(0), 0);
        let waits: Vec<Duration> = (0..200)
            .map(|n| match decide(&i, &format!("poll-{n}")) {
                Pace::Wait(d) => d,
                Pace::Go => panic!("an empty bucket must wait"),
            })
            .collect();
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(*min >= Duration::from_secs(1), "{min:?}");
        assert!(*max <= Duration::from_secs(62), "{max:?}");
        assert!(
            *max - *min > Duration::from_secs(45),
            "spread out: {min:?}..{max:?}"
        );
        // Deterministic per message id.
        assert_eq!(decide(&i, "poll-7"), decide(&i, "POLL-7"));
        assert_eq!(decide(&i, "poll-7"), decide(&i, "poll-7"));
        // After waiting, the same reading (no call of this instance renewed it) lets it go.
        for d in waits {
            let later = PaceInput { now: NOW + d, ..i };
            assert_eq!(decide(&later, "again"), Pace::Go, "after {d:?}");
        }
        // A small share of a large deficit waits long, never past MAX_WAIT.
        let slow = PaceInput { share: 0.01, ..i };
        match decide(&slow, "x") {
            Pace::Wait(d) => assert!(d > Duration::from_secs(60) && d <= MAX_WAIT, "{d:?}"),
            Pace::Go => panic!("must wait"),
        }
    }
}
