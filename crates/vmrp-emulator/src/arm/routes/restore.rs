//! What a restore writes: managed disks created from disk restore points (and their deletion),
//! VMs created from attached disks, the OS disk swap of an existing VM, deallocate / start, and
//! a minimal network interface (the one a new VM needs). Each rule cites its source in
//! docs/emulator-arm.md ("Restore").
//!
//! These operations complete synchronously (200/201, no `Azure-AsyncOperation`): the spec allows
//! 200 for each of them, and vmrp's client follows an operation URL only when one is sent.

use super::*;
use crate::arm::state::VmRecord;

/// The states of a disk restore point's snapshot in which it can be read (DiskRP's
/// `snapshotAccessState` enum): only these may source a disk.
const READABLE: &[&str] = &["Available", "AvailableWithInstantAccess"];

fn conflict(code: &str, message: impl Into<String>) -> Reply {
    Reply::error(409, code, message)
}

fn same_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

/// Splits `…/restorePoints/{p}/diskRestorePoints/{d}` into the point id and the disk point name.
fn disk_restore_point_parts(id: &str) -> Option<(ResourceId, String)> {
    let lower = id.to_ascii_lowercase();
    let at = lower.rfind("/diskrestorepoints/")?;
    let point = ResourceId::parse(&id[..at]).ok()?;
    let name = id[at + "/diskrestorepoints/".len()..].to_string();
    (point.is_type("Microsoft.Compute/restorePointCollections/restorePoints") && !name.is_empty())
        .then_some((point, name))
}

/// The `sourceMetadata` disk entry whose `diskRestorePoint.id` is `id`: (entry, is OS disk).
fn metadata_disk<'m>(meta: &'m Value, id: &str) -> Option<(&'m Value, bool)> {
    let sp = &meta["storageProfile"];
    let matches = |d: &Value| {
        d["diskRestorePoint"]["id"]
            .as_str()
            .is_some_and(|x| same_id(x, id))
    };
    if matches(&sp["osDisk"]) {
        return Some((&sp["osDisk"], true));
    }
    sp["dataDisks"]
        .as_array()?
        .iter()
        .find(|d| matches(d))
        .map(|d| (d, false))
}

/// `PUT …/disks/{name}` with `creationData.createOption: Restore` from a disk restore point.
pub fn put_disk(
    store: &mut Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
    body: &[u8],
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(location) = string_member(&obj, "location", "location").ok().flatten() else {
        return Reply::error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    let props = match object_member(&obj, "properties", "properties") {
        Ok(Some(p)) => p,
        Ok(None) => return invalid_content("properties", "an object"),
        Err(r) => return r,
    };
    let (option, source) = match creation_data(props) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let id = compute_id(sub, rg, "disks", name);
    if let Some(existing) = store.disks.get(&id) {
        return existing_disk_reply(existing, &option, &source);
    }
    if !option.eq_ignore_ascii_case("Restore") {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "createOption '{option}' is not served by the emulator: it creates disks from \
                disk restore points only (createOption 'Restore')."
            ),
            "creationData.createOption",
        );
    }
    let Some((point_id, _)) = disk_restore_point_parts(&source) else {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            format!("'{source}' is not a disk restore point id."),
            "creationData.sourceResourceId",
        );
    };
    let point = match restorable_point(store, ctx, &point_id, &source, &location) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (entry, is_os) =
        metadata_disk(&point.source_metadata, &source).unwrap_or((&Value::Null, false));
    let source_disk = entry["managedDisk"]["id"]
        .as_str()
        .and_then(|i| ResourceId::parse(i).ok())
        .and_then(|i| store.disks.get(&i));
    let size = entry["diskSizeGB"]
        .as_i64()
        .or_else(|| source_disk.and_then(|d| d["properties"]["diskSizeGB"].as_i64()));
    let source_sku = entry["managedDisk"]["storageAccountType"]
        .as_str()
        .map(str::to_string)
        .or_else(|| source_disk.and_then(|d| d["sku"]["name"].as_str().map(str::to_string)));
    let sku = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("sku"))
        .and_then(|(_, v)| v["name"].as_str().map(str::to_string))
        .or(source_sku);
    let asked_des = props
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("encryption"))
        .and_then(|(_, v)| v["diskEncryptionSetId"].as_str().map(str::to_string));
    let source_des = entry["managedDisk"]["diskEncryptionSet"]["id"]
        .as_str()
        .map(str::to_string);
    let des = asked_des.or(source_des);
    let mut doc = json!({
        "id": id.to_string(),
        "name": name,
        "type": "Microsoft.Compute/disks",
        "location": location,
        "properties": {
            "creationData": {"createOption": "Restore", "sourceResourceId": source},
            "diskState": "Unattached",
            "provisioningState": "Succeeded",
            "timeCreated": crate::arm::fleet::rfc3339(ctx.now),
            "uniqueId": det_uuid(ctx.seed, &format!("disk/{id}")),
            "encryption": match &des {
                Some(d) => json!({"type": "EncryptionAtRestWithCustomerKey", "diskEncryptionSetId": d}),
                None => json!({"type": "EncryptionAtRestWithPlatformKey"}),
            },
        }
    });
    if let Some(s) = size {
        doc["properties"]["diskSizeGB"] = json!(s);
    }
    if let Some(s) = sku {
        doc["sku"] = json!({"name": s});
    }
    if is_os {
        if let Some(os) = entry["osType"].as_str() {
            doc["properties"]["osType"] = json!(os);
        }
    }
    if let Some(z) = member(&obj, "zones") {
        doc["zones"] = z.clone();
    }
    if let Ok(Some(tags)) = parse_tags(&obj) {
        doc["tags"] = json!(tags);
    }
    store.disks.insert(id, doc.clone());
    Reply::json(200, doc).event("diskRestored".to_string())
}

/// `properties.creationData`: its `createOption` and `sourceResourceId` ("" when absent).
fn creation_data(props: &serde_json::Map<String, Value>) -> Result<(String, String), Reply> {
    let creation = match object_member(props, "creationData", "properties.creationData") {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                "Required parameter 'creationData' is missing (null).",
                "creationData",
            ))
        }
        Err(r) => return Err(r),
    };
    let option = string_member(creation, "createOption", "createOption")
        .ok()
        .flatten()
        .unwrap_or_default();
    let source = string_member(creation, "sourceResourceId", "sourceResourceId")
        .ok()
        .flatten()
        .unwrap_or_default();
    Ok((option, source))
}

/// A PUT of a disk that exists (a restore run again): the same source is the same disk;
/// another source is a change of `creationData`, which a disk refuses once created.
fn existing_disk_reply(existing: &Value, option: &str, source: &str) -> Reply {
    let cd = &existing["properties"]["creationData"];
    let same = cd["createOption"]
        .as_str()
        .is_some_and(|o| o.eq_ignore_ascii_case(option))
        && cd["sourceResourceId"]
            .as_str()
            .is_some_and(|s| same_id(s, source));
    if same {
        Reply::json(200, existing.clone())
    } else {
        conflict(
            "PropertyChangeNotAllowed",
            "Changing property 'creationData' is not allowed.",
        )
        .event("rule:diskCreationDataImmutable".to_string())
    }
}

/// The restore point a disk is restored from (`source`, one of its disk restore points): it
/// exists, succeeded, has (a copy) replicated, its disk's snapshot is readable, and it is in
/// the disk's `location`.
fn restorable_point<'s>(
    store: &'s Store,
    ctx: &Ctx<'_>,
    point_id: &ResourceId,
    source: &str,
    location: &str,
) -> Result<&'s PointRecord, Reply> {
    let step = ctx.timings.copy_progress_step_secs;
    let Some(point) = store.points.get(point_id) else {
        return Err(child_not_found());
    };
    let phase = point.phase(ctx.now);
    if phase != Phase::Succeeded {
        return Err(conflict(
            "OperationNotAllowed",
            format!(
                "The restore point '{point_id}' is in state '{}': a disk can be restored \
                only from a restore point that succeeded.",
                phase.as_str()
            ),
        )
        .event("rule:restoreFromSettledPointOnly".to_string()));
    }
    if let Some(pct) = point.copy_percent(ctx.now, step).filter(|p| *p < 100) {
        if point.is_copy() {
            return Err(conflict(
                "OperationNotAllowed",
                format!(
                    "The restore point '{point_id}' is still being copied ({pct}%): it can be \
                    used to restore only after every disk restore point has replicated."
                ),
            )
            .event("rule:restoreFromReplicatedCopyOnly".to_string()));
        }
    }
    let view = point.render(ctx.now, true, step);
    let disk_view = view
        .properties
        .as_ref()
        .and_then(|p| p.instance_view.as_ref())
        .and_then(|iv| iv.disk_restore_points.as_ref())
        .and_then(|d| {
            d.iter()
                .find(|d| d.id.as_deref().is_some_and(|x| same_id(x, source)))
        });
    let Some(disk_view) = disk_view else {
        return Err(child_not_found());
    };
    let access = disk_view
        .snapshot_access_state
        .as_deref()
        .unwrap_or("Unknown");
    if !READABLE.iter().any(|a| a.eq_ignore_ascii_case(access)) {
        return Err(conflict(
            "OperationNotAllowed",
            format!(
                "The disk restore point '{source}' has snapshotAccessState '{access}': a disk \
                can be created from it once it is 'Available'."
            ),
        )
        .event("rule:restoreNeedsAvailableSnapshot".to_string()));
    }
    let point_location = store
        .collections
        .get(&point.collection)
        .map(|c| c.location.clone())
        .unwrap_or_default();
    if !same_location(&point_location, location) {
        return Err(Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "The disk restore point is in '{point_location}': a disk is created from it in \
                that region only (copy the restore point to restore elsewhere)."
            ),
            "location",
        )
        .event("rule:restoreInPointRegion".to_string()));
    }
    Ok(point)
}

/// `DELETE …/disks/{name}`: 200 when deleted, 204 when there was nothing; an attached disk is
/// refused.
pub fn delete_disk(store: &mut Store, sub: &str, rg: &str, name: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let id = compute_id(sub, rg, "disks", name);
    let Some(doc) = store.disks.get(&id) else {
        return Reply::empty(204);
    };
    if let Some(vm) = doc["managedBy"].as_str().filter(|v| !v.is_empty()) {
        return conflict(
            "OperationNotAllowed",
            format!("Disk {name} is attached to VM {vm}."),
        )
        .event("rule:attachedDiskNotDeleted".to_string());
    }
    store.disks.remove(&id);
    Reply::empty(200).event("delete".to_string())
}

/// The managed disk ids a VM document attaches: (OS disk, data disks by lun).
fn attached(doc: &Value) -> (Option<String>, Vec<(i64, String)>) {
    let sp = &doc["properties"]["storageProfile"];
    let os = sp["osDisk"]["managedDisk"]["id"]
        .as_str()
        .map(str::to_string);
    let data = sp["dataDisks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["lun"].as_i64()?,
                d["managedDisk"]["id"].as_str()?.to_string(),
            ))
        })
        .collect();
    (os, data)
}

fn disk_entry(store: &Store, id: &str) -> Option<(ResourceId, Value)> {
    let rid = ResourceId::parse(id).ok()?;
    store.disks.get(&rid).map(|d| (rid, d.clone()))
}

/// Every disk the new storage profile names must exist, be in the VM's region, and not be
/// attached to another VM.
fn check_disks(store: &Store, vm: &ResourceId, location: &str, ids: &[&str]) -> Result<(), Reply> {
    for id in ids {
        let Some((rid, doc)) = disk_entry(store, id) else {
            return Err(Reply::error(
                404,
                "NotFound",
                format!("Disk '{id}' was not found."),
            ));
        };
        if !same_location(doc["location"].as_str().unwrap_or_default(), location) {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                format!("Disk '{rid}' is not in the VM's region '{location}'."),
                "storageProfile",
            ));
        }
        if let Some(owner) = doc["managedBy"].as_str().filter(|o| !o.is_empty()) {
            if !same_id(owner, vm.as_str()) {
                return Err(conflict(
                    "OperationNotAllowed",
                    format!("Disk '{rid}' is already attached to VM '{owner}'."),
                )
                .event("rule:diskAttachedOnce".to_string()));
            }
        }
    }
    Ok(())
}

/// Marks `now_attached` as managed by `vm` and releases the disks it no longer names.
fn reattach(store: &mut Store, vm: &ResourceId, before: &[String], after: &[String]) {
    for id in before {
        if !after.iter().any(|a| same_id(a, id)) {
            if let Some(d) = ResourceId::parse(id)
                .ok()
                .and_then(|i| store.disks.get_mut(&i))
            {
                d.as_object_mut().map(|o| o.remove("managedBy"));
                d["properties"]["diskState"] = json!("Unattached");
            }
        }
    }
    for id in after {
        if let Some(d) = ResourceId::parse(id)
            .ok()
            .and_then(|i| store.disks.get_mut(&i))
        {
            d["managedBy"] = json!(vm.to_string());
            d["properties"]["diskState"] = json!("Attached");
        }
    }
}

/// `PUT …/virtualMachines/{name}`: a new VM from attached disks (`createOption: Attach`), or an
/// update of an existing VM's disks (an OS disk swap keeps the OS type).
pub fn put_vm(
    store: &mut Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
    body: &[u8],
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(location) = string_member(&obj, "location", "location").ok().flatten() else {
        return Reply::error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    let body_doc = Value::Object(obj.clone());
    let id = compute_id(sub, rg, "virtualMachines", name);
    let (new_os, new_data) = attached(&body_doc);
    let Some(new_os) = new_os else {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            "Required parameter 'osDisk.managedDisk.id' is missing: the emulator serves VMs \
            from attached managed disks only.",
            "storageProfile.osDisk.managedDisk.id",
        );
    };
    let mut ids: Vec<&str> = vec![new_os.as_str()];
    ids.extend(new_data.iter().map(|(_, d)| d.as_str()));
    let all_new: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    if let Some(reply) = update_vm(store, &id, &location, &body_doc, &new_os, &ids, &all_new) {
        return reply;
    }
    let os_type = body_doc["properties"]["storageProfile"]["osDisk"]["osType"].as_str();
    let create = body_doc["properties"]["storageProfile"]["osDisk"]["createOption"]
        .as_str()
        .unwrap_or_default();
    if !create.eq_ignore_ascii_case("Attach") || os_type.is_none() {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            "The emulator creates VMs from an attached OS disk only: 'osDisk.createOption' must \
            be 'Attach' and 'osDisk.osType' is required with it.",
            "storageProfile.osDisk",
        );
    }
    if let Err(r) = check_disks(store, &id, &location, &ids) {
        return r;
    }
    let nics: Vec<String> = body_doc["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    if nics.is_empty() {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            "Required parameter 'networkProfile' is missing (null).",
            "networkProfile",
        );
    }
    for nic in &nics {
        let known = ResourceId::parse(nic)
            .ok()
            .is_some_and(|n| store.nics.contains_key(&n));
        if !known {
            return Reply::error(
                404,
                "NotFound",
                format!("Network interface '{nic}' was not found."),
            );
        }
    }
    let sp = &body_doc["properties"]["storageProfile"];
    let mut props = json!({
        "vmId": det_uuid(ctx.seed, &format!("vm/{id}")),
        "hardwareProfile": body_doc["properties"]["hardwareProfile"],
        "storageProfile": {
            "osDisk": os_disk_doc(store, &sp["osDisk"]),
            "dataDisks": data_disks_doc(store, &sp["dataDisks"]),
        },
        "networkProfile": body_doc["properties"]["networkProfile"],
        "provisioningState": "Succeeded",
        "timeCreated": crate::arm::fleet::rfc3339(ctx.now),
    });
    for k in ["securityProfile", "diagnosticsProfile", "licenseType"] {
        if let Some(v) = body_doc["properties"].get(k).filter(|v| !v.is_null()) {
            props[k] = v.clone();
        }
    }
    let mut doc = json!({
        "id": id.to_string(),
        "name": name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": location,
        "properties": props,
    });
    for k in ["zones", "tags"] {
        if let Some(v) = member(&obj, k) {
            doc[k] = v.clone();
        }
    }
    store.vms.insert(
        id.clone(),
        VmRecord {
            doc: doc.clone(),
            user_data: None,
        },
    );
    store.power.remove(&id);
    reattach(store, &id, &[], &all_new);
    Reply::json(201, doc).event("vmCreated".to_string())
}

/// The update of an existing VM's disks (`None` when the VM does not exist): its location
/// stays, and an OS disk swap keeps the OS type.
fn update_vm(
    store: &mut Store,
    id: &ResourceId,
    location: &str,
    body_doc: &Value,
    new_os: &str,
    ids: &[&str],
    all_new: &[String],
) -> Option<Reply> {
    let rec = store.vms.get(id)?;
    if !same_location(&rec.location(), location) {
        return Some(Reply::error_with_target(
            400,
            "InvalidParameter",
            "Changing property 'location' is not allowed.",
            "location",
        ));
    }
    let (old_os, old_data) = attached(&rec.doc);
    // An OS disk swap does not need the VM deallocated ("The VM does not need to be
    // stopped\deallocated", learn.microsoft.com `virtual-machines/windows/os-disk-swap`), but
    // the OS type cannot change (Azure SDK `VirtualMachine.UpdateStages.WithOSDisk`: "You
    // cannot switch the OS Type of the VM").
    let swapping = old_os.as_deref().is_none_or(|o| !same_id(o, new_os));
    let new_type = disk_entry(store, new_os)
        .and_then(|(_, d)| d["properties"]["osType"].as_str().map(str::to_string));
    if let (true, Some(new_type), Some(vm_type)) = (swapping, new_type, rec.os_type()) {
        if !new_type.eq_ignore_ascii_case(&vm_type) {
            return Some(
                conflict(
                    "OperationNotAllowed",
                    format!(
                        "The OS type of the VM ('{vm_type}') cannot change: disk '{new_os}' \
                    holds a '{new_type}' OS."
                    ),
                )
                .event("rule:osDiskSwapKeepsOsType".to_string()),
            );
        }
    }
    if let Err(r) = check_disks(store, id, location, ids) {
        return Some(r);
    }
    let mut before: Vec<String> = old_os.into_iter().collect();
    before.extend(old_data.into_iter().map(|(_, d)| d));
    let mut doc = rec.doc.clone();
    let sp = &body_doc["properties"]["storageProfile"];
    doc["properties"]["storageProfile"]["osDisk"] = os_disk_doc(store, &sp["osDisk"]);
    doc["properties"]["storageProfile"]["dataDisks"] = data_disks_doc(store, &sp["dataDisks"]);
    for k in ["hardwareProfile", "securityProfile"] {
        if let Some(v) = body_doc["properties"].get(k).filter(|v| !v.is_null()) {
            doc["properties"][k] = v.clone();
        }
    }
    if let Some(r) = store.vms.get_mut(id) {
        r.doc = doc.clone();
    }
    reattach(store, id, &before, all_new);
    Some(Reply::json(200, doc))
}

fn os_disk_doc(store: &Store, os: &Value) -> Value {
    let id = os["managedDisk"]["id"].as_str().unwrap_or_default();
    let disk = disk_entry(store, id).map(|(_, d)| d).unwrap_or(Value::Null);
    json!({
        "osType": os["osType"].as_str().or(disk["properties"]["osType"].as_str()),
        "name": disk["name"],
        "createOption": "Attach",
        "caching": os["caching"].as_str().unwrap_or("ReadWrite"),
        "managedDisk": {"id": disk["id"], "storageAccountType": disk["sku"]["name"]},
        "diskSizeGB": disk["properties"]["diskSizeGB"],
    })
}

fn data_disks_doc(store: &Store, data: &Value) -> Value {
    Value::Array(
        data.as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let id = d["managedDisk"]["id"].as_str().unwrap_or_default();
                let disk = disk_entry(store, id).map(|(_, d)| d).unwrap_or(Value::Null);
                json!({
                    "lun": d["lun"],
                    "name": disk["name"],
                    "createOption": "Attach",
                    "caching": d["caching"].as_str().unwrap_or("None"),
                    "managedDisk": {"id": disk["id"], "storageAccountType": disk["sku"]["name"]},
                    "diskSizeGB": disk["properties"]["diskSizeGB"],
                })
            })
            .collect(),
    )
}

/// `POST …/virtualMachines/{name}/deallocate` and `…/start`.
pub fn vm_action(store: &mut Store, sub: &str, rg: &str, name: &str, action: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let id = compute_id(sub, rg, "virtualMachines", name);
    if !store.vms.contains_key(&id) {
        return resource_not_found("virtualMachines", name, rg);
    }
    if action.eq_ignore_ascii_case("deallocate") {
        store.power.insert(id, "deallocated".into());
    } else {
        store.power.remove(&id);
    }
    Reply::empty(200)
}

/// `PUT …/Microsoft.Network/networkInterfaces/{name}`: kept as sent (plus id, name, type and
/// `provisioningState`), so a VM can name it; a public IP is not modelled.
pub fn put_nic(store: &mut Store, sub: &str, rg: &str, name: &str, body: &[u8]) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if string_member(&obj, "location", "location")
        .ok()
        .flatten()
        .is_none()
    {
        return Reply::error(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    }
    let id = nic_id(sub, rg, name);
    let mut doc = Value::Object(obj);
    doc["id"] = json!(id.to_string());
    doc["name"] = json!(name);
    doc["type"] = json!("Microsoft.Network/networkInterfaces");
    doc["properties"]["provisioningState"] = json!("Succeeded");
    let status = if store.nics.contains_key(&id) {
        200
    } else {
        201
    };
    store.nics.insert(id, doc.clone());
    Reply::json(status, doc)
}

pub fn get_nic(store: &Store, sub: &str, rg: &str, name: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    match store.nics.get(&nic_id(sub, rg, name)) {
        Some(d) => Reply::json(200, d.clone()),
        None => Reply::error(
            404,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.Network/networkInterfaces/{name}' under resource group \
                '{rg}' was not found."
            ),
        ),
    }
}

fn nic_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::new_in_group(sub, rg, "Microsoft.Network", "networkInterfaces", name)
        .expect("path segments form an id")
}
