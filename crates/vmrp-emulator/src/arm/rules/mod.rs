//! The restore point platform rules (docs/emulator-arm.md, reference/arm/CONTRACT.md §7), each switchable, as pure
//! decisions over plain facts so they can be table-tested. The HTTP status and code of each
//! refusal are chosen here, in one place:
//!
//! | Rule | Refusal |
//! |---|---|
//! | one create per VM at a time | 409 `VMRestorePointClientError` (CONTRACT §7 gives the code and message, no status: 409 is our assumption), or — with [`ConcurrentCreateMode::FailAsync`] — 201 then `Failed` |
//! | ≤ N creates per VM per hour (3) | 429 `OperationNotAllowed`, `details[0].code` `TooManyRequests` (Compute's throttling body) + `Retry-After` |
//! | ≤ N copies per target collection per hour (3) | 429 `OperationNotAllowed` / `TooManyRequests` detail + `Retry-After` |
//! | ≤ 500 points per VM across collections | 400 `VMRestorePointClientError` "maximum allowed snapshot limit … reached" |
//! | spacing: app/file-system consistent ≥ 3 h, crash ≥ 1 h apart per VM | 400 `OperationNotAllowed` (assumption) |
//! | copies into one target collection serial | 409 `OperationNotAllowed` "... in progress" (transient) |
//! | copies in source creation order | 409 `OperationNotAllowed` (permanent) |
//! | no copy of a copy | 400 `OperationNotAllowed` |
//! | unsupported disks must be excluded (ephemeral OS, shared; for crash consistency also Ultra, Premium SSD v2, write-accelerated) | 400 `OperationNotAllowed` naming the disk |
//! | no points of a confidential VM; crash-consistent points only on sizes with Premium storage ([`check_vm_supported`]) | 400 `OperationNotAllowed` (code assumed: the documents give none) |
//! | a source point copied into a region at most once | 409 `OperationNotAllowed` "already copied" (permanent; no documented code: our assumption) |
//! | ≤ 100 disk restore point copies in flight per subscription and target region | 429 `OperationNotAllowed` / `TooManyRequests` detail + `Retry-After` (the incremental snapshot copy limit, applied to the disk snapshots a copy makes: the stricter reading) |
//! | a copy replicating longer than 2 weeks is terminated | replication `Failed`, no percent, no detail |
//! | a copy of a customer-managed-key disk names an existing encryption set in the target region | 400 `InvalidParameter`, target the disk's `diskRestorePoint.encryption` (the stricter reading of two documents, docs/emulator-arm.md) |
//! | target collection must reference the source collection | 400 `InvalidParameter` |
//! | `consistencyMode` input only `CrashConsistent` | 400 `InvalidParameter`, target `properties.consistencyMode` |
//! | ≤ 3 Premium SSD v2 / Ultra snapshots in progress per disk | 409 `OperationNotAllowed` "... in progress" (transient; code an assumption) |
//! | copy only from a source whose disks are `Available` / `AvailableWithInstantAccess` | 409 `OperationNotAllowed` "... in progress" (transient; code an assumption) |
//! | `instantAccessDurationMinutes` 60-300 | 400 `InvalidParameter`, target `properties.instantAccessDurationMinutes` |
//! | ≤ 50 instant-access creates in flight per subscription and region | 409 `OperationNotAllowed` "... concurrent ..." (transient; code an assumption) |
//! | collection names: 1-80 alphanumerics, `_`, `.`, `-`, start alphanumeric, end alphanumeric or `_` | 400 `InvalidResourceName` |
//! | collection locations ARM knows | 400 `LocationNotAvailableForResourceType` |
//! | request inside the role's assigned scopes (when [`RuleSwitches::role_scopes`] is set) | 403 `AuthorizationFailed` (ARM's RBAC check; body shape from a real answer, github.com/Azure/ARO-RP/issues/66) |
//! | request's action among the role's actions ([`RuleSwitches::role_actions`], default: vmrp's deployed role) | 403 `AuthorizationFailed` (same body) |
//!
//! Unsupported disks follow the current support matrix (learn.microsoft.com
//! `virtual-machines/concepts-restore-points`): ephemeral OS and shared disks are never
//! supported; Ultra and Premium SSD v2 disks are supported for application consistency only, so
//! they must be excluded from crash-consistent points. (CONTRACT §7 quotes an older matrix that
//! lists Ultra as unsupported altogether.)

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::azure::models::ConsistencyMode;

/// How a create that overlaps another create on the same VM fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConcurrentCreateMode {
    /// The PUT is refused with 409 (default).
    #[default]
    Reject409,
    /// The PUT is accepted (201) and the point ends `Failed` with the documented message.
    FailAsync,
}

/// Which platform rules the emulator enforces, and their limits. All on by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleSwitches {
    pub one_create_per_vm: bool,
    pub concurrent_create_mode: ConcurrentCreateMode,
    pub hourly_create_limit: bool,
    pub creates_per_vm_per_hour: u32,
    pub hourly_copy_limit: bool,
    pub copies_per_collection_per_hour: u32,
    pub points_per_vm_cap: bool,
    pub max_points_per_vm: u32,
    pub spacing: bool,
    /// Minimum gap between application- (or file-system-) consistent points of a VM, seconds.
    pub app_consistent_spacing_secs: i64,
    /// Minimum gap between crash-consistent points of a VM, seconds.
    pub crash_consistent_spacing_secs: i64,
    pub copies_serial_in_order: bool,
    pub no_copy_of_copy: bool,
    /// A source point is copied into a target region at most once (a live, not-failed copy in
    /// any collection of that region blocks a second one under another name).
    pub one_copy_per_region: bool,
    /// Disk restore point copies replicating at once per subscription and target region
    /// (0 = no limit).
    pub copies_in_flight_per_region: u32,
    /// Days a copy may replicate before the platform terminates it (0 = never).
    pub copy_max_days: u32,
    /// A copy of a disk encrypted with a disk encryption set must name an encryption set that
    /// exists in the target region.
    pub cmk_copy_needs_target_set: bool,
    pub unsupported_disks_excluded: bool,
    /// Refuse creates for VMs restore points do not support ([`check_vm_supported`]).
    pub unsupported_vms: bool,
    pub target_must_reference_source: bool,
    /// Refuse a `consistencyMode` other than `CrashConsistent` in a create's input.
    pub consistency_input_crash_only: bool,
    /// Refuse collection names outside ARM's naming rule ([`check_collection_name`]).
    pub collection_name_rules: bool,
    /// Refuse collection locations outside [`KNOWN_LOCATIONS`].
    pub known_locations_only: bool,
    /// Premium SSD v2 / Ultra disks: at most this many snapshots per disk whose background data
    /// copy is in progress ([`check_fast_snapshots_in_progress`]).
    pub fast_disk_snapshot_limit: bool,
    pub max_fast_snapshots_in_progress: u32,
    /// Refuse a cross-region copy of a point whose disk restore points are not all copyable
    /// ([`check_source_copyable`]).
    pub copy_needs_copyable_source: bool,
    /// Refuse `instantAccessDurationMinutes` outside 60-300 ([`check_instant_access_minutes`]).
    pub instant_access_duration_range: bool,
    /// At most this many instant-access creates in flight per subscription and region
    /// ([`check_instant_access_in_flight`]).
    pub instant_access_concurrency: bool,
    pub max_instant_access_in_flight: u32,
    /// Items per page of list responses (not a rule, a platform behaviour worth varying in tests).
    pub list_page_size: usize,
    /// Answer 401 `AuthenticationFailed` when a request has no `Authorization: Bearer …` header,
    /// as ARM does. On by default, as in Azure: every scenario runs with it, so a client path that
    /// forgets its token fails a test. The token's content is not checked here (the server checks
    /// the audience of tokens its identity endpoint issued).
    pub require_authorization: bool,
    /// The scopes vmrp's role is assigned at (`/subscriptions/{sub}` or
    /// `/subscriptions/{sub}/resourceGroups/{rg}`, any case). A request outside every one of
    /// them is refused with 403 `AuthorizationFailed`, as ARM's RBAC check answers (an
    /// assignment is inherited by everything below its scope). `None` (the default): every
    /// request is authorized. `vmrp local` sets it to the scopes its policy would be assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_scopes: Option<Vec<String>>,
    /// The actions vmrp's role grants (`Microsoft.Compute/...`, compared case-insensitively,
    /// as ARM compares action names). A request whose RBAC action is not among them is refused
    /// with 403 `AuthorizationFailed`, as ARM refuses a call the caller's roles do not allow.
    /// Default: exactly what infra/modules/vm-role.bicep deploys (`operations::ARM_ACTIONS`),
    /// so a call the role would not allow fails here as it would in Azure. `None`: every action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_actions: Option<Vec<String>>,
    /// Further role assignments of the same identity, each its own actions at its own scope
    /// (the drill role: disk write/delete at the drill resource group only,
    /// infra/modules/drill-role.bicep). A request the main role (`roleActions` at `roleScopes`)
    /// refuses is allowed when one grant covers both its action and its path: RBAC is the union
    /// of a principal's assignments, each limited to its scope.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub role_grants: Vec<RoleGrant>,
}

/// One role assignment: `actions` granted at `scope` and below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleGrant {
    pub scope: String,
    pub actions: Vec<String>,
}

impl RoleGrant {
    /// Whether this assignment allows `action` on `path`.
    pub fn allows(&self, path: &str, action: &str) -> bool {
        self.actions.iter().any(|a| a.eq_ignore_ascii_case(action))
            && check_role_scope(std::slice::from_ref(&self.scope), path, action, "").is_ok()
    }
}

impl Default for RuleSwitches {
    fn default() -> Self {
        Self {
            one_create_per_vm: true,
            concurrent_create_mode: ConcurrentCreateMode::Reject409,
            hourly_create_limit: true,
            creates_per_vm_per_hour: 3,
            hourly_copy_limit: true,
            copies_per_collection_per_hour: 3,
            points_per_vm_cap: true,
            max_points_per_vm: 500,
            spacing: true,
            app_consistent_spacing_secs: 3 * 3600,
            crash_consistent_spacing_secs: 3600,
            copies_serial_in_order: true,
            no_copy_of_copy: true,
            one_copy_per_region: true,
            copies_in_flight_per_region: 100,
            copy_max_days: 14,
            cmk_copy_needs_target_set: true,
            unsupported_disks_excluded: true,
            unsupported_vms: true,
            target_must_reference_source: true,
            consistency_input_crash_only: true,
            collection_name_rules: true,
            known_locations_only: true,
            fast_disk_snapshot_limit: true,
            max_fast_snapshots_in_progress: 3,
            copy_needs_copyable_source: true,
            instant_access_duration_range: true,
            instant_access_concurrency: true,
            max_instant_access_in_flight: 50,
            list_page_size: 50,
            require_authorization: true,
            role_scopes: None,
            role_actions: Some(deployed_role_actions()),
            role_grants: Vec::new(),
        }
    }
}

impl RuleSwitches {
    /// Every rule off (page size kept): for replaying examples that ignore the platform rules.
    pub fn all_off() -> Self {
        Self {
            one_create_per_vm: false,
            hourly_create_limit: false,
            hourly_copy_limit: false,
            points_per_vm_cap: false,
            spacing: false,
            copies_serial_in_order: false,
            no_copy_of_copy: false,
            one_copy_per_region: false,
            copies_in_flight_per_region: 0,
            copy_max_days: 0,
            cmk_copy_needs_target_set: false,
            unsupported_disks_excluded: false,
            unsupported_vms: false,
            target_must_reference_source: false,
            consistency_input_crash_only: false,
            collection_name_rules: false,
            known_locations_only: false,
            fast_disk_snapshot_limit: false,
            copy_needs_copyable_source: false,
            instant_access_duration_range: false,
            instant_access_concurrency: false,
            ..Self::default()
        }
    }
}

/// A refusal: HTTP status, ARM error code, message, optional `Retry-After`, and the rule's name
/// for the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub target: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// Compute's throttling shape: the top-level code is `OperationNotAllowed` and this code
    /// (`TooManyRequests`) is `details[0].code`, with the message repeated there.
    pub detail_code: Option<&'static str>,
}

impl Violation {
    fn new(rule: &'static str, status: u16, code: &'static str, message: String) -> Self {
        Self {
            rule,
            status,
            code,
            message,
            target: None,
            retry_after_secs: None,
            detail_code: None,
        }
    }

    /// Compute's 429: `OperationNotAllowed` with a `TooManyRequests` detail (the body Compute
    /// answers when it throttles, learn.microsoft.com/troubleshoot/azure/virtual-machines/
    /// linux/troubleshooting-throttling-errors).
    fn compute_throttled(rule: &'static str, message: String, retry_after_secs: u64) -> Self {
        let mut v = Self::new(rule, 429, "OperationNotAllowed", message);
        v.detail_code = Some("TooManyRequests");
        v.retry_after_secs = Some(retry_after_secs);
        v
    }
}

/// The principal the emulator names in authorization refusals (it never reads the token).
pub const EMULATED_PRINCIPAL: &str = "00000000-0000-0000-0000-00000000e1e1";

/// The actions of the role vmrp deploys (infra/modules/vm-role.bicep = `ARM_ACTIONS`).
pub fn deployed_role_actions() -> Vec<String> {
    crate::azure::operations::ARM_ACTIONS
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// The operator's role for `vmrp restore` (docs/restore.md): the deployed role's reads plus the
/// restore's writes (`operations::RESTORE_ACTIONS`). Tests of the restore run the emulator with
/// it, as the operator runs restore with their own identity, never the app's.
pub fn operator_role_actions() -> Vec<String> {
    let mut actions = deployed_role_actions();
    actions.extend(
        crate::azure::operations::RESTORE_ACTIONS
            .iter()
            .map(|a| a.to_string()),
    );
    actions
}

/// ARM's RBAC refusal, in the shape of a real answer (github.com/Azure/ARO-RP/issues/66).
fn authorization_failed(rule: &'static str, action: &str, scope: &str) -> Violation {
    Violation::new(
        rule,
        403,
        "AuthorizationFailed",
        format!(
            "The client '{EMULATED_PRINCIPAL}' with object id '{EMULATED_PRINCIPAL}' does not have \
             authorization to perform action '{action}' over scope '{scope}' or the scope is \
             invalid. If access was recently granted, please refresh your credentials."
        ),
    )
}

/// Role actions: `action` must be one the role grants (case-insensitive; no wildcards, as the
/// deployed role has none). The refusal names the action and `scope` as ARM's does.
pub fn check_role_action(actions: &[String], action: &str, scope: &str) -> Result<(), Violation> {
    if actions.iter().any(|a| a.eq_ignore_ascii_case(action)) {
        return Ok(());
    }
    Err(authorization_failed("roleActions", action, scope))
}

/// Role scope: `path` (the request's path, no query) must lie at or below one of `scopes`
/// (segment-wise, case-insensitive, as ARM ids compare). `action` and `scope` name what the
/// refusal reports, in ARM's message shape (a real body: github.com/Azure/ARO-RP/issues/66).
pub fn check_role_scope(
    scopes: &[String],
    path: &str,
    action: &str,
    scope: &str,
) -> Result<(), Violation> {
    let segments = |s: &str| -> Vec<String> {
        s.trim_matches('/')
            .split('/')
            .filter(|x| !x.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let requested = segments(path);
    let granted = scopes.iter().any(|s| {
        let s = segments(s);
        !s.is_empty() && requested.len() >= s.len() && requested[..s.len()] == s[..]
    });
    if granted {
        return Ok(());
    }
    Err(authorization_failed("roleScope", action, scope))
}

/// The documented message for an overlapping create (CONTRACT §7).
pub const CONCURRENT_CREATE_MESSAGE: &str =
    "RestorePoint creation failed since a concurrent 'Create RestorePoint' \
        operation was triggered on the VM.";

/// One create per VM at a time: `creating` names a point of this VM still `Creating`.
pub fn check_one_create(vm: &str, creating: Option<&str>) -> Result<(), Violation> {
    match creating {
        None => Ok(()),
        Some(point) => Err(Violation::new(
            "oneCreatePerVm",
            409,
            "VMRestorePointClientError",
            format!(
                "{CONCURRENT_CREATE_MESSAGE} VM '{vm}' is still creating restore point '{point}'."
            ),
        )),
    }
}

/// At most `limit` events in the hour before `now`; refusal carries the seconds until the oldest
/// counted event leaves the window.
pub fn check_hourly(
    rule: &'static str,
    what: &str,
    limit: u32,
    events: &[OffsetDateTime],
    now: OffsetDateTime,
) -> Result<(), Violation> {
    let window_start = now - Duration::hours(1);
    if limit == 0 {
        return Err(Violation::compute_throttled(
            rule,
            format!("No {what} are allowed (limit 0 per hour)."),
            3600,
        ));
    }
    let mut recent: Vec<OffsetDateTime> = events
        .iter()
        .copied()
        .filter(|t| *t > window_start)
        .collect();
    if (recent.len() as u32) < limit {
        return Ok(());
    }
    recent.sort();
    // The oldest event that must leave the window for one more to fit.
    let oldest = recent[recent.len() - limit as usize];
    let wait = (oldest + Duration::hours(1) - now)
        .as_seconds_f64()
        .ceil()
        .max(1.0) as u64;
    Err(Violation::compute_throttled(
        rule,
        format!(
            "The limit of {limit} {what} per hour has been reached; retry after {wait} seconds."
        ),
        wait,
    ))
}

/// At most `cap` restore points kept per VM (all collections, resource groups and regions).
pub fn check_point_cap(vm: &str, existing: usize, cap: u32) -> Result<(), Violation> {
    if (existing as u64) < cap as u64 {
        return Ok(());
    }
    Err(Violation::new(
        "pointsPerVmCap",
        400,
        "VMRestorePointClientError",
        format!(
            "Restore point creation failed: the maximum allowed snapshot limit of \
                {cap} restore points has been reached for VM '{vm}'. Delete older \
                restore points and retry."
        ),
    ))
}

/// True for the modes that count as application-consistent for spacing (app and file-system).
pub fn is_app_class(mode: &ConsistencyMode) -> bool {
    !matches!(mode, ConsistencyMode::CrashConsistent)
}

/// Spacing between points of the same class on one VM. `last_same_class` is the creation time of
/// the newest non-failed point of that class.
pub fn check_spacing(
    rules: &RuleSwitches,
    vm: &str,
    mode: &ConsistencyMode,
    last_same_class: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), Violation> {
    let Some(last) = last_same_class else {
        return Ok(());
    };
    let (gap, label) = if is_app_class(mode) {
        (rules.app_consistent_spacing_secs, "application-consistent")
    } else {
        (rules.crash_consistent_spacing_secs, "crash-consistent")
    };
    // Clamp so a silly configured gap cannot overflow the date arithmetic.
    let gap = gap.clamp(0, 10 * 365 * 86_400);
    let next_allowed = last + Duration::seconds(gap);
    if now >= next_allowed {
        return Ok(());
    }
    let wait = (next_allowed - now).as_seconds_f64().ceil() as u64;
    Err(Violation::new(
        "spacing",
        400,
        "OperationNotAllowed",
        format!(
            "Restore points of VM '{vm}' that are {label} ({}) must be at least {} \
                minutes apart; the last one was created at {last}. The next one is \
                allowed in {wait} seconds.",
            mode.as_str(),
            gap / 60
        ),
    ))
}

/// Copies into one target collection run one at a time: `replicating` names a copy in this
/// collection whose replication has not finished (and has not failed).
pub fn check_copy_serial(
    collection: &str,
    replicating: Option<(&str, i32)>,
) -> Result<(), Violation> {
    match replicating {
        None => Ok(()),
        Some((point, percent)) => Err(Violation::new(
            "copiesSerial",
            409,
            "OperationNotAllowed",
            format!(
                "Another cross-region copy into restore point collection \
                    '{collection}' is in progress (restore point '{point}', {percent}% \
                    replicated); copies into one collection run one at a time. Retry when \
                    it has completed."
            ),
        )),
    }
}

/// Copies into one target collection follow the source points' creation order: the new source
/// must be newer than every source already copied there.
pub fn check_copy_order(
    collection: &str,
    new_source: &str,
    new_source_created: OffsetDateTime,
    newest_copied: Option<(&str, OffsetDateTime)>,
) -> Result<(), Violation> {
    match newest_copied {
        Some((prev, prev_created)) if new_source_created < prev_created => Err(Violation::new(
            "copiesInOrder",
            409,
            "OperationNotAllowed",
            format!(
                "Source restore point '{new_source}' (created {new_source_created}) is \
                    older than '{prev}' (created {prev_created}), which was already \
                    copied into restore point collection '{collection}'; copies must \
                    follow the source creation order."
            ),
        )),
        _ => Ok(()),
    }
}

/// A copy cannot be the source of another copy.
pub fn check_not_copy_of_copy(source: &str, source_is_copy: bool) -> Result<(), Violation> {
    if !source_is_copy {
        return Ok(());
    }
    let mut v = Violation::new(
        "noCopyOfCopy",
        400,
        "OperationNotAllowed",
        format!(
            "Restore point '{source}' is itself a cross-region copy; a copy cannot \
                be copied again. Copy the original restore point instead."
        ),
    );
    v.target = Some("properties.sourceRestorePoint.id".to_string());
    Err(v)
}

/// Premium SSD v2 / Ultra disks: "three in-progress snapshots per disk" (instant access snapshots
/// count too; learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots,
/// Limitations). `in_progress` counts the disk's restore points whose background data copy has
/// not completed. No document gives the refusal for restore points: 409 `OperationNotAllowed`
/// is our assumption, worded "in progress" so that clients retry it later.
pub fn check_fast_snapshots_in_progress(
    disk: &str,
    in_progress: usize,
    limit: u32,
) -> Result<(), Violation> {
    if (in_progress as u64) < u64::from(limit) {
        return Ok(());
    }
    Err(Violation::new(
        "fastDiskSnapshotsInProgress",
        409,
        "OperationNotAllowed",
        format!(
            "Disk '{disk}' already has {in_progress} snapshots whose background data copy is in \
             progress; Premium SSD v2 and Ultra disks allow at most {limit}. Retry once a copy \
             completes."
        ),
    ))
}

/// A cross-region copy needs every disk restore point of its source to be copyable:
/// `Pending` "can't be ... copied to another region", `InstantAccess` "can't be copied to
/// another region" until the background data copy completes (`completionPercent` 100)
/// (learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots; the snapshot
/// access states of restorePoint.json 2025-04-01 say the same). `blocking` is the first disk
/// restore point that is not, with its state. The refusal's code is our assumption.
pub fn check_source_copyable(
    source: &str,
    blocking: Option<(&str, &str)>,
) -> Result<(), Violation> {
    let Some((disk, state)) = blocking else {
        return Ok(());
    };
    let mut v = Violation::new(
        "copyNeedsCopyableSource",
        409,
        "OperationNotAllowed",
        format!(
            "Source restore point '{source}' cannot be copied to another region yet: disk \
             restore point '{disk}' has snapshotAccessState '{state}' (its background data copy \
             is in progress). Copy it once every disk restore point is Available."
        ),
    );
    v.target = Some("properties.sourceRestorePoint.id".to_string());
    Err(v)
}

/// `instantAccessDurationMinutes` "must be between 60 and 300 minutes"
/// (learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots, Limitations;
/// Azure/MDCC-for-Premium-SSD-v2-and-Ultra-disks README: "configurable between 60 and 300
/// minutes", though its table says 1-300: the stricter reading).
pub fn check_instant_access_minutes(minutes: i32) -> Result<(), Violation> {
    if (60..=300).contains(&minutes) {
        return Ok(());
    }
    let mut v = Violation::new(
        "instantAccessDurationRange",
        400,
        "InvalidParameter",
        format!(
            "The value {minutes} of properties.instantAccessDurationMinutes is out of range: \
             instant access lasts between 60 and 300 minutes."
        ),
    );
    v.target = Some("properties.instantAccessDurationMinutes".to_string());
    Err(v)
}

/// "More than 50 restore points should not be created concurrently at a given time per
/// subscription per region" (instant access restore points of Premium SSD v2 / Ultra disks;
/// Azure/MDCC-for-Premium-SSD-v2-and-Ultra-disks README, Unsupported Configurations). The
/// document names no refusal; refusing the 51st is the stricter reading, 409
/// `OperationNotAllowed` worded "concurrent" our assumption (clients retry it later).
pub fn check_instant_access_in_flight(
    subscription: &str,
    location: &str,
    in_flight: usize,
    limit: u32,
) -> Result<(), Violation> {
    if (in_flight as u64) < u64::from(limit) {
        return Ok(());
    }
    Err(Violation::new(
        "instantAccessInFlight",
        409,
        "OperationNotAllowed",
        format!(
            "{in_flight} instant access restore points are being created concurrently in \
             subscription '{subscription}' and region '{location}'; at most {limit} are \
             supported. Retry once one of them completes."
        ),
    ))
}

/// A source point is copied into one region at most once
/// (learn.microsoft.com `virtual-machines/virtual-machines-restore-points-copy`, Limitations:
/// "A single restore point in the source region can be copied only once to a target region").
/// `existing` names a live copy of the same source already in that region. No error code is
/// documented: 409 `OperationNotAllowed`, permanent (the message says neither "in progress" nor
/// "concurrent", so clients do not retry it).
pub fn check_copied_once(
    source: &str,
    region: &str,
    existing: Option<&str>,
) -> Result<(), Violation> {
    match existing {
        None => Ok(()),
        Some(copy) => {
            let mut v = Violation::new(
                "oneCopyPerRegion",
                409,
                "OperationNotAllowed",
                format!(
                    "Restore point '{source}' has already been copied to region '{region}' \
                    as '{copy}'; a restore point can be copied only once to a target region."
                ),
            );
            v.target = Some("properties.sourceRestorePoint.id".to_string());
            Err(v)
        }
    }
}

/// At most `limit` disk restore point copies replicating at once per subscription and target
/// region. The documented limit is for incremental snapshot copies (learn.microsoft.com
/// `virtual-machines/disks-copy-incremental-snapshot-across-regions`, Restrictions: "100
/// incremental snapshots in parallel at the same time per subscription per region"); a restore
/// point copy copies one snapshot per disk, so the emulator counts disks (the stricter reading).
/// Refused as Compute throttles: 429 with `Retry-After` one progress step away.
pub fn check_copies_in_flight(
    region: &str,
    in_flight_disks: usize,
    new_disks: usize,
    limit: u32,
    retry_after_secs: u64,
) -> Result<(), Violation> {
    if limit == 0 || in_flight_disks + new_disks <= limit as usize {
        return Ok(());
    }
    Err(Violation::compute_throttled(
        "copiesInFlightPerRegion",
        format!(
            "The limit of {limit} disk restore point copies in progress per subscription in \
            region '{region}' has been reached ({in_flight_disks} in progress, this copy adds \
            {new_disks}); retry after {retry_after_secs} seconds."
        ),
        retry_after_secs,
    ))
}

/// A copy of a disk encrypted with a customer-managed key (a disk encryption set) must name an
/// encryption set that exists in the target region. The copy documentation says such a copy "is
/// encrypted by using CMK in the target region" (learn.microsoft.com
/// `virtual-machines/virtual-machines-restore-points-copy`), while the REST spec calls the
/// per-disk `encryption` "an optional property" (azure-rest-api-specs
/// `ComputeRP/stable/2025-04-01/restorePoint.json`, `RestorePointEncryption`), which leaves a
/// fallback to platform keys open. The emulator takes the stricter reading: a copy of a CMK disk
/// without a target set, or with a set that does not exist in the target region, is refused.
/// `target_set`: what the request named; `target_exists`: that set exists in `region`.
pub fn check_cmk_copy(
    disk: &str,
    source_set: &str,
    region: &str,
    target_set: Option<&str>,
    target_exists: bool,
    field: &str,
) -> Result<(), Violation> {
    let message = match target_set {
        None => format!(
            "Disk restore point of disk '{disk}' is encrypted with customer-managed keys (disk \
            encryption set '{source_set}'); the copy to region '{region}' must name a disk \
            encryption set of that region in {field}.diskEncryptionSet.id."
        ),
        Some(set) if !target_exists => format!(
            "Disk encryption set '{set}' named for disk '{disk}' was not found in region \
            '{region}'; a copy is encrypted with a disk encryption set of its target region."
        ),
        Some(_) => return Ok(()),
    };
    let mut v = Violation::new("cmkCopyNeedsTargetSet", 400, "InvalidParameter", message);
    v.target = Some(field.to_string());
    Err(v)
}

/// The facts about one disk that decide whether restore points support it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    pub id: String,
    pub name: String,
    pub ephemeral_os: bool,
    pub max_shares: i32,
    pub storage_account_type: Option<String>,
    /// `writeAcceleratorEnabled` in the VM's storage profile.
    pub write_accelerator: bool,
}

/// Why restore points do not support `disk` in `mode` (None = supported).
pub fn unsupported_reason(disk: &DiskFacts, mode: &ConsistencyMode) -> Option<&'static str> {
    if disk.ephemeral_os {
        return Some("an ephemeral OS disk");
    }
    if disk.max_shares > 1 {
        return Some("a shared disk (maxShares > 1)");
    }
    let sku = disk
        .storage_account_type
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(mode, ConsistencyMode::CrashConsistent)
        && (sku == "ultrassd_lrs" || sku == "premiumv2_lrs")
    {
        return Some(
            "an Ultra or Premium SSD v2 disk, which crash-consistent restore points do not support",
        );
    }
    // "Ultra Disks, Premium SSD v2 disks, Write-accelerated disks, Ephemeral OS disks, and
    // shared disks aren't supported for crash consistency mode" (virtual-machines-create-
    // restore-points, Limitations).
    if matches!(mode, ConsistencyMode::CrashConsistent) && disk.write_accelerator {
        return Some(
            "a write-accelerated disk, which crash-consistent restore points do not support",
        );
    }
    None
}

/// A VM restore points do not support, whatever its disks: a confidential VM ("Confidential
/// VMs | No", support matrix), or — for a crash-consistent point — a size without Premium
/// storage ("Crash consistency is supported for VM SKUs that support Premium storage"), as
/// read from the size name by [`crate::policy::platform::premium_storage_capable`] (a size
/// the name does not classify is accepted). The documents give no error code: 400
/// `OperationNotAllowed`, as for the other unsupported configurations, is our assumption.
pub fn check_vm_supported(
    vm: &str,
    security_type: Option<&str>,
    vm_size: Option<&str>,
    mode: &ConsistencyMode,
) -> Result<(), Violation> {
    use crate::policy::platform;
    if platform::is_confidential(security_type) {
        return Err(Violation::new(
            "unsupportedVms",
            400,
            "OperationNotAllowed",
            format!(
                "VM '{vm}' is a confidential VM (securityType ConfidentialVM). Restore points \
                 are not supported for confidential VMs."
            ),
        ));
    }
    if let (ConsistencyMode::CrashConsistent, Some(size)) = (mode, vm_size) {
        if platform::premium_storage_capable(size) == Some(false) {
            let mut v = Violation::new(
                "unsupportedVms",
                400,
                "OperationNotAllowed",
                format!(
                    "Crash-consistent restore points are supported only for VM sizes that \
                     support Premium storage; VM '{vm}' has size '{size}'. Omit \
                     properties.consistencyMode for an application-consistent restore point."
                ),
            );
            v.target = Some("properties.consistencyMode".to_string());
            return Err(v);
        }
    }
    Ok(())
}

/// Every included (not excluded) disk must be supported; the refusal names the first offender.
pub fn check_disks(
    vm: &str,
    mode: &ConsistencyMode,
    included: &[DiskFacts],
) -> Result<(), Violation> {
    for disk in included {
        if let Some(reason) = unsupported_reason(disk, mode) {
            let mut v = Violation::new(
                "unsupportedDisks",
                400,
                "OperationNotAllowed",
                format!(
                    "Disk '{}' ({}) of VM '{vm}' is {reason}. Restore points do not \
                        support it: add it to properties.excludeDisks and retry.",
                    disk.name, disk.id
                ),
            );
            v.target = Some("properties.excludeDisks".to_string());
            return Err(v);
        }
    }
    Ok(())
}

/// A copy must go into a collection whose `source.id` is the source point's collection.
pub fn check_target_references_source(
    target_collection: &str,
    target_source_id: &str,
    source_collection: &str,
) -> Result<(), Violation> {
    if target_source_id
        .trim_start_matches('/')
        .eq_ignore_ascii_case(source_collection.trim_start_matches('/'))
    {
        return Ok(());
    }
    let mut v = Violation::new(
        "targetReferencesSource",
        400,
        "InvalidParameter",
        format!(
            "Restore point collection '{target_collection}' has source \
                '{target_source_id}', not '{source_collection}', the collection of \
                the source restore point. Copy into a collection whose \
                properties.source.id is the source collection."
        ),
    );
    v.target = Some("properties.sourceRestorePoint.id".to_string());
    Err(v)
}

/// Only `CrashConsistent` is accepted as input: the 2025-04-01 spec's `consistencyMode`
/// (`Microsoft.Compute/ComputeRP/stable/2025-04-01/restorePoint.json`) says "For now, only
/// CrashConsistent is accepted as a valid input"; other modes are what Azure chooses when the
/// field is absent.
pub fn check_consistency_input(mode: &ConsistencyMode) -> Result<(), Violation> {
    if *mode == ConsistencyMode::CrashConsistent {
        return Ok(());
    }
    let mut v = Violation::new(
        "consistencyInputCrashOnly",
        400,
        "InvalidParameter",
        format!(
            "The value '{}' of parameter 'properties.consistencyMode' is not valid: only \
             'CrashConsistent' is accepted as input. Omit the property for an \
             application-consistent restore point.",
            mode.as_str()
        ),
    );
    v.target = Some("properties.consistencyMode".to_string());
    Err(v)
}

/// ARM's naming rule for Compute resources of this kind (the `images`, `snapshots` and
/// `availabilitySets` rows of <https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules>,
/// which does not list `restorePointCollections`): 1-80 characters, alphanumerics, underscores,
/// periods and hyphens, starting with an alphanumeric and ending with an alphanumeric or an
/// underscore. The code and message are those ARM gives for such names
/// (`InvalidResourceName`).
pub fn check_collection_name(name: &str) -> Result<(), Violation> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let last_ok = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if (1..=80).contains(&name.chars().count()) && first_ok && last_ok && chars_ok {
        return Ok(());
    }
    Err(Violation::new(
        "collectionNameRules",
        400,
        "InvalidResourceName",
        format!(
            "Resource name {name} is invalid. The name can be up to 80 characters long. It must \
             begin with a word character, and it must end with a word character or with '_'. \
             The name may contain word characters or '.', '-', '_'."
        ),
    ))
}

/// Locations the emulator's ARM knows: the public cloud, Azure US Government and Azure China
/// (the emulator stands for whichever `VMRP_ARM_ENDPOINT` points at). The same list vmrp checks
/// copy regions against, so a region vmrp accepts is one the emulator serves.
pub const KNOWN_LOCATIONS: &[&str] = crate::policy::regions::KNOWN_REGIONS;

/// A collection's location must be one ARM offers for the type, compared in ARM's name form
/// ("West US 2" = westus2). Body shape and message as ARM answers them (e.g. the
/// `LocationNotAvailableForResourceType` quoted in Azure/azure-rest-api-specs#8577).
pub fn check_location(location: &str, resource_type: &str) -> Result<(), Violation> {
    let canonical = crate::policy::regions::canonical_region(location);
    if KNOWN_LOCATIONS.contains(&canonical.as_str()) {
        return Ok(());
    }
    let mut v = Violation::new(
        "knownLocationsOnly",
        400,
        "LocationNotAvailableForResourceType",
        format!(
            "The provided location '{location}' is not available for resource type \
             '{resource_type}'. List of available regions for the resource type is '{}'.",
            KNOWN_LOCATIONS.join(",")
        ),
    );
    v.target = Some("location".to_string());
    Err(v)
}

#[cfg(test)]
mod tests;
