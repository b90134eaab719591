//! Restore drills over a `vmrp local` fleet (docs/restore.md, drills): the rotation covers every
//! VM, each drill restores the newest local and copy points as disks into the drill group and
//! deletes them (the emulator's state proves the group empty), an injected failure is a failed
//! drill with its reason, drills leave the VMs and their points alone, and the app identity may
//! write disks in the drill group only (403 elsewhere).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vmrp::emulator::faults::FaultConfig;
use vmrp::local::{drill_demo, run_scenario_keep, Scenario, DEMO_DRILL_GROUP};

static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scenario(vms: usize) -> Scenario {
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_vmrp")));
    s.fleet.count = vms;
    s.fleet.regions = vec!["westeurope".into(), "northeurope".into()];
    s.copy_to = vec!["swedencentral".into()];
    s.ticks = 1;
    s.speed = 3000.0;
    s.timeout = Duration::from_secs(180);
    s.drill = true;
    s
}

/// Every restore point id in the emulator.
fn point_ids(dump: &Value) -> Vec<String> {
    let mut ids: Vec<String> = dump["restorePointCollections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["properties"]["restorePoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_run_covers_the_fleet_cleans_up_and_never_touches_vms_or_points() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let s = scenario(5);
    let (report, emulator) = run_scenario_keep(&s).await.unwrap();
    assert!(report.clean(), "{}", vmrp::local::summary_line(&report));
    let before = emulator.arm.dump();
    let drilled = drill_demo(&emulator, &s).await.unwrap();
    let after = emulator.arm.dump();
    // Four VMs per run: two runs cover five VMs, each in its own region and swedencentral.
    assert_eq!(drilled.runs, 2, "{drilled:?}");
    assert_eq!(drilled.covered, 5, "{}", drilled.render());
    assert!(drilled.ok(), "{}", drilled.render());
    let copies = drilled.results.iter().filter(|r| r.copy).count();
    assert!(copies >= 5, "a copy drill per VM: {}", drilled.render());
    for r in &drilled.results {
        assert!(r.cleaned && r.seconds_to_restore.is_some(), "{r:?}");
        assert!(!r.disks.is_empty(), "{r:?}");
        assert!(
            r.disks.iter().all(|d| d
                .to_ascii_lowercase()
                .contains(&format!("/resourcegroups/{}/", DEMO_DRILL_GROUP))),
            "disks only in the drill group: {r:?}"
        );
    }
    assert!(drilled.left_in_drill_group.is_empty());
    assert!(
        drilled.render().contains("drill group empty"),
        "{}",
        drilled.render()
    );
    // Every VM × region is in the drill table (the handler recorded it through the host).
    assert_eq!(
        (drilled.pairs, drilled.recorded),
        (10, 10),
        "{}",
        drilled.render()
    );
    assert!(
        drilled.render().contains("10/10 VM × region recorded"),
        "{}",
        drilled.render()
    );
    assert_eq!(emulator.table.entities("vmrpdrills").len(), 10);
    // The VMs are exactly as before, and every point that existed still does.
    assert_eq!(before["virtualMachines"], after["virtualMachines"]);
    let (was, is) = (point_ids(&before), point_ids(&after));
    assert!(
        was.iter().all(|p| is.contains(p)),
        "a drill removed a point"
    );
    // The app identity may write disks in the drill group only: elsewhere 403.
    let arm = vmrp::local::app_arm_client(&emulator).unwrap();
    let vm = vmrp::azure::ResourceId::parse(&drilled.results[0].vm).unwrap();
    let outside =
        vmrp::drill::drill_vm(&arm, &vm, &drilled.results[0].region, false, "elsewhere").await;
    assert!(!outside.passed, "{outside:?}");
    let reason = outside.reason.unwrap();
    assert!(
        reason.contains("AuthorizationFailed") || reason.contains("403"),
        "{reason}"
    );
    assert!(reason.contains("Microsoft.Compute/disks/write"), "{reason}");
    emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drill_says_why_and_still_leaves_the_drill_group_empty() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = scenario(2);
    // Every disk PUT fails (the lifecycle writes no disks): each drill fails at its first disk.
    s.faults =
        FaultConfig::from_json(r#"{"arm":{"operations":{"PUT disks":{"5xx":1.0}}}}"#).unwrap();
    let (report, emulator) = run_scenario_keep(&s).await.unwrap();
    assert!(report.clean(), "{}", vmrp::local::summary_line(&report));
    let drilled = drill_demo(&emulator, &s).await.unwrap();
    assert!(!drilled.ok());
    assert_eq!(drilled.passed(), 0, "{}", drilled.render());
    assert_eq!(drilled.covered, 2);
    for r in &drilled.results {
        let reason = r.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("creating a disk") && reason.contains("HTTP 5"),
            "{r:?}"
        );
        assert!(r.seconds_to_restore.is_none(), "{r:?}");
    }
    assert!(drilled.left_in_drill_group.is_empty(), "{drilled:?}");
    assert!(
        drilled.render().contains("drill failed:"),
        "{}",
        drilled.render()
    );
    emulator.stop().await.unwrap();
}

/// A restore slower than the drill's bound fails "timed out" instead of holding the run, and
/// the disk whose PUT was cut off is deleted too: the drill group ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_restore_times_out_honestly_and_is_still_cleaned_up() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = scenario(1);
    s.copy_to = Vec::new();
    s.faults = FaultConfig::from_json(r#"{"arm":{"operations":{"PUT disks":{"latencyMs":2500}}}}"#)
        .unwrap();
    let (report, emulator) = run_scenario_keep(&s).await.unwrap();
    assert!(report.clean(), "{}", vmrp::local::summary_line(&report));
    let group = format!("/resourcegroups/{DEMO_DRILL_GROUP}/");
    let in_group = || -> Vec<String> {
        emulator.arm.dump()["disks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["id"].as_str())
            .filter(|id| id.to_ascii_lowercase().contains(&group))
            .map(str::to_string)
            .collect()
    };
    let arm = vmrp::local::app_arm_client(&emulator).unwrap();
    let sub = emulator.subscriptions[0].clone();
    emulator
        .arm
        .add_resource_group(&sub, DEMO_DRILL_GROUP, "westeurope");
    let vms = vmrp::azure::Arm::list_vms(&arm, &vmrp::azure::VmScope::Subscription(sub))
        .await
        .unwrap();
    let vm = vmrp::azure::ResourceId::parse(vms[0].id.as_deref().unwrap()).unwrap();
    let home = vms[0].location.clone().unwrap();
    let group_of = vmrp::policy::drills::DrillGroup {
        subscription: vm.subscription().to_string(),
        name: DEMO_DRILL_GROUP.into(),
    };
    let started = std::time::Instant::now();
    let r = vmrp::drill::drill_vm_into(&arm, &vm, &home, false, &group_of, Duration::from_secs(1))
        .await;
    assert!(!r.passed, "{r:?}");
    assert!(
        r.reason.as_deref().unwrap().starts_with("timed out"),
        "{r:?}"
    );
    assert!(r.seconds_to_restore.is_none());
    assert!(
        !r.disks.is_empty(),
        "the cut-off disk is on the cleanup list: {r:?}"
    );
    // Bounded: the restore phase stopped at 1 s (cleanup DELETEs are not slowed).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(in_group().is_empty(), "left behind: {:?}", in_group());
    emulator.stop().await.unwrap();
}

/// The registered RunRestoreDrills function, fired through the host simulation's timer path
/// (not a side call): two runs cover five VMs, each run's invocation succeeds with every drill
/// passed, disks were created in the drill group and deleted again (the emulator's state and
/// counters prove both), and the VMs are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_timer_function_drills_through_the_host_and_leaves_nothing() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("handler.log");
    let mut s = scenario(5);
    s.handler_log = Some(log.clone());
    let (report, emulator) = run_scenario_keep(&s).await.unwrap();
    assert!(report.clean(), "{}", vmrp::local::summary_line(&report));
    let before = emulator.arm.dump();
    let disk_puts = |c: &vmrp::emulator::arm::ArmCounters| {
        c.requests_by_operation
            .get("Disks_CreateOrUpdate")
            .copied()
            .unwrap_or(0)
    };
    let puts_before = disk_puts(&emulator.arm.counters());
    let runs = vmrp::local::drill_through_host(&emulator, &s, 2)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    let mut numbers = Vec::new();
    for r in &runs {
        assert_eq!(r.status, "succeeded", "{r:?}");
        assert_eq!(r.outcome["status"], "done", "{r:?}");
        let summary = r.outcome["summary"].as_str().unwrap();
        assert!(summary.contains(", 0 failed"), "{summary}");
        // Four VMs per run, each in its own region and swedencentral: 8, then 2 (wrapping: 8).
        assert!(summary.contains("drills of 5 VMs"), "{summary}");
        numbers.push(summary.split_whitespace().nth(2).unwrap().to_string());
    }
    assert_ne!(numbers[0], numbers[1], "consecutive runs: {numbers:?}");
    assert!(
        disk_puts(&emulator.arm.counters()) > puts_before,
        "the drills created disks"
    );
    let after = emulator.arm.dump();
    let group = format!("/resourcegroups/{DEMO_DRILL_GROUP}/");
    let left: Vec<&str> = after["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .filter(|id| id.to_ascii_lowercase().contains(&group))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(before["virtualMachines"], after["virtualMachines"]);
    let (was, is) = (point_ids(&before), point_ids(&after));
    assert!(
        was.iter().all(|p| is.contains(p)),
        "a drill removed a point"
    );
    // One `vmrp::drill` event per VM and region, each with exactly the fields
    // infra/monitoring/fields.json lists (what the monitoring queries may name), inside the
    // RunRestoreDrills invocation's span.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/infra/monitoring/fields.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let names = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let common = names(&spec["common"]);
    let event = &spec["events"]["vmrp::drill"];
    let fields = names(&event["fields"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let drills: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.split_once('\t')?.1).ok())
        .filter(|v| v["target"] == "vmrp::drill")
        .collect();
    // Two runs of four VMs, each in its own region and swedencentral.
    assert_eq!(drills.len(), 16, "{drills:?}");
    for v in &drills {
        let own: std::collections::BTreeSet<String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !common.contains(*k))
            .cloned()
            .collect();
        assert_eq!(own, fields, "fields.json vs {v}");
        assert_eq!(v["outcome"], "passed", "{v}");
        assert_eq!(v["span"]["function"], "RunRestoreDrills", "{v}");
        assert!(v["seconds_to_restore"].as_f64().unwrap() >= 0.0, "{v}");
        for (field, values) in event["values"].as_object().unwrap() {
            let got = v[field.as_str()].as_str().unwrap();
            assert!(names(values).contains(got), "{field} {got:?}");
        }
    }
    emulator.stop().await.unwrap();
}

/// `vmrp status` as the operator runs it (a child process, the identity endpoint's token),
/// against the emulator: `(exit code, stdout, stderr)`.
fn status_cli(
    emulator: &vmrp::emulator::server::RunningEmulator,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let settings = emulator.handler_settings(vmrp::emulator::server::BusAuth::Sas);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vmrp"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "status",
            "--json",
            "--arm-endpoint",
            &emulator.urls.arm,
            "--arm-audience",
            "https://management.azure.com",
            "--subscription",
            &emulator.subscriptions[0],
        ])
        .args(extra);
    for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"] {
        cmd.env(k, &settings[k]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Drilled twice against the emulator, passed then failed: the drill table keeps the pass
/// (its tick, point, time to restore) and the newer failure with its reason, and `vmrp status
/// --json --drill-table` shows both on each row; without a table it says so and still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_last_passed_drill_kept_after_a_failed_one() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    // `drill`: the app identity holds the drill role at the drill group (the runs below call
    // `drill::run_within` directly, as RunRestoreDrills does).
    let s = scenario(1);
    let (report, emulator) = run_scenario_keep(&s).await.unwrap();
    assert!(report.clean(), "{}", vmrp::local::summary_line(&report));
    let arm = vmrp::local::app_arm_client(&emulator).unwrap();
    let ledger = vmrp::local::app_drill_ledger(&emulator).unwrap();
    let policy = vmrp::local::default_policy(
        &emulator.subscriptions,
        &s.copy_to,
        (&s.fleet.tag_key, &s.fleet.tag_value),
    );
    let drills = vmrp::local::drill_section(&policy, &s.copy_to);
    let sub = emulator.subscriptions[0].clone();
    emulator
        .arm
        .add_resource_group(&sub, DEMO_DRILL_GROUP, "westeurope");
    let vms = vmrp::azure::Arm::list_vms(&arm, &vmrp::azure::VmScope::Subscription(sub))
        .await
        .unwrap();
    let fleet = vmrp::drill::fleet(&policy, &vms);
    assert_eq!(fleet.len(), 1);
    let first = time::macros::datetime!(2026-01-02 02:30 UTC);
    let second = time::macros::datetime!(2026-01-03 02:30 UTC);
    let bounds = vmrp::drill::Bounds::default();
    let passed = vmrp::drill::run_within(&arm, &drills, &fleet, first, bounds, Some(&ledger))
        .await
        .unwrap();
    assert_eq!(passed.recorded, 2, "{passed:?}");
    assert!(passed.results.iter().all(|r| r.passed), "{passed:?}");
    // The second run's ARM writes no disks: every drill fails at its first disk.
    let refusing = vmrp::commands::ReadOnlyArm(arm);
    let failed = vmrp::drill::run_within(&refusing, &drills, &fleet, second, bounds, Some(&ledger))
        .await
        .unwrap();
    assert_eq!(failed.recorded, 2, "{failed:?}");
    assert!(failed.results.iter().all(|r| !r.passed), "{failed:?}");

    let (_, stdout, stderr) = status_cli(&emulator, &["--drill-table", &emulator.urls.drill_table]);
    let rows: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}\n{stderr}"));
    let vm = &fleet[0].0.to_string();
    for role in ["local", "copy"] {
        let row = rows
            .iter()
            .find(|r| r["vmId"].as_str().unwrap().eq_ignore_ascii_case(vm) && r["role"] == role)
            .unwrap_or_else(|| panic!("{role}: {stdout}"));
        let d = &row["drill"];
        let ok = passed
            .results
            .iter()
            .find(|r| r.copy == (role == "copy"))
            .unwrap();
        assert_eq!(d["lastPassed"], "2026-01-02T02:30:00Z", "{role}: {row}");
        assert_eq!(d["lastPassedPoint"].as_str(), ok.point.as_deref(), "{row}");
        assert!(d["secondsToRestore"].as_f64().unwrap() >= 0.0, "{row}");
        assert_eq!(d["lastFailed"], "2026-01-03T02:30:00Z", "{row}");
        assert!(
            d["lastFailureReason"]
                .as_str()
                .unwrap()
                .contains("creating a disk"),
            "{row}"
        );
    }
    // The table view prints the same.
    let settings = emulator.handler_settings(vmrp::emulator::server::BusAuth::Sas);
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_vmrp"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IDENTITY_ENDPOINT", &settings["IDENTITY_ENDPOINT"])
        .env("IDENTITY_HEADER", &settings["IDENTITY_HEADER"])
        .env("VMRP_DRILL_TABLE_URL", &emulator.urls.drill_table)
        .args([
            "status",
            "--arm-endpoint",
            &emulator.urls.arm,
            "--arm-audience",
            "https://management.azure.com",
            "--subscription",
            &emulator.subscriptions[0],
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("last drill")
            && text.contains("passed 2026-01-02 02:30")
            && text.contains("FAILED 2026-01-03 02:30"),
        "{text}"
    );

    // Without a table: said on stderr, every row's drill null, the rows still there.
    let (_, stdout, stderr) = status_cli(&emulator, &[]);
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["drill"].is_null()),
        "{stdout}"
    );
    assert!(stderr.contains("no drill table given"), "{stderr}");
    emulator.stop().await.unwrap();
}
