//! `vmrp status`: coverage now — per VM and region the newest settled point and its age against
//! the schedule (ok / late / missing), copies in flight with their percent, and failures.
//!
//! With a policy, only the VMs a rule selects are judged, each against the ticks its rule is
//! due at (`Rule::is_due`, the test the timer and `plan` use), so a daily rule is not "late" at
//! the timer's other ticks.

use crate::policy::regions::{canonical_region, same_region};
use std::collections::BTreeSet;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::inventory::{CollectionRole, Inventory, PointStatus};
use crate::policy::{Policy, Rule};
use crate::schedule::Schedule;

/// How a region of a VM stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Coverage {
    /// The newest settled point belongs to the latest tick that should be done by now.
    Ok,
    /// There is a settled point, but it is older than the latest tick that should be done.
    Late,
    /// No settled point at all.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub vm: String,
    /// The VM's ARM id (drill records are keyed by it).
    pub vm_id: String,
    pub region: String,
    pub role: CollectionRole,
    pub newest_settled: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub newest_created: Option<OffsetDateTime>,
    pub age_minutes: Option<i64>,
    pub coverage: Coverage,
    /// Points still being created or replicated: (name, lowest disk percent when known).
    pub in_flight: Vec<(String, Option<i32>)>,
    pub failed: Vec<String>,
    /// The last passed restore drill in this region, and a failure newer than it, from the
    /// drill table ([`attach_drills`]); `null` when no drill was recorded (or no table given).
    pub drill: Option<DrillStatus>,
}

/// What the drill table says about one VM and region.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    /// The run tick of the newest drill that passed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_passed: Option<OffsetDateTime>,
    /// The point it restored.
    pub last_passed_point: Option<String>,
    /// Its time to restore, seconds.
    pub seconds_to_restore: Option<f64>,
    /// The tick of the last drill, when it failed after that pass (or there was no pass).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failed: Option<OffsetDateTime>,
    pub last_failure_reason: Option<String>,
}

/// Puts each drill record on its row: same VM (ARM ids compare case-insensitively), same
/// region, same role (a copy region's drill restored the copy).
pub fn attach_drills(rows: &mut [StatusRow], records: &[crate::azure::DrillRecord]) {
    for row in rows {
        let copy = row.role == CollectionRole::Copy;
        row.drill = records
            .iter()
            .find(|r| {
                r.vm.eq_ignore_ascii_case(&row.vm_id)
                    && same_region(&r.region, &row.region)
                    && r.copy == copy
            })
            .map(|r| {
                let failing = r.failing_since_pass();
                DrillStatus {
                    last_passed: r.last_passed,
                    last_passed_point: r.last_passed_point.clone(),
                    seconds_to_restore: r.last_passed_seconds,
                    last_failed: failing.then_some(r.last_run),
                    last_failure_reason: if failing { r.last_reason.clone() } else { None },
                }
            });
    }
}

/// The "last drill" cell: the pass (when, which point), and a newer failure with its reason.
pub fn drill_cell(d: Option<&DrillStatus>) -> String {
    let Some(d) = d else {
        return "-".into();
    };
    let short = |t: OffsetDateTime| {
        let s = crate::schedule::rfc3339(t);
        s.get(..16).map(|x| x.replace('T', " ")).unwrap_or(s)
    };
    let mut out = match (d.last_passed, &d.last_passed_point) {
        (Some(t), Some(p)) => format!(
            "passed {} ({}{})",
            short(t),
            p.rsplit('/').next().unwrap_or(p),
            d.seconds_to_restore
                .map(|s| format!(", {s:.0} s"))
                .unwrap_or_default()
        ),
        (Some(t), None) => format!("passed {}", short(t)),
        _ => "never passed".into(),
    };
    if let Some(t) = d.last_failed {
        out.push_str(&format!(
            "; FAILED {}: {}",
            short(t),
            d.last_failure_reason.as_deref().unwrap_or("no reason")
        ));
    }
    out
}

/// Grace periods: a tick counts as "should be done" once this long has passed since it.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    pub local: Duration,
    pub copy: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Self {
            local: Duration::hours(2),
            copy: Duration::hours(24),
        }
    }
}

/// The latest timer tick at or before `t` at which `rule` creates points (every tick without a
/// rule): the handler's own notion of due (`Rule::latest_due_tick`). The policy was validated
/// first, so a rule schedule that does not parse cannot occur; should it, the rule is never due
/// rather than always.
pub fn latest_due_tick(
    timer: &Schedule,
    rule: Option<&Rule>,
    t: OffsetDateTime,
) -> Option<OffsetDateTime> {
    match rule {
        Some(rule) => rule.latest_due_tick(timer, t).ok().flatten(),
        None => timer.latest_at_or_before(t),
    }
}

/// One row per VM and region: its own region plus every copy region the policy names or that
/// already holds copies. With a policy, VMs no rule selects are left out.
pub fn evaluate(
    inventory: &Inventory,
    policy: Option<&Policy>,
    schedule: &Schedule,
    now: OffsetDateTime,
    grace: Grace,
) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    for vm in &inventory.vms {
        let rule = policy.and_then(|p| p.rule_for(&vm.vm));
        if policy.is_some() && rule.is_none() {
            continue;
        }
        let mut regions: BTreeSet<(bool, String)> = BTreeSet::new();
        regions.insert((false, vm.location.clone()));
        if let Some(rule) = rule {
            // A copy into the VM's own region is never made (the create handler skips it).
            regions.extend(
                rule.copies
                    .iter()
                    .filter(|c| !same_region(&c.region, &vm.location))
                    .map(|c| (true, canonical_region(&c.region))),
            );
        }
        regions.extend(
            vm.collections
                .iter()
                .filter(|c| c.role == CollectionRole::Copy)
                .map(|c| (true, c.region.clone())),
        );
        let newest = vm.newest_settled_by_region();
        for (is_copy, region) in regions {
            let role = if is_copy {
                CollectionRole::Copy
            } else {
                CollectionRole::Local
            };
            let points: Vec<_> = vm
                .points()
                .filter(|(c, _)| c.role == role && c.region == region)
                .map(|(_, p)| p)
                .collect();
            let best = newest
                .get(&region)
                .filter(|_| points.iter().any(|p| p.status == PointStatus::Settled));
            let wait = if is_copy { grace.copy } else { grace.local };
            let due_tick = latest_due_tick(schedule, rule, now - wait);
            let coverage = match (best, due_tick) {
                (None, _) => Coverage::Missing,
                (Some(p), Some(tick)) if p.created.is_some_and(|c| c < tick) => Coverage::Late,
                (Some(_), _) => Coverage::Ok,
            };
            rows.push(StatusRow {
                vm: vm.id.name().unwrap_or_default().to_string(),
                vm_id: vm.id.to_string(),
                region,
                role,
                newest_settled: best.map(|p| p.name.clone()),
                newest_created: best.and_then(|p| p.created),
                age_minutes: best
                    .and_then(|p| p.created)
                    .map(|c| (now - c).whole_minutes()),
                coverage,
                in_flight: points
                    .iter()
                    .filter_map(|p| match p.status {
                        PointStatus::InProgress { percent } => Some((p.name.clone(), percent)),
                        _ => None,
                    })
                    .collect(),
                failed: points
                    .iter()
                    .filter(|p| p.status == PointStatus::Failed)
                    .map(|p| p.name.clone())
                    .collect(),
                drill: None,
            });
        }
    }
    rows
}

/// `VM name: note` for each VM with restore points outside vmrp's collections (Azure Backup's,
/// platform periodic ones): the same notes as `vmrp plan` (`other_points_notes`).
pub fn other_points(inventory: &Inventory, policy: Option<&Policy>) -> Vec<String> {
    let mut out = Vec::new();
    for vm in &inventory.vms {
        let rule = policy.and_then(|p| p.rule_for(&vm.vm));
        if policy.is_some() && rule.is_none() {
            continue;
        }
        for note in super::plan::other_points_notes(vm, rule) {
            out.push(format!("VM {}: {note}", vm.id.name().unwrap_or_default()));
        }
    }
    out
}

/// The table people read.
pub fn render(rows: &[StatusRow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "VM",
        "region",
        "role",
        "newest settled",
        "age",
        "coverage",
        "in flight",
        "failed",
        "last drill",
    ]);
    for r in rows {
        table.add_row([
            r.vm.clone(),
            r.region.clone(),
            format!("{:?}", r.role).to_lowercase(),
            r.newest_settled.clone().unwrap_or_else(|| "-".into()),
            r.age_minutes
                .map(human_minutes)
                .unwrap_or_else(|| "-".into()),
            format!("{:?}", r.coverage).to_lowercase(),
            r.in_flight
                .iter()
                .map(|(n, p)| match p {
                    Some(p) => format!("{n} {p}%"),
                    None => n.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            r.failed.join(", "),
            drill_cell(r.drill.as_ref()),
        ]);
    }
    table.to_string()
}

/// `95` → `1h35m`.
pub fn human_minutes(m: i64) -> String {
    match m {
        m if m < 60 => format!("{m}m"),
        m if m < 48 * 60 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{}d{}h", m / (24 * 60), (m / 60) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::VirtualMachine;
    use crate::azure::ResourceId;
    use crate::inventory::{CollectionView, PointSummary, VmCoverage};
    use time::macros::datetime;

    fn point(name: &str, created: OffsetDateTime, status: PointStatus) -> PointSummary {
        PointSummary {
            id: ResourceId::parse(&format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/{name}")).unwrap(),
            name: name.into(),
            created: Some(created),
            status,
            source: None,
        }
    }

    fn coverage(local: Vec<PointSummary>, copies: Vec<PointSummary>) -> Inventory {
        let id = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap();
        let col = |role, region: &str, points| CollectionView {
            id: id.clone(),
            region: region.into(),
            role,
            points,
        };
        Inventory {
            vms: vec![VmCoverage {
                id: id.clone(),
                location: "eastus".into(),
                vm: VirtualMachine {
                    id: Some(id.to_string()),
                    location: Some("eastus".into()),
                    ..Default::default()
                },
                collections: vec![
                    col(CollectionRole::Local, "eastus", local),
                    col(CollectionRole::Copy, "westus2", copies),
                ],
                azure_backup: Vec::new(),
            }],
        }
    }

    #[test]
    fn ok_late_missing_and_in_flight() {
        let schedule = Schedule::parse("0 0 */4 * * *").unwrap();
        let now = datetime!(2026-11-25 12:30 UTC);
        // Latest local tick due by now (2 h grace) is 08:00; the newest settled point is from 08:00 → ok.
        let inv = coverage(
            vec![
                point(
                    "rp-20261125T0800Z",
                    datetime!(2026-11-25 08:00:30 UTC),
                    PointStatus::Settled,
                ),
                point(
                    "rp-20261125T1200Z",
                    datetime!(2026-11-25 12:00:30 UTC),
                    PointStatus::InProgress { percent: None },
                ),
                point(
                    "rp-20261125T0400Z",
                    datetime!(2026-11-25 04:00:30 UTC),
                    PointStatus::Failed,
                ),
            ],
            vec![point(
                "rp-20261125T0800Z",
                datetime!(2026-11-25 08:10 UTC),
                PointStatus::InProgress { percent: Some(40) },
            )],
        );
        let rows = evaluate(&inv, None, &schedule, now, Grace::default());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].coverage, Coverage::Ok);
        assert_eq!(rows[0].newest_settled.as_deref(), Some("rp-20261125T0800Z"));
        assert_eq!(rows[0].age_minutes, Some(269));
        assert_eq!(
            rows[0].in_flight,
            vec![("rp-20261125T1200Z".to_string(), None)]
        );
        assert_eq!(rows[0].failed, vec!["rp-20261125T0400Z".to_string()]);
        assert_eq!(rows[1].coverage, Coverage::Missing);
        assert_eq!(
            rows[1].in_flight,
            vec![("rp-20261125T0800Z".to_string(), Some(40))]
        );

        // Six hours later the 08:00 point is late locally (the 12:00 tick is due, 16:00 is not yet).
        let later = evaluate(
            &inv,
            None,
            &schedule,
            datetime!(2026-11-25 18:30 UTC),
            Grace::default(),
        );
        assert_eq!(later[0].coverage, Coverage::Late);
        let table = render(&later);
        assert!(
            table.contains("late") && table.contains("westus2") && table.contains("40%"),
            "{table}"
        );
    }

    /// Regression: a rule with its own daily schedule was `late` at the timer's other ticks, and
    /// VMs no rule selects were `missing`.
    #[test]
    fn a_rules_own_schedule_and_unselected_vms() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let policy = Policy::from_json_str(
            r#"{"rules": [{"name": "daily", "schedule": "0 0 4 * * *",
                "targets": {"subscriptions": ["s"], "tags": {"backup": "on"}},
                "retention": {"keepLast": 3}}]}"#,
        )
        .unwrap();
        let mut inv = coverage(
            vec![point(
                "rp-20261206T0400Z",
                datetime!(2026-12-06 04:00:30 UTC),
                PointStatus::Settled,
            )],
            vec![],
        );
        inv.vms[0].vm.tags = Some([("backup".to_string(), "on".to_string())].into());
        let mut unselected = inv.vms[0].clone();
        unselected.vm.tags = None;
        unselected.id = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm2",
        )
        .unwrap();
        inv.vms.push(unselected);
        let at = |t| evaluate(&inv, Some(&policy), &timer, t, Grace::default());

        // Noon: the timer's 08:00 tick is past its grace, but the rule is due at 04:00 only.
        let rows = at(datetime!(2026-12-06 12:00 UTC));
        assert!(
            rows.iter().all(|r| r.vm == "vm1"),
            "only the selected VM: {rows:#?}"
        );
        assert_eq!(rows[0].role, CollectionRole::Local);
        assert_eq!(rows[0].coverage, Coverage::Ok, "{rows:#?}");
        // The next morning, once 04:00 + grace has passed, the point is a day old: late.
        let rows = at(datetime!(2026-12-07 06:30 UTC));
        assert_eq!(rows[0].coverage, Coverage::Late, "{rows:#?}");
        assert_eq!(
            latest_due_tick(
                &timer,
                Some(&policy.rules[0]),
                datetime!(2026-12-06 10:00 UTC)
            ),
            Some(datetime!(2026-12-06 04:00 UTC))
        );
        assert_eq!(
            latest_due_tick(&timer, None, datetime!(2026-12-06 10:00 UTC)),
            Some(datetime!(2026-12-06 08:00 UTC))
        );
    }

    #[test]
    fn a_watch_frame_redraws_in_place_with_counts() {
        let schedule = Schedule::parse("0 0 */4 * * *").unwrap();
        let now = datetime!(2026-11-25 12:30 UTC);
        let inv = coverage(
            vec![point(
                "rp-20261125T0800Z",
                datetime!(2026-11-25 08:00:30 UTC),
                PointStatus::Settled,
            )],
            vec![],
        );
        let rows = evaluate(&inv, None, &schedule, now, Grace::default());
        let frame = watch_frame(&rows, now, 5);
        assert!(frame.starts_with(CLEAR), "{frame:?}");
        assert_eq!(frame.matches(CLEAR).count(), 1);
        assert!(frame.contains("2026-11-25T12:30:00Z (every 5s"), "{frame}");
        assert!(frame.contains("1 ok, 0 late, 1 missing"), "{frame}");
        assert!(frame.contains("westus2"), "{frame}");
    }

    #[test]
    fn human_ages() {
        assert_eq!(human_minutes(5), "5m");
        assert_eq!(human_minutes(95), "1h35m");
        assert_eq!(human_minutes(3 * 24 * 60 + 120), "3d2h");
    }
}

/// `vmrp status` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub arm: super::ArmArgs,
    /// The timer schedule the points should follow (NCRONTAB).
    #[arg(long, env = "VMRP_SCHEDULE", default_value = crate::policy::check::DEFAULT_TIMER_SCHEDULE)]
    pub schedule: String,
    /// Policy file: adds the copy regions each VM should have, and names subscriptions.
    #[arg(long, env = "VMRP_POLICY_FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// Judge coverage at this moment (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Also write the coverage as one self-contained HTML page (src/html_report.rs).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    /// Read again every --interval seconds and redraw the table in place, until Ctrl-C.
    #[arg(long, conflicts_with_all = ["at", "json"])]
    pub watch: bool,
    /// Seconds between two reads with --watch.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// The drill table (https://<account>.table.core.windows.net/<table>, the app's
    /// VMRP_DRILL_TABLE_URL): adds each row's last passed drill and a newer failure.
    #[arg(long, env = "VMRP_DRILL_TABLE_URL", value_name = "URL")]
    pub drill_table: Option<String>,
}

/// The drill records of `--drill-table`, or why there are none: `Err` is a note for the
/// operator (no table given, or it could not be read); status goes on without them.
async fn read_drills(args: &StatusArgs) -> Result<Vec<crate::azure::DrillRecord>, String> {
    let Some(url) = args.drill_table.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Err(
            "no drill table given (--drill-table or VMRP_DRILL_TABLE_URL): last drills not shown"
                .into(),
        );
    };
    let ledger = super::drill_ledger(url)?;
    crate::azure::DrillLedger::read_all(&ledger)
        .await
        .map_err(|e| format!("reading the drill table failed, last drills not shown: {e}\n  check the credential's access (Storage Table Data Reader on the table or its storage account)"))
}

/// ANSI: cursor home, clear the screen (the table is redrawn in place).
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// One frame of `--watch`: clear, a header line, the table.
pub fn watch_frame(rows: &[StatusRow], now: OffsetDateTime, interval: u64) -> String {
    let count = |c: Coverage| rows.iter().filter(|r| r.coverage == c).count();
    format!(
        "{CLEAR}vmrp status at {} (every {interval}s, Ctrl-C to stop): {} ok, {} late, {} missing\n{}\n",
        crate::schedule::rfc3339(now),
        count(Coverage::Ok),
        count(Coverage::Late),
        count(Coverage::Missing),
        render(rows)
    )
}

/// Runs `vmrp status`: exit 0 when every row is ok, 1 when something is late or missing or a
/// subscription could not be read.
pub async fn run(args: StatusArgs) -> Result<std::process::ExitCode, String> {
    let policy = match &args.policy {
        Some(path) => {
            let policy = Policy::from_file(path).map_err(|e| e.to_string())?;
            // The same check `plan` and the functions make, before anything is read.
            if let Err(problems) = policy.validate_with_timer(&args.schedule) {
                let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                return Err(format!("the policy is invalid:\n{}", lines.join("\n")));
            }
            Some(policy)
        }
        None => None,
    };
    let schedule = Schedule::parse(&args.schedule).map_err(|e| e.to_string())?;
    let at = super::parse_at(args.at.as_deref())?;
    let subscriptions = super::subscriptions_to_read(&args.arm.subscriptions, policy.as_ref())?;
    // Paced: at 5,000 VMs the collection reads would drain the subscription's read bucket the
    // handlers share (src/commands/paced.rs).
    let arm = args.arm.paced_client()?;
    loop {
        let gathered = super::gather_each(&arm, &subscriptions).await;
        arm.finish();
        let (inventory, failures) = gathered.map_err(super::arm_failed)?;
        let (now, note) = super::judge_moment(
            at,
            crate::azure::Arm::rate_limits(&arm).date,
            super::wall_clock(),
        );
        if let Some(note) = note {
            eprintln!("vmrp status: {note}");
        }
        let mut rows = evaluate(
            &inventory,
            policy.as_ref(),
            &schedule,
            now,
            Grace::default(),
        );
        let mut drill_note = None;
        match read_drills(&args).await {
            Ok(records) => attach_drills(&mut rows, &records),
            Err(note) => drill_note = Some(note),
        }
        if let Some(path) = &args.html {
            crate::html_report::write(
                path,
                &crate::html_report::Report {
                    title: "vmrp coverage".into(),
                    generated_at: now,
                    schedule: args.schedule.clone(),
                    failures: crate::html_report::failures_from_rows(&rows),
                    ticks: crate::html_report::ticks_from_inventory(&inventory, 12),
                    rows: rows.clone(),
                },
            )?;
        }
        if !args.watch {
            super::print_rows(&rows, args.arm.json, render)?;
            // Restore points that are not vmrp's but share the VM's 500 (Backup, periodic).
            for note in other_points(&inventory, policy.as_ref())
                .into_iter()
                .chain(drill_note.clone())
            {
                if args.arm.json {
                    eprintln!("vmrp status: {note}");
                } else {
                    println!("note: {note}");
                }
            }
        } else {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(watch_frame(&rows, now, args.interval).as_bytes());
            let _ = out.flush();
        }
        let skipped = super::report_failures("status", &failures);
        let healthy = !skipped && rows.iter().all(|r| r.coverage == Coverage::Ok);
        let code = if healthy {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        };
        if !args.watch {
            return Ok(code);
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(args.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(code),
        }
    }
}
