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

use crate::context::{Job, JobContext};

/// The idempotency key of a job: `processed:<pipeline>:<jobId>`.
fn processed_key(pipeline: &str, job_id: &str) -> String {
    format!("processed:{pipeline}:{job_id}")
}

/// Handles ONE delivery of a job. Called once per delivery, duplicates included.
///
/// Returning `Ok(())` acknowledges the delivery; returning an error leaves it
/// pending, so it is delivered again later.
pub async fn process_job(ctx: &mut JobContext, job: &Job) -> anyhow::Result<()> {
    // 1. Count this delivery (every delivery, duplicates too).
    ctx.mark_processing(job).await?;

    // TODO(exercise): give the claim two states.
    //
    //   processing:<token>  "I am sending it", a LEASE: it expires by itself after
    //                       ctx.lease_ms, so a crashed holder cannot block the job forever.
    //   done                "it was sent", kept for ctx.idempotency_ttl_secs.
    //
    //   1. Make a token that is yours alone:  let token = ctx.lease_token(job);
    //      and the lease value:               let lease = format!("processing:{token}");
    //   2. Take the lease:  SET <key> <lease> NX PX <ctx.lease_ms>
    //   3. If that failed, read the claim:  let state: Option<String> = GET <key>
    //        - Some("done"): a duplicate. ctx.record_duplicate_skip(job, &key), return Ok(()).
    //        - anything else (someone holds a live lease, or it just ran out):
    //          NOT done, so do NOT skip it:  return Err(ctx.retry_later("lease held"));
    //          The delivery comes back a little later (it does not count as a failure),
    //          and once a crashed holder's lease has expired, it takes the lease itself.
    //   4. Run the side effect. If it fails, release YOUR lease only:
    //          ctx.compare_and_delete(&key, &lease).await?;  then return the error.
    //   5. Mark it done, only if the lease is still yours (compare-and-set):
    //          ctx.compare_and_set(&key, &lease, "done", ctx.idempotency_ttl_secs).await?
    //      (false: your lease ran out mid-effect and someone else took over; log it.)
    //
    // Why the token: a holder whose lease ran out (it was paused) must not delete or
    // overwrite the lease of the delivery that took over. Why PX: milliseconds.
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
    ctx.record_idempotency(job, "claimed").await?;
    Ok(())
}
