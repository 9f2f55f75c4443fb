//! Every failure of the API as one JSON shape: `{"error": {"code": "...", "message": "..."}}`.
//! Students need not edit this file.
//!
//! Bad input says exactly what is wrong; Redis trouble is logged in full here
//! and reported to the client only as `redis_unavailable` (no internals leak).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub enum ApiError {
    /// The client sent something we refuse (4xx); nothing was written.
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// Redis did not answer in time or refused the command (503).
    RedisUnavailable(String),
    /// A submission was sent to Redis but not confirmed within the timeout (503):
    /// it may or may not have been enqueued.
    SubmissionUnconfirmed,
    /// Exercise 4's code failed otherwise (e.g. a stored record it cannot
    /// read back): 500, with the error in the API's log.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> ApiError {
        ApiError::RedisUnavailable(err.to_string())
    }
}

/// An error of exercise 4's `begin`, `finish` or `release`: Redis trouble is
/// `redis_unavailable` as everywhere else, anything else is the code's own.
impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> ApiError {
        match err.downcast_ref::<redis::RedisError>() {
            Some(redis) => ApiError::RedisUnavailable(redis.to_string()),
            None => ApiError::Internal(format!("{err:#}")),
        }
    }
}

impl From<tokio::time::error::Elapsed> for ApiError {
    fn from(_: tokio::time::error::Elapsed) -> ApiError {
        ApiError::RedisUnavailable(format!("no answer within {:?}", crate::REDIS_TIMEOUT))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Client {
                status,
                code,
                message,
            } => (status, code, message),
            ApiError::RedisUnavailable(detail) => {
                lab_runtime::service::log_redis_unavailable(&detail);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis_unavailable",
                    "the queue (Redis) is not reachable right now; retry shortly".to_string(),
                )
            }
            ApiError::SubmissionUnconfirmed => {
                lab_runtime::service::log_redis_unavailable(
                    "a submission was not confirmed in time",
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis_timeout",
                    format!(
                        "the queue (Redis) did not confirm the submission within {:?}: it may \
                         still be enqueued, so a retry may deliver the job twice",
                        crate::REDIS_TIMEOUT
                    ),
                )
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed in idempotency.rs");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the request failed inside the API (see its log); nothing was ordered, retry"
                        .to_string(),
                )
            }
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        (status, Json(body)).into_response()
    }
}
