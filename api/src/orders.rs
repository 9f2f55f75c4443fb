//! `POST /orders`, exercise 4's route, and the views of the orders it created.
//! Plumbing: students need not edit this file (theirs is `idempotency.rs`).
//!
//! A request goes: caller and body checked (401/415/413/400, nothing written),
//! then `idempotency::begin` (go ahead, replay, or refuse), then the order:
//! its stock check (`simulate.slowMs`, `simulate.failFirst`), its id
//! (`ord_<n>`), and one job of exercise 4 enqueued with it. Then
//! `idempotency::finish` with the answer, or `idempotency::release` when the
//! request failed before anything was enqueued. The answer's exact bytes are
//! what `finish` is given, and what a replay sends again.
//!
//! | Redis key | holds | lifetime |
//! |---|---|---|
//! | `api:order-seq` | the number of the last order (`ord_<n>`) | forever |
//! | `api:fault:<kind>:<account>/<key>` | a fault of `simulate` already happened for this caller and key (SET NX) | [`RECORD_TTL_SECS`] |
//! | `job:<orderId>` | the order's job record, plus its caller, key and idempotency record ([`job_field`]) | [`RECORD_TTL_SECS`] |

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lab_schema::orders::{
    Created, DEFAULT_KEY_TTL_SECS, IdempotencyPolicy, LAB_RUN_ID, MAX_KEY_LEN, MAX_SLOW_MS, Order,
    OrderView, REPLAYED, RunOrders, error_code,
};
use lab_schema::{DEFAULT_RUN_ID, Exercise, RECORD_TTL_SECS, job_field, keys, now_ms, validate_id};
use redis::AsyncCommands;
use serde_json::Value;

use lab_runtime::trace;
use lab_schema::trace::Step;

use crate::idempotency::{self, Begin};
use crate::ids::{JobId, RunId};
use crate::order_context::{KeyHeader, OrderContext, OrderRequest, Refusal, Stored};
use crate::routes::{Enqueue, enqueue, run_not_found};
use crate::{AppState, REDIS_TIMEOUT, error::ApiError};

/// A refusal of `begin` as the HTTP answer: problem details (RFC 9457,
/// `application/problem+json`) whose `type` points at the published rules
/// (`GET /idempotency`, also linked as `describedby`), with the lab's `code` as
/// an extension member (the code every other error of the API carries).
fn refusal_response(refusal: Refusal, ttl: Duration) -> Response {
    let (code, message) = match refusal {
        Refusal::MissingKey => (
            error_code::KEY_MISSING,
            format!(
                "POST /orders requires an Idempotency-Key header: a unique value per order \
                     (a UUID), sent again unchanged with every retry; answers are kept {} s",
                ttl.as_secs()
            ),
        ),
        Refusal::MalformedKey(why) => (error_code::KEY_MALFORMED, why),
        Refusal::InFlight => (
            error_code::KEY_IN_FLIGHT,
            "the first request with this Idempotency-Key is still being processed; retry \
                 in a moment to get its answer"
                .to_string(),
        ),
        Refusal::Mismatch => (
            error_code::KEY_REUSED,
            "this Idempotency-Key was used for another order (another body); use a new \
                 key for a new order"
                .to_string(),
        ),
    };
    let (status, _, title) = REFUSALS
        .iter()
        .copied()
        .find(|(_, c, _)| *c == code)
        .expect("every refusal has its row in REFUSALS");
    let problem = serde_json::json!({
        "type": lab_schema::orders::problem_type(code),
        "title": title,
        "status": status.as_u16(),
        "detail": message,
        "code": code,
    });
    let mut response = (status, problem.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(lab_schema::orders::PROBLEM_JSON),
    );
    headers.insert(
        header::LINK,
        HeaderValue::from_static("</idempotency>; rel=\"describedby\""),
    );
    if status == StatusCode::CONFLICT {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The refusals: their status, code and title (the same for every occurrence).
const REFUSALS: [(StatusCode, &str, &str); 4] = [
    (
        StatusCode::BAD_REQUEST,
        error_code::KEY_MISSING,
        "Idempotency-Key required",
    ),
    (
        StatusCode::BAD_REQUEST,
        error_code::KEY_MALFORMED,
        "Idempotency-Key malformed",
    ),
    (
        StatusCode::CONFLICT,
        error_code::KEY_IN_FLIGHT,
        "Idempotency-Key in flight",
    ),
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        error_code::KEY_REUSED,
        "Idempotency-Key reused for another request",
    ),
];

/// `POST /orders`: see the module's documentation.
pub async fn create_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&headers)?;
    let run_id = match single_header(&headers, LAB_RUN_ID)? {
        Some(run_id) => {
            validate_id("the Lab-Run-Id header", run_id)
                .map_err(|m| ApiError::bad_request(error_code::INVALID_RUN_ID, m))?;
            run_id.to_string()
        }
        None => DEFAULT_RUN_ID.to_string(),
    };
    let raw_body = crate::routes::json_body(&headers, body)?;
    let (value, order) = parse_order(&raw_body)?;
    let key = KeyHeader::of(&headers);
    let recorder = trace::Recorder::start(
        &format!("{caller} / {}", key.valid().unwrap_or("(no valid key)")),
        "api",
        &format!("{}-{}", std::process::id(), state.started_ms),
        1,
    );
    let mut ctx = OrderContext::new(state.redis.clone(), state.key_ttl, recorder.clone());
    let request = OrderRequest {
        caller: &caller,
        key,
        body: &value,
        raw_body: &raw_body,
    };
    let placed = place_order(&state, &mut ctx, &run_id, &request, &order).await;
    trace::step(
        Some(&recorder),
        Step::Returned,
        match &placed {
            Ok(response) => response.status().to_string(),
            Err(err) => format!("error: {err:?}"),
        },
    );
    let mut pipe = redis::pipe();
    trace::write_request(&mut pipe, &run_id, &trace::finish(&recorder));
    if let Err(err) = pipe.query_async::<()>(ctx.redis.untraced()).await {
        tracing::warn!(%run_id, error = %err, "could not write the request's trace");
    }
    placed
}

/// The trace of a student function that returned (`detail`: which, and what),
/// with the keys its code wrote as they stand now.
async fn returned_from(ctx: &mut OrderContext, detail: &str) {
    let recorder = ctx.redis.recorder().cloned();
    trace::snapshot(
        ctx.redis.untraced(),
        recorder.as_ref(),
        Step::Called,
        detail,
    )
    .await;
}

/// What `begin` returned, for the trace.
fn begun_text(begun: &Begin) -> String {
    match begun {
        Begin::Proceed(held) => format!("Proceed(redis_key: {:?})", held.redis_key),
        Begin::Replay(stored) => format!("Replay({})", stored.status),
        Begin::Refuse(refusal) => format!("Refuse({refusal:?})"),
    }
}

/// A request whose caller and body are valid: `begin`, the order, `finish` or
/// `release` (each traced in `ctx`).
async fn place_order(
    state: &AppState,
    ctx: &mut OrderContext,
    run_id: &str,
    request: &OrderRequest<'_>,
    order: &Order,
) -> Result<Response, ApiError> {
    let caller = request.caller;
    let key = &request.key;
    let ttl = state.key_ttl;
    let begun = tokio::time::timeout(REDIS_TIMEOUT, idempotency::begin(ctx, request)).await??;
    returned_from(ctx, &format!("begin -> {}", begun_text(&begun))).await;
    let held = match begun {
        Begin::Proceed(held) => held,
        Begin::Replay(stored) => {
            tracing::info!(%caller, key = ?key.valid(), status = stored.status, "order answer replayed");
            return Ok(answer(&stored, true));
        }
        Begin::Refuse(refusal) => {
            tracing::info!(%caller, key = ?key.valid(), ?refusal, "order refused");
            return Ok(refusal_response(refusal, ttl));
        }
    };

    // The stock check: slow on request, failing once on request.
    let simulate = order.simulate.clone().unwrap_or_default();
    if simulate.slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(simulate.slow_ms)).await;
    }
    let fault_key = |kind: &str| {
        format!(
            "api:fault:{kind}:{caller}/{}",
            key.valid().unwrap_or_default()
        )
    };
    if simulate.fail_first && first_time(ctx.redis.untraced(), &fault_key("fail")).await? {
        tokio::time::timeout(REDIS_TIMEOUT, idempotency::release(ctx, held)).await??;
        returned_from(ctx, "release -> Ok").await;
        tracing::info!(%caller, key = ?key.valid(), "order failed before enqueue (simulate.failFirst)");
        return Err(ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            error_code::STOCK_UNAVAILABLE,
            "the stock check failed (simulate.failFirst); nothing was ordered, retry",
        ));
    }

    let created = match place(ctx.redis.untraced(), caller, run_id, order, key, &held).await {
        Ok(created) => created,
        Err(err) => {
            // Nothing was enqueued when the order's number could not be taken;
            // an unconfirmed enqueue keeps its reservation (it may have happened).
            if matches!(err, ApiError::RedisUnavailable(_)) {
                let _ = tokio::time::timeout(REDIS_TIMEOUT, idempotency::release(ctx, held)).await;
            }
            return Err(err);
        }
    };
    let stored = Stored {
        status: StatusCode::CREATED.as_u16(),
        body: serde_json::to_string(&created).expect("an order serializes"),
    };
    let finished =
        tokio::time::timeout(REDIS_TIMEOUT, idempotency::finish(ctx, held, &stored)).await;
    let finished_text = match &finished {
        Ok(Ok(())) => "finish -> Ok".to_string(),
        Ok(Err(err)) => format!("finish -> Err({err:#})"),
        Err(_) => "finish -> (timed out)".to_string(),
    };
    returned_from(ctx, &finished_text).await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(order_id = %created.order_id, %err, "the answer could not be stored")
        }
        Err(_) => tracing::warn!(order_id = %created.order_id, "the answer was not stored in time"),
    }
    tracing::info!(order_id = %created.order_id, %caller, key = ?key.valid(), %run_id, "order created");
    if simulate.drop_answer && first_time(ctx.redis.untraced(), &fault_key("drop")).await? {
        tracing::info!(order_id = %created.order_id, "the answer is dropped (simulate.dropAnswer)");
        return Ok(lab_runtime::dropped::dropped_answer());
    }
    Ok(answer(&stored, false))
}

/// Takes the order's number and enqueues it as a job of exercise 4.
async fn place(
    redis: &mut redis::aio::ConnectionManager,
    caller: &str,
    run_id: &str,
    order: &Order,
    key: &KeyHeader,
    held: &idempotency::Held,
) -> Result<Created, ApiError> {
    let n: u64 = tokio::time::timeout(REDIS_TIMEOUT, redis.incr(ORDER_SEQ, 1)).await??;
    let created = Created {
        order_id: format!("ord_{n}"),
        run_id: run_id.to_string(),
        status: "accepted".to_string(),
        item: order.item.clone(),
        quantity: order.quantity,
        created_at_ms: now_ms(),
    };
    let payload = serde_json::to_string(&Order {
        simulate: None,
        ..order.clone()
    })
    .expect("an order serializes");
    let mut fields = vec![(job_field::ACCOUNT, caller)];
    if let Some(key) = key.valid() {
        fields.push((job_field::ORDER_KEY, key));
    }
    if let Some(record) = &held.redis_key {
        fields.push((job_field::ORDER_RECORD, record.as_str()));
    }
    enqueue(
        redis,
        Enqueue {
            job_id: &created.order_id,
            run_id,
            payload: &payload,
            exercise: Exercise::RetriedPost,
            pipeline: None,
            job_fields: &fields,
            trace: false,
        },
    )
    .await?;
    Ok(created)
}

/// The number of the last order.
const ORDER_SEQ: &str = "api:order-seq";

/// Whether this is the first time `marker` is set (a fault applies once).
async fn first_time(
    redis: &mut redis::aio::ConnectionManager,
    marker: &str,
) -> Result<bool, ApiError> {
    let set: Option<String> = tokio::time::timeout(
        REDIS_TIMEOUT,
        redis::cmd("SET")
            .arg(marker)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(RECORD_TTL_SECS)
            .query_async(redis),
    )
    .await??;
    Ok(set.is_some())
}

/// A stored answer as an HTTP response.
fn answer(stored: &Stored, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// `Authorization: Bearer <account>`; else 401.
fn caller(headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthenticated =
        |m: String| ApiError::client(StatusCode::UNAUTHORIZED, error_code::UNAUTHENTICATED, m);
    let value = single_header(headers, header::AUTHORIZATION.as_str())
        .map_err(|_| unauthenticated("the Authorization header is sent more than once".into()))?
        .ok_or_else(|| {
            unauthenticated(
                "POST /orders needs the caller: Authorization: Bearer <account> (any account name)"
                    .into(),
            )
        })?;
    lab_schema::provider::bearer_account(value)
        .map(str::to_string)
        .map_err(unauthenticated)
}

/// The one value of header `name`, if any; 400 when it is sent twice or is not visible ASCII.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    lab_runtime::headers::single_header(headers, name)
        .map_err(|m| ApiError::bad_request("invalid_header", m))
}

/// The body as an order: a JSON object without repeated keys, valid by [`Order`].
fn parse_order(raw: &[u8]) -> Result<(Value, Order), ApiError> {
    let invalid = |m: String| ApiError::bad_request(error_code::INVALID_ORDER, m);
    let value = lab_runtime::fingerprint::parse_strict(raw)
        .map_err(|e| invalid(format!("request body: {e}")))?;
    if !value.is_object() {
        return Err(invalid("an order is a JSON object".into()));
    }
    let order: Order =
        serde_json::from_value(value.clone()).map_err(|e| invalid(format!("request body: {e}")))?;
    let item_len = order.item.chars().count();
    if !(1..=64).contains(&item_len) {
        return Err(invalid(format!(
            "item must be 1 to 64 characters; got {item_len}"
        )));
    }
    if !(1..=100).contains(&order.quantity) {
        return Err(invalid(format!(
            "quantity must be 1 to 100; got {}",
            order.quantity
        )));
    }
    if let Some(simulate) = &order.simulate
        && simulate.slow_ms > MAX_SLOW_MS
    {
        return Err(invalid(format!(
            "simulate.slowMs must be at most {MAX_SLOW_MS}; got {}",
            simulate.slow_ms
        )));
    }
    Ok((value, order))
}

/// `GET /orders/{orderId}`.
pub async fn get_order(
    State(state): State<AppState>,
    JobId(order_id): JobId,
) -> Result<Json<OrderView>, ApiError> {
    let mut redis = state.redis.clone();
    let mut views = tokio::time::timeout(
        REDIS_TIMEOUT,
        views(&mut redis, std::slice::from_ref(&order_id)),
    )
    .await??;
    views.pop().map(Json).ok_or_else(|| {
        ApiError::client(
            StatusCode::NOT_FOUND,
            "order_not_found",
            format!("no order {order_id:?} was created (POST /orders answers its orderId)"),
        )
    })
}

/// `GET /runs/{runId}/orders`: the run's orders, oldest first.
pub async fn get_run_orders(
    State(state): State<AppState>,
    RunId(run_id): RunId,
) -> Result<Json<RunOrders>, ApiError> {
    let mut redis = state.redis.clone();
    let orders = tokio::time::timeout(REDIS_TIMEOUT * 5, async {
        let exists: bool = redis.exists(keys::run(&run_id)).await?;
        let jobs: Vec<String> = redis.smembers(keys::run_jobs(&run_id)).await?;
        let orders = views(&mut redis, &jobs).await?;
        redis::RedisResult::Ok(exists.then_some(orders))
    })
    .await??;
    let mut orders = orders.ok_or_else(|| run_not_found(&run_id))?;
    orders.sort_by_key(|o| order_number(&o.order_id));
    Ok(Json(RunOrders { run_id, orders }))
}

/// `ord_12` -> 12.
fn order_number(order_id: &str) -> u64 {
    order_id
        .strip_prefix("ord_")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// The orders among `jobs` (jobs without a caller are not orders), with the
/// TTL of the idempotency record each named.
async fn views(
    redis: &mut redis::aio::ConnectionManager,
    jobs: &[String],
) -> redis::RedisResult<Vec<OrderView>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for job in jobs {
        pipe.cmd("HMGET").arg(keys::job(job)).arg(&[
            job_field::ACCOUNT,
            job_field::RUN_ID,
            job_field::ORDER_KEY,
            job_field::STATUS,
            job_field::ORDER_RECORD,
        ]);
    }
    type Fields = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let found: Vec<Fields> = pipe.query_async(redis).await?;
    let mut views: Vec<OrderView> = jobs
        .iter()
        .zip(found)
        .filter_map(|(job, (account, run_id, key, status, record))| {
            Some(OrderView {
                order_id: job.clone(),
                account: account?,
                run_id: run_id.unwrap_or_default(),
                idempotency_key: key,
                status: status.unwrap_or_default(),
                idempotency_record: record,
                idempotency_record_ttl_secs: None,
            })
        })
        .collect();
    let mut pipe = redis::pipe();
    let named: Vec<usize> = (0..views.len())
        .filter(|&i| views[i].idempotency_record.is_some())
        .collect();
    for &i in &named {
        pipe.ttl(views[i].idempotency_record.as_deref().unwrap_or_default());
    }
    if !named.is_empty() {
        let ttls: Vec<i64> = pipe.query_async(redis).await?;
        for (i, ttl) in named.into_iter().zip(ttls) {
            views[i].idempotency_record_ttl_secs = Some(ttl);
        }
    }
    Ok(views)
}

/// `GET /idempotency`: the key policy, as the IETF draft asks the server to publish it.
pub async fn get_policy(State(state): State<AppState>) -> Json<IdempotencyPolicy> {
    Json(IdempotencyPolicy {
        header: "Idempotency-Key".to_string(),
        ttl_secs: state.key_ttl.as_secs(),
        rules: vec![
            "POST /orders requires an Idempotency-Key: a unique value per order (a UUID), sent again unchanged with every retry of that order.".into(),
            format!("A key is 1 to {MAX_KEY_LEN} visible ASCII characters; the quoted form of the IETF draft (\"abc\") is accepted."),
            "Keys belong to the caller (Authorization: Bearer <account>): two callers may use the same key without ever seeing each other's answers.".into(),
            "A retry with the same key and the same order (the same JSON, whatever the order of its keys and its spaces) gets the first answer again, with Idempotent-Replayed: true, and no new order.".into(),
            "The same key with another order: 422 idempotency_key_reused. While the first request with a key is in flight: 409 idempotency_key_in_flight, Retry-After: 1.".into(),
            format!("An answer is kept {} s after its request finished; a request that failed before the order was enqueued keeps nothing, so its retry runs.", state.key_ttl.as_secs()),
            "A refusal is problem details (RFC 9457, application/problem+json): its type is one of the refusals below, its code the same as the type's fragment.".into(),
        ],
        refusals: REFUSALS
            .iter()
            .map(|(status, code, title)| lab_schema::orders::RefusalType {
                type_: lab_schema::orders::problem_type(code),
                status: status.as_u16(),
                code: code.to_string(),
                title: title.to_string(),
            })
            .collect(),
    })
}

/// The default of `--order-key-ttl-secs`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(DEFAULT_KEY_TTL_SECS);
