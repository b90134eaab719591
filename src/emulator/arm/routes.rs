//! ARM path recognition (case-insensitive, like ARM) and the operation handlers. Handlers are
//! synchronous functions over the [`Store`]; the HTTP plumbing (throttling, faults, headers,
//! recording) lives in `mod.rs`.
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
use crate::emulator::faults::Dice;

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
    /// Under `/subscriptions/{sub}` but not an operation the emulator serves.
    Unknown {
        sub: Option<String>,
    },
}

/// Which api-version rule applies to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersionRule {
    /// Must equal [`API_VERSION`].
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
            | Route::VmList { sub, .. }
            | Route::Vm { sub, .. }
            | Route::VmInstanceView { sub, .. }
            | Route::CollectionList { sub, .. }
            | Route::Collection { sub, .. }
            | Route::Point { sub, .. }
            | Route::Disk { sub, .. } => Some(sub),
            Route::Unknown { sub } => sub.as_deref(),
        }
    }

    pub fn api_version_rule(&self) -> ApiVersionRule {
        match self {
            Route::Disk { .. } => ApiVersionRule::AnyDated,
            _ => ApiVersionRule::Compute,
        }
    }

    /// `(operationId, fault key, in the copied swagger)` for a method on this route; `None` when
    /// the method is not supported (405).
    ///
    /// Fault keys are `"{METHOD} {resource type}"` with the type's last segment:
    /// `PUT|PATCH|GET|DELETE restorePointCollections` (GET also covers both lists),
    /// `PUT|GET|DELETE restorePoints`, `GET virtualMachines` (get, instance view and the three
    /// lists), `GET disks`, `GET operations` (operation status and Location polls).
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
        let mut e = CloudError::new(v.code, v.message);
        if let Some(inner) = e.error.as_mut() {
            inner.target = v.target;
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
        ApiVersionRule::Compute => v == API_VERSION,
        ApiVersionRule::AnyDated => is_dated_version(v),
    };
    if ok {
        Ok(())
    } else {
        let supported = match rule {
            ApiVersionRule::Compute => API_VERSION.to_string(),
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
    ResourceId::new_in_group(sub, rg, "Microsoft.Compute", kind, name)
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

// ------------------------------------------------------------------------------------------
// Virtual machines and disks
// ------------------------------------------------------------------------------------------

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
    json!({
        "platformUpdateDomain": 0,
        "platformFaultDomain": 0,
        "computerName": props["osProfile"]["computerName"],
        "osName": if linux { "ubuntu" } else { "Windows Server 2022 Datacenter" },
        "osVersion": if linux { "24.04" } else { "Microsoft Windows NT 10.0.20348.0" },
        "vmAgent": {"vmAgentVersion": "2.7.41491.1102", "statuses": [{"code": "ProvisioningState/succeeded",
            "level": "Info", "displayStatus": "Ready", "message": "GuestAgent is running and processing the extensions.",
            "time": super::fleet::rfc3339(now)}]},
        "disks": disks,
        "hyperVGeneration": "V2",
        "isVMInStandbyPool": false,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": created},
            {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}
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
    let expand = if matches!(route, Route::VmListByLocation { .. }) {
        None
    } else {
        ctx.query.get("$expand")
    };
    if let Some(e) = expand {
        if !e.eq_ignore_ascii_case("instanceView") {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "The value '{e}' of parameter '$expand' is not valid. Allowed value is \
                'instanceView'."
                ),
                "$expand",
            );
        }
        if scale_set.is_none() {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                "$expand=instanceView can only be specified with a valid $filter.",
                "$expand",
            );
        }
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
            if expand.is_some() {
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

// ------------------------------------------------------------------------------------------
// Restore point collections
// ------------------------------------------------------------------------------------------

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
        only_members(
            &obj,
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
        let location =
            string_member(&obj, "location", "location")?.filter(|l| !l.trim().is_empty());
        let tags = parse_tags(&obj)?;
        let props = object_member(&obj, "properties", "properties")?;
        let mut source_id = None;
        let mut instant_access = None;
        if let Some(p) = props {
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
            )?;
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
        let Some(location) = location else {
            return Err(Reply::error_with_target(
                400,
                "LocationRequired",
                "The location property is required for this definition.",
                "location",
            ));
        };
        let id = compute_id(sub, rg, "restorePointCollections", name);
        if let Some(existing) = store.collections.get_mut(&id) {
            // A PUT on an existing collection may change only tags.
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
            if !same_location(&existing.location, &location) {
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
            if let Some(s) = &source_id {
                if !s
                    .trim_start_matches('/')
                    .eq_ignore_ascii_case(existing.source_id.trim_start_matches('/'))
                {
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
            if source.is_type("Microsoft.Compute/virtualMachines") {
                let vm = store.vms.get(&source).ok_or_else(|| {
                    Reply::error_with_target(404, "ResourceNotFound",
                format!("The source VM '{source}' of restore point collection '{name}' was not \
                    found."), "properties.source.id")
                })?;
                let vm_location = vm.location();
                if !same_location(&vm_location, &location) {
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
                (vm_location, false)
            } else if source.is_type("Microsoft.Compute/restorePointCollections") {
                let src = store
                    .collections
                    .get(&source)
                    .filter(|c| c.deleting.is_none())
                    .ok_or_else(|| {
                        Reply::error_with_target(
                            404,
                            "ResourceNotFound",
                            format!(
                                "The source restore point collection '{source}' was not found."
                            ),
                            "properties.source.id",
                        )
                    })?;
                if same_location(&src.location, &location) {
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
                        cannot be copied again. Use the original collection as the source."),
                        "properties.source.id",
                    )
                    .event("rule:noCopyOfCopy"));
                }
                (src.location.clone(), true)
            } else {
                return Err(Reply::error_with_target(
                    400,
                    "InvalidParameter",
                    format!(
                        "properties.source.id '{source}' must be a virtual machine or, for \
                    cross-region copy, a restore point collection."
                    ),
                    "properties.source.id",
                ));
            };
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
            )?;
            if let Some(src) = object_member(p, "source", "properties.source")? {
                if let Some(s) = string_member(src, "id", "properties.source.id")? {
                    if !s
                        .trim_start_matches('/')
                        .eq_ignore_ascii_case(existing.source_id.trim_start_matches('/'))
                    {
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
    let expand = match ctx.query.get("$expand") {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("restorePoints") => true,
        Some(e) => {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "The value '{e}' of parameter '$expand' is not valid. Allowed value is \
                'restorePoints'."
                ),
                "$expand",
            )
        }
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

// ------------------------------------------------------------------------------------------
// Restore points
// ------------------------------------------------------------------------------------------

/// The effective input of a restore point PUT, for the "cannot be updated" comparison.
#[derive(Debug, PartialEq)]
struct PointInput {
    mode: Option<ConsistencyMode>,
    exclude: Vec<String>,
    instant_access_minutes: Option<i32>,
    source: Option<String>,
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
    let same = input.mode.as_ref().is_none_or(|m| *m == existing.mode)
        && same_ids(&input.exclude, &existing.exclude_disks)
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

fn disk_facts(store: &Store, vm: &super::state::VmRecord) -> Vec<DiskFacts> {
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
            })
        })
        .collect()
}

fn is_fast_disk(d: &DiskFacts) -> bool {
    d.storage_account_type.as_deref().is_some_and(|s| {
        s.eq_ignore_ascii_case("UltraSSD_LRS") || s.eq_ignore_ascii_case("PremiumV2_LRS")
    })
}

fn create_local(
    store: &mut Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    id: &ResourceId,
    input: PointInput,
) -> Reply {
    if input.source.is_some() {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "properties.sourceRestorePoint can only be set on a restore point in a \
                collection made for cross-region copy; collection '{}' has a VM as \
                its source.",
                coll.id.name().unwrap_or_default()
            ),
            "properties.sourceRestorePoint",
        );
    }
    let vm_id = match ResourceId::parse(&coll.source_id) {
        Ok(v) => v,
        Err(e) => return Reply::error(400, "InvalidParameter", e.to_string()),
    };
    let Some(vm) = store.vms.get(&vm_id).cloned() else {
        return Reply::error_with_target(
            404,
            "ResourceNotFound",
            format!(
                "The source VM '{vm_id}' of restore point collection '{}' was not found.",
                coll.id.name().unwrap_or_default()
            ),
            "properties.source.id",
        );
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
    let checks = || -> Result<(), Violation> {
        if r.hourly_create_limit {
            let log = store
                .create_log
                .get(&vm_id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            rules::check_hourly(
                "createsPerVmPerHour",
                &format!("restore point creations for VM '{vm_label}'"),
                r.creates_per_vm_per_hour,
                log,
                now,
            )?;
        }
        if r.points_per_vm_cap {
            rules::check_point_cap(&vm_label, vm_points.len(), r.max_points_per_vm)?;
        }
        if r.spacing {
            let last = vm_points
                .iter()
                .filter(|p| !p.is_copy() && p.deleting.is_none())
                .filter(|p| !matches!(p.outcome, Outcome::Failed { .. }))
                .filter(|p| rules::is_app_class(&p.mode) == rules::is_app_class(&mode))
                .map(|p| p.created)
                .max();
            rules::check_spacing(r, &vm_label, &mode, last, now)?;
        }
        if r.unsupported_disks_excluded {
            rules::check_disks(&vm_label, &mode, &included)?;
        }
        Ok(())
    };
    if let Err(v) = checks() {
        return Reply::from_violation(v);
    }
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
    let ready_at = now
        + jitter(
            ctx.seed,
            &format!("{id}/create"),
            ctx.timings.local_create_secs,
        );
    let (meta, disk_ids) = source_metadata(&vm, id, &input.exclude, ctx.seed);
    let error = match &outcome {
        Outcome::Failed { code, message } => Some((code.clone(), message.clone())),
        Outcome::Succeeded => None,
    };
    let op = new_operation(
        store,
        ctx,
        OperationKind::CreateRestorePoint,
        &coll.location,
        id,
        ready_at,
        error,
    );
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
        disks: disk_ids
            .into_iter()
            .map(|id| DiskPoint {
                id,
                replicated_at: None,
            })
            .collect(),
        source_metadata: meta,
        instant_access_disks: coll.instant_access == Some(true)
            && included.iter().any(is_fast_disk),
        operation: op.id.clone(),
        deleting: None,
    };
    store.create_log.entry(vm_id).or_default().push(now);
    let body = rec.render(now, false, ctx.timings.copy_progress_step_secs);
    store.points.insert(id.clone(), rec);
    let mut reply = lro_headers(Reply::json(201, body), ctx, &op).event("restorePointCreated");
    reply.events.extend(reply_events);
    reply
}

fn create_copy(
    store: &mut Store,
    ctx: &Ctx<'_>,
    coll: &CollectionRecord,
    id: &ResourceId,
    input: PointInput,
) -> Reply {
    let coll_label = coll.id.name().unwrap_or_default().to_string();
    let Some(source_raw) = input.source.clone() else {
        return Reply::error_with_target(
            400,
            "InvalidParameter",
            format!(
                "Restore point collection '{coll_label}' is for cross-region copy: \
                properties.sourceRestorePoint.id is required."
            ),
            "properties.sourceRestorePoint.id",
        );
    };
    let source_id = match ResourceId::parse(&source_raw) {
        Ok(s) if s.is_type("Microsoft.Compute/restorePointCollections/restorePoints") => s,
        _ => {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "properties.sourceRestorePoint.id '{source_raw}' is not a restore point id."
                ),
                "properties.sourceRestorePoint.id",
            )
        }
    };
    let Some(source) = store.points.get(&source_id).cloned() else {
        return Reply::error_with_target(
            404,
            "ResourceNotFound",
            format!("The source restore point '{source_id}' was not found."),
            "properties.sourceRestorePoint.id",
        );
    };
    let now = ctx.now;
    let r = ctx.rules;
    let step = ctx.timings.copy_progress_step_secs;
    let checks = || -> Result<(), Violation> {
        if r.no_copy_of_copy {
            rules::check_not_copy_of_copy(source_id.as_str(), source.is_copy())?;
        }
        if r.target_must_reference_source {
            rules::check_target_references_source(
                &coll_label,
                &coll.source_id,
                source.collection.as_str(),
            )?;
        }
        Ok(())
    };
    if let Err(v) = checks() {
        return Reply::from_violation(v);
    }
    match source.phase(now) {
        Phase::Succeeded => {}
        Phase::Creating => {
            return Reply::error(
                409,
                "OperationNotAllowed",
                format!(
                    "Source restore point '{source_id}' is still being created (operation \
                in progress); copy it once it has succeeded."
                ),
            )
        }
        Phase::Deleting => {
            return Reply::error(
                409,
                "OperationNotAllowed",
                format!("Source restore point '{source_id}' is being deleted."),
            )
        }
        Phase::Failed => {
            return Reply::error(
                400,
                "OperationNotAllowed",
                format!(
                    "Source restore point '{source_id}' failed; only succeeded restore \
            points can be copied."
                ),
            )
        }
    }
    let copies: Vec<&PointRecord> = store
        .points_of_collection(&coll.id)
        .into_iter()
        .filter(|p| p.is_copy() && p.deleting.is_none())
        .collect();
    let more_checks = || -> Result<(), Violation> {
        if r.copies_serial_in_order {
            let busy = copies.iter().find(|p| p.copy_in_flight(now, step));
            rules::check_copy_serial(
                &coll_label,
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
            rules::check_copy_order(&coll_label, source_id.as_str(), source.created, newest)?;
        }
        if r.hourly_copy_limit {
            let log = store
                .copy_log
                .get(&coll.id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            rules::check_hourly(
                "copiesPerCollectionPerHour",
                &format!("cross-region copies into collection '{coll_label}'"),
                r.copies_per_collection_per_hour,
                log,
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
        Ok(())
    };
    if let Err(v) = more_checks() {
        return Reply::from_violation(v);
    }
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
    let (meta, disk_ids) = copy_metadata(&source, id, ctx.seed);
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
            }
        })
        .collect();
    let error = match &outcome {
        Outcome::Failed { code, message } => Some((code.clone(), message.clone())),
        Outcome::Succeeded => None,
    };
    let op = new_operation(
        store,
        ctx,
        OperationKind::CreateRestorePoint,
        &coll.location,
        id,
        ready_at,
        error,
    );
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
    };
    store.copy_log.entry(coll.id.clone()).or_default().push(now);
    let body = rec.render(now, false, step);
    store.points.insert(id.clone(), rec);
    let mut reply = lro_headers(Reply::json(201, body), ctx, &op);
    reply.events.extend(events);
    reply
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
    let iv = match ctx.query.get("$expand") {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("instanceView") => true,
        Some(e) => {
            return Reply::error_with_target(
                400,
                "InvalidParameter",
                format!(
                    "The value '{e}' of parameter '$expand' is not valid. Allowed value is \
                'instanceView'."
                ),
                "$expand",
            )
        }
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

    #[test]
    fn vmss_filter() {
        assert_eq!(
            parse_vmss_filter("'virtualMachineScaleSet/id' eq '/subscriptions/s/x'"),
            Some("/subscriptions/s/x".into())
        );
        assert_eq!(parse_vmss_filter("name eq 'x'"), None);
    }

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
                source: None
            }
        );
    }
}
