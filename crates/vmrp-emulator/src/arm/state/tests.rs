//! Tests of the resources' lifecycle on the virtual clock.

use super::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn copy_point(minutes_total: i64) -> PointRecord {
    let id = ResourceId::parse("/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/p").unwrap();
    PointRecord {
        id: id.clone(),
        collection: id.parent().unwrap(),
        vm: id.clone(),
        mode: ConsistencyMode::CrashConsistent,
        exclude_disks: vec![],
        instant_access_minutes: None,
        source_point: Some(id.clone()),
        source_created: Some(T0),
        created: T0,
        ready_at: T0 + Duration::minutes(2),
        outcome: Outcome::Succeeded,
        disks: vec![DiskPoint {
            id: "d".into(),
            replicated_at: Some(T0 + Duration::minutes(minutes_total)),
            ..Default::default()
        }],
        source_metadata: json!({}),
        instant_access_disks: false,
        operation: "op".into(),
        deleting: None,
        terminate_at: None,
        encryption: BTreeMap::new(),
    }
}

#[test]
fn copy_progress_moves_in_ten_minute_steps() {
    let p = copy_point(100);
    let at = |m: i64| p.copy_percent(T0 + Duration::minutes(m), 600.0).unwrap();
    assert_eq!(at(0), 0);
    assert_eq!(at(9), 0);
    assert_eq!(at(10), 10);
    assert_eq!(at(19), 10);
    assert_eq!(at(55), 50);
    assert_eq!(at(99), 90);
    assert_eq!(at(100), 100);
    assert!(p.copy_in_flight(T0 + Duration::minutes(50), 600.0));
    assert!(!p.copy_in_flight(T0 + Duration::minutes(100), 600.0));
    assert_eq!(p.phase(T0 + Duration::minutes(1)), Phase::Creating);
    assert_eq!(p.phase(T0 + Duration::minutes(3)), Phase::Succeeded);
}

#[test]
fn failed_copy_is_not_in_flight() {
    let mut p = copy_point(100);
    p.outcome = Outcome::Failed {
        code: "X".into(),
        message: "m".into(),
    };
    let later = T0 + Duration::minutes(5);
    assert_eq!(p.copy_percent(later, 600.0), None);
    assert!(!p.copy_in_flight(later, 600.0));
    let rendered = p.render(later, true, 600.0);
    let iv = rendered.properties.unwrap().instance_view.unwrap();
    assert_eq!(iv.statuses.unwrap()[0].level.as_deref(), Some("Error"));
}

#[test]
fn low_churn_copy_jumps_from_0_to_100() {
    // Replication done within one progress step: only 0 and 100 are ever seen.
    let p = copy_point(7);
    for m in 0..7 {
        assert_eq!(p.copy_percent(T0 + Duration::minutes(m), 600.0), Some(0));
    }
    assert_eq!(p.copy_percent(T0 + Duration::minutes(7), 600.0), Some(100));
}

#[test]
fn a_copy_shows_its_source_creation_time() {
    let mut p = copy_point(100);
    p.source_created = Some(T0 - Duration::hours(5));
    let shown = p.render(T0, false, 600.0).properties.unwrap().time_created;
    assert_eq!(shown, Some(T0 - Duration::hours(5)));
}

#[test]
fn a_copy_longer_than_two_weeks_is_terminated_without_detail_or_percent() {
    let mut p = copy_point(20 * 24 * 60);
    p.terminate_at = Some(T0 + Duration::days(14));
    let before = T0 + Duration::days(13);
    assert!(p.copy_percent(before, 600.0).is_some_and(|x| x < 100));
    assert!(p.copy_in_flight(before, 600.0));
    let after = T0 + Duration::days(14);
    assert!(p.terminated(after));
    assert_eq!(p.copy_percent(after, 600.0), None);
    assert!(!p.copy_in_flight(after, 600.0));
    let iv = p
        .render(after, true, 600.0)
        .properties
        .unwrap()
        .instance_view
        .unwrap();
    let disk = &iv.disk_restore_points.unwrap()[0];
    let rs = disk.replication_status.as_ref().unwrap();
    assert_eq!(rs.completion_percent, None);
    assert_eq!(
        rs.status.as_ref().unwrap().code.as_deref(),
        Some("ReplicationState/failed")
    );
    assert_eq!(rs.status.as_ref().unwrap().message, None);
    assert_eq!(
        iv.statuses.unwrap()[0].code.as_deref(),
        Some("ReplicationState/failed")
    );
    // A copy that finishes in time is never terminated.
    let mut quick = copy_point(100);
    quick.terminate_at = Some(T0 + Duration::days(14));
    assert!(!quick.terminated(T0 + Duration::days(15)));
    assert_eq!(
        quick.copy_percent(T0 + Duration::days(15), 600.0),
        Some(100)
    );
}

#[test]
fn jitter_stays_in_range_and_is_stable() {
    for k in ["a", "b", "c", "d"] {
        let d = jitter(7, k, (30.0, 90.0)).as_seconds_f64();
        assert!((30.0..=90.0).contains(&d));
        assert_eq!(jitter(7, k, (30.0, 90.0)), jitter(7, k, (30.0, 90.0)));
    }
    assert!(jitter(1, "x", (f64::NAN, 5.0)) <= Duration::seconds(5));
    assert_eq!(jitter(1, "x", (f64::NAN, f64::NAN)), Duration::ZERO);
    assert!(jitter(1, "x", (1e300, 1e300)) <= Duration::days(3651));
    assert!(same_location("West US", "westus"));
    assert!(!same_location("westus", "westus2"));
}

#[test]
fn fast_disk_access_states_follow_background_copy_and_instant_access() {
    assert_eq!(fast_disk_access_state(false, false), "Pending");
    assert_eq!(fast_disk_access_state(true, false), "InstantAccess");
    assert_eq!(
        fast_disk_access_state(true, true),
        "AvailableWithInstantAccess"
    );
    assert_eq!(fast_disk_access_state(false, true), "Available");
    for (state, copyable) in [
        ("Pending", false),
        ("InstantAccess", false),
        ("Available", true),
        ("AvailableWithInstantAccess", true),
        ("Unknown", false),
    ] {
        assert_eq!(copyable_access_state(state), copyable, "{state}");
    }
    // A local point: Creating → Pending; then per disk.
    let mut p = copy_point(100);
    p.source_point = None;
    p.disks = vec![
        DiskPoint {
            id: "plain".into(),
            ..Default::default()
        },
        DiskPoint {
            id: "v2".into(),
            background_done_at: Some(T0 + Duration::minutes(30)),
            instant_access_until: Some(T0 + Duration::minutes(60)),
            source_disk: Some("/d/v2".into()),
            ..Default::default()
        },
    ];
    let at = |m: i64| {
        let now = T0 + Duration::minutes(m);
        (
            p.local_access_state(&p.disks[0], now),
            p.local_access_state(&p.disks[1], now),
            p.first_uncopyable_disk(now).map(|(d, _)| d.to_string()),
        )
    };
    assert_eq!(at(1), ("Pending", "Pending", Some("plain".into())));
    assert_eq!(at(5), ("Available", "InstantAccess", Some("v2".into())));
    assert_eq!(at(30), ("Available", "AvailableWithInstantAccess", None));
    assert_eq!(at(60), ("Available", "Available", None));
    assert!(p.background_in_progress(&p.disks[1], T0 + Duration::minutes(29)));
    assert!(!p.background_in_progress(&p.disks[1], T0 + Duration::minutes(30)));
    assert!(!p.background_in_progress(&p.disks[0], T0));
    assert_eq!(
        p.background_percent(&p.disks[1], T0 + Duration::minutes(20), 600.0),
        66
    );
}
