//! Tests of the running simulation: wire format against the reference payloads, delivery,
//! retries, timeouts, spawned and killed instances, timers and concurrency.

use super::*;
use crate::faults::{Dice, FaultConfig};
use crate::identity::IdentityEndpoint;
use crate::servicebus::BusConfig;
use axum::http::HeaderMap;
use std::collections::BTreeSet;
use time::macros::datetime;

pub(super) const FIXTURE_APP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/functions-app"
);
const PAYLOADS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../reference/functions-custom-handler/payloads"
);

fn payload(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{PAYLOADS}/{name}")).expect("payload file");
    serde_json::from_str(&text).unwrap()
}

#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: HeaderMap,
    raw: String,
    body: Value,
}

/// (status, content type, body) for the n-th (0-based) call of a path.
type Responder = Arc<dyn Fn(&str, usize) -> (u16, &'static str, String) + Send + Sync>;

/// A stand-in handler: answers GET / (readiness), records every POST.
async fn capture_server(responder: Responder) -> (u16, Arc<Mutex<Vec<Captured>>>) {
    use axum::extract::Request;
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = seen2.clone();
        let responder = responder.clone();
        async move {
            if req.method() == axum::http::Method::GET {
                return axum::response::Response::builder()
                    .status(404)
                    .body(axum::body::Body::empty())
                    .unwrap();
            }
            let path = req.uri().path().to_string();
            let headers = req.headers().clone();
            let bytes = axum::body::to_bytes(req.into_body(), 1 << 24)
                .await
                .unwrap();
            let raw = String::from_utf8(bytes.to_vec()).unwrap();
            let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.iter().filter(|c| c.path == path).count();
                seen.push(Captured {
                    path: path.clone(),
                    headers,
                    raw,
                    body,
                });
                n
            };
            let (status, ct, text) = responder(&path, n);
            axum::response::Response::builder()
                .status(status)
                .header("content-type", ct)
                .body(axum::body::Body::from(text))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn bus_and_clock(
    start: OffsetDateTime,
    speed: f64,
    max_delivery: u32,
) -> (Arc<ServiceBus>, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::new(start, speed));
    let bus = ServiceBus::new(
        BusConfig {
            namespace: "contoso-sb".into(),
            max_delivery_count: max_delivery,
            ..Default::default()
        },
        clock.clone(),
        Arc::new(Dice::new(3)),
        Arc::new(FaultConfig::default()),
        IdentityEndpoint::new("h", false),
    );
    (bus, clock)
}

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A coarse class of a string value: how it is encoded, not what it says.
fn class(s: &str) -> String {
    if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_string()) {
        return "json-encoded string".into();
    }
    if uuid::Uuid::parse_str(s).is_ok() {
        return "guid".into();
    }
    if s.parse::<i64>().is_ok() {
        return "integer".into();
    }
    let iso = s.len() >= 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
    if iso {
        let tail = &s[19..];
        let frac = tail.starts_with('.');
        let zone = if tail.ends_with('Z') {
            "Z"
        } else if tail.ends_with("+00:00") {
            "+00:00"
        } else if tail
            .trim_start_matches('.')
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            "none"
        } else {
            "other"
        };
        // Seconds-precision values must stay so; fractions may vary in length.
        return format!("iso zone={zone} seconds-only={}", !frac && zone != "Z");
    }
    "text".into()
}

fn assert_same_shape(expected: &Value, actual: &Value, path: &str, skip_fraction_check: &[&str]) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<_> = e.keys().collect();
            let ak: Vec<_> = a.keys().collect();
            assert_eq!(ek, ak, "keys of {path}");
            for (k, v) in e {
                assert_same_shape(v, &a[k], &format!("{path}.{k}"), skip_fraction_check);
            }
        }
        (Value::String(e), Value::String(a)) => {
            if skip_fraction_check.contains(&path) {
                return;
            }
            assert_eq!(
                class(e),
                class(a),
                "encoding of {path}: expected like {e:?}, got {a:?}"
            );
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "length of {path}");
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                assert_same_shape(x, y, &format!("{path}[{i}]"), skip_fraction_check);
            }
        }
        (e, a) => assert_eq!(
            std::mem::discriminant(e),
            std::mem::discriminant(a),
            "type of {path}: expected {e}, got {a}"
        ),
    }
}

fn assert_host_headers(c: &Captured) {
    let h = |k: &str| c.headers.get(k).map(|v| v.to_str().unwrap().to_string());
    let id = h("x-azure-functions-invocationid").expect("invocation id");
    assert_eq!(id, id.to_ascii_lowercase());
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(
        h("x-azure-functions-hostversion").as_deref(),
        Some(HOST_VERSION)
    );
    assert_eq!(
        h("user-agent"),
        Some(format!("Azure-Functions-Host/{HOST_VERSION}"))
    );
    assert_eq!(
        h("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(h("transfer-encoding").as_deref(), Some("chunked"));
    assert!(h("content-length").is_none());
    // Compact JSON, Data before Metadata.
    assert!(c.raw.starts_with("{\"Data\":{"), "{}", c.raw);
    assert!(c.raw.contains("},\"Metadata\":{"));
    assert!(!c.raw.contains('\n'));
}

fn decode_twice(v: &Value) -> String {
    let once: String = serde_json::from_str(v.as_str().unwrap()).unwrap();
    once
}

#[tokio::test]
async fn wire_format_matches_the_reference_payloads() {
    // Text-body poll fails twice so its third delivery carries DeliveryCount "3" as in the payload.
    let responder: Responder = Arc::new(|path, n| {
        if path == "/PollRestorePoint" && n < 2 {
            (500, "text/plain", "boom".into())
        } else {
            (200, "application/json", "{\"Logs\":[\"ok\"]}".into())
        }
    });
    let (port, seen) = capture_server(responder).await;
    // Start well before 03:00 so a slow start cannot miss the occurrence, then jump close.
    let (bus, clock) = bus_and_clock(datetime!(2024-10-25 02:00 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 * * *")]),
            timer_ticks: Some(1),
            ..HostSimConfig::new(FIXTURE_APP)
        },
        bus.clone(),
        clock.clone(),
    )
    .await
    .unwrap();

    clock.advance(datetime!(2024-10-25 02:59:59.5 UTC) - clock.now());
    let json_ref = payload("servicebus-json-body.json");
    let text_ref = payload("servicebus-text-body.json");
    let eg_ref = payload("eventgrid.json");
    let timer_ref = payload("timer.json");
    bus.send(
        "rp-copy",
        NewMessage {
            body: decode_twice(&json_ref["Data"]["msg"]),
            message_id: Some(decode_twice(&json_ref["Metadata"]["MessageId"])),
            content_type: Some("application/json".into()),
            application_properties: json_ref["Metadata"]["ApplicationProperties"]
                .as_object()
                .unwrap()
                .clone(),
            ..Default::default()
        },
    )
    .unwrap();
    bus.send(
        "rp-poll",
        NewMessage {
            body: decode_twice(&text_ref["Data"]["msg"]),
            message_id: Some(decode_twice(&text_ref["Metadata"]["MessageId"])),
            ..Default::default()
        },
    )
    .unwrap();
    sim.inject_events(eg_ref["Data"]["eventGridEvent"].clone())
        .unwrap();

    let count = |p: &str| seen.lock().unwrap().iter().filter(|c| c.path == p).count();
    wait_for("all invocations", 15, || {
        count("/StartCrossRegionCopy") == 1
            && count("/PollRestorePoint") == 3
            && count("/OnVmChanged") == 1
            && count("/ScheduleRestorePoints") == 1
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let get = |p: &str, n: usize| seen.iter().filter(|c| c.path == p).nth(n).unwrap().clone();
    for c in &seen {
        assert_host_headers(c);
    }

    // Service Bus, JSON body: same keys/encodings; deterministic values equal.
    let sb = get("/StartCrossRegionCopy", 0);
    assert_same_shape(&json_ref, &sb.body, "", &[]);
    assert_eq!(sb.body["Data"]["msg"], json_ref["Data"]["msg"]);
    for k in [
        "MessageId",
        "ContentType",
        "DeliveryCount",
        "ApplicationProperties",
        "UserProperties",
        "vmResourceId",
        "restorePointCollection",
        "restorePointName",
        "targetRegion",
        "attempt",
    ] {
        assert_eq!(
            sb.body["Metadata"][k], json_ref["Metadata"][k],
            "Metadata.{k}"
        );
    }
    assert_eq!(
        sb.body["Metadata"]["Client"]["FullyQualifiedNamespace"],
        "contoso-sb.servicebus.windows.net"
    );
    assert_eq!(
        sb.body["Metadata"]["sys"]["MethodName"],
        "StartCrossRegionCopy"
    );
    let enq = sb.body["Metadata"]["EnqueuedTimeUtc"].as_str().unwrap();
    assert_eq!(
        format!("{enq}+00:00"),
        sb.body["Metadata"]["EnqueuedTime"].as_str().unwrap()
    );

    // Service Bus, text body, third delivery.
    let text = get("/PollRestorePoint", 2);
    assert_same_shape(&text_ref, &text.body, "", &[]);
    assert_eq!(text.body["Data"]["msg"], text_ref["Data"]["msg"]);
    assert_eq!(text.body["Metadata"]["DeliveryCount"], "3");
    assert_eq!(
        get("/PollRestorePoint", 0).body["Metadata"]["DeliveryCount"],
        "1"
    );
    let seq = |c: &Captured| c.body["Metadata"]["SequenceNumber"].clone();
    assert_eq!(seq(&text), seq(&get("/PollRestorePoint", 0)));

    // Event Grid: the event passes through untouched.
    let eg = get("/OnVmChanged", 0);
    assert_same_shape(&eg_ref, &eg.body, "", &[]);
    assert_eq!(eg.body["Data"], eg_ref["Data"]);
    assert_eq!(eg.body["Metadata"]["data"], eg_ref["Metadata"]["data"]);

    // Timer: first run ever, at the 03:00 occurrence.
    let timer = get("/ScheduleRestorePoints", 0);
    assert_same_shape(
        &timer_ref,
        &timer.body,
        "",
        &[
            "",
            ".Data.timer.ScheduleStatus.Last",
            ".Data.timer.ScheduleStatus.LastUpdated",
        ],
    );
    let status = &timer.body["Data"]["timer"]["ScheduleStatus"];
    assert_eq!(status["Next"], "2024-10-25T03:00:00+00:00");
    assert_eq!(status["Last"], "0001-01-01T00:00:00+00:00");
    assert!(status["LastUpdated"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(timer.body["Data"]["timer"]["IsPastDue"], false);
    assert_eq!(
        timer.body["Data"]["timer"]["Schedule"]["AdjustForDST"],
        true
    );
    let utc_now = timer.body["Metadata"]["sys"]["UtcNow"].as_str().unwrap();
    assert!(
        utc_now.starts_with("2024-10-25T03:00:0") && utc_now.ends_with('Z'),
        "{utc_now}"
    );

    // Completed messages are gone; failed attempts were recorded.
    wait_for("settlement", 5, || {
        bus.messages("rp-poll").unwrap().is_empty()
            && bus.messages("rp-copy").unwrap().is_empty()
            && sim.records().len() == 6
    })
    .await;
    let records = sim.records();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.status == InvocationStatus::Failed && r.http_status == Some(500))
            .count(),
        2
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.status == InvocationStatus::Succeeded)
            .count(),
        4
    );
    sim.stop().await;
}

#[tokio::test]
async fn failing_replies_abandon_and_dead_letter_after_max_delivery_count() {
    // Three kinds of failure from §4.2: non-2xx, non-JSON content type, unparseable JSON.
    let responder: Responder = Arc::new(|_, n| match n {
        0 => (503, "application/json", "{}".into()),
        1 => (200, "text/plain", "ok".into()),
        _ => (200, "application/json", "{not json".into()),
    });
    let (port, seen) = capture_server(responder).await;
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 3);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 1 1 *")]),
            ..HostSimConfig::new(FIXTURE_APP)
        },
        bus.clone(),
        clock,
    )
    .await
    .unwrap();
    bus.send(
        "rp-create",
        NewMessage {
            body: "{\"v\":1}".into(),
            ..Default::default()
        },
    )
    .unwrap();
    wait_for("dead letter", 10, || {
        bus.dead_letters("rp-create").unwrap().len() == 1
    })
    .await;
    let dl = &bus.dead_letters("rp-create").unwrap()[0];
    assert_eq!(dl.reason, "MaxDeliveryCountExceeded");
    let counts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| {
            c.body["Metadata"]["DeliveryCount"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(counts, ["1", "2", "3"]);
    let records = sim.records();
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r.status == InvocationStatus::Failed),
        "{records:?}"
    );
    assert!(records[1]
        .error
        .as_deref()
        .unwrap()
        .contains("Content-Type"));
    assert!(records[2].error.as_deref().unwrap().contains("not JSON"));
    assert!(bus.messages("rp-create").unwrap().is_empty());
    sim.stop().await;
}

fn write_app(dir: &Path, host_json: &str) {
    std::fs::write(dir.join("host.json"), host_json).unwrap();
    for f in ["CreateRestorePoint", "PollRestorePoint"] {
        let src = Path::new(FIXTURE_APP).join(f);
        std::fs::create_dir_all(dir.join(f)).unwrap();
        std::fs::copy(src.join("function.json"), dir.join(f).join("function.json")).unwrap();
    }
}

#[tokio::test]
async fn an_empty_2xx_reply_hangs_until_function_timeout_and_is_a_protocol_violation() {
    let dir = tempfile::tempdir().unwrap();
    write_app(
        dir.path(),
        r#"{"version":"2.0","functionTimeout":"00:01:00",
                "customHandler":{"description":{"defaultExecutablePath":"unused"}}}"#,
    );
    let responder: Responder = Arc::new(|_, n| {
        if n == 0 {
            (200, "application/json", String::new())
        } else {
            (200, "application/json", "{}".into())
        }
    });
    let (port, _seen) = capture_server(responder).await;
    // 60 s of function timeout = 0.5 s real.
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 120.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            ..HostSimConfig::new(dir.path())
        },
        bus.clone(),
        clock.clone(),
    )
    .await
    .unwrap();
    let sent_at = clock.now();
    bus.send(
        "rp-poll",
        NewMessage {
            body: "x".into(),
            ..Default::default()
        },
    )
    .unwrap();
    wait_for("redelivery success", 10, || {
        sim.records()
            .iter()
            .any(|r| r.status == InvocationStatus::Succeeded)
    })
    .await;
    let records = sim.records();
    assert_eq!(records[0].status, InvocationStatus::ProtocolViolation);
    assert_eq!(records[1].delivery_count, Some(2));
    // The failure came only after functionTimeout (virtual).
    assert!(records[1].started - sent_at >= time::Duration::seconds(60));
    assert_eq!(sim.counters().protocol_violations, 1);
    sim.stop().await;
}

const PY_HANDLER: &str = r#"
import http.server, json, os, sys
port = int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])
root = os.environ["FUNCTIONS_APP_ROOT_PATH"]
with open(os.path.join(root, "starts.jsonl"), "a") as f:
    f.write(json.dumps({"port": port, "worker": os.environ.get("FUNCTIONS_CUSTOMHANDLER_WORKER_ID"),
        "httpworker": os.environ.get("FUNCTIONS_HTTPWORKER_PORT"), "setting": os.environ.get("MY_SETTING"),
        "argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")

def read_chunked(rfile):
    data = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return data
        data += rfile.read(size)
        rfile.readline()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_POST(self):
        read_chunked(self.rfile)
        marker = os.path.join(root, "crashed")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        body = b'{"Logs":["done"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True

print("handler listening", flush=True)
S(("127.0.0.1", port), H).serve_forever()
"#;

#[tokio::test]
async fn spawns_the_handler_like_the_host_and_restarts_it_after_crash_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write_app(
        &root,
        r#"{"version":"2.0","functionTimeout":"00:10:00",
                "customHandler":{"description":{"defaultExecutablePath":"python3",
                  "arguments":["handler.py","%EXTRA_ARG%","%NOT_SET_ANYWHERE_X%"]}}}"#,
    );
    std::fs::write(root.join("handler.py"), PY_HANDLER).unwrap();
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            app_settings: settings(&[("MY_SETTING", "x"), ("EXTRA_ARG", "--flag")]),
            ..HostSimConfig::new(&root)
        },
        bus.clone(),
        clock,
    )
    .await
    .unwrap();
    assert_eq!(sim.counters().handler_starts, 1);
    bus.send(
        "rp-create",
        NewMessage {
            body: "{}".into(),
            ..Default::default()
        },
    )
    .unwrap();
    wait_for("success after the crash", 20, || {
        sim.records()
            .iter()
            .any(|r| r.status == InvocationStatus::Succeeded)
    })
    .await;
    let records = sim.records();
    assert_eq!(
        records[0].status,
        InvocationStatus::Failed,
        "the crash fails the invocation"
    );
    assert!(records.last().unwrap().delivery_count.unwrap() >= 2);
    assert!(sim.counters().handler_restarts >= 1);
    wait_for("completion", 5, || {
        bus.messages("rp-create").unwrap().is_empty()
    })
    .await;

    sim.kill_handler();
    wait_for("restart after kill", 20, || {
        sim.counters().handler_starts == 3 && sim.handler_state() == HandlerState::Ready
    })
    .await;

    let starts: Vec<Value> = std::fs::read_to_string(root.join("starts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(starts.len(), 3);
    let port = sim.handler_port() as u64;
    for s in &starts {
        assert_eq!(s["port"], port, "same port across restarts");
        assert_eq!(s["httpworker"], port.to_string());
        assert_eq!(s["setting"], "x");
        assert_eq!(
            s["argv"],
            serde_json::json!(["--flag"]),
            "%ENV% expanded, unresolved deleted"
        );
        assert_eq!(s["cwd"], root.to_str().unwrap());
    }
    assert_ne!(starts[0]["worker"], starts[1]["worker"]);
    assert!(sim.dump()["console"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "handler listening"));
    sim.stop().await;
    assert!(matches!(sim.handler_state(), HandlerState::Stopped(_)));
}

#[test]
fn invocations_go_to_the_least_busy_ready_instance_in_turn() {
    // (ready, stopped, in flight)
    let idle = (true, false, 0);
    // Equally idle: in turn.
    assert_eq!(pick_instance(&[idle, idle, idle], 0), 0);
    assert_eq!(pick_instance(&[idle, idle, idle], 1), 1);
    assert_eq!(pick_instance(&[idle, idle, idle], 5), 2);
    // The least busy wins whatever the turn.
    assert_eq!(
        pick_instance(&[(true, false, 3), (true, false, 1), (true, false, 2)], 0),
        1
    );
    // A restarting instance gets nothing while another is ready, however busy.
    assert_eq!(pick_instance(&[(false, false, 0), (true, false, 9)], 0), 1);
    // None ready: the next in turn that is not stopped for good (the invocation waits).
    assert_eq!(pick_instance(&[(false, true, 0), (false, false, 0)], 0), 1);
    // All stopped: anything (the invocation fails with the stop reason).
    assert_eq!(pick_instance(&[(false, true, 0), (false, true, 0)], 1), 1);
}

#[tokio::test]
async fn several_instances_each_own_port_share_the_work_and_a_kill_hits_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write_app(
        &root,
        r#"{"version":"2.0","functionTimeout":"00:10:00",
                "customHandler":{"description":{"defaultExecutablePath":"python3",
                  "arguments":["handler.py"]}}}"#,
    );
    std::fs::write(root.join("handler.py"), PY_HANDLER).unwrap();
    // No crash on the first invocation: this test is about kills.
    std::fs::write(root.join("crashed"), "").unwrap();
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            instances: 3,
            ..HostSimConfig::new(&root)
        },
        bus.clone(),
        clock,
    )
    .await
    .unwrap();
    assert_eq!(sim.instance_count(), 3);
    let ports = sim.handler_ports();
    assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), 3, "{ports:?}");
    let send = |n: usize| {
        for _ in 0..n {
            bus.send(
                "rp-create",
                NewMessage {
                    body: "{}".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        }
    };
    send(12);
    wait_for("12 successes", 20, || {
        sim.records()
            .iter()
            .filter(|r| r.status == InvocationStatus::Succeeded)
            .count()
            == 12
    })
    .await;
    let used: BTreeSet<usize> = sim.records().iter().map(|r| r.instance).collect();
    assert!(used.len() > 1, "one instance took everything: {used:?}");
    let per: Vec<u64> = sim
        .instance_counters()
        .iter()
        .map(|c| c.invocations)
        .collect();
    assert_eq!(per.iter().sum::<u64>(), 12, "{per:?}");

    assert!(sim.kill_instance(1));
    assert!(!sim.kill_instance(3), "no fourth instance to kill");
    send(12);
    wait_for("12 more successes and instance 1 back", 20, || {
        sim.records()
            .iter()
            .filter(|r| r.status == InvocationStatus::Succeeded)
            .count()
            == 24
            && sim.handler_state() == HandlerState::Ready
    })
    .await;
    let counters = sim.instance_counters();
    assert_eq!(
        counters
            .iter()
            .map(|c| (c.kills, c.starts))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 2), (0, 1)],
        "only instance 1 was killed and restarted"
    );
    assert_eq!(sim.counters().handler_kills, 1);
    // The others kept serving: nothing they were sent failed.
    assert!(sim
        .records()
        .iter()
        .filter(|r| r.instance != 1)
        .all(|r| r.status == InvocationStatus::Succeeded));
    // Each process was told its own port (FUNCTIONS_CUSTOMHANDLER_PORT).
    let started: BTreeSet<u64> = std::fs::read_to_string(root.join("starts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(started, ports.iter().map(|p| u64::from(*p)).collect());
    sim.stop().await;
    assert!(matches!(sim.handler_state(), HandlerState::Stopped(_)));
}

#[tokio::test]
async fn a_clock_jump_runs_the_timer_once_past_due_then_on_schedule() {
    let (port, seen) =
        capture_server(Arc::new(|_, _| (200, "application/json", "{}".into()))).await;
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00:30 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            app_settings: settings(&[("VMRP_SCHEDULE", "0 * * * * *")]),
            timer_ticks: Some(2),
            ..HostSimConfig::new(FIXTURE_APP)
        },
        bus,
        clock.clone(),
    )
    .await
    .unwrap();
    let timers = || -> Vec<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == "/ScheduleRestorePoints")
            .map(|c| c.body["Data"]["timer"].clone())
            .collect()
    };
    clock.advance(time::Duration::minutes(10));
    // The record lands after the reply is handled; only then is the next occurrence set.
    wait_for("past-due run", 5, || {
        timers().len() == 1 && sim.records().len() == 1
    })
    .await;
    let first = &timers()[0];
    assert_eq!(first["IsPastDue"], true);
    assert_eq!(first["ScheduleStatus"]["Next"], "2026-11-25T21:10:00+00:00");
    assert_eq!(first["ScheduleStatus"]["Last"], "0001-01-01T00:00:00+00:00");
    clock.advance(time::Duration::minutes(1));
    wait_for("next run", 5, || {
        timers().len() == 2 && sim.records().len() == 2
    })
    .await;
    let second = &timers()[1];
    assert_eq!(second["IsPastDue"], false);
    assert_eq!(
        second["ScheduleStatus"]["Next"],
        "2026-11-25T21:11:00+00:00"
    );
    let last = second["ScheduleStatus"]["Last"].as_str().unwrap();
    assert!(
        last.starts_with("2026-11-25T21:10:3") && last.ends_with("+00:00"),
        "{last}"
    );
    // timer_ticks = 2: no third run.
    clock.advance(time::Duration::minutes(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(timers().len(), 2);
    sim.stop().await;
}

#[tokio::test]
async fn queue_deliveries_respect_max_concurrent_calls() {
    use std::sync::atomic::AtomicUsize;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (f, p) = (in_flight.clone(), peak.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (f, p) = (f.clone(), p.clone());
        async move {
            if req.method() == axum::http::Method::POST {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                f.fetch_sub(1, Ordering::SeqCst);
            }
            ([("content-type", "application/json")], "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    write_app(
        dir.path(),
        r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"unused"}},
                "extensions":{"serviceBus":{"maxConcurrentCalls":2}}}"#,
    );
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            ..HostSimConfig::new(dir.path())
        },
        bus.clone(),
        clock,
    )
    .await
    .unwrap();
    for i in 0..6 {
        bus.send(
            "rp-create",
            NewMessage {
                body: format!("{i}"),
                ..Default::default()
            },
        )
        .unwrap();
    }
    wait_for("all six", 10, || sim.records().len() == 6).await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert!(sim
        .records()
        .iter()
        .all(|r| r.status == InvocationStatus::Succeeded));
    sim.stop().await;
}

#[tokio::test]
async fn event_grid_failures_are_retried_with_backoff_then_dead_lettered() {
    let (port, seen) =
        capture_server(Arc::new(|_, _| (500, "application/json", "{}".into()))).await;
    // Backoff 10 s + 30 s virtual at 200x: 0.2 s real in all.
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 200.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 1 1 *")]),
            event_grid_retry_delays: vec![time::Duration::seconds(10), time::Duration::seconds(30)],
            ..HostSimConfig::new(FIXTURE_APP)
        },
        bus,
        clock,
    )
    .await
    .unwrap();
    let ids = sim
            .inject_events(serde_json::json!([{"id": "e1", "eventType": "Microsoft.Resources.ResourceDeleteSuccess",
                "subject": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v", "data": "text"}]))
            .unwrap();
    assert_eq!(ids, ["e1"]);
    wait_for("dead-lettered event", 10, || {
        sim.counters().event_grid_dead_lettered == 1
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "first try + 2 retries");
    // String data arrives as JSON text in Metadata.data (§3.3).
    assert_eq!(seen[0].body["Metadata"]["data"], "\"text\"");
    let records = sim.records();
    let gaps: Vec<i64> = records
        .windows(2)
        .map(|w| (w[1].started - w[0].started).whole_seconds())
        .collect();
    assert!(gaps[0] >= 10 && gaps[1] >= 30, "{gaps:?}");
    assert_eq!(sim.dump()["eventGridDeadLetters"][0]["deliveryAttempts"], 3);
    sim.stop().await;
}

#[tokio::test]
async fn service_bus_outputs_are_sent_as_text_plain_messages() {
    let dir = tempfile::tempdir().unwrap();
    write_app(
        dir.path(),
        r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"unused"}}}"#,
    );
    std::fs::write(
            dir.path().join("CreateRestorePoint/function.json"),
            r#"{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"rp-create"},
                            {"type":"serviceBus","direction":"out","name":"outMsg","queueName":"%OUT_QUEUE%"}]}"#,
        )
        .unwrap();
    let (port, _) = capture_server(Arc::new(|_, _| {
        (
            200,
            "application/json",
            r#"{"Outputs":{"outMsg":[{"a":1},{"b":2}],"ignored":[1]},"Logs":["x"]}"#.into(),
        )
    }))
    .await;
    let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
    let sim = HostSim::start(
        HostSimConfig {
            launch: HandlerLaunch::External { port },
            app_settings: settings(&[("OUT_QUEUE", "rp-copy")]),
            ..HostSimConfig::new(dir.path())
        },
        bus.clone(),
        clock,
    )
    .await
    .unwrap();
    bus.send(
        "rp-create",
        NewMessage {
            body: "{}".into(),
            ..Default::default()
        },
    )
    .unwrap();
    wait_for("outputs", 10, || {
        bus.messages("rp-copy").unwrap().len() == 2
    })
    .await;
    let out = bus.messages("rp-copy").unwrap();
    assert_eq!(out[0].body, "{\n  \"a\": 1\n}");
    assert_eq!(out[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(sim.counters().output_messages_sent, 2);
    sim.stop().await;
}
