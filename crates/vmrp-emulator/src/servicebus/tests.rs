//! Tests of the Service Bus model: SAS, sends, peek-lock delivery, dead-lettering, duplicates.

use super::*;
use axum::body::Body;
use time::macros::datetime;
use tower::ServiceExt;

fn bus_with(max_delivery: u32, faults: FaultConfig) -> (Arc<ServiceBus>, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::new(datetime!(2026-11-25 21:00 UTC), 1.0));
    let identity = IdentityEndpoint::new("h", true);
    let bus = ServiceBus::new(
        BusConfig {
            namespace: "contoso-sb".into(),
            sas_key: "k3y".into(),
            sas_key_name: "Send".into(),
            max_delivery_count: max_delivery,
            ..Default::default()
        },
        clock.clone(),
        Arc::new(Dice::new(1)),
        Arc::new(faults),
        identity,
    );
    (bus, clock)
}

fn bus() -> (Arc<ServiceBus>, Arc<VirtualClock>) {
    bus_with(10, FaultConfig::default())
}

async fn post(
    bus: &Arc<ServiceBus>,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, String) {
    let mut req = axum::http::Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = bus
        .router()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn sas(url: &str, key_name: &str, key: &str, expiry: i64) -> String {
    format!(
        "SharedAccessSignature {}",
        sas_token(url, key_name, key, expiry)
    )
}

fn in_an_hour() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() + 3600
}

#[test]
fn sas_signature_matches_the_crates_md_probe_construction() {
    // Independent construction: HMAC over "{urlencoded sr}\n{se}" with the raw key bytes.
    let sr = "https%3A%2F%2Fmynamespace.servicebus.windows.net%2Fmyqueue%2Fmessages";
    let sig = sas_signature(sr, "1795642158", "key");
    let mut mac = HmacSha256::new_from_slice(b"key").unwrap();
    mac.update(format!("{sr}\n1795642158").as_bytes());
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(sig, expected);
    assert_eq!(sig.len(), 44);
}

#[tokio::test]
async fn sas_accepts_a_correct_signature_and_rejects_wrong_key_name_expiry_and_scope() {
    let (bus, _) = bus();
    let real_url = "https://contoso-sb.servicebus.windows.net/rp-create/messages";
    let cases = [
        (
            sas(real_url, "Send", "k3y", in_an_hour()),
            StatusCode::CREATED,
        ),
        (
            sas("http://127.0.0.1:9/rp-create", "Send", "k3y", in_an_hour()),
            StatusCode::CREATED,
        ),
        (
            sas(
                "https://contoso-sb.servicebus.windows.net/",
                "Send",
                "k3y",
                in_an_hour(),
            ),
            StatusCode::CREATED,
        ),
        (
            sas(real_url, "Send", "wrong", in_an_hour()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            sas(real_url, "Listen", "k3y", in_an_hour()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            sas(
                real_url,
                "Send",
                "k3y",
                OffsetDateTime::now_utc().unix_timestamp() - 1,
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            sas(
                "https://other.servicebus.windows.net/rp-create",
                "Send",
                "k3y",
                in_an_hour(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            sas(
                "https://contoso-sb.servicebus.windows.net/rp-poll",
                "Send",
                "k3y",
                in_an_hour(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        ("Basic abc".to_string(), StatusCode::UNAUTHORIZED),
    ];
    for (i, (auth, expected)) in cases.iter().enumerate() {
        let (status, body) = post(
            &bus,
            "/rp-create/messages",
            &[("authorization", auth.clone())],
            "x",
        )
        .await;
        assert_eq!(status, *expected, "case {i}: {body}");
    }
    assert_eq!(
        post(&bus, "/rp-create/messages", &[], "x").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(bus.messages("rp-create").unwrap().len(), 3);
    // Unknown queue: 404 once authorised.
    let auth = sas(
        "https://contoso-sb.servicebus.windows.net/",
        "Send",
        "k3y",
        in_an_hour(),
    );
    let (status, body) = post(&bus, "/nope/messages", &[("authorization", auth)], "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn bearer_tokens_must_come_from_the_identity_endpoint_for_service_bus() {
    let (bus, _) = bus();
    let sb = bus.identity.issue(SERVICE_BUS_RESOURCE, None).access_token;
    let arm = bus
        .identity
        .issue(super::super::identity::ARM_RESOURCE, None)
        .access_token;
    let send = |t: String| {
        let bus = bus.clone();
        async move {
            post(
                &bus,
                "/rp-poll/messages",
                &[("authorization", format!("Bearer {t}"))],
                "{}",
            )
            .await
            .0
        }
    };
    assert_eq!(send(sb).await, StatusCode::CREATED);
    assert_eq!(send(arm).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("forged".into()).await, StatusCode::UNAUTHORIZED);
}

#[test]
fn an_id_expires_from_duplicate_detection_by_its_own_time_not_by_the_last_pruning() {
    let (bus, clock) = bus();
    let send = |id: &str| {
        bus.send(
            "rp-poll",
            NewMessage {
                message_id: Some(id.into()),
                body: "{}".into(),
                ..NewMessage::default()
            },
        )
        .unwrap()
    };
    assert!(!matches!(send("a"), SendOutcome::DuplicateDropped));
    clock.advance(DUPLICATE_WINDOW - time::Duration::milliseconds(500));
    // Pruned now (more than a second since the last pruning); "a" is still in the window.
    assert!(!matches!(send("b"), SendOutcome::DuplicateDropped));
    assert!(matches!(send("a"), SendOutcome::DuplicateDropped));
    // 0.7 s later: no pruning yet, but "a" is the window + 0.2 s old: no longer a duplicate.
    clock.advance(time::Duration::milliseconds(700));
    assert!(!matches!(send("a"), SendOutcome::DuplicateDropped));
    assert!(matches!(send("b"), SendOutcome::DuplicateDropped));
    assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 2);
}

#[tokio::test]
async fn broker_properties_duplicate_detection_and_scheduled_enqueue() {
    let (bus, clock) = bus();
    let auth = sas(
        "https://contoso-sb.servicebus.windows.net/rp-poll/messages",
        "Send",
        "k3y",
        in_an_hour(),
    );
    let headers = |bp: &str| {
        vec![
            ("authorization", auth.clone()),
            ("brokerproperties", bp.to_string()),
            ("content-type", "application/json".to_string()),
            ("attempt", "3".to_string()),
        ]
    };
    let bp = r#"{"MessageId":"poll-1","CorrelationId":"c","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:15 GMT"}"#;
    assert_eq!(
        post(&bus, "/rp-poll/messages", &headers(bp), "{\"a\":1}")
            .await
            .0,
        StatusCode::CREATED
    );
    // Same MessageId again: accepted, dropped.
    assert_eq!(
        post(&bus, "/rp-poll/messages", &headers(bp), "{\"a\":2}")
            .await
            .0,
        StatusCode::CREATED
    );
    let msgs = bus.messages("rp-poll").unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, "{\"a\":1}");
    assert_eq!(msgs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(msgs[0].correlation_id.as_deref(), Some("c"));
    assert_eq!(msgs[0].application_properties["attempt"], 3);
    assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 1);
    // Scheduled 30 virtual minutes ahead: invisible until the clock gets there.
    assert!(bus.receive("rp-poll").unwrap().is_none());
    clock.advance(time::Duration::minutes(29));
    assert!(bus.receive("rp-poll").unwrap().is_none());
    clock.advance(time::Duration::minutes(2));
    let d = bus.receive("rp-poll").unwrap().expect("now due");
    assert_eq!(d.message.delivery_count, 1);
    assert_eq!(d.message.enqueued_time, datetime!(2026-11-25 21:30:15 UTC));
    assert!(bus.complete("rp-poll", &d.lock_token));
    // Inside the deployed window (7 days) the same id is still a duplicate...
    clock.advance(time::Duration::days(6));
    let again = r#"{"MessageId":"poll-1"}"#;
    assert_eq!(
        post(&bus, "/rp-poll/messages", &headers(again), "late replay")
            .await
            .0,
        StatusCode::CREATED
    );
    assert!(bus.messages("rp-poll").unwrap().is_empty(), "dropped");
    assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 2);
    // ...and after it the same id is new again.
    clock.advance(DUPLICATE_WINDOW - time::Duration::days(6) + time::Duration::minutes(1));
    let plus0000 =
        r#"{"MessageId":"poll-1","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:15 +0000"}"#;
    assert_eq!(
        post(&bus, "/rp-poll/messages", &headers(plus0000), "again")
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(bus.messages("rp-poll").unwrap().len(), 1);
    let (status, body) = post(
        &bus,
        "/rp-poll/messages",
        &headers(r#"{"ScheduledEnqueueTimeUtc":"tomorrow"}"#),
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("ScheduledEnqueueTimeUtc"), "{body}");
}

#[tokio::test]
async fn messages_above_the_standard_tier_limit_are_refused_with_403() {
    // The emulator took 300 KB and 2 MB messages; Standard tier refuses above 256 KB.
    let (bus, _) = bus();
    let auth = sas(
        "https://contoso-sb.servicebus.windows.net/rp-create",
        "Send",
        "k3y",
        in_an_hour(),
    );
    let headers = [("authorization", auth)];
    let at_limit = "x".repeat(crate::messages::MAX_MESSAGE_BYTES);
    assert_eq!(
        post(&bus, "/rp-create/messages", &headers, &at_limit)
            .await
            .0,
        StatusCode::CREATED
    );
    for size in [crate::messages::MAX_MESSAGE_BYTES + 1, 300 * 1024] {
        let (status, text) = post(&bus, "/rp-create/messages", &headers, &"x".repeat(size)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{size}");
        assert!(text.contains("maximum message size"), "{text}");
    }
    assert_eq!(bus.messages("rp-create").unwrap().len(), 1);
}

#[tokio::test]
async fn batch_send_reads_body_and_broker_properties_per_item() {
    let (bus, _) = bus();
    let auth = sas(
        "https://contoso-sb.servicebus.windows.net/rp-copy",
        "Send",
        "k3y",
        in_an_hour(),
    );
    let body = r#"[{"Body":"one","BrokerProperties":{"MessageId":"m1","Label":"L"}},
                      {"Body":"two","BrokerProperties":{"MessageId":"m2"},"UserProperties":{"k":"v"}},
                      {"Body":"dup","BrokerProperties":{"MessageId":"m1"}}]"#;
    let headers = [
        ("authorization", auth.clone()),
        (
            "content-type",
            "application/vnd.microsoft.servicebus.json".to_string(),
        ),
    ];
    assert_eq!(
        post(&bus, "/rp-copy/messages", &headers, body).await.0,
        StatusCode::CREATED
    );
    let msgs = bus.messages("rp-copy").unwrap();
    let bodies: Vec<_> = msgs.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two"]);
    assert_eq!(msgs[0].subject.as_deref(), Some("L"));
    assert_eq!(msgs[1].application_properties["k"], "v");
    let (status, text) = post(&bus, "/rp-copy/messages", &headers, r#"[{"NoBody":1}]"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("Body"), "{text}");
}

#[test]
fn abandon_redelivers_immediately_and_dead_letters_after_max_delivery_count() {
    let (bus, _) = bus_with(3, FaultConfig::default());
    bus.send(
        "rp-create",
        NewMessage {
            body: "b".into(),
            message_id: Some("m".into()),
            ..Default::default()
        },
    )
    .unwrap();
    for expected in 1..=3 {
        let d = bus.receive("rp-create").unwrap().expect("redelivered");
        assert_eq!(d.message.delivery_count, expected);
        // Locked: nobody else gets it meanwhile.
        assert!(bus.receive("rp-create").unwrap().is_none());
        assert!(bus.abandon("rp-create", &d.lock_token));
    }
    assert!(bus.receive("rp-create").unwrap().is_none());
    let dl = bus.dead_letters("rp-create").unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "MaxDeliveryCountExceeded");
    assert_eq!(dl[0].message.delivery_count, 3);
    assert!(!bus.complete("rp-create", "stale-token"));
}

#[test]
fn lock_expiry_redelivers_and_counts() {
    let (bus, clock) = bus_with(2, FaultConfig::default());
    bus.send(
        "rp-copy",
        NewMessage {
            body: "b".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let d1 = bus.receive("rp-copy").unwrap().unwrap();
    clock.advance(time::Duration::minutes(6));
    let d2 = bus.receive("rp-copy").unwrap().expect("lock expired");
    assert_eq!(d2.message.delivery_count, 2);
    assert!(!bus.complete("rp-copy", &d1.lock_token), "old lock is void");
    clock.advance(time::Duration::minutes(6));
    assert!(bus.receive("rp-copy").unwrap().is_none());
    assert_eq!(
        bus.dead_letters("rp-copy").unwrap()[0].reason,
        "MaxDeliveryCountExceeded"
    );
}

#[test]
fn duplicate_delivery_fault_delivers_once_more() {
    let mut faults = FaultConfig::default();
    faults.service_bus.duplicate_delivery = 1.0;
    let (bus, _) = bus_with(10, faults);
    bus.send(
        "rp-poll",
        NewMessage {
            body: "b".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let d = bus.receive("rp-poll").unwrap().unwrap();
    assert!(bus.complete("rp-poll", &d.lock_token));
    let again = bus
        .receive("rp-poll")
        .unwrap()
        .expect("delivered a second time");
    assert!(bus.complete("rp-poll", &again.lock_token));
    assert!(
        bus.receive("rp-poll").unwrap().is_none(),
        "only one duplicate"
    );
    assert_eq!(
        bus.counters("rp-poll")
            .unwrap()
            .duplicate_deliveries_injected,
        1
    );
}

#[test]
fn broker_times_parse_in_the_documented_forms() {
    let expected = datetime!(2026-11-25 21:30:15 UTC);
    for text in [
        "Wed, 25 Nov 2026 21:30:15 GMT",
        "Wed, 25 Nov 2026 21:30:15 +0000",
        "Wed, 25 Nov 2026 23:30:15 +0200",
        "2026-11-25T21:30:15Z",
    ] {
        assert_eq!(parse_broker_time(text), Ok(expected), "{text}");
    }
    assert!(parse_broker_time("25/11/2026")
        .unwrap_err()
        .contains("ScheduledEnqueueTimeUtc"));
}

/// Moved from vmrp-testing (it needs both crates): the fake scheduler's duplicate-detection
/// window is the emulator's, and the deployed queue's.
#[test]
fn the_fake_window_is_the_emulators_and_the_deployed_one() {
    assert_eq!(vmrp_testing::DUPLICATE_DETECTION_WINDOW, DUPLICATE_WINDOW);
}
