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
//!
//! Entries that can never succeed do not circulate forever: an entry that
//! cannot be parsed, or whose delivery count (XPENDING) passes
//! `max_deliveries`, is moved to the dead-letter stream `jobs:dead` with the
//! reason, acknowledged, and counted in its run (`deadLettered`).

mod acks;
mod deliver;
mod leases;
mod read;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_schema::backoff::Backoff;
use tokio::sync::{Semaphore, mpsc, watch};

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
    Duration::from_millis(config.lease_ms / 3)
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

/// Runs the worker until `shutdown` completes, then lets in-flight deliveries
/// finish, acknowledges them, and returns. `handler` runs each delivery
/// (the worker binary passes the registry of exercises).
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

    let redis = lab_schema::service::redis_connection(&config.redis_url, Duration::from_secs(5))?;
    // Blocking reads get their own connection, so they never hold up other commands.
    let mut reader = lab_schema::service::redis_connection(
        &config.redis_url,
        config.read_block + Duration::from_secs(5),
    )?;
    let consumer: Arc<str> = config.consumer.clone().into();
    let instance: Arc<str> = format!("{}-{}", std::process::id(), lab_schema::now_ms()).into();
    let code = handler.code();
    tracing::info!(
        consumer = %consumer,
        instance = %instance,
        code = %code.files.iter().map(|(f, h)| format!("{f} #{h}")).collect::<Vec<_>>().join(", "),
        concurrency = config.concurrency,
        effect_delay_ms = config.effect_delay.as_millis() as u64,
        claim_idle_ms = config.claim_idle.as_millis() as u64,
        max_deliveries = config.max_deliveries,
        "worker starting"
    );

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let acker = tokio::spawn(acks::acknowledge_loop(
        redis.clone(),
        consumer.clone(),
        ack_rx,
    ));
    let shared = Arc::new(Shared {
        config: config.clone(),
        handler,
        consumer: consumer.clone(),
        instance,
        redis,
        acks: ack_tx,
        scripts: Scripts::new(),
        in_flight: Arc::default(),
        provider: crate::provider::ProviderClient::new(&config.provider_url)?,
        code: code.to_field(),
    });
    let slots = Arc::new(Semaphore::new(config.concurrency));
    // The scan for abandoned entries also picks up deliveries that asked to be
    // retried later, so it runs at least every second.
    let claim_every = (config.claim_idle / 2)
        .min(Duration::from_secs(1))
        .min(retry_after(&config))
        .max(Duration::from_millis(50));
    // First what this consumer left pending in an earlier life (it crashed and was
    // restarted under the same name): finish that old work, then read new entries.
    // `recovering` is where the next read of that old work starts.
    let mut recovering = Some("0".to_string());
    let mut next_claim = Instant::now();
    let mut claim_cursor = "0-0".to_string();
    let mut ready = false;
    let mut leases = None;
    let mut backoff = redis_backoff();

    while !*stopping.borrow() {
        if !ready {
            // The group, and this process in the worker registry, before the first read.
            match read::ensure_group(&mut reader).await {
                Ok(()) => match leases::register(&shared).await {
                    Ok(()) => ready = true,
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "redis unavailable; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "redis unavailable; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if leases.is_none() {
                leases = Some(tokio::spawn(leases::keep_leases(shared.clone())));
            }
        }
        // Wait for a free slot (or the signal), then read as many entries as there are free slots.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            _ = stopping.changed() => break,
        };
        let want = (1 + slots.available_permits()).min(config.read_batch);
        let read = if let Some(from) = &recovering {
            // As many as there are free slots, after the last one taken (entries
            // taken stay pending until acknowledged: reading from 0 again would
            // return them again).
            let read = read::own_pending(&mut reader, &config, from, want).await;
            if let Ok(entries) = &read {
                recovering = entries.last().map(|(entry, _)| entry.id.clone());
            }
            read
        } else if Instant::now() >= next_claim {
            next_claim = Instant::now() + claim_every;
            read::claim_abandoned(&mut reader, &config, &mut claim_cursor, want).await
        } else {
            read::read_new(&mut reader, &config, want).await
        };
        let entries = match read {
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
                deliver::Prepared::DeadLetter {
                    entry,
                    job,
                    reason,
                    deliveries,
                } => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        deliver::dead_letter(&shared, &entry, job.as_ref(), &reason, deliveries)
                            .await;
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
