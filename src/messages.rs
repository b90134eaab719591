//! The JSON messages on vmrp's queues (DESIGN §2): versioned (`"v": 1`), tagged by `"kind"`,
//! strict about unknown fields so a typo from another system is a clear error, not a silent default.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::azure::models::{ConsistencyMode, VirtualMachine};
use crate::azure::{Queue, ResourceId};
use crate::policy::DiskInfo;

/// The message schema version this build reads and writes.
pub const MESSAGE_VERSION: u64 = 1;

/// The largest message Service Bus Standard accepts: 256 KB ("Message size for a queue, topic
/// or subscription entity: Standard tier 256 KB",
/// https://learn.microsoft.com/azure/service-bus-messaging/service-bus-quotas). A send above it
/// is refused (403, "Quota exceeded or message too large",
/// https://learn.microsoft.com/rest/api/servicebus/send-message-to-queue).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The most a create's `listed` may take once encoded: what is left of [`MAX_MESSAGE_BYTES`]
/// after the other fields (ids, tick, regions: a few KB) with a wide margin. A VM whose listing
/// is larger (64 data disks with 50 long tags each) is sent without it and read by the handler.
pub const LISTED_MAX_BYTES: usize = 192 * 1024;

/// "A point for this VM now" (from the timer, OnVmChanged, or another system).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub vm: ResourceId,
    /// The schedule occurrence this point belongs to; names derive from it (DESIGN §3). A tick
    /// that is not an occurrence of the rule's schedule is an on-demand request ("a point now",
    /// the time it was asked for): accepted when at most 1 h old and Azure's spacing away from
    /// the rule's scheduled points, and named `rp-{tick}-od`; anything else, or a tick in the
    /// future, is refused with a reason (docs/lifecycle.md, "Scheduled and on-demand creates").
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    /// Policy rule name; when absent, the rule that matches the VM applies. A named rule must
    /// still select the VM (scopes, tags, `excludeTags`), or the create is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_mode: Option<ConsistencyMode>,
    /// Managed disk ids to exclude, on top of the rule's exclusions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_disks: Option<Vec<ResourceId>>,
    /// Regions to copy to once settled; when absent, the rule's copy regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<Vec<String>>,
    /// Retry number after a `Failed` point (0 = first try); names get `-r{n}`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: u32,
    /// How many times this request was put back after a transient refusal (429, 409 concurrent
    /// create, 5xx); part of the rescheduled message's id, not of any resource name.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// What the timer's listings showed of the VM when it planned this create. Optional (other
    /// senders leave it out): it spares the handler its VM, disk and collection reads, which
    /// would otherwise bound a large tick's pace (ARM reads: 250 + 25/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<Box<ListedVm>>,
}

/// The timer's view of one VM, carried in its create message. The handler trusts it only while
/// it is younger than `Tuning::listed_max_age`, and reads ARM again when a write based on it is
/// refused for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListedVm {
    /// When the listing was read (the timer run's `now`).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The VM as the VM listing returned it.
    pub vm: VirtualMachine,
    /// The VM's data disks as the disk listing showed them; a disk missing here is read alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskInfo>,
    /// The VM's local collection as the collection listing showed it; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<CollectionSeen>,
}

impl ListedVm {
    /// `Some(self)` when it fits in a create message ([`LISTED_MAX_BYTES`] encoded), else `None`:
    /// the create is sent without it and the handler reads ARM.
    pub fn within_message_budget(self) -> Option<Self> {
        let size = serde_json::to_vec(&self).map_or(usize::MAX, |v| v.len());
        (size <= LISTED_MAX_BYTES).then_some(self)
    }
}

/// What the collection listing showed of a VM's local collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CollectionSeen {
    /// It exists with this VM as its source and no orphan mark: nothing to ensure.
    Ready,
    /// It does not exist: create it without reading it first.
    Missing,
}

/// "Copy this restore point to that region."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyRequest {
    /// The source (local) restore point id.
    pub source: ResourceId,
    pub target_region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource_group: Option<String>,
    /// The VM the source belongs to; derived from the source collection when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<ResourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Retry number after a `Failed` copy (0 = first try).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: u32,
    /// How many times this request was put back (transient refusal, or an earlier copy into the
    /// same target still replicating); part of the rescheduled message's id only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

/// Whether a polled point is a local point or a cross-region copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Local,
    Copy,
}

/// "Look at this restore point again" — scheduled by create/copy and by itself with backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollRequest {
    /// The restore point being watched.
    pub target: ResourceId,
    pub role: Role,
    /// Poll number, 1 for the first poll.
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Give up (and report) after this moment.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    pub vm: ResourceId,
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The create/copy retry number that produced `target`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: u32,
    /// Local points: regions to copy to once settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<String>,
    /// Copies: the source restore point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ResourceId>,
    /// Copies: the region copied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_region: Option<String>,
}

impl CreateRequest {
    /// The create a scheduled tick asks for: the rule's own settings, first try.
    pub fn for_tick(vm: ResourceId, tick: OffsetDateTime, rule: &str) -> Self {
        Self {
            vm,
            tick,
            rule: Some(rule.to_string()),
            consistency_mode: None,
            exclude_disks: None,
            copy_to: None,
            retry: 0,
            attempt: 0,
            listed: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Any message vmrp reads.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueMessage {
    Create(CreateRequest),
    Copy(CopyRequest),
    Poll(PollRequest),
}

/// Why a message body is not one we can process. Each names what was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    #[error("message body must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("message has no \"v\" field (expected \"v\": {MESSAGE_VERSION})")]
    MissingVersion,
    #[error(
        "message version \"v\": {0} is not supported (this build reads \"v\": {MESSAGE_VERSION})"
    )]
    UnsupportedVersion(String),
    #[error("message has no \"kind\" field (expected one of \"create\", \"copy\", \"poll\")")]
    MissingKind,
    #[error("unknown message kind {0:?} (expected one of \"create\", \"copy\", \"poll\")")]
    UnknownKind(String),
    #[error("a {got:?} message arrived on queue {queue}, which takes {expected:?} messages")]
    WrongQueue {
        queue: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("invalid {kind} message: {detail}")]
    Invalid { kind: &'static str, detail: String },
}

impl QueueMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Copy(_) => "copy",
            Self::Poll(_) => "poll",
        }
    }

    /// The queue this kind of message belongs on.
    pub fn queue(&self) -> Queue {
        match self {
            Self::Create(_) => Queue::Create,
            Self::Copy(_) => Queue::Copy,
            Self::Poll(_) => Queue::Poll,
        }
    }

    /// Parses a message body (the text Service Bus carried).
    pub fn decode(text: &str) -> Result<Self, MessageError> {
        // A UTF-8 byte-order mark is not JSON, but senders (PowerShell, .NET encoders) add one
        // before valid JSON: it is skipped, not a reason to dead-letter the message.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value =
            serde_json::from_str(text).map_err(|e| MessageError::NotJson(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(MessageError::NotObject(json_type(&value)));
        };
        match map.remove("v") {
            None => return Err(MessageError::MissingVersion),
            Some(Value::Number(n)) if n.as_u64() == Some(MESSAGE_VERSION) => {}
            Some(other) => return Err(MessageError::UnsupportedVersion(other.to_string())),
        }
        let kind = match map.remove("kind") {
            None => return Err(MessageError::MissingKind),
            Some(Value::String(k)) => k,
            Some(other) => return Err(MessageError::UnknownKind(other.to_string())),
        };
        match kind.as_str() {
            "create" => from_map("create", map).map(Self::Create),
            "copy" => from_map("copy", map).map(Self::Copy),
            "poll" => from_map("poll", map).map(Self::Poll),
            _ => Err(MessageError::UnknownKind(kind)),
        }
    }

    /// Decodes and checks the message belongs on `queue`.
    pub fn decode_for(queue: Queue, text: &str) -> Result<Self, MessageError> {
        let msg = Self::decode(text)?;
        if msg.queue() != queue {
            let expected = match queue {
                Queue::Create => "create",
                Queue::Copy => "copy",
                Queue::Poll => "poll",
            };
            return Err(MessageError::WrongQueue {
                queue: queue.name(),
                expected,
                got: msg.kind(),
            });
        }
        Ok(msg)
    }

    /// The JSON text to send.
    pub fn encode(&self) -> String {
        let body = match self {
            Self::Create(m) => serde_json::to_value(m),
            Self::Copy(m) => serde_json::to_value(m),
            Self::Poll(m) => serde_json::to_value(m),
        }
        // Invariant: the fields are strings, numbers, ids and times; a time is either decoded
        // from RFC 3339 (years 0000–9999) or a later instant saturated within `time`'s range,
        // all of which RFC 3339 formats.
        .expect("message types serialise");
        let mut out = Map::new();
        out.insert("v".into(), Value::from(MESSAGE_VERSION));
        out.insert("kind".into(), Value::from(self.kind()));
        if let Value::Object(fields) = body {
            out.extend(fields);
        }
        Value::Object(out).to_string()
    }
}

fn from_map<T: DeserializeOwned>(
    kind: &'static str,
    map: Map<String, Value>,
) -> Result<T, MessageError> {
    serde_json::from_value(Value::Object(map)).map_err(|e| MessageError::Invalid {
        kind,
        detail: e.to_string(),
    })
}

/// "a string", "an object", …: a JSON value's type, for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn create() -> CreateRequest {
        CreateRequest {
            vm:
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
                    .parse()
                    .unwrap(),
            tick: datetime!(2026-11-25 03:00 UTC),
            rule: Some("prod".into()),
            consistency_mode: None,
            exclude_disks: None,
            copy_to: Some(vec!["westus2".into()]),
            retry: 0,
            attempt: 0,
            listed: None,
        }
    }

    #[test]
    fn round_trips_with_version_and_kind() {
        let msg = QueueMessage::Create(create());
        let text = msg.encode();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], "create");
        assert_eq!(v["tick"], "2026-11-25T03:00:00Z");
        assert_eq!(QueueMessage::decode(&text).unwrap(), msg);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let cases = [
            ("not json", "not JSON"),
            ("[1]", "must be a JSON object, got an array"),
            (r#"{"kind":"create"}"#, "no \"v\" field"),
            (r#"{"v":2,"kind":"create"}"#, "\"v\": 2 is not supported"),
            (r#"{"v":1}"#, "no \"kind\" field"),
            (
                r#"{"v":1,"kind":"explode"}"#,
                "unknown message kind \"explode\"",
            ),
            (
                r#"{"v":1,"kind":"create","vm":"nope","tick":"2026-11-25T03:00:00Z"}"#,
                "invalid ARM resource id",
            ),
            (
                r#"{"v":1,"kind":"create","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"yesterday"}"#,
                "invalid create message",
            ),
            (
                r#"{"v":1,"kind":"create","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z","exludeDisks":[]}"#,
                "unknown field `exludeDisks`",
            ),
        ];
        for (input, want) in cases {
            let err = QueueMessage::decode(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn a_byte_order_mark_before_json_is_accepted() {
        // Was "message body is not JSON", then 10 deliveries into the dead-letter queue.
        let text = QueueMessage::Create(create()).encode();
        let with_bom = format!("\u{feff}{text}");
        assert_eq!(
            QueueMessage::decode(&with_bom).unwrap(),
            QueueMessage::Create(create())
        );
        // Only one, and only in front.
        assert!(QueueMessage::decode(&format!("\u{feff}\u{feff}{text}")).is_err());
    }

    #[test]
    fn wrong_queue_is_refused() {
        let text = QueueMessage::Create(create()).encode();
        let err = QueueMessage::decode_for(Queue::Poll, &text).unwrap_err();
        assert!(
            matches!(err, MessageError::WrongQueue { got: "create", .. }),
            "{err}"
        );
    }
}
