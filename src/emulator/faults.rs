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
    fn same_seed_same_sequence() {
        let a = Dice::new(7);
        let b = Dice::new(7);
        let sa: Vec<bool> = (0..100).map(|_| a.roll(0.3)).collect();
        let sb: Vec<bool> = (0..100).map(|_| b.roll(0.3)).collect();
        assert_eq!(sa, sb);
        assert!(sa.iter().any(|x| *x) && sa.iter().any(|x| !*x));
    }
}
