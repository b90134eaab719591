//! CreateRestorePoint (queue `rp-create`): one restore point for one VM at one tick (docs/architecture.md, "Flow").
//!
//! Scope guard → VM (gone: skipped) → rule → exclusions and consistency → ensure the collection
//! (once per process) → PUT the point under its deterministic name → schedule the first poll.
//! A timer-planned create carries the timer's listing (VM, data disks, collection state) and
//! reads nothing while it is fresh; if ARM refuses a write for good, the create runs once more
//! on fresh reads, since the listing may have gone stale.
//! Replays are harmless: a PUT of an existing point either answers as before or is refused
//! with a conflict, after which a GET confirms the point and only its poll is (re)scheduled
//! with the same message id. Transient refusals (429, 409 concurrent create, 5xx) put the same
//! request back on the queue (`attempt + 1`) after `Retry-After` or a backoff; permanent ones
//! are reported with ARM's code and message. Only a failure to schedule is an invocation error.

use std::time::Duration;

use super::support::{self, EnsureError};
use super::{Deps, HandlerError};
use crate::azure::models::{ConsistencyMode, RestorePoint, VirtualMachine};
use crate::azure::{ArmError, ResourceId};
use crate::invocation::{Invocation, Outcome, Sent, Status};
use crate::messages::{CreateRequest, ListedVm, PollRequest, QueueMessage, Role};
use crate::names;
use crate::policy::regions::{known_region, same_region};
use crate::policy::{DiskInfo, InstantAccess, Rule, TickKind};
use crate::poll;
use crate::schedule::rfc3339;

pub async fn handle(inv: Invocation<CreateRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let mut req = inv.event;
    let now = inv.context.now;
    if !deps.policy.covers(&req.vm) {
        tracing::warn!(vm = %req.vm, "create refused: VM outside every policy scope");
        return Err(HandlerError::OutOfScope { vm: req.vm });
    }
    // The message's copy regions, as ARM names ("Sweden Central" → swedencentral), checked
    // before anything is written: a region that is none would fail only after the point exists.
    if let Some(regions) = req.copy_to.as_mut() {
        for region in regions.iter_mut() {
            match known_region(region) {
                Ok(name) => *region = name.to_string(),
                Err(e) => {
                    tracing::error!(vm = %req.vm, "create refused: copyTo: {e}");
                    return Ok(Outcome::new(
                        Status::Reported,
                        format!("{}: copyTo: {e}", req.vm),
                    ));
                }
            }
        }
    }
    // The timer paces the first tries it plans while they run at their slots; every other
    // create (a retry, a reschedule, an onboarding create from OnVmChanged, a planned one
    // handled late) paces itself from the subscription's budget.
    if paces_itself(&req, now) {
        if let Some(outcome) = paced(deps, &req, now).await? {
            return Ok(outcome);
        }
    }
    let listed = req.listed.as_deref().filter(|l| {
        let fresh = now - l.at <= deps.tuning.listed_max_age;
        let same_vm = l.vm.resource_id().as_ref() == Some(&req.vm);
        if !same_vm {
            tracing::warn!(vm = %req.vm, "the message's listed VM is another VM; reading ARM instead");
        }
        fresh && same_vm
    });
    let redelivered = inv.context.delivery_count > 1;
    match create(deps, &req, now, listed, redelivered).await? {
        Attempt::Finished(outcome) => Ok(outcome),
        // A refusal for good may come from the listing being stale (VM deleted or changed,
        // collection made meanwhile): once more with ARM's current state.
        Attempt::Refused { what, error } if listed.is_some() => {
            tracing::info!(vm = %req.vm, code = %error.code, "create: {what} refused with the timer's listing; again with fresh reads");
            match create(deps, &req, now, None, redelivered).await? {
                Attempt::Finished(outcome) => Ok(outcome),
                Attempt::Refused { what, error } => report(&req, error, &what),
            }
        }
        Attempt::Refused { what, error } => report(&req, error, &what),
    }
}

/// How long after its planned slot a timer-planned create still counts as on time. The plan
/// spaced the creates by ARM's refill, so one handled later than this runs beside the creates
/// planned after it (handlers catching up a backlog: a redelivery, a slow or restarted
/// instance), which together would spend the bucket faster than it refills. A few seconds
/// cover the queue's own delivery delay.
pub const PLANNED_SLOT_SLACK: time::Duration = time::Duration::seconds(10);

/// Whether a create asks ARM's readings (`functions::pace`) before it spends: every create
/// but a timer-planned first try at its slot, which the plan paced already.
pub fn paces_itself(req: &CreateRequest, now: time::OffsetDateTime) -> bool {
    if req.attempt > 0 || req.retry > 0 {
        return true;
    }
    match req.listed.as_deref() {
        None => true,
        // Planned, but without a slot (an older timer's message): on time, as before.
        Some(l) => l
            .planned_for
            .is_some_and(|slot| now > slot + PLANNED_SLOT_SLACK),
    }
}

/// How one try at creating ended.
enum Attempt {
    Finished(Outcome),
    /// ARM refused for good (not transient); `what` names the step.
    Refused {
        what: String,
        error: ArmError,
    },
}

/// Why a try ended before its point's creation started; [`create`] turns it into an [`Attempt`].
enum Stop {
    /// Ended with an outcome (skipped, reported, superseded, a replay's poll ensured).
    Finished(Outcome),
    /// The request goes back on the queue (`attempt + 1`): ARM refused for a moment (429, 409
    /// concurrent create, 5xx), or the point must wait for the VM's previous one.
    Again { what: &'static str, error: ArmError },
    /// ARM refused for good; `what` names the step.
    Refused { what: &'static str, error: ArmError },
    /// An invocation error (a send that failed, a bad setting).
    Failed(HandlerError),
}

// Boxed where it travels in a `Result`: an outcome and an ARM error are large, and the happy
// path should not carry their size.
impl From<HandlerError> for Box<Stop> {
    fn from(e: HandlerError) -> Self {
        Box::new(Stop::Failed(e))
    }
}

/// A try that ended with `outcome`.
fn finished(outcome: Outcome) -> Box<Stop> {
    Box::new(Stop::Finished(outcome))
}

/// ARM's error at step `what`: a transient one puts the request back, another ends the try.
fn arm_stop(error: ArmError, what: &'static str) -> Box<Stop> {
    Box::new(if error.is_transient() {
        Stop::Again { what, error }
    } else {
        Stop::Refused { what, error }
    })
}

/// ARM's answer to step `what`, or the [`Stop`] its error means ([`arm_stop`]).
fn arm_step<T>(result: Result<T, ArmError>, what: &'static str) -> Result<T, Box<Stop>> {
    result.map_err(|error| arm_stop(error, what))
}

/// A create the policy (not ARM) refuses: logged and reported.
fn refused(req: &CreateRequest, why: impl std::fmt::Display) -> Box<Stop> {
    tracing::error!(vm = %req.vm, "create refused: {why}");
    finished(Outcome::new(Status::Reported, format!("{}: {why}", req.vm)))
}

/// One try: with `listed`, the VM, disk and collection reads it covers are skipped;
/// `redelivered` (Service Bus `DeliveryCount` > 1) reads the collection before the PUT.
async fn create(
    deps: &Deps,
    req: &CreateRequest,
    now: time::OffsetDateTime,
    listed: Option<&ListedVm>,
    redelivered: bool,
) -> Result<Attempt, HandlerError> {
    let stop = match try_create(deps, req, now, listed, redelivered).await {
        Ok(outcome) => return Ok(Attempt::Finished(outcome)),
        Err(stop) => *stop,
    };
    match stop {
        Stop::Finished(outcome) => Ok(Attempt::Finished(outcome)),
        Stop::Again { what, error } => Ok(Attempt::Finished(
            reschedule(deps, req, now, &error, what).await?,
        )),
        Stop::Refused { what, error } => Ok(Attempt::Refused {
            what: what.to_string(),
            error,
        }),
        Stop::Failed(e) => Err(e),
    }
}

/// The steps of one try, each ending it early with a [`Stop`].
async fn try_create(
    deps: &Deps,
    req: &CreateRequest,
    now: time::OffsetDateTime,
    listed: Option<&ListedVm>,
    redelivered: bool,
) -> Result<Outcome, Box<Stop>> {
    let vm = match listed {
        Some(l) => l.vm.clone(),
        None => read_vm(deps, req).await?,
    };
    let rule =
        support::rule_of(deps, req.rule.as_deref(), Some(&vm)).map_err(|why| refused(req, why))?;
    let location = support::vm_location(&vm)
        .map_err(|why| refused(req, why))?
        .to_string();
    let listed_disks = listed.map(|l| l.disks.as_slice()).unwrap_or_default();
    let disk_info = arm_step(
        disk_info(deps, &vm, listed_disks, now).await,
        "reading the VM's disks",
    )?;
    let excluded = excluded_disks(req, rule, &vm, &disk_info)?;
    check_vm(req, rule, &vm, &disk_info)?;
    let consistency = consistency_of(req, rule, &vm);
    let kind = tick_kind(deps, req, rule, &consistency, now)?;

    // Too late (a long reschedule chain, a backlog): the next tick's point takes this one's
    // place rather than be refused for coming too soon after it. (An on-demand point passed
    // its own spacing check against the next tick above.)
    if let Some(outcome) = superseded(deps, req, rule, kind, &consistency, now, "came") {
        return Ok(outcome);
    }

    // Instant access (Premium SSD v2 / Ultra disks of application-consistent points): the
    // collection gets `instantAccess` when created, the point its duration; elsewhere it is
    // not sent (Rule::instant_access_for).
    let instant_access = rule.instant_access_for(&vm, &disk_info, &excluded, &consistency);
    let collection =
        ensure_collection(deps, req, rule, &location, listed, instant_access.is_some()).await?;

    // PUT first, without reading: replays are rare, and a read per create would bound a
    // large tick's pace. A point that exists already (a replay) either answers the PUT as
    // before (same input) or refuses it with a conflict; then a GET tells.
    let name = match kind {
        TickKind::Scheduled => names::restore_point_name(req.tick, req.retry),
        TickKind::OnDemand => names::on_demand_point_name(req.tick, req.retry),
    };
    let point = collection.child("restorePoints", &name);
    let body = point_body(&consistency, &excluded, instant_access);
    // Checked again just before the write, on ARM's clock (its `Date` on the last answer): the
    // reads above, with their in-call retries, may have carried the create past the cut-off
    // after which its point would crowd out the next tick's.
    let arm_now = deps.arm.rate_limits().date.map_or(now, |d| d.max(now));
    if let Some(outcome) = superseded(
        deps,
        req,
        rule,
        kind,
        &consistency,
        arm_now,
        "reached its write",
    ) {
        return Ok(outcome);
    }
    // A redelivered create (its first delivery's completion lost, or its handler killed) can
    // come after its point failed, was retried under the next name and pruned once the retry
    // settled: PUT again, the pruned try would be made anew, a duplicate of the retry or a
    // Failed point nothing prunes. One read of the collection tells; first deliveries, which
    // cannot come after their own point, read nothing.
    if redelivered {
        let later = arm_step(
            later_try(deps, &collection, &name).await,
            "reading the collection of a redelivered create",
        )?;
        if let Some(later) = later {
            tracing::info!(vm = %req.vm, point = %point, later = %later, "redelivered create: a later try of its tick exists; nothing to do");
            return Ok(Outcome::new(
                Status::Skipped,
                format!("{point}: redelivered after its retry {later} was made; nothing to do"),
            ));
        }
    }
    let retry_after = match put_point(deps, &collection, &point, &body).await? {
        Put::Accepted { retry_after } => retry_after,
        Put::Exists => {
            let sent = schedule_first_poll(deps, req, rule, &vm, &point, now, None).await?;
            return Ok(Outcome::new(
                Status::Skipped,
                format!("{point} exists already (replay); poll ensured"),
            )
            .with_sent(vec![sent]));
        }
        Put::TooSoon(e) => {
            return Err(too_soon(deps, req, rule, &collection, &consistency, now, e).await)
        }
    };
    tracing::info!(
        vm = %req.vm, point = %point, consistency = consistency.as_str(),
        excluded = excluded.len(), "restore point creation started"
    );
    let sent = schedule_first_poll(deps, req, rule, &vm, &point, now, retry_after).await?;
    Ok(Outcome::new(
        Status::Done,
        format!("creating {point} ({})", consistency.as_str()),
    )
    .with_sent(vec![sent]))
}

/// The VM, read from ARM; a VM that is gone skips the create.
async fn read_vm(deps: &Deps, req: &CreateRequest) -> Result<VirtualMachine, Box<Stop>> {
    match arm_step(deps.arm.get_vm(&req.vm).await, "reading the VM")? {
        Some(vm) => Ok(vm),
        None => {
            tracing::warn!(vm = %req.vm, "VM vanished before its restore point; nothing to do");
            Err(finished(Outcome::new(
                Status::Skipped,
                format!("VM vanished: {}", req.vm),
            )))
        }
    }
}

/// The disks the point leaves out: the rule's (with the automatic ones) plus the message's.
/// Refused when that leaves none of the VM's managed disks: the point would restore nothing.
fn excluded_disks(
    req: &CreateRequest,
    rule: &Rule,
    vm: &VirtualMachine,
    disk_info: &[DiskInfo],
) -> Result<Vec<ResourceId>, Box<Stop>> {
    let mut excluded: Vec<ResourceId> = Vec::new();
    for (disk, reason) in rule.excluded_disks(vm, disk_info) {
        tracing::debug!(vm = %req.vm, disk = %disk, %reason, "disk excluded");
        excluded.push(disk);
    }
    for disk in req.exclude_disks.iter().flatten() {
        if !excluded.contains(disk) {
            excluded.push(disk.clone());
        }
    }
    if crate::policy::excludes_every_disk(vm, &excluded) {
        tracing::error!(vm = %req.vm, "create refused: every disk of the VM is excluded");
        return Err(finished(Outcome::new(
            Status::Reported,
            format!("{}: every disk is excluded, nothing to restore", req.vm),
        )));
    }
    Ok(excluded)
}

/// The policy's per-VM checks: what Azure would refuse (a confidential VM; crash-consistent
/// points with Ultra / Premium SSD v2 / write-accelerated disks or of a size without Premium
/// storage) is reported instead of sent (the timer's plan already skips such VMs when it
/// listed them); caveats are logged at debug (`vmrp plan` shows them); other problems (a
/// copy to the VM's own region, dropped when the first poll is sent) are logged.
fn check_vm(
    req: &CreateRequest,
    rule: &Rule,
    vm: &VirtualMachine,
    disk_info: &[DiskInfo],
) -> Result<(), Box<Stop>> {
    for problem in rule.check_vm(vm, disk_info) {
        let consistency_only = problem.field == crate::policy::FIELD_CONSISTENCY;
        if problem.refuses_create() && !(consistency_only && req.consistency_mode.is_some()) {
            return Err(refused(req, problem));
        }
        if problem.field == crate::policy::FIELD_CONSISTENCY_CAVEAT {
            tracing::debug!(vm = %req.vm, "{problem}");
        } else {
            tracing::warn!(vm = %req.vm, "{problem}");
        }
    }
    Ok(())
}

/// The point's consistency: the message's, else the rule's for this VM.
fn consistency_of(req: &CreateRequest, rule: &Rule, vm: &VirtualMachine) -> ConsistencyMode {
    match &req.consistency_mode {
        Some(mode) => mode.clone(),
        None => {
            let (mode, warning) = rule.consistency_for(vm);
            if let Some(w) = warning {
                tracing::warn!(vm = %req.vm, "{w}");
            }
            mode
        }
    }
}

/// The tick must be an occurrence of the rule's schedule, or a valid on-demand request
/// (recent, and spaced from the rule's scheduled points): anything else would crowd out a
/// scheduled point (Azure's spacing rule) or name a point for a time that has not come.
fn tick_kind(
    deps: &Deps,
    req: &CreateRequest,
    rule: &Rule,
    consistency: &ConsistencyMode,
    now: time::OffsetDateTime,
) -> Result<TickKind, Box<Stop>> {
    let timer = crate::schedule::Schedule::parse(&deps.schedule)
        .map_err(|e| HandlerError::Invalid(format!("setting VMRP_SCHEDULE: {e}")))?;
    rule.classify_tick(
        &timer,
        req.tick,
        now,
        crate::policy::spacing_for(consistency),
        req.retry > 0 || req.attempt > 0,
    )
    .map_err(|why| {
        tracing::error!(vm = %req.vm, tick = %rfc3339(req.tick), "create refused: {why}");
        finished(Outcome::new(Status::Reported, format!("{}: {why}", req.vm)))
    })
}

/// The VM's local collection, created (once per process) unless the listing showed it ready;
/// a collection of that name with another source is reported.
async fn ensure_collection(
    deps: &Deps,
    req: &CreateRequest,
    rule: &Rule,
    location: &str,
    listed: Option<&ListedVm>,
    instant_access: bool,
) -> Result<ResourceId, Box<Stop>> {
    let names = support::local_collection(&req.vm, rule).map_err(|why| refused(req, why))?;
    let ensured = support::ensure_listed_collection(
        deps,
        &names,
        location,
        &req.vm,
        support::collection_tags(&rule.name, &req.vm),
        listed.and_then(|l| l.collection),
        instant_access,
    )
    .await;
    match ensured {
        Ok(id) => Ok(id),
        Err(EnsureError::Arm(e)) => Err(arm_stop(e, "ensuring the collection")),
        Err(EnsureError::Foreign { id, source }) => {
            tracing::error!(collection = %id, %source, vm = %req.vm, "collection name taken by another source");
            Err(finished(Outcome::new(
                Status::Reported,
                format!(
                    "collection {id} exists with source {source}, not {}",
                    req.vm
                ),
            )))
        }
    }
}

/// The point's PUT body. Only `CrashConsistent` is accepted as input (see
/// `RestorePoint::local`); the policy's application consistency is what Azure does when the
/// field is absent. Instant access adds its duration.
fn point_body(
    consistency: &ConsistencyMode,
    excluded: &[ResourceId],
    instant_access: Option<&InstantAccess>,
) -> RestorePoint {
    let mut body = RestorePoint::local(Some(consistency.clone()), excluded);
    if let (Some(minutes), Some(p)) = (
        instant_access.and_then(|ia| ia.duration_minutes),
        body.properties.as_mut(),
    ) {
        p.instant_access_duration_minutes = i32::try_from(minutes).ok();
    }
    body
}

/// What ARM said to the point's PUT, where it did not end the try.
enum Put {
    /// Creation started; the first poll waits at least `Retry-After`.
    Accepted { retry_after: Option<Duration> },
    /// The point exists already (a replay): only its poll is (re)scheduled.
    Exists,
    /// Azure's spacing rule: the VM's previous point is too recent ([`too_soon`]).
    TooSoon(ArmError),
}

/// PUTs the point. A conflict is a replay when a GET finds the point; a collection ARM does
/// not know (deleted since the cache saw it) is forgotten, and the create goes back, which
/// recreates it.
async fn put_point(
    deps: &Deps,
    collection: &ResourceId,
    point: &ResourceId,
    body: &RestorePoint,
) -> Result<Put, Box<Stop>> {
    match deps.arm.create_restore_point(point, body).await {
        Ok(accepted) => Ok(Put::Accepted {
            retry_after: accepted.lro.retry_after,
        }),
        Err(e) if e.is_not_found() && e.code.eq_ignore_ascii_case("ParentResourceNotFound") => {
            deps.known.forget_collection(collection);
            Err(Box::new(Stop::Again {
                what: "creating the point (collection gone)",
                error: e,
            }))
        }
        Err(e) if e.status == Some(409) => {
            match arm_step(
                deps.arm.get_restore_point(point, false).await,
                "reading the point",
            )? {
                Some(_) => Ok(Put::Exists),
                None => Err(arm_stop(e, "creating the point")),
            }
        }
        Err(e) if e.status == Some(400) && e.code.eq_ignore_ascii_case("OperationNotAllowed") => {
            Ok(Put::TooSoon(e))
        }
        Err(e) => Err(arm_stop(e, "creating the point")),
    }
}

/// Azure's spacing rule refused the point (`e`): the VM's previous point (the last tick's, if
/// it came late) is too recent. When that point allows ours before this tick's supersede
/// cut-off, the create waits for it instead of losing the tick.
async fn too_soon(
    deps: &Deps,
    req: &CreateRequest,
    rule: &Rule,
    collection: &ResourceId,
    consistency: &ConsistencyMode,
    now: time::OffsetDateTime,
    mut e: ArmError,
) -> Box<Stop> {
    let wait = match arm_step(
        spacing_wait(deps, collection, consistency, now).await,
        "reading the collection after a refused create",
    ) {
        Ok(wait) => wait,
        Err(stop) => return stop,
    };
    match wait {
        Some(wait)
            if support::superseding_tick(deps, rule, req.tick, consistency, now + wait)
                .is_none() =>
        {
            e.retry_after = Some(wait);
            Box::new(Stop::Again {
                what: "creating the point (too soon after the VM's previous point)",
                error: e,
            })
        }
        _ => arm_stop(e, "creating the point"),
    }
}

/// The name of a later try of the same tick as `name` (same kind, higher retry number) in
/// `collection`, if there is one.
async fn later_try(
    deps: &Deps,
    collection: &ResourceId,
    name: &str,
) -> Result<Option<String>, ArmError> {
    let Some((tick, retry)) = names::parse_restore_point_name(name) else {
        return Ok(None);
    };
    let on_demand = names::is_on_demand_name(name);
    let Some(c) = deps.arm.get_collection(collection, true).await? else {
        return Ok(None);
    };
    Ok(c.restore_points()
        .iter()
        .filter_map(|p| {
            ResourceId::parse(p.id.as_deref()?)
                .ok()?
                .name()
                .map(str::to_string)
        })
        .find(|other| {
            names::parse_restore_point_name(other).is_some_and(|(t, r)| t == tick && r > retry)
                && names::is_on_demand_name(other) == on_demand
        }))
}

/// The report of a scheduled create that, at `at`, is past its tick's supersede cut-off: the
/// rule's next tick takes its place (`support::superseding_tick`). `None` while it may go on.
fn superseded(
    deps: &Deps,
    req: &CreateRequest,
    rule: &Rule,
    kind: TickKind,
    consistency: &crate::azure::models::ConsistencyMode,
    at: time::OffsetDateTime,
    what: &str,
) -> Option<Outcome> {
    if kind != TickKind::Scheduled {
        return None;
    }
    let next = support::superseding_tick(deps, rule, req.tick, consistency, at)?;
    tracing::warn!(vm = %req.vm, tick = %rfc3339(req.tick), next = %rfc3339(next), "create superseded by the next tick ({what} at {})", rfc3339(at));
    Some(Outcome::new(
        Status::Reported,
        format!(
            "{}: the create for tick {} {what} at {}, too close to the next tick {} \
             (points {} apart at least): superseded by it",
            req.vm,
            rfc3339(req.tick),
            rfc3339(at),
            rfc3339(next),
            crate::policy::spacing_for(consistency)
        ),
    ))
}

/// How long until Azure's spacing rule allows a new point of `consistency` in `collection`: the
/// newest point that has not failed, plus the spacing, plus a minute for clock skew; `None` when
/// no point holds the next one back (the refusal was for something else).
async fn spacing_wait(
    deps: &Deps,
    collection: &ResourceId,
    consistency: &crate::azure::models::ConsistencyMode,
    now: time::OffsetDateTime,
) -> Result<Option<std::time::Duration>, ArmError> {
    let Some(found) = deps.arm.get_collection(collection, true).await? else {
        return Ok(None);
    };
    let newest = found
        .restore_points()
        .iter()
        .filter(|p| p.provisioning_state() != crate::azure::models::ProvisioningState::Failed)
        .filter_map(|p| p.time_created())
        .max();
    let allowed =
        newest.map(|t| t + crate::policy::spacing_for(consistency) + time::Duration::MINUTE);
    Ok(allowed
        .filter(|a| *a > now)
        .and_then(|a| std::time::Duration::try_from(a - now).ok()))
}

/// Disk details for the rule's exclusions: from the timer's listing, else one Disk GET per
/// managed data disk, cached.
async fn disk_info(
    deps: &Deps,
    vm: &VirtualMachine,
    listed: &[DiskInfo],
    now: time::OffsetDateTime,
) -> Result<Vec<DiskInfo>, ArmError> {
    let ttl = deps.tuning.disk_cache_ttl;
    let mut out = Vec::new();
    for id in vm.managed_data_disk_ids() {
        if let Some(info) = listed.iter().find(|i| i.id == id) {
            out.push(info.clone());
            continue;
        }
        let info = match deps.known.disk(&id, now, ttl) {
            Some(cached) => cached,
            None => {
                let info = deps
                    .arm
                    .get_disk(&id)
                    .await?
                    .as_ref()
                    .and_then(DiskInfo::from_disk);
                deps.known.remember_disk(&id, now, info.clone());
                info
            }
        };
        out.extend(info);
    }
    Ok(out)
}

/// Sends poll number 1 for a freshly created (or replayed) point. The id depends only on the
/// point and tick, so a replay's poll collapses with the original's.
async fn schedule_first_poll(
    deps: &Deps,
    req: &CreateRequest,
    rule: &Rule,
    vm: &VirtualMachine,
    point: &ResourceId,
    now: time::OffsetDateTime,
    retry_after: Option<Duration>,
) -> Result<Sent, HandlerError> {
    let mut copy_to = match &req.copy_to {
        Some(regions) => regions.clone(),
        None => rule.copies.iter().map(|c| c.region.clone()).collect(),
    };
    // A copy needs another region than the VM's (the policy check warned already).
    if let Some(home) = vm.location.as_deref() {
        copy_to.retain(|r| !same_region(r, home));
    }
    let poll = PollRequest {
        target: point.clone(),
        role: Role::Local,
        attempt: 1,
        first_seen: now,
        deadline: now.saturating_add(rule.deadline(Role::Local)),
        vm: req.vm.clone(),
        tick: req.tick,
        rule: Some(rule.name.clone()),
        retry: req.retry,
        copy_to,
        source: None,
        target_region: None,
        prune_again: 0,
    };
    let delay = poll::delay_before(Role::Local, 1, point, &deps.tuning.backoff)
        .max(retry_after.unwrap_or_default());
    let id = support::poll_message_id(point, req.tick, 1);
    Ok(support::send(
        deps,
        id,
        QueueMessage::Poll(poll),
        Some(support::after(now, delay)),
    )
    .await?)
}

/// A refusal for good: reported with ARM's code and message.
fn report(req: &CreateRequest, e: ArmError, what: &str) -> Result<Outcome, HandlerError> {
    support::log_permanent(&format!("create: {what}"), &req.vm, &e);
    Ok(Outcome::new(
        Status::Reported,
        format!("{}: {what} failed: {} {}", req.vm, e.code, e.message),
    ))
}

/// What a create is about to spend, per bucket: without a listing about four reads (VM,
/// disks, collection) and two writes (collection, point); with one, the reads it did not
/// spare and the collection PUT only when the listing did not show it ready.
pub fn cost(req: &CreateRequest) -> [(super::pace::Bucket, u32); 2] {
    use super::pace::Bucket;
    match req.listed.as_deref() {
        None => [(Bucket::Reads, 4), (Bucket::Writes, 2)],
        Some(l) => {
            let unlisted_disks =
                l.vm.managed_data_disk_ids()
                    .filter(|id| !l.disks.iter().any(|info| &info.id == id))
                    .count();
            let (reads, writes) = match l.collection {
                Some(crate::messages::CollectionSeen::Ready) => (0, 1),
                Some(crate::messages::CollectionSeen::Missing) => (0, 2),
                None => (1, 2),
            };
            let reads = u32::try_from(unlisted_disks)
                .unwrap_or(u32::MAX)
                .saturating_add(reads);
            [(Bucket::Reads, reads), (Bucket::Writes, writes)]
        }
    }
}

/// How many put-backs pacing may make of one create before it goes ahead regardless (its
/// refusals then count as any): the supersede cut-off ends a scheduled create long before
/// (an hour of 30 s waits is 120), this bounds the rest.
pub const MAX_PACED_PUT_BACKS: u32 = 240;

/// The put-backs of `req` that were refusals by ARM (429, 409, 5xx), not its own pacing: what
/// the reschedule budget and its backoff count.
pub fn refusals(req: &CreateRequest) -> u32 {
    req.attempt.saturating_sub(req.paced)
}

/// Puts the create back (`attempt + 1`, the id any reschedule gets; `paced + 1`) when the
/// subscription's buckets, as ARM last reported them, have no room for what it is about to
/// spend ([`cost`]).
async fn paced(
    deps: &Deps,
    req: &CreateRequest,
    now: time::OffsetDateTime,
) -> Result<Option<Outcome>, HandlerError> {
    if req.paced >= MAX_PACED_PUT_BACKS {
        tracing::warn!(vm = %req.vm, paced = req.paced, "create: put back by pacing {MAX_PACED_PUT_BACKS} times; going ahead");
        return Ok(None);
    }
    let key = support::create_message_id(req);
    let sub = req.vm.subscription();
    let costs: Vec<_> = cost(req).into_iter().filter(|(_, n)| *n > 0).collect();
    let Some(delay) = support::pace_all(deps, now, sub, &costs, &key) else {
        return Ok(None);
    };
    let mut again = req.clone();
    again.paced = again.paced.saturating_add(1);
    let sent = send_again(deps, &again, now, delay).await?;
    Ok(Some(
        Outcome::new(
            Status::Rescheduled,
            format!("{}: ARM budget low; again in {}s", req.vm, delay.as_secs()),
        )
        .with_sent(vec![sent]),
    ))
}

/// Puts the create back on its queue after `delay`, as `attempt + 1` (the id every reschedule of
/// this create gets, so a replayed invocation sends nothing new).
async fn send_again(
    deps: &Deps,
    req: &CreateRequest,
    now: time::OffsetDateTime,
    delay: std::time::Duration,
) -> Result<crate::invocation::Sent, crate::azure::SendError> {
    let mut again = req.clone();
    again.attempt = again.attempt.saturating_add(1);
    let id = support::create_message_id(&again);
    support::send(
        deps,
        id,
        QueueMessage::Create(again),
        Some(support::after(now, delay)),
    )
    .await
}

/// Puts the same request back (`attempt + 1`) after `Retry-After` or a backoff; reports instead
/// once the reschedule budget is spent.
async fn reschedule(
    deps: &Deps,
    req: &CreateRequest,
    now: time::OffsetDateTime,
    e: &ArmError,
    what: &str,
) -> Result<Outcome, HandlerError> {
    let refused = refusals(req);
    if refused >= deps.tuning.max_reschedules {
        tracing::error!(vm = %req.vm, attempts = req.attempt, refusals = refused, code = %e.code, message = %e.message,
            "create: still refused after the last reschedule; giving up");
        return Ok(Outcome::new(
            Status::Reported,
            format!("{}: gave up after {refused} reschedules: {e}", req.vm),
        ));
    }
    let attempt = req.attempt.saturating_add(1);
    let delay = support::reschedule_delay(
        &deps.tuning,
        req.vm.as_str(),
        refused.saturating_add(1),
        e.retry_after,
    );
    tracing::warn!(vm = %req.vm, attempt, delay_s = delay.as_secs(), code = %e.code,
        "create: {what} refused for now; rescheduled");
    let sent = send_again(deps, req, now, delay).await?;
    Ok(Outcome::new(
        Status::Rescheduled,
        format!(
            "{}: {what} refused ({}); retry in {}s",
            req.vm,
            e.code,
            delay.as_secs()
        ),
    )
    .with_sent(vec![sent]))
}

#[cfg(test)]
mod tests;
