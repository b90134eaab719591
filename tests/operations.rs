//! Operating vmrp, end to end: the real `vmrp` binary behind the Functions host
//! simulation, whose console capture gives each line the level the real host gives it
//! (`WorkerProcess.cs`). A given-up point must reach the host's log at Error (severity alerts
//! fire on it), and every timer run must emit the coverage signal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vmrp::emulator::faults::FaultConfig;
use vmrp::local::{run_scenario, Scenario};

/// `{Level}\t{line}` as the host simulation writes the handler's console (HostSimConfig::console_log).
fn host_log(path: &PathBuf) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| {
            let (level, line) = l.split_once('\t')?;
            Some((level.to_string(), serde_json::from_str(line).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_up_points_reach_the_host_at_error_and_every_tick_reports_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("handler.log");
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_vmrp")));
    s.fleet.count = 6;
    s.fleet.regions = vec!["westeurope".into(), "northeurope".into()];
    s.copy_to = vec![];
    s.ticks = 2;
    s.speed = 1200.0;
    s.timeout = Duration::from_secs(180);
    s.handler_log = Some(log.clone());
    // 70 % of points end Failed: with 2 retries about a third of VM-ticks are given up, the rest
    // settle (some on a retry).
    s.faults = FaultConfig::from_json(
        r#"{"arm": {"operations": {"PUT restorePoints": {"failedProvisioning": 0.7}}}}"#,
    )
    .unwrap();
    let report = run_scenario(&s).await.unwrap();
    let lines = host_log(&log);
    assert!(lines.len() > 20, "the host recorded the handler's console");

    // 1. Severity: every given-up report is an Error in the host's log, every settled one is
    // Information; nothing vmrp logs at ERROR/WARN lands at Information.
    let reports: Vec<&(String, Value)> = lines
        .iter()
        .filter(|(_, v)| v["target"] == "vmrp::report")
        .collect();
    let given_up: Vec<_> = reports
        .iter()
        .filter(|(_, v)| v["outcome"] == "given_up")
        .collect();
    assert!(
        !given_up.is_empty(),
        "the faults give up on some points: {:?}",
        report.local.failed_by_reason
    );
    for (level, v) in &given_up {
        assert_eq!(
            level, "Error",
            "a given-up point reaches the host as {level}: {v}"
        );
        // Structured and correlated: the fields an alert query names, and the invocation.
        for field in ["vm", "point", "region", "role", "reason", "duration_s"] {
            assert!(!v[field].is_null(), "{field} missing in {v}");
        }
        assert!(
            v["span"]["invocation_id"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{v}"
        );
    }
    assert!(reports
        .iter()
        .filter(|(_, v)| v["outcome"] == "settled")
        .all(|(level, _)| level == "Information"));
    for (level, v) in &lines {
        let expected = match v["level"].as_str() {
            Some("ERROR") => "Error",
            Some("WARN") => "Warning",
            _ => "Information",
        };
        assert_eq!(level, expected, "{v}");
    }

    // infra/monitoring/fields.json (what the alert and workbook queries may name) is exactly
    // what the binary logs: each event's own fields, the span's, and the values it writes.
    check_fields_json(&lines);

    // 2. The coverage signal: each timer run emits one event per rule, region and role, whose
    // expected counts add up to the VMs the policy selects.
    let coverage: Vec<&Value> = lines
        .iter()
        .filter(|(_, v)| v["target"] == "vmrp::coverage")
        .map(|(_, v)| v)
        .collect();
    let mut by_tick: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for v in &coverage {
        by_tick
            .entry(v["tick"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    // report.ticks names them like points (rp-20260105T0400Z).
    let names: Vec<String> = by_tick
        .keys()
        .map(|t| format!("rp-{}Z", &t.replace(['-', ':'], "")[..13]))
        .collect();
    assert_eq!(names, report.ticks, "one coverage set per tick");
    let ticks: Vec<&String> = by_tick.keys().collect();
    let per_tick = report.local.expected / report.ticks.len();
    for (tick, events) in &by_tick {
        let regions: std::collections::BTreeSet<&str> = events
            .iter()
            .map(|v| v["region"].as_str().unwrap())
            .collect();
        assert_eq!(regions.len(), 2, "{tick}: one line per region: {events:?}");
        // A retried timer run emits its set again: count one set.
        let set = &events[..2];
        let expected: u64 = set.iter().map(|v| v["expected"].as_u64().unwrap()).sum();
        assert_eq!(expected as usize, per_tick, "{tick}: {set:?}");
        for v in set {
            let n = |k: &str| v[k].as_u64().unwrap();
            assert!(
                n("covered") + n("never_settled") + n("unknown") <= n("expected"),
                "{v}"
            );
            assert_eq!(v["role"], "local");
            assert_eq!(v["rule"], "local-demo");
        }
    }
    // The first tick finds no points; by the second the first tick's settled points count.
    let first = &by_tick[ticks[0]];
    assert!(first
        .iter()
        .all(|v| v["covered"] == 0 && v["oldest_age_s"] == -1));
    let second = &by_tick[ticks[1]];
    let covered: u64 = second
        .iter()
        .take(2)
        .map(|v| v["covered"].as_u64().unwrap())
        .sum();
    assert!(covered > 0, "{second:?}");
    assert!(second
        .iter()
        .take(2)
        .any(|v| v["oldest_age_s"].as_i64().unwrap() >= 4 * 3600 - 600));
}

/// Every `vmrp::report` / `vmrp::coverage` line has exactly the fields fields.json lists (plus
/// the common ones), span fields it lists, and only the values it lists; each event kind shows
/// up at least once.
fn check_fields_json(lines: &[(String, Value)]) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/monitoring/fields.json"
    ))
    .unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();
    let strings = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let common = strings(&spec["common"]);
    let span = strings(&spec["span"]);
    let events = spec["events"].as_object().unwrap();
    for (target, event) in events {
        // Drill events come from RunRestoreDrills, which this lifecycle run does not fire:
        // tests/drills.rs checks them against the same list.
        if target == "vmrp::drill" {
            continue;
        }
        let fields = strings(&event["fields"]);
        let seen: Vec<&Value> = lines
            .iter()
            .filter(|(_, v)| v["target"] == target.as_str())
            .map(|(_, v)| v)
            .collect();
        assert!(!seen.is_empty(), "no {target} event in the run");
        for v in seen {
            let keys: std::collections::BTreeSet<String> =
                v.as_object().unwrap().keys().cloned().collect();
            let own: std::collections::BTreeSet<String> =
                keys.difference(&common).cloned().collect();
            assert_eq!(
                own, fields,
                "{target}: fields.json says {fields:?}, vmrp logs {v}"
            );
            let span_keys: std::collections::BTreeSet<String> =
                v["span"].as_object().unwrap().keys().cloned().collect();
            assert!(
                span_keys.is_subset(&span),
                "{target}: span {span_keys:?} not in {span:?}"
            );
            for (field, values) in event["values"].as_object().unwrap() {
                let allowed = strings(values);
                let got = v[field.as_str()].as_str().unwrap();
                assert!(
                    allowed.contains(got),
                    "{target}: {field} {got:?} not in {allowed:?}"
                );
            }
        }
    }
}

/// `vmrp status --watch` redraws the table in place: every interval one frame that starts with
/// "cursor home, clear screen", until stopped; `--html` is written as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_redraws_the_table_every_interval() {
    use vmrp::emulator::arm::ArmConfig;
    use vmrp::emulator::server::{self, BusAuth, EmulatorConfig};
    let mut arm = ArmConfig::default();
    arm.fleet.count = 3;
    let emulator = server::start(EmulatorConfig {
        arm,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("status.html");
    let settings = emulator.handler_settings(BusAuth::Sas);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vmrp"));
    cmd.args(["status", "--watch", "--interval", "1", "--arm-endpoint"])
        .arg(&settings["VMRP_ARM_ENDPOINT"])
        .args(["--subscription", &emulator.subscriptions[0], "--html"])
        .arg(&html)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "VMRP_ARM_AUDIENCE"] {
        cmd.env(k, &settings[k]);
    }
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        still_running,
        "--watch keeps going: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<&str> = stdout.split(vmrp::commands::status::CLEAR).collect();
    assert!(
        frames[0].is_empty(),
        "every frame starts by clearing: {stdout:?}"
    );
    assert!(frames.len() > 2, "at least two frames in 3.5 s: {stdout}");
    for frame in &frames[1..] {
        assert!(frame.starts_with("vmrp status at "), "{frame}");
        assert!(frame.contains("newest settled"), "the table: {frame}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("vmrp-data"));
    emulator.stop().await.unwrap();
}
