//! Unit tests of `policy::resolve` (their own file: the module stays under 1,000 lines).

use super::*;
use crate::testing::VmBuilder;

#[test]
fn a_point_is_refused_only_when_every_managed_disk_is_excluded() {
    let os = crate::testing::disk_id("s1", "rg", "vm1-os");
    let data = crate::testing::disk_id("s1", "rg", "vm1-data");
    let with_data = VmBuilder::new("s1", "rg", "vm1")
        .data_disk(0, &data, "Premium_LRS")
        .build();
    // A VM whose disks carry no managed disk id has nothing to exclude.
    let mut unmanaged = VmBuilder::new("s1", "rg", "vm1").build();
    if let Some(sp) = unmanaged
        .properties
        .as_mut()
        .and_then(|p| p.storage_profile.as_mut())
    {
        if let Some(d) = sp.os_disk.as_mut() {
            d.managed_disk = None;
        }
    }
    // (case, VM, excluded, every disk excluded?)
    let table: Vec<(&str, &VirtualMachine, Vec<ResourceId>, bool)> = vec![
        ("nothing excluded", &with_data, vec![], false),
        (
            "a data disk excluded",
            &with_data,
            vec![data.clone()],
            false,
        ),
        ("the OS disk excluded", &with_data, vec![os.clone()], false),
        (
            "both excluded",
            &with_data,
            vec![os.clone(), data.clone()],
            true,
        ),
        ("no managed disk", &unmanaged, vec![os.clone()], false),
    ];
    for (case, vm, excluded, want) in table {
        assert_eq!(excludes_every_disk(vm, &excluded), want, "{case}");
    }
}

#[test]
fn late_creates_are_superseded_only_near_the_next_tick() {
    use time::macros::datetime;
    let tick = datetime!(2026-11-25 00:00 UTC);
    let h = time::Duration::hours;
    let cases = [
        // (hours between ticks, hours after the tick the create runs, spacing h, superseded)
        (4, 0, 3, false),
        (4, 0, 1, false),
        (4, 1, 3, true), // 1 h after: within 3 h of the next tick (at 4 h)
        (4, 2, 1, false),
        (4, 3, 1, true),
        (4, 5, 1, true), // after the next tick itself
        (24, 20, 3, false),
        (24, 21, 3, true),
        (2, 5, 3, false), // ticks closer than the spacing: never
        // Ticks exactly the spacing apart: `now >= next - spacing` holds from the tick
        // on, so counting them would supersede every create, even an on-time one.
        (3, 0, 3, false),
        (3, 2, 3, false),
    ];
    for (every, late, spacing, want) in cases {
        assert_eq!(
            superseded_by_next_tick(tick, tick + h(every), tick + h(late), h(spacing)),
            want,
            "ticks {every} h apart, {late} h late, spacing {spacing} h"
        );
    }
}

#[test]
fn next_due_tick_follows_the_rules_own_schedule() {
    use time::macros::datetime;
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let tick = datetime!(2026-11-25 04:00 UTC);
    let mut r = crate::testing::rule("r", 3);
    assert_eq!(
        r.next_due_tick(&timer, tick).unwrap(),
        Some(datetime!(2026-11-25 08:00 UTC))
    );
    r.schedule = Some("0 30 1 * * *".into()); // daily at 01:30: due at the 04:00 tick
    assert_eq!(
        r.next_due_tick(&timer, tick).unwrap(),
        Some(datetime!(2026-11-26 04:00 UTC))
    );
}
use crate::azure::models::{
    DataDisk, DiffDiskSettings, DiskProperties, DiskSku, ManagedDiskParameters, OsDisk,
    StorageProfile, VirtualMachineProperties,
};
use crate::policy::{DiskExclusions, Policy};
use time::macros::datetime;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

fn disk_id(name: &str) -> ResourceId {
    ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", name).unwrap()
}

fn data(lun: i32, name: &str, sku: &str) -> DataDisk {
    DataDisk {
        lun,
        name: Some(name.to_string()),
        managed_disk: Some(ManagedDiskParameters {
            id: Some(disk_id(name).to_string()),
            storage_account_type: Some(sku.to_string()),
            disk_encryption_set: None,
        }),
        disk_size_gb: None,
        ..Default::default()
    }
}

pub(crate) fn vm_with(
    tags: &[(&str, &str)],
    ephemeral_os: bool,
    disks: Vec<DataDisk>,
) -> VirtualMachine {
    VirtualMachine {
        id: Some(
            ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "virtualMachines", "vm1")
                .unwrap()
                .to_string(),
        ),
        name: Some("vm1".into()),
        location: Some("eastus".into()),
        tags: Some(
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        properties: Some(VirtualMachineProperties {
            storage_profile: Some(StorageProfile {
                os_disk: Some(OsDisk {
                    name: Some("vm1-os".into()),
                    managed_disk: Some(ManagedDiskParameters {
                        id: Some(disk_id("vm1-os").to_string()),
                        storage_account_type: Some("Premium_LRS".into()),
                        disk_encryption_set: None,
                    }),
                    diff_disk_settings: ephemeral_os.then(|| DiffDiskSettings {
                        option: Some("Local".into()),
                        placement: None,
                    }),
                    ..Default::default()
                }),
                data_disks: Some(disks),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rule() -> Rule {
    Policy::from_json_str(
        r#"{"rules":[{"name":"r","targets":{},"retention":{"keepLast":3},
           "consistencyTag":"rp-mode",
           "copies":[{"region":"westus2","retention":{"keepLast":9}},{"region":"northeurope"}],
           "deadlines":{"localMinutes":30,"copyMinutes":600}}]}"#,
    )
    .unwrap()
    .rules
    .remove(0)
}

#[test]
fn consistency_tag_overrides_the_rule_mode() {
    let r = rule();
    for (tags, want, logs) in [
        (vec![], ConsistencyMode::ApplicationConsistent, false),
        (
            vec![("rp-mode", "CrashConsistent")],
            ConsistencyMode::CrashConsistent,
            false,
        ),
        (
            vec![("RP-MODE", "crashconsistent")],
            ConsistencyMode::CrashConsistent,
            false,
        ),
        (
            vec![("rp-mode", "ApplicationConsistent")],
            ConsistencyMode::ApplicationConsistent,
            false,
        ),
        (
            vec![("rp-mode", "fast")],
            ConsistencyMode::ApplicationConsistent,
            true,
        ),
        (
            vec![("rp-mode", "FileSystemConsistent")],
            ConsistencyMode::ApplicationConsistent,
            true,
        ),
    ] {
        let (mode, problem) = r.consistency_for(&vm_with(&tags, false, vec![]));
        assert_eq!(mode, want, "{tags:?}");
        assert_eq!(problem.is_some(), logs, "{tags:?}");
    }
    let (_, problem) = r.consistency_for(&vm_with(&[("rp-mode", "fast")], false, vec![]));
    assert_eq!(
        problem.unwrap(),
        "VM vm1: tag \"rp-mode\" = \"fast\" is not a consistency mode (expected CrashConsistent \
         or ApplicationConsistent); using the rule's ApplicationConsistent"
    );
}

#[test]
fn tag_is_ignored_when_the_rule_has_no_consistency_tag() {
    let mut r = rule();
    r.consistency_tag = None;
    r.consistency = ConsistencyMode::CrashConsistent;
    let (mode, problem) = r.consistency_for(&vm_with(
        &[("rp-mode", "ApplicationConsistent")],
        false,
        vec![],
    ));
    assert_eq!((mode, problem), (ConsistencyMode::CrashConsistent, None));
}

#[test]
fn exclusions_by_lun_name_tag_sku_and_automatic_ones() {
    let mut r = rule();
    r.exclude_disks = DiskExclusions {
        luns: vec![1],
        names: vec!["SCRATCH".into()],
        tags: [("backup".to_string(), "skip".to_string())].into(),
        skus: vec!["ultrassd_lrs".into()],
    };
    let vm = vm_with(
        &[],
        true,
        vec![
            data(3, "tagged", "Premium_LRS"),
            data(0, "keep-me", "Premium_LRS"),
            data(1, "by-lun", "Premium_LRS"),
            data(2, "scratch", "Premium_LRS"),
            data(4, "shared", "Premium_LRS"),
            data(5, "ultra", "UltraSSD_LRS"),
            data(6, "v2", "PremiumV2_LRS"),
        ],
    );
    let info = vec![
        DiskInfo {
            id: disk_id("TAGGED"), // ids compare case-insensitively
            tags: [("Backup".to_string(), "Skip".to_string())].into(),
            max_shares: None,
            sku: None,
        },
        DiskInfo {
            id: disk_id("shared"),
            tags: Tags::new(),
            max_shares: Some(2),
            sku: Some("Premium_LRS".into()),
        },
        DiskInfo {
            id: disk_id("keep-me"),
            // The excluded tag's key with another value, and its value under another key.
            tags: [
                ("BACKUP".to_string(), "keep".to_string()),
                ("note".to_string(), "skip".to_string()),
            ]
            .into(),
            max_shares: Some(1),
            sku: Some("Premium_LRS".into()),
        },
    ];
    let got: Vec<(String, String)> = r
        .excluded_disks(&vm, &info)
        .into_iter()
        .map(|(id, why)| (id.name().unwrap().to_string(), why))
        .collect();
    let want: Vec<(String, String)> = [
        (
            "vm1-os",
            "ephemeral OS disk: not supported by restore points",
        ),
        ("by-lun", "excludeDisks.luns: LUN 1"),
        ("scratch", "excludeDisks.names: scratch"),
        ("tagged", "excludeDisks.tags: Backup=Skip"),
        (
            "shared",
            "shared disk (maxShares 2): not supported by restore points",
        ),
        ("ultra", "excludeDisks.skus: UltraSSD_LRS"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // PremiumV2 is not listed in skus, so it stays in (check_vm reports it for crash mode).
    assert_eq!(got, want);
}

/// `refusal` gives the reason `matches` says no, in the order the checks run.
#[test]
fn refusal_names_why_the_targets_do_not_select_a_vm() {
    let targets = |json: &str| -> crate::policy::Targets { serde_json::from_str(json).unwrap() };
    let other_sub = "00000000-0000-0000-0000-000000000002";
    let cases = [
        ("{}".to_string(), vec![], None),
        (
            format!(r#"{{"subscriptions":["{other_sub}"]}}"#),
            vec![],
            Some("the VM lies outside the rule's scopes"),
        ),
        (
            format!(r#"{{"subscriptions":["{SUB}"],"tags":{{"env":"prod","tier":"*"}}}}"#),
            vec![("ENV", "Prod"), ("tier", "db")],
            None,
        ),
        (
            r#"{"tags":{"env":"prod","tier":"*"}}"#.to_string(),
            vec![("env", "dev"), ("tier", "db")],
            Some("the VM lacks the rule's required tag env=prod"),
        ),
        (
            r#"{"tags":{"env":"prod","tier":"*"}}"#.to_string(),
            vec![("env", "prod")],
            Some("the VM lacks the rule's required tag tier=*"),
        ),
        (
            r#"{"excludeTags":{"noBackup":"*"}}"#.to_string(),
            vec![("nobackup", "yes")],
            Some("the VM opts out with the rule's excludeTags noBackup=*"),
        ),
        (
            r#"{"excludeTags":{"noBackup":"*"}}"#.to_string(),
            vec![("backup", "yes")],
            None,
        ),
        // Scope first, then required tags, then excludeTags.
        (
            format!(r#"{{"subscriptions":["{other_sub}"],"excludeTags":{{"noBackup":"*"}}}}"#),
            vec![("noBackup", "1")],
            Some("the VM lies outside the rule's scopes"),
        ),
    ];
    for (json, tags, want) in cases {
        let t = targets(&json);
        let vm = vm_with(&tags, false, vec![]);
        assert_eq!(t.refusal(&vm).as_deref(), want, "{json} {tags:?}");
        assert_eq!(t.matches(&vm), want.is_none(), "{json} {tags:?}");
    }
    let no_id = VirtualMachine::default();
    assert_eq!(
        targets("{}").refusal(&no_id).as_deref(),
        Some("the VM has no valid id")
    );
}

#[test]
fn nothing_is_excluded_by_default() {
    let vm = vm_with(&[], false, vec![data(0, "d0", "UltraSSD_LRS")]);
    assert!(rule().excluded_disks(&vm, &[]).is_empty());
}

#[test]
fn disk_info_from_a_disk_get() {
    let disk = Disk {
        id: Some(disk_id("d").to_string()),
        tags: Some([("a".to_string(), "b".to_string())].into()),
        sku: Some(DiskSku {
            name: Some("UltraSSD_LRS".into()),
        }),
        properties: Some(DiskProperties {
            max_shares: Some(3),
            disk_size_gb: None,
            ..Default::default()
        }),
        ..Default::default()
    };
    let info = DiskInfo::from_disk(&disk).unwrap();
    assert_eq!(info.id, disk_id("d"));
    assert_eq!(info.max_shares, Some(3));
    assert_eq!(info.sku.as_deref(), Some("UltraSSD_LRS"));
    assert!(DiskInfo::from_disk(&Disk::default()).is_none());
}

#[test]
fn retention_per_region_and_deadlines() {
    let r = rule();
    assert_eq!(r.retention_for_region(None).keep_last, 3);
    assert_eq!(r.retention_for_region(Some("westus2")).keep_last, 9);
    assert_eq!(r.retention_for_region(Some("West US 2")).keep_last, 9);
    // A copy without its own retention, and an unknown region, use the rule's.
    assert_eq!(r.retention_for_region(Some("northeurope")).keep_last, 3);
    assert_eq!(r.retention_for_region(Some("japaneast")).keep_last, 3);
    assert_eq!(r.deadline(Role::Local), time::Duration::minutes(30));
    assert_eq!(r.deadline(Role::Copy), time::Duration::hours(10));
    let regions: Vec<&str> = r.copy_regions().iter().map(|c| c.region.as_str()).collect();
    assert_eq!(regions, vec!["westus2", "northeurope"]);
}

/// Without a schedule of its own a rule's latest due tick is the timer's; with one, the
/// first timer tick after its latest occurrence that has come by `t`.
#[test]
fn latest_due_tick_is_the_first_timer_tick_after_an_occurrence_not_after_t() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let mut r = rule();
    for (t, want) in [
        (
            datetime!(2026-11-25 05:00 UTC),
            datetime!(2026-11-25 04:00 UTC),
        ),
        (
            datetime!(2026-11-25 04:00 UTC),
            datetime!(2026-11-25 04:00 UTC),
        ),
        (
            datetime!(2026-11-25 03:59 UTC),
            datetime!(2026-11-25 00:00 UTC),
        ),
    ] {
        assert_eq!(r.latest_due_tick(&timer, t).unwrap(), Some(want), "{t}");
    }
    r.schedule = Some("0 30 2 * * *".into()); // daily at 02:30: due at the 04:00 tick
    for (t, want) in [
        (
            datetime!(2026-11-25 05:00 UTC),
            datetime!(2026-11-25 04:00 UTC),
        ),
        (
            datetime!(2026-11-25 04:00 UTC),
            datetime!(2026-11-25 04:00 UTC),
        ),
        // 02:30 has come, its tick has not: the day before's.
        (
            datetime!(2026-11-25 03:00 UTC),
            datetime!(2026-11-24 04:00 UTC),
        ),
    ] {
        assert_eq!(r.latest_due_tick(&timer, t).unwrap(), Some(want), "{t}");
    }
}

/// `classify_tick`'s checks in order: a tick in the future (beyond the skew), a scheduled
/// tick, an on-demand tick too old, or within the spacing of the next or the previous
/// scheduled point; each bound at its edge. Timer every 4 h (00:00, 04:00, 08:00 …).
#[test]
fn classify_tick_table() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let plain = rule();
    let mut daily = rule();
    daily.schedule = Some("0 30 2 * * *".into()); // due at 04:00 only
    let d = |h: u8, m: u8| {
        datetime!(2026-11-25 00:00 UTC)
            + time::Duration::hours(h.into())
            + time::Duration::minutes(m.into())
    };
    let hm = |h: i64, m: i64| time::Duration::hours(h) + time::Duration::minutes(m);
    // (case, rule, tick, now, spacing, continued, Ok(kind) or Err(what the error says))
    type Case<'a> = (
        &'a str,
        &'a Rule,
        OffsetDateTime,
        OffsetDateTime,
        time::Duration,
        bool,
        Result<TickKind, &'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a timer tick",
            &plain,
            d(4, 0),
            d(5, 0),
            hm(1, 0),
            false,
            Ok(TickKind::Scheduled),
        ),
        (
            "a timer tick the rule is not due at",
            &daily,
            d(8, 0),
            d(8, 10),
            hm(1, 0),
            false,
            Ok(TickKind::OnDemand),
        ),
        (
            "the rule's due tick",
            &daily,
            d(4, 0),
            d(4, 10),
            hm(1, 0),
            false,
            Ok(TickKind::Scheduled),
        ),
        (
            "on demand, clear of both ticks",
            &plain,
            d(5, 30),
            d(5, 30),
            hm(1, 0),
            false,
            Ok(TickKind::OnDemand),
        ),
        (
            "exactly the skew ahead",
            &plain,
            d(5, 35),
            d(5, 30),
            hm(1, 0),
            false,
            Ok(TickKind::OnDemand),
        ),
        (
            "beyond the skew",
            &plain,
            d(5, 36),
            d(5, 30),
            hm(1, 0),
            false,
            Err("lies in the future"),
        ),
        (
            "exactly the max age old",
            &plain,
            d(4, 30),
            d(5, 30),
            hm(1, 0),
            false,
            Ok(TickKind::OnDemand),
        ),
        (
            "older than the max age",
            &plain,
            d(3, 30),
            d(5, 30),
            hm(1, 0),
            false,
            Err("too old"),
        ),
        (
            "a continuation may be a day old",
            &plain,
            d(3, 30),
            d(5, 30),
            hm(1, 0),
            true,
            Ok(TickKind::OnDemand),
        ),
        (
            "the next tick exactly the spacing away",
            &plain,
            d(6, 0),
            d(6, 0),
            hm(2, 0),
            false,
            Ok(TickKind::OnDemand),
        ),
        (
            "the next tick within the spacing",
            &plain,
            d(6, 1),
            d(6, 1),
            hm(2, 0),
            false,
            Err("within 119 min of the rule's next scheduled point"),
        ),
        (
            "the previous tick within the spacing",
            &plain,
            d(5, 0),
            d(5, 0),
            hm(3, 0),
            false,
            Err("60 min after the rule's scheduled point"),
        ),
        (
            "the previous tick within the spacing, the next one not",
            &plain,
            d(5, 59),
            d(5, 59),
            hm(2, 0),
            false,
            Err("119 min after"),
        ),
    ];
    for (case, r, tick, now, spacing, continued, want) in cases {
        let got = r.classify_tick(&timer, tick, now, spacing, continued);
        match want {
            Ok(kind) => assert_eq!(got, Ok(kind), "{case}"),
            Err(what) => {
                let e = got.expect_err(case);
                assert!(e.contains(what), "{case}: {e}");
            }
        }
    }
}

#[test]
fn rule_is_due_when_it_has_an_occurrence_since_the_previous_tick() {
    let timer = Schedule::parse("0 0 */4 * * *").unwrap();
    let mut r = rule();
    assert!(r.is_due(&timer, datetime!(2026-11-25 04:00 UTC)).unwrap());
    r.schedule = Some("0 30 2 * * *".into()); // daily at 02:30
    for (tick, want) in [
        (datetime!(2026-11-25 00:00 UTC), false),
        (datetime!(2026-11-25 04:00 UTC), true), // 02:30 lies in (00:00, 04:00]
        (datetime!(2026-11-25 08:00 UTC), false),
        (datetime!(2026-11-26 04:00 UTC), true),
    ] {
        assert_eq!(r.is_due(&timer, tick).unwrap(), want, "{tick}");
    }
    // An occurrence exactly at the tick counts for that tick only.
    r.schedule = Some("0 0 8 * * *".into());
    assert!(r.is_due(&timer, datetime!(2026-11-25 08:00 UTC)).unwrap());
    assert!(!r.is_due(&timer, datetime!(2026-11-25 12:00 UTC)).unwrap());
    r.schedule = Some("not a schedule".into());
    assert!(r.is_due(&timer, datetime!(2026-11-25 08:00 UTC)).is_err());
}
