//! Tests of the platform rules: each check against the cases its source describes.

use super::*;
use time::macros::datetime;

#[test]
fn consistency_input_name_and_location_rules() {
    assert!(check_consistency_input(&ConsistencyMode::CrashConsistent).is_ok());
    for mode in [
        ConsistencyMode::ApplicationConsistent,
        ConsistencyMode::FileSystemConsistent,
    ] {
        let v = check_consistency_input(&mode).unwrap_err();
        assert_eq!((v.status, v.code), (400, "InvalidParameter"));
        assert_eq!(v.target.as_deref(), Some("properties.consistencyMode"));
        assert!(v.message.contains("consistencyMode"));
    }
    for ok in [
        "rpc-vm1-0a1b2c3d",
        "rpc-vm1-0a1b2c3d_westus2",
        "a",
        "x_",
        &"x".repeat(80),
    ] {
        assert!(check_collection_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "rpc-vm1-sweden central",
        "rpc-vm1-",
        "-rpc",
        "rpc.",
        "",
        "rpc#1",
        &"x".repeat(81),
    ] {
        let v = check_collection_name(bad).unwrap_err();
        assert_eq!((v.status, v.code), (400, "InvalidResourceName"), "{bad}");
    }
    for ok in [
        "westus2",
        "West US 2",
        "usgovvirginia",
        "chinaeast2",
        "norwayeast",
    ] {
        assert!(check_location(ok, "Microsoft.Compute/restorePointCollections").is_ok());
    }
    let v = check_location("mars", "Microsoft.Compute/restorePointCollections").unwrap_err();
    assert_eq!(
        (v.status, v.code),
        (400, "LocationNotAvailableForResourceType")
    );
    assert!(v
        .message
        .starts_with("The provided location 'mars' is not available"));
}

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

#[test]
fn role_scope_table() {
    let scopes = vec![
        "/subscriptions/S1/resourceGroups/App".to_string(),
        "/subscriptions/s2".to_string(),
    ];
    let rc = "providers/Microsoft.Compute/restorePointCollections";
    let cases = [
        // Below an assigned resource group, any case.
        (format!("/subscriptions/s1/resourcegroups/app/{rc}"), true),
        (
            format!("/subscriptions/s1/resourceGroups/APP/{rc}/c1"),
            true,
        ),
        // The subscription itself, or another group, is outside a group assignment.
        (format!("/subscriptions/s1/{rc}"), false),
        (format!("/subscriptions/s1/resourceGroups/app2/{rc}"), false),
        (
            format!("/subscriptions/s1/resourceGroups/other/{rc}/c1"),
            false,
        ),
        // A subscription assignment covers every group in it.
        (format!("/subscriptions/s2/{rc}"), true),
        (
            format!("/subscriptions/s2/resourceGroups/any/{rc}/c1"),
            true,
        ),
        (format!("/subscriptions/s3/{rc}"), false),
    ];
    for (path, ok) in cases {
        let got = check_role_scope(&scopes, &path, "a/read", "/x");
        assert_eq!(got.is_ok(), ok, "{path}");
        if let Err(v) = got {
            assert_eq!((v.status, v.code), (403, "AuthorizationFailed"));
            assert!(v
                .message
                .contains("perform action 'a/read' over scope '/x'"));
        }
    }
    assert!(check_role_scope(&[], "/subscriptions/s1", "a", "b").is_err());
}

#[test]
fn role_action_table() {
    let deployed = deployed_role_actions();
    let rp = "Microsoft.Compute/restorePointCollections/restorePoints";
    let cases = [
        (format!("{rp}/write"), true),
        (format!("{rp}/WRITE"), true),
        ("Microsoft.Compute/virtualMachines/read".to_string(), true),
        // Dropped from the role: no source requires it.
        ("Microsoft.Compute/virtualMachines/write".to_string(), false),
        ("Microsoft.Compute/disks/write".to_string(), false),
        (format!("{rp}/retrieveSasUris/action"), false),
    ];
    for (action, ok) in cases {
        let got = check_role_action(&deployed, &action, "/s");
        assert_eq!(got.is_ok(), ok, "{action}");
        if let Err(v) = got {
            assert_eq!(
                (v.status, v.code, v.rule),
                (403, "AuthorizationFailed", "roleActions")
            );
            assert!(v
                .message
                .contains(&format!("perform action '{action}' over scope '/s'")));
        }
    }
}

#[test]
fn hourly_limit_table() {
    let m = |mins: i64| NOW - Duration::minutes(mins);
    let cases: Vec<(Vec<OffsetDateTime>, Option<u64>)> = vec![
        (vec![], None),
        (vec![m(10), m(20)], None),
        (vec![m(10), m(20), m(30)], Some(30 * 60)),
        (vec![m(10), m(20), m(59)], Some(60)),
        // Events older than an hour do not count.
        (vec![m(10), m(20), m(61)], None),
        (vec![m(5), m(10), m(20), m(50)], Some(40 * 60)),
    ];
    for (events, want) in cases {
        let got = check_hourly("r", "creates", 3, &events, NOW)
            .err()
            .map(|v| v.retry_after_secs.unwrap());
        assert_eq!(got, want, "{events:?}");
    }
    let v = check_hourly("r", "creates", 3, &[m(1), m(2), m(3)], NOW).unwrap_err();
    assert_eq!(v.status, 429);
}

#[test]
fn spacing_table() {
    let r = RuleSwitches::default();
    let app = ConsistencyMode::ApplicationConsistent;
    let fs = ConsistencyMode::FileSystemConsistent;
    let crash = ConsistencyMode::CrashConsistent;
    let ago = |mins: i64| Some(NOW - Duration::minutes(mins));
    let cases = [
        (&app, None, true),
        (&app, ago(179), false),
        (&app, ago(180), true),
        (&fs, ago(120), false),
        (&crash, ago(59), false),
        (&crash, ago(60), true),
    ];
    for (mode, last, ok) in cases {
        assert_eq!(
            check_spacing(&r, "vm", mode, last, NOW).is_ok(),
            ok,
            "{mode:?} {last:?}"
        );
    }
    let v = check_spacing(&r, "vm", &app, ago(170), NOW).unwrap_err();
    assert!(v.message.contains("600 seconds"), "{}", v.message);
}

#[test]
fn unsupported_disk_table() {
    let disk = |eph: bool, shares: i32, sku: &str| DiskFacts {
        id: "/d".into(),
        name: "d".into(),
        ephemeral_os: eph,
        max_shares: shares,
        storage_account_type: Some(sku.into()),
        write_accelerator: false,
    };
    let app = ConsistencyMode::ApplicationConsistent;
    let crash = ConsistencyMode::CrashConsistent;
    let cases = [
        (disk(false, 1, "Premium_LRS"), &crash, false),
        (disk(true, 1, "Standard_LRS"), &app, true),
        (disk(false, 2, "Premium_LRS"), &app, true),
        (disk(false, 1, "UltraSSD_LRS"), &app, false),
        (disk(false, 1, "UltraSSD_LRS"), &crash, true),
        (disk(false, 1, "PremiumV2_LRS"), &crash, true),
        (disk(false, 1, "PremiumV2_LRS"), &app, false),
    ];
    for (d, mode, unsupported) in cases {
        assert_eq!(
            unsupported_reason(&d, mode).is_some(),
            unsupported,
            "{d:?} {mode:?}"
        );
    }
    let v = check_disks("vm", &app, &[disk(false, 3, "Premium_LRS")]).unwrap_err();
    assert!(v.message.contains("'d'") && v.message.contains("shared"));
}

#[test]
fn write_accelerated_disks_and_unsupported_vms() {
    let app = ConsistencyMode::ApplicationConsistent;
    let crash = ConsistencyMode::CrashConsistent;
    let wa = DiskFacts {
        id: "/d".into(),
        name: "d".into(),
        ephemeral_os: false,
        max_shares: 1,
        storage_account_type: Some("Premium_LRS".into()),
        write_accelerator: true,
    };
    assert!(unsupported_reason(&wa, &app).is_none());
    let v = check_disks("vm", &crash, &[wa]).unwrap_err();
    assert_eq!((v.status, v.code), (400, "OperationNotAllowed"));
    assert!(v.message.contains("write-accelerated"), "{}", v.message);
    // (security type, size, mode, refused)
    let cases = [
        (
            Some("ConfidentialVM"),
            Some("Standard_DC4as_v5"),
            &app,
            true,
        ),
        (
            Some("ConfidentialVM"),
            Some("Standard_DC4as_v5"),
            &crash,
            true,
        ),
        (
            Some("TrustedLaunch"),
            Some("Standard_D4s_v5"),
            &crash,
            false,
        ),
        (Some("TrustedLaunch"), Some("Standard_D4s_v5"), &app, false),
        (None, Some("Standard_D4_v5"), &crash, true),
        (None, Some("Standard_D4_v5"), &app, false),
        (None, Some("Standard_NC6"), &crash, false),
        (None, None, &crash, false),
    ];
    for (security, size, mode, refused) in cases {
        let got = check_vm_supported("vm", security, size, mode);
        assert_eq!(got.is_err(), refused, "{security:?} {size:?} {mode:?}");
        if let Err(v) = got {
            assert_eq!(
                (v.status, v.code, v.rule),
                (400, "OperationNotAllowed", "unsupportedVms")
            );
        }
    }
}

#[test]
fn copy_rules() {
    assert!(check_copy_serial("c", None).is_ok());
    let v = check_copy_serial("c", Some(("rp1", 40))).unwrap_err();
    assert_eq!(v.status, 409);
    assert!(v.message.contains("in progress"));
    let t = NOW;
    assert!(check_copy_order("c", "new", t, None).is_ok());
    assert!(check_copy_order("c", "new", t, Some(("old", t - Duration::hours(1)))).is_ok());
    let v = check_copy_order("c", "new", t, Some(("old", t + Duration::hours(1)))).unwrap_err();
    assert!(
        !v.message.contains("in progress"),
        "order violations are permanent"
    );
    assert!(check_not_copy_of_copy("x", false).is_ok());
    assert_eq!(check_not_copy_of_copy("x", true).unwrap_err().status, 400);
    assert!(check_target_references_source("t", "/subscriptions/s/A", "subscriptions/s/a").is_ok());
    assert!(
        check_target_references_source("t", "/subscriptions/s/A", "/subscriptions/s/b").is_err()
    );
}

#[test]
fn silly_limits_do_not_panic() {
    let v = check_hourly("r", "creates", 0, &[], NOW).unwrap_err();
    assert_eq!(v.retry_after_secs, Some(3600));
    let r = RuleSwitches {
        crash_consistent_spacing_secs: i64::MAX,
        ..Default::default()
    };
    assert!(check_spacing(&r, "vm", &ConsistencyMode::CrashConsistent, Some(NOW), NOW).is_err());
}

#[test]
fn cap_and_concurrency() {
    assert!(check_point_cap("vm", 499, 500).is_ok());
    let v = check_point_cap("vm", 500, 500).unwrap_err();
    assert!(v.message.contains("maximum allowed snapshot limit"));
    assert!(check_one_create("vm", None).is_ok());
    let v = check_one_create("vm", Some("rp1")).unwrap_err();
    assert_eq!((v.status, v.code), (409, "VMRestorePointClientError"));
    assert!(v.message.contains("concurrent"));
}

#[test]
fn premium_v2_and_instant_access_rules() {
    // 3 snapshots in progress per disk: the 4th is refused, retryable ("in progress").
    assert!(check_fast_snapshots_in_progress("d", 2, 3).is_ok());
    let v = check_fast_snapshots_in_progress("d", 3, 3).unwrap_err();
    assert_eq!((v.status, v.code), (409, "OperationNotAllowed"));
    assert!(v.message.contains("in progress") && v.message.contains("'d'"));
    // Copies need every disk copyable.
    assert!(check_source_copyable("rp", None).is_ok());
    let v = check_source_copyable("rp", Some(("d1", "InstantAccess"))).unwrap_err();
    assert_eq!((v.status, v.code), (409, "OperationNotAllowed"));
    assert!(v.message.contains("'InstantAccess'") && v.message.contains("in progress"));
    // 60-300 minutes.
    for (m, ok) in [
        (59, false),
        (60, true),
        (300, true),
        (301, false),
        (0, false),
        (-5, false),
    ] {
        assert_eq!(check_instant_access_minutes(m).is_ok(), ok, "{m}");
    }
    let v = check_instant_access_minutes(1).unwrap_err();
    assert_eq!(
        v.target.as_deref(),
        Some("properties.instantAccessDurationMinutes")
    );
    // 50 in flight per subscription and region.
    assert!(check_instant_access_in_flight("s", "westus", 49, 50).is_ok());
    let v = check_instant_access_in_flight("s", "westus", 50, 50).unwrap_err();
    assert_eq!((v.status, v.code), (409, "OperationNotAllowed"));
    assert!(v.message.contains("concurrently"));
    assert_eq!(
        crate::azure::error::classify(Some(v.status), v.code, &v.message),
        crate::azure::error::ErrorClass::Transient,
        "vmrp retries it"
    );
}

#[test]
fn copied_once_per_region_is_a_permanent_refusal() {
    assert!(check_copied_once("rp1", "westus2", None).is_ok());
    let v = check_copied_once("rp1", "westus2", Some("rp1-again")).unwrap_err();
    assert_eq!((v.status, v.code), (409, "OperationNotAllowed"));
    assert!(v.message.contains("only once") && v.message.contains("rp1-again"));
    // vmrp's classifier must not take it for "wait and retry".
    assert_eq!(
        crate::azure::error::classify(Some(v.status), v.code, &v.message),
        crate::azure::ErrorClass::Permanent
    );
}

#[test]
fn copies_in_flight_count_disks_against_the_limit() {
    let cases: &[(usize, usize, u32, bool)] = &[
        (0, 3, 100, true),
        (97, 3, 100, true),
        (98, 3, 100, false),
        (100, 1, 100, false),
        (5000, 1, 0, true), // 0 = no limit
    ];
    for (busy, new, limit, ok) in cases {
        let got = check_copies_in_flight("westus2", *busy, *new, *limit, 600);
        assert_eq!(got.is_ok(), *ok, "{busy}+{new} of {limit}");
        if let Err(v) = got {
            assert_eq!((v.status, v.code), (429, "OperationNotAllowed"));
            assert_eq!(v.detail_code, Some("TooManyRequests"));
            assert_eq!(v.retry_after_secs, Some(600));
        }
    }
}

#[test]
fn cmk_copies_need_an_existing_target_set() {
    let f = "properties.sourceMetadata.storageProfile.osDisk.diskRestorePoint.encryption";
    assert!(check_cmk_copy("os", "des-src", "westus2", Some("des-dst"), true, f).is_ok());
    let none = check_cmk_copy("os", "des-src", "westus2", None, false, f).unwrap_err();
    assert_eq!((none.status, none.code), (400, "InvalidParameter"));
    assert_eq!(none.target.as_deref(), Some(f));
    assert!(none.message.contains("des-src"));
    let missing = check_cmk_copy("os", "des-src", "westus2", Some("des-x"), false, f).unwrap_err();
    assert!(missing.message.contains("des-x") && missing.message.contains("not found"));
}
