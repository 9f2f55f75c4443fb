//! `compare BEFORE AFTER`: two saved summaries side by side, and one line that
//! says whether the fix worked. Students need not edit this file.
//!
//! Every key of either file is shown, and every number that can say "still
//! wrong" is judged: duplicate effects, lost effects, dead letters, unrecorded
//! skips, and runs that did not drain or settle.

use lab_schema::Measured;
use lab_schema::measured::OrderCounts;
use lab_schema::summary::{plural, show};
use serde_json::Value;

use crate::saved::Saved;

/// The comparison of two saved runs of the same scenario.
pub struct Comparison {
    pub before: Saved,
    pub after: Saved,
    pub verdict: String,
    /// The after run has exactly one effect per job and every duplicate was skipped and recorded.
    pub fixed: bool,
}

impl Comparison {
    /// Compares two saved summaries; refuses two different scenarios.
    pub fn new(before: Saved, after: Saved) -> anyhow::Result<Comparison> {
        if before.scenario() != after.scenario() {
            anyhow::bail!(
                "cannot compare a {} run ({}) with a {} run ({}): save both with the same scenario",
                before.scenario(),
                before.path.display(),
                after.scenario(),
                after.path.display()
            );
        }
        let (fixed, verdict) = verdict(&before, &after);
        Ok(Comparison {
            before,
            after,
            verdict,
            fixed,
        })
    }

    /// Every key of either summary, in the documented order, with both values.
    fn rows(&self) -> Vec<(String, Option<Value>, Option<Value>)> {
        let before = self.before.summary.fields();
        let after = self.after.summary.fields();
        let mut keys: Vec<String> = before.iter().map(|(k, _)| k.clone()).collect();
        for (key, _) in &after {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        let find = |fields: &[(String, Value)], key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        keys.into_iter()
            .map(|key| {
                let (b, a) = (find(&before, &key), find(&after, &key));
                (key, b, a)
            })
            .collect()
    }

    /// The side-by-side table, then `# <verdict>`.
    pub fn to_text(&self) -> String {
        let cell = |value: &Option<Value>| value.as_ref().map(show).unwrap_or_else(|| "-".into());
        let rows: Vec<(String, String, String)> = self
            .rows()
            .into_iter()
            .map(|(key, b, a)| (key, cell(&b), cell(&a)))
            .collect();
        let key_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let before_width = rows.iter().map(|r| r.1.len()).chain([6]).max().unwrap_or(0);
        let mut out = format!(
            "{:<key_width$}  {:<before_width$}  after\n",
            "key", "before"
        );
        for (key, before, after) in &rows {
            let line = format!("{key:<key_width$}  {before:<before_width$}  {after}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("# {}\n", self.verdict));
        if let Some(note) = self.same_code() {
            out.push_str(&format!("# {note}\n"));
        } else if let Some(next) = self.next_step() {
            out.push_str(&format!("# {next}\n"));
        }
        out
    }

    /// What a "fixed" does not cover: compare judges these two runs' numbers;
    /// the exercise's `verify` stages what a scenario does not.
    fn next_step(&self) -> Option<String> {
        let exercise = self.after.summary.exercise()?;
        self.fixed.then(|| {
            format!(
                "compare judges these two runs' numbers only; verify --exercise {} checks what they cannot show (a failing effect, a late copy, a crash, a retry): run it next",
                exercise.number()
            )
        })
    }

    /// Both runs were made by the same exercise code: said when it is so, since a
    /// "fix" that changed nothing usually means the rebuild failed.
    fn same_code(&self) -> Option<String> {
        let before = self.before.summary.worker_code.as_deref()?;
        let after = self.after.summary.worker_code.as_deref()?;
        let exercise = self.after.summary.exercise().unwrap_or_default();
        (before == after).then(|| {
            format!(
                "nothing changed between these runs: both were made by the same code ({}). Did the rebuild fail? Rebuild: {}",
                before.replace('#', " #"),
                crate::code::rebuild_hint(exercise)
            )
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({
            "before": self.before.summary,
            "after": self.after.summary,
            "fixed": self.fixed,
            "verdict": self.verdict,
            "same_code": self.same_code(),
            "next": self.next_step(),
        })
        .to_string()
    }
}

/// Whether the after run is fixed, and one line that says what is (still) wrong.
fn verdict(before: &Saved, after: &Saved) -> (bool, String) {
    let (b, a) = (&before.summary, &after.summary);
    // A storm's before run is not expected to drain: it is compared first.
    if let (Measured::Storm(bs), Measured::Storm(afs)) = (&b.measured, &a.measured) {
        return storm_verdict(a, bs, afs);
    }
    for (which, run) in [("before", b), ("after", a)] {
        if !run.drained {
            return (
                false,
                format!(
                    "not comparable: the {which} run did not drain (not every submission was processed)"
                ),
            );
        }
        if !run.settled {
            return (
                false,
                format!(
                    "not comparable: the {which} run did not settle ({} still out when it was saved)",
                    plural(run.attempts_in_flight, "delivery attempt")
                ),
            );
        }
    }
    if let (Measured::Orders(b), Measured::Orders(a)) = (&b.measured, &a.measured) {
        return orders_verdict(b, a);
    }
    if let (Measured::Emails(b), Measured::Emails(a)) = (&b.measured, &a.measured) {
        return emails_verdict(b, a);
    }
    let mut note = String::new();
    if (b.unique_jobs, b.total_submissions) != (a.unique_jobs, a.total_submissions) {
        note = format!(
            " (note: the runs differ in size, {} vs {} jobs x copies)",
            b.shape(),
            a.shape()
        );
    }
    if a.duplicate_effects > 0 {
        let same = a.duplicate_effects >= b.duplicate_effects && b.duplicate_effects > 0;
        return (
            false,
            format!(
                "still broken: {} for {}, {}{}{note}",
                plural(a.observed_effects_total, "effect"),
                plural(a.unique_jobs, "unique job"),
                plural(a.duplicate_effects, "duplicate side effect"),
                if same { ", no better than before" } else { "" }
            ),
        );
    }
    if a.lost_effects > 0 {
        return (
            false,
            format!(
                "over-skipping: {} of {} got no effect at all (a claim that was never released?){note}",
                a.lost_effects,
                plural(a.unique_jobs, "job")
            ),
        );
    }
    if a.dead_lettered > 0 {
        return (
            false,
            format!(
                "{} dead-lettered after the fix: the handler failed on every delivery of them \
                 (see the worker log){note}",
                plural(a.dead_lettered, "submission")
            ),
        );
    }
    if b.duplicate_effects == 0 && b.lost_effects == 0 && b.total_submissions > b.unique_jobs {
        return (
            false,
            format!(
                "the before run already had one effect per job: was it taken with the starter worker?{note}"
            ),
        );
    }
    let duplicates = a.duplicate_deliveries();
    if a.duplicate_skips < duplicates {
        return (
            false,
            format!(
                "effects now equal unique jobs, but only {} of {duplicates} duplicate deliveries were recorded as skipped: call {}{note}",
                a.duplicate_skips,
                a.record_skip_call()
            ),
        );
    }
    let skipped = plural(a.duplicate_skips, "duplicate delivery");
    let rescued = if b.lost_effects > 0 {
        format!(", no job lost (before: {} lost)", b.lost_effects)
    } else {
        String::new()
    };
    (
        true,
        format!("fixed: effects now equal unique jobs, {skipped} skipped{rescued}{note}"),
    )
}

/// [`verdict`] of two `retried-post` runs: orders per logical order.
fn orders_verdict(b: &OrderCounts, a: &OrderCounts) -> (bool, String) {
    let (created, expected) = (a.orders_created, a.expected_orders);
    let (extra, missing) = (a.extra_orders, a.missing_orders);
    let before_extra = b.extra_orders;
    if extra > 0 {
        let same = extra >= before_extra;
        return (
            false,
            format!(
                "still broken: {} for {expected} expected, {}{}",
                plural(created, "order"),
                plural(extra, "extra order"),
                if same { ", no better than before" } else { "" }
            ),
        );
    }
    if missing > 0 {
        return (
            false,
            format!(
                "still wrong: {} never created (a request refused, or answered with another order's answer)",
                plural(missing, "expected order")
            ),
        );
    }
    let wrong = a.wrong_answers;
    if wrong > 0 {
        return (
            false,
            format!(
                "still wrong: the orders are right, but {} (a replay of another order, a retry refused, or an order where 400 or 422 was due)",
                plural(wrong, "wrong final answer")
            ),
        );
    }
    if before_extra == 0 {
        return (
            false,
            "the before run already had one order per logical order: was it taken with the starter API?".to_string(),
        );
    }
    (
        true,
        format!(
            "fixed: {} for {expected} expected, {} (before: {})",
            plural(created, "order"),
            plural(a.replays, "replayed answer"),
            plural(before_extra, "extra order")
        ),
    )
}

/// `new-jobid` before and after: one email per (order, action), none lost.
/// (Per `jobId` the numbers mislead: a retry under a new jobId is right to
/// send nothing.)
fn emails_verdict(
    before: &lab_schema::measured::EmailFigures,
    after: &lab_schema::measured::EmailFigures,
) -> (bool, String) {
    let figures = format!(
        "duplicate emails {} -> {}, emails never sent {} -> {}",
        before.duplicate_emails,
        after.duplicate_emails,
        before.suppressed_emails,
        after.suppressed_emails
    );
    if after.duplicate_emails > 0 || after.suppressed_emails > 0 {
        return (
            false,
            format!(
                "still broken: {} for {} (order, action) pairs: {figures}",
                plural(after.emails_sent, "email"),
                after.order_emails
            ),
        );
    }
    (
        true,
        format!(
            "fixed: {figures}; one email per (order, action), {} under a new jobId skipped",
            plural(after.new_jobid_retries, "retry")
        ),
    )
}

/// `retry-storm` before and after: the storm gone, every job charged once.
fn storm_verdict(
    a: &lab_schema::RunSummary,
    before: &lab_schema::measured::StormFigures,
    after: &lab_schema::measured::StormFigures,
) -> (bool, String) {
    let requests = format!(
        "requests during the outage {} -> {}, 429s {} -> {}",
        before.requests_in_outage,
        after.requests_in_outage,
        before.rate_limited,
        after.rate_limited
    );
    if after.rate_limited > 0 {
        return (false, format!("still a storm: {requests}"));
    }
    if !a.drained {
        return (
            false,
            format!(
                "not every job was charged or dead-lettered in the after run ({} of {}): {requests}",
                a.processed_deliveries + a.dead_lettered,
                a.total_submissions
            ),
        );
    }
    if after.transient_dead_lettered > 0 {
        return (
            false,
            format!(
                "{} dead-lettered after the fix for a transient failure: {requests}",
                plural(after.transient_dead_lettered, "job")
            ),
        );
    }
    if after.declines > after.declined_dead_lettered {
        return (
            false,
            format!(
                "the declined card was still retried ({} declines): {requests}",
                after.declines
            ),
        );
    }
    if a.duplicate_effects > 0 {
        return (
            false,
            format!(
                "{} after the fix: {requests}",
                plural(a.duplicate_effects, "duplicate charge")
            ),
        );
    }
    if before.rate_limited == 0 {
        return (
            false,
            format!(
                "the before run had no storm (no 429): was it taken with the starter worker? {requests}"
            ),
        );
    }
    let last = after
        .last_charge_after_outage_ms
        .map(|ms| format!(", the last {:.1} s after the outage", ms as f64 / 1000.0))
        .unwrap_or_default();
    (
        true,
        format!("fixed: {requests}; every job charged once{last}"),
    )
}
