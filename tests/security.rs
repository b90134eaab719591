//! Security end to end, with the real `vmrp` binary behind the Functions host
//! simulation: a message for a VM outside the policy is refused (`out_of_scope`) after ONE
//! delivery and parked on `rp-failed` with its reason (docs/lifecycle.md, "Failed
//! messages are parked, once"); no SAS key, bearer token, identity header or
//! connection string appears in the handler's log (at `debug`, every crate) or in this process's
//! own log output, also on the 401 and send-failure paths with SAS and identity auth; every
//! listener binds 127.0.0.1 only.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::macros::datetime;

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
    // Every crate at debug: request and response logging included.
    s.handler_log_level = Some("debug".into());
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
    let signatures = emulator.bus.presented_sas_signatures();
    assert!(!signatures.is_empty(), "the handler sent with SAS");
    secrets.extend(signatures.into_iter().map(|s| ("SAS signature", s)));
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

/// One `vmrp serve` process with these app settings at `RUST_LOG=debug` (every crate), its
/// stdout and stderr into `log`.
struct Handler {
    child: std::process::Child,
    port: u16,
}

impl Handler {
    fn start(settings: &std::collections::BTreeMap<String, String>, log: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vmrp"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(settings)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("RUST_LOG", "debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, port }
    }

    /// POSTs a host envelope (retrying while the handler starts); the HTTP status.
    async fn invoke(&self, function: &str, envelope: &Value) -> u16 {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://127.0.0.1:{}/{function}", self.port);
        let started = Instant::now();
        loop {
            match http.post(&url).json(envelope).send().await {
                Ok(r) => return r.status().as_u16(),
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the handler never answered: {e}"),
            }
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The failure paths, where an error (and whatever request it came from) is most likely to be
/// logged whole, at `debug` for every crate, with SAS and with identity auth: Service Bus
/// refusing a SAS token signed with the wrong key (401, the send fails, the invocation fails),
/// the identity endpoint refusing the identity header (401, no token, ARM never reached), ARM
/// refusing a token issued for another audience (401 with a real bearer token on the request).
/// No key, signature, identity header, token or connection string may appear in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged_at_debug_on_auth_and_send_failures() {
    use vmrp::emulator::server::{self, EmulatorConfig};
    // ARM's clock (the emulator's) starts at the first case's tick: a create re-checks its
    // tick's cut-off on ARM's clock before writing, so a real-time emulator would call these
    // January ticks superseded and never reach Service Bus.
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: datetime!(2026-01-05 04:00:01 UTC),
        arm: vmrp::emulator::arm::ArmConfig {
            fleet: vmrp::emulator::arm::FleetSpec {
                count: 2,
                tagged_fraction: 1.0,
                ephemeral_os_fraction: 0.0,
                shared_disk_fraction: 0.0,
                ultra_disk_fraction: 0.0,
                premium_v2_fraction: 0.0,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let policy = vmrp::local::default_policy(&emulator.subscriptions, &[], ("vmrp", "on"));
    let vm = emulator.arm.list_vms()[0].id.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A key of the same shape as the real one, so a signature is made and sent, then refused.
    let wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=".to_string();
    let wrong_header = "wrong-identity-header-0123456789".to_string();
    let base = |auth: BusAuth| {
        let mut s = emulator.handler_settings(auth);
        s.insert(
            "VMRP_POLICY".into(),
            serde_json::to_string(&policy).unwrap(),
        );
        s.insert("VMRP_LOOPBACK_ONLY".into(), "1".into());
        s
    };
    let mut sas_wrong_key = base(BusAuth::Sas);
    sas_wrong_key.insert(
        "ServiceBusConnection".into(),
        emulator
            .service_bus_connection_string()
            .replace(&emulator.sas_key, &wrong_key),
    );
    let mut identity_wrong_header = base(BusAuth::Identity);
    identity_wrong_header.insert("IDENTITY_HEADER".into(), wrong_header.clone());
    let mut identity_wrong_audience = base(BusAuth::Identity);
    identity_wrong_audience.insert(
        "VMRP_ARM_AUDIENCE".into(),
        "https://servicebus.azure.net".into(),
    );
    // (case, settings, the refusal the emulator serves, the invocation's HTTP status): a failed
    // send fails the invocation (500, redelivered); a refused credential is reported (200).
    let cases = [
        ("sas-wrong-key", sas_wrong_key, "serviceBus 401", 500),
        (
            "identity-wrong-header",
            identity_wrong_header,
            "identity 401",
            200,
        ),
        (
            "identity-wrong-audience",
            identity_wrong_audience,
            "arm 401",
            200,
        ),
    ];
    let mut logs = Vec::new();
    for (i, (name, settings, refusal, want)) in cases.iter().enumerate() {
        let before = emulator.dump()["requests"][*refusal].as_u64().unwrap_or(0);
        let log = dir.path().join(format!("{name}.log"));
        let handler = Handler::start(settings, &log);
        // A scheduled tick (every 4 h) per case, invoked just after it, so each case is a fresh
        // create the handler accepts and takes to ARM and Service Bus.
        let tick = datetime!(2026-01-05 04:00 UTC) + time::Duration::hours(4 * i as i64);
        let utc_now = (tick + time::Duration::seconds(5))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = json!({"v": 1, "kind": "create", "vm": vm,
            "tick": tick.format(&time::format_description::well_known::Rfc3339).unwrap()});
        let envelope = common::service_bus_envelope(
            "CreateRestorePoint",
            &body.to_string(),
            1,
            &format!("m-{name}"),
            &utc_now,
        );
        let status = handler.invoke("CreateRestorePoint", &envelope).await;
        drop(handler);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status, *want, "{name}\n{text}");
        let after = emulator.dump()["requests"][*refusal].as_u64().unwrap_or(0);
        assert!(after > before, "{name}: {refusal} served\n{text}");
        assert!(
            text.lines().any(|l| l.contains("DEBUG")),
            "{name}: logged at debug\n{text}"
        );
        logs.push((*name, text));
    }
    let mut secrets = vec![
        ("SAS key", emulator.sas_key.clone()),
        ("wrong SAS key", wrong_key),
        (
            "connection string",
            emulator.service_bus_connection_string(),
        ),
        ("identity header", emulator.identity_header.clone()),
        ("wrong identity header", wrong_header),
    ];
    let tokens = emulator.identity.issued_tokens();
    assert!(!tokens.is_empty(), "tokens were issued and used");
    secrets.extend(tokens.into_iter().map(|t| ("bearer token", t)));
    let signatures = emulator.bus.presented_sas_signatures();
    assert!(!signatures.is_empty(), "a SAS token was signed and sent");
    secrets.extend(signatures.into_iter().map(|s| ("SAS signature", s)));
    emulator.stop().await.unwrap();
    for (name, text) in &logs {
        for (what, value) in &secrets {
            assert!(value.len() >= 8, "{what} is a real secret");
            assert!(
                !text.contains(value.as_str()),
                "{what} in the {name} log:\n{text}"
            );
        }
        assert!(
            !text.contains("SharedAccessSignature"),
            "a SAS token in the {name} log"
        );
        assert!(!text.contains("sig="), "a SAS signature in the {name} log");
        assert!(
            !text.to_ascii_lowercase().contains("bearer "),
            "a bearer token in the {name} log"
        );
    }
}
