//! Scheduled sends to vmrp's queues ([`Scheduler`]), configured from the same app settings the
//! Functions Service Bus trigger uses for the connection `ServiceBusConnection` (PROTOCOL §7):
//! Service Bus REST "Send Message" POSTs over one reused `reqwest::Client` (timeouts, retries,
//! base-URL override), authorised with a SAS token signed from a connection string's shared
//! access key (as azure_messaging_servicebus 0.21 signed them, reused for a minute) or, for an
//! identity-based `__fullyQualifiedNamespace`, with an Entra token.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use futures::StreamExt;
use time::OffsetDateTime;
use url::Url;

use super::error::SendError;
use super::http::{self, RetryConfig, Timeouts};
use super::{OutgoingMessage, Queue, Scheduler};

/// The connection name in vmrp's `function.json` files.
pub const CONNECTION_NAME: &str = "ServiceBusConnection";
/// Entra scope for the Service Bus data plane.
pub const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// Service Bus rejects batches above 256 KB (standard tier); stay well below.
const MAX_BATCH_BYTES: usize = 192 * 1024;

/// Knobs for the scheduler (not secrets).
#[derive(Debug, Clone)]
pub struct ServiceBusOptions {
    /// Send to this base URL instead of `https://{namespace}` (`VMRP_SERVICEBUS_ENDPOINT`; the emulator).
    pub endpoint_override: Option<Url>,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// Refuse every non-loopback URL before any I/O (tests).
    pub loopback_only: bool,
    /// Concurrent single sends when a batch cannot be used (SAS path).
    pub max_parallel_sends: usize,
    /// Messages per REST batch (Entra path).
    pub max_batch_messages: usize,
}

impl Default for ServiceBusOptions {
    fn default() -> Self {
        Self {
            endpoint_override: None,
            timeouts: Timeouts {
                connect: std::time::Duration::from_secs(10),
                request: std::time::Duration::from_secs(30),
            },
            retry: RetryConfig::default(),
            loopback_only: false,
            max_parallel_sends: 8,
            max_batch_messages: 100,
        }
    }
}

/// Bad Service Bus settings; names the setting and what was expected. Never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum ServiceBusConfigError {
    #[error("no Service Bus connection configured: expected {name} or AzureWebJobs{name} (a connection string), or {name}__fullyQualifiedNamespace")]
    Missing { name: String },
    #[error("{setting}: {problem}")]
    Invalid { setting: String, problem: String },
    #[error("{setting} uses identity-based access but no credential was provided")]
    NoCredential { setting: String },
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// A parsed `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `myns.servicebus.windows.net` (or `localhost` for the emulator).
    pub host: String,
    pub key_name: String,
    pub key: String,
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: plain HTTP to `host`.
    pub development_emulator: bool,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("entity_path", &self.entity_path)
            .field("development_emulator", &self.development_emulator)
            .finish()
    }
}

impl ConnectionString {
    /// Parses a Service Bus connection string; `setting` names it in errors. Keys are
    /// case-insensitive, values may contain `=` (base64 keys end with it).
    pub fn parse(setting: &str, text: &str) -> Result<Self, ServiceBusConfigError> {
        let invalid = |problem: String| ServiceBusConfigError::Invalid {
            setting: setting.to_string(),
            problem,
        };
        let mut parts: HashMap<String, String> = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "expected key=value pairs separated by ';', found a part without '=' (key {:?})",
                    part.chars().take(24).collect::<String>()
                ))
            })?;
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let endpoint = parts.get("endpoint").ok_or_else(|| {
            invalid("missing Endpoint=sb://<namespace>.servicebus.windows.net/".into())
        })?;
        let url = Url::parse(endpoint)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
            .ok_or_else(|| invalid(format!("Endpoint {endpoint:?} is not a URL like sb://<namespace>.servicebus.windows.net/")))?;
        if !matches!(url.scheme(), "sb" | "https" | "http" | "amqps") {
            return Err(invalid(format!(
                "Endpoint scheme {:?} is not sb://",
                url.scheme()
            )));
        }
        let mut host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if let Some(port) = url.port() {
            host = format!("{host}:{port}");
        }
        let key_name = parts
            .get("sharedaccesskeyname")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid("missing SharedAccessKeyName (vmrp needs a shared access key; or use __fullyQualifiedNamespace for identity-based access)".into()))?
            .clone();
        let key = parts
            .get("sharedaccesskey")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid("missing SharedAccessKey".into()))?
            .clone();
        Ok(Self {
            host,
            key_name,
            key,
            entity_path: parts.get("entitypath").filter(|v| !v.is_empty()).cloned(),
            development_emulator: parts
                .get("usedevelopmentemulator")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        })
    }

    /// The namespace label SAS tokens sign in front of `.servicebus.windows.net`.
    fn namespace_label(&self) -> &str {
        self.host.split(['.', ':']).next().unwrap_or(&self.host)
    }
}

/// Which connection the app settings describe.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceBusSettings {
    SharedAccessKey {
        setting: String,
        connection: ConnectionString,
    },
    Identity {
        setting: String,
        fully_qualified_namespace: String,
        /// `__clientId`: a user-assigned identity.
        client_id: Option<String>,
    },
}

impl fmt::Debug for ServiceBusSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedAccessKey {
                setting,
                connection,
            } => f
                .debug_struct("SharedAccessKey")
                .field("setting", setting)
                .field("connection", connection)
                .finish(),
            Self::Identity {
                setting,
                fully_qualified_namespace,
                client_id,
            } => f
                .debug_struct("Identity")
                .field("setting", setting)
                .field("fully_qualified_namespace", fully_qualified_namespace)
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl ServiceBusSettings {
    /// Resolves connection `name` like the Functions extension: `<name>`, then
    /// `AzureWebJobs<name>`, each as a connection string or as a `__` section.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        name: &str,
    ) -> Result<Self, ServiceBusConfigError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        for prefix in [name.to_string(), format!("AzureWebJobs{name}")] {
            if let Some(text) = get(&prefix) {
                return Ok(Self::SharedAccessKey {
                    connection: ConnectionString::parse(&prefix, &text)?,
                    setting: prefix,
                });
            }
            let fqns_key = format!("{prefix}__fullyQualifiedNamespace");
            if let Some(fqns) = get(&fqns_key) {
                let fqns = fqns.trim().trim_end_matches('/').to_string();
                let fqns = fqns
                    .strip_prefix("sb://")
                    .or_else(|| fqns.strip_prefix("https://"))
                    .unwrap_or(&fqns)
                    .to_string();
                if fqns.is_empty() || fqns.contains('/') {
                    return Err(ServiceBusConfigError::Invalid {
                        setting: fqns_key,
                        problem: "expected a host name like <namespace>.servicebus.windows.net"
                            .into(),
                    });
                }
                let cred_key = format!("{prefix}__credential");
                if let Some(kind) = get(&cred_key) {
                    if !kind.eq_ignore_ascii_case("managedidentity") {
                        return Err(ServiceBusConfigError::Invalid {
                            setting: cred_key,
                            problem: format!("expected 'managedidentity', got {kind:?}"),
                        });
                    }
                }
                return Ok(Self::Identity {
                    setting: prefix.clone(),
                    fully_qualified_namespace: fqns,
                    client_id: get(&format!("{prefix}__clientId")),
                });
            }
        }
        Err(ServiceBusConfigError::Missing {
            name: name.to_string(),
        })
    }
}

/// Builds the scheduler from app settings (`env`), using `credential` for identity-based
/// access. `VMRP_SERVICEBUS_ENDPOINT` (read via `env`) overrides the base URL.
pub fn scheduler_from_env(
    env: &dyn Fn(&str) -> Option<String>,
    credential: Option<Arc<dyn TokenCredential>>,
    mut options: ServiceBusOptions,
) -> Result<Arc<dyn Scheduler>, ServiceBusConfigError> {
    if options.endpoint_override.is_none() {
        if let Some(raw) = env("VMRP_SERVICEBUS_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            let url = Url::parse(raw.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| ServiceBusConfigError::Invalid {
                    setting: "VMRP_SERVICEBUS_ENDPOINT".into(),
                    problem: format!("expected an http(s) URL, got {raw:?}"),
                })?;
            options.endpoint_override = Some(url);
        }
    }
    let settings = ServiceBusSettings::from_env(env, CONNECTION_NAME)?;
    tracing::info!(settings = ?settings, "Service Bus scheduler configured");
    match settings {
        ServiceBusSettings::SharedAccessKey { connection, .. } => {
            Ok(Arc::new(SasScheduler::new(connection, options)?))
        }
        ServiceBusSettings::Identity {
            setting,
            fully_qualified_namespace,
            client_id,
        } => {
            // `__clientId` names the user-assigned identity the Functions trigger uses for this
            // connection; send with the same one rather than the app's default credential.
            let credential = match client_id {
                Some(id) => super::credential::managed_identity_for_client(
                    &id,
                    &super::credential::CredentialOptions {
                        loopback_only: options.loopback_only,
                        ..Default::default()
                    },
                )
                .map_err(|e| ServiceBusConfigError::Invalid {
                    setting: format!("{setting}__clientId"),
                    problem: e.to_string(),
                })?,
                None => credential.ok_or(ServiceBusConfigError::NoCredential { setting })?,
            };
            Ok(Arc::new(EntraScheduler::new(
                &fully_qualified_namespace,
                credential,
                options,
            )?))
        }
    }
}

/// `ScheduledEnqueueTimeUtc` as Service Bus documents it: RFC 1123 with `GMT`
/// (`Wed, 25 Nov 2026 21:30:15 GMT`). Converts to UTC and rounds up to the whole second: a
/// message must not become visible before the time asked (the timer's pacing relies on it, and
/// truncating moved up to a second of creates ahead of their tokens). Refuses years it cannot
/// write.
pub fn format_enqueue_time(at: OffsetDateTime) -> Result<String, String> {
    let utc = at.to_offset(time::UtcOffset::UTC);
    let utc = match utc.nanosecond() {
        0 => utc,
        ns => utc + time::Duration::nanoseconds(1_000_000_000 - i64::from(ns)),
    };
    if !(1900..=9999).contains(&utc.year()) {
        return Err(format!("scheduled time {at} is outside years 1900..=9999"));
    }
    Ok(super::http::http_date(utc))
}

/// The `BrokerProperties` JSON for one message (`MessageId`, optional `ScheduledEnqueueTimeUtc`).
pub fn broker_properties(
    message: &OutgoingMessage,
    with_content_type: bool,
) -> Result<serde_json::Value, SendError> {
    let mut props = serde_json::Map::new();
    props.insert("MessageId".into(), message.message_id.clone().into());
    if let Some(at) = message.not_before {
        let text = format_enqueue_time(at).map_err(|m| permanent(message.queue, m))?;
        props.insert("ScheduledEnqueueTimeUtc".into(), text.into());
    }
    if with_content_type {
        props.insert("ContentType".into(), "application/json".into());
    }
    Ok(serde_json::Value::Object(props))
}

fn permanent(queue: Queue, message: String) -> SendError {
    SendError {
        queue: queue.name().to_string(),
        // 400: our input was bad; SendError::class() reads it as permanent.
        status: Some(400),
        message,
    }
}

fn build_reqwest(options: &ServiceBusOptions) -> Result<reqwest::Client, ServiceBusConfigError> {
    http::client_builder()
        .connect_timeout(options.timeouts.connect)
        .timeout(options.timeouts.request)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vmrp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServiceBusConfigError::Http(http::error_chain(&e)))
}

fn check_base(base: &Url, options: &ServiceBusOptions) -> Result<(), ServiceBusConfigError> {
    if options.loopback_only && !http::is_loopback(base) {
        return Err(ServiceBusConfigError::Invalid {
            setting: "VMRP_SERVICEBUS_ENDPOINT".into(),
            problem: format!("{base} is not a loopback address and loopback_only is set"),
        });
    }
    Ok(())
}

/// True for statuses worth another try.
fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

// ---------------------------------------------------------------------------------------------
// The REST send both paths share
// ---------------------------------------------------------------------------------------------

/// How long a signed SAS token is valid, as the legacy SDK signs them (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-sas#generate-a-shared-access-signature-token).
const SAS_VALIDITY_SECS: i64 = 3600;
/// A SAS token is reused for this long, so it always has at least 59 minutes left.
const SAS_REUSE_SECS: i64 = 60;

/// What goes in the `Authorization` header.
enum Authorization {
    /// `SharedAccessSignature sr=…&sig=…&se=…&skn=…` for the connection string's key.
    Sas(SasSigner),
    /// `Bearer <Entra token>` for `https://servicebus.azure.net`.
    Entra(Arc<dyn TokenCredential>),
}

/// Signs SAS tokens as azure_messaging_servicebus 0.21 did (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-sas#generate-a-shared-access-signature-token): `sr` is the
/// form-urlencoded `https://{namespace host}/{queue}/messages` (also when sending elsewhere, e.g.
/// to the emulator), HMAC-SHA256 keyed with the key's UTF-8 bytes over `"{sr}\n{se}"`,
/// `se` = now + 1 h. One token per queue is kept for a minute instead of signing every send.
struct SasSigner {
    key_name: String,
    key: String,
    /// `https://{namespace}.servicebus.windows.net`
    resource_base: String,
    /// Per queue: the header value and the unix time it was signed.
    cache: std::sync::Mutex<HashMap<Queue, (String, i64)>>,
}

impl SasSigner {
    fn new(connection: &ConnectionString) -> Self {
        Self {
            key_name: connection.key_name.clone(),
            key: connection.key.clone(),
            // The namespace's own host, so sovereign clouds (`*.servicebus.chinacloudapi.cn`,
            // `*.servicebus.usgovcloudapi.net`) sign the resource they send to; the legacy
            // crate always signed `servicebus.windows.net`. The development emulator keeps that.
            resource_base: if connection.development_emulator {
                format!(
                    "https://{}.servicebus.windows.net",
                    connection.namespace_label()
                )
            } else {
                format!("https://{}", connection.host)
            },
            cache: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn header(&self, queue: Queue, now_unix: i64) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, signed)) = cache.get(&queue) {
            if (*signed..*signed + SAS_REUSE_SECS).contains(&now_unix) {
                return header.clone();
            }
        }
        let header = self.sign(queue, now_unix + SAS_VALIDITY_SECS);
        cache.insert(queue, (header.clone(), now_unix));
        header
    }

    fn sign(&self, queue: Queue, expiry_unix: i64) -> String {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let resource = format!("{}/{}/messages", self.resource_base, queue.name());
        let sr: String = url::form_urlencoded::byte_serialize(resource.as_bytes()).collect();
        // Invariant: HMAC accepts keys of any length (`new_from_slice` only fails for
        // fixed-key-size MACs), so this cannot fail.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(format!("{sr}\n{expiry_unix}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!(
            "SharedAccessSignature sr={sr}&sig={sig}&se={expiry_unix}&skn={}",
            self.key_name
        )
    }
}

/// POSTs to `{base}/{queue}/messages` with one reused `reqwest::Client`, retrying transient
/// failures (Service Bus duplicate detection on the deterministic MessageId makes a repeated
/// send harmless).
struct RestSender {
    http: reqwest::Client,
    base: Url,
    /// `{base}/{queue}/messages` for each queue, built once.
    messages_urls: Vec<(Queue, Url)>,
    auth: Authorization,
    retry: RetryConfig,
    loopback_only: bool,
}

impl RestSender {
    fn new(
        base: Url,
        auth: Authorization,
        options: &ServiceBusOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        check_base(&base, options)?;
        let base_path = base.path().trim_end_matches('/').to_string();
        let messages_urls = Queue::SENT
            .into_iter()
            .map(|queue| {
                let mut url = base.clone();
                url.set_path(&format!("{base_path}/{}/messages", queue.name()));
                (queue, url)
            })
            .collect();
        Ok(Self {
            http: build_reqwest(options)?,
            base,
            messages_urls,
            auth,
            retry: options.retry,
            loopback_only: options.loopback_only,
        })
    }

    fn messages_url(&self, queue: Queue) -> &Url {
        // Invariant: `messages_urls` is built with one entry per `Queue::ALL` at construction.
        &self
            .messages_urls
            .iter()
            .find(|(q, _)| *q == queue)
            .expect("a URL for every queue")
            .1
    }

    async fn authorization(&self, queue: Queue) -> Result<String, SendError> {
        match &self.auth {
            Authorization::Sas(signer) => {
                Ok(signer.header(queue, OffsetDateTime::now_utc().unix_timestamp()))
            }
            Authorization::Entra(credential) => credential
                .get_token(&[SERVICEBUS_SCOPE], None)
                .await
                .map(|token| format!("Bearer {}", token.token.secret()))
                .map_err(|e| SendError {
                    queue: queue.name().to_string(),
                    status: None,
                    message: format!("getting a Service Bus token: {}", http::error_chain(&e)),
                }),
        }
    }

    /// One message, with BrokerProperties in the GMT date format Service Bus documents
    /// (https://learn.microsoft.com/rest/api/servicebus/send-message-to-queue).
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        let props = broker_properties(&message, false)?;
        self.post(
            message.queue,
            "application/json",
            Some(props.to_string()),
            message.body,
        )
        .await
    }

    async fn post(
        &self,
        queue: Queue,
        content_type: &str,
        broker_properties: Option<String>,
        body: String,
    ) -> Result<(), SendError> {
        let url = self.messages_url(queue);
        let fail = |status: Option<u16>, message: String| SendError {
            queue: queue.name().to_string(),
            status,
            message,
        };
        if self.loopback_only && !http::is_loopback(url) {
            return Err(fail(Some(400), format!("refusing {url} (loopback_only)")));
        }
        let body = bytes::Bytes::from(body);
        let mut attempt = 1;
        loop {
            let authorization = self.authorization(queue).await?;
            let mut rb = self
                .http
                .post(url.clone())
                .header("authorization", authorization)
                .header("content-type", content_type)
                .body(body.clone());
            if let Some(bp) = &broker_properties {
                rb = rb.header("BrokerProperties", bp.as_str());
            }
            let outcome = match rb.send().await {
                Ok(rsp) if rsp.status().is_success() => return Ok(()),
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    let retry_after = http::retry_after_from(rsp.headers());
                    let text = rsp.text().await.unwrap_or_default();
                    (
                        fail(Some(status), text.chars().take(300).collect()),
                        retryable_status(status),
                        retry_after,
                    )
                }
                Err(e) => (fail(None, http::error_chain(&e)), true, None),
            };
            let (err, retryable, retry_after) = outcome;
            if !retryable || attempt >= self.retry.max_attempts.max(1) {
                return Err(err);
            }
            let Some(delay) =
                self.retry
                    .delay_before_retry(attempt, retry_after, rand::random::<f64>())
            else {
                return Err(err);
            };
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SAS: a shared access key from the connection string
// ---------------------------------------------------------------------------------------------

/// Sends with a shared access key, one REST POST per message (what the legacy
/// azure_messaging_servicebus 0.21 crate sent, without building a client and signing per send).
pub struct SasScheduler {
    rest: RestSender,
    connection: ConnectionString,
    max_parallel: usize,
}

impl fmt::Debug for SasScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasScheduler")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl SasScheduler {
    pub fn new(
        connection: ConnectionString,
        options: ServiceBusOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        let base = match &options.endpoint_override {
            Some(u) => u.clone(),
            None => {
                let scheme = if connection.development_emulator {
                    "http"
                } else {
                    "https"
                };
                Url::parse(&format!("{scheme}://{}", connection.host)).map_err(|_| {
                    ServiceBusConfigError::Invalid {
                        setting: CONNECTION_NAME.into(),
                        problem: format!("Endpoint host {:?} is not usable", connection.host),
                    }
                })?
            }
        };
        Ok(Self {
            rest: RestSender::new(
                base,
                Authorization::Sas(SasSigner::new(&connection)),
                &options,
            )?,
            connection,
            max_parallel: options.max_parallel_sends.max(1),
        })
    }

    fn check_entity(&self, queue: Queue) -> Result<(), SendError> {
        match &self.connection.entity_path {
            Some(entity) if !entity.eq_ignore_ascii_case(queue.name()) => Err(permanent(
                queue,
                format!("the connection string is scoped to EntityPath {entity:?}, not this queue"),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Scheduler for SasScheduler {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        self.check_entity(message.queue)?;
        self.rest.send(message).await
    }

    /// One POST per message, a bounded number at a time (the SAS path never used REST batches).
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<(), SendError> {
        let total = messages.len();
        let results: Vec<Result<(), SendError>> = futures::stream::iter(messages)
            .map(|m| self.send(m))
            .buffer_unordered(self.max_parallel)
            .collect()
            .await;
        let failed: Vec<SendError> = results.into_iter().filter_map(Result::err).collect();
        match failed.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(SendError {
                message: format!(
                    "{} (and possibly others; {total} messages attempted)",
                    first.message
                ),
                ..first
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entra: a bearer token from the managed identity
// ---------------------------------------------------------------------------------------------

/// Sends with an Entra token (managed identity) to `https://{namespace}/{queue}/messages`.
pub struct EntraScheduler {
    rest: RestSender,
    max_batch_messages: usize,
}

impl fmt::Debug for EntraScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraScheduler")
            .field("base", &self.rest.base.as_str())
            .finish_non_exhaustive()
    }
}

impl EntraScheduler {
    pub fn new(
        fully_qualified_namespace: &str,
        credential: Arc<dyn TokenCredential>,
        options: ServiceBusOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        let base = match &options.endpoint_override {
            Some(u) => u.clone(),
            None => Url::parse(&format!("https://{fully_qualified_namespace}")).map_err(|_| {
                ServiceBusConfigError::Invalid {
                    setting: format!("{CONNECTION_NAME}__fullyQualifiedNamespace"),
                    problem: format!("{fully_qualified_namespace:?} is not a host name"),
                }
            })?,
        };
        Ok(Self {
            rest: RestSender::new(base, Authorization::Entra(credential), &options)?,
            max_batch_messages: options.max_batch_messages.max(1),
        })
    }
}

/// Splits `messages` of one queue into REST batches under the count and size limits.
fn batches(
    messages: Vec<OutgoingMessage>,
    max_count: usize,
) -> Result<Vec<(Queue, Vec<serde_json::Value>)>, SendError> {
    let mut out: Vec<(Queue, Vec<serde_json::Value>, usize)> = Vec::new();
    for m in messages {
        let item = serde_json::json!({
            "Body": m.body,
            "BrokerProperties": broker_properties(&m, true)?,
        });
        let size = item.to_string().len() + 1;
        match out.iter_mut().rev().find(|(q, _, _)| *q == m.queue) {
            Some((_, items, bytes))
                if items.len() < max_count && *bytes + size <= MAX_BATCH_BYTES =>
            {
                items.push(item);
                *bytes += size;
            }
            _ => out.push((m.queue, vec![item], size)),
        }
    }
    Ok(out.into_iter().map(|(q, items, _)| (q, items)).collect())
}

#[async_trait]
impl Scheduler for EntraScheduler {
    async fn send(&self, message: OutgoingMessage) -> Result<(), SendError> {
        self.rest.send(message).await
    }

    /// Service Bus REST "Send Message Batch": one POST per queue chunk, a JSON array of
    /// `{Body, BrokerProperties}` with Content-Type `application/vnd.microsoft.servicebus.json`.
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<(), SendError> {
        for (queue, items) in batches(messages, self.max_batch_messages)? {
            let body = serde_json::Value::Array(items).to_string();
            self.rest
                .post(
                    queue,
                    "application/vnd.microsoft.servicebus.json",
                    None,
                    body,
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
