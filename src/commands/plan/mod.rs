//! `vmrp plan`: a dry run. For a policy and a moment in time, every create, copy and delete vmrp
//! would do, per VM and region, with the rule and the reason. Read-only by construction: it
//! gathers through `inventory` (GETs only) and decides with the same pure functions the handlers
//! use (`policy`, `schedule`, `retention`, `names`).

use crate::policy::regions::canonical_region;
use crate::schedule::rfc3339;
use std::collections::HashMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use time::OffsetDateTime;

use crate::azure::models::ConsistencyMode;
use crate::azure::ResourceId;
use crate::inventory::{
    copy_holds, CollectionRole, CollectionView, Inventory, PointStatus, VmCoverage,
};
use crate::messages::{CollectionSeen, ListedVm};
use crate::names;
use crate::plan::{CopyShortfall, Pacing, PlanTarget};
use crate::policy::{DiskInfo, Policy, Rule, MIN_SPACING_APP, MIN_SPACING_CRASH};
use crate::retention::{self, PointState, PointView};
use crate::schedule::Schedule;

/// What vmrp would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Create,
    Copy,
    Delete,
    /// Would act, but a platform rule or in-flight work makes it wait.
    Wait,
    /// Nothing to do (not selected, not due, already done).
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    pub vm: String,
    pub region: String,
    pub action: Action,
    /// The restore point acted on (or `-`).
    pub target: String,
    pub rule: Option<String>,
    pub reason: String,
}

/// Plans one moment for every VM of the inventory, with the default pacing.
pub fn plan(
    inventory: &Inventory,
    policy: &Policy,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &HashMap<ResourceId, DiskInfo>,
) -> Vec<PlanRow> {
    plan_paced(inventory, policy, timer, at, disks, &Pacing::default())
}

/// Plans one moment for every VM of the inventory; a create the timer would leave out of its
/// tick (it would start after the supersede cut-off at `pacing`'s budget) is a `wait` row with
/// the timer's reason. A (subscription, region) pair whose copies of the tick exceed Azure's
/// 100 disk copies in flight (`plan::copy_shortfalls`, the timer's own check) is a `wait` row
/// too, after the VMs' rows: VM `-`, that region, the rules copying there, the timer's line.
pub fn plan_paced(
    inventory: &Inventory,
    policy: &Policy,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &HashMap<ResourceId, DiskInfo>,
    pacing: &Pacing,
) -> Vec<PlanRow> {
    let (left_out, copy_shortfalls) = tick_verdicts(inventory, policy, timer, at, disks, pacing);
    let mut rows = Vec::new();
    for vm in &inventory.vms {
        let row =
            |region: &str, action, target: &str, rule: Option<&Rule>, reason: String| PlanRow {
                vm: vm.id.name().unwrap_or_default().to_string(),
                region: region.to_string(),
                action,
                target: target.to_string(),
                rule: rule.map(|r| r.name.clone()),
                reason,
            };
        let Some(rule) = policy.rule_for(&vm.vm) else {
            rows.push(row(
                &vm.location,
                Action::Skip,
                "-",
                None,
                "not selected by any rule".into(),
            ));
            continue;
        };
        if rule.skip_backup_protected && !vm.azure_backup.is_empty() {
            rows.push(row(
                &vm.location,
                Action::Skip,
                "-",
                Some(rule),
                "skipped: Azure Backup also protects this VM (the rule's skipBackupProtected)"
                    .into(),
            ));
            continue;
        }
        // Restore points of this VM that are not vmrp's count against Azure's 500 per VM too:
        // Azure Backup's collection, and the platform's periodic points (preview).
        for note in other_points_notes(vm, Some(rule)) {
            rows.push(row(&vm.location, Action::Skip, "-", Some(rule), note));
        }
        let vm_disks: Vec<DiskInfo> = vm
            .vm
            .disks()
            .iter()
            .filter_map(|d| {
                d.managed_disk_id
                    .as_ref()
                    .and_then(|id| disks.get(id))
                    .cloned()
            })
            .collect();
        // As the create: only what Azure would refuse stops the VM; a copy entry naming the
        // VM's own region is dropped from its copies (a Skip row below), not a refusal.
        let problems: Vec<_> = rule
            .check_vm(&vm.vm, &vm_disks)
            .into_iter()
            .filter(|p| p.refuses_create())
            .collect();
        if !problems.is_empty() {
            let reason = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            rows.push(row(
                &vm.location,
                Action::Skip,
                "-",
                Some(rule),
                format!("refused: {reason}"),
            ));
            continue;
        }
        let unfit = left_out.get(&vm.id).map(String::as_str);
        plan_local_create(vm, rule, timer, at, &vm_disks, unfit, &mut |a, t, r| {
            rows.push(row(&vm.location, a, t, Some(rule), r))
        });
        // The same copy list as the create: none to the VM's own region.
        let regions: Vec<String> = rule
            .copies_from(Some(&vm.location))
            .iter()
            .map(|c| canonical_region(&c.region))
            .collect();
        for home in rule
            .copy_regions()
            .iter()
            .filter(|c| !regions.contains(&canonical_region(&c.region)))
        {
            rows.push(row(
                &canonical_region(&home.region),
                Action::Skip,
                "-",
                Some(rule),
                "no copy: the VM's own region (a copy needs another region)".to_string(),
            ));
        }
        for region in &regions {
            plan_copy(vm, region, &mut |a, t, r| {
                rows.push(row(region, a, t, Some(rule), r))
            });
        }
        let holds = copy_holds(vm, &regions, at, rule.deadline(crate::messages::Role::Copy));
        for c in &vm.collections {
            let region = (c.role == CollectionRole::Copy).then_some(c.region.as_str());
            let retention = rule.retention_for_region(region);
            let views: Vec<PointView> = c
                .points
                .iter()
                .filter_map(|p| point_view(p, &holds))
                .collect();
            for (id, verdict) in retention::decide(&views, retention) {
                if verdict.is_delete() {
                    rows.push(row(
                        &c.region,
                        Action::Delete,
                        id.name().unwrap_or_default(),
                        Some(rule),
                        verdict.reason().to_string(),
                    ));
                }
            }
        }
    }
    rows.extend(copy_shortfalls.iter().map(shortfall_row));
    rows
}

/// The row of a (subscription, region) pair whose copies exceed Azure's limit: no one VM's
/// (`-`), a `wait` in that region, the rules copying there, the timer's own line.
fn shortfall_row(s: &CopyShortfall) -> PlanRow {
    PlanRow {
        vm: "-".to_string(),
        region: s.region.clone(),
        action: Action::Wait,
        target: "-".to_string(),
        rule: Some(s.rules.join(", ")),
        reason: s.to_string(),
    }
}

/// Most platform-managed periodic restore points kept per VM (preview: "Retention max = 10",
/// github.com/Azure/basic-data-protection-for-Azure-VMs).
pub const PERIODIC_POINTS_MAX: u32 = 10;

/// The restore points of `vm` outside vmrp's collections, each as a plan note: Azure Backup's
/// collections (which vmrp never writes to or deletes in) and platform periodic restore points
/// (`resiliencyProfile.periodicRestorePoints`), with what they leave of Azure's 500 per VM.
/// Also used by `vmrp status`.
pub fn other_points_notes(vm: &VmCoverage, rule: Option<&Rule>) -> Vec<String> {
    let backup: u32 = vm.azure_backup.iter().map(|c| c.points.len() as u32).sum();
    let periodic = vm.vm.periodic_restore_points();
    let mut notes = Vec::new();
    if !vm.azure_backup.is_empty() {
        let names: Vec<&str> = vm.azure_backup.iter().filter_map(|c| c.id.name()).collect();
        notes.push(format!(
            "Azure Backup also protects this VM: {} ({backup} points) counts against Azure's 500 restore points per VM; vmrp never writes to or deletes in it, and a create that meets Backup's snapshot job is retried later",
            names.join(", ")
        ));
    }
    if periodic {
        notes.push(format!(
            "platform-managed periodic restore points are on (resiliencyProfile.periodicRestorePoints, preview): up to {PERIODIC_POINTS_MAX} of them count against Azure's 500 restore points per VM"
        ));
    }
    if let (true, Some(rule)) = (backup > 0 || periodic, rule) {
        let others = backup + if periodic { PERIODIC_POINTS_MAX } else { 0 };
        let ours = rule.max_points_per_vm();
        let total = others.saturating_add(ours);
        if total > crate::policy::MAX_POINTS_PER_VM {
            notes.push(format!(
                "{others} points outside vmrp's collections + up to {ours} of vmrp's = {total}, over Azure's {} per VM: creates fail once it is reached; lower retention",
                crate::policy::MAX_POINTS_PER_VM
            ));
        }
    }
    notes
}

fn point_view(
    p: &crate::inventory::PointSummary,
    holds: &HashMap<ResourceId, String>,
) -> Option<PointView> {
    let state = match p.status {
        PointStatus::Settled => PointState::Settled,
        PointStatus::InProgress { .. } => PointState::InProgress,
        PointStatus::Failed => PointState::Failed,
    };
    let view = PointView::new(p.id.clone(), p.created?, state);
    Some(match holds.get(&p.id) {
        Some(reason) => view.held(reason.clone()),
        None => view,
    })
}

fn local_collection(vm: &VmCoverage) -> Option<&CollectionView> {
    vm.collections
        .iter()
        .find(|c| c.role == CollectionRole::Local)
}

/// The VMs the timer would leave out of the tick of `at`, with its reason, and the
/// (subscription, region) pairs whose copies of that tick exceed Azure's limit: the handler's
/// own planner ([`crate::plan::plan_tick_from`], [`crate::plan::copy_shortfalls`]) over what
/// the timer's listings would show (the VM, its disks, its local collection ready or missing),
/// sends starting at `at`.
fn tick_verdicts(
    inventory: &Inventory,
    policy: &Policy,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &HashMap<ResourceId, DiskInfo>,
    pacing: &Pacing,
) -> (HashMap<ResourceId, String>, Vec<CopyShortfall>) {
    let Some(tick) = timer.latest_at_or_before(at) else {
        return (HashMap::new(), Vec::new());
    };
    let targets: Vec<PlanTarget<'_>> = inventory
        .vms
        .iter()
        .filter_map(|vm| {
            let rule = policy.rule_for(&vm.vm)?;
            let vm_disks = vm
                .vm
                .managed_data_disk_ids()
                .filter_map(|id| disks.get(&id).cloned())
                .collect();
            let collection = if local_collection(vm).is_some() {
                CollectionSeen::Ready
            } else {
                CollectionSeen::Missing
            };
            Some(PlanTarget {
                vm: vm.id.clone(),
                rule,
                listed: Some(ListedVm {
                    at,
                    vm: vm.vm.clone(),
                    disks: vm_disks,
                    collection: Some(collection),
                    planned_for: None,
                }),
            })
        })
        .collect();
    let plan = crate::plan::plan_tick_from(tick, at.max(tick), timer, &targets, pacing);
    let left_out = plan
        .left_out()
        .map(|item| (item.vm.clone(), item.reason.clone()))
        .collect();
    (
        left_out,
        crate::plan::copy_shortfalls(&plan, &targets, timer, pacing),
    )
}

fn plan_local_create(
    vm: &VmCoverage,
    rule: &Rule,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &[DiskInfo],
    left_out: Option<&str>,
    emit: &mut dyn FnMut(Action, &str, String),
) {
    let Some(tick) = timer.latest_at_or_before(at) else {
        emit(
            Action::Skip,
            "-",
            format!(
                "the timer schedule {} has no occurrence before {}",
                timer.as_str(),
                rfc3339(at)
            ),
        );
        return;
    };
    match rule.is_due(timer, tick) {
        Ok(true) => {}
        Ok(false) => {
            emit(
                Action::Skip,
                "-",
                format!(
                    "rule schedule {} has no occurrence at the tick {}",
                    rule.schedule.as_deref().unwrap_or("-"),
                    rfc3339(tick)
                ),
            );
            return;
        }
        Err(e) => {
            emit(Action::Skip, "-", format!("refused: {e}"));
            return;
        }
    }
    let name = names::restore_point_name(tick, 0);
    let points = local_collection(vm)
        .map(|c| c.points.as_slice())
        .unwrap_or_default();
    if let Some(existing) = points
        .iter()
        .find(|p| names::parse_restore_point_name(&p.name).is_some_and(|(t, _)| t == tick))
    {
        let state = match existing.status {
            PointStatus::Settled => "settled".to_string(),
            PointStatus::InProgress { .. } => "still creating".to_string(),
            PointStatus::Failed => {
                "failed (retried by the poller within the rule's budget)".to_string()
            }
        };
        emit(
            Action::Skip,
            &existing.name,
            format!("this tick's point exists: {state}"),
        );
        return;
    }
    let (mode, _) = rule.consistency_for(&vm.vm);
    let spacing = if mode == ConsistencyMode::CrashConsistent {
        MIN_SPACING_CRASH
    } else {
        MIN_SPACING_APP
    };
    if let Some(recent) = points
        .iter()
        .filter(|p| p.status != PointStatus::Failed)
        .filter_map(|p| p.created.map(|c| (c, p)))
        .filter(|(c, _)| at - *c < spacing)
        .max_by_key(|(c, _)| *c)
    {
        emit(
            Action::Wait,
            &name,
            format!(
                "spacing: {} is {} min old; Azure requires {} h between {} points",
                recent.1.name,
                (at - recent.0).whole_minutes(),
                spacing.whole_hours(),
                mode.as_str()
            ),
        );
        return;
    }
    let excluded = rule.excluded_disks(&vm.vm, disks);
    let mut reason = format!("tick {}: {} point", rfc3339(tick), mode.as_str());
    if !excluded.is_empty() {
        let list: Vec<String> = excluded
            .iter()
            .map(|(id, why)| format!("{} ({why})", id.name().unwrap_or_default()))
            .collect();
        reason.push_str(&format!(", excluding {}", list.join(", ")));
    }
    if let Some(why) = left_out {
        // The timer's own verdict: it will not send this create this tick.
        emit(Action::Wait, &name, why.to_string());
        return;
    }
    emit(Action::Create, &name, reason);
}

fn plan_copy(vm: &VmCoverage, region: &str, emit: &mut dyn FnMut(Action, &str, String)) {
    let copies: Vec<_> = vm
        .points()
        .filter(|(c, _)| c.role == CollectionRole::Copy && c.region == region)
        .map(|(_, p)| p)
        .collect();
    let Some(source) = local_collection(vm)
        .into_iter()
        .flat_map(|c| c.points.iter())
        .filter(|p| p.status == PointStatus::Settled)
        .max_by_key(|p| p.created)
    else {
        emit(
            Action::Skip,
            "-",
            format!("copy to {region}: no settled local point yet"),
        );
        return;
    };
    if copies
        .iter()
        .any(|c| c.source.as_ref() == Some(&source.id) && c.status != PointStatus::Failed)
    {
        emit(
            Action::Skip,
            &source.name,
            format!("copy to {region} exists"),
        );
        return;
    }
    if let Some(busy) = copies
        .iter()
        .find(|c| matches!(c.status, PointStatus::InProgress { .. }))
    {
        let pct = match busy.status {
            PointStatus::InProgress { percent: Some(p) } => format!(" ({p}%)"),
            _ => String::new(),
        };
        emit(
            Action::Wait,
            &source.name,
            format!(
                "copy to {region} waits: previous copy {} still replicating{pct}",
                busy.name
            ),
        );
        return;
    }
    emit(
        Action::Copy,
        &source.name,
        format!("newest settled local point, not yet in {region}"),
    );
}

/// The table people read.
pub fn render(rows: &[PlanRow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["VM", "region", "action", "restore point", "rule", "reason"]);
    for r in rows {
        table.add_row([
            r.vm.clone(),
            r.region.clone(),
            format!("{:?}", r.action).to_lowercase(),
            r.target.clone(),
            r.rule.clone().unwrap_or_else(|| "-".into()),
            r.reason.clone(),
        ]);
    }
    table.to_string()
}

/// `vmrp plan` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub arm: super::ArmArgs,
    /// The policy to plan (JSON or TOML).
    #[arg(long, env = "VMRP_POLICY_FILE")]
    pub policy: std::path::PathBuf,
    /// The timer schedule (NCRONTAB), as in the app setting VMRP_SCHEDULE.
    #[arg(long, env = "VMRP_SCHEDULE", default_value = crate::policy::check::DEFAULT_TIMER_SCHEDULE)]
    pub schedule: String,
    /// Plan for this moment (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

/// Runs `vmrp plan`: reads ARM (never writes), prints every action with its reason.
pub async fn run(args: PlanArgs) -> Result<std::process::ExitCode, String> {
    let policy = Policy::from_file(&args.policy).map_err(|e| e.to_string())?;
    if let Err(problems) = policy.validate_with_timer(&args.schedule) {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(format!("the policy is invalid:\n{}", lines.join("\n")));
    }
    let timer = Schedule::parse(&args.schedule).map_err(|e| e.to_string())?;
    let at = super::parse_at(args.at.as_deref())?;
    let subscriptions = super::subscriptions_to_read(&args.arm.subscriptions, Some(&policy))?;
    // The handlers' pacing, from the same app settings (VMRP_ARM_SHARE, VMRP_TICK_MARGIN_SECS,
    // VMRP_COPY_DURATION_SECS).
    let pacing = crate::functions::Tuning::from_settings(&|k: &str| std::env::var(k).ok())
        .map_err(|e| e.to_string())?
        .pacing;
    // Paced: at 5,000 VMs the collection and disk reads would drain the subscription's read
    // bucket the handlers share (src/commands/paced.rs).
    let arm = args.arm.paced_client()?;
    let planned = plan_with(&arm, &policy, &timer, at, &subscriptions, &pacing).await;
    arm.finish();
    let planned = planned.map_err(super::arm_failed)?;
    if let Some(note) = &planned.clock_note {
        eprintln!("vmrp plan: {note}");
    }
    super::print_rows(&planned.rows, args.arm.json, render)?;
    Ok(if super::report_failures("plan", &planned.skipped) {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// A plan and what it was made of.
#[derive(Debug, Clone)]
pub struct Planned {
    pub rows: Vec<PlanRow>,
    /// The moment planned: `--at`, else ARM's clock.
    pub at: OffsetDateTime,
    /// Said when ARM's clock and this machine's disagree (or ARM's is unknown).
    pub clock_note: Option<String>,
    /// Subscriptions that could not be read, with the error (the rest is planned).
    pub skipped: Vec<String>,
}

/// Gathers what the plan needs through `arm` (reads only) and plans for `at`, or for ARM's
/// clock when `at` is `None`.
pub async fn plan_with(
    arm: &dyn crate::azure::Arm,
    policy: &Policy,
    timer: &Schedule,
    at: Option<OffsetDateTime>,
    subscriptions: &[String],
    pacing: &Pacing,
) -> Result<Planned, crate::azure::ArmError> {
    let (inventory, skipped) = super::gather_each(arm, subscriptions).await?;
    let (at, clock_note) = super::judge_moment(at, arm.rate_limits().date, super::wall_clock());
    let mut disks = HashMap::new();
    for vm in inventory
        .vms
        .iter()
        .filter(|vm| policy.rule_for(&vm.vm).is_some())
    {
        for id in vm.vm.disks().into_iter().filter_map(|d| d.managed_disk_id) {
            if let Some(info) = arm
                .get_disk(&id)
                .await?
                .as_ref()
                .and_then(DiskInfo::from_disk)
            {
                disks.insert(id, info);
            }
        }
    }
    Ok(Planned {
        rows: plan_paced(&inventory, policy, timer, at, &disks, pacing),
        at,
        clock_note,
        skipped,
    })
}

#[cfg(test)]
mod tests;
