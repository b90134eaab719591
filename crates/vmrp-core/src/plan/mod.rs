//! Tick planning for the timer (docs/architecture.md, "Flow"; docs/emulator-arm.md): one create message per target VM, spread over
//! time so the creates fit ARM's budgets (token buckets per subscription: 200 writes refilled at
//! 10/s, 250 reads refilled at 25/s) without 429s. Each VM is charged what its create will cost,
//! given what the timer's listings spared it (`Pacing::cost_of`); a VM whose rule copies to other
//! regions is charged its copies' writes too (they go through the same bucket once its point
//! settles, while later creates of the tick are still going), so only a small reserve is kept
//! for work the plan cannot see.
//!
//! The plan is a pure function of (tick, targets, pacing): a past-due or repeated timer run plans
//! the same items with the same message ids (Service Bus duplicate detection drops the repeats).
//! Delays are offsets from the tick; the handler re-bases them on `max(now, tick)` so a late run
//! still paces its sends instead of releasing the whole fleet at once.
//!
//! The tick fits its window, or says so first: a create that would start after the moment the
//! create handler reports it superseded by the rule's next tick ([`supersede_cutoff`], e.g. tick
//! + 1 h for 4-hourly application-consistent points) is not sent; the plan marks it
//! [`PlanAction::DoesNotFit`] with the reason, before the tick runs. The creates are paced in an
//! order rotated from tick to tick ([`rotation_key`]: each VM's place on a fixed ring, turned by
//! the golden ratio at each of its rule's ticks), so the VMs left out differ from one tick to the
//! next (none is left out twice in a row while about two thirds fit) while a replay of one tick
//! plans the same order, on any instance, without state.
//!
//! Its copies are judged before the tick too ([`copy_shortfalls`], [`copy_capacity`]): which
//! (subscription, target region) pairs get more disk copies from this tick's creates than Azure
//! replicates (100 at once) before the rule's next tick.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub mod copy_capacity;
pub use copy_capacity::{copy_shortfalls, CopyShortfall, ShortfallKind, IN_FLIGHT_LIMIT};

use time::OffsetDateTime;

use crate::azure::models::ConsistencyMode;
use crate::azure::{OutgoingMessage, Queue, ResourceId};
use crate::messages::{CollectionSeen, CreateRequest, ListedVm, QueueMessage};
use crate::names;
use crate::policy::Rule;
use crate::schedule::{rfc3339, Schedule};

/// How fast creates may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    /// ARM's write bucket size per subscription (and region).
    pub burst: u32,
    /// ARM's refill rate, writes per second.
    pub refill_per_sec: f64,
    /// ARM writes a create costs when the timer could not see its collection: the point PUT and
    /// the collection PUT (a fleet's first tick creates every collection). A create whose
    /// collection the listing showed ready costs one write.
    pub writes_per_create: u32,
    /// ARM's read bucket size and refill per second (per subscription). The timer lowers a
    /// subscription's burst to what ARM last reported remaining there (`remaining_reads`),
    /// since its listings spent some.
    pub read_burst: u32,
    /// What ARM last reported left in each subscription's read bucket (lowercase id): ARM's
    /// buckets are per subscription, so each subscription is paced by its own reading.
    pub remaining_reads: BTreeMap<String, u32>,
    pub read_refill_per_sec: f64,
    /// ARM reads every create brings within the next minutes, whatever the timer knew: about two
    /// polls of the point and the collection read for retention when it settles (`vmrp bench`
    /// measures them). Reads the timer's listing could not spare (VM, disks, collection) are
    /// added per VM.
    pub reads_per_create: u32,
    /// ARM reads each copy brings over its life: its start (the target collection with its
    /// points, the previous copy's progress) and its polls (`vmrp bench`: ~7.4 per copy). They
    /// spread over the copy's ~1.5 h, but in a tick long enough to matter they overlap the
    /// later creates, and at 10,000 VMs they would take half the read refill uncharged.
    pub reads_per_copy: u32,
    /// Fraction of the bucket and the refill left for work the plan does not know about
    /// (onboarding by OnVmChanged, redelivered creates). Copies are charged per VM instead, and
    /// deletes have their own bucket. `VMRP_ARM_SHARE` sets it as the share vmrp may use
    /// (`reserve = 1 - share`): other tools spend the same subscription's budget.
    pub reserve: f64,
    /// How long before the supersede cut-off the last create must be planned: a create's
    /// message waits in the queue and a refused one is retried, so one planned at the very
    /// edge would be reported superseded.
    pub window_margin: Duration,
    /// How long one disk restore point copy is assumed to replicate, for
    /// [`copy_shortfalls`]: Azure replicates at most 100 at once per subscription and target
    /// region, so about `100 × period / copy_duration` fit between two ticks. Microsoft states
    /// no duration: 1 h is an assumption ([`copy_capacity`]), set by `VMRP_COPY_DURATION_SECS`.
    pub copy_duration: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            burst: 200,
            refill_per_sec: 10.0,
            writes_per_create: 2,
            read_burst: 250,
            remaining_reads: BTreeMap::new(),
            read_refill_per_sec: 25.0,
            reads_per_create: 3,
            reads_per_copy: 9,
            reserve: 0.05,
            window_margin: Duration::from_secs(5 * 60),
            copy_duration: copy_capacity::DEFAULT_COPY_DURATION,
        }
    }
}

/// What one VM's work of a tick spends from ARM's buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub writes: f64,
    pub reads: f64,
}

impl Pacing {
    /// The share of a bucket and of its refill the plan may use.
    pub fn share(&self) -> f64 {
        1.0 - self.reserve.clamp(0.0, 0.99)
    }

    /// What `target`'s create costs, with its copies: its point PUT, its collection PUT unless
    /// the listing showed the collection ready, as much again per copy region (the copy's
    /// collection and point PUTs; copy collections are not listed); the reads every create
    /// brings, plus those the listing did not spare (the VM GET, a GET per data disk the disk
    /// listing did not show, the collection GET when its state is unknown), plus each copy's.
    pub fn cost_of(&self, target: &PlanTarget<'_>) -> Cost {
        let unknown = f64::from(self.writes_per_create.max(1));
        let listed = target.listed.as_ref();
        let local_writes = match listed.and_then(|l| l.collection) {
            Some(CollectionSeen::Ready) => 1.0,
            _ => unknown,
        };
        let spared_not = match listed {
            // The VM, its disks (one on average) and the collection.
            None => 3,
            Some(l) => {
                let unlisted_disks =
                    l.vm.managed_data_disk_ids()
                        .filter(|id| !l.disks.iter().any(|info| &info.id == id))
                        .count();
                unlisted_disks + usize::from(l.collection.is_none())
            }
        };
        Cost {
            writes: local_writes + unknown * target.rule.copies.len() as f64,
            reads: f64::from(self.reads_per_create)
                + spared_not as f64
                + f64::from(self.reads_per_copy) * target.rule.copies.len() as f64,
        }
    }

    /// The read burst of `subscription`'s bucket: `read_burst`, lowered to what ARM last
    /// reported left there.
    pub fn read_burst_in(&self, subscription: &str) -> u32 {
        self.remaining_reads
            .get(&subscription.to_ascii_lowercase())
            .map_or(self.read_burst, |left| self.read_burst.min(*left))
    }

    /// The offset at which work costing `cost` may go when `spent` was planned before it in the
    /// same subscription: the later of the moments each bucket, full at the start, holds enough
    /// (`capacity + rate·t ≥ spent + cost`), rounded up to the millisecond.
    pub fn offset_after(&self, spent: Cost, cost: Cost) -> Duration {
        self.offset_after_in(self.read_burst, spent, cost)
    }

    /// [`Pacing::offset_after`] with the subscription's read burst.
    fn offset_after_in(&self, read_burst: u32, spent: Cost, cost: Cost) -> Duration {
        let wait = |burst: u32, rate: f64, needed: f64| {
            let missing = needed - f64::from(burst) * self.share();
            if needed <= 0.0 || missing <= 0.0 {
                return Duration::ZERO;
            }
            let secs = missing / (rate * self.share()).max(f64::MIN_POSITIVE);
            Duration::from_millis((secs * 1000.0).ceil() as u64)
        };
        let by_writes = wait(self.burst, self.refill_per_sec, spent.writes + cost.writes);
        let by_reads = if cost.reads > 0.0 {
            wait(
                read_burst,
                self.read_refill_per_sec,
                spent.reads + cost.reads,
            )
        } else {
            Duration::ZERO
        };
        by_writes.max(by_reads)
    }
}

/// A VM, the rule that selected it, and what the timer's listings showed of it.
#[derive(Debug, Clone)]
pub struct PlanTarget<'a> {
    pub vm: ResourceId,
    pub rule: &'a Rule,
    pub listed: Option<ListedVm>,
}

/// What the plan does for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    Create,
    Skip,
    /// Due, but its create would start after the supersede cut-off given the budget: not sent
    /// this tick (the reason says when it would have gone and what the cut-off is).
    DoesNotFit,
    /// Due, but its listing shows a VM Azure would refuse the create for (a confidential VM,
    /// a crash-consistent point with disks or a size it does not support: `Rule::check_vm`):
    /// no create is sent; the reason names the case.
    Unsupported,
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

/// The plan of one tick, items sorted by VM id (creates are paced in the tick's rotated order).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tick: OffsetDateTime,
    pub items: Vec<PlanItem>,
}

impl Plan {
    pub fn creates(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.action == PlanAction::Create)
    }
    /// The due VMs whose creates do not fit before the supersede cut-off.
    pub fn left_out(&self) -> impl Iterator<Item = &PlanItem> {
        self.items
            .iter()
            .filter(|i| i.action == PlanAction::DoesNotFit)
    }
    /// The due VMs Azure would refuse the create for ([`PlanAction::Unsupported`]).
    pub fn unsupported(&self) -> impl Iterator<Item = &PlanItem> {
        self.items
            .iter()
            .filter(|i| i.action == PlanAction::Unsupported)
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

/// Plans the timer tick `tick` of `timer` for `targets` (duplicates by VM id: the first wins),
/// with the sends starting at the tick. See [`plan_tick_from`].
pub fn plan_tick(
    tick: OffsetDateTime,
    timer: &Schedule,
    targets: &[PlanTarget<'_>],
    pacing: &Pacing,
) -> Plan {
    plan_tick_from(tick, tick, timer, targets, pacing)
}

/// Plans the timer tick `tick` of `timer` for `targets` (duplicates by VM id: the first wins),
/// the sends starting at `start` (`max(now, tick)`: offsets count from it, and a late start
/// leaves less of the window). A rule with its own schedule gets creates at the first timer
/// tick at or after each of its occurrences ([`Rule::is_due`]). Due VMs are paced in the
/// tick's rotated order ([`rotation_key`]); one whose create would start within
/// `pacing.window_margin` of its [`supersede_cutoff`] is left out ([`PlanAction::DoesNotFit`])
/// and spends nothing, so a cheaper VM after it may still fit.
pub fn plan_tick_from(
    tick: OffsetDateTime,
    start: OffsetDateTime,
    timer: &Schedule,
    targets: &[PlanTarget<'_>],
    pacing: &Pacing,
) -> Plan {
    let (mut items, order) = due_in_tick_order(tick, timer, targets);
    // Each rule's next tick (looked up once per rule).
    let mut next_ticks: HashMap<&str, Option<OffsetDateTime>> = HashMap::new();
    // Per subscription: creates planned so far and what they (and their copies) spend.
    let mut per_subscription: HashMap<String, (usize, Cost)> = HashMap::new();
    for (vm, target) in order {
        let rule = target.rule;
        let next = *next_ticks
            .entry(rule.name.as_str())
            .or_insert_with(|| rule.next_due_tick(timer, tick).ok().flatten());
        let consistency = target.listed.as_ref().map_or_else(
            || rule.consistency.clone(),
            |l| rule.consistency_for(&l.vm).0,
        );
        let cutoff = next.and_then(|next| cutoff_before(tick, next, &consistency));
        let (k, spent) = per_subscription
            .entry(vm.subscription().to_ascii_lowercase())
            .or_insert((
                0,
                Cost {
                    writes: 0.0,
                    reads: 0.0,
                },
            ));
        let cost = pacing.cost_of(target);
        let read_burst = pacing.read_burst_in(vm.subscription());
        let offset = pacing.offset_after_in(read_burst, *spent, cost);
        if let (Some(cutoff), Some(next)) = (cutoff, next) {
            let goes_at = start + offset;
            if goes_at + pacing.window_margin >= cutoff {
                items.insert(
                    vm,
                    no_create(
                        vm,
                        rule,
                        PlanAction::DoesNotFit,
                        format!(
                            "does not fit this tick: its create would go at {} (+{:.0}s, after {} \
                             creates in subscription {} paced at {:.0}% of ARM's budget), within \
                             {} min of {}, after which the create is superseded by the next tick \
                             {} ({} points {} h apart); the next tick's order differs",
                            rfc3339(goes_at),
                            offset.as_secs_f64(),
                            *k,
                            vm.subscription(),
                            pacing.share() * 100.0,
                            pacing.window_margin.as_secs() / 60,
                            rfc3339(cutoff),
                            rfc3339(next),
                            consistency.as_str(),
                            crate::policy::spacing_for(&consistency).whole_hours(),
                        ),
                    ),
                );
                continue;
            }
        }
        *k += 1;
        spent.writes += cost.writes;
        spent.reads += cost.reads;
        let mut request = CreateRequest::for_tick(vm.clone(), tick, &rule.name);
        // Its slot: a create handled well after it no longer follows this pacing and paces
        // itself (`create_restore_point::paces_itself`).
        request.listed = target.listed.clone().map(|mut l| {
            l.planned_for = Some(start + offset);
            Box::new(l)
        });
        // Copies this VM will not get: disks with customer-managed keys whose encryption set
        // the copy region does not map (the copy handler reports them again, per point).
        let no_copy: String = target
            .listed
            .as_ref()
            .map(|l| rule.unmapped_encryption_sets(&l.vm))
            .unwrap_or_default()
            .iter()
            .map(|u| format!("; no copy to {}: {u}", u.region))
            .collect();
        items.insert(
            vm,
            PlanItem {
                vm: vm.clone(),
                rule: rule.name.clone(),
                action: PlanAction::Create,
                offset: Some(offset),
                not_before: Some(tick + offset),
                reason: format!(
                    "create {} at +{:.1}s (create #{} in subscription {}; {} writes with its \
                     copies, {} reads; buckets {:.0}% of {} + {}/s writes, {} + {}/s reads)",
                    names::restore_point_name(tick, 0),
                    offset.as_secs_f64(),
                    *k,
                    vm.subscription(),
                    cost.writes,
                    cost.reads,
                    pacing.share() * 100.0,
                    pacing.burst,
                    pacing.refill_per_sec,
                    read_burst,
                    pacing.read_refill_per_sec,
                ) + &no_copy,
                message_id: Some(names::message_id("create", vm.as_str(), tick, 0)),
                request: Some(request),
            },
        );
    }
    Plan {
        tick,
        items: items.into_values().collect(),
    }
}

/// The first pass over `targets` (duplicates by VM id: the first wins): the items of the VMs
/// that get no create this tick (their rule is not due, or Azure would refuse the VM as
/// listed), by VM id, and the due VMs in the tick's rotated order ([`rotation_key`]).
fn due_in_tick_order<'s, 'r>(
    tick: OffsetDateTime,
    timer: &Schedule,
    targets: &'s [PlanTarget<'r>],
) -> (
    BTreeMap<&'s ResourceId, PlanItem>,
    Vec<(&'s ResourceId, &'s PlanTarget<'r>)>,
) {
    let mut by_vm: BTreeMap<&ResourceId, &PlanTarget<'_>> = BTreeMap::new();
    for t in targets {
        by_vm.entry(&t.vm).or_insert(t);
    }
    // Whether each rule's own schedule has an occurrence at this tick, and the tick's turn in
    // the rule's rotation (each computed once per rule).
    let mut due: HashMap<&str, Result<(), String>> = HashMap::new();
    let mut turns: HashMap<&str, u64> = HashMap::new();
    let mut items: BTreeMap<&ResourceId, PlanItem> = BTreeMap::new();
    let mut order = Vec::with_capacity(by_vm.len());
    for (vm, target) in by_vm {
        let rule = target.rule;
        let verdict = due
            .entry(rule.name.as_str())
            .or_insert_with(|| rule_due(rule, timer, tick))
            .clone();
        // What Azure would refuse, seen in the listing: said here, once per VM and tick, rather
        // than by a create that would be refused (and re-sent) at every tick.
        let refused: Vec<String> = match (&verdict, &target.listed) {
            (Ok(()), Some(listed)) => rule
                .check_vm(&listed.vm, &listed.disks)
                .into_iter()
                .filter(|p| p.refuses_create())
                .map(|p| p.message)
                .collect(),
            _ => Vec::new(),
        };
        if !refused.is_empty() {
            let reason = format!("not supported by restore points: {}", refused.join("; "));
            items.insert(vm, no_create(vm, rule, PlanAction::Unsupported, reason));
            continue;
        }
        match verdict {
            Ok(()) => {
                let turn = *turns
                    .entry(rule.name.as_str())
                    .or_insert_with(|| rotation_turn(rule, timer, tick));
                order.push((rotation_key(vm, turn), vm, target));
            }
            Err(reason) => {
                items.insert(vm, no_create(vm, rule, PlanAction::Skip, reason));
            }
        }
    }
    // The tick's order: stable for one tick, different from the next one's, so the VMs that do
    // not fit are not always the same (sorting by VM id would leave the tail out every tick).
    order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let order = order
        .into_iter()
        .map(|(_, vm, target)| (vm, target))
        .collect();
    (items, order)
}

/// The item of a VM that gets no create this tick (`action`), with the reason.
fn no_create(vm: &ResourceId, rule: &Rule, action: PlanAction, reason: String) -> PlanItem {
    PlanItem {
        vm: vm.clone(),
        rule: rule.name.clone(),
        action,
        offset: None,
        not_before: None,
        reason,
        request: None,
        message_id: None,
    }
}

/// The moment after which a create for `tick` is reported superseded by the rule's next tick
/// `next` (`policy::superseded_by_next_tick`, which the create handler applies): `next` minus
/// Azure's spacing between points of `consistency`. `None` when the ticks are closer than the
/// spacing (the create is then never superseded).
pub fn cutoff_before(
    tick: OffsetDateTime,
    next: OffsetDateTime,
    consistency: &ConsistencyMode,
) -> Option<OffsetDateTime> {
    let spacing = crate::policy::spacing_for(consistency);
    (next - tick > spacing).then(|| next - spacing)
}

/// [`cutoff_before`] for `rule`'s next tick after `tick` (`None` when there is none, or when the
/// rule's creates are never superseded).
pub fn supersede_cutoff(
    rule: &Rule,
    timer: &Schedule,
    tick: OffsetDateTime,
    consistency: &ConsistencyMode,
) -> Option<OffsetDateTime> {
    let next = rule.next_due_tick(timer, tick).ok().flatten()?;
    cutoff_before(tick, next, consistency)
}

/// 2^64 divided by the golden ratio: the ring's turn from one tick to the next.
const GOLDEN_TURN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Where `vm` goes in the pacing order at `turn` ([`rotation_turn`]): its fixed place on a
/// ring (the first 8 bytes of SHA-256 over the lowercase VM id: ARM ids are case-insensitive,
/// and SHA-256 is the same on every instance and build, unlike `std`'s hasher), turned by
/// `turn` times 1/φ of the ring. Each tick's order is then the same ring started at another
/// place, and the start moves by 0.618 of the ring per turn: the VMs a tick leaves out, the
/// last arc of its order, fall within the first 62 % of the next tick's order, so they fit
/// then whenever at least ~62 % of the VMs fit (`plan::tests::no_vm_is_left_out_twice_in_a_row_while_two_thirds_fit`), and for
/// any share that fits the golden ratio spreads the misses evenly over the ticks. A hash of
/// (VM, tick), the earlier key, drew each tick's order afresh: at 72 % fitting, 8 % of the
/// VMs were left out two ticks in a row (416 of 5,000 in `vmrp bench --window`).
pub fn rotation_key(vm: &ResourceId, turn: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vm.as_str().to_ascii_lowercase().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).wrapping_add(turn.wrapping_mul(GOLDEN_TURN))
}

/// The turn of `tick` in `rule`'s rotation: the number of the rule's periods since the Unix
/// epoch, the period being the gap to the rule's next due tick. A regular schedule (every 4 h,
/// daily) gives its ticks consecutive turns, which is what [`rotation_key`]'s guarantee needs;
/// an irregular one (08:00 and 12:00) still gets a different, deterministic turn per tick. A
/// rule with no next tick counts hours.
pub fn rotation_turn(rule: &Rule, timer: &Schedule, tick: OffsetDateTime) -> u64 {
    let period = rule
        .next_due_tick(timer, tick)
        .ok()
        .flatten()
        .map(|next| (next - tick).whole_seconds())
        .filter(|secs| *secs > 0)
        .unwrap_or(3600);
    u64::try_from(tick.unix_timestamp().div_euclid(period)).unwrap_or_default()
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
mod tests;
