//! Tests of `vmrp local`: the fault contract, the report, the governor and the labels.

use super::*;

/// A report of `expected` local points over `ticks`, `failed` missing, nothing else.
fn report_of(ticks: &[time::OffsetDateTime], expected: usize, failed: Vec<Missing>) -> LocalReport {
    LocalReport {
        vms: 1,
        ticks: ticks
            .iter()
            .map(|t| names::restore_point_name(*t, 0))
            .collect(),
        local: RoleCounts {
            expected,
            failed,
            ..Default::default()
        },
        copies: RoleCounts::default(),
        dead_letters: Vec::new(),
        parked: Vec::new(),
        throttled_429: 0,
        arm_requests_by_operation: BTreeMap::new(),
        arm_requests: 0,
        invocations_by_function: BTreeMap::new(),
        handler_restarts: 0,
        handler_kills: 0,
        instances: 1,
        invocations_by_instance: vec![0],
        handler_kills_by_instance: vec![0],
        planned_kills_by_instance: vec![0],
        background_load: BackgroundLoad::default(),
        arm_share_told: None,
        handler_panics: 0,
        untracked_in_progress: Vec::new(),
        virtual_seconds: 0,
        real_seconds: 0.0,
        complete: false,
        rows: Vec::new(),
        handler_log: None,
    }
}

/// A VM with nothing to restore is explained by the plan beforehand at one tick (`Unsupported`:
/// every disk excluded, `Rule::check_vm`) and by the create handler at another (a create the
/// plan did not list): nothing to restore at every tick, not a breach. The contract counted
/// only the handler's reports, so the mix read "nothing to restore on 1 of 2 ticks".
#[test]
fn nothing_to_restore_said_by_the_plan_or_the_handler_counts_alike() {
    let ticks = [
        time::macros::datetime!(2026-01-05 04:00 UTC),
        time::macros::datetime!(2026-01-05 08:00 UTC),
    ];
    let miss = |tick, reason: &str, explained_by| Missing {
        vm: "vm2".into(),
        region: "westeurope".into(),
        tick,
        reason: reason.into(),
        explained_by,
    };
    let by_plan = miss(ticks[0], "not supported by restore points: VM vm2: every disk is excluded (excludeDisks.luns: LUN 0), so a restore point would restore nothing: it gets no points and no copies", Explanation::Unsupported);
    let by_handler = miss(ticks[1], "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm2: every disk is excluded, nothing to restore", Explanation::Reported);
    let both = report_of(&ticks, 2, vec![by_plan.clone(), by_handler]);
    assert_eq!(
        fault_contract_violations(&both, &[], 0),
        Vec::<String>::new()
    );
    assert_eq!(both.local.nothing_to_restore(), 2);
    // Said at one tick only: the other tick's point is missing for another reason.
    let gave_up = miss(
        ticks[1],
        "vm2: gave up after 20 reschedules: 429",
        Explanation::Reported,
    );
    let once = report_of(&ticks, 2, vec![by_plan, gave_up]);
    let violations = fault_contract_violations(&once, &[], 0);
    assert!(
        violations
            .iter()
            .any(|v| v.contains("nothing to restore on 1 of 2 ticks")),
        "{violations:?}"
    );
}

/// `vmrp local` with a policy that made the handler panic said "coverage complete … 12 dead
/// letters" and exited 0: complete coverage with dead letters or panics is a failed run.
/// A create that ended Failed and whose retry came too close to the next tick leaves its
/// Failed point as evidence (retention removes it later): by design, not a point left
/// behind. The same Failed point without that reason breaks the contract.
#[test]
fn a_failed_point_whose_retry_was_superseded_is_not_left_behind() {
    let tick = time::macros::datetime!(2026-01-05 08:00 UTC);
    let vm_id =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
    let point = PointSummary {
        id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/rpc-vm1-0a1b2c3d/restorePoints/{}", names::restore_point_name(tick, 0)),
        collection: "rpc-vm1-0a1b2c3d".into(),
        vm: vm_id.into(),
        region: "westeurope".into(),
        provisioning_state: "Failed".into(),
        consistency_mode: "ApplicationConsistent".into(),
        time_created: tick,
        source_restore_point: None,
        copy_percent: None,
    };
    let report = |reason: &str| {
        let missing = Missing {
            vm: "vm1".into(),
            region: "westeurope".into(),
            tick,
            reason: reason.into(),
            explained_by: Explanation::Reported,
        };
        report_of(&[tick], 1, vec![missing])
    };
    let superseded = report(&format!("{vm_id}: the create for tick 2026-01-05T08:00:00Z came at 2026-01-05T09:04:16Z, too close to the next tick 2026-01-05T12:00:00Z (points 3h apart at least): superseded by it"));
    assert_eq!(
        fault_contract_violations(&superseded, std::slice::from_ref(&point), 0),
        Vec::<String>::new()
    );
    let gave_up = report(&format!("{vm_id}: gave up after 20 reschedules: 429"));
    let violations = fault_contract_violations(&gave_up, &[point], 0);
    assert!(
        violations.iter().any(|v| v.contains("left Failed")),
        "{violations:?}"
    );
}

#[test]
fn dead_letters_or_panics_fail_a_complete_run() {
    let tick = time::macros::datetime!(2026-11-25 04:00 UTC);
    let report = |dead_letters: usize, handler_panics: u64| LocalReport {
        dead_letters: vec![json!({"queue": "rp-create"}); dead_letters],
        handler_panics,
        complete: true,
        ..report_of(&[tick], 0, Vec::new())
    };
    assert!(report(0, 0).clean());
    assert!(summary_line(&report(0, 0)).starts_with("coverage complete"));
    for (dead, panics) in [(12, 0), (0, 1)] {
        let r = report(dead, panics);
        assert!(!r.clean());
        let line = summary_line(&r);
        assert!(line.starts_with("FAILED"), "{line}");
        assert!(
            line.contains(&format!("{dead} dead letters, {panics} handler panics")),
            "{line}"
        );
    }
}

#[test]
fn copy_collections_are_told_from_the_local_one_in_summaries() {
    for (text, copy) in [
        (".../rpc-vm1-0a1b2c3d/restorePoints/rp-1 failed", false),
        (
            ".../rpc-vm1-0a1b2c3d_westus2/restorePoints/rp-1 failed",
            true,
        ),
        ("target collection rpc-vm1-westus2 exists", true),
        ("collection rpc-vm1-0a1b2c3d exists with source x", false),
        ("nothing here", false),
    ] {
        assert_eq!(names_copy_collection(text, "vm1"), copy, "{text}");
    }
}

#[test]
fn the_clock_slows_while_behind_and_recovers() {
    // (current, behind) → next, for a target of 2400 and a floor of 60.
    let table = [
        (2400.0, false, 2400.0),
        (2400.0, true, 1200.0),
        (100.0, true, 60.0),
        (60.0, true, 60.0),
        (60.0, false, 90.0),
        (2000.0, false, 2400.0),
    ];
    for (current, behind, next) in table {
        assert_eq!(
            governed_speed(current, 2400.0, 60.0, behind),
            next,
            "{current} behind={behind}"
        );
    }
    // A floor above the target never speeds the clock up past the target.
    assert_eq!(governed_speed(10.0, 10.0, 60.0, true), 10.0);
}

/// Regression (the 2,000-VM soak's 08:00 tick, all left out): the governor slowed the
/// clock to `speed / 40` whatever the handler was doing, so a plan taking 40 real seconds
/// (listings and coverage reads at 2,000 VMs on a loaded machine) cost 40 virtual minutes
/// at 2400×: past functionTimeout (timed out, restarted, redelivered) and past most of the
/// tick's window. While a tick is planned the clock now runs at real time.
#[test]
fn a_plan_costs_the_tick_its_real_time_not_forty_times_more() {
    // (target, lag) → floor
    let table = [
        (2400.0, HandlerLag::Planning, PLANNING_SPEED),
        (2400.0, HandlerLag::Behind, 60.0),
        (2400.0, HandlerLag::UpToDate, 60.0),
        (10.0, HandlerLag::Behind, 1.0),
        (0.5, HandlerLag::Planning, 0.5),
    ];
    for (target, lag, floor) in table {
        assert_eq!(governor_floor(target, lag), floor, "{target} {lag:?}");
    }
    // The governor's loop over a 40-s plan at 2400×: the virtual time it lets pass.
    let plan_real_s = 40.0;
    let period = GOVERNOR_PERIOD.as_secs_f64();
    let (mut speed, mut virtual_s) = (2400.0, 0.0);
    for _ in 0..(plan_real_s / period) as usize {
        speed = governed_speed(
            speed,
            2400.0,
            governor_floor(2400.0, HandlerLag::Planning),
            true,
        );
        virtual_s += speed * period;
    }
    // The slowdown's first periods (halving from 2400×) cost about a minute; then real time.
    assert!(
        virtual_s < 3.0 * 60.0,
        "a 40-s plan cost {virtual_s:.0} virtual seconds"
    );
    // functionTimeout (10 virtual minutes) is not reached by a plan shorter than that.
    assert!(virtual_s < 600.0);
}

#[test]
fn the_progress_line_shows_virtual_time_to_the_second() {
    let at = time::macros::datetime!(2026-01-05 05:43:07.744708711 UTC);
    assert_eq!(virtual_label(at), "2026-01-05 05:43:07");
}

/// Regression: `--copy-to westeurope` on a westeurope fleet counted the copies the handler
/// rightly skips as expected, and the report said COVERAGE INCOMPLETE.
#[test]
fn no_copy_is_expected_into_the_vms_own_region() {
    let policy = default_policy(
        &["00000000-0000-0000-0000-000000000001".to_string()],
        &["westeurope".to_string(), "swedencentral".to_string()],
        ("vmrp", "on"),
    );
    let rule = &policy.rules[0];
    assert_eq!(
        copy_regions_of(rule, Some("West Europe")),
        ["swedencentral"]
    );
    assert_eq!(
        copy_regions_of(rule, Some("northeurope")),
        ["westeurope", "swedencentral"]
    );
}

#[test]
fn speed_and_report_are_checked_before_the_run() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LocalArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("report.json");
    let args = |extra: &[&str]| {
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    };
    for speed in ["0", "-5", "NaN", "inf"] {
        let flag = format!("--speed={speed}");
        let e = check_args(&args(&[flag.as_str()])).unwrap_err().to_string();
        assert!(e.starts_with("--speed"), "{speed}: {e}");
    }
    let unwritable = dir.path().join("no-such-folder").join("r.json");
    let e = check_args(&args(&["--report", unwritable.to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--report"), "{e}");
    check_args(&args(&["--report", ok.to_str().unwrap()])).unwrap();
    assert!(!ok.exists(), "the check leaves no file behind");
}

#[test]
fn nothing_to_restore_is_covered_anything_else_is_not() {
    let missing = |reason: &str, explained_by| Missing {
        vm: "vm1".into(),
        region: "westeurope".into(),
        tick: time::macros::datetime!(2026-01-05 04:00 UTC),
        reason: reason.into(),
        explained_by,
    };
    let by_design = missing(
        "vm1: every disk is excluded, nothing to restore",
        Explanation::Reported,
    );
    let mut counts = RoleCounts {
        expected: 2,
        settled: 1,
        failed: vec![by_design],
        ..RoleCounts::default()
    };
    assert!(counts.covered());
    counts.failed.push(missing(
        "vm1: gave up after 20 reschedules: 429",
        Explanation::Reported,
    ));
    assert!(!counts.covered(), "explained is not covered");
}

#[test]
fn failure_reasons_fall_into_classes() {
    let vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
    let table = [
        (format!("{vm}: every disk is excluded, nothing to restore"), "every disk excluded", true),
        (format!("{vm}: creating the point failed: OperationNotAllowed Restore points of VM 'vm1' that are application-consistent must be at least 180 minutes apart"), "spacing refused by Azure", false),
        ("copy of x to swedencentral superseded: y is newer and already copied".to_string(), "superseded by a newer copy", false),
        (format!("{vm}: creating the point failed: VMRestorePointClientError Restore point creation failed: the maximum allowed snapshot limit of 500 restore points has been reached for VM 'vm1'. Delete older restore points and retry."), "500 points per VM reached (Azure's limit)", false),
        (format!("{vm}: the create for tick 2026-01-05T04:00:00Z came at 2026-01-05T05:10:00Z, too close to the next tick 2026-01-05T08:00:00Z (points 3h apart at least): superseded by it"), "create superseded by the next tick", false),
        (format!("{vm}: gave up after 20 reschedules: 429"), "gave up after reschedules", false),
        ("no restore point was created: the timer run for this tick failed (3 run(s))".to_string(), "timer run failed", false),
        ("point rp-20260105T0400Z is Failed (copy -%)".to_string(), "point Failed", false),
        ("point rp-20260105T0400Z is Creating (copy 40%)".to_string(), "still in progress at the end", false),
        ("no restore point was created".to_string(), "never created", false),
        (format!("copy of {vm}/rp-1 to swedencentral: {}: the newer {vm}/rp-2 was copied first (copies go in creation order, and a copy more than 24 h behind gives way to newer points so the region's newest copy stays recent)", crate::functions::start_cross_region_copy::COPY_BACKLOG_DROPPED), "dropped from the copy backlog (a day behind)", false),
        (format!("copy of {vm}/rp-1: {} into swedencentral (Compute refused a copy there until 2026-01-05 06:10:00.0 +00:00:00); retry in 640s", crate::functions::start_cross_region_copy::COPY_LIMIT_WAIT), "waiting at Azure's copy-in-flight limit", false),
        (format!("copy of {vm}/rp-1: gave up after 160 reschedules: {} into swedencentral", crate::functions::start_cross_region_copy::COPY_LIMIT_WAIT), "gave up after reschedules", false),
        (format!("copy of {vm}/rp-1 to swedencentral: {}: 1 of 2 disk restore points not copyable (first: d1 is InstantAccess): the snapshot's background data copy (Premium SSD v2 / Ultra disk) has not completed", crate::functions::start_cross_region_copy::BACKGROUND_COPY_WAIT), "waiting for the source's background data copy", false),
        // The plan's left-out reason names the next tick that would supersede the create:
        // still a VM left out beforehand, not a copy lost to ordering.
        ("did not fit the tick's window (planned beforehand): does not fit this tick: its create would go at 2026-01-05T05:01:00Z (+3660s, after 900 creates in subscription s paced at 67% of ARM's budget), within 60 min of 2026-01-05T08:00:00Z, after which the create is superseded by the next tick 2026-01-05T08:00:00Z (2 points 3 h apart); the next tick's order differs".to_string(), "did not fit the tick's window (planned beforehand)", false),
        ("something new".to_string(), "other", false),
    ];
    for (reason, class, by_design) in table {
        assert_eq!(reason_class(&reason), (class, by_design), "{reason}");
    }
}
