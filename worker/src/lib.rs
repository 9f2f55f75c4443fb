//! The lab's worker: an at-least-once consumer of the job queue.
//!
//! **Students: each exercise of the worker is one file with a function
//! `process_job` (`src/job.rs` for exercise 1; `./lab demo exercises` lists
//! them all).** Every other file here is plumbing you need not edit (each says
//! so in its first line).
//!
//! # Layout
//! | file | what it is |
//! |---|---|
//! | `job.rs`, `crash_window.rs`, ... | THE EXERCISES: one student file per exercise, declared in `registry.rs` |
//! | `context.rs` | what `process_job` can use: Redis, the pipeline name, the TTL, helpers |
//! | `delivery.rs` | [`Job`]: one delivery, as read from the queue |
//! | `effects.rs` | the side effects ("send the email", "charge the card") and the faults around them |
//! | `provider.rs` | the provider's client: the charge, and what each answer means |
//! | `outcomes.rs` | every outcome of a delivery, recorded in one place: counters and the run's event log |
//! | `registry.rs` | the student files, and which one handles a job of each exercise |
//! | `queue/` | the consumer loop: read, redeliver, run the handler, acknowledge |
//! | `cli.rs` | the command line of the `worker` binary |
//!
//! # Delivery semantics
//! The queue is a Redis Stream read by the consumer group `workers`. An entry is
//! acknowledged (XACK) only after the handler (`process_job`) returns `Ok`. If a worker dies
//! first, the entry stays pending and another worker claims it (XAUTOCLAIM)
//! after `claim_idle`. Nothing is lost, and so the same job can arrive twice:
//! that is at-least-once delivery, and why `process_job` must be idempotent.
//! An entry whose `process_job` fails `max_deliveries` times in a row is moved
//! to the dead-letter stream `jobs:dead`, so one poisoned job cannot circulate forever.
//! A handler that answers "not yet" ([`JobError::RetryLater`]) is delivered again shortly,
//! without counting as a failure. A worker restarted under the same name (after
//! a crash) first runs again what it had left pending. Each job names its
//! exercise; `registry.rs` routes it to that exercise's `process_job`.

mod asks;
pub mod cli;
mod context;
mod delivery;
mod effects;
mod outcomes;
mod provider;
mod queue;
mod registry;
pub mod retry_storm;
mod unique_lock;

use std::future::Future;
use std::time::Duration;

pub use context::{Charge, Charged, Guard, JobContext, JobError, ProviderError};
pub use delivery::Job;
pub use queue::{Handled, Source, Step, Worker, run};
pub use registry::Exercises;

/// What runs one delivery: the queue plumbing calls it for every delivery,
/// duplicates included. `Ok` acknowledges the delivery; a [`JobError`] says
/// what happens to it instead (delivered again soon, dead-lettered, or
/// delivered again after the claim idle time).
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        ctx: &'a mut JobContext,
        job: &'a Job,
    ) -> impl Future<Output = Result<(), JobError>> + Send + 'a;

    /// The exercise code this handler runs, as the worker publishes it (empty:
    /// none to tell).
    fn code(&self) -> lab_schema::code::Code {
        lab_schema::code::Code::default()
    }
}

/// Everything the worker can be told on the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub redis_url: String,
    /// Deliveries processed at the same time by this process.
    pub concurrency: usize,
    /// Simulated latency of the side effect.
    pub effect_delay: Duration,
    /// Lifetime of an idempotency claim, in seconds.
    pub idempotency_ttl_secs: u64,
    /// How long a `processing` lease lasts (exercise 2), in milliseconds.
    pub lease_ms: u64,
    /// The provider, exercise 3's payment gateway (`http://host:port`).
    pub provider_url: String,
    /// Business pipeline name; part of the idempotency key.
    pub pipeline: String,
    /// Name of this consumer in the group; unique per process.
    pub consumer: String,
    /// How long a delivery may stay unacknowledged before another worker takes it over.
    pub claim_idle: Duration,
    /// Most entries read from the stream in one round trip.
    pub read_batch: usize,
    /// How long one read waits for new entries; also bounds how fast shutdown starts.
    pub read_block: Duration,
    /// Deliveries of one entry before it is moved to the dead-letter stream
    /// (`jobs:dead`) instead of being retried forever.
    pub max_deliveries: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            redis_url: "redis://127.0.0.1:6379".to_string(),
            concurrency: 8,
            effect_delay: Duration::from_millis(200),
            idempotency_ttl_secs: 86_400,
            lease_ms: 3_000,
            provider_url: "http://127.0.0.1:8090".to_string(),
            pipeline: "email".to_string(),
            consumer: default_consumer_name(),
            claim_idle: Duration::from_secs(10),
            read_batch: 256,
            read_block: Duration::from_millis(500),
            max_deliveries: 5,
        }
    }
}

/// The consumer name when none is given: `worker-<host>-<pid>`, unique per
/// process, also when two workers are started by hand on one host or in one
/// container. A compose replica restarted after a crash keeps both (its host
/// name, and pid 1: the worker is the container's command), so it takes back
/// its own pending work.
pub fn default_consumer_name() -> String {
    format!("worker-{}-{}", host_name(), std::process::id())
}

/// This machine's (or container's) host name, as names and instances use it.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && lab_schema::validate_id("host", h).is_ok())
        .unwrap_or_else(|| "local".to_string())
}
