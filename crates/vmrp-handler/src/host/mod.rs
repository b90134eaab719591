//! The Azure Functions custom-handler transport: the only module that knows the host's JSON
//! envelope (PROTOCOL.md). Decodes invocations into typed events, encodes outcomes, maps errors.
//!
//! - [`envelope`]: `{"Data","Metadata"}` in, `{"Outputs","Logs","ReturnValue"}` out.
//! - [`router`]: the axum router, one route per function, panics caught.
//! - [`error`]: every transport failure and its status code, in one place.
//! - [`park`]: a queue message that can never succeed goes to `rp-failed`, once, with its reason.
//! - [`serve`]: `vmrp serve`, the process the host starts.

pub mod envelope;
pub mod error;
pub mod park;
pub mod router;
pub mod serve;

pub use envelope::{Envelope, EnvelopeError, InvocationResponse, ServiceBusTrigger};
pub use error::InvocationError;
pub use router::{app, app_with, functions, Function, Trigger, MAX_BODY_BYTES};
pub use serve::{run, runtime, ServeArgs};
