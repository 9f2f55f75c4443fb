//! The side effects and the faults around them. Plumbing: students need not edit this file.
//!
//! The side effect stands for an external action. Exercises 1 and 2 send an
//! email: [`apply`] writes it, in one MULTI/EXEC with the job's `effects`
//! counter and an `effect` event, as an entry of the run's ledger stream
//! (`ledger:<runId>`). From exercise 3 on, [`charge`] charges a card at the
//! provider, which writes the same three records when it charges. The run
//! totals count the ledger, so the numbers show every effect really made.
//! Both go through the same faults ([`before_effect`], [`after_effect`]).
//!
//! Fault injection, per job, by payload fields the worker reads (never the
//! student's code): the lab makes failures happen, for real.
//! - `{"simulateEffectFailure": "once"}`: the first effect attempt of the job
//!   fails (exactly once across all workers), like an email provider that times
//!   out once. That is how the lab checks that a guard releases its claim.
//! - `{"simulateCrash": "before-effect"}`: the worker process dies (SIGKILL to itself) when the
//!   effect is about to run (after the handler's claim), once across all
//!   workers. A real crash: the process dies with everything it had in flight,
//!   and `./lab` or compose starts it again. `"after-effect"`: the same, right
//!   after the effect was applied (before the handler can record it).
//! - `{"stallMs": [4000, 0, 2500]}`: the n-th effect attempt of the job stalls
//!   that many milliseconds first, as a worker paused while it holds a claim.

use std::time::Duration;

use lab_schema::trace::Step;
use lab_schema::{event_log, keys, now_ms, payload};
use redis::aio::ConnectionManager;

use crate::delivery::Job;
use crate::outcomes::Outcome;
use crate::provider::{Charge, Charged, ProviderClient, ProviderError, Refused};

/// Held by the job whose simulated crash is under way in this process.
static CRASH_GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Who runs the effect: the consumer name and this process's instance id.
pub(crate) struct Runner<'a> {
    pub(crate) consumer: &'a str,
    pub(crate) instance: &'a str,
    /// The delivery's trace, when its job is traced: a crash writes it first.
    pub(crate) trace: Option<&'a lab_runtime::trace::Shared>,
}

/// The side effect of exercises 1 and 2: waits `delay` (the external call),
/// then records one effect in the run's ledger.
pub(crate) async fn apply(
    redis: &mut ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
    delay: Duration,
) -> anyhow::Result<()> {
    before_effect(redis, job, runner, delay).await?;
    let consumer = runner.consumer;
    let mut pipe = redis::pipe();
    pipe.atomic();
    Outcome::EffectApplied.record(&mut pipe, job, consumer);
    let (effects,): (u64,) = pipe.query_async(redis).await?;
    after_effect(redis, job, runner).await?;
    if effects == 1 {
        tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied (email sent)");
    } else {
        tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, effects, "side effect applied AGAIN: this job has now sent {effects} emails");
    }
    Ok(())
}

/// The side effect from exercise 3 on: a charge at the provider, which records
/// the effect itself when it charges. The same faults as [`apply`] surround it:
/// a crash `after-effect` happens once the provider has answered with a charge.
pub(crate) async fn charge(
    redis: &mut ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
    provider: &ProviderClient,
    pipeline: &str,
    charge: &Charge,
) -> Result<Charged, Refused> {
    let not_sent = |err: anyhow::Error| Refused {
        status: None,
        retry_after: None,
        error: ProviderError::NotSent(format!("{err:#}")),
    };
    before_effect(redis, job, runner, Duration::ZERO)
        .await
        .map_err(not_sent)?;
    let answer = provider.send(job, pipeline, charge).await;
    let key = charge.idempotency_key.as_deref().unwrap_or("(none)");
    match &answer {
        Ok(charged) if charged.replayed => {
            tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, charge_id = %charged.charge_id, idempotency_key = key, "provider REPLAYED its stored answer: charged before, no new charge");
        }
        Ok(charged) => {
            tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, charge_id = %charged.charge_id, idempotency_key = key, "provider charged the card");
        }
        Err(refused) => {
            let err = &refused.error;
            tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, idempotency_key = key, "charge not confirmed: {err}");
        }
    }
    if answer.is_ok()
        && let Err(err) = after_effect(redis, job, runner).await
    {
        // The card WAS charged: the answer stands, whatever the fault hook says.
        tracing::warn!(job_id = %job.job_id, error = %err, "the simulated crash after the charge could not be arranged");
    }
    answer
}

/// What every side effect goes through first: a crash `before-effect`, a
/// stall, the effect's own `delay`, a simulated failure.
async fn before_effect(
    redis: &mut ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
    delay: Duration,
) -> anyhow::Result<()> {
    let consumer = runner.consumer;
    let faults = &job.asks;
    if faults.crash_before_effect {
        crash_once(redis, job, runner, payload::BEFORE_EFFECT).await?;
    }
    if !faults.stall_ms.is_empty() {
        let attempt: u64 = redis::pipe()
            .incr(keys::effect_attempts(&job.job_id), 1)
            .expire(
                keys::effect_attempts(&job.job_id),
                event_log::TTL_SECS as i64,
            )
            .ignore()
            .query_async::<(u64,)>(redis)
            .await?
            .0;
        if let Some(&ms) = faults.stall_ms.get(attempt as usize - 1)
            && ms > 0
        {
            tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, stall_ms = ms, "stalling before the effect (simulated by the payload's stallMs): a paused worker still holding its claim");
            lab_runtime::trace::snapshot_keys(redis, runner.trace).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if faults.fail_once && fail_this_time(redis, job, consumer).await? {
        tracing::warn!(job_id = %job.job_id, delivery_id = %job.delivery_id, "side effect FAILED (simulated: the email provider timed out); nothing was sent");
        anyhow::bail!(
            "the side effect failed (simulated by the payload's {})",
            payload::SIMULATE_EFFECT_FAILURE
        );
    }
    Ok(())
}

/// What every side effect goes through once it happened: a crash `after-effect`.
async fn after_effect(
    redis: &mut ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
) -> anyhow::Result<()> {
    if job.asks.crash_after_effect {
        crash_once(redis, job, runner, payload::AFTER_EFFECT).await?;
    }
    Ok(())
}

/// True for the first caller (across all workers) to SET NX `marker`.
async fn first_time(redis: &mut ConnectionManager, marker: &str) -> anyhow::Result<bool> {
    Ok(redis::cmd("SET")
        .arg(marker)
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(event_log::TTL_SECS)
        .query_async(redis)
        .await?)
}

/// Crashes the process if this job has not crashed it yet (across all workers).
/// One crash per process at a time: a second job flagged to crash waits here
/// while the first takes the process down, and crashes in its own turn when it
/// is delivered again.
pub(crate) async fn crash_once(
    redis: &mut ConnectionManager,
    job: &Job,
    runner: &Runner<'_>,
    when: &str,
) -> anyhow::Result<()> {
    let _gate = CRASH_GATE.lock().await;
    if first_time(redis, &keys::crash(&job.job_id)).await? {
        // The claim as the holder leaves it, for its trace.
        lab_runtime::trace::snapshot_keys(redis, runner.trace).await;
        crash(redis, job, runner, when).await;
    }
    Ok(())
}

/// The simulated crash: writes the obituary (this process's attempts will never
/// finish: the registry says so, and a `crashed` event marks the moment), then
/// kills the process. Nothing after this line runs, as in a real crash.
async fn crash(redis: &mut ConnectionManager, job: &Job, runner: &Runner<'_>, when: &str) -> ! {
    // From now on the heartbeat must not write "alive" over the obituary.
    DYING.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut pipe = redis::pipe();
    pipe.hset(
        keys::WORKERS,
        runner.consumer,
        format!("crashed:{}|{}", runner.instance, now_ms()),
    )
    .ignore();
    Outcome::Crashed { when }.record(&mut pipe, job, runner.consumer);
    if let Some(recorder) = runner.trace {
        lab_runtime::trace::step(Some(recorder), Step::Crashed, when);
        lab_runtime::trace::write(
            &mut pipe,
            &job.job_id,
            &lab_runtime::trace::finish(recorder),
        );
    }
    let _: redis::RedisResult<(u64,)> = pipe.query_async(redis).await;
    tracing::error!(
        job_id = %job.job_id,
        delivery_id = %job.delivery_id,
        "CRASHING on purpose ({}: {when}): the worker process dies now",
        payload::SIMULATE_CRASH,
    );
    die_now()
}

/// Ends the process at once, as the kernel's OOM killer does (SIGKILL: no
/// cleanup, no core dump on a student's laptop).
fn die_now() -> ! {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) on our own pid with SIGKILL; nothing to uphold.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    std::process::abort()
}

/// This process is crashing on purpose: the worker registry must keep saying so.
static DYING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a simulated crash of this process has begun.
pub(crate) fn dying() -> bool {
    DYING.load(std::sync::atomic::Ordering::SeqCst)
}

/// True for the one attempt (across all workers) that must fail: the first to
/// SET NX the job's failure marker. Records an `effect-failed` event.
async fn fail_this_time(
    redis: &mut ConnectionManager,
    job: &Job,
    consumer: &str,
) -> anyhow::Result<bool> {
    let first = first_time(redis, &keys::effect_failure(&job.job_id)).await?;
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
