//! `load` and `chaos`: many clients submitting duplicates for a while, with or
//! without faults fired partway. Students need not edit this file.
//!
//! `load` is the benchmark: requests per second, the status of every answer,
//! accepted versus processed. `chaos` runs the same load while it kills a worker
//! and restarts Redis (shell commands it is given; `./lab chaos` passes
//! `./lab kill worker-1` and `./lab restart redis`), then waits until the run
//! drains. It shows that the at-least-once plumbing keeps every accepted job
//! and that only the idempotency guard keeps the effects at one per job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lab_runtime::backoff::Backoff;
use lab_schema::measured::{LoadFigures, Submitted};
use lab_schema::order_email::field;
use lab_schema::{Exercise, Measured, RunSummary};
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::{Api, Posted};
use crate::registry::{Run, RunScenario};
use crate::report::ScenarioRun;
use crate::scenarios::new_run_id;
use crate::wait::wait_settled;

/// How the load runs.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Clients submitting at the same time, each one request after the other.
    pub clients: u32,
    /// How long the clients submit.
    pub duration: Duration,
    /// Unique jobIds the clients cycle through (each is submitted many times).
    pub jobs: u32,
    /// Pause of each client between two submissions.
    pub interval: Duration,
    /// The exercise whose jobs are sent (its handler runs them).
    pub exercise: Exercise,
}

impl LoadPlan {
    pub fn new(clients: u32, duration_secs: u64, jobs: u32, interval_ms: u64) -> LoadPlan {
        LoadPlan {
            clients,
            duration: Duration::from_secs(duration_secs),
            jobs,
            interval: Duration::from_millis(interval_ms),
            exercise: Exercise::default(),
        }
    }
}

/// The faults `chaos` fires: a shell command and when to run it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub command: String,
    pub at: Duration,
}

/// The faults `chaos` can fire; each has its summary key (`worker_killed`, `redis_restarted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    KillWorker,
    RestartRedis,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "worker_killed",
            FaultKind::RestartRedis => "redis_restarted",
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// HTTP status of every answer, retries included.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, timeout).
    connection_errors: u64,
    /// Requests repeated after a 5xx or no answer.
    retries: u64,
    /// Submissions answered 202.
    accepted: u64,
    /// How long each request took, in microseconds.
    latencies_us: Vec<u32>,
}

/// The `q`-quantile (0 to 1) of sorted `values`.
fn quantile(sorted: &[u32], q: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    Some(u64::from(sorted[((last as f64) * q).round() as usize]))
}

/// What a load left: the run's totals once it drained, when it started, what
/// the clients saw, and the faults that ran.
struct Loaded {
    run: RunSummary,
    started: Instant,
    load: LoadFigures,
    fired: Vec<FaultKind>,
}

/// Runs the load (and the faults, if any) and waits until the run drains.
async fn run(
    api: &Api,
    scenario: &'static str,
    plan: &LoadPlan,
    faults: &[Fault],
    timeout: Duration,
) -> anyhow::Result<Loaded> {
    let run_id = new_run_id(scenario);
    let started = Instant::now();
    let end = started + plan.duration;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next_job = Arc::new(AtomicU64::new(0));

    // Charges (exercises 3 and 5) go to an account of the run's own: its rate limit is its own.
    let payload = match plan.exercise {
        Exercise::DuplicateDelivery | Exercise::CrashWindow => {
            json!({ "template": "welcome-email" })
        }
        // Exercise 6: order emails, one order per job (`per_job` names it).
        Exercise::NewJobId => json!({
            field::ORDER_ID: format!("ord-{}", crate::new_jobid::run_token(&run_id)),
            field::ACTION: "confirmation",
            field::CUSTOMER: "cus-chaos",
        }),
        _ => json!({ lab_schema::provider::body::ACCOUNT: format!("chaos-{run_id}") }),
    };
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..plan.clients {
        let (api, run_id, tally, next_job) =
            (api.clone(), run_id.clone(), tally.clone(), next_job.clone());
        let (jobs, interval) = (u64::from(plan.jobs), plan.interval);
        let send = (plan.exercise, payload.clone());
        clients.spawn(async move {
            while Instant::now() < end {
                let n = next_job.fetch_add(1, Ordering::Relaxed) % jobs + 1;
                let job_id = format!("{run_id}-job-{n}");
                let send = per_job(&send, n);
                submit_until_accepted(&api, &send, &job_id, &run_id, &tally).await?;
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            anyhow::Ok(())
        });
    }

    let mut fired = Vec::new();
    for fault in faults {
        tokio::time::sleep_until((started + fault.at).into()).await;
        eprintln!(
            "[{:>5.2}s] {}: {}",
            started.elapsed().as_secs_f64(),
            fault.kind.name(),
            fault.command
        );
        fire(&fault.command).await?;
        fired.push(fault.kind);
    }
    while let Some(result) = clients.join_next().await {
        result.context("a client task failed")??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().await);

    let run = wait_settled(api, &run_id, tally.accepted, Instant::now() + timeout).await?;

    let requests: u64 = tally.statuses.values().sum::<u64>() + tally.connection_errors;
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let load = LoadFigures {
        submitted: Submitted {
            job_id: None,
            accepted: tally.accepted,
            submit_retries: tally.retries,
        },
        clients: u64::from(plan.clients),
        duration_secs: plan.duration.as_secs(),
        requests,
        requests_per_sec: (requests as f64 / load_secs).round() as u64,
        latency_p50_us: quantile(&latencies, 0.5),
        latency_p99_us: quantile(&latencies, 0.99),
        connection_errors: tally.connection_errors,
        statuses: tally
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}:{n}"))
            .collect::<Vec<_>>()
            .join(","),
    };
    Ok(Loaded {
        run,
        started,
        load,
        fired,
    })
}

/// Job `n`'s submission: the load's payload, and for exercise 6 an order of
/// its own (`ord-<run>-<n>`), so that each job is one email.
fn per_job(
    (exercise, payload): &(Exercise, serde_json::Value),
    n: u64,
) -> (Exercise, serde_json::Value) {
    let mut payload = payload.clone();
    if *exercise == Exercise::NewJobId
        && let Some(order) = payload.get(field::ORDER_ID).and_then(|o| o.as_str())
    {
        payload[field::ORDER_ID] = json!(format!("{order}-{n}"));
    }
    (*exercise, payload)
}

/// One submission, repeated with capped backoff (50 ms doubling to 1 s) while
/// the API answers 503 or cannot be reached, as a real client does. Any other
/// answer than 202 or 503 is not a documented answer to a valid submission.
async fn submit_until_accepted(
    api: &Api,
    (exercise, payload): &(Exercise, serde_json::Value),
    job_id: &str,
    run_id: &str,
    tally: &Mutex<Tally>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = Instant::now();
        let posted = api
            .post_job_for(*exercise, job_id, run_id, payload.clone())
            .await;
        let took = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let problem = {
            let mut tally = tally.lock().await;
            tally.latencies_us.push(took);
            match &posted {
                Posted::Status(status) => *tally.statuses.entry(*status).or_default() += 1,
                Posted::NoAnswer(_) => tally.connection_errors += 1,
            }
            match posted {
                Posted::Status(202) => {
                    tally.accepted += 1;
                    return Ok(());
                }
                Posted::Status(503) => {
                    tally.retries += 1;
                    "answered 503".to_string()
                }
                Posted::Status(other) => {
                    bail!("POST /jobs for {job_id} answered {other}: not a documented answer")
                }
                Posted::NoAnswer(reason) => {
                    tally.retries += 1;
                    reason
                }
            }
        };
        if Instant::now() >= give_up {
            bail!(
                "POST /jobs for {job_id} was refused for 60 s (last: {problem}): is the API running?"
            );
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Runs a fault's shell command; its output goes to stderr (stdout is the summary's).
async fn fire(command: &str) -> anyhow::Result<()> {
    let command = command.to_string();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("cannot run {command:?}"))
            .map(|status| (command, status))
    })
    .await??;
    if !status.1.success() {
        bail!("{:?} failed ({})", status.0, status.1);
    }
    Ok(())
}

/// `load`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Load {
    /// Clients submitting at the same time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How long they submit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Unique jobIds the clients cycle through (each is submitted many times).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub jobs: u32,
    /// Pause of each client between two submissions, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub interval_ms: u64,
}

impl RunScenario for Load {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let plan = LoadPlan::new(
            self.clients,
            self.duration_secs,
            self.jobs,
            self.interval_ms,
        );
        let loaded = self::run(run.api, run.name, &plan, &[], run.timeout).await?;
        let measured = Measured::Load(loaded.load);
        Ok(ScenarioRun::new(
            run.name,
            loaded.run,
            loaded.started,
            measured,
        ))
    }
}

/// `chaos`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Chaos {
    /// Clients submitting at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How long they submit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Unique jobIds the clients cycle through (each is submitted many times).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub jobs: u32,
    /// Pause of each client between two submissions, in milliseconds (the default
    /// stays within what two workers with a 200 ms effect can process).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub interval_ms: u64,
    /// Shell command that kills a worker, run at a third of the load (e.g. "./lab kill worker-1").
    #[arg(long, value_name = "COMMAND")]
    pub kill_worker: Option<String>,
    /// Shell command that restarts Redis, run at two thirds of the load (e.g. "./lab restart redis").
    #[arg(long, value_name = "COMMAND")]
    pub restart_redis: Option<String>,
    /// The exercise whose jobs are sent: 1 (the default), 2, 3, 5 or 6 (exercise 4's
    /// requests are orders at the API's front door, not a queue load).
    #[arg(long, default_value_t = 1, value_parser = chaos_exercise)]
    pub exercise: u8,
}

/// `--exercise`: an exercise whose jobs a queue load can send.
fn chaos_exercise(text: &str) -> Result<u8, String> {
    let number: u8 = text
        .parse()
        .map_err(|_| format!("{text:?} is not an exercise number"))?;
    let exercise = Exercise::try_from(number)?;
    if exercise.info().component != lab_schema::exercise::Component::Worker {
        return Err(format!(
            "{exercise}'s requests are orders at the API's front door (POST /orders), not jobs: its chaos is not a queue load"
        ));
    }
    Ok(number)
}

impl RunScenario for Chaos {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let mut plan = LoadPlan::new(
            self.clients,
            self.duration_secs,
            self.jobs,
            self.interval_ms,
        );
        plan.exercise = Exercise::try_from(self.exercise).map_err(anyhow::Error::msg)?;
        let mut faults = Vec::new();
        if let Some(command) = &self.kill_worker {
            faults.push(Fault {
                kind: FaultKind::KillWorker,
                command: command.clone(),
                at: plan.duration / 3,
            });
        }
        if let Some(command) = &self.restart_redis {
            faults.push(Fault {
                kind: FaultKind::RestartRedis,
                command: command.clone(),
                at: plan.duration * 2 / 3,
            });
        }
        let loaded = self::run(run.api, run.name, &plan, &faults, run.timeout).await?;
        // For each fault it was given, whether it ran.
        let ran = |kind: FaultKind| {
            faults
                .iter()
                .any(|f| f.kind == kind)
                .then(|| loaded.fired.contains(&kind))
        };
        let measured = Measured::Chaos {
            worker_killed: ran(FaultKind::KillWorker),
            redis_restarted: ran(FaultKind::RestartRedis),
            load: loaded.load,
        };
        Ok(ScenarioRun::new(
            run.name,
            loaded.run,
            loaded.started,
            measured,
        ))
    }
}
