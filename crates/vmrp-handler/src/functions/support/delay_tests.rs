//! Tests of the reschedule delays: ARM's `Retry-After` honoured, never cut short, and spread.

use super::*;

#[test]
fn a_retry_after_is_kept_and_spread_later_across_messages() {
    let tuning = Tuning::default();
    let ra = Duration::from_secs(600);
    let delays: Vec<Duration> = (0..200)
        .map(|i| reschedule_delay(&tuning, &format!("copy-{i}"), 3, Some(ra)))
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
    assert_eq!(reschedule_delay(&tuning, "copy-7", 3, Some(ra)), delays[7]);
}

#[test]
fn without_a_retry_after_the_delay_doubles_to_the_cap() {
    let tuning = Tuning::default();
    let first = reschedule_delay(&tuning, "k", 1, None);
    let base = tuning.reschedule_first;
    let j = tuning.backoff.jitter;
    assert!(first >= base.mul_f64(1.0 - j) && first <= base.mul_f64(1.0 + j));
    let late = reschedule_delay(&tuning, "k", 30, None);
    assert!(late <= tuning.reschedule_cap.mul_f64(1.0 + j));
}
