//! The contract of `POST /orders`, exercise 4's route: its headers, body, faults,
//! error codes and the views the API serves of the orders it created. Students
//! need not edit this file.
//!
//! The server assigns each order its id (`ord_<n>`) and enqueues the order as a
//! job of exercise 4 (the worker processes it with exercise 1's guard). Without
//! the exercise's fix every request creates a new order; with it, the
//! `Idempotency-Key` header (per caller) makes a retry get the stored answer.

use serde::{Deserialize, Serialize};

/// `POST /orders`.
pub const ORDERS_PATH: &str = "/orders";

/// `GET /idempotency`: the published key policy ([`IdempotencyPolicy`]).
pub const POLICY_PATH: &str = "/idempotency";

/// The request header naming the client's key for this logical order (the
/// same header, and the same rule for a key, as the provider's).
pub use crate::provider::{IDEMPOTENCY_KEY, MAX_KEY_LEN};

/// The answer header of a stored answer sent again: `Idempotent-Replayed: true`.
pub use crate::provider::IDEMPOTENT_REPLAYED as REPLAYED;

/// The request header naming the lab's run the order belongs to (default `adhoc`).
pub use crate::provider::LAB_RUN_ID;

/// How long a stored answer is kept by default: 24 hours.
pub const DEFAULT_KEY_TTL_SECS: u64 = 24 * 60 * 60;

/// How long a reservation lives while its request is in flight, in seconds
/// (`ctx.in_flight_secs` of exercise 4): far longer than any request takes,
/// and short enough that a key whose API process died mid-request frees
/// itself within a minute.
pub const IN_FLIGHT_SECS: u64 = 60;

/// The longest reservation `verify --exercise 4` accepts: twice
/// [`IN_FLIGHT_SECS`] (a process that dies holding one locks its key that long).
pub const RESERVATION_BOUND_SECS: u64 = 2 * IN_FLIGHT_SECS;

/// Longest simulated delay of an order (`simulate.slowMs`).
pub const MAX_SLOW_MS: u64 = 10_000;

/// The body of `POST /orders`. Unknown fields are refused (400).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Order {
    /// What is ordered: 1 to 64 characters.
    pub item: String,
    /// How many: 1 to 100.
    pub quantity: u32,
    /// Where to: an object, e.g. `{"name": "Ada", "city": "Lyon"}` (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to: Option<serde_json::Map<String, serde_json::Value>>,
    /// The lab's faults for this order (optional; see [`Simulate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<Simulate>,
}

/// The lab's per-order faults. `dropAnswer` and `failFirst` apply once per
/// caller and key (the first request that reaches that point, never a retry);
/// `slowMs` to every request of the order that goes ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Simulate {
    /// The order is created and enqueued, then the connection is closed without
    /// a byte of the answer (the client never learns the order id).
    #[serde(default)]
    pub drop_answer: bool,
    /// The stock check fails (503) before anything is enqueued.
    #[serde(default)]
    pub fail_first: bool,
    /// The order takes this many extra milliseconds before it is enqueued (a
    /// slow stock check): a second request arrives while the first is in flight.
    #[serde(default)]
    pub slow_ms: u64,
}

/// Error codes of `POST /orders` (the `code` of `{"error": {"code", "message"}}`).
pub mod error_code {
    /// 401: `Authorization: Bearer <account>` missing or malformed.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// 400: the body is not an order.
    pub const INVALID_ORDER: &str = "invalid_order";
    /// 400: the `Lab-Run-Id` header is not a valid id.
    pub const INVALID_RUN_ID: &str = "invalid_run_id";
    /// 400: no `Idempotency-Key` (the route requires one once the exercise is done).
    pub const KEY_MISSING: &str = "idempotency_key_missing";
    /// 400: an `Idempotency-Key` that is empty, too long, not visible ASCII, or sent twice.
    pub const KEY_MALFORMED: &str = "idempotency_key_malformed";
    /// 409: the first request with this key is still in flight.
    pub const KEY_IN_FLIGHT: &str = "idempotency_key_in_flight";
    /// 422: the key was used for another order (another fingerprint).
    pub const KEY_REUSED: &str = "idempotency_key_reused";
    /// 503: the stock check failed (`simulate.failFirst`); nothing was enqueued.
    pub const STOCK_UNAVAILABLE: &str = "stock_unavailable";
}

/// The answer of a created order (201), stored and replayed as these exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub order_id: String,
    pub run_id: String,
    pub status: String,
    pub item: String,
    pub quantity: u32,
    pub created_at_ms: u64,
}

/// `GET /orders/{orderId}`: an order and the idempotency record its request named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    pub run_id: String,
    /// The caller (`Authorization: Bearer <account>`).
    pub account: String,
    /// The request's `Idempotency-Key` header as received, if any.
    pub idempotency_key: Option<String>,
    /// The job's status as the workers recorded it (`queued`, `completed`, ...).
    pub status: String,
    /// The Redis key of the reservation, as `begin` named it (`Held.redis_key`).
    pub idempotency_record: Option<String>,
    /// That key's TTL now: -2 gone, -1 no expiry.
    pub idempotency_record_ttl_secs: Option<i64>,
}

/// `GET /runs/{runId}/orders`: every order the run created, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOrders {
    pub run_id: String,
    pub orders: Vec<OrderView>,
}

/// `GET /idempotency`: the key policy the API publishes (the IETF draft asks for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyPolicy {
    pub header: String,
    /// How long a stored answer is kept after its request finished.
    pub ttl_secs: u64,
    /// One sentence each: what a key is, its scope, and the answers.
    pub rules: Vec<String>,
    /// The refusals `POST /orders` answers, as their problem types (RFC 9457).
    #[serde(default)]
    pub refusals: Vec<RefusalType>,
}

/// One refusal of `POST /orders`: the `type` of its problem details (RFC 9457,
/// `application/problem+json`), which points here, and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalType {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: u16,
    pub code: String,
    pub title: String,
}

/// The media type of a refusal's body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A refusal's problem `type`: a reference to its entry in `GET /idempotency`.
pub fn problem_type(code: &str) -> String {
    format!("/idempotency#{code}")
}
