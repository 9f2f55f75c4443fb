//! The consumer loop: read deliveries, redeliver abandoned ones, run the
//! exercise's handler, acknowledge. Plumbing: students need not edit this folder.
//!
//! One loop reads entries from the stream (XREADGROUP, in batches of up to
//! the number of free slots) and, every `claim_idle / 2`, takes over entries
//! that another consumer left unacknowledged for `claim_idle` (XAUTOCLAIM).
//! Each entry runs the handler in its own task, at most `concurrency` at once
//! ([`deliver`]). Finished deliveries go to one acknowledging task ([`acks`]),
//! which acknowledges them in batches (one round trip per batch).
//!
//! | file | concept |
//! |---|---|
//! | `mod.rs` | the loop: when to read, when to reclaim, how to stop |
//! | `read.rs` | the three reads: create the group, new entries, abandoned entries |
//! | `deliver.rs` | one delivery, start to end: parse, dead-letter or run the handler |
//! | `leases.rs` | what is in flight here: lease renewal and the worker's heartbeat |
//! | `acks.rs` | batched acknowledgements |
//! | `retries.rs` | scheduled retries: the retry set `jobs:retry`, and moving due retries back |
//! | `step.rs` | [`Worker::step`]: one delivery at a time, for tests |
//!
//! Entries that can never succeed do not circulate forever: an entry that
//! cannot be parsed, or whose delivery count (XPENDING) passes
//! `max_deliveries`, is moved to the dead-letter stream `jobs:dead` with the
//! reason, acknowledged, and counted in its run (`deadLettered`).

mod acks;
mod deliver;
mod leases;
mod read;
mod retries;
mod step;

pub use deliver::Handled;
pub use step::{Source, Step, Worker};

use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_runtime::backoff::Backoff;
use tokio::sync::{Semaphore, mpsc, watch};

use redis::streams::StreamId;

use crate::outcomes::Scripts;
use crate::{Config, Handler};

/// Backoff between failed reads of the queue: doubles from 100 ms up to 5 s,
/// so a Redis restart costs at most a few seconds and a long outage one log
/// line per 5 s, not a flood.
pub(crate) fn redis_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// How soon a delivery that asked to be retried later comes back: a third of
/// the lease, so a waiting delivery notices soon after a lease ends (never later
/// than the claim idle time).
pub(crate) fn retry_after(config: &Config) -> Duration {
    retry_after_lease(config, config.lease_ms)
}

/// [`retry_after`] for a job whose lease is `lease_ms` (its payload's `leaseMs`).
pub(crate) fn retry_after_lease(config: &Config, lease_ms: u64) -> Duration {
    Duration::from_millis(lease_ms / 3)
        .max(Duration::from_millis(50))
        .min(config.claim_idle)
}

/// What every delivery task shares.
pub(crate) struct Shared<H> {
    pub(crate) config: Config,
    pub(crate) handler: H,
    pub(crate) consumer: Arc<str>,
    /// This process: `<pid>-<start unix ms>` (see `lab_schema::WorkerInstance`).
    pub(crate) instance: Arc<str>,
    pub(crate) redis: redis::aio::ConnectionManager,
    pub(crate) acks: mpsc::UnboundedSender<crate::outcomes::Finished>,
    pub(crate) scripts: Scripts,
    pub(crate) in_flight: Arc<leases::InFlightSet>,
    pub(crate) provider: crate::provider::ProviderClient,
    /// The exercise code this worker runs (`worker-code` field).
    pub(crate) code: String,
}

/// Builds what every delivery shares, and the connection the reads use
/// (blocking reads get their own connection, so they never hold up other
/// commands). `acks` receives the deliveries whose handler returned `Ok`.
fn connect<H: Handler>(
    handler: H,
    config: Config,
    acks: mpsc::UnboundedSender<crate::outcomes::Finished>,
) -> anyhow::Result<(Arc<Shared<H>>, Reader)> {
    let redis = lab_runtime::service::redis_connection(&config.redis_url, Duration::from_secs(5))?;
    let reader = lab_runtime::service::redis_connection(
        &config.redis_url,
        config.read_block + Duration::from_secs(5),
    )?;
    let consumer: Arc<str> = config.consumer.clone().into();
    // `<pid>-<start ms>@<host>`: unique, and it says where the process runs (a
    // new process of the same name reads it to tell a dead predecessor from a
    // live namesake, see `leases::live_namesake`).
    let instance: Arc<str> = format!(
        "{}-{}@{}",
        std::process::id(),
        lab_schema::now_ms(),
        crate::host_name()
    )
    .into();
    let code = handler.code();
    let provider = crate::provider::ProviderClient::new(&config.provider_url)?;
    let claim_every = claim_every(&config);
    let shared = Arc::new(Shared {
        config,
        handler,
        consumer,
        instance,
        redis,
        acks,
        scripts: Scripts::new(),
        in_flight: Arc::default(),
        provider,
        code: code.to_field(),
    });
    Ok((shared, Reader::new(reader, claim_every)))
}

/// How often the loop scans for abandoned entries. The scan also picks up
/// deliveries that asked to be retried later (a third of their lease, which a
/// job may set shorter than the workers'), so it runs at least every 250 ms:
/// one XAUTOCLAIM, cheap beside the deliveries.
fn claim_every(config: &Config) -> Duration {
    (config.claim_idle / 2)
        .min(Duration::from_millis(250))
        .min(retry_after(config))
        .max(Duration::from_millis(50))
}

/// Where deliveries come from, in this order: first what this consumer left
/// pending in an earlier life (it crashed and was restarted under the same
/// name), then, every `claim_every`, entries other consumers abandoned, and
/// otherwise new entries.
pub(crate) struct Reader {
    conn: redis::aio::ConnectionManager,
    /// Where the next read of this consumer's old pending work starts (`None`:
    /// all of it has been read).
    recovering: Option<String>,
    next_claim: Instant,
    claim_every: Duration,
    claim_cursor: String,
}

impl Reader {
    fn new(conn: redis::aio::ConnectionManager, claim_every: Duration) -> Reader {
        Reader {
            conn,
            recovering: Some("0".to_string()),
            next_claim: Instant::now(),
            claim_every,
            claim_cursor: "0-0".to_string(),
        }
    }

    /// Up to `want` of this consumer's old pending entries, after the last one
    /// taken (entries taken stay pending until acknowledged: reading from 0
    /// again would return them again). Empty once they are all taken.
    async fn own_pending(
        &mut self,
        config: &Config,
        want: usize,
    ) -> redis::RedisResult<Vec<(StreamId, u64)>> {
        let Some(from) = &self.recovering else {
            return Ok(Vec::new());
        };
        let entries = read::own_pending(&mut self.conn, config, from, want).await?;
        self.recovering = entries.last().map(|(entry, _)| entry.id.clone());
        Ok(entries)
    }

    /// Up to `want` entries other consumers left unacknowledged for `claim_idle`.
    /// A full batch may leave more behind (many deliveries asked to be retried
    /// at once): then the next read scans again, instead of leaving the rest
    /// for the next scan's turn.
    async fn abandoned(
        &mut self,
        config: &Config,
        want: usize,
    ) -> redis::RedisResult<Vec<(StreamId, u64)>> {
        let claimed =
            read::claim_abandoned(&mut self.conn, config, &mut self.claim_cursor, want).await?;
        self.next_claim = if claimed.len() >= want {
            Instant::now()
        } else {
            Instant::now() + self.claim_every
        };
        Ok(claimed)
    }

    /// What the loop reads next: old pending work while there is some, the
    /// abandoned entries when their scan is due, else new entries (waiting for
    /// them up to `read_block`, and no later than the next scan).
    async fn next(
        &mut self,
        config: &Config,
        want: usize,
    ) -> redis::RedisResult<Vec<(StreamId, u64)>> {
        if self.recovering.is_some() {
            self.own_pending(config, want).await
        } else if Instant::now() >= self.next_claim {
            self.abandoned(config, want).await
        } else {
            let until_scan = self.next_claim.saturating_duration_since(Instant::now());
            read::read_new(
                &mut self.conn,
                config,
                want,
                config.read_block.min(until_scan),
            )
            .await
        }
    }
}

/// Runs the worker until `shutdown` completes, then lets in-flight deliveries
/// finish, acknowledges them, and returns. `handler` runs each delivery
/// (the worker binary passes the registry of exercises).
///
/// Each delivery goes through the same steps as [`Worker::step`] (read,
/// [`deliver::prepare`], record its start, [`deliver::handle`], acknowledge),
/// many at once: reads in batches, handlers in tasks of their own, and
/// acknowledgements batched by one task.
pub async fn run<H: Handler>(
    handler: H,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, mut stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (shared, mut reader) = connect(handler, config.clone(), ack_tx)?;
    let consumer = shared.consumer.clone();
    tracing::info!(
        consumer = %consumer,
        instance = %shared.instance,
        code = %lab_schema::code::Code::parse(&shared.code)
            .files
            .iter()
            .map(|(f, h)| format!("{f} #{h}"))
            .collect::<Vec<_>>()
            .join(", "),
        concurrency = config.concurrency,
        effect_delay_ms = config.effect_delay.as_millis() as u64,
        claim_idle_ms = config.claim_idle.as_millis() as u64,
        max_deliveries = config.max_deliveries,
        "worker starting"
    );
    let acker = tokio::spawn(acks::acknowledge_loop(
        shared.redis.clone(),
        consumer.clone(),
        ack_rx,
    ));
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut ready = false;
    let mut leases = None;
    let mut mover = None;
    let mut backoff = redis_backoff();
    // Two live processes with one consumer name would take each other's work.
    if let Some(namesake) = leases::live_namesake(&shared).await {
        anyhow::bail!(
            "another worker named {consumer} is running ({namesake}): give this one another name (WORKER_NAME, --name), or stop the other"
        );
    }

    while !*stopping.borrow() {
        if !ready {
            // The group, and this process in the worker registry, before the first read.
            match join_group(&shared, &mut reader).await {
                Ok(()) => ready = true,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "redis unavailable; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if leases.is_none() {
                leases = Some(tokio::spawn(leases::keep_leases(shared.clone())));
                mover = Some(tokio::spawn(retries::keep_moving(shared.clone())));
            }
        }
        // Wait for a free slot (or the signal), then read as many entries as there are free slots.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            _ = stopping.changed() => break,
        };
        let want = (1 + slots.available_permits()).min(config.read_batch);
        let entries = match reader.next(&config, want).await {
            Ok(entries) => {
                let failures = backoff.reset();
                if failures > 0 {
                    tracing::info!(failures, "redis reachable again: reading the queue");
                }
                entries
            }
            Err(err) => {
                drop(first);
                if err.code() == Some("NOGROUP") {
                    ready = false; // Redis lost its data: create the group again.
                }
                tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "reading the queue failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let mut first = Some(first);
        let mut ready = Vec::with_capacity(entries.len());
        for (entry, deliveries) in entries {
            let permit = match first.take() {
                Some(permit) => permit,
                None => slots.clone().acquire_owned().await?,
            };
            match deliver::prepare(&shared, entry, deliveries) {
                deliver::Prepared::Ready(delivery) => ready.push((delivery, permit)),
                deliver::Prepared::DeadLetter(doomed) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        doomed.dead_letter(&shared).await;
                        drop(permit);
                    });
                }
                deliver::Prepared::AlreadyInFlight => drop(permit),
            }
        }
        deliver::start(&shared, ready).await;
    }

    // Shutdown: wait until every in-flight delivery has finished, then flush the acks.
    tracing::info!("stopping: waiting for in-flight deliveries");
    let _all = slots.acquire_many(config.concurrency as u32).await?;
    if let Some(mover) = mover {
        mover.abort();
        let _ = mover.await;
    }
    if let Some(leases) = leases {
        leases.abort();
        let _ = leases.await; // drops its handle on the acknowledgement channel
    }
    leases::deregister(&shared).await;
    drop(shared);
    acker.await?;
    tracing::info!(consumer = %consumer, "worker stopped");
    Ok(())
}

/// Creates the consumer group (unless it exists) and writes this process into
/// the worker registry.
async fn join_group<H>(shared: &Shared<H>, reader: &mut Reader) -> redis::RedisResult<()> {
    read::ensure_group(&mut reader.conn).await?;
    leases::register(shared).await
}
