//! The clock governor: slows virtual time while the handler is behind, to real time while a tick is planned.

use super::*;

/// The slowest the governor lets the clock run, as a fraction of the scenario's speed: at 2400×
/// a handler restart (about a real second) still costs only a virtual minute, and ARM's token
/// buckets (refilled in virtual time) still refill faster than the handler can drain them.
pub(super) const SLOWEST_FRACTION: f64 = 1.0 / 40.0;
/// A message due this long ago (virtual) and not yet received means the handler is behind. So
/// a handler slower than the plan (a debug build on a busy machine) may deliver work up to this
/// late in virtual time before the clock slows down: tests bounding virtual durations allow it.
pub const ALLOWED_LAG: time::Duration = time::Duration::minutes(5);
/// How often the governor looks.
pub(super) const GOVERNOR_PERIOD: Duration = Duration::from_millis(25);
/// The clock's speed while a tick is being planned (a timer run, or a PlanRestorePoints message
/// due or being handled): real time. Planning is seconds to a minute of real work (listings
/// with their pauses, up to `coverage_max_reads` coverage reads, 8 at a time), which in Azure
/// costs that many seconds of the tick's window. At `speed / 40` (60× for the soak's 2400×) a
/// 40-s plan of 2,000 VMs cost 40 virtual minutes: it passed the host's functionTimeout
/// (10 virtual minutes, once 30 real seconds had passed too), was timed out, its instance
/// restarted, the message redelivered, again and again, and the tick's plan ran after the
/// supersede cut-off or never (bench.md, "Correct at scale (session 5)").
pub const PLANNING_SPEED: f64 = 1.0;

/// How the handler stands, for the governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerLag {
    /// Nothing due waits: the clock may run at the scenario's speed.
    UpToDate,
    /// A due message waits, or an instance is restarting: slow down to `speed / 40`.
    Behind,
    /// A tick is being planned: slow down to [`PLANNING_SPEED`].
    Planning,
}

/// The slowest the governor lets the clock run for `lag`, given the scenario's speed.
pub fn governor_floor(target: f64, lag: HandlerLag) -> f64 {
    match lag {
        HandlerLag::Planning => PLANNING_SPEED.min(target),
        HandlerLag::UpToDate | HandlerLag::Behind => (target * SLOWEST_FRACTION).max(1.0),
    }
}

/// The next clock speed: halve while the handler is behind (down to `slowest`), grow by half
/// while it keeps up (up to `target`).
pub fn governed_speed(current: f64, target: f64, slowest: f64, behind: bool) -> f64 {
    let slowest = slowest.min(target);
    if behind {
        (current / 2.0).max(slowest)
    } else {
        (current * 1.5).min(target)
    }
}

/// How the handler stands right now (see the module doc).
pub(super) fn handler_lag(clock: &VirtualClock, bus: &ServiceBus, sim: &HostSim) -> HandlerLag {
    // A tick's planning runs in PlanRestorePoints (rp-plan) after the timer's fan-out: a timer
    // run or a plan message due or being handled is real work that must cost the tick's
    // window what it would cost in Azure ([`PLANNING_SPEED`]).
    // Only a plan being handled or due now: a replan scheduled for later (after an outage's
    // 503s) is not planning, and the clock must carry the outage at its usual pace.
    let now = clock.now();
    if sim.timers_in_flight() > 0
        || bus.messages(Queue::Plan.name()).is_ok_and(|m| {
            m.iter()
                .any(|m| m.lock_token.is_some() || m.available_at <= now)
        })
    {
        return HandlerLag::Planning;
    }
    if sim.handler_state() != HandlerState::Ready {
        return HandlerLag::Behind;
    }
    let since = clock.now() - ALLOWED_LAG;
    if Queue::ALL
        .iter()
        .any(|q| bus.waiting_since(q.name(), since) > 0)
    {
        HandlerLag::Behind
    } else {
        HandlerLag::UpToDate
    }
}

/// Runs [`governed_speed`] on the clock until aborted.
pub(super) fn spawn_governor(
    emulator: &RunningEmulator,
    sim: &Arc<HostSim>,
    scenario: &Scenario,
) -> tokio::task::JoinHandle<()> {
    let (clock, bus, sim) = (emulator.clock.clone(), emulator.bus.clone(), sim.clone());
    let target = scenario.speed;
    tokio::spawn(async move {
        let mut speed = target;
        loop {
            tokio::time::sleep(GOVERNOR_PERIOD).await;
            let lag = handler_lag(&clock, &bus, &sim);
            let slowest = governor_floor(target, lag);
            let next = governed_speed(speed, target, slowest, lag != HandlerLag::UpToDate);
            if next != speed {
                clock.set_speed(next);
                speed = next;
            }
        }
    })
}

pub(super) fn pending_messages(emulator: &RunningEmulator) -> usize {
    Queue::ALL
        .iter()
        .map(|q| {
            emulator
                .bus
                .messages(q.name())
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}
