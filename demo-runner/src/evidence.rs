//! `evidence [--exercise N] --out FILE.md`: what the handout asks students to
//! turn in, in one Markdown file. Exercise 1: the duplicate-observe output
//! before and after the fix, the duplicate-load output after it (and the
//! before/after table), and the worker's duplicate skips from the run's event
//! log. Exercises 2 to 6: the scenario's output before and after the fix and
//! their comparison, and what the workers recorded in the after run. Both end
//! with `verify --exercise N`, run when the file is made (so its verdict is
//! the running code's, not a pasted one). Students need not edit this file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lab_schema::exercise::RECORD_SKIP;
use lab_schema::{EventKind, Exercise, RunEvent, RunEvents};

use crate::client::Api;
use crate::compare::Comparison;
use crate::saved::{self, Saved};

/// Where the evidence comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub observe_before: PathBuf,
    pub observe_after: PathBuf,
    pub load_after: PathBuf,
    /// Optional: when given (or when the default file exists), adds the before/after table.
    pub load_before: Option<PathBuf>,
}

/// The exercise whose handout asks for this evidence, and the two of its
/// scenarios the files come from (a unit test holds them to the registry; the
/// flags `--observe-before` and `--load-after` are named after them).
const EXERCISE: Exercise = Exercise::DuplicateDelivery;
const OBSERVE: &str = "duplicate-observe";
const LOAD: &str = "duplicate-load";

/// Skip lines quoted from the load run at most.
const MAX_SKIP_LINES: usize = 12;

/// The files a later exercise's handout saves its scenario to
/// (`--save <name>-before.json`, `--save <name>-after.json`): the handouts'
/// short names, else the scenario's own name.
pub fn saved_files(exercise: Exercise) -> (PathBuf, PathBuf) {
    const SHORT: [(Exercise, &str); 6] = [
        (Exercise::DuplicateDelivery, "load"),
        (Exercise::CrashWindow, "crash"),
        (Exercise::DoubleCharge, "charge"),
        (Exercise::RetriedPost, "post"),
        (Exercise::RetryStorm, "storm"),
        (Exercise::NewJobId, "new-jobid"),
    ];
    let name = SHORT
        .iter()
        .find(|(e, _)| *e == exercise)
        .map_or(exercise.info().scenarios[0], |(_, name)| *name);
    (
        PathBuf::from(format!("{name}-before.json")),
        PathBuf::from(format!("{name}-after.json")),
    )
}

/// Events of the after run quoted at most.
const MAX_EVENT_LINES: usize = 16;

/// A later exercise's evidence: its scenario before and after the fix (saved
/// files), their comparison, what the workers recorded in the after run, and
/// `verified`, the report of `verify --exercise N` just run.
pub async fn build_pair(
    api: &Api,
    exercise: Exercise,
    before: &Path,
    after: &Path,
    verified: &str,
) -> anyhow::Result<String> {
    let scenario = exercise.info().scenarios[0];
    let before = load_as(before, scenario)?;
    let after = load_as(after, scenario)?;
    api.check_ready().await?;
    let events = api.events(&after.summary.run_id).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot read the events of {}: {err:#}",
            after.summary.run_id
        )
    })?;
    let mut md = header(api, exercise, &[&before, &after], &before, &after).await;
    md.push_str(
        "## My explanation

",
    );
    md.push_str(
        "_Replace this line with the three to five sentences the handout's \"What to turn in\" asks for._\n\n",
    );
    section(&mut md, &format!("`{scenario}` before the fix"), &before);
    section(&mut md, &format!("`{scenario}` after the fix"), &after);
    let comparison = Comparison::new(before, after.clone())?;
    let _ = write!(md, "## `{scenario}` before and after\n\n```text\n");
    md.push_str(&comparison.to_text());
    md.push_str("```\n\n");
    let _ = writeln!(
        md,
        "## What the workers recorded in the after run\n\nFrom the run's event log (`GET /runs/{{runId}}/events`, run `{}`): {}.\n",
        after.summary.run_id,
        event_counts(&events)
    );
    let notable: Vec<&RunEvent> = events
        .events
        .iter()
        .filter(|e| {
            !matches!(
                e.event,
                EventKind::Delivery | EventKind::Effect | EventKind::RetryLater
            )
        })
        .collect();
    if !notable.is_empty() {
        let intro = "Besides deliveries, effects and \"not yet\" waits";
        quote_events(&mut md, intro, &notable, MAX_EVENT_LINES);
    }
    verify_section(&mut md, exercise, verified);
    Ok(md)
}

/// `12 delivery, 6 effect, 6 duplicate-skip`: each kind of event, in the order met.
fn event_counts(events: &RunEvents) -> String {
    let mut counts: Vec<(EventKind, usize)> = Vec::new();
    for event in &events.events {
        match counts.iter_mut().find(|(kind, _)| *kind == event.event) {
            Some((_, n)) => *n += 1,
            None => counts.push((event.event, 1)),
        }
    }
    if counts.is_empty() {
        return "no event".to_string();
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The title, the files, and which code made the runs and runs now.
async fn header(
    api: &Api,
    exercise: Exercise,
    files: &[&Saved],
    before: &Saved,
    after: &Saved,
) -> String {
    let mut md = String::new();
    let info = exercise.info();
    let _ = writeln!(
        md,
        "# Evidence: {} (exercise {})\n",
        info.title, info.number
    );
    let _ = writeln!(
        md,
        "Made by `demo-runner evidence` from {}.\n",
        files
            .iter()
            .map(|s| format!("`{}`", file_name(&s.path)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let code = crate::code::report(api, exercise).await;
    let made_by = |saved: &Saved| {
        saved
            .summary
            .worker_code
            .as_deref()
            .unwrap_or("(not recorded)")
            .replace('#', " #")
    };
    let _ = writeln!(
        md,
        "Code: the runs before the fix were made by {}, after the fix by {}. Now:\n\n```text\n{}\n```\n",
        made_by(before),
        made_by(after),
        code.lines.join("\n")
    );
    md
}

/// `intro`, then the first `max` of `events`, one line each, in a text block.
fn quote_events(md: &mut String, intro: &str, events: &[&RunEvent], max: usize) {
    let first = if events.len() > max {
        format!(", the first {max}")
    } else {
        String::new()
    };
    let _ = writeln!(md, "{intro}{first}:\n");
    md.push_str("```text\n");
    for event in events.iter().take(max) {
        md.push_str(&event_line(event));
    }
    md.push_str("```\n\n");
}

/// `verify --exercise N`'s report, run when the file was made.
fn verify_section(md: &mut String, exercise: Exercise, verified: &str) {
    let _ = write!(
        md,
        "## `verify --exercise {}`, run when this file was made\n\n```text\n{verified}```\n",
        exercise.number()
    );
}

/// Reads the saved files, fetches the after runs' events, and returns the Markdown.
pub async fn build(api: &Api, sources: &Sources, verified: &str) -> anyhow::Result<String> {
    let observe_before = load_as(&sources.observe_before, OBSERVE)?;
    let observe_after = load_as(&sources.observe_after, OBSERVE)?;
    let load_after = load_as(&sources.load_after, LOAD)?;
    let load_before = match &sources.load_before {
        Some(path) => Some(load_as(path, LOAD)?),
        None => None,
    };
    api.check_ready().await?;
    let observe_events = api
        .events(&observe_after.summary.run_id)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot read the events of {}: {err:#}",
                observe_after.summary.run_id
            )
        })?;
    let load_events = api
        .events(&load_after.summary.run_id)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot read the events of {}: {err:#}",
                load_after.summary.run_id
            )
        })?;

    let files: Vec<&Saved> = [
        Some(&observe_before),
        Some(&observe_after),
        load_before.as_ref(),
        Some(&load_after),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut md = header(api, EXERCISE, &files, &observe_before, &load_after).await;
    md.push_str("## My idempotency strategy\n\n");
    md.push_str(
        "_Replace this line with 3 to 5 sentences: the key you claim, the Redis command, \
         what a delivery does when its claim fails, and why this is safe when two deliveries \
         of one job arrive at the same moment._\n\n",
    );
    section(
        &mut md,
        &format!("`{OBSERVE}` before the fix"),
        &observe_before,
    );
    section(
        &mut md,
        &format!("`{OBSERVE}` after the fix"),
        &observe_after,
    );
    section(&mut md, &format!("`{LOAD}` after the fix"), &load_after);
    if let Some(before) = load_before {
        let comparison = Comparison::new(before, load_after.clone())?;
        let _ = write!(md, "## `{LOAD}` before and after\n\n```text\n");
        md.push_str(&comparison.to_text());
        md.push_str("```\n\n");
    }

    md.push_str("## Worker log: duplicate deliveries skipped\n\n");
    let _ = writeln!(
        md,
        "From the run's event log (`GET /runs/{{runId}}/events`), written by the workers.\n"
    );
    let _ = writeln!(
        md,
        "The observed job after the fix, every event (run `{}`):\n",
        observe_after.summary.run_id
    );
    md.push_str("```text\n");
    for event in &observe_events.events {
        md.push_str(&event_line(event));
    }
    md.push_str("```\n\n");
    let skips: Vec<&RunEvent> = skips(&load_events);
    let intro = format!(
        "`{LOAD}` after the fix: {} duplicate skips (run `{}`)",
        skips.len(),
        load_after.summary.run_id
    );
    quote_events(&mut md, &intro, &skips, MAX_SKIP_LINES);
    if skips.is_empty()
        && observe_events
            .events
            .iter()
            .all(|e| e.event != EventKind::DuplicateSkip)
    {
        let _ = writeln!(
            md,
            "\nNo duplicate skip was recorded: the after runs were taken without a working guard \
             (or the guard does not call `{RECORD_SKIP}`).\n"
        );
    }
    verify_section(&mut md, EXERCISE, verified);
    Ok(md)
}

fn load_as(path: &Path, scenario: &str) -> anyhow::Result<Saved> {
    let saved = Saved::load(path)?;
    if saved.scenario() != scenario {
        anyhow::bail!(
            "{} holds a {} run where a {scenario} run was expected",
            saved.path.display(),
            saved.scenario()
        );
    }
    Ok(saved)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn section(md: &mut String, title: &str, saved: &Saved) {
    let _ = writeln!(md, "## {title}\n\n```text");
    md.push_str(&saved.text());
    md.push_str("```\n\n");
}

fn skips(events: &RunEvents) -> Vec<&RunEvent> {
    events
        .events
        .iter()
        .filter(|e| e.event == EventKind::DuplicateSkip)
        .collect()
}

/// `2026-11-22T22:30:01.123Z worker-1 duplicate-skip job=... delivery=... processed:email:...`
fn event_line(event: &RunEvent) -> String {
    let what = match event.event {
        EventKind::Delivery => "delivery received",
        EventKind::Effect => "side effect applied (email sent)",
        EventKind::DuplicateSkip => "duplicate delivery skipped: side effect NOT applied",
        EventKind::EffectFailed => "side effect FAILED",
        EventKind::AttemptFailed => "process_job failed: not acknowledged",
        EventKind::DeadLettered => "moved to the dead-letter stream",
        EventKind::RetryLater => "not yet: delivered again later",
        EventKind::Crashed => "worker CRASHED (simulated)",
        EventKind::RetryScheduled => "failed: retry scheduled",
    };
    let mut line = format!(
        "{} {} {what} job_id={} delivery_id={}",
        utc_timestamp(event.time_ms),
        event.consumer,
        event.job_id,
        event.delivery_id
    );
    if event.event == EventKind::Crashed {
        let _ = write!(line, " at={}", event.detail);
    }
    if event.event == EventKind::DuplicateSkip {
        let _ = write!(line, " claim_key={}", event.detail);
    }
    line.push('\n');
    line
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date crate.
pub fn utc_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

/// Writes the evidence file.
pub fn write(out: &Path, markdown: &str) -> anyhow::Result<()> {
    saved::write(out, markdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evidence_comes_from_its_exercises_scenarios() {
        assert_eq!(Exercise::of_scenario(OBSERVE), Some(EXERCISE));
        assert_eq!(Exercise::of_scenario(LOAD), Some(EXERCISE));
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_timestamp(1_795_383_606_992), "2026-11-22T21:40:06.992Z");
    }
}
