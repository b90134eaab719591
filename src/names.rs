//! Deterministic names and message ids (DESIGN §3): everything derives from the VM and the tick,
//! never from the wall clock, so a retried or duplicated invocation addresses the same resources.

use sha2::{Digest, Sha256};
use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::azure::ResourceId;

/// ARM's name limit for restore point collections and restore points.
const MAX_NAME: usize = 80;

/// The VM's local collection: `rpc-{vmName}`.
pub fn collection_name(vm_name: &str) -> String {
    bounded(format!("rpc-{vm_name}"))
}

/// The collection in `region` that holds copies of the VM's points: `rpc-{vmName}-{region}`.
pub fn copy_collection_name(vm_name: &str, region: &str) -> String {
    bounded(format!("rpc-{vm_name}-{}", region.to_ascii_lowercase()))
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

/// The collection id for a VM's local points.
pub fn collection_id(vm: &ResourceId, resource_group: Option<&str>) -> ResourceId {
    let rg = resource_group.or(vm.resource_group()).unwrap_or_default();
    ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &collection_name(vm.name().unwrap_or_default()),
    )
}

/// The collection id for a VM's copies in `region`.
pub fn copy_collection_id(
    vm: &ResourceId,
    region: &str,
    resource_group: Option<&str>,
) -> ResourceId {
    let rg = resource_group.or(vm.resource_group()).unwrap_or_default();
    ResourceId::new_in_group(
        vm.subscription(),
        rg,
        "Microsoft.Compute",
        "restorePointCollections",
        &copy_collection_name(vm.name().unwrap_or_default(), region),
    )
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

    #[test]
    fn collection_names() {
        assert_eq!(collection_name("vm-01"), "rpc-vm-01");
        assert_eq!(
            copy_collection_name("vm-01", "WestUS2"),
            "rpc-vm-01-westus2"
        );
        let long = collection_name(&"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
        assert_ne!(long, collection_name(&"x".repeat(99)));
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
