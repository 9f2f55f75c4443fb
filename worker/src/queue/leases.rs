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
/// goes, and its registry line says `stopped:` (each if it is still its own: a
/// restarted process of the same name may have replaced it).
pub(crate) async fn deregister<H>(shared: &Shared<H>) {
    static END_IF_OURS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local line = redis.call('HGET', KEYS[2], ARGV[1])
if line and string.sub(line, 1, string.len(ARGV[3]) + 1) == ARGV[3] .. '|' then
  redis.call('HSET', KEYS[2], ARGV[1], 'stopped:' .. line)
end
return 0
",
        )
    });
    let mut redis = shared.redis.clone();
    let _: redis::RedisResult<u64> = END_IF_OURS
        .key(keys::WORKER_CODE)
        .key(keys::WORKERS)
        .arg(&*shared.consumer)
        .arg(format!("{}|{}", shared.instance, shared.code))
        .arg(&*shared.instance)
        .invoke_async(&mut redis)
        .await;
}

/// How often the heartbeat is renewed (see [`keep_leases`]).
fn heartbeat_every(config: &crate::Config) -> Duration {
    // At least every 5 s: `GET /workers` counts a worker as running while its
    // heartbeat is younger than 15 s, whatever the claim idle time.
    (config.claim_idle / 3)
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(30))
}

/// A heartbeat older than this belongs to a process that is gone.
const HEARTBEAT_STALE_MS: u64 = 15_000;

/// Another live process registered under this consumer name, described; `None`
/// when the name is free: no line, a line that says `crashed:` or `stopped:`,
/// a stale heartbeat, a process of this host that is gone (a worker restarted
/// after a crash or a kill), or this very process id on this host (a container
/// restarted after a crash: its worker is pid 1 again). A line of another host
/// (or a host where processes cannot be looked up) is watched for one
/// heartbeat: only a heartbeat that moves is a live namesake.
pub(crate) async fn live_namesake<H>(shared: &Shared<H>) -> Option<String> {
    let read = || async {
        let mut redis = shared.redis.clone();
        redis::cmd("HGET")
            .arg(keys::WORKERS)
            .arg(&*shared.consumer)
            .query_async::<Option<String>>(&mut redis)
            .await
            .ok()
            .flatten()
    };
    let ended =
        |instance: &str| instance.starts_with("crashed:") || instance.starts_with("stopped:");
    let line = read().await?;
    let (instance, heartbeat) = lab_schema::parse_worker_value(&line)?;
    if ended(instance) {
        return None;
    }
    let age = lab_schema::now_ms().saturating_sub(heartbeat);
    if age > HEARTBEAT_STALE_MS {
        return None;
    }
    let described = format!("instance {instance}, heartbeat {age} ms ago");
    let (pid, host) = match instance.split_once('@') {
        Some((pid_ms, host)) => (pid_ms.split('-').next()?.parse::<u32>().ok(), host),
        None => (None, ""),
    };
    let proc_fs = std::path::Path::new("/proc/self").exists();
    if let Some(pid) = pid
        && host == crate::host_name()
        && proc_fs
    {
        let alive =
            pid != std::process::id() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        return alive.then_some(described);
    }
    tokio::time::sleep(heartbeat_every(&shared.config) + Duration::from_millis(500)).await;
    let again = read().await?;
    let (now, _) = lab_schema::parse_worker_value(&again)?;
    (again != line && !ended(now)).then_some(described)
}

/// Renews the leases of the deliveries in flight and the heartbeat, every
/// `claim_idle / 3`, until the worker has finished its last delivery.
pub(crate) async fn keep_leases<H>(shared: std::sync::Arc<Shared<H>>) {
    let every = heartbeat_every(&shared.config);
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
