//! The handler contract, "lambda_runtime style": a typed event plus a context in, a typed
//! [`Outcome`] out. Only `host/` knows the Functions envelope that carries these.

use serde::Serialize;
use time::OffsetDateTime;

/// What every invocation knows besides its event.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// `X-Azure-Functions-InvocationId` (or a generated id outside the host).
    pub invocation_id: String,
    /// The function's name, e.g. `PollRestorePoint`.
    pub function: String,
    /// The invocation's "now": the host's `sys.UtcNow`, or a virtual clock. Handlers never read
    /// the wall clock (docs/architecture.md).
    pub now: OffsetDateTime,
    /// Service Bus `DeliveryCount` (1 on first delivery); 1 for other triggers.
    pub delivery_count: u32,
    /// Service Bus `MessageId`, when the trigger is a queue.
    pub message_id: Option<String>,
}

impl Context {
    /// A context for direct calls (tests, CLI).
    pub fn new(function: &str, now: OffsetDateTime) -> Self {
        Self {
            invocation_id: uuid::Uuid::new_v4().to_string(),
            function: function.to_string(),
            now,
            delivery_count: 1,
            message_id: None,
        }
    }
}

/// A typed event and its context.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation<T> {
    pub event: T,
    pub context: Context,
}

impl<T> Invocation<T> {
    pub fn new(event: T, context: Context) -> Self {
        Self { event, context }
    }
}

/// How an invocation ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// The work was done (or started, with a poll scheduled).
    Done,
    /// Not done yet: a retry or the next poll is scheduled.
    Rescheduled,
    /// Nothing to do: a replay, an ignored event, a vanished VM.
    Skipped,
    /// A permanent failure, reported loudly and not retried (the invocation itself succeeds).
    Reported,
}

/// A message the invocation put on a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub queue: &'static str,
    pub message_id: String,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<OffsetDateTime>,
}

/// The typed result of a successful invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: Status,
    /// One line a person can read in the log.
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<Sent>,
    /// The timer's VMs that do not fit before the tick's supersede cut-off and get no point this
    /// tick (`Plan::left_out`), said before the tick runs: a record a reader of the outcome (the
    /// host simulation's report) can match, not only a log line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    /// RunRestoreDrills: each drill's result (the `vmrp::drill` events' content), so a reader of
    /// the outcome (`vmrp local --drill` through the host) sees every drill, not only counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<crate::policy::drills::DrillResult>,
}

/// A VM the timer's plan left out of its tick, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    pub vm: String,
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    pub reason: String,
}

impl Outcome {
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Self {
            status,
            summary: summary.into(),
            sent: Vec::new(),
            left_out: Vec::new(),
            drills: Vec::new(),
        }
    }
    pub fn with_drills(mut self, drills: Vec<crate::policy::drills::DrillResult>) -> Self {
        self.drills = drills;
        self
    }
    pub fn with_sent(mut self, sent: Vec<Sent>) -> Self {
        self.sent = sent;
        self
    }
    pub fn with_left_out(mut self, left_out: Vec<LeftOut>) -> Self {
        self.left_out = left_out;
        self
    }
}
