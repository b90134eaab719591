//! What to do after looking at a restore point once (docs/architecture.md, "Errors"): poll again later, declare it
//! settled, retry a failed point, or give up. Pure: the handler does the one GET and acts on the
//! [`PollDecision`].
//!
//! Delays: local points are polled after ~30 s (a restore point is rarely done sooner, so an
//! earlier first look is a GET spent for nothing), doubling up to a 5 min cap; copies after ~2 min
//! (an early refusal shows quickly), then every ~10 min (Azure refreshes copy progress about every
//! 10 min) until the slowest disk shows progress, then at the completion that progress predicts,
//! between 10 and 30 min away: a 90 min copy takes 5 GETs instead of 11, which matters because
//! a large fleet's copy polls otherwise take a good share of ARM's read budget. Every delay gets a
//! ±10 % jitter derived from a hash of the target and the attempt (no RNG), so a fleet created
//! at one tick does not poll in lock-step, yet a replay computes the same delays. ARM's
//! `Retry-After` always wins. No delay reaches past the deadline, so the give-up is on time.

use crate::schedule::rfc3339;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::azure::models::{ProvisioningState, RestorePoint};
use crate::azure::ResourceId;
use crate::messages::{PollRequest, Role};

/// The polling cadence.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first poll of a local point.
    pub local_first: Duration,
    /// Local delays double up to this.
    pub local_cap: Duration,
    /// Delay before the first poll of a copy.
    pub copy_first: Duration,
    /// Delay between later polls of a copy (the shortest, once progress shows).
    pub copy_every: Duration,
    /// The longest delay between polls of a copy, however far its predicted completion.
    pub copy_cap: Duration,
    /// Relative jitter, e.g. 0.1 for ±10 %.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            local_first: Duration::from_secs(30),
            local_cap: Duration::from_secs(5 * 60),
            copy_first: Duration::from_secs(2 * 60),
            copy_every: Duration::from_secs(10 * 60),
            copy_cap: Duration::from_secs(30 * 60),
            jitter: 0.1,
        }
    }
}

/// The outcome of one look at a restore point.
#[derive(Debug, Clone, PartialEq)]
pub enum PollDecision {
    /// Still running: poll again after `after`.
    Requeue { after: Duration, reason: String },
    /// Done: a local point `Succeeded`, or a copy `Succeeded` with every disk at 100 %.
    Settled { duration: Duration },
    /// `Failed` / `Canceled`. `retry` is the next retry number when the budget allows one, else
    /// `None` (report it).
    Failed { reason: String, retry: Option<u32> },
    /// Not settled by the request's deadline: report it.
    DeadlineExceeded { reason: String },
    /// The point is gone (404): someone deleted it, nothing left to watch.
    Vanished,
}

/// Decides from one GET of the point (with `$expand=instanceView`; `None` = 404).
/// `retry_after` is ARM's `Retry-After` from that response, if any.
pub fn decide(
    point: Option<&RestorePoint>,
    req: &PollRequest,
    now: OffsetDateTime,
    backoff: &Backoff,
    max_retries: u32,
    retry_after: Option<Duration>,
) -> PollDecision {
    let Some(point) = point else {
        return PollDecision::Vanished;
    };
    let elapsed = non_negative(now - req.first_seen);
    // The slowest disk's replication percentage, when a copy reports one.
    let mut progress = None;
    let running = match point.provisioning_state() {
        ProvisioningState::Failed | ProvisioningState::Canceled => {
            let state = point
                .properties
                .as_ref()
                .and_then(|p| p.provisioning_state.clone())
                .unwrap_or_default();
            let reason = match failure_detail(point) {
                Some(detail) => format!("provisioningState {state}: {detail}"),
                None => format!("provisioningState {state}"),
            };
            // Lazily: `then_some` would compute `retry + 1` even for `retry` = u32::MAX from a
            // message (a panic the handler property tests found); the guard bounds it.
            let retry = (req.retry < max_retries).then(|| req.retry + 1);
            return PollDecision::Failed { reason, retry };
        }
        // A copy whose disk replication failed (or was terminated after two weeks) reports no
        // detail and no percent: a failure, not "0 %, still replicating" until the deadline.
        ProvisioningState::Succeeded | ProvisioningState::InProgress(_)
            if req.role == Role::Copy && point.replication_failed() =>
        {
            let retry = (req.retry < max_retries).then(|| req.retry + 1);
            return PollDecision::Failed {
                reason: "copy replication failed (Azure reports no detail and no percent for a \
                    failed disk restore point copy; copies still replicating after two weeks are \
                    terminated)"
                    .to_string(),
                retry,
            };
        }
        ProvisioningState::Succeeded => match req.role {
            Role::Local => match restore_blocker(point) {
                None => return PollDecision::Settled { duration: elapsed },
                Some(why) => format!("provisioningState Succeeded, not restorable yet: {why}"),
            },
            Role::Copy => match replication_progress(point) {
                Replication::Complete => return PollDecision::Settled { duration: elapsed },
                Replication::Partial { min, disks } => {
                    progress = Some(min);
                    format!("copy started, replicating: {min}% (slowest of {disks} disks)")
                }
                Replication::Unknown => "copy started, no replication status yet".to_string(),
            },
        },
        ProvisioningState::InProgress(state) => match (req.role, replication_progress(point)) {
            (Role::Copy, Replication::Partial { min, disks }) => {
                progress = Some(min);
                format!("provisioningState {state}, replicating: {min}% (slowest of {disks} disks)")
            }
            _ => format!("provisioningState {state}"),
        },
    };
    if now >= req.deadline {
        return PollDecision::DeadlineExceeded {
            reason: format!(
                "not settled by the deadline {} after {} polls ({running})",
                rfc3339(req.deadline),
                req.attempt
            ),
        };
    }
    let planned = retry_after.unwrap_or_else(|| match (req.role, progress) {
        (Role::Copy, Some(percent)) if req.attempt >= 1 => jittered(
            copy_delay(elapsed, percent, backoff),
            req.target.as_str(),
            req.attempt.saturating_add(1),
            backoff.jitter,
        ),
        _ => delay_before(
            req.role,
            req.attempt.saturating_add(1),
            &req.target,
            backoff,
        ),
    });
    // Never sleep past the deadline: the poll at the deadline reports on time.
    let until_deadline = non_negative(req.deadline - now).max(Duration::from_secs(1));
    PollDecision::Requeue {
        after: planned.min(until_deadline),
        reason: running,
    }
}

/// The delay before poll number `attempt` (1 = the first poll after the PUT), jittered.
pub fn delay_before(role: Role, attempt: u32, target: &ResourceId, backoff: &Backoff) -> Duration {
    let base = match role {
        Role::Local => {
            let doublings = attempt.saturating_sub(1).min(20);
            backoff
                .local_first
                .saturating_mul(1u32 << doublings)
                .min(backoff.local_cap)
        }
        Role::Copy if attempt <= 1 => backoff.copy_first,
        Role::Copy => backoff.copy_every,
    };
    jittered(base, target.as_str(), attempt, backoff.jitter)
}

/// The delay before the next poll of a copy whose slowest disk is at `percent` after `elapsed`:
/// the remaining time at the rate so far (`elapsed · (100 − p) / p`), kept within
/// `[copy_every, copy_cap]` (no progress yet: `copy_every`). Not jittered.
pub fn copy_delay(elapsed: Duration, percent: i32, backoff: &Backoff) -> Duration {
    let floor = backoff.copy_every;
    let cap = backoff.copy_cap.max(floor);
    if percent <= 0 || elapsed.is_zero() {
        return floor;
    }
    let p = f64::from(percent.min(100));
    let remaining = elapsed.mul_f64((100.0 - p) / p);
    remaining.clamp(floor, cap)
}

/// `base` scaled by a factor in `[1 - jitter, 1 + jitter]` chosen by a hash of (key, attempt).
pub fn jittered(base: Duration, key: &str, attempt: u32, jitter: f64) -> Duration {
    let mut h = Sha256::new();
    h.update(key.to_ascii_lowercase().as_bytes());
    h.update(attempt.to_be_bytes());
    let digest = h.finalize();
    // Invariant: a SHA-256 digest has 32 bytes, so its first 8 form a u64.
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let unit = n as f64 / u64::MAX as f64; // [0, 1]
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * unit - 1.0);
    base.mul_f64(factor)
}

/// A disk restore point's `snapshotAccessState`, as Microsoft defines the states
/// (learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots, "Check snapshot
/// access state"; restorePoint.json 2025-04-01 `SnapshotAccessState`): `Pending` can be neither
/// restored nor copied; `InstantAccess` restores but does not copy; `Available` and
/// `AvailableWithInstantAccess` do both. Other values (`Unknown`, absent: disks whose snapshots
/// are usable at once) block nothing.
fn blocks(state: &str, for_copy: bool) -> bool {
    state.eq_ignore_ascii_case("Pending")
        || (for_copy && state.eq_ignore_ascii_case("InstantAccess"))
}

fn access_blocker(point: &RestorePoint, for_copy: bool) -> Option<String> {
    let states = point.snapshot_access_states();
    let blocked: Vec<(&str, &str)> = states
        .iter()
        .copied()
        .filter(|(_, s)| blocks(s, for_copy))
        .collect();
    let (id, state) = blocked.first()?;
    let name = id.rsplit('/').next().unwrap_or(id);
    Some(format!(
        "{} of {} disk restore points not {} (first: {name} is {state}): the snapshot's background data copy (Premium SSD v2 / Ultra disk) has not completed",
        blocked.len(),
        states.len(),
        if for_copy { "copyable" } else { "restorable" },
    ))
}

/// Why a `Succeeded` local point cannot be restored yet (a disk restore point `Pending`), or
/// `None` when it can: the poller settles a local point only then.
pub fn restore_blocker(point: &RestorePoint) -> Option<String> {
    access_blocker(point, false)
}

/// Why a cross-region copy cannot start from this point yet (a disk restore point `Pending` or
/// `InstantAccess`), or `None`. Needs the point read with `$expand=instanceView`.
pub fn copy_blocker(point: &RestorePoint) -> Option<String> {
    access_blocker(point, true)
}

enum Replication {
    /// Every disk restore point at 100 %.
    Complete,
    /// At least one disk below 100 %: the slowest one's percentage.
    Partial { min: i32, disks: usize },
    /// No disk restore points in the instance view (not expanded, or not reported yet).
    Unknown,
}

fn replication_progress(point: &RestorePoint) -> Replication {
    let percents = point.replication_percents();
    match percents.iter().min() {
        None => Replication::Unknown,
        Some(&min) if min >= 100 => Replication::Complete,
        Some(&min) => Replication::Partial {
            min,
            disks: percents.len(),
        },
    }
}

/// The error text the instance view carries for a failed point, if any.
fn failure_detail(point: &RestorePoint) -> Option<String> {
    let iv = point.properties.as_ref()?.instance_view.as_ref()?;
    let statuses = iv.statuses.iter().flatten().chain(
        iv.disk_restore_points
            .iter()
            .flatten()
            .filter_map(|d| d.replication_status.as_ref()?.status.as_ref()),
    );
    let texts: Vec<String> = statuses
        .filter(|s| {
            s.level
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case("Error"))
        })
        .filter_map(|s| {
            let text = s.message.as_deref().or(s.display_status.as_deref())?;
            Some(match s.code.as_deref() {
                Some(code) => format!("{code}: {text}"),
                None => text.to_string(),
            })
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

fn non_negative(d: time::Duration) -> Duration {
    d.try_into().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::{InstanceViewStatus, RestorePointInstanceView};
    use crate::testing::FakeArm;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 03:00:00 UTC);

    #[test]
    fn copy_delay_follows_predicted_completion_within_bounds() {
        let b = Backoff::default();
        let min = |m: u64| Duration::from_secs(m * 60);
        let cases = [
            // (minutes elapsed, slowest disk %, minutes until the next poll)
            (12, 0, 10),  // no progress yet: the floor
            (12, 11, 30), // ~97 min left: the cap
            (42, 44, 30), // ~53 min left: the cap
            (72, 78, 20), // ~20 min left: then
            (88, 97, 10), // ~3 min left: the floor (progress refreshes every ~10 min)
            (30, 100, 10),
            (0, 50, 10), // no elapsed time to measure a rate
        ];
        for (elapsed, percent, want) in cases {
            let got = copy_delay(min(elapsed), percent, &b);
            let want = min(want);
            assert!(
                got.abs_diff(want) < Duration::from_secs(60),
                "{elapsed} min at {percent}%: {got:?}, want ~{want:?}"
            );
        }
    }

    fn target(role: Role) -> ResourceId {
        let name = match role {
            Role::Local => "rpc-vm1",
            Role::Copy => "rpc-vm1-westus2",
        };
        ResourceId::new_in_group(
            "s1",
            "rg",
            "Microsoft.Compute",
            "restorePointCollections",
            name,
        )
        .unwrap()
        .child("restorePoints", "rp-20261125T0300Z")
    }

    fn req(role: Role, attempt: u32, retry: u32) -> PollRequest {
        PollRequest {
            target: target(role),
            role,
            attempt,
            first_seen: T0,
            deadline: T0 + time::Duration::hours(2),
            vm: crate::testing::vm_id("s1", "rg", "vm1"),
            tick: T0,
            rule: Some("r".into()),
            retry,
            copy_to: Vec::new(),
            source: None,
            target_region: None,
            prune_again: 0,
        }
    }

    /// A point as `GET ?$expand=instanceView` returns it, built through the fake.
    fn point(role: Role, state: &str, replication: &[i32]) -> RestorePoint {
        let arm = FakeArm::new();
        let id = target(role);
        let source = (role == Role::Copy).then(|| id.clone());
        arm.add_point(&id, state, T0, source.as_ref(), replication);
        arm.point(&id).unwrap()
    }

    fn within_jitter(got: Duration, base: Duration) -> bool {
        got >= base.mul_f64(0.9) && got <= base.mul_f64(1.1)
    }

    /// A copy showing progress is next polled when that progress predicts completion.
    #[test]
    fn copy_polls_follow_progress() {
        let b = Backoff::default();
        let at = |m: i64| T0 + time::Duration::minutes(m);
        let after = |minutes: i64, percent: i32, attempt: u32| {
            let p = point(Role::Copy, "Succeeded", &[percent, 100]);
            match decide(
                Some(&p),
                &req(Role::Copy, attempt, 0),
                at(minutes),
                &b,
                3,
                None,
            ) {
                PollDecision::Requeue { after, .. } => after,
                other => panic!("{other:?}"),
            }
        };
        let min = |m: u64| Duration::from_secs(m * 60);
        assert!(
            within_jitter(after(42, 44, 3), min(30)),
            "{:?}",
            after(42, 44, 3)
        );
        assert!(
            within_jitter(after(72, 78, 4), min(20)),
            "{:?}",
            after(72, 78, 4)
        );
        assert!(
            within_jitter(after(12, 0, 2), min(10)),
            "no progress: every 10 min"
        );
        // Never past the deadline (2 h after the first poll).
        assert!(after(105, 50, 5) <= min(15));
    }

    /// A copy whose disk replication failed shows no percent and no detail: it is a failure
    /// (retried while the budget lasts), not "0 %, still replicating" polled until the deadline.
    #[test]
    fn a_failed_replication_without_percent_is_a_failure_not_progress() {
        let b = Backoff::default();
        let arm = FakeArm::new();
        let id = target(Role::Copy);
        arm.add_point(&id, "Succeeded", T0, Some(&id), &[100, 40]);
        arm.fail_replication(&id, 1);
        let p = arm.point(&id).unwrap();
        let now = T0 + time::Duration::minutes(30);
        match decide(Some(&p), &req(Role::Copy, 3, 0), now, &b, 3, None) {
            PollDecision::Failed { reason, retry } => {
                assert_eq!(retry, Some(1));
                assert!(reason.contains("replication failed"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match decide(Some(&p), &req(Role::Copy, 3, 3), now, &b, 3, None) {
            PollDecision::Failed { retry: None, .. } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decision_table() {
        let b = Backoff::default();
        let now = T0 + time::Duration::minutes(1);
        let secs = Duration::from_secs;
        // (case, role, state, replication, attempt, retry, retry_after, expected)
        enum Want {
            RequeueAbout(Duration),
            RequeueExactly(Duration),
            Settled,
            Retry(u32),
            Report,
        }
        type Case = (
            &'static str,
            Role,
            &'static str,
            Vec<i32>,
            u32,
            u32,
            Option<Duration>,
            Want,
        );
        let cases: Vec<Case> = vec![
            (
                "creating, poll 1 → ~60 s",
                Role::Local,
                "Creating",
                vec![],
                1,
                0,
                None,
                Want::RequeueAbout(secs(60)),
            ),
            (
                "creating, poll 3 → ~240 s",
                Role::Local,
                "Creating",
                vec![],
                3,
                0,
                None,
                Want::RequeueAbout(secs(240)),
            ),
            (
                "creating, poll 9 → capped 5 min",
                Role::Local,
                "Creating",
                vec![],
                9,
                0,
                None,
                Want::RequeueAbout(secs(300)),
            ),
            (
                "unknown state = running",
                Role::Local,
                "Converging",
                vec![],
                1,
                0,
                None,
                Want::RequeueAbout(secs(60)),
            ),
            (
                "local succeeded",
                Role::Local,
                "Succeeded",
                vec![],
                2,
                0,
                None,
                Want::Settled,
            ),
            (
                "copy creating at 40 % → 10 min",
                Role::Copy,
                "Creating",
                vec![40, 100],
                1,
                0,
                None,
                Want::RequeueAbout(secs(600)),
            ),
            (
                "copy succeeded but 90 % → 10 min",
                Role::Copy,
                "Succeeded",
                vec![100, 90],
                4,
                0,
                None,
                Want::RequeueAbout(secs(600)),
            ),
            (
                "copy succeeded and all 100 %",
                Role::Copy,
                "Succeeded",
                vec![100, 100],
                4,
                0,
                None,
                Want::Settled,
            ),
            (
                "failed, retries left",
                Role::Local,
                "Failed",
                vec![],
                2,
                0,
                None,
                Want::Retry(1),
            ),
            (
                "canceled, second retry",
                Role::Copy,
                "Canceled",
                vec![10],
                2,
                1,
                None,
                Want::Retry(2),
            ),
            (
                "failed, out of retries",
                Role::Local,
                "Failed",
                vec![],
                2,
                2,
                None,
                Want::Report,
            ),
            (
                "Retry-After wins",
                Role::Local,
                "Creating",
                vec![],
                9,
                0,
                Some(secs(7)),
                Want::RequeueExactly(secs(7)),
            ),
        ];
        for (name, role, state, repl, attempt, retry, retry_after, want) in cases {
            let p = point(role, state, &repl);
            let got = decide(
                Some(&p),
                &req(role, attempt, retry),
                now,
                &b,
                2,
                retry_after,
            );
            match (want, &got) {
                (Want::RequeueAbout(d), PollDecision::Requeue { after, .. }) => {
                    assert!(within_jitter(*after, d), "{name}: {after:?} not ~{d:?}")
                }
                (Want::RequeueExactly(d), PollDecision::Requeue { after, .. }) => {
                    assert_eq!(*after, d, "{name}")
                }
                (Want::Settled, PollDecision::Settled { duration }) => {
                    assert_eq!(*duration, secs(60), "{name}")
                }
                (Want::Retry(n), PollDecision::Failed { retry, .. }) => {
                    assert_eq!(*retry, Some(n), "{name}")
                }
                (Want::Report, PollDecision::Failed { retry, .. }) => {
                    assert_eq!(*retry, None, "{name}")
                }
                (_, other) => panic!("{name}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn local_delays_grow_then_cap() {
        let b = Backoff::default();
        let t = target(Role::Local);
        let delays: Vec<Duration> = (1..=10)
            .map(|n| delay_before(Role::Local, n, &t, &b))
            .collect();
        assert!(within_jitter(delays[0], Duration::from_secs(30)));
        for n in 1..5 {
            assert!(delays[n] > delays[n - 1], "poll {n} grows: {delays:?}");
        }
        for d in &delays[6..] {
            assert!(within_jitter(*d, Duration::from_secs(300)), "{d:?}");
        }
    }

    #[test]
    fn jitter_is_deterministic_and_spreads() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, "a", 1, 0.1), jittered(base, "A", 1, 0.1));
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|i| jittered(base, &format!("vm{i}"), 1, 0.1).as_millis())
            .collect();
        assert!(spread.len() > 40, "different targets get different delays");
        assert!(spread.iter().all(|ms| (90_000..=110_000).contains(ms)));
        assert_eq!(jittered(base, "a", 1, 0.0), base);
    }

    #[test]
    fn deadline_and_clamping() {
        let b = Backoff::default();
        let p = point(Role::Copy, "Creating", &[50]);
        let r = req(Role::Copy, 3, 0);
        let late = r.deadline + time::Duration::seconds(1);
        match decide(Some(&p), &r, late, &b, 2, None) {
            PollDecision::DeadlineExceeded { reason } => {
                assert!(reason.contains("50%"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Two minutes before the deadline, a 10-minute copy delay shrinks to the deadline.
        let near = r.deadline - time::Duration::minutes(2);
        assert_eq!(
            decide(Some(&p), &r, near, &b, 2, None),
            PollDecision::Requeue {
                after: Duration::from_secs(120),
                reason: "provisioningState Creating, replicating: 50% (slowest of 1 disks)".into()
            }
        );
        // A settled point past its deadline still counts as settled.
        let done = point(Role::Local, "Succeeded", &[]);
        assert!(matches!(
            decide(Some(&done), &req(Role::Local, 9, 0), late, &b, 2, None),
            PollDecision::Settled { .. }
        ));
    }

    #[test]
    fn snapshot_access_states_decide_restorable_and_copyable() {
        use crate::azure::models::DiskRestorePointInstanceView;
        let with = |states: &[&str]| {
            let mut p = point(Role::Local, "Succeeded", &[]);
            p.properties.as_mut().unwrap().instance_view = Some(RestorePointInstanceView {
                disk_restore_points: Some(
                    states
                        .iter()
                        .enumerate()
                        .map(|(i, s)| DiskRestorePointInstanceView {
                            id: Some(format!("x/diskRestorePoints/d{i}")),
                            replication_status: None,
                            snapshot_access_state: (!s.is_empty()).then(|| s.to_string()),
                        })
                        .collect(),
                ),
                statuses: None,
            });
            p
        };
        // (states, restorable, copyable)
        let cases: &[(&[&str], bool, bool)] = &[
            (&[], true, true),
            (&["", "Unknown"], true, true),
            (&["Available", "AvailableWithInstantAccess"], true, true),
            (&["Available", "InstantAccess"], true, false),
            (&["Available", "Pending"], false, false),
            (&["pending"], false, false),
        ];
        for (states, restorable, copyable) in cases {
            let p = with(states);
            assert_eq!(restore_blocker(&p).is_none(), *restorable, "{states:?}");
            assert_eq!(copy_blocker(&p).is_none(), *copyable, "{states:?}");
        }
        let why = copy_blocker(&with(&["Available", "InstantAccess", "Pending"])).unwrap();
        assert!(
            why.starts_with("2 of 3 disk restore points not copyable (first: d1 is InstantAccess)"),
            "{why}"
        );
        // The poller: Succeeded but Pending is not settled; InstantAccess is.
        let b = Backoff::default();
        let req = req(Role::Local, 1, 0);
        match decide(Some(&with(&["Pending"])), &req, T0, &b, 2, None) {
            PollDecision::Requeue { reason, .. } => {
                assert!(reason.contains("not restorable yet"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(Some(&with(&["InstantAccess"])), &req, T0, &b, 2, None),
            PollDecision::Settled { .. }
        ));
    }

    #[test]
    fn vanished_and_failure_detail() {
        let b = Backoff::default();
        assert_eq!(
            decide(None, &req(Role::Local, 1, 0), T0, &b, 2, None),
            PollDecision::Vanished
        );
        let mut p = point(Role::Local, "Failed", &[]);
        p.properties.as_mut().unwrap().instance_view = Some(RestorePointInstanceView {
            disk_restore_points: None,
            statuses: Some(vec![InstanceViewStatus {
                code: Some("VMRestorePointClientError".into()),
                level: Some("Error".into()),
                message: Some("VSS writer timed out".into()),
                ..Default::default()
            }]),
        });
        match decide(Some(&p), &req(Role::Local, 1, 0), T0, &b, 0, None) {
            PollDecision::Failed { reason, retry } => {
                assert_eq!(retry, None);
                assert!(
                    reason.contains("VMRestorePointClientError: VSS writer timed out"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A copy's first poll comes after `copy_first`, every later one after `copy_every`
    /// (mutation testing: the `attempt <= 1` guard forced either way went unseen).
    #[test]
    fn copy_delays_first_then_every() {
        let b = Backoff::default();
        let t = target(Role::Copy);
        // (poll number, base delay)
        let cases = [
            (0, b.copy_first),
            (1, b.copy_first),
            (2, b.copy_every),
            (7, b.copy_every),
        ];
        for (attempt, base) in cases {
            let got = delay_before(Role::Copy, attempt, &t, &b);
            assert!(
                within_jitter(got, base),
                "poll {attempt}: {got:?}, want ~{base:?}"
            );
        }
    }

    /// A copy request at attempt 0 (before its first poll) waits `copy_first` even when the
    /// point already shows progress: the progress-predicted delay is for polls after the first
    /// (mutation testing: the `req.attempt >= 1` guard forced true went unseen).
    #[test]
    fn a_copy_poll_before_the_first_ignores_progress() {
        let b = Backoff::default();
        let p = point(Role::Copy, "Creating", &[40]);
        // 60 min at 40 %: progress predicts 90 min left (capped at 30); the first poll is ~2 min.
        let now = T0 + time::Duration::minutes(60);
        let after =
            |attempt: u32| match decide(Some(&p), &req(Role::Copy, attempt, 0), now, &b, 2, None) {
                PollDecision::Requeue { after, .. } => after,
                other => panic!("{other:?}"),
            };
        assert!(within_jitter(after(0), b.copy_first), "{:?}", after(0));
        assert!(within_jitter(after(1), b.copy_cap), "{:?}", after(1));
    }
}
