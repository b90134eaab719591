//! Tests of the ARM emulator: the base URL from the Host header, fleet specs and added resources.

use super::*;

#[test]
fn base_url_comes_from_the_host_header() {
    let mut h = HeaderMap::new();
    assert_eq!(base_url(&h), "http://127.0.0.1");
    h.insert(
        http::header::HOST,
        HeaderValue::from_static("127.0.0.1:7071"),
    );
    assert_eq!(base_url(&h), "http://127.0.0.1:7071");
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    assert_eq!(base_url(&h), "https://127.0.0.1:7071");
    h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
    assert_eq!(base_url(&h), "http://127.0.0.1:7071");
}

#[test]
fn invalid_fleet_spec_is_clamped_not_a_panic() {
    let clock = Arc::new(VirtualClock::new(
        time::macros::datetime!(2026-01-01 00:00 UTC),
        1.0,
    ));
    let config = ArmConfig {
        fleet: FleetSpec {
            count: 3,
            regions: vec![],
            tagged_fraction: 7.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let emu = ArmEmulator::new(
        config,
        clock,
        Arc::new(Dice::new(1)),
        Arc::new(FaultConfig::default()),
    );
    assert_eq!(emu.list_vms().len(), 3);
    assert!(emu.list_vms().iter().all(|vm| vm.tag("vmrp") == Some("on")));
}

#[test]
fn adding_resources_reports_bad_documents() {
    let clock = Arc::new(VirtualClock::new(
        time::macros::datetime!(2026-01-01 00:00 UTC),
        1.0,
    ));
    let emu = ArmEmulator::new(
        ArmConfig {
            fleet: FleetSpec::empty(),
            ..Default::default()
        },
        clock,
        Arc::new(Dice::new(1)),
        Arc::new(FaultConfig::default()),
    );
    assert!(emu
        .add_vm(json!({"location": "x"}))
        .unwrap_err()
        .contains("'id'"));
    assert!(emu
            .add_vm(json!({"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks/d", "location": "x"}))
            .unwrap_err()
            .contains("virtualMachines"));
    let id = emu
            .add_vm(json!({"id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v",
                "location": "westus", "properties": {"userData": "dQ=="}}))
            .unwrap();
    assert_eq!(emu.subscriptions(), ["s"]);
    assert!(emu.dump()["virtualMachines"][0]["properties"]
        .get("userData")
        .is_none());
    assert!(emu.set_vm_tags(&id, &Tags::from([("a".to_string(), "b".to_string())])));
    assert_eq!(emu.list_vms()[0].tag("a"), Some("b"));
    assert!(emu.remove_vm(&id));
    assert!(!emu.remove_vm(&id));
}
