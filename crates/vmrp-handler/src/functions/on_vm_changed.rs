//! OnVmChanged (Event Grid): onboard a VM as soon as it is written with a matching rule, and mark
//! a deleted VM's collections as orphans (docs/architecture.md, "Flow").
//!
//! - Events about anything but a VM itself (collections, extensions, other types) and
//!   operations other than write/delete are acknowledged and skipped.
//! - VM written, a rule selects it: ensure its collection; when it holds no points yet, send a
//!   create for the timer's latest tick. The message id is the one the timer uses for that VM and
//!   tick, so a burst of writes (tagging, resizing, extensions) collapses into one create in
//!   Service Bus duplicate detection, and once the collection is known to this process later
//!   events do nothing at all.
//! - VM deleted: its collections (found by the `vmrp-vm` tag) get `vmrp-orphaned-at`; the timer
//!   deletes them after `orphans.expireAfterDays`, or never when unset. Re-creating the VM
//!   under the same id removes the mark on the next create.

use time::OffsetDateTime;

use super::support::{self, EnsureError, TAG_ORPHANED_AT, TAG_VM};
use super::{Deps, HandlerError};
use crate::azure::models::RestorePointCollection;
use crate::azure::{ResourceId, VmScope};
use crate::events::ResourceEvent;
use crate::invocation::{Invocation, Outcome, Status};
use crate::messages::{CreateRequest, QueueMessage};
use crate::schedule::Schedule;

const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";

pub async fn handle(inv: Invocation<ResourceEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let event = inv.event;
    let now = inv.context.now;
    let Ok(vm) = ResourceId::parse(&event.subject) else {
        return Ok(skip(format!(
            "{}: subject {:?} is not an ARM id",
            event.event_type, event.subject
        )));
    };
    if !vm.is_type(VM_TYPE) {
        return Ok(skip(format!(
            "{} for a {}: not a VM",
            event.event_type,
            vm.resource_type().unwrap_or_default()
        )));
    }
    let kind = event.event_type.rsplit('.').next().unwrap_or_default();
    let deleted = kind.eq_ignore_ascii_case("ResourceDeleteSuccess");
    let written = kind.eq_ignore_ascii_case("ResourceWriteSuccess");
    if !deleted && !written {
        return Ok(skip(format!(
            "{} for {vm}: not a successful write or delete",
            event.event_type
        )));
    }
    if !deps.policy.covers(&vm) {
        return Ok(skip(format!("{vm} is outside every policy scope")));
    }
    if deleted {
        // An event time comes from the sender: one in the future (9999-12-31) would keep the
        // mark from ever expiring, so it is clamped to now.
        mark_orphaned(deps, &vm, event_time_at_most(event.event_time, now)).await
    } else {
        onboard(deps, &vm, now).await
    }
}

fn skip(why: String) -> Outcome {
    tracing::debug!("event skipped: {why}");
    Outcome::new(Status::Skipped, why)
}

fn arm_outcome(
    what: &str,
    vm: &ResourceId,
    e: &crate::azure::ArmError,
) -> Result<Outcome, HandlerError> {
    if e.is_transient() {
        // Event Grid retries a failed delivery with its own backoff: the right tool here.
        Err(HandlerError::Arm(e.clone()))
    } else {
        support::log_permanent(what, vm, e);
        Ok(Outcome::new(
            Status::Reported,
            format!("{what} for {vm}: {} {}", e.code, e.message),
        ))
    }
}

async fn onboard(
    deps: &Deps,
    vm_id: &ResourceId,
    now: OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    let collection_guess = deps
        .policy
        .rules
        .iter()
        .filter_map(|r| support::local_collection(vm_id, r).ok())
        .find_map(|c| deps.known.resolved(&c));
    // The cache only saves work: another instance may have marked the collection orphaned (the
    // VM was deleted, and this event is its re-creation) or deleted it. One read confirms it is
    // there, of this VM and unmarked, before the event is skipped; otherwise onboarding runs.
    if let Some(c) = collection_guess {
        match deps.arm.get_collection(&c, false).await {
            Ok(Some(found)) if support::is_ready_for(&found, vm_id) => {
                return Ok(skip(format!("{vm_id} already onboarded ({c} known)")));
            }
            Ok(_) => {
                tracing::info!(collection = %c, vm = %vm_id, "cached collection gone or marked orphaned: onboarding again");
                deps.known.forget_collection(&c);
            }
            Err(e) => return arm_outcome("onboarding: reading the collection", vm_id, &e),
        }
    }
    let vm = match deps.arm.get_vm(vm_id).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return Ok(skip(format!("{vm_id} vanished"))),
        Err(e) => return arm_outcome("onboarding: reading the VM", vm_id, &e),
    };
    let Some(rule) = deps.policy.rule_for(&vm) else {
        return Ok(skip(format!("no rule selects {vm_id}")));
    };
    let location = match support::vm_location(&vm) {
        Ok(l) => l.to_string(),
        Err(why) => return Ok(Outcome::new(Status::Reported, format!("{vm_id}: {why}"))),
    };
    let collection = match support::local_collection(vm_id, rule) {
        Ok(c) => c,
        Err(why) => return Ok(Outcome::new(Status::Reported, why)),
    };
    let ensured = match support::ensure_collection(
        deps,
        &collection,
        &location,
        vm_id,
        support::collection_tags(&rule.name, vm_id),
        true,
    )
    .await
    {
        Ok(e) => e,
        Err(EnsureError::Arm(e)) => {
            return arm_outcome("onboarding: ensuring the collection", vm_id, &e)
        }
        Err(EnsureError::Foreign { id, source }) => {
            tracing::error!(collection = %id, %source, vm = %vm_id, "collection name taken by another source");
            return Ok(Outcome::new(
                Status::Reported,
                format!("{id} exists with source {source}"),
            ));
        }
    };
    let has_points = ensured.points.as_ref().is_some_and(|p| !p.is_empty());
    if has_points || !deps.tuning.onboard_first_point {
        return Ok(Outcome::new(
            Status::Done,
            format!("{vm_id} onboarded under rule {:?}", rule.name),
        ));
    }
    // The rule's latest occurrence (a timer tick at which the rule is due), so the create
    // passes the handler's tick check as a scheduled point.
    let timer = Schedule::parse(&deps.schedule)
        .map_err(|e| HandlerError::Invalid(format!("setting VMRP_SCHEDULE: {e}")))?;
    let tick = rule
        .latest_due_tick(&timer, now)
        .map_err(|e| HandlerError::Invalid(format!("rule {:?}: {e}", rule.name)))?;
    let Some(tick) = tick else {
        return Ok(Outcome::new(
            Status::Done,
            format!("{vm_id} onboarded; no tick yet for a first point"),
        ));
    };
    let (consistency, _) = rule.consistency_for(&vm);
    if let Some(next) = support::superseding_tick(deps, rule, tick, &consistency, now) {
        return Ok(Outcome::new(
            Status::Done,
            format!(
                "{vm_id} onboarded under rule {:?}; its first point comes with the tick at {}",
                rule.name,
                crate::schedule::rfc3339(next)
            ),
        ));
    }
    let create = CreateRequest::for_tick(vm_id.clone(), tick, &rule.name);
    let id = support::create_message_id(&create);
    let sent = support::send(deps, id, QueueMessage::Create(create), None).await?;
    tracing::info!(vm = %vm_id, rule = %rule.name, "onboarded: first restore point requested");
    Ok(Outcome::new(
        Status::Done,
        format!(
            "{vm_id} onboarded under rule {:?}; first point requested",
            rule.name
        ),
    )
    .with_sent(vec![sent]))
}

async fn mark_orphaned(
    deps: &Deps,
    vm: &ResourceId,
    at: OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    // Listed per scope the role holds (a role assigned at resource groups cannot list the
    // subscription): the VM's collections live in its own group or in the groups the policy
    // names for collections and copies.
    let mut collections = Vec::new();
    let mut refused = Vec::new();
    for scope in support::collection_scopes(&deps.policy)
        .into_iter()
        .filter(|s| match s {
            VmScope::Subscription(sub) => vm.subscription().eq_ignore_ascii_case(sub),
            VmScope::ResourceGroup { subscription, .. } => {
                vm.subscription().eq_ignore_ascii_case(subscription)
            }
        })
    {
        match deps.arm.list_collections_in(&scope).await {
            Ok(c) => collections.extend(c),
            // A collection group that does not exist (yet) holds nothing.
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_transient() => return Err(HandlerError::Arm(e)),
            Err(e) => {
                support::log_permanent("orphan marking: listing collections", vm, &e);
                refused.push(format!("{scope:?}: {}", e.code));
            }
        }
    }
    let stamp = crate::schedule::rfc3339(at);
    let mut marked = 0;
    for c in collections {
        let belongs = support::tag(c.tags.as_ref(), TAG_VM)
            .and_then(|v| ResourceId::parse(v).ok())
            .is_some_and(|v| &v == vm);
        if !belongs || mark_stands(support::tag(c.tags.as_ref(), TAG_ORPHANED_AT), at) {
            continue;
        }
        let (Some(id), Some(location), Some(source)) = (
            c.id.as_deref().and_then(|i| ResourceId::parse(i).ok()),
            c.location.clone(),
            c.source_id().and_then(|s| ResourceId::parse(s).ok()),
        ) else {
            continue;
        };
        let mut tags = c.tags.clone().unwrap_or_default();
        tags.insert(TAG_ORPHANED_AT.to_string(), stamp.clone());
        let body = RestorePointCollection::for_source(&location, &source, tags);
        if let Err(e) = deps.arm.put_collection(&id, &body).await {
            return arm_outcome("orphan marking: tagging a collection", vm, &e);
        }
        deps.known.forget_collection(&id);
        marked += 1;
    }
    let fate = match deps.policy.orphans.expire_after_days {
        Some(days) => format!("deleted {days} days after {stamp}"),
        None => "kept (orphans.expireAfterDays unset)".to_string(),
    };
    tracing::info!(vm = %vm, collections = marked, "VM deleted: its restore points are orphans, {fate}");
    let summary = format!("{vm} deleted: {marked} collections marked orphaned, {fate}");
    if refused.is_empty() {
        Ok(Outcome::new(Status::Done, summary))
    } else {
        Ok(Outcome::new(
            Status::Reported,
            format!("{summary}; listing refused for {}", refused.join(", ")),
        ))
    }
}

/// The event's time, or `now` when it has none or claims a later time.
fn event_time_at_most(event_time: Option<OffsetDateTime>, now: OffsetDateTime) -> OffsetDateTime {
    event_time.map_or(now, |t| t.min(now))
}

/// Whether an existing orphan mark stays as it is for a delete at `at`: a readable mark no later
/// than `at` does (the first delete's time counts). A mark that is unreadable or later than this
/// delete (a forged or clamped future time) is replaced, so a real delete corrects it.
fn mark_stands(mark: Option<&str>, at: OffsetDateTime) -> bool {
    mark.and_then(|m| {
        OffsetDateTime::parse(m.trim(), &time::format_description::well_known::Rfc3339).ok()
    })
    .is_some_and(|marked| marked <= at)
}
