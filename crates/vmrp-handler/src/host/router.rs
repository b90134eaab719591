//! The axum router the Functions host talks to: `GET /` for readiness, `POST /<FunctionName>` per
//! invocation. Each [`Function`] pairs a trigger decoder with a typed handler; the router turns the
//! envelope into an `Invocation<T>`, runs the handler with panics caught, and encodes the outcome.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Map, Value};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use super::envelope::{Envelope, InvocationResponse};
use super::error::{panic_message, InvocationError};
use super::park;
use crate::azure::Queue;
use crate::events::{ResourceEvent, TimerEvent};
use crate::functions::{Deps, HandlerError};
use crate::invocation::{Context, Invocation, Outcome, Sent, Status};
use crate::messages::{CopyRequest, CreateRequest, PlanRequest, PollRequest, QueueMessage};

/// The largest request body accepted. vmrp's messages are under 2 KiB and ARM events a few KiB;
/// Service Bus standard caps messages at 256 KiB. Anything bigger is not ours.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Binding names, as in `functions/<Name>/function.json`.
pub const TIMER_BINDING: &str = "timer";
pub const QUEUE_BINDING: &str = "msg";
pub const EVENT_GRID_BINDING: &str = "eventGridEvent";

/// The host's per-invocation id header.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

type HandlerFuture = BoxFuture<'static, Result<Outcome, HandlerError>>;

/// Decodes the envelope into a typed invocation and starts the handler on it.
type Call = dyn Fn(&Envelope, Seed, Deps) -> Result<(Context, HandlerFuture), InvocationError>
    + Send
    + Sync;

/// What the router knows about an invocation before decoding it.
struct Seed {
    invocation_id: String,
    function: String,
}

/// Which trigger a function has, i.e. how its `Data` is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Timer,
    Queue(Queue),
    EventGrid,
}

/// One routable function: a name (the URL path), its trigger, and its handler.
#[derive(Clone)]
pub struct Function {
    name: String,
    trigger: Trigger,
    call: Arc<Call>,
}

/// A queue message type and the queue it arrives on.
pub trait QueueBody: Sized + Send + 'static {
    const QUEUE: Queue;
    fn from_message(message: QueueMessage) -> Option<Self>;
}

impl QueueBody for CreateRequest {
    const QUEUE: Queue = Queue::Create;
    fn from_message(message: QueueMessage) -> Option<Self> {
        match message {
            QueueMessage::Create(m) => Some(m),
            _ => None,
        }
    }
}

impl QueueBody for CopyRequest {
    const QUEUE: Queue = Queue::Copy;
    fn from_message(message: QueueMessage) -> Option<Self> {
        match message {
            QueueMessage::Copy(m) => Some(m),
            _ => None,
        }
    }
}

impl QueueBody for PlanRequest {
    const QUEUE: Queue = Queue::Plan;
    fn from_message(message: QueueMessage) -> Option<Self> {
        match message {
            QueueMessage::Plan(m) => Some(m),
            _ => None,
        }
    }
}

impl QueueBody for PollRequest {
    const QUEUE: Queue = Queue::Poll;
    fn from_message(message: QueueMessage) -> Option<Self> {
        match message {
            QueueMessage::Poll(m) => Some(m),
            _ => None,
        }
    }
}

/// The event, delivery count and message id a trigger decoder extracts.
type Decoded<T> = (T, u32, Option<String>);

impl Function {
    /// A timer-triggered function (binding `timer`).
    pub fn timer<F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Invocation<TimerEvent>, Deps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
    {
        Self::build(
            name,
            Trigger::Timer,
            |env| Ok((env.timer(TIMER_BINDING)?, 1, None)),
            handler,
        )
    }

    /// A Service Bus-triggered function (binding `msg`) on `M`'s queue.
    pub fn queue<M, F, Fut>(name: &str, handler: F) -> Self
    where
        M: QueueBody,
        F: Fn(Invocation<M>, Deps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
    {
        Self::build(
            name,
            Trigger::Queue(M::QUEUE),
            |env| {
                let sb = env.service_bus(QUEUE_BINDING)?;
                let message = QueueMessage::decode_for(M::QUEUE, &sb.body)?;
                let kind = message.kind();
                // decode_for already checked the kind; this only guards a wrong QueueBody impl.
                let typed = M::from_message(message).ok_or_else(|| {
                    HandlerError::Invalid(format!(
                        "internal: a {kind} message does not fit the handler for {}",
                        M::QUEUE.name()
                    ))
                })?;
                Ok((typed, sb.delivery_count, sb.message_id))
            },
            handler,
        )
    }

    /// An Event Grid-triggered function (binding `eventGridEvent`).
    pub fn event_grid<F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Invocation<ResourceEvent>, Deps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
    {
        Self::build(
            name,
            Trigger::EventGrid,
            |env| Ok((env.event_grid(EVENT_GRID_BINDING)?, 1, None)),
            handler,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    fn build<T, D, F, Fut>(name: &str, trigger: Trigger, decode: D, handler: F) -> Self
    where
        T: Send + 'static,
        D: Fn(&Envelope) -> Result<Decoded<T>, InvocationError> + Send + Sync + 'static,
        F: Fn(Invocation<T>, Deps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
    {
        let call = move |env: &Envelope, seed: Seed, deps: Deps| {
            let (event, delivery_count, message_id) = decode(env)?;
            let context = Context {
                invocation_id: seed.invocation_id,
                function: seed.function,
                now: env.utc_now()?,
                delivery_count,
                message_id,
            };
            let future = handler(Invocation::new(event, context.clone()), deps);
            Ok((context, Box::pin(future) as HandlerFuture))
        };
        Self {
            name: name.to_string(),
            trigger,
            call: Arc::new(call),
        }
    }
}

/// vmrp's seven functions, wired to their handlers.
pub fn functions() -> Vec<Function> {
    use crate::functions::*;
    vec![
        Function::timer(SCHEDULE_RESTORE_POINTS, |inv, deps| async move {
            schedule_restore_points::handle(inv, &deps).await
        }),
        Function::queue(PLAN_RESTORE_POINTS, |inv, deps| async move {
            plan_restore_points::handle(inv, &deps).await
        }),
        Function::queue(CREATE_RESTORE_POINT, |inv, deps| async move {
            create_restore_point::handle(inv, &deps).await
        }),
        Function::queue(START_CROSS_REGION_COPY, |inv, deps| async move {
            start_cross_region_copy::handle(inv, &deps).await
        }),
        Function::queue(POLL_RESTORE_POINT, |inv, deps| async move {
            poll_restore_point::handle(inv, &deps).await
        }),
        Function::event_grid(ON_VM_CHANGED, |inv, deps| async move {
            on_vm_changed::handle(inv, &deps).await
        }),
        Function::timer(RUN_RESTORE_DRILLS, |inv, deps| async move {
            run_restore_drills::handle(inv, &deps).await
        }),
    ]
}

struct AppState {
    deps: Deps,
    functions: BTreeMap<String, Function>,
}

/// The router for vmrp's seven functions.
pub fn app(deps: Deps) -> Router {
    app_with(deps, functions())
}

/// The router for any set of functions (tests inject failing or panicking ones).
pub fn app_with(deps: Deps, functions: Vec<Function>) -> Router {
    let state = Arc::new(AppState {
        deps,
        functions: functions.into_iter().map(|f| (f.name.clone(), f)).collect(),
    });
    Router::new()
        .route("/", get(ready))
        .route("/{function}", post(invoke))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Last line of defence: a panic outside a handler future (the handler's own are caught
        // in `invoke`, with the invocation's id) still answers a failed invocation.
        .layer(CatchPanicLayer::custom(|payload: Box<dyn std::any::Any + Send>| {
            let err = InvocationError::Panic(panic_message(payload.as_ref()));
            tracing::error!(kind = err.kind(), error = %err, "invocation failed outside the handler");
            err.into_response()
        }))
        .with_state(state)
}

/// Readiness and health: the host probes `GET /` and counts any response as ready.
async fn ready() -> Json<Value> {
    Json(json!({"status": "ready"}))
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let name = uri.path().trim_start_matches('/').to_string();
    let invocation_id = invocation_id(&headers);
    let started = Instant::now();
    // Kept (a cheap reference count) to park the message should the invocation fail for good.
    let raw = body.as_ref().ok().cloned();
    // The envelope is decoded before the span exists, so the span gets every field at once:
    // recording a field later makes the JSON subscriber format all of the span's fields again.
    let (span, result) = match prepare(&state, &name, invocation_id.clone(), body) {
        Ok((context, trigger, future)) => {
            let span = tracing::info_span!(
                "invocation",
                function = %name,
                invocation_id = %invocation_id,
                message_id = context.message_id.as_deref(),
                delivery_count = matches!(trigger, Trigger::Queue(_)).then_some(context.delivery_count),
            );
            let result = match AssertUnwindSafe(future)
                .catch_unwind()
                .instrument(span.clone())
                .await
            {
                Ok(result) => result.map_err(InvocationError::from),
                Err(payload) => Err(InvocationError::Panic(panic_message(payload.as_ref()))),
            };
            (span, result)
        }
        Err(Unprepared {
            err,
            message_id,
            delivery_count,
        }) => {
            // A message that could not be decoded still names its id and delivery count, so
            // its failure log can be matched with its dead letter.
            let span = tracing::info_span!(
                "invocation",
                function = %name,
                invocation_id = %invocation_id,
                message_id = message_id.as_deref(),
                delivery_count,
            );
            (span, Err(err))
        }
    };
    // A queue message that can never succeed is parked (recorded once, with its reason) and
    // the invocation answered as reported, instead of failing it into blind redeliveries.
    let result = match result {
        Err(err) if park::parkable(&err) => {
            match park_message(&state, &name, raw.as_ref(), &err)
                .instrument(span.clone())
                .await
            {
                Some(outcome) => Ok(outcome),
                None => Err(err),
            }
        }
        other => other,
    };
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(outcome) => {
            let return_value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
            let status = return_value["status"]
                .as_str()
                .unwrap_or("done")
                .to_string();
            tracing::info!(status = %status, summary = %outcome.summary, sent = outcome.sent.len(), elapsed_ms, "invocation succeeded");
            let body = InvocationResponse {
                outputs: Map::new(),
                logs: vec![format!("{status}: {}", outcome.summary)],
                return_value,
                error: None,
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(err) => {
            if err.is_transient() {
                tracing::warn!(kind = err.kind(), transient = true, error = %err, elapsed_ms, "invocation failed");
            } else {
                tracing::error!(kind = err.kind(), transient = false, error = %err, elapsed_ms, "invocation failed");
            }
            err.into_response()
        }
    }
}

/// Sends the failed message with its reason to the parking queue. `None` when there is nothing
/// to park (not a queue function, no message in the envelope) or the send failed: then the
/// invocation fails as before and Service Bus keeps the message.
async fn park_message(
    state: &AppState,
    function: &str,
    raw: Option<&Bytes>,
    err: &InvocationError,
) -> Option<Outcome> {
    let Trigger::Queue(queue) = state.functions.get(function)?.trigger else {
        return None;
    };
    let envelope = Envelope::parse(raw?).ok()?;
    let message = envelope.service_bus(QUEUE_BINDING).ok()?;
    let parked = park::Parked {
        v: 1,
        kind: park::PARKED_KIND,
        queue: queue.name(),
        function: function.to_string(),
        message_id: message.message_id,
        delivery_count: message.delivery_count,
        error_kind: err.kind(),
        reason: err.to_string(),
        // The host's clock (virtual under the emulator), else the wall clock.
        parked_at: envelope
            .utc_now()
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
        body: message.body,
    };
    let outgoing = parked.to_message();
    let message_id = outgoing.message_id.clone();
    match state.deps.scheduler.send(outgoing).await {
        Ok(()) => {
            tracing::error!(kind = err.kind(), error = %err, parked = %message_id,
                queue = park::PARKING_QUEUE.name(),
                "message can never succeed: parked with its reason, not retried");
            Some(
                Outcome::new(
                    Status::Reported,
                    format!("parked in {}: {err}", park::PARKING_QUEUE.name()),
                )
                .with_sent(vec![Sent {
                    queue: park::PARKING_QUEUE.name(),
                    message_id,
                    not_before: None,
                }]),
            )
        }
        Err(send) => {
            tracing::error!(kind = err.kind(), error = %err, send_error = %send,
                "could not park the message; failing the invocation so Service Bus keeps it");
            None
        }
    }
}

/// Why an invocation could not start, with the queue message's id and delivery count when the
/// envelope was readable enough to carry them.
struct Unprepared {
    err: InvocationError,
    message_id: Option<String>,
    delivery_count: Option<u32>,
}

impl From<InvocationError> for Unprepared {
    fn from(err: InvocationError) -> Self {
        Self {
            err,
            message_id: None,
            delivery_count: None,
        }
    }
}

impl From<super::envelope::EnvelopeError> for Unprepared {
    fn from(err: super::envelope::EnvelopeError) -> Self {
        InvocationError::from(err).into()
    }
}

/// Finds the function, decodes the envelope and starts the handler (not yet polled).
fn prepare(
    state: &AppState,
    name: &str,
    invocation_id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Context, Trigger, HandlerFuture), Unprepared> {
    let Some(function) = state.functions.get(name) else {
        return Err(unknown_function(state, name).into());
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            InvocationError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            InvocationError::BodyUnreadable(rejection.body_text())
        }
    })?;
    let envelope = Envelope::parse(&body)?;
    let seed = Seed {
        invocation_id,
        function: function.name.clone(),
    };
    let deps = state.deps.clone();
    let called =
        std::panic::catch_unwind(AssertUnwindSafe(|| (function.call)(&envelope, seed, deps)))
            .map_err(|payload| InvocationError::Panic(panic_message(payload.as_ref())))
            .and_then(|r| r);
    match called {
        Ok((context, future)) => Ok((context, function.trigger, future)),
        Err(err) => {
            let queue = matches!(function.trigger, Trigger::Queue(_));
            Err(Unprepared {
                err,
                message_id: queue
                    .then(|| envelope.message_id().ok().flatten())
                    .flatten(),
                delivery_count: queue.then(|| envelope.delivery_count().ok()).flatten(),
            })
        }
    }
}

/// The host's id when it sent a sane one, else a fresh one (direct calls, tests).
fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_string)
        // A v4 UUID from the thread-local RNG (`Uuid::new_v4` asks the kernel every time).
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string()
        })
}

fn unknown_function(state: &AppState, name: &str) -> InvocationError {
    let known: Vec<&str> = state.functions.keys().map(String::as_str).collect();
    InvocationError::UnknownFunction {
        name: name.to_string(),
        known: known.join(", "),
    }
}

async fn unknown_path(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let err = unknown_function(&state, uri.path().trim_start_matches('/'));
    tracing::warn!(path = %uri.path(), kind = err.kind(), error = %err, "request for an unknown path");
    err.into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({
            "Outputs": {},
            "Logs": [],
            "ReturnValue": null,
            "error": {
                "kind": "method_not_allowed",
                "message": "invocations are POST /<FunctionName>; readiness is GET /",
                "transient": false,
            }
        })),
    )
        .into_response()
}
