//! [`FakeScheduler`]: records the messages handlers send, with Service Bus duplicate detection.

use super::*;

// ---------------------------------------------------------------------------------------------
// Scheduler
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(super) struct SchedulerState {
    sent: Vec<OutgoingMessage>,
    /// When each message in `sent` was sent (the scheduler's `now` then).
    sent_at: Vec<OffsetDateTime>,
    /// What "now" is for sends (moved by tests with [`FakeScheduler::set_now`]).
    now: Option<OffsetDateTime>,
    /// Remaining sends to refuse with a transient 503.
    failures: u32,
}

/// The duplicate detection window vmrp's queues are deployed with (P7D in
/// infra/modules/servicebus.bicep; the emulator's `DUPLICATE_WINDOW`, checked equal in a test).
pub const DUPLICATE_DETECTION_WINDOW: time::Duration = time::Duration::days(7);

/// Records sent messages. Service Bus duplicate detection is modelled by
/// [`FakeScheduler::delivered`], within the deployed window as Azure applies it.
#[derive(Default)]
pub struct FakeScheduler {
    state: Mutex<SchedulerState>,
}

impl FakeScheduler {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SchedulerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The next `n` sends fail (503).
    pub fn fail_next(&self, n: u32) {
        self.lock().failures += n;
    }
    /// Every message sent, duplicates included.
    pub fn sent(&self) -> Vec<OutgoingMessage> {
        self.lock().sent.clone()
    }
    /// The moment later sends happen at (for the duplicate detection window); unset, every send
    /// happens at one moment.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.lock().now = Some(now);
    }
    /// What Service Bus would enqueue: a message is dropped when one with its id was enqueued
    /// less than [`DUPLICATE_DETECTION_WINDOW`] before it; a later one is enqueued again.
    pub fn delivered(&self) -> Vec<OutgoingMessage> {
        let s = self.lock();
        let mut accepted: std::collections::HashMap<&str, OffsetDateTime> = Default::default();
        let mut out = Vec::new();
        for (m, at) in s.sent.iter().zip(&s.sent_at) {
            let duplicate = accepted
                .get(m.message_id.as_str())
                .is_some_and(|first| *at - *first < DUPLICATE_DETECTION_WINDOW);
            if !duplicate {
                accepted.insert(&m.message_id, *at);
                out.push(m.clone());
            }
        }
        out
    }
    /// Removes and returns everything sent so far.
    pub fn take(&self) -> Vec<OutgoingMessage> {
        let mut s = self.lock();
        s.sent_at.clear();
        std::mem::take(&mut s.sent)
    }
    /// Sent messages decoded, in order.
    pub fn messages(&self) -> Vec<QueueMessage> {
        self.sent()
            .iter()
            .map(|m| QueueMessage::decode(&m.body).expect("handlers send valid messages"))
            .collect()
    }
}

#[async_trait]
impl Scheduler for FakeScheduler {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        let mut s = self.lock();
        if s.failures > 0 {
            s.failures -= 1;
            return Err(SendError {
                queue: message.queue.name().to_string(),
                status: Some(503),
                message: "ServiceUnavailable (scripted)".into(),
            });
        }
        let at = s.now.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        s.sent.push(message);
        s.sent_at.push(at);
        Ok(())
    }
}
