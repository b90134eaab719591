//! The drill ledger in Azure Table storage ([`TableLedger`], a [`DrillLedger`]): one entity per
//! VM and region in a table of the app's storage account, over the Table service REST API with
//! a Microsoft Entra token (no account key).
//!
//! Microsoft's documentation this follows:
//! - authorization: a bearer token for `https://storage.azure.com/.default`, `x-ms-version`
//!   2019-02-02 or later, `x-ms-date` (https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory,
//!   https://learn.microsoft.com/azure/storage/tables/authorize-access-azure-active-directory);
//! - Create Table: `POST {service}/Tables` `{"TableName": …}`, 201, or 409 `TableAlreadyExists`
//!   (https://learn.microsoft.com/rest/api/storageservices/create-table);
//! - Query Entities: `GET {table}(PartitionKey='…',RowKey='…')` for one (404 `ResourceNotFound`,
//!   its `ETag` header), `GET {table}()` for all, paged by `x-ms-continuation-NextPartitionKey` /
//!   `x-ms-continuation-NextRowKey` sent back as `NextPartitionKey` / `NextRowKey`
//!   (https://learn.microsoft.com/rest/api/storageservices/query-entities,
//!   https://learn.microsoft.com/rest/api/storageservices/query-timeout-and-pagination);
//! - Insert Entity: `POST {table}`, 409 `EntityAlreadyExists` when it exists
//!   (https://learn.microsoft.com/rest/api/storageservices/insert-entity);
//! - Update Entity: `PUT {table}(PartitionKey='…',RowKey='…')` with `If-Match: <ETag>`, 412
//!   `UpdateConditionNotSatisfied` when another writer changed it
//!   (https://learn.microsoft.com/rest/api/storageservices/update-entity2);
//! - `Accept: application/json;odata=nometadata` (https://learn.microsoft.com/rest/api/storageservices/payload-format-for-table-service-operations).
//!
//! A record is a read-merge-write ([`crate::ledger::merge`]) made conditional by the ETag (or by
//! Insert's refusal of an existing entity), retried a few times when another instance won the
//! race, so concurrent drills of the same VM and region never lose a newer pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde_json::Value;
use url::Url;

use super::http;
use super::ledger::{key_problem, merge, table_keys, DrillLedger, DrillRecord, LedgerError};

/// The app setting naming the table: `https://<account>.table.core.windows.net/<table>`.
pub const DRILL_TABLE_SETTING: &str = "VMRP_DRILL_TABLE_URL";
/// Entra scope of the storage data plane.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The Table service version sent: the first that accepts Entra tokens for tables.
pub const TABLE_SERVICE_VERSION: &str = "2019-02-02";
/// Conditional writes lost to another writer before a record gives up (with a short random
/// pause between, so writers racing for one entity spread out).
const MAX_ATTEMPTS: usize = 8;
/// Pages a listing follows before it calls the service's continuation a loop.
const MAX_PAGES: usize = 10_000;

/// Table storage as a [`DrillLedger`].
pub struct TableLedger {
    http: reqwest::Client,
    /// `https://<account>.table.core.windows.net/` (or the emulator's `…/table/<account>/`).
    service: Url,
    table: String,
    credential: Arc<dyn TokenCredential>,
    loopback_only: bool,
    /// The table was created (or found) by this process: Create Table is sent once at most.
    table_known: AtomicBool,
}

impl std::fmt::Debug for TableLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLedger")
            .field("service", &self.service.as_str())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn local(operation: &str, code: &str, message: impl Into<String>) -> LedgerError {
    LedgerError {
        operation: operation.into(),
        status: None,
        code: code.into(),
        message: message.into(),
    }
}

/// `https://<account>.table.core.windows.net/<table>` → the service root and the table name,
/// or why not (naming [`DRILL_TABLE_SETTING`]); with `loopback_only`, anything but 127.0.0.1 /
/// localhost is refused. No I/O: the handler checks the setting before it builds a credential.
pub fn parse_table_url(table_url: &str, loopback_only: bool) -> Result<(Url, String), LedgerError> {
    let invalid = |m: String| local("configure", "InvalidSetting", m);
    let url = Url::parse(table_url.trim()).map_err(|e| {
        invalid(format!(
            "{DRILL_TABLE_SETTING} {table_url:?} is not a URL like https://<account>.table.core.windows.net/<table>: {e}"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(invalid(format!(
            "{DRILL_TABLE_SETTING} {table_url:?} is not an https:// URL"
        )));
    }
    if loopback_only && !http::is_loopback(&url) {
        return Err(invalid(format!(
            "{DRILL_TABLE_SETTING} {table_url} is not a loopback address, and loopback_only is set"
        )));
    }
    let path = url.path().trim_end_matches('/');
    let (parent, table) = path.rsplit_once('/').unwrap_or(("", path));
    // Table names: 3-63 letters and digits, starting with a letter (create-table).
    let ok = (3..=63).contains(&table.len())
        && table.chars().all(|c| c.is_ascii_alphanumeric())
        && table.starts_with(|c: char| c.is_ascii_alphabetic());
    if !ok {
        return Err(invalid(format!(
            "{DRILL_TABLE_SETTING} {table_url:?} must end in a table name (3-63 letters and digits, a letter first), e.g. …/vmrpdrills"
        )));
    }
    let mut service = url.clone();
    service.set_path(&format!("{parent}/"));
    service.set_query(None);
    Ok((service, table.to_string()))
}

impl TableLedger {
    /// A client for the table at `table_url` (its last path segment names the table); with
    /// `loopback_only`, anything but 127.0.0.1 / localhost is refused before any I/O.
    pub fn new(
        table_url: &str,
        credential: Arc<dyn TokenCredential>,
        loopback_only: bool,
    ) -> Result<Self, LedgerError> {
        let (service, table) = parse_table_url(table_url, loopback_only)?;
        let invalid = |m: String| local("configure", "InvalidSetting", m);
        let http = http::client_builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vmrp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                invalid(format!(
                    "building the HTTP client: {}",
                    http::error_chain(&e)
                ))
            })?;
        Ok(Self {
            http,
            service,
            table,
            credential,
            loopback_only,
            table_known: AtomicBool::new(false),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn url(&self, path_and_query: &str) -> Result<Url, LedgerError> {
        self.service
            .join(path_and_query)
            .map_err(|e| local("build a URL", "InvalidRequest", e.to_string()))
    }

    fn entity_url(&self, pk: &str, rk: &str) -> Result<Url, LedgerError> {
        // OData string literals double their quotes; the keys vmrp derives hold none.
        let q = |k: &str| urlencoding::encode(&k.replace('\'', "''")).into_owned();
        self.url(&format!(
            "{}(PartitionKey='{}',RowKey='{}')",
            self.table,
            q(pk),
            q(rk)
        ))
    }

    /// One request with the headers every Table call carries; a non-2xx answer is an `Err`
    /// with the service's error code.
    async fn send(
        &self,
        operation: &str,
        method: reqwest::Method,
        url: Url,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, LedgerError> {
        if self.loopback_only && !http::is_loopback(&url) {
            return Err(local(
                operation,
                "HostRefused",
                format!("refusing {url} (loopback_only)"),
            ));
        }
        let token = self
            .credential
            .get_token(&[STORAGE_SCOPE], None)
            .await
            .map_err(|e| {
                local(
                    operation,
                    "CredentialUnavailable",
                    format!("getting a storage token: {}", http::error_chain(&e)),
                )
            })?;
        let mut rb = self
            .http
            .request(method, url)
            .header("authorization", format!("Bearer {}", token.token.secret()))
            .header("x-ms-version", TABLE_SERVICE_VERSION)
            .header(
                "x-ms-date",
                http::http_date(time::OffsetDateTime::now_utc()),
            )
            .header("accept", "application/json;odata=nometadata")
            .header("dataserviceversion", "3.0;NetFx");
        if let Some(etag) = if_match {
            rb = rb.header("if-match", etag);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .header("prefer", "return-no-content")
                .body(b.to_string());
        }
        let rsp = rb.send().await.map_err(|e| LedgerError {
            operation: operation.into(),
            status: None,
            code: if e.is_timeout() {
                "Timeout"
            } else {
                "Connection"
            }
            .into(),
            message: http::error_chain(&e),
        })?;
        if rsp.status().is_success() {
            return Ok(rsp);
        }
        let status = rsp.status().as_u16();
        let header_code = rsp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = rsp.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = &parsed["odata.error"];
        Err(LedgerError {
            operation: operation.into(),
            status: Some(status),
            code: error["code"]
                .as_str()
                .map(str::to_string)
                .or(header_code)
                .unwrap_or_else(|| format!("HTTP{status}")),
            message: error["message"]["value"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect()),
        })
    }

    /// Create Table, once per process; an existing table is fine.
    async fn ensure_table(&self) -> Result<(), LedgerError> {
        if self.table_known.load(Ordering::Relaxed) {
            return Ok(());
        }
        let body = serde_json::json!({ "TableName": self.table });
        match self
            .send(
                "Create Table",
                reqwest::Method::POST,
                self.url("Tables")?,
                None,
                Some(&body),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == Some(409) && e.code == "TableAlreadyExists" => {}
            Err(e) => return Err(e),
        }
        self.table_known.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The stored record and its ETag, `None` when there is none.
    async fn get(&self, pk: &str, rk: &str) -> Result<Option<(DrillRecord, String)>, LedgerError> {
        let op = "Query Entities";
        let rsp = match self
            .send(
                op,
                reqwest::Method::GET,
                self.entity_url(pk, rk)?,
                None,
                None,
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.status == Some(404) && e.code != "TableNotFound" => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = rsp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| local(op, "InvalidResponse", "the entity came without an ETag"))?;
        let value: Value = rsp
            .json()
            .await
            .map_err(|e| local(op, "InvalidResponse", http::error_chain(&e)))?;
        let record = serde_json::from_value(value)
            .map_err(|e| local(op, "InvalidResponse", format!("the stored entity: {e}")))?;
        Ok(Some((record, etag)))
    }

    fn entity(record: &DrillRecord, pk: &str, rk: &str) -> Value {
        let mut v = serde_json::to_value(record).unwrap_or_default();
        v["PartitionKey"] = Value::String(pk.into());
        v["RowKey"] = Value::String(rk.into());
        v
    }

    /// One read-merge-write; `Ok(false)` when another writer got there first (try again).
    async fn record_once(
        &self,
        record: &DrillRecord,
        pk: &str,
        rk: &str,
    ) -> Result<bool, LedgerError> {
        let stored = self.get(pk, rk).await?;
        let merged = merge(stored.as_ref().map(|(r, _)| r), record);
        // Already as new as this drill (a newer run, or the same record): nothing to write.
        if stored.as_ref().is_some_and(|(r, _)| *r == merged) {
            return Ok(true);
        }
        let body = Self::entity(&merged, pk, rk);
        let written = match &stored {
            None => {
                self.send(
                    "Insert Entity",
                    reqwest::Method::POST,
                    self.url(&self.table)?,
                    None,
                    Some(&body),
                )
                .await
            }
            Some((_, etag)) => {
                self.send(
                    "Update Entity",
                    reqwest::Method::PUT,
                    self.entity_url(pk, rk)?,
                    Some(etag),
                    Some(&body),
                )
                .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(409) && e.code == "EntityAlreadyExists" => Ok(false),
            Err(e) if e.status == Some(412) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl DrillLedger for TableLedger {
    async fn record(&self, record: &DrillRecord) -> Result<(), LedgerError> {
        let (pk, rk) = table_keys(&record.vm, &record.region);
        for key in [&pk, &rk] {
            if let Some(p) = key_problem(key) {
                return Err(local("record", "InvalidKey", format!("{key:?}: {p}")));
            }
        }
        self.ensure_table().await?;
        for attempt in 0..MAX_ATTEMPTS {
            match self.record_once(record, &pk, &rk).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    let ms = 10 * (attempt as u64 + 1) + rand::random::<u64>() % 40;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                // The table was deleted after this process created it: create it again.
                Err(e) if e.code == "TableNotFound" => {
                    self.table_known.store(false, Ordering::Relaxed);
                    self.ensure_table().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(local(
            "record",
            "TooManyConflicts",
            format!(
                "{} {}: other writers changed the entity {MAX_ATTEMPTS} times in a row",
                record.vm, record.region
            ),
        ))
    }

    async fn read_all(&self) -> Result<Vec<DrillRecord>, LedgerError> {
        let op = "Query Entities";
        let mut out = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        for _ in 0..MAX_PAGES {
            let mut url = self.url(&format!("{}()", self.table))?;
            if let Some((pk, rk)) = &next {
                let mut q = url.query_pairs_mut();
                q.append_pair("NextPartitionKey", pk);
                if let Some(rk) = rk {
                    q.append_pair("NextRowKey", rk);
                }
            }
            let rsp = self.send(op, reqwest::Method::GET, url, None, None).await?;
            let header = |name: &str| {
                rsp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            let following = header("x-ms-continuation-NextPartitionKey")
                .map(|pk| (pk, header("x-ms-continuation-NextRowKey")));
            let page: Value = rsp
                .json()
                .await
                .map_err(|e| local(op, "InvalidResponse", http::error_chain(&e)))?;
            for entity in page["value"].as_array().into_iter().flatten() {
                match serde_json::from_value::<DrillRecord>(entity.clone()) {
                    Ok(r) => out.push(r),
                    // Someone else's row in the table: not a drill's, skipped (named).
                    Err(e) => tracing::warn!(
                        partition = entity["PartitionKey"].as_str().unwrap_or_default(),
                        row = entity["RowKey"].as_str().unwrap_or_default(),
                        error = %e,
                        "skipping an entity of the drill table that is not a drill record"
                    ),
                }
            }
            match following {
                None => return Ok(out),
                Some(n) if Some(&n) == next.as_ref() => {
                    return Err(local(
                        op,
                        "InvalidResponse",
                        "the service answered the same continuation twice",
                    ))
                }
                Some(n) => next = Some(n),
            }
        }
        Err(local(
            op,
            "InvalidResponse",
            format!("more than {MAX_PAGES} pages"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::StaticToken;

    fn ledger(url: &str) -> Result<TableLedger, LedgerError> {
        TableLedger::new(url, StaticToken::new("t", Duration::from_secs(60)), true)
    }

    #[test]
    fn the_url_names_the_service_and_the_table() {
        let l = ledger("http://127.0.0.1:9/table/acct/vmrpdrills").unwrap();
        assert_eq!(l.table(), "vmrpdrills");
        assert_eq!(l.service.as_str(), "http://127.0.0.1:9/table/acct/");
        assert_eq!(
            l.entity_url("p", "r'x").unwrap().as_str(),
            "http://127.0.0.1:9/table/acct/vmrpdrills(PartitionKey='p',RowKey='r%27%27x')"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_setting_named() {
        for bad in [
            "not a url",
            "ftp://127.0.0.1/t/vmrpdrills",
            "http://127.0.0.1:9/",
            "http://127.0.0.1:9/x/1table",
            "http://127.0.0.1:9/x/vmrp-drills",
            // Loopback only: a real account is refused before any I/O.
            "https://acct.table.core.windows.net/vmrpdrills",
        ] {
            let e = ledger(bad).unwrap_err();
            assert!(e.message.contains(DRILL_TABLE_SETTING), "{bad}: {e}");
        }
        assert!(TableLedger::new(
            "https://acct.table.core.windows.net/vmrpdrills",
            StaticToken::new("t", Duration::from_secs(60)),
            false
        )
        .is_ok());
    }
}
