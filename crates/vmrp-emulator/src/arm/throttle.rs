//! ARM's request throttling: one token bucket per (subscription, ARM region, operation class),
//! refilled by VIRTUAL time, with ARM's default sizes (reads 250 + 25/s, writes and deletes
//! 200 + 10/s; CONTRACT.md §6).
//!
//! Which region is charged: ARM applies its limits per ARM *instance* region, i.e. where the
//! caller's request lands, not where the resource lives. One client talks to one ARM front door,
//! so the emulator charges every request of a subscription to [`ThrottleConfig::arm_region`]
//! (default `"local"`), whatever the resource's location. Buckets are therefore effectively per
//! (subscription, class); the region stays in the key to keep the model honest.
//!
//! **Other tools share the budget** ([`BackgroundLoad`], `--background-load F`). ARM applies the
//! subscription limits "per subscription, per service principal, and per operation type", plus
//! global subscription limits of 15 times those "across all service principals"; a request is
//! throttled when either is exceeded
//! (<https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>).
//! The emulator keeps one bucket per subscription and class (vmrp's principal); F stands for what
//! others take from what vmrp can count on: work under the same identity, or the subscription's
//! global bucket running low when Azure Policy, Defender, Terraform and Backup are busy. How the
//! two buckets interact in detail is not documented; this model is the simple reading: each
//! bucket keeps `1 − F` of its capacity and refill for vmrp, so the
//! `x-ms-ratelimit-remaining-subscription-*` headers report less and 429s come earlier. Bursty
//! load (`F:bursty`, F ≤ 0.5) spends `2F` for the first half of every [`BURST_PERIOD_SECS`]
//! virtual seconds and nothing in the second half (the same F on average):
//! when a burst starts, the tokens above the smaller capacity are gone.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The three operation classes ARM meters separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpClass {
    Reads,
    Writes,
    Deletes,
}

impl OpClass {
    /// GET/HEAD read, DELETE deletes, everything else writes.
    pub fn of_method(method: &http::Method) -> Self {
        match *method {
            http::Method::GET | http::Method::HEAD => Self::Reads,
            http::Method::DELETE => Self::Deletes,
            _ => Self::Writes,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Writes => "writes",
            Self::Deletes => "deletes",
        }
    }
    /// `x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}`.
    pub fn remaining_header(self) -> &'static str {
        match self {
            Self::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
    /// The singular ARM uses in its throttling message ("Number of 'write' requests ...").
    pub fn singular(self) -> &'static str {
        match self {
            Self::Reads => "read",
            Self::Writes => "write",
            Self::Deletes => "delete",
        }
    }
}

/// Size and refill rate of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

impl BucketSpec {
    /// This spec with `factor` of its capacity and refill (what vmrp keeps of a shared bucket).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            capacity: self.capacity * factor,
            refill_per_sec: self.refill_per_sec * factor,
        }
    }
}

/// The length (virtual seconds) of one burst cycle of [`BackgroundLoad::bursty`]: other tools
/// spend twice their share for the first half, nothing for the second.
pub const BURST_PERIOD_SECS: i64 = 120;

/// The share of every bucket that other tools spend (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackgroundLoad {
    /// Average share of capacity and refill spent by others, `0 <= share < 1`.
    pub share: f64,
    /// Spent in bursts (twice the share half of the time) instead of steadily.
    pub bursty: bool,
}

impl BackgroundLoad {
    /// `F` (steady) or `F:bursty` / `F:steady`, `0 <= F < 1` (bursty: `F <= 0.5`, since twice
    /// the share cannot exceed the whole bucket).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (number, mode) = match text.split_once(':') {
            Some((n, m)) => (n.trim(), m.trim()),
            None => (text.trim(), "steady"),
        };
        let share: f64 = number.parse().map_err(|_| {
            format!(
                "{text:?}: give the share other tools spend as a number, e.g. 0.3 or 0.3:bursty"
            )
        })?;
        let bursty = match mode {
            "steady" => false,
            "bursty" => true,
            other => {
                return Err(format!(
                    "{text:?}: unknown mode {other:?} (steady or bursty)"
                ))
            }
        };
        let load = Self { share, bursty };
        load.validate().map_err(|e| format!("{text:?}: {e}"))?;
        Ok(load)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.share.is_finite() && (0.0..1.0).contains(&self.share)) {
            return Err(format!(
                "the share must be at least 0 and below 1, got {}",
                self.share
            ));
        }
        if self.bursty && self.share > 0.5 {
            return Err(format!(
                "bursty load spends twice its share half of the time: at most 0.5, got {}",
                self.share
            ));
        }
        Ok(())
    }

    /// The share other tools spend at virtual `now`.
    pub fn share_at(&self, now: OffsetDateTime) -> f64 {
        if !self.bursty {
            return self.share;
        }
        let phase = now.unix_timestamp().rem_euclid(BURST_PERIOD_SECS);
        if phase < BURST_PERIOD_SECS / 2 {
            (2.0 * self.share).min(1.0)
        } else {
            0.0
        }
    }
}

/// Throttling settings (defaults = ARM's documented limits since 2024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThrottleConfig {
    pub enabled: bool,
    pub reads: BucketSpec,
    pub writes: BucketSpec,
    pub deletes: BucketSpec,
    /// The ARM instance region every request is charged to (see the module doc).
    pub arm_region: String,
    /// The share of every bucket other tools spend (module doc); 0 by default.
    pub background: BackgroundLoad,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads: BucketSpec {
                capacity: 250.0,
                refill_per_sec: 25.0,
            },
            writes: BucketSpec {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            deletes: BucketSpec {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            arm_region: "local".to_string(),
            background: BackgroundLoad::default(),
        }
    }
}

impl ThrottleConfig {
    pub fn spec(&self, class: OpClass) -> BucketSpec {
        match class {
            OpClass::Reads => self.reads,
            OpClass::Writes => self.writes,
            OpClass::Deletes => self.deletes,
        }
    }
}

/// One token bucket; `tokens` is as of `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: OffsetDateTime,
}

/// What a bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; tokens left after this request (floor).
    Admitted { remaining: u32 },
    /// Refused: whole seconds (ceil, at least 1) until a token is available.
    Throttled { retry_after_secs: u64 },
}

impl Bucket {
    pub fn full(spec: BucketSpec, now: OffsetDateTime) -> Self {
        Self {
            tokens: spec.capacity,
            at: now,
        }
    }

    /// Refills by the virtual time elapsed since the last call, then takes one token if it can.
    pub fn take(&mut self, spec: BucketSpec, now: OffsetDateTime) -> Admission {
        let elapsed = (now - self.at).as_seconds_f64().max(0.0);
        self.tokens = (self.tokens + elapsed * spec.refill_per_sec).min(spec.capacity);
        if now > self.at {
            self.at = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Admitted {
                remaining: self.tokens.floor().max(0.0) as u32,
            }
        } else {
            let missing = 1.0 - self.tokens;
            let secs = if spec.refill_per_sec > 0.0 {
                (missing / spec.refill_per_sec).ceil().max(1.0)
            } else {
                3600.0
            };
            Admission::Throttled {
                retry_after_secs: secs as u64,
            }
        }
    }
}

/// All buckets of the emulator.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: HashMap<(String, String, OpClass), Bucket>,
}

impl Throttle {
    /// Charges one request of `class` for `subscription` (case-insensitive) at virtual `now`.
    pub fn admit(
        &mut self,
        config: &ThrottleConfig,
        subscription: &str,
        class: OpClass,
        now: OffsetDateTime,
    ) -> Admission {
        let share = config.background.share_at(now);
        let spec = config.spec(class).scaled(1.0 - share);
        let key = (
            subscription.to_ascii_lowercase(),
            config.arm_region.to_ascii_lowercase(),
            class,
        );
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(spec, now));
        if !config.enabled {
            return Admission::Admitted {
                remaining: spec.capacity as u32,
            };
        }
        bucket.take(spec, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn drains_then_refuses_with_ceil_retry_after_then_refills() {
        let spec = BucketSpec {
            capacity: 3.0,
            refill_per_sec: 0.5,
        };
        let mut b = Bucket::full(spec, T0);
        assert_eq!(b.take(spec, T0), Admission::Admitted { remaining: 2 });
        assert_eq!(b.take(spec, T0), Admission::Admitted { remaining: 1 });
        assert_eq!(b.take(spec, T0), Admission::Admitted { remaining: 0 });
        // Needs one token at 0.5/s: 2 s.
        assert_eq!(
            b.take(spec, T0),
            Admission::Throttled {
                retry_after_secs: 2
            }
        );
        // 1 s later half a token: still refused, 1 s more to wait.
        let t1 = T0 + time::Duration::seconds(1);
        assert_eq!(
            b.take(spec, t1),
            Admission::Throttled {
                retry_after_secs: 1
            }
        );
        let t2 = T0 + time::Duration::seconds(2);
        assert_eq!(b.take(spec, t2), Admission::Admitted { remaining: 0 });
        // Never above capacity.
        let later = T0 + time::Duration::hours(1);
        assert_eq!(b.take(spec, later), Admission::Admitted { remaining: 2 });
    }

    #[test]
    fn classes_and_subscriptions_have_separate_buckets() {
        let cfg = ThrottleConfig {
            writes: BucketSpec {
                capacity: 1.0,
                refill_per_sec: 1.0,
            },
            ..Default::default()
        };
        let mut t = Throttle::default();
        assert!(matches!(
            t.admit(&cfg, "s1", OpClass::Writes, T0),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            t.admit(&cfg, "S1", OpClass::Writes, T0),
            Admission::Throttled { .. }
        ));
        assert!(matches!(
            t.admit(&cfg, "s2", OpClass::Writes, T0),
            Admission::Admitted { .. }
        ));
        assert_eq!(
            t.admit(&cfg, "s1", OpClass::Reads, T0),
            Admission::Admitted { remaining: 249 }
        );
    }

    #[test]
    fn background_load_leaves_less_remaining_and_throttles_earlier() {
        let cfg = |share: f64| ThrottleConfig {
            background: BackgroundLoad {
                share,
                bursty: false,
            },
            ..Default::default()
        };
        // Writes: 200 + 10/s alone; with 30 % spent by others 140 + 7/s.
        let admitted_at_once = |share: f64| {
            let (cfg, mut t) = (cfg(share), Throttle::default());
            let first = t.admit(&cfg, "s", OpClass::Writes, T0);
            let mut n = 1;
            while matches!(
                t.admit(&cfg, "s", OpClass::Writes, T0),
                Admission::Admitted { .. }
            ) {
                n += 1;
            }
            (first, n)
        };
        assert_eq!(
            admitted_at_once(0.0),
            (Admission::Admitted { remaining: 199 }, 200)
        );
        assert_eq!(
            admitted_at_once(0.3),
            (Admission::Admitted { remaining: 139 }, 140)
        );
        // Refill at 7/s: 10 s later 70 tokens, not 100.
        let (cfg, mut t) = (cfg(0.3), Throttle::default());
        while matches!(
            t.admit(&cfg, "s", OpClass::Writes, T0),
            Admission::Admitted { .. }
        ) {}
        assert_eq!(
            t.admit(&cfg, "s", OpClass::Writes, T0 + time::Duration::seconds(10)),
            Admission::Admitted { remaining: 69 }
        );
    }

    #[test]
    fn bursty_load_spends_twice_the_share_half_of_the_time() {
        let load = BackgroundLoad {
            share: 0.3,
            bursty: true,
        };
        // T0 is a multiple of the period: the burst half first.
        assert_eq!(load.share_at(T0), 0.6);
        assert_eq!(load.share_at(T0 + time::Duration::seconds(59)), 0.6);
        assert_eq!(load.share_at(T0 + time::Duration::seconds(60)), 0.0);
        assert_eq!(load.share_at(T0 + time::Duration::seconds(120)), 0.6);
        let cfg = ThrottleConfig {
            background: load,
            ..Default::default()
        };
        let mut t = Throttle::default();
        // In a burst a full read bucket shows 40 % of 250.
        assert_eq!(
            t.admit(&cfg, "s", OpClass::Reads, T0),
            Admission::Admitted { remaining: 99 }
        );
        // Out of it, the bucket refills towards all 250.
        assert_eq!(
            t.admit(&cfg, "s", OpClass::Reads, T0 + time::Duration::seconds(65)),
            Admission::Admitted { remaining: 249 }
        );
    }

    #[test]
    fn background_load_parses_and_is_validated() {
        assert_eq!(
            BackgroundLoad::parse("0.3").unwrap(),
            BackgroundLoad {
                share: 0.3,
                bursty: false
            }
        );
        assert_eq!(
            BackgroundLoad::parse("0.25:bursty").unwrap(),
            BackgroundLoad {
                share: 0.25,
                bursty: true
            }
        );
        assert!(BackgroundLoad::parse("0").is_ok());
        for bad in ["1", "-0.1", "NaN", "x", "0.3:sometimes", "0.6:bursty"] {
            assert!(BackgroundLoad::parse(bad).is_err(), "{bad}");
        }
        assert!(BackgroundLoad::parse("1").unwrap_err().contains("below 1"));
    }

    #[test]
    fn disabled_never_throttles() {
        let cfg = ThrottleConfig {
            enabled: false,
            ..Default::default()
        };
        let mut t = Throttle::default();
        for _ in 0..1000 {
            assert!(matches!(
                t.admit(&cfg, "s", OpClass::Deletes, T0),
                Admission::Admitted { .. }
            ));
        }
    }

    #[test]
    fn class_of_method() {
        assert_eq!(OpClass::of_method(&http::Method::GET), OpClass::Reads);
        assert_eq!(OpClass::of_method(&http::Method::PUT), OpClass::Writes);
        assert_eq!(OpClass::of_method(&http::Method::PATCH), OpClass::Writes);
        assert_eq!(OpClass::of_method(&http::Method::DELETE), OpClass::Deletes);
    }
}
