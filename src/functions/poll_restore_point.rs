//! POLL_RESTORE_POINT: (thin for now) validates the message and reports what it would do.

use super::{Deps, HandlerError};
use crate::invocation::{Invocation, Outcome, Status};
use crate::messages::PollRequest;

pub async fn handle(inv: Invocation<PollRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let _ = deps;
    Ok(Outcome::new(
        Status::Skipped,
        format!("received {:?}", inv.event),
    ))
}
