//! `vmrp status` and `vmrp plan` pace their reads from ARM's remaining-reads headers
//! (src/commands/paced.rs): against the emulator with a read bucket smaller than the reads a
//! status or plan needs, the unpaced reads meet 429s, the paced ones none, and the paced reads
//! leave the handlers' share of the bucket untouched.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use vmrp::azure::client::{ArmClient, ArmClientConfig};
use vmrp::azure::credential::StaticToken;
use vmrp::commands::paced::PacedArm;
use vmrp::commands::ReadOnlyArm;
use vmrp::emulator::arm::{ArmConfig, FleetSpec, ThrottleConfig};
use vmrp::emulator::server::{self, BusAuth, EmulatorConfig, RunningEmulator};

/// Read bucket of the emulated subscription: ARM's refill (25/s, which the pacer assumes) with
/// a burst small enough that reading 120 collections at once exceeds it.
const READ_BURST: f64 = 30.0;
const VMS: usize = 120;

async fn emulator() -> RunningEmulator {
    let now = OffsetDateTime::now_utc();
    let mut throttle = ThrottleConfig::default();
    throttle.reads.capacity = READ_BURST;
    throttle.reads.refill_per_sec = 25.0;
    server::start(EmulatorConfig {
        speed: 1.0,
        start: now.replace_nanosecond(0).unwrap(),
        seed: 3,
        arm: ArmConfig {
            fleet: FleetSpec {
                count: VMS,
                subscriptions: 1,
                tagged_fraction: 1.0,
                min_data_disks: 1,
                max_data_disks: 1,
                seed: 3,
                ..FleetSpec::default()
            },
            throttle,
            ..ArmConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client(emulator: &RunningEmulator) -> ArmClient {
    let token = emulator
        .identity
        .issue("https://management.azure.com", None);
    let credential = StaticToken::new(&token.access_token, Duration::from_secs(3000));
    let settings = emulator.handler_settings(BusAuth::Sas);
    let env = |k: &str| settings.get(k).cloned();
    let mut config = ArmClientConfig::from_env(&env, credential).unwrap();
    config.loopback_only = true;
    ArmClient::new(config).unwrap()
}

/// A collection per VM (writes: within the write bucket), so status reads one collection per VM.
async fn collections(emulator: &RunningEmulator) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = emulator
        .identity
        .issue("https://management.azure.com", None)
        .access_token;
    let base = emulator.urls.arm.trim_end_matches('/');
    for vm in emulator.arm.list_vms() {
        let id = vm.resource_id().unwrap();
        let url = format!(
            "{base}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/restorePointCollections/{}?api-version={}",
            id.subscription(),
            id.resource_group().unwrap(),
            vmrp::names::collection_name(&id),
            vmrp::azure::models::API_VERSION
        );
        let body = json!({"location": vm.location, "properties": {"source": {"id": id.as_str()}}});
        let r = http
            .put(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
}

fn throttled(emulator: &RunningEmulator) -> u64 {
    emulator.arm.counters().throttled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_plan_reads_stay_under_a_small_read_bucket() {
    let emulator = emulator().await;
    collections(&emulator).await;
    let subs = emulator.subscriptions.clone();

    // Unpaced (the commands before): the collection reads drain the bucket and meet 429s.
    let naive = ReadOnlyArm(client(&emulator));
    let before = throttled(&emulator);
    let _ = vmrp::commands::gather_each(&naive, &subs).await;
    let naive_429 = throttled(&emulator) - before;
    assert!(naive_429 > 0, "the bucket is small enough to matter");

    // Let the bucket refill, then the paced reads: no 429.
    tokio::time::sleep(Duration::from_secs_f64(READ_BURST / 25.0 + 1.0)).await;
    let paced = PacedArm::new(ReadOnlyArm(client(&emulator)), 0.5, false);
    let before = throttled(&emulator);
    let reads_before = emulator.arm.counters().requests;
    let (inventory, failures) = vmrp::commands::gather_each(&paced, &subs)
        .await
        .expect("status reads");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(inventory.vms.len(), VMS);
    assert!(inventory.vms.iter().all(|vm| vm.collections.len() == 1));
    let status_reads = emulator.arm.counters().requests - reads_before;
    assert!(
        status_reads as f64 > READ_BURST * 3.0,
        "{status_reads} reads"
    );
    assert_eq!(throttled(&emulator) - before, 0, "status: no 429");
    assert!(paced.waited() > Duration::ZERO, "it had to wait for budget");

    // `vmrp plan` reads a disk per VM on top: still no 429.
    let policy = vmrp::policy::Policy::from_json_str(
        &json!({"rules": [{"name": "all", "targets": {"subscriptions": subs},
                           "retention": {"keepLast": 3}}]})
        .to_string(),
    )
    .unwrap();
    let timer = vmrp::schedule::Schedule::parse(vmrp::config::DEFAULT_SCHEDULE).unwrap();
    let before = throttled(&emulator);
    let planned = vmrp::commands::plan::plan_with(
        &paced,
        &policy,
        &timer,
        None,
        &subs,
        &vmrp::plan::Pacing::default(),
    )
    .await
    .expect("plan reads");
    assert!(planned.rows.len() >= VMS);
    assert_eq!(throttled(&emulator) - before, 0, "plan: no 429");
    println!(
        "naive: {naive_429} x 429; paced: {status_reads} status reads, waited {:.1}s in all",
        paced.waited().as_secs_f64()
    );
    emulator.stop().await.unwrap();
}
