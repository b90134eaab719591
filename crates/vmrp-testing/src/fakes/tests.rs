//! Tests of the fakes themselves: the ARM contract they follow and the scheduler's duplicate detection.

use super::*;
use crate::azure::models::ProvisioningState;

fn setup() -> (FakeArm, ResourceId, ResourceId) {
    let arm = FakeArm::new();
    let vm = arm.add_vm(VmBuilder::new("s1", "rg", "vm1").build());
    let c = crate::names::collection_id(&vm, None).unwrap();
    arm.add_collection(&c, "eastus", &vm);
    (arm, vm, c)
}

#[tokio::test]
async fn one_create_per_vm_at_a_time_and_no_second_put() {
    let (arm, _vm, c) = setup();
    let p1 = c.child("restorePoints", "rp-1");
    let p2 = c.child("restorePoints", "rp-2");
    let body = RestorePoint::local(None, &[]);
    assert_eq!(
        arm.create_restore_point(&p1, &body).await.unwrap().status,
        201
    );
    let busy = arm.create_restore_point(&p2, &body).await.unwrap_err();
    assert_eq!((busy.status, busy.is_transient()), (Some(409), true));
    arm.set_point_state(&p1, "Succeeded");
    let again = arm.create_restore_point(&p1, &body).await.unwrap_err();
    assert_eq!((again.status, again.is_transient()), (Some(409), false));
    assert!(arm.create_restore_point(&p2, &body).await.is_ok());
    assert_eq!(arm.count(op::PUT_POINT), 4);
}

#[tokio::test]
async fn scripted_states_errors_and_instance_view() {
    let (arm, vm, c) = setup();
    arm.script_next_states(&["Failed"]);
    arm.throttle_next(op::PUT_POINT, 12);
    let p = c.child("restorePoints", "rp-1");
    let body = RestorePoint::local(None, &[]);
    let throttled = arm.create_restore_point(&p, &body).await.unwrap_err();
    assert_eq!(throttled.retry_after, Some(Duration::from_secs(12)));
    arm.create_restore_point(&p, &body).await.unwrap();
    let plain = arm.get_restore_point(&p, false).await.unwrap().unwrap();
    assert_eq!(plain.provisioning_state(), ProvisioningState::Failed);
    assert!(plain.properties.as_ref().unwrap().instance_view.is_none());
    // A copy starts at 0 % per disk; progress shows only with the instance view.
    let target = crate::names::copy_collection_id(&vm, "westus2", None).unwrap();
    arm.add_collection(&target, "westus2", &c);
    let copy = target.child("restorePoints", "rp-1");
    arm.create_restore_point(&copy, &RestorePoint::copy_of(&p))
        .await
        .unwrap();
    let seen = arm.get_restore_point(&copy, true).await.unwrap().unwrap();
    assert_eq!(seen.replication_percents(), vec![0, 0]);
    arm.set_replication(&copy, &[100, 70]);
    let seen = arm.get_restore_point(&copy, true).await.unwrap().unwrap();
    assert_eq!(seen.replication_percents(), vec![100, 70]);
    let listed = arm.get_collection(&target, true).await.unwrap().unwrap();
    assert_eq!(listed.restore_points().len(), 1);
    assert!(listed.restore_points()[0]
        .properties
        .as_ref()
        .unwrap()
        .instance_view
        .is_none());
}

#[tokio::test]
async fn scheduler_models_duplicate_detection_and_failures() {
    let bus = FakeScheduler::new();
    let msg = |id: &str| OutgoingMessage {
        queue: crate::azure::Queue::Poll,
        message_id: id.into(),
        body: "{}".into(),
        not_before: None,
    };
    bus.send(msg("a")).await.unwrap();
    bus.send(msg("a")).await.unwrap();
    bus.fail_next(1);
    assert_eq!(bus.send(msg("b")).await.unwrap_err().status, Some(503));
    bus.send(msg("b")).await.unwrap();
    assert_eq!(bus.sent().len(), 3);
    assert_eq!(bus.delivered().len(), 2);
    // Within the deployed window a replay is dropped; past it, it is enqueued again.
    let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
    let bus = FakeScheduler::new();
    bus.set_now(t0);
    bus.send(msg("a")).await.unwrap();
    bus.set_now(t0 + time::Duration::hours(2));
    bus.send(msg("a")).await.unwrap();
    assert_eq!(bus.delivered().len(), 1, "a replay 2 h later is dropped");
    bus.set_now(t0 + DUPLICATE_DETECTION_WINDOW);
    bus.send(msg("a")).await.unwrap();
    assert_eq!(
        bus.delivered().len(),
        2,
        "a replay after the window is enqueued"
    );
}
