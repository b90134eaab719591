//! Every way an invocation can fail at the transport, and the one place that maps each to an HTTP
//! status, a log level and the failed-invocation body.
//!
//! Any non-2xx makes the host fail the invocation (PROTOCOL §4.2): Service Bus abandons the
//! message (redelivery, then dead-letter), a timer run is skipped, Event Grid retries the batch.
//! The body is ignored by the host but kept for people reading captures and for tests.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::envelope::{EnvelopeError, ErrorBody, InvocationResponse};
use crate::azure::ErrorClass;
use crate::functions::HandlerError;
use crate::messages::MessageError;

/// Why an invocation failed before, inside or around the handler.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// No function of that name (the path is the function's folder name).
    #[error("no function named {name:?} (this handler serves {known})")]
    UnknownFunction { name: String, known: String },
    /// The request body exceeded the transport's limit.
    #[error("request body is larger than {limit} bytes (the limit for one invocation)")]
    BodyTooLarge { limit: usize },
    /// The body could not be read off the connection.
    #[error("could not read the request body: {0}")]
    BodyUnreadable(String),
    /// The envelope, a binding, or the metadata was not what the host sends.
    #[error("bad invocation envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The Service Bus body is not a vmrp message for this queue.
    #[error("Data.msg: {0}")]
    BadMessage(#[from] MessageError),
    /// The handler returned an error (boxed: it is by far the largest variant).
    #[error(transparent)]
    Handler(Box<HandlerError>),
    /// The handler panicked; the process keeps serving.
    #[error("the handler panicked: {0}")]
    Panic(String),
}

impl InvocationError {
    /// A stable, machine-readable name for the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownFunction { .. } => "unknown_function",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::Envelope(_) => "bad_envelope",
            Self::BadMessage(_) => "bad_message",
            Self::Handler(e) => match **e {
                HandlerError::BadMessage(_) => "bad_message",
                HandlerError::OutOfScope { .. } => "out_of_scope",
                HandlerError::Invalid(_) => "invalid",
                HandlerError::Arm(_) => "arm",
                HandlerError::Send(_) => "send",
            },
            Self::Panic(_) => "panic",
        }
    }

    /// Whether a redelivery can help (handler errors say so themselves; a dropped connection
    /// might; everything about the request's content will fail the same way again).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Handler(e) => e.class() == ErrorClass::Transient,
            Self::BodyUnreadable(_) => true,
            _ => false,
        }
    }

    /// The one status mapping. The host only distinguishes 2xx from the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownFunction { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The failed-invocation body: the protocol envelope plus an `error` member.
    pub fn to_body(&self) -> InvocationResponse {
        let message = self.to_string();
        InvocationResponse {
            outputs: Map::new(),
            logs: vec![format!("failed ({}): {message}", self.kind())],
            return_value: Value::Null,
            error: Some(ErrorBody {
                kind: self.kind(),
                message,
                transient: self.is_transient(),
            }),
        }
    }
}

impl From<HandlerError> for InvocationError {
    fn from(e: HandlerError) -> Self {
        Self::Handler(Box::new(e))
    }
}

impl IntoResponse for InvocationError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.to_body())).into_response()
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::{ArmError, SendError};

    fn arm(status: Option<u16>) -> HandlerError {
        HandlerError::Arm(ArmError {
            operation: "PUT restorePoints".into(),
            status,
            code: "X".into(),
            message: "m".into(),
            request_id: None,
            retry_after: None,
        })
    }

    #[test]
    fn status_kind_and_transience_table() {
        let cases: Vec<(InvocationError, u16, &str, bool)> = vec![
            (
                InvocationError::UnknownFunction {
                    name: "X".into(),
                    known: "Y".into(),
                },
                404,
                "unknown_function",
                false,
            ),
            (
                InvocationError::BodyTooLarge { limit: 10 },
                413,
                "body_too_large",
                false,
            ),
            (
                InvocationError::BodyUnreadable("reset".into()),
                500,
                "body_unreadable",
                true,
            ),
            (
                InvocationError::Envelope(EnvelopeError {
                    field: "Data".into(),
                    problem: "missing".into(),
                }),
                500,
                "bad_envelope",
                false,
            ),
            (
                InvocationError::BadMessage(MessageError::MissingKind),
                500,
                "bad_message",
                false,
            ),
            (
                HandlerError::BadMessage(MessageError::MissingVersion).into(),
                500,
                "bad_message",
                false,
            ),
            (
                HandlerError::Invalid("x".into()).into(),
                500,
                "invalid",
                false,
            ),
            (arm(Some(429)).into(), 500, "arm", true),
            (arm(Some(403)).into(), 500, "arm", false),
            (
                InvocationError::from(HandlerError::Send(SendError {
                    queue: "rp-poll".into(),
                    status: Some(503),
                    message: "busy".into(),
                })),
                500,
                "send",
                true,
            ),
            (InvocationError::Panic("boom".into()), 500, "panic", false),
        ];
        for (err, status, kind, transient) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.is_transient(), transient, "{err}");
            let body = serde_json::to_value(err.to_body()).unwrap();
            assert_eq!(body["ReturnValue"], Value::Null);
            assert_eq!(body["Outputs"], serde_json::json!({}));
            assert_eq!(body["error"]["kind"], kind);
            assert_eq!(body["error"]["transient"], transient);
            assert_eq!(body["error"]["message"], err.to_string());
            assert!(body["Logs"][0].as_str().unwrap().contains(&err.to_string()));
        }
    }

    #[test]
    fn panic_payload_text() {
        let s: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(s.as_ref()), "static");
        let s: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(s.as_ref()), "owned");
        let s: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(s.as_ref()), "non-text panic payload");
    }
}
