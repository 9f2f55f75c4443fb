//! One delivery at a time, for tests: [`Worker::step`] takes one delivery,
//! handles it and acknowledges it before it returns. Plumbing: students need
//! not edit this file.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Handled, Reader, Shared, connect, deliver, join_group, read};
use crate::{Config, Handler};

/// A worker that tests drive one delivery at a time: [`Worker::step`] takes
/// one delivery, runs the handler on it and acknowledges it (or retries it
/// later, or dead-letters it) before it returns, so a test can look at Redis
/// right after, with no sleeps. It goes through the same functions as [`run`];
/// it only does one delivery at a time, and acknowledges at once instead of in
/// batches. It renews no leases and keeps no heartbeat: a step is short.
pub struct Worker<H> {
    shared: Arc<Shared<H>>,
    reader: Reader,
    acks: mpsc::UnboundedReceiver<crate::outcomes::Finished>,
}

/// What one [`Worker::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No delivery was waiting (none pending for this consumer, none
    /// abandoned for `claim_idle`, no new entry within `read_block`).
    Idle,
    /// One delivery was taken and ended as `handled` says.
    Delivered {
        /// The stream entry's id.
        delivery_id: String,
        /// `None` when the entry could not be read as a job.
        job_id: Option<String>,
        /// Its delivery count (1: the first delivery).
        deliveries: u64,
        /// Where it came from.
        source: Source,
        handled: Handled,
    },
}

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This consumer had taken it in an earlier life and not acknowledged it.
    OwnPending,
    /// Another consumer left it unacknowledged for `claim_idle` (XAUTOCLAIM).
    Abandoned,
    /// A new entry of the stream.
    New,
}

impl<H: Handler> Worker<H> {
    /// Connects, creates the consumer group unless it exists, and registers
    /// this consumer.
    pub async fn connect(handler: H, config: Config) -> anyhow::Result<Worker<H>> {
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (shared, mut reader) = connect(handler, config, ack_tx)?;
        join_group(&shared, &mut reader).await?;
        Ok(Worker {
            shared,
            reader,
            acks,
        })
    }

    /// Takes one delivery (this consumer's old pending work first, then an
    /// abandoned entry, then a new one), handles it, and returns what became
    /// of it once everything about it is written.
    pub async fn step(&mut self) -> anyhow::Result<Step> {
        let config = &self.shared.config;
        let mut source = Source::OwnPending;
        let mut entries = self.reader.own_pending(config, 1).await?;
        if entries.is_empty() {
            source = Source::Abandoned;
            entries = self.reader.abandoned(config, 1).await?;
        }
        if entries.is_empty() {
            source = Source::New;
            entries = read::read_new(&mut self.reader.conn, config, 1, config.read_block).await?;
        }
        let Some((entry, deliveries)) = entries.into_iter().next() else {
            return Ok(Step::Idle);
        };
        let delivery_id = entry.id.clone();
        let (job_id, handled) = match deliver::prepare(&self.shared, entry, deliveries) {
            deliver::Prepared::Ready(ready) => {
                let job_id = Some(ready.job_id().to_string());
                (job_id, deliver::handle_one(&self.shared, ready).await)
            }
            deliver::Prepared::DeadLetter(doomed) => doomed.dead_letter(&self.shared).await,
            deliver::Prepared::AlreadyInFlight => {
                anyhow::bail!("{delivery_id} is already in flight in this process")
            }
        };
        // What the handler finished: acknowledged now, not in a batch later.
        let mut finished = Vec::new();
        while let Ok(done) = self.acks.try_recv() {
            finished.push(done);
        }
        if !finished.is_empty() {
            let mut redis = self.shared.redis.clone();
            crate::outcomes::write_traces(&mut redis, &finished).await;
            self.shared
                .scripts
                .acknowledge(&mut redis, &self.shared.consumer, &finished)
                .await?;
        }
        Ok(Step::Delivered {
            delivery_id,
            job_id,
            deliveries,
            source,
            handled,
        })
    }
}
