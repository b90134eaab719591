//! Table tests of the copy capacity check: what counts as a disk copy, and where the limit lies.

use super::*;
use crate::azure::models::VirtualMachine;
use crate::messages::{CollectionSeen, ListedVm};
use crate::plan::{plan_tick, PlanAction};
use crate::policy::CopyTarget;
use crate::testing::{disk_id, rule, vm_id, VmBuilder};
use time::macros::datetime;
use time::OffsetDateTime;

const TICK: OffsetDateTime = datetime!(2026-11-25 04:00:00 UTC);

fn four_hourly() -> Schedule {
    Schedule::parse("0 0 */4 * * *").unwrap()
}

fn copying(name: &str, regions: &[&str]) -> Rule {
    let mut r = rule(name, 3);
    r.copies = regions.iter().map(|r| CopyTarget::to(r)).collect();
    r
}

/// A VM in `location` with an OS disk and `data` data disks (LUN 0, 1, ...).
fn vm(sub: &str, name: &str, location: &str, data: i32) -> VirtualMachine {
    vm_builder(sub, name, location, data).build()
}

fn vm_builder(sub: &str, name: &str, location: &str, data: i32) -> VmBuilder {
    (0..data).fold(
        VmBuilder::new(sub, "rg", name).location(location),
        |b, lun| {
            b.data_disk(
                lun,
                &disk_id(sub, "rg", &format!("{name}-d{lun}")),
                "Premium_LRS",
            )
        },
    )
}

fn target<'r>(vm: VirtualMachine, rule: &'r Rule) -> PlanTarget<'r> {
    PlanTarget {
        vm: vm.resource_id().unwrap(),
        rule,
        listed: Some(ListedVm {
            at: TICK,
            vm,
            disks: Vec::new(),
            collection: Some(CollectionSeen::Ready),
            planned_for: None,
        }),
    }
}

/// `n` VMs in subscription `sub`, eastus, each with `data` data disks, under `rule`.
fn fleet<'r>(n: usize, sub: &str, data: i32, rule: &'r Rule) -> Vec<PlanTarget<'r>> {
    (0..n)
        .map(|i| {
            let name = format!("{}-{sub}-vm{i:05}", rule.name);
            target(vm(sub, &name, "eastus", data), rule)
        })
        .collect()
}

fn shortfalls(targets: &[PlanTarget<'_>], pacing: &Pacing) -> Vec<CopyShortfall> {
    let plan = plan_tick(TICK, &four_hourly(), targets, pacing);
    copy_shortfalls(&plan, targets, &four_hourly(), pacing)
}

/// (subscription, region, kind, disk copies) of each shortfall.
fn summary(s: &[CopyShortfall]) -> Vec<(String, String, ShortfallKind, u64)> {
    s.iter()
        .map(|s| {
            (
                s.subscription.clone(),
                s.region.clone(),
                s.kind,
                s.disk_copies,
            )
        })
        .collect()
}

fn row(
    sub: &str,
    region: &str,
    kind: ShortfallKind,
    copies: u64,
) -> (String, String, ShortfallKind, u64) {
    (sub.to_string(), region.to_string(), kind, copies)
}

#[test]
fn disk_copies_against_the_limit_per_subscription_and_region() {
    use ShortfallKind::{FallsBehind, Queues};
    let one = copying("one", &["swedencentral"]);
    let two = copying("two", &["swedencentral", "norwayeast"]);
    let mut skip_lun0 = copying("skip-lun0", &["swedencentral"]);
    skip_lun0.exclude_disks.luns = vec![0];
    // Each VM: OS disk + 1 data disk = 2 disk copies per region. At 4 h between ticks and ~1 h
    // per copy, 400 fit per period; more than 100 at once queue.
    let table: Vec<(&str, Vec<PlanTarget<'_>>, Vec<_>)> = vec![
        (
            "fits: 50 VMs × 2 disks = 100 at once",
            fleet(50, "s1", 1, &one),
            vec![],
        ),
        (
            "queues: 51 VMs × 2 = 102, more than 100 at once but within 400",
            fleet(51, "s1", 1, &one),
            vec![row("s1", "swedencentral", Queues, 102)],
        ),
        (
            "exactly what fits: 200 × 2 = 400",
            fleet(200, "s1", 1, &one),
            vec![row("s1", "swedencentral", Queues, 400)],
        ),
        (
            "just over: 201 × 2 = 402 > 400",
            fleet(201, "s1", 1, &one),
            vec![row("s1", "swedencentral", FallsBehind, 402)],
        ),
        (
            "excluded disks are not copied: 201 × (3 − LUN 0) = 402",
            fleet(201, "s1", 2, &skip_lun0),
            vec![row("s1", "swedencentral", FallsBehind, 402)],
        ),
        (
            "excluded disks are not copied: 300 × (2 − LUN 0) = 300 fits",
            fleet(300, "s1", 1, &skip_lun0),
            vec![row("s1", "swedencentral", Queues, 300)],
        ),
        (
            "two regions, each counted on its own",
            fleet(201, "s1", 1, &two),
            vec![
                row("s1", "norwayeast", FallsBehind, 402),
                row("s1", "swedencentral", FallsBehind, 402),
            ],
        ),
        (
            "many subscriptions, each fitting: 600 VMs over s1, s2, s3",
            [
                fleet(200, "s1", 1, &one),
                fleet(200, "s2", 1, &one),
                fleet(200, "s3", 1, &one),
            ]
            .concat(),
            vec![
                row("s1", "swedencentral", Queues, 400),
                row("s2", "swedencentral", Queues, 400),
                row("s3", "swedencentral", Queues, 400),
            ],
        ),
        (
            "the same 600 VMs in one subscription fall behind",
            fleet(600, "s1", 1, &one),
            vec![row("s1", "swedencentral", FallsBehind, 1200)],
        ),
    ];
    for (case, targets, want) in table {
        assert_eq!(
            summary(&shortfalls(&targets, &Pacing::default())),
            want,
            "{case}"
        );
    }
}

#[test]
fn the_copy_duration_and_the_period_set_what_fits() {
    let one = copying("one", &["swedencentral"]);
    let targets = fleet(150, "s1", 1, &one); // 300 disk copies
                                             // ~1 h: 400 per 4 h, they queue; ~1.5 h: 266 per 4 h, they fall behind.
    let at = |secs| {
        let pacing = Pacing {
            copy_duration: Duration::from_secs(secs),
            ..Pacing::default()
        };
        shortfalls(&targets, &pacing)
    };
    let hour = at(3600);
    assert_eq!(hour[0].kind, ShortfallKind::Queues);
    assert_eq!(hour[0].fit_per_period, Some(400));
    assert_eq!(hour[0].period, Some(Duration::from_secs(4 * 3600)));
    let slower = at(5400);
    assert_eq!(slower[0].kind, ShortfallKind::FallsBehind);
    assert_eq!(slower[0].fit_per_period, Some(266));
    // A rule of its own every 8 h: its next tick is 8 h away, 800 fit.
    let mut eight = copying("eight", &["swedencentral"]);
    eight.schedule = Some("0 0 */8 * * *".into());
    let targets = fleet(300, "s1", 1, &eight); // 600
    let plan = plan_tick(
        datetime!(2026-11-25 08:00:00 UTC),
        &four_hourly(),
        &targets,
        &Pacing::default(),
    );
    let s = copy_shortfalls(&plan, &targets, &four_hourly(), &Pacing::default());
    assert_eq!(s[0].period, Some(Duration::from_secs(8 * 3600)));
    assert_eq!(s[0].kind, ShortfallKind::Queues, "{}", s[0]);
}

/// VMs that get no create this tick bring no copies: left out of the window, unsupported
/// (confidential VMs, whose 2 disks each would otherwise count), not due (their rule's
/// schedule), or copying to their own region.
#[test]
fn only_this_ticks_creates_count() {
    let one = copying("one", &["swedencentral"]);
    let mut not_due = copying("not-due", &["swedencentral"]);
    not_due.schedule = Some("0 0 12 * * *".into());
    let mut targets = fleet(50, "s1", 1, &one); // 100: fits
    targets.extend(fleet(60, "s1", 1, &not_due));
    targets.extend((0..60).map(|i| {
        let mut cvm = vm("s1", &format!("cvm{i}"), "eastus", 1);
        cvm.properties.as_mut().unwrap().security_profile =
            Some(serde_json::json!({ "securityType": "ConfidentialVM" }));
        target(cvm, &one)
    }));
    // In Sweden already: no copy to its own region.
    targets
        .extend((0..60).map(|i| target(vm("s1", &format!("home{i}"), "swedencentral", 1), &one)));
    let plan = plan_tick(TICK, &four_hourly(), &targets, &Pacing::default());
    assert_eq!(
        plan.items
            .iter()
            .filter(|i| i.action == PlanAction::Skip)
            .count(),
        60
    );
    assert_eq!(plan.unsupported().count(), 60);
    assert!(copy_shortfalls(&plan, &targets, &four_hourly(), &Pacing::default()).is_empty());

    // Left out of the window: one create per 400 s (its point and its copy's
    // collection, one write per 200 s) leaves most of 201 VMs out (cut-off 07:00,
    // crash-consistent), so their 402 copies never start this tick.
    let slow = Pacing {
        burst: 1,
        refill_per_sec: 0.005,
        writes_per_create: 1,
        reads_per_create: 0,
        reads_per_copy: 0,
        reserve: 0.0,
        ..Pacing::default()
    };
    let targets = fleet(201, "s1", 1, &one);
    let plan = plan_tick(TICK, &four_hourly(), &targets, &slow);
    let created = plan.creates().count() as u64;
    assert!(plan.left_out().count() > 100, "{created} created");
    assert!(created * 2 <= 100, "{created} created");
    assert!(copy_shortfalls(&plan, &targets, &four_hourly(), &slow).is_empty());
}

/// A region a customer-managed key cannot be copied to gets no copy of that VM.
#[test]
fn unmapped_customer_managed_keys_bring_no_copy() {
    let one = copying("one", &["swedencentral"]);
    let des =
        "/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/des";
    let targets: Vec<PlanTarget<'_>> = (0..201)
        .map(|i| {
            let b = vm_builder("s1", &format!("cmk{i}"), "eastus", 1);
            let b = if i < 10 {
                b.os_disk_encryption_set(des)
            } else {
                b
            };
            target(b.build(), &one)
        })
        .collect();
    let s = shortfalls(&targets, &Pacing::default());
    assert_eq!(
        summary(&s),
        vec![row("s1", "swedencentral", ShortfallKind::Queues, 382)]
    );
    assert_eq!(s[0].vms, 191);
}

/// A VM without a listing (too large for a message) counts its OS disk only, and says so.
#[test]
fn unlisted_vms_count_as_one_disk_and_are_named() {
    let one = copying("one", &["swedencentral"]);
    let targets: Vec<PlanTarget<'_>> = (0..401)
        .map(|i| PlanTarget {
            vm: vm_id("s1", "rg", &format!("u{i}")),
            rule: &one,
            listed: None,
        })
        .collect();
    let s = shortfalls(&targets, &Pacing::default());
    assert_eq!(
        summary(&s),
        vec![row("s1", "swedencentral", ShortfallKind::FallsBehind, 401)]
    );
    assert_eq!(s[0].unlisted_vms, 401);
    let text = s[0].to_string();
    assert!(text.contains("at least 401 disk copies"), "{text}");
    assert!(text.contains("401 VMs unlisted"), "{text}");
}

#[test]
fn the_line_says_what_falls_behind_and_what_to_do() {
    let sub = "85f4a1b2-0000-0000-0000-000000000001";
    let one = copying("prod", &["Sweden Central"]);
    let targets = fleet(2000, sub, 1, &one);
    let s = shortfalls(&targets, &Pacing::default());
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].to_string(),
        format!(
            "copies to swedencentral in subscription {sub}: 4,000 disk copies this tick (2,000 \
             VMs, rule prod); Azure replicates at most 100 at once per subscription and region, \
             about 400 per 4 h at ~1 h each: copies will fall behind and older ones be \
             dropped. Spread the VMs over more subscriptions, copy fewer disks (excludeDisks) \
             or copy less often"
        )
    );
    let queued = shortfalls(&fleet(60, sub, 1, &one), &Pacing::default());
    let text = queued[0].to_string();
    assert!(
        text.contains("120 disk copies") && text.contains("wait for a free slot"),
        "{text}"
    );
}

#[test]
fn numbers_and_durations_read_well() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(human(Duration::from_secs(4 * 3600)), "4 h");
    assert_eq!(human(Duration::from_secs(5400)), "90 min");
    assert_eq!(human(Duration::from_secs(45)), "45 s");
}
