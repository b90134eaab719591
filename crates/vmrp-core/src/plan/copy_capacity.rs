//! Whether a tick's cross-region copies can keep up, said before the tick runs.
//!
//! Azure replicates at most [`IN_FLIGHT_LIMIT`] (100) disk restore point copies at once per
//! subscription and target region (docs/emulator-arm.md, "Cross-region copy rules", rule
//! `copiesInFlightPerRegion`: "You can copy 100 incremental snapshots in parallel at the same
//! time per subscription per region",
//! <https://learn.microsoft.com/azure/virtual-machines/disks-copy-incremental-snapshot-across-regions>,
//! Restrictions; a restore point copy copies one snapshot per disk). A copy holds its slot while
//! it replicates, so one (subscription, region) pair finishes at most `100 × period / copy
//! duration` disk copies between two ticks of a rule. A tick that asks for more can never keep
//! up: its copies back up from tick to tick, and older ones are dropped (a copy more than a day
//! behind gives way to newer points, `start_cross_region_copy::COPY_BACKLOG_DROPPED`)
//! (docs/bench.md: 2,000 VMs × ~2.5 disks into one region every 4 h, ~18 times what fits).
//!
//! [`copy_shortfalls`] counts, per (subscription, target region), the disk copies the tick's
//! creates bring ([`Plan::creates`]: VMs left out, unsupported or not due bring none), with the
//! rule's own disk logic (`Rule::excluded_disks`: ephemeral OS, shared and `excludeDisks` disks
//! are not in the point, so not copied; `Rule::copies_from`: no copy to the VM's own region;
//! `Rule::unmapped_encryption_sets`: a region a customer-managed key cannot be copied to gets no
//! copy of that VM), and compares it with what fits before the rule's next tick
//! (`Rule::next_due_tick`). It also says when one tick's copies exceed the limit outright: more
//! than 100 then wait for a free slot, and the copy step puts them back until one frees.
//!
//! Microsoft states no copy duration (it depends on the data changed since the previous copy).
//! [`Pacing::copy_duration`] is an assumption, 1 h by default (`VMRP_COPY_DURATION_SECS`): an
//! optimistic figure (the emulator draws 1–2 h), so a shortfall said at the default is real.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use super::{Pacing, Plan, PlanTarget};
use crate::azure::ResourceId;
use crate::policy::regions::{canonical_region, same_region};
use crate::policy::Rule;
use crate::schedule::Schedule;

/// Disk restore point copies Azure replicates at once per subscription and target region.
pub const IN_FLIGHT_LIMIT: u32 = 100;

/// The copy duration [`Pacing::copy_duration`] assumes unless told otherwise: 1 h (no
/// Microsoft document states one; see the module doc).
pub const DEFAULT_COPY_DURATION: Duration = Duration::from_secs(3600);

/// How a (subscription, region) pair's copies of one tick fare against Azure's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortfallKind {
    /// More disk copies than replicate before the rule's next tick: the copies fall behind
    /// from tick to tick and older ones are dropped from the backlog.
    FallsBehind,
    /// More than [`IN_FLIGHT_LIMIT`] at once, but they fit before the next tick: the rest wait
    /// for a free slot (the copy step puts them back), and finish later in the period.
    Queues,
}

/// One (subscription, target region) pair whose copies of a tick exceed Azure's limit.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyShortfall {
    /// Lowercase subscription id.
    pub subscription: String,
    /// ARM region name (`swedencentral`).
    pub region: String,
    pub kind: ShortfallKind,
    /// Disk copies this tick's creates bring into the region.
    pub disk_copies: u64,
    /// VMs whose copies these are.
    pub vms: usize,
    /// Of those, VMs the plan saw no listing of (their disks unknown): counted as one disk
    /// each, so `disk_copies` is then a lower bound.
    pub unlisted_vms: usize,
    /// Disk copies that replicate before the next tick: `100 × period / copy_duration`
    /// (`None` when no rule copying there has a next tick).
    pub fit_per_period: Option<u64>,
    /// Time to the earliest next tick of the rules copying there (`Rule::next_due_tick`).
    pub period: Option<Duration>,
    /// The assumed duration of one disk copy ([`Pacing::copy_duration`]).
    pub copy_duration: Duration,
    /// The rules whose copies these are, sorted.
    pub rules: Vec<String>,
}

impl CopyShortfall {
    /// Whether the copies cannot keep up (rather than only queue within the period).
    pub fn falls_behind(&self) -> bool {
        self.kind == ShortfallKind::FallsBehind
    }
}

impl fmt::Display for CopyShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_least = if self.unlisted_vms > 0 {
            "at least "
        } else {
            ""
        };
        write!(
            f,
            "copies to {} in subscription {}: {at_least}{} disk copies this tick ({} VMs, rule {}{}); \
             Azure replicates at most {IN_FLIGHT_LIMIT} at once per subscription and region",
            self.region,
            self.subscription,
            thousands(self.disk_copies),
            thousands(self.vms as u64),
            self.rules.join(", "),
            if self.unlisted_vms > 0 {
                format!("; {} VMs unlisted, counted as one disk each", self.unlisted_vms)
            } else {
                String::new()
            },
        )?;
        let per = match (self.fit_per_period, self.period) {
            (Some(fit), Some(period)) => format!(
                ", about {} per {} at ~{} each",
                thousands(fit),
                human(period),
                human(self.copy_duration)
            ),
            _ => String::new(),
        };
        match self.kind {
            ShortfallKind::FallsBehind => write!(
                f,
                "{per}: copies will fall behind and older ones be dropped. Spread the VMs over \
                 more subscriptions, copy fewer disks (excludeDisks) or copy less often"
            ),
            ShortfallKind::Queues => write!(
                f,
                "{per}: the rest wait for a free slot and the copy step puts them back until one \
                 frees; they still finish before the next tick"
            ),
        }
    }
}

/// The (subscription, target region) pairs whose copies of `plan`'s creates exceed Azure's
/// limit, sorted by subscription and region: [`ShortfallKind::FallsBehind`] when more disk
/// copies than `100 × period / pacing.copy_duration` go there, else
/// [`ShortfallKind::Queues`] when more than 100. `targets` are the plan's (the first per VM id
/// counts, as in the plan); `timer` gives each rule's next tick.
pub fn copy_shortfalls(
    plan: &Plan,
    targets: &[PlanTarget<'_>],
    timer: &Schedule,
    pacing: &Pacing,
) -> Vec<CopyShortfall> {
    let mut by_vm: HashMap<&ResourceId, &PlanTarget<'_>> = HashMap::new();
    for t in targets {
        by_vm.entry(&t.vm).or_insert(t);
    }
    #[derive(Default)]
    struct Group<'r> {
        disk_copies: u64,
        vms: usize,
        unlisted_vms: usize,
        rules: BTreeMap<&'r str, &'r Rule>,
    }
    let mut groups: BTreeMap<(String, String), Group<'_>> = BTreeMap::new();
    for item in plan.creates() {
        let Some(target) = by_vm.get(&item.vm) else {
            continue;
        };
        let rule = target.rule;
        let (disks, regions) = match &target.listed {
            Some(l) => {
                // The disks the point holds: every managed disk the rule does not leave out.
                let excluded: BTreeSet<ResourceId> = rule
                    .excluded_disks(&l.vm, &l.disks)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let disks =
                    l.vm.disks()
                        .iter()
                        .filter_map(|d| d.managed_disk_id.as_ref())
                        .filter(|id| !excluded.contains(*id))
                        .count() as u64;
                // A region a customer-managed key cannot be copied to gets no copy at all.
                let unmapped = rule.unmapped_encryption_sets(&l.vm);
                let regions: Vec<String> = rule
                    .copies_from(l.vm.location.as_deref())
                    .into_iter()
                    .filter(|c| !unmapped.iter().any(|u| same_region(&u.region, &c.region)))
                    .map(|c| canonical_region(&c.region))
                    .collect();
                (Some(disks), regions)
            }
            None => (
                None,
                rule.copies_from(None)
                    .into_iter()
                    .map(|c| canonical_region(&c.region))
                    .collect(),
            ),
        };
        for region in regions {
            let g = groups
                .entry((item.vm.subscription().to_ascii_lowercase(), region))
                .or_default();
            g.disk_copies += disks.unwrap_or(1);
            g.vms += 1;
            g.unlisted_vms += usize::from(disks.is_none());
            g.rules.insert(rule.name.as_str(), rule);
        }
    }
    let mut periods: HashMap<&str, Option<Duration>> = HashMap::new();
    let copy_secs = pacing.copy_duration.as_secs_f64().max(1.0);
    groups
        .into_iter()
        .filter_map(|((subscription, region), g)| {
            // The soonest next tick of the rules copying there: it brings the next copies.
            let period = g
                .rules
                .values()
                .filter_map(|rule| {
                    *periods.entry(rule.name.as_str()).or_insert_with(|| {
                        let next = rule.next_due_tick(timer, plan.tick).ok().flatten()?;
                        Duration::try_from(next - plan.tick).ok()
                    })
                })
                .min();
            let fit_per_period = period
                .map(|p| (f64::from(IN_FLIGHT_LIMIT) * p.as_secs_f64() / copy_secs).floor() as u64);
            let kind = if fit_per_period.is_some_and(|fit| g.disk_copies > fit) {
                ShortfallKind::FallsBehind
            } else if g.disk_copies > u64::from(IN_FLIGHT_LIMIT) {
                ShortfallKind::Queues
            } else {
                return None;
            };
            Some(CopyShortfall {
                subscription,
                region,
                kind,
                disk_copies: g.disk_copies,
                vms: g.vms,
                unlisted_vms: g.unlisted_vms,
                fit_per_period,
                period,
                copy_duration: pacing.copy_duration,
                rules: g.rules.keys().map(|r| r.to_string()).collect(),
            })
        })
        .collect()
}

/// `4000` → `4,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4 h`, `90 min`, `45 s`: whole units a person reads.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests;
