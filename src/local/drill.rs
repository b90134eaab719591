//! `vmrp local --drill`: the restore drill run against the emulator, directly or through the host.

use super::*;

/// The drill group `vmrp local --drill` uses when the policy names none.
pub const DEMO_DRILL_GROUP: &str = "rg-vmrp-drill";

/// The policy's `drills`, or for a policy without one: [`DEMO_DRILL_GROUP`], four VMs per run,
/// the VM's own region and every copy region.
pub fn drill_section(policy: &Policy, copy_to: &[String]) -> crate::policy::drills::Drills {
    policy
        .drills
        .clone()
        .unwrap_or_else(|| crate::policy::drills::Drills {
            schedule: crate::policy::drills::DEFAULT_DRILL_SCHEDULE.into(),
            vms_per_run: 4,
            regions: std::iter::once(crate::policy::drills::LOCAL.to_string())
                .chain(copy_to.iter().cloned())
                .collect(),
            resource_group: DEMO_DRILL_GROUP.into(),
            cover_within_days: None,
        })
}

/// What `vmrp local --drill` did: every drill, how many runs it took to cover the fleet, and
/// the disks the emulator still holds in the drill group afterwards (none, when cleanup worked).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub vms: usize,
    pub runs: u64,
    pub results: Vec<crate::drill::DrillResult>,
    /// VMs with at least one drill (every VM, when the rotation covered the fleet).
    pub covered: usize,
    pub left_in_drill_group: Vec<String>,
    /// VM × region pairs drilled, and how many of them the drill table holds a record of
    /// whose last run is the pair's last drill (read back from the emulator's Table storage).
    pub pairs: usize,
    pub recorded: usize,
}

impl DrillReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    pub fn ok(&self) -> bool {
        self.passed() == self.results.len()
            && self.left_in_drill_group.is_empty()
            && self.covered == self.vms
            && self.recorded == self.pairs
    }
    pub fn render(&self) -> String {
        let mut out = format!(
            "drills: {} VMs in {} runs, {} drills: {} passed, {} failed; {}/{} VMs drilled; {}/{} VM × region recorded; drill group {}\n",
            self.vms,
            self.runs,
            self.results.len(),
            self.passed(),
            self.results.len() - self.passed(),
            self.covered,
            self.vms,
            self.recorded,
            self.pairs,
            if self.left_in_drill_group.is_empty() {
                "empty".to_string()
            } else {
                format!("still holds {} disks", self.left_in_drill_group.len())
            }
       );
        if let Some(slowest) = self
            .results
            .iter()
            .filter_map(|r| r.seconds_to_restore)
            .max_by(f64::total_cmp)
        {
            out.insert_str(out.len() - 1, &format!("; slowest restore {slowest:.2} s"));
        }
        for r in self.results.iter().filter(|r| !r.passed) {
            out.push_str(&format!(
                "  drill failed: {} {} ({}): {}\n",
                r.vm,
                r.region,
                if r.copy { "copy" } else { "local" },
                r.reason.as_deref().unwrap_or("no reason")
            ));
        }
        out
    }
}

/// An ARM client for the emulator with the app's identity (a token the emulator's identity
/// endpoint issues in-process), loopback only: what a drill in the function app would use.
pub fn app_arm_client(
    emulator: &RunningEmulator,
) -> Result<crate::azure::client::ArmClient, LocalError> {
    use crate::azure::client::{ArmClient, ArmClientConfig};
    let token = emulator
        .identity
        .issue("https://management.azure.com", None);
    let credential =
        crate::azure::credential::StaticToken::new(&token.access_token, Duration::from_secs(3000));
    let settings = emulator.handler_settings(BusAuth::Sas);
    let env = |k: &str| settings.get(k).cloned();
    let mut config = ArmClientConfig::from_env(&env, credential)
        .map_err(|e| LocalError::Emulator(e.to_string()))?;
    config.loopback_only = true;
    ArmClient::new(config).map_err(|e| LocalError::Emulator(e.to_string()))
}

/// The drill table of the emulator with the app's identity (a storage token the emulator's
/// identity endpoint issues in-process), loopback only: where RunRestoreDrills records.
pub fn app_drill_ledger(
    emulator: &RunningEmulator,
) -> Result<crate::azure::table::TableLedger, LocalError> {
    let token = emulator
        .identity
        .issue(crate::emulator::table::STORAGE_RESOURCE, None);
    let credential =
        crate::azure::credential::StaticToken::new(&token.access_token, Duration::from_secs(3000));
    crate::azure::table::TableLedger::new(&emulator.urls.drill_table, credential, true)
        .map_err(|e| LocalError::Emulator(e.to_string()))
}

/// `vmrp local --drill`: after the run, drills the fleet with the app identity (the deployed
/// role plus the drill role at the drill group) over as many consecutive drill runs as cover
/// every VM (`drill::runs_to_cover`), then reads the emulator's own state for disks left in the
/// drill group. With the host simulation up and `--drill` (the app's policy then carries the
/// drills section), each run is the registered RunRestoreDrills function fired through the
/// host's timer path ([`drill_through_host`]), its drills read from the invocation's outcome;
/// otherwise the same `drill::run_within`, called directly. Either way each drill is recorded
/// in the emulator's drill table, read back afterwards: every VM × region drilled must be there.
pub async fn drill_demo(
    emulator: &RunningEmulator,
    scenario: &Scenario,
) -> Result<DrillReport, LocalError> {
    use crate::azure::Arm;
    let arm = app_arm_client(emulator)?;
    let ledger = app_drill_ledger(emulator)?;
    let policy = match &scenario.policy {
        Some(p) => p.clone(),
        None => default_policy(
            &emulator.subscriptions,
            &scenario.copy_to,
            (&scenario.fleet.tag_key, &scenario.fleet.tag_value),
        ),
    };
    let drills = drill_section(&policy, &scenario.copy_to);
    ensure_drill_groups(emulator, scenario, &drills);
    let mut vms = Vec::new();
    for sub in &emulator.subscriptions {
        vms.extend(
            arm.list_vms(&crate::azure::VmScope::Subscription(sub.clone()))
                .await
                .map_err(|e| LocalError::Emulator(format!("listing VMs for --drill: {e}")))?,
        );
    }
    let fleet = crate::drill::fleet(&policy, &vms);
    let runs = crate::drill::runs_to_cover(fleet.len(), drills.vms_per_run as usize);
    let schedule = crate::schedule::Schedule::parse(&drills.schedule)
        .map_err(|e| LocalError::Policy(format!("drills.schedule: {e}")))?;
    let mut results = Vec::new();
    if scenario.drill && emulator.host_sim().is_some() {
        // The registered RunRestoreDrills function, fired through the host's timer path: the
        // app's policy carries this drills section (run_scenario_keep with --drill).
        for run in drill_through_host(emulator, scenario, runs).await? {
            if run.status != "succeeded" {
                return Err(LocalError::Emulator(format!(
                    "RunRestoreDrills at {}: invocation {}: {}",
                    run.fired_at, run.status, run.outcome
                )));
            }
            results.extend(run.drills);
        }
    } else {
        // No host (a caller's own emulator): the same run, called directly.
        let mut tick = emulator.clock.now();
        for _ in 0..runs {
            tick = schedule
                .next_after(tick)
                .ok_or_else(|| LocalError::Policy("drills.schedule has no next run".into()))?;
            results.extend(
                crate::drill::run_within(
                    &arm,
                    &drills,
                    &fleet,
                    tick,
                    crate::drill::Bounds::default(),
                    Some(&ledger),
                )
                .await
                .map_err(LocalError::Policy)?
                .results,
            );
        }
    }
    let covered = fleet
        .iter()
        .filter(|(id, _)| results.iter().any(|r| r.vm == id.to_string()))
        .count();
    let groups: Vec<String> = drills
        .role_scopes(&emulator.subscriptions)
        .iter()
        .map(|g| format!("{}/", g.to_ascii_lowercase()))
        .collect();
    let left_in_drill_group = emulator.arm.dump()["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .filter(|id| {
            let id = id.to_ascii_lowercase();
            groups.iter().any(|g| id.starts_with(g))
        })
        .map(str::to_string)
        .collect();
    // Every VM × region drilled has its record, and the record's last result is that drill's.
    let records = crate::azure::DrillLedger::read_all(&ledger)
        .await
        .map_err(|e| LocalError::Emulator(format!("reading the drill table: {e}")))?;
    let mut last: BTreeMap<(String, String), bool> = BTreeMap::new();
    for r in &results {
        last.insert((r.vm.to_ascii_lowercase(), r.region.clone()), r.passed);
    }
    let recorded = last
        .iter()
        .filter(|((vm, region), passed)| {
            records.iter().any(|x| {
                x.vm.eq_ignore_ascii_case(vm) && x.region == *region && x.last_passed_ok == **passed
            })
        })
        .count();
    Ok(DrillReport {
        vms: fleet.len(),
        runs,
        results,
        covered,
        left_in_drill_group,
        pairs: last.len(),
        recorded,
    })
}

/// What one RunRestoreDrills invocation through the host answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDrillRun {
    /// When the host fired the timer (virtual).
    pub fired_at: String,
    /// The invocation's status as the host recorded it (`succeeded`, `failed`, ...).
    pub status: String,
    /// The handler's `ReturnValue` (its `Outcome`: status, summary, each drill).
    pub outcome: serde_json::Value,
    /// The run's drills, from the outcome.
    pub drills: Vec<crate::drill::DrillResult>,
}

/// The registered RunRestoreDrills function, run through the host simulation's timer path
/// (the host's "run now" of a timer function, as the control endpoint offers): creates the
/// drill group(s), then fires the timer once per run needed to cover the fleet, moving the
/// virtual clock to the drill schedule's next occurrence before each, so each firing is the
/// next run of the rotation. Needs a run started with `--drill` (its app policy carries the
/// drills section) whose emulator is still up ([`run_scenario_keep`]).
pub async fn drill_through_host(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    runs: u64,
) -> Result<Vec<HostDrillRun>, LocalError> {
    let sim = emulator
        .host_sim()
        .ok_or_else(|| LocalError::Emulator("the host simulation is not running".into()))?;
    let policy = match &scenario.policy {
        Some(p) => p.clone(),
        None => default_policy(
            &emulator.subscriptions,
            &scenario.copy_to,
            (&scenario.fleet.tag_key, &scenario.fleet.tag_value),
        ),
    };
    let drills = drill_section(&policy, &scenario.copy_to);
    ensure_drill_groups(emulator, scenario, &drills);
    let schedule = crate::schedule::Schedule::parse(&drills.schedule)
        .map_err(|e| LocalError::Policy(format!("drills.schedule: {e}")))?;
    let mut out = Vec::new();
    for _ in 0..runs {
        let now = emulator.clock.now();
        let next = schedule
            .next_after(now)
            .ok_or_else(|| LocalError::Policy("drills.schedule has no next run".into()))?;
        emulator
            .clock
            .try_advance(next - now)
            .map_err(LocalError::Emulator)?;
        let record = sim
            .fire_timer(crate::functions::RUN_RESTORE_DRILLS)
            .await
            .map_err(|e| LocalError::Emulator(e.to_string()))?;
        let record = serde_json::to_value(&record).unwrap_or_default();
        let outcome = record["response"]["ReturnValue"].clone();
        let drills = match outcome.get("drills") {
            Some(d) => serde_json::from_value(d.clone()).map_err(|e| {
                LocalError::Emulator(format!("RunRestoreDrills answered unreadable drills: {e}"))
            })?,
            None => Vec::new(),
        };
        out.push(HostDrillRun {
            fired_at: record["started"].as_str().unwrap_or_default().to_string(),
            status: record["status"].as_str().unwrap_or_default().to_string(),
            outcome,
            drills,
        });
    }
    Ok(out)
}

/// The drill group exists before a drill (the operator creates it; infra/main.bicep assigns the
/// drill role there), so the demo creates it in the emulator.
pub(super) fn ensure_drill_groups(
    emulator: &RunningEmulator,
    scenario: &Scenario,
    drills: &crate::policy::drills::Drills,
) {
    let location = scenario
        .fleet
        .regions
        .first()
        .cloned()
        .unwrap_or_else(|| "westeurope".into());
    for scope in drills.role_scopes(&emulator.subscriptions) {
        if let Ok(id) = crate::azure::ResourceId::parse(&scope) {
            emulator.arm.add_resource_group(
                id.subscription(),
                id.resource_group().unwrap_or_default(),
                &location,
            );
        }
    }
}
