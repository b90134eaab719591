//! Records every ARM request/response pair in oav's traffic format (VALIDATING.md): one JSON file
//! per pair, `liveRequest {url, method, headers, body}` / `liveResponse {statusCode, headers, body}`,
//! with the URL's host replaced by `https://management.azure.com`.
//!
//! Pairs for operations that are not in the copied swagger (the Compute operation status URL,
//! disks, unknown paths) are written with the extension `.json.skipped`: kept for people, ignored
//! by `oav validate-traffic` (which reads `**/*.json`). `Authorization` and cookie headers are
//! never written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

/// Writes traffic files into one directory, numbered in request order.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    seq: AtomicU64,
}

/// One exchange to record.
pub struct Exchange<'a> {
    pub method: &'a str,
    /// Path and query as received.
    pub path_and_query: &'a str,
    pub request_headers: &'a http::HeaderMap,
    pub request_body: &'a [u8],
    pub status: u16,
    pub response_headers: &'a [(String, String)],
    pub response_body: Option<&'a Value>,
    /// The operation's name, e.g. `RestorePoints_Create` (used in the file name).
    pub operation: &'a str,
    /// False for operations the swagger does not describe.
    pub validatable: bool,
}

impl Recorder {
    /// Creates the directory if needed.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one pair; I/O errors are logged, never fail the request.
    pub fn record(&self, ex: &Exchange<'_>) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let ext = if ex.validatable {
            "json"
        } else {
            "json.skipped"
        };
        let file = self.dir.join(format!(
            "{n:05}-{}-{}-{}.{ext}",
            ex.method, ex.operation, ex.status
        ));
        let doc = to_traffic(ex);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(&file, text) {
            tracing::warn!(file = %file.display(), error = %e, "could not write ARM traffic file");
        }
    }
}

/// The oav document for one exchange.
pub fn to_traffic(ex: &Exchange<'_>) -> Value {
    let mut req_headers = Map::new();
    for (name, value) in ex.request_headers {
        let n = name.as_str().to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "authorization" | "cookie" | "proxy-authorization"
        ) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            req_headers.insert(n, json!(v));
        }
    }
    let mut request = json!({
        "url": format!("https://management.azure.com{}", ex.path_and_query),
        "method": ex.method,
        "headers": req_headers,
    });
    if !ex.request_body.is_empty() {
        if let Ok(body) = serde_json::from_slice::<Value>(ex.request_body) {
            request["body"] = body;
        }
    }
    let mut resp_headers = Map::new();
    for (k, v) in ex.response_headers {
        resp_headers.insert(k.clone(), json!(v));
    }
    let mut response = json!({
        "statusCode": ex.status.to_string(),
        "headers": resp_headers,
    });
    if let Some(b) = ex.response_body {
        response["body"] = b.clone();
    }
    json!({ "liveRequest": request, "liveResponse": response })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_numbered_files_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(dir.path()).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let body = json!({"name": "x"});
        for (validatable, op) in [(true, "RestorePoints_Get"), (false, "Operations_Get")] {
            rec.record(&Exchange {
                method: "GET",
                path_and_query: "/subscriptions/s/x?api-version=2025-04-01",
                request_headers: &headers,
                request_body: b"",
                status: 200,
                response_headers: &[("x-ms-request-id".into(), "r".into())],
                response_body: Some(&body),
                operation: op,
                validatable,
            });
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "00001-GET-RestorePoints_Get-200.json",
                "00002-GET-Operations_Get-200.json.skipped"
            ]
        );
        let text = std::fs::read_to_string(dir.path().join(&names[0])).unwrap();
        assert!(!text.contains("secret"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["liveRequest"]["url"],
            "https://management.azure.com/subscriptions/s/x?api-version=2025-04-01"
        );
        assert_eq!(doc["liveResponse"]["statusCode"], "200");
        assert!(doc["liveRequest"].get("body").is_none());
    }
}
