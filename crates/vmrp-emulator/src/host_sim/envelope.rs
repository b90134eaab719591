//! The wire format helpers: the invocation envelopes the host posts to the custom handler
//! (timer, Service Bus, Event Grid) and the reading of its output bindings.

use super::*;

// ---------------------------------------------------------------------------------------------
// Wire format helpers (PROTOCOL §2.1, §2.2, §3)
// ---------------------------------------------------------------------------------------------

/// A JSON object whose key order is kept (the host writes a fixed order; serde_json's `Map`
/// would sort it).
#[derive(Debug, Clone)]
pub enum Node {
    Json(Value),
    Object(Vec<(String, Node)>),
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Node::Json(v) => v.serialize(s),
            Node::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

pub(super) fn obj(entries: Vec<(&str, Node)>) -> Node {
    Node::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

pub(super) fn json(v: impl Into<Value>) -> Node {
    Node::Json(v.into())
}

/// §2.1 for a .NET string: JSON-encoded once more.
pub(super) fn encoded_string(s: &str) -> Node {
    Node::Json(Value::String(
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        serde_json::to_string(s).expect("strings serialize"),
    ))
}

/// The fraction .NET's `FFFFFFF` writes: up to 7 digits (100 ns ticks), trailing zeros dropped.
pub(super) fn dotnet_fraction(t: OffsetDateTime) -> String {
    let ticks = t.nanosecond() / 100;
    let digits = format!("{ticks:07}");
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(".{trimmed}")
    }
}

pub(super) fn seconds_part(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Newtonsoft's default for a UTC `DateTime`: `2024-10-25T03:00:05.4871236Z`.
pub fn format_utc_z(t: OffsetDateTime) -> String {
    format!("{}{}Z", seconds_part(t), dotnet_fraction(t))
}

/// Newtonsoft's default for a local `DateTime` on a UTC host: `...+00:00`.
pub fn format_local_offset(t: OffsetDateTime) -> String {
    format!("{}{}+00:00", seconds_part(t), dotnet_fraction(t))
}

/// A top-level `DateTime` metadata value: seconds, no offset (§2.1).
pub fn format_datetime_seconds(t: OffsetDateTime) -> String {
    seconds_part(t)
}

/// A top-level `DateTimeOffset` metadata value: seconds, `+00:00` (§2.1).
pub fn format_datetimeoffset_seconds(t: OffsetDateTime) -> String {
    format!("{}+00:00", seconds_part(t))
}

/// §2.2: the metadata keys a JSON-object body adds (scalars as .NET strings, then §2.1).
pub fn body_metadata(body: &str) -> Vec<(String, Node)> {
    let trimmed = body.trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Vec::new();
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            let node = match v {
                Value::Null | Value::Array(_) => return None,
                Value::Object(_) => Node::Json(v),
                Value::String(s) => encoded_string(&s),
                Value::Bool(b) => encoded_string(if b { "True" } else { "False" }),
                Value::Number(n) => encoded_string(&dotnet_number(&n)),
            };
            Some((k, node))
        })
        .collect()
}

/// A JSON number as `JValue.ToString()` writes it (integral doubles without `.0`).
pub(super) fn dotnet_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", f as i64)
        }
        _ => n.to_string(),
    }
}

/// Adds `extra` to `entries`: a key already present (case-insensitive) keeps its spelling and
/// position and takes the new value; then keys ending in `trigger` are dropped (§2, §2.2).
pub(super) fn merge_metadata(entries: &mut Vec<(String, Node)>, extra: Vec<(String, Node)>) {
    for (k, v) in extra {
        match entries.iter_mut().find(|(e, _)| e.eq_ignore_ascii_case(&k)) {
            Some(slot) => slot.1 = v,
            None => entries.push((k, v)),
        }
    }
    entries.retain(|(k, _)| !k.to_ascii_lowercase().ends_with("trigger"));
}

pub(super) fn sys_node(function: &str, now: OffsetDateTime) -> Node {
    obj(vec![
        ("MethodName", json(function)),
        ("UtcNow", json(format_utc_z(now))),
        ("RandGuid", json(uuid::Uuid::new_v4().to_string())),
    ])
}

pub(super) fn envelope(data: Vec<(String, Node)>, metadata: Vec<(String, Node)>) -> String {
    let body = Node::Object(vec![
        ("Data".to_string(), Node::Object(data)),
        ("Metadata".to_string(), Node::Object(metadata)),
    ]);
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    serde_json::to_string(&body).expect("JSON values serialize")
}

/// The `ScheduleStatus` the timer passes (the state *before* this run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleStatus {
    pub last: OffsetDateTime,
    pub next: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

/// The `.NET DateTime.MinValue` the timer reports as `Last` before the first run.
pub(super) fn dotnet_min_value() -> OffsetDateTime {
    time::macros::datetime!(0001-01-01 00:00 UTC)
}

/// The timer invocation body (§3.1).
pub fn timer_body(
    function: &str,
    binding: &str,
    status: Option<ScheduleStatus>,
    is_past_due: bool,
    now: OffsetDateTime,
) -> String {
    timer_body_with_retry(function, binding, status, is_past_due, now, None)
}

/// `Metadata.RetryContext` of an attempt (PROTOCOL §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryContext {
    pub retry_count: u32,
    pub max_retry_count: u32,
    /// The previous attempt's failure.
    pub exception: Option<String>,
}

/// The timer invocation body (§3.1), with the retry context when a retry policy is set.
pub fn timer_body_with_retry(
    function: &str,
    binding: &str,
    status: Option<ScheduleStatus>,
    is_past_due: bool,
    now: OffsetDateTime,
    retry: Option<&RetryContext>,
) -> String {
    let status = match status {
        Some(s) => obj(vec![
            ("Last", json(format_local_offset(s.last))),
            ("Next", json(format_local_offset(s.next))),
            ("LastUpdated", json(format_local_offset(s.last_updated))),
        ]),
        None => json(Value::Null),
    };
    let timer = obj(vec![
        ("Schedule", obj(vec![("AdjustForDST", json(true))])),
        ("ScheduleStatus", status),
        ("IsPastDue", json(is_past_due)),
    ]);
    let mut metadata = vec![("sys".to_string(), sys_node(function, now))];
    if let Some(r) = retry {
        let exception = match &r.exception {
            Some(message) => obj(vec![("Message", json(message.as_str()))]),
            None => json(Value::Null),
        };
        metadata.push((
            "RetryContext".to_string(),
            obj(vec![
                ("RetryCount", json(r.retry_count)),
                ("MaxRetryCount", json(r.max_retry_count)),
                ("Exception", exception),
                ("Instance", json(Value::Null)),
                ("State", obj(vec![])),
            ]),
        ));
    }
    envelope(vec![(binding.to_string(), timer)], metadata)
}

/// What the Service Bus invocation needs to know about the namespace client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub fully_qualified_namespace: String,
    pub identifier: String,
}

/// The Service Bus invocation body (§3.2).
pub fn service_bus_body(
    function: &str,
    binding: &str,
    binary: bool,
    delivery: &Delivery,
    client: &ClientInfo,
    now: OffsetDateTime,
) -> String {
    use base64::Engine;
    let m = &delivery.message;
    let data_value = if binary {
        json(base64::engine::general_purpose::STANDARD.encode(m.body.as_bytes()))
    } else {
        encoded_string(&m.body)
    };
    let mut meta: Vec<(String, Node)> = Vec::new();
    let mut push = |k: &str, v: Node| meta.push((k.to_string(), v));
    for k in [
        "MessageReceiver",
        "MessageSession",
        "MessageActions",
        "SessionActions",
        "ReceiveActions",
    ] {
        push(k, obj(vec![]));
    }
    push(
        "Client",
        obj(vec![
            (
                "FullyQualifiedNamespace",
                json(client.fully_qualified_namespace.clone()),
            ),
            ("IsClosed", json(false)),
            ("TransportType", json(0)),
            ("Identifier", json(client.identifier.clone())),
        ]),
    );
    push("DeliveryCount", json(m.delivery_count.to_string()));
    push("LockToken", encoded_string(&delivery.lock_token));
    push("ExpiresAtUtc", json(format_datetime_seconds(m.expires_at)));
    push(
        "ExpiresAt",
        json(format_datetimeoffset_seconds(m.expires_at)),
    );
    push(
        "EnqueuedTimeUtc",
        json(format_datetime_seconds(m.enqueued_time)),
    );
    push(
        "EnqueuedTime",
        json(format_datetimeoffset_seconds(m.enqueued_time)),
    );
    push("MessageId", encoded_string(&m.message_id));
    let optional = [
        ("ContentType", &m.content_type),
        ("ReplyTo", &m.reply_to),
        ("To", &m.to),
        ("Subject", &m.subject),
        ("Label", &m.subject),
        ("CorrelationId", &m.correlation_id),
        ("SessionId", &m.session_id),
        ("ReplyToSessionId", &m.reply_to_session_id),
        ("PartitionKey", &m.partition_key),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            push(k, encoded_string(v));
        }
    }
    push("SequenceNumber", json(m.sequence_number.to_string()));
    push(
        "ApplicationProperties",
        json(Value::Object(m.application_properties.clone())),
    );
    push(
        "UserProperties",
        json(Value::Object(m.application_properties.clone())),
    );
    push("sys", sys_node(function, now));
    if !binary {
        merge_metadata(&mut meta, body_metadata(&m.body));
    } else {
        merge_metadata(&mut meta, Vec::new());
    }
    envelope(vec![(binding.to_string(), data_value)], meta)
}

/// The Event Grid invocation body (§3.3).
pub fn event_grid_body(
    function: &str,
    binding: &str,
    event: &Value,
    now: OffsetDateTime,
) -> String {
    let mut meta = Vec::new();
    match event.get("data") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => meta.push(("data".to_string(), json(v.clone()))),
        Some(v) => meta.push((
            "data".to_string(),
            // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
            json(serde_json::to_string(v).expect("serializes")),
        )),
    }
    meta.push(("sys".to_string(), sys_node(function, now)));
    envelope(vec![(binding.to_string(), json(event.clone()))], meta)
}

/// Normalises an injected event (or array) into Event Grid / CloudEvents objects, filling `id`
/// and the event time when missing.
pub fn normalize_events(body: Value, now: OffsetDateTime) -> Result<Vec<Value>, HostSimError> {
    let list = match body {
        Value::Array(a) => a,
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(HostSimError::BadEvent(
                "expected an event object or an array of events".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(HostSimError::BadEvent("the event array is empty".into()));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::Object(mut e) = v else {
                return Err(HostSimError::BadEvent(format!(
                    "event {i} is not an object"
                )));
            };
            let has = |e: &Map<String, Value>, k: &str| e.get(k).is_some_and(Value::is_string);
            e.entry("id")
                .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
            if e.contains_key("specversion") {
                for k in ["type", "source"] {
                    if !has(&e, k) {
                        return Err(HostSimError::BadEvent(format!(
                            "event {i} (CloudEvents schema) lacks the string field {k:?}"
                        )));
                    }
                }
                e.entry("time")
                    .or_insert_with(|| Value::String(format_utc_z(now)));
            } else {
                for k in ["eventType", "subject"] {
                    if !has(&e, k) {
                        return Err(HostSimError::BadEvent(format!(
                            "event {i} (Event Grid schema) lacks the string field {k:?}"
                        )));
                    }
                }
                e.entry("eventTime")
                    .or_insert_with(|| Value::String(format_utc_z(now)));
                e.entry("dataVersion")
                    .or_insert_with(|| Value::String("2".into()));
                e.entry("metadataVersion")
                    .or_insert_with(|| Value::String("1".into()));
            }
            Ok(Value::Object(e))
        })
        .collect()
}

/// §4.4: what an `Outputs` value for a Service Bus output binding becomes (message texts).
pub fn output_messages(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .flat_map(|item| match item {
                Value::Object(_) => vec![pretty(item)],
                Value::String(s) => vec![s.clone()],
                Value::Null => Vec::new(),
                other => vec![other.to_string()],
            })
            .collect(),
        Value::Object(_) => vec![pretty(value)],
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('{') || t.starts_with('[') {
                if let Ok(parsed) = serde_json::from_str::<Value>(t) {
                    return output_messages(&parsed);
                }
            }
            if looks_like_base64(s) {
                // The host turned it into bytes, which the string collector writes as this.
                vec!["System.Byte[]".to_string()]
            } else {
                vec![s.clone()]
            }
        }
        other => vec![other.to_string()],
    }
}

pub(super) fn pretty(v: &Value) -> String {
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    serde_json::to_string_pretty(v).expect("serializes")
}

pub(super) fn looks_like_base64(s: &str) -> bool {
    use base64::Engine;
    s.len() % 4 == 0 && base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}
