//! The run summary, computed in one place from what the API and the workers
//! recorded: `GET /runs/{runId}` and `GET /runs/{runId}/attempts` read it
//! (and, later, a dashboard). Students need not edit this file.
//!
//! A run is *drained* when every submission was acknowledged once (or
//! dead-lettered), and *settled* when, on top of that, no delivery attempt is
//! still out: a worker that was paused or stuck past the claim idle time had its
//! delivery handed to another worker, but it may still apply its effect when it
//! resumes. An attempt is out while the process that started it is the one
//! registered under its consumer name (`workers`); a process replaced by a new
//! one of the same name (it crashed, and was restarted) will never finish it.

use std::collections::HashMap;

use lab_schema::{
    Attempt, AttemptView, RunSummary, job_field, keys, now_ms, parse_worker_value, run_field,
};
use redis::aio::ConnectionManager;

/// The attempts of a run that are still out, and when their worker last beat.
pub async fn attempts_in_flight(
    redis: &mut ConnectionManager,
    run_id: &str,
) -> redis::RedisResult<Vec<AttemptView>> {
    let (attempts, workers): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
        .hgetall(keys::attempts(run_id))
        .hgetall(keys::WORKERS)
        .query_async(redis)
        .await?;
    Ok(live_attempts(&attempts, &workers, now_ms()))
}

/// The attempts whose process is still the registered one for its consumer,
/// oldest first.
fn live_attempts(
    attempts: &HashMap<String, String>,
    workers: &HashMap<String, String>,
    now: u64,
) -> Vec<AttemptView> {
    let mut live: Vec<AttemptView> = attempts
        .iter()
        .filter_map(|(field, value)| Attempt::parse(field, value))
        .filter_map(|attempt| {
            let (instance, heartbeat) = workers
                .get(&attempt.consumer)
                .and_then(|v| parse_worker_value(v))?;
            (instance == attempt.instance).then(|| AttemptView {
                job_id: attempt.job_id,
                delivery_id: attempt.delivery_id,
                consumer: attempt.consumer,
                age_ms: now.saturating_sub(attempt.started_ms),
                heartbeat_age_ms: Some(now.saturating_sub(heartbeat)),
            })
        })
        .collect();
    live.sort_by(|a, b| {
        b.age_ms
            .cmp(&a.age_ms)
            .then(a.delivery_id.cmp(&b.delivery_id))
    });
    live
}

/// Reads a run's counters, its effect ledger, its attempts in flight and (one
/// pipeline) each of its jobs; `None` when no submission ever named the run.
pub async fn run_summary(
    redis: &mut ConnectionManager,
    run_id: &str,
) -> redis::RedisResult<Option<RunSummary>> {
    let (totals, job_ids, ledger_len): (HashMap<String, u64>, Vec<String>, u64) = redis::pipe()
        .hgetall(keys::run(run_id))
        .smembers(keys::run_jobs(run_id))
        .xlen(keys::ledger(run_id))
        .query_async(redis)
        .await?;
    if totals.is_empty() && job_ids.is_empty() {
        return Ok(None);
    }
    let in_flight = attempts_in_flight(redis, run_id).await?;
    let mut pipe = redis::pipe();
    for job_id in &job_ids {
        pipe.cmd("HMGET")
            .arg(keys::job(job_id))
            .arg(job_field::SUBMISSIONS)
            .arg(job_field::EFFECTS)
            .arg(job_field::DELIVERIES_DONE);
    }
    // No jobs (the set was lost with Redis data, counters were written since):
    // nothing to read, and redis-rs refuses an empty pipeline.
    let per_job: Vec<(Option<u64>, Option<u64>, Option<u64>)> = if job_ids.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(redis).await?
    };
    let mut duplicate_effects = 0;
    let mut lost_effects = 0;
    for (job_id, (submissions, effects, done)) in job_ids.iter().zip(per_job) {
        let (submissions, effects, done) = (
            submissions.unwrap_or(0),
            effects.unwrap_or(0),
            done.unwrap_or(0),
        );
        duplicate_effects += effects.saturating_sub(1);
        let still_out = in_flight.iter().any(|a| &a.job_id == job_id);
        if submissions > 0 && done >= submissions && effects == 0 && !still_out {
            lost_effects += 1;
        }
    }
    let total = |f: &str| totals.get(f).copied().unwrap_or(0);
    let total_submissions = total(run_field::SUBMISSIONS);
    let processed = total(run_field::PROCESSED);
    let dead_lettered = total(run_field::DEAD_LETTERED);
    let drained = processed + dead_lettered >= total_submissions;
    Ok(Some(RunSummary {
        run_id: run_id.to_string(),
        unique_jobs: job_ids.len() as u64,
        total_submissions,
        observed_attempts_total: total(run_field::ATTEMPTS),
        observed_effects_total: ledger_len,
        duplicate_effects,
        lost_effects,
        duplicate_skips: total(run_field::DUPLICATE_SKIPS),
        processed_deliveries: processed,
        dead_lettered,
        drained,
        settled: drained && in_flight.is_empty(),
        attempts_in_flight: in_flight.len() as u64,
        crashes: total(run_field::CRASHES),
        ..RunSummary::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_out_while_its_process_is_the_registered_one() {
        let attempts = HashMap::from([
            (
                Attempt::field("1-0", "worker-1", 1),
                Attempt::value("job-1", "100-5", 1_000),
            ),
            (
                Attempt::field("2-0", "worker-2", 1),
                Attempt::value("job-2", "200-5", 2_000),
            ),
            (
                Attempt::field("3-0", "worker-3", 1),
                Attempt::value("job-3", "300-5", 3_000),
            ),
        ]);
        // worker-1 still runs the same process (paused or busy); worker-2 was
        // restarted (a new instance); worker-3 never registered.
        let workers = HashMap::from([
            ("worker-1".to_string(), "100-5|4000".to_string()),
            ("worker-2".to_string(), "201-9|4500".to_string()),
        ]);
        let live = live_attempts(&attempts, &workers, 5_000);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].job_id, "job-1");
        assert_eq!(
            (live[0].age_ms, live[0].heartbeat_age_ms),
            (4_000, Some(1_000))
        );
    }
}
