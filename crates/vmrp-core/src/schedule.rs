//! NCRONTAB schedules as the Functions timer reads them (PROTOCOL.md §8): six fields with seconds
//! (five accepted), day-of-week 0–6 from Sunday, names allowed, evaluated in UTC. NCRONTAB ANDs
//! day-of-month and day-of-week (Vixie cron ORs them), so croner runs with `with_dom_and_dow`.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use time::OffsetDateTime;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NCRONTAB schedule {expr:?}: {reason}")]
pub struct ScheduleError {
    pub expr: String,
    pub reason: String,
}

/// How far back [`Schedule::latest_at_or_before`] looks for an occurrence.
const LOOKBACK_DAYS: i64 = 400;

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            expr: expr.to_string(),
            reason,
        };
        let fields = expr.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(err(format!(
                "expected 6 fields (second minute hour day month day-of-week), found {fields}"
            )));
        }
        let cron = Cron::new(expr.trim())
            .with_seconds_optional()
            .with_dom_and_dow()
            .parse()
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            expr: expr.trim().to_string(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first occurrence strictly after `t`; `None` when there is none within the dates
    /// `time` can hold (up to 9999-12-31: a tick of 9999-12-31T23:59:59Z has no next one).
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let from = to_chrono(t)?;
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .and_then(from_chrono)
    }

    /// The latest occurrence at or before `t`: the tick a (possibly late or repeated) timer run
    /// belongs to (docs/architecture.md, "Idempotency").
    pub fn latest_at_or_before(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        // Walk forward from a window start; schedules are at most every second, so jump in
        // growing windows to avoid iterating a year of seconds.
        let mut window = time::Duration::hours(1);
        loop {
            // Checked: `t` may come from a message; before the earliest date there is nothing.
            let start = t.checked_sub(window)?;
            let mut best = None;
            let mut cursor = start;
            // Occurrences at or after `start`.
            if to_chrono(start)
                .and_then(|s| self.cron.is_time_matching(&s).ok())
                .unwrap_or(false)
            {
                best = Some(start);
            }
            while let Some(next) = self.next_after(cursor) {
                if next > t {
                    break;
                }
                best = Some(next);
                cursor = next;
            }
            if best.is_some() {
                return best;
            }
            if window >= time::Duration::days(LOOKBACK_DAYS) {
                return None;
            }
            window = std::cmp::min(window * 8_i32, time::Duration::days(LOOKBACK_DAYS));
        }
    }

    /// Occurrences in `(after, until]`, at most `limit`.
    pub fn occurrences(
        &self,
        after: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Vec<OffsetDateTime> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(n) if n <= until => {
                    out.push(n);
                    cursor = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The smallest gap between consecutive occurrences over the year after `from` (used to check
    /// the platform's spacing rules). `None` when fewer than two occurrences exist.
    pub fn min_interval(&self, from: OffsetDateTime) -> Option<time::Duration> {
        let until = from.saturating_add(time::Duration::days(366));
        let mut prev = self.next_after(from)?;
        let mut min: Option<time::Duration> = None;
        let mut count = 0;
        while let Some(n) = self.next_after(prev) {
            if n > until || count > 20_000 {
                break;
            }
            let gap = n - prev;
            min = Some(min.map_or(gap, |m| m.min(gap)));
            prev = n;
            count += 1;
        }
        min
    }
}

/// RFC 3339 text of a timestamp (`2026-11-25T03:00:00Z`), for logs and reasons.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// `None` outside chrono's range (it is wider than `time`'s, so this does not happen today).
fn to_chrono(t: OffsetDateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.unix_timestamp(), t.nanosecond())
        .single()
}

/// `None` past `time`'s range (years beyond 9999): croner can find occurrences there.
fn from_chrono(t: DateTime<Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .ok()?
        .checked_add(time::Duration::nanoseconds(i64::from(
            t.timestamp_subsec_nanos(),
        )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn six_field_hourly() {
        let s = Schedule::parse("0 0 * * * *").unwrap();
        assert_eq!(
            s.next_after(datetime!(2026-11-25 03:00:00 UTC)),
            Some(datetime!(2026-11-25 04:00:00 UTC))
        );
        assert_eq!(
            s.latest_at_or_before(datetime!(2026-11-25 03:00:00 UTC)),
            Some(datetime!(2026-11-25 03:00:00 UTC))
        );
        assert_eq!(
            s.latest_at_or_before(datetime!(2026-11-25 03:59:59.9 UTC)),
            Some(datetime!(2026-11-25 03:00:00 UTC))
        );
    }

    #[test]
    fn latest_tick_for_a_late_daily_run() {
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        assert_eq!(
            s.latest_at_or_before(datetime!(2026-11-25 17:00:00 UTC)),
            Some(datetime!(2026-11-25 02:30:00 UTC))
        );
        let weekly = Schedule::parse("0 0 3 * * Sun").unwrap();
        // 2026-11-25 is a Wednesday; the previous Sunday is the 22nd.
        assert_eq!(
            weekly.latest_at_or_before(datetime!(2026-11-25 12:00:00 UTC)),
            Some(datetime!(2026-11-22 03:00:00 UTC))
        );
    }

    #[test]
    fn day_of_week_zero_is_sunday_and_dom_dow_are_anded() {
        let s = Schedule::parse("0 0 0 * * 0").unwrap();
        assert_eq!(
            s.next_after(datetime!(2026-11-25 00:00:00 UTC)),
            Some(datetime!(2026-11-29 00:00:00 UTC))
        );
        // The 13th AND a Friday (NCRONTAB), not the 13th OR a Friday.
        let f13 = Schedule::parse("0 0 0 13 * 5").unwrap();
        assert_eq!(
            f13.next_after(datetime!(2026-01-01 00:00:00 UTC)),
            Some(datetime!(2026-02-13 00:00:00 UTC))
        );
    }

    #[test]
    fn five_fields_accepted_and_bad_input_rejected() {
        assert!(Schedule::parse("0 */4 * * *").is_ok());
        for bad in [
            "",
            "* * *",
            "0 0 * * * * * *",
            "61 0 * * * *",
            "x y z a b c",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_end_of_time_is_no_panic() {
        // Was a panic ("in range"): the next hour after 9999-12-31T23:59:59Z is in year 10000.
        let s = Schedule::parse("0 0 * * * *").unwrap();
        let end = datetime!(9999-12-31 23:59:59 UTC);
        assert_eq!(s.next_after(end), None);
        assert_eq!(
            s.latest_at_or_before(end),
            Some(datetime!(9999-12-31 23:00:00 UTC))
        );
        // At the other end, the look-back window cannot start before the earliest date.
        let _ = s.latest_at_or_before(datetime!(-9999-01-01 00:00:00 UTC));
        assert!(s.min_interval(end).is_none());
    }

    /// `min_interval` looks at gaps ending within the year after `from` (366 days), the end
    /// included: a gap after it is not the year's, however tight.
    #[test]
    fn min_interval_counts_gaps_within_the_year_only() {
        let from = datetime!(2026-01-01 00:00:00 UTC);
        // (case, schedule, wanted)
        let table = [
            (
                "1 h apart",
                "0 0 0,1,12 * * *",
                Some(time::Duration::hours(1)),
            ),
            (
                "yearly on 2 January: the second one is exactly 366 days after from",
                "0 0 0 2 1 *",
                Some(time::Duration::days(365)),
            ),
            (
                "29 February only: the first is in 2028, its 1 h gap is past the year",
                "0 0 0,1 29 2 *",
                None,
            ),
        ];
        for (case, expr, want) in table {
            let s = Schedule::parse(expr).unwrap();
            assert_eq!(s.min_interval(from), want, "{case}");
        }
    }

    /// The scan is capped (20,000 gaps) so validating an every-second schedule stays quick; on
    /// a thread with a deadline, so a scan of the year's 31 million seconds fails, not hangs.
    #[test]
    fn min_interval_of_an_every_second_schedule_is_capped() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = Schedule::parse("* * * * * *").unwrap();
            let _ = tx.send(s.min_interval(datetime!(2026-01-01 00:00:00 UTC)));
        });
        let gap = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("min_interval stops at its cap");
        assert_eq!(gap, Some(time::Duration::SECOND));
    }

    #[test]
    fn rfc3339_is_utc_with_a_z() {
        assert_eq!(
            rfc3339(datetime!(2026-11-25 03:00:00 UTC)),
            "2026-11-25T03:00:00Z"
        );
        assert_eq!(
            rfc3339(datetime!(2026-11-25 04:30:15.5 +01:00)),
            "2026-11-25T04:30:15.5+01:00"
        );
    }

    /// `occurrences(after, until, limit)`: strictly after `after`, up to and including `until`,
    /// at most `limit`.
    #[test]
    fn occurrences_are_after_up_to_until_and_at_most_limit() {
        let s = Schedule::parse("0 0 * * * *").unwrap();
        let at = |h: u8| datetime!(2026-11-25 00:00:00 UTC).replace_hour(h).unwrap();
        // (case, after, until, limit, wanted hours)
        let table: [(&str, OffsetDateTime, OffsetDateTime, usize, Vec<u8>); 5] = [
            ("until included, after not", at(3), at(6), 10, vec![4, 5, 6]),
            ("cut at the limit", at(3), at(6), 2, vec![4, 5]),
            ("limit 0", at(3), at(6), 0, vec![]),
            (
                "until just before an occurrence",
                at(3),
                at(5) - time::Duration::SECOND,
                10,
                vec![4],
            ),
            (
                "nothing in the range",
                at(3),
                at(3) + time::Duration::MINUTE,
                10,
                vec![],
            ),
        ];
        for (case, after, until, limit, want) in table {
            let want: Vec<OffsetDateTime> = want.into_iter().map(at).collect();
            assert_eq!(s.occurrences(after, until, limit), want, "{case}");
        }
    }

    #[test]
    fn min_interval_finds_the_tightest_gap() {
        let s = Schedule::parse("0 0 0,1,12 * * *").unwrap();
        assert_eq!(
            s.min_interval(datetime!(2026-01-01 00:00:00 UTC)),
            Some(time::Duration::hours(1))
        );
    }
}
