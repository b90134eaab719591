//! The copy step at Compute's copy-in-flight limit (100 disk copies replicating at once per
//! subscription and target region; docs/architecture.md, "Across instances"): a copy PUT
//! answered 429 holds this instance's copies into that region for four `Retry-After`s, held
//! copies go back on the queue without calling ARM, and copy PUTs into one region take turns
//! on an instance.
//! While held, a copy this instance saw finish there lets one copy go in its place (the slot it
//! freed), so the instances together refill a full region as copies finish instead of probing it.
//! All of it is per-process knowledge (`KnownResources`): a stale hold costs one refused PUT.

use super::{put_back, CopyRequest, Deps, HandlerError, Outcome, ResourceId, RestorePoint};
use crate::azure::ArmError;
use crate::functions::support::CopyTurn;

/// What became of a copy PUT ([`put_copy`]).
pub(super) enum CopyPut {
    /// ARM's answer.
    Answered(Result<(), ArmError>),
    /// Not sent: copies into the region were refused until then (seen while waiting our turn).
    Held(time::OffsetDateTime),
}

/// PUTs the copy `target`, one at a time per (subscription, region) on this process, unless a
/// copy there was refused meanwhile ([`note_refusal`]). Only the PUT waits its turn (not the
/// reads before it): after a burst of copy messages meets the limit, the rest see the refusal
/// here instead of each earning a 429 of its own.
pub(super) async fn put_copy(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
    target: &ResourceId,
    body: &RestorePoint,
) -> CopyPut {
    let sub = req.source.subscription();
    let lane = deps.known.copy_lane(sub, &req.target_region);
    let _our_turn = lane.lock().await;
    let turn = deps.known.take_copy_turn(sub, &req.target_region, now);
    if let CopyTurn::Held(until) = turn {
        return CopyPut::Held(until);
    }
    let answer = deps
        .arm
        .create_restore_point(target, body)
        .await
        .map(|_| ());
    match (&answer, turn) {
        (Ok(()), CopyTurn::Room) => deps.known.copy_took_room(sub, &req.target_region, now),
        (Ok(()), _) => deps.known.forget_copies_refused(sub, &req.target_region),
        (Err(e), _) => note_refusal(deps, req, now, e),
    }
    CopyPut::Answered(answer)
}

/// A copy PUT answered 429: Compute refuses copies into the region (its disk copies in flight
/// are at the limit) or ARM throttles the subscription's writes. Either way no copy there
/// should be asked for before ARM's `Retry-After` (else one copy-progress step): this process
/// remembers it, so the copy messages it takes meanwhile go back without calling ARM.
fn note_refusal(deps: &Deps, req: &CopyRequest, now: time::OffsetDateTime, e: &ArmError) {
    if e.status != Some(429) {
        return;
    }
    let wait = e.retry_after.unwrap_or(deps.tuning.backoff.copy_every);
    let until = deps.known.remember_copies_refused(
        req.source.subscription(),
        &req.target_region,
        now,
        wait,
    );
    tracing::info!(region = %req.target_region, until = %until,
        "copies into the region refused (429); this instance holds its copies there until then");
}

/// Puts the copy back without calling ARM while this process knows copies into its region are
/// refused ([`note_refusal`]); `None`: go on.
pub(super) async fn held_at_copy_limit(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
) -> Result<Option<Outcome>, HandlerError> {
    let sub = req.source.subscription();
    let Some(until) = deps
        .known
        .copies_refused_until(sub, &req.target_region, now)
    else {
        return Ok(None);
    };
    held(deps, req, now, until).await.map(Some)
}

/// Puts the copy back until `until`, when copies into its region are refused.
pub(super) async fn held(
    deps: &Deps,
    req: &CopyRequest,
    now: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    // Back after one copy-progress step at most, to whichever instance takes it: this
    // instance's hold may be longer (four `Retry-After`s), another's shorter, or another may
    // have room from a copy it saw finish.
    let wait = std::time::Duration::try_from(until - now)
        .unwrap_or_default()
        .min(deps.tuning.backoff.copy_every);
    let why = format!(
        "{COPY_LIMIT_WAIT} into {} (Compute refused a copy there until {until})",
        req.target_region
    );
    put_back(deps, req, now, Some(wait), why, true).await
}

/// The start of the reason of a copy put back because its target region refused copies a
/// moment ago (429: its disk copies in flight at the limit); `vmrp local` explains a copy still
/// waiting at the end of a run by it.
pub const COPY_LIMIT_WAIT: &str = "waiting for room among the copies in flight";
