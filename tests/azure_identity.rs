//! Credentials end to end. azure_identity reads `IDENTITY_ENDPOINT` from the process environment
//! at construction, and env is process-global, so each managed-identity scenario re-executes this
//! test binary as a child with its own environment (`VMRP_TEST_CHILD` selects the scenario; the
//! child tests return at once without it). The parent runs the loopback token server, the ARM
//! and Service Bus fakes, and checks what they received.

mod azure_support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use azure_support::{Canned, Fake, SUB};
use serde_json::{json, Value};
use vmrp::azure::client::{ArmClient, ArmClientConfig};
use vmrp::azure::credential::{
    credential_from_env, CredentialChoice, CredentialError, CredentialOptions,
};
use vmrp::azure::servicebus::{scheduler_from_env, ServiceBusOptions};
use vmrp::azure::{Arm, OutgoingMessage, Queue, ResourceId};

// ---------------------------------------------------------------------------------------------
// The loopback App Service token endpoint (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct TokenRequest {
    query: std::collections::HashMap<String, String>,
    identity_header: Option<String>,
    metadata: Option<String>,
}

#[derive(Clone)]
struct TokenServer {
    base: String,
    seen: Arc<Mutex<Vec<TokenRequest>>>,
}

async fn token_endpoint(
    State((seen, lifetime)): State<(Arc<Mutex<Vec<TokenRequest>>>, u64)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Json<Value> {
    let n = {
        let mut s = seen.lock().unwrap();
        s.push(TokenRequest {
            query: query.clone(),
            identity_header: headers
                .get("x-identity-header")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            metadata: headers
                .get("metadata")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        s.len()
    };
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + lifetime;
    // All four fields required; expires_on a string of Unix seconds.
    Json(json!({
        "access_token": format!("tok-{n}"),
        "expires_on": expires.to_string(),
        "resource": query.get("resource").cloned().unwrap_or_default(),
        "token_type": "Bearer",
    }))
}

impl TokenServer {
    async fn start(lifetime_secs: u64) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/msi/token", axum::routing::get(token_endpoint))
            .with_state((seen.clone(), lifetime_secs));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://{addr}"),
            seen,
        }
    }
    fn requests(&self) -> Vec<TokenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// Runs `scenario` in a child process with exactly the identity variables given (others removed).
async fn run_child(scenario: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([scenario, "--exact", "--nocapture", "--test-threads=1"]);
    for k in [
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "VMRP_ARM_ENDPOINT",
        "VMRP_ARM_AUDIENCE",
        "VMRP_SERVICEBUS_ENDPOINT",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("VMRP_TEST_CHILD", scenario);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    if !out.status.success() {
        panic!(
            "child {scenario} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn is_child(scenario: &str) -> bool {
    std::env::var("VMRP_TEST_CHILD").as_deref() == Ok(scenario)
}

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn test_options() -> CredentialOptions {
    CredentialOptions {
        loopback_only: true,
        retry: Some(azure_core::http::RetryOptions::none()),
        ..Default::default()
    }
}

fn vm_path() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
    )
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

/// Builds the credential from the real process env, then makes two ARM calls and one Service
/// Bus send with it.
#[tokio::test]
async fn child_managed_identity_arm_and_servicebus() {
    if !is_child("child_managed_identity_arm_and_servicebus") {
        return;
    }
    let (cred, choice) = credential_from_env(&process_env, &test_options()).unwrap();
    assert!(
        matches!(choice, CredentialChoice::ManagedIdentity { .. }),
        "{choice}"
    );
    println!("choice: {choice}");
    let mut cfg = ArmClientConfig::from_env(&process_env, cred.clone()).unwrap();
    cfg.loopback_only = true;
    let arm = ArmClient::new(cfg).unwrap();
    let vm = ResourceId::parse(&vm_path()).unwrap();
    arm.get_vm(&vm).await.unwrap().unwrap();
    arm.get_vm(&vm).await.unwrap().unwrap();

    let sb = scheduler_from_env(
        &process_env,
        Some(cred),
        ServiceBusOptions {
            loopback_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    sb.send(OutgoingMessage {
        queue: Queue::Create,
        message_id: "create-1".into(),
        body: "{}".into(),
        not_before: None,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn child_identity_endpoint_without_header() {
    if !is_child("child_identity_endpoint_without_header") {
        return;
    }
    let err = credential_from_env(&process_env, &test_options()).unwrap_err();
    assert!(
        matches!(err, CredentialError::IdentityHeaderMissing),
        "{err}"
    );
    println!("error: {err}");
}

// ---------------------------------------------------------------------------------------------
// Parents
// ---------------------------------------------------------------------------------------------

async fn managed_identity_scenario(
    token_lifetime_secs: u64,
    client_id: Option<&str>,
) -> (TokenServer, Fake, Fake) {
    let tokens = TokenServer::start(token_lifetime_secs).await;
    let arm = Fake::start().await;
    arm.on(
        "GET",
        &vm_path(),
        vec![Canned::json(
            200,
            &json!({"id": vm_path(), "location": "westus"}),
        )],
    );
    let bus = Fake::start().await;
    bus.on("POST", "/rp-create/messages", vec![Canned::empty(201)]);
    let mut env = vec![
        ("IDENTITY_ENDPOINT", format!("{}/msi/token", tokens.base)),
        ("IDENTITY_HEADER", "header-secret-123".to_string()),
        ("VMRP_ARM_ENDPOINT", arm.base.clone()),
        (
            "VMRP_ARM_AUDIENCE",
            "https://management.azure.com".to_string(),
        ),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "ns1.servicebus.windows.net".to_string(),
        ),
        ("VMRP_SERVICEBUS_ENDPOINT", bus.base.clone()),
    ];
    if let Some(id) = client_id {
        env.push(("AZURE_CLIENT_ID", id.to_string()));
        env.push(("ServiceBusConnection__clientId", format!("{id}-sb")));
    }
    let out = run_child("child_managed_identity_arm_and_servicebus", &env).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("managed identity"), "{stdout}");
    assert!(
        !stdout.contains("header-secret-123") && !stdout.contains("tok-1"),
        "secrets must not be printed"
    );
    (tokens, arm, bus)
}

#[tokio::test]
async fn managed_identity_end_to_end_with_cached_token() {
    let (tokens, arm, bus) = managed_identity_scenario(3600, None).await;
    let reqs = tokens.requests();
    // One ARM token (cached for the second call) + one Service Bus token.
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    let arm_req = &reqs[0];
    assert_eq!(
        arm_req.query.get("api-version").map(String::as_str),
        Some("2019-08-01")
    );
    assert_eq!(
        arm_req.query.get("resource").map(String::as_str),
        Some("https://management.azure.com")
    );
    assert_eq!(arm_req.query.get("client_id"), None, "system-assigned");
    assert_eq!(
        arm_req.identity_header.as_deref(),
        Some("header-secret-123")
    );
    assert_eq!(arm_req.metadata.as_deref(), Some("true"));
    assert_eq!(
        reqs[1].query.get("resource").map(String::as_str),
        Some("https://servicebus.azure.net")
    );
    let arm_seen = arm.seen();
    assert_eq!(arm_seen.len(), 2);
    assert!(arm_seen
        .iter()
        .all(|s| s.header("authorization") == Some("Bearer tok-1")));
    let bus_seen = bus.seen();
    assert_eq!(bus_seen.len(), 1);
    assert_eq!(bus_seen[0].header("authorization"), Some("Bearer tok-2"));
    assert_eq!(
        bus_seen[0].header("brokerproperties"),
        Some(r#"{"MessageId":"create-1"}"#)
    );
}

#[tokio::test]
async fn managed_identity_short_lived_tokens_are_refetched() {
    // Tokens living under 5 minutes are treated as expiring: every call fetches a new one.
    let (tokens, arm, _bus) = managed_identity_scenario(120, Some("user-assigned-client-1")).await;
    let arm_token_reqs: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|r| {
            r.query.get("resource").map(String::as_str) == Some("https://management.azure.com")
        })
        .collect();
    assert_eq!(arm_token_reqs.len(), 2);
    assert!(arm_token_reqs
        .iter()
        .all(|r| r.query.get("client_id").map(String::as_str) == Some("user-assigned-client-1")));
    let auth: Vec<_> = arm
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auth.len(), 2);
    assert_ne!(auth[0], auth[1], "second call used a fresh token");
    // The Service Bus connection's own __clientId picks its identity.
    let sb_token_reqs: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|r| {
            r.query.get("resource").map(String::as_str) == Some("https://servicebus.azure.net")
        })
        .collect();
    assert_eq!(sb_token_reqs.len(), 1);
    assert_eq!(
        sb_token_reqs[0].query.get("client_id").map(String::as_str),
        Some("user-assigned-client-1-sb")
    );
}

#[tokio::test]
async fn identity_endpoint_without_identity_header_fails_clearly() {
    // In a child with the real process env...
    let out = run_child(
        "child_identity_endpoint_without_header",
        &[(
            "IDENTITY_ENDPOINT",
            "http://127.0.0.1:9/msi/token".to_string(),
        )],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("IDENTITY_HEADER"), "{stdout}");
    // ...and with an injected env, the same refusal, even for the CLI.
    let env = |k: &str| (k == "IDENTITY_ENDPOINT").then(|| "http://127.0.0.1:9/x".to_string());
    let cli = CredentialOptions {
        allow_developer_tools: true,
        ..Default::default()
    };
    let err = credential_from_env(&env, &cli).unwrap_err();
    assert!(err.to_string().contains("Refusing to fall back"), "{err}");
}

#[tokio::test]
async fn loopback_only_never_picks_developer_tools() {
    let env = |_: &str| None;
    let err = credential_from_env(&env, &test_options()).unwrap_err();
    assert!(
        matches!(err, CredentialError::NothingConfigured(_)),
        "{err}"
    );
}

/// A transport that must never be reached: the guard refuses first. Should the guard ever let
/// the request through, this fails the test instead of sending anything to IMDS.
#[derive(Debug)]
struct Unreachable;

#[async_trait::async_trait]
impl azure_core::http::HttpClient for Unreachable {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        panic!("the guard let {} through", request.url());
    }
}

#[tokio::test]
async fn guard_transport_refuses_imds_before_io() {
    let guard = vmrp::azure::credential::HostGuard {
        inner: std::sync::Arc::new(Unreachable),
        policy: vmrp::azure::credential::GuardPolicy::NoImds,
    };
    let req = azure_core::http::Request::new(
        url::Url::parse("http://169.254.169.254/metadata/identity/oauth2/token?resource=x")
            .unwrap(),
        azure_core::http::Method::Get,
    );
    let started = std::time::Instant::now();
    let err = azure_core::http::HttpClient::execute_request(&guard, &req)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "no network attempt"
    );
}
