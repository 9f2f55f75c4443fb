//! What `process_job` works with: the delivered [`Job`] and the [`JobContext`].
//! Plumbing: students need not edit this file (but may read it).

use std::sync::Arc;
use std::time::Duration;

use lab_schema::{events as event, job_field, keys, run_field, status};
use redis::aio::ConnectionManager;

use crate::{effects, events};

/// One delivery of a job, as read from the queue.
#[derive(Debug, Clone)]
pub struct Job {
    /// The logical job: the same on every delivery of it.
    pub job_id: String,
    /// The demo run the job belongs to.
    pub run_id: String,
    /// The queue entry id: different on every delivery (a resubmission is a new entry).
    pub delivery_id: String,
    /// The submitted payload, as JSON text.
    pub payload: String,
}

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
        let job_key = keys::job(&job.job_id);
        let mut pipe = redis::pipe();
        pipe.hset(&job_key, job_field::STATUS, status::PROCESSING)
            .ignore()
            .hincr(&job_key, job_field::PROCESS_ATTEMPTS, 1)
            .hincr(keys::run(&job.run_id), run_field::ATTEMPTS, 1)
            .ignore();
        events::push(&mut pipe, job, event::DELIVERY, &self.consumer, "");
        let (attempt,): (u64,) = pipe.query_async(&mut self.redis).await?;
        Ok(attempt)
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
        let job_key = keys::job(&job.job_id);
        let mut pipe = redis::pipe();
        pipe.hset(&job_key, job_field::IDEMPOTENCY, "duplicate-skipped")
            .ignore()
            .hincr(&job_key, job_field::DUPLICATE_SKIPS, 1)
            .hincr(keys::run(&job.run_id), run_field::DUPLICATE_SKIPS, 1)
            .ignore();
        events::push(
            &mut pipe,
            job,
            event::DUPLICATE_SKIP,
            &self.consumer,
            claim_key,
        );
        let (skips,): (u64,) = pipe.query_async(&mut self.redis).await?;
        tracing::info!(
            job_id = %job.job_id,
            delivery_id = %job.delivery_id,
            claim_key = %claim_key,
            skips,
            "duplicate delivery skipped: side effect NOT applied"
        );
        Ok(())
    }
}
