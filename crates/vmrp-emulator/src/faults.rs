//! Fault injection (`--faults FILE`): probabilities per request, optionally per operation, drawn
//! from one seeded generator so a run can be replayed exactly.
//!
//! ```json
//! {"arm": {"5xx": 0.05, "429": 0.05, "failedProvisioning": 0.03, "latencyMs": 20, "drop": 0.01,
//!          "operations": {"PUT restorePoints": {"5xx": 0.2}}},
//!  "serviceBus": {"duplicateDelivery": 0.1}}
//! ```
//!
//! ARM operation keys are `"{METHOD} {resource type}"` (the type's last segment):
//! `PUT|PATCH|GET|DELETE restorePointCollections` (GET covers get and both lists),
//! `PUT|GET|DELETE restorePoints`, `GET virtualMachines` (get, instanceView and the three lists),
//! `GET disks`, and `GET operations` (the operation status and Location URLs). An entry under
//! `operations` replaces the top-level `arm` settings for that operation. The ARM emulator draws,
//! per request and in this order: `429`, `5xx` (then 500 or 503), `drop`; `failedProvisioning` is
//! drawn only when a restore point is created; `latencyMs` is a real sleep before processing.
//!
//! An ARM outage (`"arm": {"outage": {"at": "PT2H", "for": "PT20M"}}`, ISO 8601 durations of
//! virtual time after the emulator's start): from `at` for `for`, every ARM request is answered
//! 503 `ServiceUnavailable` before anything else (no token taken, nothing processed), then ARM
//! recovers. Only at the top level: an outage is ARM-wide, not per operation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub arm: ArmFaults,
    #[serde(default)]
    pub service_bus: ServiceBusFaults,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmFaults {
    /// Probability of a 500/503 CloudError instead of processing the request.
    #[serde(default, rename = "5xx")]
    pub server_error: f64,
    /// Probability of a 429 with `Retry-After` (on top of the real token bucket).
    #[serde(default, rename = "429")]
    pub throttle: f64,
    /// Probability that a created restore point ends `Failed` instead of `Succeeded`.
    #[serde(default, rename = "failedProvisioning")]
    pub failed_provisioning: f64,
    /// Added latency per request, in real milliseconds.
    #[serde(default, rename = "latencyMs")]
    pub latency_ms: u64,
    /// Probability the request is processed but the connection is dropped before the answer.
    #[serde(default)]
    pub drop: f64,
    /// Per-operation overrides, keyed like `"PUT restorePoints"` / `"GET virtualMachines"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operations: BTreeMap<String, ArmFaults>,
    /// A period of virtual time during which ARM answers every request 503 (module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<Outage>,
}

/// An ARM outage: `at` after the emulator's start, lasting `for` (ISO 8601 durations, e.g.
/// `PT2H`, `PT20M`, `P1DT30S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub at: String,
    #[serde(rename = "for")]
    pub length: String,
}

impl Outage {
    /// `[start + at, start + at + for)`, or why the durations do not parse.
    pub fn window(
        &self,
        start: time::OffsetDateTime,
    ) -> Result<(time::OffsetDateTime, time::OffsetDateTime), String> {
        let at = parse_iso_duration(&self.at).map_err(|e| format!("arm.outage.at: {e}"))?;
        let length =
            parse_iso_duration(&self.length).map_err(|e| format!("arm.outage.for: {e}"))?;
        if length <= time::Duration::ZERO {
            return Err(format!(
                "arm.outage.for: {:?} must be longer than zero",
                self.length
            ));
        }
        Ok((start + at, start + at + length))
    }
}

/// An ISO 8601 duration of days, hours, minutes and (whole or fractional) seconds:
/// `P1D`, `PT2H`, `PT20M`, `PT1H30M`, `PT0.5S`. Years, months and weeks are refused (their
/// length in seconds is not fixed).
pub fn parse_iso_duration(text: &str) -> Result<time::Duration, String> {
    let bad = |why: &str| format!("{text:?} is not an ISO 8601 duration like PT2H or PT20M: {why}");
    let rest = text
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P"))?;
    if rest.is_empty() || rest == "T" {
        return Err(bad("no amount"));
    }
    let (date, clock) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad("nothing after T")),
        Some((d, c)) => (d, c),
        None => (rest, ""),
    };
    let mut total = 0f64;
    for (part, units) in [
        (date, &[('D', 86_400.0)][..]),
        (clock, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut number = String::new();
        let mut last_unit = None::<usize>;
        for ch in part.chars() {
            if ch.is_ascii_digit() || ch == '.' {
                number.push(ch);
                continue;
            }
            let Some(pos) = units.iter().position(|(u, _)| *u == ch) else {
                return Err(bad(&format!("unit {ch:?} not supported here")));
            };
            if last_unit.is_some_and(|l| l >= pos) {
                return Err(bad("units out of order or repeated"));
            }
            let n: f64 = number.parse().map_err(|_| bad("a unit without a number"))?;
            total += n * units[pos].1;
            number.clear();
            last_unit = Some(pos);
        }
        if !number.is_empty() {
            return Err(bad("a number without a unit"));
        }
    }
    if !total.is_finite() || total > 3650.0 * 86_400.0 {
        return Err(bad("too long"));
    }
    Ok(time::Duration::seconds_f64(total))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceBusFaults {
    /// Probability a delivered message is delivered a second time.
    #[serde(default)]
    pub duplicate_delivery: f64,
}

impl FaultConfig {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: Self =
            serde_json::from_str(text).map_err(|e| format!("invalid faults file: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let mut probs = vec![(
            "serviceBus.duplicateDelivery".to_string(),
            self.service_bus.duplicate_delivery,
        )];
        let mut arm = vec![("arm".to_string(), &self.arm)];
        arm.extend(
            self.arm
                .operations
                .iter()
                .map(|(k, v)| (format!("arm.operations.{k}"), v)),
        );
        for (path, a) in arm {
            probs.push((format!("{path}.5xx"), a.server_error));
            probs.push((format!("{path}.429"), a.throttle));
            probs.push((format!("{path}.failedProvisioning"), a.failed_provisioning));
            probs.push((format!("{path}.drop"), a.drop));
        }
        for (key, op) in &self.arm.operations {
            if op.outage.is_some() {
                return Err(format!(
                    "invalid faults file: arm.operations.{key}.outage: an outage is ARM-wide; set arm.outage"
                ));
            }
        }
        if let Some(outage) = &self.arm.outage {
            outage
                .window(time::OffsetDateTime::UNIX_EPOCH)
                .map_err(|e| format!("invalid faults file: {e}"))?;
        }
        for (path, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "invalid faults file: {path} = {p} is not a probability between 0 and 1"
                ));
            }
        }
        Ok(())
    }

    /// The ARM fault settings for one operation (override, else the defaults).
    pub fn arm_for(&self, operation: &str) -> &ArmFaults {
        self.arm.operations.get(operation).unwrap_or(&self.arm)
    }
}

/// A seeded random source shared by every fault decision.
#[derive(Debug)]
pub struct Dice {
    rng: Mutex<ChaCha8Rng>,
}

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }
    /// True with probability `p` (no draw when `p` is 0, so enabling one fault does not shift others).
    pub fn roll(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random::<f64>()
            < p
    }
    /// A uniform draw in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg = FaultConfig::from_json(
            r#"{"arm": {"5xx": 0.05, "429": 0.05, "failedProvisioning": 0.03, "latencyMs": 20, "drop": 0.01},
                "serviceBus": {"duplicateDelivery": 0.1}}"#,
        )
        .unwrap();
        assert_eq!(cfg.arm.server_error, 0.05);
        assert_eq!(cfg.arm.latency_ms, 20);
        assert_eq!(cfg.service_bus.duplicate_delivery, 0.1);
        assert!(FaultConfig::from_json(r#"{"arm": {"5xx": 2}}"#)
            .unwrap_err()
            .contains("arm.5xx"));
        assert!(FaultConfig::from_json(r#"{"arm": {"typo": 1}}"#).is_err());
    }

    #[test]
    fn an_outage_parses_to_a_window_of_virtual_time() {
        let cfg = FaultConfig::from_json(r#"{"arm": {"outage": {"at": "PT2H", "for": "PT20M"}}}"#)
            .unwrap();
        let start = time::macros::datetime!(2026-01-05 03:45 UTC);
        assert_eq!(
            cfg.arm.outage.as_ref().unwrap().window(start).unwrap(),
            (
                time::macros::datetime!(2026-01-05 05:45 UTC),
                time::macros::datetime!(2026-01-05 06:05 UTC)
            )
        );
        for (text, secs) in [
            ("P1DT1S", 86_401.0),
            ("PT1H30M", 5400.0),
            ("PT0.5S", 0.5),
            ("P2D", 172_800.0),
        ] {
            assert_eq!(
                parse_iso_duration(text).unwrap().as_seconds_f64(),
                secs,
                "{text}"
            );
        }
        for bad in ["2H", "P", "PT", "PT5", "P1M", "PT1M1H", "PTxH", "P1DT"] {
            assert!(parse_iso_duration(bad).is_err(), "{bad}");
        }
        for (bad, names) in [
            (
                r#"{"arm": {"outage": {"at": "2h", "for": "PT20M"}}}"#,
                "arm.outage.at",
            ),
            (
                r#"{"arm": {"outage": {"at": "PT2H", "for": "PT0S"}}}"#,
                "arm.outage.for",
            ),
            (r#"{"arm": {"outage": {"at": "PT2H"}}}"#, "for"),
            (
                r#"{"arm": {"operations": {"GET disks": {"outage": {"at": "PT1H", "for": "PT1M"}}}}}"#,
                "ARM-wide",
            ),
        ] {
            let e = FaultConfig::from_json(bad).unwrap_err();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let a = Dice::new(7);
        let b = Dice::new(7);
        let sa: Vec<bool> = (0..100).map(|_| a.roll(0.3)).collect();
        let sb: Vec<bool> = (0..100).map(|_| b.roll(0.3)).collect();
        assert_eq!(sa, sb);
        assert!(sa.iter().any(|x| *x) && sa.iter().any(|x| !*x));
    }
}
