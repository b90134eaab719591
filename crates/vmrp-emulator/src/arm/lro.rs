//! Long-running operations in Compute's form (CONTRACT.md §5): a 201/202 carries
//! `Azure-AsyncOperation: …/providers/Microsoft.Compute/locations/{region}/operations/{id}?api-version=…`,
//! `Location:` the same URL with `monitor=true`, and `Retry-After`. The status URL answers
//! `{name, status, startTime, endTime?, error?}`; the Location URL answers 202 while running,
//! then 200 (the created resource's body for a create, no body for a delete) or the error.
//!
//! An operation's end and outcome are fixed when it starts (the lifecycle is computed from the
//! virtual clock), so its status is a pure function of `now`.

use serde::Serialize;
use time::OffsetDateTime;

use crate::azure::models::{ApiError, AsyncOperationStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationKind {
    CreateRestorePoint,
    DeleteRestorePoint,
    DeleteCollection,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub kind: OperationKind,
    pub subscription: String,
    /// Normalised region of the resource (used in the URL).
    pub region: String,
    pub resource_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// `Some((code, message))` when the operation ends failed.
    pub error: Option<(String, String)>,
}

/// Where an operation is at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    InProgress,
    Succeeded,
    Failed,
}

impl Operation {
    pub fn state(&self, now: OffsetDateTime) -> OpState {
        if now < self.end {
            OpState::InProgress
        } else if self.error.is_some() {
            OpState::Failed
        } else {
            OpState::Succeeded
        }
    }

    /// The `Azure-AsyncOperation` body.
    pub fn status_body(&self, now: OffsetDateTime) -> AsyncOperationStatus {
        let state = self.state(now);
        AsyncOperationStatus {
            name: Some(self.id.clone()),
            status: match state {
                OpState::InProgress => "InProgress",
                OpState::Succeeded => "Succeeded",
                OpState::Failed => "Failed",
            }
            .to_string(),
            start_time: Some(self.start),
            end_time: (state != OpState::InProgress).then_some(self.end),
            percent_complete: None,
            error: match (state, &self.error) {
                (OpState::Failed, Some((code, message))) => Some(ApiError {
                    code: Some(code.clone()),
                    message: Some(message.clone()),
                    ..Default::default()
                }),
                _ => None,
            },
        }
    }

    /// The status URL path (no host), with the api-version.
    pub fn status_path(&self) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{}?api-version={}",
            self.subscription,
            self.region,
            self.id,
            crate::azure::models::API_VERSION
        )
    }

    /// The Location (monitor) URL path.
    pub fn location_path(&self) -> String {
        format!("{}&monitor=true", self.status_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn status_follows_the_clock() {
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let mut op = Operation {
            id: "abc".into(),
            kind: OperationKind::CreateRestorePoint,
            subscription: "s".into(),
            region: "westus".into(),
            resource_id: "/x".into(),
            start: t0,
            end: t0 + time::Duration::seconds(30),
            error: None,
        };
        let running = op.status_body(t0);
        assert_eq!(running.status, "InProgress");
        assert!(running.end_time.is_none());
        assert_eq!(op.status_body(op.end).status, "Succeeded");
        op.error = Some(("VMRestorePointInternalError".into(), "boom".into()));
        let failed = op.status_body(op.end);
        assert_eq!(failed.status, "Failed");
        assert_eq!(
            failed.error.unwrap().code.as_deref(),
            Some("VMRestorePointInternalError")
        );
        assert!(op.location_path().ends_with("&monitor=true"));
        assert!(op
            .status_path()
            .starts_with("/subscriptions/s/providers/Microsoft.Compute/locations/westus/operations/abc?api-version=2025-04-01"));
    }
}
