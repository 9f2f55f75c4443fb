//! What happened to a delivery, recorded in ONE place. Plumbing: students need
//! not edit this file.
//!
//! Every outcome of a delivery (counted, effect applied, duplicate skipped,
//! effect failed, attempt failed, acknowledged, dead-lettered) is written here,
//! and only here: the job's and the run's counters, and the run's event log
//! (`events:<runId>`, served as `GET /runs/{runId}/events`). Each outcome rides
//! in a pipeline or script the worker sends anyway, except the start of an
//! attempt: it is written on its own before the handler runs (one round trip
//! per delivery), so a run never counts as settled while an attempt is under way.
//!
//! Acknowledging and dead-lettering are Lua scripts, because they count an
//! entry only when their XACK succeeds (another worker may hold a copy). Field
//! names reach the scripts as arguments, never by editing the script's text.

use lab_schema::{
    Attempt, DEAD_LETTER_MAXLEN, EventKind, Idempotency, JobStatus, RECORD_TTL_SECS, job_field,
    keys, metrics, record, run_field,
};

use crate::delivery::Job;

/// One thing that happened to a delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    /// The attempt started: it is in flight until it returns (`attempts:<runId>`).
    AttemptStarted { instance: &'a str, started_ms: u64 },
    /// The delivery is counted: status `processing`, `processAttempts` + 1.
    Delivered,
    /// The side effect was applied: a ledger entry, the job's `effects` + 1, an event.
    EffectApplied,
    /// The guard skipped a duplicate; `claim_key` is the key whose claim failed.
    DuplicateSkipped { claim_key: &'a str },
    /// The side effect failed (simulated).
    EffectFailed { detail: &'a str },
    /// The handler returned an error: the attempt (started at `started_ms`) ends
    /// without an acknowledgement.
    AttemptFailed { error: &'a str, started_ms: u64 },
    /// The entry was moved to `jobs:dead` (counted by [`DEAD_LETTER_SCRIPT`]).
    DeadLettered { reason: &'a str },
    /// The handler asked to be delivered again later: the attempt ends, the
    /// delivery stays pending, and it is not counted toward `--max-deliveries`.
    RetryLater { reason: &'a str, started_ms: u64 },
    /// The worker process is about to die on purpose (`simulateCrash`), `when`
    /// is `before-effect` or `after-effect`.
    Crashed { when: &'a str },
}

/// Adds "+1 on the global counter `name`" (`GET /metrics`) to `pipe`, labelled
/// with the job's exercise and `extra` (no answer kept).
fn count(pipe: &mut redis::Pipeline, name: &str, job: &Job, extra: (&str, &str)) {
    let exercise = job.exercise.number().to_string();
    let series = metrics::series(name, &[("exercise", &exercise), extra]);
    pipe.hincr(metrics::COUNTERS, series, 1).ignore();
}

impl Outcome<'_> {
    /// Adds the writes of this outcome to `pipe`. Exactly one command's answer is
    /// kept: the job's count of this outcome after it (attempts, effects, skips,
    /// ...), a number.
    pub(crate) fn record(&self, pipe: &mut redis::Pipeline, job: &Job, consumer: &str) {
        let job_key = keys::job(&job.job_id);
        let run_key = keys::run(&job.run_id);
        let attempt = |started_ms| Attempt::field(&job.delivery_id, consumer, started_ms);
        match *self {
            Outcome::AttemptStarted {
                instance,
                started_ms,
            } => {
                let attempts = keys::attempts(&job.run_id);
                pipe.hset(
                    &attempts,
                    attempt(started_ms),
                    Attempt::value(&job.job_id, instance, started_ms),
                )
                .expire(&attempts, RECORD_TTL_SECS as i64)
                .ignore();
                count(pipe, metrics::DELIVERIES, job, ("worker", consumer));
            }
            Outcome::Delivered => {
                pipe.hset(&job_key, job_field::STATUS, JobStatus::Processing.as_str())
                    .ignore()
                    .hincr(&job_key, job_field::PROCESS_ATTEMPTS, 1)
                    .hincr(&run_key, run_field::ATTEMPTS, 1)
                    .ignore();
                push_event(pipe, job, EventKind::Delivery, consumer, "");
            }
            Outcome::EffectApplied => {
                record::record_effect(pipe, event_of(job, consumer), "");
            }
            Outcome::DuplicateSkipped { claim_key } => {
                pipe.hset(
                    &job_key,
                    job_field::IDEMPOTENCY,
                    Idempotency::DuplicateSkipped.as_str(),
                )
                .ignore()
                .hset(&job_key, job_field::CLAIM_KEY, claim_key)
                .ignore()
                .hincr(&job_key, job_field::DUPLICATE_SKIPS, 1)
                .hincr(&run_key, run_field::DUPLICATE_SKIPS, 1)
                .ignore();
                count(pipe, metrics::DUPLICATE_SKIPS, job, ("worker", consumer));
                push_event(pipe, job, EventKind::DuplicateSkip, consumer, claim_key);
            }
            Outcome::EffectFailed { detail } => {
                pipe.hincr(&job_key, job_field::EFFECT_FAILURES, 1);
                count(pipe, metrics::FAILURES, job, ("outcome", "effect-failed"));
                push_event(pipe, job, EventKind::EffectFailed, consumer, detail);
            }
            Outcome::AttemptFailed { error, started_ms } => {
                pipe.hincr(&job_key, job_field::ATTEMPT_FAILURES, 1)
                    .hdel(keys::attempts(&job.run_id), attempt(started_ms))
                    .ignore();
                count(pipe, metrics::FAILURES, job, ("outcome", "attempt-failed"));
                push_event(pipe, job, EventKind::AttemptFailed, consumer, error);
            }
            Outcome::RetryLater { reason, started_ms } => {
                pipe.hincr(&job_key, job_field::RETRIES_LATER, 1)
                    .hdel(keys::attempts(&job.run_id), attempt(started_ms))
                    .ignore();
                push_event(pipe, job, EventKind::RetryLater, consumer, reason);
            }
            Outcome::Crashed { when } => {
                pipe.hincr(&job_key, job_field::CRASHES, 1)
                    .hincr(&run_key, run_field::CRASHES, 1)
                    .ignore();
                count(pipe, metrics::FAILURES, job, ("outcome", "crashed"));
                push_event(pipe, job, EventKind::Crashed, consumer, when);
            }
            Outcome::DeadLettered { reason } => {
                // The script counted it; this reads the count and logs the event.
                pipe.hincr(&job_key, job_field::DEAD_LETTERED, 0);
                count(
                    pipe,
                    metrics::DEAD_LETTERS,
                    job,
                    ("outcome", "dead-lettered"),
                );
                push_event(pipe, job, EventKind::DeadLettered, consumer, reason);
            }
        }
    }
}

/// Adds this delivery's event to `pipe` (see [`lab_schema::record::push_event`]).
fn push_event(
    pipe: &mut redis::Pipeline,
    job: &Job,
    kind: EventKind,
    consumer: &str,
    detail: &str,
) {
    record::push_event(pipe, event_of(job, consumer), kind, detail);
}

/// The event fields of this delivery.
pub(crate) fn event_of<'a>(job: &'a Job, consumer: &'a str) -> record::EventOf<'a> {
    record::EventOf {
        run_id: &job.run_id,
        job_id: &job.job_id,
        delivery_id: &job.delivery_id,
        consumer,
    }
}

/// The acknowledged outcome: acknowledges entries, counts each entry of a run
/// once (a redelivered copy acknowledged later finds XACK answering 0), ends
/// the attempts, marks the job completed once every submission is done, and
/// refreshes the records' expiry.
///
/// KEYS: stream, then (job, run, ledger, attempts) per entry, then the metrics
/// counters (last).
/// ARGV: group, ttl, then the field names (done, dead, submissions, status), the
/// completed status, the run's processed field, the acknowledged counter's
/// series, then (entry id, attempt field) per entry.
const ACK_SCRIPT: &str = r"
local group, ttl = ARGV[1], ARGV[2]
local f_done, f_dead, f_submissions, f_status = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local completed, f_processed, f_acked = ARGV[7], ARGV[8], ARGV[9]
local first = 10
local acked = 0
for i = first, #ARGV, 2 do
  local k = 4 * ((i - first) / 2) + 1
  local job_key, run_key, ledger_key, attempts_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local id, attempt = ARGV[i], ARGV[i + 1]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    acked = acked + 1
    redis.call('HINCRBY', job_key, f_done, 1)
    redis.call('HINCRBY', run_key, f_processed, 1)
  end
  redis.call('HDEL', attempts_key, attempt)
  -- Also when XACK answered 0 (another copy was acknowledged first): this
  -- delivery may have set the status back to processing after that ack.
  local done = tonumber(redis.call('HGET', job_key, f_done) or '0')
  local dead = tonumber(redis.call('HGET', job_key, f_dead) or '0')
  local submitted = tonumber(redis.call('HGET', job_key, f_submissions) or '0')
  if done + dead >= submitted then
    redis.call('HSET', job_key, f_status, completed)
  end
  redis.call('EXPIRE', job_key, ttl)
  redis.call('EXPIRE', run_key, ttl)
  redis.call('EXPIRE', ledger_key, ttl)
end
if acked > 0 then
  redis.call('HINCRBY', KEYS[#KEYS], f_acked, acked)
end
return acked
";

/// The dead-lettered outcome: moves one entry to the dead-letter stream, once
/// (only the caller whose XACK succeeds writes it; another worker may have
/// claimed the same entry), and counts it in its job and run.
///
/// KEYS: stream, dead-letter stream, and (job, run, ledger) when the entry
/// belongs to a run that counts it. (An attempt of it that started was ended
/// before, as a failed attempt.)
/// ARGV: group, entry id, maxlen, ttl, the dead field, the status field, the
/// dead-lettered status, then field/value pairs for the dead letter.
const DEAD_LETTER_SCRIPT: &str = r"
local group, id, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f_dead, f_status, dead_status = ARGV[5], ARGV[6], ARGV[7]
if redis.call('XACK', KEYS[1], group, id) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 8))
redis.call('XDEL', KEYS[1], id)
if #KEYS == 5 then
  redis.call('HINCRBY', KEYS[3], f_dead, 1)
  redis.call('HSET', KEYS[3], f_status, dead_status)
  redis.call('HINCRBY', KEYS[4], f_dead, 1)
  for k = 3, 5 do
    redis.call('EXPIRE', KEYS[k], ttl)
  end
end
return 1
";

/// The scripts of the two outcomes decided by an XACK.
pub(crate) struct Scripts {
    ack: redis::Script,
    dead_letter: redis::Script,
}

/// A delivery whose handler returned `Ok`, waiting to be acknowledged.
pub(crate) struct Finished {
    pub(crate) delivery_id: String,
    pub(crate) job_id: String,
    pub(crate) run_id: String,
    /// The attempt's field in `attempts:<runId>` (see `lab_schema::Attempt::field`).
    pub(crate) attempt: String,
}

/// An entry to move to `jobs:dead`.
pub(crate) struct DeadLetter<'a> {
    pub(crate) entry: &'a redis::streams::StreamId,
    /// The parsed job, whose run then counts the entry; `None` for an entry that
    /// could not be parsed (no API submission counted it, so no run counts it either).
    pub(crate) job: Option<&'a Job>,
    pub(crate) reason: &'a str,
    pub(crate) deliveries: u64,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            ack: redis::Script::new(ACK_SCRIPT),
            dead_letter: redis::Script::new(DEAD_LETTER_SCRIPT),
        }
    }

    /// Acknowledges a batch of finished deliveries in one round trip; returns
    /// how many entries this call acknowledged first.
    pub(crate) async fn acknowledge(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        batch: &[Finished],
    ) -> redis::RedisResult<u64> {
        let mut invocation = self.ack.prepare_invoke();
        invocation
            .key(keys::JOB_STREAM)
            .arg(keys::WORKER_GROUP)
            .arg(RECORD_TTL_SECS)
            .arg(job_field::DELIVERIES_DONE)
            .arg(job_field::DEAD_LETTERED)
            .arg(job_field::SUBMISSIONS)
            .arg(job_field::STATUS)
            .arg(JobStatus::Completed.as_str())
            .arg(run_field::PROCESSED)
            .arg(metrics::ACKNOWLEDGED);
        for done in batch {
            invocation
                .key(keys::job(&done.job_id))
                .key(keys::run(&done.run_id))
                .key(keys::ledger(&done.run_id))
                .key(keys::attempts(&done.run_id))
                .arg(&done.delivery_id)
                .arg(&done.attempt);
        }
        invocation.key(metrics::COUNTERS);
        invocation.invoke_async(redis).await
    }

    /// Moves an entry to the dead-letter stream `jobs:dead` with the reason (and
    /// every field of the entry, as `entry.<name>`) and acknowledges it, so it
    /// never blocks the queue. `Ok(false)`: another worker moved or acknowledged it first.
    pub(crate) async fn dead_letter(
        &self,
        redis: &mut (impl redis::aio::ConnectionLike + Clone),
        dead: &DeadLetter<'_>,
        consumer: &str,
    ) -> redis::RedisResult<bool> {
        let entry = dead.entry;
        let mut invocation = self.dead_letter.prepare_invoke();
        invocation
            .key(keys::JOB_STREAM)
            .key(keys::DEAD_LETTER_STREAM)
            .arg(keys::WORKER_GROUP)
            .arg(&entry.id)
            .arg(DEAD_LETTER_MAXLEN)
            .arg(RECORD_TTL_SECS)
            .arg(job_field::DEAD_LETTERED)
            .arg(job_field::STATUS)
            .arg(JobStatus::DeadLettered.as_str())
            .arg("deliveryId")
            .arg(&entry.id)
            .arg("reason")
            .arg(dead.reason)
            .arg("deliveries")
            .arg(dead.deliveries)
            .arg("consumer")
            .arg(consumer);
        if let Some(job) = dead.job {
            invocation
                .key(keys::job(&job.job_id))
                .key(keys::run(&job.run_id))
                .key(keys::ledger(&job.run_id));
        }
        for (name, value) in &entry.map {
            if let redis::Value::BulkString(bytes) = value {
                invocation
                    .arg(format!("entry.{name}"))
                    .arg(bytes.as_slice());
            }
        }
        let moved: u64 = invocation.invoke_async(redis).await?;
        if moved == 1
            && let Some(job) = dead.job
        {
            let mut pipe = redis::pipe();
            Outcome::DeadLettered {
                reason: dead.reason,
            }
            .record(&mut pipe, job, consumer);
            let _: (u64,) = pipe.query_async(redis).await?;
        }
        Ok(moved == 1)
    }
}
