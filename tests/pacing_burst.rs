//! A burst of due polls against the emulator's ARM (its per-subscription token buckets, on a
//! virtual clock), as after an outage: the handlers pacing themselves from ARM's
//! `x-ms-ratelimit-remaining-subscription-reads`, side by side with the same handlers blind to
//! those readings (what every handler but the timer did before). Prints both counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::macros::datetime;
use time::OffsetDateTime;
use url::Url;

use vmrp::azure::client::{ArmClient, ArmClientConfig};
use vmrp::azure::credential::StaticToken;
use vmrp::azure::http::{RetryConfig, Timeouts};
use vmrp::azure::models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};
use vmrp::azure::{Accepted, Arm, ArmError, RateLimits, ResourceId, VmScope};
use vmrp::emulator::arm::{ArmConfig, ArmEmulator, FleetSpec};
use vmrp::emulator::clock::VirtualClock;
use vmrp::emulator::faults::{Dice, FaultConfig};
use vmrp::functions::{self, Deps};
use vmrp::invocation::{Context, Invocation};
use vmrp::messages::{PollRequest, QueueMessage, Role};
use vmrp::testing::{self, FakeScheduler};

const SUB: &str = "00000000-0000-0000-0000-0000000000b1";
const T0: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

/// The ARM client with its budget readings hidden: pacing never holds anything back.
struct Blind(ArmClient);

#[async_trait]
impl Arm for Blind {
    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        self.0.get_vm(id).await
    }
    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        self.0.list_vms(scope).await
    }
    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        self.0.get_disk(id).await
    }
    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        self.0.list_disks(scope).await
    }
    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        self.0.put_collection(id, body).await
    }
    async fn get_collection(
        &self,
        id: &ResourceId,
        expand_points: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        self.0.get_collection(id, expand_points).await
    }
    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        self.0.list_collections(subscription).await
    }
    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        self.0.delete_collection(id).await
    }
    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        self.0.create_restore_point(id, body).await
    }
    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        self.0.get_restore_point(id, instance_view).await
    }
    async fn poll_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<(Option<RestorePoint>, Option<Duration>), ArmError> {
        self.0.poll_restore_point(id, instance_view).await
    }
    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        self.0.delete_restore_point(id).await
    }
    fn rate_limits_for(&self, _subscription: &str) -> RateLimits {
        RateLimits::default()
    }
}

/// What one burst cost: the emulator's 429s, its requests, and the polls that read their point.
#[derive(Debug)]
struct Burst {
    throttled: u64,
    requests: u64,
    polls_done: usize,
    last_poll_s: i64,
}

/// `n` polls of one subscription, all due at T0 + 1 h (an outage just ended), handled one after
/// another at their due time on a virtual clock that only moves to the next due message (the
/// buckets refill by virtual time, as in ARM); every poll sent back is handled when it falls due.
async fn burst(n: usize, paced: bool) -> Burst {
    let clock = Arc::new(VirtualClock::new(T0, 1e-9));
    let emu = ArmEmulator::new(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        clock.clone(),
        Arc::new(Dice::new(7)),
        Arc::new(FaultConfig::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = emu.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&format!("http://{addr}/")).unwrap(),
        audience: Some("https://management.azure.com".into()),
        credential: StaticToken::new("test-token", Duration::from_secs(3600)),
        timeouts: Timeouts::default(),
        // No in-call retry: each refusal is counted once and goes back on the queue.
        retry: RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        },
        loopback_only: true,
        record_traffic: None,
    })
    .unwrap();
    let arm: Arc<dyn Arm> = if paced {
        Arc::new(client)
    } else {
        Arc::new(Blind(client))
    };
    let bus = Arc::new(FakeScheduler::new());
    let mut rule = testing::rule("prod", 3);
    rule.targets.subscriptions = vec![SUB.into()];
    let deps = Deps::new(
        arm,
        bus.clone(),
        Arc::new(testing::policy(vec![rule])),
        "0 0 * * * *",
    );
    let due = T0 + time::Duration::hours(1);
    clock.advance(due - clock.now());
    // (due, sequence, poll): handled in due order.
    let mut queue: BTreeMap<(OffsetDateTime, usize), PollRequest> = BTreeMap::new();
    for i in 0..n {
        let vm = testing::vm_id(SUB, "rg", &format!("vm{i}"));
        let target = vmrp::names::collection_id(&vm, None)
            .unwrap()
            .child("restorePoints", "rp-20260301T0000Z");
        let poll = PollRequest {
            target,
            role: Role::Local,
            attempt: 2,
            first_seen: T0,
            deadline: T0 + time::Duration::days(1),
            vm,
            tick: T0,
            rule: Some("prod".into()),
            retry: 0,
            copy_to: Vec::new(),
            source: None,
            target_region: None,
            prune_again: 0,
        };
        queue.insert((due, i), poll);
    }
    let (mut seq, mut polls_done, mut last) = (n, 0, due);
    while let Some(((at, _), poll)) = queue.pop_first() {
        if at > clock.now() {
            clock.advance(at - clock.now());
        }
        let out = functions::poll_restore_point::handle(
            Invocation::new(
                poll,
                Context::new(functions::POLL_RESTORE_POINT, clock.now()),
            ),
            &deps,
        )
        .await
        .expect("poll handled");
        let requeued: Vec<_> = bus.take();
        if requeued.is_empty() {
            // The point was read (it does not exist here: "vanished", one read).
            polls_done += 1;
            last = clock.now();
        }
        for m in requeued {
            let QueueMessage::Poll(p) = QueueMessage::decode(&m.body).unwrap() else {
                panic!("a poll: {}", out.summary)
            };
            seq += 1;
            queue.insert((m.not_before.unwrap_or(clock.now()), seq), p);
        }
        assert!(seq < n * 40, "the burst does not settle");
    }
    let c = emu.counters();
    Burst {
        throttled: c.throttled,
        requests: c.requests,
        polls_done,
        last_poll_s: (last - due).whole_seconds(),
    }
}

/// Regression: after an outage, 600 polls of one subscription fall due together. Blind to ARM's
/// readings (the old code: only the timer paced), they meet the read bucket (250 + 25/s) at once
/// and hundreds are refused with 429; pacing itself, each handler puts its poll back while the
/// bucket, as ARM last reported it, is below the floor: none is refused, and every poll is
/// still done within a couple of minutes.
#[tokio::test]
async fn a_burst_of_due_polls_meets_no_429_when_the_handlers_pace_themselves() {
    let blind = burst(600, false).await;
    let paced = burst(600, true).await;
    println!("burst of 600 due polls, one subscription: blind {blind:?}; paced {paced:?}");
    assert_eq!(blind.polls_done, 600);
    assert_eq!(paced.polls_done, 600);
    assert!(blind.throttled > 300, "{blind:?}");
    assert_eq!(paced.throttled, 0, "{paced:?}");
    assert_eq!(
        paced.requests, 600,
        "one read per poll, none wasted: {paced:?}"
    );
    assert!(paced.last_poll_s <= 180, "{paced:?}");
}
