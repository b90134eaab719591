//! RunRestoreDrills (timer, `%VMRP_DRILL_SCHEDULE%`): proves restore points restorable by
//! restoring them (docs/restore.md, drills). Each run finds its tick (the latest occurrence of
//! the policy's `drills.schedule` at or before `now`), lists the policy's VMs, and drills the
//! run's slice of the rotation (`drill::plan_run`, from the tick's run number: a redelivered or
//! retried timer drills the same VMs into the same disk names) in every configured region:
//! newest settled point restored as disks into the drill group, read back, timed, deleted, one
//! `vmrp::drill` event per VM and region.
//!
//! Nothing leaks past the next run: every disk a drill makes carries the run's tick
//! (`drill::TAG_DRILL`); a run first deletes tagged disks of other ticks (a run the host killed
//! at its `functionTimeout`), adopts its own tick's (its own earlier delivery), and deletes its
//! own tick's again at the end. Each drill's result is kept in `Deps::drill_ledger` (the drill
//! table) right after the drill; a failure to keep it is reported, it does not fail the drill.
//! I/O only through `Deps::arm` and `Deps::drill_ledger`; ARM writes only in the drill group
//! (the function's identity holds the drill role there and nowhere else,
//! infra/modules/drill-role.bicep).

use super::schedule_restore_points::{list_targets, scopes};
use super::{Deps, HandlerError};
use crate::drill::{self, Bounds};
use crate::events::TimerEvent;
use crate::invocation::{Invocation, Outcome, Status};
use crate::schedule::{rfc3339, Schedule};

/// The app setting the timer's schedule comes from (function.json `%VMRP_DRILL_SCHEDULE%`); it
/// must name the policy's `drills.schedule`, which numbers the runs (docs/restore.md).
pub const DRILL_SCHEDULE_SETTING: &str = "VMRP_DRILL_SCHEDULE";

pub async fn handle(inv: Invocation<TimerEvent>, deps: &Deps) -> Result<Outcome, HandlerError> {
    handle_within(inv, deps, Bounds::default()).await
}

/// [`handle`] with the drill and run bounds given (tests shorten them).
pub async fn handle_within(
    inv: Invocation<TimerEvent>,
    deps: &Deps,
    bounds: Bounds,
) -> Result<Outcome, HandlerError> {
    let now = inv.context.now;
    let Some(drills) = deps.policy.drills.as_ref() else {
        return Ok(Outcome::new(
            Status::Skipped,
            "the policy has no drills section: nothing to drill",
        ));
    };
    let schedule = Schedule::parse(&drills.schedule)
        .map_err(|e| HandlerError::Invalid(format!("policy drills.schedule: {e}")))?;
    // The run is numbered by the policy's schedule, not by when the timer fired: a late or
    // repeated firing belongs to the latest occurrence and drills that run's VMs.
    let Some(tick) = schedule.latest_at_or_before(now) else {
        return Ok(Outcome::new(
            Status::Skipped,
            format!(
                "drills.schedule {:?} has no occurrence at or before {}",
                drills.schedule,
                rfc3339(now)
            ),
        ));
    };
    let (scopes, explicit) = scopes(&deps.policy);
    let (vms, failures, _) = list_targets(deps, &scopes, explicit).await;
    let vms: Vec<_> = vms.into_values().collect();
    let fleet = drill::fleet(&deps.policy, &vms);
    let report = drill::run_within(
        &*deps.arm,
        drills,
        &fleet,
        tick,
        bounds,
        deps.drill_ledger.as_deref(),
    )
    .await
    .map_err(HandlerError::Invalid)?;
    let passed = report.results.iter().filter(|r| r.passed).count();
    let failed = report.results.len() - passed;
    let mut summary = format!(
        "drill run {} (tick {}): {} drills of {} VMs, {passed} passed, {failed} failed",
        report.run,
        rfc3339(tick),
        report.results.len(),
        fleet.len()
    );
    if !report.not_started.is_empty() {
        summary.push_str(&format!(
            "; {} not started (the run's {} s budget ran out)",
            report.not_started.len(),
            bounds.run.as_secs()
        ));
        tracing::warn!(tick = %rfc3339(tick), not_started = report.not_started.len(), "drills not started: the run's budget ran out (lower drills.vmsPerRun)");
    }
    if !report.swept.is_empty() {
        summary.push_str(&format!(
            "; swept {} disk(s) an earlier run left",
            report.swept.len()
        ));
    }
    if !report.sweep_failures.is_empty() {
        summary.push_str(&format!(
            "; sweep failed: {}",
            report.sweep_failures.join("; ")
        ));
    }
    if !failures.is_empty() {
        summary.push_str(&format!(
            "; listing failed for {} (their VMs are not in this run's rotation)",
            failures.join(", ")
        ));
    }
    // Where the results went: the drill table, or nowhere but the events.
    if deps.drill_ledger.is_none() {
        summary.push_str(&format!(
            "; results not kept ({} is not set)",
            crate::azure::table::DRILL_TABLE_SETTING
        ));
    } else if !report.results.is_empty() {
        summary.push_str(&format!("; recorded {}", report.recorded));
    }
    if !report.record_failures.is_empty() {
        summary.push_str(&format!(
            "; recording failed for {}: {}",
            report.record_failures.len(),
            report.record_failures.join("; ")
        ));
    }
    let status = if failed == 0
        && report.not_started.is_empty()
        && report.sweep_failures.is_empty()
        && report.record_failures.is_empty()
        && failures.is_empty()
    {
        Status::Done
    } else {
        Status::Reported
    };
    tracing::info!(tick = %rfc3339(tick), run = report.run, passed, failed, "{summary}");
    Ok(Outcome::new(status, summary).with_drills(report.results))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use time::macros::datetime;
    use time::OffsetDateTime;

    use super::*;
    use crate::azure::ResourceId;
    use crate::invocation::Context;
    use crate::policy::drills::Drills;
    use crate::testing::{self, op, FakeArm, FakeScheduler, VmBuilder};

    const SUB: &str = "00000000-0000-0000-0000-0000000000d1";
    const GROUP: &str = "rg-drill";
    /// A drill tick of the default schedule (02:30 daily).
    const TICK: OffsetDateTime = datetime!(2026-12-06 02:30 UTC);

    /// `vms` VMs in westeurope, each with one settled local point (one OS disk) and a settled,
    /// fully replicated copy in swedencentral.
    fn world(vms: usize) -> (Arc<FakeArm>, Vec<ResourceId>) {
        let arm = Arc::new(FakeArm::new());
        let mut ids = Vec::new();
        for i in 0..vms {
            let vm = arm.add_vm(
                VmBuilder::new(SUB, "rg-app", &format!("vm{i}"))
                    .location("westeurope")
                    .build(),
            );
            let c = crate::names::collection_id(&vm, None).unwrap();
            arm.add_collection(&c, "westeurope", &vm);
            let p = c.child("restorePoints", "rp-20261206T0000Z");
            arm.add_point(&p, "Succeeded", datetime!(2026-12-06 00:00 UTC), None, &[]);
            arm.set_source_metadata(&p, metadata(&format!("{p}/diskRestorePoints/os")));
            let cc = ResourceId::parse(&format!(
                "/subscriptions/{SUB}/resourceGroups/rg-copies/providers/Microsoft.Compute/restorePointCollections/copy-vm{i}"
            ))
            .unwrap();
            arm.add_collection(&cc, "swedencentral", &c);
            let cp = cc.child("restorePoints", "rp-20261206T0000Z");
            arm.add_point(
                &cp,
                "Succeeded",
                datetime!(2026-12-06 00:00 UTC),
                Some(&p),
                &[100],
            );
            arm.set_source_metadata(&cp, metadata(&format!("{cp}/diskRestorePoints/disk0")));
            ids.push(vm);
        }
        (arm, ids)
    }

    fn metadata(disk_restore_point: &str) -> serde_json::Value {
        json!({"storageProfile": {"osDisk": {
            "name": "osdisk", "osType": "Linux",
            "managedDisk": {"storageAccountType": "Premium_LRS"},
            "diskRestorePoint": {"id": disk_restore_point}
        }}})
    }

    fn deps(arm: &Arc<FakeArm>, regions: &[&str], per_run: u32) -> Deps {
        let mut rule = testing::rule("all", 3);
        rule.targets.subscriptions = vec![SUB.into()];
        let mut policy = testing::policy(vec![rule]);
        policy.drills = Some(Drills {
            schedule: crate::policy::drills::DEFAULT_DRILL_SCHEDULE.into(),
            vms_per_run: per_run,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            resource_group: GROUP.into(),
            cover_within_days: None,
        });
        Deps::new(
            arm.clone(),
            Arc::new(FakeScheduler::new()),
            Arc::new(policy),
            "0 0 */4 * * *",
        )
    }

    fn timer_at(now: OffsetDateTime) -> Invocation<TimerEvent> {
        Invocation::new(
            TimerEvent {
                is_past_due: false,
                last: None,
                next: None,
            },
            Context::new(crate::functions::RUN_RESTORE_DRILLS, now),
        )
    }

    /// The VMs whose disks were PUT, in call order (the disk name starts with the VM's point).
    fn disk_puts(arm: &FakeArm) -> Vec<String> {
        arm.calls()
            .into_iter()
            .filter(|c| c.op == op::PUT_DISK)
            .map(|c| c.target)
            .collect()
    }

    fn in_group(target: &str) -> bool {
        target
            .to_ascii_lowercase()
            .starts_with(&format!("/subscriptions/{SUB}/resourcegroups/{GROUP}/"))
    }

    #[tokio::test]
    async fn a_run_drills_local_and_copy_points_writes_only_in_the_drill_group_and_cleans_up() {
        let (arm, _) = world(3);
        let d = deps(&arm, &["local", "swedencentral"], 2);
        let out = handle(timer_at(TICK + time::Duration::minutes(1)), &d)
            .await
            .unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        assert!(
            out.summary
                .contains("4 drills of 3 VMs, 4 passed, 0 failed"),
            "{}",
            out.summary
        );
        let puts = disk_puts(&arm);
        assert_eq!(puts.len(), 4, "{puts:?}");
        // Every write and delete lands in the drill group: the VMs' groups see only reads.
        for c in arm.calls() {
            if c.op == op::PUT_DISK || c.op == op::DELETE_DISK {
                assert!(in_group(&c.target), "{c:?}");
            }
            assert!(
                !matches!(
                    c.op,
                    op::PUT_COLLECTION | op::PUT_POINT | op::DELETE_POINT | op::DELETE_COLLECTION
                ),
                "a drill wrote to a VM's collections: {c:?}"
            );
        }
        // Copies restore in the copy's region from the copy's disk restore point.
        assert!(puts.iter().any(|p| p.contains("osdisk-rp-")), "{puts:?}");
        assert!(arm.disk_ids().is_empty(), "left: {:?}", arm.disk_ids());
    }

    #[tokio::test]
    async fn the_tick_decides_the_rotation_and_a_redelivery_drills_the_same_vms() {
        let (arm, vms) = world(3);
        let d = deps(&arm, &["local"], 1);
        let drilled = |arm: &FakeArm| -> Vec<String> {
            let mut v: Vec<String> = arm
                .calls()
                .into_iter()
                .filter(|c| c.op == op::GET_DISK && in_group(&c.target))
                .map(|c| c.target)
                .collect();
            v.dedup();
            v
        };
        // Same run: fired at the tick, and redelivered an hour later.
        handle(timer_at(TICK), &d).await.unwrap();
        let first = drilled(&arm);
        arm.clear_calls();
        handle(timer_at(TICK + time::Duration::hours(1)), &d)
            .await
            .unwrap();
        assert_eq!(drilled(&arm), first, "a redelivery drills the same VM");
        // The next three runs cover all three VMs, one each.
        let mut seen = std::collections::BTreeSet::new();
        for day in 1..=3 {
            arm.clear_calls();
            let out = handle(timer_at(TICK + time::Duration::days(day)), &d)
                .await
                .unwrap();
            assert!(out.summary.contains("1 passed"), "{}", out.summary);
            seen.extend(drilled(&arm));
        }
        assert_eq!(seen.len(), vms.len(), "{seen:?}");
    }

    #[tokio::test]
    async fn a_run_killed_mid_drill_leaves_no_disk_behind_after_its_redelivery_or_the_next_run() {
        let (arm, _) = world(2);
        let d = deps(&arm, &["local"], 2);
        // The host kills the invocation while the first disk's create hangs after ARM made it.
        arm.stall_next_disk_put();
        let killed =
            tokio::time::timeout(Duration::from_millis(200), handle(timer_at(TICK), &d)).await;
        assert!(killed.is_err(), "the invocation was cut off");
        assert_eq!(arm.disk_ids().len(), 1, "the disk it made is there");
        // The redelivery of the same tick adopts it (no second PUT for that name) and deletes it.
        arm.clear_calls();
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        assert_eq!(
            disk_puts(&arm).len(),
            1,
            "only the disk not made yet: {:?}",
            disk_puts(&arm)
        );
        assert!(arm.disk_ids().is_empty(), "left: {:?}", arm.disk_ids());

        // Killed again, one VM per run, and no redelivery: the next day's run drills the other
        // VM (its disk names differ), so only its sweep can find the leftover.
        let d = deps(&arm, &["local"], 1);
        arm.stall_next_disk_put();
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            handle(timer_at(TICK + time::Duration::days(1)), &d),
        )
        .await;
        let leaked = arm.disk_ids();
        assert_eq!(leaked.len(), 1);
        arm.clear_calls();
        let out = handle(timer_at(TICK + time::Duration::days(2)), &d)
            .await
            .unwrap();
        assert!(
            !disk_puts(&arm).contains(&leaked[0].to_string()),
            "the next run drills the other VM: {:?}",
            disk_puts(&arm)
        );
        assert!(out.summary.contains("swept 1 disk(s)"), "{}", out.summary);
        assert!(arm.disk_ids().is_empty(), "left: {:?}", arm.disk_ids());
    }

    #[tokio::test]
    async fn drills_the_budget_leaves_no_time_for_are_named_not_failed() {
        let (arm, _) = world(2);
        let d = deps(&arm, &["local"], 2);
        let bounds = Bounds {
            restore: Duration::from_secs(120),
            run: Duration::ZERO,
        };
        let out = handle_within(timer_at(TICK), &d, bounds).await.unwrap();
        assert_eq!(out.status, Status::Reported, "{}", out.summary);
        assert!(out.summary.contains("0 drills of 2 VMs"), "{}", out.summary);
        assert!(out.summary.contains("2 not started"), "{}", out.summary);
        assert!(disk_puts(&arm).is_empty());
    }

    #[tokio::test]
    async fn untagged_disks_in_the_drill_group_are_never_deleted() {
        let (arm, _) = world(1);
        let d = deps(&arm, &["local"], 1);
        let theirs = testing::disk_id(SUB, GROUP, "operator-restore");
        arm.add_disk(testing::disk(&theirs, "Premium_LRS", None, &[]));
        handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(arm.disk_ids(), vec![theirs]);
    }

    #[tokio::test]
    async fn a_refused_restore_is_a_failed_drill_with_azures_reason_and_nothing_left() {
        let (arm, _) = world(1);
        let d = deps(&arm, &["local"], 1);
        arm.refuse_next(
            op::PUT_DISK,
            409,
            "OperationNotAllowed",
            "a disk can be restored only from a restore point that succeeded",
        );
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(out.status, Status::Reported, "{}", out.summary);
        assert!(
            out.summary.contains("0 passed, 1 failed"),
            "{}",
            out.summary
        );
        assert!(arm.disk_ids().is_empty());

        // A copy still replicating: refused before any write, with the reason.
        let (arm, vms) = world(1);
        let d = deps(&arm, &["swedencentral"], 1);
        let cp = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg-copies/providers/Microsoft.Compute/restorePointCollections/copy-vm0/restorePoints/rp-20261206T0000Z"
        ))
        .unwrap();
        arm.set_replication(&cp, &[40]);
        let group = d.policy.drills.as_ref().unwrap().group_for(&vms[0]);
        let r = crate::drill::drill_vm_into(
            &*arm,
            &vms[0],
            "swedencentral",
            true,
            &group,
            Duration::from_secs(5),
        )
        .await;
        assert!(!r.passed);
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("not fully replicated"),
            "{r:?}"
        );
        assert!(disk_puts(&arm).is_empty());
    }

    #[tokio::test]
    async fn the_fake_refuses_a_disk_from_a_point_azure_would_refuse() {
        let (arm, _) = world(1);
        let p = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/restorePointCollections/x/restorePoints/rp"
        ))
        .unwrap();
        arm.add_point(&p, "Creating", TICK, None, &[]);
        let body = json!({"location": "westeurope", "properties": {"creationData": {
            "createOption": "Restore", "sourceResourceId": format!("{p}/diskRestorePoints/os")}}});
        let e = crate::azure::Arm::create_disk(&*arm, &testing::disk_id(SUB, GROUP, "d"), &body)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (Some(409), "OperationNotAllowed")
        );
        assert!(arm.disk_ids().is_empty());
    }

    fn with_ledger(d: &mut Deps) -> Arc<testing::FakeLedger> {
        let ledger = Arc::new(testing::FakeLedger::new());
        d.drill_ledger = Some(ledger.clone());
        ledger
    }

    /// Every drill is recorded per VM and region; a later failed drill keeps the pass (its
    /// tick, point and time to restore) and adds the failure with its reason.
    #[tokio::test]
    async fn each_drill_is_recorded_and_a_failure_keeps_the_last_pass() {
        let (arm, vms) = world(2);
        let mut d = deps(&arm, &["local", "swedencentral"], 2);
        let ledger = with_ledger(&mut d);
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert!(out.summary.contains("recorded 4"), "{}", out.summary);
        let records = ledger.records();
        assert_eq!(records.len(), 4, "{records:?}");
        for r in &records {
            assert!(r.last_passed_ok && r.last_passed == Some(TICK), "{r:?}");
            assert!(r
                .last_passed_point
                .as_deref()
                .unwrap()
                .ends_with("/rp-20261206T0000Z"));
            assert!(r.last_passed_seconds.is_some(), "{r:?}");
        }
        assert_eq!(
            records.iter().filter(|r| r.copy).count(),
            2,
            "a copy record per VM: {records:?}"
        );
        // The next day every disk PUT is refused: failed drills, the passes kept.
        let next = TICK + time::Duration::days(1);
        for _ in 0..4 {
            arm.refuse_next(
                op::PUT_DISK,
                409,
                "OperationNotAllowed",
                "refused for the test",
            );
        }
        let out = handle(timer_at(next), &d).await.unwrap();
        assert!(
            out.summary.contains("0 passed, 4 failed"),
            "{}",
            out.summary
        );
        let records = ledger.records();
        assert_eq!(records.len(), 4);
        for r in &records {
            assert_eq!((r.last_run, r.last_passed_ok), (next, false), "{r:?}");
            assert_eq!(r.last_passed, Some(TICK), "the pass is kept: {r:?}");
            assert!(r.last_passed_point.is_some() && r.last_passed_seconds.is_some());
            assert!(
                r.last_reason
                    .as_deref()
                    .unwrap()
                    .contains("OperationNotAllowed"),
                "{r:?}"
            );
            assert!(r.failing_since_pass());
        }
        assert!(records.iter().any(|r| r.vm == vms[0].to_string()));
    }

    /// The table refusing one record: that drill still passed, the others are recorded, and
    /// the run answers `reported`, naming the failure.
    #[tokio::test]
    async fn a_failure_to_record_is_reported_and_loses_no_other_record() {
        let (arm, _) = world(2);
        let mut d = deps(&arm, &["local"], 2);
        let ledger = with_ledger(&mut d);
        ledger.fail_next_record(503, "ServerBusy");
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(out.status, Status::Reported, "{}", out.summary);
        assert!(
            out.summary.contains("2 passed, 0 failed"),
            "{}",
            out.summary
        );
        assert!(out.summary.contains("recorded 1"), "{}", out.summary);
        assert!(
            out.summary.contains("recording failed for 1") && out.summary.contains("ServerBusy"),
            "{}",
            out.summary
        );
        assert!(out.drills.iter().all(|r| r.passed));
        assert_eq!(ledger.records().len(), 1);
    }

    #[tokio::test]
    async fn without_a_ledger_the_run_says_results_are_not_kept() {
        let (arm, _) = world(1);
        let d = deps(&arm, &["local"], 1);
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(out.status, Status::Done, "{}", out.summary);
        assert!(
            out.summary
                .contains("results not kept (VMRP_DRILL_TABLE_URL is not set)"),
            "{}",
            out.summary
        );
    }

    #[tokio::test]
    async fn without_a_drills_section_the_timer_skips() {
        let (arm, _) = world(1);
        let mut d = deps(&arm, &["local"], 1);
        let mut p = (*d.policy).clone();
        p.drills = None;
        d.policy = Arc::new(p);
        let out = handle(timer_at(TICK), &d).await.unwrap();
        assert_eq!(out.status, Status::Skipped);
        assert!(arm.calls().is_empty());
    }
}
