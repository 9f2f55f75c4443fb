//! `compare BEFORE AFTER`: two saved summaries side by side, and one line that
//! says whether the fix worked. Students need not edit this file.

use serde_json::Value;

use crate::report::plural;
use crate::saved::{SUMMARY_KEYS, Saved};

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
        if before.scenario != after.scenario {
            anyhow::bail!(
                "cannot compare a {} run ({}) with a {} run ({}): save both with the same scenario",
                before.scenario,
                before.path.display(),
                after.scenario,
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

    /// The side-by-side table, then `# <verdict>`.
    pub fn to_text(&self) -> String {
        let cell = |saved: &Saved, key: &str| -> String {
            match saved.fields.iter().find(|(k, _)| k == key) {
                Some((_, Value::String(text))) => text.clone(),
                Some((_, other)) => other.to_string(),
                None => "-".to_string(),
            }
        };
        let rows: Vec<(&str, String, String)> = SUMMARY_KEYS
            .iter()
            .filter(|key| **key != "job_id" || self.before.job_id.is_some())
            .map(|key| (*key, cell(&self.before, key), cell(&self.after, key)))
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
        out
    }

    pub fn to_json(&self) -> String {
        let side = |saved: &Saved| {
            Value::Object(
                saved
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        };
        serde_json::json!({
            "before": side(&self.before),
            "after": side(&self.after),
            "fixed": self.fixed,
            "verdict": self.verdict,
        })
        .to_string()
    }
}

/// Whether the after run is fixed, and one line that says what is (still) wrong.
fn verdict(before: &Saved, after: &Saved) -> (bool, String) {
    if !before.drained || !after.drained {
        let which = if !before.drained { "before" } else { "after" };
        return (
            false,
            format!(
                "not comparable: the {which} run did not drain (not every submission was processed)"
            ),
        );
    }
    let duplicates = after.total_submissions.saturating_sub(after.unique_jobs);
    let mut note = String::new();
    if (before.unique_jobs, before.total_submissions)
        != (after.unique_jobs, after.total_submissions)
    {
        note = format!(
            " (note: the runs differ in size, {} vs {} jobs x copies)",
            before.shape(),
            after.shape()
        );
    }
    if after.duplicate_effects > 0 {
        let same =
            after.duplicate_effects >= before.duplicate_effects && before.duplicate_effects > 0;
        return (
            false,
            format!(
                "still broken: {} effects for {} unique jobs, {} duplicate side effects{}{note}",
                after.observed_effects_total,
                after.unique_jobs,
                after.duplicate_effects,
                if same { ", no better than before" } else { "" }
            ),
        );
    }
    if after.lost_effects > 0 {
        return (
            false,
            format!(
                "over-skipping: {} of {} jobs got no effect at all (a claim that was never released?){note}",
                after.lost_effects, after.unique_jobs
            ),
        );
    }
    if before.duplicate_effects == 0 && before.total_submissions > before.unique_jobs {
        return (
            false,
            format!(
                "the before run already had one effect per job: was it taken with the starter worker?{note}"
            ),
        );
    }
    if after.duplicate_skips < duplicates {
        return (
            false,
            format!(
                "effects now equal unique jobs, but only {} of {duplicates} duplicate deliveries were recorded as skipped: call ctx.record_duplicate_skip{note}",
                after.duplicate_skips
            ),
        );
    }
    let skipped = plural(after.duplicate_skips, "duplicate delivery");
    (
        true,
        format!("fixed: effects now equal unique jobs, {skipped} skipped{note}"),
    )
}
