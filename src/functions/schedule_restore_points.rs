//! ScheduleRestorePoints: (thin for now) acknowledges the timer tick.

use super::{Deps, HandlerError};
use crate::events::TimerEvent;
use crate::invocation::{Invocation, Outcome, Status};

pub async fn handle(inv: Invocation<TimerEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let _ = deps;
    Ok(Outcome::new(
        Status::Skipped,
        format!("timer fired (past due: {})", inv.event.is_past_due),
    ))
}
