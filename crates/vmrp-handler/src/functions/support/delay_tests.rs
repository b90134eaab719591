//! Tests of the reschedule delays (ARM's `Retry-After` honoured; for copies never cut short and
//! spread) and of the hold on a region whose copies Compute refuses.

use super::*;

#[test]
fn a_retry_after_is_kept_and_spread_later_across_messages() {
    let tuning = Tuning::default();
    let ra = Duration::from_secs(600);
    let delays: Vec<Duration> = (0..200)
        .map(|i| spread_reschedule_delay(&tuning, &format!("copy-{i}"), 3, Some(ra)))
        .collect();
    let most = ra.mul_f64(1.0 + 2.0 * tuning.backoff.jitter);
    assert!(delays.iter().all(|d| *d >= ra && *d <= most), "{delays:?}");
    let distinct: std::collections::HashSet<_> = delays.iter().map(|d| d.as_secs()).collect();
    assert!(
        distinct.len() > 50,
        "200 messages refused by one 429 wave come back spread out, not at one second: {} distinct",
        distinct.len()
    );
    // Deterministic: a replayed invocation reschedules for the same moment.
    assert_eq!(
        spread_reschedule_delay(&tuning, "copy-7", 3, Some(ra)),
        delays[7]
    );
    // A create keeps ARM's (or its own computed) time exactly: it may have a cut-off to meet.
    assert_eq!(reschedule_delay(&tuning, "create-7", 3, Some(ra)), ra);
}

#[test]
fn without_a_retry_after_the_delay_doubles_to_the_cap() {
    let tuning = Tuning::default();
    let first = spread_reschedule_delay(&tuning, "k", 1, None);
    assert_eq!(first, reschedule_delay(&tuning, "k", 1, None));
    let base = tuning.reschedule_first;
    let j = tuning.backoff.jitter;
    assert!(first >= base.mul_f64(1.0 - j) && first <= base.mul_f64(1.0 + j));
    let late = reschedule_delay(&tuning, "k", 30, None);
    assert!(late <= tuning.reschedule_cap.mul_f64(1.0 + j));
}

#[test]
fn a_region_that_refused_a_copy_is_held_four_retry_afters_until_a_copy_is_accepted() {
    let known = KnownResources::default();
    let t0 = time::macros::datetime!(2026-01-05 04:00 UTC);
    let ra = Duration::from_secs(600);
    let minutes = |until: OffsetDateTime, from: OffsetDateTime| (until - from).whole_minutes();
    // Refusals at t0, t0+40, t0+80: held 40 min each (no copy there can finish sooner).
    let mut now = t0;
    for _ in 0..3 {
        let until = known.remember_copies_refused("S1", "WestUS2", now, ra);
        assert_eq!(minutes(until, now), 40);
        assert_eq!(
            known.copies_refused_until("s1", "westus2", now),
            Some(until)
        );
        assert_eq!(known.copies_refused_until("s1", "westus2", until), None);
        assert_eq!(known.copies_refused_until("s1", "eastus", now), None);
        now = until;
    }
    // ARM's write bucket asks seconds: the hold is seconds too.
    let until = known.remember_copies_refused("s1", "eastus", now, Duration::from_secs(5));
    assert_eq!((until - now).whole_seconds(), 20);
    // A copy accepted there: nothing held.
    known.forget_copies_refused("s1", "westus2");
    assert_eq!(known.copies_refused_until("s1", "westus2", now), None);
}

#[test]
fn a_copy_seen_finishing_in_a_held_region_lets_one_copy_take_its_slot() {
    let known = KnownResources::default();
    let t0 = time::macros::datetime!(2026-01-05 04:00 UTC);
    let ra = Duration::from_secs(600);
    // Nothing known: ask; a finished copy outside a hold banks nothing.
    known.copy_finished("s1", "westus2");
    assert_eq!(known.take_copy_turn("s1", "westus2", t0), CopyTurn::Open);
    let until = known.remember_copies_refused("s1", "westus2", t0, ra);
    assert_eq!(
        known.take_copy_turn("s1", "westus2", t0),
        CopyTurn::Held(until)
    );
    // Two copies finish there: two copies may go before the hold ends, then it holds again.
    known.copy_finished("S1", "WestUS2");
    known.copy_finished("s1", "westus2");
    let now = t0 + time::Duration::minutes(3);
    assert_eq!(known.copies_refused_until("s1", "westus2", now), None);
    assert_eq!(known.take_copy_turn("s1", "westus2", now), CopyTurn::Room);
    assert_eq!(known.take_copy_turn("s1", "westus2", now), CopyTurn::Room);
    assert_eq!(
        known.take_copy_turn("s1", "westus2", now),
        CopyTurn::Held(until)
    );
    // Taking room keeps the region held for the hold's length from then: it is still full.
    known.copy_took_room("s1", "westus2", now);
    let extended = now + time::Duration::minutes(40);
    assert_eq!(
        known.copies_refused_until("s1", "westus2", now),
        Some(extended)
    );
    // Room is capped, and a refusal empties it (another instance took the slot).
    for _ in 0..10 {
        known.copy_finished("s1", "westus2");
    }
    let turns: Vec<CopyTurn> = (0..6)
        .map(|_| known.take_copy_turn("s1", "westus2", now))
        .collect();
    assert_eq!(turns.iter().filter(|t| **t == CopyTurn::Room).count(), 4);
    known.copy_finished("s1", "westus2");
    let until = known.remember_copies_refused("s1", "westus2", now, ra);
    assert_eq!(
        known.take_copy_turn("s1", "westus2", now),
        CopyTurn::Held(until)
    );
    // Once the hold is over: ask (a probe), whatever the room.
    assert_eq!(known.take_copy_turn("s1", "westus2", until), CopyTurn::Open);
}
