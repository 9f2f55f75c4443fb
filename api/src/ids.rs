//! The ids in the routes' paths, checked by extractors: a handler that takes a
//! [`JobId`] or a [`RunId`] only ever sees a valid one. Students need not edit this file.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use lab_schema::validate_id;

use crate::error::ApiError;

/// `{jobId}` of the path, valid by [`validate_id`]; else 400 `invalid_job_id`.
pub struct JobId(pub String);

/// `{runId}` of the path, valid by [`validate_id`]; else 400 `invalid_run_id`.
pub struct RunId(pub String);

async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    what: &str,
    code: &'static str,
) -> Result<String, ApiError> {
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::bad_request(code, rejection.body_text()))?;
    validate_id(what, &id).map_err(|m| ApiError::bad_request(code, m))?;
    Ok(id)
}

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<JobId, ApiError> {
        path_id(parts, state, "jobId", "invalid_job_id")
            .await
            .map(JobId)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RunId, ApiError> {
        path_id(parts, state, "runId", "invalid_run_id")
            .await
            .map(RunId)
    }
}
