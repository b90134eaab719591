//! ARM's request throttling: one token bucket per (subscription, ARM region, operation class),
//! refilled by VIRTUAL time, with ARM's default sizes (reads 250 + 25/s, writes and deletes
//! 200 + 10/s; CONTRACT.md §6).
//!
//! Which region is charged: ARM applies its limits per ARM *instance* region, i.e. where the
//! caller's request lands, not where the resource lives. One client talks to one ARM front door,
//! so the emulator charges every request of a subscription to [`ThrottleConfig::arm_region`]
//! (default `"local"`), whatever the resource's location. Buckets are therefore effectively per
//! (subscription, class); the region stays in the key to keep the model honest.

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
        let spec = config.spec(class);
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
