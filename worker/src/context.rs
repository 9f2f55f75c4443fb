//! What `process_job` works with: the delivered [`Job`] and the [`JobContext`].
//! Plumbing: students need not edit this file (but may read it).

use std::sync::Arc;
use std::time::Duration;

use lab_schema::{job_field, keys};
use redis::aio::ConnectionManager;

pub use crate::delivery::Job;
use crate::effects;
use crate::outcomes::Outcome;

/// Everything `process_job` may use, built fresh for each delivery.
pub struct JobContext {
    /// A Redis connection: `redis::cmd("SET")...query_async(&mut ctx.redis)`.
    pub redis: ConnectionManager,
    /// Business pipeline name, part of the idempotency key (`email` by default).
    pub pipeline: String,
    /// How long an idempotency claim lives, in seconds (`--idempotency-ttl-secs`).
    pub idempotency_ttl_secs: u64,
    effect_delay: Duration,
    consumer: Arc<str>,
}

impl JobContext {
    pub(crate) fn new(
        redis: ConnectionManager,
        pipeline: String,
        idempotency_ttl_secs: u64,
        effect_delay: Duration,
        consumer: Arc<str>,
    ) -> JobContext {
        JobContext {
            redis,
            pipeline,
            idempotency_ttl_secs,
            effect_delay,
            consumer,
        }
    }

    /// Counts one delivery: status `processing`, `processAttempts` + 1 on the
    /// job and `attempts` + 1 on the run, and a `delivery` event in the run's
    /// event log. Returns the job's attempt number.
    pub async fn mark_processing(&mut self, job: &Job) -> anyhow::Result<u64> {
        self.record(job, Outcome::Delivered).await
    }

    /// Runs the side effect ("sends the email") and writes it to the ledger.
    pub async fn apply_side_effect(&mut self, job: &Job) -> anyhow::Result<()> {
        effects::apply(&mut self.redis, job, &self.consumer, self.effect_delay).await
    }

    /// Records in the job's metadata which guard handled this delivery,
    /// e.g. `"not-implemented"` or `"claimed"`.
    pub async fn record_idempotency(&mut self, job: &Job, outcome: &str) -> anyhow::Result<()> {
        let _: () = redis::cmd("HSET")
            .arg(keys::job(&job.job_id))
            .arg(job_field::IDEMPOTENCY)
            .arg(outcome)
            .query_async(&mut self.redis)
            .await?;
        Ok(())
    }

    /// Records a skipped duplicate: logs it, sets the job's `idempotency` to
    /// `duplicate-skipped`, counts it (`duplicateSkips` on the job and the run)
    /// and adds a `duplicate-skip` event to the run's event log.
    /// `claim_key` is the key whose claim failed; it goes into the log line.
    pub async fn record_duplicate_skip(
        &mut self,
        job: &Job,
        claim_key: &str,
    ) -> anyhow::Result<()> {
        let skips = self
            .record(job, Outcome::DuplicateSkipped { claim_key })
            .await?;
        tracing::info!(
            job_id = %job.job_id,
            delivery_id = %job.delivery_id,
            claim_key = %claim_key,
            skips,
            "duplicate delivery skipped: side effect NOT applied"
        );
        Ok(())
    }

    /// Writes one outcome (see `outcomes.rs`) and returns the job's count of it.
    async fn record(&mut self, job: &Job, outcome: Outcome<'_>) -> anyhow::Result<u64> {
        let mut pipe = redis::pipe();
        outcome.record(&mut pipe, job, &self.consumer);
        let (count,): (u64,) = pipe.query_async(&mut self.redis).await?;
        Ok(count)
    }
}
