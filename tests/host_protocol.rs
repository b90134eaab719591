//! The custom-handler transport in-process: every reference payload replayed through the real
//! router (`oneshot`), our own payloads in the same wire format, malformed input, the body
//! limit, panics, handler errors, logging, and graceful shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use time::macros::datetime;
use tower::ServiceExt;

use common::*;
use vmrp::azure::{ArmError, Queue};
use vmrp::events::{EventSchema, ResourceEvent, TimerEvent};
use vmrp::functions::HandlerError;
use vmrp::host::{app, app_with, Envelope, Function, MAX_BODY_BYTES};
use vmrp::invocation::{Invocation, Outcome, Status};
use vmrp::messages::{CopyRequest, CreateRequest, PollRequest, QueueMessage};

const INVOCATION_ID: &str = "3f2a9c1e-7b4d-4e8f-9a0b-1c2d3e4f5a6b";

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(!bytes.is_empty(), "never an empty body (PROTOCOL §4.2)");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn invoke_request(function: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(format!("/{function}"))
        .header("X-Azure-Functions-InvocationId", INVOCATION_ID)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.into())
        .unwrap()
}

async fn post(app: &Router, function: &str, body: &Value) -> (StatusCode, Value) {
    // The host sends compact JSON.
    send(app, invoke_request(function, body.to_string())).await
}

// ---------------------------------------------------------------------------------------------
// Reference payloads: envelope decoding asserted directly.

#[test]
fn reference_timer_decodes() {
    let env = Envelope::parse(reference("timer.json").to_string().as_bytes()).unwrap();
    assert_eq!(
        env.timer("timer").unwrap(),
        TimerEvent {
            is_past_due: false,
            last: Some(datetime!(2024-10-24 03:00:00.0141236 UTC)),
            next: Some(datetime!(2024-10-25 03:00 UTC)),
        }
    );
    assert_eq!(
        env.utc_now().unwrap(),
        datetime!(2024-10-25 03:00:00.0263415 UTC)
    );
}

#[test]
fn reference_servicebus_json_body_decodes() {
    let env = Envelope::parse(
        reference("servicebus-json-body.json")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let sb = env.service_bus("msg").unwrap();
    assert_eq!(
        sb.body,
        r#"{"vmResourceId":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-01","restorePointCollection":"rpc-vm-app-01","restorePointName":"rp-20241025T030000Z","targetRegion":"westeurope","attempt":1}"#
    );
    let body: Value = serde_json::from_str(&sb.body).unwrap();
    assert_eq!(body["attempt"], 1, "the body's own number stays a number");
    assert_eq!(sb.delivery_count, 1, "\"1\" in the metadata");
    assert_eq!(
        sb.message_id.as_deref(),
        Some("3b9d1c0e6f2a4b8c9d7e5f1a2b3c4d5e")
    );
    assert_eq!(
        env.utc_now().unwrap(),
        datetime!(2024-10-25 03:00:05.4871236 UTC)
    );
}

#[test]
fn reference_servicebus_text_body_decodes() {
    let env = Envelope::parse(
        reference("servicebus-text-body.json")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let sb = env.service_bus("msg").unwrap();
    assert_eq!(sb.body, "poll rp-20241025T030000Z westeurope");
    assert_eq!(sb.delivery_count, 3);
    assert_eq!(
        sb.message_id.as_deref(),
        Some("a7c4e1f09b8d4c2e8f6a5b4c3d2e1f00")
    );
    assert_eq!(
        env.utc_now().unwrap(),
        datetime!(2024-10-25 03:02:11.0937412 UTC)
    );
}

#[test]
fn reference_eventgrid_decodes() {
    let raw = reference("eventgrid.json");
    let env = Envelope::parse(raw.to_string().as_bytes()).unwrap();
    let event = env.event_grid("eventGridEvent").unwrap();
    let vm = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-01";
    assert_eq!(event.schema, EventSchema::EventGrid);
    assert_eq!(event.id, "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d");
    assert_eq!(event.event_type, "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(event.subject, vm);
    assert_eq!(
        event.operation_name.as_deref(),
        Some("Microsoft.Compute/virtualMachines/write")
    );
    assert_eq!(
        event.event_time,
        Some(datetime!(2024-10-25 03:05:12.1234567 UTC))
    );
    assert_eq!(event.data, raw["Metadata"]["data"]);
    assert_eq!(
        env.utc_now().unwrap(),
        datetime!(2024-10-25 03:05:12.9043116 UTC)
    );
}

#[test]
fn reference_http_payload_has_none_of_our_bindings() {
    let env = Envelope::parse(reference("http-not-forwarded.json").to_string().as_bytes()).unwrap();
    for err in [
        env.event_grid("eventGridEvent").unwrap_err(),
        env.service_bus("msg").unwrap_err(),
        env.timer("timer").unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("missing") && text.contains("[\"req\"]"),
            "{text}"
        );
    }
    assert_eq!(
        env.utc_now().unwrap(),
        datetime!(2024-10-25 03:07:44.5120934 UTC)
    );
}

/// Eventgrid reference samples (both schemas), wrapped in the host's envelope.
#[test]
fn reference_event_samples_decode_in_both_schemas() {
    for (dir, schema) in [
        ("event-grid-schema", EventSchema::EventGrid),
        ("cloud-events-schema", EventSchema::CloudEvents),
    ] {
        for file in [
            "resource_write_success.json",
            "resource_delete_success.json",
            "resource_action_success.json",
        ] {
            let path = format!("{REFERENCE}/eventgrid/{dir}/{file}");
            let sample: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let env = Envelope::parse(
                event_grid_envelope(sample.clone(), "2024-10-25T03:05:12Z")
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            let event = env.event_grid("eventGridEvent").unwrap();
            assert_eq!(event.schema, schema, "{path}");
            assert_eq!(event.id, sample["id"].as_str().unwrap(), "{path}");
            assert_eq!(
                event.subject,
                sample["data"]["resourceUri"].as_str().unwrap(),
                "{path}"
            );
            assert_eq!(
                event.operation_name.as_deref(),
                sample["data"]["operationName"].as_str(),
                "{path}"
            );
            let type_key = match schema {
                EventSchema::EventGrid => "eventType",
                EventSchema::CloudEvents => "type",
            };
            assert_eq!(event.event_type, sample[type_key].as_str().unwrap());
            assert!(event.event_time.is_some(), "{path}");
        }
    }
}

/// Every reference payload, posted to the real router: protocol samples (other schema, other
/// function names) give clean failed invocations naming the problem; valid ones succeed.
#[tokio::test]
async fn replay_every_reference_payload_through_the_router() {
    let app = app(deps());
    // (file, path, expected status, Ok(()) for success or Err((kind, message part)))
    type Expect = Result<(), (&'static str, &'static str)>;
    let table: &[(&str, &str, u16, Expect)] = &[
        ("eventgrid.json", "OnVmChanged", 200, Ok(())),
        (
            "http-not-forwarded.json",
            "OnVmChanged",
            500,
            Err(("bad_envelope", "Data.eventGridEvent: missing")),
        ),
        (
            "http-not-forwarded.json",
            "TriggerCopy",
            404,
            Err(("unknown_function", "no function named \"TriggerCopy\"")),
        ),
        (
            "response-with-outputs.json",
            "CreateRestorePoint",
            500,
            Err(("bad_envelope", "Data: missing")),
        ),
        (
            "servicebus-json-body.json",
            "StartCrossRegionCopy",
            200,
            Err(("parked", "message has no \"v\" field")),
        ),
        (
            "servicebus-json-body.json",
            "CreateRestorePoint",
            200,
            Err(("parked", "message has no \"v\" field")),
        ),
        (
            "servicebus-text-body.json",
            "PollRestorePoint",
            200,
            Err(("parked", "message body is not JSON")),
        ),
        ("timer.json", "ScheduleRestorePoints", 200, Ok(())),
        (
            "timer.json",
            "CreateRestorePoints",
            404,
            Err(("unknown_function", "CreateRestorePoint, OnVmChanged")),
        ),
    ];
    for name in reference_names() {
        assert!(
            table.iter().any(|(file, ..)| *file == name),
            "reference payload {name} has no replay case"
        );
    }
    for (file, function, want_status, expect) in table {
        let (status, body) = post(&app, function, &reference(file)).await;
        assert_eq!(status.as_u16(), *want_status, "{file} → {function}: {body}");
        match expect {
            Ok(()) => {
                assert_success_body(&body);
            }
            // Not a vmrp message, never will be: parked on rp-failed with the reason.
            Err(("parked", part)) => {
                let summary = assert_parked(&body);
                assert!(summary.contains(part), "{file} → {function}: {summary}");
            }
            Err((kind, part)) => {
                let message = assert_failure_body(&body, kind);
                assert!(message.contains(part), "{file} → {function}: {message}");
                assert_eq!(body["error"]["transient"], false);
            }
        }
    }
    let (status, _) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

/// Our success body has the reference response's shape: the same top-level keys and types.
#[tokio::test]
async fn success_response_has_the_reference_response_shape() {
    let reference = reference("response-with-outputs.json");
    let (status, ours) = post(
        &app(deps()),
        "ScheduleRestorePoints",
        &timer_envelope("ScheduleRestorePoints"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&reference));
    assert!(ours["Outputs"].is_object() && reference["Outputs"].is_object());
    assert!(ours["Logs"].is_array() && reference["Logs"].is_array());
    assert_success_body(&ours);
}

// ---------------------------------------------------------------------------------------------
// Our own payloads, same wire format.

/// Everything a handler saw, for assertions.
#[derive(Default)]
struct Seen {
    timers: Mutex<Vec<Invocation<TimerEvent>>>,
    creates: Mutex<Vec<Invocation<CreateRequest>>>,
    copies: Mutex<Vec<Invocation<CopyRequest>>>,
    polls: Mutex<Vec<Invocation<PollRequest>>>,
    events: Mutex<Vec<Invocation<ResourceEvent>>>,
}

// HandlerError's size is the shared contract's business, not this fixture's.
#[allow(clippy::result_large_err)]
fn skipped() -> Result<Outcome, HandlerError> {
    Ok(Outcome::new(Status::Skipped, "recorded"))
}

/// The five function names wired to recorders instead of the real handlers.
fn recording_app(seen: &Arc<Seen>) -> Router {
    let (a, b, c, d, e) = (
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
    );
    app_with(
        deps(),
        vec![
            Function::timer("ScheduleRestorePoints", move |inv, _| {
                a.timers.lock().unwrap().push(inv);
                async { skipped() }
            }),
            Function::queue(
                "CreateRestorePoint",
                move |inv: Invocation<CreateRequest>, _| {
                    b.creates.lock().unwrap().push(inv);
                    async { skipped() }
                },
            ),
            Function::queue(
                "StartCrossRegionCopy",
                move |inv: Invocation<CopyRequest>, _| {
                    c.copies.lock().unwrap().push(inv);
                    async { skipped() }
                },
            ),
            Function::queue(
                "PollRestorePoint",
                move |inv: Invocation<PollRequest>, _| {
                    d.polls.lock().unwrap().push(inv);
                    async { skipped() }
                },
            ),
            Function::event_grid("OnVmChanged", move |inv, _| {
                e.events.lock().unwrap().push(inv);
                async { skipped() }
            }),
        ],
    )
}

#[tokio::test]
async fn queue_messages_reach_handlers_with_their_context() {
    let seen = Arc::new(Seen::default());
    let app = recording_app(&seen);
    for (i, (function, message)) in queue_cases().into_iter().enumerate() {
        let delivery = 4 + i as u32;
        let envelope = service_bus_envelope(
            function,
            &message.encode(),
            delivery,
            &format!("msg-{i}"),
            "2024-10-25T03:00:05.4871236Z",
        );
        let (status, body) = post(&app, function, &envelope).await;
        assert_eq!(status, StatusCode::OK, "{function}: {body}");
        assert_eq!(body["ReturnValue"]["summary"], "recorded");
        let context = match &message {
            QueueMessage::Create(m) => {
                let inv = seen.creates.lock().unwrap().pop().unwrap();
                assert_eq!(&inv.event, m);
                inv.context
            }
            QueueMessage::Copy(m) => {
                let inv = seen.copies.lock().unwrap().pop().unwrap();
                assert_eq!(&inv.event, m);
                inv.context
            }
            QueueMessage::Poll(m) => {
                let inv = seen.polls.lock().unwrap().pop().unwrap();
                assert_eq!(&inv.event, m);
                inv.context
            }
            QueueMessage::Plan(_) => unreachable!("queue_cases sends no plan message"),
        };
        assert_eq!(context.invocation_id, INVOCATION_ID);
        assert_eq!(context.function, function);
        assert_eq!(context.now, datetime!(2024-10-25 03:00:05.4871236 UTC));
        assert_eq!(context.delivery_count, delivery);
        assert_eq!(context.message_id, Some(format!("msg-{i}")));
    }
}

/// Older hosts: numeric DeliveryCount, once-encoded or object bodies, once-encoded MessageId.
#[tokio::test]
async fn tolerates_older_host_encodings() {
    let seen = Arc::new(Seen::default());
    let app = recording_app(&seen);
    let text = QueueMessage::Create(create_request()).encode();
    let variants = [
        json!(text),                                   // once-encoded
        serde_json::from_str::<Value>(&text).unwrap(), // an object
        json_string(&text),                            // today's double encoding
    ];
    for data in variants {
        let mut envelope =
            service_bus_envelope("CreateRestorePoint", &text, 1, "m", "2024-10-25T03:00:05Z");
        envelope["Data"]["msg"] = data.clone();
        envelope["Metadata"]["DeliveryCount"] = json!(2);
        envelope["Metadata"]["MessageId"] = json!("plain-id");
        let (status, body) = post(&app, "CreateRestorePoint", &envelope).await;
        assert_eq!(status, StatusCode::OK, "{data}: {body}");
        let inv = seen.creates.lock().unwrap().pop().unwrap();
        assert_eq!(inv.event, create_request(), "{data}");
        assert_eq!(inv.context.delivery_count, 2);
        assert_eq!(inv.context.message_id.as_deref(), Some("plain-id"));
    }
}

#[tokio::test]
async fn timer_and_events_reach_handlers_with_their_context() {
    let seen = Arc::new(Seen::default());
    let app = recording_app(&seen);

    let (status, _) = post(
        &app,
        "ScheduleRestorePoints",
        &timer_envelope("ScheduleRestorePoints"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let inv = seen.timers.lock().unwrap().pop().unwrap();
    assert!(!inv.event.is_past_due);
    assert_eq!(inv.event.next, Some(datetime!(2024-10-25 03:00 UTC)));
    assert_eq!(inv.context.now, datetime!(2024-10-25 03:00:00.0263415 UTC));
    assert_eq!(inv.context.delivery_count, 1);
    assert_eq!(inv.context.message_id, None);
    assert_eq!(inv.context.function, "ScheduleRestorePoints");

    // A first run after a missed occurrence, with a null-able status.
    let mut past_due = timer_envelope("ScheduleRestorePoints");
    past_due["Data"]["timer"]["IsPastDue"] = json!(true);
    past_due["Data"]["timer"]["ScheduleStatus"]["Last"] = json!("0001-01-01T00:00:00");
    let (status, _) = post(&app, "ScheduleRestorePoints", &past_due).await;
    assert_eq!(status, StatusCode::OK);
    let inv = seen.timers.lock().unwrap().pop().unwrap();
    assert!(inv.event.is_past_due);
    assert_eq!(inv.event.last, None, "0001-01-01 means never");

    let path = format!("{REFERENCE}/eventgrid/cloud-events-schema/resource_delete_success.json");
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (status, _) = post(
        &app,
        "OnVmChanged",
        &event_grid_envelope(sample.clone(), "2024-10-25T03:05:12.9043116Z"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let inv = seen.events.lock().unwrap().pop().unwrap();
    assert_eq!(
        inv.event.schema,
        EventSchema::CloudEvents,
        "specVersion spelled in camelCase"
    );
    assert_eq!(
        inv.event.subject,
        sample["data"]["resourceUri"].as_str().unwrap()
    );
    assert_eq!(inv.context.now, datetime!(2024-10-25 03:05:12.9043116 UTC));
}

#[tokio::test]
async fn invocation_id_is_generated_when_the_header_is_absent() {
    let seen = Arc::new(Seen::default());
    let app = recording_app(&seen);
    let request = Request::post("/ScheduleRestorePoints")
        .body(Body::from(
            timer_envelope("ScheduleRestorePoints").to_string(),
        ))
        .unwrap();
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let id = seen
        .timers
        .lock()
        .unwrap()
        .pop()
        .unwrap()
        .context
        .invocation_id;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_ne!(id, INVOCATION_ID);
}

/// Valid vmrp messages on the real functions, against an ARM that holds the VM, so every handler
/// acts instead of skipping: the create PUTs its point, the poll of the settled point fans out
/// its copy, the copy PUTs the copy. Each answers `done` and leaves its mark in ARM.
#[tokio::test]
async fn our_messages_succeed_on_the_real_functions() {
    use vmrp::testing::{FakeArm, FakeScheduler, VmBuilder};
    let now = "2024-10-25T00:00:05Z";
    let arm = Arc::new(FakeArm::new());
    arm.set_now(datetime!(2024-10-25 00:00:05 UTC));
    let vm = arm.add_vm(
        VmBuilder::new(
            "00000000-0000-0000-0000-000000000000",
            "rg-app",
            "vm-app-01",
        )
        .location("eastus")
        .build(),
    );
    assert_eq!(vm.as_str(), VM);
    let bus = Arc::new(FakeScheduler::new());
    let policy = deps().policy.clone();
    let app = app(vmrp::functions::Deps::new(
        arm.clone(),
        bus.clone(),
        policy,
        "0 0 */4 * * *".to_string(),
    ));
    let point: vmrp::azure::ResourceId = POINT.parse().unwrap();
    let run = |function: &'static str, message: QueueMessage| {
        let app = app.clone();
        async move {
            let envelope = service_bus_envelope(function, &message.encode(), 1, "id-1", now);
            let (status, body) = post(&app, function, &envelope).await;
            assert_eq!(status, StatusCode::OK, "{function}: {body}");
            let rv = assert_success_body(&body);
            assert_eq!(rv["status"], "done", "{function} acted: {body}");
        }
    };
    run("CreateRestorePoint", QueueMessage::Create(create_request())).await;
    assert!(arm.point(&point).is_some(), "the create PUT {POINT}");
    arm.set_point_state(&point, "Succeeded");
    run("PollRestorePoint", QueueMessage::Poll(poll_request())).await;
    let copies: Vec<QueueMessage> = bus
        .take()
        .iter()
        .map(|m| QueueMessage::decode(&m.body).unwrap())
        .filter(|m| matches!(m, QueueMessage::Copy(_)))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the settled point fans out its copy: {copies:?}"
    );
    run("StartCrossRegionCopy", QueueMessage::Copy(copy_request())).await;
    let copy = vmrp::names::copy_collection_id(&vm, "westeurope", None)
        .unwrap()
        .child("restorePoints", &vmrp::names::restore_point_name(TICK, 0));
    assert!(arm.point(&copy).is_some(), "the copy PUT {copy}");

    let path = format!("{REFERENCE}/eventgrid/event-grid-schema/resource_write_success.json");
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (status, body) = post(
        &app,
        "OnVmChanged",
        &event_grid_envelope(sample, "2024-10-25T03:05:12Z"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_success_body(&body);
}

#[tokio::test]
async fn a_message_on_the_wrong_queue_is_refused() {
    let app = app(deps());
    let text = QueueMessage::Create(create_request()).encode();
    let envelope = service_bus_envelope("PollRestorePoint", &text, 1, "m", "2024-10-25T03:00:05Z");
    let (status, body) = post(&app, "PollRestorePoint", &envelope).await;
    // Refused for good: parked with its reason, the invocation answered (no redelivery).
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = assert_parked(&body);
    assert!(
        summary.contains(Queue::Poll.name()) && summary.contains("\"create\""),
        "{summary}"
    );
}

/// A parked invocation: success, `reported`, one message sent to `rp-failed`; the summary.
fn assert_parked(body: &Value) -> String {
    let rv = assert_success_body(body);
    assert_eq!(rv["status"], "reported", "{body}");
    assert_eq!(rv["sent"][0]["queue"], "rp-failed", "{body}");
    let summary = rv["summary"].as_str().unwrap().to_string();
    assert!(summary.starts_with("parked in rp-failed: "), "{summary}");
    summary
}

/// Deps whose scheduler the test reads (or makes fail).
fn deps_with(scheduler: Arc<dyn vmrp::azure::Scheduler>) -> vmrp::functions::Deps {
    let mut d = deps();
    d.scheduler = scheduler;
    d
}

/// A Service Bus that refuses every send.
struct DownBus;

#[async_trait::async_trait]
impl vmrp::azure::Scheduler for DownBus {
    async fn send(&self, m: vmrp::azure::OutgoingMessage) -> Result<(), vmrp::azure::SendError> {
        Err(vmrp::azure::SendError {
            queue: m.queue.name().into(),
            status: Some(503),
            message: "unavailable".into(),
        })
    }
}

/// Regression: a message that can never succeed (here a poll for a VM outside every policy
/// scope, as after a scope shrinks) is delivered once: the invocation succeeds, and the original
/// message is on `rp-failed` with its reason. On the old code it failed the invocation, so
/// Service Bus redelivered it 10 times before dead-lettering it.
#[tokio::test]
async fn a_permanent_failure_is_parked_once_with_its_reason() {
    let bus = Arc::new(RecordingScheduler::default());
    let app = app(deps_with(bus.clone()));
    let mut poll = poll_request();
    poll.vm = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/gone-from-policy"
        .parse()
        .unwrap();
    let text = QueueMessage::Poll(poll).encode();
    let envelope = service_bus_envelope(
        "PollRestorePoint",
        &text,
        1,
        "poll-42",
        "2024-10-25T03:00:05Z",
    );
    let (status, body) = post(&app, "PollRestorePoint", &envelope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = assert_parked(&body);
    assert!(summary.contains("outside every policy scope"), "{summary}");

    let sent = bus.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the parked record: {sent:?}");
    assert_eq!(sent[0].queue, Queue::Failed);
    assert!(sent[0].not_before.is_none());
    let parked: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(parked["kind"], "parked");
    assert_eq!(parked["queue"], "rp-poll");
    assert_eq!(parked["function"], "PollRestorePoint");
    assert_eq!(parked["messageId"], "poll-42");
    assert_eq!(parked["deliveryCount"], 1);
    assert_eq!(parked["errorKind"], "out_of_scope");
    assert!(parked["reason"]
        .as_str()
        .unwrap()
        .contains("gone-from-policy"));
    assert_eq!(parked["parkedAt"], "2024-10-25T03:00:05Z");
    assert_eq!(
        parked["body"],
        text.as_str(),
        "the original message, verbatim"
    );

    // The same failure again (a redelivery after a lost completion): the same parked id, so
    // Service Bus duplicate detection keeps one record.
    let (status, _) = post(&app, "PollRestorePoint", &envelope).await;
    assert_eq!(status, StatusCode::OK);
    let sent = bus.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].message_id, sent[1].message_id);

    // When the parking send fails, the invocation fails: Service Bus keeps the message.
    let app = app_with(deps_with(Arc::new(DownBus)), vmrp::host::functions());
    let (status, body) = post(&app, "PollRestorePoint", &envelope).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_failure_body(&body, "out_of_scope");
}

/// Transient failures are never parked: they fail the invocation and are retried.
#[tokio::test]
async fn transient_failures_are_not_parked() {
    let bus = Arc::new(RecordingScheduler::default());
    let functions = vec![Function::queue(
        "Busy",
        |_: Invocation<PollRequest>, _| async {
            Err(HandlerError::Arm(ArmError {
                operation: "GET restorePoints".into(),
                status: Some(503),
                code: "ServiceUnavailable".into(),
                message: "later".into(),
                request_id: None,
                retry_after: None,
            }))
        },
    )];
    let app = app_with(deps_with(bus.clone()), functions);
    let text = QueueMessage::Poll(poll_request()).encode();
    let envelope = service_bus_envelope("Busy", &text, 1, "m", "2024-10-25T03:00:05Z");
    let (status, body) = post(&app, "Busy", &envelope).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["transient"], true);
    assert!(bus.sent.lock().unwrap().is_empty());
}

/// Regression: a message another system sends with one extra field is processed (the old
/// code refused it for good), and the field is logged at Warning so a typo stays visible.
#[tokio::test]
async fn a_message_with_an_unknown_field_is_processed_and_warned_about() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let bus = Arc::new(RecordingScheduler::default());
    let app = app(deps_with(bus.clone()));
    let mut v: Value = serde_json::from_str(&QueueMessage::Poll(poll_request()).encode()).unwrap();
    v["requestedBy"] = json!("ops-portal");
    let envelope = service_bus_envelope(
        "PollRestorePoint",
        &v.to_string(),
        1,
        "m",
        "2024-10-25T03:00:05Z",
    );
    let (status, body) = post(&app, "PollRestorePoint", &envelope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rv = assert_success_body(&body);
    assert_ne!(
        rv["summary"].as_str().unwrap_or("").get(..9),
        Some("parked in"),
        "{body}"
    );
    assert!(
        bus.sent
            .lock()
            .unwrap()
            .iter()
            .all(|m| m.queue != Queue::Failed),
        "processed, not parked"
    );

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["field"] == "requestedBy")
        .unwrap_or_else(|| panic!("no warning naming the field in {text}"));
    assert_eq!(line["level"], "WARN", "{line}");
}

// ---------------------------------------------------------------------------------------------
// Malformed input.

#[tokio::test]
async fn malformed_input_is_a_failed_invocation_or_parked_with_a_reason() {
    let app = app(deps());
    let good = || {
        service_bus_envelope(
            "CreateRestorePoint",
            &QueueMessage::Create(create_request()).encode(),
            1,
            "m",
            "2024-10-25T03:00:05Z",
        )
    };
    let with = |pointer: &str, value: Value| {
        let mut env = good();
        *env.pointer_mut(pointer).unwrap() = value;
        env.to_string()
    };
    let without = |parent: &str, key: &str| {
        let mut env = good();
        env.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        env.to_string()
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "non-JSON body",
            "this is not json".into(),
            "bad_envelope",
            "body is not JSON",
        ),
        (
            "empty body",
            String::new(),
            "bad_envelope",
            "body is not JSON",
        ),
        (
            "JSON array",
            "[]".into(),
            "bad_envelope",
            "body: expected a JSON object",
        ),
        (
            "missing Data",
            r#"{"Metadata":{}}"#.into(),
            "bad_envelope",
            "Data: missing",
        ),
        (
            "missing msg binding",
            without("/Data", "msg"),
            "bad_envelope",
            "Data.msg: missing",
        ),
        (
            "msg is a number",
            with("/Data/msg", json!(42)),
            "bad_envelope",
            "Data.msg: expected a JSON string holding the message body",
        ),
        (
            "body not our schema",
            with("/Data/msg", json_string(r#"{"vmResourceId":"x"}"#)),
            "bad_message",
            "no \"v\" field",
        ),
        (
            "unknown kind",
            with("/Data/msg", json_string(r#"{"v":1,"kind":"explode"}"#)),
            "bad_message",
            "unknown message kind \"explode\"",
        ),
        (
            "unknown version",
            with("/Data/msg", json_string(r#"{"v":2,"kind":"create"}"#)),
            "bad_message",
            "\"v\": 2 is newer than this build reads",
        ),
        (
            "invalid field",
            with(
                "/Data/msg",
                json_string(r#"{"v":1,"kind":"create","vm":"nope","tick":"2024-10-25T00:00:00Z"}"#),
            ),
            "bad_message",
            "invalid ARM resource id",
        ),
        (
            "DeliveryCount a boolean",
            with("/Metadata/DeliveryCount", json!(true)),
            "bad_envelope",
            "Metadata.DeliveryCount: expected a delivery count",
        ),
        (
            "DeliveryCount text",
            with("/Metadata/DeliveryCount", json!("first")),
            "bad_envelope",
            "got \"first\"",
        ),
        (
            "MessageId a number",
            with("/Metadata/MessageId", json!(7)),
            "bad_envelope",
            "Metadata.MessageId: expected a string",
        ),
        (
            "sys missing",
            without("/Metadata", "sys"),
            "bad_envelope",
            "Metadata.sys: missing",
        ),
        (
            "UtcNow missing",
            without("/Metadata/sys", "UtcNow"),
            "bad_envelope",
            "Metadata.sys.UtcNow: missing",
        ),
        (
            "UtcNow a number",
            with("/Metadata/sys/UtcNow", json!(12)),
            "bad_envelope",
            "Metadata.sys.UtcNow: expected an RFC 3339 time string, got a number 12",
        ),
        (
            "UtcNow not a time",
            with("/Metadata/sys/UtcNow", json!("tomorrow")),
            "bad_envelope",
            "got \"tomorrow\"",
        ),
        (
            "Metadata an array",
            with("/Metadata", json!([])),
            "bad_envelope",
            "Metadata: expected a JSON object",
        ),
    ];
    for (what, body, kind, part) in cases {
        let (status, response) = send(&app, invoke_request("CreateRestorePoint", body)).await;
        if kind == "bad_message" {
            // A body that is not a vmrp message never will be: parked with the reason.
            assert_eq!(status, StatusCode::OK, "{what}: {response}");
            let summary = assert_parked(&response);
            assert!(summary.contains(part), "{what}: {summary}");
            continue;
        }
        // No message to park: the envelope itself is broken.
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{what}: {response}"
        );
        let message = assert_failure_body(&response, kind);
        assert!(message.contains(part), "{what}: {message}");
        assert_eq!(response["error"]["transient"], false, "{what}");
    }

    let timer_cases: Vec<(&str, Value, &str)> = vec![
        (
            "IsPastDue text",
            json!({"IsPastDue": "maybe"}),
            "Data.timer.IsPastDue: expected true or false",
        ),
        (
            "Next not a date",
            json!({"ScheduleStatus": {"Next": "soon"}}),
            "Data.timer.ScheduleStatus.Next",
        ),
    ];
    for (what, timer, part) in timer_cases {
        let mut env = timer_envelope("ScheduleRestorePoints");
        env["Data"]["timer"] = timer;
        let (status, response) = post(&app, "ScheduleRestorePoints", &env).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
        assert!(
            assert_failure_body(&response, "bad_envelope").contains(part),
            "{what}: {response}"
        );
    }

    let (status, response) = post(
        &app,
        "OnVmChanged",
        &event_grid_envelope(json!({"id": "e", "eventType": "x"}), "2024-10-25T03:05:12Z"),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(assert_failure_body(&response, "bad_envelope")
        .contains("\"data.resourceUri\" or \"subject\""));

    // Still serving, and a good invocation still succeeds.
    let (status, body) = post(&app, "CreateRestorePoint", &good()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn body_limit_is_enforced_with_a_clear_failure() {
    let app = app(deps());
    // Just under the limit: a valid envelope padded with an ignored metadata key.
    let mut env = timer_envelope("ScheduleRestorePoints");
    let base = env.to_string().len();
    env["Metadata"]["padding"] = json!("x".repeat(MAX_BODY_BYTES - base - 20));
    let body = env.to_string();
    assert!(body.len() <= MAX_BODY_BYTES);
    let (status, response) = send(&app, invoke_request("ScheduleRestorePoints", body)).await;
    assert_eq!(status, StatusCode::OK, "{response}");

    // Over the limit, with Content-Length.
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, response) = send(&app, invoke_request("ScheduleRestorePoints", huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = assert_failure_body(&response, "body_too_large");
    assert!(message.contains(&MAX_BODY_BYTES.to_string()), "{message}");

    // Over the limit, streamed without a length (how the host's client sends).
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..20)
        .map(|_| Ok(Bytes::from(vec![b' '; 64 * 1024])))
        .collect();
    let request = invoke_request(
        "ScheduleRestorePoints",
        Body::from_stream(futures::stream::iter(chunks)),
    );
    let (status, response) = send(&app, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_failure_body(&response, "body_too_large");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = app(deps());
    let envelope = timer_envelope("ScheduleRestorePoints");
    for path in [
        "NoSuchFunction",
        "schedulerestorepoints",
        "api/ScheduleRestorePoints",
    ] {
        let (status, body) = post(&app, path, &envelope).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let message = assert_failure_body(&body, "unknown_function");
        assert!(
            message.contains("ScheduleRestorePoints"),
            "lists the known functions: {message}"
        );
    }
    let (status, body) = send(
        &app,
        Request::get("/ScheduleRestorePoints")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["kind"], "method_not_allowed");
}

#[tokio::test]
async fn readiness_answers_get_and_head() {
    let app = app(deps());
    let (status, body) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    let response = app
        .clone()
        .oneshot(Request::head("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Handler failures and panics.

fn panicking_functions() -> Vec<Function> {
    vec![
        Function::timer("PanicsInFuture", |inv, _| async move {
            if !inv.event.is_past_due {
                panic!("boom in the future");
            }
            skipped()
        }),
        Function::timer(
            "PanicsBeforeFuture",
            |_, _| -> std::future::Ready<Result<Outcome, HandlerError>> {
                panic!("boom before the future")
            },
        ),
        Function::timer("Works", |_, _| async { skipped() }),
        Function::timer("Throttled", |_, _| async {
            Err(HandlerError::Arm(ArmError {
                operation: "PUT restorePoints".into(),
                status: Some(429),
                code: "TooManyRequests".into(),
                message: "slow down".into(),
                request_id: Some("req-1".into()),
                retry_after: None,
            }))
        }),
        Function::timer("Refuses", |_, _| async {
            Err(HandlerError::Invalid("rule prod has no copies".into()))
        }),
    ]
}

#[tokio::test]
async fn panics_become_failed_invocations_and_serving_continues() {
    let app = app_with(deps(), panicking_functions());
    let envelope = timer_envelope("x");
    for (function, part) in [
        ("PanicsInFuture", "boom in the future"),
        ("PanicsBeforeFuture", "boom before the future"),
    ] {
        let (status, body) = post(&app, function, &envelope).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{function}");
        let message = assert_failure_body(&body, "panic");
        assert!(message.contains(part), "{message}");
    }
    let (status, body) = post(&app, "Works", &envelope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn handler_errors_are_failed_invocations_with_their_class() {
    let app = app_with(deps(), panicking_functions());
    let envelope = timer_envelope("x");
    let (status, body) = post(&app, "Throttled", &envelope).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let message = assert_failure_body(&body, "arm");
    assert!(
        message.contains("TooManyRequests") && message.contains("req-1"),
        "{message}"
    );
    assert_eq!(body["error"]["transient"], true);

    let (status, body) = post(&app, "Refuses", &envelope).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        assert_failure_body(&body, "invalid"),
        "rule prod has no copies"
    );
    assert_eq!(body["error"]["transient"], false);
}

/// Over real TCP: a panicking invocation does not take the server (or the connection pool) down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_over_tcp_keep_the_server_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vmrp::host::serve::serve_on(
        listener,
        app_with(deps(), panicking_functions()),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let body = timer_envelope("x").to_string();
    let result = tokio::task::spawn_blocking(move || {
        let headers = [("Content-Type", "application/json")];
        let panicked = http_request(
            port,
            "POST",
            "/PanicsInFuture",
            &headers,
            Some(body.as_bytes()),
        )
        .unwrap();
        let works = http_request(port, "POST", "/Works", &headers, Some(body.as_bytes())).unwrap();
        (panicked, works)
    })
    .await
    .unwrap();
    assert_eq!(result.0 .0, 500);
    let failed: Value = serde_json::from_slice(&result.0 .1).unwrap();
    assert_failure_body(&failed, "panic");
    assert_eq!(result.1 .0, 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Logging and shutdown.

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_with_field_invocation_and_function() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut envelope = service_bus_envelope(
        "CreateRestorePoint",
        &QueueMessage::Create(create_request()).encode(),
        1,
        "m",
        "2024-10-25T03:00:05Z",
    );
    envelope["Metadata"]["DeliveryCount"] = json!([1]);
    let (status, _) = post(&app(deps()), "CreateRestorePoint", &envelope).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "invocation failed")
        .unwrap_or_else(|| panic!("no failure line in {text}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["fields"]["kind"], "bad_envelope");
    let error = line["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains("Metadata.DeliveryCount: expected a delivery count"),
        "{error}"
    );
    assert_eq!(line["span"]["invocation_id"], INVOCATION_ID, "{line}");
    assert_eq!(line["span"]["function"], "CreateRestorePoint", "{line}");
}

/// SIGTERM semantics in-process: once shutdown starts, an in-flight invocation still completes
/// and the server then stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_invocations() {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let slow = Function::timer("Slow", move |_, _| {
        let started = started_tx.lock().unwrap().take();
        async move {
            if let Some(tx) = started {
                let _ = tx.send(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Outcome::new(Status::Done, "finished after shutdown began"))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vmrp::host::serve::serve_on(
        listener,
        app_with(deps(), vec![slow]),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    let body = timer_envelope("Slow").to_string();
    let request = tokio::task::spawn_blocking(move || {
        http_request(port, "POST", "/Slow", &[], Some(body.as_bytes()))
    });
    started_rx.await.unwrap();
    stop.send(()).unwrap();
    let (status, body) = request.await.unwrap().unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["ReturnValue"]["summary"],
        "finished after shutdown began"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after the in-flight invocation")
        .unwrap()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
}

/// The fixtures' point is where the handlers put it (collection names carry the VM id's hash).
#[test]
fn the_shared_point_is_the_one_names_builds() {
    let vm: vmrp::azure::ResourceId = VM.parse().unwrap();
    let built = vmrp::names::collection_id(&vm, None)
        .unwrap()
        .child("restorePoints", &vmrp::names::restore_point_name(TICK, 0));
    assert_eq!(built.as_str(), POINT);
}
