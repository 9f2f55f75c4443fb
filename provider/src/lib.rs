//! The lab's fake payment gateway (exercise 3 on): it charges cards and honours
//! `Idempotency-Key`. Students need not edit this crate.
//!
//! Its contract (routes, headers, body fields, per-job faults, request log) is
//! [`lab_schema::provider`]. In short: the first `POST /v1/charges` with a key
//! runs and its answer is stored; the same key and body again gets that answer
//! (`Idempotent-Replayed: true`) and no new charge; the same key with another
//! body is refused (422); a key whose first request still runs is refused (409).
//! Keys are scoped per account (`Authorization: Bearer <account>`). A request
//! without a key runs every time.
//!
//! Every new charge is written, in ONE MULTI/EXEC, into the lab's run records
//! (the run's ledger, the job's effects, an `effect` event: [`lab_runtime::record`]),
//! into the provider's own ledger and, with a key, as the key's stored answer:
//! a charge is never recorded without its answer being stored, nor the reverse.
//!
//! # Redis keys
//! All state lives in Redis, so a restarted provider loses nothing and several
//! replicas agree. Every key starts with `provider:`. `<account>`, `<runId>` and
//! `<jobId>` never contain `/` ([`lab_schema::validate_id`]), so the `/` between
//! two parts cannot be forged and no two pairs share a key.
//!
//! | key | type | holds | lifetime |
//! |---|---|---|---|
//! | `provider:idem:<account>/<key>` | hash | `state` (`running`/`done`), `fp` (the body's SHA-256), `token` (the request holding a running reservation); once done `status`, `body` (the exact answer) and `chargeId` | running: `--running-timeout-secs` + the request's planned delay; done: `--key-ttl-secs` |
//! | `provider:exec:<runId>/<jobId>` | string | the job's first execution happened (SET NX): `firstRequestMs` and `failFirst` apply to that one only | [`RECORD_TTL_SECS`](lab_schema::RECORD_TTL_SECS) |
//! | `provider:charged:<runId>/<jobId>` | string | the job's first charge happened (SET NX): `dropAnswer` applies to that one only | [`RECORD_TTL_SECS`](lab_schema::RECORD_TTL_SECS) |
//! | `provider:charge-seq` | counter | the number of the last charge (`ch_<n>`) | forever |
//! | `provider:ledger` | stream | one entry per charge: chargeId, account, idempotencyKey, runId, jobId, pipeline, deliveryId, amountCents, currency, customer | capped at [`LEDGER_MAX_LEN`] entries (MAXLEN ~) |
//! | `provider:log:<runId>` | stream | the run's request log: one entry per charge request that passed validation, field `request` = a [`LoggedRequest`](lab_schema::provider::LoggedRequest) as JSON | capped at [`REQUEST_LOG_MAX_LEN`] (MAXLEN ~); expires [`RECORD_TTL_SECS`](lab_schema::RECORD_TTL_SECS) after its last entry |
//! | `provider:rate:<account>` | hash | the account's requests in the current second: `window` (Unix second), `count`, `refused` | 2 s |
//! | `provider:ban:<account>` | string | the account is banned (429 to every request) while it lives | `--ban-secs` |
//! | `provider:faults` | hash | the instructor's faults: `outageUntilMs` (Unix ms; 0 or absent: none), `slowMs` | forever |
//!
//! A request refused by validation (4xx before the key is looked at) writes nothing at all.
//!
//! # Layout
//! - [`app`]: the routes; [`serve`] binds them to a listener until shutdown; [`spawn`] runs them in the background.
//! - `charges.rs`: `POST /v1/charges`, step by step (validate, outage, reserve, execute, record).
//! - `validate.rs`: the headers and body of a charge, checked into a [`validate::ChargeRequest`].
//! - `store.rs`: every Redis key and script of the provider.
//! - `routes.rs`: the request log, the instructor's faults, health, and the JSON 404/405.
//! - `error.rs`: the JSON error body `{"error": {"code", "message"}}` of every failure.

mod charges;
mod error;
pub use lab_runtime::fingerprint;
mod routes;
mod store;
pub mod validate;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use lab_schema::provider::{ADMIN_FAULTS_PATH, CHARGES_PATH};
use redis::aio::ConnectionManager;

pub use error::ProviderError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long any request waits for Redis before answering 503.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Roughly how many charges `provider:ledger` keeps (the oldest go first).
pub const LEDGER_MAX_LEN: u64 = 100_000;

/// Roughly how many requests a run's log `provider:log:<runId>` keeps.
pub const REQUEST_LOG_MAX_LEN: u64 = 100_000;

/// Longest simulated delay of one kind (`slowMs`, `firstRequestMs`, the instructor's `slowMs`).
pub const MAX_SIMULATED_MS: u64 = lab_schema::provider::MAX_SIMULATED_MS;

/// Longest instructor's outage that `PUT /admin/faults` accepts: one day.
pub const MAX_OUTAGE_SECS: u64 = 86_400;

/// An account's rate limit (`--rate-limit`, `--ban-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second and account; over it, 429 `rate_limited`. 0: no limit.
    pub per_sec: u64,
    /// How long an account is banned once as many of its requests were refused
    /// in one second as its budget (it kept sending through its 429s).
    pub ban: Duration,
}

impl Default for Limits {
    /// 100 requests per second, a 30-second ban: a class's retry storm (a few
    /// dozen jobs retried at once, in a loop) reaches both within its first
    /// second; jobs that back off never come near.
    fn default() -> Limits {
        Limits {
            per_sec: 100,
            ban: Duration::from_secs(30),
        }
    }
}

/// The provider's settings (`--key-ttl-secs`, `--running-timeout-secs`, the limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long an idempotency key and its stored answer are kept.
    pub key_ttl: Duration,
    /// How long a reservation whose request never finished (the provider was
    /// killed) keeps blocking its key, beyond the request's planned delay.
    pub running_timeout: Duration,
    /// Each account's rate limit.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            key_ttl: Duration::from_secs(86_400),
            running_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// What every handler shares: a Redis connection that reconnects by itself, and the settings.
#[derive(Clone)]
pub struct AppState {
    pub redis: ConnectionManager,
    pub config: Config,
    scripts: std::sync::Arc<store::Scripts>,
}

impl AppState {
    /// Prepares a connection to `redis_url` without waiting for Redis: the
    /// provider starts (and answers 503) even while Redis is still coming up.
    pub fn new(redis_url: &str, config: Config) -> anyhow::Result<AppState> {
        let redis = lab_runtime::service::redis_connection(redis_url, REDIS_TIMEOUT)?;
        Ok(AppState {
            redis,
            config,
            scripts: std::sync::Arc::new(store::Scripts::new()),
        })
    }
}

/// All routes. Unknown routes and methods get the same JSON errors as the rest.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(CHARGES_PATH, post(charges::create_charge))
        .route("/v1/runs/{run_id}/requests", get(routes::run_requests))
        .route(
            ADMIN_FAULTS_PATH,
            get(routes::get_faults).put(routes::put_faults),
        )
        .route("/healthz", get(routes::healthz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The provider running in the background of this process, on a free loopback
/// port (tests and tools use it). It stops when dropped.
pub struct Background {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the provider on a free loopback port of this process, over `redis_url`.
pub async fn spawn(redis_url: &str, config: Config) -> anyhow::Result<Background> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(redis_url, config)?;
    tokio::spawn(serve_state(listener, state, async {
        let _ = stopped.await;
    }));
    Ok(Background { url, _stop: stop })
}

/// Serves the provider on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    redis_url: &str,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_state(listener, AppState::new(redis_url, config)?, shutdown).await
}

async fn serve_state(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let config = state.config;
    tracing::info!(%addr, key_ttl = ?config.key_ttl, running_timeout = ?config.running_timeout, rate_limit = config.limits.per_sec, ban = ?config.limits.ban, "provider listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("provider stopped");
    Ok(())
}
