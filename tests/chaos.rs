//! Chaos: every fault kind at once, added latency, duplicate deliveries and
//! repeated SIGKILLs of the handler. At the end every due (VM, tick, region) has exactly one
//! settled point — the only misses are those the plan makes by design, with its own reason (the
//! VM has nothing to restore, a superseded create or copy) — no point is left `Failed` or
//! `Creating`, nothing is dead-lettered, and no more timer runs failed than there were kills
//! ([`vmrp::local::fault_contract_violations`]). The small run and a CI-sized soak are part of
//! `cargo test`; `bench/soak.sh` runs the long one (`soak_every_*`, ignored) with `VMS`, `TICKS`,
//! `KILLS` overrides, against the same contract.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmrp::azure::Queue;
use vmrp::emulator::arm::PointSummary;
use vmrp::emulator::faults::FaultConfig;
use vmrp::local::{
    fault_contract_violations, run_scenario_keep, summary_line, LocalReport, Scenario,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn chaos_scenario(vms: usize, ticks: u32, kills: u32, seed: u64) -> Scenario {
    // `VMRP_HANDLER_BIN`: run the same contract against another build (a release build for the
    // long soak, or a deliberately broken one to see the contract fail).
    let handler = std::env::var_os("VMRP_HANDLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vmrp")));
    let mut s = Scenario::new(handler);
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

/// The end-state contract of a chaos run ([`fault_contract_violations`]): every due point
/// settled exactly once, the only misses those the plan makes by design with its own reason, no
/// point left `Failed`/`Creating`, no dead letter, no more failed timer runs than kills.
fn assert_accounted_for(
    report: &LocalReport,
    points: &[PointSummary],
    vms: usize,
    ticks: usize,
    kills: u32,
) {
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
    let violations = fault_contract_violations(report, points, kills);
    assert!(
        violations.is_empty(),
        "the fault contract is broken:\n  {}\n{why}",
        violations.join("\n  ")
    );
}

/// One fleet run at a time (as in e2e_lifecycle.rs): each is sized for the 2-core machine alone.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chaos_run(vms: usize, ticks: u32, kills: u32, seed: u64) {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let started = Instant::now();
    let s = chaos_scenario(vms, ticks, kills, seed);
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    let counters = emulator.arm.counters();
    let duplicated: u64 = Queue::ALL
        .iter()
        .map(|q| {
            emulator
                .bus
                .counters(q.name())
                .map(|c| c.duplicate_deliveries_injected)
                .unwrap_or(0)
        })
        .sum();
    println!(
        "{}\nlocal missing by reason: {:?}\ncopies missing by reason: {:?}\ninvocations: {:?}\nfaults injected: {:?}, duplicate deliveries: {duplicated}\nARM by status: {:?}\ndead letters: {}\nkills: {}, restarts: {}\nreal time: {:.1} s",
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
    // Every fault kind really happened (else the run proves nothing about it).
    for kind in ["5xx", "429", "failedProvisioning", "drop", "latency"] {
        assert!(
            counters.faults_injected.get(kind).copied().unwrap_or(0) > 0,
            "{kind} was injected: {:?}",
            counters.faults_injected
        );
    }
    assert!(duplicated > 0, "no duplicate delivery was injected");
    assert_accounted_for(
        &report,
        &emulator.arm.restore_points(),
        vms,
        ticks as usize,
        kills,
    );
    emulator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_small_every_point_settles_once_or_is_reported() {
    chaos_run(60, 3, 10, 11).await;
}

/// The CI-sized soak: the soak's contract at 100 VMs × 3 ticks, 3 kills, every fault
/// kind, in the README's test command (about a minute on 2 cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_ci_sized_every_due_point_settles_once() {
    chaos_run(100, 3, 3, 5).await;
}

/// The long run: `bench/soak.sh` (defaults 500 VMs × 5 ticks, 12 kills), same contract.
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

/// Several instances under chaos: every instance got work (a Flex Consumption app's instances
/// compete for messages), each kill hit exactly the instance the seed chose (counted per
/// instance by the contract), and the contract holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_each_kill_hits_one() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = chaos_scenario(24, 2, 3, 21);
    s.instances = 3;
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    println!(
        "{}\ninvocations by instance: {:?}\nkills by instance: {:?}",
        summary_line(&report),
        report.invocations_by_instance,
        report.handler_kills_by_instance
    );
    assert_eq!(report.instances, 3);
    assert_eq!(report.invocations_by_instance.len(), 3);
    assert!(
        report.invocations_by_instance.iter().all(|n| *n > 0),
        "every instance took work: {:?}",
        report.invocations_by_instance
    );
    assert_eq!(report.handler_kills_by_instance.iter().sum::<u64>(), 3);
    assert_eq!(
        report.handler_kills_by_instance, report.planned_kills_by_instance,
        "each kill hit the planned instance"
    );
    assert_accounted_for(&report, &emulator.arm.restore_points(), 24, 2, 3);
    emulator.stop().await.unwrap();
}

/// An ARM outage of 20 virtual minutes while the first tick's creates settle and its copies
/// start (03:45 start, tick 04:00, outage 04:45–05:05): every ARM call in it is answered 503,
/// then ARM recovers. The polls and starts refused during it are retried after it and settle:
/// the fault contract holds with no allowance for the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arm_outage_between_ticks_ends_with_every_point_settled() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = chaos_scenario(24, 2, 1, 3);
    s.faults =
        FaultConfig::from_json(r#"{"arm": {"outage": {"at": "PT1H", "for": "PT20M"}}}"#).unwrap();
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    let counters = emulator.arm.counters();
    println!(
        "{}\noutage answers: {:?}\nARM by status: {:?}",
        summary_line(&report),
        counters.faults_injected.get("outage"),
        counters.responses_by_status
    );
    assert!(
        counters.faults_injected.get("outage").copied().unwrap_or(0) > 0,
        "the outage met ARM calls: {:?}",
        counters.faults_injected
    );
    assert_accounted_for(&report, &emulator.arm.restore_points(), 24, 2, 1);
    emulator.stop().await.unwrap();
}

/// An ARM outage over a tick (03:55–04:15, tick 04:00): the planning invocation's listings meet
/// 503s, so it plans the subscription again a minute later, and again (`replan_delay`), until
/// ARM is back; the tick's window outlasts the outage, so the outage costs no point and the
/// fault contract holds in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arm_outage_over_a_tick_costs_no_point() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let mut s = chaos_scenario(12, 2, 0, 3);
    s.faults =
        FaultConfig::from_json(r#"{"arm": {"outage": {"at": "PT10M", "for": "PT20M"}}}"#).unwrap();
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    println!(
        "{}\nlocal missing by reason: {:?}",
        summary_line(&report),
        report.local.failed_by_reason
    );
    let replans = report
        .invocations_by_function
        .get(vmrp::functions::PLAN_RESTORE_POINTS)
        .map_or(0, |m| m.values().sum::<u64>());
    assert!(
        replans > 2,
        "the outage's tick was planned again: {replans} planning runs over 2 ticks"
    );
    assert_accounted_for(&report, &emulator.arm.restore_points(), 12, 2, 0);
    emulator.stop().await.unwrap();
}

/// The issue's first "done when" measurement (ignored: long; `VMS`, `TICKS`, `KILLS`, `SEED`,
/// `SPEED` overrides, `VMRP_HANDLER_BIN` for a release build): 4 handler instances, two copy
/// regions, 30 % of ARM's budget spent by other tools, kills, and a 20-minute ARM outage during
/// the first tick's copies. Prints coverage, duplicates, copies lost to ordering, the 429 share
/// and the fault contract's breaches; asserts only that the run was carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: the at-scale measurement (docs/bench.md)"]
async fn measure_instances_background_load_and_outage_at_scale() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let vms = env_or("VMS", 2000);
    let ticks = env_or("TICKS", 3);
    let kills = env_or("KILLS", 3);
    let mut s = chaos_scenario(vms, ticks, kills, env_or("SEED", 5));
    // `SUBS`: subscriptions the fleet is spread over. Azure replicates at most 100 disk copies
    // at once per subscription and target region (docs/emulator-arm.md): 2,000 VMs with ~2
    // disks copied every 4 h need about 20 subscriptions for their copies to keep up (the
    // plan's copy-capacity warning says so for fewer).
    s.fleet.subscriptions = env_or("SUBS", 20);
    s.instances = 4;
    s.copy_to = vec!["swedencentral".into(), "francecentral".into()];
    s.background_load = vmrp::emulator::arm::throttle::BackgroundLoad {
        share: 0.3,
        bursty: false,
    };
    s.app_settings.insert(
        "VMRP_ARM_SHARE".into(),
        format!("{:.2}", vmrp::local::told_share(s.background_load)),
    );
    s.faults =
        FaultConfig::from_json(r#"{"arm": {"outage": {"at": "PT1H", "for": "PT20M"}}}"#).unwrap();
    s.timeout = Duration::from_secs(env_or("TIMEOUT_SECS", 3600));
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&s).await.expect("the run is carried out");
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    let copy_limit = counters
        .rule_refusals
        .get("copiesInFlightPerRegion")
        .copied()
        .unwrap_or(0);
    let lost_to_ordering = report
        .copies
        .failed
        .iter()
        // A copy refused because a newer one was already copied, not a copy whose create was
        // superseded by the next tick.
        .filter(|m| vmrp::local::reason_class(&m.reason).0 == "superseded by a newer copy")
        .count();
    let dropped_from_backlog = report
        .copies
        .failed
        .iter()
        .filter(|m| {
            vmrp::local::reason_class(&m.reason)
                .0
                .starts_with("dropped from the copy backlog")
        })
        .count();
    let violations = fault_contract_violations(&report, &points, kills);
    println!(
        "{}\ninstances {} invocations by instance {:?} kills by instance {:?}\nlocal {}/{} copies {}/{} duplicates {} copies lost to ordering {} dropped from the copy backlog {}\n429 {} of {} ARM requests = {:.3} %: ARM's buckets {} ({:.3} %), Compute's copy-in-flight limit {} ({:.3} %); outage answers {:?}\nlocal missing by reason {:?}\ncopies missing by reason {:?}\ncontract breaches ({}): {:?}\nreal {:.0} s",
        summary_line(&report),
        report.instances,
        report.invocations_by_instance,
        report.handler_kills_by_instance,
        report.local.settled,
        report.local.expected,
        report.copies.settled,
        report.copies.expected,
        report.local.duplicates + report.copies.duplicates,
        lost_to_ordering,
        dropped_from_backlog,
        report.throttled_429,
        report.arm_requests,
        100.0 * report.throttled_429 as f64 / report.arm_requests.max(1) as f64,
        counters.throttled,
        100.0 * counters.throttled as f64 / report.arm_requests.max(1) as f64,
        copy_limit,
        100.0 * copy_limit as f64 / report.arm_requests.max(1) as f64,
        counters.faults_injected.get("outage"),
        report.local.failed_by_reason,
        report.copies.failed_by_reason,
        violations.len(),
        violations.iter().take(10).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    // Per tick, the local misses by reason class, and what was dead-lettered: where a tick's
    // points went when the totals do not add up.
    let mut by_tick: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>> =
        Default::default();
    for m in &report.local.failed {
        let class = format!(
            "{:?}: {}",
            m.explained_by,
            vmrp::local::reason_class(&m.reason).0
        );
        *by_tick
            .entry(vmrp::names::restore_point_name(m.tick, 0))
            .or_default()
            .entry(class)
            .or_default() += 1;
    }
    println!("local missing by tick {by_tick:#?}");
    // Invocations that did not succeed, by function: where dead letters come from.
    for (function, statuses) in &report.invocations_by_function {
        let unhappy: Vec<_> = statuses
            .iter()
            .filter(|(status, _)| {
                matches!(status.as_str(), "failed" | "timedout" | "protocolviolation")
            })
            .collect();
        if !unhappy.is_empty() {
            println!("{function}: {unhappy:?}");
        }
    }
    for d in report.dead_letters.iter().take(3) {
        let text = d.to_string();
        println!("dead letter: {}", &text[..text.len().min(1500)]);
    }
    emulator.stop().await.unwrap();
}
