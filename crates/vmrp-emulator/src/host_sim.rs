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

// ---------------------------------------------------------------------------------------------
// The app: host.json + function.json files
// ---------------------------------------------------------------------------------------------

/// The parts of `host.json` the simulation uses.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSettings {
    pub executable: String,
    pub arguments: Vec<String>,
    pub working_directory: String,
    /// `None` = unbounded (`-1`).
    pub function_timeout: Option<time::Duration>,
    pub initialization_timeout: Duration,
    pub max_concurrent_calls: usize,
    pub max_auto_lock_renewal: time::Duration,
}

/// A function's trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Timer {
        binding: String,
        schedule: String,
        run_on_startup: bool,
        use_monitor: bool,
    },
    ServiceBus {
        binding: String,
        queue: String,
        binary: bool,
    },
    EventGrid {
        binding: String,
    },
    /// HTTP and anything else: loaded, never invoked by the simulation.
    Other {
        kind: String,
    },
}

/// A `serviceBus` output binding.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputBinding {
    pub name: String,
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    pub trigger: Trigger,
    pub outputs: Vec<OutputBinding>,
    /// function.json `retry`: honoured for timers (the only trigger here that supports it,
    /// PROTOCOL §4.6); every attempt then carries `Metadata.RetryContext`.
    pub retry: Option<RetryPolicy>,
}

/// A function-level retry strategy (`fixedDelay` or `exponentialBackoff`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retry_count: u32,
    /// Delay before retry 1; doubles per retry for `exponentialBackoff`, up to `maximum`.
    pub minimum: time::Duration,
    pub maximum: time::Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> time::Duration {
        let factor = 2f64.powi(retry.saturating_sub(1).min(30) as i32);
        (self.minimum * factor).min(self.maximum)
    }
}

fn load_retry(
    json: &Value,
    invalid: &dyn Fn(String) -> HostSimError,
) -> Result<Option<RetryPolicy>, HostSimError> {
    let Some(retry) = prop(json, "retry") else {
        return Ok(None);
    };
    let field = |k: &str| prop(retry, k).and_then(Value::as_str);
    let span = |k: &str| -> Result<time::Duration, HostSimError> {
        let text = field(k).ok_or_else(|| invalid(format!("retry.{k} is required")))?;
        parse_timespan(text)
            .map_err(|e| invalid(format!("retry.{k}: {e}")))?
            .ok_or_else(|| invalid(format!("retry.{k} must be a time span")))
    };
    let max_retry_count = prop(retry, "maxRetryCount")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("retry.maxRetryCount is required".into()))?
        as u32;
    let (minimum, maximum) = match field("strategy").map(str::to_ascii_lowercase).as_deref() {
        Some("fixeddelay") => {
            let d = span("delayInterval")?;
            (d, d)
        }
        Some("exponentialbackoff") => (span("minimumInterval")?, span("maximumInterval")?),
        other => {
            return Err(invalid(format!(
                "retry.strategy {other:?}: expected fixedDelay or exponentialBackoff"
            )))
        }
    };
    Ok(Some(RetryPolicy {
        max_retry_count,
        minimum,
        maximum,
    }))
}

/// The loaded app.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionApp {
    pub root: PathBuf,
    pub host: HostSettings,
    pub functions: Vec<FunctionDef>,
}

fn read_json(path: &Path) -> Result<Value, HostSimError> {
    let text = std::fs::read_to_string(path).map_err(|e| HostSimError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| HostSimError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Case-insensitive property lookup (the host binds options case-insensitively).
fn prop<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Parses a .NET TimeSpan as host.json writes it: `hh:mm:ss[.fffffff]`, `d.hh:mm:ss`, or `-1`
/// (unbounded → `None`).
pub fn parse_timespan(text: &str) -> Result<Option<time::Duration>, String> {
    let t = text.trim();
    if t == "-1" {
        return Ok(None);
    }
    let bad = || format!("{t:?} is not a TimeSpan like \"00:10:00\"");
    let (days, rest) = match t.split_once('.') {
        Some((d, r)) if r.contains(':') && !d.contains(':') => {
            (d.parse::<i64>().map_err(|_| bad())?, r)
        }
        _ => (0, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let h: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let s: f64 = parts[2].parse().map_err(|_| bad())?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0.0..60.0).contains(&s) || days < 0 {
        return Err(bad());
    }
    Ok(Some(
        time::Duration::days(days)
            + time::Duration::hours(h)
            + time::Duration::minutes(m)
            + time::Duration::seconds_f64(s),
    ))
}

/// Expands `%NAME%` from `lookup`; unresolved tokens are deleted, as the host does for
/// arguments (PROTOCOL §1).
pub fn expand_percent(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(end) if end > 0 && !after[..end].contains(char::is_whitespace) => {
                out.push_str(&rest[..start]);
                if let Some(v) = lookup(&after[..end]) {
                    out.push_str(&v);
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a binding setting that may be `%AppSetting%` (whole value); missing → error.
fn resolve_setting(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let v = value.trim();
    if let Some(name) = v.strip_prefix('%').and_then(|s| s.strip_suffix('%')) {
        lookup(name).ok_or_else(|| format!("app setting {name} (referenced as {v}) is not set"))
    } else {
        Ok(v.to_string())
    }
}

impl FunctionApp {
    /// Loads `host.json` and every `<dir>/function.json` under `root`, resolving `%X%` in
    /// schedules and queue names through `lookup`.
    pub fn load(
        root: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, HostSimError> {
        let host_path = root.join("host.json");
        let host = read_json(&host_path)?;
        let invalid = |reason: String| HostSimError::Invalid {
            path: host_path.clone(),
            reason,
        };
        let description = prop(&host, "customHandler")
            .and_then(|c| prop(c, "description"))
            .ok_or_else(|| invalid("customHandler.description is required".into()))?;
        let executable = prop(description, "defaultExecutablePath")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                invalid(
                    "customHandler.description.defaultExecutablePath must be a non-empty string"
                        .into(),
                )
            })?
            .to_string();
        let arguments = match prop(description, "arguments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        invalid("customHandler.description.arguments must be strings".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(invalid(
                    "customHandler.description.arguments must be an array of strings".into(),
                ))
            }
        };
        let working_directory = prop(description, "workingDirectory")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let timespan = |v: Option<&Value>, field: &str, default: &str| {
            let text = match v {
                None | Some(Value::Null) => default.to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            parse_timespan(&text).map_err(|e| invalid(format!("{field}: {e}")))
        };
        // Consumption default (PROTOCOL §6).
        let function_timeout = timespan(
            prop(&host, "functionTimeout"),
            "functionTimeout",
            "00:05:00",
        )?;
        let initialization_timeout = timespan(
            prop(&host, "customHandler").and_then(|c| prop(c, "initializationTimeout")),
            "customHandler.initializationTimeout",
            "00:00:30",
        )?
        .unwrap_or(time::Duration::seconds(30));
        let sb = prop(&host, "extensions").and_then(|e| prop(e, "serviceBus"));
        let max_concurrent_calls = match sb.and_then(|s| prop(s, "maxConcurrentCalls")) {
            None | Some(Value::Null) => 16,
            Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                invalid(
                    "extensions.serviceBus.maxConcurrentCalls must be a positive integer".into(),
                )
            })? as usize,
        };
        let max_auto_lock_renewal = timespan(
            sb.and_then(|s| prop(s, "maxAutoLockRenewalDuration")),
            "extensions.serviceBus.maxAutoLockRenewalDuration",
            "00:05:00",
        )?
        .unwrap_or(time::Duration::days(365));

        let mut functions = Vec::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| HostSimError::Read {
                path: root.to_path_buf(),
                reason: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("function.json").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            functions.push(load_function(&name, &dir.join("function.json"), lookup)?);
        }
        Ok(Self {
            root: root.to_path_buf(),
            host: HostSettings {
                executable,
                arguments,
                working_directory,
                function_timeout,
                initialization_timeout: Duration::from_secs_f64(
                    initialization_timeout.as_seconds_f64().max(0.0),
                ),
                max_concurrent_calls,
                max_auto_lock_renewal,
            },
            functions,
        })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

fn load_function(
    name: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FunctionDef, HostSimError> {
    let json = read_json(path)?;
    let invalid = |reason: String| HostSimError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bindings = prop(&json, "bindings")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("bindings must be an array".into()))?;
    let mut trigger = None;
    let mut outputs = Vec::new();
    for (i, b) in bindings.iter().enumerate() {
        let field = |k: &str| prop(b, k).and_then(Value::as_str);
        let kind =
            field("type").ok_or_else(|| invalid(format!("bindings[{i}].type is required")))?;
        let binding = field("name")
            .ok_or_else(|| invalid(format!("bindings[{i}].name is required")))?
            .to_string();
        let direction = field("direction").unwrap_or("in");
        let setting = |k: &str| -> Result<String, HostSimError> {
            let raw = field(k).ok_or_else(|| invalid(format!("bindings[{i}].{k} is required")))?;
            resolve_setting(raw, lookup).map_err(|e| invalid(format!("bindings[{i}].{k}: {e}")))
        };
        let flag = |k: &str, default: bool| prop(b, k).and_then(Value::as_bool).unwrap_or(default);
        let t = match kind.to_ascii_lowercase().as_str() {
            "timertrigger" => Some(Trigger::Timer {
                binding,
                schedule: setting("schedule")?,
                run_on_startup: flag("runOnStartup", false),
                use_monitor: flag("useMonitor", true),
            }),
            "servicebustrigger" => Some(Trigger::ServiceBus {
                binding,
                queue: setting("queueName")?,
                binary: field("dataType").is_some_and(|d| d.eq_ignore_ascii_case("binary")),
            }),
            "eventgridtrigger" => Some(Trigger::EventGrid { binding }),
            k if k.ends_with("trigger") => Some(Trigger::Other {
                kind: kind.to_string(),
            }),
            "servicebus" if direction.eq_ignore_ascii_case("out") => {
                outputs.push(OutputBinding {
                    name: binding,
                    queue: setting("queueName")?,
                });
                None
            }
            _ => None,
        };
        if let Some(t) = t {
            if trigger.is_some() {
                return Err(invalid("a function must have exactly one trigger".into()));
            }
            trigger = Some(t);
        }
    }
    Ok(FunctionDef {
        name: name.to_string(),
        trigger: trigger.ok_or_else(|| invalid("no trigger binding found".into()))?,
        outputs,
        retry: load_retry(&json, &invalid)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Wire format helpers (PROTOCOL §2.1, §2.2, §3)
// ---------------------------------------------------------------------------------------------

/// A JSON object whose key order is kept (the host writes a fixed order; serde_json's `Map`
/// would sort it).
#[derive(Debug, Clone)]
pub enum Node {
    Json(Value),
    Object(Vec<(String, Node)>),
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Node::Json(v) => v.serialize(s),
            Node::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

fn obj(entries: Vec<(&str, Node)>) -> Node {
    Node::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn json(v: impl Into<Value>) -> Node {
    Node::Json(v.into())
}

/// §2.1 for a .NET string: JSON-encoded once more.
fn encoded_string(s: &str) -> Node {
    Node::Json(Value::String(
        // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
        serde_json::to_string(s).expect("strings serialize"),
    ))
}

/// The fraction .NET's `FFFFFFF` writes: up to 7 digits (100 ns ticks), trailing zeros dropped.
fn dotnet_fraction(t: OffsetDateTime) -> String {
    let ticks = t.nanosecond() / 100;
    let digits = format!("{ticks:07}");
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(".{trimmed}")
    }
}

fn seconds_part(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Newtonsoft's default for a UTC `DateTime`: `2024-10-25T03:00:05.4871236Z`.
pub fn format_utc_z(t: OffsetDateTime) -> String {
    format!("{}{}Z", seconds_part(t), dotnet_fraction(t))
}

/// Newtonsoft's default for a local `DateTime` on a UTC host: `...+00:00`.
pub fn format_local_offset(t: OffsetDateTime) -> String {
    format!("{}{}+00:00", seconds_part(t), dotnet_fraction(t))
}

/// A top-level `DateTime` metadata value: seconds, no offset (§2.1).
pub fn format_datetime_seconds(t: OffsetDateTime) -> String {
    seconds_part(t)
}

/// A top-level `DateTimeOffset` metadata value: seconds, `+00:00` (§2.1).
pub fn format_datetimeoffset_seconds(t: OffsetDateTime) -> String {
    format!("{}+00:00", seconds_part(t))
}

/// §2.2: the metadata keys a JSON-object body adds (scalars as .NET strings, then §2.1).
pub fn body_metadata(body: &str) -> Vec<(String, Node)> {
    let trimmed = body.trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Vec::new();
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            let node = match v {
                Value::Null | Value::Array(_) => return None,
                Value::Object(_) => Node::Json(v),
                Value::String(s) => encoded_string(&s),
                Value::Bool(b) => encoded_string(if b { "True" } else { "False" }),
                Value::Number(n) => encoded_string(&dotnet_number(&n)),
            };
            Some((k, node))
        })
        .collect()
}

/// A JSON number as `JValue.ToString()` writes it (integral doubles without `.0`).
fn dotnet_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", f as i64)
        }
        _ => n.to_string(),
    }
}

/// Adds `extra` to `entries`: a key already present (case-insensitive) keeps its spelling and
/// position and takes the new value; then keys ending in `trigger` are dropped (§2, §2.2).
fn merge_metadata(entries: &mut Vec<(String, Node)>, extra: Vec<(String, Node)>) {
    for (k, v) in extra {
        match entries.iter_mut().find(|(e, _)| e.eq_ignore_ascii_case(&k)) {
            Some(slot) => slot.1 = v,
            None => entries.push((k, v)),
        }
    }
    entries.retain(|(k, _)| !k.to_ascii_lowercase().ends_with("trigger"));
}

fn sys_node(function: &str, now: OffsetDateTime) -> Node {
    obj(vec![
        ("MethodName", json(function)),
        ("UtcNow", json(format_utc_z(now))),
        ("RandGuid", json(uuid::Uuid::new_v4().to_string())),
    ])
}

fn envelope(data: Vec<(String, Node)>, metadata: Vec<(String, Node)>) -> String {
    let body = Node::Object(vec![
        ("Data".to_string(), Node::Object(data)),
        ("Metadata".to_string(), Node::Object(metadata)),
    ]);
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    serde_json::to_string(&body).expect("JSON values serialize")
}

/// The `ScheduleStatus` the timer passes (the state *before* this run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleStatus {
    pub last: OffsetDateTime,
    pub next: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

/// The `.NET DateTime.MinValue` the timer reports as `Last` before the first run.
fn dotnet_min_value() -> OffsetDateTime {
    time::macros::datetime!(0001-01-01 00:00 UTC)
}

/// The timer invocation body (§3.1).
pub fn timer_body(
    function: &str,
    binding: &str,
    status: Option<ScheduleStatus>,
    is_past_due: bool,
    now: OffsetDateTime,
) -> String {
    timer_body_with_retry(function, binding, status, is_past_due, now, None)
}

/// `Metadata.RetryContext` of an attempt (PROTOCOL §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryContext {
    pub retry_count: u32,
    pub max_retry_count: u32,
    /// The previous attempt's failure.
    pub exception: Option<String>,
}

/// The timer invocation body (§3.1), with the retry context when a retry policy is set.
pub fn timer_body_with_retry(
    function: &str,
    binding: &str,
    status: Option<ScheduleStatus>,
    is_past_due: bool,
    now: OffsetDateTime,
    retry: Option<&RetryContext>,
) -> String {
    let status = match status {
        Some(s) => obj(vec![
            ("Last", json(format_local_offset(s.last))),
            ("Next", json(format_local_offset(s.next))),
            ("LastUpdated", json(format_local_offset(s.last_updated))),
        ]),
        None => json(Value::Null),
    };
    let timer = obj(vec![
        ("Schedule", obj(vec![("AdjustForDST", json(true))])),
        ("ScheduleStatus", status),
        ("IsPastDue", json(is_past_due)),
    ]);
    let mut metadata = vec![("sys".to_string(), sys_node(function, now))];
    if let Some(r) = retry {
        let exception = match &r.exception {
            Some(message) => obj(vec![("Message", json(message.as_str()))]),
            None => json(Value::Null),
        };
        metadata.push((
            "RetryContext".to_string(),
            obj(vec![
                ("RetryCount", json(r.retry_count)),
                ("MaxRetryCount", json(r.max_retry_count)),
                ("Exception", exception),
                ("Instance", json(Value::Null)),
                ("State", obj(vec![])),
            ]),
        ));
    }
    envelope(vec![(binding.to_string(), timer)], metadata)
}

/// What the Service Bus invocation needs to know about the namespace client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub fully_qualified_namespace: String,
    pub identifier: String,
}

/// The Service Bus invocation body (§3.2).
pub fn service_bus_body(
    function: &str,
    binding: &str,
    binary: bool,
    delivery: &Delivery,
    client: &ClientInfo,
    now: OffsetDateTime,
) -> String {
    use base64::Engine;
    let m = &delivery.message;
    let data_value = if binary {
        json(base64::engine::general_purpose::STANDARD.encode(m.body.as_bytes()))
    } else {
        encoded_string(&m.body)
    };
    let mut meta: Vec<(String, Node)> = Vec::new();
    let mut push = |k: &str, v: Node| meta.push((k.to_string(), v));
    for k in [
        "MessageReceiver",
        "MessageSession",
        "MessageActions",
        "SessionActions",
        "ReceiveActions",
    ] {
        push(k, obj(vec![]));
    }
    push(
        "Client",
        obj(vec![
            (
                "FullyQualifiedNamespace",
                json(client.fully_qualified_namespace.clone()),
            ),
            ("IsClosed", json(false)),
            ("TransportType", json(0)),
            ("Identifier", json(client.identifier.clone())),
        ]),
    );
    push("DeliveryCount", json(m.delivery_count.to_string()));
    push("LockToken", encoded_string(&delivery.lock_token));
    push("ExpiresAtUtc", json(format_datetime_seconds(m.expires_at)));
    push(
        "ExpiresAt",
        json(format_datetimeoffset_seconds(m.expires_at)),
    );
    push(
        "EnqueuedTimeUtc",
        json(format_datetime_seconds(m.enqueued_time)),
    );
    push(
        "EnqueuedTime",
        json(format_datetimeoffset_seconds(m.enqueued_time)),
    );
    push("MessageId", encoded_string(&m.message_id));
    let optional = [
        ("ContentType", &m.content_type),
        ("ReplyTo", &m.reply_to),
        ("To", &m.to),
        ("Subject", &m.subject),
        ("Label", &m.subject),
        ("CorrelationId", &m.correlation_id),
        ("SessionId", &m.session_id),
        ("ReplyToSessionId", &m.reply_to_session_id),
        ("PartitionKey", &m.partition_key),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            push(k, encoded_string(v));
        }
    }
    push("SequenceNumber", json(m.sequence_number.to_string()));
    push(
        "ApplicationProperties",
        json(Value::Object(m.application_properties.clone())),
    );
    push(
        "UserProperties",
        json(Value::Object(m.application_properties.clone())),
    );
    push("sys", sys_node(function, now));
    if !binary {
        merge_metadata(&mut meta, body_metadata(&m.body));
    } else {
        merge_metadata(&mut meta, Vec::new());
    }
    envelope(vec![(binding.to_string(), data_value)], meta)
}

/// The Event Grid invocation body (§3.3).
pub fn event_grid_body(
    function: &str,
    binding: &str,
    event: &Value,
    now: OffsetDateTime,
) -> String {
    let mut meta = Vec::new();
    match event.get("data") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => meta.push(("data".to_string(), json(v.clone()))),
        Some(v) => meta.push((
            "data".to_string(),
            // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
            json(serde_json::to_string(v).expect("serializes")),
        )),
    }
    meta.push(("sys".to_string(), sys_node(function, now)));
    envelope(vec![(binding.to_string(), json(event.clone()))], meta)
}

/// Normalises an injected event (or array) into Event Grid / CloudEvents objects, filling `id`
/// and the event time when missing.
pub fn normalize_events(body: Value, now: OffsetDateTime) -> Result<Vec<Value>, HostSimError> {
    let list = match body {
        Value::Array(a) => a,
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(HostSimError::BadEvent(
                "expected an event object or an array of events".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(HostSimError::BadEvent("the event array is empty".into()));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::Object(mut e) = v else {
                return Err(HostSimError::BadEvent(format!(
                    "event {i} is not an object"
                )));
            };
            let has = |e: &Map<String, Value>, k: &str| e.get(k).is_some_and(Value::is_string);
            e.entry("id")
                .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
            if e.contains_key("specversion") {
                for k in ["type", "source"] {
                    if !has(&e, k) {
                        return Err(HostSimError::BadEvent(format!(
                            "event {i} (CloudEvents schema) lacks the string field {k:?}"
                        )));
                    }
                }
                e.entry("time")
                    .or_insert_with(|| Value::String(format_utc_z(now)));
            } else {
                for k in ["eventType", "subject"] {
                    if !has(&e, k) {
                        return Err(HostSimError::BadEvent(format!(
                            "event {i} (Event Grid schema) lacks the string field {k:?}"
                        )));
                    }
                }
                e.entry("eventTime")
                    .or_insert_with(|| Value::String(format_utc_z(now)));
                e.entry("dataVersion")
                    .or_insert_with(|| Value::String("2".into()));
                e.entry("metadataVersion")
                    .or_insert_with(|| Value::String("1".into()));
            }
            Ok(Value::Object(e))
        })
        .collect()
}

/// §4.4: what an `Outputs` value for a Service Bus output binding becomes (message texts).
pub fn output_messages(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .flat_map(|item| match item {
                Value::Object(_) => vec![pretty(item)],
                Value::String(s) => vec![s.clone()],
                Value::Null => Vec::new(),
                other => vec![other.to_string()],
            })
            .collect(),
        Value::Object(_) => vec![pretty(value)],
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('{') || t.starts_with('[') {
                if let Ok(parsed) = serde_json::from_str::<Value>(t) {
                    return output_messages(&parsed);
                }
            }
            if looks_like_base64(s) {
                // The host turned it into bytes, which the string collector writes as this.
                vec!["System.Byte[]".to_string()]
            } else {
                vec![s.clone()]
            }
        }
        other => vec![other.to_string()],
    }
}

fn pretty(v: &Value) -> String {
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    serde_json::to_string_pretty(v).expect("serializes")
}

fn looks_like_base64(s: &str) -> bool {
    use base64::Engine;
    s.len() % 4 == 0 && base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

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
        let ports = match config.launch {
            HandlerLaunch::External { port } if config.instances == 1 => vec![port],
            HandlerLaunch::External { .. } => {
                return Err(HostSimError::Handler(format!(
                    "instances: an external handler is one instance, {} asked for",
                    config.instances
                )))
            }
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
                    .map_err(|e| HostSimError::Handler(e.to_string()))?
            }
        };
        let instances = ports
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
            .collect();
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

    async fn probe_until_ready(&self, port: u16, limit: Duration) -> bool {
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            // Any HTTP answer, 404 included, means ready (PROTOCOL §1).
            let probe = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok() {
                return true;
            }
            if self.stopping() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    fn spawn_child(&self, port: u16) -> Result<tokio::process::Child, String> {
        let host = &self.app.host;
        let settings = &self.config.app_settings;
        let lookup = |name: &str| {
            settings
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        };
        let exe = expand_percent(&host.executable, &lookup);
        let in_root = self.app.root.join(&exe);
        let program = if let Some(path) = &self.config.executable_override {
            path.clone()
        } else if Path::new(&exe).is_relative() && in_root.is_file() {
            in_root
        } else {
            PathBuf::from(&exe)
        };
        // A relative path names a file from where we were started; the child starts in the app
        // root, where `pkg/vmrp` would name `pkg/pkg/vmrp`. A bare name stays a PATH lookup.
        let program = if program.is_relative() && program.components().count() > 1 {
            std::path::absolute(&program).unwrap_or(program)
        } else {
            program
        };
        let args: Vec<String> = host
            .arguments
            .iter()
            .map(|a| expand_percent(a, &lookup))
            .filter(|a| !a.is_empty())
            .collect();
        let cwd = if host.working_directory.is_empty() {
            self.app.root.clone()
        } else {
            self.app.root.join(&host.working_directory)
        };
        let worker_id = uuid::Uuid::new_v4().to_string();
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&cwd)
            .envs(settings)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &self.app.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        if let Some(out) = child.stdout.take() {
            self.forward_console(out, false);
        }
        if let Some(err) = child.stderr.take() {
            self.forward_console(err, true);
        }
        Ok(child)
    }

    fn forward_console<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        &self,
        pipe: R,
        stderr: bool,
    ) {
        let sink = ConsoleSink(self.console_tail.clone());
        let log_path = self.config.console_log.clone();
        tokio::spawn(async move {
            let mut log_file = match &log_path {
                Some(path) => match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::error!(path = %path.display(), "cannot open the console log: {e}");
                        None
                    }
                },
                None => None,
            };
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let level = console_level(stderr, &line);
                match level {
                    ConsoleLevel::Error => {
                        tracing::error!(target: "Host.Function.Console", "{line}")
                    }
                    ConsoleLevel::Warning => {
                        tracing::warn!(target: "Host.Function.Console", "{line}")
                    }
                    ConsoleLevel::Information => {
                        tracing::info!(target: "Host.Function.Console", "{line}")
                    }
                }
                if let Some(f) = log_file.as_mut() {
                    use std::io::Write;
                    // The level the host gives the line, then the line: what Application
                    // Insights would show as severityLevel and message.
                    let _ = writeln!(f, "{}\t{line}", level.as_str());
                }
                sink.push(ConsoleLine {
                    level,
                    stderr,
                    message: line,
                });
            }
        });
    }

    /// Starts one handler instance, restarts it after crashes and kills, stops it on `stop()`.
    async fn supervise(self: Arc<Self>, inst: Arc<Instance>) {
        let mut stop_rx = self.stop_tx.subscribe();
        let mut failed_starts = 0u32;
        loop {
            if self.stopping() {
                break;
            }
            inst.state_tx.send_replace(HandlerState::Starting);
            let mut child = match self.spawn_child(inst.port) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("custom handler: {e}");
                    inst.state_tx.send_replace(HandlerState::Stopped(e));
                    return;
                }
            };
            self.count(|c| c.handler_starts += 1);
            inst.count(|c| c.starts += 1);
            let probe = {
                let (s, port) = (self.clone(), inst.port);
                async move {
                    s.probe_until_ready(port, s.app.host.initialization_timeout)
                        .await
                }
            };
            tokio::pin!(probe);
            let mut probing = true;
            let mut became_ready = false;
            let mut killed = false;
            let status = loop {
                tokio::select! {
                    ready = &mut probe, if probing => {
                        probing = false;
                        if ready {
                            became_ready = true;
                            failed_starts = 0;
                            inst.state_tx.send_replace(HandlerState::Ready);
                        } else {
                            tracing::error!("custom handler not ready after {:?}; restarting", self.app.host.initialization_timeout);
                            let _ = child.start_kill();
                        }
                    }
                    status = child.wait() => break status.ok(),
                    _ = inst.kill.notified() => {
                        killed = true;
                        let _ = child.start_kill();
                    }
                    _ = stop_rx.changed() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return;
                    }
                }
            };
            if self.stopping() {
                return;
            }
            let code = status.and_then(|s| s.code());
            tracing::warn!(exit_code = ?code, killed, instance = inst.index, "custom handler exited");
            if !became_ready {
                failed_starts += 1;
                if failed_starts >= self.config.max_failed_starts {
                    inst.state_tx.send_replace(HandlerState::Stopped(format!(
                        "{failed_starts} consecutive starts never became ready"
                    )));
                    return;
                }
            }
            match code {
                Some(0) if !killed => {
                    // Exit 0: the host does not restart; later invocations fail.
                    inst.state_tx
                        .send_replace(HandlerState::Stopped("handler exited with code 0".into()));
                    return;
                }
                Some(200) if !killed => {} // intentional restart, not an error
                _ => {
                    self.count(|c| c.handler_restarts += 1);
                    inst.count(|c| c.restarts += 1);
                }
            }
        }
    }

    fn start_triggers(self: &Arc<Self>) -> Result<(), HostSimError> {
        for f in self.app.functions.clone() {
            match &f.trigger {
                Trigger::Timer { schedule, .. } => {
                    let parsed = Schedule::parse(schedule).map_err(|e| HostSimError::Invalid {
                        path: self.app.root.join(&f.name).join("function.json"),
                        reason: e.to_string(),
                    })?;
                    // Evaluated now, when the listener starts (not when the task first runs),
                    // so a clock jump right after start() counts as missed occurrences.
                    let now = self.clock.now();
                    let first = parsed.next_after(now);
                    let s = self.clone();
                    self.track(tokio::spawn(async move {
                        s.run_timer(f, parsed, now, first).await
                    }));
                }
                Trigger::ServiceBus { queue, .. } => {
                    if self.bus.counters(queue).is_err() {
                        return Err(HostSimError::Invalid {
                            path: self.app.root.join(&f.name).join("function.json"),
                            reason: format!(
                                "queue {queue:?} does not exist in the emulated namespace"
                            ),
                        });
                    }
                    let s = self.clone();
                    self.track(tokio::spawn(async move { s.run_queue(f).await }));
                }
                Trigger::EventGrid { .. } | Trigger::Other { .. } => {}
            }
        }
        Ok(())
    }

    async fn run_timer(
        self: Arc<Self>,
        f: FunctionDef,
        schedule: Schedule,
        started: OffsetDateTime,
        first: Option<OffsetDateTime>,
    ) {
        let Trigger::Timer {
            run_on_startup,
            use_monitor,
            ..
        } = f.trigger
        else {
            return;
        };
        // The host disables the schedule monitor for sub-minute schedules (a few upcoming
        // occurrences tell; scanning a whole year is slow for per-minute schedules).
        let upcoming = schedule.occurrences(started, started + time::Duration::days(2), 64);
        let monitored = use_monitor
            && upcoming
                .windows(2)
                .all(|w| w[1] - w[0] >= time::Duration::minutes(1));
        let mut fired = 0u32;
        let limit = self.config.timer_ticks;
        let mut stop_rx = self.stop_tx.subscribe();
        if run_on_startup && limit.is_none_or(|n| n > 0) {
            let now = self.clock.now();
            self.fire_timer_at(&f, now, false, monitored).await;
            fired += 1;
        }
        let mut next = first;
        while let Some(occurrence) = next {
            if limit.is_some_and(|n| fired >= n) || self.stopping() {
                return;
            }
            tokio::select! {
                _ = self.clock.sleep_until(occurrence) => {}
                _ = stop_rx.changed() => return,
            }
            // A clock jump past several occurrences runs once, past due, for the latest.
            let now = self.clock.now();
            let latest = schedule
                .latest_at_or_before(now)
                .unwrap_or(occurrence)
                .max(occurrence);
            self.fire_timer_at(&f, latest, latest > occurrence, monitored)
                .await;
            fired += 1;
            next = schedule.next_after(self.clock.now().max(latest));
        }
    }

    async fn fire_timer_at(
        &self,
        f: &FunctionDef,
        occurrence: OffsetDateTime,
        past_due: bool,
        monitored: bool,
    ) -> InvocationRecord {
        let Trigger::Timer { binding, .. } = &f.trigger else {
            unreachable!("timer functions only");
        };
        let now = self.clock.now();
        let previous = self
            .timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&f.name)
            .copied()
            .unwrap_or(TimerState {
                last: None,
                last_updated: now,
            });
        let status = monitored.then(|| ScheduleStatus {
            last: previous.last.unwrap_or_else(dotnet_min_value),
            next: occurrence,
            last_updated: previous.last_updated,
        });
        // A failed run is retried only under a function-level retry policy (PROTOCOL §4.6);
        // without one the tick is simply lost until the next occurrence, as on the real host.
        let mut retry = f.retry.as_ref().map(|p| RetryContext {
            retry_count: 0,
            max_retry_count: p.max_retry_count,
            exception: None,
        });
        let mut record;
        loop {
            let at = self.clock.now();
            let body =
                timer_body_with_retry(&f.name, binding, status, past_due, at, retry.as_ref());
            record = self.invoke(f, "timer", body, None, None).await;
            let (Some(policy), Some(ctx)) = (&f.retry, retry.as_mut()) else {
                break;
            };
            if record.status == InvocationStatus::Succeeded
                || ctx.retry_count >= policy.max_retry_count
                || self.stopping()
            {
                break;
            }
            ctx.retry_count += 1;
            ctx.exception = Some(
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", record.status)),
            );
            self.count(|c| c.timer_retries += 1);
            let mut stop_rx = self.stop_tx.subscribe();
            tokio::select! {
                _ = self.clock.sleep_until(self.clock.now() + policy.delay(ctx.retry_count)) => {}
                _ = stop_rx.changed() => break,
            }
        }
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                f.name.clone(),
                TimerState {
                    last: Some(now),
                    last_updated: self.clock.now(),
                },
            );
        record
    }

    /// Runs a timer function once now (control endpoint, tests); not past due.
    pub async fn fire_timer(&self, function: &str) -> Result<InvocationRecord, HostSimError> {
        let f = self
            .app
            .function(function)
            .filter(|f| matches!(f.trigger, Trigger::Timer { .. }))
            .ok_or_else(|| HostSimError::BadEvent(format!("no timer function named {function:?}")))?
            .clone();
        let now = self.clock.now();
        Ok(self.fire_timer_at(&f, now, false, true).await)
    }

    async fn run_queue(self: Arc<Self>, f: FunctionDef) {
        let Trigger::ServiceBus { queue, .. } = &f.trigger else {
            return;
        };
        let queue = queue.clone();
        // maxConcurrentCalls is per instance: N instances take up to N times as many at once.
        let permits = Arc::new(Semaphore::new(
            self.app.host.max_concurrent_calls * self.instances.len(),
        ));
        let f = Arc::new(f);
        loop {
            if self.stopping() {
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            match self.bus.receive(&queue) {
                Ok(Some(delivery)) => {
                    // The host renews the lock up to maxAutoLockRenewalDuration.
                    let until = self.clock.now() + self.app.host.max_auto_lock_renewal;
                    self.bus.renew_lock(&queue, &delivery.lock_token, until);
                    let s = self.clone();
                    let f = f.clone();
                    tokio::spawn(async move {
                        s.deliver(&f, delivery).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let wait = self
                        .bus
                        .next_available_at(&queue)
                        .map(|t| self.clock.real_until(t))
                        .unwrap_or(Duration::from_millis(50))
                        .clamp(Duration::from_millis(2), Duration::from_millis(50));
                    tokio::select! {
                        _ = self.bus.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    tracing::error!("listener for {}: {e}", f.name);
                    return;
                }
            }
        }
    }

    async fn deliver(&self, f: &FunctionDef, delivery: Delivery) {
        let Trigger::ServiceBus {
            binding, binary, ..
        } = &f.trigger
        else {
            return;
        };
        let body = service_bus_body(
            &f.name,
            binding,
            *binary,
            &delivery,
            &self.client,
            self.clock.now(),
        );
        let invocation = self.invoke(
            f,
            "serviceBus",
            body,
            Some(delivery.message.delivery_count),
            Some(delivery.message.message_id.clone()),
        );
        let record = tokio::select! {
            record = invocation => record,
            never = self.renew_while_running(&delivery) => match never {},
        };
        if record.status == InvocationStatus::Succeeded {
            self.bus.complete(&delivery.queue, &delivery.lock_token);
        } else {
            self.bus.abandon(&delivery.queue, &delivery.lock_token);
        }
    }

    /// Keeps the lock of a message whose invocation runs for as long as functionTimeout's real
    /// floor ([`HostSimConfig::min_real_function_timeout`]): the initial renewal covers
    /// maxAutoLockRenewalDuration of virtual time only, which at high speed is less than the
    /// real time a busy handler needs, and a lost lock means a redelivery of a message that is
    /// being handled (and a dead letter once DeliveryCount reaches the maximum). Never returns.
    async fn renew_while_running(&self, delivery: &Delivery) -> std::convert::Infallible {
        let real_start = Instant::now();
        let virtual_until = self.clock.now() + self.app.host.max_auto_lock_renewal;
        let lock_duration = self.bus.config().lock_duration;
        while real_start.elapsed() < self.config.min_real_function_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let until = virtual_until.max(self.clock.now() + lock_duration);
            self.bus
                .renew_lock(&delivery.queue, &delivery.lock_token, until);
        }
        std::future::pending().await
    }

    /// Injects Event Grid events (one invocation per event and eventGridTrigger function),
    /// delivered in the background with retries. Returns the event ids.
    pub fn inject_events(self: &Arc<Self>, body: Value) -> Result<Vec<String>, HostSimError> {
        let events = normalize_events(body, self.clock.now())?;
        let functions: Vec<FunctionDef> = self
            .app
            .functions
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::EventGrid { .. }))
            .cloned()
            .collect();
        if functions.is_empty() {
            return Err(HostSimError::BadEvent(
                "the app has no eventGridTrigger function".into(),
            ));
        }
        let mut ids = Vec::new();
        for event in events {
            ids.push(event["id"].as_str().unwrap_or_default().to_string());
            for f in &functions {
                let s = self.clone();
                let f = f.clone();
                let event = event.clone();
                self.track(tokio::spawn(async move { s.deliver_event(f, event).await }));
            }
        }
        Ok(ids)
    }

    async fn deliver_event(&self, f: FunctionDef, event: Value) {
        let Trigger::EventGrid { binding } = &f.trigger else {
            return;
        };
        let delays = self.config.event_grid_retry_delays.clone();
        for attempt in 0..=delays.len() {
            let body = event_grid_body(&f.name, binding, &event, self.clock.now());
            let record = self
                .invoke(&f, "eventGrid", body, Some(attempt as u32 + 1), None)
                .await;
            if record.status == InvocationStatus::Succeeded {
                return;
            }
            match delays.get(attempt) {
                Some(delay) => {
                    let at = self.clock.now() + *delay;
                    self.clock.sleep_until(at).await;
                }
                None => {
                    self.count(|c| c.event_grid_dead_lettered += 1);
                    self.event_grid_dead
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(serde_json::json!({
                            "function": f.name,
                            "event": event,
                            "deliveryAttempts": attempt + 1,
                            "lastError": record.error,
                        }));
                    return;
                }
            }
        }
    }

    /// Sends one invocation and classifies the reply (§4.2), then records it.
    async fn invoke(
        &self,
        f: &FunctionDef,
        trigger: &'static str,
        body: String,
        delivery_count: Option<u32>,
        message_id: Option<String>,
    ) -> InvocationRecord {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let started = self.clock.now();
        let real_start = Instant::now();
        let timer = trigger == "timer";
        let inst = self.dispatch();
        inst.count(|c| c.invocations += 1);
        inst.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if timer {
            self.timers_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = self
            .call_handler(f, &inst, &invocation_id, body, started)
            .await;
        if timer {
            self.timers_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        inst.in_flight.fetch_sub(1, Ordering::Relaxed);
        let record = InvocationRecord {
            invocation_id,
            function: f.name.clone(),
            trigger,
            instance: inst.index,
            status: outcome.status,
            http_status: outcome.http_status,
            error: outcome.error,
            started,
            duration_ms: real_start.elapsed().as_millis() as u64,
            delivery_count,
            message_id,
            response: outcome.response,
        };
        if record.status != InvocationStatus::Succeeded {
            tracing::warn!(function = %record.function, status = ?record.status, error = ?record.error, "invocation failed");
        }
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record.clone());
        record
    }

    async fn call_handler(
        &self,
        f: &FunctionDef,
        inst: &Instance,
        invocation_id: &str,
        body: String,
        started: OffsetDateTime,
    ) -> Outcome {
        let fail = |error: String, http_status: Option<u16>| Outcome {
            status: InvocationStatus::Failed,
            http_status,
            error: Some(error),
            response: None,
        };
        if let Err(e) = inst
            .wait_ready(self.app.host.initialization_timeout * 4)
            .await
        {
            return fail(e, None);
        }
        let deadline = self.app.host.function_timeout.map(|t| started + t);
        let url = format!("http://127.0.0.1:{}/{}", inst.port, f.name);
        // A one-chunk stream: no Content-Length, so HTTP/1.1 goes chunked like the host's.
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let request = self
            .http
            .post(url)
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(stream));
        let exchange = async {
            let resp = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    // A crashed handler: give the supervisor a moment to notice the exit, so the
                    // redelivery waits for the restart instead of burning DeliveryCount at once
                    // (the real host's dispatcher learns of the exit about as fast).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(fail(format!("connection error: {e}"), None));
                }
            };
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| fail(format!("reading the reply: {e}"), Some(status)))?;
            Ok::<_, Outcome>((status, content_type, bytes))
        };
        let timed = async {
            match deadline {
                Some(d) => {
                    let real_floor = tokio::time::sleep(self.config.min_real_function_timeout);
                    tokio::select! {
                        r = exchange => Some(r),
                        _ = async { tokio::join!(self.clock.sleep_until(d), real_floor) } => None,
                    }
                }
                None => Some(exchange.await),
            }
        };
        let (status, content_type, bytes) = match timed.await {
            None => {
                self.count(|c| c.timeouts += 1);
                self.restart_after_timeout(inst);
                return Outcome {
                    status: InvocationStatus::TimedOut,
                    http_status: None,
                    error: Some("no reply within functionTimeout; handler restarted".into()),
                    response: None,
                };
            }
            Some(Err(outcome)) => return outcome,
            Some(Ok(r)) => r,
        };
        if !(200..300).contains(&status) {
            // The host only reads the status, but keeping the handler's error body lets tests
            // and the dump say why the invocation failed.
            return Outcome {
                response: serde_json::from_slice(&bytes).ok(),
                ..fail(
                    "Response status code does not indicate success".to_string(),
                    Some(status),
                )
            };
        }
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() || text.trim() == "null" {
            // The real host never completes such an invocation: it hangs until functionTimeout,
            // which then restarts the handler (PROTOCOL §4.2).
            self.count(|c| c.protocol_violations += 1);
            if let Some(d) = deadline {
                self.clock.sleep_until(d).await;
                self.count(|c| c.timeouts += 1);
                self.restart_after_timeout(inst);
            }
            return Outcome {
                status: InvocationStatus::ProtocolViolation,
                http_status: Some(status),
                error: Some(
                    "2xx with an empty or null body: the host hangs until functionTimeout".into(),
                ),
                response: None,
            };
        }
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if media != "application/json" && media != "text/json" {
            return fail(
                format!("reply Content-Type {content_type:?} is not application/json"),
                Some(status),
            );
        }
        let parsed: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return fail(format!("reply is not JSON: {e}"), Some(status)),
        };
        if let Some(logs) = prop(&parsed, "Logs").and_then(Value::as_array) {
            for line in logs {
                let line = line
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| line.to_string());
                tracing::info!(target: "Function.User", function = %f.name, "{line}");
            }
        }
        if let Err(e) = self.apply_outputs(f, &parsed) {
            return fail(e, Some(status));
        }
        Outcome {
            status: InvocationStatus::Succeeded,
            http_status: Some(status),
            error: None,
            response: Some(parsed),
        }
    }

    fn apply_outputs(&self, f: &FunctionDef, reply: &Value) -> Result<(), String> {
        let mut outputs: Map<String, Value> = prop(reply, "Outputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // ReturnValue as an object supplies further outputs when there is no $return (§4.3).
        if let Some(Value::Object(rv)) = prop(reply, "ReturnValue") {
            for (k, v) in rv {
                outputs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for binding in &f.outputs {
            let Some(value) = outputs.get(&binding.name) else {
                continue;
            };
            for text in output_messages(value) {
                self.bus
                    .send(
                        &binding.queue,
                        NewMessage {
                            body: text,
                            content_type: Some("text/plain".into()),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| format!("output binding {}: {e}", binding.name))?;
                self.count(|c| c.output_messages_sent += 1);
            }
        }
        Ok(())
    }

    fn restart_after_timeout(&self, inst: &Instance) {
        if self.config.launch == HandlerLaunch::Spawn {
            inst.kill.notify_one();
        }
    }
}

/// The level the Functions host logs a custom handler's console line at (category
/// `Host.Function.Console`), as `WorkerProcess.cs` in Azure/azure-functions-host does
/// (`OnOutputDataReceived`, `ParseErrorMessageAndLog`; `HttpWorkerProcess` leaves
/// `useStdErrStreamForErrorsOnly` false): stdout is Information; stderr is Warning when the line
/// contains "warn", else Error when it contains "error", "fail" or "severe", else Information
/// (case-insensitive). Not modelled: lines starting `LanguageWorkerConsoleLog` go to the worker
/// logger instead (vmrp never writes them).
pub fn console_level(stderr: bool, line: &str) -> ConsoleLevel {
    if !stderr {
        return ConsoleLevel::Information;
    }
    let lower = line.to_ascii_lowercase();
    if lower.contains("warn") {
        ConsoleLevel::Warning
    } else if ["error", "fail", "severe"]
        .iter()
        .any(|k| lower.contains(k))
    {
        ConsoleLevel::Error
    } else {
        ConsoleLevel::Information
    }
}

/// The host's log levels a console line can get (Application Insights `severityLevel` 1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConsoleLevel {
    Information,
    Warning,
    Error,
}

impl ConsoleLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Information => "Information",
            Self::Warning => "Warning",
            Self::Error => "Error",
        }
    }
}

/// One console line of the handler as the host records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleLine {
    pub level: ConsoleLevel,
    /// Read from stderr (else stdout).
    pub stderr: bool,
    pub message: String,
}

/// Console lines forwarded from the handler; shared by the forwarding tasks and the dump.
struct ConsoleSink(Arc<Mutex<std::collections::VecDeque<ConsoleLine>>>);

impl ConsoleSink {
    fn push(&self, line: ConsoleLine) {
        let mut tail = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() >= CONSOLE_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The handler dies with this process, however this process ends: `kill_on_drop` and `stop()`
/// cover an orderly exit, but a SIGKILL (or a SIGTERM nobody handles) runs no destructor, and
/// the orphaned `vmrp serve` would keep its port. On Linux the kernel sends the child SIGKILL
/// when the thread that spawned it exits; that is a tokio worker (or the test's thread), which
/// lives as long as the runtime. Elsewhere only the orderly paths apply.
fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // getppid, both async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would signal us.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the host simulation exited"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policies_parse_and_back_off() {
        let invalid = |reason: String| HostSimError::BadEvent(reason);
        let exp = serde_json::json!({"retry": {"strategy": "exponentialBackoff", "maxRetryCount": 5,
            "minimumInterval": "00:00:10", "maximumInterval": "00:01:00"}});
        let p = load_retry(&exp, &invalid).unwrap().unwrap();
        assert_eq!(p.max_retry_count, 5);
        let delays: Vec<i64> = (1..=5).map(|r| p.delay(r).whole_seconds()).collect();
        assert_eq!(delays, vec![10, 20, 40, 60, 60]);
        let fixed = serde_json::json!({"retry": {"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:05"}});
        assert_eq!(
            load_retry(&fixed, &invalid)
                .unwrap()
                .unwrap()
                .delay(2)
                .whole_seconds(),
            5
        );
        assert!(load_retry(&serde_json::json!({}), &invalid)
            .unwrap()
            .is_none());
        let bad = serde_json::json!({"retry": {"strategy": "sometimes", "maxRetryCount": 2}});
        assert!(load_retry(&bad, &invalid).is_err());
    }

    #[test]
    fn timer_retries_carry_a_retry_context() {
        let now = time::macros::datetime!(2026-01-05 08:00 UTC);
        let ctx = RetryContext {
            retry_count: 2,
            max_retry_count: 5,
            exception: Some("HTTP 500".into()),
        };
        let body: Value = serde_json::from_str(&timer_body_with_retry(
            "ScheduleRestorePoints",
            "timer",
            None,
            false,
            now,
            Some(&ctx),
        ))
        .unwrap();
        let rc = &body["Metadata"]["RetryContext"];
        assert_eq!(rc["RetryCount"], 2);
        assert_eq!(rc["MaxRetryCount"], 5);
        assert_eq!(rc["Exception"]["Message"], "HTTP 500");
        assert!(rc["Instance"].is_null());
        let plain: Value = serde_json::from_str(&timer_body(
            "ScheduleRestorePoints",
            "timer",
            None,
            false,
            now,
        ))
        .unwrap();
        assert!(plain["Metadata"].get("RetryContext").is_none());
    }
    use crate::faults::{Dice, FaultConfig};
    use crate::identity::IdentityEndpoint;
    use crate::servicebus::BusConfig;
    use axum::http::HeaderMap;
    use std::collections::BTreeSet;
    use time::macros::datetime;

    const FIXTURE_APP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/functions-app"
    );
    const PAYLOADS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../reference/functions-custom-handler/payloads"
    );

    fn payload(name: &str) -> Value {
        let text = std::fs::read_to_string(format!("{PAYLOADS}/{name}")).expect("payload file");
        serde_json::from_str(&text).unwrap()
    }

    #[derive(Debug, Clone)]
    struct Captured {
        path: String,
        headers: HeaderMap,
        raw: String,
        body: Value,
    }

    /// (status, content type, body) for the n-th (0-based) call of a path.
    type Responder = Arc<dyn Fn(&str, usize) -> (u16, &'static str, String) + Send + Sync>;

    /// A stand-in handler: answers GET / (readiness), records every POST.
    async fn capture_server(responder: Responder) -> (u16, Arc<Mutex<Vec<Captured>>>) {
        use axum::extract::Request;
        let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let seen2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let seen = seen2.clone();
            let responder = responder.clone();
            async move {
                if req.method() == axum::http::Method::GET {
                    return axum::response::Response::builder()
                        .status(404)
                        .body(axum::body::Body::empty())
                        .unwrap();
                }
                let path = req.uri().path().to_string();
                let headers = req.headers().clone();
                let bytes = axum::body::to_bytes(req.into_body(), 1 << 24)
                    .await
                    .unwrap();
                let raw = String::from_utf8(bytes.to_vec()).unwrap();
                let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.iter().filter(|c| c.path == path).count();
                    seen.push(Captured {
                        path: path.clone(),
                        headers,
                        raw,
                        body,
                    });
                    n
                };
                let (status, ct, text) = responder(&path, n);
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", ct)
                    .body(axum::body::Body::from(text))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, seen)
    }

    fn bus_and_clock(
        start: OffsetDateTime,
        speed: f64,
        max_delivery: u32,
    ) -> (Arc<ServiceBus>, Arc<VirtualClock>) {
        let clock = Arc::new(VirtualClock::new(start, speed));
        let bus = ServiceBus::new(
            BusConfig {
                namespace: "contoso-sb".into(),
                max_delivery_count: max_delivery,
                ..Default::default()
            },
            clock.clone(),
            Arc::new(Dice::new(3)),
            Arc::new(FaultConfig::default()),
            IdentityEndpoint::new("h", false),
        );
        (bus, clock)
    }

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A coarse class of a string value: how it is encoded, not what it says.
    fn class(s: &str) -> String {
        if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_string()) {
            return "json-encoded string".into();
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return "guid".into();
        }
        if s.parse::<i64>().is_ok() {
            return "integer".into();
        }
        let iso = s.len() >= 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
        if iso {
            let tail = &s[19..];
            let frac = tail.starts_with('.');
            let zone = if tail.ends_with('Z') {
                "Z"
            } else if tail.ends_with("+00:00") {
                "+00:00"
            } else if tail
                .trim_start_matches('.')
                .chars()
                .all(|c| c.is_ascii_digit())
            {
                "none"
            } else {
                "other"
            };
            // Seconds-precision values must stay so; fractions may vary in length.
            return format!("iso zone={zone} seconds-only={}", !frac && zone != "Z");
        }
        "text".into()
    }

    fn assert_same_shape(
        expected: &Value,
        actual: &Value,
        path: &str,
        skip_fraction_check: &[&str],
    ) {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                let ek: Vec<_> = e.keys().collect();
                let ak: Vec<_> = a.keys().collect();
                assert_eq!(ek, ak, "keys of {path}");
                for (k, v) in e {
                    assert_same_shape(v, &a[k], &format!("{path}.{k}"), skip_fraction_check);
                }
            }
            (Value::String(e), Value::String(a)) => {
                if skip_fraction_check.contains(&path) {
                    return;
                }
                assert_eq!(
                    class(e),
                    class(a),
                    "encoding of {path}: expected like {e:?}, got {a:?}"
                );
            }
            (Value::Array(e), Value::Array(a)) => {
                assert_eq!(e.len(), a.len(), "length of {path}");
                for (i, (x, y)) in e.iter().zip(a).enumerate() {
                    assert_same_shape(x, y, &format!("{path}[{i}]"), skip_fraction_check);
                }
            }
            (e, a) => assert_eq!(
                std::mem::discriminant(e),
                std::mem::discriminant(a),
                "type of {path}: expected {e}, got {a}"
            ),
        }
    }

    fn assert_host_headers(c: &Captured) {
        let h = |k: &str| c.headers.get(k).map(|v| v.to_str().unwrap().to_string());
        let id = h("x-azure-functions-invocationid").expect("invocation id");
        assert_eq!(id, id.to_ascii_lowercase());
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(
            h("x-azure-functions-hostversion").as_deref(),
            Some(HOST_VERSION)
        );
        assert_eq!(
            h("user-agent"),
            Some(format!("Azure-Functions-Host/{HOST_VERSION}"))
        );
        assert_eq!(
            h("content-type").as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(h("transfer-encoding").as_deref(), Some("chunked"));
        assert!(h("content-length").is_none());
        // Compact JSON, Data before Metadata.
        assert!(c.raw.starts_with("{\"Data\":{"), "{}", c.raw);
        assert!(c.raw.contains("},\"Metadata\":{"));
        assert!(!c.raw.contains('\n'));
    }

    fn decode_twice(v: &Value) -> String {
        let once: String = serde_json::from_str(v.as_str().unwrap()).unwrap();
        once
    }

    #[tokio::test]
    async fn wire_format_matches_the_reference_payloads() {
        // Text-body poll fails twice so its third delivery carries DeliveryCount "3" as in the payload.
        let responder: Responder = Arc::new(|path, n| {
            if path == "/PollRestorePoint" && n < 2 {
                (500, "text/plain", "boom".into())
            } else {
                (200, "application/json", "{\"Logs\":[\"ok\"]}".into())
            }
        });
        let (port, seen) = capture_server(responder).await;
        // Start well before 03:00 so a slow start cannot miss the occurrence, then jump close.
        let (bus, clock) = bus_and_clock(datetime!(2024-10-25 02:00 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 * * *")]),
                timer_ticks: Some(1),
                ..HostSimConfig::new(FIXTURE_APP)
            },
            bus.clone(),
            clock.clone(),
        )
        .await
        .unwrap();

        clock.advance(datetime!(2024-10-25 02:59:59.5 UTC) - clock.now());
        let json_ref = payload("servicebus-json-body.json");
        let text_ref = payload("servicebus-text-body.json");
        let eg_ref = payload("eventgrid.json");
        let timer_ref = payload("timer.json");
        bus.send(
            "rp-copy",
            NewMessage {
                body: decode_twice(&json_ref["Data"]["msg"]),
                message_id: Some(decode_twice(&json_ref["Metadata"]["MessageId"])),
                content_type: Some("application/json".into()),
                application_properties: json_ref["Metadata"]["ApplicationProperties"]
                    .as_object()
                    .unwrap()
                    .clone(),
                ..Default::default()
            },
        )
        .unwrap();
        bus.send(
            "rp-poll",
            NewMessage {
                body: decode_twice(&text_ref["Data"]["msg"]),
                message_id: Some(decode_twice(&text_ref["Metadata"]["MessageId"])),
                ..Default::default()
            },
        )
        .unwrap();
        sim.inject_events(eg_ref["Data"]["eventGridEvent"].clone())
            .unwrap();

        let count = |p: &str| seen.lock().unwrap().iter().filter(|c| c.path == p).count();
        wait_for("all invocations", 15, || {
            count("/StartCrossRegionCopy") == 1
                && count("/PollRestorePoint") == 3
                && count("/OnVmChanged") == 1
                && count("/ScheduleRestorePoints") == 1
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        let get = |p: &str, n: usize| seen.iter().filter(|c| c.path == p).nth(n).unwrap().clone();
        for c in &seen {
            assert_host_headers(c);
        }

        // Service Bus, JSON body: same keys/encodings; deterministic values equal.
        let sb = get("/StartCrossRegionCopy", 0);
        assert_same_shape(&json_ref, &sb.body, "", &[]);
        assert_eq!(sb.body["Data"]["msg"], json_ref["Data"]["msg"]);
        for k in [
            "MessageId",
            "ContentType",
            "DeliveryCount",
            "ApplicationProperties",
            "UserProperties",
            "vmResourceId",
            "restorePointCollection",
            "restorePointName",
            "targetRegion",
            "attempt",
        ] {
            assert_eq!(
                sb.body["Metadata"][k], json_ref["Metadata"][k],
                "Metadata.{k}"
            );
        }
        assert_eq!(
            sb.body["Metadata"]["Client"]["FullyQualifiedNamespace"],
            "contoso-sb.servicebus.windows.net"
        );
        assert_eq!(
            sb.body["Metadata"]["sys"]["MethodName"],
            "StartCrossRegionCopy"
        );
        let enq = sb.body["Metadata"]["EnqueuedTimeUtc"].as_str().unwrap();
        assert_eq!(
            format!("{enq}+00:00"),
            sb.body["Metadata"]["EnqueuedTime"].as_str().unwrap()
        );

        // Service Bus, text body, third delivery.
        let text = get("/PollRestorePoint", 2);
        assert_same_shape(&text_ref, &text.body, "", &[]);
        assert_eq!(text.body["Data"]["msg"], text_ref["Data"]["msg"]);
        assert_eq!(text.body["Metadata"]["DeliveryCount"], "3");
        assert_eq!(
            get("/PollRestorePoint", 0).body["Metadata"]["DeliveryCount"],
            "1"
        );
        let seq = |c: &Captured| c.body["Metadata"]["SequenceNumber"].clone();
        assert_eq!(seq(&text), seq(&get("/PollRestorePoint", 0)));

        // Event Grid: the event passes through untouched.
        let eg = get("/OnVmChanged", 0);
        assert_same_shape(&eg_ref, &eg.body, "", &[]);
        assert_eq!(eg.body["Data"], eg_ref["Data"]);
        assert_eq!(eg.body["Metadata"]["data"], eg_ref["Metadata"]["data"]);

        // Timer: first run ever, at the 03:00 occurrence.
        let timer = get("/ScheduleRestorePoints", 0);
        assert_same_shape(
            &timer_ref,
            &timer.body,
            "",
            &[
                "",
                ".Data.timer.ScheduleStatus.Last",
                ".Data.timer.ScheduleStatus.LastUpdated",
            ],
        );
        let status = &timer.body["Data"]["timer"]["ScheduleStatus"];
        assert_eq!(status["Next"], "2024-10-25T03:00:00+00:00");
        assert_eq!(status["Last"], "0001-01-01T00:00:00+00:00");
        assert!(status["LastUpdated"].as_str().unwrap().ends_with("+00:00"));
        assert_eq!(timer.body["Data"]["timer"]["IsPastDue"], false);
        assert_eq!(
            timer.body["Data"]["timer"]["Schedule"]["AdjustForDST"],
            true
        );
        let utc_now = timer.body["Metadata"]["sys"]["UtcNow"].as_str().unwrap();
        assert!(
            utc_now.starts_with("2024-10-25T03:00:0") && utc_now.ends_with('Z'),
            "{utc_now}"
        );

        // Completed messages are gone; failed attempts were recorded.
        wait_for("settlement", 5, || {
            bus.messages("rp-poll").unwrap().is_empty()
                && bus.messages("rp-copy").unwrap().is_empty()
                && sim.records().len() == 6
        })
        .await;
        let records = sim.records();
        assert_eq!(
            records
                .iter()
                .filter(|r| r.status == InvocationStatus::Failed && r.http_status == Some(500))
                .count(),
            2
        );
        assert_eq!(
            records
                .iter()
                .filter(|r| r.status == InvocationStatus::Succeeded)
                .count(),
            4
        );
        sim.stop().await;
    }

    #[tokio::test]
    async fn failing_replies_abandon_and_dead_letter_after_max_delivery_count() {
        // Three kinds of failure from §4.2: non-2xx, non-JSON content type, unparseable JSON.
        let responder: Responder = Arc::new(|_, n| match n {
            0 => (503, "application/json", "{}".into()),
            1 => (200, "text/plain", "ok".into()),
            _ => (200, "application/json", "{not json".into()),
        });
        let (port, seen) = capture_server(responder).await;
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 3);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 1 1 *")]),
                ..HostSimConfig::new(FIXTURE_APP)
            },
            bus.clone(),
            clock,
        )
        .await
        .unwrap();
        bus.send(
            "rp-create",
            NewMessage {
                body: "{\"v\":1}".into(),
                ..Default::default()
            },
        )
        .unwrap();
        wait_for("dead letter", 10, || {
            bus.dead_letters("rp-create").unwrap().len() == 1
        })
        .await;
        let dl = &bus.dead_letters("rp-create").unwrap()[0];
        assert_eq!(dl.reason, "MaxDeliveryCountExceeded");
        let counts: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                c.body["Metadata"]["DeliveryCount"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(counts, ["1", "2", "3"]);
        let records = sim.records();
        assert_eq!(records.len(), 3);
        assert!(
            records.iter().all(|r| r.status == InvocationStatus::Failed),
            "{records:?}"
        );
        assert!(records[1]
            .error
            .as_deref()
            .unwrap()
            .contains("Content-Type"));
        assert!(records[2].error.as_deref().unwrap().contains("not JSON"));
        assert!(bus.messages("rp-create").unwrap().is_empty());
        sim.stop().await;
    }

    fn write_app(dir: &Path, host_json: &str) {
        std::fs::write(dir.join("host.json"), host_json).unwrap();
        for f in ["CreateRestorePoint", "PollRestorePoint"] {
            let src = Path::new(FIXTURE_APP).join(f);
            std::fs::create_dir_all(dir.join(f)).unwrap();
            std::fs::copy(src.join("function.json"), dir.join(f).join("function.json")).unwrap();
        }
    }

    #[tokio::test]
    async fn an_empty_2xx_reply_hangs_until_function_timeout_and_is_a_protocol_violation() {
        let dir = tempfile::tempdir().unwrap();
        write_app(
            dir.path(),
            r#"{"version":"2.0","functionTimeout":"00:01:00",
                "customHandler":{"description":{"defaultExecutablePath":"unused"}}}"#,
        );
        let responder: Responder = Arc::new(|_, n| {
            if n == 0 {
                (200, "application/json", String::new())
            } else {
                (200, "application/json", "{}".into())
            }
        });
        let (port, _seen) = capture_server(responder).await;
        // 60 s of function timeout = 0.5 s real.
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 120.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                ..HostSimConfig::new(dir.path())
            },
            bus.clone(),
            clock.clone(),
        )
        .await
        .unwrap();
        let sent_at = clock.now();
        bus.send(
            "rp-poll",
            NewMessage {
                body: "x".into(),
                ..Default::default()
            },
        )
        .unwrap();
        wait_for("redelivery success", 10, || {
            sim.records()
                .iter()
                .any(|r| r.status == InvocationStatus::Succeeded)
        })
        .await;
        let records = sim.records();
        assert_eq!(records[0].status, InvocationStatus::ProtocolViolation);
        assert_eq!(records[1].delivery_count, Some(2));
        // The failure came only after functionTimeout (virtual).
        assert!(records[1].started - sent_at >= time::Duration::seconds(60));
        assert_eq!(sim.counters().protocol_violations, 1);
        sim.stop().await;
    }

    const PY_HANDLER: &str = r#"
import http.server, json, os, sys
port = int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])
root = os.environ["FUNCTIONS_APP_ROOT_PATH"]
with open(os.path.join(root, "starts.jsonl"), "a") as f:
    f.write(json.dumps({"port": port, "worker": os.environ.get("FUNCTIONS_CUSTOMHANDLER_WORKER_ID"),
        "httpworker": os.environ.get("FUNCTIONS_HTTPWORKER_PORT"), "setting": os.environ.get("MY_SETTING"),
        "argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")

def read_chunked(rfile):
    data = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return data
        data += rfile.read(size)
        rfile.readline()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_POST(self):
        read_chunked(self.rfile)
        marker = os.path.join(root, "crashed")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        body = b'{"Logs":["done"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True

print("handler listening", flush=True)
S(("127.0.0.1", port), H).serve_forever()
"#;

    #[tokio::test]
    async fn spawns_the_handler_like_the_host_and_restarts_it_after_crash_and_kill() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write_app(
            &root,
            r#"{"version":"2.0","functionTimeout":"00:10:00",
                "customHandler":{"description":{"defaultExecutablePath":"python3",
                  "arguments":["handler.py","%EXTRA_ARG%","%NOT_SET_ANYWHERE_X%"]}}}"#,
        );
        std::fs::write(root.join("handler.py"), PY_HANDLER).unwrap();
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                app_settings: settings(&[("MY_SETTING", "x"), ("EXTRA_ARG", "--flag")]),
                ..HostSimConfig::new(&root)
            },
            bus.clone(),
            clock,
        )
        .await
        .unwrap();
        assert_eq!(sim.counters().handler_starts, 1);
        bus.send(
            "rp-create",
            NewMessage {
                body: "{}".into(),
                ..Default::default()
            },
        )
        .unwrap();
        wait_for("success after the crash", 20, || {
            sim.records()
                .iter()
                .any(|r| r.status == InvocationStatus::Succeeded)
        })
        .await;
        let records = sim.records();
        assert_eq!(
            records[0].status,
            InvocationStatus::Failed,
            "the crash fails the invocation"
        );
        assert!(records.last().unwrap().delivery_count.unwrap() >= 2);
        assert!(sim.counters().handler_restarts >= 1);
        wait_for("completion", 5, || {
            bus.messages("rp-create").unwrap().is_empty()
        })
        .await;

        sim.kill_handler();
        wait_for("restart after kill", 20, || {
            sim.counters().handler_starts == 3 && sim.handler_state() == HandlerState::Ready
        })
        .await;

        let starts: Vec<Value> = std::fs::read_to_string(root.join("starts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(starts.len(), 3);
        let port = sim.handler_port() as u64;
        for s in &starts {
            assert_eq!(s["port"], port, "same port across restarts");
            assert_eq!(s["httpworker"], port.to_string());
            assert_eq!(s["setting"], "x");
            assert_eq!(
                s["argv"],
                serde_json::json!(["--flag"]),
                "%ENV% expanded, unresolved deleted"
            );
            assert_eq!(s["cwd"], root.to_str().unwrap());
        }
        assert_ne!(starts[0]["worker"], starts[1]["worker"]);
        assert!(sim.dump()["console"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "handler listening"));
        sim.stop().await;
        assert!(matches!(sim.handler_state(), HandlerState::Stopped(_)));
    }

    #[test]
    fn invocations_go_to_the_least_busy_ready_instance_in_turn() {
        // (ready, stopped, in flight)
        let idle = (true, false, 0);
        // Equally idle: in turn.
        assert_eq!(pick_instance(&[idle, idle, idle], 0), 0);
        assert_eq!(pick_instance(&[idle, idle, idle], 1), 1);
        assert_eq!(pick_instance(&[idle, idle, idle], 5), 2);
        // The least busy wins whatever the turn.
        assert_eq!(
            pick_instance(&[(true, false, 3), (true, false, 1), (true, false, 2)], 0),
            1
        );
        // A restarting instance gets nothing while another is ready, however busy.
        assert_eq!(pick_instance(&[(false, false, 0), (true, false, 9)], 0), 1);
        // None ready: the next in turn that is not stopped for good (the invocation waits).
        assert_eq!(pick_instance(&[(false, true, 0), (false, false, 0)], 0), 1);
        // All stopped: anything (the invocation fails with the stop reason).
        assert_eq!(pick_instance(&[(false, true, 0), (false, true, 0)], 1), 1);
    }

    #[tokio::test]
    async fn several_instances_each_own_port_share_the_work_and_a_kill_hits_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write_app(
            &root,
            r#"{"version":"2.0","functionTimeout":"00:10:00",
                "customHandler":{"description":{"defaultExecutablePath":"python3",
                  "arguments":["handler.py"]}}}"#,
        );
        std::fs::write(root.join("handler.py"), PY_HANDLER).unwrap();
        // No crash on the first invocation: this test is about kills.
        std::fs::write(root.join("crashed"), "").unwrap();
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                instances: 3,
                ..HostSimConfig::new(&root)
            },
            bus.clone(),
            clock,
        )
        .await
        .unwrap();
        assert_eq!(sim.instance_count(), 3);
        let ports = sim.handler_ports();
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), 3, "{ports:?}");
        let send = |n: usize| {
            for _ in 0..n {
                bus.send(
                    "rp-create",
                    NewMessage {
                        body: "{}".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
            }
        };
        send(12);
        wait_for("12 successes", 20, || {
            sim.records()
                .iter()
                .filter(|r| r.status == InvocationStatus::Succeeded)
                .count()
                == 12
        })
        .await;
        let used: BTreeSet<usize> = sim.records().iter().map(|r| r.instance).collect();
        assert!(used.len() > 1, "one instance took everything: {used:?}");
        let per: Vec<u64> = sim
            .instance_counters()
            .iter()
            .map(|c| c.invocations)
            .collect();
        assert_eq!(per.iter().sum::<u64>(), 12, "{per:?}");

        assert!(sim.kill_instance(1));
        assert!(!sim.kill_instance(3), "no fourth instance to kill");
        send(12);
        wait_for("12 more successes and instance 1 back", 20, || {
            sim.records()
                .iter()
                .filter(|r| r.status == InvocationStatus::Succeeded)
                .count()
                == 24
                && sim.handler_state() == HandlerState::Ready
        })
        .await;
        let counters = sim.instance_counters();
        assert_eq!(
            counters
                .iter()
                .map(|c| (c.kills, c.starts))
                .collect::<Vec<_>>(),
            vec![(0, 1), (1, 2), (0, 1)],
            "only instance 1 was killed and restarted"
        );
        assert_eq!(sim.counters().handler_kills, 1);
        // The others kept serving: nothing they were sent failed.
        assert!(sim
            .records()
            .iter()
            .filter(|r| r.instance != 1)
            .all(|r| r.status == InvocationStatus::Succeeded));
        // Each process was told its own port (FUNCTIONS_CUSTOMHANDLER_PORT).
        let started: BTreeSet<u64> = std::fs::read_to_string(root.join("starts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["port"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(started, ports.iter().map(|p| u64::from(*p)).collect());
        sim.stop().await;
        assert!(matches!(sim.handler_state(), HandlerState::Stopped(_)));
    }

    #[tokio::test]
    async fn a_clock_jump_runs_the_timer_once_past_due_then_on_schedule() {
        let (port, seen) =
            capture_server(Arc::new(|_, _| (200, "application/json", "{}".into()))).await;
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00:30 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                app_settings: settings(&[("VMRP_SCHEDULE", "0 * * * * *")]),
                timer_ticks: Some(2),
                ..HostSimConfig::new(FIXTURE_APP)
            },
            bus,
            clock.clone(),
        )
        .await
        .unwrap();
        let timers = || -> Vec<Value> {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|c| c.path == "/ScheduleRestorePoints")
                .map(|c| c.body["Data"]["timer"].clone())
                .collect()
        };
        clock.advance(time::Duration::minutes(10));
        // The record lands after the reply is handled; only then is the next occurrence set.
        wait_for("past-due run", 5, || {
            timers().len() == 1 && sim.records().len() == 1
        })
        .await;
        let first = &timers()[0];
        assert_eq!(first["IsPastDue"], true);
        assert_eq!(first["ScheduleStatus"]["Next"], "2026-11-25T21:10:00+00:00");
        assert_eq!(first["ScheduleStatus"]["Last"], "0001-01-01T00:00:00+00:00");
        clock.advance(time::Duration::minutes(1));
        wait_for("next run", 5, || {
            timers().len() == 2 && sim.records().len() == 2
        })
        .await;
        let second = &timers()[1];
        assert_eq!(second["IsPastDue"], false);
        assert_eq!(
            second["ScheduleStatus"]["Next"],
            "2026-11-25T21:11:00+00:00"
        );
        let last = second["ScheduleStatus"]["Last"].as_str().unwrap();
        assert!(
            last.starts_with("2026-11-25T21:10:3") && last.ends_with("+00:00"),
            "{last}"
        );
        // timer_ticks = 2: no third run.
        clock.advance(time::Duration::minutes(1));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(timers().len(), 2);
        sim.stop().await;
    }

    #[tokio::test]
    async fn queue_deliveries_respect_max_concurrent_calls() {
        use std::sync::atomic::AtomicUsize;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                if req.method() == axum::http::Method::POST {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                }
                ([("content-type", "application/json")], "{}")
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        write_app(
            dir.path(),
            r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"unused"}},
                "extensions":{"serviceBus":{"maxConcurrentCalls":2}}}"#,
        );
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                ..HostSimConfig::new(dir.path())
            },
            bus.clone(),
            clock,
        )
        .await
        .unwrap();
        for i in 0..6 {
            bus.send(
                "rp-create",
                NewMessage {
                    body: format!("{i}"),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        wait_for("all six", 10, || sim.records().len() == 6).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!(sim
            .records()
            .iter()
            .all(|r| r.status == InvocationStatus::Succeeded));
        sim.stop().await;
    }

    #[tokio::test]
    async fn event_grid_failures_are_retried_with_backoff_then_dead_lettered() {
        let (port, seen) =
            capture_server(Arc::new(|_, _| (500, "application/json", "{}".into()))).await;
        // Backoff 10 s + 30 s virtual at 200x: 0.2 s real in all.
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 200.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                app_settings: settings(&[("VMRP_SCHEDULE", "0 0 3 1 1 *")]),
                event_grid_retry_delays: vec![
                    time::Duration::seconds(10),
                    time::Duration::seconds(30),
                ],
                ..HostSimConfig::new(FIXTURE_APP)
            },
            bus,
            clock,
        )
        .await
        .unwrap();
        let ids = sim
            .inject_events(serde_json::json!([{"id": "e1", "eventType": "Microsoft.Resources.ResourceDeleteSuccess",
                "subject": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v", "data": "text"}]))
            .unwrap();
        assert_eq!(ids, ["e1"]);
        wait_for("dead-lettered event", 10, || {
            sim.counters().event_grid_dead_lettered == 1
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "first try + 2 retries");
        // String data arrives as JSON text in Metadata.data (§3.3).
        assert_eq!(seen[0].body["Metadata"]["data"], "\"text\"");
        let records = sim.records();
        let gaps: Vec<i64> = records
            .windows(2)
            .map(|w| (w[1].started - w[0].started).whole_seconds())
            .collect();
        assert!(gaps[0] >= 10 && gaps[1] >= 30, "{gaps:?}");
        assert_eq!(sim.dump()["eventGridDeadLetters"][0]["deliveryAttempts"], 3);
        sim.stop().await;
    }

    #[tokio::test]
    async fn service_bus_outputs_are_sent_as_text_plain_messages() {
        let dir = tempfile::tempdir().unwrap();
        write_app(
            dir.path(),
            r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"unused"}}}"#,
        );
        std::fs::write(
            dir.path().join("CreateRestorePoint/function.json"),
            r#"{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"rp-create"},
                            {"type":"serviceBus","direction":"out","name":"outMsg","queueName":"%OUT_QUEUE%"}]}"#,
        )
        .unwrap();
        let (port, _) = capture_server(Arc::new(|_, _| {
            (
                200,
                "application/json",
                r#"{"Outputs":{"outMsg":[{"a":1},{"b":2}],"ignored":[1]},"Logs":["x"]}"#.into(),
            )
        }))
        .await;
        let (bus, clock) = bus_and_clock(datetime!(2026-11-25 21:00 UTC), 1.0, 10);
        let sim = HostSim::start(
            HostSimConfig {
                launch: HandlerLaunch::External { port },
                app_settings: settings(&[("OUT_QUEUE", "rp-copy")]),
                ..HostSimConfig::new(dir.path())
            },
            bus.clone(),
            clock,
        )
        .await
        .unwrap();
        bus.send(
            "rp-create",
            NewMessage {
                body: "{}".into(),
                ..Default::default()
            },
        )
        .unwrap();
        wait_for("outputs", 10, || {
            bus.messages("rp-copy").unwrap().len() == 2
        })
        .await;
        let out = bus.messages("rp-copy").unwrap();
        assert_eq!(out[0].body, "{\n  \"a\": 1\n}");
        assert_eq!(out[0].content_type.as_deref(), Some("text/plain"));
        assert_eq!(sim.counters().output_messages_sent, 2);
        sim.stop().await;
    }

    #[test]
    fn loads_the_fixture_app() {
        let lookup = |k: &str| (k == "VMRP_SCHEDULE").then(|| "0 0 3 * * *".to_string());
        let app = FunctionApp::load(Path::new(FIXTURE_APP), &lookup).unwrap();
        let names: Vec<_> = app.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "CreateRestorePoint",
                "OnVmChanged",
                "PlanRestorePoints",
                "PollRestorePoint",
                "ScheduleRestorePoints",
                "StartCrossRegionCopy"
            ]
        );
        // The timer's fan-out queue routes to the planning function.
        assert!(
            matches!(&app.function("PlanRestorePoints").unwrap().trigger,
            Trigger::ServiceBus { binding, queue, binary: false } if binding == "msg" && queue == "rp-plan")
        );
        assert_eq!(app.host.function_timeout, Some(time::Duration::minutes(10)));
        assert_eq!(app.host.max_concurrent_calls, 16);
        assert_eq!(app.host.executable, "vmrp");
        assert!(matches!(&app.function("PollRestorePoint").unwrap().trigger,
            Trigger::ServiceBus { binding, queue, binary: false } if binding == "msg" && queue == "rp-poll"));
        assert!(
            matches!(&app.function("ScheduleRestorePoints").unwrap().trigger,
            Trigger::Timer { schedule, .. } if schedule == "0 0 3 * * *")
        );
        let none = |_: &str| None;
        let err = FunctionApp::load(Path::new(FIXTURE_APP), &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VMRP_SCHEDULE") && err.contains("schedule"),
            "{err}"
        );
    }

    #[test]
    fn console_lines_get_the_hosts_levels() {
        let cases = [
            (
                false,
                r#"{"level":"ERROR","fields":{"outcome":"given_up"}}"#,
                ConsoleLevel::Information,
            ),
            (
                true,
                r#"{"level":"ERROR","fields":{"outcome":"given_up"}}"#,
                ConsoleLevel::Error,
            ),
            (
                true,
                r#"{"level":"WARN","fields":{"message":"vanished"}}"#,
                ConsoleLevel::Warning,
            ),
            (true, "ERROR: warning quoted", ConsoleLevel::Warning),
            (true, "request failed", ConsoleLevel::Error),
            (true, "SEVERE", ConsoleLevel::Error),
            (true, "listening on 127.0.0.1", ConsoleLevel::Information),
            (false, "error", ConsoleLevel::Information),
        ];
        for (stderr, line, level) in cases {
            assert_eq!(console_level(stderr, line), level, "{stderr} {line}");
        }
    }

    #[test]
    fn timespans_parse_like_host_json() {
        let cases: &[(&str, Result<Option<i64>, ()>)] = &[
            ("00:10:00", Ok(Some(600))),
            ("00:00:00.8000000", Ok(Some(0))),
            ("1.02:00:00", Ok(Some(93_600))),
            ("-1", Ok(None)),
            ("10", Err(())),
            ("00:61:00", Err(())),
        ];
        for (text, expected) in cases {
            let got = parse_timespan(text)
                .map(|d| d.map(|d| d.whole_seconds()))
                .map_err(|_| ());
            assert_eq!(&got, expected, "{text}");
        }
    }

    #[test]
    fn percent_expansion_deletes_unresolved_tokens() {
        let lookup = |k: &str| (k == "A").then(|| "1".to_string());
        for (input, expected) in [
            ("%A%", "1"),
            ("x%A%y", "x1y"),
            ("%B%", ""),
            ("50% off", "50% off"),
            ("%A%%B%", "1"),
        ] {
            assert_eq!(expand_percent(input, &lookup), expected, "{input}");
        }
    }

    #[test]
    fn body_metadata_casts_scalars_to_strings_then_encodes() {
        let meta = body_metadata(
            r#"{"s":"v","n":2,"f":1.5,"g":2.0,"b":true,"o":{"k":1},"a":[1],"z":null}"#,
        );
        let got: BTreeMap<String, Value> = meta
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(&v).unwrap()))
            .collect();
        let expected: BTreeMap<String, Value> = [
            ("s", Value::from("\"v\"")),
            ("n", Value::from("\"2\"")),
            ("f", Value::from("\"1.5\"")),
            ("g", Value::from("\"2\"")),
            ("b", Value::from("\"True\"")),
            ("o", serde_json::json!({"k": 1})),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(got, expected);
        assert!(body_metadata("plain text").is_empty());
        assert!(body_metadata("[1,2]").is_empty());
    }

    #[test]
    fn body_keys_overwrite_case_insensitively_and_trigger_keys_drop() {
        let mut entries = vec![
            ("MessageId".to_string(), json("\"a\"")),
            ("sys".to_string(), json(1)),
        ];
        merge_metadata(
            &mut entries,
            vec![
                ("messageid".into(), json("\"b\"")),
                ("myTrigger".into(), json("x")),
            ],
        );
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["MessageId", "sys"]);
        assert_eq!(serde_json::to_value(&entries[0].1).unwrap(), "\"b\"");
    }

    #[test]
    fn dates_are_written_like_newtonsoft() {
        let t = datetime!(2024-10-25 03:00:05.48712365 UTC);
        assert_eq!(format_utc_z(t), "2024-10-25T03:00:05.4871236Z");
        assert_eq!(
            format_local_offset(datetime!(2024-10-25 03:00 UTC)),
            "2024-10-25T03:00:00+00:00"
        );
        assert_eq!(
            format_local_offset(datetime!(2024-10-24 03:00:00.01 UTC)),
            "2024-10-24T03:00:00.01+00:00"
        );
        assert_eq!(format_datetime_seconds(t), "2024-10-25T03:00:05");
        assert_eq!(
            format_datetimeoffset_seconds(t),
            "2024-10-25T03:00:05+00:00"
        );
        assert_eq!(
            format_local_offset(dotnet_min_value()),
            "0001-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn outputs_become_messages_like_the_service_bus_binding() {
        assert_eq!(
            output_messages(&serde_json::json!([{"a":1}, "text", 3])),
            ["{\n  \"a\": 1\n}", "text", "3"]
        );
        assert_eq!(
            output_messages(&serde_json::json!("[{\"a\":1},{\"b\":2}]")).len(),
            2
        );
        assert_eq!(
            output_messages(&serde_json::json!("vm01")),
            ["System.Byte[]"]
        );
        assert_eq!(
            output_messages(&serde_json::json!("hello world")),
            ["hello world"]
        );
        assert!(output_messages(&Value::Null).is_empty());
    }

    #[test]
    fn events_are_validated_and_completed() {
        let now = datetime!(2026-11-25 21:00 UTC);
        let events = normalize_events(
            serde_json::json!({"eventType": "X", "subject": "/s", "data": {}}),
            now,
        )
        .unwrap();
        assert!(events[0]["id"].is_string());
        assert_eq!(events[0]["eventTime"], "2026-11-25T21:00:00Z");
        let ce = normalize_events(
            serde_json::json!([{"specversion": "1.0", "type": "X", "source": "/s", "id": "1"}]),
            now,
        )
        .unwrap();
        assert_eq!(ce[0]["id"], "1");
        let err = normalize_events(serde_json::json!([{"subject": "/s"}]), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("eventType"), "{err}");
        assert!(normalize_events(serde_json::json!(3), now).is_err());
    }
}
