//! `GET /metrics`: the lab in the Prometheus text format, read from Redis at
//! scrape time. Students need not edit this file.
//!
//! Counters live in one Redis hash (`lab_schema::metrics::COUNTERS`), bumped by
//! the API and the workers in writes they make anyway; gauges (queue length,
//! pending deliveries, consumers, oldest pending age, dead letters) are read
//! from the stream when Prometheus asks. Nothing is kept in this process, so a
//! restarted API or a crashed worker loses no count.
//!
//! Why no crate: every value comes from Redis at scrape time, so a registry of
//! metric objects (the `prometheus` or `prometheus-client` crates) would only
//! be filled and emptied on each scrape. The format itself is a few lines of
//! text (`# HELP`, `# TYPE`, one line per series); `promtool check metrics`
//! checks this output in the tests.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use lab_schema::{keys, metrics, now_ms};
use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
use serde::Serialize;

use crate::{AppState, REDIS_TIMEOUT, error::ApiError};

/// The queue as it is now: what the gauges (and the dashboard's queue view) show.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Entries in `jobs:stream` (acknowledged entries are deleted: waiting or pending).
    pub stream_length: u64,
    /// Entries delivered to a worker and not acknowledged yet.
    pub pending: u64,
    /// Pending entries per consumer (worker name), by name.
    pub pending_by_worker: BTreeMap<String, u64>,
    /// Consumers known to the group (a crashed worker stays until removed).
    pub consumers: u64,
    /// Age of the oldest pending entry since it was enqueued, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
    /// Entries in the dead-letter stream `jobs:dead` (capped).
    pub dead_letters: u64,
    /// Retries scheduled in `jobs:retry` (exercise 5), and when the next is due
    /// from now, in milliseconds (0: due already; `None`: none scheduled).
    pub retry_set: u64,
    pub next_retry_in_ms: Option<u64>,
}

/// Reads [`QueueStats`]: two round trips, three when the group exists.
pub async fn queue_stats(redis: &mut ConnectionManager) -> redis::RedisResult<QueueStats> {
    #[allow(clippy::type_complexity)]
    let (stream_length, dead_letters, exists, retry_set, next_due): (
        u64,
        u64,
        bool,
        u64,
        Vec<(String, f64)>,
    ) = redis::pipe()
        .xlen(keys::JOB_STREAM)
        .xlen(keys::DEAD_LETTER_STREAM)
        .exists(keys::JOB_STREAM)
        .zcard(keys::RETRY_SET)
        .zrange_withscores(keys::RETRY_SET, 0, 0)
        .query_async(redis)
        .await?;
    // XINFO GROUPS on a stream that does not exist is an error, not an empty list.
    let groups: Option<StreamInfoGroupsReply> = if exists {
        Some(
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(keys::JOB_STREAM)
                .query_async(redis)
                .await?,
        )
    } else {
        None
    };
    let mut stats = QueueStats {
        stream_length,
        dead_letters,
        retry_set,
        next_retry_in_ms: next_due
            .first()
            .map(|(_, due)| (*due as u64).saturating_sub(now_ms())),
        ..QueueStats::default()
    };
    let Some(group) = groups
        .into_iter()
        .flat_map(|g| g.groups)
        .find(|g| g.name == keys::WORKER_GROUP)
    else {
        return Ok(stats);
    };
    stats.consumers = group.consumers as u64;
    let pending: StreamPendingReply = redis::cmd("XPENDING")
        .arg(keys::JOB_STREAM)
        .arg(keys::WORKER_GROUP)
        .query_async(redis)
        .await?;
    if let StreamPendingReply::Data(data) = pending {
        stats.pending = data.count as u64;
        stats.pending_by_worker = data
            .consumers
            .into_iter()
            .map(|c| (c.name, c.pending as u64))
            .collect();
        // An entry id starts with the unix ms at which it was added.
        stats.oldest_pending_age_ms = data
            .start_id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|added| now_ms().saturating_sub(added));
    }
    Ok(stats)
}

/// `GET /metrics`.
pub async fn get_metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut redis = state.redis.clone();
    let (counters, queue) = tokio::time::timeout(REDIS_TIMEOUT, async {
        let counters: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(metrics::COUNTERS)
            .query_async(&mut redis)
            .await?;
        let queue = queue_stats(&mut redis).await?;
        redis::RedisResult::Ok((counters, queue))
    })
    .await??;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&counters, &queue),
    ))
}

/// The text format: each counter with its HELP and TYPE (also when it has no
/// series yet), the derived redeliveries, then the gauges.
pub fn render(counters: &[(String, u64)], queue: &QueueStats) -> String {
    let mut by_name: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (series, value) in counters {
        by_name
            .entry(metrics::name_of(series))
            .or_default()
            .push((series, *value));
    }
    let mut out = String::new();
    let sum = |name: &str| -> u64 {
        by_name
            .get(name)
            .map(|s| s.iter().map(|(_, v)| v).sum())
            .unwrap_or(0)
    };
    for (name, help) in metrics::COUNTER_HELP {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let mut series = by_name.get(name).cloned().unwrap_or_default();
        series.sort();
        for (series, value) in series {
            let _ = writeln!(out, "{series} {value}");
        }
    }
    // Every delivery of an entry after its first. Each entry acknowledged,
    // dead-lettered or pending had one first delivery; the rest were redeliveries.
    // A retry scheduled (exercise 5) ended its entry too: the retry is a new entry.
    let firsts = sum(metrics::ACKNOWLEDGED)
        + sum(metrics::DEAD_LETTERS)
        + sum(metrics::RETRIES_SCHEDULED)
        + queue.pending;
    let redeliveries = sum(metrics::DELIVERIES).saturating_sub(firsts);
    gauge_or_counter(
        &mut out,
        "lab_redeliveries_total",
        "counter",
        "Deliveries of a queue entry after its first (derived: deliveries minus entries acknowledged, dead-lettered or pending).",
        redeliveries as f64,
    );
    let gauges: [(&str, &str, f64); 7] = [
        (
            "lab_queue_stream_length",
            "Entries in jobs:stream (waiting or pending; acknowledged entries are deleted).",
            queue.stream_length as f64,
        ),
        (
            "lab_queue_pending_deliveries",
            "Entries delivered to a worker and not acknowledged yet.",
            queue.pending as f64,
        ),
        (
            "lab_queue_consumers",
            "Consumers of the workers group.",
            queue.consumers as f64,
        ),
        (
            "lab_queue_oldest_pending_age_seconds",
            "Age of the oldest pending entry since it was enqueued (0 when none is pending).",
            queue.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0,
        ),
        (
            "lab_dead_letter_stream_length",
            "Entries in the dead-letter stream jobs:dead (capped at 10000).",
            queue.dead_letters as f64,
        ),
        (
            "lab_retry_set_size",
            "Retries scheduled in jobs:retry, waiting for their due time (exercise 5).",
            queue.retry_set as f64,
        ),
        (
            "lab_retry_next_due_seconds",
            "Seconds until the next scheduled retry is due (0 when due, or none scheduled).",
            queue.next_retry_in_ms.unwrap_or(0) as f64 / 1000.0,
        ),
    ];
    for (name, help, value) in gauges {
        gauge_or_counter(&mut out, name, "gauge", help, value);
    }
    let name = "lab_queue_pending_deliveries_by_worker";
    let _ = writeln!(
        out,
        "# HELP {name} Entries pending on each consumer.\n# TYPE {name} gauge"
    );
    for (worker, pending) in &queue.pending_by_worker {
        let series = metrics::series(name, &[("worker", worker)]);
        let _ = writeln!(out, "{series} {pending}");
    }
    out
}

fn gauge_or_counter(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeliveries_are_the_deliveries_beyond_each_entry_first() {
        let counters = vec![
            (
                r#"lab_deliveries_total{exercise="1",worker="worker-1"}"#.to_string(),
                7,
            ),
            (
                r#"lab_deliveries_total{exercise="1",worker="worker-2"}"#.to_string(),
                5,
            ),
            ("lab_deliveries_acknowledged_total".to_string(), 9),
        ];
        let queue = QueueStats {
            pending: 1,
            ..QueueStats::default()
        };
        let text = render(&counters, &queue);
        assert!(text.contains("\nlab_redeliveries_total 2\n"), "{text}");
        assert!(text.contains("# TYPE lab_side_effects_total counter\n"));
    }

    // Exercise 5: a retry scheduled ended its entry (the retry is a new one),
    // and the retry set shows as two gauges.
    #[test]
    fn scheduled_retries_are_not_redeliveries_and_the_retry_set_is_shown() {
        let counters = vec![
            (
                r#"lab_deliveries_total{exercise="5",worker="worker-1"}"#.to_string(),
                5,
            ),
            (
                r#"lab_retries_scheduled_total{exercise="5",worker="worker-1"}"#.to_string(),
                3,
            ),
            ("lab_deliveries_acknowledged_total".to_string(), 1),
            (
                r#"lab_dead_letters_total{exercise="5",reason="handler"}"#.to_string(),
                1,
            ),
        ];
        let queue = QueueStats {
            retry_set: 2,
            next_retry_in_ms: Some(1500),
            ..QueueStats::default()
        };
        let text = render(&counters, &queue);
        assert!(text.contains("\nlab_redeliveries_total 0\n"), "{text}");
        assert!(text.contains("\nlab_retry_set_size 2\n"), "{text}");
        assert!(
            text.contains("\nlab_retry_next_due_seconds 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("lab_dead_letters_total{exercise=\"5\",reason=\"handler\"} 1"),
            "{text}"
        );
    }
}
