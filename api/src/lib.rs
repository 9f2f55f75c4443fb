//! The lab's HTTP API (axum). Students need not edit this crate.
//!
//! `POST /jobs` is correct on purpose: it validates, then enqueues EVERY
//! submission, duplicates included. Deduplication is the worker's job (exercises
//! 1 to 3). `POST /orders` assigns each order its id; its `Idempotency-Key` is
//! exercise 4, in `idempotency.rs`.
//!
//! # Layout
//! - [`app`]: the routes; [`serve`]: binds them to a listener until shutdown.
//! - `routes.rs`: one handler per route (and the enqueueing every job goes through).
//! - `orders.rs`: `POST /orders` (exercise 4), `GET /orders/{orderId}`, `GET /runs/{runId}/orders`, `GET /idempotency`.
//! - `idempotency.rs`: EXERCISE 4's student file, the `Idempotency-Key` of `POST /orders`.
//! - `order_context.rs`: what `idempotency.rs` is given and answers (`OrderContext`, `OrderRequest`, `Refusal`, `Stored`).
//! - `ids.rs`: the path ids (`{jobId}`, `{runId}`) as extractors that validate them.
//! - `summary.rs`: the run summary (drained, settled, lost effects) computed in one place.
//! - `events.rs`: `GET /runs/{runId}/events`, the run's event log written by the workers.
//! - `workers.rs`: `GET /workers`, the running workers and the exercise code each runs.
//! - `dashboard.rs`: the live dashboard page (`/`, `/runs/{runId}` in a browser) and its SSE feed.
//! - `metrics.rs`: `GET /metrics`, the Prometheus text format read from Redis.
//! - `error.rs`: the JSON error body `{"error": {"code", "message"}}` of every failure.

mod dashboard;
mod error;
mod events;
pub mod idempotency;
mod ids;
mod metrics;
pub mod order_context;
pub mod orders;
mod routes;
mod summary;
mod workers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use redis::aio::ConnectionManager;

pub use error::ApiError;

/// The exercise file built into this API (exercise 4's) and its fingerprint.
pub fn code() -> (&'static str, String) {
    (
        lab_schema::Exercise::RetriedPost.info().student_file,
        lab_schema::code::fingerprint(include_bytes!("idempotency.rs")),
    )
}

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long any request waits for Redis before answering 503.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What every handler shares: a Redis connection that reconnects by itself,
/// and how long `POST /orders` keeps an answer for its `Idempotency-Key`.
#[derive(Clone)]
pub struct AppState {
    pub redis: ConnectionManager,
    pub key_ttl: Duration,
    /// When this API started (Unix ms), as `GET /workers` reports it.
    pub started_ms: u64,
    /// The class report `GET /class-report` serves (`CLASS_REPORT_FILE`).
    pub class_report: std::path::PathBuf,
}

impl AppState {
    /// Prepares a connection to `redis_url` without waiting for Redis: the API
    /// starts (and answers 503) even while Redis is still coming up.
    pub fn new(redis_url: &str) -> anyhow::Result<AppState> {
        let redis = lab_runtime::service::redis_connection(redis_url, REDIS_TIMEOUT)?;
        Ok(AppState {
            redis,
            key_ttl: orders::DEFAULT_TTL,
            started_ms: lab_schema::now_ms(),
            class_report: std::env::var_os("CLASS_REPORT_FILE")
                .map(Into::into)
                .unwrap_or_else(|| dashboard::CLASS_REPORT_FILE.into()),
        })
    }
}

/// All routes. Unknown routes and methods get the same JSON errors as the rest.
pub fn app(state: AppState) -> Router {
    let dashboard = dashboard::routes(&state);
    Router::new()
        .route("/jobs", post(routes::submit_job))
        .route("/jobs/{job_id}", get(routes::get_job))
        .route("/jobs/{job_id}/trace", get(routes::get_job_trace))
        .route("/jobs/{job_id}/probe", get(routes::get_job_probe))
        .route(lab_schema::orders::ORDERS_PATH, post(orders::create_order))
        .route("/orders/{order_id}", get(orders::get_order))
        .route("/runs/{run_id}/orders", get(orders::get_run_orders))
        .route(lab_schema::orders::POLICY_PATH, get(orders::get_policy))
        .route("/runs/{run_id}", get(dashboard::run_page_or_json))
        .route("/runs/{run_id}/events", get(events::get_run_events))
        .route("/runs/{run_id}/attempts", get(routes::get_run_attempts))
        .route("/runs/{run_id}/traces", get(routes::get_run_traces))
        .route("/workers", get(workers::get_workers))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(metrics::get_metrics))
        .route("/class-report", get(dashboard::class_report))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .merge(dashboard)
}

/// The API running in the background of this process, on a free loopback port
/// (tests and tools use it). It stops when dropped.
pub struct Background {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the API on a free loopback port of this process, over `redis_url`.
pub async fn spawn(redis_url: &str) -> anyhow::Result<Background> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(redis_url)?;
    tokio::spawn(serve_state(listener, state, async {
        let _ = stopped.await;
    }));
    Ok(Background { url, _stop: stop })
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests
/// finish first. `key_ttl`: how long an order's answer is kept for its key.
pub async fn serve(
    listener: tokio::net::TcpListener,
    redis_url: &str,
    key_ttl: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState {
        key_ttl,
        ..AppState::new(redis_url)?
    };
    serve_state(listener, state, shutdown).await
}

async fn serve_state(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("api stopped");
    Ok(())
}
