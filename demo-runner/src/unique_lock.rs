//! `unique-lock` (the instructor's demonstration beside exercise 6): the same
//! order emails through an enqueue-time unique lock at the API, in the two
//! modes people use (released when the job starts, released when it ends),
//! in front of a worker with no guard of its own; then with no lock, through an
//! idempotent worker. Prints side by side the duplicates that got through and
//! the legitimate emails the lock dropped. Students need not edit this file.
//!
//! The traffic, per column (one run each, order ids of its own):
//! - a slow send: an order's confirmation takes 1.5 s to send, and the
//!   frontend, timed out, retries under a new jobId 0.5 s in;
//! - a late retry: the frontend retries a confirmation after it was sent (its
//!   answer was lost);
//! - a crash: the worker dies (a real SIGKILL) as it is about to send an
//!   order's confirmation (the restarted worker takes it back at once, and
//!   its send takes 3 s), and the order's shipped email follows 1 s after it
//!   was enqueued (legitimate: another email).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lab_schema::measured::Submitted;
use lab_schema::order_email::unique_lock::{
    DEMO_WORKER, IDEMPOTENT, ON_EMAIL, ON_ORDER, UNGUARDED, UNTIL_EXECUTED, UNTIL_EXECUTING,
};
use lab_schema::{Exercise, Measured, RunSummary, payload};
use serde_json::{Value, json};

use crate::client::{Api, Enqueued};
use crate::new_jobid::{CONFIRMATION, Request, SHIPPED, Tally, run_token};
use crate::registry::{Run, RunScenario};
use crate::report::ScenarioRun;
use crate::scenarios::new_run_id;
use crate::wait::{poll_until, wait_settled};

/// What the lock is keyed on.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOn {
    /// The order: one job per order at a time (unique jobs are usually keyed on the record's id).
    Order,
    /// The email: the order and the action.
    Email,
}

/// `unique-lock`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct UniqueLockDemo {
    /// What the lock is keyed on.
    #[arg(long, value_enum, default_value_t = LockOn::Order)]
    pub lock_on: LockOn,
    /// The lock's TTL in seconds (longer than a job's worst case, as the advice goes).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ttl_secs: u64,
}

/// One column of the table: a lock mode (or none) and the worker behind it.
struct Column {
    title: &'static str,
    mode: Option<&'static str>,
    worker: &'static str,
}

const COLUMNS: [Column; 3] = [
    Column {
        title: "lock until-executing",
        mode: Some(UNTIL_EXECUTING),
        worker: UNGUARDED,
    },
    Column {
        title: "lock until-executed",
        mode: Some(UNTIL_EXECUTED),
        worker: UNGUARDED,
    },
    Column {
        title: "no lock, idempotent worker",
        mode: None,
        worker: IDEMPOTENT,
    },
];

/// What one column came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Enqueues the lock refused: retries of an email already asked for
    /// (work saved), and first requests of an email (dropped: never sent).
    pub refused_retries: u64,
    pub refused_legitimate: u64,
    pub duplicate_emails: u64,
    pub never_sent: u64,
    pub emails: u64,
    pub order_emails: u64,
    /// Requests that were a retry under a new jobId.
    pub retries: u64,
}

impl RunScenario for UniqueLockDemo {
    async fn run(&self, run: &Run<'_>) -> anyhow::Result<ScenarioRun> {
        let started = Instant::now();
        let deadline = started + run.timeout;
        let say = |line: String| run.say(line);
        let on = match self.lock_on {
            LockOn::Order => ON_ORDER,
            LockOn::Email => ON_EMAIL,
        };
        let mut narration = vec![say(format!(
            "the same order emails three times: through a unique lock at the API (keyed on the {on}, TTL {} s) released when the job starts, then when it ends, both in front of a worker with no guard; then with no lock, through an idempotent worker. Each: a slow send retried under a new jobId, a late retry, a worker crash before sending (the restarted worker's send then takes 3 s) and the order's shipped email 1 s in",
            self.ttl_secs
        ))];
        let mut outcomes = Vec::new();
        let mut last = None;
        for column in &COLUMNS {
            let lock = column
                .mode
                .map(|mode| json!({ "mode": mode, "on": on, "ttlMs": self.ttl_secs * 1000 }));
            let (outcome, summary, submitted) =
                run_column(run.api, run.name, column, lock, deadline).await?;
            narration.push(say(format!(
                "  {}: {} sent for {} emails",
                column.title, outcome.emails, outcome.order_emails
            )));
            outcomes.push(outcome);
            last = Some((summary, submitted));
        }
        narration.extend(table(&outcomes).into_iter().map(say));
        let (summary, submitted) = last.expect("three columns");
        // The summary is the idempotent worker's run, the way to do it.
        let tally_figures = lab_schema::measured::EmailFigures {
            submitted,
            order_emails: outcomes[2].order_emails,
            emails_sent: summary.observed_effects_total,
            duplicate_emails: outcomes[2].duplicate_emails,
            suppressed_emails: outcomes[2].never_sent,
            new_jobid_retries: outcomes[2].retries,
            same_jobid_copies: 0,
        };
        let mut result =
            ScenarioRun::new(run.name, summary, started, Measured::Emails(tally_figures));
        result.narration = narration;
        Ok(result)
    }
}

/// Sends one column's traffic and counts what came of it.
async fn run_column(
    api: &Api,
    scenario: &str,
    column: &Column,
    lock: Option<Value>,
    deadline: Instant,
) -> anyhow::Result<(Outcome, RunSummary, Submitted)> {
    let run_id = new_run_id(scenario);
    let t = run_token(&run_id);
    let mut job = 0;
    let mut next = |order: &str, action: &str, retry: u32| {
        job += 1;
        Request::new(
            format!("{run_id}-job-{job}"),
            &format!("ord-{t}-{order}"),
            action,
            &format!("cus-{t}"),
            retry,
        )
    };
    let mut sent = Sent::default();
    // A slow send, retried under a new jobId while it is sending.
    let slow = next("1", CONFIRMATION, 0);
    let slow_retry = next("1", CONFIRMATION, 1);
    let slow = sent
        .send(
            api,
            &run_id,
            column,
            &lock,
            slow,
            json!({ payload::STALL_MS: [1500] }),
        )
        .await?;
    started_after(api, slow.as_deref(), Duration::from_millis(500), deadline).await?;
    sent.send(api, &run_id, column, &lock, slow_retry, json!({}))
        .await?;
    wait_settled(api, &run_id, sent.accepted, deadline).await?;
    // A late retry, after the email was sent.
    let late = next("2", CONFIRMATION, 0);
    let late_retry = next("2", CONFIRMATION, 1);
    sent.send(api, &run_id, column, &lock, late, json!({}))
        .await?;
    wait_settled(api, &run_id, sent.accepted, deadline).await?;
    sent.send(api, &run_id, column, &lock, late_retry, json!({}))
        .await?;
    wait_settled(api, &run_id, sent.accepted, deadline).await?;
    // A crash before sending; the order's next email follows.
    let crashing = next("3", CONFIRMATION, 0);
    let shipped = next("3", SHIPPED, 0);
    let crashing = sent
        .send(
            api,
            &run_id,
            column,
            &lock,
            crashing,
            // The restarted worker takes the delivery back at once; its send then
            // takes 3 s (a slow email provider): the job is not done for a while.
            json!({ payload::SIMULATE_CRASH: payload::BEFORE_EFFECT, payload::STALL_MS: [3000] }),
        )
        .await?;
    started_after(api, crashing.as_deref(), Duration::from_secs(1), deadline).await?;
    sent.send(api, &run_id, column, &lock, shipped, json!({}))
        .await?;
    let summary = wait_settled(api, &run_id, sent.accepted, deadline).await?;
    let accepted: Vec<&Request> = sent.accepted_requests.iter().collect();
    let tally = Tally::read(api, &accepted).await?;
    let outcome = sent.outcome(&tally);
    let submitted = Submitted {
        job_id: None,
        accepted: sent.accepted,
        submit_retries: 0,
    };
    Ok((outcome, summary, submitted))
}

/// What a column sent, and what the lock did with it.
#[derive(Default)]
struct Sent {
    accepted: u64,
    accepted_requests: Vec<Request>,
    /// Every request, in order, and whether the lock refused it.
    all: Vec<(Request, bool)>,
}

/// Waits `at_least`, then until a worker has started `job_id` (its attempt
/// count is above 0), so that the next request finds the lock in the state the
/// column shows: released at the start, or held by a running job. On a slow
/// machine a worker may take longer than `at_least` to get to it. A job
/// refused at the API (`None`) never starts: then only `at_least` is waited.
async fn started_after(
    api: &Api,
    job_id: Option<&str>,
    at_least: Duration,
    deadline: Instant,
) -> anyhow::Result<()> {
    tokio::time::sleep(at_least).await;
    let Some(job_id) = job_id else {
        return Ok(());
    };
    let (_, started) = poll_until(deadline, || api.job(job_id), |j| j.process_attempts > 0).await?;
    anyhow::ensure!(
        started,
        "no worker started {job_id} before the scenario's timeout. {}",
        crate::STUCK_HINT
    );
    Ok(())
}

impl Sent {
    /// Submits `request` (its payload plus `extra`, the column's worker and
    /// a lease longer than the slow send) with the column's lock, if any.
    /// Its job id when the API accepted it, `None` when the lock refused it.
    async fn send(
        &mut self,
        api: &Api,
        run_id: &str,
        column: &Column,
        lock: &Option<Value>,
        request: Request,
        extra: Value,
    ) -> anyhow::Result<Option<String>> {
        let mut payload = request.email.to_payload();
        payload[DEMO_WORKER] = json!(column.worker);
        payload[payload::LEASE_MS] = json!(5_000);
        if let (Some(fields), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
            fields.extend(extra.clone());
        }
        let refused = match lock {
            Some(lock) => {
                let answer = api
                    .submit_unique(&request.job_id, run_id, payload, lock.clone())
                    .await?;
                matches!(answer, Enqueued::Deduplicated { .. })
            }
            None => {
                api.submit_to(Exercise::NewJobId, &request.job_id, run_id, payload)
                    .await?;
                false
            }
        };
        if !refused {
            self.accepted += 1;
            self.accepted_requests.push(request.clone());
        }
        let accepted = (!refused).then(|| request.job_id.clone());
        self.all.push((request, refused));
        Ok(accepted)
    }

    /// The column's figures, from the emails each accepted job sent (`tally`).
    fn outcome(&self, tally: &Tally) -> Outcome {
        let mut per_email: BTreeMap<String, u64> = BTreeMap::new();
        let mut outcome = Outcome::default();
        for (request, refused) in &self.all {
            let identity = request.email.identity();
            let asked_before = per_email.contains_key(&identity);
            per_email.entry(identity).or_insert(0);
            match (refused, asked_before) {
                (true, true) => outcome.refused_retries += 1,
                (true, false) => outcome.refused_legitimate += 1,
                _ => {}
            }
        }
        for ((_, identity), emails) in &tally.per_email {
            per_email.insert(identity.clone(), emails.emails);
        }
        outcome.retries = self.all.iter().filter(|(r, _)| r.email.retry > 0).count() as u64;
        outcome.order_emails = per_email.len() as u64;
        outcome.emails = per_email.values().sum();
        outcome.duplicate_emails = per_email.values().map(|n| n.saturating_sub(1)).sum();
        outcome.never_sent = per_email.values().filter(|n| **n == 0).count() as u64;
        outcome
    }
}

/// The three columns side by side.
pub(crate) fn table(outcomes: &[Outcome]) -> Vec<String> {
    /// A row: its label, and its figure of a column.
    type Row = (&'static str, fn(&Outcome) -> u64);
    let rows: [Row; 5] = [
        ("duplicate emails (got through)", |o| o.duplicate_emails),
        ("emails never sent", |o| o.never_sent),
        ("enqueues refused by the lock", |o| {
            o.refused_retries + o.refused_legitimate
        }),
        ("  of them retries (work saved)", |o| o.refused_retries),
        ("  of them other emails (dropped)", |o| o.refused_legitimate),
    ];
    let mut lines = vec![format!(
        "{:<34}{:>22}{:>22}{:>28}",
        "", COLUMNS[0].title, COLUMNS[1].title, COLUMNS[2].title
    )];
    for (label, value) in rows {
        let cells: Vec<u64> = outcomes.iter().map(value).collect();
        let lock_only = label.contains("refused") || label.starts_with("  of");
        lines.push(format!(
            "{label:<34}{:>22}{:>22}{:>28}",
            cells.first().copied().unwrap_or(0),
            cells.get(1).copied().unwrap_or(0),
            if lock_only {
                "-".to_string()
            } else {
                cells.get(2).copied().unwrap_or(0).to_string()
            }
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_each_tool_in_its_column() {
        let lines = table(&[
            Outcome {
                duplicate_emails: 2,
                ..Outcome::default()
            },
            Outcome {
                duplicate_emails: 1,
                never_sent: 1,
                refused_retries: 1,
                refused_legitimate: 1,
                ..Outcome::default()
            },
            Outcome::default(),
        ]);
        assert_eq!(lines.len(), 6);
        assert!(
            lines[0].contains("lock until-executing")
                && lines[0].ends_with("no lock, idempotent worker")
        );
        fn cells(line: &str) -> Vec<&str> {
            line.split_whitespace().rev().take(3).collect()
        }
        assert_eq!(cells(&lines[1]), ["0", "1", "2"]);
        assert_eq!(cells(&lines[2]), ["0", "1", "0"]);
        assert_eq!(cells(&lines[3]), ["-", "2", "0"]);
        assert_eq!(cells(&lines[5]), ["-", "1", "0"]);
    }
}
