//! The policy's `drills` section: when restore drills run (`vmrp::drill`), how many VMs each
//! run drills, in which regions (`"local"`: the VM's own points; a region name: the copies there)
//! and into which resource group (the only place drills write, and the only scope the drill role
//! grants disk write/delete on). The coverage period is derived, not configured: a fleet of `F`
//! VMs is drilled within ⌈F / vmsPerRun⌉ runs of `schedule` ([`Drills::coverage_period`]).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::azure::ResourceId;
use crate::schedule::Schedule;

/// `regions` entry for the VM's own (home) points.
pub const LOCAL: &str = "local";

/// Default schedule: daily at 02:00 UTC, away from the timer's default `0 0 */4 * * *` ticks.
pub const DEFAULT_DRILL_SCHEDULE: &str = "0 30 2 * * *";

/// At most this many VMs per run: each VM costs one disk PUT and DELETE per disk and region, and
/// a run must stay well inside one invocation (docs/restore.md, drills).
pub const MAX_VMS_PER_RUN: u32 = 50;

/// `drills: { schedule, vmsPerRun, regions, resourceGroup, coverWithinDays }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drills {
    /// NCRONTAB (six fields) of the drill runs.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    #[serde(default = "default_vms_per_run")]
    pub vms_per_run: u32,
    /// `"local"` and/or copy region names; default `["local"]`.
    #[serde(default = "default_regions")]
    pub regions: Vec<String>,
    /// The drill resource group: a name (in each VM's subscription) or a full
    /// `/subscriptions/{id}/resourceGroups/{name}` id.
    pub resource_group: String,
    /// A stated goal: every VM drilled within this many days. `vmrp policy check` says how many
    /// VMs that allows, and warns when a single run interval already exceeds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_within_days: Option<u32>,
}

fn default_schedule() -> String {
    DEFAULT_DRILL_SCHEDULE.into()
}
fn default_vms_per_run() -> u32 {
    1
}
fn default_regions() -> Vec<String> {
    vec![LOCAL.into()]
}

/// Where one VM's drill writes: subscription and resource group name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillGroup {
    pub subscription: String,
    pub name: String,
}

impl Drills {
    /// The drill group for `vm`: the id's, or the name in the VM's subscription.
    pub fn group_for(&self, vm: &ResourceId) -> DrillGroup {
        match ResourceId::parse(&self.resource_group) {
            Ok(id) if id.resource_group().is_some() => DrillGroup {
                subscription: id.subscription().to_string(),
                name: id.resource_group().unwrap_or_default().to_string(),
            },
            _ => DrillGroup {
                subscription: vm.subscription().to_string(),
                name: self.resource_group.clone(),
            },
        }
    }

    /// The regions to drill for a VM: `(region, copy)`, `"local"` resolved to `home`. A copy
    /// region equal to the VM's own is left out: a VM has no copy in its own region (the
    /// create drops it), and `"local"` drills that region.
    pub fn targets(&self, home: &str) -> Vec<(String, bool)> {
        let home = crate::policy::regions::canonical_region(home);
        let mut out: Vec<(String, bool)> = Vec::new();
        for r in &self.regions {
            let t = if r.eq_ignore_ascii_case(LOCAL) {
                (home.clone(), false)
            } else {
                let region = crate::policy::regions::canonical_region(r);
                if region == home {
                    continue;
                }
                (region, true)
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The longest gap between two runs over the year after `from` (the bound the stated period
    /// uses), `None` when the schedule does not parse or has fewer than two runs a year.
    pub fn run_interval(&self, from: OffsetDateTime) -> Option<Duration> {
        let s = Schedule::parse(&self.schedule).ok()?;
        let until = from.saturating_add(Duration::days(366));
        let mut prev = s.next_after(from)?;
        let mut max: Option<Duration> = None;
        let mut n = 0;
        while let Some(next) = s.next_after(prev) {
            if next > until || n > 20_000 {
                break;
            }
            max = Some(max.map_or(next - prev, |m| m.max(next - prev)));
            prev = next;
            n += 1;
        }
        max
    }

    /// The stated coverage period for a fleet of `vms`: ⌈vms / vmsPerRun⌉ runs × the longest
    /// gap between runs.
    pub fn coverage_period(&self, vms: usize, from: OffsetDateTime) -> Option<Duration> {
        let runs = runs_to_cover(vms, self.vms_per_run as usize);
        let gap = self.run_interval(from)?;
        Some(gap * (runs.min(i32::MAX as u64) as i32))
    }

    /// The problems of this section, as `(field, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |f: &str, m: String| out.push((format!("drills.{f}"), m));
        if let Err(e) = Schedule::parse(&self.schedule) {
            push("schedule", e.to_string());
        }
        if self.vms_per_run == 0 || self.vms_per_run > MAX_VMS_PER_RUN {
            push(
                "vmsPerRun",
                format!(
                    "{} is out of range: 1 to {MAX_VMS_PER_RUN} (each run must finish inside one invocation)",
                    self.vms_per_run
                ),
            );
        }
        if self.regions.is_empty() {
            push(
                "regions",
                "empty: name \"local\" and/or copy regions (e.g. [\"local\", \"swedencentral\"])"
                    .into(),
            );
        }
        let mut seen = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            let key = if r.eq_ignore_ascii_case(LOCAL) {
                LOCAL.to_string()
            } else {
                match crate::policy::regions::known_region(r) {
                    Ok(name) => name.to_string(),
                    Err(e) => {
                        push(
                            &format!("regions[{i}]"),
                            format!("{e}; or \"local\" for the VM's own region"),
                        );
                        continue;
                    }
                }
            };
            if seen.contains(&key) {
                push(&format!("regions[{i}]"), format!("{r:?} is listed twice"));
            }
            seen.push(key);
        }
        let group = &self.resource_group;
        let problem = if group.starts_with('/') {
            super::validate::resource_group_id_problem(group)
        } else {
            super::validate::resource_group_name_problem(group)
        };
        if let Some(p) = problem {
            push("resourceGroup", p);
        }
        if self.cover_within_days == Some(0) {
            push(
                "coverWithinDays",
                "0 cannot be met; omit it or use at least 1".into(),
            );
        }
        out
    }

    /// The role assignments the drill role gets for a fleet in `subscriptions`: disk write and
    /// delete at the drill group (one per subscription for a group given by name), as ARM ids.
    pub fn role_scopes(&self, subscriptions: &[String]) -> Vec<String> {
        if self.resource_group.starts_with('/') {
            return vec![self.resource_group.clone()];
        }
        subscriptions
            .iter()
            .map(|s| format!("/subscriptions/{s}/resourceGroups/{}", self.resource_group))
            .collect()
    }

    /// The line `vmrp policy check` prints, and a warning when the goal cannot be met.
    pub fn summary(&self, now: OffsetDateTime) -> (String, Option<String>) {
        let gap = self.run_interval(now);
        let gap_text = gap.map_or("?".to_string(), human);
        let mut line = format!(
            "drills: {} VM{} per run at {:?} (runs up to {gap_text} apart) in {} into resource group {}; a fleet of F VMs is drilled within ⌈F/{}⌉ runs (e.g. 100 VMs within {})",
            self.vms_per_run,
            if self.vms_per_run == 1 { "" } else { "s" },
            self.schedule,
            self.regions.join(", "),
            self.resource_group,
            self.vms_per_run,
            self.coverage_period(100, now).map_or("?".to_string(), human),
        );
        let mut warning = None;
        if let (Some(days), Some(gap)) = (self.cover_within_days, gap) {
            let goal = Duration::days(i64::from(days));
            let runs = (goal.whole_seconds() / gap.whole_seconds().max(1)).max(0) as u64;
            let fits = runs.saturating_mul(u64::from(self.vms_per_run));
            line.push_str(&format!(
                "; the goal of {days} day(s) holds for a fleet of up to {fits} VMs"
            ));
            if runs == 0 {
                warning = Some(format!(
                    "drills.coverWithinDays {days}: runs are up to {} apart, so not even one run fits the goal",
                    human(gap)
                ));
            }
        }
        (line, warning)
    }
}

/// `3 d 4 h`, `1 h 30 min`.
fn human(d: Duration) -> String {
    let secs = d.whole_seconds();
    let (days, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days} d"));
    }
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 || parts.is_empty() {
        parts.push(format!("{m} min"));
    }
    parts.join(" ")
}

/// How many runs cover every VM at least once: the period the policy states.
pub fn runs_to_cover(vms: usize, per_run: usize) -> u64 {
    if vms == 0 {
        return 0;
    }
    vms.div_ceil(per_run.max(1)) as u64
}

/// One drill's result (the `drill` event's payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    pub vm: String,
    pub region: String,
    /// A copy region's point (`true`) or the VM's own (`false`).
    pub copy: bool,
    pub point: Option<String>,
    pub passed: bool,
    pub reason: Option<String>,
    /// Time to restore every disk (absent when the restore did not finish).
    pub seconds_to_restore: Option<f64>,
    /// The disks it created; all deleted again when `cleaned`.
    pub disks: Vec<String>,
    pub cleaned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn drills(json: &str) -> Drills {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_derived_period() {
        let d = drills(r#"{"resourceGroup":"rg-drill"}"#);
        assert_eq!(d.schedule, DEFAULT_DRILL_SCHEDULE);
        assert_eq!(d.vms_per_run, 1);
        assert_eq!(d.regions, vec!["local"]);
        assert!(d.problems().is_empty());
        let now = datetime!(2026-12-01 00:00 UTC);
        assert_eq!(d.run_interval(now), Some(Duration::days(1)));
        // 10 VMs, one a day: ten days.
        assert_eq!(d.coverage_period(10, now), Some(Duration::days(10)));
        let d = drills(r#"{"resourceGroup":"rg","vmsPerRun":4,"schedule":"0 0 */6 * * *"}"#);
        // 10 VMs, four per run, every 6 h: three runs, 18 h.
        assert_eq!(d.coverage_period(10, now), Some(Duration::hours(18)));
        // Irregular schedule: the longest gap bounds the period (Mon and Thu: 4 days).
        let d = drills(r#"{"resourceGroup":"rg","schedule":"0 0 1 * * 1,4"}"#);
        assert_eq!(d.run_interval(now), Some(Duration::days(4)));
    }

    #[test]
    fn every_field_is_validated() {
        let cases = [
            (
                r#"{"resourceGroup":"rg","schedule":"daily"}"#,
                "drills.schedule",
            ),
            (
                r#"{"resourceGroup":"rg","vmsPerRun":0}"#,
                "drills.vmsPerRun",
            ),
            (
                r#"{"resourceGroup":"rg","vmsPerRun":51}"#,
                "drills.vmsPerRun",
            ),
            (r#"{"resourceGroup":"rg","regions":[]}"#, "drills.regions"),
            (
                r#"{"resourceGroup":"rg","regions":["local","mars"]}"#,
                "drills.regions[1]",
            ),
            (
                r#"{"resourceGroup":"rg","regions":["Sweden Central","swedencentral"]}"#,
                "drills.regions[1]",
            ),
            (r#"{"resourceGroup":"rg."}"#, "drills.resourceGroup"),
            (
                r#"{"resourceGroup":"/subscriptions/x/resourceGroups/rg"}"#,
                "drills.resourceGroup",
            ),
            // An id without a group: refused, so `group_for` never sees one.
            (
                r#"{"resourceGroup":"/subscriptions/00000000-0000-0000-0000-000000000009"}"#,
                "drills.resourceGroup",
            ),
            (
                r#"{"resourceGroup":"rg","coverWithinDays":0}"#,
                "drills.coverWithinDays",
            ),
        ];
        for (json, field) in cases {
            let p = drills(json).problems();
            assert_eq!(p.len(), 1, "{json}: {p:?}");
            assert_eq!(p[0].0, field, "{json}: {p:?}");
        }
        assert!(serde_json::from_str::<Drills>(r#"{"resourceGroup":"rg","vms":1}"#).is_err());
        assert!(
            serde_json::from_str::<Drills>(r#"{}"#).is_err(),
            "resourceGroup is required"
        );
    }

    /// `run_interval` looks at the year after `from` only: 29 February (next in 2028, then
    /// 2032) and 1 January have fewer than two runs in it, so no interval (not the 4-year or
    /// 1-year gap past it); 1 January and 1 July: 181 days, not the 184 that end past the year;
    /// a run exactly a year (366 days) after `from` is inside it.
    #[test]
    fn run_interval_looks_one_year_ahead_only() {
        let now = datetime!(2026-12-01 00:00 UTC);
        for (schedule, want) in [
            ("0 0 0 29 2 *", None),
            ("0 0 0 1 1 *", None),
            ("0 0 0 1 1,7 *", Some(Duration::days(181))),
            // 2 December: the second run falls exactly at the year's end, and counts.
            ("0 0 0 2 12 *", Some(Duration::days(365))),
        ] {
            let d = drills(&format!(
                r#"{{"resourceGroup":"rg","schedule":"{schedule}"}}"#
            ));
            assert_eq!(d.run_interval(now), want, "{schedule}");
        }
    }

    #[test]
    fn groups_and_targets_resolve_per_vm() {
        let vm = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap();
        let d =
            drills(r#"{"resourceGroup":"rg-drill","regions":["local","Sweden Central","LOCAL"]}"#);
        assert_eq!(
            d.group_for(&vm),
            DrillGroup {
                subscription: "00000000-0000-0000-0000-000000000001".into(),
                name: "rg-drill".into()
            }
        );
        assert_eq!(
            d.targets("West Europe"),
            vec![
                ("westeurope".to_string(), false),
                ("swedencentral".to_string(), true)
            ]
        );
        let d = drills(
            r#"{"resourceGroup":"/subscriptions/00000000-0000-0000-0000-000000000009/resourceGroups/dr"}"#,
        );
        assert!(d.problems().is_empty());
        assert_eq!(
            d.group_for(&vm).subscription,
            "00000000-0000-0000-0000-000000000009"
        );
        assert_eq!(d.group_for(&vm).name, "dr");
    }

    #[test]
    fn the_summary_states_the_period_and_warns_on_an_unreachable_goal() {
        let now = datetime!(2026-12-01 00:00 UTC);
        let d = drills(r#"{"resourceGroup":"rg","vmsPerRun":5,"coverWithinDays":7}"#);
        let (line, warning) = d.summary(now);
        assert!(line.contains("100 VMs within 20 d"), "{line}");
        assert!(line.contains("up to 35 VMs"), "{line}");
        assert!(warning.is_none());
        let d = drills(r#"{"resourceGroup":"rg","schedule":"0 0 0 1 * *","coverWithinDays":7}"#);
        let (_, warning) = d.summary(now);
        assert!(warning.unwrap().contains("not even one run"));
    }
}
