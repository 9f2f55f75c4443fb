//! The run's event log (`events:<runId>`). Plumbing: students need not edit this file.
//!
//! The worker appends its notable events (a delivery, an applied effect, a
//! skipped duplicate, a failed effect) to a capped stream per run, which the
//! API serves as `GET /runs/{runId}/events`: the evidence students hand in,
//! readable the same way whether the stack runs in Docker or natively.
//! Each event rides in a pipeline the worker sends anyway: no extra round trip.

use lab_schema::{events, keys};

use crate::context::Job;

/// Adds "append this event, keep the log capped, push its expiry back" to `pipe`.
pub(crate) fn push(
    pipe: &mut redis::Pipeline,
    job: &Job,
    kind: &str,
    consumer: &str,
    detail: &str,
) {
    let key = keys::events(&job.run_id);
    pipe.cmd("XADD")
        .arg(&key)
        .arg("MAXLEN")
        .arg("~")
        .arg(events::MAX_LEN)
        .arg("*")
        .arg(events::KIND)
        .arg(kind)
        .arg(events::JOB_ID)
        .arg(&job.job_id)
        .arg(events::DELIVERY_ID)
        .arg(&job.delivery_id)
        .arg(events::CONSUMER)
        .arg(consumer)
        .arg(events::DETAIL)
        .arg(detail)
        .ignore()
        .expire(&key, events::TTL_SECS as i64)
        .ignore();
}
