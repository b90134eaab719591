//! The coverage signal of every timer run: per rule, region and role, how many VMs are covered
//! (their newest settled point is from the latest tick that should be done by now) out of how
//! many the policy expects, and the age of the oldest newest-settled point. One structured log
//! event per line (target [`COVERAGE_TARGET`]), so Application Insights / Log Analytics can chart
//! it and alert on it as a log-based metric (infra/modules/alerts.bicep).
//!
//! Measuring costs reads: the timer's collection listing does not carry points, so each existing
//! collection is read once with `$expand=restorePoints`, plus one restore point GET with
//! `instanceView` for a copy whose replication the listing does not show. A collection the
//! listing proved absent costs nothing. The reads are capped per run
//! ([`crate::functions::support::Tuning::coverage_max_reads`]); VMs past the cap are counted as
//! `unknown`, never as covered.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::azure::models::{ProvisioningState, RestorePoint};
use crate::azure::{Arm, ResourceId};
use crate::policy::Rule;
use crate::schedule::Schedule;

/// `tracing` target of the coverage events.
pub const COVERAGE_TARGET: &str = "vmrp::coverage";

/// Which of a VM's regions a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Local,
    Copy,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Local => "local",
            Role::Copy => "copy",
        }
    }
}

/// What the timer learnt about one VM in one region.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRegionState {
    pub rule: String,
    pub region: String,
    pub role: Role,
    /// `Some(None)`: read, and no settled point. `None`: not read (read cap reached, or the
    /// read failed).
    pub newest_settled: Option<Option<OffsetDateTime>>,
    /// The tick this VM's newest settled point must be from (or newer) to count as covered:
    /// the latest occurrence of its schedule at or before `now - deadline`.
    pub due: Option<OffsetDateTime>,
}

/// One coverage line: a rule, a region and a role.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageLine {
    pub rule: String,
    pub region: String,
    pub role: Role,
    pub expected: usize,
    pub covered: usize,
    /// VMs without any settled point here.
    pub never_settled: usize,
    /// VMs not read this run (read cap).
    pub unknown: usize,
    /// Age of the oldest newest-settled point among VMs that have one (seconds).
    pub oldest_newest_settled_age_s: Option<i64>,
}

impl CoverageLine {
    /// Covered share in percent (100 when nothing is expected).
    pub fn percent(&self) -> f64 {
        if self.expected == 0 {
            100.0
        } else {
            (self.covered as f64 * 1000.0 / self.expected as f64).round() / 10.0
        }
    }
}

/// Groups VM states into coverage lines (sorted by rule, region, role).
pub fn summarise(states: &[VmRegionState], now: OffsetDateTime) -> Vec<CoverageLine> {
    let mut lines: BTreeMap<(String, String, Role), CoverageLine> = BTreeMap::new();
    for s in states {
        let line = lines
            .entry((s.rule.clone(), s.region.clone(), s.role))
            .or_insert_with(|| CoverageLine {
                rule: s.rule.clone(),
                region: s.region.clone(),
                role: s.role,
                expected: 0,
                covered: 0,
                never_settled: 0,
                unknown: 0,
                oldest_newest_settled_age_s: None,
            });
        line.expected += 1;
        match s.newest_settled {
            None => line.unknown += 1,
            Some(None) => line.never_settled += 1,
            Some(Some(t)) => {
                if s.due.is_none_or(|due| t >= due) {
                    line.covered += 1;
                }
                let age = (now - t).whole_seconds().max(0);
                line.oldest_newest_settled_age_s =
                    Some(line.oldest_newest_settled_age_s.map_or(age, |a| a.max(age)));
            }
        }
    }
    lines.into_values().collect()
}

/// The tick a point must be from to count at `now`: the latest tick at which the rule is due
/// (`Rule::latest_due_tick`, as the handlers and `vmrp status` judge it) that is at least the
/// deadline old.
pub fn due_tick(
    rule: &Rule,
    timer: &Schedule,
    now: OffsetDateTime,
    deadline_minutes: u32,
) -> Option<OffsetDateTime> {
    let judged_at = now - time::Duration::minutes(i64::from(deadline_minutes));
    rule.latest_due_tick(timer, judged_at).ok().flatten()
}

/// Logs one event per line at Information (a metric, not a failure: the alert decides). Each
/// planning invocation measures one subscription (`subscription`; empty when one plan covered
/// every subscription), so the alert groups by it too: two subscriptions' lines for one rule,
/// region and role are two signals, not one.
pub fn emit(lines: &[CoverageLine], tick: OffsetDateTime, subscription: Option<&str>) {
    let tick = crate::schedule::rfc3339(tick);
    let subscription = subscription.unwrap_or_default();
    for l in lines {
        tracing::info!(
            target: "vmrp::coverage",
            tick = %tick,
            subscription = %subscription,
            rule = %l.rule,
            region = %l.region,
            role = l.role.as_str(),
            expected = l.expected as u64,
            covered = l.covered as u64,
            never_settled = l.never_settled as u64,
            unknown = l.unknown as u64,
            percent = l.percent(),
            oldest_age_s = l.oldest_newest_settled_age_s.unwrap_or(-1),
            "coverage {}/{} {} {} {}",
            l.covered,
            l.expected,
            l.rule,
            l.region,
            l.role.as_str()
        );
    }
}

/// Reads what a collection says about its newest settled point, spending at most `budget`
/// reads (decremented). `Ok(None)` when the budget is spent.
pub async fn newest_settled(
    arm: &dyn Arm,
    collection: &ResourceId,
    role: Role,
    budget: &mut usize,
) -> Option<Option<OffsetDateTime>> {
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    let full = match arm.get_collection(collection, true).await {
        Ok(Some(c)) => c,
        Ok(None) => return Some(None),
        Err(e) => {
            tracing::warn!(collection = %collection, code = %e.code, "coverage: reading the collection failed");
            return None;
        }
    };
    let mut points: Vec<&RestorePoint> = full
        .restore_points()
        .iter()
        .filter(|p| p.provisioning_state() == ProvisioningState::Succeeded)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.time_created()));
    if role == Role::Local {
        return Some(points.first().and_then(|p| p.time_created()));
    }
    // A copy's `Succeeded` only means started: settled is every disk at 100 %. The newest
    // replicated copy is usually the newest or the one before it.
    for p in points.into_iter().take(2) {
        let percents = if p.replication_percents().is_empty() {
            let Some(id) = p.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
                continue;
            };
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            match arm.get_restore_point(&id, true).await {
                Ok(Some(detail)) => detail.replication_percents(),
                _ => return None,
            }
        } else {
            p.replication_percents()
        };
        if !percents.is_empty() && percents.iter().all(|&pc| pc >= 100) {
            return Some(p.time_created());
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn state(
        region: &str,
        role: Role,
        newest: Option<Option<OffsetDateTime>>,
        due: OffsetDateTime,
    ) -> VmRegionState {
        VmRegionState {
            rule: "r".into(),
            region: region.into(),
            role,
            newest_settled: newest,
            due: Some(due),
        }
    }

    #[test]
    fn lines_count_covered_never_and_unknown_per_region_and_role() {
        let now = datetime!(2026-11-25 12:30 UTC);
        let due = datetime!(2026-11-25 08:00 UTC);
        let states = [
            state(
                "eastus",
                Role::Local,
                Some(Some(datetime!(2026-11-25 08:01 UTC))),
                due,
            ),
            state(
                "eastus",
                Role::Local,
                Some(Some(datetime!(2026-11-25 04:01 UTC))),
                due,
            ),
            state("eastus", Role::Local, Some(None), due),
            state("eastus", Role::Local, None, due),
            state(
                "westus",
                Role::Copy,
                Some(Some(datetime!(2026-11-25 08:30 UTC))),
                due,
            ),
        ];
        let lines = summarise(&states, now);
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!((l.region.as_str(), l.role), ("eastus", Role::Local));
        assert_eq!(
            (l.expected, l.covered, l.never_settled, l.unknown),
            (4, 1, 1, 1)
        );
        // The 04:01 point is the oldest newest-settled one: 8 h 29 min.
        assert_eq!(l.oldest_newest_settled_age_s, Some(8 * 3600 + 29 * 60));
        assert_eq!(l.percent(), 25.0);
        let c = &lines[1];
        assert_eq!((c.expected, c.covered), (1, 1));
        assert_eq!(c.percent(), 100.0);
    }

    #[test]
    fn due_tick_leaves_the_deadline_to_the_newest_tick() {
        let s = Schedule::parse("0 0 */4 * * *").unwrap();
        let every_tick = crate::testing::rule("r", 3);
        assert_eq!(
            due_tick(&every_tick, &s, datetime!(2026-11-25 12:30 UTC), 120),
            Some(datetime!(2026-11-25 08:00 UTC))
        );
        assert_eq!(
            due_tick(&every_tick, &s, datetime!(2026-11-25 14:00 UTC), 120),
            Some(datetime!(2026-11-25 12:00 UTC))
        );
        // A rule with its own daily schedule is due at the first timer tick after 04:00 only.
        let mut daily = every_tick.clone();
        daily.schedule = Some("0 0 4 * * *".into());
        assert_eq!(
            due_tick(&daily, &s, datetime!(2026-11-25 14:00 UTC), 120),
            Some(datetime!(2026-11-25 04:00 UTC))
        );
    }
}
