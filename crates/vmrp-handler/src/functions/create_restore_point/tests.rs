//! Unit tests of `create_restore_point` (their own file: the module stays under 1,000 lines).

use super::*;
use crate::functions::pace::Bucket;
use crate::messages::{CollectionSeen, ListedVm};
use crate::testing::{vm_id, VmBuilder};
use time::macros::datetime;
use time::OffsetDateTime;

const TICK: OffsetDateTime = datetime!(2026-12-06 08:00 UTC);

fn planned(slot: Option<OffsetDateTime>, collection: Option<CollectionSeen>) -> CreateRequest {
    let mut req = CreateRequest::for_tick(vm_id("s1", "rg", "vm1"), TICK, "prod");
    req.listed = Some(Box::new(ListedVm {
        at: TICK,
        vm: VmBuilder::new("s1", "rg", "vm1").build(),
        disks: Vec::new(),
        collection,
        planned_for: slot,
    }));
    req
}

/// Regression (the estate row's 429s): a timer-planned first try handled long after its
/// slot, as when two instances catch up a backlog of creates together, went without asking
/// ARM's readings (only retries and unplanned creates did) and met the buckets at once.
#[test]
fn a_planned_create_paces_itself_once_it_is_late() {
    let slot = TICK + time::Duration::minutes(3);
    let s = time::Duration::seconds;
    // (case, request, now, paces itself?)
    let table: Vec<(&str, CreateRequest, OffsetDateTime, bool)> = vec![
        (
            "planned, at its slot",
            planned(Some(slot), None),
            slot,
            false,
        ),
        (
            "planned, within the slack",
            planned(Some(slot), None),
            slot + PLANNED_SLOT_SLACK,
            false,
        ),
        (
            "planned, handled 11 s late",
            planned(Some(slot), None),
            slot + PLANNED_SLOT_SLACK + s(1),
            true,
        ),
        (
            "planned, handled 4 min late",
            planned(Some(slot), None),
            slot + s(240),
            true,
        ),
        (
            "planned by an older timer (no slot)",
            planned(None, None),
            slot + s(240),
            false,
        ),
        (
            "not planned (no listing)",
            CreateRequest::for_tick(vm_id("s1", "rg", "vm1"), TICK, "prod"),
            TICK,
            true,
        ),
        (
            "a put-back",
            CreateRequest {
                attempt: 1,
                ..planned(Some(slot), None)
            },
            slot,
            true,
        ),
        (
            "a retry after a failed point",
            CreateRequest {
                retry: 1,
                ..planned(Some(slot), None)
            },
            slot,
            true,
        ),
    ];
    for (case, req, now, want) in table {
        assert_eq!(paces_itself(&req, now), want, "{case}");
    }
}

#[test]
fn a_create_asks_for_what_its_listing_did_not_spare() {
    let unlisted = CreateRequest::for_tick(vm_id("s1", "rg", "vm1"), TICK, "prod");
    let table = [
        (unlisted, [(Bucket::Reads, 4), (Bucket::Writes, 2)]),
        (
            planned(None, Some(CollectionSeen::Ready)),
            [(Bucket::Reads, 0), (Bucket::Writes, 1)],
        ),
        (
            planned(None, Some(CollectionSeen::Missing)),
            [(Bucket::Reads, 0), (Bucket::Writes, 2)],
        ),
        (
            planned(None, None),
            [(Bucket::Reads, 1), (Bucket::Writes, 2)],
        ),
    ];
    for (req, want) in table {
        assert_eq!(cost(&req), want, "{:?}", req.listed.map(|l| l.collection));
    }
}
