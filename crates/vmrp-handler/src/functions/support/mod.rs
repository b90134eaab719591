//! What the handlers share: tuning, the process-wide cache of things known to exist, collection
//! ensuring, deterministic message ids, sending, transient-retry delays and the report event.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use super::Deps;
use crate::azure::models::{
    ConsistencyMode, RestorePoint, RestorePointCollection, Tags, VirtualMachine,
};
use crate::azure::{ArmError, OutgoingMessage, ResourceId, SendError, VmScope};
use crate::invocation::Sent;
use crate::messages::{CollectionSeen, CopyRequest, CreateRequest, QueueMessage, Role};
use crate::names;
use crate::plan::Pacing;
use crate::policy::{Policy, Rule};
use crate::poll::{self, Backoff};
use crate::schedule::Schedule;

use super::pace::{self, Bucket, Pace, PaceInput};

mod known;
pub use known::{CopyTurn, KnownResources};

/// Tag on every collection vmrp creates: the policy rule that made it.
pub const TAG_RULE: &str = "vmrp-rule";
/// Tag on every collection vmrp creates: the VM id whose points it holds.
pub const TAG_VM: &str = "vmrp-vm";
/// Set on a deleted VM's collections (RFC 3339); the timer deletes them once the policy's
/// `orphans.expireAfterDays` have passed.
pub const TAG_ORPHANED_AT: &str = "vmrp-orphaned-at";
/// `tracing` target of the one structured event per settled, failed or given-up point.
pub const REPORT_TARGET: &str = "vmrp::report";

/// Knobs with defaults explained in docs/lifecycle.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    pub pacing: Pacing,
    pub backoff: Backoff,
    /// First delay before a request refused for a transient reason is retried, when ARM sent
    /// no `Retry-After`; doubles per attempt up to `reschedule_cap`.
    pub reschedule_first: Duration,
    pub reschedule_cap: Duration,
    /// After this many transient refusals a request is reported instead of rescheduled.
    pub max_reschedules: u32,
    /// Retention deletes per invocation: deletes spend the write budget the planner shares out,
    /// and the rest waits for the next settled point of the collection.
    pub max_deletes_per_invocation: usize,
    /// OnVmChanged sends a first create for a newly onboarded VM without points.
    pub onboard_first_point: bool,
    /// How long a Disk GET's answer (tags, shares, SKU) is trusted.
    pub disk_cache_ttl: Duration,
    /// Expired orphan collections deleted per timer run.
    pub max_orphan_deletes_per_tick: usize,
    /// How long a create trusts the timer's listing in its message (VM, disks, collection).
    /// A tick of 10,000 VMs spreads its creates over about 35 minutes.
    pub listed_max_age: Duration,
    /// Reads the timer may spend per run on the coverage signal (src/coverage.rs): about one per
    /// VM and region. VMs past the cap are reported as `unknown`.
    pub coverage_max_reads: usize,
    /// How many handler instances may act on one subscription's budget reading at once: each
    /// handler leaves that many calls of headroom above the floor other tools keep
    /// (`functions::pace`).
    pub pace_instances: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            pacing: Pacing::default(),
            backoff: Backoff::default(),
            reschedule_first: Duration::from_secs(30),
            reschedule_cap: Duration::from_secs(15 * 60),
            max_reschedules: 20,
            max_deletes_per_invocation: 5,
            onboard_first_point: true,
            disk_cache_ttl: Duration::from_secs(3600),
            max_orphan_deletes_per_tick: 20,
            listed_max_age: Duration::from_secs(3600),
            coverage_max_reads: 2000,
            pace_instances: 8,
        }
    }
}

/// The app settings that set [`Tuning`] (docs/deploy.md, "Tuning settings"): name, what it
/// sets, its default. Unset or blank keeps the default.
pub const TUNING_SETTINGS: &[(&str, &str, &str)] = &[
    (
        ARM_SHARE_VAR,
        "share of each subscription's ARM read and write budget vmrp plans on, 0.01 to 1 (other tools spend the rest)",
        "0.95",
    ),
    (
        "VMRP_TICK_MARGIN_SECS",
        "seconds before the supersede cut-off by which a tick's last create must be planned",
        "300",
    ),
    (
        COPY_DURATION_VAR,
        "seconds one disk restore point copy is assumed to replicate, for the plan's copy capacity check (Microsoft states none)",
        "3600",
    ),
    (
        "VMRP_RESCHEDULE_FIRST_SECS",
        "first delay before a transiently refused request is retried (doubles per attempt)",
        "30",
    ),
    (
        "VMRP_RESCHEDULE_CAP_SECS",
        "longest delay between those retries (at least VMRP_RESCHEDULE_FIRST_SECS)",
        "900",
    ),
    (
        "VMRP_MAX_RESCHEDULES",
        "transient refusals after which a request is reported instead of retried",
        "20",
    ),
    (
        "VMRP_MAX_DELETES_PER_INVOCATION",
        "retention deletes per invocation",
        "5",
    ),
    (
        "VMRP_MAX_ORPHAN_DELETES_PER_TICK",
        "expired orphan collections deleted per timer run",
        "20",
    ),
    (
        "VMRP_ONBOARD_FIRST_POINT",
        "true/false: OnVmChanged sends a first create for a new VM without points",
        "true",
    ),
    (
        "VMRP_DISK_CACHE_TTL_SECS",
        "how long a Disk GET's answer is trusted",
        "3600",
    ),
    (
        "VMRP_LISTED_MAX_AGE_SECS",
        "how long a create trusts the timer's listing in its message",
        "3600",
    ),
    (
        "VMRP_COVERAGE_MAX_READS",
        "reads the timer may spend per run on the coverage signal",
        "2000",
    ),
    (
        PACE_INSTANCES_VAR,
        "handler instances that may act on one subscription's ARM budget reading at once (headroom each handler leaves)",
        "8",
    ),
];

/// The app setting for how many instances may act on one budget reading at once.
pub const PACE_INSTANCES_VAR: &str = "VMRP_PACE_INSTANCES";

/// The app setting for the assumed duration of one disk copy (`Pacing::copy_duration`).
pub const COPY_DURATION_VAR: &str = "VMRP_COPY_DURATION_SECS";

/// The app setting for the share of ARM's budget vmrp may use.
pub const ARM_SHARE_VAR: &str = "VMRP_ARM_SHARE";

/// A tuning setting that cannot be used; names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct TuningError {
    pub setting: &'static str,
    pub problem: String,
}

impl Tuning {
    /// The defaults, overridden by the app settings in [`TUNING_SETTINGS`] found through `env`.
    /// A value that is not a number (or `true`/`false`), or out of its range, is refused with
    /// the setting's name: a typo must not silently run with another budget.
    pub fn from_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, TuningError> {
        let mut t = Self::default();
        let get = |k: &'static str| -> Option<(&'static str, String)> {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (k, v))
        };
        let bad = |setting: &'static str, raw: &str, expected: &str| TuningError {
            setting,
            problem: format!("{raw:?} is not {expected}"),
        };
        let number = |k: &'static str, lo: f64, hi: f64, expected: &str| {
            get(k)
                .map(|(k, raw)| {
                    raw.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= lo && *v <= hi)
                        .ok_or_else(|| bad(k, &raw, expected))
                })
                .transpose()
        };
        let count = |k: &'static str, lo: u64, hi: u64| {
            get(k)
                .map(|(k, raw)| {
                    raw.parse::<u64>()
                        .ok()
                        .filter(|v| (lo..=hi).contains(v))
                        .ok_or_else(|| bad(k, &raw, &format!("a whole number from {lo} to {hi}")))
                })
                .transpose()
        };
        let secs = |k: &'static str, lo: u64, hi: u64| {
            count(k, lo, hi).map(|v| v.map(Duration::from_secs))
        };
        if let Some(share) = number(
            ARM_SHARE_VAR,
            0.01,
            1.0,
            "a share from 0.01 to 1 (e.g. 0.5)",
        )? {
            t.pacing.reserve = 1.0 - share;
        }
        if let Some(m) = secs("VMRP_TICK_MARGIN_SECS", 0, 3600)? {
            t.pacing.window_margin = m;
        }
        // A minute to two weeks: Azure ends a copy still replicating after two weeks.
        if let Some(d) = secs(COPY_DURATION_VAR, 60, 14 * 86_400)? {
            t.pacing.copy_duration = d;
        }
        if let Some(d) = secs("VMRP_RESCHEDULE_FIRST_SECS", 1, 3600)? {
            t.reschedule_first = d;
        }
        if let Some(d) = secs("VMRP_RESCHEDULE_CAP_SECS", 1, 86_400)? {
            t.reschedule_cap = d;
        }
        if t.reschedule_cap < t.reschedule_first {
            return Err(TuningError {
                setting: "VMRP_RESCHEDULE_CAP_SECS",
                problem: format!(
                    "{} s is shorter than VMRP_RESCHEDULE_FIRST_SECS ({} s)",
                    t.reschedule_cap.as_secs(),
                    t.reschedule_first.as_secs()
                ),
            });
        }
        if let Some(n) = count("VMRP_MAX_RESCHEDULES", 0, 1000)? {
            t.max_reschedules = n as u32;
        }
        if let Some(n) = count("VMRP_MAX_DELETES_PER_INVOCATION", 0, 1000)? {
            t.max_deletes_per_invocation = n as usize;
        }
        if let Some(n) = count("VMRP_MAX_ORPHAN_DELETES_PER_TICK", 0, 10_000)? {
            t.max_orphan_deletes_per_tick = n as usize;
        }
        if let Some((k, raw)) = get("VMRP_ONBOARD_FIRST_POINT") {
            t.onboard_first_point = match raw.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad(k, &raw, "true or false")),
            };
        }
        if let Some(d) = secs("VMRP_DISK_CACHE_TTL_SECS", 0, 86_400)? {
            t.disk_cache_ttl = d;
        }
        if let Some(d) = secs("VMRP_LISTED_MAX_AGE_SECS", 0, 86_400)? {
            t.listed_max_age = d;
        }
        if let Some(n) = count("VMRP_COVERAGE_MAX_READS", 0, 1_000_000)? {
            t.coverage_max_reads = n as usize;
        }
        if let Some(n) = count(PACE_INSTANCES_VAR, 1, 1000)? {
            t.pace_instances = n as u32;
        }
        Ok(t)
    }
}

/// The tags vmrp puts on a collection.
pub fn collection_tags(rule: &str, vm: &ResourceId) -> Tags {
    Tags::from([
        (TAG_RULE.to_string(), rule.to_string()),
        (TAG_VM.to_string(), vm.to_string()),
    ])
}

pub fn tag<'a>(tags: Option<&'a Tags>, key: &str) -> Option<&'a str> {
    tags?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Whether `existing` can take `source`'s points as it is: the same source, no orphan mark.
pub fn is_ready_for(existing: &RestorePointCollection, source: &ResourceId) -> bool {
    let same_source = existing
        .source_id()
        .and_then(|s| ResourceId::parse(s).ok())
        .is_some_and(|s| &s == source);
    same_source && tag(existing.tags.as_ref(), TAG_ORPHANED_AT).is_none()
}

/// The rule's next tick, when a create for `tick` running at `now` has been overtaken by it
/// (`policy::superseded_by_next_tick`): its point would crowd out that tick's.
pub fn superseding_tick(
    deps: &Deps,
    rule: &Rule,
    tick: OffsetDateTime,
    consistency: &ConsistencyMode,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let timer = Schedule::parse(&deps.schedule).ok()?;
    let next = rule.next_due_tick(&timer, tick).ok()??;
    crate::policy::superseded_by_next_tick(tick, next, now, crate::policy::spacing_for(consistency))
        .then_some(next)
}

/// Where a VM's collection (local, or copies in one region) lives: `id` under today's per-VM-id
/// name (`names::collection_name`), and the name vmrp used before (`rpc-{vm}`, `rpc-{vm}-{region}`).
/// A legacy collection whose `source.id` is the expected source keeps being used, so an upgrade
/// orphans no history; one with another source (the collision today's names fix) is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionNames {
    pub id: ResourceId,
    pub legacy: Option<ResourceId>,
}

impl CollectionNames {
    /// Whether `id` is one of the two names.
    pub fn names(&self, id: &ResourceId) -> bool {
        &self.id == id || self.legacy.as_ref() == Some(id)
    }
}

/// A collection as the handler found or made it.
pub struct Ensured {
    /// The collection in use: `names.id`, or the legacy collection it resolved to.
    pub id: ResourceId,
    /// The collection's points, when it was read with `$expand=restorePoints` (not when the
    /// cache said it exists).
    pub points: Option<Vec<RestorePoint>>,
}

/// Why a collection could not be ensured.
pub enum EnsureError {
    Arm(ArmError),
    /// A collection of that name exists but holds another source's points.
    Foreign {
        id: ResourceId,
        source: String,
    },
}

/// [`ensure_collection`] for a create, trusting what the timer's listing showed: `Ready` (the
/// collection under `names.id`) needs no request, `Missing` (neither name) is created without
/// reading it first (a PUT of the same body is harmless if it appeared meanwhile), unknown takes
/// the full check. Returns the collection in use.
pub async fn ensure_listed_collection(
    deps: &Deps,
    names: &CollectionNames,
    location: &str,
    source: &ResourceId,
    tags: Tags,
    seen: Option<CollectionSeen>,
    instant_access: bool,
) -> Result<ResourceId, EnsureError> {
    // The listing showed neither name: an entry this process still holds is stale (the
    // collection was deleted, e.g. on another instance) and would only earn a refused point PUT
    // and a reschedule. The listing wins; the PUT below is harmless if the cache was right.
    if seen == Some(CollectionSeen::Missing) {
        if let Some(stale) = deps.known.resolved(names) {
            tracing::debug!(collection = %stale, "cached collection not in the timer's listing: ensured again");
            deps.known.forget_collection(&stale);
        }
    } else if let Some(known) = deps.known.resolved(names) {
        return Ok(known);
    }
    match seen {
        Some(CollectionSeen::Ready) => {
            deps.known.remember_collection(&names.id);
            Ok(names.id.clone())
        }
        Some(CollectionSeen::Missing) => {
            create_collection(deps, &names.id, location, source, tags, instant_access).await?;
            Ok(names.id.clone())
        }
        None => ensure_collection_with(deps, names, location, source, tags, false, instant_access)
            .await
            .map(|e| e.id),
    }
}

/// The collection `names` resolves to as ARM has it now: the one under `names.id` whatever its
/// source, else the legacy one if its source is `source`. `None` when neither is there.
pub async fn find_collection(
    deps: &Deps,
    names: &CollectionNames,
    source: &ResourceId,
    need_points: bool,
) -> Result<Option<(ResourceId, RestorePointCollection)>, ArmError> {
    // Known to resolve to its legacy collection: one read, not two.
    if let Some(legacy) = deps.known.resolved(names).filter(|k| k != &names.id) {
        match deps.arm.get_collection(&legacy, need_points).await? {
            Some(c) if has_source(&c, source) => return Ok(Some((legacy, c))),
            _ => deps.known.forget_collection(&legacy),
        }
    }
    if let Some(c) = deps.arm.get_collection(&names.id, need_points).await? {
        return Ok(Some((names.id.clone(), c)));
    }
    let Some(legacy) = &names.legacy else {
        return Ok(None);
    };
    match deps.arm.get_collection(legacy, need_points).await? {
        Some(c) if has_source(&c, source) => {
            tracing::debug!(collection = %legacy, "using the collection under its pre-hash name");
            deps.known.remember_alias(names, legacy);
            Ok(Some((legacy.clone(), c)))
        }
        Some(c) => {
            tracing::debug!(collection = %legacy, other = c.source_id().unwrap_or_default(),
                "pre-hash name held by another source: not ours");
            Ok(None)
        }
        None => Ok(None),
    }
}

fn has_source(c: &RestorePointCollection, source: &ResourceId) -> bool {
    c.source_id()
        .and_then(|s| ResourceId::parse(s).ok())
        .is_some_and(|s| &s == source)
}

/// Makes sure the collection for `names` exists with `source` as its source, in `location`:
/// the one under `names.id`, else a legacy-named one of `source`'s, else a new one under
/// `names.id`. Skips ARM entirely when this process already knows it (unless `need_points`). An
/// existing collection marked orphaned (the VM was re-created under the same id) gets the mark
/// removed.
pub async fn ensure_collection(
    deps: &Deps,
    names: &CollectionNames,
    location: &str,
    source: &ResourceId,
    tags: Tags,
    need_points: bool,
) -> Result<Ensured, EnsureError> {
    ensure_collection_with(deps, names, location, source, tags, need_points, false).await
}

/// [`ensure_collection`]; a collection it creates gets `instantAccess: true` when asked (the
/// property is set at creation only: an existing collection is used as it is).
async fn ensure_collection_with(
    deps: &Deps,
    names: &CollectionNames,
    location: &str,
    source: &ResourceId,
    tags: Tags,
    need_points: bool,
    instant_access: bool,
) -> Result<Ensured, EnsureError> {
    if !need_points {
        if let Some(id) = deps.known.resolved(names) {
            return Ok(Ensured { id, points: None });
        }
    }
    let existing = find_collection(deps, names, source, need_points)
        .await
        .map_err(EnsureError::Arm)?;
    if let Some((id, existing)) = existing {
        let id = &id;
        let existing_source = existing.source_id().unwrap_or_default();
        let same_source = ResourceId::parse(existing_source).is_ok_and(|s| &s == source);
        if !same_source {
            return Err(EnsureError::Foreign {
                id: id.clone(),
                source: existing_source.to_string(),
            });
        }
        if tag(existing.tags.as_ref(), TAG_ORPHANED_AT).is_some() {
            let mut tags = existing.tags.clone().unwrap_or_default();
            tags.retain(|k, _| !k.eq_ignore_ascii_case(TAG_ORPHANED_AT));
            let location = existing.location.as_deref().unwrap_or(location);
            let body = RestorePointCollection::for_source(location, source, tags);
            deps.arm
                .put_collection(id, &body)
                .await
                .map_err(EnsureError::Arm)?;
            tracing::info!(collection = %id, "source is back: orphan mark removed");
        }
        deps.known.remember_collection(id);
        return Ok(Ensured {
            id: id.clone(),
            points: need_points.then(|| existing.restore_points().to_vec()),
        });
    }
    create_collection(deps, &names.id, location, source, tags, instant_access).await?;
    Ok(Ensured {
        id: names.id.clone(),
        points: Some(Vec::new()),
    })
}

/// PUTs a new collection for `source` and remembers it.
async fn create_collection(
    deps: &Deps,
    id: &ResourceId,
    location: &str,
    source: &ResourceId,
    tags: Tags,
    instant_access: bool,
) -> Result<(), EnsureError> {
    let mut body = RestorePointCollection::for_source(location, source, tags);
    if let (true, Some(p)) = (instant_access, body.properties.as_mut()) {
        p.instant_access = Some(true);
    }
    deps.arm
        .put_collection(id, &body)
        .await
        .map_err(EnsureError::Arm)?;
    tracing::info!(collection = %id, %location, source = %source, "collection created");
    deps.known.remember_collection(id);
    Ok(())
}

/// The VM's local collection under its rule (an error names what forms no id, e.g. a
/// `collectionResourceGroup` holding a `/`).
pub fn local_collection(vm: &ResourceId, rule: &Rule) -> Result<CollectionNames, String> {
    let rg = rule.collection_resource_group.as_deref();
    let id = names::collection_id(vm, rg)
        .map_err(|e| format!("no local collection name for {vm}: {e}"))?;
    Ok(CollectionNames {
        id,
        legacy: names::legacy_collection_id(vm, rg),
    })
}

/// The VM's copy collection in `region` (in `resource_group`, else the VM's group); an error
/// when `region` is not a region name.
pub fn copy_collection(
    vm: &ResourceId,
    region: &str,
    resource_group: Option<&str>,
) -> Result<CollectionNames, String> {
    let id = names::copy_collection_id(vm, region, resource_group)
        .map_err(|e| format!("no copy collection name for {vm} in {region:?}: {e}"))?;
    Ok(CollectionNames {
        id,
        legacy: names::legacy_copy_collection_id(vm, region, resource_group),
    })
}

/// Where vmrp's collections for the policy's VMs can live, as scopes its role holds: the rules'
/// target subscriptions, and resource groups (target groups, the groups of explicit VM ids, and
/// each rule's `collectionResourceGroup` and copy `resourceGroup`s in every subscription the rule
/// targets). A group inside a listed subscription is dropped. The deploy assigns the role at the
/// targets, and docs/deploy.md asks for the collection groups to be listed among them, so each
/// scope here can be listed where a subscription-wide list would be refused (403).
pub fn collection_scopes(policy: &Policy) -> Vec<VmScope> {
    let mut subs: BTreeSet<String> = BTreeSet::new();
    let mut groups: BTreeSet<(String, String)> = BTreeSet::new();
    // Every subscription any rule reaches: a rule without scopes of its own takes VMs found
    // through the other rules' scopes.
    let all_subs: BTreeSet<String> = policy
        .rules
        .iter()
        .flat_map(|r| {
            let t = &r.targets;
            t.subscriptions
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .chain(
                    t.resource_groups
                        .iter()
                        .filter_map(|rg| ResourceId::parse(rg).ok())
                        .chain(t.vms.iter().cloned())
                        .map(|id| id.subscription().to_ascii_lowercase()),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    for rule in &policy.rules {
        let t = &rule.targets;
        let mut rule_subs: BTreeSet<String> = t
            .subscriptions
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        subs.extend(rule_subs.iter().cloned());
        let target_groups = t
            .resource_groups
            .iter()
            .filter_map(|rg| ResourceId::parse(rg).ok())
            .chain(t.vms.iter().cloned())
            .filter_map(|id| {
                Some((
                    id.subscription().to_ascii_lowercase(),
                    id.resource_group()?.to_ascii_lowercase(),
                ))
            });
        for (sub, rg) in target_groups {
            rule_subs.insert(sub.clone());
            groups.insert((sub, rg));
        }
        if rule_subs.is_empty() {
            rule_subs = all_subs.clone();
        }
        let named = rule
            .collection_resource_group
            .iter()
            .chain(rule.copies.iter().filter_map(|c| c.resource_group.as_ref()));
        for rg in named {
            for sub in &rule_subs {
                groups.insert((sub.clone(), rg.to_ascii_lowercase()));
            }
        }
    }
    let mut out: Vec<VmScope> = subs.iter().cloned().map(VmScope::Subscription).collect();
    out.extend(groups.into_iter().filter(|(s, _)| !subs.contains(s)).map(
        |(subscription, resource_group)| VmScope::ResourceGroup {
            subscription,
            resource_group,
        },
    ));
    out
}

/// The VM's region, or an error text naming the missing field.
pub fn vm_location(vm: &VirtualMachine) -> Result<&str, String> {
    vm.location
        .as_deref()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| "the VM has no location (field `location`)".to_string())
}

/// Message id of a create: the timer's id for first tries, distinct per retry and reschedule.
pub fn create_message_id(req: &CreateRequest) -> String {
    names::message_id(
        "create",
        req.vm.as_str(),
        req.tick,
        (req.retry << 16) | req.attempt,
    )
}

/// Message id of a copy: per source point, region, retry and reschedule.
pub fn copy_message_id(req: &CopyRequest) -> String {
    let key = format!("{}>{}", req.source, req.target_region.to_ascii_lowercase());
    names::message_id(
        "copy",
        &key,
        source_tick(&req.source),
        (req.retry << 16) | req.attempt,
    )
}

/// Message id of poll number `attempt` of `target`.
pub fn poll_message_id(target: &ResourceId, tick: OffsetDateTime, attempt: u32) -> String {
    names::message_id("poll", target.as_str(), tick, attempt)
}

/// The tick encoded in a restore point's name (the Unix epoch for names vmrp did not choose).
pub fn source_tick(point: &ResourceId) -> OffsetDateTime {
    point
        .name()
        .and_then(names::parse_restore_point_name)
        .map(|(t, _)| t)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Like [`reschedule_delay`], but a `Retry-After` is spread later (by up to twice the jitter),
/// never cut short: every copy refused by one 429 wave carries the same `Retry-After`, and
/// without the spread they all come back at the same second and meet the limit together again.
/// For copies, which have no cut-off; a create keeps the exact time (its wait may be computed to
/// land before the tick's supersede cut-off).
pub fn spread_reschedule_delay(
    tuning: &Tuning,
    key: &str,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    match retry_after {
        Some(ra) => {
            let spread = poll::jittered(ra.mul_f64(tuning.backoff.jitter), key, attempt, 1.0);
            ra.saturating_add(spread)
        }
        None => reschedule_delay(tuning, key, attempt, None),
    }
}

/// Delay before reschedule number `attempt` of the request keyed `key`: ARM's `Retry-After` when
/// it sent one, else exponential from `reschedule_first`, jittered.
pub fn reschedule_delay(
    tuning: &Tuning,
    key: &str,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra;
    }
    let doublings = attempt.saturating_sub(1).min(20);
    let base = tuning
        .reschedule_first
        .saturating_mul(1u32 << doublings)
        .min(tuning.reschedule_cap);
    poll::jittered(base, key, attempt, tuning.backoff.jitter)
}

/// `now + delay`, saturating at the end of time: delays come from ARM's `Retry-After` and from
/// backoffs over message fields, and an overflow must not panic the handler.
pub fn after(now: OffsetDateTime, delay: Duration) -> OffsetDateTime {
    time::Duration::try_from(delay).map_or(now, |d| now.saturating_add(d))
}

/// Whether a step about to spend `cost` calls of `bucket` in `subscription` may call ARM now,
/// from the budget ARM last reported there ([`pace::decide`]); `key` (the message id) spreads
/// the waits. Logged when it says wait; when it says go, the cost is taken off this process's
/// reading ([`debit`]).
pub fn pace(
    deps: &Deps,
    now: OffsetDateTime,
    subscription: &str,
    bucket: Bucket,
    cost: u32,
    key: &str,
) -> Pace {
    let decision = decide_one(deps, now, subscription, bucket, cost, key);
    if decision == Pace::Go {
        debit(deps, subscription, &[(bucket, cost)]);
    }
    decision
}

/// Whether ARM's last reading of `subscription` leaves room for `cost` calls of `bucket` now
/// (the same rule as [`pace`]); if so, the cost is taken off the reading. Unlike [`pace`] it
/// logs nothing: for optional reads (the coverage signal) that are skipped, not put back.
pub fn spend_if_room(
    deps: &Deps,
    now: OffsetDateTime,
    subscription: &str,
    bucket: Bucket,
    cost: u32,
) -> bool {
    let input = pace_input(deps, now, subscription, bucket, cost);
    let room = pace::decide(&input, subscription) == Pace::Go;
    if room {
        debit(deps, subscription, &[(bucket, cost)]);
    }
    room
}

/// [`pace`]'s decision, without taking the cost off the reading.
fn decide_one(
    deps: &Deps,
    now: OffsetDateTime,
    subscription: &str,
    bucket: Bucket,
    cost: u32,
    key: &str,
) -> Pace {
    let input = pace_input(deps, now, subscription, bucket, cost);
    let decision = pace::decide(&input, key);
    if let Pace::Wait(d) = decision {
        tracing::info!(subscription, bucket = bucket.name(), remaining = ?input.remaining,
            wait_s = d.as_secs(), "ARM budget low: message put back instead of calling ARM");
    }
    decision
}

/// What [`pace::decide`] looks at for `cost` calls of `bucket` in `subscription` now: ARM's
/// last reading there and the tuning.
fn pace_input(
    deps: &Deps,
    now: OffsetDateTime,
    subscription: &str,
    bucket: Bucket,
    cost: u32,
) -> PaceInput {
    let limits = deps.arm.rate_limits_for(subscription);
    PaceInput {
        bucket,
        remaining: bucket.remaining(&limits),
        reported_at: bucket.reported_at(&limits),
        now,
        share: deps.tuning.pacing.share(),
        instances: deps.tuning.pace_instances,
        cost,
    }
}

/// Takes a step's costs off this process's reading of `subscription` once it decided to go
/// (`Arm::debit`): the invocations running beside it then see what it is about to spend.
fn debit(deps: &Deps, subscription: &str, costs: &[(Bucket, u32)]) {
    let of = |b: Bucket| {
        costs
            .iter()
            .filter(|(x, _)| *x == b)
            .map(|(_, n)| *n)
            .sum::<u32>()
    };
    deps.arm.debit(
        subscription,
        of(Bucket::Reads),
        of(Bucket::Writes),
        of(Bucket::Deletes),
    );
}

/// [`pace`] for a step that spends several buckets: the longest wait any of them asks for, or
/// `None` when every bucket has room.
pub fn pace_all(
    deps: &Deps,
    now: OffsetDateTime,
    subscription: &str,
    costs: &[(Bucket, u32)],
    key: &str,
) -> Option<std::time::Duration> {
    let wait = costs
        .iter()
        .filter_map(|&(bucket, cost)| {
            match decide_one(deps, now, subscription, bucket, cost, key) {
                Pace::Wait(d) => Some(d),
                Pace::Go => None,
            }
        })
        .max();
    if wait.is_none() {
        debit(deps, subscription, costs);
    }
    wait
}

/// Sends one message and returns what to put in the outcome.
pub async fn send(
    deps: &Deps,
    message_id: String,
    message: QueueMessage,
    not_before: Option<OffsetDateTime>,
) -> Result<Sent, SendError> {
    let queue = message.queue();
    let outgoing = OutgoingMessage {
        queue,
        message_id: message_id.clone(),
        body: message.encode(),
        not_before,
    };
    let sent = sent(&outgoing);
    deps.scheduler.send(outgoing).await?;
    Ok(sent)
}

/// What the outcome records of a message it sends.
pub fn sent(message: &OutgoingMessage) -> Sent {
    Sent {
        queue: message.queue.name(),
        message_id: message.message_id.clone(),
        not_before: message.not_before,
    }
}

/// How a point ended, for the one report event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Settled,
    Failed,
    GivenUp,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Failed => "failed",
            Self::GivenUp => "given_up",
        }
    }
}

/// The one structured event per settled, failed or given-up point (target `vmrp::report`).
pub fn report(
    ending: Ending,
    vm: &ResourceId,
    point: &ResourceId,
    region: &str,
    role: Role,
    duration: Duration,
    reason: &str,
) {
    let role = match role {
        Role::Local => "local",
        Role::Copy => "copy",
    };
    let outcome = ending.as_str();
    let duration_s = duration.as_secs();
    match ending {
        Ending::Settled => tracing::info!(
            target: "vmrp::report", outcome, vm = %vm, point = %point, region, role, duration_s, reason
        ),
        Ending::Failed | Ending::GivenUp => tracing::error!(
            target: "vmrp::report", outcome, vm = %vm, point = %point, region, role, duration_s, reason
        ),
    }
}

/// Logs a permanent ARM failure at error level with its code and message.
pub fn log_permanent(what: &str, subject: &ResourceId, e: &ArmError) {
    tracing::error!(
        subject = %subject,
        operation = %e.operation,
        status = e.status,
        code = %e.code,
        message = %e.message,
        request_id = e.request_id.as_deref().unwrap_or(""),
        "{what}: permanent ARM error, not retried"
    );
}

/// The rule a message names, else the rule that selects the VM. A named rule must still select
/// the VM (scopes, required tags, `excludeTags` opt-outs): naming a rule chooses among the rules
/// that apply, it never widens one. Without the VM (`vm` = `None`) only the named rule's
/// existence is checked; callers that know the VM id check its scope with [`named_rule_for_id`].
pub fn rule_of<'p>(
    deps: &'p Deps,
    named: Option<&str>,
    vm: Option<&VirtualMachine>,
) -> Result<&'p Rule, String> {
    match named {
        Some(name) => {
            let rule = deps.policy.rule_named(name).ok_or_else(|| {
                format!("rule {name:?} named by the message is not in the policy")
            })?;
            match vm.and_then(|vm| rule.targets.refusal(vm)) {
                Some(why) => Err(format!(
                    "rule {name:?} named by the message does not select this VM: {why}"
                )),
                None => Ok(rule),
            }
        }
        None => vm
            .and_then(|vm| deps.policy.rule_for(vm))
            .ok_or_else(|| "no policy rule selects this VM".to_string()),
    }
}

/// The rule a message names, for a handler that knows the VM's id but not the VM itself (a
/// copy, a poll): the rule must exist and its scopes include the VM. Tags need the VM, which
/// the create that started the chain checked.
pub fn named_rule_for_id<'p>(
    deps: &'p Deps,
    name: &str,
    vm: &ResourceId,
) -> Result<&'p Rule, String> {
    let rule = deps
        .policy
        .rule_named(name)
        .ok_or_else(|| format!("rule {name:?} named by the message is not in the policy"))?;
    if rule.targets.in_scope(vm) {
        Ok(rule)
    } else {
        Err(format!(
            "rule {name:?} named by the message does not select this VM: the VM lies outside the rule's scopes"
        ))
    }
}

/// A failed local point gets the VM's region from the point's `sourceMetadata.location` when
/// present (no extra GET).
pub fn point_region(point: Option<&RestorePoint>) -> Option<String> {
    point?
        .properties
        .as_ref()?
        .source_metadata
        .as_ref()?
        .get("location")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod delay_tests;
#[cfg(test)]
mod tuning_settings_tests;
