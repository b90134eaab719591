//! Careless or hostile input: a message cannot get around the policy (a named rule
//! still selects the VM; a tick is an occurrence or a valid on-demand request), a forged event
//! time does not mark collections orphaned for good, far values are refused instead of
//! panicking, and the largest message vmrp sends fits Service Bus.

use std::sync::Arc;

use time::macros::datetime;
use time::OffsetDateTime;

use vmrp::azure::models::{ConsistencyMode, RestorePointCollection, Tags};
use vmrp::azure::ResourceId;
use vmrp::events::{EventSchema, ResourceEvent};
use vmrp::functions::{self, Deps, TAG_ORPHANED_AT, TAG_VM};
use vmrp::invocation::{Context, Invocation, Outcome, Status};
use vmrp::messages::{CopyRequest, CreateRequest, QueueMessage, MAX_MESSAGE_BYTES};
use vmrp::names;
use vmrp::policy::{CopyTarget, Policy, Rule};
use vmrp::testing::{self, disk, disk_id, op, FakeArm, FakeScheduler, VmBuilder};

/// Every 4 hours, like the default timer.
const EVERY_4H: &str = "0 0 */4 * * *";

struct World {
    arm: Arc<FakeArm>,
    bus: Arc<FakeScheduler>,
    deps: Deps,
}

fn world(policy: Policy, schedule: &str, now: OffsetDateTime) -> World {
    let arm = Arc::new(FakeArm::new());
    arm.set_now(now);
    let bus = Arc::new(FakeScheduler::new());
    let deps = Deps::new(arm.clone(), bus.clone(), Arc::new(policy), schedule);
    World { arm, bus, deps }
}

fn inv<T>(event: T, function: &str, now: OffsetDateTime) -> Invocation<T> {
    Invocation::new(event, Context::new(function, now))
}

fn create_req(vm: &ResourceId, tick: OffsetDateTime, rule: Option<&str>) -> CreateRequest {
    let mut c = CreateRequest::for_tick(vm.clone(), tick, "unused");
    c.rule = rule.map(str::to_string);
    c
}

async fn create(w: &World, req: CreateRequest, now: OffsetDateTime) -> Outcome {
    functions::create_restore_point::handle(inv(req, functions::CREATE_RESTORE_POINT, now), &w.deps)
        .await
        .expect("the create handler answers")
}

fn points_of(w: &World, vm: &ResourceId) -> Vec<String> {
    w.arm
        .point_ids(&names::collection_id(vm, None).unwrap())
        .iter()
        .filter_map(|p| p.name().map(str::to_string))
        .collect()
}

/// Rule "all" over subscription s1, for VMs tagged `backup=*` that do not opt out with
/// `backup-optout=*`.
fn tagged_rule() -> Rule {
    let mut r = testing::rule("all", 3);
    r.targets.subscriptions = vec!["s1".into()];
    r.targets.tags = [("backup".to_string(), "*".to_string())].into();
    r.targets.exclude_tags = [("backup-optout".to_string(), "*".to_string())].into();
    r
}

// ---------------------------------------------------------------------------------------------
// A named rule must still select the VM
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn naming_a_rule_does_not_skip_its_required_tag() {
    let t = datetime!(2026-11-25 04:00 UTC);
    let w = world(testing::policy(vec![tagged_rule()]), EVERY_4H, t);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "untagged").build());

    // Without a rule: refused, as before.
    let out = create(&w, create_req(&vm, t, None), t).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    // Naming the rule used to create a point (and its copies) anyway.
    let out = create(&w, create_req(&vm, t, Some("all")), t).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("does not select this VM")
            && out.summary.contains("required tag backup=*"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 0);
    assert!(w.bus.sent().is_empty());

    // A VM the rule does select is served when named.
    let ok = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "tagged")
            .tag("backup", "yes")
            .build(),
    );
    let out = create(&w, create_req(&ok, t, Some("all")), t).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
}

#[tokio::test]
async fn naming_a_rule_does_not_override_an_exclude_tags_opt_out() {
    let t = datetime!(2026-11-25 04:00 UTC);
    let w = world(testing::policy(vec![tagged_rule()]), EVERY_4H, t);
    let vm = w.arm.add_vm(
        VmBuilder::new("s1", "rg", "opted-out")
            .tag("backup", "yes")
            .tag("Backup-OptOut", "true")
            .build(),
    );
    let out = create(&w, create_req(&vm, t, Some("all")), t).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("opts out"),
        "names the opt-out: {}",
        out.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 0);
}

#[tokio::test]
async fn a_copy_naming_a_rule_outside_whose_scopes_the_vm_lies_is_refused() {
    let t = datetime!(2026-11-25 04:00 UTC);
    let mut narrow = testing::rule("narrow", 3);
    narrow.targets.subscriptions = vec!["s2".into()];
    narrow.copies = vec![CopyTarget {
        region: "westus2".into(),
        resource_group: None,
        retention: None,
        encryption_sets: Default::default(),
    }];
    let mut own = testing::rule("own", 3);
    own.targets.subscriptions = vec!["s1".into()];
    let w = world(testing::policy(vec![own, narrow]), EVERY_4H, t);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let source = names::collection_id(&vm, None)
        .unwrap()
        .child("restorePoints", "rp-20261125T0400Z");
    w.arm
        .add_collection(&names::collection_id(&vm, None).unwrap(), "eastus", &vm);
    w.arm.add_point(&source, "Succeeded", t, None, &[]);
    let req = CopyRequest {
        source: source.clone(),
        target_region: "westus2".into(),
        target_resource_group: None,
        vm: Some(vm.clone()),
        rule: Some("narrow".into()),
        retry: 0,
        attempt: 0,
    };
    let out = functions::start_cross_region_copy::handle(
        inv(req, functions::START_CROSS_REGION_COPY, t),
        &w.deps,
    )
    .await
    .unwrap();
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("outside the rule's scopes"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 0);
}

// ---------------------------------------------------------------------------------------------
// Ticks are checked against the schedule
// ---------------------------------------------------------------------------------------------

/// The issue's case: a create for 01:00 (not an occurrence of a 4-hourly schedule) handled at
/// 02:20 took a point that made Azure refuse the 04:00 tick's ("at least 180 minutes apart").
#[tokio::test]
async fn a_tick_that_is_no_occurrence_and_no_valid_on_demand_request_is_refused() {
    let mut rule = testing::rule("app", 3);
    rule.consistency = ConsistencyMode::ApplicationConsistent;
    let now = datetime!(2026-11-25 02:20 UTC);
    let w = world(testing::policy(vec![rule]), EVERY_4H, now);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let out = create(
        &w,
        create_req(&vm, datetime!(2026-11-25 01:00 UTC), None),
        now,
    )
    .await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("not an occurrence") && out.summary.contains("too old"),
        "{}",
        out.summary
    );
    // Asked at 02:20 for 02:20 (a fresh on-demand request): still refused, it would come
    // 100 min before the 04:00 point and 140 min after the 00:00 one (spacing 180 min).
    let out = create(&w, create_req(&vm, now, None), now).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(
        out.summary.contains("next scheduled point"),
        "{}",
        out.summary
    );
    assert_eq!(w.arm.count(op::PUT_POINT), 0);
    assert!(points_of(&w, &vm).is_empty());
}

#[tokio::test]
async fn an_on_demand_create_gets_its_own_name_when_it_is_spaced_from_the_schedule() {
    // Crash-consistent: 60 min apart at least.
    let rule = testing::rule("crash", 3);
    let w = world(
        testing::policy(vec![rule]),
        EVERY_4H,
        datetime!(2026-11-25 01:30 UTC),
    );
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let asked = datetime!(2026-11-25 01:29:40 UTC);
    let out = create(
        &w,
        create_req(&vm, asked, None),
        datetime!(2026-11-25 01:30 UTC),
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(points_of(&w, &vm), vec!["rp-20261125T0129Z-od".to_string()]);
    // The first poll carries the tick, so the chain (and a retry) keeps the on-demand name.
    let QueueMessage::Poll(p) = QueueMessage::decode(&w.bus.sent()[0].body).unwrap() else {
        panic!("a poll")
    };
    assert_eq!(p.tick, asked);

    // Within an hour of a scheduled point, either side: refused.
    for (asked, why) in [
        (datetime!(2026-11-25 03:20 UTC), "next scheduled point"),
        (
            datetime!(2026-11-25 04:30 UTC),
            "after the rule's scheduled point",
        ),
    ] {
        let out = create(&w, create_req(&vm, asked, None), asked).await;
        assert_eq!(out.status, Status::Reported, "{asked}: {}", out.summary);
        assert!(out.summary.contains(why), "{asked}: {}", out.summary);
    }
    // A scheduled occurrence keeps the scheduled name.
    let on_demand = names::collection_id(&vm, None)
        .unwrap()
        .child("restorePoints", "rp-20261125T0129Z-od");
    w.arm.set_point_state(&on_demand, "Succeeded");
    let tick = datetime!(2026-11-25 08:00 UTC);
    let out = create(&w, create_req(&vm, tick, None), tick).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(points_of(&w, &vm).contains(&"rp-20261125T0800Z".to_string()));
}

#[tokio::test]
async fn a_rule_with_its_own_schedule_takes_only_its_own_occurrences() {
    // Daily at 02:30, run at the 4-hourly timer's ticks: due at 04:00 only.
    let mut rule = testing::rule("daily", 3);
    rule.schedule = Some("0 30 2 * * *".into());
    let now = datetime!(2026-11-25 08:00 UTC);
    let w = world(testing::policy(vec![rule]), EVERY_4H, now);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    // 04:00 is an occurrence (the first timer tick after 02:30).
    let out = create(
        &w,
        create_req(&vm, datetime!(2026-11-25 04:00 UTC), None),
        now,
    )
    .await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert_eq!(points_of(&w, &vm), vec!["rp-20261125T0400Z".to_string()]);
    // 08:00 is a timer tick, but not one at which the rule is due: asked at 08:00 it is an
    // on-demand point (4 h after the 04:00 one), never a scheduled one.
    let scheduled = names::collection_id(&vm, None)
        .unwrap()
        .child("restorePoints", "rp-20261125T0400Z");
    w.arm.set_point_state(&scheduled, "Succeeded");
    let out = create(&w, create_req(&vm, now, None), now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    assert!(
        points_of(&w, &vm).contains(&"rp-20261125T0800Z-od".to_string()),
        "{:?}",
        points_of(&w, &vm)
    );
    // The same request handled two hours later is neither.
    let late = datetime!(2026-11-25 10:00 UTC);
    let out = create(&w, create_req(&vm, now, None), late).await;
    assert_eq!(out.status, Status::Reported, "{}", out.summary);
    assert!(out.summary.contains("rule schedule"), "{}", out.summary);
}

#[tokio::test]
async fn ticks_in_the_future_and_at_the_end_of_time_are_refused_without_a_panic() {
    let now = datetime!(2026-11-25 04:00 UTC);
    let w = world(testing::policy(vec![testing::rule("r", 3)]), EVERY_4H, now);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    // An occurrence a day ahead would take tomorrow's point today.
    for tick in [
        datetime!(2026-11-26 04:00 UTC),
        datetime!(9999-12-31 23:59:59 UTC),
    ] {
        let out = create(&w, create_req(&vm, tick, None), now).await;
        assert_eq!(out.status, Status::Reported, "{tick}: {}", out.summary);
        assert!(out.summary.contains("in the future"), "{}", out.summary);
    }
    // The decoder takes the far tick; the handler refused it above instead of panicking
    // in the schedule arithmetic.
    let text = r#"{"v":1,"kind":"create","vm":"/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1","tick":"9999-12-31T23:59:59Z"}"#;
    assert!(QueueMessage::decode(text).is_ok());
    assert_eq!(w.arm.count(op::PUT_POINT), 0);
}

#[tokio::test]
async fn onboarding_asks_for_the_rules_latest_occurrence() {
    let mut rule = testing::rule("daily", 3);
    rule.schedule = Some("0 30 2 * * *".into());
    let now = datetime!(2026-11-25 10:15 UTC);
    let w = world(testing::policy(vec![rule]), EVERY_4H, now);
    let vm = w.arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let event = ResourceEvent {
        schema: EventSchema::EventGrid,
        id: "w1".into(),
        event_type: "Microsoft.Resources.ResourceWriteSuccess".into(),
        subject: vm.to_string(),
        event_time: Some(now),
        operation_name: None,
        data: serde_json::Value::Null,
    };
    functions::on_vm_changed::handle(inv(event, functions::ON_VM_CHANGED, now), &w.deps)
        .await
        .unwrap();
    let sent = w.bus.take();
    let QueueMessage::Create(c) = QueueMessage::decode(&sent[0].body).unwrap() else {
        panic!("a create")
    };
    // Was the timer's latest tick (08:00), at which this rule is not due.
    assert_eq!(c.tick, datetime!(2026-11-25 04:00 UTC));
    let out = create(&w, c, now).await;
    assert_eq!(out.status, Status::Done, "{}", out.summary);
}

// ---------------------------------------------------------------------------------------------
// Event times from the future
// ---------------------------------------------------------------------------------------------

fn delete_event(vm: &ResourceId, id: &str, at: OffsetDateTime) -> ResourceEvent {
    ResourceEvent {
        schema: EventSchema::EventGrid,
        id: id.into(),
        event_type: "Microsoft.Resources.ResourceDeleteSuccess".into(),
        subject: vm.to_string(),
        event_time: Some(at),
        operation_name: None,
        data: serde_json::Value::Null,
    }
}

fn orphan_mark(w: &World, vm: &ResourceId) -> Option<String> {
    w.arm
        .collection(&names::collection_id(vm, None).unwrap())?
        .tags?
        .get(TAG_ORPHANED_AT)
        .cloned()
}

#[tokio::test]
async fn a_delete_event_from_the_future_is_clamped_and_a_real_one_corrects_an_old_mark() {
    let now = datetime!(2026-11-25 05:00 UTC);
    // Orphan marking lists collections in the scopes the policy targets (the role's scopes).
    let mut rule = testing::rule("r", 3);
    rule.targets.subscriptions = vec!["s1".into()];
    let w = world(testing::policy(vec![rule]), EVERY_4H, now);
    let vm = testing::vm_id("s1", "rg", "vm1");
    let collection = names::collection_id(&vm, None).unwrap();
    w.arm.add_collection(&collection, "eastus", &vm);
    let tagged = |mark: Option<&str>| {
        let mut tags = Tags::from([(TAG_VM.to_string(), vm.to_string())]);
        if let Some(m) = mark {
            tags.insert(TAG_ORPHANED_AT.to_string(), m.to_string());
        }
        RestorePointCollection::for_source("eastus", &vm, tags)
    };
    use vmrp::azure::Arm;
    w.arm
        .put_collection(&collection, &tagged(None))
        .await
        .unwrap();

    let far = datetime!(9999-12-31 00:00 UTC);
    functions::on_vm_changed::handle(
        inv(delete_event(&vm, "d1", far), functions::ON_VM_CHANGED, now),
        &w.deps,
    )
    .await
    .unwrap();
    // Was "9999-12-31T00:00:00Z": never expiring.
    assert_eq!(
        orphan_mark(&w, &vm).as_deref(),
        Some("2026-11-25T05:00:00Z")
    );

    // A collection marked in the future by an earlier build: the next real delete fixes it.
    w.arm
        .put_collection(&collection, &tagged(Some("9999-12-31T00:00:00Z")))
        .await
        .unwrap();
    let later = datetime!(2026-11-26 05:00 UTC);
    functions::on_vm_changed::handle(
        inv(
            delete_event(&vm, "d2", datetime!(2026-11-26 04:59 UTC)),
            functions::ON_VM_CHANGED,
            later,
        ),
        &w.deps,
    )
    .await
    .unwrap();
    assert_eq!(
        orphan_mark(&w, &vm).as_deref(),
        Some("2026-11-26T04:59:00Z")
    );

    // An earlier, readable mark stands: the first delete's time counts.
    functions::on_vm_changed::handle(
        inv(
            delete_event(&vm, "d3", datetime!(2026-11-27 00:00 UTC)),
            functions::ON_VM_CHANGED,
            datetime!(2026-11-27 00:00 UTC),
        ),
        &w.deps,
    )
    .await
    .unwrap();
    assert_eq!(
        orphan_mark(&w, &vm).as_deref(),
        Some("2026-11-26T04:59:00Z")
    );
}

// ---------------------------------------------------------------------------------------------
// The largest message vmrp sends
// ---------------------------------------------------------------------------------------------

/// A create carries the timer's listing of its VM. With Azure's maxima (64 data disks, 50 tags
/// of 512 + 256 characters on the VM and on each disk) that listing alone is megabytes: the
/// timer leaves it out, and the message stays under Service Bus Standard's 256 KB.
#[tokio::test]
async fn the_largest_create_message_fits_service_bus() {
    let now = datetime!(2026-11-25 04:00:05 UTC);
    for (tags, disks, listed_expected) in [(0, 64, true), (50, 64, false), (50, 0, true)] {
        let mut rule = testing::rule("r", 3);
        rule.targets.subscriptions = vec!["s1".into()];
        let w = world(testing::policy(vec![rule]), EVERY_4H, now);
        let mut b = VmBuilder::new("s1", "rg", &"v".repeat(64));
        let long_tags: Vec<(String, String)> = (0..tags)
            .map(|i| (format!("{i:03}{}", "k".repeat(509)), "v".repeat(256)))
            .collect();
        for (k, v) in &long_tags {
            b = b.tag(k, v);
        }
        for lun in 0..disks {
            let id = disk_id("s1", "rg", &format!("{}{lun:02}", "d".repeat(60)));
            b = b.data_disk(lun, &id, "Premium_LRS");
            let tag_refs: Vec<(&str, &str)> = long_tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            w.arm.add_disk(disk(&id, "Premium_LRS", None, &tag_refs));
        }
        w.arm.add_vm(b.build());
        // The subscription's planning invocation (the timer's fan-out sends it this message).
        let tick = vmrp::schedule::Schedule::parse(&w.deps.schedule)
            .unwrap()
            .latest_at_or_before(now)
            .unwrap();
        functions::plan_restore_points::handle(
            inv(
                vmrp::messages::PlanRequest {
                    subscription: "s1".into(),
                    tick,
                    attempt: 0,
                },
                functions::PLAN_RESTORE_POINTS,
                now,
            ),
            &w.deps,
        )
        .await
        .unwrap();
        let sent = w.bus.sent();
        assert_eq!(sent.len(), 1, "one create");
        let size = sent[0].body.len();
        println!("create message: {tags} tags, {disks} data disks: {size} bytes");
        assert!(size <= MAX_MESSAGE_BYTES, "{size} bytes");
        let QueueMessage::Create(c) = QueueMessage::decode(&sent[0].body).unwrap() else {
            panic!("a create")
        };
        assert_eq!(
            c.listed.is_some(),
            listed_expected,
            "{tags} tags, {disks} disks"
        );
    }
}
