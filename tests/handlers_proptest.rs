//! Property tests over every handler: any policy `policy check` accepts (generated
//! with extreme numbers, far schedules, odd regions, named rules), combined with any message the
//! decoder accepts (far ticks, huge retry and attempt numbers, odd regions, unknown or foreign
//! rule names), runs through the handlers against the fakes without a panic, and either acts
//! within the policy or refuses with a reason:
//! - every outcome and every error carries a reason;
//! - a local point is only ever created for a VM some rule's targets select, with a name of
//!   the tick's form (scheduled or on-demand), never for a tick in the future;
//! - every message sent decodes and fits Service Bus (256 KB).
//!
//! Case counts are modest so the file runs in seconds with the rest of `cargo test`.

use std::sync::Arc;

use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use vmrp::azure::models::{ConsistencyMode, VirtualMachine};
use vmrp::azure::ResourceId;
use vmrp::events::{EventSchema, ResourceEvent, TimerEvent};
use vmrp::functions::{self, Deps, HandlerError};
use vmrp::invocation::{Context, Invocation, Outcome};
use vmrp::messages::{
    CopyRequest, CreateRequest, PollRequest, QueueMessage, Role, MAX_MESSAGE_BYTES,
};
use vmrp::names;
use vmrp::policy::{
    CopyTarget, Deadlines, OrphanRule, Policy, Retention, Rule, Targets, TICK_SKEW,
};
use vmrp::testing::{self, disk, disk_id, op, FakeArm, FakeScheduler, VmBuilder};

const TIMER: &str = "0 0 */4 * * *";
const S1: &str = "00000000-0000-0000-0000-000000000001";
const S2: &str = "00000000-0000-0000-0000-000000000002";
/// Outside every scope the generator gives a rule.
const S9: &str = "00000000-0000-0000-0000-000000000009";
const BASE: OffsetDateTime = datetime!(2026-11-25 04:00 UTC);

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// A count: small, at the accepted maximum, or far beyond it.
fn count(max: u32) -> impl Strategy<Value = u32> {
    // Mostly accepted values (the test keeps only policies `policy check` accepts, and each
    // rejection costs a validation), with the edges: the maximum and just past it.
    prop_oneof![
        12 => 0..=max.min(20),
        2 => Just(max),
        1 => Just(max.saturating_add(1)),
        1 => Just(u32::MAX),
    ]
}

fn retention() -> impl Strategy<Value = Retention> {
    (
        count(500),
        proptest::option::of(count(500)),
        proptest::option::of(count(500)),
        proptest::option::of(count(500)),
        count(500),
    )
        .prop_map(|(keep_last, daily, weekly, monthly, floor)| Retention {
            keep_last,
            daily,
            weekly,
            monthly,
            // `policy check` refuses a floor above keepLast: drawn apart, most would be.
            floor: if keep_last > 0 {
                floor.min(keep_last)
            } else {
                floor.min(1)
            },
        })
}

/// Copy regions of a policy: mostly ones `policy check` accepts, in either spelling.
fn policy_region() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("westus2".to_string()),
        2 => Just("West US 2".to_string()),
        2 => Just("swedencentral".to_string()),
        2 => Just("eastus".to_string()),
        1 => Just("usgovvirginia".to_string()),
        1 => Just("mars".to_string()),
    ]
}

/// Regions in messages: anything a sender may write (no `/`, see the note at the end).
fn region() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("westus2".to_string()),
        Just("West US 2".to_string()),
        Just("eastus".to_string()),
        Just("swedencentral".to_string()),
        Just("usgovvirginia".to_string()),
        Just("mars".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9 ]{0,12}",
    ]
}

fn rule(name: &'static str) -> impl Strategy<Value = Rule> {
    (
        proptest::sample::subsequence(vec![S1, S2], 0..=2),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("0 30 2 * * *".to_string())),
            Just(Some("0 0 0 * * Sun".to_string())),
            Just(Some("0 0 0 1 * *".to_string())),
            Just(Some("0 0 */12 * * *".to_string())),
        ],
        any::<bool>(),
        proptest::collection::vec((policy_region(), proptest::option::of(retention())), 0..=2),
        retention(),
        (count(10_080), count(43_200), count(10)),
    )
        .prop_map(
            move |(subs, tagged, opt_out, schedule, crash, copies, retention, deadlines)| Rule {
                name: name.to_string(),
                targets: Targets {
                    subscriptions: subs.into_iter().map(str::to_string).collect(),
                    tags: if tagged {
                        [("backup".to_string(), "*".to_string())].into()
                    } else {
                        Default::default()
                    },
                    exclude_tags: if opt_out {
                        [("backup-optout".to_string(), "*".to_string())].into()
                    } else {
                        Default::default()
                    },
                    ..Default::default()
                },
                schedule,
                consistency: if crash {
                    ConsistencyMode::CrashConsistent
                } else {
                    ConsistencyMode::ApplicationConsistent
                },
                consistency_tag: None,
                exclude_disks: Default::default(),
                copies: copies
                    .into_iter()
                    .map(|(region, retention)| CopyTarget {
                        region,
                        resource_group: None,
                        retention,
                        encryption_sets: Default::default(),
                    })
                    .collect(),
                retention,
                deadlines: Deadlines {
                    local_minutes: deadlines.0,
                    copy_minutes: deadlines.1,
                    max_retries: deadlines.2,
                },
                collection_resource_group: None,
                instant_access: None,
                skip_backup_protected: false,
            },
        )
}

/// Policies, most of which `policy check` accepts; the rest are dropped by the test.
fn policy() -> impl Strategy<Value = Policy> {
    (
        rule("first"),
        proptest::option::of(rule("all")),
        proptest::option::of(count(3650)),
    )
        .prop_map(|(first, second, expire)| {
            let mut p = Policy {
                rules: std::iter::once(first).chain(second).collect(),
                orphans: OrphanRule {
                    expire_after_days: expire,
                },
                drills: None,
            };
            p.normalize();
            p
        })
}

/// Times a message may carry: near the run, the schedule's occurrences, and the ends of time.
fn instant() -> impl Strategy<Value = OffsetDateTime> {
    prop_oneof![
        2 => (-48i64 * 60..48 * 60).prop_map(|m| BASE + Duration::minutes(m)),
        // The timer's recent occurrences, which a create for a selected VM takes.
        4 => (-1i64..=0).prop_map(|n| BASE + Duration::hours(4 * n)),
        1 => (-12i64..12).prop_map(|n| BASE + Duration::hours(4 * n)),
        1 => Just(datetime!(9999-12-31 23:59:59 UTC)),
        1 => Just(datetime!(0000-01-01 00:00:00 UTC)),
        1 => Just(OffsetDateTime::UNIX_EPOCH),
    ]
}

fn big() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn vm() -> impl Strategy<Value = ResourceId> {
    prop_oneof![
        Just(testing::vm_id(S1, "rg", "tagged")),
        Just(testing::vm_id(S1, "rg", "untagged")),
        Just(testing::vm_id(S1, "rg", "opted-out")),
        Just(testing::vm_id(S2, "rg", "tagged")),
        Just(testing::vm_id(S9, "rg", "tagged")),
        Just(testing::vm_id(S1, "rg", "gone")),
    ]
}

fn rule_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        2 => Just(Some("first".to_string())),
        2 => Just(Some("all".to_string())),
        1 => Just(Some("nope".to_string())),
    ]
}

fn point_of(vm: &ResourceId, name: &str) -> ResourceId {
    names::collection_id(vm, None)
        .unwrap()
        .child("restorePoints", name)
}

fn point_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("rp-20261125T0000Z".to_string()),
        Just("rp-20261125T0400Z-r1".to_string()),
        Just("rp-20261125T0117Z-od".to_string()),
        Just("rp-99991231T2359Z-r4294967295".to_string()),
        Just("manual".to_string()),
    ]
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test inputs, built once each
enum Input {
    Message(QueueMessage),
    Timer(OffsetDateTime),
    Event {
        vm: ResourceId,
        deleted: bool,
        at: Option<OffsetDateTime>,
    },
}

fn input() -> impl Strategy<Value = Input> {
    let create = (
        vm(),
        instant(),
        rule_name(),
        proptest::option::of(prop_oneof![
            Just(ConsistencyMode::CrashConsistent),
            Just(ConsistencyMode::ApplicationConsistent),
        ]),
        proptest::option::of(proptest::collection::vec(region(), 0..3)),
        big(),
        big(),
    )
        .prop_map(|(vm, tick, rule, mode, copy_to, retry, attempt)| {
            let mut c = CreateRequest::for_tick(vm, tick, "x");
            c.rule = rule;
            c.consistency_mode = mode;
            c.copy_to = copy_to;
            c.retry = retry;
            c.attempt = attempt;
            Input::Message(QueueMessage::Create(c))
        });
    let copy = (
        vm(),
        point_name(),
        region(),
        rule_name(),
        big(),
        big(),
        any::<bool>(),
    )
        .prop_map(|(vm, name, region, rule, retry, attempt, with_vm)| {
            Input::Message(QueueMessage::Copy(CopyRequest {
                source: point_of(&vm, &name),
                target_region: region,
                target_resource_group: None,
                vm: with_vm.then_some(vm),
                rule,
                retry,
                attempt,
            }))
        });
    let poll = (
        vm(),
        point_name(),
        any::<bool>(),
        big(),
        (instant(), instant(), instant()),
        rule_name(),
        big(),
        proptest::collection::vec(region(), 0..3),
        region(),
    )
        .prop_map(
            |(vm, name, local, attempt, (first_seen, deadline, tick), rule, retry, copy_to, to)| {
                let target = if local {
                    point_of(&vm, &name)
                } else {
                    names::copy_collection_id(&vm, "westus2", None)
                        .unwrap()
                        .child("restorePoints", &name)
                };
                Input::Message(QueueMessage::Poll(PollRequest {
                    target,
                    role: if local { Role::Local } else { Role::Copy },
                    attempt,
                    first_seen,
                    deadline,
                    vm: vm.clone(),
                    tick,
                    rule,
                    retry,
                    copy_to,
                    source: (!local).then(|| point_of(&vm, &name)),
                    target_region: (!local).then_some(to),
                    prune_again: 0,
                }))
            },
        );
    prop_oneof![
        4 => create,
        2 => copy,
        3 => poll,
        1 => (0i64..48 * 60).prop_map(|m| Input::Timer(BASE + Duration::minutes(m))),
        1 => (vm(), any::<bool>(), proptest::option::of(instant()))
            .prop_map(|(vm, deleted, at)| Input::Event { vm, deleted, at }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The world and the invariants
// ---------------------------------------------------------------------------------------------

type Vms = std::collections::HashMap<ResourceId, VirtualMachine>;

fn world(policy: Policy) -> (Arc<FakeArm>, Arc<FakeScheduler>, Deps, Vms) {
    let mut vms = Vms::new();
    let arm = Arc::new(FakeArm::new());
    arm.set_now(BASE);
    for (sub, name, tags) in [
        (S1, "tagged", vec![("backup", "yes")]),
        (S1, "untagged", vec![]),
        (
            S1,
            "opted-out",
            vec![("backup", "yes"), ("backup-optout", "1")],
        ),
        (S2, "tagged", vec![("backup", "yes")]),
        (S9, "tagged", vec![("backup", "yes")]),
    ] {
        let d = disk_id(sub, "rg", &format!("{name}-data"));
        arm.add_disk(disk(&d, "Premium_LRS", None, &[]));
        let mut b = VmBuilder::new(sub, "rg", name).data_disk(0, &d, "Premium_LRS");
        for (k, v) in tags {
            b = b.tag(k, v);
        }
        let built = b.build();
        let id = arm.add_vm(built.clone());
        vms.insert(id.clone(), built);
        // History: a settled, a failed and a still-creating point, one with a far name.
        let collection = names::collection_id(&id, None).unwrap();
        arm.add_collection(&collection, "eastus", &id);
        for (n, state) in [
            ("rp-20261125T0000Z", "Succeeded"),
            ("rp-20261125T0400Z-r1", "Failed"),
            ("rp-99991231T2359Z-r4294967295", "Succeeded"),
        ] {
            arm.add_point(
                &collection.child("restorePoints", n),
                state,
                BASE,
                None,
                &[],
            );
        }
    }
    let bus = Arc::new(FakeScheduler::new());
    let deps = Deps::new(arm.clone(), bus.clone(), Arc::new(policy), TIMER);
    (arm, bus, deps, vms)
}

fn inv<T>(event: T, function: &str, now: OffsetDateTime) -> Invocation<T> {
    Invocation::new(event, Context::new(function, now))
}

/// The messages `out` says it sent, read back from `bus`.
fn sent_by(bus: &FakeScheduler, out: &Outcome) -> Vec<QueueMessage> {
    let ids: std::collections::HashSet<&str> =
        out.sent.iter().map(|s| s.message_id.as_str()).collect();
    bus.sent()
        .into_iter()
        .filter(|m| ids.contains(m.message_id.as_str()))
        .filter_map(|m| QueueMessage::decode(&m.body).ok())
        .collect()
}

async fn run(
    deps: &Deps,
    bus: &FakeScheduler,
    input: Input,
    now: OffsetDateTime,
) -> Result<Outcome, HandlerError> {
    match input {
        Input::Message(QueueMessage::Create(c)) => {
            functions::create_restore_point::handle(
                inv(c, functions::CREATE_RESTORE_POINT, now),
                deps,
            )
            .await
        }
        Input::Message(QueueMessage::Copy(c)) => {
            functions::start_cross_region_copy::handle(
                inv(c, functions::START_CROSS_REGION_COPY, now),
                deps,
            )
            .await
        }
        Input::Message(QueueMessage::Poll(p)) => {
            functions::poll_restore_point::handle(inv(p, functions::POLL_RESTORE_POINT, now), deps)
                .await
        }
        Input::Timer(at) => {
            let event = TimerEvent {
                is_past_due: false,
                last: None,
                next: None,
            };
            let out = functions::schedule_restore_points::handle(
                inv(event, functions::SCHEDULE_RESTORE_POINTS, at),
                deps,
            )
            .await?;
            // The timer fans out: run the plan messages it sent, as rp-plan would deliver them.
            let plans: Vec<QueueMessage> = sent_by(bus, &out);
            for m in plans {
                if let QueueMessage::Plan(p) = m {
                    functions::plan_restore_points::handle(
                        inv(p, functions::PLAN_RESTORE_POINTS, at),
                        deps,
                    )
                    .await?;
                }
            }
            Ok(out)
        }
        Input::Message(QueueMessage::Plan(p)) => {
            functions::plan_restore_points::handle(
                inv(p, functions::PLAN_RESTORE_POINTS, now),
                deps,
            )
            .await
        }
        Input::Event { vm, deleted, at } => {
            let kind = if deleted {
                "ResourceDeleteSuccess"
            } else {
                "ResourceWriteSuccess"
            };
            let event = ResourceEvent {
                schema: EventSchema::EventGrid,
                id: "e".into(),
                event_type: format!("Microsoft.Resources.{kind}"),
                subject: vm.to_string(),
                event_time: at,
                operation_name: None,
                data: serde_json::Value::Null,
            };
            functions::on_vm_changed::handle(inv(event, functions::ON_VM_CHANGED, now), deps).await
        }
    }
}

/// The invariants after one invocation (see the module doc).
#[allow(clippy::too_many_arguments)]
fn check(
    policy: &Policy,
    vms: &Vms,
    arm: &FakeArm,
    bus: &FakeScheduler,
    input: &Input,
    result: &Result<Outcome, HandlerError>,
    now: OffsetDateTime,
    calls_before: usize,
) -> Result<(), TestCaseError> {
    match result {
        Ok(outcome) => prop_assert!(!outcome.summary.trim().is_empty(), "no reason: {outcome:?}"),
        Err(e) => prop_assert!(!e.to_string().trim().is_empty(), "no reason: {e:?}"),
    }
    for call in arm.calls().iter().skip(calls_before) {
        if call.op != op::PUT_POINT {
            continue;
        }
        let point: ResourceId = call.target.parse().expect("the fake logs ids");
        let Some(collection) = point.parent().and_then(|c| arm.collection(&c)) else {
            continue;
        };
        let Some(source) = collection
            .source_id()
            .and_then(|s| ResourceId::parse(s).ok())
        else {
            continue;
        };
        if !source.is_type("Microsoft.Compute/virtualMachines") {
            continue; // a copy: its source point's create was checked
        }
        let selected = vms
            .get(&source)
            .is_some_and(|vm| policy.rules.iter().any(|r| r.targets.matches(vm)));
        prop_assert!(
            selected,
            "a point for {source}, which no rule selects ({input:?})"
        );
        // A create that names a rule acts only when that rule selects the VM.
        if let Input::Message(QueueMessage::Create(CreateRequest {
            rule: Some(named), ..
        })) = input
        {
            let by_named = policy
                .rule_named(named)
                .zip(vms.get(&source))
                .is_some_and(|(r, vm)| r.targets.matches(vm));
            prop_assert!(
                by_named,
                "a point for {source} under rule {named:?}, which does not select it ({input:?})"
            );
        }
        let name = point.name().unwrap_or_default();
        let (tick, _) = names::parse_restore_point_name(name)
            .ok_or_else(|| TestCaseError::fail(format!("point name {name} is not vmrp's")))?;
        prop_assert!(
            tick <= now + TICK_SKEW,
            "a point for a future tick: {name} at {now} ({input:?})"
        );
    }
    for m in bus.sent() {
        prop_assert!(m.body.len() <= MAX_MESSAGE_BYTES, "{} bytes", m.body.len());
        prop_assert!(
            QueueMessage::decode(&m.body).is_ok(),
            "undecodable: {}",
            m.body
        );
    }
    Ok(())
}

/// Runs the property on a thread with a large stack: the strategies' value trees and the
/// handlers' futures are deep in a debug build, past the test thread's 2 MB.
#[test]
fn any_accepted_policy_and_any_decodable_message_never_panic_and_stay_within_the_policy() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let config = ProptestConfig {
        cases,
        // About one generated policy in five passes `policy check`; the others are rejected.
        max_global_rejects: cases.saturating_mul(25),
        // Failing inputs are saved under proptest-regressions/ and replayed first.
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let property = move || {
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let inputs = proptest::collection::vec(
            (input(), prop_oneof![3 => 0i64..120, 1 => -60i64..6 * 60]),
            1..6,
        );
        let outcome = runner.run(&(policy(), inputs), |(policy, inputs)| {
            // Only what `policy check` accepts (with the timer the handlers run with).
            prop_assume!(policy.problems(Some(TIMER)).is_empty());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (arm, bus, deps, vms) = world(policy.clone());
            for (input, offset) in inputs {
                let now = BASE + Duration::minutes(offset);
                // Through the wire format, as the host delivers it.
                let input = match input {
                    Input::Message(m) => Input::Message(
                        QueueMessage::decode(&m.encode())
                            .map_err(|e| TestCaseError::reject(e.to_string()))?,
                    ),
                    other => other,
                };
                let calls_before = arm.calls().len();
                let result = rt.block_on(Box::pin(run(&deps, &bus, input.clone(), now)));
                check(
                    &policy,
                    &vms,
                    &arm,
                    &bus,
                    &input,
                    &result,
                    now,
                    calls_before,
                )?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    };
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(property)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

// Note: message regions here never contain `/`. A region with a `/` makes an invalid collection
// id (`ResourceId::new_in_group`), which the region validation (docs/lifecycle.md, "Regions") refuses
// before any id is built; add `"a/b"` to `region()` once that lands.
