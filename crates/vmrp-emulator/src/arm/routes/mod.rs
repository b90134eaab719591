//! ARM path recognition (case-insensitive, like ARM), the shared answer/body/paging helpers, and
//! the operation handlers, one submodule per resource kind (`vms`, `collections`, `points`,
//! `operations`). Handlers are synchronous functions over the [`Store`]; the HTTP plumbing
//! (throttling, faults, headers, recording) lives in `arm/mod.rs`.
//!
//! Choices where Azure's behaviour is not documented (each also noted at its code):
//! - Read-only properties in a PUT body (`provisioningState`, `timeCreated`, `sourceMetadata`,
//!   `instanceView`, `restorePointCollectionId`, `restorePoints`, `source.location`, `id`, `name`,
//!   `type`) are ignored, as ARM's RPC asks of providers; members that are not in the model at
//!   all are refused with 400 `InvalidRequestContent` ("Could not find member …"), as Compute does.
//! - A second PUT of an existing restore point with the same effective properties is accepted
//!   idempotently: 201 (the only success status the spec declares) with the point's current state
//!   and the original operation's headers; different properties → 409 `OperationNotAllowed`.
//! - `consistencyMode` accepts the three documented values case-insensitively (the spec's enum);
//!   anything else → 400 `InvalidParameter`. When omitted, Windows VMs get
//!   `ApplicationConsistent` (as `RestorePoint_Create.json`) and Linux VMs `FileSystemConsistent`
//!   (the docs: file-system consistency on Linux).
//! - DELETE of a missing resource → 204 (ARM's convention; the spec lists 204).

use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::fleet::det_uuid;
use super::lro::{OpState, Operation, OperationKind};
use super::rules::{self, ConcurrentCreateMode, DiskFacts, RuleSwitches, Violation};
use super::state::{
    copy_metadata, jitter, normalize_location, same_location, source_metadata, CollectionRecord,
    Deletion, DiskPoint, Outcome, Phase, PointRecord, Store, Timings,
};
use crate::azure::id::ResourceId;
use crate::azure::models::{CloudError, ConsistencyMode, Tags, API_VERSION};
use crate::faults::Dice;

mod collections;
mod operations;
mod points;
mod restore;
mod vms;

pub use collections::{
    delete_collection, get_collection, list_collections, patch_collection, put_collection,
};
pub use operations::operation_status;
pub use points::{delete_point, get_point, put_point};
pub use restore::{delete_disk, get_nic, put_disk, put_nic, put_vm, vm_action};
pub use vms::{get_disk, get_vm, get_vm_instance_view, list_disks, list_vms, vm_instance_view};

/// A recognised ARM path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    OperationStatus {
        sub: String,
        region: String,
        id: String,
    },
    VmListAll {
        sub: String,
    },
    VmListByLocation {
        sub: String,
        location: String,
    },
    CollectionListAll {
        sub: String,
    },
    DiskListAll {
        sub: String,
    },
    DiskList {
        sub: String,
        rg: String,
    },
    VmList {
        sub: String,
        rg: String,
    },
    Vm {
        sub: String,
        rg: String,
        name: String,
    },
    VmInstanceView {
        sub: String,
        rg: String,
        name: String,
    },
    CollectionList {
        sub: String,
        rg: String,
    },
    Collection {
        sub: String,
        rg: String,
        name: String,
    },
    Point {
        sub: String,
        rg: String,
        collection: String,
        name: String,
    },
    Disk {
        sub: String,
        rg: String,
        name: String,
    },
    /// `POST …/virtualMachines/{name}/{deallocate|start}`.
    VmAction {
        sub: String,
        rg: String,
        name: String,
        action: String,
    },
    /// `…/Microsoft.Network/networkInterfaces/{name}` (what a restored VM needs).
    Nic {
        sub: String,
        rg: String,
        name: String,
    },
    /// Under `/subscriptions/{sub}` but not an operation the emulator serves.
    Unknown {
        sub: Option<String>,
    },
}

/// The Compute api-versions the emulator answers (newest first, as ARM lists them): the
/// 2025-04-01 swagger it is built from (vmrp's own version, `models::API_VERSION`) and
/// 2025-11-01, which today's SDKs and CLI send and whose schema for these resources the emulator
/// treats as unchanged (docs/emulator-arm.md "API versions").
pub const COMPUTE_API_VERSIONS: &[&str] = &["2025-11-01", API_VERSION];

/// Which api-version rule applies to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersionRule {
    /// One of [`COMPUTE_API_VERSIONS`].
    Compute,
    /// Any `YYYY-MM-DD[-preview]` (the disks API has its own versions, e.g. 2024-03-02).
    AnyDated,
}

/// Splits and percent-decodes a path, then matches it case-insensitively.
pub fn parse_route(path: &str) -> Route {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            urlencoding::decode(s)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        })
        .collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    if l.len() < 2 || l[0] != "subscriptions" || segs[1].is_empty() {
        return Route::Unknown { sub: None };
    }
    let sub = segs[1].clone();
    let s = |i: usize| segs[i].clone();
    match &l[2..] {
        ["providers", "microsoft.compute", "locations", _, "operations", _] => {
            Route::OperationStatus {
                sub,
                region: s(5),
                id: s(7),
            }
        }
        ["providers", "microsoft.compute", "virtualmachines"] => Route::VmListAll { sub },
        ["providers", "microsoft.compute", "locations", _, "virtualmachines"] => {
            Route::VmListByLocation {
                sub,
                location: s(5),
            }
        }
        ["providers", "microsoft.compute", "restorepointcollections"] => {
            Route::CollectionListAll { sub }
        }
        ["providers", "microsoft.compute", "disks"] => Route::DiskListAll { sub },
        ["resourcegroups", _, "providers", "microsoft.network", "networkinterfaces", _] => {
            Route::Nic {
                sub,
                rg: s(3),
                name: s(7),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.compute", rest @ ..] => {
            let rg = s(3);
            match rest {
                ["virtualmachines"] => Route::VmList { sub, rg },
                ["virtualmachines", _] => Route::Vm {
                    sub,
                    rg,
                    name: s(7),
                },
                ["virtualmachines", _, "instanceview"] => Route::VmInstanceView {
                    sub,
                    rg,
                    name: s(7),
                },
                ["virtualmachines", _, action @ ("deallocate" | "start")] => Route::VmAction {
                    sub,
                    rg,
                    name: s(7),
                    action: action.to_string(),
                },
                ["restorepointcollections"] => Route::CollectionList { sub, rg },
                ["restorepointcollections", _] => Route::Collection {
                    sub,
                    rg,
                    name: s(7),
                },
                ["restorepointcollections", _, "restorepoints", _] => Route::Point {
                    sub,
                    rg,
                    collection: s(7),
                    name: s(9),
                },
                ["disks"] => Route::DiskList { sub, rg },
                ["disks", _] => Route::Disk {
                    sub,
                    rg,
                    name: s(7),
                },
                _ => Route::Unknown { sub: Some(sub) },
            }
        }
        _ => Route::Unknown { sub: Some(sub) },
    }
}

impl Route {
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Route::OperationStatus { sub, .. }
            | Route::VmListAll { sub }
            | Route::VmListByLocation { sub, .. }
            | Route::CollectionListAll { sub }
            | Route::DiskListAll { sub }
            | Route::DiskList { sub, .. }
            | Route::VmList { sub, .. }
            | Route::Vm { sub, .. }
            | Route::VmInstanceView { sub, .. }
            | Route::CollectionList { sub, .. }
            | Route::Collection { sub, .. }
            | Route::Point { sub, .. }
            | Route::Disk { sub, .. }
            | Route::VmAction { sub, .. }
            | Route::Nic { sub, .. } => Some(sub),
            Route::Unknown { sub } => sub.as_deref(),
        }
    }

    pub fn api_version_rule(&self) -> ApiVersionRule {
        match self {
            Route::Disk { .. }
            | Route::DiskListAll { .. }
            | Route::DiskList { .. }
            | Route::Nic { .. } => ApiVersionRule::AnyDated,
            _ => ApiVersionRule::Compute,
        }
    }

    /// The RBAC action a request needs and the scope ARM names when refusing it: the resource's
    /// own path, or for a list the subscription or resource group listed. `None` for what the
    /// role-scope rule does not model: Compute's operation-status URL (vmrp's handlers never
    /// poll it) and paths that are no operation (404 later).
    pub fn authorization(
        &self,
        method: &http::Method,
        path: &str,
    ) -> Option<(&'static str, String)> {
        use http::Method as M;
        let write = matches!(*method, M::PUT | M::PATCH | M::POST);
        let delete = *method == M::DELETE;
        let rg_scope = |sub: &str, rg: &str| format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let path = path.trim_end_matches('/').to_string();
        Some(match self {
            Route::OperationStatus { .. } | Route::Unknown { .. } => return None,
            Route::VmListAll { sub } | Route::VmListByLocation { sub, .. } => (
                "Microsoft.Compute/virtualMachines/read",
                format!("/subscriptions/{sub}"),
            ),
            Route::VmList { sub, rg } => {
                ("Microsoft.Compute/virtualMachines/read", rg_scope(sub, rg))
            }
            // VM and disk writes are what a restore does (as the operator): vmrp's deployed
            // role does not grant them (403), as in Azure.
            Route::Vm { .. } if delete => ("Microsoft.Compute/virtualMachines/delete", path),
            Route::Vm { .. } if write => ("Microsoft.Compute/virtualMachines/write", path),
            Route::Vm { .. } | Route::VmInstanceView { .. } => {
                ("Microsoft.Compute/virtualMachines/read", path)
            }
            Route::VmAction { action, .. } if action == "deallocate" => {
                ("Microsoft.Compute/virtualMachines/deallocate/action", path)
            }
            Route::VmAction { .. } => ("Microsoft.Compute/virtualMachines/start/action", path),
            Route::Nic { .. } if write => ("Microsoft.Network/networkInterfaces/write", path),
            Route::Nic { .. } => ("Microsoft.Network/networkInterfaces/read", path),
            Route::DiskListAll { sub } => (
                "Microsoft.Compute/disks/read",
                format!("/subscriptions/{sub}"),
            ),
            Route::DiskList { sub, rg } => ("Microsoft.Compute/disks/read", rg_scope(sub, rg)),
            Route::Disk { .. } if delete => ("Microsoft.Compute/disks/delete", path),
            Route::Disk { .. } if write => ("Microsoft.Compute/disks/write", path),
            Route::Disk { .. } => ("Microsoft.Compute/disks/read", path),
            Route::CollectionListAll { sub } => (
                "Microsoft.Compute/restorePointCollections/read",
                format!("/subscriptions/{sub}"),
            ),
            Route::CollectionList { sub, rg } => (
                "Microsoft.Compute/restorePointCollections/read",
                rg_scope(sub, rg),
            ),
            Route::Collection { .. } if delete => {
                ("Microsoft.Compute/restorePointCollections/delete", path)
            }
            Route::Collection { .. } if write => {
                ("Microsoft.Compute/restorePointCollections/write", path)
            }
            Route::Collection { .. } => ("Microsoft.Compute/restorePointCollections/read", path),
            Route::Point { .. } if delete => (
                "Microsoft.Compute/restorePointCollections/restorePoints/delete",
                path,
            ),
            Route::Point { .. } if write => (
                "Microsoft.Compute/restorePointCollections/restorePoints/write",
                path,
            ),
            Route::Point { .. } => (
                "Microsoft.Compute/restorePointCollections/restorePoints/read",
                path,
            ),
        })
    }

    /// `(operationId, fault key, in the copied swagger)` for a method on this route; `None` when
    /// the method is not supported (405).
    ///
    /// Fault keys are `"{METHOD} {resource type}"` with the type's last segment:
    /// `PUT|PATCH|GET|DELETE restorePointCollections` (GET also covers both lists),
    /// `PUT|GET|DELETE restorePoints`, `GET virtualMachines` (get, instance view and the three
    /// lists), `GET disks`, `GET operations` (operation status and Location polls), and what a
    /// restore writes: `PUT|DELETE disks`, `PUT virtualMachines`, `POST virtualMachines`
    /// (deallocate, start), `PUT|GET networkInterfaces`.
    pub fn operation(&self, method: &http::Method) -> Option<(&'static str, &'static str, bool)> {
        use http::Method as M;
        let m = method.clone();
        Some(match (self, m) {
            (Route::OperationStatus { .. }, M::GET) => ("Operations_Get", "GET operations", false),
            (Route::VmListAll { .. }, M::GET) => {
                ("VirtualMachines_ListAll", "GET virtualMachines", true)
            }
            (Route::VmListByLocation { .. }, M::GET) => (
                "VirtualMachines_ListByLocation",
                "GET virtualMachines",
                true,
            ),
            (Route::VmList { .. }, M::GET) => ("VirtualMachines_List", "GET virtualMachines", true),
            (Route::Vm { .. }, M::GET) => ("VirtualMachines_Get", "GET virtualMachines", true),
            (Route::VmInstanceView { .. }, M::GET) => {
                ("VirtualMachines_InstanceView", "GET virtualMachines", true)
            }
            (Route::CollectionListAll { .. }, M::GET) => (
                "RestorePointCollections_ListAll",
                "GET restorePointCollections",
                true,
            ),
            (Route::CollectionList { .. }, M::GET) => (
                "RestorePointCollections_List",
                "GET restorePointCollections",
                true,
            ),
            (Route::Collection { .. }, M::GET) => (
                "RestorePointCollections_Get",
                "GET restorePointCollections",
                true,
            ),
            (Route::Collection { .. }, M::PUT) => (
                "RestorePointCollections_CreateOrUpdate",
                "PUT restorePointCollections",
                true,
            ),
            (Route::Collection { .. }, M::PATCH) => (
                "RestorePointCollections_Update",
                "PATCH restorePointCollections",
                true,
            ),
            (Route::Collection { .. }, M::DELETE) => (
                "RestorePointCollections_Delete",
                "DELETE restorePointCollections",
                true,
            ),
            (Route::Point { .. }, M::GET) => ("RestorePoints_Get", "GET restorePoints", true),
            (Route::Point { .. }, M::PUT) => ("RestorePoints_Create", "PUT restorePoints", true),
            (Route::Point { .. }, M::DELETE) => {
                ("RestorePoints_Delete", "DELETE restorePoints", true)
            }
            (Route::Disk { .. }, M::GET) => ("Disks_Get", "GET disks", false),
            // Restore's writes: not validated by oav (DiskRP and Network swaggers are not
            // vendored; the emulator's VM PUT answers a subset of the VirtualMachine model).
            (Route::Disk { .. }, M::PUT) => ("Disks_CreateOrUpdate", "PUT disks", false),
            (Route::Disk { .. }, M::DELETE) => ("Disks_Delete", "DELETE disks", false),
            (Route::Vm { .. }, M::PUT) => (
                "VirtualMachines_CreateOrUpdate",
                "PUT virtualMachines",
                false,
            ),
            (Route::VmAction { action, .. }, M::POST) if action == "deallocate" => {
                ("VirtualMachines_Deallocate", "POST virtualMachines", false)
            }
            (Route::VmAction { .. }, M::POST) => {
                ("VirtualMachines_Start", "POST virtualMachines", false)
            }
            (Route::Nic { .. }, M::PUT) => (
                "NetworkInterfaces_CreateOrUpdate",
                "PUT networkInterfaces",
                false,
            ),
            (Route::Nic { .. }, M::GET) => {
                ("NetworkInterfaces_Get", "GET networkInterfaces", false)
            }
            (Route::DiskListAll { .. }, M::GET) => ("Disks_List", "GET disks", false),
            (Route::DiskList { .. }, M::GET) => ("Disks_ListByResourceGroup", "GET disks", false),
            _ => return None,
        })
    }
}

/// One answer before it becomes an HTTP response.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// Things to count (`"rule:spacing"`, `"restorePointCreated"`, `"fault:failedProvisioning"`).
    pub events: Vec<String>,
}

impl Reply {
    pub fn json(status: u16, body: impl Serialize) -> Self {
        Self {
            status,
            body: Some(serde_json::to_value(body).unwrap_or(Value::Null)),
            ..Default::default()
        }
    }
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(status, CloudError::new(code, message))
    }
    pub fn error_with_target(
        status: u16,
        code: &str,
        message: impl Into<String>,
        target: &str,
    ) -> Self {
        let mut e = CloudError::new(code, message);
        if let Some(inner) = e.error.as_mut() {
            inner.target = Some(target.to_string());
        }
        Self::json(status, e)
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn event(mut self, e: impl Into<String>) -> Self {
        self.events.push(e.into());
        self
    }
    fn from_violation(v: Violation) -> Self {
        let mut e = CloudError::new(v.code, v.message.clone());
        if let Some(inner) = e.error.as_mut() {
            inner.target = v.target;
            if let Some(code) = v.detail_code {
                inner.details = Some(vec![crate::azure::models::ApiError {
                    code: Some(code.into()),
                    message: Some(v.message),
                    ..Default::default()
                }]);
            }
        }
        let mut r = Self::json(v.status, e).event(format!("rule:{}", v.rule));
        if let Some(s) = v.retry_after_secs {
            r = r.header("Retry-After", s.to_string());
        }
        r
    }
}

/// The request's query parameters, looked up case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Everything a handler needs besides the store.
pub struct Ctx<'a> {
    pub now: OffsetDateTime,
    /// `http://{Host}` of the request, for `nextLink` and operation URLs.
    pub base_url: &'a str,
    pub path: &'a str,
    pub query: &'a Query,
    pub seed: u64,
    pub rules: &'a RuleSwitches,
    pub timings: &'a Timings,
    pub dice: &'a Dice,
    /// Probability that a new restore point ends `Failed` (the `failedProvisioning` fault).
    pub failed_provisioning: f64,
}

/// Checks the api-version query parameter.
pub fn check_api_version(rule: ApiVersionRule, query: &Query) -> Result<(), Reply> {
    let Some(v) = query.get("api-version") else {
        return Err(Reply::error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let ok = match rule {
        ApiVersionRule::Compute => COMPUTE_API_VERSIONS.contains(&v),
        ApiVersionRule::AnyDated => is_dated_version(v),
    };
    if ok {
        Ok(())
    } else {
        let supported = match rule {
            ApiVersionRule::Compute => COMPUTE_API_VERSIONS.join(","),
            ApiVersionRule::AnyDated => "YYYY-MM-DD[-preview]".to_string(),
        };
        Err(Reply::error(
            400,
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{supported}'."),
        ))
    }
}

fn is_dated_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    time::Date::parse(
        date,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .is_ok()
}

/// `$expand`: absent → false, the one allowed value (any case) → true, anything else → ARM's
/// 400 `InvalidParameter` (the spec's expand parameters are single-value enums).
fn expand_flag(ctx: &Ctx<'_>, allowed: &str) -> Result<bool, Reply> {
    match ctx.query.get("$expand") {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case(allowed) => Ok(true),
        Some(e) => Err(Reply::error_with_target(
            400,
            "InvalidParameter",
            format!("The value '{e}' of parameter '$expand' is not valid. Allowed value is '{allowed}'."),
            "$expand",
        )),
    }
}

fn sub_not_found(sub: &str) -> Reply {
    Reply::error(
        404,
        "SubscriptionNotFound",
        format!("The subscription '{sub}' could not be found."),
    )
}

fn rg_not_found(rg: &str) -> Reply {
    Reply::error(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
    )
}

fn resource_not_found(kind: &str, name: &str, rg: &str) -> Reply {
    Reply::error(
        404,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Compute/{kind}/{name}' under resource group \
            '{rg}' was not found. For more details please go to \
            https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn child_not_found() -> Reply {
    Reply::error(
        404,
        "NotFound",
        "The entity was not found in this Azure location.",
    )
}

fn check_sub(store: &Store, sub: &str) -> Result<(), Reply> {
    if store.has_subscription(sub) {
        Ok(())
    } else {
        Err(sub_not_found(sub))
    }
}

fn check_rg(store: &Store, sub: &str, rg: &str) -> Result<(), Reply> {
    check_sub(store, sub)?;
    store
        .resource_group(sub, rg)
        .map(|_| ())
        .ok_or_else(|| rg_not_found(rg))
}

fn compute_id(sub: &str, rg: &str, kind: &str, name: &str) -> ResourceId {
    // The parts are segments of a request path split at '/': never empty, never holding '/'.
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", kind, name)
        .expect("path segments form an id")
}

/// One page of `items` at `$skiptoken` (an offset), with an absolute `nextLink` on the
/// emulator's host carrying the request's other query parameters. Only the page's items are
/// rendered, so listing a large fleet page by page stays cheap.
fn page<T>(ctx: &Ctx<'_>, items: Vec<T>, render: impl Fn(T) -> Value) -> Reply {
    let size = ctx.rules.list_page_size.max(1);
    let start = match ctx.query.get("$skiptoken") {
        None => 0,
        Some(t) => match t.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return Reply::error_with_target(
                    400,
                    "InvalidParameter",
                    format!("The value '{t}' of parameter '$skiptoken' is not valid."),
                    "$skiptoken",
                )
            }
        },
    };
    let total = items.len();
    let end = start.saturating_add(size).min(total);
    let value: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .map(render)
        .collect();
    let mut body = json!({ "value": value });
    if end < total {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &ctx.query.0 {
            if !k.eq_ignore_ascii_case("$skiptoken") {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("$skiptoken", &end.to_string());
        body["nextLink"] = json!(format!("{}{}?{}", ctx.base_url, ctx.path, ser.finish()));
    }
    Reply::json(200, body)
}

fn lro_headers(mut reply: Reply, ctx: &Ctx<'_>, op: &Operation) -> Reply {
    reply = reply
        .header(
            "Azure-AsyncOperation",
            format!("{}{}", ctx.base_url, op.status_path()),
        )
        .header(
            "Location",
            format!("{}{}", ctx.base_url, op.location_path()),
        )
        .header("Retry-After", ctx.timings.lro_retry_after_secs.to_string());
    reply
}

// ------------------------------------------------------------------------------------------
// Request bodies
// ------------------------------------------------------------------------------------------

fn parse_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: the \
                request body is empty.",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Reply::error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: \
                expected a JSON object.",
        )),
        Err(e) => Err(Reply::error(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}."),
        )),
    }
}

/// Compute refuses members its model does not have.
fn only_members(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    path: &str,
    type_name: &str,
) -> Result<(), Reply> {
    for k in obj.keys() {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)) {
            return Err(Reply::error(
                400,
                "InvalidRequestContent",
                format!(
                    "The request content was invalid and could not be deserialized: Could \
                    not find member '{k}' on object of type '{type_name}'. Path \
                    '{path}{k}'."
                ),
            ));
        }
    }
    Ok(())
}

fn member<'v>(obj: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn object_member<'v>(
    obj: &'v serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'v serde_json::Map<String, Value>>, Reply> {
    match member(obj, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid_content(path, "an object")),
    }
}

fn string_member(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, Reply> {
    match member(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_content(path, "a string")),
    }
}

fn invalid_content(path: &str, expected: &str) -> Reply {
    Reply::error_with_target(
        400,
        "InvalidRequestContent",
        format!(
            "The request content was invalid and could not be deserialized: \
            '{path}' must be {expected}."
        ),
        path,
    )
}

fn parse_tags(obj: &serde_json::Map<String, Value>) -> Result<Option<Tags>, Reply> {
    match member(obj, "tags") {
        None => Ok(None),
        Some(Value::Object(m)) => {
            let mut tags = Tags::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        tags.insert(k.clone(), s.clone());
                    }
                    _ => return Err(invalid_content(&format!("tags.{k}"), "a string")),
                }
            }
            Ok(Some(tags))
        }
        Some(_) => Err(invalid_content("tags", "an object of strings")),
    }
}

fn new_operation(
    store: &mut Store,
    ctx: &Ctx<'_>,
    kind: OperationKind,
    location: &str,
    resource: &ResourceId,
    end: OffsetDateTime,
    error: Option<(String, String)>,
) -> Operation {
    let op = Operation {
        id: store.next_operation_id(ctx.seed),
        kind,
        subscription: resource.subscription().to_string(),
        region: normalize_location(location),
        resource_id: resource.to_string(),
        start: ctx.now,
        end,
        error,
    };
    store
        .operations
        .insert(op.id.to_ascii_lowercase(), op.clone());
    op
}

/// Counts source points deleted while one of their copies still replicates (a client bug worth
/// seeing in the counters; the copy itself carries on, as its snapshot data is independent).
fn note_source_deletions(store: &mut Store, ctx: &Ctx<'_>, deleted: impl Fn(&PointRecord) -> bool) {
    let step = ctx.timings.copy_progress_step_secs;
    let doomed: Vec<ResourceId> = store
        .points
        .values()
        .filter(|p| deleted(p))
        .map(|p| p.id.clone())
        .collect();
    let hits = store
        .points
        .values()
        .filter(|p| {
            p.source_point.as_ref().is_some_and(|s| doomed.contains(s))
                && p.copy_in_flight(ctx.now, step)
        })
        .count();
    store.sources_deleted_during_copy += hits as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_case_insensitive() {
        let r = parse_route("/subscriptions/S1/resourcegroups/RG/providers/microsoft.compute/restorePointCollections/c/RESTOREPOINTS/p");
        assert_eq!(
            r,
            Route::Point {
                sub: "S1".into(),
                rg: "RG".into(),
                collection: "c".into(),
                name: "p".into()
            }
        );
        assert_eq!(
            parse_route(
                "/subscriptions/s/providers/Microsoft.Compute/locations/westus/operations/abc"
            ),
            Route::OperationStatus {
                sub: "s".into(),
                region: "westus".into(),
                id: "abc".into()
            }
        );
        assert_eq!(
            parse_route("/subscriptions/s/providers/Microsoft.Compute/virtualMachines"),
            Route::VmListAll { sub: "s".into() }
        );
        assert_eq!(
            parse_route("/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v/instanceView"),
            Route::VmInstanceView { sub: "s".into(), rg: "r".into(), name: "v".into() }
        );
        assert_eq!(
            parse_route("/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/x/y"),
            Route::Unknown {
                sub: Some("s".into())
            }
        );
        assert_eq!(parse_route("/other"), Route::Unknown { sub: None });
        assert_eq!(
            parse_route("/subscriptions/s/providers/Microsoft.Compute/disks"),
            Route::DiskListAll { sub: "s".into() }
        );
        assert_eq!(
            parse_route("/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/disks"),
            Route::DiskList {
                sub: "s".into(),
                rg: "r".into()
            }
        );
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourceGroups/my%20rg/providers/Microsoft.Compute/disks/d"
            ),
            Route::Disk {
                sub: "s".into(),
                rg: "my rg".into(),
                name: "d".into()
            }
        );
    }

    #[test]
    fn api_version_rules() {
        let q = |s: &str| Query::parse(Some(s));
        assert!(check_api_version(ApiVersionRule::Compute, &q("api-version=2025-04-01")).is_ok());
        assert!(check_api_version(ApiVersionRule::Compute, &q("api-version=2025-11-01")).is_ok());
        let missing = check_api_version(ApiVersionRule::Compute, &q("")).unwrap_err();
        assert_eq!(missing.status, 400);
        assert_eq!(
            missing.body.unwrap()["error"]["code"],
            "MissingApiVersionParameter"
        );
        let wrong =
            check_api_version(ApiVersionRule::Compute, &q("api-version=2024-07-01")).unwrap_err();
        assert_eq!(
            wrong.body.unwrap()["error"]["code"],
            "InvalidApiVersionParameter"
        );
        assert!(check_api_version(ApiVersionRule::AnyDated, &q("api-version=2024-03-02")).is_ok());
        assert!(check_api_version(
            ApiVersionRule::AnyDated,
            &q("api-version=2023-10-01-preview")
        )
        .is_ok());
        assert!(check_api_version(ApiVersionRule::AnyDated, &q("api-version=latest")).is_err());
    }
}
