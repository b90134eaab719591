//! The JSON messages on vmrp's queues (docs/lifecycle.md): versioned (`"v": 1`), tagged by `"kind"`.
//!
//! Schema evolution: a field this build does not know is accepted and logged at Warning, once
//! per field (a typo from another system stays visible, and a message written by a newer build
//! during a rolling deploy or a rollback is still processed instead of burning its deliveries);
//! a message of a newer major version (`"v": 2`) is refused with a permanent reason, since its
//! meaning may have changed. New fields are therefore optional (`#[serde(default)]`).

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
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    pub vm: ResourceId,
    /// The schedule occurrence this point belongs to; names derive from it (docs/architecture.md, "Idempotency"). A tick
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
    /// How many of `attempt`'s put-backs were the handler's own pacing (the subscription's
    /// budget low, as ARM last reported it), not a refusal: they do not count toward the
    /// reschedule budget or its backoff, since a busy subscription is not a failing create (the
    /// tick's supersede cut-off bounds them). An older handler ignores the field and counts
    /// every put-back, as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paced: u32,
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
#[serde(rename_all = "camelCase")]
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
    /// When the plan scheduled this create (its message's `ScheduledEnqueueTimeUtc`): the
    /// plan's pacing holds only while creates run at their slots. One handled well after its
    /// slot (handlers catching up a backlog) runs together with the creates planned after it,
    /// so it paces itself from ARM's readings like any other create. Absent: not planned.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub planned_for: Option<OffsetDateTime>,
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
    /// Non-zero on a prune follow-up: `target` has settled (and was reported), but its pruning
    /// was cut short while its failed predecessor was still there; this message only prunes
    /// again (the n-th follow-up). A handler that predates the field polls the point as usual:
    /// it reports the settle again and re-sends copies under their deterministic ids.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prune_again: u32,
}

/// "Plan this subscription for this tick": one per subscription of the policy's scopes, sent by
/// the timer (ScheduleRestorePoints) to `rp-plan` under a deterministic id (subscription and
/// tick), and handled by PlanRestorePoints, which lists and plans that subscription alone and
/// sends its creates (docs/architecture.md, "Fan-out per subscription").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRequest {
    /// The subscription id (lowercase); the policy's subscription, resource group and VM scopes
    /// inside it are planned.
    pub subscription: String,
    /// The timer tick planned: an occurrence of `VMRP_SCHEDULE`.
    #[serde(with = "time::serde::rfc3339")]
    pub tick: OffsetDateTime,
    /// 0 for the timer's message; n for the n-th re-plan after a listing failed transiently
    /// (an ARM outage during the tick), each under its own id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
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
            paced: 0,
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
    Plan(PlanRequest),
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
    #[error(
        "message version \"v\": {0} is newer than this build reads (\"v\": {MESSAGE_VERSION}); \
         it was written by a newer vmrp and is not retried: deploy that version, then resend it"
    )]
    NewerVersion(u64),
    #[error(
        "message has no \"kind\" field (expected one of \"create\", \"copy\", \"poll\", \"plan\")"
    )]
    MissingKind,
    #[error(
        "unknown message kind {0:?} (expected one of \"create\", \"copy\", \"poll\", \"plan\")"
    )]
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
            Self::Plan(_) => "plan",
        }
    }

    /// The queue this kind of message belongs on.
    pub fn queue(&self) -> Queue {
        match self {
            Self::Create(_) => Queue::Create,
            Self::Copy(_) => Queue::Copy,
            Self::Poll(_) => Queue::Poll,
            Self::Plan(_) => Queue::Plan,
        }
    }

    /// Parses a message body (the text Service Bus carried); each field this build does not
    /// know is logged at Warning and otherwise ignored.
    pub fn decode(text: &str) -> Result<Self, MessageError> {
        let (message, unknown) = Self::decode_lenient(text)?;
        for field in &unknown {
            tracing::warn!(kind = message.kind(), field = %field,
                "message field unknown to this build ignored (a newer sender, or a typo)");
        }
        Ok(message)
    }

    /// Parses a message body and names the fields this build does not know (`listed.x` for
    /// nested ones), without logging.
    pub fn decode_lenient(text: &str) -> Result<(Self, Vec<String>), MessageError> {
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
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v > MESSAGE_VERSION) => {
                return Err(MessageError::NewerVersion(n.as_u64().unwrap_or_default()))
            }
            Some(other) => return Err(MessageError::UnsupportedVersion(other.to_string())),
        }
        let kind = match map.remove("kind") {
            None => return Err(MessageError::MissingKind),
            Some(Value::String(k)) => k,
            Some(other) => return Err(MessageError::UnknownKind(other.to_string())),
        };
        let mut unknown = Vec::new();
        let message = match kind.as_str() {
            "create" => {
                unknown_fields::<CreateRequest>(&map, "", &mut unknown);
                if let Some(Value::Object(listed)) = map.get("listed") {
                    unknown_fields::<ListedVm>(listed, "listed.", &mut unknown);
                    if let Some(Value::Array(disks)) = listed.get("disks") {
                        for (i, disk) in disks.iter().enumerate() {
                            if let Value::Object(disk) = disk {
                                let prefix = format!("listed.disks[{i}].");
                                unknown_fields::<DiskInfo>(disk, &prefix, &mut unknown);
                            }
                        }
                    }
                }
                from_map("create", map).map(Self::Create)
            }
            "copy" => {
                unknown_fields::<CopyRequest>(&map, "", &mut unknown);
                from_map("copy", map).map(Self::Copy)
            }
            "poll" => {
                unknown_fields::<PollRequest>(&map, "", &mut unknown);
                from_map("poll", map).map(Self::Poll)
            }
            "plan" => {
                unknown_fields::<PlanRequest>(&map, "", &mut unknown);
                from_map("plan", map).map(Self::Plan)
            }
            _ => Err(MessageError::UnknownKind(kind)),
        }?;
        Ok((message, unknown))
    }

    /// Decodes and checks the message belongs on `queue`.
    pub fn decode_for(queue: Queue, text: &str) -> Result<Self, MessageError> {
        let msg = Self::decode(text)?;
        if msg.queue() != queue {
            let expected = match queue {
                Queue::Create => "create",
                Queue::Copy => "copy",
                Queue::Poll => "poll",
                Queue::Plan => "plan",
                // vmrp never consumes its parking queue; nothing belongs there as work.
                Queue::Failed => "no",
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
            Self::Plan(m) => serde_json::to_value(m),
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

/// Appends `prefix` + each key of `map` that `T` does not declare.
fn unknown_fields<T: DeserializeOwned>(
    map: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let known = field_names::<T>();
    out.extend(
        map.keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| format!("{prefix}{k}")),
    );
}

/// The field names a derived `Deserialize` struct declares (after `rename_all`), asked from
/// serde itself so the list cannot drift from the struct: a probe deserializer records the
/// `fields` that `deserialize_struct` is called with and stops there.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field names recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// "a string", "an object", …: a JSON value's type, for error messages.
pub fn json_type(v: &Value) -> &'static str {
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
            paced: 0,
            listed: None,
        }
    }

    /// The timer's plan message round-trips under its own kind (`decode_lenient`'s "plan" arm).
    #[test]
    fn a_plan_message_round_trips() {
        let msg = QueueMessage::Plan(PlanRequest {
            subscription: "00000000-0000-0000-0000-000000000001".into(),
            tick: datetime!(2026-11-25 04:00 UTC),
            attempt: 2,
        });
        let text = msg.encode();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "plan");
        assert_eq!(QueueMessage::decode(&text).unwrap(), msg);
    }

    /// Service Bus Standard takes 256 KB per message (the quotas page); a create keeps its
    /// listing up to 192 KiB encoded, and with a listing just under that the whole message
    /// still fits. A listing just over it is dropped (the handler reads ARM instead).
    #[test]
    fn a_listing_is_kept_only_within_the_message_budget() {
        assert_eq!(MAX_MESSAGE_BYTES, 262_144);
        assert_eq!(LISTED_MAX_BYTES, 196_608);
        let listed_of = |tag_bytes: usize| {
            let vm = crate::azure::models::VirtualMachine {
                tags: Some(
                    [("note".to_string(), "x".repeat(tag_bytes))]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            };
            ListedVm {
                at: datetime!(2026-11-25 03:00 UTC),
                vm,
                disks: Vec::new(),
                collection: None,
                planned_for: None,
            }
        };
        let small = listed_of(10).within_message_budget();
        assert!(small.is_some());
        let under = listed_of(LISTED_MAX_BYTES - 200).within_message_budget();
        let under = under.expect("a listing just under the budget is kept");
        let mut req = create();
        req.listed = Some(Box::new(under));
        assert!(QueueMessage::Create(req).encode().len() <= MAX_MESSAGE_BYTES);
        assert!(listed_of(LISTED_MAX_BYTES)
            .within_message_budget()
            .is_none());
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
            (
                r#"{"v":2,"kind":"create"}"#,
                "\"v\": 2 is newer than this build reads",
            ),
            (r#"{"v":0,"kind":"create"}"#, "\"v\": 0 is not supported"),
            (
                r#"{"v":"1","kind":"create"}"#,
                "\"v\": \"1\" is not supported",
            ),
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
        ];
        for (input, want) in cases {
            let err = QueueMessage::decode(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    /// The probe asks serde for the declared names; they must be exactly what a fully
    /// populated message writes (so no known field is ever logged as unknown).
    #[test]
    fn declared_field_names_match_what_is_written() {
        fn keys(v: Value) -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        }
        fn names<T: DeserializeOwned>() -> Vec<String> {
            let mut n: Vec<String> = field_names::<T>().iter().map(|s| s.to_string()).collect();
            n.sort();
            n
        }
        let vm: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
                .parse()
                .unwrap();
        let disk = DiskInfo {
            id: vm.clone(),
            tags: [("a".to_string(), "b".to_string())].into_iter().collect(),
            max_shares: Some(2),
            sku: Some("Premium_LRS".into()),
        };
        let listed = ListedVm {
            at: datetime!(2026-11-25 03:00 UTC),
            vm: VirtualMachine::default(),
            disks: vec![disk.clone()],
            collection: Some(CollectionSeen::Ready),
            planned_for: Some(datetime!(2026-11-25 03:00:30 UTC)),
        };
        let full_create = CreateRequest {
            consistency_mode: Some(ConsistencyMode::CrashConsistent),
            exclude_disks: Some(vec![vm.clone()]),
            retry: 1,
            attempt: 1,
            paced: 1,
            listed: Some(Box::new(listed.clone())),
            ..create()
        };
        let copy = CopyRequest {
            source: vm.clone(),
            target_region: "westus2".into(),
            target_resource_group: Some("rg".into()),
            vm: Some(vm.clone()),
            rule: Some("prod".into()),
            retry: 1,
            attempt: 1,
        };
        let poll = PollRequest {
            target: vm.clone(),
            role: Role::Copy,
            attempt: 1,
            first_seen: datetime!(2026-11-25 03:00 UTC),
            deadline: datetime!(2026-11-25 03:00 UTC),
            vm: vm.clone(),
            tick: datetime!(2026-11-25 03:00 UTC),
            rule: Some("prod".into()),
            retry: 1,
            copy_to: vec!["westus2".into()],
            source: Some(vm.clone()),
            target_region: Some("westus2".into()),
            prune_again: 1,
        };
        let cases = [
            (
                keys(serde_json::to_value(&full_create).unwrap()),
                names::<CreateRequest>(),
            ),
            (
                keys(serde_json::to_value(&listed).unwrap()),
                names::<ListedVm>(),
            ),
            (
                keys(serde_json::to_value(&disk).unwrap()),
                names::<DiskInfo>(),
            ),
            (
                keys(serde_json::to_value(&copy).unwrap()),
                names::<CopyRequest>(),
            ),
            (
                keys(serde_json::to_value(&poll).unwrap()),
                names::<PollRequest>(),
            ),
        ];
        for (written, declared) in cases {
            assert_eq!(written, declared);
        }
    }

    /// New on old: a message from another system (or a newer vmrp) with a field this build
    /// does not know is processed, and the field is named for the Warning log.
    #[test]
    fn unknown_fields_are_accepted_and_named() {
        let mut v: Value = serde_json::from_str(&QueueMessage::Create(create()).encode()).unwrap();
        v["requestedBy"] = "ops-portal".into();
        v["exludeDisks"] = Value::Array(vec![]);
        let (msg, unknown) = QueueMessage::decode_lenient(&v.to_string()).unwrap();
        assert_eq!(msg, QueueMessage::Create(create()));
        assert_eq!(unknown, vec!["exludeDisks", "requestedBy"]);

        let nested = r#"{"v":1,"kind":"create","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z","listed":{"at":"2026-11-25T03:00:00Z","vm":{},"seenBy":"x","disks":[{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d","encrypted":true}]}}"#;
        let (_, unknown) = QueueMessage::decode_lenient(nested).unwrap();
        assert_eq!(unknown, vec!["listed.seenBy", "listed.disks[0].encrypted"]);

        let poll = r#"{"v":1,"kind":"poll","target":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/p","role":"local","attempt":2,"firstSeen":"2026-11-25T03:00:00Z","deadline":"2026-11-25T05:00:00Z","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z","chain":"abc"}"#;
        let (msg, unknown) = QueueMessage::decode_lenient(poll).unwrap();
        assert_eq!(msg.kind(), "poll");
        assert_eq!(unknown, vec!["chain"]);
    }

    /// Old on new: v1 messages exactly as earlier builds wrote them still decode, with no
    /// field reported unknown.
    #[test]
    fn messages_written_by_earlier_builds_still_decode() {
        let old = [
            r#"{"v":1,"kind":"create","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z","rule":"prod","copyTo":["westus2"]}"#,
            r#"{"v":1,"kind":"copy","source":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/rpc-vm1/restorePoints/rp-20261125T0300Z","targetRegion":"westus2","attempt":3}"#,
            r#"{"v":1,"kind":"poll","target":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/rpc-vm1/restorePoints/rp-20261125T0300Z","role":"local","attempt":1,"firstSeen":"2026-11-25T03:00:00Z","deadline":"2026-11-25T05:00:00Z","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z","rule":"prod","copyTo":["westus2"]}"#,
        ];
        for text in old {
            let (msg, unknown) = QueueMessage::decode_lenient(text).unwrap();
            assert!(unknown.is_empty(), "{text}: {unknown:?}");
            let again: Value = serde_json::from_str(&msg.encode()).unwrap();
            assert_eq!(
                again,
                serde_json::from_str::<Value>(text).unwrap(),
                "round trip"
            );
        }
    }

    #[test]
    fn a_newer_major_version_is_refused_for_good() {
        let text = r#"{"v":2,"kind":"create","vm":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"2026-11-25T03:00:00Z"}"#;
        let err = QueueMessage::decode(text).unwrap_err();
        assert_eq!(err, MessageError::NewerVersion(2));
        let why = err.to_string();
        assert!(
            why.contains("newer vmrp") && why.contains("not retried"),
            "{why}"
        );
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
