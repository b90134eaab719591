//! StartCrossRegionCopy (queue `rp-copy`): copy one settled local point to another region
//! (docs/architecture.md, "Flow"; reference/arm/CONTRACT.md §8).
//!
//! Scope guard (the VM from the message, else the source collection's `source.id`) → the source
//! point (gone: skipped; a copy itself: refused, Azure copies no copies; a Premium SSD v2 /
//! Ultra disk snapshot still `Pending` / `InstantAccess`: wait for its background data copy,
//! rescheduled like a busy region) → ensure the target
//! collection (`location` = target region, `source.id` = the SOURCE COLLECTION) → wait while an
//! earlier copy into it still replicates (copies into one region are serial and in creation
//! order: asking anyway earns a 409) → PUT the target point with `sourceRestorePoint.id` →
//! schedule the first poll (~2 min).
//!
//! Customer-managed keys: a disk of the source encrypted with a disk encryption set is copied
//! only with the target region's set that `copies[].encryptionSets` maps it to, named per disk in
//! the PUT (`sourceMetadata.storageProfile.{osDisk,dataDisks[]}.diskRestorePoint.encryption`).
//! With no mapping the copy is not made and is reported: Azure either refuses it or (one reading
//! of its documents) encrypts it with platform keys, and vmrp never downgrades silently.
//!
//! Copy rules (docs/lifecycle.md): a source is copied into a region at most once, so before the
//! PUT an existing copy of the same source under another name counts as "already copied" (and
//! so does Azure's refusal of a second copy); an in-flight-limit refusal (429) is transient, and
//! holds this instance's copies into that region for a while (`copy_limit`).
//!
//! Only the newest point of the target collection can be in flight (serial copies), so the
//! in-flight check costs one extra GET at most.

use super::support::{self, EnsureError};
use super::{Deps, HandlerError};
use crate::azure::models::{ProvisioningState, RestorePoint};
use crate::azure::{ArmError, ResourceId};
use crate::invocation::{Invocation, Outcome, Sent, Status};
use crate::messages::{CopyRequest, PollRequest, QueueMessage, Role};
use crate::names;
use crate::policy::regions::known_region;
use crate::policy::{mapped_encryption_set, CopyTarget, Rule, UnmappedEncryptionSet};
use crate::poll;

mod copy_limit;
pub use copy_limit::COPY_LIMIT_WAIT;
use copy_limit::{held, held_at_copy_limit, put_copy, CopyPut};

pub async fn handle(inv: Invocation<CopyRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let mut req = inv.event;
    let now = inv.context.now;
    // The target region as its ARM name ("Sweden Central" → swedencentral), checked before
    // anything is read or written; the poll and any reschedule carry the ARM name.
    let region = match known_region(&req.target_region) {
        Ok(r) => r.to_string(),
        Err(e) => {
            tracing::error!(source = %req.source, "copy refused: targetRegion: {e}");
            return Ok(report(format!("copy of {}: targetRegion: {e}", req.source)));
        }
    };
    req.target_region = region;
    // Held first: it costs no ARM call, while `paced` takes the step's cost off the budget.
    if let Some(outcome) = held_at_copy_limit(deps, &req, now).await? {
        return Ok(outcome);
    }
    if let Some(outcome) = paced(deps, &req, now).await? {
        return Ok(outcome);
    }
    let source_collection = source_collection_of(&req)?;

    // The VM: from the message, else the source collection's source.
    let vm = match &req.vm {
        Some(vm) => vm.clone(),
        None => match deps.arm.get_collection(&source_collection, false).await {
            Ok(Some(c)) => match c.source_id().map(ResourceId::parse) {
                Some(Ok(vm)) if vm.is_type("Microsoft.Compute/virtualMachines") => vm,
                Some(Ok(other)) => {
                    return Ok(report(format!(
                        "{} lives in a collection whose source is {other}, not a VM: a copy cannot be copied again",
                        req.source
                    )))
                }
                _ => {
                    return Ok(report(format!(
                        "source collection {source_collection} has no usable source.id"
                    )))
                }
            },
            Ok(None) => {
                tracing::warn!(source = %req.source, "source collection vanished; copy skipped");
                return Ok(Outcome::new(
                    Status::Skipped,
                    format!("source collection vanished: {source_collection}"),
                ));
            }
            Err(e) => {
                return transient_or_report(deps, &req, now, e, "reading the source collection")
                    .await
            }
        },
    };
    if !deps.policy.covers(&vm) {
        tracing::warn!(vm = %vm, source = %req.source, "copy refused: VM outside every policy scope");
        return Err(HandlerError::OutOfScope { vm });
    }
    let rule = match &req.rule {
        Some(name) => support::named_rule_for_id(deps, name, &vm),
        None => match deps.arm.get_vm(&vm).await {
            Ok(found) => support::rule_of(deps, None, found.as_ref()),
            Err(e) => return transient_or_report(deps, &req, now, e, "reading the VM").await,
        },
    };
    let rule = match rule {
        Ok(r) => r,
        Err(why) => return Ok(report(format!("copy of {}: {why}", req.source))),
    };
    let job = Job {
        deps,
        req: &req,
        now,
        rule,
        vm: &vm,
        source_collection: &source_collection,
    };
    copy_source(job).await
}

/// The collection of the message's `source`, which must be a restore point id.
fn source_collection_of(req: &CopyRequest) -> Result<ResourceId, HandlerError> {
    let source_collection = req.source.parent().ok_or_else(|| {
        HandlerError::Invalid(format!(
            "copy message field `source` must be a restore point id (…/restorePointCollections/{{c}}/restorePoints/{{p}}), got {}",
            req.source
        ))
    })?;
    if !req
        .source
        .is_type("Microsoft.Compute/restorePointCollections/restorePoints")
    {
        return Err(HandlerError::Invalid(format!(
            "copy message field `source` must be a restore point id, got {}",
            req.source
        )));
    }
    Ok(source_collection)
}

/// What every step of one copy knows once its VM and rule are found.
#[derive(Clone, Copy)]
struct Job<'a> {
    deps: &'a Deps,
    req: &'a CopyRequest,
    now: time::OffsetDateTime,
    rule: &'a Rule,
    vm: &'a ResourceId,
    source_collection: &'a ResourceId,
}

impl Job<'_> {
    /// ARM's error at step `what`: a transient one puts the copy back, another is reported.
    async fn arm_failed(&self, e: ArmError, what: &str) -> Result<Outcome, HandlerError> {
        transient_or_report(self.deps, self.req, self.now, e, what).await
    }

    /// Schedules the first poll of the copy `target` (ours, or the one made already).
    async fn first_poll(&self, target: &ResourceId) -> Result<Sent, HandlerError> {
        schedule_first_poll(self.deps, self.req, self.rule, self.vm, target, self.now).await
    }

    /// Puts the copy back to wait (`why`), or reports it once it waited too long.
    async fn wait(&self, why: String) -> Result<Outcome, HandlerError> {
        wait(self.deps, self.req, self.rule, self.now, why).await
    }
}

/// Reads the source point, which must exist, be settled, be copyable now and not be a copy
/// itself, and ensures the target collection.
async fn copy_source(job: Job<'_>) -> Result<Outcome, HandlerError> {
    let Job {
        deps,
        req,
        rule,
        vm,
        source_collection,
        ..
    } = job;
    // With the instance view: its per-disk `snapshotAccessState` says whether Azure can copy it.
    let source = match deps.arm.get_restore_point(&req.source, true).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::warn!(source = %req.source, "source point vanished; copy skipped");
            return Ok(Outcome::new(
                Status::Skipped,
                format!("source point vanished: {}", req.source),
            ));
        }
        Err(e) => return job.arm_failed(e, "reading the source point").await,
    };
    if source.source_restore_point().is_some() {
        return Ok(report(format!(
            "{} is itself a copy; Azure does not copy copies",
            req.source
        )));
    }
    if source.provisioning_state() != ProvisioningState::Succeeded {
        return Ok(report(format!(
            "{} is not Succeeded; only settled points are copied",
            req.source
        )));
    }

    // Premium SSD v2 / Ultra disk snapshots copy only once their background data copy
    // completed (`Pending` / `InstantAccess` are not copyable, and Azure refuses the copy):
    // wait for it, as for a busy target region, instead of failing.
    if let Some(why) = poll::copy_blocker(&source) {
        return job.wait(format!("{BACKGROUND_COPY_WAIT}: {why}")).await;
    }

    let region = &req.target_region;
    let target_rg = req.target_resource_group.clone().or_else(|| {
        rule.copy_to(&req.target_region)
            .and_then(|c| c.resource_group.clone())
    });
    let target_names = match support::copy_collection(vm, region, target_rg.as_deref()) {
        Ok(n) => n,
        Err(why) => return Ok(report(format!("copy of {}: {why}", req.source))),
    };
    let ensured = match support::ensure_collection(
        deps,
        &target_names,
        region,
        source_collection,
        support::collection_tags(&rule.name, vm),
        true,
    )
    .await
    {
        Ok(e) => e,
        Err(EnsureError::Arm(e)) => {
            return job.arm_failed(e, "ensuring the target collection").await
        }
        Err(EnsureError::Foreign { id, source }) => {
            return Ok(report(format!(
                "target collection {id} exists with source {source}, not {source_collection}"
            )))
        }
    };
    let existing = ensured.points.unwrap_or_default();
    copy_into(job, &source, &ensured.id, &existing).await
}

/// Copies the source into the ensured target collection, whose points are `existing`, unless
/// the copy is made already, superseded, or has to wait for another.
async fn copy_into(
    job: Job<'_>,
    source: &RestorePoint,
    target_collection: &ResourceId,
    existing: &[RestorePoint],
) -> Result<Outcome, HandlerError> {
    let Job {
        deps,
        req,
        now,
        rule,
        vm,
        source_collection,
    } = job;
    let target = target_collection.child("restorePoints", &target_name(req));
    if let Some(outcome) = made_or_superseded(job, existing, &target).await? {
        return Ok(outcome);
    }
    match in_flight(deps, existing).await {
        Ok(None) => {}
        Ok(Some(busy)) => {
            return job
                .wait(format!("waiting for {busy} to finish replicating"))
                .await;
        }
        Err(e) => return job.arm_failed(e, "checking copies in flight").await,
    }

    let region = &req.target_region;
    let body = match copy_body(source, &req.source, rule.copy_to(region)) {
        Ok(b) => b,
        Err(unmapped) => {
            let why: Vec<String> = unmapped.iter().map(ToString::to_string).collect();
            tracing::error!(source = %req.source, region = %region, "copy not made: customer-managed key without a target encryption set");
            return Ok(Outcome::new(
                Status::Reported,
                format!(
                    "copy of {} to {region} not made: {}",
                    req.source,
                    why.join("; ")
                ),
            ));
        }
    };
    if let Some(outcome) = copy_oldest_first(
        deps,
        req,
        rule,
        vm,
        source_collection,
        target_collection,
        existing,
        now,
    )
    .await?
    {
        return Ok(outcome);
    }
    start_copy(job, target_collection, &target, &body).await
}

/// The outcome when the target region has the copy already (`target`, a replay; or a copy of
/// the same source under another name) or a copy of a newer point (copies go in creation
/// order, so ours never will); `None` when the copy is still to make.
async fn made_or_superseded(
    job: Job<'_>,
    existing: &[RestorePoint],
    target: &ResourceId,
) -> Result<Option<Outcome>, HandlerError> {
    let Job { deps, req, .. } = job;
    if existing
        .iter()
        .any(|p| point_id(p).as_ref() == Some(target))
    {
        let sent = job.first_poll(target).await?;
        return Ok(Some(
            Outcome::new(
                Status::Skipped,
                format!("{target} exists already (replay); poll ensured"),
            )
            .with_sent(vec![sent]),
        ));
    }
    // At most one copy of a source per region: a copy of it under another name (a retry whose
    // earlier copy did not fail after all, or another vmrp version's name) is the copy.
    let other = match live_copy(deps, existing, &req.source).await {
        Ok(o) => o,
        Err(e) => {
            return job
                .arm_failed(e, "checking earlier copies of the source")
                .await
                .map(Some)
        }
    };
    if let Some(other) = other {
        tracing::info!(source = %req.source, copy = %other, "source already copied into this region; poll ensured");
        return already_copied(job, &other).await.map(Some);
    }
    // In creation order: never copy a point older than one already copied.
    let our_tick = support::source_tick(&req.source);
    if let Some(newer) = existing.iter().filter_map(point_id).find(|p| {
        p.name()
            .and_then(names::parse_restore_point_name)
            .is_some_and(|(t, _)| t > our_tick)
    }) {
        // Reported, not skipped: this tick will never have a copy in that region, and the
        // report is where an operator (and the chaos accounting) learns why.
        if job.now - our_tick > OLDER_LOOKBACK {
            // Not a race: copies into the region fell more than a day behind, and the newer
            // point was copied first on purpose ([`older_uncopied`] looks back a day).
            tracing::warn!(source = %req.source, newer = %newer, "copy dropped from the backlog: copies into the region are more than a day behind");
            return Ok(Some(Outcome::new(
                Status::Reported,
                format!(
                    "copy of {} to {}: {COPY_BACKLOG_DROPPED}: the newer {newer} was copied first (copies go in creation order, and a copy more than {} h behind gives way to newer points so the region's newest copy stays recent)",
                    req.source,
                    req.target_region,
                    OLDER_LOOKBACK.whole_hours()
                ),
            )));
        }
        tracing::warn!(source = %req.source, newer = %newer, "copy superseded: a newer point was already copied");
        return Ok(Some(Outcome::new(
            Status::Reported,
            format!(
                "copy of {} to {} superseded: {newer} is newer and already copied; copies go in creation order",
                req.source, req.target_region
            ),
        )));
    }
    Ok(None)
}

/// The source was copied into the region as `other`: that copy is ours to watch.
async fn already_copied(job: Job<'_>, other: &ResourceId) -> Result<Outcome, HandlerError> {
    let Job { req, .. } = job;
    let sent = job.first_poll(other).await?;
    Ok(Outcome::new(
        Status::Skipped,
        format!(
            "{} already copied to {} as {other}; poll ensured",
            req.source, req.target_region
        ),
    )
    .with_sent(vec![sent]))
}

/// PUTs the copy `target` and schedules its first poll. A 409 may be our own earlier PUT (a
/// retry whose first try went through, or a redelivery that raced it): as for creates, one GET
/// decides. The same source means a replay: carry on and make sure the copy is polled.
async fn start_copy(
    job: Job<'_>,
    target_collection: &ResourceId,
    target: &ResourceId,
    body: &RestorePoint,
) -> Result<Outcome, HandlerError> {
    let Job { deps, req, now, .. } = job;
    let answer = match put_copy(deps, req, now, target, body).await {
        CopyPut::Answered(a) => a,
        CopyPut::Held(until) => return held(deps, req, now, until).await,
    };
    match answer {
        Ok(()) => {
            tracing::info!(source = %req.source, target = %target, region = %req.target_region, "cross-region copy started");
            let sent = job.first_poll(target).await?;
            Ok(Outcome::new(
                Status::Done,
                format!("copying {} to {}", req.source, req.target_region),
            )
            .with_sent(vec![sent]))
        }
        Err(e) if e.status == Some(409) => match deps.arm.get_restore_point(target, false).await {
            Ok(Some(p)) if same_source(&p, &req.source) => {
                tracing::info!(source = %req.source, target = %target, "copy PUT refused as a replay: the copy exists; poll ensured");
                let sent = job.first_poll(target).await?;
                Ok(Outcome::new(
                    Status::Skipped,
                    format!("{target} exists already (replay); poll ensured"),
                )
                .with_sent(vec![sent]))
            }
            // Refused because the source was copied into this region under another name (Azure
            // copies a source once per region): that copy is ours to watch.
            Ok(_) => match deps.arm.get_collection(target_collection, true).await {
                Ok(Some(c)) => match live_copy(deps, c.restore_points(), &req.source).await {
                    Ok(Some(other)) => {
                        tracing::info!(source = %req.source, copy = %other, "copy refused: already copied under another name; poll ensured");
                        already_copied(job, &other).await
                    }
                    _ => job.arm_failed(e, "starting the copy").await,
                },
                _ => job.arm_failed(e, "starting the copy").await,
            },
            Err(read) => job.arm_failed(read, "reading the copy after a 409").await,
        },
        Err(e) => job.arm_failed(e, "starting the copy").await,
    }
}

/// The start of the reason of a copy that waits for its source's background data copy (`vmrp
/// local` explains a copy still waiting at the end of a run by it).
pub const BACKGROUND_COPY_WAIT: &str = "waiting for the source's background data copy";

/// Sends the copy again after the copy backoff (`attempt + 1`), with `why` as the outcome;
/// reports instead once the copy has waited as long as a copy may take.
async fn wait(
    deps: &Deps,
    req: &CopyRequest,
    rule: &Rule,
    now: time::OffsetDateTime,
    why: String,
) -> Result<Outcome, HandlerError> {
    if req.attempt.saturating_add(1) > max_attempts(deps, rule) {
        return Ok(report(format!(
            "copy of {} waited {} times ({why}); giving up",
            req.source, req.attempt
        )));
    }
    let delay = poll::delay_before(Role::Copy, 2, &req.source, &deps.tuning.backoff);
    let sent = send_again(deps, req, now, delay).await?;
    tracing::info!(source = %req.source, delay_s = delay.as_secs(), "copy waits: {why}");
    Ok(Outcome::new(
        Status::Rescheduled,
        format!("copy of {} to {}: {why}", req.source, req.target_region),
    )
    .with_sent(vec![sent]))
}

/// The start of the reason of a copy given up because its region's copies fell more than
/// [`OLDER_LOOKBACK`] behind and a newer point was copied first (not a race: on purpose).
pub const COPY_BACKLOG_DROPPED: &str = "dropped from the copy backlog";

/// How far back a copy looks for older settled points not copied yet. A copy message lags its
/// point by the waits for earlier copies and transient reschedules (hours at most); an older
/// uncopied point is one whose copy was given up or never asked for (copies configured later),
/// and copying a day of such history first would only delay today's copy.
const OLDER_LOOKBACK: time::Duration = time::Duration::hours(24);

/// The oldest settled point of the source collection that has to be copied before `ours`:
/// vmrp-named, `Succeeded`, of a tick older than ours but newer than every copy in the region
/// (an older one can never be copied: copies go in creation order), not the source of a copy
/// there yet, and of a tick no older than `OLDER_LOOKBACK`. `None`: ours is next.
///
/// This is what keeps copies in creation order across handler instances: whichever copy
/// message an instance takes, it starts the oldest uncopied point first, so a message for a
/// newer tick that arrives (or runs) before an older one's never makes the older one
/// "superseded"; the older one's own message then finds its copy made (a replay).
pub fn older_uncopied(
    ours: &ResourceId,
    source_points: &[RestorePoint],
    target_points: &[RestorePoint],
    now: time::OffsetDateTime,
) -> Option<ResourceId> {
    let tick_of = |id: &ResourceId| {
        id.name()
            .and_then(names::parse_restore_point_name)
            .map(|(t, _)| t)
    };
    let our_tick = tick_of(ours)?;
    let newest_copied = target_points
        .iter()
        .filter_map(point_id)
        .filter_map(|id| tick_of(&id))
        .max();
    let copied: Vec<ResourceId> = target_points
        .iter()
        .filter_map(|p| ResourceId::parse(p.source_restore_point()?).ok())
        .collect();
    source_points
        .iter()
        .filter(|p| {
            p.provisioning_state() == ProvisioningState::Succeeded
                && p.source_restore_point().is_none()
        })
        .filter_map(|p| {
            let id = point_id(p)?;
            let tick = tick_of(&id)?;
            let wanted = tick < our_tick
                && newest_copied.is_none_or(|n| tick > n)
                && now - tick <= OLDER_LOOKBACK
                && !copied.contains(&id);
            wanted.then_some((tick, id))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())))
        .map(|(_, id)| id)
}

/// When the source collection holds an older settled point not copied to the region yet
/// ([`older_uncopied`]), starts that copy (and its poll) instead of ours, and puts ours back to
/// wait for it; `None` when ours is next. One more read: the source collection with its points.
#[allow(clippy::too_many_arguments)]
async fn copy_oldest_first(
    deps: &Deps,
    req: &CopyRequest,
    rule: &Rule,
    vm: &ResourceId,
    source_collection: &ResourceId,
    target_collection: &ResourceId,
    existing: &[RestorePoint],
    now: time::OffsetDateTime,
) -> Result<Option<Outcome>, HandlerError> {
    let source_points = match deps.arm.get_collection(source_collection, true).await {
        Ok(Some(c)) => c.restore_points().to_vec(),
        Ok(None) => return Ok(None),
        Err(e) => {
            return transient_or_report(deps, req, now, e, "reading the source collection")
                .await
                .map(Some)
        }
    };
    let Some(older) = older_uncopied(&req.source, &source_points, existing, now) else {
        return Ok(None);
    };
    let first = CopyRequest {
        source: older.clone(),
        retry: 0,
        attempt: 0,
        ..req.clone()
    };
    let target = target_collection.child("restorePoints", &target_name(&first));
    // The older point's disks may need their target encryption sets too; one that cannot be
    // copied (an unmapped customer-managed key) does not hold ours back.
    let older_point = source_points
        .iter()
        .find(|p| point_id(p).as_ref() == Some(&older));
    let Some(Ok(body)) =
        older_point.map(|p| copy_body(p, &older, rule.copy_to(&req.target_region)))
    else {
        return Ok(None);
    };
    let answer = match put_copy(deps, req, now, &target, &body).await {
        CopyPut::Answered(a) => a,
        CopyPut::Held(until) => return held(deps, req, now, until).await.map(Some),
    };
    match answer {
        Ok(()) => {}
        // Another instance started the same copy: a replay, as for our own PUT.
        Err(e) if e.status == Some(409) => match deps.arm.get_restore_point(&target, false).await {
            Ok(Some(p)) if same_source(&p, &older) => {}
            Ok(_) => {
                return transient_or_report(deps, req, now, e, "copying an older point first")
                    .await
                    .map(Some)
            }
            Err(read) => {
                return transient_or_report(
                    deps,
                    req,
                    now,
                    read,
                    "reading the older point's copy after a 409",
                )
                .await
                .map(Some)
            }
        },
        Err(e) => {
            return transient_or_report(deps, req, now, e, "copying an older point first")
                .await
                .map(Some)
        }
    }
    tracing::info!(source = %req.source, older = %older, target = %target, region = %req.target_region,
        "an older point was not copied yet: its copy goes first (creation order)");
    let poll = schedule_first_poll(deps, &first, rule, vm, &target, now).await?;
    let delay = poll::delay_before(Role::Copy, 2, &req.source, &deps.tuning.backoff);
    let ours = send_again(deps, req, now, delay).await?;
    Ok(Some(
        Outcome::new(
            Status::Rescheduled,
            format!(
                "copy of {} waits: the older {older} was not copied to {} yet and goes first",
                req.source, req.target_region
            ),
        )
        .with_sent(vec![poll, ours]),
    ))
}

/// Reads a copy start spends (the source collection with its points, the source point, the
/// target collection with its points, the newest copy's progress) and writes (the target
/// collection and point PUTs).
const COPY_READS: u32 = 5;
const COPY_WRITES: u32 = 2;

/// Puts the copy back (`attempt + 1`, the id any reschedule gets) when the subscription's
/// buckets, as ARM last reported them, have no room for it (`functions::pace`).
async fn paced(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
) -> Result<Option<Outcome>, HandlerError> {
    use super::pace::Bucket;
    let key = support::copy_message_id(req);
    let sub = req.source.subscription();
    let Some(delay) = support::pace_all(
        deps,
        now,
        sub,
        &[(Bucket::Reads, COPY_READS), (Bucket::Writes, COPY_WRITES)],
        &key,
    ) else {
        return Ok(None);
    };
    let sent = send_again(deps, req, now, delay).await?;
    Ok(Some(
        Outcome::new(
            Status::Rescheduled,
            format!(
                "copy of {}: ARM budget low; again in {}s",
                req.source,
                delay.as_secs()
            ),
        )
        .with_sent(vec![sent]),
    ))
}

/// Puts the copy back on its queue after `delay`, as `attempt + 1` (the id every reschedule of
/// this copy gets, so a replayed invocation sends nothing new).
async fn send_again(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
    delay: std::time::Duration,
) -> Result<Sent, crate::azure::SendError> {
    let mut again = req.clone();
    again.attempt = again.attempt.saturating_add(1);
    let id = support::copy_message_id(&again);
    support::send(
        deps,
        id,
        QueueMessage::Copy(again),
        Some(support::after(now, delay)),
    )
    .await
}

/// A copy of `source` among `points` that has not failed (a failed copy does not count: its
/// retry makes a new one). A `Succeeded` candidate is read once with its instance view, as a
/// copy terminated after two weeks stays `Succeeded` with failed replication. Rare: only when
/// the source already has a copy under another name.
async fn live_copy(
    deps: &Deps,
    points: &[RestorePoint],
    source: &ResourceId,
) -> Result<Option<ResourceId>, ArmError> {
    for p in points.iter().filter(|p| same_source(p, source)) {
        let Some(id) = point_id(p) else { continue };
        match p.provisioning_state() {
            ProvisioningState::Failed | ProvisioningState::Canceled => continue,
            ProvisioningState::InProgress(_) => return Ok(Some(id)),
            ProvisioningState::Succeeded => {
                let full = match p.properties.as_ref().and_then(|q| q.instance_view.as_ref()) {
                    Some(_) => Some(p.clone()),
                    None => deps.arm.get_restore_point(&id, true).await?,
                };
                if full.is_some_and(|f| !f.replication_failed()) {
                    return Ok(Some(id));
                }
            }
        }
    }
    Ok(None)
}

/// The copy PUT for `source` (the source point as read): plain `sourceRestorePoint`, plus, for
/// each disk encrypted with a customer-managed key, the target set `copy.encryptionSets` maps
/// its set to (`…diskRestorePoint.encryption`; data disks by position, their `lun` being
/// read-only). `Err`: the disks whose set has no mapping (the copy must not be made).
pub fn copy_body(
    source: &RestorePoint,
    source_id: &ResourceId,
    copy: Option<&CopyTarget>,
) -> Result<RestorePoint, Vec<UnmappedEncryptionSet>> {
    let mut body = RestorePoint::copy_of(source_id);
    let meta = source
        .properties
        .as_ref()
        .and_then(|p| p.source_metadata.as_ref());
    let sp = meta.map(|m| &m["storageProfile"]);
    let empty = std::collections::BTreeMap::new();
    let map = copy.map_or(&empty, |c| &c.encryption_sets);
    let region = copy.map(|c| c.region.clone()).unwrap_or_default();
    let mut unmapped = Vec::new();
    let mut any = false;
    let mut entry = |disk: &serde_json::Value, label: String| -> serde_json::Value {
        let Some(set) = disk["managedDisk"]["diskEncryptionSet"]["id"].as_str() else {
            return serde_json::json!({});
        };
        match mapped_encryption_set(map, set) {
            Some(target) => {
                any = true;
                serde_json::json!({"diskRestorePoint": {"encryption": {
                    "diskEncryptionSet": {"id": target},
                    "type": "EncryptionAtRestWithCustomerKey"
                }}})
            }
            None => {
                unmapped.push(UnmappedEncryptionSet {
                    region: region.clone(),
                    disk: label,
                    encryption_set: set.to_string(),
                });
                serde_json::json!({})
            }
        }
    };
    let label = |d: &serde_json::Value, what: String| match d["name"].as_str() {
        Some(n) => format!("{what} ({n})"),
        None => what,
    };
    let os = sp
        .map(|sp| &sp["osDisk"])
        .filter(|d| d.is_object())
        .map(|d| entry(d, label(d, "OS disk".to_string())));
    let data: Vec<serde_json::Value> = sp
        .and_then(|sp| sp["dataDisks"].as_array())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| {
            let what = d["lun"]
                .as_i64()
                .map_or_else(|| format!("data disk {i}"), |l| format!("LUN {l}"));
            entry(d, label(d, what))
        })
        .collect();
    if !unmapped.is_empty() {
        return Err(unmapped);
    }
    if any {
        let mut storage = serde_json::Map::new();
        if let Some(os) = os {
            storage.insert("osDisk".into(), os);
        }
        if !data.is_empty() {
            storage.insert("dataDisks".into(), serde_json::Value::Array(data));
        }
        if let Some(p) = body.properties.as_mut() {
            p.source_metadata = Some(serde_json::json!({ "storageProfile": storage }));
        }
    }
    Ok(body)
}

/// Whether an existing target point is the copy of `source` (ids compare case-insensitively).
fn same_source(point: &RestorePoint, source: &ResourceId) -> bool {
    point
        .source_restore_point()
        .and_then(|s| ResourceId::parse(s).ok())
        .is_some_and(|s| &s == source)
}

/// The target point's name: the source's for a first try; a retry after `Failed` adds to the
/// retry number (`rp-…-r{n}`), which no other copy in the collection uses (only one point per
/// tick settles at the source).
fn target_name(req: &CopyRequest) -> String {
    let source_name = req.source.name().unwrap_or_default();
    match names::parse_restore_point_name(source_name) {
        // Both retry numbers come from input (a name, a message): saturate, never overflow.
        Some((tick, source_retry)) if names::is_on_demand_name(source_name) => {
            names::on_demand_point_name(tick, source_retry.saturating_add(req.retry))
        }
        Some((tick, source_retry)) => {
            names::restore_point_name(tick, source_retry.saturating_add(req.retry))
        }
        None if req.retry == 0 => source_name.to_string(),
        None => format!("{source_name}-r{}", req.retry),
    }
}

fn point_id(p: &RestorePoint) -> Option<ResourceId> {
    ResourceId::parse(p.id.as_deref()?).ok()
}

/// The copy still replicating into this collection, if any: the newest point, when it is not
/// final, or `Succeeded` with a disk below 100 %.
async fn in_flight(deps: &Deps, points: &[RestorePoint]) -> Result<Option<ResourceId>, ArmError> {
    let newest = points
        .iter()
        .filter_map(|p| Some((point_id(p)?, p)))
        .max_by_key(|(_, p)| (p.time_created(), p.name.clone()));
    let Some((id, newest)) = newest else {
        return Ok(None);
    };
    match newest.provisioning_state() {
        ProvisioningState::InProgress(_) => Ok(Some(id)),
        ProvisioningState::Failed | ProvisioningState::Canceled => Ok(None),
        ProvisioningState::Succeeded => {
            let Some(full) = deps.arm.get_restore_point(&id, true).await? else {
                return Ok(None);
            };
            // A failed (or terminated) replication is over, not in flight: it shows no percent.
            if full.replication_failed() {
                return Ok(None);
            }
            let percents = full.replication_percents();
            if percents.is_empty() || percents.iter().any(|p| *p < 100) {
                Ok(Some(id))
            } else {
                Ok(None)
            }
        }
    }
}

async fn schedule_first_poll(
    deps: &Deps,
    req: &CopyRequest,
    rule: &Rule,
    vm: &ResourceId,
    target: &ResourceId,
    now: time::OffsetDateTime,
) -> Result<Sent, HandlerError> {
    let tick = support::source_tick(&req.source);
    let poll = PollRequest {
        target: target.clone(),
        role: Role::Copy,
        attempt: 1,
        first_seen: now,
        deadline: now.saturating_add(rule.deadline(Role::Copy)),
        vm: vm.clone(),
        tick,
        rule: Some(rule.name.clone()),
        retry: req.retry,
        copy_to: Vec::new(),
        source: Some(req.source.clone()),
        target_region: Some(req.target_region.clone()),
        prune_again: 0,
    };
    let delay = poll::delay_before(Role::Copy, 1, target, &deps.tuning.backoff);
    let id = support::poll_message_id(target, tick, 1);
    Ok(support::send(
        deps,
        id,
        QueueMessage::Poll(poll),
        Some(support::after(now, delay)),
    )
    .await?)
}

/// A copy may wait for earlier copies (every ~10 min) as long as a copy may take, plus the
/// transient reschedules every request gets.
fn max_attempts(deps: &Deps, rule: &Rule) -> u32 {
    let every = deps.tuning.backoff.copy_every.as_secs().max(60);
    let waits = rule.deadline(Role::Copy).whole_seconds().max(0) as u64 / every;
    u32::try_from(waits)
        .unwrap_or(u32::MAX)
        .saturating_add(deps.tuning.max_reschedules)
}

fn report(why: String) -> Outcome {
    tracing::error!("copy refused: {why}");
    Outcome::new(Status::Reported, why)
}

async fn transient_or_report(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
    e: ArmError,
    what: &str,
) -> Result<Outcome, HandlerError> {
    if !e.is_transient() {
        support::log_permanent(&format!("copy: {what}"), &req.source, &e);
        return Ok(Outcome::new(
            Status::Reported,
            format!(
                "copy of {}: {what} failed: {} {}",
                req.source, e.code, e.message
            ),
        ));
    }
    put_back(
        deps,
        req,
        now,
        e.retry_after,
        format!("{what} refused ({}): {}", e.code, e.message),
        false,
    )
    .await
}

/// Puts the copy back (`attempt + 1`) after `retry_after` (spread later a little) or the
/// reschedule backoff, or reports it once it was put back as often as a copy may wait. `held`:
/// put back without asking ARM (its region refused copies a moment ago).
async fn put_back(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
    retry_after: Option<std::time::Duration>,
    why: String,
    held: bool,
) -> Result<Outcome, HandlerError> {
    let limit = match support::rule_of(deps, req.rule.as_deref(), None) {
        Ok(rule) => max_attempts(deps, rule),
        Err(_) => deps.tuning.max_reschedules,
    };
    if req.attempt >= limit {
        tracing::error!(source = %req.source, attempts = req.attempt,
            "copy: still refused after the last reschedule; giving up: {why}");
        return Ok(Outcome::new(
            Status::Reported,
            format!(
                "copy of {}: gave up after {} reschedules: {why}",
                req.source, req.attempt
            ),
        ));
    }
    let mut again = req.clone();
    again.attempt = again.attempt.saturating_add(1);
    let delay = support::spread_reschedule_delay(
        &deps.tuning,
        req.source.as_str(),
        again.attempt,
        retry_after,
    );
    // WARN only for ARM's refusals; a copy held at a full region without calling ARM is routine
    // (thousands of them every few minutes while a region stays full) and logs at DEBUG.
    if held {
        tracing::debug!(source = %req.source, attempt = again.attempt, delay_s = delay.as_secs(),
            "copy held: {why}");
    } else {
        tracing::warn!(source = %req.source, attempt = again.attempt, delay_s = delay.as_secs(),
            "copy rescheduled: {why}");
    }
    let id = support::copy_message_id(&again);
    let sent = support::send(
        deps,
        id,
        QueueMessage::Copy(again),
        Some(support::after(now, delay)),
    )
    .await?;
    Ok(Outcome::new(
        Status::Rescheduled,
        format!(
            "copy of {}: {why}; retry in {}s",
            req.source,
            delay.as_secs()
        ),
    )
    .with_sent(vec![sent]))
}
