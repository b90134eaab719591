//! Deterministic names and message ids: everything derives from the VM id and the tick, never
//! from the wall clock, so a retried or duplicated invocation addresses the same resources.
//! Collection names are described in `docs/lifecycle.md` ("Names"); why ids are deterministic in
//! docs/architecture.md ("Idempotency").

use sha2::{Digest, Sha256};
use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::azure::ResourceId;

/// ARM's name limit for restore point collections and restore points.
const MAX_NAME: usize = 80;
/// Hex digits of the VM id's hash in collection names: 32 bits, so two VMs that share a name and
/// a collection resource group collide with odds of 1 in 4 billion.
const HASH_HEX: usize = 8;

/// Why no resource name or id could be formed (a region or group name that is none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(transparent)]
    Region(#[from] crate::policy::regions::RegionError),
    #[error(transparent)]
    Id(#[from] crate::azure::id::ResourceIdError),
}

/// The VM's local collection: `rpc-{vmName}-{hash}`, where `hash` is 8 hex digits of the SHA-256
/// of the lowercased VM id. The name alone keeps it readable; the hash makes it unique per VM id,
/// so VMs of the same name in other groups or subscriptions that share a `collectionResourceGroup`
/// never meet in one collection.
pub fn collection_name(vm: &ResourceId) -> String {
    let hash = vm_hash(vm);
    let keep = MAX_NAME - "rpc-".len() - 1 - HASH_HEX;
    format!(
        "rpc-{}-{hash}",
        readable(vm.name().unwrap_or_default(), keep)
    )
}

/// The collection in `region` (an ARM location name, see `regions::region_name`) that holds
/// copies of the VM's points: `rpc-{vmName}-{hash}_{region}`. After its last `-` a local name has
/// exactly 8 hex digits and a copy name has `{hash}_{region}` (a region holds no `-` and no `_`),
/// so no copy name equals any VM's local name (`app-westus2`'s local collection is not `app`'s
/// westus2 copies), and two copy names are equal only for the same VM id and region.
pub fn copy_collection_name(vm: &ResourceId, region: &str) -> String {
    let hash = vm_hash(vm);
    let keep = MAX_NAME
        .saturating_sub("rpc-".len() + 1 + HASH_HEX + 1 + region.len())
        .max(1);
    format!(
        "rpc-{}-{hash}_{region}",
        readable(vm.name().unwrap_or_default(), keep)
    )
}

/// The name vmrp gave a VM's local collection before names carried the VM id's hash:
/// `rpc-{vmName}`. A collection of that name whose `source.id` is the VM keeps being used.
pub fn legacy_collection_name(vm_name: &str) -> String {
    bounded(format!("rpc-{vm_name}"))
}

/// The name vmrp gave copy collections before names carried the VM id's hash:
/// `rpc-{vmName}-{region}`. Reused when its `source.id` is the VM's local collection.
pub fn legacy_copy_collection_name(vm_name: &str, region: &str) -> String {
    bounded(format!("rpc-{vm_name}-{}", region.to_ascii_lowercase()))
}

/// 8 hex digits of SHA-256 over the lowercased id (ARM ids compare case-insensitively).
fn vm_hash(vm: &ResourceId) -> String {
    let digest = Sha256::digest(vm.as_str().to_ascii_lowercase().as_bytes());
    digest[..HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The VM name as a name part: characters ARM's collection names do not take become `-`, and
/// it is cut to `keep` characters (the hash carries the uniqueness, this part only the reading).
fn readable(vm_name: &str, keep: usize) -> String {
    let mut out: String = vm_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(keep)
        .collect();
    if out.is_empty() {
        out.push_str("vm");
    }
    out
}

/// `rp-{yyyyMMddTHHmmZ}` for the tick, `-r{n}` for the n-th retry after `Failed`.
pub fn restore_point_name(tick: OffsetDateTime, retry: u32) -> String {
    let t = tick.to_offset(UtcOffset::UTC);
    // Invariant: a date-time has every component this description names, and formatting into a
    // String does no I/O, so it cannot fail.
    let stamp = t
        .format(format_description!("[year][month][day]T[hour][minute]Z"))
        .expect("tick formats");
    if retry == 0 {
        format!("rp-{stamp}")
    } else {
        format!("rp-{stamp}-r{retry}")
    }
}

/// Marks the name of an on-demand point (a create whose tick is not a scheduled occurrence,
/// see docs/lifecycle.md): `rp-{yyyyMMddTHHmmZ}-od`, `-od-r{n}` for retries.
const ON_DEMAND: &str = "-od";

/// `rp-{yyyyMMddTHHmmZ}-od` for an on-demand create at `tick`, `-od-r{n}` for its n-th retry:
/// never equal to a scheduled point's name, so the two never collide.
pub fn on_demand_point_name(tick: OffsetDateTime, retry: u32) -> String {
    let scheduled = restore_point_name(tick, 0);
    if retry == 0 {
        format!("{scheduled}{ON_DEMAND}")
    } else {
        format!("{scheduled}{ON_DEMAND}-r{retry}")
    }
}

/// Whether `name` is an on-demand point's ([`on_demand_point_name`]).
pub fn is_on_demand_name(name: &str) -> bool {
    parse_restore_point_name(name).is_some()
        && name
            .strip_prefix("rp-")
            .and_then(|rest| rest.split_once('Z'))
            .is_some_and(|(_, tail)| tail.starts_with(ON_DEMAND))
}

/// The tick and retry number encoded in a name made by [`restore_point_name`] or
/// [`on_demand_point_name`]; `None` for names other tools chose.
pub fn parse_restore_point_name(name: &str) -> Option<(OffsetDateTime, u32)> {
    let rest = name.strip_prefix("rp-")?;
    let (stamp, retry) = match rest.split_once("-r") {
        Some((s, r)) => (s, r.parse().ok()?),
        None => (rest, 0),
    };
    let stamp = stamp.strip_suffix(ON_DEMAND).unwrap_or(stamp);
    let stamp = stamp.strip_suffix('Z')?;
    let t = PrimitiveDateTime::parse(
        stamp,
        format_description!("[year][month][day]T[hour][minute]"),
    )
    .ok()?;
    Some((t.assume_utc(), retry))
}

/// The collection id for a VM's local points, in `resource_group` (else the VM's group).
pub fn collection_id(
    vm: &ResourceId,
    resource_group: Option<&str>,
) -> Result<ResourceId, NameError> {
    let rg = resource_group.or(vm.resource_group()).unwrap_or_default();
    Ok(ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &collection_name(vm),
    )?)
}

/// The collection id for a VM's copies in `region`; the region is normalised to its ARM name
/// (`"Sweden Central"` → `swedencentral`) and refused when it is not a region name.
pub fn copy_collection_id(
    vm: &ResourceId,
    region: &str,
    resource_group: Option<&str>,
) -> Result<ResourceId, NameError> {
    let region = crate::policy::regions::region_name(region)?;
    let rg = resource_group.or(vm.resource_group()).unwrap_or_default();
    Ok(ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &copy_collection_name(vm, &region),
    )?)
}

/// [`collection_id`] under the pre-hash name; `None` when that name forms no id.
pub fn legacy_collection_id(vm: &ResourceId, resource_group: Option<&str>) -> Option<ResourceId> {
    let rg = resource_group.or(vm.resource_group())?;
    ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &legacy_collection_name(vm.name()?),
    )
    .ok()
}

/// [`copy_collection_id`] under the pre-hash name; `None` when that name forms no id.
pub fn legacy_copy_collection_id(
    vm: &ResourceId,
    region: &str,
    resource_group: Option<&str>,
) -> Option<ResourceId> {
    let region = crate::policy::regions::region_name(region).ok()?;
    let rg = resource_group.or(vm.resource_group())?;
    ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &legacy_copy_collection_name(vm.name()?, &region),
    )
    .ok()
}

/// A deterministic Service Bus `MessageId`: the same (kind, target, tick, attempt) always gives
/// the same id, so duplicate detection drops replays. 32 hex characters.
pub fn message_id(kind: &str, target: &str, tick: OffsetDateTime, attempt: u32) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(target.to_ascii_lowercase().as_bytes());
    h.update([0]);
    h.update(tick.unix_timestamp().to_be_bytes());
    h.update([0]);
    h.update(attempt.to_be_bytes());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Names longer than ARM allows keep a readable prefix and a hash of the whole.
fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX_NAME - suffix.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{suffix}", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_from_tick() {
        let tick = datetime!(2026-11-25 03:00:00 UTC);
        assert_eq!(restore_point_name(tick, 0), "rp-20261125T0300Z");
        assert_eq!(restore_point_name(tick, 2), "rp-20261125T0300Z-r2");
        let offset_tick = datetime!(2026-11-25 04:00:00 +01:00);
        assert_eq!(restore_point_name(offset_tick, 0), "rp-20261125T0300Z");
        assert_eq!(
            parse_restore_point_name("rp-20261125T0300Z-r2"),
            Some((tick, 2))
        );
        assert_eq!(
            parse_restore_point_name("rp-20261125T0300Z"),
            Some((tick, 0))
        );
        assert_eq!(parse_restore_point_name("manual-point"), None);
        assert_eq!(on_demand_point_name(tick, 0), "rp-20261125T0300Z-od");
        assert_eq!(on_demand_point_name(tick, 2), "rp-20261125T0300Z-od-r2");
        assert_eq!(
            parse_restore_point_name("rp-20261125T0300Z-od-r2"),
            Some((tick, 2))
        );
        assert!(is_on_demand_name("rp-20261125T0300Z-od"));
        assert!(is_on_demand_name("rp-20261125T0300Z-od-r1"));
        assert!(!is_on_demand_name("rp-20261125T0300Z-r1"));
        assert!(!is_on_demand_name("rp-20261125T0300Z"));
    }

    fn vm(sub: &str, rg: &str, name: &str) -> ResourceId {
        ResourceId::parse(&format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        ))
        .unwrap()
    }

    /// ARM's rule for the names vmrp makes: 1-80 characters, alphanumerics, `_`, `.`, `-`,
    /// starting with an alphanumeric and ending with an alphanumeric or `_`.
    fn arm_name_ok(name: &str) -> bool {
        let first = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let last = name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        (1..=MAX_NAME).contains(&name.len())
            && first
            && last
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn collection_names_are_readable_and_carry_the_vm_ids_hash() {
        let a = vm("s1", "rg-a", "vm-01");
        let name = collection_name(&a);
        assert!(name.starts_with("rpc-vm-01-"), "{name}");
        assert_eq!(name.len(), "rpc-vm-01-".len() + HASH_HEX);
        assert_eq!(
            name,
            collection_name(&vm("S1", "RG-A", "VM-01")).replace("VM", "vm")
        );
        assert_eq!(
            copy_collection_name(&a, "westus2"),
            format!("{name}_westus2")
        );
        // Deterministic: the same id gives the same name in every process.
        assert_eq!(name, collection_name(&a.clone()));
    }

    #[test]
    fn same_vm_name_in_another_group_or_subscription_gets_another_collection() {
        let a = vm("s1", "rg-a", "web01");
        let b = vm("s1", "rg-b", "web01");
        let c = vm("s2", "rg-a", "web01");
        let shared = Some("rg-restore-points");
        let ids: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|v| collection_id(v, shared).unwrap())
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0].name(), ids[2].name());
        // The old scheme gave all three the same name.
        assert_eq!(legacy_collection_name("web01"), "rpc-web01");
    }

    #[test]
    fn a_copy_name_is_never_another_vms_local_name() {
        // `app`'s westus2 copies and a VM named `app-westus2` (old names: both rpc-app-westus2).
        let app = vm("s1", "rg", "app");
        let other = vm("s1", "rg", "app-westus2");
        assert_eq!(
            legacy_copy_collection_name("app", "westus2"),
            legacy_collection_name("app-westus2")
        );
        let copy = copy_collection_name(&app, "westus2");
        assert_ne!(copy, collection_name(&other));
        // Structurally: a local name ends in `-` + 8 hex digits, a copy name never does.
        let tail = |n: &str| n.rsplit('-').next().unwrap().to_string();
        assert!(tail(&collection_name(&other))
            .chars()
            .all(|c| c.is_ascii_hexdigit()));
        assert!(tail(&copy).contains('_'));
    }

    #[test]
    fn names_follow_arms_rules_for_any_vm_name() {
        for name in ["vm-01", "a", "x.y_z", "weird name(1)", &"x".repeat(64), "é"] {
            let v = vm("s1", "rg", &name.replace(' ', "%20"));
            let local = collection_name(&v);
            assert!(arm_name_ok(&local), "{local}");
            for region in ["westus2", "germanywestcentral", &"r".repeat(32)] {
                let copy = copy_collection_name(&v, region);
                assert!(arm_name_ok(&copy), "{copy}");
                assert!(copy.ends_with(&format!("_{region}")), "{copy}");
            }
        }
        let long = collection_name(&vm("s1", "rg", &"x".repeat(100)));
        assert_eq!(long.len(), MAX_NAME);
        assert_ne!(long, collection_name(&vm("s1", "rg", &"x".repeat(99))));
    }

    #[test]
    fn copy_ids_normalise_the_region_and_refuse_what_is_none() {
        let v = vm("s1", "rg", "vm1");
        let id = copy_collection_id(&v, "Sweden Central", None).unwrap();
        assert!(id.name().unwrap().ends_with("_swedencentral"), "{id}");
        assert_eq!(id, copy_collection_id(&v, "swedencentral", None).unwrap());
        for bad in ["sweden/central", "", "west-us"] {
            assert!(copy_collection_id(&v, bad, None).is_err(), "{bad:?}");
        }
        assert!(collection_id(&v, Some("rg/x")).is_err());
    }

    #[test]
    fn legacy_names_are_the_old_scheme() {
        let v = vm("s1", "rg", "vm-01");
        assert_eq!(
            legacy_collection_id(&v, None).unwrap().name(),
            Some("rpc-vm-01")
        );
        assert_eq!(
            legacy_copy_collection_id(&v, "West US 2", Some("rg-dr"))
                .unwrap()
                .to_string(),
            "/subscriptions/s1/resourceGroups/rg-dr/providers/Microsoft.Compute/restorePointCollections/rpc-vm-01-westus2"
        );
        let long = legacy_collection_name(&"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
    }

    /// `bounded` cuts a long name at byte 71 (80 − `-` − 8 hex digits); when that byte is inside
    /// a multi-byte character it steps back to the character's start, never past it (a longer
    /// name than ARM takes) and never into it (a slice panic).
    #[test]
    fn a_long_name_is_cut_before_a_character_that_straddles_the_cut() {
        // "rpc-" + 66 × "x" fills bytes 0..70; the first "é" takes bytes 70 and 71. On a
        // thread with a deadline: a step that never reaches a boundary must fail, not hang.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(legacy_collection_name(&format!(
                "{}{}",
                "x".repeat(66),
                "é".repeat(20)
            )));
        });
        let name = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("bounded finishes");
        let prefix = format!("rpc-{}-", "x".repeat(66));
        assert!(name.starts_with(&prefix), "{name}");
        assert_eq!(name.len(), prefix.len() + HASH_HEX, "{name}");
        assert!(name.len() <= MAX_NAME);
        // A name of exactly the limit is kept as it is.
        let at_limit = format!("rpc-{}", "y".repeat(MAX_NAME - 4));
        assert_eq!(legacy_collection_name(&"y".repeat(MAX_NAME - 4)), at_limit);
    }

    #[test]
    fn message_ids_are_deterministic_and_distinct() {
        let tick = datetime!(2026-11-25 03:00:00 UTC);
        let a = message_id("create", "/subscriptions/s/VM", tick, 0);
        assert_eq!(
            a,
            message_id("create", "/subscriptions/s/vm", tick, 0),
            "case-insensitive target"
        );
        assert_eq!(a.len(), 32);
        assert_ne!(a, message_id("create", "/subscriptions/s/vm", tick, 1));
        assert_ne!(a, message_id("poll", "/subscriptions/s/vm", tick, 0));
    }
}
