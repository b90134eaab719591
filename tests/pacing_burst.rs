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
    let client = single_try_client(addr);
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

/// What a backlog of planned creates cost: the emulator's 429s and requests, the creates that
/// started their point, and the virtual seconds from the first slot to the last point PUT.
#[derive(Debug)]
struct Backlog {
    throttled: u64,
    requests: u64,
    created: usize,
    reported: Vec<String>,
    last_create_s: i64,
}

/// `n` VMs of one subscription planned for tick T0 by the timer's own planner
/// (`plan::plan_tick_from`, its slots paced by ARM's write refill), but handled late: two
/// instances (each its own ARM client, so its own readings, and 16 invocations at once) only
/// start on the backlog `late` after the tick, as when the handlers catch up after a slow
/// start. With `slots` false the create messages carry no slot (`plannedFor`), which is what
/// every planned create looked like to the old code: a first try never paced itself.
async fn planned_backlog(n: usize, late: time::Duration, slots: bool) -> Backlog {
    use vmrp::messages::{CollectionSeen, ListedVm};
    use vmrp::plan::{self, PlanTarget};
    use vmrp::policy::DiskInfo;

    let clock = Arc::new(VirtualClock::new(T0, 1e-9));
    let emu = ArmEmulator::new(
        ArmConfig {
            fleet: FleetSpec {
                count: n,
                subscriptions: 1,
                regions: vec!["westeurope".into()],
                ephemeral_os_fraction: 0.0,
                shared_disk_fraction: 0.0,
                ultra_disk_fraction: 0.0,
                premium_v2_fraction: 0.0,
                ..FleetSpec::default()
            },
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
    let sub = emu.subscriptions()[0].clone();
    let mut rule = testing::rule("prod", 3);
    rule.targets.subscriptions = vec![sub.clone()];
    let policy = Arc::new(testing::policy(vec![rule.clone()]));
    let instance = || {
        let client = single_try_client(addr);
        let bus = Arc::new(FakeScheduler::new());
        let deps = Deps::new(Arc::new(client), bus.clone(), policy.clone(), "0 0 * * * *");
        (deps, bus)
    };
    let instances = [instance(), instance()];

    // The timer's plan, from the emulator's VMs and disks (as its listings would show them).
    let vms = emu.list_vms();
    let targets: Vec<PlanTarget<'_>> = vms
        .iter()
        .map(|vm| PlanTarget {
            vm: vm.resource_id().unwrap(),
            rule: &rule,
            listed: Some(ListedVm {
                at: T0,
                vm: vm.clone(),
                disks: emu
                    .disks_of(vm)
                    .iter()
                    .filter_map(DiskInfo::from_disk)
                    .collect(),
                collection: Some(CollectionSeen::Missing),
                planned_for: None,
            }),
        })
        .collect();
    let timer = vmrp::schedule::Schedule::parse("0 0 * * * *").unwrap();
    let planned = plan::plan_tick_from(T0, T0, &timer, &targets, &plan::Pacing::default());
    let mut queue: BTreeMap<(OffsetDateTime, usize), vmrp::messages::CreateRequest> =
        BTreeMap::new();
    for (seq, item) in planned.creates().enumerate() {
        let mut req = item.request.clone().unwrap();
        if !slots {
            req.listed.as_mut().unwrap().planned_for = None;
        }
        queue.insert((item.not_before.unwrap(), seq), req);
    }
    assert_eq!(queue.len(), n, "every VM planned");
    let first_slot = T0;
    clock.advance(T0 + late - clock.now());

    let (mut seq, mut created, mut reported, mut last) = (n, 0, Vec::new(), first_slot);
    while let Some((&(due, _), _)) = queue.first_key_value() {
        if due > clock.now() {
            clock.advance(due - clock.now());
        }
        // What the two instances take at once: 16 each of what is due.
        let now = clock.now();
        let mut batch = Vec::new();
        while batch.len() < 32 {
            match queue.first_key_value() {
                Some((&(d, _), _)) if d <= now => batch.push(queue.pop_first().unwrap().1),
                _ => break,
            }
        }
        let runs = batch.into_iter().enumerate().map(|(i, req)| {
            let (deps, _) = &instances[i % 2];
            functions::create_restore_point::handle(
                Invocation::new(req, Context::new(functions::CREATE_RESTORE_POINT, now)),
                deps,
            )
        });
        for out in futures::future::join_all(runs).await {
            let out = out.expect("create handled");
            match out.status {
                vmrp::invocation::Status::Done => {
                    created += 1;
                    last = now;
                }
                vmrp::invocation::Status::Rescheduled => {}
                _ => reported.push(out.summary),
            }
        }
        for (_, bus) in &instances {
            for m in bus.take() {
                if let QueueMessage::Create(c) = QueueMessage::decode(&m.body).unwrap() {
                    seq += 1;
                    queue.insert((m.not_before.unwrap_or(now), seq), c);
                }
            }
        }
        // The batch took a moment of the handlers' time.
        clock.advance(time::Duration::milliseconds(100));
        assert!(seq < n * 40, "the backlog does not settle");
    }
    let c = emu.counters();
    Backlog {
        throttled: c.throttled,
        requests: c.requests,
        created,
        reported,
        last_create_s: (last - first_slot).whole_seconds(),
    }
}

/// Regression (the estate row: 6.1 % of ARM requests were 429, all in CreateRestorePoint):
/// 600 creates the timer paced over ~2 minutes, handled by two instances only 5 minutes after
/// the tick. Without a slot (what the old code did with every planned first try) they go at
/// once and meet the write bucket (200 + 10/s) together; a create past its slot now paces
/// itself from ARM's readings, which each instance also lowers by what its own running
/// invocations are about to spend: no 429, every create made, within a few minutes.
#[tokio::test]
async fn a_late_backlog_of_planned_creates_meets_no_429() {
    let late = time::Duration::minutes(5);
    let before = planned_backlog(600, late, false).await;
    let after = planned_backlog(600, late, true).await;
    println!(
        "600 planned creates handled 5 min late by 2 instances: without slots {before:?}; with \
         slots {after:?}"
    );
    assert!(before.reported.is_empty(), "{:?}", before.reported);
    assert!(after.reported.is_empty(), "{:?}", after.reported);
    assert_eq!(before.created, 600);
    assert_eq!(after.created, 600);
    assert!(before.throttled > 100, "{before:?}");
    assert_eq!(after.throttled, 0, "{after:?}");
    assert_eq!(
        after.requests, 1200,
        "a collection and a point PUT per create: {after:?}"
    );
    // 1,200 writes at ARM's refill after its burst: about 100 s; the spread of the put-backs
    // (a minute at least) adds to it.
    assert!(after.last_create_s <= 300 + 240, "{after:?}");
}

/// An ARM client on the emulator at `addr` with no in-call retry: each refusal is counted once
/// and goes back on the queue.
fn single_try_client(addr: std::net::SocketAddr) -> ArmClient {
    ArmClient::new(ArmClientConfig {
        endpoint: Url::parse(&format!("http://{addr}/")).unwrap(),
        audience: Some("https://management.azure.com".into()),
        credential: StaticToken::new("test-token", Duration::from_secs(3600)),
        timeouts: Timeouts::default(),
        retry: RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        },
        loopback_only: true,
        record_traffic: None,
    })
    .unwrap()
}
