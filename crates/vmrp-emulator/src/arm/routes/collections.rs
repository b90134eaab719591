//! Restore point collections: create or update, update, get, lists, delete.

use super::*;

fn render_collection(store: &Store, ctx: &Ctx<'_>, c: &CollectionRecord, expand: bool) -> Value {
    let points = expand.then(|| {
        store
            .points_of_collection(&c.id)
            .into_iter()
            .map(|p| p.render(ctx.now, false, ctx.timings.copy_progress_step_secs))
            .collect()
    });
    serde_json::to_value(c.render(points)).unwrap_or(Value::Null)
}

pub fn put_collection(
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
    let result = (|| -> Result<Reply, Reply> {
        let CollectionBody {
            location,
            tags,
            source_id,
            instant_access,
        } = parse_collection_body(&obj)?;
        let Some(location) = location else {
            return Err(Reply::error_with_target(
                400,
                "LocationRequired",
                "The location property is required for this definition.",
                "location",
            ));
        };
        if ctx.rules.collection_name_rules {
            rules::check_collection_name(name).map_err(Reply::from_violation)?;
        }
        if ctx.rules.known_locations_only {
            rules::check_location(&location, "Microsoft.Compute/restorePointCollections")
                .map_err(Reply::from_violation)?;
        }
        let id = compute_id(sub, rg, "restorePointCollections", name);
        if let Some(existing) = store.collections.get_mut(&id) {
            check_unchanged(
                existing,
                name,
                rg,
                &location,
                source_id.as_ref(),
                instant_access,
            )?;
            existing.tags = tags;
            let c = existing.clone();
            return Ok(Reply::json(200, render_collection(store, ctx, &c, false)));
        }
        let Some(source_raw) = source_id else {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                "Required parameter 'properties.source.id' is missing (null).",
                "properties.source.id",
            ));
        };
        let source = ResourceId::parse(&source_raw).map_err(|e| {
            Reply::error_with_target(
                400,
                "InvalidParameter",
                format!("properties.source.id: {e}"),
                "properties.source.id",
            )
        })?;
        let (source_location, is_copy_target) =
            new_collection_source(store, ctx, name, &location, &source)?;
        let rec = CollectionRecord {
            id: id.clone(),
            location,
            tags,
            source_id: source_raw,
            source_location,
            is_copy_target,
            instant_access,
            guid: det_uuid(ctx.seed, &format!("{id}/restorePointCollectionId")),
            deleting: None,
        };
        store.collections.insert(id, rec.clone());
        Ok(Reply::json(201, render_collection(store, ctx, &rec, false)))
    })();
    result.unwrap_or_else(|r| r)
}

/// The members of a collection PUT's body, checked against the swagger's
/// RestorePointCollection (no member it does not define).
struct CollectionBody {
    location: Option<String>,
    tags: Option<Tags>,
    source_id: Option<String>,
    instant_access: Option<bool>,
}

fn parse_collection_body(obj: &serde_json::Map<String, Value>) -> Result<CollectionBody, Reply> {
    only_members(
        obj,
        &[
            "id",
            "name",
            "type",
            "location",
            "tags",
            "properties",
            "systemData",
        ],
        "",
        "RestorePointCollection",
    )?;
    let location = string_member(obj, "location", "location")?.filter(|l| !l.trim().is_empty());
    let tags = parse_tags(obj)?;
    let props = object_member(obj, "properties", "properties")?;
    let mut source_id = None;
    let mut instant_access = None;
    if let Some(p) = props {
        only_collection_properties(p)?;
        if let Some(src) = object_member(p, "source", "properties.source")? {
            only_members(
                src,
                &["id", "location"],
                "properties.source.",
                "RestorePointCollectionSourceProperties",
            )?;
            source_id = string_member(src, "id", "properties.source.id")?;
        }
        instant_access = match member(p, "instantAccess") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(invalid_content("properties.instantAccess", "a boolean")),
        };
    }
    Ok(CollectionBody {
        location,
        tags,
        source_id,
        instant_access,
    })
}

/// Whether two `properties.source.id` values name the same resource (ARM ids are
/// case-insensitive; a leading `/` is optional).
fn same_source_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

/// A collection's `properties` may hold only the members RestorePointCollectionProperties
/// defines (a PUT and a PATCH alike).
fn only_collection_properties(p: &serde_json::Map<String, Value>) -> Result<(), Reply> {
    only_members(
        p,
        &[
            "source",
            "provisioningState",
            "restorePointCollectionId",
            "restorePoints",
            "instantAccess",
        ],
        "properties.",
        "RestorePointCollectionProperties",
    )
}

/// A PUT on an existing collection may change only tags: its refusal of anything else.
fn check_unchanged(
    existing: &CollectionRecord,
    name: &str,
    rg: &str,
    location: &str,
    source_id: Option<&String>,
    instant_access: Option<bool>,
) -> Result<(), Reply> {
    if existing.deleting.is_some() {
        return Err(Reply::error(
            409,
            "Conflict",
            format!(
                "Restore point collection '{name}' is being deleted; retry when the \
            deletion has completed (operation in progress)."
            ),
        ));
    }
    if !same_location(&existing.location, location) {
        return Err(Reply::error_with_target(
            409,
            "InvalidResourceLocation",
            format!(
                "The resource '{name}' already exists in location '{}' in resource \
                group '{rg}'. A resource with the same name cannot be created in \
                location '{location}'. Please select a new resource name.",
                existing.location
            ),
            "location",
        ));
    }
    if let Some(s) = source_id {
        if !same_source_id(s, &existing.source_id) {
            return Err(Reply::error_with_target(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'properties.source.id' is not allowed: only tags of \
                an existing restore point collection can be updated.",
                "properties.source.id",
            ));
        }
    }
    if let Some(ia) = instant_access {
        if existing.instant_access.unwrap_or(false) != ia {
            return Err(Reply::error_with_target(
                409,
                "PropertyChangeNotAllowed",
                "Changing property 'properties.instantAccess' is not allowed: only \
                tags of an existing restore point collection can be updated.",
                "properties.instantAccess",
            ));
        }
    }
    Ok(())
}

/// A new collection's source: a VM in the collection's region (a local collection), or a
/// collection in another region that holds no copies itself (a copy target). Its location and
/// whether the new collection is a copy target.
fn new_collection_source(
    store: &Store,
    ctx: &Ctx<'_>,
    name: &str,
    location: &str,
    source: &ResourceId,
) -> Result<(String, bool), Reply> {
    if source.is_type("Microsoft.Compute/virtualMachines") {
        let vm = store.vms.get(source).ok_or_else(|| {
            Reply::error_with_target(
                404,
                "ResourceNotFound",
                format!(
                    "The source VM '{source}' of restore point collection '{name}' was not \
            found."
                ),
                "properties.source.id",
            )
        })?;
        let vm_location = vm.location();
        if !same_location(&vm_location, location) {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "Restore point collection '{name}' must be created in its source VM's \
                region '{vm_location}', not '{location}'. To copy restore points to \
                another region, set properties.source.id to the source restore point \
                collection."
                ),
                "location",
            ));
        }
        Ok((vm_location, false))
    } else if source.is_type("Microsoft.Compute/restorePointCollections") {
        let src = store
            .collections
            .get(source)
            .filter(|c| c.deleting.is_none())
            .ok_or_else(|| {
                Reply::error_with_target(
                    404,
                    "ResourceNotFound",
                    format!("The source restore point collection '{source}' was not found."),
                    "properties.source.id",
                )
            })?;
        if same_location(&src.location, location) {
            return Err(Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "A restore point collection for cross-region copy must be in a region \
                other than its source's ('{}').",
                    src.location
                ),
                "location",
            ));
        }
        if src.is_copy_target && ctx.rules.no_copy_of_copy {
            return Err(Reply::error_with_target(
                400,
                "OperationNotAllowed",
                format!(
                    "Restore point collection '{source}' holds cross-region copies; a copy \
                cannot be copied again. Use the original collection as the source."
                ),
                "properties.source.id",
            )
            .event("rule:noCopyOfCopy"));
        }
        Ok((src.location.clone(), true))
    } else {
        Err(Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "properties.source.id '{source}' must be a virtual machine or, for \
            cross-region copy, a restore point collection."
            ),
            "properties.source.id",
        ))
    }
}

pub fn patch_collection(
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
    let result = (|| -> Result<Reply, Reply> {
        only_members(
            &obj,
            &["tags", "properties"],
            "",
            "RestorePointCollectionUpdate",
        )?;
        let tags = parse_tags(&obj)?;
        let props = object_member(&obj, "properties", "properties")?;
        let id = compute_id(sub, rg, "restorePointCollections", name);
        let Some(existing) = store.collections.get(&id).cloned() else {
            return Err(resource_not_found("restorePointCollections", name, rg));
        };
        let mut updated = existing.clone();
        if let Some(p) = props {
            only_collection_properties(p)?;
            if let Some(src) = object_member(p, "source", "properties.source")? {
                if let Some(s) = string_member(src, "id", "properties.source.id")? {
                    if !same_source_id(&s, &existing.source_id) {
                        return Err(Reply::error_with_target(
                            409,
                            "PropertyChangeNotAllowed",
                            "Changing property 'properties.source.id' is not allowed.",
                            "properties.source.id",
                        ));
                    }
                }
            }
            match member(p, "instantAccess") {
                None => {}
                Some(Value::Bool(b)) => updated.instant_access = Some(*b),
                Some(_) => return Err(invalid_content("properties.instantAccess", "a boolean")),
            }
        }
        if tags.is_some() {
            updated.tags = tags;
        }
        store.collections.insert(id, updated.clone());
        Ok(Reply::json(
            200,
            render_collection(store, ctx, &updated, false),
        ))
    })();
    result.unwrap_or_else(|r| r)
}

pub fn get_collection(store: &Store, ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let expand = match expand_flag(ctx, "restorePoints") {
        Ok(flag) => flag,
        Err(reply) => return reply,
    };
    match store
        .collections
        .get(&compute_id(sub, rg, "restorePointCollections", name))
    {
        Some(c) => Reply::json(200, render_collection(store, ctx, c, expand)),
        None => resource_not_found("restorePointCollections", name, rg),
    }
}

pub fn list_collections(store: &Store, ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Reply {
    let check = match rg {
        Some(rg) => check_rg(store, sub, rg),
        None => check_sub(store, sub),
    };
    if let Err(r) = check {
        return r;
    }
    let items = store
        .collections
        .values()
        .filter(|c| c.id.subscription().eq_ignore_ascii_case(sub))
        .filter(|c| {
            rg.is_none_or(|rg| {
                c.id.resource_group()
                    .is_some_and(|r| r.eq_ignore_ascii_case(rg))
            })
        })
        .collect();
    page(ctx, items, |c| render_collection(store, ctx, c, false))
}

pub fn delete_collection(
    store: &mut Store,
    ctx: &Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
) -> Reply {
    if let Err(r) = check_rg(store, sub, rg) {
        return r;
    }
    let id = compute_id(sub, rg, "restorePointCollections", name);
    let Some(c) = store.collections.get(&id).cloned() else {
        return Reply::empty(204);
    };
    if let Some(d) = &c.deleting {
        let op = store
            .operations
            .get(&d.operation.to_ascii_lowercase())
            .cloned();
        return match op {
            Some(op) => lro_headers(Reply::empty(202), ctx, &op),
            None => Reply::empty(202),
        };
    }
    if let Some(busy) = store
        .points_of_collection(&id)
        .into_iter()
        .find(|p| p.deleting.is_none() && p.creation_phase(ctx.now) == Phase::Creating)
    {
        return Reply::error(
            409,
            "Conflict",
            format!(
                "Restore point collection '{name}' cannot be deleted while restore \
                point '{}' is being created (operation in progress).",
                busy.id.name().unwrap_or_default()
            ),
        );
    }
    let done_at = ctx.now
        + jitter(
            ctx.seed,
            &format!("{id}/delete/{}", ctx.now),
            ctx.timings.delete_secs,
        );
    let op = new_operation(
        store,
        ctx,
        OperationKind::DeleteCollection,
        &c.location,
        &id,
        done_at,
        None,
    );
    note_source_deletions(store, ctx, |p| p.collection == id);
    let deletion = Deletion {
        done_at,
        operation: op.id.clone(),
    };
    if let Some(c) = store.collections.get_mut(&id) {
        c.deleting = Some(deletion.clone());
    }
    store.schedule_sweep(done_at);
    for p in store.points.values_mut().filter(|p| p.collection == id) {
        p.deleting.get_or_insert(deletion.clone());
    }
    lro_headers(Reply::empty(202), ctx, &op).event("delete")
}
