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
use crate::plan::{Pacing, PlanTarget};
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
/// the timer's reason.
pub fn plan_paced(
    inventory: &Inventory,
    policy: &Policy,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &HashMap<ResourceId, DiskInfo>,
    pacing: &Pacing,
) -> Vec<PlanRow> {
    let left_out = tick_left_out(inventory, policy, timer, at, disks, pacing);
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
    rows
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

/// The VMs the timer would leave out of the tick of `at`, with its reason: the handler's own
/// planner ([`crate::plan::plan_tick_from`]) over what the timer's listings would show (the
/// VM, its disks, its local collection ready or missing), sends starting at `at`.
fn tick_left_out(
    inventory: &Inventory,
    policy: &Policy,
    timer: &Schedule,
    at: OffsetDateTime,
    disks: &HashMap<ResourceId, DiskInfo>,
    pacing: &Pacing,
) -> HashMap<ResourceId, String> {
    let Some(tick) = timer.latest_at_or_before(at) else {
        return HashMap::new();
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
    crate::plan::plan_tick_from(tick, at.max(tick), timer, &targets, pacing)
        .left_out()
        .map(|item| (item.vm.clone(), item.reason.clone()))
        .collect()
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
    // The handlers' pacing, from the same app settings (VMRP_ARM_SHARE, VMRP_TICK_MARGIN_SECS).
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
mod tests {
    use super::*;
    use crate::azure::models::VirtualMachine;
    use crate::inventory::PointSummary;
    use time::macros::datetime;
    use time::Duration;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn vm_id(name: &str) -> ResourceId {
        ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}")).unwrap()
    }

    fn point(
        vm: &str,
        coll: &str,
        name: &str,
        created: OffsetDateTime,
        status: PointStatus,
        source: Option<&ResourceId>,
    ) -> PointSummary {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/{coll}/restorePoints/{name}"
        ))
        .unwrap();
        let _ = vm;
        PointSummary {
            id,
            name: name.into(),
            created: Some(created),
            status,
            source: source.cloned(),
        }
    }

    fn coverage(
        name: &str,
        tags: &[(&str, &str)],
        local: Vec<PointSummary>,
        copies: Vec<PointSummary>,
    ) -> VmCoverage {
        let id = vm_id(name);
        let vm = VirtualMachine {
            id: Some(id.to_string()),
            name: Some(name.into()),
            location: Some("eastus".into()),
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        let coll = |role, region: &str, points| CollectionView {
            id: id.clone(),
            region: region.into(),
            role,
            points,
        };
        VmCoverage {
            id: id.clone(),
            location: "eastus".into(),
            vm,
            collections: vec![
                coll(CollectionRole::Local, "eastus", local),
                coll(CollectionRole::Copy, "westus2", copies),
            ],
            azure_backup: Vec::new(),
        }
    }

    fn policy() -> Policy {
        Policy::from_json_str(&format!(
            r#"{{"rules": [{{"name": "prod", "targets": {{"subscriptions": ["{SUB}"], "tags": {{"backup": "on"}}}},
                "retention": {{"keepLast": 2, "floor": 1}},
                "copies": [{{"region": "westus2", "retention": {{"keepLast": 1}}}}]}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn plan_shows_creates_copies_deletes_and_waits_with_reasons() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let at = datetime!(2026-11-25 12:05 UTC);
        let t = |h: i64| datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(h);
        // vm-a: four settled points (00, 04, 08 and 00 the day before is the baseline), the 08:00
        // copy still replicating → its source is held; retention keeps 2 newest + baseline.
        let a_local = vec![
            point(
                "vm-a",
                "rpc-vm-a",
                "rp-20261124T2000Z",
                t(-4),
                PointStatus::Settled,
                None,
            ),
            point(
                "vm-a",
                "rpc-vm-a",
                "rp-20261125T0000Z",
                t(0),
                PointStatus::Settled,
                None,
            ),
            point(
                "vm-a",
                "rpc-vm-a",
                "rp-20261125T0400Z",
                t(4),
                PointStatus::Settled,
                None,
            ),
            point(
                "vm-a",
                "rpc-vm-a",
                "rp-20261125T0800Z",
                t(8),
                PointStatus::Settled,
                None,
            ),
        ];
        // Copies: the baseline and 00:00 are copied; 04:00's copy is still replicating; 08:00
        // has no copy yet (held: "copy to westus2 not started yet").
        let a_copies = vec![
            point(
                "vm-a",
                "rpc-vm-a-westus2",
                "rp-20261124T2000Z",
                t(-3),
                PointStatus::Settled,
                Some(&a_local[0].id),
            ),
            point(
                "vm-a",
                "rpc-vm-a-westus2",
                "rp-20261125T0000Z",
                t(1),
                PointStatus::Settled,
                Some(&a_local[1].id),
            ),
            point(
                "vm-a",
                "rpc-vm-a-westus2",
                "rp-20261125T0400Z",
                t(5),
                PointStatus::InProgress { percent: Some(40) },
                Some(&a_local[2].id),
            ),
        ];
        // vm-b: a crash-free app-consistent point made 1 h ago (manual) → spacing wait.
        let b_local = vec![point(
            "vm-b",
            "rpc-vm-b",
            "manual-1",
            datetime!(2026-11-25 11:05 UTC),
            PointStatus::Settled,
            None,
        )];
        let inv = Inventory {
            vms: vec![
                coverage("vm-a", &[("backup", "on")], a_local, a_copies),
                coverage("vm-b", &[("backup", "on")], b_local, vec![]),
                coverage("vm-c", &[], vec![], vec![]),
            ],
        };
        let rows = plan(&inv, &policy(), &timer, at, &HashMap::new());
        let find = |vm: &str, action: Action| {
            rows.iter()
                .filter(move |r| r.vm == vm && r.action == action)
                .collect::<Vec<_>>()
        };

        let create = find("vm-a", Action::Create);
        assert_eq!(create.len(), 1, "{rows:#?}");
        assert_eq!(create[0].target, "rp-20261125T1200Z");
        assert!(create[0].reason.contains("ApplicationConsistent"));

        let wait = find("vm-a", Action::Wait);
        assert_eq!(wait.len(), 1, "{rows:#?}");
        assert_eq!(wait[0].region, "westus2");
        assert!(
            wait[0].reason.contains(
                "copy to westus2 waits: previous copy rp-20261125T0400Z still replicating (40%)"
            ),
            "{}",
            wait[0].reason
        );

        // keepLast 2 keeps 04:00 and 08:00, the baseline keeps 20:00; 00:00 goes.
        let deletes = find("vm-a", Action::Delete);
        assert_eq!(deletes.len(), 1, "{rows:#?}");
        assert_eq!(deletes[0].target, "rp-20261125T0000Z");
        assert_eq!(deletes[0].region, "eastus");

        let spacing = find("vm-b", Action::Wait);
        assert!(
            spacing.iter().any(|r| r
                .reason
                .starts_with("spacing: manual-1 is 60 min old; Azure requires 3 h")),
            "{rows:#?}"
        );
        assert!(find("vm-b", Action::Create).is_empty());
        let b_copy = find("vm-b", Action::Copy);
        assert_eq!(b_copy.len(), 1, "{rows:#?}");
        assert_eq!(b_copy[0].target, "manual-1");

        assert_eq!(
            find("vm-c", Action::Skip)[0].reason,
            "not selected by any rule"
        );
        let table = render(&rows);
        assert!(table.contains("copy to westus2 waits"), "{table}");
    }

    /// Regression: one subscription answering 404 aborted the whole plan; and without `--at` the
    /// plan used this machine's clock, not ARM's.
    #[tokio::test]
    async fn a_missing_subscription_is_skipped_and_arms_clock_is_the_moment() {
        use crate::testing::{op, FakeArm};
        const GONE: &str = "00000000-0000-0000-0000-00000000dead";
        let arm = FakeArm::new();
        let vm = coverage("vm-a", &[("backup", "on")], vec![], vec![]).vm;
        arm.add_vm(vm);
        arm.refuse_next(
            op::LIST_VMS,
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{GONE}' could not be found."),
        );
        let server = datetime!(2026-11-25 12:05 UTC);
        arm.report_rate_limits(crate::azure::RateLimits {
            date: Some(server),
            ..Default::default()
        });
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();

        let planned = plan_with(
            &arm,
            &policy(),
            &timer,
            None,
            &[GONE.to_string(), SUB.to_string()],
            &Pacing::default(),
        )
        .await
        .expect("the other subscription is planned");

        assert_eq!(planned.skipped.len(), 1, "{:?}", planned.skipped);
        assert!(
            planned.skipped[0].contains(GONE)
                && planned.skipped[0].contains("SubscriptionNotFound")
        );
        assert_eq!(planned.at, server, "ARM's Date, not this machine's clock");
        let create = planned
            .rows
            .iter()
            .find(|r| r.action == Action::Create)
            .unwrap();
        assert_eq!(create.target, "rp-20261125T1200Z", "{:#?}", planned.rows);

        // Every subscription failing is still an error.
        arm.refuse_next(op::LIST_VMS, 404, "SubscriptionNotFound", "gone");
        assert!(plan_with(
            &arm,
            &policy(),
            &timer,
            None,
            &[GONE.to_string()],
            &Pacing::default(),
        )
        .await
        .is_err());
    }

    #[test]
    fn held_source_survives_until_its_copy_settles() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let t = |h: i64| datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(h);
        let local: Vec<_> = (0..5)
            .map(|i| {
                point(
                    "vm-a",
                    "rpc-vm-a",
                    &format!("rp-{i}"),
                    t(i * 4),
                    PointStatus::Settled,
                    None,
                )
            })
            .collect();
        // The copy of rp-1 (an old point) is still replicating: rp-1 must not be deleted. rp-4
        // has no copy yet: held too. rp-0, rp-2 and rp-3 are copied.
        let copy = |i: usize, status| {
            point(
                "vm-a",
                "rpc-vm-a-westus2",
                &format!("rp-{i}"),
                t(i as i64 * 4 + 1),
                status,
                Some(&local[i].id),
            )
        };
        let copies = vec![
            copy(0, PointStatus::Settled),
            copy(1, PointStatus::InProgress { percent: Some(90) }),
            copy(2, PointStatus::Settled),
            copy(3, PointStatus::Settled),
        ];
        let inv = Inventory {
            vms: vec![coverage("vm-a", &[("backup", "on")], local, copies)],
        };
        let rows = plan(&inv, &policy(), &timer, t(17), &HashMap::new());
        let deleted: Vec<&str> = rows
            .iter()
            .filter(|r| r.action == Action::Delete && r.region == "eastus")
            .map(|r| r.target.as_str())
            .collect();
        assert_eq!(deleted, vec!["rp-2"], "{rows:#?}");
    }

    fn keep_policy(copy_region: &str) -> Policy {
        Policy::from_json_str(&format!(
            r#"{{"rules": [{{"name": "prod", "targets": {{"subscriptions": ["{SUB}"], "tags": {{"backup": "on"}}}},
                "retention": {{"keepLast": 3}},
                "copies": [{{"region": "{copy_region}", "retention": {{"keepLast": 2}}}}]}}]}}"#
        ))
        .unwrap()
    }

    /// Six settled local points 4 h apart (rp-…0000Z to rp-…2000Z), as `vmrp plan` sees them.
    fn six_local() -> Vec<PointSummary> {
        (0..6)
            .map(|i| {
                point(
                    "vm-a",
                    "rpc-vm-a",
                    &format!("rp-20261125T{:02}00Z", i * 4),
                    datetime!(2026-11-25 00:00:30 UTC) + Duration::hours(i * 4),
                    PointStatus::Settled,
                    None,
                )
            })
            .collect()
    }

    fn local_deletes(rows: &[PlanRow]) -> Vec<&str> {
        rows.iter()
            .filter(|r| r.action == Action::Delete && r.region == "eastus")
            .map(|r| r.target.as_str())
            .collect()
    }

    /// Regression: copies keep 2 (+ baseline) in westus2; the local points whose copies
    /// westus2 has since pruned are "copied, since pruned", not held as "not started yet".
    #[test]
    fn plan_does_not_hold_local_points_whose_copies_were_pruned() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let local = six_local();
        let copies = [0, 4, 5]
            .iter()
            .map(|&i| {
                point(
                    "vm-a",
                    "rpc-vm-a-westus2",
                    &format!("rp-20261125T{:02}00Z", i * 4),
                    datetime!(2026-11-25 00:30 UTC) + Duration::hours(i as i64 * 4),
                    PointStatus::Settled,
                    Some(&local[i].id),
                )
            })
            .collect();
        let inv = Inventory {
            vms: vec![coverage("vm-a", &[("backup", "on")], local, copies)],
        };
        let at = datetime!(2026-11-25 21:00 UTC);
        let rows = plan(&inv, &keep_policy("westus2"), &timer, at, &HashMap::new());
        assert_eq!(
            local_deletes(&rows),
            vec!["rp-20261125T0400Z", "rp-20261125T0800Z"],
            "{rows:#?}"
        );
    }

    /// Regression: a copy entry naming the VM's own region: no copy is planned, the row
    /// says why, and local retention is not held for it.
    #[test]
    fn plan_drops_a_copy_to_the_vms_own_region() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let inv = Inventory {
            vms: vec![coverage(
                "vm-a",
                &[("backup", "on")],
                six_local(),
                Vec::new(),
            )],
        };
        let at = datetime!(2026-11-25 21:00 UTC);
        let rows = plan(&inv, &keep_policy("East US"), &timer, at, &HashMap::new());
        assert_eq!(
            local_deletes(&rows),
            vec!["rp-20261125T0400Z", "rp-20261125T0800Z"],
            "{rows:#?}"
        );
        assert!(
            rows.iter().any(|r| r.action == Action::Skip
                && r.region == "eastus"
                && r.reason.contains("own region")),
            "{rows:#?}"
        );
        assert!(!rows.iter().any(|r| r.action == Action::Copy), "{rows:#?}");
    }

    /// `vmrp plan` shows the VMs the timer would leave out of its tick, with the timer's own
    /// reason (the handler's planner, `plan::plan_tick_from`), as waits instead of creates.
    #[test]
    fn plan_shows_the_vms_that_do_not_fit_before_the_cut_off() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        // Tick 12:00, application-consistent: superseded from 13:00; sends start at 12:05.
        let at = datetime!(2026-11-25 12:05 UTC);
        let inv = Inventory {
            vms: (0..25)
                .map(|i| coverage(&format!("vm{i:02}"), &[("backup", "on")], vec![], vec![]))
                .collect(),
        };
        // Two writes per VM (its point, its copy's collection... at one write per 100 s): the
        // k-th create goes at +(2k-1)·100 s, so 16 start before 13:00.
        let pacing = Pacing {
            burst: 1,
            refill_per_sec: 0.01,
            writes_per_create: 1,
            reads_per_create: 0,
            reads_per_copy: 0,
            reserve: 0.0,
            window_margin: std::time::Duration::ZERO,
            ..Pacing::default()
        };
        let rows = plan_paced(&inv, &policy(), &timer, at, &HashMap::new(), &pacing);
        let local = |action: Action| -> Vec<String> {
            rows.iter()
                .filter(|r| r.region == "eastus" && r.action == action)
                .map(|r| r.vm.clone())
                .collect()
        };
        assert_eq!(local(Action::Create).len(), 16, "{rows:#?}");
        let waits = local(Action::Wait);
        assert_eq!(waits.len(), 9);
        for r in rows.iter().filter(|r| r.action == Action::Wait) {
            assert!(
                r.reason.contains("does not fit this tick")
                    && r.reason.contains("2026-11-25T13:00:00Z"),
                "{}",
                r.reason
            );
        }
        // The same VMs the timer's planner leaves out.
        let tick = datetime!(2026-11-25 12:00 UTC);
        let p = policy();
        let targets: Vec<PlanTarget<'_>> = inv
            .vms
            .iter()
            .map(|vm| PlanTarget {
                vm: vm.id.clone(),
                rule: &p.rules[0],
                listed: None,
            })
            .collect();
        let mut timer_left: Vec<String> =
            crate::plan::plan_tick_from(tick, at, &timer, &targets, &pacing)
                .left_out()
                .map(|i| i.vm.name().unwrap().to_string())
                .collect();
        let mut shown = waits.clone();
        timer_left.sort();
        shown.sort();
        assert_eq!(shown, timer_left);
        // At the default pacing all 25 fit.
        let rows = plan(&inv, &policy(), &timer, at, &HashMap::new());
        assert_eq!(
            rows.iter()
                .filter(|r| r.action == Action::Create && r.region == "eastus")
                .count(),
            25
        );
    }
}
