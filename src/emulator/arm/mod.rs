//! PLACEHOLDER for the ARM emulator (the emu-arm branch replaces this file): the agreed public
//! surface only, serving nothing and holding an empty fleet, so the rest of the emulator compiles.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::clock::VirtualClock;
use super::faults::{Dice, FaultConfig};

/// Everything the ARM emulator is configured with.
#[derive(Debug, Clone, Default)]
pub struct ArmConfig {
    pub fleet: FleetSpec,
    pub rules: RuleSwitches,
    pub timings: Timings,
    pub throttle: ThrottleConfig,
    pub record_traffic: Option<PathBuf>,
}

/// The generated VM fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetSpec {
    pub count: usize,
    pub regions: Vec<String>,
    pub seed: u64,
}

/// Which platform rules are enforced.
#[derive(Debug, Clone, Default)]
pub struct RuleSwitches {}

/// How long simulated operations take.
#[derive(Debug, Clone, Default)]
pub struct Timings {}

/// ARM throttling buckets.
#[derive(Debug, Clone, Default)]
pub struct ThrottleConfig {}

/// Request counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArmCounters {}

/// The placeholder emulator: no resources, no routes.
#[derive(Debug)]
pub struct ArmEmulator {
    _config: ArmConfig,
}

impl ArmEmulator {
    pub fn new(
        config: ArmConfig,
        _clock: Arc<VirtualClock>,
        _dice: Arc<Dice>,
        _faults: Arc<FaultConfig>,
    ) -> Arc<Self> {
        Arc::new(Self { _config: config })
    }
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
    }
    pub fn subscriptions(&self) -> Vec<String> {
        Vec::new()
    }
    pub fn dump(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    pub fn counters(&self) -> ArmCounters {
        ArmCounters::default()
    }
}
