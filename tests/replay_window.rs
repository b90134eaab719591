//! Regression: a create replayed hours later re-sends its first poll under the same message
//! id; only Service Bus duplicate detection stops that from starting a second poll chain (double
//! reads, double pruning). The handlers run against the emulator's Service Bus (its duplicate
//! window is the deployed one, infra/modules/servicebus.bicep), on its virtual clock.

use std::sync::Arc;

use async_trait::async_trait;
use time::macros::datetime;
use time::OffsetDateTime;

use vmrp::azure::{OutgoingMessage, Queue, ResourceId, Scheduler, SendError};
use vmrp::emulator::clock::VirtualClock;
use vmrp::emulator::faults::{Dice, FaultConfig};
use vmrp::emulator::identity::IdentityEndpoint;
use vmrp::emulator::servicebus::{BusConfig, NewMessage, ServiceBus};
use vmrp::functions::{self, Deps};
use vmrp::invocation::{Context, Invocation, Status};
use vmrp::messages::{CreateRequest, QueueMessage};
use vmrp::names;
use vmrp::testing::{self, FakeArm, VmBuilder};

const T0: OffsetDateTime = datetime!(2026-11-25 03:00:00 UTC);
/// Daily: a create two hours late is not yet superseded by the next tick.
const DAILY: &str = "0 0 3 * * *";

/// The handlers' scheduler, sending into the emulator's broker (in process).
struct Broker(Arc<ServiceBus>);

#[async_trait]
impl Scheduler for Broker {
    async fn send(&self, m: OutgoingMessage) -> Result<(), SendError> {
        self.0
            .send(
                m.queue.name(),
                NewMessage {
                    body: m.body,
                    message_id: Some(m.message_id),
                    scheduled_enqueue_time: m.not_before,
                    ..Default::default()
                },
            )
            .map(drop)
            .map_err(|e| SendError {
                queue: m.queue.name().into(),
                status: Some(400),
                message: e.to_string(),
            })
    }
}

fn polls_for(bus: &ServiceBus, target: &ResourceId) -> usize {
    bus.messages(Queue::Poll.name())
        .unwrap()
        .iter()
        .filter(|m| match QueueMessage::decode(&m.body) {
            Ok(QueueMessage::Poll(p)) => &p.target == target,
            _ => false,
        })
        .count()
}

#[tokio::test]
async fn a_create_replayed_two_hours_later_starts_no_second_poll_chain() {
    // Practically frozen: the test moves virtual time itself.
    let clock = Arc::new(VirtualClock::new(T0, 1e-9));
    let bus = ServiceBus::new(
        BusConfig::default(),
        clock.clone(),
        Arc::new(Dice::new(1)),
        Arc::new(FaultConfig::default()),
        IdentityEndpoint::new("h", false),
    );
    let arm = Arc::new(FakeArm::new());
    arm.set_now(T0);
    let vm = arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let mut rule = testing::rule("prod", 3);
    // Long enough that the first chain is still live when the replay comes.
    rule.deadlines.local_minutes = 600;
    let deps = Deps::new(
        arm.clone(),
        Arc::new(Broker(bus.clone())),
        Arc::new(testing::policy(vec![rule])),
        DAILY,
    );
    let point = names::collection_id(&vm, None)
        .unwrap()
        .child("restorePoints", &names::restore_point_name(T0, 0));
    let request = CreateRequest::for_tick(vm.clone(), T0, "prod");
    let create = |now: OffsetDateTime| {
        let inv = Invocation::new(
            request.clone(),
            Context::new(functions::CREATE_RESTORE_POINT, now),
        );
        let deps = deps.clone();
        async move { functions::create_restore_point::handle(inv, &deps).await }
    };

    let first = create(T0).await.unwrap();
    assert_eq!(first.status, Status::Done, "{}", first.summary);
    assert_eq!(polls_for(&bus, &point), 1);

    // The live chain: each poll finds the point still creating and schedules the next.
    let replay_at = T0 + time::Duration::hours(2);
    let mut polled = 0;
    while let Some(due) = bus.next_available_at(Queue::Poll.name()) {
        if due > replay_at {
            break;
        }
        clock.advance(due - clock.now());
        let d = bus.receive(Queue::Poll.name()).unwrap().expect("due");
        let QueueMessage::Poll(p) = QueueMessage::decode(&d.message.body).unwrap() else {
            panic!("a poll");
        };
        let now = clock.now();
        arm.set_now(now);
        let inv = Invocation::new(p, Context::new(functions::POLL_RESTORE_POINT, now));
        let out = functions::poll_restore_point::handle(inv, &deps)
            .await
            .unwrap();
        assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
        assert!(bus.complete(Queue::Poll.name(), &d.lock_token));
        polled += 1;
    }
    assert!(polled >= 3, "the chain ran: {polled} polls");
    assert_eq!(polls_for(&bus, &point), 1, "one live poll pending");

    // Two virtual hours later the same create is delivered again (say its completion was
    // lost while the app restarted): it finds the point and re-sends poll number 1.
    clock.advance(replay_at - clock.now());
    arm.set_now(replay_at);
    let dropped_before = bus.counters(Queue::Poll.name()).unwrap().duplicates_dropped;
    let again = create(replay_at).await.unwrap();
    assert_eq!(again.status, Status::Skipped, "{}", again.summary);
    assert_eq!(
        bus.counters(Queue::Poll.name()).unwrap().duplicates_dropped,
        dropped_before + 1,
        "the replayed first poll is a duplicate inside the deployed window"
    );
    assert_eq!(
        polls_for(&bus, &point),
        1,
        "still one poll chain for {point}"
    );
}

#[test]
fn the_emulator_window_is_the_deployed_one() {
    let bicep = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/modules/servicebus.bicep"
    ))
    .unwrap();
    let windows: Vec<&str> = bicep
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("duplicateDetectionHistoryTimeWindow: ")
        })
        .collect();
    assert_eq!(windows.len(), 2, "the work queues and the parking queue");
    for w in windows {
        assert_eq!(w, "'P7D'");
    }
    assert_eq!(
        BusConfig::default().duplicate_window,
        time::Duration::days(7)
    );
}
