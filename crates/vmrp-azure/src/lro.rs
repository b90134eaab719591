//! Following ARM long-running operations to the end (for the CLI; handlers poll resources
//! themselves). Prefers `Azure-AsyncOperation` (status body), else `Location` (202 while running,
//! 200/204 when done), honours `Retry-After`, and gives up after a bounded total time.

use std::time::Duration;

use super::client::ArmClient;
use super::error::ArmError;
use super::http;
use super::models::{ApiError, AsyncOperationStatus};
use super::LroHandle;

/// How a finished operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LroOutcome {
    Succeeded,
    Failed(Option<ApiError>),
    Canceled(Option<ApiError>),
}

/// One poll's reading.
#[derive(Debug, Clone, PartialEq)]
pub enum PollState {
    Running,
    Done(LroOutcome),
}

/// Reads an `Azure-AsyncOperation` status body. Only `Succeeded`, `Failed` and `Canceled` are
/// final; anything else (including provider-specific values) means still running.
pub fn async_operation_state(body: &AsyncOperationStatus) -> PollState {
    let s = body.status.as_str();
    if s.eq_ignore_ascii_case("Succeeded") {
        PollState::Done(LroOutcome::Succeeded)
    } else if s.eq_ignore_ascii_case("Failed") {
        PollState::Done(LroOutcome::Failed(body.error.clone()))
    } else if s.eq_ignore_ascii_case("Canceled") || s.eq_ignore_ascii_case("Cancelled") {
        PollState::Done(LroOutcome::Canceled(body.error.clone()))
    } else {
        PollState::Running
    }
}

/// Reads a `Location` poll status: 202 while running, any other 2xx when done.
pub fn location_state(status: u16) -> PollState {
    if status == 202 {
        PollState::Running
    } else {
        PollState::Done(LroOutcome::Succeeded)
    }
}

/// Timing for [`ArmClient::wait_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Poll interval when the server sends no `Retry-After`.
    pub default_interval: Duration,
    /// Upper bound of one wait, whatever `Retry-After` says.
    pub max_interval: Duration,
    /// Give up after this long in total.
    pub max_total: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(60),
            max_total: Duration::from_secs(30 * 60),
        }
    }
}

impl ArmClient {
    /// Polls until the operation `handle` describes is final, with [`WaitOptions::default`].
    pub async fn wait_for(&self, handle: &LroHandle) -> Result<LroOutcome, ArmError> {
        self.wait_for_with(handle, WaitOptions::default()).await
    }

    /// Polls until the operation `handle` describes is final. A handle with neither URL means the
    /// operation finished synchronously (200/204).
    pub async fn wait_for_with(
        &self,
        handle: &LroHandle,
        options: WaitOptions,
    ) -> Result<LroOutcome, ArmError> {
        let (url, via_async) = match (&handle.async_operation, &handle.location) {
            (Some(a), _) => (a.clone(), true),
            (None, Some(l)) => (l.clone(), false),
            (None, None) => return Ok(LroOutcome::Succeeded),
        };
        let started = tokio::time::Instant::now();
        let mut wait = handle.retry_after.unwrap_or(options.default_interval);
        loop {
            let wait_now = wait.min(options.max_interval);
            if started.elapsed() + wait_now > options.max_total {
                return Err(http::local_error(
                    "wait for operation",
                    "LroTimeout",
                    format!(
                        "operation not finished after {:?} (limit {:?})",
                        started.elapsed(),
                        options.max_total
                    ),
                ));
            }
            tokio::time::sleep(wait_now).await;
            let rsp = self.poll(&url).await?;
            let state = if via_async {
                let body: AsyncOperationStatus =
                    serde_json::from_slice(&rsp.body).map_err(|e| {
                        http::local_error(
                            "GET operation status",
                            "InvalidResponse",
                            format!("Azure-AsyncOperation body is not an operation status: {e}"),
                        )
                    })?;
                async_operation_state(&body)
            } else {
                location_state(rsp.status)
            };
            match state {
                PollState::Done(outcome) => return Ok(outcome),
                PollState::Running => {
                    wait = http::retry_after_from(&rsp.headers).unwrap_or(options.default_interval);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_operation_status_table() {
        let err = ApiError {
            code: Some("VMRestorePointClientError".into()),
            message: Some("boom".into()),
            ..Default::default()
        };
        let st = |s: &str, e: Option<ApiError>| AsyncOperationStatus {
            status: s.into(),
            error: e,
            ..Default::default()
        };
        let cases = [
            (st("InProgress", None), PollState::Running),
            (st("Creating", None), PollState::Running),
            (
                st("succeeded", None),
                PollState::Done(LroOutcome::Succeeded),
            ),
            (
                st("Failed", Some(err.clone())),
                PollState::Done(LroOutcome::Failed(Some(err.clone()))),
            ),
            (
                st("Canceled", None),
                PollState::Done(LroOutcome::Canceled(None)),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(async_operation_state(&body), want, "{}", body.status);
        }
    }

    #[test]
    fn location_status_table() {
        assert_eq!(location_state(202), PollState::Running);
        for s in [200, 201, 204] {
            assert_eq!(location_state(s), PollState::Done(LroOutcome::Succeeded));
        }
    }
}
