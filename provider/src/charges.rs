//! `POST /v1/charges`, step by step. Students need not edit this file.
//!
//! 1. Validate (`validate.rs`): a refusal is a 4xx and records nothing.
//! 2. The account's rate limit: over its budget of requests per second, 429
//!    `rate_limited`; an account that keeps sending through its 429s is banned
//!    for a while (429 `account_banned` to every request), as real gateways do.
//!    Then the instructor's outage: 503 `provider_unavailable` with `Retry-After`.
//! 3. With an `Idempotency-Key`: reserve it atomically (one Lua script), or
//!    answer 422 (another body), 409 (still running) or the stored answer again.
//! 4. Execute: the simulated delays and faults, then the charge, written with
//!    its effect, its ledger entry, its stored answer and its log entry in ONE
//!    MULTI/EXEC.
//! 5. Answer, or for `dropAnswer` close the connection without an answer.
//!
//! Every request that passed validation gets one entry in its run's request log.
//! Steps 2 to 5 run in a task of their own: a caller that hangs up (its client
//! timed out) does not cancel a charge half way, as a real gateway finishes what
//! it started. That is the window an idempotency key exists for.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lab_runtime::record::{self, EventOf};
use lab_schema::provider::{
    DECLINED_CUSTOMER, IDEMPOTENT_REPLAYED, LoggedRequest, RequestOutcome, error_code,
};
use lab_schema::{RECORD_TTL_SECS, keys, now_ms};
use redis::aio::ConnectionManager;
use serde_json::json;

use crate::error::{ProviderError, error_body};
use crate::store::{self, Rate, Reservation, duration_ms, timed};
use crate::validate::{self, ChargeRequest};
use crate::{AppState, REDIS_TIMEOUT};
use lab_runtime::dropped;

/// The consumer name the provider's effects and events carry.
pub const CONSUMER: &str = "provider";

/// `POST /v1/charges`.
pub async fn create_charge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match validate::charge_request(&headers, body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    match tokio::spawn(process(state, request)).await {
        Ok(Ok(Reply::Json(reply))) => reply.into_response(),
        Ok(Ok(Reply::Dropped)) => dropped::dropped_answer(),
        Ok(Err(err)) => err.into_response(),
        Err(join) => ProviderError::Internal(format!("charge task: {join}")).into_response(),
    }
}

/// What a charge request is answered with.
enum Reply {
    Json(JsonReply),
    /// The connection is closed without an answer.
    Dropped,
}

/// A JSON answer: the exact body text, so a stored answer is served byte for byte.
struct JsonReply {
    status: StatusCode,
    body: String,
    replayed: bool,
    retry_after_secs: Option<u64>,
}

impl JsonReply {
    fn new(status: StatusCode, body: String) -> JsonReply {
        JsonReply {
            status,
            body,
            replayed: false,
            retry_after_secs: None,
        }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> JsonReply {
        JsonReply::new(status, error_body(code, message).to_string())
    }
}

impl IntoResponse for JsonReply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Steps 2 to 5 (the request is valid).
async fn process(state: AppState, req: ChargeRequest) -> Result<Reply, ProviderError> {
    let mut redis = state.redis.clone();
    if let Some(reply) = rate_limit(&state, &mut redis, &req).await? {
        return Ok(Reply::Json(reply));
    }
    let (outage_until_ms, instructor_slow_ms) = store::read_faults(&mut redis).await?;
    let now = now_ms();
    if outage_until_ms > now {
        let secs_left = (outage_until_ms - now).div_ceil(1000).max(1);
        let line = format!("503: provider outage, {secs_left} s left (nothing charged)");
        log_request(
            &mut redis,
            &req,
            RequestOutcome::Unavailable,
            503,
            None,
            &line,
        )
        .await?;
        let mut reply = JsonReply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            error_code::PROVIDER_UNAVAILABLE,
            &format!(
                "the provider is down (the instructor's outage) for {secs_left} more seconds; \
                 nothing was charged; retry after that"
            ),
        );
        reply.retry_after_secs = Some(secs_left);
        return Ok(Reply::Json(reply));
    }

    let token = new_token();
    let key = req
        .idempotency_key
        .as_deref()
        .map(|k| store::idem(&req.account, k));
    if let Some(key) = &key {
        // A live request keeps its key for its whole planned delay; one that
        // never finishes (the provider was killed) stops blocking it
        // `running_timeout` after that.
        let sim = req.simulate;
        let planned_ms = instructor_slow_ms + sim.slow_ms + sim.first_request_ms;
        let reservation_ms = duration_ms(state.config.running_timeout) + planned_ms;
        let found = store::reserve(
            &mut redis,
            &state.scripts,
            key,
            &req.fingerprint,
            &token,
            reservation_ms,
        )
        .await?;
        if let Some(reply) = answer_from_key(&mut redis, &req, found).await? {
            return Ok(Reply::Json(reply));
        }
    }

    let result = execute(
        &state,
        &mut redis,
        &req,
        key.as_deref(),
        &token,
        instructor_slow_ms,
    )
    .await;
    if result.is_err()
        && let Some(key) = &key
    {
        // Nothing was stored under the key (or the charge's MULTI ran, and then
        // the reservation is no longer ours to release): free it, so a retry is
        // not refused with 409 until the reservation expires.
        let _ = store::release(&mut redis, &state.scripts, key, &token).await;
    }
    result
}

/// Step 2: counts the request against its account's budget; `Some`: the 429
/// it is answered with instead.
async fn rate_limit(
    state: &AppState,
    redis: &mut ConnectionManager,
    req: &ChargeRequest,
) -> Result<Option<JsonReply>, ProviderError> {
    let limits = state.config.limits;
    if limits.per_sec == 0 {
        return Ok(None);
    }
    let budget = limits.per_sec;
    let account = &req.account;
    let (outcome, retry_ms, code, message) =
        match store::count_request(redis, &state.scripts, account, limits, now_ms()).await? {
            Rate::Ok => return Ok(None),
            Rate::Limited { retry_ms } => (
                RequestOutcome::RateLimited,
                retry_ms,
                error_code::RATE_LIMITED,
                format!(
                    "account {account} is over its budget of {budget} requests per second; \
                     nothing was charged; retry after the Retry-After seconds, and slow down: \
                     an account that keeps sending through its 429s is banned"
                ),
            ),
            Rate::Banned { retry_ms, now } => (
                RequestOutcome::Banned,
                retry_ms,
                error_code::ACCOUNT_BANNED,
                format!(
                    "account {account} {} for sending through its 429s (as many requests \
                     refused in one second as its budget of {budget}); every request is refused \
                     until the ban ends; nothing was charged",
                    if now {
                        "is banned from now"
                    } else {
                        "is banned"
                    }
                ),
            ),
        };
    let secs = retry_ms.div_ceil(1000).max(1);
    let line = format!("429 {code}: retry after {secs} s (nothing charged)");
    log_request(redis, req, outcome, 429, None, &line).await?;
    let mut reply = JsonReply::error(StatusCode::TOO_MANY_REQUESTS, code, &message);
    reply.retry_after_secs = Some(secs);
    Ok(Some(reply))
}

/// The key was not free: 422, 409, or the stored answer again. `None`: it was free.
async fn answer_from_key(
    redis: &mut ConnectionManager,
    req: &ChargeRequest,
    found: Reservation,
) -> Result<Option<JsonReply>, ProviderError> {
    let key = req.idempotency_key.as_deref().unwrap_or_default();
    let reply = match found {
        Reservation::Reserved => return Ok(None),
        Reservation::Reused => {
            let line = format!("422: key {key} reused with another body (nothing charged)");
            log_request(redis, req, RequestOutcome::KeyReused, 422, None, &line).await?;
            JsonReply::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                error_code::IDEMPOTENCY_KEY_REUSED,
                &format!(
                    "the Idempotency-Key {key:?} was already used with another request body; \
                     a key names one request: use a new key for a new request"
                ),
            )
        }
        Reservation::Running => {
            let line = format!("409: key {key} still in flight");
            log_request(redis, req, RequestOutcome::InFlight, 409, None, &line).await?;
            JsonReply::error(
                StatusCode::CONFLICT,
                error_code::IDEMPOTENCY_KEY_IN_USE,
                &format!(
                    "the first request with the Idempotency-Key {key:?} is still being \
                     processed; retry later to get its answer"
                ),
            )
        }
        Reservation::Done {
            status,
            body,
            charge_id,
        } => {
            let status = StatusCode::from_u16(status).map_err(|_| {
                ProviderError::Internal(format!("key {key} holds the status {status}"))
            })?;
            let line = match &charge_id {
                Some(id) => format!("replayed charge {id} for key {key} (no new charge)"),
                None => format!(
                    "replayed the {} answer for key {key} (no new charge)",
                    status.as_u16()
                ),
            };
            log_request(
                redis,
                req,
                RequestOutcome::Replayed,
                status.as_u16(),
                charge_id,
                &line,
            )
            .await?;
            let mut reply = JsonReply::new(status, body);
            reply.replayed = true;
            reply
        }
    };
    Ok(Some(reply))
}

/// Step 4: the delays, the faults, then the charge (or the decline).
async fn execute(
    state: &AppState,
    redis: &mut ConnectionManager,
    req: &ChargeRequest,
    key: Option<&str>,
    token: &str,
    instructor_slow_ms: u64,
) -> Result<Reply, ProviderError> {
    let sim = req.simulate;
    let lab = &req.lab;
    let first_execution: Option<String> = timed(
        redis::cmd("SET")
            .arg(store::exec_marker(&lab.run_id, &lab.job_id))
            .arg(token)
            .arg("NX")
            .arg("EX")
            .arg(RECORD_TTL_SECS)
            .query_async(redis),
    )
    .await?;
    let first_execution = first_execution.is_some();
    let delay_ms = instructor_slow_ms
        + sim.slow_ms
        + if first_execution {
            sim.first_request_ms
        } else {
            0
        };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let key_text = req.idempotency_key.as_deref();
    let for_key = match key_text {
        Some(k) => format!("for key {k}"),
        None => "without a key".to_string(),
    };

    // The faults that fail the first execution before any charge: the key is
    // released, so the client's retry with it runs.
    if first_execution && (sim.drop_before_charge || sim.fail_first) {
        let released = match key {
            Some(key) => store::release(redis, &state.scripts, key, token).await?,
            None => false,
        };
        let released = if released { ", key released" } else { "" };
        if sim.drop_before_charge {
            let line = format!(
                "request of job {} {for_key} LOST on purpose (dropBeforeCharge): the connection \
                 closes with no answer, nothing charged{released}",
                lab.job_id,
            );
            log_request(redis, req, RequestOutcome::DroppedUncharged, 0, None, &line).await?;
            return Ok(Reply::Dropped);
        }
        let line = format!(
            "503: simulated upstream timeout on the first request of job {} {for_key} \
             (nothing charged{released})",
            lab.job_id,
        );
        log_request(redis, req, RequestOutcome::Unavailable, 503, None, &line).await?;
        return Ok(Reply::Json(JsonReply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            error_code::UPSTREAM_TIMEOUT,
            "the card network did not answer in time (simulated: failFirst); nothing was \
             charged; retry with the same Idempotency-Key",
        )));
    }

    let key_ttl_ms = duration_ms(state.config.key_ttl);
    if req.is_declined() {
        let body = error_body(
            error_code::CARD_DECLINED,
            &format!("the card of customer {DECLINED_CUSTOMER} was declined; nothing was charged"),
        )
        .to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(key) = key {
            store::store_answer(
                &mut pipe,
                key,
                &req.fingerprint,
                402,
                &body,
                None,
                key_ttl_ms,
            );
        }
        let line = format!(
            "402: card of {} declined {for_key} ({}nothing charged)",
            req.customer,
            if key.is_some() { "answer stored, " } else { "" }
        );
        let logged = logged_request(req, RequestOutcome::Declined, 402, None);
        store::push_request_log(&mut pipe, &lab.run_id, &logged);
        timed(pipe.query_async::<()>(redis)).await?;
        log_line(req, &line);
        return Ok(Reply::Json(JsonReply::new(
            StatusCode::PAYMENT_REQUIRED,
            body,
        )));
    }

    // The charge's number, and whether it is the job's first charge.
    let (number, first_charge): (u64, Option<String>) = timed(
        redis::pipe()
            .incr(store::CHARGE_SEQ, 1)
            .cmd("SET")
            .arg(store::charged_marker(&lab.run_id, &lab.job_id))
            .arg(token)
            .arg("NX")
            .arg("EX")
            .arg(RECORD_TTL_SECS)
            .query_async(redis),
    )
    .await?;
    let charge_id = format!("ch_{number}");
    let drop_answer = sim.drop_answer && first_charge.is_some();
    let body = json!({
        "id": charge_id,
        "object": "charge",
        "status": "succeeded",
        "amountCents": req.amount_cents,
        "currency": req.currency,
        "customer": req.customer,
        "jobId": lab.job_id,
        "idempotencyKey": key_text,
    })
    .to_string();
    let outcome = if drop_answer {
        RequestOutcome::ChargedAnswerDropped
    } else {
        RequestOutcome::Charged
    };

    // ONE MULTI/EXEC: the lab's effect, the provider's ledger, the stored
    // answer and the log entry are all written, or none.
    let mut pipe = redis::pipe();
    pipe.atomic();
    record::record_effect(
        &mut pipe,
        EventOf {
            run_id: &lab.run_id,
            job_id: &lab.job_id,
            delivery_id: &lab.delivery_id,
            consumer: CONSUMER,
        },
        key_text.unwrap_or("no key"),
    );
    // The job's record, the ledger and the event log expire like the rest of
    // the run's records, even when only the provider wrote them.
    pipe.expire(keys::job(&lab.job_id), RECORD_TTL_SECS as i64)
        .ignore()
        .expire(keys::ledger(&lab.run_id), RECORD_TTL_SECS as i64)
        .ignore()
        .expire(
            keys::events(&lab.run_id),
            lab_schema::event_log::TTL_SECS as i64,
        )
        .ignore();
    store::push_ledger(
        &mut pipe,
        &store::LedgerEntry {
            charge_id: &charge_id,
            account: &req.account,
            idempotency_key: key_text.unwrap_or(""),
            run_id: &lab.run_id,
            job_id: &lab.job_id,
            pipeline: &lab.pipeline,
            delivery_id: &lab.delivery_id,
            amount_cents: req.amount_cents,
            currency: &req.currency,
            customer: &req.customer,
        },
    );
    if let Some(key) = key {
        store::store_answer(
            &mut pipe,
            key,
            &req.fingerprint,
            201,
            &body,
            Some(&charge_id),
            key_ttl_ms,
        );
    }
    let logged = logged_request(req, outcome, 201, Some(charge_id.clone()));
    store::push_request_log(&mut pipe, &lab.run_id, &logged);
    // A timeout or a lost connection here comes after the MULTI was sent: Redis
    // may still run it, so the caller is told the outcome is unknown.
    let (effects,): (u64,) = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(redis))
        .await
        .map_err(|_| ProviderError::ChargeUnconfirmed)?
        .map_err(|err: redis::RedisError| {
            if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() {
                ProviderError::ChargeUnconfirmed
            } else {
                err.into()
            }
        })?;
    let mut line = format!(
        "new charge {charge_id}: {} {} cents to {} {for_key} (job {} effects: {effects})",
        req.amount_cents, req.currency, req.customer, lab.job_id
    );
    if drop_answer {
        line.push_str(
            "; answer DROPPED on purpose (dropAnswer): the caller sees a closed connection",
        );
    }
    log_line(req, &line);
    if drop_answer {
        Ok(Reply::Dropped)
    } else {
        Ok(Reply::Json(JsonReply::new(StatusCode::CREATED, body)))
    }
}

/// The request log entry of `req`.
fn logged_request(
    req: &ChargeRequest,
    outcome: RequestOutcome,
    status: u16,
    charge_id: Option<String>,
) -> LoggedRequest {
    LoggedRequest {
        outcome,
        status,
        job_id: req.lab.job_id.clone(),
        pipeline: req.lab.pipeline.clone(),
        delivery_id: req.lab.delivery_id.clone(),
        idempotency_key: req.idempotency_key.clone(),
        fingerprint: req.fingerprint[..12].to_string(),
        charge_id,
        at_ms: now_ms(),
    }
}

/// Appends `req` to its run's request log (its own round trip), then logs `line`.
async fn log_request(
    redis: &mut ConnectionManager,
    req: &ChargeRequest,
    outcome: RequestOutcome,
    status: u16,
    charge_id: Option<String>,
    line: &str,
) -> Result<(), ProviderError> {
    let mut pipe = redis::pipe();
    store::push_request_log(
        &mut pipe,
        &req.lab.run_id,
        &logged_request(req, outcome, status, charge_id),
    );
    timed(pipe.query_async::<()>(redis)).await?;
    log_line(req, line);
    Ok(())
}

/// The request's one readable log line.
fn log_line(req: &ChargeRequest, line: &str) {
    let lab = &req.lab;
    tracing::info!(
        run_id = %lab.run_id,
        job_id = %lab.job_id,
        delivery_id = %lab.delivery_id,
        pipeline = %lab.pipeline,
        account = %req.account,
        "{line}"
    );
}

/// A token unique to this request across processes: who holds a reservation.
fn new_token() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded at random per process: replicas never share it.
    let process = *PROCESS.get_or_init(|| RandomState::new().hash_one(now_ms()));
    format!("{process:016x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
