//! Restore planning: given a VM's restore points and the operator's options, which point to use
//! and the ordered list of ARM calls that brings its disks (and optionally a VM) back. Pure:
//! `vmrp restore` (src/commands/restore.rs) reads ARM, asks these functions, and sends the
//! calls; `--plan` prints them instead.
//!
//! The calls follow Microsoft's documented restore path: a managed disk per disk restore point
//! (`Disks - Create Or Update` with `creationData.createOption: Restore` and the disk restore
//! point as `sourceResourceId`, learn.microsoft.com `virtual-machines/manage-restore-points`
//! "Create a disk using disk restore points"), then a VM that attaches them ("Restore a VM with a
//! restore point": create a new VM and attach the restored disks), or, in place, what
//! Microsoft's sample `Restore-VMFromRestorePoint.ps1` (Azure/basic-data-protection-for-Azure-VMs)
//! does: deallocate, swap the OS disk, replace the data disks, start. Azure would swap the OS
//! disk of a running VM too (learn.microsoft.com `virtual-machines/windows/os-disk-swap`: "The
//! VM does not need to be stopped\deallocated"); vmrp deallocates first, as the sample and that
//! page's own example do, so the swap and the data disk changes land on a stopped guest.

use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::azure::client::DISKS_API_VERSION;
use crate::azure::models::{RestorePoint, API_VERSION};
use crate::azure::{Arm, ResourceId};
use crate::policy::regions::same_region;

/// `Microsoft.Network` api-version of the one NIC a new VM gets.
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// Azure's limit on a managed disk name.
pub const MAX_DISK_NAME: usize = 80;

/// Which point the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest settled point.
    Newest,
    /// The point with this name (it must be settled).
    Named(String),
    /// The newest settled point created at or before this moment.
    AtOrBefore(OffsetDateTime),
}

/// How a point stands, as far as restoring from it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum PointState {
    Settled,
    Creating,
    Failed,
    /// A copy whose disks are not all replicated (lowest percent when known).
    Replicating {
        percent: Option<i32>,
    },
    Deleting,
}

/// One point of the VM in the target region.
#[derive(Debug, Clone, PartialEq)]
pub struct PointFacts {
    pub name: String,
    pub created: Option<OffsetDateTime>,
    pub state: PointState,
}

/// The state of a point read with `$expand=instanceView`; `copy` when it is a cross-region copy
/// (whose `Succeeded` only means the copy started: settled is every disk at 100 %).
pub fn point_state(point: &RestorePoint, copy: bool) -> PointState {
    let state = point
        .properties
        .as_ref()
        .and_then(|p| p.provisioning_state.as_deref())
        .unwrap_or("");
    match state.to_ascii_lowercase().as_str() {
        "succeeded" if copy => match crate::inventory::copy_status(point) {
            crate::inventory::PointStatus::Settled => PointState::Settled,
            crate::inventory::PointStatus::InProgress { percent } => {
                PointState::Replicating { percent }
            }
            crate::inventory::PointStatus::Failed => PointState::Failed,
        },
        "succeeded" => PointState::Settled,
        "failed" | "canceled" => PointState::Failed,
        "deleting" => PointState::Deleting,
        _ => PointState::Creating,
    }
}

fn why_not(name: &str, region: &str, state: &PointState) -> String {
    match state {
        PointState::Settled => format!("{name} is settled"),
        PointState::Creating => format!("point {name} in {region} is not settled yet (still being created)"),
        PointState::Failed => format!("point {name} in {region} failed: it cannot be restored"),
        PointState::Deleting => format!("point {name} in {region} is being deleted"),
        PointState::Replicating { percent } => format!(
            "the copy {name} in {region} is not fully replicated yet ({}): a copy can be restored once every disk reached 100%",
            percent.map_or("percent unknown".into(), |p| format!("{p}%"))
        ),
    }
}

/// Picks the point to restore: its index in `points`, or a refusal that says why.
pub fn choose(points: &[PointFacts], selector: &Selector, region: &str) -> Result<usize, String> {
    let newest_settled = |limit: Option<OffsetDateTime>| {
        points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PointState::Settled)
            .filter(|(_, p)| match (limit, p.created) {
                (Some(l), Some(c)) => c <= l,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .max_by_key(|(_, p)| (p.created, p.name.clone()))
            .map(|(i, _)| i)
    };
    match selector {
        Selector::Named(name) => {
            let (i, p) = points
                .iter()
                .enumerate()
                .find(|(_, p)| p.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("no point named {name} in {region}"))?;
            if p.state == PointState::Settled {
                Ok(i)
            } else {
                Err(why_not(&p.name, region, &p.state))
            }
        }
        Selector::Newest => newest_settled(None).ok_or_else(|| {
            let mut msg = format!("no settled point in {region}");
            if let Some(p) = points.iter().max_by_key(|p| p.created) {
                msg.push_str(&format!(
                    ": newest is {}",
                    why_not(&p.name, region, &p.state)
                ));
            }
            msg
        }),
        Selector::AtOrBefore(t) => newest_settled(Some(*t)).ok_or_else(|| {
            format!(
                "no settled point in {region} created at or before {}",
                crate::schedule::rfc3339(*t)
            )
        }),
    }
}

/// One disk of the chosen point, from its `sourceMetadata` and instance view.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskSource {
    /// The source disk's name.
    pub name: String,
    /// `None` for the OS disk.
    pub lun: Option<i64>,
    pub disk_restore_point: String,
    pub source_disk: Option<String>,
    pub sku: Option<String>,
    pub size_gb: Option<i64>,
    pub disk_encryption_set: Option<String>,
    pub os_type: Option<String>,
    /// `snapshotAccessState` when the instance view has it.
    pub access_state: Option<String>,
}

/// The disks of a point read with its instance view (OS disk first, then by lun).
pub fn disks_of(point: &RestorePoint) -> Vec<DiskSource> {
    let props = point.properties.as_ref();
    let meta = props
        .and_then(|p| p.source_metadata.clone())
        .unwrap_or(Value::Null);
    let views: Vec<(String, Option<String>)> = props
        .and_then(|p| p.instance_view.as_ref())
        .and_then(|iv| iv.disk_restore_points.as_ref())
        .map(|d| {
            d.iter()
                .filter_map(|d| Some((d.id.clone()?, d.snapshot_access_state.clone())))
                .collect()
        })
        .unwrap_or_default();
    let sp = &meta["storageProfile"];
    let entries = std::iter::once((&sp["osDisk"], true)).chain(
        sp["dataDisks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d, false)),
    );
    let mut out = Vec::new();
    for (d, os) in entries {
        let Some(rp) = d["diskRestorePoint"]["id"].as_str() else {
            continue;
        };
        let md = &d["managedDisk"];
        out.push(DiskSource {
            name: d["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| rp.rsplit('/').next().unwrap_or("disk").to_string()),
            lun: if os { None } else { d["lun"].as_i64() },
            disk_restore_point: rp.to_string(),
            source_disk: md["id"].as_str().map(str::to_string),
            sku: md["storageAccountType"].as_str().map(str::to_string),
            size_gb: d["diskSizeGB"].as_i64(),
            disk_encryption_set: md["diskEncryptionSet"]["id"].as_str().map(str::to_string),
            os_type: if os {
                d["osType"].as_str().map(str::to_string)
            } else {
                None
            },
            access_state: views
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(rp))
                .and_then(|(_, s)| s.clone()),
        });
    }
    out
}

/// What the restore makes besides the disks.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Managed disks only.
    Disks,
    /// A new VM (no public IP) on `subnet`, from the restored disks.
    NewVm { name: String, subnet: String },
    /// The VM itself: deallocate, swap the OS disk, replace the data disks, start. `vm` is the
    /// VM's document as ARM returned it.
    InPlace { vm: Value, delete_originals: bool },
}

/// Everything the plan needs besides the point.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub subscription: String,
    pub resource_group: String,
    /// The point's region (where the disks must be created).
    pub region: String,
    /// True when the point is a cross-region copy.
    pub copy: bool,
    pub point_name: String,
    /// `--sku`; else each source disk's.
    pub sku: Option<String>,
    /// `--zone`; else `source_zones` (the VM's, for a restore in its own region).
    pub zone: Option<String>,
    pub source_zones: Vec<String>,
    /// `--disk-encryption-set`: the set to encrypt every restored disk with.
    pub disk_encryption_set: Option<String>,
    /// The point's `sourceMetadata` (size, OS type, security profile for a new VM).
    pub source_metadata: Value,
    pub mode: Mode,
}

/// One ARM call of a restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub kind: CallKind,
    pub method: &'static str,
    pub id: String,
    pub api_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// For a disk: the disk restore point it must come from (what a re-run checks to adopt it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CallKind {
    CreateDisk,
    CreateNic,
    CreateVm,
    Deallocate,
    SwapDisks,
    Start,
    DeleteDisk,
}

impl Call {
    /// `PUT /subscriptions/…/disks/x?api-version=…`
    pub fn line(&self) -> String {
        let suffix = match self.kind {
            CallKind::Deallocate => "/deallocate",
            CallKind::Start => "/start",
            _ => "",
        };
        format!(
            "{} {}{suffix}?api-version={}",
            self.method, self.id, self.api_version
        )
    }
}

/// `{disk}-rp-{point}`, kept to Azure's 80 characters (a long name keeps its start and gets a
/// short hash of the whole, so two long names never collide) and to the characters a disk name
/// may hold.
pub fn disk_name(disk: &str, point: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let full = format!("{}-rp-{}", clean(disk), clean(point));
    if full.len() <= MAX_DISK_NAME {
        return full;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(full.as_bytes());
    let tag: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = MAX_DISK_NAME - tag.len() - 1;
    // ASCII only after `clean`, so byte slicing is safe.
    format!("{}-{tag}", full[..keep].trim_end_matches(['-', '.']))
}

fn is_premium_v2_or_ultra(sku: Option<&str>) -> bool {
    sku.is_some_and(|s| {
        s.eq_ignore_ascii_case("PremiumV2_LRS") || s.eq_ignore_ascii_case("UltraSSD_LRS")
    })
}

/// Refusals that concern the disks of the chosen point.
pub fn check_disks(disks: &[DiskSource], options: &Options) -> Result<(), String> {
    if disks.is_empty() {
        return Err(format!(
            "point {} lists no disk restore points in its sourceMetadata",
            options.point_name
        ));
    }
    for d in disks {
        match d.access_state.as_deref() {
            Some(s)
                if s.eq_ignore_ascii_case("Available")
                    || s.eq_ignore_ascii_case("AvailableWithInstantAccess") => {}
            Some(s) => {
                return Err(format!(
                    "the snapshot of disk {} is '{s}', not 'Available' yet ({} snapshots are \
                    readable only once their background copy completes): retry later",
                    d.name,
                    d.sku.as_deref().unwrap_or("its")
                ))
            }
            // Absent: readable, except Premium SSD v2 and Ultra, whose snapshots must say so.
            None if is_premium_v2_or_ultra(d.sku.as_deref()) => {
                return Err(format!(
                    "disk {} is {}: its snapshot reports no snapshotAccessState, and such a \
                    snapshot is restorable only once it is 'Available'",
                    d.name,
                    d.sku.as_deref().unwrap_or_default()
                ))
            }
            None => {}
        }
        if options.copy && d.disk_encryption_set.is_some() && options.disk_encryption_set.is_none()
        {
            return Err(format!(
                "disk {} is encrypted with a customer-managed key (disk encryption set {}): a \
                restore in {} needs a disk encryption set in that region: pass \
                --disk-encryption-set ID",
                d.name,
                d.disk_encryption_set.as_deref().unwrap_or_default(),
                options.region
            ));
        }
    }
    Ok(())
}

fn disk_id(options: &Options, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
        options.subscription, options.resource_group
    )
}

/// The ordered calls of a restore, or a refusal.
pub fn plan(disks: &[DiskSource], options: &Options) -> Result<Vec<Call>, String> {
    check_disks(disks, options)?;
    let zones: Vec<String> = match &options.zone {
        Some(z) => vec![z.clone()],
        None => options.source_zones.clone(),
    };
    let mut calls = Vec::new();
    let mut restored: Vec<(Option<i64>, String)> = Vec::new();
    for d in disks {
        let call = create_disk_call(d, options, &zones);
        restored.push((d.lun, call.id.clone()));
        calls.push(call);
    }
    let os_disk = restored
        .iter()
        .find(|(l, _)| l.is_none())
        .map(|(_, id)| id.clone());
    let data: Vec<(i64, String)> = restored
        .iter()
        .filter_map(|(l, id)| l.map(|l| (l, id.clone())))
        .collect();
    match &options.mode {
        Mode::Disks => {}
        Mode::NewVm { name, subnet } => calls.extend(new_vm_calls(
            disks, options, &zones, os_disk, &data, name, subnet,
        )?),
        Mode::InPlace {
            vm,
            delete_originals,
        } => calls.extend(in_place_calls(
            options,
            vm,
            *delete_originals,
            os_disk,
            &data,
        )?),
    }
    Ok(calls)
}

/// The PUT of the managed disk restored from `d`'s disk restore point.
fn create_disk_call(d: &DiskSource, options: &Options, zones: &[String]) -> Call {
    let name = disk_name(&d.name, &options.point_name);
    let id = disk_id(options, &name);
    let mut body = json!({
        "location": options.region,
        "properties": {
            "creationData": {"createOption": "Restore", "sourceResourceId": d.disk_restore_point},
        }
    });
    if let Some(sku) = options.sku.as_ref().or(d.sku.as_ref()) {
        body["sku"] = json!({ "name": sku });
    }
    if !zones.is_empty() {
        body["zones"] = json!(zones);
    }
    if let Some(os) = &d.os_type {
        body["properties"]["osType"] = json!(os);
    }
    let des = options.disk_encryption_set.as_ref().or(if options.copy {
        None
    } else {
        d.disk_encryption_set.as_ref()
    });
    if let Some(des) = des {
        body["properties"]["encryption"] = json!({
            "type": "EncryptionAtRestWithCustomerKey",
            "diskEncryptionSetId": des,
        });
    }
    Call {
        kind: CallKind::CreateDisk,
        method: "PUT",
        id,
        api_version: DISKS_API_VERSION,
        body: Some(body),
        source: Some(d.disk_restore_point.clone()),
    }
}

/// The restored data disks, as a VM's `dataDisks` attaching them at their luns.
fn attach_data(data: &[(i64, String)]) -> Value {
    Value::Array(
        data.iter()
            .map(|(lun, id)| json!({"lun": lun, "createOption": "Attach", "managedDisk": {"id": id}}))
            .collect(),
    )
}

/// `--new-vm`: a NIC on `subnet` and a VM `name` attaching the restored disks, with the source
/// VM's hardware, security and diagnostics profiles.
fn new_vm_calls(
    disks: &[DiskSource],
    options: &Options,
    zones: &[String],
    os_disk: Option<String>,
    data: &[(i64, String)],
    name: &str,
    subnet: &str,
) -> Result<Vec<Call>, String> {
    let Some(os_disk) = os_disk else {
        return Err(
            "the point holds no OS disk (it was excluded): a VM cannot be created from it".into(),
        );
    };
    let nic = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{name}-nic",
        options.subscription, options.resource_group
    );
    let nic_call = Call {
        kind: CallKind::CreateNic,
        method: "PUT",
        id: nic.clone(),
        api_version: NETWORK_API_VERSION,
        // No public IP: the restored VM is reached through its network only.
        body: Some(json!({
            "location": options.region,
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
                "subnet": {"id": subnet}, "privateIPAllocationMethod": "Dynamic"}}]}
        })),
        source: None,
    };
    let meta = &options.source_metadata;
    let os_type = disks
        .iter()
        .find(|d| d.lun.is_none())
        .and_then(|d| d.os_type.clone())
        .or_else(|| {
            meta["storageProfile"]["osDisk"]["osType"]
                .as_str()
                .map(str::to_string)
        });
    let mut props = json!({
        "hardwareProfile": meta["hardwareProfile"],
        "storageProfile": {
            "osDisk": {"osType": os_type, "createOption": "Attach", "managedDisk": {"id": os_disk}},
            "dataDisks": attach_data(data),
        },
        "networkProfile": {"networkInterfaces": [{"id": nic, "properties": {"primary": true}}]},
    });
    for k in ["securityProfile", "diagnosticsProfile", "licenseType"] {
        if let Some(v) = meta.get(k).filter(|v| !v.is_null()) {
            props[k] = v.clone();
        }
    }
    let mut body = json!({"location": options.region, "properties": props});
    if !zones.is_empty() {
        body["zones"] = json!(zones);
    }
    let vm_call = Call {
        kind: CallKind::CreateVm,
        method: "PUT",
        id: format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{name}",
            options.subscription, options.resource_group
        ),
        api_version: API_VERSION,
        body: Some(body),
        source: None,
    };
    Ok(vec![nic_call, vm_call])
}

/// `--in-place`: deallocate the VM, swap in the restored OS disk and the data disks at the
/// restored luns, start it, and (with `delete_originals`) delete the disks it replaced.
fn in_place_calls(
    options: &Options,
    vm: &Value,
    delete_originals: bool,
    os_disk: Option<String>,
    data: &[(i64, String)],
) -> Result<Vec<Call>, String> {
    if options.copy {
        return Err("--in-place restores from the VM's own region only: a copy restores as disks or --new-vm".into());
    }
    let Some(os_disk) = os_disk else {
        return Err("the point holds no OS disk (it was excluded): nothing to swap".into());
    };
    let vm_id = vm["id"].as_str().unwrap_or_default().to_string();
    let mut doc = vm.clone();
    if let Some(p) = doc["properties"].as_object_mut() {
        // Read-only members go; ARM ignores them, and a replayed instance view is noise.
        for k in ["provisioningState", "instanceView", "timeCreated", "vmId"] {
            p.remove(k);
        }
    }
    let sp = &mut doc["properties"]["storageProfile"];
    let mut originals: Vec<String> = Vec::new();
    if let Some(old) = sp["osDisk"]["managedDisk"]["id"].as_str() {
        originals.push(old.to_string());
    }
    sp["osDisk"]["managedDisk"] = json!({ "id": os_disk });
    sp["osDisk"]["name"] = json!(os_disk.rsplit('/').next().unwrap_or_default());
    sp["osDisk"]["createOption"] = json!("Attach");
    // Data disks at a restored lun are replaced; the others (excluded from the point)
    // stay attached.
    let mut new_data: Vec<Value> = Vec::new();
    for d in sp["dataDisks"].as_array().cloned().unwrap_or_default() {
        let lun = d["lun"].as_i64();
        if data.iter().any(|(l, _)| Some(*l) == lun) {
            if let Some(old) = d["managedDisk"]["id"].as_str() {
                originals.push(old.to_string());
            }
        } else {
            new_data.push(d);
        }
    }
    if let Value::Array(a) = attach_data(data) {
        new_data.extend(a);
    }
    sp["dataDisks"] = Value::Array(new_data);
    let mut calls = vec![
        Call {
            kind: CallKind::Deallocate,
            method: "POST",
            id: vm_id.clone(),
            api_version: API_VERSION,
            body: None,
            source: None,
        },
        Call {
            kind: CallKind::SwapDisks,
            method: "PUT",
            id: vm_id.clone(),
            api_version: API_VERSION,
            body: Some(doc),
            source: Some(os_disk),
        },
        Call {
            kind: CallKind::Start,
            method: "POST",
            id: vm_id,
            api_version: API_VERSION,
            body: None,
            source: None,
        },
    ];
    if delete_originals {
        for id in originals {
            calls.push(Call {
                kind: CallKind::DeleteDisk,
                method: "DELETE",
                id,
                api_version: DISKS_API_VERSION,
                body: None,
                source: None,
            });
        }
    }
    Ok(calls)
}

/// Whether an existing disk was made from `source` (a re-run adopts it) or is another disk.
pub fn disk_matches(existing: &Value, source: &str) -> bool {
    let cd = &existing["properties"]["creationData"];
    cd["createOption"]
        .as_str()
        .is_some_and(|o| o.eq_ignore_ascii_case("Restore"))
        && cd["sourceResourceId"].as_str().is_some_and(|s| {
            s.trim_start_matches('/')
                .eq_ignore_ascii_case(source.trim_start_matches('/'))
        })
}

/// The resource group and name parts of an id we built (for messages).
pub fn short(id: &str) -> String {
    ResourceId::parse(id)
        .ok()
        .and_then(|r| r.name().map(str::to_string))
        .unwrap_or_else(|| id.to_string())
}

/// Every restore point of `vm` in `region`, read with its instance view: from the VM's own
/// collections (`source.id` = the VM) there, or from copies of them (`source.id` = one of its
/// collections). Works when the VM itself is gone.
pub async fn points_in_region(
    client: &dyn Arm,
    vm_id: &ResourceId,
    region: &str,
) -> Result<Vec<RestorePoint>, String> {
    let collections = client
        .list_collections(vm_id.subscription())
        .await
        .map_err(failed_to("listing restore point collections"))?;
    let local: Vec<String> = collections
        .iter()
        .filter(|c| c.source_id().is_some_and(|s| same_id(s, vm_id.as_str())))
        .filter_map(|c| c.id.clone())
        .collect();
    let mut points = Vec::new();
    for c in &collections {
        let Some(cid) = c.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
            continue;
        };
        let mine = local.iter().any(|l| same_id(l, cid.as_str()))
            || c.source_id()
                .is_some_and(|s| local.iter().any(|l| same_id(l, s)));
        let here = c
            .location
            .as_deref()
            .is_some_and(|l| same_region(l, region));
        if !mine || !here {
            continue;
        }
        let full = client
            .get_collection(&cid, true)
            .await
            .map_err(failed_to("reading a restore point collection"))?
            .unwrap_or_else(|| c.clone());
        for p in full.restore_points() {
            let Some(pid) = p.id.as_deref().and_then(|i| ResourceId::parse(i).ok()) else {
                continue;
            };
            if let Some(detail) = client
                .get_restore_point(&pid, true)
                .await
                .map_err(failed_to("reading a restore point"))?
            {
                points.push(detail);
            }
        }
    }
    Ok(points)
}

fn failed_to(what: &str) -> impl Fn(crate::azure::ArmError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The same ARM id, ignoring case and a leading slash.
pub fn same_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

#[cfg(test)]
mod tests;
