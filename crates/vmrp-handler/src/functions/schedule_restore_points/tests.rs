//! Unit tests of the timer's planning: the copy-capacity warning and the replan wait.

use super::*;
use std::sync::{Arc, Mutex};

use crate::invocation::Context;
use crate::testing::{self, disk_id, FakeArm, FakeScheduler, VmBuilder};

/// What a test's subscriber wrote (JSON lines), shared with its writer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Plans subscription `s1` at a 4-hourly tick for `vms` VMs, each with an OS and a data
/// disk, copying to swedencentral; returns the outcome's summary and the WARN events.
async fn plan_s1(vms: usize) -> (String, Vec<serde_json::Value>) {
    let tick = time::macros::datetime!(2026-11-25 04:00:00 UTC);
    let arm = Arc::new(FakeArm::new());
    arm.set_now(tick);
    for i in 0..vms {
        let name = format!("vm{i:04}");
        arm.add_vm(
            VmBuilder::new("s1", "rg", &name)
                .data_disk(
                    0,
                    &disk_id("s1", "rg", &format!("{name}-d0")),
                    "Premium_LRS",
                )
                .build(),
        );
    }
    let mut rule = testing::rule("prod", 3);
    rule.targets.subscriptions = vec!["s1".into()];
    rule.copies = vec![crate::policy::CopyTarget::to("swedencentral")];
    let deps = Deps::new(
        arm,
        Arc::new(FakeScheduler::new()),
        Arc::new(testing::policy(vec![rule])),
        "0 0 */4 * * *",
    );
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let req = PlanRequest {
        subscription: "s1".into(),
        tick,
        attempt: 0,
    };
    let inv = Invocation::new(req, Context::new(super::super::PLAN_RESTORE_POINTS, tick));
    let out = {
        // The test's runtime runs on this thread: the subscriber sees the handler's events.
        let _guard = tracing::subscriber::set_default(subscriber);
        super::super::plan_restore_points::handle(inv, &deps)
            .await
            .expect("planning succeeds")
    };
    assert_eq!(out.status, Status::Done, "{}", out.summary);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    (out.summary, warnings)
}

/// One subscription's copies into one region: 201 VMs × 2 disks = 402 disk copies, while
/// ~400 replicate in 4 h at 100 at once and ~1 h each: the planning invocation warns once,
/// with the subscription and region, and its summary counts it. 200 VMs (400) fit: no word.
#[tokio::test]
async fn a_tick_whose_copies_cannot_keep_up_is_warned_before_it_runs() {
    let (summary, warnings) = plan_s1(201).await;
    let copies: Vec<&serde_json::Value> = warnings
        .iter()
        .filter(|w| w["fields"]["region"] == "swedencentral")
        .collect();
    assert_eq!(copies.len(), 1, "{warnings:?}");
    let fields = &copies[0]["fields"];
    assert_eq!(fields["subscription"], "s1");
    assert_eq!(fields["disk_copies"], 402);
    let message = fields["message"].as_str().unwrap();
    assert!(
        message.starts_with("copies to swedencentral in subscription s1: 402 disk copies")
            && message.contains("about 400 per 4 h at ~1 h each")
            && message.contains("fall behind"),
        "{message}"
    );
    assert!(
        summary.contains("copies to 1 region(s) cannot keep up")
            && summary.contains("swedencentral: 402 disk copies, ~400 fit"),
        "{summary}"
    );

    let (summary, warnings) = plan_s1(200).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!summary.contains("cannot keep up"), "{summary}");
    assert!(summary.contains("200 creates sent"), "{summary}");
}

#[test]
fn replans_wait_doubling_from_a_minute_up_to_ten() {
    let minutes: Vec<u64> = (1..=MAX_REPLANS + 2)
        .map(|a| replan_delay(a).as_secs() / 60)
        .collect();
    assert_eq!(minutes, [1, 2, 4, 8, 10, 10, 10, 10]);
    let total: u64 = (1..=MAX_REPLANS).map(|a| replan_delay(a).as_secs()).sum();
    assert!(
        total <= 40 * 60,
        "re-plans stay inside the tick's hour: {total} s"
    );
}
