//! Tests of the Service Bus sender: settings, connection strings, SAS tokens, batches and retries.

use super::*;

const KEY: &str = "c2VjcmV0LWtleS1ub3QtcmVhbA==";

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[test]
fn parses_connection_strings() {
    let cs = ConnectionString::parse(
        "S",
        &format!("Endpoint=sb://MyNs.servicebus.windows.net/;SharedAccessKeyName=Send;SharedAccessKey={KEY};EntityPath=rp-poll"),
    )
    .unwrap();
    assert_eq!(cs.host, "myns.servicebus.windows.net");
    assert_eq!(cs.namespace_label(), "myns");
    assert_eq!(cs.key_name, "Send");
    assert_eq!(cs.key, KEY, "'=' inside the key survives");
    assert_eq!(cs.entity_path.as_deref(), Some("rp-poll"));

    let emu = ConnectionString::parse(
        "S",
        "endpoint=sb://localhost;sharedaccesskeyname=RootManageSharedAccessKey;sharedaccesskey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
    )
    .unwrap();
    assert!(emu.development_emulator);
    assert_eq!(emu.host, "localhost");
}

#[test]
fn bad_connection_strings_name_the_problem() {
    let cases = [
        (
            "SharedAccessKeyName=a;SharedAccessKey=b",
            "missing Endpoint",
        ),
        (
            "Endpoint=myns;SharedAccessKeyName=a;SharedAccessKey=b",
            "not a URL",
        ),
        (
            "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey=b",
            "SharedAccessKeyName",
        ),
        (
            "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a",
            "SharedAccessKey",
        ),
        ("Endpoint=sb://x/;garbage", "without '='"),
    ];
    for (text, want) in cases {
        let err = ConnectionString::parse("ServiceBusConnection", text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(want) && msg.starts_with("ServiceBusConnection"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn settings_lookup_order_and_identity_section() {
    let cs = format!(
        "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey={KEY}"
    );
    let cs2 = format!(
        "Endpoint=sb://b.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey={KEY}"
    );
    let s = ServiceBusSettings::from_env(
        &env_of(&[
            ("ServiceBusConnection", &cs),
            ("AzureWebJobsServiceBusConnection", &cs2),
        ]),
        CONNECTION_NAME,
    )
    .unwrap();
    assert!(
        matches!(&s, ServiceBusSettings::SharedAccessKey { setting, connection } if setting == "ServiceBusConnection" && connection.host.starts_with("a."))
    );

    let s = ServiceBusSettings::from_env(
        &env_of(&[("AzureWebJobsServiceBusConnection", &cs2)]),
        CONNECTION_NAME,
    )
    .unwrap();
    assert!(
        matches!(&s, ServiceBusSettings::SharedAccessKey { setting, .. } if setting == "AzureWebJobsServiceBusConnection")
    );

    let s = ServiceBusSettings::from_env(
        &env_of(&[
            (
                "ServiceBusConnection__fullyQualifiedNamespace",
                "ns1.servicebus.windows.net",
            ),
            ("ServiceBusConnection__credential", "managedidentity"),
            ("ServiceBusConnection__clientId", "cid"),
        ]),
        CONNECTION_NAME,
    )
    .unwrap();
    assert_eq!(
        s,
        ServiceBusSettings::Identity {
            setting: "ServiceBusConnection".into(),
            fully_qualified_namespace: "ns1.servicebus.windows.net".into(),
            client_id: Some("cid".into()),
        }
    );

    let err = ServiceBusSettings::from_env(
        &env_of(&[
            (
                "ServiceBusConnection__fullyQualifiedNamespace",
                "ns1.servicebus.windows.net",
            ),
            ("ServiceBusConnection__credential", "clientsecret"),
        ]),
        CONNECTION_NAME,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("ServiceBusConnection__credential"),
        "{err}"
    );

    let err = ServiceBusSettings::from_env(&env_of(&[]), CONNECTION_NAME).unwrap_err();
    assert!(
        err.to_string()
            .contains("ServiceBusConnection__fullyQualifiedNamespace"),
        "{err}"
    );
}

#[test]
fn debug_of_settings_redacts_the_key() {
    let cs = format!(
        "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey={KEY}"
    );
    let s =
        ServiceBusSettings::from_env(&env_of(&[("ServiceBusConnection", &cs)]), CONNECTION_NAME)
            .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains("c2VjcmV0"),
        "{shown}"
    );
    assert!(
        shown.contains("<redacted>") && shown.contains("a.servicebus.windows.net"),
        "{shown}"
    );
    let sched = SasScheduler::new(
        match s {
            ServiceBusSettings::SharedAccessKey { connection, .. } => connection,
            _ => unreachable!(),
        },
        ServiceBusOptions::default(),
    )
    .unwrap();
    assert!(!format!("{sched:?}").contains(KEY));
}

#[test]
fn sas_tokens_are_reused_for_a_minute_per_queue_then_signed_afresh() {
    let connection = ConnectionString::parse(
        "S",
        &format!("Endpoint=sb://MyNs.servicebus.windows.net/;SharedAccessKeyName=Send;SharedAccessKey={KEY}"),
    )
    .unwrap();
    let signer = SasSigner::new(&connection);
    let t = 1_795_642_158;
    let first = signer.header(Queue::Poll, t);
    assert_eq!(
        first,
        signer.sign(Queue::Poll, t + 3600),
        "signed for an hour"
    );
    assert!(first.starts_with(
        "SharedAccessSignature sr=https%3A%2F%2Fmyns.servicebus.windows.net%2Frp-poll%2Fmessages&sig="
    ));
    assert!(first.ends_with(&format!("&se={}&skn=Send", t + 3600)));
    assert_eq!(signer.header(Queue::Poll, t + 59), first, "reused");
    assert_ne!(signer.header(Queue::Create, t + 59), first, "per queue");
    let later = signer.header(Queue::Poll, t + 60);
    assert_eq!(later, signer.sign(Queue::Poll, t + 60 + 3600), "re-signed");
    // A clock that went back does not keep a token signed "in the future".
    assert_eq!(
        signer.header(Queue::Poll, t),
        signer.sign(Queue::Poll, t + 3600)
    );
}

#[test]
fn sas_signs_the_namespace_host_of_sovereign_clouds() {
    let connection = ConnectionString::parse(
        "S",
        &format!("Endpoint=sb://ns1.servicebus.chinacloudapi.cn/;SharedAccessKeyName=Send;SharedAccessKey={KEY}"),
    )
    .unwrap();
    let header = SasSigner::new(&connection).sign(Queue::Create, 1_795_642_158);
    assert!(
        header.starts_with(
            "SharedAccessSignature sr=https%3A%2F%2Fns1.servicebus.chinacloudapi.cn%2Frp-create%2Fmessages&sig="
        ),
        "{header}"
    );
}

#[test]
fn enqueue_time_format_table() {
    use time::macros::datetime;
    let cases = [
        (
            datetime!(2026-11-25 21:30:15.123456 UTC),
            Ok("Wed, 25 Nov 2026 21:30:16 GMT"),
        ),
        (
            datetime!(2026-11-25 23:59:59.000001 UTC),
            Ok("Thu, 26 Nov 2026 00:00:00 GMT"),
        ),
        (
            datetime!(2026-11-25 23:30:15 +02:00),
            Ok("Wed, 25 Nov 2026 21:30:15 GMT"),
        ),
        (
            datetime!(2027-01-03 04:05:06 UTC),
            Ok("Sun, 03 Jan 2027 04:05:06 GMT"),
        ),
        (datetime!(1899-12-31 00:00:00 UTC), Err("outside years")),
    ];
    for (at, want) in cases {
        match (format_enqueue_time(at), want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w),
            (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
            (g, w) => panic!("{at}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn batches_split_by_queue_and_count() {
    let m = |q: Queue, i: usize| OutgoingMessage {
        queue: q,
        message_id: format!("m{i}"),
        body: "{}".into(),
        not_before: None,
    };
    let msgs = vec![
        m(Queue::Create, 1),
        m(Queue::Create, 2),
        m(Queue::Poll, 3),
        m(Queue::Create, 4),
    ];
    let got = batches(msgs, 2).unwrap();
    let shape: Vec<(Queue, Vec<String>)> = got
        .iter()
        .map(|(q, items)| {
            (
                *q,
                items
                    .iter()
                    .map(|i| {
                        i["BrokerProperties"]["MessageId"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (Queue::Create, vec!["m1".into(), "m2".into()]),
            (Queue::Poll, vec!["m3".into()]),
            (Queue::Create, vec!["m4".into()]),
        ]
    );
}
