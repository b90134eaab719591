//! Azure Table storage, as much as the drill ledger uses (`vmrp_azure::table`), path-style like
//! Azurite (`/table/{account}/…`, the account in the path instead of the host): Create Table,
//! Query Entities (one entity by keys, or all with continuation), Insert Entity and Update
//! Entity with `If-Match`. Each rule is cited in docs/emulator-arm.md ("Table storage"):
//!
//! - a bearer token issued by `/msi/token` for `https://storage.azure.com` (401
//!   `InvalidAuthenticationInfo` otherwise, 403 `AuthenticationFailed` without one), and
//!   `x-ms-version` 2019-02-02 or later with it (403 `AuthenticationFailed`: "Bearer is not
//!   supported in this version");
//! - 404 `TableNotFound` for a table not created, 409 `TableAlreadyExists` on a second create;
//! - 409 `EntityAlreadyExists` on inserting an existing entity, 404 `ResourceNotFound` for a
//!   missing one, 412 `UpdateConditionNotSatisfied` when `If-Match` is not the current ETag;
//! - 400 `OutOfRangeInput` for keys holding `/ \ # ?` or control characters, or above 1 KiB;
//! - at most [`TableEmulator::page_size`] entities per page (Azure: 1,000), the rest behind
//!   `x-ms-continuation-NextPartitionKey` / `NextRowKey`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::Value;

use super::identity::IdentityEndpoint;
use crate::azure::ledger::key_problem;

/// The resource storage tokens are issued for.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";
/// The account name the emulator serves (any account in the path works).
pub const ACCOUNT: &str = "vmrpemulator";
/// The oldest `x-ms-version` that accepts a bearer token.
pub const MIN_BEARER_VERSION: &str = "2019-02-02";

type Entities = BTreeMap<(String, String), (Value, u64)>;

/// The tables, per account.
pub struct TableEmulator {
    identity: Arc<IdentityEndpoint>,
    tables: Mutex<BTreeMap<(String, String), Entities>>,
    etag: AtomicU64,
    page_size: AtomicUsize,
    requests: AtomicU64,
}

fn odata_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-ms-error-code", code.to_string())],
        Json(serde_json::json!({"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}})),
    )
        .into_response()
}

impl TableEmulator {
    pub fn new(identity: Arc<IdentityEndpoint>) -> Arc<Self> {
        Arc::new(Self {
            identity,
            tables: Mutex::new(BTreeMap::new()),
            etag: AtomicU64::new(0),
            page_size: AtomicUsize::new(1000),
            requests: AtomicU64::new(0),
        })
    }

    /// Entities per query page (tests lower it to see continuation at work).
    pub fn set_page_size(&self, n: usize) {
        self.page_size.store(n.max(1), Ordering::Relaxed);
    }

    pub fn page_size(&self) -> usize {
        self.page_size.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entities>> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every table and its entities (the control plane's state dump).
    pub fn dump(&self) -> Value {
        let tables = self.lock();
        let out: serde_json::Map<String, Value> = tables
            .iter()
            .map(|((account, table), entities)| {
                (
                    format!("{account}/{table}"),
                    Value::Array(entities.values().map(|(v, _)| v.clone()).collect()),
                )
            })
            .collect();
        serde_json::json!({"tables": out, "requests": self.requests.load(Ordering::Relaxed)})
    }

    /// The entities of `table` in the emulator's account (tests read the state directly).
    pub fn entities(&self, table: &str) -> Vec<Value> {
        self.lock()
            .iter()
            .filter(|((_, t), _)| t.eq_ignore_ascii_case(table))
            .flat_map(|(_, e)| e.values().map(|(v, _)| v.clone()))
            .collect()
    }

    /// `/table/{account}/{*rest}`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/table/{account}/{*rest}", any(handle))
            .with_state(self.clone())
    }

    /// `Some(answer)` when the request is refused.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        let Some(auth) = auth else {
            return Some(odata_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request: the Authorization header is missing.",
            ));
        };
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Some(odata_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                "Server failed to authenticate the request: the emulator accepts Microsoft Entra bearer tokens only.",
            ));
        };
        let version = headers
            .get("x-ms-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // ISO dates compare as strings.
        if version.len() != 10 || version < MIN_BEARER_VERSION {
            return Some(odata_error(
                StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                &format!("Authentication scheme Bearer is not supported in this version (x-ms-version {version:?}; {MIN_BEARER_VERSION} or later)."),
            ));
        }
        if !self.identity.verify_bearer(token.trim(), STORAGE_RESOURCE) {
            return Some(odata_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "The access token is invalid, expired, or was not issued for https://storage.azure.com.",
            ));
        }
        None
    }
}

/// `name(PartitionKey='a',RowKey='b')` → `(name, Some((a, b)))`; `name()` and `name` → `(name, None)`.
fn parse_target(rest: &str) -> Result<(String, Option<(String, String)>), String> {
    let Some((name, args)) = rest.split_once('(') else {
        return Ok((rest.to_string(), None));
    };
    let args = args
        .strip_suffix(')')
        .ok_or_else(|| format!("{rest:?}: expected name(PartitionKey='…',RowKey='…')"))?;
    if args.is_empty() {
        return Ok((name.to_string(), None));
    }
    let value = |part: &str, key: &str| -> Result<String, String> {
        let v = part
            .trim()
            .strip_prefix(key)
            .and_then(|p| p.trim_start().strip_prefix('='))
            .map(str::trim)
            .and_then(|p| p.strip_prefix('\''))
            .and_then(|p| p.strip_suffix('\''))
            .ok_or_else(|| format!("{rest:?}: expected {key}='…'"))?;
        Ok(v.replace("''", "'"))
    };
    // Keys are quoted and may hold a comma: split at the `',` that ends the first literal.
    let split = args
        .find("',")
        .ok_or_else(|| format!("{rest:?}: expected PartitionKey='…',RowKey='…'"))?;
    let (first, second) = (&args[..=split], &args[split + 2..]);
    Ok((
        name.to_string(),
        Some((value(first, "PartitionKey")?, value(second, "RowKey")?)),
    ))
}

async fn handle(
    State(t): State<Arc<TableEmulator>>,
    Path((account, rest)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    t.requests.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let headers = request.headers().clone();
    if let Some(r) = t.refuse(&headers) {
        return r;
    }
    let body = match axum::body::to_bytes(request.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => return odata_error(StatusCode::BAD_REQUEST, "InvalidInput", &e.to_string()),
    };
    // `Path` has already percent-decoded the keys.
    let json = || serde_json::from_slice::<Value>(&body).ok();
    if rest == "Tables" && method == Method::POST {
        return match json() {
            Some(v) => create_table(&t, account, &v),
            None => not_json(),
        };
    }
    let (table, keys) = match parse_target(&rest) {
        Ok(x) => x,
        Err(e) => return odata_error(StatusCode::BAD_REQUEST, "InvalidInput", &e),
    };
    let mut tables = t.lock();
    let Some(entities) = tables
        .iter_mut()
        .find(|((a, n), _)| *a == account && n.eq_ignore_ascii_case(&table))
        .map(|(_, e)| e)
    else {
        return odata_error(
            StatusCode::NOT_FOUND,
            "TableNotFound",
            "The table specified does not exist.",
        );
    };
    match (method, keys) {
        (Method::GET, Some(k)) => match entities.get(&k) {
            Some((v, n)) => {
                (StatusCode::OK, [("etag", etag_of(*n))], Json(v.clone())).into_response()
            }
            None => odata_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The specified resource does not exist.",
            ),
        },
        (Method::GET, None) => query_entities(entities, &query, t.page_size()),
        (Method::POST, None) => match json() {
            Some(v) => insert_entity(&t, entities, v),
            None => not_json(),
        },
        (Method::PUT, Some((pk, rk))) => match json() {
            Some(v) => {
                let if_match = headers.get("if-match").and_then(|h| h.to_str().ok());
                update_entity(&t, entities, (pk, rk), v, if_match)
            }
            None => not_json(),
        },
        (m, _) => odata_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            &format!("{m} is not supported here"),
        ),
    }
}

fn not_json() -> Response {
    odata_error(
        StatusCode::BAD_REQUEST,
        "InvalidInput",
        "the body is not JSON",
    )
}

/// An entity's ETag for its version `n`.
fn etag_of(n: u64) -> String {
    format!("W/\"datetime'{n}'\"")
}

/// Create Table: `{"TableName": …}`; names are case-insensitive and 3–63 alphanumerics.
fn create_table(t: &TableEmulator, account: String, v: &Value) -> Response {
    let Some(name) = v["TableName"].as_str() else {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "PropertiesNeedValue",
            "TableName is required",
        );
    };
    let valid = (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if !valid {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            "The specifed resource name contains invalid characters.",
        );
    }
    let mut tables = t.lock();
    if tables
        .keys()
        .any(|(a, n)| *a == account && n.eq_ignore_ascii_case(name))
    {
        return odata_error(
            StatusCode::CONFLICT,
            "TableAlreadyExists",
            "The table specified already exists.",
        );
    }
    tables.insert((account, name.to_string()), Entities::new());
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"TableName": name})),
    )
        .into_response()
}

/// Query Entities over the whole table, `page` at a time, continued from
/// `NextPartitionKey`/`NextRowKey`.
fn query_entities(entities: &Entities, query: &BTreeMap<String, String>, page: usize) -> Response {
    let from = match (query.get("NextPartitionKey"), query.get("NextRowKey")) {
        (Some(pk), rk) => Some((pk.clone(), rk.cloned().unwrap_or_default())),
        _ => None,
    };
    let mut rows = entities
        .iter()
        .filter(|(k, _)| from.as_ref().is_none_or(|f| *k >= f))
        .map(|(k, (v, _))| (k.clone(), v.clone()));
    let value: Vec<Value> = rows.by_ref().take(page).map(|(_, v)| v).collect();
    let next = rows.next().map(|(k, _)| k);
    let mut rsp = Json(serde_json::json!({ "value": value })).into_response();
    if let Some((pk, rk)) = next {
        let h = rsp.headers_mut();
        if let (Ok(pk), Ok(rk)) = (pk.parse(), rk.parse()) {
            h.insert("x-ms-continuation-NextPartitionKey", pk);
            h.insert("x-ms-continuation-NextRowKey", rk);
        }
    }
    rsp
}

/// The answer to keys Azure refuses, if one is.
fn bad_keys(pk: &str, rk: &str) -> Option<Response> {
    key_problem(pk).or_else(|| key_problem(rk)).map(|p| {
        odata_error(
            StatusCode::BAD_REQUEST,
            "OutOfRangeInput",
            &format!("One of the request inputs is out of range: {p}."),
        )
    })
}

/// Insert Entity: refused with 409 when the keys exist.
fn insert_entity(t: &TableEmulator, entities: &mut Entities, v: Value) -> Response {
    let key = |name: &str| v[name].as_str().map(str::to_string);
    let (Some(pk), Some(rk)) = (key("PartitionKey"), key("RowKey")) else {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "PropertiesNeedValue",
            "PartitionKey and RowKey are required.",
        );
    };
    if let Some(r) = bad_keys(&pk, &rk) {
        return r;
    }
    if entities.contains_key(&(pk.clone(), rk.clone())) {
        return odata_error(
            StatusCode::CONFLICT,
            "EntityAlreadyExists",
            "The specified entity already exists.",
        );
    }
    let n = t.etag.fetch_add(1, Ordering::Relaxed) + 1;
    entities.insert((pk, rk), (v, n));
    (StatusCode::NO_CONTENT, [("etag", etag_of(n))]).into_response()
}

/// Update Entity (with `If-Match`: the entity must exist with that ETag, 412 else) or, without
/// it, Insert Or Replace.
fn update_entity(
    t: &TableEmulator,
    entities: &mut Entities,
    (pk, rk): (String, String),
    mut v: Value,
    if_match: Option<&str>,
) -> Response {
    if let Some(r) = bad_keys(&pk, &rk) {
        return r;
    }
    let current = entities.get(&(pk.clone(), rk.clone())).map(|(_, n)| *n);
    match (if_match, current) {
        (Some("*"), Some(_)) => {}
        (Some(m), Some(n)) if m == etag_of(n) => {}
        (Some(_), Some(_)) => {
            return odata_error(
                StatusCode::PRECONDITION_FAILED,
                "UpdateConditionNotSatisfied",
                "The update condition specified in the request was not satisfied.",
            )
        }
        (Some(_), None) => {
            return odata_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The specified resource does not exist.",
            )
        }
        (None, _) => {}
    }
    v["PartitionKey"] = Value::String(pk.clone());
    v["RowKey"] = Value::String(rk.clone());
    let n = t.etag.fetch_add(1, Ordering::Relaxed) + 1;
    entities.insert((pk, rk), (v, n));
    (StatusCode::NO_CONTENT, [("etag", etag_of(n))]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::credential::StaticToken;
    use crate::azure::table::TableLedger;
    use crate::azure::{DrillLedger, DrillRecord};
    use crate::server::{self, EmulatorConfig, RunningEmulator};
    use std::time::Duration;
    use time::macros::datetime;

    async fn emulator() -> RunningEmulator {
        server::start(EmulatorConfig::default()).await.unwrap()
    }

    fn token(emu: &RunningEmulator, resource: &str) -> String {
        emu.identity.issue(resource, None).access_token
    }

    /// One raw request: (status, error code).
    async fn call(
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        version: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut rb = reqwest::Client::new()
            .request(method, url)
            .header("x-ms-version", version)
            .header("accept", "application/json;odata=nometadata");
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        if let Some(m) = if_match {
            rb = rb.header("if-match", m);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let rsp = rb.send().await.unwrap();
        let status = rsp.status().as_u16();
        let v: Value = rsp.json().await.unwrap_or(Value::Null);
        (
            status,
            v["odata.error"]["code"].as_str().unwrap_or("").to_string(),
        )
    }

    #[tokio::test]
    async fn the_table_endpoint_answers_azures_errors() {
        let emu = emulator().await;
        let base = emu.urls.drill_table.rsplit_once('/').unwrap().0.to_string();
        let storage = token(&emu, STORAGE_RESOURCE);
        let arm = token(&emu, "https://management.azure.com");
        let v = MIN_BEARER_VERSION;
        let entity = format!("{base}/vmrpdrills(PartitionKey='p',RowKey='r')");
        let get = |t: Option<String>, version: &'static str| {
            let url = entity.clone();
            async move { call(reqwest::Method::GET, url, t.as_deref(), version, None, None).await }
        };
        // Authentication: none, a token for ARM, a version without bearer support.
        assert_eq!(get(None, v).await, (403, "AuthenticationFailed".into()));
        assert_eq!(
            get(Some(arm), v).await,
            (401, "InvalidAuthenticationInfo".into())
        );
        assert_eq!(
            get(Some(storage.clone()), "2018-03-28").await,
            (403, "AuthenticationFailed".into())
        );
        // No table yet.
        assert_eq!(
            get(Some(storage.clone()), v).await,
            (404, "TableNotFound".into())
        );
        let create = || {
            call(
                reqwest::Method::POST,
                format!("{base}/Tables"),
                Some(&storage),
                v,
                None,
                Some(serde_json::json!({"TableName": "vmrpdrills"})),
            )
        };
        assert_eq!(create().await.0, 201);
        assert_eq!(create().await, (409, "TableAlreadyExists".into()));
        assert_eq!(
            get(Some(storage.clone()), v).await,
            (404, "ResourceNotFound".into())
        );
        let insert = |pk: &str| {
            call(
                reqwest::Method::POST,
                format!("{base}/vmrpdrills"),
                Some(&storage),
                v,
                None,
                Some(serde_json::json!({"PartitionKey": pk, "RowKey": "r", "x": 1})),
            )
        };
        assert_eq!(insert("a/b").await, (400, "OutOfRangeInput".into()));
        assert_eq!(insert("p").await.0, 204);
        assert_eq!(insert("p").await, (409, "EntityAlreadyExists".into()));
        let put = |etag: &'static str| {
            call(
                reqwest::Method::PUT,
                entity.clone(),
                Some(&storage),
                v,
                Some(etag),
                Some(serde_json::json!({"x": 2})),
            )
        };
        assert_eq!(
            put("W/\"datetime'999'\"").await,
            (412, "UpdateConditionNotSatisfied".into())
        );
        assert_eq!(put("*").await.0, 204);
        assert_eq!(emu.table.entities("vmrpdrills")[0]["x"], 2);
        emu.stop().await.unwrap();
    }

    fn record(vm: usize, region: &str, passed: bool, day: i64) -> DrillRecord {
        let tick = datetime!(2026-12-01 02:30 UTC) + time::Duration::days(day);
        DrillRecord::of(
            &crate::policy::drills::DrillResult {
                vm: format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm{vm}"),
                region: region.into(),
                copy: false,
                point: Some(format!("rp-{day}")),
                passed,
                reason: (!passed).then(|| "refused".into()),
                seconds_to_restore: passed.then_some(day as f64),
                disks: Vec::new(),
                cleaned: true,
            },
            tick,
        )
    }

    /// The Table client against the endpoint: it creates the table, writes concurrently from
    /// many "instances" without losing the newest pass (ETag conflicts are retried), and
    /// reads every page behind the continuation headers.
    #[tokio::test]
    async fn the_ledger_creates_merges_concurrently_and_pages() {
        let emu = emulator().await;
        emu.table.set_page_size(2);
        let ledger = Arc::new(
            TableLedger::new(
                &emu.urls.drill_table,
                StaticToken::new(&token(&emu, STORAGE_RESOURCE), Duration::from_secs(600)),
                true,
            )
            .unwrap(),
        );
        // Eight writers of the same VM and region at once: passes on days 0..4, failures 4..8.
        let writers: Vec<_> = (0..8)
            .map(|day| {
                let l = ledger.clone();
                tokio::spawn(async move { l.record(&record(0, "westeurope", day < 4, day)).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        let all = ledger.read_all().await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        let r = &all[0];
        assert_eq!(
            r.last_passed,
            Some(datetime!(2026-12-04 02:30 UTC)),
            "{r:?}"
        );
        assert_eq!(r.last_passed_point.as_deref(), Some("rp-3"));
        assert_eq!(
            (r.last_run, r.last_passed_ok),
            (datetime!(2026-12-08 02:30 UTC), false)
        );
        // Five entities over pages of two: all read.
        for vm in 1..5 {
            ledger
                .record(&record(vm, "northeurope", true, 1))
                .await
                .unwrap();
        }
        assert_eq!(ledger.read_all().await.unwrap().len(), 5);
        emu.stop().await.unwrap();
    }

    #[test]
    fn targets_parse_with_quoted_keys() {
        assert_eq!(parse_target("t").unwrap(), ("t".into(), None));
        assert_eq!(parse_target("t()").unwrap(), ("t".into(), None));
        assert_eq!(
            parse_target("t(PartitionKey='a,b',RowKey='it''s')").unwrap(),
            ("t".into(), Some(("a,b".into(), "it's".into())))
        );
        assert!(parse_target("t(PartitionKey='a')").is_err());
        assert!(parse_target("t(PartitionKey='a',RowKey='b'").is_err());
    }
}
