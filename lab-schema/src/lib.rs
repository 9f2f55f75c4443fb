//! Shared plumbing of the lab: Redis key schema, job ids and the run summary.
//! Students need not edit this crate.
//!
//! # Layout
//! - [`keys`]: every Redis key and stream the api and the worker use.
//! - [`validate_id`]: the rule for `jobId` and `runId` (they end up in Redis keys and log lines).
//! - [`JobView`] / [`RunSummary`]: what `GET /jobs/{jobId}` and `GET /runs/{runId}` return.
//! - [`events`] / [`RunEvents`]: the run's event log, served as `GET /runs/{runId}/events`.
//! - [`payload`]: payload fields the worker honours (`simulateEffectFailure`).
//! - `service` (feature `service`): logging, shutdown signal and Redis connection of the api and worker.
//! - `testing` (feature `testing`): a real `redis-server` on a free port for tests, and
//!   worker binaries built with a patch applied.

use serde::{Deserialize, Serialize};

#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;

/// Longest accepted `jobId` or `runId`.
pub const MAX_ID_LEN: usize = 128;

/// Run id used when a submission does not name one.
pub const DEFAULT_RUN_ID: &str = "adhoc";

/// How long the records of a run (`job:*`, `run:*`, `run-jobs:*`, `ledger:*`)
/// live after their last write: 3 days, so a week of classes does not fill
/// Redis. The student's claims (`processed:*`) carry their own TTL.
pub const RECORD_TTL_SECS: u64 = 3 * 24 * 3600;

/// Entries kept in the dead-letter stream (`jobs:dead`), oldest dropped first.
pub const DEAD_LETTER_MAXLEN: u64 = 10_000;

/// Every Redis key of the lab, in one place.
///
/// | key | type | written by | holds |
/// |---|---|---|---|
/// | `jobs:stream` | stream | api (XADD) | one entry per submission: the queue |
/// | `jobs:dead` | stream | worker | entries set aside (unparsable, or failed `--max-deliveries` times), with the reason; capped at [`DEAD_LETTER_MAXLEN`] |
/// | `job:<jobId>` | hash | api, worker | submissions, processAttempts, effects, status, ... |
/// | `run:<runId>` | hash | api, worker | submissions, attempts, processed, duplicateSkips, deadLettered |
/// | `run-jobs:<runId>` | set | api | the jobIds of the run |
/// | `ledger:<runId>` | stream | worker (effects module) | one entry per applied side effect |
/// | `events:<runId>` | stream (capped, expires) | worker (context, effects) | notable events: delivery, effect, duplicate skip, effect failure |
/// | `effect-failure:<jobId>` | string | worker (effects module) | a simulated effect failure already happened for this job |
/// | `processed:<pipeline>:<jobId>` | string | the student's guard | the idempotency claim |
///
/// `job:*`, `run:*`, `run-jobs:*` and `ledger:*` expire [`RECORD_TTL_SECS`](crate::RECORD_TTL_SECS)
/// after their last write. `jobs:stream` holds only entries not yet acknowledged
/// (an acknowledged entry is deleted), so it never grows with the class.
pub mod keys {
    /// The queue: a Redis Stream read by a consumer group.
    pub const JOB_STREAM: &str = "jobs:stream";
    /// The consumer group every worker joins.
    pub const WORKER_GROUP: &str = "workers";
    /// Where the worker moves entries it cannot parse.
    pub const DEAD_LETTER_STREAM: &str = "jobs:dead";

    pub fn job(job_id: &str) -> String {
        format!("job:{job_id}")
    }

    pub fn run(run_id: &str) -> String {
        format!("run:{run_id}")
    }

    /// Not `run:<runId>:jobs`: ids may contain `:`, and the run `a:jobs` would
    /// then share its key with the job set of the run `a`. Every prefix here
    /// ends at its first `:`, so no two ids can ever map to the same key.
    pub fn run_jobs(run_id: &str) -> String {
        format!("run-jobs:{run_id}")
    }

    pub fn ledger(run_id: &str) -> String {
        format!("ledger:{run_id}")
    }

    /// The run's event log (`GET /runs/{runId}/events`): what the worker did, in order.
    pub fn events(run_id: &str) -> String {
        format!("events:{run_id}")
    }

    /// Set (NX) when the simulated effect failure of a job has happened, so it
    /// happens exactly once across every worker process.
    pub fn effect_failure(job_id: &str) -> String {
        format!("effect-failure:{job_id}")
    }

    /// The idempotency key of the exercise: `processed:<pipeline>:<jobId>`.
    pub fn processed(pipeline: &str, job_id: &str) -> String {
        format!("processed:{pipeline}:{job_id}")
    }
}

/// Field names of a queue entry (`jobs:stream`).
pub mod entry {
    pub const JOB_ID: &str = "jobId";
    pub const RUN_ID: &str = "runId";
    pub const PAYLOAD: &str = "payload";
    pub const SUBMITTED_AT_MS: &str = "submittedAtMs";
}

/// The run's event log (`events:<runId>`): a capped stream that expires, so it
/// never grows without bound. The worker appends to it in the same round trip
/// as a write it makes anyway; the API serves it as `GET /runs/{runId}/events`.
pub mod events {
    /// Roughly how many events a run keeps (XADD MAXLEN ~): the oldest go first.
    pub const MAX_LEN: u64 = 2_000;
    /// Seconds the log lives after its last event.
    pub const TTL_SECS: u64 = 86_400;

    /// Field names of one event entry.
    pub const KIND: &str = "event";
    pub const JOB_ID: &str = "jobId";
    pub const DELIVERY_ID: &str = "deliveryId";
    pub const CONSUMER: &str = "consumer";
    pub const DETAIL: &str = "detail";

    /// Event kinds.
    pub const DELIVERY: &str = "delivery";
    pub const EFFECT: &str = "effect";
    pub const DUPLICATE_SKIP: &str = "duplicate-skip";
    pub const EFFECT_FAILED: &str = "effect-failed";
}

/// Payload fields the worker itself honours (the lab's fault injection).
pub mod payload {
    /// `{"simulateEffectFailure": "once"}`: the first attempt of this job's side
    /// effect fails (across all workers), as an email provider that times out once.
    pub const SIMULATE_EFFECT_FAILURE: &str = "simulateEffectFailure";
    pub const ONCE: &str = "once";
}

/// Field names of a job hash (`job:<jobId>`); they are also the JSON keys of [`JobView`].
pub mod job_field {
    pub const JOB_ID: &str = "jobId";
    pub const RUN_ID: &str = "runId";
    pub const STATUS: &str = "status";
    pub const SUBMISSIONS: &str = "submissions";
    pub const PROCESS_ATTEMPTS: &str = "processAttempts";
    pub const EFFECTS: &str = "effects";
    pub const DUPLICATE_SKIPS: &str = "duplicateSkips";
    pub const IDEMPOTENCY: &str = "idempotency";
    /// Deliveries of this job acknowledged by a worker (each queue entry counts once).
    pub const DELIVERIES_DONE: &str = "deliveriesDone";
    /// Queue entries of this job moved to `jobs:dead` after `--max-deliveries` failed deliveries.
    pub const DEAD_LETTERED: &str = "deadLettered";
}

/// Field names of a run hash (`run:<runId>`).
pub mod run_field {
    pub const SUBMISSIONS: &str = "submissions";
    pub const ATTEMPTS: &str = "attempts";
    pub const DUPLICATE_SKIPS: &str = "duplicateSkips";
    /// Queue entries of the run acknowledged by a worker (each entry counts once).
    pub const PROCESSED: &str = "processed";
    /// Queue entries of the run moved to `jobs:dead` after `--max-deliveries` failed deliveries.
    pub const DEAD_LETTERED: &str = "deadLettered";
}

/// Job status values.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const PROCESSING: &str = "processing";
    /// Every submission of the job has been delivered and acknowledged.
    pub const COMPLETED: &str = "completed";
    /// A delivery of the job failed `--max-deliveries` times and was moved to `jobs:dead`.
    pub const DEAD_LETTERED: &str = "dead-lettered";
}

/// Checks a `jobId` or `runId`: 1 to 128 characters from `[A-Za-z0-9._:-]`.
///
/// Ids become parts of Redis keys (`job:<jobId>`) and of log lines, so spaces,
/// newlines, glob characters (`*?[`) and anything outside ASCII are refused.
pub fn validate_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_LEN}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "{what} contains {bad:?}; allowed are letters, digits and . _ : -"
        ));
    }
    Ok(())
}

/// One job as `GET /jobs/{jobId}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub run_id: String,
    pub status: String,
    pub submissions: u64,
    pub process_attempts: u64,
    pub effects: u64,
    pub duplicate_skips: u64,
    /// What the worker's guard recorded: `not-implemented` in the starter,
    /// `claimed` / `duplicate-skipped` once the guard is in; `null` before any delivery.
    pub idempotency: Option<String>,
    pub deliveries_done: u64,
    /// Deliveries moved to `jobs:dead` after failing `--max-deliveries` times.
    #[serde(default)]
    pub dead_lettered: u64,
}

/// The totals of one run, as `GET /runs/{runId}` returns them. The keys are the
/// summary keys the demo-runner prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub unique_jobs: u64,
    pub total_submissions: u64,
    pub observed_attempts_total: u64,
    /// Counted from the effect ledger (`ledger:<runId>`), one entry per applied effect.
    pub observed_effects_total: u64,
    /// Effects beyond one per job.
    pub duplicate_effects: u64,
    /// Jobs whose every submission was processed but that had no effect at all.
    pub lost_effects: u64,
    pub duplicate_skips: u64,
    /// Queue entries of the run that a worker acknowledged.
    pub processed_deliveries: u64,
    /// Queue entries of the run that failed `--max-deliveries` times and were
    /// moved to `jobs:dead` (not processed; they never block a run).
    #[serde(default)]
    pub dead_lettered: u64,
    /// Every submission of the run has been processed and acknowledged, or dead-lettered.
    pub drained: bool,
}

/// One event of a run, as `GET /runs/{runId}/events` returns it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// The stream entry id (`<unix ms>-<seq>`).
    pub id: String,
    /// When Redis recorded it, in Unix milliseconds.
    pub time_ms: u64,
    /// `delivery`, `effect`, `duplicate-skip` or `effect-failed`.
    pub event: String,
    pub job_id: String,
    pub delivery_id: String,
    /// The worker process that did it.
    pub consumer: String,
    /// e.g. the claim key of a skip, or the effect count after an effect.
    pub detail: String,
}

/// `GET /runs/{runId}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvents {
    pub run_id: String,
    pub events: Vec<RunEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_rule() {
        assert!(validate_id("jobId", "load-1732-3f2a:job.7_x").is_ok());
        assert!(validate_id("jobId", &"a".repeat(MAX_ID_LEN)).is_ok());
        for bad in ["", "a b", "a\nb", "a*", "a?", "a[", "é", "a/b", "a\u{0}"] {
            assert!(validate_id("jobId", bad).is_err(), "{bad:?} was accepted");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(
            validate_id("jobId", &long)
                .unwrap_err()
                .contains("limit is 128")
        );
    }

    #[test]
    fn keys_of_different_ids_never_collide() {
        let ids = ["a", "a:jobs", "jobs", "a:b", "b"];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            for key in [
                keys::job(id),
                keys::run(id),
                keys::run_jobs(id),
                keys::ledger(id),
                keys::events(id),
                keys::effect_failure(id),
            ] {
                assert!(seen.insert(key.clone()), "{key} is used twice");
            }
        }
    }

    #[test]
    fn the_claim_key_has_the_documented_shape() {
        assert_eq!(keys::processed("email", "job-1"), "processed:email:job-1");
    }

    #[test]
    fn the_event_log_key_is_per_run() {
        assert_eq!(keys::events("load-1-abc"), "events:load-1-abc");
        assert_ne!(keys::events("a"), keys::ledger("a"));
    }
}
