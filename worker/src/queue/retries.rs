//! Scheduled retries (exercise 5 on): a failed attempt whose handler asked to
//! be tried again after a delay ([`JobError::RetryIn`](crate::context::JobError::RetryIn))
//! is acknowledged and added to the retry set `jobs:retry`, a sorted set by due
//! time, in ONE script; once due, whichever worker gets there first moves it
//! back to the queue, in ONE script. Plumbing: students need not edit this file.
//!
//! As Sidekiq's retry set: the delay can be anything from 0 to hours (it does
//! not wait for the claim idle time), and the attempt count and the time of
//! the first failure travel with the entry (fields `failures` and
//! `firstFailedMs`), never in a worker's memory, so a worker that dies loses
//! neither. Each step is atomic, so a worker that dies at any point loses
//! nothing and duplicates nothing: before the schedule script, the entry is
//! still pending and comes back after the claim idle time; after it, the entry
//! is in the retry set only; a move is in the set or in the stream, never both.
//! `simulateCrash` with `before-schedule`, `after-schedule` or `after-move`
//! makes a real crash at each of these points (tests: `worker/tests/retries.rs`).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lab_schema::{
    JobStatus, MAX_SCHEDULED_ATTEMPTS, entry as field, job_field, keys, now_ms, payload,
};
use redis::streams::StreamId;

use super::Shared;
use super::deliver::{Ended, Handled};
use crate::Handler;
use crate::delivery::Job;
use crate::effects::{self, Runner};
use crate::outcomes::{self, Outcome};

/// How often each worker looks for due retries (two workers: every 25 ms on
/// average). A retry is delivered at most this late.
pub(crate) const MOVE_EVERY: Duration = Duration::from_millis(50);

/// How many due retries one move takes (more are moved at once by the next call).
const MOVE_BATCH: usize = 100;

/// The longest delay scheduled: a year (a policy's larger answer is cut to it).
const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);

/// Acknowledges a failed attempt's entry and adds it to the retry set, if this
/// consumer still owns it with the count it was delivered with.
/// KEYS: stream, retry set, job. ARGV: group, entry id, consumer, delivery
/// count, due (Unix ms), member, the job's status field, `scheduled`, the
/// job's next-retry field. Returns 1 when scheduled, 0 when the entry is not
/// ours any more.
static SCHEDULE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{}
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[7], ARGV[8], ARGV[9], ARGV[5])
return 1
",
        super::deliver::STILL_OURS
    ))
});

/// Moves the due retries back to the queue: each member leaves the set and
/// becomes a new stream entry in the same script. KEYS: retry set, stream.
/// ARGV: now (Unix ms), batch size. Returns (member, new entry id) pairs.
static MOVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local entry = cjson.decode(member)
  moved[#moved + 1] = member
  moved[#moved + 1] = redis.call('XADD', KEYS[2], '*', unpack(entry.fields))
end
return moved
",
    )
});

/// The retry set's member for the next attempt of `entry`: its fields, with the
/// count of failed attempts and the first failure's time, as JSON (`from`, the
/// entry's id, keeps two members of one job apart).
fn member(entry: &StreamId, job: &Job, now: u64) -> String {
    let mut fields: Vec<String> = Vec::with_capacity(entry.map.len() * 2 + 4);
    let mut names: Vec<&String> = entry.map.keys().collect();
    names.sort();
    for name in names {
        if name == field::FAILURES || name == field::FIRST_FAILED_MS {
            continue;
        }
        if let Some(redis::Value::BulkString(bytes)) = entry.map.get(name) {
            fields.push(name.clone());
            fields.push(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    fields.push(field::FAILURES.to_string());
    fields.push((job.failures + 1).to_string());
    fields.push(field::FIRST_FAILED_MS.to_string());
    fields.push(job.first_failed_ms.unwrap_or(now).to_string());
    serde_json::json!({ "from": entry.id, "fields": fields }).to_string()
}

/// A failed attempt whose handler asked to be tried again after `delay`: ends
/// the attempt and schedules the retry (or, past [`MAX_SCHEDULED_ATTEMPTS`],
/// dead-letters it).
pub(crate) async fn schedule<H: Handler>(
    shared: &Arc<Shared<H>>,
    entry: &StreamId,
    job: &Job,
    deliveries: u64,
    delay: Duration,
    reason: &str,
    ended: Ended,
) -> Handled {
    let attempt = job.failures + 1;
    if attempt >= MAX_SCHEDULED_ATTEMPTS {
        let reason = format!(
            "{attempt} attempts failed and the retry policy still said retry ({reason}): the lab's safety net dead-letters it"
        );
        let class = lab_schema::metrics::DeadLetterClass::SafetyNet;
        return super::deliver::dead_letter_after(
            shared, entry, job, reason, class, deliveries, ended,
        )
        .await;
    }
    let runner = Runner {
        consumer: &shared.consumer,
        instance: &shared.instance,
        trace: None,
    };
    let mut redis = shared.redis.clone();
    if job.asks.crash_before_schedule {
        crash(&mut redis, job, &runner, payload::BEFORE_SCHEDULE).await;
    }
    let delay = delay.min(MAX_DELAY);
    let delay_ms = delay.as_millis() as u64;
    let now = now_ms();
    let due = now + delay_ms;
    tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, attempt, retry_in_ms = delay_ms, reason, "attempt failed: retry scheduled");
    let mut pipe = redis::pipe();
    Outcome::RetryScheduled {
        reason,
        delay_ms,
        attempt,
        started_ms: ended.started_ms,
    }
    .record(&mut pipe, job, &shared.consumer);
    if let Some(value) = ended.idempotency {
        outcomes::record_idempotency(&mut pipe, job, value);
    }
    let recorded: redis::RedisResult<(u64,)> = pipe.query_async(&mut redis).await;
    let scheduled = match recorded {
        Ok(_) => {
            SCHEDULE_SCRIPT
                .key(keys::JOB_STREAM)
                .key(keys::RETRY_SET)
                .key(keys::job(&job.job_id))
                .arg(keys::WORKER_GROUP)
                .arg(&job.delivery_id)
                .arg(&*shared.consumer)
                .arg(deliveries)
                .arg(due)
                .arg(member(entry, job, now))
                .arg(job_field::STATUS)
                .arg(JobStatus::Scheduled.as_str())
                .arg(job_field::NEXT_RETRY_MS)
                .invoke_async::<u64>(&mut redis)
                .await
        }
        Err(err) => Err(err),
    };
    match scheduled {
        Ok(1) => {}
        Ok(_) => {
            tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, "another worker took this delivery over meanwhile: leaving it to that worker");
        }
        Err(err) => {
            tracing::warn!(error = %err, job_id = %job.job_id, "could not schedule the retry; the entry comes back after the claim idle time");
        }
    }
    if job.asks.crash_after_schedule {
        crash(&mut redis, job, &runner, payload::AFTER_SCHEDULE).await;
    }
    Handled::RetryScheduled {
        delay_ms,
        reason: reason.to_string(),
    }
}

/// The simulated crash at one step of a retry (once per job, across workers).
async fn crash(
    redis: &mut redis::aio::ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
    when: &str,
) {
    if let Err(err) = effects::crash_once(redis, job, runner, when).await {
        tracing::warn!(job_id = %job.job_id, error = %err, "the simulated crash could not be arranged");
    }
}

/// Moves the due retries back to the queue, in batches; returns how many moved.
pub(crate) async fn move_due<H>(shared: &Shared<H>) -> redis::RedisResult<usize> {
    let mut redis = shared.redis.clone();
    let mut total = 0;
    loop {
        let moved: Vec<String> = MOVE_SCRIPT
            .key(keys::RETRY_SET)
            .key(keys::JOB_STREAM)
            .arg(now_ms())
            .arg(MOVE_BATCH)
            .invoke_async(&mut redis)
            .await?;
        let count = moved.len() / 2;
        total += count;
        for pair in moved.chunks_exact(2) {
            after_move(shared, &mut redis, &pair[0], &pair[1]).await;
        }
        if count < MOVE_BATCH {
            return Ok(total);
        }
    }
}

/// A retry just moved back to the queue as entry `id`: logged, and the
/// simulated crash `after-move` if its job asks for it.
async fn after_move<H>(
    shared: &Shared<H>,
    redis: &mut redis::aio::ConnectionManager,
    member: &str,
    id: &str,
) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(member) else {
        return;
    };
    let fields: Vec<&str> = value["fields"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let map = fields
        .chunks_exact(2)
        .map(|pair| {
            (
                pair[0].to_string(),
                redis::Value::BulkString(pair[1].as_bytes().to_vec()),
            )
        })
        .collect();
    let entry = StreamId {
        id: id.to_string(),
        map,
        ..StreamId::default()
    };
    let Ok(job) = Job::from_entry(&entry) else {
        return;
    };
    tracing::debug!(job_id = %job.job_id, delivery_id = id, attempt = job.failures + 1, "due retry moved back to the queue");
    if job.asks.crash_after_move {
        let runner = Runner {
            consumer: &shared.consumer,
            instance: &shared.instance,
            trace: None,
        };
        crash(redis, &job, &runner, payload::AFTER_MOVE).await;
    }
}

/// Moves due retries every [`MOVE_EVERY`] until the task is aborted.
pub(crate) async fn keep_moving<H>(shared: Arc<Shared<H>>) {
    let mut backoff = super::redis_backoff();
    loop {
        match move_due(&shared).await {
            Ok(_) => {
                backoff.reset();
                tokio::time::sleep(MOVE_EVERY).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not move the due retries; trying again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".to_string(),
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        redis::Value::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
            ..StreamId::default()
        }
    }

    #[test]
    fn a_member_carries_the_fields_the_attempt_count_and_the_first_failure() {
        let first = entry(&[("jobId", "j-1"), ("runId", "r-1"), ("payload", "{}")]);
        let job = Job::from_entry(&first).unwrap();
        assert_eq!((job.failures, job.first_failed_ms), (0, None));
        let m: serde_json::Value = serde_json::from_str(&member(&first, &job, 5000)).unwrap();
        assert_eq!(m["from"], "1-0");
        assert_eq!(
            m["fields"],
            serde_json::json!([
                "jobId",
                "j-1",
                "payload",
                "{}",
                "runId",
                "r-1",
                "failures",
                "1",
                "firstFailedMs",
                "5000"
            ])
        );
        // The next failure counts on, and keeps the first failure's time.
        let again = entry(&[
            ("jobId", "j-1"),
            ("runId", "r-1"),
            ("failures", "1"),
            ("firstFailedMs", "5000"),
        ]);
        let job = Job::from_entry(&again).unwrap();
        assert_eq!((job.failures, job.first_failed_ms), (1, Some(5000)));
        let m: serde_json::Value = serde_json::from_str(&member(&again, &job, 9000)).unwrap();
        assert_eq!(
            m["fields"],
            serde_json::json!([
                "jobId",
                "j-1",
                "runId",
                "r-1",
                "failures",
                "2",
                "firstFailedMs",
                "5000"
            ])
        );
    }
}
