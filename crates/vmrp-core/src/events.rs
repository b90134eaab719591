//! Typed trigger events other than queue messages: the timer tick and VM change events.

use serde_json::Value;
use time::OffsetDateTime;

/// The timer trigger's `TimerInfo`, decoded leniently (PROTOCOL.md §3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct TimerEvent {
    pub is_past_due: bool,
    /// `ScheduleStatus.Last`; `None` when the status is null or the first run ever (0001-01-01).
    pub last: Option<OffsetDateTime>,
    /// `ScheduleStatus.Next` (≈ this occurrence).
    pub next: Option<OffsetDateTime>,
}

/// Which Event Grid schema delivered the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSchema {
    EventGrid,
    CloudEvents,
}

/// An ARM resource event, normalised from either schema (eventgrid/SCHEMA.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceEvent {
    pub schema: EventSchema,
    /// Unique event id (de-duplicates redeliveries).
    pub id: String,
    /// e.g. `Microsoft.Resources.ResourceWriteSuccess`.
    pub event_type: String,
    /// The ARM id the operation targeted (`data.resourceUri`, else `subject`).
    pub subject: String,
    pub event_time: Option<OffsetDateTime>,
    /// `data.operationName`, e.g. `Microsoft.Compute/virtualMachines/write`.
    pub operation_name: Option<String>,
    pub data: Value,
}
