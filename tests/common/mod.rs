//! Shared test fixtures for the host tests: fake ARM / Scheduler, the reference payloads, and
//! builders that produce envelopes in exactly the host's wire format (PROTOCOL §2–§3).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use time::macros::datetime;
use time::OffsetDateTime;

use vmrp::azure::models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};
use vmrp::azure::{
    Accepted, Arm, ArmError, LroHandle, OutgoingMessage, ResourceId, Scheduler, SendError, VmScope,
};
use vmrp::functions::Deps;
use vmrp::messages::{CopyRequest, CreateRequest, PollRequest, QueueMessage, Role};
use vmrp::policy::Policy;

/// The reference material vendored in the repository (`reference/README.md` names each origin).
pub const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/reference");

pub fn payload_dir() -> String {
    format!("{REFERENCE}/functions-custom-handler/payloads")
}

/// A reference payload, parsed.
pub fn reference(name: &str) -> Value {
    let path = format!("{}/{name}", payload_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every file in the reference payload folder (so a new sample cannot be silently skipped).
pub fn reference_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(payload_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// An ARM that has nothing: reads find nothing, writes are accepted.
pub struct EmptyArm;

#[async_trait]
impl Arm for EmptyArm {
    async fn get_vm(&self, _: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        Ok(None)
    }
    async fn list_vms(&self, _: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        Ok(Vec::new())
    }
    async fn get_disk(&self, _: &ResourceId) -> Result<Option<Disk>, ArmError> {
        Ok(None)
    }
    async fn list_disks(&self, _: &VmScope) -> Result<Vec<Disk>, ArmError> {
        Ok(Vec::new())
    }
    async fn put_collection(
        &self,
        _: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        Ok(body.clone())
    }
    async fn get_collection(
        &self,
        _: &ResourceId,
        _: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        Ok(None)
    }
    async fn list_collections(&self, _: &str) -> Result<Vec<RestorePointCollection>, ArmError> {
        Ok(Vec::new())
    }
    async fn delete_collection(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Ok(Accepted {
            status: 202,
            body: None,
            lro: LroHandle::default(),
        })
    }
    async fn create_restore_point(
        &self,
        _: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        Ok(Accepted {
            status: 201,
            body: Some(body.clone()),
            lro: LroHandle::default(),
        })
    }
    async fn get_restore_point(
        &self,
        _: &ResourceId,
        _: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        Ok(None)
    }
    async fn delete_restore_point(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Ok(Accepted {
            status: 202,
            body: None,
            lro: LroHandle::default(),
        })
    }
}

/// A scheduler that records what it was asked to send.
#[derive(Default)]
pub struct RecordingScheduler {
    pub sent: Mutex<Vec<OutgoingMessage>>,
}

#[async_trait]
impl Scheduler for RecordingScheduler {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        self.sent.lock().unwrap().push(message);
        Ok(())
    }
}

pub fn deps() -> Deps {
    Deps::new(
        Arc::new(EmptyArm),
        Arc::new(RecordingScheduler::default()),
        // Covers the sample VM's subscription, so valid messages pass the scope guard and reach
        // the (empty) ARM fake.
        Arc::new(
            Policy::from_json_str(
                r#"{"rules": [{"name": "prod", "targets": {"subscriptions": ["00000000-0000-0000-0000-000000000000"]}, "retention": {"keepLast": 3}}]}"#,
            )
            .expect("test policy"),
        ),
        "0 0 */4 * * *".to_string(),
    )
}

pub const VM: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-01";
/// A point in the VM's collection as `names::collection_id` names it (`host_protocol`'s
/// `the_shared_point_is_the_one_names_builds` checks the two agree).
pub const POINT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-app/providers/Microsoft.Compute/restorePointCollections/rpc-vm-app-01-906cb9c7/restorePoints/rp-20241025T0000Z";
pub const TICK: OffsetDateTime = datetime!(2024-10-25 00:00 UTC);

pub fn create_request() -> CreateRequest {
    CreateRequest {
        vm: VM.parse().unwrap(),
        tick: TICK,
        rule: Some("prod".into()),
        consistency_mode: None,
        exclude_disks: None,
        copy_to: Some(vec!["westeurope".into()]),
        retry: 0,
        attempt: 0,
        paced: 0,
        listed: None,
    }
}

pub fn copy_request() -> CopyRequest {
    CopyRequest {
        source: POINT.parse().unwrap(),
        target_region: "westeurope".into(),
        target_resource_group: None,
        vm: Some(VM.parse().unwrap()),
        rule: Some("prod".into()),
        retry: 0,
        attempt: 0,
    }
}

pub fn poll_request() -> PollRequest {
    PollRequest {
        target: POINT.parse().unwrap(),
        role: Role::Local,
        attempt: 2,
        first_seen: TICK,
        deadline: datetime!(2024-10-25 02:00 UTC),
        vm: VM.parse().unwrap(),
        tick: TICK,
        rule: None,
        retry: 0,
        copy_to: vec!["westeurope".into()],
        source: None,
        target_region: None,
        prune_again: 0,
    }
}

/// (function, its queue's message) for the three queue-triggered functions.
pub fn queue_cases() -> Vec<(&'static str, QueueMessage)> {
    vec![
        ("CreateRestorePoint", QueueMessage::Create(create_request())),
        ("StartCrossRegionCopy", QueueMessage::Copy(copy_request())),
        ("PollRestorePoint", QueueMessage::Poll(poll_request())),
    ]
}

/// .NET's `JsonConvert.SerializeObject(string)`: the string as a JSON string literal.
pub fn json_string(s: &str) -> Value {
    Value::String(serde_json::to_string(s).unwrap())
}

/// The metadata keys a JSON body adds (PROTOCOL §2.2): top-level non-array properties; objects
/// stay objects; scalars become .NET strings ("True" for true), then §2.1 double-encodes them.
fn body_keys(body_text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body_text) {
        for (k, v) in body {
            let v = match v {
                Value::Array(_) | Value::Null => continue,
                Value::Object(_) => v,
                Value::Bool(true) => json_string("True"),
                Value::Bool(false) => json_string("False"),
                Value::String(s) => json_string(&s),
                other => json_string(&other.to_string()),
            };
            out.insert(k, v);
        }
    }
    out
}

/// A Service Bus invocation exactly as the host sends it, built on the reference sample's
/// metadata: `Data.msg` double-encoded, `DeliveryCount` stringified, `MessageId` double-encoded,
/// body-derived keys added.
pub fn service_bus_envelope(
    function: &str,
    body_text: &str,
    delivery_count: u32,
    message_id: &str,
    utc_now: &str,
) -> Value {
    let mut env = reference("servicebus-json-body.json");
    env["Data"]["msg"] = json_string(body_text);
    let meta = env["Metadata"].as_object_mut().unwrap();
    // Drop the reference body's keys; add ours.
    for k in [
        "vmResourceId",
        "restorePointCollection",
        "restorePointName",
        "targetRegion",
        "attempt",
    ] {
        meta.remove(k);
    }
    meta.insert("DeliveryCount".into(), json!(delivery_count.to_string()));
    meta.insert("MessageId".into(), json_string(message_id));
    meta.insert("sys".into(), json!({"MethodName": function, "UtcNow": utc_now, "RandGuid": "6b0f1c7e-8f7e-4c57-9d43-2a1f3c0b9e11"}));
    for (k, v) in body_keys(body_text) {
        meta.insert(k, v);
    }
    env
}

/// A timer invocation in the host's format (reference `timer.json` with our function name).
pub fn timer_envelope(function: &str) -> Value {
    let mut env = reference("timer.json");
    env["Metadata"]["sys"]["MethodName"] = json!(function);
    env
}

/// An Event Grid invocation: `Data.eventGridEvent` = the event, `Metadata.data` = its data.
pub fn event_grid_envelope(event: Value, utc_now: &str) -> Value {
    json!({
        "Data": {"eventGridEvent": event.clone()},
        "Metadata": {
            "data": event.get("data").cloned().unwrap_or(Value::Null),
            "sys": {"MethodName": "OnVmChanged", "UtcNow": utc_now, "RandGuid": "2e1d0c9b-8a7f-4e6d-9c5b-4a3f2e1d0c9b"}
        }
    })
}

/// Checks a success response body's shape (PROTOCOL §4.1) and returns the ReturnValue.
pub fn assert_success_body(body: &Value) -> Value {
    let obj = body.as_object().expect("response is a JSON object");
    assert_eq!(obj.get("Outputs"), Some(&json!({})), "{body}");
    let logs = obj["Logs"].as_array().expect("Logs is an array");
    assert!(
        !logs.is_empty() && logs.iter().all(Value::is_string),
        "{body}"
    );
    assert!(obj.get("error").is_none(), "{body}");
    let rv = obj["ReturnValue"].clone();
    let status = rv["status"].as_str().expect("ReturnValue.status");
    assert!(
        ["done", "rescheduled", "skipped", "reported"].contains(&status),
        "{body}"
    );
    assert!(rv["summary"].is_string(), "{body}");
    rv
}

/// Checks a failed-invocation body and returns `error.message`.
pub fn assert_failure_body(body: &Value, kind: &str) -> String {
    let obj = body.as_object().expect("response is a JSON object");
    assert_eq!(obj.get("Outputs"), Some(&json!({})), "{body}");
    assert_eq!(obj.get("ReturnValue"), Some(&Value::Null), "{body}");
    assert_eq!(body["error"]["kind"], kind, "{body}");
    assert!(body["error"]["transient"].is_boolean(), "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_string();
    let logs = obj["Logs"].as_array().expect("Logs");
    assert!(
        logs.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(&message))),
        "{body}"
    );
    message
}

/// A minimal HTTP/1.1 client over std TCP, so the tests control framing exactly like the host's
/// .NET client does (chunked bodies, no Content-Length). Returns status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        // Write errors are ignored: the server may answer (413) and close before reading it all.
        let mut write_body = || -> std::io::Result<()> {
            for chunk in body.chunks(64 * 1024) {
                stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")
        };
        let _ = write_body();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// The headers the host's HttpClient sends with an invocation (PROTOCOL §2).
pub fn host_headers(invocation_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Azure-Functions-InvocationId", invocation_id.to_string()),
        ("X-Azure-Functions-HostVersion", "4.1037.0.0".to_string()),
        ("User-Agent", "Azure-Functions-Host/4.1037.0.0".to_string()),
        (
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        ),
    ]
}

/// Listening sockets on `port` from /proc/net/tcp{,6}: (file, local address hex).
pub fn listeners_on(port: u16) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((addr, port_hex)) = local.split_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(port_hex, 16) == Ok(port) {
                out.push((file, addr.to_string()));
            }
        }
    }
    out
}
