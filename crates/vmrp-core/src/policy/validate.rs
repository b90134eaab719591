//! Validation: everything Azure would reject (or that would silently not do what the policy
//! says), found at load time with a message naming the rule, the field path and the reason.
//! `Rule::check_vm` does the checks that need one VM and its disks; handlers run it before
//! creating a point and log (or report) the same kind of problem.
//!
//! The rules and their Azure sources are listed in `docs/policy.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::platform;
use super::regions::{known_region, same_region};
use super::resolve::{describe_disk, disk_sku, CRASH_UNSUPPORTED_SKUS};
use super::{DiskInfo, InstantAccess, Policy, Retention, Rule};
use crate::azure::models::{ConsistencyMode, VirtualMachine};
use crate::azure::ResourceId;
use crate::schedule::Schedule;

/// Azure's limit of restore points per VM, across all collections and resource groups.
pub const MAX_POINTS_PER_VM: u32 = 500;
/// Points per collection beyond what retention keeps: one being created (or replicating) and the
/// latest failure that retention keeps as evidence.
pub const IN_FLIGHT_PER_COLLECTION: u32 = 2;
/// Azure's supported frequency: application-consistent points at most every 3 h.
pub const MIN_SPACING_APP: Duration = Duration::hours(3);
/// Crash-consistent points at most every hour.
pub const MIN_SPACING_CRASH: Duration = Duration::hours(1);
/// Disk SKUs Azure knows (`storageAccountType`), for typo checks of `excludeDisks.skus`.
pub const DISK_SKUS: &[&str] = &[
    "Standard_LRS",
    "Premium_LRS",
    "StandardSSD_LRS",
    "UltraSSD_LRS",
    "Premium_ZRS",
    "StandardSSD_ZRS",
    "PremiumV2_LRS",
];
/// The longest `deadlines.localMinutes`: 7 days. A local point that has not settled by then
/// will not; a larger value only keeps a dead poll chain alive (and far values overflow).
pub const MAX_LOCAL_DEADLINE_MINUTES: u32 = 7 * 24 * 60;
/// The longest `deadlines.copyMinutes`: 30 days (the default is 14).
pub const MAX_COPY_DEADLINE_MINUTES: u32 = 30 * 24 * 60;
/// The most retries after `Failed` (`deadlines.maxRetries`); each is a new point.
pub const MAX_RETRIES: u32 = 10;
/// The longest `orphans.expireAfterDays`: 10 years; omit the field to keep orphans forever.
pub const MAX_ORPHAN_DAYS: u32 = 3650;
/// Spacing is measured over a year from a fixed instant, so results never depend on the clock.
const SPACING_FROM: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
/// Timer ticks examined when combining a rule schedule with the timer (about 69 days of
/// 5-minute ticks), bounding validation time.
const MAX_TICKS: usize = 20_000;

/// One thing wrong with the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    /// The rule's name; `None` for policy-wide fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule's position in `rules` (names may be empty or duplicated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field path inside the rule (or the policy), e.g. `retention.keepLast`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    /// `rule "prod": retention.keepLast: …`, `rules[2]: name: …`, `rules: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rule, self.index) {
            (Some(name), _) if !name.trim().is_empty() => write!(f, "rule {name:?}: ")?,
            (_, Some(i)) => write!(f, "rules[{i}]: ")?,
            _ => {}
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects the problems of one rule (or of the policy when `rule` is `None`).
struct Problems<'a> {
    rule: Option<(usize, &'a str)>,
    out: Vec<PolicyProblem>,
}

impl<'a> Problems<'a> {
    fn for_rule(index: usize, name: &'a str) -> Self {
        Self {
            rule: Some((index, name)),
            out: Vec::new(),
        }
    }
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(PolicyProblem {
            rule: self.rule.map(|(_, n)| n.to_string()),
            index: self.rule.map(|(i, _)| i),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// `3 h`, `1 h 30 min`, `5 min`, `30 s`.
fn human(d: Duration) -> String {
    let secs = d.whole_seconds();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} s"));
    }
    parts.join(" ")
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// Azure resource group names: 1–90 letters, digits, `_ - . ( )`, not ending in a period.
pub(super) fn resource_group_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.chars().count() > 90 {
        return Some(format!(
            "{name:?} is not a resource group name: 1 to 90 characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "_-.()".contains(*c)))
    {
        return Some(format!(
            "{name:?} is not a resource group name: {c:?} is not allowed (letters, digits, _ - . ( ) only)"
        ));
    }
    if name.ends_with('.') {
        return Some(format!(
            "{name:?} is not a resource group name: it must not end with a period"
        ));
    }
    None
}

/// A `/subscriptions/{guid}/resourceGroups/{name}` scope id, or why not.
pub(super) fn resource_group_id_problem(text: &str) -> Option<String> {
    let id = match ResourceId::parse(text) {
        Ok(id) => id,
        Err(e) => return Some(e.to_string()),
    };
    if id.resource_group().is_none() || id.namespace().is_some() {
        return Some(format!(
            "{text:?} is not a resource group id; expected /subscriptions/{{subscriptionId}}/resourceGroups/{{name}}"
        ));
    }
    if !is_guid(id.subscription()) {
        return Some(format!(
            "{text:?}: subscription {:?} is not a GUID",
            id.subscription()
        ));
    }
    resource_group_name_problem(id.resource_group().unwrap_or_default())
}

impl Policy {
    /// Checks everything that does not depend on the timer schedule. Rules without a schedule of
    /// their own are spacing-checked only by [`Policy::validate_with_timer`].
    pub fn validate(&self) -> Result<(), Vec<PolicyProblem>> {
        into_result(self.problems(None))
    }

    /// Checks everything, with rules without a schedule running at each tick of `timer_schedule`.
    pub fn validate_with_timer(&self, timer_schedule: &str) -> Result<(), Vec<PolicyProblem>> {
        into_result(self.problems(Some(timer_schedule)))
    }

    /// Every problem, in policy order.
    pub fn problems(&self, timer_schedule: Option<&str>) -> Vec<PolicyProblem> {
        let mut policy = Problems {
            rule: None,
            out: Vec::new(),
        };
        if self.rules.is_empty() {
            policy.push("rules", "empty: the policy selects no VM");
        }
        if let Some(days) = self
            .orphans
            .expire_after_days
            .filter(|d| *d > MAX_ORPHAN_DAYS)
        {
            policy.push(
                "orphans.expireAfterDays",
                format!("{days} is out of range: at most {MAX_ORPHAN_DAYS} (10 years); omit the field to keep orphans forever"),
            );
        }
        if let Some(d) = &self.drills {
            for (field, message) in d.problems() {
                policy.push(field, message);
            }
        }
        let timer = match timer_schedule.map(Schedule::parse) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                policy.push("timer schedule (VMRP_SCHEDULE)", e.to_string());
                None
            }
            None => None,
        };
        let mut out = policy.out;

        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let mut p = Problems::for_rule(index, &rule.name);
            if rule.name.trim().is_empty() {
                p.push(
                    "name",
                    "must not be empty (it names the rule in logs, messages and collection tags)",
                );
            } else if let Some(first) = seen.insert(rule.name.to_lowercase(), index) {
                p.push(
                    "name",
                    format!(
                        "duplicate: rules[{first}] has the same name (names are case-insensitive)"
                    ),
                );
            }
            if rule.targets == Default::default() && index + 1 < self.rules.len() {
                p.push(
                    "targets",
                    format!(
                        "selects every VM, so the {} rule(s) after it never apply (the first matching rule wins)",
                        self.rules.len() - index - 1
                    ),
                );
            }
            check_targets(rule, &mut p);
            check_mode_and_schedule(rule, timer.as_ref(), &mut p);
            check_disks(rule, &mut p);
            if rule.skip_backup_protected && rule.targets.subscriptions.is_empty() {
                p.push(
                    "skipBackupProtected",
                    "needs targets.subscriptions: Azure Backup keeps its collections in AzureBackupRG_* resource groups, which resource-group and VM scopes do not list, so vmrp could not tell which VMs Backup protects",
                );
            }
            check_retention(&rule.retention, "retention", &mut p);
            check_copies(rule, &mut p);
            check_point_budget(rule, &mut p);
            check_resource_group_name(
                rule.collection_resource_group.as_deref(),
                "collectionResourceGroup",
                &mut p,
            );
            check_deadline_ranges(rule, &mut p);
            check_instant_access(rule, &mut p);
            if rule.deadlines.local_minutes == 0 {
                p.push(
                    "deadlines.localMinutes",
                    "0 would report every point as failed at once; use at least 1 (default 120)",
                );
            }
            if rule.deadlines.copy_minutes == 0 {
                p.push("deadlines.copyMinutes", "0 would report every copy as failed at once; use at least 1 (default 20160, 14 days)");
            }
            out.extend(p.out);
        }
        out
    }
}

fn into_result(problems: Vec<PolicyProblem>) -> Result<(), Vec<PolicyProblem>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_targets(rule: &Rule, p: &mut Problems) {
    let t = &rule.targets;
    for (i, sub) in t.subscriptions.iter().enumerate() {
        if !is_guid(sub) {
            p.push(
                format!("targets.subscriptions[{i}]"),
                format!("{sub:?} is not a subscription id (a GUID)"),
            );
        }
    }
    for (i, rg) in t.resource_groups.iter().enumerate() {
        if let Some(problem) = resource_group_id_problem(rg) {
            p.push(format!("targets.resourceGroups[{i}]"), problem);
        }
    }
    for (i, vm) in t.vms.iter().enumerate() {
        if !vm.is_type("Microsoft.Compute/virtualMachines") || vm.resource_group().is_none() {
            p.push(
                format!("targets.vms[{i}]"),
                format!(
                    "{vm} is not a VM id; expected /subscriptions/{{id}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/virtualMachines/{{name}}"
                ),
            );
        } else if !is_guid(vm.subscription()) {
            p.push(
                format!("targets.vms[{i}]"),
                format!("{vm}: subscription {:?} is not a GUID", vm.subscription()),
            );
        }
    }
    for (field, tags) in [
        ("targets.tags", &t.tags),
        ("targets.excludeTags", &t.exclude_tags),
    ] {
        if tags.keys().any(|k| k.trim().is_empty()) {
            p.push(field, "tag names must not be empty");
        }
    }
}

/// Azure's shortest supported interval between two points of a VM in `mode`.
pub fn spacing_for(mode: &ConsistencyMode) -> Duration {
    match mode {
        ConsistencyMode::CrashConsistent => MIN_SPACING_CRASH,
        _ => MIN_SPACING_APP,
    }
}

fn mode_phrase(mode: &ConsistencyMode) -> &'static str {
    match mode {
        ConsistencyMode::CrashConsistent => "crash-consistent",
        _ => "application-consistent",
    }
}

fn check_mode_and_schedule(rule: &Rule, timer: Option<&Schedule>, p: &mut Problems) {
    match &rule.consistency {
        ConsistencyMode::ApplicationConsistent | ConsistencyMode::CrashConsistent => {}
        other => p.push(
            "consistency",
            format!(
                "{:?} cannot be requested: use CrashConsistent or ApplicationConsistent (Azure takes CrashConsistent, or no mode for ApplicationConsistent)",
                other.as_str()
            ),
        ),
    }
    if rule
        .consistency_tag
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        p.push(
            "consistencyTag",
            "must not be empty; omit it to use `consistency` for every VM",
        );
    }
    // With a consistency tag, any VM may ask for application consistency: the strictest spacing.
    let strictest = if rule.consistency_tag.is_some() {
        ConsistencyMode::ApplicationConsistent
    } else {
        rule.consistency.clone()
    };
    let why_mode =
        if rule.consistency_tag.is_some() && rule.consistency == ConsistencyMode::CrashConsistent {
            " (consistencyTag lets a VM choose ApplicationConsistent)"
        } else {
            ""
        };
    let required = spacing_for(&strictest);
    let limit = format!(
        "Azure supports {} restore points at most every {}{why_mode}",
        mode_phrase(&strictest),
        human(required)
    );

    let own = match rule.schedule.as_deref().map(Schedule::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            p.push("schedule", e.to_string());
            return;
        }
    };
    if let Some(own) = own
        .as_ref()
        .filter(|s| s.next_after(SPACING_FROM).is_none())
    {
        p.push("schedule", format!("{:?} never fires", own.as_str()));
        return;
    }
    match (own, timer) {
        (Some(own), None) => {
            if let Some(gap) = own.min_interval(SPACING_FROM).filter(|g| *g < required) {
                p.push(
                    "schedule",
                    format!("{:?} puts points {} apart; {limit}", own.as_str(), human(gap)),
                );
            }
        }
        (None, Some(timer)) => {
            if let Some(gap) = timer.min_interval(SPACING_FROM).filter(|g| *g < required) {
                p.push(
                    "schedule",
                    format!(
                        "not set, so points follow the timer {:?}, {} apart; {limit}; set a sparser schedule for this rule",
                        timer.as_str(),
                        human(gap)
                    ),
                );
            }
        }
        (Some(own), Some(timer)) => match effective_gap(&own, timer) {
            EffectiveGap::Never => p.push(
                "schedule",
                format!(
                    "{:?} has no occurrence between two ticks of the timer {:?} within a year: the rule would create no point",
                    own.as_str(),
                    timer.as_str()
                ),
            ),
            EffectiveGap::Min(gap) if gap < required => p.push(
                "schedule",
                format!(
                    "{:?} run at the ticks of the timer {:?} puts points {} apart; {limit}",
                    own.as_str(),
                    timer.as_str(),
                    human(gap)
                ),
            ),
            _ => {}
        },
        (None, None) => {}
    }
}

enum EffectiveGap {
    /// No tick within the examined horizon is due.
    Never,
    /// At most one due tick seen, or the smallest gap between due ticks.
    Unknown,
    Min(Duration),
}

/// The smallest gap between timer ticks at which the rule is due ([`super::rule_due`]).
fn effective_gap(rule: &Schedule, timer: &Schedule) -> EffectiveGap {
    let until = SPACING_FROM + Duration::days(366);
    let Some(mut prev) = timer.next_after(SPACING_FROM) else {
        return EffectiveGap::Never;
    };
    let mut last_due: Option<OffsetDateTime> = None;
    let mut min: Option<Duration> = None;
    let mut covered_year = false;
    for _ in 0..MAX_TICKS {
        let Some(tick) = timer.next_after(prev) else {
            covered_year = true;
            break;
        };
        if tick > until {
            covered_year = true;
            break;
        }
        if rule.next_after(prev).is_some_and(|o| o <= tick) {
            if let Some(last) = last_due {
                let gap = tick - last;
                min = Some(min.map_or(gap, |m: Duration| m.min(gap)));
            }
            last_due = Some(tick);
        }
        prev = tick;
    }
    match (last_due, min) {
        (None, _) if covered_year => EffectiveGap::Never,
        (_, Some(gap)) => EffectiveGap::Min(gap),
        _ => EffectiveGap::Unknown,
    }
}

/// `instantAccess`: the duration within Azure's 60-300 minutes, and only on rules whose points
/// can hold a Premium SSD v2 / Ultra disk, i.e. application-consistent ones (crash-consistent
/// points do not support those disks; support matrix, learn.microsoft.com/azure/
/// virtual-machines/concepts-restore-points). A consistency tag that may pick crash
/// consistency for some VMs is a `policy check` warning, not a problem.
fn check_instant_access(rule: &Rule, p: &mut Problems) {
    let Some(ia) = &rule.instant_access else {
        return;
    };
    if let Some(m) = ia
        .duration_minutes
        .filter(|m| !(InstantAccess::MIN_MINUTES..=InstantAccess::MAX_MINUTES).contains(m))
    {
        p.push(
            "instantAccess.durationMinutes",
            format!(
                "{m} is out of range: Azure keeps instant access between {} and {} minutes (omit it for {})",
                InstantAccess::MIN_MINUTES,
                InstantAccess::MAX_MINUTES,
                InstantAccess::MAX_MINUTES
            ),
        );
    }
    if rule.consistency == ConsistencyMode::CrashConsistent && rule.consistency_tag.is_none() {
        p.push(
            "instantAccess",
            "applies to application-consistent points only: crash-consistent points do not support the Premium SSD v2 / Ultra disks instant access is for; remove it or use ApplicationConsistent",
        );
    }
}

fn check_disks(rule: &Rule, p: &mut Problems) {
    let ex = &rule.exclude_disks;
    for (i, lun) in ex.luns.iter().enumerate() {
        if !(0..=63).contains(lun) {
            p.push(
                format!("excludeDisks.luns[{i}]"),
                format!("{lun} is not a LUN (0 to 63)"),
            );
        }
    }
    for (i, name) in ex.names.iter().enumerate() {
        if name.trim().is_empty() {
            p.push(format!("excludeDisks.names[{i}]"), "must not be empty");
        }
    }
    if ex.tags.keys().any(|k| k.trim().is_empty()) {
        p.push("excludeDisks.tags", "tag names must not be empty");
    }
    for (i, sku) in ex.skus.iter().enumerate() {
        if !DISK_SKUS.iter().any(|s| s.eq_ignore_ascii_case(sku)) {
            p.push(
                format!("excludeDisks.skus[{i}]"),
                format!(
                    "{sku:?} is not a disk SKU; expected one of {}",
                    DISK_SKUS.join(", ")
                ),
            );
        }
    }
}

/// Upper bounds of the deadlines: values `policy check` would otherwise accept but no point
/// needs, and whose far end overflows a date.
fn check_deadline_ranges(rule: &Rule, p: &mut Problems) {
    let d = &rule.deadlines;
    for (field, value, max, what) in [
        (
            "deadlines.localMinutes",
            d.local_minutes,
            MAX_LOCAL_DEADLINE_MINUTES,
            "7 days",
        ),
        (
            "deadlines.copyMinutes",
            d.copy_minutes,
            MAX_COPY_DEADLINE_MINUTES,
            "30 days",
        ),
        (
            "deadlines.maxRetries",
            d.max_retries,
            MAX_RETRIES,
            "each retry is a new point",
        ),
    ] {
        if value > max {
            p.push(
                field,
                format!("{value} is out of range: at most {max} ({what})"),
            );
        }
    }
}

fn check_retention(r: &Retention, prefix: &str, p: &mut Problems) {
    let tiers = [
        ("daily", r.daily),
        ("weekly", r.weekly),
        ("monthly", r.monthly),
    ];
    // Each count on its own: Azure keeps at most 500 points per VM, so a larger one can never
    // be met (and sums of values near u32::MAX would wrap).
    for (name, value) in [
        ("keepLast", Some(r.keep_last)),
        ("floor", Some(r.floor)),
        ("daily", r.daily),
        ("weekly", r.weekly),
        ("monthly", r.monthly),
    ] {
        if let Some(v) = value.filter(|v| *v > MAX_POINTS_PER_VM) {
            p.push(
                format!("{prefix}.{name}"),
                format!("{v} is out of range: at most {MAX_POINTS_PER_VM}, Azure's limit of restore points per VM"),
            );
        }
    }
    for (name, value) in tiers {
        if value == Some(0) {
            p.push(
                format!("{prefix}.{name}"),
                "0 keeps nothing; omit the field or set it to at least 1",
            );
        }
    }
    let tier_total: u32 = tiers
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0, u32::saturating_add);
    if r.keep_last == 0 && tier_total == 0 {
        p.push(
            format!("{prefix}.keepLast"),
            "0 with no daily/weekly/monthly tier keeps no point but the baseline; set keepLast to at least 1 or add a tier",
        );
    }
    if r.keep_last > 0 && r.floor > r.keep_last {
        p.push(
            format!("{prefix}.floor"),
            format!(
                "{} exceeds keepLast {}: the floor keeps the newest {} settled points, so keepLast would have no effect; raise keepLast or lower the floor",
                r.floor, r.keep_last, r.floor
            ),
        );
    } else if r.keep_last == 0 && tier_total > 0 && r.floor > tier_total {
        p.push(
            format!("{prefix}.floor"),
            format!(
                "{} exceeds the {tier_total} points the tiers keep: the floor would decide retention; lower it or use keepLast",
                r.floor
            ),
        );
    }
}

fn check_copies(rule: &Rule, p: &mut Problems) {
    let mut seen: Vec<(usize, &str)> = Vec::new();
    for (i, copy) in rule.copies.iter().enumerate() {
        let field = format!("copies[{i}].region");
        match known_region(&copy.region) {
            Err(e) => p.push(&field, e.to_string()),
            Ok(region) => {
                if let Some((first, _)) = seen.iter().find(|(_, r)| same_region(r, region)) {
                    p.push(
                        &field,
                        format!("{region} is already a copy target in copies[{first}]; one copy collection per region"),
                    );
                } else {
                    seen.push((i, region));
                }
            }
        }
        check_resource_group_name(
            copy.resource_group.as_deref(),
            &format!("copies[{i}].resourceGroup"),
            p,
        );
        if let Some(r) = &copy.retention {
            check_retention(r, &format!("copies[{i}].retention"), p);
        }
        check_encryption_sets(
            &copy.encryption_sets,
            &format!("copies[{i}].encryptionSets"),
            p,
        );
    }
}

/// Both sides of each mapping are disk encryption set ids, and no source set is mapped twice
/// (keys differing only in case would make the lookup ambiguous).
fn check_encryption_sets(map: &BTreeMap<String, String>, field: &str, p: &mut Problems) {
    let is_set = |s: &str| {
        ResourceId::parse(s.trim())
            .is_ok_and(|id| id.is_type("Microsoft.Compute/diskEncryptionSets"))
    };
    let mut seen: Vec<String> = Vec::new();
    for (source, target) in map {
        if !is_set(source) {
            p.push(
                field,
                format!("key {source:?} is not a disk encryption set id (/subscriptions/…/providers/Microsoft.Compute/diskEncryptionSets/NAME)"),
            );
        }
        if !is_set(target) {
            p.push(
                format!("{field}[{source:?}]"),
                format!("{target:?} is not a disk encryption set id (/subscriptions/…/providers/Microsoft.Compute/diskEncryptionSets/NAME)"),
            );
        }
        let norm = source.trim().trim_start_matches('/').to_ascii_lowercase();
        if seen.contains(&norm) {
            p.push(
                field,
                format!("{source} is mapped twice (ids compare case-insensitively)"),
            );
        }
        seen.push(norm);
    }
}

fn check_resource_group_name(name: Option<&str>, field: &str, p: &mut Problems) {
    if let Some(problem) = name.and_then(resource_group_name_problem) {
        p.push(field, problem);
    }
}

impl Rule {
    /// The most points vmrp keeps of one VM under this rule at once, local plus every copy
    /// region (as [`check_point_budget`] counts them), saturating.
    pub fn max_points_per_vm(&self) -> u32 {
        let per = |r: &Retention| r.max_settled().saturating_add(IN_FLIGHT_PER_COLLECTION);
        self.copies.iter().fold(per(&self.retention), |sum, c| {
            sum.saturating_add(per(c.retention.as_ref().unwrap_or(&self.retention)))
        })
    }
}

/// The most points one VM of this rule can have at once, local plus every copy region.
fn check_point_budget(rule: &Rule, p: &mut Problems) {
    // Saturating: counts come from the policy file, and a wrapped sum would pass the check.
    let local = rule
        .retention
        .max_settled()
        .saturating_add(IN_FLIGHT_PER_COLLECTION);
    let copies: Vec<(String, u32)> = rule
        .copies
        .iter()
        .map(|c| {
            let r = c.retention.as_ref().unwrap_or(&rule.retention);
            (
                c.region.clone(),
                r.max_settled().saturating_add(IN_FLIGHT_PER_COLLECTION),
            )
        })
        .collect();
    let total = copies
        .iter()
        .fold(local, |sum, (_, n)| sum.saturating_add(*n));
    if total > MAX_POINTS_PER_VM {
        let mut breakdown = format!("local {local}");
        for (region, n) in &copies {
            breakdown.push_str(&format!(" + {region} {n}"));
        }
        let field = if local > MAX_POINTS_PER_VM {
            "retention"
        } else {
            "copies"
        };
        p.push(
            field,
            format!(
                "up to {total} restore points per VM ({breakdown}; each collection counts keepLast (or floor) + tiers + 1 baseline + {IN_FLIGHT_PER_COLLECTION} in flight) can exceed Azure's limit of {MAX_POINTS_PER_VM} restore points per VM across all collections, after which creation fails"
            ),
        );
    }
}

impl PolicyProblem {
    /// Whether this per-VM problem ([`Rule::check_vm`]) is one Azure would refuse the create
    /// for: the create is not sent, and the VM is reported (and skipped by the timer's plan)
    /// with this reason. Other per-VM problems are warnings.
    pub fn refuses_create(&self) -> bool {
        self.field == FIELD_CONSISTENCY || self.field == FIELD_UNSUPPORTED
    }
}

/// [`Rule::check_vm`]'s field for what crash-consistent points do not support.
pub const FIELD_CONSISTENCY: &str = "consistency";
/// [`Rule::check_vm`]'s field for a VM restore points do not support at all.
pub const FIELD_UNSUPPORTED: &str = "unsupported";
/// [`Rule::check_vm`]'s field for a crash-consistent point Azure creates but may not make
/// consistent across disks (a warning, not a refusal).
pub const FIELD_CONSISTENCY_CAVEAT: &str = "consistencyCaveat";

impl Rule {
    /// The checks that need the VM and its disks (run by the timer's plan, `vmrp plan` and the
    /// create handler; sources in src/policy/platform.rs and docs/policy.md): a confidential VM
    /// is not supported at all; crash-consistent points cannot include Ultra / Premium SSD v2 /
    /// write-accelerated disks, nor be taken of a size without Premium storage; a copy cannot
    /// target the VM's own region. Warnings (`consistencyCaveat`): crash-consistent points of a
    /// VM with ReadWrite-cached disks, or of an Intel v6+ / AMD v7+ size with more than one
    /// data disk, may not be consistent across disks. Empty when the VM can be served as the
    /// policy says.
    pub fn check_vm(&self, vm: &VirtualMachine, disks: &[DiskInfo]) -> Vec<PolicyProblem> {
        let mut p = Problems {
            rule: Some((0, &self.name)),
            out: Vec::new(),
        };
        let vm_name = vm.name.as_deref().unwrap_or("(unnamed)");
        if platform::is_confidential(vm.security_type()) {
            p.push(
                FIELD_UNSUPPORTED,
                format!(
                    "VM {vm_name} is a confidential VM (securityType ConfidentialVM): restore points do not support confidential VMs, so it gets no points and no copies; leave it out of the rule's targets"
                ),
            );
        }
        let (mode, _) = self.consistency_for(vm);
        if mode == ConsistencyMode::CrashConsistent {
            let excluded: Vec<ResourceId> = self
                .excluded_disks(vm, disks)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let included: Vec<_> = vm
                .disks()
                .into_iter()
                .filter(|d| {
                    !d.managed_disk_id
                        .as_ref()
                        .is_some_and(|id| excluded.contains(id))
                })
                .collect();
            if let Some(size) = vm
                .vm_size()
                .filter(|s| platform::premium_storage_capable(s) == Some(false))
            {
                p.push(
                    FIELD_CONSISTENCY,
                    format!(
                        "VM {vm_name}: crash-consistent restore points need a VM size that supports Premium storage, and {size} does not; use ApplicationConsistent for it (consistencyTag) or resize it"
                    ),
                );
            }
            for disk in &included {
                let info = disk
                    .managed_disk_id
                    .as_ref()
                    .and_then(|id| disks.iter().find(|i| &i.id == id));
                if let Some(sku) = disk_sku(disk, info).filter(|s| {
                    CRASH_UNSUPPORTED_SKUS
                        .iter()
                        .any(|u| u.eq_ignore_ascii_case(s))
                }) {
                    p.push(
                        FIELD_CONSISTENCY,
                        format!(
                            "VM {vm_name}: crash-consistent restore points do not support {sku} disks, and {} is one; exclude it (excludeDisks.skus, names or luns) or use ApplicationConsistent",
                            describe_disk(disk)
                        ),
                    );
                }
                if disk.write_accelerator {
                    p.push(
                        FIELD_CONSISTENCY,
                        format!(
                            "VM {vm_name}: crash-consistent restore points do not support write-accelerated disks, and {} is one; exclude it (excludeDisks.names or luns) or use ApplicationConsistent",
                            describe_disk(disk)
                        ),
                    );
                }
            }
            let read_write: Vec<String> = included
                .iter()
                .filter(|d| {
                    d.caching
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case("ReadWrite"))
                })
                .map(describe_disk)
                .collect();
            if !read_write.is_empty() {
                p.push(
                    FIELD_CONSISTENCY_CAVEAT,
                    format!(
                        "VM {vm_name}: crash consistency cannot be guaranteed for disks with ReadWrite host caching ({}); Azure creates the point, but use ApplicationConsistent where consistency across disks matters",
                        read_write.join(", ")
                    ),
                );
            }
            let data_disks = included.iter().filter(|d| d.lun.is_some()).count();
            if let Some(size) = vm
                .vm_size()
                .filter(|s| data_disks > 1 && platform::boost_multi_disk_caveat(s))
            {
                p.push(
                    FIELD_CONSISTENCY_CAVEAT,
                    format!(
                        "VM {vm_name}: crash-consistent points of Intel v6+ / AMD v7+ sizes ({size}) with more than one data disk ({data_disks} included) might not be consistent across disks; Azure creates the point, but use ApplicationConsistent where that matters"
                    ),
                );
            }
        }
        if self.instant_access.is_some() {
            let excluded: Vec<ResourceId> = self
                .excluded_disks(vm, disks)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            if self
                .instant_access_for(vm, disks, &excluded, &mode)
                .is_none()
            {
                p.push(
                    "instantAccess",
                    format!(
                        "VM {vm_name}: instant access does not apply (it needs an application-consistent point holding a Premium SSD v2 or Ultra disk); its points are created without it"
                    ),
                );
            }
        }
        if let Some(location) = vm.location.as_deref() {
            for (i, copy) in self.copies.iter().enumerate() {
                if same_region(&copy.region, location) {
                    p.push(
                        format!("copies[{i}].region"),
                        format!(
                            "VM {vm_name} is in {}: a cross-region copy needs another region",
                            copy.region
                        ),
                    );
                }
            }
        }
        // Per-VM problems name the rule, not its position (the caller has no index).
        for problem in &mut p.out {
            problem.index = None;
        }
        p.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    /// A valid one-rule policy as JSON, with `rule_json` merged into the rule.
    fn policy_with(rule_fields: &str) -> Policy {
        let extra = if rule_fields.is_empty() {
            String::new()
        } else {
            format!(",{rule_fields}")
        };
        let text = format!(
            r#"{{"rules":[{{"name":"prod","targets":{{}},"retention":{{"keepLast":5}}{extra}}}]}}"#
        );
        // Through `Value`, where a repeated key replaces the earlier one, so `rule_fields` can
        // override `name`, `targets` or `retention`.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut policy: Policy =
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}: {text}"));
        policy.normalize();
        policy
    }

    fn problems_of(p: &Policy, timer: Option<&str>) -> Vec<String> {
        p.problems(timer).iter().map(ToString::to_string).collect()
    }

    /// Values `policy check` accepted that then wrapped or panicked: keepLast near u32::MAX
    /// passed the 500-point check by overflow ("up to 1 points per VM"), a far deadline made
    /// CreateRestorePoint panic, a far orphan expiry made every timer run panic.
    #[test]
    fn out_of_range_numbers_are_refused_naming_the_field() {
        let max = u32::MAX;
        for (fields, want) in [
            (
                format!(r#""retention":{{"keepLast":{}}}"#, max - 2),
                "rule \"prod\": retention.keepLast: 4294967293 is out of range: at most 500",
            ),
            (
                format!(r#""retention":{{"keepLast":3,"daily":{max}}}"#),
                "rule \"prod\": retention.daily: 4294967295 is out of range: at most 500",
            ),
            (
                format!(r#""copies":[{{"region":"westus2","retention":{{"keepLast":{max}}}}}]"#),
                "copies[0].retention.keepLast: 4294967295 is out of range",
            ),
            (
                format!(r#""deadlines":{{"localMinutes":{max}}}"#),
                "deadlines.localMinutes: 4294967295 is out of range: at most 10080",
            ),
            (
                format!(r#""deadlines":{{"copyMinutes":{max}}}"#),
                "deadlines.copyMinutes: 4294967295 is out of range: at most 43200",
            ),
            (
                format!(r#""deadlines":{{"maxRetries":{max}}}"#),
                "deadlines.maxRetries: 4294967295 is out of range: at most 10",
            ),
        ] {
            let problems = problems_of(&policy_with(&fields), None);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{fields}: {problems:?}"
            );
        }
        // No overflow in the point budget either: the sum saturates and is reported.
        let problems = problems_of(
            &policy_with(&format!(
                r#""retention":{{"keepLast":{max},"floor":{max}}}"#
            )),
            None,
        );
        assert!(
            problems.iter().any(|p| p.contains("restore points per VM")),
            "{problems:?}"
        );
        let mut p = policy_with("");
        p.orphans.expire_after_days = Some(max);
        assert_eq!(
            problems_of(&p, None),
            vec!["orphans.expireAfterDays: 4294967295 is out of range: at most 3650 (10 years); omit the field to keep orphans forever"]
        );
        p.orphans.expire_after_days = Some(MAX_ORPHAN_DAYS);
        p.rules[0].deadlines.local_minutes = MAX_LOCAL_DEADLINE_MINUTES;
        p.rules[0].deadlines.copy_minutes = MAX_COPY_DEADLINE_MINUTES;
        p.rules[0].deadlines.max_retries = MAX_RETRIES;
        p.rules[0].retention.keep_last = 400;
        p.rules[0].retention.floor = 400;
        assert!(
            problems_of(&p, None).is_empty(),
            "{:?}",
            problems_of(&p, None)
        );
    }

    #[test]
    fn instant_access_duration_and_consistency_are_checked() {
        let cases = [
            (r#""instantAccess":{}"#, vec![]),
            (r#""instantAccess":{"durationMinutes":60}"#, vec![]),
            (r#""instantAccess":{"durationMinutes":300}"#, vec![]),
            (
                r#""instantAccess":{"durationMinutes":59}"#,
                vec!["instantAccess.durationMinutes"],
            ),
            (
                r#""instantAccess":{"durationMinutes":301}"#,
                vec!["instantAccess.durationMinutes"],
            ),
            (
                r#""consistency":"CrashConsistent","instantAccess":{}"#,
                vec!["instantAccess"],
            ),
            // A tag may pick application consistency for some VMs: a warning, not a problem.
            (
                r#""consistency":"CrashConsistent","consistencyTag":"rp-mode","instantAccess":{}"#,
                vec![],
            ),
        ];
        for (fields, want) in cases {
            let got: Vec<String> = policy_with(fields)
                .problems(None)
                .into_iter()
                .map(|p| p.field)
                .collect();
            assert_eq!(got, want, "{fields}");
        }
        let bad: Result<Policy, _> = serde_json::from_str(
            r#"{"rules":[{"name":"p","targets":{},"retention":{"keepLast":1},"instantAccess":{"minutes":5}}]}"#,
        );
        assert!(bad.is_err(), "unknown instantAccess fields are refused");
    }

    #[test]
    fn the_minimal_policy_is_valid() {
        assert_eq!(
            problems_of(&policy_with(""), Some("0 0 */4 * * *")),
            Vec::<String>::new()
        );
    }

    /// Input snippet (merged into a valid rule) → the problem text expected.
    #[test]
    fn each_rule_rejects_what_azure_would() {
        let sub = SUB;
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            // Spacing.
            (r#""schedule":"0 0 * * * *""#.into(), None,
             r#"rule "prod": schedule: "0 0 * * * *" puts points 1 h apart; Azure supports application-consistent restore points at most every 3 h"#),
            (r#""schedule":"0 */30 * * * *","consistency":"CrashConsistent""#.into(), None,
             "puts points 30 min apart; Azure supports crash-consistent restore points at most every 1 h"),
            (r#""schedule":"0 0 * * * *","consistency":"CrashConsistent","consistencyTag":"mode""#.into(), None,
             "at most every 3 h (consistencyTag lets a VM choose ApplicationConsistent)"),
            (String::new(), Some("0 0 */2 * * *"),
             r#"rule "prod": schedule: not set, so points follow the timer "0 0 */2 * * *", 2 h apart"#),
            (r#""schedule":"0 0 */3 * * *""#.into(), Some("0 0 */2 * * *"),
             "run at the ticks of the timer \"0 0 */2 * * *\" puts points 2 h apart"),
            (r#""schedule":"0 0 0 30 2 *""#.into(), Some("0 0 */4 * * *"), "never fires"),
            (r#""schedule":"every day""#.into(), None, "schedule: invalid NCRONTAB schedule \"every day\""),
            (r#""schedule":"0 0 0 30 2 *""#.into(), None, "never fires"),
            // Names.
            (r#""name":"""#.into(), None, "rules[0]: name: must not be empty"),
            // Consistency.
            (r#""consistency":"FileSystemConsistent""#.into(), None,
             "consistency: \"FileSystemConsistent\" cannot be requested: use CrashConsistent or ApplicationConsistent"),
            (r#""consistencyTag":" ""#.into(), None, "consistencyTag: must not be empty"),
            // Retention.
            (r#""retention":{"keepLast":0}"#.into(), None,
             "retention.keepLast: 0 with no daily/weekly/monthly tier keeps no point but the baseline"),
            (r#""retention":{"keepLast":2,"floor":3}"#.into(), None,
             "retention.floor: 3 exceeds keepLast 2"),
            (r#""retention":{"keepLast":0,"daily":2,"floor":3}"#.into(), None,
             "retention.floor: 3 exceeds the 2 points the tiers keep"),
            (r#""retention":{"keepLast":3,"weekly":0}"#.into(), None, "retention.weekly: 0 keeps nothing"),
            (r#""retention":{"keepLast":600}"#.into(), None,
             "rule \"prod\": retention: up to 603 restore points per VM (local 603;"),
            (r#""retention":{"keepLast":100,"daily":100},"copies":[{"region":"westus2"},{"region":"northeurope","retention":{"keepLast":98}}]"#.into(), None,
             "copies: up to 507 restore points per VM (local 203 + westus2 203 + northeurope 101;"),
            (r#""copies":[{"region":"westus2","retention":{"keepLast":0}}]"#.into(), None,
             "copies[0].retention.keepLast: 0 with no"),
            // Regions.
            (r#""copies":[{"region":"westus9"}]"#.into(), None,
             r#"copies[0].region: "westus9" is not an Azure region vmrp knows"#),
            (r#""copies":[{"region":"westus2"},{"region":"West US 2"}]"#.into(), None,
             "copies[1].region: westus2 is already a copy target in copies[0]"),
            (r#""copies":[{"region":"westus2","resourceGroup":"rg/dr"}]"#.into(), None,
             "copies[0].resourceGroup: \"rg/dr\" is not a resource group name: '/' is not allowed"),
            (r#""collectionResourceGroup":"rg.""#.into(), None,
             "collectionResourceGroup: \"rg.\" is not a resource group name: it must not end with a period"),
            // Targets.
            (r#""targets":{"subscriptions":["prod-sub"]}"#.into(), None,
             r#"targets.subscriptions[0]: "prod-sub" is not a subscription id (a GUID)"#),
            (format!(r#""targets":{{"resourceGroups":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"]}}"#), None,
             "targets.resourceGroups[0]: \"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1\" is not a resource group id"),
            (r#""targets":{"resourceGroups":["rg-prod"]}"#.into(), None,
             "targets.resourceGroups[0]: invalid ARM resource id \"rg-prod\""),
            (r#""targets":{"resourceGroups":["/subscriptions/x/resourceGroups/rg"]}"#.into(), None,
             "subscription \"x\" is not a GUID"),
            (format!(r#""targets":{{"vms":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/disks/d1"]}}"#), None,
             "targets.vms[0]: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/disks/d1 is not a VM id"),
            (r#""targets":{"tags":{"":"x"}}"#.into(), None, "targets.tags: tag names must not be empty"),
            // Disks.
            (r#""excludeDisks":{"luns":[64]}"#.into(), None, "excludeDisks.luns[0]: 64 is not a LUN (0 to 63)"),
            (r#""excludeDisks":{"skus":["Ultra"]}"#.into(), None,
             "excludeDisks.skus[0]: \"Ultra\" is not a disk SKU; expected one of"),
            (r#""excludeDisks":{"names":[""]}"#.into(), None, "excludeDisks.names[0]: must not be empty"),
            // Deadlines.
            (r#""deadlines":{"localMinutes":0}"#.into(), None, "deadlines.localMinutes: 0 would report"),
            (r#""deadlines":{"copyMinutes":0}"#.into(), None, "deadlines.copyMinutes: 0 would report"),
            // Timer.
            (String::new(), Some("often"), "timer schedule (VMRP_SCHEDULE): invalid NCRONTAB schedule"),
        ];
        for (snippet, timer, want) in cases {
            let got = problems_of(&policy_with(&snippet), timer);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "snippet {snippet} (timer {timer:?}): expected a problem containing\n  {want}\ngot {got:#?}"
            );
        }
    }

    #[test]
    fn accepted_edge_cases_give_no_problem() {
        let sub = SUB;
        for (snippet, timer) in [
            (r#""schedule":"0 0 */3 * * *""#.to_string(), None),
            (
                r#""schedule":"0 0 * * * *","consistency":"CrashConsistent""#.into(),
                None,
            ),
            (
                r#""schedule":"0 0 * * * *","consistency":"CrashConsistent""#.into(),
                Some("0 */5 * * * *"),
            ),
            // Daily at 02:30 under a 5-minute timer: once a day.
            (r#""schedule":"0 30 2 * * *""#.into(), Some("0 */5 * * * *")),
            (String::new(), Some("0 0 */3 * * *")),
            (
                r#""retention":{"keepLast":0,"daily":7,"weekly":4,"monthly":12}"#.into(),
                None,
            ),
            (r#""retention":{"keepLast":5,"floor":5}"#.into(), None),
            (r#""retention":{"keepLast":496,"floor":0}"#.into(), None), // 496 + 1 + 2 = 499
            (
                r#""copies":[{"region":"West Europe","resourceGroup":"rg-dr_(weu).1"}]"#.into(),
                None,
            ),
            (
                format!(
                    r#""targets":{{"subscriptions":["{sub}"],"resourceGroups":["/subscriptions/{sub}/resourceGroups/rg-a"],"vms":["/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"]}}"#
                ),
                None,
            ),
            (
                r#""excludeDisks":{"luns":[0,63],"skus":["ultrassd_lrs","PremiumV2_LRS"]}"#.into(),
                None,
            ),
        ] {
            let got = problems_of(&policy_with(&snippet), timer);
            assert!(
                got.is_empty(),
                "snippet {snippet} (timer {timer:?}): {got:#?}"
            );
        }
    }

    #[test]
    fn exactly_500_points_is_accepted_and_501_rejected() {
        // keepLast 497 + baseline 1 + in flight 2 = 500.
        let ok = policy_with(r#""retention":{"keepLast":497}"#);
        assert!(ok.validate().is_ok());
        let bad = policy_with(r#""retention":{"keepLast":498}"#);
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0]
            .message
            .starts_with("up to 501 restore points per VM"));
    }

    #[test]
    fn policy_wide_problems() {
        let empty: Policy = serde_json::from_str(r#"{"rules":[]}"#).unwrap();
        assert_eq!(
            problems_of(&empty, None),
            vec!["rules: empty: the policy selects no VM"]
        );

        let dup: Policy = serde_json::from_str(
            r#"{"rules":[
                {"name":"a","targets":{"tags":{"env":"prod"}},"retention":{"keepLast":1}},
                {"name":"A","targets":{"tags":{"env":"dev"}},"retention":{"keepLast":1}}]}"#,
        )
        .unwrap();
        assert_eq!(
            problems_of(&dup, None),
            vec![
                r#"rule "A": name: duplicate: rules[0] has the same name (names are case-insensitive)"#
            ]
        );

        let shadowing: Policy = serde_json::from_str(
            r#"{"rules":[
                {"name":"all","targets":{},"retention":{"keepLast":1}},
                {"name":"never","targets":{"tags":{"env":"dev"}},"retention":{"keepLast":1}}]}"#,
        )
        .unwrap();
        assert_eq!(
            problems_of(&shadowing, None),
            vec![
                r#"rule "all": targets: selects every VM, so the 1 rule(s) after it never apply (the first matching rule wins)"#
            ]
        );
    }

    #[test]
    fn problems_serialise_for_json_output() {
        let p = policy_with(r#""deadlines":{"localMinutes":0}"#);
        let json = serde_json::to_value(p.problems(None)).unwrap();
        assert_eq!(json[0]["rule"], "prod");
        assert_eq!(json[0]["index"], 0);
        assert_eq!(json[0]["field"], "deadlines.localMinutes");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::hours(3)), "3 h");
        assert_eq!(human(Duration::minutes(90)), "1 h 30 min");
        assert_eq!(human(Duration::minutes(5)), "5 min");
        assert_eq!(human(Duration::seconds(0)), "0 s");
    }

    mod per_vm {
        use super::*;
        use crate::azure::models::{
            DataDisk, ManagedDiskParameters, OsDisk, StorageProfile, VirtualMachineProperties,
        };

        fn vm(location: &str, tags: &[(&str, &str)], data: &[(i32, &str, &str)]) -> VirtualMachine {
            let disk = |name: &str, sku: &str| ManagedDiskParameters {
                id: Some(
                    ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", name)
                        .unwrap()
                        .to_string(),
                ),
                storage_account_type: Some(sku.to_string()),
                disk_encryption_set: None,
            };
            VirtualMachine {
                id: Some(
                    ResourceId::new_in_group(
                        SUB,
                        "rg",
                        "Microsoft.Compute",
                        "virtualMachines",
                        "vm1",
                    )
                    .unwrap()
                    .to_string(),
                ),
                name: Some("vm1".into()),
                location: Some(location.into()),
                tags: Some(
                    tags.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                properties: Some(VirtualMachineProperties {
                    storage_profile: Some(StorageProfile {
                        os_disk: Some(OsDisk {
                            name: Some("os".into()),
                            managed_disk: Some(disk("os", "Premium_LRS")),
                            ..Default::default()
                        }),
                        data_disks: Some(
                            data.iter()
                                .map(|(lun, name, sku)| DataDisk {
                                    lun: *lun,
                                    name: Some(name.to_string()),
                                    managed_disk: Some(disk(name, sku)),
                                    disk_size_gb: None,
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }

        fn check(rule_fields: &str, vm: &VirtualMachine) -> Vec<String> {
            let rule = policy_with(rule_fields).rules.remove(0);
            rule.check_vm(vm, &[])
                .iter()
                .map(ToString::to_string)
                .collect()
        }

        #[test]
        fn instant_access_applies_to_premium_v2_and_ultra_disks_of_application_consistent_points() {
            let fast = vm("eastus", &[], &[(0, "v2", "PremiumV2_LRS")]);
            let plain = vm("eastus", &[], &[(0, "std", "Premium_LRS")]);
            let ia = r#""instantAccess":{"durationMinutes":120}"#;
            assert!(check(ia, &fast).is_empty());
            let got = check(ia, &plain);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].contains("instantAccess: VM") && got[0].contains("does not apply"),
                "{got:?}"
            );
            let rule = policy_with(ia).rules.remove(0);
            let applies = |v: &VirtualMachine, mode: ConsistencyMode, excluded: &[ResourceId]| {
                rule.instant_access_for(v, &[], excluded, &mode)
                    .and_then(|i| i.duration_minutes)
            };
            assert_eq!(
                applies(&fast, ConsistencyMode::ApplicationConsistent, &[]),
                Some(120)
            );
            assert_eq!(applies(&fast, ConsistencyMode::CrashConsistent, &[]), None);
            assert_eq!(
                applies(&plain, ConsistencyMode::ApplicationConsistent, &[]),
                None
            );
            let v2_id = fast.disks()[1].managed_disk_id.clone().unwrap();
            assert_eq!(
                applies(&fast, ConsistencyMode::ApplicationConsistent, &[v2_id]),
                None,
                "an excluded disk gets no instant access"
            );
        }

        #[test]
        fn crash_mode_rejects_ultra_and_premium_v2_unless_excluded() {
            let v = vm(
                "eastus",
                &[],
                &[
                    (0, "fast", "UltraSSD_LRS"),
                    (1, "v2", "PremiumV2_LRS"),
                    (2, "std", "Premium_LRS"),
                ],
            );
            let got = check(r#""consistency":"CrashConsistent""#, &v);
            assert_eq!(
                got,
                vec![
                    r#"rule "prod": consistency: VM vm1: crash-consistent restore points do not support UltraSSD_LRS disks, and data disk fast (LUN 0) is one; exclude it (excludeDisks.skus, names or luns) or use ApplicationConsistent"#,
                    r#"rule "prod": consistency: VM vm1: crash-consistent restore points do not support PremiumV2_LRS disks, and data disk v2 (LUN 1) is one; exclude it (excludeDisks.skus, names or luns) or use ApplicationConsistent"#,
                ]
            );
            // Excluded by SKU and by LUN: fine.
            assert!(check(r#""consistency":"CrashConsistent","excludeDisks":{"skus":["UltraSSD_LRS"],"luns":[1]}"#, &v).is_empty());
            // Application-consistent points support both.
            assert!(check("", &v).is_empty());
            // The tag override decides the mode.
            let tagged = vm(
                "eastus",
                &[("mode", "CrashConsistent")],
                &[(0, "fast", "UltraSSD_LRS")],
            );
            assert_eq!(check(r#""consistencyTag":"mode""#, &tagged).len(), 1);
        }

        /// The support matrix's VM-level cases: confidential VMs are refused in any mode,
        /// sizes without Premium storage and write-accelerated disks in crash mode only;
        /// Trusted Launch is supported; ReadWrite caching and Intel v6+ sizes with several
        /// data disks are caveats (warnings), not refusals. The old check_vm knew none of them.
        #[test]
        fn unsupported_vms_write_accelerated_disks_and_caveats() {
            let with = |size: &str, security: Option<&str>, wa_lun0: bool| {
                let mut v = vm(
                    "eastus",
                    &[],
                    &[(0, "a", "Premium_LRS"), (1, "b", "Premium_LRS")],
                );
                let props = v.properties.as_mut().unwrap();
                props.hardware_profile = Some(serde_json::json!({ "vmSize": size }));
                props.security_profile = security.map(|t| serde_json::json!({ "securityType": t }));
                let data = props
                    .storage_profile
                    .as_mut()
                    .unwrap()
                    .data_disks
                    .as_mut()
                    .unwrap();
                data[0].write_accelerator_enabled = Some(wa_lun0);
                v
            };
            let crash = r#""consistency":"CrashConsistent""#;
            let refusing = |fields: &str, v: &VirtualMachine| -> Vec<String> {
                let rule = policy_with(fields).rules.remove(0);
                rule.check_vm(v, &[])
                    .into_iter()
                    .filter(PolicyProblem::refuses_create)
                    .map(|p| p.to_string())
                    .collect()
            };
            // (case, rule fields, VM, refusals wanted: substrings, in order)
            let cases: Vec<(&str, &str, VirtualMachine, Vec<&str>)> = vec![
                ("plain", crash, with("Standard_D4s_v5", None, false), vec![]),
                (
                    "trusted launch, crash",
                    crash,
                    with("Standard_D4s_v5", Some("TrustedLaunch"), false),
                    vec![],
                ),
                (
                    "trusted launch, app",
                    "",
                    with("Standard_D4s_v5", Some("TrustedLaunch"), false),
                    vec![],
                ),
                (
                    "confidential, app",
                    "",
                    with("Standard_DC4as_v5", Some("ConfidentialVM"), false),
                    vec!["unsupported: VM vm1 is a confidential VM"],
                ),
                (
                    "confidential, crash",
                    crash,
                    with("Standard_DC4as_v5", Some("ConfidentialVM"), false),
                    vec!["unsupported: VM vm1 is a confidential VM"],
                ),
                (
                    "no premium, crash",
                    crash,
                    with("Standard_D4_v5", None, false),
                    vec!["consistency: VM vm1: crash-consistent restore points need a VM size that supports Premium storage, and Standard_D4_v5 does not"],
                ),
                ("no premium, app", "", with("Standard_D4_v5", None, false), vec![]),
                (
                    "write-accelerated, crash",
                    crash,
                    with("Standard_M8ms", None, true),
                    vec!["consistency: VM vm1: crash-consistent restore points do not support write-accelerated disks, and data disk a (LUN 0) is one"],
                ),
                ("write-accelerated, app", "", with("Standard_M8ms", None, true), vec![]),
                (
                    "write-accelerated, excluded by LUN",
                    r#""consistency":"CrashConsistent","excludeDisks":{"luns":[0]}"#,
                    with("Standard_M8ms", None, true),
                    vec![],
                ),
            ];
            for (case, fields, v, want) in cases {
                let got = refusing(fields, &v);
                assert_eq!(got.len(), want.len(), "{case}: {got:?}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(g.contains(w), "{case}: {g}");
                }
            }
            // Caveats: warnings only.
            let mut v = with("Standard_D4s_v6", None, false);
            v.properties
                .as_mut()
                .unwrap()
                .storage_profile
                .as_mut()
                .unwrap()
                .os_disk
                .as_mut()
                .unwrap()
                .caching = Some("ReadWrite".into());
            let rule = policy_with(crash).rules.remove(0);
            let problems = rule.check_vm(&v, &[]);
            assert!(problems.iter().all(|p| !p.refuses_create()), "{problems:?}");
            let caveats: Vec<String> = problems
                .iter()
                .filter(|p| p.field == FIELD_CONSISTENCY_CAVEAT)
                .map(|p| p.message.clone())
                .collect();
            assert_eq!(caveats.len(), 2, "{caveats:?}");
            assert!(caveats[0].contains("ReadWrite host caching (OS disk os)"));
            assert!(caveats[1].contains("Standard_D4s_v6") && caveats[1].contains("2 included"));
            // One data disk on a v6 size: no multi-disk caveat; app mode: none at all.
            assert!(policy_with("").rules.remove(0).check_vm(&v, &[]).is_empty());
        }

        #[test]
        fn skip_backup_protected_needs_subscription_targets() {
            let rg = format!(
                r#""targets":{{"resourceGroups":["/subscriptions/{SUB}/resourceGroups/rg"]}},"skipBackupProtected":true"#
            );
            let got = problems_of(&policy_with(&rg), None);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with(
                    r#"rule "prod": skipBackupProtected: needs targets.subscriptions"#
                ),
                "{got:?}"
            );
            let sub =
                format!(r#""targets":{{"subscriptions":["{SUB}"]}},"skipBackupProtected":true"#);
            assert!(problems_of(&policy_with(&sub), None).is_empty());
            assert!(policy_with(&sub).rules[0].skip_backup_protected);
        }

        #[test]
        fn disk_get_sku_wins_over_the_vm_model() {
            let v = vm("eastus", &[], &[(0, "d", "Premium_LRS")]);
            let rule = policy_with(r#""consistency":"CrashConsistent""#)
                .rules
                .remove(0);
            let info = DiskInfo {
                id: ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", "d").unwrap(),
                tags: Default::default(),
                max_shares: None,
                sku: Some("UltraSSD_LRS".into()),
            };
            assert_eq!(rule.check_vm(&v, &[info]).len(), 1);
        }

        #[test]
        fn copy_to_the_vms_own_region_is_rejected() {
            let v = vm("westus2", &[], &[]);
            assert_eq!(
                check(
                    r#""copies":[{"region":"eastus"},{"region":"West US 2"}]"#,
                    &v
                ),
                vec![
                    r#"rule "prod": copies[1].region: VM vm1 is in westus2: a cross-region copy needs another region"#
                ]
            );
            assert!(check(r#""copies":[{"region":"eastus"}]"#, &v).is_empty());
        }
    }
}
