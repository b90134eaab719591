//! Choosing the Entra credential from the environment, explaining the choice, and never reaching
//! the IMDS address when that would be wrong: a half-configured App Service identity
//! (`IDENTITY_ENDPOINT` without `IDENTITY_HEADER`) is an error, not a silent IMDS fallback
//! (azure_identity 1.0 would fall through to 169.254.169.254; see its ManagedIdentityCredential in https://github.com/Azure/azure-sdk-for-rust/tree/main/sdk/identity/azure_identity).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Transport,
};
use azure_identity::{
    ClientAssertionCredentialOptions, DeveloperToolsCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

/// The link-local address of the instance metadata service: the guard refuses it, always.
const IMDS_HOST: &str = "169.254.169.254"; // refused by the guard transport, never contacted

/// How to pick and configure a credential. IMDS is never chosen and its address is refused by
/// the guard transport in every mode (vmrp runs on Functions, whose identity endpoint is
/// `IDENTITY_ENDPOINT`), so there is no switch for it.
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    /// Tests and local emulator runs: every credential HTTP request must go to loopback
    /// (enforced by a transport guard before any I/O); developer tools are never used.
    pub loopback_only: bool,
    /// Allow `az` / `azd` as the fallback (the CLI). The Functions app leaves this off.
    pub allow_developer_tools: bool,
    /// Retries of the credential's own HTTP pipeline; `None` = azure_identity's default.
    /// Tests use `Some(RetryOptions::none())` so a broken fake fails fast.
    pub retry: Option<RetryOptions>,
}

/// Which credential was chosen, and why. `Display` is one line for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    /// App Service / Functions managed identity via `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`.
    ManagedIdentity {
        endpoint: String,
        user_assigned_client_id: Option<String>,
    },
    /// Kubernetes workload identity via `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity {
        client_id: String,
        tenant_id: String,
        token_file: PathBuf,
    },
    /// Azure CLI, then Azure Developer CLI.
    DeveloperTools,
}

impl fmt::Display for CredentialChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManagedIdentity {
                endpoint,
                user_assigned_client_id: None,
            } => write!(
                f,
                "managed identity (system-assigned), because IDENTITY_ENDPOINT ({endpoint}) and IDENTITY_HEADER are set"
            ),
            Self::ManagedIdentity {
                endpoint,
                user_assigned_client_id: Some(id),
            } => write!(
                f,
                "managed identity (user-assigned, client id {id} from AZURE_CLIENT_ID), because IDENTITY_ENDPOINT ({endpoint}) and IDENTITY_HEADER are set"
            ),
            Self::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
            } => write!(
                f,
                "workload identity (client {client_id}, tenant {tenant_id}), because AZURE_FEDERATED_TOKEN_FILE ({}) is set",
                token_file.display()
            ),
            Self::DeveloperTools => write!(
                f,
                "developer tools (az, then azd), because no managed or workload identity is configured"
            ),
        }
    }
}

/// Why no credential could be chosen or built.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not: the managed identity is half configured. Set IDENTITY_HEADER (App Service / Functions set both), or unset IDENTITY_ENDPOINT. Refusing to fall back to the instance metadata service.")]
    IdentityHeaderMissing,
    #[error("{0} is set, which selects a managed identity source vmrp does not support (only App Service / Functions IDENTITY_ENDPOINT + IDENTITY_HEADER)")]
    UnsupportedManagedIdentity(&'static str),
    #[error("AZURE_FEDERATED_TOKEN_FILE is set but {0} is not: workload identity needs AZURE_CLIENT_ID and AZURE_TENANT_ID")]
    WorkloadIdentityIncomplete(&'static str),
    #[error("no credential configured: expected IDENTITY_ENDPOINT + IDENTITY_HEADER (managed identity) or AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID + AZURE_TENANT_ID (workload identity){0}")]
    NothingConfigured(&'static str),
    #[error("creating the {what} credential failed: {message}")]
    Build { what: &'static str, message: String },
}

/// Picks the credential from `env` (a lookup such as `|k| std::env::var(k).ok()`): a pure
/// decision, tested with a table.
pub fn choose_credential(
    env: &dyn Fn(&str) -> Option<String>,
    options: &CredentialOptions,
) -> Result<CredentialChoice, CredentialError> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(endpoint) = get("IDENTITY_ENDPOINT") {
        if get("IDENTITY_HEADER").is_none() {
            return Err(CredentialError::IdentityHeaderMissing);
        }
        if get("IDENTITY_SERVER_THUMBPRINT").is_some() {
            return Err(CredentialError::UnsupportedManagedIdentity(
                "IDENTITY_SERVER_THUMBPRINT (Service Fabric)",
            ));
        }
        return Ok(CredentialChoice::ManagedIdentity {
            endpoint,
            user_assigned_client_id: get("AZURE_CLIENT_ID"),
        });
    }
    if get("MSI_ENDPOINT").is_some() {
        return Err(CredentialError::UnsupportedManagedIdentity(
            "MSI_ENDPOINT (Cloud Shell / Azure ML)",
        ));
    }
    if let Some(file) = get("AZURE_FEDERATED_TOKEN_FILE") {
        let client_id = get("AZURE_CLIENT_ID").ok_or(
            CredentialError::WorkloadIdentityIncomplete("AZURE_CLIENT_ID"),
        )?;
        let tenant_id = get("AZURE_TENANT_ID").ok_or(
            CredentialError::WorkloadIdentityIncomplete("AZURE_TENANT_ID"),
        )?;
        return Ok(CredentialChoice::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file: PathBuf::from(file),
        });
    }
    if options.loopback_only {
        return Err(CredentialError::NothingConfigured(
            "; loopback_only forbids developer tools",
        ));
    }
    if options.allow_developer_tools {
        // az/azd run locally and never call IMDS.
        return Ok(CredentialChoice::DeveloperTools);
    }
    Err(CredentialError::NothingConfigured(
        "; developer tools (az/azd) are only used by the CLI",
    ))
}

/// Chooses and builds the credential. Note: azure_identity's `ManagedIdentityCredential` reads
/// `IDENTITY_ENDPOINT` from the *process* environment itself, so `env` must agree with it for
/// that branch (production passes the process env); the guard transport stops IMDS regardless.
pub fn credential_from_env(
    env: &dyn Fn(&str) -> Option<String>,
    options: &CredentialOptions,
) -> Result<(Arc<dyn TokenCredential>, CredentialChoice), CredentialError> {
    let choice = choose_credential(env, options)?;
    let client_options = guarded_client_options(options);
    let build = |what: &'static str| {
        move |e: azure_core::Error| CredentialError::Build {
            what,
            message: e.to_string(),
        }
    };
    let credential: Arc<dyn TokenCredential> = match &choice {
        CredentialChoice::ManagedIdentity {
            user_assigned_client_id,
            ..
        } => app_service_managed_identity(user_assigned_client_id.clone(), client_options)?,
        CredentialChoice::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: Some(client_id.clone()),
            tenant_id: Some(tenant_id.clone()),
            token_file_path: Some(token_file.clone()),
        }))
        .map_err(build("workload identity"))?,
        CredentialChoice::DeveloperTools => {
            DeveloperToolsCredential::new(None).map_err(build("developer tools"))?
        }
    };
    tracing::info!(credential = %choice, "Azure credential chosen");
    Ok((credential, choice))
}

/// azure_core client options with the host guard (loopback-only or no-IMDS) and the retries
/// from `options`.
fn guarded_client_options(options: &CredentialOptions) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(HostGuard {
            inner: identity_http_client(),
            policy: if options.loopback_only {
                GuardPolicy::LoopbackOnly
            } else {
                GuardPolicy::NoImds
            },
        }))),
        retry: options.retry.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The credential's HTTP client: azure_core's default reqwest settings (20 s connect, 60 s read
/// timeouts, no redirects) on the process's shared TLS setup, so building it reads no root
/// certificates ([`super::http::client_builder`]).
fn identity_http_client() -> Arc<dyn HttpClient> {
    match super::http::client_builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => Arc::new(client),
        // Cannot really happen (nothing above can fail); azure_core's own client still works.
        Err(_) => azure_core::http::new_http_client(None),
    }
}

fn app_service_managed_identity(
    client_id: Option<String>,
    client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    // azure_identity decides App Service vs IMDS from the process env at new(); make sure it
    // will take the App Service branch.
    if std::env::var_os("IDENTITY_ENDPOINT").is_none()
        || std::env::var_os("IDENTITY_HEADER").is_none()
    {
        return Err(CredentialError::Build {
            what: "managed identity",
            message: "IDENTITY_ENDPOINT / IDENTITY_HEADER are not both in the process environment, so azure_identity would use IMDS".into(),
        });
    }
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(UserAssignedId::ClientId),
        client_options,
    }))
    .map_err(|e| CredentialError::Build {
        what: "managed identity",
        message: e.to_string(),
    })?;
    Ok(credential)
}

/// A managed identity credential for one user-assigned client id (e.g. the Service Bus
/// connection's `__clientId`), through the same guard. Needs `IDENTITY_ENDPOINT` and
/// `IDENTITY_HEADER` in the process environment.
pub fn managed_identity_for_client(
    client_id: &str,
    options: &CredentialOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let credential =
        app_service_managed_identity(Some(client_id.to_string()), guarded_client_options(options))?;
    tracing::info!(
        client_id,
        "managed identity (user-assigned) chosen for a connection's __clientId"
    );
    Ok(credential)
}

/// What the guard transport allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardPolicy {
    /// Only 127.0.0.0/8, ::1, localhost.
    LoopbackOnly,
    /// Anything but the IMDS address.
    NoImds,
}

impl GuardPolicy {
    pub fn allows(self, url: &url::Url) -> bool {
        match self {
            Self::LoopbackOnly => super::http::is_loopback(url),
            Self::NoImds => url.host_str() != Some(IMDS_HOST),
        }
    }
}

/// An azure_core transport that refuses hosts before any I/O. The error kind
/// is `Other`, which the retry policy does not retry.
#[derive(Debug)]
pub struct HostGuard {
    pub inner: Arc<dyn HttpClient>,
    pub policy: GuardPolicy,
}

#[async_trait::async_trait]
impl HttpClient for HostGuard {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        if !self.policy.allows(request.url()) {
            let mut shown = request.url().clone();
            shown.set_query(None);
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                format!("refusing credential request to {shown} ({:?})", self.policy),
            ));
        }
        self.inner.execute_request(request).await
    }
}

/// A fixed token, for tests and the emulator. Counts how often it was asked.
#[derive(Debug)]
pub struct StaticToken {
    token: String,
    lifetime: Duration,
    calls: AtomicUsize,
}

impl StaticToken {
    pub fn new(token: &str, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            token: token.to_string(),
            lifetime,
            calls: AtomicUsize::new(0),
        })
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(AccessToken::new(
            Secret::new(self.token.clone()),
            time::OffsetDateTime::now_utc() + self.lifetime,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn choice_table() {
        let cli = CredentialOptions {
            allow_developer_tools: true,
            ..Default::default()
        };
        let tests = CredentialOptions {
            loopback_only: true,
            ..Default::default()
        };
        let app = CredentialOptions::default();
        let mi = CredentialChoice::ManagedIdentity {
            endpoint: "http://127.0.0.1:1/msi".into(),
            user_assigned_client_id: None,
        };
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a CredentialOptions,
            Result<CredentialChoice, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
                    ("IDENTITY_HEADER", "h"),
                ],
                &app,
                Ok(mi.clone()),
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
                    ("IDENTITY_HEADER", "h"),
                    ("AZURE_CLIENT_ID", "c1"),
                ],
                &tests,
                Ok(CredentialChoice::ManagedIdentity {
                    endpoint: "http://127.0.0.1:1/msi".into(),
                    user_assigned_client_id: Some("c1".into()),
                }),
            ),
            (
                &[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi")],
                &cli,
                Err("IDENTITY_HEADER is not"),
            ),
            (
                &[("IDENTITY_ENDPOINT", "http://x"), ("IDENTITY_HEADER", "")],
                &cli,
                Err("IDENTITY_HEADER is not"),
            ),
            (&[("MSI_ENDPOINT", "http://x")], &cli, Err("MSI_ENDPOINT")),
            (
                &[
                    ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_TENANT_ID", "t"),
                ],
                &app,
                Ok(CredentialChoice::WorkloadIdentity {
                    client_id: "c".into(),
                    tenant_id: "t".into(),
                    token_file: "/var/run/token".into(),
                }),
            ),
            (
                &[
                    ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
                    ("AZURE_CLIENT_ID", "c"),
                ],
                &app,
                Err("AZURE_TENANT_ID"),
            ),
            (&[], &cli, Ok(CredentialChoice::DeveloperTools)),
            (&[], &app, Err("only used by the CLI")),
            (&[], &tests, Err("loopback_only forbids developer tools")),
        ];
        for (pairs, opts, want) in cases {
            let got = choose_credential(&env_of(pairs), opts);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{pairs:?}"),
                (Err(g), Err(w)) => assert!(g.to_string().contains(w), "{pairs:?}: {g}"),
                (g, w) => panic!("{pairs:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn choice_display_says_why() {
        let c = CredentialChoice::ManagedIdentity {
            endpoint: "http://127.0.0.1:1/msi".into(),
            user_assigned_client_id: Some("abc".into()),
        };
        let s = c.to_string();
        assert!(
            s.contains("user-assigned") && s.contains("abc") && s.contains("IDENTITY_HEADER"),
            "{s}"
        );
        assert!(CredentialChoice::DeveloperTools.to_string().contains("az"));
    }

    #[test]
    fn guard_policy_table() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        // Only parsed and checked against the guard's policy; nothing is sent.
        let imds = u("http://169.254.169.254/metadata/identity/oauth2/token"); // guard refuses
        assert!(!GuardPolicy::LoopbackOnly.allows(&imds));
        assert!(!GuardPolicy::NoImds.allows(&imds));
        assert!(GuardPolicy::NoImds.allows(&u("https://login.microsoftonline.com/t")));
        assert!(!GuardPolicy::LoopbackOnly.allows(&u("https://login.microsoftonline.com/t")));
        assert!(GuardPolicy::LoopbackOnly.allows(&u("http://127.0.0.1:5/msi")));
    }

    #[tokio::test]
    async fn static_token_hands_out_its_token_and_counts() {
        let t = StaticToken::new("abc", Duration::from_secs(60));
        let got = t.get_token(&["s/.default"], None).await.unwrap();
        assert_eq!(got.token.secret(), "abc");
        assert!(got.expires_on > time::OffsetDateTime::now_utc());
        assert_eq!(t.calls(), 1);
        assert!(
            !format!("{got:?}").contains("abc"),
            "token must not appear in Debug"
        );
    }
}
