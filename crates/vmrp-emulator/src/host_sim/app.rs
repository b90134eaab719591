//! The app a host loads: `host.json` and `<Function>/function.json` (triggers, output
//! bindings, retry policies) and the `%Setting%` expansion the host applies to them.

use super::*;

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

pub(super) fn load_retry(
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

pub(super) fn read_json(path: &Path) -> Result<Value, HostSimError> {
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
pub(super) fn prop<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
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
pub(super) fn resolve_setting(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
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

pub(super) fn load_function(
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
