//! The Service Bus schedulers against a loopback fake: the SAS path (REST POSTs signed like the
//! legacy crate signed them) with the signature recomputed independently, the Entra path with a
//! bearer token and REST batches, the exact BrokerProperties header, retries and failures.

mod azure_support;

use std::time::Duration;

use azure_support::{Canned, Fake};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use time::macros::datetime;
use vmrp::azure::credential::StaticToken;
use vmrp::azure::error::ErrorClass;
use vmrp::azure::http::RetryConfig;
use vmrp::azure::servicebus::{scheduler_from_env, ServiceBusOptions};
use vmrp::azure::{OutgoingMessage, Queue};

const KEY: &str = "bm90LWEtcmVhbC1rZXktYnV0LWxvbmctZW5vdWdoLTEyMzQ1Ng==";

fn options() -> ServiceBusOptions {
    ServiceBusOptions {
        loopback_only: true,
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_millis(100),
        },
        ..Default::default()
    }
}

fn sas_env(fake: &Fake) -> impl Fn(&str) -> Option<String> {
    let base = fake.base.clone();
    move |k: &str| {
        match k {
        "ServiceBusConnection" => Some(format!(
            "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=SendOnly;SharedAccessKey={KEY}"
        )),
        "VMRP_SERVICEBUS_ENDPOINT" => Some(base.clone()),
        _ => None,
    }
    }
}

fn entra_env(fake: &Fake) -> impl Fn(&str) -> Option<String> {
    let base = fake.base.clone();
    move |k: &str| match k {
        "ServiceBusConnection__fullyQualifiedNamespace" => {
            Some("myns.servicebus.windows.net".into())
        }
        "VMRP_SERVICEBUS_ENDPOINT" => Some(base.clone()),
        _ => None,
    }
}

fn poll_message() -> OutgoingMessage {
    OutgoingMessage {
        queue: Queue::Poll,
        message_id: "poll-42-attempt-3".into(),
        body: r#"{"v":1,"kind":"poll","attempt":3}"#.into(),
        not_before: Some(datetime!(2026-11-25 21:30:15.123456 UTC)),
    }
}

/// Recomputes the SAS signature the way the Service Bus docs describe, independently of the
/// crate: HMAC-SHA256 over "{urlencoded resource}\n{expiry}" keyed with the key's UTF-8 bytes.
fn check_sas(header: &str, resource: &str, key_name: &str) {
    let rest = header
        .strip_prefix("SharedAccessSignature ")
        .unwrap_or_else(|| panic!("not a SAS: {header}"));
    let fields: std::collections::HashMap<&str, &str> = rest
        .split('&')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    let sr = fields["sr"];
    assert_eq!(
        sr,
        urlencoding::encode(resource),
        "sr is the urlencoded resource URL"
    );
    assert_eq!(fields["skn"], key_name);
    let se: i64 = fields["se"].parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 3500..=now + 3700).contains(&se),
        "expiry ~1 h ahead: {se} vs {now}"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        urlencoding::decode(fields["sig"]).unwrap(),
        expected,
        "signature matches an independent computation"
    );
}

#[tokio::test]
async fn sas_send_signs_and_sets_broker_properties() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-poll/messages", vec![Canned::empty(201)]);
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    sched.send(poll_message()).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/rp-poll/messages");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let props: Vec<_> = req.headers.get_all("brokerproperties").iter().collect();
    assert_eq!(props.len(), 1, "exactly one BrokerProperties header");
    // 21:30:15.123456 rounds up: a scheduled message never shows before the time asked.
    assert_eq!(
        props[0].to_str().unwrap(),
        r#"{"MessageId":"poll-42-attempt-3","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:16 GMT"}"#
    );
    assert_eq!(&req.body[..], poll_message().body.as_bytes());
    check_sas(
        req.header("authorization").unwrap(),
        "https://myns.servicebus.windows.net/rp-poll/messages",
        "SendOnly",
    );
}

#[tokio::test]
async fn sas_send_without_schedule_carries_only_the_message_id() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-create/messages", vec![Canned::empty(201)]);
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    sched
        .send(OutgoingMessage {
            queue: Queue::Create,
            message_id: "c-1".into(),
            body: "{}".into(),
            not_before: None,
        })
        .await
        .unwrap();
    assert_eq!(
        fake.seen()[0].header("brokerproperties"),
        Some(r#"{"MessageId":"c-1"}"#)
    );
}

#[tokio::test]
async fn sas_transient_failures_are_retried() {
    let fake = Fake::start().await;
    fake.on(
        "POST",
        "/rp-poll/messages",
        vec![Canned::empty(503), Canned::empty(500), Canned::empty(201)],
    );
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    sched.send(poll_message()).await.unwrap();
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn sas_unauthorized_is_permanent_and_not_retried() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-poll/messages", vec![Canned::empty(401)]);
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    let err = sched.send(poll_message()).await.unwrap_err();
    assert_eq!(err.status, Some(401));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.queue, "rp-poll");
    assert_eq!(fake.seen().len(), 1);
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn sas_batch_sends_every_message() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-create/messages", vec![Canned::empty(201)]);
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    let msgs: Vec<_> = (0..12)
        .map(|i| OutgoingMessage {
            queue: Queue::Create,
            message_id: format!("create-{i}"),
            body: format!(r#"{{"i":{i}}}"#),
            not_before: None,
        })
        .collect();
    sched.send_batch(msgs).await.unwrap();
    let mut ids: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| {
            let v: Value = serde_json::from_str(s.header("brokerproperties").unwrap()).unwrap();
            v["MessageId"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("create-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn unformattable_schedule_time_is_a_permanent_error_not_a_panic() {
    let fake = Fake::start().await;
    let sched = scheduler_from_env(&sas_env(&fake), None, options()).unwrap();
    let mut m = poll_message();
    m.not_before = Some(datetime!(1899-12-31 23:00:00 UTC));
    let err = sched.send(m).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.message.contains("1899"), "{err}");
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn entity_path_scoped_connection_refuses_other_queues() {
    let fake = Fake::start().await;
    let base = fake.base.clone();
    let env = move |k: &str| {
        match k {
        "ServiceBusConnection" => Some(format!(
            "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=S;SharedAccessKey={KEY};EntityPath=rp-copy"
        )),
        "VMRP_SERVICEBUS_ENDPOINT" => Some(base.clone()),
        _ => None,
    }
    };
    let sched = scheduler_from_env(&env, None, options()).unwrap();
    let err = sched.send(poll_message()).await.unwrap_err();
    assert!(err.message.contains("EntityPath"), "{err}");
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn entra_send_uses_bearer_token_and_same_broker_properties() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-poll/messages", vec![Canned::empty(201)]);
    let token = StaticToken::new("sb-token", Duration::from_secs(3600));
    let sched = scheduler_from_env(&entra_env(&fake), Some(token.clone()), options()).unwrap();
    sched.send(poll_message()).await.unwrap();
    let req = &fake.seen()[0];
    assert_eq!(req.header("authorization"), Some("Bearer sb-token"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.header("brokerproperties"),
        Some(
            r#"{"MessageId":"poll-42-attempt-3","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:16 GMT"}"#
        )
    );
    assert_eq!(&req.body[..], poll_message().body.as_bytes());
    assert_eq!(token.calls(), 1);
}

#[tokio::test]
async fn entra_batch_posts_json_arrays_per_queue() {
    let fake = Fake::start().await;
    fake.on("POST", "/rp-create/messages", vec![Canned::empty(201)]);
    fake.on("POST", "/rp-poll/messages", vec![Canned::empty(201)]);
    let token = StaticToken::new("sb-token", Duration::from_secs(3600));
    let sched = scheduler_from_env(&entra_env(&fake), Some(token), options()).unwrap();
    let create = |i: u32| OutgoingMessage {
        queue: Queue::Create,
        message_id: format!("create-{i}"),
        body: format!(r#"{{"i":{i}}}"#),
        not_before: Some(datetime!(2026-11-25 22:00:00 UTC)),
    };
    sched
        .send_batch(vec![create(1), create(2), poll_message()])
        .await
        .unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one POST per queue");
    let c = seen
        .iter()
        .find(|s| s.path == "/rp-create/messages")
        .unwrap();
    assert_eq!(
        c.header("content-type"),
        Some("application/vnd.microsoft.servicebus.json")
    );
    assert_eq!(c.header("brokerproperties"), None);
    assert_eq!(
        c.json(),
        json!([
            {"Body": r#"{"i":1}"#, "BrokerProperties": {"MessageId": "create-1", "ScheduledEnqueueTimeUtc": "Wed, 25 Nov 2026 22:00:00 GMT", "ContentType": "application/json"}},
            {"Body": r#"{"i":2}"#, "BrokerProperties": {"MessageId": "create-2", "ScheduledEnqueueTimeUtc": "Wed, 25 Nov 2026 22:00:00 GMT", "ContentType": "application/json"}},
        ])
    );
    let p = seen.iter().find(|s| s.path == "/rp-poll/messages").unwrap();
    assert_eq!(p.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn entra_throttling_honours_retry_after_then_surfaces() {
    let fake = Fake::start().await;
    fake.on(
        "POST",
        "/rp-poll/messages",
        vec![Canned::empty(429).header("Retry-After", "0")],
    );
    let token = StaticToken::new("sb-token", Duration::from_secs(3600));
    let sched = scheduler_from_env(&entra_env(&fake), Some(token), options()).unwrap();
    let err = sched.send(poll_message()).await.unwrap_err();
    assert_eq!(err.status, Some(429));
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(fake.seen().len(), 3, "bounded attempts");
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let none = |_: &str| None;
    let err = scheduler_from_env(&none, None, options())
        .err()
        .expect("no settings");
    assert!(err.to_string().contains("ServiceBusConnection"), "{err}");

    let fake = Fake::start().await;
    let err = scheduler_from_env(&entra_env(&fake), None, options())
        .err()
        .expect("no credential");
    assert!(err.to_string().contains("no credential"), "{err}");

    // loopback_only with the real namespace host and no override: refused at construction.
    let env = |k: &str| {
        (k == "ServiceBusConnection").then(|| {
            format!("Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=S;SharedAccessKey={KEY}")
        })
    };
    let err = scheduler_from_env(&env, None, options())
        .err()
        .expect("not loopback");
    assert!(err.to_string().contains("loopback"), "{err}");
}
