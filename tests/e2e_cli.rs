//! The CLI end to end: `vmrp local` writes a report that agrees with the emulator's
//! own state, exits 0 and says "coverage complete"; `vmrp plan` and `vmrp status` read the
//! emulator (never write) and explain retention, copies, spacing and coverage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmrp::emulator::server::{BusAuth, RunningEmulator};
use vmrp::local::{run_scenario_keep, summary_line, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_vmrp");

fn scenario(vms: usize, ticks: u32) -> Scenario {
    let mut s = Scenario::new(PathBuf::from(BIN));
    s.fleet.count = vms;
    s.copy_to = vec!["swedencentral".into()];
    s.ticks = ticks;
    s.speed = 2400.0;
    s.timeout = Duration::from_secs(120);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_agrees_with_the_emulator_state() {
    let started = Instant::now();
    let s = scenario(10, 2);
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    assert!(report.complete, "{}", summary_line(&report));
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    // Points per (VM, region) in the report's rows = what the emulator holds.
    let mut held: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &points {
        let vm = p.vm.rsplit('/').next().unwrap().to_string();
        *held.entry((vm, p.region.to_ascii_lowercase())).or_default() += 1;
    }
    let mut reported: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &report.rows {
        for (region, n) in &row.points_by_region {
            reported.insert((row.vm.clone(), region.clone()), *n);
        }
    }
    assert_eq!(reported, held);
    assert_eq!(report.rows.len(), report.vms);
    // Settled counts: every local point and every copy in the emulator settled.
    let settled_local = points
        .iter()
        .filter(|p| p.source_restore_point.is_none() && p.provisioning_state == "Succeeded")
        .count();
    let settled_copies = points
        .iter()
        .filter(|p| p.source_restore_point.is_some() && p.copy_percent == Some(100))
        .count();
    assert_eq!(settled_local, report.local.settled);
    assert_eq!(settled_copies, report.copies.settled);
    // ARM traffic: the report's figures are the emulator's counters.
    assert_eq!(
        report.arm_requests,
        report.arm_requests_by_operation.values().sum::<u64>()
    );
    assert!(counters.requests >= report.arm_requests);
    assert_eq!(
        report.throttled_429,
        counters.responses_by_status.get(&429).copied().unwrap_or(0)
    );
    // The dump says the same.
    let dump = emulator.dump();
    let dumped = serde_json::to_string(&dump).unwrap();
    for p in &points {
        assert!(dumped.contains(&p.id), "{} in the dump", p.id);
    }
    let dead: usize = ["rp-create", "rp-copy", "rp-poll"]
        .iter()
        .map(|q| emulator.bus.dead_letters(q).map(|d| d.len()).unwrap_or(0))
        .sum();
    assert_eq!(dead, report.dead_letters.len());
    println!(
        "{} (test {:.1}s)",
        summary_line(&report),
        started.elapsed().as_secs_f64()
    );
    emulator.stop().await.unwrap();
}

#[test]
fn vmrp_local_exits_0_says_coverage_complete_and_writes_the_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("out.json");
    let out = Command::new(BIN)
        .args([
            "local", "--vms", "6", "--ticks", "2", "--speed", "2400", "--report",
        ])
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("coverage complete: 6 VMs × 2 ticks"),
        "{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["vms"], 6);
    assert_eq!(report["ticks"].as_array().unwrap().len(), 2);
    for role in ["local", "copies"] {
        assert_eq!(report[role]["expected"], 12, "{role}: {report:#}");
        assert_eq!(report[role]["settled"], 12, "{role}");
        assert_eq!(report[role]["duplicates"], 0, "{role}");
        assert_eq!(report[role]["failed"], json!([]), "{role}");
    }
    assert_eq!(report["complete"], true);
    assert_eq!(report["deadLetters"], json!([]));
    assert_eq!(report["untrackedInProgress"], json!([]));
    assert_eq!(report["rows"].as_array().unwrap().len(), 6);
    assert!(report["armRequests"].as_u64().unwrap() > 0);
    assert!(report["handlerLog"].is_string());
}

/// A region that is none is refused before anything starts (old main ran with VMs in `mars`).
#[test]
fn vmrp_local_refuses_unknown_regions_up_front() {
    for args in [
        ["--regions", "mars"],
        ["--copy-to", "mars"],
        ["--regions", "sweden/central"],
    ] {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(["local", "--vms", "2", "--ticks", "1", "--speed", "2400"])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[0]) && stderr.contains(args[1]),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "refused up front"
        );
    }
    // Sovereign-cloud regions are regions.
    let out = Command::new(BIN)
        .args(["local", "--vms", "2", "--ticks", "1", "--speed", "2400"])
        .args(["--regions", "usgovvirginia", "--copy-to", "usgovarizona"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("coverage complete"), "{stdout}");
}

/// Runs `vmrp <args>` against the emulator with its identity settings; (exit code, stdout).
fn run_cli(emulator: &RunningEmulator, args: &[&str]) -> (Option<i32>, String, String) {
    let settings = emulator.handler_settings(BusAuth::Sas);
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "VMRP_ARM_AUDIENCE"] {
        cmd.env(k, &settings[k]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_read_the_emulator_and_explain_every_decision() {
    let started = Instant::now();
    let mut s = scenario(8, 3);
    // A quarter of the fleet is not opted in: status shows those as missing.
    s.fleet.tagged_fraction = 0.75;
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    assert!(report.complete, "{}", summary_line(&report));
    let subscription = emulator.subscriptions[0].clone();
    let last_tick = emulator
        .arm
        .restore_points()
        .iter()
        .map(|p| p.time_created)
        .max()
        .unwrap();

    // Plan with a stricter policy: keep 1 (old points go), copies to swedencentral.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let doc = json!({"rules": [{
        "name": "strict",
        "targets": {"subscriptions": [subscription], "tags": {"vmrp": "on"}},
        "copies": [{"region": "swedencentral", "retention": {"keepLast": 1}}],
        "retention": {"keepLast": 1}
    }]});
    std::fs::write(&policy, doc.to_string()).unwrap();
    // A manual point taken 55 minutes before the next timer tick: that tick's create must wait for
    // Azure's spacing. Real-time clock from here on, so the moments below stay put.
    emulator.clock.set_speed(1.0);
    let timer = vmrp::schedule::Schedule::parse(vmrp::config::DEFAULT_SCHEDULE).unwrap();
    let next_tick = timer.next_after(emulator.clock.now()).unwrap();
    let gap = next_tick - emulator.clock.now() - time::Duration::minutes(55);
    if gap > time::Duration::ZERO {
        emulator.clock.advance(gap);
    }
    let vm = emulator
        .arm
        .restore_points()
        .into_iter()
        .find(|p| p.source_restore_point.is_none())
        .unwrap();
    let url = format!(
        "{}{}/restorePoints/manual-1?api-version={}",
        emulator.urls.arm.trim_end_matches('/'),
        vm.collection,
        vmrp::azure::models::API_VERSION
    );
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let put = reqwest::Client::new()
        .put(&url)
        .bearer_auth(token)
        .json(&json!({"properties": {}}))
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_success(),
        "manual point: {}",
        put.text().await.unwrap()
    );
    let before = emulator.arm.counters();
    let at = (next_tick + time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let arm = emulator.urls.arm.clone();
    let (code, stdout, stderr) = run_cli(
        &emulator,
        &[
            "plan",
            "--arm-endpoint",
            &arm,
            "--subscription",
            &subscription,
            "--policy",
            policy.to_str().unwrap(),
            "--at",
            &at,
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let rows: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let with = |action: &str, prefix: &str| {
        rows.iter()
            .filter(|r| {
                r["action"] == action && r["reason"].as_str().unwrap_or("").starts_with(prefix)
            })
            .count()
    };
    let text = serde_json::to_string_pretty(&rows).unwrap();
    assert!(
        with("delete", "") > 0,
        "retention deletes with reasons:\n{text}"
    );
    assert!(with("wait", "spacing:") > 0, "spacing:\n{text}");
    assert!(
        with("skip", "copy to swedencentral")
            + with("wait", "copy to swedencentral")
            + with("copy", "newest settled")
            > 0,
        "copies:\n{text}"
    );
    assert!(
        with("skip", "not selected by any rule") > 0,
        "untagged VMs:\n{text}"
    );
    for r in &rows {
        assert!(
            !r["reason"].as_str().unwrap_or("").is_empty(),
            "every row has a reason: {r}"
        );
    }

    // status: ok right after the run; late and missing later on.
    let ok_at = (last_tick + time::Duration::minutes(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (code, stdout, stderr) = run_cli(
        &emulator,
        &[
            "status",
            "--arm-endpoint",
            &arm,
            "--subscription",
            &subscription,
            "--policy",
            policy.to_str().unwrap(),
            "--at",
            &ok_at,
            "--json",
        ],
    );
    let status: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let text = serde_json::to_string_pretty(&status).unwrap();
    let coverage = |c: &str| status.iter().filter(|r| r["coverage"] == c).count();
    assert!(coverage("ok") > 0, "{text}");
    // VMs no rule selects are not judged (plan says "not selected by any rule" for them).
    let unselected: Vec<&str> = rows
        .iter()
        .filter(|r| r["reason"] == "not selected by any rule")
        .filter_map(|r| r["vm"].as_str())
        .collect();
    assert!(!unselected.is_empty());
    assert!(
        status
            .iter()
            .all(|r| !unselected.contains(&r["vm"].as_str().unwrap_or(""))),
        "the untagged VMs are not listed: {text}"
    );
    assert_eq!(
        code,
        Some(if coverage("ok") == status.len() { 0 } else { 1 }),
        "status exits 1 exactly when a row is not ok: {text}\n{stderr}"
    );
    let late_at = (last_tick + time::Duration::hours(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, stdout, _) = run_cli(
        &emulator,
        &[
            "status",
            "--arm-endpoint",
            &arm,
            "--subscription",
            &subscription,
            "--policy",
            policy.to_str().unwrap(),
            "--at",
            &late_at,
            "--json",
        ],
    );
    let late: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert!(late.iter().any(|r| r["coverage"] == "late"), "{stdout}");
    // The manual point is still being created (the clock now runs in real time): in flight.
    assert!(
        late.iter()
            .any(|r| r["inFlight"].to_string().contains("manual-1")),
        "{stdout}"
    );

    // Neither command wrote anything: same writes, only GETs added.
    let after = emulator.arm.counters();
    let writes = |c: &vmrp::emulator::arm::ArmCounters| {
        c.requests_by_operation
            .iter()
            .filter(|(op, _)| !op.contains("Get") && !op.contains("List"))
            .map(|(op, n)| (op.clone(), *n))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        writes(&before),
        writes(&after),
        "plan and status issue no writes"
    );
    assert!(after.requests > before.requests, "they did read ARM");
    println!("plan/status test {:.1}s", started.elapsed().as_secs_f64());
    emulator.stop().await.unwrap();
}
