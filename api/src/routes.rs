//! One handler per route of the API. Students need not edit this file.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use lab_schema::order_email::{OrderEmail, unique_lock};
use lab_schema::{
    DEFAULT_RUN_ID, Exercise, JobStatus, JobView, RECORD_TTL_SECS, RunAttempts, RunSummary, entry,
    job_field, keys, metrics, run_field, validate_id, validate_pipeline,
};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::json;

use crate::ids::{JobId, RunId};
use crate::{AppState, REDIS_TIMEOUT, error::ApiError, summary};

/// The index of recent runs, written by `POST /jobs` in its MULTI and read by
/// the dashboard's list of runs.
pub(crate) mod recent_runs {
    /// Sorted set: runId -> unix ms of its latest submission.
    pub(crate) const KEY: &str = "runs:recent";
    /// Runs kept in the index (the oldest are dropped).
    pub(crate) const KEEP: usize = 100;
}

/// Body of `POST /jobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Submission {
    job_id: Option<String>,
    run_id: Option<String>,
    payload: Option<serde_json::Value>,
    /// The exercise whose handler runs the job (default 1).
    exercise: Option<serde_json::Value>,
    /// The business pipeline acting on the job (default: the worker's `--pipeline`).
    pipeline: Option<String>,
    /// Record what the handler does on each delivery (`GET /jobs/{jobId}/trace`).
    #[serde(default)]
    trace: bool,
    /// Exercise 6's demonstration: an enqueue-time unique lock
    /// (`lab_schema::order_email::unique_lock`).
    unique_lock: Option<serde_json::Value>,
}

/// `POST /jobs`: validate, then enqueue one delivery, always (duplicates included).
pub async fn submit_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let submission = parse_submission(&headers, body)?;
    let job_id = submission
        .job_id
        .ok_or_else(|| ApiError::bad_request("invalid_job_id", "jobId is required"))?;
    validate_id("jobId", &job_id).map_err(|m| ApiError::bad_request("invalid_job_id", m))?;
    let run_id = submission
        .run_id
        .unwrap_or_else(|| DEFAULT_RUN_ID.to_string());
    validate_id("runId", &run_id).map_err(|m| ApiError::bad_request("invalid_run_id", m))?;
    let payload = match submission.payload {
        None | Some(serde_json::Value::Null) => "{}".to_string(),
        Some(p @ serde_json::Value::Object(_)) => p.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_payload",
                "payload must be a JSON object",
            ));
        }
    };
    let exercise = match submission.exercise {
        None | Some(serde_json::Value::Null) => Exercise::default(),
        Some(value) => value
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(Exercise::from_number)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_exercise",
                    format!(
                        "exercise must be the number of an exercise ({}); got {value}",
                        Exercise::numbers()
                    ),
                )
            })?,
    };
    if let Some(pipeline) = &submission.pipeline {
        validate_pipeline(pipeline).map_err(|m| ApiError::bad_request("invalid_pipeline", m))?;
    }
    // Exercise 6's jobs are order emails: their payload must say which one,
    // and the job's record keeps it (the dashboard counts emails per order
    // and action).
    let order_email = match exercise {
        Exercise::NewJobId => Some(
            OrderEmail::from_text(&payload)
                .map_err(|m| ApiError::bad_request("invalid_payload", m))?,
        ),
        _ => None,
    };
    let lock = match (&submission.unique_lock, &order_email) {
        (None, _) => None,
        (Some(ask), Some(email)) => Some(UniqueLock::ask(ask, email)?),
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "uniqueLock is for exercise 6's order emails (\"exercise\": 6)",
            ));
        }
    };
    let mut payload = payload;
    if let Some(lock) = &lock {
        if let Some(holder) = lock.take(&state.redis, &job_id).await? {
            // Held: the job is dropped, and the client is told all is well (as
            // a unique job's push answers), with who holds the lock.
            return Ok((
                StatusCode::OK,
                Json(json!({
                    "jobId": job_id,
                    "runId": run_id,
                    "deduplicated": true,
                    "lockedBy": holder,
                })),
            ));
        }
        payload = lock.with_lock(&payload);
    }
    let identity = order_email.as_ref().map(OrderEmail::identity);
    let job_fields: Vec<(&str, &str)> = identity
        .iter()
        .map(|identity| (job_field::ORDER_EMAIL, identity.as_str()))
        .collect();
    let enqueued = enqueue(
        &state.redis,
        Enqueue {
            job_id: &job_id,
            run_id: &run_id,
            payload: &payload,
            exercise,
            pipeline: submission.pipeline.as_deref(),
            job_fields: &job_fields,
            trace: submission.trace,
        },
    )
    .await;
    if let (Err(_), Some(lock)) = (&enqueued, &lock) {
        // Nothing was enqueued (or the outcome is unknown): no lock for it.
        lock.release(&state.redis).await;
    }
    let (submission_no, delivery_id) = enqueued?;
    // Debug, not info: at thousands of submissions a second nobody reads it, and
    // formatting and writing it cost more than the rest of the request.
    tracing::debug!(job_id = %job_id, run_id = %run_id, delivery_id = %delivery_id, submission = submission_no, "enqueued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "jobId": job_id,
            "runId": run_id,
            "deliveryId": delivery_id,
            "submission": submission_no,
        })),
    ))
}

/// Exercise 6's demonstration: the unique lock a submission asked for.
struct UniqueLock {
    key: String,
    mode: &'static str,
    ttl_ms: u64,
}

impl UniqueLock {
    /// Reads `{"mode": ..., "on": ..., "ttlMs": ...}` for `email`.
    fn ask(ask: &serde_json::Value, email: &OrderEmail) -> Result<UniqueLock, ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_field", format!("uniqueLock: {m}"));
        let text = |name: &str| ask.get(name).and_then(|v| v.as_str());
        let mode = match text("mode") {
            Some(unique_lock::UNTIL_EXECUTING) => unique_lock::UNTIL_EXECUTING,
            Some(unique_lock::UNTIL_EXECUTED) => unique_lock::UNTIL_EXECUTED,
            other => {
                return Err(bad(format!(
                    "mode must be \"{}\" or \"{}\"; got {other:?}",
                    unique_lock::UNTIL_EXECUTING,
                    unique_lock::UNTIL_EXECUTED
                )));
            }
        };
        let on = match text("on") {
            None | Some(unique_lock::ON_ORDER) => unique_lock::ON_ORDER,
            Some(unique_lock::ON_EMAIL) => unique_lock::ON_EMAIL,
            Some(other) => {
                return Err(bad(format!(
                    "on must be \"{}\" or \"{}\"; got {other:?}",
                    unique_lock::ON_ORDER,
                    unique_lock::ON_EMAIL
                )));
            }
        };
        let ttl_ms = match ask.get("ttlMs") {
            None => unique_lock::DEFAULT_TTL_MS,
            Some(v) => v
                .as_u64()
                .filter(|ms| (1..=86_400_000).contains(ms))
                .ok_or_else(|| bad(format!("ttlMs must be 1 to 86400000 ms; got {v}")))?,
        };
        Ok(UniqueLock {
            key: unique_lock::key(email, on),
            mode,
            ttl_ms,
        })
    }

    /// Takes the lock for `job_id` in one command (`SET NX GET`: the holder
    /// when it is held, nil when this call took it); `Some(holder)` when
    /// another job holds it.
    async fn take(
        &self,
        redis: &redis::aio::ConnectionManager,
        job_id: &str,
    ) -> Result<Option<String>, ApiError> {
        let mut redis = redis.clone();
        let holder: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(job_id)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(self.ttl_ms)
            .query_async(&mut redis)
            .await?;
        Ok(holder)
    }

    /// Gives the lock up (the job it was taken for was not enqueued).
    async fn release(&self, redis: &redis::aio::ConnectionManager) {
        let mut redis = redis.clone();
        let _: Result<(), _> = redis.del(&self.key).await;
    }

    /// The payload with the lock the worker releases.
    fn with_lock(&self, payload: &str) -> String {
        let mut value: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        value[unique_lock::FIELD] = json!({ "key": self.key, "mode": self.mode });
        value.to_string()
    }
}

/// One job to enqueue.
pub(crate) struct Enqueue<'a> {
    pub job_id: &'a str,
    pub run_id: &'a str,
    /// The payload, a JSON object's text.
    pub payload: &'a str,
    pub exercise: Exercise,
    pub pipeline: Option<&'a str>,
    /// More fields of the job's record (an order's caller and key).
    pub job_fields: &'a [(&'a str, &'a str)],
    /// The worker traces the job's deliveries.
    pub trace: bool,
}

/// Enqueues one delivery of a job: the job record, the run totals and the queue
/// entry in one MULTI/EXEC, so the counts and the stream never disagree. The
/// records expire `RECORD_TTL_SECS` after their last write, so old runs do not
/// fill Redis. Answers the job's submission number and the delivery id.
pub(crate) async fn enqueue(
    redis: &redis::aio::ConnectionManager,
    job: Enqueue<'_>,
) -> Result<(u64, String), ApiError> {
    let Enqueue {
        job_id,
        run_id,
        payload,
        exercise,
        pipeline,
        job_fields,
        trace,
    } = job;
    let exercise_number = exercise.number().to_string();
    let now_ms = lab_schema::now_ms();
    let job_key = keys::job(job_id);
    let run_key = keys::run(run_id);
    let submitted_at = now_ms.to_string();
    let mut fields = vec![
        (entry::JOB_ID, job_id),
        (entry::RUN_ID, run_id),
        (entry::PAYLOAD, payload),
        (entry::SUBMITTED_AT_MS, submitted_at.as_str()),
        (entry::EXERCISE, exercise_number.as_str()),
    ];
    if let Some(pipeline) = pipeline {
        fields.push((entry::PIPELINE, pipeline));
    }
    if trace {
        fields.push((entry::TRACE, "1"));
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hincr(&job_key, job_field::SUBMISSIONS, 1)
        .hset_nx(&job_key, job_field::JOB_ID, job_id)
        .ignore()
        .hset_nx(&job_key, job_field::RUN_ID, run_id)
        .ignore()
        // Queued again, even if completed before: a new delivery is on its way.
        .hset(&job_key, job_field::STATUS, JobStatus::Queued.as_str())
        .ignore();
    if !job_fields.is_empty() {
        pipe.hset_multiple(&job_key, job_fields).ignore();
    }
    pipe.sadd(keys::run_jobs(run_id), job_id)
        .ignore()
        .hincr(&run_key, run_field::SUBMISSIONS, 1)
        .ignore()
        .expire(&job_key, RECORD_TTL_SECS as i64)
        .ignore()
        .expire(&run_key, RECORD_TTL_SECS as i64)
        .ignore()
        .expire(keys::run_jobs(run_id), RECORD_TTL_SECS as i64)
        .ignore()
        // The dashboard's list of recent runs (an index: no keyspace walk), and
        // the submissions counter of `GET /metrics`.
        .zadd(recent_runs::KEY, run_id, now_ms)
        .ignore()
        .zremrangebyrank(recent_runs::KEY, 0, -(recent_runs::KEEP as isize) - 1)
        .ignore()
        .hincr(
            metrics::COUNTERS,
            metrics::series(metrics::JOBS_SUBMITTED, &[("exercise", &exercise_number)]),
            1,
        )
        .ignore()
        .xadd(keys::JOB_STREAM, "*", &fields);
    let mut redis = redis.clone();
    // A timeout here (ours or the connection's) comes after the MULTI was sent:
    // Redis may still run it, so the client is told the outcome is unknown.
    let (submission_no, delivery_id): (u64, String) =
        tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut redis))
            .await
            .map_err(|_| ApiError::SubmissionUnconfirmed)?
            .map_err(|err: redis::RedisError| {
                if err.is_timeout() {
                    ApiError::SubmissionUnconfirmed
                } else {
                    err.into()
                }
            })?;
    Ok((submission_no, delivery_id))
}

/// Checks content type and size, then parses the JSON; every refusal is a clear 4xx.
fn parse_submission(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Submission, ApiError> {
    let body = json_body(headers, body)?;
    serde_json::from_slice(&body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => "invalid_field",
            _ => "invalid_json",
        };
        ApiError::bad_request(code, format!("request body: {e}"))
    })
}

/// The body of a JSON request: content type JSON (415), at most
/// [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES) (413).
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    lab_runtime::service::require_json(content_type).map_err(|message| {
        ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    })?;
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {} bytes", crate::MAX_BODY_BYTES),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// `GET /runs/{runId}/traces`: what exercise 4's code did on each `POST /orders`
/// of the run, oldest first (the newest 200).
pub async fn get_run_traces(
    State(state): State<AppState>,
    crate::ids::RunId(run_id): crate::ids::RunId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let requests = traces(&state, &keys::request_traces(&run_id)).await?;
    Ok(Json(json!({ "runId": run_id, "requests": requests })))
}

/// `GET /jobs/{jobId}/trace`: what the handler did on each traced delivery of
/// the job, oldest first (`deliveries` is empty when the job was not traced).
pub async fn get_job_trace(
    State(state): State<AppState>,
    JobId(job_id): JobId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deliveries = traces(&state, &keys::trace(&job_id)).await?;
    Ok(Json(json!({ "jobId": job_id, "deliveries": deliveries })))
}

/// `GET /jobs/{jobId}/probe`: what exercise 5's policy answered the grader's
/// probe job (`lab_schema::probe`); 404 until the worker has written it.
pub async fn get_job_probe(
    State(state): State<AppState>,
    JobId(job_id): JobId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut redis = state.redis.clone();
    let report: Option<String> =
        tokio::time::timeout(REDIS_TIMEOUT, redis.get(lab_schema::probe::key(&job_id))).await??;
    let report = report
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::NOT_FOUND,
                "probe_not_found",
                format!("no probe report for job {job_id} (yet)"),
            )
        })?;
    Ok(Json(report))
}

/// The traces kept in the list `key`, oldest first.
async fn traces(state: &AppState, key: &str) -> Result<Vec<lab_schema::trace::Trace>, ApiError> {
    let mut redis = state.redis.clone();
    let items: Vec<String> =
        tokio::time::timeout(REDIS_TIMEOUT, redis.lrange(key, 0, -1)).await??;
    Ok(items
        .iter()
        .filter_map(|item| serde_json::from_str(item).ok())
        .collect())
}

/// `GET /jobs/{jobId}`: the job's counters as the API and the worker recorded them.
pub async fn get_job(
    State(state): State<AppState>,
    JobId(job_id): JobId,
) -> Result<Json<JobView>, ApiError> {
    let mut redis = state.redis.clone();
    let fields: std::collections::HashMap<String, String> =
        tokio::time::timeout(REDIS_TIMEOUT, redis.hgetall(keys::job(&job_id))).await??;
    if fields.is_empty() {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "job_not_found",
            format!("no job with jobId {job_id:?} was ever submitted"),
        ));
    }
    let text = |f: &str| fields.get(f).cloned().unwrap_or_default();
    let count = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    // The claim a recorded skip named: does it still exist, and does it expire?
    let claim_key = fields.get(job_field::CLAIM_KEY).cloned();
    let (claim_ttl_secs, claim_value) = match &claim_key {
        Some(key) => {
            let (ttl, value): (i64, redis::Value) = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::pipe().ttl(key).get(key).query_async(&mut redis),
            )
            .await??;
            let value = match value {
                redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                _ => None, // absent, or not a string key
            };
            (Some(ttl), value)
        }
        None => (None, None),
    };
    Ok(Json(JobView {
        job_id,
        run_id: text(job_field::RUN_ID),
        status: text(job_field::STATUS),
        submissions: count(job_field::SUBMISSIONS),
        process_attempts: count(job_field::PROCESS_ATTEMPTS),
        effects: count(job_field::EFFECTS),
        duplicate_skips: count(job_field::DUPLICATE_SKIPS),
        idempotency: fields.get(job_field::IDEMPOTENCY).cloned(),
        deliveries_done: count(job_field::DELIVERIES_DONE),
        dead_lettered: count(job_field::DEAD_LETTERED),
        claim_key,
        claim_ttl_secs,
        claim_value,
    }))
}

/// `GET /runs/{runId}`: the run's totals, the numbers the demo-runner prints.
pub async fn get_run(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Json<RunSummary>, ApiError> {
    let mut redis = state.redis.clone();
    let summary =
        tokio::time::timeout(REDIS_TIMEOUT * 5, summary::run_summary(&mut redis, &run_id))
            .await??;
    summary.map(Json).ok_or_else(|| run_not_found(&run_id))
}

/// `GET /runs/{runId}/attempts`: the run's delivery attempts still out, oldest
/// first, with their worker: what a run that does not settle is waiting for.
pub async fn get_run_attempts(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Json<RunAttempts>, ApiError> {
    let mut redis = state.redis.clone();
    let (exists, in_flight) = tokio::time::timeout(REDIS_TIMEOUT, async {
        let exists: bool = redis.exists(keys::run(&run_id)).await?;
        let in_flight = summary::attempts_in_flight(&mut redis, &run_id).await?;
        redis::RedisResult::Ok((exists, in_flight))
    })
    .await??;
    if !exists {
        return Err(run_not_found(&run_id));
    }
    Ok(Json(RunAttempts { run_id, in_flight }))
}

/// 404 `run_not_found`.
pub fn run_not_found(run_id: &str) -> ApiError {
    ApiError::client(
        StatusCode::NOT_FOUND,
        "run_not_found",
        format!("no submission ever named runId {run_id:?}"),
    )
}

/// `GET /healthz`: the process is up (says nothing about Redis).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers PING, so submissions can be accepted.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut redis = state.redis.clone();
    let _: String =
        tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut redis)).await??;
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn not_found() -> ApiError {
    ApiError::client(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see GET /healthz, GET /readyz, POST /jobs, GET /jobs/{jobId}, GET /jobs/{jobId}/trace, GET /runs/{runId}, GET /runs/{runId}/events, GET /runs/{runId}/attempts, GET /runs/{runId}/traces, GET /workers, GET /metrics, GET / (the dashboard)",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route exists but not with this HTTP method",
    )
}
