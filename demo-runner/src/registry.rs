//! The demo-runner's side of the exercise registry (`lab_schema::exercise`):
//! one entry per exercise (its grader, in [`grader`]; its scenarios, in
//! [`Scenario`]), the scenarios of no exercise, and `exercises`, the registry
//! as a list. Students need not edit this file.
//!
//! A scenario is a command-line type (its arguments, next to the code that
//! runs it) that implements [`RunScenario`], and one line in the
//! `scenarios!` list below, which makes its subcommand, its name and its
//! dispatch. The exercises' scenario names are written once, in the registry;
//! the scenarios of no exercise once, in [`OTHER_SCENARIOS`]. The unit tests
//! below hold both to the subcommands, so neither list can drift from the
//! command line.

use std::time::Duration;

use lab_schema::Exercise;
use lab_schema::exercise::Info;
use serde_json::{Value, json};

use crate::chaos::{Chaos, Load};
use crate::client::Api;
use crate::new_jobid::NewJobId;
use crate::report::ScenarioRun;
use crate::retried_post::RetriedPost;
use crate::retry_storm::RetryStorm;
use crate::scenarios::{CrashWindow, DoubleCharge, DuplicateLoad, DuplicateObserve};
use crate::unique_lock::UniqueLockDemo;
use crate::verify::{Grader, crash_window, double_charge, duplicate_delivery, retried_post};

/// The grader of `exercise`: its checks and the `verify` that runs them. The
/// match is exhaustive, so the compiler names an exercise without its row.
pub fn grader(exercise: Exercise) -> &'static Grader {
    match exercise {
        Exercise::DuplicateDelivery => &duplicate_delivery::GRADER,
        Exercise::CrashWindow => &crash_window::GRADER,
        Exercise::DoubleCharge => &double_charge::GRADER,
        Exercise::RetriedPost => &retried_post::GRADER,
        Exercise::RetryStorm => &crate::verify::retry_storm::GRADER,
        Exercise::NewJobId => &crate::verify::new_jobid::GRADER,
    }
}

/// What every scenario is given to run.
pub struct Run<'a> {
    pub api: &'a Api,
    /// The scenario's name (its subcommand), which its summary records.
    pub name: &'static str,
    /// How long the run may take to drain.
    pub timeout: Duration,
    /// Where narrated observations go: stdout (true) or stderr (with `--json`).
    pub narrate_to_stdout: bool,
}

impl Run<'_> {
    /// Prints a narrated observation where they go, and hands it back (for
    /// the summary's narration).
    pub fn say(&self, line: String) -> String {
        if self.narrate_to_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
        line
    }
}

/// A scenario: its command-line arguments, and how it runs with them.
pub trait RunScenario {
    fn run(&self, run: &Run<'_>) -> impl Future<Output = anyhow::Result<ScenarioRun>>;
}

/// `scenarios! { /// about \n Variant(Args) = "name", ... }`: the [`Scenario`]
/// subcommands, [`Scenario::name`] and [`Scenario::run`], from one list.
macro_rules! scenarios {
    ($($(#[$about:meta])* $variant:ident($args:ty) = $name:literal,)*) => {
        /// The scenarios: each exercise's (the registry, `lab_schema::exercise`,
        /// names them) and [`OTHER_SCENARIOS`]. Their names are the subcommands' names.
        #[derive(clap::Subcommand, Debug, Clone)]
        pub enum Scenario {
            $($(#[$about])* #[command(name = $name)] $variant($args),)*
        }

        impl Scenario {
            /// The scenario's name: its subcommand, as its summary and `--save`
            /// files record it.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Scenario::$variant(_) => $name,)*
                }
            }

            /// Runs the scenario with its arguments.
            pub async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
                match self {
                    $(Scenario::$variant(args) => args.run(run).await,)*
                }
            }
        }
    };
}

scenarios! {
    /// Submit ONE jobId several times and watch its attempts and effects change.
    DuplicateObserve(DuplicateObserve) = "duplicate-observe",
    /// Submit JOBS unique jobs COPIES times each (concurrently, interleaved) and wait until all are processed.
    DuplicateLoad(DuplicateLoad) = "duplicate-load",
    /// Exercise 2: JOBS jobs, COPIES copies each; the worker CRASHES (the process dies)
    /// after the claim and before the effect of the last CRASHES jobs, once each. Waits
    /// until every delivery is processed (the worker is restarted), then the summary.
    CrashWindow(CrashWindow) = "crash-window",
    /// Exercise 3: JOBS jobs, COPIES copies each, charged at the provider; the worker
    /// CRASHES right after the provider charged the last CRASHES jobs (before `done`),
    /// and the provider drops its answer to the first charge of DROPPED more. Waits
    /// until every delivery is processed, then the summary (charges are the effects).
    DoubleCharge(DoubleCharge) = "double-charge",
    /// Exercise 4: clients of POST /orders whose answer is lost and who retry, two callers
    /// with one key, a double click, a retry with its JSON keys reordered, a key reused for
    /// another order, a missing key, and a failure before enqueue then a retry. Prints each
    /// case's answers and orders, then orders created per logical order.
    RetriedPost(RetriedPost) = "retried-post",
    /// Exercise 5: the provider goes down for OUTAGE seconds while JOBS jobs are charged
    /// (one with a declined card, one whose worker crashes mid-outage). Prints the requests
    /// during the outage, the busiest 100 ms, the 429s and whether the account was banned,
    /// how soon after the outage every job went through, and the declined card's fate.
    RetryStorm(RetryStorm) = "retry-storm",
    /// Exercise 6: order emails as a web frontend sends them: every email tried RETRIES+1
    /// times, each retry under a NEW jobId; a second email (shipped) for every other order;
    /// two orders per customer; some requests delivered twice under one jobId. Prints the
    /// emails per (order, action): duplicates, and emails never sent.
    NewJobId(NewJobId) = "new-jobid",
    /// Exercise 6, the instructor's demonstration: the same order emails through a unique
    /// lock at the API (released when the job starts, then when it ends) in front of a worker
    /// with no guard, then through an idempotent worker with no lock. Prints side by side the
    /// duplicates that got through and the emails the lock dropped.
    UniqueLock(UniqueLockDemo) = "unique-lock",
    /// CLIENTS clients submit duplicates for SECS seconds; prints requests/s, the status of
    /// every answer, and accepted versus processed (the benchmark).
    Load(Load) = "load",
    /// A load while a worker is killed (SIGKILL) and Redis restarts, then the summary: every
    /// accepted job is processed; only the idempotency guard keeps effects at one per job.
    /// `./lab chaos` fills in both commands.
    Chaos(Chaos) = "chaos",
}

/// The scenarios that belong to no exercise (the benchmark and the chaos run),
/// and what each measures: named once, in `lab_schema::measured`.
pub use lab_schema::measured::OTHER_SCENARIOS;

/// Every scenario's name, as `--save` files record it: the exercises' in
/// their order, then [`OTHER_SCENARIOS`].
pub fn scenario_names() -> Vec<&'static str> {
    Exercise::ALL
        .iter()
        .flat_map(|e| e.info().scenarios.iter().copied())
        .chain(OTHER_SCENARIOS.iter().map(|(name, _)| *name))
        .collect()
}

/// `exercises`: one line per exercise, tab-separated (the title has spaces):
/// number, folder, title, student file, program, scenarios (comma-separated).
pub fn exercises_text() -> String {
    Exercise::ALL
        .iter()
        .map(|e| {
            let info = e.info();
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                info.number,
                info.slug,
                info.title,
                info.student_file,
                info.component.package(),
                info.scenarios.join(",")
            )
        })
        .collect()
}

/// `exercises --json`: the same, one object per exercise, in one array.
pub fn exercises_json() -> Value {
    Value::Array(
        Exercise::ALL
            .iter()
            .map(|e| {
                let Info {
                    number,
                    slug,
                    title,
                    student_file,
                    component,
                    scenarios,
                    ..
                } = e.info();
                json!({
                    "number": number,
                    "slug": slug,
                    "title": title,
                    "student_file": student_file,
                    "program": component.package(),
                    "scenarios": scenarios,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{Cli, Command};

    /// Each subcommand parsed with its required positionals filled in: the
    /// scenarios come back as `Command::Scenario`, the tools as the rest.
    fn subcommands() -> Vec<(String, Command)> {
        Cli::command()
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
            .map(|sub| {
                let mut args = vec!["demo-runner".to_string(), sub.get_name().to_string()];
                for arg in sub.get_arguments() {
                    if arg.is_positional() && arg.is_required_set() {
                        args.push("1".to_string());
                    }
                }
                let cli = Cli::try_parse_from(&args)
                    .unwrap_or_else(|err| panic!("{args:?} does not parse: {err}"));
                (sub.get_name().to_string(), cli.command)
            })
            .collect()
    }

    // Every scenario subcommand is an exercise's scenario or one of the others,
    // and every name in those lists is a subcommand, once.
    #[test]
    fn the_scenario_subcommands_are_the_registrys_and_the_others() {
        let mut subcommands: Vec<String> = subcommands()
            .into_iter()
            .filter(|(_, command)| matches!(command, Command::Scenario(_)))
            .map(|(name, _)| name)
            .collect();
        let mut listed: Vec<String> = scenario_names().into_iter().map(String::from).collect();
        subcommands.sort();
        listed.sort();
        let before = listed.len();
        listed.dedup();
        assert_eq!(listed.len(), before, "a scenario is listed twice");
        assert_eq!(subcommands, listed);
        for (name, _) in OTHER_SCENARIOS {
            assert_eq!(Exercise::of_scenario(name), None, "{name}");
        }
    }

    // A scenario's name (what its summary records) is its subcommand.
    #[test]
    fn a_scenario_is_named_after_its_subcommand() {
        let mut seen = 0;
        for (name, command) in subcommands() {
            if let Command::Scenario(scenario) = command {
                assert_eq!(scenario.name(), name);
                seen += 1;
            }
        }
        assert_eq!(seen, scenario_names().len());
    }

    #[test]
    fn exercises_lists_the_registry_one_line_each() {
        let text = exercises_text();
        assert_eq!(text.lines().count(), Exercise::ALL.len());
        assert_eq!(
            text.lines().next(),
            Some(
                "1\t01-duplicate-delivery\tduplicate delivery\tworker/src/job.rs\tworker\tduplicate-observe,duplicate-load"
            )
        );
        for line in text.lines() {
            assert_eq!(line.split('\t').count(), 6, "{line}");
        }
        let json = exercises_json();
        assert_eq!(json.as_array().map(Vec::len), Some(Exercise::ALL.len()));
        assert_eq!(json[3]["program"], "api");
        assert_eq!(json[3]["scenarios"], json!(["retried-post"]));
    }
}
