//! Terminal commands that read a deployment: `status`, `plan`. Both authenticate like the
//! functions do (managed identity when `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` are set), falling
//! back to developer tools (`az login`) on a laptop, and only ever read ARM.

pub mod plan;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;

use crate::azure::client::{parse_endpoint, ArmClient, ArmClientConfig, DEFAULT_ENDPOINT};
use crate::azure::credential::{credential_from_env, CredentialOptions};
use crate::azure::models::{Disk, RestorePoint, RestorePointCollection, VirtualMachine};
use crate::azure::{Accepted, Arm, ArmError, RateLimits, ResourceId, VmScope};

/// Where and how to read ARM; shared by `status` and `plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ArmArgs {
    /// Subscription to read (repeatable). Default: the subscriptions the policy targets.
    #[arg(long = "subscription", value_name = "ID")]
    pub subscriptions: Vec<String>,
    /// ARM endpoint: the public cloud, a sovereign cloud, or `vmrp emulate`'s `arm` URL.
    #[arg(long, env = "VMRP_ARM_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub arm_endpoint: String,
    /// Token audience for ARM; default the endpoint's origin. Against `vmrp emulate`, use
    /// https://management.azure.com (the emulator plays the public cloud).
    #[arg(long, env = "VMRP_ARM_AUDIENCE")]
    pub arm_audience: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ArmArgs {
    /// A read-only ARM client with the process's credential.
    pub fn client(&self) -> Result<ReadOnlyArm<ArmClient>, String> {
        let env = |k: &str| std::env::var(k).ok();
        let options = CredentialOptions {
            loopback_only: false,
            allow_developer_tools: true,
            retry: None,
        };
        let (credential, choice) = credential_from_env(&env, &options).map_err(|e| {
            format!("no Azure credential: {e}\n  run `az login`, or set IDENTITY_ENDPOINT and IDENTITY_HEADER (managed identity)")
        })?;
        tracing::info!(credential = %choice, "credential chosen");
        // The flags are the one source here: clap fills them from VMRP_ARM_ENDPOINT and
        // VMRP_ARM_AUDIENCE when they are not given, so the environment is not read twice.
        let endpoint =
            parse_endpoint("--arm-endpoint", &self.arm_endpoint).map_err(|e| e.to_string())?;
        let config = ArmClientConfig::new(endpoint, self.arm_audience.clone(), credential);
        let client = ArmClient::new(config).map_err(|e| e.to_string())?;
        Ok(ReadOnlyArm(client))
    }
}

/// Wraps an [`Arm`] so that every write fails before reaching ARM: what `plan` and `status`
/// run on, so a dry run cannot change anything even through a bug.
pub struct ReadOnlyArm<A>(pub A);

fn refused(operation: &str) -> ArmError {
    ArmError {
        operation: operation.to_string(),
        status: None,
        code: "ReadOnly".into(),
        message: "this command is read-only and never writes to ARM".into(),
        request_id: None,
        retry_after: None,
    }
}

#[async_trait]
impl<A: Arm> Arm for ReadOnlyArm<A> {
    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        self.0.get_vm(id).await
    }
    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        self.0.list_vms(scope).await
    }
    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        self.0.get_disk(id).await
    }
    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        self.0.list_disks(scope).await
    }
    async fn put_collection(
        &self,
        _: &ResourceId,
        _: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        Err(refused("PUT restorePointCollections"))
    }
    async fn get_collection(
        &self,
        id: &ResourceId,
        expand: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        self.0.get_collection(id, expand).await
    }
    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        self.0.list_collections(subscription).await
    }
    async fn delete_collection(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Err(refused("DELETE restorePointCollections"))
    }
    async fn create_restore_point(
        &self,
        _: &ResourceId,
        _: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        Err(refused("PUT restorePoints"))
    }
    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        self.0.get_restore_point(id, instance_view).await
    }
    async fn delete_restore_point(&self, _: &ResourceId) -> Result<Accepted<()>, ArmError> {
        Err(refused("DELETE restorePoints"))
    }
    fn rate_limits(&self) -> RateLimits {
        self.0.rate_limits()
    }
}

/// Subscriptions to read: the ones given, else every subscription the policy's targets name.
pub fn subscriptions_to_read(
    given: &[String],
    policy: Option<&crate::policy::Policy>,
) -> Result<Vec<String>, String> {
    let mut subs: Vec<String> = given.to_vec();
    if subs.is_empty() {
        for rule in policy.into_iter().flat_map(|p| p.rules.iter()) {
            subs.extend(rule.targets.subscriptions.iter().cloned());
            subs.extend(
                rule.targets
                    .resource_groups
                    .iter()
                    .filter_map(|rg| ResourceId::parse(rg).ok())
                    .map(|id| id.subscription().to_string()),
            );
            subs.extend(
                rule.targets
                    .vms
                    .iter()
                    .map(|id| id.subscription().to_string()),
            );
        }
    }
    subs.sort_by_key(|s| s.to_ascii_lowercase());
    subs.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    if subs.is_empty() {
        return Err("no subscription to read: pass --subscription ID (repeatable) or a policy whose targets name subscriptions".into());
    }
    Ok(subs)
}

/// Prints rows as pretty JSON (`--json`) or as the command's table.
pub(crate) fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    render: fn(&[T]) -> String,
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", render(rows));
    }
    Ok(())
}

pub(crate) fn arm_failed(e: ArmError) -> String {
    format!("{e}\n  check the credential's access (Reader on the subscription is enough for this command)")
}

/// The wall clock, for CLI commands only (handlers take `now` from their invocation).
pub(crate) fn wall_clock() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub(crate) fn parse_at(at: Option<&str>) -> Result<time::OffsetDateTime, String> {
    match at {
        None => Ok(wall_clock()),
        Some(text) => time::OffsetDateTime::parse(
            text,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            format!("--at {text:?}: expected an RFC 3339 time such as 2026-11-25T03:00:00Z ({e})")
        }),
    }
}

/// Keeps `Arc<dyn Arm>` users able to use the wrapper too.
pub fn shared<A: Arm + 'static>(arm: A) -> Arc<dyn Arm> {
    Arc::new(arm)
}
