//! Property tests over the decoders that read untrusted input: the host envelope (and every
//! binding/metadata decoder on it), host dates, and `QueueMessage::decode`. Arbitrary input must
//! give `Ok` or a descriptive `Err`, never a panic; well-formed input must round-trip. Valid
//! Create/Copy/Poll messages (creates with the timer's `listed` view) are generated, round-tripped,
//! and mutated one field at a time, so field parsing sees arbitrary values, not only keys no
//! message has.

mod common;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use common::*;
use vmrp::azure::models::{ConsistencyMode, Tags};
use vmrp::azure::Queue;
use vmrp::azure::ResourceId;
use vmrp::host::envelope::parse_host_time;
use vmrp::host::Envelope;
use vmrp::messages::{
    CollectionSeen, CopyRequest, CreateRequest, ListedVm, MessageError, PollRequest, QueueMessage,
    Role,
};
use vmrp::policy::DiskInfo;
use vmrp::testing::{disk_id, vm_id, VmBuilder};

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

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,11}"
}

fn region() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("westeurope".to_string()),
        Just("northeurope".to_string()),
        Just("swedencentral".to_string()),
        Just("eastus2".to_string()),
    ]
}

/// Whole seconds, or with nanoseconds (RFC 3339 keeps them).
fn moment() -> impl Strategy<Value = OffsetDateTime> {
    (
        1_600_000_000i64..2_100_000_000,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
    )
        .prop_map(|(s, ns)| {
            OffsetDateTime::from_unix_timestamp(s).unwrap() + time::Duration::nanoseconds(ns.into())
        })
}

fn vm() -> impl Strategy<Value = ResourceId> {
    (name(), name(), name()).prop_map(|(s, rg, n)| vm_id(&s, &rg, &n))
}

fn point_of(vm: &ResourceId, copy_region: Option<&str>, tick: OffsetDateTime) -> ResourceId {
    let collection = match copy_region {
        Some(r) => vmrp::names::copy_collection_id(vm, r, None),
        None => vmrp::names::collection_id(vm, None),
    }
    .expect("generated VMs and regions form names");
    collection.child("restorePoints", &vmrp::names::restore_point_name(tick, 0))
}

fn consistency() -> impl Strategy<Value = ConsistencyMode> {
    prop_oneof![
        Just(ConsistencyMode::CrashConsistent),
        Just(ConsistencyMode::FileSystemConsistent),
        Just(ConsistencyMode::ApplicationConsistent),
    ]
}

/// The timer's view of a VM: the VM with 0–3 data disks, the disks the listing showed, the
/// collection as seen.
fn listed() -> impl Strategy<Value = ListedVm> {
    (
        moment(),
        (name(), name(), name()),
        region(),
        prop::collection::vec(
            (
                name(),
                any::<bool>(),
                prop::option::of(1i32..5),
                prop::option::of(prop_oneof![
                    Just("Premium_LRS".to_string()),
                    Just("UltraSSD_LRS".to_string())
                ]),
            ),
            0..4,
        ),
        prop::option::of(prop_oneof![
            Just(CollectionSeen::Ready),
            Just(CollectionSeen::Missing)
        ]),
    )
        .prop_map(|(at, (s, rg, n), location, disks, collection)| {
            let mut b = VmBuilder::new(&s, &rg, &n).location(&location);
            let mut infos = Vec::new();
            for (lun, (d, shown, max_shares, sku)) in disks.into_iter().enumerate() {
                let id = disk_id(&s, &rg, &format!("{n}-{d}-{lun}"));
                b = b.data_disk(lun as i32, &id, "Premium_LRS");
                if shown {
                    infos.push(DiskInfo {
                        id,
                        tags: Tags::new(),
                        max_shares,
                        sku,
                    });
                }
            }
            ListedVm {
                at,
                vm: b.build(),
                disks: infos,
                collection,
                planned_for: None,
            }
        })
}

fn create_message() -> impl Strategy<Value = QueueMessage> {
    (
        vm(),
        moment(),
        prop::option::of(name()),
        prop::option::of(consistency()),
        prop::option::of(prop::collection::vec(
            name().prop_map(|d| disk_id("s", "rg", &d)),
            0..3,
        )),
        prop::option::of(prop::collection::vec(region(), 0..3)),
        (0u32..5, 0u32..40),
        prop::option::of(listed()),
    )
        .prop_map(
            |(
                vm,
                tick,
                rule,
                consistency_mode,
                exclude_disks,
                copy_to,
                (retry, attempt),
                listed,
            )| {
                QueueMessage::Create(CreateRequest {
                    vm,
                    tick,
                    rule,
                    consistency_mode,
                    exclude_disks,
                    copy_to,
                    retry,
                    attempt,
                    // Drawn from the attempt: at most as many pacing put-backs as put-backs.
                    paced: attempt / 2,
                    listed: listed.map(Box::new),
                })
            },
        )
}

fn copy_message() -> impl Strategy<Value = QueueMessage> {
    (
        vm(),
        moment(),
        region(),
        prop::option::of(name()),
        any::<bool>(),
        prop::option::of(name()),
        (0u32..5, 0u32..200),
    )
        .prop_map(
            |(vm, tick, target_region, target_resource_group, with_vm, rule, (retry, attempt))| {
                QueueMessage::Copy(CopyRequest {
                    source: point_of(&vm, None, tick),
                    target_region,
                    target_resource_group,
                    vm: with_vm.then_some(vm),
                    rule,
                    retry,
                    attempt,
                })
            },
        )
}

fn poll_message() -> impl Strategy<Value = QueueMessage> {
    (
        vm(),
        (moment(), moment(), moment()),
        region(),
        any::<bool>(),
        prop::option::of(name()),
        (1u32..500, 0u32..5),
        prop::collection::vec(region(), 0..3),
    )
        .prop_map(
            |(vm, (tick, first_seen, deadline), region, copy, rule, (attempt, retry), copy_to)| {
                let (role, target, source, target_region, copy_to) = if copy {
                    (
                        Role::Copy,
                        point_of(&vm, Some(&region), tick),
                        Some(point_of(&vm, None, tick)),
                        Some(region),
                        Vec::new(),
                    )
                } else {
                    (Role::Local, point_of(&vm, None, tick), None, None, copy_to)
                };
                QueueMessage::Poll(PollRequest {
                    target,
                    role,
                    attempt,
                    first_seen,
                    deadline,
                    vm,
                    tick,
                    rule,
                    retry,
                    copy_to,
                    source,
                    target_region,
                    // Drawn from the attempt: 0 mostly (an ordinary poll), a follow-up else.
                    prune_again: attempt % 4,
                })
            },
        )
}

fn any_message() -> impl Strategy<Value = QueueMessage> {
    prop_oneof![create_message(), copy_message(), poll_message()]
}

/// Every path to a value inside `v` (object keys and array indices), the root excluded.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (k, child) in children {
        prefix.push(k);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k).unwrap(),
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        _ => unreachable!("paths() only descends into objects and arrays"),
    })
}

/// Values a field should not have, or only sometimes.
fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!("not a time")),
        Just(json!("9999-12-31T23:59:60Z")),
        Just(json!("/subscriptions/../x")),
        Just(json!({})),
        Just(json!([])),
        Just(json!([null])),
        any_json(),
    ]
}

/// A decode result: the message, or an error that says what was wrong.
fn check_decoded(result: Result<QueueMessage, MessageError>) -> Result<(), TestCaseError> {
    match result {
        // Whatever decoded encodes back to itself.
        Ok(m) => prop_assert_eq!(QueueMessage::decode(&m.encode()), Ok(m)),
        Err(e) => {
            let text = e.to_string();
            prop_assert!(text.len() > 20, "unclear error: {}", text);
            if let MessageError::Invalid { detail, .. } = &e {
                prop_assert!(!detail.trim().is_empty(), "{}", text);
            }
        }
    }
    Ok(())
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

    /// Valid messages of every kind encode and decode back to themselves, on their own queue,
    /// and are refused on the others.
    #[test]
    fn valid_messages_round_trip(m in any_message()) {
        let text = m.encode();
        prop_assert_eq!(QueueMessage::decode(&text), Ok(m.clone()));
        for queue in Queue::ALL {
            let got = QueueMessage::decode_for(queue, &text);
            if queue == m.queue() {
                prop_assert_eq!(got, Ok(m.clone()));
            } else {
                let is_wrong_queue = matches!(got, Err(MessageError::WrongQueue { .. }));
                prop_assert!(is_wrong_queue, "{:?}", got);
            }
        }
    }

    /// One field of a valid message (at any depth, `listed` included) replaced by a wrong or
    /// arbitrary value: the message decodes, or the error says what was wrong; never a panic.
    #[test]
    fn a_valid_message_with_one_field_changed_decodes_or_says_why(
        m in any_message(),
        pick in any::<prop::sample::Index>(),
        value in wrong_value(),
    ) {
        let mut v: Value = serde_json::from_str(&m.encode()).unwrap();
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        *at_mut(&mut v, &path) = value;
        check_decoded(QueueMessage::decode(&v.to_string()))?;
    }

    /// One field of a valid message removed: decodes (an optional field) or names the problem.
    #[test]
    fn a_valid_message_with_one_field_removed_decodes_or_says_why(
        m in any_message(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut v: Value = serde_json::from_str(&m.encode()).unwrap();
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        let (last, parent) = path.split_last().unwrap();
        match at_mut(&mut v, parent) {
            Value::Object(map) => {
                map.remove(last);
            }
            Value::Array(a) => {
                a.remove(last.parse::<usize>().unwrap());
            }
            _ => unreachable!(),
        }
        check_decoded(QueueMessage::decode(&v.to_string()))?;
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
