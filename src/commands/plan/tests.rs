//! Tests of `vmrp plan`: the rows a policy and a moment give, per VM and region.

use super::*;
use crate::azure::models::VirtualMachine;
use crate::inventory::PointSummary;
use time::macros::datetime;
use time::Duration;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

fn vm_id(name: &str) -> ResourceId {
    ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
    ))
    .unwrap()
}

fn point(
    vm: &str,
    coll: &str,
    name: &str,
    created: OffsetDateTime,
    status: PointStatus,
    source: Option<&ResourceId>,
) -> PointSummary {
    let id = ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/{coll}/restorePoints/{name}"
    ))
    .unwrap();
    let _ = vm;
    PointSummary {
        id,
        name: name.into(),
        created: Some(created),
        status,
        source: source.cloned(),
    }
}

fn coverage(
    name: &str,
    tags: &[(&str, &str)],
    local: Vec<PointSummary>,
    copies: Vec<PointSummary>,
) -> VmCoverage {
    let id = vm_id(name);
    let vm = VirtualMachine {
        id: Some(id.to_string()),
        name: Some(name.into()),
        location: Some("eastus".into()),
        tags: Some(
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let coll = |role, region: &str, points| CollectionView {
        id: id.clone(),
        region: region.into(),
        role,
        points,
    };
    VmCoverage {
        id: id.clone(),
        location: "eastus".into(),
        vm,
        collections: vec![
            coll(CollectionRole::Local, "eastus", local),
            coll(CollectionRole::Copy, "westus2", copies),
        ],
        azure_backup: Vec::new(),
    }
}

fn policy() -> Policy {
    Policy::from_json_str(&format!(
        r#"{{"rules": [{{"name": "prod", "targets": {{"subscriptions": ["{SUB}"], "tags": {{"backup": "on"}}}},
                "retention": {{"keepLast": 2, "floor": 1}},
                "copies": [{{"region": "westus2", "retention": {{"keepLast": 1}}}}]}}]}}"#
    ))
    .unwrap()
}

#[test]
fn plan_shows_creates_copies_deletes_and_waits_with_reasons() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let at = datetime!(2026-11-25 12:05 UTC);
    let t = |h: i64| datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(h);
    // vm-a: four settled points (00, 04, 08 and 00 the day before is the baseline), the 08:00
    // copy still replicating → its source is held; retention keeps 2 newest + baseline.
    let a_local = vec![
        point(
            "vm-a",
            "rpc-vm-a",
            "rp-20261124T2000Z",
            t(-4),
            PointStatus::Settled,
            None,
        ),
        point(
            "vm-a",
            "rpc-vm-a",
            "rp-20261125T0000Z",
            t(0),
            PointStatus::Settled,
            None,
        ),
        point(
            "vm-a",
            "rpc-vm-a",
            "rp-20261125T0400Z",
            t(4),
            PointStatus::Settled,
            None,
        ),
        point(
            "vm-a",
            "rpc-vm-a",
            "rp-20261125T0800Z",
            t(8),
            PointStatus::Settled,
            None,
        ),
    ];
    // Copies: the baseline and 00:00 are copied; 04:00's copy is still replicating; 08:00
    // has no copy yet (held: "copy to westus2 not started yet").
    let a_copies = vec![
        point(
            "vm-a",
            "rpc-vm-a-westus2",
            "rp-20261124T2000Z",
            t(-3),
            PointStatus::Settled,
            Some(&a_local[0].id),
        ),
        point(
            "vm-a",
            "rpc-vm-a-westus2",
            "rp-20261125T0000Z",
            t(1),
            PointStatus::Settled,
            Some(&a_local[1].id),
        ),
        point(
            "vm-a",
            "rpc-vm-a-westus2",
            "rp-20261125T0400Z",
            t(5),
            PointStatus::InProgress { percent: Some(40) },
            Some(&a_local[2].id),
        ),
    ];
    // vm-b: a crash-free app-consistent point made 1 h ago (manual) → spacing wait.
    let b_local = vec![point(
        "vm-b",
        "rpc-vm-b",
        "manual-1",
        datetime!(2026-11-25 11:05 UTC),
        PointStatus::Settled,
        None,
    )];
    let inv = Inventory {
        vms: vec![
            coverage("vm-a", &[("backup", "on")], a_local, a_copies),
            coverage("vm-b", &[("backup", "on")], b_local, vec![]),
            coverage("vm-c", &[], vec![], vec![]),
        ],
    };
    let rows = plan(&inv, &policy(), &timer, at, &HashMap::new());
    let find = |vm: &str, action: Action| {
        rows.iter()
            .filter(move |r| r.vm == vm && r.action == action)
            .collect::<Vec<_>>()
    };

    let create = find("vm-a", Action::Create);
    assert_eq!(create.len(), 1, "{rows:#?}");
    assert_eq!(create[0].target, "rp-20261125T1200Z");
    assert!(create[0].reason.contains("ApplicationConsistent"));

    let wait = find("vm-a", Action::Wait);
    assert_eq!(wait.len(), 1, "{rows:#?}");
    assert_eq!(wait[0].region, "westus2");
    assert!(
        wait[0].reason.contains(
            "copy to westus2 waits: previous copy rp-20261125T0400Z still replicating (40%)"
        ),
        "{}",
        wait[0].reason
    );

    // keepLast 2 keeps 04:00 and 08:00, the baseline keeps 20:00; 00:00 goes.
    let deletes = find("vm-a", Action::Delete);
    assert_eq!(deletes.len(), 1, "{rows:#?}");
    assert_eq!(deletes[0].target, "rp-20261125T0000Z");
    assert_eq!(deletes[0].region, "eastus");

    let spacing = find("vm-b", Action::Wait);
    assert!(
        spacing.iter().any(|r| r
            .reason
            .starts_with("spacing: manual-1 is 60 min old; Azure requires 3 h")),
        "{rows:#?}"
    );
    assert!(find("vm-b", Action::Create).is_empty());
    let b_copy = find("vm-b", Action::Copy);
    assert_eq!(b_copy.len(), 1, "{rows:#?}");
    assert_eq!(b_copy[0].target, "manual-1");

    assert_eq!(
        find("vm-c", Action::Skip)[0].reason,
        "not selected by any rule"
    );
    let table = render(&rows);
    assert!(table.contains("copy to westus2 waits"), "{table}");
}

/// Regression: one subscription answering 404 aborted the whole plan; and without `--at` the
/// plan used this machine's clock, not ARM's.
#[tokio::test]
async fn a_missing_subscription_is_skipped_and_arms_clock_is_the_moment() {
    use crate::testing::{op, FakeArm};
    const GONE: &str = "00000000-0000-0000-0000-00000000dead";
    let arm = FakeArm::new();
    let vm = coverage("vm-a", &[("backup", "on")], vec![], vec![]).vm;
    arm.add_vm(vm);
    arm.refuse_next(
        op::LIST_VMS,
        404,
        "SubscriptionNotFound",
        &format!("The subscription '{GONE}' could not be found."),
    );
    let server = datetime!(2026-11-25 12:05 UTC);
    arm.report_rate_limits(crate::azure::RateLimits {
        date: Some(server),
        ..Default::default()
    });
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();

    let planned = plan_with(
        &arm,
        &policy(),
        &timer,
        None,
        &[GONE.to_string(), SUB.to_string()],
        &Pacing::default(),
    )
    .await
    .expect("the other subscription is planned");

    assert_eq!(planned.skipped.len(), 1, "{:?}", planned.skipped);
    assert!(
        planned.skipped[0].contains(GONE) && planned.skipped[0].contains("SubscriptionNotFound")
    );
    assert_eq!(planned.at, server, "ARM's Date, not this machine's clock");
    let create = planned
        .rows
        .iter()
        .find(|r| r.action == Action::Create)
        .unwrap();
    assert_eq!(create.target, "rp-20261125T1200Z", "{:#?}", planned.rows);

    // Every subscription failing is still an error.
    arm.refuse_next(op::LIST_VMS, 404, "SubscriptionNotFound", "gone");
    assert!(plan_with(
        &arm,
        &policy(),
        &timer,
        None,
        &[GONE.to_string()],
        &Pacing::default(),
    )
    .await
    .is_err());
}

#[test]
fn held_source_survives_until_its_copy_settles() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let t = |h: i64| datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(h);
    let local: Vec<_> = (0..5)
        .map(|i| {
            point(
                "vm-a",
                "rpc-vm-a",
                &format!("rp-{i}"),
                t(i * 4),
                PointStatus::Settled,
                None,
            )
        })
        .collect();
    // The copy of rp-1 (an old point) is still replicating: rp-1 must not be deleted. rp-4
    // has no copy yet: held too. rp-0, rp-2 and rp-3 are copied.
    let copy = |i: usize, status| {
        point(
            "vm-a",
            "rpc-vm-a-westus2",
            &format!("rp-{i}"),
            t(i as i64 * 4 + 1),
            status,
            Some(&local[i].id),
        )
    };
    let copies = vec![
        copy(0, PointStatus::Settled),
        copy(1, PointStatus::InProgress { percent: Some(90) }),
        copy(2, PointStatus::Settled),
        copy(3, PointStatus::Settled),
    ];
    let inv = Inventory {
        vms: vec![coverage("vm-a", &[("backup", "on")], local, copies)],
    };
    let rows = plan(&inv, &policy(), &timer, t(17), &HashMap::new());
    let deleted: Vec<&str> = rows
        .iter()
        .filter(|r| r.action == Action::Delete && r.region == "eastus")
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(deleted, vec!["rp-2"], "{rows:#?}");
}

fn keep_policy(copy_region: &str) -> Policy {
    Policy::from_json_str(&format!(
        r#"{{"rules": [{{"name": "prod", "targets": {{"subscriptions": ["{SUB}"], "tags": {{"backup": "on"}}}},
                "retention": {{"keepLast": 3}},
                "copies": [{{"region": "{copy_region}", "retention": {{"keepLast": 2}}}}]}}]}}"#
    ))
    .unwrap()
}

/// Six settled local points 4 h apart (rp-…0000Z to rp-…2000Z), as `vmrp plan` sees them.
fn six_local() -> Vec<PointSummary> {
    (0..6)
        .map(|i| {
            point(
                "vm-a",
                "rpc-vm-a",
                &format!("rp-20261125T{:02}00Z", i * 4),
                datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(i * 4),
                PointStatus::Settled,
                None,
            )
        })
        .collect()
}

fn local_deletes(rows: &[PlanRow]) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.action == Action::Delete && r.region == "eastus")
        .map(|r| r.target.as_str())
        .collect()
}

/// Regression: copies keep 2 (+ baseline) in westus2; the local points whose copies
/// westus2 has since pruned are "copied, since pruned", not held as "not started yet".
#[test]
fn plan_does_not_hold_local_points_whose_copies_were_pruned() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let local = six_local();
    let copies = [0, 4, 5]
        .iter()
        .map(|&i| {
            point(
                "vm-a",
                "rpc-vm-a-westus2",
                &format!("rp-20261125T{:02}00Z", i * 4),
                datetime!(2026-11-25 00:30 UTC) + Duration::hours(i as i64 * 4),
                PointStatus::Settled,
                Some(&local[i].id),
            )
        })
        .collect();
    let inv = Inventory {
        vms: vec![coverage("vm-a", &[("backup", "on")], local, copies)],
    };
    let at = datetime!(2026-11-25 21:00 UTC);
    let rows = plan(&inv, &keep_policy("westus2"), &timer, at, &HashMap::new());
    assert_eq!(
        local_deletes(&rows),
        vec!["rp-20261125T0400Z", "rp-20261125T0800Z"],
        "{rows:#?}"
    );
}

/// Regression: a copy entry naming the VM's own region: no copy is planned, the row
/// says why, and local retention is not held for it.
#[test]
fn plan_drops_a_copy_to_the_vms_own_region() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let inv = Inventory {
        vms: vec![coverage(
            "vm-a",
            &[("backup", "on")],
            six_local(),
            Vec::new(),
        )],
    };
    let at = datetime!(2026-11-25 21:00 UTC);
    let rows = plan(&inv, &keep_policy("East US"), &timer, at, &HashMap::new());
    assert_eq!(
        local_deletes(&rows),
        vec!["rp-20261125T0400Z", "rp-20261125T0800Z"],
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r.action == Action::Skip
            && r.region == "eastus"
            && r.reason.contains("own region")),
        "{rows:#?}"
    );
    assert!(!rows.iter().any(|r| r.action == Action::Copy), "{rows:#?}");
}

/// `vmrp plan` shows the VMs the timer would leave out of its tick, with the timer's own
/// reason (the handler's planner, `plan::plan_tick_from`), as waits instead of creates.
#[test]
fn plan_shows_the_vms_that_do_not_fit_before_the_cut_off() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    // Tick 12:00, application-consistent: superseded from 13:00; sends start at 12:05.
    let at = datetime!(2026-11-25 12:05 UTC);
    let inv = Inventory {
        vms: (0..25)
            .map(|i| coverage(&format!("vm{i:02}"), &[("backup", "on")], vec![], vec![]))
            .collect(),
    };
    // Two writes per VM (its point, its copy's collection... at one write per 100 s): the
    // k-th create goes at +(2k-1)·100 s, so 16 start before 13:00.
    let pacing = Pacing {
        burst: 1,
        refill_per_sec: 0.01,
        writes_per_create: 1,
        reads_per_create: 0,
        reads_per_copy: 0,
        reserve: 0.0,
        window_margin: std::time::Duration::ZERO,
        ..Pacing::default()
    };
    let rows = plan_paced(&inv, &policy(), &timer, at, &HashMap::new(), &pacing);
    let local = |action: Action| -> Vec<String> {
        rows.iter()
            .filter(|r| r.region == "eastus" && r.action == action)
            .map(|r| r.vm.clone())
            .collect()
    };
    assert_eq!(local(Action::Create).len(), 16, "{rows:#?}");
    let waits = local(Action::Wait);
    assert_eq!(waits.len(), 9);
    for r in rows.iter().filter(|r| r.action == Action::Wait) {
        assert!(
            r.reason.contains("does not fit this tick")
                && r.reason.contains("2026-11-25T13:00:00Z"),
            "{}",
            r.reason
        );
    }
    // The same VMs the timer's planner leaves out.
    let tick = datetime!(2026-11-25 12:00 UTC);
    let p = policy();
    let targets: Vec<PlanTarget<'_>> = inv
        .vms
        .iter()
        .map(|vm| PlanTarget {
            vm: vm.id.clone(),
            rule: &p.rules[0],
            listed: None,
        })
        .collect();
    let mut timer_left: Vec<String> =
        crate::plan::plan_tick_from(tick, at, &timer, &targets, &pacing)
            .left_out()
            .map(|i| i.vm.name().unwrap().to_string())
            .collect();
    let mut shown = waits.clone();
    timer_left.sort();
    shown.sort();
    assert_eq!(shown, timer_left);
    // At the default pacing all 25 fit.
    let rows = plan(&inv, &policy(), &timer, at, &HashMap::new());
    assert_eq!(
        rows.iter()
            .filter(|r| r.action == Action::Create && r.region == "eastus")
            .count(),
        25
    );
}

/// `vmrp plan` says beforehand when a tick's copies cannot keep up: 201 VMs × 2 disks copied to
/// westus2 from one subscription is 402 disk copies, while Azure replicates 100 at once, about
/// 400 per 4 h at ~1 h each. The row (VM `-`, the region, `wait`) carries the timer's own line,
/// in the table and in `--json`.
#[test]
fn plan_shows_copies_that_cannot_keep_up() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let at = datetime!(2026-11-25 12:05 UTC);
    let fleet = |n: usize| Inventory {
        vms: (0..n)
            .map(|i| {
                let name = format!("vm{i:03}");
                let mut c = coverage(&name, &[], vec![], vec![]);
                c.vm = crate::testing::VmBuilder::new(SUB, "rg", &name)
                    .tag("backup", "on")
                    .data_disk(
                        0,
                        &crate::testing::disk_id(SUB, "rg", &format!("{name}-d0")),
                        "Premium_LRS",
                    )
                    .build();
                c
            })
            .collect(),
    };
    let rows = plan(&fleet(201), &policy(), &timer, at, &HashMap::new());
    let shortfalls: Vec<&PlanRow> = rows
        .iter()
        .filter(|r| r.reason.starts_with("copies to "))
        .collect();
    assert_eq!(shortfalls.len(), 1, "{rows:#?}");
    let row = shortfalls[0];
    assert_eq!(
        (
            row.vm.as_str(),
            row.region.as_str(),
            row.action,
            row.rule.as_deref()
        ),
        ("-", "westus2", Action::Wait, Some("prod"))
    );
    assert!(
        row.reason.starts_with(&format!(
            "copies to westus2 in subscription {SUB}: 402 disk copies this tick (201 VMs, rule prod)"
        )) && row.reason.contains("about 400 per 4 h at ~1 h each: copies will fall behind"),
        "{}",
        row.reason
    );
    // Every VM still gets its create: the copies are what cannot keep up.
    assert_eq!(
        rows.iter()
            .filter(|r| r.action == Action::Create && r.region == "eastus")
            .count(),
        201
    );
    assert!(render(&rows).contains("copies to westus2 in subscription"));
    let json = serde_json::to_value(&rows).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["vm"] == "-" && r["action"] == "wait" && r["region"] == "westus2"));

    // 200 VMs (400) fit the period but not 100 at once: they queue, which the row says.
    let rows = plan(&fleet(200), &policy(), &timer, at, &HashMap::new());
    let queued: Vec<&PlanRow> = rows
        .iter()
        .filter(|r| r.reason.starts_with("copies to "))
        .collect();
    assert_eq!(queued.len(), 1, "{rows:#?}");
    assert!(
        queued[0].reason.contains("400 disk copies")
            && queued[0]
                .reason
                .contains("they still finish before the next tick")
            && !queued[0].reason.contains("fall behind"),
        "{}",
        queued[0].reason
    );
    // 50 VMs (100) start at once: no row.
    let rows = plan(&fleet(50), &policy(), &timer, at, &HashMap::new());
    assert!(
        !rows.iter().any(|r| r.reason.starts_with("copies to ")),
        "{rows:#?}"
    );
}
