//! The lab's demo-runner: scenarios that submit duplicate jobs through the API
//! and measure attempts versus side effects. Students need not edit this crate.
//!
//! # Layout
//! - [`Cli`]: the command line (clap); [`main`] runs it and maps errors to exit codes.
//! - `client.rs`: the HTTP calls to the API.
//! - `scenarios.rs`: `duplicate-observe` and `duplicate-load`.
//! - `chaos.rs`: `load` (the benchmark) and `chaos` (a load while a worker is killed and Redis restarts).
//! - `report.rs`: the summary (`key=value` lines or one JSON object) and the progress display.

mod chaos;
mod client;
mod report;
mod scenarios;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use report::Summary;

/// Submits duplicate jobs to the lab's API and measures attempts versus side effects.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Base URL of the API.
    #[arg(
        long,
        env = "API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,
    /// Print the summary as one JSON object on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up (exit 1) when the run has not drained after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub timeout: u64,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Submit ONE jobId several times and watch its attempts and effects change.
    DuplicateObserve {
        /// How many times the jobId is submitted.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        copies: u32,
        /// Pause between two submissions, in milliseconds, so each delivery can be watched.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        interval_ms: u64,
    },
    /// Submit JOBS unique jobs COPIES times each (concurrently, interleaved) and wait until all are processed.
    DuplicateLoad {
        /// Number of unique jobIds.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        jobs: u32,
        /// Submissions of each jobId.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=1000))]
        copies: u32,
    },
    /// CLIENTS clients submit duplicates for SECS seconds; prints requests/s, the status of
    /// every answer, and accepted versus processed (the benchmark).
    Load {
        /// Clients submitting at the same time.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        clients: u32,
        /// How long they submit, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration_secs: u64,
        /// Unique jobIds the clients cycle through (each is submitted many times).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        jobs: u32,
        /// Pause of each client between two submissions, in milliseconds.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        interval_ms: u64,
    },
    /// A load while a worker is killed (SIGKILL) and Redis restarts, then the summary: every
    /// accepted job is processed; only the idempotency guard keeps effects at one per job.
    /// `./lab chaos` fills in both commands.
    Chaos {
        /// Clients submitting at the same time.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        clients: u32,
        /// How long they submit, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration_secs: u64,
        /// Unique jobIds the clients cycle through (each is submitted many times).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        jobs: u32,
        /// Pause of each client between two submissions, in milliseconds (the default
        /// stays within what two workers with a 200 ms effect can process).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        interval_ms: u64,
        /// Shell command that kills a worker, run at a third of the load (e.g. "./lab kill worker-1").
        #[arg(long, value_name = "COMMAND")]
        kill_worker: Option<String>,
        /// Shell command that restarts Redis, run at two thirds of the load (e.g. "./lab restart redis").
        #[arg(long, value_name = "COMMAND")]
        restart_redis: Option<String>,
    },
}

/// Parses the command line, runs the scenario, prints the summary.
/// Exit code 0 when the scenario ran (whatever it measured), 1 when it could not.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one scenario and prints its summary. Errors when the scenario could
/// not run, or ran but did not drain before the timeout (after printing the summary).
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(cli.timeout);
    // With --json, stdout carries only the JSON object; the observation lines go to stderr.
    let summary = run_scenario(&cli.api_url, &cli.scenario, timeout, !cli.json).await?;
    summary.print(cli.json);
    if !summary.drained {
        anyhow::bail!(
            "the run did not drain within {}s: {} of {} submissions processed. Is a worker running? \
             (./lab status, ./lab logs worker)",
            cli.timeout,
            summary.run.processed_deliveries,
            summary.run.total_submissions
        );
    }
    Ok(())
}

/// Runs one scenario against the API at `api_url` and returns what it measured.
/// `narrate_to_stdout`: where duplicate-observe writes its observation lines.
pub async fn run_scenario(
    api_url: &str,
    scenario: &Scenario,
    timeout: Duration,
    narrate_to_stdout: bool,
) -> anyhow::Result<Summary> {
    let api = client::Api::new(api_url)?;
    api.check_ready().await?;
    match *scenario {
        Scenario::DuplicateObserve {
            copies,
            interval_ms,
        } => {
            let interval = Duration::from_millis(interval_ms);
            scenarios::duplicate_observe(&api, copies, interval, timeout, narrate_to_stdout).await
        }
        Scenario::DuplicateLoad { jobs, copies } => {
            scenarios::duplicate_load(&api, jobs, copies, timeout).await
        }
        Scenario::Load {
            clients,
            duration_secs,
            jobs,
            interval_ms,
        } => {
            let plan = chaos::LoadPlan::new(clients, duration_secs, jobs, interval_ms);
            chaos::run(&api, "load", &plan, &[], timeout).await
        }
        Scenario::Chaos {
            clients,
            duration_secs,
            jobs,
            interval_ms,
            ref kill_worker,
            ref restart_redis,
        } => {
            let plan = chaos::LoadPlan::new(clients, duration_secs, jobs, interval_ms);
            let mut faults = Vec::new();
            if let Some(command) = kill_worker {
                faults.push(chaos::Fault {
                    key: "worker_killed",
                    command: command.clone(),
                    at: plan.duration / 3,
                });
            }
            if let Some(command) = restart_redis {
                faults.push(chaos::Fault {
                    key: "redis_restarted",
                    command: command.clone(),
                    at: plan.duration * 2 / 3,
                });
            }
            chaos::run(&api, "chaos", &plan, &faults, timeout).await
        }
    }
}
