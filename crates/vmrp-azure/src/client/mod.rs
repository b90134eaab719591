//! The ARM Compute client: [`ArmClient`] implements [`Arm`] over one shared `reqwest::Client`,
//! with bearer tokens from an azure_core `TokenCredential`, bounded retries for transient
//! failures, `nextLink` paging restricted to the endpoint's origin, and optional traffic
//! recording for `oav validate-traffic`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::ArmError;
use super::http::{self, Exchange, RetryConfig, Timeouts, TrafficRecorder};
use super::models::{
    Disk, InstanceViewStatus, Page, RestorePoint, RestorePointCollection, VirtualMachine,
    API_VERSION,
};
use super::{Accepted, Arm, LroHandle, RateLimits, ResourceId, VmScope};

mod arm;

/// Public-cloud ARM.
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
/// `Microsoft.Compute/disks` is versioned separately from the rest of Compute.
pub const DISKS_API_VERSION: &str = "2024-03-02";
/// Guard against a server that hands out `nextLink`s forever (a repeated link is caught
/// earlier); a fleet of 100,000 VMs lists its disks in about 4,000 pages of 50.
const MAX_PAGES: usize = 20_000;
/// A listing pauses between pages while ARM reports fewer reads than this left for the
/// subscription (two seconds of the 25/s refill): a long listing must not drain the bucket the
/// handlers' reads share, nor run into 429s itself.
const LISTING_READ_FLOOR: u32 = 50;
const LISTING_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Every kind of request the client sends, with the RBAC action it needs. Every request goes
/// through [`ArmClient::send`] with one of these, so this table is the complete list the custom
/// role must cover (a test checks it against `operations::ARM_ACTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArmOperation {
    GetVm,
    ListVms,
    GetDisk,
    ListDisks,
    PutCollection,
    PatchCollection,
    GetCollection,
    ListCollections,
    DeleteCollection,
    PutRestorePoint,
    GetRestorePoint,
    DeleteRestorePoint,
    /// GET on an `Azure-AsyncOperation` / `Location` URL (`.../locations/{region}/operations/{id}`).
    PollOperation,
    // The operator's restore (`vmrp restore`), never sent by the functions: their actions are
    // `operations::RESTORE_ACTIONS`, outside the deployed role (see [`ArmOperation::RESTORE`]).
    PutDisk,
    DeleteDisk,
    PutVm,
    DeallocateVm,
    StartVm,
    PutNic,
}

impl ArmOperation {
    pub const ALL: [ArmOperation; 13] = [
        Self::GetVm,
        Self::ListVms,
        Self::GetDisk,
        Self::ListDisks,
        Self::PutCollection,
        Self::PatchCollection,
        Self::GetCollection,
        Self::ListCollections,
        Self::DeleteCollection,
        Self::PutRestorePoint,
        Self::GetRestorePoint,
        Self::DeleteRestorePoint,
        Self::PollOperation,
    ];

    /// What `vmrp restore` sends besides reads (run as the operator, not the app identity).
    pub const RESTORE: [ArmOperation; 6] = [
        Self::PutDisk,
        Self::DeleteDisk,
        Self::PutVm,
        Self::DeallocateVm,
        Self::StartVm,
        Self::PutNic,
    ];

    pub fn method(self) -> Method {
        match self {
            Self::PutCollection
            | Self::PutRestorePoint
            | Self::PutDisk
            | Self::PutVm
            | Self::PutNic => Method::PUT,
            Self::DeallocateVm | Self::StartVm => Method::POST,
            Self::PatchCollection => Method::PATCH,
            Self::DeleteCollection | Self::DeleteRestorePoint | Self::DeleteDisk => Method::DELETE,
            _ => Method::GET,
        }
    }

    /// The `Microsoft.*` authorization action this request needs.
    pub fn action(self) -> &'static str {
        match self {
            Self::GetVm | Self::ListVms => "Microsoft.Compute/virtualMachines/read",
            Self::GetDisk | Self::ListDisks => "Microsoft.Compute/disks/read",
            Self::PutCollection | Self::PatchCollection => {
                "Microsoft.Compute/restorePointCollections/write"
            }
            Self::GetCollection | Self::ListCollections => {
                "Microsoft.Compute/restorePointCollections/read"
            }
            Self::DeleteCollection => "Microsoft.Compute/restorePointCollections/delete",
            Self::PutRestorePoint => {
                "Microsoft.Compute/restorePointCollections/restorePoints/write"
            }
            Self::GetRestorePoint => "Microsoft.Compute/restorePointCollections/restorePoints/read",
            Self::DeleteRestorePoint => {
                "Microsoft.Compute/restorePointCollections/restorePoints/delete"
            }
            Self::PollOperation => "Microsoft.Compute/locations/operations/read",
            Self::PutDisk => "Microsoft.Compute/disks/write",
            Self::DeleteDisk => "Microsoft.Compute/disks/delete",
            Self::PutVm => "Microsoft.Compute/virtualMachines/write",
            Self::DeallocateVm => "Microsoft.Compute/virtualMachines/deallocate/action",
            Self::StartVm => "Microsoft.Compute/virtualMachines/start/action",
            Self::PutNic => "Microsoft.Network/networkInterfaces/write",
        }
    }

    /// Short label for errors and logs, e.g. `PUT restorePoints`.
    pub fn label(self) -> &'static str {
        match self {
            Self::GetVm => "GET virtualMachines",
            Self::ListVms => "LIST virtualMachines",
            Self::GetDisk => "GET disks",
            Self::ListDisks => "LIST disks",
            Self::PutCollection => "PUT restorePointCollections",
            Self::PatchCollection => "PATCH restorePointCollections",
            Self::GetCollection => "GET restorePointCollections",
            Self::ListCollections => "LIST restorePointCollections",
            Self::DeleteCollection => "DELETE restorePointCollections",
            Self::PutRestorePoint => "PUT restorePoints",
            Self::GetRestorePoint => "GET restorePoints",
            Self::DeleteRestorePoint => "DELETE restorePoints",
            Self::PollOperation => "GET operation status",
            Self::PutDisk => "PUT disks",
            Self::DeleteDisk => "DELETE disks",
            Self::PutVm => "PUT virtualMachines",
            Self::DeallocateVm => "POST virtualMachines/deallocate",
            Self::StartVm => "POST virtualMachines/start",
            Self::PutNic => "PUT networkInterfaces",
        }
    }
}

/// Everything [`ArmClient::new`] needs.
#[derive(Clone)]
pub struct ArmClientConfig {
    /// ARM base URL (`VMRP_ARM_ENDPOINT`), e.g. `https://management.azure.com` or the emulator.
    pub endpoint: Url,
    /// Token audience (`VMRP_ARM_AUDIENCE`); `None` = the endpoint's origin. Scope = audience + `/.default`.
    pub audience: Option<String>,
    pub credential: Arc<dyn TokenCredential>,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// Refuse every non-loopback URL before any I/O (tests, local emulator runs).
    pub loopback_only: bool,
    /// Write each request/response pair into this folder (oav traffic format).
    pub record_traffic: Option<PathBuf>,
}

impl std::fmt::Debug for ArmClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClientConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("audience", &self.audience)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("loopback_only", &self.loopback_only)
            .field("record_traffic", &self.record_traffic)
            .finish_non_exhaustive()
    }
}

/// Bad ARM client settings.
#[derive(Debug, thiserror::Error)]
pub enum ArmConfigError {
    #[error("{setting}: expected an absolute http(s) URL, got {value:?}")]
    InvalidEndpoint {
        setting: &'static str,
        value: String,
    },
    #[error("endpoint {0} is not a loopback address, and loopback_only is set")]
    NotLoopback(String),
    #[error("could not create the traffic recording folder {path}: {source}")]
    RecordFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

impl ArmClientConfig {
    /// Defaults for production, reading `VMRP_ARM_ENDPOINT` and `VMRP_ARM_AUDIENCE` via `env`.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, ArmConfigError> {
        let raw = env("VMRP_ARM_ENDPOINT")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Ok(Self::new(
            parse_endpoint("VMRP_ARM_ENDPOINT", &raw)?,
            env("VMRP_ARM_AUDIENCE"),
            credential,
        ))
    }

    /// Defaults for production with the endpoint and audience given (the CLI's `--arm-endpoint`
    /// and `--arm-audience`, which clap already fills from the same variables). A blank
    /// audience means the endpoint's origin.
    pub fn new(
        endpoint: Url,
        audience: Option<String>,
        credential: Arc<dyn TokenCredential>,
    ) -> Self {
        Self {
            endpoint,
            audience: audience.filter(|v| !v.trim().is_empty()),
            credential,
            timeouts: Timeouts::default(),
            retry: RetryConfig::default(),
            loopback_only: false,
            record_traffic: None,
        }
    }

    /// The OAuth scope for ARM tokens: `{audience}/.default`.
    pub fn scope(&self) -> String {
        let audience = match &self.audience {
            Some(a) => a.trim().trim_end_matches('/').to_string(),
            None => origin_of(&self.endpoint),
        };
        format!("{audience}/.default")
    }
}

/// Parses an endpoint setting; a trailing slash and surrounding spaces are fine.
pub fn parse_endpoint(setting: &'static str, value: &str) -> Result<Url, ArmConfigError> {
    let bad = || ArmConfigError::InvalidEndpoint {
        setting,
        value: value.to_string(),
    };
    let url = Url::parse(value.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad());
    }
    Ok(url)
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The VM instance view (statuses such as `PowerState/running`), as `$expand=instanceView` or
/// the `/instanceView` call return it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmInstanceView {
    #[serde(default)]
    pub statuses: Vec<InstanceViewStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
}

impl VmInstanceView {
    /// `running`, `deallocated`, ... from the `PowerState/...` status.
    pub fn power_state(&self) -> Option<&str> {
        self.statuses
            .iter()
            .filter_map(|s| s.code.as_deref())
            .find_map(|c| c.strip_prefix("PowerState/"))
    }
}

/// One raw ARM response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl RawResponse {
    fn json<T: DeserializeOwned>(&self, op: ArmOperation) -> Result<T, ArmError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            http::local_error(
                op.label(),
                "InvalidResponse",
                format!("HTTP {} body is not the expected JSON: {e}", self.status),
            )
        })
    }
    fn lro_handle(&self) -> LroHandle {
        LroHandle {
            async_operation: http::header_str(&self.headers, "azure-asyncoperation")
                .map(str::to_string),
            location: http::header_str(&self.headers, "location").map(str::to_string),
            retry_after: http::retry_after_from(&self.headers),
        }
    }
}

/// The reqwest ARM client. Cheap to clone (everything shared behind `Arc`).
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Url,
    scope: String,
    credential: Arc<dyn TokenCredential>,
    retry: RetryConfig,
    loopback_only: bool,
    recorder: Option<TrafficRecorder>,
    rate_limits: Mutex<Budgets>,
}

/// What ARM's responses said about its budgets: per subscription (ARM's buckets are), and the
/// last response's whatever its subscription.
#[derive(Default)]
struct Budgets {
    last: RateLimits,
    /// By lowercase subscription id.
    by_subscription: std::collections::HashMap<String, RateLimits>,
}

/// The subscription a request URL addresses (`/subscriptions/{id}/...`), lowercase.
fn subscription_of(url: &Url) -> Option<String> {
    let mut segments = url.path_segments()?;
    while let Some(s) = segments.next() {
        if s.eq_ignore_ascii_case("subscriptions") {
            return segments
                .next()
                .filter(|id| !id.is_empty())
                .map(str::to_ascii_lowercase);
        }
    }
    None
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("scope", &self.inner.scope)
            .field("loopback_only", &self.inner.loopback_only)
            .finish_non_exhaustive()
    }
}

impl ArmClient {
    pub fn new(config: ArmClientConfig) -> Result<Self, ArmConfigError> {
        if config.loopback_only && !http::is_loopback(&config.endpoint) {
            return Err(ArmConfigError::NotLoopback(config.endpoint.to_string()));
        }
        let recorder = match &config.record_traffic {
            Some(dir) => Some(TrafficRecorder::new(dir.clone()).map_err(|source| {
                ArmConfigError::RecordFolder {
                    path: dir.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let http = http::client_builder()
            .connect_timeout(config.timeouts.connect)
            .timeout(config.timeouts.request)
            // Never follow redirects: they would carry our bearer token to another URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vmrp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ArmConfigError::Http(http::error_chain(&e)))?;
        let scope = config.scope();
        let mut endpoint = config.endpoint;
        // Trailing-slash tolerant: resource ids start with '/', so keep the base path without one.
        let trimmed = endpoint.path().trim_end_matches('/').to_string();
        endpoint.set_path(&trimmed);
        endpoint.set_query(None);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint,
                scope,
                credential: config.credential,
                retry: config.retry,
                loopback_only: config.loopback_only,
                recorder,
                rate_limits: Mutex::new(Budgets::default()),
            }),
        })
    }

    /// The OAuth scope tokens are requested for.
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// `{endpoint}{path}?api-version=...[&extra]`.
    fn url_for(&self, path: &str, api_version: &str, extra: &[(&str, &str)]) -> Url {
        let mut url = self.inner.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        // Written by hand: form encoding would turn `$expand` into `%24expand`, which ARM
        // accepts but which reads badly in logs and recorded traffic.
        let mut query = format!("api-version={}", urlencoding::encode(api_version));
        for (k, v) in extra {
            query.push_str(&format!("&{k}={}", urlencoding::encode(v)));
        }
        url.set_query(Some(&query));
        url
    }

    /// Refuses URLs we must not send a token to: non-loopback in loopback mode, and anything
    /// outside the endpoint's origin (a `nextLink` or operation URL pointing elsewhere).
    fn check_url(&self, op: ArmOperation, url: &Url) -> Result<(), ArmError> {
        if self.inner.loopback_only && !http::is_loopback(url) {
            return Err(http::local_error(
                op.label(),
                "HostRefused",
                format!(
                    "{} is not a loopback address (loopback_only is set)",
                    redact_query(url)
                ),
            ));
        }
        if !http::same_origin(url, &self.inner.endpoint) {
            return Err(http::local_error(
                op.label(),
                "HostRefused",
                format!(
                    "{} is outside the ARM endpoint {}; refusing to send a token there",
                    redact_query(url),
                    origin_of(&self.inner.endpoint)
                ),
            ));
        }
        Ok(())
    }

    /// Sends one request with bounded retries for transient failures (ARM PUT and DELETE are
    /// idempotent, so every operation here may be retried). Non-2xx answers come back as
    /// [`ArmError`]; 2xx as [`RawResponse`].
    pub async fn send(
        &self,
        op: ArmOperation,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ArmError> {
        self.check_url(op, &url)?;
        let retry = self.inner.retry;
        let mut attempt = 1;
        loop {
            let result = self.send_once(op, &url, body.as_deref()).await;
            match result {
                Ok(rsp) => return Ok(rsp),
                Err(e) if e.is_transient() && attempt < retry.max_attempts.max(1) => {
                    let Some(delay) =
                        retry.delay_before_retry(attempt, e.retry_after, rand::random::<f64>())
                    else {
                        // ARM asked for longer than a call sleeps: the handler puts its
                        // message back for then.
                        return Err(e);
                    };
                    tracing::warn!(
                        operation = op.label(),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "transient ARM failure, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(
        &self,
        op: ArmOperation,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ArmError> {
        let token = self
            .inner
            .credential
            .get_token(&[self.inner.scope.as_str()], None)
            .await
            .map_err(|e| {
                let transient = matches!(
                    e.kind(),
                    azure_core::error::ErrorKind::Io
                        | azure_core::error::ErrorKind::HttpResponse { .. }
                );
                http::local_error(
                    op.label(),
                    if transient {
                        "TokenUnavailable"
                    } else {
                        "CredentialUnavailable"
                    },
                    format!(
                        "getting a token for {}: {}",
                        self.inner.scope,
                        http::error_chain(&e)
                    ),
                )
            })?;
        let mut req = self
            .inner
            .http
            .request(op.method(), url.clone())
            .bearer_auth(token.token.secret())
            .header("accept", "application/json")
            // A v4 UUID from the thread-local RNG: `Uuid::new_v4` asks the kernel every time.
            .header(
                "x-ms-client-request-id",
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string(),
            );
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        let mut rsp = req
            .send()
            .await
            .map_err(|e| http::transport_error(op.label(), &e))?;
        let status = rsp.status().as_u16();
        // Taken, not cloned: the body no longer needs them (decoding was set up on arrival).
        let headers = std::mem::take(rsp.headers_mut());
        let bytes = rsp
            .bytes()
            .await
            .map_err(|e| http::transport_error(op.label(), &e))?;
        if let Ok(mut budgets) = self.inner.rate_limits.lock() {
            http::update_rate_limits(&mut budgets.last, &headers);
            if let Some(sub) = subscription_of(url) {
                let limits = budgets.by_subscription.entry(sub).or_default();
                http::update_rate_limits(limits, &headers);
            }
        }
        if let Some(rec) = &self.inner.recorder {
            rec.record(&Exchange {
                label: op.label(),
                method: op.method().as_str(),
                url,
                request_body: body,
                status,
                response_headers: &headers,
                response_body: &bytes,
            });
        }
        if (200..300).contains(&status) {
            Ok(RawResponse {
                status,
                headers,
                body: bytes,
            })
        } else {
            let e = http::arm_error_from_response(op.label(), status, &headers, &bytes);
            tracing::debug!(operation = op.label(), status, code = %e.code, "ARM error");
            Err(e)
        }
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        op: ArmOperation,
        url: Url,
    ) -> Result<Option<T>, ArmError> {
        match self.send(op, url, None).await {
            Ok(rsp) => rsp.json(op).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GETs `first` and every `nextLink` after it. Next links are absolute and followed as given,
    /// but only within the endpoint's origin.
    async fn list_all<T: DeserializeOwned>(
        &self,
        op: ArmOperation,
        first: Url,
    ) -> Result<Vec<T>, ArmError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            if !seen.insert(url.to_string()) || seen.len() > MAX_PAGES {
                return Err(http::local_error(
                    op.label(),
                    "InvalidResponse",
                    format!(
                        "paging did not end (repeated nextLink or more than {MAX_PAGES} pages)"
                    ),
                ));
            }
            // The pause reads the bucket of the subscription being listed, not another's.
            let subscription = subscription_of(&url);
            let page: Page<T> = self.send(op, url, None).await?.json(op)?;
            out.extend(page.value);
            if page.next_link.is_some()
                && subscription
                    .map_or_else(|| self.rate_limits(), |sub| self.rate_limits_for(&sub))
                    .remaining_reads
                    .is_some_and(|left| left < LISTING_READ_FLOOR)
            {
                tokio::time::sleep(LISTING_PAUSE).await;
            }
            if let Some(link) = page.next_link.filter(|l| !l.trim().is_empty()) {
                let url = Url::parse(&link).map_err(|_| {
                    http::local_error(
                        op.label(),
                        "InvalidResponse",
                        format!("nextLink is not an absolute URL: {link:?}"),
                    )
                })?;
                next = Some(url);
            }
        }
        Ok(out)
    }

    fn expect_type(op: ArmOperation, id: &ResourceId, kind: &str) -> Result<(), ArmError> {
        if id.is_type(kind) {
            Ok(())
        } else {
            Err(http::local_error(
                op.label(),
                "InvalidRequest",
                format!("resource id {id} is not a {kind}"),
            ))
        }
    }

    /// vmrp never writes to or deletes in Azure Backup's resource groups and collections
    /// ([`ResourceId::is_azure_backup`]): refused here, before any request, whatever a caller
    /// decided (a retention bug, a hand-made message), so Backup's instant restore stays intact.
    fn not_azure_backup(op: ArmOperation, id: &ResourceId) -> Result<(), ArmError> {
        if id.is_azure_backup() {
            return Err(http::local_error(
                op.label(),
                "InvalidRequest",
                format!("{id} belongs to Azure Backup; vmrp does not write to or delete in Azure Backup's resource groups and collections"),
            ));
        }
        Ok(())
    }

    fn body_of<T: serde::Serialize>(op: ArmOperation, body: &T) -> Result<Vec<u8>, ArmError> {
        serde_json::to_vec(body)
            .map_err(|e| http::local_error(op.label(), "InvalidRequest", e.to_string()))
    }

    /// GET a VM with `$expand=instanceView`: the VM and its instance view.
    pub async fn get_vm_with_instance_view(
        &self,
        id: &ResourceId,
    ) -> Result<Option<(VirtualMachine, VmInstanceView)>, ArmError> {
        let op = ArmOperation::GetVm;
        Self::expect_type(op, id, "Microsoft.Compute/virtualMachines")?;
        let url = self.url_for(id.as_str(), API_VERSION, &[("$expand", "instanceView")]);
        let Some(raw) = self.get_optional::<serde_json::Value>(op, url).await? else {
            return Ok(None);
        };
        let view = raw
            .pointer("/properties/instanceView")
            .cloned()
            .map(serde_json::from_value::<VmInstanceView>)
            .transpose()
            .map_err(|e| http::local_error(op.label(), "InvalidResponse", e.to_string()))?
            .unwrap_or_default();
        let vm = serde_json::from_value(raw)
            .map_err(|e| http::local_error(op.label(), "InvalidResponse", e.to_string()))?;
        Ok(Some((vm, view)))
    }

    /// All VMs of a subscription in one region (`.../locations/{location}/virtualMachines`).
    pub async fn list_vms_in_location(
        &self,
        subscription: &str,
        location: &str,
    ) -> Result<Vec<VirtualMachine>, ArmError> {
        let op = ArmOperation::ListVms;
        check_segment(op, "subscription", subscription)?;
        check_segment(op, "location", location)?;
        let url = self.url_for(
            &format!(
                "/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}/virtualMachines"
            ),
            API_VERSION,
            &[],
        );
        self.list_all(op, url).await
    }

    /// PATCH a collection (only tags can change on an existing one).
    pub async fn update_collection(
        &self,
        id: &ResourceId,
        patch: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        let op = ArmOperation::PatchCollection;
        Self::expect_type(op, id, "Microsoft.Compute/restorePointCollections")?;
        let url = self.url_for(id.as_str(), API_VERSION, &[]);
        self.send(op, url, Some(Self::body_of(op, patch)?))
            .await?
            .json(op)
    }

    async fn delete(&self, op: ArmOperation, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let url = self.url_for(id.as_str(), API_VERSION, &[]);
        match self.send(op, url, None).await {
            Ok(rsp) => Ok(Accepted {
                status: rsp.status,
                body: None,
                lro: rsp.lro_handle(),
            }),
            // Already gone: deleting is done.
            Err(e) if e.is_not_found() => Ok(Accepted {
                status: 404,
                body: None,
                lro: LroHandle::default(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The operation-status URL `handle` points to, checked like any other URL.
    pub(crate) async fn poll(&self, url: &str) -> Result<RawResponse, ArmError> {
        let op = ArmOperation::PollOperation;
        let url = Url::parse(url).map_err(|_| {
            http::local_error(
                op.label(),
                "InvalidResponse",
                format!("operation URL is not an absolute URL: {url:?}"),
            )
        })?;
        self.send(op, url, None).await
    }
}

/// A path segment we put into a URL ourselves must be a plain name.
fn check_segment(op: ArmOperation, what: &str, value: &str) -> Result<(), ArmError> {
    if value.is_empty() || value.contains(['/', '?', '#']) || value.trim() != value {
        return Err(http::local_error(
            op.label(),
            "InvalidRequest",
            format!("{what} {value:?} must be a non-empty name without '/', '?', '#' or spaces"),
        ));
    }
    Ok(())
}

/// URLs in error messages lose their query (operation URLs may carry signatures).
fn redact_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// `/subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Compute/{kind}` for a list.
fn scope_path(op: ArmOperation, scope: &VmScope, kind: &str) -> Result<String, ArmError> {
    Ok(match scope {
        VmScope::Subscription(sub) => {
            check_segment(op, "subscription", sub)?;
            format!("/subscriptions/{sub}/providers/Microsoft.Compute/{kind}")
        }
        VmScope::ResourceGroup {
            subscription,
            resource_group,
        } => {
            check_segment(op, "subscription", subscription)?;
            check_segment(op, "resource group", resource_group)?;
            format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/{kind}"
            )
        }
    })
}

/// The operator's restore (`vmrp restore`): raw JSON documents, since a restore copies fields
/// (security profile, hardware profile) the typed models do not carry.
impl ArmClient {
    /// GET any resource as JSON (`None` when it does not exist). `op` names the read's action.
    pub async fn get_json(
        &self,
        op: ArmOperation,
        id: &ResourceId,
        api_version: &str,
    ) -> Result<Option<serde_json::Value>, ArmError> {
        self.get_optional(op, self.url_for(id.as_str(), api_version, &[]))
            .await
    }

    /// PUT a document, waits for its operation when ARM answers 201/202 with one, and returns
    /// the resource as ARM then holds it.
    pub async fn put_json(
        &self,
        op: ArmOperation,
        id: &ResourceId,
        api_version: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ArmError> {
        let url = self.url_for(id.as_str(), api_version, &[]);
        let rsp = self.send(op, url, Some(Self::body_of(op, body)?)).await?;
        let handle = rsp.lro_handle();
        if handle.async_operation.is_some() || (rsp.status == 202 && handle.location.is_some()) {
            Self::finished(op, self.wait_for(&handle).await?)?;
            let read = self.url_for(id.as_str(), api_version, &[]);
            let get = if id.is_type("Microsoft.Compute/disks") {
                ArmOperation::GetDisk
            } else {
                ArmOperation::GetVm
            };
            return self.send(get, read, None).await?.json(get);
        }
        if rsp.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        rsp.json(op)
    }

    /// POST `{id}/{action}` (deallocate, start) and waits for its operation.
    pub async fn post_action(
        &self,
        op: ArmOperation,
        id: &ResourceId,
        action: &str,
    ) -> Result<(), ArmError> {
        check_segment(op, "action", action)?;
        let url = self.url_for(&format!("{}/{action}", id.as_str()), API_VERSION, &[]);
        let rsp = self.send(op, url, None).await?;
        Self::finished(op, self.wait_for(&rsp.lro_handle()).await?)
    }

    /// A failed or canceled operation as the error of `op`.
    fn finished(op: ArmOperation, outcome: super::lro::LroOutcome) -> Result<(), ArmError> {
        use super::lro::LroOutcome as O;
        match outcome {
            O::Succeeded => Ok(()),
            O::Failed(e) | O::Canceled(e) => {
                let e = e.unwrap_or_default();
                Err(http::local_error(
                    op.label(),
                    e.code.as_deref().unwrap_or("OperationFailed"),
                    e.message.unwrap_or_else(|| "the operation failed".into()),
                ))
            }
        }
    }

    /// DELETE a disk and waits for it (a disk already gone counts as deleted).
    pub async fn delete_disk(&self, id: &ResourceId) -> Result<(), ArmError> {
        let op = ArmOperation::DeleteDisk;
        Self::expect_type(op, id, "Microsoft.Compute/disks")?;
        let url = self.url_for(id.as_str(), DISKS_API_VERSION, &[]);
        match self.send(op, url, None).await {
            Ok(rsp) => Self::finished(op, self.wait_for(&rsp.lro_handle()).await?),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
