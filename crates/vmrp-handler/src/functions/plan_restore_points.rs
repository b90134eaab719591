//! PlanRestorePoints (queue `rp-plan`): plans one subscription for one timer tick and sends its
//! paced creates. The timer (ScheduleRestorePoints) sends one such message per subscription of
//! the policy's scopes, so a large estate's listings and pacing run per subscription, in
//! parallel on the platform's instances, each from that subscription's own ARM bucket
//! (docs/architecture.md, "Fan-out per subscription").
//!
//! At-least-once delivery: a redelivered or replayed plan message plans the same tick again and
//! sends the same create ids (`names::message_id("create", vm, tick, 0)`), which Service Bus
//! duplicate detection drops. A message whose tick is not an occurrence of `VMRP_SCHEDULE`, lies
//! in the future, or whose subscription no policy scope names is refused with the reason
//! (permanent: it is parked, not retried).

use time::OffsetDateTime;

use super::schedule_restore_points::{plan_and_send, subscriptions, timer_schedule};
use super::{Deps, HandlerError};
use crate::invocation::{Invocation, Outcome};
use crate::messages::PlanRequest;
use crate::schedule::rfc3339;

/// How far ahead of this instance's clock a tick may lie (clock skew between the timer's
/// instance and this one) before the message is refused as not yet due.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

pub async fn handle(inv: Invocation<PlanRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let now = inv.context.now;
    let PlanRequest {
        subscription,
        tick,
        attempt,
    } = inv.event;
    let timer = timer_schedule(deps)?;
    check(&timer, &subscription, tick, now, deps)?;
    let subscription = subscription.to_ascii_lowercase();
    plan_and_send(deps, &timer, tick, now, &subscription, attempt).await
}

/// Why a plan message cannot be carried out, if it cannot: its tick must be an occurrence of the
/// timer's schedule no later than `now` (plus clock skew), and its subscription one the policy's
/// scopes reach.
fn check(
    timer: &crate::schedule::Schedule,
    subscription: &str,
    tick: OffsetDateTime,
    now: OffsetDateTime,
    deps: &Deps,
) -> Result<(), HandlerError> {
    if timer.latest_at_or_before(tick) != Some(tick) {
        return Err(HandlerError::Invalid(format!(
            "plan message for tick {}: not an occurrence of VMRP_SCHEDULE {:?}",
            rfc3339(tick),
            deps.schedule
        )));
    }
    if tick > now + CLOCK_SKEW {
        return Err(HandlerError::Invalid(format!(
            "plan message for tick {}: in the future (now {})",
            rfc3339(tick),
            rfc3339(now)
        )));
    }
    if !subscriptions(&deps.policy).contains(&subscription.to_ascii_lowercase()) {
        return Err(HandlerError::Invalid(format!(
            "plan message for subscription {subscription:?}: no rule of the policy names it \
             (targets.subscriptions, resourceGroups or vms)"
        )));
    }
    Ok(())
}
