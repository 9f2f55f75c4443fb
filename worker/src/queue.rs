//! The consumer loop: read deliveries, redeliver abandoned ones, run
//! `process_job`, acknowledge. Plumbing: students need not edit this file.
//!
//! One loop reads entries from the stream (XREADGROUP, in batches of up to
//! the number of free slots) and, every `claim_idle / 2`, takes over entries
//! that another consumer left unacknowledged for `claim_idle` (XAUTOCLAIM).
//! Each entry runs `process_job` in its own task, at most `concurrency` at
//! once. Finished deliveries go to one acknowledging task, which acknowledges
//! them in batches with a Lua script (one round trip per batch).
//!
//! Entries that can never succeed do not circulate forever: an entry that
//! cannot be parsed, or whose delivery count (XPENDING) passes
//! `max_deliveries`, is moved to the dead-letter stream `jobs:dead` with the
//! reason, acknowledged, and counted in its run (`deadLettered`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_schema::{
    DEAD_LETTER_MAXLEN, RECORD_TTL_SECS, entry, job_field, keys, run_field, status, validate_id,
};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::context::{Job, JobContext};
use crate::{Config, job};

/// Acknowledges entries and counts each entry of a run once, even when a
/// redelivered copy is acknowledged too (XACK then answers 0). Refreshes the
/// records' expiry (`RECORD_TTL_SECS`).
/// KEYS: stream, then (job key, run key, ledger key) per entry. ARGV: group, then the entry ids.
const ACK_SCRIPT: &str = r"
local acked = 0
for i = 2, #ARGV do
  local job_key = KEYS[3 * (i - 2) + 2]
  local run_key = KEYS[3 * (i - 2) + 3]
  local ledger_key = KEYS[3 * (i - 2) + 4]
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    acked = acked + 1
    redis.call('HINCRBY', job_key, ARGV_DONE, 1)
    redis.call('HINCRBY', run_key, ARGV_PROCESSED, 1)
  end
  -- Also when XACK answered 0 (another copy was acknowledged first): this
  -- delivery may have set the status back to processing after that ack.
  local done = tonumber(redis.call('HGET', job_key, ARGV_DONE) or '0')
  local dead = tonumber(redis.call('HGET', job_key, ARGV_DEAD) or '0')
  local submitted = tonumber(redis.call('HGET', job_key, ARGV_SUBMISSIONS) or '0')
  if done + dead >= submitted then
    redis.call('HSET', job_key, ARGV_STATUS, ARGV_COMPLETED)
  end
  redis.call('EXPIRE', job_key, ARGV_TTL)
  redis.call('EXPIRE', run_key, ARGV_TTL)
  redis.call('EXPIRE', ledger_key, ARGV_TTL)
end
return acked
";

/// Moves one entry to the dead-letter stream, once: only the caller whose XACK
/// succeeds writes it (another worker may have claimed the same entry).
/// KEYS: stream, dead-letter stream, and (job key, run key, ledger key) when the
/// entry belongs to a run that counts it. ARGV: group, entry id, then field/value pairs.
const DEAD_LETTER_SCRIPT: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV_MAXLEN, '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[2])
if #KEYS == 5 then
  redis.call('HINCRBY', KEYS[3], ARGV_DEAD, 1)
  redis.call('HSET', KEYS[3], ARGV_STATUS, ARGV_DEAD_STATUS)
  redis.call('HINCRBY', KEYS[4], ARGV_DEAD, 1)
  for k = 3, 5 do
    redis.call('EXPIRE', KEYS[k], ARGV_TTL)
  end
end
return 1
";

/// Most finished deliveries acknowledged in one round trip.
const ACK_BATCH: usize = 512;

/// Backoff between failed Redis calls: doubles from 100 ms up to 5 s, so a
/// Redis restart costs at most a few seconds and a long outage one log line
/// per 5 s, not a flood.
struct Backoff {
    delay: Duration,
    failures: u32,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Backoff {
        Backoff {
            delay: Self::MIN,
            failures: 0,
        }
    }

    /// The delay the next [`wait`](Backoff::wait) sleeps, in milliseconds (for log lines).
    fn next_ms(&self) -> u64 {
        self.delay.as_millis() as u64
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.failures += 1;
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// After a success; returns how many failures came before it.
    fn reset(&mut self) -> u32 {
        self.delay = Self::MIN;
        std::mem::take(&mut self.failures)
    }
}

/// A delivery that `process_job` finished, waiting to be acknowledged.
struct Finished {
    delivery_id: String,
    job_id: String,
    run_id: String,
}

/// What every delivery task shares.
struct Shared {
    config: Config,
    consumer: Arc<str>,
    redis: ConnectionManager,
    acks: mpsc::UnboundedSender<Finished>,
    dead_letter: redis::Script,
    /// Entry ids this process is working on right now (see [`keep_leases`]).
    in_flight: Mutex<HashSet<String>>,
}

/// Marks one entry as in flight for as long as it lives.
struct InFlight<'a> {
    shared: &'a Shared,
    id: String,
}

impl<'a> InFlight<'a> {
    /// `None` when this process is already working on the entry.
    fn start(shared: &'a Shared, id: &str) -> Option<InFlight<'a>> {
        let fresh = shared.in_flight.lock().unwrap().insert(id.to_string());
        fresh.then(|| InFlight {
            shared,
            id: id.to_string(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.lock().unwrap().remove(&self.id);
    }
}

/// While a delivery runs, its entry's idle time in the group keeps growing, and
/// XAUTOCLAIM (here or in another worker) would take a slow but healthy delivery
/// for an abandoned one once it passes `claim_idle`. So every `claim_idle / 3`
/// this re-claims the entries in flight for this consumer with
/// `XCLAIM ... 0 <ids> JUSTID`, which resets their idle time without counting a
/// delivery. A worker that dies stops doing this, and its entries are redelivered.
/// It runs until the worker has finished its last delivery, shutdown included.
async fn keep_leases(shared: Arc<Shared>) {
    let every = (shared.config.claim_idle / 3).max(Duration::from_millis(30));
    let mut redis = shared.redis.clone();
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<String> = shared.in_flight.lock().unwrap().iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let renewed: redis::RedisResult<Vec<String>> = redis::cmd("XCLAIM")
            .arg(keys::JOB_STREAM)
            .arg(keys::WORKER_GROUP)
            .arg(&*shared.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut redis)
            .await;
        if let Err(err) = renewed {
            tracing::debug!(error = %err, "could not renew the leases of in-flight deliveries");
        }
    }
}

/// Runs the worker until `shutdown` completes, then lets in-flight deliveries
/// finish, acknowledges them, and returns.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        flag.store(true, Ordering::SeqCst);
    });

    let redis = lab_schema::service::redis_connection(&config.redis_url, Duration::from_secs(5))?;
    // Blocking reads get their own connection, so they never hold up other commands.
    let mut reader = lab_schema::service::redis_connection(
        &config.redis_url,
        config.read_block + Duration::from_secs(5),
    )?;
    let consumer: Arc<str> = config.consumer.clone().into();
    tracing::info!(
        consumer = %consumer,
        concurrency = config.concurrency,
        effect_delay_ms = config.effect_delay.as_millis() as u64,
        claim_idle_ms = config.claim_idle.as_millis() as u64,
        max_deliveries = config.max_deliveries,
        "worker starting"
    );

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let acker = tokio::spawn(acknowledge_loop(redis.clone(), ack_rx));
    let shared = Arc::new(Shared {
        config: config.clone(),
        consumer: consumer.clone(),
        redis,
        acks: ack_tx,
        dead_letter: redis::Script::new(&lua(DEAD_LETTER_SCRIPT)),
        in_flight: Mutex::new(HashSet::new()),
    });
    let leases = tokio::spawn(keep_leases(shared.clone()));
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let claim_every = (config.claim_idle / 2).max(Duration::from_millis(50));
    let mut next_claim = Instant::now();
    let mut claim_cursor = "0-0".to_string();
    let mut group_ready = false;
    let mut backoff = Backoff::new();

    while !stopping.load(Ordering::SeqCst) {
        if !group_ready {
            match ensure_group(&mut reader).await {
                Ok(()) => group_ready = true,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.next_ms(), "redis unavailable; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        // Wait for a free slot, then read as many entries as there are free slots.
        let first = slots.clone().acquire_owned().await?;
        if stopping.load(Ordering::SeqCst) {
            break; // The signal came while every slot was busy: read nothing more.
        }
        let want = (1 + slots.available_permits()).min(config.read_batch);
        let read = if Instant::now() >= next_claim {
            next_claim = Instant::now() + claim_every;
            claim_abandoned(&mut reader, &config, &mut claim_cursor, want).await
        } else {
            read_new(&mut reader, &config, want).await
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
                    group_ready = false; // Redis lost its data: create the group again.
                }
                tracing::warn!(error = %err, retry_in_ms = backoff.next_ms(), "reading the queue failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let mut first = Some(first);
        for (entry, deliveries) in entries {
            let permit = match first.take() {
                Some(permit) => permit,
                None => slots.clone().acquire_owned().await?,
            };
            tokio::spawn(handle_delivery(shared.clone(), entry, deliveries, permit));
        }
    }

    // Shutdown: wait until every in-flight delivery has finished, then flush the acks.
    tracing::info!("stopping: waiting for in-flight deliveries");
    let _all = slots.acquire_many(config.concurrency as u32).await?;
    leases.abort();
    let _ = leases.await; // drops its handle on the acknowledgement channel
    drop(shared);
    acker.await?;
    tracing::info!(consumer = %consumer, "worker stopped");
    Ok(())
}

/// Creates the consumer group (from the start of the stream) unless it exists.
async fn ensure_group(redis: &mut ConnectionManager) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(redis)
        .await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// New entries for this consumer (XREADGROUP ... >), waiting up to `read_block`,
/// each with its delivery count (1: this is its first delivery).
async fn read_new(
    redis: &mut ConnectionManager,
    config: &Config,
    count: usize,
) -> redis::RedisResult<Vec<(StreamId, u64)>> {
    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::WORKER_GROUP)
        .arg(&config.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(config.read_block.as_millis() as u64)
        .arg("STREAMS")
        .arg(keys::JOB_STREAM)
        .arg(">")
        .query_async(redis)
        .await?;
    Ok(reply
        .map(|r| {
            r.keys
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|id| (id, 1))
                .collect()
        })
        .unwrap_or_default())
}

/// Entries another consumer left unacknowledged for `claim_idle` (it died, or
/// `process_job` failed): XAUTOCLAIM hands them to this consumer, which
/// processes them again. Each comes with its delivery count (XPENDING), which
/// XAUTOCLAIM has just raised by one.
async fn claim_abandoned(
    redis: &mut ConnectionManager,
    config: &Config,
    cursor: &mut String,
    count: usize,
) -> redis::RedisResult<Vec<(StreamId, u64)>> {
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg(&config.consumer)
        .arg(config.claim_idle.as_millis() as u64)
        .arg(cursor.as_str())
        .arg("COUNT")
        .arg(count)
        .query_async(redis)
        .await?;
    *cursor = reply.next_stream_id;
    if reply.claimed.is_empty() {
        return Ok(Vec::new());
    }
    tracing::warn!(
        count = reply.claimed.len(),
        "redelivering entries left unacknowledged (a worker died or process_job failed)"
    );
    let mut pipe = redis::pipe();
    for entry in &reply.claimed {
        pipe.cmd("XPENDING")
            .arg(keys::JOB_STREAM)
            .arg(keys::WORKER_GROUP)
            .arg(&entry.id)
            .arg(&entry.id)
            .arg(1);
    }
    // One row per entry: (id, consumer, idle ms, delivery count); none if it was
    // acknowledged in the meantime (then it counts as a first delivery, harmless).
    let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(redis).await?;
    Ok(reply
        .claimed
        .into_iter()
        .zip(pending)
        .map(|(entry, rows)| {
            let deliveries = rows.first().map(|row| row.3).unwrap_or(1);
            (entry, deliveries)
        })
        .collect())
}

/// One delivery: parse, run `process_job`, queue the ack on success. An entry
/// delivered more than `max_deliveries` times is dead-lettered instead.
async fn handle_delivery(
    shared: Arc<Shared>,
    entry: StreamId,
    deliveries: u64,
    _slot: OwnedSemaphorePermit,
) {
    // An entry this process is still working on (claimed again after a Redis
    // hiccup delayed its lease renewal) is not run a second time here.
    let Some(_in_flight) = InFlight::start(&shared, &entry.id) else {
        return;
    };
    let job = match parse_entry(&entry) {
        Ok(job) => job,
        Err(reason) => return dead_letter(&shared, &entry, None, &reason, deliveries).await,
    };
    let max = shared.config.max_deliveries;
    if deliveries > max {
        let reason = format!(
            "process_job failed on each of its {max} deliveries (--max-deliveries {max}); \
             see the worker log for the errors"
        );
        return dead_letter(&shared, &entry, Some(&job), &reason, deliveries).await;
    }
    tracing::info!(job_id = %job.job_id, delivery_id = %job.delivery_id, run_id = %job.run_id, "delivery received");
    let mut ctx = JobContext::new(
        shared.redis.clone(),
        shared.config.pipeline.clone(),
        shared.config.idempotency_ttl_secs,
        shared.config.effect_delay,
        shared.consumer.clone(),
    );
    match job::process_job(&mut ctx, &job).await {
        Ok(()) => {
            let _ = shared.acks.send(Finished {
                delivery_id: job.delivery_id,
                job_id: job.job_id,
                run_id: job.run_id,
            });
        }
        Err(err) => tracing::warn!(
            job_id = %job.job_id,
            delivery_id = %job.delivery_id,
            delivery = deliveries,
            max_deliveries = max,
            error = format!("{err:#}"),
            "process_job failed: not acknowledged, so it will be redelivered"
        ),
    }
}

/// Reads a queue entry into a [`Job`]; an error says why the entry is unusable.
fn parse_entry(entry: &StreamId) -> Result<Job, String> {
    let field = |name: &str| -> Result<String, String> {
        entry
            .get::<String>(name)
            .ok_or_else(|| format!("field {name} is missing or not text"))
    };
    let job_id = field(entry::JOB_ID)?;
    validate_id("jobId", &job_id)?;
    let run_id = field(entry::RUN_ID)?;
    validate_id("runId", &run_id)?;
    Ok(Job {
        job_id,
        run_id,
        delivery_id: entry.id.clone(),
        payload: entry.get::<String>(entry::PAYLOAD).unwrap_or_default(),
    })
}

/// Moves an entry to the dead-letter stream `jobs:dead` with the reason (and
/// every field of the entry, as `entry.<name>`) and acknowledges it, so it never
/// blocks the queue. `job`: the parsed job, whose run then counts the entry as
/// dead-lettered; `None` for an entry that could not be parsed (no API
/// submission counted it, so no run counts it either).
async fn dead_letter(
    shared: &Shared,
    entry: &StreamId,
    job: Option<&Job>,
    reason: &str,
    deliveries: u64,
) {
    let mut invocation = shared.dead_letter.prepare_invoke();
    invocation
        .key(keys::JOB_STREAM)
        .key(keys::DEAD_LETTER_STREAM)
        .arg(keys::WORKER_GROUP)
        .arg(&entry.id)
        .arg("deliveryId")
        .arg(&entry.id)
        .arg("reason")
        .arg(reason)
        .arg("deliveries")
        .arg(deliveries)
        .arg("consumer")
        .arg(&*shared.consumer);
    if let Some(job) = job {
        invocation
            .key(keys::job(&job.job_id))
            .key(keys::run(&job.run_id))
            .key(keys::ledger(&job.run_id));
    }
    for (name, value) in &entry.map {
        if let redis::Value::BulkString(bytes) = value {
            invocation
                .arg(format!("entry.{name}"))
                .arg(bytes.as_slice());
        }
    }
    let mut redis = shared.redis.clone();
    match invocation.invoke_async::<u64>(&mut redis).await {
        Ok(1) => tracing::warn!(
            delivery_id = %entry.id,
            job_id = job.map(|j| j.job_id.as_str()),
            reason,
            "queue entry moved to {}",
            keys::DEAD_LETTER_STREAM
        ),
        Ok(_) => {} // Another worker acknowledged or moved it first.
        Err(err) => {
            tracing::warn!(delivery_id = %entry.id, error = %err, "could not dead-letter; it will be redelivered")
        }
    }
}

/// Acknowledges finished deliveries in batches until every sender is gone.
async fn acknowledge_loop(mut redis: ConnectionManager, mut rx: mpsc::UnboundedReceiver<Finished>) {
    let script = redis::Script::new(&lua(ACK_SCRIPT));
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let mut invocation = script.prepare_invoke();
        invocation.key(keys::JOB_STREAM).arg(keys::WORKER_GROUP);
        for done in &batch {
            invocation
                .key(keys::job(&done.job_id))
                .key(keys::run(&done.run_id))
                .key(keys::ledger(&done.run_id))
                .arg(&done.delivery_id);
        }
        let mut backoff = Backoff::new();
        for attempt in 1.. {
            match invocation.invoke_async::<u64>(&mut redis).await {
                Ok(_) => break,
                Err(err) if attempt < 10 => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.next_ms(), "acknowledging failed; retrying");
                    backoff.wait().await;
                }
                Err(err) => {
                    // Left pending: another worker will redeliver these entries.
                    tracing::error!(error = %err, count = batch.len(), "giving up acknowledging; the entries will be redelivered");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// A script with the schema's field names and limits filled in.
fn lua(script: &str) -> String {
    script
        .replace("ARGV_DONE", &lua_str(job_field::DELIVERIES_DONE))
        .replace("ARGV_SUBMISSIONS", &lua_str(job_field::SUBMISSIONS))
        .replace("ARGV_STATUS", &lua_str(job_field::STATUS))
        .replace("ARGV_COMPLETED", &lua_str(status::COMPLETED))
        .replace("ARGV_PROCESSED", &lua_str(run_field::PROCESSED))
        .replace("ARGV_DEAD_STATUS", &lua_str(status::DEAD_LETTERED))
        .replace("ARGV_DEAD", &lua_str(run_field::DEAD_LETTERED))
        .replace("ARGV_TTL", &RECORD_TTL_SECS.to_string())
        .replace("ARGV_MAXLEN", &DEAD_LETTER_MAXLEN.to_string())
}

/// `'text'` as a Lua string literal (our field names need no escaping).
fn lua_str(text: &str) -> String {
    format!("'{text}'")
}
