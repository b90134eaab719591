//! The shipped example policies: both forms load, validate, are the same policy, survive a
//! JSON / TOML round trip, and resolve realistic VMs and a month of points the way the comments
//! in `examples/policy.toml` say.

use std::path::PathBuf;

use time::macros::datetime;
use vmrp::azure::models::{
    ConsistencyMode, DataDisk, ManagedDiskParameters, OsDisk, StorageProfile, VirtualMachine,
    VirtualMachineProperties,
};
use vmrp::azure::ResourceId;
use vmrp::messages::Role;
use vmrp::policy::{DiskInfo, Policy};
use vmrp::retention::{decide, PointState, PointView};

const PROD_SUB: &str = "7d3c5a1e-2b4f-4c8e-9a6d-1f0e2d3c4b5a";

fn example(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).join(name)
}

fn load_both() -> (Policy, Policy) {
    let toml = Policy::from_file(&example("policy.toml")).unwrap_or_else(|e| panic!("{e}"));
    let json = Policy::from_file(&example("policy.json")).unwrap_or_else(|e| panic!("{e}"));
    (toml, json)
}

#[test]
fn toml_and_json_examples_are_the_same_valid_policy() {
    let (toml, json) = load_both();
    assert_eq!(toml, json);
    assert_eq!(toml.rules.len(), 2);
    // Valid under the hourly timer the example is written for, and under the default 4-hourly.
    for timer in ["0 0 * * * *", "0 0 */4 * * *"] {
        assert_eq!(toml.validate_with_timer(timer), Ok(()), "timer {timer}");
    }
    // A 30-minute timer would put the dev rule's crash-consistent points 30 min apart.
    let problems = toml.validate_with_timer("0 */30 * * * *").unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].rule.as_deref(), Some("dev"));
}

#[test]
fn examples_round_trip_through_json_and_toml() {
    let (policy, _) = load_both();
    let json = serde_json::to_string_pretty(&policy).unwrap();
    assert_eq!(Policy::from_json_str(&json).unwrap(), policy);
    let toml = toml::to_string(&policy).unwrap();
    assert_eq!(
        Policy::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}")),
        policy
    );
}

#[test]
fn a_policy_with_only_required_fields_round_trips() {
    let minimal = Policy::from_json_str(
        r#"{"rules":[{"name":"all","targets":{},"retention":{"keepLast":3}}]}"#,
    )
    .unwrap();
    let toml = toml::to_string(&minimal).unwrap();
    assert_eq!(Policy::from_toml_str(&toml).unwrap(), minimal);
    let json = serde_json::to_string(&minimal).unwrap();
    assert_eq!(Policy::from_json_str(&json).unwrap(), minimal);
}

fn disk_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "disks", name).unwrap()
}

fn vm(sub: &str, rg: &str, tags: &[(&str, &str)], data: &[(i32, &str, &str)]) -> VirtualMachine {
    let managed = |name: &str, sku: &str| ManagedDiskParameters {
        id: Some(disk_id(sub, rg, name).to_string()),
        storage_account_type: Some(sku.to_string()),
        disk_encryption_set: None,
    };
    VirtualMachine {
        id: Some(
            ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "virtualMachines", "vm-a")
                .unwrap()
                .to_string(),
        ),
        name: Some("vm-a".into()),
        location: Some("eastus".into()),
        tags: Some(
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        properties: Some(VirtualMachineProperties {
            storage_profile: Some(StorageProfile {
                os_disk: Some(OsDisk {
                    name: Some("vm-a-os".into()),
                    managed_disk: Some(managed("vm-a-os", "Premium_LRS")),
                    ..Default::default()
                }),
                data_disks: Some(
                    data.iter()
                        .map(|(lun, name, sku)| DataDisk {
                            lun: *lun,
                            name: Some(name.to_string()),
                            managed_disk: Some(managed(name, sku)),
                            disk_size_gb: None,
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_prod_vm_resolves_as_the_example_comments_say() {
    let (policy, _) = load_both();
    let disks = [
        (0, "tempdb-scratch", "Premium_LRS"),
        (1, "logs", "Premium_LRS"),
        (2, "data", "UltraSSD_LRS"),
    ];
    let prod_vm = vm(PROD_SUB, "rg-app", &[("env", "prod")], &disks);
    let rule = policy.rule_for(&prod_vm).expect("prod rule matches");
    assert_eq!(rule.name, "prod");
    let info = [DiskInfo {
        id: disk_id(PROD_SUB, "rg-app", "logs"),
        tags: [("rp-exclude".to_string(), "true".to_string())].into(),
        max_shares: None,
        sku: Some("Premium_LRS".into()),
    }];
    let excluded: Vec<(String, String)> = rule
        .excluded_disks(&prod_vm, &info)
        .into_iter()
        .map(|(id, why)| (id.name().unwrap().to_string(), why))
        .collect();
    assert_eq!(
        excluded,
        vec![
            (
                "tempdb-scratch".to_string(),
                "excludeDisks.names: tempdb-scratch".to_string()
            ),
            (
                "logs".to_string(),
                "excludeDisks.tags: rp-exclude=true".to_string()
            ),
        ]
    );
    // Application-consistent points include the Ultra disk; nothing to report.
    assert_eq!(
        rule.consistency_for(&prod_vm).0,
        ConsistencyMode::ApplicationConsistent
    );
    assert!(rule.check_vm(&prod_vm, &info).is_empty());
    // The tag switches this VM to crash consistency, which cannot include the Ultra disk.
    let crash_vm = vm(
        PROD_SUB,
        "rg-app",
        &[("env", "prod"), ("rp-consistency", "CrashConsistent")],
        &disks,
    );
    let problems = rule.check_vm(&crash_vm, &info);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].to_string().contains("UltraSSD_LRS"));

    assert_eq!(rule.retention_for_region(Some("westus2")).keep_last, 4);
    assert_eq!(rule.retention_for_region(None).keep_last, 6);
    assert_eq!(rule.deadline(Role::Copy), time::Duration::days(14));

    // Opted out by tag, and outside every scope.
    let skipped = vm(
        PROD_SUB,
        "rg-app",
        &[("env", "prod"), ("rp-skip", "")],
        &disks,
    );
    assert!(policy.rule_for(&skipped).is_none());
    let elsewhere = vm(
        "11111111-1111-4111-8111-111111111111",
        "rg-app",
        &[("env", "prod")],
        &disks,
    );
    assert!(policy.rule_for(&elsewhere).is_none());
    assert!(!policy.covers(&elsewhere.resource_id().unwrap()));
}

#[test]
fn a_dev_vm_leaves_ultra_disks_out_explicitly() {
    let (policy, _) = load_both();
    let dev_vm = vm(
        PROD_SUB,
        "RG-DEV",
        &[],
        &[(0, "data", "UltraSSD_LRS"), (3, "scratch", "Premium_LRS")],
    );
    let rule = policy
        .rule_for(&dev_vm)
        .expect("dev rule matches by resource group");
    assert_eq!(rule.name, "dev");
    assert_eq!(
        rule.consistency_for(&dev_vm).0,
        ConsistencyMode::CrashConsistent
    );
    let reasons: Vec<String> = rule
        .excluded_disks(&dev_vm, &[])
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    assert_eq!(
        reasons,
        vec![
            "excludeDisks.skus: UltraSSD_LRS",
            "excludeDisks.luns: LUN 3"
        ]
    );
    assert!(rule.check_vm(&dev_vm, &[]).is_empty());
}

#[test]
fn prod_retention_over_a_month_of_four_hourly_points() {
    let (policy, _) = load_both();
    let retention = &policy.rule_named("prod").unwrap().retention;
    let collection = ResourceId::new_in_group(
        PROD_SUB,
        "rg-restore-points",
        "Microsoft.Compute",
        "restorePointCollections",
        "rpc-vm-a",
    )
    .unwrap();
    let start = datetime!(2026-11-01 00:00 UTC);
    let points: Vec<PointView> = (0..180)
        .map(|i| {
            let created = start + time::Duration::hours(4 * i);
            let name = format!("rp-{i:03}");
            PointView::new(
                collection.child("restorePoints", &name),
                created,
                PointState::Settled,
            )
        })
        .collect();
    let kept: Vec<String> = decide(&points, retention)
        .into_iter()
        .filter(|(_, v)| !v.is_delete())
        .map(|(id, _)| id.name().unwrap().to_string())
        .collect();
    // Baseline (Nov 1 00:00); 20:00 of Nov 15 and 22 (weekly, ISO W46/W47); 20:00 of Nov 24–29
    // (daily); all six of Nov 30 (keepLast 6; also the daily, weekly W49 and monthly pick).
    let want: Vec<String> = [0, 89, 131, 143, 149, 155, 161, 167, 173]
        .into_iter()
        .chain(174..180)
        .map(|i| format!("rp-{i:03}"))
        .collect();
    assert_eq!(kept, want);
}
