//! Virtual machines (get, instance view, the three lists) and disks.

use super::*;

/// `$expand` on VM GET is a closed enum: `instanceView` | `userData`.
fn vm_view(
    store: &Store,
    id: &ResourceId,
    expand: Option<&str>,
    now: OffsetDateTime,
) -> Option<Value> {
    let rec = store.vms.get(id)?;
    let mut doc = rec.doc.clone();
    match expand.map(str::to_ascii_lowercase).as_deref() {
        Some("userdata") => {
            if let Some(u) = &rec.user_data {
                doc["properties"]["userData"] = json!(u);
            }
        }
        Some("instanceview") => {
            doc["properties"]["instanceView"] = vm_instance_view(store, id, now);
        }
        _ => {}
    }
    Some(doc)
}

/// A running VM's instance view, shaped like `VirtualMachine_Get_InstanceView.json`.
pub fn vm_instance_view(store: &Store, id: &ResourceId, now: OffsetDateTime) -> Value {
    let Some(rec) = store.vms.get(id) else {
        return Value::Null;
    };
    let props = &rec.doc["properties"];
    let created = props["timeCreated"].clone();
    let linux = rec
        .os_type()
        .is_some_and(|o| o.eq_ignore_ascii_case("linux"));
    let mut disks = Vec::new();
    let sp = &props["storageProfile"];
    let names =
        std::iter::once(&sp["osDisk"]).chain(sp["dataDisks"].as_array().into_iter().flatten());
    for d in names {
        if let Some(n) = d["name"].as_str() {
            disks.push(json!({"name": n, "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                "displayStatus": "Provisioning succeeded", "time": created}]}));
        }
    }
    let (power, power_text) = if store.power.get(id).is_some_and(|p| p == "deallocated") {
        ("PowerState/deallocated", "VM deallocated")
    } else {
        ("PowerState/running", "VM running")
    };
    json!({
        "platformUpdateDomain": 0,
        "platformFaultDomain": 0,
        "computerName": props["osProfile"]["computerName"],
        "osName": if linux { "ubuntu" } else { "Windows Server 2022 Datacenter" },
        "osVersion": if linux { "24.04" } else { "Microsoft Windows NT 10.0.20348.0" },
        "vmAgent": {"vmAgentVersion": "2.7.41491.1102", "statuses": [{"code": "ProvisioningState/succeeded",
            "level": "Info", "displayStatus": "Ready", "message": "GuestAgent is running and processing the extensions.",
            "time": crate::arm::fleet::rfc3339(now)}]},
        "disks": disks,
        "hyperVGeneration": "V2",
        "isVMInStandbyPool": false,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": created},
            {"code": power, "level": "Info", "displayStatus": power_text}
        ]
    })
}

pub fn get_vm(store: &Store, ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let expand = ctx.query.get("$expand");
    if let Some(e) = expand {
        if !["instanceview", "userdata"].contains(&e.to_ascii_lowercase().as_str()) {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "The value '{e}' of parameter '$expand' is not valid. Allowed values \
                    are 'instanceView', 'userData'."
                ),
                "$expand",
            );
        }
    }
    match vm_view(
        store,
        &compute_id(sub, rg, "virtualMachines", name),
        expand,
        ctx.now,
    ) {
        Some(doc) => Reply::json(200, doc),
        None => resource_not_found("virtualMachines", name, rg),
    }
}

pub fn get_vm_instance_view(
    store: &Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let id = compute_id(sub, rg, "virtualMachines", name);
    if !store.vms.contains_key(&id) {
        return resource_not_found("virtualMachines", name, rg);
    }
    Reply::json(200, vm_instance_view(store, &id, ctx.now))
}

/// The three VM lists. `$filter` accepts only `'virtualMachineScaleSet/id' eq '<id>'`;
/// `$expand=instanceView` only with a valid `$filter` (spec); `statusOnly=true` (ListAll) returns
/// each VM's instance view only.
pub fn list_vms(store: &Store, ctx: &Ctx<'_>, route: &Route) -> Reply {
    let (sub, rg, location) = match route {
        Route::VmListAll { sub } => (sub, None, None),
        Route::VmList { sub, rg } => (sub, Some(rg), None),
        Route::VmListByLocation { sub, location } => (sub, None, Some(location)),
        _ => return Reply::empty(500),
    };
    let check = match rg {
        Some(rg) => check_rg(store, sub, rg),
        None => check_sub(store, sub),
    };
    if let Err(r) = check {
        return r;
    }
    let filter = if matches!(route, Route::VmListByLocation { .. }) {
        None
    } else {
        ctx.query.get("$filter")
    };
    let scale_set = match filter {
        None => None,
        Some(f) => match parse_vmss_filter(f) {
            Some(id) => Some(id),
            None => {
                return Reply::error_with_target(
                    400,
                    "InvalidParameter",
                    format!(
                        "The value '{f}' of parameter '$filter' is not valid. Allowed value is \
                        'virtualMachineScaleSet/id' eq '<scale set id>'."
                    ),
                    "$filter",
                )
            }
        },
    };
    // List by location takes no `$expand`; the others allow only `instanceView`.
    let expand = !matches!(route, Route::VmListByLocation { .. })
        && match expand_flag(ctx, "instanceView") {
            Ok(flag) => flag,
            Err(reply) => return reply,
        };
    if expand && scale_set.is_none() {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            "$expand=instanceView can only be specified with a valid $filter.",
            "$expand",
        );
    }
    let status_only = matches!(route, Route::VmListAll { .. })
        && ctx
            .query
            .get("statusOnly")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut items = Vec::new();
    for (id, rec) in &store.vms {
        if !id.subscription().eq_ignore_ascii_case(sub) {
            continue;
        }
        if let Some(rg) = rg {
            if !id
                .resource_group()
                .is_some_and(|r| r.eq_ignore_ascii_case(rg))
            {
                continue;
            }
        }
        if let Some(loc) = location {
            if !same_location(&rec.location(), loc) {
                continue;
            }
        }
        if let Some(ss) = &scale_set {
            let member_of = rec.doc["properties"]["virtualMachineScaleSet"]["id"]
                .as_str()
                .is_some_and(|v| {
                    v.trim_start_matches('/')
                        .eq_ignore_ascii_case(ss.trim_start_matches('/'))
                });
            if !member_of {
                continue;
            }
        }
        items.push((id, rec));
    }
    page(ctx, items, |(id, rec)| {
        if status_only {
            json!({"id": rec.doc["id"], "name": rec.doc["name"], "type": rec.doc["type"],
                "location": rec.doc["location"],
                "properties": {"instanceView": vm_instance_view(store, id, ctx.now)}})
        } else {
            let mut doc = rec.doc.clone();
            if expand {
                doc["properties"]["instanceView"] = vm_instance_view(store, id, ctx.now);
            }
            doc
        }
    })
}

fn parse_vmss_filter(f: &str) -> Option<String> {
    let rest = f
        .trim()
        .strip_prefix("'virtualMachineScaleSet/id'")?
        .trim_start();
    let rest = rest.strip_prefix("eq")?.trim();
    let id = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    (!id.is_empty()).then(|| id.to_string())
}

pub fn get_disk(store: &Store, sub: &str, rg: &str, name: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    match store.disks.get(&compute_id(sub, rg, "disks", name)) {
        Some(d) => Reply::json(200, d),
        None => resource_not_found("disks", name, rg),
    }
}

/// `Disks_List` (subscription) and `Disks_ListByResourceGroup`: the disk documents as `Disks_Get`
/// returns them, paged like the other lists.
pub fn list_disks(store: &Store, ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Reply {
    let check = match rg {
        Some(rg) => check_rg(store, sub, rg),
        None => check_sub(store, sub),
    };
    if let Err(r) = check {
        return r;
    }
    let items: Vec<&Value> = store
        .disks
        .iter()
        .filter(|(id, _)| {
            id.subscription().eq_ignore_ascii_case(sub)
                && rg.is_none_or(|rg| {
                    id.resource_group()
                        .is_some_and(|r| r.eq_ignore_ascii_case(rg))
                })
        })
        .map(|(_, doc)| doc)
        .collect();
    page(ctx, items, |doc| doc.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmss_filter() {
        assert_eq!(
            parse_vmss_filter("'virtualMachineScaleSet/id' eq '/subscriptions/s/x'"),
            Some("/subscriptions/s/x".into())
        );
        assert_eq!(parse_vmss_filter("name eq 'x'"), None);
    }
}
