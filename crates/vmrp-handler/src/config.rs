//! Settings from the environment (the Functions app settings) → the handlers' [`Deps`].
//!
//! | setting | meaning |
//! |---|---|
//! | `VMRP_SCHEDULE` | the timer's NCRONTAB (also read by the timer trigger as `%VMRP_SCHEDULE%`) |
//! | `VMRP_POLICY` / `VMRP_POLICY_FILE` | the policy, inline JSON or a JSON/TOML file (required) |
//! | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (+ `AZURE_CLIENT_ID`) | managed identity (set by the platform) |
//! | `VMRP_ARM_ENDPOINT` / `VMRP_ARM_AUDIENCE` | ARM base URL and token audience (default public cloud) |
//! | `ServiceBusConnection…` | the Service Bus connection, read like the trigger reads it |
//! | `VMRP_SERVICEBUS_ENDPOINT` | send to this base URL instead of the namespace (the emulator) |
//! | `VMRP_LOOPBACK_ONLY=1` | refuse every non-loopback URL before any I/O (`vmrp local`, tests) |
//! | `VMRP_MAX_RETRY_AFTER_SECS` | longest ARM `Retry-After` slept inside a call (default 10, so one call sleeps at most 20 s over its 3 attempts; a longer `Retry-After` is not slept at all: the handler reschedules for it; `vmrp local` sets 1 because the emulator's `Retry-After` is virtual time and the sleep is real) |
//! | `VMRP_RECORD_TRAFFIC` | write every ARM request/response pair to this folder (oav format) |
//! | `VMRP_ARM_SHARE`, `VMRP_TICK_MARGIN_SECS`, … | the handlers' tuning (`functions::TUNING_SETTINGS`, docs/deploy.md) |
//! | `VMRP_DRILL_TABLE_URL` | the drill table, `https://<account>.table.core.windows.net/<table>` (optional: without it drill results are only logged) |
//!
//! Every error names the setting and says what was expected.

use std::path::PathBuf;
use std::sync::Arc;

use azure_core::http::{ExponentialRetryOptions, RetryOptions};

use crate::azure::client::{parse_endpoint, ArmClient, ArmClientConfig, DEFAULT_ENDPOINT};
use crate::azure::credential::{credential_from_env, CredentialOptions};
use crate::azure::http::is_loopback;
use crate::azure::servicebus::{scheduler_from_env, ServiceBusOptions, ServiceBusSettings};
use crate::azure::table::{parse_table_url, TableLedger, DRILL_TABLE_SETTING};
use crate::functions::Deps;
use crate::policy::{Policy, ENV_POLICY, ENV_POLICY_FILE, ENV_SCHEDULE};
use crate::schedule::Schedule;

/// The default timer schedule: every 4 hours (application-consistent points need ≥ 3 h).
pub const DEFAULT_SCHEDULE: &str = crate::policy::check::DEFAULT_TIMER_SCHEDULE;
pub const LOOPBACK_ONLY_VAR: &str = "VMRP_LOOPBACK_ONLY";
pub const RECORD_TRAFFIC_VAR: &str = "VMRP_RECORD_TRAFFIC";
pub const MAX_RETRY_AFTER_VAR: &str = "VMRP_MAX_RETRY_AFTER_SECS";
/// The largest `VMRP_MAX_RETRY_AFTER_SECS` accepted: a day (ARM asks for seconds to minutes).
pub const MAX_RETRY_AFTER_CAP: std::time::Duration = std::time::Duration::from_secs(86_400);
/// The connection name in the Service Bus triggers' function.json.
pub const SERVICE_BUS_CONNECTION: &str = "ServiceBusConnection";

/// A setting that is missing or unusable; always names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn err(setting: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.to_string(),
    }
}

/// Builds the handlers' dependencies from the process environment.
pub async fn deps_from_env() -> Result<Deps, ConfigError> {
    deps_from(&|k: &str| std::env::var(k).ok())
}

/// Builds the dependencies from an env lookup (tests inject one).
pub fn deps_from(env: &dyn Fn(&str) -> Option<String>) -> Result<Deps, ConfigError> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let schedule = set(ENV_SCHEDULE).unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    Schedule::parse(&schedule).map_err(|e| err("VMRP_SCHEDULE", e))?;
    if set(ENV_POLICY).is_none() && set(ENV_POLICY_FILE).is_none() {
        return Err(err(
            "VMRP_POLICY",
            "no policy: set VMRP_POLICY (inline JSON) or VMRP_POLICY_FILE (a JSON or TOML file)",
        ));
    }
    let policy = Policy::load_from_env(env).map_err(|e| err("VMRP_POLICY", e))?;
    let loopback_only =
        set(LOOPBACK_ONLY_VAR).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));

    // Settings that need no credential are checked first, so each mistake is named on its own.
    ServiceBusSettings::from_env(env, SERVICE_BUS_CONNECTION)
        .map_err(|e| err("ServiceBusConnection", e))?;
    let arm_endpoint = set("VMRP_ARM_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let arm_url = parse_endpoint("VMRP_ARM_ENDPOINT", &arm_endpoint)
        .map_err(|e| err("VMRP_ARM_ENDPOINT", e))?;
    if loopback_only && !is_loopback(&arm_url) {
        return Err(err(
            "VMRP_ARM_ENDPOINT",
            format!("{arm_endpoint} is not a loopback address, and VMRP_LOOPBACK_ONLY is set"),
        ));
    }

    // Bounded token retries: a handler invocation should fail (and be redelivered) within
    // seconds, not stall for azure_identity's default ~80 s when the endpoint is down.
    let retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: time::Duration::milliseconds(200),
        max_retries: 3,
        max_total_elapsed: time::Duration::seconds(10),
        max_delay: time::Duration::seconds(4),
    });
    let options = CredentialOptions {
        loopback_only,
        allow_developer_tools: false,
        retry: Some(retry),
    };
    // Checked before the credential so a bad value is named even without an identity.
    let max_retry_after = match set(MAX_RETRY_AFTER_VAR) {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    err(
                        MAX_RETRY_AFTER_VAR,
                        format!("{raw:?} is not a number of seconds (expected e.g. 1 or 0.5)"),
                    )
                })
                .and_then(|secs| {
                    // Checked: `from_secs_f64` panics past u64 seconds (1e300).
                    std::time::Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|d| *d <= MAX_RETRY_AFTER_CAP)
                        .ok_or_else(|| {
                            err(
                                MAX_RETRY_AFTER_VAR,
                                format!(
                                    "{raw:?} is out of range: at most {} seconds (a day)",
                                    MAX_RETRY_AFTER_CAP.as_secs()
                                ),
                            )
                        })
                })?,
        ),
    };
    let tuning =
        crate::functions::Tuning::from_settings(env).map_err(|e| err(e.setting, e.problem))?;
    if let Some(url) = set(DRILL_TABLE_SETTING) {
        parse_table_url(&url, loopback_only).map_err(|e| err(DRILL_TABLE_SETTING, e.message))?;
    }
    let (credential, choice) =
        credential_from_env(env, &options).map_err(|e| err("IDENTITY_ENDPOINT", e))?;
    tracing::info!(credential = %choice, loopback_only, "credential chosen");

    // The drill ledger: the same credential, a storage token (docs/restore.md).
    let drill_ledger = match set(DRILL_TABLE_SETTING) {
        None => None,
        Some(url) => Some(Arc::new(
            TableLedger::new(&url, credential.clone(), loopback_only)
                .map_err(|e| err(DRILL_TABLE_SETTING, e.message))?,
        ) as Arc<dyn crate::azure::DrillLedger>),
    };

    let mut arm_config = ArmClientConfig::from_env(env, credential.clone())
        .map_err(|e| err("VMRP_ARM_ENDPOINT", e))?;
    arm_config.loopback_only = loopback_only;
    arm_config.record_traffic = set(RECORD_TRAFFIC_VAR).map(PathBuf::from);
    if let Some(cap) = max_retry_after {
        arm_config.retry.max_retry_after = cap;
    }
    let arm = ArmClient::new(arm_config).map_err(|e| err("VMRP_ARM_ENDPOINT", e))?;

    let sb_options = ServiceBusOptions {
        loopback_only,
        ..ServiceBusOptions::default()
    };
    let scheduler = scheduler_from_env(env, Some(credential), sb_options)
        .map_err(|e| err("ServiceBusConnection", e))?;

    // Built once per process and cloned per invocation: `Deps` carries the "collection known
    // to exist" cache.
    let mut deps = Deps::new(Arc::new(arm), scheduler, Arc::new(policy), schedule);
    deps.tuning = tuning;
    deps.drill_ledger = drill_ledger;
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const POLICY: &str = r#"{"rules": [{"name": "all", "targets": {"subscriptions": ["00000000-0000-0000-0000-000000000001"]}, "retention": {"keepLast": 3}}]}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn complete() -> Vec<(&'static str, &'static str)> {
        vec![
            ("VMRP_POLICY", POLICY),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "secret"),
            ("VMRP_ARM_ENDPOINT", "http://127.0.0.1:9"),
            ("ServiceBusConnection", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc="),
            ("VMRP_SERVICEBUS_ENDPOINT", "http://127.0.0.1:9"),
            ("VMRP_LOOPBACK_ONLY", "1"),
        ]
    }

    fn error_for(pairs: &[(&str, &str)]) -> String {
        match deps_from(&env(pairs)) {
            Ok(_) => panic!("expected an error for {pairs:?}"),
            Err(e) => e.to_string(),
        }
    }

    // A complete set of settings is exercised by tests/host_binary.rs, which starts the real
    // binary with them in its process environment (azure_identity reads IDENTITY_ENDPOINT from
    // the process itself, and refuses to build otherwise).

    #[test]
    fn each_missing_or_bad_setting_is_named() {
        let without = |key: &str| {
            complete()
                .into_iter()
                .filter(|(k, _)| *k != key)
                .collect::<Vec<_>>()
        };
        let with = |key: &'static str, value: &'static str| {
            let mut v = without(key);
            v.push((key, value));
            v
        };
        assert!(error_for(&without("VMRP_POLICY")).starts_with("VMRP_POLICY: no policy"));
        assert!(error_for(&with("VMRP_POLICY", "{")).starts_with("VMRP_POLICY:"));
        assert!(error_for(&with("VMRP_SCHEDULE", "every hour")).starts_with("VMRP_SCHEDULE:"));
        // 1e300 panicked converting to a Duration; above a day is refused as out of range.
        for bad in ["soon", "-1", "NaN", "1e300", "86401"] {
            assert!(error_for(&with("VMRP_MAX_RETRY_AFTER_SECS", bad))
                .starts_with("VMRP_MAX_RETRY_AFTER_SECS:"));
        }
        // The tuning settings are checked before the credential, each named.
        for (key, bad) in [
            ("VMRP_ARM_SHARE", "0"),
            ("VMRP_ARM_SHARE", "most"),
            ("VMRP_TICK_MARGIN_SECS", "-1"),
            ("VMRP_COPY_DURATION_SECS", "0"),
            ("VMRP_ONBOARD_FIRST_POINT", "maybe"),
        ] {
            let e = error_for(&with(key, bad));
            assert!(e.starts_with(&format!("{key}:")), "{key}={bad}: {e}");
        }
        assert!(
            error_for(&without("IDENTITY_HEADER")).starts_with("IDENTITY_ENDPOINT:"),
            "{}",
            error_for(&without("IDENTITY_HEADER"))
        );
        assert!(error_for(&without("ServiceBusConnection")).starts_with("ServiceBusConnection:"));
        assert!(
            error_for(&with("VMRP_ARM_ENDPOINT", "not a url")).starts_with("VMRP_ARM_ENDPOINT:")
        );
        // loopback_only refuses a real Azure endpoint before any I/O.
        assert!(
            error_for(&with("VMRP_ARM_ENDPOINT", "https://management.azure.com"))
                .starts_with("VMRP_ARM_ENDPOINT:")
        );
        // The drill table: a real account under loopback_only, or no table name.
        for bad in [
            "https://acct.table.core.windows.net/vmrpdrills",
            "http://127.0.0.1:9/",
            "table",
        ] {
            let e = error_for(&with("VMRP_DRILL_TABLE_URL", bad));
            assert!(e.starts_with("VMRP_DRILL_TABLE_URL:"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_never_echo_the_service_bus_key() {
        let mut pairs = complete();
        pairs.retain(|(k, _)| *k != "ServiceBusConnection");
        pairs.push((
            "ServiceBusConnection",
            "Endpoint=nonsense;SharedAccessKey=TOPSECRETKEY=",
        ));
        let e = error_for(&pairs);
        assert!(!e.contains("TOPSECRETKEY"), "{e}");
    }
}
