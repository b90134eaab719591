//! Terminal commands that read a deployment: `status`, `plan`. Both authenticate like the
//! functions do (managed identity when `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` are set), falling
//! back to developer tools (`az login`) on a laptop, and only ever read ARM.
//!
//! Both judge time by ARM's clock (the `Date` header of its answers) unless `--at` is given,
//! and say so when this machine's clock disagrees: ages measured against a laptop's clock are
//! wrong against `vmrp emulate --speed` and whenever the laptop drifts.

pub mod paced;
pub mod plan;
pub mod restore;
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
    /// The share (0 < F ≤ 1) of each subscription's ARM read budget this command may use, read
    /// from ARM's remaining-reads headers; the rest stays for vmrp's handlers and other tools.
    #[arg(long, value_name = "F", default_value_t = paced::DEFAULT_READ_SHARE, value_parser = parse_share)]
    pub read_share: f64,
}

/// `--read-share`: a number in (0, 1].
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "expected a share of ARM's read budget between 0 (exclusive) and 1, e.g. 0.5; got {text:?}"
        )),
    }
}

impl ArmArgs {
    /// A read-only ARM client with the process's credential.
    pub fn client(&self) -> Result<ReadOnlyArm<ArmClient>, String> {
        arm_client(&self.arm_endpoint, self.arm_audience.clone()).map(ReadOnlyArm)
    }

    /// [`ArmArgs::client`] with its reads paced to `--read-share` of each subscription's
    /// budget, and a progress bar on stderr when it is a terminal and the output is not JSON.
    pub fn paced_client(&self) -> Result<paced::PacedArm<ReadOnlyArm<ArmClient>>, String> {
        use std::io::IsTerminal;
        let progress = !self.json && std::io::stderr().is_terminal();
        Ok(paced::PacedArm::new(
            self.client()?,
            self.read_share,
            progress,
        ))
    }
}

/// An ARM client with the process's credential (managed identity, else developer tools); the
/// read-only commands wrap it in [`ReadOnlyArm`], `restore` writes with it.
pub fn arm_client(arm_endpoint: &str, arm_audience: Option<String>) -> Result<ArmClient, String> {
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
    let endpoint = parse_endpoint("--arm-endpoint", arm_endpoint).map_err(|e| e.to_string())?;
    let config = ArmClientConfig::new(endpoint, arm_audience, credential);
    ArmClient::new(config).map_err(|e| e.to_string())
}

/// The drill table at `url` (`--drill-table`) with the process's credential, as
/// [`arm_client`] picks it: `vmrp status` reads it (Storage Table Data Reader suffices).
pub fn drill_ledger(url: &str) -> Result<crate::azure::table::TableLedger, String> {
    let env = |k: &str| std::env::var(k).ok();
    let options = CredentialOptions {
        loopback_only: false,
        allow_developer_tools: true,
        retry: None,
    };
    let (credential, _) = credential_from_env(&env, &options).map_err(|e| {
            format!("no Azure credential for the drill table: {e}\n  run `az login`, or set IDENTITY_ENDPOINT and IDENTITY_HEADER (managed identity)")
        })?;
    crate::azure::table::TableLedger::new(url, credential, false)
        .map_err(|e| format!("--drill-table: {}", e.message))
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
    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        self.0
            .list_collections_in_group(subscription, resource_group)
            .await
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
    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        self.0.rate_limits_for(subscription)
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

pub(crate) fn parse_at(at: Option<&str>) -> Result<Option<time::OffsetDateTime>, String> {
    at.map(|text| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
            |e| {
                format!(
                    "--at {text:?}: expected an RFC 3339 time such as 2026-11-25T03:00:00Z ({e})"
                )
            },
        )
    })
    .transpose()
}

/// How far this machine's clock may stray from ARM's before the commands say so (the `Date`
/// header has whole seconds, and the listing takes a while).
pub const CLOCK_TOLERANCE: time::Duration = time::Duration::minutes(2);

/// The moment to judge by: `--at` when given, else ARM's clock (`server`, from its last `Date`
/// header), else this machine's (`local`). The note says when ARM's and ours disagree.
pub fn judge_moment(
    at: Option<time::OffsetDateTime>,
    server: Option<time::OffsetDateTime>,
    local: time::OffsetDateTime,
) -> (time::OffsetDateTime, Option<String>) {
    use crate::schedule::rfc3339;
    match (at, server) {
        (Some(at), _) => (at, None),
        (None, Some(server)) => {
            let drift = server - local;
            let note = (drift.abs() > CLOCK_TOLERANCE).then(|| {
                format!(
                    "ARM's clock (its Date header) reads {}, this machine's {} ({:+} min): judging by ARM's",
                    rfc3339(server),
                    rfc3339(local.replace_nanosecond(0).unwrap_or(local)),
                    drift.whole_minutes()
                )
            });
            (server, note)
        }
        (None, None) => (
            local,
            Some("ARM sent no Date header: judging by this machine's clock".into()),
        ),
    }
}

/// Reads each subscription on its own: one that fails (a 404 for a subscription that is gone,
/// a 403 without access) is named in the second value and the others still count, as the timer
/// carries on. Only when every subscription fails is it an error.
pub async fn gather_each(
    arm: &dyn crate::azure::Arm,
    subscriptions: &[String],
) -> Result<(crate::inventory::Inventory, Vec<String>), ArmError> {
    let mut inventory = crate::inventory::Inventory { vms: Vec::new() };
    let mut failures = Vec::new();
    let mut first_error = None;
    for sub in subscriptions {
        match crate::inventory::gather(arm, std::slice::from_ref(sub)).await {
            Ok(part) => inventory.vms.extend(part.vms),
            Err(e) => {
                failures.push(format!("subscription {sub}: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if failures.len() == subscriptions.len() => Err(e),
        _ => Ok((inventory, failures)),
    }
}

/// Prints what could not be read, after the output; exit 1 when anything was left out.
pub(crate) fn report_failures(command: &str, failures: &[String]) -> bool {
    for f in failures {
        eprintln!("vmrp {command}: skipped {f}");
    }
    !failures.is_empty()
}

/// Keeps `Arc<dyn Arm>` users able to use the wrapper too.
pub fn shared<A: Arm + 'static>(arm: A) -> Arc<dyn Arm> {
    Arc::new(arm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_moment_is_at_else_arms_clock_else_ours() {
        let local = datetime!(2026-12-06 12:00 UTC);
        let at = datetime!(2026-12-01 00:00 UTC);
        let table = [
            (Some(at), Some(local), at, false),
            (
                None,
                Some(local + time::Duration::seconds(50)),
                local + time::Duration::seconds(50),
                false,
            ),
            (
                None,
                Some(local - time::Duration::minutes(116)),
                local - time::Duration::minutes(116),
                true,
            ),
            (None, None, local, true),
        ];
        for (given, server, want, noted) in table {
            let (moment, note) = judge_moment(given, server, local);
            assert_eq!(moment, want, "{given:?} {server:?}");
            assert_eq!(note.is_some(), noted, "{note:?}");
        }
        let (_, note) = judge_moment(None, Some(local - time::Duration::minutes(116)), local);
        assert!(note.unwrap().contains("-116 min"));
    }
}
