//! The lab's Prometheus counters: where they live in Redis and what they are
//! called. Students need not edit this file.
//!
//! Every counter is one field of ONE Redis hash, [`COUNTERS`], incremented in a
//! pipeline or script the service sends anyway (no extra round trip). The field
//! is the metric's name and labels exactly as the Prometheus text format writes
//! them (`lab_deliveries_total{exercise="1",worker="worker-1"}`), so the API's
//! `GET /metrics` reads the hash at scrape time and prints it: the counts live in
//! Redis, so they survive the worker crashes the lab causes on purpose.
//!
//! Labels are bounded (exercise, worker, outcome): never a job or run id, which
//! would make one series per job and grow without end.

/// Hash: counter series (name and labels) -> value. Never expires: it holds a
/// few dozen fields however long the class runs.
pub const COUNTERS: &str = "metrics:counters";

/// Submissions accepted by the API (`POST /jobs` answered 202), by exercise.
pub const JOBS_SUBMITTED: &str = "lab_jobs_submitted_total";
/// Delivery attempts started by a worker (every delivery, first or not), by exercise and worker.
pub const DELIVERIES: &str = "lab_deliveries_total";
/// Queue entries acknowledged (counted once per entry, by the XACK that succeeded).
pub const ACKNOWLEDGED: &str = "lab_deliveries_acknowledged_total";
/// Side effects applied (ledger entries), by who applied them (a worker or `provider`).
pub const SIDE_EFFECTS: &str = "lab_side_effects_total";
/// Duplicate deliveries skipped by an idempotency guard, by exercise and worker.
pub const DUPLICATE_SKIPS: &str = "lab_duplicate_skips_total";
/// Failures, by exercise and outcome (`effect-failed`, `attempt-failed`, `crashed`).
pub const FAILURES: &str = "lab_failures_total";
/// Entries of parsed jobs moved to the dead-letter stream, by exercise and
/// reason class ([`DeadLetterClass`]).
pub const DEAD_LETTERS: &str = "lab_dead_letters_total";

/// Why an entry was dead-lettered, as the `reason` label of [`DEAD_LETTERS`]
/// says it: a few fixed values (the reason's text is in the entry itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterClass {
    /// The handler (exercise 5: the retry policy) said it can never succeed.
    Handler,
    /// It failed on each of its `--max-deliveries` deliveries.
    MaxDeliveries,
    /// The retry policy never gave up: the lab's safety net stopped it.
    SafetyNet,
}

impl DeadLetterClass {
    pub const fn label(self) -> &'static str {
        match self {
            DeadLetterClass::Handler => "handler",
            DeadLetterClass::MaxDeliveries => "max-deliveries",
            DeadLetterClass::SafetyNet => "safety-net",
        }
    }
}

/// Failed attempts scheduled again by the retry policy, by exercise.
pub const RETRIES_SCHEDULED: &str = "lab_retries_scheduled_total";

/// The `# HELP` text of each counter, in the order `GET /metrics` prints them.
pub const COUNTER_HELP: &[(&str, &str)] = &[
    (
        JOBS_SUBMITTED,
        "Submissions accepted by the API (202), duplicates included.",
    ),
    (
        DELIVERIES,
        "Delivery attempts started by a worker, first deliveries and redeliveries.",
    ),
    (
        ACKNOWLEDGED,
        "Queue entries acknowledged by a worker, each counted once.",
    ),
    (
        SIDE_EFFECTS,
        "Side effects applied (effect ledger entries).",
    ),
    (
        DUPLICATE_SKIPS,
        "Duplicate deliveries skipped by an idempotency guard.",
    ),
    (
        FAILURES,
        "Failed effects, failed attempts and simulated crashes.",
    ),
    (
        DEAD_LETTERS,
        "Entries of parsed jobs moved to the dead-letter stream jobs:dead.",
    ),
    (
        RETRIES_SCHEDULED,
        "Failed attempts scheduled again by the retry policy (jobs:retry).",
    ),
];

/// The hash field of one series: `name{label="value",...}` (just `name` without
/// labels). Label values are escaped as the text format requires.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 32);
    out.push_str(name);
    out.push('{');
    for (i, (label, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The metric name of a series field (what comes before `{`).
pub fn name_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_written_as_the_text_format_writes_it() {
        assert_eq!(series(DEAD_LETTERS, &[]), "lab_dead_letters_total");
        let s = series(DELIVERIES, &[("exercise", "1"), ("worker", "w\"1")]);
        assert_eq!(s, r#"lab_deliveries_total{exercise="1",worker="w\"1"}"#);
        assert_eq!(name_of(&s), DELIVERIES);
    }
}
