//! # THE EXERCISE of exercise 3: make the provider charge once.
//!
//! This is the only file you edit for exercise 3. After editing it, rebuild and
//! restart the workers with `docker compose up --build -d` (natively:
//! `./lab restart worker`), then rerun `double-charge`.
//!
//! `process_job` below is exercise 2's answer (a lease, then `done`), and its
//! side effect is now a charge at the provider, a payment gateway. One window
//! is still open: a worker that dies AFTER the provider charged the card and
//! BEFORE it wrote `done` leaves a lease that runs out, the redelivery takes it,
//! and the card is charged again. No claim in Redis can close this window: the
//! charge and the `done` are in two different systems. The provider must
//! recognise the retry itself, by a key the caller sends with the charge.

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

    // The claim has two states: "processing:<token>", a lease that expires by
    // itself after ctx.lease_ms, and "done", kept for the idempotency TTL.
    let key = processed_key(&ctx.pipeline, &job.job_id);
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

    // 2. The side effect: charge the card at the provider. The worker can crash
    //    right after the provider charged, before step 3 writes `done`.
    let charge = ctx.charge_for(job);

    // TODO(exercise): let the provider recognise a retry of this charge.
    //   1. Give the charge an idempotency key, the same on every delivery of this
    //      job in this pipeline, different for anything else (first change
    //      `let charge` above to `let mut charge`, so that you may change it):
    //          charge.idempotency_key = Some(format!("charge:{}:{}", ctx.pipeline, job.job_id));
    //      NOT job.delivery_id, a random value or the time: each delivery would
    //      then be a new charge. NOT job.job_id alone: two pipelines acting on the
    //      same job would share a key, and the second one's charge would be
    //      answered as a "replay" of the first and never made.
    //   2. Leave `charge.body` as it is: the provider compares the body of a
    //      retry with the first one (an attempt number or a timestamp in it turns
    //      every retry into a 422).
    //   3. Handle what the provider answers, with a `match` instead of the
    //      `if let` below (add `ProviderError` to the `use` line at the top):
    //          Ok(charged)  charged now, or a replay of the first charge
    //                 (`charged.replayed` says which). Either way the card was
    //                 charged once: go on.
    //          Err(ProviderError::InFlight)  409: our first request with this key
    //                 is still running there. NOT done: release the lease and
    //                 return Err(ctx.retry_later("the provider is still charging")).
    //          Err(ProviderError::KeyReused(why))  422: the key was used with
    //                 another body. A bug, retrying cannot fix it: release the
    //                 lease and return Err(ctx.dead_letter(&why)).
    //          Err(other)  as below: release the lease, return Err(other.into()).
    if let Err(err) = ctx.send_charge(job, &charge).await {
        // No charge confirmed: release OUR lease so the redelivery can charge.
        ctx.compare_and_delete(&key, &lease).await?;
        return Err(err.into());
    }

    // 3. Done, written only if the lease is still ours (compare-and-set).
    if !ctx
        .compare_and_set(&key, &lease, "done", ctx.idempotency_ttl_secs)
        .await?
    {
        tracing::warn!(job_id = %job.job_id, "the lease ran out during the charge and another delivery took over");
    }
    ctx.record_idempotency(job, Guard::Claimed).await?;
    Ok(())
}
