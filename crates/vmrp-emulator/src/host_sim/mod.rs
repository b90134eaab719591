//! The Azure Functions host, simulated: reads `host.json` and `functions/*/function.json` (well,
//! `<app root>/<Function>/function.json`, as deployed), starts the custom handler exactly as the
//! v4 host does, and drives it with timer, Service Bus and Event Grid invocations whose wire
//! format reproduces PROTOCOL.md §2–§4 byte for byte where it matters. Everything is timed on
//! the [`VirtualClock`]; `sys.UtcNow` comes from it.
//!
//! Differences from the real host, on purpose: the handler is restarted after every crash
//! (the real host stops itself after the 3rd error within 30 min); reqwest adds `accept: */*`.
//!
//! **Several instances.** Flex Consumption scales an app out over many instances, each its own
//! host and handler process with its own memory, and Service Bus, timers and Event Grid hand
//! each invocation to whichever instance takes it
//! (<https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan>, "Concurrency" and
//! "Instance scaling"). [`HostSimConfig::instances`] starts that many handler processes, each on
//! its own port; every invocation goes to the least busy ready instance (ties in turn), so a
//! redelivered message may land on another instance than the one that failed it. Kills and
//! restarts hit one instance; the others keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::clock::VirtualClock;
use super::servicebus::{Delivery, NewMessage, ServiceBus};
use crate::schedule::Schedule;

/// The host version we claim in `X-Azure-Functions-HostVersion` / `User-Agent`.
pub const HOST_VERSION: &str = "4.1037.1.1";

/// Why the simulation could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum HostSimError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("custom handler: {0}")]
    Handler(String),
    #[error("{0}")]
    BadEvent(String),
}

mod app;
mod console;
mod envelope;
mod invoke;
mod process;

pub use app::*;
pub use console::*;
pub use envelope::*;

// ---------------------------------------------------------------------------------------------
// The running simulation
// ---------------------------------------------------------------------------------------------

/// How the handler process is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerLaunch {
    /// Start `defaultExecutablePath` from host.json, as the host does.
    Spawn,
    /// Talk to an already running handler on `127.0.0.1:port` (tests; no restarts).
    External { port: u16 },
}

/// Settings of a simulation run.
#[derive(Clone)]
pub struct HostSimConfig {
    pub app_root: PathBuf,
    pub launch: HandlerLaunch,
    /// App settings: given to the handler as env and used for `%NAME%` in function.json and
    /// host.json arguments (before the process env).
    pub app_settings: BTreeMap<String, String>,
    /// Fire each timer at most this many times (then the timer stops).
    pub timer_ticks: Option<u32>,
    /// Event Grid redelivery delays (virtual) after a failed invocation; the event is dropped
    /// (dead-lettered) after the last one.
    pub event_grid_retry_delays: Vec<time::Duration>,
    /// Consecutive handler starts that never became ready before the simulation gives up.
    pub max_failed_starts: u32,
    /// Start this program instead of host.json's `defaultExecutablePath` (e.g. the freshly
    /// built `target/debug/vmrp` when running from the repository's `functions/`).
    pub executable_override: Option<PathBuf>,
    /// Append every console line of the handler (stdout and stderr) to this file, each as
    /// `{Level}\t{line}` with the level the host records it at ([`console_level`]).
    pub console_log: Option<PathBuf>,
    /// functionTimeout is virtual time, but the handler's own work runs in real time: at high
    /// speeds (2400× makes 10 virtual minutes 0.25 real seconds) a busy but healthy handler would
    /// be declared hung and restarted. An invocation times out only once this much real time has
    /// passed as well. Zero: purely virtual (tests of the timeout itself).
    pub min_real_function_timeout: Duration,
    /// Handler instances (separate processes, own ports, own memory) that compete for
    /// invocations, as a scaled-out Flex Consumption app's instances do (module doc). At least 1;
    /// [`HandlerLaunch::External`] serves exactly one.
    pub instances: usize,
}

impl std::fmt::Debug for HostSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // App settings can hold connection strings: names only.
        f.debug_struct("HostSimConfig")
            .field("app_root", &self.app_root)
            .field("launch", &self.launch)
            .field(
                "app_settings",
                &self.app_settings.keys().collect::<Vec<_>>(),
            )
            .field("timer_ticks", &self.timer_ticks)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl HostSimConfig {
    pub fn new(app_root: impl Into<PathBuf>) -> Self {
        Self {
            app_root: app_root.into(),
            launch: HandlerLaunch::Spawn,
            app_settings: BTreeMap::new(),
            timer_ticks: None,
            event_grid_retry_delays: [10, 30, 60, 300]
                .into_iter()
                .map(time::Duration::seconds)
                .collect(),
            max_failed_starts: 5,
            executable_override: None,
            console_log: None,
            min_real_function_timeout: Duration::ZERO,
            instances: 1,
        }
    }
}

/// The handler process as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerState {
    Starting,
    Ready,
    /// Not coming back: exit code 0, too many failed starts, or the simulation stopped.
    Stopped(String),
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum InvocationStatus {
    Succeeded,
    /// Non-2xx, unparseable/non-JSON reply, connection error, output binding error.
    Failed,
    /// No reply within functionTimeout (the handler is restarted).
    TimedOut,
    /// 2xx with an empty or `null` body: the real host hangs until functionTimeout.
    ProtocolViolation,
}

/// One invocation, for the dump and tests.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub invocation_id: String,
    pub function: String,
    pub trigger: &'static str,
    /// The handler instance (0-based) the invocation went to.
    pub instance: usize,
    pub status: InvocationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The reply's `Outputs`/`Logs`/`ReturnValue`, when it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// Counters of the simulation.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimCounters {
    /// Failed timer runs retried under the function's retry policy.
    pub timer_retries: u64,
    pub handler_starts: u64,
    pub handler_restarts: u64,
    pub handler_kills: u64,
    pub protocol_violations: u64,
    pub timeouts: u64,
    pub event_grid_dead_lettered: u64,
    pub output_messages_sent: u64,
}

/// What one handler instance went through (the dump, `vmrp local`'s report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounters {
    pub port: u16,
    /// Invocations sent to this instance (any outcome).
    pub invocations: u64,
    pub starts: u64,
    pub restarts: u64,
    pub kills: u64,
}

/// One handler process and what the simulation knows of it.
struct Instance {
    index: usize,
    port: u16,
    state_tx: watch::Sender<HandlerState>,
    kill: Notify,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// Invocations sent to it and not answered yet (the dispatcher picks the least busy).
    in_flight: AtomicU64,
    counters: Mutex<InstanceCounters>,
}

impl Instance {
    fn state(&self) -> HandlerState {
        self.state_tx.borrow().clone()
    }

    fn count(&self, f: impl FnOnce(&mut InstanceCounters)) {
        f(&mut self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Waits until this instance is ready; Err when it stopped for good or `limit` passed.
    async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let mut rx = self.state_tx.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            match &*rx.borrow_and_update() {
                HandlerState::Ready => return Ok(()),
                HandlerState::Stopped(why) => return Err(format!("handler not running: {why}")),
                HandlerState::Starting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("handler not ready after {limit:?}"));
            }
            if tokio::time::timeout(left, rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err("host stopped".into());
            }
        }
    }
}

/// The instance an invocation goes to: the ready one with the fewest invocations in flight,
/// ties broken in turn from `turn`; when none is ready, the next one in turn that has not
/// stopped for good (the invocation then waits for it), else instance `turn`.
/// `loads[i]` = (ready, stopped, in flight).
fn pick_instance(loads: &[(bool, bool, u64)], turn: usize) -> usize {
    let n = loads.len().max(1);
    let order = (0..n).map(|k| (turn + k) % n);
    order
        .clone()
        .filter(|&i| loads.get(i).is_some_and(|l| l.0))
        .min_by_key(|&i| loads[i].2)
        .or_else(|| order.clone().find(|&i| loads.get(i).is_some_and(|l| !l.1)))
        .unwrap_or(turn % n)
}

struct Outcome {
    status: InvocationStatus,
    http_status: Option<u16>,
    error: Option<String>,
    response: Option<Value>,
}

#[derive(Debug, Clone, Copy)]
struct TimerState {
    last: Option<OffsetDateTime>,
    last_updated: OffsetDateTime,
}

/// A running simulation.
pub struct HostSim {
    config: HostSimConfig,
    app: FunctionApp,
    bus: Arc<ServiceBus>,
    clock: Arc<VirtualClock>,
    http: reqwest::Client,
    instances: Vec<Arc<Instance>>,
    /// Whose turn it is among equally busy instances.
    turn: AtomicUsize,
    client: ClientInfo,
    stop_tx: watch::Sender<bool>,
    records: Mutex<Vec<InvocationRecord>>,
    counters: Mutex<SimCounters>,
    timers: Mutex<BTreeMap<String, TimerState>>,
    event_grid_dead: Mutex<Vec<Value>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    console_tail: Arc<Mutex<std::collections::VecDeque<ConsoleLine>>>,
    in_flight: AtomicU64,
    timers_in_flight: AtomicU64,
}

impl std::fmt::Debug for HostSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSim")
            .field("config", &self.config)
            .field(
                "ports",
                &self.instances.iter().map(|i| i.port).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The handler instances' ports: the external handler's, or one free loopback port per
/// spawned instance.
fn handler_ports(config: &HostSimConfig) -> Result<Vec<u16>, HostSimError> {
    match config.launch {
        HandlerLaunch::External { port } if config.instances == 1 => Ok(vec![port]),
        HandlerLaunch::External { .. } => Err(HostSimError::Handler(format!(
            "instances: an external handler is one instance, {} asked for",
            config.instances
        ))),
        HandlerLaunch::Spawn => {
            // Chosen once like the host: bind 127.0.0.1:0, read, release; kept for restarts.
            // All listeners are held until every port is read, so no two instances share one.
            let listeners = (0..config.instances)
                .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| HostSimError::Handler(format!("cannot pick a port: {e}")))?;
            listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| HostSimError::Handler(e.to_string()))
        }
    }
}

/// One instance per port, starting.
fn new_instances(ports: Vec<u16>) -> Vec<Arc<Instance>> {
    ports
        .into_iter()
        .enumerate()
        .map(|(index, port)| {
            Arc::new(Instance {
                index,
                port,
                state_tx: watch::channel(HandlerState::Starting).0,
                kill: Notify::new(),
                supervisor: Mutex::new(None),
                in_flight: AtomicU64::new(0),
                counters: Mutex::new(InstanceCounters {
                    port,
                    ..Default::default()
                }),
            })
        })
        .collect()
}

const CONSOLE_TAIL_LINES: usize = 200;

impl HostSim {
    /// Loads the app, starts (or connects to) the handler, waits until it is ready, then
    /// starts the timers and queue listeners.
    pub async fn start(
        config: HostSimConfig,
        bus: Arc<ServiceBus>,
        clock: Arc<VirtualClock>,
    ) -> Result<Arc<Self>, HostSimError> {
        let settings = config.app_settings.clone();
        let lookup = move |name: &str| {
            settings
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        };
        let app = FunctionApp::load(&config.app_root, &lookup)?;
        if config.instances == 0 {
            return Err(HostSimError::Handler(
                "instances: at least one handler instance is needed".into(),
            ));
        }
        let ports = handler_ports(&config)?;
        let instances = new_instances(ports);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| HostSimError::Handler(format!("HTTP client: {e}")))?;
        let namespace = format!("{}.servicebus.windows.net", bus.config().namespace);
        let client = ClientInfo {
            identifier: format!("{namespace}-{}", uuid::Uuid::new_v4()),
            fully_qualified_namespace: namespace,
        };
        let (stop_tx, _) = watch::channel(false);
        let now = clock.now();
        let timers = app
            .functions
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::Timer { .. }))
            .map(|f| {
                (
                    f.name.clone(),
                    TimerState {
                        last: None,
                        last_updated: now,
                    },
                )
            })
            .collect();
        let sim = Arc::new(Self {
            config,
            app,
            bus,
            clock,
            http,
            instances,
            turn: AtomicUsize::new(0),
            client,
            stop_tx,
            records: Mutex::new(Vec::new()),
            counters: Mutex::new(SimCounters::default()),
            timers: Mutex::new(timers),
            event_grid_dead: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            console_tail: Arc::new(Mutex::new(Default::default())),
            in_flight: AtomicU64::new(0),
            timers_in_flight: AtomicU64::new(0),
        });
        match sim.config.launch {
            HandlerLaunch::Spawn => {
                for inst in &sim.instances {
                    let (s, i) = (sim.clone(), inst.clone());
                    *inst
                        .supervisor
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(tokio::spawn(async move { s.supervise(i).await }));
                }
            }
            HandlerLaunch::External { port } => {
                let ready = sim
                    .probe_until_ready(port, sim.app.host.initialization_timeout)
                    .await;
                if !ready {
                    return Err(HostSimError::Handler(format!(
                        "nothing answers on 127.0.0.1:{port}"
                    )));
                }
                sim.instances[0].state_tx.send_replace(HandlerState::Ready);
            }
        }
        if let Err(e) = sim
            .wait_ready(sim.app.host.initialization_timeout * 4)
            .await
        {
            sim.stop().await;
            return Err(HostSimError::Handler(e));
        }
        sim.start_triggers()?;
        Ok(sim)
    }

    fn track(&self, handle: JoinHandle<()>) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    pub fn app(&self) -> &FunctionApp {
        &self.app
    }

    /// The port the (first) handler instance listens on (`FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub fn handler_port(&self) -> u16 {
        self.instances[0].port
    }

    /// Every instance's port, by instance index.
    pub fn handler_ports(&self) -> Vec<u16> {
        self.instances.iter().map(|i| i.port).collect()
    }

    /// How many handler instances run.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// The app's state: `Ready` when every instance is, `Stopped` (with the first reason) when
    /// every instance stopped for good, else `Starting` (at least one is (re)starting).
    pub fn handler_state(&self) -> HandlerState {
        let states: Vec<HandlerState> = self.instances.iter().map(|i| i.state()).collect();
        if states.iter().all(|s| *s == HandlerState::Ready) {
            return HandlerState::Ready;
        }
        if let Some(HandlerState::Stopped(why)) = states.first() {
            if states.iter().all(|s| matches!(s, HandlerState::Stopped(_))) {
                return HandlerState::Stopped(why.clone());
            }
        }
        HandlerState::Starting
    }

    /// One instance's state (`None` past the last instance).
    pub fn instance_state(&self, index: usize) -> Option<HandlerState> {
        self.instances.get(index).map(|i| i.state())
    }

    /// Per instance: port, invocations, starts, restarts, kills.
    pub fn instance_counters(&self) -> Vec<InstanceCounters> {
        self.instances
            .iter()
            .map(|i| {
                i.counters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    pub fn records(&self) -> Vec<InvocationRecord> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn counters(&self) -> SimCounters {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn count(&self, f: impl FnOnce(&mut SimCounters)) {
        f(&mut self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// State dump: counters, handler state, invocations by function and status, every record.
    pub fn dump(&self) -> Value {
        let records = self.records();
        let mut by_function: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in &records {
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *by_function
                .entry(r.function.clone())
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
        serde_json::json!({
            "handlerPort": self.handler_port(),
            "instances": self.instance_counters(),
            "handlerState": format!("{:?}", self.handler_state()),
            "counters": self.counters(),
            "inFlight": self.in_flight.load(Ordering::Relaxed),
            "invocationsByFunction": by_function,
            "eventGridDeadLetters": *self.event_grid_dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            "console": self.console_lines().into_iter().map(|l| l.message).collect::<Vec<_>>(),
            "consoleLevels": self.console_lines().iter().map(|l| l.level.as_str()).collect::<Vec<_>>(),
            "invocations": records,
        })
    }

    /// The last console lines of the handler (up to 200), with the level the host gives each.
    pub fn console_lines(&self) -> Vec<ConsoleLine> {
        self.console_tail
            .lock()
            .expect("console lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Invocations running right now (sent to the handler, no outcome yet).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Timer invocations running right now (a scenario runner slows virtual time meanwhile: a
    /// timer run is seconds of real work, which must not become hours of virtual time).
    pub fn timers_in_flight(&self) -> u64 {
        self.timers_in_flight.load(Ordering::Relaxed)
    }

    /// SIGKILLs the first handler instance (chaos tests); the supervisor restarts it on the
    /// same port.
    pub fn kill_handler(&self) {
        self.kill_instance(0);
    }

    /// SIGKILLs one handler instance; its supervisor restarts it on the same port while the
    /// other instances keep serving. False (and nothing counted) past the last instance.
    pub fn kill_instance(&self, index: usize) -> bool {
        let Some(inst) = self.instances.get(index) else {
            return false;
        };
        self.count(|c| c.handler_kills += 1);
        inst.count(|c| c.kills += 1);
        inst.kill.notify_one();
        true
    }

    /// Stops triggers and the handler.
    pub async fn stop(&self) {
        self.stop_tx.send_replace(true);
        for task in std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            task.abort();
        }
        for inst in &self.instances {
            let supervisor = inst
                .supervisor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(mut supervisor) = supervisor {
                // It reacts to the stop signal by killing and reaping its child.
                if tokio::time::timeout(Duration::from_secs(5), &mut supervisor)
                    .await
                    .is_err()
                {
                    supervisor.abort();
                }
            }
            inst.state_tx
                .send_replace(HandlerState::Stopped("host stopped".into()));
        }
    }

    /// Waits until every handler instance is ready; Err when one stopped for good or `limit`
    /// passed.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for inst in &self.instances {
            inst.wait_ready(deadline.saturating_duration_since(Instant::now()))
                .await
                .map_err(|e| format!("instance {}: {e}", inst.index))?;
        }
        Ok(())
    }

    /// The instance the next invocation goes to ([`pick_instance`]).
    fn dispatch(&self) -> Arc<Instance> {
        let loads: Vec<(bool, bool, u64)> = self
            .instances
            .iter()
            .map(|i| {
                let state = i.state();
                (
                    state == HandlerState::Ready,
                    matches!(state, HandlerState::Stopped(_)),
                    i.in_flight.load(Ordering::Relaxed),
                )
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        self.instances[pick_instance(&loads, turn)].clone()
    }

    fn stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }
}

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod tests;
