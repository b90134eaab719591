//! Tests of policy validation: each check's table and the messages it gives.

use super::*;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

/// A valid one-rule policy as JSON, with `rule_json` merged into the rule.
fn policy_with(rule_fields: &str) -> Policy {
    let extra = if rule_fields.is_empty() {
        String::new()
    } else {
        format!(",{rule_fields}")
    };
    let text = format!(
        r#"{{"rules":[{{"name":"prod","targets":{{}},"retention":{{"keepLast":5}}{extra}}}]}}"#
    );
    // Through `Value`, where a repeated key replaces the earlier one, so `rule_fields` can
    // override `name`, `targets` or `retention`.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut policy: Policy = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}: {text}"));
    policy.normalize();
    policy
}

fn problems_of(p: &Policy, timer: Option<&str>) -> Vec<String> {
    p.problems(timer).iter().map(ToString::to_string).collect()
}

/// The fields named by the problems of a one-rule policy with `rule_fields`.
fn problem_fields(rule_fields: &str) -> Vec<String> {
    policy_with(rule_fields)
        .problems(None)
        .into_iter()
        .map(|p| p.field)
        .collect()
}

/// Values `policy check` accepted that then wrapped or panicked: keepLast near u32::MAX
/// passed the 500-point check by overflow ("up to 1 points per VM"), a far deadline made
/// CreateRestorePoint panic, a far orphan expiry made every timer run panic.
#[test]
fn out_of_range_numbers_are_refused_naming_the_field() {
    let max = u32::MAX;
    for (fields, want) in [
        (
            format!(r#""retention":{{"keepLast":{}}}"#, max - 2),
            "rule \"prod\": retention.keepLast: 4294967293 is out of range: at most 500",
        ),
        (
            format!(r#""retention":{{"keepLast":3,"daily":{max}}}"#),
            "rule \"prod\": retention.daily: 4294967295 is out of range: at most 500",
        ),
        (
            format!(r#""copies":[{{"region":"westus2","retention":{{"keepLast":{max}}}}}]"#),
            "copies[0].retention.keepLast: 4294967295 is out of range",
        ),
        (
            format!(r#""deadlines":{{"localMinutes":{max}}}"#),
            "deadlines.localMinutes: 4294967295 is out of range: at most 10080",
        ),
        (
            format!(r#""deadlines":{{"copyMinutes":{max}}}"#),
            "deadlines.copyMinutes: 4294967295 is out of range: at most 43200",
        ),
        (
            format!(r#""deadlines":{{"maxRetries":{max}}}"#),
            "deadlines.maxRetries: 4294967295 is out of range: at most 10",
        ),
    ] {
        let problems = problems_of(&policy_with(&fields), None);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{fields}: {problems:?}"
        );
    }
    // No overflow in the point budget either: the sum saturates and is reported.
    let problems = problems_of(
        &policy_with(&format!(
            r#""retention":{{"keepLast":{max},"floor":{max}}}"#
        )),
        None,
    );
    assert!(
        problems.iter().any(|p| p.contains("restore points per VM")),
        "{problems:?}"
    );
    let mut p = policy_with("");
    p.orphans.expire_after_days = Some(max);
    assert_eq!(
        problems_of(&p, None),
        vec!["orphans.expireAfterDays: 4294967295 is out of range: at most 3650 (10 years); omit the field to keep orphans forever"]
    );
    p.orphans.expire_after_days = Some(MAX_ORPHAN_DAYS);
    p.rules[0].deadlines.local_minutes = MAX_LOCAL_DEADLINE_MINUTES;
    p.rules[0].deadlines.copy_minutes = MAX_COPY_DEADLINE_MINUTES;
    p.rules[0].deadlines.max_retries = MAX_RETRIES;
    p.rules[0].retention.keep_last = 400;
    p.rules[0].retention.floor = 400;
    assert!(
        problems_of(&p, None).is_empty(),
        "{:?}",
        problems_of(&p, None)
    );
}

#[test]
fn instant_access_duration_and_consistency_are_checked() {
    let cases = [
        (r#""instantAccess":{}"#, vec![]),
        (r#""instantAccess":{"durationMinutes":60}"#, vec![]),
        (r#""instantAccess":{"durationMinutes":300}"#, vec![]),
        (
            r#""instantAccess":{"durationMinutes":59}"#,
            vec!["instantAccess.durationMinutes"],
        ),
        (
            r#""instantAccess":{"durationMinutes":301}"#,
            vec!["instantAccess.durationMinutes"],
        ),
        (
            r#""consistency":"CrashConsistent","instantAccess":{}"#,
            vec!["instantAccess"],
        ),
        // A tag may pick application consistency for some VMs: a warning, not a problem.
        (
            r#""consistency":"CrashConsistent","consistencyTag":"rp-mode","instantAccess":{}"#,
            vec![],
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(problem_fields(fields), want, "{fields}");
    }
    let bad: Result<Policy, _> = serde_json::from_str(
        r#"{"rules":[{"name":"p","targets":{},"retention":{"keepLast":1},"instantAccess":{"minutes":5}}]}"#,
    );
    assert!(bad.is_err(), "unknown instantAccess fields are refused");
}

#[test]
fn the_minimal_policy_is_valid() {
    assert_eq!(
        problems_of(&policy_with(""), Some("0 0 */4 * * *")),
        Vec::<String>::new()
    );
}

/// Input snippet (merged into a valid rule) → the problem text expected.
#[test]
fn each_rule_rejects_what_azure_would() {
    let sub = SUB;
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        // Spacing.
        (r#""schedule":"0 0 * * * *""#.into(), None,
         r#"rule "prod": schedule: "0 0 * * * *" puts points 1 h apart; Azure supports application-consistent restore points at most every 3 h"#),
        (r#""schedule":"0 */30 * * * *","consistency":"CrashConsistent""#.into(), None,
         "puts points 30 min apart; Azure supports crash-consistent restore points at most every 1 h"),
        (r#""schedule":"0 0 * * * *","consistency":"CrashConsistent","consistencyTag":"mode""#.into(), None,
         "at most every 3 h (consistencyTag lets a VM choose ApplicationConsistent)"),
        (String::new(), Some("0 0 */2 * * *"),
         r#"rule "prod": schedule: not set, so points follow the timer "0 0 */2 * * *", 2 h apart"#),
        (r#""schedule":"0 0 */3 * * *""#.into(), Some("0 0 */2 * * *"),
         "run at the ticks of the timer \"0 0 */2 * * *\" puts points 2 h apart"),
        (r#""schedule":"0 0 0 30 2 *""#.into(), Some("0 0 */4 * * *"), "never fires"),
        (r#""schedule":"every day""#.into(), None, "schedule: invalid NCRONTAB schedule \"every day\""),
        (r#""schedule":"0 0 0 30 2 *""#.into(), None, "never fires"),
        // Names.
        (r#""name":"""#.into(), None, "rules[0]: name: must not be empty"),
        // Consistency.
        (r#""consistency":"FileSystemConsistent""#.into(), None,
         "consistency: \"FileSystemConsistent\" cannot be requested: use CrashConsistent or ApplicationConsistent"),
        (r#""consistencyTag":" ""#.into(), None, "consistencyTag: must not be empty"),
        // Retention.
        (r#""retention":{"keepLast":0}"#.into(), None,
         "retention.keepLast: 0 with no daily/weekly/monthly tier keeps no point but the baseline"),
        (r#""retention":{"keepLast":2,"floor":3}"#.into(), None,
         "retention.floor: 3 exceeds keepLast 2"),
        (r#""retention":{"keepLast":0,"daily":2,"floor":3}"#.into(), None,
         "retention.floor: 3 exceeds the 2 points the tiers keep"),
        (r#""retention":{"keepLast":3,"weekly":0}"#.into(), None, "retention.weekly: 0 keeps nothing"),
        (r#""retention":{"keepLast":600}"#.into(), None,
         "rule \"prod\": retention: up to 603 restore points per VM (local 603;"),
        (r#""retention":{"keepLast":100,"daily":100},"copies":[{"region":"westus2"},{"region":"northeurope","retention":{"keepLast":98}}]"#.into(), None,
         "copies: up to 507 restore points per VM (local 203 + westus2 203 + northeurope 101;"),
        (r#""copies":[{"region":"westus2","retention":{"keepLast":0}}]"#.into(), None,
         "copies[0].retention.keepLast: 0 with no"),
        // Regions.
        (r#""copies":[{"region":"westus9"}]"#.into(), None,
         r#"copies[0].region: "westus9" is not an Azure region vmrp knows"#),
        (r#""copies":[{"region":"westus2"},{"region":"West US 2"}]"#.into(), None,
         "copies[1].region: westus2 is already a copy target in copies[0]"),
        (r#""copies":[{"region":"westus2","resourceGroup":"rg/dr"}]"#.into(), None,
         "copies[0].resourceGroup: \"rg/dr\" is not a resource group name: '/' is not allowed"),
        (r#""collectionResourceGroup":"rg.""#.into(), None,
         "collectionResourceGroup: \"rg.\" is not a resource group name: it must not end with a period"),
        // Targets.
        (r#""targets":{"subscriptions":["prod-sub"]}"#.into(), None,
         r#"targets.subscriptions[0]: "prod-sub" is not a subscription id (a GUID)"#),
        (format!(r#""targets":{{"resourceGroups":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"]}}"#), None,
         "targets.resourceGroups[0]: \"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1\" is not a resource group id"),
        (r#""targets":{"resourceGroups":["rg-prod"]}"#.into(), None,
         "targets.resourceGroups[0]: invalid ARM resource id \"rg-prod\""),
        (r#""targets":{"resourceGroups":["/subscriptions/x/resourceGroups/rg"]}"#.into(), None,
         "subscription \"x\" is not a GUID"),
        (format!(r#""targets":{{"vms":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/disks/d1"]}}"#), None,
         "targets.vms[0]: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/disks/d1 is not a VM id"),
        (r#""targets":{"tags":{"":"x"}}"#.into(), None, "targets.tags: tag names must not be empty"),
        // Disks.
        (r#""excludeDisks":{"luns":[64]}"#.into(), None, "excludeDisks.luns[0]: 64 is not a LUN (0 to 63)"),
        (r#""excludeDisks":{"skus":["Ultra"]}"#.into(), None,
         "excludeDisks.skus[0]: \"Ultra\" is not a disk SKU; expected one of"),
        (r#""excludeDisks":{"names":[""]}"#.into(), None, "excludeDisks.names[0]: must not be empty"),
        // Deadlines.
        (r#""deadlines":{"localMinutes":0}"#.into(), None, "deadlines.localMinutes: 0 would report"),
        (r#""deadlines":{"copyMinutes":0}"#.into(), None, "deadlines.copyMinutes: 0 would report"),
        // Timer.
        (String::new(), Some("often"), "timer schedule (VMRP_SCHEDULE): invalid NCRONTAB schedule"),
    ];
    for (snippet, timer, want) in cases {
        let got = problems_of(&policy_with(&snippet), timer);
        assert!(
            got.iter().any(|g| g.contains(want)),
            "snippet {snippet} (timer {timer:?}): expected a problem containing\n  {want}\ngot {got:#?}"
        );
    }
}

#[test]
fn accepted_edge_cases_give_no_problem() {
    let sub = SUB;
    for (snippet, timer) in [
        (r#""schedule":"0 0 */3 * * *""#.to_string(), None),
        (
            r#""schedule":"0 0 * * * *","consistency":"CrashConsistent""#.into(),
            None,
        ),
        (
            r#""schedule":"0 0 * * * *","consistency":"CrashConsistent""#.into(),
            Some("0 */5 * * * *"),
        ),
        // Daily at 02:30 under a 5-minute timer: once a day.
        (r#""schedule":"0 30 2 * * *""#.into(), Some("0 */5 * * * *")),
        (String::new(), Some("0 0 */3 * * *")),
        (
            r#""retention":{"keepLast":0,"daily":7,"weekly":4,"monthly":12}"#.into(),
            None,
        ),
        (r#""retention":{"keepLast":5,"floor":5}"#.into(), None),
        (r#""retention":{"keepLast":496,"floor":0}"#.into(), None), // 496 + 1 + 2 = 499
        (
            r#""copies":[{"region":"West Europe","resourceGroup":"rg-dr_(weu).1"}]"#.into(),
            None,
        ),
        (
            format!(
                r#""targets":{{"subscriptions":["{sub}"],"resourceGroups":["/subscriptions/{sub}/resourceGroups/rg-a"],"vms":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"]}}"#
            ),
            None,
        ),
        (
            r#""excludeDisks":{"luns":[0,63],"skus":["ultrassd_lrs","PremiumV2_LRS"]}"#.into(),
            None,
        ),
    ] {
        let got = problems_of(&policy_with(&snippet), timer);
        assert!(
            got.is_empty(),
            "snippet {snippet} (timer {timer:?}): {got:#?}"
        );
    }
}

#[test]
fn exactly_500_points_is_accepted_and_501_rejected() {
    // keepLast 497 + baseline 1 + in flight 2 = 500.
    let ok = policy_with(r#""retention":{"keepLast":497}"#);
    assert!(ok.validate().is_ok());
    let bad = policy_with(r#""retention":{"keepLast":498}"#);
    let problems = bad.validate().unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0]
        .message
        .starts_with("up to 501 restore points per VM"));
}

#[test]
fn policy_wide_problems() {
    let empty: Policy = serde_json::from_str(r#"{"rules":[]}"#).unwrap();
    assert_eq!(
        problems_of(&empty, None),
        vec!["rules: empty: the policy selects no VM"]
    );

    let dup: Policy = serde_json::from_str(
        r#"{"rules":[
                {"name":"a","targets":{"tags":{"env":"prod"}},"retention":{"keepLast":1}},
                {"name":"A","targets":{"tags":{"env":"dev"}},"retention":{"keepLast":1}}]}"#,
    )
    .unwrap();
    assert_eq!(
        problems_of(&dup, None),
        vec![
            r#"rule "A": name: duplicate: rules[0] has the same name (names are case-insensitive)"#
        ]
    );

    let shadowing: Policy = serde_json::from_str(
        r#"{"rules":[
                {"name":"all","targets":{},"retention":{"keepLast":1}},
                {"name":"never","targets":{"tags":{"env":"dev"}},"retention":{"keepLast":1}}]}"#,
    )
    .unwrap();
    assert_eq!(
        problems_of(&shadowing, None),
        vec![
            r#"rule "all": targets: selects every VM, so the 1 rule(s) after it never apply (the first matching rule wins)"#
        ]
    );
}

#[test]
fn problems_serialise_for_json_output() {
    let p = policy_with(r#""deadlines":{"localMinutes":0}"#);
    let json = serde_json::to_value(p.problems(None)).unwrap();
    assert_eq!(json[0]["rule"], "prod");
    assert_eq!(json[0]["index"], 0);
    assert_eq!(json[0]["field"], "deadlines.localMinutes");
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::hours(3)), "3 h");
    assert_eq!(human(Duration::minutes(90)), "1 h 30 min");
    assert_eq!(human(Duration::minutes(5)), "5 min");
    assert_eq!(human(Duration::seconds(0)), "0 s");
}

mod per_vm {
    use super::*;
    use crate::azure::models::{
        DataDisk, ManagedDiskParameters, OsDisk, StorageProfile, VirtualMachineProperties,
    };

    fn vm(location: &str, tags: &[(&str, &str)], data: &[(i32, &str, &str)]) -> VirtualMachine {
        let disk = |name: &str, sku: &str| ManagedDiskParameters {
            id: Some(
                ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", name)
                    .unwrap()
                    .to_string(),
            ),
            storage_account_type: Some(sku.to_string()),
            disk_encryption_set: None,
        };
        VirtualMachine {
            id: Some(
                ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "virtualMachines", "vm1")
                    .unwrap()
                    .to_string(),
            ),
            name: Some("vm1".into()),
            location: Some(location.into()),
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            properties: Some(VirtualMachineProperties {
                storage_profile: Some(StorageProfile {
                    os_disk: Some(OsDisk {
                        name: Some("os".into()),
                        managed_disk: Some(disk("os", "Premium_LRS")),
                        ..Default::default()
                    }),
                    data_disks: Some(
                        data.iter()
                            .map(|(lun, name, sku)| DataDisk {
                                lun: *lun,
                                name: Some(name.to_string()),
                                managed_disk: Some(disk(name, sku)),
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

    fn check(rule_fields: &str, vm: &VirtualMachine) -> Vec<String> {
        let rule = policy_with(rule_fields).rules.remove(0);
        rule.check_vm(vm, &[])
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn instant_access_applies_to_premium_v2_and_ultra_disks_of_application_consistent_points() {
        let fast = vm("eastus", &[], &[(0, "v2", "PremiumV2_LRS")]);
        let plain = vm("eastus", &[], &[(0, "std", "Premium_LRS")]);
        let ia = r#""instantAccess":{"durationMinutes":120}"#;
        assert!(check(ia, &fast).is_empty());
        let got = check(ia, &plain);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("instantAccess: VM") && got[0].contains("does not apply"),
            "{got:?}"
        );
        let rule = policy_with(ia).rules.remove(0);
        let applies = |v: &VirtualMachine, mode: ConsistencyMode, excluded: &[ResourceId]| {
            rule.instant_access_for(v, &[], excluded, &mode)
                .and_then(|i| i.duration_minutes)
        };
        assert_eq!(
            applies(&fast, ConsistencyMode::ApplicationConsistent, &[]),
            Some(120)
        );
        assert_eq!(applies(&fast, ConsistencyMode::CrashConsistent, &[]), None);
        assert_eq!(
            applies(&plain, ConsistencyMode::ApplicationConsistent, &[]),
            None
        );
        let v2_id = fast.disks()[1].managed_disk_id.clone().unwrap();
        assert_eq!(
            applies(
                &fast,
                ConsistencyMode::ApplicationConsistent,
                std::slice::from_ref(&v2_id)
            ),
            None,
            "an excluded disk gets no instant access"
        );
        // The Disk GET's SKU of that disk wins over the VM model's (a converted disk), and
        // only for that disk.
        let got_premium = DiskInfo {
            id: v2_id,
            tags: Default::default(),
            max_shares: None,
            sku: Some("Premium_LRS".into()),
        };
        assert!(rule
            .instant_access_for(
                &fast,
                &[got_premium],
                &[],
                &ConsistencyMode::ApplicationConsistent
            )
            .is_none());
    }

    #[test]
    fn crash_mode_rejects_ultra_and_premium_v2_unless_excluded() {
        let v = vm(
            "eastus",
            &[],
            &[
                (0, "fast", "UltraSSD_LRS"),
                (1, "v2", "PremiumV2_LRS"),
                (2, "std", "Premium_LRS"),
            ],
        );
        let got = check(r#""consistency":"CrashConsistent""#, &v);
        assert_eq!(
            got,
            vec![
                r#"rule "prod": consistency: VM vm1: crash-consistent restore points do not support UltraSSD_LRS disks, and data disk fast (LUN 0) is one; exclude it (excludeDisks.skus, names or luns) or use ApplicationConsistent"#,
                r#"rule "prod": consistency: VM vm1: crash-consistent restore points do not support PremiumV2_LRS disks, and data disk v2 (LUN 1) is one; exclude it (excludeDisks.skus, names or luns) or use ApplicationConsistent"#,
            ]
        );
        // Excluded by SKU and by LUN: fine.
        assert!(check(r#""consistency":"CrashConsistent","excludeDisks":{"skus":["UltraSSD_LRS"],"luns":[1]}"#, &v).is_empty());
        // Application-consistent points support both.
        assert!(check("", &v).is_empty());
        // The tag override decides the mode.
        let tagged = vm(
            "eastus",
            &[("mode", "CrashConsistent")],
            &[(0, "fast", "UltraSSD_LRS")],
        );
        assert_eq!(check(r#""consistencyTag":"mode""#, &tagged).len(), 1);
    }

    /// The support matrix's VM-level cases: confidential VMs are refused in any mode,
    /// sizes without Premium storage and write-accelerated disks in crash mode only;
    /// Trusted Launch is supported; ReadWrite caching and Intel v6+ sizes with several
    /// data disks are caveats (warnings), not refusals. The old check_vm knew none of them.
    #[test]
    fn unsupported_vms_write_accelerated_disks_and_caveats() {
        let with = |size: &str, security: Option<&str>, wa_lun0: bool| {
            let mut v = vm(
                "eastus",
                &[],
                &[(0, "a", "Premium_LRS"), (1, "b", "Premium_LRS")],
            );
            let props = v.properties.as_mut().unwrap();
            props.hardware_profile = Some(serde_json::json!({ "vmSize": size }));
            props.security_profile = security.map(|t| serde_json::json!({ "securityType": t }));
            let data = props
                .storage_profile
                .as_mut()
                .unwrap()
                .data_disks
                .as_mut()
                .unwrap();
            data[0].write_accelerator_enabled = Some(wa_lun0);
            v
        };
        let crash = r#""consistency":"CrashConsistent""#;
        let refusing = |fields: &str, v: &VirtualMachine| -> Vec<String> {
            let rule = policy_with(fields).rules.remove(0);
            rule.check_vm(v, &[])
                .into_iter()
                .filter(PolicyProblem::refuses_create)
                .map(|p| p.to_string())
                .collect()
        };
        // (case, rule fields, VM, refusals wanted: substrings, in order)
        let cases: Vec<(&str, &str, VirtualMachine, Vec<&str>)> = vec![
            ("plain", crash, with("Standard_D4s_v5", None, false), vec![]),
            (
                "trusted launch, crash",
                crash,
                with("Standard_D4s_v5", Some("TrustedLaunch"), false),
                vec![],
            ),
            (
                "trusted launch, app",
                "",
                with("Standard_D4s_v5", Some("TrustedLaunch"), false),
                vec![],
            ),
            (
                "confidential, app",
                "",
                with("Standard_DC4as_v5", Some("ConfidentialVM"), false),
                vec!["unsupported: VM vm1 is a confidential VM"],
            ),
            (
                "confidential, crash",
                crash,
                with("Standard_DC4as_v5", Some("ConfidentialVM"), false),
                vec!["unsupported: VM vm1 is a confidential VM"],
            ),
            (
                "no premium, crash",
                crash,
                with("Standard_D4_v5", None, false),
                vec!["consistency: VM vm1: crash-consistent restore points need a VM size that supports Premium storage, and Standard_D4_v5 does not"],
            ),
            ("no premium, app", "", with("Standard_D4_v5", None, false), vec![]),
            (
                "write-accelerated, crash",
                crash,
                with("Standard_M8ms", None, true),
                vec!["consistency: VM vm1: crash-consistent restore points do not support write-accelerated disks, and data disk a (LUN 0) is one"],
            ),
            ("write-accelerated, app", "", with("Standard_M8ms", None, true), vec![]),
            (
                "write-accelerated, excluded by LUN",
                r#""consistency":"CrashConsistent","excludeDisks":{"luns":[0]}"#,
                with("Standard_M8ms", None, true),
                vec![],
            ),
        ];
        for (case, fields, v, want) in cases {
            let got = refusing(fields, &v);
            assert_eq!(got.len(), want.len(), "{case}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{case}: {g}");
            }
        }
        // Caveats: warnings only.
        let mut v = with("Standard_D4s_v6", None, false);
        v.properties
            .as_mut()
            .unwrap()
            .storage_profile
            .as_mut()
            .unwrap()
            .os_disk
            .as_mut()
            .unwrap()
            .caching = Some("ReadWrite".into());
        let rule = policy_with(crash).rules.remove(0);
        let problems = rule.check_vm(&v, &[]);
        assert!(problems.iter().all(|p| !p.refuses_create()), "{problems:?}");
        let caveats: Vec<String> = problems
            .iter()
            .filter(|p| p.field == FIELD_CONSISTENCY_CAVEAT)
            .map(|p| p.message.clone())
            .collect();
        assert_eq!(caveats.len(), 2, "{caveats:?}");
        assert!(caveats[0].contains("ReadWrite host caching (OS disk os)"));
        assert!(caveats[1].contains("Standard_D4s_v6") && caveats[1].contains("2 included"));
        // App mode: none at all.
        assert!(policy_with("").rules.remove(0).check_vm(&v, &[]).is_empty());
        // Two data disks on a v5 size, or one (the other excluded) on a v6 size: no
        // multi-disk caveat (it needs both).
        let plain = with("Standard_D4s_v5", None, false);
        assert_eq!(rule.check_vm(&plain, &[]), vec![]);
        let one_data_disk =
            policy_with(r#""consistency":"CrashConsistent","excludeDisks":{"luns":[1]}"#)
                .rules
                .remove(0);
        let v6 = with("Standard_D4s_v6", None, false);
        assert_eq!(one_data_disk.check_vm(&v6, &[]), vec![]);
        assert_eq!(
            rule.check_vm(&v6, &[]).len(),
            1,
            "two data disks on v6: the caveat"
        );
    }

    #[test]
    fn skip_backup_protected_needs_subscription_targets() {
        let rg = format!(
            r#""targets":{{"resourceGroups":["/subscriptions/{SUB}/resourceGroups/rg"]}},"skipBackupProtected":true"#
        );
        let got = problems_of(&policy_with(&rg), None);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(r#"rule "prod": skipBackupProtected: needs targets.subscriptions"#),
            "{got:?}"
        );
        let sub = format!(r#""targets":{{"subscriptions":["{SUB}"]}},"skipBackupProtected":true"#);
        assert!(problems_of(&policy_with(&sub), None).is_empty());
        assert!(policy_with(&sub).rules[0].skip_backup_protected);
    }

    #[test]
    fn disk_get_sku_wins_over_the_vm_model() {
        let v = vm("eastus", &[], &[(0, "d", "Premium_LRS")]);
        let rule = policy_with(r#""consistency":"CrashConsistent""#)
            .rules
            .remove(0);
        let info = DiskInfo {
            id: ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", "d").unwrap(),
            tags: Default::default(),
            max_shares: None,
            sku: Some("UltraSSD_LRS".into()),
        };
        let problems = rule.check_vm(&v, &[info]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The GET's SKU is the one of the disk it describes, not of another disk of the VM.
        assert!(
            problems[0]
                .message
                .contains("UltraSSD_LRS disks, and data disk d (LUN 0) is one"),
            "{problems:?}"
        );
    }

    #[test]
    fn copy_to_the_vms_own_region_is_rejected() {
        let v = vm("westus2", &[], &[]);
        assert_eq!(
            check(
                r#""copies":[{"region":"eastus"},{"region":"West US 2"}]"#,
                &v
            ),
            vec![
                r#"rule "prod": copies[1].region: VM vm1 is in westus2: a cross-region copy needs another region"#
            ]
        );
        assert!(check(r#""copies":[{"region":"eastus"}]"#, &v).is_empty());
    }
}

/// `human`, the durations the spacing messages print: each unit only when it is not zero,
/// and `0 s` for nothing.
#[test]
fn human_durations_name_each_nonzero_unit() {
    let table = [
        (Duration::hours(3), "3 h"),
        (Duration::minutes(90), "1 h 30 min"),
        (Duration::minutes(5), "5 min"),
        (Duration::seconds(30), "30 s"),
        (Duration::seconds(3605), "1 h 5 s"),
        (Duration::seconds(3661), "1 h 1 min 1 s"),
        (Duration::ZERO, "0 s"),
    ];
    for (d, want) in table {
        assert_eq!(human(d), want, "{d}");
    }
}

/// Subscription ids are GUIDs in their 36-character hyphenated form only (the form ARM ids
/// carry): `Uuid::try_parse` also takes the 32-digit, braced and URN forms.
#[test]
fn is_guid_takes_the_hyphenated_form_only() {
    let table = [
        ("00000000-0000-0000-0000-000000000001", true),
        ("00000000000000000000000000000001", false),
        ("{00000000-0000-0000-0000-000000000001}", false),
        ("urn:uuid:00000000-0000-0000-0000-000000000001", false),
        ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", false),
        ("", false),
    ];
    for (s, want) in table {
        assert_eq!(is_guid(s), want, "{s:?}");
    }
}

/// Resource group names: 1 to 90 characters, both ends included.
#[test]
fn resource_group_names_are_1_to_90_characters() {
    let table = [
        (String::new(), false),
        ("a".to_string(), true),
        ("a".repeat(90), true),
        ("a".repeat(91), false),
    ];
    for (name, ok) in table {
        assert_eq!(
            resource_group_name_problem(&name).is_none(),
            ok,
            "{} characters",
            name.len()
        );
    }
}

/// The spacing message names `consistencyTag` only when the tag lets a crash-consistent rule's
/// VMs ask for application consistency; a rule schedule that no timer tick meets within a year
/// (29 February, from 2026) is refused, not accepted as spacing-free.
#[test]
fn spacing_messages_say_what_the_tag_changes_and_refuse_a_schedule_the_timer_never_meets() {
    // (rule fields, timer, the one problem wanted)
    let table = [
        (
            r#""schedule":"0 */30 * * * *","consistency":"CrashConsistent""#,
            None,
            r#"rule "prod": schedule: "0 */30 * * * *" puts points 30 min apart; Azure supports crash-consistent restore points at most every 1 h"#,
        ),
        (
            r#""schedule":"0 0 * * * *","consistencyTag":"mode""#,
            None,
            r#"rule "prod": schedule: "0 0 * * * *" puts points 1 h apart; Azure supports application-consistent restore points at most every 3 h"#,
        ),
        (
            r#""schedule":"0 30 1 29 2 *""#,
            Some("0 0 * * * *"),
            r#"rule "prod": schedule: "0 30 1 29 2 *" has no occurrence between two ticks of the timer "0 0 * * * *" within a year: the rule would create no point"#,
        ),
        (
            // A timer with no tick exactly a year (366 days) after the scan's start.
            r#""schedule":"0 30 1 29 2 *""#,
            Some("0 30 * * * *"),
            r#"rule "prod": schedule: "0 30 1 29 2 *" has no occurrence between two ticks of the timer "0 30 * * * *" within a year: the rule would create no point"#,
        ),
    ];
    for (fields, timer, want) in table {
        assert_eq!(
            problems_of(&policy_with(fields), timer),
            vec![want],
            "{fields}"
        );
    }
    // 2 January on a Saturday: first 2027-01-02T00:00Z, the timer tick exactly at the end of
    // the scanned year (366 days after 2026-01-01), which counts: the rule does fire.
    assert_eq!(
        problems_of(
            &policy_with(r#""schedule":"0 0 0 2 1 6""#),
            Some("0 0 * * * *")
        ),
        Vec::<String>::new()
    );
    // An every-minute timer: the scan's 20,000 ticks end after ~14 days, short of the year, so
    // "never" cannot be concluded and the rule is not refused for it.
    assert_eq!(
        problems_of(
            &policy_with(r#""schedule":"0 30 1 29 2 *""#),
            Some("0 * * * * *")
        ),
        Vec::<String>::new()
    );
}

/// Retention at its edges, as the exact fields refused: a count of 500 is in range (only the
/// point budget it blows is reported), a floor equal to what the tiers keep is accepted, and
/// the budget names `retention` only when the local collection alone exceeds 500.
#[test]
fn retention_edges_give_exactly_these_problems() {
    let cases: [(&str, &[&str]); 6] = [
        (r#""retention":{"keepLast":500}"#, &["retention"]),
        (
            r#""retention":{"keepLast":3,"monthly":500}"#,
            &["retention"],
        ),
        (
            r#""retention":{"keepLast":3,"daily":501}"#,
            &["retention.daily", "retention"],
        ),
        (r#""retention":{"keepLast":0,"daily":2,"floor":2}"#, &[]),
        (
            r#""retention":{"keepLast":0,"daily":2,"floor":3}"#,
            &["retention.floor"],
        ),
        // keepLast 497 + 1 baseline + 2 in flight = 500 locally, + 4 for the copy.
        (
            r#""retention":{"keepLast":497},"copies":[{"region":"westus2","retention":{"keepLast":1}}]"#,
            &["copies"],
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(problem_fields(fields), want, "{fields}");
    }
}

/// `max_points_per_vm` counts what `check_point_budget` counts: each collection's
/// `max_settled` plus the points in flight, a copy without its own retention at the rule's.
#[test]
fn max_points_per_vm_adds_every_collection() {
    let cases = [
        ("", 5 + 1 + IN_FLIGHT_PER_COLLECTION),
        (r#""retention":{"keepLast":497}"#, 500),
        (
            r#""copies":[{"region":"westus2"},{"region":"northeurope","retention":{"keepLast":2,"daily":7}}]"#,
            2 * (5 + 1 + IN_FLIGHT_PER_COLLECTION) + (2 + 7 + 1 + IN_FLIGHT_PER_COLLECTION),
        ),
        (r#""retention":{"keepLast":4294967295}"#, u32::MAX),
    ];
    for (fields, want) in cases {
        assert_eq!(
            policy_with(fields).rules[0].max_points_per_vm(),
            want,
            "{fields}"
        );
    }
}
