//! What a rule means for one VM: its consistency mode (with the tag override), the disks to leave
//! out and why, the copy targets, the retention of each collection, deadlines, and whether a
//! rule with its own schedule is due at a timer tick. Pure functions over ARM models.

use time::OffsetDateTime;

use super::regions::same_region;
use super::{tag_matches, CopyTarget, Retention, Rule, Targets};
use crate::azure::models::{ConsistencyMode, Disk, Tags, VirtualMachine, VmDisk};
use crate::azure::ResourceId;
use crate::messages::Role;
use crate::schedule::{Schedule, ScheduleError};

/// Disk SKUs that crash-consistent restore points do not support ("Supported for application
/// consistency. Not supported for crash consistency. Exclude these disks …", support matrix).
pub(super) const CRASH_UNSUPPORTED_SKUS: &[&str] = &["UltraSSD_LRS", "PremiumV2_LRS"];

/// What a Disk GET (or the timer's disk listing, carried in a create message) tells us about
/// one of a VM's disks, beyond the VM's storage profile. Unknown fields are accepted (and
/// logged by `messages`): it travels in queue messages, which evolve.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskInfo {
    pub id: ResourceId,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// More than 1 means a shared disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shares: Option<i32>,
    /// `sku.name`, e.g. `Premium_LRS`, `UltraSSD_LRS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

impl DiskInfo {
    /// From a Disk GET; `None` when the body carries no valid id.
    pub fn from_disk(disk: &Disk) -> Option<Self> {
        Some(Self {
            id: ResourceId::parse(disk.id.as_deref()?).ok()?,
            tags: disk.tags.clone().unwrap_or_default(),
            max_shares: disk.properties.as_ref().and_then(|p| p.max_shares),
            sku: disk.sku.as_ref().and_then(|s| s.name.clone()),
        })
    }
}

fn tag_match(tags: &Tags, key: &str, want: &str) -> Option<String> {
    tags.iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(key) && (want == "*" || v.eq_ignore_ascii_case(want)))
        .map(|(k, v)| format!("{k}={v}"))
}

/// The SKU of a VM disk: the Disk GET's when known, else the VM model's `storageAccountType`.
pub(super) fn disk_sku<'a>(disk: &'a VmDisk, info: Option<&'a DiskInfo>) -> Option<&'a str> {
    info.and_then(|i| i.sku.as_deref())
        .or(disk.storage_account_type.as_deref())
}

/// `LUN 2 (data-ultra)` / `OS disk (vm1-os)`, for reasons and problems.
pub(super) fn describe_disk(disk: &VmDisk) -> String {
    let name = disk
        .name
        .clone()
        .or_else(|| {
            disk.managed_disk_id
                .as_ref()
                .and_then(|i| i.name().map(str::to_string))
        })
        .unwrap_or_else(|| "unnamed".to_string());
    match disk.lun {
        Some(lun) => format!("data disk {name} (LUN {lun})"),
        None => format!("OS disk {name}"),
    }
}

impl Targets {
    /// Why these targets do not select `vm` (out of every scope, a required tag missing, an
    /// `excludeTags` opt-out), or `None` when they do. The same test as [`Targets::matches`],
    /// with a reason for the report: a message naming a rule is held to that rule's targets.
    pub fn refusal(&self, vm: &VirtualMachine) -> Option<String> {
        let Some(id) = vm.resource_id() else {
            return Some("the VM has no valid id".to_string());
        };
        if !self.in_scope(&id) {
            return Some("the VM lies outside the rule's scopes".to_string());
        }
        if let Some((k, v)) = self
            .tags
            .iter()
            .find(|(k, v)| !tag_matches(vm.tags.as_ref(), k, v))
        {
            return Some(format!("the VM lacks the rule's required tag {k}={v}"));
        }
        if let Some((k, v)) = self
            .exclude_tags
            .iter()
            .find(|(k, v)| tag_matches(vm.tags.as_ref(), k, v))
        {
            return Some(format!(
                "the VM opts out with the rule's excludeTags {k}={v}"
            ));
        }
        None
    }
}

impl Rule {
    /// The consistency mode for this VM: the `consistencyTag` value when it names a mode, else
    /// the rule's. An unusable tag value gives the rule's mode plus a message for the log.
    pub fn consistency_for(&self, vm: &VirtualMachine) -> (ConsistencyMode, Option<String>) {
        let Some(tag) = self.consistency_tag.as_deref() else {
            return (self.consistency.clone(), None);
        };
        let Some(value) = vm.tag(tag) else {
            return (self.consistency.clone(), None);
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("CrashConsistent") {
            (ConsistencyMode::CrashConsistent, None)
        } else if value.eq_ignore_ascii_case("ApplicationConsistent") {
            (ConsistencyMode::ApplicationConsistent, None)
        } else {
            let vm_name = vm.name.as_deref().unwrap_or("(unnamed)");
            (
                self.consistency.clone(),
                Some(format!(
                    "VM {vm_name}: tag {tag:?} = {value:?} is not a consistency mode \
                     (expected CrashConsistent or ApplicationConsistent); using the rule's {}",
                    self.consistency.as_str()
                )),
            )
        }
    }

    /// The disks to leave out of this VM's points, each with the reason, in storage-profile
    /// order (OS disk first, then by LUN). Ephemeral OS disks and shared disks are always left
    /// out (Azure rejects points that include them); the rest comes from `excludeDisks`. A disk
    /// without a managed disk id cannot be named in `excludeDisks` and is skipped.
    /// The instant access a create of `vm` asks for, when the rule has one and it applies: the
    /// point is application-consistent (not `CrashConsistent`) and holds a Premium SSD v2 /
    /// Ultra disk (not in `excluded`). `None` otherwise: the option is not sent.
    pub fn instant_access_for(
        &self,
        vm: &VirtualMachine,
        disk_info: &[DiskInfo],
        excluded: &[ResourceId],
        mode: &ConsistencyMode,
    ) -> Option<&super::InstantAccess> {
        let ia = self.instant_access.as_ref()?;
        if *mode == ConsistencyMode::CrashConsistent {
            return None;
        }
        vm.disks()
            .iter()
            .filter(|d| {
                d.managed_disk_id
                    .as_ref()
                    .is_none_or(|id| !excluded.contains(id))
            })
            .any(|d| {
                let info = d
                    .managed_disk_id
                    .as_ref()
                    .and_then(|id| disk_info.iter().find(|i| &i.id == id));
                disk_sku(d, info).is_some_and(|s| {
                    CRASH_UNSUPPORTED_SKUS
                        .iter()
                        .any(|u| u.eq_ignore_ascii_case(s))
                })
            })
            .then_some(ia)
    }

    /// The VM's managed disks the rule leaves out of its points, each with the reason
    /// (unsupported by restore points, or the rule's `excludeDisks`).
    pub fn excluded_disks(
        &self,
        vm: &VirtualMachine,
        disk_info: &[DiskInfo],
    ) -> Vec<(ResourceId, String)> {
        let mut out = Vec::new();
        for disk in vm.disks() {
            let Some(id) = disk.managed_disk_id.clone() else {
                continue;
            };
            let info = disk_info.iter().find(|i| i.id == id);
            if let Some(reason) = self.exclusion_reason(&disk, info) {
                out.push((id, reason));
            }
        }
        out
    }

    fn exclusion_reason(&self, disk: &VmDisk, info: Option<&DiskInfo>) -> Option<String> {
        if disk.ephemeral {
            return Some("ephemeral OS disk: not supported by restore points".to_string());
        }
        if let Some(shares) = info.and_then(|i| i.max_shares).filter(|s| *s > 1) {
            return Some(format!(
                "shared disk (maxShares {shares}): not supported by restore points"
            ));
        }
        let ex = &self.exclude_disks;
        if let Some(lun) = disk.lun.filter(|l| ex.luns.contains(l)) {
            return Some(format!("excludeDisks.luns: LUN {lun}"));
        }
        let name = disk
            .name
            .as_deref()
            .or_else(|| disk.managed_disk_id.as_ref().and_then(|i| i.name()));
        if let Some(name) = name.filter(|n| ex.names.iter().any(|x| x.eq_ignore_ascii_case(n))) {
            return Some(format!("excludeDisks.names: {name}"));
        }
        if let Some(info) = info {
            if let Some(hit) = ex
                .tags
                .iter()
                .find_map(|(k, v)| tag_match(&info.tags, k, v))
            {
                return Some(format!("excludeDisks.tags: {hit}"));
            }
        }
        if let Some(sku) =
            disk_sku(disk, info).filter(|s| ex.skus.iter().any(|x| x.eq_ignore_ascii_case(s)))
        {
            return Some(format!("excludeDisks.skus: {sku}"));
        }
        None
    }

    /// The cross-region copy targets, in policy order.
    pub fn copy_regions(&self) -> Vec<&CopyTarget> {
        self.copies.iter().collect()
    }

    /// The copy targets of a VM in `home`: a copy needs another region than the VM's, so an
    /// entry naming the VM's own region is dropped, as the create drops it from the copies it
    /// asks for. Pruning and `vmrp plan` use this list too: a region that never gets copies must
    /// not hold local points for them.
    pub fn copies_from(&self, home: Option<&str>) -> Vec<&CopyTarget> {
        self.copies
            .iter()
            .filter(|c| home.is_none_or(|h| h.is_empty() || !same_region(&c.region, h)))
            .collect()
    }

    /// The disks of `vm` encrypted with customer-managed keys whose encryption set a copy
    /// region of this rule does not map: those copies are not made (reported, never made with
    /// platform keys). One entry per (region, disk).
    pub fn unmapped_encryption_sets(
        &self,
        vm: &VirtualMachine,
    ) -> Vec<super::UnmappedEncryptionSet> {
        let disks = vm.disks();
        let cmk: Vec<(String, String)> = disks
            .iter()
            .filter_map(|d| {
                Some((
                    describe_disk(d),
                    d.disk_encryption_set.as_ref()?.to_string(),
                ))
            })
            .collect();
        self.copies_from(vm.location.as_deref())
            .into_iter()
            .flat_map(|c| {
                super::unmapped_encryption_sets(c, cmk.iter().map(|(l, s)| (l.clone(), s.as_str())))
            })
            .collect()
    }

    /// The copy target for `region` (any spelling: `West US 2` = `westus2`).
    pub fn copy_to(&self, region: &str) -> Option<&CopyTarget> {
        self.copies.iter().find(|c| same_region(&c.region, region))
    }

    /// The retention of the local collection (`None`) or of the copy collection in `region`: the
    /// copy's own retention when it has one, else the rule's.
    pub fn retention_for_region(&self, region: Option<&str>) -> &Retention {
        region
            .and_then(|r| self.copy_to(r))
            .and_then(|c| c.retention.as_ref())
            .unwrap_or(&self.retention)
    }

    /// How long a local point / a copy may take before it is reported as failed.
    pub fn deadline(&self, role: Role) -> time::Duration {
        let minutes = match role {
            Role::Local => self.deadlines.local_minutes,
            Role::Copy => self.deadlines.copy_minutes,
        };
        time::Duration::minutes(i64::from(minutes))
    }

    /// Whether this rule creates points at the timer tick `tick`: always without a schedule of
    /// its own, else when the rule's schedule has an occurrence since the previous timer tick
    /// (so a rule at 02:30 runs at the first tick after 02:30, whatever the timer's spacing).
    pub fn is_due(&self, timer: &Schedule, tick: OffsetDateTime) -> Result<bool, ScheduleError> {
        match self.schedule.as_deref() {
            None => Ok(true),
            Some(expr) => Ok(rule_due(&Schedule::parse(expr)?, timer, tick)),
        }
    }

    /// The first timer tick after `tick` at which this rule creates points (looking a year of
    /// ticks ahead at most).
    pub fn next_due_tick(
        &self,
        timer: &Schedule,
        tick: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ScheduleError> {
        let own = self.schedule.as_deref().map(Schedule::parse).transpose()?;
        let mut at = tick;
        for _ in 0..10_000 {
            let Some(next) = timer.next_after(at) else {
                return Ok(None);
            };
            if own.as_ref().is_none_or(|s| rule_due(s, timer, next)) {
                return Ok(Some(next));
            }
            at = next;
        }
        Ok(None)
    }
}

/// How far past `now` a create's tick may lie: clock skew between the timer's instance and
/// the handler's. A tick further ahead names a point for a time that has not come.
pub const TICK_SKEW: time::Duration = time::Duration::minutes(5);
/// How old the tick of an on-demand create may be when it is first handled (queue delay).
pub const ON_DEMAND_MAX_AGE: time::Duration = time::Duration::hours(1);
/// The same for a continuation of one (a reschedule after a transient refusal, a retry after
/// `Failed`): those come back later by design, and the spacing check still holds them.
pub const ON_DEMAND_MAX_AGE_CONTINUED: time::Duration = time::Duration::days(1);

/// What a create's tick is, once checked against the rule's schedule ([`Rule::classify_tick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    /// An occurrence of the rule's schedule (a timer tick at which the rule is due): the point
    /// is named `rp-{tick}`.
    Scheduled,
    /// Not an occurrence, but a valid request for a point now: recent, and at least Azure's
    /// spacing away from the rule's previous and next scheduled points, so that it crowds out
    /// neither. Named `rp-{tick}-od`.
    OnDemand,
}

impl Rule {
    /// The latest timer tick at or before `t` at which this rule is due ([`rule_due`]), looking
    /// back as far as [`Schedule::latest_at_or_before`] does.
    pub fn latest_due_tick(
        &self,
        timer: &Schedule,
        t: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ScheduleError> {
        let Some(own) = self.schedule.as_deref().map(Schedule::parse).transpose()? else {
            return Ok(timer.latest_at_or_before(t));
        };
        // The rule is due at the first timer tick at or after each of its own occurrences.
        let mut cursor = t;
        for _ in 0..1_000 {
            let Some(occurrence) = own.latest_at_or_before(cursor) else {
                return Ok(None);
            };
            let Some(before) = occurrence.checked_sub(time::Duration::nanoseconds(1)) else {
                return Ok(None);
            };
            match timer.next_after(before) {
                Some(tick) if tick <= t => return Ok(Some(tick)),
                _ => {}
            }
            let Some(earlier) = occurrence.checked_sub(time::Duration::seconds(1)) else {
                return Ok(None);
            };
            cursor = earlier;
        }
        Ok(None)
    }

    /// Checks a create's `tick` against this rule's schedule: a scheduled occurrence, a valid
    /// on-demand request, or neither (the error says why). `continued` is a reschedule or a
    /// retry of an earlier request (it may come back later than a first try). `spacing` is
    /// Azure's minimum interval between two points of the VM in the point's consistency mode.
    pub fn classify_tick(
        &self,
        timer: &Schedule,
        tick: OffsetDateTime,
        now: OffsetDateTime,
        spacing: time::Duration,
        continued: bool,
    ) -> Result<TickKind, String> {
        let at = crate::schedule::rfc3339;
        let schedule_err = |e: ScheduleError| format!("rule {:?}: {e}", self.name);
        if now.checked_add(TICK_SKEW).is_some_and(|limit| tick > limit) {
            return Err(format!(
                "tick {} lies in the future (now {}): a create is for a tick that has come",
                at(tick),
                at(now)
            ));
        }
        let is_timer_tick = timer.latest_at_or_before(tick) == Some(tick);
        let due = match self.schedule.as_deref() {
            None => true,
            Some(expr) => rule_due(&Schedule::parse(expr).map_err(schedule_err)?, timer, tick),
        };
        if is_timer_tick && due {
            return Ok(TickKind::Scheduled);
        }
        let schedule = match self.schedule.as_deref() {
            Some(own) => format!(
                "rule schedule {own:?} at the ticks of the timer {:?}",
                timer.as_str()
            ),
            None => format!("timer schedule {:?}", timer.as_str()),
        };
        let not_scheduled = format!(
            "tick {} is not an occurrence of rule {:?} ({schedule})",
            at(tick),
            self.name
        );
        let max_age = if continued {
            ON_DEMAND_MAX_AGE_CONTINUED
        } else {
            ON_DEMAND_MAX_AGE
        };
        if now - tick > max_age {
            return Err(format!(
                "{not_scheduled}, and as an on-demand create it is too old: an on-demand \
                 create's tick is the time it was requested, at most {} min before it is handled",
                max_age.whole_minutes()
            ));
        }
        let next = self.next_due_tick(timer, now).map_err(schedule_err)?;
        if let Some(next) = next.filter(|n| *n - now < spacing) {
            return Err(format!(
                "{not_scheduled}, and an on-demand point at {} would come within {} min of the \
                 rule's next scheduled point at {}, which Azure would then refuse (points at \
                 least {} min apart)",
                at(now),
                (next - now).whole_minutes(),
                at(next),
                spacing.whole_minutes()
            ));
        }
        let previous = self.latest_due_tick(timer, now).map_err(schedule_err)?;
        if let Some(previous) = previous.filter(|p| now - *p < spacing) {
            return Err(format!(
                "{not_scheduled}, and an on-demand point at {} would come {} min after the \
                 rule's scheduled point at {}; Azure wants points at least {} min apart",
                at(now),
                (now - previous).whole_minutes(),
                at(previous),
                spacing.whole_minutes()
            ));
        }
        Ok(TickKind::OnDemand)
    }
}

/// Whether a create for `tick`, running at `now`, has been overtaken by the rule's next tick
/// `next`: its point would come within Azure's `spacing` of that tick's point, which must not
/// be crowded out (the next tick's create would be refused). Never when the ticks themselves
/// are closer than the spacing (the policy check warns about such schedules instead).
pub fn superseded_by_next_tick(
    tick: OffsetDateTime,
    next: OffsetDateTime,
    now: OffsetDateTime,
    spacing: time::Duration,
) -> bool {
    next - tick > spacing && now >= next - spacing
}

/// Whether `rule` has an occurrence in `(previous timer tick, tick]`.
pub fn rule_due(rule: &Schedule, timer: &Schedule, tick: OffsetDateTime) -> bool {
    let previous = timer.latest_at_or_before(tick - time::Duration::seconds(1));
    match previous {
        Some(prev) => rule.next_after(prev).is_some_and(|o| o <= tick),
        None => rule.latest_at_or_before(tick).is_some(),
    }
}

/// Whether `excluded` covers every managed disk of `vm`: a point would then restore nothing
/// (a VM whose disks carry no managed disk id has nothing to exclude, and is not counted here).
pub fn excludes_every_disk(vm: &VirtualMachine, excluded: &[ResourceId]) -> bool {
    let disks = vm.disks();
    let mut with_id = disks
        .iter()
        .filter_map(|d| d.managed_disk_id.as_ref())
        .peekable();
    with_id.peek().is_some() && with_id.all(|id| excluded.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VmBuilder;

    #[test]
    fn a_point_is_refused_only_when_every_managed_disk_is_excluded() {
        let os = crate::testing::disk_id("s1", "rg", "vm1-os");
        let data = crate::testing::disk_id("s1", "rg", "vm1-data");
        let with_data = VmBuilder::new("s1", "rg", "vm1")
            .data_disk(0, &data, "Premium_LRS")
            .build();
        // A VM whose disks carry no managed disk id has nothing to exclude.
        let mut unmanaged = VmBuilder::new("s1", "rg", "vm1").build();
        if let Some(sp) = unmanaged
            .properties
            .as_mut()
            .and_then(|p| p.storage_profile.as_mut())
        {
            if let Some(d) = sp.os_disk.as_mut() {
                d.managed_disk = None;
            }
        }
        // (case, VM, excluded, every disk excluded?)
        let table: Vec<(&str, &VirtualMachine, Vec<ResourceId>, bool)> = vec![
            ("nothing excluded", &with_data, vec![], false),
            (
                "a data disk excluded",
                &with_data,
                vec![data.clone()],
                false,
            ),
            ("the OS disk excluded", &with_data, vec![os.clone()], false),
            (
                "both excluded",
                &with_data,
                vec![os.clone(), data.clone()],
                true,
            ),
            ("no managed disk", &unmanaged, vec![os.clone()], false),
        ];
        for (case, vm, excluded, want) in table {
            assert_eq!(excludes_every_disk(vm, &excluded), want, "{case}");
        }
    }

    #[test]
    fn late_creates_are_superseded_only_near_the_next_tick() {
        use time::macros::datetime;
        let tick = datetime!(2026-11-25 00:00 UTC);
        let h = time::Duration::hours;
        let cases = [
            // (hours between ticks, hours after the tick the create runs, spacing h, superseded)
            (4, 0, 3, false),
            (4, 0, 1, false),
            (4, 1, 3, true), // 1 h after: within 3 h of the next tick (at 4 h)
            (4, 2, 1, false),
            (4, 3, 1, true),
            (4, 5, 1, true), // after the next tick itself
            (24, 20, 3, false),
            (24, 21, 3, true),
            (2, 5, 3, false), // ticks closer than the spacing: never
            // Ticks exactly the spacing apart: `now >= next - spacing` holds from the tick
            // on, so counting them would supersede every create, even an on-time one.
            (3, 0, 3, false),
            (3, 2, 3, false),
        ];
        for (every, late, spacing, want) in cases {
            assert_eq!(
                superseded_by_next_tick(tick, tick + h(every), tick + h(late), h(spacing)),
                want,
                "ticks {every} h apart, {late} h late, spacing {spacing} h"
            );
        }
    }

    #[test]
    fn next_due_tick_follows_the_rules_own_schedule() {
        use time::macros::datetime;
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let tick = datetime!(2026-11-25 04:00 UTC);
        let mut r = crate::testing::rule("r", 3);
        assert_eq!(
            r.next_due_tick(&timer, tick).unwrap(),
            Some(datetime!(2026-11-25 08:00 UTC))
        );
        r.schedule = Some("0 30 1 * * *".into()); // daily at 01:30: due at the 04:00 tick
        assert_eq!(
            r.next_due_tick(&timer, tick).unwrap(),
            Some(datetime!(2026-11-26 04:00 UTC))
        );
    }
    use crate::azure::models::{
        DataDisk, DiffDiskSettings, DiskProperties, DiskSku, ManagedDiskParameters, OsDisk,
        StorageProfile, VirtualMachineProperties,
    };
    use crate::policy::{DiskExclusions, Policy};
    use time::macros::datetime;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn disk_id(name: &str) -> ResourceId {
        ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "disks", name).unwrap()
    }

    fn data(lun: i32, name: &str, sku: &str) -> DataDisk {
        DataDisk {
            lun,
            name: Some(name.to_string()),
            managed_disk: Some(ManagedDiskParameters {
                id: Some(disk_id(name).to_string()),
                storage_account_type: Some(sku.to_string()),
                disk_encryption_set: None,
            }),
            disk_size_gb: None,
            ..Default::default()
        }
    }

    pub(crate) fn vm_with(
        tags: &[(&str, &str)],
        ephemeral_os: bool,
        disks: Vec<DataDisk>,
    ) -> VirtualMachine {
        VirtualMachine {
            id: Some(
                ResourceId::new_in_group(SUB, "rg", "Microsoft.Compute", "virtualMachines", "vm1")
                    .unwrap()
                    .to_string(),
            ),
            name: Some("vm1".into()),
            location: Some("eastus".into()),
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            properties: Some(VirtualMachineProperties {
                storage_profile: Some(StorageProfile {
                    os_disk: Some(OsDisk {
                        name: Some("vm1-os".into()),
                        managed_disk: Some(ManagedDiskParameters {
                            id: Some(disk_id("vm1-os").to_string()),
                            storage_account_type: Some("Premium_LRS".into()),
                            disk_encryption_set: None,
                        }),
                        diff_disk_settings: ephemeral_os.then(|| DiffDiskSettings {
                            option: Some("Local".into()),
                            placement: None,
                        }),
                        ..Default::default()
                    }),
                    data_disks: Some(disks),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rule() -> Rule {
        Policy::from_json_str(
            r#"{"rules":[{"name":"r","targets":{},"retention":{"keepLast":3},
               "consistencyTag":"rp-mode",
               "copies":[{"region":"westus2","retention":{"keepLast":9}},{"region":"northeurope"}],
               "deadlines":{"localMinutes":30,"copyMinutes":600}}]}"#,
        )
        .unwrap()
        .rules
        .remove(0)
    }

    #[test]
    fn consistency_tag_overrides_the_rule_mode() {
        let r = rule();
        for (tags, want, logs) in [
            (vec![], ConsistencyMode::ApplicationConsistent, false),
            (
                vec![("rp-mode", "CrashConsistent")],
                ConsistencyMode::CrashConsistent,
                false,
            ),
            (
                vec![("RP-MODE", "crashconsistent")],
                ConsistencyMode::CrashConsistent,
                false,
            ),
            (
                vec![("rp-mode", "ApplicationConsistent")],
                ConsistencyMode::ApplicationConsistent,
                false,
            ),
            (
                vec![("rp-mode", "fast")],
                ConsistencyMode::ApplicationConsistent,
                true,
            ),
            (
                vec![("rp-mode", "FileSystemConsistent")],
                ConsistencyMode::ApplicationConsistent,
                true,
            ),
        ] {
            let (mode, problem) = r.consistency_for(&vm_with(&tags, false, vec![]));
            assert_eq!(mode, want, "{tags:?}");
            assert_eq!(problem.is_some(), logs, "{tags:?}");
        }
        let (_, problem) = r.consistency_for(&vm_with(&[("rp-mode", "fast")], false, vec![]));
        assert_eq!(
            problem.unwrap(),
            "VM vm1: tag \"rp-mode\" = \"fast\" is not a consistency mode (expected CrashConsistent \
             or ApplicationConsistent); using the rule's ApplicationConsistent"
        );
    }

    #[test]
    fn tag_is_ignored_when_the_rule_has_no_consistency_tag() {
        let mut r = rule();
        r.consistency_tag = None;
        r.consistency = ConsistencyMode::CrashConsistent;
        let (mode, problem) = r.consistency_for(&vm_with(
            &[("rp-mode", "ApplicationConsistent")],
            false,
            vec![],
        ));
        assert_eq!((mode, problem), (ConsistencyMode::CrashConsistent, None));
    }

    #[test]
    fn exclusions_by_lun_name_tag_sku_and_automatic_ones() {
        let mut r = rule();
        r.exclude_disks = DiskExclusions {
            luns: vec![1],
            names: vec!["SCRATCH".into()],
            tags: [("backup".to_string(), "skip".to_string())].into(),
            skus: vec!["ultrassd_lrs".into()],
        };
        let vm = vm_with(
            &[],
            true,
            vec![
                data(3, "tagged", "Premium_LRS"),
                data(0, "keep-me", "Premium_LRS"),
                data(1, "by-lun", "Premium_LRS"),
                data(2, "scratch", "Premium_LRS"),
                data(4, "shared", "Premium_LRS"),
                data(5, "ultra", "UltraSSD_LRS"),
                data(6, "v2", "PremiumV2_LRS"),
            ],
        );
        let info = vec![
            DiskInfo {
                id: disk_id("TAGGED"), // ids compare case-insensitively
                tags: [("Backup".to_string(), "Skip".to_string())].into(),
                max_shares: None,
                sku: None,
            },
            DiskInfo {
                id: disk_id("shared"),
                tags: Tags::new(),
                max_shares: Some(2),
                sku: Some("Premium_LRS".into()),
            },
            DiskInfo {
                id: disk_id("keep-me"),
                // The excluded tag's key with another value, and its value under another key.
                tags: [
                    ("BACKUP".to_string(), "keep".to_string()),
                    ("note".to_string(), "skip".to_string()),
                ]
                .into(),
                max_shares: Some(1),
                sku: Some("Premium_LRS".into()),
            },
        ];
        let got: Vec<(String, String)> = r
            .excluded_disks(&vm, &info)
            .into_iter()
            .map(|(id, why)| (id.name().unwrap().to_string(), why))
            .collect();
        let want: Vec<(String, String)> = [
            (
                "vm1-os",
                "ephemeral OS disk: not supported by restore points",
            ),
            ("by-lun", "excludeDisks.luns: LUN 1"),
            ("scratch", "excludeDisks.names: scratch"),
            ("tagged", "excludeDisks.tags: Backup=Skip"),
            (
                "shared",
                "shared disk (maxShares 2): not supported by restore points",
            ),
            ("ultra", "excludeDisks.skus: UltraSSD_LRS"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        // PremiumV2 is not listed in skus, so it stays in (check_vm reports it for crash mode).
        assert_eq!(got, want);
    }

    /// `refusal` gives the reason `matches` says no, in the order the checks run.
    #[test]
    fn refusal_names_why_the_targets_do_not_select_a_vm() {
        let targets =
            |json: &str| -> crate::policy::Targets { serde_json::from_str(json).unwrap() };
        let other_sub = "00000000-0000-0000-0000-000000000002";
        let cases = [
            ("{}".to_string(), vec![], None),
            (
                format!(r#"{{"subscriptions":["{other_sub}"]}}"#),
                vec![],
                Some("the VM lies outside the rule's scopes"),
            ),
            (
                format!(r#"{{"subscriptions":["{SUB}"],"tags":{{"env":"prod","tier":"*"}}}}"#),
                vec![("ENV", "Prod"), ("tier", "db")],
                None,
            ),
            (
                r#"{"tags":{"env":"prod","tier":"*"}}"#.to_string(),
                vec![("env", "dev"), ("tier", "db")],
                Some("the VM lacks the rule's required tag env=prod"),
            ),
            (
                r#"{"tags":{"env":"prod","tier":"*"}}"#.to_string(),
                vec![("env", "prod")],
                Some("the VM lacks the rule's required tag tier=*"),
            ),
            (
                r#"{"excludeTags":{"noBackup":"*"}}"#.to_string(),
                vec![("nobackup", "yes")],
                Some("the VM opts out with the rule's excludeTags noBackup=*"),
            ),
            (
                r#"{"excludeTags":{"noBackup":"*"}}"#.to_string(),
                vec![("backup", "yes")],
                None,
            ),
            // Scope first, then required tags, then excludeTags.
            (
                format!(r#"{{"subscriptions":["{other_sub}"],"excludeTags":{{"noBackup":"*"}}}}"#),
                vec![("noBackup", "1")],
                Some("the VM lies outside the rule's scopes"),
            ),
        ];
        for (json, tags, want) in cases {
            let t = targets(&json);
            let vm = vm_with(&tags, false, vec![]);
            assert_eq!(t.refusal(&vm).as_deref(), want, "{json} {tags:?}");
            assert_eq!(t.matches(&vm), want.is_none(), "{json} {tags:?}");
        }
        let no_id = VirtualMachine::default();
        assert_eq!(
            targets("{}").refusal(&no_id).as_deref(),
            Some("the VM has no valid id")
        );
    }

    #[test]
    fn nothing_is_excluded_by_default() {
        let vm = vm_with(&[], false, vec![data(0, "d0", "UltraSSD_LRS")]);
        assert!(rule().excluded_disks(&vm, &[]).is_empty());
    }

    #[test]
    fn disk_info_from_a_disk_get() {
        let disk = Disk {
            id: Some(disk_id("d").to_string()),
            tags: Some([("a".to_string(), "b".to_string())].into()),
            sku: Some(DiskSku {
                name: Some("UltraSSD_LRS".into()),
            }),
            properties: Some(DiskProperties {
                max_shares: Some(3),
                disk_size_gb: None,
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = DiskInfo::from_disk(&disk).unwrap();
        assert_eq!(info.id, disk_id("d"));
        assert_eq!(info.max_shares, Some(3));
        assert_eq!(info.sku.as_deref(), Some("UltraSSD_LRS"));
        assert!(DiskInfo::from_disk(&Disk::default()).is_none());
    }

    #[test]
    fn retention_per_region_and_deadlines() {
        let r = rule();
        assert_eq!(r.retention_for_region(None).keep_last, 3);
        assert_eq!(r.retention_for_region(Some("westus2")).keep_last, 9);
        assert_eq!(r.retention_for_region(Some("West US 2")).keep_last, 9);
        // A copy without its own retention, and an unknown region, use the rule's.
        assert_eq!(r.retention_for_region(Some("northeurope")).keep_last, 3);
        assert_eq!(r.retention_for_region(Some("japaneast")).keep_last, 3);
        assert_eq!(r.deadline(Role::Local), time::Duration::minutes(30));
        assert_eq!(r.deadline(Role::Copy), time::Duration::hours(10));
        let regions: Vec<&str> = r.copy_regions().iter().map(|c| c.region.as_str()).collect();
        assert_eq!(regions, vec!["westus2", "northeurope"]);
    }

    /// Without a schedule of its own a rule's latest due tick is the timer's; with one, the
    /// first timer tick after its latest occurrence that has come by `t`.
    #[test]
    fn latest_due_tick_is_the_first_timer_tick_after_an_occurrence_not_after_t() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let mut r = rule();
        for (t, want) in [
            (
                datetime!(2026-11-25 05:00 UTC),
                datetime!(2026-11-25 04:00 UTC),
            ),
            (
                datetime!(2026-11-25 04:00 UTC),
                datetime!(2026-11-25 04:00 UTC),
            ),
            (
                datetime!(2026-11-25 03:59 UTC),
                datetime!(2026-11-25 00:00 UTC),
            ),
        ] {
            assert_eq!(r.latest_due_tick(&timer, t).unwrap(), Some(want), "{t}");
        }
        r.schedule = Some("0 30 2 * * *".into()); // daily at 02:30: due at the 04:00 tick
        for (t, want) in [
            (
                datetime!(2026-11-25 05:00 UTC),
                datetime!(2026-11-25 04:00 UTC),
            ),
            (
                datetime!(2026-11-25 04:00 UTC),
                datetime!(2026-11-25 04:00 UTC),
            ),
            // 02:30 has come, its tick has not: the day before's.
            (
                datetime!(2026-11-25 03:00 UTC),
                datetime!(2026-11-24 04:00 UTC),
            ),
        ] {
            assert_eq!(r.latest_due_tick(&timer, t).unwrap(), Some(want), "{t}");
        }
    }

    /// `classify_tick`'s checks in order: a tick in the future (beyond the skew), a scheduled
    /// tick, an on-demand tick too old, or within the spacing of the next or the previous
    /// scheduled point; each bound at its edge. Timer every 4 h (00:00, 04:00, 08:00 …).
    #[test]
    fn classify_tick_table() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let plain = rule();
        let mut daily = rule();
        daily.schedule = Some("0 30 2 * * *".into()); // due at 04:00 only
        let d = |h: u8, m: u8| {
            datetime!(2026-11-25 00:00 UTC)
                + time::Duration::hours(h.into())
                + time::Duration::minutes(m.into())
        };
        let hm = |h: i64, m: i64| time::Duration::hours(h) + time::Duration::minutes(m);
        // (case, rule, tick, now, spacing, continued, Ok(kind) or Err(what the error says))
        type Case<'a> = (
            &'a str,
            &'a Rule,
            OffsetDateTime,
            OffsetDateTime,
            time::Duration,
            bool,
            Result<TickKind, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a timer tick",
                &plain,
                d(4, 0),
                d(5, 0),
                hm(1, 0),
                false,
                Ok(TickKind::Scheduled),
            ),
            (
                "a timer tick the rule is not due at",
                &daily,
                d(8, 0),
                d(8, 10),
                hm(1, 0),
                false,
                Ok(TickKind::OnDemand),
            ),
            (
                "the rule's due tick",
                &daily,
                d(4, 0),
                d(4, 10),
                hm(1, 0),
                false,
                Ok(TickKind::Scheduled),
            ),
            (
                "on demand, clear of both ticks",
                &plain,
                d(5, 30),
                d(5, 30),
                hm(1, 0),
                false,
                Ok(TickKind::OnDemand),
            ),
            (
                "exactly the skew ahead",
                &plain,
                d(5, 35),
                d(5, 30),
                hm(1, 0),
                false,
                Ok(TickKind::OnDemand),
            ),
            (
                "beyond the skew",
                &plain,
                d(5, 36),
                d(5, 30),
                hm(1, 0),
                false,
                Err("lies in the future"),
            ),
            (
                "exactly the max age old",
                &plain,
                d(4, 30),
                d(5, 30),
                hm(1, 0),
                false,
                Ok(TickKind::OnDemand),
            ),
            (
                "older than the max age",
                &plain,
                d(3, 30),
                d(5, 30),
                hm(1, 0),
                false,
                Err("too old"),
            ),
            (
                "a continuation may be a day old",
                &plain,
                d(3, 30),
                d(5, 30),
                hm(1, 0),
                true,
                Ok(TickKind::OnDemand),
            ),
            (
                "the next tick exactly the spacing away",
                &plain,
                d(6, 0),
                d(6, 0),
                hm(2, 0),
                false,
                Ok(TickKind::OnDemand),
            ),
            (
                "the next tick within the spacing",
                &plain,
                d(6, 1),
                d(6, 1),
                hm(2, 0),
                false,
                Err("within 119 min of the rule's next scheduled point"),
            ),
            (
                "the previous tick within the spacing",
                &plain,
                d(5, 0),
                d(5, 0),
                hm(3, 0),
                false,
                Err("60 min after the rule's scheduled point"),
            ),
            (
                "the previous tick within the spacing, the next one not",
                &plain,
                d(5, 59),
                d(5, 59),
                hm(2, 0),
                false,
                Err("119 min after"),
            ),
        ];
        for (case, r, tick, now, spacing, continued, want) in cases {
            let got = r.classify_tick(&timer, tick, now, spacing, continued);
            match want {
                Ok(kind) => assert_eq!(got, Ok(kind), "{case}"),
                Err(what) => {
                    let e = got.expect_err(case);
                    assert!(e.contains(what), "{case}: {e}");
                }
            }
        }
    }

    #[test]
    fn rule_is_due_when_it_has_an_occurrence_since_the_previous_tick() {
        let timer = Schedule::parse("0 0 */4 * * *").unwrap();
        let mut r = rule();
        assert!(r.is_due(&timer, datetime!(2026-11-25 04:00 UTC)).unwrap());
        r.schedule = Some("0 30 2 * * *".into()); // daily at 02:30
        for (tick, want) in [
            (datetime!(2026-11-25 00:00 UTC), false),
            (datetime!(2026-11-25 04:00 UTC), true), // 02:30 lies in (00:00, 04:00]
            (datetime!(2026-11-25 08:00 UTC), false),
            (datetime!(2026-11-26 04:00 UTC), true),
        ] {
            assert_eq!(r.is_due(&timer, tick).unwrap(), want, "{tick}");
        }
        // An occurrence exactly at the tick counts for that tick only.
        r.schedule = Some("0 0 8 * * *".into());
        assert!(r.is_due(&timer, datetime!(2026-11-25 08:00 UTC)).unwrap());
        assert!(!r.is_due(&timer, datetime!(2026-11-25 12:00 UTC)).unwrap());
        r.schedule = Some("not a schedule".into());
        assert!(r.is_due(&timer, datetime!(2026-11-25 08:00 UTC)).is_err());
    }
}
