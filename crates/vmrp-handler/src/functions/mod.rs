//! The seven functions. Each is `pub async fn handle(Invocation<T>, &Deps) -> Result<Outcome, HandlerError>`,
//! with I/O only through [`Deps`], so the same code runs under the Functions host, under
//! `vmrp local`, and in unit tests with fakes.

pub mod create_restore_point;
pub mod on_vm_changed;
pub mod pace;
pub mod plan_restore_points;
pub mod poll_restore_point;
pub mod run_restore_drills;
pub mod schedule_restore_points;
pub mod start_cross_region_copy;
mod support;

pub use support::{
    collection_scopes, KnownResources, Tuning, TuningError, ARM_SHARE_VAR, PACE_INSTANCES_VAR,
    REPORT_TARGET, TAG_ORPHANED_AT, TAG_RULE, TAG_VM, TUNING_SETTINGS,
};

use std::sync::Arc;

use crate::azure::{Arm, ArmError, DrillLedger, ErrorClass, ResourceId, Scheduler, SendError};
use crate::messages::MessageError;
use crate::policy::Policy;

/// The function names, as the folders under `functions/` and the host's URL paths spell them.
pub const SCHEDULE_RESTORE_POINTS: &str = "ScheduleRestorePoints";
pub const CREATE_RESTORE_POINT: &str = "CreateRestorePoint";
pub const START_CROSS_REGION_COPY: &str = "StartCrossRegionCopy";
pub const POLL_RESTORE_POINT: &str = "PollRestorePoint";
pub const ON_VM_CHANGED: &str = "OnVmChanged";
pub const PLAN_RESTORE_POINTS: &str = "PlanRestorePoints";
pub const RUN_RESTORE_DRILLS: &str = "RunRestoreDrills";
pub const ALL: [&str; 7] = [
    SCHEDULE_RESTORE_POINTS,
    PLAN_RESTORE_POINTS,
    CREATE_RESTORE_POINT,
    START_CROSS_REGION_COPY,
    POLL_RESTORE_POINT,
    ON_VM_CHANGED,
    RUN_RESTORE_DRILLS,
];

/// What handlers may touch.
#[derive(Clone)]
pub struct Deps {
    pub arm: Arc<dyn Arm>,
    pub scheduler: Arc<dyn Scheduler>,
    pub policy: Arc<Policy>,
    /// The timer's NCRONTAB schedule (`VMRP_SCHEDULE`), used to find the tick of a timer run.
    pub schedule: String,
    /// Pacing, polling cadence and caps (defaults explained in docs/lifecycle.md).
    pub tuning: Tuning,
    /// Process-wide knowledge that saves ARM calls (collections known to exist, disk details).
    pub known: Arc<KnownResources>,
    /// Where RunRestoreDrills keeps each drill's result (`VMRP_DRILL_TABLE_URL`); `None`: not
    /// kept (the run says so).
    pub drill_ledger: Option<Arc<dyn DrillLedger>>,
}

impl Deps {
    /// Deps with default tuning and an empty cache.
    pub fn new(
        arm: Arc<dyn Arm>,
        scheduler: Arc<dyn Scheduler>,
        policy: Arc<Policy>,
        schedule: impl Into<String>,
    ) -> Self {
        Self {
            arm,
            scheduler,
            policy,
            schedule: schedule.into(),
            tuning: Tuning::default(),
            known: Arc::new(KnownResources::default()),
            drill_ledger: None,
        }
    }
}

/// Why an invocation failed. The host turns every variant into a failed invocation (so Service
/// Bus redelivers and eventually dead-letters); [`HandlerError::class`] decides the log level and
/// whether a redelivery can help.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    BadMessage(#[from] MessageError),
    #[error("refused: VM {vm} is outside every policy scope")]
    OutOfScope { vm: ResourceId },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error("could not schedule follow-up work: {0}")]
    Send(#[from] SendError),
}

impl HandlerError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::BadMessage(_) | Self::OutOfScope { .. } | Self::Invalid(_) => {
                ErrorClass::Permanent
            }
            Self::Arm(e) => e.class(),
            Self::Send(e) => e.class(),
        }
    }
}
