//! HTTP plumbing shared by the ARM client and the Service Bus scheduler: one TLS setup for every
//! client in the process ([`client_builder`]), host guards, timeouts, retry timing
//! (`Retry-After`, backoff with jitter), CloudError parsing, ARM rate-limit headers, and the
//! optional traffic recorder writing oav's `validate-traffic` format.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use reqwest::header::HeaderMap;
use url::Url;

use super::error::ArmError;
use super::models::CloudError;
use super::RateLimits;

/// Connect and whole-request timeouts for one HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// A `reqwest::ClientBuilder` with the process's shared TLS settings: what reqwest builds by
/// default (rustls, TLS 1.2 and 1.3, the platform verifier with the system's root certificates,
/// ALPN h2 then http/1.1), except that the roots are read once per process, on the first TLS
/// handshake, instead of once per client at start-up. Reading them costs a few milliseconds
/// per client (every file in /etc/ssl/certs), which was most of the handler's cold start, and
/// none of it is needed when every endpoint is plain http (the emulator). Certificates are
/// verified exactly as before; with no usable roots every HTTPS handshake fails.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(shared_tls_config().clone())
}

fn shared_tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        // A process default if one was installed, else rustls's ring provider: the deploy
        // binary links no other (the workspace's reqwest has `rustls-no-provider`; aws-lc-rs
        // was ~2.3 MiB of the binary, ring is 0.3, docs/bench.md). TLS 1.2 and 1.3 with ECDHE
        // and AES-GCM or ChaCha20, what Azure's endpoints offer.
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            // Invariant: rustls's built-in providers support every version in ALL_VERSIONS.
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("the default provider supports TLS 1.2 and 1.3")
            .dangerous() // only to plug in the platform verifier, as reqwest does
            .with_custom_certificate_verifier(Arc::new(LazyPlatformVerifier {
                provider,
                verifier: OnceLock::new(),
            }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    })
}

/// `rustls_platform_verifier::Verifier` (what reqwest uses), created on first use.
#[derive(Debug)]
struct LazyPlatformVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyPlatformVerifier {
    fn get(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| rustls_platform_verifier::Verifier::new(self.provider.clone()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyPlatformVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // What the platform verifier answers too (its WebPKI verifier asks the provider), without
        // reading the roots to say it.
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How often and how patiently to retry transient failures. Caps are configurable so tests run
/// in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// First backoff when the server gave no `Retry-After`; doubles per attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one computed backoff.
    pub max_backoff: Duration,
    /// The longest server-sent `Retry-After` we are willing to sleep inside one call. A longer
    /// one is not slept at all: the error (with its `Retry-After`) goes straight to the handler,
    /// which puts its message back for then instead of holding the invocation asleep, and instead
    /// of asking again early (Compute answers a copy over its in-flight limit with a 10-minute
    /// `Retry-After`; asking after 10 s only earns another 429).
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(800),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt + 1` (`attempt` counts from 1): the server's `Retry-After`
    /// when given, else exponential backoff with "full jitter" so that many instances throttled
    /// together do not retry in lockstep. `unit_random` is in `[0, 1)`. `None`: the server asked
    /// for longer than [`RetryConfig::max_retry_after`], so the call should not retry but hand
    /// the error (and its `Retry-After`) back.
    pub fn delay_before_retry(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> Option<Duration> {
        if let Some(ra) = retry_after {
            return (ra <= self.max_retry_after).then_some(ra);
        }
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let ceiling = exp.min(self.max_backoff);
        // Half fixed, half random: never zero, still spread out.
        Some(ceiling.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0)))
    }
}

/// True when `url` points at this machine (127.0.0.0/8, ::1 or `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Same scheme, host and port: the only URLs we send our bearer token to.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 1123, `GMT`).
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = at - now;
    Some(if delta.is_negative() {
        Duration::ZERO
    } else {
        delta.unsigned_abs()
    })
}

/// An HTTP-date (IMF-fixdate, RFC 9110 §5.6.7) of `at`'s whole second in UTC, e.g.
/// `Wed, 25 Nov 2026 03:04:05 GMT`.
pub fn http_date(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap_or_default()
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn retry_after_from(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, "retry-after")
        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()))
}

/// Updates `limits` with whatever `x-ms-ratelimit-remaining-subscription-*` headers the response
/// carried; a header that is absent keeps the previous reading.
pub fn update_rate_limits(limits: &mut RateLimits, headers: &HeaderMap) {
    let read = |name: &str| header_str(headers, name).and_then(|v| v.trim().parse::<u32>().ok());
    // HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`) is RFC 2822 with the obsolete zone `GMT`.
    let date = header_str(headers, "date").and_then(|v| {
        time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc2822).ok()
    });
    // Each reading with the date of the response that carried it (`RateLimits::reads_at`).
    if let Some(v) = read("x-ms-ratelimit-remaining-subscription-reads") {
        (limits.remaining_reads, limits.reads_at) = (Some(v), date);
    }
    if let Some(v) = read("x-ms-ratelimit-remaining-subscription-writes") {
        (limits.remaining_writes, limits.writes_at) = (Some(v), date);
    }
    if let Some(v) = read("x-ms-ratelimit-remaining-subscription-deletes") {
        (limits.remaining_deletes, limits.deletes_at) = (Some(v), date);
    }
    if date.is_some() {
        limits.date = date;
    }
}

/// Turns a non-success ARM response into an [`ArmError`], reading CloudError when the body is one.
pub fn arm_error_from_response(
    operation: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> ArmError {
    let cloud = serde_json::from_slice::<CloudError>(body)
        .ok()
        .and_then(|c| c.error);
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error");
    let code = cloud
        .as_ref()
        .and_then(|e| e.code.clone())
        .unwrap_or_else(|| reason.replace(' ', ""));
    let message = cloud
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                reason.to_string()
            } else {
                text.chars().take(500).collect()
            }
        });
    ArmError {
        operation: operation.to_string(),
        status: Some(status),
        code,
        message,
        request_id: header_str(headers, "x-ms-request-id").map(str::to_string),
        retry_after: retry_after_from(headers),
    }
}

/// A failure before any response: timeout, connection error, refused host, ...
pub fn local_error(operation: &str, code: &str, message: impl Into<String>) -> ArmError {
    ArmError {
        operation: operation.to_string(),
        status: None,
        code: code.to_string(),
        message: message.into(),
        request_id: None,
        retry_after: None,
    }
}

pub fn transport_error(operation: &str, e: &reqwest::Error) -> ArmError {
    let code = if e.is_timeout() {
        "Timeout"
    } else {
        "Connection"
    };
    // reqwest's Display never includes headers, so no token can leak here.
    local_error(operation, code, error_chain(e))
}

/// `e` and its sources, joined, for messages that say what actually went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Response headers worth keeping in a traffic recording (never credentials).
const RECORDED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "azure-asyncoperation",
    "retry-after",
    "x-ms-request-id",
];

/// Writes each request/response pair as one JSON file in oav's traffic format
/// (`reference/arm/VALIDATING.md`). Authorization headers are never written.
#[derive(Debug)]
pub struct TrafficRecorder {
    dir: PathBuf,
    seq: AtomicU64,
}

/// One exchange, as the recorder needs it.
pub struct Exchange<'a> {
    pub label: &'a str,
    pub method: &'a str,
    pub url: &'a Url,
    pub request_body: Option<&'a [u8]>,
    pub status: u16,
    pub response_headers: &'a HeaderMap,
    pub response_body: &'a [u8],
}

impl TrafficRecorder {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    pub fn record(&self, x: &Exchange<'_>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let json_body = |b: &[u8]| -> Option<serde_json::Value> {
            if b.is_empty() {
                None
            } else {
                serde_json::from_slice(b).ok()
            }
        };
        let mut request = serde_json::json!({
            "url": x.url.as_str(),
            "method": x.method,
            "headers": { "Content-Type": "application/json" },
        });
        if let Some(b) = x.request_body.and_then(json_body) {
            request["body"] = b;
        }
        let mut headers = serde_json::Map::new();
        for name in RECORDED_RESPONSE_HEADERS {
            if let Some(v) = header_str(x.response_headers, name) {
                headers.insert((*name).to_string(), v.into());
            }
        }
        let mut response = serde_json::json!({
            "statusCode": x.status.to_string(),
            "headers": headers,
        });
        if let Some(b) = json_body(x.response_body) {
            response["body"] = b;
        }
        let pair = serde_json::json!({ "liveRequest": request, "liveResponse": response });
        let slug: String = x
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        // Several clients may record into one folder: a random suffix keeps names apart.
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let path = self
            .dir
            .join(format!("{n:05}-{slug}-{}-{unique}.json", x.status));
        let text = serde_json::to_string_pretty(&pair).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!(path = %path.display(), error = %e, "could not record ARM traffic");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` (no public CA issued it).
    const SELF_SIGNED_LOCALHOST: &str = "MIIBlTCCATugAwIBAgIUUOnQfkPeadCyOVZyh5nui+YpOwUwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNTIzNTE0OVoYDzIxMjYxMTAxMjM1MTQ5WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATKRec9gsTpVhSLW6RDJv6eT+4uUy8iBWYxpg23pUfWjKoBAYeqMc3OovmyGFDGyW5f11sVAngnscsBaeFpx9yZo2kwZzAdBgNVHQ4EFgQUyUgCuvmNK/xFImt5fkeXo8e6AoMwHwYDVR0jBBgwFoAUyUgCuvmNK/xFImt5fkeXo8e6AoMwDwYDVR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwIDSAAwRQIhAOieyPvM0CKuBdMKDarSVIgeeZEcMptQYlm9vGYbWs4oAiBSgZrojso6Pr37QTDH3TMzQloxlcu8a8DSgeSXsd5rRw==";

    #[test]
    fn lazy_verifier_reads_no_roots_until_a_certificate_is_checked_and_then_rejects_untrusted_ones()
    {
        use base64::Engine;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let lazy = LazyPlatformVerifier {
            provider: provider.clone(),
            verifier: OnceLock::new(),
        };
        assert_eq!(
            lazy.supported_verify_schemes(),
            provider
                .signature_verification_algorithms
                .supported_schemes()
        );
        assert!(lazy.verifier.get().is_none(), "no roots read yet");

        let der = base64::engine::general_purpose::STANDARD
            .decode(SELF_SIGNED_LOCALHOST)
            .unwrap();
        let result = lazy.verify_server_cert(
            &CertificateDer::from(der),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        );
        // Untrusted issuer, or no roots on this machine at all: refused either way.
        assert!(result.is_err(), "a self-signed certificate must be refused");
        assert!(
            lazy.verifier.get().is_some(),
            "the platform verifier now exists"
        );
    }

    #[test]
    fn shared_tls_config_offers_what_reqwest_would() {
        let config = shared_tls_config();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(config.enable_sni);
        assert!(client_builder().build().is_ok());
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-25 21:30:00 UTC);
        let cases: &[(&str, Option<Duration>)] = &[
            ("7", Some(Duration::from_secs(7))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "Wed, 25 Nov 2026 21:30:15 GMT",
                Some(Duration::from_secs(15)),
            ),
            ("Wed, 25 Nov 2026 21:29:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-3", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_retry_after(input, now), *want, "{input}");
        }
    }

    #[test]
    fn delay_prefers_capped_retry_after_then_jittered_backoff() {
        let cfg = RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(2),
        };
        // (attempt, Retry-After s, unit random, the wait, why)
        type Row = (u32, Option<u64>, f64, Option<Duration>, &'static str);
        let table: &[Row] = &[
            (
                1,
                Some(1),
                0.3,
                Some(Duration::from_secs(1)),
                "Retry-After is slept",
            ),
            (
                1,
                Some(2),
                0.3,
                Some(Duration::from_secs(2)),
                "up to the cap",
            ),
            (
                1,
                Some(90),
                0.3,
                None,
                "a longer Retry-After is handed back, not slept short",
            ),
            (1, None, 0.0, Some(Duration::from_millis(50)), "half fixed"),
            (
                1,
                None,
                1.0,
                Some(Duration::from_millis(100)),
                "half random",
            ),
            (2, None, 1.0, Some(Duration::from_millis(200)), "doubles"),
            (
                4,
                None,
                1.0,
                Some(Duration::from_millis(300)),
                "backoff is capped",
            ),
        ];
        for (attempt, ra, random, want, why) in table {
            let got = cfg.delay_before_retry(*attempt, ra.map(Duration::from_secs), *random);
            assert_eq!(got, *want, "{why}");
        }
    }

    #[test]
    fn a_call_sleeps_at_most_twenty_seconds_on_retry_afters_by_default() {
        // Regression: the default cap was 60 s, so three 429s with `Retry-After: 60` held one
        // invocation (and its message lock) for two minutes; later the cap was 10 s but a
        // longer `Retry-After` was slept short and asked again early (another 429 each time).
        let cfg = RetryConfig::default();
        let slept = |ra: u64| -> Option<Duration> {
            (1..cfg.max_attempts)
                .map(|a| cfg.delay_before_retry(a, Some(Duration::from_secs(ra)), 0.5))
                .sum()
        };
        assert_eq!(slept(10), Some(Duration::from_secs(20)));
        assert_eq!(slept(11), None, "not slept, not asked again early");
        assert_eq!(slept(600), None);
    }

    #[test]
    fn loopback_and_origin_checks() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(is_loopback(&u("http://127.0.0.1:8080/x")));
        assert!(is_loopback(&u("http://[::1]:1/")));
        assert!(is_loopback(&u("http://LOCALHOST/")));
        assert!(!is_loopback(&u("http://169.254.169.254/metadata")));
        assert!(!is_loopback(&u("https://management.azure.com/")));
        assert!(same_origin(
            &u("https://Management.Azure.com/a"),
            &u("https://management.azure.com:443/b?c")
        ));
        assert!(!same_origin(
            &u("http://127.0.0.1:1/"),
            &u("http://127.0.0.1:2/")
        ));
        assert!(!same_origin(
            &u("https://management.azure.com/"),
            &u("https://evil.example/")
        ));
    }

    #[test]
    fn rate_limit_headers_update_only_what_is_present() {
        let mut limits = RateLimits {
            remaining_reads: Some(1),
            remaining_writes: Some(2),
            ..RateLimits::default()
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-ms-ratelimit-remaining-subscription-reads",
            "11999".parse().unwrap(),
        );
        h.insert(
            "x-ms-ratelimit-remaining-subscription-deletes",
            "14".parse().unwrap(),
        );
        update_rate_limits(&mut limits, &h);
        assert_eq!(
            limits,
            RateLimits {
                remaining_reads: Some(11999),
                remaining_writes: Some(2),
                remaining_deletes: Some(14),
                ..RateLimits::default()
            }
        );
        // ARM's clock, from the HTTP-date of the response.
        h.insert("date", "Wed, 25 Nov 2026 03:04:05 GMT".parse().unwrap());
        update_rate_limits(&mut limits, &h);
        let t0 = time::macros::datetime!(2026-11-25 03:04:05 UTC);
        assert_eq!(limits.date, Some(t0));
        assert_eq!((limits.reads_at, limits.deletes_at), (Some(t0), Some(t0)));
    }

    /// A reading is dated by the response that carried it. Regression: one `date` for all
    /// buckets, renewed by every response, kept a deletes reading of 0 "fresh" through the GETs
    /// that followed, so pacing never let it refill and held prunes back for good.
    #[test]
    fn a_reading_keeps_the_date_of_its_own_response() {
        let mut limits = RateLimits::default();
        let mut delete = HeaderMap::new();
        delete.insert(
            "x-ms-ratelimit-remaining-subscription-deletes",
            "0".parse().unwrap(),
        );
        delete.insert("date", "Wed, 25 Nov 2026 03:00:00 GMT".parse().unwrap());
        update_rate_limits(&mut limits, &delete);
        let mut get = HeaderMap::new();
        get.insert(
            "x-ms-ratelimit-remaining-subscription-reads",
            "11999".parse().unwrap(),
        );
        get.insert("date", "Wed, 25 Nov 2026 03:10:00 GMT".parse().unwrap());
        update_rate_limits(&mut limits, &get);
        assert_eq!(limits.remaining_deletes, Some(0));
        assert_eq!(
            limits.deletes_at,
            Some(time::macros::datetime!(2026-11-25 03:00:00 UTC)),
            "the deletes reading is ten minutes old, not renewed by the GET"
        );
        assert_eq!(
            limits.reads_at,
            Some(time::macros::datetime!(2026-11-25 03:10:00 UTC))
        );
        assert_eq!(
            limits.date, limits.reads_at,
            "ARM's clock: the last response"
        );
    }

    #[test]
    fn cloud_error_and_plain_bodies_become_arm_errors() {
        let mut h = HeaderMap::new();
        h.insert("x-ms-request-id", "req-1".parse().unwrap());
        h.insert("retry-after", "3".parse().unwrap());
        let e = arm_error_from_response(
            "GET x",
            409,
            &h,
            br#"{"error":{"code":"OperationNotAllowed","message":"busy","details":[]}}"#,
        );
        assert_eq!(e.status, Some(409));
        assert_eq!(e.code, "OperationNotAllowed");
        assert_eq!(e.message, "busy");
        assert_eq!(e.request_id.as_deref(), Some("req-1"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));

        let e = arm_error_from_response("GET x", 502, &HeaderMap::new(), b"upstream broke");
        assert_eq!(e.code, "BadGateway");
        assert_eq!(e.message, "upstream broke");
        assert!(e.is_transient());
    }
}
