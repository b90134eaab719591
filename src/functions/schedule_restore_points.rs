//! ScheduleRestorePoints (timer): find the tick, list the target VMs, plan, send one paced create
//! per VM (DESIGN §1), then delete orphan collections whose grace period has passed.
//!
//! The tick is the latest occurrence of `VMRP_SCHEDULE` at or before `now`, so a late or repeated
//! run names the same points and sends the same message ids. Targets are the union of every
//! rule's scopes (subscriptions and resource groups listed, explicit VM ids read one by one),
//! de-duplicated, each VM under its first matching rule. A rule without any scope matches VMs
//! found through other rules' scopes only: the handler cannot list "everything".

use crate::schedule::rfc3339;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use time::OffsetDateTime;

use super::support::{self, TAG_ORPHANED_AT};
use super::{Deps, HandlerError};
use crate::azure::models::{RestorePointCollection, VirtualMachine};
use crate::azure::{ResourceId, VmScope};
use crate::events::TimerEvent;
use crate::invocation::{Invocation, Outcome, Sent, Status};
use crate::messages::{CollectionSeen, ListedVm};
use crate::plan::{self, PlanTarget};
use crate::policy::{DiskInfo, Policy, Rule};
use crate::schedule::Schedule;

/// What a timer run at `now` would do: the tick, the plan, and what listing found (computed with
/// VM reads only; the handler then sends the plan). `vmrp plan` does not call this: it judges
/// existing points too, from `inventory`, with the same pure rules (`policy`, `names`).
#[derive(Debug, Clone)]
pub struct TickPlan {
    pub tick: OffsetDateTime,
    pub plan: plan::Plan,
    /// VMs found in the policy's scopes.
    pub listed: usize,
    /// VMs found but selected by no rule.
    pub unmatched: usize,
    /// Scopes or VM ids whose listing failed.
    pub failures: Vec<String>,
    /// What the disk and collection listings showed (orphan cleanup reuses the collections).
    pub listings: Listings,
}

/// Plans the tick a timer run at `now` belongs to; `None` when the schedule has no occurrence
/// at or before `now`.
pub async fn plan_for(deps: &Deps, now: OffsetDateTime) -> Result<Option<TickPlan>, HandlerError> {
    let timer = Schedule::parse(&deps.schedule)
        .map_err(|e| HandlerError::Invalid(format!("setting VMRP_SCHEDULE: {e}")))?;
    let Some(tick) = timer.latest_at_or_before(now) else {
        return Ok(None);
    };
    let (scopes, explicit) = scopes(&deps.policy);
    let (vms, failures) = list_targets(deps, &scopes, explicit).await;
    let seen = list_surroundings(deps, &scopes, &vms).await;
    let mut unmatched = 0;
    let targets: Vec<PlanTarget<'_>> = vms
        .iter()
        .filter_map(|(id, vm)| match deps.policy.rule_for(vm) {
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
    // The listings spent reads: plan with what ARM last said is left.
    let mut pacing = deps.tuning.pacing.clone();
    if let Some(left) = deps.arm.rate_limits().remaining_reads {
        pacing.read_burst = pacing.read_burst.min(left);
    }
    let plan = plan::plan_tick(tick, &timer, &targets, &pacing);
    Ok(Some(TickPlan {
        tick,
        plan,
        listed: vms.len(),
        unmatched,
        failures,
        listings: seen,
    }))
}

pub async fn handle(inv: Invocation<TimerEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let now = inv.context.now;
    let Some(TickPlan {
        tick,
        plan,
        listed,
        unmatched,
        failures,
        listings,
    }) = plan_for(deps, now).await?
    else {
        return Ok(Outcome::new(
            Status::Skipped,
            format!(
                "schedule {:?} has no occurrence at or before {}",
                deps.schedule,
                rfc3339(now)
            ),
        ));
    };
    for item in plan
        .items
        .iter()
        .filter(|i| i.action == plan::PlanAction::Skip)
    {
        tracing::debug!(vm = %item.vm, rule = %item.rule, reason = %item.reason, "not due at this tick");
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
    let messages = plan.messages(start);
    let sent: Vec<Sent> = messages
        .iter()
        .map(|m| Sent {
            queue: m.queue.name(),
            message_id: m.message_id.clone(),
            not_before: m.not_before,
        })
        .collect();
    let creates = messages.len();
    let last = messages.iter().filter_map(|m| m.not_before).max();
    deps.scheduler.send_batch(messages).await?;

    let orphans = delete_expired_orphans(deps, &listings, now).await;
    let summary = format!(
        "tick {}: {creates} creates sent for {listed} VMs, paced from {}{} ({} not due, {unmatched} without a rule){}{}",
        rfc3339(tick),
        rfc3339(start),
        last.map(|l| format!(" to {}", rfc3339(l))).unwrap_or_default(),
        plan.items.len() - creates,
        orphans,
        if failures.is_empty() {
            String::new()
        } else {
            format!("; listing failed for {}", failures.join(", "))
        }
    );
    let status = if failures.is_empty() {
        Status::Done
    } else {
        Status::Reported
    };
    tracing::info!(tick = %rfc3339(tick), creates, past_due = inv.event.is_past_due, "{summary}");
    Ok(Outcome::new(status, summary).with_sent(sent))
}

/// Every VM in any rule's scope, by id. Scopes that fail to list are named in the second value
/// (logged; the rest of the fleet still gets its points).
async fn list_targets(
    deps: &Deps,
    scopes: &[VmScope],
    explicit: Vec<ResourceId>,
) -> (BTreeMap<ResourceId, VirtualMachine>, Vec<String>) {
    let mut vms = BTreeMap::new();
    let mut failures = Vec::new();
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
                failures.push(id.to_string());
            }
        }
    }
    (vms, failures)
}

/// What the timer's other listings showed: disk details and restore point collections. Each
/// listing may fail or be refused (a role scoped to resource groups cannot list a subscription's
/// collections); the create handler then reads what is missing itself.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    disks: HashMap<ResourceId, DiskInfo>,
    /// Subscriptions (lowercase) whose collections were listed completely.
    collections_listed: HashSet<String>,
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
        let collection_id = support::local_collection(id, rule);
        let collection = if !self
            .collections_listed
            .contains(&collection_id.subscription().to_ascii_lowercase())
        {
            None
        } else {
            match self.collections.get(&collection_id) {
                None => Some(CollectionSeen::Missing),
                // Another source or an orphan mark: the handler's full check deals with it.
                Some(c) => support::is_ready_for(c, id).then_some(CollectionSeen::Ready),
            }
        };
        ListedVm {
            at: now,
            vm: vm.clone(),
            disks,
            collection,
        }
    }

    /// The collections of `subscription` (lowercase), when its listing was complete.
    fn collections_of(&self, subscription: &str) -> Option<Vec<RestorePointCollection>> {
        self.collections_listed.contains(subscription).then(|| {
            self.collections
                .iter()
                .filter(|(id, _)| id.subscription().eq_ignore_ascii_case(subscription))
                .map(|(_, c)| c.clone())
                .collect()
        })
    }
}

/// Lists the disks of every scope and the collections of every subscription holding a target.
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
    let subscriptions: BTreeSet<String> = vms
        .keys()
        .map(|id| id.subscription().to_ascii_lowercase())
        .collect();
    for sub in subscriptions {
        match deps.arm.list_collections(&sub).await {
            Ok(list) => {
                seen.collections.extend(list.into_iter().filter_map(|c| {
                    let id = ResourceId::parse(c.id.as_deref()?).ok()?;
                    Some((id, c))
                }));
                seen.collections_listed.insert(sub);
            }
            Err(e) => {
                tracing::warn!(subscription = %sub, code = %e.code, message = %e.message, "listing collections failed; creates will read their collections")
            }
        }
    }
    seen
}

/// The scopes to list (a resource group inside a listed subscription is dropped) and explicit
/// VM ids outside them.
fn scopes(policy: &Policy) -> (Vec<VmScope>, Vec<ResourceId>) {
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
/// (capped per run), in the subscriptions the policy names; a subscription the timer listed
/// already is not listed again. Returns a summary fragment.
async fn delete_expired_orphans(deps: &Deps, listings: &Listings, now: OffsetDateTime) -> String {
    let Some(days) = deps.policy.orphans.expire_after_days else {
        return String::new();
    };
    // Checked: `days` comes from the policy; a cutoff before the earliest date expires nothing.
    let Some(cutoff) = now.checked_sub(time::Duration::days(i64::from(days))) else {
        return String::new();
    };
    let mut subs: BTreeSet<String> = BTreeSet::new();
    for rule in &deps.policy.rules {
        let t = &rule.targets;
        subs.extend(t.subscriptions.iter().map(|s| s.to_ascii_lowercase()));
        subs.extend(
            t.resource_groups
                .iter()
                .filter_map(|rg| ResourceId::parse(rg).ok())
                .map(|id| id.subscription().to_ascii_lowercase()),
        );
        subs.extend(t.vms.iter().map(|v| v.subscription().to_ascii_lowercase()));
    }
    let mut deleted = 0;
    'subs: for sub in subs {
        let listed = match listings.collections_of(&sub) {
            Some(c) => Ok(c),
            None => deps.arm.list_collections(&sub).await,
        };
        let collections = match listed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(subscription = %sub, code = %e.code, "listing collections for orphan cleanup failed");
                continue;
            }
        };
        for c in collections {
            let Some(orphaned_at) = support::tag(c.tags.as_ref(), TAG_ORPHANED_AT).and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            }) else {
                continue;
            };
            if orphaned_at > cutoff {
                continue;
            }
            let Some(id) = c.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
                continue;
            };
            if deleted >= deps.tuning.max_orphan_deletes_per_tick {
                break 'subs;
            }
            match deps.arm.delete_collection(&id).await {
                Ok(_) => {
                    deleted += 1;
                    deps.known.forget_collection(&id);
                    tracing::info!(collection = %id, orphaned_at = %rfc3339(orphaned_at), days, "orphan collection expired: deleting it and its points");
                }
                Err(e) => {
                    tracing::warn!(collection = %id, code = %e.code, message = %e.message, "deleting an expired orphan collection failed")
                }
            }
        }
    }
    if deleted > 0 {
        format!("; {deleted} expired orphan collections deleted")
    } else {
        String::new()
    }
}
