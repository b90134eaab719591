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

/// One fleet run at a time (as in e2e_lifecycle.rs): each run, in this process or in a `vmrp
/// local` child, is sized for the 2-core CI machine on its own; runs in parallel starve each
/// other's handler into timeouts that are about the machine, not vmrp.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scenario(vms: usize, ticks: u32) -> Scenario {
    let mut s = Scenario::new(PathBuf::from(BIN));
    s.fleet.count = vms;
    s.copy_to = vec!["swedencentral".into()];
    s.ticks = ticks;
    s.speed = 2400.0;
    s.timeout = Duration::from_secs(120);
    s
}

/// oav (`VMRP_OAV`), or `None` with a note when it may be skipped: outside CI (`CI` unset) and
/// outside the README's test command (`VMRP_REQUIRE_OAV` unset). Where it is required, its
/// absence fails the test instead of passing it unchecked.
fn oav() -> Option<String> {
    if let Ok(oav) = std::env::var("VMRP_OAV") {
        return Some(oav);
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("VMRP_REQUIRE_OAV").is_some();
    assert!(
        !required,
        "oav is required here (CI or VMRP_REQUIRE_OAV is set) but VMRP_OAV is not: run scripts/setup.sh and set VMRP_OAV to its oav"
    );
    println!("skipped oav validation: set VMRP_OAV to an oav 4.0.3 binary (scripts/setup.sh installs one)");
    None
}

/// The copied Microsoft.Compute swagger the traffic is validated against.
fn spec_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/reference")).join("arm/spec/specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_agrees_with_the_emulator_state() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let started = Instant::now();
    let traffic = tempfile::tempdir().unwrap();
    let mut s = scenario(10, 2);
    s.record_traffic = Some(traffic.path().to_path_buf());
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    assert!(report.complete, "{}", summary_line(&report));
    let points = emulator.arm.restore_points();
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
    // ARM traffic: the report's figures against what ARM answered, as recorded on the wire
    // (one traffic file per exchange, named `{n}-{method}-{operation}-{status}`), not against
    // the counters the report copied them from. No fault in this run, so no connection was
    // dropped before its answer was recorded.
    let files: Vec<String> = std::fs::read_dir(traffic.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut on_the_wire: BTreeMap<String, u64> = BTreeMap::new();
    let mut throttled = 0;
    for f in &files {
        let parts: Vec<&str> = f.split('.').next().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4, "{f}");
        *on_the_wire.entry(parts[2].to_string()).or_default() += 1;
        throttled += u64::from(parts[3] == "429");
    }
    assert_eq!(report.arm_requests_by_operation, on_the_wire);
    assert_eq!(report.arm_requests, files.len() as u64);
    assert_eq!(report.throttled_429, throttled);
    // Every create of a point that settled went over the wire.
    assert!(
        on_the_wire["RestorePoints_Create"]
            >= (report.local.settled + report.copies.settled) as u64,
        "{on_the_wire:?}"
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
    assert_eq!(dead, 0);
    assert!(report.dead_letters.is_empty());
    emulator.stop().await.unwrap();
    // The whole run's traffic, valid per the swagger (docs/emulator-arm.md: "a full scenario").
    let validatable = files.iter().filter(|f| f.ends_with(".json")).count();
    assert!(validatable > 100, "{validatable} validatable exchanges");
    if let Some(oav) = oav() {
        let out = Command::new(&oav)
            .arg("validate-traffic")
            .arg(traffic.path())
            .arg(spec_dir())
            .args(["--report", ""])
            .output()
            .expect("run oav");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("No errors"),
            "oav found errors in the scenario's traffic:\n{text}"
        );
    }
    println!(
        "{} (test {:.1}s)",
        summary_line(&report),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn vmrp_local_exits_0_says_coverage_complete_and_writes_the_json_report() {
    let _one = ONE_RUN_AT_A_TIME.blocking_lock();
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
    let _one = ONE_RUN_AT_A_TIME.blocking_lock();
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

#[test]
fn vmrp_local_exits_1_when_coverage_is_incomplete() {
    let _one = ONE_RUN_AT_A_TIME.blocking_lock();
    // Every restore point ends Failed: the poll retries it (maxRetries 2 in the default policy),
    // then reports it; the README promises a non-zero exit when an expected point is missing.
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.json");
    std::fs::write(&faults, r#"{"arm": {"failedProvisioning": 1.0}}"#).unwrap();
    let report_path = dir.path().join("out.json");
    let out = Command::new(BIN)
        .args([
            "local",
            "--vms",
            "2",
            "--ticks",
            "1",
            "--copy-to",
            "",
            "--speed",
            "2400",
        ])
        .arg("--faults")
        .arg(&faults)
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("COVERAGE INCOMPLETE: 2 VMs × 1 ticks"),
        "{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["local"]["expected"], 2);
    assert_eq!(report["local"]["settled"], 0, "{report:#}");
    // Each missing point says why: vmrp reported the Failed point after its retries.
    for m in report["local"]["failed"].as_array().unwrap() {
        assert_eq!(m["explainedBy"], "reported", "{m}");
        assert!(m["reason"].as_str().unwrap().contains("Failed"), "{m}");
    }
}

/// The README's `--faults examples/faults.json` is a file `FaultConfig` accepts (it rejects
/// unknown fields), and it turns on every kind of fault it documents.
#[test]
fn the_example_faults_file_parses_and_injects_every_kind() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/faults.json");
    let text = std::fs::read_to_string(path).unwrap();
    let f = vmrp::emulator::faults::FaultConfig::from_json(&text).unwrap();
    assert!(f.arm.server_error > 0.0, "{f:?}");
    assert!(f.arm.throttle > 0.0, "{f:?}");
    assert!(f.arm.failed_provisioning > 0.0, "{f:?}");
    assert!(f.arm.drop > 0.0, "{f:?}");
    assert!(f.arm.latency_ms > 0, "{f:?}");
    assert!(f.service_bus.duplicate_delivery > 0.0, "{f:?}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("--faults examples/faults.json"));
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
    let _one = ONE_RUN_AT_A_TIME.lock().await;
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
    // Per VM, not "some row somewhere": the plan must say the right thing about each one.
    let tagged: std::collections::BTreeSet<String> = emulator
        .arm
        .list_vms()
        .iter()
        .filter(|v| {
            v.tags
                .as_ref()
                .and_then(|t| t.get("vmrp"))
                .is_some_and(|t| t == "on")
        })
        .map(|v| v.name.clone().unwrap())
        .collect();
    let all: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| r["vm"].as_str().unwrap().to_string())
        .collect();
    let rows_of = |vm: &str| -> Vec<&Value> { rows.iter().filter(|r| r["vm"] == vm).collect() };
    let manual_vm = vm.vm.rsplit('/').next().unwrap().to_string();
    assert!(
        tagged.contains(&manual_vm) && tagged.len() < all.len(),
        "{tagged:?} {all:?}"
    );
    for name in &all {
        let mine = rows_of(name);
        let has = |action: &str, prefix: &str| {
            mine.iter()
                .any(|r| r["action"] == action && r["reason"].as_str().unwrap().starts_with(prefix))
        };
        if !tagged.contains(name) {
            assert!(
                mine.len() == 1 && has("skip", "not selected by any rule"),
                "{name} is not opted in: {mine:#?}"
            );
            continue;
        }
        // The next tick is due for every opted-in VM: created, or (the manual point's VM only)
        // waiting for Azure's spacing.
        if *name == manual_vm {
            assert!(has("wait", "spacing:"), "{name}: {mine:#?}");
            assert!(!has("create", ""), "{name}: {mine:#?}");
        } else {
            assert!(has("create", ""), "{name}: {mine:#?}");
            assert!(!has("wait", "spacing:"), "{name}: {mine:#?}");
        }
        // keepLast 1 over three settled ticks: something of each collection goes, only vmrp's
        // own points, never the manual one.
        let deletes: Vec<&&Value> = mine.iter().filter(|r| r["action"] == "delete").collect();
        assert!(!deletes.is_empty(), "{name}: {mine:#?}");
        for d in &deletes {
            let target = d["target"].as_str().unwrap();
            assert!(
                target.contains("/restorePoints/rp-") || target.starts_with("rp-"),
                "{name} deletes only vmrp's points: {d}"
            );
        }
        // Every opted-in VM has a decision about its copy to swedencentral.
        assert!(
            mine.iter().any(|r| r["region"] == "swedencentral"
                && ["copy", "wait", "skip", "delete"].contains(&r["action"].as_str().unwrap())),
            "{name}: {mine:#?}"
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

/// `vmrp local --fleet mixed` (24 VMs × 2 ticks): every VM without a point is explained, the
/// explanation is the one `vmrp plan` gives for the same VM (confidential, write-accelerated,
/// no Premium storage), Trusted Launch VMs get their points, and Azure Backup's collections
/// are read (plan and status say so) but never written to: their points are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_every_missing_point_is_explained_as_plan_names_it() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = scenario(24, 2);
    s.mix = vmrp::local::FleetMix::Mixed;
    s.mix.apply(&mut s.fleet);
    s.fleet.tagged_fraction = 1.0;
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    assert!(report.complete, "{}", summary_line(&report));
    assert_eq!(report.local.unexplained(), 0);
    assert_eq!(report.copies.unexplained(), 0);
    let unsupported: std::collections::BTreeSet<String> = report
        .local
        .failed
        .iter()
        .map(|m| {
            assert_eq!(
                m.explained_by,
                vmrp::local::Explanation::Unsupported,
                "{m:?}"
            );
            m.vm.clone()
        })
        .collect();
    let reasons: Vec<&str> = report
        .local
        .failed
        .iter()
        .map(|m| m.reason.as_str())
        .collect();
    for case in ["confidential VM", "write-accelerated", "Premium storage"] {
        assert!(
            reasons.iter().any(|r| r.contains(case)),
            "no VM of the mixed fleet is {case}: {reasons:?}"
        );
    }
    // No create was ever sent for them (the plan skipped them), so ARM holds none of theirs.
    let points = emulator.arm.restore_points();
    for vm in &unsupported {
        assert!(
            !points.iter().any(|p| p.vm.ends_with(&format!("/{vm}"))),
            "{vm} has a point"
        );
    }
    // Trusted Launch is supported: each such VM selected has its points.
    let trusted: Vec<String> = emulator
        .arm
        .list_vms()
        .into_iter()
        .filter(|vm| vm.security_type() == Some("TrustedLaunch"))
        .filter_map(|vm| vm.name)
        .collect();
    assert!(
        !trusted.is_empty(),
        "the mixed fleet has Trusted Launch VMs"
    );
    for vm in &trusted {
        assert!(!unsupported.contains(vm), "{vm} is Trusted Launch");
    }
    // Azure Backup's collections: all their points still there, none of vmrp's in them.
    let backup: Vec<_> = emulator
        .arm
        .collections()
        .into_iter()
        .filter(|c| c.name.as_deref().unwrap_or("").starts_with("AzureBackup_"))
        .collect();
    assert!(
        !backup.is_empty(),
        "the mixed fleet has Backup-protected VMs"
    );
    let per_vm = vmrp::emulator::arm::fleet::BACKUP_POINTS_PER_VM as usize + 1;
    for c in &backup {
        let pts = c.restore_points();
        assert_eq!(pts.len(), per_vm, "{:?}", c.id);
        assert!(pts
            .iter()
            .all(|p| p.name.as_deref().unwrap_or("").starts_with("AzureBackup_")));
    }

    // `vmrp plan` names the same VMs, with the same reasons, and notes Backup's collections.
    let subscription = emulator.subscriptions[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    // vmrp local's policy for the mixed fleet (local::mixed_policy), as a file.
    let doc = json!({"rules": [{
        "name": "local-demo",
        "targets": {"subscriptions": [subscription], "tags": {"vmrp": "on"}},
        "consistency": "CrashConsistent",
        "excludeDisks": {"skus": ["UltraSSD_LRS", "PremiumV2_LRS"]},
        "copies": [{"region": "swedencentral", "retention": {"keepLast": 2}}],
        "retention": {"keepLast": 3},
        "deadlines": {"localMinutes": 120, "copyMinutes": 1440, "maxRetries": 2}
    }]});
    std::fs::write(&policy, doc.to_string()).unwrap();
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
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let rows: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let refused: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r["reason"].as_str().unwrap_or("").starts_with("refused: "))
        .map(|r| r["vm"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        refused, unsupported,
        "plan names the VMs the report explains"
    );
    let backup_notes = rows
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("Azure Backup also protects this VM")
        })
        .count();
    assert_eq!(backup_notes, backup.len(), "{rows:#?}");
    assert!(
        !rows.iter().any(|r| r["action"] == "delete"
            && r["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("AzureBackup_")),
        "plan never deletes Backup's points"
    );
    let (_, stdout, stderr) = run_cli(
        &emulator,
        &[
            "status",
            "--arm-endpoint",
            &arm,
            "--subscription",
            &subscription,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    assert!(
        stdout.contains("Azure Backup also protects this VM"),
        "{stdout}\n{stderr}"
    );
    emulator.stop().await.unwrap();
}
