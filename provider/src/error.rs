//! Every failure of the provider as one JSON shape: `{"error": {"code": "...", "message": "..."}}`.
//! Students need not edit this file.
//!
//! Bad input says exactly what is wrong; Redis trouble is logged in full here
//! and reported to the client only as `redis_unavailable` (no internals leak).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lab_schema::provider::error_code;

#[derive(Debug)]
pub enum ProviderError {
    /// The client sent something we refuse (4xx); nothing was written.
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 401: no valid `Authorization: Bearer <account>`.
    Unauthenticated(String),
    /// Redis did not answer in time or refused the command (503).
    RedisUnavailable(String),
    /// A charge was sent to Redis but not confirmed within the timeout (503):
    /// it may or may not have been made.
    ChargeUnconfirmed,
    /// The request's task died (a bug): 500.
    Internal(String),
}

impl ProviderError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ProviderError {
        ProviderError::Client {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn client(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ProviderError {
        ProviderError::Client {
            status,
            code,
            message: message.into(),
        }
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProviderError::Client { status, .. } => *status,
            ProviderError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProviderError::RedisUnavailable(_) | ProviderError::ChargeUnconfirmed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProviderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<redis::RedisError> for ProviderError {
    fn from(err: redis::RedisError) -> ProviderError {
        ProviderError::RedisUnavailable(err.to_string())
    }
}

impl From<tokio::time::error::Elapsed> for ProviderError {
    fn from(_: tokio::time::error::Elapsed) -> ProviderError {
        ProviderError::RedisUnavailable(format!("no answer within {:?}", crate::REDIS_TIMEOUT))
    }
}

/// The JSON error body.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, message) = match self {
            ProviderError::Client { code, message, .. } => (code, message),
            ProviderError::Unauthenticated(message) => {
                let mut response = (
                    status,
                    Json(error_body(error_code::UNAUTHENTICATED, &message)),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            ProviderError::RedisUnavailable(detail) => {
                lab_runtime::service::log_redis_unavailable(&detail);
                (
                    error_code::REDIS_UNAVAILABLE,
                    "the provider's store (Redis) is not reachable right now; nothing was \
                     charged; retry shortly"
                        .to_string(),
                )
            }
            ProviderError::ChargeUnconfirmed => {
                lab_runtime::service::log_redis_unavailable("a charge was not confirmed in time");
                (
                    error_code::CHARGE_UNCONFIRMED,
                    format!(
                        "the provider's store (Redis) did not confirm the charge within {:?}: \
                         it may have been made; a retry with the same Idempotency-Key gets its \
                         stored answer if it was",
                        crate::REDIS_TIMEOUT
                    ),
                )
            }
            ProviderError::Internal(detail) => {
                tracing::error!(%detail, "request failed: answering 500");
                (
                    "internal",
                    "the provider failed while handling this request".to_string(),
                )
            }
        };
        (status, Json(error_body(code, &message))).into_response()
    }
}
