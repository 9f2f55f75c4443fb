//! What this process has in flight: the lease of each delivery it works on, and
//! the worker's own heartbeat. Plumbing: students need not edit this file.
//!
//! While a delivery runs, its entry's idle time in the group keeps growing, and
//! XAUTOCLAIM (here or in another worker) would take a slow but healthy delivery
//! for an abandoned one once it passes `claim_idle`. So every `claim_idle / 3`
//! [`keep_leases`] re-claims the entries in flight for this consumer with
//! `XCLAIM ... 0 <ids> JUSTID`, which resets their idle time without counting a
//! delivery. A worker that dies stops doing this, and its entries are redelivered.
//!
//! The same tick renews this process's line in the worker registry (`workers`:
//! consumer name -> instance and heartbeat), which tells the API whose
//! attempts are still out: an attempt belongs to a process, and a process
//! replaced by a new one of the same name will never finish it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_schema::keys;

use super::Shared;

/// Entry ids this process is working on right now.
#[derive(Default)]
pub(crate) struct InFlightSet(Mutex<HashSet<String>>);

/// Marks one entry as in flight for as long as it lives.
pub(crate) struct InFlight {
    set: Arc<InFlightSet>,
    id: String,
}

impl InFlightSet {
    /// `None` when this process is already working on the entry.
    pub(crate) fn start(self: &Arc<Self>, id: &str) -> Option<InFlight> {
        let fresh = self.0.lock().unwrap().insert(id.to_string());
        fresh.then(|| InFlight {
            set: self.clone(),
            id: id.to_string(),
        })
    }

    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.0.lock().unwrap().remove(&self.id);
    }
}

/// Writes this process into the worker registry: `<consumer> -> <instance>|<now>`,
/// and the code it runs (`worker-code`). A new process of the same name replaces
/// the old one's line, and with it the old process's claim on the attempts it
/// left unfinished.
pub(crate) async fn register<H>(shared: &Shared<H>) -> redis::RedisResult<()> {
    if crate::effects::dying() {
        return Ok(()); // The obituary stands: this process is going down.
    }
    let mut redis = shared.redis.clone();
    redis::pipe()
        .hset(
            keys::WORKERS,
            &*shared.consumer,
            format!("{}|{}", shared.instance, lab_schema::now_ms()),
        )
        .ignore()
        .hset(
            keys::WORKER_CODE,
            &*shared.consumer,
            format!("{}|{}", shared.instance, shared.code),
        )
        .ignore()
        .query_async(&mut redis)
        .await
}

/// A worker that stops cleanly no longer runs any code: its `worker-code` line
/// goes (if it is still its own: a restarted process of the same name may have
/// replaced it).
pub(crate) async fn deregister<H>(shared: &Shared<H>) {
    static DELETE_IF_OURS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
",
        )
    });
    let mut redis = shared.redis.clone();
    let _: redis::RedisResult<u64> = DELETE_IF_OURS
        .key(keys::WORKER_CODE)
        .arg(&*shared.consumer)
        .arg(format!("{}|{}", shared.instance, shared.code))
        .invoke_async(&mut redis)
        .await;
}

/// Renews the leases of the deliveries in flight and the heartbeat, every
/// `claim_idle / 3`, until the worker has finished its last delivery.
pub(crate) async fn keep_leases<H>(shared: std::sync::Arc<Shared<H>>) {
    // At least every 5 s: `GET /workers` counts a worker as running while its
    // heartbeat is younger than 15 s, whatever the claim idle time.
    let every = (shared.config.claim_idle / 3)
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(30));
    let mut redis = shared.redis.clone();
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = register(&shared).await {
            tracing::debug!(error = %err, "could not renew the heartbeat");
        }
        let ids = shared.in_flight.ids();
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
