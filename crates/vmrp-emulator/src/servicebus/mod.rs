//! An in-memory Service Bus namespace: the REST send endpoint (`POST /{queue}/messages`, SAS or
//! Entra bearer, `BrokerProperties`, batches) and peek-lock delivery for the Functions host
//! simulation (DeliveryCount, locks, abandon → immediate redelivery, `maxDeliveryCount` →
//! dead-letter `MaxDeliveryCountExceeded`, duplicate detection, scheduled enqueue), all on the
//! virtual clock. the Service Bus REST send API (https://learn.microsoft.com/rest/api/servicebus/send-message-to-queue) is the wire format this accepts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;

use super::clock::VirtualClock;
use super::faults::{Dice, FaultConfig};
use super::identity::{IdentityEndpoint, SERVICE_BUS_RESOURCE};

mod rest;
mod sas;

pub use rest::*;
pub use sas::*;

/// The duplicate detection window the deployment sets on every queue
/// (infra/modules/servicebus.bicep `duplicateDetectionHistoryTimeWindow: 'P7D'`, the largest
/// Service Bus allows). The emulator uses the deployed value so a late replay is judged as
/// Azure would judge it; infra/tests/test_infra.py checks the two agree.
pub const DUPLICATE_WINDOW: time::Duration = time::Duration::days(7);

/// Static settings of the namespace.
#[derive(Clone)]
pub struct BusConfig {
    /// Namespace name: SAS `sr` may name `https://{namespace}.servicebus.windows.net/...`.
    pub namespace: String,
    pub queues: Vec<String>,
    pub sas_key_name: String,
    pub sas_key: String,
    pub max_delivery_count: u32,
    /// Duplicate detection history window (virtual time).
    pub duplicate_window: time::Duration,
    /// Peek-lock duration (virtual time).
    pub lock_duration: time::Duration,
    /// Default message time to live (virtual time).
    pub default_ttl: time::Duration,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("namespace", &self.namespace)
            .field("queues", &self.queues)
            .field("sas_key_name", &self.sas_key_name)
            .field("sas_key", &"<redacted>")
            .field("max_delivery_count", &self.max_delivery_count)
            .field("duplicate_window", &self.duplicate_window)
            .field("lock_duration", &self.lock_duration)
            .field("default_ttl", &self.default_ttl)
            .finish()
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            namespace: "vmrp-emulator".to_string(),
            // Every queue the deployment creates, the parking queue included.
            queues: crate::azure::Queue::SENT
                .iter()
                .map(|q| q.name().to_string())
                .collect(),
            sas_key_name: "RootManageSharedAccessKey".to_string(),
            sas_key: "emulator-test-key".to_string(),
            max_delivery_count: 10,
            duplicate_window: DUPLICATE_WINDOW,
            lock_duration: time::Duration::minutes(5),
            default_ttl: time::Duration::days(14),
        }
    }
}

/// One message as the broker holds it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub sequence_number: i64,
    pub message_id: String,
    /// The body as UTF-8 text (lossy for binary bodies).
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    pub application_properties: Map<String, Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub scheduled_enqueue_time: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the message can next be received (scheduled time, or immediately after abandon).
    #[serde(with = "time::serde::rfc3339")]
    pub available_at: OffsetDateTime,
    pub delivery_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_token: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    /// Set once the duplicate-delivery fault re-delivered this message (it happens only once).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicated: bool,
}

/// A dead-lettered message with its reason.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub message: StoredMessage,
    pub reason: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
}

/// What a receiver gets under peek-lock.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub queue: String,
    pub message: StoredMessage,
    pub lock_token: String,
}

#[derive(Debug, Default)]
struct QueueState {
    next_sequence: i64,
    messages: BTreeMap<i64, StoredMessage>,
    dead_letters: Vec<DeadLetter>,
    /// MessageId → when it was accepted (duplicate detection history).
    seen_ids: HashMap<String, OffsetDateTime>,
    /// When expired ids were last dropped from `seen_ids`. Pruning scans the whole history, so
    /// it runs at most once a (virtual) second instead of on every send: per send it made the
    /// emulator slower as a run went on (10,000 sends in `vmrp bench`), which showed up as
    /// noise in the handler's measured CPU per poll. Whether an id is a duplicate is decided
    /// by its own timestamp, so pruning later changes no answer.
    pruned_at: Option<OffsetDateTime>,
    counters: QueueCounters,
}

/// Per-queue counters.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounters {
    pub accepted: u64,
    pub duplicates_dropped: u64,
    pub delivered: u64,
    pub completed: u64,
    pub abandoned: u64,
    pub dead_lettered: u64,
    pub expired: u64,
    pub duplicate_deliveries_injected: u64,
}

/// A message to send, parsed from REST or built in-process.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub body: String,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    pub subject: Option<String>,
    pub reply_to: Option<String>,
    pub to: Option<String>,
    pub session_id: Option<String>,
    pub reply_to_session_id: Option<String>,
    pub partition_key: Option<String>,
    pub time_to_live: Option<time::Duration>,
    pub scheduled_enqueue_time: Option<OffsetDateTime>,
    pub application_properties: Map<String, Value>,
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BusError {
    #[error("queue {0:?} does not exist in this namespace")]
    NoSuchQueue(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
}

/// Whether a message was stored or dropped by duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Accepted { sequence_number: i64 },
    DuplicateDropped,
}

/// The namespace.
pub struct ServiceBus {
    config: BusConfig,
    clock: Arc<VirtualClock>,
    dice: Arc<Dice>,
    faults: Arc<FaultConfig>,
    identity: Arc<IdentityEndpoint>,
    queues: Mutex<BTreeMap<String, QueueState>>,
    /// Woken on every send/abandon so receivers need not poll fast.
    changed: tokio::sync::Notify,
    auth_failures: AtomicU64,
    /// Every SAS `sig` presented (as sent, URL-encoded, and decoded), right or wrong: the
    /// secret-leak tests look for them in logs, as they look for the identity's issued tokens.
    presented_signatures: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for ServiceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ServiceBus {
    pub fn new(
        config: BusConfig,
        clock: Arc<VirtualClock>,
        dice: Arc<Dice>,
        faults: Arc<FaultConfig>,
        identity: Arc<IdentityEndpoint>,
    ) -> Arc<Self> {
        let queues = config
            .queues
            .iter()
            .map(|q| (q.to_ascii_lowercase(), QueueState::default()))
            .collect();
        Arc::new(Self {
            config,
            clock,
            dice,
            faults,
            identity,
            queues: Mutex::new(queues),
            changed: tokio::sync::Notify::new(),
            auth_failures: AtomicU64::new(0),
            presented_signatures: Mutex::new(Default::default()),
        })
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn clock(&self) -> &Arc<VirtualClock> {
        &self.clock
    }

    /// Waits until something changed (a send, an abandon) — or not; callers re-check anyway.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn with_queue<R>(
        &self,
        queue: &str,
        f: impl FnOnce(&mut QueueState) -> R,
    ) -> Result<R, BusError> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = queues
            .get_mut(&queue.to_ascii_lowercase())
            .ok_or_else(|| BusError::NoSuchQueue(queue.to_string()))?;
        Ok(f(state))
    }

    /// Sends one message (duplicate detection, scheduled enqueue).
    pub fn send(&self, queue: &str, msg: NewMessage) -> Result<SendOutcome, BusError> {
        let now = self.clock.now();
        let window = self.config.duplicate_window;
        let default_ttl = self.config.default_ttl;
        let outcome = self.with_queue(queue, |q| {
            if q.pruned_at
                .is_none_or(|at| now - at >= time::Duration::SECOND)
            {
                q.seen_ids.retain(|_, at| now - *at < window);
                q.pruned_at = Some(now);
            }
            let message_id = msg
                .message_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            if q.seen_ids
                .get(&message_id)
                .is_some_and(|at| now - *at < window)
            {
                q.counters.duplicates_dropped += 1;
                return SendOutcome::DuplicateDropped;
            }
            q.seen_ids.insert(message_id.clone(), now);
            q.next_sequence += 1;
            let seq = q.next_sequence;
            let active_at = msg.scheduled_enqueue_time.map_or(now, |t| t.max(now));
            let ttl = msg.time_to_live.unwrap_or(default_ttl);
            q.messages.insert(
                seq,
                StoredMessage {
                    sequence_number: seq,
                    message_id,
                    body: msg.body,
                    content_type: msg.content_type,
                    correlation_id: msg.correlation_id,
                    subject: msg.subject,
                    reply_to: msg.reply_to,
                    to: msg.to,
                    session_id: msg.session_id,
                    reply_to_session_id: msg.reply_to_session_id,
                    partition_key: msg.partition_key,
                    application_properties: msg.application_properties,
                    enqueued_time: active_at,
                    scheduled_enqueue_time: msg.scheduled_enqueue_time,
                    expires_at: active_at + ttl,
                    available_at: active_at,
                    delivery_count: 0,
                    lock_token: None,
                    locked_until: None,
                    duplicated: false,
                },
            );
            q.counters.accepted += 1;
            SendOutcome::Accepted {
                sequence_number: seq,
            }
        })?;
        self.changed.notify_waiters();
        Ok(outcome)
    }

    /// Receives the next available message under peek-lock (DeliveryCount + 1), or `None`.
    /// Expired messages are dropped; a message whose lock expired after `maxDeliveryCount`
    /// deliveries is dead-lettered instead of delivered again.
    pub fn receive(&self, queue: &str) -> Result<Option<Delivery>, BusError> {
        let now = self.clock.now();
        let lock_duration = self.config.lock_duration;
        let max = self.config.max_delivery_count;
        self.with_queue(queue, |q| {
            let expired: Vec<i64> = q
                .messages
                .values()
                .filter(|m| m.expires_at <= now && m.lock_token.is_none())
                .map(|m| m.sequence_number)
                .collect();
            for seq in expired {
                q.messages.remove(&seq);
                q.counters.expired += 1;
            }
            let candidates: Vec<i64> = q
                .messages
                .values()
                .filter(|m| m.available_at <= now && m.locked_until.is_none_or(|l| l <= now))
                .map(|m| m.sequence_number)
                .collect();
            for seq in candidates {
                let lock_lost = q.messages[&seq].lock_token.is_some();
                if lock_lost && q.messages[&seq].delivery_count >= max {
                    dead_letter_locked(q, seq, now, "MaxDeliveryCountExceeded", max);
                    continue;
                }
                // Invariant: `seq` was just found in this queue, under the same lock.
                let m = q.messages.get_mut(&seq).expect("candidate exists");
                let token = uuid::Uuid::new_v4().to_string();
                m.delivery_count += 1;
                m.lock_token = Some(token.clone());
                m.locked_until = Some(now + lock_duration);
                q.counters.delivered += 1;
                return Some(Delivery {
                    queue: queue.to_string(),
                    message: m.clone(),
                    lock_token: token,
                });
            }
            None
        })
    }

    /// Messages of `queue` that could have been received since `since` or earlier and still wait
    /// for a receiver (not locked now): how far the receivers are behind.
    pub fn waiting_since(&self, queue: &str, since: OffsetDateTime) -> usize {
        let now = self.clock.now();
        self.with_queue(queue, |q| {
            q.messages
                .values()
                .filter(|m| m.available_at <= since && m.expires_at > now)
                .filter(|m| m.locked_until.is_none_or(|l| l <= now))
                .count()
        })
        .unwrap_or(0)
    }

    /// When the next message of `queue` becomes receivable (for receivers that wait).
    pub fn next_available_at(&self, queue: &str) -> Option<OffsetDateTime> {
        self.with_queue(queue, |q| {
            q.messages
                .values()
                .map(|m| match m.locked_until {
                    Some(l) => l.max(m.available_at),
                    None => m.available_at,
                })
                .min()
        })
        .ok()
        .flatten()
    }

    fn find_locked(q: &QueueState, lock_token: &str) -> Option<i64> {
        q.messages
            .values()
            .find(|m| m.lock_token.as_deref() == Some(lock_token))
            .map(|m| m.sequence_number)
    }

    /// Completes (removes) a locked message. The `serviceBus.duplicateDelivery` fault may keep
    /// it for one more delivery, as a lost completion would. Returns false when the lock is gone.
    pub fn complete(&self, queue: &str, lock_token: &str) -> bool {
        let duplicate_p = self.faults.service_bus.duplicate_delivery;
        let now = self.clock.now();
        let done = self
            .with_queue(queue, |q| {
                let Some(seq) = Self::find_locked(q, lock_token) else {
                    return false;
                };
                // Invariant: `seq` was just found in this queue, under the same lock.
                let m = q.messages.get_mut(&seq).expect("found");
                if !m.duplicated && self.dice.roll(duplicate_p) {
                    m.duplicated = true;
                    m.lock_token = None;
                    m.locked_until = None;
                    m.available_at = now;
                    q.counters.duplicate_deliveries_injected += 1;
                } else {
                    q.messages.remove(&seq);
                }
                q.counters.completed += 1;
                true
            })
            .unwrap_or(false);
        self.changed.notify_waiters();
        done
    }

    /// Abandons a locked message: available again at once; dead-lettered when its
    /// DeliveryCount reached `maxDeliveryCount`.
    pub fn abandon(&self, queue: &str, lock_token: &str) -> bool {
        let now = self.clock.now();
        let max = self.config.max_delivery_count;
        let done = self
            .with_queue(queue, |q| {
                let Some(seq) = Self::find_locked(q, lock_token) else {
                    return false;
                };
                q.counters.abandoned += 1;
                if q.messages[&seq].delivery_count >= max {
                    dead_letter_locked(q, seq, now, "MaxDeliveryCountExceeded", max);
                } else {
                    // Invariant: `seq` was just found in this queue, under the same lock.
                    let m = q.messages.get_mut(&seq).expect("found");
                    m.lock_token = None;
                    m.locked_until = None;
                    m.available_at = now;
                }
                true
            })
            .unwrap_or(false);
        self.changed.notify_waiters();
        done
    }

    /// Extends a held lock to `until` (the host's automatic lock renewal). False if lost.
    pub fn renew_lock(&self, queue: &str, lock_token: &str, until: OffsetDateTime) -> bool {
        self.with_queue(queue, |q| match Self::find_locked(q, lock_token) {
            Some(seq) => {
                // Invariant: `seq` was just found in this queue, under the same lock.
                let m = q.messages.get_mut(&seq).expect("found");
                m.locked_until = Some(until);
                true
            }
            None => false,
        })
        .unwrap_or(false)
    }

    /// Dead-letters a locked message with the given reason.
    pub fn dead_letter(
        &self,
        queue: &str,
        lock_token: &str,
        reason: &str,
        description: &str,
    ) -> bool {
        let now = self.clock.now();
        self.with_queue(queue, |q| {
            let Some(seq) = Self::find_locked(q, lock_token) else {
                return false;
            };
            // Invariant: `seq` was just found in this queue, under the same lock.
            let mut m = q.messages.remove(&seq).expect("found");
            m.lock_token = None;
            m.locked_until = None;
            q.dead_letters.push(DeadLetter {
                message: m,
                reason: reason.to_string(),
                description: description.to_string(),
                dead_lettered_at: now,
            });
            q.counters.dead_lettered += 1;
            true
        })
        .unwrap_or(false)
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Active and scheduled messages of a queue, by sequence number.
    pub fn messages(&self, queue: &str) -> Result<Vec<StoredMessage>, BusError> {
        self.with_queue(queue, |q| q.messages.values().cloned().collect())
    }

    pub fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>, BusError> {
        self.with_queue(queue, |q| q.dead_letters.clone())
    }

    pub fn counters(&self, queue: &str) -> Result<QueueCounters, BusError> {
        self.with_queue(queue, |q| q.counters.clone())
    }

    /// Summary per queue: counts and counters.
    pub fn summary(&self) -> Value {
        let now = self.clock.now();
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list: Vec<Value> = queues
            .iter()
            .map(|(name, q)| {
                let active = q
                    .messages
                    .values()
                    .filter(|m| m.available_at <= now)
                    .count();
                serde_json::json!({
                    "name": name,
                    "activeMessages": active,
                    "scheduledMessages": q.messages.len() - active,
                    "deadLetters": q.dead_letters.len(),
                    "counters": q.counters,
                })
            })
            .collect();
        serde_json::json!({
            "namespace": self.config.namespace,
            "maxDeliveryCount": self.config.max_delivery_count,
            "authFailures": self.auth_failures.load(Ordering::Relaxed),
            "queues": list,
        })
    }

    /// Every message and dead letter of every queue (state dump).
    pub fn dump(&self) -> Value {
        let mut summary = self.summary();
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let detail: Map<String, Value> = queues
            .iter()
            .map(|(name, q)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "messages": q.messages.values().collect::<Vec<_>>(),
                        "deadLetters": q.dead_letters,
                    }),
                )
            })
            .collect();
        summary["detail"] = Value::Object(detail);
        summary
    }

    /// The SAS signatures clients presented so far (see the field).
    pub fn presented_sas_signatures(&self) -> Vec<String> {
        self.presented_signatures
            .lock()
            .expect("bus lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Checks the `Authorization` header of a REST request for `queue`.
    pub fn authorize(&self, authorization: Option<&str>, queue: &str) -> Result<(), BusError> {
        let result = match authorization {
            None => Err(BusError::Unauthorized(
                "the Authorization header is missing".into(),
            )),
            Some(h) => {
                if let Some(token) = h.strip_prefix("Bearer ") {
                    if self
                        .identity
                        .verify_bearer(token.trim(), SERVICE_BUS_RESOURCE)
                    {
                        Ok(())
                    } else {
                        Err(BusError::Unauthorized(
                            "the bearer token was not issued for https://servicebus.azure.net or has expired".into(),
                        ))
                    }
                } else if let Some(sas) = h.strip_prefix("SharedAccessSignature ") {
                    if let Some(sig) = sas.split('&').find_map(|kv| kv.strip_prefix("sig=")) {
                        let mut seen = self.presented_signatures.lock().expect("bus lock");
                        seen.insert(sig.to_string());
                        if let Ok(decoded) = urlencoding::decode(sig) {
                            seen.insert(decoded.into_owned());
                        }
                    }
                    verify_sas(
                        sas,
                        &self.config.sas_key_name,
                        &self.config.sas_key,
                        &self.config.namespace,
                        queue,
                        OffsetDateTime::now_utc().unix_timestamp(),
                    )
                    .map_err(BusError::Unauthorized)
                } else {
                    Err(BusError::Unauthorized(
                        "expected 'SharedAccessSignature ...' or 'Bearer ...'".into(),
                    ))
                }
            }
        };
        if result.is_err() {
            self.auth_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// REST routes: `POST /{queue}/messages`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/{queue}/messages", post(send_handler))
            .with_state(self.clone())
    }

    /// Inspection routes, mounted under `/_emulator`.
    pub fn inspect_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_emulator/queues", get(list_queues))
            .route("/_emulator/queues/{queue}/messages", get(list_messages))
            .route(
                "/_emulator/queues/{queue}/deadletters",
                get(list_dead_letters),
            )
            .with_state(self.clone())
    }
}

fn dead_letter_locked(q: &mut QueueState, seq: i64, now: OffsetDateTime, reason: &str, max: u32) {
    // Invariant: `seq` was just found in this queue, under the same lock.
    let mut m = q.messages.remove(&seq).expect("present");
    let description = format!(
        "Message could not be consumed after {} delivery attempts (maxDeliveryCount {max}).",
        m.delivery_count
    );
    m.lock_token = None;
    m.locked_until = None;
    q.dead_letters.push(DeadLetter {
        message: m,
        reason: reason.to_string(),
        description,
        dead_lettered_at: now,
    });
    q.counters.dead_lettered += 1;
}
#[cfg(test)]
mod tests;
