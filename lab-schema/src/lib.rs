//! The lab's contract: what crosses processes (the Redis key schema, job ids,
//! the exercises, the run summary, the routes' types). Students need not edit
//! this crate. Run-time helpers are in `lab-runtime`, test support in `lab-testkit`.
//!
//! # Layout
//! - [`keys`], [`entry`], [`job_field`], [`run_field`], [`event_log`]: every Redis key and field name.
//! - [`JobStatus`], [`EventKind`], [`Idempotency`]: the values those fields hold, as enums.
//! - [`validate_id`]: the rule for `jobId` and `runId` (they end up in Redis keys and log lines).
//! - [`exercise`]: the registry of exercises (number, folder, student file, scenarios).
//! - [`summary`]: [`RunSummary`], the ONE summary type: `GET /runs/{runId}`, the
//!   demo-runner's `key=value` and `--json` output, and the files `--save` writes.
//! - [`JobView`], [`RunEvents`], [`Attempt`]: what the other routes of the API return.
//! - [`payload`]: payload fields the worker honours (the lab's fault injection).
//! - [`provider`]: the contract of the provider, exercise 3's payment gateway.
//! - [`orders`]: the contract of `POST /orders`, exercise 4's route.
//! - [`code`]: the fingerprint of the exercise code a worker runs.
//! - [`grade`]: the result file `./lab grade` writes and `class-report` reads.

use serde::{Deserialize, Serialize};

pub mod code;
pub mod exercise;
pub mod grade;
pub mod measured;
pub mod metrics;
pub mod order_email;
pub mod orders;
pub mod probe;
pub mod provider;
pub mod summary;
pub mod trace;

pub use exercise::Exercise;
pub use measured::Measured;
pub use summary::RunSummary;

/// Longest accepted `jobId` or `runId`.
pub const MAX_ID_LEN: usize = 128;

/// Run id used when a submission does not name one.
pub const DEFAULT_RUN_ID: &str = "adhoc";

/// How long the records of a run (`job:*`, `run:*`, `run-jobs:*`, `ledger:*`,
/// `attempts:*`) live after their last write: 3 days, so a week of classes does
/// not fill Redis. The student's claims (`processed:*`) carry their own TTL.
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
/// | `ledger:<runId>` | stream | worker (effects module), provider | one entry per applied side effect (from exercise 3: per charge the provider made) |
/// | `events:<runId>` | stream (capped, expires) | worker (outcomes module) | notable events: delivery, effect, duplicate skip, effect failure |
/// | `attempts:<runId>` | hash | worker (queue) | the delivery attempts of the run that started and have not returned yet |
/// | `workers` | hash | worker | each consumer name's current process (instance) and its last heartbeat |
/// | `worker-code` | hash | worker | each consumer name's process and the fingerprints of the exercise code it runs ([`code`]) |
/// | `metrics:counters` | hash | api, worker, provider | the counters of `GET /metrics` ([`metrics`]) |
/// | `runs:recent` | sorted set | api | the recent runs the dashboard lists (`api/src/dashboard.rs`) |
/// | `provider:*` | | provider | its idempotency keys, ledger and request logs (see `provider/src/lib.rs`) |
/// | `effect-failure:<jobId>` | string | worker (effects module) | a simulated effect failure already happened for this job |
/// | `crash:<jobId>` | string | worker (effects module) | the simulated crash of this job already happened |
/// | `effect-attempts:<jobId>` | counter | worker (effects module) | effect attempts of this job so far (for `stallMs`) |
/// | `processed:<pipeline>:<jobId>` | string | the student's guard | the idempotency claim |
///
/// `job:*`, `run:*`, `run-jobs:*`, `ledger:*` and `attempts:*` expire
/// [`RECORD_TTL_SECS`](crate::RECORD_TTL_SECS) after their last write.
/// `jobs:stream` holds only entries not yet acknowledged (an acknowledged entry
/// is deleted), so it never grows with the class.
pub mod keys {
    /// The queue: a Redis Stream read by a consumer group.
    pub const JOB_STREAM: &str = "jobs:stream";
    /// The consumer group every worker joins.
    pub const WORKER_GROUP: &str = "workers";
    /// Where the worker moves entries it cannot parse.
    pub const DEAD_LETTER_STREAM: &str = "jobs:dead";
    /// Sorted set: the scheduled retries (exercise 5 on), scored by their due
    /// time (Unix ms). A failed attempt's entry is acknowledged and added here
    /// in one script; once due, a worker moves it back to [`JOB_STREAM`] in one
    /// script (see `worker/src/queue/retries.rs`). Each member is the entry's
    /// fields as JSON, with the attempt count and the first failure's time.
    pub const RETRY_SET: &str = "jobs:retry";
    /// Hash: consumer name -> `<instance>|<heartbeat unix ms>` (see [`crate::WorkerInstance`]).
    pub const WORKERS: &str = "workers";
    /// Hash: consumer name -> `<instance>|<code>`: the exercise code the worker
    /// runs (see [`crate::code::Code::to_field`]); removed when it stops.
    pub const WORKER_CODE: &str = "worker-code";

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

    /// The run's delivery attempts that started and have not returned yet
    /// (field: [`crate::Attempt::field`], value: [`crate::Attempt::value`]).
    pub fn attempts(run_id: &str) -> String {
        format!("attempts:{run_id}")
    }

    /// Set (NX) when the simulated effect failure of a job has happened, so it
    /// happens exactly once across every worker process.
    pub fn effect_failure(job_id: &str) -> String {
        format!("effect-failure:{job_id}")
    }

    /// Set (NX) when the simulated crash of a job has happened, so it happens
    /// once across every worker process.
    pub fn crash(job_id: &str) -> String {
        format!("crash:{job_id}")
    }

    /// Effect attempts of a job so far, across workers (which `stallMs` entry applies).
    pub fn effect_attempts(job_id: &str) -> String {
        format!("effect-attempts:{job_id}")
    }

    /// List: the traces of a traced job's deliveries, one JSON [`crate::trace::Trace`]
    /// each, oldest first (see [`crate::trace`]).
    pub fn trace(job_id: &str) -> String {
        format!("trace:{job_id}")
    }

    /// List: the traces of a run's `POST /orders` requests (exercise 4), one
    /// JSON [`crate::trace::Trace`] each, oldest first.
    pub fn request_traces(run_id: &str) -> String {
        format!("trace-requests:{run_id}")
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
    /// The exercise whose handler runs the job (a number; absent means exercise 1).
    pub const EXERCISE: &str = "exercise";
    /// The business pipeline acting on the job (absent: the worker's `--pipeline`).
    pub const PIPELINE: &str = "pipeline";
    /// `1` when the submission asked for the job's deliveries to be traced.
    pub const TRACE: &str = "trace";
    /// Attempts of the job that failed and were scheduled again (absent: none),
    /// written when the entry goes back to the queue from `jobs:retry`.
    pub const FAILURES: &str = "failures";
    /// When the job's first attempt failed (Unix ms), with [`FAILURES`].
    pub const FIRST_FAILED_MS: &str = "firstFailedMs";
}

/// The most attempts of one job the worker schedules again: the lab's safety
/// net for a retry policy that never gives up (exercise 5's starter). The next
/// failure is dead-lettered whatever the policy says.
pub const MAX_SCHEDULED_ATTEMPTS: u32 = 5000;

/// The run's event log (`events:<runId>`): a capped stream that expires, so it
/// never grows without bound. The worker appends to it in the same round trip
/// as a write it makes anyway; the API serves it as `GET /runs/{runId}/events`.
pub mod event_log {
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
}

/// Payload fields the worker itself honours (the lab's fault injection).
pub mod payload {
    /// `{"simulateEffectFailure": "once"}`: the first attempt of this job's side
    /// effect fails (across all workers), as an email provider that times out once.
    pub const SIMULATE_EFFECT_FAILURE: &str = "simulateEffectFailure";
    pub const ONCE: &str = "once";
    /// `{"simulateCrash": "before-effect"}`: the worker process dies (SIGKILL to itself: a real crash)
    /// when this job's side effect is about to run, once across all workers: after
    /// the handler's claim, before the effect. The worker is restarted (by `./lab`
    /// or compose) and the delivery comes back.
    pub const SIMULATE_CRASH: &str = "simulateCrash";
    pub const BEFORE_EFFECT: &str = "before-effect";
    /// `{"simulateCrash": "after-effect"}`: the same crash right after the effect
    /// was applied, before the handler can mark the job done: the window a claim
    /// in Redis cannot close (exercise 3 closes it at the provider).
    pub const AFTER_EFFECT: &str = "after-effect";
    /// `{"simulateCrash": "before-schedule"}`: the worker dies once its handler
    /// asked for a retry at a later time, before the retry is scheduled (the
    /// entry is still pending: it comes back after the claim idle time).
    pub const BEFORE_SCHEDULE: &str = "before-schedule";
    /// `{"simulateCrash": "after-schedule"}`: the worker dies right after the
    /// retry was scheduled (acknowledged and in `jobs:retry`).
    pub const AFTER_SCHEDULE: &str = "after-schedule";
    /// `{"simulateCrash": "after-move"}`: the worker that moves the job's due
    /// retry back to the queue dies right after the move.
    pub const AFTER_MOVE: &str = "after-move";
    /// `{"stallMs": [4000, 0, 2500]}`: the n-th effect attempt of this job (across
    /// workers) stalls that many milliseconds before the effect, as a worker that is
    /// paused (GC, swapping, a stopped container) while it holds a claim.
    pub const STALL_MS: &str = "stallMs";
    /// `{"redeliverAfterMs": 1000}`: a delivery of this job that fails is
    /// delivered again after this many milliseconds instead of the workers'
    /// claim idle time (`verify` asks for it, so that a check of a failed
    /// effect's redelivery does not wait 10 s). It still counts toward
    /// `--max-deliveries`.
    pub const REDELIVER_AFTER_MS: &str = "redeliverAfterMs";
    /// `{"leaseMs": 1000}`: the lease this job's handler is given
    /// (`ctx.lease_ms`) instead of the workers' `--lease-ms`; its "not yet,
    /// deliver me again later" waits follow it (a third of it).
    pub const LEASE_MS: &str = "leaseMs";
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
    /// The claim key the last recorded duplicate skip named.
    pub const CLAIM_KEY: &str = "claimKey";
    /// Simulated effect failures of this job.
    pub const EFFECT_FAILURES: &str = "effectFailures";
    /// Deliveries of this job whose handler returned an error.
    pub const ATTEMPT_FAILURES: &str = "attemptFailures";
    /// Deliveries of this job that asked to be delivered again later.
    pub const RETRIES_LATER: &str = "retriesLater";
    /// Failed attempts of this job scheduled again (in `jobs:retry`) by the retry policy.
    pub const RETRIES_SCHEDULED: &str = "retriesScheduled";
    /// When the job's scheduled retry is due (Unix ms).
    pub const NEXT_RETRY_MS: &str = "nextRetryMs";
    /// Worker crashes this job caused (`simulateCrash`).
    pub const CRASHES: &str = "crashes";
    /// An order's caller (`POST /orders`, `Authorization: Bearer <account>`).
    pub const ACCOUNT: &str = "account";
    /// An order's `Idempotency-Key` header as received.
    pub const ORDER_KEY: &str = "orderKey";
    /// The Redis key of an order's idempotency record, as the API's exercise code named it.
    pub const ORDER_RECORD: &str = "orderRecord";
    /// Exercise 6: which email the job asks for, `<orderId> <action>`
    /// (`OrderEmail::identity`), written by `POST /jobs`.
    pub const ORDER_EMAIL: &str = "orderEmail";
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
    /// Worker crashes the run's jobs caused (`simulateCrash`).
    pub const CRASHES: &str = "crashes";
    /// Failed attempts of the run's jobs scheduled again by the retry policy.
    pub const RETRIES_SCHEDULED: &str = "retriesScheduled";
}

/// Declares a string-valued enum: its serde name, `as_str` and `parse` agree by construction.
#[macro_export]
#[doc(hidden)]
macro_rules! named_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The name stored in Redis and shown in JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `text`, if there is one.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// A job's status (`status` of `job:<jobId>`).
    pub enum JobStatus {
        Queued = "queued",
        Processing = "processing",
        /// An attempt failed; the retry is scheduled (in `jobs:retry`).
        Scheduled = "scheduled",
        /// Every submission of the job has been delivered and acknowledged.
        Completed = "completed",
        /// A delivery of the job failed `--max-deliveries` times and was moved to `jobs:dead`.
        DeadLettered = "dead-lettered",
    }
}

named_enum! {
    /// What an entry of the run's event log (`events:<runId>`) records.
    pub enum EventKind {
        /// A delivery reached the exercise's handler (counted by `mark_processing`).
        Delivery = "delivery",
        /// The side effect was applied (one ledger entry).
        Effect = "effect",
        /// A duplicate delivery was skipped by the guard; the detail is the claim key.
        DuplicateSkip = "duplicate-skip",
        /// The side effect failed (simulated by the payload).
        EffectFailed = "effect-failed",
        /// The handler returned an error: the delivery stays pending and comes back.
        AttemptFailed = "attempt-failed",
        /// The entry was moved to `jobs:dead`.
        DeadLettered = "dead-lettered",
        /// The handler asked to be delivered again later (another delivery holds
        /// the lease); not counted toward `--max-deliveries`.
        RetryLater = "retry-later",
        /// The worker process died on purpose (`simulateCrash`): a real crash.
        Crashed = "crashed",
        /// The attempt failed and the retry policy scheduled the job again; the
        /// detail says when and why.
        RetryScheduled = "retry-scheduled",
    }
}

named_enum! {
    /// What a guard recorded in the job's `idempotency` field. The student's code
    /// records its own words with `ctx.record_idempotency`; these are the ones the
    /// lab knows.
    pub enum Idempotency {
        /// The starter: no guard yet.
        NotImplemented = "not-implemented",
        /// The guard won the claim and applied the effect.
        Claimed = "claimed",
        /// The guard found the claim taken and skipped the effect.
        DuplicateSkipped = "duplicate-skipped",
    }
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

/// Checks a pipeline name: the id rule, and no `:` (so `processed:<pipeline>:<jobId>`
/// stays unambiguous).
pub fn validate_pipeline(name: &str) -> Result<(), String> {
    validate_id("pipeline", name)?;
    if name.contains(':') {
        return Err("pipeline must not contain ':'".to_string());
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
    /// The claim key named by the last duplicate skip recorded for this job
    /// (`ctx.record_duplicate_skip(job, &key)`); absent before any skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_key: Option<String>,
    /// That key's remaining lifetime in Redis, as TTL answers it: seconds, or -1
    /// when it never expires, or -2 when it does not exist (any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ttl_secs: Option<i64>,
    /// That key's value now, when it exists and is text (e.g. `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_value: Option<String>,
}

impl JobView {
    /// The recorded idempotency outcome, when it is one the lab knows.
    pub fn idempotency(&self) -> Option<Idempotency> {
        self.idempotency.as_deref().and_then(Idempotency::parse)
    }
}

/// One event of a run, as `GET /runs/{runId}/events` returns it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// The stream entry id (`<unix ms>-<seq>`).
    pub id: String,
    /// When Redis recorded it, in Unix milliseconds.
    pub time_ms: u64,
    /// What happened. An event kind this build does not know is refused when read.
    pub event: EventKind,
    pub job_id: String,
    pub delivery_id: String,
    /// The worker process that did it.
    pub consumer: String,
    /// e.g. the claim key of a skip, or the error of a failed attempt.
    pub detail: String,
}

/// `GET /runs/{runId}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvents {
    pub run_id: String,
    pub events: Vec<RunEvent>,
}

impl RunEvents {
    /// How many events of `kind` the log holds.
    pub fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.event == kind).count()
    }
}

/// One worker process: its consumer name in the group, and an instance id that
/// differs for every process start (`<pid>-<start unix ms>`), so a restarted
/// worker of the same name is told apart from the process it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInstance {
    pub consumer: String,
    pub instance: String,
}

/// A delivery attempt that started and has not returned yet (`attempts:<runId>`),
/// as `GET /runs/{runId}/attempts` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub job_id: String,
    pub delivery_id: String,
    pub consumer: String,
    pub instance: String,
    pub started_ms: u64,
}

impl Attempt {
    /// The hash field of the attempt: one per attempt (a delivery, on a consumer,
    /// started at a millisecond), so a later attempt of the same delivery on the
    /// same consumer never shares it.
    pub fn field(delivery_id: &str, consumer: &str, started_ms: u64) -> String {
        format!("{delivery_id}|{consumer}|{started_ms}")
    }

    /// The hash value: `<jobId>|<instance>|<started ms>`.
    pub fn value(job_id: &str, instance: &str, started_ms: u64) -> String {
        format!("{job_id}|{instance}|{started_ms}")
    }

    /// Reads a field and value back; `None` when they are not in that shape.
    pub fn parse(field: &str, value: &str) -> Option<Attempt> {
        let mut key = field.splitn(3, '|');
        let (delivery_id, consumer) = (key.next()?, key.next()?);
        let mut parts = value.splitn(3, '|');
        let (job_id, instance, started) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Attempt {
            job_id: job_id.to_string(),
            delivery_id: delivery_id.to_string(),
            consumer: consumer.to_string(),
            instance: instance.to_string(),
            started_ms: started.parse().ok()?,
        })
    }
}

/// The attempts still out in a run, with what is known of their workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunAttempts {
    pub run_id: String,
    /// Attempts whose worker process is still the registered one (running, paused or stuck).
    pub in_flight: Vec<AttemptView>,
}

/// One attempt still out, for a person: which job, on which worker, for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub job_id: String,
    pub delivery_id: String,
    pub consumer: String,
    /// How long ago the attempt started.
    pub age_ms: u64,
    /// How long ago its worker last renewed its heartbeat (`None`: never registered).
    pub heartbeat_age_ms: Option<u64>,
}

/// The registered process of a consumer name (`workers` hash value): `<instance>|<heartbeat ms>`.
pub fn parse_worker_value(value: &str) -> Option<(&str, u64)> {
    let (instance, heartbeat) = value.rsplit_once('|')?;
    Some((instance, heartbeat.parse().ok()?))
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_rule() {
        assert!(validate_id("jobId", "load-1732-3f2a:job.7_x").is_ok());
        assert!(validate_id("jobId", &"a".repeat(MAX_ID_LEN)).is_ok());
        for bad in [
            "", "a b", "a\nb", "a*", "a?", "a[", "é", "a/b", "a\u{0}", "a|b",
        ] {
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
                keys::attempts(id),
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
    fn enum_names_round_trip_through_text_and_json() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert_eq!(JobStatus::DeadLettered.as_str(), "dead-lettered");
        assert_eq!(Idempotency::parse("claimed"), Some(Idempotency::Claimed));
        assert_eq!(Idempotency::parse("claimd"), None);
    }

    #[test]
    fn an_attempt_reads_back_what_was_written() {
        let field = Attempt::field("1795-0", "worker-1", 1795);
        let value = Attempt::value("load-1-job-2", "4242-1795", 1795);
        let attempt = Attempt::parse(&field, &value).unwrap();
        assert_eq!(attempt.job_id, "load-1-job-2");
        assert_eq!(attempt.consumer, "worker-1");
        assert_eq!(attempt.instance, "4242-1795");
        assert_eq!(attempt.started_ms, 1795);
        assert_eq!(Attempt::parse("no-bar", &value), None);
        assert_eq!(parse_worker_value("4242-1795|99"), Some(("4242-1795", 99)));
    }
}
