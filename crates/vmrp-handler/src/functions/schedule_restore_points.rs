//! ScheduleRestorePoints (timer) and the planning it fans out to: the timer finds the tick and
//! sends one `rp-plan` message per subscription of the policy's scopes; PlanRestorePoints
//! (src/functions/plan_restore_points.rs) then lists that subscription's target VMs, plans,
//! sends one paced create per VM (docs/architecture.md, "Flow" and "Fan-out per subscription"),
//! and deletes that subscription's orphan collections whose grace period has passed.
//!
//! The tick is the latest occurrence of `VMRP_SCHEDULE` at or before `now`, so a late or repeated
//! run names the same points and sends the same message ids. Targets are the union of every
//! rule's scopes (subscriptions and resource groups listed, explicit VM ids read one by one),
//! de-duplicated, each VM under its first matching rule. A rule without any scope matches VMs
//! found through other rules' scopes only: the handler cannot list "everything".

use crate::schedule::rfc3339;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use time::OffsetDateTime;

use super::support::{self, TAG_ORPHANED_AT, TAG_VM};
use super::{Deps, HandlerError};
use crate::azure::models::{RestorePointCollection, VirtualMachine};
use crate::azure::{OutgoingMessage, Queue};
use crate::azure::{ResourceId, VmScope};
use crate::events::TimerEvent;
use crate::invocation::{Invocation, Outcome, Sent, Status};
use crate::messages::{CollectionSeen, ListedVm, PlanRequest, QueueMessage};
use crate::plan::{self, PlanTarget};
use crate::policy::{DiskInfo, Policy, Rule};
use crate::schedule::Schedule;

/// What a timer run at `now` would do: the tick, the plan, and what listing found (computed with
/// VM reads only; the handler then sends the plan). `vmrp plan` does not call this: it judges
/// existing points too, from `inventory`, with the same pure rules (`policy`, `names`).
#[derive(Debug, Clone)]
pub struct TickPlan {
    pub tick: OffsetDateTime,
    /// When the sends start (`max(now, tick)`, `now` read from ARM's last `Date` after the
    /// listings): the plan's offsets count from it, and its window is what is left of the tick's.
    pub start: OffsetDateTime,
    /// The plan; VMs that do not fit before the supersede cut-off are its `left_out()` items,
    /// each with the reason.
    pub plan: plan::Plan,
    /// VMs found in the policy's scopes.
    pub listed: usize,
    /// VMs found but selected by no rule.
    pub unmatched: usize,
    /// VMs left out because Azure Backup protects them and their rule says `skipBackupProtected`.
    pub backup_skipped: usize,
    /// Scopes or VM ids whose listing failed.
    pub failures: Vec<String>,
    /// Some listing failed with a transient error (throttling, 5xx, an ARM outage): planning
    /// again later may still reach those VMs within the tick's window.
    pub listing_transient: bool,
    /// What the disk and collection listings showed (orphan cleanup reuses the collections).
    pub listings: Listings,
    /// The coverage signal of this run, one line per rule, region and role (src/coverage.rs).
    pub coverage: Vec<crate::coverage::CoverageLine>,
    /// The (subscription, target region) pairs whose copies of this tick's creates exceed
    /// Azure's 100 disk copies in flight (`plan::copy_shortfalls`), said before the tick runs.
    pub copy_shortfalls: Vec<plan::CopyShortfall>,
}

/// Plans the tick a timer run at `now` belongs to, over the whole estate (every subscription
/// in one plan: `vmrp bench` and tests compare it with the fan-out); `None` when the schedule
/// has no occurrence at or before `now`.
pub async fn plan_for(deps: &Deps, now: OffsetDateTime) -> Result<Option<TickPlan>, HandlerError> {
    let timer = timer_schedule(deps)?;
    let Some(tick) = timer.latest_at_or_before(now) else {
        return Ok(None);
    };
    plan_tick_in(deps, &timer, tick, now, None).await.map(Some)
}

/// The timer's schedule (`VMRP_SCHEDULE`), parsed.
pub(crate) fn timer_schedule(deps: &Deps) -> Result<Schedule, HandlerError> {
    Schedule::parse(&deps.schedule)
        .map_err(|e| HandlerError::Invalid(format!("setting VMRP_SCHEDULE: {e}")))
}

/// Plans `tick` for the policy's scopes inside `subscription` (lowercase; every scope when
/// `None`): lists them, measures their coverage, and paces the creates from that
/// subscription's bucket. ARM's buckets are per subscription and the planner paces each
/// subscription on its own, so the union of the per-subscription plans is the whole-estate
/// plan (same items, same message ids); only `start` differs, each invocation counting from
/// its own listings.
pub async fn plan_tick_in(
    deps: &Deps,
    timer: &Schedule,
    tick: OffsetDateTime,
    now: OffsetDateTime,
    subscription: Option<&str>,
) -> Result<TickPlan, HandlerError> {
    let (mut scopes, mut explicit) = scopes(&deps.policy);
    if let Some(sub) = subscription {
        scopes.retain(|s| scope_subscription(s).eq_ignore_ascii_case(sub));
        explicit.retain(|vm| vm.subscription().eq_ignore_ascii_case(sub));
    }
    let (vms, failures, listing_transient) = list_targets(deps, &scopes, explicit).await;
    let seen = list_surroundings(deps, &scopes, &vms).await;
    let mut unmatched = 0;
    let mut backup_skipped = 0;
    // VMs with an Azure Backup collection (its source is the VM), for `skipBackupProtected`.
    let backup_protected: HashSet<ResourceId> = seen
        .collections
        .iter()
        .filter(|(id, _)| id.is_azure_backup())
        .filter_map(|(_, c)| ResourceId::parse(c.source_id()?).ok())
        .collect();
    let targets: Vec<PlanTarget<'_>> = vms
        .iter()
        .filter_map(|(id, vm)| match deps.policy.rule_for(vm) {
            Some(rule) if rule.skip_backup_protected && backup_protected.contains(id) => {
                tracing::info!(vm = %id, rule = %rule.name, "skipped: Azure Backup also protects this VM (the rule's skipBackupProtected)");
                backup_skipped += 1;
                None
            }
            Some(rule) => Some(PlanTarget {
                vm: id.clone(),
                rule,
                // A listing too large for a Service Bus message (256 KB) is left out.
                listed: seen.listed_vm(id, vm, rule, now).within_message_budget(),
            }),
            None => {
                unmatched += 1;
                None
            }
        })
        .collect();
    // Measured before pacing: its reads come out of the same bucket as the creates'.
    let coverage = measure_coverage(deps, &targets, &vms, &seen, timer, now).await;
    // The listings spent reads: plan each subscription with what ARM last said is left in
    // that subscription's bucket (one subscription's headers say nothing of another's).
    let mut pacing = deps.tuning.pacing.clone();
    for target in &targets {
        let sub = target.vm.subscription().to_ascii_lowercase();
        if pacing.remaining_reads.contains_key(&sub) {
            continue;
        }
        if let Some(left) = deps.arm.rate_limits_for(&sub).remaining_reads {
            pacing.remaining_reads.insert(sub, left);
        }
    }
    // Offsets count from when the messages go out, so a late run still paces its sends. The
    // listings may have taken minutes on a large fleet: creates planned for that time would
    // otherwise all start at once, while ARM's buckets cannot have saved up more than a burst.
    // The invocation only knows when it started; ARM's `Date` on the last listing tells how
    // late it is now (rounded up past its 1 s resolution).
    let sending_at = deps
        .arm
        .rate_limits()
        .date
        .map_or(now, |d| (d + time::Duration::SECOND).max(now));
    let start = sending_at.max(tick);
    let plan = plan::plan_tick_from(tick, start, timer, &targets, &pacing);
    let copy_shortfalls = plan::copy_shortfalls(&plan, &targets, timer, &pacing);
    Ok(TickPlan {
        tick,
        start,
        plan,
        listed: vms.len(),
        unmatched,
        backup_skipped,
        failures,
        listing_transient,
        listings: seen,
        coverage,
        copy_shortfalls,
    })
}

/// The subscriptions the policy's scopes reach (lowercase, sorted): one planning invocation
/// each. A resource group or an explicit VM brings its subscription.
pub fn subscriptions(policy: &Policy) -> BTreeSet<String> {
    let (scopes, explicit) = scopes(policy);
    scopes
        .iter()
        .map(|s| scope_subscription(s).to_ascii_lowercase())
        .chain(
            explicit
                .iter()
                .map(|vm| vm.subscription().to_ascii_lowercase()),
        )
        .collect()
}

fn scope_subscription(scope: &VmScope) -> &str {
    match scope {
        VmScope::Subscription(sub) => sub,
        VmScope::ResourceGroup { subscription, .. } => subscription,
    }
}

/// The timer: finds the tick and hands each subscription of the policy's scopes its own
/// planning invocation (one `rp-plan` message per subscription, id from subscription and
/// tick, so a replayed or repeated run of the tick enqueues nothing new within Service Bus's
/// duplicate detection window). It reads nothing from ARM: the listings, pacing and creates run
/// per subscription in PlanRestorePoints, in parallel on the platform's instances, and no
/// process holds the whole estate (docs/architecture.md, "Fan-out per subscription").
pub async fn handle(inv: Invocation<TimerEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let now = inv.context.now;
    let timer = timer_schedule(deps)?;
    let Some(tick) = timer.latest_at_or_before(now) else {
        return Ok(Outcome::new(
            Status::Skipped,
            format!(
                "schedule {:?} has no occurrence at or before {}",
                deps.schedule,
                rfc3339(now)
            ),
        ));
    };
    let subs = subscriptions(&deps.policy);
    let messages: Vec<OutgoingMessage> = subs
        .iter()
        .map(|sub| plan_message(sub, tick, 0, None))
        .collect();
    let sent: Vec<Sent> = messages.iter().map(support::sent).collect();
    deps.scheduler.send_batch(messages).await?;
    let summary = if subs.is_empty() {
        format!(
            "tick {}: the policy names no subscription, resource group or VM: nothing to plan",
            rfc3339(tick)
        )
    } else {
        format!(
            "tick {}: {} subscription(s) handed to {} ({})",
            rfc3339(tick),
            subs.len(),
            super::PLAN_RESTORE_POINTS,
            subs.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    tracing::info!(tick = %rfc3339(tick), subscriptions = subs.len(), past_due = inv.event.is_past_due, "{summary}");
    Ok(Outcome::new(Status::Done, summary).with_sent(sent))
}

/// The `rp-plan` message for `subscription` and `tick`: the timer's (`attempt` 0, sent now), or
/// the `attempt`-th re-plan after a transient listing failure, sent at `not_before`; its id
/// derives from all three, so a replay sends nothing new.
pub fn plan_message(
    subscription: &str,
    tick: OffsetDateTime,
    attempt: u32,
    not_before: Option<OffsetDateTime>,
) -> OutgoingMessage {
    let subscription = subscription.to_ascii_lowercase();
    OutgoingMessage {
        queue: Queue::Plan,
        message_id: crate::names::message_id("plan", &subscription, tick, attempt),
        body: QueueMessage::Plan(PlanRequest {
            subscription,
            tick,
            attempt,
        })
        .encode(),
        not_before,
    }
}

/// Re-plans after a transient listing failure: this many times at most, after
/// [`replan_delay`]; 1+2+4+8+10+10 minutes reach about 35 minutes past the first try, inside an
/// application-consistent tick's hour and past a typical ARM incident's first minutes.
pub const MAX_REPLANS: u32 = 6;

/// How long the `attempt`-th re-plan (1-based) waits: doubling from one minute, at most ten.
pub fn replan_delay(attempt: u32) -> std::time::Duration {
    let minutes = 1u64 << attempt.saturating_sub(1).min(4);
    std::time::Duration::from_secs(minutes.min(10) * 60)
}

/// Plans `tick` for `subscription` and sends its creates (PlanRestorePoints' work once the
/// message is checked), then deletes that subscription's expired orphan collections and
/// emits its coverage signal.
pub(crate) async fn plan_and_send(
    deps: &Deps,
    timer: &Schedule,
    tick: OffsetDateTime,
    now: OffsetDateTime,
    subscription: &str,
    attempt: u32,
) -> Result<Outcome, HandlerError> {
    let TickPlan {
        tick,
        start,
        plan,
        listed,
        unmatched,
        backup_skipped,
        failures,
        listing_transient,
        listings,
        coverage,
        copy_shortfalls,
    } = plan_tick_in(deps, timer, tick, now, Some(subscription)).await?;
    for item in plan
        .items
        .iter()
        .filter(|i| i.action == plan::PlanAction::Skip)
    {
        tracing::debug!(vm = %item.vm, rule = %item.rule, reason = %item.reason, "not due at this tick");
    }
    // VMs Azure would refuse the create for: one line each, instead of a refused create.
    let unsupported = plan.unsupported().count();
    for item in plan.unsupported() {
        tracing::warn!(vm = %item.vm, rule = %item.rule, reason = %item.reason, tick = %rfc3339(tick), "no create sent: the VM is not supported by restore points as the policy asks");
    }
    // Said before the tick runs, once per tick: which VMs will not get this tick's point and
    // why (rather than a "superseded" report per VM an hour later).
    let left_out: Vec<&plan::PlanItem> = plan.left_out().collect();
    if let Some(first) = left_out.first() {
        let sample: Vec<&str> = left_out.iter().take(5).map(|i| i.vm.as_str()).collect();
        tracing::warn!(
            tick = %rfc3339(tick),
            subscription,
            left_out = left_out.len(),
            sample = %sample.join(" "),
            reason = %first.reason,
            "{} due VMs do not fit before this tick's supersede cut-off and get no point this tick",
            left_out.len()
        );
        for item in &left_out {
            tracing::debug!(vm = %item.vm, rule = %item.rule, reason = %item.reason, "does not fit this tick");
        }
    }
    let copies_behind = say_copy_shortfalls(tick, &copy_shortfalls);
    let left_out_records: Vec<crate::invocation::LeftOut> = left_out
        .iter()
        .map(|i| crate::invocation::LeftOut {
            vm: i.vm.to_string(),
            tick,
            reason: i.reason.clone(),
        })
        .collect();
    let left_out = left_out.len();
    let messages = plan.messages(start);
    let sent: Vec<Sent> = messages.iter().map(support::sent).collect();
    let creates = messages.len();
    let last = messages.iter().filter_map(|m| m.not_before).max();
    deps.scheduler.send_batch(messages).await?;

    let orphans = delete_expired_orphans(deps, &listings, now, subscription).await;
    crate::coverage::emit(&coverage, tick, Some(subscription));
    let summary = format!(
        "tick {} in subscription {subscription}: {creates} creates sent for {listed} VMs, paced from {}{} ({} not due, {unmatched} without a rule{}{}){}{}{}",
        rfc3339(tick),
        rfc3339(start),
        last.map(|l| format!(" to {}", rfc3339(l))).unwrap_or_default(),
        plan.items.len() - creates - left_out - unsupported,
        if unsupported > 0 {
            format!(", {unsupported} not supported by restore points")
        } else {
            String::new()
        } + &if backup_skipped > 0 {
            format!(", {backup_skipped} skipped as Azure Backup protects them")
        } else {
            String::new()
        },
        if left_out > 0 {
            format!(", {left_out} do not fit before the supersede cut-off")
        } else {
            String::new()
        },
        copies_behind,
        orphans,
        if failures.is_empty() {
            String::new()
        } else {
            format!("; listing failed for {}", failures.join(", "))
        }
    );
    let mut sent = sent;
    let (status, summary) = if failures.is_empty() {
        (Status::Done, summary)
    } else if listing_transient && attempt < MAX_REPLANS {
        // A transient listing failure (an ARM outage, throttling): the VMs it hid may still get
        // this tick's point, so plan the subscription again a little later; creates already
        // sent keep their ids, and the re-plan's duplicates are dropped by Service Bus.
        let again = attempt + 1;
        let delay = replan_delay(again);
        let message = plan_message(subscription, tick, again, Some(support::after(now, delay)));
        sent.push(support::sent(&message));
        deps.scheduler.send_batch(vec![message]).await?;
        (
            Status::Rescheduled,
            format!("{summary}; planned again in {} min", delay.as_secs() / 60),
        )
    } else {
        (Status::Reported, summary)
    };
    tracing::info!(tick = %rfc3339(tick), subscription, creates, left_out, attempt, "{summary}");
    Ok(Outcome::new(status, summary)
        .with_sent(sent)
        .with_left_out(left_out_records))
}

/// Logs the copies this subscription's creates bring into a region faster than Azure replicates
/// them (100 disk copies at once; `plan::copy_shortfalls`), once per tick and region, before any
/// copy waits: WARN when they fall behind, INFO when they only queue within the period. Returns
/// the outcome summary's part for those that fall behind (empty when none).
fn say_copy_shortfalls(tick: OffsetDateTime, shortfalls: &[plan::CopyShortfall]) -> String {
    for s in shortfalls {
        if s.falls_behind() {
            tracing::warn!(tick = %rfc3339(tick), subscription = %s.subscription, region = %s.region, disk_copies = s.disk_copies, fit_per_period = s.fit_per_period, "{s}");
        } else {
            tracing::info!(tick = %rfc3339(tick), subscription = %s.subscription, region = %s.region, disk_copies = s.disk_copies, "{s}");
        }
    }
    let behind: Vec<String> = shortfalls
        .iter()
        .filter(|s| s.falls_behind())
        .map(|s| {
            format!(
                "{}: {} disk copies, ~{} fit",
                s.region,
                s.disk_copies,
                s.fit_per_period.unwrap_or_default()
            )
        })
        .collect();
    if behind.is_empty() {
        return String::new();
    }
    format!(
        "; copies to {} region(s) cannot keep up with Azure's 100 disk copies at once ({})",
        behind.len(),
        behind.join(", ")
    )
}

/// The coverage signal (src/coverage.rs): per target VM and region, the newest settled point,
/// read with `$expand=restorePoints` from collections the listing showed (a few at a time, up to
/// `coverage_max_reads`); a collection the listing proved absent costs no read.
async fn measure_coverage(
    deps: &Deps,
    targets: &[PlanTarget<'_>],
    vms: &BTreeMap<ResourceId, VirtualMachine>,
    listings: &Listings,
    timer: &Schedule,
    now: OffsetDateTime,
) -> Vec<crate::coverage::CoverageLine> {
    use crate::coverage::{self, Role, VmRegionState};
    use futures::StreamExt;
    let mut wanted = Vec::new();
    for t in targets {
        let rule = t.rule;
        let region = vms
            .get(&t.vm)
            .and_then(|vm| vm.location.as_deref())
            .map(crate::policy::regions::canonical_region)
            .unwrap_or_default();
        let due = |minutes| coverage::due_tick(rule, timer, now, minutes);
        // A name that cannot be formed is the handler's to report; coverage skips it.
        if let Some(id) = listings.current_name(support::local_collection(&t.vm, rule)) {
            wanted.push((
                rule,
                Role::Local,
                region.clone(),
                id,
                due(rule.deadlines.local_minutes),
            ));
        }
        for copy in rule.copies_from(Some(&region)) {
            let region = crate::policy::regions::canonical_region(&copy.region);
            let names = support::copy_collection(&t.vm, &region, copy.resource_group.as_deref());
            if let Some(id) = listings.current_name(names) {
                wanted.push((
                    rule,
                    Role::Copy,
                    region,
                    id,
                    due(rule.deadlines.copy_minutes),
                ));
            }
        }
    }
    // Each read takes its share of the budget up front, so the cap holds under concurrency.
    // And each asks ARM's last reading of its subscription first, as every ARM caller does
    // (functions/pace.rs): the signal is optional, so a read the budget has no room for is
    // skipped (its VM counted unknown, never covered) rather than put back, leaving the
    // subscription's reads to the tick's creates and to other tools.
    let skipped = std::sync::atomic::AtomicUsize::new(0);
    let mut budget = deps.tuning.coverage_max_reads;
    let arm = deps.arm.clone();
    let mut reads = Vec::with_capacity(wanted.len());
    for (rule, role, region, collection, due) in wanted {
        let absent = listings.proves_absent(&collection);
        // A copy may need a second read (its replication percents).
        let share = match (absent, role) {
            (true, _) => 0,
            (false, Role::Local) => 1,
            (false, Role::Copy) => 2,
        };
        let mut mine: usize = share.min(budget);
        budget -= mine;
        let (arm, rule) = (arm.clone(), rule.name.clone());
        let skipped = &skipped;
        reads.push(async move {
            let newest_settled = if absent {
                Some(None)
            } else if mine > 0
                && !support::spend_if_room(
                    deps,
                    now,
                    collection.subscription(),
                    super::pace::Bucket::Reads,
                    mine as u32,
                )
            {
                skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            } else {
                coverage::newest_settled(arm.as_ref(), &collection, role, &mut mine).await
            };
            VmRegionState {
                rule,
                region,
                role,
                newest_settled,
                due,
            }
        });
    }
    let states: Vec<VmRegionState> = futures::stream::iter(reads).buffered(8).collect().await;
    let skipped = skipped.into_inner();
    if skipped > 0 {
        tracing::info!(
            skipped,
            "coverage: reads skipped to leave the ARM read budget to the tick (their VMs count as unknown)"
        );
    }
    coverage::summarise(&states, now)
}

/// Every VM in any rule's scope, by id. Scopes that fail to list are named in the second value
/// (logged; the rest of the fleet still gets its points); the third says whether any of those
/// failures was transient.
pub(crate) async fn list_targets(
    deps: &Deps,
    scopes: &[VmScope],
    explicit: Vec<ResourceId>,
) -> (BTreeMap<ResourceId, VirtualMachine>, Vec<String>, bool) {
    let mut vms = BTreeMap::new();
    let mut failures = Vec::new();
    let mut transient = false;
    for scope in scopes {
        match deps.arm.list_vms(scope).await {
            Ok(list) => {
                for vm in list {
                    if let Some(id) = vm.resource_id() {
                        vms.entry(id).or_insert(vm);
                    }
                }
            }
            Err(e) => {
                tracing::error!(scope = ?scope, code = %e.code, message = %e.message, "listing VMs failed");
                transient |= e.is_transient();
                failures.push(format!("{scope:?}"));
            }
        }
    }
    for id in explicit {
        if vms.contains_key(&id) {
            continue;
        }
        match deps.arm.get_vm(&id).await {
            Ok(Some(vm)) => {
                vms.insert(id, vm);
            }
            Ok(None) => tracing::warn!(vm = %id, "VM named in the policy does not exist"),
            Err(e) => {
                tracing::error!(vm = %id, code = %e.code, message = %e.message, "reading VM failed");
                transient |= e.is_transient();
                failures.push(id.to_string());
            }
        }
    }
    (vms, failures, transient)
}

/// What the timer's other listings showed: disk details and restore point collections. Each
/// listing may fail or be refused (a role scoped to resource groups cannot list a subscription's
/// collections); the create handler then reads what is missing itself.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    disks: HashMap<ResourceId, DiskInfo>,
    /// Scopes (subscriptions or resource groups, lowercase) whose collections were listed
    /// completely.
    collections_listed: HashSet<VmScope>,
    collections: HashMap<ResourceId, RestorePointCollection>,
}

impl Listings {
    /// The create message's view of `vm`, listed at `now`.
    fn listed_vm(
        &self,
        id: &ResourceId,
        vm: &VirtualMachine,
        rule: &Rule,
        now: OffsetDateTime,
    ) -> ListedVm {
        let disks = vm
            .managed_data_disk_ids()
            .filter_map(|disk| self.disks.get(&disk).cloned())
            .collect();
        let collection = match support::local_collection(id, rule) {
            // No name can be formed: the handler reports why.
            Err(_) => None,
            Ok(names)
                if !self
                    .collections_listed
                    .iter()
                    .any(|scope| scope.contains(&names.id)) =>
            {
                None
            }
            Ok(names) => match self.collections.get(&names.id) {
                // A legacy-named collection of this VM's: the handler's full check adopts it.
                None if names
                    .legacy
                    .as_ref()
                    .and_then(|l| self.collections.get(l))
                    .and_then(|c| c.source_id())
                    .and_then(|s| ResourceId::parse(s).ok())
                    .is_some_and(|s| &s == id) =>
                {
                    None
                }
                None => Some(CollectionSeen::Missing),
                // Another source or an orphan mark: the handler's full check deals with it.
                Some(c) => support::is_ready_for(c, id).then_some(CollectionSeen::Ready),
            },
        };
        ListedVm {
            at: now,
            vm: vm.clone(),
            disks,
            collection,
            planned_for: None,
        }
    }

    /// The name a VM's collection has now: its legacy name when only that one was listed (the
    /// handlers adopt it by `source.id`), else today's; `None` when no name can be formed.
    fn current_name(&self, names: Result<support::CollectionNames, String>) -> Option<ResourceId> {
        let names = names.ok()?;
        Some(match names.legacy {
            Some(legacy)
                if !self.collections.contains_key(&names.id)
                    && self.collections.contains_key(&legacy) =>
            {
                legacy
            }
            _ => names.id,
        })
    }

    /// Whether the listing shows that `collection` does not exist (a scope holding it was listed
    /// completely and it was not in it).
    fn proves_absent(&self, collection: &ResourceId) -> bool {
        self.collections_listed
            .iter()
            .any(|scope| scope.contains(collection))
            && !self.collections.contains_key(collection)
    }

    /// The collections of `scope`, when its listing was complete.
    fn collections_in(&self, scope: &VmScope) -> Option<Vec<RestorePointCollection>> {
        self.collections_listed.contains(scope).then(|| {
            self.collections
                .iter()
                .filter(|(id, _)| scope.contains(id))
                .map(|(_, c)| c.clone())
                .collect()
        })
    }
}

/// Lists the disks of every scope and the collections of every scope the role holds
/// ([`support::collection_scopes`]: a role assigned at resource groups cannot list a
/// subscription), when some target VM was found.
async fn list_surroundings(
    deps: &Deps,
    scopes: &[VmScope],
    vms: &BTreeMap<ResourceId, VirtualMachine>,
) -> Listings {
    let mut seen = Listings::default();
    for scope in scopes {
        match deps.arm.list_disks(scope).await {
            Ok(disks) => seen.disks.extend(
                disks
                    .iter()
                    .filter_map(DiskInfo::from_disk)
                    .map(|info| (info.id.clone(), info)),
            ),
            Err(e) => {
                tracing::warn!(scope = ?scope, code = %e.code, message = %e.message, "listing disks failed; creates will read their disks one by one")
            }
        }
    }
    let holds_target = |scope: &VmScope| {
        vms.keys().any(|vm| {
            vm.subscription().eq_ignore_ascii_case(match scope {
                VmScope::Subscription(sub) => sub,
                VmScope::ResourceGroup { subscription, .. } => subscription,
            })
        })
    };
    for scope in support::collection_scopes(&deps.policy)
        .into_iter()
        .filter(holds_target)
    {
        match deps.arm.list_collections_in(&scope).await {
            Ok(list) => {
                seen.collections.extend(list.into_iter().filter_map(|c| {
                    let id = ResourceId::parse(c.id.as_deref()?).ok()?;
                    Some((id, c))
                }));
                seen.collections_listed.insert(scope);
            }
            // A collection group that does not exist yet holds no collections.
            Err(e) if e.is_not_found() => {
                seen.collections_listed.insert(scope);
            }
            Err(e) => {
                tracing::warn!(scope = ?scope, code = %e.code, message = %e.message, "listing collections failed; creates will read their collections")
            }
        }
    }
    seen
}

/// The scopes to list (a resource group inside a listed subscription is dropped) and explicit
/// VM ids outside them.
pub(crate) fn scopes(policy: &Policy) -> (Vec<VmScope>, Vec<ResourceId>) {
    let mut subs: BTreeSet<String> = BTreeSet::new();
    let mut groups: BTreeSet<(String, String)> = BTreeSet::new();
    let mut vms: BTreeSet<ResourceId> = BTreeSet::new();
    for rule in &policy.rules {
        let t = &rule.targets;
        subs.extend(t.subscriptions.iter().map(|s| s.to_ascii_lowercase()));
        for rg in &t.resource_groups {
            match ResourceId::parse(rg) {
                Ok(id) if id.resource_group().is_some() => {
                    groups.insert((
                        id.subscription().to_ascii_lowercase(),
                        id.resource_group().unwrap_or_default().to_ascii_lowercase(),
                    ));
                }
                _ => {
                    tracing::warn!(rule = %rule.name, value = %rg, "targets.resourceGroups entry is not /subscriptions/{{sub}}/resourceGroups/{{rg}}; ignored")
                }
            }
        }
        vms.extend(t.vms.iter().cloned());
    }
    let mut out: Vec<VmScope> = subs.iter().cloned().map(VmScope::Subscription).collect();
    out.extend(groups.into_iter().filter(|(s, _)| !subs.contains(s)).map(
        |(subscription, resource_group)| VmScope::ResourceGroup {
            subscription,
            resource_group,
        },
    ));
    let explicit = vms
        .into_iter()
        .filter(|vm| !policy_lists(&out, vm))
        .collect();
    (out, explicit)
}

fn policy_lists(scopes: &[VmScope], vm: &ResourceId) -> bool {
    scopes.iter().any(|s| match s {
        VmScope::Subscription(sub) => vm.subscription().eq_ignore_ascii_case(sub),
        VmScope::ResourceGroup {
            subscription,
            resource_group,
        } => {
            vm.subscription().eq_ignore_ascii_case(subscription)
                && vm
                    .resource_group()
                    .is_some_and(|rg| rg.eq_ignore_ascii_case(resource_group))
        }
    })
}

/// Deletes collections tagged `vmrp-orphaned-at` longer ago than `orphans.expireAfterDays`
/// (capped per run), in the scopes the role holds ([`support::collection_scopes`]); a scope the
/// timer listed already is not listed again. The mark alone never deletes: the VM it names
/// (`vmrp-vm`), and for a local collection its `source.id`, must answer 404 first. A mark on a
/// live VM's collection (stale, forged, or left by a late delete event after a same-name
/// re-create) is cleared with a warning. A mark dated in the future or unreadable is re-stamped
/// with `now`, so it can neither hold a collection for good nor expire early. Returns a summary
/// fragment.
async fn delete_expired_orphans(
    deps: &Deps,
    listings: &Listings,
    now: OffsetDateTime,
    subscription: &str,
) -> String {
    let Some(days) = deps.policy.orphans.expire_after_days else {
        return String::new();
    };
    // Checked: `days` comes from the policy; a cutoff before the earliest date expires nothing.
    let Some(cutoff) = now.checked_sub(time::Duration::days(i64::from(days))) else {
        return String::new();
    };
    let mut deleted = 0;
    let mut cleared = 0;
    'scopes: for scope in support::collection_scopes(&deps.policy)
        .into_iter()
        .filter(|s| scope_subscription(s).eq_ignore_ascii_case(subscription))
    {
        let listed = match listings.collections_in(&scope) {
            Some(c) => Ok(c),
            None => deps.arm.list_collections_in(&scope).await,
        };
        let collections = match listed {
            Ok(c) => c,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                tracing::warn!(scope = ?scope, code = %e.code, "listing collections for orphan cleanup failed");
                continue;
            }
        };
        for c in collections {
            let Some(mark) = support::tag(c.tags.as_ref(), TAG_ORPHANED_AT) else {
                continue;
            };
            let Some(id) = c.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
                continue;
            };
            let parsed =
                OffsetDateTime::parse(mark, &time::format_description::well_known::Rfc3339).ok();
            let orphaned_at = match parsed {
                Some(t) if t <= now + MARK_CLOCK_SKEW => t,
                _ => {
                    tracing::warn!(collection = %id, mark, "orphan mark unreadable or in the future: re-stamped with now");
                    let stamp = rfc3339(now);
                    set_orphan_mark(deps, &id, &c, Some(&stamp)).await;
                    continue;
                }
            };
            if orphaned_at > cutoff {
                continue;
            }
            if deleted >= deps.tuning.max_orphan_deletes_per_tick {
                break 'scopes;
            }
            match vm_gone(deps, &c).await {
                Gone::Confirmed => {}
                Gone::Live(vm) => {
                    tracing::warn!(collection = %id, vm = %vm, mark, "orphan mark on a live VM's collection: mark cleared, nothing deleted");
                    if set_orphan_mark(deps, &id, &c, None).await {
                        cleared += 1;
                    }
                    continue;
                }
                Gone::Unknown(why) => {
                    tracing::warn!(collection = %id, mark, "expired orphan kept: {why}");
                    continue;
                }
            }
            match deps.arm.delete_collection(&id).await {
                Ok(_) => {
                    deleted += 1;
                    deps.known.forget_collection(&id);
                    tracing::info!(collection = %id, orphaned_at = %rfc3339(orphaned_at), days, "orphan collection expired and its VM is gone: deleting it and its points");
                }
                Err(e) => {
                    tracing::warn!(collection = %id, code = %e.code, message = %e.message, "deleting an expired orphan collection failed")
                }
            }
        }
    }
    let mut out = String::new();
    if deleted > 0 {
        out.push_str(&format!("; {deleted} expired orphan collections deleted"));
    }
    if cleared > 0 {
        out.push_str(&format!(
            "; {cleared} orphan marks cleared (their VMs exist)"
        ));
    }
    out
}

/// How far in the future an orphan mark may lie (clock skew between Event Grid and the timer)
/// before it is treated as wrong.
const MARK_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Whether the VM behind an orphaned collection is gone.
enum Gone {
    /// Every VM it names answered 404.
    Confirmed,
    /// This VM exists.
    Live(ResourceId),
    /// Could not tell (no `vmrp-vm` tag, or a read failed): keep the collection.
    Unknown(String),
}

/// Reads the VM named by `vmrp-vm` and, for a local collection, its `source.id`: both must be
/// 404 before an orphan may be deleted.
async fn vm_gone(deps: &Deps, c: &RestorePointCollection) -> Gone {
    let Some(tagged) =
        support::tag(c.tags.as_ref(), TAG_VM).and_then(|v| ResourceId::parse(v).ok())
    else {
        return Gone::Unknown("no readable `vmrp-vm` tag names its VM".into());
    };
    let mut vms = vec![tagged];
    if let Some(source) = c.source_id().and_then(|s| ResourceId::parse(s).ok()) {
        if source.is_type("Microsoft.Compute/virtualMachines") && !vms.contains(&source) {
            vms.push(source);
        }
    }
    for vm in vms {
        match deps.arm.get_vm(&vm).await {
            Ok(None) => {}
            Ok(Some(_)) => return Gone::Live(vm),
            Err(e) => {
                return Gone::Unknown(format!("reading {vm} failed: {} {}", e.code, e.message))
            }
        }
    }
    Gone::Confirmed
}

/// PUTs `c` with the orphan mark set to `stamp`, or removed (`None`); `false` when ARM refused.
async fn set_orphan_mark(
    deps: &Deps,
    id: &ResourceId,
    c: &RestorePointCollection,
    stamp: Option<&str>,
) -> bool {
    let (Some(location), Some(source)) = (
        c.location.as_deref(),
        c.source_id().and_then(|s| ResourceId::parse(s).ok()),
    ) else {
        tracing::warn!(collection = %id, "collection lacks location or source.id: orphan mark left as is");
        return false;
    };
    let mut tags = c.tags.clone().unwrap_or_default();
    tags.retain(|k, _| !k.eq_ignore_ascii_case(TAG_ORPHANED_AT));
    if let Some(stamp) = stamp {
        tags.insert(TAG_ORPHANED_AT.to_string(), stamp.to_string());
    }
    let body = RestorePointCollection::for_source(location, &source, tags);
    match deps.arm.put_collection(id, &body).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(collection = %id, code = %e.code, message = %e.message, "updating the orphan mark failed");
            false
        }
    }
}

#[cfg(test)]
mod tests;
