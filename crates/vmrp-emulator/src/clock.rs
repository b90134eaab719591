//! One virtual clock for the whole emulator: virtual time runs `speed` times faster than real
//! time from a fixed start, so copies that take hours in Azure take seconds here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::macros::datetime;
use time::OffsetDateTime;

/// Virtual time stays before this instant: schedules, deadlines and retention look days to
/// years ahead of `now`, and `time` ends at 9999-12-31, so a clock started or advanced near
/// that end would overflow them. `--start` and `POST /_emulator/clock/advance` are refused past it.
pub const LATEST: OffsetDateTime = datetime!(9000-01-01 00:00 UTC);

#[derive(Debug)]
pub struct VirtualClock {
    inner: Mutex<Anchor>,
    /// Woken on every speed change or jump, so sleepers re-compute their real wait at once
    /// (a sleeper that slept through a speed-up would wake many virtual minutes late).
    changed: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    real: Instant,
    virtual_at_real: OffsetDateTime,
    speed: f64,
}

impl VirtualClock {
    /// A clock that reads `start` now and advances `speed` virtual seconds per real second.
    pub fn new(start: OffsetDateTime, speed: f64) -> Self {
        assert!(speed.is_finite() && speed > 0.0, "speed must be positive");
        Self {
            inner: Mutex::new(Anchor {
                real: Instant::now(),
                virtual_at_real: start,
                speed,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The anchor. Nothing panics while holding the lock, but a poisoned lock is recovered
    /// all the same: the anchor is plain data, valid at every write.
    fn anchor(&self) -> std::sync::MutexGuard<'_, Anchor> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> OffsetDateTime {
        let a = *self.anchor();
        let real = a.real.elapsed().as_secs_f64() * a.speed;
        // Saturating: a clock left running for ages at a high speed stops at the end of time.
        time::Duration::checked_seconds_f64(real).map_or(LATEST.max(a.virtual_at_real), |d| {
            a.virtual_at_real.saturating_add(d)
        })
    }

    pub fn speed(&self) -> f64 {
        self.anchor().speed
    }

    /// Jumps virtual time forward by `by` (tests; never backwards), at most to [`LATEST`].
    pub fn advance(&self, by: time::Duration) {
        let now = self.now();
        let target = now
            .checked_add(by.max(time::Duration::ZERO))
            .map_or(LATEST, |t| t.min(LATEST))
            .max(now);
        self.jump_to(target);
    }

    /// [`VirtualClock::advance`], refused (with a reason) when it would pass [`LATEST`].
    pub fn try_advance(&self, by: time::Duration) -> Result<OffsetDateTime, String> {
        let now = self.now();
        match now.checked_add(by.max(time::Duration::ZERO)) {
            Some(target) if target <= LATEST => {
                self.jump_to(target);
                Ok(target)
            }
            _ => Err(format!(
                "advancing {by} from {now} would pass {LATEST}, the latest virtual time the emulator runs to"
            )),
        }
    }

    fn jump_to(&self, target: OffsetDateTime) {
        let mut a = self.anchor();
        a.virtual_at_real = target;
        a.real = Instant::now();
        drop(a);
        self.changed.notify_waiters();
    }

    /// Changes the speed from now on, without a jump (`vmrp local` starts the handler at speed 1
    /// so the first tick cannot pass while it is still starting, then speeds up). Ignores a
    /// speed that is not a positive number.
    pub fn set_speed(&self, speed: f64) {
        if !(speed.is_finite() && speed > 0.0) {
            return;
        }
        let now = self.now();
        let mut a = self.anchor();
        a.virtual_at_real = now;
        a.real = Instant::now();
        a.speed = speed;
        drop(a);
        self.changed.notify_waiters();
    }

    /// The real time to wait until virtual time reaches `t` (zero if already past).
    pub fn real_until(&self, t: OffsetDateTime) -> Duration {
        let left = t - self.now();
        if left <= time::Duration::ZERO {
            return Duration::ZERO;
        }
        // Saturating: a wait of centuries at speed 1 must not panic the sleeper.
        Duration::try_from_secs_f64(left.as_seconds_f64() / self.speed()).unwrap_or(Duration::MAX)
    }

    /// Sleeps (really) until virtual time reaches `t`.
    pub async fn sleep_until(&self, t: OffsetDateTime) {
        loop {
            // Registered before reading the clock, so a change in between is not missed.
            let changed = self.changed.notified();
            let wait = self.real_until(t);
            if wait.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_millis(200))) => {}
                _ = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    // Real time is only bounded from below by a sleep: a busy 2-core machine may stall this
    // thread for any time, so upper bounds are taken from the real time measured around the
    // reads, never from a fixed allowance.

    #[test]
    fn runs_faster_and_advances() {
        let start = datetime!(2026-01-01 00:00 UTC);
        let real = Instant::now();
        let c = VirtualClock::new(start, 600.0);
        std::thread::sleep(Duration::from_millis(50));
        let t = c.now();
        let elapsed = real.elapsed();
        assert!(t >= datetime!(2026-01-01 00:00:30 UTC), "{t}");
        assert!(
            t - start <= time::Duration::seconds_f64(elapsed.as_secs_f64() * 600.0),
            "{t} after {elapsed:?}"
        );
        c.advance(time::Duration::hours(1));
        assert!(c.now() >= datetime!(2026-01-01 01:00:30 UTC));
        assert!(c.real_until(c.now() + time::Duration::seconds(600)) <= Duration::from_secs(1));
    }

    #[test]
    fn advancing_past_the_end_is_refused_and_the_clock_keeps_working() {
        // Was a panic inside the lock (`now + by` past 9999), which poisoned it for every
        // later request.
        let c = VirtualClock::new(datetime!(2026-01-01 00:00 UTC), 1.0);
        let err = c
            .try_advance(time::Duration::hours(100_000_000))
            .unwrap_err();
        assert!(err.contains("latest virtual time"), "{err}");
        assert!(c.now() < datetime!(2026-01-02 00:00 UTC));
        c.advance(time::Duration::hours(100_000_000)); // clamps
        assert!(c.now() >= LATEST && c.now() < LATEST + time::Duration::minutes(1));
        assert!(c.try_advance(time::Duration::hours(1)).is_err());
        assert_eq!(c.speed(), 1.0);
    }

    #[test]
    fn set_speed_changes_the_rate_without_a_jump() {
        let c = VirtualClock::new(datetime!(2026-01-01 00:00 UTC), 1.0);
        // A set_speed that re-based the old anchor at the new rate would jump 200 ms × 3600 =
        // 12 virtual minutes; without a jump, the two reads differ by at most the real time
        // between them at the new rate.
        std::thread::sleep(Duration::from_millis(200));
        let real = Instant::now();
        let before = c.now();
        c.set_speed(3600.0);
        let after = c.now();
        let between = real.elapsed();
        assert!(after >= before, "{before} → {after}");
        assert!(
            after - before <= time::Duration::seconds_f64(between.as_secs_f64() * 3600.0),
            "{before} → {after} in {between:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            c.now() - after >= time::Duration::seconds(150),
            "{}",
            c.now()
        );
        c.set_speed(0.0); // ignored
        assert_eq!(c.speed(), 3600.0);
    }

    /// A waker that counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);
    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Polled by hand: the sleeper is parked in its first nap (up to 200 ms), and the speed-up
    /// must wake it then and there, before any nap could end. No real-time margin is involved.
    #[tokio::test]
    async fn a_speed_up_wakes_sleepers_at_once() {
        use std::future::Future;
        use std::sync::atomic::Ordering;
        use std::task::Context;
        let c = VirtualClock::new(datetime!(2026-01-01 00:00 UTC), 1.0);
        let target = datetime!(2026-01-01 01:00 UTC);
        let wakes = std::sync::Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleeper = std::pin::pin!(c.sleep_until(target));
        assert!(sleeper.as_mut().poll(&mut cx).is_pending());
        let before = wakes.0.load(Ordering::SeqCst);
        c.set_speed(3600.0 * 20.0); // the hour left now takes 50 ms
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            before + 1,
            "the speed-up woke the sleeper"
        );
        // Woken, it computes its wait again at the new speed: 50 ms at most, not an hour.
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper woke");
        assert!(c.now() >= target);
    }
}
