//! # THE EXERCISE: make `process_job` idempotent.
//!
//! This is the only file you edit. After editing it, rebuild and restart the
//! workers with `docker compose up --build -d` (natively: `./lab restart worker`),
//! then rerun the demo.
//!
//! The queue delivers every job AT LEAST once: a client that retries submits
//! the same `jobId` again, and a worker that dies before acknowledging gets its
//! delivery handed to another worker. So `process_job` can run several times
//! for one logical job, even at the same moment in two worker processes.
//! Right now each of those runs sends the email again. Your fix: claim the job
//! in Redis first, and only the delivery that wins the claim runs the side effect.

// `use` brings names from other files into this one.
use crate::context::{Guard, Job, JobContext, JobError};

/// The idempotency key of a job: `processed:<pipeline>:<jobId>`,
/// e.g. `processed:email:load-1795384698808-fbb3bd-job-7`.
///
/// It is built from the `jobId`, which is the same on every delivery of the job.
/// (`job.delivery_id` is different on every delivery, so it cannot spot a duplicate.)
#[allow(dead_code)] // remove this line once your code calls the function
fn processed_key(pipeline: &str, job_id: &str) -> String {
    format!("processed:{pipeline}:{job_id}")
}

/// Handles ONE delivery of a job. Called once per delivery, duplicates included.
///
/// - `ctx` holds what you need: `ctx.redis` (a Redis connection), `ctx.pipeline`,
///   `ctx.idempotency_ttl_secs`, and helpers such as `ctx.record_duplicate_skip`.
/// - `job` is the delivery: `job.job_id`, `job.run_id`, `job.delivery_id`, `job.payload`.
///
/// Returning `Ok(())` acknowledges the delivery. Returning an error (the `?`
/// after a call does that when the call fails) leaves it unacknowledged, so it
/// is delivered again later.
pub async fn process_job(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    // 1. Count this delivery: status = "processing", processAttempts + 1.
    //    Every delivery is counted, duplicates too: that stays as it is.
    ctx.mark_processing(job).await?;

    // TODO(exercise): claim the job BEFORE the side effect, so a duplicate
    // delivery of the same jobId does not send the email again.
    //
    //   1. Build the key:   let key = processed_key(&ctx.pipeline, &job.job_id);
    //   2. Claim it with one atomic Redis command:
    //          SET <key> 1 NX EX <ttl>
    //      NX = only if the key does not exist yet; EX = expire after <ttl> seconds.
    //      In Rust:
    //          let claimed: bool = redis::cmd("SET")
    //              .arg(&key).arg(1).arg("NX").arg("EX").arg(ctx.idempotency_ttl_secs)
    //              .query_async(&mut ctx.redis)
    //              .await?;
    //      Redis answers OK (claimed = true) to exactly one caller; everyone else
    //      gets nil (claimed = false), even when they ask at the same instant.
    //   3. If !claimed: this delivery is a duplicate. Call
    //          ctx.record_duplicate_skip(job, &key).await?;
    //      (it logs the skip and counts it in the job's metadata), then
    //      `return Ok(());` WITHOUT applying the side effect.
    //   4. If claimed: apply the side effect below, then record `Guard::Claimed`
    //      instead of `Guard::NotImplemented`.
    //   5. If the side effect fails, release the claim (DEL the key) before
    //      returning the error, so the redelivery can send the email instead
    //      of being skipped. That means replacing `ctx.apply_side_effect(job).await?;`
    //      below with:
    //          if let Err(err) = ctx.apply_side_effect(job).await {
    //              let _: () = redis::cmd("DEL").arg(&key).query_async(&mut ctx.redis).await?;
    //              return Err(err);
    //          }
    //
    // Claim first, THEN run the side effect. A GET followed by a SET is not a
    // claim: two deliveries can both GET "nothing" before either SETs.

    // 2. The side effect: stands for sending an email or charging a card.
    //    Each call is one more email in the ledger.
    ctx.apply_side_effect(job).await?;

    // 3. Record in the job's metadata which guard protected this effect.
    ctx.record_idempotency(job, Guard::NotImplemented).await?;
    Ok(())
}
