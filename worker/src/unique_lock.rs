//! The instructor's demonstration beside exercise 6 (`unique-lock`): the
//! worker's side of an enqueue-time unique lock (see
//! `lab_schema::order_email::unique_lock`), and the two workers it is shown
//! with. Plumbing: students need not edit this file.
//!
//! An order email whose payload carries neither a lock nor a demonstration
//! worker goes to the student's `order_email::process_job`, as always.

use lab_schema::order_email::unique_lock::{
    IDEMPOTENT, UNGUARDED, UNTIL_EXECUTED, UNTIL_EXECUTING,
};

use crate::context::{Guard, Job, JobContext, JobError};
use crate::registry::order_email;

/// Deletes the lock only while it still holds this job's id (its TTL may have
/// run out and another job may hold it now).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) end return 0";

/// Runs one delivery of an order email: releases its unique lock when the
/// job starts (`until-executing`) or once it returned `Ok` (`until-executed`),
/// around the worker its payload names.
pub(crate) async fn process_job(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    // Read with the payload's other asks of the plumbing (`asks.rs`).
    let (lock, worker) = (&job.asks.unique_lock, job.asks.demo_worker.as_deref());
    if lock.is_none() && worker.is_none() {
        return order_email::process_job(ctx, job).await;
    }
    if let Some((key, mode)) = lock
        && mode == UNTIL_EXECUTING
    {
        release(ctx, key, &job.job_id).await;
    }
    let result = match worker {
        Some(UNGUARDED) => unguarded(ctx, job).await,
        Some(IDEMPOTENT) => idempotent(ctx, job).await,
        _ => order_email::process_job(ctx, job).await,
    };
    if result.is_ok()
        && let Some((key, mode)) = lock
        && mode == UNTIL_EXECUTED
    {
        release(ctx, key, &job.job_id).await;
    }
    result
}

/// Gives the lock up if this job still holds it. A failure is logged, not
/// returned: the email is sent, and a redelivery would send it again.
async fn release(ctx: &mut JobContext, key: &str, job_id: &str) {
    let released: Result<u64, _> = redis::cmd("EVAL")
        .arg(RELEASE)
        .arg(1)
        .arg(key)
        .arg(job_id)
        .query_async(ctx.redis.untraced())
        .await;
    match released {
        Ok(1) => tracing::info!(job_id, key, "unique lock released"),
        Ok(_) => tracing::info!(job_id, key, "unique lock not ours any more (expired?)"),
        Err(err) => tracing::warn!(job_id, key, error = %err, "could not release the unique lock"),
    }
}

/// A worker with no guard: the lock at the API is all that stands between a
/// retry and a second email.
async fn unguarded(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    ctx.mark_processing(job).await?;
    ctx.apply_side_effect(job).await?;
    ctx.record_idempotency(job, Guard::NotImplemented).await?;
    Ok(())
}

/// An idempotent worker: exercise 2's claim (a lease while sending, then
/// `done`) keyed on exercise 6's identity (the order and the action), so
/// that a crash before the email neither loses it nor lets a retry send it twice.
async fn idempotent(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    ctx.mark_processing(job).await?;
    let email = ctx.order_email(job)?;
    let key = format!(
        "order-email-lease:{}:{}:{}",
        ctx.pipeline, email.order_id, email.action
    );
    let token = ctx.lease_token(job);
    let claimed: bool = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(ctx.lease_ms)
        .query_async(&mut ctx.redis)
        .await?;
    if !claimed {
        let held: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut ctx.redis)
            .await?;
        if held.as_deref() == Some("done") {
            ctx.record_duplicate_skip(job, &key).await?;
            return Ok(());
        }
        return Err(ctx.retry_later("another delivery of this email is sending it"));
    }
    if let Err(err) = ctx.apply_side_effect(job).await {
        ctx.compare_and_delete(&key, &token).await?;
        return Err(err);
    }
    // Done, if the lease is still ours (exercise 2's last step).
    ctx.compare_and_set(&key, &token, "done", ctx.idempotency_ttl_secs)
        .await?;
    ctx.record_idempotency(job, Guard::Claimed).await?;
    Ok(())
}
