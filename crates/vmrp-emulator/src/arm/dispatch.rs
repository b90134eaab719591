//! The request pipeline's ends: the axum handler, the dispatch of a recognised route to its
//! handler, and the replies turned into responses (throttle faults, dropped connections).

use super::*;

pub(super) async fn handle(
    State(emu): State<Arc<ArmEmulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    emu.serve(method, uri, headers, body).await
}

pub(super) fn dispatch(
    store: &mut Store,
    ctx: &Ctx<'_>,
    route: &Route,
    method: &Method,
    body: &[u8],
) -> Reply {
    match (route, method.clone()) {
        (Route::OperationStatus { sub, region, id }, _) => {
            routes::operation_status(store, ctx, sub, region, id)
        }
        (Route::VmListAll { .. } | Route::VmList { .. } | Route::VmListByLocation { .. }, _) => {
            routes::list_vms(store, ctx, route)
        }
        (Route::Vm { sub, rg, name }, Method::PUT) => {
            routes::put_vm(store, ctx, sub, rg, name, body)
        }
        (Route::Vm { sub, rg, name }, _) => routes::get_vm(store, ctx, sub, rg, name),
        (
            Route::VmAction {
                sub,
                rg,
                name,
                action,
            },
            _,
        ) => routes::vm_action(store, sub, rg, name, action),
        (Route::Nic { sub, rg, name }, Method::PUT) => routes::put_nic(store, sub, rg, name, body),
        (Route::Nic { sub, rg, name }, _) => routes::get_nic(store, sub, rg, name),
        (Route::Disk { sub, rg, name }, Method::PUT) => {
            routes::put_disk(store, ctx, sub, rg, name, body)
        }
        (Route::Disk { sub, rg, name }, Method::DELETE) => {
            routes::delete_disk(store, sub, rg, name)
        }
        (Route::VmInstanceView { sub, rg, name }, _) => {
            routes::get_vm_instance_view(store, ctx, sub, rg, name)
        }
        (Route::Disk { sub, rg, name }, _) => routes::get_disk(store, sub, rg, name),
        (Route::DiskListAll { sub }, _) => routes::list_disks(store, ctx, sub, None),
        (Route::DiskList { sub, rg }, _) => routes::list_disks(store, ctx, sub, Some(rg)),
        (Route::CollectionListAll { sub }, _) => routes::list_collections(store, ctx, sub, None),
        (Route::CollectionList { sub, rg }, _) => {
            routes::list_collections(store, ctx, sub, Some(rg))
        }
        (Route::Collection { sub, rg, name }, Method::PUT) => {
            routes::put_collection(store, ctx, sub, rg, name, body)
        }
        (Route::Collection { sub, rg, name }, Method::PATCH) => {
            routes::patch_collection(store, ctx, sub, rg, name, body)
        }
        (Route::Collection { sub, rg, name }, Method::DELETE) => {
            routes::delete_collection(store, ctx, sub, rg, name)
        }
        (Route::Collection { sub, rg, name }, _) => {
            routes::get_collection(store, ctx, sub, rg, name)
        }
        (
            Route::Point {
                sub,
                rg,
                collection,
                name,
            },
            Method::PUT,
        ) => routes::put_point(store, ctx, sub, rg, collection, name, body),
        (
            Route::Point {
                sub,
                rg,
                collection,
                name,
            },
            Method::DELETE,
        ) => routes::delete_point(store, ctx, sub, rg, collection, name),
        (
            Route::Point {
                sub,
                rg,
                collection,
                name,
            },
            _,
        ) => routes::get_point(store, ctx, sub, rg, collection, name),
        (Route::Unknown { .. }, _) => Reply::error(404, "NotFound", "Not found."),
    }
}

/// Compute's own throttling answer (CONTRACT §6, DOC-CRP-THR): 429 `OperationNotAllowed` with a
/// `TooManyRequests` detail naming the policy, and `x-ms-ratelimit-remaining-resource`.
pub(super) fn compute_throttle_fault(now: time::OffsetDateTime) -> Reply {
    let end = now + time::Duration::minutes(3);
    let detail = json!({
        "operationGroup": "HighCostGet3Min",
        "startTime": fleet::rfc3339(now),
        "endTime": fleet::rfc3339(end),
        "allowedRequestCount": 160,
        "measuredRequestCount": 161
    });
    let mut body = crate::azure::models::CloudError::new(
        "OperationNotAllowed",
        "The server rejected the request because too many requests have been \
            received for this subscription.",
    );
    if let Some(e) = body.error.as_mut() {
        e.details = Some(vec![crate::azure::models::ApiError {
            code: Some("TooManyRequests".into()),
            target: Some("HighCostGet3Min".into()),
            message: Some(detail.to_string()),
            ..Default::default()
        }]);
    }
    Reply::json(429, body).header("Retry-After", "30").header(
        "x-ms-ratelimit-remaining-resource",
        "Microsoft.Compute/HighCostGet3Min;0",
    )
}

/// `http://{Host}` of the request (or `X-Forwarded-Proto`'s scheme), for links back to us.
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|s| *s == "https" || *s == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

pub(super) fn to_response(reply: Reply) -> Response {
    let body = match &reply.body {
        Some(b) => Body::from(serde_json::to_vec(b).unwrap_or_default()),
        None => Body::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A response whose body fails at once: hyper aborts the connection before writing anything.
pub(super) fn dropped_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "emulator drop fault",
        ))
    });
    Response::new(Body::from_stream(stream))
}
