//! Shared pieces of the azure_* integration tests: a scripted loopback HTTP fake (axum on
//! 127.0.0.1:0) that records what it received, the official ARM examples with placeholders
//! filled in, and a JSON "nothing lost, nothing changed" comparison.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// The subscription substituted for `{subscription-id}` / `{subscriptionId}` in the examples.
pub const SUB: &str = "00000000-0000-0000-0000-0000000000aa";

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Wait this long before answering (timeouts).
    pub delay: Option<std::time::Duration>,
}

impl Canned {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string()),
            delay: None,
        }
    }
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: None,
            delay: None,
        }
    }
    pub fn delayed(mut self, by: std::time::Duration) -> Self {
        self.delay = Some(by);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// What the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub at: Instant,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Route {
    method: String,
    path: String,
    responses: VecDeque<Canned>,
}

#[derive(Default)]
struct FakeState {
    routes: Vec<Route>,
    seen: Vec<Seen>,
}

/// A loopback HTTP server answering scripted responses per (method, path). With several
/// responses for one route they are served in order and the last one repeats.
#[derive(Clone)]
pub struct Fake {
    pub base: String,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn on(&self, method: &str, path: &str, responses: Vec<Canned>) {
        self.state.lock().unwrap().routes.push(Route {
            method: method.to_string(),
            path: path.to_string(),
            responses: responses.into(),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
    };
    let canned = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen.clone());
        st.routes
            .iter_mut()
            .find(|r| r.method == seen.method && r.path == seen.path)
            .map(|r| {
                if r.responses.len() > 1 {
                    r.responses.pop_front().unwrap()
                } else {
                    r.responses.front().cloned().unwrap()
                }
            })
    };
    let canned = canned.unwrap_or_else(|| {
        Canned::json(
            404,
            &serde_json::json!({"error": {"code": "ResourceNotFound", "message": format!("no route for {} {}", seen.method, seen.path)}}),
        )
    });
    if let Some(d) = canned.delay {
        tokio::time::sleep(d).await;
    }
    let mut rsp = Response::new(Body::from(canned.body.unwrap_or_default()));
    *rsp.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (k, v) in canned.headers {
        rsp.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    rsp
}

/// An official example (`reference/arm/examples/<rel>`) with the subscription
/// placeholders replaced by [`SUB`].
pub fn example(rel: &str) -> Value {
    let path = format!(
        "{}/reference/arm/examples/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = text
        .replace("{subscription-id}", SUB)
        .replace("{subscriptionId}", SUB);
    serde_json::from_str(&text).unwrap()
}

/// `example.parameters.parameters` (the request body).
pub fn request_body(ex: &Value) -> Value {
    ex["parameters"]["parameters"].clone()
}

/// `example.responses.<status>.body`.
pub fn response_body(ex: &Value, status: &str) -> Value {
    ex["responses"][status]["body"].clone()
}

/// Every field of `ours` (our model re-serialised) exists in `theirs` with the same value
/// (timestamps compared as instants, numbers as numbers): nothing invented or changed.
pub fn assert_subset(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let w = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}/{k}: our model has it, the example does not"));
                assert_subset(v, w, &format!("{at}/{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: array length");
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                assert_subset(v, w, &format!("{at}/{i}"));
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let fmt = &time::format_description::well_known::Rfc3339;
            match (
                time::OffsetDateTime::parse(a, fmt),
                time::OffsetDateTime::parse(b, fmt),
            ) {
                (Ok(x), Ok(y)) => assert_eq!(x, y, "{at}: timestamps differ"),
                _ => panic!("{at}: {a:?} != {b:?}"),
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{at}: numbers differ")
        }
        (a, b) => assert_eq!(a, b, "{at}"),
    }
}

/// The fields the code uses survived parsing: each pointer is present in the example and equal
/// in our re-serialised model.
pub fn assert_keeps(ours: &Value, theirs: &Value, pointers: &[&str]) {
    for p in pointers {
        let want = theirs
            .pointer(p)
            .unwrap_or_else(|| panic!("example lacks {p}; fix the test"));
        let got = ours
            .pointer(p)
            .unwrap_or_else(|| panic!("{p} was lost in parsing"));
        assert_subset(got, want, p);
    }
}
