//! The command line's contract: every flag of every subcommand, as clap defines it
//! (`Cli::command()`), is exercised by a test here that observes what the flag does, not only
//! that it parses. A new flag without an entry in [`CONTRACT`] fails
//! `every_flag_of_every_subcommand_has_a_test`.
//!
//! Every child process starts with an empty environment (`env_clear`) plus PATH, so a variable
//! that mirrors a flag (`VMRP_ARM_AUDIENCE`, `VMRP_SCHEDULE`, `VMRP_POLICY_FILE`, …) can never
//! stand in for the flag under test. Everything talks to 127.0.0.1 only: `plan` and `status`
//! always get `--arm-endpoint` of an in-process emulator (or a closed loopback port).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use serde_json::{json, Value};
use time::macros::datetime;
use vmrp::emulator::arm::{ArmConfig, FleetSpec};
use vmrp::emulator::server::{self, BusAuth, EmulatorConfig, RunningEmulator};

const BIN: &str = env!("CARGO_BIN_EXE_vmrp");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// A small executable ELF file to package (zipping the 190 MB debug build takes a minute).
const SMALL_ELF: &str = "/bin/true";

/// (subcommand path, flag, the test that observes it).
const CONTRACT: &[(&str, &str, fn())] = &[
    ("serve", "--log-json", serve_logging_and_shutdown_grace),
    (
        "serve",
        "--shutdown-grace-secs",
        serve_logging_and_shutdown_grace,
    ),
    ("plan", "--subscription", plan_reads_the_given_subscriptions),
    (
        "plan",
        "--arm-endpoint",
        plan_and_status_talk_to_arm_endpoint,
    ),
    ("plan", "--arm-audience", arm_audience_flag_without_env),
    ("plan", "--json", plan_flags_shape_the_plan),
    ("plan", "--policy", plan_flags_shape_the_plan),
    ("plan", "--schedule", plan_flags_shape_the_plan),
    ("plan", "--at", plan_flags_shape_the_plan),
    (
        "status",
        "--subscription",
        status_reads_the_given_subscriptions,
    ),
    (
        "status",
        "--arm-endpoint",
        plan_and_status_talk_to_arm_endpoint,
    ),
    ("status", "--arm-audience", arm_audience_flag_without_env),
    ("status", "--json", status_flags_judge_coverage),
    ("status", "--schedule", status_flags_judge_coverage),
    ("status", "--policy", status_policy_selects_and_is_validated),
    ("status", "--html", status_html_watch_and_interval),
    ("status", "--watch", status_html_watch_and_interval),
    ("status", "--interval", status_html_watch_and_interval),
    (
        "status",
        "--drill-table",
        status_drill_table_shows_the_last_drill,
    ),
    ("local", "--html", local_run_flags),
    ("local", "--drill", local_drill),
    ("status", "--at", status_flags_judge_coverage),
    ("restore", "--vm", restore_plan_flags),
    ("restore", "--point", restore_plan_flags),
    ("restore", "--at", restore_plan_flags),
    ("restore", "--region", restore_plan_flags),
    ("restore", "--resource-group", restore_plan_flags),
    ("restore", "--plan", restore_plan_flags),
    ("restore", "--new-vm", restore_plan_flags),
    ("restore", "--subnet", restore_plan_flags),
    ("restore", "--in-place", restore_plan_flags),
    ("restore", "--delete-originals", restore_plan_flags),
    ("restore", "--sku", restore_plan_flags),
    ("restore", "--zone", restore_plan_flags),
    ("restore", "--disk-encryption-set", restore_plan_flags),
    ("restore", "--json", restore_plan_flags),
    ("restore", "--yes", restore_confirmation_and_endpoint_flags),
    (
        "restore",
        "--arm-endpoint",
        restore_confirmation_and_endpoint_flags,
    ),
    (
        "restore",
        "--arm-audience",
        restore_confirmation_and_endpoint_flags,
    ),
    ("status", "--read-share", read_share_is_validated_and_used),
    ("plan", "--read-share", read_share_is_validated_and_used),
    ("policy check", "<file>", policy_check_flags),
    ("policy check", "--timer-schedule", policy_check_flags),
    ("policy check", "--json", policy_check_flags),
    ("package", "--out", package_flags),
    ("package", "--zip", package_flags),
    ("package", "--binary", package_flags),
    ("package", "--no-build", package_build_flags),
    ("package", "--target", package_build_flags),
    ("package", "--app-root", package_flags),
    ("emulate", "--port", emulate_flags),
    ("emulate", "--fleet", emulate_flags),
    ("emulate", "--regions", emulate_flags),
    ("emulate", "--speed", emulate_flags),
    ("emulate", "--faults", emulate_flags),
    ("emulate", "--record-traffic", emulate_flags),
    ("emulate", "--dump-state", emulate_flags),
    ("emulate", "--seed", emulate_flags),
    ("emulate", "--start", emulate_flags),
    ("emulate", "--no-arm-auth", emulate_flags),
    ("emulate", "--max-delivery-count", emulate_flags),
    ("emulate", "--app-root", emulate_host_flags),
    ("emulate", "--handler", emulate_host_flags),
    ("emulate", "--env", emulate_host_flags),
    ("emulate", "--bus-auth", emulate_host_flags),
    ("emulate", "--timer-ticks", emulate_host_flags),
    ("emulate", "--instances", emulate_host_flags),
    ("emulate", "--background-load", emulate_flags),
    ("local", "--instances", local_run_flags),
    ("local", "--background-load", local_run_flags),
    ("local", "--vms", local_run_flags),
    ("local", "--regions", local_run_flags),
    ("local", "--copy-to", local_run_flags),
    ("local", "--ticks", local_run_flags),
    ("local", "--speed", local_run_flags),
    ("local", "--schedule", local_run_flags),
    ("local", "--report", local_run_flags),
    ("local", "--handler-log", local_run_flags),
    ("local", "--faults", local_faults_flag),
    ("local", "--fleet", local_fleet_mixed),
    ("local", "--timeout-secs", local_timeout_flag),
    ("local", "--policy", local_policy_and_seed_flags),
    ("local", "--seed", local_policy_and_seed_flags),
    (
        "local",
        "--keep-running",
        local_keep_running_stops_on_sigterm,
    ),
    ("bench", "--quick", bench_quick_flags),
    ("bench", "--no-peer", bench_quick_flags),
    ("bench", "--skip-fleet", bench_quick_flags),
    ("bench", "--invocations", bench_quick_flags),
    ("bench", "--runs", bench_quick_flags),
    ("bench", "--json", bench_quick_flags),
    ("bench", "--baseline", bench_quick_flags),
    ("bench", "--peer", bench_full_flags),
    ("bench", "--fleet", bench_full_flags),
    ("bench", "--fleet-speed", bench_full_flags),
    ("bench", "--deploy-binary", bench_full_flags),
    ("bench", "--handler", bench_full_flags),
    ("bench", "--estate", bench_full_flags),
    ("bench", "--window", bench_full_flags),
];

/// Every (subcommand path, flag) clap knows, help and version aside; positionals as `<id>`.
fn clap_flags() -> BTreeSet<(String, String)> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut BTreeSet<(String, String)>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => format!("<{id}>"),
            };
            out.insert((path.to_string(), name));
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &path, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&vmrp::cli::Cli::command(), "", &mut out);
    out
}

#[test]
fn every_flag_of_every_subcommand_has_a_test() {
    let defined = clap_flags();
    let tested: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(cmd, flag, _)| (cmd.to_string(), flag.to_string()))
        .collect();
    let untested: Vec<_> = defined.difference(&tested).collect();
    let stale: Vec<_> = tested.difference(&defined).collect();
    assert!(
        untested.is_empty(),
        "flags without a test in tests/cli_flags.rs CONTRACT: {untested:?}"
    );
    assert!(
        stale.is_empty(),
        "CONTRACT names flags clap does not define: {stale:?}"
    );
    // The mirrored variables really are variables clap reads (so clearing them matters).
    let mut mirrored = Vec::new();
    fn envs(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            envs(sub, out);
        }
    }
    envs(&vmrp::cli::Cli::command(), &mut mirrored);
    assert!(
        mirrored.iter().any(|e| e == "VMRP_ARM_AUDIENCE"),
        "{mirrored:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `vmrp ARGS` with an empty environment (PATH and RUST_LOG=warn only).
fn vmrp(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out: Output = cmd.output().expect("vmrp runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET `url` (loopback only): (status, body).
fn get(url: &str) -> Option<(u16, String)> {
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    runtime().block_on(async {
        let rsp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .ok()?
            .get(url)
            .send()
            .await
            .ok()?;
        let status = rsp.status().as_u16();
        Some((status, rsp.text().await.ok()?))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A child process killed (SIGKILL) and reaped when the test ends, however it ends.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started.
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, sig) },
        0,
        "kill {pid}"
    );
}

/// The pids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Running (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one `vmrp serve` child of `pid`, once it is there.
fn handler_child(pid: u32) -> u32 {
    let mut found = None;
    wait_until(Duration::from_secs(30), "the handler child", || {
        found = children_of(pid).into_iter().find(|c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("serve"))
        });
        found.is_some()
    });
    found.unwrap()
}

/// An app root as the repository lays it out (what `package` reads): host.json and
/// functions/<Name>/function.json.
fn source_root(dir: &Path) -> PathBuf {
    let root = dir.join("src-root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(Path::new(REPO).join("host.json"), root.join("host.json")).unwrap();
    for entry in std::fs::read_dir(Path::new(REPO).join("functions")).unwrap() {
        let entry = entry.unwrap();
        let to = root.join("functions").join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(entry.path().join("function.json"), to.join("function.json")).unwrap();
    }
    root
}

/// An app root like the package: host.json and one folder per function.
fn app_root(dir: &Path) -> PathBuf {
    let root = dir.join("pkg");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(Path::new(REPO).join("host.json"), root.join("host.json")).unwrap();
    for entry in std::fs::read_dir(Path::new(REPO).join("functions")).unwrap() {
        let entry = entry.unwrap();
        let to = root.join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(entry.path().join("function.json"), to.join("function.json")).unwrap();
    }
    root
}

fn policy_for(subscription: &str) -> String {
    json!({"rules": [{
        "name": "tagged",
        "targets": {"subscriptions": [subscription], "tags": {"vmrp": "on"}},
        "retention": {"keepLast": 3}
    }]})
    .to_string()
}

/// The virtual start of the in-process emulator plan and status read.
const START: time::OffsetDateTime = datetime!(2026-01-01 03:10 UTC);

/// An emulator (real-time clock from [`START`]) with two VMs in westeurope: `vms[0]` tagged
/// vmrp=on with one settled point made at about 03:10, `vms[1]` untagged.
async fn arm_emulator() -> (RunningEmulator, Vec<String>) {
    let emulator = server::start(EmulatorConfig {
        speed: 1.0,
        start: START,
        seed: 3,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: 2,
                regions: vec!["westeurope".into()],
                seed: 3,
                ..FleetSpec::default()
            },
            ..ArmConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut vms: Vec<String> = emulator
        .arm
        .list_vms()
        .iter()
        .filter_map(|vm| vm.id.clone())
        .collect();
    vms.sort();
    let tags = |on: bool| -> vmrp::azure::models::Tags {
        if on {
            [("vmrp".to_string(), "on".to_string())].into()
        } else {
            Default::default()
        }
    };
    for (i, vm) in vms.iter().enumerate() {
        let id = vmrp::azure::ResourceId::parse(vm).unwrap();
        assert!(emulator.arm.set_vm_tags(&id, &tags(i == 0)));
    }
    // One point for vms[0], through ARM's API like any other tool would make it.
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let vm = vmrp::azure::ResourceId::parse(&vms[0]).unwrap();
    let collection = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/restorePointCollections/rpc-manual",
        vm.subscription(),
        vm.resource_group().unwrap()
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = emulator.urls.arm.trim_end_matches('/').to_string();
    let api = vmrp::azure::models::API_VERSION;
    for (path, body) in [
        (
            collection.clone(),
            json!({"location": "westeurope", "properties": {"source": {"id": vms[0]}}}),
        ),
        (
            format!("{collection}/restorePoints/manual-1"),
            json!({"properties": {}}),
        ),
    ] {
        let rsp = http
            .put(format!("{base}{path}?api-version={api}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            rsp.status().is_success(),
            "{path}: {}",
            rsp.text().await.unwrap()
        );
    }
    emulator.clock.advance(time::Duration::hours(1));
    wait_until(Duration::from_secs(10), "the point to settle", || {
        emulator
            .arm
            .restore_points()
            .iter()
            .all(|p| p.provisioning_state == "Succeeded")
    });
    (emulator, vms)
}

/// `vmrp <command> --arm-endpoint <emulator> --arm-audience https://management.azure.com …`
/// with the managed-identity settings (and nothing else) in the environment.
fn arm_cli(emulator: &RunningEmulator, args: &[&str]) -> (Option<i32>, String, String) {
    let settings = emulator.handler_settings(BusAuth::Sas);
    let mut cmd = vmrp(args);
    for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"] {
        cmd.env(k, &settings[k]);
    }
    run(&mut cmd)
}

fn rows(stdout: &str, stderr: &str) -> Vec<Value> {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("{e}\nstdout:\n{stdout}\nstderr:\n{stderr}"))
}

const AUDIENCE: &str = "https://management.azure.com";

// ---------------------------------------------------------------------------------------------
// plan and status

/// Regression: `--arm-audience` was parsed and never used; only VMRP_ARM_AUDIENCE worked.
#[test]
fn arm_audience_flag_without_env() {
    runtime().block_on(async {
        let (emulator, _) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        for command in ["status", "plan"] {
            let dir = tempfile::tempdir().unwrap();
            let policy = dir.path().join("p.json");
            std::fs::write(&policy, policy_for(&sub)).unwrap();
            let base = [
                command,
                "--arm-endpoint",
                &arm,
                "--subscription",
                &sub,
                "--policy",
                policy.to_str().unwrap(),
                "--json",
            ];
            let mut with = base.to_vec();
            with.extend(["--arm-audience", AUDIENCE]);
            let (code, stdout, stderr) = arm_cli(&emulator, &with);
            assert!(
                matches!(code, Some(0) | Some(1)) && !stderr.contains("InvalidAuthenticationToken"),
                "{command} with --arm-audience: {code:?}\n{stdout}\n{stderr}"
            );
            assert!(!rows(&stdout, &stderr).is_empty(), "{command}: {stdout}");
            // Without it the token is for the endpoint's own origin, which the emulator (playing
            // the public cloud) refuses: the flag is what made the difference.
            let (code, _, stderr) = arm_cli(&emulator, &base);
            assert_eq!(code, Some(1), "{command} without --arm-audience");
            assert!(
                stderr.contains("InvalidAuthenticationToken"),
                "{command}: {stderr}"
            );
        }
        emulator.stop().await.unwrap();
    });
}

/// `--read-share`: the share of ARM's read budget `status` and `plan` may use (their reads are
/// paced from ARM's remaining-reads headers, tests/paced_reads.rs). Out of (0, 1] it is refused
/// with the range; in it, the command reads and answers.
#[test]
fn read_share_is_validated_and_used() {
    runtime().block_on(async {
        let (emulator, _) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.json");
        std::fs::write(&policy, policy_for(&sub)).unwrap();
        for command in ["status", "plan"] {
            let args = |share: &'static str| {
                vec![
                    command,
                    "--arm-endpoint",
                    &arm,
                    "--arm-audience",
                    AUDIENCE,
                    "--subscription",
                    &sub,
                    "--policy",
                    policy.to_str().unwrap(),
                    "--json",
                    "--read-share",
                    share,
                ]
            };
            for bad in ["0", "1.5", "half"] {
                let (code, _, stderr) = arm_cli(&emulator, &args(bad));
                assert_eq!(code, Some(2), "{command} --read-share {bad}: {stderr}");
                assert!(stderr.contains("between 0 (exclusive) and 1"), "{stderr}");
            }
            let (code, stdout, stderr) = arm_cli(&emulator, &args("0.2"));
            assert!(matches!(code, Some(0) | Some(1)), "{command}: {stderr}");
            assert!(!rows(&stdout, &stderr).is_empty(), "{command}: {stdout}");
        }
        emulator.stop().await.unwrap();
    });
}

#[test]
fn plan_and_status_talk_to_arm_endpoint() {
    runtime().block_on(async {
        // The emulator's identity, and ARM at a closed loopback port: the error names that
        // port, so the flag decided where to go (the other tests here read the emulator's ARM).
        let (emulator, _) = arm_emulator().await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = format!("http://127.0.0.1:{closed}");
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.json");
        std::fs::write(&policy, policy_for(&emulator.subscriptions[0])).unwrap();
        for command in ["plan", "status"] {
            let (code, stdout, stderr) = arm_cli(
                &emulator,
                &[
                    command,
                    "--arm-endpoint",
                    &endpoint,
                    "--arm-audience",
                    AUDIENCE,
                    "--policy",
                    policy.to_str().unwrap(),
                ],
            );
            assert_eq!(code, Some(1), "{command}: {stdout}\n{stderr}");
            assert!(
                stderr.contains(&format!("127.0.0.1:{closed}")),
                "{command}: {stderr}"
            );
        }
        emulator.stop().await.unwrap();
    });
}

#[test]
fn plan_flags_shape_the_plan() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.json");
        std::fs::write(&policy, policy_for(&sub)).unwrap();
        let plan = |extra: &[&str]| {
            let mut args = vec![
                "plan",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--subscription",
                &sub,
                "--policy",
                policy.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            arm_cli(&emulator, &args)
        };
        let name = |vm: &str| vm.rsplit('/').next().unwrap().to_string();

        // --json: rows as JSON; --policy: the rule selects vms[0] only.
        let (code, stdout, stderr) = plan(&["--json", "--at", "2026-01-01T12:05:00Z"]);
        assert_eq!(code, Some(0), "{stderr}");
        let json_rows = rows(&stdout, &stderr);
        let of = |vm: &str| -> Vec<&Value> {
            json_rows.iter().filter(|r| r["vm"] == name(vm)).collect()
        };
        assert!(of(&vms[0]).iter().all(|r| r["rule"] == "tagged"), "{stdout}");
        assert_eq!(of(&vms[1])[0]["reason"], "not selected by any rule", "{stdout}");
        // --at: the create is for the tick at or before it (default timer every 4 h).
        let create = |rows: &[Value]| {
            rows.iter()
                .find(|r| r["action"] == "create")
                .map(|r| r["target"].as_str().unwrap().to_string())
        };
        assert_eq!(create(&json_rows).as_deref(), Some("rp-20260101T1200Z"), "{stdout}");
        // --schedule: every 4 h at :30 moves the tick (08:35 → the 08:30 tick).
        let (_, stdout, stderr) = plan(&[
            "--json",
            "--at",
            "2026-01-01T08:35:00Z",
            "--schedule",
            "0 30 */4 * * *",
        ]);
        assert_eq!(
            create(&rows(&stdout, &stderr)).as_deref(),
            Some("rp-20260101T0830Z"),
            "{stdout}"
        );
        // At 12:05 the 08:30 tick is past its supersede cut-off (09:30: application-consistent
        // points 3 h before the 12:30 tick): the timer would not send it, and the plan says so.
        let (_, stdout, stderr) = plan(&[
            "--json",
            "--at",
            "2026-01-01T12:05:00Z",
            "--schedule",
            "0 30 */4 * * *",
        ]);
        let late = rows(&stdout, &stderr);
        assert_eq!(create(&late), None, "{stdout}");
        assert!(
            late.iter().any(|r| r["action"] == "wait"
                && r["target"] == "rp-20260101T0830Z"
                && r["reason"].as_str().unwrap().contains("does not fit this tick")),
            "{stdout}"
        );
        // Without --json: the table.
        let (_, table, _) = plan(&["--at", "2026-01-01T12:05:00Z"]);
        assert!(table.contains("restore point") && table.contains("rp-20260101T1200Z"), "{table}");
        assert!(serde_json::from_str::<Value>(&table).is_err());
        // A different policy file, a different plan: nothing selected at all.
        let other = dir.path().join("other.json");
        std::fs::write(
            &other,
            json!({"rules": [{"name": "none", "targets": {"subscriptions": [sub], "tags": {"team": "x"}}, "retention": {"keepLast": 1}}]}).to_string(),
        )
        .unwrap();
        let (_, stdout, stderr) = arm_cli(
            &emulator,
            &[
                "plan", "--arm-endpoint", &arm, "--arm-audience", AUDIENCE, "--subscription", &sub,
                "--policy", other.to_str().unwrap(), "--json",
            ],
        );
        assert!(
            rows(&stdout, &stderr).iter().all(|r| r["reason"] == "not selected by any rule"),
            "{stdout}"
        );
        emulator.stop().await.unwrap();
    });
}

/// Regression: `plan` aborted on one subscription answering 404.
#[test]
fn plan_reads_the_given_subscriptions() {
    runtime().block_on(async {
        let (emulator, _) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let gone = "00000000-0000-0000-0000-00000000dead";
        let arm = emulator.urls.arm.clone();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.json");
        // The policy names the gone subscription only: --subscription decides what is read.
        std::fs::write(&policy, policy_for(gone)).unwrap();
        let args = |subs: &[&str]| {
            let mut a = vec![
                "plan".to_string(),
                "--arm-endpoint".into(),
                arm.clone(),
                "--arm-audience".into(),
                AUDIENCE.into(),
                "--policy".into(),
                policy.to_str().unwrap().into(),
                "--json".into(),
            ];
            for s in subs {
                a.push("--subscription".into());
                a.push(s.to_string());
            }
            a
        };
        let call = |a: Vec<String>| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            arm_cli(&emulator, &a)
        };
        let (code, stdout, stderr) = call(args(&[&sub]));
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            rows(&stdout, &stderr).len(),
            2,
            "both VMs of {sub}: {stdout}"
        );
        // The gone subscription is skipped, named, and the rest is still planned.
        let (code, stdout, stderr) = call(args(&[&sub, gone]));
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(rows(&stdout, &stderr).len(), 2, "{stdout}");
        assert!(
            stderr.contains(&format!("skipped subscription {gone}")),
            "{stderr}"
        );
        emulator.stop().await.unwrap();
    });
}

/// `--drill-table`: each row gets the drill table's record of its VM and region (the pass kept,
/// the newer failure); an unusable URL is named on stderr and the rows still come.
#[test]
fn status_drill_table_shows_the_last_drill() {
    use vmrp::azure::DrillLedger;
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let token = emulator
            .identity
            .issue(vmrp::emulator::table::STORAGE_RESOURCE, None)
            .access_token;
        let ledger = vmrp::azure::table::TableLedger::new(
            &emulator.urls.drill_table,
            vmrp::azure::credential::StaticToken::new(&token, Duration::from_secs(600)),
            true,
        )
        .unwrap();
        let result = |passed: bool| vmrp::policy::drills::DrillResult {
            vm: vms[0].clone(),
            region: "westeurope".into(),
            copy: false,
            point: Some("rp-drilled".into()),
            passed,
            reason: (!passed).then(|| "the disk never became Succeeded".into()),
            seconds_to_restore: passed.then_some(42.0),
            disks: vec![],
            cleaned: true,
        };
        for (passed, tick) in [
            (true, datetime!(2026-01-01 02:30 UTC)),
            (false, datetime!(2026-01-02 02:30 UTC)),
        ] {
            let record = vmrp::azure::DrillRecord::of(&result(passed), tick);
            ledger.record(&record).await.unwrap();
        }
        let status = |extra: &[&str]| {
            let mut a = vec![
                "status",
                "--json",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--subscription",
                &sub,
            ];
            a.extend_from_slice(extra);
            arm_cli(&emulator, &a)
        };
        let drill_of = |stdout: &str, stderr: &str| -> Value {
            rows(stdout, stderr)
                .into_iter()
                .find(|r| r["vmId"] == vms[0].as_str() && r["role"] == "local")
                .unwrap_or_else(|| panic!("{stdout}"))["drill"]
                .clone()
        };
        let (_, stdout, stderr) = status(&["--drill-table", &emulator.urls.drill_table]);
        let d = drill_of(&stdout, &stderr);
        assert_eq!(d["lastPassed"], "2026-01-01T02:30:00Z", "{d}");
        assert_eq!(d["lastPassedPoint"], "rp-drilled", "{d}");
        assert_eq!(d["secondsToRestore"], 42.0, "{d}");
        assert_eq!(d["lastFailed"], "2026-01-02T02:30:00Z", "{d}");
        assert_eq!(d["lastFailureReason"], "the disk never became Succeeded");
        // Without the flag (and an empty environment): no drills, said so.
        let (_, stdout, stderr) = status(&[]);
        assert!(drill_of(&stdout, &stderr).is_null());
        assert!(stderr.contains("no drill table given"), "{stderr}");
        // A URL without a table name: named, and status still answers.
        let bad = format!("{}/", emulator.urls.arm);
        let (_, stdout, stderr) = status(&["--drill-table", &bad]);
        assert!(drill_of(&stdout, &stderr).is_null());
        assert!(stderr.contains("--drill-table"), "{stderr}");
        emulator.stop().await.unwrap();
    });
}

#[test]
fn status_reads_the_given_subscriptions() {
    runtime().block_on(async {
        let (emulator, _) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let gone = "00000000-0000-0000-0000-00000000dead";
        let arm = emulator.urls.arm.clone();
        let status = |subs: &[&str]| {
            let mut a = vec![
                "status",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--json",
            ];
            for s in subs {
                a.push("--subscription");
                a.push(s);
            }
            arm_cli(&emulator, &a)
        };
        let (_, stdout, stderr) = status(&[&sub]);
        assert_eq!(rows(&stdout, &stderr).len(), 2, "{stdout}");
        let (code, _, stderr) = status(&[gone]);
        assert_eq!(code, Some(1));
        assert!(stderr.contains("SubscriptionNotFound"), "{stderr}");
        emulator.stop().await.unwrap();
    });
}

/// Regression: status and plan judged ages by this machine's clock, not ARM's.
/// `--html FILE` writes the page on every read; `--watch` redraws the table in place every
/// `--interval` seconds until stopped.
#[test]
fn status_html_watch_and_interval() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("status.html");
        let settings = emulator.handler_settings(BusAuth::Sas);
        let mut cmd = vmrp(&[
            "status",
            "--arm-endpoint",
            &arm,
            "--arm-audience",
            AUDIENCE,
            "--subscription",
            &sub,
            "--html",
            html.to_str().unwrap(),
            "--watch",
            "--interval",
            "1",
        ]);
        for k in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"] {
            cmd.env(k, &settings[k]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let frames = stdout.matches("\x1b[H\x1b[2J").count();
        assert!(
            (2..=5).contains(&frames),
            "--watch --interval 1 over 3.5 s: {frames} frames\n{stdout}"
        );
        assert!(stdout.contains("(every 1s"), "--interval: {stdout}");
        let page = std::fs::read_to_string(&html).expect("--html writes the page");
        let vm = vms[0].rsplit('/').next().unwrap();
        assert!(page.contains(vm), "--html names {vm}");
        emulator.stop().await.unwrap();
    });
}

#[test]
fn status_flags_judge_coverage() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let status = |extra: &[&str]| {
            let mut a = vec![
                "status",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--subscription",
                &sub,
            ];
            a.extend_from_slice(extra);
            arm_cli(&emulator, &a)
        };
        let local_row = |stdout: &str, stderr: &str| -> Value {
            let vm = vms[0].rsplit('/').next().unwrap();
            rows(stdout, stderr)
                .into_iter()
                .find(|r| r["vm"] == vm && r["role"] == "local")
                .unwrap_or_else(|| panic!("{stdout}"))
        };
        // The point was made at about 03:10 (virtual). --at 05:00: the 03:00 tick is due → ok;
        // --at 06:30: the 04:00 tick is due (2 h grace) → late.
        let (_, stdout, stderr) = status(&["--json", "--at", "2026-01-01T05:00:00Z"]);
        assert_eq!(local_row(&stdout, &stderr)["coverage"], "ok", "{stdout}");
        let (code, stdout, stderr) = status(&["--json", "--at", "2026-01-01T06:30:00Z"]);
        assert_eq!(local_row(&stdout, &stderr)["coverage"], "late", "{stdout}");
        assert_eq!(code, Some(1));
        // --schedule daily at midnight: at 06:30 the due tick is 00:00 → ok.
        let (_, stdout, stderr) = status(&[
            "--json",
            "--at",
            "2026-01-01T06:30:00Z",
            "--schedule",
            "0 0 0 * * *",
        ]);
        assert_eq!(local_row(&stdout, &stderr)["coverage"], "ok", "{stdout}");
        // No --at: ARM's clock (about 04:10 virtual), not this machine's (months later).
        let (_, stdout, stderr) = status(&["--json"]);
        let age = local_row(&stdout, &stderr)["ageMinutes"].as_i64().unwrap();
        assert!(
            (55..=120).contains(&age),
            "age by ARM's clock: {age}\n{stderr}"
        );
        assert!(
            stderr.contains("judging by ARM's"),
            "the clocks disagree: {stderr}"
        );
        // Without --json: the table.
        let (_, table, _) = status(&["--at", "2026-01-01T06:30:00Z"]);
        assert!(
            table.contains("coverage") && table.contains("late"),
            "{table}"
        );
        assert!(serde_json::from_str::<Value>(&table).is_err());
        emulator.stop().await.unwrap();
    });
}

/// Regression: status listed unselected VMs as missing, and did not validate the policy.
#[test]
fn status_policy_selects_and_is_validated() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let sub = emulator.subscriptions[0].clone();
        let arm = emulator.urls.arm.clone();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.json");
        std::fs::write(&policy, policy_for(&sub)).unwrap();
        let (_, stdout, stderr) = arm_cli(
            &emulator,
            &[
                "status",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--policy",
                policy.to_str().unwrap(),
                "--json",
                "--at",
                "2026-01-01T05:00:00Z",
            ],
        );
        let listed: BTreeSet<String> = rows(&stdout, &stderr)
            .iter()
            .map(|r| r["vm"].as_str().unwrap().to_string())
            .collect();
        let name = |i: usize| vms[i].rsplit('/').next().unwrap().to_string();
        assert!(
            listed.contains(&name(0)) && !listed.contains(&name(1)),
            "{stdout}"
        );

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, policy_for("not-a-guid")).unwrap();
        let before = emulator.arm.counters().requests;
        let (code, _, stderr) = arm_cli(
            &emulator,
            &[
                "status",
                "--arm-endpoint",
                &arm,
                "--arm-audience",
                AUDIENCE,
                "--policy",
                bad.to_str().unwrap(),
            ],
        );
        assert_eq!(code, Some(1));
        assert!(stderr.contains("the policy is invalid"), "{stderr}");
        assert_eq!(
            emulator.arm.counters().requests,
            before,
            "refused before reading ARM"
        );
        emulator.stop().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// policy check

// ---------------------------------------------------------------------------------------------
// restore (its writes are tested against the operator's role in tests/restore.rs; here the
// emulator plays the deployed role, so `--plan` shows each flag's effect without writing)

fn restore_cli(
    emulator: &RunningEmulator,
    vm: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let arm = emulator.urls.arm.clone();
    let mut args = vec![
        "restore",
        "--vm",
        vm,
        "--arm-endpoint",
        &arm,
        "--arm-audience",
        AUDIENCE,
    ];
    args.extend(extra);
    arm_cli(emulator, &args)
}

#[test]
fn restore_plan_flags() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let vm = vms[0].as_str();
        let plan = |extra: &[&str]| -> Value {
            let mut all = vec!["--resource-group", "rg-restore", "--plan", "--json"];
            all.extend(extra);
            let (code, stdout, stderr) = restore_cli(&emulator, vm, &all);
            assert_eq!(code, Some(0), "{extra:?}\n{stdout}\n{stderr}");
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
        };
        let refusal = |extra: &[&str]| -> String {
            let mut all = vec!["--resource-group", "rg-restore", "--plan"];
            all.extend(extra);
            let (code, _, stderr) = restore_cli(&emulator, vm, &all);
            // 1: refused by vmrp; 2: by clap (a flag that needs another).
            assert!(matches!(code, Some(1) | Some(2)), "{extra:?}: {stderr}");
            stderr
        };
        let bodies = |p: &Value, kind: &str| -> Vec<Value> {
            p["calls"].as_array().unwrap().iter().filter(|c| c["kind"] == kind).map(|c| c["body"].clone()).collect()
        };
        // --plan --json --resource-group --vm: the newest settled point, disks in the group.
        let p = plan(&[]);
        assert_eq!(p["planned"], true);
        assert!(p["point"].as_str().unwrap().ends_with("/manual-1"), "{p}");
        assert!(p["vm"].as_str().unwrap().eq_ignore_ascii_case(vm));
        let disks = bodies(&p, "createDisk");
        assert!(!disks.is_empty());
        assert!(p["calls"].as_array().unwrap().iter().all(|c| c["id"].as_str().unwrap().contains("/resourceGroups/rg-restore/")));
        // Without --json: text, and still nothing written.
        let (code, text, _) = restore_cli(&emulator, vm, &["--resource-group", "rg-restore", "--plan"]);
        assert_eq!(code, Some(0));
        assert!(text.contains("nothing written") && text.starts_with("restore of"), "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_err());
        // --point and --at choose; unknown or too early refuse.
        assert!(plan(&["--point", "manual-1"])["point"].as_str().unwrap().ends_with("/manual-1"));
        assert!(refusal(&["--point", "nope"]).contains("no point named nope"));
        assert!(refusal(&["--at", "2025-12-31T00:00:00Z"]).contains("created at or before"));
        assert!(plan(&["--at", "2026-01-01T05:00:00Z"])["point"].as_str().unwrap().ends_with("/manual-1"));
        // --region: the copy region has no copy here.
        assert!(refusal(&["--region", "swedencentral"]).contains("no settled point in swedencentral"));
        // --sku, --zone, --disk-encryption-set shape every disk.
        let des = "/subscriptions/s/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/des1";
        let p = plan(&["--sku", "StandardSSD_LRS", "--zone", "2", "--disk-encryption-set", des]);
        for b in bodies(&p, "createDisk") {
            assert_eq!(b["sku"]["name"], "StandardSSD_LRS");
            assert_eq!(b["zones"], json!(["2"]));
            assert_eq!(b["properties"]["encryption"]["diskEncryptionSetId"], des);
        }
        // --new-vm --subnet: a NIC on the subnet and a VM attaching the disks.
        let p = plan(&["--new-vm", "vm-new", "--subnet", "/subscriptions/s/resourceGroups/n/providers/Microsoft.Network/virtualNetworks/v/subnets/a"]);
        let nic = &bodies(&p, "createNic")[0];
        assert!(nic.to_string().contains("/subnets/a"));
        let new_vm = &bodies(&p, "createVm")[0];
        assert_eq!(new_vm["properties"]["storageProfile"]["osDisk"]["createOption"], "Attach");
        assert!(refusal(&["--new-vm", "x"]).contains("--subnet"), "--new-vm needs --subnet");
        // --in-place (planned: no --yes needed) and --delete-originals.
        let kinds = |p: &Value| -> Vec<String> { p["calls"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap().to_string()).collect() };
        let p = plan(&["--in-place"]);
        assert!(kinds(&p).ends_with(&["deallocate".to_string(), "swapDisks".into(), "start".into()]), "{p}");
        let p = plan(&["--in-place", "--delete-originals"]);
        assert!(kinds(&p).iter().any(|k| k == "deleteDisk"), "{p}");
        assert!(refusal(&["--delete-originals"]).contains("--in-place"));
        // --vm must be a VM id.
        let (code, _, stderr) = restore_cli(&emulator, "/subscriptions/x", &["--resource-group", "r", "--plan"]);
        assert_eq!(code, Some(1));
        assert!(stderr.contains("--vm"), "{stderr}");
        assert_eq!(emulator.arm.counters().writes, 2, "only the setup's collection and point");
        emulator.stop().await.unwrap();
    });
}

#[test]
fn restore_confirmation_and_endpoint_flags() {
    runtime().block_on(async {
        let (emulator, vms) = arm_emulator().await;
        let vm = vms[0].as_str();
        let writes = emulator.arm.counters().writes;
        // --in-place without --yes: refused before any request.
        let requests = emulator.arm.counters().requests;
        let (code, _, stderr) =
            restore_cli(&emulator, vm, &["--resource-group", "r", "--in-place"]);
        assert_eq!(code, Some(1));
        assert!(stderr.contains("pass --yes"), "{stderr}");
        assert_eq!(
            emulator.arm.counters().requests,
            requests,
            "refused before reading ARM"
        );
        // With --yes it goes ahead: the deployed role (not the operator's) is refused the disk write.
        let rg = vmrp::azure::ResourceId::parse(vm)
            .unwrap()
            .resource_group()
            .unwrap()
            .to_string();
        let (code, _, stderr) = restore_cli(
            &emulator,
            vm,
            &["--resource-group", &rg, "--in-place", "--yes"],
        );
        assert_eq!(code, Some(1));
        assert!(
            stderr.contains("AuthorizationFailed") && stderr.contains("disks/write"),
            "{stderr}"
        );
        assert_eq!(emulator.arm.counters().writes, writes);
        // --arm-endpoint decides where it goes; --arm-audience what the token is for.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{closed}");
        let (code, _, stderr) = arm_cli(
            &emulator,
            &[
                "restore",
                "--vm",
                vm,
                "--resource-group",
                "r",
                "--plan",
                "--arm-endpoint",
                &endpoint,
                "--arm-audience",
                AUDIENCE,
            ],
        );
        assert_eq!(code, Some(1));
        assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
        let arm = emulator.urls.arm.clone();
        let (code, _, stderr) = arm_cli(
            &emulator,
            &[
                "restore",
                "--vm",
                vm,
                "--resource-group",
                "r",
                "--plan",
                "--arm-endpoint",
                &arm,
            ],
        );
        assert_eq!(code, Some(1));
        assert!(
            stderr.contains("InvalidAuthenticationToken"),
            "without --arm-audience: {stderr}"
        );
        emulator.stop().await.unwrap();
    });
}

#[test]
fn policy_check_flags() {
    let example = format!("{REPO}/examples/policy.toml");
    let (code, stdout, _) = run(&mut vmrp(&["policy", "check", &example]));
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("policy OK: 2 rules"), "{stdout}");
    assert!(
        stdout.contains("every tick of the timer \"0 0 */4 * * *\""),
        "{stdout}"
    );
    let (_, stdout, _) = run(&mut vmrp(&[
        "policy",
        "check",
        &example,
        "--timer-schedule",
        "0 0 * * * *",
    ]));
    assert!(
        stdout.contains("every tick of the timer \"0 0 * * * *\""),
        "{stdout}"
    );
    let (_, stdout, _) = run(&mut vmrp(&["policy", "check", &example, "--json"]));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], true);
    // Regression: a file that cannot be read is JSON too with --json.
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "policy",
        "check",
        "/nonexistent.toml",
        "--json",
    ]));
    assert_eq!(code, Some(1));
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert!(v["readError"]
        .as_str()
        .unwrap()
        .contains("/nonexistent.toml"));
}

// ---------------------------------------------------------------------------------------------
// package

#[test]
fn package_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = source_root(dir.path());
    // --app-root: this root's host.json, not the repository's.
    let host = std::fs::read_to_string(root.join("host.json"))
        .unwrap()
        .replace("00:10:00", "00:07:00");
    std::fs::write(root.join("host.json"), &host).unwrap();
    let out = dir.path().join("dist").join("app");
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "package",
        "--app-root",
        root.to_str().unwrap(),
        "--binary",
        SMALL_ELF,
        "--out",
        &format!("{}/", out.display()),
        "--zip",
    ]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("host.json")).unwrap(),
        host
    );
    assert_eq!(
        std::fs::read(out.join("vmrp")).unwrap(),
        std::fs::read(SMALL_ELF).unwrap(),
        "--binary is what is packaged"
    );
    assert!(out
        .join("CreateRestorePoint")
        .join("function.json")
        .is_file());
    assert!(
        dir.path().join("dist").join("app.zip").is_file(),
        "--zip beside --out"
    );
    assert!(!out.join(".zip").exists());
    // --binary must be an executable: a text file is refused, clearly.
    let text = dir.path().join("hostname");
    std::fs::write(&text, "box\n").unwrap();
    let (code, _, stderr) = run(&mut vmrp(&[
        "package",
        "--app-root",
        root.to_str().unwrap(),
        "--binary",
        text.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not an executable ELF file"), "{stderr}");
    // --out: the app root itself is never replaced.
    let (code, _, stderr) = run(&mut vmrp(&[
        "package",
        "--app-root",
        root.to_str().unwrap(),
        "--binary",
        SMALL_ELF,
        "--out",
        root.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("refusing to replace"), "{stderr}");
    assert!(root.join("host.json").is_file());
}

/// Regression: the deploy build went to target/release and replaced the emulator build.
#[test]
fn package_build_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = source_root(dir.path());
    let target_dir = dir.path().join("target");
    // A stand-in for cargo: records its arguments and "builds" by copying this binary into the
    // --target-dir it was given, so the test needs no release build.
    let fake_cargo = dir.path().join("cargo");
    let args_file = dir.path().join("cargo-args");
    std::fs::write(
        &fake_cargo,
        format!(
            "#!/bin/sh\necho \"$@\" > {args}\nwhile [ \"$1\" != \"--target-dir\" ]; do shift; done\nmkdir -p \"$2/release\" && cp {SMALL_ELF} \"$2/release/vmrp-handler\"\n",
            args = args_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let package = |extra: &[&str], out: &str| {
        let mut cmd = vmrp(&[
            "package",
            "--app-root",
            root.to_str().unwrap(),
            "--out",
            out,
        ]);
        cmd.args(extra)
            .env("CARGO", &fake_cargo)
            .env("CARGO_TARGET_DIR", &target_dir);
        run(&mut cmd)
    };
    // Without --no-build: cargo builds into <target>/deploy, never <target>/release.
    let out = dir.path().join("out1");
    let (code, stdout, stderr) = package(&[], out.to_str().unwrap());
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let cargo_args = std::fs::read_to_string(&args_file).unwrap();
    assert!(
        cargo_args.contains(&format!("--target-dir {}/deploy", target_dir.display()))
            && cargo_args.contains("-p vmrp-handler --bin vmrp-handler"),
        "{cargo_args}"
    );
    assert!(
        !target_dir.join("release").exists(),
        "target/release untouched"
    );
    assert!(out.join("vmrp").is_file());

    // --no-build: cargo is not run; the existing deploy build is packaged.
    std::fs::remove_file(&args_file).unwrap();
    let out = dir.path().join("out2");
    let (code, _, stderr) = package(&["--no-build"], out.to_str().unwrap());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!args_file.exists(), "--no-build ran cargo");

    // --target: the triple's folder under the deploy dir (and cargo gets --target).
    let triple = "x86_64-unknown-linux-gnu";
    let triple_bin = target_dir.join("deploy").join(triple).join("release");
    std::fs::create_dir_all(&triple_bin).unwrap();
    let mut marked = std::fs::read(SMALL_ELF).unwrap();
    marked.extend_from_slice(b"TRIPLE");
    std::fs::write(triple_bin.join("vmrp-handler"), &marked).unwrap();
    let out = dir.path().join("out3");
    let (code, _, stderr) = package(&["--no-build", "--target", triple], out.to_str().unwrap());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(std::fs::read(out.join("vmrp"))
        .unwrap()
        .ends_with(b"TRIPLE"));
}

// ---------------------------------------------------------------------------------------------
// serve

#[test]
fn serve_logging_and_shutdown_grace() {
    runtime().block_on(async {
        let emulator = server::start(EmulatorConfig::default()).await.unwrap();
        let mut settings = emulator.handler_settings(BusAuth::Sas);
        // Set by the host; it would switch JSON on by itself.
        settings.remove("FUNCTIONS_WORKER_RUNTIME");
        settings.insert("VMRP_POLICY".into(), policy_for(&emulator.subscriptions[0]));
        settings.insert("VMRP_LOOPBACK_ONLY".into(), "1".into());
        for json_logs in [true, false] {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let mut args = vec!["serve", "--shutdown-grace-secs", "1"];
            if json_logs {
                args.push("--log-json");
            }
            let mut cmd = vmrp(&args);
            cmd.envs(&settings)
                .env("RUST_LOG", "info")
                .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = Guard(cmd.spawn().unwrap());
            let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
            let first = lines
                .by_ref()
                .map_while(Result::ok)
                .find(|l| l.contains("vmrp serve listening"))
                .expect("the listening line");
            // An invocation in flight: its body is still coming, so the handler waits for it.
            let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::io::Write::write_all(
                &mut slow,
                b"POST /PollRestorePoint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"Data\":",
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let stopping = Instant::now();
            signal(child.0.id(), libc::SIGTERM);
            let rest: Vec<String> = lines.map_while(Result::ok).collect();
            let _ = child.0.wait().unwrap();
            // The default (600 s) would still be waiting: the flag's 1 s ended it.
            let waited = stopping.elapsed();
            assert!(
                waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
                "--shutdown-grace-secs 1: stopped after {waited:?}"
            );
            drop(slow);
            let shutdown = rest
                .iter()
                .find(|l| l.contains("shutting down"))
                .unwrap_or_else(|| panic!("{rest:?}"));
            let parsed = serde_json::from_str::<Value>(&first);
            if json_logs {
                assert!(parsed.is_ok(), "{first}");
                let v: Value = serde_json::from_str(shutdown).unwrap();
                assert_eq!(v["grace_secs"], 1, "{shutdown}");
            } else {
                assert!(parsed.is_err(), "{first}");
                assert!(shutdown.contains("grace_secs=1"), "{shutdown}");
            }
        }
        emulator.stop().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// emulate

fn announcement(child: &mut Child) -> Value {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn emulate_flags() {
    let dir = tempfile::tempdir().unwrap();
    let traffic = dir.path().join("traffic");
    let dump = dir.path().join("dump.json");
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        json!({"arm": {"operations": {"GET restorePointCollections": {"429": 1.0}}}}).to_string(),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = vmrp(&[
        "emulate",
        "--port",
        &port.to_string(),
        "--fleet",
        "3",
        "--regions",
        "northeurope",
        "--speed",
        "60",
        "--seed",
        "11",
        "--start",
        "2026-01-01T03:00:00Z",
        "--record-traffic",
        traffic.to_str().unwrap(),
        "--dump-state",
        dump.to_str().unwrap(),
        "--max-delivery-count",
        "2",
        "--no-arm-auth",
        "--faults",
        faults.to_str().unwrap(),
        "--background-load",
        "0.3",
    ]);
    cmd.stdout(Stdio::piped());
    let mut child = Guard(cmd.spawn().unwrap());
    let v = announcement(&mut child.0);
    let arm = v["arm"].as_str().unwrap().to_string();
    let control = v["control"].as_str().unwrap().to_string();
    assert!(
        arm.starts_with(&format!("http://127.0.0.1:{port}")),
        "--port: {arm}"
    );
    let sub = v["subscriptions"][0].as_str().unwrap().to_string();

    runtime().block_on(async {
        // --seed: the same subscription as an emulator started in-process with seed 11.
        let twin = server::start(EmulatorConfig {
            seed: 11,
            arm: ArmConfig {
                fleet: FleetSpec { seed: 11, ..FleetSpec::default() },
                ..ArmConfig::default()
            },
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        assert_eq!(twin.subscriptions[0], sub, "--seed");
        twin.stop().await.unwrap();

        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let api = vmrp::azure::models::API_VERSION;
        // --no-arm-auth: no token needed. --fleet / --regions: 3 VMs in northeurope.
        let rsp = http
            .get(format!("{arm}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?api-version={api}"))
            .send()
            .await
            .unwrap();
        // --background-load 0.3: the first read of a 250-token bucket leaves 174, not 249.
        assert_eq!(
            rsp.headers()["x-ms-ratelimit-remaining-subscription-reads"],
            "174",
            "--background-load"
        );
        let vms: Value = rsp.json().await.unwrap();
        let list = vms["value"].as_array().unwrap();
        assert_eq!(list.len(), 3, "--fleet: {vms}");
        assert!(list.iter().all(|vm| vm["location"] == "northeurope"), "--regions");
        // --faults: collection listings are throttled, VM listings are not.
        let rsp = http
            .get(format!("{arm}/subscriptions/{sub}/providers/Microsoft.Compute/restorePointCollections?api-version={api}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 429, "--faults");
        // --speed / --start: the virtual clock.
        let clock: Value = http.get(format!("{control}/clock")).send().await.unwrap().json().await.unwrap();
        assert_eq!(clock["speed"], 60.0, "--speed");
        assert!(clock["now"].as_str().unwrap().starts_with("2026-01-01T03:"), "--start: {clock}");
        // --max-delivery-count, and --no-arm-auth again as the state says it.
        let state: Value = http.get(format!("{control}/state")).send().await.unwrap().json().await.unwrap();
        assert_eq!(state["serviceBus"]["maxDeliveryCount"], 2);
        assert_eq!(state["identity"]["armAuthRequired"], false);
    });
    // --record-traffic: the requests above are on disk.
    assert!(
        std::fs::read_dir(&traffic).map(|d| d.count()).unwrap_or(0) > 0,
        "--record-traffic"
    );
    // --dump-state: written on SIGTERM.
    signal(child.0.id(), libc::SIGTERM);
    assert!(child.0.wait().unwrap().success());
    let dumped: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    assert!(dumped["arm"].is_object(), "--dump-state");
}

/// `--app-root` (relative), `--handler`, `--env`, `--bus-auth`, `--timer-ticks`; and
/// SIGTERM stops the handler with the emulator.
#[test]
fn emulate_host_flags() {
    let dir = tempfile::tempdir().unwrap();
    app_root(dir.path());
    let link = dir.path().join("handler-link");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let mut cmd = vmrp(&[
        "emulate",
        "--app-root",
        "pkg",
        "--handler",
        "handler-link",
        "--bus-auth",
        "identity",
        "--timer-ticks",
        "1",
        "--instances",
        "3",
        "--speed",
        "3600",
        "--start",
        "2026-01-01T03:59:30Z",
        "--env",
        "VMRP_SCHEDULE=0 0 */4 * * *",
        "--env",
        &format!(
            "VMRP_POLICY={}",
            policy_for("00000000-0000-0000-0000-000000000001")
        ),
    ]);
    cmd.current_dir(dir.path()).stdout(Stdio::piped());
    let mut parent = Guard(cmd.spawn().unwrap());
    let v = announcement(&mut parent.0);
    let control = v["control"].as_str().unwrap().to_string();
    let handler = handler_child(parent.0.id());
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{handler}/cmdline")).unwrap())
            .into_owned();
    assert!(
        cmdline.starts_with(&format!("{}\0serve", link.display())),
        "--handler: {cmdline:?}"
    );
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{handler}/environ")).unwrap())
            .into_owned();
    let vars: Vec<&str> = environ.split('\0').collect();
    assert!(vars.contains(&"VMRP_SCHEDULE=0 0 */4 * * *"), "--env");
    // --instances 3: three handler processes, each told its own port.
    let mut ports = BTreeSet::new();
    wait_until(Duration::from_secs(30), "three handler instances", || {
        ports = children_of(parent.0.id())
            .into_iter()
            .filter_map(|c| {
                let env = std::fs::read(format!("/proc/{c}/environ")).ok()?;
                String::from_utf8_lossy(&env)
                    .split('\0')
                    .find_map(|v| v.strip_prefix("FUNCTIONS_CUSTOMHANDLER_PORT="))
                    .map(str::to_string)
            })
            .collect();
        ports.len() == 3
    });
    assert!(
        vars.iter()
            .any(|v| v.starts_with("ServiceBusConnection__fullyQualifiedNamespace="))
            && !vars.iter().any(|v| v.starts_with("ServiceBusConnection=")),
        "--bus-auth identity: {vars:?}"
    );
    // --timer-ticks 1: one timer run although at 3600× the schedule fires every 4 s.
    let timer_runs = || -> usize {
        let text = get(&format!("{control}/invocations"))
            .map(|(_, t)| t)
            .unwrap_or_default();
        serde_json::from_str::<Vec<Value>>(&text)
            .unwrap_or_default()
            .iter()
            .filter(|r| r["function"] == "ScheduleRestorePoints")
            .count()
    };
    wait_until(Duration::from_secs(30), "the first timer run", || {
        timer_runs() >= 1
    });
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(timer_runs(), 1, "--timer-ticks");

    signal(parent.0.id(), libc::SIGTERM);
    assert!(parent.0.wait().unwrap().success());
    wait_until(Duration::from_secs(10), "the handler to stop", || {
        !alive(handler)
    });
}

/// Regression: a parent killed outright (SIGKILL) left its `vmrp serve` running.
#[test]
fn a_killed_emulate_takes_its_handler_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = app_root(dir.path());
    let mut cmd = vmrp(&[
        "emulate",
        "--app-root",
        root.to_str().unwrap(),
        "--handler",
        BIN,
        "--env",
        &format!(
            "VMRP_POLICY={}",
            policy_for("00000000-0000-0000-0000-000000000001")
        ),
    ]);
    cmd.stdout(Stdio::piped());
    let mut parent = Guard(cmd.spawn().unwrap());
    announcement(&mut parent.0);
    let handler = handler_child(parent.0.id());
    signal(parent.0.id(), libc::SIGKILL);
    let _ = parent.0.wait();
    wait_until(
        Duration::from_secs(10),
        "the orphaned handler to die",
        || !alive(handler),
    );
}

// ---------------------------------------------------------------------------------------------
// local

/// `--fleet mixed`: the fleet mixes in the cases Azure refuses or treats apart (confidential,
/// write-accelerated, no Premium storage, Backup-protected, Premium SSD v2 ...); the run still
/// ends "coverage complete" and every VM without a point is explained as unsupported, with the
/// case named.
#[test]
fn local_fleet_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--fleet",
        "mixed",
        "--vms",
        "24",
        "--ticks",
        "2",
        "--speed",
        "3000",
        "--report",
        report.to_str().unwrap(),
        "--timeout-secs",
        "150",
    ]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("coverage complete: 24 VMs × 2 ticks"),
        "{stdout}"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let failed = r["local"]["failed"].as_array().unwrap();
    assert!(
        !failed.is_empty(),
        "--fleet mixed has unsupported VMs: {r:#}"
    );
    for m in failed {
        assert_eq!(m["explainedBy"], "unsupported", "{m}");
        assert!(
            m["reason"]
                .as_str()
                .unwrap()
                .starts_with("not supported by restore points: "),
            "{m}"
        );
    }
    // The plain fleet (the default) has none of them.
    assert!(<vmrp::cli::Cli as clap::Parser>::try_parse_from([
        "vmrp", "local", "--fleet", "plain"
    ])
    .is_ok());
    assert!(
        <vmrp::cli::Cli as clap::Parser>::try_parse_from(["vmrp", "local", "--fleet", "odd"])
            .is_err()
    );
}

/// `vmrp local --drill`: after the run, every VM drilled (local and copy), each VM × region
/// recorded in the drill table, the drill group empty.
#[test]
fn local_drill() {
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--vms",
        "2",
        "--regions",
        "westeurope",
        "--copy-to",
        "swedencentral",
        "--ticks",
        "1",
        "--speed",
        "3000",
        "--timeout-secs",
        "120",
        "--drill",
    ]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("drills: 2 VMs in 1 runs, 4 drills: 4 passed, 0 failed; 2/2 VMs drilled; 4/4 VM × region recorded; drill group empty"),
        "--drill: {stdout}"
    );
}

/// `--copy-to` includes the fleet's own region (counted as unexplained before).
#[test]
fn local_run_flags() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let html = dir.path().join("coverage.html");
    let log = dir.path().join("handler.log");
    let started = Instant::now();
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--vms",
        "3",
        "--regions",
        "westeurope",
        "--copy-to",
        "westeurope,swedencentral",
        "--ticks",
        "1",
        "--speed",
        "3000",
        "--schedule",
        "0 30 */4 * * *",
        "--report",
        report.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--handler-log",
        log.to_str().unwrap(),
        "--timeout-secs",
        "120",
        "--instances",
        "3",
        "--background-load",
        "0.2:bursty",
    ]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let page = std::fs::read_to_string(&html).expect("--html writes the page");
    assert!(
        page.contains("vmrp local: 3 VMs, 1 ticks"),
        "--html: {page:.300}"
    );
    assert!(
        stdout.contains("coverage complete: 3 VMs × 1 ticks"),
        "{stdout}"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["vms"], 3, "--vms");
    assert_eq!(r["instances"], 3, "--instances");
    let by_instance: Vec<u64> = r["invocationsByInstance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(by_instance.len(), 3, "--instances: {by_instance:?}");
    assert!(
        by_instance.iter().filter(|n| **n > 0).count() > 1,
        "--instances: the instances share the work: {by_instance:?}"
    );
    assert!(stdout.contains("3 handler instances"), "{stdout}");
    assert_eq!(
        r["backgroundLoad"],
        json!({"share": 0.2, "bursty": true}),
        "--background-load"
    );
    // ... and the handler was told its share: 0.95 × (1 − 0.2).
    assert_eq!(r["armShareTold"], json!(0.76), "--background-load");
    assert_eq!(
        r["ticks"],
        json!(["rp-20260105T0430Z"]),
        "--ticks and --schedule"
    );
    assert!(
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["region"] == "westeurope"),
        "--regions"
    );
    assert_eq!(
        r["copies"]["expected"], 3,
        "--copy-to: swedencentral only, not the own region"
    );
    assert_eq!(r["copies"]["settled"], 3);
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "--handler-log");
    // --speed: virtual time never ran faster than asked.
    let virtual_secs = r["virtualSeconds"].as_f64().unwrap();
    let real_secs = started.elapsed().as_secs_f64();
    assert!(
        virtual_secs <= 3000.0 * real_secs,
        "{virtual_secs} virtual s in {real_secs} s"
    );
    // --speed 0 and an unwritable --report are refused before anything starts.
    let (code, _, stderr) = run(&mut vmrp(&["local", "--background-load", "1"]));
    assert_eq!(code, Some(2), "clap refuses it");
    assert!(stderr.contains("below 1"), "{stderr}");
    let (code, _, stderr) = run(&mut vmrp(&["local", "--instances", "0"]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--instances 0: must be between 1 and 16"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&mut vmrp(&["local", "--speed", "0"]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--speed 0: must be a positive number"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&mut vmrp(&[
        "local",
        "--report",
        "/nonexistent-dir/report.json",
    ]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--report /nonexistent-dir/report.json"),
        "{stderr}"
    );
}

#[test]
fn local_faults_flag() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.json");
    std::fs::write(
        &faults,
        json!({"arm": {"operations": {"PUT restorePoints": {"failedProvisioning": 1.0}}}})
            .to_string(),
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--vms",
        "1",
        "--ticks",
        "1",
        "--copy-to",
        "",
        "--speed",
        "3000",
        "--faults",
        faults.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--timeout-secs",
        "120",
    ]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["local"]["settled"], 0, "every point fails: {r:#}");
}

#[test]
fn local_timeout_flag() {
    let started = Instant::now();
    // At real speed the first tick (15 virtual minutes away) never comes within 1 s.
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--vms",
        "1",
        "--ticks",
        "1",
        "--speed",
        "1",
        "--timeout-secs",
        "1",
    ]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("COVERAGE INCOMPLETE"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up after --timeout-secs"
    );
}

/// Regression: a policy matching nothing "completed" with 0 VMs, exit 0.
#[test]
fn local_policy_and_seed_flags() {
    let dir = tempfile::tempdir().unwrap();
    let example = format!("{REPO}/examples/policy.toml");
    let refusal = |seed: &str| {
        let (code, stdout, stderr) = run(&mut vmrp(&[
            "local", "--vms", "2", "--policy", &example, "--seed", seed,
        ]));
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("no rule selects any of the 2 VMs"),
            "{stderr}"
        );
        stderr
    };
    let five = refusal("5");
    // --seed: the emulated subscription is the one seed 5 makes.
    let sub = runtime().block_on(async {
        let e = server::start(EmulatorConfig {
            seed: 5,
            arm: ArmConfig {
                fleet: FleetSpec {
                    seed: 5,
                    ..FleetSpec::default()
                },
                ..ArmConfig::default()
            },
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let sub = e.subscriptions[0].clone();
        e.stop().await.unwrap();
        sub
    });
    assert!(five.contains(&sub), "--seed 5: {five}");
    assert!(!refusal("6").contains(&sub), "--seed 6");
    // A policy that selects the fleet runs it.
    let policy = dir.path().join("p.json");
    let all = json!({"rules": [{"name": "all", "targets": {"subscriptions": [sub]}, "retention": {"keepLast": 3}}]});
    std::fs::write(&policy, all.to_string()).unwrap();
    let report = dir.path().join("r.json");
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "local",
        "--vms",
        "2",
        "--ticks",
        "1",
        "--copy-to",
        "",
        "--speed",
        "3000",
        "--seed",
        "5",
        "--policy",
        policy.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["vms"], 2, "{r:#}");
}

/// Regression: SIGTERM left `vmrp local --keep-running`'s `vmrp serve` running.
#[test]
fn local_keep_running_stops_on_sigterm() {
    let mut cmd = vmrp(&[
        "local",
        "--vms",
        "1",
        "--ticks",
        "1",
        "--copy-to",
        "",
        "--speed",
        "3000",
        "--keep-running",
    ]);
    cmd.stdout(Stdio::piped());
    let mut parent = Guard(cmd.spawn().unwrap());
    let mut lines = BufReader::new(parent.0.stdout.take().unwrap()).lines();
    let announced = loop {
        let line = lines.next().expect("the run ends").unwrap();
        if let Some(json) = line.strip_prefix("emulator still running: ") {
            break serde_json::from_str::<Value>(json).unwrap();
        }
    };
    // Still up after the report: the emulator answers.
    let clock = get(&format!("{}/clock", announced["control"].as_str().unwrap()));
    assert_eq!(clock.map(|(status, _)| status), Some(200), "--keep-running");
    let handler = handler_child(parent.0.id());
    signal(parent.0.id(), libc::SIGTERM);
    let status = parent.0.wait().unwrap();
    assert!(
        status.code().is_some(),
        "exited, not killed by the signal: {status:?}"
    );
    wait_until(Duration::from_secs(10), "the handler to stop", || {
        !alive(handler)
    });
}

// ---------------------------------------------------------------------------------------------
// bench

#[test]
fn bench_quick_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let before = dir.path().join("before-link");
    std::os::unix::fs::symlink(BIN, &before).unwrap();
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "bench",
        "--quick",
        "--no-peer",
        "--skip-fleet",
        "--invocations",
        "20",
        "--runs",
        "1",
        "--baseline",
        before.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]));
    // Exit 1 means a goal was missed (a debug build misses most); the figures are there.
    assert!(matches!(code, Some(0) | Some(1)), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["quick"], true);
    assert_eq!(v["fleet"], 2000, "--quick's default fleet");
    assert_eq!(v["invocations"], 20, "--invocations");
    assert_eq!(v["runs"], 1, "--runs");
    assert!(v["perInvocation"].get("peer").is_none(), "--no-peer");
    assert!(v.get("fleetTick").is_none(), "--skip-fleet");
    // --baseline: measured in the same run, and printed beside vmrp.
    let baseline = &v["perInvocation"]["baseline"];
    assert_eq!(
        baseline["command"],
        json!([before.to_str().unwrap(), "serve"]),
        "--baseline"
    );
    assert_eq!(baseline["loadRuns"][0]["invocations"], 20, "--baseline");
    assert!(baseline["peakRssMib"]["median"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("vmrp against --baseline"), "{stdout}");
}

#[test]
fn bench_full_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let link = dir.path().join("handler-link");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let peer = format!("{BIN} serve");
    let (code, stdout, stderr) = run(&mut vmrp(&[
        "bench",
        "--peer",
        &peer,
        "--fleet",
        "4",
        "--fleet-speed",
        "600",
        "--invocations",
        "10",
        "--runs",
        "1",
        "--deploy-binary",
        BIN,
        "--handler",
        link.to_str().unwrap(),
        "--estate",
        "6:3",
        "--window",
        "4",
        "--json",
        out.to_str().unwrap(),
    ]));
    // Exit 1 means a goal was missed (a debug build misses most); the figures are there.
    assert!(matches!(code, Some(0) | Some(1)), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        v["perInvocation"]["peer"]["command"],
        json!([BIN, "serve"]),
        "--peer"
    );
    assert_eq!(
        v["perInvocation"]["vmrp"]["command"][0],
        link.to_str().unwrap(),
        "--handler"
    );
    assert_eq!(v["fleetTick"]["vms"], 4, "--fleet");
    // --estate: one tick over three subscriptions, each planned by its own invocation.
    assert_eq!(v["estateTick"]["subscriptions"], 3, "--estate");
    assert_eq!(v["estateTick"]["planInvocations"], 3, "--estate");
    assert_eq!(
        v["estateTick"]["perSubscription"].as_array().unwrap().len(),
        3
    );
    assert_eq!(v["estateTick"]["throttled429"], 0);
    // --window: two ticks over four VMs, each tick with its own coverage line.
    assert_eq!(v["windowTicks"]["vms"], 4, "--window");
    assert_eq!(
        v["windowTicks"]["ticks"].as_array().unwrap().len(),
        2,
        "--window"
    );
    assert_eq!(v["windowTicks"]["copiesExpected"], 16, "--window");
    assert_eq!(v["fleetTick"]["speed"], 600.0, "--fleet-speed");
    assert_eq!(v["deployBinary"]["path"], BIN, "--deploy-binary");
    assert_eq!(
        v["deployBinary"]["bytes"],
        std::fs::metadata(BIN).unwrap().len()
    );
}
