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

use crate::context::{Job, JobContext, ProviderError};

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

    // 2. The side effect: charge the card at the provider, with an idempotency
    //    key that is the same on every delivery of this job in this pipeline:
    //    a retry after a crash is then answered with the first charge (a replay)
    //    instead of charging again. The body stays as built: the same every time.
    let mut charge = ctx.charge_for(job);
    charge.idempotency_key = Some(format!("charge:{}:{}", ctx.pipeline, job.job_id));
    match ctx.send_charge(job, &charge).await {
        // Charged now, or a replay of the first charge: charged once either way.
        Ok(_charged) => {}
        // 409: our first request is still running at the provider. Not done yet.
        Err(ProviderError::InFlight) => {
            ctx.compare_and_delete(&key, &lease).await?;
            return Err(ctx.retry_later("the provider is still charging"));
        }
        // 422: the key was used with another body. A bug: retrying cannot help.
        Err(ProviderError::KeyReused(why)) => {
            ctx.compare_and_delete(&key, &lease).await?;
            return Err(ctx.dead_letter(&why));
        }
        // No charge confirmed: release OUR lease so the redelivery can charge.
        Err(err) => {
            ctx.compare_and_delete(&key, &lease).await?;
            return Err(err.into());
        }
    }

    // 3. Done, written only if the lease is still ours (compare-and-set).
    if !ctx
        .compare_and_set(&key, &lease, "done", ctx.idempotency_ttl_secs)
        .await?
    {
        tracing::warn!(job_id = %job.job_id, "the lease ran out during the charge and another delivery took over");
    }
    ctx.record_idempotency(job, "claimed").await?;
    Ok(())
}
