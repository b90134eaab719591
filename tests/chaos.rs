//! Chaos: every fault kind at once, added latency, duplicate deliveries and repeated
//! SIGKILLs of the handler. At the end every (VM, tick) has exactly one settled point per region
//! or a failure reported with its reason, nothing is left `Creating` without a poll pending, and
//! every dead letter says why. The small run is part of `cargo test`; `bench/soak.sh` runs the
//! long one (`soak_*`, ignored) with `VMS`, `TICKS`, `KILLS` overrides.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmrp::emulator::faults::FaultConfig;
use vmrp::local::{run_scenario_keep, summary_line, Explanation, LocalReport, Missing, Scenario};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn chaos_scenario(vms: usize, ticks: u32, kills: u32, seed: u64) -> Scenario {
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_vmrp")));
    s.fleet.count = vms;
    s.fleet.regions = vec!["westeurope".into(), "northeurope".into()];
    s.copy_to = vec!["swedencentral".into()];
    s.ticks = ticks;
    s.speed = env_or("SPEED", 2400.0);
    s.seed = seed;
    s.kills = kills;
    s.timeout = Duration::from_secs(env_or("TIMEOUT_SECS", 600));
    s.handler_log = std::env::var_os("HANDLER_LOG").map(PathBuf::from);
    let mut f = FaultConfig::default();
    f.arm.server_error = 0.05;
    f.arm.throttle = 0.05;
    f.arm.failed_provisioning = 0.03;
    f.arm.drop = 0.02;
    f.arm.latency_ms = 5;
    f.service_bus.duplicate_delivery = 0.1;
    s.faults = f;
    s
}

/// The end-state contract of a chaos run.
fn assert_accounted_for(report: &LocalReport, vms: usize, ticks: usize, kills: u32) {
    let log = report
        .handler_log
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let why = format!(
        "{}\ninvocations: {:?}\nlocal missing by reason: {:?}\ncopies missing by reason: {:?}\nlocal failed: {:#?}\ncopies failed: {:#?}\ndead letters: {:#?}\nuntracked: {:?}\nhandler log: {log}",
        summary_line(report),
        report.invocations_by_function,
        report.local.failed_by_reason,
        report.copies.failed_by_reason,
        report.local.failed,
        report.copies.failed,
        report.dead_letters,
        report.untracked_in_progress
    );
    assert_eq!(report.vms, vms, "{why}");
    assert_eq!(report.local.expected, vms * ticks, "{why}");
    assert_eq!(report.copies.expected, vms * ticks, "{why}");
    assert_eq!(report.handler_kills, u64::from(kills), "{why}");
    // Exactly one settled point per (VM, tick, region), or a reported failure.
    assert_eq!(report.local.duplicates, 0, "{why}");
    assert_eq!(report.copies.duplicates, 0, "{why}");
    assert_eq!(
        report.local.settled + report.local.failed.len(),
        report.local.expected,
        "{why}"
    );
    assert_eq!(
        report.copies.settled + report.copies.failed.len(),
        report.copies.expected,
        "{why}"
    );
    // Every missing point is explained: vmrp reported why, the tick's timer run failed every
    // time, or the point exists and ARM shows its state. A bare "nothing was created" is not.
    for m in report.local.failed.iter().chain(&report.copies.failed) {
        assert!(!m.reason.trim().is_empty(), "no reason: {m:?}\n{why}");
        assert_ne!(
            m.explained_by,
            Explanation::Unexplained,
            "unexplained: {m:?}\n{why}"
        );
    }
    // Most of the fleet must still be covered: faults are a few percent, not an outage. Left
    // out of the ratio: VMs with nothing to restore (every disk excluded; reported, by design)
    // and ticks whose timer run failed every time (a kill during each try; explained above).
    let lost_tick = |m: &&Missing| m.explained_by == Explanation::TimerRunFailed;
    let local_due = report.local.expected
        - report.local.nothing_to_restore()
        - report.local.failed.iter().filter(lost_tick).count();
    let copies_due = report.copies.expected
        - report.copies.nothing_to_restore()
        - report.copies.failed.iter().filter(lost_tick).count();
    assert!(report.local.settled * 10 >= local_due * 9, "{why}");
    assert!(report.copies.settled * 10 >= copies_due * 8, "{why}");
    assert!(report.untracked_in_progress.is_empty(), "{why}");
    for d in &report.dead_letters {
        let reason = d["reason"].as_str().unwrap_or_default();
        let description = d["description"].as_str().unwrap_or_default();
        assert!(
            !reason.is_empty() && !description.is_empty(),
            "unexplained dead letter {d}"
        );
    }
}

async fn chaos_run(vms: usize, ticks: u32, kills: u32, seed: u64) {
    let started = Instant::now();
    let s = chaos_scenario(vms, ticks, kills, seed);
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    let counters = emulator.arm.counters();
    println!(
        "{}\nlocal missing by reason: {:?}\ncopies missing by reason: {:?}\ninvocations: {:?}\nfaults injected: {:?}\nARM by status: {:?}\ndead letters: {}\nkills: {}, restarts: {}\nreal time: {:.1} s",
        summary_line(&report),
        report.local.failed_by_reason,
        report.copies.failed_by_reason,
        report.invocations_by_function,
        counters.faults_injected,
        counters.responses_by_status,
        report.dead_letters.len(),
        report.handler_kills,
        report.handler_restarts,
        started.elapsed().as_secs_f64()
    );
    for kind in ["5xx", "429", "failedProvisioning", "drop"] {
        assert!(
            counters.faults_injected.get(kind).copied().unwrap_or(0) > 0,
            "{kind} was injected: {:?}",
            counters.faults_injected
        );
    }
    assert_accounted_for(&report, vms, ticks as usize, kills);
    emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_small_every_point_settles_once_or_is_reported() {
    chaos_run(60, 3, 10, 11).await;
}

/// The long run: `bench/soak.sh` (defaults 500 VMs × 5 ticks, 12 kills).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/soak.sh"]
async fn soak_every_point_settles_once_or_is_reported() {
    chaos_run(
        env_or("VMS", 500),
        env_or("TICKS", 5),
        env_or("KILLS", 12),
        env_or("SEED", 5),
    )
    .await;
}
