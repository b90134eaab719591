//! The ARM Compute part of the emulator: restore point collections, restore points (local and
//! cross-region copies), VMs, disks and Compute's operation status URL, faithful to the
//! 2025-04-01 swagger and examples (`reference/arm/`), on the shared virtual clock.
//!
//! Every request under `/subscriptions/...` goes through one pipeline:
//! 1. `latencyMs` fault (a real sleep); then, if [`RuleSwitches::require_authorization`], 401
//!    `AuthenticationFailed` without a bearer token; then, if [`RuleSwitches::role_scopes`] is
//!    set, 403 `AuthorizationFailed` for a request outside the role's assigned scopes, and if
//!    [`RuleSwitches::role_actions`] is set (the default), for an action the role lacks;
//! 2. ARM throttling: the token bucket of (subscription, ARM region, reads|writes|deletes) on
//!    virtual time ([`throttle`]); a refused request is not processed (429 + `Retry-After`);
//! 3. route and api-version checks (400 `MissingApiVersionParameter` / `InvalidApiVersionParameter`);
//! 4. faults drawn from the shared seeded [`Dice`], in this order: `429`, `5xx` (500 or 503),
//!    `drop`; `failedProvisioning` is drawn only when a restore point is actually created;
//! 5. the operation itself ([`routes`]), under one lock, with state computed lazily from the clock;
//! 6. headers on every answer: `x-ms-request-id`, `x-ms-correlation-request-id`, the
//!    `x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}` of the request's class;
//! 7. traffic recording ([`traffic`]) and counters; then, for a `drop` fault, the connection is
//!    closed without an answer.
//!
//! How `drop` closes the connection: the response's body is a stream whose first poll fails.
//! hyper buffers the response head and polls the body before flushing, so the error aborts the
//! connection with nothing written: the client sees the connection closed before any response,
//! while the request was processed (its effects stay). This works behind any tower layer
//! (no panic involved).

pub mod fleet;
pub mod lro;
pub mod routes;
pub mod rules;
pub mod state;
pub mod throttle;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use fleet::{FleetSpec, VmSeed};
pub use rules::{ConcurrentCreateMode, RuleSwitches};
pub use state::Timings;
pub use throttle::ThrottleConfig;

use crate::azure::id::ResourceId;
use crate::azure::models::{RestorePoint, RestorePointCollection, Tags, VirtualMachine};
use crate::clock::VirtualClock;
use crate::faults::{ArmFaults, Dice, FaultConfig};
use routes::{Ctx, Query, Reply, Route};
use state::{Phase, Store, VmRecord};
use throttle::{Admission, OpClass, Throttle};

mod dispatch;

use dispatch::*;

/// Everything that shapes the ARM emulator. All parts have defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmConfig {
    pub fleet: FleetSpec,
    pub rules: RuleSwitches,
    pub timings: Timings,
    pub throttle: ThrottleConfig,
    /// Write every request/response pair as oav traffic files into this directory.
    pub record_traffic: Option<PathBuf>,
}

/// What the emulator has served, for `/_emulator` inspection, `vmrp local` and tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmCounters {
    pub requests: u64,
    /// By operationId (`RestorePoints_Create`, `VirtualMachines_ListAll`, `Operations_Get`, …).
    pub requests_by_operation: BTreeMap<String, u64>,
    pub responses_by_status: BTreeMap<u16, u64>,
    /// 429s served by the token buckets (not by the `429` fault).
    pub throttled: u64,
    pub throttled_by_class: BTreeMap<String, u64>,
    /// By fault kind: `5xx`, `429`, `drop`, `latency`, `failedProvisioning`.
    pub faults_injected: BTreeMap<String, u64>,
    /// Platform rule refusals by rule name (`spacing`, `oneCreatePerVm`, …).
    pub rule_refusals: BTreeMap<String, u64>,
    /// Answers carrying a CloudError body.
    pub cloud_errors: u64,
    /// Successful PUT/PATCH answers.
    pub writes: u64,
    /// Deletions started (202).
    pub deletes: u64,
    pub restore_points_created: u64,
    pub copies_started: u64,
    pub sources_deleted_during_copy: u64,
}

/// A restore point with its state now, for tests and `vmrp local`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointSummary {
    pub id: String,
    pub collection: String,
    pub vm: String,
    pub region: String,
    pub provisioning_state: String,
    pub consistency_mode: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time_created: time::OffsetDateTime,
    pub source_restore_point: Option<String>,
    /// Copies only: lowest per-disk replication percent (`None` when failed).
    pub copy_percent: Option<i32>,
}

/// The ARM emulator. Cheap to share (`Arc`); all state behind locks.
#[derive(Debug)]
pub struct ArmEmulator {
    config: ArmConfig,
    clock: Arc<VirtualClock>,
    dice: Arc<Dice>,
    faults: Arc<FaultConfig>,
    store: Mutex<Store>,
    throttle: Mutex<Throttle>,
    counters: Mutex<ArmCounters>,
    recorder: Option<traffic::Recorder>,
    /// The `arm.outage` fault's window of virtual time, from the clock at start.
    outage: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ArmEmulator {
    /// Seeds the fleet (an invalid [`FleetSpec`] is clamped; call [`FleetSpec::validate`] first
    /// to report it) and opens the traffic directory if asked (on failure, logs and records nothing).
    pub fn new(
        config: ArmConfig,
        clock: Arc<VirtualClock>,
        dice: Arc<Dice>,
        faults: Arc<FaultConfig>,
    ) -> Arc<Self> {
        if let Err(e) = config.fleet.validate() {
            tracing::warn!(error = %e, "invalid fleet spec; out-of-range values are clamped");
        }
        let spec = config.fleet.sanitized();
        // VMs were created 30 days before the clock's start day: the same seed and start day give
        // the same fleet, whatever the start's time of day.
        let created = clock.now().replace_time(time::Time::MIDNIGHT) - time::Duration::days(30);
        let generated = fleet::generate(&spec, created);
        let mut store = Store::default();
        for s in &generated.subscriptions {
            store.add_subscription(s);
        }
        for (s, rg, loc) in &generated.resource_groups {
            store.add_resource_group(s, rg, loc);
        }
        // Generated documents always carry valid ids.
        for d in generated.disks {
            let _ = insert_disk(&mut store, d);
        }
        let start = clock.now();
        for vm in generated.vms {
            let backup = fleet::backup_points_of(&spec, &vm);
            if let (Ok(vm_id), Some((rg, name))) = (insert_vm(&mut store, vm), backup) {
                seed_backup_collection(&mut store, &vm_id, &rg, &name, start, spec.seed);
            }
        }
        for des in generated.encryption_sets {
            let _ = insert_encryption_set(&mut store, des);
        }
        let recorder = config
            .record_traffic
            .as_ref()
            .and_then(|dir| match traffic::Recorder::new(dir) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot record ARM traffic");
                    None
                }
            });
        let outage = faults.arm.outage.as_ref().and_then(|o| {
            o.window(clock.now())
                .map_err(|e| tracing::warn!(error = %e, "ignoring the ARM outage fault"))
                .ok()
        });
        Arc::new(Self {
            outage,
            config,
            clock,
            dice,
            faults,
            store: Mutex::new(store),
            throttle: Mutex::new(Throttle::default()),
            counters: Mutex::new(ArmCounters::default()),
            recorder,
        })
    }

    /// Serves `/subscriptions/...` only.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/subscriptions/{*rest}", axum::routing::any(handle))
            .with_state(self.clone())
    }

    pub fn config(&self) -> &ArmConfig {
        &self.config
    }
    pub fn clock(&self) -> &Arc<VirtualClock> {
        &self.clock
    }

    /// Subscription ids, in the order they were seeded (the fleet's first).
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.store).subscriptions.clone()
    }

    /// Every VM (typed view).
    pub fn list_vms(&self) -> Vec<VirtualMachine> {
        lock(&self.store)
            .vms
            .values()
            .map(VmRecord::typed)
            .collect()
    }

    /// The Disk documents of `vm`'s managed disks the emulator holds (typed as a Disk GET).
    pub fn disks_of(&self, vm: &VirtualMachine) -> Vec<crate::azure::models::Disk> {
        let store = lock(&self.store);
        vm.disks()
            .iter()
            .filter_map(|d| store.disks.get(d.managed_disk_id.as_ref()?))
            .filter_map(|doc| serde_json::from_value(doc.clone()).ok())
            .collect()
    }

    /// Adds (or replaces) a VM from its ARM document (e.g. an example's response body); the
    /// subscription and resource group are created if missing; `properties.userData` is kept
    /// apart and shown only with `$expand=userData`.
    pub fn add_vm(&self, doc: Value) -> Result<ResourceId, String> {
        insert_vm(&mut lock(&self.store), doc)
    }

    /// Adds a VM built from a [`VmSeed`], with its disks.
    pub fn add_vm_seed(&self, seed: &VmSeed) -> Result<ResourceId, String> {
        let (vm, disks) = seed.build();
        let mut store = lock(&self.store);
        for d in disks {
            insert_disk(&mut store, d)?;
        }
        insert_vm(&mut store, vm)
    }

    /// Adds (or replaces) a disk encryption set from its ARM document (`id`, `location`).
    pub fn add_encryption_set(&self, doc: Value) -> Result<ResourceId, String> {
        insert_encryption_set(&mut lock(&self.store), doc)
    }

    /// Adds (or replaces) a disk from its ARM document.
    pub fn add_disk(&self, doc: Value) -> Result<ResourceId, String> {
        insert_disk(&mut lock(&self.store), doc)
    }

    pub fn add_resource_group(&self, subscription: &str, resource_group: &str, location: &str) {
        lock(&self.store).add_resource_group(subscription, resource_group, location);
    }

    /// Deletes a VM (its restore points stay, as in Azure). False if it did not exist.
    pub fn remove_vm(&self, id: &ResourceId) -> bool {
        lock(&self.store).vms.remove(id).is_some()
    }

    /// Replaces a VM's tags. False if the VM does not exist.
    pub fn set_vm_tags(&self, id: &ResourceId, tags: &Tags) -> bool {
        let mut store = lock(&self.store);
        match store.vms.get_mut(id) {
            Some(vm) => {
                vm.doc["tags"] = json!(tags);
                true
            }
            None => false,
        }
    }

    /// Every collection, with its restore points, as GET `$expand=restorePoints` shows them now.
    pub fn collections(&self) -> Vec<RestorePointCollection> {
        let now = self.clock.now();
        let step = self.config.timings.copy_progress_step_secs;
        let mut store = lock(&self.store);
        store.sweep(now);
        store
            .collections
            .values()
            .map(|c| {
                let points = store
                    .points_of_collection(&c.id)
                    .into_iter()
                    .map(|p| p.render(now, false, step))
                    .collect();
                c.render(Some(points))
            })
            .collect()
    }

    /// One restore point as GET shows it now (`None` if it does not exist).
    pub fn restore_point(&self, id: &ResourceId, instance_view: bool) -> Option<RestorePoint> {
        let now = self.clock.now();
        let mut store = lock(&self.store);
        store.sweep(now);
        store.points.get(id).map(|p| {
            p.render(
                now,
                instance_view,
                self.config.timings.copy_progress_step_secs,
            )
        })
    }

    /// Every restore point with its state now.
    pub fn restore_points(&self) -> Vec<PointSummary> {
        let now = self.clock.now();
        let step = self.config.timings.copy_progress_step_secs;
        let mut store = lock(&self.store);
        store.sweep(now);
        store
            .points
            .values()
            .map(|p| PointSummary {
                id: p.id.to_string(),
                collection: p.collection.to_string(),
                vm: p.vm.to_string(),
                region: store
                    .collections
                    .get(&p.collection)
                    .map(|c| c.location.clone())
                    .unwrap_or_default(),
                provisioning_state: p.phase(now).as_str().to_string(),
                consistency_mode: p.mode.as_str().to_string(),
                time_created: p.created,
                source_restore_point: p.source_point.as_ref().map(ToString::to_string),
                copy_percent: if p.is_copy() {
                    p.copy_percent(now, step)
                } else {
                    None
                },
            })
            .collect()
    }

    /// Every resource (VMs with `userData` left out, disks, collections with their points and
    /// instance views, operations) and the counters.
    pub fn dump(&self) -> Value {
        let now = self.clock.now();
        let step = self.config.timings.copy_progress_step_secs;
        let counters = self.counters();
        let mut store = lock(&self.store);
        store.sweep(now);
        let collections: Vec<Value> = store
            .collections
            .values()
            .map(|c| {
                let points = store
                    .points_of_collection(&c.id)
                    .into_iter()
                    .map(|p| p.render(now, true, step))
                    .collect();
                serde_json::to_value(c.render(Some(points))).unwrap_or(Value::Null)
            })
            .collect();
        let resource_groups: Vec<Value> = store
            .resource_groups
            .iter()
            .map(|((sub, _), rg)| json!({"subscription": sub, "name": rg.name, "location": rg.location}))
            .collect();
        let operations: Vec<Value> = store
            .operations
            .values()
            .map(|op| {
                let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
                v["status"] = json!(op.status_body(now).status);
                v
            })
            .collect();
        json!({
            "now": fleet::rfc3339(now),
            "subscriptions": store.subscriptions,
            "resourceGroups": resource_groups,
            "virtualMachines": store.vms.values().map(|v| v.doc.clone()).collect::<Vec<_>>(),
            "disks": store.disks.values().cloned().collect::<Vec<_>>(),
            "restorePointCollections": collections,
            "operations": operations,
            "counters": counters,
        })
    }

    pub fn counters(&self) -> ArmCounters {
        let mut c = lock(&self.counters).clone();
        c.sources_deleted_during_copy = lock(&self.store).sources_deleted_during_copy;
        c
    }

    /// The `arm.outage` fault's window of virtual time, if one is configured.
    pub fn outage_window(&self) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
        self.outage
    }

    /// Where traffic is being recorded, if it is.
    pub fn traffic_dir(&self) -> Option<PathBuf> {
        self.recorder.as_ref().map(|r| r.dir().to_path_buf())
    }

    async fn serve(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let route = routes::parse_route(uri.path());
        let operation = route.operation(&method);
        let (op_name, fault_key, validatable) = operation.unwrap_or(("Unknown", "unknown", false));
        let faults = self.faults.arm_for(fault_key).clone();
        {
            let mut c = lock(&self.counters);
            c.requests += 1;
            *c.requests_by_operation
                .entry(op_name.to_string())
                .or_default() += 1;
        }
        if faults.latency_ms > 0 {
            *lock(&self.counters)
                .faults_injected
                .entry("latency".into())
                .or_default() += 1;
            tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
        }
        let now = self.clock.now();
        let class = OpClass::of_method(&method);
        let query = Query::parse(uri.query());
        let mut remaining: Option<u32> = None;
        let mut drop_connection = false;

        let reply: Reply = 'reply: {
            if let Some(r) = self.outage_reply(now) {
                break 'reply r;
            }
            if let Some(r) = self.authentication_reply(&headers) {
                break 'reply r;
            }
            if let Some(r) = self.authorization_reply(&route, &method, &uri) {
                break 'reply r;
            }
            if let Some(sub) = route.subscription() {
                match self.admit(sub, class, now) {
                    Ok(r) => remaining = Some(r),
                    Err(r) => {
                        remaining = Some(0);
                        break 'reply r;
                    }
                }
            }
            if operation.is_none() {
                break 'reply match route {
                    Route::Unknown { .. } => Reply::error(
                        404,
                        "NotFound",
                        format!("No ARM operation is served at '{}'.", uri.path()),
                    ),
                    _ => Reply::error(
                        405,
                        "MethodNotAllowed",
                        format!("The requested resource does not support http method '{method}'."),
                    ),
                };
            }
            if let Err(r) = routes::check_api_version(route.api_version_rule(), &query) {
                break 'reply r;
            }
            if let Some(r) = self.fault_reply(&faults, now) {
                break 'reply r;
            }
            drop_connection = self.dice.roll(faults.drop);
            let base_url = base_url(&headers);
            let mut store = lock(&self.store);
            store.sweep(now);
            let ctx = Ctx {
                now,
                base_url: &base_url,
                path: uri.path(),
                query: &query,
                seed: self.config.fleet.seed,
                rules: &self.config.rules,
                timings: &self.config.timings,
                dice: &self.dice,
                failed_provisioning: faults.failed_provisioning,
            };
            dispatch(&mut store, &ctx, &route, &method, &body)
        };

        let reply = self.finish(reply, &request_id, class, remaining, &headers, now);
        self.count(&reply, &method);
        if drop_connection {
            *lock(&self.counters)
                .faults_injected
                .entry("drop".into())
                .or_default() += 1;
            return dropped_response();
        }
        if let Some(rec) = &self.recorder {
            let path_and_query = uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(uri.path());
            rec.record(&traffic::Exchange {
                method: method.as_str(),
                path_and_query,
                request_headers: &headers,
                request_body: &body,
                status: reply.status,
                response_headers: &reply.headers,
                response_body: reply.body.as_ref(),
                operation: op_name,
                validatable,
            });
        }
        to_response(reply)
    }

    /// An outage (faults.rs): ARM's front door answers 503 before anything else, with the
    /// ServiceUnavailable CloudError of the `5xx` fault; its end is unknown to the caller, so
    /// Retry-After is the fault's usual 10 s.
    fn outage_reply(&self, now: time::OffsetDateTime) -> Option<Reply> {
        if self
            .outage
            .is_some_and(|(from, until)| from <= now && now < until)
        {
            *lock(&self.counters)
                .faults_injected
                .entry("outage".into())
                .or_default() += 1;
            return Some(
                Reply::error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please retry later.",
                )
                .header("Retry-After", "10"),
            );
        }
        None
    }

    /// 401 for a request without a bearer token (when the rules require one).
    fn authentication_reply(&self, headers: &HeaderMap) -> Option<Reply> {
        if self.config.rules.require_authorization
            && !headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.len() > 7
                        && v.get(..7)
                            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
                })
        {
            return Some(
                Reply::error(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or is \
                    not a bearer token.",
                )
                .header(
                    "WWW-Authenticate",
                    "Bearer authorization_uri=\"https://login.microsoftonline.com/\"",
                ),
            );
        }
        None
    }

    /// RBAC: the main role (its actions at its scopes) or one further assignment
    /// (`role_grants`: its actions at its scope) must allow the call; else its refusal.
    fn authorization_reply(&self, route: &Route, method: &Method, uri: &Uri) -> Option<Reply> {
        if let Some((action, scope)) = route.authorization(method, uri.path()) {
            let path = urlencoding::decode(uri.path())
                .map(|p| p.into_owned())
                .unwrap_or_else(|_| uri.path().to_string());
            // A call the role's actions do not include is refused wherever it lands; a
            // role assigned at resource groups cannot list a subscription.
            let main = self
                .config
                .rules
                .role_actions
                .as_deref()
                .map_or(Ok(()), |actions| {
                    rules::check_role_action(actions, action, &scope)
                })
                .and_then(|()| {
                    self.config
                        .rules
                        .role_scopes
                        .as_deref()
                        .map_or(Ok(()), |scopes| {
                            rules::check_role_scope(scopes, &path, action, &scope)
                        })
                });
            if let Err(v) = main {
                let granted = self
                    .config
                    .rules
                    .role_grants
                    .iter()
                    .any(|g| g.allows(&path, action));
                if !granted {
                    *lock(&self.counters)
                        .rule_refusals
                        .entry(v.rule.to_string())
                        .or_default() += 1;
                    return Some(Reply::error(v.status, v.code, v.message));
                }
            }
        }
        None
    }

    /// ARM's throttling of subscription `sub`: the bucket's remaining count, or the 429.
    fn admit(&self, sub: &str, class: OpClass, now: time::OffsetDateTime) -> Result<u32, Reply> {
        let admission = lock(&self.throttle).admit(&self.config.throttle, sub, class, now);
        match admission {
            Admission::Admitted { remaining: r } => Ok(r),
            Admission::Throttled { retry_after_secs } => {
                let mut c = lock(&self.counters);
                c.throttled += 1;
                *c.throttled_by_class
                    .entry(class.as_str().into())
                    .or_default() += 1;
                Err(Reply::error(
                    429,
                    "SubscriptionRequestsThrottled",
                    format!(
                        "Number of '{}' requests for subscription '{sub}' exceeded. Please try \
                            again after '{retry_after_secs}' seconds after additional tokens are \
                            available. Refer to https://aka.ms/arm-throttling",
                        class.singular()
                    ),
                )
                .header("Retry-After", retry_after_secs.to_string()))
            }
        }
    }

    /// The injected `429` and `5xx` faults (in that order: each rolls the dice).
    fn fault_reply(&self, faults: &ArmFaults, now: time::OffsetDateTime) -> Option<Reply> {
        if self.dice.roll(faults.throttle) {
            *lock(&self.counters)
                .faults_injected
                .entry("429".into())
                .or_default() += 1;
            return Some(compute_throttle_fault(now));
        }
        if self.dice.roll(faults.server_error) {
            *lock(&self.counters)
                .faults_injected
                .entry("5xx".into())
                .or_default() += 1;
            return Some(if self.dice.unit() < 0.5 {
                Reply::error(
                    500,
                    "InternalExecutionError",
                    "An internal execution error occurred. Please retry later.",
                )
            } else {
                Reply::error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please retry later.",
                )
                .header("Retry-After", "10")
            });
        }
        None
    }

    fn finish(
        &self,
        mut reply: Reply,
        request_id: &str,
        class: OpClass,
        remaining: Option<u32>,
        req: &HeaderMap,
        now: time::OffsetDateTime,
    ) -> Reply {
        let mut h = vec![
            // ARM's clock is the virtual one here (hyper would stamp the real time).
            ("date".to_string(), crate::azure::http::http_date(now)),
            ("x-ms-request-id".to_string(), request_id.to_string()),
            (
                "x-ms-correlation-request-id".to_string(),
                request_id.to_string(),
            ),
        ];
        if let Some(r) = remaining {
            h.push((class.remaining_header().to_string(), r.to_string()));
        }
        if let Some(id) = req
            .get("x-ms-client-request-id")
            .and_then(|v| v.to_str().ok())
        {
            h.push(("x-ms-client-request-id".to_string(), id.to_string()));
        }
        if reply.body.is_some() {
            h.push((
                "Content-Type".to_string(),
                "application/json; charset=utf-8".to_string(),
            ));
        }
        h.append(&mut reply.headers);
        reply.headers = h;
        reply
    }

    fn count(&self, reply: &Reply, method: &Method) {
        let mut c = lock(&self.counters);
        *c.responses_by_status.entry(reply.status).or_default() += 1;
        if reply
            .body
            .as_ref()
            .is_some_and(|b| b.get("error").is_some())
        {
            c.cloud_errors += 1;
        }
        if (200..300).contains(&reply.status) && (method == Method::PUT || method == Method::PATCH)
        {
            c.writes += 1;
        }
        for e in &reply.events {
            if let Some(rule) = e.strip_prefix("rule:") {
                *c.rule_refusals.entry(rule.to_string()).or_default() += 1;
            } else if let Some(f) = e.strip_prefix("fault:") {
                *c.faults_injected.entry(f.to_string()).or_default() += 1;
            } else {
                match e.as_str() {
                    "restorePointCreated" => c.restore_points_created += 1,
                    "copyStarted" => c.copies_started += 1,
                    "delete" => c.deletes += 1,
                    _ => {}
                }
            }
        }
    }
}

/// Azure Backup's collection of a Backup-protected fleet VM: in the Backup resource group
/// (same subscription and region), [`fleet::BACKUP_POINTS_PER_VM`] daily points of the days
/// before `start` (Succeeded, application-consistent: what instant restore keeps), plus the
/// snapshot job of `start`'s day, `Creating` from 15 minutes before `start` to 30 minutes
/// after it: a create vmrp sends for the VM meanwhile meets the one-create-per-VM rule, as it
/// would meet Backup's job in Azure. Backup's points count against the VM's 500.
fn seed_backup_collection(
    store: &mut Store,
    vm_id: &ResourceId,
    rg: &str,
    name: &str,
    start: time::OffsetDateTime,
    seed: u64,
) {
    let Some(vm) = store.vms.get(vm_id).cloned() else {
        return;
    };
    let sub = vm_id.subscription().to_string();
    let location = vm.location();
    store.add_resource_group(&sub, rg, &location);
    let Ok(coll_id) = ResourceId::new_in_group(
        &sub,
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        name,
    ) else {
        return;
    };
    store.collections.insert(
        coll_id.clone(),
        state::CollectionRecord {
            id: coll_id.clone(),
            location: location.clone(),
            tags: None,
            source_id: vm_id.to_string(),
            source_location: location.clone(),
            is_copy_target: false,
            instant_access: None,
            guid: fleet::det_uuid(seed, &format!("{coll_id}/guid")),
            deleting: None,
        },
    );
    let job = start - time::Duration::minutes(15);
    let days = i64::from(fleet::BACKUP_POINTS_PER_VM);
    for day in (0..=days).rev() {
        let created = job - time::Duration::days(day);
        let point_id = coll_id.child(
            "restorePoints",
            &format!("AzureBackup_{}", created.unix_timestamp()),
        );
        let (meta, disk_ids) = state::source_metadata(&vm, &point_id, &[], seed);
        store.points.insert(
            point_id.clone(),
            state::PointRecord {
                id: point_id.clone(),
                collection: coll_id.clone(),
                vm: vm_id.clone(),
                // Backup's snapshots are application-consistent where the VM agent can (VSS).
                mode: crate::azure::models::ConsistencyMode::ApplicationConsistent,
                exclude_disks: Vec::new(),
                instant_access_minutes: None,
                source_point: None,
                source_created: None,
                created,
                ready_at: created + time::Duration::minutes(45),
                outcome: state::Outcome::Succeeded,
                disks: disk_ids
                    .into_iter()
                    .map(|id| state::DiskPoint {
                        id,
                        // Backup's snapshots here are settled (older than any background copy).
                        ..Default::default()
                    })
                    .collect(),
                source_metadata: meta,
                instant_access_disks: false,
                operation: String::new(),
                deleting: None,
                terminate_at: None,
                encryption: Default::default(),
            },
        );
    }
}

fn insert_vm(store: &mut Store, mut doc: Value) -> Result<ResourceId, String> {
    let id_text = doc["id"]
        .as_str()
        .ok_or("VM document: 'id' (string) is required")?;
    let id = ResourceId::parse(id_text).map_err(|e| format!("VM document: {e}"))?;
    if !id.is_type("Microsoft.Compute/virtualMachines") {
        return Err(format!(
            "VM document: 'id' {id} is not a Microsoft.Compute/virtualMachines id"
        ));
    }
    let location = doc["location"]
        .as_str()
        .ok_or("VM document: 'location' (string) is required")?
        .to_string();
    // Rendering writes into `properties`, so it must be an object.
    if !matches!(doc.get("properties"), None | Some(Value::Object(_))) {
        return Err("VM document: 'properties' must be an object".into());
    }
    let user_data = doc["properties"]
        .as_object_mut()
        .and_then(|p| {
            p.remove("instanceView");
            p.remove("userData")
        })
        .and_then(|u| u.as_str().map(str::to_string));
    let rg = id
        .resource_group()
        .ok_or("VM document: 'id' has no resource group")?
        .to_string();
    store.add_resource_group(id.subscription(), &rg, &location);
    store.vms.insert(id.clone(), VmRecord { doc, user_data });
    Ok(id)
}

fn insert_encryption_set(store: &mut Store, doc: Value) -> Result<ResourceId, String> {
    let id = doc["id"]
        .as_str()
        .ok_or("disk encryption set document: 'id' (string) is required")
        .and_then(|t| ResourceId::parse(t).map_err(|_| "disk encryption set document: bad 'id'"))?;
    if !id.is_type("Microsoft.Compute/diskEncryptionSets") {
        return Err(format!(
            "{id} is not a Microsoft.Compute/diskEncryptionSets id"
        ));
    }
    if doc["location"].as_str().is_none_or(str::is_empty) {
        return Err(format!("disk encryption set {id}: 'location' is required"));
    }
    store.encryption_sets.insert(id.clone(), doc);
    Ok(id)
}

fn insert_disk(store: &mut Store, doc: Value) -> Result<ResourceId, String> {
    let id_text = doc["id"]
        .as_str()
        .ok_or("disk document: 'id' (string) is required")?;
    let id = ResourceId::parse(id_text).map_err(|e| format!("disk document: {e}"))?;
    if !id.is_type("Microsoft.Compute/disks") {
        return Err(format!(
            "disk document: 'id' {id} is not a Microsoft.Compute/disks id"
        ));
    }
    let location = doc["location"].as_str().unwrap_or_default().to_string();
    let rg = id
        .resource_group()
        .ok_or("disk document: 'id' has no resource group")?
        .to_string();
    store.add_resource_group(id.subscription(), &rg, &location);
    store.disks.insert(id.clone(), doc);
    Ok(id)
}

impl PointSummary {
    /// True once the point is settled: local `Succeeded`, or a copy replicated to 100 %.
    pub fn is_settled(&self) -> bool {
        self.provisioning_state == Phase::Succeeded.as_str()
            && self.copy_percent.is_none_or(|p| p >= 100)
    }
}

#[cfg(test)]
mod tests;
