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
    /// is not supported at all, nor one whose every disk is excluded (unsupported disks and the
    /// rule's `excludeDisks`: its point would restore nothing); crash-consistent points cannot
    /// include Ultra / Premium SSD v2 / write-accelerated disks, nor be taken of a size without
    /// Premium storage; a copy cannot target the VM's own region. Warnings (`consistencyCaveat`): crash-consistent points of a
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
        // The disks the point leaves out, once: the checks below all judge what stays in.
        let left_out = self.excluded_disks(vm, disks);
        let excluded: Vec<ResourceId> = left_out.iter().map(|(id, _)| id.clone()).collect();
        if super::excludes_every_disk(vm, &excluded) {
            let reasons: Vec<&str> = left_out.iter().map(|(_, why)| why.as_str()).collect();
            p.push(
                FIELD_UNSUPPORTED,
                format!(
                    "VM {vm_name}: every disk is excluded ({}), so a restore point would restore nothing: it gets no points and no copies",
                    reasons.join("; ")
                ),
            );
        }
        let (mode, _) = self.consistency_for(vm);
        if mode == ConsistencyMode::CrashConsistent {
            self.check_crash_consistent(vm, disks, &excluded, vm_name, &mut p);
        }
        if self.instant_access.is_some()
            && self
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

    /// [`Rule::check_vm`]'s checks of a crash-consistent point: a size without Premium
    /// storage and Ultra / Premium SSD v2 / write-accelerated disks are refused; ReadWrite
    /// caching and Intel v6+ / AMD v7+ sizes with several data disks are caveats.
    fn check_crash_consistent(
        &self,
        vm: &VirtualMachine,
        disks: &[DiskInfo],
        excluded: &[ResourceId],
        vm_name: &str,
        p: &mut Problems<'_>,
    ) {
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
}

#[cfg(test)]
mod tests;
