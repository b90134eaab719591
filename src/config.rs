//! Settings from the environment (the Functions app settings) → [`Deps`].
//!
//! TEMPORARY: a placeholder so `vmrp serve` runs before the Azure client is merged. It reads the
//! schedule and the policy; ARM and Service Bus are stand-ins that fail every call with a clear,
//! permanent "not wired yet" error. The real wiring replaces this file.

use std::sync::Arc;

use async_trait::async_trait;

use crate::azure::models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};
use crate::azure::{
    Accepted, Arm, ArmError, OutgoingMessage, ResourceId, Scheduler, SendError, VmScope,
};
use crate::functions::Deps;
use crate::policy::{OrphanRule, Policy};
use crate::schedule::Schedule;

/// The timer's NCRONTAB, also read by the timer trigger through `%VMRP_SCHEDULE%`.
pub const SCHEDULE_VAR: &str = "VMRP_SCHEDULE";
pub const DEFAULT_SCHEDULE: &str = "0 0 */4 * * *";
/// Inline policy JSON.
pub const POLICY_VAR: &str = "VMRP_POLICY";
/// Path of a policy file (JSON, or TOML when the name ends in `.toml`).
pub const POLICY_FILE_VAR: &str = "VMRP_POLICY_FILE";

/// A setting that is present but unusable; always names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// Builds the handlers' dependencies from the process environment.
pub async fn deps_from_env() -> Result<Deps, ConfigError> {
    let schedule = std::env::var(SCHEDULE_VAR).unwrap_or_else(|_| DEFAULT_SCHEDULE.to_string());
    Schedule::parse(&schedule).map_err(|e| ConfigError {
        var: SCHEDULE_VAR,
        problem: e.to_string(),
    })?;
    let policy = policy_from(
        std::env::var(POLICY_VAR).ok(),
        std::env::var(POLICY_FILE_VAR).ok(),
    )?;
    tracing::warn!(
        "config: ARM and Service Bus clients are placeholders (not wired yet); every call fails"
    );
    Ok(Deps {
        arm: Arc::new(NotWired),
        scheduler: Arc::new(NotWired),
        policy: Arc::new(policy),
        schedule,
    })
}

/// The policy from the inline variable, else the file, else an empty policy (no rules).
fn policy_from(inline: Option<String>, file: Option<String>) -> Result<Policy, ConfigError> {
    if let Some(text) = inline.filter(|t| !t.trim().is_empty()) {
        return serde_json::from_str(&text).map_err(|e| ConfigError {
            var: POLICY_VAR,
            problem: format!("not a valid policy: {e}"),
        });
    }
    if let Some(path) = file.filter(|p| !p.trim().is_empty()) {
        let err = |problem: String| ConfigError {
            var: POLICY_FILE_VAR,
            problem,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
        return if path.ends_with(".toml") {
            toml::from_str(&text).map_err(|e| err(format!("{path} is not a valid policy: {e}")))
        } else {
            serde_json::from_str(&text)
                .map_err(|e| err(format!("{path} is not a valid policy: {e}")))
        };
    }
    Ok(Policy {
        rules: Vec::new(),
        orphans: OrphanRule::default(),
    })
}

/// Stand-in for the ARM client and the Service Bus sender until they are wired.
struct NotWired;

const NOT_WIRED: &str = "ARM client not wired yet (temporary config.rs placeholder)";

fn not_wired(operation: &str) -> ArmError {
    ArmError {
        operation: operation.to_string(),
        // A 4xx status so `classify` calls it permanent: retrying cannot help.
        status: Some(400),
        code: "NotWired".to_string(),
        message: NOT_WIRED.to_string(),
        request_id: None,
        retry_after: None,
    }
}

#[async_trait]
impl Arm for NotWired {
    async fn get_vm(&self, _: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        Err(not_wired("GET virtualMachines"))
    }
    async fn list_vms(&self, _: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        Err(not_wired("LIST virtualMachines"))
    }
    async fn get_disk(&self, _: &ResourceId) -> Result<Option<Disk>, ArmError> {
        Err(not_wired("GET disks"))
    }
    async fn put_collection(
        &self,
        _: &ResourceId,
        _: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        Err(not_wired("PUT restorePointCollections"))
    }
    async fn get_collection(
        &self,
        _: &ResourceId,
        _: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        Err(not_wired("GET restorePointCollections"))
    }
    async fn list_collections(&self, _: &str) -> Result<Vec<RestorePointCollection>, ArmError> {
        Err(not_wired("LIST restorePointCollections"))
    }
    async fn delete_collection(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Err(not_wired("DELETE restorePointCollections"))
    }
    async fn create_restore_point(
        &self,
        _: &ResourceId,
        _: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        Err(not_wired("PUT restorePoints"))
    }
    async fn get_restore_point(
        &self,
        _: &ResourceId,
        _: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        Err(not_wired("GET restorePoints"))
    }
    async fn delete_restore_point(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Err(not_wired("DELETE restorePoints"))
    }
}

#[async_trait]
impl Scheduler for NotWired {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        Err(SendError {
            queue: message.queue.name().to_string(),
            status: Some(400),
            message: "Service Bus sender not wired yet (temporary config.rs placeholder)"
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_sources() {
        let empty = policy_from(None, None).unwrap();
        assert!(empty.rules.is_empty());
        let inline = policy_from(Some(r#"{"rules":[]}"#.into()), None).unwrap();
        assert!(inline.rules.is_empty());
        let err = policy_from(Some("{".into()), None).unwrap_err().to_string();
        assert!(err.starts_with("VMRP_POLICY: not a valid policy"), "{err}");
        let err = policy_from(None, Some("/nonexistent/policy.json".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("VMRP_POLICY_FILE: cannot read /nonexistent/policy.json"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn placeholders_fail_permanently_and_say_why() {
        let id: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
                .parse()
                .unwrap();
        let err = NotWired.get_vm(&id).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("not wired yet"), "{err}");
    }
}
