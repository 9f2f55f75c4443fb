//! What `process_job` works with: the delivered [`Job`] and the [`JobContext`].
//! Plumbing: students need not edit this file (but may read it).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lab_runtime::trace::{self, TracedConnection};
use lab_schema::Idempotency;
use lab_schema::trace::Step;

pub use crate::delivery::Job;
use crate::effects;
use crate::outcomes::Outcome;
use crate::provider::{self, ProviderClient};
pub use crate::provider::{Charge, Charged, ProviderError};
pub use lab_schema::order_email::OrderEmail;

/// Sets `KEYS[1]` to `ARGV[2]` (expiring after `ARGV[3]` seconds) only if it
/// holds `ARGV[1]` now: one atomic step, so no other delivery can slip in between.
static COMPARE_AND_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
",
    )
});

/// Deletes `KEYS[1]` only if it holds `ARGV[1]` now.
static COMPARE_AND_DELETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// How one delivery of a job ended, when it did not end well: what
/// `process_job` returns in its `Err(...)`. The queue plumbing acts on each case
/// differently, and the compiler makes sure it handles all three.
///
/// The `?` after a call turns that call's error into [`JobError::Failed`], so
/// `redis::cmd(...).query_async(...).await?` works as it always did.
#[derive(Debug)]
pub enum JobError {
    /// "Not yet: deliver me again later", e.g. while another delivery holds the
    /// lease of the same job. The delivery is not acknowledged, comes back after
    /// a short wait, and does not count as a failure toward `--max-deliveries`.
    /// Make one with [`JobContext::retry_later`].
    RetryLater { reason: String },
    /// "This attempt failed: try the job again after `delay`": the delivery is
    /// acknowledged and the job scheduled again, in one atomic step, in the
    /// retry set `jobs:retry`; it comes back when due, on whichever worker gets
    /// there first, with `job.failures` one higher. Any delay works, from zero
    /// to hours. Make one with [`JobContext::retry_in`] (exercise 5).
    RetryIn { delay: Duration, reason: String },
    /// "This can never succeed": the delivery is moved to the dead-letter stream
    /// `jobs:dead` at once, with the reason, instead of being delivered again.
    /// Make one with [`JobContext::dead_letter`].
    DeadLetter { reason: String },
    /// Anything else went wrong (Redis, the provider, the effect): the delivery
    /// stays pending and is delivered again after the claim idle time; after
    /// `--max-deliveries` failures it is dead-lettered.
    Failed(anyhow::Error),
}

/// Any error `?` meets (a Redis error, a provider error, an `anyhow::Error`)
/// becomes [`JobError::Failed`].
impl<E: Into<anyhow::Error>> From<E> for JobError {
    fn from(err: E) -> JobError {
        JobError::Failed(err.into())
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::RetryLater { reason } => {
                write!(f, "not yet, deliver again later: {reason}")
            }
            JobError::DeadLetter { reason } => write!(f, "dead-lettered by the handler: {reason}"),
            JobError::RetryIn { delay, reason } => {
                write!(f, "failed, retry in {} ms: {reason}", delay.as_millis())
            }
            // `{:#}`: the error with its causes, on one line.
            JobError::Failed(err) => write!(f, "{err:#}"),
        }
    }
}

/// Which guard protected a delivery's effect, as `process_job` records it with
/// [`JobContext::record_idempotency`] (the job's `idempotency` field). A skipped
/// duplicate is recorded by [`JobContext::record_duplicate_skip`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No guard yet: the starter of exercise 1.
    NotImplemented,
    /// This delivery won the claim, and applied the effect.
    Claimed,
}

impl Guard {
    /// What the job's record shows.
    pub(crate) fn recorded(self) -> Idempotency {
        match self {
            Guard::NotImplemented => Idempotency::NotImplemented,
            Guard::Claimed => Idempotency::Claimed,
        }
    }
}

/// Everything `process_job` may use, built fresh for each delivery.
pub struct JobContext {
    /// A Redis connection: `redis::cmd("SET")...query_async(&mut ctx.redis)`.
    /// (When `verify` runs, it writes down each command you send and its reply:
    /// that is how the grader sees what your code did.)
    pub redis: TracedConnection,
    /// Business pipeline name, part of the idempotency key (`email` by default).
    pub pipeline: String,
    /// How long an idempotency claim lives, in seconds (`--idempotency-ttl-secs`).
    pub idempotency_ttl_secs: u64,
    /// How long a `processing` lease lasts, in milliseconds (`--lease-ms`):
    /// longer than the side effect takes, shorter than a class can wait.
    pub lease_ms: u64,
    pub(crate) effect_delay: Duration,
    pub(crate) provider: ProviderClient,
    pub(crate) consumer: Arc<str>,
    pub(crate) instance: Arc<str>,
    /// What [`JobContext::record_idempotency`] recorded: written with the
    /// delivery's outcome (its acknowledgement, or the end of a failed attempt).
    pub(crate) idempotency: Option<Idempotency>,
}

impl JobContext {
    /// Counts one delivery: status `processing`, `processAttempts` + 1 on the
    /// job and `attempts` + 1 on the run, and a `delivery` event in the run's
    /// event log. Returns the job's attempt number.
    pub async fn mark_processing(&mut self, job: &Job) -> anyhow::Result<u64> {
        self.record(job, Outcome::Delivered).await
    }

    /// Runs the side effect ("sends the email") and writes it to the ledger.
    /// On failure nothing was sent, and the error is a [`JobError::Failed`]
    /// that `process_job` can return as it is.
    pub async fn apply_side_effect(&mut self, job: &Job) -> Result<(), JobError> {
        let recorder = self.effect_starts();
        let runner = effects::Runner {
            consumer: &self.consumer,
            instance: &self.instance,
            trace: recorder.as_ref(),
        };
        let applied = effects::apply(self.redis.untraced(), job, &runner, self.effect_delay).await;
        trace_effect(recorder.as_ref(), &applied);
        applied.map_err(JobError::Failed)
    }

    /// The charge of this job (exercise 3): its body is built from the job, the
    /// same on every delivery; it has no idempotency key until you set one.
    pub fn charge_for(&self, job: &Job) -> Charge {
        provider::charge_for(job)
    }

    /// Sends `charge` to the provider: the side effect of exercise 3 ("charge
    /// the card"). `Ok` when the provider charged the card, now or before (a
    /// replay); otherwise a [`ProviderError`] says what its answer meant.
    pub async fn send_charge(
        &mut self,
        job: &Job,
        charge: &Charge,
    ) -> Result<Charged, ProviderError> {
        self.send_charge_answer(job, charge)
            .await
            .map_err(|refused| refused.error)
    }

    /// [`JobContext::send_charge`], keeping the status and `Retry-After` of an
    /// answer without a charge (exercise 5's retry policy reads them).
    pub(crate) async fn send_charge_answer(
        &mut self,
        job: &Job,
        charge: &Charge,
    ) -> Result<Charged, provider::Refused> {
        let recorder = self.effect_starts();
        let runner = effects::Runner {
            consumer: &self.consumer,
            instance: &self.instance,
            trace: recorder.as_ref(),
        };
        let answer = effects::charge(
            self.redis.untraced(),
            job,
            &runner,
            &self.provider,
            &self.pipeline,
            charge,
        )
        .await;
        trace_effect(
            recorder.as_ref(),
            &answer.as_ref().map_err(|refused| &refused.error),
        );
        answer
    }

    /// Records in the job's metadata which guard handled this delivery,
    /// e.g. `Guard::Claimed`. (It is written together with the delivery's
    /// outcome, when `process_job` returns.)
    pub async fn record_idempotency(&mut self, _job: &Job, guard: Guard) -> anyhow::Result<()> {
        self.idempotency = Some(guard.recorded());
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
        trace::step(self.redis.recorder(), Step::Skipped, claim_key);
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

    /// A token that names this attempt and no other, e.g.
    /// `worker-1/1795426564933-0/1795426565120431`: the holder of a lease writes it
    /// into the claim, so it can later tell its own lease from someone else's.
    pub fn lease_token(&self, job: &Job) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}/{}/{nanos}", self.consumer, job.delivery_id)
    }

    /// Atomically: if `key` holds `expected`, set it to `value` with a TTL of
    /// `ttl_secs` and return `true`; otherwise change nothing and return `false`.
    pub async fn compare_and_set(
        &mut self,
        key: &str,
        expected: &str,
        value: &str,
        ttl_secs: u64,
    ) -> anyhow::Result<bool> {
        anyhow::ensure!(
            ttl_secs > 0,
            "compare_and_set needs a TTL of at least 1 second (got 0)"
        );
        let set: u64 = COMPARE_AND_SET
            .key(key)
            .arg(expected)
            .arg(value)
            .arg(ttl_secs)
            .invoke_async(self.redis.untraced())
            .await?;
        let ttl = ttl_secs.to_string();
        let args = ["compare_and_set", key, expected, value, &ttl];
        trace::helper(self.redis.recorder(), "compare_and_set", &args, answer(set));
        Ok(set == 1)
    }

    /// Atomically: if `key` holds `expected`, delete it and return `true`;
    /// otherwise change nothing and return `false`.
    pub async fn compare_and_delete(&mut self, key: &str, expected: &str) -> anyhow::Result<bool> {
        let deleted: u64 = COMPARE_AND_DELETE
            .key(key)
            .arg(expected)
            .invoke_async(self.redis.untraced())
            .await?;
        let args = ["compare_and_delete", key, expected];
        trace::helper(
            self.redis.recorder(),
            "compare_and_delete",
            &args,
            answer(deleted),
        );
        Ok(deleted == 1)
    }

    /// The error that says "not yet, deliver me again later" (see
    /// [`JobError::RetryLater`]):
    /// `return Err(ctx.retry_later("another delivery holds the lease"));`
    pub fn retry_later(&self, reason: &str) -> JobError {
        JobError::RetryLater {
            reason: reason.to_string(),
        }
    }

    /// The error that says "this attempt failed: try again after `delay`" (see
    /// [`JobError::RetryIn`]): `return Err(ctx.retry_in(delay, "why"));`
    pub fn retry_in(&self, delay: Duration, reason: &str) -> JobError {
        JobError::RetryIn {
            delay,
            reason: reason.to_string(),
        }
    }

    /// Exercise 6: the order email this job asks for, read from its payload
    /// (`job.payload`). A payload that is not an order email can never
    /// succeed: the error dead-letters the delivery, with the reason.
    pub fn order_email(&self, job: &Job) -> Result<OrderEmail, JobError> {
        OrderEmail::from_text(&job.payload)
            .map_err(|reason| self.dead_letter(&format!("not an order email: {reason}")))
    }

    /// The error that says "this can never succeed: stop delivering it" (see
    /// [`JobError::DeadLetter`]): `return Err(ctx.dead_letter("why"));`
    pub fn dead_letter(&self, reason: &str) -> JobError {
        JobError::DeadLetter {
            reason: reason.to_string(),
        }
    }

    /// The effect is about to be sent: a step of the trace, and the recorder
    /// the effect's plumbing writes to. (The keys are read only when the effect
    /// is about to crash or stall, in effects.rs: what the checks judge a dead
    /// or paused holder by.)
    fn effect_starts(&self) -> Option<trace::Shared> {
        let recorder = self.redis.recorder().cloned();
        trace::step(recorder.as_ref(), Step::Effect, "");
        recorder
    }

    /// Writes one outcome (see `outcomes.rs`) and returns the job's count of it.
    async fn record(&mut self, job: &Job, outcome: Outcome<'_>) -> anyhow::Result<u64> {
        let mut pipe = redis::pipe();
        outcome.record(&mut pipe, job, &self.consumer);
        let (count,): (u64,) = pipe.query_async(self.redis.untraced()).await?;
        Ok(count)
    }
}

/// A helper's answer as the trace shows it.
fn answer(n: u64) -> &'static str {
    if n == 1 { "true" } else { "false" }
}

/// The effect's end, in the trace.
fn trace_effect<T, E: std::fmt::Display>(recorder: Option<&trace::Shared>, result: &Result<T, E>) {
    match result {
        Ok(_) => trace::step(recorder, Step::EffectSent, ""),
        Err(err) => trace::step(recorder, Step::EffectFailed, err.to_string()),
    }
}
