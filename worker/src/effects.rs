//! The side effect and its ledger. Plumbing: students need not edit this file.
//!
//! The side effect stands for an external action: sending an email, charging a
//! card. Each one is written, in one MULTI/EXEC with the job's `effects`
//! counter and an `effect` event (see `outcomes.rs`), as an entry of the run's ledger stream
//! (`ledger:<runId>`). The run totals count the ledger, so the numbers show
//! every email really "sent".
//!
//! Fault injection: a job submitted with `{"simulateEffectFailure": "once"}` in
//! its payload has its first effect attempt fail (exactly once across all
//! workers), like an email provider that times out once. That is how the lab
//! checks that a guard releases its claim when the effect fails.

use std::time::Duration;

use lab_schema::{events as event, keys, payload};
use redis::aio::ConnectionManager;

use crate::delivery::Job;
use crate::outcomes::Outcome;

/// Waits `delay` (the external call), then records one effect in the ledger.
pub(crate) async fn apply(
    redis: &mut ConnectionManager,
    job: &Job,
    consumer: &str,
    delay: Duration,
) -> anyhow::Result<()> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if wants_one_failure(&job.payload) && fail_this_time(redis, job, consumer).await? {
        tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, "side effect FAILED (simulated: the email provider timed out); nothing was sent");
        anyhow::bail!(
            "the side effect failed (simulated by the payload's {})",
            payload::SIMULATE_EFFECT_FAILURE
        );
    }
    let mut pipe = redis::pipe();
    pipe.atomic().xadd(
        keys::ledger(&job.run_id),
        "*",
        &[
            ("jobId", job.job_id.as_str()),
            ("deliveryId", job.delivery_id.as_str()),
            ("consumer", consumer),
        ],
    );
    Outcome::EffectApplied.record(&mut pipe, job, consumer);
    let (_ledger_id, effects): (String, u64) = pipe.query_async(redis).await?;
    if effects == 1 {
        tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied (email sent)");
    } else {
        tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied AGAIN: this job has now sent {effects} emails");
    }
    Ok(())
}

/// The payload asks for one simulated failure: `{"simulateEffectFailure": "once"}`.
fn wants_one_failure(payload_json: &str) -> bool {
    // Cheap test first: almost no payload mentions it.
    payload_json.contains(payload::SIMULATE_EFFECT_FAILURE)
        && serde_json::from_str::<serde_json::Value>(payload_json)
            .ok()
            .and_then(|v| {
                v.get(payload::SIMULATE_EFFECT_FAILURE)
                    .and_then(|f| f.as_str().map(|f| f == payload::ONCE))
            })
            .unwrap_or(false)
}

/// True for the one attempt (across all workers) that must fail: the first to
/// SET NX the job's failure marker. Records an `effect-failed` event.
async fn fail_this_time(
    redis: &mut ConnectionManager,
    job: &Job,
    consumer: &str,
) -> anyhow::Result<bool> {
    let first: bool = redis::cmd("SET")
        .arg(keys::effect_failure(&job.job_id))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(event::TTL_SECS)
        .query_async(redis)
        .await?;
    if first {
        let mut pipe = redis::pipe();
        Outcome::EffectFailed {
            detail: "simulated failure",
        }
        .record(&mut pipe, job, consumer);
        let _: (u64,) = pipe.query_async(redis).await?;
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::wants_one_failure;

    #[test]
    fn only_the_documented_payload_asks_for_a_failure() {
        assert!(wants_one_failure(r#"{"simulateEffectFailure":"once"}"#));
        assert!(wants_one_failure(
            r#"{"template":"x","simulateEffectFailure":"once"}"#
        ));
        assert!(!wants_one_failure(r#"{"simulateEffectFailure":"always"}"#));
        assert!(!wants_one_failure(
            r#"{"template":"simulateEffectFailure"}"#
        ));
        assert!(!wants_one_failure("{}"));
        assert!(!wants_one_failure("not json simulateEffectFailure"));
    }
}
