//! Tick planning for the timer (DESIGN §1, §7): one create message per target VM, spread over
//! time so the creates fit ARM's write budget (a token bucket per subscription: 200 writes,
//! refilled at 10/s) without 429s. A VM whose rule copies to other regions is charged its copies'
//! writes too (they go through the same bucket once its point settles, while later creates of
//! the tick are still going), so only a small reserve is kept for writes the plan cannot see.
//!
//! The plan is a pure function of (tick, targets, pacing): a past-due or repeated timer run plans
//! the same items with the same message ids (Service Bus duplicate detection drops the repeats).
//! Delays are offsets from the tick; the handler re-bases them on `max(now, tick)` so a late run
//! still paces its sends instead of releasing the whole fleet at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use time::OffsetDateTime;

use crate::azure::{OutgoingMessage, Queue, ResourceId};
use crate::messages::{CreateRequest, QueueMessage};
use crate::names;
use crate::policy::Rule;
use crate::schedule::Schedule;

/// How fast creates may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    /// ARM's write bucket size per subscription (and region).
    pub burst: u32,
    /// ARM's refill rate, writes per second.
    pub refill_per_sec: f64,
    /// ARM writes one create costs: the point PUT, plus the collection PUT the first time a VM is
    /// seen. Default 2, the worst case: a fleet's first tick creates every collection, and later
    /// ticks simply finish early. Set 1 when collections are known to exist (onboarding creates
    /// them as VMs appear).
    pub writes_per_create: u32,
    /// ARM's read bucket size and refill per second (per subscription).
    pub read_burst: u32,
    pub read_refill_per_sec: f64,
    /// ARM reads one VM's create brings within the next minutes: the VM and disk GETs, the
    /// collection GET on create and again on settle (retention), and ~2 polls. With ARM's
    /// defaults reads, not writes, bound a large first tick when this exceeds
    /// `2.5 × writes_per_create` (`vmrp bench` measures it: ~6).
    pub reads_per_create: u32,
    /// Fraction of the bucket and the refill left for writes the plan does not know about
    /// (onboarding by OnVmChanged, redelivered creates). Copies are charged per VM instead, and
    /// deletes have their own bucket.
    pub reserve: f64,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            burst: 200,
            refill_per_sec: 10.0,
            writes_per_create: 2,
            read_burst: 250,
            read_refill_per_sec: 25.0,
            reads_per_create: 6,
            reserve: 0.05,
        }
    }
}

impl Pacing {
    /// Tokens creates may use at once.
    fn capacity(&self) -> f64 {
        f64::from(self.burst) * (1.0 - self.reserve.clamp(0.0, 1.0))
    }
    /// Tokens per second creates may use.
    fn rate(&self) -> f64 {
        self.refill_per_sec * (1.0 - self.reserve.clamp(0.0, 0.99))
    }
    /// The offset from the start at which the `k`-th create (0-based) of one subscription may
    /// go: the moment the bucket, full at the start, holds enough tokens for it
    /// (`capacity + rate·t ≥ (k+1)·cost`), rounded up to the millisecond.
    pub fn offset(&self, k: usize) -> Duration {
        let cost = self.cost(0);
        self.offset_after(k as f64 * cost, cost)
    }

    /// ARM writes one VM's work of a tick costs: its create, and as much again per copy region
    /// (the copy's collection and point PUTs, the collection only the first time).
    pub fn cost(&self, copy_regions: usize) -> f64 {
        f64::from(self.writes_per_create.max(1)) * (1 + copy_regions) as f64
    }

    /// The offset of create number `k` (0-based) of a subscription that spends `spent` write
    /// tokens before it and `cost` itself: the later of the write and the read budgets.
    pub fn offset_of(&self, k: usize, spent: f64, cost: f64) -> Duration {
        let reads = f64::from(self.reads_per_create);
        let read_capacity = f64::from(self.read_burst) * (1.0 - self.reserve.clamp(0.0, 1.0));
        let read_rate = self.read_refill_per_sec * (1.0 - self.reserve.clamp(0.0, 0.99));
        let read_needed = (k as f64 + 1.0) * reads - read_capacity;
        let by_reads = if reads <= 0.0 || read_needed <= 0.0 {
            Duration::ZERO
        } else {
            let secs = read_needed / read_rate.max(f64::MIN_POSITIVE);
            Duration::from_millis((secs * 1000.0).ceil() as u64)
        };
        self.offset_after(spent, cost).max(by_reads)
    }

    /// The offset at which work costing `cost` may go when `spent` tokens were planned before it
    /// in the same subscription: the moment the bucket, full at the start, holds enough
    /// (`capacity + rate·t ≥ spent + cost`), rounded up to the millisecond.
    pub fn offset_after(&self, spent: f64, cost: f64) -> Duration {
        let needed = spent + cost - self.capacity();
        if needed <= 0.0 {
            return Duration::ZERO;
        }
        let secs = needed / self.rate().max(f64::MIN_POSITIVE);
        Duration::from_millis((secs * 1000.0).ceil() as u64)
    }
}

/// A VM and the rule that selected it.
#[derive(Debug, Clone)]
pub struct PlanTarget<'a> {
    pub vm: ResourceId,
    pub rule: &'a Rule,
}

/// What the plan does for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    Create,
    Skip,
}

/// One VM's line of the plan, with the reason a person can read (`vmrp plan`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    pub vm: ResourceId,
    pub rule: String,
    pub action: PlanAction,
    /// Delay after the start of the run (creates only).
    pub offset: Option<Duration>,
    /// `tick + offset` (creates only).
    pub not_before: Option<OffsetDateTime>,
    pub reason: String,
    /// The message to send (creates only).
    pub request: Option<CreateRequest>,
    pub message_id: Option<String>,
}

/// The plan of one tick, items sorted by VM id.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tick: OffsetDateTime,
    pub items: Vec<PlanItem>,
}

impl Plan {
    pub fn creates(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.action == PlanAction::Create)
    }
    /// The create messages, scheduled at `start + offset` (`start` = `max(now, tick)`).
    pub fn messages(&self, start: OffsetDateTime) -> Vec<OutgoingMessage> {
        self.creates()
            .filter_map(|item| {
                let request = item.request.clone()?;
                let offset = item.offset.unwrap_or_default();
                Some(OutgoingMessage {
                    queue: Queue::Create,
                    message_id: item.message_id.clone()?,
                    body: QueueMessage::Create(request).encode(),
                    not_before: (offset > Duration::ZERO).then(|| start + offset),
                })
            })
            .collect()
    }
}

/// Plans the timer tick `tick` of `timer` for `targets` (duplicates by VM id: the first wins).
/// A rule with its own schedule gets creates at the first timer tick at or after each of its
/// occurrences ([`Rule::is_due`]).
pub fn plan_tick(
    tick: OffsetDateTime,
    timer: &Schedule,
    targets: &[PlanTarget<'_>],
    pacing: &Pacing,
) -> Plan {
    let mut by_vm: BTreeMap<&ResourceId, &Rule> = BTreeMap::new();
    for t in targets {
        by_vm.entry(&t.vm).or_insert(t.rule);
    }
    // Whether each rule's own schedule has an occurrence at this tick (parsed once per rule).
    let mut due: HashMap<&str, Result<(), String>> = HashMap::new();
    // Per subscription: creates planned so far and the tokens they (and their copies) spend.
    let mut per_subscription: HashMap<String, (usize, f64)> = HashMap::new();
    let mut items = Vec::with_capacity(by_vm.len());
    for (vm, rule) in by_vm {
        let verdict = due
            .entry(rule.name.as_str())
            .or_insert_with(|| rule_due(rule, timer, tick))
            .clone();
        if let Err(reason) = verdict {
            items.push(PlanItem {
                vm: vm.clone(),
                rule: rule.name.clone(),
                action: PlanAction::Skip,
                offset: None,
                not_before: None,
                reason,
                request: None,
                message_id: None,
            });
            continue;
        }
        let (k, spent) = per_subscription
            .entry(vm.subscription().to_ascii_lowercase())
            .or_insert((0, 0.0));
        let cost = pacing.cost(rule.copies.len());
        let offset = pacing.offset_of(*k, *spent, cost);
        *k += 1;
        *spent += cost;
        let request = CreateRequest::for_tick(vm.clone(), tick, &rule.name);
        items.push(PlanItem {
            vm: vm.clone(),
            rule: rule.name.clone(),
            action: PlanAction::Create,
            offset: Some(offset),
            not_before: Some(tick + offset),
            reason: format!(
                "create {} at +{:.1}s (create #{} in subscription {}; {} writes with its copies, bucket {}·{:.0}% at {}/s)",
                names::restore_point_name(tick, 0),
                offset.as_secs_f64(),
                *k,
                vm.subscription(),
                cost,
                pacing.burst,
                (1.0 - pacing.reserve) * 100.0,
                pacing.refill_per_sec
            ),
            message_id: Some(names::message_id("create", vm.as_str(), tick, 0)),
            request: Some(request),
        });
    }
    Plan { tick, items }
}

fn rule_due(rule: &Rule, timer: &Schedule, tick: OffsetDateTime) -> Result<(), String> {
    match rule.is_due(timer, tick) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "rule {:?} schedule {:?} has no occurrence since the previous timer tick",
            rule.name,
            rule.schedule.as_deref().unwrap_or_default()
        )),
        Err(e) => Err(format!("rule {:?}: {e}", rule.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rule, vm_id};
    use time::macros::datetime;

    const TICK: OffsetDateTime = datetime!(2026-11-25 03:00:00 UTC);

    fn hourly_timer() -> Schedule {
        Schedule::parse("0 0 * * * *").unwrap()
    }

    fn targets<'a>(n: usize, sub: &str, r: &'a Rule) -> Vec<PlanTarget<'a>> {
        (0..n)
            .map(|i| PlanTarget {
                vm: vm_id(sub, "rg", &format!("vm{i:04}")),
                rule: r,
            })
            .collect()
    }

    #[test]
    fn burst_then_refill_rate() {
        let r = rule("r", 3);
        let pacing = Pacing {
            writes_per_create: 1,
            reads_per_create: 0,
            reserve: 0.0,
            ..Pacing::default()
        };
        let plan = plan_tick(TICK, &hourly_timer(), &targets(230, "s1", &r), &pacing);
        let offsets: Vec<Duration> = plan.creates().map(|i| i.offset.unwrap()).collect();
        assert_eq!(offsets.len(), 230);
        assert!(offsets[..200].iter().all(|o| o.is_zero()), "burst of 200");
        assert_eq!(offsets[200], Duration::from_millis(100));
        assert_eq!(offsets[201], Duration::from_millis(200));
        assert_eq!(offsets[229], Duration::from_secs(3));
        let msgs = plan.messages(TICK);
        assert_eq!(msgs[0].not_before, None, "burst goes now");
        assert_eq!(
            msgs[229].not_before,
            Some(TICK + Duration::from_secs(3)),
            "then 10/s"
        );
    }

    /// Replays the planned sends against ARM's token bucket, with the reserve spent by other
    /// work at its full rate, and checks the bucket never goes negative.
    #[test]
    fn thousand_vms_never_overdraw_the_bucket() {
        let r = rule("r", 3);
        let pacing = Pacing {
            reads_per_create: 0,
            ..Pacing::default()
        };
        let plan = plan_tick(TICK, &hourly_timer(), &targets(1000, "s1", &r), &pacing);
        let cost = f64::from(pacing.writes_per_create);
        let reserve_rate = pacing.refill_per_sec * pacing.reserve;
        let mut tokens = f64::from(pacing.burst) * (1.0 - pacing.reserve);
        let mut last = Duration::ZERO;
        let mut offsets: Vec<Duration> = plan.creates().map(|i| i.offset.unwrap()).collect();
        offsets.sort();
        for o in &offsets {
            let dt = (*o - last).as_secs_f64();
            // Refill minus what the reserve's consumers take, capped at the bucket.
            tokens =
                (tokens + dt * (pacing.refill_per_sec - reserve_rate)).min(f64::from(pacing.burst));
            tokens -= cost;
            assert!(tokens >= -1e-9, "overdrawn at {o:?}: {tokens}");
            last = *o;
        }
        // And it does not dawdle: the last create goes within a second of the ideal time.
        let share = 1.0 - pacing.reserve;
        let ideal =
            (1000.0 * cost - f64::from(pacing.burst) * share) / (pacing.refill_per_sec * share);
        assert!(
            (last.as_secs_f64() - ideal).abs() < 1.0,
            "{last:?} vs {ideal}"
        );
    }

    /// With ARM's defaults a create's ~6 reads outrun its 2 writes: the read bucket sets the pace
    /// (25/s·95 % / 6 ≈ 3.96 creates/s), and replaying the reads never overdraws it.
    #[test]
    fn reads_bound_the_pace_when_they_outrun_writes() {
        let r = rule("r", 3);
        let pacing = Pacing::default();
        let plan = plan_tick(TICK, &hourly_timer(), &targets(1000, "s1", &r), &pacing);
        let mut offsets: Vec<Duration> = plan.creates().map(|i| i.offset.unwrap()).collect();
        offsets.sort();
        let reads = f64::from(pacing.reads_per_create);
        let share = 1.0 - pacing.reserve;
        let mut tokens = f64::from(pacing.read_burst) * share;
        let mut last = Duration::ZERO;
        for o in &offsets {
            tokens += (*o - last).as_secs_f64() * pacing.read_refill_per_sec * share;
            tokens -= reads;
            assert!(tokens >= -1e-6, "reads overdrawn at {o:?}: {tokens}");
            last = *o;
        }
        let ideal = (1000.0 * reads - f64::from(pacing.read_burst) * share)
            / (pacing.read_refill_per_sec * share);
        assert!(
            (last.as_secs_f64() - ideal).abs() < 1.0,
            "{last:?} vs {ideal}"
        );
        // The write budget alone would have finished much sooner.
        let writes_only = Pacing {
            reads_per_create: 0,
            ..Pacing::default()
        };
        let w = plan_tick(
            TICK,
            &hourly_timer(),
            &targets(1000, "s1", &r),
            &writes_only,
        );
        let w_last = w.creates().filter_map(|i| i.offset).max().unwrap();
        assert!(w_last < last, "{w_last:?} vs {last:?}");
    }

    /// A VM whose rule copies to two regions spends three creates' worth of writes, so the
    /// next create waits for them; VMs without copies keep the plain spacing.
    #[test]
    fn copies_are_charged_to_their_vm() {
        let plain = rule("plain", 3);
        let mut copying = rule("copying", 3);
        copying.copies = ["swedencentral", "norwayeast"]
            .iter()
            .map(|r| crate::policy::CopyTarget {
                region: r.to_string(),
                resource_group: None,
                retention: None,
            })
            .collect();
        let pacing = Pacing {
            burst: 1,
            writes_per_create: 1,
            reads_per_create: 0,
            reserve: 0.0,
            ..Pacing::default()
        };
        assert_eq!(pacing.cost(0), 1.0);
        assert_eq!(pacing.cost(2), 3.0);
        let offsets = |r: &Rule| -> Vec<u128> {
            plan_tick(TICK, &hourly_timer(), &targets(3, "s1", r), &pacing)
                .creates()
                .map(|i| i.offset.unwrap().as_millis())
                .collect()
        };
        // Bucket of 1 at 10/s: each create waits for the tokens of everything before it.
        assert_eq!(offsets(&plain), vec![0, 100, 200]);
        assert_eq!(offsets(&copying), vec![200, 500, 800]);
    }

    #[test]
    fn subscriptions_have_their_own_bucket() {
        let r = rule("r", 3);
        let pacing = Pacing {
            burst: 2,
            writes_per_create: 1,
            reads_per_create: 0,
            reserve: 0.0,
            ..Pacing::default()
        };
        let mut t = targets(3, "s1", &r);
        t.extend(targets(3, "s2", &r));
        let plan = plan_tick(TICK, &hourly_timer(), &t, &pacing);
        let offs: Vec<u128> = plan
            .creates()
            .map(|i| i.offset.unwrap().as_millis())
            .collect();
        assert_eq!(offs, vec![0, 0, 100, 0, 0, 100]);
    }

    #[test]
    fn same_tick_same_plan_and_sorted() {
        let r = rule("r", 3);
        let mut t = targets(50, "s1", &r);
        let a = plan_tick(TICK, &hourly_timer(), &t, &Pacing::default());
        t.reverse();
        t.push(t[0].clone()); // a duplicate target
        let b = plan_tick(TICK, &hourly_timer(), &t, &Pacing::default());
        assert_eq!(a, b);
        let ids: Vec<&ResourceId> = a.items.iter().map(|i| &i.vm).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(
            a.items[0].message_id.as_deref(),
            Some(names::message_id("create", a.items[0].vm.as_str(), TICK, 0).as_str())
        );
        // A different tick gives different message ids.
        let c = plan_tick(
            TICK + time::Duration::hours(1),
            &hourly_timer(),
            &t,
            &Pacing::default(),
        );
        assert_ne!(a.items[0].message_id, c.items[0].message_id);
    }

    #[test]
    fn rule_schedule_filters_ticks() {
        let hourly = rule("hourly", 3);
        let mut nightly = rule("nightly", 3);
        nightly.schedule = Some("0 30 1 * * *".into());
        let mut broken = rule("broken", 3);
        broken.schedule = Some("not a schedule".into());
        let t = vec![
            PlanTarget {
                vm: vm_id("s1", "rg", "a"),
                rule: &hourly,
            },
            PlanTarget {
                vm: vm_id("s1", "rg", "b"),
                rule: &nightly,
            },
            PlanTarget {
                vm: vm_id("s1", "rg", "c"),
                rule: &broken,
            },
        ];
        let at3 = plan_tick(TICK, &hourly_timer(), &t, &Pacing::default());
        let actions: Vec<PlanAction> = at3.items.iter().map(|i| i.action).collect();
        assert_eq!(
            actions,
            vec![PlanAction::Create, PlanAction::Skip, PlanAction::Skip]
        );
        assert!(
            at3.items[1].reason.contains("no occurrence"),
            "{}",
            at3.items[1].reason
        );
        assert!(at3.items[2].reason.contains("invalid NCRONTAB"));
        let at2 = plan_tick(
            datetime!(2026-11-25 02:00:00 UTC),
            &hourly_timer(),
            &t,
            &Pacing::default(),
        );
        assert_eq!(at2.items[1].action, PlanAction::Create);
        assert_eq!(at2.messages(TICK).len(), 2);
    }
}
