//! The restore point lifecycle through the six handlers, against the in-memory FakeArm and
//! FakeScheduler: each test calls handlers directly with an `Invocation` and a fixed `now`.

use std::sync::Arc;
use std::time::Duration;

use time::macros::datetime;
use time::OffsetDateTime;

use vmrp::azure::models::Tags;
use vmrp::azure::{OutgoingMessage, Queue, ResourceId};
use vmrp::events::{EventSchema, ResourceEvent, TimerEvent};
use vmrp::functions::{self, Deps, HandlerError, TAG_ORPHANED_AT, TAG_RULE, TAG_VM};
use vmrp::invocation::{Context, Invocation, Outcome, Status};
use vmrp::messages::{
    CollectionSeen, CopyRequest, CreateRequest, PlanRequest, PollRequest, QueueMessage, Role,
};
use vmrp::names;
use vmrp::policy::{CopyTarget, Policy, Retention, Rule};
use vmrp::testing::{self, disk, disk_id, op, vm_id, FakeArm, FakeScheduler, VmBuilder};

const T0: OffsetDateTime = datetime!(2026-11-25 03:00:00 UTC);
const HOURLY: &str = "0 0 * * * *";

struct World {
    arm: Arc<FakeArm>,
    bus: Arc<FakeScheduler>,
    deps: Deps,
}

fn world(policy: Policy) -> World {
    let arm = Arc::new(FakeArm::new());
    arm.set_now(T0);
    let bus = Arc::new(FakeScheduler::new());
    let deps = Deps::new(arm.clone(), bus.clone(), Arc::new(policy), HOURLY);
    World { arm, bus, deps }
}

/// One rule over subscription `s1`, keeping the newest `keep_last`, copying to `copies`.
fn rule_s1(keep_last: u32, copies: &[&str]) -> Rule {
    let mut r = testing::rule("prod", keep_last);
    r.targets.subscriptions = vec!["s1".into()];
    r.copies = copies
        .iter()
        .map(|region| CopyTarget {
            region: region.to_string(),
            resource_group: None,
            retention: None,
            encryption_sets: Default::default(),
        })
        .collect();
    r
}

fn inv<T>(event: T, function: &str, now: OffsetDateTime) -> Invocation<T> {
    Invocation::new(event, Context::new(function, now))
}

fn create_req(vm: &ResourceId, tick: OffsetDateTime) -> CreateRequest {
    CreateRequest {
        vm: vm.clone(),
        tick,
        rule: None,
        consistency_mode: None,
        exclude_disks: None,
        copy_to: None,
        retry: 0,
        attempt: 0,
        paced: 0,
        listed: None,
    }
}

async fn create(
    w: &World,
    req: CreateRequest,
    now: OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    functions::create_restore_point::handle(inv(req, functions::CREATE_RESTORE_POINT, now), &w.deps)
        .await
}

async fn poll(w: &World, req: PollRequest, now: OffsetDateTime) -> Outcome {
    functions::poll_restore_point::handle(inv(req, functions::POLL_RESTORE_POINT, now), &w.deps)
        .await
        .expect("poll handler succeeds")
}

async fn copy(w: &World, req: CopyRequest, now: OffsetDateTime) -> Outcome {
    functions::start_cross_region_copy::handle(
        inv(req, functions::START_CROSS_REGION_COPY, now),
        &w.deps,
    )
    .await
    .expect("copy handler succeeds")
}

fn collection(vm: &ResourceId) -> ResourceId {
    names::collection_id(vm, None).unwrap()
}

fn point(vm: &ResourceId, tick: OffsetDateTime, retry: u32) -> ResourceId {
    collection(vm).child("restorePoints", &names::restore_point_name(tick, retry))
}

fn copy_point(vm: &ResourceId, region: &str, tick: OffsetDateTime) -> ResourceId {
    names::copy_collection_id(vm, region, None)
        .unwrap()
        .child("restorePoints", &names::restore_point_name(tick, 0))
}

fn decode(m: &OutgoingMessage) -> QueueMessage {
    QueueMessage::decode(&m.body).expect("valid message")
}

fn only_poll(sent: &[OutgoingMessage]) -> PollRequest {
    match sent {
        [m] => match decode(m) {
            QueueMessage::Poll(p) => p,
            other => panic!("expected a poll, got {other:?}"),
        },
        other => panic!("expected one message, got {other:?}"),
    }
}

fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

fn about(got: OffsetDateTime, want: OffsetDateTime, tolerance_pct: f64, base: Duration) -> bool {
    let diff = (got - want).abs();
    diff <= time::Duration::try_from(base.mul_f64(tolerance_pct)).unwrap()
}

// ------------------------------------------------------------------------------------------
// CreateRestorePoint
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_ensures_collection_once_then_skips_it() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "vm1")
            .location("westeurope")
            .build(),
    );

    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    // Today's name, then the pre-hash `rpc-vm1` (an upgrade keeps using it): neither is there.
    assert_eq!(w.arm.count(op::GET_COLLECTION), 2);
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 1);
    let c = w
        .arm
        .collection(&collection(&vm))
        .expect("collection created");
    assert_eq!(c.location.as_deref(), Some("westeurope"));
    assert_eq!(c.source_id(), Some(vm.as_str()));
    let tags = c.tags.unwrap();
    assert_eq!(tags.get(TAG_RULE).map(String::as_str), Some("prod"));
    assert_eq!(tags.get(TAG_VM).map(String::as_str), Some(vm.as_str()));

    // The first poll: local, attempt 1, ~30 s later, deterministic id.
    let sent = w.bus.take();
    let p = only_poll(&sent);
    assert_eq!(p.target, point(&vm, T0, 0));
    assert_eq!((p.role, p.attempt, p.first_seen), (Role::Local, 1, T0));
    assert_eq!(p.deadline, T0 + hours(2));
    assert!(about(
        sent[0].not_before.unwrap(),
        T0 + Duration::from_secs(30),
        0.1,
        Duration::from_secs(30)
    ));
    assert_eq!(
        sent[0].message_id,
        names::message_id("poll", p.target.as_str(), T0, 1)
    );

    // Next tick: the collection is known, no GET or PUT of it.
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    let t1 = T0 + hours(1);
    let out = create(&w, create_req(&vm, t1), t1).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(
        w.arm.count(op::GET_COLLECTION),
        2,
        "collection not read again"
    );
    assert_eq!(
        w.arm.count(op::PUT_COLLECTION),
        1,
        "collection not written again"
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 2);
    assert!(w.arm.point(&point(&vm, t1, 0)).is_some());
}

#[tokio::test]
async fn replayed_create_does_not_duplicate() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let first = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(first.status, Status::Done);
    // Redelivered a minute later (e.g. the first invocation timed out after its PUT).
    let again = create(&w, create_req(&vm, T0), T0 + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Skipped, "{}", again.summary);
    // The replay PUTs without reading first; ARM refuses the existing point (409) and one GET
    // confirms it, so the point is neither duplicated nor changed.
    assert_eq!(
        w.arm.count(op::PUT_POINT),
        2,
        "the replay's PUT was refused"
    );
    assert_eq!(w.arm.count(op::GET_POINT), 1, "one GET confirmed the point");
    assert_eq!(
        w.arm.point_ids(&collection(&vm)).len(),
        1,
        "still one point"
    );
    assert_eq!(w.bus.sent().len(), 2, "the poll is re-sent…");
    assert_eq!(
        w.bus.delivered().len(),
        1,
        "…with the same id, so Service Bus drops it"
    );
}

/// A create redelivered after its point failed, was retried and pruned once the retry settled
/// (the first delivery's completion lost, or its handler killed) does not make the pruned try
/// anew: in CI's fault e2e that left a Failed point nothing pruned; had the new try succeeded,
/// it would have been a duplicate. A redelivery with no later try goes on as before.
#[tokio::test]
async fn a_create_redelivered_after_its_retry_was_made_does_not_make_the_try_again() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    // rp-T0 failed; its retry -r1 settled and pruned it.
    let retry = point(&vm, T0, 1);
    w.arm.add_point(
        &retry,
        "Succeeded",
        T0 + time::Duration::minutes(20),
        None,
        &[],
    );
    let redelivered = |req: CreateRequest, now| {
        let mut i = inv(req, functions::CREATE_RESTORE_POINT, now);
        i.context.delivery_count = 2;
        functions::create_restore_point::handle(i, &w.deps)
    };
    let now = T0 + time::Duration::minutes(30);
    let out = redelivered(create_req(&vm, T0), now).await.unwrap();
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    assert!(
        out.summary.contains("rp-20261125T0300Z-r1"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.point_ids(&collection(&vm)), vec![retry.clone()]);
    assert_eq!(w.arm.count(op::PUT_POINT), 0, "nothing written");
    assert!(
        w.bus.sent().is_empty(),
        "no poll for a try that is not made"
    );

    // The retry's own redelivery finds no later try: it goes on (a replay of an existing point).
    let mut again = create_req(&vm, T0);
    again.retry = 1;
    let out = redelivered(again, now).await.unwrap();
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    assert!(
        out.summary.contains("exists already (replay)"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 1, "the replay's PUT");
}

#[tokio::test]
async fn throttled_create_is_rescheduled_after_retry_after() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.throttle_next(op::PUT_POINT, 30);

    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue, Queue::Create);
    assert_eq!(
        sent[0].not_before,
        Some(T0 + Duration::from_secs(30)),
        "Retry-After wins"
    );
    let QueueMessage::Create(again) = decode(&sent[0]) else {
        panic!("a create")
    };
    assert_eq!(
        (again.vm.clone(), again.tick, again.retry, again.attempt),
        (vm.clone(), T0, 0, 1)
    );
    assert_ne!(
        sent[0].message_id,
        names::message_id("create", vm.as_str(), T0, 0),
        "new id: not dropped as a duplicate"
    );
    assert!(w.arm.point(&point(&vm, T0, 0)).is_none());

    // The rescheduled message goes through and names the same point.
    let out = create(&w, again, T0 + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Done);
    assert!(w.arm.point(&point(&vm, T0, 0)).is_some());
}

#[tokio::test]
async fn concurrent_create_conflict_is_rescheduled_with_backoff() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    // The previous tick's point is still being created: Azure answers 409.
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    w.bus.take();
    let t1 = T0 + hours(1);
    let out = create(&w, create_req(&vm, t1), t1).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let sent = w.bus.take();
    let nb = sent[0].not_before.unwrap();
    assert!(
        about(
            nb,
            t1 + Duration::from_secs(30),
            0.1,
            Duration::from_secs(30)
        ),
        "{nb}"
    );
}

#[tokio::test]
async fn collection_deleted_behind_the_cache_is_recreated_on_the_rescheduled_create() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    w.bus.take();
    // Someone deletes the collection; this process still believes it exists.
    vmrp::azure::Arm::delete_collection(&*w.arm, &collection(&vm))
        .await
        .unwrap();
    let t1 = T0 + hours(1);
    let out = create(&w, create_req(&vm, t1), t1).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let QueueMessage::Create(again) = decode(&w.bus.take()[0]) else {
        panic!("a create")
    };
    let out = create(&w, again, t1 + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.collection(&collection(&vm)).is_some(), "recreated");
    assert!(w.arm.point(&point(&vm, t1, 0)).is_some());
}

#[tokio::test]
async fn vanished_vm_is_skipped() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = vm_id("s1", "rg", "gone");
    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Skipped);
    assert!(out.summary.contains("vanished"));
    assert_eq!(
        w.arm.count(op::PUT_POINT) + w.arm.count(op::PUT_COLLECTION),
        0
    );
    assert!(w.bus.sent().is_empty(), "no retry");
}

#[tokio::test]
async fn out_of_scope_vm_is_refused() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s2", "rg", "vm1").build());
    let err = create(&w, create_req(&vm, T0), T0).await.unwrap_err();
    assert!(matches!(err, HandlerError::OutOfScope { .. }), "{err}");
    assert!(w.arm.calls().is_empty(), "refused before any ARM call");
}

#[tokio::test]
async fn permanent_error_is_reported_and_send_failure_fails_the_invocation() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.refuse_next(
        op::PUT_POINT,
        400,
        "VMRestorePointClientError",
        "maximum allowed snapshot limit reached",
    );
    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Reported);
    assert!(
        out.summary.contains("VMRestorePointClientError"),
        "{}",
        out.summary
    );
    assert!(w.bus.sent().is_empty());

    // A transient refusal whose reschedule cannot be sent: the invocation fails (redelivery).
    w.arm.throttle_next(op::PUT_POINT, 30);
    w.bus.fail_next(1);
    let err = create(&w, create_req(&vm, T0), T0).await.unwrap_err();
    assert!(matches!(err, HandlerError::Send(_)), "{err}");
}

#[tokio::test]
async fn exclusions_and_consistency_reach_the_put() {
    let mut rule = rule_s1(3, &[]);
    rule.exclude_disks.luns = vec![2];
    let w = world(testing::policy(vec![rule]));
    let shared = disk_id("s1", "rg", "shared");
    let data = disk_id("s1", "rg", "data");
    let scratch = disk_id("s1", "rg", "scratch");
    w.arm.add_disk(disk(&shared, "Premium_LRS", Some(2), &[]));
    w.arm.add_disk(disk(&data, "Premium_LRS", None, &[]));
    w.arm.add_disk(disk(&scratch, "Premium_LRS", None, &[]));
    let vm = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "vm1")
            .ephemeral_os()
            .data_disk(0, &shared, "Premium_LRS")
            .data_disk(1, &data, "Premium_LRS")
            .data_disk(2, &scratch, "Premium_LRS")
            .build(),
    );
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    let p = w.arm.point(&point(&vm, T0, 0)).unwrap();
    let props = p.properties.unwrap();
    let mut excluded: Vec<String> = props
        .exclude_disks
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    excluded.sort();
    let mut want = vec![
        disk_id("s1", "rg", "vm1-os").to_string(),
        shared.to_string(),
        scratch.to_string(),
    ];
    want.sort();
    assert_eq!(
        excluded, want,
        "ephemeral OS, shared disk and LUN 2 left out"
    );
    assert_eq!(props.consistency_mode.unwrap().as_str(), "CrashConsistent");
    assert_eq!(w.arm.count(op::GET_DISK), 3);

    // Disk details are cached: the next create reads no disk.
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    create(&w, create_req(&vm, T0 + hours(1)), T0 + hours(1))
        .await
        .unwrap();
    assert_eq!(w.arm.count(op::GET_DISK), 3);
}

#[tokio::test]
async fn policy_check_refuses_what_azure_would_and_drops_a_copy_to_the_home_region() {
    let w = world(testing::policy(vec![rule_s1(3, &["eastus", "westus2"])]));
    let ultra = disk_id("s1", "rg", "ultra");
    w.arm.add_disk(disk(&ultra, "UltraSSD_LRS", None, &[]));
    let vm = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "vm1")
            .data_disk(0, &ultra, "UltraSSD_LRS")
            .build(),
    );
    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Reported);
    assert!(out.summary.contains("UltraSSD_LRS"), "{}", out.summary);
    assert_eq!(w.arm.count(op::PUT_POINT), 0);

    let plain = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "vm2")
            .location("East US")
            .build(),
    );
    create(&w, create_req(&plain, T0), T0).await.unwrap();
    let p = only_poll(&w.bus.take());
    assert_eq!(
        p.copy_to,
        vec!["westus2".to_string()],
        "no copy into the VM's own region"
    );
}

// ------------------------------------------------------------------------------------------
// StartCrossRegionCopy
// ------------------------------------------------------------------------------------------

fn copy_req(source: &ResourceId, vm: Option<&ResourceId>, region: &str) -> CopyRequest {
    CopyRequest {
        source: source.clone(),
        target_region: region.into(),
        target_resource_group: None,
        vm: vm.cloned(),
        rule: None,
        retry: 0,
        attempt: 0,
    }
}

#[tokio::test]
async fn copy_creates_target_collection_and_waits_for_an_in_flight_copy() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    let src = collection(&vm);
    w.arm.add_collection(&src, "eastus", &vm);
    let (t1, t2) = (T0, T0 + hours(1));
    w.arm
        .add_point(&point(&vm, t1, 0), "Succeeded", t1, None, &[]);
    w.arm
        .add_point(&point(&vm, t2, 0), "Succeeded", t2, None, &[]);

    // First copy: the VM is found through the source collection; target collection created.
    let out = copy(
        &w,
        copy_req(&point(&vm, t1, 0), None, "westus2"),
        t1 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    let c = w.arm.collection(&target_c).expect("target collection");
    assert_eq!(c.location.as_deref(), Some("westus2"));
    assert_eq!(
        c.source_id(),
        Some(src.as_str()),
        "source.id = the source collection"
    );
    let copied = w
        .arm
        .point(&copy_point(&vm, "westus2", t1))
        .expect("copy point");
    assert_eq!(
        copied.source_restore_point(),
        Some(point(&vm, t1, 0).as_str())
    );
    let sent = w.bus.take();
    let p = only_poll(&sent);
    assert_eq!((p.role, p.attempt), (Role::Copy, 1));
    assert_eq!(p.source, Some(point(&vm, t1, 0)));
    assert_eq!(p.target_region.as_deref(), Some("westus2"));
    assert_eq!(p.deadline, t1 + hours(1) + time::Duration::days(14));
    assert!(about(
        sent[0].not_before.unwrap(),
        t1 + hours(1) + Duration::from_secs(120),
        0.1,
        Duration::from_secs(120)
    ));

    // The copy of t1 says Succeeded but is at 40 %: the copy of t2 waits instead of a 409.
    w.arm
        .set_point_state(&copy_point(&vm, "westus2", t1), "Succeeded");
    w.arm
        .set_replication(&copy_point(&vm, "westus2", t1), &[100, 40]);
    let now = t2 + hours(1);
    let out = copy(&w, copy_req(&point(&vm, t2, 0), Some(&vm), "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert_eq!(
        w.arm.count(op::PUT_POINT),
        1,
        "no PUT while the earlier copy replicates"
    );
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1);
    let QueueMessage::Copy(waiting) = decode(&sent[0]) else {
        panic!("a copy")
    };
    assert_eq!(waiting.attempt, 1);
    assert!(about(
        sent[0].not_before.unwrap(),
        now + Duration::from_secs(600),
        0.1,
        Duration::from_secs(600)
    ));

    // Replicated: now it goes.
    w.arm
        .set_replication(&copy_point(&vm, "westus2", t1), &[100, 100]);
    let out = copy(&w, waiting, now + time::Duration::minutes(10)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&copy_point(&vm, "westus2", t2)).is_some());
    assert_eq!(
        w.arm.count(op::PUT_COLLECTION),
        1,
        "target collection created once"
    );
}

/// Regression: a copy PUT whose first try went through (answer lost, the client's retry
/// meets the copy with a 409) is a replay: the copy is polled, not reported.
#[tokio::test]
async fn a_retried_copy_put_whose_first_try_went_through_is_polled() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    w.arm
        .add_point(&point(&vm, T0, 0), "Succeeded", T0, None, &[]);
    w.arm.lose_next_put_answer();

    let out = copy(
        &w,
        copy_req(&point(&vm, T0, 0), Some(&vm), "westus2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    assert!(out.summary.contains("replay"), "{}", out.summary);
    let target = copy_point(&vm, "westus2", T0);
    assert!(
        w.arm.point(&target).is_some(),
        "the first try's copy exists"
    );
    let p = only_poll(&w.bus.take());
    assert_eq!((p.role, p.attempt, &p.target), (Role::Copy, 1, &target));
    assert_eq!(p.source, Some(point(&vm, T0, 0)));

    // A 409 on a point that is NOT our copy (another source) is still reported.
    let other = VmBuilder::new("s1", "rg", "vm2").location("eastus").build();
    let vm2 = w.arm.add_vm(other);
    w.arm.add_collection(&collection(&vm2), "eastus", &vm2);
    w.arm
        .add_point(&point(&vm2, T0, 0), "Succeeded", T0, None, &[]);
    w.arm
        .refuse_next(op::PUT_POINT, 409, "OperationNotAllowed", "no");
    let out = copy(
        &w,
        copy_req(&point(&vm2, T0, 0), Some(&vm2), "westus2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(w.bus.take().is_empty());
}

#[tokio::test]
async fn copy_of_a_copy_is_refused_and_out_of_scope_copy_errors() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    w.arm.add_collection(&target_c, "westus2", &collection(&vm));
    w.arm
        .add_point(&point(&vm, T0, 0), "Succeeded", T0, None, &[]);
    w.arm.add_point(
        &copy_point(&vm, "westus2", T0),
        "Succeeded",
        T0,
        Some(&point(&vm, T0, 0)),
        &[100],
    );
    let out = copy(
        &w,
        copy_req(&copy_point(&vm, "westus2", T0), Some(&vm), "northeurope"),
        T0,
    )
    .await;
    assert_eq!(out.status, Status::Reported);
    assert!(out.summary.contains("itself a copy"), "{}", out.summary);
    // Without the VM in the message, the copy collection's source (a collection) gives it away.
    let out = copy(
        &w,
        copy_req(&copy_point(&vm, "westus2", T0), None, "northeurope"),
        T0,
    )
    .await;
    assert_eq!(out.status, Status::Reported);
    assert!(out.summary.contains("not a VM"), "{}", out.summary);
    assert_eq!(w.arm.count(op::PUT_POINT), 0);

    let other = vm_id("s9", "rg", "vm9");
    let src = names::collection_id(&other, None)
        .unwrap()
        .child("restorePoints", "rp-20261125T0300Z");
    let err = functions::start_cross_region_copy::handle(
        inv(
            copy_req(&src, Some(&other), "westus2"),
            functions::START_CROSS_REGION_COPY,
            T0,
        ),
        &w.deps,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::OutOfScope { .. }));
}

// ------------------------------------------------------------------------------------------
// PollRestorePoint
// ------------------------------------------------------------------------------------------

fn poll_req(vm: &ResourceId, target: &ResourceId, role: Role, tick: OffsetDateTime) -> PollRequest {
    PollRequest {
        target: target.clone(),
        role,
        attempt: 1,
        first_seen: tick,
        deadline: tick + hours(2),
        vm: vm.clone(),
        tick,
        rule: Some("prod".into()),
        retry: 0,
        copy_to: Vec::new(),
        source: None,
        target_region: None,
        prune_again: 0,
    }
}

#[tokio::test]
async fn poll_requeues_with_growing_delay() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let target = point(&vm, T0, 0);
    w.arm.add_point(&target, "Creating", T0, None, &[]);
    let mut req = poll_req(&vm, &target, Role::Local, T0);
    let mut now = T0 + Duration::from_secs(15);
    let mut delays = Vec::new();
    for attempt in 2..=5 {
        let out = poll(&w, req.clone(), now).await;
        assert_eq!(out.status, Status::Rescheduled);
        let sent = w.bus.take();
        let next = only_poll(&sent);
        assert_eq!(next.attempt, attempt);
        assert_eq!(
            sent[0].message_id,
            names::message_id("poll", target.as_str(), T0, attempt)
        );
        let nb = sent[0].not_before.unwrap();
        delays.push((nb - now).whole_milliseconds());
        now = nb;
        req = next;
    }
    assert!(delays.windows(2).all(|d| d[1] > d[0]), "{delays:?}");
    assert_eq!(w.arm.count(op::GET_POINT), 4, "one GET per poll");
}

#[tokio::test]
async fn settled_local_point_fans_out_copies_and_prunes_but_keeps_held_source() {
    let w = world(testing::policy(vec![rule_s1(1, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let src = collection(&vm);
    w.arm.add_collection(&src, "eastus", &vm);
    let ticks: Vec<OffsetDateTime> = (0..4).map(|h| T0 + hours(h)).collect();
    for t in &ticks[..3] {
        w.arm
            .add_point(&point(&vm, *t, 0), "Succeeded", *t, None, &[]);
    }
    let newest = point(&vm, ticks[3], 0);
    w.arm.add_point(&newest, "Succeeded", ticks[3], None, &[]);
    // The copy of ticks[1] still replicates in westus2 (Succeeded only means started).
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&target_c, "westus2", &src);
    w.arm.add_point(
        &copy_point(&vm, "westus2", ticks[0]),
        "Succeeded",
        ticks[0],
        Some(&point(&vm, ticks[0], 0)),
        &[100, 100],
    );
    w.arm.add_point(
        &copy_point(&vm, "westus2", ticks[1]),
        "Succeeded",
        ticks[1],
        Some(&point(&vm, ticks[1], 0)),
        &[100, 60],
    );
    // The copy of ticks[2] was attempted and failed: nothing holds its source any more (a
    // local point with no copy attempt at all is held, see the next test).
    w.arm.add_point(
        &copy_point(&vm, "westus2", ticks[2]),
        "Failed",
        ticks[2],
        Some(&point(&vm, ticks[2], 0)),
        &[],
    );

    let mut req = poll_req(&vm, &newest, Role::Local, ticks[3]);
    req.copy_to = vec!["westus2".into()];
    let out = poll(&w, req, ticks[3] + time::Duration::minutes(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);

    let sent = w.bus.take();
    assert_eq!(sent.len(), 1);
    let QueueMessage::Copy(c) = decode(&sent[0]) else {
        panic!("a copy")
    };
    assert_eq!(
        (c.source, c.target_region.as_str(), c.vm),
        (newest.clone(), "westus2", Some(vm.clone()))
    );

    let left = w.arm.point_ids(&src);
    assert!(left.contains(&point(&vm, ticks[0], 0)), "baseline kept");
    assert!(
        left.contains(&point(&vm, ticks[1], 0)),
        "held: its copy is at 60 %"
    );
    assert!(
        !left.contains(&point(&vm, ticks[2], 0)),
        "expired and not held: deleted"
    );
    assert!(left.contains(&newest), "newest kept");
    assert_eq!(w.arm.count(op::DELETE_POINT), 1);
}

#[tokio::test]
async fn settled_copy_prunes_the_target_region_with_its_own_retention() {
    let mut rule = rule_s1(5, &["westus2"]);
    rule.copies[0].retention = Some(Retention::newest(1));
    let w = world(testing::policy(vec![rule]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let src = collection(&vm);
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&src, "eastus", &vm);
    w.arm.add_collection(&target_c, "westus2", &src);
    for h in 0..3 {
        let t = T0 + hours(h);
        w.arm
            .add_point(&point(&vm, t, 0), "Succeeded", t, None, &[]);
        w.arm.add_point(
            &copy_point(&vm, "westus2", t),
            "Succeeded",
            t,
            Some(&point(&vm, t, 0)),
            &[100, 100],
        );
    }
    let target = copy_point(&vm, "westus2", T0 + hours(2));
    let mut req = poll_req(&vm, &target, Role::Copy, T0 + hours(2));
    req.source = Some(point(&vm, T0 + hours(2), 0));
    req.target_region = Some("westus2".into());
    let out = poll(&w, req, T0 + hours(3)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let left = w.arm.point_ids(&target_c);
    assert_eq!(
        left,
        vec![copy_point(&vm, "westus2", T0), target],
        "baseline + newest"
    );
    assert_eq!(
        w.arm.point_ids(&src).len(),
        3,
        "the source region keeps its own 5"
    );
}

#[tokio::test]
async fn deletes_are_capped_per_invocation() {
    let w = world(testing::policy(vec![rule_s1(1, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    for h in 0..10 {
        w.arm.add_point(
            &point(&vm, T0 + hours(h), 0),
            "Succeeded",
            T0 + hours(h),
            None,
            &[],
        );
    }
    let target = point(&vm, T0 + hours(9), 0);
    let out = poll(
        &w,
        poll_req(&vm, &target, Role::Local, T0 + hours(9)),
        T0 + hours(10),
    )
    .await;
    // 10 points: baseline + newest stay, 8 expired, 5 deleted now.
    assert_eq!(w.arm.count(op::DELETE_POINT), 5, "{}", out.summary);
    assert!(out.summary.contains("3 left for later"), "{}", out.summary);
}

#[tokio::test]
async fn failed_point_is_retried_under_a_new_name_then_reported() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let target = point(&vm, T0, 0);
    w.arm.add_point(&target, "Failed", T0, None, &[]);

    let out = poll(
        &w,
        poll_req(&vm, &target, Role::Local, T0),
        T0 + Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let sent = w.bus.take();
    let QueueMessage::Create(retry) = decode(&sent[0]) else {
        panic!("a create")
    };
    assert_eq!((retry.tick, retry.retry), (T0, 1));

    let out = create(&w, retry, T0 + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let r1 = point(&vm, T0, 1);
    assert!(r1.as_str().ends_with("rp-20261125T0300Z-r1"));
    assert!(w.arm.point(&r1).is_some());
    let p = only_poll(&w.bus.take());
    assert_eq!((p.target.clone(), p.retry), (r1.clone(), 1));

    // The last allowed retry fails too: reported, nothing sent.
    w.arm.add_point(&point(&vm, T0, 2), "Failed", T0, None, &[]);
    let mut last = poll_req(&vm, &point(&vm, T0, 2), Role::Local, T0);
    last.retry = 2;
    let out = poll(&w, last, T0 + time::Duration::minutes(5)).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(w.bus.sent().is_empty());
}

#[tokio::test]
async fn deadline_exceeded_and_vanished() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let target = point(&vm, T0, 0);
    w.arm.add_point(&target, "Creating", T0, None, &[]);
    let out = poll(&w, poll_req(&vm, &target, Role::Local, T0), T0 + hours(3)).await;
    assert_eq!(out.status, Status::Reported);
    assert!(out.summary.contains("deadline"), "{}", out.summary);
    let gone = point(&vm, T0 + hours(1), 0);
    let out = poll(&w, poll_req(&vm, &gone, Role::Local, T0), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Skipped);
    assert!(w.bus.sent().is_empty());
}

#[tokio::test]
async fn throttled_poll_get_requeues_after_retry_after() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let target = point(&vm, T0, 0);
    w.arm.throttle_next(op::GET_POINT, 45);
    let out = poll(&w, poll_req(&vm, &target, Role::Local, T0), T0).await;
    assert_eq!(out.status, Status::Rescheduled);
    let sent = w.bus.take();
    assert_eq!(sent[0].not_before, Some(T0 + Duration::from_secs(45)));
}

/// A successful poll whose answer carries `Retry-After` waits that long before the next poll
/// (the old handler passed no Retry-After and used its own backoff).
#[tokio::test]
async fn a_successful_poll_honours_retry_after() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let target = point(&vm, T0, 0);
    w.arm.add_point(&target, "Creating", T0, None, &[]);
    w.arm.retry_after_on_next_poll(900);
    let now = T0 + Duration::from_secs(30);
    let out = poll(&w, poll_req(&vm, &target, Role::Local, T0), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let sent = w.bus.take();
    assert_eq!(only_poll(&sent).attempt, 2);
    assert_eq!(sent[0].not_before, Some(now + Duration::from_secs(900)));
    // Without one, the backoff (minutes at most for the second poll) applies again.
    let out = poll(&w, poll_req(&vm, &target, Role::Local, T0), now).await;
    assert_eq!(out.status, Status::Rescheduled);
    let sent = w.bus.take();
    assert!(sent[0].not_before.unwrap() < now + Duration::from_secs(900));
}

// ------------------------------------------------------------------------------------------
// ScheduleRestorePoints
// ------------------------------------------------------------------------------------------

/// The timer alone: its `rp-plan` messages stay on the bus.
async fn timer_fan_out(w: &World, now: OffsetDateTime) -> Outcome {
    let event = TimerEvent {
        is_past_due: false,
        last: None,
        next: None,
    };
    functions::schedule_restore_points::handle(
        inv(event, functions::SCHEDULE_RESTORE_POINTS, now),
        &w.deps,
    )
    .await
    .expect("timer succeeds")
}

async fn plan_sub(w: &World, req: PlanRequest, now: OffsetDateTime) -> Outcome {
    functions::plan_restore_points::handle(inv(req, functions::PLAN_RESTORE_POINTS, now), &w.deps)
        .await
        .expect("planning succeeds")
}

/// A timer tick as the platform runs it: the timer's fan-out, then each `rp-plan` message it
/// sent, delivered at `now` (taken off the bus; their creates stay on it). The outcome merges
/// the planning invocations': the worst status, the summaries joined, every message sent.
async fn timer(w: &World, now: OffsetDateTime) -> Outcome {
    let fan_out = timer_fan_out(w, now).await;
    assert!(fan_out.sent.iter().all(|s| s.queue == Queue::Plan.name()));
    // Earlier messages (a previous tick's creates) stay on the bus, in order.
    let mut plans = Vec::new();
    for m in w.bus.take() {
        match decode(&m) {
            QueueMessage::Plan(req) => plans.push(req),
            _ => vmrp::azure::Scheduler::send(&*w.bus, m).await.unwrap(),
        }
    }
    let mut merged: Option<Outcome> = None;
    for req in plans {
        let out = plan_sub(w, req, now).await;
        merged = Some(match merged {
            None => out,
            Some(mut acc) => {
                if out.status == Status::Reported {
                    acc.status = Status::Reported;
                }
                acc.summary = format!("{}; {}", acc.summary, out.summary);
                acc.sent.extend(out.sent);
                acc
            }
        });
    }
    merged.expect("the timer sent a plan message")
}

#[tokio::test]
async fn timer_sends_one_create_per_target_vm_named_by_the_tick() {
    let mut tagged = testing::rule("tagged", 3);
    tagged.targets.resource_groups = vec!["/subscriptions/s1/resourceGroups/app".into()];
    tagged.targets.tags = [("backup".to_string(), "yes".to_string())].into();
    let mut explicit = testing::rule("explicit", 3);
    explicit.targets.vms = vec![vm_id("s2", "db", "sql1")];
    let w = world(testing::policy(vec![tagged, explicit]));
    let a = w.arm.add_vm(
        VmBuilder::new("s1", "app", "a")
            .tag("backup", "yes")
            .build(),
    );
    let b = w.arm.add_vm(
        VmBuilder::new("s1", "app", "b")
            .tag("Backup", "YES")
            .build(),
    );
    w.arm
        .add_vm(VmBuilder::new("s1", "app", "untagged").build());
    w.arm.add_vm(
        VmBuilder::new("s1", "other", "c")
            .tag("backup", "yes")
            .build(),
    );
    let sql = w.arm.add_vm(VmBuilder::new("s2", "db", "sql1").build());

    let out = timer(&w, T0 + time::Duration::minutes(7)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let sent = w.bus.take();
    let mut got: Vec<(ResourceId, OffsetDateTime, Option<String>, String)> = sent
        .iter()
        .map(|m| match decode(m) {
            QueueMessage::Create(c) => (c.vm, c.tick, c.rule, m.message_id.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let want: Vec<_> = [(a, "tagged"), (b, "tagged"), (sql, "explicit")]
        .into_iter()
        .map(|(vm, rule)| {
            let id = names::message_id("create", vm.as_str(), T0, 0);
            (vm, T0, Some(rule.to_string()), id)
        })
        .collect();
    assert_eq!(got, want, "tick 03:00 from a run at 03:07");
    assert_eq!(out.sent.len(), 3);

    // A repeated, late run of the same tick sends the same ids.
    timer(&w, T0 + time::Duration::minutes(40)).await;
    let again: Vec<String> = w.bus.take().into_iter().map(|m| m.message_id).collect();
    let mut first: Vec<String> = sent.into_iter().map(|m| m.message_id).collect();
    let mut again_sorted = again.clone();
    first.sort();
    again_sorted.sort();
    assert_eq!(first, again_sorted);
}

/// Azure Backup also protects VM `a` (its collection in `AzureBackupRG_eastus_1`) and VM `c`
/// is confidential. The timer never sends a create for `c` (it says why, once, instead of a
/// create refused at every tick) and, with `skipBackupProtected`, none for `a`; without it `a`
/// gets its create. Backup's collection is never written to.
#[tokio::test]
async fn timer_skips_unsupported_and_optionally_backup_protected_vms() {
    for skip in [false, true] {
        let mut rule = rule_s1(3, &[]);
        rule.skip_backup_protected = skip;
        let w = world(testing::policy(vec![rule]));
        let a = w.arm.add_vm(VmBuilder::new("s1", "rg", "a").build());
        let b = w.arm.add_vm(VmBuilder::new("s1", "rg", "b").build());
        let mut cvm = VmBuilder::new("s1", "rg", "c").build();
        cvm.properties.as_mut().unwrap().security_profile =
            Some(serde_json::json!({"securityType": "ConfidentialVM"}));
        w.arm.add_vm(cvm);
        let backup = ResourceId::parse(
            "/subscriptions/s1/resourceGroups/AzureBackupRG_eastus_1/providers/Microsoft.Compute/restorePointCollections/AzureBackup_a_12345678901",
        )
        .unwrap();
        w.arm.add_collection(&backup, "eastus", &a);
        let out = timer(&w, T0 + time::Duration::minutes(7)).await;
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        let mut got: Vec<ResourceId> = w
            .bus
            .take()
            .iter()
            .map(|m| match decode(m) {
                QueueMessage::Create(c) => c.vm,
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort();
        let want = if skip {
            vec![b.clone()]
        } else {
            vec![a.clone(), b.clone()]
        };
        assert_eq!(got, want, "skipBackupProtected = {skip}");
        assert!(
            out.summary.contains("1 not supported by restore points"),
            "{}",
            out.summary
        );
        assert_eq!(
            out.summary
                .contains("1 skipped as Azure Backup protects them"),
            skip,
            "{}",
            out.summary
        );
    }
}

/// Three subscriptions with a VM without copies and one copying to two regions each, under
/// two rules; a fourth subscription is named by an explicit VM only.
fn three_subscriptions() -> World {
    let mut plain = testing::rule("plain", 3);
    plain.targets.subscriptions = vec!["s1".into(), "S2".into(), "s3".into()];
    plain.targets.tags = [("copy".to_string(), "no".to_string())].into();
    let mut copied = rule_s1(3, &["westeurope", "northeurope"]);
    copied.name = "copied".into();
    copied.targets.subscriptions = vec!["s1".into(), "s2".into(), "s3".into()];
    copied.targets.vms = vec![vm_id("s4", "rg", "lone")];
    let w = world(testing::policy(vec![plain, copied]));
    for sub in ["s1", "s2", "s3"] {
        for i in 0..3 {
            w.arm.add_vm(
                VmBuilder::new(sub, "rg", &format!("p{i}"))
                    .tag("copy", "no")
                    .build(),
            );
            w.arm
                .add_vm(VmBuilder::new(sub, "rg", &format!("c{i}")).build());
        }
    }
    w.arm.add_vm(VmBuilder::new("s4", "rg", "lone").build());
    w
}

/// The timer hands each subscription its own planning invocation: one `rp-plan` message per
/// subscription (id from subscription and tick), no ARM call of its own; the planning
/// invocations together send exactly the creates one whole-estate plan sends (same ids, same
/// bodies), each listing only its own subscription.
#[tokio::test]
async fn a_timer_tick_fans_out_one_plan_message_per_subscription_with_the_same_creates() {
    let w = three_subscriptions();
    let now = T0 + Duration::from_secs(5);
    let whole = functions::schedule_restore_points::plan_for(&w.deps, now)
        .await
        .unwrap()
        .unwrap();
    let mut want: Vec<(String, String)> = whole
        .plan
        .messages(whole.start)
        .into_iter()
        .map(|m| (m.message_id, m.body))
        .collect();
    want.sort();
    assert_eq!(
        want.len(),
        19,
        "6 VMs in each of 3 subscriptions, and the explicit one"
    );
    let calls_before = w.arm.calls().len();

    let out = timer_fan_out(&w, now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.calls().len(), calls_before, "the timer reads nothing");
    let plans = w.bus.take();
    let subs: Vec<String> = plans
        .iter()
        .map(|m| {
            assert_eq!(m.queue, Queue::Plan);
            assert_eq!(m.not_before, None);
            match decode(m) {
                QueueMessage::Plan(p) => {
                    assert_eq!(p.tick, T0);
                    assert_eq!(
                        m.message_id,
                        names::message_id("plan", &p.subscription, T0, 0)
                    );
                    p.subscription
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(subs, ["s1", "s2", "s3", "s4"]);

    let mut got = Vec::new();
    for m in plans {
        let QueueMessage::Plan(req) = decode(&m) else {
            unreachable!()
        };
        let sub = req.subscription.clone();
        let lists_before = w.arm.count(op::LIST_VMS);
        let out = plan_sub(&w, req, now).await;
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        assert!(
            out.summary.contains(&format!("subscription {sub}")),
            "{}",
            out.summary
        );
        // Only this subscription's scope is listed (s4 has an explicit VM: a GET, no listing).
        let listed = w.arm.count(op::LIST_VMS) - lists_before;
        assert_eq!(listed, usize::from(sub != "s4"), "{sub}: {}", out.summary);
        for m in w.bus.take() {
            match decode(&m) {
                QueueMessage::Create(c) => {
                    assert!(c.vm.subscription().eq_ignore_ascii_case(&sub));
                    got.push((m.message_id, m.body));
                }
                other => panic!("a plan sends creates only: {other:?}"),
            }
        }
    }
    got.sort();
    assert_eq!(
        got, want,
        "the fan-out sends the whole-estate plan's creates"
    );
}

/// At-least-once: a replayed timer run of the same tick, and a plan message delivered twice,
/// enqueue nothing new within the duplicate detection window.
#[tokio::test]
async fn replaying_the_timer_or_a_plan_message_enqueues_no_duplicates() {
    let w = three_subscriptions();
    let now = T0 + Duration::from_secs(5);
    w.bus.set_now(now);
    timer_fan_out(&w, now).await;
    let later = T0 + time::Duration::minutes(20);
    w.bus.set_now(later);
    // The same tick's timer run again (past due, or a second instance).
    timer_fan_out(&w, later).await;
    let plans: Vec<PlanRequest> = w
        .bus
        .delivered()
        .iter()
        .filter_map(|m| match decode(m) {
            QueueMessage::Plan(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        plans.len(),
        4,
        "one plan message per subscription, kept once"
    );
    // Each delivered twice (a lock lost mid-invocation).
    for p in plans.iter().chain(plans.iter()) {
        plan_sub(&w, p.clone(), later).await;
    }
    let delivered = w.bus.delivered();
    let creates = delivered
        .iter()
        .filter(|m| matches!(decode(m), QueueMessage::Create(_)))
        .count();
    assert_eq!(creates, 19, "one create per due VM");
    let mut ids: Vec<&str> = delivered.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "no id enqueued twice");
    assert_eq!(
        w.bus.sent().len(),
        2 * 4 + 2 * 19,
        "what was sent, replays included"
    );
}

/// A plan message vmrp did not send (or one from another deployment's schedule or policy) is
/// refused with the reason, as a permanent error: it is parked, not retried.
#[tokio::test]
async fn a_plan_message_for_another_tick_or_subscription_is_refused() {
    let w = three_subscriptions();
    let now = T0 + Duration::from_secs(5);
    let refused = |req: PlanRequest| {
        let w = &w;
        async move {
            functions::plan_restore_points::handle(
                inv(req, functions::PLAN_RESTORE_POINTS, now),
                &w.deps,
            )
            .await
            .expect_err("refused")
        }
    };
    for (req, why) in [
        (
            PlanRequest {
                subscription: "s1".into(),
                tick: T0 + Duration::from_secs(60),
                attempt: 0,
            },
            "not an occurrence",
        ),
        (
            PlanRequest {
                subscription: "s1".into(),
                tick: T0 + hours(2),
                attempt: 0,
            },
            "in the future",
        ),
        (
            PlanRequest {
                subscription: "s9".into(),
                tick: T0,
                attempt: 0,
            },
            "no rule of the policy names it",
        ),
    ] {
        let e = refused(req).await;
        assert!(e.to_string().contains(why), "{e}");
        assert_eq!(e.class(), vmrp::azure::ErrorClass::Permanent);
    }
    assert!(w.bus.sent().is_empty());
    assert_eq!(w.arm.count(op::LIST_VMS), 0);
    // Upper-case subscription ids are the same subscription.
    let out = plan_sub(
        &w,
        PlanRequest {
            subscription: "S2".into(),
            tick: T0,
            attempt: 0,
        },
        now,
    )
    .await;
    assert_eq!(out.sent.len(), 6, "{}", out.summary);
}

#[tokio::test]
async fn a_late_timer_run_paces_from_now_with_the_same_ids() {
    let mut w = world(testing::policy(vec![rule_s1(3, &[])]));
    w.deps.tuning.pacing = vmrp::plan::Pacing {
        burst: 1,
        refill_per_sec: 10.0,
        writes_per_create: 1,
        reserve: 0.0,
        reads_per_create: 0,
        ..vmrp::plan::Pacing::default()
    };
    w.arm.add_vm(VmBuilder::new("s1", "rg", "a").build());
    w.arm.add_vm(VmBuilder::new("s1", "rg", "b").build());
    let on_time = timer(&w, T0).await;
    let late_now = T0 + time::Duration::minutes(25);
    let late = timer(&w, late_now).await;
    let ids = |o: &Outcome| {
        o.sent
            .iter()
            .map(|s| s.message_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&on_time), ids(&late), "same tick, same messages");
    // Paced in the tick's rotated order: compare the schedules, not which VM goes first.
    let nb = |o: &Outcome| {
        let mut v = o.sent.iter().map(|s| s.not_before).collect::<Vec<_>>();
        v.sort();
        v
    };
    assert_eq!(
        nb(&on_time),
        vec![None, Some(T0 + Duration::from_millis(100))]
    );
    assert_eq!(
        nb(&late),
        vec![None, Some(late_now + Duration::from_millis(100))],
        "paced from the late start"
    );
}

/// The tick fits its window, or says so first: with a 4-hourly timer and application-
/// consistent points, a create that starts from tick + 1 h is reported superseded by the create
/// handler. The timer sends only the creates that start before then (at the budget it counts
/// on), names the rest in its summary, and leaves out other VMs at the next tick.
#[tokio::test]
async fn timer_sends_only_what_fits_before_the_supersede_cut_off() {
    let tick = datetime!(2026-11-25 04:00:00 UTC);
    let mut r = rule_s1(3, &[]);
    r.consistency = vmrp::azure::models::ConsistencyMode::ApplicationConsistent;
    let arm = Arc::new(FakeArm::new());
    arm.set_now(tick);
    let bus = Arc::new(FakeScheduler::new());
    let mut deps = Deps::new(
        arm.clone(),
        bus.clone(),
        Arc::new(testing::policy(vec![r])),
        "0 0 */4 * * *",
    );
    // One create per 200 s: creates at +0, +200, ... +3400 s fit before +3600 s (18 of 25).
    deps.tuning.pacing = vmrp::plan::Pacing {
        burst: 1,
        refill_per_sec: 0.005,
        writes_per_create: 1,
        reads_per_create: 0,
        reads_per_copy: 0,
        reserve: 0.0,
        window_margin: Duration::ZERO,
        ..vmrp::plan::Pacing::default()
    };
    let w = World { arm, bus, deps };
    let vms: Vec<ResourceId> = (0..25)
        .map(|i| {
            w.arm
                .add_vm(VmBuilder::new("s1", "rg", &format!("vm{i:02}")).build())
        })
        .collect();
    let sent_creates = |w: &World| -> Vec<CreateRequest> {
        w.bus
            .take()
            .iter()
            .filter_map(|m| match decode(m) {
                QueueMessage::Create(c) => Some(c),
                _ => None, // the creates' polls
            })
            .collect()
    };

    let out = timer(&w, tick).await;
    assert!(out.summary.contains("7 do not fit"), "{}", out.summary);
    let first: Vec<ResourceId> = sent_creates(&w).into_iter().map(|c| c.vm).collect();
    assert_eq!(first.len(), 18, "{}", out.summary);
    let latest = out.sent.iter().filter_map(|s| s.not_before).max().unwrap();
    assert_eq!(latest, tick + Duration::from_secs(3400));
    // Every create sent, run when it is due, is made (none is superseded).
    for s in &out.sent {
        let vm = first
            .iter()
            .find(|vm| names::message_id("create", vm.as_str(), tick, 0) == s.message_id)
            .unwrap();
        let at = s.not_before.unwrap_or(tick);
        let o = create(&w, create_req(vm, tick), at).await.unwrap();
        assert!(!o.summary.contains("superseded"), "{}", o.summary);
    }
    // What the timer left out would have been superseded: the 19th create would go at +3600 s.
    let left_out: Vec<&ResourceId> = vms.iter().filter(|vm| !first.contains(vm)).collect();
    assert_eq!(left_out.len(), 7);
    let o = create(
        &w,
        create_req(left_out[0], tick),
        tick + Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(o.summary.contains("superseded by it"), "{}", o.summary);

    // The next tick rotates its order: other VMs are left out.
    let next = tick + hours(4);
    w.arm.set_now(next);
    let out = timer(&w, next).await;
    let second: Vec<ResourceId> = sent_creates(&w).into_iter().map(|c| c.vm).collect();
    assert_eq!(second.len(), 18, "{}", out.summary);
    let left_again: Vec<&ResourceId> = vms.iter().filter(|vm| !second.contains(vm)).collect();
    assert_ne!(left_out, left_again, "the same VMs lose every tick");
}

#[tokio::test]
async fn timer_lists_what_it_can_when_one_scope_fails() {
    let mut r = testing::rule("groups", 3);
    r.targets.resource_groups = vec![
        "/subscriptions/s1/resourceGroups/a".into(),
        "/subscriptions/s1/resourceGroups/b".into(),
    ];
    let w = world(testing::policy(vec![r]));
    w.arm.add_vm(VmBuilder::new("s1", "a", "vm-a").build());
    let b = w.arm.add_vm(VmBuilder::new("s1", "b", "vm-b").build());
    w.arm
        .refuse_next(op::LIST_VMS, 403, "AuthorizationFailed", "no read on rg a");
    let out = timer(&w, T0).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(out.summary.contains("listing failed"), "{}", out.summary);
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1);
    assert!(matches!(decode(&sent[0]), QueueMessage::Create(c) if c.vm == b));
}

/// An ARM outage during the tick (503 on the listing) does not cost the tick: the planning
/// invocation sends itself again a minute later under its own id, and that re-plan sends the
/// creates. After `MAX_REPLANS`, or on a permanent refusal, it reports instead.
#[tokio::test]
async fn a_transient_listing_failure_plans_the_subscription_again_within_the_tick() {
    use functions::schedule_restore_points::{replan_delay, MAX_REPLANS};
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let a = w.arm.add_vm(VmBuilder::new("s1", "rg", "a").build());
    let b = w.arm.add_vm(VmBuilder::new("s1", "rg", "b").build());
    let now = T0 + Duration::from_secs(5);
    w.arm
        .refuse_next(op::LIST_VMS, 503, "ServiceUnavailable", "ARM is down");
    let out = timer(&w, now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(
        out.summary.contains("planned again in 1 min"),
        "{}",
        out.summary
    );
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1, "only the re-plan: the listing showed no VM");
    let QueueMessage::Plan(again) = decode(&sent[0]) else {
        panic!("{:?}", sent[0])
    };
    assert_eq!(again.attempt, 1);
    assert_eq!(sent[0].message_id, names::message_id("plan", "s1", T0, 1));
    let at = sent[0].not_before.expect("scheduled");
    assert!(at >= now + replan_delay(1), "{at}");

    let out = plan_sub(&w, again, at).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let mut got: Vec<ResourceId> = w
        .bus
        .take()
        .iter()
        .filter_map(|m| match decode(m) {
            QueueMessage::Create(c) => Some(c.vm),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(got, [a, b], "the re-plan reaches every VM");

    // The last re-plan reports instead of planning again; so does a permanent refusal.
    for (attempt, status, code) in [
        (MAX_REPLANS, 503, "ServiceUnavailable"),
        (0, 403, "AuthorizationFailed"),
    ] {
        w.arm.refuse_next(op::LIST_VMS, status, code, "no");
        let req = PlanRequest {
            subscription: "s1".into(),
            tick: T0,
            attempt,
        };
        let out = plan_sub(&w, req, at).await;
        assert_eq!(out.status, Status::Reported, "{code}: {}", out.summary);
        assert!(
            w.bus.take().iter().all(|m| m.queue != Queue::Plan),
            "{code}: no re-plan"
        );
    }
}

#[tokio::test]
async fn timer_deletes_expired_orphan_collections_only() {
    let mut policy = testing::policy(vec![rule_s1(3, &[])]);
    policy.orphans.expire_after_days = Some(7);
    let w = world(policy);
    let old_vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "old").build());
    let new_vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "new").build());
    for (vm, days) in [(&old_vm, 8), (&new_vm, 2)] {
        let id = collection(vm);
        w.arm.add_collection(&id, "eastus", vm);
        let mut tags = Tags::new();
        tags.insert(TAG_VM.into(), vm.to_string());
        tags.insert(
            TAG_ORPHANED_AT.into(),
            (T0 - time::Duration::days(days))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        );
        let body = vmrp::azure::models::RestorePointCollection::for_source("eastus", vm, tags);
        vmrp::azure::Arm::put_collection(&*w.arm, &id, &body)
            .await
            .unwrap();
    }
    w.arm.remove_vm(&old_vm);
    w.arm.remove_vm(&new_vm);
    // A live VM in the same subscription: the timer lists its collections for the creates anyway.
    w.arm.add_vm(VmBuilder::new("s1", "rg", "live").build());
    let out = timer(&w, T0).await;
    assert!(out.summary.contains("1 expired orphan"), "{}", out.summary);
    assert!(w.arm.collection(&collection(&old_vm)).is_none());
    assert!(w.arm.collection(&collection(&new_vm)).is_some());
    assert_eq!(
        w.arm.count(op::LIST_COLLECTIONS),
        1,
        "the cleanup reuses the timer's listing"
    );
}

/// Sets `tags` on an existing fixture collection (as a PUT would).
async fn retag(w: &World, id: &ResourceId, tags: &[(&str, String)]) {
    let c = w.arm.collection(id).expect("fixture collection");
    let mut all = c.tags.clone().unwrap_or_default();
    for (k, v) in tags {
        all.insert(k.to_string(), v.clone());
    }
    let source = ResourceId::parse(c.source_id().unwrap()).unwrap();
    let body = vmrp::azure::models::RestorePointCollection::for_source(
        c.location.as_deref().unwrap(),
        &source,
        all,
    );
    vmrp::azure::Arm::put_collection(&*w.arm, id, &body)
        .await
        .unwrap();
}

fn stamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Regression: the orphan mark alone never deletes. A stale or forged mark on a live VM's
/// collections (local and copy) is cleared and nothing is deleted; a local collection whose tag
/// names a gone VM but whose `source.id` is a live VM is kept too; a future-dated mark is
/// re-stamped with now; only the collection of a VM that answers 404 goes.
#[tokio::test]
async fn expired_orphan_marks_delete_only_when_the_vm_is_gone() {
    let mut policy = testing::policy(vec![rule_s1(3, &["westus2"])]);
    policy.orphans.expire_after_days = Some(7);
    let w = world(policy);
    let live = w.arm.add_vm(VmBuilder::new("s1", "rg", "live").build());
    let gone = w.arm.add_vm(VmBuilder::new("s1", "rg", "gone").build());
    let other = w.arm.add_vm(VmBuilder::new("s1", "rg", "other").build());
    let old_mark = stamp(T0 - time::Duration::days(30));

    // The live VM's local and copy collections, both marked a month ago.
    let live_local = collection(&live);
    let live_copy = names::copy_collection_id(&live, "westus2", None).unwrap();
    w.arm.add_collection(&live_local, "eastus", &live);
    w.arm.add_collection(&live_copy, "westus2", &live_local);
    w.arm.add_point(
        &point(&live, T0 - hours(4), 0),
        "Succeeded",
        T0 - hours(4),
        None,
        &[],
    );
    for id in [&live_local, &live_copy] {
        retag(
            &w,
            id,
            &[
                (TAG_VM, live.to_string()),
                (TAG_ORPHANED_AT, old_mark.clone()),
            ],
        )
        .await;
    }
    // Forged: the tag names a gone VM, but the collection's source is the live VM `other`.
    let forged = names::collection_id(&other, Some("elsewhere")).unwrap();
    w.arm.add_collection(&forged, "eastus", &other);
    let ghost = vm_id("s1", "rg", "ghost");
    retag(
        &w,
        &forged,
        &[
            (TAG_VM, ghost.to_string()),
            (TAG_ORPHANED_AT, old_mark.clone()),
        ],
    )
    .await;
    // Truly gone, marked long ago: deleted. Gone, marked "in 2099": re-stamped, kept.
    let gone_local = collection(&gone);
    w.arm.add_collection(&gone_local, "eastus", &gone);
    retag(
        &w,
        &gone_local,
        &[
            (TAG_VM, gone.to_string()),
            (TAG_ORPHANED_AT, old_mark.clone()),
        ],
    )
    .await;
    let future = vm_id("s1", "rg", "future");
    w.arm.add_vm(VmBuilder::new("s1", "rg", "future").build());
    let future_local = collection(&future);
    w.arm.add_collection(&future_local, "eastus", &future);
    retag(
        &w,
        &future_local,
        &[
            (TAG_VM, future.to_string()),
            (TAG_ORPHANED_AT, "2099-01-01T00:00:00Z".into()),
        ],
    )
    .await;
    w.arm.remove_vm(&gone);
    w.arm.remove_vm(&future);

    let out = timer(&w, T0).await;
    assert_eq!(
        w.arm.count(op::DELETE_COLLECTION),
        1,
        "only the gone VM's collection: {}",
        out.summary
    );
    assert!(w.arm.collection(&gone_local).is_none());
    for id in [&live_local, &live_copy, &forged] {
        let c = w.arm.collection(id).expect("kept");
        let tags = c.tags.unwrap_or_default();
        assert!(!tags.contains_key(TAG_ORPHANED_AT), "{id}: mark cleared");
    }
    assert_eq!(
        w.arm.point_ids(&live_local).len(),
        1,
        "the live VM's history is intact"
    );
    assert!(
        out.summary.contains("3 orphan marks cleared"),
        "{}",
        out.summary
    );
    let tags = w.arm.collection(&future_local).unwrap().tags.unwrap();
    assert_eq!(
        tags.get(TAG_ORPHANED_AT).map(String::as_str),
        Some("2026-11-25T03:00:00Z"),
        "a future mark restarts from now"
    );
    // A later run past expiry deletes it once the VM is confirmed gone.
    let out = timer(&w, T0 + time::Duration::days(8)).await;
    assert!(w.arm.collection(&future_local).is_none(), "{}", out.summary);
}

/// Regression: the deploy assigns vmrp's role at resource groups. Orphan marking and the
/// timer's cleanup list collections per resource group of the policy's scopes (and the copy
/// group the policy names), never the whole subscription (403 `AuthorizationFailed`).
#[tokio::test]
async fn orphan_marking_and_cleanup_work_under_a_resource_group_scoped_role() {
    let mut rule = testing::rule("prod", 3);
    rule.targets.resource_groups = vec!["/subscriptions/s1/resourceGroups/rg".into()];
    rule.copies = vec![CopyTarget {
        region: "westus2".into(),
        resource_group: Some("rp-copies".into()),
        retention: None,
        encryption_sets: Default::default(),
    }];
    let mut policy = testing::policy(vec![rule]);
    policy.orphans.expire_after_days = Some(7);
    let w = world(policy);
    w.arm.set_role_scopes(&[
        "/subscriptions/s1/resourceGroups/rg",
        "/subscriptions/s1/resourceGroups/rp-copies",
    ]);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let local = collection(&vm);
    let copies = names::copy_collection_id(&vm, "westus2", Some("rp-copies")).unwrap();
    w.arm.add_collection(&local, "eastus", &vm);
    w.arm.add_collection(&copies, "westus2", &local);
    for id in [&local, &copies] {
        retag(&w, id, &[(TAG_VM, vm.to_string())]).await;
    }
    w.arm.remove_vm(&vm);

    let out = on_event(&w, event("ResourceDeleteSuccess", &vm, "d1"), T0).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(
        out.summary.contains("2 collections marked"),
        "{}",
        out.summary
    );
    for id in [&local, &copies] {
        let tags = w.arm.collection(id).unwrap().tags.unwrap();
        assert!(tags.contains_key(TAG_ORPHANED_AT), "{id} marked");
    }

    let out = timer(&w, T0 + time::Duration::days(8)).await;
    assert!(
        out.summary.contains("2 expired orphan collections deleted"),
        "{}",
        out.summary
    );
    assert!(w.arm.collection(&local).is_none() && w.arm.collection(&copies).is_none());
    assert!(
        w.arm
            .calls()
            .iter()
            .filter(|c| c.op == op::LIST_COLLECTIONS)
            .all(|c| c.target.to_ascii_lowercase().contains("/resourcegroups/")),
        "collections are listed per resource group: {:?}",
        w.arm.calls()
    );
}

// ------------------------------------------------------------------------------------------
// OnVmChanged
// ------------------------------------------------------------------------------------------

fn event(kind: &str, subject: &ResourceId, id: &str) -> ResourceEvent {
    ResourceEvent {
        schema: EventSchema::EventGrid,
        id: id.into(),
        event_type: format!("Microsoft.Resources.{kind}"),
        subject: subject.to_string(),
        event_time: Some(T0),
        operation_name: None,
        data: serde_json::Value::Null,
    }
}

async fn on_event(w: &World, e: ResourceEvent, now: OffsetDateTime) -> Outcome {
    functions::on_vm_changed::handle(inv(e, functions::ON_VM_CHANGED, now), &w.deps)
        .await
        .expect("event handled")
}

#[tokio::test]
async fn events_for_other_resource_types_are_ignored() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    for subject in [
        collection(&vm),
        point(&vm, T0, 0),
        vm.child("extensions", "AzureMonitor"),
        disk_id("s1", "rg", "d1"),
    ] {
        let out = on_event(&w, event("ResourceWriteSuccess", &subject, "e1"), T0).await;
        assert_eq!(out.status, Status::Skipped, "{subject}");
    }
    assert!(w.arm.calls().is_empty());
    assert!(w.bus.sent().is_empty());
}

#[tokio::test]
async fn a_burst_of_vm_writes_onboards_once() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let now = T0 + time::Duration::minutes(20);
    for i in 0..3 {
        let out = on_event(
            &w,
            event("ResourceWriteSuccess", &vm, &format!("e{i}")),
            now,
        )
        .await;
        assert_ne!(out.status, Status::Reported, "{}", out.summary);
    }
    assert_eq!(
        w.arm.count(op::PUT_COLLECTION),
        1,
        "collection created once"
    );
    assert!(w.arm.collection(&collection(&vm)).is_some());
    let delivered = w.bus.delivered();
    assert_eq!(delivered.len(), 1, "one first-point create");
    let QueueMessage::Create(c) = decode(&delivered[0]) else {
        panic!("a create")
    };
    assert_eq!(c.tick, T0, "the timer's latest tick");
    assert_eq!(
        delivered[0].message_id,
        names::message_id("create", vm.as_str(), T0, 0),
        "same id as the timer's"
    );

    // A second instance (empty cache) handling another write of the burst before the first
    // point exists sends the same id: Service Bus keeps one.
    let other = Deps::new(w.arm.clone(), w.bus.clone(), w.deps.policy.clone(), HOURLY);
    let out = functions::on_vm_changed::handle(
        inv(
            event("ResourceWriteSuccess", &vm, "e9"),
            functions::ON_VM_CHANGED,
            now,
        ),
        &other,
    )
    .await
    .unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.bus.sent().len(), 2);
    assert_eq!(w.bus.delivered().len(), 1);
}

#[tokio::test]
async fn vm_delete_marks_its_collections_orphaned_and_recreation_clears_it() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    w.arm.remove_vm(&vm);
    let out = on_event(&w, event("ResourceDeleteSuccess", &vm, "d1"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let tags = w.arm.collection(&collection(&vm)).unwrap().tags.unwrap();
    assert_eq!(
        tags.get(TAG_ORPHANED_AT).map(String::as_str),
        Some("2026-11-25T03:00:00Z")
    );
    assert!(out.summary.contains("kept"), "{}", out.summary);

    // The VM comes back under the same id: the next create clears the mark.
    w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    create(&w, create_req(&vm, T0 + hours(2)), T0 + hours(2))
        .await
        .unwrap();
    let tags = w.arm.collection(&collection(&vm)).unwrap().tags.unwrap();
    assert!(!tags.contains_key(TAG_ORPHANED_AT));
}

// ------------------------------------------------------------------------------------------
// The whole chain
// ------------------------------------------------------------------------------------------

/// Delivers every queued message to its handler (in send order) until the queues are empty,
/// advancing `now` to each message's `not_before`, and lets the fake ARM progress between steps.
#[tokio::test]
async fn timer_to_settled_copy_end_to_end() {
    let w = world(testing::policy(vec![rule_s1(2, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let log = CapturedLog::install();
    let mut now = T0 + Duration::from_secs(5);
    timer(&w, now).await;
    let mut queue: Vec<OutgoingMessage> = w.bus.take();
    let mut statuses = Vec::new();
    let mut steps = 0;
    while let Some(m) = (!queue.is_empty()).then(|| queue.remove(0)) {
        steps += 1;
        assert!(steps < 50, "the chain terminates");
        now = now.max(m.not_before.unwrap_or(now));
        let out = match decode(&m) {
            QueueMessage::Create(c) => create(&w, c, now).await.unwrap(),
            QueueMessage::Copy(c) => copy(&w, c, now).await,
            QueueMessage::Poll(p) => {
                // ARM makes progress: the local point finishes after the first look; the copy
                // replicates 50 % per look.
                if p.attempt >= 2 {
                    w.arm.set_point_state(&p.target, "Succeeded");
                    if p.role == Role::Copy {
                        let pct = (50 * (p.attempt as i32 - 1)).min(100);
                        w.arm.set_replication(&p.target, &[pct, pct]);
                    }
                }
                poll(&w, p, now).await
            }
            QueueMessage::Plan(p) => plan_sub(&w, p, now).await,
        };
        statuses.push((m.queue, out.status));
        queue.extend(w.bus.take());
    }
    use Status::*;
    assert_eq!(
        statuses,
        vec![
            (Queue::Create, Done),
            (Queue::Poll, Rescheduled), // local: Creating
            (Queue::Poll, Done),        // local settled → copy sent
            (Queue::Copy, Done),
            (Queue::Poll, Rescheduled), // copy: Creating, 0 %
            (Queue::Poll, Rescheduled), // copy: Succeeded, 50 %
            (Queue::Poll, Done),        // copy: 100 %
        ]
    );
    assert!(w.arm.point(&copy_point(&vm, "westus2", T0)).is_some());

    // One report event per settled point, with where, what and how long.
    let reports = log.reports();
    let summary: Vec<(String, String, String, String)> = reports
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("outcome"), s("role"), s("region"), s("point"))
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "settled".into(),
                "local".into(),
                "eastus".into(),
                point(&vm, T0, 0).to_string()
            ),
            (
                "settled".into(),
                "copy".into(),
                "westus2".into(),
                copy_point(&vm, "westus2", T0).to_string()
            ),
        ]
    );
    assert!(reports
        .iter()
        .all(|f| f["vm"] == vm.as_str() && f["duration_s"].as_u64().is_some()));
}

/// Runs `ticks` hourly timer ticks from T0, each delivered to the end (as
/// `timer_to_settled_copy_end_to_end`: ARM settles a point after one look and replicates a copy
/// 50 % per look); no invocation may end `Reported`.
async fn run_ticks(w: &World, ticks: i64) {
    for k in 0..ticks {
        let mut now = T0 + hours(k) + Duration::from_secs(5);
        timer(w, now).await;
        let mut queue: Vec<OutgoingMessage> = w.bus.take();
        let mut steps = 0;
        while let Some(m) = (!queue.is_empty()).then(|| queue.remove(0)) {
            steps += 1;
            assert!(steps < 100, "tick {k}: the chain terminates");
            now = now.max(m.not_before.unwrap_or(now));
            w.arm.set_now(now);
            let out = match decode(&m) {
                QueueMessage::Create(c) => create(w, c, now).await.unwrap(),
                QueueMessage::Copy(c) => copy(w, c, now).await,
                QueueMessage::Poll(p) => {
                    if p.attempt >= 2 {
                        w.arm.set_point_state(&p.target, "Succeeded");
                        if p.role == Role::Copy {
                            let pct = (50 * (p.attempt as i32 - 1)).min(100);
                            w.arm.set_replication(&p.target, &[pct, pct]);
                        }
                    }
                    poll(w, p, now).await
                }
                QueueMessage::Plan(p) => plan_sub(w, p, now).await,
            };
            assert_ne!(out.status, Status::Reported, "tick {k}: {}", out.summary);
            queue.extend(w.bus.take());
        }
    }
}

/// Regression: a copy region keeping fewer points (2) than the local collection (3) must
/// not stall local retention. Once the region's retention prunes a copy, its local source is
/// "copied, since pruned", not "never copied". Over 8 ticks the local collection ends at
/// keepLast + the baseline, the copy collection at its keepLast + its baseline.
#[tokio::test]
async fn local_retention_keeps_keep_last_when_copies_keep_fewer() {
    let mut rule = rule_s1(3, &["westus2"]);
    rule.copies[0].retention = Some(Retention::newest(2));
    let w = world(testing::policy(vec![rule]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    run_ticks(&w, 8).await;
    let local = w.arm.point_ids(&collection(&vm));
    let copies = w
        .arm
        .point_ids(&names::copy_collection_id(&vm, "westus2", None).unwrap());
    assert_eq!(copies.len(), 3, "copies: keepLast 2 + baseline: {copies:?}");
    assert_eq!(local.len(), 4, "local: keepLast 3 + baseline: {local:?}");
    assert_eq!(
        local,
        [0, 5, 6, 7].map(|h| point(&vm, T0 + hours(h), 0)).to_vec()
    );
}

/// Regression: a copy entry naming the VM's own region gets no copies (the create drops
/// it), so it must not hold local points either: retention keeps keepLast (+ the baseline),
/// not every point until `copyMinutes`.
#[tokio::test]
async fn a_copy_to_the_vms_own_region_does_not_stop_retention() {
    let w = world(testing::policy(vec![rule_s1(2, &["East US"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    run_ticks(&w, 6).await;
    let local = w.arm.point_ids(&collection(&vm));
    assert_eq!(local.len(), 3, "keepLast 2 + baseline: {local:?}");
    assert!(w
        .arm
        .collection(&names::copy_collection_id(&vm, "eastus", None).unwrap())
        .is_none());
}

/// Captures this test thread's `tracing` events as JSON lines. One global subscriber writes
/// into a per-thread buffer: a thread-local default subscriber would race with tracing's global
/// callsite cache while other tests run without one.
struct CapturedLog;

thread_local! {
    static LOG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct ThreadBuf;

impl std::io::Write for ThreadBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        LOG.with(|l| l.borrow_mut().extend_from_slice(data));
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn install() -> Self {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::INFO)
                .with_writer(|| ThreadBuf)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("first global subscriber");
        });
        LOG.with(|l| l.borrow_mut().clear());
        Self
    }
    /// The fields of every `vmrp::report` event logged on this thread since `install`.
    fn reports(&self) -> Vec<serde_json::Value> {
        let text = LOG.with(|l| String::from_utf8(l.borrow().clone()).unwrap());
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "vmrp::report")
            .map(|v| v["fields"].clone())
            .collect()
    }
}

#[tokio::test]
async fn failed_and_given_up_points_are_reported_once_each() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let log = CapturedLog::install();
    w.arm.add_point(&point(&vm, T0, 0), "Failed", T0, None, &[]);
    poll(
        &w,
        poll_req(&vm, &point(&vm, T0, 0), Role::Local, T0),
        T0 + hours(1),
    )
    .await;
    w.arm
        .add_point(&point(&vm, T0, 1), "Creating", T0, None, &[]);
    let mut late = poll_req(&vm, &point(&vm, T0, 1), Role::Local, T0);
    late.retry = 1;
    poll(&w, late, T0 + hours(3)).await;
    let outcomes: Vec<(String, u64)> = log
        .reports()
        .iter()
        .map(|f| {
            (
                f["outcome"].as_str().unwrap().to_string(),
                f["duration_s"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![("failed".into(), 3600), ("given_up".into(), 3 * 3600)]
    );
}

/// A settled retry deletes the failed try it replaced. When that delete is refused for now, the
/// failed point is not left for the next tick's prune (hours later, or never after the last
/// tick): the poll sends a prune follow-up, which deletes it and reports nothing again.
#[tokio::test]
async fn a_settled_retry_whose_prune_is_cut_short_prunes_again_until_the_failed_try_is_gone() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let failed = point(&vm, T0, 0);
    let retry = point(&vm, T0, 1);
    w.arm.add_point(&failed, "Failed", T0, None, &[]);
    w.arm.add_point(
        &retry,
        "Succeeded",
        T0 + time::Duration::minutes(20),
        None,
        &[],
    );
    let log = CapturedLog::install();
    let mut req = poll_req(&vm, &retry, Role::Local, T0);
    req.retry = 1;
    let now = T0 + hours(1);
    w.arm.throttle_next(op::DELETE_POINT, 40);
    let out = poll(&w, req, now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point_ids(&collection(&vm)).contains(&failed));
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1, "one prune follow-up: {}", out.summary);
    assert_eq!(
        sent[0].not_before,
        Some(now + time::Duration::minutes(5)),
        "after ARM's Retry-After (40 s), but the first follow-up waits 5 min at least"
    );
    let QueueMessage::Poll(follow_up) = decode(&sent[0]) else {
        panic!("a poll message")
    };
    assert_eq!((follow_up.prune_again, &follow_up.target), (1, &retry));

    // The follow-up deletes the failed try, keeps the retry, and sends nothing more.
    let gets = w.arm.count(op::GET_POINT);
    let out = poll(&w, follow_up, now + time::Duration::minutes(5)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.point_ids(&collection(&vm)), vec![retry.clone()]);
    assert!(w.bus.take().is_empty(), "{}", out.summary);
    assert_eq!(
        w.arm.count(op::GET_POINT),
        gets,
        "the point is not read again"
    );
    assert_eq!(log.reports().len(), 1, "the settle is reported once");
}

/// A first try's prune that could not list its collection cannot know whether a failed point
/// waits there (here an older tick's try whose own prune was cut short): it sends a follow-up
/// too. Before, only a retry did, and such a failed point stayed until the collection's next
/// settled point, or for good after the last tick (CI's fault e2e, "left Failed").
#[tokio::test]
async fn a_first_try_whose_prune_could_not_list_prunes_again() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let older_failed = point(&vm, T0, 0);
    let settled = point(&vm, T0 + hours(4), 0);
    w.arm.add_point(&older_failed, "Failed", T0, None, &[]);
    w.arm
        .add_point(&settled, "Succeeded", T0 + hours(4), None, &[]);
    let now = T0 + hours(5);
    w.arm.throttle_next(op::GET_COLLECTION, 40);
    let out = poll(&w, poll_req(&vm, &settled, Role::Local, T0 + hours(4)), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1, "one prune follow-up: {}", out.summary);
    assert_eq!(sent[0].not_before, Some(now + time::Duration::minutes(5)));
    let QueueMessage::Poll(follow_up) = decode(&sent[0]) else {
        panic!("a poll message")
    };
    assert_eq!(follow_up.prune_again, 1);
    let out = poll(&w, follow_up, now + time::Duration::minutes(5)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.point_ids(&collection(&vm)), vec![settled]);
    assert!(w.bus.take().is_empty(), "{}", out.summary);
}

/// VM `vm1` under a keepLast-1 rule with three settled points (T0 − 8 h, T0 − 4 h, T0): a prune
/// keeps the first (the baseline) and the newest, and deletes the middle one. Returns the world,
/// the VM and the two points that stay.
fn keep_last_one_with_a_point_to_prune() -> (World, ResourceId, [ResourceId; 2]) {
    let w = world(testing::policy(vec![rule_s1(1, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let [baseline, middle, newest] = [T0 - hours(8), T0 - hours(4), T0].map(|at| {
        let p = point(&vm, at, 0);
        w.arm.add_point(&p, "Succeeded", at, None, &[]);
        p
    });
    assert!(w.arm.point_ids(&collection(&vm)).contains(&middle));
    (w, vm, [baseline, newest])
}

/// A settled point's prune reads too (its collection; for a local point each copy region's
/// collection and newest copy), and paces those reads like the poll's own: with the read bucket
/// low after the poll's GET it lists nothing now and sends a prune follow-up, which prunes once
/// the bucket has refilled. Regression: the prune's reads were unpaced, and a tick's points
/// settling together met ARM's read bucket at once (628 × 429 early in the 5,000-VM window row).
#[tokio::test]
async fn a_prune_that_finds_the_read_budget_low_lists_nothing_and_prunes_in_a_follow_up() {
    let (w, vm, [baseline, settled]) = keep_last_one_with_a_point_to_prune();
    let now = T0 + hours(1);
    // Room for the poll's GET and no more: the default tuning keeps 5 % of the 250 reads for
    // other tools and one call's room for each of 8 instances (12.5 + 8 = 20.5 needed).
    w.arm.report_rate_limits_for(
        "s1",
        vmrp::azure::RateLimits {
            remaining_reads: Some(21),
            ..Default::default()
        }
        .dated(now),
    );
    let out = poll(&w, poll_req(&vm, &settled, Role::Local, T0), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(out.summary.contains("read budget low"), "{}", out.summary);
    assert_eq!(w.arm.count(op::GET_POINT), 1);
    assert_eq!(
        w.arm.count(op::GET_COLLECTION),
        0,
        "no listing on a low bucket"
    );
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1, "one prune follow-up: {}", out.summary);
    let QueueMessage::Poll(follow_up) = decode(&sent[0]) else {
        panic!("a poll message")
    };
    assert_eq!(follow_up.prune_again, 1);

    // Five minutes on, the reading has aged: the follow-up lists and prunes.
    let later = sent[0].not_before.expect("scheduled");
    let out = poll(&w, follow_up, later).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.count(op::GET_COLLECTION), 1, "{}", out.summary);
    assert_eq!(w.arm.point_ids(&collection(&vm)), vec![baseline, settled]);
}

/// A bucket's reading refills from the response that carried it. ARM reports the deletes bucket
/// only on DELETEs: a reading of 0 taken ten minutes ago has refilled, however recent the GETs
/// since (the poll's own, here). Regression: one `date` for all buckets, renewed by every GET,
/// kept the deletes reading at 0 "now", and every prune was put back (641 in CI's chaos run,
/// until the follow-ups ran out and a failed try was left after the last tick).
#[tokio::test]
async fn a_deletes_reading_taken_long_ago_has_refilled_whatever_the_gets_since() {
    let (w, vm, [baseline, settled]) = keep_last_one_with_a_point_to_prune();
    let now = T0 + hours(1);
    w.arm.report_rate_limits_for(
        "s1",
        vmrp::azure::RateLimits {
            remaining_reads: Some(12_000),
            remaining_deletes: Some(0),
            reads_at: Some(now),
            deletes_at: Some(now - time::Duration::minutes(10)),
            date: Some(now),
            ..Default::default()
        },
    );
    let out = poll(&w, poll_req(&vm, &settled, Role::Local, T0), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.bus.take().is_empty(), "no follow-up: {}", out.summary);
    assert_eq!(w.arm.point_ids(&collection(&vm)), vec![baseline, settled]);
}

/// The follow-ups are bounded: a delete refused every time stops after the last follow-up,
/// leaving the failed point to the collection's next settled point. Their waits double from
/// 5 min (75 min in all), so they outlast a tick's creates spending the write budget: follow-ups
/// at the refusals' own 10 s all met the same budget within a minute (the CI-sized soak).
#[tokio::test]
async fn prune_follow_ups_stop_after_the_last_one() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let retry = point(&vm, T0, 1);
    w.arm.add_point(&point(&vm, T0, 0), "Failed", T0, None, &[]);
    w.arm.add_point(&retry, "Succeeded", T0, None, &[]);
    let mut req = poll_req(&vm, &retry, Role::Local, T0);
    req.retry = 1;
    let mut follow_ups = 0;
    let mut waits = Vec::new();
    loop {
        w.arm.throttle_next(op::DELETE_POINT, 10);
        poll(&w, req.clone(), T0 + hours(1)).await;
        match w.bus.take().as_slice() {
            [] => break,
            [one] => {
                let QueueMessage::Poll(next) = decode(one) else {
                    panic!("a poll message")
                };
                follow_ups += 1;
                assert!(follow_ups <= 4, "unbounded follow-ups");
                waits.push((one.not_before.unwrap() - (T0 + hours(1))).whole_minutes());
                req = next;
            }
            more => panic!("one follow-up at a time, got {}", more.len()),
        }
    }
    assert_eq!(follow_ups, 4);
    assert_eq!(waits, vec![5, 10, 20, 40], "minutes, doubling");
}

#[tokio::test]
async fn a_settled_local_point_whose_copy_has_not_started_is_held_from_retention() {
    let w = world(testing::policy(vec![rule_s1(1, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let src = collection(&vm);
    w.arm.add_collection(&src, "eastus", &vm);
    let ticks: Vec<OffsetDateTime> = (0..4).map(|h| T0 + hours(h * 4)).collect();
    for t in &ticks {
        w.arm
            .add_point(&point(&vm, *t, 0), "Succeeded", *t, None, &[]);
    }
    // Only the baseline is copied; the copies of ticks[1] and ticks[2] are still queued (copies
    // go one at a time per region), so their sources must stay.
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&target_c, "westus2", &src);
    w.arm.add_point(
        &copy_point(&vm, "westus2", ticks[0]),
        "Succeeded",
        ticks[0],
        Some(&point(&vm, ticks[0], 0)),
        &[100, 100],
    );
    let newest = point(&vm, ticks[3], 0);
    let mut req = poll_req(&vm, &newest, Role::Local, ticks[3]);
    req.copy_to = vec!["westus2".into()];
    let out = poll(&w, req, ticks[3] + time::Duration::minutes(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let left = w.arm.point_ids(&src);
    for t in &ticks {
        assert!(left.contains(&point(&vm, *t, 0)), "{t} kept");
    }
    assert_eq!(w.arm.count(op::DELETE_POINT), 0);
}

// The timer's listing in create messages
// ------------------------------------------------------------------------------------------

/// The create the timer sent for `vm`.
fn create_for(sent: &[OutgoingMessage], vm: &ResourceId) -> CreateRequest {
    sent.iter()
        .find_map(|m| match decode(m) {
            QueueMessage::Create(c) if &c.vm == vm => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no create for {vm}"))
}

/// Calls of the read operations a create would make without the listing.
fn reads(w: &World) -> [usize; 4] {
    [
        w.arm.count(op::GET_VM),
        w.arm.count(op::GET_DISK),
        w.arm.count(op::GET_COLLECTION),
        w.arm.count(op::GET_POINT),
    ]
}

/// The coverage signal's reads ask ARM's last reading first, as every ARM caller does: with the
/// subscription's read bucket nearly empty they are skipped (the VM counts unknown), and the
/// tick's creates still go. Regression: the 2,000-VM soak over 20 subscriptions met 3,840 × 429,
/// every one of them a coverage read of a planning invocation (8 at a time, unpaced).
#[tokio::test]
async fn the_coverage_signal_reads_only_what_the_read_budget_has_room_for() {
    for (remaining_reads, reads_expected) in [(5, 0), (12_000, 1)] {
        let w = world(testing::policy(vec![rule_s1(3, &[])]));
        let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "ready").build());
        w.arm.add_collection(&collection(&vm), "eastus", &vm);
        w.arm.report_rate_limits_for(
            "s1",
            vmrp::azure::RateLimits {
                remaining_reads: Some(remaining_reads),
                remaining_writes: Some(1_200),
                ..Default::default()
            }
            .dated(T0),
        );
        timer(&w, T0).await;
        assert_eq!(
            w.arm.count(op::GET_COLLECTION),
            reads_expected,
            "{remaining_reads} reads left"
        );
        let sent = w.bus.take();
        assert_eq!(create_for(&sent, &vm).vm, vm, "the create still goes");
    }
}

#[tokio::test]
async fn timer_carries_its_listing_and_creates_then_read_nothing() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let shared = w.arm.add_disk(disk(
        &disk_id("s1", "rg", "shared"),
        "Premium_LRS",
        Some(2),
        &[],
    ));
    let plain = w.arm.add_disk(disk(
        &disk_id("s1", "rg", "plain"),
        "Premium_LRS",
        None,
        &[],
    ));
    let ready = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "ready")
            .data_disk(0, &shared, "Premium_LRS")
            .data_disk(1, &plain, "Premium_LRS")
            .build(),
    );
    let fresh = w.arm.add_vm(VmBuilder::new("s1", "rg", "fresh").build());
    let taken = w.arm.add_vm(VmBuilder::new("s1", "rg", "taken").build());
    w.arm.add_collection(&collection(&ready), "eastus", &ready);
    // A collection of the right name holding another VM's points: not "ready".
    w.arm.add_collection(&collection(&taken), "eastus", &fresh);

    timer(&w, T0).await;
    let sent = w.bus.take();
    assert_eq!(w.arm.count(op::LIST_DISKS), 1, "one disk listing per scope");
    assert_eq!(w.arm.count(op::LIST_COLLECTIONS), 1, "one per subscription");
    // Nothing one by one for the creates; the coverage signal (src/coverage.rs) reads each
    // existing collection once (ready's and taken's; fresh has none, the listing shows it).
    assert_eq!(
        reads(&w),
        [0, 0, 2, 0],
        "the timer reads nothing one by one but the coverage signal's collections"
    );

    let listed = |vm: &ResourceId| *create_for(&sent, vm).listed.expect("listing carried");
    let l = listed(&ready);
    assert_eq!(l.at, T0);
    assert_eq!(l.vm.resource_id().as_ref(), Some(&ready));
    assert_eq!(l.collection, Some(CollectionSeen::Ready));
    let mut disks: Vec<(ResourceId, Option<i32>)> = l
        .disks
        .iter()
        .map(|d| (d.id.clone(), d.max_shares))
        .collect();
    disks.sort();
    assert_eq!(
        disks,
        vec![(plain.clone(), None), (shared.clone(), Some(2))]
    );
    assert_eq!(listed(&fresh).collection, Some(CollectionSeen::Missing));
    assert_eq!(listed(&taken).collection, None, "left to the full check");

    // The create of a VM whose collection is ready: one PUT, no read; the shared disk, known
    // only from the disk listing, is excluded.
    w.arm.clear_calls();
    let out = create(&w, create_for(&sent, &ready), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(reads(&w), [0, 0, 0, 0]);
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 0);
    assert_eq!(w.arm.count(op::PUT_POINT), 1);
    let body = serde_json::to_value(w.arm.point(&point(&ready, T0, 0)).unwrap()).unwrap();
    let excluded: Vec<&str> = body["properties"]["excludeDisks"]
        .as_array()
        .expect("excludeDisks")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(excluded, vec![shared.as_str()]);

    // A VM whose collection is missing: created without reading it first.
    w.arm.clear_calls();
    let out = create(&w, create_for(&sent, &fresh), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(reads(&w), [0, 0, 0, 0]);
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 1);

    // Unknown state: the full check reads the collection and finds it is another VM's.
    w.arm.clear_calls();
    let out = create(&w, create_for(&sent, &taken), T0).await.unwrap();
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("exists with source"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::GET_COLLECTION), 1);
}

#[tokio::test]
async fn a_stale_listing_is_not_trusted() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    timer(&w, T0).await;
    let mut req = create_for(&w.bus.take(), &vm);
    req.listed.as_mut().unwrap().at = T0 - time::Duration::hours(2);
    let out = create(&w, req, T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.count(op::GET_VM), 1, "read afresh");
    assert_eq!(
        w.arm.count(op::GET_COLLECTION),
        2,
        "collection checked afresh: today's name, then the pre-hash one"
    );
}

#[tokio::test]
async fn a_write_refused_on_the_listing_is_tried_again_on_fresh_reads() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    timer(&w, T0).await;
    let req = create_for(&w.bus.take(), &vm);
    // The VM is deleted after the listing; ARM refuses the point for good.
    w.arm.remove_vm(&vm);
    w.arm.refuse_next(
        op::PUT_POINT,
        404,
        "ResourceNotFound",
        "The source VM was not found.",
    );
    let out = create(&w, req, T0 + time::Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    assert!(out.summary.contains("VM vanished"), "{}", out.summary);
    assert_eq!(w.arm.count(op::GET_VM), 1, "the second try read the VM");
    assert_eq!(w.arm.count(op::PUT_POINT), 1, "and did not PUT again");
}

#[tokio::test]
async fn the_timer_paces_from_when_its_listings_ended() {
    let mut w = world(testing::policy(vec![rule_s1(3, &[])]));
    w.deps.tuning.pacing = vmrp::plan::Pacing {
        burst: 1,
        writes_per_create: 1,
        reads_per_create: 0,
        reserve: 0.0,
        ..vmrp::plan::Pacing::default()
    };
    w.arm.add_vm(VmBuilder::new("s1", "rg", "a").build());
    w.arm.add_vm(VmBuilder::new("s1", "rg", "b").build());
    // The listings ended 90 s after the invocation started (ARM's clock, 1 s resolution).
    w.arm.report_rate_limits(vmrp::azure::RateLimits {
        date: Some(T0 + time::Duration::seconds(90)),
        ..Default::default()
    });
    let out = timer(&w, T0).await;
    // Whichever VM the tick's rotation puts first goes at once, the other one write later.
    let mut nb: Vec<_> = out.sent.iter().map(|s| s.not_before).collect();
    nb.sort();
    assert_eq!(
        nb,
        vec![
            None,
            Some(T0 + Duration::from_secs(91) + Duration::from_millis(100))
        ],
        "paced from ARM's time plus its resolution, not from the start of the run"
    );
    // A Date older than the run (an earlier response) changes nothing.
    w.arm.report_rate_limits(vmrp::azure::RateLimits {
        date: Some(T0 - time::Duration::minutes(5)),
        ..Default::default()
    });
    let out = timer(&w, T0).await;
    let mut nb: Vec<_> = out.sent.iter().map(|s| s.not_before).collect();
    nb.sort();
    assert_eq!(nb, vec![None, Some(T0 + Duration::from_millis(100))]);
}

/// ARM's read buckets are per subscription: the timer paces each subscription by what ARM last
/// reported left in THAT subscription. On the old code one reading (the last response's, here
/// s2's full bucket) paced every subscription, so s1's creates went out at once into a nearly
/// empty bucket.
#[tokio::test]
async fn the_timer_paces_each_subscription_by_its_own_read_budget() {
    let mut rule = rule_s1(3, &[]);
    rule.targets.subscriptions = vec!["s1".into(), "s2".into()];
    let mut w = world(testing::policy(vec![rule]));
    w.deps.tuning.pacing = vmrp::plan::Pacing {
        burst: 1000,
        reads_per_create: 5,
        read_refill_per_sec: 1.0,
        reserve: 0.0,
        ..vmrp::plan::Pacing::default()
    };
    for sub in ["s1", "s2"] {
        for name in ["a", "b", "c", "d"] {
            w.arm.add_vm(VmBuilder::new(sub, "rg", name).build());
        }
    }
    let limits = |left| vmrp::azure::RateLimits {
        remaining_reads: Some(left),
        ..Default::default()
    };
    w.arm.report_rate_limits_for("s1", limits(10));
    w.arm.report_rate_limits_for("S2", limits(11_000));
    // The last response came from s2.
    w.arm.report_rate_limits(limits(11_000));
    let out = timer(&w, T0).await;
    assert_eq!(out.sent.len(), 8, "{}", out.summary);
    let latest = |sub: &str| {
        w.bus
            .sent()
            .iter()
            .filter(|m| matches!(decode(m), QueueMessage::Create(c) if c.vm.subscription() == sub))
            .map(|m| m.not_before.unwrap_or(T0))
            .max()
            .unwrap()
    };
    let (s1, s2) = (latest("s1"), latest("s2"));
    // s2: 4 creates fit its full bucket; s1: 10 reads left, the rest waits for the refill.
    assert!(s2 < T0 + Duration::from_secs(5), "s2 not slowed: {s2}");
    assert!(
        s1 >= T0 + Duration::from_secs(5),
        "s1 paced by its own bucket: {s1}"
    );
}

/// Copies into a region go in creation order: once a newer tick's point is there, the older
/// tick can never be copied, and that is reported (with the region and the newer point), not
/// silently skipped, so the missing copy has its reason. (An older point settled when the newer
/// one's copy starts is copied first instead: tests/copy_order_and_pacing.rs; here t1 settles
/// only after t2's copy started, e.g. a late retry.)
#[tokio::test]
async fn a_copy_overtaken_by_a_newer_one_is_reported_as_superseded() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let (t1, t2) = (T0, T0 + hours(1));
    w.arm
        .add_point(&point(&vm, t2, 0), "Succeeded", t2, None, &[]);
    let newer = copy(&w, copy_req(&point(&vm, t2, 0), Some(&vm), "westus2"), t2).await;
    assert_eq!(newer.status, Status::Done, "{}", newer.summary);
    w.bus.take();
    w.arm
        .add_point(&point(&vm, t1, 0), "Succeeded", t1, None, &[]);

    let late = copy(
        &w,
        copy_req(&point(&vm, t1, 0), Some(&vm), "westus2"),
        t2 + hours(1),
    )
    .await;
    assert_eq!(late.status, Status::Reported, "{}", late.summary);
    assert!(late.summary.contains("superseded"), "{}", late.summary);
    assert!(
        late.summary.contains(point(&vm, t1, 0).as_str()),
        "{}",
        late.summary
    );
    assert!(late.summary.contains("westus2"), "{}", late.summary);
    assert!(w.arm.point(&copy_point(&vm, "westus2", t1)).is_none());
    assert!(w.bus.take().is_empty(), "nothing retried");
}

/// A create that comes within Azure's spacing of its rule's next tick gives way to it, instead
/// of taking a point the next tick's create would then be refused for.
#[tokio::test]
async fn a_create_too_close_to_the_next_tick_is_superseded() {
    let mut w = world(testing::policy(vec![rule_s1(3, &[])]));
    w.deps.schedule = "0 0 */4 * * *".into();
    // Ticks at 00:00, 04:00, …; the rule's points are crash-consistent (1 h spacing).
    let tick = datetime!(2026-11-25 00:00:00 UTC);
    let at = |minutes| tick + time::Duration::minutes(minutes);
    let vm1 = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let vm2 = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm2").build());
    // 50 min and 2 h 30 min late are fine; 3 h 10 min late is within 1 h of the 04:00 tick.
    for (vm, minutes) in [(&vm1, 50), (&vm2, 150)] {
        let out = create(&w, create_req(vm, tick), at(minutes)).await.unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
    }
    let vm3 = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm3").build());
    let late = create(&w, create_req(&vm3, tick), at(190)).await.unwrap();
    assert_eq!(late.status, Status::Reported, "{}", late.summary);
    assert!(late.summary.contains("superseded"), "{}", late.summary);
    assert!(
        late.summary.contains("2026-11-25T04:00:00Z"),
        "{}",
        late.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 2, "no PUT for the late one");
}

// ------------------------------------------------------------------------------------------
// Names, regions and consistency input
// ------------------------------------------------------------------------------------------

/// Application consistency is what Azure does when `consistencyMode` is absent; only
/// `CrashConsistent` is accepted as input (2025-04-01 spec). Old main sent
/// `"ApplicationConsistent"` explicitly.
#[tokio::test]
async fn application_consistency_is_asked_for_by_omitting_the_mode() {
    let mut rule = rule_s1(3, &[]);
    rule.consistency = vmrp::azure::models::ConsistencyMode::ApplicationConsistent;
    let w = world(testing::policy(vec![rule]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(
        out.summary.contains("ApplicationConsistent"),
        "{}",
        out.summary
    );
    let sent = w.arm.point(&point(&vm, T0, 0)).unwrap();
    assert_eq!(
        sent.properties.unwrap().consistency_mode,
        None,
        "no consistencyMode in the PUT body"
    );
    // An explicit crash-consistent create still says so.
    let mut req = create_req(&vm, T0 + hours(4));
    req.consistency_mode = Some(vmrp::azure::models::ConsistencyMode::CrashConsistent);
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    create(&w, req, T0 + hours(4)).await.unwrap();
    let crash = w.arm.point(&point(&vm, T0 + hours(4), 0)).unwrap();
    assert_eq!(
        crash.properties.unwrap().consistency_mode.unwrap().as_str(),
        "CrashConsistent"
    );
}

/// Two VMs named `web01` in two resource groups, one `collectionResourceGroup`: old main gave
/// both `rpc-web01` and reported the second as "exists with source …" at every tick. The first
/// VM's pre-upgrade `rpc-web01` keeps being used; the second gets its own collection.
#[tokio::test]
async fn same_named_vms_sharing_a_collection_group_both_get_points() {
    let mut rule = rule_s1(3, &[]);
    rule.collection_resource_group = Some("rg-rp".into());
    let w = world(testing::policy(vec![rule]));
    let a = w.arm.add_vm(VmBuilder::new("s1", "rg-a", "web01").build());
    let b = w.arm.add_vm(VmBuilder::new("s1", "rg-b", "web01").build());
    // What old main made for `a` before the upgrade.
    let legacy = names::legacy_collection_id(&a, Some("rg-rp")).unwrap();
    assert_eq!(legacy.name(), Some("rpc-web01"));
    w.arm.add_collection(&legacy, "eastus", &a);

    for vm in [&a, &b] {
        let out = create(&w, create_req(vm, T0), T0).await.unwrap();
        assert_eq!(out.status, Status::Done, "{vm}: {}", out.summary);
    }
    let name = names::restore_point_name(T0, 0);
    assert!(
        w.arm.point(&legacy.child("restorePoints", &name)).is_some(),
        "a's history stays in its legacy collection"
    );
    let b_collection = names::collection_id(&b, Some("rg-rp")).unwrap();
    assert_ne!(b_collection, legacy);
    assert_eq!(b_collection.resource_group(), Some("rg-rp"));
    assert!(w
        .arm
        .point(&b_collection.child("restorePoints", &name))
        .is_some());
    let made = w.arm.collection(&b_collection).expect("b's own collection");
    assert_eq!(made.source_id(), Some(b.as_str()));
    assert!(
        w.arm
            .collection(&names::collection_id(&a, Some("rg-rp")).unwrap())
            .is_none(),
        "no second collection for a"
    );

    // The timer's listing: `a` is left to the full check (legacy), `b` is ready.
    w.bus.take();
    timer(&w, T0 + hours(1)).await;
    let sent = w.bus.take();
    assert_eq!(create_for(&sent, &a).listed.unwrap().collection, None);
    assert_eq!(
        create_for(&sent, &b).listed.unwrap().collection,
        Some(CollectionSeen::Ready)
    );
}

/// `app`'s westus2 copies and a VM named `app-westus2` in the same group: old main named both
/// `rpc-app-westus2`, and the copy was refused as the other VM's collection.
#[tokio::test]
async fn a_vm_named_like_anothers_copy_collection_does_not_block_its_copies() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let app = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "app").location("eastus").build());
    let other = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "app-westus2")
            .location("eastus")
            .build(),
    );
    for vm in [&other, &app] {
        let out = create(&w, create_req(vm, T0), T0).await.unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        w.arm.set_point_state(&point(vm, T0, 0), "Succeeded");
    }
    let out = copy(
        &w,
        copy_req(&point(&app, T0, 0), Some(&app), "westus2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&copy_point(&app, "westus2", T0)).is_some());
    let target = names::copy_collection_id(&app, "westus2", None).unwrap();
    assert_ne!(target, collection(&other));
    assert_eq!(
        w.arm.collection(&target).unwrap().source_id(),
        Some(collection(&app).as_str())
    );
}

/// An upgrade keeps using `rpc-{vm}` and `rpc-{vm}-{region}` whose `source.id` is the VM (its
/// local collection): points, copies and their retention holds stay where the history is.
#[tokio::test]
async fn legacy_named_collections_keep_being_used() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    let legacy = names::legacy_collection_id(&vm, None).unwrap();
    let legacy_copy = names::legacy_copy_collection_id(&vm, "westus2", None).unwrap();
    assert_eq!(
        (legacy.name(), legacy_copy.name()),
        (Some("rpc-vm1"), Some("rpc-vm1-westus2"))
    );
    w.arm.add_collection(&legacy, "eastus", &vm);
    w.arm.add_collection(&legacy_copy, "westus2", &legacy);
    let old = legacy.child("restorePoints", "rp-20261124T0300Z");
    w.arm
        .add_point(&old, "Succeeded", T0 - hours(24), None, &[]);

    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let name = names::restore_point_name(T0, 0);
    let local = legacy.child("restorePoints", &name);
    assert!(w.arm.point(&local).is_some());
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 0, "no new collection");
    let p = only_poll(&w.bus.take());
    assert_eq!(p.target, local);

    // The next create knows the legacy collection: no read.
    w.arm.set_point_state(&local, "Succeeded");
    w.arm.clear_calls();
    let t1 = T0 + hours(4);
    create(&w, create_req(&vm, t1), t1).await.unwrap();
    assert_eq!(w.arm.count(op::GET_COLLECTION), 0);
    assert!(w
        .arm
        .point(&legacy.child("restorePoints", &names::restore_point_name(t1, 0)))
        .is_some());
    w.bus.take();

    // The copy goes into the legacy copy collection.
    let out = copy(&w, copy_req(&local, Some(&vm), "westus2"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w
        .arm
        .point(&legacy_copy.child("restorePoints", &name))
        .is_some());
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 0, "no new copy collection");
    assert!(w
        .arm
        .collection(&names::copy_collection_id(&vm, "westus2", None).unwrap())
        .is_none());

    // Pruning sees the copy in the legacy copy collection: the replicating copy holds `local`.
    let keep1 = {
        let mut r = rule_s1(1, &["westus2"]);
        // Past the copy deadline no point is held for a copy that never started: only a copy
        // found in the legacy copy collection can hold `local`.
        r.deadlines.copy_minutes = 60;
        r
    };
    let w2 = World {
        arm: w.arm.clone(),
        bus: w.bus.clone(),
        deps: Deps::new(
            w.arm.clone(),
            w.bus.clone(),
            Arc::new(testing::policy(vec![keep1])),
            HOURLY,
        ),
    };
    let t1_point = legacy.child("restorePoints", &names::restore_point_name(t1, 0));
    w2.arm.set_point_state(&t1_point, "Succeeded");
    let mut req = poll_req(&vm, &t1_point, Role::Local, t1);
    req.copy_to = Vec::new();
    let out = poll(&w2, req, t1 + hours(1)).await;
    assert!(
        w2.arm.point(&local).is_some(),
        "held by its copy still replicating: {}",
        out.summary
    );
}

/// `"copyTo": ["mars"]` is refused before anything is written; a display name is normalised.
#[tokio::test]
async fn message_regions_are_checked_and_normalised_before_any_write() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    for bad in ["mars", "sweden/central", "west-us"] {
        let mut req = create_req(&vm, T0);
        req.copy_to = Some(vec!["westus2".into(), bad.into()]);
        let out = create(&w, req, T0).await.unwrap();
        assert_eq!(out.status, Status::Reported, "{bad}: {}", out.summary);
        assert!(out.summary.contains(bad), "{}", out.summary);
        assert_eq!(
            (w.arm.count(op::PUT_COLLECTION), w.arm.count(op::PUT_POINT)),
            (0, 0),
            "{bad}: nothing written"
        );
        assert!(w.bus.take().is_empty());
    }

    let mut req = create_req(&vm, T0);
    req.copy_to = Some(vec!["Sweden Central".into()]);
    let out = create(&w, req, T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let p = only_poll(&w.bus.take());
    assert_eq!(p.copy_to, vec!["swedencentral".to_string()]);

    // A copy message naming a region that is none: a clear refusal, no panic, no write.
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    w.arm.clear_calls();
    for bad in ["sweden/central", "mars", ""] {
        let out = copy(
            &w,
            copy_req(&point(&vm, T0, 0), Some(&vm), bad),
            T0 + hours(1),
        )
        .await;
        assert_eq!(out.status, Status::Reported, "{bad:?}: {}", out.summary);
        assert!(out.summary.contains("targetRegion"), "{}", out.summary);
    }
    assert_eq!(w.arm.count(op::PUT_COLLECTION), 0);
    let out = copy(
        &w,
        copy_req(&point(&vm, T0, 0), Some(&vm), "Sweden Central"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let target = names::copy_collection_id(&vm, "swedencentral", None).unwrap();
    assert!(
        target.name().unwrap().ends_with("_swedencentral"),
        "{target}"
    );
    let c = w.arm.collection(&target).expect("copy collection");
    assert_eq!(c.location.as_deref(), Some("swedencentral"));
}

// ------------------------------------------------------------------------------------------
// Paths no other test takes
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_create_still_refused_after_its_last_reschedule_gives_up_and_reports() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let max = w.deps.tuning.max_reschedules;
    // The last reschedule allowed: attempt max − 1 goes back as attempt max.
    let mut req = create_req(&vm, T0);
    req.attempt = max - 1;
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = create(&w, req.clone(), T0).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let QueueMessage::Create(again) = decode(&only(&w.bus.take())) else {
        panic!("a create")
    };
    assert_eq!(again.attempt, max);
    // Refused once more: no further message, a report that says why.
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = create(&w, again, T0 + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary
            .contains(&format!("gave up after {max} reschedules")),
        "{}",
        out.summary
    );
    assert!(
        w.bus.take().is_empty(),
        "nothing rescheduled past the budget"
    );
    assert!(w.arm.point(&point(&vm, T0, 0)).is_none());
}

#[tokio::test]
async fn a_copy_still_refused_after_its_last_reschedule_gives_up_and_reports() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    w.arm
        .add_point(&point(&vm, T0, 0), "Succeeded", T0, None, &[]);
    let now = T0 + hours(1);
    // Within the budget, a throttled copy start is rescheduled...
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = copy(&w, copy_req(&point(&vm, T0, 0), Some(&vm), "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let QueueMessage::Copy(again) = decode(&only(&w.bus.take())) else {
        panic!("a copy")
    };
    assert_eq!(again.attempt, 1);
    // ...past it (the copy deadline's waits plus max_reschedules), it is reported.
    let mut late = again.clone();
    late.attempt = 100_000;
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = copy(&w, late, now).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("gave up after 100000 reschedules"),
        "{}",
        out.summary
    );
    assert!(w.bus.take().is_empty());
    assert!(w.arm.point(&copy_point(&vm, "westus2", T0)).is_none());
}

#[tokio::test]
async fn expired_orphan_deletes_are_capped_per_timer_run() {
    let mut policy = testing::policy(vec![rule_s1(3, &[])]);
    policy.orphans.expire_after_days = Some(7);
    let w = world(policy);
    let cap = w.deps.tuning.max_orphan_deletes_per_tick;
    let mut orphans = Vec::new();
    for i in 0..cap + 3 {
        let vm = w
            .arm
            .add_vm(VmBuilder::new("s1", "rg", &format!("gone{i}")).build());
        let id = collection(&vm);
        let mut tags = Tags::new();
        // As OnVmChanged marks them: the VM it belonged to, and when it was found gone.
        tags.insert(TAG_VM.into(), vm.to_string());
        tags.insert(
            TAG_ORPHANED_AT.into(),
            (T0 - time::Duration::days(8))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        );
        let body = vmrp::azure::models::RestorePointCollection::for_source("eastus", &vm, tags);
        vmrp::azure::Arm::put_collection(&*w.arm, &id, &body)
            .await
            .unwrap();
        w.arm.remove_vm(&vm);
        orphans.push(id);
    }
    w.arm.add_vm(VmBuilder::new("s1", "rg", "live").build());
    let left = |w: &World| {
        orphans
            .iter()
            .filter(|c| w.arm.collection(c).is_some())
            .count()
    };
    let out = timer(&w, T0).await;
    assert!(
        out.summary
            .contains(&format!("{cap} expired orphan collections deleted")),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::DELETE_COLLECTION), cap);
    assert_eq!(left(&w), 3, "the rest waits for the next run");
    let out = timer(&w, T0 + hours(1)).await;
    assert!(out.summary.contains("3 expired orphan"), "{}", out.summary);
    assert_eq!(left(&w), 0);
}

#[tokio::test]
async fn on_vm_changed_fails_the_invocation_on_a_transient_arm_error_and_reports_a_permanent_one() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    w.arm.remove_vm(&vm);
    // Transient (429): the invocation fails, so Event Grid redelivers with its own backoff.
    w.arm.throttle_next(op::LIST_COLLECTIONS, 30);
    let result = functions::on_vm_changed::handle(
        inv(
            event("ResourceDeleteSuccess", &vm, "d1"),
            functions::ON_VM_CHANGED,
            T0 + hours(1),
        ),
        &w.deps,
    )
    .await;
    assert!(
        matches!(result, Err(HandlerError::Arm(ref e)) if e.status == Some(429)),
        "{result:?}"
    );
    let tags = w.arm.collection(&collection(&vm)).unwrap().tags.unwrap();
    assert!(!tags.contains_key(TAG_ORPHANED_AT), "nothing marked yet");
    // The redelivery goes through.
    let out = on_event(&w, event("ResourceDeleteSuccess", &vm, "d1"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    // Permanent (403): reported, not retried for ever.
    let other = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm2").build());
    w.arm.remove_vm(&other);
    let denied = vmrp::azure::ArmError {
        operation: op::LIST_COLLECTIONS.into(),
        status: Some(403),
        code: "AuthorizationFailed".into(),
        message: "no".into(),
        request_id: None,
        retry_after: None,
    };
    w.arm.fail_next(op::LIST_COLLECTIONS, denied);
    let out = on_event(
        &w,
        event("ResourceDeleteSuccess", &other, "d2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("AuthorizationFailed"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn vm_delete_marks_its_copy_collections_orphaned_too() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    create(&w, create_req(&vm, T0), T0).await.unwrap();
    w.arm.set_point_state(&point(&vm, T0, 0), "Succeeded");
    w.bus.take();
    let out = copy(
        &w,
        copy_req(&point(&vm, T0, 0), Some(&vm), "westus2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let copies = names::copy_collection_id(&vm, "westus2", None).unwrap();
    assert!(w.arm.collection(&copies).is_some());
    w.arm.remove_vm(&vm);
    let out = on_event(&w, event("ResourceDeleteSuccess", &vm, "d1"), T0 + hours(2)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(
        out.summary.contains("2 collections marked"),
        "{}",
        out.summary
    );
    for c in [collection(&vm), copies] {
        let tags = w.arm.collection(&c).unwrap().tags.unwrap_or_default();
        assert_eq!(
            tags.get(TAG_ORPHANED_AT).map(String::as_str),
            Some("2026-11-25T03:00:00Z"),
            "{c}"
        );
    }
}

fn only(sent: &[OutgoingMessage]) -> OutgoingMessage {
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent[0].clone()
}

// ------------------------------------------------------------------------------------------
// Premium SSD v2 / Ultra disks: background copy, instant access
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn copy_waits_for_the_sources_background_copy_then_copies() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let source = point(&vm, T0, 0);
    w.arm.add_point(&source, "Succeeded", T0, None, &[]);
    let mut req = copy_req(&source, Some(&vm), "westus2");
    let mut now = T0 + Duration::from_secs(120);
    // Pending (no instant access) and InstantAccess (restorable, not copyable) both wait.
    for states in [["Available", "Pending"], ["Available", "InstantAccess"]] {
        w.arm.set_access_states(&source, &states);
        let out = copy(&w, req.clone(), now).await;
        assert_eq!(
            out.status,
            Status::Rescheduled,
            "{states:?}: {}",
            out.summary
        );
        assert!(
            out.summary
                .contains(functions::start_cross_region_copy::BACKGROUND_COPY_WAIT)
                && out.summary.contains(states[1]),
            "{}",
            out.summary
        );
        assert_eq!(
            w.arm.count(op::PUT_POINT),
            0,
            "no copy PUT while {states:?}"
        );
        let sent = w.bus.take();
        let next = match sent.as_slice() {
            [m] => match decode(m) {
                QueueMessage::Copy(c) => c,
                other => panic!("expected the copy again, got {other:?}"),
            },
            other => panic!("expected one message, got {other:?}"),
        };
        assert_eq!(next.attempt, req.attempt + 1);
        let not_before = sent[0].not_before.expect("a delayed copy");
        assert!(not_before > now, "waits before trying again");
        req = next;
        now = not_before;
    }
    w.arm
        .set_access_states(&source, &["Available", "AvailableWithInstantAccess"]);
    let out = copy(&w, req, now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.count(op::PUT_POINT), 1);
}

#[tokio::test]
async fn local_point_settles_once_restorable_not_while_pending() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let target = point(&vm, T0, 0);
    w.arm.add_point(&target, "Succeeded", T0, None, &[]);
    w.arm.set_access_states(&target, &["Available", "Pending"]);
    let mut req = poll_req(&vm, &target, Role::Local, T0);
    req.copy_to = vec!["westus2".into()];
    let now = T0 + Duration::from_secs(300);
    let out = poll(&w, req.clone(), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(
        out.summary.contains("not restorable yet"),
        "{}",
        out.summary
    );
    let next = only_poll(&w.bus.take());
    // InstantAccess restores (Microsoft's definition): settled, and the copy is sent (it waits
    // for the background copy itself).
    w.arm
        .set_access_states(&target, &["Available", "InstantAccess"]);
    let out = poll(&w, next, now + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let copies: Vec<CopyRequest> = w
        .bus
        .take()
        .iter()
        .filter_map(|m| match decode(m) {
            QueueMessage::Copy(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies.len(), 1);
}

#[tokio::test]
async fn create_sends_instant_access_only_where_it_applies() {
    let mut rule = rule_s1(3, &[]);
    rule.consistency = vmrp::azure::models::ConsistencyMode::ApplicationConsistent;
    rule.instant_access = Some(vmrp::policy::InstantAccess {
        duration_minutes: Some(120),
    });
    let w = world(testing::policy(vec![rule]));
    let v2 = disk_id("s1", "rg", "v2");
    w.arm.add_disk(disk(&v2, "PremiumV2_LRS", None, &[]));
    let fast = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "vm1")
            .data_disk(0, &v2, "PremiumV2_LRS")
            .build(),
    );
    let plain = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm2").build());
    for vm in [&fast, &plain] {
        let out = create(&w, create_req(vm, T0), T0).await.unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
    }
    let c = w.arm.collection(&collection(&fast)).unwrap();
    assert_eq!(c.properties.unwrap().instant_access, Some(true));
    let p = w.arm.point(&point(&fast, T0, 0)).unwrap();
    assert_eq!(
        p.properties.unwrap().instant_access_duration_minutes,
        Some(120)
    );
    // No Premium SSD v2 / Ultra disk: neither property is sent.
    let c = w.arm.collection(&collection(&plain)).unwrap();
    assert_eq!(c.properties.unwrap().instant_access, None);
    let p = w.arm.point(&point(&plain, T0, 0)).unwrap();
    assert_eq!(p.properties.unwrap().instant_access_duration_minutes, None);
}

#[tokio::test]
async fn instant_access_creates_over_the_limit_are_rescheduled() {
    let w = world(testing::policy(vec![rule_s1(3, &[])]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    // The emulator's refusal of a 51st concurrent instant-access create (rules.rs).
    w.arm.refuse_next(
        op::PUT_POINT,
        409,
        "OperationNotAllowed",
        "50 instant access restore points are being created concurrently in subscription 's1' and region 'eastus'; at most 50 are supported. Retry once one of them completes.",
    );
    let out = create(&w, create_req(&vm, T0), T0).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
}

// ------------------------------------------------------------------------------------------
// Customer-managed keys and the copy rules (docs/lifecycle.md, "Cross-region copy rules")
// ------------------------------------------------------------------------------------------

const DES_EAST: &str =
    "/subscriptions/s1/resourceGroups/keys/providers/Microsoft.Compute/diskEncryptionSets/des-eastus";
const DES_WEST: &str =
    "/subscriptions/s1/resourceGroups/keys/providers/Microsoft.Compute/diskEncryptionSets/des-westus2";

/// A source point whose OS disk and LUN 1 use `DES_EAST` (LUN 0 uses platform keys).
fn cmk_metadata() -> serde_json::Value {
    serde_json::json!({"storageProfile": {
        "osDisk": {"name": "vm1-os", "managedDisk": {"id": "os", "diskEncryptionSet": {"id": DES_EAST}}},
        "dataDisks": [
            {"lun": 0, "name": "vm1-data0", "managedDisk": {"id": "d0"}},
            {"lun": 1, "name": "vm1-data1", "managedDisk": {"id": "d1", "diskEncryptionSet": {"id": DES_EAST}}}
        ]
    }})
}

/// Regression: a copy of a point whose disks use customer-managed keys was PUT without a target
/// encryption set (Azure refuses it, or by one reading encrypts it with platform keys). Now an
/// unmapped set is reported and nothing is PUT; a mapped one is named per disk in the PUT.
#[tokio::test]
async fn a_copy_of_cmk_disks_names_the_mapped_set_per_disk_and_an_unmapped_set_is_reported() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let src = point(&vm, T0, 0);
    w.arm.add_point(&src, "Succeeded", T0, None, &[]);
    w.arm.set_source_metadata(&src, cmk_metadata());

    let out = copy(&w, copy_req(&src, Some(&vm), "westus2"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    for part in [
        "OS disk (vm1-os)",
        "LUN 1 (vm1-data1)",
        DES_EAST,
        "encryptionSets",
        "westus2",
    ] {
        assert!(out.summary.contains(part), "{part}: {}", out.summary);
    }
    assert!(!out.summary.contains("LUN 0"), "{}", out.summary);
    assert_eq!(
        w.arm.count(op::PUT_POINT),
        0,
        "never copied with platform keys"
    );
    assert!(w.bus.take().is_empty());

    // Mapped (the key in another case): each CMK disk names the westus2 set, by position.
    let mut rule = rule_s1(3, &["westus2"]);
    rule.copies[0]
        .encryption_sets
        .insert(DES_EAST.to_ascii_uppercase(), DES_WEST.into());
    let w2 = world(testing::policy(vec![rule]));
    w2.arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w2.arm.add_collection(&collection(&vm), "eastus", &vm);
    w2.arm.add_point(&src, "Succeeded", T0, None, &[]);
    w2.arm.set_source_metadata(&src, cmk_metadata());
    let out = copy(&w2, copy_req(&src, Some(&vm), "westus2"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let made = w2.arm.point(&copy_point(&vm, "westus2", T0)).unwrap();
    let meta = made.properties.unwrap().source_metadata.unwrap();
    let sp = &meta["storageProfile"];
    let enc = |d: &serde_json::Value| d["diskRestorePoint"]["encryption"].clone();
    assert_eq!(enc(&sp["osDisk"])["diskEncryptionSet"]["id"], DES_WEST);
    assert_eq!(
        enc(&sp["osDisk"])["type"],
        "EncryptionAtRestWithCustomerKey"
    );
    assert!(
        enc(&sp["dataDisks"][0]).is_null(),
        "LUN 0 uses platform keys"
    );
    assert_eq!(
        enc(&sp["dataDisks"][1])["diskEncryptionSet"]["id"],
        DES_WEST
    );
    assert!(
        sp["dataDisks"][1]["lun"].is_null(),
        "lun is read-only: not sent"
    );
}

/// Azure copies a source into a region once: a copy already made under another name (here a
/// retry's `-r1` that did not fail after all) is the copy, polled, not a second PUT.
#[tokio::test]
async fn a_source_already_copied_under_another_name_is_not_copied_again() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let src = point(&vm, T0, 0);
    w.arm.add_point(&src, "Succeeded", T0, None, &[]);
    let target_c = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&target_c, "westus2", &collection(&vm));
    let earlier = target_c.child("restorePoints", &names::restore_point_name(T0, 1));
    w.arm
        .add_point(&earlier, "Succeeded", T0, Some(&src), &[100, 100]);

    let out = copy(&w, copy_req(&src, Some(&vm), "westus2"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    assert!(out.summary.contains("already copied"), "{}", out.summary);
    assert_eq!(
        w.arm.count(op::PUT_POINT),
        0,
        "no second copy of the source"
    );
    let p = only_poll(&w.bus.take());
    assert_eq!(p.target, earlier);

    // A failed earlier copy does not count: the copy is made.
    w.arm.set_point_state(&earlier, "Failed");
    let out = copy(&w, copy_req(&src, Some(&vm), "westus2"), T0 + hours(2)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(w.arm.count(op::PUT_POINT), 1);
    w.bus.take();

    // Nor does a copy whose replication failed (terminated after two weeks: still Succeeded).
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    w.arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    w.arm.add_point(&src, "Succeeded", T0, None, &[]);
    w.arm.add_collection(&target_c, "westus2", &collection(&vm));
    w.arm
        .add_point(&earlier, "Succeeded", T0, Some(&src), &[100, 30]);
    w.arm.fail_replication(&earlier, 1);
    let out = copy(&w, copy_req(&src, Some(&vm), "westus2"), T0 + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
}

/// The per-region limit of copies in flight answers 429: transient, rescheduled after ARM's
/// Retry-After, never reported.
#[tokio::test]
async fn a_copy_refused_by_the_in_flight_limit_is_rescheduled() {
    let w = world(testing::policy(vec![rule_s1(3, &["westus2"])]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    let src = point(&vm, T0, 0);
    w.arm.add_point(&src, "Succeeded", T0, None, &[]);
    w.arm.throttle_next(op::PUT_POINT, 600);
    let now = T0 + hours(1);
    let out = copy(&w, copy_req(&src, Some(&vm), "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let sent = w.bus.take();
    let [m] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    let QueueMessage::Copy(again) = decode(m) else {
        panic!("a copy")
    };
    assert_eq!((again.attempt, again.retry), (1, 0), "same copy, same name");
    assert!(m.not_before.unwrap() >= now + Duration::from_secs(600));
}

/// Regression (CI, chaos `three_instances_share_the_work_and_each_kill_hits_one`: a kill made one
/// VM's 04:00 point land at 05:18, and its 08:00 create, refused by Azure's 3 h spacing, was
/// reported lost): a create refused because the VM's previous point is too recent waits until
/// the spacing allows it, when that is before this tick's supersede cut-off; after it, reports.
#[tokio::test]
async fn a_create_refused_for_spacing_waits_for_the_previous_point_when_the_tick_allows() {
    let tick = datetime!(2026-11-25 04:00:00 UTC);
    for (previous_at, waits) in [
        (datetime!(2026-11-25 01:18:00 UTC), true),
        (datetime!(2026-11-25 02:30:00 UTC), false),
    ] {
        let mut rule = rule_s1(3, &[]);
        rule.schedule = Some("0 0 */4 * * *".into());
        rule.consistency = vmrp::azure::models::ConsistencyMode::ApplicationConsistent;
        let w = world(testing::policy(vec![rule]));
        w.arm.set_now(tick);
        let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
        w.arm.add_collection(&collection(&vm), "eastus", &vm);
        let previous = point(&vm, tick - hours(4), 0);
        w.arm
            .add_point(&previous, "Succeeded", previous_at, None, &[]);
        w.arm.refuse_next(
            op::PUT_POINT,
            400,
            "OperationNotAllowed",
            "Restore points of VM 'vm1' must be at least 180 minutes apart",
        );
        let now = tick + Duration::from_secs(60);
        let out = create(&w, create_req(&vm, tick), now).await.unwrap();
        let sent = w.bus.take();
        if waits {
            assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
            assert_eq!(sent.len(), 1);
            assert_eq!(
                sent[0].not_before,
                Some(previous_at + hours(3) + time::Duration::MINUTE),
                "sent again once the spacing allows it"
            );
        } else {
            assert_eq!(out.status, Status::Reported, "{}", out.summary);
            assert!(sent.is_empty(), "past the cut-off: nothing to wait for");
        }
    }
}

/// Regression (CI, chaos: a 04:00 create whose reads and in-call retries carried it to 06:06 PUT
/// its point there, and the VM's 08:00 point was refused by Azure's spacing): the supersede
/// cut-off is checked again just before the write, on ARM's clock.
#[tokio::test]
async fn a_create_past_its_cut_off_by_the_time_of_its_write_is_superseded_not_written() {
    let tick = datetime!(2026-11-25 04:00:00 UTC);
    let mut rule = rule_s1(3, &[]);
    rule.schedule = Some("0 0 */4 * * *".into());
    rule.consistency = vmrp::azure::models::ConsistencyMode::ApplicationConsistent;
    let w = world(testing::policy(vec![rule]));
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    // The invocation starts inside the window; ARM's clock (its `Date` on the last answer) has
    // passed the 05:00 cut-off.
    w.arm.report_rate_limits(vmrp::azure::RateLimits {
        date: Some(tick + hours(2)),
        ..Default::default()
    });
    let out = create(&w, create_req(&vm, tick), tick + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(out.summary.contains("superseded by it"), "{}", out.summary);
    assert_eq!(
        w.arm.count(op::PUT_POINT),
        0,
        "nothing written past the cut-off"
    );
}
