//! START_CROSS_REGION_COPY: (thin for now) validates the message and reports what it would do.

use super::{Deps, HandlerError};
use crate::invocation::{Invocation, Outcome, Status};
use crate::messages::CopyRequest;

pub async fn handle(inv: Invocation<CopyRequest>, deps: &Deps) -> Result<Outcome, HandlerError> {
    let _ = deps;
    Ok(Outcome::new(
        Status::Skipped,
        format!("received {:?}", inv.event),
    ))
}
