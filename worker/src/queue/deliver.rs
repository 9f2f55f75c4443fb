//! One delivery, from start to end: parse the entry, dead-letter it when it
//! can never succeed, otherwise record the attempt (with the others of the same
//! read), run the handler and queue the acknowledgement. Plumbing: students
//! need not edit this file.

use std::sync::{Arc, LazyLock};

use lab_runtime::trace::{self, TracedConnection};
use lab_schema::metrics::DeadLetterClass;
use lab_schema::trace::Step;
use lab_schema::{Attempt, Idempotency, now_ms};
use redis::streams::StreamId;

use super::Shared;
use super::leases::InFlight;
use crate::Handler;
use crate::context::{JobContext, JobError};
use crate::delivery::Job;
use crate::outcomes::{self, DeadLetter, Finished, Outcome};

/// A delivery that is about to run: parsed, within its delivery limit, and
/// marked in flight in this process.
pub(crate) struct Ready {
    entry: StreamId,
    job: Job,
    deliveries: u64,
    in_flight: InFlight,
}

impl Ready {
    pub(crate) fn job_id(&self) -> &str {
        &self.job.job_id
    }
}

/// How a delivery that ran ended (what [`super::Worker::step`] reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The handler returned `Ok`: the delivery is acknowledged.
    Acknowledged,
    /// The handler asked to be delivered again later ([`JobError::RetryLater`]).
    RetryLater { reason: String },
    /// The attempt failed and the handler asked for a retry after a delay
    /// ([`JobError::RetryIn`]): acknowledged and added to `jobs:retry`.
    RetryScheduled { delay_ms: u64, reason: String },
    /// Moved to the dead-letter stream: the handler said it can never succeed
    /// ([`JobError::DeadLetter`]), the entry is not a job, or it failed on each
    /// of its `--max-deliveries` deliveries.
    DeadLettered { reason: String },
    /// The handler failed ([`JobError::Failed`]), or its start could not be
    /// recorded: it stays pending and is delivered again after `claim_idle`.
    Failed { error: String },
}

/// What an entry just read becomes.
pub(crate) enum Prepared {
    /// It runs (once its start is recorded, see [`start`]).
    Ready(Ready),
    /// It never can: it goes to the dead-letter stream ([`Doomed::dead_letter`]).
    DeadLetter(Doomed),
    /// This process is still working on it (claimed again after a Redis hiccup
    /// delayed its lease renewal): it is not run a second time here.
    AlreadyInFlight,
}

/// An entry that can never succeed: not a job, or past its delivery limit.
pub(crate) struct Doomed {
    entry: StreamId,
    job: Option<Job>,
    reason: String,
    deliveries: u64,
}

impl Doomed {
    /// Moves it to the dead-letter stream; returns its job id (if it is a job)
    /// and how it ended.
    pub(crate) async fn dead_letter<H>(self, shared: &Shared<H>) -> (Option<String>, Handled) {
        let Doomed {
            entry,
            job,
            reason,
            deliveries,
        } = self;
        let class = DeadLetterClass::MaxDeliveries;
        dead_letter(shared, &entry, job.as_ref(), &reason, class, deliveries).await;
        (job.map(|j| j.job_id), Handled::DeadLettered { reason })
    }
}

/// Reads the `deliveries`-th delivery (1: the first) of `entry`.
pub(crate) fn prepare<H>(shared: &Shared<H>, entry: StreamId, deliveries: u64) -> Prepared {
    let Some(in_flight) = shared.in_flight.start(&entry.id) else {
        return Prepared::AlreadyInFlight;
    };
    let job = match Job::from_entry(&entry) {
        Ok(job) => job,
        Err(reason) => {
            return Prepared::DeadLetter(Doomed {
                entry,
                job: None,
                reason,
                deliveries,
            });
        }
    };
    let max = shared.config.max_deliveries;
    if deliveries > max {
        let reason = format!(
            "the handler failed on each of its {max} deliveries (--max-deliveries {max}); \
             see the worker log for the errors"
        );
        return Prepared::DeadLetter(Doomed {
            entry,
            job: Some(job),
            reason,
            deliveries,
        });
    }
    Prepared::Ready(Ready {
        entry,
        job,
        deliveries,
        in_flight,
    })
}

/// Records the start of every attempt of `ready` in one round trip, then runs
/// each in a task of its own (which gives its permit back when it ends). The
/// starts are recorded before any handler runs, so a run is never reported
/// settled while one of its attempts is still under way.
pub(crate) async fn start<H: Handler>(
    shared: &Arc<Shared<H>>,
    ready: Vec<(Ready, tokio::sync::OwnedSemaphorePermit)>,
) {
    if ready.is_empty() {
        return;
    }
    let started_ms = now_ms();
    let jobs: Vec<&Job> = ready.iter().map(|(r, _)| &r.job).collect();
    let recorded = record_starts(shared, &jobs, started_ms).await;
    for (ready, permit) in ready {
        let shared = shared.clone();
        match &recorded {
            Ok(()) => {
                tokio::spawn(async move {
                    run(&shared, ready, started_ms).await;
                    drop(permit);
                });
            }
            Err(err) => {
                let error = err.to_string();
                tokio::spawn(async move {
                    not_started(&shared, ready.job, error, started_ms).await;
                    drop(permit);
                });
            }
        }
    }
}

/// One delivery from start to end, alone: records its start, runs the
/// handler, and returns how it ended (what [`super::Worker::step`] does).
pub(crate) async fn handle_one<H: Handler>(shared: &Arc<Shared<H>>, ready: Ready) -> Handled {
    let started_ms = now_ms();
    match record_starts(shared, &[&ready.job], started_ms).await {
        Ok(()) => run(shared, ready, started_ms).await,
        Err(err) => not_started(shared, ready.job, err.to_string(), started_ms).await,
    }
}

/// Records the start of these attempts, in one round trip.
async fn record_starts<H>(
    shared: &Shared<H>,
    jobs: &[&Job],
    started_ms: u64,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    outcomes::record_starts(
        &mut pipe,
        jobs,
        &shared.consumer,
        &shared.instance,
        started_ms,
    );
    let mut redis = shared.redis.clone();
    pipe.query_async(&mut redis).await
}

/// An attempt whose start could not be recorded: its handler does not run, and
/// the entry is redelivered.
async fn not_started<H: Handler>(
    shared: &Arc<Shared<H>>,
    job: Job,
    err: String,
    started_ms: u64,
) -> Handled {
    tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, error = %err, "could not record the attempt; it will be redelivered");
    // Redis may have written it and lost only the answer: end it for sure.
    let error = format!("could not record the attempt: {err}");
    let ended = Ended {
        started_ms,
        idempotency: None,
    };
    end_failed_attempt(shared, job, error.clone(), ended).await;
    Handled::Failed { error }
}

/// Runs the handler on one delivery whose start is recorded, then queues its
/// acknowledgement or records how it ended.
async fn run<H: Handler>(shared: &Arc<Shared<H>>, ready: Ready, started_ms: u64) -> Handled {
    let Ready {
        entry,
        job,
        deliveries,
        in_flight,
    } = ready;
    let max = shared.config.max_deliveries;
    tracing::debug!(job_id = %job.job_id, delivery_id = %job.delivery_id, run_id = %job.run_id, exercise = job.exercise.number(), "delivery received");
    let lease_ms = job.asks.lease_ms.unwrap_or(shared.config.lease_ms);
    let recorder = job.trace.then(|| {
        let recorder = trace::Recorder::start(
            &job.delivery_id,
            &shared.consumer,
            &shared.instance,
            deliveries,
        );
        trace::step(
            Some(&recorder),
            Step::Delivered,
            format!("delivery {deliveries} of this queue entry"),
        );
        recorder
    });
    let mut ctx = JobContext {
        redis: TracedConnection::new(shared.redis.clone(), recorder.clone()),
        pipeline: job
            .pipeline
            .clone()
            .unwrap_or_else(|| shared.config.pipeline.clone()),
        idempotency_ttl_secs: shared.config.idempotency_ttl_secs,
        lease_ms,
        effect_delay: shared.config.effect_delay,
        provider: shared.provider.clone(),
        consumer: shared.consumer.clone(),
        instance: shared.instance.clone(),
        idempotency: None,
    };
    // A panic in the handler (an `unwrap()` on a surprise) ends this attempt as
    // a failure instead of losing track of it.
    let handled = CatchPanic(std::pin::pin!(shared.handler.handle(&mut ctx, &job)))
        .await
        .unwrap_or_else(|panic| {
            Err(JobError::Failed(anyhow::anyhow!(
                "the handler panicked: {panic}"
            )))
        });
    let idempotency = ctx.idempotency.take();
    let trace = recorder.as_ref().map(|r| traced(r, &handled));
    match handled {
        Ok(()) => {
            // Written with the acknowledgement's batch: no round trip of its own.
            let attempt = Attempt::field(&job.delivery_id, &shared.consumer, started_ms);
            let _ = shared.acks.send(Finished {
                delivery_id: job.delivery_id,
                job_id: job.job_id,
                run_id: job.run_id,
                attempt,
                idempotency,
                trace,
            });
            Handled::Acknowledged
        }
        Err(err @ JobError::RetryLater { .. }) => {
            write_trace(shared, &job, trace.as_ref()).await;
            // Not a failure: the lease renewal must stop first, or it would reset
            // the idle time this sets.
            drop(in_flight);
            let ended = Ended {
                started_ms,
                idempotency,
            };
            let reason = err.to_string();
            let put_back = PutBack {
                deliveries,
                counted: false,
                after: super::retry_after_lease(&shared.config, lease_ms),
            };
            retry_later(shared, &job, &reason, put_back, ended).await;
            Handled::RetryLater { reason }
        }
        Err(JobError::RetryIn { delay, reason }) => {
            write_trace(shared, &job, trace.as_ref()).await;
            drop(in_flight);
            let ended = Ended {
                started_ms,
                idempotency,
            };
            super::retries::schedule(shared, &entry, &job, deliveries, delay, &reason, ended).await
        }
        Err(JobError::DeadLetter { reason }) => {
            write_trace(shared, &job, trace.as_ref()).await;
            drop(in_flight);
            let ended = Ended {
                started_ms,
                idempotency,
            };
            let class = DeadLetterClass::Handler;
            dead_letter_after(shared, &entry, &job, reason, class, deliveries, ended).await
        }
        Err(JobError::Failed(err)) => {
            write_trace(shared, &job, trace.as_ref()).await;
            let error = format!("{err:#}");
            tracing::warn!(
                job_id = %job.job_id,
                delivery_id = %job.delivery_id,
                delivery = deliveries,
                max_deliveries = max,
                error,
                "process_job failed: not acknowledged, so it will be redelivered"
            );
            let ended = Ended {
                started_ms,
                idempotency,
            };
            if let Some(after) = job.asks.redeliver_after {
                // The renewal must stop first, or it would reset the idle time.
                drop(in_flight);
                let put_back = PutBack {
                    deliveries,
                    counted: true,
                    after,
                };
                put_back_later(shared, &job, put_back).await;
            }
            end_failed_attempt(shared, job, error.clone(), ended).await;
            Handled::Failed { error }
        }
    }
}

/// Ends a failed attempt and moves its entry to the dead-letter stream with
/// `reason`. When the end cannot be recorded, it is not dead-lettered now: it
/// comes back, and its handler decides again.
pub(crate) async fn dead_letter_after<H: Handler>(
    shared: &Arc<Shared<H>>,
    entry: &StreamId,
    job: &Job,
    reason: String,
    class: DeadLetterClass,
    deliveries: u64,
    ended: Ended,
) -> Handled {
    let failed = Outcome::AttemptFailed {
        error: &reason,
        started_ms: ended.started_ms,
    };
    if let Err(err) = record(shared, job, failed, ended.idempotency).await {
        let error = format!("{reason} ({err})");
        end_failed_attempt(shared, job.clone(), error.clone(), ended).await;
        return Handled::Failed { error };
    }
    dead_letter(shared, entry, Some(job), &reason, class, deliveries).await;
    Handled::DeadLettered { reason }
}

/// The finished trace of a delivery, with how the handler returned.
fn traced(recorder: &trace::Shared, handled: &Result<(), JobError>) -> lab_schema::trace::Trace {
    let returned = match handled {
        Ok(()) => "Ok(())".to_string(),
        Err(JobError::RetryLater { reason }) => format!("Err(retry_later: {reason})"),
        Err(JobError::DeadLetter { reason }) => format!("Err(dead_letter: {reason})"),
        Err(JobError::RetryIn { delay, reason }) => {
            format!("Err(retry_in {} ms: {reason})", delay.as_millis())
        }
        Err(JobError::Failed(err)) => format!("Err({err:#})"),
    };
    trace::step(Some(recorder), Step::Returned, returned);
    trace::finish(recorder)
}

/// Writes the trace of a delivery that did not succeed, before its end is
/// recorded (a run that has settled has all its traces).
async fn write_trace<H>(shared: &Shared<H>, job: &Job, trace: Option<&lab_schema::trace::Trace>) {
    let Some(trace) = trace else { return };
    let mut pipe = redis::pipe();
    trace::write(&mut pipe, &job.job_id, trace);
    let mut redis = shared.redis.clone();
    if let Err(err) = pipe.query_async::<()>(&mut redis).await {
        tracing::warn!(job_id = %job.job_id, error = %err, "could not write the delivery's trace");
    }
}

/// Puts a delivery that asked to be retried later back, if this consumer still
/// owns it with the count it was delivered with (another worker may have taken
/// it over while this one was paused): marks it idle for all but `ARGV[5]` ms of
/// the claim idle time and restores its delivery count, so a worker's next scan
/// for abandoned entries takes it then, and waiting never counts toward
/// `--max-deliveries`. KEYS: stream. ARGV: group, entry id, consumer, delivery
/// count, idle ms, the delivery count to restore. Returns 1 when it was put
/// back, 0 when it is not ours any more.
static RETRY_LATER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{STILL_OURS}
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[5],
  'RETRYCOUNT', ARGV[6], 'JUSTID')
return 1
"
    ))
});

/// The start of a script that acts on a delivery only while this consumer
/// still owns it with the delivery count it was delivered with (another
/// worker may have taken it over while this one was paused): returns 0
/// otherwise. KEYS[1]: stream; ARGV[1..4]: group, entry id, consumer, count.
pub(crate) const STILL_OURS: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local entry = pending[1]
if entry == nil or entry[2] ~= ARGV[3] or tonumber(entry[4]) ~= tonumber(ARGV[4]) then
  return 0
end";

/// "Deliver me again later": ends the attempt, and puts the entry back to be
/// delivered about `retry_after` from now (see [`RETRY_LATER_SCRIPT`]).
async fn retry_later<H: Handler>(
    shared: &Arc<Shared<H>>,
    job: &Job,
    reason: &str,
    put_back: PutBack,
    ended: Ended,
) {
    let started_ms = ended.started_ms;
    tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, retry_in_ms = put_back.after.as_millis() as u64, reason, "not yet: delivering this again later");
    let mut pipe = redis::pipe();
    Outcome::RetryLater { reason, started_ms }.record(&mut pipe, job, &shared.consumer);
    if let Some(value) = ended.idempotency {
        outcomes::record_idempotency(&mut pipe, job, value);
    }
    let mut redis = shared.redis.clone();
    // The script on its own, not in the pipeline: invoke_async loads it into
    // Redis when Redis does not know it yet (a pipeline would fail with NOSCRIPT).
    let recorded: redis::RedisResult<(u64,)> = pipe.query_async(&mut redis).await;
    let put = match recorded {
        Ok(_) => put_back_script(shared, job, &put_back).await,
        Err(err) => Err(err),
    };
    match put {
        Ok(1) => {}
        Ok(_) => {
            tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, "another worker took this delivery over meanwhile: leaving it to that worker")
        }
        Err(err) => {
            tracing::warn!(error = %err, job_id = %job.job_id, "could not schedule the retry; the entry comes back after the claim idle time");
            end_failed_attempt(shared, job.clone(), err.to_string(), ended).await;
        }
    }
}

/// How an entry is put back to be delivered again soon.
struct PutBack {
    /// The delivery count it was delivered with.
    deliveries: u64,
    /// Whether this delivery counts toward `--max-deliveries` (a failure does,
    /// a wait does not).
    counted: bool,
    /// How soon it comes back.
    after: std::time::Duration,
}

/// Puts an entry back to be delivered again `after` from now (see
/// [`RETRY_LATER_SCRIPT`]); `Ok(1)` when it was put back.
async fn put_back_script<H>(
    shared: &Shared<H>,
    job: &Job,
    put: &PutBack,
) -> redis::RedisResult<u64> {
    let idle = shared.config.claim_idle.saturating_sub(put.after);
    let count = if put.counted {
        put.deliveries
    } else {
        put.deliveries.saturating_sub(1)
    };
    let mut redis = shared.redis.clone();
    RETRY_LATER_SCRIPT
        .key(lab_schema::keys::JOB_STREAM)
        .arg(lab_schema::keys::WORKER_GROUP)
        .arg(&job.delivery_id)
        .arg(&*shared.consumer)
        .arg(put.deliveries)
        .arg(idle.as_millis() as u64)
        .arg(count)
        .invoke_async::<u64>(&mut redis)
        .await
}

/// A failed delivery whose job asked to come back sooner than the claim idle
/// time (`redeliverAfterMs`): put back to be delivered again then. When that
/// cannot be done, it comes back after the claim idle time as any other.
async fn put_back_later<H>(shared: &Shared<H>, job: &Job, put: PutBack) {
    match put_back_script(shared, job, &put).await {
        Ok(_) => {
            tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, redeliver_in_ms = put.after.as_millis() as u64, "failed: delivering this again sooner, as its payload asks")
        }
        Err(err) => {
            tracing::warn!(error = %err, job_id = %job.job_id, "could not put the failed delivery back; it comes back after the claim idle time")
        }
    }
}

/// An attempt that ended without an acknowledgement: when it started, and the
/// guard its handler recorded (`ctx.record_idempotency`), written with its end.
pub(crate) struct Ended {
    pub(crate) started_ms: u64,
    pub(crate) idempotency: Option<Idempotency>,
}

/// Records that a failed attempt has ended. It must not stay "in flight", or its
/// run never settles; Redis may be the very reason it failed, so when the first
/// try fails the record is retried in the background while Redis comes back.
async fn end_failed_attempt<H: Handler>(
    shared: &Arc<Shared<H>>,
    job: Job,
    error: String,
    ended: Ended,
) {
    let failed = Outcome::AttemptFailed {
        error: &error,
        started_ms: ended.started_ms,
    };
    if record(shared, &job, failed, ended.idempotency)
        .await
        .is_ok()
    {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut backoff = super::redis_backoff();
        let failed = Outcome::AttemptFailed {
            error: &error,
            started_ms: ended.started_ms,
        };
        let idempotency = ended.idempotency;
        tokio::time::sleep(backoff.next_delay()).await;
        while let Err(err) = record(&shared, &job, failed, idempotency).await {
            if backoff.failures() >= 10 {
                tracing::warn!(error = %err, job_id = %job.job_id, "could not record the end of a failed attempt");
                break;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}

/// Writes `outcome`, and the guard the handler recorded, if any.
async fn record<H>(
    shared: &Shared<H>,
    job: &Job,
    outcome: Outcome<'_>,
    idempotency: Option<Idempotency>,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    outcome.record(&mut pipe, job, &shared.consumer);
    if let Some(value) = idempotency {
        outcomes::record_idempotency(&mut pipe, job, value);
    }
    let mut redis = shared.redis.clone();
    let _: (u64,) = pipe.query_async(&mut redis).await?;
    Ok(())
}

/// Moves an entry that can never succeed to the dead-letter stream.
async fn dead_letter<H>(
    shared: &Shared<H>,
    entry: &StreamId,
    job: Option<&Job>,
    reason: &str,
    class: DeadLetterClass,
    deliveries: u64,
) {
    let dead = DeadLetter {
        entry,
        job,
        reason,
        class,
        deliveries,
    };
    let mut redis = shared.redis.clone();
    match shared
        .scripts
        .dead_letter(&mut redis, &dead, &shared.consumer)
        .await
    {
        Ok(true) => tracing::warn!(
            delivery_id = %entry.id,
            job_id = job.map(|j| j.job_id.as_str()),
            reason,
            "queue entry moved to {}",
            lab_schema::keys::DEAD_LETTER_STREAM
        ),
        Ok(false) => {} // Another worker acknowledged or moved it first.
        Err(err) => {
            tracing::warn!(delivery_id = %entry.id, error = %err, "could not dead-letter; it will be redelivered")
        }
    }
}

/// A future that turns a panic while it runs into an error with the panic's
/// message (as far as it is text).
struct CatchPanic<'a, F>(std::pin::Pin<&'a mut F>);

impl<F: std::future::Future> std::future::Future for CatchPanic<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => std::task::Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string()))),
        }
    }
}
