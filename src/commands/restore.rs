//! `vmrp restore`: a VM's disks (and optionally the VM) back from one of its restore points, in
//! its own region or from a copy in another region. Authenticates like `plan` and `status`,
//! but writes: it runs as the operator (docs/restore.md lists the permissions of each mode).
//!
//! Safe to re-run: every name is derived from the disk and the point, an existing disk made from
//! the same disk restore point is adopted (a disk of that name from anything else is an error,
//! never overwritten), a VM already created from the restored OS disk is adopted, and an
//! in-place swap already done is not redone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::azure::client::{ArmClient, ArmOperation, DEFAULT_ENDPOINT, DISKS_API_VERSION};
use crate::azure::models::API_VERSION;
use crate::azure::ResourceId;
use crate::policy::regions::{canonical_region, same_region};
use crate::restore::{
    self, points_in_region, same_id, Call, CallKind, Mode, Options, PointFacts, Selector,
};

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The VM whose restore point to use (its full resource id; it may be gone).
    #[arg(long, value_name = "ID")]
    pub vm: String,
    /// Use the point with this name (default: the newest settled one).
    #[arg(long, value_name = "NAME", conflicts_with = "at")]
    pub point: Option<String>,
    /// Use the newest settled point created at or before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Restore from the copy in this region (disaster recovery); default the VM's own region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Resource group (in the VM's subscription) that receives the disks, NIC and VM.
    #[arg(long, value_name = "NAME")]
    pub resource_group: String,
    /// Print every ARM call the restore would make, and write nothing.
    #[arg(long)]
    pub plan: bool,
    /// Also create a VM with this name from the restored disks (no public IP).
    #[arg(
        long,
        value_name = "NAME",
        requires = "subnet",
        conflicts_with = "in_place"
    )]
    pub new_vm: Option<String>,
    /// The subnet (resource id) of the new VM's network interface.
    #[arg(long, value_name = "ID", requires = "new_vm")]
    pub subnet: Option<String>,
    /// Restore into the VM itself: deallocate, swap the OS disk, replace the data disks, start.
    #[arg(long)]
    pub in_place: bool,
    /// Confirms `--in-place` (it stops the VM).
    #[arg(long)]
    pub yes: bool,
    /// With `--in-place`: delete the replaced disks afterwards (default: keep them).
    #[arg(long, requires = "in_place")]
    pub delete_originals: bool,
    /// SKU of the restored disks (default: each source disk's).
    #[arg(long, value_name = "SKU")]
    pub sku: Option<String>,
    /// Availability zone of the restored disks (default: the VM's, in its own region).
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Disk encryption set for the restored disks (required for a customer-managed-key disk
    /// restored in a copy region: the source's set lives in the source region).
    #[arg(long, value_name = "ID")]
    pub disk_encryption_set: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// ARM endpoint: the public cloud, a sovereign cloud, or `vmrp emulate`'s `arm` URL.
    #[arg(long, env = "VMRP_ARM_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub arm_endpoint: String,
    /// Token audience for ARM; default the endpoint's origin.
    #[arg(long, env = "VMRP_ARM_AUDIENCE")]
    pub arm_audience: Option<String>,
}

/// What a restore did (or, with `--plan`, would do).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub vm: String,
    pub point: String,
    pub region: String,
    pub copy: bool,
    pub planned: bool,
    pub disks: Vec<RestoredDisk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_vm: Option<String>,
    pub calls: Vec<Call>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredDisk {
    pub id: String,
    pub source: String,
    /// True when a previous run had created it already.
    pub adopted: bool,
}

fn failed(what: &str) -> impl Fn(crate::azure::ArmError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

pub async fn run(args: RestoreArgs) -> Result<std::process::ExitCode, String> {
    let vm_id = ResourceId::parse(&args.vm)
        .ok()
        .filter(|id| id.is_type("Microsoft.Compute/virtualMachines"))
        .ok_or_else(|| format!("--vm {:?}: expected a virtual machine resource id", args.vm))?;
    if args.in_place && !args.yes && !args.plan {
        return Err(format!(
            "--in-place deallocates {} and swaps its disks: pass --yes to confirm (or --plan to see the calls)",
            vm_id.name().unwrap_or_default()
        ));
    }
    let selector = match (&args.point, super::parse_at(args.at.as_deref())?) {
        (Some(p), _) => Selector::Named(p.clone()),
        (None, Some(t)) => Selector::AtOrBefore(t),
        (None, None) => Selector::Newest,
    };
    let client = super::arm_client(&args.arm_endpoint, args.arm_audience.clone())?;
    let vm = client
        .get_json(ArmOperation::GetVm, &vm_id, API_VERSION)
        .await
        .map_err(failed("reading the VM"))?;
    let vm_region = vm
        .as_ref()
        .and_then(|v| v["location"].as_str())
        .map(canonical_region);
    let region = match (&args.region, &vm_region) {
        (Some(r), _) => canonical_region(r),
        (None, Some(r)) => r.clone(),
        (None, None) => {
            return Err(format!(
                "VM {vm_id} is not found: pass --region with the region of a copy to restore from"
            ))
        }
    };
    if args.in_place && vm.is_none() {
        return Err(format!("--in-place: VM {vm_id} is not found"));
    }

    let points = points_in_region(&client, &vm_id, &region).await?;
    let facts: Vec<PointFacts> = points
        .iter()
        .map(|p| PointFacts {
            name: p.name.clone().unwrap_or_default(),
            created: p.time_created(),
            // A copy is a point made from another (`sourceRestorePoint`): its `Succeeded` only
            // means the copy started.
            state: restore::point_state(p, p.source_restore_point().is_some()),
        })
        .collect();
    let chosen = restore::choose(&facts, &selector, &region)?;
    let point = &points[chosen];
    let copy = point.source_restore_point().is_some()
        || vm_region
            .as_deref()
            .is_none_or(|r| !same_region(r, &region));
    let point_name = facts[chosen].name.clone();
    let disks = restore::disks_of(point);
    let source_zones: Vec<String> = if copy {
        Vec::new()
    } else {
        vm.as_ref()
            .and_then(|v| v["zones"].as_array())
            .map(|z| {
                z.iter()
                    .filter_map(|z| z.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mode = match (&args.new_vm, &args.subnet, args.in_place) {
        (Some(name), Some(subnet), _) => Mode::NewVm {
            name: name.clone(),
            subnet: subnet.clone(),
        },
        (_, _, true) => Mode::InPlace {
            vm: vm.clone().unwrap_or_default(),
            delete_originals: args.delete_originals,
        },
        _ => Mode::Disks,
    };
    let options = Options {
        subscription: vm_id.subscription().to_string(),
        resource_group: args.resource_group.clone(),
        region: region.clone(),
        copy,
        point_name: point_name.clone(),
        sku: args.sku.clone(),
        zone: args.zone.clone(),
        source_zones,
        disk_encryption_set: args.disk_encryption_set.clone(),
        source_metadata: point
            .properties
            .as_ref()
            .and_then(|p| p.source_metadata.clone())
            .unwrap_or_default(),
        mode,
    };
    let calls = restore::plan(&disks, &options)?;
    let outcome = Outcome {
        vm: vm_id.to_string(),
        point: point.id.clone().unwrap_or_default(),
        region,
        copy,
        planned: args.plan,
        disks: Vec::new(),
        new_vm: None,
        calls,
    };
    if args.plan {
        print_plan(&outcome, &vm_id, &point_name, args.json)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    apply(&args, &client, outcome, &vm_id, &point_name).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--plan`: the calls a restore would make, written nowhere.
fn print_plan(
    outcome: &Outcome,
    vm_id: &ResourceId,
    point_name: &str,
    json: bool,
) -> Result<(), String> {
    if json {
        print_json(outcome)?;
    } else {
        println!(
            "restore of {} from {} ({}{}): {} ARM calls, nothing written",
            vm_id.name().unwrap_or_default(),
            point_name,
            outcome.region,
            if outcome.copy { ", copy" } else { "" },
            outcome.calls.len()
        );
        for c in &outcome.calls {
            println!("  {}", c.line());
        }
    }
    Ok(())
}

/// Makes the restore's calls in order (adopting what a previous run did), with a progress bar
/// on a terminal, and prints what it restored.
async fn apply(
    args: &RestoreArgs,
    client: &ArmClient,
    mut outcome: Outcome,
    vm_id: &ResourceId,
    point_name: &str,
) -> Result<(), String> {
    let calls = outcome.calls.clone();
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(calls.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    };
    let mut swapped = false;
    for call in &calls {
        bar.set_message(format!("{:?} {}", call.kind, restore::short(&call.id)));
        execute(client, call, &mut outcome, &mut swapped).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.json {
        print_json(&outcome)?;
    } else {
        for d in &outcome.disks {
            println!(
                "{} ({})",
                d.id,
                if d.adopted { "adopted" } else { "created" }
            );
        }
        if let Some(v) = &outcome.new_vm {
            println!("{v} (VM)");
        }
        if args.in_place {
            println!("{} restored in place from {point_name}", vm_id);
        }
    }
    Ok(())
}

fn print_json(outcome: &Outcome) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(outcome).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn parse(id: &str) -> Result<ResourceId, String> {
    ResourceId::parse(id).map_err(|e| format!("{id}: {e}"))
}

/// Sends one call, adopting what a previous run already did.
pub async fn execute(
    client: &ArmClient,
    call: &Call,
    outcome: &mut Outcome,
    swapped: &mut bool,
) -> Result<(), String> {
    let id = parse(&call.id)?;
    let body = call.body.clone().unwrap_or(Value::Null);
    match call.kind {
        CallKind::CreateDisk => {
            let source = call.source.clone().unwrap_or_default();
            let existing = client
                .get_json(ArmOperation::GetDisk, &id, DISKS_API_VERSION)
                .await
                .map_err(failed("reading a disk"))?;
            let adopted = match existing {
                Some(d) if restore::disk_matches(&d, &source) => true,
                Some(d) => {
                    return Err(format!(
                        "disk {id} exists and was not made from {source} (its source: {}): \
                        remove it or restore into another --resource-group",
                        d["properties"]["creationData"]["sourceResourceId"]
                            .as_str()
                            .unwrap_or("none")
                    ))
                }
                None => {
                    client
                        .put_json(ArmOperation::PutDisk, &id, DISKS_API_VERSION, &body)
                        .await
                        .map_err(failed("creating a disk from its disk restore point"))?;
                    false
                }
            };
            outcome.disks.push(RestoredDisk {
                id: id.to_string(),
                source,
                adopted,
            });
        }
        CallKind::CreateNic => {
            client
                .put_json(
                    ArmOperation::PutNic,
                    &id,
                    restore::NETWORK_API_VERSION,
                    &body,
                )
                .await
                .map_err(failed("creating the network interface"))?;
        }
        CallKind::CreateVm => {
            let os = body["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
                .as_str()
                .unwrap_or_default();
            match client
                .get_json(ArmOperation::GetVm, &id, API_VERSION)
                .await
                .map_err(failed("reading the new VM"))?
            {
                Some(vm) => {
                    let has = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
                        .as_str()
                        .is_some_and(|d| same_id(d, os));
                    if !has {
                        return Err(format!(
                            "VM {id} exists and does not run on the restored OS disk {os}: choose another --new-vm name"
                        ));
                    }
                }
                None => {
                    client
                        .put_json(ArmOperation::PutVm, &id, API_VERSION, &body)
                        .await
                        .map_err(failed("creating the VM"))?;
                }
            }
            outcome.new_vm = Some(id.to_string());
        }
        CallKind::Deallocate => {
            // A previous run may have swapped already: then the VM only needs starting.
            let vm = client
                .get_json(ArmOperation::GetVm, &id, API_VERSION)
                .await
                .map_err(failed("reading the VM"))?
                .ok_or_else(|| format!("VM {id} is gone"))?;
            let target = calls_os_disk(outcome);
            *swapped = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
                .as_str()
                .is_some_and(|d| target.as_deref().is_some_and(|t| same_id(d, t)));
            if !*swapped {
                client
                    .post_action(ArmOperation::DeallocateVm, &id, "deallocate")
                    .await
                    .map_err(failed("deallocating the VM"))?;
            }
        }
        CallKind::SwapDisks => {
            if !*swapped {
                client
                    .put_json(ArmOperation::PutVm, &id, API_VERSION, &body)
                    .await
                    .map_err(failed("swapping the VM's disks"))?;
            }
        }
        CallKind::Start => {
            client
                .post_action(ArmOperation::StartVm, &id, "start")
                .await
                .map_err(failed("starting the VM"))?;
        }
        CallKind::DeleteDisk => {
            client
                .delete_disk(&id)
                .await
                .map_err(failed("deleting a replaced disk"))?;
        }
    }
    Ok(())
}

/// The restored OS disk: the swap call's `source`.
fn calls_os_disk(outcome: &Outcome) -> Option<String> {
    outcome
        .calls
        .iter()
        .find(|c| c.kind == CallKind::SwapDisks)
        .and_then(|c| c.source.clone())
}
