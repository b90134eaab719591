//! Unit tests of `restore` (their own file: the module stays under 1,000 lines).

use super::*;
use time::macros::datetime;

fn facts(name: &str, hour: u8, state: PointState) -> PointFacts {
    PointFacts {
        name: name.into(),
        created: Some(datetime!(2026-12-01 00:00 UTC) + time::Duration::hours(hour.into())),
        state,
    }
}

#[test]
fn choosing_the_point() {
    let points = vec![
        facts("a", 1, PointState::Settled),
        facts("b", 2, PointState::Settled),
        facts("c", 3, PointState::Replicating { percent: Some(40) }),
        facts("d", 4, PointState::Creating),
    ];
    let at =
        |h: i64| Selector::AtOrBefore(datetime!(2026-12-01 00:00 UTC) + time::Duration::hours(h));
    let table: Vec<(Selector, Result<usize, &str>)> = vec![
        (Selector::Newest, Ok(1)),
        (Selector::Named("a".into()), Ok(0)),
        (
            Selector::Named("C".into()),
            Err("not fully replicated yet (40%)"),
        ),
        (Selector::Named("d".into()), Err("not settled yet")),
        (Selector::Named("zz".into()), Err("no point named zz")),
        (at(1), Ok(0)),
        (at(5), Ok(1)),
        (
            at(0),
            Err("no settled point in westeurope created at or before"),
        ),
    ];
    for (sel, want) in table {
        let got = choose(&points, &sel, "westeurope");
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g, "{sel:?}"),
            (Err(w), Err(g)) => assert!(g.contains(w), "{sel:?}: {g}"),
            (w, g) => panic!("{sel:?}: want {w:?}, got {g:?}"),
        }
    }
    let none = vec![facts("x", 1, PointState::Failed)];
    let e = choose(&none, &Selector::Newest, "r").unwrap_err();
    assert!(
        e.contains("no settled point in r") && e.contains("failed"),
        "{e}"
    );
}

#[test]
fn disk_names_are_deterministic_bounded_and_distinct() {
    assert_eq!(disk_name("vm1_OsDisk", "p1"), "vm1_OsDisk-rp-p1");
    assert_eq!(disk_name("a b", "p/1"), "a-b-rp-p-1");
    let long1 = disk_name(&"d".repeat(70), "vmrp-20261201T0300Z-abcdef");
    let long2 = disk_name(&"d".repeat(70), "vmrp-20261201T0400Z-abcdef");
    assert!(long1.len() <= MAX_DISK_NAME && long2.len() <= MAX_DISK_NAME);
    assert_ne!(long1, long2);
    assert_eq!(
        long1,
        disk_name(&"d".repeat(70), "vmrp-20261201T0300Z-abcdef")
    );
}

fn disk(name: &str, lun: Option<i64>) -> DiskSource {
    DiskSource {
        name: name.into(),
        lun,
        disk_restore_point: format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/p/diskRestorePoints/{name}_x"),
        source_disk: Some(format!("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/{name}")),
        sku: Some("Premium_LRS".into()),
        size_gb: Some(64),
        disk_encryption_set: None,
        os_type: lun.is_none().then(|| "Linux".to_string()),
        access_state: Some("Available".into()),
    }
}

fn options(mode: Mode) -> Options {
    Options {
        subscription: "s".into(),
        resource_group: "restore".into(),
        region: "westeurope".into(),
        copy: false,
        point_name: "p".into(),
        sku: None,
        zone: None,
        source_zones: vec!["2".into()],
        disk_encryption_set: None,
        source_metadata: json!({"hardwareProfile": {"vmSize": "Standard_D2s_v5"},
            "securityProfile": {"securityType": "TrustedLaunch"},
            "storageProfile": {"osDisk": {"osType": "Linux"}}}),
        mode,
    }
}

#[test]
fn the_calls_of_each_mode() {
    let disks = vec![disk("os", None), disk("data0", Some(0))];
    let kinds = |calls: &[Call]| calls.iter().map(|c| c.kind).collect::<Vec<_>>();
    let d = plan(&disks, &options(Mode::Disks)).unwrap();
    assert_eq!(kinds(&d), [CallKind::CreateDisk, CallKind::CreateDisk]);
    let body = d[0].body.as_ref().unwrap();
    assert_eq!(
        body["properties"]["creationData"]["createOption"],
        "Restore"
    );
    assert_eq!(
        body["properties"]["creationData"]["sourceResourceId"],
        disks[0].disk_restore_point
    );
    assert_eq!(body["sku"]["name"], "Premium_LRS");
    assert_eq!(body["zones"], json!(["2"]));
    assert!(d[0]
        .id
        .ends_with("/resourceGroups/restore/providers/Microsoft.Compute/disks/os-rp-p"));

    let mut o = options(Mode::Disks);
    o.sku = Some("StandardSSD_LRS".into());
    o.zone = Some("1".into());
    let d = plan(&disks, &o).unwrap();
    assert_eq!(
        d[1].body.as_ref().unwrap()["sku"]["name"],
        "StandardSSD_LRS"
    );
    assert_eq!(d[1].body.as_ref().unwrap()["zones"], json!(["1"]));

    let v = plan(
        &disks,
        &options(Mode::NewVm {
            name: "vm9".into(),
            subnet: "/sub/x".into(),
        }),
    )
    .unwrap();
    assert_eq!(
        kinds(&v),
        [
            CallKind::CreateDisk,
            CallKind::CreateDisk,
            CallKind::CreateNic,
            CallKind::CreateVm
        ]
    );
    let nic = v[2].body.as_ref().unwrap();
    assert!(
        nic.to_string().find("publicIPAddress").is_none(),
        "no public IP"
    );
    let vm = v[3].body.as_ref().unwrap();
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_D2s_v5"
    );
    assert_eq!(
        vm["properties"]["securityProfile"]["securityType"],
        "TrustedLaunch"
    );
    assert_eq!(
        vm["properties"]["storageProfile"]["osDisk"]["osType"],
        "Linux"
    );
    assert_eq!(
        vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"],
        json!(v[0].id)
    );
    assert_eq!(vm["properties"]["storageProfile"]["dataDisks"][0]["lun"], 0);

    let current = json!({"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm1",
        "location": "westeurope",
        "properties": {"provisioningState": "Succeeded", "storageProfile": {
            "osDisk": {"osType": "Linux", "managedDisk": {"id": "/old/os"}},
            "dataDisks": [{"lun": 0, "managedDisk": {"id": "/old/d0"}}, {"lun": 5, "managedDisk": {"id": "/kept/d5"}}]}}});
    let ip = plan(
        &disks,
        &options(Mode::InPlace {
            vm: current.clone(),
            delete_originals: false,
        }),
    )
    .unwrap();
    assert_eq!(
        kinds(&ip),
        [
            CallKind::CreateDisk,
            CallKind::CreateDisk,
            CallKind::Deallocate,
            CallKind::SwapDisks,
            CallKind::Start
        ]
    );
    let swap = ip[3].body.as_ref().unwrap();
    assert_eq!(
        swap["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"],
        json!(ip[0].id)
    );
    let data = swap["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .unwrap();
    assert_eq!(
        data.len(),
        2,
        "lun 5 (not in the point) stays, lun 0 replaced: {data:?}"
    );
    assert!(swap["properties"].get("provisioningState").is_none());
    let del = plan(
        &disks,
        &options(Mode::InPlace {
            vm: current,
            delete_originals: true,
        }),
    )
    .unwrap();
    let deleted: Vec<&str> = del
        .iter()
        .filter(|c| c.kind == CallKind::DeleteDisk)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(deleted, ["/old/os", "/old/d0"]);
}

#[test]
fn refusals() {
    let mut pending = disk("os", None);
    pending.access_state = Some("Pending".into());
    let e = plan(&[pending], &options(Mode::Disks)).unwrap_err();
    assert!(e.contains("'Pending', not 'Available'"), "{e}");
    let mut v2 = disk("os", None);
    v2.sku = Some("PremiumV2_LRS".into());
    v2.access_state = None;
    assert!(plan(&[v2.clone()], &options(Mode::Disks))
        .unwrap_err()
        .contains("PremiumV2_LRS"));
    let mut standard = v2;
    standard.sku = Some("Standard_LRS".into());
    assert!(
        plan(&[standard], &options(Mode::Disks)).is_ok(),
        "absent state: available for other SKUs"
    );
    let mut cmk = disk("os", None);
    cmk.disk_encryption_set = Some("/des/home".into());
    let mut o = options(Mode::Disks);
    assert!(
        plan(&[cmk.clone()], &o).is_ok(),
        "home region: the source's set"
    );
    o.copy = true;
    o.region = "swedencentral".into();
    let e = plan(&[cmk.clone()], &o).unwrap_err();
    assert!(
        e.contains("--disk-encryption-set") && e.contains("swedencentral"),
        "{e}"
    );
    o.disk_encryption_set = Some("/des/sweden".into());
    let calls = plan(&[cmk], &o).unwrap();
    assert_eq!(
        calls[0].body.as_ref().unwrap()["properties"]["encryption"]["diskEncryptionSetId"],
        "/des/sweden"
    );
    let mut o = options(Mode::InPlace {
        vm: json!({}),
        delete_originals: false,
    });
    o.copy = true;
    assert!(plan(&[disk("os", None)], &o)
        .unwrap_err()
        .contains("own region"));
    assert!(plan(
        &[disk("d", Some(1))],
        &options(Mode::NewVm {
            name: "v".into(),
            subnet: "s".into()
        })
    )
    .unwrap_err()
    .contains("no OS disk"));
}

#[test]
fn adoption_needs_the_same_source() {
    let d = json!({"properties": {"creationData": {"createOption": "Restore", "sourceResourceId": "/a/B"}}});
    assert!(disk_matches(&d, "a/b"));
    assert!(!disk_matches(&d, "/a/c"));
    assert!(!disk_matches(&json!({}), "/a/b"));
}
