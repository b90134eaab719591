//! The REST side: `BrokerProperties` and custom-property headers, the send endpoint's
//! parsing and errors, and the handlers of the router.

use super::*;

/// Parses `ScheduledEnqueueTimeUtc`: RFC 1123 with `GMT` (what Service Bus documents), the
/// `+0000` form the legacy crate sends, or RFC 3339.
pub fn parse_broker_time(text: &str) -> Result<OffsetDateTime, String> {
    let t = text.trim();
    let rfc2822 = t
        .strip_suffix(" GMT")
        .or_else(|| t.strip_suffix(" UTC"))
        .or_else(|| t.strip_suffix(" UT"))
        .map(|s| format!("{s} +0000"))
        .unwrap_or_else(|| t.to_string());
    OffsetDateTime::parse(&rfc2822, &time::format_description::well_known::Rfc2822)
        .or_else(|_| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .map(|d| d.to_offset(time::UtcOffset::UTC))
        .map_err(|_| {
            format!(
                "ScheduledEnqueueTimeUtc {t:?} is not a date like \"Wed, 25 Nov 2026 21:30:15 GMT\""
            )
        })
}

/// The `BrokerProperties` we honour.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BrokerProperties {
    message_id: Option<String>,
    correlation_id: Option<String>,
    session_id: Option<String>,
    label: Option<String>,
    reply_to: Option<String>,
    to: Option<String>,
    reply_to_session_id: Option<String>,
    partition_key: Option<String>,
    content_type: Option<String>,
    time_to_live: Option<f64>,
    scheduled_enqueue_time_utc: Option<String>,
}

pub(super) fn apply_broker_properties(
    msg: &mut NewMessage,
    props: Option<Value>,
    where_: &str,
) -> Result<(), BusError> {
    let Some(props) = props else { return Ok(()) };
    let bp: BrokerProperties = serde_json::from_value(props)
        .map_err(|e| BusError::BadRequest(format!("{where_}: invalid BrokerProperties: {e}")))?;
    msg.message_id = bp.message_id.or(msg.message_id.take());
    msg.correlation_id = bp.correlation_id;
    msg.session_id = bp.session_id;
    msg.subject = bp.label;
    msg.reply_to = bp.reply_to;
    msg.to = bp.to;
    msg.reply_to_session_id = bp.reply_to_session_id;
    msg.partition_key = bp.partition_key;
    if bp.content_type.is_some() {
        msg.content_type = bp.content_type;
    }
    if let Some(ttl) = bp.time_to_live {
        if !(ttl.is_finite() && ttl > 0.0) {
            return Err(BusError::BadRequest(format!(
                "{where_}: BrokerProperties.TimeToLive must be positive seconds, got {ttl}"
            )));
        }
        msg.time_to_live = Some(time::Duration::seconds_f64(ttl.min(1e10)));
    }
    if let Some(t) = bp.scheduled_enqueue_time_utc {
        msg.scheduled_enqueue_time = Some(
            parse_broker_time(&t).map_err(|e| BusError::BadRequest(format!("{where_}: {e}")))?,
        );
    }
    Ok(())
}

/// Headers that are transport or broker fields, not custom application properties.
pub(super) const NON_PROPERTY_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "brokerproperties",
    "accept",
    "accept-encoding",
    "user-agent",
    "connection",
    "transfer-encoding",
    "expect",
    "traceparent",
    "tracestate",
];

pub(super) fn header_properties(headers: &HeaderMap) -> Map<String, Value> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !NON_PROPERTY_HEADERS.contains(&k) && !k.starts_with("x-ms-")
        })
        .filter_map(|(k, v)| {
            let text = v.to_str().ok()?;
            // Service Bus reads quoted values as strings and bare ones as numbers/booleans.
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
            Some((k.as_str().to_string(), value))
        })
        .collect()
}

/// Parses a REST send request into messages.
pub(super) fn parse_send(headers: &HeaderMap, body: &[u8]) -> Result<Vec<NewMessage>, BusError> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/vnd.microsoft.servicebus.json"))
    {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            BusError::BadRequest(format!(
                "batch body must be a JSON array of {{\"Body\", \"BrokerProperties\"}}: {e}"
            ))
        })?;
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let mut obj = match item {
                    Value::Object(o) => o,
                    _ => {
                        return Err(BusError::BadRequest(format!(
                            "batch item {i} must be an object"
                        )))
                    }
                };
                let body = match obj.remove("Body") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => {
                        return Err(BusError::BadRequest(format!(
                            "batch item {i} lacks the Body field"
                        )))
                    }
                };
                let mut msg = NewMessage {
                    body,
                    ..Default::default()
                };
                if let Some(Value::Object(p)) = obj.remove("UserProperties") {
                    msg.application_properties = p;
                }
                apply_broker_properties(
                    &mut msg,
                    obj.remove("BrokerProperties"),
                    &format!("batch item {i}"),
                )?;
                Ok(msg)
            })
            .collect();
    }
    let mut msg = NewMessage {
        body: String::from_utf8_lossy(body).into_owned(),
        content_type,
        application_properties: header_properties(headers),
        ..Default::default()
    };
    let props = match headers.get("brokerproperties") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .ok_or_else(|| {
                    BusError::BadRequest("the BrokerProperties header is not a JSON object".into())
                })?,
        ),
        None => None,
    };
    apply_broker_properties(&mut msg, props, "BrokerProperties header")?;
    Ok(vec![msg])
}

/// Service Bus answers errors with a small XML document.
pub(super) fn bus_error_response(err: &BusError) -> Response {
    let (status, code) = match err {
        BusError::NoSuchQueue(_) => (StatusCode::NOT_FOUND, 404),
        BusError::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
        BusError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, 401),
    };
    let detail = err
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )],
        format!("<Error><Code>{code}</Code><Detail>{detail}</Detail></Error>"),
    )
        .into_response()
}

pub(super) async fn send_handler(
    State(bus): State<Arc<ServiceBus>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Err(e) = bus.authorize(auth, &queue) {
        return bus_error_response(&e);
    }
    if bus.with_queue(&queue, |_| ()).is_err() {
        return bus_error_response(&BusError::NoSuchQueue(queue));
    }
    let messages = match parse_send(&headers, &body) {
        Ok(m) => m,
        Err(e) => return bus_error_response(&e),
    };
    // Standard tier's message size limit (docs/emulator-arm.md cites the quota): the whole
    // send is refused with 403, as the REST Send Message operation answers a message too large.
    if let Some(big) = messages
        .iter()
        .map(|m| m.body.len())
        .find(|n| *n > crate::messages::MAX_MESSAGE_BYTES)
    {
        return (
            StatusCode::FORBIDDEN,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/xml; charset=utf-8",
            )],
            format!(
                "<Error><Code>403</Code><Detail>The message of {big} bytes exceeds the maximum message size of {} bytes (Standard tier).</Detail></Error>",
                crate::messages::MAX_MESSAGE_BYTES
            ),
        )
            .into_response();
    }
    for msg in messages {
        if let Err(e) = bus.send(&queue, msg) {
            return bus_error_response(&e);
        }
    }
    StatusCode::CREATED.into_response()
}

pub(super) async fn list_queues(State(bus): State<Arc<ServiceBus>>) -> Json<Value> {
    Json(bus.summary())
}

pub(super) async fn list_messages(
    State(bus): State<Arc<ServiceBus>>,
    Path(queue): Path<String>,
) -> Response {
    match bus.messages(&queue) {
        Ok(m) => Json(m).into_response(),
        Err(e) => bus_error_response(&e),
    }
}

pub(super) async fn list_dead_letters(
    State(bus): State<Arc<ServiceBus>>,
    Path(queue): Path<String>,
) -> Response {
    match bus.dead_letters(&queue) {
        Ok(m) => Json(m).into_response(),
        Err(e) => bus_error_response(&e),
    }
}
