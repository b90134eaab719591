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

/// Computes the SAS signature (base64 HMAC-SHA256 of `"{sr}\n{se}"` keyed with the key's UTF-8
/// bytes). `sr` is the URL-encoded resource as it appears in the token.
pub fn sas_signature(sr_encoded: &str, se: &str, key: &str) -> String {
    use base64::Engine;
    // Invariant: serialising JSON values (or an HMAC key of any length) cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{sr_encoded}\n{se}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds a SAS token value (without the `SharedAccessSignature ` prefix) the way the legacy
/// crate does: `sr=<urlencoded url>&sig=<urlencoded sig>&se=<unix>&skn=<name>`.
pub fn sas_token(resource_url: &str, key_name: &str, key: &str, expiry_unix: i64) -> String {
    let sr = urlencoding::encode(resource_url).into_owned();
    let se = expiry_unix.to_string();
    let sig = sas_signature(&sr, &se, key);
    format!(
        "sr={sr}&sig={}&se={se}&skn={key_name}",
        urlencoding::encode(&sig)
    )
}

/// Verifies a SAS token against the key, the expiry (real unix seconds) and the resource: `sr`
/// may be the real namespace URL or this emulator's own address, for the whole namespace or the
/// queue (clients sign the https URL: https://learn.microsoft.com/azure/service-bus-messaging/service-bus-sas#generate-a-shared-access-signature-token).
pub fn verify_sas(
    token: &str,
    key_name: &str,
    key: &str,
    namespace: &str,
    queue: &str,
    now_unix: i64,
) -> Result<(), String> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in token.trim().split('&') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed SAS field {part:?}"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("SAS token lacks the {k} field"))
    };
    let (sr_raw, sig_raw, se, skn) = (get("sr")?, get("sig")?, get("se")?, get("skn")?);
    if skn != key_name {
        return Err(format!("unknown SAS key name {skn:?}"));
    }
    let expiry: i64 = se
        .parse()
        .map_err(|_| format!("SAS se must be unix seconds, got {se:?}"))?;
    if expiry <= now_unix {
        return Err("the SAS token has expired".into());
    }
    let sr =
        urlencoding::decode(sr_raw).map_err(|_| "SAS sr is not URL-encoded UTF-8".to_string())?;
    if !sas_resource_covers(&sr, namespace, queue) {
        return Err(format!("SAS sr {sr:?} does not cover queue {queue:?}"));
    }
    let sig = urlencoding::decode(sig_raw).map_err(|_| "SAS sig is not URL-encoded".to_string())?;
    // Signers differ in how they percent-encode `sr`; accept the token's own spelling or the
    // canonical encoding of the decoded URL.
    let canonical = urlencoding::encode(&sr).into_owned();
    let ok = [sr_raw, canonical.as_str(), &canonical.to_ascii_lowercase()]
        .iter()
        .any(|s| constant_time_eq(sas_signature(s, se, key).as_bytes(), sig.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err("SAS signature does not match the key".into())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sas_resource_covers(sr: &str, namespace: &str, queue: &str) -> bool {
    let lower = sr.to_ascii_lowercase();
    let without_scheme = lower
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&lower);
    let (host, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    let host = host.split(':').next().unwrap_or(host);
    let host_ok = host == format!("{}.servicebus.windows.net", namespace.to_ascii_lowercase())
        || host == "127.0.0.1"
        || host == "localhost";
    let path = path.trim_matches('/');
    let queue = queue.to_ascii_lowercase();
    host_ok && (path.is_empty() || path == queue || path.starts_with(&format!("{queue}/")))
}

/// Parses `ScheduledEnqueueTimeUtc`: RFC 1123 with `GMT` (what Service Bus documents), the
/// `+0000` form the legacy crate sends, or RFC 3339.
pub fn parse_broker_time(text: &str) -> Result<OffsetDateTime, String> {
    let t = text.trim();
    let rfc2822 = t
        .strip_suffix(" GMT")
        .or_else(|| t.strip_suffix(" UTC"))
        .or_else(|| t.strip_suffix(" UT"))
        .map(|s| format!("{s} +0000"))
        .unwrap_or_else(|| t.to_string());
    OffsetDateTime::parse(&rfc2822, &time::format_description::well_known::Rfc2822)
        .or_else(|_| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .map(|d| d.to_offset(time::UtcOffset::UTC))
        .map_err(|_| {
            format!(
                "ScheduledEnqueueTimeUtc {t:?} is not a date like \"Wed, 25 Nov 2026 21:30:15 GMT\""
            )
        })
}

/// The `BrokerProperties` we honour.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BrokerProperties {
    message_id: Option<String>,
    correlation_id: Option<String>,
    session_id: Option<String>,
    label: Option<String>,
    reply_to: Option<String>,
    to: Option<String>,
    reply_to_session_id: Option<String>,
    partition_key: Option<String>,
    content_type: Option<String>,
    time_to_live: Option<f64>,
    scheduled_enqueue_time_utc: Option<String>,
}

fn apply_broker_properties(
    msg: &mut NewMessage,
    props: Option<Value>,
    where_: &str,
) -> Result<(), BusError> {
    let Some(props) = props else { return Ok(()) };
    let bp: BrokerProperties = serde_json::from_value(props)
        .map_err(|e| BusError::BadRequest(format!("{where_}: invalid BrokerProperties: {e}")))?;
    msg.message_id = bp.message_id.or(msg.message_id.take());
    msg.correlation_id = bp.correlation_id;
    msg.session_id = bp.session_id;
    msg.subject = bp.label;
    msg.reply_to = bp.reply_to;
    msg.to = bp.to;
    msg.reply_to_session_id = bp.reply_to_session_id;
    msg.partition_key = bp.partition_key;
    if bp.content_type.is_some() {
        msg.content_type = bp.content_type;
    }
    if let Some(ttl) = bp.time_to_live {
        if !(ttl.is_finite() && ttl > 0.0) {
            return Err(BusError::BadRequest(format!(
                "{where_}: BrokerProperties.TimeToLive must be positive seconds, got {ttl}"
            )));
        }
        msg.time_to_live = Some(time::Duration::seconds_f64(ttl.min(1e10)));
    }
    if let Some(t) = bp.scheduled_enqueue_time_utc {
        msg.scheduled_enqueue_time = Some(
            parse_broker_time(&t).map_err(|e| BusError::BadRequest(format!("{where_}: {e}")))?,
        );
    }
    Ok(())
}

/// Headers that are transport or broker fields, not custom application properties.
const NON_PROPERTY_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "brokerproperties",
    "accept",
    "accept-encoding",
    "user-agent",
    "connection",
    "transfer-encoding",
    "expect",
    "traceparent",
    "tracestate",
];

fn header_properties(headers: &HeaderMap) -> Map<String, Value> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !NON_PROPERTY_HEADERS.contains(&k) && !k.starts_with("x-ms-")
        })
        .filter_map(|(k, v)| {
            let text = v.to_str().ok()?;
            // Service Bus reads quoted values as strings and bare ones as numbers/booleans.
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
            Some((k.as_str().to_string(), value))
        })
        .collect()
}

/// Parses a REST send request into messages.
fn parse_send(headers: &HeaderMap, body: &[u8]) -> Result<Vec<NewMessage>, BusError> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/vnd.microsoft.servicebus.json"))
    {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            BusError::BadRequest(format!(
                "batch body must be a JSON array of {{\"Body\", \"BrokerProperties\"}}: {e}"
            ))
        })?;
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let mut obj = match item {
                    Value::Object(o) => o,
                    _ => {
                        return Err(BusError::BadRequest(format!(
                            "batch item {i} must be an object"
                        )))
                    }
                };
                let body = match obj.remove("Body") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => {
                        return Err(BusError::BadRequest(format!(
                            "batch item {i} lacks the Body field"
                        )))
                    }
                };
                let mut msg = NewMessage {
                    body,
                    ..Default::default()
                };
                if let Some(Value::Object(p)) = obj.remove("UserProperties") {
                    msg.application_properties = p;
                }
                apply_broker_properties(
                    &mut msg,
                    obj.remove("BrokerProperties"),
                    &format!("batch item {i}"),
                )?;
                Ok(msg)
            })
            .collect();
    }
    let mut msg = NewMessage {
        body: String::from_utf8_lossy(body).into_owned(),
        content_type,
        application_properties: header_properties(headers),
        ..Default::default()
    };
    let props = match headers.get("brokerproperties") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .ok_or_else(|| {
                    BusError::BadRequest("the BrokerProperties header is not a JSON object".into())
                })?,
        ),
        None => None,
    };
    apply_broker_properties(&mut msg, props, "BrokerProperties header")?;
    Ok(vec![msg])
}

/// Service Bus answers errors with a small XML document.
fn bus_error_response(err: &BusError) -> Response {
    let (status, code) = match err {
        BusError::NoSuchQueue(_) => (StatusCode::NOT_FOUND, 404),
        BusError::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
        BusError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, 401),
    };
    let detail = err
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )],
        format!("<Error><Code>{code}</Code><Detail>{detail}</Detail></Error>"),
    )
        .into_response()
}

async fn send_handler(
    State(bus): State<Arc<ServiceBus>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Err(e) = bus.authorize(auth, &queue) {
        return bus_error_response(&e);
    }
    if bus.with_queue(&queue, |_| ()).is_err() {
        return bus_error_response(&BusError::NoSuchQueue(queue));
    }
    let messages = match parse_send(&headers, &body) {
        Ok(m) => m,
        Err(e) => return bus_error_response(&e),
    };
    // Standard tier's message size limit (docs/emulator-arm.md cites the quota): the whole
    // send is refused with 403, as the REST Send Message operation answers a message too large.
    if let Some(big) = messages
        .iter()
        .map(|m| m.body.len())
        .find(|n| *n > crate::messages::MAX_MESSAGE_BYTES)
    {
        return (
            StatusCode::FORBIDDEN,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/xml; charset=utf-8",
            )],
            format!(
                "<Error><Code>403</Code><Detail>The message of {big} bytes exceeds the maximum message size of {} bytes (Standard tier).</Detail></Error>",
                crate::messages::MAX_MESSAGE_BYTES
            ),
        )
            .into_response();
    }
    for msg in messages {
        if let Err(e) = bus.send(&queue, msg) {
            return bus_error_response(&e);
        }
    }
    StatusCode::CREATED.into_response()
}

async fn list_queues(State(bus): State<Arc<ServiceBus>>) -> Json<Value> {
    Json(bus.summary())
}

async fn list_messages(State(bus): State<Arc<ServiceBus>>, Path(queue): Path<String>) -> Response {
    match bus.messages(&queue) {
        Ok(m) => Json(m).into_response(),
        Err(e) => bus_error_response(&e),
    }
}

async fn list_dead_letters(
    State(bus): State<Arc<ServiceBus>>,
    Path(queue): Path<String>,
) -> Response {
    match bus.dead_letters(&queue) {
        Ok(m) => Json(m).into_response(),
        Err(e) => bus_error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use time::macros::datetime;
    use tower::ServiceExt;

    fn bus_with(max_delivery: u32, faults: FaultConfig) -> (Arc<ServiceBus>, Arc<VirtualClock>) {
        let clock = Arc::new(VirtualClock::new(datetime!(2026-11-25 21:00 UTC), 1.0));
        let identity = IdentityEndpoint::new("h", true);
        let bus = ServiceBus::new(
            BusConfig {
                namespace: "contoso-sb".into(),
                sas_key: "k3y".into(),
                sas_key_name: "Send".into(),
                max_delivery_count: max_delivery,
                ..Default::default()
            },
            clock.clone(),
            Arc::new(Dice::new(1)),
            Arc::new(faults),
            identity,
        );
        (bus, clock)
    }

    fn bus() -> (Arc<ServiceBus>, Arc<VirtualClock>) {
        bus_with(10, FaultConfig::default())
    }

    async fn post(
        bus: &Arc<ServiceBus>,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::post(path);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = bus
            .router()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn sas(url: &str, key_name: &str, key: &str, expiry: i64) -> String {
        format!(
            "SharedAccessSignature {}",
            sas_token(url, key_name, key, expiry)
        )
    }

    fn in_an_hour() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp() + 3600
    }

    #[test]
    fn sas_signature_matches_the_crates_md_probe_construction() {
        // Independent construction: HMAC over "{urlencoded sr}\n{se}" with the raw key bytes.
        let sr = "https%3A%2F%2Fmynamespace.servicebus.windows.net%2Fmyqueue%2Fmessages";
        let sig = sas_signature(sr, "1795642158", "key");
        let mut mac = HmacSha256::new_from_slice(b"key").unwrap();
        mac.update(format!("{sr}\n1795642158").as_bytes());
        use base64::Engine;
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, expected);
        assert_eq!(sig.len(), 44);
    }

    #[tokio::test]
    async fn sas_accepts_a_correct_signature_and_rejects_wrong_key_name_expiry_and_scope() {
        let (bus, _) = bus();
        let real_url = "https://contoso-sb.servicebus.windows.net/rp-create/messages";
        let cases = [
            (
                sas(real_url, "Send", "k3y", in_an_hour()),
                StatusCode::CREATED,
            ),
            (
                sas("http://127.0.0.1:9/rp-create", "Send", "k3y", in_an_hour()),
                StatusCode::CREATED,
            ),
            (
                sas(
                    "https://contoso-sb.servicebus.windows.net/",
                    "Send",
                    "k3y",
                    in_an_hour(),
                ),
                StatusCode::CREATED,
            ),
            (
                sas(real_url, "Send", "wrong", in_an_hour()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                sas(real_url, "Listen", "k3y", in_an_hour()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                sas(
                    real_url,
                    "Send",
                    "k3y",
                    OffsetDateTime::now_utc().unix_timestamp() - 1,
                ),
                StatusCode::UNAUTHORIZED,
            ),
            (
                sas(
                    "https://other.servicebus.windows.net/rp-create",
                    "Send",
                    "k3y",
                    in_an_hour(),
                ),
                StatusCode::UNAUTHORIZED,
            ),
            (
                sas(
                    "https://contoso-sb.servicebus.windows.net/rp-poll",
                    "Send",
                    "k3y",
                    in_an_hour(),
                ),
                StatusCode::UNAUTHORIZED,
            ),
            ("Basic abc".to_string(), StatusCode::UNAUTHORIZED),
        ];
        for (i, (auth, expected)) in cases.iter().enumerate() {
            let (status, body) = post(
                &bus,
                "/rp-create/messages",
                &[("authorization", auth.clone())],
                "x",
            )
            .await;
            assert_eq!(status, *expected, "case {i}: {body}");
        }
        assert_eq!(
            post(&bus, "/rp-create/messages", &[], "x").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(bus.messages("rp-create").unwrap().len(), 3);
        // Unknown queue: 404 once authorised.
        let auth = sas(
            "https://contoso-sb.servicebus.windows.net/",
            "Send",
            "k3y",
            in_an_hour(),
        );
        let (status, body) = post(&bus, "/nope/messages", &[("authorization", auth)], "x").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }

    #[tokio::test]
    async fn bearer_tokens_must_come_from_the_identity_endpoint_for_service_bus() {
        let (bus, _) = bus();
        let sb = bus.identity.issue(SERVICE_BUS_RESOURCE, None).access_token;
        let arm = bus
            .identity
            .issue(super::super::identity::ARM_RESOURCE, None)
            .access_token;
        let send = |t: String| {
            let bus = bus.clone();
            async move {
                post(
                    &bus,
                    "/rp-poll/messages",
                    &[("authorization", format!("Bearer {t}"))],
                    "{}",
                )
                .await
                .0
            }
        };
        assert_eq!(send(sb).await, StatusCode::CREATED);
        assert_eq!(send(arm).await, StatusCode::UNAUTHORIZED);
        assert_eq!(send("forged".into()).await, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn an_id_expires_from_duplicate_detection_by_its_own_time_not_by_the_last_pruning() {
        let (bus, clock) = bus();
        let send = |id: &str| {
            bus.send(
                "rp-poll",
                NewMessage {
                    message_id: Some(id.into()),
                    body: "{}".into(),
                    ..NewMessage::default()
                },
            )
            .unwrap()
        };
        assert!(!matches!(send("a"), SendOutcome::DuplicateDropped));
        clock.advance(DUPLICATE_WINDOW - time::Duration::milliseconds(500));
        // Pruned now (more than a second since the last pruning); "a" is still in the window.
        assert!(!matches!(send("b"), SendOutcome::DuplicateDropped));
        assert!(matches!(send("a"), SendOutcome::DuplicateDropped));
        // 0.7 s later: no pruning yet, but "a" is the window + 0.2 s old: no longer a duplicate.
        clock.advance(time::Duration::milliseconds(700));
        assert!(!matches!(send("a"), SendOutcome::DuplicateDropped));
        assert!(matches!(send("b"), SendOutcome::DuplicateDropped));
        assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 2);
    }

    #[tokio::test]
    async fn broker_properties_duplicate_detection_and_scheduled_enqueue() {
        let (bus, clock) = bus();
        let auth = sas(
            "https://contoso-sb.servicebus.windows.net/rp-poll/messages",
            "Send",
            "k3y",
            in_an_hour(),
        );
        let headers = |bp: &str| {
            vec![
                ("authorization", auth.clone()),
                ("brokerproperties", bp.to_string()),
                ("content-type", "application/json".to_string()),
                ("attempt", "3".to_string()),
            ]
        };
        let bp = r#"{"MessageId":"poll-1","CorrelationId":"c","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:15 GMT"}"#;
        assert_eq!(
            post(&bus, "/rp-poll/messages", &headers(bp), "{\"a\":1}")
                .await
                .0,
            StatusCode::CREATED
        );
        // Same MessageId again: accepted, dropped.
        assert_eq!(
            post(&bus, "/rp-poll/messages", &headers(bp), "{\"a\":2}")
                .await
                .0,
            StatusCode::CREATED
        );
        let msgs = bus.messages("rp-poll").unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body, "{\"a\":1}");
        assert_eq!(msgs[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(msgs[0].correlation_id.as_deref(), Some("c"));
        assert_eq!(msgs[0].application_properties["attempt"], 3);
        assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 1);
        // Scheduled 30 virtual minutes ahead: invisible until the clock gets there.
        assert!(bus.receive("rp-poll").unwrap().is_none());
        clock.advance(time::Duration::minutes(29));
        assert!(bus.receive("rp-poll").unwrap().is_none());
        clock.advance(time::Duration::minutes(2));
        let d = bus.receive("rp-poll").unwrap().expect("now due");
        assert_eq!(d.message.delivery_count, 1);
        assert_eq!(d.message.enqueued_time, datetime!(2026-11-25 21:30:15 UTC));
        assert!(bus.complete("rp-poll", &d.lock_token));
        // Inside the deployed window (7 days) the same id is still a duplicate...
        clock.advance(time::Duration::days(6));
        let again = r#"{"MessageId":"poll-1"}"#;
        assert_eq!(
            post(&bus, "/rp-poll/messages", &headers(again), "late replay")
                .await
                .0,
            StatusCode::CREATED
        );
        assert!(bus.messages("rp-poll").unwrap().is_empty(), "dropped");
        assert_eq!(bus.counters("rp-poll").unwrap().duplicates_dropped, 2);
        // ...and after it the same id is new again.
        clock.advance(DUPLICATE_WINDOW - time::Duration::days(6) + time::Duration::minutes(1));
        let plus0000 =
            r#"{"MessageId":"poll-1","ScheduledEnqueueTimeUtc":"Wed, 25 Nov 2026 21:30:15 +0000"}"#;
        assert_eq!(
            post(&bus, "/rp-poll/messages", &headers(plus0000), "again")
                .await
                .0,
            StatusCode::CREATED
        );
        assert_eq!(bus.messages("rp-poll").unwrap().len(), 1);
        let (status, body) = post(
            &bus,
            "/rp-poll/messages",
            &headers(r#"{"ScheduledEnqueueTimeUtc":"tomorrow"}"#),
            "x",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("ScheduledEnqueueTimeUtc"), "{body}");
    }

    #[tokio::test]
    async fn messages_above_the_standard_tier_limit_are_refused_with_403() {
        // The emulator took 300 KB and 2 MB messages; Standard tier refuses above 256 KB.
        let (bus, _) = bus();
        let auth = sas(
            "https://contoso-sb.servicebus.windows.net/rp-create",
            "Send",
            "k3y",
            in_an_hour(),
        );
        let headers = [("authorization", auth)];
        let at_limit = "x".repeat(crate::messages::MAX_MESSAGE_BYTES);
        assert_eq!(
            post(&bus, "/rp-create/messages", &headers, &at_limit)
                .await
                .0,
            StatusCode::CREATED
        );
        for size in [crate::messages::MAX_MESSAGE_BYTES + 1, 300 * 1024] {
            let (status, text) =
                post(&bus, "/rp-create/messages", &headers, &"x".repeat(size)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{size}");
            assert!(text.contains("maximum message size"), "{text}");
        }
        assert_eq!(bus.messages("rp-create").unwrap().len(), 1);
    }

    #[tokio::test]
    async fn batch_send_reads_body_and_broker_properties_per_item() {
        let (bus, _) = bus();
        let auth = sas(
            "https://contoso-sb.servicebus.windows.net/rp-copy",
            "Send",
            "k3y",
            in_an_hour(),
        );
        let body = r#"[{"Body":"one","BrokerProperties":{"MessageId":"m1","Label":"L"}},
                      {"Body":"two","BrokerProperties":{"MessageId":"m2"},"UserProperties":{"k":"v"}},
                      {"Body":"dup","BrokerProperties":{"MessageId":"m1"}}]"#;
        let headers = [
            ("authorization", auth.clone()),
            (
                "content-type",
                "application/vnd.microsoft.servicebus.json".to_string(),
            ),
        ];
        assert_eq!(
            post(&bus, "/rp-copy/messages", &headers, body).await.0,
            StatusCode::CREATED
        );
        let msgs = bus.messages("rp-copy").unwrap();
        let bodies: Vec<_> = msgs.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two"]);
        assert_eq!(msgs[0].subject.as_deref(), Some("L"));
        assert_eq!(msgs[1].application_properties["k"], "v");
        let (status, text) = post(&bus, "/rp-copy/messages", &headers, r#"[{"NoBody":1}]"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("Body"), "{text}");
    }

    #[test]
    fn abandon_redelivers_immediately_and_dead_letters_after_max_delivery_count() {
        let (bus, _) = bus_with(3, FaultConfig::default());
        bus.send(
            "rp-create",
            NewMessage {
                body: "b".into(),
                message_id: Some("m".into()),
                ..Default::default()
            },
        )
        .unwrap();
        for expected in 1..=3 {
            let d = bus.receive("rp-create").unwrap().expect("redelivered");
            assert_eq!(d.message.delivery_count, expected);
            // Locked: nobody else gets it meanwhile.
            assert!(bus.receive("rp-create").unwrap().is_none());
            assert!(bus.abandon("rp-create", &d.lock_token));
        }
        assert!(bus.receive("rp-create").unwrap().is_none());
        let dl = bus.dead_letters("rp-create").unwrap();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].reason, "MaxDeliveryCountExceeded");
        assert_eq!(dl[0].message.delivery_count, 3);
        assert!(!bus.complete("rp-create", "stale-token"));
    }

    #[test]
    fn lock_expiry_redelivers_and_counts() {
        let (bus, clock) = bus_with(2, FaultConfig::default());
        bus.send(
            "rp-copy",
            NewMessage {
                body: "b".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let d1 = bus.receive("rp-copy").unwrap().unwrap();
        clock.advance(time::Duration::minutes(6));
        let d2 = bus.receive("rp-copy").unwrap().expect("lock expired");
        assert_eq!(d2.message.delivery_count, 2);
        assert!(!bus.complete("rp-copy", &d1.lock_token), "old lock is void");
        clock.advance(time::Duration::minutes(6));
        assert!(bus.receive("rp-copy").unwrap().is_none());
        assert_eq!(
            bus.dead_letters("rp-copy").unwrap()[0].reason,
            "MaxDeliveryCountExceeded"
        );
    }

    #[test]
    fn duplicate_delivery_fault_delivers_once_more() {
        let mut faults = FaultConfig::default();
        faults.service_bus.duplicate_delivery = 1.0;
        let (bus, _) = bus_with(10, faults);
        bus.send(
            "rp-poll",
            NewMessage {
                body: "b".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let d = bus.receive("rp-poll").unwrap().unwrap();
        assert!(bus.complete("rp-poll", &d.lock_token));
        let again = bus
            .receive("rp-poll")
            .unwrap()
            .expect("delivered a second time");
        assert!(bus.complete("rp-poll", &again.lock_token));
        assert!(
            bus.receive("rp-poll").unwrap().is_none(),
            "only one duplicate"
        );
        assert_eq!(
            bus.counters("rp-poll")
                .unwrap()
                .duplicate_deliveries_injected,
            1
        );
    }

    #[test]
    fn broker_times_parse_in_the_documented_forms() {
        let expected = datetime!(2026-11-25 21:30:15 UTC);
        for text in [
            "Wed, 25 Nov 2026 21:30:15 GMT",
            "Wed, 25 Nov 2026 21:30:15 +0000",
            "Wed, 25 Nov 2026 23:30:15 +0200",
            "2026-11-25T21:30:15Z",
        ] {
            assert_eq!(parse_broker_time(text), Ok(expected), "{text}");
        }
        assert!(parse_broker_time("25/11/2026")
            .unwrap_err()
            .contains("ScheduledEnqueueTimeUtc"));
    }

    /// Moved from vmrp-testing (it needs both crates): the fake scheduler's duplicate-detection
    /// window is the emulator's, and the deployed queue's.
    #[test]
    fn the_fake_window_is_the_emulators_and_the_deployed_one() {
        assert_eq!(vmrp_testing::DUPLICATE_DETECTION_WINDOW, DUPLICATE_WINDOW);
    }
}
