//! The provider's contract: the fake payment gateway of exercise 3 and later
//! (`provider/`), as the worker calls it and the demo-runner reads it.
//! Students need not edit this file.
//!
//! `POST /v1/charges` charges a card. It honours `Idempotency-Key` the way
//! Stripe documents it and the IETF httpapi draft "The Idempotency-Key HTTP
//! Header Field" specifies it: the first request with a key runs and its answer
//! is stored; a retry with the same key and the same body gets that answer again
//! (`Idempotent-Replayed: true`) and no new charge; the same key with another
//! body is refused (422); a key whose first request is still running is refused
//! (409). Keys are scoped per account (`Authorization: Bearer <account>`).

use serde::{Deserialize, Serialize};

/// Charge route.
pub const CHARGES_PATH: &str = "/v1/charges";

/// Request headers.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header on a stored answer served again.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The lab's tracing headers: which run, job, delivery and pipeline a charge
/// belongs to, so the provider can write it into the run's ledger. Not part of
/// the request's fingerprint (a gateway's own request ids are not either).
pub const LAB_RUN_ID: &str = "lab-run-id";
pub const LAB_JOB_ID: &str = "lab-job-id";
pub const LAB_DELIVERY_ID: &str = "lab-delivery-id";
pub const LAB_PIPELINE: &str = "lab-pipeline";

/// The account the lab's workers charge with (`Authorization: Bearer lab`).
pub const LAB_ACCOUNT: &str = "lab";

/// Longest delay a `simulate` field or the instructor's slow mode may ask for.
pub const MAX_SIMULATED_MS: u64 = 60_000;

/// Longest accepted `Idempotency-Key` (visible ASCII only).
pub const MAX_KEY_LEN: usize = 255;

/// What is wrong with a non-empty `Idempotency-Key` (too long, or not visible
/// ASCII), if anything: the rule the provider's charges and the API's orders share.
pub fn key_problem(key: &[u8]) -> Option<String> {
    if key.len() > MAX_KEY_LEN {
        return Some(format!(
            "Idempotency-Key is {} bytes long; the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    key.iter().find(|b| !b.is_ascii_graphic()).map(|bad| {
        format!(
            "Idempotency-Key contains the byte 0x{bad:02x}; only visible ASCII (0x21-0x7e) is allowed"
        )
    })
}

/// The account of an `Authorization: Bearer <account>` header value (the
/// provider's charges and the API's orders name their caller this way), valid
/// by [`validate_id`](crate::validate_id); else what is wrong with it.
pub fn bearer_account(value: &str) -> Result<&str, String> {
    let Some((scheme, account)) = value.trim().split_once(' ') else {
        return Err("Authorization must be \"Bearer <account>\"".into());
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "Authorization scheme {scheme:?} is not accepted; use \"Bearer <account>\""
        ));
    }
    let account = account.trim();
    crate::validate_id("the account (Authorization: Bearer <account>)", account)?;
    Ok(account)
}

/// Fields of the charge body.
pub mod body {
    pub const CUSTOMER: &str = "customer";
    pub const AMOUNT_CENTS: &str = "amountCents";
    pub const CURRENCY: &str = "currency";
    pub const DESCRIPTION: &str = "description";
    /// Per-job faults, an object (see [`super::simulate`]). The worker copies the
    /// job payload's `provider` object here; the student's code never reads it.
    pub const SIMULATE: &str = "simulate";
    /// Not a body field: the job payload's field naming the provider account
    /// its charges go to (its own rate limit), e.g. one per `retry-storm` run.
    pub const ACCOUNT: &str = "account";
}

/// The customer whose card is always declined (402 `card_declined`, a
/// permanent failure that is stored under the key like any executed request).
pub const DECLINED_CUSTOMER: &str = "cus_declined";

/// Fields of the body's `simulate` object: faults of the provider, per job.
pub mod simulate {
    /// Every request for this job takes that many milliseconds (a slow gateway).
    pub const SLOW_MS: &str = "slowMs";
    /// The first request the provider executes for this job takes that many
    /// milliseconds (while it runs, a retry with the same key gets 409).
    pub const FIRST_REQUEST_MS: &str = "firstRequestMs";
    /// `true`: the first request executed for this job fails with 503 after its
    /// delay, and nothing is charged; its key is released, so a retry runs.
    pub const FAIL_FIRST: &str = "failFirst";
    /// `true`: the first charge of this job is made and stored, then the
    /// connection is closed before the answer: the caller cannot know it worked.
    pub const DROP_ANSWER: &str = "dropAnswer";
    /// `true`: the first request executed for this job is lost: the connection
    /// closes with no answer BEFORE anything is charged, and its key is released.
    /// The caller sees the same closed connection as with `dropAnswer`.
    pub const DROP_BEFORE_CHARGE: &str = "dropBeforeCharge";
}

/// Admin routes (the instructor's faults for the whole provider).
pub const ADMIN_FAULTS_PATH: &str = "/admin/faults";

/// `GET`/`PUT /admin/faults`: faults of the whole provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Every charge request is answered 503 for this many more seconds.
    #[serde(default)]
    pub outage_secs: u64,
    /// Every charge request takes this many extra milliseconds.
    #[serde(default)]
    pub slow_ms: u64,
}

/// The request log of a run: `GET /v1/runs/{runId}/requests`.
pub fn requests_path(run_id: &str) -> String {
    format!("/v1/runs/{run_id}/requests")
}

crate::named_enum! {
    /// What the provider did with one charge request.
    pub enum RequestOutcome {
        /// Executed: a new charge (201).
        Charged = "charged",
        /// Executed: a new charge, and the connection was dropped before the answer.
        ChargedAnswerDropped = "charged-answer-dropped",
        /// The stored answer of an earlier request with this key, served again.
        Replayed = "replayed",
        /// 409: the first request with this key is still running.
        InFlight = "in-flight",
        /// 422: this key was used with another body.
        KeyReused = "key-reused",
        /// Executed: 402 card declined (stored under the key).
        Declined = "declined",
        /// 503: the provider is down (instructor's outage) or its upstream failed; nothing charged.
        Unavailable = "unavailable",
        /// The connection was closed with no answer before anything was charged (`dropBeforeCharge`).
        DroppedUncharged = "dropped-uncharged",
        /// 429: the account is over its budget of requests per second; nothing charged.
        RateLimited = "rate-limited",
        /// 429: the account is banned for sending through its 429s; nothing charged.
        Banned = "banned",
    }
}

/// One charge request, as the provider's request log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    pub outcome: RequestOutcome,
    /// The HTTP status answered (or that would have been, for a dropped answer).
    pub status: u16,
    pub job_id: String,
    pub pipeline: String,
    pub delivery_id: String,
    /// The `Idempotency-Key`, absent when the request had none.
    pub idempotency_key: Option<String>,
    /// The first 12 hex digits of the body's SHA-256 fingerprint.
    pub fingerprint: String,
    /// The charge made or replayed (`ch_...`), if any.
    pub charge_id: Option<String>,
    pub at_ms: u64,
}

/// `GET /v1/runs/{runId}/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequests {
    pub run_id: String,
    pub requests: Vec<LoggedRequest>,
}

/// The `code` of the provider's JSON errors (`{"error": {"code", "message"}}`),
/// for callers that branch on more than the status.
pub mod error_code {
    /// 401: `Authorization: Bearer <account>` missing or malformed.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// 400: `Idempotency-Key` empty, too long, not visible ASCII, or sent twice.
    pub const INVALID_IDEMPOTENCY_KEY: &str = "invalid_idempotency_key";
    /// 400: a `Lab-*` header missing (run, job) or invalid.
    pub const INVALID_LAB_HEADER: &str = "invalid_lab_header";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 413: the body is over 16 KiB.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// 400: the body is not a JSON object (or repeats a key).
    pub const INVALID_JSON: &str = "invalid_json";
    /// 400: a field of the charge body is invalid (one code per field).
    pub const INVALID_CUSTOMER: &str = "invalid_customer";
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    pub const INVALID_CURRENCY: &str = "invalid_currency";
    pub const INVALID_DESCRIPTION: &str = "invalid_description";
    pub const INVALID_SIMULATE: &str = "invalid_simulate";
    /// 422: the key was used before with another body.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency_key_reused";
    /// 409: the first request with this key is still running: retry later.
    pub const IDEMPOTENCY_KEY_IN_USE: &str = "idempotency_key_in_use";
    /// 402: the card was declined (permanent; stored under the key).
    pub const CARD_DECLINED: &str = "card_declined";
    /// 503: the instructor's outage; nothing charged (`Retry-After` says when to retry).
    pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
    /// 429: the account is over its budget of requests per second (`Retry-After`).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 429: the account is banned for a while for sending through its 429s (`Retry-After`).
    pub const ACCOUNT_BANNED: &str = "account_banned";
    /// 503: the simulated upstream failure (`failFirst`); nothing charged, the key released.
    pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
    /// 503: the provider's Redis is not reachable; nothing charged.
    pub const REDIS_UNAVAILABLE: &str = "redis_unavailable";
    /// 503: the charge was sent to Redis but not confirmed in time: it may have
    /// been made. A retry with the same key gets its stored answer if it was.
    pub const CHARGE_UNCONFIRMED: &str = "charge_unconfirmed";
}
