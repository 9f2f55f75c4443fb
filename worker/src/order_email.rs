//! # THE EXERCISE: claim the EMAIL, not the jobId.
//!
//! This is the only file you edit for exercise 6. After editing it, rebuild and
//! restart the workers with `docker compose up --build -d` (natively:
//! `./lab restart worker`), then rerun the demo.
//!
//! The web frontend sends "send the order email" jobs. When its request times
//! out, it tries again, and every try gets a NEW `jobId` (and a new request id,
//! a new timestamp, a higher retry counter). `process_job` below is exercise
//! 1's solution: it claims `processed:<pipeline>:<jobId>` before sending. A
//! retry under a new jobId claims a key nobody holds, wins, and the customer
//! gets the email twice. Your fix: build the key from WHICH EMAIL it is (its
//! business identity), which every retry of it shares and no other email has.

// `use` brings names from other files into this one.
use crate::context::{Guard, Job, JobContext, JobError, OrderEmail};

/// Exercise 1's key: `processed:<pipeline>:<jobId>`. Right while a client keeps
/// its `jobId` on every retry; the frontend here does not.
fn processed_key(pipeline: &str, job_id: &str) -> String {
    format!("processed:{pipeline}:{job_id}")
}

/// The idempotency key of one order email: the same for every retry of that
/// email, and different for every other email.
#[allow(dead_code)] // remove this line once process_job calls the function
fn email_key(pipeline: &str, email: &OrderEmail) -> String {
    // TODO(exercise): build the key from the business identity of the email.
    //
    // `email` is the job's payload, already read for you, e.g.:
    //     email.order_id          "ord-1042"       which order
    //     email.action            "confirmation"   which email of the order ("shipped", "refund", ...)
    //     email.customer          "cus-77"         who gets it
    //     email.request_id        "req-5f2a91"     the client's request id: NEW on every retry
    //     email.requested_at_ms   1796000000000    when the client sent it:  NEW on every retry
    //     email.retry             1                tries before this one:    NEW on every retry
    // (`job.job_id` is NEW on every retry too: that is the incident.)
    //
    //   1. Choose the fields that say which email this is. Ask yourself:
    //      - an order got its "confirmation"; must its "shipped" email still go out?
    //      - one customer placed two orders: do both get their "confirmation"?
    //      Neither the jobId nor a hash of the whole payload (`job.payload`) is
    //      it: both change on every retry, so every retry would look new.
    //   2. Start the key with `order-email:{pipeline}:`, so it names its pipeline as
    //      exercise 1's does, then the fields you chose.
    //   3. Put a separator between the fields that cannot occur inside them.
    //      Order ids, actions and customers are letters, digits and `-` only
    //      (`POST /jobs` refuses anything else), so `:` is safe and `-` is not.
    //      Without one, two different emails can get the same key: order
    //      "ord-1" + action "2nd-reminder" and order "ord-12" + action
    //      "nd-reminder" both make "ord-12nd-reminder", and the second is never sent.
    //   4. In Rust, `format!("a:{}:{}", x, y)` makes a String with x and y in
    //      the `{}`s (and `{pipeline}` puts the variable `pipeline` in place).
    //      Return it: the last expression of a function, without `;`, is what
    //      it returns. Then remove the `todo!` line and the `#[allow]` line above.
    //   5. In process_job below, claim `email_key(&ctx.pipeline, &email)`
    //      instead of `processed_key(&ctx.pipeline, &job.job_id)`.
    //
    // Write down, in a sentence, why you chose those fields: the handout asks.
    todo!("build the key of {email:?} in {pipeline}")
}

/// Handles ONE delivery of an order email job. Called once per delivery:
/// duplicates of a jobId and retries under new jobIds alike.
///
/// Returning `Ok(())` acknowledges the delivery. Returning an error (the `?`
/// after a call does that when the call fails) leaves it unacknowledged, so it
/// is delivered again later.
pub async fn process_job(ctx: &mut JobContext, job: &Job) -> Result<(), JobError> {
    // 1. Count this delivery (every delivery counts, duplicates too).
    ctx.mark_processing(job).await?;

    // 2. Which email this job asks for: the payload, read for you. (A payload
    //    that is not an order email is dead-lettered here.)
    #[allow(unused_variables)] // remove this line once your code uses `email`
    let email = ctx.order_email(job)?;

    // 3. The idempotency guard of exercise 1: claim the key BEFORE the effect.
    //    SET <key> 1 NX EX <ttl> succeeds for exactly one delivery per key.
    //    TODO(exercise): the key is the jobId's; claim the email's instead (step 5 above).
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
        // Another delivery already claimed this key: skip the email.
        ctx.record_duplicate_skip(job, &key).await?;
        return Ok(());
    }

    // 4. The side effect: sends the email (one more entry in the ledger).
    if let Err(err) = ctx.apply_side_effect(job).await {
        // The email was not sent: release the claim, so a redelivery can send it.
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut ctx.redis)
            .await?;
        return Err(err);
    }

    // 5. Record which guard protected this effect.
    ctx.record_idempotency(job, Guard::Claimed).await?;
    Ok(())
}
