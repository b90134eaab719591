//! Parking: where a queue message that can never succeed is recorded, once.
//!
//! A custom handler cannot dead-letter a message itself: it answers success or failure, and a
//! failed invocation makes Service Bus redeliver the message until `maxDeliveryCount` (10) and
//! only then dead-letter it. For a failure that a redelivery cannot fix (a body that is not a
//! vmrp message or is of a newer major version, a VM outside every policy scope, a handler
//! error classed permanent, a panic) that is nine blind retries. So the router sends the
//! original message, with its reason, to the parking queue `rp-failed` through the same
//! Service Bus sender, and answers success: one delivery, recorded once, where an operator
//! finds it (docs/lifecycle.md, "Failed messages").
//!
//! - The parked message's id derives from the original's queue and `MessageId` (else its body),
//!   so the same failure parked twice (a redelivery after a lost completion) collapses in
//!   Service Bus duplicate detection.
//! - If the parking send fails, the invocation fails as before: Service Bus keeps the message
//!   (redelivery, then its own dead-letter queue). A message is never dropped.
//! - Transient failures are never parked; they keep being retried.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::error::InvocationError;
use crate::azure::{OutgoingMessage, Queue};

/// The queue permanent failures are parked on.
pub const PARKING_QUEUE: Queue = Queue::Failed;

/// The `kind` of a parked record (it is not a vmrp work message: nothing consumes it).
pub const PARKED_KIND: &str = "parked";

/// What is parked: the original message and why it can never succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub v: u64,
    pub kind: &'static str,
    /// The queue the message came from (resend the body there once the cause is fixed).
    pub queue: &'static str,
    /// The function that refused it.
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub delivery_count: u32,
    /// A stable name for the failure (`out_of_scope`, `bad_message`, `panic`, ...).
    pub error_kind: &'static str,
    /// The full reason, as the failed invocation would have logged it.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub parked_at: OffsetDateTime,
    /// The original body, verbatim (it may not even be JSON).
    pub body: String,
}

/// Whether an invocation failure is parked instead of failing the invocation: permanent ones
/// about the message or its handling, never transient ones, and never failures of the
/// envelope (no message to park) or of the transport.
pub fn parkable(err: &InvocationError) -> bool {
    match err {
        InvocationError::BadMessage(_) | InvocationError::Panic(_) => true,
        InvocationError::Handler(_) => !err.is_transient(),
        InvocationError::UnknownFunction { .. }
        | InvocationError::BodyTooLarge { .. }
        | InvocationError::BodyUnreadable(_)
        | InvocationError::Envelope(_) => false,
    }
}

/// The parked message's id: `parked-` and 32 hex digits of the original's queue and
/// `MessageId` (its body when it has none), deterministic and under Service Bus's 128.
pub fn parked_message_id(queue: Queue, message_id: Option<&str>, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(queue.name().as_bytes());
    h.update(b"\n");
    match message_id {
        Some(id) => {
            h.update(b"id:");
            h.update(id.as_bytes());
        }
        None => {
            h.update(b"body:");
            h.update(body.as_bytes());
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("parked-{hex}")
}

impl Parked {
    /// The message to send to [`PARKING_QUEUE`], sent now.
    pub fn to_message(&self) -> OutgoingMessage {
        let queue = Queue::from_name(self.queue).unwrap_or(PARKING_QUEUE);
        OutgoingMessage {
            queue: PARKING_QUEUE,
            message_id: parked_message_id(queue, self.message_id.as_deref(), &self.body),
            body: serde_json::to_string(self).expect("a parked record serialises"),
            not_before: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::HandlerError;
    use crate::messages::MessageError;
    use time::macros::datetime;

    #[test]
    fn what_is_parked_table() {
        let arm = |status| {
            InvocationError::from(HandlerError::Arm(crate::azure::ArmError {
                operation: "PUT".into(),
                status: Some(status),
                code: "X".into(),
                message: "m".into(),
                request_id: None,
                retry_after: None,
            }))
        };
        let cases: Vec<(InvocationError, bool)> = vec![
            (
                InvocationError::BadMessage(MessageError::NewerVersion(2)),
                true,
            ),
            (
                HandlerError::Invalid("rule prod has no copies".into()).into(),
                true,
            ),
            (arm(403), true),
            (arm(429), false),
            (arm(503), false),
            (InvocationError::Panic("boom".into()), true),
            (InvocationError::BodyUnreadable("reset".into()), false),
            (InvocationError::BodyTooLarge { limit: 1 }, false),
        ];
        for (err, want) in cases {
            assert_eq!(parkable(&err), want, "{err}");
        }
    }

    #[test]
    fn ids_are_deterministic_per_original_message() {
        let a = parked_message_id(Queue::Poll, Some("m1"), "x");
        assert_eq!(a, parked_message_id(Queue::Poll, Some("m1"), "other body"));
        assert_ne!(a, parked_message_id(Queue::Copy, Some("m1"), "x"));
        assert_ne!(a, parked_message_id(Queue::Poll, Some("m2"), "x"));
        assert_ne!(
            parked_message_id(Queue::Poll, None, "x"),
            parked_message_id(Queue::Poll, None, "y")
        );
        assert_eq!(a.len(), "parked-".len() + 32);

        let parked = Parked {
            v: 1,
            kind: PARKED_KIND,
            queue: "rp-poll",
            function: "PollRestorePoint".into(),
            message_id: Some("m1".into()),
            delivery_count: 1,
            error_kind: "out_of_scope",
            reason: "refused".into(),
            parked_at: datetime!(2026-11-25 03:00 UTC),
            body: "{}".into(),
        };
        let m = parked.to_message();
        assert_eq!(
            (m.queue, m.message_id.as_str()),
            (Queue::Failed, a.as_str())
        );
        let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(v["kind"], "parked");
        assert_eq!(v["queue"], "rp-poll");
        assert_eq!(v["errorKind"], "out_of_scope");
        assert_eq!(v["parkedAt"], "2026-11-25T03:00:00Z");
        assert_eq!(v["body"], "{}");
    }
}
