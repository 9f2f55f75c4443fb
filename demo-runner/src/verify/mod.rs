//! `verify --exercise N`: runs one exercise's checks against the running stack
//! and prints PASS/FAIL per check with the numbers behind it and, on a failure,
//! the diagnosis: the actual cause of the mistake and what to change.
//! Students need not edit this folder.
//!
//! Each exercise's checks live in a file of their own here; a check gathers
//! evidence (real submissions through the API, the jobs' records, the run's
//! event log), then a judge turns the evidence into typed diagnoses. Nothing
//! is decided by searching text. Each file ends its list of checks with its
//! `GRADER` (the names and the `verify` that runs them), and `registry.rs` is
//! the one place that maps an exercise to it: a new exercise is a new file here
//! and its entry there.

pub(crate) mod crash_window;
pub(crate) mod double_charge;
pub(crate) mod duplicate_delivery;
pub(crate) mod new_jobid;
pub(crate) mod retried_post;
pub(crate) mod retry_storm;
pub(crate) mod traces;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use lab_schema::{Exercise, JobView, RunSummary};
use serde_json::{Value, json};

use crate::client::Api;
pub(crate) use crate::registry::grader;
use crate::wait::{is_settled, poll_until};

/// What `verify` can be told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds between the first delivery and the late copy.
    pub late_secs: u64,
    /// Seconds to wait for the redelivery of the failed effect.
    pub redelivery_wait_secs: u64,
    /// Seconds to wait for any other run to be processed.
    pub timeout_secs: u64,
    /// The lease the checks' jobs ask for (payload `leaseMs`, the handler's
    /// `ctx.lease_ms`), in milliseconds: exercise 2's and 3's checks time their
    /// copies around it. Short, so that waiting out a crashed holder's lease
    /// takes a second, not the workers' 3.
    pub lease_ms: u64,
}

/// [`Options::lease_ms`] unless `verify --lease-ms` says otherwise: five times
/// the effect (200 ms).
pub const LEASE_MS: u64 = 1_000;

/// [`Options::late_secs`] unless `verify --late-secs` says otherwise.
pub const LATE_SECS: u64 = 5;

/// [`Options::redelivery_wait_secs`] unless `verify --redelivery-wait` says otherwise.
pub const REDELIVERY_WAIT_SECS: u64 = 30;

impl Options {
    /// `verify`'s defaults, waiting at most `timeout_secs` for a run.
    pub fn defaults(timeout_secs: u64) -> Options {
        Options {
            late_secs: LATE_SECS,
            redelivery_wait_secs: REDELIVERY_WAIT_SECS,
            timeout_secs,
            lease_ms: LEASE_MS,
        }
    }
}

/// A diagnosis: what went wrong, as a stable code (for `--json` and the
/// tests) and a sentence for the student.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub code: &'static str,
    pub message: String,
}

/// The diagnosis code of a check that fails for a reason another check names.
pub const SAME_MISTAKE: &str = "same-mistake";

/// An exercise's mistakes, as a typed enum that renders to a [`Diagnosis`].
pub trait Mistake {
    fn code(&self) -> &'static str;
    fn message(&self) -> String;

    fn diagnosis(&self) -> Diagnosis {
        Diagnosis {
            code: self.code(),
            message: self.message(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// The numbers behind the outcome, in one line.
    pub numbers: String,
    /// On failure: the cause and what to change.
    pub diagnosis: Option<Diagnosis>,
    /// The same numbers, for `--json`.
    pub data: Value,
    /// On failure: the lines of the student's trace that show the diagnosis
    /// (their commands and Redis's replies), printed under the check.
    pub trace: Vec<String>,
}

impl Check {
    /// The check fails for the reason `other` already names: say so.
    pub fn same_as(mut self, other: &str) -> Check {
        if !self.passed {
            self.diagnosis = Some(Diagnosis {
                code: SAME_MISTAKE,
                message: format!("the same mistake as {other}"),
            });
        }
        self
    }

    /// A check that passed when `mistake` is `None`.
    pub fn judged(
        name: &'static str,
        numbers: String,
        mistake: Option<&dyn Mistake>,
        data: Value,
    ) -> Check {
        Check {
            name,
            passed: mistake.is_none(),
            numbers,
            diagnosis: mistake.map(|m| m.diagnosis()),
            data,
            trace: Vec::new(),
        }
    }

    /// The trace lines that show this check's diagnosis (kept only when it failed).
    pub fn with_trace(mut self, lines: Vec<String>) -> Check {
        if !self.passed {
            self.trace = lines;
        }
        self
    }
}

/// All checks of one exercise, in order.
#[derive(Debug, Clone)]
pub struct Report {
    pub exercise: Exercise,
    pub checks: Vec<Check>,
    /// What the verdict says when every check passed.
    pub all_passed: &'static str,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn verdict(&self) -> String {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        let total = self.checks.len();
        if failed.is_empty() {
            format!(
                "verdict: PASS, {total} of {total} checks passed: {}",
                self.all_passed
            )
        } else {
            format!(
                "verdict: FAIL, {} of {total} checks failed: {}",
                failed.len(),
                failed.join(", ")
            )
        }
    }

    /// One line per check (`PASS name — numbers` / `FAIL name — numbers => diagnosis`), then the verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let status = if check.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!("{status} {} — {}", check.name, check.numbers));
            if let Some(diagnosis) = &check.diagnosis {
                out.push_str(&format!(" => {}", diagnosis.message));
            }
            out.push('\n');
            if !check.trace.is_empty() {
                out.push_str("    what your code did (from the trace):\n");
                for line in &check.trace {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        out.push_str(&self.verdict());
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> String {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "passed": c.passed,
                    "numbers": c.numbers,
                    "diagnosis": c.diagnosis.as_ref().map(|d| d.code),
                    "meaning": c.diagnosis.as_ref().map(|d| d.message.as_str()),
                    "data": c.data,
                    "trace": c.trace,
                })
            })
            .collect();
        json!({
            "exercise": self.exercise.number(),
            "passed": self.passed(),
            "checks_passed": self.checks.iter().filter(|c| c.passed).count(),
            "checks_failed": self.checks.iter().filter(|c| !c.passed).count(),
            "verdict": self.verdict(),
            "checks": checks,
        })
        .to_string()
    }
}

/// What `verify` runs for one exercise. Each exercise's module provides one
/// (`GRADER`, next to its checks), and `registry::grader` is the one table
/// from an exercise to its grader.
pub struct Grader {
    /// The checks' names, in the order they are printed.
    pub checks: &'static [&'static str],
    /// Runs the checks. Errors only when they could not run.
    pub verify: for<'a> fn(&'a Api, &'a Options) -> Verifying<'a>,
}

/// A grader's checks on their way: boxed, so that every exercise's `async fn
/// verify` fits the one fn pointer type of [`Grader::verify`].
pub type Verifying<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Report>> + 'a>>;

/// Whether one of the exercise's checks waits `--late-secs` for a late copy
/// (exercise 1's, which exercises 2 and 3 run too).
pub fn waits_for_a_late_copy(exercise: Exercise) -> bool {
    grader(exercise).checks.contains(&duplicate_delivery::LATE)
}

/// How many checks `verify --exercise N` runs.
pub fn check_count(exercise: Exercise) -> usize {
    grader(exercise).checks.len()
}

/// Runs the exercise's checks. Errors only when the checks could not run.
pub async fn verify(exercise: Exercise, api: &Api, options: &Options) -> anyhow::Result<Report> {
    let api = api.clone().leasing(Some(options.lease_ms));
    (grader(exercise).verify)(&api, options).await
}

/// `a` then `b`, as one array of `N` (= A + B) check names: a later exercise's
/// checks followed by the earlier exercise's it must still pass, in a `const`.
pub(super) const fn chain<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "N must be A + B");
    let mut all = [""; N];
    let mut i = 0;
    while i < A {
        all[i] = a[i];
        i += 1;
    }
    while i < N {
        all[i] = b[i - A];
        i += 1;
    }
    all
}

/// Submits one copy and waits until `n` deliveries of the job are acknowledged
/// and no attempt of its run is still out. `Err` is what the check saw when
/// that had not happened within `limit` (the job and its trace).
pub(crate) async fn submit_and_wait(
    api: &Api,
    exercise: Exercise,
    job_id: &str,
    run_id: &str,
    n: u64,
    limit: Duration,
) -> anyhow::Result<Result<JobView, Stuck>> {
    api.submit_to(exercise, job_id, run_id, serde_json::json!({}))
        .await?;
    let (_, done) = wait_run(api, run_id, n, limit).await?;
    let job = api.job(job_id).await?;
    if !done || job.deliveries_done < n {
        return Ok(Err(Stuck::of(api, &job, limit).await));
    }
    Ok(Ok(job))
}

/// A job a check waited for in vain: how long, and what it showed then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub waited_secs: u64,
    pub observed: String,
}

impl Stuck {
    /// What `job` and its trace showed after waiting `waited`.
    pub(crate) async fn of(api: &Api, job: &JobView, waited: Duration) -> Stuck {
        let traces = api.job_trace(&job.job_id).await.unwrap_or_default();
        Stuck {
            waited_secs: waited.as_secs(),
            observed: traces::observed(job, &traces),
        }
    }
}

/// Waits until the run has settled with `expected` submissions (see [`is_settled`]).
pub(crate) async fn wait_run(
    api: &Api,
    run_id: &str,
    expected: u64,
    limit: Duration,
) -> anyhow::Result<(RunSummary, bool)> {
    poll_until(
        Instant::now() + limit,
        || api.run(run_id),
        |run| is_settled(run, expected),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    // No two rows of the table share a module (a row copied and not changed),
    // and no exercise has an empty or ambiguous list of checks.
    #[test]
    fn every_exercise_has_its_own_grader_with_distinct_checks() {
        let mut lists: Vec<&[&str]> = Exercise::ALL.iter().map(|&e| grader(e).checks).collect();
        lists.sort();
        lists.dedup();
        assert_eq!(
            lists.len(),
            Exercise::ALL.len(),
            "two exercises share a grader"
        );
        for &exercise in Exercise::ALL {
            let grader = grader(exercise);
            assert!(!grader.checks.is_empty(), "{exercise}");
            assert!(grader.checks.iter().all(|c| !c.is_empty()), "{exercise}");
            let mut names = grader.checks.to_vec();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), grader.checks.len(), "{exercise}");
        }
    }

    #[test]
    fn chain_keeps_the_order() {
        const ALL: [&str; 3] = chain(["a"], ["b", "c"]);
        assert_eq!(ALL, ["a", "b", "c"]);
    }
}
