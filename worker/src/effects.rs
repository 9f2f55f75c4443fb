//! The side effect and its ledger. Plumbing: students need not edit this file.
//!
//! The side effect stands for an external action: sending an email, charging a
//! card. Each one is written, in one MULTI/EXEC with the job's `effects`
//! counter, as an entry of the run's ledger stream (`ledger:<runId>`). The run
//! totals count the ledger, so the numbers show every email really "sent".

use std::time::Duration;

use lab_schema::{job_field, keys};
use redis::aio::ConnectionManager;

use crate::context::Job;

/// Waits `delay` (the external call), then records one effect in the ledger.
pub(crate) async fn apply(
    redis: &mut ConnectionManager,
    job: &Job,
    consumer: &str,
    delay: Duration,
) -> anyhow::Result<()> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (_ledger_id, effects): (String, u64) = redis::pipe()
        .atomic()
        .xadd(
            keys::ledger(&job.run_id),
            "*",
            &[
                ("jobId", job.job_id.as_str()),
                ("deliveryId", job.delivery_id.as_str()),
                ("consumer", consumer),
            ],
        )
        .hincr(keys::job(&job.job_id), job_field::EFFECTS, 1)
        .query_async(redis)
        .await?;
    if effects == 1 {
        tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied (email sent)");
    } else {
        tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied AGAIN: this job has now sent {effects} emails");
    }
    Ok(())
}
