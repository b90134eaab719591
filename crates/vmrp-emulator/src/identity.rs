//! The App Service managed-identity endpoint (`GET /msi/token`), as `azure_identity`'s
//! `ManagedIdentityCredential` calls it when `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` are set
//! (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference). Tokens are random opaque strings remembered per resource, so the ARM
//! router ([`require_arm_token`]) and Service Bus can check that a caller really got one here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::azure::models::CloudError;

/// The resource ARM tokens are issued for.
pub const ARM_RESOURCE: &str = "https://management.azure.com";
/// The resource Service Bus tokens are issued for.
pub const SERVICE_BUS_RESOURCE: &str = "https://servicebus.azure.net";
/// The only api-version the App Service endpoint speaks (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference).
pub const API_VERSION: &str = "2019-08-01";
/// How long an issued token lives, in real seconds: above the 5 min refresh margin of
/// `azure_identity`'s cache, so a client reuses it.
const TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// The token endpoint and the register of tokens it issued.
pub struct IdentityEndpoint {
    header_secret: String,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    arm_auth_required: AtomicBool,
    issued: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for IdentityEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityEndpoint")
            .field("header_secret", &"<redacted>")
            .field("tokens", &self.tokens.lock().map(|t| t.len()).unwrap_or(0))
            .field("arm_auth_required", &self.arm_auth_required)
            .finish()
    }
}

#[derive(Debug, Clone)]
struct IssuedToken {
    resource: String,
    client_id: Option<String>,
    /// Real unix seconds (clients compare with the wall clock, not the virtual one).
    expires_on: i64,
}

/// The response body `azure_identity` 1.x requires: all four fields, `expires_on` a string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_on: String,
    pub resource: String,
    pub token_type: String,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
}

/// Counters for the state dump.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityCounters {
    pub tokens_issued: u64,
    pub requests_rejected: u64,
    pub arm_auth_required: bool,
}

impl IdentityEndpoint {
    /// An endpoint that requires `X-IDENTITY-HEADER: <header_secret>` on every token request.
    pub fn new(header_secret: impl Into<String>, arm_auth_required: bool) -> Arc<Self> {
        Arc::new(Self {
            header_secret: header_secret.into(),
            tokens: Mutex::new(HashMap::new()),
            arm_auth_required: AtomicBool::new(arm_auth_required),
            issued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The secret clients must send as `X-IDENTITY-HEADER` (`IDENTITY_HEADER` for the handler).
    pub fn header_secret(&self) -> &str {
        &self.header_secret
    }

    /// Whether ARM requests must carry a token from this endpoint.
    pub fn arm_auth_required(&self) -> bool {
        self.arm_auth_required.load(Ordering::Relaxed)
    }

    pub fn set_arm_auth_required(&self, required: bool) {
        self.arm_auth_required.store(required, Ordering::Relaxed);
    }

    /// Every token issued so far (tests check that none of them shows up in a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Issues a token for `resource` (also used in-process by tests).
    pub fn issue(&self, resource: &str, client_id: Option<&str>) -> TokenResponse {
        let token = format!(
            "vmrp-emu.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires_on = OffsetDateTime::now_utc().unix_timestamp() + TOKEN_LIFETIME_SECS;
        let resource = normalize_resource(resource);
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                token.clone(),
                IssuedToken {
                    resource: resource.clone(),
                    client_id: client_id.map(str::to_string),
                    expires_on,
                },
            );
        self.issued.fetch_add(1, Ordering::Relaxed);
        TokenResponse {
            access_token: token,
            expires_on: expires_on.to_string(),
            resource,
            token_type: "Bearer".to_string(),
        }
    }

    /// True when `token` was issued here for `resource` and has not expired (real clock).
    pub fn verify_bearer(&self, token: &str, resource: &str) -> bool {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tokens.get(token) {
            Some(t) => {
                t.resource == normalize_resource(resource)
                    && t.expires_on > OffsetDateTime::now_utc().unix_timestamp()
            }
            None => false,
        }
    }

    /// The client id a token was requested for (user-assigned identities), if any.
    pub fn client_id_of(&self, token: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .and_then(|t| t.client_id.clone())
    }

    pub fn counters(&self) -> IdentityCounters {
        IdentityCounters {
            tokens_issued: self.issued.load(Ordering::Relaxed),
            requests_rejected: self.rejected.load(Ordering::Relaxed),
            arm_auth_required: self.arm_auth_required(),
        }
    }

    /// `GET /msi/token`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/msi/token", get(token_handler))
            .with_state(self.clone())
    }

    fn reject(&self, status: StatusCode, error: &str, description: &str) -> Response {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        (
            status,
            Json(serde_json::json!({"error": error, "error_description": description})),
        )
            .into_response()
    }
}

/// Resources compare without a trailing slash and case-insensitively (`/.default` is already
/// stripped by clients before the request).
fn normalize_resource(resource: &str) -> String {
    resource
        .trim()
        .trim_end_matches("/.default")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

async fn token_handler(
    State(identity): State<Arc<IdentityEndpoint>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let Some(secret) = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
    else {
        return identity.reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the X-IDENTITY-HEADER header is required",
        );
    };
    if secret != identity.header_secret {
        return identity.reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "the X-IDENTITY-HEADER value does not match IDENTITY_HEADER",
        );
    }
    if query.api_version.as_deref() != Some(API_VERSION) {
        return identity.reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("query parameter api-version must be {API_VERSION}"),
        );
    }
    let Some(resource) = query.resource.filter(|r| !r.trim().is_empty()) else {
        return identity.reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "query parameter resource is required (e.g. https://management.azure.com)",
        );
    };
    let client = query.client_id.or(query.object_id);
    Json(identity.issue(&resource, client.as_deref())).into_response()
}

/// Middleware in front of the ARM router: a `Bearer` token issued by this endpoint for
/// [`ARM_RESOURCE`] is required while ARM auth is switched on.
pub async fn require_arm_token(
    State(identity): State<Arc<IdentityEndpoint>>,
    request: Request,
    next: Next,
) -> Response {
    if !identity.arm_auth_required() {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match header {
        None => arm_unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ),
        Some(value) => {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "));
            match token {
                Some(t) if identity.verify_bearer(t.trim(), ARM_RESOURCE) => {
                    next.run(request).await
                }
                Some(_) => arm_unauthorized(
                    "InvalidAuthenticationToken",
                    "The access token is invalid, expired, or was not issued for https://management.azure.com.",
                ),
                None => arm_unauthorized(
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is not a Bearer token.",
                ),
            }
        }
    }
}

fn arm_unauthorized(code: &str, message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\"",
        )],
        Json(CloudError::new(code, message)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(
        router: Router,
        uri: &str,
        header: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::get(uri);
        if let Some(h) = header {
            req = req.header("X-IDENTITY-HEADER", h);
        }
        let resp = router
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn token_has_the_app_service_shape_and_verifies_per_resource() {
        let id = IdentityEndpoint::new("s3cret", true);
        let uri = "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com";
        let (status, body) = get(id.router(), uri, Some("s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        let obj = body.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["access_token", "expires_on", "resource", "token_type"]
        );
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["resource"], "https://management.azure.com");
        let expires: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
        assert!(expires > OffsetDateTime::now_utc().unix_timestamp() + 3600);
        let token = body["access_token"].as_str().unwrap();
        assert!(id.verify_bearer(token, "https://management.azure.com/"));
        assert!(!id.verify_bearer(token, SERVICE_BUS_RESOURCE));
        assert!(!id.verify_bearer("made-up", ARM_RESOURCE));
    }

    #[tokio::test]
    async fn token_requests_are_checked() {
        let id = IdentityEndpoint::new("s3cret", true);
        let ok =
            "/msi/token?api-version=2019-08-01&resource=https://servicebus.azure.net&client_id=abc";
        assert_eq!(get(id.router(), ok, None).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            get(id.router(), ok, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (s, b) = get(
            id.router(),
            "/msi/token?api-version=2017-09-01&resource=x",
            Some("s3cret"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b["error_description"]
            .as_str()
            .unwrap()
            .contains("api-version"));
        let (s, b) = get(
            id.router(),
            "/msi/token?api-version=2019-08-01",
            Some("s3cret"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b["error_description"]
            .as_str()
            .unwrap()
            .contains("resource"));
        let (s, b) = get(id.router(), ok, Some("s3cret")).await;
        assert_eq!(s, StatusCode::OK);
        let token = b["access_token"].as_str().unwrap();
        assert_eq!(id.client_id_of(token).as_deref(), Some("abc"));
        assert_eq!(id.counters().requests_rejected, 4);
        assert_eq!(id.counters().tokens_issued, 1);
    }

    #[tokio::test]
    async fn arm_middleware_requires_an_arm_token_and_can_be_switched_off() {
        let id = IdentityEndpoint::new("s3cret", true);
        let app = Router::new()
            .route("/subscriptions", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                id.clone(),
                require_arm_token,
            ));
        let call = |auth: Option<String>| {
            let app = app.clone();
            async move {
                let mut req = axum::http::Request::get("/subscriptions");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).to_string())
            }
        };
        let (s, b) = call(None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(b.contains("AuthenticationFailed"), "{b}");
        let (s, b) = call(Some("Bearer nope".into())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(b.contains("InvalidAuthenticationToken"), "{b}");
        let sb = id.issue(SERVICE_BUS_RESOURCE, None).access_token;
        assert_eq!(
            call(Some(format!("Bearer {sb}"))).await.0,
            StatusCode::UNAUTHORIZED
        );
        let arm = id.issue(ARM_RESOURCE, None).access_token;
        assert_eq!(
            call(Some(format!("Bearer {arm}"))).await,
            (StatusCode::OK, "ok".into())
        );
        id.set_arm_auth_required(false);
        assert_eq!(call(None).await.0, StatusCode::OK);
    }
}
