//! PollRestorePoint (queue `rp-poll`): one GET with `$expand=instanceView`, then act on
//! [`poll::decide`] (docs/architecture.md, "Flow" and "Errors"):
//! - still running → the next poll (`attempt + 1`) after the backoff (or `Retry-After`);
//! - a local point settled → one copy message per copy region, then prune the local collection;
//! - a copy settled (every disk at 100 %) → prune the target collection;
//! - failed → a new create/copy with `retry + 1` (name `-r{n}`) while the budget lasts, else report;
//! - past the deadline → report; vanished → skipped;
//! - a prune follow-up (`pruneAgain`) → prune only: sent when a settled retry's prune could not
//!   delete the failed try it replaced, which would otherwise wait for the next tick.
//!
//! Every settled, failed or given-up point emits one `vmrp::report` event.
//!
//! Pruning holds the source of every copy still replicating: copy points not final, and the
//! newest `Succeeded` copy per region when a disk is below 100 % (copies into a region are
//! serial, so only the newest can still be replicating: one GET per region). A settled local
//! point newer than every point copied to a region, with no copy there yet, is held until the
//! copy deadline (its copy message may lag behind). A point older than the region's newest copy
//! is not held: its copy was made and since pruned by the region's own retention, or can never
//! start (copies go in creation order), so holding it would only pile up local points
//! (`retention::awaits_copy`). The copy regions are the rule's minus the VM's own region, as
//! the create asks for them (`Rule::copies_from`). Deletes are capped per invocation (write
//! budget); the rest goes at the collection's next settled point.

use std::time::Duration;

use super::support::{self, Ending};
use super::{Deps, HandlerError};
use crate::azure::models::{ProvisioningState, RestorePoint};
use crate::azure::{ArmError, ResourceId};
use crate::invocation::{Invocation, Outcome, Sent, Status};
use crate::messages::{CopyRequest, CreateRequest, PollRequest, QueueMessage, Role};
use crate::names;
use crate::policy::{Deadlines, Retention, Rule};
use crate::poll::{self, PollDecision};
use crate::retention::{self, PointState, PointView};

pub async fn handle(inv: Invocation<PollRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let req = inv.event;
    let now = inv.context.now;
    if !deps.policy.covers(&req.vm) {
        tracing::warn!(vm = %req.vm, point = %req.target, "poll refused: VM outside every policy scope");
        return Err(HandlerError::OutOfScope { vm: req.vm });
    }
    // A named rule whose scopes do not include the VM is treated as gone: it must not prune
    // (or retry into) a collection that is not its own.
    let rule = req
        .rule
        .as_deref()
        .and_then(|n| support::named_rule_for_id(deps, n, &req.vm).ok());
    if rule.is_none() {
        tracing::warn!(point = %req.target, rule = ?req.rule, "rule not in the policy any more, or not selecting this VM: default retries, no pruning");
    }
    let max_retries = rule.map_or(Deadlines::default().max_retries, |r| {
        r.deadlines.max_retries
    });
    if req.prune_again > 0 {
        return prune_follow_up(deps, &req, rule, now).await;
    }

    // Paced like every ARM caller: when the subscription's read bucket, as ARM last reported
    // it, has no room beside other tools' share and the other instances, the poll goes back on
    // the queue (the next poll's id, as any requeue) instead of reading.
    let key = support::poll_message_id(&req.target, req.tick, req.attempt);
    if let super::pace::Pace::Wait(after) = support::pace(
        deps,
        now,
        req.target.subscription(),
        super::pace::Bucket::Reads,
        1,
        &key,
    ) {
        let sent = next_poll(deps, &req, now, after).await?;
        return Ok(Outcome::new(
            Status::Rescheduled,
            format!(
                "{}: ARM read budget low; poll {} in {}s",
                req.target,
                req.attempt.saturating_add(1),
                after.as_secs()
            ),
        )
        .with_sent(vec![sent]));
    }
    // ARM's Retry-After on a successful GET is honoured too: the next poll waits at least that.
    let (point, retry_after) = match deps.arm.poll_restore_point(&req.target, true).await {
        Ok(answer) => answer,
        Err(e) if e.is_transient() => {
            let after = e.retry_after.unwrap_or_else(|| {
                poll::delay_before(
                    req.role,
                    req.attempt.saturating_add(1),
                    &req.target,
                    &deps.tuning.backoff,
                )
            });
            let sent = next_poll(deps, &req, now, after).await?;
            return Ok(Outcome::new(
                Status::Rescheduled,
                format!(
                    "GET {} refused ({}); next poll in {}s",
                    req.target,
                    e.code,
                    after.as_secs()
                ),
            )
            .with_sent(vec![sent]));
        }
        Err(e) => {
            support::log_permanent("poll", &req.target, &e);
            return Ok(Outcome::new(
                Status::Reported,
                format!("GET {} failed: {} {}", req.target, e.code, e.message),
            ));
        }
    };
    let region = match req.role {
        Role::Copy => req.target_region.clone(),
        Role::Local => support::point_region(point.as_ref()),
    }
    .unwrap_or_else(|| "-".to_string());

    let decision = poll::decide(
        point.as_ref(),
        &req,
        now,
        &deps.tuning.backoff,
        max_retries,
        retry_after,
    );
    if req.role == Role::Copy
        && matches!(
            decision,
            PollDecision::Settled { .. } | PollDecision::Failed { .. }
        )
    {
        // Its disk copies no longer count against the region's copies in flight.
        deps.known.copy_finished(req.target.subscription(), &region);
    }
    act(deps, &req, rule, now, decision, &region, max_retries).await
}

/// Acts on the poll's decision: the next poll, the settled point's follow-ups, a retry, or
/// the `vmrp::report` event of a point that ended.
async fn act(
    deps: &Deps,
    req: &PollRequest,
    rule: Option<&Rule>,
    now: time::OffsetDateTime,
    decision: PollDecision,
    region: &str,
    max_retries: u32,
) -> Result<Outcome, HandlerError> {
    match decision {
        PollDecision::Requeue { after, reason } => {
            let sent = next_poll(deps, req, now, after).await?;
            Ok(Outcome::new(
                Status::Rescheduled,
                format!(
                    "{}: {reason}; poll {} in {}s",
                    req.target,
                    req.attempt.saturating_add(1),
                    after.as_secs()
                ),
            )
            .with_sent(vec![sent]))
        }
        PollDecision::Settled { duration } => {
            support::report(
                Ending::Settled,
                &req.vm,
                &req.target,
                region,
                req.role,
                duration,
                "settled",
            );
            settled(deps, req, rule, now, duration).await
        }
        PollDecision::Failed {
            reason,
            retry: Some(n),
        } => {
            let sent = send_retry(deps, req, n).await?;
            support::report(
                Ending::Failed,
                &req.vm,
                &req.target,
                region,
                req.role,
                elapsed(req, now),
                &format!("{reason}; retry {n} of {max_retries} scheduled"),
            );
            Ok(Outcome::new(
                Status::Rescheduled,
                format!("{} failed ({reason}); retry {n} sent", req.target),
            )
            .with_sent(vec![sent]))
        }
        PollDecision::Failed {
            reason,
            retry: None,
        } => {
            let why = format!("{reason}; no retries left ({max_retries} allowed)");
            support::report(
                Ending::GivenUp,
                &req.vm,
                &req.target,
                region,
                req.role,
                elapsed(req, now),
                &why,
            );
            Ok(Outcome::new(
                Status::Reported,
                format!("{} failed: {why}", req.target),
            ))
        }
        PollDecision::DeadlineExceeded { reason } => {
            support::report(
                Ending::GivenUp,
                &req.vm,
                &req.target,
                region,
                req.role,
                elapsed(req, now),
                &reason,
            );
            Ok(Outcome::new(
                Status::Reported,
                format!("{}: {reason}", req.target),
            ))
        }
        PollDecision::Vanished => {
            tracing::warn!(point = %req.target, vm = %req.vm, "restore point vanished while being watched");
            Ok(Outcome::new(
                Status::Skipped,
                format!("{} vanished", req.target),
            ))
        }
    }
}

fn elapsed(req: &PollRequest, now: time::OffsetDateTime) -> Duration {
    (now - req.first_seen).try_into().unwrap_or_default()
}

async fn next_poll(
    deps: &Deps,
    req: &PollRequest,
    now: time::OffsetDateTime,
    after: Duration,
) -> Result<Sent, HandlerError> {
    let mut next = req.clone();
    next.attempt = next.attempt.saturating_add(1);
    let id = support::poll_message_id(&next.target, next.tick, next.attempt);
    Ok(support::send(
        deps,
        id,
        QueueMessage::Poll(next),
        Some(support::after(now, after)),
    )
    .await?)
}

/// A new create (local) or copy (copy) with the next retry number.
async fn send_retry(deps: &Deps, req: &PollRequest, retry: u32) -> Result<Sent, HandlerError> {
    let message = match req.role {
        Role::Local => QueueMessage::Create(CreateRequest {
            vm: req.vm.clone(),
            tick: req.tick,
            rule: req.rule.clone(),
            consistency_mode: None,
            exclude_disks: None,
            copy_to: Some(req.copy_to.clone()),
            retry,
            attempt: 0,
            paced: 0,
            listed: None,
        }),
        Role::Copy => {
            let (Some(source), Some(region)) = (req.source.clone(), req.target_region.clone())
            else {
                return Err(HandlerError::Invalid(
                    "poll message for a copy lacks `source` or `targetRegion`; cannot retry it"
                        .into(),
                ));
            };
            QueueMessage::Copy(CopyRequest {
                source,
                target_region: region,
                target_resource_group: req.target.resource_group().map(str::to_string),
                vm: Some(req.vm.clone()),
                rule: req.rule.clone(),
                retry,
                attempt: 0,
            })
        }
    };
    let id = match &message {
        QueueMessage::Create(c) => support::create_message_id(c),
        QueueMessage::Copy(c) => support::copy_message_id(c),
        QueueMessage::Poll(_) | QueueMessage::Plan(_) => {
            unreachable!("retries are creates or copies")
        }
    };
    Ok(support::send(deps, id, message, None).await?)
}

async fn settled(
    deps: &Deps,
    req: &PollRequest,
    rule: Option<&Rule>,
    now: time::OffsetDateTime,
    duration: Duration,
) -> Result<Outcome, HandlerError> {
    let mut sent = Vec::new();
    if req.role == Role::Local {
        for region in &req.copy_to {
            let copy = CopyRequest {
                source: req.target.clone(),
                target_region: region.clone(),
                target_resource_group: rule
                    .and_then(|r| r.copy_to(region))
                    .and_then(|c| c.resource_group.clone()),
                vm: Some(req.vm.clone()),
                rule: req.rule.clone(),
                retry: 0,
                attempt: 0,
            };
            let id = support::copy_message_id(&copy);
            sent.push(support::send(deps, id, QueueMessage::Copy(copy), None).await?);
        }
    }
    let copies = sent.len();
    let (pruned, follow_up) = prune_settled(deps, req, rule, now).await?;
    sent.extend(follow_up);
    Ok(Outcome::new(
        Status::Done,
        format!(
            "{} settled in {}s; {copies} copies sent; {pruned}",
            req.target,
            duration.as_secs(),
        ),
    )
    .with_sent(sent))
}

/// How many prune follow-ups one settled point may send ([`PollRequest::prune_again`]).
pub const MAX_PRUNE_FOLLOW_UPS: u32 = 4;
/// How long the first prune follow-up waits at least; each next one twice as long.
const PRUNE_FOLLOW_UP_DELAY: Duration = Duration::from_secs(300);

/// How long prune follow-up `n` (1 for the first) waits: what ARM or pacing asked, but at least
/// 5 min, doubling (5, 10, 20, 40 min: 75 min in all). A prune is cut short mostly while a
/// tick's creates spend the subscription's write budget, up to its supersede cut-off an hour
/// after the tick, so the follow-ups must outlast that, not pacing's few seconds: follow-ups
/// 18 s apart all met the same low budget and gave up within a minute (the CI-sized soak,
/// a Failed point left after the last tick).
pub fn prune_follow_up_delay(n: u32, asked: Duration) -> Duration {
    let floor = PRUNE_FOLLOW_UP_DELAY * 2u32.pow(n.saturating_sub(1).min(8));
    asked.max(floor)
}

/// A prune follow-up ([`PollRequest::prune_again`]): the point settled and was reported; only
/// its collection is pruned again.
async fn prune_follow_up(
    deps: &Deps,
    req: &PollRequest,
    rule: Option<&Rule>,
    now: time::OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    let (pruned, follow_up) = prune_settled(deps, req, rule, now).await?;
    Ok(Outcome::new(
        Status::Done,
        format!(
            "{} settled earlier; prune follow-up {}: {pruned}",
            req.target, req.prune_again
        ),
    )
    .with_sent(follow_up.into_iter().collect()))
}

/// Prunes the settled point's collection. A failed point the prune could not delete (a delete
/// refused for now), or may not have seen (ARM's delete budget low, the listing failed), is not
/// left for the collection's next settled point, hours away: a prune follow-up is sent for it,
/// at most [`MAX_PRUNE_FOLLOW_UPS`] times. Expired settled points alone can wait for that point.
async fn prune_settled(
    deps: &Deps,
    req: &PollRequest,
    rule: Option<&Rule>,
    now: time::OffsetDateTime,
) -> Result<(String, Option<Sent>), HandlerError> {
    // The target comes from the message: an id without a parent names no collection to prune.
    let (summary, cut_short) = match (rule, req.target.parent()) {
        (None, _) => ("not pruned (rule unknown)".to_string(), None),
        (Some(_), None) => (
            format!("not pruned ({} names no collection)", req.target),
            None,
        ),
        (Some(rule), Some(collection)) => {
            let retention = match req.role {
                Role::Local => rule.retention_for_region(None),
                Role::Copy => rule.retention_for_region(req.target_region.as_deref()),
            };
            match prune(deps, req, rule, &collection, retention, now).await {
                Ok(pruned) => (pruned.summary, pruned.failed_left),
                Err(e) => {
                    tracing::warn!(collection = %collection, code = %e.code, message = %e.message,
                        "pruning failed; retried by a follow-up if a failed point awaits it, else by the next settled point");
                    // Never listed: a failed point may be there unseen (see `prune`). Without
                    // ARM's Retry-After the follow-up's own floor decides the wait.
                    let wait = e.retry_after.unwrap_or_default();
                    (format!("pruning failed ({})", e.code), Some(wait))
                }
            }
        }
    };
    let Some(after) = cut_short.filter(|_| req.prune_again < MAX_PRUNE_FOLLOW_UPS) else {
        return Ok((summary, None));
    };
    let mut next = req.clone();
    next.prune_again += 1;
    let after = prune_follow_up_delay(next.prune_again, after);
    let id = names::message_id("prune", next.target.as_str(), next.tick, next.prune_again);
    let sent = support::send(
        deps,
        id,
        QueueMessage::Poll(next),
        Some(support::after(now, after)),
    )
    .await?;
    Ok((
        format!(
            "{summary}; failed point left: prune follow-up in {}s",
            after.as_secs()
        ),
        Some(sent),
    ))
}

/// The reads a prune makes: the collection, and for a local point each copy region's
/// collection and its newest copy's replication ([`copy_holds`]).
fn prune_reads(req: &PollRequest, rule: &Rule) -> u32 {
    let regions = match req.role {
        Role::Local => u32::try_from(rule.copies.len()).unwrap_or(u32::MAX),
        Role::Copy => 0,
    };
    regions.saturating_mul(2).saturating_add(1)
}

fn point_id(p: &RestorePoint) -> Option<ResourceId> {
    ResourceId::parse(p.id.as_deref()?).ok()
}

fn created(
    p: &RestorePoint,
    id: &ResourceId,
    fallback: time::OffsetDateTime,
) -> time::OffsetDateTime {
    p.time_created()
        .or_else(|| {
            id.name()
                .and_then(names::parse_restore_point_name)
                .map(|(t, _)| t)
        })
        .unwrap_or(fallback)
}

/// Applies retention to `collection`, deleting at most `max_deletes_per_invocation` points.
async fn prune(
    deps: &Deps,
    req: &PollRequest,
    rule: &Rule,
    collection: &ResourceId,
    retention: &Retention,
    now: time::OffsetDateTime,
) -> Result<Pruned, ArmError> {
    // Pruning can wait: with the subscription's delete or read bucket low, as ARM last reported
    // it, it is left for a prune follow-up (or the collection's next settled point). The reads
    // count: a tick's points settle together, and their listings unpaced met ARM's read bucket
    // all at once (628 × 429 in the first minutes of the 5,000-VM window row).
    use super::pace::{Bucket, Pace};
    let cap = u32::try_from(deps.tuning.max_deletes_per_invocation).unwrap_or(u32::MAX);
    let key = support::poll_message_id(&req.target, req.tick, req.attempt);
    let sub = collection.subscription();
    if let Pace::Wait(after) =
        support::pace(deps, now, sub, Bucket::Reads, prune_reads(req, rule), &key)
    {
        return Ok(Pruned {
            summary: "ARM read budget low: pruning left for later".to_string(),
            failed_left: Some(after),
        });
    }
    if cap > 0 {
        if let Pace::Wait(after) = support::pace(deps, now, sub, Bucket::Deletes, cap, &key) {
            // Not listed, so a failed point may be there (the try a retry replaced, an older
            // tick's failed try whose own prune was cut short): nothing else would delete it
            // before the collection's next settled point, hours away or never after the last
            // tick, so it counts as left.
            return Ok(Pruned {
                summary: "ARM budget low: pruning left for later".to_string(),
                failed_left: Some(after),
            });
        }
    }
    let Some(c) = deps.arm.get_collection(collection, true).await? else {
        return Ok(Pruned {
            summary: "collection gone, nothing to prune".to_string(),
            failed_left: None,
        });
    };
    let (holds, copied) = match req.role {
        // The local collection is in the VM's region: no copies go there.
        Role::Local => copy_holds(deps, req, rule, c.location.as_deref()).await?,
        Role::Copy => (Vec::new(), Vec::new()),
    };
    // A settled local point whose copy to some region has not started yet (the copy message can
    // lag behind the next tick under load) must stay until it has, or until the copy deadline
    // gives up on it: deleting it would make that copy impossible. A point older than the
    // region's newest copy is not waiting: its copy was made and since pruned, or skipped for
    // good (`retention::awaits_copy`).
    let copy_deadline = time::Duration::minutes(i64::from(rule.deadlines.copy_minutes));
    let uncopied_hold = |id: &ResourceId, created: time::OffsetDateTime| -> Option<String> {
        if req.role != Role::Local || now - created > copy_deadline {
            return None;
        }
        let tick = point_tick(id).unwrap_or(created);
        copied
            .iter()
            .find(|c| retention::awaits_copy(tick, c.sources.contains(id), c.newest_copied))
            .map(|c| format!("copy to {} not started yet", c.region))
    };
    let settled_at = c
        .restore_points()
        .iter()
        .find(|p| point_id(p).as_ref() == Some(&req.target))
        .and_then(|p| p.time_created());
    let views: Vec<PointView> = c
        .restore_points()
        .iter()
        .filter_map(|p| {
            let id = point_id(p)?;
            let created = created(p, &id, now);
            let state = match p.provisioning_state() {
                ProvisioningState::Failed | ProvisioningState::Canceled => PointState::Failed,
                ProvisioningState::InProgress(_) => PointState::InProgress,
                // A copy newer than the one just settled may still be replicating.
                ProvisioningState::Succeeded
                    if req.role == Role::Copy
                        && id != req.target
                        && settled_at.is_some_and(|s| created > s) =>
                {
                    PointState::InProgress
                }
                ProvisioningState::Succeeded => PointState::Settled,
            };
            let mut view = PointView::new(id.clone(), created, state);
            if let Some((_, why)) = holds.iter().find(|(h, _)| *h == id) {
                view = view.held(why.clone());
            } else if state == PointState::Settled {
                if let Some(why) = uncopied_hold(&id, created) {
                    view = view.held(why);
                }
            }
            Some(view)
        })
        .collect();
    let verdicts = retention::decide(&views, retention);
    let doomed: Vec<_> = verdicts.iter().filter(|(_, v)| v.is_delete()).collect();
    let cap = deps.tuning.max_deletes_per_invocation;
    let mut deleted = Vec::new();
    let mut retry_after = None;
    for (id, verdict) in doomed.iter().take(cap) {
        match deps.arm.delete_restore_point(id).await {
            Ok(_) => {
                deleted.push(id);
                tracing::info!(point = %id, reason = verdict.reason(), "retention: deleting");
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(point = %id, code = %e.code, "retention delete refused for now; left for the next prune");
                retry_after = e.retry_after;
                break;
            }
            Err(e) => support::log_permanent("retention delete", id, &e),
        }
    }
    let failed_left = views.iter().any(|v| {
        v.state == PointState::Failed
            && doomed.iter().any(|(id, _)| *id == v.id)
            && !deleted.contains(&&v.id)
    });
    let left = doomed.len() - deleted.len();
    Ok(Pruned {
        summary: format!(
            "pruned {} of {} expired ({} kept{})",
            deleted.len(),
            doomed.len(),
            verdicts.len() - doomed.len(),
            if left > 0 {
                format!(", {left} left for later")
            } else {
                String::new()
            }
        ),
        failed_left: failed_left.then(|| retry_after.unwrap_or_default()),
    })
}

/// What a prune did, and whether a failed point it meant to delete is still there (with how
/// long ARM or pacing asked to wait before trying again; zero when neither did:
/// [`prune_follow_up_delay`] puts its floor under it).
struct Pruned {
    summary: String,
    failed_left: Option<Duration>,
}

/// The tick a vmrp-named point belongs to (`rp-{tick}[-r{n}]`).
fn point_tick(id: &ResourceId) -> Option<time::OffsetDateTime> {
    id.name()
        .and_then(names::parse_restore_point_name)
        .map(|(t, _)| t)
}

/// What one copy region holds, for the "copy not started yet" hold.
struct RegionCopies {
    region: String,
    /// Local points that have a copy there (in any state).
    sources: Vec<ResourceId>,
    /// The tick of the newest local point copied there.
    newest_copied: Option<time::OffsetDateTime>,
}

/// Local points that must stay because a copy of them is still replicating, with the reason;
/// and per copy region of a VM in `home` (`Rule::copies_from`), what was copied there.
async fn copy_holds(
    deps: &Deps,
    req: &PollRequest,
    rule: &Rule,
    home: Option<&str>,
) -> Result<CopyHolds, ArmError> {
    let mut holds = Vec::new();
    let mut copied = Vec::new();
    // Copies name the local collection as their collection's source (a legacy-named copy
    // collection is recognised by it).
    let local = req.target.parent();
    for target in rule.copies_from(home) {
        let found = match (
            support::copy_collection(&req.vm, &target.region, target.resource_group.as_deref()),
            &local,
        ) {
            (Ok(names), Some(local)) => support::find_collection(deps, &names, local, true).await?,
            (Err(why), _) => {
                tracing::warn!(vm = %req.vm, "{why}");
                None
            }
            (_, None) => None,
        };
        let Some((_, c)) = found else {
            copied.push(RegionCopies {
                region: target.region.clone(),
                sources: Vec::new(),
                newest_copied: None,
            });
            continue;
        };
        let points = c.restore_points();
        let sources: Vec<ResourceId> = points
            .iter()
            .filter_map(|p| p.source_restore_point())
            .filter_map(|s| ResourceId::parse(s).ok())
            .collect();
        // By the source's tick, else the copy's own name (a copy is named after its source).
        let newest_copied = points
            .iter()
            .filter_map(|p| {
                p.source_restore_point()
                    .and_then(|s| ResourceId::parse(s).ok())
                    .and_then(|s| point_tick(&s))
                    .or_else(|| point_id(p).and_then(|id| point_tick(&id)))
            })
            .max();
        copied.push(RegionCopies {
            region: target.region.clone(),
            sources,
            newest_copied,
        });
        let newest_succeeded = points
            .iter()
            .filter(|p| p.provisioning_state() == ProvisioningState::Succeeded)
            .max_by_key(|p| (p.time_created(), p.name.clone()));
        for p in points {
            let Some(source) = p
                .source_restore_point()
                .and_then(|s| ResourceId::parse(s).ok())
            else {
                continue;
            };
            let why = match p.provisioning_state() {
                ProvisioningState::InProgress(state) => {
                    Some(format!("copy to {} still {state}", target.region))
                }
                ProvisioningState::Succeeded
                    if newest_succeeded.is_some_and(|n| std::ptr::eq(p, n)) =>
                {
                    let copy_id = point_id(p);
                    let full = match copy_id {
                        Some(cid) => deps.arm.get_restore_point(&cid, true).await?,
                        None => None,
                    };
                    let percents = full.map(|f| f.replication_percents()).unwrap_or_default();
                    match percents.iter().min() {
                        Some(m) if *m >= 100 => None,
                        Some(m) => Some(format!(
                            "copy to {} still replicating ({m}%)",
                            target.region
                        )),
                        None => Some(format!(
                            "copy to {} has no replication status yet",
                            target.region
                        )),
                    }
                }
                _ => None,
            };
            if let Some(why) = why {
                holds.push((source, why));
            }
        }
    }
    Ok((holds, copied))
}

/// Holds (point, why), and per copy region what was copied there.
type CopyHolds = (Vec<(ResourceId, String)>, Vec<RegionCopies>);
