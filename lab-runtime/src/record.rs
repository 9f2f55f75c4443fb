//! Writes to the run's records that more than one service makes: the event log
//! and the effect ledger. Students need not edit this file.
//!
//! The worker records most outcomes itself (`worker/src/outcomes.rs`). An effect
//! is recorded where it happens: by the worker for exercises 1 and 2 (its Redis
//! ledger is the effect), by the provider from exercise 3 on (a charge it
//! accepted, as a card statement shows it). Both write the same three things here,
//! so every summary reads the same.

use lab_schema::{EventKind, event_log, job_field, keys, metrics};

/// Who did what to which delivery: the fields of one event.
#[derive(Debug, Clone, Copy)]
pub struct EventOf<'a> {
    pub run_id: &'a str,
    pub job_id: &'a str,
    pub delivery_id: &'a str,
    /// The worker's consumer name, or `provider`.
    pub consumer: &'a str,
}

/// Adds "append this event, keep the log capped, push its expiry back" to `pipe`
/// (no answer kept).
pub fn push_event(pipe: &mut redis::Pipeline, of: EventOf<'_>, kind: EventKind, detail: &str) {
    append_event(pipe, of, kind, detail);
    pipe.expire(keys::events(of.run_id), event_log::TTL_SECS as i64)
        .ignore();
}

/// [`push_event`] without pushing the log's expiry back: for the events of a
/// delivery that is acknowledged next, whose acknowledgement pushes back the
/// expiry of its run's records once per batch (`worker/src/outcomes.rs`).
pub fn append_event(pipe: &mut redis::Pipeline, of: EventOf<'_>, kind: EventKind, detail: &str) {
    pipe.cmd("XADD")
        .arg(keys::events(of.run_id))
        .arg("MAXLEN")
        .arg("~")
        .arg(event_log::MAX_LEN)
        .arg("*")
        .arg(event_log::KIND)
        .arg(kind.as_str())
        .arg(event_log::JOB_ID)
        .arg(of.job_id)
        .arg(event_log::DELIVERY_ID)
        .arg(of.delivery_id)
        .arg(event_log::CONSUMER)
        .arg(of.consumer)
        .arg(event_log::DETAIL)
        .arg(detail)
        .ignore();
}

/// Adds one side effect to `pipe`: an entry in the run's ledger
/// (`ledger:<runId>`), the job's `effects` + 1 and an `effect` event. Exactly
/// one answer is kept: the job's effects after it. Send `pipe` atomically
/// (`pipe.atomic()`), so an effect is never half recorded. The ledger and the
/// event log get their expiry with the delivery's acknowledgement (or its
/// dead letter), once per batch, not here.
pub fn record_effect(pipe: &mut redis::Pipeline, of: EventOf<'_>, detail: &str) {
    pipe.xadd(
        keys::ledger(of.run_id),
        "*",
        &[
            ("jobId", of.job_id),
            ("deliveryId", of.delivery_id),
            ("consumer", of.consumer),
        ],
    )
    .ignore()
    .hincr(keys::job(of.job_id), job_field::EFFECTS, 1)
    // The global counter of `GET /metrics` (its answer is not kept).
    .hincr(
        metrics::COUNTERS,
        metrics::series(metrics::SIDE_EFFECTS, &[("worker", of.consumer)]),
        1,
    )
    .ignore();
    append_event(pipe, of, EventKind::Effect, detail);
}
