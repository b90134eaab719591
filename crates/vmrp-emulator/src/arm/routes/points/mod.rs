//! Restore points: create (local and cross-region copy, with the platform rules), get, delete.

use super::*;

use std::collections::BTreeMap;

mod copy;

use copy::*;

/// The effective input of a restore point PUT, for the "cannot be updated" comparison.
#[derive(Debug, PartialEq)]
struct PointInput {
    mode: Option<ConsistencyMode>,
    exclude: Vec<String>,
    instant_access_minutes: Option<i32>,
    source: Option<String>,
    /// A copy's per-disk target encryption set
    /// (`sourceMetadata.storageProfile.{osDisk,dataDisks[]}.diskRestorePoint.encryption.diskEncryptionSet.id`),
    /// keyed by [`disk_key`].
    encryption: BTreeMap<String, String>,
}

/// How a copy request and a source's metadata name the same disk: `os`, or `data:{i}` for the
/// i-th data disk. By position, as the Azure CLI's `az restore-point create
/// --data-disk-restore-point-encryption-set` lists them: a data disk's `lun` is read-only in
/// `RestorePointSourceVMDataDisk` (restorePoint.json), so a request cannot name it.
fn disk_key(_entry: &Value, data_index: Option<usize>) -> String {
    match data_index {
        None => "os".to_string(),
        Some(i) => format!("data:{i}"),
    }
}

/// The disk entries of a `sourceMetadata.storageProfile`: (key, JSON path, entry).
fn storage_disks(meta: &Value) -> Vec<(String, String, &Value)> {
    let sp = &meta["storageProfile"];
    let mut out = Vec::new();
    if let Some(os) = sp.get("osDisk").filter(|v| v.is_object()) {
        out.push((
            disk_key(os, None),
            "properties.sourceMetadata.storageProfile.osDisk.diskRestorePoint.encryption"
                .to_string(),
            os,
        ));
    }
    for (i, d) in sp["dataDisks"].as_array().into_iter().flatten().enumerate() {
        out.push((
            disk_key(d, Some(i)),
            format!(
                "properties.sourceMetadata.storageProfile.dataDisks[{i}].diskRestorePoint.encryption"
            ),
            d,
        ));
    }
    out
}

fn parse_encryption(meta: &Value) -> Result<BTreeMap<String, String>, Reply> {
    let mut out = BTreeMap::new();
    for (key, path, entry) in storage_disks(meta) {
        let enc = &entry["diskRestorePoint"]["encryption"];
        if enc.is_null() {
            continue;
        }
        let des = &enc["diskEncryptionSet"]["id"];
        match des {
            Value::Null => {}
            Value::String(id) => match ResourceId::parse(id) {
                Ok(r) if r.is_type("Microsoft.Compute/diskEncryptionSets") => {
                    out.insert(key, id.clone());
                }
                _ => {
                    return Err(Reply::error_with_target(
                        400,
                        "InvalidParameter",
                        format!("{path}.diskEncryptionSet.id '{id}' is not a disk encryption set resource id."),
                        &format!("{path}.diskEncryptionSet.id"),
                    ))
                }
            },
            _ => {
                return Err(invalid_content(
                    &format!("{path}.diskEncryptionSet.id"),
                    "a string",
                ))
            }
        }
    }
    Ok(out)
}

fn parse_point_input(body: &[u8]) -> Result<PointInput, Reply> {
    let obj = parse_body(body)?;
    only_members(
        &obj,
        &["id", "name", "type", "properties", "systemData"],
        "",
        "RestorePoint",
    )?;
    let mut input = PointInput {
        mode: None,
        exclude: Vec::new(),
        instant_access_minutes: None,
        source: None,
        encryption: BTreeMap::new(),
    };
    let Some(p) = object_member(&obj, "properties", "properties")? else {
        return Ok(input);
    };
    // Read-only members are accepted and ignored (see the module doc).
    only_members(
        p,
        &[
            "excludeDisks",
            "sourceMetadata",
            "provisioningState",
            "consistencyMode",
            "timeCreated",
            "sourceRestorePoint",
            "instanceView",
            "instantAccessDurationMinutes",
        ],
        "properties.",
        "RestorePointProperties",
    )?;
    if let Some(m) = string_member(p, "consistencyMode", "properties.consistencyMode")? {
        let mode = match m.to_ascii_lowercase().as_str() {
            "crashconsistent" => ConsistencyMode::CrashConsistent,
            "filesystemconsistent" => ConsistencyMode::FileSystemConsistent,
            "applicationconsistent" => ConsistencyMode::ApplicationConsistent,
            _ => {
                return Err(Reply::error_with_target(
                    400,
                    "InvalidParameter",
                    format!(
                        "The value '{m}' of properties.consistencyMode is not valid. Allowed \
                        values are 'CrashConsistent', 'FileSystemConsistent', \
                        'ApplicationConsistent'."
                    ),
                    "properties.consistencyMode",
                ))
            }
        };
        input.mode = Some(mode);
    }
    match member(p, "excludeDisks") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("properties.excludeDisks[{i}].id");
                let id = item
                    .as_object()
                    .and_then(|o| member(o, "id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_content(&path, "an object with a string 'id'"))?;
                if ResourceId::parse(id)
                    .map(|r| r.is_type("Microsoft.Compute/disks"))
                    .unwrap_or(false)
                {
                    input.exclude.push(id.to_string());
                } else {
                    return Err(Reply::error_with_target(
                        400,
                        "InvalidParameter",
                        format!("{path} '{id}' is not a managed disk resource id."),
                        &path,
                    ));
                }
            }
        }
        Some(_) => return Err(invalid_content("properties.excludeDisks", "an array")),
    }
    match member(p, "instantAccessDurationMinutes") {
        None => {}
        Some(v) => {
            let n = v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid_content(
                        "properties.instantAccessDurationMinutes",
                        "a 32-bit integer",
                    )
                })?;
            input.instant_access_minutes = Some(n);
        }
    }
    if let Some(src) = object_member(p, "sourceRestorePoint", "properties.sourceRestorePoint")? {
        input.source = string_member(src, "id", "properties.sourceRestorePoint.id")?;
    }
    // The rest of sourceMetadata is read-only and ignored; a copy's per-disk encryption is the
    // one input it carries (restorePoint.json, `DiskRestorePointAttributes.encryption`).
    if let Some(meta) = member(p, "sourceMetadata") {
        input.encryption = parse_encryption(meta)?;
    }
    Ok(input)
}

fn same_ids(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v
            .iter()
            .map(|s| s.trim_start_matches('/').to_ascii_lowercase())
            .collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

pub fn put_point(
    store: &mut Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    coll_name: &str,
    name: &str,
    body: &[u8],
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let input = match parse_point_input(body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let (true, Some(mode)) = (ctx.rules.consistency_input_crash_only, &input.mode) {
        if let Err(v) = rules::check_consistency_input(mode) {
            return Reply::from_violation(v);
        }
    }
    if let (true, Some(minutes)) = (
        ctx.rules.instant_access_duration_range,
        input.instant_access_minutes,
    ) {
        if let Err(v) = rules::check_instant_access_minutes(minutes) {
            return Reply::from_violation(v);
        }
    }
    let coll_id = compute_id(sub, rg, "restorePointCollections", coll_name);
    let Some(coll) = store.collections.get(&coll_id).cloned() else {
        return resource_not_found("restorePointCollections", coll_name, rg);
    };
    if coll.deleting.is_some() {
        return Reply::error(
            409,
            "Conflict",
            format!(
                "Restore point collection '{coll_name}' is being deleted (operation in progress)."
            ),
        );
    }
    let id = coll_id.child("restorePoints", name);
    if let Some(existing) = store.points.get(&id).cloned() {
        return re_put(store, ctx, &existing, &input);
    }
    if coll.is_copy_target {
        create_copy(store, ctx, &coll, &id, input)
    } else {
        create_local(store, ctx, &coll, &id, input)
    }
}

/// A PUT on an existing point: idempotent when nothing changes, refused otherwise.
fn re_put(store: &Store, ctx: &Ctx<'_>, existing: &PointRecord, input: &PointInput) -> Reply {
    if existing.deleting.is_some() {
        return Reply::error(
            409,
            "Conflict",
            format!(
                "Restore point '{}' is being deleted (operation in progress).",
                existing.id.name().unwrap_or_default()
            ),
        );
    }
    // A copy takes its consistency mode and excluded disks from its source (`create_copy`
    // ignores them in the request), so a repeated copy PUT is compared on what it can carry:
    // comparing the request's (empty) excludeDisks with the inherited ones refused identical
    // replays of copies of points that exclude a disk.
    let same_own_inputs = existing.is_copy()
        || (input.mode.as_ref().is_none_or(|m| *m == existing.mode)
            && same_ids(&input.exclude, &existing.exclude_disks));
    let same = same_own_inputs
        && (input.encryption.is_empty() || input.encryption == existing.encryption)
        && input
            .instant_access_minutes
            .is_none_or(|m| Some(m) == existing.instant_access_minutes)
        && match (&input.source, &existing.source_point) {
            (None, None) => true,
            (Some(a), Some(b)) => a
                .trim_start_matches('/')
                .eq_ignore_ascii_case(b.as_str().trim_start_matches('/')),
            _ => false,
        };
    if !same {
        return Reply::error(
            409,
            "OperationNotAllowed",
            format!(
                "Restore point '{}' already exists and its properties cannot be \
                updated. Create a restore point with another name instead.",
                existing.id.name().unwrap_or_default()
            ),
        );
    }
    let reply = Reply::json(
        201,
        existing.render(ctx.now, false, ctx.timings.copy_progress_step_secs),
    );
    match store
        .operations
        .get(&existing.operation.to_ascii_lowercase())
    {
        Some(op) => lro_headers(reply, ctx, op),
        None => reply,
    }
}

fn disk_facts(store: &Store, vm: &crate::arm::state::VmRecord) -> Vec<DiskFacts> {
    vm.typed()
        .disks()
        .into_iter()
        .filter_map(|d| {
            let id = d.managed_disk_id?;
            let disk_doc = store.disks.get(&id);
            let max_shares = disk_doc
                .and_then(|doc| doc["properties"]["maxShares"].as_i64())
                .unwrap_or(1) as i32;
            let sku = d.storage_account_type.clone().or_else(|| {
                disk_doc.and_then(|doc| doc["sku"]["name"].as_str().map(str::to_string))
            });
            Some(DiskFacts {
                id: id.to_string(),
                name: d
                    .name
                    .clone()
                    .or_else(|| id.name().map(str::to_string))
                    .unwrap_or_default(),
                ephemeral_os: d.ephemeral,
                max_shares,
                storage_account_type: sku,
                write_accelerator: d.write_accelerator,
            })
        })
        .collect()
}

fn is_fast_disk(d: &DiskFacts) -> bool {
    d.storage_account_type.as_deref().is_some_and(|s| {
        s.eq_ignore_ascii_case("UltraSSD_LRS") || s.eq_ignore_ascii_case("PremiumV2_LRS")
    })
}

fn same_disk(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

/// The disk restore points of a new local point, in `sourceMetadata` order (OS disk, then data
/// disks). A Premium SSD v2 / Ultra disk's snapshot gets its background data copy, whose length
/// is a seeded part plus a part per GiB, and, in an instant access collection, instant access
/// for `instantAccessDurationMinutes` (default 300).
fn local_disk_points(
    store: &Store,
    ctx: &Ctx<'_>,
    vm: &crate::arm::state::VmRecord,
    meta: &Value,
    disk_ids: Vec<String>,
    instant_access: bool,
    input: &PointInput,
) -> Vec<DiskPoint> {
    let sp = &meta["storageProfile"];
    let entries: Vec<&Value> = sp
        .get("osDisk")
        .into_iter()
        .chain(sp["dataDisks"].as_array().into_iter().flatten())
        .collect();
    let vm_disks = vm.typed().disks();
    disk_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let entry = entries.get(i).copied().unwrap_or(&Value::Null);
            let disk_id = entry["managedDisk"]["id"].as_str().map(str::to_string);
            let doc = disk_id
                .as_deref()
                .and_then(|d| ResourceId::parse(d).ok())
                .and_then(|d| store.disks.get(&d));
            let sku = entry["managedDisk"]["storageAccountType"]
                .as_str()
                .or_else(|| doc.and_then(|d| d["sku"]["name"].as_str()))
                .or_else(|| {
                    vm_disks
                        .iter()
                        .find(|v| {
                            v.managed_disk_id
                                .as_ref()
                                .zip(disk_id.as_deref())
                                .is_some_and(|(a, b)| same_disk(a.as_str(), b))
                        })
                        .and_then(|v| v.storage_account_type.as_deref())
                })
                .unwrap_or_default()
                .to_ascii_lowercase();
            let fast = sku == "premiumv2_lrs" || sku == "ultrassd_lrs";
            let gib = entry["diskSizeGB"]
                .as_f64()
                .or_else(|| doc.and_then(|d| d["properties"]["diskSizeGB"].as_f64()))
                .unwrap_or(0.0)
                .max(0.0);
            let background_done_at = fast.then(|| {
                let fixed = jitter(
                    ctx.seed,
                    &format!("{id}/backgroundCopy"),
                    ctx.timings.background_copy_secs,
                );
                let per_gib = ctx.timings.background_copy_secs_per_gib.max(0.0) * gib;
                let per_gib = if per_gib.is_finite() {
                    per_gib.min(10.0 * 365.0 * 86_400.0)
                } else {
                    0.0
                };
                ctx.now + fixed + time::Duration::seconds_f64(per_gib)
            });
            let instant_access_until = (fast && instant_access).then(|| {
                ctx.now
                    + time::Duration::minutes(i64::from(
                        input.instant_access_minutes.unwrap_or(300),
                    ))
            });
            DiskPoint {
                id,
                replicated_at: None,
                background_done_at,
                instant_access_until,
                source_disk: fast.then_some(disk_id).flatten(),
            }
        })
        .collect()
}

fn create_local(
    store: &mut Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    id: &ResourceId,
    input: PointInput,
) -> Reply {
    let (vm_id, vm) = match local_vm(store, coll, &input) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let vm_label = vm_id.name().unwrap_or_default().to_string();
    let facts = disk_facts(store, &vm);
    for ex in &input.exclude {
        if !facts.iter().any(|d| {
            d.id.trim_start_matches('/')
                .eq_ignore_ascii_case(ex.trim_start_matches('/'))
        }) {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "Disk '{ex}' in properties.excludeDisks is not attached to VM '{vm_label}'."
                ),
                "properties.excludeDisks",
            );
        }
    }
    let linux = vm
        .os_type()
        .is_some_and(|o| o.eq_ignore_ascii_case("linux"));
    let mode = input.mode.clone().unwrap_or(if linux {
        ConsistencyMode::FileSystemConsistent
    } else {
        ConsistencyMode::ApplicationConsistent
    });
    let included: Vec<DiskFacts> = facts
        .into_iter()
        .filter(|d| {
            !input.exclude.iter().any(|e| {
                e.trim_start_matches('/')
                    .eq_ignore_ascii_case(d.id.trim_start_matches('/'))
            })
        })
        .collect();
    let r = ctx.rules;
    let now = ctx.now;
    // Instant access applies when the collection enables it and the point holds a Premium SSD
    // v2 / Ultra disk (the only disks whose snapshots need it).
    let instant_access = coll.instant_access == Some(true) && included.iter().any(is_fast_disk);
    let vm_points = store.points_of_vm(&vm_id);
    let creating = vm_points
        .iter()
        .find(|p| !p.is_copy() && p.deleting.is_none() && p.creation_phase(now) == Phase::Creating)
        .map(|p| p.id.name().unwrap_or_default().to_string());
    let mut concurrent_failure = None;
    if r.one_create_per_vm {
        if let Err(v) = rules::check_one_create(&vm_label, creating.as_deref()) {
            match r.concurrent_create_mode {
                ConcurrentCreateMode::Reject409 => return Reply::from_violation(v),
                ConcurrentCreateMode::FailAsync => concurrent_failure = Some(v),
            }
        }
    }
    let checks = check_vm_rules(store, ctx, &vm_id, &vm, &vm_points, &mode, &included)
        .and_then(|()| check_snapshot_limits(store, ctx, coll, &included, instant_access));
    if let Err(v) = checks {
        return Reply::from_violation(v);
    }
    let (outcome, reply_events) = local_outcome(ctx, concurrent_failure, &vm_label);
    let ready_at = now
        + jitter(
            ctx.seed,
            &format!("{id}/create"),
            ctx.timings.local_create_secs,
        );
    let (meta, disk_ids) = source_metadata(&vm, id, &input.exclude, ctx.seed);
    let op = create_operation(store, ctx, coll, id, ready_at, &outcome);
    let disks = local_disk_points(store, ctx, &vm, &meta, disk_ids, instant_access, &input);
    let rec = PointRecord {
        id: id.clone(),
        collection: coll.id.clone(),
        vm: vm_id.clone(),
        mode,
        exclude_disks: input.exclude,
        instant_access_minutes: input.instant_access_minutes,
        source_point: None,
        source_created: None,
        created: now,
        ready_at,
        outcome,
        disks,
        source_metadata: meta,
        instant_access_disks: instant_access,
        operation: op.id.clone(),
        deleting: None,
        terminate_at: None,
        encryption: BTreeMap::new(),
    };
    store.create_log.entry(vm_id).or_default().push(now);
    let body = rec.render(now, false, ctx.timings.copy_progress_step_secs);
    store.points.insert(id.clone(), rec);
    let mut reply = lro_headers(Reply::json(201, body), ctx, &op).event("restorePointCreated");
    reply.events.extend(reply_events);
    reply
}

/// How the create ends: failed as a concurrent create (Azure's asynchronous refusal), failed by
/// the injected fault, or succeeded; with the reply's events.
fn local_outcome(
    ctx: &Ctx<'_>,
    concurrent_failure: Option<Violation>,
    vm_label: &str,
) -> (Outcome, Vec<String>) {
    let mut reply_events = Vec::new();
    let outcome = if let Some(v) = concurrent_failure {
        reply_events.push(format!("rule:{}", v.rule));
        Outcome::Failed {
            code: v.code.to_string(),
            message: rules::CONCURRENT_CREATE_MESSAGE.to_string(),
        }
    } else if ctx.dice.roll(ctx.failed_provisioning) {
        reply_events.push("fault:failedProvisioning".to_string());
        Outcome::Failed {
            code: "VMRestorePointInternalError".into(),
            message: format!(
                "Restore point creation failed for VM '{vm_label}' due to an internal \
                error. Please retry the operation after some time."
            ),
        }
    } else {
        Outcome::Succeeded
    };
    (outcome, reply_events)
}

/// A local point's VM: the collection's source, which must exist (a local collection takes
/// no `sourceRestorePoint`).
fn local_vm(
    store: &Store,
    coll: &CollectionRecord,
    input: &PointInput,
) -> Result<(ResourceId, crate::arm::state::VmRecord), Reply> {
    if input.source.is_some() {
        return Err(Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "properties.sourceRestorePoint can only be set on a restore point in a \
                collection made for cross-region copy; collection '{}' has a VM as \
                its source.",
                coll.id.name().unwrap_or_default()
            ),
            "properties.sourceRestorePoint",
        ));
    }
    let vm_id = match ResourceId::parse(&coll.source_id) {
        Ok(v) => v,
        Err(e) => return Err(Reply::error(400, "InvalidParameter", e.to_string())),
    };
    let Some(vm) = store.vms.get(&vm_id).cloned() else {
        return Err(Reply::error_with_target(
            404,
            "ResourceNotFound",
            format!(
                "The source VM '{vm_id}' of restore point collection '{}' was not found.",
                coll.id.name().unwrap_or_default()
            ),
            "properties.source.id",
        ));
    };
    Ok((vm_id, vm))
}

/// The create rules about the VM: the hourly create limit, the points-per-VM cap, the spacing
/// between points of one consistency class, unsupported VMs and disks.
fn check_vm_rules(
    store: &Store,
    ctx: &Ctx<'_>,
    vm_id: &ResourceId,
    vm: &crate::arm::state::VmRecord,
    vm_points: &[&PointRecord],
    mode: &ConsistencyMode,
    included: &[DiskFacts],
) -> Result<(), Violation> {
    let r = ctx.rules;
    let now = ctx.now;
    let vm_label = vm_id.name().unwrap_or_default();
    if r.hourly_create_limit {
        rules::check_hourly(
            "createsPerVmPerHour",
            &format!("restore point creations for VM '{vm_label}'"),
            r.creates_per_vm_per_hour,
            store.create_log.get(vm_id).map_or(&[][..], Vec::as_slice),
            now,
        )?;
    }
    if r.points_per_vm_cap {
        rules::check_point_cap(vm_label, vm_points.len(), r.max_points_per_vm)?;
    }
    if r.spacing {
        let last = vm_points
            .iter()
            .filter(|p| !p.is_copy() && p.deleting.is_none())
            .filter(|p| !matches!(p.outcome, Outcome::Failed { .. }))
            .filter(|p| rules::is_app_class(&p.mode) == rules::is_app_class(mode))
            .map(|p| p.created)
            .max();
        rules::check_spacing(r, vm_label, mode, last, now)?;
    }
    if r.unsupported_vms {
        let typed = vm.typed();
        rules::check_vm_supported(vm_label, typed.security_type(), typed.vm_size(), mode)?;
    }
    if r.unsupported_disks_excluded {
        rules::check_disks(vm_label, mode, included)?;
    }
    Ok(())
}

/// The create rules about snapshots in progress: Premium SSD v2 / Ultra disk snapshots per
/// disk, and instant-access creates per subscription and region.
fn check_snapshot_limits(
    store: &Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    included: &[DiskFacts],
    instant_access: bool,
) -> Result<(), Violation> {
    let r = ctx.rules;
    let now = ctx.now;
    let sub_of_coll = coll.id.subscription();
    if r.fast_disk_snapshot_limit {
        for d in included.iter().filter(|d| is_fast_disk(d)) {
            let in_progress = store
                .points
                .values()
                .filter(|p| {
                    p.disks.iter().any(|dp| {
                        dp.source_disk
                            .as_deref()
                            .is_some_and(|s| same_disk(s, &d.id))
                            && p.background_in_progress(dp, now)
                    })
                })
                .count();
            rules::check_fast_snapshots_in_progress(
                &d.name,
                in_progress,
                r.max_fast_snapshots_in_progress,
            )?;
        }
    }
    if r.instant_access_concurrency && instant_access {
        let in_flight = store
            .points
            .values()
            .filter(|p| {
                !p.is_copy()
                    && p.deleting.is_none()
                    && p.instant_access_disks
                    && p.creation_phase(now) == Phase::Creating
                    && p.id.subscription().eq_ignore_ascii_case(sub_of_coll)
                    && store
                        .collections
                        .get(&p.collection)
                        .is_some_and(|c| same_location(&c.location, &coll.location))
            })
            .count();
        rules::check_instant_access_in_flight(
            sub_of_coll,
            &coll.location,
            in_flight,
            r.max_instant_access_in_flight,
        )?;
    }
    Ok(())
}

/// A create's long-running operation, ending at `ready_at` and failing with the point's error
/// when its outcome is a failure (a local point and a copy alike).
fn create_operation(
    store: &mut Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    id: &ResourceId,
    ready_at: OffsetDateTime,
    outcome: &Outcome,
) -> Operation {
    let error = match outcome {
        Outcome::Failed { code, message } => Some((code.clone(), message.clone())),
        Outcome::Succeeded => None,
    };
    new_operation(
        store,
        ctx,
        OperationKind::CreateRestorePoint,
        &coll.location,
        id,
        ready_at,
        error,
    )
}

/// [`storage_disks`] over a mutable metadata document: (key, path, entry).
fn storage_disks_mut(meta: &mut Value) -> Vec<(String, String, &mut Value)> {
    let mut out = Vec::new();
    let Some(sp) = meta
        .get_mut("storageProfile")
        .and_then(Value::as_object_mut)
    else {
        return out;
    };
    let mut os = None;
    let mut data = None;
    for (k, v) in sp.iter_mut() {
        match k.as_str() {
            "osDisk" => os = Some(v),
            "dataDisks" => data = Some(v),
            _ => {}
        }
    }
    if let Some(os) = os.filter(|v| v.is_object()) {
        out.push((disk_key(os, None), String::new(), os));
    }
    if let Some(Value::Array(items)) = data {
        for (i, d) in items.iter_mut().enumerate() {
            out.push((disk_key(d, Some(i)), String::new(), d));
        }
    }
    out
}

pub fn get_point(
    store: &Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    coll: &str,
    name: &str,
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let iv = match expand_flag(ctx, "instanceView") {
        Ok(flag) => flag,
        Err(reply) => return reply,
    };
    let coll_id = compute_id(sub, rg, "restorePointCollections", coll);
    if !store.collections.contains_key(&coll_id) {
        return resource_not_found("restorePointCollections", coll, rg);
    }
    match store.points.get(&coll_id.child("restorePoints", name)) {
        Some(p) => Reply::json(
            200,
            p.render(ctx.now, iv, ctx.timings.copy_progress_step_secs),
        ),
        None => child_not_found(),
    }
}

pub fn delete_point(
    store: &mut Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    coll: &str,
    name: &str,
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let coll_id = compute_id(sub, rg, "restorePointCollections", coll);
    let id = coll_id.child("restorePoints", name);
    let Some(p) = store.points.get(&id).cloned() else {
        return Reply::empty(204);
    };
    if let Some(d) = &p.deleting {
        return match store.operations.get(&d.operation.to_ascii_lowercase()) {
            Some(op) => lro_headers(Reply::empty(202), ctx, op),
            None => Reply::empty(202),
        };
    }
    if p.creation_phase(ctx.now) == Phase::Creating {
        return Reply::error(
            409,
            "Conflict",
            format!(
                "Restore point '{name}' cannot be deleted while it is being created \
            (operation in progress)."
            ),
        );
    }
    let location = store
        .collections
        .get(&coll_id)
        .map(|c| c.location.clone())
        .unwrap_or_default();
    let done_at = ctx.now
        + jitter(
            ctx.seed,
            &format!("{id}/delete/{}", ctx.now),
            ctx.timings.delete_secs,
        );
    let op = new_operation(
        store,
        ctx,
        OperationKind::DeleteRestorePoint,
        &location,
        &id,
        done_at,
        None,
    );
    note_source_deletions(store, ctx, |q| q.id == id);
    if let Some(p) = store.points.get_mut(&id) {
        p.deleting = Some(Deletion {
            done_at,
            operation: op.id.clone(),
        });
    }
    store.schedule_sweep(done_at);
    lro_headers(Reply::empty(202), ctx, &op).event("delete")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_input_validation() {
        let ok = parse_point_input(br#"{"properties":{"consistencyMode":"crashConsistent","provisioningState":"Succeeded","timeCreated":"x"}}"#).unwrap();
        assert_eq!(ok.mode, Some(ConsistencyMode::CrashConsistent));
        let bad_mode =
            parse_point_input(br#"{"properties":{"consistencyMode":"Bogus"}}"#).unwrap_err();
        assert_eq!(bad_mode.status, 400);
        let unknown = parse_point_input(br#"{"properties":{"foo":1}}"#).unwrap_err();
        assert!(unknown.body.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("foo"));
        let bad_exclude =
            parse_point_input(br#"{"properties":{"excludeDisks":["x"]}}"#).unwrap_err();
        assert_eq!(bad_exclude.status, 400);
        assert_eq!(parse_point_input(b"").unwrap_err().status, 400);
        assert_eq!(
            parse_point_input(b"{}").unwrap(),
            PointInput {
                mode: None,
                exclude: vec![],
                instant_access_minutes: None,
                source: None,
                encryption: BTreeMap::new(),
            }
        );
    }
}
