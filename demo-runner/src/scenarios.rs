//! The scenarios. Each run uses a fresh runId and fresh jobIds, so reruns never
//! collide with earlier ones. Students need not edit this file.
//!
//! Each scenario is a command-line type here (its arguments) that runs it;
//! `registry.rs` lists them. A scenario is handed its name (the subcommand),
//! which its summary records; the names are written nowhere else.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab_schema::measured::Submitted;
use lab_schema::provider::{self, RequestOutcome};
use lab_schema::{Exercise, Measured, RunSummary, payload};
use serde_json::json;
use tokio::task::JoinSet;

use crate::client::Api;
use crate::registry::{Run, RunScenario};
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
    let measured = Measured::Jobs(Submitted {
        job_id: Some(job_id),
        accepted: u64::from(submitted),
        submit_retries: u64::from(retries),
    });
    let mut result = ScenarioRun::new(scenario, run, started, measured);
    result.narration = narration;
    Ok(result)
}

/// `duplicate-load`: `jobs` unique jobIds, each submitted `copies` times,
/// interleaved (copy 1 of every job, then copy 2, ...) and concurrently. The
/// jobs belong to the exercise whose scenario this is (`scenario`), so another
/// exercise can list this shape of run under a name of its own.
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
        exercise: Exercise::of_scenario(scenario).unwrap_or_default(),
        run_id: &run_id,
        jobs: 1..=jobs,
        copies,
        payload: |_| json!({ "template": "welcome-email" }),
    };
    let (submitted, retries) = wave.submit(api).await?;
    let run = wait_settled(api, &run_id, submitted, started + timeout).await?;
    let measured = Measured::Jobs(Submitted {
        job_id: None,
        accepted: submitted,
        submit_retries: u64::from(retries),
    });
    Ok(ScenarioRun::new(scenario, run, started, measured))
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
    let (run, started, submitted) = plan.run(api, timeout).await?;
    Ok(ScenarioRun::new(
        scenario,
        run,
        started,
        Measured::Crashes(submitted),
    ))
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
    let (run, started, submitted) = plan.run(api, timeout).await?;
    // The provider's log says what it answered the charges.
    let requests = api.provider_requests(&run.run_id).await?;
    let count = |outcome| {
        requests
            .requests
            .iter()
            .filter(|r| r.outcome == outcome)
            .count() as u64
    };
    let measured = Measured::Charges {
        submitted,
        answers_dropped: count(RequestOutcome::ChargedAnswerDropped),
        provider_replays: count(RequestOutcome::Replayed),
    };
    Ok(ScenarioRun::new(scenario, run, started, measured))
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
    /// Sends the jobs and waits until the run settles; returns its totals,
    /// when it started and what was sent (the scenario adds what it measures).
    async fn run(
        &self,
        api: &Api,
        timeout: Duration,
    ) -> anyhow::Result<(RunSummary, Instant, Submitted)> {
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
        let sent = Submitted {
            job_id: None,
            accepted: submitted,
            submit_retries: u64::from(retries),
        };
        Ok((run, started, sent))
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
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{scenario}-{ms}-{:06x}", random() & 0xff_ffff)
}

/// A random number, different on every call: enough randomness for ids
/// without a crate.
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has keys of its own (seeded per process, then stepped).
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `duplicate-observe`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct DuplicateObserve {
    /// How many times the jobId is submitted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub copies: u32,
    /// Pause between two submissions, in milliseconds, so each delivery can be watched.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub interval_ms: u64,
}

impl RunScenario for DuplicateObserve {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let interval = Duration::from_millis(self.interval_ms);
        duplicate_observe(
            run.api,
            run.name,
            self.copies,
            interval,
            run.timeout,
            run.narrate_to_stdout,
        )
        .await
    }
}

/// `duplicate-load`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct DuplicateLoad {
    /// Number of unique jobIds.
    #[arg(value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub jobs: u32,
    /// Submissions of each jobId.
    #[arg(value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub copies: u32,
}

impl RunScenario for DuplicateLoad {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        duplicate_load(run.api, run.name, self.jobs, self.copies, run.timeout).await
    }
}

/// When `crash-window` crashes the worker.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// After the claim, before the effect.
    BeforeEffect,
    /// Right after the effect, before the job is marked done.
    AfterEffect,
}

/// `crash-window`'s command line.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct CrashWindow {
    /// Number of unique jobIds.
    #[arg(default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub jobs: u32,
    /// Submissions of each jobId.
    #[arg(default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub copies: u32,
    /// Jobs whose worker crashes (the last N jobs, sent after the others).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub crashes: u32,
    /// When the worker crashes: before the effect (the window exercise 2 closes) or
    /// right after it, before the job is marked done (the window that remains).
    #[arg(long, value_enum, default_value_t = CrashAt::BeforeEffect)]
    pub crash_at: CrashAt,
}

impl RunScenario for CrashWindow {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let CrashWindow {
            jobs,
            copies,
            crashes,
            crash_at,
        } = *self;
        if crashes > jobs {
            anyhow::bail!("--crashes {crashes} is more than the {jobs} jobs");
        }
        let at = match crash_at {
            CrashAt::BeforeEffect => payload::BEFORE_EFFECT,
            CrashAt::AfterEffect => payload::AFTER_EFFECT,
        };
        crash_window(run.api, run.name, jobs, copies, crashes, at, run.timeout).await
    }
}

/// `double-charge`'s command line.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DoubleCharge {
    /// Number of unique jobIds.
    #[arg(default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub jobs: u32,
    /// Submissions of each jobId.
    #[arg(default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub copies: u32,
    /// Jobs whose worker crashes after the charge (the last N jobs, sent after the others).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub crashes: u32,
    /// Jobs whose first charge's answer the provider drops (the caller cannot know it worked).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub dropped: u32,
}

impl RunScenario for DoubleCharge {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let DoubleCharge {
            jobs,
            copies,
            crashes,
            dropped,
        } = *self;
        if crashes + dropped > jobs {
            anyhow::bail!(
                "--crashes {crashes} and --dropped {dropped} are more than the {jobs} jobs"
            );
        }
        double_charge(
            run.api,
            run.name,
            jobs,
            copies,
            crashes,
            dropped,
            run.timeout,
        )
        .await
    }
}
