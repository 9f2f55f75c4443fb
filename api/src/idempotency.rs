//! EXERCISE 4: THE FILE TO EDIT. The retried POST: `Idempotency-Key` at the API's front door.
//!
//! `POST /orders` creates an order whose id the SERVER picks, and enqueues it.
//! A phone whose answer was lost sends the same POST again, and today every
//! request is a brand-new order: the customer gets two. The worker's guard
//! cannot help, since the two orders have two different ids.
//!
//! The plumbing (`orders.rs`, which you need not edit) calls these three
//! functions for every `POST /orders`. Each is given `ctx`, as exercises 1 to
//! 3 are given a `JobContext`: `ctx.redis` (a Redis connection),
//! `ctx.in_flight_secs` (how long a reservation lives while its request runs:
//! 60 s) and `ctx.answer_ttl_secs` (how long a stored answer is kept: 24 h).
//!
//! 1. [`begin`], before anything is created: go ahead, send a stored answer
//!    again, or refuse the request.
//! 2. If `begin` said go ahead, the plumbing creates and enqueues the order,
//!    then calls [`finish`] with the answer the client gets (201 and its body)
//!    or, when the request failed BEFORE anything was enqueued, [`release`].
//!
//! TODO (the handout, `exercises/04-retried-post/README.md`, walks you through it):
//! - the route requires the key: answer `Refusal::MissingKey` or
//!   `Refusal::MalformedKey` when `request.key` is not `KeyHeader::Valid`;
//! - fingerprint the order: SHA-256 of its canonical JSON (the same order with
//!   its keys in another order, or other spaces, has the same fingerprint);
//! - reserve the key in Redis in ONE atomic step (`SET ... NX GET`: exercise
//!   1's claim, which also answers what already holds the key), under a Redis
//!   key that names the caller (`request.caller`) too, for `ctx.in_flight_secs`;
//! - in `finish`, store the answer with the key for `ctx.answer_ttl_secs`
//!   (24 h by default);
//! - a request whose key is taken: `Begin::Replay` of the stored answer (same
//!   fingerprint), `Refusal::Mismatch` (another fingerprint: 422), or
//!   `Refusal::InFlight` (the first request has not finished yet: 409);
//! - in `release`, free the reservation so the client's retry can succeed.

// `use` brings names from other files into this one: what the plumbing hands
// you and understands back (see order_context.rs).
use crate::order_context::{OrderContext, OrderRequest, Refusal, Stored};

/// What [`begin`] decided.
pub enum Begin {
    /// Go ahead: the plumbing creates the order, then calls `finish` or `release` with this.
    Proceed(Held),
    /// Send this stored answer again (the plumbing adds `Idempotent-Replayed: true`).
    Replay(Stored),
    /// Refuse the request (400, 409 or 422: see [`Refusal`]).
    Refuse(Refusal),
}

/// What a request that goes ahead holds until `finish` or `release`. Add
/// fields if you need them.
#[derive(Debug, Default)]
pub struct Held {
    /// The Redis key of this request's reservation. `GET /orders/{orderId}`
    /// shows it and its TTL, and `verify --exercise 4` checks that TTL.
    pub redis_key: Option<String>,
}

/// Called first, for every `POST /orders`.
///
/// Returning `Ok(..)` says what to do with the request. Returning an error
/// (the `?` after a call does that when the call fails) creates nothing: the
/// client gets 503 when Redis failed, 500 otherwise, and can retry.
pub async fn begin(ctx: &mut OrderContext, request: &OrderRequest<'_>) -> anyhow::Result<Begin> {
    // TODO: today every request goes ahead, so every retry is a new order.
    // Write, in the order of the list at the top of this file:
    //   1. `match &request.key { ... }`: refuse `KeyHeader::Missing` and
    //      `KeyHeader::Malformed(why)` (add `KeyHeader` to the
    //      `use crate::order_context` line above);
    //   2. the Redis key, the caller and the key: `format!("idem:{}/{}", ...)`;
    //   3. the fingerprint of `request.body` (SHA-256 of its canonical JSON);
    //   4. ONE atomic step in Redis that reserves the key or reads what holds it:
    //      `SET <redis key> <value> NX GET EX <ctx.in_flight_secs>` (exercise 1's
    //      claim; `GET` makes it answer what held the key, `nil` when it was free);
    //   5. free: `Begin::Proceed(Held { redis_key: Some(..), .. })`; taken:
    //      `Begin::Replay(..)` or `Begin::Refuse(..)`.
    // (`let _ = ...` only keeps the compiler quiet about unused arguments: delete it.)
    let _ = (ctx, request);
    Ok(Begin::Proceed(Held::default()))
}

/// Called once the order is enqueued, with the answer the client is sent.
pub async fn finish(ctx: &mut OrderContext, held: Held, answer: &Stored) -> anyhow::Result<()> {
    // TODO: store `answer` (and the fingerprint) under `held.redis_key` for
    // `ctx.answer_ttl_secs`, so that a retry can be answered with it. (Delete
    // the `let _` line, as in `begin`.)
    let _ = (ctx, held, answer);
    Ok(())
}

/// Called instead of `finish` when the request failed before anything was enqueued.
pub async fn release(ctx: &mut OrderContext, held: Held) -> anyhow::Result<()> {
    // TODO: delete the reservation under `held.redis_key`, so that the client's
    // retry is not refused. (Delete the `let _` line, as in `begin`.)
    let _ = (ctx, held);
    Ok(())
}
