//! Exercise 5's handler: exercise 3's charge (a lease, an idempotency key,
//! then `done`), and, when the provider does not charge, the student's retry
//! policy (`retry_policy.rs`) decides: a retry after a delay, or the dead
//! letters. Plumbing: students need not edit this file (but may read it: the
//! types [`Failure`] and [`Decision`] are what the policy works with).
//!
//! A job whose payload has `probePolicy` is the grader's probe instead
//! (`lab_schema::probe`): the policy is called on made-up failures and every
//! answer is written down; nothing is charged.

use std::time::Duration;

use lab_schema::probe::{self, Answer, CaseReport, ProbeCase, ProbeReport};
use lab_schema::{Exercise, now_ms};

use crate::context::{Guard, Job, JobContext, JobError};
use crate::registry::retry_policy;

/// One failed attempt, as the retry policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How many attempts of this job have failed, this one included (1 on the
    /// first failure). It travels with the job, so it survives any crash.
    pub attempt: u32,
    /// How long ago the job's first attempt failed (zero on the first failure).
    pub since_first_failure: Duration,
    /// The provider's HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    /// The provider's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// The job, for log lines.
    pub job_id: String,
}

/// What to do with a job whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Schedule the job again, this long from now (zero: at once).
    RetryAfter(Duration),
    /// Give up: move the job to the dead-letter stream `jobs:dead` with this reason.
    DeadLetter(String),
}

/// Handles ONE delivery of a job of exercise 5.
pub async fn process_job(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    if let Some(cases) = probe_cases(job) {
        return run_probe(ctx, job, &cases).await;
    }
    ctx.mark_processing(job).await?;
    // Exercise 3's answer: a lease, then the charge with its key, then done.
    let key = format!("processed:{}:{}", ctx.pipeline, job.job_id);
    let lease = format!("processing:{}", ctx.lease_token(job));
    let taken: bool = redis::cmd("SET")
        .arg(&key)
        .arg(&lease)
        .arg("NX")
        .arg("PX")
        .arg(ctx.lease_ms)
        .query_async(&mut ctx.redis)
        .await?;
    if !taken {
        let state: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut ctx.redis)
            .await?;
        if state.as_deref() == Some("done") {
            ctx.record_duplicate_skip(job, &key).await?;
            return Ok(());
        }
        return Err(ctx.retry_later("another delivery holds the lease"));
    }
    let mut charge = ctx.charge_for(job);
    charge.idempotency_key = Some(format!("charge:{}:{}", ctx.pipeline, job.job_id));
    if let Err(refused) = ctx.send_charge_answer(job, &charge).await {
        ctx.compare_and_delete(&key, &lease).await?;
        let failure = Failure {
            attempt: job.failures.saturating_add(1),
            since_first_failure: Duration::from_millis(
                job.first_failed_ms
                    .map_or(0, |first| now_ms().saturating_sub(first)),
            ),
            status: refused.status,
            retry_after: refused.retry_after,
            job_id: job.job_id.clone(),
        };
        let what = refused.error.to_string();
        return Err(match decide(&failure) {
            Ok(Decision::RetryAfter(delay)) => ctx.retry_in(delay, &what),
            Ok(Decision::DeadLetter(reason)) => ctx.dead_letter(&reason),
            Err(panic) => JobError::Failed(anyhow::anyhow!(
                "the retry policy panicked on {failure:?}: {panic}"
            )),
        });
    }
    if !ctx
        .compare_and_set(&key, &lease, "done", ctx.idempotency_ttl_secs)
        .await?
    {
        tracing::warn!(job_id = %job.job_id, "the lease ran out during the charge and another delivery took over");
    }
    ctx.record_idempotency(job, Guard::Claimed).await?;
    Ok(())
}

/// The student's policy, with a panic turned into an error (its message).
fn decide(failure: &Failure) -> Result<Decision, String> {
    std::panic::catch_unwind(|| retry_policy::decide(failure)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string())
    })
}

/// The probe's cases, when the job is a probe.
fn probe_cases(job: &Job) -> Option<Vec<ProbeCase>> {
    if !job.payload.contains(probe::PROBE_POLICY) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(&job.payload).ok()?;
    serde_json::from_value(value.get(probe::PROBE_POLICY)?.clone()).ok()
}

/// Calls the policy on each case, writes the report to `probe:<jobId>`.
async fn run_probe(ctx: &mut JobContext, job: &Job, cases: &[ProbeCase]) -> Result<(), JobError> {
    let report = ProbeReport {
        code: format!(
            "{} #{}",
            Exercise::RetryStorm.info().student_file,
            lab_schema::code::fingerprint(include_bytes!("retry_policy.rs"))
        ),
        cases: cases.iter().map(live_case).collect(),
    };
    let json = serde_json::to_string(&report)?;
    let _: () = redis::cmd("SET")
        .arg(probe::key(&job.job_id))
        .arg(json)
        .arg("EX")
        .arg(lab_schema::event_log::TTL_SECS)
        .query_async(ctx.redis.untraced())
        .await?;
    Ok(())
}

/// Every life of one case, asked of the student's policy.
fn live_case(case: &ProbeCase) -> CaseReport {
    probe::live_case(case, |call| {
        let failure = Failure {
            attempt: call.attempt,
            since_first_failure: Duration::from_millis(call.since_ms),
            status: call.status,
            retry_after: call.retry_after_ms.map(Duration::from_millis),
            job_id: call.job_id.to_string(),
        };
        match decide(&failure) {
            Ok(Decision::RetryAfter(delay)) => {
                Answer::Retry(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            Ok(Decision::DeadLetter(reason)) => Answer::DeadLetter(reason),
            Err(message) => Answer::Panicked(message),
        }
    })
}
