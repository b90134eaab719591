//! Tests of the app loading and the wire format helpers (no handler process).

use super::tests::FIXTURE_APP;
use super::*;
use time::macros::datetime;

#[test]
fn retry_policies_parse_and_back_off() {
    let invalid = |reason: String| HostSimError::BadEvent(reason);
    let exp = serde_json::json!({"retry": {"strategy": "exponentialBackoff", "maxRetryCount": 5,
            "minimumInterval": "00:00:10", "maximumInterval": "00:01:00"}});
    let p = load_retry(&exp, &invalid).unwrap().unwrap();
    assert_eq!(p.max_retry_count, 5);
    let delays: Vec<i64> = (1..=5).map(|r| p.delay(r).whole_seconds()).collect();
    assert_eq!(delays, vec![10, 20, 40, 60, 60]);
    let fixed = serde_json::json!({"retry": {"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:05"}});
    assert_eq!(
        load_retry(&fixed, &invalid)
            .unwrap()
            .unwrap()
            .delay(2)
            .whole_seconds(),
        5
    );
    assert!(load_retry(&serde_json::json!({}), &invalid)
        .unwrap()
        .is_none());
    let bad = serde_json::json!({"retry": {"strategy": "sometimes", "maxRetryCount": 2}});
    assert!(load_retry(&bad, &invalid).is_err());
}

#[test]
fn timer_retries_carry_a_retry_context() {
    let now = time::macros::datetime!(2026-01-05 08:00 UTC);
    let ctx = RetryContext {
        retry_count: 2,
        max_retry_count: 5,
        exception: Some("HTTP 500".into()),
    };
    let body: Value = serde_json::from_str(&timer_body_with_retry(
        "ScheduleRestorePoints",
        "timer",
        None,
        false,
        now,
        Some(&ctx),
    ))
    .unwrap();
    let rc = &body["Metadata"]["RetryContext"];
    assert_eq!(rc["RetryCount"], 2);
    assert_eq!(rc["MaxRetryCount"], 5);
    assert_eq!(rc["Exception"]["Message"], "HTTP 500");
    assert!(rc["Instance"].is_null());
    let plain: Value = serde_json::from_str(&timer_body(
        "ScheduleRestorePoints",
        "timer",
        None,
        false,
        now,
    ))
    .unwrap();
    assert!(plain["Metadata"].get("RetryContext").is_none());
}
#[test]
fn loads_the_fixture_app() {
    let lookup = |k: &str| (k == "VMRP_SCHEDULE").then(|| "0 0 3 * * *".to_string());
    let app = FunctionApp::load(Path::new(FIXTURE_APP), &lookup).unwrap();
    let names: Vec<_> = app.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "CreateRestorePoint",
            "OnVmChanged",
            "PlanRestorePoints",
            "PollRestorePoint",
            "ScheduleRestorePoints",
            "StartCrossRegionCopy"
        ]
    );
    // The timer's fan-out queue routes to the planning function.
    assert!(
        matches!(&app.function("PlanRestorePoints").unwrap().trigger,
            Trigger::ServiceBus { binding, queue, binary: false } if binding == "msg" && queue == "rp-plan")
    );
    assert_eq!(app.host.function_timeout, Some(time::Duration::minutes(10)));
    assert_eq!(app.host.max_concurrent_calls, 16);
    assert_eq!(app.host.executable, "vmrp");
    assert!(matches!(&app.function("PollRestorePoint").unwrap().trigger,
            Trigger::ServiceBus { binding, queue, binary: false } if binding == "msg" && queue == "rp-poll"));
    assert!(
        matches!(&app.function("ScheduleRestorePoints").unwrap().trigger,
            Trigger::Timer { schedule, .. } if schedule == "0 0 3 * * *")
    );
    let none = |_: &str| None;
    let err = FunctionApp::load(Path::new(FIXTURE_APP), &none)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VMRP_SCHEDULE") && err.contains("schedule"),
        "{err}"
    );
}

#[test]
fn console_lines_get_the_hosts_levels() {
    let cases = [
        (
            false,
            r#"{"level":"ERROR","fields":{"outcome":"given_up"}}"#,
            ConsoleLevel::Information,
        ),
        (
            true,
            r#"{"level":"ERROR","fields":{"outcome":"given_up"}}"#,
            ConsoleLevel::Error,
        ),
        (
            true,
            r#"{"level":"WARN","fields":{"message":"vanished"}}"#,
            ConsoleLevel::Warning,
        ),
        (true, "ERROR: warning quoted", ConsoleLevel::Warning),
        (true, "request failed", ConsoleLevel::Error),
        (true, "SEVERE", ConsoleLevel::Error),
        (true, "listening on 127.0.0.1", ConsoleLevel::Information),
        (false, "error", ConsoleLevel::Information),
    ];
    for (stderr, line, level) in cases {
        assert_eq!(console_level(stderr, line), level, "{stderr} {line}");
    }
}

#[test]
fn timespans_parse_like_host_json() {
    let cases: &[(&str, Result<Option<i64>, ()>)] = &[
        ("00:10:00", Ok(Some(600))),
        ("00:00:00.8000000", Ok(Some(0))),
        ("1.02:00:00", Ok(Some(93_600))),
        ("-1", Ok(None)),
        ("10", Err(())),
        ("00:61:00", Err(())),
    ];
    for (text, expected) in cases {
        let got = parse_timespan(text)
            .map(|d| d.map(|d| d.whole_seconds()))
            .map_err(|_| ());
        assert_eq!(&got, expected, "{text}");
    }
}

#[test]
fn percent_expansion_deletes_unresolved_tokens() {
    let lookup = |k: &str| (k == "A").then(|| "1".to_string());
    for (input, expected) in [
        ("%A%", "1"),
        ("x%A%y", "x1y"),
        ("%B%", ""),
        ("50% off", "50% off"),
        ("%A%%B%", "1"),
    ] {
        assert_eq!(expand_percent(input, &lookup), expected, "{input}");
    }
}

#[test]
fn body_metadata_casts_scalars_to_strings_then_encodes() {
    let meta =
        body_metadata(r#"{"s":"v","n":2,"f":1.5,"g":2.0,"b":true,"o":{"k":1},"a":[1],"z":null}"#);
    let got: BTreeMap<String, Value> = meta
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(&v).unwrap()))
        .collect();
    let expected: BTreeMap<String, Value> = [
        ("s", Value::from("\"v\"")),
        ("n", Value::from("\"2\"")),
        ("f", Value::from("\"1.5\"")),
        ("g", Value::from("\"2\"")),
        ("b", Value::from("\"True\"")),
        ("o", serde_json::json!({"k": 1})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, expected);
    assert!(body_metadata("plain text").is_empty());
    assert!(body_metadata("[1,2]").is_empty());
}

#[test]
fn body_keys_overwrite_case_insensitively_and_trigger_keys_drop() {
    let mut entries = vec![
        ("MessageId".to_string(), json("\"a\"")),
        ("sys".to_string(), json(1)),
    ];
    merge_metadata(
        &mut entries,
        vec![
            ("messageid".into(), json("\"b\"")),
            ("myTrigger".into(), json("x")),
        ],
    );
    let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["MessageId", "sys"]);
    assert_eq!(serde_json::to_value(&entries[0].1).unwrap(), "\"b\"");
}

#[test]
fn dates_are_written_like_newtonsoft() {
    let t = datetime!(2024-10-25 03:00:05.48712365 UTC);
    assert_eq!(format_utc_z(t), "2024-10-25T03:00:05.4871236Z");
    assert_eq!(
        format_local_offset(datetime!(2024-10-25 03:00 UTC)),
        "2024-10-25T03:00:00+00:00"
    );
    assert_eq!(
        format_local_offset(datetime!(2024-10-24 03:00:00.01 UTC)),
        "2024-10-24T03:00:00.01+00:00"
    );
    assert_eq!(format_datetime_seconds(t), "2024-10-25T03:00:05");
    assert_eq!(
        format_datetimeoffset_seconds(t),
        "2024-10-25T03:00:05+00:00"
    );
    assert_eq!(
        format_local_offset(dotnet_min_value()),
        "0001-01-01T00:00:00+00:00"
    );
}

#[test]
fn outputs_become_messages_like_the_service_bus_binding() {
    assert_eq!(
        output_messages(&serde_json::json!([{"a":1}, "text", 3])),
        ["{\n  \"a\": 1\n}", "text", "3"]
    );
    assert_eq!(
        output_messages(&serde_json::json!("[{\"a\":1},{\"b\":2}]")).len(),
        2
    );
    assert_eq!(
        output_messages(&serde_json::json!("vm01")),
        ["System.Byte[]"]
    );
    assert_eq!(
        output_messages(&serde_json::json!("hello world")),
        ["hello world"]
    );
    assert!(output_messages(&Value::Null).is_empty());
}

#[test]
fn events_are_validated_and_completed() {
    let now = datetime!(2026-11-25 21:00 UTC);
    let events = normalize_events(
        serde_json::json!({"eventType": "X", "subject": "/s", "data": {}}),
        now,
    )
    .unwrap();
    assert!(events[0]["id"].is_string());
    assert_eq!(events[0]["eventTime"], "2026-11-25T21:00:00Z");
    let ce = normalize_events(
        serde_json::json!([{"specversion": "1.0", "type": "X", "source": "/s", "id": "1"}]),
        now,
    )
    .unwrap();
    assert_eq!(ce[0]["id"], "1");
    let err = normalize_events(serde_json::json!([{"subject": "/s"}]), now)
        .unwrap_err()
        .to_string();
    assert!(err.contains("eventType"), "{err}");
    assert!(normalize_events(serde_json::json!(3), now).is_err());
}
