//! The real `vmrp serve` process, driven like the Functions host drives it: port from
//! FUNCTIONS_CUSTOMHANDLER_PORT, readiness by polling `GET /`, invocations over TCP with chunked
//! bodies, SIGTERM to stop. Also: it listens on 127.0.0.1 only and refuses to start without a port.

mod common;

use common::listeners_on;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;
use vmrp::messages::QueueMessage;

const BIN: &str = env!("CARGO_BIN_EXE_vmrp");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `vmrp serve`, killed on drop if the test did not stop it.
struct Serve {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

const POLICY: &str = r#"{"rules": [{"name": "all", "targets": {"subscriptions": ["00000000-0000-0000-0000-000000000000"]}, "retention": {"keepLast": 3}}]}"#;

fn command(port: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("VMRP_POLICY")
        .env_remove("VMRP_POLICY_FILE")
        .env_remove("VMRP_SCHEDULE")
        // A complete configuration whose Azure endpoints are a closed loopback port: the
        // binary starts for real, and handlers that reach Azure fail cleanly.
        .env("VMRP_POLICY", POLICY)
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
        .env("IDENTITY_HEADER", "test-identity-header")
        .env("VMRP_ARM_ENDPOINT", "http://127.0.0.1:9")
        .env("ServiceBusConnection", "Endpoint=sb://test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=dGVzdA==")
        .env("VMRP_SERVICEBUS_ENDPOINT", "http://127.0.0.1:9")
        .env("VMRP_LOOPBACK_ONLY", "1")
        // As under the host: JSON log lines.
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(port) = port {
        cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", port);
    }
    cmd
}

fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Serve {
    fn start() -> Self {
        let port = free_port();
        let mut child = command(Some(&port.to_string())).spawn().unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let serve = Self {
            child,
            port,
            stdout,
            stderr,
        };
        serve.wait_ready();
        serve
    }

    /// The host's readiness probe: `GET /` every 25 ms, any response = ready, 30 s budget.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((status, _)) = http_request(self.port, "GET", "/", &[], None) {
                assert_eq!(status, 200);
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "vmrp serve not ready after 30 s; stderr: {:?}",
            self.stderr.lock().unwrap()
        );
    }

    fn invoke(&self, function: &str, invocation_id: &str, body: &[u8]) -> (u16, Value) {
        let headers = host_headers(invocation_id);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = http_request(
            self.port,
            "POST",
            &format!("/{function}"),
            &headers,
            Some(body),
        )
        .unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{function}: body is not JSON ({e}): {body:?}"));
        (status, json)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vmrp serve did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// stdout and stderr lines parsed as JSON (the host-mode log format; WARN and ERROR go to
    /// stderr, where the host records them at Warning / Error).
    fn log_lines(&self) -> Vec<Value> {
        let mut lines = self.stdout.lock().unwrap().clone();
        lines.extend(self.stderr.lock().unwrap().iter().cloned());
        lines
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Handler kinds: the invocation was decoded and the handler ran (it may fail on the placeholder
/// ARM client, which is not what these tests are about).
const HANDLER_KINDS: [&str; 4] = ["arm", "send", "invalid", "out_of_scope"];

fn assert_decoded(function: &str, status: u16, body: &Value) {
    if status == 200 {
        assert_success_body(body);
    } else {
        assert_eq!(status, 500, "{function}: {body}");
        let kind = body["error"]["kind"].as_str().unwrap_or_default();
        assert!(
            HANDLER_KINDS.contains(&kind),
            "{function} did not decode: {body}"
        );
    }
}

#[test]
fn replays_payloads_over_tcp_like_the_host() {
    let serve = Serve::start();
    let compact = |v: &Value| v.to_string().into_bytes();

    // Reference samples (other schema / names): clean failures that name the problem.
    let cases = [
        (
            "servicebus-json-body.json",
            "StartCrossRegionCopy",
            500,
            "bad_message",
            "no \"v\" field",
        ),
        (
            "servicebus-text-body.json",
            "PollRestorePoint",
            500,
            "bad_message",
            "not JSON",
        ),
        (
            "http-not-forwarded.json",
            "OnVmChanged",
            500,
            "bad_envelope",
            "Data.eventGridEvent: missing",
        ),
        (
            "http-not-forwarded.json",
            "TriggerCopy",
            404,
            "unknown_function",
            "TriggerCopy",
        ),
        (
            "response-with-outputs.json",
            "CreateRestorePoint",
            500,
            "bad_envelope",
            "Data: missing",
        ),
    ];
    for (i, (file, function, want, kind, part)) in cases.iter().enumerate() {
        let (status, body) =
            serve.invoke(function, &format!("ref-{i}"), &compact(&reference(file)));
        assert_eq!(status, *want, "{file}: {body}");
        assert!(
            assert_failure_body(&body, kind).contains(part),
            "{file}: {body}"
        );
    }

    // Samples our functions understand, and our own messages in the same wire format.
    let (status, body) = serve.invoke(
        "ScheduleRestorePoints",
        "t-1",
        &compact(&timer_envelope("ScheduleRestorePoints")),
    );
    assert_decoded("ScheduleRestorePoints", status, &body);
    let (status, body) = serve.invoke("OnVmChanged", "e-1", &compact(&reference("eventgrid.json")));
    assert_decoded("OnVmChanged", status, &body);
    for (function, message) in queue_cases() {
        let envelope = service_bus_envelope(
            function,
            &message.encode(),
            1,
            "m-1",
            "2024-10-25T03:00:05.4871236Z",
        );
        let (status, body) = serve.invoke(function, "q-1", &compact(&envelope));
        assert_decoded(function, status, &body);
    }

    // The failure log line (on stderr: the host records it at Error) names the field, the
    // invocation and the function.
    let mut envelope = service_bus_envelope(
        "CreateRestorePoint",
        &QueueMessage::Create(create_request()).encode(),
        1,
        "m",
        "2024-10-25T03:00:05Z",
    );
    envelope["Metadata"]["DeliveryCount"] = serde_json::json!(true);
    let (status, _) = serve.invoke("CreateRestorePoint", "inv-log-check", &compact(&envelope));
    assert_eq!(status, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = serve.log_lines().into_iter().find(|l| {
            l["span"]["invocation_id"] == "inv-log-check" && l["message"] == "invocation failed"
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no failure log line: {:?}",
            serve.stdout.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        serve
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("inv-log-check") && l.contains("invocation failed")),
        "the failure line is on stderr"
    );
    assert_eq!(line["span"]["function"], "CreateRestorePoint", "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("Metadata.DeliveryCount: expected"),
        "{line}"
    );

    // A message whose body cannot be decoded: its failure line still names the message id and
    // the delivery count (they were missing), so it can be matched with its dead letter.
    let envelope = service_bus_envelope(
        "CreateRestorePoint",
        r#"{"v":1,"kind":"create","vm":"nope"}"#,
        4,
        "m-malformed",
        "2024-10-25T03:00:05Z",
    );
    let (status, _) = serve.invoke("CreateRestorePoint", "inv-malformed", &compact(&envelope));
    assert_eq!(status, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = serve.log_lines().into_iter().find(|l| {
            l["span"]["invocation_id"] == "inv-malformed" && l["message"] == "invocation failed"
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no failure log line for the malformed message"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["span"]["message_id"], "m-malformed", "{line}");
    assert_eq!(line["span"]["delivery_count"], 4, "{line}");

    // A decoded queue invocation's span carries the message id and delivery count; a timer's
    // span has neither.
    let lines = serve.log_lines();
    let queue_line = lines
        .iter()
        .find(|l| l["span"]["invocation_id"] == "q-1" && l["span"]["message_id"].is_string())
        .unwrap_or_else(|| panic!("no queue invocation line with a message id: {lines:?}"));
    assert_eq!(queue_line["span"]["message_id"], "m-1", "{queue_line}");
    assert_eq!(queue_line["span"]["delivery_count"], 1, "{queue_line}");
    let timer_line = lines
        .iter()
        .find(|l| l["span"]["invocation_id"] == "t-1")
        .unwrap_or_else(|| panic!("no timer invocation line: {lines:?}"));
    assert_eq!(
        timer_line["span"]["function"], "ScheduleRestorePoints",
        "{timer_line}"
    );
    assert!(
        timer_line["span"].get("message_id").is_none(),
        "{timer_line}"
    );
    assert!(
        timer_line["span"].get("delivery_count").is_none(),
        "{timer_line}"
    );
}

#[test]
fn malformed_input_over_tcp_keeps_the_process_serving() {
    let serve = Serve::start();
    let (status, body) = serve.invoke("CreateRestorePoint", "bad-1", b"{not json");
    assert_eq!(status, 500);
    assert!(assert_failure_body(&body, "bad_envelope").contains("body is not JSON"));

    let (status, body) = serve.invoke("CreateRestorePoint", "bad-2", br#"{"Metadata":{}}"#);
    assert_eq!(status, 500);
    assert!(assert_failure_body(&body, "bad_envelope").contains("Data: missing"));

    // A 2 MiB chunked body: 413 with a failed-invocation body, or the connection is cut before
    // we read it (the server answers before the upload ends). Either way the process lives on.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let headers = [("Content-Type", "application/json")];
    if let Ok((status, body)) = http_request(
        serve.port,
        "POST",
        "/CreateRestorePoint",
        &headers,
        Some(&huge),
    ) {
        assert_eq!(status, 413);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_failure_body(&body, "body_too_large");
    }
    let (status, _) = http_request(serve.port, "GET", "/", &[], None).unwrap();
    assert_eq!(status, 200, "still serving");
}

/// Local IPv4 addresses other than loopback (from the kernel's routing table).
fn non_loopback_ipv4() -> Vec<Ipv4Addr> {
    let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line.contains("/32 host LOCAL") {
            if let Some(addr) = last.filter(|a| !a.is_loopback()) {
                if !found.contains(&addr) {
                    found.push(addr);
                }
            }
        }
    }
    found
}

#[test]
fn listens_on_ipv4_loopback_only() {
    let serve = Serve::start();
    // 0100007F is 127.0.0.1 in /proc's little-endian hex; nothing on tcp6, nothing on 0.0.0.0.
    assert_eq!(
        listeners_on(serve.port),
        vec![("/proc/net/tcp", "0100007F".to_string())]
    );
    // The control: the port does answer on 127.0.0.1, so a refused connection below is about
    // the address, not a closed port.
    let own = SocketAddr::from((Ipv4Addr::LOCALHOST, serve.port));
    assert!(TcpStream::connect_timeout(&own, Duration::from_secs(2)).is_ok());
    // Other addresses of this machine: always 127.0.0.2 (the kernel serves all of 127.0.0.0/8
    // locally, so a listener on 0.0.0.0 would answer there) and ::1 (a dual-stack [::] listener
    // would), plus every non-loopback IPv4 address, which a loopback-only network namespace
    // (.ci/run) has none of. So the loop is never empty.
    let mut others: Vec<SocketAddr> = vec![
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), serve.port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, serve.port)),
    ];
    others.extend(
        non_loopback_ipv4()
            .into_iter()
            .map(|a| SocketAddr::from((a, serve.port))),
    );
    for target in &others {
        assert!(
            TcpStream::connect_timeout(target, Duration::from_secs(2)).is_err(),
            "reachable on {target}"
        );
    }
    assert!(others.len() >= 2, "{others:?}");
}

#[test]
fn refuses_to_start_without_a_valid_port() {
    for value in [None, Some(""), Some("http"), Some("0"), Some("70000")] {
        let output = command(value).output().unwrap();
        assert!(!output.status.success(), "{value:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("FUNCTIONS_CUSTOMHANDLER_PORT"),
            "{value:?}: {stderr}"
        );
    }
}

#[test]
fn fails_clearly_when_the_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = command(Some(&port.to_string())).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn sigterm_and_sigint_exit_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut serve = Serve::start();
        serve.signal(signal);
        let status = serve.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "SIG{signal}: {status:?}");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let messages: Vec<String> = serve
                .log_lines()
                .iter()
                .filter_map(|l| l["message"].as_str().map(str::to_string))
                .collect();
            if messages.iter().any(|m| m == "vmrp serve stopped") {
                assert!(
                    messages.iter().any(|m| m == "shutdown requested"),
                    "{messages:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "SIG{signal}: {messages:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
