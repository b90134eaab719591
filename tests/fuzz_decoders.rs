//! Property tests over the decoders that read untrusted input: the host envelope (and every
//! binding/metadata decoder on it), host dates, and `QueueMessage::decode`. Arbitrary input must
//! give `Ok` or a descriptive `Err`, never a panic; well-formed input must round-trip.

mod common;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use common::*;
use vmrp::azure::Queue;
use vmrp::host::envelope::parse_host_time;
use vmrp::host::Envelope;
use vmrp::messages::QueueMessage;

/// Arbitrary JSON, biased towards the shapes the decoders look at.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Data".to_string()),
        Just("Metadata".to_string()),
        Just("msg".to_string()),
        Just("timer".to_string()),
        Just("eventGridEvent".to_string()),
        Just("sys".to_string()),
        Just("UtcNow".to_string()),
        Just("DeliveryCount".to_string()),
        Just("MessageId".to_string()),
        Just("ScheduleStatus".to_string()),
        Just("IsPastDue".to_string()),
        Just("Last".to_string()),
        Just("Next".to_string()),
        Just("specversion".to_string()),
        Just("eventType".to_string()),
        Just("data".to_string()),
        Just("resourceUri".to_string()),
        Just("v".to_string()),
        Just("kind".to_string()),
        "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("2024-10-25T03:00:05.4871236Z")),
        Just(json!("0001-01-01T00:00:00")),
        Just(json!("\"1\"")),
        Just(json!("create")),
        Just(json!(1)),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Runs every decoder on an envelope; none may panic, and errors must say where.
fn exercise(env: &Envelope) {
    let results: Vec<Result<(), String>> = vec![
        env.service_bus("msg").map(drop).map_err(|e| e.to_string()),
        env.timer("timer").map(drop).map_err(|e| e.to_string()),
        env.event_grid("eventGridEvent")
            .map(drop)
            .map_err(|e| e.to_string()),
        env.utc_now().map(drop).map_err(|e| e.to_string()),
        env.delivery_count().map(drop).map_err(|e| e.to_string()),
        env.message_id().map(drop).map_err(|e| e.to_string()),
    ];
    for err in results.into_iter().filter_map(Result::err) {
        assert!(err.contains(": "), "error without a field: {err}");
    }
    if let Ok(sb) = env.service_bus("msg") {
        for queue in Queue::ALL {
            let _ = QueueMessage::decode_for(queue, &sb.body);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelope_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(env) = Envelope::parse(&bytes) {
            exercise(&env);
        }
    }

    #[test]
    fn envelope_never_panics_on_json(data in any_json(), metadata in any_json()) {
        let body = json!({"Data": data, "Metadata": metadata}).to_string();
        if let Ok(env) = Envelope::parse(body.as_bytes()) {
            exercise(&env);
        }
    }

    #[test]
    fn envelope_never_panics_on_arbitrary_top_level(value in any_json()) {
        if let Ok(env) = Envelope::parse(value.to_string().as_bytes()) {
            exercise(&env);
        }
    }

    /// Whatever the body text, the host's double encoding decodes back to exactly that text.
    #[test]
    fn service_bus_body_round_trips(body in any::<String>(), count in 1u32..100_000, id in "[ -~]{1,40}") {
        let envelope = service_bus_envelope("CreateRestorePoint", &body, count, &id, "2024-10-25T03:00:05Z");
        let env = Envelope::parse(envelope.to_string().as_bytes()).unwrap();
        let sb = env.service_bus("msg").unwrap();
        prop_assert_eq!(sb.body, body);
        prop_assert_eq!(sb.delivery_count, count);
        prop_assert_eq!(sb.message_id, Some(id));
    }

    #[test]
    fn queue_message_decode_never_panics_on_text(text in any::<String>()) {
        let _ = QueueMessage::decode(&text);
    }

    #[test]
    fn queue_message_decode_never_panics_on_json(mut value in any_json(), kind in prop_oneof![Just("create"), Just("copy"), Just("poll"), Just("x")]) {
        // Often a plausible header, so decoding reaches the per-kind fields.
        if let Value::Object(map) = &mut value {
            map.insert("v".into(), json!(1));
            map.insert("kind".into(), json!(kind));
        }
        let _ = QueueMessage::decode(&value.to_string());
    }

    #[test]
    fn host_time_never_panics(text in ".{0,64}") {
        let _ = parse_host_time(&text);
    }

    /// The forms .NET writes (7 fractional digits; `Z`, `+00:00` or no offset) parse exactly.
    #[test]
    fn host_time_reads_dotnet_forms(unix in 0i64..4_102_444_800, ticks in 0u32..10_000_000, form in 0usize..3) {
        let t = OffsetDateTime::from_unix_timestamp(unix).unwrap()
            + time::Duration::nanoseconds(i64::from(ticks) * 100);
        let base = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}",
            t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second(), ticks
        );
        let text = match form {
            0 => format!("{base}Z"),
            1 => format!("{base}+00:00"),
            _ => base,
        };
        prop_assert_eq!(parse_host_time(&text), Some(t), "{}", text);
    }
}

/// Arbitrary bodies through the whole router: always a JSON answer in the protocol's shape.
#[test]
fn router_answers_arbitrary_bodies_with_protocol_json() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let app = vmrp::host::app(deps());
    let config = ProptestConfig::with_cases(128);
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        prop_oneof![
            Just("ScheduleRestorePoints"),
            Just("CreateRestorePoint"),
            Just("StartCrossRegionCopy"),
            Just("PollRestorePoint"),
            Just("OnVmChanged"),
        ],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| {
                json!({"Data": v, "Metadata": {"sys": {"UtcNow": "2024-10-25T03:00:05Z"}}})
                    .to_string()
                    .into_bytes()
            }),
        ],
    );
    runner
        .run(&strategy, |(function, body)| {
            let response = runtime.block_on(
                app.clone().oneshot(
                    Request::post(format!("/{function}"))
                        .body(Body::from(body))
                        .unwrap(),
                ),
            );
            let response = response.unwrap();
            let status = response.status().as_u16();
            let bytes = runtime
                .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .unwrap();
            let json: Value = serde_json::from_slice(&bytes).expect("JSON body");
            prop_assert!(
                json.get("Outputs").is_some()
                    && json.get("Logs").is_some()
                    && json.get("ReturnValue").is_some()
            );
            prop_assert!(status == 200 || status == 500, "status {}", status);
            if status == 500 {
                prop_assert!(json["error"]["kind"].is_string());
                prop_assert_ne!(&json["error"]["kind"], "panic");
            }
            Ok(())
        })
        .unwrap();
}
