//! The policy: which VMs get restore points, how often, how, where they are copied and how long
//! they are kept. Loaded from `VMRP_POLICY` (inline JSON) or `VMRP_POLICY_FILE` (JSON or TOML),
//! validated at load against the platform rules (docs/emulator-arm.md) with errors naming rule and field.
//!
//! This module is pure: no I/O besides reading the policy file. Submodules: `load` (parsing, env),
//! `validate` (policy-wide and per-VM checks), `resolve` (what a rule means for one VM),
//! `regions` (region names), `check` (the `vmrp policy check` command). The schema and every
//! validation rule with its Azure reason are documented in `docs/policy.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::azure::models::{ConsistencyMode, VirtualMachine};
use crate::azure::ResourceId;

pub mod check;
pub mod drills;
mod load;
pub mod platform;
pub mod regions;
mod resolve;
mod validate;

pub use load::{PolicyError, ENV_POLICY, ENV_POLICY_FILE, ENV_SCHEDULE};
pub use resolve::{
    excludes_every_disk, rule_due, superseded_by_next_tick, DiskInfo, TickKind, ON_DEMAND_MAX_AGE,
    ON_DEMAND_MAX_AGE_CONTINUED, TICK_SKEW,
};
pub use validate::{
    spacing_for, PolicyProblem, FIELD_CONSISTENCY, FIELD_CONSISTENCY_CAVEAT, FIELD_UNSUPPORTED,
    IN_FLIGHT_PER_COLLECTION, MAX_POINTS_PER_VM, MIN_SPACING_APP, MIN_SPACING_CRASH,
};

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub rules: Vec<Rule>,
    /// What to do with the points of a VM that was deleted.
    #[serde(default)]
    pub orphans: OrphanRule,
    /// Restore drills (docs/restore.md, drills); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<drills::Drills>,
}

/// One rule: a target selection and what to do for it. The first matching rule wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub targets: Targets,
    /// NCRONTAB (six fields, like the timer) of this rule's ticks; a timer tick creates points
    /// only for rules with an occurrence at that tick. Defaults to every timer tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Default `ApplicationConsistent` (what Azure does when the mode is omitted).
    #[serde(default = "default_consistency")]
    pub consistency: ConsistencyMode,
    /// A VM tag whose value (`CrashConsistent` / `ApplicationConsistent`) overrides `consistency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_tag: Option<String>,
    #[serde(default)]
    pub exclude_disks: DiskExclusions,
    /// Cross-region copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyTarget>,
    pub retention: Retention,
    #[serde(default)]
    pub deadlines: Deadlines,
    /// Resource group for the local collection; default the VM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_resource_group: Option<String>,
    /// Leave out VMs Azure Backup also protects (the timer's collection listing shows an
    /// `AzureBackup_*` collection of the VM): their instant restore points already exist, and
    /// Backup's points and vmrp's share the VM's 500. Needs `targets.subscriptions`, since
    /// Backup's `AzureBackupRG_*` groups lie outside resource-group scopes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_backup_protected: bool,
    /// Instant access for the snapshots of Premium SSD v2 / Ultra disks (restorable at once,
    /// with fast restore performance, for `durationMinutes`). Applies to application-consistent
    /// points of VMs with such disks only; docs/policy.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant_access: Option<InstantAccess>,
}

/// `instantAccess: { durationMinutes }`: the collection is created with `instantAccess: true`
/// and each point asks for `instantAccessDurationMinutes` (60-300; Azure's default 300 when
/// omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstantAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
}

impl InstantAccess {
    /// Azure's bounds of `instantAccessDurationMinutes`
    /// (learn.microsoft.com/azure/virtual-machines/disks-instant-access-snapshots).
    pub const MIN_MINUTES: u32 = 60;
    pub const MAX_MINUTES: u32 = 300;
}

fn default_consistency() -> ConsistencyMode {
    ConsistencyMode::ApplicationConsistent
}

/// Which VMs a rule covers: in any of the scopes (or all, when none are given), carrying every
/// tag in `tags`, and none of `excludeTags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Targets {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// `/subscriptions/{sub}/resourceGroups/{rg}` ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<ResourceId>,
    /// Tag key → required value (`*` = any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tag key → value (`*` = any) that excludes a VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exclude_tags: BTreeMap<String, String>,
}

/// Disks left out of every point, on top of the automatic exclusion of ephemeral OS and shared disks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskExclusions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luns: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Disk tag key → value (`*` = any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Disk SKUs (`storageAccountType`), e.g. `UltraSSD_LRS` / `PremiumV2_LRS`, which Azure does
    /// not support in crash-consistent points. Listing them is the explicit way to accept that
    /// those disks are left out; vmrp never drops them silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyTarget {
    pub region: String,
    /// Resource group for the copy collection; default the VM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// Retention in the target region; default the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Customer-managed keys: source disk encryption set id → the disk encryption set of this
    /// region that copies of its disks are encrypted with (ids compare case-insensitively). A
    /// copy of a disk whose set is not mapped is not made: it is reported, never downgraded to
    /// platform keys (docs/policy.md, "Customer-managed keys").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_sets: BTreeMap<String, String>,
}

impl CopyTarget {
    /// A copy target for `region` with the defaults (VM's resource group, rule's retention, no
    /// encryption sets).
    pub fn to(region: &str) -> Self {
        Self {
            region: region.to_string(),
            resource_group: None,
            retention: None,
            encryption_sets: BTreeMap::new(),
        }
    }
}

/// The disk encryption set that copies of disks encrypted with `source` are encrypted with,
/// from a copy target's `encryptionSets` map (keys compare as resource ids: case-insensitively,
/// leading slash optional). `None`: no mapping, so such a disk cannot be copied there with a
/// customer-managed key. Pure: the copy handler, `vmrp plan` and restore ask it.
pub fn mapped_encryption_set<'a>(
    map: &'a BTreeMap<String, String>,
    source: &str,
) -> Option<&'a str> {
    let norm = |s: &str| s.trim().trim_start_matches('/').to_ascii_lowercase();
    let want = norm(source);
    map.iter()
        .find(|(k, _)| norm(k) == want)
        .map(|(_, v)| v.as_str())
}

/// One disk of a VM (or of a restore point's metadata) that uses a customer-managed key and
/// that a copy to some region cannot encrypt: its set has no mapping there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmappedEncryptionSet {
    pub region: String,
    /// `OS disk` / `LUN 2`, with the disk's name when known.
    pub disk: String,
    pub encryption_set: String,
}

impl std::fmt::Display for UnmappedEncryptionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is encrypted with customer-managed keys (disk encryption set {}) and the copy to {} maps no encryption set for it (copies[].encryptionSets): not copied there, never downgraded to platform keys",
            self.disk, self.encryption_set, self.region
        )
    }
}

/// The CMK disks among `disks` (label, set id) that a copy to `copy.region` cannot encrypt.
pub fn unmapped_encryption_sets<'a>(
    copy: &CopyTarget,
    disks: impl IntoIterator<Item = (String, &'a str)>,
) -> Vec<UnmappedEncryptionSet> {
    disks
        .into_iter()
        .filter(|(_, set)| mapped_encryption_set(&copy.encryption_sets, set).is_none())
        .map(|(disk, set)| UnmappedEncryptionSet {
            region: copy.region.clone(),
            disk,
            encryption_set: set.to_string(),
        })
        .collect()
}

/// How many settled points to keep in one collection (docs/lifecycle.md, retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest N settled points.
    pub keep_last: u32,
    /// Also keep the newest point of each of the last N days / weeks / months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    /// Never go below this many settled points, whatever else says.
    #[serde(default = "default_floor")]
    pub floor: u32,
}

fn default_floor() -> u32 {
    1
}

impl Retention {
    /// Retention that keeps the newest `n` settled points (no tiers, default floor 1).
    pub fn newest(n: u32) -> Self {
        Self {
            keep_last: n,
            daily: None,
            weekly: None,
            monthly: None,
            floor: default_floor(),
        }
    }

    /// The most settled points [`crate::retention::decide`] can keep in one collection: the newest
    /// `max(keepLast, floor)`, one per tier bucket, and the baseline.
    pub fn max_settled(&self) -> u32 {
        // Saturating: the counts come from the policy file (validation bounds them, but this
        // must not wrap before it does).
        self.keep_last
            .max(self.floor)
            .saturating_add(self.daily.unwrap_or(0))
            .saturating_add(self.weekly.unwrap_or(0))
            .saturating_add(self.monthly.unwrap_or(0))
            .saturating_add(1)
    }
}

/// How long a point may take before it is reported as failed, in minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deadlines {
    #[serde(default = "default_local_deadline")]
    pub local_minutes: u32,
    #[serde(default = "default_copy_deadline")]
    pub copy_minutes: u32,
    /// How many times a `Failed` point is retried under a new name before it is reported.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_local_deadline() -> u32 {
    120
}
fn default_copy_deadline() -> u32 {
    14 * 24 * 60
}
fn default_retries() -> u32 {
    2
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            local_minutes: default_local_deadline(),
            copy_minutes: default_copy_deadline(),
            max_retries: default_retries(),
        }
    }
}

/// What happens to the points of a deleted VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrphanRule {
    /// `None` keeps them forever; `Some(n)` deletes them n days after the VM was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after_days: Option<u32>,
}

fn tag_matches(tags: Option<&BTreeMap<String, String>>, key: &str, want: &str) -> bool {
    tags.into_iter()
        .flatten()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && (want == "*" || v.eq_ignore_ascii_case(want)))
}

impl Targets {
    /// Whether the VM id lies in one of the scopes (ignoring tags).
    pub fn in_scope(&self, vm: &ResourceId) -> bool {
        if self.subscriptions.is_empty() && self.resource_groups.is_empty() && self.vms.is_empty() {
            return true;
        }
        self.subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(vm.subscription()))
            || self.resource_groups.iter().any(|rg| {
                ResourceId::parse(rg).is_ok_and(|rg| {
                    rg.subscription().eq_ignore_ascii_case(vm.subscription())
                        && rg
                            .resource_group()
                            .zip(vm.resource_group())
                            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                })
            })
            || self.vms.iter().any(|v| v == vm)
    }

    /// Whether the VM is selected: in scope, all `tags` present, no `excludeTags` present.
    pub fn matches(&self, vm: &VirtualMachine) -> bool {
        let Some(id) = vm.resource_id() else {
            return false;
        };
        self.in_scope(&id)
            && self
                .tags
                .iter()
                .all(|(k, v)| tag_matches(vm.tags.as_ref(), k, v))
            && !self
                .exclude_tags
                .iter()
                .any(|(k, v)| tag_matches(vm.tags.as_ref(), k, v))
    }
}

impl Policy {
    /// The first rule that selects this VM.
    pub fn rule_for(&self, vm: &VirtualMachine) -> Option<&Rule> {
        self.rules.iter().find(|r| r.targets.matches(vm))
    }
    pub fn rule_named(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
    /// Scope guard: whether any rule's scopes include this VM id. Messages for VMs outside every
    /// scope are refused.
    pub fn covers(&self, vm: &ResourceId) -> bool {
        self.rules.iter().any(|r| r.targets.in_scope(vm))
    }
}

#[cfg(test)]
mod cmk_tests {
    use super::*;

    #[test]
    fn encryption_set_lookup_compares_ids_case_insensitively() {
        let mut map = BTreeMap::new();
        map.insert(
            "/subscriptions/S1/resourceGroups/K/providers/Microsoft.Compute/diskEncryptionSets/des-East".to_string(),
            "target".to_string(),
        );
        let cases: &[(&str, Option<&str>)] = &[
            ("/subscriptions/s1/resourcegroups/k/providers/microsoft.compute/diskencryptionsets/des-east", Some("target")),
            ("subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/des-east", Some("target")),
            ("/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/des-west", None),
            ("", None),
        ];
        for (source, want) in cases {
            assert_eq!(mapped_encryption_set(&map, source), *want, "{source}");
        }
        let mut copy = CopyTarget::to("westus2");
        copy.encryption_sets = map;
        let gaps = unmapped_encryption_sets(
            &copy,
            [
                ("OS disk".to_string(), "/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/des-east"),
                ("LUN 0".to_string(), "/subscriptions/s1/resourceGroups/k/providers/Microsoft.Compute/diskEncryptionSets/other"),
            ],
        );
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].disk, "LUN 0");
        assert!(gaps[0]
            .to_string()
            .contains("never downgraded to platform keys"));
    }
}

#[cfg(test)]
mod tests {
    //! Targets, rule lookup and the schema's defaults: the mutation run of issue 20
    //! (docs/testing.md) found no unit test of the crate that failed when they were broken.
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";
    const OTHER_SUB: &str = "00000000-0000-0000-0000-000000000002";

    fn vm_id(sub: &str, rg: &str, name: &str) -> ResourceId {
        ResourceId::new_in_group(sub, rg, "Microsoft.Compute", "virtualMachines", name).unwrap()
    }

    fn vm(id: &ResourceId, tags: &[(&str, &str)]) -> VirtualMachine {
        VirtualMachine {
            id: Some(id.to_string()),
            name: id.name().map(str::to_string),
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn rg_id(sub: &str, rg: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn scopes_select_by_subscription_group_or_vm_and_none_means_all() {
        let app = vm_id(SUB, "rg-app", "vm1");
        let same_name_elsewhere = vm_id(OTHER_SUB, "rg-app", "vm1");
        let other_group = vm_id(SUB, "rg-db", "vm2");
        let none = Targets::default();
        let subs = Targets {
            subscriptions: vec![SUB.to_uppercase()],
            ..Default::default()
        };
        let groups = Targets {
            resource_groups: vec![rg_id(SUB, "RG-APP")],
            ..Default::default()
        };
        let bad_group = Targets {
            resource_groups: vec!["not an id".into()],
            ..Default::default()
        };
        let vms = Targets {
            vms: vec![app.clone()],
            ..Default::default()
        };
        let cases: &[(&str, &Targets, &ResourceId, bool)] = &[
            ("no scope: every VM", &none, &app, true),
            ("no scope: every VM", &none, &same_name_elsewhere, true),
            ("subscription, any case", &subs, &app, true),
            ("subscription", &subs, &other_group, true),
            ("another subscription", &subs, &same_name_elsewhere, false),
            ("group, any case", &groups, &app, true),
            ("another group", &groups, &other_group, false),
            (
                "a group of that name in another subscription",
                &groups,
                &same_name_elsewhere,
                false,
            ),
            (
                "an unparsable group id matches nothing",
                &bad_group,
                &app,
                false,
            ),
            ("the VM itself", &vms, &app, true),
            ("another VM", &vms, &other_group, false),
            (
                "the same name in another subscription",
                &vms,
                &same_name_elsewhere,
                false,
            ),
        ];
        for (what, targets, id, want) in cases {
            assert_eq!(targets.in_scope(id), *want, "in_scope: {what} ({id})");
            // Without tags, selection is the scope test (and a VM without an id is never selected).
            assert_eq!(
                targets.matches(&vm(id, &[])),
                *want,
                "matches: {what} ({id})"
            );
        }
        assert!(!none.matches(&VirtualMachine::default()));
    }

    #[test]
    fn tags_are_all_required_and_any_exclude_tag_opts_out() {
        let id = vm_id(SUB, "rg-app", "vm1");
        let other = vm_id(OTHER_SUB, "rg-app", "vm1");
        let required = Targets {
            tags: map(&[("Backup", "Daily"), ("env", "*")]),
            ..Default::default()
        };
        let excluded = Targets {
            exclude_tags: map(&[("noBackup", "*"), ("tier", "scratch")]),
            ..Default::default()
        };
        let scoped_excluded = Targets {
            subscriptions: vec![SUB.into()],
            exclude_tags: map(&[("noBackup", "*")]),
            ..Default::default()
        };
        // (what, targets, VM id, VM tags, selected)
        type Case<'a> = (
            &'a str,
            &'a Targets,
            &'a ResourceId,
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: &[Case] = &[
            (
                "both tags, keys and value in any case",
                &required,
                &id,
                &[("backup", "DAILY"), ("ENV", "prod")],
                true,
            ),
            (
                "`*` takes any value",
                &required,
                &id,
                &[("backup", "daily"), ("env", "")],
                true,
            ),
            (
                "a required tag missing",
                &required,
                &id,
                &[("backup", "daily")],
                false,
            ),
            (
                "a required tag with another value",
                &required,
                &id,
                &[("backup", "weekly"), ("env", "x")],
                false,
            ),
            (
                "the value under another key",
                &required,
                &id,
                &[("other", "daily"), ("env", "x")],
                false,
            ),
            ("no tags at all", &required, &id, &[], false),
            ("no exclude tag", &excluded, &id, &[("tier", "web")], true),
            (
                "an exclude tag with `*`",
                &excluded,
                &id,
                &[("NOBACKUP", "no")],
                false,
            ),
            (
                "an exclude tag with its value",
                &excluded,
                &id,
                &[("tier", "Scratch")],
                false,
            ),
            ("in scope, no exclude tag", &scoped_excluded, &id, &[], true),
            (
                "out of scope, no exclude tag",
                &scoped_excluded,
                &other,
                &[],
                false,
            ),
            (
                "in scope, an exclude tag",
                &scoped_excluded,
                &id,
                &[("noBackup", "1")],
                false,
            ),
        ];
        for (what, targets, id, tags, want) in cases {
            assert_eq!(targets.matches(&vm(id, tags)), *want, "{what}: {tags:?}");
        }
        // A required tag does not widen the scope.
        let scoped_required = Targets {
            subscriptions: vec![SUB.into()],
            tags: map(&[("env", "*")]),
            ..Default::default()
        };
        assert!(!scoped_required.matches(&vm(&other, &[("env", "prod")])));
        assert!(scoped_required.matches(&vm(&id, &[("env", "prod")])));
    }

    #[test]
    fn the_first_matching_rule_wins_and_rules_are_found_by_exact_name() {
        let policy = Policy::from_json_str(&format!(
            r#"{{"rules":[
                {{"name":"tagged","targets":{{"tags":{{"tier":"db"}}}},"retention":{{"keepLast":1}}}},
                {{"name":"sub","targets":{{"subscriptions":["{SUB}"]}},"retention":{{"keepLast":2}}}},
                {{"name":"group","targets":{{"resourceGroups":["{}"]}},"retention":{{"keepLast":3}}}}
            ]}}"#,
            rg_id(OTHER_SUB, "rg-app")
        ))
        .unwrap();
        let name_of = |v: &VirtualMachine| policy.rule_for(v).map(|r| r.name.as_str());
        let in_sub = vm_id(SUB, "rg-app", "vm1");
        let in_group = vm_id(OTHER_SUB, "rg-app", "vm1");
        let nowhere = vm_id(OTHER_SUB, "rg-web", "vm1");
        assert_eq!(name_of(&vm(&in_sub, &[("tier", "db")])), Some("tagged"));
        assert_eq!(name_of(&vm(&in_sub, &[])), Some("sub"));
        assert_eq!(name_of(&vm(&in_group, &[])), Some("group"));
        assert_eq!(name_of(&vm(&nowhere, &[])), None);
        // `covers` is the scope guard: tags do not count, so the first rule covers every VM.
        assert!(policy.covers(&nowhere));
        let mut untagged = policy.clone();
        untagged.rules.remove(0);
        assert!(untagged.covers(&in_sub));
        assert!(untagged.covers(&in_group));
        assert!(!untagged.covers(&nowhere));
        assert_eq!(
            policy.rule_named("group").map(|r| r.retention.keep_last),
            Some(3)
        );
        assert_eq!(
            policy.rule_named("sub").map(|r| r.retention.keep_last),
            Some(2)
        );
        assert!(policy.rule_named("Sub").is_none());
        assert!(policy.rule_named("nope").is_none());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let rule = Policy::from_json_str(
            r#"{"rules":[{"name":"r","targets":{},"retention":{"keepLast":3}}]}"#,
        )
        .unwrap()
        .rules
        .remove(0);
        // Azure's own default when `consistencyMode` is omitted.
        assert_eq!(rule.consistency, ConsistencyMode::ApplicationConsistent);
        assert_eq!(rule.retention, Retention::newest(3));
        assert_eq!(rule.retention.floor, 1);
        let want = Deadlines {
            local_minutes: 120,
            copy_minutes: 20_160, // 14 days
            max_retries: 2,
        };
        assert_eq!(rule.deadlines, want);
        assert_eq!(Deadlines::default(), want);
        assert_eq!(
            Retention::newest(5),
            Retention {
                keep_last: 5,
                daily: None,
                weekly: None,
                monthly: None,
                floor: 1
            }
        );
        assert_eq!(
            CopyTarget::to("westus2"),
            CopyTarget {
                region: "westus2".into(),
                resource_group: None,
                retention: None,
                encryption_sets: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn max_settled_is_the_larger_of_keep_last_and_floor_plus_tiers_plus_the_baseline() {
        let r = |keep_last, floor, daily, weekly, monthly| Retention {
            keep_last,
            daily,
            weekly,
            monthly,
            floor,
        };
        let cases = [
            (r(3, 1, None, None, None), 4),
            (r(0, 0, None, None, None), 1),
            (r(1, 5, None, None, None), 6),
            (r(3, 1, Some(7), Some(4), Some(12)), 27),
            (r(u32::MAX, 1, Some(1), None, None), u32::MAX),
        ];
        for (retention, want) in cases {
            assert_eq!(retention.max_settled(), want, "{retention:?}");
        }
    }
}
