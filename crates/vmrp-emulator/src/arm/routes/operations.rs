//! Compute's operation status URL (`Azure-AsyncOperation` and `Location`).

use super::*;

/// `GET …/locations/{region}/operations/{id}`: the Azure-AsyncOperation body, or with
/// `monitor=true` the Location semantics (202 running; 200 done — with the created point's body
/// for a create; the error as CloudError when failed).
pub fn operation_status(store: &Store, ctx: &Ctx<'_>, sub: &str, region: &str, id: &str) -> Reply {
    if let Err(r) = check_sub(store, sub) {
        return r;
    }
    let Some(op) = store.operations.get(&id.to_ascii_lowercase()).filter(|op| {
        op.subscription.eq_ignore_ascii_case(sub) && same_location(&op.region, region)
    }) else {
        return Reply::error(
            404,
            "NotFound",
            format!("The operation '{id}' was not found in location '{region}'."),
        );
    };
    let monitor = ctx
        .query
        .get("monitor")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !monitor {
        return Reply::json(200, op.status_body(ctx.now));
    }
    match op.state(ctx.now) {
        OpState::InProgress => lro_headers(Reply::empty(202), ctx, op),
        OpState::Failed => {
            let (code, message) = op.error.clone().unwrap_or_default();
            Reply::error(500, &code, message)
        }
        OpState::Succeeded => match op.kind {
            OperationKind::CreateRestorePoint => {
                let pid = ResourceId::parse(&op.resource_id).ok();
                match pid.and_then(|p| store.points.get(&p)) {
                    Some(p) => Reply::json(
                        200,
                        p.render(ctx.now, false, ctx.timings.copy_progress_step_secs),
                    ),
                    None => Reply::empty(200),
                }
            }
            _ => Reply::empty(200),
        },
    }
}
