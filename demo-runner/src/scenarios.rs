//! The scenarios. Each run uses a fresh runId and fresh jobIds, so reruns never
//! collide with earlier ones. Students need not edit this file.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab_schema::RunSummary;
use tokio::task::JoinSet;

use crate::client::Api;
use crate::report::{Progress, Summary};

/// How often the scenarios poll the API while waiting.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);

/// Submissions in flight at once during `duplicate-load`.
const SUBMIT_CONCURRENCY: usize = 32;

/// `duplicate-observe`: one jobId submitted `copies` times, `interval` apart
/// (a client retrying); prints a line each time the job's attempts or effects
/// change, then the summary.
pub async fn duplicate_observe(
    api: &Api,
    copies: u32,
    interval: Duration,
    timeout: Duration,
    narrate_to_stdout: bool,
) -> anyhow::Result<Summary> {
    let run_id = new_run_id("observe");
    let job_id = format!("{run_id}-job-1");
    let started = Instant::now();
    let mut narration = Vec::new();
    let mut say = |line: String| {
        if narrate_to_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
        narration.push(line);
    };
    say(format!(
        "submitting jobId {job_id} {copies} times, {}ms apart, and watching it",
        interval.as_millis()
    ));
    let mut submitted = 0;
    let mut retries = 0;
    let mut next_submit = Instant::now();
    let mut last = None;
    let deadline = started + timeout;
    loop {
        if submitted < copies && Instant::now() >= next_submit {
            retries += api.submit(&job_id, &run_id).await?;
            submitted += 1;
            next_submit = Instant::now() + interval;
        }
        let job = api.job(&job_id).await?;
        let now = (
            job.status.clone(),
            job.process_attempts,
            job.effects,
            job.duplicate_skips,
        );
        if last.as_ref() != Some(&now) {
            say(format!(
                "[{:>5.2}s] {:<10} submissions {}  attempts {}  effects {}  duplicate skips {}",
                started.elapsed().as_secs_f64(),
                job.status,
                job.submissions,
                job.process_attempts,
                job.effects,
                job.duplicate_skips
            ));
            last = Some(now);
        }
        let done =
            submitted == copies && job.deliveries_done + job.dead_lettered >= u64::from(copies);
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let run = api.run(&run_id).await?;
    let mut summary = Summary::new("duplicate-observe", Some(job_id), run, started);
    summary.extra = submit_facts(u64::from(submitted), retries);
    summary.narration = narration;
    Ok(summary)
}

/// `accepted` (submissions the API answered 202) and `submit_retries`
/// (attempts repeated after a 5xx or a refused connection).
pub(crate) fn submit_facts(accepted: u64, retries: u32) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("accepted", accepted.into()),
        ("submit_retries", retries.into()),
    ]
}

/// `duplicate-load`: `jobs` unique jobIds, each submitted `copies` times,
/// interleaved (copy 1 of every job, then copy 2, ...) and concurrently.
pub async fn duplicate_load(
    api: &Api,
    jobs: u32,
    copies: u32,
    timeout: Duration,
) -> anyhow::Result<Summary> {
    let run_id = new_run_id("load");
    let expected = u64::from(jobs) * u64::from(copies);
    let started = Instant::now();
    let mut progress = Progress::new("submitted", expected);

    let mut in_flight = JoinSet::new();
    let mut submitted = 0;
    let mut retries = 0;
    for _copy in 0..copies {
        for n in 1..=jobs {
            if in_flight.len() >= SUBMIT_CONCURRENCY {
                retries += in_flight.join_next().await.expect("non-empty")??;
                submitted += 1;
                progress.update(submitted);
            }
            let (api, job_id, run_id) = (api.clone(), format!("{run_id}-job-{n}"), run_id.clone());
            in_flight.spawn(async move { api.submit(&job_id, &run_id).await });
        }
    }
    while let Some(result) = in_flight.join_next().await {
        retries += result??;
        submitted += 1;
        progress.update(submitted);
    }
    progress.finish();

    let run = wait_processed(api, &run_id, expected, started + timeout).await?;
    let mut summary = Summary::new("duplicate-load", None, run, started);
    summary.extra = submit_facts(submitted, retries);
    Ok(summary)
}

pub(crate) fn is_drained(run: &RunSummary, expected: u64) -> bool {
    run.drained && run.total_submissions >= expected
}

/// Polls the run, with a progress display, until its `expected` submissions are
/// all processed (or dead-lettered) or `deadline` passes; returns the last totals.
pub(crate) async fn wait_processed(
    api: &Api,
    run_id: &str,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<RunSummary> {
    let mut progress = Progress::new("processed", expected);
    let run = loop {
        let run = api.run(run_id).await?;
        progress.update(run.processed_deliveries + run.dead_lettered);
        if is_drained(&run, expected) || Instant::now() >= deadline {
            break run;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    progress.finish();
    Ok(run)
}

/// `<scenario>-<unix ms>-<random>`: unique per run (two containers started in
/// the same millisecond still differ), valid as an id, and readable.
pub(crate) fn new_run_id(scenario: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // RandomState is seeded randomly per process: enough randomness without a crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{scenario}-{ms}-{:06x}", random & 0xff_ffff)
}
