//! The lab's demo-runner: scenarios that submit duplicate jobs through the API
//! and measure attempts versus side effects. Students need not edit this crate.
//!
//! # Layout
//! - [`Cli`]: the command line (clap); [`main`] runs it and maps errors to exit codes.
//! - `client.rs`: the HTTP calls to the API.
//! - `code.rs`: which exercise code the running workers were built from (`worker_code=`).
//! - `wait.rs`: polling until a condition holds, and waiting for a run to settle.
//! - `scenarios.rs`: `duplicate-observe`, `duplicate-load`, `crash-window` and `double-charge`.
//! - `chaos.rs`: `load` (the benchmark) and `chaos` (a load while a worker is killed and Redis restarts).
//! - `retried_post.rs`: `retried-post`, exercise 4's clients of `POST /orders`.
//! - `orders.rs`: the client side of `POST /orders` (one request and its whole answer).
//! - `registry.rs`: the scenario names (the registry's and [`OTHER_SCENARIOS`]) and `exercises`.
//! - `report.rs`: what a scenario prints and saves, and the progress display.
//! - `saved.rs`: summaries saved with `--save FILE`, read back by the two commands below.
//! - `compare.rs`: `compare BEFORE AFTER`, two saved runs side by side with a verdict.
//! - `evidence.rs`: `evidence --out FILE.md`, what the handout asks students to turn in.
//! - `verify/`: `verify --exercise N`, each exercise's checks, which tell a correct fix
//!   from the usual wrong ones and name the mistake (typed diagnoses).
//!
//! Exit codes: 0 when the command ran (whatever a scenario measured; `verify`:
//! only when every check passed), 1 when it could not run (or a `verify` check
//! failed), 2 on usage errors.

mod chaos;
pub mod class_report;
mod client;
mod code;
mod compare;
mod evidence;
pub mod grading;
mod new_jobid;
mod orders;
mod registry;
mod report;
mod retried_post;
mod retry_storm;
mod saved;
mod scenarios;
mod unique_lock;
mod verify;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use lab_schema::Exercise;

/// Each scenario's command-line arguments (`Scenario::DuplicateLoad(DuplicateLoad { .. })`).
pub use chaos::{Chaos, Load};
pub use client::Api;
pub use evidence::utc_timestamp;
pub use new_jobid::NewJobId;
pub use registry::{OTHER_SCENARIOS, Scenario, scenario_names};
pub use report::ScenarioRun;
pub use retried_post::RetriedPost;
pub use scenarios::{CrashAt, CrashWindow, DoubleCharge, DuplicateLoad, DuplicateObserve};
pub use unique_lock::{LockOn, UniqueLockDemo};

/// What to check when deliveries are not being processed.
pub(crate) const STUCK_HINT: &str = "Is a worker running, and does process_job succeed? Look for \
     `process_job failed` in `docker compose logs worker` (natively: ./lab status, ./lab logs worker)";

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
    /// Base URL of the provider, exercise 3's payment gateway (its request log).
    #[arg(
        long,
        env = "PROVIDER_URL",
        default_value = client::DEFAULT_PROVIDER_URL,
        global = true
    )]
    pub provider_url: String,
    /// Print the summary as one JSON object on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up (exit 1) when the run has not drained after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub timeout: u64,
    /// Scenarios: also write the summary (JSON, with the printed output) to FILE,
    /// for `compare` and `evidence`.
    #[arg(long, value_name = "FILE", global = true)]
    pub save: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the demo-runner can do: the scenarios, then the tools around them.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Show two saved summaries (--save) side by side, with a one-line verdict.
    Compare {
        /// The summary saved before the fix, e.g. load-before.json.
        before: PathBuf,
        /// The summary saved after the fix, e.g. load-after.json.
        after: PathBuf,
    },
    /// Write what the handout asks you to turn in to one Markdown file, with verify's report run now.
    Evidence {
        /// The exercise whose evidence this is.
        #[arg(long, value_name = "N", default_value_t = Exercise::ALL[0].number(), value_parser = parse_exercise)]
        exercise: u8,
        /// The Markdown file to write.
        #[arg(long, value_name = "FILE.md", default_value = "evidence.md")]
        out: PathBuf,
        /// Exercises 2 to 6: the scenario saved before the fix (default: the handout's, e.g. crash-before.json).
        #[arg(long, value_name = "FILE")]
        before: Option<PathBuf>,
        /// Exercises 2 to 6: the scenario saved after the fix (default: the handout's, e.g. crash-after.json).
        #[arg(long, value_name = "FILE")]
        after: Option<PathBuf>,
        /// duplicate-observe saved before the fix.
        #[arg(long, value_name = "FILE", default_value = "observe-before.json")]
        observe_before: PathBuf,
        /// duplicate-observe saved after the fix.
        #[arg(long, value_name = "FILE", default_value = "observe-after.json")]
        observe_after: PathBuf,
        /// duplicate-load 8 2 saved after the fix.
        #[arg(long, value_name = "FILE", default_value = "load-after.json")]
        load_after: PathBuf,
        /// duplicate-load 8 2 saved before the fix (used when present; default load-before.json).
        #[arg(long, value_name = "FILE")]
        load_before: Option<PathBuf>,
        /// Replace FILE.md if it exists (it may hold your written explanation).
        #[arg(long)]
        force: bool,
    },
    /// The provider (exercise 3's payment gateway) for everyone: show its faults, or set
    /// an outage (every charge answered 503) or slow answers. `provider --outage-secs 0
    /// --slow-ms 0` clears both.
    Provider {
        /// Answer every charge request 503 for this many seconds from now (0: end the outage).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
        outage_secs: Option<u64>,
        /// Make every charge request take this many extra milliseconds (0: fast again).
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
        slow_ms: Option<u64>,
    },
    /// Check the running worker's fix of an exercise: PASS/FAIL per check, exit 0 only when all pass.
    Verify {
        /// The exercise whose checks run.
        #[arg(long, value_name = "N", default_value_t = Exercise::ALL[0].number(), value_parser = parse_exercise)]
        exercise: u8,
        /// Seconds between a job's first delivery and its late copy (must outlast a too-short TTL).
        #[arg(long, value_name = "SECS", default_value_t = verify::LATE_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
        late_secs: u64,
        /// Seconds to wait for the redelivery of a failed effect (its job asks to be delivered again a second after the failure).
        #[arg(long, value_name = "SECS", default_value_t = verify::REDELIVERY_WAIT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
        redelivery_wait: u64,
        /// The lease verify's jobs ask for, in milliseconds (their payload's leaseMs: the handler's ctx.lease_ms); the checks of exercises 2 and 3 time their copies around it.
        #[arg(long, value_name = "MS", default_value_t = verify::LEASE_MS, value_parser = clap::value_parser!(u64).range(100..=600_000))]
        lease_ms: u64,
    },
    /// The whole class on one page: reads every result file `./lab grade` wrote under
    /// DIR and writes DIR/class-report.md and DIR/class-report.html (the API serves the
    /// latter at /class-report): per exercise, the mistakes ranked by how many students
    /// made them, the fix rate per check, and students x checks.
    ClassReport {
        /// The class folder (./lab grade's --out; default grades, in lab-output/).
        #[arg(default_value = "grades")]
        dir: PathBuf,
        /// The grading machine's seal key (./lab keeps it in .lab/grade-key): a result
        /// whose seal holds under it was graded there (evidence); any other is a claim.
        #[arg(long, value_name = "FILE", env = "LAB_GRADE_KEY_FILE")]
        key: Option<PathBuf>,
    },
    /// List the exercises: number, folder, title, student file, program, scenarios.
    ///
    /// One line per exercise, tab-separated: its number, its folder under exercises/, its
    /// title, the file the student edits, the program that file is built into (worker or
    /// api), and the scenarios that reproduce its incident (comma-separated). With --json:
    /// one JSON array of objects with those fields.
    Exercises,
    /// Which code the running workers and API were built from, against the student files
    /// on disk (LAB_SOURCE_DIR): a WARNING line for each process that runs another version
    /// of a student file than the one on disk (nothing when all agree). `./lab status` runs it.
    Code {
        /// Instead, ask these built programs (worker, api) which student files they were
        /// built from, and print each file whose version on disk differs, one path per
        /// line (nothing when the build is of the files on disk). `./lab` rebuilds then.
        #[arg(long, value_name = "BINARY", num_args = 1..)]
        built: Vec<PathBuf>,
        /// With --built: also mark each file it names as modified now, so that the
        /// next cargo build compiles it again.
        #[arg(long, requires = "built")]
        touch: bool,
        /// Instead, read cargo's output on stdin and print its warnings about the
        /// students' files, one line each (`file:line:col: warning: what`): what
        /// `./lab` and the image save for `./lab check` and `verify`.
        #[arg(long, conflicts_with = "built")]
        warnings: bool,
    },
}

/// Parses the command line, runs the command, prints its result.
/// Exit code 0 when it ran (and, for `verify`, every check passed), 1 when not, 2 on usage errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.save.is_some() && !matches!(cli.command, Command::Scenario(_)) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--save applies to the scenarios only ({})",
                    scenario_names().join(", ")
                ),
            )
            .exit();
    }
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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command and prints its result. `Ok(false)`: it ran, and `verify`
/// found a failing check. Errors when it could not run, or a scenario ran but
/// did not drain before the timeout (after printing the summary).
pub async fn run(cli: &Cli) -> anyhow::Result<bool> {
    match &cli.command {
        Command::Scenario(scenario) => {
            run_and_print(cli, scenario).await?;
            Ok(true)
        }
        Command::Compare { before, after } => {
            let comparison =
                compare::Comparison::new(saved::Saved::load(before)?, saved::Saved::load(after)?)?;
            if cli.json {
                println!("{}", comparison.to_json());
            } else {
                print!("{}", comparison.to_text());
            }
            Ok(true)
        }
        Command::Evidence {
            exercise,
            out,
            before,
            after,
            observe_before,
            observe_after,
            load_after,
            load_before,
            force,
        } => {
            if out.exists() && !force {
                anyhow::bail!(
                    "{} exists and may hold your written explanation: choose another --out, \
                     or add --force to replace it",
                    out.display()
                );
            }
            saved::check_writable(out)?;
            let exercise = Exercise::try_from(*exercise).map_err(anyhow::Error::msg)?;
            let (default_before, default_after) = evidence::saved_files(exercise);
            let before = before.clone().unwrap_or(default_before);
            let after = after.clone().unwrap_or(default_after);
            // The saved files first: a missing one is said at once, not after verify.
            let needed = if exercise == Exercise::DuplicateDelivery {
                vec![observe_before, observe_after, load_after]
            } else {
                vec![&before, &after]
            };
            if let Some(missing) = needed.into_iter().find(|path| !path.is_file()) {
                anyhow::bail!(
                    "{} not found: save that run first (the handout's --save), or name the file",
                    missing.display()
                );
            }
            let api = cli.api()?;
            api.check_ready().await?;
            // The verdict of the code running now, not a pasted one.
            eprintln!(
                "evidence: running verify --exercise {} first",
                exercise.number()
            );
            let options = verify::Options::defaults(cli.timeout);
            let verified = verify::verify(exercise, &api, &options).await?.to_text();
            let markdown = if exercise == Exercise::DuplicateDelivery {
                let default_before = PathBuf::from("load-before.json");
                let load_before = load_before
                    .clone()
                    .or_else(|| default_before.is_file().then_some(default_before));
                let sources = evidence::Sources {
                    observe_before: observe_before.clone(),
                    observe_after: observe_after.clone(),
                    load_after: load_after.clone(),
                    load_before,
                };
                evidence::build(&api, &sources, &verified).await?
            } else {
                evidence::build_pair(&api, exercise, &before, &after, &verified).await?
            };
            evidence::write(out, &markdown)?;
            let shown = std::path::absolute(out).unwrap_or_else(|_| out.clone());
            println!("wrote {}", shown.display());
            Ok(true)
        }
        Command::Provider {
            outage_secs,
            slow_ms,
        } => {
            let api = cli.api()?;
            let set = if outage_secs.is_some() || slow_ms.is_some() {
                let now = api.provider_faults(None).await?;
                Some(lab_schema::provider::Faults {
                    outage_secs: outage_secs.unwrap_or(now.outage_secs),
                    slow_ms: slow_ms.unwrap_or(now.slow_ms),
                })
            } else {
                None
            };
            let faults = api.provider_faults(set.as_ref()).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&faults)?);
            } else {
                println!("outage_secs={}", faults.outage_secs);
                println!("slow_ms={}", faults.slow_ms);
                let mut what = Vec::new();
                if faults.outage_secs > 0 {
                    what.push(format!(
                        "every charge is answered 503 for {} more s",
                        faults.outage_secs
                    ));
                }
                if faults.slow_ms > 0 {
                    what.push(format!("every charge takes {} ms longer", faults.slow_ms));
                }
                if what.is_empty() {
                    println!("# the provider answers normally");
                } else {
                    println!("# {}", what.join("; "));
                }
            }
            Ok(true)
        }
        Command::Verify {
            exercise,
            late_secs,
            redelivery_wait,
            lease_ms,
        } => {
            let exercise = Exercise::try_from(*exercise).map_err(anyhow::Error::msg)?;
            let api = cli.api()?;
            api.check_ready().await?;
            let options = verify::Options {
                late_secs: *late_secs,
                redelivery_wait_secs: *redelivery_wait,
                timeout_secs: cli.timeout,
                lease_ms: *lease_ms,
            };
            let wait = if verify::waits_for_a_late_copy(exercise) {
                format!(" (one check waits {late_secs} s for a late copy)")
            } else {
                String::new()
            };
            eprintln!(
                "verify: {exercise}, {} checks against {}{wait}",
                verify::check_count(exercise),
                cli.api_url,
            );
            let report = verify::verify(exercise, &api, &options).await?;
            let code = code::report(&api, exercise).await;
            let warnings = code::compiler_warnings(exercise);
            if cli.json {
                let mut json: serde_json::Value = serde_json::from_str(&report.to_json())?;
                json["worker_code"] = serde_json::json!(code.label);
                json["worker_code_notes"] = serde_json::json!(code.lines);
                json["compiler_warnings"] = serde_json::json!(warnings);
                println!("{json}");
            } else {
                print!("{}", report.to_text());
                for line in &code.lines {
                    println!("{line}");
                }
                if !report.passed() && !warnings.is_empty() {
                    println!(
                        "the compiler warned about {} at the last build; a likely cause (a call without its .await? never runs; a value the handout asked for and left unused):",
                        exercise.info().student_file
                    );
                    for line in &warnings {
                        println!("  {line}");
                    }
                }
            }
            Ok(report.passed())
        }
        Command::Code { warnings: true, .. } => {
            let mut cargo_output = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut cargo_output)?;
            for line in code::student_warnings(&cargo_output) {
                println!("{line}");
            }
            Ok(true)
        }
        Command::Code { built, touch, .. } if !built.is_empty() => {
            for file in code::built_from_other_files(built, *touch)? {
                println!("{file}");
            }
            Ok(true)
        }
        Command::Code { .. } => {
            for line in code::stale(&cli.api()?).await? {
                println!("{line}");
            }
            Ok(true)
        }
        Command::ClassReport { dir, key } => {
            // No key file yet (nothing graded on this machine): every result is a claim.
            let key = key.as_ref().and_then(|k| std::fs::read(k).ok());
            let source = code::source_dir().unwrap_or_else(|| PathBuf::from("."));
            print!("{}", class_report::write(dir, key.as_deref(), &source)?);
            Ok(true)
        }
        Command::Exercises => {
            if cli.json {
                println!("{}", registry::exercises_json());
            } else {
                print!("{}", registry::exercises_text());
            }
            Ok(true)
        }
    }
}

/// Runs one scenario, prints its summary, and saves it when `--save` asks.
async fn run_and_print(cli: &Cli, scenario: &Scenario) -> anyhow::Result<()> {
    if let Some(path) = &cli.save {
        saved::check_writable(path)?;
    }
    let timeout = Duration::from_secs(cli.timeout);
    // With --json, stdout carries only the JSON object; the observation lines go to stderr.
    let result = run_scenario_with(&cli.api()?, scenario, timeout, !cli.json).await?;
    result.print(cli.json);
    if let Some(path) = &cli.save {
        saved::write(path, &result.to_saved_json())?;
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        eprintln!("saved the summary to {}", shown.display());
    }
    let run = &result.summary;
    // A storm that did not drain is the storm's result (its scenario stops
    // waiting a while after the outage), not a run that could not finish.
    let finished =
        matches!(run.measured, lab_schema::Measured::Storm(_)) || (run.drained && run.settled);
    if !finished {
        let api = cli.api()?;
        let what = if run.drained { "settle" } else { "drain" };
        anyhow::bail!(
            "the run did not {what} within {}s: {}. {STUCK_HINT}",
            cli.timeout,
            wait::not_settled_reason(&api, run).await
        );
    }
    Ok(())
}

/// Runs one scenario against the API at `api_url` (and the provider at its
/// default address) and returns what it measured.
/// `narrate_to_stdout`: where duplicate-observe writes its observation lines.
pub async fn run_scenario(
    api_url: &str,
    scenario: &Scenario,
    timeout: Duration,
    narrate_to_stdout: bool,
) -> anyhow::Result<ScenarioRun> {
    run_scenario_with(&Api::new(api_url)?, scenario, timeout, narrate_to_stdout).await
}

/// [`run_scenario`] with the client `api` (the API's and the provider's URLs).
pub async fn run_scenario_with(
    api: &Api,
    scenario: &Scenario,
    timeout: Duration,
    narrate_to_stdout: bool,
) -> anyhow::Result<ScenarioRun> {
    let api = api.clone();
    api.check_ready().await?;
    let run = registry::Run {
        api: &api,
        name: scenario.name(),
        timeout,
        narrate_to_stdout,
    };
    let mut result = scenario.run(&run).await?;
    let exercise = result.summary.exercise().unwrap_or_default();
    let code = code::report(&api, exercise).await;
    result.summary.worker_code = code.label;
    result.code_lines = code.lines;
    Ok(result)
}

impl Cli {
    /// The client of the API and the provider this command names.
    fn api(&self) -> anyhow::Result<Api> {
        Ok(Api::new(&self.api_url)?.with_provider(&self.provider_url))
    }
}

/// `--exercise N`: the number of an exercise in the registry.
fn parse_exercise(text: &str) -> Result<u8, String> {
    let number: u8 = text
        .parse()
        .map_err(|_| format!("not an exercise number: {text:?}"))?;
    Exercise::try_from(number).map(|e| e.number())
}
