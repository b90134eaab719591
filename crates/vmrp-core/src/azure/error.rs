//! The azure layer's errors, classified transient or permanent in exactly one place.

use std::time::Duration;

/// Whether retrying later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429, 5xx, timeouts, connection errors, the concurrent-create conflict: retry later.
    Transient,
    /// 400 validation, 401/403, 404, anything else: retrying will not help.
    Permanent,
}

/// A failed ARM call: what ARM said, and enough to find it in Azure's logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("ARM {operation} failed: {}{code}: {message}{}", status.map(|s| format!("HTTP {s} ")).unwrap_or_default(), request_id.as_ref().map(|r| format!(" (x-ms-request-id {r})")).unwrap_or_default())]
pub struct ArmError {
    /// What we were doing, e.g. `PUT restorePoints`.
    pub operation: String,
    /// HTTP status; `None` when no response arrived (timeout, connection error).
    pub status: Option<u16>,
    /// ARM error code (`CloudError.error.code`), or a local code such as `Timeout` / `Connection`.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// `Retry-After` when ARM sent one.
    pub retry_after: Option<Duration>,
}

impl ArmError {
    /// The one classification function (docs/architecture.md, "Errors").
    pub fn class(&self) -> ErrorClass {
        classify(self.status, &self.code, &self.message)
    }
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

/// Local codes (no HTTP status) for failures that never reached ARM and would fail the same way
/// again: a refused host, a request we could not build, a credential that is not available, or a
/// response body we could not read.
pub const LOCAL_PERMANENT_CODES: &[&str] = &[
    "HostRefused",
    "InvalidRequest",
    "CredentialUnavailable",
    "InvalidResponse",
];

/// Transient vs permanent from status, ARM code and message.
pub fn classify(status: Option<u16>, code: &str, message: &str) -> ErrorClass {
    match status {
        None if LOCAL_PERMANENT_CODES
            .iter()
            .any(|c| c.eq_ignore_ascii_case(code)) =>
        {
            ErrorClass::Permanent
        }
        None => ErrorClass::Transient,
        Some(429) | Some(408) => ErrorClass::Transient,
        Some(s) if s >= 500 => ErrorClass::Transient,
        Some(409) => {
            // 409 "operation in progress" / concurrent create on the same VM: wait and retry.
            let m = message.to_ascii_lowercase();
            let c = code.to_ascii_lowercase();
            if c == "conflict"
                || c.contains("inprogress")
                || m.contains("concurrent")
                || m.contains("in progress")
            {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            }
        }
        Some(_) => {
            // Compute's documented "retry later" codes can arrive with a 4xx status too.
            let c = code.to_ascii_lowercase();
            let retry_later = matches!(
                c.as_str(),
                "internalerror"
                    | "internalexecutionerror"
                    | "internaloperationerror"
                    | "vmrestorepointinternalerror"
            );
            let concurrent_create = c == "vmrestorepointclienterror"
                && message.to_ascii_lowercase().contains("concurrent");
            if retry_later || concurrent_create {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            }
        }
    }
}

/// A failed Service Bus send.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Service Bus send to {queue} failed: {}{message}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
pub struct SendError {
    pub queue: String,
    pub status: Option<u16>,
    pub message: String,
}

impl SendError {
    pub fn class(&self) -> ErrorClass {
        match self.status {
            None | Some(408) | Some(429) => ErrorClass::Transient,
            Some(s) if s >= 500 => ErrorClass::Transient,
            Some(_) => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(Option<u16>, &str, &str, ErrorClass)] = &[
            (None, "Timeout", "request timed out", ErrorClass::Transient),
            (None, "Connection", "connection refused", ErrorClass::Transient),
            (None, "HostRefused", "not loopback", ErrorClass::Permanent),
            (None, "CredentialUnavailable", "az not found", ErrorClass::Permanent),
            (None, "InvalidResponse", "bad json", ErrorClass::Permanent),
            (Some(429), "TooManyRequests", "", ErrorClass::Transient),
            // Compute's own throttling body: a 429 whatever its code says.
            (Some(429), "OperationNotAllowed", "The server rejected the request because too many requests have been received for this subscription.", ErrorClass::Transient),
            (Some(500), "InternalServerError", "", ErrorClass::Transient),
            (Some(503), "ServiceUnavailable", "", ErrorClass::Transient),
            (Some(409), "Conflict", "RestorePoint creation failed since a concurrent 'Create RestorePoint' operation was triggered on the VM.", ErrorClass::Transient),
            (Some(409), "OperationNotAllowed", "Another operation is in progress", ErrorClass::Transient),
            (Some(409), "ResourceExists", "the restore point already exists with other properties", ErrorClass::Permanent),
            (Some(400), "InvalidParameter", "bad", ErrorClass::Permanent),
            (Some(400), "VMRestorePointClientError", "concurrent 'Create RestorePoint' operation", ErrorClass::Transient),
            (Some(400), "VMRestorePointClientError", "maximum allowed snapshot limit reached", ErrorClass::Permanent),
            (Some(400), "InternalExecutionError", "", ErrorClass::Transient),
            (Some(401), "AuthenticationFailed", "", ErrorClass::Permanent),
            (Some(403), "AuthorizationFailed", "", ErrorClass::Permanent),
            (Some(404), "ResourceNotFound", "", ErrorClass::Permanent),
        ];
        for (status, code, msg, want) in cases {
            assert_eq!(
                classify(*status, code, msg),
                *want,
                "{status:?} {code} {msg}"
            );
        }
    }
}
