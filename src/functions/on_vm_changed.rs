//! OnVmChanged: (thin for now) acknowledges the event.

use super::{Deps, HandlerError};
use crate::events::ResourceEvent;
use crate::invocation::{Invocation, Outcome, Status};

pub async fn handle(inv: Invocation<ResourceEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let _ = deps;
    Ok(Outcome::new(
        Status::Skipped,
        format!("{} for {}", inv.event.event_type, inv.event.subject),
    ))
}
