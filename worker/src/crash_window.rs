//! # THE EXERCISE of exercise 2: make the claim survive a crash.
//!
//! This is the only file you edit for exercise 2. After editing it, rebuild and
//! restart the workers with `docker compose up --build -d` (natively:
//! `./lab restart worker`), then rerun `crash-window`.
//!
//! `process_job` below is exercise 1's answer: claim with `SET ... NX EX`, then
//! send. It stops duplicates, but a worker that dies AFTER its claim and BEFORE
//! the email leaves the claim behind: the redelivery finds it, skips the job as
//! a duplicate, and the email is never sent. A claim with one state cannot tell
//! "someone is sending it" from "someone was sending it and died".

use crate::context::{Guard, Job, JobContext, JobError};

/// The idempotency key of a job: `processed:<pipeline>:<jobId>`.
fn processed_key(pipeline: &str, job_id: &str) -> String {
    format!("processed:{pipeline}:{job_id}")
}

/// Handles ONE delivery of a job. Called once per delivery, duplicates included.
///
/// Returning `Ok(())` acknowledges the delivery; returning an error leaves it
/// pending, so it is delivered again later.
pub async fn process_job(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    // 1. Count this delivery (every delivery, duplicates too).
    ctx.mark_processing(job).await?;

    // TODO(exercise): give the claim two states.
    //   "processing:<token>"  I am sending it. A LEASE: it expires by itself after
    //                         ctx.lease_ms, so a crashed holder cannot block the job.
    //   "done"                It was sent. Kept for ctx.idempotency_ttl_secs.
    //
    //   1. Your lease value, unique to this attempt (put it after `let key = ...`):
    //          let lease = format!("processing:{}", ctx.lease_token(job));
    //   2. In the SET below: `.arg(&lease)` instead of `.arg(1)`, and
    //      `.arg("PX").arg(ctx.lease_ms)` instead of `.arg("EX").arg(ctx.idempotency_ttl_secs)`.
    //   3. If the SET failed, read the claim before deciding:
    //          let state: Option<String> = redis::cmd("GET").arg(&key)
    //              .query_async(&mut ctx.redis).await?;
    //      If `state.as_deref() == Some("done")`: a duplicate, skip it as below.
    //      Otherwise someone holds (or held) a lease: NOT done, so do NOT skip:
    //          return Err(ctx.retry_later("another delivery holds the lease"));
    //      The delivery comes back a second later (not counted as a failure); once
    //      a crashed holder's lease has run out, it takes the lease itself.
    //   4. If the side effect fails, release YOUR lease only, instead of the DEL:
    //          ctx.compare_and_delete(&key, &lease).await?;
    //   5. After the effect, mark it done, only if the lease is still yours:
    //          ctx.compare_and_set(&key, &lease, "done", ctx.idempotency_ttl_secs).await?;
    //      (It answers false when your lease ran out mid-effect and another
    //      delivery took over: then leave the claim to that delivery.)
    //
    // Why the token: a holder that was paused past its lease must not delete or
    // overwrite the lease of the delivery that took over.
    let key = processed_key(&ctx.pipeline, &job.job_id);
    let claimed: bool = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(ctx.idempotency_ttl_secs)
        .query_async(&mut ctx.redis)
        .await?;
    if !claimed {
        ctx.record_duplicate_skip(job, &key).await?;
        return Ok(());
    }

    // 2. The side effect: the worker can crash right here, after the claim.
    if let Err(err) = ctx.apply_side_effect(job).await {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut ctx.redis)
            .await?;
        return Err(err);
    }

    // 3. Record in the job's metadata which guard protected this effect.
    ctx.record_idempotency(job, Guard::Claimed).await?;
    Ok(())
}
