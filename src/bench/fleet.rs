//! Fleet figures through the real host simulation: write pacing of a tick, an estate's tick, window ticks and polling efficiency.

use super::*;

/// One timer tick over a large fleet through the real host simulation: how close the creates
/// come to ARM's write budget.
pub(super) async fn fleet_tick(
    handler: &std::path::Path,
    vms: usize,
    speed: f64,
) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.seed = 8;
    scenario.copy_to = Vec::new();
    scenario.ticks = 1;
    scenario.speed = speed;
    scenario.seed = 8;
    // A tick one virtual minute after the start, so the run does not wait for 04:00.
    scenario.schedule = "0 46 3 * * *".into();
    scenario.timeout = Duration::from_secs(1800);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("fleet tick: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    emulator.stop().await.map_err(|e| e.to_string())?;
    let pacing = write_pacing(&points, &counters).map_err(|e| format!("fleet tick: {e}"))?;
    let WritePacing {
        point_puts,
        collection_puts,
        writes,
        span_secs: span,
        bound_secs: bound,
    } = pacing;
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "speed": speed,
        "pointsCreated": points.len(),
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "pointPuts": point_puts,
        "collectionPuts": collection_puts,
        "writesNeeded": writes,
        "tickToLastPointSecs": span,
        "boundSecs": bound,
        "ratioToBound": pacing.ratio_to_bound(),
        "throttled429": throttled,
        "throttledByClass": counters.throttled_by_class,
        "armRequests": counters.requests,
        "armCallsPerVm": counters.requests as f64 / vms.max(1) as f64,
        "armRequestsByOperation": counters.requests_by_operation,
        "realSeconds": real,
    }))
}

/// The large-estate row: one tick over `vms` VMs in `subs` subscriptions, no copies. Each
/// subscription is planned by its own invocation and paced by its own write bucket, so the
/// figure is the slowest subscription's time from the tick to its last create, against the
/// bound of that subscription's writes ([`pacing_bound_secs`]); the whole estate in one bucket
/// would take `serialBoundSecs`.
pub(super) async fn estate_tick(
    handler: &std::path::Path,
    vms: usize,
    subs: usize,
    speed: f64,
) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.subscriptions = subs;
    scenario.fleet.seed = 9;
    scenario.copy_to = Vec::new();
    scenario.ticks = 1;
    scenario.speed = speed;
    scenario.seed = 9;
    scenario.schedule = "0 46 3 * * *".into();
    scenario.timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("estate tick: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let points = emulator.arm.restore_points();
    let counters = emulator.arm.counters();
    let tick = points
        .iter()
        .filter_map(|p| names::parse_restore_point_name(p.id.rsplit('/').next()?))
        .map(|(t, _)| t)
        .min();
    // Measured before the emulator stops (the plan reads it); stopped whatever the outcome.
    let largest_plan = match tick {
        Some(tick) => largest_plan_alone(handler, &emulator, &scenario, &points, tick).await,
        None => Err("estate tick: no restore point was created".to_string()),
    };
    emulator.stop().await.map_err(|e| e.to_string())?;
    let largest_plan = largest_plan?;
    let tick = tick.ok_or("estate tick: no restore point was created")?;
    // Per subscription: creates (each a collection PUT and a point PUT on a first tick) and the
    // last create's time.
    let mut per_sub: BTreeMap<String, (u64, OffsetDateTime)> = BTreeMap::new();
    for p in points.iter().filter(|p| p.source_restore_point.is_none()) {
        let sub =
            p.id.split('/')
                .nth(2)
                .unwrap_or_default()
                .to_ascii_lowercase();
        let e = per_sub.entry(sub).or_insert((0, p.time_created));
        e.0 += 1;
        e.1 = e.1.max(p.time_created);
    }
    let rows: Vec<Value> = per_sub
        .iter()
        .map(|(sub, (creates, last))| {
            let span = (*last - tick).as_seconds_f64();
            let bound = pacing_bound_secs(2 * creates);
            json!({"subscription": sub, "creates": creates, "tickToLastPointSecs": span,
                   "boundSecs": bound})
        })
        .collect();
    let slowest = rows
        .iter()
        .max_by(|a, b| {
            a["tickToLastPointSecs"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["tickToLastPointSecs"].as_f64().unwrap_or(0.0))
        })
        .cloned()
        .unwrap_or(Value::Null);
    let plans = report
        .invocations_by_function
        .get(crate::functions::PLAN_RESTORE_POINTS)
        .map(|m| m.values().sum::<u64>())
        .unwrap_or(0);
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "subscriptions": subs,
        "speed": speed,
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "planInvocations": plans,
        "slowestSubscription": slowest,
        "serialBoundSecs": pacing_bound_secs(2 * report.local.expected as u64),
        "perSubscription": rows,
        "throttled429": throttled,
        "armRequests": counters.requests,
        "largestPlanAlone": largest_plan,
        "realSeconds": real,
    }))
}

/// The peak RSS of the estate's largest invocation: the PlanRestorePoints of the subscription
/// with the most VMs, run again after the tick in a handler process of its own, with the
/// scenario's app settings (the instances of the run served many invocations at once, so their
/// peak is not one invocation's). Its creates go to the queue nobody reads any more, under the
/// tick's message ids.
async fn largest_plan_alone(
    handler: &std::path::Path,
    emulator: &RunningEmulator,
    scenario: &Scenario,
    points: &[crate::emulator::arm::PointSummary],
    tick: OffsetDateTime,
) -> Result<Value, String> {
    let mut vms_by_sub: BTreeMap<String, usize> = BTreeMap::new();
    for p in points.iter().filter(|p| p.source_restore_point.is_none()) {
        let sub = p.id.split('/').nth(2).unwrap_or_default();
        *vms_by_sub.entry(sub.to_ascii_lowercase()).or_default() += 1;
    }
    let (subscription, vms) = vms_by_sub
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .ok_or("estate tick: no subscription has a point")?;
    let contender = Contender {
        name: "vmrp",
        command: vec![handler.display().to_string(), "serve".into()],
    };
    let settings = crate::local::scenario_app_settings(emulator, scenario);
    let log = std::env::temp_dir().join(format!("vmrp-bench-plan-{}.log", std::process::id()));
    let envelope = plan_envelope(emulator, &subscription, tick);
    let (peak_kib, secs) = one_invocation_alone(
        &contender,
        &settings,
        crate::functions::PLAN_RESTORE_POINTS,
        &envelope,
        Duration::from_secs(1800),
        &log,
    )
    .await
    .map_err(|e| format!("the largest plan alone: {e} (log: {})", log.display()))?;
    Ok(json!({"subscription": subscription, "vmsWithAPoint": vms,
              "peakRssMib": peak_kib as f64 / 1024.0, "realSeconds": secs}))
}

/// The tick-window row: `vms` VMs in one subscription with two copy regions under the default
/// policy (application-consistent, every 4 hours: a create after tick + 1 h is superseded), two
/// ticks. Per tick: the VMs whose local point settled, the VMs the plan said beforehand would not
/// fit (`leftOut`), the rest; and whether the VMs left out differ between the ticks (the plan
/// rotates its order from tick to tick so no VM is always last).
pub(super) async fn window_ticks(handler: &std::path::Path, vms: usize) -> Result<Value, String> {
    let mut scenario = Scenario::new(handler.to_path_buf());
    scenario.fleet.count = vms;
    scenario.fleet.seed = 10;
    scenario.copy_to = vec!["swedencentral".into(), "francecentral".into()];
    scenario.ticks = 2;
    scenario.seed = 10;
    // The row is about the ticks' local points: by the next tick's slot (4 h) every one is
    // settled or reported. One subscription's copies need days (the plan says so beforehand);
    // waiting for them cost more than an hour of real time and measured nothing more.
    scenario.stop_after_last_tick = Some(time::Duration::hours(4));
    scenario.timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let (report, emulator) = run_scenario_keep(&scenario)
        .await
        .map_err(|e| format!("tick-window row: {e}"))?;
    let real = started.elapsed().as_secs_f64();
    let counters = emulator.arm.counters();
    emulator.stop().await.map_err(|e| e.to_string())?;
    let per_tick: Vec<Value> = report
        .ticks
        .iter()
        .map(|tick| {
            let at = |m: &&crate::local::Missing| names::restore_point_name(m.tick, 0) == *tick;
            let missing: Vec<&crate::local::Missing> =
                report.local.failed.iter().filter(at).collect();
            let left_out: Vec<&str> = missing
                .iter()
                .filter(|m| m.explained_by == crate::local::Explanation::LeftOutByPlan)
                .map(|m| m.vm.as_str())
                .collect();
            // The rest: VMs with nothing to restore (by design, reported), and anything else.
            let mut nothing_to_restore = 0;
            let mut other: BTreeMap<String, usize> = BTreeMap::new();
            for m in missing
                .iter()
                .filter(|m| m.explained_by != crate::local::Explanation::LeftOutByPlan)
            {
                match crate::local::reason_class(&m.reason) {
                    (_, true) => nothing_to_restore += 1,
                    (class, false) => *other.entry(class.to_string()).or_default() += 1,
                }
            }
            let copies_missing = report.copies.failed.iter().filter(at).count();
            let settled = vms.saturating_sub(missing.len());
            json!({
                "tick": tick,
                "settled": settled,
                "coveredShare": settled as f64 / vms.max(1) as f64,
                "leftOutByPlan": left_out.len(),
                "leftOutVms": left_out,
                "nothingToRestore": nothing_to_restore,
                "otherMissing": other,
                "copiesExpected": 2 * vms,
                "copiesMissing": copies_missing,
            })
        })
        .collect();
    let left_out_of = |i: usize| -> std::collections::BTreeSet<String> {
        per_tick.get(i).map_or_else(Default::default, |t| {
            t["leftOutVms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
    };
    let (first, second) = (left_out_of(0), left_out_of(1));
    let both = first.intersection(&second).count();
    let throttled = counters.responses_by_status.get(&429).copied().unwrap_or(0);
    Ok(json!({
        "vms": vms,
        "copyRegions": scenario.copy_to,
        "ticks": per_tick,
        "leftOutInBothTicks": both,
        "leftOutDiffer": first != second || first.is_empty(),
        "localSettled": report.local.settled,
        "localExpected": report.local.expected,
        "copiesSettled": report.copies.settled,
        "copiesExpected": report.copies.expected,
        "localMissingByReason": report.local.failed_by_reason,
        "copiesMissingByReason": report.copies.failed_by_reason,
        "duplicates": report.local.duplicates + report.copies.duplicates,
        "throttled429": throttled,
        "armRequests": counters.requests,
        "stoppedHoursAfterLastTick": scenario.stop_after_last_tick.map(|d| d.whole_hours()),
        "realSeconds": real,
    }))
}

/// GETs of restore points per settled local point (no copies), then per copy (with copies).
pub(super) async fn polling_efficiency(handler: &std::path::Path) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    let mut local_gets_per_point = 0.0;
    for with_copies in [false, true] {
        let mut scenario = Scenario::new(handler.to_path_buf());
        scenario.fleet.count = 30;
        scenario.fleet.seed = 8;
        scenario.seed = 8;
        scenario.ticks = 2;
        scenario.copy_to = if with_copies {
            vec!["swedencentral".into()]
        } else {
            Vec::new()
        };
        scenario.timeout = Duration::from_secs(600);
        let (report, emulator) = run_scenario_keep(&scenario)
            .await
            .map_err(|e| format!("polling: {e}"))?;
        let timings = emulator.arm.config().timings.clone();
        let counters = emulator.arm.counters();
        emulator.stop().await.map_err(|e| e.to_string())?;
        let gets = counters
            .requests_by_operation
            .get("RestorePoints_Get")
            .copied()
            .unwrap_or(0);
        let key = if with_copies {
            "withCopies"
        } else {
            "localOnly"
        };
        let mut v = json!({
            "vms": 30,
            "ticks": 2,
            "localSettled": report.local.settled,
            "localExpected": report.local.expected,
            "copiesSettled": report.copies.settled,
            "copiesExpected": report.copies.expected,
            "restorePointGets": gets,
            "throttled429": report.throttled_429,
            "complete": report.complete,
        });
        if with_copies {
            // Copy GETs: all GETs minus what the local points needed in the run without copies.
            let copy_gets = gets as f64 - local_gets_per_point * report.local.settled as f64;
            let per_copy = copy_gets / report.copies.settled.max(1) as f64;
            // The emulator's mean copy time (start + replication): the figure's denominator.
            let mean_hours = ((timings.copy_start_secs.0 + timings.copy_start_secs.1) / 2.0
                + (timings.copy_duration_secs.0 + timings.copy_duration_secs.1) / 2.0)
                / 3600.0;
            v["copyGets"] = json!(copy_gets);
            v["getsPerCopy"] = json!(per_copy);
            v["meanCopyHours"] = json!(mean_hours);
            v["getsPerCopyHour"] = json!(per_copy / mean_hours);
        } else {
            local_gets_per_point = gets as f64 / report.local.settled.max(1) as f64;
            v["getsPerLocalPoint"] = json!(local_gets_per_point);
        }
        out.insert(key.into(), v);
    }
    Ok(Value::Object(out))
}
