//! The three reads of the queue: create the consumer group, read new entries,
//! take over abandoned ones. Plumbing: students need not edit this file.

use lab_schema::keys;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use crate::Config;

/// Creates the consumer group (from the start of the stream) unless it exists.
pub(crate) async fn ensure_group(redis: &mut ConnectionManager) -> redis::RedisResult<()> {
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

/// New entries for this consumer (XREADGROUP ... >), waiting up to `block`
/// (at least 1 ms: Redis reads BLOCK 0 as "for ever"), each with its delivery
/// count (1: this is its first delivery).
pub(crate) async fn read_new(
    redis: &mut ConnectionManager,
    config: &Config,
    count: usize,
    block: std::time::Duration,
) -> redis::RedisResult<Vec<(StreamId, u64)>> {
    let block = (block.as_millis() as u64).max(1);
    let entries = read_group(redis, config, ">", count, Some(block)).await?;
    Ok(entries.into_iter().map(|id| (id, 1)).collect())
}

/// XREADGROUP for this consumer from `id` (`>`: new entries; an id: its own
/// pending entries after it), blocking up to `block_ms` when given.
async fn read_group(
    redis: &mut ConnectionManager,
    config: &Config,
    id: &str,
    count: usize,
    block_ms: Option<u64>,
) -> redis::RedisResult<Vec<StreamId>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(keys::WORKER_GROUP)
        .arg(&config.consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    let reply: Option<StreamReadReply> = cmd
        .arg("STREAMS")
        .arg(keys::JOB_STREAM)
        .arg(id)
        .query_async(redis)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// This consumer's own pending entries after the id `from` (XREADGROUP ... <id>):
/// what it had taken and not acknowledged before it crashed and was restarted
/// under the same name. Each comes with its delivery count. Read at start, from
/// `0` and then after the last entry read, until none is left.
pub(crate) async fn own_pending(
    redis: &mut ConnectionManager,
    config: &Config,
    from: &str,
    count: usize,
) -> redis::RedisResult<Vec<(StreamId, u64)>> {
    let entries = read_group(redis, config, from, count, None).await?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    tracing::warn!(
        count = entries.len(),
        "running again what this worker left unacknowledged before it was restarted"
    );
    with_delivery_counts(redis, entries).await
}

/// Entries another consumer left unacknowledged for `claim_idle` (it died, or
/// the handler failed): XAUTOCLAIM hands them to this consumer, which
/// processes them again. Each comes with its delivery count (XPENDING), which
/// XAUTOCLAIM has just raised by one.
pub(crate) async fn claim_abandoned(
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
        "redelivering entries left unacknowledged (a worker died, the handler failed, or it asked to be retried later)"
    );
    with_delivery_counts(redis, reply.claimed).await
}

/// Each entry with its delivery count (XPENDING, one pipeline for all).
async fn with_delivery_counts(
    redis: &mut ConnectionManager,
    entries: Vec<StreamId>,
) -> redis::RedisResult<Vec<(StreamId, u64)>> {
    let mut pipe = redis::pipe();
    for entry in &entries {
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
    Ok(entries
        .into_iter()
        .zip(pending)
        .map(|(entry, rows)| {
            let deliveries = rows.first().map(|row| row.3).unwrap_or(1);
            (entry, deliveries)
        })
        .collect())
}
