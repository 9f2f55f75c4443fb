//! # THE EXERCISE of exercise 5: a retry policy that does not start a storm.
//!
//! This is the only file you edit for exercise 5. After editing it, rebuild and
//! restart the workers with `docker compose up --build -d` (natively:
//! `./lab restart worker`), then rerun `retry-storm`.
//!
//! The job is exercise 3's charge, with its idempotency key: a retry never
//! charges twice. What is left is WHEN to retry. Each time the provider does not
//! charge (it is down, it says "too many requests", it declines the card), the
//! worker asks [`decide`] what to do with the job, and does it: it schedules the
//! job again after the delay you return, or moves it to the dead-letter stream
//! `jobs:dead` with the reason you give. Scheduling is the plumbing's work
//! (`queue/retries.rs`): any delay works, from zero to hours.
//!
//! [`decide`] gets a [`Failure`]:
//! - `failure.attempt`: how many attempts of this job have failed, this one
//!   included (1 on the first failure). It travels with the job in Redis, so it
//!   is right on any worker, after any crash.
//! - `failure.since_first_failure`: how long ago the job's first attempt failed
//!   (zero on the first failure).
//! - `failure.status`: the provider's HTTP status (`Some(503)`, `Some(429)`,
//!   `Some(402)`, ...), or `None` when no answer came (a timeout, a dropped
//!   connection: the charge may or may not have happened, and only a retry
//!   with the same key can tell).
//! - `failure.retry_after`: the provider's `Retry-After` header, if it sent one.
//! - `failure.job_id`: the job, for your log lines.
//!
//! It returns a [`Decision`]: `Decision::RetryAfter(delay)` or
//! `Decision::DeadLetter(reason)`. Keep it a pure function of its input: no
//! counters of your own, no clock, no Redis. That is what lets you reason about
//! it, and test it (`cargo test -p worker retry_policy`).

use std::time::Duration;

use crate::retry_storm::{Decision, Failure};

/// What to do with a job whose attempt just failed. Called once per failure.
pub fn decide(failure: &Failure) -> Decision {
    // TODO(exercise): this retries at once, forever. During an outage every
    // worker sends every job again and again, as fast as it can: the provider's
    // rate limiter answers 429 and then bans the account, and a declined card
    // is retried all night. Instead:
    //   1. Permanent answers can never succeed: dead-letter them at once, with
    //      the reason (400 bad request, 402 card declined, 404, 422 key reused,
    //      ...). NOT 409 (the first request with our key is still running) and
    //      NOT 429 (too many requests): both mean "later", not "never".
    //          if failure.status == Some(402) { return Decision::DeadLetter(format!(...)); }
    //   2. Transient answers (5xx, 408, 409, 429, no answer): wait longer after
    //      each failure, exponentially, up to a cap:
    //          let exp = base * 2^(attempt - 1), at most cap
    //      (base: ~100 ms; cap: a few seconds to a minute; `Duration` has
    //      `from_millis`, `saturating_mul`, `min`; 2^n is `1u32 << n` or
    //      `2u32.saturating_pow(n)`: mind the overflow).
    //   3. Full jitter: wait a random delay between 0 and `exp`, so that jobs
    //      that failed together do not come back together:
    //          let ms = fastrand::u64(0..=exp.as_millis() as u64);
    //   4. Honour `Retry-After`: never retry sooner than the provider asked, and
    //      keep the jitter on top (or every job told "3 s" comes back at once):
    //          if let Some(after) = failure.retry_after { delay += after; }
    //   5. Give up some day, not too soon (outages last minutes): after a deadline
    //      (`failure.since_first_failure`, e.g. 10 min) or enough attempts to span
    //      it, dead-letter with the reason, where a person will look at it.
    let _ = failure;
    Decision::RetryAfter(Duration::ZERO)
}
