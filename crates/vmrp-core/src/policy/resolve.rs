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
mod tests;
