//! What happened to a delivery, recorded in ONE place. Plumbing: students need
//! not edit this file.
//!
//! Every outcome of a delivery (counted, effect applied, duplicate skipped,
//! effect failed, attempt failed, acknowledged, dead-lettered) is written here,
//! and only here: the job's and the run's counters, and the run's event log
//! (`events:<runId>`, served as `GET /runs/{runId}/events`). Each outcome rides
//! in a pipeline or script the worker sends anyway. The starts of the attempts
//! of one read are written together ([`record_starts`]), before their handlers
//! run, so a run never counts as settled while an attempt is under way; the
//! acknowledgements of many deliveries go in one script ([`Scripts::acknowledge`]),
//! which also pushes back the expiry of each run's records once per batch.
//!
//! Acknowledging and dead-lettering are Lua scripts, because they count an
//! entry only when their XACK succeeds (another worker may hold a copy). Field
//! names reach the scripts as arguments, never by editing the script's text.

use lab_runtime::record;
use lab_schema::{
    Attempt, DEAD_LETTER_MAXLEN, EventKind, Idempotency, JobStatus, RECORD_TTL_SECS, event_log,
    job_field, keys, metrics, run_field,
};

use crate::delivery::Job;

/// One thing that happened to a delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
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
    DeadLettered {
        reason: &'a str,
        class: lab_schema::metrics::DeadLetterClass,
    },
    /// The handler asked to be delivered again later: the attempt ends, the
    /// delivery stays pending, and it is not counted toward `--max-deliveries`.
    RetryLater { reason: &'a str, started_ms: u64 },
    /// The attempt (started at `started_ms`) failed and its retry is scheduled
    /// `delay_ms` from now; `attempt` is the job's count of failed attempts.
    RetryScheduled {
        reason: &'a str,
        delay_ms: u64,
        attempt: u32,
        started_ms: u64,
    },
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
            Outcome::Delivered => {
                pipe.hset(&job_key, job_field::STATUS, JobStatus::Processing.as_str())
                    .ignore()
                    .hincr(&job_key, job_field::PROCESS_ATTEMPTS, 1)
                    .hincr(&run_key, run_field::ATTEMPTS, 1)
                    .ignore();
                // Acknowledged next (or ended as a failure, which pushes the expiry back).
                record::append_event(pipe, event_of(job, consumer), EventKind::Delivery, "");
            }
            Outcome::EffectApplied => {
                record::record_effect(pipe, event_of(job, consumer), "");
            }
            Outcome::DuplicateSkipped { claim_key } => {
                pipe.hset_multiple(
                    &job_key,
                    &[
                        (
                            job_field::IDEMPOTENCY,
                            Idempotency::DuplicateSkipped.as_str(),
                        ),
                        (job_field::CLAIM_KEY, claim_key),
                    ],
                )
                .ignore()
                .hincr(&job_key, job_field::DUPLICATE_SKIPS, 1)
                .hincr(&run_key, run_field::DUPLICATE_SKIPS, 1)
                .ignore();
                count(pipe, metrics::DUPLICATE_SKIPS, job, ("worker", consumer));
                record::append_event(
                    pipe,
                    event_of(job, consumer),
                    EventKind::DuplicateSkip,
                    claim_key,
                );
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
            Outcome::RetryScheduled {
                reason,
                delay_ms,
                attempt: failed,
                started_ms,
            } => {
                pipe.hincr(&job_key, job_field::RETRIES_SCHEDULED, 1)
                    .hdel(keys::attempts(&job.run_id), attempt(started_ms))
                    .ignore()
                    .hincr(&run_key, run_field::RETRIES_SCHEDULED, 1)
                    .ignore();
                count(pipe, metrics::RETRIES_SCHEDULED, job, ("worker", consumer));
                let detail = format!("attempt {failed} failed, retry in {delay_ms} ms: {reason}");
                push_event(pipe, job, EventKind::RetryScheduled, consumer, &detail);
            }
            Outcome::Crashed { when } => {
                pipe.hincr(&job_key, job_field::CRASHES, 1)
                    .hincr(&run_key, run_field::CRASHES, 1)
                    .ignore();
                count(pipe, metrics::FAILURES, job, ("outcome", "crashed"));
                push_event(pipe, job, EventKind::Crashed, consumer, when);
            }
            Outcome::DeadLettered { reason, class } => {
                // The script counted it; this reads the count and logs the event.
                pipe.hincr(&job_key, job_field::DEAD_LETTERED, 0);
                count(pipe, metrics::DEAD_LETTERS, job, ("reason", class.label()));
                push_event(pipe, job, EventKind::DeadLettered, consumer, reason);
            }
        }
    }
}

/// The starts of the attempts of one read, in one write per run before their
/// handlers run: each attempt is in flight until it returns (`attempts:<runId>`),
/// and counted in `GET /metrics`.
pub(crate) fn record_starts(
    pipe: &mut redis::Pipeline,
    jobs: &[&Job],
    consumer: &str,
    instance: &str,
    started_ms: u64,
) {
    let mut by_run: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    let mut by_exercise: Vec<(u8, u64)> = Vec::new();
    for job in jobs {
        let field = Attempt::field(&job.delivery_id, consumer, started_ms);
        let value = Attempt::value(&job.job_id, instance, started_ms);
        match by_run.iter_mut().find(|(run, _)| *run == job.run_id) {
            Some((_, fields)) => fields.push((field, value)),
            None => by_run.push((&job.run_id, vec![(field, value)])),
        }
        match by_exercise
            .iter_mut()
            .find(|(n, _)| *n == job.exercise.number())
        {
            Some((_, count)) => *count += 1,
            None => by_exercise.push((job.exercise.number(), 1)),
        }
    }
    for (run_id, fields) in &by_run {
        let attempts = keys::attempts(run_id);
        pipe.hset_multiple(&attempts, fields)
            .ignore()
            .expire(&attempts, RECORD_TTL_SECS as i64)
            .ignore();
    }
    for (exercise, count) in by_exercise {
        let exercise = exercise.to_string();
        let series = metrics::series(
            metrics::DELIVERIES,
            &[("exercise", &exercise), ("worker", consumer)],
        );
        pipe.hincr(metrics::COUNTERS, series, count).ignore();
    }
}

/// Adds "set the job's `idempotency` to `value`" to `pipe` (no answer kept): what
/// `process_job` recorded with `ctx.record_idempotency`, written with the outcome.
pub(crate) fn record_idempotency(pipe: &mut redis::Pipeline, job: &Job, value: Idempotency) {
    pipe.hset(
        keys::job(&job.job_id),
        job_field::IDEMPOTENCY,
        value.as_str(),
    )
    .ignore();
}

/// Adds this delivery's event to `pipe` (see [`lab_runtime::record::push_event`]).
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
/// once (a redelivered copy acknowledged later finds its entry no longer
/// pending), ends the attempts, writes the guard the handler recorded, marks the
/// job completed once every submission is done, and pushes back the records'
/// expiry. What belongs to a run (its counters, attempts, ledger and event log)
/// is written once per run per batch, and a job's fields in one HSET.
///
/// Which entries are still pending is asked once for the whole batch: XCLAIM
/// with JUSTID names them (moving them to this consumer, without counting a
/// delivery), and one XACK then acknowledges exactly those.
///
/// KEYS: stream, metrics counters, then (run, ledger, attempts, events) per run,
/// then the job of each entry.
/// ARGV: group, consumer, records' ttl, events' ttl, the field names (done, dead,
/// submissions, status, idempotency), the completed status, the run's processed
/// field, the acknowledged counter's series, the number of runs, then (entry id,
/// attempt field, run number from 1, idempotency or '') per entry.
const ACK_SCRIPT: &str = r"
local stream, counters = KEYS[1], KEYS[2]
local group, consumer, ttl, events_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f_done, f_dead, f_submissions, f_status, f_idem = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local completed, f_processed, f_acked = ARGV[10], ARGV[11], ARGV[12]
local runs = tonumber(ARGV[13])
local first_entry, first_job = 14, 3 + 4 * runs
local claim = {stream, group, consumer, 0}
for i = first_entry, #ARGV, 4 do
  claim[#claim + 1] = ARGV[i]
end
claim[#claim + 1] = 'JUSTID'
local acked = redis.call('XCLAIM', unpack(claim))
local is_acked = {}
for _, id in ipairs(acked) do
  is_acked[id] = true
end
if #acked > 0 then
  redis.call('XACK', stream, group, unpack(acked))
  redis.call('XDEL', stream, unpack(acked))
  redis.call('HINCRBY', counters, f_acked, #acked)
end
local processed, attempts = {}, {}
local n = 0
for i = first_entry, #ARGV, 4 do
  local job_key = KEYS[first_job + n]
  n = n + 1
  local id, attempt, run, idem = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local ended = attempts[run] or {}
  ended[#ended + 1] = attempt
  attempts[run] = ended
  local counts = redis.call('HMGET', job_key, f_done, f_dead, f_submissions)
  local done = tonumber(counts[1]) or 0
  local fields = {}
  if is_acked[id] then
    is_acked[id] = nil
    done = done + 1
    fields[#fields + 1] = f_done
    fields[#fields + 1] = done
    processed[run] = (processed[run] or 0) + 1
  end
  if idem ~= '' then
    fields[#fields + 1] = f_idem
    fields[#fields + 1] = idem
  end
  -- Also when this copy was acknowledged before (by another worker): this
  -- delivery may have set the status back to processing after that.
  if done + (tonumber(counts[2]) or 0) >= (tonumber(counts[3]) or 0) then
    fields[#fields + 1] = f_status
    fields[#fields + 1] = completed
  end
  if #fields > 0 then
    redis.call('HSET', job_key, unpack(fields))
  end
  redis.call('EXPIRE', job_key, ttl)
end
for r = 1, runs do
  local run_key, ledger_key, attempts_key, events_key = KEYS[4 * r - 1], KEYS[4 * r], KEYS[4 * r + 1], KEYS[4 * r + 2]
  if processed[r] then
    redis.call('HINCRBY', run_key, f_processed, processed[r])
  end
  if attempts[r] then
    redis.call('HDEL', attempts_key, unpack(attempts[r]))
  end
  redis.call('EXPIRE', run_key, ttl)
  redis.call('EXPIRE', ledger_key, ttl)
  redis.call('EXPIRE', attempts_key, ttl)
  redis.call('EXPIRE', events_key, events_ttl)
end
return #acked
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
    /// What `process_job` recorded with `ctx.record_idempotency`, if anything.
    pub(crate) idempotency: Option<Idempotency>,
    /// The delivery's trace, when its job is traced: written with the batch.
    pub(crate) trace: Option<lab_schema::trace::Trace>,
}

/// Writes the traces of a batch of finished deliveries in one round trip,
/// before the batch is acknowledged (a run that has settled has its traces).
/// A trace that cannot be written is logged, never a reason to hold the batch.
pub(crate) async fn write_traces(redis: &mut impl redis::aio::ConnectionLike, batch: &[Finished]) {
    let mut pipe = redis::pipe();
    let mut any = false;
    for done in batch {
        if let Some(trace) = &done.trace {
            lab_runtime::trace::write(&mut pipe, &done.job_id, trace);
            any = true;
        }
    }
    if any && let Err(err) = pipe.query_async::<()>(redis).await {
        tracing::warn!(error = %err, "could not write the deliveries' traces");
    }
}

/// An entry to move to `jobs:dead`.
pub(crate) struct DeadLetter<'a> {
    pub(crate) entry: &'a redis::streams::StreamId,
    /// The parsed job, whose run then counts the entry; `None` for an entry that
    /// could not be parsed (no API submission counted it, so no run counts it either).
    pub(crate) job: Option<&'a Job>,
    pub(crate) reason: &'a str,
    /// Its reason's class, the metric's label.
    pub(crate) class: lab_schema::metrics::DeadLetterClass,
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
    pub(crate) async fn acknowledge<'a>(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        consumer: &str,
        batch: &'a [Finished],
    ) -> redis::RedisResult<u64> {
        let mut runs: Vec<&str> = Vec::new();
        let run_number =
            |runs: &mut Vec<&'a str>, run_id: &'a str| match runs.iter().position(|r| *r == run_id)
            {
                Some(index) => index + 1,
                None => {
                    runs.push(run_id);
                    runs.len()
                }
            };
        let numbers: Vec<usize> = batch
            .iter()
            .map(|done| run_number(&mut runs, &done.run_id))
            .collect();
        let mut invocation = self.ack.prepare_invoke();
        invocation
            .key(keys::JOB_STREAM)
            .key(metrics::COUNTERS)
            .arg(keys::WORKER_GROUP)
            .arg(consumer)
            .arg(RECORD_TTL_SECS)
            .arg(event_log::TTL_SECS)
            .arg(job_field::DELIVERIES_DONE)
            .arg(job_field::DEAD_LETTERED)
            .arg(job_field::SUBMISSIONS)
            .arg(job_field::STATUS)
            .arg(job_field::IDEMPOTENCY)
            .arg(JobStatus::Completed.as_str())
            .arg(run_field::PROCESSED)
            .arg(metrics::ACKNOWLEDGED)
            .arg(runs.len());
        for run_id in &runs {
            invocation
                .key(keys::run(run_id))
                .key(keys::ledger(run_id))
                .key(keys::attempts(run_id))
                .key(keys::events(run_id));
        }
        for (done, number) in batch.iter().zip(numbers) {
            invocation
                .key(keys::job(&done.job_id))
                .arg(&done.delivery_id)
                .arg(&done.attempt)
                .arg(number)
                .arg(done.idempotency.map(Idempotency::as_str).unwrap_or(""));
        }
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
                class: dead.class,
            }
            .record(&mut pipe, job, consumer);
            let _: (u64,) = pipe.query_async(redis).await?;
        }
        Ok(moved == 1)
    }
}
