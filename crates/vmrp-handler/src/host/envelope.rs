//! The host's invocation envelope `{"Data": {...}, "Metadata": {...}}` (PROTOCOL.md §2–§3) and
//! the response envelope `{"Outputs", "Logs", "ReturnValue"}` (§4).
//!
//! Decoding is tolerant where hosts have differed (double-encoded vs single-encoded strings,
//! stringified vs numeric counts, date formats) and strict where a wrong value means the
//! invocation cannot be understood: every error names the field and what was expected.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::events::{EventSchema, ResourceEvent, TimerEvent};

/// Why an envelope (or one of its bindings) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct EnvelopeError {
    /// Where in the envelope, e.g. `Metadata.DeliveryCount` or `Data.msg`.
    pub field: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

impl EnvelopeError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn expected(field: impl Into<String>, expected: &str, got: &Value) -> Self {
        Self::new(field, format!("expected {expected}, got {}", describe(got)))
    }
}

/// A parsed invocation request: the two top-level objects. `metadata` holds the members the
/// decoders read (`sys`, `DeliveryCount`, `MessageId`); the host's other metadata is skipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    pub data: Map<String, Value>,
    pub metadata: Map<String, Value>,
}

/// What a Service Bus trigger delivered: the body exactly as the sender wrote it, plus the
/// message facts handlers need.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusTrigger {
    pub body: String,
    /// `Metadata.DeliveryCount`; 1 when the host did not send one.
    pub delivery_count: u32,
    pub message_id: Option<String>,
}

impl Envelope {
    /// Parses the request body. `Data` is required (every trigger has one input); `Metadata` may
    /// be absent (then `sys.UtcNow` is reported missing by [`Envelope::utc_now`]).
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        // A UTF-8 byte-order mark before the JSON is skipped (a proxy or test tool may add one).
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // Fast path for a well-formed envelope: `Metadata` carries a dozen members vmrp never
        // reads (and, for JSON bodies, a copy of the message's fields), so only
        // [`METADATA_READ`] are built as values; the rest is syntax-checked and skipped.
        // Anything the fast path does not accept goes through the full parse below, which
        // produces the errors.
        if let Ok(text) = std::str::from_utf8(body) {
            if let Ok(FastTop(top)) = serde_json::from_str::<FastTop>(text) {
                return Self::from_top(top);
            }
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            EnvelopeError::new(
                "body",
                format!("expected the host's JSON envelope {{\"Data\":{{...}},\"Metadata\":{{...}}}}, but the body is not JSON ({e})"),
            )
        })?;
        let Value::Object(top) = value else {
            return Err(EnvelopeError::expected(
                "body",
                "a JSON object {\"Data\":{...},\"Metadata\":{...}}",
                &value,
            ));
        };
        Self::from_top(top)
    }

    fn from_top(mut top: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let data = match take_ci(&mut top, "Data") {
            None => {
                return Err(EnvelopeError::new(
                    "Data",
                    "missing: the envelope must carry the trigger input in \"Data\"",
                ))
            }
            Some(v) => into_object("Data", v)?,
        };
        let metadata = match take_ci(&mut top, "Metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => into_object("Metadata", v)?,
        };
        Ok(Self { data, metadata })
    }

    /// `Metadata.sys.UtcNow`: the invocation's "now". Required: handlers never read the wall clock.
    pub fn utc_now(&self) -> Result<OffsetDateTime, EnvelopeError> {
        let decoded;
        let sys = match get_ci(&self.metadata, "sys") {
            None | Some(Value::Null) => return Err(EnvelopeError::new(
                "Metadata.sys",
                "missing: expected {\"UtcNow\": \"<RFC 3339 time>\", ...} (the invocation's clock)",
            )),
            Some(Value::Object(sys)) => sys,
            Some(v) => {
                decoded = into_object("Metadata.sys", v.clone())?;
                &decoded
            }
        };
        match get_ci(sys, "UtcNow") {
            None | Some(Value::Null) => Err(EnvelopeError::new(
                "Metadata.sys.UtcNow",
                "missing: expected an RFC 3339 time such as \"2024-10-25T03:00:05.4871236Z\"",
            )),
            Some(Value::String(s)) => parse_host_time(s).ok_or_else(|| {
                EnvelopeError::new(
                    "Metadata.sys.UtcNow",
                    format!(
                        "expected an RFC 3339 time such as \"2024-10-25T03:00:05.4871236Z\", got {}",
                        quote_preview(s)
                    ),
                )
            }),
            Some(other) => Err(EnvelopeError::expected(
                "Metadata.sys.UtcNow",
                "an RFC 3339 time string",
                other,
            )),
        }
    }

    /// The Service Bus trigger bound as `binding` (vmrp uses `msg`).
    pub fn service_bus(&self, binding: &str) -> Result<ServiceBusTrigger, EnvelopeError> {
        let field = format!("Data.{binding}");
        let raw = self.binding(binding, "the Service Bus trigger")?;
        let body = match raw {
            // The host JSON-encodes the body string once more (§2.1): "\"{\\\"v\\\":1}\"".
            // Old hosts sent the text once-encoded; a body that is itself JSON text then parses
            // as an object/array/number and is taken as is.
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::String(inner)) => inner,
                _ => s.clone(),
            },
            // A host that bound the body as a POCO/JObject sends the object itself.
            Value::Object(_) => raw.to_string(),
            other => {
                return Err(EnvelopeError::expected(
                    field,
                    "a JSON string holding the message body (or an object)",
                    other,
                ))
            }
        };
        Ok(ServiceBusTrigger {
            body,
            delivery_count: self.delivery_count()?,
            message_id: self.message_id()?,
        })
    }

    /// `Metadata.DeliveryCount`: `"1"` (current hosts stringify numbers) or `1`.
    pub fn delivery_count(&self) -> Result<u32, EnvelopeError> {
        const FIELD: &str = "Metadata.DeliveryCount";
        const EXPECTED: &str =
            "a delivery count (a whole number ≥ 0, or a string holding one such as \"1\")";
        match get_ci(&self.metadata, "DeliveryCount") {
            None | Some(Value::Null) => Ok(1),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| EnvelopeError::expected(FIELD, EXPECTED, &Value::Number(n.clone()))),
            Some(Value::String(s)) => unquote(s).trim().parse::<u32>().map_err(|_| {
                EnvelopeError::new(
                    FIELD,
                    format!("expected {EXPECTED}, got {}", quote_preview(s)),
                )
            }),
            Some(other) => Err(EnvelopeError::expected(FIELD, EXPECTED, other)),
        }
    }

    /// `Metadata.MessageId`: a double-encoded string (`"\"abc\""`), or once-encoded on old hosts.
    pub fn message_id(&self) -> Result<Option<String>, EnvelopeError> {
        match get_ci(&self.metadata, "MessageId") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(unquote(s))),
            Some(other) => Err(EnvelopeError::expected(
                "Metadata.MessageId",
                "a string (the Service Bus message id)",
                other,
            )),
        }
    }

    /// The timer trigger bound as `binding` (vmrp uses `timer`): `TimerInfo` (§3.1).
    pub fn timer(&self, binding: &str) -> Result<TimerEvent, EnvelopeError> {
        let field = format!("Data.{binding}");
        let info = into_object(&field, self.binding(binding, "the timer trigger")?.clone())?;
        let is_past_due = match get_ci(&info, "IsPastDue") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if unquote(s).eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if unquote(s).eq_ignore_ascii_case("false") => false,
            Some(other) => {
                return Err(EnvelopeError::expected(
                    format!("{field}.IsPastDue"),
                    "true or false",
                    other,
                ))
            }
        };
        let (last, next) = match get_ci(&info, "ScheduleStatus") {
            // Null when useMonitor is false or the schedule is sub-minute.
            None | Some(Value::Null) => (None, None),
            Some(v) => {
                let status_field = format!("{field}.ScheduleStatus");
                let status = into_object(&status_field, v.clone())?;
                (
                    timer_date(&status, "Last", &status_field)?,
                    timer_date(&status, "Next", &status_field)?,
                )
            }
        };
        Ok(TimerEvent {
            is_past_due,
            last,
            next,
        })
    }

    /// The Event Grid trigger bound as `binding` (vmrp uses `eventGridEvent`), in either the
    /// Event Grid or the CloudEvents 1.0 schema (eventgrid/SCHEMA.md).
    pub fn event_grid(&self, binding: &str) -> Result<ResourceEvent, EnvelopeError> {
        let field = format!("Data.{binding}");
        let event = into_object(
            &field,
            self.binding(binding, "the Event Grid trigger")?.clone(),
        )?;
        // `specversion` marks CloudEvents; one Microsoft sample spells it `specVersion`.
        let schema = if get_ci(&event, "specversion").is_some() {
            EventSchema::CloudEvents
        } else if get_ci(&event, "eventType").is_some() {
            EventSchema::EventGrid
        } else {
            return Err(EnvelopeError::new(
                field,
                "expected an Event Grid event (with \"eventType\") or a CloudEvent (with \"specversion\"), found neither",
            ));
        };
        let (type_key, time_key) = match schema {
            EventSchema::EventGrid => ("eventType", "eventTime"),
            EventSchema::CloudEvents => ("type", "time"),
        };
        let id = required_string(&event, "id", &field)?;
        let event_type = required_string(&event, type_key, &field)?;
        let event_time = match get_ci(&event, time_key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_host_time(s).ok_or_else(|| {
                EnvelopeError::new(
                    format!("{field}.{time_key}"),
                    format!("expected an RFC 3339 time, got {}", quote_preview(s)),
                )
            })?),
            Some(other) => {
                return Err(EnvelopeError::expected(
                    format!("{field}.{time_key}"),
                    "an RFC 3339 time string",
                    other,
                ))
            }
        };
        let data = get_ci(&event, "data").cloned().unwrap_or(Value::Null);
        let data_string = |key: &str| {
            data.as_object()
                .and_then(|d| get_ci(d, key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let subject = data_string("resourceUri")
            .or_else(|| {
                get_ci(&event, "subject")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                EnvelopeError::new(
                    field.clone(),
                    "expected the ARM id of the changed resource in \"data.resourceUri\" or \"subject\", found neither",
                )
            })?;
        let operation_name = data_string("operationName");
        Ok(ResourceEvent {
            schema,
            id,
            event_type,
            subject,
            event_time,
            operation_name,
            data,
        })
    }

    fn binding(&self, name: &str, what: &str) -> Result<&Value, EnvelopeError> {
        match get_ci(&self.data, name) {
            Some(Value::Null) | None => {
                let found: Vec<&str> = self.data.keys().map(String::as_str).collect();
                Err(EnvelopeError::new(
                    format!("Data.{name}"),
                    format!(
                        "missing: expected {what} input bound as \"{name}\" in function.json, found bindings {found:?}"
                    ),
                ))
            }
            Some(v) => Ok(v),
        }
    }
}

/// The `Metadata` members the decoders read (matched ASCII case-insensitively, like
/// [`get_ci`]): `sys` ([`Envelope::utc_now`]), `DeliveryCount`, `MessageId`.
const METADATA_READ: [&str; 3] = ["sys", "DeliveryCount", "MessageId"];

/// The envelope's top-level object, with `Metadata` (any case) cut down to [`METADATA_READ`].
/// Fails on anything else (not an object, a `Metadata` that is not an object or null), which
/// sends [`Envelope::parse`] down the full parse.
struct FastTop(Map<String, Value>);

impl<'de> Deserialize<'de> for FastTop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = FastTop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<FastTop, A::Error> {
                let mut top = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value = if key.eq_ignore_ascii_case("Metadata") {
                        access.next_value::<ReadMetadata>()?.0
                    } else {
                        access.next_value::<Value>()?
                    };
                    top.insert(key, value);
                }
                Ok(FastTop(top))
            }
        }
        deserializer.deserialize_map(TopVisitor)
    }
}

/// `Metadata` as an object holding only [`METADATA_READ`], or null.
struct ReadMetadata(Value);

impl<'de> Deserialize<'de> for ReadMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = ReadMetadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ReadMetadata, E> {
                Ok(ReadMetadata(Value::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<ReadMetadata, A::Error> {
                let mut kept = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if METADATA_READ.iter().any(|k| key.eq_ignore_ascii_case(k)) {
                        let value = access.next_value::<Value>()?;
                        kept.insert(key, value);
                    } else {
                        access.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ReadMetadata(Value::Object(kept)))
            }
        }
        deserializer.deserialize_any(MetadataVisitor)
    }
}

/// The response envelope the host reads (PROTOCOL §4.1). Always serialised with all three keys,
/// so the body is never empty (an empty 2xx body hangs the invocation, §4.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
    /// Only on failures; the host ignores unknown keys, people reading captures do not.
    #[serde(rename = "error", skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` member of a failed invocation's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub kind: &'static str,
    pub message: String,
    pub transient: bool,
}

/// Parses the date forms the host writes: RFC 3339 with `Z` or an offset and up to 7 fractional
/// digits, and .NET's offset-less `2024-10-25T03:00:05` (taken as UTC, which it is on Azure).
pub fn parse_host_time(text: &str) -> Option<OffsetDateTime> {
    let text = unquote(text);
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    // `time`'s RFC 3339 wants an upper-case `T`/`Z` and a `:` in the offset; normalise the rest.
    let upper = text.to_ascii_uppercase();
    if upper != text {
        if let Ok(t) = OffsetDateTime::parse(&upper, &Rfc3339) {
            return Some(t);
        }
    }
    let no_offset = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(&upper, no_offset)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// `ScheduleStatus.Last` / `.Next`; the .NET minimum date (year 1) means "never".
fn timer_date(
    status: &Map<String, Value>,
    key: &str,
    status_field: &str,
) -> Result<Option<OffsetDateTime>, EnvelopeError> {
    let field = format!("{status_field}.{key}");
    match get_ci(status, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match parse_host_time(s) {
            Some(t) if t.year() <= 1 => Ok(None),
            Some(t) => Ok(Some(t)),
            None => Err(EnvelopeError::new(
                field,
                format!(
                    "expected an ISO-8601 time such as \"2024-10-25T03:00:00+00:00\", got {}",
                    quote_preview(s)
                ),
            )),
        },
        Some(other) => Err(EnvelopeError::expected(
            field,
            "an ISO-8601 time string",
            other,
        )),
    }
}

fn required_string(
    event: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<String, EnvelopeError> {
    match get_ci(event, key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(EnvelopeError::new(
            format!("{field}.{key}"),
            "missing: expected a non-empty string",
        )),
        Some(other) => Err(EnvelopeError::expected(
            format!("{field}.{key}"),
            "a non-empty string",
            other,
        )),
    }
}

/// An object, or (old hosts stringified everything, §2.1) a string holding a JSON object.
fn into_object(field: &str, value: Value) -> Result<Map<String, Value>, EnvelopeError> {
    match value {
        Value::Object(map) => Ok(map),
        Value::String(ref s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(EnvelopeError::expected(field, "a JSON object", &value)),
        },
        other => Err(EnvelopeError::expected(field, "a JSON object", &other)),
    }
}

/// Exact key first, then ASCII case-insensitive: the host's binding data is case-insensitive.
fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn take_ci(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    if let Some(v) = map.remove(key) {
        return Some(v);
    }
    let actual = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&actual)
}

/// Strips one level of JSON string encoding when present (`"\"abc\""` → `abc`).
fn unquote(s: &str) -> String {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => inner,
        _ => s.to_string(),
    }
}

/// A short description of a value for error messages: its JSON type and a preview.
fn describe(v: &Value) -> String {
    let kind = crate::messages::json_type(v);
    match v {
        Value::Null => kind.to_string(),
        Value::String(s) => format!("{kind} {}", quote_preview(s)),
        other => format!("{kind} {}", preview(&other.to_string())),
    }
}

fn quote_preview(s: &str) -> String {
    format!("{:?}", preview(s))
}

/// At most 80 characters, cut on a char boundary, so a huge value cannot flood a log line.
fn preview(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn envelope(data: Value, metadata: Value) -> Envelope {
        Envelope::parse(
            json!({"Data": data, "Metadata": metadata})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    /// The full parse (what [`Envelope::parse`] falls back to), for comparison.
    fn parse_fully(body: &[u8]) -> Envelope {
        let Value::Object(top) = serde_json::from_slice(body).unwrap() else {
            panic!("not an object")
        };
        Envelope::from_top(top).unwrap()
    }

    #[test]
    fn fast_parse_keeps_only_the_metadata_it_reads_and_decodes_the_same() {
        let payloads = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../reference/functions-custom-handler/payloads"
        );
        let mut service_bus = 0;
        for name in [
            "servicebus-json-body.json",
            "servicebus-text-body.json",
            "timer.json",
            "eventgrid.json",
        ] {
            let body = std::fs::read(format!("{payloads}/{name}")).unwrap();
            let fast = Envelope::parse(&body).unwrap();
            let full = parse_fully(&body);
            assert_eq!(fast.data, full.data, "{name}");
            for key in fast.metadata.keys() {
                assert!(
                    METADATA_READ.iter().any(|k| k.eq_ignore_ascii_case(key)),
                    "{name}: {key}"
                );
            }
            assert_eq!(fast.utc_now(), full.utc_now(), "{name}");
            assert_eq!(fast.delivery_count(), full.delivery_count(), "{name}");
            assert_eq!(fast.message_id(), full.message_id(), "{name}");
            if name.starts_with("servicebus") {
                service_bus += 1;
                assert!(
                    full.metadata.len() > fast.metadata.len(),
                    "{name}: nothing skipped"
                );
                assert_eq!(fast.service_bus("msg"), full.service_bus("msg"), "{name}");
                assert!(fast.message_id().unwrap().is_some(), "{name}");
            }
        }
        assert_eq!(service_bus, 2);

        // Case-insensitive names survive the cut; other members do not.
        let env = envelope(
            json!({"msg": "\"x\""}),
            json!({"SYS": {"utcnow": "2024-10-25T03:00:05Z"}, "deliverycount": 4, "messageid": "\"m\"", "LockToken": "\"t\"", "attempt": {"deep": [1, 2]}}),
        );
        assert_eq!(env.metadata.len(), 3);
        assert_eq!(env.delivery_count(), Ok(4));
        assert_eq!(env.message_id(), Ok(Some("m".into())));
        assert_eq!(env.utc_now(), Ok(datetime!(2024-10-25 03:00:05 UTC)));
    }

    #[test]
    fn what_the_fast_parse_refuses_gets_the_full_parse_and_its_errors() {
        // Metadata as a string holding JSON (old hosts): accepted by the full parse.
        let body =
            json!({"Data": {"msg": "x"}, "Metadata": "{\"DeliveryCount\": \"2\"}"}).to_string();
        assert_eq!(
            Envelope::parse(body.as_bytes()).unwrap().delivery_count(),
            Ok(2)
        );
        // A syntax error in a skipped member is still an error, with the full parse's message.
        let bad = br#"{"Data": {"msg": "x"}, "Metadata": {"Skipped": [1, }}"#;
        let err = Envelope::parse(bad).unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.problem.contains("is not JSON"), "{err}");
        // Not UTF-8 inside a skipped member: refused as before.
        let mut raw = br#"{"Data": {"msg": "x"}, "Metadata": {"Skipped": "#.to_vec();
        raw.extend_from_slice(b"\"\xff\"}}");
        assert_eq!(Envelope::parse(&raw).unwrap_err().field, "body");
        // Metadata of the wrong type: the same error as ever.
        let body = json!({"Data": {"msg": "x"}, "Metadata": 7}).to_string();
        assert_eq!(
            Envelope::parse(body.as_bytes()).unwrap_err().field,
            "Metadata"
        );
    }

    #[test]
    fn host_time_forms() {
        let cases: &[(&str, Option<OffsetDateTime>)] = &[
            (
                "2024-10-25T03:00:05.4871236Z",
                Some(datetime!(2024-10-25 03:00:05.4871236 UTC)),
            ),
            (
                "2024-10-24T03:00:00.0141236+00:00",
                Some(datetime!(2024-10-24 03:00:00.0141236 UTC)),
            ),
            (
                "2024-10-25T03:00:00+00:00",
                Some(datetime!(2024-10-25 03:00 UTC)),
            ),
            (
                "2024-10-25T05:00:00+02:00",
                Some(datetime!(2024-10-25 03:00 UTC)),
            ),
            (
                "2024-10-25T03:00:05",
                Some(datetime!(2024-10-25 03:00:05 UTC)),
            ),
            (
                "2024-10-25T03:00:05.1234567",
                Some(datetime!(2024-10-25 03:00:05.1234567 UTC)),
            ),
            (
                "2024-10-25 03:00:05",
                Some(datetime!(2024-10-25 03:00:05 UTC)),
            ),
            (
                "2024-10-25t03:00:05z",
                Some(datetime!(2024-10-25 03:00:05 UTC)),
            ),
            (
                "\"2024-10-25T03:00:05Z\"",
                Some(datetime!(2024-10-25 03:00:05 UTC)),
            ),
            (
                "0001-01-01T00:00:00+00:00",
                Some(datetime!(0001-01-01 00:00 UTC)),
            ),
            ("yesterday", None),
            ("", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-10-25", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_host_time(text), *want, "{text:?}");
        }
    }

    #[test]
    fn delivery_count_forms() {
        let cases: &[(Value, Result<u32, &str>)] = &[
            (json!("1"), Ok(1)),
            (json!(3), Ok(3)),
            (json!("\"7\""), Ok(7)),
            (json!(" 2 "), Ok(2)),
            (Value::Null, Ok(1)),
            (json!("one"), Err("got \"one\"")),
            (json!(-1), Err("got a number -1")),
            (json!(1.5), Err("got a number 1.5")),
            (json!(true), Err("got a boolean true")),
            (json!({"n": 1}), Err("got an object")),
            (json!("99999999999"), Err("got \"99999999999\"")),
        ];
        for (value, want) in cases {
            let env = envelope(json!({}), json!({ "DeliveryCount": value }));
            match (env.delivery_count(), want) {
                (Ok(n), Ok(w)) => assert_eq!(n, *w, "{value}"),
                (Err(e), Err(w)) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with("Metadata.DeliveryCount: expected"),
                        "{text}"
                    );
                    assert!(text.contains(w), "{value}: {text}");
                }
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(envelope(json!({}), json!({})).delivery_count(), Ok(1));
    }

    #[test]
    fn message_id_forms() {
        let cases: &[(Value, Result<Option<&str>, &str>)] = &[
            (json!("\"abc\""), Ok(Some("abc"))),
            (json!("abc"), Ok(Some("abc"))),
            (Value::Null, Ok(None)),
            (json!(12), Err("Metadata.MessageId: expected a string")),
            (json!(["a"]), Err("got an array")),
        ];
        for (value, want) in cases {
            let env = envelope(json!({}), json!({ "MessageId": value }));
            match (env.message_id(), want) {
                (Ok(got), Ok(w)) => assert_eq!(got.as_deref(), *w, "{value}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{value}: {e}"),
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn service_bus_body_encodings() {
        // serde_json (no preserve_order) writes object keys sorted.
        let body = r#"{"kind":"poll","v":1}"#;
        let double = Value::String(serde_json::to_string(body).unwrap());
        let cases: &[(Value, Result<&str, &str>)] = &[
            (double, Ok(body)),
            (json!(body), Ok(body)),
            (json!({"v": 1, "kind": "poll"}), Ok(body)),
            (json!("\"plain text\""), Ok("plain text")),
            (json!("plain text"), Ok("plain text")),
            (json!(""), Ok("")),
            (json!(5), Err("Data.msg: expected a JSON string holding the message body (or an object), got a number 5")),
            (json!([1]), Err("got an array [1]")),
        ];
        for (value, want) in cases {
            let env = envelope(json!({ "msg": value }), json!({}));
            match (env.service_bus("msg"), want) {
                (Ok(got), Ok(w)) => assert_eq!(got.body, *w, "{value}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{value}: {e}"),
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn envelope_shape_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "body: expected the host's JSON envelope"),
            ("", "body is not JSON"),
            ("[1,2]", "body: expected a JSON object"),
            (r#"{"Metadata":{}}"#, "Data: missing"),
            (
                r#"{"Data":5}"#,
                "Data: expected a JSON object, got a number 5",
            ),
            (
                r#"{"Data":{},"Metadata":[]}"#,
                "Metadata: expected a JSON object",
            ),
        ];
        for (body, want) in cases {
            let err = Envelope::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn utc_now_is_required_and_checked() {
        let ok = envelope(
            json!({}),
            json!({"sys": {"UtcNow": "2024-10-25T03:00:05.4871236Z"}}),
        );
        assert_eq!(ok.utc_now(), Ok(datetime!(2024-10-25 03:00:05.4871236 UTC)));
        // Old hosts stringified the sys object.
        let old = envelope(
            json!({}),
            json!({"sys": "{\"UtcNow\":\"2024-10-25T03:00:05Z\"}"}),
        );
        assert_eq!(old.utc_now(), Ok(datetime!(2024-10-25 03:00:05 UTC)));
        let cases: &[(Value, &str)] = &[
            (json!({}), "Metadata.sys: missing"),
            (json!({"sys": {}}), "Metadata.sys.UtcNow: missing"),
            (
                json!({"sys": {"UtcNow": 5}}),
                "Metadata.sys.UtcNow: expected an RFC 3339 time string, got a number 5",
            ),
            (json!({"sys": {"UtcNow": "soon"}}), "got \"soon\""),
            (json!({"sys": 3}), "Metadata.sys: expected a JSON object"),
        ];
        for (metadata, want) in cases {
            let err = envelope(json!({}), metadata.clone())
                .utc_now()
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{metadata}: {err}");
        }
    }

    #[test]
    fn timer_first_run_and_null_status() {
        let first = envelope(
            json!({"timer": {"ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": "2024-10-25T03:00:00Z"}, "IsPastDue": true}}),
            json!({}),
        );
        assert_eq!(
            first.timer("timer"),
            Ok(TimerEvent {
                is_past_due: true,
                last: None,
                next: Some(datetime!(2024-10-25 03:00 UTC)),
            })
        );
        let unmonitored = envelope(
            json!({"timer": {"ScheduleStatus": null, "IsPastDue": false}}),
            json!({}),
        );
        assert_eq!(
            unmonitored.timer("timer"),
            Ok(TimerEvent {
                is_past_due: false,
                last: None,
                next: None
            })
        );
        let cases: &[(Value, &str)] = &[
            (
                json!({"IsPastDue": "maybe"}),
                "Data.timer.IsPastDue: expected true or false",
            ),
            (
                json!({"ScheduleStatus": {"Next": "later"}}),
                "Data.timer.ScheduleStatus.Next: expected an ISO-8601 time",
            ),
            (
                json!({"ScheduleStatus": {"Last": 3}}),
                "Data.timer.ScheduleStatus.Last: expected an ISO-8601 time string, got a number 3",
            ),
            (
                json!({"ScheduleStatus": []}),
                "Data.timer.ScheduleStatus: expected a JSON object",
            ),
            (json!(true), "Data.timer: expected a JSON object"),
        ];
        for (timer, want) in cases {
            let err = envelope(json!({ "timer": timer }), json!({}))
                .timer("timer")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{timer}: {err}");
        }
        let missing = envelope(json!({"msg": "x"}), json!({}))
            .timer("timer")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("Data.timer: missing") && missing.contains("[\"msg\"]"),
            "{missing}"
        );
    }

    #[test]
    fn event_schemas_and_subject_fallback() {
        let vm =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
        let cloud = envelope(
            json!({"eventGridEvent": {"specVersion": "1.0", "id": "e1", "type": "Microsoft.Resources.ResourceDeleteSuccess", "subject": vm, "time": "2024-10-25T03:05:12.1234567Z", "data": {"operationName": "Microsoft.Compute/virtualMachines/delete"}}}),
            json!({}),
        )
        .event_grid("eventGridEvent")
        .unwrap();
        assert_eq!(cloud.schema, EventSchema::CloudEvents);
        assert_eq!(cloud.subject, vm, "no resourceUri → subject");
        assert_eq!(
            cloud.event_type,
            "Microsoft.Resources.ResourceDeleteSuccess"
        );
        assert_eq!(
            cloud.operation_name.as_deref(),
            Some("Microsoft.Compute/virtualMachines/delete")
        );
        assert_eq!(
            cloud.event_time,
            Some(datetime!(2024-10-25 03:05:12.1234567 UTC))
        );

        let grid = envelope(
            json!({"eventGridEvent": {"id": "e2", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": "/subscriptions/s", "data": {"resourceUri": vm}}}),
            json!({}),
        )
        .event_grid("eventGridEvent")
        .unwrap();
        assert_eq!(grid.schema, EventSchema::EventGrid);
        assert_eq!(grid.subject, vm, "resourceUri wins over subject");
        assert_eq!(grid.event_time, None);

        let cases: &[(Value, &str)] = &[
            (json!({"id": "e"}), "found neither"),
            (
                json!({"eventType": "t", "subject": "s"}),
                "Data.eventGridEvent.id: missing",
            ),
            (
                json!({"id": 5, "eventType": "t", "subject": "s"}),
                "Data.eventGridEvent.id: expected a non-empty string, got a number 5",
            ),
            (
                json!({"id": "e", "eventType": "t"}),
                "\"data.resourceUri\" or \"subject\"",
            ),
            (
                json!({"id": "e", "specversion": "1.0", "type": "t", "subject": "s", "time": "noon"}),
                "Data.eventGridEvent.time: expected an RFC 3339 time",
            ),
        ];
        for (event, want) in cases {
            let err = envelope(json!({ "eventGridEvent": event }), json!({}))
                .event_grid("eventGridEvent")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{event}: {err}");
        }
    }

    #[test]
    fn previews_are_bounded_and_char_safe() {
        let long = "é".repeat(500);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 81);
        assert!(p.ends_with('…'));
        assert_eq!(preview("short"), "short");
    }
}
