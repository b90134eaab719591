//! Composition: one listener on 127.0.0.1 serving ARM (`/subscriptions/...`, behind the token
//! check), Service Bus (`/{queue}/messages`), the identity endpoint (`/msi/token`), Table
//! storage (`/table/{account}/...`, the drill ledger) and the control plane:
//!
//! | route | what |
//! |---|---|
//! | `GET /_emulator/state` | everything: ARM resources + counters, queues, messages, dead letters, identity, requests per service/status, host simulation (invocations, restarts) |
//! | `GET /_emulator/clock` · `POST /_emulator/clock/advance` `{"seconds"\|"minutes"\|"hours": n}` | virtual clock |
//! | `GET /_emulator/queues` · `GET /_emulator/queues/{q}/messages` · `GET /_emulator/queues/{q}/deadletters` | Service Bus inspection |
//! | `POST /_emulator/eventgrid` | inject an event or array (Event Grid or CloudEvents schema) into the host simulation |
//! | `GET /_emulator/invocations` | invocation records of the host simulation |
//! | `POST /_emulator/handler/kill` | SIGKILL the custom handler (it is restarted) |
//! | `POST /_emulator/timers/{function}/fire` | run a timer function now |
//! | `PUT /_emulator/auth/arm` `{"required": bool}` | switch the ARM token check |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::arm::{ArmConfig, ArmEmulator};
use super::clock::VirtualClock;
use super::faults::{Dice, FaultConfig};
use super::host_sim::{HostSim, HostSimConfig, HostSimError};
use super::identity::{require_arm_token, IdentityEndpoint};
use super::servicebus::{BusConfig, ServiceBus};
use super::table::TableEmulator;

/// Why the emulator could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on 127.0.0.1:{port}: {reason}")]
    Bind { port: u16, reason: String },
    #[error("invalid setting {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot write the state dump to {path}: {reason}")]
    Dump { path: PathBuf, reason: String },
    #[error(transparent)]
    HostSim(#[from] HostSimError),
    #[error("server error: {0}")]
    Serve(String),
}

/// Everything the emulator is started with.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// 0 = any free port.
    pub port: u16,
    /// Virtual seconds per real second.
    pub speed: f64,
    /// Virtual time at start.
    pub start: OffsetDateTime,
    /// Seed of every random fault decision (and the ARM fleet unless the fleet sets its own).
    pub seed: u64,
    pub faults: FaultConfig,
    pub arm: ArmConfig,
    /// Service Bus namespace, queues, SAS key material, delivery settings.
    pub bus: BusConfig,
    /// The `X-IDENTITY-HEADER` secret (`IDENTITY_HEADER` for the handler).
    pub identity_header: String,
    /// ARM requests need a bearer token from `/msi/token` (switchable at runtime).
    pub require_arm_auth: bool,
    /// Written as JSON on [`RunningEmulator::stop`].
    pub dump_state: Option<PathBuf>,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("port", &self.port)
            .field("speed", &self.speed)
            .field("start", &self.start)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .field("arm", &self.arm)
            .field("bus", &self.bus)
            .field("identity_header", &"<redacted>")
            .field("require_arm_auth", &self.require_arm_auth)
            .field("dump_state", &self.dump_state)
            .finish()
    }
}

/// A random secret (test material, but still never logged).
fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            port: 0,
            speed: 1.0,
            start: now.replace_nanosecond(0).unwrap_or(now),
            seed: 0,
            faults: FaultConfig::default(),
            arm: ArmConfig::default(),
            bus: BusConfig {
                sas_key: random_secret(),
                ..BusConfig::default()
            },
            identity_header: uuid::Uuid::new_v4().simple().to_string(),
            require_arm_auth: true,
            dump_state: None,
        }
    }
}

/// How a handler authenticates to the emulated Service Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BusAuth {
    /// A connection string with the namespace's shared access key.
    #[default]
    Sas,
    /// Entra tokens from the managed-identity endpoint (resource https://servicebus.azure.net).
    Identity,
}

/// The base URLs of a running emulator.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmulatorUrls {
    /// ARM base (`VMRP_ARM_ENDPOINT`).
    pub arm: String,
    /// Service Bus base (`VMRP_SERVICEBUS_ENDPOINT`); queues at `{serviceBus}/{queue}/messages`.
    pub service_bus: String,
    /// Full token URL (`IDENTITY_ENDPOINT`).
    pub identity: String,
    /// Control plane base.
    pub control: String,
    /// The drill ledger's table (`VMRP_DRILL_TABLE_URL`): Table storage at
    /// `{base}/table/{account}/`, table `vmrpdrills`.
    pub drill_table: String,
}

/// State shared by the control routes.
struct Control {
    clock: Arc<VirtualClock>,
    bus: Arc<ServiceBus>,
    arm: Arc<ArmEmulator>,
    identity: Arc<IdentityEndpoint>,
    table: Arc<TableEmulator>,
    host_sim: Mutex<Option<Arc<HostSim>>>,
    requests: Mutex<BTreeMap<String, u64>>,
}

impl Control {
    fn host_sim(&self) -> Option<Arc<HostSim>> {
        self.host_sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn dump(&self) -> Value {
        serde_json::json!({
            "clock": clock_json(&self.clock),
            "arm": self.arm.dump(),
            "armCounters": self.arm.counters(),
            "serviceBus": self.bus.dump(),
            "identity": self.identity.counters(),
            "table": self.table.dump(),
            "requests": *self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            "hostSim": self.host_sim().map(|s| s.dump()),
        })
    }
}

fn clock_json(clock: &VirtualClock) -> Value {
    let now = clock.now();
    serde_json::json!({
        "now": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "speed": clock.speed(),
    })
}

/// A running emulator. Dropping it without [`RunningEmulator::stop`] aborts the server.
pub struct RunningEmulator {
    pub urls: EmulatorUrls,
    pub local_addr: SocketAddr,
    pub sas_key_name: String,
    pub sas_key: String,
    pub identity_header: String,
    pub subscriptions: Vec<String>,
    pub clock: Arc<VirtualClock>,
    pub bus: Arc<ServiceBus>,
    pub arm: Arc<ArmEmulator>,
    pub identity: Arc<IdentityEndpoint>,
    /// Table storage (the drill ledger).
    pub table: Arc<TableEmulator>,
    control: Arc<Control>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dump_state: Option<PathBuf>,
}

impl std::fmt::Debug for RunningEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEmulator")
            .field("urls", &self.urls)
            .field("sas_key_name", &self.sas_key_name)
            .field("sas_key", &"<redacted>")
            .field("identity_header", &"<redacted>")
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Starts every service on one 127.0.0.1 listener.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    if !(config.speed.is_finite() && config.speed > 0.0) {
        return Err(EmulatorError::Config {
            field: "speed",
            reason: format!("must be a positive number, got {}", config.speed),
        });
    }
    if config.bus.sas_key.is_empty() || config.bus.sas_key_name.is_empty() {
        return Err(EmulatorError::Config {
            field: "bus.sas_key",
            reason: "SAS key name and key must not be empty".into(),
        });
    }
    if config.start > super::clock::LATEST {
        return Err(EmulatorError::Config {
            field: "start",
            reason: format!(
                "{} is too late: the virtual clock must start before {} (schedules and deadlines look years ahead)",
                crate::schedule::rfc3339(config.start),
                crate::schedule::rfc3339(super::clock::LATEST)
            ),
        });
    }
    let clock = Arc::new(VirtualClock::new(config.start, config.speed));
    let dice = Arc::new(Dice::new(config.seed));
    let faults = Arc::new(config.faults.clone());
    let identity = IdentityEndpoint::new(config.identity_header.clone(), config.require_arm_auth);
    let bus = ServiceBus::new(
        config.bus.clone(),
        clock.clone(),
        dice.clone(),
        faults.clone(),
        identity.clone(),
    );
    let arm = ArmEmulator::new(config.arm.clone(), clock.clone(), dice, faults);
    let table = TableEmulator::new(identity.clone());
    let control = Arc::new(Control {
        clock: clock.clone(),
        bus: bus.clone(),
        arm: arm.clone(),
        identity: identity.clone(),
        table: table.clone(),
        host_sim: Mutex::new(None),
        requests: Mutex::new(BTreeMap::new()),
    });

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .map_err(|e| EmulatorError::Bind {
            port: config.port,
            reason: e.to_string(),
        })?;
    let local_addr = listener.local_addr().map_err(|e| EmulatorError::Bind {
        port: config.port,
        reason: e.to_string(),
    })?;
    let app = router(&control);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    let base = format!("http://{local_addr}");
    tracing::info!(%base, "emulator listening");
    Ok(RunningEmulator {
        urls: EmulatorUrls {
            arm: base.clone(),
            service_bus: base.clone(),
            identity: format!("{base}/msi/token"),
            control: format!("{base}/_emulator"),
            drill_table: format!("{base}/table/{}/vmrpdrills", super::table::ACCOUNT),
        },
        local_addr,
        sas_key_name: config.bus.sas_key_name.clone(),
        sas_key: config.bus.sas_key.clone(),
        identity_header: config.identity_header.clone(),
        subscriptions: arm.subscriptions(),
        clock,
        bus,
        arm,
        identity,
        table,
        control,
        shutdown: Some(tx),
        server: Some(server),
        dump_state: config.dump_state,
    })
}

fn router(control: &Arc<Control>) -> Router {
    let arm = control
        .arm
        .router()
        .layer(axum::middleware::from_fn_with_state(
            control.identity.clone(),
            require_arm_token,
        ));
    let control_routes = Router::new()
        .route("/_emulator/state", get(state_handler))
        .route("/_emulator/clock", get(clock_handler))
        .route("/_emulator/clock/advance", post(advance_handler))
        .route("/_emulator/eventgrid", post(eventgrid_handler))
        .route("/_emulator/invocations", get(invocations_handler))
        .route("/_emulator/handler/kill", post(kill_handler))
        .route(
            "/_emulator/timers/{function}/fire",
            post(fire_timer_handler),
        )
        .route("/_emulator/auth/arm", put(arm_auth_handler))
        .with_state(control.clone());
    Router::new()
        .merge(control_routes)
        .merge(control.bus.inspect_router())
        .merge(control.identity.router())
        .merge(control.table.router())
        .merge(control.bus.router())
        .merge(arm)
        .layer(axum::middleware::from_fn_with_state(
            control.clone(),
            count_requests,
        ))
}

/// Counts requests per service and status (`"arm 200"`, `"serviceBus 401"`, ...).
async fn count_requests(
    State(control): State<Arc<Control>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let service = if path.starts_with("/subscriptions") {
        "arm"
    } else if path.starts_with("/msi/") {
        "identity"
    } else if path.starts_with("/table/") {
        "table"
    } else if path.starts_with("/_emulator") {
        "control"
    } else {
        "serviceBus"
    };
    let response = next.run(request).await;
    let key = format!("{service} {}", response.status().as_u16());
    *control
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn state_handler(State(control): State<Arc<Control>>) -> Json<Value> {
    Json(control.dump())
}

async fn clock_handler(State(control): State<Arc<Control>>) -> Json<Value> {
    Json(clock_json(&control.clock))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    #[serde(default)]
    seconds: f64,
    #[serde(default)]
    minutes: f64,
    #[serde(default)]
    hours: f64,
}

async fn advance_handler(State(control): State<Arc<Control>>, body: axum::body::Bytes) -> Response {
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"seconds\"|\"minutes\"|\"hours\": number}}: {e}"),
            )
        }
    };
    let total = advance.seconds + advance.minutes * 60.0 + advance.hours * 3600.0;
    if !(total.is_finite() && total >= 0.0) {
        return error(
            StatusCode::BAD_REQUEST,
            "the clock only moves forward: give a non-negative amount",
        );
    }
    // Checked: a huge amount (`{"hours": 1e8}`) is a 400, not a panic holding the clock lock.
    let advanced = time::Duration::checked_seconds_f64(total)
        .ok_or_else(|| format!("{total} seconds is out of range"))
        .and_then(|by| control.clock.try_advance(by));
    if let Err(why) = advanced {
        return error(StatusCode::BAD_REQUEST, why);
    }
    Json(clock_json(&control.clock)).into_response()
}

async fn eventgrid_handler(
    State(control): State<Arc<Control>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(sim) = control.host_sim() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Functions host simulation is running (start `vmrp emulate --app-root DIR`)",
        );
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    match sim.inject_events(value) {
        Ok(ids) => (StatusCode::ACCEPTED, Json(serde_json::json!({"ids": ids}))).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn invocations_handler(State(control): State<Arc<Control>>) -> Response {
    match control.host_sim() {
        Some(sim) => Json(sim.records()).into_response(),
        None => Json(Vec::<Value>::new()).into_response(),
    }
}

async fn kill_handler(State(control): State<Arc<Control>>) -> Response {
    match control.host_sim() {
        Some(sim) => {
            sim.kill_handler();
            StatusCode::ACCEPTED.into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no handler is running"),
    }
}

async fn fire_timer_handler(
    State(control): State<Arc<Control>>,
    Path(function): Path<String>,
) -> Response {
    let Some(sim) = control.host_sim() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Functions host simulation is running",
        );
    };
    match sim.fire_timer(&function).await {
        Ok(record) => Json(record).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmAuth {
    required: bool,
}

async fn arm_auth_handler(
    State(control): State<Arc<Control>>,
    body: axum::body::Bytes,
) -> Response {
    match serde_json::from_slice::<ArmAuth>(&body) {
        Ok(a) => {
            control.identity.set_arm_auth_required(a.required);
            Json(control.identity.counters()).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"required\": true|false}}: {e}"),
        ),
    }
}

impl RunningEmulator {
    /// `Endpoint=sb://{namespace}.servicebus.windows.net/;...`: the namespace name SAS clients
    /// sign; point them here with `VMRP_SERVICEBUS_ENDPOINT` = [`EmulatorUrls::service_bus`].
    /// A test secret, but a secret: do not log it.
    pub fn service_bus_connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{}.servicebus.windows.net/;SharedAccessKeyName={};SharedAccessKey={}",
            self.bus.config().namespace,
            self.sas_key_name,
            self.sas_key
        )
    }

    /// The app settings a handler needs to use this emulator: ARM and Service Bus base URLs,
    /// the managed-identity endpoint, and the `ServiceBusConnection` as a SAS connection string
    /// or, with [`BusAuth::Identity`], as `__fullyQualifiedNamespace` + managed identity.
    pub fn handler_settings(&self, bus_auth: BusAuth) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::from([
            ("VMRP_ARM_ENDPOINT".to_string(), self.urls.arm.clone()),
            // ARM's token audience stays the public cloud's, whatever URL serves it.
            (
                "VMRP_ARM_AUDIENCE".to_string(),
                "https://management.azure.com".to_string(),
            ),
            (
                "VMRP_SERVICEBUS_ENDPOINT".to_string(),
                self.urls.service_bus.clone(),
            ),
            ("IDENTITY_ENDPOINT".to_string(), self.urls.identity.clone()),
            ("IDENTITY_HEADER".to_string(), self.identity_header.clone()),
            // The drill ledger (RunRestoreDrills records each drill there).
            (
                "VMRP_DRILL_TABLE_URL".to_string(),
                self.urls.drill_table.clone(),
            ),
            ("FUNCTIONS_WORKER_RUNTIME".to_string(), "custom".to_string()),
        ]);
        match bus_auth {
            BusAuth::Sas => {
                settings.insert(
                    "ServiceBusConnection".into(),
                    self.service_bus_connection_string(),
                );
            }
            BusAuth::Identity => {
                settings.insert(
                    "ServiceBusConnection__fullyQualifiedNamespace".into(),
                    format!("{}.servicebus.windows.net", self.bus.config().namespace),
                );
                settings.insert(
                    "ServiceBusConnection__credential".into(),
                    "managedidentity".into(),
                );
            }
        }
        settings
    }

    /// The first stdout line of `vmrp emulate`.
    pub fn announcement(&self) -> Value {
        serde_json::json!({
            "arm": self.urls.arm,
            "serviceBus": self.urls.service_bus,
            "identity": self.urls.identity,
            "control": self.urls.control,
            "drillTable": self.urls.drill_table,
            "subscriptions": self.subscriptions,
            "serviceBusConnectionString": self.service_bus_connection_string(),
            "identityHeader": self.identity_header,
        })
    }

    /// Starts the Functions host simulation against this emulator and registers it with the
    /// control plane (Event Grid injection, kills, dump).
    pub async fn start_host_sim(
        &self,
        config: HostSimConfig,
    ) -> Result<Arc<HostSim>, EmulatorError> {
        let sim = HostSim::start(config, self.bus.clone(), self.clock.clone()).await?;
        *self
            .control
            .host_sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sim.clone());
        Ok(sim)
    }

    pub fn host_sim(&self) -> Option<Arc<HostSim>> {
        self.control.host_sim()
    }

    /// Everything: resources, messages, dead letters, invocations, counters.
    pub fn dump(&self) -> Value {
        self.control.dump()
    }

    /// Stops the host simulation and the server, then writes the state dump if configured.
    pub async fn stop(mut self) -> Result<(), EmulatorError> {
        if let Some(sim) = self.control.host_sim() {
            sim.stop().await;
        }
        let dump = self.control.dump();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(EmulatorError::Serve(e.to_string())),
                Ok(Err(e)) => return Err(EmulatorError::Serve(e.to_string())),
                Err(_) => tracing::warn!("server did not stop within 5 s; abandoned"),
            }
        }
        if let Some(path) = &self.dump_state {
            // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
            let text = serde_json::to_string_pretty(&dump).expect("JSON values serialize");
            std::fs::write(path, text).map_err(|e| EmulatorError::Dump {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn serves_every_service_on_loopback_and_dumps_state() {
        let dir = tempfile::tempdir().unwrap();
        let dump_path = dir.path().join("state.json");
        let emu = start(EmulatorConfig {
            dump_state: Some(dump_path.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(emu.local_addr.ip().is_loopback());
        assert!(emu.urls.arm.starts_with("http://127.0.0.1:"));
        let http = client();

        // ARM requires a token from the identity endpoint.
        let sub = format!("{}/subscriptions", emu.urls.arm);
        assert_eq!(http.get(&sub).send().await.unwrap().status(), 401);
        let token: Value = http
            .get(format!(
                "{}?api-version=2019-08-01&resource=https://management.azure.com",
                emu.urls.identity
            ))
            .header("X-IDENTITY-HEADER", &emu.identity_header)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
        // Authorised: passes the check (the placeholder ARM router has no routes → 404).
        assert_ne!(
            http.get(&sub)
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );

        // Service Bus with the SAS key from the connection string.
        let sas = super::super::servicebus::sas_token(
            "https://vmrp-emulator.servicebus.windows.net/rp-create/messages",
            &emu.sas_key_name,
            &emu.sas_key,
            OffsetDateTime::now_utc().unix_timestamp() + 600,
        );
        let resp = http
            .post(format!("{}/rp-create/messages", emu.urls.service_bus))
            .header("authorization", format!("SharedAccessSignature {sas}"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert!(emu.service_bus_connection_string().contains(&emu.sas_key));

        // Control: clock advance and inspection.
        let before = emu.clock.now();
        let resp = http
            .post(format!("{}/clock/advance", emu.urls.control))
            .body(r#"{"hours": 2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(emu.clock.now() - before >= time::Duration::hours(2));
        let bad = http
            .post(format!("{}/clock/advance", emu.urls.control))
            .body(r#"{"seconds": -5}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        // Past the end of time: a 400 (was a panic that poisoned the clock), and the clock
        // and ARM keep answering.
        let far = http
            .post(format!("{}/clock/advance", emu.urls.control))
            .body(r#"{"hours": 100000000}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(far.status(), 400);
        let again = http
            .post(format!("{}/clock/advance", emu.urls.control))
            .body(r#"{"seconds": 1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
        let msgs: Value = http
            .get(format!("{}/queues/rp-create/messages", emu.urls.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(msgs[0]["body"], "hello");
        let eg = http
            .post(format!("{}/eventgrid", emu.urls.control))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(eg.status(), 503, "no host simulation attached");

        // Switch ARM auth off at runtime.
        let resp = http
            .put(format!("{}/auth/arm", emu.urls.control))
            .body(r#"{"required": false}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_ne!(http.get(&sub).send().await.unwrap().status(), 401);

        let state: Value = http
            .get(format!("{}/state", emu.urls.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            state["serviceBus"]["detail"]["rp-create"]["messages"][0]["body"],
            "hello"
        );
        assert_eq!(state["requests"]["arm 401"], 1);
        assert_eq!(state["identity"]["tokensIssued"], 1);

        let by_identity = emu.handler_settings(BusAuth::Identity);
        assert_eq!(
            by_identity["ServiceBusConnection__fullyQualifiedNamespace"],
            "vmrp-emulator.servicebus.windows.net"
        );
        assert!(!by_identity.contains_key("ServiceBusConnection"));
        let by_sas = emu.handler_settings(BusAuth::Sas);
        assert_eq!(
            by_sas["ServiceBusConnection"],
            emu.service_bus_connection_string()
        );
        assert_eq!(by_sas["IDENTITY_HEADER"], emu.identity_header);

        let addr = emu.local_addr;
        emu.stop().await.unwrap();
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&dump_path).unwrap()).unwrap();
        assert_eq!(
            written["serviceBus"]["detail"]["rp-create"]["messages"][0]["body"],
            "hello"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed"
        );
    }

    #[tokio::test]
    async fn rest_sends_reach_the_handler_through_the_host_simulation() {
        // A stand-in handler that records function names.
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen2 = seen.clone();
        let handler = Router::new().fallback(move |req: axum::extract::Request| {
            let seen = seen2.clone();
            async move {
                let path = req.uri().path().to_string();
                let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    seen.lock().unwrap().push((path, v));
                }
                ([("content-type", "application/json")], "{}")
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, handler).await });

        let emu = start(EmulatorConfig::default()).await.unwrap();
        let app_root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/functions-app"
        );
        let mut settings = emu.handler_settings(BusAuth::Sas);
        settings.insert("VMRP_SCHEDULE".into(), "0 0 3 1 1 *".into());
        emu.start_host_sim(HostSimConfig {
            launch: super::super::host_sim::HandlerLaunch::External { port },
            app_settings: settings,
            ..HostSimConfig::new(app_root)
        })
        .await
        .unwrap();
        let http = client();
        let sas = super::super::servicebus::sas_token(
            "https://vmrp-emulator.servicebus.windows.net/rp-poll/messages",
            &emu.sas_key_name,
            &emu.sas_key,
            OffsetDateTime::now_utc().unix_timestamp() + 600,
        );
        let resp = http
            .post(format!("{}/rp-poll/messages", emu.urls.service_bus))
            .header("authorization", format!("SharedAccessSignature {sas}"))
            .header("brokerproperties", r#"{"MessageId":"m-1"}"#)
            .body(r#"{"v":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let eg = http
            .post(format!("{}/eventgrid", emu.urls.control))
            .body(r#"{"eventType":"Microsoft.Resources.ResourceWriteSuccess","subject":"/subscriptions/s","data":{}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(eg.status(), 202);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let sim = emu.host_sim().unwrap();
        while seen.lock().unwrap().len() < 2 || sim.records().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "invocations did not arrive"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        paths.sort();
        assert_eq!(paths, ["/OnVmChanged", "/PollRestorePoint"]);
        let poll = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == "/PollRestorePoint")
            .unwrap()
            .1
            .clone();
        assert_eq!(poll["Metadata"]["MessageId"], "\"m-1\"");
        assert_eq!(
            poll["Metadata"]["Client"]["FullyQualifiedNamespace"],
            "vmrp-emulator.servicebus.windows.net"
        );
        let invocations: Value = http
            .get(format!("{}/invocations", emu.urls.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(invocations.as_array().unwrap().len(), 2);
        assert_eq!(
            emu.dump()["hostSim"]["invocationsByFunction"]["PollRestorePoint"]["succeeded"],
            1
        );
        emu.stop().await.unwrap();
    }

    #[tokio::test]
    async fn rejects_a_bad_speed_naming_the_field() {
        let err = start(EmulatorConfig {
            speed: 0.0,
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_start_at_the_end_of_time() {
        // `emulate --start 9999-12-31T23:59:00Z` panicked the clock.
        let err = start(EmulatorConfig {
            start: time::macros::datetime!(9999-12-31 23:59 UTC),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("start"), "{err}");
    }
}
