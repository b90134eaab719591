//! Retention: which restore points of one collection (one region) to keep and which to delete,
//! as a pure decision with a human reason for every point (docs/lifecycle.md, retention).
//!
//! Rules, in the order they are checked for each point:
//! 1. A point still in progress (Creating, or a copy below 100 % replication) is kept: deleting it
//!    would abort work that is still running and leave Azure to clean up half a point.
//! 2. A held point is kept. The caller decides holds, e.g. the source of a copy that is not fully
//!    replicated yet: deleting the source would break the copy.
//! 3. Failed points hold no data but count against Azure's 500 points per VM, so they are
//!    deleted, except the newest failed point while no settled point is newer than it: that one
//!    is the evidence of the latest failure (the operator and the retry logic read it) and goes
//!    as soon as a newer point settles.
//! 4. Settled points are kept when any of these says so, and deleted otherwise:
//!    - **baseline**: the oldest settled point is never deleted. The first point of a collection
//!      is the full one; copies to other regions stay incremental against it. It is kept *in
//!      addition* to `keepLast`, so a collection holds up to `keepLast + tiers + 1` settled points.
//!    - **keepLast**: the newest `keepLast` settled points.
//!    - **floor**: the newest `floor` settled points, whatever else says (a safety net, e.g. for
//!      tier-only retention with `keepLast: 0`).
//!    - **daily / weekly / monthly**: the newest settled point of each of the last N UTC days /
//!      ISO weeks / calendar months that have settled points (days without points don't count).
//!
//! Held points are kept on top of that bound; the 500-points-per-VM validation allows for one
//! point in progress and one failure per collection.
//!
//! The output lists every input point once, oldest first (ties broken by id), so the same input
//! always gives the same plan.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::azure::ResourceId;
use crate::policy::Retention;

/// One restore point as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointView {
    pub id: ResourceId,
    pub created: OffsetDateTime,
    pub state: PointState,
    /// Why the point must be kept no matter what, e.g. "copy to westus2 still replicating (40%)".
    pub hold: Option<String>,
}

/// Where a point stands, as the caller judged it from ARM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointState {
    /// Local: `Succeeded`. Copy: `Succeeded` and every disk replicated at 100 %.
    Settled,
    /// Still `Creating`, or a copy still replicating.
    InProgress,
    /// `Failed` or `Canceled`.
    Failed,
}

/// The decision for one point, with the reason to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep(String),
    Delete(String),
}

impl Verdict {
    pub fn is_delete(&self) -> bool {
        matches!(self, Self::Delete(_))
    }
    pub fn reason(&self) -> &str {
        match self {
            Self::Keep(r) | Self::Delete(r) => r,
        }
    }
}

impl PointView {
    pub fn new(id: ResourceId, created: OffsetDateTime, state: PointState) -> Self {
        Self {
            id,
            created,
            state,
            hold: None,
        }
    }
    pub fn held(mut self, reason: impl Into<String>) -> Self {
        self.hold = Some(reason.into());
        self
    }
}

/// The keep/delete decision for every point of one collection.
pub fn decide(points: &[PointView], retention: &Retention) -> Vec<(ResourceId, Verdict)> {
    let mut ordered: Vec<&PointView> = points.iter().collect();
    ordered.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));

    // Settled points, newest first: the order every settled rule counts in.
    let settled_newest_first: Vec<&PointView> = ordered
        .iter()
        .rev()
        .copied()
        .filter(|p| p.state == PointState::Settled)
        .collect();
    let baseline = settled_newest_first.last().map(|p| &p.id);
    // "Newer" is the (created, id) order, not the time alone: a copy shows its source's
    // `timeCreated` (docs/emulator-arm.md), so a failed copy and the retry that settled after it
    // (`rp-…-r1`, same source) have the same time and only their names order them.
    let newest_settled = settled_newest_first.first().map(|p| (p.created, &p.id));
    let newest_failed = ordered
        .iter()
        .rev()
        .find(|p| p.state == PointState::Failed)
        .map(|p| &p.id);

    let tiers = TierKeeps::compute(&settled_newest_first, retention);

    ordered
        .iter()
        .map(|p| {
            let verdict = match p.state {
                PointState::InProgress => Verdict::Keep("still in progress".to_string()),
                _ if p.hold.is_some() => {
                    Verdict::Keep(format!("held: {}", p.hold.as_deref().unwrap_or_default()))
                }
                PointState::Failed => failed_verdict(p, newest_failed, newest_settled),
                PointState::Settled => {
                    let rank = settled_newest_first
                        .iter()
                        .position(|s| s.id == p.id)
                        .unwrap_or(usize::MAX);
                    settled_verdict(p, rank, baseline, &tiers, retention)
                }
            };
            (p.id.clone(), verdict)
        })
        .collect()
}

fn failed_verdict(
    point: &PointView,
    newest_failed: Option<&ResourceId>,
    newest_settled: Option<(OffsetDateTime, &ResourceId)>,
) -> Verdict {
    let is_newest_failed = newest_failed == Some(&point.id);
    let superseded = newest_settled.is_some_and(|s| s > (point.created, &point.id));
    if is_newest_failed && !superseded {
        Verdict::Keep("latest failure: kept as evidence until a newer point settles".to_string())
    } else if superseded {
        Verdict::Delete("failed, and a newer point has settled".to_string())
    } else {
        Verdict::Delete("failed, and a newer failure supersedes it".to_string())
    }
}

fn settled_verdict(
    point: &PointView,
    rank: usize,
    baseline: Option<&ResourceId>,
    tiers: &TierKeeps,
    retention: &Retention,
) -> Verdict {
    let mut reasons = Vec::new();
    if baseline == Some(&point.id) {
        reasons.push("baseline: oldest point keeps copies incremental".to_string());
    }
    if rank < retention.keep_last as usize {
        reasons.push(format!("newest {}", retention.keep_last));
    }
    if rank < retention.floor as usize {
        reasons.push(format!("floor of {} settled points", retention.floor));
    }
    for (tier, kept) in [
        (&Tier::Daily, &tiers.daily),
        (&Tier::Weekly, &tiers.weekly),
        (&Tier::Monthly, &tiers.monthly),
    ] {
        if kept.contains(&point.id) {
            reasons.push(format!(
                "{} {}: newest of {}",
                tier.name(),
                tier.count(retention).unwrap_or(0),
                tier.bucket_label(point.created)
            ));
        }
    }
    if reasons.is_empty() {
        Verdict::Delete(format!(
            "beyond retention: {rank} newer settled points ({})",
            describe(retention)
        ))
    } else {
        Verdict::Keep(reasons.join("; "))
    }
}

/// `keepLast 5, daily 7, weekly 4` — for delete reasons.
fn describe(retention: &Retention) -> String {
    let mut parts = vec![format!("keepLast {}", retention.keep_last)];
    for tier in [Tier::Daily, Tier::Weekly, Tier::Monthly] {
        if let Some(n) = tier.count(retention) {
            parts.push(format!("{} {n}", tier.name()));
        }
    }
    parts.join(", ")
}

enum Tier {
    Daily,
    Weekly,
    Monthly,
}

impl Tier {
    fn name(&self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
    fn count(&self, retention: &Retention) -> Option<u32> {
        match self {
            Self::Daily => retention.daily,
            Self::Weekly => retention.weekly,
            Self::Monthly => retention.monthly,
        }
    }
    /// The UTC day, ISO week or month a point falls in, as a sortable key.
    fn bucket(&self, t: OffsetDateTime) -> (i32, u32) {
        let t = t.to_offset(time::UtcOffset::UTC);
        match self {
            Self::Daily => (t.year(), t.ordinal() as u32),
            Self::Weekly => {
                let (year, week, _) = t.to_iso_week_date();
                (year, week as u32)
            }
            Self::Monthly => (t.year(), t.month() as u32),
        }
    }
    fn bucket_label(&self, t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        match self {
            Self::Daily => format!("{}", t.date()),
            Self::Weekly => {
                let (year, week, _) = t.to_iso_week_date();
                format!("{year}-W{week:02}")
            }
            Self::Monthly => format!("{}-{:02}", t.year(), t.month() as u8),
        }
    }
    /// The newest point of each of the last `n` buckets that have points.
    fn keeps(&self, settled_newest_first: &[&PointView], n: u32) -> BTreeSet<ResourceId> {
        let mut kept = BTreeSet::new();
        let mut last_bucket = None;
        for p in settled_newest_first {
            let bucket = self.bucket(p.created);
            if last_bucket == Some(bucket) {
                continue;
            }
            if kept.len() >= n as usize {
                break;
            }
            last_bucket = Some(bucket);
            kept.insert(p.id.clone());
        }
        kept
    }
}

struct TierKeeps {
    daily: BTreeSet<ResourceId>,
    weekly: BTreeSet<ResourceId>,
    monthly: BTreeSet<ResourceId>,
}

impl TierKeeps {
    fn compute(settled_newest_first: &[&PointView], retention: &Retention) -> Self {
        let keeps = |tier: Tier| {
            tier.count(retention)
                .map(|n| tier.keeps(settled_newest_first, n))
                .unwrap_or_default()
        };
        Self {
            daily: keeps(Tier::Daily),
            weekly: keeps(Tier::Weekly),
            monthly: keeps(Tier::Monthly),
        }
    }
}

/// Whether a settled local point must still wait for its copy to one region (the "copy not
/// started yet" hold), from ARM's state only:
/// - `has_copy`: a copy of it exists in that region (in any state): nothing to wait for.
/// - `newest_copied`: the tick of the newest local point that has a copy there.
///
/// A point without a copy waits only while it is newer than every point copied there. An older
/// one was either copied and its copy since pruned by the region's own retention ("copied, since
/// pruned"), or skipped; either way no copy of it will start any more: copies into a region go
/// in creation order, and StartCrossRegionCopy refuses (as superseded) a source older than a
/// copy the region already holds, as the platform does. Holding it would only pile up local
/// points until the copy deadline. So this never releases a point whose copy could still
/// start. With no copy in the region at all, every point waits (until the copy deadline, which
/// the caller applies).
pub fn awaits_copy(
    point_tick: OffsetDateTime,
    has_copy: bool,
    newest_copied: Option<OffsetDateTime>,
) -> bool {
    !has_copy && newest_copied.is_none_or(|newest| point_tick > newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awaits_copy_table() {
        let t = |h: i64| time::macros::datetime!(2026-01-01 00:00 UTC) + time::Duration::hours(h);
        let cases = [
            // (point tick, has a copy, newest copied tick) → waits
            (t(8), false, None, true),        // nothing copied there yet
            (t(8), false, Some(t(4)), true),  // newer than the newest copy: its copy may come
            (t(4), false, Some(t(8)), false), // copied and since pruned (or superseded)
            (t(8), false, Some(t(8)), false), // same tick as the newest copy (a retry of it)
            (t(8), true, None, false),        // has a copy
            (t(12), true, Some(t(8)), false), // has a copy
        ];
        for (tick, has, newest, want) in cases {
            assert_eq!(
                awaits_copy(tick, has, newest),
                want,
                "{tick} {has} {newest:?}"
            );
        }
    }
    use time::macros::datetime;

    fn rid(name: &str) -> ResourceId {
        ResourceId::new_in_group(
            "00000000-0000-0000-0000-000000000001",
            "rg-prod",
            "Microsoft.Compute",
            "restorePointCollections",
            "rpc-vm1",
        )
        .unwrap()
        .child("restorePoints", name)
    }

    fn retention(keep_last: u32) -> Retention {
        Retention::newest(keep_last)
    }

    fn settled(name: &str, created: OffsetDateTime) -> PointView {
        PointView::new(rid(name), created, PointState::Settled)
    }

    /// `name → keep?` in output order, for compact assertions.
    fn plan(points: &[PointView], r: &Retention) -> Vec<(String, bool)> {
        decide(points, r)
            .into_iter()
            .map(|(id, v)| (id.name().unwrap().to_string(), !v.is_delete()))
            .collect()
    }

    fn verdict_of<'a>(out: &'a [(ResourceId, Verdict)], name: &str) -> &'a Verdict {
        &out.iter()
            .find(|(id, _)| id.name() == Some(name))
            .unwrap()
            .1
    }

    /// Points every 4 hours starting at `start`, named rp-0, rp-1, …
    fn every_4h(start: OffsetDateTime, n: usize) -> Vec<PointView> {
        (0..n)
            .map(|i| {
                settled(
                    &format!("rp-{i}"),
                    start + time::Duration::hours(4 * i as i64),
                )
            })
            .collect()
    }

    /// Regression (chaos, seed of tests/chaos.rs): copies show their source's `timeCreated`, so a
    /// failed copy and its settled retry `-r1` of the same source tie on time; the failed one was
    /// kept for ever as "latest failure" because nothing settled *after* its time.
    #[test]
    fn a_failed_copy_is_superseded_by_its_settled_retry_with_the_same_time() {
        let t = datetime!(2026-01-05 12:00 UTC);
        let points = vec![
            settled("rp-20260105T0800Z", t - time::Duration::hours(4)),
            PointView::new(rid("rp-20260105T1200Z"), t, PointState::Failed),
            settled("rp-20260105T1200Z-r1", t),
        ];
        let out = decide(&points, &retention(3));
        assert_eq!(
            verdict_of(&out, "rp-20260105T1200Z").reason(),
            "failed, and a newer point has settled"
        );
        // A failure newer than every settled point is still kept as evidence.
        let points = vec![
            settled("rp-20260105T0800Z", t - time::Duration::hours(4)),
            PointView::new(rid("rp-20260105T1200Z"), t, PointState::Failed),
        ];
        assert!(!decide(&points, &retention(3))[1].1.is_delete());
    }

    #[test]
    fn empty_input_gives_empty_plan() {
        assert!(decide(&[], &retention(5)).is_empty());
    }

    #[test]
    fn keep_last_keeps_newest_and_baseline_in_addition() {
        let points = every_4h(datetime!(2026-11-20 00:00 UTC), 6);
        let out = decide(&points, &retention(3));
        let keeps: Vec<bool> = out.iter().map(|(_, v)| !v.is_delete()).collect();
        // rp-0 is the baseline, rp-3..rp-5 the newest 3; rp-1 and rp-2 go.
        assert_eq!(keeps, vec![true, false, false, true, true, true]);
        assert!(verdict_of(&out, "rp-0").reason().starts_with("baseline"));
        assert_eq!(
            verdict_of(&out, "rp-5").reason(),
            "newest 3; floor of 1 settled points"
        );
        assert_eq!(verdict_of(&out, "rp-4").reason(), "newest 3");
        assert_eq!(
            verdict_of(&out, "rp-1"),
            &Verdict::Delete("beyond retention: 4 newer settled points (keepLast 3)".into())
        );
    }

    #[test]
    fn output_is_oldest_first_whatever_the_input_order() {
        let mut points = every_4h(datetime!(2026-11-20 00:00 UTC), 5);
        points.reverse();
        points.swap(1, 3);
        let names: Vec<String> = plan(&points, &retention(2))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["rp-0", "rp-1", "rp-2", "rp-3", "rp-4"]);
    }

    #[test]
    fn equal_timestamps_are_ordered_by_id() {
        let t = datetime!(2026-11-20 00:00 UTC);
        let points = vec![settled("rp-b", t), settled("rp-a", t), settled("rp-c", t)];
        let out = plan(&points, &retention(1));
        // Oldest-first by (created, id): a is the baseline, c the newest.
        assert_eq!(
            out,
            vec![
                ("rp-a".to_string(), true),
                ("rp-b".to_string(), false),
                ("rp-c".to_string(), true)
            ]
        );
    }

    #[test]
    fn in_progress_points_are_never_deleted_and_not_counted() {
        let mut points = every_4h(datetime!(2026-11-20 00:00 UTC), 4);
        points[1].state = PointState::InProgress;
        let out = decide(&points, &retention(1));
        assert_eq!(
            verdict_of(&out, "rp-1"),
            &Verdict::Keep("still in progress".into())
        );
        // Settled are rp-0 (baseline), rp-2, rp-3 (newest 1) → only rp-2 goes.
        assert!(verdict_of(&out, "rp-2").is_delete());
        assert!(!verdict_of(&out, "rp-3").is_delete());
    }

    #[test]
    fn a_copy_still_replicating_when_retention_runs_keeps_its_source() {
        // The source region's collection: rp-1 is old enough to be pruned by keepLast 2, but its
        // copy to westus2 is at 40 %, so the caller holds it.
        let mut points = every_4h(datetime!(2026-11-20 00:00 UTC), 5);
        points[1] = points[1]
            .clone()
            .held("copy to westus2 still replicating (40%)");
        let out = decide(&points, &retention(2));
        assert_eq!(
            verdict_of(&out, "rp-1"),
            &Verdict::Keep("held: copy to westus2 still replicating (40%)".into())
        );
        assert!(verdict_of(&out, "rp-2").is_delete());
        // Once the copy settled (no hold), the same point goes.
        let mut settled_copy = points.clone();
        settled_copy[1].hold = None;
        assert!(verdict_of(&decide(&settled_copy, &retention(2)), "rp-1").is_delete());
    }

    #[test]
    fn held_failed_point_is_kept() {
        let t = datetime!(2026-11-20 00:00 UTC);
        let points = vec![
            PointView::new(rid("rp-f"), t, PointState::Failed).held("under investigation"),
            settled("rp-s", t + time::Duration::hours(4)),
        ];
        let out = decide(&points, &retention(1));
        assert_eq!(
            verdict_of(&out, "rp-f"),
            &Verdict::Keep("held: under investigation".into())
        );
    }

    #[test]
    fn baseline_survives_even_with_keep_last_zero_and_tiers() {
        let points = every_4h(datetime!(2026-11-20 00:00 UTC), 3);
        let r = Retention {
            keep_last: 0,
            daily: Some(1),
            weekly: None,
            monthly: None,
            floor: 0,
        };
        // All three on 2026-11-20: daily keeps rp-2, baseline rp-0, rp-1 goes.
        assert_eq!(
            plan(&points, &r),
            vec![
                ("rp-0".to_string(), true),
                ("rp-1".to_string(), false),
                ("rp-2".to_string(), true)
            ]
        );
    }

    #[test]
    fn baseline_is_the_oldest_settled_point_not_an_older_failed_one() {
        let t = datetime!(2026-11-20 00:00 UTC);
        let points = vec![
            PointView::new(rid("rp-0"), t, PointState::Failed),
            settled("rp-1", t + time::Duration::hours(4)),
            settled("rp-2", t + time::Duration::hours(8)),
            settled("rp-3", t + time::Duration::hours(12)),
        ];
        let out = decide(&points, &retention(1));
        assert!(verdict_of(&out, "rp-0").is_delete());
        assert!(verdict_of(&out, "rp-1").reason().starts_with("baseline"));
        assert!(verdict_of(&out, "rp-2").is_delete());
    }

    #[test]
    fn floor_keeps_newest_points_when_tiers_alone_would_keep_fewer() {
        let points = every_4h(datetime!(2026-11-20 00:00 UTC), 5);
        let r = Retention {
            keep_last: 0,
            daily: Some(1),
            weekly: None,
            monthly: None,
            floor: 3,
        };
        let out = decide(&points, &r);
        // 5 points on one day; daily 1 keeps rp-4, the floor rp-2..rp-4, baseline rp-0.
        let keeps: Vec<bool> = out.iter().map(|(_, v)| !v.is_delete()).collect();
        assert_eq!(keeps, vec![true, false, true, true, true]);
        assert_eq!(
            verdict_of(&out, "rp-2").reason(),
            "floor of 3 settled points"
        );
    }

    #[test]
    fn floor_counts_only_settled_points() {
        let mut points = every_4h(datetime!(2026-11-20 00:00 UTC), 5);
        points[4].state = PointState::InProgress;
        points[3].state = PointState::Failed;
        let r = Retention {
            floor: 2,
            ..retention(1)
        };
        let out = decide(&points, &r);
        // Settled rp-0..rp-2: newest 1 = rp-2, floor 2 = rp-1 and rp-2, baseline rp-0.
        // rp-3 is the latest failure (newer than every settled point), rp-4 in progress: all kept.
        assert!(out.iter().all(|(_, v)| !v.is_delete()));
        assert_eq!(
            verdict_of(&out, "rp-1").reason(),
            "floor of 2 settled points"
        );
    }

    #[test]
    fn daily_tier_keeps_newest_of_each_of_the_last_days_with_points() {
        // Two points a day for 10 days, skipping 2026-11-05 (no points that day).
        let mut points = Vec::new();
        for day in 1..=11u8 {
            if day == 5 {
                continue;
            }
            let d = time::Date::from_calendar_date(2026, time::Month::November, day).unwrap();
            for (i, hour) in [(0, 6u8), (1, 18u8)] {
                let t = d.with_hms(hour, 0, 0).unwrap().assume_utc();
                points.push(settled(&format!("rp-{day:02}-{i}"), t));
            }
        }
        let r = Retention {
            keep_last: 1,
            daily: Some(7),
            weekly: None,
            monthly: None,
            floor: 1,
        };
        let out = decide(&points, &r);
        let kept: Vec<&str> = out
            .iter()
            .filter(|(_, v)| !v.is_delete())
            .map(|(id, _)| id.name().unwrap())
            .collect();
        // Last 7 days that have points: 11,10,9,8,7,6,4 (5 has none) → evening point of each;
        // plus the baseline (1st, morning).
        assert_eq!(
            kept,
            vec![
                "rp-01-0", "rp-04-1", "rp-06-1", "rp-07-1", "rp-08-1", "rp-09-1", "rp-10-1",
                "rp-11-1"
            ]
        );
        assert_eq!(
            verdict_of(&out, "rp-04-1").reason(),
            "daily 7: newest of 2026-11-04"
        );
        assert_eq!(
            verdict_of(&out, "rp-11-1").reason(),
            "newest 1; floor of 1 settled points; daily 7: newest of 2026-11-11"
        );
        assert_eq!(
            verdict_of(&out, "rp-03-1"),
            &Verdict::Delete(
                "beyond retention: 14 newer settled points (keepLast 1, daily 7)".into()
            )
        );
    }

    #[test]
    fn weekly_tier_uses_iso_weeks() {
        // 2026-11-29 is a Sunday (ISO week 48), 2026-11-30 a Monday (week 49).
        let points = vec![
            settled("rp-a", datetime!(2026-11-22 12:00 UTC)), // Sunday, W47
            settled("rp-b", datetime!(2026-11-28 12:00 UTC)), // Saturday, W48
            settled("rp-c", datetime!(2026-11-29 12:00 UTC)), // Sunday, W48
            settled("rp-d", datetime!(2026-11-30 12:00 UTC)), // Monday, W49
            settled("rp-e", datetime!(2026-12-01 12:00 UTC)), // Tuesday, W49
        ];
        let r = Retention {
            keep_last: 0,
            daily: None,
            weekly: Some(2),
            monthly: None,
            floor: 0,
        };
        let out = decide(&points, &r);
        assert_eq!(
            plan(&points, &r),
            vec![
                ("rp-a".to_string(), true), // baseline
                ("rp-b".to_string(), false),
                ("rp-c".to_string(), true), // newest of W48
                ("rp-d".to_string(), false),
                ("rp-e".to_string(), true), // newest of W49
            ]
        );
        assert_eq!(
            verdict_of(&out, "rp-c").reason(),
            "weekly 2: newest of 2026-W48"
        );
    }

    #[test]
    fn iso_week_spans_the_new_year() {
        // 2026-12-31 (Thursday) and 2027-01-01 (Friday) are both in ISO week 2026-W53.
        let points = vec![
            settled("rp-a", datetime!(2026-12-20 12:00 UTC)),
            settled("rp-b", datetime!(2026-12-31 12:00 UTC)),
            settled("rp-c", datetime!(2027-01-01 12:00 UTC)),
        ];
        let r = Retention {
            keep_last: 0,
            daily: None,
            weekly: Some(1),
            monthly: None,
            floor: 0,
        };
        let out = decide(&points, &r);
        assert!(verdict_of(&out, "rp-b").is_delete());
        assert_eq!(
            verdict_of(&out, "rp-c").reason(),
            "weekly 1: newest of 2026-W53"
        );
    }

    #[test]
    fn monthly_tier_keeps_newest_of_each_month() {
        let points = vec![
            settled("rp-a", datetime!(2026-08-15 00:00 UTC)),
            settled("rp-b", datetime!(2026-09-01 00:00 UTC)),
            settled("rp-c", datetime!(2026-09-30 23:59 UTC)),
            settled("rp-d", datetime!(2026-10-31 00:00 UTC)),
            settled("rp-e", datetime!(2026-11-01 00:00 UTC)),
            settled("rp-f", datetime!(2026-11-20 00:00 UTC)),
        ];
        let r = Retention {
            keep_last: 1,
            daily: None,
            weekly: None,
            monthly: Some(3),
            floor: 1,
        };
        assert_eq!(
            plan(&points, &r),
            vec![
                ("rp-a".to_string(), true), // baseline
                ("rp-b".to_string(), false),
                ("rp-c".to_string(), true), // September
                ("rp-d".to_string(), true), // October
                ("rp-e".to_string(), false),
                ("rp-f".to_string(), true), // November + newest 1
            ]
        );
    }

    #[test]
    fn tiers_bucket_by_utc_not_by_the_offset_given() {
        // 23:00 at UTC-2 is 01:00 UTC on the 20th: same UTC day as rp-b, although its local
        // date is the 19th.
        let points = vec![
            settled("rp-a", datetime!(2026-11-18 12:00 UTC)),
            settled("rp-d", datetime!(2026-11-19 06:00 UTC)),
            settled("rp-b", datetime!(2026-11-20 00:30 UTC)),
            settled("rp-c", datetime!(2026-11-19 23:00 -2)),
        ];
        let r = Retention {
            keep_last: 0,
            daily: Some(2),
            weekly: None,
            monthly: None,
            floor: 0,
        };
        let out = decide(&points, &r);
        assert!(verdict_of(&out, "rp-b").is_delete());
        assert_eq!(
            verdict_of(&out, "rp-c").reason(),
            "daily 2: newest of 2026-11-20"
        );
        assert_eq!(
            verdict_of(&out, "rp-d").reason(),
            "daily 2: newest of 2026-11-19"
        );
        assert!(verdict_of(&out, "rp-a").reason().starts_with("baseline"));
    }

    #[test]
    fn failed_points_older_than_the_newest_settled_point_are_deleted() {
        let mut points = every_4h(datetime!(2026-11-20 00:00 UTC), 5);
        points[2].state = PointState::Failed;
        points[4].state = PointState::Failed;
        let out = decide(&points, &retention(10));
        assert_eq!(
            verdict_of(&out, "rp-2"),
            &Verdict::Delete("failed, and a newer point has settled".into())
        );
        // rp-4 is newer than every settled point: the latest failure stays as evidence.
        assert_eq!(
            verdict_of(&out, "rp-4"),
            &Verdict::Keep("latest failure: kept as evidence until a newer point settles".into())
        );
    }

    #[test]
    fn all_failed_keeps_only_the_latest_failure() {
        let points: Vec<PointView> = every_4h(datetime!(2026-11-20 00:00 UTC), 3)
            .into_iter()
            .map(|mut p| {
                p.state = PointState::Failed;
                p
            })
            .collect();
        let out = decide(&points, &retention(5));
        assert_eq!(
            verdict_of(&out, "rp-0"),
            &Verdict::Delete("failed, and a newer failure supersedes it".into())
        );
        assert!(verdict_of(&out, "rp-1").is_delete());
        assert!(!verdict_of(&out, "rp-2").is_delete());
    }

    #[test]
    fn a_single_settled_point_is_kept_even_with_keep_last_zero() {
        let points = vec![settled("rp-0", datetime!(2026-11-20 00:00 UTC))];
        let r = Retention {
            floor: 0,
            ..retention(0)
        };
        assert_eq!(plan(&points, &r), vec![("rp-0".to_string(), true)]);
    }

    #[test]
    fn settled_count_never_exceeds_keep_last_plus_tiers_plus_baseline() {
        // A property over many shapes: the bound the 500-points validation relies on.
        for n in 0..40usize {
            for (keep, daily, weekly) in [
                (0, Some(3), None),
                (5, None, Some(2)),
                (2, Some(2), Some(2)),
            ] {
                let points = every_4h(datetime!(2026-11-01 00:00 UTC), n);
                let r = Retention {
                    keep_last: keep,
                    daily,
                    weekly,
                    monthly: None,
                    floor: 0,
                };
                let kept = decide(&points, &r)
                    .iter()
                    .filter(|(_, v)| !v.is_delete())
                    .count();
                let bound = keep + daily.unwrap_or(0) + weekly.unwrap_or(0) + 1;
                assert!(kept as u32 <= bound, "n={n} kept={kept} bound={bound}");
                assert!(n == 0 || kept >= 1);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn arb_state() -> impl Strategy<Value = PointState> {
            prop_oneof![
                6 => Just(PointState::Settled),
                1 => Just(PointState::InProgress),
                1 => Just(PointState::Failed),
            ]
        }

        fn arb_points() -> impl Strategy<Value = Vec<PointView>> {
            // Up to 60 points over ~120 days, some on the same instant, a few held.
            prop::collection::vec(
                (0i64..120 * 24, arb_state(), prop::bool::weighted(0.1)),
                0..60,
            )
            .prop_map(|raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, (hours, state, held))| {
                        let p = PointView::new(
                            rid(&format!("rp-{i:02}")),
                            datetime!(2026-08-01 00:00 UTC) + time::Duration::hours(hours),
                            state,
                        );
                        if held {
                            p.held("copy still replicating")
                        } else {
                            p
                        }
                    })
                    .collect()
            })
        }

        fn arb_retention() -> impl Strategy<Value = Retention> {
            (
                0u32..8,
                prop::option::of(1u32..8),
                prop::option::of(1u32..5),
                prop::option::of(1u32..4),
                0u32..4,
            )
                .prop_map(|(keep_last, daily, weekly, monthly, floor)| Retention {
                    keep_last,
                    daily,
                    weekly,
                    monthly,
                    floor,
                })
        }

        proptest! {
            #[test]
            fn invariants_hold(points in arb_points(), r in arb_retention(), seed in any::<u64>()) {
                let out = decide(&points, &r);
                // Every point exactly once, oldest first.
                prop_assert_eq!(out.len(), points.len());
                let mut expected: Vec<&PointView> = points.iter().collect();
                expected.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
                for ((id, _), p) in out.iter().zip(&expected) {
                    prop_assert_eq!(id, &p.id);
                }
                let verdict = |id: &ResourceId| &out.iter().find(|(i, _)| i == id).unwrap().1;
                // Never deleted: in progress, held.
                for p in &points {
                    if p.state == PointState::InProgress || p.hold.is_some() {
                        prop_assert!(!verdict(&p.id).is_delete(), "{:?}", p);
                    }
                }
                // Never deleted: the baseline and the newest max(keepLast, floor) settled points.
                let settled: Vec<&&PointView> =
                    expected.iter().filter(|p| p.state == PointState::Settled).collect();
                if let Some(baseline) = settled.first() {
                    prop_assert!(!verdict(&baseline.id).is_delete());
                }
                let protected = r.keep_last.max(r.floor) as usize;
                for p in settled.iter().rev().take(protected) {
                    prop_assert!(!verdict(&p.id).is_delete());
                }
                // Bounded: the count the 500-point validation relies on (held points come on top).
                let kept_settled = settled
                    .iter()
                    .filter(|p| p.hold.is_none() && !verdict(&p.id).is_delete())
                    .count();
                prop_assert!(kept_settled as u32 <= r.max_settled());
                // At most one failed point survives unless held.
                let kept_failed = points
                    .iter()
                    .filter(|p| p.state == PointState::Failed && p.hold.is_none())
                    .filter(|p| !verdict(&p.id).is_delete())
                    .count();
                prop_assert!(kept_failed <= 1);
                // The input order does not matter.
                let mut shuffled = points.clone();
                let n = shuffled.len();
                if n > 1 {
                    for i in 0..n {
                        let j = (seed as usize).wrapping_mul(i + 7) % n;
                        shuffled.swap(i, j);
                    }
                }
                prop_assert_eq!(decide(&shuffled, &r), out);
            }
        }
    }
}
