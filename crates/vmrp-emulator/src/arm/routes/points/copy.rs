//! Cross-region copies of restore points: the create, with the copy rules, and the lookups
//! of copies in flight it needs.

use super::*;

pub(super) fn create_copy(
    store: &mut Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    id: &ResourceId,
    input: PointInput,
) -> Reply {
    let coll_label = coll.id.name().unwrap_or_default().to_string();
    let (source_id, source) = match copy_source(store, &coll_label, &input) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let now = ctx.now;
    let r = ctx.rules;
    let step = ctx.timings.copy_progress_step_secs;
    if let Err(reply) = check_source(ctx, coll, &source_id, &source) {
        return reply;
    }
    if let Err(v) = check_target(store, ctx, coll, &coll_label, &source_id, &source) {
        return Reply::from_violation(v);
    }
    let encryption = match copy_encryption(store, ctx, coll, &source, &input) {
        Ok(e) => e,
        Err(reply) => return reply,
    };
    let mut events = vec!["copyStarted".to_string()];
    let outcome = if ctx.dice.roll(ctx.failed_provisioning) {
        events.push("fault:failedProvisioning".into());
        Outcome::Failed {
            code: "VMRestorePointInternalError".into(),
            message: format!(
                "Copying restore point '{source_id}' to region '{}' failed due to an \
                internal error. Please retry the operation after some time.",
                coll.location
            ),
        }
    } else {
        Outcome::Succeeded
    };
    let ready_at = now
        + jitter(
            ctx.seed,
            &format!("{id}/copyStart"),
            ctx.timings.copy_start_secs,
        );
    let (mut meta, disk_ids) = copy_metadata(&source, id, ctx.seed);
    for (key, _, entry) in storage_disks_mut(&mut meta) {
        if let Some(e) = encryption.get(&key) {
            entry["diskRestorePoint"]["encryption"] = e.clone();
        }
    }
    let disks = disk_ids
        .into_iter()
        .map(|d| {
            let total = jitter(
                ctx.seed,
                &format!("{d}/replication"),
                ctx.timings.copy_duration_secs,
            );
            // Replication cannot finish before the copy has started.
            let done = (now + total).max(ready_at);
            DiskPoint {
                id: d,
                replicated_at: Some(done),
                ..Default::default()
            }
        })
        .collect();
    let op = create_operation(store, ctx, coll, id, ready_at, &outcome);
    let rec = PointRecord {
        id: id.clone(),
        collection: coll.id.clone(),
        vm: source.vm.clone(),
        mode: source.mode.clone(),
        exclude_disks: source.exclude_disks.clone(),
        instant_access_minutes: input.instant_access_minutes,
        source_point: Some(source_id),
        source_created: Some(source.created),
        created: now,
        ready_at,
        outcome,
        disks,
        source_metadata: meta,
        instant_access_disks: false,
        operation: op.id.clone(),
        deleting: None,
        // "If the copy time exceeds two weeks, the copy operation is terminated automatically."
        terminate_at: (r.copy_max_days > 0)
            .then(|| now + time::Duration::days(i64::from(r.copy_max_days))),
        encryption: input.encryption.clone(),
    };
    store.copy_log.entry(coll.id.clone()).or_default().push(now);
    let body = rec.render(now, false, step);
    store.points.insert(id.clone(), rec);
    let mut reply = lro_headers(Reply::json(201, body), ctx, &op);
    reply.events.extend(events);
    reply
}

/// The copy's source: `properties.sourceRestorePoint.id`, required in a copy target
/// collection, must name a restore point that exists.
fn copy_source(
    store: &Store,
    coll_label: &str,
    input: &PointInput,
) -> Result<(ResourceId, PointRecord), Reply> {
    let Some(source_raw) = input.source.clone() else {
        return Err(Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "Restore point collection '{coll_label}' is for cross-region copy: \
                properties.sourceRestorePoint.id is required."
            ),
            "properties.sourceRestorePoint.id",
        ));
    };
    let source_id = match ResourceId::parse(&source_raw) {
        Ok(s) if s.is_type("Microsoft.Compute/restorePointCollections/restorePoints") => s,
        _ => {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "properties.sourceRestorePoint.id '{source_raw}' is not a restore point id."
                ),
                "properties.sourceRestorePoint.id",
            ))
        }
    };
    let Some(source) = store.points.get(&source_id).cloned() else {
        return Err(Reply::error_with_target(
            404,
            "ResourceNotFound",
            format!("The source restore point '{source_id}' was not found."),
            "properties.sourceRestorePoint.id",
        ));
    };
    Ok((source_id, source))
}

/// The copy rules about the source: not a copy itself, of the target collection's source
/// collection, succeeded, and (Premium SSD v2 / Ultra) copyable already.
fn check_source(
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    source_id: &ResourceId,
    source: &PointRecord,
) -> Result<(), Reply> {
    let coll_label = coll.id.name().unwrap_or_default();
    let (now, r) = (ctx.now, ctx.rules);
    let checks = || -> Result<(), Violation> {
        if r.no_copy_of_copy {
            rules::check_not_copy_of_copy(source_id.as_str(), source.is_copy())?;
        }
        if r.target_must_reference_source {
            rules::check_target_references_source(
                coll_label,
                &coll.source_id,
                source.collection.as_str(),
            )?;
        }
        Ok(())
    };
    checks().map_err(Reply::from_violation)?;
    match source.phase(now) {
        Phase::Succeeded => {}
        Phase::Creating => {
            return Err(Reply::error(
                409,
                "OperationNotAllowed",
                format!(
                    "Source restore point '{source_id}' is still being created (operation \
                in progress); copy it once it has succeeded."
                ),
            ))
        }
        Phase::Deleting => {
            return Err(Reply::error(
                409,
                "OperationNotAllowed",
                format!("Source restore point '{source_id}' is being deleted."),
            ))
        }
        Phase::Failed => {
            return Err(Reply::error(
                400,
                "OperationNotAllowed",
                format!(
                    "Source restore point '{source_id}' failed; only succeeded restore \
            points can be copied."
                ),
            ))
        }
    }
    if r.copy_needs_copyable_source {
        if let Err(v) =
            rules::check_source_copyable(source_id.as_str(), source.first_uncopyable_disk(now))
        {
            return Err(Reply::from_violation(v));
        }
    }
    Ok(())
}

/// The copy rules about the target: one live copy of a source per region, copies serial and
/// in creation order, the hourly copy limit, the points-per-VM cap and the copies in flight
/// per region.
fn check_target(
    store: &Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    coll_label: &str,
    source_id: &ResourceId,
    source: &PointRecord,
) -> Result<(), Violation> {
    let now = ctx.now;
    let r = ctx.rules;
    let step = ctx.timings.copy_progress_step_secs;
    let copies: Vec<&PointRecord> = store
        .points_of_collection(&coll.id)
        .into_iter()
        .filter(|p| p.is_copy() && p.deleting.is_none())
        .collect();
    // First: a second copy of the same source is refused for good, whatever else is busy.
    if r.one_copy_per_region {
        rules::check_copied_once(
            source_id.as_str(),
            &coll.location,
            live_copy_in_region(store, source_id, &coll.location, now, step).as_deref(),
        )?;
    }
    if r.copies_serial_in_order {
        let busy = copies.iter().find(|p| p.copy_in_flight(now, step));
        rules::check_copy_serial(
            coll_label,
            busy.map(|p| {
                (
                    p.id.name().unwrap_or_default(),
                    p.copy_percent(now, step).unwrap_or(0),
                )
            }),
        )?;
        let newest = copies
            .iter()
            .filter(|p| !matches!(p.outcome, Outcome::Failed { .. }))
            .filter_map(|p| Some((p.source_point.as_ref()?.as_str(), p.source_created?)))
            .max_by_key(|(_, t)| *t);
        rules::check_copy_order(coll_label, source_id.as_str(), source.created, newest)?;
    }
    if r.hourly_copy_limit {
        rules::check_hourly(
            "copiesPerCollectionPerHour",
            &format!("cross-region copies into collection '{coll_label}'"),
            r.copies_per_collection_per_hour,
            store.copy_log.get(&coll.id).map_or(&[][..], Vec::as_slice),
            now,
        )?;
    }
    if r.points_per_vm_cap {
        rules::check_point_cap(
            source.vm.name().unwrap_or_default(),
            store.points_of_vm(&source.vm).len(),
            r.max_points_per_vm,
        )?;
    }
    if r.copies_in_flight_per_region > 0 {
        rules::check_copies_in_flight(
            &coll.location,
            disks_in_flight(store, coll.id.subscription(), &coll.location, now, step),
            source.disks.len(),
            r.copies_in_flight_per_region,
            step.max(1.0).ceil() as u64,
        )?;
    }
    Ok(())
}

/// What each disk of the copy is encrypted with, by disk key. Customer-managed keys: each CMK
/// disk names a set of the target region (stricter reading).
fn copy_encryption(
    store: &Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    source: &PointRecord,
    input: &PointInput,
) -> Result<BTreeMap<String, Value>, Reply> {
    let r = ctx.rules;
    let mut encryption = BTreeMap::new();
    for (key, path, entry) in storage_disks(&source.source_metadata) {
        let source_set = entry["managedDisk"]["diskEncryptionSet"]["id"].as_str();
        let target_set = input.encryption.get(&key).map(String::as_str);
        if let (true, Some(source_set)) = (r.cmk_copy_needs_target_set, source_set) {
            let exists = target_set.is_some_and(|t| {
                ResourceId::parse(t)
                    .ok()
                    .and_then(|id| store.encryption_sets.get(&id))
                    .is_some_and(|doc| {
                        doc["location"]
                            .as_str()
                            .is_some_and(|l| same_location(l, &coll.location))
                    })
            });
            let disk = entry["name"].as_str().unwrap_or(&key);
            rules::check_cmk_copy(disk, source_set, &coll.location, target_set, exists, &path)
                .map_err(Reply::from_violation)?;
        }
        // What the copy is encrypted with, recorded per disk (and shown in its metadata): the
        // named set, else platform keys (only reachable with the rule off: a CMK disk copied
        // without a target set is the silent downgrade the rule exists to refuse).
        let recorded = match target_set {
            Some(t) => {
                json!({"diskEncryptionSet": {"id": t}, "type": "EncryptionAtRestWithCustomerKey"})
            }
            None => json!({"type": "EncryptionAtRestWithPlatformKey"}),
        };
        encryption.insert(key, recorded);
    }
    Ok(encryption)
}

/// The live copy (not failed, not terminated, not being deleted) of `source` in any collection
/// located in `region`, if one exists: its name.
pub(super) fn live_copy_in_region(
    store: &Store,
    source: &ResourceId,
    region: &str,
    now: OffsetDateTime,
    step: f64,
) -> Option<String> {
    store
        .points
        .values()
        .filter(|p| p.source_point.as_ref() == Some(source) && p.deleting.is_none())
        .filter(|p| p.copy_percent(now, step).is_some())
        .find(|p| {
            store
                .collections
                .get(&p.collection)
                .is_some_and(|c| same_location(&c.location, region))
        })
        .map(|p| p.id.to_string())
}

/// Disk restore point copies still replicating in `subscription` into `region`.
pub(super) fn disks_in_flight(
    store: &Store,
    subscription: &str,
    region: &str,
    now: OffsetDateTime,
    step: f64,
) -> usize {
    store
        .points
        .values()
        .filter(|p| p.deleting.is_none() && p.copy_in_flight(now, step))
        .filter(|p| p.id.subscription().eq_ignore_ascii_case(subscription))
        .filter(|p| {
            store
                .collections
                .get(&p.collection)
                .is_some_and(|c| same_location(&c.location, region))
        })
        .map(|p| {
            p.disks
                .iter()
                .filter(|d| p.disk_percent(d, now, step) < 100)
                .count()
        })
        .sum()
}
