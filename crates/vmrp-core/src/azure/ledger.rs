//! The drill ledger: where each drill's result is kept, one record per VM and region, so `vmrp
//! status` can show the last passed drill after the events have aged out of the logs
//! (docs/restore.md, "Where drill results are kept"). In Azure it is a Table storage table in
//! the app's storage account (`vmrp-azure`'s `table` client); tests use `testing::FakeLedger`.
//!
//! The decisions are pure and here: the entity keys ([`table_keys`]) and how a new result folds
//! into what is stored ([`merge`]). Each implementation of [`DrillLedger::record`] applies
//! [`merge`] to what it read and writes conditionally (ETag `If-Match`, or insert-if-absent), so
//! two instances recording at once cannot lose a newer pass: the loser of the race reads again
//! and merges again.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ResourceId;
use crate::policy::drills::DrillResult;

/// The longest failure reason a record keeps.
pub const MAX_REASON_CHARS: usize = 4000;

/// What the ledger keeps for one VM and region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    /// The VM's ARM id as the drill saw it (the keys are derived from it, lowercased).
    pub vm: String,
    /// Canonical region name (`swedencentral`).
    pub region: String,
    /// A copy region's point (`true`) or the VM's own (`false`).
    pub copy: bool,
    /// The tick of the run that drilled last (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub last_run: OffsetDateTime,
    /// Whether that last drill passed.
    pub last_passed_ok: bool,
    /// Why it failed (absent when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// The point it drilled (absent when none could be chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_point: Option<String>,
    /// The tick of the newest drill that passed: kept when a later drill fails.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_passed: Option<OffsetDateTime>,
    /// The point that newest passed drill restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_point: Option<String>,
    /// Its time to restore, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_seconds: Option<f64>,
}

impl DrillRecord {
    /// The record of one drill of the run at `tick`, before merging with what is stored.
    pub fn of(result: &DrillResult, tick: OffsetDateTime) -> Self {
        Self {
            vm: result.vm.clone(),
            region: result.region.clone(),
            copy: result.copy,
            last_run: tick,
            last_passed_ok: result.passed,
            // A Table string property holds at most 64 KiB; ARM's messages are short, but a
            // reason is cut at 4,000 characters so no message can make the record unwritable.
            last_reason: if result.passed {
                None
            } else {
                Some(
                    result
                        .reason
                        .as_deref()
                        .unwrap_or("no reason")
                        .chars()
                        .take(MAX_REASON_CHARS)
                        .collect(),
                )
            },
            last_point: result.point.clone(),
            last_passed: result.passed.then_some(tick),
            last_passed_point: if result.passed {
                result.point.clone()
            } else {
                None
            },
            last_passed_seconds: if result.passed {
                result.seconds_to_restore
            } else {
                None
            },
        }
    }

    /// The last drill failed after the last pass (or there was never a pass): what `vmrp status`
    /// shows next to the pass.
    pub fn failing_since_pass(&self) -> bool {
        !self.last_passed_ok && self.last_passed.is_none_or(|p| self.last_run > p)
    }
}

/// Folds `incoming` (one drill's [`DrillRecord::of`]) into `stored`: the last-run fields come
/// from whichever ran later (a tie goes to `incoming`, a redelivery of the same run knows more),
/// the last-passed fields from whichever passed later. So a failure never erases a pass, and a
/// record written late by a slow instance never replaces a newer run's.
pub fn merge(stored: Option<&DrillRecord>, incoming: &DrillRecord) -> DrillRecord {
    let Some(stored) = stored else {
        return incoming.clone();
    };
    let mut out = if incoming.last_run >= stored.last_run {
        incoming.clone()
    } else {
        stored.clone()
    };
    let pass = match (stored.last_passed, incoming.last_passed) {
        (Some(s), Some(i)) if s > i => stored,
        (Some(_), None) => stored,
        _ => incoming,
    };
    out.last_passed = pass.last_passed;
    out.last_passed_point = pass.last_passed_point.clone();
    out.last_passed_seconds = pass.last_passed_seconds;
    out
}

/// Characters Azure Table storage forbids in `PartitionKey` and `RowKey`: `/`, `\`, `#`, `?`
/// and control characters (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#characters-disallowed-in-key-fields).
pub fn key_problem(key: &str) -> Option<String> {
    if key.len() > 1024 {
        return Some(format!("{} bytes, above 1 KiB", key.len()));
    }
    key.chars()
        .find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
        .map(|c| format!("contains {c:?}, which Table keys forbid"))
}

/// The entity keys of `vm` in `region`: `PartitionKey` the VM's subscription (lowercase; other
/// characters than letters, digits and `-` become `_`), `RowKey` the region and 32 hex digits
/// of SHA-256 of the lowercase VM id. Deterministic (a redelivery writes the same entity),
/// case-insensitive like ARM ids, and free of every character Table keys forbid (a resource
/// group may hold `(`, `)` and `.`, and the id holds `/`); the id itself is a property.
pub fn table_keys(vm: &str, region: &str) -> (String, String) {
    use sha2::Digest;
    let clean = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let subscription = ResourceId::parse(vm)
        .map(|id| id.subscription().to_string())
        .unwrap_or_default();
    let partition = if subscription.is_empty() {
        "_".to_string()
    } else {
        clean(&subscription)
    };
    let hash: String = sha2::Sha256::digest(vm.to_ascii_lowercase().as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    (partition, format!("{}-{hash}", clean(region)))
}

/// Why the ledger could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("drill ledger {operation} failed: {}{code}: {message}", status.map(|s| format!("HTTP {s} ")).unwrap_or_default())]
pub struct LedgerError {
    /// What we were doing, e.g. `Update Entity`.
    pub operation: String,
    /// HTTP status; `None` when no response arrived.
    pub status: Option<u16>,
    /// The Table service's error code (`odata.error.code`), or a local one.
    pub code: String,
    pub message: String,
}

/// Where drill results are kept. Implemented by the Table storage client (vmrp-azure) and by
/// `testing::FakeLedger`.
#[async_trait]
pub trait DrillLedger: Send + Sync {
    /// Folds `record` into the stored record of its VM and region with [`merge`], written
    /// conditionally so a concurrent writer's newer result is never lost.
    async fn record(&self, record: &DrillRecord) -> Result<(), LedgerError>;
    /// Every record (all pages).
    async fn read_all(&self) -> Result<Vec<DrillRecord>, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-0000000000d1/resourceGroups/rg-App(1).x/providers/Microsoft.Compute/virtualMachines/vm1";

    fn result(passed: bool, point: &str) -> DrillResult {
        DrillResult {
            vm: VM.into(),
            region: "westeurope".into(),
            copy: false,
            point: Some(point.into()),
            passed,
            reason: (!passed).then(|| "timed out".to_string()),
            seconds_to_restore: passed.then_some(12.5),
            disks: Vec::new(),
            cleaned: true,
        }
    }

    const D1: OffsetDateTime = datetime!(2026-12-01 02:30 UTC);
    const D2: OffsetDateTime = datetime!(2026-12-02 02:30 UTC);
    const D3: OffsetDateTime = datetime!(2026-12-03 02:30 UTC);

    /// (stored, incoming) → (last run, last ok, last passed, last passed point).
    #[test]
    fn merge_keeps_the_newest_pass_and_the_newest_run() {
        let pass = |t, p| DrillRecord::of(&result(true, p), t);
        let fail = |t| DrillRecord::of(&result(false, "rp-x"), t);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Option<DrillRecord>,
            DrillRecord,
            (OffsetDateTime, bool, Option<OffsetDateTime>, Option<&str>),
        )> = vec![
            (
                "first record",
                None,
                pass(D1, "rp-1"),
                (D1, true, Some(D1), Some("rp-1")),
            ),
            (
                "first is a failure",
                None,
                fail(D1),
                (D1, false, None, None),
            ),
            (
                "a failure keeps the pass",
                Some(pass(D1, "rp-1")),
                fail(D2),
                (D2, false, Some(D1), Some("rp-1")),
            ),
            (
                "a newer pass replaces the pass",
                Some(pass(D1, "rp-1")),
                pass(D2, "rp-2"),
                (D2, true, Some(D2), Some("rp-2")),
            ),
            (
                "a late writer of an older pass loses to a newer pass",
                Some(pass(D2, "rp-2")),
                pass(D1, "rp-1"),
                (D2, true, Some(D2), Some("rp-2")),
            ),
            (
                "a late writer of an older failure changes nothing",
                Some(pass(D2, "rp-2")),
                fail(D1),
                (D2, true, Some(D2), Some("rp-2")),
            ),
            (
                "an older pass written after a newer failure is kept as the pass",
                Some({
                    let mut r = merge(Some(&pass(D1, "rp-1")), &fail(D3));
                    r.last_passed = Some(D1);
                    r
                }),
                pass(D2, "rp-2"),
                (D3, false, Some(D2), Some("rp-2")),
            ),
            (
                "a redelivery of the same run replaces its result",
                Some(fail(D2)),
                pass(D2, "rp-2"),
                (D2, true, Some(D2), Some("rp-2")),
            ),
        ];
        for (name, stored, incoming, (run, ok, passed, point)) in cases {
            let m = merge(stored.as_ref(), &incoming);
            assert_eq!(
                (
                    m.last_run,
                    m.last_passed_ok,
                    m.last_passed,
                    m.last_passed_point.as_deref()
                ),
                (run, ok, passed, point),
                "{name}"
            );
            // The seconds travel with the pass they belong to.
            assert_eq!(
                m.last_passed_seconds.is_some(),
                m.last_passed.is_some(),
                "{name}"
            );
        }
    }

    /// The fake ledger folds with the same rule: a pass, then a failure, keeps the pass.
    #[tokio::test]
    async fn the_fake_ledger_keeps_a_pass_through_a_failure() {
        let ledger = crate::testing::FakeLedger::new();
        ledger
            .record(&DrillRecord::of(&result(true, "rp-1"), D1))
            .await
            .unwrap();
        ledger
            .record(&DrillRecord::of(&result(false, "rp-2"), D2))
            .await
            .unwrap();
        let all = ledger.read_all().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].last_passed, all[0].last_run), (Some(D1), D2));
        ledger.fail_next_record(503, "ServerBusy");
        assert!(ledger
            .record(&DrillRecord::of(&result(true, "rp-3"), D3))
            .await
            .is_err());
        assert_eq!(ledger.read_all().await.unwrap()[0].last_passed, Some(D1));
    }

    #[test]
    fn a_long_reason_is_cut_to_fit_a_table_property() {
        let mut r = result(false, "rp");
        r.reason = Some("é".repeat(70_000));
        let rec = DrillRecord::of(&r, D1);
        assert_eq!(rec.last_reason.unwrap().chars().count(), MAX_REASON_CHARS);
    }

    #[test]
    fn failing_since_pass_is_a_failure_newer_than_the_pass() {
        let pass = DrillRecord::of(&result(true, "rp-1"), D1);
        assert!(!pass.failing_since_pass());
        let failed = merge(Some(&pass), &DrillRecord::of(&result(false, "rp-2"), D2));
        assert!(failed.failing_since_pass());
        assert!(DrillRecord::of(&result(false, "rp"), D1).failing_since_pass());
    }

    #[test]
    fn keys_are_deterministic_case_insensitive_and_valid() {
        let (pk, rk) = table_keys(VM, "westeurope");
        assert_eq!(pk, "00000000-0000-0000-0000-0000000000d1");
        assert!(
            rk.starts_with("westeurope-") && rk.len() == "westeurope-".len() + 32,
            "{rk}"
        );
        assert_eq!(
            table_keys(&VM.to_uppercase(), "westeurope"),
            (pk.clone(), rk.clone())
        );
        // Region and VM both count.
        assert_ne!(table_keys(VM, "swedencentral").1, rk);
        assert_ne!(table_keys(&VM.replace("vm1", "vm2"), "westeurope").1, rk);
        for (input, region) in [
            (VM, "westeurope"),
            ("not an id/with#bad?chars\\", "west/europe"),
            ("/subscriptions/a#b?c/resourceGroups/g/providers/x/y/z", "r"),
        ] {
            let (pk, rk) = table_keys(input, region);
            assert_eq!(key_problem(&pk), None, "{pk}");
            assert_eq!(key_problem(&rk), None, "{rk}");
        }
    }

    #[test]
    fn key_problems_name_the_forbidden_characters() {
        for bad in ["a/b", "a\\b", "a#b", "a?b", "a\u{7}b", "a\nb"] {
            assert!(key_problem(bad).is_some(), "{bad:?}");
        }
        assert!(key_problem(&"x".repeat(1025)).is_some());
        assert_eq!(key_problem("rg-app(1).x_-"), None);
    }

    #[test]
    fn a_record_round_trips_as_json_with_camel_case_names() {
        let r = DrillRecord::of(&result(true, "rp-1"), D1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["lastPassed"], "2026-12-01T02:30:00Z");
        assert_eq!(v["lastPassedSeconds"], 12.5);
        assert!(v.get("lastReason").is_none());
        assert_eq!(serde_json::from_value::<DrillRecord>(v).unwrap(), r);
    }
}
