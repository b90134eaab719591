//! Correct across handler instances (issue "correct at scale"): every ARM caller paces itself
//! from the budget ARM reported, copies into a region stay in creation order whichever instance
//! handles which copy message, and the per-process cache is only an optimisation. Two `Deps`
//! with separate caches over one FakeArm stand for two instances.

use std::sync::Arc;

use time::macros::datetime;
use time::OffsetDateTime;

use vmrp::azure::{OutgoingMessage, RateLimits, ResourceId};
use vmrp::functions::{self, Deps};
use vmrp::invocation::{Context, Invocation, Outcome, Status};
use vmrp::messages::{CopyRequest, PollRequest, QueueMessage, Role};
use vmrp::names;
use vmrp::policy::{CopyTarget, Rule};
use vmrp::testing::{self, op, FakeArm, FakeScheduler, VmBuilder};

const T0: OffsetDateTime = datetime!(2026-11-25 03:00:00 UTC);
const HOURLY: &str = "0 0 * * * *";

struct World {
    arm: Arc<FakeArm>,
    bus: Arc<FakeScheduler>,
    /// Two handler instances: same ARM and queues, each its own cache.
    a: Deps,
    b: Deps,
}

fn rule_s1(copies: &[&str]) -> Rule {
    let mut r = testing::rule("prod", 3);
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

fn world(rule: Rule) -> World {
    let arm = Arc::new(FakeArm::new());
    arm.set_now(T0);
    let bus = Arc::new(FakeScheduler::new());
    let policy = Arc::new(testing::policy(vec![rule]));
    let a = Deps::new(arm.clone(), bus.clone(), policy.clone(), HOURLY);
    let b = Deps::new(arm.clone(), bus.clone(), policy, HOURLY);
    World { arm, bus, a, b }
}

/// VM `name` in eastus (subscription s1), with its collection and a settled point at each of
/// `ticks`.
fn vm_with_points(w: &World, name: &str, ticks: &[OffsetDateTime]) -> ResourceId {
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", name).location("eastus").build());
    w.arm.add_collection(&collection(&vm), "eastus", &vm);
    for t in ticks {
        w.arm.add_point(&point(&vm, *t), "Succeeded", *t, None, &[]);
    }
    vm
}

fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

fn collection(vm: &ResourceId) -> ResourceId {
    names::collection_id(vm, None).unwrap()
}

fn point(vm: &ResourceId, tick: OffsetDateTime) -> ResourceId {
    collection(vm).child("restorePoints", &names::restore_point_name(tick, 0))
}

fn copy_point(vm: &ResourceId, region: &str, tick: OffsetDateTime) -> ResourceId {
    names::copy_collection_id(vm, region, None)
        .unwrap()
        .child("restorePoints", &names::restore_point_name(tick, 0))
}

fn copy_req(source: &ResourceId, vm: &ResourceId, region: &str) -> CopyRequest {
    CopyRequest {
        source: source.clone(),
        target_region: region.into(),
        target_resource_group: None,
        vm: Some(vm.clone()),
        rule: Some("prod".into()),
        retry: 0,
        attempt: 0,
    }
}

async fn copy(deps: &Deps, req: CopyRequest, now: OffsetDateTime) -> Outcome {
    functions::start_cross_region_copy::handle(
        Invocation::new(req, Context::new(functions::START_CROSS_REGION_COPY, now)),
        deps,
    )
    .await
    .expect("copy handler succeeds")
}

async fn poll(deps: &Deps, req: PollRequest, now: OffsetDateTime) -> Outcome {
    functions::poll_restore_point::handle(
        Invocation::new(req, Context::new(functions::POLL_RESTORE_POINT, now)),
        deps,
    )
    .await
    .expect("poll handler succeeds")
}

fn decode(m: &OutgoingMessage) -> QueueMessage {
    QueueMessage::decode(&m.body).expect("valid message")
}

fn the_copy(sent: &[OutgoingMessage]) -> CopyRequest {
    let copies: Vec<CopyRequest> = sent
        .iter()
        .filter_map(|m| match decode(m) {
            QueueMessage::Copy(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies.len(), 1, "one copy message: {sent:?}");
    copies.into_iter().next().unwrap()
}

/// The order the copies were PUT in.
fn copy_puts(arm: &FakeArm) -> Vec<String> {
    arm.calls()
        .into_iter()
        .filter(|c| c.op == op::PUT_POINT)
        .map(|c| c.target)
        .collect()
}

/// Regression: two copy messages for two ticks of one VM and region, the newer handled first
/// (another instance took it first): on the old code t2 was copied at once and t1's copy was
/// then reported "superseded" for good. Now the newer message copies t1 first and waits; t1's
/// own message (on the other instance, whose cache knows nothing) finds its copy made; t2 goes
/// when t1 has replicated. Both end copied, in creation order, nothing reported.
#[tokio::test]
async fn copies_handled_newest_first_on_two_instances_still_go_in_creation_order() {
    let w = world(rule_s1(&["westus2"]));
    let (t1, t2) = (T0, T0 + hours(1));
    let vm = vm_with_points(&w, "vm1", &[t1, t2]);
    let now = t2 + time::Duration::minutes(10);

    // Instance B takes t2's message first.
    let out = copy(&w.b, copy_req(&point(&vm, t2), &vm, "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(out.summary.contains("goes first"), "{}", out.summary);
    assert_eq!(
        copy_puts(&w.arm),
        vec![copy_point(&vm, "westus2", t1).to_string()],
        "t1's copy started first"
    );
    let sent = w.bus.take();
    let waiting = the_copy(&sent);
    assert_eq!(waiting.source, point(&vm, t2));
    assert!(
        sent.iter()
            .any(|m| matches!(decode(m), QueueMessage::Poll(p)
            if p.target == copy_point(&vm, "westus2", t1) && p.role == Role::Copy)),
        "t1's copy is polled: {sent:?}"
    );

    // Instance A takes t1's own message: a replay, polled, not reported.
    let out = copy(&w.a, copy_req(&point(&vm, t1), &vm, "westus2"), now).await;
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    w.bus.take();

    // t2's message comes back while t1 still replicates: it waits.
    w.arm
        .set_replication(&copy_point(&vm, "westus2", t1), &[100, 40]);
    w.arm
        .set_point_state(&copy_point(&vm, "westus2", t1), "Succeeded");
    let out = copy(&w.a, waiting, now + time::Duration::minutes(10)).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let waiting = the_copy(&w.bus.take());

    // Replicated: t2 goes, after t1.
    w.arm
        .set_replication(&copy_point(&vm, "westus2", t1), &[100, 100]);
    let out = copy(&w.b, waiting, now + time::Duration::minutes(20)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(
        copy_puts(&w.arm),
        vec![
            copy_point(&vm, "westus2", t1).to_string(),
            copy_point(&vm, "westus2", t2).to_string()
        ],
        "creation order"
    );
}

/// Both messages handled at once on two instances (interleaved: both see an empty target):
/// both start the oldest point's copy, one of them as a replay; nothing is superseded.
#[tokio::test]
async fn interleaved_copies_on_two_instances_lose_no_copy() {
    let w = world(rule_s1(&["westus2"]));
    let (t1, t2) = (T0, T0 + hours(1));
    let vm = vm_with_points(&w, "vm1", &[t1, t2]);
    let now = t2 + time::Duration::minutes(10);
    let (o2, o1) = tokio::join!(
        copy(&w.b, copy_req(&point(&vm, t2), &vm, "westus2"), now),
        copy(&w.a, copy_req(&point(&vm, t1), &vm, "westus2"), now),
    );
    for o in [&o1, &o2] {
        assert_ne!(o.status, Status::Reported, "{}", o.summary);
        assert!(!o.summary.contains("superseded"), "{}", o.summary);
    }
    assert!(w.arm.point(&copy_point(&vm, "westus2", t1)).is_some());
    // t2 is copied once t1 has replicated.
    let waiting = the_copy(&w.bus.take());
    assert_eq!(waiting.source, point(&vm, t2));
    w.arm
        .set_point_state(&copy_point(&vm, "westus2", t1), "Succeeded");
    w.arm
        .set_replication(&copy_point(&vm, "westus2", t1), &[100]);
    let out = copy(&w.a, waiting, now + hours(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&copy_point(&vm, "westus2", t2)).is_some());
}

/// An older point outside the lookback, or older than the region's newest copy, is not copied
/// first (it can never be, or was never asked for); a Failed one neither.
#[test]
fn older_uncopied_picks_the_oldest_settled_point_between_the_newest_copy_and_ours() {
    use vmrp::azure::models::RestorePoint;
    use vmrp::functions::start_cross_region_copy::older_uncopied;
    let vm = testing::vm_id("s1", "rg", "vm1");
    let local = |tick: OffsetDateTime, state: &str| {
        let mut p = RestorePoint::local(None, &[]);
        p.id = Some(point(&vm, tick).to_string());
        p.properties
            .get_or_insert_with(Default::default)
            .provisioning_state = Some(state.into());
        p
    };
    let copied = |tick: OffsetDateTime| {
        let mut p = RestorePoint::copy_of(&point(&vm, tick));
        p.id = Some(copy_point(&vm, "westus2", tick).to_string());
        p
    };
    let t = |h: i64| T0 + hours(h);
    let now = t(30);
    let ours = point(&vm, t(29));
    // (case, source points, target points, want)
    type Case = (
        &'static str,
        Vec<RestorePoint>,
        Vec<RestorePoint>,
        Option<OffsetDateTime>,
    );
    let table: Vec<Case> = vec![
        (
            "nothing older",
            vec![local(t(29), "Succeeded")],
            vec![],
            None,
        ),
        (
            "two older uncopied: the oldest",
            vec![
                local(t(27), "Succeeded"),
                local(t(28), "Succeeded"),
                local(t(29), "Succeeded"),
            ],
            vec![],
            Some(t(27)),
        ),
        (
            "older than the newest copy: never",
            vec![local(t(26), "Succeeded"), local(t(28), "Succeeded")],
            vec![copied(t(27))],
            Some(t(28)),
        ),
        (
            "already copied",
            vec![local(t(28), "Succeeded")],
            vec![copied(t(28))],
            None,
        ),
        (
            "Failed: not copied",
            vec![local(t(28), "Failed")],
            vec![],
            None,
        ),
        (
            "still creating: not copied",
            vec![local(t(28), "Creating")],
            vec![],
            None,
        ),
        (
            "older than the lookback",
            vec![local(t(4), "Succeeded")],
            vec![],
            None,
        ),
        (
            "newer than ours: not before ours",
            vec![local(t(30), "Succeeded")],
            vec![],
            None,
        ),
    ];
    for (case, source, target, want) in table {
        assert_eq!(
            older_uncopied(&ours, &source, &target, now),
            want.map(|tick| point(&vm, tick)),
            "{case}"
        );
    }
}

fn copy_poll(vm: &ResourceId, target: &ResourceId, tick: OffsetDateTime) -> PollRequest {
    PollRequest {
        target: target.clone(),
        role: Role::Copy,
        attempt: 3,
        first_seen: tick,
        deadline: tick + time::Duration::days(14),
        vm: vm.clone(),
        tick,
        rule: Some("prod".into()),
        retry: 0,
        copy_to: Vec::new(),
        source: Some(point(vm, tick)),
        target_region: Some("westus2".into()),
        prune_again: 0,
    }
}

/// A poll paces itself: when ARM last reported the subscription's read bucket nearly empty (below
/// what other tools keep plus the other instances' headroom), the poll goes back on the queue,
/// with the next poll's deterministic id and a delay from its message id, instead of reading
/// (on the old code it read anyway, into a 429). Once the bucket has refilled (time passes
/// since ARM's reading), it reads.
#[tokio::test]
async fn a_poll_reschedules_instead_of_reading_when_the_read_budget_is_low() {
    let w = world(rule_s1(&["westus2"]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    let target = copy_point(&vm, "westus2", T0);
    w.arm
        .add_point(&target, "Creating", T0, Some(&point(&vm, T0)), &[10]);
    let now = T0 + hours(1);
    w.arm.report_rate_limits_for(
        "s1",
        RateLimits {
            remaining_reads: Some(3),
            ..Default::default()
        }
        .dated(now),
    );
    let out = poll(&w.a, copy_poll(&vm, &target, T0), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(out.summary.contains("budget"), "{}", out.summary);
    assert_eq!(
        w.arm.count(op::GET_POINT),
        0,
        "no GET while the bucket is low"
    );
    let sent = w.bus.take();
    assert_eq!(sent.len(), 1);
    let QueueMessage::Poll(next) = decode(&sent[0]) else {
        panic!("a poll")
    };
    assert_eq!(next.attempt, 4);
    assert_eq!(
        sent[0].message_id,
        names::message_id("poll", target.as_str(), T0, 4),
        "the next poll's id, as any requeue: a replay is dropped by duplicate detection"
    );
    let at = sent[0].not_before.expect("scheduled");
    assert!(at > now && at <= now + time::Duration::seconds(61), "{at}");
    // A replay of the same message schedules the same thing.
    let again = poll(&w.b, copy_poll(&vm, &target, T0), now).await;
    assert_eq!(again.sent, out.sent);
    w.bus.take();

    // When it comes back, the same reading has aged: the bucket has refilled, it reads.
    let out = poll(&w.a, next, at).await;
    assert_eq!(w.arm.count(op::GET_POINT), 1, "{}", out.summary);

    // A full bucket never holds a poll back.
    w.arm.report_rate_limits_for(
        "s1",
        RateLimits {
            remaining_reads: Some(250),
            ..Default::default()
        }
        .dated(now),
    );
    poll(&w.a, copy_poll(&vm, &target, T0), now).await;
    assert_eq!(w.arm.count(op::GET_POINT), 2);
}

/// A copy paces itself too: a nearly empty write bucket puts it back (same id scheme as any
/// reschedule), without a read or a write.
#[tokio::test]
async fn a_copy_reschedules_instead_of_calling_when_the_write_budget_is_low() {
    let w = world(rule_s1(&["westus2"]));
    let vm = vm_with_points(&w, "vm1", &[T0]);
    let now = T0 + hours(1);
    w.arm.report_rate_limits_for(
        "s1",
        RateLimits {
            remaining_reads: Some(250),
            remaining_writes: Some(5),
            ..Default::default()
        }
        .dated(now),
    );
    let out = copy(&w.a, copy_req(&point(&vm, T0), &vm, "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(w.arm.calls().is_empty(), "{:?}", w.arm.calls());
    let again = the_copy(&w.bus.take());
    assert_eq!(again.attempt, 1);
}

/// Regression: a region at Compute's copy-in-flight limit answers a copy PUT with 429 and a
/// 10-minute `Retry-After`. On the old code every copy message asked again (its own 429) the
/// moment it came back, and all those refused by one wave came back at the same second. Now the
/// instance that saw the refusal puts its other copies into that region (same subscription) back
/// without calling ARM for four `Retry-After`s (the bare one earned another refusal: no copy
/// there can finish that soon); another region, or another instance that has not seen the
/// refusal, still asks.
#[tokio::test]
async fn a_copy_refused_at_the_regions_limit_holds_that_regions_copies_on_this_instance() {
    let w = world(rule_s1(&["westus2", "centralus"]));
    let vm = vm_with_points(&w, "vm1", &[T0]);
    let vm2 = vm_with_points(&w, "vm2", &[T0]);
    let now = T0 + hours(1);

    // vm1's copy into westus2 is refused: region at its limit, Retry-After 600 s.
    w.arm.throttle_next(op::PUT_POINT, 600);
    let out = copy(&w.a, copy_req(&point(&vm, T0), &vm, "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let back = w.bus.take();
    let not_before = back[0].not_before.expect("scheduled");
    assert!(
        not_before >= now + time::Duration::seconds(600),
        "not before the Retry-After: {not_before}"
    );

    // vm2's copy into the same region on the same instance: put back without a call.
    let calls = w.arm.calls().len();
    let out = copy(&w.a, copy_req(&point(&vm2, T0), &vm2, "westus2"), now).await;
    assert_held_once(&out, &w.bus.take());
    assert_eq!(
        w.arm.calls().len(),
        calls,
        "no ARM call: {:?}",
        w.arm.calls()
    );

    // Another region, or another instance, still asks (and here is let through).
    let out = copy(&w.a, copy_req(&point(&vm2, T0), &vm2, "centralus"), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    w.bus.take();
    let out = copy(&w.b, copy_req(&point(&vm2, T0), &vm2, "westus2"), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    w.bus.take();

    // Past the bare Retry-After it still holds (no copy there can have finished); once four
    // have passed (`COPY_HOLD_FACTOR`), instance A asks again.
    let out = copy(
        &w.a,
        copy_req(&point(&vm2, T0), &vm2, "westus2"),
        now + time::Duration::seconds(601),
    )
    .await;
    assert_held_once(&out, &w.bus.take());
    let later = now + time::Duration::seconds(4 * 600 + 1);
    let out = copy(&w.a, copy_req(&point(&vm, T0), &vm, "westus2"), later).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&copy_point(&vm, "westus2", T0)).is_some());
}

/// Copy PUTs into one region take turns on an instance, and one that waited its turn while
/// another copy there was refused is held without a PUT of its own. Regression: a burst of copy
/// messages (a tick's points settling together) passed the instance's check at once and each
/// earned its own 429 (the 200-VM soak: 1,140 refusals over 8 subscription-regions).
#[tokio::test]
async fn a_copy_waiting_its_turn_while_another_is_refused_makes_no_put() {
    let w = world(rule_s1(&["westus2"]));
    let vm = vm_with_points(&w, "vm1", &[T0]);
    let now = T0 + hours(1);

    // Another invocation on this instance holds the lane, and is refused meanwhile.
    let lane = w.a.known.copy_lane("S1", "WestUS2");
    let turn = lane.lock().await;
    let other_refused = async {
        tokio::task::yield_now().await;
        w.a.known.remember_copies_refused(
            "s1",
            "westus2",
            now,
            std::time::Duration::from_secs(600),
        );
        drop(turn);
    };
    let (out, ()) = tokio::join!(
        copy(&w.a, copy_req(&point(&vm, T0), &vm, "westus2"), now),
        other_refused
    );
    assert_held_once(&out, &w.bus.take());
    assert!(copy_puts(&w.arm).is_empty(), "no PUT: {:?}", w.arm.calls());
}

/// While a region is held, a copy this instance saw finish there (its poll found every disk
/// replicated) frees one slot among Compute's copies in flight, and one held copy takes it
/// before the hold ends; the next is held again. Regression: the 2,000-VM soak over 20
/// subscriptions met 2,127 copy refusals (1.11 % of ARM requests), each instance asking a full
/// region again when its hold ended, whether or not a copy there had finished; copies that had
/// finished meanwhile left their slot unused until then.
#[tokio::test]
async fn a_copy_seen_finishing_in_a_held_region_lets_one_held_copy_take_its_slot() {
    let w = world(rule_s1(&["westus2"]));
    let vm1 = vm_with_points(&w, "vm1", &[T0]);
    let vm2 = vm_with_points(&w, "vm2", &[T0]);
    let vm3 = vm_with_points(&w, "vm3", &[T0]);
    let replicating = copy_point(&vm3, "westus2", T0);
    w.arm.add_point(
        &replicating,
        "Succeeded",
        T0,
        Some(&point(&vm3, T0)),
        &[100],
    );
    let now = T0 + hours(1);
    let minutes = |m: i64| now + time::Duration::minutes(m);

    w.arm.throttle_next(op::PUT_POINT, 600);
    let out = copy(&w.a, copy_req(&point(&vm1, T0), &vm1, "westus2"), now).await;
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    w.bus.take();

    // Instance A's poll finds vm3's copy there fully replicated.
    let out = poll(&w.a, copy_poll(&vm3, &replicating, T0), minutes(1)).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    w.bus.take();

    // Within the 10-minute hold, one copy into the region goes: vm2's.
    let out = copy(
        &w.a,
        copy_req(&point(&vm2, T0), &vm2, "westus2"),
        minutes(2),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&copy_point(&vm2, "westus2", T0)).is_some());
    w.bus.take();

    // The slot is taken: vm1's copy is held again, without a PUT.
    let puts = copy_puts(&w.arm).len();
    let out = copy(
        &w.a,
        copy_req(&point(&vm1, T0), &vm1, "westus2"),
        minutes(3),
    )
    .await;
    assert_held_once(&out, &w.bus.take());
    assert_eq!(copy_puts(&w.arm).len(), puts, "{:?}", w.arm.calls());
}

/// `out` put its copy back as held at a full region, once (`attempt` 1).
fn assert_held_once(out: &Outcome, sent: &[OutgoingMessage]) {
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(
        out.summary
            .contains(functions::start_cross_region_copy::COPY_LIMIT_WAIT),
        "{}",
        out.summary
    );
    assert_eq!(the_copy(sent).attempt, 1);
}

/// A copy that finds a newer point already copied into its region is reported either way, but
/// the reason tells a race (within the day the older-first rule looks back: "superseded") from a
/// backlog the copy step let go on purpose (more than a day behind: the newer point went first
/// so the region's newest copy stays recent). Regression: the soak's 1,624 "lost to ordering"
/// copies were all of the second kind (copies a day behind at Azure's copy limit).
#[tokio::test]
async fn a_copy_a_day_behind_is_dropped_from_the_backlog_not_lost_to_a_race() {
    let w = world(rule_s1(&["westus2"]));
    let (t1, t2) = (T0, T0 + hours(4));
    let vm = vm_with_points(&w, "vm1", &[t1, t2]);
    let target = names::copy_collection_id(&vm, "westus2", None).unwrap();
    w.arm.add_collection(&target, "westus2", &collection(&vm));
    w.arm.add_point(
        &copy_point(&vm, "westus2", t2),
        "Succeeded",
        t2,
        Some(&point(&vm, t2)),
        &[],
    );
    for (now, dropped) in [(t1 + hours(23), false), (t1 + hours(25), true)] {
        let out = copy(&w.a, copy_req(&point(&vm, t1), &vm, "westus2"), now).await;
        assert_eq!(out.status, Status::Reported, "{}", out.summary);
        assert_eq!(
            out.summary
                .contains(functions::start_cross_region_copy::COPY_BACKLOG_DROPPED),
            dropped,
            "{}",
            out.summary
        );
        assert_eq!(
            out.summary.contains("superseded"),
            !dropped,
            "{}",
            out.summary
        );
    }
}

// ------------------------------------------------------------------------------------------
// The cache is an optimisation: a stale entry on one instance costs at most a read.
// ------------------------------------------------------------------------------------------

fn vm_event(kind: &str, subject: &ResourceId, id: &str) -> vmrp::events::ResourceEvent {
    vmrp::events::ResourceEvent {
        schema: vmrp::events::EventSchema::EventGrid,
        id: id.into(),
        event_type: format!("Microsoft.Resources.{kind}"),
        subject: subject.to_string(),
        event_time: Some(T0),
        operation_name: None,
        data: serde_json::Value::Null,
    }
}

async fn on_event(deps: &Deps, e: vmrp::events::ResourceEvent, now: OffsetDateTime) -> Outcome {
    functions::on_vm_changed::handle(
        Invocation::new(e, Context::new(functions::ON_VM_CHANGED, now)),
        deps,
    )
    .await
    .expect("event handled")
}

fn orphan_mark(arm: &FakeArm, id: &ResourceId) -> Option<String> {
    arm.collection(id)
        .and_then(|c| c.tags)
        .and_then(|t| t.get(functions::TAG_ORPHANED_AT).cloned())
}

/// Regression: instance B onboarded a VM (its cache knows the collection); the VM is deleted
/// and instance A marks the collection orphaned; the VM is re-created under the same id and B
/// gets the event. On the old code B skipped it ("already onboarded", from its cache): the
/// re-created VM kept an orphan-marked collection. Now B reads the collection (one read) and,
/// finding the mark, onboards again, which removes it.
#[tokio::test]
async fn an_orphan_mark_set_on_another_instance_is_not_hidden_by_the_cache() {
    let w = world(rule_s1(&[]));
    let build = || VmBuilder::new("s1", "rg", "vm1").location("eastus").build();
    let vm = w.arm.add_vm(build());
    let out = on_event(&w.b, vm_event("ResourceWriteSuccess", &vm, "e1"), T0).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.collection(&collection(&vm)).is_some());
    w.bus.take();

    w.arm.remove_vm(&vm);
    let out = on_event(
        &w.a,
        vm_event("ResourceDeleteSuccess", &vm, "e2"),
        T0 + hours(1),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(orphan_mark(&w.arm, &collection(&vm)).is_some(), "marked");

    w.arm.add_vm(build());
    let out = on_event(
        &w.b,
        vm_event("ResourceWriteSuccess", &vm, "e3"),
        T0 + hours(2),
    )
    .await;
    assert_ne!(out.status, Status::Skipped, "{}", out.summary);
    assert_eq!(
        orphan_mark(&w.arm, &collection(&vm)),
        None,
        "the re-created VM's collection is no orphan"
    );

    // A fresh entry still saves the onboarding work: one collection read, no VM read, no write.
    w.arm.clear_calls();
    let out = on_event(
        &w.b,
        vm_event("ResourceWriteSuccess", &vm, "e4"),
        T0 + hours(3),
    )
    .await;
    assert_eq!(out.status, Status::Skipped, "{}", out.summary);
    let ops: Vec<&str> = w.arm.calls().iter().map(|c| c.op).collect();
    assert_eq!(ops, vec![op::GET_COLLECTION]);
}

/// Regression: instance B's cache knows the VM's collection; it is deleted meanwhile (on
/// another instance, or by hand) and the timer's listing, in B's next create, says it is
/// missing. On the old code B believed its cache: the point PUT was refused (parent not found)
/// and the create rescheduled. Now the listing wins: the collection is made again and the point
/// created in the same invocation.
#[tokio::test]
async fn a_collection_the_listing_shows_missing_is_not_taken_from_the_cache() {
    use vmrp::messages::{CollectionSeen, CreateRequest, ListedVm};
    let w = world(rule_s1(&[]));
    let built = VmBuilder::new("s1", "rg", "vm1").location("eastus").build();
    let vm = w.arm.add_vm(built.clone());
    let create = |tick: OffsetDateTime, listed: Option<CollectionSeen>| CreateRequest {
        vm: vm.clone(),
        tick,
        rule: None,
        consistency_mode: None,
        exclude_disks: None,
        copy_to: None,
        retry: 0,
        attempt: 0,
        paced: 0,
        listed: listed.map(|collection| {
            Box::new(ListedVm {
                at: tick,
                vm: built.clone(),
                disks: Vec::new(),
                collection: Some(collection),
                planned_for: None,
            })
        }),
    };
    let run = |req: CreateRequest, now: OffsetDateTime| {
        functions::create_restore_point::handle(
            Invocation::new(req, Context::new(functions::CREATE_RESTORE_POINT, now)),
            &w.b,
        )
    };
    let out = run(create(T0, None), T0).await.unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    w.arm.set_point_state(&point(&vm, T0), "Succeeded");
    w.bus.take();

    vmrp::azure::Arm::delete_collection(w.arm.as_ref(), &collection(&vm))
        .await
        .unwrap();
    let t1 = T0 + hours(1);
    let out = run(create(t1, Some(CollectionSeen::Missing)), t1)
        .await
        .unwrap();
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(w.arm.point(&point(&vm, t1)).is_some());
}

/// Pacing put-backs are not refusals: a create its own pacing put back as often as the
/// reschedule budget allows still gets its reschedules when ARM then refuses it (when every
/// put-back counted, the first 429 after a busy stretch gave the point up), and its backoff
/// starts from its refusals; pacing counts what it did in `paced`. Refusals alone still give up
/// at the budget.
#[tokio::test]
async fn pacing_put_backs_do_not_spend_the_reschedule_budget() {
    use vmrp::messages::CreateRequest;
    let w = world(rule_s1(&[]));
    let vm = w
        .arm
        .add_vm(VmBuilder::new("s1", "rg", "vm1").location("eastus").build());
    let now = T0 + time::Duration::minutes(5);
    let req = |attempt, paced| CreateRequest {
        paced,
        attempt,
        ..CreateRequest::for_tick(vm.clone(), T0, "prod")
    };
    let create = |req: CreateRequest| {
        functions::create_restore_point::handle(
            Invocation::new(req, Context::new(functions::CREATE_RESTORE_POINT, now)),
            &w.a,
        )
    };
    let the_create = |sent: &[OutgoingMessage]| match sent {
        [m] => match decode(m) {
            QueueMessage::Create(c) => c,
            other => panic!("a create, got {other:?}"),
        },
        other => panic!("one message, got {other:?}"),
    };
    let limits = |writes| {
        RateLimits {
            remaining_reads: Some(12_000),
            remaining_writes: Some(writes),
            ..Default::default()
        }
        .dated(now)
    };

    // A low write bucket: put back by pacing, counted as such.
    w.arm.report_rate_limits_for("s1", limits(5));
    let out = create(req(3, 1)).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    assert!(w.arm.calls().is_empty(), "{:?}", w.arm.calls());
    let again = the_create(&w.bus.take());
    assert_eq!((again.attempt, again.paced), (4, 2));

    // The bucket refilled; ARM refuses the PUT for now. All earlier put-backs were pacing's.
    w.arm.report_rate_limits_for("s1", limits(1_200));
    let max = w.a.tuning.max_reschedules;
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = create(req(max, max)).await.unwrap();
    assert_eq!(out.status, Status::Rescheduled, "{}", out.summary);
    let again = the_create(&w.bus.take());
    assert_eq!((again.attempt, again.paced), (max + 1, max));

    // As many refusals as the budget allows: given up, as before.
    w.arm.throttle_next(op::PUT_POINT, 30);
    let out = create(req(max, 0)).await.unwrap();
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary
            .contains(&format!("gave up after {max} reschedules")),
        "{}",
        out.summary
    );
    assert!(w.bus.take().is_empty());
}
