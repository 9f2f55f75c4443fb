//! Batched acknowledgements: finished deliveries are acknowledged together, one
//! round trip per batch. Plumbing: students need not edit this file.

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::outcomes::{Finished, Scripts};

/// Most finished deliveries acknowledged in one round trip.
const ACK_BATCH: usize = 512;

/// Attempts of one batch before it is left pending (another worker will redeliver it).
const ACK_ATTEMPTS: u32 = 10;

/// Acknowledges finished deliveries in batches until every sender is gone.
pub(crate) async fn acknowledge_loop(
    mut redis: ConnectionManager,
    consumer: std::sync::Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Finished>,
) {
    let scripts = Scripts::new();
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        crate::outcomes::write_traces(&mut redis, &batch).await;
        let mut backoff = super::redis_backoff();
        loop {
            match scripts.acknowledge(&mut redis, &consumer, &batch).await {
                Ok(_) => break,
                Err(err) if backoff.failures() + 1 < ACK_ATTEMPTS => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.peek().as_millis() as u64, "acknowledging failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
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
