//! The scenarios. Each run uses a fresh runId and fresh jobIds, so reruns never
//! collide with earlier ones. Students need not edit this file.
//!
//! Each scenario is handed its name (`Scenario::name`, the subcommand), which
//! its summary records; the names are written nowhere else.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab_schema::provider::{self, RequestOutcome};
use lab_schema::{Exercise, payload};
use serde_json::json;
use tokio::task::JoinSet;

use crate::client::Api;
use crate::report::{Progress, ScenarioRun};
use crate::wait::{POLL_EVERY, wait_settled};

/// Submissions in flight at once during `duplicate-load`.
const SUBMIT_CONCURRENCY: usize = 32;

/// `duplicate-observe`: one jobId submitted `copies` times, `interval` apart
/// (a client retrying); prints a line each time the job's attempts or effects
/// change, then the summary.
pub async fn duplicate_observe(
    api: &Api,
    scenario: &'static str,
    copies: u32,
    interval: Duration,
    timeout: Duration,
    narrate_to_stdout: bool,
) -> anyhow::Result<ScenarioRun> {
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
        tokio::time::sleep(POLL_EVERY * 2).await;
    }
    // The job is done; the run's numbers are final once no attempt is still out.
    let run = wait_settled(api, &run_id, u64::from(copies), deadline).await?;
    let mut result = ScenarioRun::new(scenario, run, started);
    result.summary.job_id = Some(job_id);
    result.summary.accepted = Some(u64::from(submitted));
    result.summary.submit_retries = Some(u64::from(retries));
    result.narration = narration;
    Ok(result)
}

/// `duplicate-load`: `jobs` unique jobIds, each submitted `copies` times,
/// interleaved (copy 1 of every job, then copy 2, ...) and concurrently.
pub async fn duplicate_load(
    api: &Api,
    scenario: &'static str,
    jobs: u32,
    copies: u32,
    timeout: Duration,
) -> anyhow::Result<ScenarioRun> {
    let run_id = new_run_id("load");
    let started = Instant::now();
    let wave = Wave {
        exercise: Exercise::DuplicateDelivery,
        run_id: &run_id,
        jobs: 1..=jobs,
        copies,
        payload: |_| json!({ "template": "welcome-email" }),
    };
    let (submitted, retries) = wave.submit(api).await?;
    let run = wait_settled(api, &run_id, submitted, started + timeout).await?;
    let mut result = ScenarioRun::new(scenario, run, started);
    result.summary.accepted = Some(submitted);
    result.summary.submit_retries = Some(u64::from(retries));
    Ok(result)
}

/// `crash-window` (exercise 2): `jobs` jobs of exercise 2, `copies` copies each.
/// First the jobs that run normally, until they are all processed; then the
/// last `crashes` jobs, one after the other, which ask the worker to crash at `crash_at` (after the
/// claim and before the effect, or right after the effect; `simulateCrash`):
/// the worker process dies, once per job, with
/// whatever it has in flight, and is restarted; the deliveries come back. The
/// crashing jobs come last so that a crash takes down only them.
pub async fn crash_window(
    api: &Api,
    scenario: &'static str,
    jobs: u32,
    copies: u32,
    crashes: u32,
    crash_at: &'static str,
    timeout: Duration,
) -> anyhow::Result<ScenarioRun> {
    let plan = CrashPlan {
        scenario,
        exercise: Exercise::CrashWindow,
        jobs,
        copies,
        crashes,
        crash_at,
        dropped: 0,
    };
    plan.run(api, timeout).await
}

/// `double-charge` (exercise 3): `jobs` jobs of `copies` copies; the worker
/// crashes right after the provider charged the last `crashes` jobs, and the
/// provider drops its answer to the first charge of `dropped` more.
pub async fn double_charge(
    api: &Api,
    scenario: &'static str,
    jobs: u32,
    copies: u32,
    crashes: u32,
    dropped: u32,
    timeout: Duration,
) -> anyhow::Result<ScenarioRun> {
    let plan = CrashPlan {
        scenario,
        exercise: Exercise::DoubleCharge,
        jobs,
        copies,
        crashes,
        crash_at: payload::AFTER_EFFECT,
        dropped,
    };
    let mut result = plan.run(api, timeout).await?;
    let requests = api.provider_requests(&result.summary.run_id).await?;
    let count = |outcome| {
        requests
            .requests
            .iter()
            .filter(|r| r.outcome == outcome)
            .count() as u64
    };
    result.summary.answers_dropped = Some(count(RequestOutcome::ChargedAnswerDropped));
    result.summary.provider_replays = Some(count(RequestOutcome::Replayed));
    Ok(result)
}

/// Jobs, some of which crash their worker (one at a time) or lose the
/// provider's answer: `crash-window` and `double-charge`.
struct CrashPlan {
    scenario: &'static str,
    exercise: Exercise,
    jobs: u32,
    copies: u32,
    crashes: u32,
    crash_at: &'static str,
    /// Jobs (before the crashing ones) whose first charge's answer is dropped.
    dropped: u32,
}

impl CrashPlan {
    async fn run(&self, api: &Api, timeout: Duration) -> anyhow::Result<ScenarioRun> {
        let run_id = new_run_id(self.scenario);
        let started = Instant::now();
        let deadline = started + timeout;
        let normal = self.jobs - self.crashes;
        let first_dropped = normal.saturating_sub(self.dropped) + 1;
        let calm = Wave {
            exercise: self.exercise,
            run_id: &run_id,
            jobs: 1..=normal,
            copies: self.copies,
            payload: |n| {
                if n >= first_dropped {
                    json!({ "template": "receipt", "provider": { provider::simulate::DROP_ANSWER: true } })
                } else {
                    json!({ "template": "welcome-email" })
                }
            },
        };
        let (mut submitted, mut retries) = calm.submit(api).await?;
        if submitted > 0 {
            wait_settled(api, &run_id, submitted, deadline).await?;
        }
        // One crashing job at a time: a crash takes down its worker with whatever it
        // has in flight, so two crashing jobs sent together could lose one to the
        // other's crash, and the numbers would change from run to run.
        for n in normal + 1..=self.jobs {
            let crashing = Wave {
                exercise: self.exercise,
                run_id: &run_id,
                jobs: n..=n,
                copies: self.copies,
                payload: |_| json!({ "template": "welcome-email", payload::SIMULATE_CRASH: self.crash_at }),
            };
            let (more, more_retries) = crashing.submit(api).await?;
            submitted += more;
            retries += more_retries;
            wait_settled(api, &run_id, submitted, deadline).await?;
        }
        let run = wait_settled(api, &run_id, submitted, deadline).await?;
        let mut result = ScenarioRun::new(self.scenario, run, started);
        result.summary.accepted = Some(submitted);
        result.summary.submit_retries = Some(u64::from(retries));
        result.summary.crashes.get_or_insert(0);
        Ok(result)
    }
}

/// Jobs `jobs` of a run, each submitted `copies` times, interleaved (copy 1 of
/// every job, then copy 2, ...) and concurrently.
struct Wave<'a, P> {
    exercise: Exercise,
    run_id: &'a str,
    jobs: std::ops::RangeInclusive<u32>,
    copies: u32,
    /// The payload of job `n`.
    payload: P,
}

impl<P: Fn(u32) -> serde_json::Value> Wave<'_, P> {
    /// Submits the wave; returns the accepted submissions and the retries it took.
    async fn submit(&self, api: &Api) -> anyhow::Result<(u64, u32)> {
        let total = u64::from(self.copies) * self.jobs.clone().count() as u64;
        if total == 0 {
            return Ok((0, 0));
        }
        let mut progress = Progress::new("submitted", total);
        let mut in_flight = JoinSet::new();
        let mut submitted = 0;
        let mut retries = 0;
        for _copy in 0..self.copies {
            for n in self.jobs.clone() {
                if in_flight.len() >= SUBMIT_CONCURRENCY {
                    retries += in_flight.join_next().await.expect("non-empty")??;
                    submitted += 1;
                    progress.update(submitted);
                }
                let (api, job_id, run_id) = (
                    api.clone(),
                    format!("{}-job-{n}", self.run_id),
                    self.run_id.to_string(),
                );
                let (exercise, payload) = (self.exercise, (self.payload)(n));
                in_flight
                    .spawn(async move { api.submit_to(exercise, &job_id, &run_id, payload).await });
            }
        }
        while let Some(result) = in_flight.join_next().await {
            retries += result??;
            submitted += 1;
            progress.update(submitted);
        }
        progress.finish();
        Ok((submitted, retries))
    }
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
