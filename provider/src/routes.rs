//! The provider's routes besides the charge: the request log, the instructor's
//! faults, health, and the JSON 404/405. Students need not edit this file.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use lab_schema::provider::{Faults, RunRequests};
use lab_schema::{now_ms, validate_id};
use serde_json::json;

use crate::error::ProviderError;
use crate::store::{self, timed};
use crate::{AppState, MAX_OUTAGE_SECS, MAX_SIMULATED_MS, validate};

/// `GET /v1/runs/{runId}/requests`: the run's charge requests, oldest first
/// (an unknown run has none).
pub async fn run_requests(
    State(state): State<AppState>,
    run_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<RunRequests>, ProviderError> {
    let Path(run_id) = run_id
        .map_err(|rejection| ProviderError::bad_request("invalid_run_id", rejection.body_text()))?;
    validate_id("runId", &run_id).map_err(|m| ProviderError::bad_request("invalid_run_id", m))?;
    let mut redis = state.redis.clone();
    let requests = store::read_request_log(&mut redis, &run_id).await?;
    Ok(Json(RunRequests { run_id, requests }))
}

/// `GET /admin/faults`: the instructor's faults now (`outageSecs`: seconds left).
pub async fn get_faults(State(state): State<AppState>) -> Result<Json<Faults>, ProviderError> {
    let mut redis = state.redis.clone();
    let (outage_until_ms, slow_ms) = store::read_faults(&mut redis).await?;
    Ok(Json(Faults {
        outage_secs: outage_until_ms.saturating_sub(now_ms()).div_ceil(1000),
        slow_ms,
    }))
}

/// `PUT /admin/faults`: replaces the instructor's faults (`{"outageSecs": 0}`
/// ends an outage; a field left out is 0). Bad input is a 400 and changes nothing.
pub async fn put_faults(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Faults>, ProviderError> {
    let value = validate::json_object_body(&headers, body)?;
    let invalid = |m: String| ProviderError::bad_request("invalid_faults", m);
    let faults: Faults = serde_json::from_value(value).map_err(|e| {
        invalid(format!(
            "faults must be {{\"outageSecs\": <seconds>, \"slowMs\": <ms>}}: {e}"
        ))
    })?;
    if faults.outage_secs > MAX_OUTAGE_SECS {
        return Err(invalid(format!(
            "outageSecs is {}; the limit is {MAX_OUTAGE_SECS} (one day)",
            faults.outage_secs
        )));
    }
    if faults.slow_ms > MAX_SIMULATED_MS {
        return Err(invalid(format!(
            "slowMs is {}; the limit is {MAX_SIMULATED_MS}",
            faults.slow_ms
        )));
    }
    let outage_until_ms = match faults.outage_secs {
        0 => 0,
        secs => now_ms() + secs * 1000,
    };
    let mut redis = state.redis.clone();
    store::write_faults(&mut redis, outage_until_ms, faults.slow_ms).await?;
    tracing::info!(
        outage_secs = faults.outage_secs,
        slow_ms = faults.slow_ms,
        "instructor's faults set{}",
        if faults == Faults::default() {
            " (none: the provider is healthy)"
        } else {
            ""
        }
    );
    Ok(Json(faults))
}

/// `GET /healthz`: 200 when Redis answers PING, else 503 `redis_unavailable`.
pub async fn healthz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ProviderError> {
    let mut redis = state.redis.clone();
    let _: String = timed(redis::cmd("PING").query_async(&mut redis)).await?;
    Ok(Json(json!({ "status": "ok" })))
}

pub async fn not_found() -> ProviderError {
    ProviderError::client(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see POST /v1/charges, GET /v1/runs/{runId}/requests, GET and PUT /admin/faults, GET /healthz",
    )
}

pub async fn method_not_allowed() -> ProviderError {
    ProviderError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route exists but not with this HTTP method",
    )
}
