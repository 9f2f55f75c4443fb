//! Exercise 1's probes: real submissions through the API, and what came of
//! them (the jobs' records, the runs' event logs). Students need not edit this file.

use std::time::Duration;

use lab_schema::{EventKind, Exercise, JobView, RunEvents, RunSummary, payload};
use serde_json::json;

use super::{CONCURRENT_COPIES, CONCURRENT_JOBS, CONCURRENT_ROUNDS, SEQUENTIAL_COPIES};
use crate::client::Api;
use crate::scenarios::new_run_id;
use crate::verify::{Options, Stuck, submit_and_wait, wait_run};
use crate::wait::poll_until;

/// What the sequential copies showed.
pub(crate) struct Sequential {
    pub(crate) job: JobView,
    /// The job as it was right after its first recorded skip: the claim key's
    /// TTL then, before a short TTL can run out.
    pub(crate) first_skip: Option<JobView>,
    pub(crate) run: RunSummary,
    pub(crate) events: RunEvents,
    /// A copy was not processed in time: what the check saw.
    pub(crate) stuck: Option<Stuck>,
}

/// What the copies sent at once showed.
pub(crate) struct Concurrent {
    pub(crate) round: u32,
    pub(crate) run_id: String,
    pub(crate) run: RunSummary,
    pub(crate) events: RunEvents,
    /// Most copies of one job delivered before its first effect was written.
    pub(crate) overlap: usize,
    pub(crate) first_job: JobView,
    /// The claim keys (and their TTL) that the run's skips named.
    pub(crate) skipped_claims: Vec<(String, i64)>,
    /// The run was not processed in time: what the check saw.
    pub(crate) stuck: Option<Stuck>,
    /// Each job's traced deliveries (its id, then its traces).
    pub(crate) traces: Vec<(String, Vec<lab_schema::trace::Trace>)>,
}

/// What the late copy showed.
pub(crate) struct Late {
    pub(crate) job: JobView,
    /// The job's traced deliveries, oldest first.
    pub(crate) traces: Vec<lab_schema::trace::Trace>,
    pub(crate) late_secs: u64,
    /// A copy was not processed in time: what the check saw.
    pub(crate) stuck: Option<Stuck>,
}

/// What the job whose first effect failed showed.
pub(crate) struct Failure {
    pub(crate) job: JobView,
    pub(crate) failures: usize,
    pub(crate) acknowledged: bool,
    pub(crate) wait_secs: u64,
}

/// What exercise 1's probes found.
pub(crate) struct Evidence {
    pub(crate) seq: Sequential,
    pub(crate) conc: Concurrent,
    pub(crate) late: Late,
    pub(crate) failure: Failure,
}

/// Runs exercise 1's probes with jobs of `exercise` (the later exercises keep
/// these checks); the late and the failure probes mostly wait, so they run
/// alongside the others. `late` is the late probe's first copy when it was
/// sent earlier (a later exercise sends it before its crashes, and the wait
/// for the late copy overlaps them); `None`: it is sent now.
pub(crate) async fn gather(
    api: &Api,
    options: &Options,
    exercise: Exercise,
    late: Option<LateStart>,
) -> anyhow::Result<Evidence> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let waiting = async {
        let late = async {
            let start = match late {
                Some(start) => start,
                None => late_start(api, exercise, timeout).await?,
            };
            late_copy(api, exercise, start, options.late_secs, timeout).await
        };
        tokio::try_join!(
            late,
            effect_failure(api, exercise, options.redelivery_wait_secs, timeout),
        )
    };
    let quick = async {
        let sequential = sequential_duplicates(api, exercise, timeout).await?;
        let concurrent = concurrent_duplicates(api, exercise, timeout).await?;
        anyhow::Ok((sequential, concurrent))
    };
    let ((late, failure), (seq, conc)) = tokio::try_join!(waiting, quick)?;
    Ok(Evidence {
        seq,
        conc,
        late,
        failure,
    })
}

/// One jobId, 3 copies, each sent after the previous one was processed.
pub(crate) async fn sequential_duplicates(
    api: &Api,
    exercise: Exercise,
    limit: Duration,
) -> anyhow::Result<Sequential> {
    let run_id = new_run_id("verify-seq");
    let job_id = format!("{run_id}-job-1");
    let mut first_skip = None;
    let mut stuck = None;
    for n in 1..=SEQUENTIAL_COPIES {
        match submit_and_wait(api, exercise, &job_id, &run_id, u64::from(n), limit).await? {
            Ok(view) if first_skip.is_none() && view.claim_key.is_some() => {
                first_skip = Some(view);
            }
            Ok(_) => {}
            Err(seen) => {
                stuck = Some(seen);
                break;
            }
        }
    }
    Ok(Sequential {
        job: api.job(&job_id).await?,
        first_skip,
        run: api.run(&run_id).await?,
        events: api.events(&run_id).await?,
        stuck,
    })
}

/// Up to [`CONCURRENT_ROUNDS`] rounds of copies sent at once; the first round
/// with a duplicate effect is the answer, otherwise the last one.
pub(crate) async fn concurrent_duplicates(
    api: &Api,
    exercise: Exercise,
    limit: Duration,
) -> anyhow::Result<Concurrent> {
    let mut round = 1;
    loop {
        let mut evidence = concurrent_round(api, exercise, limit).await?;
        evidence.round = round;
        if evidence.run.duplicate_effects > 0 || round == CONCURRENT_ROUNDS {
            return Ok(evidence);
        }
        round += 1;
    }
}

pub(crate) async fn concurrent_round(
    api: &Api,
    exercise: Exercise,
    limit: Duration,
) -> anyhow::Result<Concurrent> {
    let run_id = new_run_id("verify-conc");
    let expected = u64::from(CONCURRENT_JOBS * CONCURRENT_COPIES);
    let mut sends = tokio::task::JoinSet::new();
    for _copy in 0..CONCURRENT_COPIES {
        for n in 1..=CONCURRENT_JOBS {
            let (api, job_id, run_id) = (api.clone(), format!("{run_id}-job-{n}"), run_id.clone());
            sends.spawn(async move { api.submit_to(exercise, &job_id, &run_id, json!({})).await });
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let (run, settled) = wait_run(api, &run_id, expected, limit).await?;
    // How many copies of a job had been delivered before its first effect was
    // written: that many were in flight together (the overlap the check needs).
    let events = api.events(&run_id).await?;
    let mut overlap = 0;
    let mut skipped_claims = Vec::new();
    let mut first_job = None;
    let mut traces = Vec::new();
    for n in 1..=CONCURRENT_JOBS {
        let job_id = format!("{run_id}-job-{n}");
        traces.push((
            job_id.clone(),
            api.job_trace(&job_id).await.unwrap_or_default(),
        ));
        let delivered_before_effect = events
            .events
            .iter()
            .filter(|e| e.job_id == job_id)
            .take_while(|e| e.event != EventKind::Effect)
            .filter(|e| e.event == EventKind::Delivery)
            .count();
        overlap = overlap.max(delivered_before_effect);
        let view = api.job(&job_id).await?;
        if let (Some(key), Some(ttl)) = (view.claim_key.clone(), view.claim_ttl_secs) {
            skipped_claims.push((key, ttl));
        }
        first_job.get_or_insert(view);
    }
    let first_job = first_job.expect("at least one job");
    let stuck = if settled {
        None
    } else {
        Some(Stuck::of(api, &first_job, limit).await)
    };
    Ok(Concurrent {
        round: 1,
        run_id,
        run,
        events,
        overlap,
        first_job,
        skipped_claims,
        stuck,
        traces,
    })
}

/// The late probe's first copy, processed: its job, and when.
pub(crate) struct LateStart {
    run_id: String,
    job_id: String,
    processed: tokio::time::Instant,
    stuck: Option<Stuck>,
}

/// The late probe's first copy: one job, sent and processed.
pub(crate) async fn late_start(
    api: &Api,
    exercise: Exercise,
    limit: Duration,
) -> anyhow::Result<LateStart> {
    let run_id = new_run_id("verify-late");
    let job_id = format!("{run_id}-job-1");
    let stuck = submit_and_wait(api, exercise, &job_id, &run_id, 1, limit)
        .await?
        .err();
    Ok(LateStart {
        run_id,
        job_id,
        processed: tokio::time::Instant::now(),
        stuck,
    })
}

/// The late probe's second copy, sent `late_secs` after the first was processed.
pub(crate) async fn late_copy(
    api: &Api,
    exercise: Exercise,
    start: LateStart,
    late_secs: u64,
    limit: Duration,
) -> anyhow::Result<Late> {
    let LateStart {
        run_id,
        job_id,
        processed,
        mut stuck,
    } = start;
    if stuck.is_none() {
        tokio::time::sleep_until(processed + Duration::from_secs(late_secs)).await;
        stuck = submit_and_wait(api, exercise, &job_id, &run_id, 2, limit)
            .await?
            .err();
    }
    Ok(Late {
        job: api.job(&job_id).await?,
        traces: api.job_trace(&job_id).await.unwrap_or_default(),
        late_secs,
        stuck,
    })
}

/// How soon the failed attempt of [`effect_failure`]'s job is delivered again.
const REDELIVER_AFTER_MS: u64 = 1_000;

/// One job whose first effect attempt fails: its redelivery must apply the effect.
pub(crate) async fn effect_failure(
    api: &Api,
    exercise: Exercise,
    wait_secs: u64,
    limit: Duration,
) -> anyhow::Result<Failure> {
    let run_id = new_run_id("verify-fail");
    let job_id = format!("{run_id}-job-1");
    api.submit_to(
        exercise,
        &job_id,
        &run_id,
        // Back a second after the failure, not after the claim idle time (10 s).
        json!({ payload::SIMULATE_EFFECT_FAILURE: payload::ONCE, payload::REDELIVER_AFTER_MS: REDELIVER_AFTER_MS }),
    )
    .await?;
    // First the failing attempt (its effect-failed event), then the redelivery.
    let started = std::time::Instant::now();
    let (_, picked_up) = poll_until(
        started + limit,
        || api.job(&job_id),
        |j| j.process_attempts >= 1,
    )
    .await?;
    if !picked_up {
        anyhow::bail!(
            "job {job_id} was not picked up within {}s. {}",
            limit.as_secs(),
            crate::STUCK_HINT
        );
    }
    let (_, acknowledged) = wait_run(api, &run_id, 1, Duration::from_secs(wait_secs)).await?;
    let job = api.job(&job_id).await?;
    let events = api.events(&run_id).await?;
    Ok(Failure {
        job,
        failures: events.count(EventKind::EffectFailed),
        acknowledged,
        wait_secs,
    })
}
