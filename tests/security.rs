//! Security end to end, with the real `vmrp` binary behind the Functions host
//! simulation: a message for a VM outside the policy is refused (`out_of_scope`) after ONE
//! delivery and parked on `rp-failed` with its reason (docs/lifecycle.md, "Failed
//! messages are parked, once"); no SAS key, bearer token, identity header or
//! connection string appears in the handler's log or in this process's own log output; every
//! listener binds 127.0.0.1 only.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmrp::emulator::server::BusAuth;
use vmrp::local::{run_scenario_keep, summary_line, Scenario};

use common::listeners_on;

/// Everything this process logs through `tracing` (the emulator and the host simulation run
/// in-process), kept for the secret scan.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_is_refused_once_and_parked_and_no_secret_is_logged_and_listeners_are_loopback(
) {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let handler_log = dir.path().join("handler.log");
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_vmrp")));
    s.fleet.count = 8;
    // Two subscriptions, the policy covers only the first: the second is outside every scope.
    s.fleet.subscriptions = 2;
    s.copy_to = Vec::new();
    s.ticks = 1;
    s.speed = 2400.0;
    s.timeout = Duration::from_secs(120);
    s.handler_log = Some(handler_log.clone());
    let subs = vmrp::emulator::arm::fleet::generate(&s.fleet, time::OffsetDateTime::UNIX_EPOCH)
        .subscriptions;
    let policy = json!({"rules": [{
        "name": "first-subscription",
        "targets": {"subscriptions": [subs[0]], "tags": {"vmrp": "on"}},
        "retention": {"keepLast": 3}
    }]});
    s.policy = Some(vmrp::policy::Policy::from_json_str(&policy.to_string()).unwrap());
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    assert!(report.complete, "{}", summary_line(&report));
    assert_eq!(
        report.vms, 4,
        "only the first subscription's VMs are in scope"
    );

    // A create request for a VM of the other subscription, straight onto the queue the host
    // listens to (as a forged or stale message would arrive).
    let outsider = emulator
        .arm
        .list_vms()
        .into_iter()
        .filter_map(|vm| vm.id)
        .find(|id| id.contains(&subs[1]))
        .expect("a VM of the second subscription");
    let body = json!({"v": 1, "kind": "create", "vm": outsider, "tick": "2026-01-05T04:00:00Z"});
    emulator
        .bus
        .send(
            "rp-create",
            vmrp::emulator::servicebus::NewMessage {
                body: body.to_string(),
                message_id: Some("out-of-scope-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let started = Instant::now();
    let parked = loop {
        let parked: Vec<Value> = emulator
            .bus
            .messages("rp-failed")
            .unwrap_or_default()
            .iter()
            .filter_map(|m| serde_json::from_str::<Value>(&m.body).ok())
            .collect();
        if let Some(p) = parked
            .into_iter()
            .find(|p| p["messageId"] == "out-of-scope-1")
        {
            break p;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let sim = emulator.host_sim().expect("the host simulation runs");
            let mine: Vec<_> = sim
                .records()
                .into_iter()
                .filter(|r| r.message_id.as_deref() == Some("out-of-scope-1"))
                .collect();
            panic!(
                "never parked; invocations: {mine:#?}\nqueue: {:#?}\ndead letters: {:#?}",
                emulator.bus.messages("rp-create"),
                emulator.bus.dead_letters("rp-create")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked["queue"], "rp-create", "{parked}");
    assert_eq!(parked["errorKind"], "out_of_scope", "{parked}");
    assert_eq!(parked["deliveryCount"], 1, "{parked}");
    assert!(
        parked["reason"]
            .as_str()
            .unwrap()
            .contains("outside every policy scope"),
        "{parked}"
    );
    assert_eq!(
        parked["body"],
        body.to_string(),
        "the original message, verbatim"
    );
    // Give a redelivery the chance it would have had (the lock is 5 virtual minutes), then:
    // one delivery, completed, nothing dead-lettered, nothing left on the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sim = emulator.host_sim().expect("the host simulation runs");
    let refusals: Vec<_> = sim
        .records()
        .into_iter()
        .filter(|r| r.message_id.as_deref() == Some("out-of-scope-1"))
        .collect();
    assert_eq!(refusals.len(), 1, "one delivery: {refusals:#?}");
    assert_eq!(refusals[0].http_status, Some(200), "{refusals:#?}");
    let answer = refusals[0].response.clone().unwrap_or(Value::Null);
    assert_eq!(answer["ReturnValue"]["status"], "reported", "{answer}");
    assert!(emulator
        .bus
        .dead_letters("rp-create")
        .unwrap_or_default()
        .iter()
        .all(|d| d.message.message_id != "out-of-scope-1"));
    assert!(emulator
        .bus
        .messages("rp-create")
        .unwrap_or_default()
        .iter()
        .all(|m| m.message_id != "out-of-scope-1"));
    // Nothing was created for it.
    let name = outsider.rsplit('/').next().unwrap().to_string();
    assert!(
        !emulator
            .arm
            .restore_points()
            .iter()
            .any(|p| p.vm.ends_with(&format!("/{name}"))),
        "no point for the outsider"
    );

    // Listeners: the emulator and the handler, IPv4 loopback only (0100007F = 127.0.0.1).
    assert!(
        emulator.local_addr.ip().is_loopback(),
        "{}",
        emulator.local_addr
    );
    for port in [emulator.local_addr.port(), sim.handler_port()] {
        assert_eq!(
            listeners_on(port),
            vec![("/proc/net/tcp", "0100007F".to_string())],
            "port {port}"
        );
    }

    // Secrets: the actual values this run used, nowhere in the logs.
    let mut secrets = vec![
        ("SAS key", emulator.sas_key.clone()),
        (
            "connection string",
            emulator.service_bus_connection_string(),
        ),
        ("identity header", emulator.identity_header.clone()),
    ];
    let settings = emulator.handler_settings(BusAuth::Sas);
    for (k, v) in &settings {
        if k.contains("Connection") || k.contains("HEADER") {
            secrets.push(("setting", v.clone()));
        }
    }
    let tokens = emulator.identity.issued_tokens();
    assert!(
        !tokens.is_empty(),
        "the handler got tokens from the identity endpoint"
    );
    secrets.extend(tokens.into_iter().map(|t| ("bearer token", t)));
    let handler_text = std::fs::read_to_string(&handler_log).unwrap();
    assert!(
        handler_text.lines().count() > 10,
        "the handler logged: {handler_text}"
    );
    emulator.stop().await.unwrap();
    let own_text = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(
        !own_text.is_empty(),
        "this process logged something to scan"
    );
    for (what, value) in &secrets {
        assert!(value.len() >= 8, "{what} is a real secret");
        assert!(
            !handler_text.contains(value.as_str()),
            "{what} in the handler log"
        );
        assert!(
            !own_text.contains(value.as_str()),
            "{what} in the test's log output"
        );
    }
    for text in [&handler_text, &own_text] {
        assert!(
            !text.contains("SharedAccessSignature sr="),
            "a SAS token was logged"
        );
        assert!(
            !text.to_ascii_lowercase().contains("bearer vmrp-emu."),
            "a bearer token was logged"
        );
    }
}
